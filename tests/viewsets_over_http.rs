//! The viewsets example over a real socket: its app served by `actix_web::HttpServer` on
//! `127.0.0.1:0` (one worker, its own thread) with a temporary SQLite file, spoken to in raw
//! HTTP/1.1 so the assertions see exactly what goes over the wire.
//!
//! Every read has a timeout, so a hang fails the test within seconds. The tests run one at a
//! time (see [`SERIAL`]) because [`viewsets::LIST_BUILDS`] is one counter for the process.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde_json::{Value, json};

#[path = "common/http.rs"]
mod http;

#[path = "../examples/viewsets.rs"]
#[allow(dead_code, unreachable_pub)]
mod viewsets;

use http::{Conn, Response};

const READ_POLICY: &str = "max-age=60, must-revalidate";
const MUTATION_DIRECTIVES: [&str; 3] = ["no-cache", "no-store", "must-revalidate"];

/// Held by every test for its whole run: `LIST_BUILDS` is shared by all servers.
static SERIAL: Mutex<()> = Mutex::new(());

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
            "viewsets-test-{}-{}.sqlite3",
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

/// A running `HttpServer` on a fresh database; dropping it stops the server, then deletes
/// the file.
#[derive(Debug)]
struct Server {
    // Dropped in declaration order: the server stops before its database is removed.
    server: http::Server,
    _db: TempDb,
    _serial: MutexGuard<'static, ()>,
}

impl Server {
    fn start() -> Self {
        let serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        let temp = TempDb::new();
        let db = viewsets::open_database(&temp.path).expect("open the temp database");
        Self {
            server: http::Server::start(move || viewsets::app(db.clone())),
            _db: temp,
            _serial: serial,
        }
    }

    fn connect(&self) -> Conn {
        self.server.connect()
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn list_builds() -> u64 {
    viewsets::LIST_BUILDS.load(Ordering::SeqCst)
}

/// `"` + text + `"`, no `W/`.
fn assert_strong(etag: &str) {
    assert!(
        etag.len() > 2 && etag.starts_with('"') && etag.ends_with('"'),
        "not a strong tag: {etag:?}"
    );
}

/// A JSON 4xx of `status` whose body has an `error` string; returns the body.
fn assert_json_error(res: &Response, status: u16) -> Value {
    assert_eq!(res.status, status, "{res:#?}");
    assert!(
        res.header("content-type").starts_with("application/json"),
        "{res:#?}"
    );
    let body = res.json();
    assert!(body["error"].is_string(), "no error field: {body}");
    body
}

/// Creates a row in `/uploads` and returns it.
fn create(conn: &mut Conn, name: &str) -> Value {
    let body = json!({ "name": name }).to_string();
    let res = conn.send("POST", "/uploads", &[], Some(&body));
    assert_eq!(res.status, 201, "{res:#?}");
    res.json()
}

// ---------------------------------------------------------------------------------------------
// Reads
// ---------------------------------------------------------------------------------------------

#[test]
fn list_answers_200_with_a_strong_etag_then_304_without_running_the_handler() {
    let server = Server::start();
    let mut conn = server.connect();

    let before = list_builds();
    let res = conn.get("/uploads");
    assert_eq!(res.status, 200, "{res:#?}");
    assert_eq!(list_builds(), before + 1, "the list handler ran once");
    let etag = res.etag().to_owned();
    assert_strong(&etag);
    // The table's revision: its counter, moved once by each of the three seeded inserts.
    assert_eq!(etag, "\"uploads-3\"", "table revision");
    let cache_control = res.cache_control();
    assert!(cache_control.contains(&"max-age=60"), "{res:#?}");
    assert!(cache_control.contains(&"must-revalidate"), "{res:#?}");
    assert!(
        res.header("content-type").starts_with("application/json"),
        "{res:#?}"
    );
    let body = res.json();
    assert_eq!(body["count"], 3, "{body}");
    assert_eq!(body["results"].as_array().unwrap().len(), 3, "{body}");
    let first = &body["results"][0];
    assert_eq!(first["id"], 1, "{body}");
    assert!(
        first["name"].is_string() && first["updated_at"].is_i64(),
        "{body}"
    );

    let builds = list_builds();
    let res = conn.send(
        "GET",
        "/uploads",
        &[("If-None-Match", etag.as_bytes())],
        None,
    );
    assert_eq!(res.status, 304, "{res:#?}");
    assert!(res.body.is_empty());
    assert_eq!(res.get("etag"), Some(etag.as_str()), "{res:#?}");
    assert_eq!(res.header("cache-control"), READ_POLICY, "{res:#?}");
    assert!(res.get("content-length").is_none(), "{res:#?}");
    conn.assert_silent();
    assert_eq!(
        list_builds(),
        builds,
        "the 304 was answered before the handler"
    );

    // A stale tag gets the full list again.
    let res = conn.send(
        "GET",
        "/uploads",
        &[("If-None-Match", b"\"uploads-0-0\"")],
        None,
    );
    assert_eq!(res.status, 200, "{res:#?}");
    assert_eq!(list_builds(), builds + 1);
}

#[test]
fn retrieve_answers_the_row_with_its_revision_and_304_on_a_match() {
    let server = Server::start();
    let mut conn = server.connect();

    let res = conn.get("/uploads/1");
    assert_eq!(res.status, 200, "{res:#?}");
    let row = res.json();
    let etag = res.etag().to_owned();
    assert_eq!(etag, format!("\"uploads-1-{}\"", row["version"]));
    assert_eq!(res.header("cache-control"), READ_POLICY, "{res:#?}");

    let res = conn.send(
        "GET",
        "/uploads/1",
        &[("If-None-Match", etag.as_bytes())],
        None,
    );
    assert_eq!(res.status, 304, "{res:#?}");
    assert_eq!(res.get("etag"), Some(etag.as_str()));
    conn.assert_silent();
}

#[test]
fn head_list_matches_get_headers_without_a_body() {
    let server = Server::start();
    let mut conn = server.connect();

    let get = conn.get("/uploads");
    assert_eq!(get.status, 200, "{get:#?}");
    let head = conn.send("HEAD", "/uploads", &[], None);
    assert_eq!(head.status, 200, "{head:#?}");
    for name in ["etag", "content-type", "content-length", "cache-control"] {
        assert_eq!(
            head.get(name),
            get.get(name),
            "{name}: {head:#?} vs {get:#?}"
        );
    }
    assert_eq!(
        head.header("content-length"),
        get.body.len().to_string(),
        "{head:#?}"
    );
    conn.assert_silent();

    // And HEAD revalidates like GET.
    let res = conn.send(
        "HEAD",
        "/uploads",
        &[("If-None-Match", get.etag().as_bytes())],
        None,
    );
    assert_eq!(res.status, 304, "{res:#?}");
    conn.assert_silent();
}

#[test]
fn other_viewsets_answer_their_lists() {
    let server = Server::start();
    let mut conn = server.connect();
    for table in ["claims", "reports"] {
        let res = conn.get(&format!("/{table}"));
        assert_eq!(res.status, 200, "{res:#?}");
        assert!(res.etag().starts_with(&format!("\"{table}-")), "{res:#?}");
        assert!(res.json()["count"].as_u64().unwrap() > 0, "{res:#?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Writes
// ---------------------------------------------------------------------------------------------

#[test]
fn post_creates_201_with_location_no_cache_and_changes_the_list_etag() {
    let server = Server::start();
    let mut conn = server.connect();
    let before = conn.get("/uploads").etag().to_owned();

    let res = conn.send("POST", "/uploads", &[], Some(r#"{"name":"x"}"#));
    assert_eq!(res.status, 201, "{res:#?}");
    let mut directives = res.cache_control();
    directives.sort_unstable();
    let mut expected = MUTATION_DIRECTIVES.to_vec();
    expected.sort_unstable();
    assert_eq!(directives, expected, "{res:#?}");
    let row = res.json();
    assert_eq!(row["name"], "x", "{row}");
    let id = row["id"].as_i64().unwrap();
    assert_eq!(res.header("location"), format!("/uploads/{id}"));

    let res = conn.get(&format!("/uploads/{id}"));
    assert_eq!(res.status, 200, "{res:#?}");
    assert_eq!(res.json(), row);

    let after = conn.get("/uploads");
    assert_ne!(after.etag(), before, "the list revision changed");
    assert_eq!(after.json()["count"], 4);
    // The old tag no longer matches.
    let res = conn.send(
        "GET",
        "/uploads",
        &[("If-None-Match", before.as_bytes())],
        None,
    );
    assert_eq!(res.status, 200, "{res:#?}");
}

#[test]
fn two_quick_writes_each_change_the_revision() {
    let server = Server::start();
    let mut conn = server.connect();
    let mut seen = vec![conn.get("/uploads").etag().to_owned()];
    for name in ["a", "b", "c"] {
        let body = json!({ "name": name }).to_string();
        let res = conn.send("PATCH", "/uploads/1", &[], Some(&body));
        assert_eq!(res.status, 200, "{res:#?}");
        let etag = conn.get("/uploads").etag().to_owned();
        assert!(!seen.contains(&etag), "{etag} repeated: {seen:?}");
        seen.push(etag);
    }
}

#[test]
fn put_with_a_stale_if_match_is_412_and_leaves_the_row_unchanged() {
    let server = Server::start();
    let mut conn = server.connect();
    let original = conn.get("/uploads/1");
    assert_eq!(original.status, 200, "{original:#?}");
    let etag = original.etag().to_owned();
    let row = original.json();

    let stale = "\"uploads-1-0\"";
    let res = conn.send(
        "PUT",
        "/uploads/1",
        &[("If-Match", stale.as_bytes())],
        Some(r#"{"name":"lost update"}"#),
    );
    assert_eq!(
        assert_json_error(&res, 412)["error"],
        "precondition failed",
        "{res:#?}"
    );
    let res = conn.get("/uploads/1");
    assert_eq!(res.json(), row, "the row is unchanged");
    assert_eq!(res.etag(), etag);

    let res = conn.send(
        "PUT",
        "/uploads/1",
        &[("If-Match", etag.as_bytes())],
        Some(r#"{"name":"renamed"}"#),
    );
    assert_eq!(res.status, 200, "{res:#?}");
    let updated = res.json();
    let new_etag = res.etag().to_owned();
    assert_eq!(updated["name"], "renamed");
    assert!(updated["updated_at"].as_i64() > row["updated_at"].as_i64());
    assert_ne!(new_etag, etag);

    let res = conn.get("/uploads/1");
    assert_eq!(res.json(), updated, "the row changed");
    assert_eq!(res.etag(), new_etag, "the PUT answered the row's new ETag");

    // The ETag the client had is now stale too.
    let res = conn.send(
        "PATCH",
        "/uploads/1",
        &[("If-Match", etag.as_bytes())],
        Some(r#"{"name":"again"}"#),
    );
    assert_eq!(res.status, 412, "{res:#?}");
}

#[test]
fn if_match_star_on_a_missing_row_is_412() {
    let server = Server::start();
    let mut conn = server.connect();
    let res = conn.send(
        "PUT",
        "/uploads/999",
        &[("If-Match", b"*")],
        Some(r#"{"name":"x"}"#),
    );
    assert_eq!(res.status, 412, "{res:#?}");
    let res = conn.send(
        "PUT",
        "/uploads/1",
        &[("If-Match", b"*")],
        Some(r#"{"name":"x"}"#),
    );
    assert_eq!(res.status, 200, "{res:#?}");
}

#[test]
fn delete_answers_204_then_the_row_is_a_json_404() {
    let server = Server::start();
    let mut conn = server.connect();
    let before = conn.get("/uploads").etag().to_owned();
    let row = create(&mut conn, "short-lived");
    let id = row["id"].as_i64().unwrap();
    let with_row = conn.get("/uploads").etag().to_owned();
    assert_ne!(with_row, before);

    let res = conn.send("DELETE", &format!("/uploads/{id}"), &[], None);
    assert_eq!(res.status, 204, "{res:#?}");
    assert!(res.body.is_empty());
    conn.assert_silent();

    let res = conn.get(&format!("/uploads/{id}"));
    let body = assert_json_error(&res, 404);
    assert_eq!(body["id"], id.to_string(), "{body}");
    assert!(res.get("etag").is_none(), "{res:#?}");

    let after = conn.get("/uploads").etag().to_owned();
    assert_ne!(
        after, with_row,
        "DELETE lowered the count, so the revision changed"
    );

    let res = conn.send("DELETE", &format!("/uploads/{id}"), &[], None);
    assert_json_error(&res, 404);
}

#[test]
fn delete_with_a_stale_if_match_is_412_and_keeps_the_row() {
    let server = Server::start();
    let mut conn = server.connect();
    let res = conn.send(
        "DELETE",
        "/uploads/2",
        &[("If-Match", b"\"uploads-2-0\"")],
        None,
    );
    assert_eq!(res.status, 412, "{res:#?}");
    assert_eq!(conn.get("/uploads/2").status, 200);
}

// ---------------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------------

#[test]
fn bad_input_answers_json_4xx_with_an_error_field() {
    let server = Server::start();
    let mut conn = server.connect();
    let cases: [(&str, &str, Option<&str>, u16); 10] = [
        ("POST", "/uploads", Some("{not json"), 400),
        ("POST", "/uploads", Some("{}"), 400),
        ("POST", "/uploads", Some(r#"{"name":42}"#), 400),
        ("POST", "/uploads", Some(r#"{"name":"  "}"#), 400),
        ("PUT", "/uploads/1", Some(r#"{"nom":"x"}"#), 400),
        ("PATCH", "/uploads/1", Some(r#"{"name":""}"#), 400),
        ("GET", "/uploads/999", None, 404),
        ("GET", "/uploads/abc", None, 404),
        ("PUT", "/uploads/abc", Some(r#"{"name":"x"}"#), 404),
        ("DELETE", "/uploads/999", None, 404),
    ];
    for (method, path, body, status) in cases {
        let res = conn.send(method, path, &[], body);
        assert_json_error(&res, status);
        let directives = res.cache_control();
        assert!(
            directives.contains(&"no-store"),
            "{method} {path}: {res:#?}"
        );
    }
    // Nothing was written by the bad requests.
    assert_eq!(conn.get("/uploads").json()["count"], 3);
    assert_eq!(conn.get("/uploads/1").json()["name"], "holiday-photos.zip");
}

#[test]
fn patch_on_the_collection_is_405_with_allow() {
    let server = Server::start();
    let mut conn = server.connect();
    let res = conn.send("PATCH", "/uploads", &[], Some(r#"{"name":"x"}"#));
    assert_json_error(&res, 405);
    let allow: Vec<&str> = res.header("allow").split(", ").collect();
    assert_eq!(allow, ["GET", "HEAD", "POST"], "{res:#?}");

    // The body was read before routing (`body_deadline`), so the connection stays usable.
    assert_eq!(res.get("connection"), None, "{res:#?}");

    let res = server
        .connect()
        .send("POST", "/uploads/1", &[], Some(r#"{"name":"x"}"#));
    assert_json_error(&res, 405);
    let allow: Vec<&str> = res.header("allow").split(", ").collect();
    for method in ["GET", "HEAD", "PUT", "PATCH", "DELETE"] {
        assert!(allow.contains(&method), "{method} missing: {res:#?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------

#[test]
fn database_path_prefers_the_flag_then_database_url_then_the_default() {
    let args = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let url = || Some("sqlite:///tmp/from-env.sqlite3".to_owned());
    assert_eq!(
        viewsets::database_path(args(&["--database", "a.sqlite3"]), url()),
        Ok(PathBuf::from("a.sqlite3"))
    );
    assert_eq!(
        viewsets::database_path(args(&["--database=b.sqlite3"]), None),
        Ok(PathBuf::from("b.sqlite3"))
    );
    assert_eq!(
        viewsets::database_path(args(&[]), url()),
        Ok(PathBuf::from("/tmp/from-env.sqlite3"))
    );
    assert_eq!(
        viewsets::database_path(args(&[]), None),
        Ok(PathBuf::from(viewsets::DEFAULT_DATABASE))
    );
    assert!(viewsets::database_path(args(&["--database"]), None).is_err());
    assert!(viewsets::database_path(args(&["--nope"]), None).is_err());
}

#[test]
fn reopening_the_database_keeps_rows_and_does_not_reseed() {
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let temp = TempDb::new();
    let db = viewsets::open_database(&temp.path).unwrap();
    drop(db);
    let conn = rusqlite::Connection::open(&temp.path).unwrap();
    conn.execute("DELETE FROM claims WHERE id = 1", []).unwrap();
    drop(conn);
    let _db = viewsets::open_database(&temp.path).unwrap();
    let conn = rusqlite::Connection::open(&temp.path).unwrap();
    let count: i64 = conn
        .query_row("SELECT COUNT(*) FROM claims", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 1, "the existing table was kept, not reseeded");
}

#[test]
fn every_error_has_a_json_body_and_metrics_answer_head() {
    let server = Server::start();
    let mut conn = server.connect();
    // A path nobody serves.
    let body = assert_json_error(&conn.get("/nowhere"), 404);
    assert_eq!(body["path"], "/nowhere");
    // A method a plain resource does not answer (actix's own 405, given a body here).
    let res = conn.send("POST", "/metrics", &[], Some("{}"));
    assert_eq!(assert_json_error(&res, 405)["error"], "method not allowed");
    // HEAD /metrics: the GET's headers.
    let res = conn.exchange(b"HEAD /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    assert_eq!(res.status, 200, "{res:#?}");
    assert!(
        res.header("content-type").starts_with("text/plain"),
        "{res:#?}"
    );
    // A 304 stays empty: it is not an error.
    let etag = conn.get("/uploads").etag().to_owned();
    let res = conn.send(
        "GET",
        "/uploads",
        &[("If-None-Match", etag.as_bytes())],
        None,
    );
    assert_eq!(res.status, 304);
    assert!(res.body_str().is_empty());
}

#[test]
fn reset_is_a_flag_or_an_environment_variable() {
    let args = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let parsed =
        viewsets::settings(args(&["--reset", "--database", "x.sqlite3"]), None, None).unwrap();
    assert_eq!(
        parsed,
        viewsets::Settings {
            database: PathBuf::from("x.sqlite3"),
            reset: true
        }
    );
    assert!(
        viewsets::settings(args(&[]), None, Some("1".into()))
            .unwrap()
            .reset
    );
    assert!(
        !viewsets::settings(args(&[]), None, Some("0".into()))
            .unwrap()
            .reset
    );
    assert!(!viewsets::settings(args(&[]), None, None).unwrap().reset);

    // --reset starts from the seed data: the file and its WAL files are removed.
    let temp = TempDb::new();
    drop(viewsets::open_database(&temp.path).unwrap());
    let conn = rusqlite::Connection::open(&temp.path).unwrap();
    conn.execute("DELETE FROM uploads", []).unwrap();
    drop(conn);
    viewsets::remove_database(&temp.path).unwrap();
    drop(viewsets::open_database(&temp.path).unwrap());
    let conn = rusqlite::Connection::open(&temp.path).unwrap();
    let count: i64 = conn
        .query_row("SELECT COUNT(*) FROM uploads", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 3, "seeded again");
}
