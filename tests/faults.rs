//! Faults around the viewsets example, answered as its docs say: a SQLite file another
//! process holds locked, and a database path that cannot be opened. (Slow, failing and
//! panicking builders and cancelled leaders are in `tests/response_cache*.rs`; Redis stopped,
//! paused and restarted in `tests/redis_store.rs`.)

use std::time::{Duration, Instant};

#[path = "common/http.rs"]
mod http;

#[path = "../examples/viewsets.rs"]
#[allow(dead_code, unreachable_pub)]
mod viewsets;

#[path = "common/example.rs"]
mod example;

use example::Example;

/// Sends one request on a fresh connection; returns the answer and how long it took.
fn send(app: &Example, method: &str, path: &str, body: Option<&str>) -> (http::Response, Duration) {
    let started = Instant::now();
    let res = app.server.connect().send(method, path, &[], body);
    (res, started.elapsed())
}

/// Another process's connection in the middle of a long write transaction (as `sqlite3`
/// with a `BEGIN IMMEDIATE` left open would be): it holds the write lock.
fn hold_write_lock(path: &std::path::Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).expect("open");
    conn.execute_batch("BEGIN IMMEDIATE; UPDATE uploads SET name = name WHERE id = 1;")
        .unwrap();
    conn
}

#[test]
fn a_locked_database_answers_writes_503_with_retry_after_quickly_and_reads_go_on() {
    let app = Example::start("locked");
    let (warm, _) = send(&app, "GET", "/challenges/active", None);
    assert_eq!((warm.status, warm.cache_label()), (200, "miss"));
    let (summary, _) = send(&app, "GET", "/state/summary", None);
    assert_eq!(summary.status, 200);

    let holder = hold_write_lock(&app.path);
    // Writes wait out the busy timeout, then answer 503 + Retry-After: not a hang, not a 500,
    // and nothing is invalidated.
    for (method, path, body) in [
        ("POST", "/uploads", Some(r#"{"name":"x.csv"}"#)),
        ("PUT", "/uploads/1", Some(r#"{"name":"y.csv"}"#)),
        ("DELETE", "/uploads/2", None),
        ("POST", "/progress", Some(r#"{"event":"blocked"}"#)),
    ] {
        let (res, took) = send(&app, method, path, body);
        assert_eq!(res.status, 503, "{method} {path}: {res:?}");
        assert_eq!(res.header("retry-after"), "1");
        assert_eq!(res.json()["error"], "database busy");
        assert!(
            took >= viewsets::BUSY_TIMEOUT && took < Duration::from_secs(2),
            "{method} {path} took {took:?}"
        );
        assert!(
            res.cache_control().contains(&"no-store"),
            "errors are never cached"
        );
    }
    // Reads go on (WAL: readers do not wait for writers, and SQLite's lock is not theirs),
    // on connections of their own: a read that arrives while a write waits for the lock is
    // not queued behind it (that wait is the write's alone, on a blocking thread).
    let (res, took) = send(&app, "GET", "/uploads", None);
    assert_eq!(res.status, 200);
    assert!(took < Duration::from_secs(1), "{took:?}");
    let (write, read) = std::thread::scope(|s| {
        let write = s.spawn(|| send(&app, "POST", "/uploads", Some(r#"{"name":"z.csv"}"#)));
        std::thread::sleep(viewsets::BUSY_TIMEOUT / 5);
        let read = s.spawn(|| send(&app, "GET", "/uploads/1", None));
        (write.join().unwrap(), read.join().unwrap())
    });
    assert_eq!(write.0.status, 503);
    assert_eq!(read.0.status, 200, "{:?}", read.0);
    assert!(
        read.1 < viewsets::BUSY_TIMEOUT / 2,
        "a read does not wait for a blocked write: {:?}",
        read.1
    );
    let (res, _) = send(&app, "GET", "/challenges/active", None);
    assert_eq!((res.status, res.cache_label()), (200, "hit"));
    let (res, _) = send(&app, "GET", "/state/summary", None);
    assert_eq!((res.status, res.cache_label()), (200, "hit-revision"));

    drop(holder);
    let (res, _) = send(&app, "POST", "/uploads", Some(r#"{"name":"x.csv"}"#));
    assert_eq!(
        res.status, 201,
        "writes work again once the lock is released"
    );
}

#[test]
fn a_database_path_that_cannot_be_opened_is_an_error_at_start() {
    let missing = std::env::temp_dir().join("no-such-dir-actix-conditional/app.sqlite3");
    let err = viewsets::open_database(&missing).expect_err("no directory, no database");
    assert!(
        err.to_string().contains("unable to open"),
        "a clear message for `main` to print: {err}"
    );
}
