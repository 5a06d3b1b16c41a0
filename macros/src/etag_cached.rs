//! `#[etag_cached]` on free `async fn` handlers and on `impl` blocks.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens as _, quote, quote_spanned};
use syn::spanned::Spanned as _;
use syn::{Attribute, Error, FnArg, ImplItem, ImplItemFn, Item, ItemFn, ItemImpl, Pat, Type};

use crate::args::{ETAG_CACHED_KEYS, Key, Options, debug_expansion, input_and_compile_error};
use crate::handler::{
    HandlerCall, check_free_async_fn, item_head, req_ident, rewrite_free_fn_with_args,
};

const NAME: &str = "etag_cached";

/// ViewSet method names and the `Action` variant each one answers.
const VIEWSET_ACTIONS: &[(&str, &str)] = &[
    ("list", "List"),
    ("retrieve", "Retrieve"),
    ("create", "Create"),
    ("update", "Update"),
    ("partial_update", "PartialUpdate"),
    ("destroy", "Destroy"),
];

pub(crate) fn expand(args: TokenStream, item: &TokenStream) -> TokenStream {
    let output = match syn::parse2::<Item>(item.clone()) {
        Ok(Item::Fn(func)) => {
            expand_fn(args, func).unwrap_or_else(|error| input_and_compile_error(item, &error))
        }
        Ok(Item::Impl(imp)) => expand_impl(args, imp),
        Ok(other) => input_and_compile_error(
            item,
            &Error::new_spanned(
                item_head(&other),
                "`#[etag_cached]` applies to `async fn` handlers and `impl` blocks",
            ),
        ),
        Err(error) => input_and_compile_error(item, &error),
    };
    debug_expansion(NAME, &output);
    output
}

fn expand_fn(args: TokenStream, func: ItemFn) -> syn::Result<TokenStream> {
    let target = check_free_async_fn(&func, NAME);
    let options = Options::parse(args, ETAG_CACHED_KEYS)
        .and_then(|options| require_max_age(options, Span::call_site()));
    let options = match (target, options) {
        (Ok(()), Ok(options)) => options,
        (Err(mut first), Err(second)) => {
            first.combine(second);
            return Err(first);
        }
        (Err(error), _) | (_, Err(error)) => return Err(error),
    };
    check_cache_options(&options)?;
    Ok(rewrite_free_fn_with_args(func, |call| {
        if options.has(Key::Cache) {
            cached(&options, call)
        } else {
            let respond = respond(&options, false, &call.future());
            with_invalidation(&options, &respond)
        }
    }))
}

/// `ttl` needs `cache`; `cache` answers from stored entries, so validators computed before the
/// handler would be bypassed: they belong to a revision cache instead.
fn check_cache_options(options: &Options) -> syn::Result<()> {
    if let (Some(span), false) = (options.span(Key::Ttl), options.has(Key::Cache)) {
        return Err(Error::new(span, "`ttl` needs `cache = \"name\"`"));
    }
    if options.has(Key::Cache) {
        for key in [Key::Etag, Key::LastModified, Key::Invalidates] {
            if let Some(span) = options.span(key) {
                return Err(Error::new(
                    span,
                    format!(
                        "`{}` cannot be combined with `cache`{}",
                        key.name(),
                        if key == Key::Invalidates {
                            ": a cached read does not invalidate"
                        } else {
                            ": the cache answers conditional requests from its stored ETag (use a `ResponseCache::revision` cache for validators computed before the handler)"
                        }
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The registered cache the `cache` option names, as an expression of type `ResponseCache`
/// (returning `missing_cache`'s 500 from the handler when it is not registered and there is
/// no `ttl` to create it).
fn cache_lookup(options: &Options) -> TokenStream {
    let name = options
        .str_value(Key::Cache)
        .expect("checked by the caller");
    match options.seconds(Key::Ttl) {
        Some(ttl) => {
            let ttl = proc_macro2::Literal::u64_unsuffixed(u64::from(ttl));
            quote! {
                ::actix_conditional::response_cache::named_or_register(#name, || {
                    ::actix_conditional::ResponseCache::ttl(#name, ::core::time::Duration::from_secs(#ttl))
                })
            }
        }
        None => quote! {
            match ::actix_conditional::response_cache::named(#name) {
                ::core::option::Option::Some(cache) => cache,
                ::core::option::Option::None => {
                    return ::actix_conditional::__private::missing_cache(#name);
                }
            }
        },
    }
}

/// The statements of a free handler answered from a named response cache: one
/// `ResponseCache::serve_handler` call whose arguments are the request and the extractors
/// actix already ran, and whose handler applies the policy to the original function's answer.
/// (`serve_handler` re-extracts them, body empty, for any build after the first.)
fn cached(options: &Options, call: &HandlerCall) -> TokenStream {
    let req = req_ident();
    let lookup = cache_lookup(options);
    let (args, types) = (&call.args, &call.types);
    let respond = respond(options, false, &call.future());
    let first = quote!(::core::clone::Clone::clone(&#req));
    // As `cargo expand` prints it: `(req,)` alone, `(req, a, b)` otherwise.
    let tuple = if args.is_empty() {
        quote!((#first,))
    } else {
        quote!((#first #(, #args)*))
    };
    quote! {
        let __ac_cache = #lookup;
        __ac_cache
            .serve_handler(
                &#req,
                #tuple,
                |#req: ::actix_web::HttpRequest #(, #args: #types)*| async move { #respond }
            )
            .await
    }
}

/// Wraps `respond` so a 2xx answer invalidates the caches named by `invalidates`.
fn with_invalidation(options: &Options, respond: &TokenStream) -> TokenStream {
    let Some(target) = options.str_value(Key::Invalidates) else {
        return respond.clone();
    };
    let value = target.value();
    let (name, section) = match value.split_once(':') {
        Some((name, section)) => (name.to_owned(), Some(section.to_owned())),
        None => (value, None),
    };
    let section = match section {
        Some(section) => quote!(::core::option::Option::Some(#section)),
        None => quote!(::core::option::Option::None),
    };
    quote! {
        let mut __ac_res: ::actix_web::HttpResponse = { #respond };
        ::actix_conditional::__private::invalidate_on_success(&mut __ac_res, #name, #section).await;
        __ac_res
    }
}

fn require_max_age(options: Options, span: Span) -> syn::Result<Options> {
    if options.has(Key::MaxAge) {
        Ok(options)
    } else {
        Err(Error::new(span, "missing `max_age`"))
    }
}

/// The statements that evaluate the validators and answer through `HandlerPolicy::respond`;
/// `__ac_req` must be in scope. `receiver`: validator functions are called as `f(self, &req)`.
fn respond(options: &Options, receiver: bool, future: &TokenStream) -> TokenStream {
    let req = req_ident();
    let policy = options.cache_policy(&[Key::MustRevalidate]);
    let vary = options.vary().map(|names| quote!(.vary(&[#(#names),*])));
    let groups = options
        .groups()
        .map(|groups| quote!(.groups(&[#(#groups),*])));
    let validators = [
        (Key::Etag, quote!(etag)),
        (Key::LastModified, quote!(last_modified)),
    ]
    .into_iter()
    .filter_map(|(key, method)| {
        let path = options.fn_path(key)?;
        let call_args = if receiver {
            quote!(self, &#req)
        } else {
            quote!(&#req)
        };
        // Spanned at the user's path so a wrong signature points at it.
        let call = quote_spanned!(path.span()=> #path(#call_args));
        // Also spanned at the path: a wrong return type is reported there.
        let resolved = quote_spanned!(path.span()=> ::actix_conditional::__private::Validator(#call).resolve());
        Some(quote! {
            .#method({
                use ::actix_conditional::__private::{ResolveAsync as _, ResolveInvalid as _, ResolveSync as _};
                #resolved.await
            })
        })
    });
    let targeted = options
        .targeted_policies()
        .map(|targeted| quote!(.targeted(#targeted)));
    quote! {
        const __AC_POLICY: ::actix_conditional::condition::HandlerPolicy =
            ::actix_conditional::condition::HandlerPolicy::new(#policy) #targeted #vary #groups;
        // One per handler: how its 200s meet `Compress`, so its early 304s and 412s match them.
        static __AC_SHAPE: ::actix_conditional::condition::ResponseShape =
            ::actix_conditional::condition::ResponseShape::new();
        let __ac_validators = ::actix_conditional::condition::RequestValidators::new() #(#validators)*;
        __AC_POLICY.respond_learning(&#req, __ac_validators, &__AC_SHAPE, #future).await
    }
}

fn is_etag_cached(attr: &Attribute) -> bool {
    attr.path()
        .segments
        .last()
        .is_some_and(|segment| segment.ident == NAME)
}

/// Removes the method's own `#[etag_cached(...)]` and parses it.
fn take_method_options(method: &mut ImplItemFn) -> syn::Result<Option<(Options, Span)>> {
    let mut found: Option<(Options, Span)> = None;
    let mut errors: Option<Error> = None;
    let mut push = |error: Error| match &mut errors {
        Some(errors) => errors.combine(error),
        None => errors = Some(error),
    };
    for attr in method.attrs.extract_if(.., |attr| is_etag_cached(attr)) {
        let parsed = match &attr.meta {
            syn::Meta::Path(_) => Ok(Options::default()),
            syn::Meta::List(list) => list.parse_args_with(|input: syn::parse::ParseStream<'_>| {
                Options::parse_from(input, ETAG_CACHED_KEYS)
            }),
            syn::Meta::NameValue(meta) => Err(Error::new_spanned(
                meta.eq_token,
                "expected `#[etag_cached(...)]`",
            )),
        };
        if found.is_some() {
            push(Error::new_spanned(
                &attr,
                "`#[etag_cached]` specified more than once",
            ));
            continue;
        }
        match parsed {
            Ok(options) => found = Some((options, attr.span())),
            Err(error) => push(error),
        }
    }
    if method.sig.asyncness.is_none() && found.is_some() {
        let (fn_token, ident) = (&method.sig.fn_token, &method.sig.ident);
        push(Error::new_spanned(
            quote!(#fn_token #ident),
            "`#[etag_cached]` handlers must be `async fn`",
        ));
    }
    match errors {
        Some(errors) => Err(errors),
        None => Ok(found),
    }
}

fn expand_impl(args: TokenStream, mut imp: ItemImpl) -> TokenStream {
    let mut errors: Option<Error> = None;
    let mut push = |error: Error| match &mut errors {
        Some(errors) => errors.combine(error),
        None => errors = Some(error),
    };
    let mut impl_options = Options::parse(args, ETAG_CACHED_KEYS).unwrap_or_else(|error| {
        push(error);
        Options::default()
    });
    if let Some(span) = impl_options
        .span(Key::Cache)
        .or(impl_options.span(Key::Ttl))
    {
        push(Error::new(
            span,
            "`cache` and `ttl` go on a method's own `#[etag_cached(...)]`: on the `impl` block they would apply to every method, mutations included",
        ));
        impl_options = impl_options.without(&[Key::Cache, Key::Ttl]);
    }

    // Pass 1: strip and parse per-method attributes, so that on error the impl is re-emitted
    // without them (they would otherwise expand again on their own).
    let mut methods: Vec<Option<(Options, Span)>> = Vec::new();
    for item in &mut imp.items {
        if let ImplItem::Fn(method) = item {
            methods.push(take_method_options(method).unwrap_or_else(|error| {
                push(error);
                None
            }));
        }
    }
    let fallback = imp.clone();

    // Pass 2: rewrite every `async fn`.
    let mut own = methods.into_iter();
    for item in &mut imp.items {
        let ImplItem::Fn(method) = item else { continue };
        let own = own.next().flatten();
        if method.sig.asyncness.is_none() {
            continue;
        }
        let (options, span) = match own {
            Some((own, span)) => (impl_options.overridden_by(&own), span),
            None => (impl_options.clone(), Span::call_site()),
        };
        let rewritten = require_max_age(options, span)
            .and_then(|options| match options.conflict() {
                // `private` on the block and `cdn_max_age` on the method, or the reverse.
                Some(conflict) => Err(Error::new(span, conflict.to_string())),
                None => Ok(options),
            })
            .and_then(|options| check_cache_options(&options).map(|()| options))
            .and_then(|options| rewrite_method(method, &options));
        if let Err(error) = rewritten {
            push(error);
        }
    }

    if let Some(actions) = viewset_actions(&imp) {
        imp.items.push(ImplItem::Verbatim(actions));
    }

    match errors {
        Some(errors) => input_and_compile_error(&fallback, &errors),
        None => quote!(#imp),
    }
}

/// Whether `ty` is `HttpRequest` (`Some(false)`) or `&HttpRequest` (`Some(true)`).
fn request_type(ty: &Type) -> Option<bool> {
    let (ty, by_ref) = match ty {
        Type::Reference(reference) => (&*reference.elem, true),
        ty => (ty, false),
    };
    let Type::Path(path) = ty else { return None };
    let is_request = path.qself.is_none()
        && path
            .path
            .segments
            .last()
            .is_some_and(|segment| segment.ident == "HttpRequest");
    is_request.then_some(by_ref)
}

fn missing_request(method: &ImplItemFn) -> Error {
    let (fn_token, ident) = (&method.sig.fn_token, &method.sig.ident);
    Error::new_spanned(
        quote!(#fn_token #ident),
        "`#[etag_cached]` methods need an `HttpRequest` parameter",
    )
}

/// The method's `HttpRequest` parameter as an expression of type `HttpRequest` or `&HttpRequest`
/// (renaming a `_` pattern so it can be read).
fn request_param(method: &mut ImplItemFn) -> syn::Result<(syn::Ident, bool)> {
    for input in &mut method.sig.inputs {
        let FnArg::Typed(typed) = input else { continue };
        let Some(by_ref) = request_type(&typed.ty) else {
            continue;
        };
        let ident = match &*typed.pat {
            Pat::Ident(pat) if pat.subpat.is_none() => pat.ident.clone(),
            _ => {
                let ident = quote::format_ident!("__ac_req_param");
                *typed.pat = syn::parse_quote!(#ident);
                ident
            }
        };
        return Ok((ident, by_ref));
    }
    Err(missing_request(method))
}

fn rewrite_method(method: &mut ImplItemFn, options: &Options) -> syn::Result<()> {
    if options.has(Key::Cache) {
        return rewrite_cached_method(method, options);
    }
    let (param, by_ref) = request_param(method)?;
    let req = req_ident();
    let source = if by_ref {
        quote!(#param)
    } else {
        quote!(&#param)
    };
    let receiver = method.sig.receiver().is_some();
    let block = &method.block;
    let respond = respond(options, receiver, &quote!(async move #block));
    let respond = with_invalidation(options, &respond);
    method.block = syn::parse_quote!({
        let #req: ::actix_web::HttpRequest = ::core::clone::Clone::clone(#source);
        #respond
    });
    Ok(())
}

/// How a cached method's build, which must be `'static` and may run after the call returned,
/// gets the `self` its body reads: a clone taken before the call, cloned again for each build.
enum CachedReceiver {
    /// `&self` (or `self: &T`): `Self: Clone`, and the body reads a reference to its clone.
    Shared,
    /// `self`, `mut self` or `self: T`: `T: Clone`, and the body owns its clone.
    Owned(Option<syn::Token![mut]>),
}

fn cached_receiver(receiver: &syn::Receiver) -> syn::Result<CachedReceiver> {
    let owned = CachedReceiver::Owned(receiver.mutability);
    let kind = match &receiver.kind {
        syn::ReceiverKind::Reference(_, _, None) => Some(CachedReceiver::Shared),
        syn::ReceiverKind::Value => Some(owned),
        syn::ReceiverKind::Typed(_, ty) => match &**ty {
            Type::Reference(reference) if reference.mutability.is_some() => None,
            Type::Reference(_) => Some(CachedReceiver::Shared),
            _ => Some(owned),
        },
        _ => None,
    };
    kind.ok_or_else(|| {
        Error::new_spanned(
            receiver,
            "`cache` needs `&self` or `self` by value: each build of the cached response runs on a clone of `self`, possibly after this call returned",
        )
    })
}

/// A method answered from a named response cache: the same `ResponseCache::serve_handler`
/// call as a free handler's, with `(HttpRequest,)` for arguments. The build must be `'static`
/// and may run again later, so the `self` it reads (`Self: Clone`) and the other parameters
/// (`Clone`) are moved into it and cloned for each build; the body reads `self` through a
/// binding to that clone, and its parameters under their own patterns.
fn rewrite_cached_method(method: &mut ImplItemFn, options: &Options) -> syn::Result<()> {
    let req = req_ident();
    let this = quote::format_ident!("__ac_this");
    let binding = quote::format_ident!("__ac_self");
    let (body, uses_self) = match method.sig.receiver() {
        Some(_) => replace_self(method.block.to_token_stream(), &binding),
        None => (method.block.to_token_stream(), false),
    };
    // `self`, if the body reads it: taken before the call, cloned per build, bound in it.
    let receiver = match method.sig.receiver() {
        Some(receiver) if uses_self => {
            let span = receiver.self_token.span;
            let binding = syn::Ident::new("__ac_self", span);
            // One `Clone::clone` path for the clone taken here and those of each build, so a
            // `Self` that is not `Clone` is one error, at `self`.
            let clone = quote_spanned!(span=> ::core::clone::Clone::clone);
            let (take, bind) = match cached_receiver(receiver)? {
                CachedReceiver::Shared => (
                    quote!(let __ac_clone = #clone; let #this = __ac_clone(self);),
                    quote!(let #binding = &#this;),
                ),
                CachedReceiver::Owned(mutability) => (
                    quote!(let __ac_clone = #clone; let #this = self;),
                    quote!(let #mutability #binding = #this;),
                ),
            };
            let clone = quote!(let #this = __ac_clone(&#this););
            Some((take, clone, bind))
        }
        _ => None,
    };
    let (take_this, clone_this, bind_self) = match receiver {
        Some((take, clone, bind)) => (Some(take), Some(clone), Some(bind)),
        None => (None, None, None),
    };

    let param = quote::format_ident!("__ac_req_param");
    let mut request: Option<(Pat, bool)> = None;
    // The other parameters: the name each is moved into the build under, its pattern, the
    // span of its type.
    let mut moved: Vec<(syn::Ident, Pat, Span)> = Vec::new();
    for (index, input) in method.sig.inputs.iter_mut().enumerate() {
        let FnArg::Typed(typed) = input else { continue };
        match request_type(&typed.ty) {
            Some(by_ref) if request.is_none() => {
                request = Some(((*typed.pat).clone(), by_ref));
                *typed.pat = syn::parse_quote!(#param);
            }
            _ => {
                let arg = quote::format_ident!("__ac_arg{index}");
                moved.push((arg.clone(), (*typed.pat).clone(), typed.ty.span()));
                *typed.pat = syn::parse_quote!(#arg);
            }
        }
    }
    let Some((request_pat, by_ref)) = request else {
        return Err(missing_request(method));
    };
    let (source, bind_request) = if by_ref {
        (quote!(#param), quote!(let #request_pat = &#req;))
    } else {
        (
            quote!(&#param),
            quote!(let #request_pat = ::core::clone::Clone::clone(&#req);),
        )
    };
    let clone_args = moved.iter().map(
        |(arg, _, span)| quote_spanned!(*span=> let #arg = ::core::clone::Clone::clone(&#arg);),
    );
    let bind_args = moved.iter().map(|(arg, pat, _)| quote!(let #pat = #arg;));

    let lookup = cache_lookup(options);
    let respond = respond(options, false, &quote!(async move #body));
    method.block = syn::parse_quote!({
        let #req: ::actix_web::HttpRequest = ::core::clone::Clone::clone(#source);
        let __ac_cache = #lookup;
        #take_this
        __ac_cache
            .serve_handler(
                &#req,
                (::core::clone::Clone::clone(&#req),),
                move |#req: ::actix_web::HttpRequest| {
                    #clone_this
                    #(#clone_args)*
                    async move {
                        #bind_self
                        #bind_request
                        #(#bind_args)*
                        #respond
                    }
                }
            )
            .await
    });
    Ok(())
}

/// `tokens` with every `self` value (not `self::` paths) replaced by `with` (spanned as the
/// `self` it replaces), outside nested `impl` and `trait` bodies, whose `self` is their own;
/// and whether there was one.
fn replace_self(tokens: TokenStream, with: &syn::Ident) -> (TokenStream, bool) {
    use proc_macro2::{Delimiter, Group, TokenTree};
    let mut found = false;
    let mut out = Vec::new();
    let mut iter = tokens.into_iter().peekable();
    while let Some(tree) = iter.next() {
        match tree {
            TokenTree::Ident(ident) if ident == "impl" || ident == "trait" => {
                // Copied as is, up to and including the item's body.
                out.push(TokenTree::Ident(ident));
                for tree in iter.by_ref() {
                    let body = matches!(&tree, TokenTree::Group(group) if group.delimiter() == Delimiter::Brace);
                    out.push(tree);
                    if body {
                        break;
                    }
                }
            }
            TokenTree::Ident(ident)
                if ident == "self"
                    && !matches!(iter.peek(), Some(TokenTree::Punct(punct)) if punct.as_char() == ':') =>
            {
                found = true;
                let mut replaced = with.clone();
                replaced.set_span(ident.span());
                out.push(TokenTree::Ident(replaced));
            }
            TokenTree::Group(group) => {
                let (stream, inner) = replace_self(group.stream(), with);
                found |= inner;
                let mut replaced = Group::new(group.delimiter(), stream);
                replaced.set_span(group.span());
                out.push(TokenTree::Group(replaced));
            }
            other => out.push(other),
        }
    }
    (out.into_iter().collect(), found)
}

/// `const ACTIONS` for `impl …ViewSet for T` blocks that do not declare it.
fn viewset_actions(imp: &ItemImpl) -> Option<TokenStream> {
    let (path, _) = imp.trait_.as_ref()?;
    if path.segments.last()?.ident != "ViewSet" {
        return None;
    }
    let declares_actions = imp
        .items
        .iter()
        .any(|item| matches!(item, ImplItem::Const(c) if c.ident == "ACTIONS"));
    if declares_actions {
        return None;
    }
    let defined = |name: &str| {
        imp.items
            .iter()
            .any(|item| matches!(item, ImplItem::Fn(method) if method.sig.ident == name))
    };
    let actions = VIEWSET_ACTIONS
        .iter()
        .filter(|(method, _)| defined(method))
        .map(|(_, variant)| {
            let variant = syn::Ident::new(variant, Span::call_site());
            quote!(::actix_conditional::viewset::Action::#variant)
        });
    Some(quote! {
        const ACTIONS: &'static [::actix_conditional::viewset::Action] = &[#(#actions),*];
    })
}

#[cfg(test)]
mod tests {
    use proc_macro2::TokenStream;
    use quote::{ToTokens as _, quote};

    use super::{expand, is_etag_cached, replace_self};

    /// The first `count` code blocks under `# Expansion` in `#[etag_cached]`'s docs, without
    /// the lines rustdoc hides.
    fn expansion_blocks(count: usize) -> Vec<String> {
        let docs: Vec<&str> = include_str!("lib.rs")
            .lines()
            .filter_map(|line| line.trim_start().strip_prefix("///"))
            .map(|line| line.strip_prefix(' ').unwrap_or(line))
            .collect();
        let start = docs
            .iter()
            .position(|line| *line == "# Expansion")
            .expect("an `# Expansion` section in lib.rs");
        let mut blocks = Vec::new();
        let mut block: Option<String> = None;
        for line in &docs[start..] {
            if line.starts_with("```") {
                match block.take() {
                    Some(done) => blocks.push(done),
                    None => block = Some(String::new()),
                }
                if blocks.len() == count {
                    break;
                }
            } else if let Some(block) = &mut block {
                let trimmed = line.trim_start();
                if trimmed != "#" && !trimmed.starts_with("# ") {
                    block.push_str(line);
                    block.push('\n');
                }
            }
        }
        assert_eq!(blocks.len(), count, "code blocks under `# Expansion`");
        blocks
    }

    /// `source` with every item carrying `#[etag_cached(...)]` expanded.
    fn expand_items(source: &str) -> TokenStream {
        let file: syn::File = syn::parse_str(source).unwrap_or_else(|error| panic!("{error}"));
        let mut out = TokenStream::new();
        for mut item in file.items {
            let attrs = match &mut item {
                syn::Item::Fn(item) => &mut item.attrs,
                syn::Item::Impl(item) => &mut item.attrs,
                _ => {
                    item.to_tokens(&mut out);
                    continue;
                }
            };
            match attrs.iter().position(is_etag_cached) {
                Some(index) => {
                    let args = match attrs.remove(index).meta {
                        syn::Meta::List(list) => list.tokens,
                        _ => TokenStream::new(),
                    };
                    out.extend(expand(args, &item.to_token_stream()));
                }
                None => item.to_tokens(&mut out),
            }
        }
        out
    }

    /// The tokens one per line, punctuation without its spacing (`>|` parses as a joint `>`).
    fn normalized(tokens: &str) -> String {
        fn push(tokens: TokenStream, out: &mut String) {
            for tree in tokens {
                match tree {
                    proc_macro2::TokenTree::Group(group) => {
                        let (open, close) = match group.delimiter() {
                            proc_macro2::Delimiter::Parenthesis => ("(", ")"),
                            proc_macro2::Delimiter::Brace => ("{", "}"),
                            proc_macro2::Delimiter::Bracket => ("[", "]"),
                            proc_macro2::Delimiter::None => ("", ""),
                        };
                        out.push_str(open);
                        out.push('\n');
                        push(group.stream(), out);
                        out.push_str(close);
                    }
                    proc_macro2::TokenTree::Punct(punct) => out.push(punct.as_char()),
                    other => out.push_str(&other.to_string()),
                }
                out.push('\n');
            }
        }
        let mut out = String::new();
        push(
            tokens.parse().unwrap_or_else(|error| panic!("{error}")),
            &mut out,
        );
        out
    }

    #[test]
    fn documented_expansions_are_the_real_ones() {
        let blocks = expansion_blocks(4);
        for pair in blocks.chunks(2) {
            let expanded = expand_items(&pair[0]).to_string();
            assert_eq!(
                normalized(&expanded),
                normalized(&pair[1]),
                "the documented expansion of\n{}",
                pair[0]
            );
        }
    }

    #[test]
    fn cache_expands_to_one_public_serve_handler_call() {
        let free = expand(
            quote!(max_age = 5, cache = "c"),
            &quote!(
                async fn handler(a: web::Path<u32>, b: web::Query<Q>) -> String {
                    a.to_string()
                }
            ),
        )
        .to_string();
        let method = expand(
            quote!(max_age = 5),
            &quote!(
                impl T {
                    #[etag_cached(cache = "c", ttl = 9)]
                    async fn show(&self, req: &HttpRequest, id: String) -> HttpResponse {
                        self.show(req, id)
                    }
                }
            ),
        )
        .to_string();
        for expanded in [&free, &method] {
            assert_eq!(
                expanded.matches(". serve_handler (").count(),
                1,
                "{expanded}"
            );
            // Nothing but public API: no hand-rolled first-call cell or re-extraction.
            for private in ["Rc", "Cell", "FromRequest", "extract", ". serve ("] {
                assert!(!expanded.contains(private), "{private} in {expanded}");
            }
        }
        assert!(free.contains("response_cache :: named (\"c\")"), "{free}");
        assert!(
            method.contains("response_cache :: named_or_register (\"c\""),
            "{method}"
        );
    }

    #[test]
    fn replace_self_leaves_paths_and_nested_impls_alone() {
        let with = quote::format_ident!("this");
        let (tokens, found) = replace_self(
            quote!({
                let a = self.a + self::b();
                impl X {
                    fn f(&self) -> u8 {
                        self.0
                    }
                }
                (|| g(self))()
            }),
            &with,
        );
        assert!(found);
        assert_eq!(
            tokens.to_string(),
            quote!({
                let a = this.a + self::b();
                impl X {
                    fn f(&self) -> u8 {
                        self.0
                    }
                }
                (|| g(this))()
            })
            .to_string()
        );
        assert!(!replace_self(quote!({ self::f() }), &with).1);
    }
}
