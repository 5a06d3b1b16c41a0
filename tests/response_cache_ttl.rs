//! TTL-mode `ResponseCache` windows on a `ManualClock`: stale bytes served at once while one
//! slow background refresh runs, stale-on-error, and the max stale age past which a request
//! blocks on a rebuild again (and sees that rebuild's error); forced refreshes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::Duration;

use actix_conditional::response_cache::{ManualClock, ResponseCache};
use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::test::{self, TestRequest};
use actix_web::{App, HttpRequest, HttpResponse, web};
use futures_util::future::join_all;

#[path = "common/response_cache.rs"]
#[macro_use]
mod support;

use support::{Counter, Gate, Res, TTL, call, gated_route, until};

const SECOND: Duration = Duration::from_secs(1);

#[actix_rt::test]
async fn stale_is_served_at_once_while_exactly_one_slow_refresh_runs() {
    let clock = ManualClock::new();
    let cache = ResponseCache::ttl("ttl-stale", TTL)
        .clock(clock.clone())
        .build();
    let (arrived, builds, gate) = (Counter::default(), Counter::default(), Gate::new());
    // The refresh (build 2) waits at the gate.
    let app = test::init_service(App::new().route(
        "/s",
        gated_route(&cache, &arrived, &builds, &gate, |n| n == 2),
    ))
    .await;

    let res = call(&app, get!("/s")).await;
    assert_eq!(
        (res.x_cache(), res.body.as_str(), res.age()),
        ("miss", "v1", 0)
    );
    let etag_v1 = res.header("etag").unwrap().to_owned();
    clock.advance(10 * SECOND);
    let res = call(&app, get!("/s")).await;
    assert_eq!(
        (res.x_cache(), res.body.as_str(), res.age()),
        ("hit", "v1", 10)
    );

    // Past the TTL: this request returns the stale bytes while its refresh is still blocked.
    clock.advance(21 * SECOND);
    let res = call(&app, get!("/s")).await;
    assert_eq!(
        (res.x_cache(), res.body.as_str(), res.age()),
        ("stale", "v1", 31)
    );
    assert_eq!(
        res.header("etag"),
        Some(etag_v1.as_str()),
        "the served bytes' tag"
    );
    until("the refresh to start", || builds.get() == 2).await;

    // Concurrent stale readers: all stale at once, no second refresh.
    let readers = join_all((0..20).map(|_| call(&app, get!("/s")))).await;
    assert!(
        readers
            .iter()
            .all(|r| r.x_cache() == "stale" && r.body == "v1")
    );
    assert!(readers.iter().all(|r| r.age() == 31));
    assert_eq!(builds.get(), 2, "exactly one refresh");
    assert_eq!(cache.stats().stale_served, 21);

    gate.open();
    until("the refresh to be stored", || cache.stats().builds == 2).await;
    let res = call(&app, get!("/s")).await;
    assert_eq!(
        (res.x_cache(), res.body.as_str(), res.age()),
        ("hit", "v2", 0)
    );
    assert_ne!(res.header("etag"), Some(etag_v1.as_str()));
    clock.advance(5 * SECOND);
    let res = call(&app, get!("/s")).await;
    assert_eq!(
        (res.x_cache(), res.body.as_str(), res.age()),
        ("hit", "v2", 5)
    );
    assert_eq!(builds.get(), 2);
}

/// `GET /r` through `serve()`: builds `"v<n>"`, or a 503 `"down <n>"` while `failing`.
fn flaky_app(
    cache: ResponseCache,
    builds: Counter,
    failing: Arc<AtomicBool>,
) -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new().route(
        "/r",
        web::get().to(move |req: HttpRequest| {
            let (cache, builds, failing) = (cache.clone(), builds.clone(), Arc::clone(&failing));
            async move {
                cache
                    .serve(&req, move |_req| {
                        let n = builds.bump();
                        let fail = failing.load(SeqCst);
                        async move {
                            if fail {
                                HttpResponse::ServiceUnavailable().body(format!("down {n}"))
                            } else {
                                HttpResponse::Ok().body(format!("v{n}"))
                            }
                        }
                    })
                    .await
            }
        }),
    )
}

#[actix_rt::test]
async fn a_failed_refresh_keeps_serving_stale_and_is_counted() {
    let clock = ManualClock::new();
    let cache = ResponseCache::ttl("ttl-refresh-error", TTL)
        .clock(clock.clone())
        .max_stale(60 * SECOND)
        .build();
    let (builds, failing) = (Counter::default(), Arc::new(AtomicBool::new(false)));
    let app = test::init_service(flaky_app(cache.clone(), builds.clone(), failing.clone())).await;

    assert_eq!(call(&app, get!("/r")).await.body, "v1");
    failing.store(true, SeqCst);
    clock.advance(31 * SECOND);
    for attempt in 1..=3 {
        let res = call(&app, get!("/r")).await;
        assert_eq!(res.status, StatusCode::OK);
        assert_eq!(
            (res.x_cache(), res.body.as_str(), res.age()),
            ("stale", "v1", 31)
        );
        until("the failed refresh", || {
            cache.stats().refresh_failures == attempt
        })
        .await;
    }
    assert_eq!(builds.get(), 4, "one refresh per stale read, none stored");
    let stats = cache.stats();
    assert_eq!((stats.builds, stats.refresh_failures), (1, 3));

    // The backend recovers: the next stale read's refresh succeeds.
    failing.store(false, SeqCst);
    assert_eq!(call(&app, get!("/r")).await.x_cache(), "stale");
    until("the refresh", || cache.stats().builds == 2).await;
    let res = call(&app, get!("/r")).await;
    assert_eq!((res.x_cache(), res.body.as_str()), ("hit", "v5"));
}

#[actix_rt::test]
async fn a_cold_error_propagates_and_is_not_stored() {
    let cache = ResponseCache::ttl("ttl-cold-error", TTL)
        .clock(ManualClock::new())
        .build();
    let (builds, failing) = (Counter::default(), Arc::new(AtomicBool::new(true)));
    let app = test::init_service(flaky_app(cache.clone(), builds.clone(), failing.clone())).await;

    for n in 1..=2 {
        let res = call(&app, get!("/r")).await;
        assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            (res.x_cache(), res.body.clone()),
            ("miss", format!("down {n}"))
        );
    }
    failing.store(false, SeqCst);
    let res = call(&app, get!("/r")).await;
    assert_eq!(
        (res.status, res.x_cache(), res.body.as_str()),
        (StatusCode::OK, "miss", "v3")
    );
    assert_eq!(cache.stats().refresh_failures, 2);
}

#[actix_rt::test]
async fn past_the_max_stale_age_a_request_blocks_on_the_rebuild_and_sees_its_error() {
    let clock = ManualClock::new();
    let cache = ResponseCache::ttl("ttl-max-stale", TTL)
        .clock(clock.clone())
        .max_stale(60 * SECOND)
        .build();
    let (builds, failing) = (Counter::default(), Arc::new(AtomicBool::new(false)));
    let app = test::init_service(flaky_app(cache.clone(), builds.clone(), failing.clone())).await;

    assert_eq!(call(&app, get!("/r")).await.body, "v1");
    // The last stale instant: TTL + max_stale - 1 s.
    clock.advance(89 * SECOND);
    failing.store(true, SeqCst);
    let res = call(&app, get!("/r")).await;
    assert_eq!(
        (res.x_cache(), res.body.as_str(), res.age()),
        ("stale", "v1", 89)
    );
    until("the failed refresh", || cache.stats().refresh_failures == 1).await;

    // Too old to serve: a blocking miss, whose error reaches the client.
    clock.advance(SECOND);
    let res = call(&app, get!("/r")).await;
    assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!((res.x_cache(), res.body.as_str()), ("miss", "down 3"));
    // And the same with a working backend: the request waits for, and gets, the new bytes.
    failing.store(false, SeqCst);
    let res = call(&app, get!("/r")).await;
    assert_eq!(
        (res.status, res.x_cache(), res.body.as_str()),
        (StatusCode::OK, "miss", "v4")
    );
    assert_eq!(res.age(), 0);
    let res = call(&app, get!("/r")).await;
    assert_eq!((res.x_cache(), res.body.as_str()), ("hit", "v4"));
}

#[actix_rt::test]
async fn a_panicking_refresh_keeps_serving_stale() {
    let clock = ManualClock::new();
    let cache = ResponseCache::ttl("ttl-refresh-panics", TTL)
        .clock(clock.clone())
        .build();
    let builds = Counter::default();
    let app = test::init_service(App::new().route("/p", {
        let (cache, builds) = (cache.clone(), builds.clone());
        web::get().to(move |req: HttpRequest| {
            let (cache, builds) = (cache.clone(), builds.clone());
            async move {
                cache
                    .serve(&req, move |_req| {
                        let n = builds.bump();
                        async move {
                            assert!(n != 2, "the refresh panics (expected by the test)");
                            format!("v{n}")
                        }
                    })
                    .await
            }
        })
    }))
    .await;

    assert_eq!(call(&app, get!("/p")).await.body, "v1");
    clock.advance(31 * SECOND);
    assert_eq!(call(&app, get!("/p")).await.x_cache(), "stale");
    until("the refresh failure to be counted", || {
        cache.stats().refresh_failures == 1
    })
    .await;
    // The panicked refresh released its claim: the next stale read refreshes again.
    let res = call(&app, get!("/p")).await;
    assert_eq!((res.x_cache(), res.body.as_str()), ("stale", "v1"));
    until("the second refresh", || cache.stats().builds == 2).await;
    let res = call(&app, get!("/p")).await;
    assert_eq!((res.x_cache(), res.body.as_str()), ("hit", "v3"));
}

#[actix_rt::test]
async fn request_no_store_bypasses_and_request_no_cache_refreshes() {
    let cache = ResponseCache::ttl("ttl-request-directives", TTL)
        .clock(ManualClock::new())
        .build();
    let (arrived, builds, gate) = (Counter::default(), Counter::default(), Gate::new());
    let app = test::init_service(App::new().route(
        "/d",
        gated_route(&cache, &arrived, &builds, &gate, |_| false),
    ))
    .await;
    let with_cc = |value: &'static str| {
        TestRequest::get()
            .uri("/d")
            .insert_header((header::CACHE_CONTROL, value))
            .to_request()
    };
    let res: Res = call(&app, with_cc("no-store")).await;
    assert_eq!((res.x_cache(), res.body.as_str()), ("bypass", "v1"));
    assert_eq!(
        call(&app, get!("/d")).await.body,
        "v2",
        "no-store was not stored"
    );
    assert_eq!(call(&app, get!("/d")).await.x_cache(), "hit");
    assert_eq!(call(&app, with_cc("no-cache")).await.body, "v3");
}

// ---------------------------------------------------------------------------------------------
// Forced refresh
// ---------------------------------------------------------------------------------------------

#[actix_rt::test]
async fn refresh_true_and_no_cache_force_a_rebuild_of_the_plain_url_entry() {
    let cache = ResponseCache::ttl("forced", TTL)
        .clock(ManualClock::new())
        .build();
    let (arrived, builds, gate) = (Counter::default(), Counter::default(), Gate::new());
    let app = test::init_service(App::new().route(
        "/f",
        gated_route(&cache, &arrived, &builds, &gate, |_| false),
    ))
    .await;
    let body = |res: &Res| (res.x_cache().to_owned(), res.body.clone());
    let pair = |label: &str, body: &str| (label.to_owned(), body.to_owned());

    assert_eq!(body(&call(&app, get!("/f?x=1")).await), pair("miss", "v1"));
    assert_eq!(body(&call(&app, get!("/f?x=1")).await), pair("hit", "v1"));
    let res = call(&app, get!("/f?x=1&refresh=true")).await;
    assert_eq!(body(&res), pair("miss", "v2"));
    // `refresh=true` is not part of the key: the plain URL now serves the rebuilt entry.
    assert_eq!(body(&call(&app, get!("/f?x=1")).await), pair("hit", "v2"));
    assert_eq!(
        body(&call(&app, get!("/f?refresh=true&x=1")).await),
        pair("miss", "v3")
    );
    assert_eq!(body(&call(&app, get!("/f?x=1")).await), pair("hit", "v3"));

    let no_cache = TestRequest::get()
        .uri("/f?x=1")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .to_request();
    assert_eq!(body(&call(&app, no_cache).await), pair("miss", "v4"));
    assert_eq!(body(&call(&app, get!("/f?x=1")).await), pair("hit", "v4"));
    assert_eq!(builds.get(), 4);

    // Other values of `refresh` are ordinary query parameters: a key of their own.
    assert_eq!(
        body(&call(&app, get!("/f?x=1&refresh=false")).await),
        pair("miss", "v5")
    );
}

#[actix_rt::test]
async fn forced_refresh_can_be_turned_off() {
    let cache = ResponseCache::ttl("forced-off", TTL)
        .clock(ManualClock::new())
        .forced_refresh(false)
        .build();
    let (arrived, builds, gate) = (Counter::default(), Counter::default(), Gate::new());
    let app = test::init_service(App::new().route(
        "/f",
        gated_route(&cache, &arrived, &builds, &gate, |_| false),
    ))
    .await;
    assert_eq!(call(&app, get!("/f")).await.x_cache(), "miss");
    // `refresh=true` is then an ordinary query parameter: a URL (and key) of its own.
    let res = call(&app, get!("/f?refresh=true")).await;
    assert_eq!((res.x_cache(), res.body.as_str()), ("miss", "v2"));
    let res = call(&app, get!("/f?refresh=true")).await;
    assert_eq!((res.x_cache(), res.body.as_str()), ("hit", "v2"));
    let no_cache = TestRequest::get()
        .uri("/f")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .to_request();
    assert_eq!(call(&app, no_cache).await.x_cache(), "hit");
    assert_eq!(builds.get(), 2);
}

/// Never stale on arrival, and stale bytes stale downstream too (RFC 9111 §4.2, RFC 5861 §4):
/// `Age` is honest, fresh hits declare a lifetime covering it (up to what is left here), and
/// stale answers keep theirs with a stale window covering the rest, so no cache after this
/// one counts freshness twice or stores a response with a negative TTL.
#[actix_rt::test]
async fn served_entries_declare_a_lifetime_that_covers_their_age() {
    let clock = ManualClock::new();
    let cache = ResponseCache::ttl("ttl-stale-age", Duration::from_secs(30))
        .max_stale(Duration::from_secs(40))
        .clock(clock.clone())
        .build();
    let app = test::init_service(App::new().route(
        "/a",
        web::get().to({
            let cache = cache.clone();
            move |req: HttpRequest| {
                let cache = cache.clone();
                async move {
                    cache
                        .serve(&req, |_req| async {
                            HttpResponse::Ok()
                                .insert_header((header::CACHE_CONTROL, "public, max-age=15"))
                                .body("a")
                        })
                        .await
                }
            }
        }),
    ))
    .await;
    let cc = |res: &Res| res.header("cache-control").unwrap().to_owned();
    let res = call(&app, get!("/a")).await;
    assert_eq!(res.x_cache(), "miss");
    assert_eq!(
        cc(&res),
        "public, max-age=15",
        "a fresh build goes out as declared"
    );
    clock.advance(Duration::from_secs(5));
    let res = call(&app, get!("/a")).await;
    // 5 s old, 25 s fresh left here: 15 s more downstream.
    assert_eq!((res.x_cache(), res.age()), ("hit", 5));
    assert_eq!(cc(&res), "public, max-age=20");
    clock.advance(Duration::from_secs(15));
    let res = call(&app, get!("/a")).await;
    // 20 s old (past the declared 15), 10 s fresh left here: 20 + 10.
    assert_eq!((res.x_cache(), res.age()), ("hit", 20));
    assert_eq!(cc(&res), "public, max-age=30");
    clock.advance(Duration::from_secs(11));
    let res = call(&app, get!("/a")).await;
    // 31 s old, stale here for 39 s more: stale downstream too (its lifetime is kept), and
    // servable while revalidating for 16 s past it + the 39 s.
    assert_eq!((res.x_cache(), res.age()), ("stale", 31));
    assert_eq!(cc(&res), "public, max-age=15, stale-while-revalidate=55");
}

/// A route whose builds answer with the status `status_of(n)` (after `gate` when n > 1).
fn status_route(
    cache: &ResponseCache,
    builds: &Counter,
    gate: &Gate,
    status_of: fn(usize) -> StatusCode,
) -> actix_web::Route {
    let (cache, builds, gate) = (cache.clone(), builds.clone(), gate.clone());
    web::get().to(move |req: HttpRequest| {
        let (cache, builds, gate) = (cache.clone(), builds.clone(), gate.clone());
        async move {
            cache
                .serve(&req, move |_req| {
                    let n = builds.bump();
                    let gate = gate.clone();
                    async move {
                        if n > 1 {
                            gate.pass().await;
                        }
                        HttpResponse::build(status_of(n)).body(format!("v{n}"))
                    }
                })
                .await
        }
    })
}

/// A refresh answered 429 (or 408) is a transient failure like a 5xx: the stale bytes stay.
#[actix_rt::test]
async fn a_refresh_answered_429_keeps_the_stale_bytes() {
    let clock = ManualClock::new();
    let cache = ResponseCache::ttl("ttl-429", TTL)
        .clock(clock.clone())
        .build();
    let (builds, gate) = (Counter::default(), Gate::new());
    let app = test::init_service(App::new().route(
        "/r",
        status_route(&cache, &builds, &gate, |n| {
            if n == 1 {
                StatusCode::OK
            } else {
                StatusCode::TOO_MANY_REQUESTS
            }
        }),
    ))
    .await;
    assert_eq!(call(&app, get!("/r")).await.x_cache(), "miss");
    clock.advance(TTL + SECOND_TTL);
    gate.open();
    assert_eq!(call(&app, get!("/r")).await.x_cache(), "stale");
    until("the failed refresh", || cache.stats().refresh_failures == 1).await;
    let res = call(&app, get!("/r")).await;
    assert_eq!(
        (res.status, res.x_cache(), res.body.as_str()),
        (StatusCode::OK, "stale", "v1")
    );
}

/// A request that joins a refresh after the stale window closed gets the refresh's error,
/// not bytes older than `max_stale` allows, even though the refresh started inside the window.
#[actix_rt::test]
async fn a_refresh_that_ends_past_the_stale_window_does_not_serve_stale() {
    let clock = ManualClock::new();
    let cache = ResponseCache::ttl("ttl-window-end", TTL)
        .max_stale(10 * SECOND_TTL)
        .clock(clock.clone())
        .build();
    let (builds, gate) = (Counter::default(), Gate::new());
    let app = test::init_service(App::new().route(
        "/w",
        status_route(&cache, &builds, &gate, |n| {
            if n == 1 {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }),
    ))
    .await;
    assert_eq!(call(&app, get!("/w")).await.x_cache(), "miss");
    // t = 35 s: stale; the background refresh starts and blocks on the gate.
    clock.advance(TTL + 5 * SECOND_TTL);
    assert_eq!(call(&app, get!("/w")).await.x_cache(), "stale");
    until("the refresh started", || builds.get() == 2).await;
    // t = 50 s: past ttl + max_stale; this request waits for the running refresh.
    clock.advance(15 * SECOND_TTL);
    let app = std::rc::Rc::new(app);
    let late = support::spawn_call(&app, get!("/w"));
    actix_rt::task::yield_now().await;
    gate.open();
    let res = support::joined(late).await;
    // It joined the refresh (`coalesced`) and got its error, not the 50 s old bytes.
    assert_eq!(
        (res.status, res.x_cache()),
        (StatusCode::SERVICE_UNAVAILABLE, "coalesced")
    );
    assert_eq!(builds.get(), 2);
}

const SECOND_TTL: Duration = Duration::from_secs(1);
