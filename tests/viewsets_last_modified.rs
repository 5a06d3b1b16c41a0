//! `Last-Modified` in the viewsets example, over a real socket: lists, items and
//! `/challenges/active` answer `If-Modified-Since` alone with a 304 (what Squid sends for weak
//! tags, and `Compress` makes every tag weak), a write moves `Last-Modified` forward, and it
//! is never later than `Date` (RFC 9110 §8.8.2.1).

use std::thread::sleep;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[path = "common/http.rs"]
mod http;

#[path = "../examples/viewsets.rs"]
#[allow(dead_code, unreachable_pub)]
mod viewsets;

#[path = "common/example.rs"]
mod example;

use example::Example;
use http::{Conn, Response};

/// `Last-Modified` is sent once the second of the last write is over, so a read right after a
/// write may carry none: poll this many times, this far apart (two seconds in all).
const POLLS: usize = 20;
const POLL_EVERY: Duration = Duration::from_millis(100);

fn date(res: &Response, name: &str) -> SystemTime {
    httpdate::parse_http_date(res.header(name)).unwrap_or_else(|e| panic!("{name}: {e}: {res:#?}"))
}

/// A compressed read, as a browser or Squid sends it: the ETag comes back weak.
fn get(conn: &mut Conn, path: &str, since: Option<&str>) -> Response {
    let mut headers: Vec<(&str, &[u8])> = vec![("Accept-Encoding", b"gzip")];
    if let Some(since) = since {
        headers.push(("If-Modified-Since", since.as_bytes()));
    }
    conn.send("GET", path, &headers, None)
}

/// The first 200 for `path` that carries `Last-Modified`, checked against its `Date`.
fn last_modified(conn: &mut Conn, path: &str) -> String {
    for _ in 0..POLLS {
        let res = get(conn, path, None);
        assert_eq!(res.status, 200, "{res:#?}");
        if res.has("last-modified") {
            assert!(
                date(&res, "last-modified") <= date(&res, "date"),
                "Last-Modified later than Date: {res:#?}"
            );
            return res.header("last-modified").to_owned();
        }
        sleep(POLL_EVERY);
    }
    panic!("{path}: no Last-Modified within two seconds");
}

/// Waits until the current second is over, so a write made before now is in a past second.
fn next_second() {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    sleep(Duration::from_nanos(1_000_000_000 - u64::from(now.subsec_nanos())) + POLL_EVERY);
}

#[test]
fn list_and_item_answer_if_modified_since_with_304() {
    let example = Example::start("lm_reads");
    let mut conn = example.server.connect();
    for path in ["/uploads", "/uploads/1"] {
        let modified = last_modified(&mut conn, path);
        let res = get(&mut conn, path, Some(&modified));
        assert_eq!(res.status, 304, "{path}: {res:#?}");
        assert_eq!(res.header("last-modified"), modified, "{res:#?}");
        assert!(res.body.is_empty());
        // Its tag is weak (compressed): If-Modified-Since is what makes the 304.
        assert!(res.etag().starts_with("W/"), "{res:#?}");

        // A date before the last write gets the data.
        let earlier = httpdate::fmt_http_date(date(&res, "last-modified") - Duration::from_secs(1));
        assert_eq!(get(&mut conn, path, Some(&earlier)).status, 200);
    }
    // A missing row has no Last-Modified: its 404 is not a 304.
    let res = get(
        &mut conn,
        "/uploads/999",
        Some("Sun, 06 Nov 1994 08:49:37 GMT"),
    );
    assert_eq!(res.status, 404, "{res:#?}");
    assert!(!res.has("last-modified"), "{res:#?}");
}

#[test]
fn a_write_moves_last_modified_forward() {
    let example = Example::start("lm_writes");
    let mut conn = example.server.connect();
    let list = last_modified(&mut conn, "/uploads");
    let item = last_modified(&mut conn, "/uploads/1");
    next_second();

    let body = r#"{"name":"renamed.txt"}"#;
    let res = conn.send("PUT", "/uploads/1", &[], Some(body));
    assert_eq!(res.status, 200, "{res:#?}");
    // Right after the write, the old date gets the new data: never a 304 for old data.
    for (path, old) in [("/uploads", &list), ("/uploads/1", &item)] {
        let res = get(&mut conn, path, Some(old));
        assert_eq!(res.status, 200, "{path} after a write: {res:#?}");
        assert!(!res.body.is_empty(), "{res:#?}");
        let new = last_modified(&mut conn, path);
        assert!(
            httpdate::parse_http_date(&new).unwrap() > httpdate::parse_http_date(old).unwrap(),
            "{path}: {old} then {new}"
        );
        assert_eq!(get(&mut conn, path, Some(&new)).status, 304);
    }

    // A deletion moves the list's date too, though no remaining row changed.
    let list = last_modified(&mut conn, "/uploads");
    next_second();
    assert_eq!(conn.send("DELETE", "/uploads/2", &[], None).status, 204);
    assert_eq!(get(&mut conn, "/uploads", Some(&list)).status, 200);
    let new = last_modified(&mut conn, "/uploads");
    assert!(httpdate::parse_http_date(&new).unwrap() > httpdate::parse_http_date(&list).unwrap());
}

#[test]
fn challenges_active_answers_if_modified_since_with_304() {
    let example = Example::start("lm_challenges");
    // The table was written (seeded) just now: the cached answer built in that second would
    // carry no Last-Modified for its whole TTL.
    next_second();
    let mut conn = example.server.connect();
    let modified = last_modified(&mut conn, "/challenges/active");
    let res = get(&mut conn, "/challenges/active", Some(&modified));
    assert_eq!(res.status, 304, "{res:#?}");
    assert_eq!(res.header("last-modified"), modified, "{res:#?}");
    assert!(res.body.is_empty());

    let earlier = httpdate::fmt_http_date(
        httpdate::parse_http_date(&modified).unwrap() - Duration::from_secs(1),
    );
    let res = get(&mut conn, "/challenges/active", Some(&earlier));
    assert_eq!(res.status, 200, "{res:#?}");
    assert_eq!(res.header("last-modified"), modified, "{res:#?}");
}

#[test]
fn last_modified_waits_for_the_second_of_the_write_to_end() {
    let at = |secs: u64, millis: u64| UNIX_EPOCH + Duration::from_millis(secs * 1000 + millis);
    let write = 1_700_000_000_250_i64;
    assert_eq!(
        viewsets::last_modified_at(write, at(1_700_000_000, 900)),
        None
    );
    assert_eq!(
        viewsets::last_modified_at(write, at(1_700_000_001, 0)),
        Some(at(1_700_000_000, 0))
    );
    assert_eq!(viewsets::last_modified_at(-1, at(1_700_000_001, 0)), None);
}
