//! [`ResponseCache::serve_handler`]: answer an actix handler (its extractors already run)
//! from a cache. What `#[etag_cached(cache = "…")]` expands to, on free handlers and on
//! methods of `#[etag_cached]` impl blocks.

use std::cell::Cell;
use std::future::Future;

use actix_web::{FromRequest, Handler, HttpRequest, HttpResponse, Responder};

use super::ResponseCache;

impl ResponseCache {
    /// Answers `req` from the cache, running `handler` on `args` (the extractors actix already
    /// ran for this request) on a miss or to refresh a stale entry: [`serve`](Self::serve)
    /// for an ordinary actix handler.
    ///
    /// `handler` is anything actix routes to (`web::get().to(handler)`): an `async fn` or a
    /// closure returning a future, taking the extractors of the tuple `Args` (`()`,
    /// `(web::Path<u32>,)`, `(HttpRequest, web::Query<Q>)`, …) and returning any
    /// [`Responder`]. Its response is built in full and stored; conditional requests are
    /// answered from the stored `ETag` (see [`serve`](Self::serve)).
    ///
    /// # Builds after the first
    ///
    /// `serve` may call its build more than once and after this request ended (a refresh in
    /// the background outlives the request), so `handler` must be `'static`: move clones of
    /// what it needs (a `self` that is `Clone`, an `Arc`) into it rather than borrowing. The
    /// first build runs on `args`. Any later one re-extracts `Args` with
    /// [`FromRequest::extract`] from the request that build is given (a clone of `req`),
    /// **with an empty body**: `web::Path`, `web::Query`, `web::Data`, headers and
    /// `HttpRequest` come out the same, while `web::Bytes` is empty and `web::Json` fails. A
    /// failed extraction is that build's answer (its error response, not stored), as it would
    /// be in a route. Cache reads (GET and HEAD) carry no body, so this matters only for
    /// extractors that read one.
    ///
    /// `#[etag_cached(cache = "…")]` expands to one call of this function: on a free handler
    /// the tuple is `(HttpRequest, extractors…)` and the handler applies the attribute's
    /// `Cache-Control` policy to the original function's answer; on a method of an
    /// `#[etag_cached]` impl block it is `(HttpRequest,)`, and `self` and the other
    /// parameters are cloned into each build. The macro docs show the full expansion.
    ///
    /// # Examples
    ///
    /// A free handler, and the same cache used from a method:
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::time::Duration;
    /// use actix_conditional::response_cache::{CacheStatus, ManualClock, ResponseCache};
    /// use actix_web::{App, HttpRequest, HttpResponse, test, web};
    ///
    /// static BUILDS: AtomicUsize = AtomicUsize::new(0);
    ///
    /// // An ordinary actix handler: actix runs its extractors, the cache decides whether it runs.
    /// async fn season(n: web::Path<u32>, query: web::Query<Vec<(String, String)>>) -> String {
    ///     let build = BUILDS.fetch_add(1, Ordering::SeqCst) + 1;
    ///     format!("season {n} ({} params), build {build}", query.len())
    /// }
    ///
    /// // A method: `self` is cloned into the handler, which must be `'static`.
    /// #[derive(Clone)]
    /// struct Seasons {
    ///     cache: ResponseCache,
    ///     title: &'static str,
    /// }
    ///
    /// impl Seasons {
    ///     async fn show(&self, req: HttpRequest, n: web::Path<u32>) -> HttpResponse {
    ///         let this = self.clone();
    ///         self.cache
    ///             .serve_handler(&req, (n,), move |n: web::Path<u32>| {
    ///                 let this = this.clone();
    ///                 async move { HttpResponse::Ok().body(format!("{} {n}", this.title)) }
    ///             })
    ///             .await
    ///     }
    /// }
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let clock = ManualClock::new();
    /// let cache = ResponseCache::ttl("seasons", Duration::from_secs(30))
    ///     .clock(clock.clone())
    ///     .build();
    /// let seasons = Seasons { cache: cache.clone(), title: "Season" };
    /// let app = test::init_service(
    ///     App::new()
    ///         .route(
    ///             "/seasons/{n}",
    ///             web::get().to(move |req: HttpRequest, n: web::Path<u32>, query| {
    ///                 let cache = cache.clone();
    ///                 async move { cache.serve_handler(&req, (n, query), season).await }
    ///             }),
    ///         )
    ///         .route(
    ///             "/titles/{n}",
    ///             web::get().to(move |req: HttpRequest, n: web::Path<u32>| {
    ///                 let seasons = seasons.clone();
    ///                 async move { seasons.show(req, n).await }
    ///             }),
    ///         ),
    /// )
    /// .await;
    ///
    /// let get = |uri| test::TestRequest::get().uri(uri).to_request();
    /// let res = test::call_service(&app, get("/seasons/7?a=1")).await;
    /// assert_eq!(CacheStatus::of(res.response()).unwrap().label(), "miss");
    /// assert_eq!(test::read_body(res).await, "season 7 (1 params), build 1");
    /// let res = test::call_service(&app, get("/seasons/7?a=1")).await;
    /// assert_eq!(CacheStatus::of(res.response()).unwrap().label(), "hit");
    /// assert_eq!(test::read_body(res).await, "season 7 (1 params), build 1");
    ///
    /// // Past the TTL: the stale bytes at once, and one refresh in the background.
    /// clock.advance(Duration::from_secs(31));
    /// let res = test::call_service(&app, get("/seasons/7?a=1")).await;
    /// assert_eq!(CacheStatus::of(res.response()).unwrap().label(), "stale");
    /// for _ in 0..10 {
    ///     actix_web::rt::task::yield_now().await;
    /// }
    /// let res = test::call_service(&app, get("/seasons/7?a=1")).await;
    /// assert_eq!(CacheStatus::of(res.response()).unwrap().label(), "hit");
    /// assert_eq!(test::read_body(res).await, "season 7 (1 params), build 2");
    ///
    /// let res = test::call_service(&app, get("/titles/3")).await;
    /// assert_eq!(CacheStatus::of(res.response()).unwrap().label(), "miss");
    /// assert_eq!(test::read_body(res).await, "Season 3");
    /// let res = test::call_service(&app, get("/titles/3")).await;
    /// assert_eq!(CacheStatus::of(res.response()).unwrap().label(), "hit");
    /// # });
    /// ```
    pub async fn serve_handler<F, Args>(
        &self,
        req: &HttpRequest,
        args: Args,
        handler: F,
    ) -> HttpResponse
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        let build = HandlerBuild::new(args, handler);
        self.serve(req, move |req| build.call(req)).await
    }
}

/// The build [`ResponseCache::serve_handler`] hands to `serve`: the handler on the given
/// arguments the first time, on arguments extracted from the build's request afterwards.
struct HandlerBuild<F, Args> {
    first: Cell<Option<Args>>,
    handler: F,
}

impl<F, Args> HandlerBuild<F, Args>
where
    F: Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    fn new(args: Args, handler: F) -> Self {
        Self {
            first: Cell::new(Some(args)),
            handler,
        }
    }

    fn call(
        &self,
        req: HttpRequest,
    ) -> impl Future<Output = HttpResponse> + 'static + use<F, Args> {
        let first = self.first.take();
        let handler = self.handler.clone();
        async move {
            let args = match first {
                Some(args) => args,
                None => match Args::extract(&req).await {
                    Ok(args) => args,
                    Err(err) => {
                        let err: actix_web::Error = err.into();
                        tracing::debug!(path = req.path(), error = %err,
                            "response cache: re-extracting the handler's arguments failed");
                        return err.error_response();
                    }
                },
            };
            handler
                .call(args)
                .await
                .respond_to(&req)
                .map_into_boxed_body()
        }
    }
}

#[cfg(test)]
mod tests {
    use actix_web::http::StatusCode;
    use actix_web::test::TestRequest;
    use actix_web::{HttpRequest, web};

    use super::HandlerBuild;

    async fn echo(req: HttpRequest, name: web::Path<String>, body: web::Bytes) -> String {
        format!("{} {name} {body:?}", req.method())
    }

    #[actix_rt::test]
    async fn first_build_uses_the_arguments_later_ones_re_extract() {
        let req = TestRequest::get().param("name", "first").to_http_request();
        let args = (
            req.clone(),
            web::Path::from("given".to_owned()),
            web::Bytes::from_static(b"body"),
        );
        let build = HandlerBuild::new(args, echo);

        let res = build.call(req.clone()).await;
        let body = actix_web::body::to_bytes(res.into_body()).await.unwrap();
        assert_eq!(body, r#"GET given b"body""#);

        // Later builds extract from their own request, with an empty body.
        let later = TestRequest::get().param("name", "later").to_http_request();
        let res = build.call(later).await;
        let body = actix_web::body::to_bytes(res.into_body()).await.unwrap();
        assert_eq!(body, r#"GET later b"""#);
    }

    #[actix_rt::test]
    async fn a_failed_re_extraction_is_the_build_s_error_response() {
        async fn sum(n: web::Path<u32>) -> String {
            n.to_string()
        }
        let req = TestRequest::get().param("n", "1").to_http_request();
        let build = HandlerBuild::new((web::Path::from(1_u32),), sum);
        assert_eq!(build.call(req).await.status(), StatusCode::OK);
        let bad = TestRequest::get().param("n", "x").to_http_request();
        assert_eq!(build.call(bad).await.status(), StatusCode::NOT_FOUND);
    }
}
