//! `#[derive(Outputs)]`: a struct of handles a pipeline body returns; a run
//! gives back `<Name>Values`, the same fields with the values.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Fields, GenericArgument, PathArguments, Type};

/// `T` of a field typed `Handle<T>`.
fn handle_value(ty: &Type) -> Option<&Type> {
    let Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    if last.ident != "Handle" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else { return None };
    match args.args.first()? {
        GenericArgument::Type(t) => Some(t),
        _ => None,
    }
}

pub fn expand(item: TokenStream) -> syn::Result<TokenStream> {
    let input: DeriveInput = syn::parse2(item)?;
    let name = &input.ident;
    let vis = &input.vis;
    if !input.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(&input.generics, "an outputs struct cannot be generic"));
    }
    let Data::Struct(data) = &input.data else {
        return Err(syn::Error::new(name.span(), "#[derive(Outputs)] needs a struct of `Handle<T>` fields"));
    };
    let Fields::Named(fields) = &data.fields else {
        return Err(syn::Error::new(name.span(), "#[derive(Outputs)] needs named fields (`model: Handle<Model>`)"));
    };
    let values = format_ident!("{name}Values");
    let mut value_fields = Vec::new();
    let mut handles = Vec::new();
    let mut loads = Vec::new();
    for f in &fields.named {
        let ident = f.ident.as_ref().expect("named fields have names");
        let Some(t) = handle_value(&f.ty) else {
            return Err(syn::Error::new(
                f.ty.span(),
                "every field of an outputs struct is a `Handle<T>` (the output of a step)",
            ));
        };
        value_fields.push(quote_spanned!(f.span()=> pub #ident: #t));
        handles.push(quote!(all.push(self.#ident.__position());));
        loads.push(quote!(#ident: <::zenflow::Handle<#t> as ::zenflow::Outputs>::load(run, refs)?));
    }
    let doc = format!("The values of [`{name}`], once a run has produced them.");
    Ok(quote! {
        #[doc = #doc]
        #[derive(Debug)]
        #vis struct #values {
            #(#value_fields,)*
        }

        impl ::zenflow::Outputs for #name {
            type Values = #values;

            fn handles(&self) -> ::std::vec::Vec<(usize, usize)> {
                let mut all = ::std::vec::Vec::new();
                #(#handles)*
                all
            }

            fn load<__O>(
                run: &::zenflow::RunResult<__O>,
                refs: &mut ::std::slice::Iter<'_, ::zenflow::plan::OutputRef>,
            ) -> ::zenflow::Result<Self::Values> {
                ::core::result::Result::Ok(#values { #(#loads,)* })
            }
        }
    })
}
