//! `#[cache_control(...)]` and `#[never_cache]`, after `django.views.decorators.cache`.

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::{Error, Item, ItemFn};

use crate::args::{CACHE_CONTROL_KEYS, Options, debug_expansion, input_and_compile_error};
use crate::handler::{check_free_async_fn, item_head, req_ident, rewrite_free_fn};

pub(crate) fn expand_cache_control(args: TokenStream, item: &TokenStream) -> TokenStream {
    const NAME: &str = "cache_control";
    let output = expand(NAME, item, |func| {
        let options = Options::parse(args, CACHE_CONTROL_KEYS)?;
        if options.is_empty() {
            return Err(Error::new(
                Span::call_site(),
                "`#[cache_control]` needs at least one directive, such as `max_age = 3600`",
            ));
        }
        let policy = options.cache_policy(&[]);
        let req = req_ident();
        Ok(rewrite_free_fn(func, |future| {
            match options.targeted_policies() {
                None => quote! {
                    const __AC_POLICY: ::actix_conditional::CachePolicy = #policy;
                    ::actix_conditional::condition::with_cache_control(&#req, __AC_POLICY, #future).await
                },
                Some(targeted) => quote! {
                    const __AC_POLICY: ::actix_conditional::CachePolicy = #policy;
                    const __AC_TARGETED: ::actix_conditional::cache_control::TargetedPolicies = #targeted;
                    ::actix_conditional::condition::with_cache_control_targeted(
                        &#req, __AC_POLICY, __AC_TARGETED, #future
                    ).await
                },
            }
        }))
    });
    debug_expansion(NAME, &output);
    output
}

pub(crate) fn expand_never_cache(args: TokenStream, item: &TokenStream) -> TokenStream {
    const NAME: &str = "never_cache";
    let output = expand(NAME, item, |func| {
        if !args.is_empty() {
            return Err(Error::new_spanned(
                args,
                "`#[never_cache]` takes no arguments",
            ));
        }
        let req = req_ident();
        Ok(rewrite_free_fn(
            func,
            |future| quote!(::actix_conditional::condition::with_never_cache(&#req, #future).await),
        ))
    });
    debug_expansion(NAME, &output);
    output
}

/// Checks the target, runs `rewrite` and turns every error into the original item plus
/// `compile_error!`. Target and argument errors are reported together.
fn expand(
    name: &str,
    item: &TokenStream,
    rewrite: impl FnOnce(ItemFn) -> syn::Result<TokenStream>,
) -> TokenStream {
    let result = match syn::parse2::<Item>(item.clone()) {
        Ok(Item::Fn(func)) => match check_free_async_fn(&func, name) {
            Ok(()) => rewrite(func),
            Err(mut error) => {
                // Still report argument errors alongside the target error.
                if let Err(args_error) = rewrite(func) {
                    error.combine(args_error);
                }
                Err(error)
            }
        },
        Ok(other) => Err(Error::new_spanned(
            item_head(&other),
            format!("`#[{name}]` applies to `async fn` handlers"),
        )),
        Err(error) => Err(error),
    };
    result.unwrap_or_else(|error| input_and_compile_error(item, &error))
}
