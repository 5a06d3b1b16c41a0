//! The viewsets example behind real shared caches, configured from the files `docs/edge.md`
//! ships: Varnish 7 with varnish-modules' xkey (`docs/edge/varnish.vcl`) and Squid 5 as an
//! accelerator (`docs/edge/squid.conf`). nginx is covered by `tests/real_clients.rs`.
//!
//! Each test starts the example on a temporary SQLite file and a real port, wrapped in a
//! recorder that keeps every request that reached it and the answer it sent (so a test sees
//! what each cache asked of the app and what the app told the cache), then the caches in
//! front of it, on 127.0.0.1 only. All three come from Debian
//! (`apt-get install -y varnish varnish-modules squid`, which `.ci/run` does); a missing one
//! fails the test, unless the user opts out outside CI
//! with `ACTIX_CONDITIONAL_SKIP=varnish,squid`.
//!
//! The example runs on a real clock: the freshness tests wait for real expiries (~20 s and
//! ~50 s, printing their progress), the others take a few seconds.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::Error;
use actix_web::dev::ServiceRequest;
use actix_web::middleware::{Next, from_fn};

#[path = "common/daemon.rs"]
mod daemon;
#[path = "common/http.rs"]
mod http;
#[path = "common/squid.rs"]
mod squid;
#[path = "common/varnish.rs"]
mod varnish;

#[path = "../examples/viewsets.rs"]
#[allow(dead_code, unreachable_pub)]
mod viewsets;

use daemon::TempDir;
use squid::Squid;
use varnish::Varnish;

/// The longest a write may wait for its edge purges before it answers: the bound
/// [`app_purging_varnish`] configures.
const PURGE_WAIT: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------------------------
// The app, recorded
// ---------------------------------------------------------------------------------------------

/// One request as the app saw it, and the answer it sent.
#[derive(Debug, Clone)]
struct Seen {
    /// When the app answered, from the test's start.
    at: Duration,
    method: String,
    /// Path and query.
    uri: String,
    /// Request header lines, names lowercased.
    request: Vec<(String, String)>,
    status: u16,
    /// Response header lines as the app's outermost middleware saw them, names lowercased.
    response: Vec<(String, String)>,
}

impl Seen {
    fn request_header(&self, name: &str) -> Option<&str> {
        lookup(&self.request, name)
    }

    fn response_header(&self, name: &str) -> Option<&str> {
        lookup(&self.response, name)
    }

    fn conditional(&self) -> bool {
        self.request_header("if-none-match").is_some()
            || self.request_header("if-modified-since").is_some()
    }

    /// One line for failure messages.
    fn summary(&self) -> String {
        let show = |name: &str, value: Option<&str>| {
            value.map_or(String::new(), |v| format!(" {name}=[{v}]"))
        };
        format!(
            "{:>6.2}s {} {} -> {}{}{}{}{}{}{}{}{}",
            self.at.as_secs_f64(),
            self.method,
            self.uri,
            self.status,
            show("inm", self.request_header("if-none-match")),
            show("ims", self.request_header("if-modified-since")),
            show("cookie", self.request_header("cookie")),
            show("age", self.response_header("age")),
            show("cc", self.response_header("cache-control")),
            show("cdn-cc", self.response_header("cdn-cache-control")),
            show("vary", self.response_header("vary")),
            show("lm", self.response_header("last-modified")),
        )
    }
}

fn lookup<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    let values: Vec<&str> = headers
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .collect();
    // Repeated lines are one comma-separated list (RFC 9110 §5.3); keep the first here and
    // let callers that care about lists split it.
    values.first().copied()
}

/// The example on a fresh database, recording every request that reaches it.
struct App {
    server: http::Server,
    seen: Arc<Mutex<Vec<Seen>>>,
    started: Instant,
    _dir: TempDir,
}

impl App {
    fn start(test: &str) -> Self {
        Self::start_with(test, actix_conditional::edge::Edge::new())
    }

    fn start_with(test: &str, edge: actix_conditional::edge::Edge) -> Self {
        let dir = TempDir::new(&format!("{test}-app"));
        let db = viewsets::open_database(dir.path.join("app.sqlite3")).expect("database");
        let caches = viewsets::caches_named(
            &db,
            &format!("challenges-edge-{test}"),
            &format!("summary-edge-{test}"),
        );
        let seen = Arc::new(Mutex::new(Vec::new()));
        let started = Instant::now();
        let log = Arc::clone(&seen);
        let server = http::Server::start(move || {
            let log = Arc::clone(&log);
            viewsets::app_with_edge(caches.clone(), edge.clone()).wrap(from_fn(
                move |req: ServiceRequest, next: Next<_>| {
                    let log = Arc::clone(&log);
                    async move {
                        let method = req.method().to_string();
                        let uri = req.uri().to_string();
                        let request = lines(req.headers());
                        let res = next.call(req).await?;
                        log.lock().unwrap().push(Seen {
                            at: started.elapsed(),
                            method,
                            uri,
                            request,
                            status: res.status().as_u16(),
                            response: lines(res.headers()),
                        });
                        Ok::<_, Error>(res)
                    }
                },
            ))
        });
        Self {
            server,
            seen,
            started,
            _dir: dir,
        }
    }

    fn port(&self) -> u16 {
        self.server.addr().port()
    }

    /// What reached the app for `uri` (path and query), in order.
    fn seen(&self, uri: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.uri == uri)
            .cloned()
            .collect()
    }

    fn all_seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn lines(headers: &actix_web::http::header::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

fn report(seen: &[Seen]) -> String {
    seen.iter()
        .map(Seen::summary)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The example with its edge purges sent to the Varnish at `varnish_url` (`PURGE` with
/// `xkey-purge`), each write waiting at most [`PURGE_WAIT`] for them: what `main` runs with
/// `VARNISH_PURGE_URL` set.
fn app_purging_varnish(test: &str, varnish_url: &str) -> App {
    let edge = viewsets::edge_for_varnish([varnish_url]).expect("Varnish purger");
    assert_eq!(viewsets::PURGE_WAIT, PURGE_WAIT);
    App::start_with(test, edge)
}

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

fn send(
    port: u16,
    method: &str,
    uri: &str,
    headers: &[(&str, &[u8])],
    body: Option<&str>,
) -> http::Response {
    let mut conn = http::Conn::open(SocketAddr::from(([127, 0, 0, 1], port)));
    conn.send(method, uri, headers, body)
}

fn get(port: u16, uri: &str, headers: &[(&str, &[u8])]) -> http::Response {
    send(port, "GET", uri, headers, None)
}

/// Whether Varnish answered from its cache (its own `Cache-Status` member, from the VCL).
fn varnish_hit(res: &http::Response) -> bool {
    res.all("cache-status")
        .iter()
        .any(|v| v.contains("varnish; hit"))
}

/// Whether Squid answered from its cache (its `X-Cache: HIT from …` line).
fn squid_hit(res: &http::Response) -> bool {
    res.all("x-cache").iter().any(|v| v.starts_with("HIT from"))
}

fn brief(res: &http::Response) -> String {
    let mut out = format!("{}", res.status);
    for name in [
        "age",
        "cache-control",
        "cache-status",
        "x-cache",
        "etag",
        "vary",
    ] {
        for value in res.all(name) {
            out.push_str(&format!(" {name}=[{value}]"));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Freshness as a shared cache computes it (RFC 9111 §4.2)
// ---------------------------------------------------------------------------------------------

/// `directive` of a Cache-Control-syntax field, as seconds (`None` if absent or malformed).
fn directive(field: &str, directive: &str) -> Option<u64> {
    field.split(',').map(str::trim).find_map(|d| {
        let (name, value) = d.split_once('=')?;
        if name.trim().eq_ignore_ascii_case(directive) {
            value.trim().trim_matches('"').parse().ok()
        } else {
            None
        }
    })
}

/// Every lifetime `seen` declares, with the stale allowance the same field grants
/// (`stale-while-revalidate`, `stale-if-error`, RFC 5861): `(where, lifetime, allowance)`.
/// `max-age` of Cache-Control is the lifetime for private caches and for shared ones without
/// `s-maxage`; `s-maxage` for shared ones; `CDN-Cache-Control`/`Surrogate-Control` `max-age` for
/// the caches they target (RFC 9213).
fn declared_lifetimes(seen: &Seen) -> Vec<(String, u64, u64)> {
    let mut out = Vec::new();
    for (field, directives) in [
        ("cache-control", &["max-age", "s-maxage"][..]),
        ("cdn-cache-control", &["max-age"][..]),
        ("surrogate-control", &["max-age"][..]),
    ] {
        let values: Vec<&str> = seen
            .response
            .iter()
            .filter(|(n, _)| n == field)
            .map(|(_, v)| v.as_str())
            .collect();
        if values.is_empty() {
            continue;
        }
        let value = values.join(", ");
        let allowance = directive(&value, "stale-while-revalidate")
            .unwrap_or(0)
            .max(directive(&value, "stale-if-error").unwrap_or(0));
        for name in directives {
            if let Some(lifetime) = directive(&value, name) {
                out.push((format!("{field} {name}"), lifetime, allowance));
            }
        }
    }
    out
}

/// The answers in `seen` that arrive stale by their own headers: `Age` past a lifetime they
/// declare and not covered by that field's stale allowance.
fn stale_on_arrival(seen: &[Seen]) -> Vec<String> {
    let mut bad = Vec::new();
    for s in seen {
        let Some(age) = s.response_header("age") else {
            continue;
        };
        let age: u64 = age.trim().parse().unwrap_or_else(|_| panic!("Age: {age}"));
        for (field, lifetime, allowance) in declared_lifetimes(s) {
            if age > lifetime + allowance {
                bad.push(format!(
                    "Age {age} > {field}={lifetime} (+{allowance} stale allowed): {}",
                    s.summary()
                ));
            }
        }
    }
    bad
}

#[test]
fn lifetimes_are_read_from_every_field_with_their_stale_allowance() {
    let seen = |headers: &[(&str, &str)]| Seen {
        at: Duration::ZERO,
        method: "GET".into(),
        uri: "/".into(),
        request: Vec::new(),
        status: 200,
        response: headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect(),
    };
    let ok = seen(&[("age", "15"), ("cache-control", "public, max-age=15")]);
    assert!(stale_on_arrival(&[ok]).is_empty());
    let late = seen(&[("age", "16"), ("cache-control", "public, max-age=15")]);
    assert_eq!(stale_on_arrival(&[late]).len(), 1);
    let covered = seen(&[
        ("age", "20"),
        ("cache-control", "max-age=15, stale-while-revalidate=10"),
    ]);
    assert!(stale_on_arrival(&[covered]).is_empty());
    let cdn = seen(&[
        ("age", "30"),
        ("cache-control", "max-age=60"),
        ("cdn-cache-control", "max-age=20"),
    ]);
    assert_eq!(stale_on_arrival(&[cdn]).len(), 1);
    let shared = seen(&[("age", "30"), ("cache-control", "max-age=60, s-maxage=10")]);
    assert_eq!(stale_on_arrival(&[shared]).len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Revalidation and freshness over real time
// ---------------------------------------------------------------------------------------------

/// Polls `uri` through a cache on `port` every 250 ms for `duration`; returns, per request,
/// when it was sent (from `app.started`) and whether the cache answered it itself.
fn poll(
    app: &App,
    port: u16,
    uri: &str,
    headers: &[(&str, &[u8])],
    duration: Duration,
    hit: fn(&http::Response) -> bool,
    label: &str,
) -> Vec<(Duration, bool, String)> {
    let mut out = Vec::new();
    let until = Instant::now() + duration;
    let mut next_progress = Instant::now();
    while Instant::now() < until {
        let at = app.started.elapsed();
        let res = get(port, uri, headers);
        assert_eq!(res.status, 200, "{label}: {}", brief(&res));
        out.push((at, hit(&res), brief(&res)));
        if Instant::now() >= next_progress {
            eprintln!(
                "[{label}] {:>5.1}s: {} requests, the app saw {} for {uri}; last: {}",
                at.as_secs_f64(),
                out.len(),
                app.seen(uri).len(),
                brief(&res)
            );
            next_progress += Duration::from_secs(5);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    out
}

/// After the app's first answer expires downstream (15 s for `/challenges/active`), the
/// cache revalidates; the app answers 304, and then the cache must answer by itself again
/// for the next seconds (issue 13: an answer that arrives stale made Varnish keep an object
/// with a negative TTL and Squid revalidate on every request).
fn assert_hits_after_revalidation(
    label: &str,
    app: &App,
    uri: &str,
    polled: &[(Duration, bool, String)],
) {
    let seen: Vec<Seen> = app
        .seen(uri)
        .into_iter()
        .filter(|s| s.method == "GET")
        .collect();
    let context = format!(
        "{label}: what reached the app:\n{}\nwhat the client got:\n{}",
        report(&seen),
        polled
            .iter()
            .map(|(at, hit, brief)| format!("{:>6.2}s hit={hit} {brief}", at.as_secs_f64()))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(seen.len() >= 2, "no revalidation happened: {context}");
    let revalidation = &seen[1];
    assert!(
        revalidation.conditional() && revalidation.status == 304,
        "the cache's second request is a revalidation answered 304: {context}"
    );
    let window = revalidation.at..revalidation.at + Duration::from_secs(3);
    let after: Vec<&Seen> = seen[2..]
        .iter()
        .filter(|s| window.contains(&s.at))
        .collect();
    let asked = polled
        .iter()
        .filter(|(at, _, _)| *at > window.start + Duration::from_millis(100) && *at < window.end)
        .count();
    assert!(asked >= 8, "the client kept asking: {asked}; {context}");
    assert!(
        after.is_empty(),
        "within 3 s of the revalidation, {} requests still reached the app \
         (the 304 left the cache with a stale copy): {context}",
        after.len()
    );
}

#[test]
fn after_a_revalidation_varnish_and_squid_answer_by_themselves_again() {
    let dir = TempDir::new("revalidation");
    let (app_v, app_s) = (App::start("reval-varnish"), App::start("reval-squid"));
    let Some(varnish) = Varnish::start(&dir.path, app_v.port()) else {
        return;
    };
    let Some(squid) = Squid::start(&dir.path, app_s.port()) else {
        return;
    };
    let uri = "/challenges/active";
    // Past the first downstream expiry (max-age=15, whole-second clocks) by a few seconds.
    let duration = Duration::from_secs(22);
    let (polled_v, polled_s) = std::thread::scope(|s| {
        let v = s.spawn(|| {
            poll(
                &app_v,
                varnish.port(),
                uri,
                &[],
                duration,
                varnish_hit,
                "varnish",
            )
        });
        let q = s.spawn(|| poll(&app_s, squid.port(), uri, &[], duration, squid_hit, "squid"));
        (v.join().unwrap(), q.join().unwrap())
    });
    let varnish_result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert_hits_after_revalidation("varnish", &app_v, uri, &polled_v);
    }));
    assert_hits_after_revalidation("squid", &app_s, uri, &polled_s);
    if let Err(panic) = varnish_result {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn every_answer_the_app_sends_is_fresh_on_arrival_over_a_full_ttl_cycle() {
    // One app behind Varnish, Squid (identity and gzip) and a direct client, all polling the
    // TTL-cached `/challenges/active` (30 s in the app, then stale bytes while one refresh
    // runs) and the revision-cached `/state/summary`, through one app TTL, its refresh, and
    // one more downstream lifetime.
    let dir = TempDir::new("fresh");
    let app = App::start("fresh");
    let Some(varnish) = Varnish::start(&dir.path, app.port()) else {
        return;
    };
    let Some(squid) = Squid::start(&dir.path, app.port()) else {
        return;
    };
    let duration = viewsets::CHALLENGES_TTL + Duration::from_secs(18);
    let gzip: &[(&str, &[u8])] = &[("Accept-Encoding", b"gzip")];
    let (varnish_port, squid_port, app_port) = (varnish.port(), squid.port(), app.port());
    std::thread::scope(|s| {
        let app = &app;
        for (label, port, headers, hit) in [
            ("varnish", varnish_port, &[][..], varnish_hit as fn(&_) -> _),
            ("squid", squid_port, &[][..], squid_hit as fn(&_) -> _),
            ("squid-gzip", squid_port, gzip, squid_hit as fn(&_) -> _),
            ("direct", app_port, gzip, (|_: &_| false) as fn(&_) -> _),
        ] {
            s.spawn(move || {
                poll(
                    app,
                    port,
                    "/challenges/active",
                    headers,
                    duration,
                    hit,
                    label,
                )
            });
        }
        s.spawn(move || {
            let until = Instant::now() + duration;
            while Instant::now() < until {
                for port in [varnish_port, squid_port, app_port] {
                    assert_eq!(get(port, "/state/summary", gzip).status, 200);
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        });
    });
    let seen = app.all_seen();
    let reads = seen.iter().filter(|s| s.method == "GET").count();
    assert!(reads > 20, "{}", report(&seen));
    let bad = stale_on_arrival(&seen);
    assert!(
        bad.is_empty(),
        "{} of {reads} answers arrived stale by their own headers; the first 20:\n{}",
        bad.len(),
        bad[..bad.len().min(20)].join("\n"),
    );
    // The cycle crossed the app's TTL: its stale answers were among those checked, and they
    // carry the stale window that covers their excess age.
    let stale: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.uri == "/challenges/active")
        .filter(|s| {
            s.response_header("cache-status")
                .is_some_and(|v| v.contains("detail=stale"))
        })
        .collect();
    assert!(
        !stale.is_empty(),
        "no stale answer in the cycle, so none was checked:\n{}",
        report(&seen)
    );
    for answer in stale {
        let cc = answer.response_header("cache-control").unwrap_or_default();
        assert!(cc.contains("stale-while-revalidate="), "{cc}");
    }
}

// ---------------------------------------------------------------------------------------------
// Squid: validators it can use, and privacy
// ---------------------------------------------------------------------------------------------

#[test]
fn squid_revalidates_compressed_reads_with_if_modified_since_and_gets_304s() {
    let dir = TempDir::new("squid-ims");
    let app = App::start("squid-ims");
    let Some(squid) = Squid::start(&dir.path, app.port()) else {
        return;
    };
    // The example sends `Last-Modified` only once the second of the table's last write is
    // over (a second write in the same second must not earn a 304): its seed rows were
    // written just now.
    std::thread::sleep(Duration::from_millis(1100));
    let gzip: &[(&str, &[u8])] = &[("Accept-Encoding", b"gzip")];
    // The viewsets' reads are fresh for 60 s; a client's `max-age=0` makes Squid revalidate
    // its copy now (RFC 9111 §5.2.1.1) instead of a minute from now. Its copy is gzip with a
    // weak ETag, which Squid never sends in If-None-Match: only If-Modified-Since can get a
    // 304 (issue 13, item 6).
    let revalidate: &[(&str, &[u8])] = &[
        ("Accept-Encoding", b"gzip"),
        ("Cache-Control", b"max-age=0"),
    ];
    for uri in ["/uploads", "/uploads/1"] {
        let first = get(squid.port(), uri, gzip);
        assert_eq!(first.status, 200, "{}", brief(&first));
        assert_eq!(
            first.get("content-encoding"),
            Some("gzip"),
            "a compressed read: {first:?}"
        );
        let again = get(squid.port(), uri, revalidate);
        assert_eq!(again.status, 200, "{}", brief(&again));
        assert_eq!(again.body, first.body, "the same bytes");
        let seen = app.seen(uri);
        let context = format!(
            "{uri}: the app saw:\n{}\nsquid's log:\n{}",
            report(&seen),
            squid.access_log().join("\n")
        );
        assert_eq!(seen.len(), 2, "{context}");
        assert!(
            seen[0].response_header("last-modified").is_some(),
            "the app sends Last-Modified with its read: {context}"
        );
        assert!(
            seen[1].request_header("if-modified-since").is_some(),
            "Squid revalidates with If-Modified-Since: {context}"
        );
        assert_eq!(seen[1].status, 304, "and gets a 304: {context}");
    }
}

#[test]
fn squid_never_serves_a_cookie_requests_answer_to_another_client_nor_the_reverse() {
    let dir = TempDir::new("squid-cookie");
    let app = App::start("squid-cookie");
    let Some(squid) = Squid::start(&dir.path, app.port()) else {
        return;
    };
    let alice: &[(&str, &[u8])] = &[("Cookie", b"session=alice")];
    let bob: &[(&str, &[u8])] = &[("Cookie", b"session=bob")];

    // Alice first: her answer must not be given to a client without her cookie.
    let uri = "/challenges/active?order=alice-first";
    assert_eq!(get(squid.port(), uri, alice).status, 200);
    for (who, headers) in [("no cookie", &[][..]), ("bob", bob)] {
        let before = app.seen(uri).len();
        let res = get(squid.port(), uri, headers);
        let seen = app.seen(uri);
        let cookie = headers.first().map(|(_, v)| String::from_utf8_lossy(v));
        assert!(
            !squid_hit(&res)
                && seen.len() == before + 1
                && seen[before].request_header("cookie") == cookie.as_deref(),
            "Squid gave alice's answer to {who} ({}); the app saw:\n{}",
            brief(&res),
            report(&seen)
        );
    }

    // An anonymous answer first: it must not be given to a request with a cookie (the app
    // treats those as possibly personal, and builds their answers itself).
    let uri = "/challenges/active?order=anonymous-first";
    assert_eq!(get(squid.port(), uri, &[]).status, 200);
    let res = get(squid.port(), uri, alice);
    let seen = app.seen(uri);
    assert!(
        !squid_hit(&res) && seen.len() == 2,
        "Squid gave the anonymous answer to alice ({}); the app saw:\n{}",
        brief(&res),
        report(&seen)
    );
}

// ---------------------------------------------------------------------------------------------
// Varnish: purges (DEPENDENCY: see `app_purging_varnish`)
// ---------------------------------------------------------------------------------------------

/// Varnish in front of an app that purges it, `uris` read through it until each is a hit.
fn purging_setup(test: &str, uris: &[&str]) -> Option<(TempDir, App, Varnish)> {
    let dir = TempDir::new(test);
    let port = daemon::free_port();
    let app = app_purging_varnish(test, &format!("http://127.0.0.1:{port}"));
    let varnish = Varnish::start_on(&dir.path, app.port(), port)?;
    for uri in uris {
        prime(&varnish, uri);
    }
    Some((dir, app, varnish))
}

/// Reads `uri` through Varnish until Varnish answers it from its cache.
fn prime(varnish: &Varnish, uri: &str) {
    let first = get(varnish.port(), uri, &[]);
    let second = get(varnish.port(), uri, &[]);
    assert!(
        varnish_hit(&second),
        "{uri} is stored by Varnish: {} then {}",
        brief(&first),
        brief(&second)
    );
}

fn json(res: &http::Response) -> serde_json::Value {
    res.json()
}

#[test]
fn a_write_to_the_app_purges_varnish_before_it_answers() {
    let Some((_dir, app, varnish)) =
        purging_setup("purge", &["/uploads", "/uploads/1", "/uploads/2"])
    else {
        return;
    };
    let direct = app.port();

    // PUT an item: its URL and the list show the new name on the very next read.
    let put = send(
        direct,
        "PUT",
        "/uploads/1",
        &[],
        Some(r#"{"name":"renamed.zip"}"#),
    );
    assert_eq!(put.status, 200, "{put:?}");
    let item = get(varnish.port(), "/uploads/1", &[]);
    assert_eq!(
        json(&item)["name"],
        "renamed.zip",
        "the item through Varnish after PUT: {}",
        brief(&item)
    );
    let list = get(varnish.port(), "/uploads", &[]);
    assert!(
        list.body_str().contains("renamed.zip"),
        "the list through Varnish after PUT: {} {}",
        brief(&list),
        list.body_str()
    );

    // POST to the collection.
    prime(&varnish, "/uploads");
    let post = send(
        direct,
        "POST",
        "/uploads",
        &[],
        Some(r#"{"name":"new.csv"}"#),
    );
    assert_eq!(post.status, 201, "{post:?}");
    let list = get(varnish.port(), "/uploads", &[]);
    assert_eq!(
        json(&list)["count"],
        4,
        "the list through Varnish after POST: {} {}",
        brief(&list),
        list.body_str()
    );

    // DELETE an item.
    prime(&varnish, "/uploads");
    let delete = send(direct, "DELETE", "/uploads/2", &[], None);
    assert_eq!(delete.status, 204, "{delete:?}");
    let item = get(varnish.port(), "/uploads/2", &[]);
    assert_eq!(
        item.status,
        404,
        "the item through Varnish after DELETE: {}",
        brief(&item)
    );
    let list = get(varnish.port(), "/uploads", &[]);
    assert_eq!(
        json(&list)["count"],
        3,
        "the list through Varnish after DELETE: {} {}",
        brief(&list),
        list.body_str()
    );
}

/// The `actix_conditional_purges_total` samples with `outcome="failed"`, summed.
fn failed_purges(app: &App) -> u64 {
    let metrics = get(app.port(), "/metrics", &[]);
    metrics
        .body_str()
        .lines()
        .filter(|l| {
            l.starts_with("actix_conditional_purges_total{") && l.contains("outcome=\"failed\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// PUTs `/uploads/1` directly to the app and checks it answered within the purge bound.
fn timed_put(app: &App, name: &str) {
    let started = Instant::now();
    let put = send(
        app.port(),
        "PUT",
        "/uploads/1",
        &[],
        Some(&format!(r#"{{"name":"{name}"}}"#)),
    );
    let took = started.elapsed();
    assert_eq!(put.status, 200, "{put:?}");
    assert!(
        took <= PURGE_WAIT + Duration::from_millis(1000),
        "the write answered in {took:?}, past the purge bound {PURGE_WAIT:?}"
    );
}

#[test]
fn with_varnish_frozen_a_write_answers_within_the_bound_and_the_purge_lands_when_it_thaws() {
    let Some((_dir, app, varnish)) = purging_setup("purge-frozen", &["/uploads/1"]) else {
        return;
    };
    let failed_before = failed_purges(&app);
    // SIGSTOP: the kernel still accepts connections, nothing answers (a hung edge), and the
    // cache keeps its objects, so the test can see the purge land afterwards.
    varnish.pause();
    timed_put(&app, "while-frozen.zip");
    let failed = failed_purges(&app);
    varnish.resume();
    assert!(
        failed > failed_before,
        "the failed purge is counted in /metrics ({failed_before} -> {failed})"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let item = get(varnish.port(), "/uploads/1", &[]);
        if json(&item)["name"] == "while-frozen.zip" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the purge never landed: Varnish still serves {} {}",
            brief(&item),
            item.body_str()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn with_varnish_stopped_a_write_answers_within_the_bound_and_the_purge_is_sent_once_it_is_back() {
    let Some((_dir, app, mut varnish)) = purging_setup("purge-down", &["/uploads/1"]) else {
        return;
    };
    let failed_before = failed_purges(&app);
    varnish.stop();
    timed_put(&app, "while-down.zip");
    let failed = failed_purges(&app);
    assert!(
        failed > failed_before,
        "the failed purge is counted in /metrics ({failed_before} -> {failed})"
    );
    // A restarted Varnish has an empty cache, so the purge cannot be seen in what it serves:
    // look for the PURGE request itself in its log.
    varnish.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = varnish.log_of("PURGE");
        if log.contains("xkey-purge") || log.contains("xkey-softpurge") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no PURGE reached Varnish within 20 s of its restart:\n{}",
            varnish.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

// ---------------------------------------------------------------------------------------------
// The shipped VCL itself, against a backend whose headers the test chooses
// ---------------------------------------------------------------------------------------------

/// A backend that answers every GET with the headers the request names in `x-respond-<name>`
/// lines, and a body counting the requests that reached it for that path: a test tells a
/// hit from a fetch by the body.
fn scripted_backend() -> http::Server {
    use actix_web::{HttpRequest, HttpResponse, web};
    static FETCHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    http::Server::start(|| {
        actix_web::App::new().default_service(web::to(|req: HttpRequest| async move {
            let n = FETCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut res = HttpResponse::Ok();
            for (name, value) in req.headers() {
                if let Some(name) = name.as_str().strip_prefix("x-respond-") {
                    res.append_header((name.to_owned(), value.clone()));
                }
            }
            res.body(format!("{} #{n}", req.path()))
        }))
    })
}

/// Varnish running the shipped VCL in front of [`scripted_backend`].
fn scripted_varnish(test: &str) -> Option<(TempDir, http::Server, Varnish)> {
    let dir = TempDir::new(test);
    let backend = scripted_backend();
    let varnish = Varnish::start(&dir.path, backend.addr().port())?;
    Some((dir, backend, varnish))
}

#[test]
fn the_vcl_purges_by_tag_hard_and_soft_and_only_with_a_tag() {
    let Some((_dir, _backend, varnish)) = scripted_varnish("vcl-purge") else {
        return;
    };
    let port = varnish.port();
    let a: &[(&str, &[u8])] = &[
        ("x-respond-cache-control", b"max-age=60"),
        ("x-respond-surrogate-key", b"group-a shared"),
    ];
    let b: &[(&str, &[u8])] = &[
        ("x-respond-cache-control", b"max-age=60"),
        ("x-respond-xkey", b"group-b shared"),
    ];
    let (a1, b1) = (get(port, "/a", a), get(port, "/b", b));
    assert!(varnish_hit(&get(port, "/a", a)) && varnish_hit(&get(port, "/b", b)));
    for res in [&a1, &b1] {
        assert!(
            !res.has("xkey") && !res.has("surrogate-key"),
            "tags stay in Varnish: {res:?}"
        );
    }

    let purge = |header: &str, tags: &[u8]| send(port, "PURGE", "/", &[(header, tags)], None);
    let res = purge("xkey-purge", b"group-a");
    assert_eq!(
        (res.status, res.body_str().trim()),
        (200, "Invalidated 1 objects")
    );
    let a2 = get(port, "/a", a);
    assert!(!varnish_hit(&a2) && a2.body != a1.body, "{}", brief(&a2));
    let b2 = get(port, "/b", b);
    assert!(varnish_hit(&b2) && b2.body == b1.body, "another tag stays");

    // Soft: the objects turn stale; the next read gets the old bytes (grace) while Varnish
    // fetches new ones in the background, and the reads after it the new ones.
    assert_eq!(purge("xkey-softpurge", b"shared").status, 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let b3 = get(port, "/b", b);
        if b3.body != b1.body {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the soft purge never refreshed /b"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    assert_eq!(send(port, "PURGE", "/", &[], None).status, 400);
}

#[test]
fn the_vcl_keeps_objects_for_their_targeted_lifetime_and_hides_the_targeted_fields() {
    let Some((_dir, _backend, varnish)) = scripted_varnish("vcl-targeted") else {
        return;
    };
    let port = varnish.port();
    let stored = |uri: &str, headers: &[(&str, &[u8])]| {
        let first = get(port, uri, headers);
        for name in ["cdn-cache-control", "surrogate-control"] {
            assert!(!first.has(name), "{name} is for Varnish only: {first:?}");
        }
        varnish_hit(&get(port, uri, headers))
    };
    // Browsers revalidate every time; Varnish holds it a minute (RFC 9213).
    assert!(stored(
        "/cdn",
        &[
            ("x-respond-cache-control", b"no-cache"),
            ("x-respond-cdn-cache-control", b"max-age=60"),
        ]
    ));
    // Surrogate-Control is more specific than CDN-Cache-Control.
    assert!(stored(
        "/surrogate",
        &[
            ("x-respond-cdn-cache-control", b"no-store"),
            ("x-respond-surrogate-control", b"max-age=60"),
        ]
    ));
    // The targeted field can forbid what Cache-Control allows.
    assert!(!stored(
        "/cdn-no-store",
        &[
            ("x-respond-cache-control", b"public, max-age=60"),
            ("x-respond-cdn-cache-control", b"no-store"),
        ]
    ));
    // The targeted lifetime counts from the answer's Age: 5 s old with max-age=5 is stale.
    assert!(!stored(
        "/cdn-aged",
        &[
            ("x-respond-cdn-cache-control", b"max-age=5"),
            ("x-respond-age", b"5"),
        ]
    ));
    assert!(stored(
        "/cdn-young",
        &[
            ("x-respond-cdn-cache-control", b"max-age=60"),
            ("x-respond-age", b"5"),
        ]
    ));
}

#[test]
fn the_vcl_never_shares_between_credentialed_and_anonymous_requests() {
    let Some((_dir, _backend, varnish)) = scripted_varnish("vcl-credentials") else {
        return;
    };
    let port = varnish.port();
    let public: (&str, &[u8]) = ("x-respond-cache-control", b"public, max-age=60");
    let vary: (&str, &[u8]) = ("x-respond-vary", b"Cookie");
    let alice: (&str, &[u8]) = ("Cookie", b"session=alice");
    let bob: (&str, &[u8]) = ("Cookie", b"session=bob");

    // Public, but not varying on Cookie: a cookie request's answer is not stored, and an
    // anonymous copy is not served to cookie requests.
    let first = get(port, "/plain", &[public, alice]);
    assert!(!varnish_hit(&get(port, "/plain", &[public])));
    assert!(
        varnish_hit(&get(port, "/plain", &[public])),
        "anonymous copies are shared"
    );
    let again = get(port, "/plain", &[public, alice]);
    assert!(
        !varnish_hit(&again) && again.body != first.body,
        "alice's requests always reach the app: {}",
        brief(&again)
    );

    // Public and varying on Cookie: stored per cookie value.
    let _ = get(port, "/varies", &[public, vary, alice]);
    assert!(varnish_hit(&get(port, "/varies", &[public, vary, alice])));
    assert!(!varnish_hit(&get(port, "/varies", &[public, vary, bob])));
    assert!(!varnish_hit(&get(port, "/varies", &[public, vary])));

    // Authorization without `Vary: Authorization`: never stored.
    let token: (&str, &[u8]) = ("Authorization", b"Bearer alice");
    let _ = get(port, "/auth", &[public, token]);
    assert!(!varnish_hit(&get(port, "/auth", &[public, token])));
}
