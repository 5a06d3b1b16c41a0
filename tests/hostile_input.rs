//! Hostile input over real HTTP: giant and malformed `If-None-Match`, `If-Modified-Since`,
//! `Cache-Control` and query strings; handler-set validators with CR/LF or quotes; cache-key
//! poisoning through request headers the response does not `Vary` on.
//!
//! Against the viewsets example (ConditionalGet, Compress, its response caches) and a small
//! app of hostile validators. Every answer must be the RFC's or a 4xx, never a 5xx or a hang:
//! each request has a time bound, and the server must still answer normally afterwards.
//! The parsers' own property tests live beside them; `bash .ci/hostile` runs them with 100k
//! cases each.

use std::time::{Duration, Instant};

use actix_conditional::condition::{HandlerPolicy, RequestValidators};
use actix_conditional::response_cache::ResponseCache;
use actix_conditional::{CachePolicy, ConditionalGet};
use actix_web::{App, HttpRequest, HttpResponse, web};

#[path = "common/http.rs"]
mod http;

#[path = "../examples/viewsets.rs"]
#[allow(dead_code, unreachable_pub)]
mod viewsets;

#[path = "common/example.rs"]
mod example;

use example::Example;

/// No single hostile request may take longer than this.
const BOUND: Duration = Duration::from_secs(1);

/// Sends one request on a fresh connection; checks the time bound and that it is no 5xx.
fn send(app: &Example, path: &str, headers: &[(&str, &[u8])]) -> http::Response {
    let started = Instant::now();
    let res = app.server.connect().send("GET", path, headers, None);
    let took = started.elapsed();
    assert!(took < BOUND, "{path} took {took:?}");
    assert!(res.status < 500, "{path} {headers:?}: {res:?}");
    res
}

#[test]
fn giant_and_malformed_conditional_headers_get_the_rfc_answer_or_a_4xx() {
    let app = Example::start("conditionals");
    let good = send(&app, "/uploads", &[]);
    assert_eq!(good.status, 200);
    let etag = good.etag().to_owned();

    let many_tags: String = (0..9000).map(|i| format!("\"t{i}\", ")).collect();
    let many_tags_then_match = format!("{many_tags}{etag}");
    let commas = ",".repeat(100_000);
    let long_tag = format!("\"{}\"", "x".repeat(100_000));
    // Each case with the answers RFC 9110 §13 allows: invalid members and dates are ignored
    // (a 200, never a 304 that nothing matched), a failed `If-Match` is a 412, bytes HTTP/1.1
    // forbids are refused by actix (400).
    const OK: &[u16] = &[200];
    let hostile: Vec<(&str, Vec<u8>, &[u16])> = vec![
        ("If-None-Match", many_tags.clone().into_bytes(), OK),
        // A match at the end of a long list, unless the list is refused as too large.
        (
            "If-None-Match",
            many_tags_then_match.clone().into_bytes(),
            &[200, 304],
        ),
        ("If-None-Match", commas.clone().into_bytes(), OK),
        ("If-None-Match", long_tag.into_bytes(), OK),
        ("If-None-Match", b"\"unterminated".to_vec(), OK),
        ("If-None-Match", b"W/".to_vec(), OK),
        ("If-None-Match", b"w/\"lowercase-weak\"".to_vec(), OK),
        ("If-None-Match", b"\x80\xff\xfe".to_vec(), OK),
        ("If-None-Match", b"*, \"a\"".to_vec(), OK),
        ("If-Match", many_tags.into_bytes(), &[412]),
        (
            "If-Modified-Since",
            b"Sun, 06 Nov 99999 08:49:37 GMT".to_vec(),
            OK,
        ),
        ("If-Modified-Since", b"9999999999999999999999".to_vec(), OK),
        ("If-Modified-Since", b"-1".to_vec(), OK),
        (
            "If-Modified-Since",
            "Sun, 06 Nov 1994 08:49:37 GMT, ".repeat(2000).into_bytes(),
            OK,
        ),
        ("If-Unmodified-Since", b"\x00garbage".to_vec(), &[400]),
        ("If-Unmodified-Since", b"garbage".to_vec(), OK),
        (
            "Cache-Control",
            b"max-age=99999999999999999999999".to_vec(),
            OK,
        ),
        ("Cache-Control", b"no-cache=\"".to_vec(), OK),
        ("Cache-Control", commas.into_bytes(), OK),
        ("Cache-Control", "max-age=1, ".repeat(5000).into_bytes(), OK),
    ];
    for path in ["/uploads", "/challenges/active", "/state/summary"] {
        for (name, value, allowed) in &hostile {
            let res = send(&app, path, &[(name, value.as_slice())]);
            assert!(
                allowed.contains(&res.status),
                "{path} {name} ({} bytes): {} not in {allowed:?}",
                value.len(),
                res.status
            );
        }
    }
    // A matching tag at the end of a long list is still a match (RFC 9110 §13.1.2), or the
    // list was refused as too large: a 200, never a wrong 304.
    let res = send(
        &app,
        "/uploads",
        &[("If-None-Match", many_tags_then_match.as_bytes())],
    );
    assert!(matches!(res.status, 200 | 304), "{}", res.status);
    // And the server still answers normally.
    let res = send(&app, "/uploads", &[("If-None-Match", etag.as_bytes())]);
    assert_eq!(res.status, 304);
}

#[test]
fn giant_and_odd_query_strings_are_answered_and_bounded() {
    let app = Example::start("queries");
    let repeated = "a=1&".repeat(2000);
    let refreshes = "refresh=true&".repeat(500);
    let encoded = "%FF%00%2F..%2F".repeat(500);
    for query in [
        repeated.as_str(),
        refreshes.as_str(),
        encoded.as_str(),
        "&&&&&&&&",
        "=",
        "refresh",
    ] {
        for path in ["/challenges/active", "/state/summary", "/uploads"] {
            let res = send(&app, &format!("{path}?{query}"), &[]);
            assert!(
                matches!(res.status, 200 | 400 | 404 | 414 | 431),
                "{path}?{}…: {}",
                &query[..query.len().min(20)],
                res.status
            );
        }
    }
    let huge = format!("/challenges/active?{}", "b".repeat(120_000));
    let res = send(&app, &huge, &[]);
    assert!(res.status >= 400, "{}", res.status);
    assert_eq!(send(&app, "/challenges/active", &[]).status, 200);
}

#[test]
fn headers_the_response_does_not_vary_on_cannot_poison_the_cache() {
    let app = Example::start("poison");
    let count = |res: &http::Response| res.json()["count"].clone();
    // The first request, which fills the cache, carries every header cache-poisoning
    // attacks use to make an app build something else.
    let poisoned: [(&str, &[u8]); 8] = [
        ("X-Forwarded-Host", b"evil.example"),
        ("X-Forwarded-Proto", b"https"),
        ("X-Forwarded-Scheme", b"nothttp"),
        ("Forwarded", b"host=evil.example;proto=https"),
        ("X-Original-URL", b"/admin"),
        ("X-Rewrite-URL", b"/admin"),
        ("X-HTTP-Method-Override", b"DELETE"),
        ("X-Forwarded-Prefix", b"/evil"),
    ];
    let first = send(&app, "/challenges/active", &poisoned);
    assert_eq!((first.status, first.cache_label()), (200, "miss"));
    let plain = send(&app, "/challenges/active", &[]);
    assert_eq!(plain.cache_label(), "hit");
    assert_eq!(
        plain.body, first.body,
        "the same bytes, built without the headers"
    );
    assert!(!plain.body_str().contains("evil"), "{}", plain.body_str());

    // `Host` is part of the key: another host gets (and builds) its own entry.
    let other = app
        .server
        .connect()
        .exchange(b"GET /challenges/active HTTP/1.1\r\nHost: evil.example\r\n\r\n");
    assert_eq!((other.status, other.cache_label()), (200, "miss"));
    // Two `Host` lines are refused outright (RFC 9112 §3.2).
    let two_hosts = send(&app, "/challenges/active", &[("Host", b"evil.example")]);
    assert_eq!(two_hosts.status, 400);
    assert_eq!(send(&app, "/challenges/active", &[]).cache_label(), "hit");

    // A method override on a read changed nothing.
    let uploads = send(&app, "/uploads", &[("X-HTTP-Method-Override", b"DELETE")]);
    assert_eq!(count(&uploads), 3);
    assert_eq!(count(&send(&app, "/uploads", &[])), 3);

    // Credentials are never answered from, nor stored in, the shared cache.
    let alice = send(
        &app,
        "/challenges/active",
        &[("Authorization", b"Bearer alice")],
    );
    assert_eq!(alice.cache_label(), "bypass");
    let cookie = send(&app, "/challenges/active", &[("Cookie", b"session=alice")]);
    assert_eq!(cookie.cache_label(), "bypass");
}

/// Validators and fingerprints as careless handlers produce them.
fn hostile_validators_app() -> http::Server {
    let revisions = ResponseCache::revision("hostile-revision", |_req: HttpRequest| async {
        Ok::<_, actix_web::Error>("v1\r\nSet-Cookie: pwned=1".to_owned())
    })
    .build();
    http::Server::start(move || {
        let revisions = revisions.clone();
        App::new()
            .wrap(ConditionalGet::default())
            .route(
                "/etag/{kind}",
                web::get().to(|req: HttpRequest| async move {
                    const POLICY: HandlerPolicy = HandlerPolicy::new(CachePolicy::revalidate(60));
                    let tag = match req.match_info().get("kind") {
                        Some("quote") => "a\"b",
                        Some("crlf") => "x\r\nSet-Cookie: pwned=1",
                        Some("nul") => "x\0y",
                        _ => "fine",
                    };
                    let validators = RequestValidators::new().etag(Some(tag));
                    POLICY
                        .respond(&req, validators, async { HttpResponse::Ok().body("body") })
                        .await
                }),
            )
            .route(
                "/revision",
                web::get().to(move |req: HttpRequest| {
                    let revisions = revisions.clone();
                    async move {
                        revisions
                            .serve(&req, |_req| async { HttpResponse::Ok().body("revised") })
                            .await
                    }
                }),
            )
    })
}

#[test]
fn handler_validators_with_cr_lf_or_quotes_never_reach_the_wire() {
    let server = hostile_validators_app();
    for kind in ["quote", "crlf", "nul"] {
        let res = server.connect().get(&format!("/etag/{kind}"));
        assert_eq!(res.status, 200, "{kind}: {res:?}");
        assert_eq!(res.body_str(), "body");
        assert!(
            !res.has("set-cookie"),
            "{kind}: a header was injected: {res:?}"
        );
        // The invalid tag is dropped; ConditionalGet hashes the body instead.
        let etag = res.etag();
        assert!(
            etag.starts_with('"') && etag.ends_with('"') && !etag[1..etag.len() - 1].contains('"'),
            "{kind}: {etag}"
        );
        let again = server.connect().send(
            "GET",
            &format!("/etag/{kind}"),
            &[("If-None-Match", etag.as_bytes())],
            None,
        );
        assert_eq!(again.status, 304, "{kind}");
    }
    let res = server.connect().get("/etag/fine");
    assert_eq!(res.etag(), "\"fine\"");

    // A revision fingerprint with CR/LF: no `X-Revision` line (it cannot be a header value),
    // no injected header, and the cache still works with its hashed ETag.
    for expected in ["miss", "hit-revision"] {
        let res = server.connect().get("/revision");
        assert_eq!((res.status, res.cache_label()), (200, expected));
        assert!(!res.has("x-revision") && !res.has("set-cookie"), "{res:?}");
        assert!(res.etag().starts_with("\"rv-"), "{res:?}");
    }
}
