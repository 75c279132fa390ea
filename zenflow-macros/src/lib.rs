//! `#[step]`, `#[pipeline]`, `#[derive(Artifact)]`, `#[derive(Outputs)]`
//! and `plain!` for zenflow.
//!
//! The macros are thin: they parse and validate the user's function, then emit
//! calls into `zenflow::__private`, where the logic lives and is tested. Every
//! error points at the user's code.

mod artifact;
mod code;
mod outputs;
mod pipeline;
mod step;

use proc_macro::TokenStream;

/// Turns a function into a pipeline step. See the `zenflow` crate docs.
#[proc_macro_attribute]
pub fn step(attr: TokenStream, item: TokenStream) -> TokenStream {
    step::expand(attr.into(), item.into()).unwrap_or_else(syn::Error::into_compile_error).into()
}

/// Turns a function into a pipeline. See the `zenflow` crate docs.
#[proc_macro_attribute]
pub fn pipeline(attr: TokenStream, item: TokenStream) -> TokenStream {
    pipeline::expand(attr.into(), item.into()).unwrap_or_else(syn::Error::into_compile_error).into()
}

/// Makes a serde type an artifact type (stored with zenflow's serde materializer).
#[proc_macro_derive(Artifact)]
pub fn derive_artifact(item: TokenStream) -> TokenStream {
    artifact::expand(item.into()).unwrap_or_else(syn::Error::into_compile_error).into()
}

/// Makes a struct of `Handle<T>` fields something a pipeline body can
/// return; a run gives back `<Name>Values` with the values.
#[proc_macro_derive(Outputs)]
pub fn derive_outputs(item: TokenStream) -> TokenStream {
    outputs::expand(item.into()).unwrap_or_else(syn::Error::into_compile_error).into()
}

/// Inside a `#[pipeline]` body, calls an ordinary function instead of
/// recording a step call: `let n = plain!(count_rows(&cfg.path));`.
/// Outside a pipeline body it is the expression itself.
#[proc_macro]
pub fn plain(item: TokenStream) -> TokenStream {
    item
}
