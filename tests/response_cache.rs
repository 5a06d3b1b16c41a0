//! `ResponseCache` behaviour: single-flight (in process and over a real multi-worker
//! `HttpServer`), leaders that panic, fail or are cancelled, invalidation after a mutation,
//! the byte budget, the middleware form (with HEAD and conditional leaders) and `lock_timeout`.
//!
//! TTL and stale logic never sleeps: time comes from a `ManualClock`. Slow builders wait on a
//! [`Gate`] the test opens; every wait is bounded ([`WAIT`]), so a bug fails instead of hanging.
//! Elsewhere: stale windows and forced refreshes in `response_cache_ttl.rs`, revision mode and
//! sections in `response_cache_revision.rs`, what is never shared in
//! `response_cache_privacy.rs`; their helpers in `common/response_cache.rs`.

use std::collections::HashSet;
use std::rc::Rc;
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use actix_conditional::response_cache::{CacheScope, ManualClock, ResponseCache};
use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::test::{self, TestRequest};
use actix_web::{App, HttpRequest, HttpResponse, web};
use futures_util::future::{join, join_all};

#[path = "common/http.rs"]
mod http;
#[path = "common/response_cache.rs"]
#[macro_use]
mod support;

use support::{
    Counter, Gate, Res, TTL, WAIT, call, count, gated_route, joined, spawn_call, until,
    with_arrivals,
};

// ---------------------------------------------------------------------------------------------
// 1. Single-flight
// ---------------------------------------------------------------------------------------------

#[actix_rt::test]
async fn cold_key_256_concurrent_requests_in_process_run_the_handler_once() {
    let cache = ResponseCache::ttl("burst-in-process", TTL)
        .clock(ManualClock::new())
        .build();
    let (arrived, builds, gate) = (Counter::default(), Counter::default(), Gate::new());
    let app = test::init_service(App::new().route(
        "/cold",
        gated_route(&cache, &arrived, &builds, &gate, |_| true),
    ))
    .await;

    let requests = join_all((0..256).map(|_| call(&app, get!("/cold"))));
    // Each request joins the flight in the same poll that counts it, so once all 256 are
    // counted every one of them is waiting: only then may the build finish.
    let release = async {
        until("256 arrivals", || arrived.get() == 256).await;
        gate.open();
    };
    let (responses, ()) = tokio::time::timeout(WAIT, join(requests, release))
        .await
        .expect("burst did not finish");

    assert_eq!(builds.get(), 1, "the handler ran once");
    assert!(responses.iter().all(|r| r.status == StatusCode::OK));
    assert!(
        responses.iter().all(|r| r.body == "v1"),
        "same body for all"
    );
    let labels: Vec<&str> = responses.iter().map(Res::x_cache).collect();
    assert_eq!(count(labels.iter().copied(), "miss"), 1, "{labels:?}");
    assert_eq!(
        count(labels.iter().copied(), "coalesced"),
        255,
        "{labels:?}"
    );
    let stats = cache.stats();
    assert_eq!((stats.builds, stats.misses, stats.coalesced), (1, 1, 255));

    let res = call(&app, get!("/cold")).await;
    assert_eq!((res.x_cache(), res.body.as_str()), ("hit", "v1"));
    assert_eq!(builds.get(), 1);
}

#[test]
fn cold_key_256_concurrent_clients_over_http_on_four_workers_run_the_handler_once() {
    const CLIENTS: usize = 256;
    // One cache for every worker: built outside the app factory and cloned in.
    let cache = ResponseCache::ttl("burst-over-http", TTL)
        .clock(ManualClock::new())
        .build();
    let arrived = Counter::default();
    let builds = Counter::default();
    let workers_seen = Arc::new(Mutex::new(HashSet::new()));

    let server = http::Server::start_with_workers(4, {
        let (cache, arrived, builds, workers_seen) = (
            cache.clone(),
            arrived.clone(),
            builds.clone(),
            Arc::clone(&workers_seen),
        );
        move || {
            let (cache, arrived, builds, workers_seen) = (
                cache.clone(),
                arrived.clone(),
                builds.clone(),
                Arc::clone(&workers_seen),
            );
            App::new().route(
                "/burst",
                web::get().to(move |req: HttpRequest| {
                    workers_seen.lock().unwrap().insert(thread::current().id());
                    arrived.bump();
                    let (cache, arrived, builds) = (cache.clone(), arrived.clone(), builds.clone());
                    async move {
                        cache
                            .serve(&req, move |_req| {
                                let n = builds.bump();
                                let arrived = arrived.clone();
                                async move {
                                    // Hold the build until every client's request is in (bounded).
                                    let deadline = Instant::now() + WAIT;
                                    while arrived.get() < CLIENTS && Instant::now() < deadline {
                                        tokio::time::sleep(Duration::from_millis(2)).await;
                                    }
                                    // A request is counted just before it joins the flight, in
                                    // the same synchronous step on its worker: a short grace
                                    // lets the last ones finish that step.
                                    tokio::time::sleep(Duration::from_millis(100)).await;
                                    HttpResponse::Ok().body(format!("burst build {n}"))
                                }
                            })
                            .await
                    }
                }),
            )
        }
    });

    let barrier = Arc::new(Barrier::new(CLIENTS));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (addr, barrier) = (server.addr(), Arc::clone(&barrier));
            thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    let mut conn = http::Conn::open(addr);
                    barrier.wait();
                    conn.get("/burst")
                })
                .unwrap()
        })
        .collect();
    let responses: Vec<http::Response> = clients.into_iter().map(|c| c.join().unwrap()).collect();

    assert_eq!(builds.get(), 1, "the handler ran once");
    assert_eq!(arrived.get(), CLIENTS);
    assert!(
        workers_seen.lock().unwrap().len() >= 2,
        "requests reached more than one worker"
    );
    assert!(responses.iter().all(|r| r.status == 200));
    assert!(
        responses.iter().all(|r| r.body_str() == "burst build 1"),
        "one body for all"
    );
    let labels: Vec<&str> = responses.iter().map(|r| r.cache_label()).collect();
    assert_eq!(count(labels.iter().copied(), "miss"), 1, "{labels:?}");
    assert_eq!(count(labels.iter().copied(), "coalesced"), CLIENTS - 1);

    let stats = cache.stats();
    assert_eq!((stats.builds, stats.misses, stats.coalesced), (1, 1, 255));

    let res = server.connect().get("/burst");
    assert_eq!(res.cache_label(), "hit");
    assert_eq!(builds.get(), 1);
}

// ---------------------------------------------------------------------------------------------
// 2. Leaders that panic, fail or go away
// ---------------------------------------------------------------------------------------------

#[actix_rt::test]
/// A panicking build releases every waiter at once with a 500 (the error is shared, as a 5xx
/// is; nobody retries in series behind it), nothing is stored, and the next request builds.
async fn a_panicking_leader_releases_the_waiters_with_a_shared_500() {
    let cache = ResponseCache::ttl("leader-panics", TTL)
        .clock(ManualClock::new())
        .build();
    let (arrived, builds, gate) = (Counter::default(), Counter::default(), Gate::new());
    let app = Rc::new(
        test::init_service(App::new().route("/p", {
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
                                if n == 1 {
                                    gate.pass().await;
                                    panic!("the leader's build panics (expected by the test)");
                                }
                                format!("recovered by build {n}")
                            }
                        })
                        .await
                }
            })
        }))
        .await,
    );

    let leader = spawn_call(&app, get!("/p"));
    until("the leader's build", || builds.get() == 1).await;
    let waiters: Vec<_> = (0..5).map(|_| spawn_call(&app, get!("/p"))).collect();
    until("5 waiters", || arrived.get() == 6).await;
    gate.open();

    let leader = joined(leader).await;
    assert_eq!(leader.status, StatusCode::INTERNAL_SERVER_ERROR);
    let mut waiters_res = Vec::new();
    for w in waiters {
        waiters_res.push(joined(w).await);
    }
    assert!(
        waiters_res
            .iter()
            .all(|r| r.status == StatusCode::INTERNAL_SERVER_ERROR && r.x_cache() == "coalesced")
    );
    assert_eq!(builds.get(), 1, "the waiters did not run the build again");
    assert!(cache.stats().refresh_failures >= 1);

    // Nothing was stored: the next request builds, and its result is stored.
    let res = call(&*app, get!("/p")).await;
    assert_eq!(
        (res.x_cache(), res.body.as_str()),
        ("miss", "recovered by build 2")
    );
    let res = call(&*app, get!("/p")).await;
    assert_eq!(
        (res.x_cache(), res.body.as_str()),
        ("hit", "recovered by build 2")
    );
}

#[actix_rt::test]
async fn a_panicking_leader_in_the_middleware_releases_the_waiters_too() {
    let cache = ResponseCache::ttl("leader-panics-mw", TTL)
        .clock(ManualClock::new())
        .build();
    let (arrived, builds, gate) = (Counter::default(), Counter::default(), Gate::new());
    let app = Rc::new(
        test::init_service(
            with_arrivals(App::new().wrap(cache.clone()), arrived.clone()).route("/p", {
                let (builds, gate) = (builds.clone(), gate.clone());
                web::get().to(move || {
                    let n = builds.bump();
                    let gate = gate.clone();
                    async move {
                        if n == 1 {
                            gate.pass().await;
                            panic!("the leader's handler panics (expected by the test)");
                        }
                        format!("recovered by build {n}")
                    }
                })
            }),
        )
        .await,
    );
    let leader = spawn_call(&app, get!("/p"));
    until("the leader's build", || builds.get() == 1).await;
    let waiters: Vec<_> = (0..3).map(|_| spawn_call(&app, get!("/p"))).collect();
    until("3 waiters", || arrived.get() == 4).await;
    gate.open();

    assert_eq!(
        joined(leader).await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    for w in waiters {
        let res = joined(w).await;
        assert_eq!(res.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(res.x_cache(), "coalesced");
    }
    assert_eq!(builds.get(), 1);
    let res = call(&*app, get!("/p")).await;
    assert_eq!(
        (res.x_cache(), res.body.as_str()),
        ("miss", "recovered by build 2")
    );
}

#[actix_rt::test]
async fn a_leader_5xx_goes_to_every_waiter_and_is_not_stored() {
    let cache = ResponseCache::ttl("leader-5xx", TTL)
        .clock(ManualClock::new())
        .build();
    let (arrived, builds, gate) = (Counter::default(), Counter::default(), Gate::new());
    let app = Rc::new(
        test::init_service(App::new().route("/e", {
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
                                match n {
                                    1 => {
                                        gate.pass().await;
                                        HttpResponse::InternalServerError().body("boom 1")
                                    }
                                    2 => HttpResponse::BadGateway().body("boom 2"),
                                    _ => HttpResponse::Ok().body(format!("ok {n}")),
                                }
                            }
                        })
                        .await
                }
            })
        }))
        .await,
    );

    let leader = spawn_call(&app, get!("/e"));
    until("the leader's build", || builds.get() == 1).await;
    let waiters: Vec<_> = (0..5).map(|_| spawn_call(&app, get!("/e"))).collect();
    until("5 waiters", || arrived.get() == 6).await;
    gate.open();

    let leader = joined(leader).await;
    assert_eq!(leader.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!((leader.x_cache(), leader.body.as_str()), ("miss", "boom 1"));
    for w in waiters {
        let res = joined(w).await;
        assert_eq!(res.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!((res.x_cache(), res.body.as_str()), ("coalesced", "boom 1"));
    }
    assert_eq!(builds.get(), 1, "the waiters did not retry one by one");

    // Nothing stored: the next request runs the handler again (and fails again) …
    let res = call(&*app, get!("/e")).await;
    assert_eq!(res.status, StatusCode::BAD_GATEWAY);
    assert_eq!((res.x_cache(), res.body.as_str()), ("miss", "boom 2"));
    // … then succeeds, and that is stored.
    let res = call(&*app, get!("/e")).await;
    assert_eq!((res.x_cache(), res.body.as_str()), ("miss", "ok 3"));
    let res = call(&*app, get!("/e")).await;
    assert_eq!((res.x_cache(), res.body.as_str()), ("hit", "ok 3"));
    assert_eq!(cache.stats().refresh_failures, 2);
}

/// Drops the leader's request while its build is blocked; the waiters still get the build's
/// result, and the build (a task of its own) still completes and is stored.
async fn cancelled_leader_case<S, R, B>(
    app: Rc<S>,
    req: impl Fn() -> R,
    arrived: &Counter,
    builds: &Counter,
    gate: &Gate,
) where
    S: Service<R, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    R: 'static,
    B: MessageBody + 'static,
{
    let leader = spawn_call(&app, req());
    until("the leader's build", || builds.get() == 1).await;
    let waiters: Vec<_> = (0..3).map(|_| spawn_call(&app, req())).collect();
    until("3 waiters", || arrived.get() == 4).await;

    leader.abort();
    let err = tokio::time::timeout(WAIT, leader)
        .await
        .expect("abort")
        .expect_err("the leader's request was cancelled");
    assert!(err.is_cancelled());
    gate.open();

    for w in waiters {
        let res = joined(w).await;
        assert_eq!(res.status, StatusCode::OK);
        assert_eq!((res.x_cache(), res.body.as_str()), ("coalesced", "v1"));
    }
    assert_eq!(builds.get(), 1, "the build was not cancelled nor restarted");
    let res = call(&*app, req()).await;
    assert_eq!((res.x_cache(), res.body.as_str()), ("hit", "v1"));
    assert_eq!(builds.get(), 1);
}

#[actix_rt::test]
async fn a_cancelled_leader_does_not_cancel_the_build_with_serve() {
    let cache = ResponseCache::ttl("leader-cancelled", TTL)
        .clock(ManualClock::new())
        .build();
    let (arrived, builds, gate) = (Counter::default(), Counter::default(), Gate::new());
    let app = test::init_service(App::new().route(
        "/c",
        gated_route(&cache, &arrived, &builds, &gate, |n| n == 1),
    ))
    .await;
    cancelled_leader_case(Rc::new(app), || get!("/c"), &arrived, &builds, &gate).await;
    assert_eq!(arrived.get(), 5);
}

#[actix_rt::test]
async fn a_cancelled_leader_does_not_cancel_the_build_in_the_middleware() {
    let cache = ResponseCache::ttl("leader-cancelled-mw", TTL)
        .clock(ManualClock::new())
        .build();
    let (arrived, builds, gate) = (Counter::default(), Counter::default(), Gate::new());
    let app = test::init_service(
        with_arrivals(App::new().wrap(cache.clone()), arrived.clone()).route("/c", {
            let (builds, gate) = (builds.clone(), gate.clone());
            web::get().to(move || {
                let n = builds.bump();
                let gate = gate.clone();
                async move {
                    if n == 1 {
                        gate.pass().await;
                    }
                    format!("v{n}")
                }
            })
        }),
    )
    .await;
    cancelled_leader_case(Rc::new(app), || get!("/c"), &arrived, &builds, &gate).await;
    assert_eq!(arrived.get(), 5);
}

// ---------------------------------------------------------------------------------------------
// 8. Invalidation after a mutation
// ---------------------------------------------------------------------------------------------

/// `GET /items` through the cache (the build reads the data when it starts, then waits at the
/// gate if `blocks(n)`); `POST /items/new?status=…` answers that status behind
/// `cache.invalidates(CacheScope::All)`, changing the data only on 201.
fn items_app(
    cache: ResponseCache,
    data: Counter,
    arrived: Counter,
    builds: Counter,
    gate: Gate,
    blocks: fn(usize) -> bool,
) -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let invalidates = cache.invalidates(CacheScope::All);
    let get_route = {
        let data = data.clone();
        web::get().to(move |req: HttpRequest| {
            arrived.bump();
            let (cache, data, builds, gate) =
                (cache.clone(), data.clone(), builds.clone(), gate.clone());
            async move {
                cache
                    .serve(&req, move |_req| {
                        let (n, items) = (builds.bump(), data.get());
                        let gate = gate.clone();
                        async move {
                            if blocks(n) {
                                gate.pass().await;
                            }
                            format!("items={items}")
                        }
                    })
                    .await
            }
        })
    };
    let post_route = {
        web::post().to(move |query: web::Query<Vec<(String, u16)>>| {
            let status = StatusCode::from_u16(query[0].1).unwrap();
            if status == StatusCode::CREATED {
                data.bump();
            }
            async move { HttpResponse::build(status).finish() }
        })
    };
    App::new().route("/items", get_route).service(
        web::resource("/items/new")
            .wrap(invalidates)
            .route(post_route)
            // A read through the same middleware: it must invalidate nothing.
            .route(web::get().to(|| async { "the form" })),
    )
}

#[actix_rt::test]
async fn a_successful_mutation_invalidates_and_a_failed_one_does_not() {
    let cache = ResponseCache::ttl("mutations", TTL)
        .clock(ManualClock::new())
        .build();
    let (data, arrived, builds, gate) = (
        Counter::default(),
        Counter::default(),
        Counter::default(),
        Gate::new(),
    );
    let app = test::init_service(items_app(
        cache.clone(),
        data.clone(),
        arrived.clone(),
        builds.clone(),
        gate.clone(),
        |_| false,
    ))
    .await;

    let res = call(&app, get!("/items")).await;
    assert_eq!((res.x_cache(), res.body.as_str()), ("miss", "items=0"));
    assert_eq!(call(&app, get!("/items")).await.x_cache(), "hit");

    let res = call(&app, post!("/items/new?status=201")).await;
    assert_eq!(res.status, StatusCode::CREATED);
    let res = call(&app, get!("/items")).await;
    assert_eq!((res.x_cache(), res.body.as_str()), ("miss", "items=1"));
    assert_eq!(builds.get(), 2);

    for status in ["400", "500"] {
        let res = call(&app, post!(&format!("/items/new?status={status}"))).await;
        assert_eq!(res.status.as_str(), status);
        let res = call(&app, get!("/items")).await;
        assert_eq!(
            (res.x_cache(), res.body.as_str()),
            ("hit", "items=1"),
            "after {status}"
        );
    }
    assert_eq!(builds.get(), 2, "failed mutations invalidated nothing");

    // A 2xx to a safe method changes nothing (RFC 9110 §9.2.1): no invalidation, no group.
    let res = call(&app, get!("/items/new")).await;
    assert_eq!(res.status, StatusCode::OK);
    assert!(
        !res.headers.contains_key("cache-group-invalidation"),
        "{res:?}"
    );
    let res = call(&app, get!("/items")).await;
    assert_eq!((res.x_cache(), res.body.as_str()), ("hit", "items=1"));
    assert_eq!(builds.get(), 2, "a read invalidated nothing");
}

#[actix_rt::test]
async fn a_read_after_a_mutation_does_not_join_a_build_that_started_before_it() {
    let cache = ResponseCache::ttl("mutation-mid-build", TTL)
        .clock(ManualClock::new())
        .build();
    let (data, arrived, builds, gate) = (
        Counter::default(),
        Counter::default(),
        Counter::default(),
        Gate::new(),
    );
    let app = Rc::new(
        test::init_service(items_app(
            cache.clone(),
            data.clone(),
            arrived.clone(),
            builds.clone(),
            gate.clone(),
            |n| n == 1,
        ))
        .await,
    );

    // A build reads the data, then is slow to render it.
    let before = spawn_call(&app, get!("/items"));
    until("the first build", || builds.get() == 1).await;
    // A write commits and invalidates meanwhile; then its client reads.
    assert_eq!(
        call(&*app, post!("/items/new?status=201")).await.status,
        StatusCode::CREATED
    );
    let after = spawn_call(&app, get!("/items"));
    until("the read after the write", || arrived.get() == 2).await;
    gate.open();

    let before = joined(before).await;
    assert_eq!(
        (before.x_cache(), before.body.as_str()),
        ("miss", "items=0")
    );
    let after = joined(after).await;
    assert_eq!(after.body, "items=1", "read-your-writes: {after:?}");
    assert_eq!(after.x_cache(), "miss");
    // The old build was not stored; the new one was.
    let res = call(&*app, get!("/items")).await;
    assert_eq!((res.x_cache(), res.body.as_str()), ("hit", "items=1"));
}

// ---------------------------------------------------------------------------------------------
// 10. Byte budget
// ---------------------------------------------------------------------------------------------

#[actix_rt::test]
async fn the_byte_budget_holds_and_evictions_are_counted() {
    const BUDGET: u64 = 16 * 1024;
    let cache = ResponseCache::ttl("budget", TTL)
        .clock(ManualClock::new())
        .max_bytes(BUDGET)
        .build();
    let app = test::init_service(App::new().route("/b/{i}", {
        let cache = cache.clone();
        web::get().to(move |req: HttpRequest| {
            let cache = cache.clone();
            async move { cache.serve(&req, |_req| async { "x".repeat(1000) }).await }
        })
    }))
    .await;

    for i in 0..64 {
        let res = call(&app, get!(&format!("/b/{i}"))).await;
        assert_eq!((res.x_cache(), res.body.len()), ("miss", 1000));
        assert!(
            cache.weighted_bytes() <= BUDGET,
            "{} bytes after {i} entries",
            cache.weighted_bytes()
        );
    }
    let weighted = cache.weighted_bytes();
    assert!(weighted > 8 * 1000, "the budget is used: {weighted}");
    assert!(weighted <= BUDGET, "{weighted}");
    let stats = cache.stats();
    assert!(stats.evictions > 0, "{stats:?}");
    // 64 KiB of bodies cannot all be there: some keys miss again.
    let mut misses = 0;
    for i in 0..64 {
        if call(&app, get!(&format!("/b/{i}"))).await.x_cache() == "miss" {
            misses += 1;
        }
    }
    assert!(misses >= 64 - 16, "{misses}");
    assert!(cache.weighted_bytes() <= BUDGET);
}

// ---------------------------------------------------------------------------------------------
// 11. The middleware form
// ---------------------------------------------------------------------------------------------

#[actix_rt::test]
async fn middleware_hit_miss_stale_refresh_and_head_from_the_get_entry() {
    let clock = ManualClock::new();
    let cache = ResponseCache::ttl("mw", TTL).clock(clock.clone()).build();
    let (arrived, builds, gate) = (Counter::default(), Counter::default(), Gate::new());
    let app = Rc::new(
        test::init_service(
            with_arrivals(App::new().wrap(cache.clone()), arrived.clone()).route("/m", {
                let (builds, gate) = (builds.clone(), gate.clone());
                web::get().to(move || {
                    let n = builds.bump();
                    let gate = gate.clone();
                    async move {
                        if n == 2 {
                            gate.pass().await;
                        }
                        format!("v{n}")
                    }
                })
            }),
        )
        .await,
    );
    let head = || {
        TestRequest::default()
            .method(actix_web::http::Method::HEAD)
            .uri("/m")
            .to_request()
    };

    let res = call(&*app, get!("/m")).await;
    assert_eq!(
        (res.x_cache(), res.body.as_str(), res.age()),
        ("miss", "v1", 0)
    );
    let etag = res.header("etag").expect("an ETag").to_owned();
    clock.advance(Duration::from_secs(5));
    let res = call(&*app, get!("/m")).await;
    assert_eq!(
        (res.x_cache(), res.body.as_str(), res.age()),
        ("hit", "v1", 5)
    );
    assert_eq!(res.header("etag"), Some(etag.as_str()));

    // HEAD is answered from the GET entry (the route itself only takes GET).
    let res = call(&*app, head()).await;
    assert_eq!((res.status, res.x_cache()), (StatusCode::OK, "hit"));
    assert_eq!(res.header("etag"), Some(etag.as_str()));
    assert_eq!(builds.get(), 1);

    // Stale: the first reader refreshes in the foreground, the others get the stale bytes.
    clock.advance(Duration::from_secs(26));
    let refresher = spawn_call(&app, get!("/m"));
    until("the refresh", || builds.get() == 2).await;
    let res = call(&*app, get!("/m")).await;
    assert_eq!(
        (res.x_cache(), res.body.as_str(), res.age()),
        ("stale", "v1", 31)
    );
    let res = call(&*app, head()).await;
    assert_eq!((res.status, res.x_cache()), (StatusCode::OK, "stale"));
    gate.open();
    let res = joined(refresher).await;
    assert_eq!(
        (res.x_cache(), res.body.as_str(), res.age()),
        ("refresh", "v2", 0)
    );
    let res = call(&*app, get!("/m")).await;
    assert_eq!((res.x_cache(), res.body.as_str()), ("hit", "v2"));
    assert_eq!(builds.get(), 2);

    // A HEAD that finds the entry stale gets the stale entry and does not break it.
    clock.advance(Duration::from_secs(31));
    let res = call(&*app, head()).await;
    assert_eq!((res.status, res.x_cache()), (StatusCode::OK, "stale"));
    let res = call(&*app, get!("/m")).await;
    assert_eq!(
        (res.status, res.x_cache(), res.body.as_str()),
        (StatusCode::OK, "refresh", "v3")
    );
    assert_eq!(call(&*app, get!("/m")).await.x_cache(), "hit");
}

#[actix_rt::test]
async fn a_cold_head_neither_stores_nor_poisons_the_key() {
    let cache = ResponseCache::ttl("mw-cold-head", TTL)
        .clock(ManualClock::new())
        .build();
    let builds = Counter::default();
    let app = test::init_service(App::new().wrap(cache.clone()).route("/h", {
        let builds = builds.clone();
        web::get().to(move || {
            let n = builds.bump();
            async move { format!("v{n}") }
        })
    }))
    .await;
    let head = TestRequest::default()
        .method(actix_web::http::Method::HEAD)
        .uri("/h")
        .to_request();
    // The GET-only route does not take a HEAD: the router answers it, uncached.
    let res = call(&app, head).await;
    assert_eq!((res.status, res.x_cache()), (StatusCode::NOT_FOUND, "miss"));
    assert_eq!(builds.get(), 0);
    // That answer neither replaced nor blocked the GET entry: the GETs after it are cached.
    let res = call(&app, get!("/h")).await;
    assert_eq!(
        (res.status, res.x_cache(), res.body.as_str()),
        (StatusCode::OK, "miss", "v1")
    );
    let res = call(&app, get!("/h")).await;
    assert_eq!((res.x_cache(), res.body.as_str()), ("hit", "v1"));
}

#[actix_rt::test]
async fn serve_answers_head_from_the_get_entry_and_never_stores_a_head_answer() {
    let cache = ResponseCache::ttl("serve-head", TTL)
        .clock(ManualClock::new())
        .build();
    let builds = Counter::default();
    // A route that takes any method and whose handler answers HEAD without a body.
    let app = test::init_service(App::new().route("/h", {
        let (cache, builds) = (cache.clone(), builds.clone());
        web::route().to(move |req: HttpRequest| {
            let (cache, builds) = (cache.clone(), builds.clone());
            async move {
                cache
                    .serve(&req, move |req: HttpRequest| {
                        let n = builds.bump();
                        async move {
                            if req.method() == actix_web::http::Method::HEAD {
                                HttpResponse::Ok().finish()
                            } else {
                                HttpResponse::Ok().body(format!("v{n}"))
                            }
                        }
                    })
                    .await
            }
        })
    }))
    .await;
    let head = || {
        TestRequest::default()
            .method(actix_web::http::Method::HEAD)
            .uri("/h")
            .to_request()
    };
    let res = call(&app, head()).await;
    assert_eq!((res.status, res.x_cache()), (StatusCode::OK, "miss"));
    // The empty HEAD answer was not stored as the GET entry.
    let res = call(&app, get!("/h")).await;
    assert_eq!((res.x_cache(), res.body.as_str()), ("miss", "v2"));
    let res = call(&app, head()).await;
    assert_eq!((res.status, res.x_cache()), (StatusCode::OK, "hit"));
    let res = call(&app, get!("/h")).await;
    assert_eq!((res.x_cache(), res.body.as_str()), ("hit", "v2"));
    assert_eq!(builds.get(), 2);
}

#[actix_rt::test]
async fn middleware_conditional_leader_still_stores_the_full_200() {
    let cache = ResponseCache::ttl("mw-conditional", TTL)
        .clock(ManualClock::new())
        .build();
    let builds = Counter::default();
    let app = test::init_service(App::new().wrap(cache.clone()).route("/c", {
        let builds = builds.clone();
        // A handler that answers conditional requests itself (as if `ConditionalGet` were
        // inside the cache): the cache must not let it see the client's validators.
        web::get().to(move |req: HttpRequest| {
            let n = builds.bump();
            async move {
                if req.headers().contains_key(header::IF_NONE_MATCH) {
                    HttpResponse::NotModified().finish()
                } else {
                    HttpResponse::Ok()
                        .insert_header((header::ETAG, "\"v\""))
                        .body(format!("full body {n}"))
                }
            }
        })
    }))
    .await;

    let req = TestRequest::get()
        .uri("/c")
        .insert_header((header::IF_NONE_MATCH, "\"v\""))
        .to_request();
    let res = call(&app, req).await;
    // The leader's own answer: its validator matches the stored entry.
    assert_eq!(
        (res.status, res.x_cache()),
        (StatusCode::NOT_MODIFIED, "miss")
    );
    assert_eq!(res.body, "");
    let res = call(&app, get!("/c")).await;
    assert_eq!((res.status, res.x_cache()), (StatusCode::OK, "hit"));
    assert_eq!(res.body, "full body 1");

    let req = TestRequest::get()
        .uri("/c")
        .insert_header((header::IF_NONE_MATCH, "\"other\""))
        .to_request();
    let res = call(&app, req).await;
    assert_eq!(
        (res.status, res.x_cache(), res.body.as_str()),
        (StatusCode::OK, "hit", "full body 1")
    );
    assert_eq!(builds.get(), 1);
}

#[actix_rt::test]
async fn serve_conditional_leader_still_stores_the_full_200() {
    let cache = ResponseCache::ttl("serve-conditional", TTL)
        .clock(ManualClock::new())
        .build();
    let (arrived, builds, gate) = (Counter::default(), Counter::default(), Gate::new());
    let app = test::init_service(App::new().route(
        "/c",
        gated_route(&cache, &arrived, &builds, &gate, |_| false),
    ))
    .await;
    let req = TestRequest::get()
        .uri("/c")
        .insert_header((header::IF_NONE_MATCH, "*"))
        .to_request();
    let res = call(&app, req).await;
    assert_eq!(
        (res.status, res.x_cache()),
        (StatusCode::NOT_MODIFIED, "miss")
    );
    let res = call(&app, get!("/c")).await;
    assert_eq!(
        (res.status, res.x_cache(), res.body.as_str()),
        (StatusCode::OK, "hit", "v1")
    );
}

// ---------------------------------------------------------------------------------------------
// 12. lock_timeout
// ---------------------------------------------------------------------------------------------

#[actix_rt::test]
async fn a_waiter_past_lock_timeout_builds_its_own_response_and_does_not_store_it() {
    let cache = ResponseCache::ttl("lock-timeout", TTL)
        .clock(ManualClock::new())
        .lock_timeout(Duration::from_millis(50))
        .build();
    let (arrived, builds, gate) = (Counter::default(), Counter::default(), Gate::new());
    let app = Rc::new(
        test::init_service(App::new().route(
            "/slow",
            gated_route(&cache, &arrived, &builds, &gate, |n| n == 1),
        ))
        .await,
    );

    let leader = spawn_call(&app, get!("/slow"));
    until("the leader's build", || builds.get() == 1).await;
    let started = Instant::now();
    let res = call(&*app, get!("/slow")).await;
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert_eq!(
        (res.status, res.x_cache(), res.body.as_str()),
        (StatusCode::OK, "miss", "v2")
    );
    // Not stored: the next waiter times out and builds too.
    let res = call(&*app, get!("/slow")).await;
    assert_eq!((res.x_cache(), res.body.as_str()), ("miss", "v3"));
    assert!(cache.stats().bypasses >= 2);

    gate.open();
    let res = joined(leader).await;
    assert_eq!((res.x_cache(), res.body.as_str()), ("miss", "v1"));
    let res = call(&*app, get!("/slow")).await;
    assert_eq!(
        (res.x_cache(), res.body.as_str()),
        ("hit", "v1"),
        "the leader's build is stored"
    );
}

/// `Scope`, the former name of `CacheScope`, still compiles (deprecated) for one release.
#[test]
#[allow(deprecated)]
fn the_former_scope_name_still_works() {
    use actix_conditional::Scope;
    let cache = ResponseCache::ttl("former-scope-name", TTL).build();
    assert_eq!(cache.invalidation_group(&Scope::All), "former-scope-name");
    assert_eq!(
        Scope::section("tail"),
        actix_conditional::CacheScope::section("tail")
    );
}
