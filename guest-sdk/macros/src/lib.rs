//! Attribute macros of the Sluice guest SDK: `#[sluice::map]`, `#[sluice::flat_map]`,
//! `#[sluice::filter]`, `#[sluice::reduce]` and the rest. Use them through `sluice-sdk`.
//!
//! Each attribute keeps the function as written and adds, beside it, a module of
//! the same name holding `FUNCTION: sluice_sdk::Function`, the columnar adapter
//! that `sluice_sdk::export!` registers. (Functions and modules live in
//! different namespaces, so both can be called `split`.)
//!
//! For the element-wise kinds the adapter also picks, per argument and
//! result type as the signature writes it, how values are decoded and
//! encoded: the SDK's own inlined codecs for plain shapes (strings,
//! integers, `bool`, `f64`, options and tuples of them), serde for any
//! other type (`sluice_sdk::plain`).

use proc_macro::TokenStream;
use proc_macro2::{Group, Ident, TokenStream as Tokens, TokenTree};
use quote::{format_ident, quote};
use syn::{FnArg, GenericArgument, ItemFn, PathArguments, ReturnType, Type, parse_macro_input};

#[derive(Clone, Copy)]
enum Kind {
    Map,
    FlatMap,
    Filter,
    Reduce,
    MapPartitions,
    Transform,
    Sink,
    Fold,
    TransformWith,
    InverseReduce,
    UpdateState,
    MapState,
}

fn returns_result(sig: &syn::Signature) -> bool {
    match &sig.output {
        ReturnType::Type(_, ty) => match ty.as_ref() {
            Type::Path(p) => p.path.segments.last().is_some_and(|s| s.ident == "Result"),
            _ => false,
        },
        ReturnType::Default => false,
    }
}

/// The first type argument of a path type's last segment (`T` of
/// `Result<T, E>`, `Vec<T>`, `Option<T>`).
fn first_type_arg(ty: &Type) -> Option<&Type> {
    let Type::Path(p) = ty else { return None };
    let PathArguments::AngleBracketed(args) = &p.path.segments.last()?.arguments else {
        return None;
    };
    args.args.iter().find_map(|a| match a {
        GenericArgument::Type(t) => Some(t),
        _ => None,
    })
}

/// The item type of a `flat_map` function's result, where it is written:
/// `impl Iterator<Item = T>` (or any bound with `Item = T`), `Vec<T>`,
/// `Option<T>`, `VecDeque<T>`, `[T; N]`.
fn item_type(ty: &Type) -> Option<&Type> {
    match ty {
        Type::ImplTrait(it) => it.bounds.iter().find_map(|b| {
            let syn::TypeParamBound::Trait(t) = b else {
                return None;
            };
            let PathArguments::AngleBracketed(args) = &t.path.segments.last()?.arguments else {
                return None;
            };
            args.args.iter().find_map(|a| match a {
                GenericArgument::AssocType(a) if a.ident == "Item" => Some(&a.ty),
                _ => None,
            })
        }),
        Type::Path(p)
            if p.path.segments.last().is_some_and(|s| {
                s.ident == "Vec" || s.ident == "Option" || s.ident == "VecDeque"
            }) =>
        {
            first_type_arg(ty)
        }
        Type::Array(a) => Some(&a.elem),
        _ => None,
    }
}

/// `tokens` (a type) with every named lifetime but `'static` made `'_`,
/// so that it can be written inside the adapter, which has no lifetime
/// parameters (and sees the function's module through `use super::*`);
/// `None` when it cannot be named there (`impl`, `dyn`, `Self`, a path
/// from `self::` or `super::`).
fn nameable(tokens: Tokens) -> Option<Tokens> {
    let mut out = Vec::new();
    let mut lifetime = false;
    for tt in tokens {
        match tt {
            TokenTree::Group(g) => {
                let mut group = Group::new(g.delimiter(), nameable(g.stream())?);
                group.set_span(g.span());
                out.push(TokenTree::Group(group));
            }
            TokenTree::Ident(i) if lifetime => {
                lifetime = false;
                out.push(if i == "static" {
                    TokenTree::Ident(i)
                } else {
                    TokenTree::Ident(Ident::new("_", i.span()))
                });
            }
            // `super::` and `self::` paths would mean other modules there.
            TokenTree::Ident(i)
                if i == "impl" || i == "dyn" || i == "Self" || i == "self" || i == "super" =>
            {
                return None;
            }
            TokenTree::Punct(p) if p.as_char() == '\'' => {
                lifetime = true;
                out.push(TokenTree::Punct(p));
            }
            other => out.push(other),
        }
    }
    Some(out.into_iter().collect())
}

/// The codec of values of type `ty` (see `sluice_sdk::plain`): picked for
/// the concrete type where the adapter is expanded, serde's where the
/// type is not written out (an `impl` without `Item = T`, a type
/// parameter).
fn codec(ty: Option<&Type>, generic: bool) -> Tokens {
    match ty.filter(|_| !generic).and_then(|t| nameable(quote!(#t))) {
        Some(t) => quote!((&::sluice_sdk::__private::Pick::<#t>::NEW).codec()),
        None => quote!(::sluice_sdk::__private::SerdeCodec),
    }
}

fn doc_line(f: &ItemFn) -> String {
    for attr in &f.attrs {
        if attr.path().is_ident("doc")
            && let syn::Meta::NameValue(nv) = &attr.meta
            && let syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) = &nv.value
        {
            let line = s.value().trim().to_string();
            if !line.is_empty() {
                return line;
            }
        }
    }
    String::new()
}

/// The error for an attribute given arguments (none takes any).
fn refuse_arguments(attr: &TokenStream) -> Option<TokenStream> {
    (!attr.is_empty()).then(|| {
        syn::Error::new(
            proc_macro2::Span::call_site(),
            "sluice function attributes take no arguments",
        )
        .to_compile_error()
        .into()
    })
}

fn expand(kind: Kind, attr: TokenStream, item: TokenStream) -> TokenStream {
    if let Some(refused) = refuse_arguments(&attr) {
        return refused;
    }
    let f = parse_macro_input!(item as ItemFn);
    let name = &f.sig.ident;
    let arity = f.sig.inputs.len();
    let want = match kind {
        Kind::MapState => 3,
        Kind::Reduce
        | Kind::Fold
        | Kind::TransformWith
        | Kind::InverseReduce
        | Kind::UpdateState => 2,
        _ => 1,
    };
    if arity != want {
        return syn::Error::new_spanned(
            &f.sig,
            format!("this sluice function must take {want} argument(s), it takes {arity}"),
        )
        .to_compile_error()
        .into();
    }
    let fallible = returns_result(&f.sig);
    let adapter = format_ident!("__sluice_call");
    // The codecs of the element-wise kinds' arguments and results.
    let generic = f
        .sig
        .generics
        .params
        .iter()
        .any(|p| !matches!(p, syn::GenericParam::Lifetime(_)));
    let arg = |n: usize| match f.sig.inputs.iter().nth(n) {
        Some(FnArg::Typed(p)) => Some(&*p.ty),
        _ => None,
    };
    let result = match &f.sig.output {
        ReturnType::Type(_, t) if fallible => first_type_arg(t),
        ReturnType::Type(_, t) => Some(&**t),
        ReturnType::Default => None,
    };
    let arg0 = codec(arg(0), generic);
    let arg1 = codec(arg(1), generic);
    // The types, written as in the function's module (here, outside the
    // adapter: items in its body would shadow its parameters).
    let picks = quote! {
        #[allow(unused_imports)]
        use super::*;
        #[allow(unused_imports)]
        use ::sluice_sdk::__private::{PickPlain as _, PickSerde as _};
    };
    let (kind_tokens, call) = match kind {
        Kind::Map => {
            let run = if fallible {
                quote!(try_map_with)
            } else {
                quote!(map_with)
            };
            let out = codec(result, generic);
            (
                quote!(Map),
                quote! {
                    fn #adapter(input: &::sluice_sdk::Column) -> ::std::result::Result<::sluice_sdk::Column, ::sluice_sdk::CallError> {
                        ::sluice_sdk::__private::#run(input, super::#name, #arg0, #out)
                    }
                    ::sluice_sdk::Call::Values(#adapter)
                },
            )
        }
        Kind::FlatMap => {
            let run = if fallible {
                quote!(try_flat_map_with)
            } else {
                quote!(flat_map_with)
            };
            let out = codec(result.and_then(item_type), generic);
            (
                quote!(FlatMap),
                quote! {
                    fn #adapter(input: &::sluice_sdk::Column) -> ::std::result::Result<::sluice_sdk::Column, ::sluice_sdk::CallError> {
                        ::sluice_sdk::__private::#run(input, super::#name, #arg0, #out)
                    }
                    ::sluice_sdk::Call::Values(#adapter)
                },
            )
        }
        Kind::MapPartitions | Kind::Transform => {
            let run = if fallible {
                quote!(try_map_partitions)
            } else {
                quote!(map_partitions)
            };
            let kind = if matches!(kind, Kind::Transform) {
                quote!(Transform)
            } else {
                quote!(MapPartitions)
            };
            (
                kind,
                quote! {
                    fn #adapter(input: &::sluice_sdk::Column) -> ::std::result::Result<::sluice_sdk::Column, ::sluice_sdk::CallError> {
                        ::sluice_sdk::__private::#run(input, super::#name)
                    }
                    ::sluice_sdk::Call::Values(#adapter)
                },
            )
        }
        Kind::Sink => {
            let run = if fallible {
                quote!(try_sink)
            } else {
                quote!(sink)
            };
            (
                quote!(Sink),
                quote! {
                    fn #adapter(input: &::sluice_sdk::Column) -> ::std::result::Result<(), ::sluice_sdk::CallError> {
                        ::sluice_sdk::__private::#run(input, super::#name)
                    }
                    ::sluice_sdk::Call::Sink(#adapter)
                },
            )
        }
        Kind::Filter => (
            quote!(Filter),
            quote! {
                fn #adapter(input: &::sluice_sdk::Column) -> ::std::result::Result<::std::vec::Vec<u32>, ::sluice_sdk::CallError> {
                    ::sluice_sdk::__private::filter_with(input, super::#name, #arg0)
                }
                ::sluice_sdk::Call::Filter(#adapter)
            },
        ),
        Kind::Reduce => (
            quote!(Reduce),
            quote! {
                fn #adapter(values: &::sluice_sdk::Column, groups: &[u32]) -> ::std::result::Result<::sluice_sdk::Column, ::sluice_sdk::CallError> {
                    ::sluice_sdk::__private::reduce_with(values, groups, super::#name, #arg0)
                }
                ::sluice_sdk::Call::Reduce(#adapter)
            },
        ),
        Kind::Fold => (
            quote!(Reduce),
            quote! {
                fn #adapter(values: &::sluice_sdk::Column, groups: &[u32]) -> ::std::result::Result<::sluice_sdk::Column, ::sluice_sdk::CallError> {
                    ::sluice_sdk::__private::fold_with(values, groups, super::#name, #arg0, #arg1)
                }
                ::sluice_sdk::Call::Reduce(#adapter)
            },
        ),
        Kind::TransformWith => {
            let run = if fallible {
                quote!(try_transform_with)
            } else {
                quote!(transform_with)
            };
            (
                quote!(Transform),
                quote! {
                    fn #adapter(left: &::sluice_sdk::Column, right: &::sluice_sdk::Column) -> ::std::result::Result<::sluice_sdk::Column, ::sluice_sdk::CallError> {
                        ::sluice_sdk::__private::#run(left, right, super::#name)
                    }
                    ::sluice_sdk::Call::Pair(#adapter)
                },
            )
        }
        Kind::InverseReduce => (
            quote!(InverseReduce),
            quote! {
                fn #adapter(accumulated: &::sluice_sdk::Column, removed: &::sluice_sdk::Column) -> ::std::result::Result<::sluice_sdk::Column, ::sluice_sdk::CallError> {
                    ::sluice_sdk::__private::inverse_reduce_with(accumulated, removed, super::#name, #arg0)
                }
                ::sluice_sdk::Call::Pair(#adapter)
            },
        ),
        Kind::UpdateState => (
            quote!(UpdateState),
            quote! {
                fn #adapter(values: &::sluice_sdk::Column, groups: &[u32], states: &::sluice_sdk::Column) -> ::std::result::Result<::sluice_sdk::Column, ::sluice_sdk::CallError> {
                    ::sluice_sdk::__private::update_state(values, groups, states, super::#name)
                }
                ::sluice_sdk::Call::UpdateState(#adapter)
            },
        ),
        Kind::MapState => (
            quote!(MapState),
            quote! {
                fn #adapter(input: &::sluice_sdk::Batch, groups: &[u32], states: &::sluice_sdk::Column) -> ::std::result::Result<::sluice_sdk::Column, ::sluice_sdk::CallError> {
                    ::sluice_sdk::__private::map_state(input, groups, states, super::#name)
                }
                ::sluice_sdk::Call::MapState(#adapter)
            },
        ),
    };
    registered(&f, kind_tokens, quote! { #picks #call })
}

/// `f` as written, and beside it the module of the same name holding its
/// registration for `sluice_sdk::export!`: kind `kind`, adapter `call` (a
/// block's statements ending in the `sluice_sdk::Call`).
fn registered(f: &ItemFn, kind: Tokens, call: Tokens) -> TokenStream {
    let name = &f.sig.ident;
    let vis = &f.vis;
    let name_str = name.to_string();
    let doc = doc_line(f);
    quote! {
        #f

        #[doc(hidden)]
        #[allow(non_snake_case)]
        #vis mod #name {
            /// The registration of this function for `sluice_sdk::export!`.
            pub const FUNCTION: ::sluice_sdk::Function = ::sluice_sdk::Function {
                name: #name_str,
                doc: #doc,
                kind: ::sluice_sdk::Kind::#kind,
                call: {
                    #call
                },
            };
        }
    }
    .into()
}

/// Marks `fn(A) -> B` (or `-> Result<B, E>`) as a `map` function.
#[proc_macro_attribute]
pub fn map(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::Map, attr, item)
}

/// Marks `fn(A) -> impl IntoIterator<Item = B>` (or a `Result` of one) as a `flat-map` function.
#[proc_macro_attribute]
pub fn flat_map(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::FlatMap, attr, item)
}

/// Marks `fn(A) -> bool` as a `filter` function.
#[proc_macro_attribute]
pub fn filter(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::Filter, attr, item)
}

/// Marks an associative `fn(A, A) -> A` as a `reduce` function.
#[proc_macro_attribute]
pub fn reduce(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::Reduce, attr, item)
}

/// Marks `fn(Vec<A>) -> impl IntoIterator<Item = B>` (or a `Result` of one)
/// as a `map-partitions` function: it sees one partition of a batch at once.
#[proc_macro_attribute]
pub fn map_partitions(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::MapPartitions, attr, item)
}

/// Marks `fn(Vec<A>) -> impl IntoIterator<Item = B>` (or a `Result` of one)
/// as a `transform` function: it sees a whole batch (all partitions) at once.
#[proc_macro_attribute]
pub fn transform(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::Transform, attr, item)
}

/// Marks `fn(Vec<A>)` or `fn(Vec<A>) -> Result<(), E>` as a `sink`: it
/// consumes one partition-batch (`foreach_rdd`); `sluice::context()` gives the
/// batch time, so writes can be idempotent. An `Err` is retried by the host.
#[proc_macro_attribute]
pub fn sink(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::Sink, attr, item)
}

/// Marks `fn(&sluice_sdk::Settings) -> Result<R, E>` (`R:
/// sluice_sdk::Receiver`, `E: Display`) as a `receiver`: a source of the
/// plugin's own, started with the job's settings on a receiver thread of
/// the host and polled there. An `Err` (a missing or bad setting) stops the
/// job with its message.
#[proc_macro_attribute]
pub fn receiver(attr: TokenStream, item: TokenStream) -> TokenStream {
    if let Some(refused) = refuse_arguments(&attr) {
        return refused;
    }
    let f = parse_macro_input!(item as ItemFn);
    if f.sig.inputs.len() != 1 || !returns_result(&f.sig) {
        return syn::Error::new_spanned(
            &f.sig,
            "a sluice receiver is `fn(&sluice::Settings) -> Result<R, E>` with `R: sluice::Receiver`",
        )
        .to_compile_error()
        .into();
    }
    let name = &f.sig.ident;
    let call = quote! {
        fn __sluice_start(
            settings: &::sluice_sdk::Settings,
        ) -> ::std::result::Result<::std::boxed::Box<dyn ::sluice_sdk::Receiver>, ::sluice_sdk::CallError> {
            ::sluice_sdk::__private::start_receiver(settings, super::#name)
        }
        ::sluice_sdk::Call::Receiver(__sluice_start)
    };
    registered(&f, quote!(Receiver), call)
}

/// Marks `fn(C, V) -> C` as a `reduce`-kind fold: in each group the first
/// value is an accumulator, every next value is folded into it
/// (`combine_by_key`'s `merge_value`).
#[proc_macro_attribute]
pub fn fold(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::Fold, attr, item)
}

/// Marks `fn(Vec<A>, Vec<B>) -> impl IntoIterator<Item = C>` (or a `Result`
/// of one) as a `transform` of two streams (`transform_with`): it sees both
/// whole batches.
#[proc_macro_attribute]
pub fn transform_with(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::TransformWith, attr, item)
}

/// Marks `fn(A, A) -> A` as an `inverse-reduce` function: `f(acc, old)` takes
/// `old` back out of `acc` (the inverse of a `reduce`, for incremental windows).
#[proc_macro_attribute]
pub fn inverse_reduce(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::InverseReduce, attr, item)
}

/// Marks `fn(Vec<V>, Option<S>) -> Option<S>` as an `update-state` function
/// (`update_state_by_key`): a key's new values and previous state give its new
/// state; `None` removes the key.
#[proc_macro_attribute]
pub fn update_state(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::UpdateState, attr, item)
}

/// Marks `fn(K, Option<V>, &mut sluice_sdk::State<S>) -> Option<O>` as a
/// `map-state` function (`map_with_state`): called for each new value of a
/// key in order with the key's running state (and once with `None` when the
/// key times out); returns a mapped element or none.
#[proc_macro_attribute]
pub fn map_state(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::MapState, attr, item)
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    fn pick(ty: Type) -> String {
        codec(Some(&ty), false).to_string()
    }

    #[test]
    fn named_types_are_picked_for_with_their_lifetimes_anonymous() {
        assert_eq!(
            pick(parse_quote!(&'a str)),
            "(& :: sluice_sdk :: __private :: Pick :: < & '_ str > :: NEW) . codec ()"
        );
        assert!(
            pick(parse_quote!((&'a str, Option<&'static str>)))
                .contains("'_ str , Option < & 'static str")
        );
        assert!(pick(parse_quote!(Reading)).contains("Pick :: < Reading >"));
    }

    #[test]
    fn unnameable_types_get_serde() {
        let serde = ":: sluice_sdk :: __private :: SerdeCodec";
        assert_eq!(pick(parse_quote!(impl Iterator<Item = u8>)), serde);
        assert_eq!(pick(parse_quote!(super::Reading)), serde);
        assert_eq!(pick(parse_quote!(Box<dyn Fn()>)), serde);
        assert_eq!(codec(Some(&parse_quote!(i64)), true).to_string(), serde);
        assert_eq!(codec(None, false).to_string(), serde);
    }

    #[test]
    fn flat_map_items_and_fallible_results_are_found() {
        let item = |t: Type| item_type(&t).map(|t| quote!(#t).to_string());
        assert_eq!(
            item(parse_quote!(impl Iterator<Item = &'a str> + 'a)).as_deref(),
            Some("& 'a str")
        );
        assert_eq!(
            item(parse_quote!(Vec<(String, i64)>)).as_deref(),
            Some("(String , i64)")
        );
        assert_eq!(item(parse_quote!(Option<u8>)).as_deref(), Some("u8"));
        assert_eq!(item(parse_quote!([i32; 2])).as_deref(), Some("i32"));
        assert_eq!(item(parse_quote!(MyIter)), None);
        let ok: Type = parse_quote!(Result<(u8, bool), String>);
        assert_eq!(
            first_type_arg(&ok)
                .map(|t| quote!(#t).to_string())
                .as_deref(),
            Some("(u8 , bool)")
        );
    }
}
