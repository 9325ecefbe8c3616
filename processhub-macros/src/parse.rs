//! Parsing: which item the attribute is on, and its arguments.

use proc_macro2::TokenStream;
use syn::parse::{Parse, ParseStream};
use syn::{Ident, ItemImpl, ItemStruct, LitStr, Path, Token};

/// The items `#[distributed]` goes on.
pub(crate) enum Input {
    Struct(ItemStruct),
    Impl(ItemImpl),
}

impl Parse for Input {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let attrs = input.call(syn::Attribute::parse_outer)?;
        let ahead = input.fork();
        ahead.parse::<syn::Visibility>()?;
        let lookahead = ahead.lookahead1();
        if lookahead.peek(Token![struct]) {
            let mut item: ItemStruct = input.parse()?;
            item.attrs.splice(0..0, attrs);
            Ok(Input::Struct(item))
        } else if lookahead.peek(Token![impl]) || lookahead.peek(Token![unsafe]) {
            let mut item: ItemImpl = input.parse()?;
            item.attrs.splice(0..0, attrs);
            Ok(Input::Impl(item))
        } else {
            Err(syn::Error::new(
                input.span(),
                "#[distributed] goes on a struct (the component's state) and on its impl block \
                 (the component's methods)",
            ))
        }
    }
}

/// Keys accepted on the struct.
pub(crate) const STRUCT_KEYS: &[&str] = &[
    "name",
    "crate",
    "migration",
    "pinned",
    "on_node_death",
    "replicas",
    "sync",
    "ship",
    "reads",
    "replication",
    "distribution",
    "custom",
    "instances",
];

/// Arguments of the struct attribute.
#[derive(Default)]
pub(crate) struct StructArgs {
    pub(crate) name: Option<LitStr>,
    pub(crate) krate: Option<Path>,
    /// `migration = "cold"`: moves restart from the start state.
    pub(crate) cold: bool,
    /// `pinned`: stays on its node while it lives.
    pub(crate) pinned: bool,
    /// `on_node_death = "stay_down"`: not restarted elsewhere when its node dies.
    pub(crate) stay_down: bool,
    /// `replicas = N`: copies kept in step (1: none besides the primary); `"all"`: one
    /// on every member (`u32::MAX`).
    pub(crate) replicas: Option<u32>,
    /// `sync = "async"`: writes ship their state after the reply.
    pub(crate) async_replication: bool,
    /// `ship = "calls"`: writes ship the call, replayed on the standbys, not the state.
    pub(crate) ship_calls: bool,
    /// `reads = "any"`: a node's standby copy answers reads.
    pub(crate) reads_any: bool,
    /// `replication = "active_active"`: every replica runs on its own.
    pub(crate) active_active: bool,
    /// `distribution = "..."`: the strategy's variant name (`ConsistentHash`, ...).
    pub(crate) distribution: Option<(&'static str, proc_macro2::Span)>,
    /// `custom = path::to::Strategy`.
    pub(crate) custom: Option<Path>,
    /// `instances(Type<A>, Type<B>)`: the instantiations of a generic component that
    /// hubs run, each a component type of its own.
    pub(crate) instances: Vec<syn::Type>,
    /// Where `instances` was written.
    pub(crate) instances_span: Option<proc_macro2::Span>,
}

/// The values of `distribution`, with what each does, and the variant each names.
const DISTRIBUTIONS: &[(&str, &str, &str)] = &[
    (
        "consistent_hash",
        "on the ring owner of the id, the default",
        "ConsistentHash",
    ),
    (
        "guided",
        "on the node named at start with `start_on`",
        "Guided",
    ),
    ("local", "on the node that starts it", "Local"),
    (
        "not_local",
        "on another node than the one that starts it",
        "NotLocal",
    ),
    ("round_robin", "on the members in turn", "RoundRobin"),
    ("every_node", "one instance on every member", "EveryNode"),
    (
        "bounded_load",
        "consistent hashing, no node over 1.25 times the mean",
        "BoundedLoad",
    ),
];

impl StructArgs {
    pub(crate) fn parse(tokens: TokenStream) -> syn::Result<Self> {
        let mut args = StructArgs::default();
        let mut errors: Option<syn::Error> = None;
        let mut seen: Vec<String> = Vec::new();
        let parser = |input: ParseStream<'_>| -> syn::Result<()> {
            while !input.is_empty() {
                let key: Ident = if input.peek(Token![crate]) {
                    let k: Token![crate] = input.parse()?;
                    Ident::new("crate", k.span)
                } else {
                    input.parse()?
                };
                let name = key.to_string();
                if seen.contains(&name) {
                    push(
                        &mut errors,
                        syn::Error::new(key.span(), format!("duplicate option `{name}`")),
                    );
                }
                seen.push(name.clone());
                match name.as_str() {
                    "name" => {
                        input.parse::<Token![=]>()?;
                        let lit: LitStr = input.parse().map_err(|e| {
                            syn::Error::new(e.span(), "write `name = \"a-stable-wire-name\"`")
                        })?;
                        if lit.value().is_empty() {
                            push(
                                &mut errors,
                                syn::Error::new(lit.span(), "the name must not be empty"),
                            );
                        }
                        args.name = Some(lit);
                    }
                    "pinned" => {
                        if input.peek(Token![=]) {
                            push(
                                &mut errors,
                                syn::Error::new(
                                    key.span(),
                                    "`pinned` takes no value: write `#[distributed(pinned)]`",
                                ),
                            );
                            input.parse::<Token![=]>()?;
                            input.parse::<syn::Expr>()?;
                        }
                        args.pinned = true;
                    }
                    "migration" => {
                        args.cold = choice(
                            input,
                            &mut errors,
                            "migration",
                            &[
                                ("hot", "moves keep the latest state"),
                                ("cold", "moves restart from the start state"),
                            ],
                        )? == Some("cold");
                    }
                    "on_node_death" => {
                        args.stay_down = choice(
                            input,
                            &mut errors,
                            "on_node_death",
                            &[
                                (
                                    "restart",
                                    "restarted elsewhere from its start state, the default",
                                ),
                                ("stay_down", "reported, not restarted"),
                            ],
                        )? == Some("stay_down");
                    }
                    "replicas" => {
                        input.parse::<Token![=]>()?;
                        let wrong = |span| {
                            syn::Error::new(
                                span,
                                "write `replicas = N` with N from 1 to 255 (the primary and N - 1 standbys kept in step), or `replicas = \"all\"` (one copy on every member)",
                            )
                        };
                        if input.peek(LitStr) {
                            let lit: LitStr = input.parse()?;
                            if lit.value() == "all" {
                                args.replicas = Some(u32::MAX);
                            } else {
                                push(&mut errors, wrong(lit.span()));
                            }
                        } else {
                            let lit: syn::LitInt = input.parse().map_err(|e| wrong(e.span()))?;
                            match lit.base10_parse::<u32>() {
                                Ok(n) if (1..=255).contains(&n) => args.replicas = Some(n),
                                _ => push(&mut errors, wrong(lit.span())),
                            }
                        }
                    }
                    "replication" => {
                        args.active_active = choice(
                            input,
                            &mut errors,
                            "replication",
                            &[
                                (
                                    "active_passive",
                                    "one primary, standbys kept in step, the default",
                                ),
                                (
                                    "active_active",
                                    "every replica answers calls on its own; copies may diverge",
                                ),
                            ],
                        )? == Some("active_active");
                    }
                    "reads" => {
                        args.reads_any = choice(
                            input,
                            &mut errors,
                            "reads",
                            &[
                                ("primary", "reads go to the primary, the default"),
                                (
                                    "any",
                                    "a node holding a standby copy answers reads itself, possibly a little stale",
                                ),
                            ],
                        )? == Some("any");
                    }
                    "sync" => {
                        args.async_replication = choice(
                            input,
                            &mut errors,
                            "sync",
                            &[
                                (
                                    "sync",
                                    "a write is acknowledged once its standbys have it, the default",
                                ),
                                (
                                    "async",
                                    "standbys get it right after the reply: faster, a crash may lose the last writes",
                                ),
                            ],
                        )? == Some("async");
                    }
                    "ship" => {
                        args.ship_calls = choice(
                            input,
                            &mut errors,
                            "ship",
                            &[
                                (
                                    "state",
                                    "each write sends the whole new state to the standbys, the default",
                                ),
                                (
                                    "calls",
                                    "each write sends its call, replayed on the standbys: for large states; every write method must be deterministic",
                                ),
                            ],
                        )? == Some("calls");
                    }
                    "distribution" => {
                        let values: Vec<(&'static str, &str)> = DISTRIBUTIONS
                            .iter()
                            .map(|(v, what, _)| (*v, *what))
                            .collect();
                        let span = key.span();
                        let chosen = choice(input, &mut errors, "distribution", &values)?;
                        if let Some(v) = chosen {
                            let variant = DISTRIBUTIONS
                                .iter()
                                .find(|(name, _, _)| *name == v)
                                .map(|(_, _, variant)| *variant)
                                .expect("a listed value");
                            args.distribution = Some((variant, span));
                        }
                    }
                    "custom" => {
                        input.parse::<Token![=]>()?;
                        args.custom = Some(input.parse().map_err(|e| {
                            syn::Error::new(
                                e.span(),
                                "write `custom = path::to::Strategy`: a type implementing \
                                 `processhub::placement::Strategy` and `Default`",
                            )
                        })?);
                    }
                    "instances" => {
                        let content;
                        syn::parenthesized!(content in input);
                        let types = content.parse_terminated(syn::Type::parse, Token![,])?;
                        args.instances = types.into_iter().collect();
                        args.instances_span = Some(key.span());
                    }
                    "crate" => {
                        input.parse::<Token![=]>()?;
                        args.krate = Some(input.parse().map_err(|e| {
                            syn::Error::new(e.span(), "write `crate = ::path::to::processhub`")
                        })?);
                    }
                    _ => {
                        push(
                            &mut errors,
                            syn::Error::new(
                                key.span(),
                                format!(
                                    "unknown option `{name}`; valid options are: {}",
                                    STRUCT_KEYS.join(", ")
                                ),
                            ),
                        );
                        // Skip its value, if any.
                        if input.peek(Token![=]) {
                            input.parse::<Token![=]>()?;
                            input.parse::<syn::Expr>()?;
                        }
                    }
                }
                if !input.is_empty() {
                    input.parse::<Token![,]>()?;
                }
            }
            Ok(())
        };
        syn::parse::Parser::parse2(parser, tokens)?;
        if let (Some(custom), Some(_)) = (&args.custom, args.distribution) {
            push(
                &mut errors,
                syn::Error::new_spanned(
                    custom,
                    "`custom = ...` is the distribution strategy: drop `distribution = ...`, or \
                     drop `custom`",
                ),
            );
        }
        if let Some(("EveryNode", span)) = args.distribution {
            if args.replicas.is_some() || args.active_active {
                push(
                    &mut errors,
                    syn::Error::new(
                        span,
                        "`distribution = \"every_node\"` runs one instance on every member, each \
                         answering its own node: drop `replicas` and `replication`",
                    ),
                );
            }
        }
        match errors {
            Some(e) => Err(e),
            None => Ok(args),
        }
    }
}

/// The one option of the impl block: `crate = ::path::to::processhub`, for a processhub
/// re-exported under another name (the struct says the same).
pub(crate) fn impl_crate(tokens: TokenStream) -> syn::Result<Option<Path>> {
    if tokens.is_empty() {
        return Ok(None);
    }
    let parser = |input: ParseStream<'_>| -> syn::Result<Path> {
        let wrong = |span| {
            syn::Error::new(
                span,
                "on the impl block, only `crate = ::path::to::processhub` is an option; the \
                 others go on the struct's #[distributed(...)]",
            )
        };
        if !input.peek(Token![crate]) {
            return Err(wrong(input.span()));
        }
        input.parse::<Token![crate]>()?;
        input.parse::<Token![=]>()?;
        let path: Path = input
            .parse()
            .map_err(|e| syn::Error::new(e.span(), "write `crate = ::path::to::processhub`"))?;
        input.parse::<Option<Token![,]>>()?;
        if !input.is_empty() {
            return Err(wrong(input.span()));
        }
        Ok(path)
    };
    syn::parse::Parser::parse2(parser, tokens).map(Some)
}

/// Parses `= "value"` for option `key`, one of `values` (each with what it means).
/// `None` (and an error collected) for a string that is none of them.
fn choice(
    input: ParseStream<'_>,
    errors: &mut Option<syn::Error>,
    key: &str,
    values: &[(&'static str, &str)],
) -> syn::Result<Option<&'static str>> {
    let write = |(v, _): &(&str, &str)| format!("`{key} = \"{v}\"`");
    let spell = values.iter().map(write).collect::<Vec<_>>().join(" or ");
    input.parse::<Token![=]>()?;
    let lit: LitStr = input
        .parse()
        .map_err(|e| syn::Error::new(e.span(), format!("write {spell}")))?;
    let value = lit.value();
    if let Some((v, _)) = values.iter().find(|(v, _)| *v == value) {
        return Ok(Some(v));
    }
    let explained = values
        .iter()
        .map(|c| format!("{} ({})", write(c), c.1))
        .collect::<Vec<_>>()
        .join(" or ");
    push(
        errors,
        syn::Error::new(
            lit.span(),
            format!("unknown {key} {value:?}; write {explained}"),
        ),
    );
    Ok(None)
}

/// Adds `e` to the errors collected so far.
pub(crate) fn push(errors: &mut Option<syn::Error>, e: syn::Error) {
    match errors {
        Some(all) => all.combine(e),
        None => *errors = Some(e),
    }
}
