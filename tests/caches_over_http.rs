//! The viewsets example's server-side caches over a real socket: `/challenges/active` (TTL),
//! `/state/summary` (revision-gated sections), `POST /progress` and `/metrics`, served by
//! `actix_web::HttpServer` on `127.0.0.1:0` with a temporary SQLite file per test, spoken to in
//! raw HTTP/1.1.
//!
//! The Prometheus recorder is one per process, so each test names its caches after itself
//! (`summary-<test>`) and reads only its own counters; the burst test alone uses the default
//! names, on caches it builds fresh. Every read has a timeout, and every wait for a background
//! refresh is a bounded poll, so a hang or a lost refresh fails within seconds.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use serde_json::{Value, json};

#[path = "common/http.rs"]
mod http;

#[path = "../examples/viewsets.rs"]
#[allow(dead_code, unreachable_pub)]
mod viewsets;

use http::{Conn, Response};

/// Polls for a background refresh at most this many times …
const POLLS: usize = 20;
/// … this far apart: two seconds in all.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

// ---------------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------------

/// A database file in the temp directory, removed (with its WAL files) on drop.
#[derive(Debug)]
struct TempDb {
    path: PathBuf,
}

impl TempDb {
    fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "caches-test-{}-{}.sqlite3",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let db = Self {
            path: std::env::temp_dir().join(name),
        };
        db.remove();
        db
    }

    fn remove(&self) {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut path = self.path.clone().into_os_string();
            path.push(suffix);
            drop(std::fs::remove_file(path));
        }
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        self.remove();
    }
}

/// A running `HttpServer` on a fresh database and fresh caches; dropping it stops the server,
/// then deletes the file.
#[derive(Debug)]
struct Server {
    // Dropped in declaration order: the server stops before its database is removed.
    server: http::Server,
    caches: viewsets::Caches,
    challenges: String,
    summary: String,
    temp: TempDb,
}

impl Server {
    /// One worker; caches named `challenges-{test}` and `summary-{test}`.
    fn start(test: &str) -> Self {
        let challenges = format!("challenges-{test}");
        let summary = format!("summary-{test}");
        Self::start_on(1, challenges, summary)
    }

    /// `workers` workers sharing caches built once, outside the factory closure, as `main`
    /// does.
    fn start_on(workers: usize, challenges: String, summary: String) -> Self {
        let temp = TempDb::new();
        let db = viewsets::open_database(&temp.path).expect("open the temp database");
        let caches = viewsets::caches_named(&db, &challenges, &summary);
        let shared = caches.clone();
        Self {
            server: http::Server::start_with_workers(workers, move || {
                viewsets::app_with_caches(shared.clone())
            }),
            caches,
            challenges,
            summary,
            temp,
        }
    }

    fn connect(&self) -> Conn {
        self.server.connect()
    }

    /// A connection of the test's own to the database file, as `sqlite3` would open.
    fn sql(&self) -> rusqlite::Connection {
        let conn = rusqlite::Connection::open(&self.temp.path).expect("open the file again");
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        conn
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn x_cache(res: &Response) -> &str {
    res.cache_label()
}

/// `GET /state/summary`, asserting a 200 JSON object with both sections.
fn summary(conn: &mut Conn) -> (Response, Value) {
    let res = conn.get("/state/summary");
    assert_eq!(res.status, 200, "{res:#?}");
    assert!(
        res.header("content-type").starts_with("application/json"),
        "{res:#?}"
    );
    let body = res.json();
    assert!(body["core"].is_object(), "{body}");
    assert!(body["recent_progress"].is_array(), "{body}");
    (res, body)
}

/// The `count` of `table` in the summary's core.
fn core_count(body: &Value, table: &str) -> u64 {
    body["core"][table]["count"]
        .as_u64()
        .unwrap_or_else(|| panic!("no core.{table}.count: {body}"))
}

/// Polls `/state/summary` until `done` holds for a `hit-revision` answer: the background
/// refresh has stored new bytes. Panics after [`POLLS`] tries.
fn until_refreshed(conn: &mut Conn, done: impl Fn(&Value) -> bool) -> (Response, Value) {
    let mut seen = Vec::new();
    for _ in 0..POLLS {
        let (res, body) = summary(conn);
        if x_cache(&res) == "hit-revision" && done(&body) {
            return (res, body);
        }
        seen.push(x_cache(&res).to_owned());
        thread::sleep(POLL_INTERVAL);
    }
    panic!("no refreshed summary within 2 s; X-Cache went {seen:?}");
}

fn post(conn: &mut Conn, path: &str, body: &Value) -> Response {
    conn.send("POST", path, &[], Some(&body.to_string()))
}

/// `GET /metrics`, asserting the Prometheus text format.
fn metrics(conn: &mut Conn) -> String {
    let res = conn.get("/metrics");
    assert_eq!(res.status, 200, "{res:#?}");
    assert_eq!(res.header("content-type"), "text/plain; version=0.0.4");
    res.body_str().to_owned()
}

/// The value of counter `actix_conditional_cache_{event}_total{cache="…"}`; 0 if it has not
/// been recorded yet (an exporter shows a counter only once it exists).
fn counter(text: &str, event: &str, cache: &str) -> u64 {
    let prefix = format!("actix_conditional_cache_{event}_total{{cache=\"{cache}\"}} ");
    let mut lines = text.lines().filter(|line| line.starts_with(&prefix));
    let Some(line) = lines.next() else {
        return 0;
    };
    assert!(lines.next().is_none(), "{prefix} twice in:\n{text}");
    line[prefix.len()..]
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// /state/summary
// ---------------------------------------------------------------------------------------------

#[test]
fn summary_is_a_hit_revision_the_second_time_and_304_on_its_etag() {
    let server = Server::start("revision");
    let mut conn = server.connect();

    let (first, body) = summary(&mut conn);
    assert_eq!(x_cache(&first), "miss", "{first:#?}");
    assert_eq!(core_count(&body, "uploads"), 3, "{body}");
    assert_eq!(core_count(&body, "claims"), 2, "{body}");
    assert_eq!(core_count(&body, "reports"), 2, "{body}");
    assert_eq!(body["recent_progress"], json!([]));
    let etag = first.etag().to_owned();
    assert!(etag.starts_with("\"rv-"), "a revision ETag: {etag}");
    assert!(first.has("x-revision") && first.has("age"), "{first:#?}");

    let (second, again) = summary(&mut conn);
    assert_eq!(x_cache(&second), "hit-revision", "{second:#?}");
    assert_eq!(again, body);
    assert_eq!(second.etag(), etag);
    assert_eq!(second.header("x-revision"), first.header("x-revision"));

    let res = conn.send(
        "GET",
        "/state/summary",
        &[("If-None-Match", etag.as_bytes())],
        None,
    );
    assert_eq!(res.status, 304, "{res:#?}");
    assert_eq!(res.etag(), etag);
    assert_eq!(x_cache(&res), "hit-revision", "{res:#?}");
    conn.assert_silent();

    let text = metrics(&mut conn);
    assert_eq!(counter(&text, "misses", &server.summary), 1, "{text}");
    assert_eq!(counter(&text, "hits", &server.summary), 2, "{text}");
    assert_eq!(counter(&text, "stale_served", &server.summary), 0, "{text}");
    assert_eq!(server.caches.summary.stats().misses, 1);
}

#[test]
fn posting_progress_rebuilds_only_recent_progress_in_the_request() {
    let server = Server::start("progress");
    let mut conn = server.connect();
    let (_, before) = summary(&mut conn);
    let (res, _) = summary(&mut conn);
    assert_eq!(x_cache(&res), "hit-revision", "{res:#?}");
    let old_etag = res.etag().to_owned();

    let res = post(
        &mut conn,
        "/progress",
        &json!({ "event": "uploaded report.csv" }),
    );
    assert_eq!(res.status, 201, "{res:#?}");
    assert!(res.cache_control().contains(&"no-store"), "{res:#?}");
    let row = res.json();
    assert_eq!(row["event"], "uploaded report.csv", "{row}");
    assert!(row["id"].as_i64().is_some() && row["created_at"].as_i64().is_some());

    // The very next GET has it: only the inline section was rebuilt, in the request.
    let (res, after) = summary(&mut conn);
    assert_eq!(x_cache(&res), "section", "{res:#?}");
    assert_eq!(after["recent_progress"][0], row, "{after}");
    assert_eq!(after["core"], before["core"], "the core was kept as it was");
    assert_ne!(res.etag(), old_etag, "a new revision, a new tag");

    let (res, _) = summary(&mut conn);
    assert_eq!(x_cache(&res), "hit-revision", "{res:#?}");

    // Newest first.
    let second = post(&mut conn, "/progress", &json!({ "event": "claim filed" })).json();
    let (res, after) = summary(&mut conn);
    assert_eq!(x_cache(&res), "section", "{res:#?}");
    assert_eq!(after["recent_progress"], json!([second, row]), "{after}");

    // A rejected write invalidates nothing.
    for bad in [json!({ "event": "  " }), json!({}), json!({ "event": 7 })] {
        let res = post(&mut conn, "/progress", &bad);
        assert_eq!(res.status, 400, "{bad}: {res:#?}");
        assert!(res.json()["error"].is_string(), "{res:#?}");
    }
    let (res, _) = summary(&mut conn);
    assert_eq!(x_cache(&res), "hit-revision", "{res:#?}");
}

/// Viewset writes invalidate the summary's `core`: the writer's very next read has the write
/// (read-your-writes), rebuilt in that request, never the stale bytes.
#[test]
fn viewset_writes_are_in_the_writers_next_summary() {
    let server = Server::start("stale");
    let mut conn = server.connect();
    let (_, before) = summary(&mut conn);
    let uploads = core_count(&before, "uploads");

    // INSERT.
    let res = post(&mut conn, "/uploads", &json!({ "name": "new.csv" }));
    assert_eq!(res.status, 201, "{res:#?}");
    let (res, body) = summary(&mut conn);
    assert_ne!(x_cache(&res), "stale", "{res:#?}");
    assert_eq!(core_count(&body, "uploads"), uploads + 1, "{body}");
    assert_eq!(body["core"]["uploads"]["latest"][0]["name"], "new.csv");
    let (res, _) = summary(&mut conn);
    assert_eq!(x_cache(&res), "hit-revision", "{res:#?}");

    // UPDATE: the count stays, the counter moves.
    let res = conn.send("PUT", "/uploads/1", &[], Some(r#"{"name":"renamed.zip"}"#));
    assert_eq!(res.status, 200, "{res:#?}");
    let (res, body) = summary(&mut conn);
    assert_ne!(x_cache(&res), "stale", "{res:#?}");
    assert_eq!(body["core"]["uploads"]["latest"][0]["name"], "renamed.zip");
    assert_eq!(core_count(&body, "uploads"), uploads + 1);

    // DELETE.
    let res = conn.send("DELETE", "/claims/1", &[], None);
    assert_eq!(res.status, 204, "{res:#?}");
    let (res, body) = summary(&mut conn);
    assert_ne!(x_cache(&res), "stale", "{res:#?}");
    assert_eq!(core_count(&body, "claims"), 1);

    let text = metrics(&mut conn);
    assert_eq!(counter(&text, "stale_served", &server.summary), 0, "{text}");
    assert_eq!(counter(&text, "refresh_failures", &server.summary), 0);
}

#[test]
fn writes_from_another_connection_change_the_revision_too() {
    let server = Server::start("external");
    let mut conn = server.connect();
    summary(&mut conn);
    let (res, _) = summary(&mut conn);
    assert_eq!(x_cache(&res), "hit-revision", "{res:#?}");

    // `updated_at` left alone and the count unchanged: COUNT/MAX(updated_at) would miss it.
    let changed = server
        .sql()
        .execute(
            "UPDATE reports SET name = 'Q1 revenue (final)' WHERE id = 1",
            [],
        )
        .unwrap();
    assert_eq!(changed, 1);
    let (res, _) = summary(&mut conn);
    assert_eq!(x_cache(&res), "stale", "{res:#?}");
    until_refreshed(&mut conn, |b| {
        b["core"]["reports"]["latest"]
            .as_array()
            .unwrap()
            .iter()
            .any(|row| row["name"] == "Q1 revenue (final)")
    });

    // An inline section's table: rebuilt in the request.
    server
        .sql()
        .execute(
            "INSERT INTO progress (event, created_at) VALUES ('imported', 0)",
            [],
        )
        .unwrap();
    let (res, body) = summary(&mut conn);
    assert_eq!(x_cache(&res), "section", "{res:#?}");
    assert_eq!(body["recent_progress"][0]["event"], "imported");
}

#[test]
fn refresh_true_forces_a_miss() {
    let server = Server::start("forced");
    let mut conn = server.connect();
    summary(&mut conn);
    let (res, body) = summary(&mut conn);
    assert_eq!(x_cache(&res), "hit-revision", "{res:#?}");

    let res = conn.get("/state/summary?refresh=true");
    assert_eq!(res.status, 200, "{res:#?}");
    assert_eq!(x_cache(&res), "miss", "{res:#?}");
    assert_eq!(res.json(), body);

    // Stored under the same key as the plain URL.
    let (res, _) = summary(&mut conn);
    assert_eq!(x_cache(&res), "hit-revision", "{res:#?}");
    assert_eq!(server.caches.summary.stats().misses, 2);
}

#[test]
fn a_failed_core_refresh_keeps_serving_stale_and_is_counted() {
    let server = Server::start("failure");
    let mut conn = server.connect();
    let (_, before) = summary(&mut conn);

    // The core's build now fails (no `reports` table) while its revision moves.
    let sql = server.sql();
    sql.execute_batch(
        "ALTER TABLE reports RENAME TO reports_away;
         UPDATE revisions SET rev = rev + 1 WHERE name = 'reports';",
    )
    .unwrap();
    let mut failures = 0;
    for _ in 0..POLLS {
        let (res, body) = summary(&mut conn);
        assert_eq!(x_cache(&res), "stale", "{res:#?}");
        assert_eq!(body, before, "the last good bytes, not an error");
        failures = counter(&metrics(&mut conn), "refresh_failures", &server.summary);
        if failures > 0 {
            break;
        }
        thread::sleep(POLL_INTERVAL);
    }
    assert!(failures > 0, "the failed refresh was not counted");
    assert!(server.caches.summary.stats().refresh_failures > 0);

    // Repaired: the next refresh succeeds.
    sql.execute_batch("ALTER TABLE reports_away RENAME TO reports;")
        .unwrap();
    let (res, _) = until_refreshed(&mut conn, |_| true);
    assert_eq!(x_cache(&res), "hit-revision");
}

// ---------------------------------------------------------------------------------------------
// /challenges/active
// ---------------------------------------------------------------------------------------------

#[test]
fn challenges_are_a_miss_then_a_hit_with_public_max_age_and_age() {
    let server = Server::start("ttl");
    let mut conn = server.connect();

    let first = conn.get("/challenges/active");
    assert_eq!(first.status, 200, "{first:#?}");
    assert_eq!(x_cache(&first), "miss", "{first:#?}");
    assert_eq!(first.header("cache-control"), "public, max-age=15");
    let body = first.json();
    assert_eq!(body["count"], 3, "the ended challenge is left out: {body}");
    let titles: Vec<&str> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["title"].as_str().unwrap())
        .collect();
    assert!(!titles.iter().any(|t| t.contains("ended")), "{titles:?}");

    let hit = conn.get("/challenges/active");
    assert_eq!(hit.status, 200, "{hit:#?}");
    assert_eq!(x_cache(&hit), "hit", "{hit:#?}");
    assert_eq!(hit.header("cache-control"), "public, max-age=15");
    let age: u64 = hit.header("age").parse().expect("Age is delta-seconds");
    assert!(age < 30, "within the TTL: {age}");
    assert_eq!(hit.body, first.body);
    assert_eq!(hit.etag(), first.etag());

    // The stored validator answers a revalidation.
    let res = conn.send(
        "GET",
        "/challenges/active",
        &[("If-None-Match", first.etag().as_bytes())],
        None,
    );
    assert_eq!(res.status, 304, "{res:#?}");
    conn.assert_silent();

    // HEAD is served from the same entry.
    let res = conn.send("HEAD", "/challenges/active", &[], None);
    assert_eq!(res.status, 200, "{res:#?}");
    assert_eq!(x_cache(&res), "hit", "{res:#?}");
    assert!(res.body.is_empty());

    assert_eq!(server.caches.challenges.stats().builds, 1);
    let text = metrics(&mut conn);
    assert_eq!(counter(&text, "builds", &server.challenges), 1, "{text}");
    assert_eq!(counter(&text, "hits", &server.challenges), 3, "{text}");
}

// ---------------------------------------------------------------------------------------------
// /metrics
// ---------------------------------------------------------------------------------------------

#[test]
fn a_burst_of_100_cold_requests_on_two_workers_builds_once() {
    const BURST: usize = 100;
    // The default names, as `main` uses them: no other test touches these counters, and the
    // caches are new, so the counters start at zero.
    let server = Server::start_on(2, "challenges".into(), "summary".into());
    let before = metrics(&mut server.connect());
    assert_eq!(counter(&before, "builds", "challenges"), 0, "{before}");

    // Connect first, then release every request at once.
    let barrier = Arc::new(Barrier::new(BURST));
    let raw = http::request("GET", "/challenges/active", &[], None);
    let threads: Vec<_> = (0..BURST)
        .map(|_| {
            let mut conn = server.connect();
            let (barrier, raw) = (Arc::clone(&barrier), raw.clone());
            thread::spawn(move || {
                barrier.wait();
                conn.exchange(&raw)
            })
        })
        .collect();
    let responses: Vec<Response> = threads
        .into_iter()
        .map(|t| t.join().expect("request thread"))
        .collect();

    let first = &responses[0];
    for res in &responses {
        assert_eq!(res.status, 200, "{res:#?}");
        assert_eq!(res.body, first.body, "everyone got the one build");
        assert!(
            ["miss", "coalesced", "hit"].contains(&x_cache(res)),
            "{res:#?}"
        );
    }
    let misses = responses.iter().filter(|r| x_cache(r) == "miss").count();
    assert_eq!(misses, 1, "one request built, the others waited or hit");

    let text = metrics(&mut server.connect());
    let line = text
        .lines()
        .find(|l| l.starts_with("actix_conditional_cache_builds_total{cache=\"challenges\"}"))
        .unwrap_or_else(|| panic!("no builds line in:\n{text}"));
    assert_eq!(
        line, "actix_conditional_cache_builds_total{cache=\"challenges\"} 1",
        "{text}"
    );
    assert_eq!(counter(&text, "misses", "challenges"), 1, "{text}");
    assert_eq!(
        counter(&text, "hits", "challenges") + counter(&text, "coalesced", "challenges"),
        (BURST - 1) as u64,
        "{text}"
    );
    assert!(
        text.contains("# TYPE actix_conditional_cache_builds_total counter"),
        "{text}"
    );
    assert_eq!(server.caches.challenges.stats().builds, 1);
}
