//! Revision-gated `ResponseCache`s: `hit-revision` while the fingerprint is unchanged, `stale`
//! and one background refresh when it changes, `miss` past `max_stale` since the bytes were
//! last known current, the ETag derived from the fingerprint (304 without the handler), and
//! sectioned responses whose inline sections are rebuilt in the request.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use actix_conditional::response_cache::{
    CacheScope, CacheStatus, InProcessTier, ManualClock, PassReason, ResponseCache,
    RevisionCacheBuilder, Section, SectionedCache,
};
use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::test::{self, TestRequest};
use actix_web::{App, HttpRequest, HttpResponse, web};
use futures_util::future::join_all;
use serde_json::{Value, json};

#[path = "common/response_cache.rs"]
#[macro_use]
mod support;

use support::{Counter, Gate, Res, call, until};

const SECOND: Duration = Duration::from_secs(1);

/// The data behind the responses: a revision number, bumped by writes.
#[derive(Debug, Clone)]
struct Revision(Arc<AtomicU64>);

impl Revision {
    fn new() -> Self {
        Self(Arc::new(AtomicU64::new(1)))
    }

    fn get(&self) -> u64 {
        self.0.load(SeqCst)
    }

    fn bump(&self) {
        self.0.fetch_add(1, SeqCst);
    }
}

fn is_revision_etag(etag: &str) -> bool {
    etag.len() == 2 + 3 + 32
        && etag.starts_with("\"rv-")
        && etag.ends_with('"')
        && etag[4..36].bytes().all(|b| b.is_ascii_hexdigit())
}

/// A GET with `If-None-Match`.
macro_rules! inm {
    ($uri:expr, $etag:expr) => {
        TestRequest::get()
            .uri($uri)
            .insert_header((header::IF_NONE_MATCH, $etag.to_owned()))
            .to_request()
    };
}

// ---------------------------------------------------------------------------------------------
// Revision mode
// ---------------------------------------------------------------------------------------------

/// The backend of a revision-mode route: the data's revision, a build counter, a gate for
/// the builds `blocks(n)` picks, and switches that make builds or the revision query fail.
#[derive(Debug, Clone)]
struct Backend {
    rev: Revision,
    builds: Counter,
    gate: Gate,
    blocks: fn(usize) -> bool,
    failing: Arc<AtomicBool>,
    revision_fails: Arc<AtomicBool>,
}

impl Backend {
    fn new(blocks: fn(usize) -> bool) -> Self {
        Self {
            rev: Revision::new(),
            builds: Counter::default(),
            gate: Gate::new(),
            blocks,
            failing: Arc::default(),
            revision_fails: Arc::default(),
        }
    }

    /// A revision cache whose fingerprint is `r<revision>`.
    fn cache(&self, name: &str, clock: &ManualClock) -> ResponseCache {
        self.cache_with(name, clock, |builder| builder)
    }

    /// [`cache`](Self::cache), its builder first given to `tweak`.
    fn cache_with(
        &self,
        name: &str,
        clock: &ManualClock,
        tweak: impl FnOnce(RevisionCacheBuilder) -> RevisionCacheBuilder,
    ) -> ResponseCache {
        let (rev, fails) = (self.rev.clone(), Arc::clone(&self.revision_fails));
        let builder = ResponseCache::revision(name, move |_req: HttpRequest| {
            let result = if fails.load(SeqCst) {
                Err(actix_web::error::ErrorServiceUnavailable(
                    "revision store down",
                ))
            } else {
                Ok(format!("r{}", rev.get()))
            };
            async move { result }
        })
        .clock(clock.clone());
        tweak(builder).build()
    }

    /// `GET /data/{name}` through `serve()`: `"<name> r<revision> build <n>"`.
    fn route(&self, cache: &ResponseCache) -> actix_web::Route {
        let (cache, backend) = (cache.clone(), self.clone());
        web::get().to(move |req: HttpRequest| {
            let (cache, backend) = (cache.clone(), backend.clone());
            async move {
                cache
                    .serve(&req, move |req: HttpRequest| {
                        let n = backend.builds.bump();
                        let (rev, fail) = (backend.rev.get(), backend.failing.load(SeqCst));
                        let (gate, blocks) = (backend.gate.clone(), backend.blocks);
                        async move {
                            if blocks(n) {
                                gate.pass().await;
                            }
                            let name = req.match_info().get("name").unwrap_or("?").to_owned();
                            if fail {
                                HttpResponse::ServiceUnavailable().body(format!("down {n}"))
                            } else {
                                HttpResponse::Ok()
                                    .insert_header((header::ETAG, "\"handler-tag\""))
                                    .body(format!("{name} r{rev} build {n}"))
                            }
                        }
                    })
                    .await
            }
        })
    }
}

#[actix_rt::test]
async fn an_unchanged_fingerprint_is_a_hit_revision_and_its_etag_a_304_without_the_handler() {
    let backend = Backend::new(|_| false);
    let cache = backend.cache("rev-hit", &ManualClock::new());
    let app = test::init_service(App::new().route("/data/{name}", backend.route(&cache))).await;

    let res = call(&app, get!("/data/a")).await;
    assert_eq!((res.x_cache(), res.body.as_str()), ("miss", "a r1 build 1"));
    assert_eq!(res.header("x-revision"), Some("r1"));
    let etag = res.header("etag").unwrap().to_owned();
    assert!(
        is_revision_etag(&etag),
        "derived from the fingerprint, not the handler's: {etag}"
    );

    let res = call(&app, get!("/data/a")).await;
    assert_eq!(
        (res.x_cache(), res.body.as_str()),
        ("hit-revision", "a r1 build 1")
    );
    assert_eq!(
        (res.header("x-revision"), res.header("etag")),
        (Some("r1"), Some(etag.as_str()))
    );

    let res = call(&app, inm!("/data/a", etag)).await;
    assert_eq!(
        (res.status, res.x_cache(), res.body.as_str()),
        (StatusCode::NOT_MODIFIED, "hit-revision", "")
    );
    assert_eq!(res.header("etag"), Some(etag.as_str()));
    assert_eq!(backend.builds.get(), 1, "no handler run for hits and 304s");
    assert_eq!(cache.stats().hits, 2);

    // Another URL with the same fingerprint has its own tag.
    let res = call(&app, get!("/data/b")).await;
    assert_eq!(res.x_cache(), "miss");
    assert_ne!(res.header("etag"), Some(etag.as_str()));
}

#[actix_rt::test]
async fn a_changed_fingerprint_serves_stale_while_exactly_one_refresh_runs() {
    let backend = Backend::new(|n| n == 2);
    let clock = ManualClock::new();
    let cache = backend.cache("rev-stale", &clock);
    let app = test::init_service(App::new().route("/data/{name}", backend.route(&cache))).await;

    let res = call(&app, get!("/data/a")).await;
    let etag_r1 = res.header("etag").unwrap().to_owned();
    clock.advance(7 * SECOND);

    backend.rev.bump();
    let res = call(&app, get!("/data/a")).await;
    assert_eq!(
        (res.x_cache(), res.body.as_str(), res.age()),
        ("stale", "a r1 build 1", 7)
    );
    // What is served is described: the old fingerprint and its tag.
    assert_eq!(
        (res.header("x-revision"), res.header("etag")),
        (Some("r1"), Some(etag_r1.as_str()))
    );
    until("the refresh", || backend.builds.get() == 2).await;
    let readers = join_all((0..10).map(|_| call(&app, get!("/data/a")))).await;
    assert!(
        readers
            .iter()
            .all(|r| r.x_cache() == "stale" && r.body == "a r1 build 1")
    );
    assert_eq!(backend.builds.get(), 2, "one refresh");

    backend.gate.open();
    until("the refresh to be stored", || cache.stats().builds == 2).await;
    let res = call(&app, get!("/data/a")).await;
    assert_eq!(
        (res.x_cache(), res.body.as_str(), res.age()),
        ("hit-revision", "a r2 build 2", 0)
    );
    assert_eq!(res.header("x-revision"), Some("r2"));
    let etag_r2 = res.header("etag").unwrap().to_owned();
    assert_ne!(etag_r2, etag_r1);
    // The old tag no longer matches; the new one does.
    assert_eq!(
        call(&app, inm!("/data/a", etag_r1)).await.status,
        StatusCode::OK
    );
    assert_eq!(
        call(&app, inm!("/data/a", etag_r2)).await.status,
        StatusCode::NOT_MODIFIED
    );
    assert_eq!(backend.builds.get(), 2);
}

#[actix_rt::test]
async fn past_max_stale_since_the_last_verification_is_a_miss() {
    let backend = Backend::new(|_| false);
    let clock = ManualClock::new();
    let rev = backend.rev.clone();
    let cache = ResponseCache::revision("rev-max-stale", move |_req: HttpRequest| {
        let rev = format!("r{}", rev.get());
        async move { Ok::<_, Infallible>(rev) }
    })
    .clock(clock.clone())
    .max_stale(60 * SECOND)
    .build();
    let app = test::init_service(App::new().route("/data/{name}", backend.route(&cache))).await;

    assert_eq!(call(&app, get!("/data/a")).await.x_cache(), "miss");
    // Verified current at t = 30 s.
    clock.advance(30 * SECOND);
    assert_eq!(call(&app, get!("/data/a")).await.x_cache(), "hit-revision");
    // The data changes; refreshes fail for now, so the entry stays the t = 0 bytes.
    backend.rev.bump();
    backend.failing.store(true, SeqCst);
    // t = 90 s: 90 s after the build but 60 s after the last verification: still stale.
    clock.advance(60 * SECOND);
    let res = call(&app, get!("/data/a")).await;
    // `Age` counts from the last validation (RFC 9111 §5.1), not from the build.
    assert_eq!(
        (res.x_cache(), res.body.as_str(), res.age()),
        ("stale", "a r1 build 1", 60)
    );
    until("the failed refresh", || cache.stats().refresh_failures == 1).await;
    // t = 91 s: too stale, a blocking miss; its error propagates …
    clock.advance(SECOND);
    let res = call(&app, get!("/data/a")).await;
    assert_eq!(
        (res.status, res.x_cache(), res.body.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "miss", "down 3")
    );
    // … and once the backend is back, the miss gets (and stores) the current data.
    backend.failing.store(false, SeqCst);
    let res = call(&app, get!("/data/a")).await;
    assert_eq!(
        (res.status, res.x_cache(), res.body.as_str()),
        (StatusCode::OK, "miss", "a r2 build 4")
    );
    assert_eq!(call(&app, get!("/data/a")).await.x_cache(), "hit-revision");
}

#[actix_rt::test]
async fn the_etag_follows_the_fingerprint_not_the_bytes() {
    let backend = Backend::new(|_| false);
    let cache = backend.cache("rev-etag", &ManualClock::new());
    let app = test::init_service(App::new().route("/data/{name}", backend.route(&cache))).await;

    let first = call(&app, get!("/data/a")).await;
    // A forced rebuild under the same fingerprint: other bytes, the same tag.
    let rebuilt = call(&app, get!("/data/a?refresh=true")).await;
    assert_eq!(
        (rebuilt.x_cache(), rebuilt.body.as_str()),
        ("miss", "a r1 build 2")
    );
    assert_eq!(rebuilt.header("etag"), first.header("etag"));
    let res = call(&app, inm!("/data/a", first.header("etag").unwrap())).await;
    assert_eq!(res.status, StatusCode::NOT_MODIFIED);
}

/// This library's `Cache-Status` member of `res`, parsed (RFC 8941).
fn member(res: &Res) -> support::cache_status::Member {
    support::cache_status::ours(
        res.headers
            .get_all("cache-status")
            .map(|value| value.to_str().unwrap()),
    )
    .unwrap_or_else(|| panic!("no Cache-Status member of ours: {res:?}"))
}

/// Read-your-writes: an explicit invalidation (a write this app made) is never answered with
/// the bytes it made out of date; the next read rebuilds them first.
#[actix_rt::test]
async fn after_an_invalidation_the_next_read_is_rebuilt_not_stale() {
    let backend = Backend::new(|_| false);
    let cache = backend.cache("rev-invalidate", &ManualClock::new());
    let app = test::init_service(App::new().route("/data/{name}", backend.route(&cache))).await;

    let etag = call(&app, get!("/data/a"))
        .await
        .header("etag")
        .unwrap()
        .to_owned();
    // The write: the data changes and the cache is told.
    backend.rev.bump();
    cache.invalidate(&CacheScope::All);
    let res = call(&app, get!("/data/a")).await;
    assert_eq!(
        (res.status, res.x_cache(), res.body.as_str()),
        (StatusCode::OK, "miss", "a r2 build 2")
    );
    assert_eq!(member(&res).param("fwd"), Some("miss"));
    assert!(member(&res).has("stored"));
    assert_ne!(
        res.header("etag"),
        Some(etag.as_str()),
        "an invalidation changes the tag"
    );
    let res = call(&app, get!("/data/a")).await;
    assert_eq!(
        (res.x_cache(), res.body.as_str()),
        ("hit-revision", "a r2 build 2")
    );
    assert_eq!(backend.builds.get(), 2);
    assert_eq!(cache.stats().stale_served, 0);

    // Through `invalidates` (the write's own middleware), as a handler's write does.
    let write = cache.invalidates(CacheScope::All);
    let (b, c) = (backend.clone(), cache.clone());
    let app = test::init_service(
        App::new().route("/data/{name}", backend.route(&c)).service(
            web::resource("/write")
                .wrap(write)
                .route(web::post().to(move || {
                    b.rev.bump();
                    async { HttpResponse::NoContent().finish() }
                })),
        ),
    )
    .await;
    assert_eq!(
        call(&app, post!("/write")).await.status,
        StatusCode::NO_CONTENT
    );
    let res = call(&app, get!("/data/a")).await;
    assert_eq!((res.x_cache(), res.body.as_str()), ("miss", "a r3 build 3"));
}

/// Readers arriving after an invalidation share one rebuild (single-flight) and all get its
/// bytes, none the invalidated ones.
#[actix_rt::test]
async fn readers_after_an_invalidation_coalesce_onto_one_rebuild() {
    // The rebuild (build 2) waits at the gate until every reader has arrived.
    let backend = Backend::new(|n| n == 2);
    let cache = backend.cache("rev-invalidate-coalesce", &ManualClock::new());
    let app = std::rc::Rc::new(
        test::init_service(App::new().route("/data/{name}", backend.route(&cache))).await,
    );
    assert_eq!(call(&*app, get!("/data/a")).await.x_cache(), "miss");

    backend.rev.bump();
    cache.invalidate(&CacheScope::All);
    let readers: Vec<_> = (0..10)
        .map(|_| support::spawn_call(&app, get!("/data/a")))
        .collect();
    until("the rebuild", || backend.builds.get() == 2).await;
    for _ in 0..20 {
        actix_rt::task::yield_now().await;
    }
    backend.gate.open();
    let mut labels = Vec::new();
    for reader in readers {
        let res = support::joined(reader).await;
        assert_eq!(
            (res.status, res.body.as_str()),
            (StatusCode::OK, "a r2 build 2")
        );
        labels.push(res.x_cache());
    }
    assert_eq!(backend.builds.get(), 2, "one rebuild for all: {labels:?}");
    assert_eq!(
        support::count(labels.iter().copied(), "miss"),
        1,
        "{labels:?}"
    );
    assert_eq!(
        support::count(labels.iter().copied(), "coalesced"),
        9,
        "{labels:?}"
    );
    assert_eq!(cache.stats().stale_served, 0);
}

/// The rebuild after an invalidation fails: the invalidated bytes stand in for it while they
/// are within the stale window (stale-on-error, RFC 5861 §4), rather than the error.
#[actix_rt::test]
async fn a_failed_rebuild_after_an_invalidation_serves_the_old_bytes_stale() {
    let backend = Backend::new(|_| false);
    let clock = ManualClock::new();
    let cache = backend.cache_with("rev-invalidate-fails", &clock, |b| b.max_stale(60 * SECOND));
    let app = test::init_service(App::new().route("/data/{name}", backend.route(&cache))).await;
    call(&app, get!("/data/a")).await;

    backend.failing.store(true, SeqCst);
    cache.invalidate(&CacheScope::All);
    clock.advance(10 * SECOND);
    let res = call(&app, get!("/data/a")).await;
    assert_eq!(
        (res.status, res.x_cache(), res.body.as_str()),
        (StatusCode::OK, "stale", "a r1 build 1")
    );
    let served = member(&res);
    assert_eq!(
        (served.param("fwd"), served.param("fwd-status")),
        (Some("stale"), Some("503")),
        "{served:?}"
    );
    assert_eq!(
        res.cache,
        Some(CacheStatus::Stale {
            collapsed: false,
            failed: Some(StatusCode::SERVICE_UNAVAILABLE)
        })
    );
    assert_eq!(
        (cache.stats().refresh_failures, backend.builds.get()),
        (1, 2)
    );
    // Past the stale window: the error is the answer.
    clock.advance(60 * SECOND);
    let res = call(&app, get!("/data/a")).await;
    assert_eq!(
        (res.status, res.x_cache(), res.body.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "miss", "down 3")
    );
    backend.failing.store(false, SeqCst);
    let res = call(&app, get!("/data/a")).await;
    assert_eq!((res.x_cache(), res.body.as_str()), ("miss", "a r1 build 4"));
}

/// The library's WARN events about the cache `rev-warnings`, counted by a global subscriber.
///
/// Global, not `set_default` on the test's thread: tracing caches each callsite's interest
/// process-wide, and another test hitting the same `warn!` on another thread while this one's
/// thread-local subscriber registers can leave that callsite disabled for it (the test then
/// saw 0 warnings in some runs). Only events naming this test's cache are counted, so the
/// other tests of the binary, which log through the same subscriber, cannot move the count.
static WARNINGS: AtomicU64 = AtomicU64::new(0);
const WARNED_CACHE: &str = "rev-warnings";

struct CountWarnings;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CountWarnings {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() != tracing::Level::WARN || !meta.target().starts_with("actix_conditional")
        {
            return;
        }
        let mut cache = CacheField(false);
        event.record(&mut cache);
        if cache.0 {
            WARNINGS.fetch_add(1, SeqCst);
        }
    }
}

/// Whether an event's `cache` field is [`WARNED_CACHE`].
struct CacheField(bool);

impl tracing::field::Visit for CacheField {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "cache" && format!("{value:?}") == WARNED_CACHE {
            self.0 = true;
        }
    }
}

/// A revision store that is down fails every request: that is warned about once, then once
/// per 10 s of the cache's clock, not once per request (the rest go to `debug`).
#[actix_rt::test]
async fn a_revision_store_that_is_down_is_warned_about_once_per_interval() {
    use tracing_subscriber::layer::SubscriberExt as _;
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(CountWarnings))
        .expect("no other test of this binary sets the global subscriber");
    let warnings = &WARNINGS;

    let backend = Backend::new(|_| false);
    let clock = ManualClock::new();
    let cache = backend.cache_with(WARNED_CACHE, &clock, |b| b);
    let app = test::init_service(App::new().route("/data/{name}", backend.route(&cache))).await;
    assert_eq!(call(&app, get!("/data/a")).await.x_cache(), "miss");
    backend.revision_fails.store(true, SeqCst);
    for _ in 0..100 {
        assert_eq!(call(&app, get!("/data/a")).await.x_cache(), "stale");
        clock.advance(Duration::from_millis(50));
    }
    assert_eq!(cache.stats().revision_failures, 100);
    assert_eq!(
        warnings.load(SeqCst),
        1,
        "one warning for 100 failures within 5 s"
    );
    clock.advance(6 * SECOND);
    assert_eq!(call(&app, get!("/data/a")).await.x_cache(), "stale");
    assert_eq!(
        warnings.load(SeqCst),
        2,
        "and one more once the interval is over"
    );
}

/// A failing revision query is stale-on-error too: the stored entry, within its stale window
/// since it was last verified, is served `stale` with the failure's status, and the failure
/// is counted; past the window the handler answers without storing, as before.
#[actix_rt::test]
async fn a_failing_revision_query_serves_the_stored_entry_stale() {
    let backend = Backend::new(|_| false);
    let clock = ManualClock::new();
    let cache = backend.cache_with("rev-query-fails", &clock, |b| b.max_stale(60 * SECOND));
    let app = test::init_service(App::new().route("/data/{name}", backend.route(&cache))).await;

    assert_eq!(call(&app, get!("/data/a")).await.x_cache(), "miss");
    clock.advance(30 * SECOND);
    assert_eq!(call(&app, get!("/data/a")).await.x_cache(), "hit-revision");
    backend.revision_fails.store(true, SeqCst);
    // 50 s after the build, 20 s after the last verification.
    clock.advance(20 * SECOND);
    let res = call(&app, get!("/data/a")).await;
    assert_eq!(
        (res.status, res.x_cache(), res.body.as_str(), res.age()),
        (StatusCode::OK, "stale", "a r1 build 1", 20)
    );
    let served = member(&res);
    assert_eq!(
        (
            served.param("fwd"),
            served.param("fwd-status"),
            served.param("detail")
        ),
        (Some("stale"), Some("503"), Some("stale")),
        "{served:?}"
    );
    assert_eq!(res.header("x-revision"), Some("r1"));
    let stats = cache.stats();
    assert_eq!(
        (
            stats.revision_failures,
            stats.stale_served,
            backend.builds.get()
        ),
        (1, 1, 1)
    );
    // Past the stale window since the last verification: the handler answers, unstored.
    clock.advance(41 * SECOND);
    let res = call(&app, get!("/data/a")).await;
    assert_eq!(
        (res.status, res.x_cache(), res.body.as_str()),
        (StatusCode::OK, "miss", "a r1 build 2")
    );
    assert_eq!(
        res.cache,
        Some(CacheStatus::Pass {
            reason: PassReason::RevisionFailed
        })
    );
    assert_eq!(cache.stats().revision_failures, 2);
    backend.revision_fails.store(false, SeqCst);
    let res = call(&app, get!("/data/a")).await;
    assert_eq!(
        (res.x_cache(), res.body.as_str()),
        ("hit-revision", "a r1 build 1")
    );
}

/// With a shared tier, an instance that never built the key finds the entry there when its
/// revision query fails.
#[actix_rt::test]
async fn a_failing_revision_query_serves_stale_from_the_shared_tier() {
    let tier = InProcessTier::new();
    let backend = Backend::new(|_| false);
    let clock = ManualClock::new();
    let shared = |b: RevisionCacheBuilder| b.shared_in_process(&tier);
    let cache_a = backend.cache_with("rev-query-fails-tier", &clock, shared);
    let cache_b = backend.cache_with("rev-query-fails-tier", &clock, shared);
    let a = test::init_service(App::new().route("/data/{name}", backend.route(&cache_a))).await;
    let b = test::init_service(App::new().route("/data/{name}", backend.route(&cache_b))).await;

    assert_eq!(call(&a, get!("/data/a")).await.x_cache(), "miss");
    backend.revision_fails.store(true, SeqCst);
    let res = call(&b, get!("/data/a")).await;
    assert_eq!(
        (res.status, res.x_cache(), res.body.as_str()),
        (StatusCode::OK, "stale", "a r1 build 1")
    );
    assert_eq!(member(&res).param("fwd-status"), Some("503"));
    assert_eq!(
        (cache_b.stats().revision_failures, backend.builds.get()),
        (1, 1)
    );
}

// ---------------------------------------------------------------------------------------------
// Sections
// ---------------------------------------------------------------------------------------------

/// One section's data: its revision and how many times it was built (core builds pick a
/// gate with `blocks`).
#[derive(Debug, Clone)]
struct SectionData {
    rev: Revision,
    builds: Counter,
    /// Makes the section's revision query fail (503).
    revision_fails: Arc<AtomicBool>,
    /// Makes the section's build fail (500).
    build_fails: Arc<AtomicBool>,
}

impl SectionData {
    fn new() -> Self {
        Self {
            rev: Revision::new(),
            builds: Counter::default(),
            revision_fails: Arc::default(),
            build_fails: Arc::default(),
        }
    }

    fn section(&self, name: &'static str, gate: &Gate, blocks: fn(usize) -> bool) -> Section {
        let (rev, data, gate) = (self.rev.clone(), self.clone(), gate.clone());
        let fails = Arc::clone(&self.revision_fails);
        Section::new(
            name,
            move |_req: HttpRequest| {
                let rev = if fails.load(SeqCst) {
                    Err(actix_web::error::ErrorServiceUnavailable(
                        "revision store down",
                    ))
                } else {
                    Ok(format!("{name}{}", rev.get()))
                };
                async move { rev }
            },
            move |_req: HttpRequest| {
                let (n, rev) = (data.builds.bump(), data.rev.get());
                let (gate, fails) = (gate.clone(), data.build_fails.load(SeqCst));
                async move {
                    if blocks(n) {
                        gate.pass().await;
                    }
                    if fails {
                        return Err(actix_web::error::ErrorInternalServerError("build failed"));
                    }
                    Ok(json!({ "rev": rev, "build": n }))
                }
            },
        )
    }
}

/// A sectioned cache with a background `core` and an inline `tail`, served at `/summary`.
struct Summary {
    cache: SectionedCache,
    core: SectionData,
    tail: SectionData,
    gate: Gate,
    clock: ManualClock,
}

impl Summary {
    fn new(name: &str, core_blocks: fn(usize) -> bool) -> Self {
        let (core, tail, gate) = (SectionData::new(), SectionData::new(), Gate::new());
        let clock = ManualClock::new();
        let cache = ResponseCache::sections(name)
            .clock(clock.clone())
            .max_stale(60 * SECOND)
            .section(core.section("core", &gate, core_blocks))
            .inline_section(tail.section("tail", &gate, |_| false))
            .build();
        Self {
            cache,
            core,
            tail,
            gate,
            clock,
        }
    }

    fn route(&self) -> actix_web::Route {
        let cache = self.cache.clone();
        web::get().to(move |req: HttpRequest| {
            let cache = cache.clone();
            async move { cache.respond(&req).await }
        })
    }

    fn builds(&self) -> (usize, usize) {
        (self.core.builds.get(), self.tail.builds.get())
    }
}

fn json_of(res: &Res) -> Value {
    serde_json::from_str(&res.body).unwrap_or_else(|e| panic!("not JSON ({e}): {res:?}"))
}

#[actix_rt::test]
async fn only_an_inline_section_changed_is_rebuilt_in_the_request() {
    let summary = Summary::new("sections-inline", |_| false);
    let app = test::init_service(App::new().route("/summary", summary.route())).await;

    let res = call(&app, get!("/summary")).await;
    assert_eq!((res.status, res.x_cache()), (StatusCode::OK, "miss"));
    assert_eq!(res.header("content-type"), Some("application/json"));
    assert_eq!(
        json_of(&res),
        json!({"core": {"rev": 1, "build": 1}, "tail": {"rev": 1, "build": 1}})
    );
    let etag = res.header("etag").unwrap().to_owned();
    assert!(is_revision_etag(&etag));
    let res = call(&app, get!("/summary")).await;
    assert_eq!(res.x_cache(), "hit-revision");
    assert_eq!(
        call(&app, inm!("/summary", etag)).await.status,
        StatusCode::NOT_MODIFIED
    );
    assert_eq!(summary.builds(), (1, 1));
    assert_eq!(summary.cache.stats().builds, 1, "one build, counted once");

    summary.tail.rev.bump();
    let res = call(&app, get!("/summary")).await;
    assert_eq!(res.x_cache(), "section");
    assert_eq!(
        json_of(&res),
        json!({"core": {"rev": 1, "build": 1}, "tail": {"rev": 2, "build": 2}})
    );
    assert_eq!(summary.builds(), (1, 2), "only the tail was rebuilt");
    assert_ne!(res.header("etag"), Some(etag.as_str()));
    let res = call(&app, get!("/summary")).await;
    assert_eq!(res.x_cache(), "hit-revision");
    assert_eq!(json_of(&res)["tail"], json!({"rev": 2, "build": 2}));
    assert_eq!(summary.builds(), (1, 2));
}

#[actix_rt::test]
async fn a_core_section_change_serves_stale_then_the_refreshed_core() {
    // The core's second build (its refresh) waits at the gate.
    let summary = Summary::new("sections-core", |n| n == 2);
    let app = test::init_service(App::new().route("/summary", summary.route())).await;
    let first = json_of(&call(&app, get!("/summary")).await);

    summary.core.rev.bump();
    let res = call(&app, get!("/summary")).await;
    assert_eq!(res.x_cache(), "stale");
    assert_eq!(json_of(&res), first);
    until("the core refresh", || summary.core.builds.get() == 2).await;
    let readers = join_all((0..5).map(|_| call(&app, get!("/summary")))).await;
    assert!(
        readers
            .iter()
            .all(|r| r.x_cache() == "stale" && json_of(r) == first)
    );
    assert_eq!(summary.builds(), (2, 1), "one refresh, of the core only");

    summary.gate.open();
    until("the refresh to be stored", || {
        summary.cache.stats().builds == 2
    })
    .await;
    let res = call(&app, get!("/summary")).await;
    assert_eq!(res.x_cache(), "hit-revision");
    assert_eq!(
        json_of(&res),
        json!({"core": {"rev": 2, "build": 2}, "tail": {"rev": 1, "build": 1}})
    );
    assert_eq!(summary.builds(), (2, 1));
}

/// Read-your-writes, per section: invalidating a section rebuilds it (and only it) before the
/// next answer, whether it is inline (`section`) or not (`miss`, never `stale`).
#[actix_rt::test]
async fn invalidating_a_section_rebuilds_it_before_the_next_answer() {
    let summary = Summary::new("sections-invalidate", |_| false);
    let app = test::init_service(App::new().route("/summary", summary.route())).await;
    call(&app, get!("/summary")).await;

    summary.cache.invalidate(&CacheScope::section("tail"));
    let res = call(&app, get!("/summary")).await;
    assert_eq!(res.x_cache(), "section");
    assert_eq!(json_of(&res)["tail"]["build"], 2);
    assert_eq!(summary.builds(), (1, 2));
    assert_eq!(call(&app, get!("/summary")).await.x_cache(), "hit-revision");

    // The write changes the core's data and invalidates the core section.
    summary.core.rev.bump();
    summary.cache.invalidate(&CacheScope::section("core"));
    let res = call(&app, get!("/summary")).await;
    assert_eq!((res.status, res.x_cache()), (StatusCode::OK, "miss"));
    assert_eq!(
        json_of(&res),
        json!({"core": {"rev": 2, "build": 2}, "tail": {"rev": 1, "build": 2}})
    );
    assert_eq!(summary.builds(), (2, 2), "the core only");
    assert_eq!(summary.cache.stats().stale_served, 0);
    let res = call(&app, get!("/summary")).await;
    assert_eq!(res.x_cache(), "hit-revision");
    assert_eq!(json_of(&res)["core"], json!({"rev": 2, "build": 2}));

    // A change seen only through the core's revision (no invalidation) keeps
    // stale-while-revalidate: the old core at once, one background refresh.
    summary.core.rev.bump();
    let res = call(&app, get!("/summary")).await;
    assert_eq!(res.x_cache(), "stale");
    assert_eq!(json_of(&res)["core"], json!({"rev": 2, "build": 2}));
    until("the core refresh", || summary.cache.stats().builds == 4).await;
    let res = call(&app, get!("/summary")).await;
    assert_eq!(res.x_cache(), "hit-revision");
    assert_eq!(json_of(&res)["core"], json!({"rev": 3, "build": 3}));
    assert_eq!(summary.builds(), (3, 2));

    // Forced: everything is rebuilt in the request.
    let res = call(&app, get!("/summary?refresh=true")).await;
    assert_eq!(res.x_cache(), "miss");
    assert_eq!(summary.builds(), (4, 3));
}

/// Invalidating one section rebuilds that section before the answer; another section whose
/// revision merely changed (no invalidation) is left to stale-while-revalidate: its old bytes
/// in that answer, then one background refresh.
#[actix_rt::test]
async fn an_invalidation_rebuilds_its_section_and_leaves_mere_changes_to_a_refresh() {
    let (a, b, gate) = (SectionData::new(), SectionData::new(), Gate::new());
    let cache = ResponseCache::sections("sections-invalidate-defer")
        .clock(ManualClock::new())
        .section(a.section("a", &gate, |_| false))
        .section(b.section("b", &gate, |_| false))
        .build();
    let c = cache.clone();
    let app = test::init_service(App::new().route(
        "/summary",
        web::get().to(move |req: HttpRequest| {
            let cache = c.clone();
            async move { cache.respond(&req).await }
        }),
    ))
    .await;
    call(&app, get!("/summary")).await;

    // This app's write to `a` (invalidated); `b` changed elsewhere (its revision only).
    a.rev.bump();
    cache.invalidate(&CacheScope::section("a"));
    b.rev.bump();
    let res = call(&app, get!("/summary")).await;
    // Labelled `stale`: `b`'s bytes are (the new `a` is in them all the same).
    assert_eq!((res.status, res.x_cache()), (StatusCode::OK, "stale"));
    assert_eq!(
        json_of(&res),
        json!({"a": {"rev": 2, "build": 2}, "b": {"rev": 1, "build": 1}})
    );
    assert_eq!(
        (a.builds.get(), b.builds.get()),
        (2, 1),
        "only `a` in the request"
    );
    // What the entry holds is what it says: `b`'s old revision.
    assert!(
        res.header("x-revision").unwrap().ends_with("b=b1"),
        "{res:?}"
    );
    let res = call(&app, get!("/summary")).await;
    assert_eq!(res.x_cache(), "stale");
    until("b's refresh", || cache.stats().builds == 3).await;
    let res = call(&app, get!("/summary")).await;
    assert_eq!(res.x_cache(), "hit-revision");
    assert_eq!(
        json_of(&res),
        json!({"a": {"rev": 2, "build": 2}, "b": {"rev": 2, "build": 2}})
    );
    assert_eq!((a.builds.get(), b.builds.get()), (2, 2));
}

/// Readers after a section's invalidation all wait for one rebuild of that section, even
/// while a stale-while-revalidate refresh that predates the invalidation is running.
#[actix_rt::test]
async fn readers_after_a_section_invalidation_wait_for_its_rebuild() {
    // The core's 2nd build (a background refresh from before the write) and 3rd (the
    // rebuild after it) wait at the gate.
    let summary = Summary::new("sections-invalidate-coalesce", |n| n >= 2);
    let app =
        std::rc::Rc::new(test::init_service(App::new().route("/summary", summary.route())).await);
    call(&*app, get!("/summary")).await;
    // A change from elsewhere: stale, and a refresh (core r2) starts.
    summary.core.rev.bump();
    assert_eq!(call(&*app, get!("/summary")).await.x_cache(), "stale");
    until("the background refresh", || summary.core.builds.get() == 2).await;
    // This app's write: core r3, and the core invalidated.
    summary.core.rev.bump();
    summary.cache.invalidate(&CacheScope::section("core"));
    let readers: Vec<_> = (0..8)
        .map(|_| support::spawn_call(&app, get!("/summary")))
        .collect();
    for _ in 0..20 {
        actix_rt::task::yield_now().await;
    }
    summary.gate.open();
    for reader in readers {
        let res = support::joined(reader).await;
        assert_ne!(res.x_cache(), "stale", "{res:?}");
        assert_eq!(json_of(&res)["core"]["rev"], 3, "{res:?}");
    }
    assert_eq!(
        summary.core.builds.get(),
        3,
        "the refresh, then one rebuild"
    );
}

/// A section's rebuild after its invalidation fails: the stored object stands in for it
/// (stale-on-error) within the stale window, rather than the error.
#[actix_rt::test]
async fn a_failed_section_rebuild_after_an_invalidation_serves_the_old_object_stale() {
    let summary = Summary::new("sections-invalidate-fails", |_| false);
    let app = test::init_service(App::new().route("/summary", summary.route())).await;
    let first = json_of(&call(&app, get!("/summary")).await);

    summary.core.build_fails.store(true, SeqCst);
    summary.core.rev.bump();
    summary.cache.invalidate(&CacheScope::section("core"));
    let res = call(&app, get!("/summary")).await;
    assert_eq!((res.status, res.x_cache()), (StatusCode::OK, "stale"));
    assert_eq!(json_of(&res), first);
    assert_eq!(member(&res).param("fwd-status"), Some("500"));
    assert_eq!(summary.cache.stats().refresh_failures, 1);
    // Past the stale window, the error is the answer; once the build works, the new core.
    summary.clock.advance(61 * SECOND);
    let res = call(&app, get!("/summary")).await;
    assert_eq!(
        (res.status, res.x_cache()),
        (StatusCode::INTERNAL_SERVER_ERROR, "miss")
    );
    summary.core.build_fails.store(false, SeqCst);
    let res = call(&app, get!("/summary")).await;
    assert_eq!(res.x_cache(), "miss");
    assert_eq!(json_of(&res)["core"]["rev"], 2);
}

/// A failing section revision query serves the whole stored entry `stale` (stale-on-error),
/// within its stale window; past it, the error is the answer.
#[actix_rt::test]
async fn a_failing_section_revision_serves_the_whole_entry_stale() {
    let summary = Summary::new("sections-revision-fails", |_| false);
    let app = test::init_service(App::new().route("/summary", summary.route())).await;
    let first = json_of(&call(&app, get!("/summary")).await);

    summary.core.revision_fails.store(true, SeqCst);
    summary.clock.advance(30 * SECOND);
    let res = call(&app, get!("/summary")).await;
    assert_eq!((res.status, res.x_cache()), (StatusCode::OK, "stale"));
    assert_eq!(json_of(&res), first);
    let served = member(&res);
    assert_eq!(
        (served.param("fwd"), served.param("fwd-status")),
        (Some("stale"), Some("503")),
        "{served:?}"
    );
    assert_eq!(summary.builds(), (1, 1));
    assert_eq!(summary.cache.stats().revision_failures, 1);

    summary.clock.advance(31 * SECOND);
    let res = call(&app, get!("/summary")).await;
    assert_eq!(
        (res.status, res.x_cache()),
        (StatusCode::SERVICE_UNAVAILABLE, "miss")
    );
    assert_eq!(summary.cache.stats().revision_failures, 2);
    summary.core.revision_fails.store(false, SeqCst);
    assert_eq!(call(&app, get!("/summary")).await.x_cache(), "hit-revision");
}

/// A sectioned leader whose client goes away does not cancel the build, and a panicking
/// section build answers that request 500 without wedging the next one.
#[actix_rt::test]
async fn sectioned_builds_survive_a_cancelled_leader_and_a_panic() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let runs = Arc::new(AtomicU64::new(0));
    let panic_next = Arc::new(AtomicBool::new(false));
    let (g, r, p) = (gate.clone(), runs.clone(), panic_next.clone());
    let cache = ResponseCache::sections("sections-cancel")
        .section(Section::new(
            "core",
            |_req: HttpRequest| async { Ok::<_, Infallible>("1".to_owned()) },
            move |_req: HttpRequest| {
                let (gate, runs, panic_next) = (g.clone(), r.clone(), p.clone());
                async move {
                    if panic_next.swap(false, SeqCst) {
                        panic!("section build failed");
                    }
                    let _permit = gate.acquire().await.expect("gate open");
                    Ok::<_, Infallible>(runs.fetch_add(1, SeqCst) + 1)
                }
            },
        ))
        .build();

    // The leader's task is aborted while its build waits on the gate.
    let c = cache.clone();
    let leader = actix_rt::spawn(async move {
        let req = TestRequest::get().uri("/s").to_http_request();
        c.respond(&req).await
    });
    until("the build started", || cache.stats().misses == 1).await;
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    gate.add_permits(1);
    until("the build finished", || runs.load(SeqCst) == 1).await;
    let req = TestRequest::get().uri("/s").to_http_request();
    let res = cache.respond(&req).await;
    assert_eq!(support::cache_label(res.headers()), "hit-revision");
    assert_eq!(runs.load(SeqCst), 1);

    // A panicking build: 500 for its request, then a forced rebuild works again.
    panic_next.store(true, SeqCst);
    let forced = || TestRequest::get().uri("/s?refresh=true").to_http_request();
    let res = cache.respond(&forced()).await;
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    gate.add_permits(1);
    let res = cache.respond(&forced()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(support::cache_label(res.headers()), "miss");
    assert_eq!(runs.load(SeqCst), 2);
}

/// A request that saw a newer fingerprint than the build it waited for still gets those
/// bytes (the freshest there are), but labelled `stale`, not presented as current.
#[actix_rt::test]
async fn a_waiter_with_a_newer_fingerprint_gets_the_older_build_as_stale() {
    let backend = Backend::new(|n| n == 1);
    let clock = ManualClock::new();
    let cache = backend.cache("rev-newer-waiter", &clock);
    let app = std::rc::Rc::new(
        test::init_service(App::new().route("/data/{name}", backend.route(&cache))).await,
    );
    // The leader reads r1 and blocks in its build.
    let leader = support::spawn_call(&app, get!("/data/a"));
    until("the leader's build", || backend.builds.get() == 1).await;
    // The data changes; this request reads r2 and waits for the r1 build.
    backend.rev.bump();
    let waiter = support::spawn_call(&app, get!("/data/a"));
    until("the waiter joined", || {
        cache.stats().misses == 1 && cache.stats().coalesced == 0
    })
    .await;
    for _ in 0..10 {
        actix_rt::task::yield_now().await;
    }
    backend.gate.open();
    let leader = support::joined(leader).await;
    assert_eq!(
        (leader.x_cache(), leader.body.as_str()),
        ("miss", "a r1 build 1")
    );
    let waiter = support::joined(waiter).await;
    assert_eq!(
        (waiter.x_cache(), waiter.body.as_str()),
        ("stale", "a r1 build 1")
    );
    assert_eq!(backend.builds.get(), 1);
    // The next request sees r2 != r1: stale and one background refresh, then current.
    assert_eq!(call(&*app, get!("/data/a")).await.x_cache(), "stale");
    until("the refresh stored", || cache.stats().builds == 2).await;
    let res = call(&*app, get!("/data/a")).await;
    assert_eq!(
        (res.x_cache(), res.body.as_str()),
        ("hit-revision", "a r2 build 2")
    );
}
