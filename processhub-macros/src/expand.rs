//! Code generation for the struct and the impl block.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{FnArg, ImplItem, ItemImpl, ItemStruct, Pat, ReturnType, Type, Visibility};

use crate::parse::{impl_crate, push, Input, StructArgs};

pub(crate) fn distributed(args: TokenStream, input: TokenStream) -> TokenStream {
    let item: Input = match syn::parse2(input.clone()) {
        Ok(item) => item,
        Err(e) => {
            // Keep the user's item so that its other errors stay readable.
            let mut out = e.to_compile_error();
            out.extend(input);
            return out;
        }
    };
    match item {
        Input::Struct(s) => match StructArgs::parse(args).and_then(|a| expand_struct(&s, a)) {
            Ok(out) => out,
            Err(e) => {
                // Keep the struct usable (serde pointed at our re-export) so the error
                // above is the only one.
                let s = with_serde_crate(&s, &quote!(::processhub));
                fallback(e, s.to_token_stream())
            }
        },
        Input::Impl(mut i) => {
            let ph = match impl_crate(args) {
                Ok(path) => path.map_or_else(|| quote!(::processhub), |p| p.to_token_stream()),
                Err(e) => {
                    strip_method_attrs(&mut i);
                    let mut out = fallback(e, i.to_token_stream());
                    out.extend(stub_dispatch(&i, &quote!(::processhub)));
                    return out;
                }
            };
            match expand_impl(&i, &ph) {
                Ok(out) => out,
                Err(e) => {
                    strip_method_attrs(&mut i);
                    let mut out = fallback(e, i.to_token_stream());
                    out.extend(stub_dispatch(&i, &ph));
                    out
                }
            }
        }
    }
}

fn fallback(e: syn::Error, item: TokenStream) -> TokenStream {
    let mut out = e.to_compile_error();
    out.extend(item);
    out
}

/// On the error path: a `Dispatch` that knows no method, so that the struct's expansion
/// does not add errors of its own on top of the one that matters.
fn stub_dispatch(item: &ItemImpl, ph: &TokenStream) -> TokenStream {
    if !item.generics.params.is_empty() {
        return TokenStream::new();
    }
    let dispatch = dispatch_impl(
        ph,
        &item.generics,
        &item.self_ty,
        &[],
        &TokenStream::new(),
        &[],
    );
    quote! {
        const _: () = {
            #dispatch
        };
    }
}

/// `Dispatch` for `self_ty`: one arm per method name, and `UnknownMethod` for the rest.
fn dispatch_impl(
    ph: &TokenStream,
    generics: &syn::Generics,
    self_ty: &Type,
    arms: &[TokenStream],
    hooks: &TokenStream,
    writes: &[String],
) -> TokenStream {
    let (impl_generics, _, _) = generics.split_for_impl();
    let where_clause = generic_where(ph, generics, self_ty, quote!(Component));
    quote! {
        #[automatically_derived]
        impl #impl_generics #ph::__private::Dispatch for #self_ty #where_clause {
            #hooks

            fn apply<'a>(
                actor: &'a mut #ph::__private::ComponentActor<Self>,
                method: &'a str,
                args: &'a [u8],
            ) -> impl ::core::future::Future<Output = ::core::result::Result<::std::vec::Vec<u8>, #ph::CallError>> + ::core::marker::Send + 'a {
                async move {
                    let _ = (&actor, &args);
                    match method {
                        #(#arms)*
                        other => ::core::result::Result::Err(#ph::__private::unknown_method::<Self>(other)),
                    }
                }
            }

            fn is_write(method: &str) -> bool {
                match method {
                    #(#writes => true,)*
                    _ => false,
                }
            }
        }
    }
}

/// The where clause of a generated impl for a generic component: the impl block's own
/// predicates, and `Self: Component` (or `Dispatch`): the impls hold for its instances.
/// Empty for a plain component.
fn generic_where(
    ph: &TokenStream,
    generics: &syn::Generics,
    self_ty: &Type,
    bound: TokenStream,
) -> TokenStream {
    if generics.params.is_empty() {
        return TokenStream::new();
    }
    let preds = generics
        .where_clause
        .as_ref()
        .map(|w| w.predicates.iter().collect::<Vec<_>>())
        .unwrap_or_default();
    quote!(where #(#preds,)* #self_ty: #ph::__private::#bound)
}

fn krate(args: &StructArgs) -> TokenStream {
    match &args.krate {
        Some(p) => p.to_token_stream(),
        None => quote!(::processhub),
    }
}

fn expand_struct(s: &ItemStruct, args: StructArgs) -> syn::Result<TokenStream> {
    let ident = &s.ident;
    let generic = !s.generics.params.is_empty();
    if s.generics.lifetimes().next().is_some() || s.generics.const_params().next().is_some() {
        return Err(syn::Error::new(
            s.generics.span(),
            "a #[distributed] component takes type parameters only: its state is `'static` \
             and travels between nodes",
        ));
    }
    if generic && args.instances.is_empty() {
        let params: Vec<String> = s
            .generics
            .type_params()
            .map(|p| p.ident.to_string())
            .collect();
        return Err(syn::Error::new(
            s.generics.span(),
            format!(
                "a generic component names the instantiations hubs run (each is a component \
                 type of its own, started by name on any node): add \
                 `#[distributed(instances({ident}<...>, ...))]`, e.g. `instances({ident}<{}>)`",
                params.iter().map(|_| "u64").collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    if let (false, Some(span)) = (generic, args.instances_span) {
        return Err(syn::Error::new(
            span,
            "`instances(...)` names the instantiations of a generic struct; this one has no \
             type parameters",
        ));
    }
    // Each instance is `Ident<Args>`: its wire name is the type's name and its arguments.
    let mut instances: Vec<(TokenStream, String)> = Vec::new();
    for t in &args.instances {
        let args_text = match t {
            Type::Path(p)
                if p.qself.is_none()
                    && p.path.segments.len() == 1
                    && p.path.segments[0].ident == *ident
                    && matches!(
                        p.path.segments[0].arguments,
                        syn::PathArguments::AngleBracketed(_)
                    ) =>
            {
                p.path.segments[0]
                    .arguments
                    .to_token_stream()
                    .to_string()
                    .replace(' ', "")
            }
            _ => {
                return Err(syn::Error::new(
                    t.span(),
                    format!(
                    "an instance of `{ident}` is written `{ident}<...>`, with its type arguments"
                ),
                ))
            }
        };
        instances.push((t.to_token_stream(), args_text));
    }
    let ph = krate(&args);
    let vis = &s.vis;
    let handle = format_ident!("{}Handle", ident);
    let type_name_of = |suffix: &str| match &args.name {
        Some(lit) => {
            let name = format!("{}{suffix}", lit.value());
            quote!(#name)
        }
        None => {
            let name = format!("{ident}{suffix}");
            quote!(::core::concat!(::core::module_path!(), "::", #name))
        }
    };
    let hot = !args.cold;
    let pinned = args.pinned;
    let replicas = match args.replicas {
        Some(u32::MAX) => quote!(::core::primitive::usize::MAX),
        Some(n) => {
            let n = n as usize;
            quote!(#n)
        }
        None => quote!(1),
    };
    let sync_replication = !args.async_replication;
    let ship_calls = args.ship_calls;
    let reads_any = args.reads_any;
    let every_node = matches!(args.distribution, Some(("EveryNode", _)));
    // One instance on every member, each answering its own node: replicas "all",
    // active/active.
    let replicas = if every_node {
        quote!(::core::primitive::usize::MAX)
    } else {
        replicas
    };
    let active_active = args.active_active || every_node;
    let distribution = match (&args.custom, args.distribution) {
        (Some(_), _) => format_ident!("Custom"),
        (None, Some((variant, _))) => format_ident!("{}", variant),
        (None, None) => format_ident!("ConsistentHash"),
    };
    // Spanned on the path: a type that is no strategy is reported there.
    let custom_strategy = args.custom.as_ref().map(|path| {
        let strategy = quote_spanned! {path.span()=>
            #ph::__private::custom_strategy::<#path>(&STRATEGY)
        };
        quote! {
            fn custom_strategy() -> ::core::option::Option<&'static dyn #ph::placement::Strategy> {
                static STRATEGY: ::std::sync::OnceLock<#path> = ::std::sync::OnceLock::new();
                ::core::option::Option::Some(#strategy)
            }
        }
    });
    let on_node_death = if args.stay_down {
        quote!(#ph::OnNodeDeath::StayDown)
    } else {
        quote!(#ph::OnNodeDeath::Restart)
    };
    let handle_doc = format!(
        "A handle on one running [`{ident}`], by id: each method calls it wherever it runs. \
         Cheap to clone; `Send + Sync`."
    );
    // The types hubs run: the struct, or each of its instances.
    let concrete: Vec<(TokenStream, TokenStream)> = if generic {
        instances
            .iter()
            .map(|(t, args_text)| (t.clone(), type_name_of(args_text)))
            .collect()
    } else {
        vec![(ident.to_token_stream(), type_name_of(""))]
    };
    let state_checks = concrete.iter().map(|(t, _)| quote!(assert_state::<#t>();));
    let serde_check = quote_spanned! {ident.span()=>
        const _: fn() = || {
            fn assert_state<T: #ph::__private::serde::Serialize + #ph::__private::serde::de::DeserializeOwned + ::core::marker::Send + 'static>() {}
            #(#state_checks)*
        };
    };
    let (impl_generics, ty_generics, where_clause) = s.generics.split_for_impl();
    // A generic handle carries its type parameters; a plain one stays plain.
    let (handle_def, new_handle, needs_dispatch) = if generic {
        let params = s.generics.type_params().map(|p| &p.ident);
        let def = quote! {
            #[doc = #handle_doc]
            #vis struct #handle #impl_generics #where_clause {
                core: #ph::__private::HandleCore,
                _types: ::core::marker::PhantomData<fn() -> (#(#params,)*)>,
            }

            #[automatically_derived]
            impl #impl_generics ::core::clone::Clone for #handle #ty_generics #where_clause {
                fn clone(&self) -> Self {
                    Self {
                        core: ::core::clone::Clone::clone(&self.core),
                        _types: ::core::marker::PhantomData,
                    }
                }
            }

            #[automatically_derived]
            impl #impl_generics ::core::fmt::Debug for #handle #ty_generics #where_clause {
                fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                    ::core::fmt::Debug::fmt(&self.core, f)
                }
            }
        };
        let new = |hub: TokenStream, id: TokenStream| quote!(#handle { core: #ph::__private::HandleCore::new(#hub, #id), _types: ::core::marker::PhantomData });
        (
            def,
            Box::new(new) as Box<dyn Fn(TokenStream, TokenStream) -> TokenStream>,
            quote!(where Self: #ph::__private::Dispatch),
        )
    } else {
        let def = quote! {
            #[doc = #handle_doc]
            #[derive(::core::clone::Clone, ::core::fmt::Debug)]
            #vis struct #handle {
                core: #ph::__private::HandleCore,
            }
        };
        let new = |hub: TokenStream, id: TokenStream| quote!(#handle { core: #ph::__private::HandleCore::new(#hub, #id) });
        (
            def,
            Box::new(new) as Box<dyn Fn(TokenStream, TokenStream) -> TokenStream>,
            TokenStream::new(),
        )
    };
    let handle_ty = quote!(#handle #ty_generics);
    let new_from_id = new_handle(quote!(hub), quote!(id));
    let start_on = matches!(args.distribution, Some(("Guided", _))).then(|| {
        quote! {
            /// Starts a component with this id and state on `node`
            /// (`distribution = "guided"`), and returns a handle on it once it runs
            /// there. A node that is not a live member is an error.
            pub async fn start_on(
                hub: &#ph::Hub,
                id: impl ::core::convert::Into<::std::string::String>,
                state: Self,
                node: #ph::NodeId,
            ) -> ::core::result::Result<#handle_ty, #ph::StartError> #needs_dispatch {
                Self::start_with(hub, id, state, #ph::StartOptions::new().node(node)).await
            }
        }
    });
    let components = concrete.iter().enumerate().map(|(k, (t, type_name))| {
        let component = format_ident!("COMPONENT_{}", k);
        quote! {
            #[automatically_derived]
            impl #ph::__private::Component for #t {
                const TYPE_NAME: &'static str = #type_name;
                const HOT_MIGRATION: bool = #hot;
                const PINNED: bool = #pinned;
                const ON_NODE_DEATH: #ph::OnNodeDeath = #on_node_death;
                const REPLICAS: usize = #replicas;
                const SYNC_REPLICATION: bool = #sync_replication;
                const SHIP_CALLS: bool = #ship_calls;
                const READS_ANY: bool = #reads_any;
                const ACTIVE_ACTIVE: bool = #active_active;
                const DISTRIBUTION: #ph::placement::Distribution =
                    #ph::placement::Distribution::#distribution;
                #custom_strategy
            }

            #[#ph::__private::linkme::distributed_slice(#ph::__private::COMPONENTS)]
            #[linkme(crate = #ph::__private::linkme)]
            static #component: #ph::__private::ComponentVTable =
                #ph::__private::ComponentVTable::of::<#t>();
        }
    });
    // serde's derives name `serde` unless told otherwise: point them at our re-export so
    // users need no serde dependency of their own.
    let s = with_serde_crate(s, &ph);
    Ok(quote! {
        #s

        #handle_def

        #serde_check

        const _: () = {
            #(#components)*

            #[automatically_derived]
            impl #impl_generics #ident #ty_generics #where_clause {
                /// Starts a component with this id and state on its owner node, and
                /// returns a handle on it once it runs there.
                pub async fn start(
                    hub: &#ph::Hub,
                    id: impl ::core::convert::Into<::std::string::String>,
                    state: Self,
                ) -> ::core::result::Result<#handle_ty, #ph::StartError> #needs_dispatch {
                    Self::start_with(hub, id, state, #ph::StartOptions::new()).await
                }

                #start_on

                /// Like `start`, with options for this id (pinning, what happens when
                /// its node dies) over the type's defaults.
                pub async fn start_with(
                    hub: &#ph::Hub,
                    id: impl ::core::convert::Into<::std::string::String>,
                    state: Self,
                    options: #ph::StartOptions,
                ) -> ::core::result::Result<#handle_ty, #ph::StartError> #needs_dispatch {
                    let id: ::std::string::String = id.into();
                    #ph::__private::start::<Self>(hub, ::core::clone::Clone::clone(&id), state, options).await?;
                    ::core::result::Result::Ok(#new_from_id)
                }

                /// Starts many components; one result per item, in order.
                pub async fn start_many(
                    hub: &#ph::Hub,
                    items: ::std::vec::Vec<(::std::string::String, Self)>,
                ) -> ::std::vec::Vec<::core::result::Result<#handle_ty, #ph::StartError>> #needs_dispatch {
                    Self::start_many_with(hub, items, #ph::StartOptions::new()).await
                }

                /// Like `start_many`, with the same options for every item.
                pub async fn start_many_with(
                    hub: &#ph::Hub,
                    items: ::std::vec::Vec<(::std::string::String, Self)>,
                    options: #ph::StartOptions,
                ) -> ::std::vec::Vec<::core::result::Result<#handle_ty, #ph::StartError>> #needs_dispatch {
                    let ids: ::std::vec::Vec<::std::string::String> =
                        items.iter().map(|(id, _)| ::core::clone::Clone::clone(id)).collect();
                    #ph::__private::start_many::<Self>(hub, items, options)
                        .await
                        .into_iter()
                        .zip(ids)
                        .map(|(r, id)| r.map(|()| #new_from_id))
                        .collect()
                }

                /// A handle on the component with this id, wherever it runs. Nothing is
                /// checked until a call.
                pub fn handle(
                    hub: &#ph::Hub,
                    id: impl ::core::convert::Into<::std::string::String>,
                ) -> #handle_ty {
                    #new_from_id
                }

                /// Stops the component with this id, wherever it runs.
                pub async fn stop(
                    hub: &#ph::Hub,
                    id: &str,
                ) -> ::core::result::Result<(), #ph::StopError> #needs_dispatch {
                    #ph::__private::stop::<Self>(hub, id).await
                }
            }

            #[automatically_derived]
            impl #impl_generics #handle_ty #where_clause {
                /// The component's id.
                pub fn id(&self) -> &str {
                    self.core.id()
                }
            }
        };
    })
}

/// The struct with `#[serde(crate = "<ph>::__private::serde")]` added when it derives
/// serde's traits and does not name a crate itself.
fn with_serde_crate(s: &ItemStruct, ph: &TokenStream) -> ItemStruct {
    let mut s = s.clone();
    let names_crate = s
        .attrs
        .iter()
        .any(|a| a.path().is_ident("serde") && a.to_token_stream().to_string().contains("crate"));
    if derives_serde(&s) && !names_crate {
        let path = format!("{}::__private::serde", ph.to_string().replace(' ', ""));
        s.attrs.push(syn::parse_quote!(#[serde(crate = #path)]));
    }
    s
}

fn derives_serde(s: &ItemStruct) -> bool {
    s.attrs.iter().any(|a| {
        a.path().is_ident("derive") && {
            let text = a.to_token_stream().to_string();
            text.contains("Serialize") || text.contains("Deserialize")
        }
    })
}

/// A method that becomes a call.
struct Method<'a> {
    sig: &'a syn::Signature,
    vis: &'a Visibility,
    write: bool,
    args: Vec<(&'a syn::Ident, &'a Type)>,
}

fn is_skip(attr: &syn::Attribute) -> bool {
    attr.path().is_ident("distributed")
        && attr.parse_args::<syn::Ident>().is_ok_and(|i| i == "skip")
}

/// The lifecycle hooks a method can be marked as, and the `Dispatch` method each fills.
const HOOKS: &[(&str, &str)] = &[
    ("on_start", "on_start"),
    ("on_stop", "on_stop"),
    ("on_handover_out", "on_handover_out"),
    ("on_handover_in", "on_handover_in"),
    ("on_role_change", "on_role_change"),
    ("on_conflict", "on_conflict"),
    ("move_consent", "move_consent"),
];

fn hook_of(attr: &syn::Attribute) -> Option<&'static str> {
    HOOKS
        .iter()
        .find(|(name, _)| attr.path().is_ident(name))
        .map(|(_, method)| *method)
}

fn strip_method_attrs(item: &mut ItemImpl) {
    for it in &mut item.items {
        if let ImplItem::Fn(f) = it {
            f.attrs
                .retain(|a| !a.path().is_ident("distributed") && hook_of(a).is_none());
        }
    }
}

fn expand_impl(item: &ItemImpl, ph: &TokenStream) -> syn::Result<TokenStream> {
    let mut errors: Option<syn::Error> = None;
    if let Some((_, path, _)) = &item.trait_ {
        return Err(syn::Error::new(
            path.span(),
            "#[distributed] goes on the component's own impl block, not on a trait impl",
        ));
    }
    if item.generics.lifetimes().next().is_some() || item.generics.const_params().next().is_some() {
        return Err(syn::Error::new(
            item.generics.span(),
            "a #[distributed] impl takes type parameters only, those of its struct",
        ));
    }
    let self_segment = match &*item.self_ty {
        Type::Path(p) if p.qself.is_none() => p.path.segments.last().cloned(),
        _ => None,
    };
    let Some(self_segment) = self_segment else {
        return Err(syn::Error::new(
            item.self_ty.span(),
            "#[distributed] goes on `impl MyComponent { ... }` of a #[distributed] struct",
        ));
    };
    let self_ident = self_segment.ident.clone();
    let self_ty = &item.self_ty;
    let handle_ident = format_ident!("{}Handle", self_ident);
    // The handle of this very instantiation: `TallyHandle`, or `CacheHandle<V>`.
    let self_args = &self_segment.arguments;
    let handle = quote!(#handle_ident #self_args);
    let generic = !item.generics.params.is_empty();
    let (impl_generics, ty_generics, _) = item.generics.split_for_impl();
    let turbofish = ty_generics.as_turbofish();
    // Generated impls of a generic component hold for the instances that are components.
    let where_clause = generic_where(ph, &item.generics, self_ty, quote!(Component));
    let where_dispatch = generic_where(ph, &item.generics, self_ty, quote!(Dispatch));
    let type_params: Vec<&syn::Ident> = item.generics.type_params().map(|p| &p.ident).collect();

    let mut methods = Vec::new();
    let mut skipped: Vec<bool> = Vec::new();
    let mut hook_fns: Vec<(&str, syn::Ident)> = Vec::new();
    let mut stubs: Vec<TokenStream> = Vec::new();
    for it in &item.items {
        let ImplItem::Fn(f) = it else {
            skipped.push(true);
            continue;
        };
        if let Some(hook) = f.attrs.iter().find_map(hook_of) {
            // A hook is not a call: `fn name(&mut self)` (the role hook also takes the
            // role, the conflict hook the other copy), run by the hub.
            let sig = &f.sig;
            let args = if matches!(hook, "on_role_change" | "on_conflict") {
                2
            } else {
                1
            };
            let ok = if hook == "move_consent" {
                // Asked, not run: `fn name(&self) -> MoveConsent`.
                sig.asyncness.is_none()
                    && sig.generics.params.is_empty()
                    && !matches!(sig.output, ReturnType::Default)
                    && sig.inputs.len() == 1
                    && matches!(sig.inputs.first(), Some(FnArg::Receiver(r)) if r.reference.is_some() && r.mutability.is_none())
            } else {
                sig.asyncness.is_none()
                    && sig.generics.params.is_empty()
                    && matches!(sig.output, ReturnType::Default)
                    && sig.inputs.len() == args
                    && matches!(sig.inputs.first(), Some(FnArg::Receiver(r)) if r.reference.is_some() && r.mutability.is_some())
            };
            if !ok {
                let shape = if hook == "move_consent" {
                    format!(
                        "`fn {}(&self) -> processhub::MoveConsent`: not async, no arguments",
                        sig.ident
                    )
                } else if hook == "on_conflict" {
                    format!(
                        "`fn {}(&mut self, other: Self)`: not async, no return value",
                        sig.ident
                    )
                } else if args == 2 {
                    format!(
                        "`fn {}(&mut self, role: processhub::Role)`: not async, no return value",
                        sig.ident
                    )
                } else {
                    format!(
                        "`fn {}(&mut self)`: not async, no arguments, no return value",
                        sig.ident
                    )
                };
                push(
                    &mut errors,
                    syn::Error::new(sig.span(), format!("a #[{hook}] hook is {shape}")),
                );
            } else if hook_fns
                .iter()
                .any(|(h, _): &(&str, syn::Ident)| *h == hook)
            {
                push(
                    &mut errors,
                    syn::Error::new(
                        sig.ident.span(),
                        format!("only one method can be #[{hook}]"),
                    ),
                );
            } else {
                hook_fns.push((hook, sig.ident.clone()));
            }
            skipped.push(true);
            continue;
        }
        let skip = f.attrs.iter().any(is_skip);
        for a in f
            .attrs
            .iter()
            .filter(|a| a.path().is_ident("distributed") && !is_skip(a))
        {
            push(
                &mut errors,
                syn::Error::new(
                    a.span(),
                    "on a method, write `#[distributed(skip)]` to keep it local",
                ),
            );
        }
        let public = matches!(f.vis, Visibility::Public(_));
        skipped.push(skip || !public);
        if skip || !public {
            continue;
        }
        match method(f) {
            Ok(m) => methods.push(m),
            Err(e) => {
                // The rest of the handle is still generated, and a stub of this method:
                // its error is the only one, not one more at every call site.
                push(&mut errors, e);
                stubs.push(stub_method(f, ph));
            }
        }
    }

    let mut msgs = Vec::new();
    let mut handle_fns = Vec::new();
    let mut arms = Vec::new();
    let mut writes: Vec<String> = Vec::new();
    for m in &methods {
        let name = &m.sig.ident;
        let name_str = name.to_string();
        let msg = format_ident!("__{}_{}", self_ident, name);
        let arg_names: Vec<_> = m.args.iter().map(|(n, _)| *n).collect();
        let arg_types: Vec<_> = m.args.iter().map(|(_, t)| *t).collect();
        let ret = match &m.sig.output {
            ReturnType::Default => quote!(()),
            ReturnType::Type(_, t) => t.to_token_stream(),
        };
        let call = if m.sig.asyncness.is_some() {
            quote!(state.#name(#(#arg_names),*).await)
        } else {
            quote!(state.#name(#(#arg_names),*))
        };
        let vis = m.vis;
        let read = !m.write;
        // After a write, the standbys get the new state before the caller's reply
        // (remote calls ship in the batch handler, after noting the call's id).
        let replicate_self = if m.write {
            writes.push(name_str.clone());
            quote!(let reply = match self.__replicated(#name_str, __shipped.as_deref().filter(|_| reply.is_ok())).await {
                ::core::result::Result::Ok(()) => reply,
                ::core::result::Result::Err(e) => ::core::result::Result::Err(e),
            };)
        } else {
            TokenStream::new()
        };
        // A type that ships calls (`ship = "calls"`) sends the write's arguments,
        // encoded as a remote call's are, before the message is taken apart.
        let encode_call = if m.write {
            quote!(let __shipped = self.__call_to_ship(&msg);)
        } else {
            TokenStream::new()
        };
        let doc = format!("Calls [`{self_ident}::{name}`] on the component, wherever it runs.");
        let bounds = m.args.iter().map(|(_, t)| {
            quote_spanned! {t.span()=>
                let _ = assert_arg::<#t>;
            }
        });
        let ret_span = match &m.sig.output {
            ReturnType::Default => m.sig.ident.span(),
            ReturnType::Type(_, t) => t.span(),
        };
        let ret_check = quote_spanned! {ret_span=>
            let _ = assert_ret::<#ret>;
        };
        let serde_path = format!("{}::__private::serde", ph.to_string().replace(' ', ""));
        // A generic message carries its type parameters (a method may use none of them).
        let (phantom_field, phantom_pat, phantom_val) = if generic {
            (
                quote!(::core::marker::PhantomData<fn() -> (#(#type_params,)*)>,),
                quote!(_,),
                quote!(::core::marker::PhantomData,),
            )
        } else {
            (TokenStream::new(), TokenStream::new(), TokenStream::new())
        };
        let msg_ty = quote!(#msg #ty_generics);
        let check = format_ident!("{}_types", msg);
        let checks = quote! {
            fn assert_arg<T: #ph::__private::serde::Serialize + #ph::__private::serde::de::DeserializeOwned + ::core::marker::Send + 'static>() {}
            fn assert_ret<T: #ph::__private::serde::Serialize + #ph::__private::serde::de::DeserializeOwned + ::core::marker::Send + 'static>() {}
            #(#bounds)*
            #ret_check
        };
        let checks = if generic {
            quote! {
                #[allow(dead_code, non_snake_case)]
                fn #check #impl_generics () #where_clause { #checks }
            }
        } else {
            quote!(const _: fn() = || { #checks };)
        };
        // Bare parameters: serde's derives add the bounds they need.
        let msg_generics = if generic {
            quote!(<#(#type_params),*>)
        } else {
            TokenStream::new()
        };
        msgs.push(quote! {
            #[derive(#ph::__private::serde::Serialize, #ph::__private::serde::Deserialize)]
            #[serde(crate = #serde_path)]
            #[allow(non_camel_case_types)]
            #[doc(hidden)]
            pub struct #msg #msg_generics (#(#arg_types,)* #phantom_field);

            #checks

            #[automatically_derived]
            impl #impl_generics #ph::__private::Message<#msg_ty> for #ph::__private::ComponentActor<#self_ty> #where_clause {
                type Reply = ::core::result::Result<#ret, #ph::CallError>;

                async fn handle(
                    &mut self,
                    msg: #msg_ty,
                    _: &mut #ph::__private::Context<Self, Self::Reply>,
                ) -> Self::Reply {
                    #encode_call
                    let (cx, state) = self.__context();
                    let #msg(#(#arg_names,)* #phantom_pat) = msg;
                    let reply = #ph::__private::ComponentActor::<#self_ty>::__guard(cx, async move { #call }).await;
                    #replicate_self
                    reply
                }
            }
        });
        handle_fns.push(quote! {
            #[doc = #doc]
            #vis async fn #name(&self, #(#arg_names: #arg_types),*) -> ::core::result::Result<#ret, #ph::CallError> {
                self.core.call::<#self_ty, #msg_ty, #ret>(#name_str, #read, #msg(#(#arg_names,)* #phantom_val)).await
            }
        });
        arms.push(quote! {
            #name_str => {
                let #msg(#(#arg_names,)* #phantom_pat) = #ph::__private::decode_args::<#msg #turbofish>(args)?;
                let (cx, state) = actor.__context();
                let reply = #ph::__private::ComponentActor::<#self_ty>::__guard(cx, async move { #call }).await;
                let reply: #ret = reply?;
                #ph::__private::encode_reply(&reply)
            }
        });
    }

    let hooks: TokenStream = hook_fns
        .iter()
        .map(|(hook, name)| {
            let ident = format_ident!("{}", hook);
            if *hook == "on_role_change" {
                quote! {
                    fn #ident(&mut self, role: #ph::Role) {
                        self.#name(role)
                    }
                }
            } else if *hook == "on_conflict" {
                quote! {
                    const MERGES: bool = true;
                    fn #ident(&mut self, other: Self) {
                        self.#name(other)
                    }
                }
            } else if *hook == "move_consent" {
                quote! {
                    const CONSENTS: bool = true;
                    fn #ident(&self) -> #ph::MoveConsent {
                        self.#name()
                    }
                }
            } else {
                quote! {
                    fn #ident(&mut self) {
                        self.#name()
                    }
                }
            }
        })
        .collect();
    let dispatch = dispatch_impl(ph, &item.generics, self_ty, &arms, &hooks, &writes);
    let mut item = item.clone();
    strip_method_attrs(&mut item);
    let errors = errors.map(|e| e.to_compile_error());
    Ok(quote! {
        #errors

        #item

        const _: () = {
            #(#msgs)*

            #[automatically_derived]
            impl #impl_generics #handle #where_dispatch {
                #(#handle_fns)*
                #(#stubs)*
            }

            #dispatch
        };
    })
}

/// On the error path, for a method that could not become a call: a handle method of
/// the same name and arguments, so that its call sites raise no error of their own.
fn stub_method(f: &syn::ImplItemFn, ph: &TokenStream) -> TokenStream {
    let sig = &f.sig;
    let (name, vis, generics) = (&sig.ident, &f.vis, &sig.generics);
    let where_clause = &generics.where_clause;
    let args = sig.inputs.iter().filter_map(|input| match input {
        FnArg::Typed(t) => Some(&t.ty),
        FnArg::Receiver(_) => None,
    });
    let args = args.enumerate().map(|(i, ty)| {
        let arg = format_ident!("__arg{}", i);
        quote!(#arg: #ty)
    });
    let ret = match &sig.output {
        ReturnType::Default => quote!(()),
        ReturnType::Type(_, t) => t.to_token_stream(),
    };
    let message = format!("`{name}` did not compile: see the error on its signature");
    quote! {
        #[doc(hidden)]
        #[allow(unused_variables, clippy::unused_async)]
        #vis async fn #name #generics (&self, #(#args),*) -> ::core::result::Result<#ret, #ph::CallError> #where_clause {
            ::core::unreachable!(#message)
        }
    }
}

fn method(f: &syn::ImplItemFn) -> syn::Result<Method<'_>> {
    let sig = &f.sig;
    let mut errors: Option<syn::Error> = None;
    if !sig.generics.params.is_empty() {
        push(
            &mut errors,
            syn::Error::new(
                sig.generics.span(),
                "a component method cannot be generic: its arguments travel over the network",
            ),
        );
    }
    let mut write = None;
    let mut args = Vec::new();
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(r) => {
                if r.reference.is_none() {
                    push(
                        &mut errors,
                        syn::Error::new(r.span(), "take `&self` (a read) or `&mut self` (a write): the component keeps its state"),
                    );
                }
                write = Some(r.mutability.is_some());
            }
            FnArg::Typed(t) => {
                let Pat::Ident(pi) = &*t.pat else {
                    push(
                        &mut errors,
                        syn::Error::new(t.pat.span(), "name each argument (`name: Type`)"),
                    );
                    continue;
                };
                if let Type::Reference(r) = &*t.ty {
                    let hint = match &*r.elem {
                        Type::Path(p) if p.path.is_ident("str") => "take `String`".to_string(),
                        Type::Slice(_) => "take a `Vec`".to_string(),
                        other => format!("take `{}` by value", other.to_token_stream()),
                    };
                    push(
                        &mut errors,
                        syn::Error::new(
                            t.ty.span(),
                            format!("arguments travel over the network; {hint}"),
                        ),
                    );
                    continue;
                }
                args.push((&pi.ident, &*t.ty));
            }
        }
    }
    let Some(write) = write else {
        push(
            &mut errors,
            syn::Error::new(
                sig.ident.span(),
                "a public method of a component takes `&self` or `&mut self`; mark associated functions `#[distributed(skip)]`",
            ),
        );
        return Err(errors.expect("just pushed"));
    };
    if let Some(e) = errors {
        return Err(e);
    }
    let _ = Span::call_site();
    Ok(Method {
        sig,
        vis: &f.vis,
        write,
        args,
    })
}

#[cfg(test)]
mod tests {
    //! Expansion snapshots of typical components (`src/snapshots/`, reviewed like code:
    //! `cargo insta review`, or `INSTA_UPDATE=always cargo test -p processhub-macros`
    //! and read the diff), and the hygiene of `crate = ...`.

    use proc_macro2::TokenStream;
    use quote::quote;

    use super::distributed;

    /// The expansion of a struct and its impl block, formatted.
    fn expand(
        struct_args: TokenStream,
        item: TokenStream,
        impl_args: TokenStream,
        imp: TokenStream,
    ) -> String {
        let mut out = distributed(struct_args, item);
        out.extend(distributed(impl_args, imp));
        let file: syn::File = syn::parse2(out).expect("the expansion parses");
        prettyplease::unparse(&file)
    }

    #[test]
    fn a_counter() {
        insta::assert_snapshot!(expand(
            quote!(),
            quote! {
                /// A counter.
                #[derive(Default, Serialize, Deserialize)]
                pub struct Tally {
                    n: u64,
                }
            },
            quote!(),
            quote! {
                impl Tally {
                    /// Adds.
                    pub fn add(&mut self, by: u64) -> u64 {
                        self.n += by;
                        self.n
                    }
                    /// Reads, asynchronously.
                    pub async fn get(&self) -> u64 {
                        self.n
                    }
                    fn helper(&self) {}
                }
            },
        ));
    }

    #[test]
    fn a_replicated_component_with_hooks_and_a_result() {
        insta::assert_snapshot!(expand(
            quote!(replicas = 3, reads = "any", name = "bank.Account/v1"),
            quote! {
                #[derive(Default, Serialize, Deserialize)]
                pub struct Account {
                    balance: i64,
                }
            },
            quote!(),
            quote! {
                impl Account {
                    pub fn withdraw(&mut self, amount: i64) -> Result<i64, String> {
                        if amount > self.balance {
                            return Err("insufficient funds".into());
                        }
                        self.balance -= amount;
                        Ok(self.balance)
                    }
                    #[on_start]
                    fn opened(&mut self) {}
                    #[on_role_change]
                    fn role(&mut self, role: processhub::Role) {
                        let _ = role;
                    }
                }
            },
        ));
    }

    #[test]
    fn a_guided_component() {
        insta::assert_snapshot!(expand(
            quote!(distribution = "guided", pinned, on_node_death = "stay_down"),
            quote! {
                #[derive(Default, Serialize, Deserialize)]
                pub struct Printer {
                    jobs: u64,
                }
            },
            quote!(),
            quote! {
                impl Printer {
                    pub fn print(&mut self, doc: String) -> u64 {
                        let _ = doc;
                        self.jobs += 1;
                        self.jobs
                    }
                }
            },
        ));
    }

    #[test]
    fn a_generic_component() {
        insta::assert_snapshot!(expand(
            quote!(instances(Log<u64>, Log<String>), name = "log"),
            quote! {
                #[derive(Default, Serialize, Deserialize)]
                pub struct Log<E> {
                    entries: Vec<E>,
                }
            },
            quote!(),
            quote! {
                impl<E> Log<E>
                where
                    E: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
                {
                    pub fn push(&mut self, entry: E) -> usize {
                        self.entries.push(entry);
                        self.entries.len()
                    }
                    pub fn len(&self) -> usize {
                        self.entries.len()
                    }
                }
            },
        ));
    }

    #[test]
    fn with_crate_the_expansion_names_only_that_path() {
        let out = expand(
            quote!(crate = ::mylib::ph, custom = Lowest),
            quote! {
                #[derive(Default, Serialize, Deserialize)]
                pub struct Job {
                    n: u64,
                }
            },
            quote!(crate = ::mylib::ph),
            quote! {
                impl Job {
                    pub fn run(&mut self) -> u64 {
                        self.n += 1;
                        self.n
                    }
                    #[on_stop]
                    fn done(&mut self) {}
                }
            },
        );
        assert!(!out.contains("processhub"), "{out}");
        assert!(out.contains("::mylib::ph::__private"));
    }

    #[test]
    fn a_bad_method_leaves_the_other_handle_methods_and_a_stub_of_itself() {
        let out = distributed(
            TokenStream::new(),
            quote! {
                impl Cart {
                    pub fn add(&mut self, item: &str) -> usize { 1 }
                    pub fn count(&self) -> usize { 0 }
                }
            },
        )
        .to_string();
        assert!(out.contains("compile_error"), "{out}");
        assert!(out.contains("take `String`"), "{out}");
        // `count` is a call as usual; `add` is a stub on the handle.
        assert!(out.contains("__Cart_count"), "{out}");
        assert!(!out.contains("__Cart_add"), "{out}");
        assert!(out.contains("async fn add"), "{out}");
        assert!(out.contains("did not compile"), "{out}");
    }
}
