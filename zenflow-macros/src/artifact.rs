use proc_macro2::TokenStream;
use quote::quote;
use syn::DeriveInput;

pub fn expand(item: TokenStream) -> syn::Result<TokenStream> {
    let input: DeriveInput = syn::parse2(item)?;
    let name = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let mut predicates = where_clause.map(|w| w.predicates.clone()).unwrap_or_default();
    predicates.push(syn::parse_quote!(
        Self: ::zenflow::__private::serde::Serialize
            + ::zenflow::__private::serde::de::DeserializeOwned
            + ::core::marker::Send
            + 'static
    ));
    Ok(quote! {
        impl #impl_generics ::zenflow::Materialize for #name #ty_generics where #predicates {
            type Materializer = ::zenflow::materializer::SerdeMaterializer<Self>;
            ::zenflow::__serde_materialize_body!();
        }
    })
}
