//! What a `ResponseCache` must never share. Every handler here echoes a per-request marker (a
//! counter, the caller's `Authorization`, its `Accept-Language`), so a response served to the
//! wrong request shows: the second of two requests must get its own marker and no `hit`.

use actix_conditional::response_cache::{ManualClock, ResponseCache};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::test::{self, TestRequest};
use actix_web::{App, HttpRequest, HttpResponse, web};
use bytes::Bytes;
use futures_util::stream;

#[path = "common/response_cache.rs"]
#[macro_use]
mod support;

use support::{Counter, Gate, Res, TTL, call, joined, spawn_call, until};

fn cache(name: &str) -> ResponseCache {
    ResponseCache::ttl(name, TTL)
        .clock(ManualClock::new())
        .build()
}

fn header_str(req: &HttpRequest, name: header::HeaderName) -> String {
    req.headers()
        .get(name)
        .map_or("-", |v| v.to_str().unwrap())
        .to_owned()
}

/// `/echo` through `serve()`: `"<n> auth=<Authorization> cookie=<Cookie>"`.
fn echo_route(cache: &ResponseCache, builds: &Counter) -> actix_web::Route {
    let (cache, builds) = (cache.clone(), builds.clone());
    web::get().to(move |req: HttpRequest| {
        let (cache, builds) = (cache.clone(), builds.clone());
        async move {
            cache
                .serve(&req, move |req: HttpRequest| {
                    let n = builds.bump();
                    async move {
                        format!(
                            "{n} auth={} cookie={}",
                            header_str(&req, header::AUTHORIZATION),
                            header_str(&req, header::COOKIE)
                        )
                    }
                })
                .await
        }
    })
}

/// A request header, for `req!`.
fn with(name: header::HeaderName, value: &'static str) -> (header::HeaderName, &'static str) {
    (name, value)
}

/// A GET of `uri` with the given `with(name, value)` headers.
macro_rules! req {
    ($uri:expr $(, $header:expr)*) => {
        TestRequest::get().uri($uri)$(.insert_header($header))*.to_request()
    };
}

// ---------------------------------------------------------------------------------------------
// Requests with credentials
// ---------------------------------------------------------------------------------------------

#[actix_rt::test]
async fn requests_with_authorization_or_cookie_bypass_the_cache() {
    let cache = cache("privacy-credentials");
    let builds = Counter::default();
    let app = test::init_service(App::new().route("/echo", echo_route(&cache, &builds))).await;

    // A shared entry exists …
    let res = call(&app, req!("/echo")).await;
    assert_eq!(
        (res.x_cache(), res.body.as_str()),
        ("miss", "1 auth=- cookie=-")
    );
    // … but credentialed requests never see it, nor each other's answers.
    let cases = [
        (
            with(header::AUTHORIZATION, "Bearer alice"),
            "auth=Bearer alice cookie=-",
        ),
        (
            with(header::AUTHORIZATION, "Bearer bob"),
            "auth=Bearer bob cookie=-",
        ),
        (
            with(header::AUTHORIZATION, "Bearer alice"),
            "auth=Bearer alice cookie=-",
        ),
        (
            with(header::COOKIE, "session=alice"),
            "auth=- cookie=session=alice",
        ),
        (
            with(header::COOKIE, "session=bob"),
            "auth=- cookie=session=bob",
        ),
        (
            with(header::COOKIE, "session=alice"),
            "auth=- cookie=session=alice",
        ),
    ];
    for (i, (marker, expected)) in cases.into_iter().enumerate() {
        let res = call(&app, req!("/echo", marker)).await;
        assert_eq!(res.x_cache(), "bypass");
        assert_eq!(res.body, format!("{} {expected}", i + 2));
    }
    assert_eq!(builds.get(), 7);
    // Nothing they got was stored for anyone.
    let res = call(&app, req!("/echo")).await;
    assert_eq!(
        (res.x_cache(), res.body.as_str()),
        ("hit", "1 auth=- cookie=-")
    );
    assert_eq!(cache.stats().bypasses, 6);
}

#[actix_rt::test]
async fn key_by_gives_each_user_an_entry_of_their_own() {
    let cache = ResponseCache::ttl("privacy-key-by", TTL)
        .clock(ManualClock::new())
        .key_by(|req| {
            req.headers()
                .get(header::AUTHORIZATION)?
                .to_str()
                .ok()?
                .strip_prefix("User ")
                .map(str::to_owned)
        })
        .build();
    let builds = Counter::default();
    let app = test::init_service(App::new().route("/echo", echo_route(&cache, &builds))).await;
    let alice = || req!("/echo", with(header::AUTHORIZATION, "User alice"));
    let bob = || req!("/echo", with(header::AUTHORIZATION, "User bob"));

    let res = call(&app, alice()).await;
    assert_eq!(
        (res.x_cache(), res.body.as_str()),
        ("miss", "1 auth=User alice cookie=-")
    );
    let res = call(&app, bob()).await;
    assert_eq!(
        (res.x_cache(), res.body.as_str()),
        ("miss", "2 auth=User bob cookie=-")
    );
    for _ in 0..2 {
        let res = call(&app, alice()).await;
        assert_eq!(
            (res.x_cache(), res.body.as_str()),
            ("hit", "1 auth=User alice cookie=-")
        );
        let res = call(&app, bob()).await;
        assert_eq!(
            (res.x_cache(), res.body.as_str()),
            ("hit", "2 auth=User bob cookie=-")
        );
    }
    // Anonymous requests share their own entry, never a user's.
    let res = call(&app, req!("/echo")).await;
    assert_eq!(
        (res.x_cache(), res.body.as_str()),
        ("miss", "3 auth=- cookie=-")
    );
    assert_eq!(call(&app, req!("/echo")).await.x_cache(), "hit");
    // Credentials the key function does not recognise bypass the cache.
    let res = call(
        &app,
        req!("/echo", with(header::AUTHORIZATION, "Bearer ???")),
    )
    .await;
    assert_eq!(
        (res.x_cache(), res.body.as_str()),
        ("bypass", "4 auth=Bearer ??? cookie=-")
    );
    assert_eq!(builds.get(), 4);
}

#[actix_rt::test]
async fn key_by_stores_private_responses_per_user_but_never_in_the_shared_entry() {
    let cache = ResponseCache::ttl("privacy-key-by-private", TTL)
        .clock(ManualClock::new())
        .key_by(|req| {
            let auth = req.headers().get(header::AUTHORIZATION)?;
            Some(auth.to_str().ok()?.to_owned())
        })
        .build();
    let builds = Counter::default();
    let app = test::init_service(App::new().route("/me", {
        let (cache, builds) = (cache.clone(), builds.clone());
        web::get().to(move |req: HttpRequest| {
            let (cache, builds) = (cache.clone(), builds.clone());
            async move {
                cache
                    .serve(&req, move |req: HttpRequest| {
                        let n = builds.bump();
                        async move {
                            HttpResponse::Ok()
                                .insert_header((header::CACHE_CONTROL, "private, max-age=60"))
                                .body(format!(
                                    "{n} for {}",
                                    header_str(&req, header::AUTHORIZATION)
                                ))
                        }
                    })
                    .await
            }
        })
    }))
    .await;
    let alice = || req!("/me", with(header::AUTHORIZATION, "alice"));

    assert_eq!(call(&app, alice()).await.body, "1 for alice");
    let res = call(&app, alice()).await;
    assert_eq!((res.x_cache(), res.body.as_str()), ("hit", "1 for alice"));
    // `private` without a user key (an anonymous request) is not shared between requests.
    let res = call(&app, req!("/me")).await;
    assert_eq!((res.x_cache(), res.body.as_str()), ("miss", "2 for -"));
    let res = call(&app, req!("/me")).await;
    assert_eq!(res.body, "3 for -", "{res:?}");
    assert_ne!(res.x_cache(), "hit");
}

// ---------------------------------------------------------------------------------------------
// Responses that must not be stored
// ---------------------------------------------------------------------------------------------

/// `/r/{case}` through `serve()` (`max_entry_bytes` 64): a `200` with `<n>` in the body,
/// except for what `case` names.
fn case_route(cache: &ResponseCache, builds: &Counter) -> actix_web::Route {
    let (cache, builds) = (cache.clone(), builds.clone());
    web::get().to(move |req: HttpRequest| {
        let (cache, builds) = (cache.clone(), builds.clone());
        async move {
            cache
                .serve(&req, move |req: HttpRequest| {
                    let n = builds.bump();
                    let case = req.match_info().get("case").unwrap().to_owned();
                    async move { case_response(&case, n) }
                })
                .await
        }
    })
}

fn case_response(case: &str, n: usize) -> HttpResponse {
    let body = format!("marker {n}");
    let cc = |value: &'static str| {
        HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, value))
            .body(body.clone())
    };
    match case {
        "set-cookie" => HttpResponse::Ok()
            .insert_header((header::SET_COOKIE, format!("session={n}")))
            .body(body),
        "private" => cc("private, max-age=60"),
        "no-store" => cc("no-store"),
        "no-cache" => cc("no-cache"),
        "vary-star" => HttpResponse::Ok()
            .insert_header((header::VARY, "*"))
            .body(body),
        "not-found" => HttpResponse::NotFound().body(body),
        "created" => HttpResponse::Created().body(body),
        "partial" => HttpResponse::PartialContent().body(body),
        "redirect" => HttpResponse::MovedPermanently()
            .insert_header((header::LOCATION, format!("/to/{n}")))
            .body(body),
        "streaming" => HttpResponse::Ok()
            .streaming(stream::iter([Ok::<_, actix_web::Error>(Bytes::from(body))])),
        "too-big" => HttpResponse::Ok().body(format!("{body} {}", "x".repeat(100))),
        "plain" => HttpResponse::Ok().body(body),
        other => panic!("no case {other}"),
    }
}

#[actix_rt::test]
async fn unshareable_responses_are_never_served_to_another_request() {
    let cache = ResponseCache::ttl("privacy-responses", TTL)
        .clock(ManualClock::new())
        .max_entry_bytes(64)
        .build();
    let builds = Counter::default();
    let app = test::init_service(App::new().route("/r/{case}", case_route(&cache, &builds))).await;

    let cases = [
        ("set-cookie", StatusCode::OK),
        ("private", StatusCode::OK),
        ("no-store", StatusCode::OK),
        ("no-cache", StatusCode::OK),
        ("vary-star", StatusCode::OK),
        ("not-found", StatusCode::NOT_FOUND),
        ("created", StatusCode::CREATED),
        ("partial", StatusCode::PARTIAL_CONTENT),
        ("redirect", StatusCode::MOVED_PERMANENTLY),
        ("streaming", StatusCode::OK),
        ("too-big", StatusCode::OK),
    ];
    for (case, status) in cases {
        let uri = format!("/r/{case}");
        let first: Res = call(&app, req!(&uri)).await;
        let second: Res = call(&app, req!(&uri)).await;
        for res in [&first, &second] {
            assert_eq!(res.status, status, "{case}: {res:?}");
            assert_eq!(res.x_cache(), "miss", "{case}: {res:?}");
        }
        assert!(
            first.body.starts_with("marker "),
            "{case}: the body is served whole"
        );
        assert_ne!(
            first.body, second.body,
            "{case}: the second request got the first's response"
        );
        if case == "set-cookie" {
            assert_ne!(first.header("set-cookie"), second.header("set-cookie"));
        }
        if case == "too-big" {
            assert_eq!(second.body.len(), "marker NN ".len() + 100);
        }
    }
    assert_eq!(builds.get(), 2 * cases.len());

    // The control: a plain 200 is shared.
    assert_eq!(call(&app, req!("/r/plain")).await.x_cache(), "miss");
    assert_eq!(call(&app, req!("/r/plain")).await.x_cache(), "hit");
}

#[actix_rt::test]
async fn a_coalesced_waiter_never_receives_the_leaders_set_cookie_response() {
    let cache = cache("privacy-coalesced-cookie");
    let (arrived, builds, gate) = (Counter::default(), Counter::default(), Gate::new());
    let app = std::rc::Rc::new(
        test::init_service(App::new().route("/login", {
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
                                }
                                HttpResponse::Ok()
                                    .insert_header((header::SET_COOKIE, format!("session=user{n}")))
                                    .body(format!("welcome user{n}"))
                            }
                        })
                        .await
                }
            })
        }))
        .await,
    );

    let leader = spawn_call(&app, req!("/login"));
    until("the leader's build", || builds.get() == 1).await;
    let waiters: Vec<_> = (0..4).map(|_| spawn_call(&app, req!("/login"))).collect();
    until("the waiters", || arrived.get() == 5).await;
    gate.open();

    let leader = joined(leader).await;
    assert_eq!(leader.header("set-cookie"), Some("session=user1"));
    assert_eq!(leader.body, "welcome user1");
    let mut bodies = Vec::new();
    for w in waiters {
        let res = joined(w).await;
        assert_eq!(res.x_cache(), "miss", "{res:?}");
        assert_ne!(res.body, "welcome user1");
        assert_ne!(res.header("set-cookie"), Some("session=user1"));
        assert_eq!(
            res.header("set-cookie")
                .map(|c| c.replace("session=", "welcome ")),
            Some(res.body.clone())
        );
        bodies.push(res.body);
    }
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies.len(), 4, "each waiter ran its own request");
    assert_eq!(builds.get(), 5);
    // The key stays uncached for later requests too.
    let res = call(&*app, req!("/login")).await;
    assert_eq!(
        (res.x_cache(), res.body.as_str()),
        ("miss", "welcome user6")
    );
}

// ---------------------------------------------------------------------------------------------
// Vary
// ---------------------------------------------------------------------------------------------

/// `/greeting` through `serve()`: `"<Accept-Language> <n>"`, `Vary: Accept-Language`; the
/// build of `blocks(n)` waits at the gate.
fn greeting_route(
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
                .serve(&req, move |req: HttpRequest| {
                    let n = builds.bump();
                    let gate = gate.clone();
                    async move {
                        if blocks(n) {
                            gate.pass().await;
                        }
                        HttpResponse::Ok()
                            .insert_header((
                                header::VARY,
                                HeaderValue::from_static("Accept-Language"),
                            ))
                            .body(format!("{} {n}", header_str(&req, header::ACCEPT_LANGUAGE)))
                    }
                })
                .await
        }
    })
}

#[actix_rt::test]
async fn each_accept_language_gets_its_own_variant() {
    let cache = cache("privacy-vary");
    let (arrived, builds, gate) = (Counter::default(), Counter::default(), Gate::new());
    let app = test::init_service(App::new().route(
        "/greeting",
        greeting_route(&cache, &arrived, &builds, &gate, |_| false),
    ))
    .await;
    let lang = |l: &'static str| req!("/greeting", with(header::ACCEPT_LANGUAGE, l));

    let res = call(&app, lang("fr")).await;
    assert_eq!((res.x_cache(), res.body.as_str()), ("miss", "fr 1"));
    let res = call(&app, lang("de")).await;
    assert_eq!((res.x_cache(), res.body.as_str()), ("miss", "de 2"));
    for _ in 0..2 {
        let res = call(&app, lang("fr")).await;
        assert_eq!((res.x_cache(), res.body.as_str()), ("hit", "fr 1"));
        let res = call(&app, lang("de")).await;
        assert_eq!((res.x_cache(), res.body.as_str()), ("hit", "de 2"));
    }
    let res = call(&app, req!("/greeting")).await;
    assert_eq!((res.x_cache(), res.body.as_str()), ("miss", "- 3"));
    assert_eq!(call(&app, req!("/greeting")).await.body, "- 3");
    assert_eq!(builds.get(), 3);
}

#[actix_rt::test]
async fn a_waiter_for_another_language_does_not_get_the_leaders_variant() {
    let cache = cache("privacy-vary-coalesced");
    let (arrived, builds, gate) = (Counter::default(), Counter::default(), Gate::new());
    let app = std::rc::Rc::new(
        test::init_service(App::new().route(
            "/greeting",
            greeting_route(&cache, &arrived, &builds, &gate, |n| n == 1),
        ))
        .await,
    );
    let lang = |l: &'static str| req!("/greeting", with(header::ACCEPT_LANGUAGE, l));

    // Cold: the Vary is not known yet, so fr and de join one flight.
    let fr = spawn_call(&app, lang("fr"));
    until("the fr build", || builds.get() == 1).await;
    let de = spawn_call(&app, lang("de"));
    let fr2 = spawn_call(&app, lang("fr"));
    until("the waiters", || arrived.get() == 3).await;
    gate.open();

    let fr = joined(fr).await;
    assert_eq!((fr.x_cache(), fr.body.as_str()), ("miss", "fr 1"));
    let de = joined(de).await;
    assert_eq!(de.body, "de 2", "{de:?}");
    assert_eq!(de.x_cache(), "miss");
    let fr2 = joined(fr2).await;
    assert_eq!((fr2.x_cache(), fr2.body.as_str()), ("coalesced", "fr 1"));
    // And the fr variant is what was stored under fr only.
    assert_eq!(call(&*app, lang("fr")).await.x_cache(), "hit");
    let res = call(&*app, lang("de")).await;
    assert_eq!((res.x_cache(), res.body.as_str()), ("miss", "de 3"));
}

/// `/public` through `serve()`: `public, max-age=15`, the body naming the caller's cookie.
fn public_route(cache: &ResponseCache) -> actix_web::Route {
    let cache = cache.clone();
    web::get().to(move |req: HttpRequest| {
        let cache = cache.clone();
        async move {
            cache
                .serve(&req, |req: HttpRequest| async move {
                    HttpResponse::Ok()
                        .insert_header((header::CACHE_CONTROL, "public, max-age=15"))
                        .body(header_str(&req, header::COOKIE))
                })
                .await
        }
    })
}

/// Privacy downstream = privacy here: an answer the cache would not share because of the
/// request's credentials goes out `private`, so Squid or a CDN in front does not share it
/// either (observed: Squid stored an answer to a request with a session cookie and served it
/// to the next client without one). Cookieless answers stay public.
#[actix_rt::test]
async fn answers_bypassed_for_credentials_are_private_downstream() {
    let cache = cache("privacy-downstream");
    let app = test::init_service(App::new().route("/public", public_route(&cache))).await;
    for (name, value) in [
        (header::COOKIE, "session=alice"),
        (header::AUTHORIZATION, "Bearer alice"),
    ] {
        let res = call(&app, req!("/public", with(name.clone(), value))).await;
        assert_eq!(res.x_cache(), "bypass", "{name}");
        assert_eq!(
            res.header("cache-control"),
            Some("max-age=15, private"),
            "{name}"
        );
    }
    let res = call(&app, get!("/public")).await;
    assert_eq!(res.x_cache(), "miss");
    assert_eq!(res.header("cache-control"), Some("public, max-age=15"));
    // Shared with every anonymous client, never with a request that has credentials: the
    // cache would not have given it to one either.
    assert_eq!(res.header("vary"), Some("Cookie, Authorization"));
    let hit = call(&app, get!("/public")).await;
    assert_eq!(hit.x_cache(), "hit");
    assert_eq!(hit.header("vary"), Some("Cookie, Authorization"));
}

/// Opted in (`vary_credentials`), an explicitly public answer keeps `public` and varies on the
/// credentials it was bypassed for, so downstream shares it only among the same cookie.
#[actix_rt::test]
async fn vary_credentials_keeps_public_answers_public_but_varying_on_the_cookie() {
    let cache = ResponseCache::ttl("privacy-vary", TTL)
        .clock(ManualClock::new())
        .vary_credentials(true)
        .build();
    let app = test::init_service(App::new().route("/public", public_route(&cache))).await;
    let res = call(&app, req!("/public", with(header::COOKIE, "theme=dark"))).await;
    assert_eq!(res.x_cache(), "bypass");
    assert_eq!(res.header("cache-control"), Some("public, max-age=15"));
    assert_eq!(res.header("vary"), Some("Cookie"));
}

/// `Cache-Status` is on every answer the cache handles, `X-Cache` only when asked for, and
/// the key only when asked for.
#[actix_rt::test]
async fn x_cache_and_the_key_are_opt_in() {
    let quiet = cache("status-quiet");
    let loud = ResponseCache::ttl("status-loud", TTL)
        .clock(ManualClock::new())
        .x_cache(true)
        .cache_status_key(true)
        .build();
    let app = test::init_service(
        App::new()
            .route("/quiet", public_route(&quiet))
            .route("/loud", public_route(&loud)),
    )
    .await;
    let res = call(&app, get!("/quiet")).await;
    assert_eq!(res.header("x-cache"), None);
    let member = support::cache_status::ours(
        res.headers
            .get_all("cache-status")
            .map(|v| v.to_str().unwrap()),
    )
    .unwrap();
    assert_eq!(member.param("fwd"), Some("miss"));
    assert_eq!(member.param("fwd-status"), Some("200"));
    assert!(member.has("stored") && !member.has("key"), "{member:?}");

    let res = call(&app, get!("/loud")).await;
    assert_eq!(res.header("x-cache"), Some("miss"));
    let res = call(&app, get!("/loud")).await;
    assert_eq!(res.header("x-cache"), Some("hit"));
    let member = support::cache_status::ours(
        res.headers
            .get_all("cache-status")
            .map(|v| v.to_str().unwrap()),
    )
    .unwrap();
    assert_eq!(member.param("hit"), Some("?1"));
    assert_eq!(member.param("ttl"), Some("30"));
    assert!(
        member.param("key").is_some_and(|key| key.contains("/loud")),
        "{member:?}"
    );
}

/// A `key_by` cache stores each user's answers under their own key; downstream, they are
/// that user's alone too: `private` on their misses and hits (a CDN in front must not hand
/// Alice's copy to Bob), as on a credentialed request the key function rejects. The cache key
/// in `Cache-Status` never shows a user.
#[actix_rt::test]
async fn key_by_answers_are_private_downstream_and_never_show_the_user_in_the_key() {
    let cache = ResponseCache::ttl("privacy-key-by-downstream", TTL)
        .clock(ManualClock::new())
        .cache_status_key(true)
        .key_by(|req| {
            req.headers()
                .get(header::AUTHORIZATION)?
                .to_str()
                .ok()?
                .strip_prefix("User ")
                .map(str::to_owned)
        })
        .build();
    let app = test::init_service(App::new().route("/public", public_route(&cache))).await;
    let alice = || req!("/public", with(header::AUTHORIZATION, "User alice"));
    for expected in ["miss", "hit"] {
        let res = call(&app, alice()).await;
        assert_eq!(res.x_cache(), expected);
        assert_eq!(res.header("cache-control"), Some("max-age=15, private"));
        let member = support::cache_status::ours(
            res.headers
                .get_all("cache-status")
                .map(|v| v.to_str().unwrap()),
        )
        .unwrap();
        assert!(!member.has("key"), "{member:?}");
    }
    // Credentials the key function rejects: bypassed, and private downstream.
    let res = call(
        &app,
        req!("/public", with(header::AUTHORIZATION, "Bearer ???")),
    )
    .await;
    assert_eq!(res.x_cache(), "bypass");
    assert_eq!(res.header("cache-control"), Some("max-age=15, private"));
    // Anonymous: shared, with its key shown, but never to a credentialed request downstream.
    let res = call(&app, get!("/public")).await;
    assert_eq!(res.header("cache-control"), Some("public, max-age=15"));
    assert_eq!(res.header("vary"), Some("Cookie, Authorization"));
    let member = support::cache_status::ours(
        res.headers
            .get_all("cache-status")
            .map(|v| v.to_str().unwrap()),
    )
    .unwrap();
    assert!(
        member
            .param("key")
            .is_some_and(|key| key.ends_with("/public")),
        "{member:?}"
    );
}
