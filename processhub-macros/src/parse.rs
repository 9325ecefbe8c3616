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
pub(crate) const STRUCT_KEYS: &[&str] = &["name", "crate", "migration", "pinned"];

/// Arguments of the struct attribute.
#[derive(Default)]
pub(crate) struct StructArgs {
    pub(crate) name: Option<LitStr>,
    pub(crate) krate: Option<Path>,
    /// `migration = "cold"`: moves restart from the start state.
    pub(crate) cold: bool,
    /// `pinned`: stays on its node while it lives.
    pub(crate) pinned: bool,
}

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
                        input.parse::<Token![=]>()?;
                        let lit: LitStr = input.parse().map_err(|e| {
                            syn::Error::new(
                                e.span(),
                                "write `migration = \"hot\"` or `migration = \"cold\"`",
                            )
                        })?;
                        match lit.value().as_str() {
                            "hot" => args.cold = false,
                            "cold" => args.cold = true,
                            other => push(
                                &mut errors,
                                syn::Error::new(
                                    lit.span(),
                                    format!("unknown migration {other:?}; write `migration = \"hot\"` (moves keep the latest state) or `migration = \"cold\"` (moves restart from the start state)"),
                                ),
                            ),
                        }
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
        match errors {
            Some(e) => Err(e),
            None => Ok(args),
        }
    }
}

/// Adds `e` to the errors collected so far.
pub(crate) fn push(errors: &mut Option<syn::Error>, e: syn::Error) {
    match errors {
        Some(all) => all.combine(e),
        None => *errors = Some(e),
    }
}
