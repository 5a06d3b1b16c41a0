//! Revision-gated `ResponseCache`s: `hit-revision` while the fingerprint is unchanged, `stale`
//! and one background refresh when it changes, `miss` past `max_stale` since the bytes were
//! last known current, the ETag derived from the fingerprint (304 without the handler), and
//! sectioned responses whose inline sections are rebuilt in the request.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use actix_conditional::response_cache::{
    ManualClock, ResponseCache, Scope, Section, SectionedCache,
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
        let (rev, fails) = (self.rev.clone(), Arc::clone(&self.revision_fails));
        ResponseCache::revision(name, move |_req: HttpRequest| {
            let result = if fails.load(SeqCst) {
                Err(actix_web::error::ErrorServiceUnavailable(
                    "revision store down",
                ))
            } else {
                Ok(format!("r{}", rev.get()))
            };
            async move { result }
        })
        .clock(clock.clone())
        .build()
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

#[actix_rt::test]
async fn invalidate_all_in_revision_mode_serves_stale_and_refreshes_once() {
    let backend = Backend::new(|_| false);
    let cache = backend.cache("rev-invalidate", &ManualClock::new());
    let app = test::init_service(App::new().route("/data/{name}", backend.route(&cache))).await;

    let etag = call(&app, get!("/data/a"))
        .await
        .header("etag")
        .unwrap()
        .to_owned();
    cache.invalidate(&Scope::All);
    let res = call(&app, get!("/data/a")).await;
    assert_eq!(
        (res.x_cache(), res.body.as_str()),
        ("stale", "a r1 build 1")
    );
    until("the refresh", || cache.stats().builds == 2).await;
    let res = call(&app, get!("/data/a")).await;
    assert_eq!(
        (res.x_cache(), res.body.as_str()),
        ("hit-revision", "a r1 build 2")
    );
    assert_ne!(
        res.header("etag"),
        Some(etag.as_str()),
        "an invalidation changes the tag"
    );
}

#[actix_rt::test]
async fn a_failing_revision_query_bypasses_the_cache() {
    let backend = Backend::new(|_| false);
    let cache = backend.cache("rev-query-fails", &ManualClock::new());
    let app = test::init_service(App::new().route("/data/{name}", backend.route(&cache))).await;

    assert_eq!(call(&app, get!("/data/a")).await.x_cache(), "miss");
    backend.revision_fails.store(true, SeqCst);
    // Nothing is served that cannot be verified: the handler answers, nothing is stored.
    for n in 2..=3 {
        let res = call(&app, get!("/data/a")).await;
        assert_eq!(
            (res.status, res.x_cache(), res.body.clone()),
            (StatusCode::OK, "miss", format!("a r1 build {n}"))
        );
    }
    backend.revision_fails.store(false, SeqCst);
    let res = call(&app, get!("/data/a")).await;
    assert_eq!(
        (res.x_cache(), res.body.as_str()),
        ("hit-revision", "a r1 build 1")
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
}

impl SectionData {
    fn new() -> Self {
        Self {
            rev: Revision::new(),
            builds: Counter::default(),
        }
    }

    fn section(&self, name: &'static str, gate: &Gate, blocks: fn(usize) -> bool) -> Section {
        let (rev, data, gate) = (self.rev.clone(), self.clone(), gate.clone());
        Section::new(
            name,
            move |_req: HttpRequest| {
                let rev = format!("{name}{}", rev.get());
                async move { Ok::<_, Infallible>(rev) }
            },
            move |_req: HttpRequest| {
                let (n, rev) = (data.builds.bump(), data.rev.get());
                let gate = gate.clone();
                async move {
                    if blocks(n) {
                        gate.pass().await;
                    }
                    Ok::<_, Infallible>(json!({ "rev": rev, "build": n }))
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
}

impl Summary {
    fn new(name: &str, core_blocks: fn(usize) -> bool) -> Self {
        let (core, tail, gate) = (SectionData::new(), SectionData::new(), Gate::new());
        let cache = ResponseCache::sections(name)
            .clock(ManualClock::new())
            .section(core.section("core", &gate, core_blocks))
            .inline_section(tail.section("tail", &gate, |_| false))
            .build();
        Self {
            cache,
            core,
            tail,
            gate,
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

#[actix_rt::test]
async fn invalidating_a_section_is_like_a_change_of_it() {
    let summary = Summary::new("sections-invalidate", |_| false);
    let app = test::init_service(App::new().route("/summary", summary.route())).await;
    call(&app, get!("/summary")).await;

    summary.cache.invalidate(&Scope::section("tail"));
    let res = call(&app, get!("/summary")).await;
    assert_eq!(res.x_cache(), "section");
    assert_eq!(json_of(&res)["tail"]["build"], 2);
    assert_eq!(summary.builds(), (1, 2));
    assert_eq!(call(&app, get!("/summary")).await.x_cache(), "hit-revision");

    summary.cache.invalidate(&Scope::section("core"));
    let res = call(&app, get!("/summary")).await;
    assert_eq!(res.x_cache(), "stale");
    until("the core refresh", || summary.cache.stats().builds == 3).await;
    let res = call(&app, get!("/summary")).await;
    assert_eq!(res.x_cache(), "hit-revision");
    assert_eq!(
        json_of(&res),
        json!({"core": {"rev": 1, "build": 2}, "tail": {"rev": 1, "build": 2}})
    );
    assert_eq!(summary.builds(), (2, 2));

    // Forced: everything is rebuilt in the request.
    let res = call(&app, get!("/summary?refresh=true")).await;
    assert_eq!(res.x_cache(), "miss");
    assert_eq!(summary.builds(), (3, 3));
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
