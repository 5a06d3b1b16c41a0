//! Helpers of the `response_cache*` test files: a gate for slow builders, whole responses,
//! spawned requests, bounded waits, counters and a gated `serve()` route.
//!
//! Include it with `#[path = "common/response_cache.rs"] #[macro_use] mod support;`.
#![allow(dead_code, unused_macros)] // Each test binary uses a different part of this module.

use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use actix_conditional::response_cache::{CacheStatus, ResponseCache};
use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::HeaderMap;
use actix_web::{App, HttpRequest, HttpResponse, test, web};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

// Some test binaries include both this file and its sibling that loads it too.
#[allow(clippy::duplicate_mod)]
#[path = "cache_status.rs"]
pub(crate) mod cache_status;

/// The `X-Cache` label of this library's `Cache-Status` member in `headers`.
pub(crate) fn cache_label(headers: &HeaderMap) -> &'static str {
    cache_status::label(
        headers
            .get_all("cache-status")
            .map(|value| value.to_str().expect("Cache-Status is ASCII")),
    )
}

/// Upper bound of every wait for a background task, a gate or a condition.
pub(crate) const WAIT: Duration = Duration::from_secs(5);
pub(crate) const TTL: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A gate slow builders wait on until the test opens it (bounded by [`WAIT`]).
#[derive(Debug, Clone)]
pub(crate) struct Gate(Arc<Semaphore>);

impl Gate {
    pub(crate) fn new() -> Self {
        Self(Arc::new(Semaphore::new(0)))
    }

    pub(crate) async fn pass(&self) {
        // A closed semaphore lets every acquire through at once: that is "open".
        let _closed = tokio::time::timeout(WAIT, self.0.acquire())
            .await
            .expect("the test never opened the gate");
    }

    pub(crate) fn open(&self) {
        self.0.close();
    }
}

/// One response, read whole.
#[derive(Debug)]
pub(crate) struct Res {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: String,
    /// The typed status the cache attached ([`CacheStatus::of`]), if one did.
    pub(crate) cache: Option<CacheStatus>,
}

impl Res {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// The `X-Cache` label of the cache's `Cache-Status` member (`<none>` without one), read
    /// with a structured-field parser.
    pub(crate) fn x_cache(&self) -> &'static str {
        cache_label(&self.headers)
    }

    pub(crate) fn age(&self) -> u64 {
        self.header("age").expect("Age").parse().unwrap()
    }
}

/// Calls the service; an `Err` (a middleware error) becomes its error response.
pub(crate) async fn call<S, R, B>(app: &S, req: R) -> Res
where
    S: Service<R, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody + 'static,
{
    match app.call(req).await {
        Ok(res) => {
            let res = res.map_into_boxed_body();
            let (status, headers) = (res.status(), res.headers().clone());
            let cache = CacheStatus::of(res.response());
            let body = test::read_body(res).await;
            Res {
                status,
                headers,
                body: String::from_utf8(body.to_vec()).unwrap(),
                cache,
            }
        }
        Err(err) => {
            let res = err.as_response_error().error_response();
            Res {
                status: res.status(),
                headers: res.headers().clone(),
                body: String::new(),
                cache: CacheStatus::of(&res),
            }
        }
    }
}

/// Reads a response (say, what `ResponseCache::serve` answered) whole; a body that fails
/// part-way (aborted) fails the test.
pub(crate) async fn read(res: HttpResponse) -> Res {
    let (status, headers) = (res.status(), res.headers().clone());
    let cache = CacheStatus::of(&res);
    let body = actix_web::body::to_bytes(res.into_body())
        .await
        .expect("the body was aborted part-way");
    Res {
        status,
        headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
        cache,
    }
}

/// The same, as a task of its own (so it can run concurrently, or be aborted).
pub(crate) fn spawn_call<S, R, B>(app: &Rc<S>, req: R) -> JoinHandle<Res>
where
    S: Service<R, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    R: 'static,
    B: MessageBody + 'static,
{
    let app = Rc::clone(app);
    actix_rt::spawn(async move { call(&*app, req).await })
}

pub(crate) async fn joined<T>(task: JoinHandle<T>) -> T {
    tokio::time::timeout(WAIT, task)
        .await
        .expect("request did not finish in time")
        .expect("request task failed")
}

/// A GET test request (a macro: its type, `actix_http::Request`, is not nameable here).
macro_rules! get {
    ($uri:expr) => {
        actix_web::test::TestRequest::get().uri($uri).to_request()
    };
}

/// A POST test request.
macro_rules! post {
    ($uri:expr) => {
        actix_web::test::TestRequest::post().uri($uri).to_request()
    };
}

/// Waits (bounded) until `cond` holds; other tasks run meanwhile.
pub(crate) async fn until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

pub(crate) fn count<'a>(labels: impl IntoIterator<Item = &'a str>, label: &str) -> usize {
    labels.into_iter().filter(|l| *l == label).count()
}

/// A counter shared by the test and the handler it builds.
#[derive(Debug, Clone, Default)]
pub(crate) struct Counter(Arc<AtomicUsize>);

impl Counter {
    /// Increments and returns the new value.
    pub(crate) fn bump(&self) -> usize {
        self.0.fetch_add(1, SeqCst) + 1
    }

    pub(crate) fn get(&self) -> usize {
        self.0.load(SeqCst)
    }
}

/// Counts each request (outside the cache middleware) before the cache sees it: the cache
/// middleware plans in the same poll, so a counted request has joined the flight.
pub(crate) fn with_arrivals<T, B>(
    app: App<T>,
    arrived: Counter,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<B>,
        Error = actix_web::Error,
        InitError = (),
    >,
>
where
    T: ServiceFactory<
            ServiceRequest,
            Config = (),
            Response = ServiceResponse<B>,
            Error = actix_web::Error,
            InitError = (),
        >,
    B: MessageBody,
{
    app.wrap_fn(move |req, srv| {
        arrived.bump();
        srv.call(req)
    })
}

/// A `serve()` route: counts requests into `arrived`, builds `"v<n>"` (after `gate` when
/// `blocks(n)`), so tests can hold a build open.
pub(crate) fn gated_route(
    cache: &ResponseCache,
    arrived: &Counter,
    builds: &Counter,
    gate: &Gate,
    blocks: fn(usize) -> bool,
) -> actix_web::Route {
    let (cache, arrived, builds, gate) =
        (cache.clone(), arrived.clone(), builds.clone(), gate.clone());
    web::get().to(move |req: HttpRequest| {
        arrived.bump();
        let (cache, builds, gate) = (cache.clone(), builds.clone(), gate.clone());
        async move {
            cache
                .serve(&req, move |_req| {
                    let n = builds.bump();
                    let gate = gate.clone();
                    async move {
                        if blocks(n) {
                            gate.pass().await;
                        }
                        format!("v{n}")
                    }
                })
                .await
        }
    })
}
