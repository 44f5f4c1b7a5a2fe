//! Attribute macros of the Sluice guest SDK: `#[sluice::map]`, `#[sluice::flat_map]`,
//! `#[sluice::filter]`, `#[sluice::reduce]` and the rest. Use them through `sluice-sdk`.
//!
//! Each attribute keeps the function as written and adds, beside it, a module of
//! the same name holding `FUNCTION: sluice_sdk::Function`, the columnar adapter
//! that `sluice_sdk::export!` registers. (Functions and modules live in
//! different namespaces, so both can be called `split`.)

use proc_macro::TokenStream;
use quote::{format_ident, quote};
use syn::{ItemFn, ReturnType, Type, parse_macro_input};

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

fn expand(kind: Kind, attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        return syn::Error::new(
            proc_macro2::Span::call_site(),
            "sluice function attributes take no arguments",
        )
        .to_compile_error()
        .into();
    }
    let f = parse_macro_input!(item as ItemFn);
    let name = &f.sig.ident;
    let vis = &f.vis;
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
    let name_str = name.to_string();
    let doc = doc_line(&f);
    let adapter = format_ident!("__sluice_call");
    let (kind_tokens, call) = match kind {
        Kind::Map => {
            let run = if fallible {
                quote!(try_map)
            } else {
                quote!(map)
            };
            (
                quote!(Map),
                quote! {
                    fn #adapter(input: &::sluice_sdk::Column) -> ::std::result::Result<::sluice_sdk::Column, ::sluice_sdk::CallError> {
                        ::sluice_sdk::__private::#run(input, super::#name)
                    }
                    ::sluice_sdk::Call::Values(#adapter)
                },
            )
        }
        Kind::FlatMap => {
            let run = if fallible {
                quote!(try_flat_map)
            } else {
                quote!(flat_map)
            };
            (
                quote!(FlatMap),
                quote! {
                    fn #adapter(input: &::sluice_sdk::Column) -> ::std::result::Result<::sluice_sdk::Column, ::sluice_sdk::CallError> {
                        ::sluice_sdk::__private::#run(input, super::#name)
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
                    ::sluice_sdk::__private::filter(input, super::#name)
                }
                ::sluice_sdk::Call::Filter(#adapter)
            },
        ),
        Kind::Reduce => (
            quote!(Reduce),
            quote! {
                fn #adapter(values: &::sluice_sdk::Column, groups: &[u32]) -> ::std::result::Result<::sluice_sdk::Column, ::sluice_sdk::CallError> {
                    ::sluice_sdk::__private::reduce(values, groups, super::#name)
                }
                ::sluice_sdk::Call::Reduce(#adapter)
            },
        ),
        Kind::Fold => (
            quote!(Reduce),
            quote! {
                fn #adapter(values: &::sluice_sdk::Column, groups: &[u32]) -> ::std::result::Result<::sluice_sdk::Column, ::sluice_sdk::CallError> {
                    ::sluice_sdk::__private::fold(values, groups, super::#name)
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
                    ::sluice_sdk::__private::inverse_reduce(accumulated, removed, super::#name)
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
    quote! {
        #f

        #[doc(hidden)]
        #[allow(non_snake_case)]
        #vis mod #name {
            /// The registration of this function for `sluice_sdk::export!`.
            pub const FUNCTION: ::sluice_sdk::Function = ::sluice_sdk::Function {
                name: #name_str,
                doc: #doc,
                kind: ::sluice_sdk::Kind::#kind_tokens,
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
