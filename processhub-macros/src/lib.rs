//! The `#[distributed]` attribute of processhub. Use it through `processhub`, which
//! re-exports it and documents it.

mod expand;
mod parse;

use proc_macro::TokenStream;

/// Makes a struct and its impl block a distributed component: documented (with its
/// options and its expansion) where processhub re-exports it, `processhub::distributed`.
#[proc_macro_attribute]
pub fn distributed(args: TokenStream, input: TokenStream) -> TokenStream {
    expand::distributed(args.into(), input.into()).into()
}
