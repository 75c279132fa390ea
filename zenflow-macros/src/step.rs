use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{FnArg, GenericArgument, Ident, ItemFn, LitBool, LitInt, LitStr, Pat, PathArguments, ReturnType, Type};

#[derive(Default)]
struct Options {
    name: Option<LitStr>,
    version: Option<LitStr>,
    cache: Option<bool>,
    retries: Option<u32>,
    retry_backoff_ms: Option<u64>,
    timeout_ms: Option<u64>,
    cache_ttl_ms: Option<u64>,
    outputs: Option<Vec<Ident>>,
    model: Option<LitStr>,
    resources: Resources,
}

/// `resources(cpus = 2, memory = "4GiB", gpus = 1)`.
#[derive(Default)]
struct Resources {
    cpus: Option<f64>,
    memory: Option<LitStr>,
    gpus: Option<u32>,
}

const OPTIONS: &str = "name, version, cache, cache_ttl, retries, retry_backoff, timeout, outputs, model, resources";

fn parse_options(attr: TokenStream) -> syn::Result<Options> {
    let mut o = Options::default();
    let parser = syn::meta::parser(|meta| {
        let key = meta.path.get_ident().map(ToString::to_string).unwrap_or_default();
        match key.as_str() {
            "name" => o.name = Some(step_name(meta.value()?.parse()?)?),
            "version" => o.version = Some(meta.value()?.parse()?),
            "cache" => o.cache = Some(meta.value()?.parse::<LitBool>()?.value),
            "retries" => o.retries = Some(meta.value()?.parse::<LitInt>()?.base10_parse()?),
            "retry_backoff" => o.retry_backoff_ms = Some(parse_duration(&meta.value()?.parse()?)?),
            "timeout" => o.timeout_ms = Some(parse_duration(&meta.value()?.parse()?)?),
            "cache_ttl" => o.cache_ttl_ms = Some(parse_duration(&meta.value()?.parse()?)?),
            "model" => o.model = Some(model_name(meta.value()?.parse()?)?),
            "resources" => meta.parse_nested_meta(|m| parse_resource(m, &mut o.resources))?,
            "outputs" => o.outputs = Some(output_names(&meta)?),
            _ => {
                let hint = OPTIONS
                    .split(", ")
                    .find(|o| o.len() > 3 && key.len() > 3 && (o.starts_with(&key[..4]) || key.starts_with(&o[..4])))
                    .map(|o| format!("; did you mean `{o}`?"))
                    .unwrap_or_default();
                return Err(meta.error(format!("unknown step option `{key}`{hint} (options: {OPTIONS})")));
            }
        }
        Ok(())
    });
    syn::parse::Parser::parse2(parser, attr)?;
    Ok(o)
}

/// `name = "..."`: letters, digits, `_` and `-`.
fn step_name(lit: LitStr) -> syn::Result<LitStr> {
    let name = lit.value();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(syn::Error::new(
            lit.span(),
            format!("`{name}` is not a valid step name: use letters, digits, `_` and `-`"),
        ));
    }
    Ok(lit)
}

/// `model = "..."`: 1 to 64 characters of `[A-Za-z0-9_.-]`.
fn model_name(lit: LitStr) -> syn::Result<LitStr> {
    let name = lit.value();
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !ok {
        return Err(syn::Error::new(
            lit.span(),
            format!(
                "`{name}` is not a valid model name: use 1 to 64 characters of [A-Za-z0-9_.-], \
                 starting with a letter or a digit"
            ),
        ));
    }
    Ok(lit)
}

/// One entry of `resources(cpus = 2, memory = "4GiB", gpus = 1)`.
fn parse_resource(m: syn::meta::ParseNestedMeta<'_>, r: &mut Resources) -> syn::Result<()> {
    let key = m.path.get_ident().map(ToString::to_string).unwrap_or_default();
    match key.as_str() {
        "cpus" => {
            let lit: syn::Lit = m.value()?.parse()?;
            let cpus = match &lit {
                syn::Lit::Int(i) => i.base10_parse::<f64>()?,
                syn::Lit::Float(f) => f.base10_parse::<f64>()?,
                _ => return Err(syn::Error::new(lit.span(), "expected a number of CPUs, e.g. 2 or 0.5")),
            };
            if !(cpus > 0.0 && cpus.is_finite()) {
                return Err(syn::Error::new(lit.span(), "a step needs more than 0 CPUs"));
            }
            r.cpus = Some(cpus);
        }
        "memory" => r.memory = Some(m.value()?.parse()?),
        "gpus" => r.gpus = Some(m.value()?.parse::<LitInt>()?.base10_parse()?),
        _ => return Err(m.error(format!("unknown resource `{key}` (resources: cpus, memory, gpus)"))),
    }
    Ok(())
}

/// `outputs(a, b, ...)`: at least one name, none twice.
fn output_names(meta: &syn::meta::ParseNestedMeta<'_>) -> syn::Result<Vec<Ident>> {
    let mut names: Vec<Ident> = Vec::new();
    meta.parse_nested_meta(|m| {
        let ident = m.path.get_ident().cloned().ok_or_else(|| m.error("expected an output name"))?;
        if names.contains(&ident) {
            return Err(syn::Error::new(ident.span(), format!("duplicate output name `{ident}`")));
        }
        names.push(ident);
        Ok(())
    })?;
    if names.is_empty() {
        return Err(meta.error("`outputs(...)` needs at least one name"));
    }
    Ok(names)
}

/// `"250ms"`, `"30s"`, `"5m"`, `"2h"`, `"7d"`, or an integer literal of seconds.
fn parse_duration(lit: &syn::Lit) -> syn::Result<u64> {
    let bad =
        || syn::Error::new(lit.span(), "expected a duration such as \"250ms\", \"30s\", \"5m\", \"1h\" or \"7d\"");
    match lit {
        syn::Lit::Int(i) => Ok(i.base10_parse::<u64>()? * 1000),
        syn::Lit::Str(s) => {
            let v = s.value();
            let split = v.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
            let n: u64 = v[..split].parse().map_err(|_| bad())?;
            let unit = match &v[split..] {
                "ms" => 1,
                "s" => 1000,
                "m" | "min" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                _ => return Err(bad()),
            };
            Ok(n * unit)
        }
        _ => Err(bad()),
    }
}

enum Arg {
    Input { ident: Ident, ty: Type },
    Param { ident: Ident, ty: Type },
    Context,
}

/// Tokens of a type as a person would write them (`Vec<i64>`, not `Vec < i64 >`).
fn pretty(ty: &Type) -> String {
    let mut s = ty.to_token_stream().to_string();
    for (from, to) in [(" < ", "<"), ("< ", "<"), (" <", "<"), (" >", ">"), (" ,", ","), (" :: ", "::"), ("& ", "&")] {
        s = s.replace(from, to);
    }
    s
}

fn last_segment_is(ty: &Type, name: &str) -> bool {
    matches!(ty, Type::Path(p) if p.qself.is_none() && p.path.segments.last().is_some_and(|s| s.ident == name))
}

fn parse_args(func: &mut ItemFn) -> syn::Result<Vec<Arg>> {
    let mut args = Vec::new();
    let mut context_seen = false;
    for input in func.sig.inputs.iter_mut() {
        let FnArg::Typed(pt) = input else {
            return Err(syn::Error::new(input.span(), "a step is a free function; remove `self`"));
        };
        let before = pt.attrs.len();
        pt.attrs.retain(|a| !a.path().is_ident("param"));
        let is_param = pt.attrs.len() != before;
        let Pat::Ident(pat) = &*pt.pat else {
            return Err(syn::Error::new(
                pt.pat.span(),
                "step arguments need plain names (`data: Table`), not patterns",
            ));
        };
        let ident = pat.ident.clone();
        if let Type::Reference(r) = &*pt.ty {
            if last_segment_is(&r.elem, "StepContext") {
                if is_param {
                    return Err(syn::Error::new(pt.span(), "the step context cannot be a `#[param]`"));
                }
                if context_seen {
                    return Err(syn::Error::new(pt.span(), "a step takes at most one `&StepContext`"));
                }
                context_seen = true;
                args.push(Arg::Context);
                continue;
            }
            let what = if is_param { "parameters" } else { "artifact inputs" };
            return Err(syn::Error::new_spanned(
                &pt.ty,
                format!("step {what} are passed by value: write `{}` instead of a reference", pretty(&r.elem)),
            ));
        }
        if let Type::ImplTrait(_) = &*pt.ty {
            return Err(syn::Error::new_spanned(&pt.ty, "step arguments need concrete types, not `impl Trait`"));
        }
        let ty = (*pt.ty).clone();
        args.push(if is_param { Arg::Param { ident, ty } } else { Arg::Input { ident, ty } });
    }
    Ok(args)
}

/// The value type of the step (inside `Result<_, _>` when fallible).
fn value_type(ret: &ReturnType) -> syn::Result<(Option<Type>, bool)> {
    let ReturnType::Type(_, ty) = ret else { return Ok((None, false)) };
    if let Type::Path(p) = &**ty {
        if let Some(seg) = p.path.segments.last() {
            if seg.ident == "Result" {
                let PathArguments::AngleBracketed(args) = &seg.arguments else {
                    return Err(syn::Error::new(seg.span(), "write the value type: `Result<T, E>`"));
                };
                let Some(GenericArgument::Type(t)) = args.args.first() else {
                    return Err(syn::Error::new(seg.span(), "write the value type: `Result<T, E>`"));
                };
                return Ok((unit_to_none(t), true));
            }
        }
    }
    Ok((unit_to_none(ty), false))
}

fn unit_to_none(ty: &Type) -> Option<Type> {
    match ty {
        Type::Tuple(t) if t.elems.is_empty() => None,
        other => Some(other.clone()),
    }
}

/// What `#[step]` found in the function and its options: everything the
/// emitted code needs, checked.
struct Analyzed {
    options: Options,
    func: ItemFn,
    args: Vec<Arg>,
    /// Each output's name and type.
    outputs: Vec<(Ident, Type)>,
    /// The function returns a `Result`.
    fallible: bool,
}

pub fn expand(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let step = analyze(parse_options(attr)?, syn::parse2(item)?)?;
    Ok(emit(&step))
}

/// Checks the function and its options, and reads its arguments and outputs.
fn analyze(options: Options, mut func: ItemFn) -> syn::Result<Analyzed> {
    if !func.sig.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &func.sig.generics,
            "steps cannot be generic: a step is registered by name and stored by concrete type; \
             write one step per type, or wrap the generic code in concrete steps",
        ));
    }
    if let Some(v) = &func.sig.variadic {
        return Err(syn::Error::new(v.span(), "steps cannot be variadic"));
    }
    let args = parse_args(&mut func)?;
    let (value_ty, fallible) = value_type(&func.sig.output)?;
    let outputs = outputs(&options, value_ty.as_ref())?;
    if let Some(model) = &options.model {
        if outputs.len() != 1 {
            return Err(syn::Error::new(
                model.span(),
                format!(
                    "`model = \"{}\"` registers the step's output as a model version, so the step must return \
                     exactly one value (it returns {})",
                    model.value(),
                    outputs.len()
                ),
            ));
        }
    }
    Ok(Analyzed { options, func, args, outputs, fallible })
}

/// The step's outputs: `outputs(a, b)` names a returned tuple's elements;
/// otherwise a returned value is the one output `output`.
fn outputs(options: &Options, value_ty: Option<&Type>) -> syn::Result<Vec<(Ident, Type)>> {
    Ok(match (&options.outputs, value_ty) {
        (Some(names), Some(Type::Tuple(t))) if names.len() == t.elems.len() => {
            names.iter().cloned().zip(t.elems.iter().cloned()).collect()
        }
        (Some(names), Some(ty)) => {
            let found = match ty {
                Type::Tuple(t) => format!("a tuple of {}", t.elems.len()),
                _ => "a single value".to_string(),
            };
            return Err(syn::Error::new_spanned(
                ty,
                format!(
                    "`outputs(...)` names {} outputs, so the step must return a tuple of {} values, but it returns {found}",
                    names.len(),
                    names.len()
                ),
            ));
        }
        (Some(names), None) => {
            return Err(syn::Error::new(names[0].span(), "`outputs(...)` names outputs, but the step returns nothing"))
        }
        (None, Some(ty)) => vec![(Ident::new("output", Span::call_site()), ty.clone())],
        (None, None) => Vec::new(),
    })
}

/// `Some(value)` or `None`, as tokens.
fn option(v: Option<TokenStream>) -> TokenStream {
    match v {
        Some(v) => quote!(::core::option::Option::Some(#v)),
        None => quote!(::core::option::Option::None),
    }
}

/// The `StepOptions` literal, with a compile-time check of a memory size.
fn step_options(options: &Options, asserts: &mut Vec<TokenStream>) -> TokenStream {
    let zf = quote!(::zenflow::__private);
    let cache = options.cache.unwrap_or(true);
    let retries = options.retries.unwrap_or(0);
    let backoff = options.retry_backoff_ms.unwrap_or(200);
    let timeout = option(options.timeout_ms.map(|t| quote!(#t)));
    let cache_ttl = option(options.cache_ttl_ms.map(|t| quote!(#t)));
    let model = option(options.model.as_ref().map(|m| quote!(::std::string::String::from(#m))));
    let cpus = option(options.resources.cpus.map(|c| quote!(#c)));
    let gpus = option(options.resources.gpus.map(|g| quote!(#g)));
    let memory = match &options.resources.memory {
        Some(lit) => {
            // Checked by the same parser the run configuration uses, at compile time.
            asserts.push(quote_spanned! {lit.span()=>
                const _: () = ::core::assert!(
                    #zf::parse_size(#lit).is_some(),
                    "step memory must be a size such as \"512MiB\", \"4GiB\" or \"2G\""
                );
            });
            quote!(#zf::parse_size(#lit))
        }
        None => quote!(::core::option::Option::None),
    };
    quote! {
        #zf::StepOptions {
            cache: #cache,
            retries: #retries,
            retry_backoff_ms: #backoff,
            timeout_ms: #timeout,
            model: #model,
            resources: #zf::Resources { cpus: #cpus, memory_bytes: #memory, gpus: #gpus },
            cache_ttl_ms: #cache_ttl,
        }
    }
}

/// The tokens each argument contributes: to the spec, to the build-mode
/// invocation, and to the call of the function with loaded values.
#[derive(Default)]
struct ArgTokens {
    input_specs: Vec<TokenStream>,
    param_specs: Vec<TokenStream>,
    invoke_args: Vec<TokenStream>,
    bindings: Vec<TokenStream>,
    param_values: Vec<TokenStream>,
    loads: Vec<TokenStream>,
    call_args: Vec<TokenStream>,
}

/// What each argument contributes, with a compile-time check of its type.
fn arg_tokens(args: &[Arg], asserts: &mut Vec<TokenStream>) -> ArgTokens {
    let zf = quote!(::zenflow::__private);
    let mut t = ArgTokens::default();
    let (mut n_in, mut n_param) = (0usize, 0usize);
    for arg in args {
        match arg {
            Arg::Input { ident, ty } => {
                let name = ident.to_string();
                asserts.push(quote_spanned!(ty.span()=> const _: () = #zf::assert_artifact::<#ty>();));
                t.input_specs.push(quote!(#zf::IoSpec::of::<#ty>(#name)));
                t.invoke_args.push(quote_spanned!(ty.span()=> #ident: impl ::zenflow::IntoInput<#ty>));
                t.bindings.push(quote!(::zenflow::IntoInput::<#ty>::into_binding(#ident)));
                t.loads.push(quote!(let #ident: #ty = __zenflow_call.input::<#ty>(#n_in)?;));
                t.call_args.push(quote!(#ident));
                n_in += 1;
            }
            Arg::Param { ident, ty } => {
                let name = ident.to_string();
                asserts.push(quote_spanned!(ty.span()=> const _: () = #zf::assert_param::<#ty>();));
                t.param_specs.push(quote!(#zf::ParamSpec::of::<#ty>(#name)));
                t.invoke_args.push(quote!(#ident: #ty));
                t.param_values.push(quote!(#zf::param_value(&#ident)));
                t.loads.push(quote!(let #ident: #ty = __zenflow_call.param::<#ty>(#n_param)?;));
                t.call_args.push(quote!(#ident));
                n_param += 1;
            }
            Arg::Context => t.call_args.push(quote!(&__zenflow_ctx)),
        }
    }
    t
}

/// What the build-mode invocation returns: its type and value (an
/// `Invocation`, a `Handle`, or a tuple of handles).
fn handles(step: &Analyzed) -> (TokenStream, TokenStream) {
    let outputs = &step.outputs;
    match outputs.len() {
        0 => (quote!(::zenflow::Invocation), quote!(::zenflow::Invocation::__new(__zenflow_node))),
        1 => {
            let ty = &outputs[0].1;
            (quote!(::zenflow::Handle<#ty>), quote!(::zenflow::Handle::__new(__zenflow_node, 0)))
        }
        _ => {
            let tys = outputs.iter().map(|(_, t)| t);
            let vals = (0..outputs.len()).map(|i| quote!(::zenflow::Handle::__new(__zenflow_node, #i)));
            (quote!((#(::zenflow::Handle<#tys>,)*)), quote!((#(#vals,)*)))
        }
    }
}

/// The body that calls the function with its loaded arguments (on a
/// blocking-capable thread unless it is `async`) and encodes what it returned.
fn call(step: &Analyzed, call_args: &[TokenStream]) -> TokenStream {
    let zf = quote!(::zenflow::__private);
    let outputs = &step.outputs;
    let value = if step.fallible { quote!(#zf::user_result(__zenflow_ret)?) } else { quote!(__zenflow_ret) };
    let encodes: Vec<_> = if step.options.outputs.is_some() {
        outputs
            .iter()
            .enumerate()
            .map(|(i, (_, ty))| {
                let idx = syn::Index::from(i);
                quote!(#zf::encode_output::<#ty>(__zenflow_spec, #i, __zenflow_value.#idx)?)
            })
            .collect()
    } else {
        outputs.iter().map(|(_, ty)| quote!(#zf::encode_output::<#ty>(__zenflow_spec, 0, __zenflow_value)?)).collect()
    };
    let finish = quote! {
        #[allow(clippy::let_unit_value, unused_variables)]
        let __zenflow_value = #value;
        ::core::result::Result::Ok::<_, #zf::StepError>(::std::vec![#(#encodes),*])
    };
    // The function is bound before the arguments, which may shadow its name
    // (`fn features(features: Raw)`).
    if step.func.sig.asyncness.is_some() {
        quote! {
            let __zenflow_ret = __zenflow_fn(#(#call_args),*).await;
            #finish
        }
    } else {
        quote! {
            #zf::run_blocking(&__zenflow_call, move || {
                let __zenflow_ret = __zenflow_fn(#(#call_args),*);
                #finish
            }).await?
        }
    }
}

/// The build-mode invocation: records the call in the pipeline being
/// built and returns its handles.
fn invoke(
    step: &Analyzed,
    invoke_args: &[TokenStream],
    bindings: &[TokenStream],
    param_values: &[TokenStream],
) -> TokenStream {
    let zf = quote!(::zenflow::__private);
    let step_ident = &step.func.sig.ident;
    let vis = &step.func.vis;
    let (ret_ty, ret_val) = handles(step);
    quote! {
        /// Records an invocation of this step in the pipeline being built.
        #[doc(hidden)]
        #[allow(clippy::too_many_arguments)]
        #[track_caller]
        #vis fn __zenflow_invoke(#(#invoke_args),*) -> #ret_ty {
            let __zenflow_node = #zf::record(
                <#step_ident as ::zenflow::Step>::spec(),
                ::std::vec![#(#bindings),*],
                ::std::vec![#(#param_values),*],
            );
            #ret_val
        }
    }
}

/// The code fingerprint as a `StepCode` literal.
fn step_code(func: &ItemFn) -> TokenStream {
    let zf = quote!(::zenflow::__private);
    let sig = &func.sig;
    let block = &func.block;
    let code = crate::code::fingerprint(&func.sig.ident.to_string(), quote!(#sig #block));
    let hash = &code.hash;
    let items = zenflow_fingerprint::pairs_text(code.items.iter().map(|(l, h)| (l, h)));
    let dependencies = zenflow_fingerprint::pairs_text(&code.dependencies);
    let compiler = &code.compiler;
    quote!(#zf::StepCode { hash: #hash, items: #items, dependencies: #dependencies, compiler: #compiler })
}

/// The function, unchanged but for its argument attributes, and beside it
/// the step: its spec, its build-mode invocation, its execute function and
/// its registration.
fn emit(step: &Analyzed) -> TokenStream {
    let zf = quote!(::zenflow::__private);
    let func = &step.func;
    let fn_ident = &func.sig.ident;
    let vis = &func.vis;
    let step_name = step.options.name.as_ref().map_or_else(|| fn_ident.to_string(), LitStr::value);
    let version = option(step.options.version.as_ref().map(|v| quote!(#v)));
    let code = step_code(func);
    let mut asserts = Vec::new();
    let options = step_options(&step.options, &mut asserts);
    let ArgTokens { input_specs, param_specs, invoke_args, bindings, param_values, loads, call_args } =
        arg_tokens(&step.args, &mut asserts);
    let output_specs: Vec<_> = step
        .outputs
        .iter()
        .map(|(name, ty)| {
            let name = name.to_string();
            asserts.push(quote_spanned!(ty.span()=> const _: () = #zf::assert_artifact::<#ty>();));
            quote!(#zf::IoSpec::of::<#ty>(#name))
        })
        .collect();
    let step_ident = fn_ident.clone();
    let execute_ident = format_ident!("__zenflow_execute");
    let invoke = invoke(step, &invoke_args, &bindings, &param_values);
    let run = call(step, &call_args);
    quote! {
        #func

        #[doc(hidden)]
        #[allow(non_camel_case_types)]
        #vis struct #step_ident {}

        #(#asserts)*

        impl ::zenflow::Step for #step_ident {
            fn spec() -> &'static ::zenflow::StepSpec {
                static SPEC: ::std::sync::LazyLock<::zenflow::StepSpec> = ::std::sync::LazyLock::new(|| {
                    ::zenflow::StepSpec::__new(
                        #step_name,
                        ::core::module_path!(),
                        #code,
                        #version,
                        ::std::vec![#(#input_specs),*],
                        ::std::vec![#(#param_specs),*],
                        ::std::vec![#(#output_specs),*],
                        #options,
                        #step_ident::#execute_ident,
                    )
                });
                &SPEC
            }
        }

        impl #step_ident {
            #invoke

            #[doc(hidden)]
            #[allow(unused_mut, unused_variables)]
            fn #execute_ident(
                mut __zenflow_call: #zf::StepCall,
            ) -> #zf::BoxFuture<'static, ::core::result::Result<::std::vec::Vec<#zf::EncodedValue>, #zf::StepError>> {
                ::std::boxed::Box::pin(async move {
                    let __zenflow_spec: &'static ::zenflow::StepSpec = <#step_ident as ::zenflow::Step>::spec();
                    let __zenflow_fn = #fn_ident;
                    #(#loads)*
                    let __zenflow_ctx = __zenflow_call.context();
                    #run
                })
            }
        }

        #zf::inventory::submit! {
            #zf::StepRegistration { spec: <#step_ident as ::zenflow::Step>::spec }
        }
    }
}
