//! Writes under concurrency and faults, over real HTTP against the viewsets example: a
//! conditional write is a compare-and-set (never a lost update, on one instance or two
//! sharing a database file), a tag names one body only, a locked database delays only the
//! writes, a writer reads its own write, and a slow request body gets a 408.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Barrier;
use std::time::{Duration, Instant};

#[path = "common/http.rs"]
mod http;

#[path = "../examples/viewsets.rs"]
#[allow(dead_code, unreachable_pub)]
mod viewsets;

#[path = "common/example.rs"]
mod example;

use example::Example;

/// Rounds of the lost-update race; each sends [`WRITERS`] conditional writes at once.
const ROUNDS: usize = 300;
const WRITERS: usize = 16;

/// A server of the example on `db`, with `workers` worker threads.
fn serve(db: &viewsets::Db, name: &str, workers: usize) -> http::Server {
    let caches = viewsets::caches_named(
        db,
        &format!("challenges-{name}"),
        &format!("summary-{name}"),
    );
    http::Server::start_with_workers(workers, move || viewsets::app_with_caches(caches.clone()))
}

/// Every tag seen with the body it came with: a tag must never come with two bodies.
#[derive(Default)]
struct TagLedger {
    bodies: HashMap<String, String>,
}

impl TagLedger {
    fn record(&mut self, res: &http::Response) {
        let etag = res.etag().to_owned();
        // The row without its `updated_at`-independent fields dropped: the whole body.
        let body = res.body_str().to_owned();
        if let Some(seen) = self.bodies.insert(etag.clone(), body.clone()) {
            assert_eq!(
                seen, body,
                "the tag {etag} was given to two different bodies"
            );
        }
    }
}

/// [`ROUNDS`] rounds: read the row's tag from one of `servers`, then [`WRITERS`] `PUT`s with
/// that `If-Match` at once, spread over `servers`. Exactly one may win.
fn race_conditional_writes(servers: &[&http::Server]) {
    let mut ledger = TagLedger::default();
    let barrier = Barrier::new(WRITERS);
    let mut conns: Vec<http::Conn> = (0..WRITERS)
        .map(|i| servers[i % servers.len()].connect())
        .collect();
    for round in 0..ROUNDS {
        let current = servers[round % servers.len()].connect().get("/claims/1");
        assert_eq!(current.status, 200, "{current:?}");
        ledger.record(&current);
        let tag = current.etag().to_owned();
        let answers: Vec<http::Response> = std::thread::scope(|s| {
            let handles: Vec<_> = conns
                .iter_mut()
                .enumerate()
                .map(|(i, conn)| {
                    let (barrier, tag) = (&barrier, &tag);
                    s.spawn(move || {
                        let body = format!(r#"{{"name":"round {round} writer {i}"}}"#);
                        barrier.wait();
                        conn.send(
                            "PUT",
                            "/claims/1",
                            &[("If-Match", tag.as_bytes())],
                            Some(&body),
                        )
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut statuses: Vec<u16> = answers.iter().map(|res| res.status).collect();
        statuses.sort_unstable();
        let mut expected = vec![200];
        expected.extend([412; WRITERS - 1]);
        assert_eq!(
            statuses, expected,
            "round {round}: one write wins, the others find the version moved"
        );
        for res in answers.iter().filter(|res| res.status == 200) {
            assert_ne!(res.etag(), tag, "a write gives the row a new tag");
            ledger.record(res);
        }
    }
}

#[test]
fn sixteen_puts_with_one_if_match_one_wins_fifteen_get_412() {
    let app = Example::start("cas-one");
    // The example with one worker per thread of a real server: four, so requests interleave.
    let db = viewsets::open_database(&app.path).expect("database");
    let server = serve(&db, "cas-one", 4);
    race_conditional_writes(&[&server]);
}

#[test]
fn sixteen_puts_across_two_instances_on_one_file_one_wins() {
    let app = Example::start("cas-two");
    // Two instances, each with its own pools and caches, on one SQLite file.
    let (one, two) = (
        viewsets::open_database(&app.path).expect("database"),
        viewsets::open_database(&app.path).expect("database"),
    );
    let (first, second) = (serve(&one, "cas-two-a", 2), serve(&two, "cas-two-b", 2));
    race_conditional_writes(&[&first, &second]);
}

#[test]
fn a_delete_with_a_stale_if_match_is_refused_and_the_row_survives() {
    let app = Example::start("cas-delete");
    let mut conn = app.server.connect();
    let old = conn.get("/claims/2").etag().to_owned();
    let res = conn.send(
        "PATCH",
        "/claims/2",
        &[("If-Match", old.as_bytes())],
        Some(r#"{"name":"new"}"#),
    );
    assert_eq!(res.status, 200, "{res:?}");
    let res = conn.send("DELETE", "/claims/2", &[("If-Match", old.as_bytes())], None);
    assert_eq!(res.status, 412, "{res:?}");
    assert_eq!(conn.get("/claims/2").json()["name"], "new");
}

/// Another process (Python's `sqlite3`, as `sqlite3` with a `BEGIN IMMEDIATE` left open
/// would be) holding the database's write lock until dropped.
struct LockHolder(Child);

impl LockHolder {
    fn start(path: &std::path::Path) -> Self {
        const SCRIPT: &str = "import sqlite3, sys\n\
            db = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
            db.execute('BEGIN IMMEDIATE')\n\
            db.execute('UPDATE uploads SET name = name WHERE id = 1')\n\
            print('locked', flush=True)\n\
            sys.stdin.read()\n";
        let mut child = Command::new("python3")
            .args(["-c", SCRIPT])
            .arg(path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 (with its sqlite3 module) holds the lock from another process");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(
            line.trim(),
            "locked",
            "the other process took the write lock"
        );
        Self(child)
    }
}

impl Drop for LockHolder {
    fn drop(&mut self) {
        // Closing its stdin ends it; the lock goes with the process.
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

/// Percentile `p` (0..=100) of `samples`.
fn percentile(samples: &mut [Duration], p: usize) -> Duration {
    samples.sort_unstable();
    samples[(samples.len() * p / 100).min(samples.len() - 1)]
}

#[test]
fn a_locked_database_delays_only_the_writes() {
    let app = Example::start("locked-writes");
    let mut conn = app.server.connect();
    assert_eq!(conn.get("/challenges/active").status, 200);
    assert_eq!(conn.get("/state/summary").status, 200);

    // Another process in a long write transaction: it holds SQLite's write lock.
    let holder = LockHolder::start(&app.path);

    const WRITES: usize = 40;
    let bound = viewsets::BUSY_TIMEOUT + Duration::from_millis(100);
    let start = Barrier::new(WRITES + 1);
    let (writes, mut reads) = std::thread::scope(|s| {
        let writers: Vec<_> = (0..WRITES)
            .map(|i| {
                let (app, start) = (&app, &start);
                s.spawn(move || {
                    let mut conn = app.server.connect();
                    start.wait();
                    let sent = Instant::now();
                    let res = match i % 3 {
                        0 => conn.send("POST", "/uploads", &[], Some(r#"{"name":"q.csv"}"#)),
                        1 => conn.send("PUT", "/uploads/1", &[], Some(r#"{"name":"q.csv"}"#)),
                        _ => conn.send("POST", "/progress", &[], Some(r#"{"event":"q"}"#)),
                    };
                    (res, sent.elapsed())
                })
            })
            .collect();
        let reader = s.spawn(|| {
            let mut conn = app.server.connect();
            start.wait();
            let mut took = Vec::new();
            let until = Instant::now() + viewsets::BUSY_TIMEOUT * 2;
            while Instant::now() < until {
                for path in ["/challenges/active", "/metrics", "/state/summary"] {
                    let sent = Instant::now();
                    let res = conn.get(path);
                    took.push(sent.elapsed());
                    assert_eq!(res.status, 200, "{path}: {res:?}");
                    if path != "/metrics" {
                        assert!(
                            matches!(res.cache_label(), "hit" | "hit-revision"),
                            "{path} is answered from its entry: {res:?}"
                        );
                    }
                }
            }
            took
        });
        let writes: Vec<_> = writers.into_iter().map(|w| w.join().unwrap()).collect();
        (writes, reader.join().unwrap())
    });
    for (res, took) in &writes {
        assert_eq!(res.status, 503, "{res:?}");
        assert_eq!(res.json()["error"], "database busy");
        assert!(
            *took < bound,
            "a write answers within the busy timeout + 100 ms: {took:?}"
        );
    }
    let p99 = percentile(&mut reads, 99);
    assert!(
        p99 < Duration::from_millis(50),
        "cache hits and /metrics p99 {p99:?} over {} requests",
        reads.len()
    );
    drop(holder);
    let res = conn.send("POST", "/uploads", &[], Some(r#"{"name":"after.csv"}"#));
    assert_eq!(res.status, 201, "{res:?}");
}

#[test]
fn the_writer_reads_its_own_write_in_the_summary() {
    let app = Example::start("read-your-writes");
    let mut conn = app.server.connect();
    for i in 0..100 {
        // An entry to be stale: the summary as it was before the write.
        let before = conn.get("/state/summary");
        assert_eq!(before.status, 200, "{before:?}");
        let created = conn.send(
            "POST",
            "/uploads",
            &[],
            Some(&format!(r#"{{"name":"upload {i}"}}"#)),
        );
        assert_eq!(created.status, 201, "{created:?}");
        let id = created.json()["id"].clone();
        let after = conn.get("/state/summary");
        let uploads = &after.json()["core"]["uploads"];
        assert_eq!(
            uploads["count"],
            before.json()["core"]["uploads"]["count"].as_i64().unwrap() + 1,
            "read {i} after the write: {after:?}"
        );
        assert_eq!(uploads["latest"][0]["id"], id, "read {i}: {after:?}");
        assert_ne!(after.cache_label(), "stale", "{after:?}");
    }
}

#[test]
fn a_slow_request_body_gets_408() {
    let app = Example::start("slow-body");
    let mut stream = TcpStream::connect(app.server.addr()).unwrap();
    stream
        .set_read_timeout(Some(viewsets::BODY_TIMEOUT * 3))
        .unwrap();
    let sent = Instant::now();
    stream
        .write_all(
            b"POST /uploads HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"na",
        )
        .unwrap();
    // The rest of the body never comes.
    let mut answer = Vec::new();
    let mut buf = [0; 1024];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    let took = sent.elapsed();
    let head = String::from_utf8_lossy(&answer).to_lowercase();
    assert!(head.starts_with("http/1.1 408"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    assert!(
        took >= viewsets::BODY_TIMEOUT && took < viewsets::BODY_TIMEOUT + Duration::from_secs(2),
        "{took:?}"
    );
    // Nothing was written.
    let list = app.server.connect().get("/uploads");
    assert_eq!(list.json()["count"], 3);
}
