//! Rewriting of free `async fn` handlers, shared by all three attributes.
//!
//! The original function becomes an inner `async fn __ac_inner` with its parameters, patterns and
//! return type untouched (so `?`, `web::Path((a, b))` and any `R: Responder` keep working); the
//! outer function keeps the name, visibility and every other attribute (`#[get]`, docs, …), takes
//! an extra `HttpRequest` and returns `HttpResponse`.

use proc_macro2::TokenStream;
use quote::{ToTokens, format_ident, quote};
use syn::punctuated::Punctuated;
use syn::{Error, FnArg, Item, ItemFn, Token};

/// The added request parameter of the outer function.
pub(crate) fn req_ident() -> syn::Ident {
    format_ident!("__ac_req")
}

/// The tokens to point at when `item` is not something the attribute applies to: the item's
/// keyword and name (`struct Foo`) rather than its whole body.
pub(crate) fn item_head(item: &Item) -> TokenStream {
    fn head(keyword: impl ToTokens, name: impl ToTokens) -> TokenStream {
        quote!(#keyword #name)
    }
    match item {
        Item::Struct(i) => head(i.struct_token, &i.ident),
        Item::Enum(i) => head(i.enum_token, &i.ident),
        Item::Union(i) => head(i.union_token, &i.ident),
        Item::Const(i) => head(i.const_token, &i.ident),
        Item::Static(i) => head(i.static_token, &i.ident),
        Item::Type(i) => head(i.type_token, &i.ident),
        Item::Trait(i) => head(i.trait_token, &i.ident),
        Item::Mod(i) => head(i.mod_token, &i.ident),
        Item::Impl(i) => head(i.impl_token, &i.self_ty),
        other => other.to_token_stream(),
    }
}

/// Checks that `func` is a free `async fn` handler.
pub(crate) fn check_free_async_fn(func: &ItemFn, macro_name: &str) -> syn::Result<()> {
    let sig = &func.sig;
    if sig.asyncness.is_none() {
        let (fn_token, ident) = (&sig.fn_token, &sig.ident);
        return Err(Error::new_spanned(
            quote!(#fn_token #ident),
            format!("`#[{macro_name}]` handlers must be `async fn`"),
        ));
    }
    if let Some(receiver) = sig.receiver() {
        let message = if macro_name == "etag_cached" {
            "`#[etag_cached]` on a method needs `#[etag_cached]` on its `impl` block".to_owned()
        } else {
            format!("`#[{macro_name}]` applies to free `async fn` handlers, not methods")
        };
        return Err(Error::new_spanned(receiver, message));
    }
    Ok(())
}

/// Rewrites `func` (already checked by [`check_free_async_fn`]); `body` receives the expression
/// of the original handler's future (`__ac_inner(__ac_arg0, …)`) and returns the statements that
/// turn it into the `HttpResponse` (with `__ac_req` in scope).
pub(crate) fn rewrite_free_fn(
    func: ItemFn,
    body: impl FnOnce(TokenStream) -> TokenStream,
) -> TokenStream {
    rewrite_free_fn_with_args(func, |call| body(call.future()))
}

/// The outer function's extractor arguments and the call of the original handler.
pub(crate) struct HandlerCall {
    /// `__ac_arg0`, … in order.
    pub(crate) args: Vec<syn::Ident>,
    /// Their types, as written.
    pub(crate) types: Vec<syn::Type>,
}

impl HandlerCall {
    /// `__ac_inner(__ac_arg0, …)`.
    pub(crate) fn future(&self) -> TokenStream {
        let args = &self.args;
        quote!(__ac_inner(#(#args),*))
    }
}

/// [`rewrite_free_fn`] for bodies that need the arguments and their types.
pub(crate) fn rewrite_free_fn_with_args(
    func: ItemFn,
    body: impl FnOnce(&HandlerCall) -> TokenStream,
) -> TokenStream {
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
        ..
    } = func;
    let req = req_ident();

    let mut inner_sig = sig.clone();
    inner_sig.ident = format_ident!("__ac_inner");

    let mut outer_sig = sig;
    let mut args = Vec::with_capacity(outer_sig.inputs.len());
    let mut types = Vec::with_capacity(outer_sig.inputs.len());
    let mut inputs: Punctuated<FnArg, Token![,]> = Punctuated::new();
    inputs.push(syn::parse_quote!(#req: ::actix_web::HttpRequest));
    for (index, input) in outer_sig.inputs.iter().enumerate() {
        // Receivers were rejected by `check_free_async_fn`.
        if let FnArg::Typed(typed) = input {
            let arg = format_ident!("__ac_arg{index}");
            let ty = &typed.ty;
            inputs.push(syn::parse_quote!(#arg: #ty));
            args.push(arg);
            types.push((**ty).clone());
        }
    }
    outer_sig.inputs = inputs;
    outer_sig.output = syn::parse_quote!(-> ::actix_web::HttpResponse);

    let body = body(&HandlerCall { args, types });
    quote! {
        #(#attrs)*
        #vis #outer_sig {
            #inner_sig #block
            #body
        }
    }
}
