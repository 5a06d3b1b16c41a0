//! Attribute macros for [`actix-conditional`](https://docs.rs/actix-conditional).
//!
//! This crate is re-exported by `actix-conditional` behind its `macros` feature (on by default);
//! depend on `actix-conditional` rather than on this crate directly.
//!
//! - [`macro@etag_cached`]: conditional GET (304/412 before the handler runs) plus a
//!   `Cache-Control` policy for reads, on a handler or on every handler of an `impl` block.
//! - [`macro@cache_control`] and [`macro@never_cache`]: Django's decorators of the same names.
//!
//! Set `ACTIX_CONDITIONAL_MACROS_DEBUG=1` while building to print each expansion to stderr.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use proc_macro::TokenStream;

mod args;
mod cache_control;
mod etag_cached;
mod handler;

/// Answers conditional requests for a handler and sets its `Cache-Control` policy.
///
/// Before the handler runs, the request's `If-None-Match`, `If-Modified-Since`, `If-Match` and
/// `If-Unmodified-Since` are evaluated (RFC 9110 §13.2.2) against the validators computed by the
/// `etag` and `last_modified` functions; a `304 Not Modified` or `412 Precondition Failed` is then
/// answered without awaiting the handler. Otherwise the handler runs, its response gets `ETag` and
/// `Last-Modified` (GET/HEAD, unless it set its own), and:
///
/// - GET/HEAD answers with a 2xx or 304 status get `Cache-Control: max-age=N, must-revalidate`
///   plus the directives below;
/// - every other answer (errors, POST, PUT, …) gets `no-cache, no-store, must-revalidate`.
///
/// The handler may take any extractors and return any `Responder`; the expanded function takes
/// an extra `HttpRequest` and returns `HttpResponse`. Other attributes (`#[get]`, `#[route]`,
/// docs) are kept, and `#[etag_cached]` may sit above or below the route attribute.
///
/// actix's `#[get]` does **not** route `HEAD` (actix/actix-web#2702): use
/// `#[route("/", method = "GET", method = "HEAD")]` or register `HEAD` explicitly.
///
/// # Syntax
///
/// ```text
/// #[etag_cached(max_age = <u32>[, option]*)]
/// async fn handler(<extractors>) -> impl Responder { … }
///
/// #[etag_cached(max_age = <u32>[, option]*)]
/// impl [Trait for] Type {
///     #[etag_cached(option[, option]*)]  // optional, per method; `cache`/`ttl` only here
///     async fn method(&self, req: HttpRequest, …) -> HttpResponse { … }
/// }
/// ```
///
/// # Attributes
///
/// - `max_age = u32`: seconds a response stays fresh (`max-age`). Required, on the function or
///   on the `impl` block (or on every method).
/// - `s_maxage = u32`: `s-maxage` for shared caches. Default: not sent.
/// - `public`: adds `public`. Default: not sent; cannot be combined with `private`.
/// - `private`: adds `private`. Default: not sent; cannot be combined with `public`.
///   `private = "X-Token"` (or a list) sends the field-qualified `private="X-Token"` instead.
/// - `extensions = ["custom=456"]`: extension directives, as for `#[cache_control]`.
/// - `stale_while_revalidate = u32`: adds `stale-while-revalidate` (RFC 5861). Default: not
///   sent. Note that `must-revalidate`, always sent, tells shared caches not to serve stale.
/// - `stale_if_error = u32`: adds `stale-if-error` (RFC 5861). Default: not sent; same caveat.
/// - `cdn_max_age = u32`: reads also get `CDN-Cache-Control: max-age=N` (RFC 9213), the
///   lifetime for CDNs, which obey it instead of `Cache-Control`: with `max_age = 0,
///   cdn_max_age = 600` browsers revalidate on every use while the edge serves the answer ten
///   minutes (purge the edge when the data changes). Default: not sent. Mutations and errors
///   never get it. When the answer's `Cache-Control` is `private` (a request with
///   `Authorization`, or the handler set it), it gets `private` too; the option itself cannot
///   be combined with `private`.
/// - `surrogate_max_age = u32`: the same for `Surrogate-Control: max-age=N` (Fastly and other
///   surrogates). Default: not sent.
/// - `vary = ["Header", …]`: header names added to `Vary`. Default: none.
/// - `etag = path`: the strong validator, `fn(&HttpRequest) -> Option<E>` (sync or `async`),
///   where `E` is an `EntityTag`, `String` or `&str`. In an `impl` block the function takes
///   `&self` first: `etag = Self::revision`. Default: none.
/// - `last_modified = path`: the weak validator, `fn(&HttpRequest) -> Option<T>` (sync or
///   `async`), where `T` is a `SystemTime` or `HttpDate`; `&self` first in an `impl` block.
///   Default: none.
/// - `cache = "name"`: answer from the process-wide `ResponseCache` registered under `name`
///   (`actix_conditional::response_cache`): hits skip the handler, concurrent misses run it
///   once, stale entries are served while one background refresh runs. The handler becomes
///   one call of the public `ResponseCache::serve_handler` (see [Expansion](#expansion)): its
///   first build runs on the extractors actix already ran; should the cache build again for
///   the same request, it re-runs them on a clone of the request with an empty body. On a
///   free handler or a method of an `impl` block (on the method's own attribute). Not with
///   `etag`/`last_modified` (the cache answers conditional requests from its stored ETag:
///   use a `ResponseCache::revision` cache for validators computed up front) nor
///   `invalidates`. Without `ttl`, a cache must have been `register()`ed under `name`, or
///   the handler answers 500 and logs an error.
/// - `ttl = u32`: with `cache`, creates and registers a TTL cache of that many seconds on
///   first use, unless one is already registered under `name`.
/// - `invalidates = "name"` or `"name:section"`: after a 2xx answer, invalidate the registered
///   cache `name` (or one section of it), e.g. on a mutation handler. It runs when the handler
///   returns: commit the write inside the handler, not in a middleware that commits later,
///   or a reader could re-cache the old data. The answer also names the group in
///   `Cache-Group-Invalidation: "name"` (or `"name:section"`, RFC 9875) for caches downstream.
///   Read-your-writes: the next read of what it invalidated is rebuilt before it is answered
///   (one build, concurrent readers wait for it), never served stale; see the
///   `response_cache` module docs.
/// - `tags = "group …"`: cache groups (RFC 9875), one or more names separated by spaces, each
///   printable ASCII. A read (GET/HEAD answered 2xx or 304) lists them in `Cache-Groups`; a
///   2xx answer to an unsafe method (POST, PUT, PATCH, DELETE, …) lists them in
///   `Cache-Group-Invalidation`, so caches downstream drop what they stored under them. On an
///   `impl` block, `tags = "challenges"` therefore tags the reads and invalidates on the
///   writes. Handlers add their own groups with `actix_conditional::edge::tag`. Default: none.
///
/// On an `impl` block the attribute applies to every `async fn` method (other items pass through
/// untouched); a method's own `#[etag_cached(...)]` overrides or extends the block's options.
/// Each method must take an `HttpRequest` (or `&HttpRequest`) parameter. In
/// `impl ViewSet for T` without `const ACTIONS`, the macro adds `ACTIONS` listing the defined
/// `list`, `retrieve`, `create`, `update`, `partial_update` and `destroy` methods.
///
/// A method with `cache = "name"` is built by the cache, possibly after the call returned, so
/// its build owns what it reads: if the body reads `self`, the method takes `&self` (the
/// type is then `Clone`: hold shared state in an `Arc` or a pool handle) or `self` by value,
/// and a clone of `self` goes into each build; its other parameters (`Clone` too) are cloned
/// into each build, which rebinds them under their own patterns. The request comes from the
/// build, so a refresh sees its own.
///
/// # Examples
///
/// ```
/// use actix_conditional::etag_cached;
/// use actix_web::{HttpRequest, Responder, route, web};
///
/// async fn article_tag(req: &HttpRequest) -> Option<String> {
///     let id = req.match_info().get("id")?;
///     Some(format!("article-{id}-v3"))
/// }
///
/// #[route("/articles/{id}", method = "GET", method = "HEAD")]
/// #[etag_cached(max_age = 60, public, etag = article_tag, vary = ["Accept-Language"])]
/// async fn article(id: web::Path<u32>) -> impl Responder {
///     format!("article {id}")
/// }
/// ```
///
/// A hot read answered from a server-side cache, and the mutation that invalidates it:
///
/// ```
/// use actix_conditional::etag_cached;
/// use actix_web::{HttpResponse, get, post, web};
/// # struct Db;
/// # impl Db {
/// #     fn active_challenges(&self) -> Vec<&'static str> { vec!["upload three files"] }
/// #     fn insert(&self, title: String) -> String { title }
/// # }
///
/// #[get("/challenges/active")]
/// #[etag_cached(max_age = 15, public, cache = "challenges", ttl = 30)]
/// async fn active_challenges(db: web::Data<Db>) -> HttpResponse {
///     HttpResponse::Ok().json(db.active_challenges())
/// }
///
/// #[post("/challenges")]
/// #[etag_cached(max_age = 0, invalidates = "challenges")] // + Cache-Group-Invalidation: "challenges"
/// async fn add_challenge(db: web::Data<Db>, title: String) -> HttpResponse {
///     HttpResponse::Created().json(db.insert(title))
/// }
/// ```
///
/// Browsers revalidate every time, the CDN in front keeps the answer ten minutes:
///
/// ```
/// use actix_conditional::etag_cached;
/// use actix_web::{App, HttpResponse, http::header, test, web};
///
/// #[etag_cached(max_age = 0, cdn_max_age = 600, etag = revision)]
/// async fn scores() -> HttpResponse {
///     HttpResponse::Ok().body("scores")
/// }
///
/// fn revision(_: &actix_web::HttpRequest) -> Option<&'static str> {
///     Some("r42")
/// }
///
/// # actix_web::rt::System::new().block_on(async {
/// let app = test::init_service(App::new().route("/scores", web::get().to(scores))).await;
/// let res = test::call_service(&app, test::TestRequest::get().uri("/scores").to_request()).await;
/// assert_eq!(res.headers().get(header::CACHE_CONTROL).unwrap(), "max-age=0, must-revalidate");
/// assert_eq!(res.headers().get(header::CDN_CACHE_CONTROL).unwrap(), "max-age=600");
///
/// // A 304 refreshes the CDN's stored headers (RFC 9111 §4.3.4): it carries the field too.
/// let req = test::TestRequest::get().uri("/scores").insert_header((header::IF_NONE_MATCH, "\"r42\""));
/// let res = test::call_service(&app, req.to_request()).await;
/// assert_eq!(res.status(), 304);
/// assert_eq!(res.headers().get(header::CDN_CACHE_CONTROL).unwrap(), "max-age=600");
/// # });
/// ```
///
/// # Expansion
///
/// With `cache`, the handler becomes one call of `ResponseCache::serve_handler` (after
/// finding the named cache), which you could write by hand. This free handler
///
/// ```
/// # use actix_conditional::etag_cached;
/// # use actix_web::web;
/// #[etag_cached(max_age = 15, public, cache = "seasons", ttl = 30)]
/// async fn season(n: web::Path<u32>) -> String {
///     format!("season {n}")
/// }
/// # actix_web::rt::System::new().block_on(async {
/// #     use actix_web::{App, test::{self, TestRequest}};
/// #     let app = test::init_service(App::new().route("/seasons/{n}", web::get().to(season))).await;
/// #     let res = test::call_service(&app, TestRequest::get().uri("/seasons/7").to_request()).await;
/// #     assert_eq!(actix_conditional::response_cache::CacheStatus::of(res.response()).unwrap().label(), "miss");
/// #     assert_eq!(res.headers().get("cache-control").unwrap(), "public, max-age=15, must-revalidate");
/// #     assert_eq!(test::read_body(res).await, "season 7");
/// #     let res = test::call_service(&app, TestRequest::get().uri("/seasons/7").to_request()).await;
/// #     assert_eq!(actix_conditional::response_cache::CacheStatus::of(res.response()).unwrap().label(), "hit");
/// # });
/// ```
///
/// expands to (`cargo expand`, formatted; a unit test of this crate checks the two agree):
///
/// ```
/// # use actix_web::web;
/// async fn season(__ac_req: ::actix_web::HttpRequest, __ac_arg0: web::Path<u32>) -> ::actix_web::HttpResponse {
///     async fn __ac_inner(n: web::Path<u32>) -> String {
///         format!("season {n}")
///     }
///     let __ac_cache = ::actix_conditional::response_cache::named_or_register("seasons", || {
///         ::actix_conditional::ResponseCache::ttl("seasons", ::core::time::Duration::from_secs(30))
///     });
///     __ac_cache
///         .serve_handler(
///             &__ac_req,
///             (::core::clone::Clone::clone(&__ac_req), __ac_arg0),
///             |__ac_req: ::actix_web::HttpRequest, __ac_arg0: web::Path<u32>| async move {
///                 const __AC_POLICY: ::actix_conditional::condition::HandlerPolicy =
///                     ::actix_conditional::condition::HandlerPolicy::new(
///                         ::actix_conditional::CachePolicy::new()
///                             .public()
///                             .max_age(15)
///                             .must_revalidate()
///                     );
///                 static __AC_SHAPE: ::actix_conditional::condition::ResponseShape =
///                     ::actix_conditional::condition::ResponseShape::new();
///                 let __ac_validators = ::actix_conditional::condition::RequestValidators::new();
///                 __AC_POLICY
///                     .respond_learning(&__ac_req, __ac_validators, &__AC_SHAPE, __ac_inner(__ac_arg0))
///                     .await
///             }
///         )
///         .await
/// }
/// # actix_web::rt::System::new().block_on(async {
/// #     use actix_web::{App, test::{self, TestRequest}};
/// #     let app = test::init_service(App::new().route("/seasons/{n}", web::get().to(season))).await;
/// #     let res = test::call_service(&app, TestRequest::get().uri("/seasons/7").to_request()).await;
/// #     assert_eq!(actix_conditional::response_cache::CacheStatus::of(res.response()).unwrap().label(), "miss");
/// #     assert_eq!(res.headers().get("cache-control").unwrap(), "public, max-age=15, must-revalidate");
/// #     assert_eq!(test::read_body(res).await, "season 7");
/// #     let res = test::call_service(&app, TestRequest::get().uri("/seasons/7").to_request()).await;
/// #     assert_eq!(actix_conditional::response_cache::CacheStatus::of(res.response()).unwrap().label(), "hit");
/// # });
/// ```
///
/// The tuple is the build's arguments: the request and the extractors; the closure applies
/// the `Cache-Control` policy to the original function's answer. A method of an `impl` block
/// makes the same call, with the request alone for arguments: `self` and the other
/// parameters are moved into the closure and cloned for each build. This method
///
/// ```
/// # use actix_conditional::etag_cached;
/// # use actix_web::{HttpRequest, HttpResponse};
/// #[derive(Clone)]
/// struct Titles {
///     prefix: &'static str,
/// }
///
/// #[etag_cached(max_age = 60)]
/// impl Titles {
///     #[etag_cached(cache = "titles", ttl = 30)]
///     async fn show(&self, req: HttpRequest, id: u32) -> HttpResponse {
///         HttpResponse::Ok().body(format!("{} {id} at {}", self.prefix, req.path()))
///     }
/// }
/// # actix_web::rt::System::new().block_on(async {
/// #     use actix_web::{App, web, test::{self, TestRequest}};
/// #     let app = test::init_service(App::new().route("/titles/{id}", web::get().to(
/// #         |req: HttpRequest, id: web::Path<u32>| async move {
/// #             Titles { prefix: "title" }.show(req, id.into_inner()).await
/// #         },
/// #     ))).await;
/// #     let res = test::call_service(&app, TestRequest::get().uri("/titles/3").to_request()).await;
/// #     assert_eq!(actix_conditional::response_cache::CacheStatus::of(res.response()).unwrap().label(), "miss");
/// #     assert_eq!(res.headers().get("cache-control").unwrap(), "max-age=60, must-revalidate");
/// #     assert_eq!(test::read_body(res).await, "title 3 at /titles/3");
/// #     let res = test::call_service(&app, TestRequest::get().uri("/titles/3").to_request()).await;
/// #     assert_eq!(actix_conditional::response_cache::CacheStatus::of(res.response()).unwrap().label(), "hit");
/// # });
/// ```
///
/// expands to:
///
/// ```
/// # use actix_web::{HttpRequest, HttpResponse};
/// #[derive(Clone)]
/// struct Titles {
///     prefix: &'static str,
/// }
///
/// impl Titles {
///     async fn show(&self, __ac_req_param: HttpRequest, __ac_arg2: u32) -> HttpResponse {
///         let __ac_req: ::actix_web::HttpRequest = ::core::clone::Clone::clone(&__ac_req_param);
///         let __ac_cache = ::actix_conditional::response_cache::named_or_register("titles", || {
///             ::actix_conditional::ResponseCache::ttl("titles", ::core::time::Duration::from_secs(30))
///         });
///         let __ac_clone = ::core::clone::Clone::clone;
///         let __ac_this = __ac_clone(self);
///         __ac_cache
///             .serve_handler(
///                 &__ac_req,
///                 (::core::clone::Clone::clone(&__ac_req),),
///                 move |__ac_req: ::actix_web::HttpRequest| {
///                     let __ac_this = __ac_clone(&__ac_this);
///                     let __ac_arg2 = ::core::clone::Clone::clone(&__ac_arg2);
///                     async move {
///                         let __ac_self = &__ac_this;
///                         let req = ::core::clone::Clone::clone(&__ac_req);
///                         let id = __ac_arg2;
///                         const __AC_POLICY: ::actix_conditional::condition::HandlerPolicy =
///                             ::actix_conditional::condition::HandlerPolicy::new(
///                                 ::actix_conditional::CachePolicy::new()
///                                     .max_age(60)
///                                     .must_revalidate()
///                             );
///                         static __AC_SHAPE: ::actix_conditional::condition::ResponseShape =
///                             ::actix_conditional::condition::ResponseShape::new();
///                         let __ac_validators =
///                             ::actix_conditional::condition::RequestValidators::new();
///                         __AC_POLICY
///                             .respond_learning(&__ac_req, __ac_validators, &__AC_SHAPE, async move {
///                                 HttpResponse::Ok().body(format!(
///                                     "{} {id} at {}",
///                                     __ac_self.prefix,
///                                     req.path()
///                                 ))
///                             })
///                             .await
///                     }
///                 }
///             )
///             .await
///     }
/// }
/// # actix_web::rt::System::new().block_on(async {
/// #     use actix_web::{App, web, test::{self, TestRequest}};
/// #     let app = test::init_service(App::new().route("/titles/{id}", web::get().to(
/// #         |req: HttpRequest, id: web::Path<u32>| async move {
/// #             Titles { prefix: "title" }.show(req, id.into_inner()).await
/// #         },
/// #     ))).await;
/// #     let res = test::call_service(&app, TestRequest::get().uri("/titles/3").to_request()).await;
/// #     assert_eq!(actix_conditional::response_cache::CacheStatus::of(res.response()).unwrap().label(), "miss");
/// #     assert_eq!(res.headers().get("cache-control").unwrap(), "max-age=60, must-revalidate");
/// #     assert_eq!(test::read_body(res).await, "title 3 at /titles/3");
/// #     let res = test::call_service(&app, TestRequest::get().uri("/titles/3").to_request()).await;
/// #     assert_eq!(actix_conditional::response_cache::CacheStatus::of(res.response()).unwrap().label(), "hit");
/// # });
/// ```
///
/// A missing `max_age` is reported on the attribute:
///
/// ```compile_fail
/// #[actix_conditional_macros::etag_cached(public)]
/// async fn index() -> &'static str {
///     "hi"
/// }
/// # fn main() {}
/// ```
///
/// ```text
/// error: missing `max_age`
///  --> src/main.rs:1:1
///   |
/// 1 | #[actix_conditional_macros::etag_cached(public)]
///   | ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
/// ```
#[proc_macro_attribute]
pub fn etag_cached(args: TokenStream, item: TokenStream) -> TokenStream {
    etag_cached::expand(args.into(), &item.into()).into()
}

/// Patches the handler's `Cache-Control` header (Django's `cache_control` decorator).
///
/// After the handler runs, the given directives are merged into its response's `Cache-Control`
/// (`patch_cache_control`): directives already present are replaced, `public` removes `private`
/// and the other way round. Unlike [`macro@etag_cached`], this applies to every method and
/// status. The expanded function takes an extra `HttpRequest` and returns `HttpResponse`.
///
/// actix's `#[get]` does **not** route `HEAD`: use `#[route("/", method = "GET",
/// method = "HEAD")]` or register `HEAD` explicitly.
///
/// # Syntax
///
/// ```text
/// #[cache_control(directive[, directive]*)]
/// async fn handler(<extractors>) -> impl Responder { … }
/// ```
///
/// # Attributes
///
/// At least one is required; each defaults to not sent.
///
/// - `max_age = u32`: `max-age`.
/// - `s_maxage = u32`: `s-maxage`.
/// - `public`: `public` (cannot be combined with a bare `private`).
/// - `private`: `private` (cannot be combined with `public`). `private = "X-Token"` or
///   `private = ["X-Token", "Set-Cookie"]`: the field-qualified form, `private="X-Token"`
///   (RFC 9111 §5.2.2.7): shared caches may store the answer without those fields.
/// - `no_cache`: `no-cache`. `no_cache = "Set-Cookie"` or a list: `no-cache="Set-Cookie"`
///   (RFC 9111 §5.2.2.4), accumulating with the ones the handler set, as Django's do.
/// - `extensions = ["custom=456", "x-flag"]`: extension directives (RFC 9111 §5.2.3), Django's
///   `@cache_control(custom=456)`; each `name` or `name=token`/`name="quoted"`, checked at
///   compile time, replacing one the handler set in its place.
/// - `no_store`: `no-store`.
/// - `must_revalidate`: `must-revalidate`.
/// - `proxy_revalidate`: `proxy-revalidate`.
/// - `immutable`: `immutable` (RFC 8246).
/// - `stale_while_revalidate = u32`: `stale-while-revalidate` (RFC 5861).
/// - `stale_if_error = u32`: `stale-if-error` (RFC 5861).
/// - `cdn_max_age = u32`: `CDN-Cache-Control: max-age=N` (RFC 9213), the lifetime CDNs obey
///   instead of `Cache-Control`; `private` too when the answer's `Cache-Control` is. Cannot be
///   combined with `private`.
/// - `surrogate_max_age = u32`: `Surrogate-Control: max-age=N` (Fastly and other surrogates),
///   likewise.
///
/// # Examples
///
/// ```
/// use actix_conditional::cache_control;
/// use actix_web::{App, http::header, test, web};
///
/// // Browsers keep it a minute; Fastly a day.
/// #[cache_control(public, max_age = 60, surrogate_max_age = 86400)]
/// async fn schedule() -> &'static str {
///     "schedule"
/// }
///
/// # actix_web::rt::System::new().block_on(async {
/// let app = test::init_service(App::new().route("/", web::get().to(schedule))).await;
/// let res = test::call_service(&app, test::TestRequest::get().to_request()).await;
/// assert_eq!(res.headers().get(header::CACHE_CONTROL).unwrap(), "public, max-age=60");
/// assert_eq!(res.headers().get("surrogate-control").unwrap(), "max-age=86400");
/// # });
/// ```
///
/// ```
/// use actix_conditional::cache_control;
/// use actix_web::get;
///
/// #[get("/logo.svg")]
/// #[cache_control(max_age = 31536000, public, immutable)]
/// async fn logo() -> &'static str {
///     "<svg/>"
/// }
/// ```
#[proc_macro_attribute]
pub fn cache_control(args: TokenStream, item: TokenStream) -> TokenStream {
    cache_control::expand_cache_control(args.into(), &item.into()).into()
}

/// Marks the handler's responses as never cacheable (Django's `never_cache` decorator).
///
/// After the handler runs, `add_never_cache_headers` sets `Cache-Control: max-age=0, no-cache,
/// no-store, must-revalidate, private` and `Expires` to now. The expanded function takes an extra
/// `HttpRequest` and returns `HttpResponse`.
///
/// # Syntax
///
/// ```text
/// #[never_cache]
/// async fn handler(<extractors>) -> impl Responder { … }
/// ```
///
/// # Attributes
///
/// None; any argument is an error.
///
/// # Examples
///
/// ```
/// use actix_conditional::never_cache;
/// use actix_web::post;
///
/// #[post("/login")]
/// #[never_cache]
/// async fn login() -> &'static str {
///     "welcome"
/// }
/// ```
#[proc_macro_attribute]
pub fn never_cache(args: TokenStream, item: TokenStream) -> TokenStream {
    cache_control::expand_never_cache(args.into(), &item.into()).into()
}
