//! Viewsets: a small REST API on SQLite whose reads answer 304 and whose writes answer 412
//! *before* the handler runs, from one cheap query.
//!
//! Three resources, `/uploads`, `/claims` and `/reports`, are served by one generic
//! [`TableViewSet`] (Django REST framework style: list, create, retrieve, update,
//! partial update, destroy), mounted with [`viewset::register`] inside [`ConditionalGet`] and
//! `Compress`:
//!
//! | request | answer |
//! | --- | --- |
//! | `GET`/`HEAD /uploads` | 200 `{"count":N,"results":[…]}` |
//! | `POST /uploads` `{"name":"…"}` | 201 + `Location` + the row |
//! | `GET`/`HEAD /uploads/{id}` | 200 `{"id":1,"name":"…","updated_at":<unix millis>}`, or 404 |
//! | `PUT /uploads/{id}` `{"name":"…"}` | 200 + the row |
//! | `PATCH /uploads/{id}` `{"name":"…"}` (optional) | 200 + the row |
//! | `DELETE /uploads/{id}` | 204 |
//!
//! The `impl ViewSet` block is annotated `#[etag_cached(max_age = 60)]`, so every action
//! computes its validator first and only then, if needed, runs its body
//! (`HandlerPolicy::respond` under the hood):
//!
//! - the list's ETag is the table's revision, `"{table}-{count}-{max updated_at}"`
//!   ([`TableViewSet::list_etag`], one `SELECT COUNT(*), MAX(updated_at)`);
//! - an item's ETag is `"{table}-{id}-{updated_at}"` ([`TableViewSet::item_etag`]), absent when
//!   the row does not exist (the handler then answers 404).
//!
//! So a matching `If-None-Match` costs one query and no serialization (304, the handler never
//! runs: see [`LIST_BUILDS`]), and `PUT`/`PATCH`/`DELETE` with a stale `If-Match` answer 412
//! with the row untouched (lost-update protection). Reads get
//! `Cache-Control: max-age=60, must-revalidate`; writes and errors get
//! `no-cache, no-store, must-revalidate`. Writes set `updated_at` to a stamp later than any the
//! table holds, so two writes within one millisecond still change the revision.
//!
//! Bad input gets a JSON 4xx with an `error` field: malformed JSON, a missing or non-string or
//! empty `name` → 400; an unknown or non-integer id → 404; a method a path does not answer →
//! 405 with `Allow`.
//!
//! ```text
//! cargo run --example viewsets
//! BIND=127.0.0.1:18090 DATABASE_URL=/tmp/vs.sqlite3 cargo run --example viewsets
//! cargo run --example viewsets -- --database /tmp/other.sqlite3
//! ```
//!
//! `BIND` sets the listen address (default `127.0.0.1:8080`). The database is a SQLite file
//! chosen by `--database <path>`, else `DATABASE_URL` (a path; a `sqlite://` prefix is
//! accepted), else `viewsets.sqlite3` in the current directory; it is created, migrated and
//! seeded with a few rows at start. `RUST_LOG=actix_conditional=debug` logs each 304/412.
//!
//! The app is split so a test can reuse it (`tests/viewsets_over_http.rs` includes this file):
//! [`open_database`], [`configure`] and [`app`]; `main` only reads the settings.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_conditional::viewset::{self, ViewSet, json_body};
use actix_conditional::{ConditionalGet, etag_cached};
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Compress;
use actix_web::web::{Bytes, ServiceConfig};
use actix_web::{App, Error, HttpRequest, HttpResponse, HttpServer};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

/// The address used when `BIND` is not set.
pub const DEFAULT_BIND: &str = "127.0.0.1:8080";

/// The database file used when neither `--database` nor `DATABASE_URL` is given.
pub const DEFAULT_DATABASE: &str = "viewsets.sqlite3";

/// The tables, each served as a viewset at `/{table}`.
pub const TABLES: [&str; 3] = ["uploads", "claims", "reports"];

/// How many times a list body was built (incremented *after* the validators, inside the
/// handler): a 304 answered from the revision leaves it unchanged.
pub static LIST_BUILDS: AtomicU64 = AtomicU64::new(0);

/// The one connection every worker shares.
///
/// Queries here are a few microseconds on a local file, so handlers run them on the worker
/// thread while holding the lock: blocking a worker that briefly is acceptable for this
/// example. A slow or remote database would go through `web::block` or an async driver.
pub type Db = Arc<Mutex<Connection>>;

/// One row, as every endpoint serializes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    /// Primary key.
    pub id: i64,
    /// Display name, never empty.
    pub name: String,
    /// Last write, in Unix milliseconds; strictly increases with every write to the table.
    pub updated_at: i64,
}

/// `GET /{table}`.
#[derive(Debug, Serialize)]
struct Page {
    count: usize,
    results: Vec<Row>,
}

/// Body of `POST` and `PUT`: every writable field.
#[derive(Debug, Deserialize)]
struct FullInput {
    name: String,
}

/// Body of `PATCH`: any writable field.
#[derive(Debug, Deserialize)]
struct PartialInput {
    name: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// The database
// ---------------------------------------------------------------------------------------------

/// Rows each table gets when it is empty.
const SEED: [(&str, &[&str]); 3] = [
    (
        "uploads",
        &["holiday-photos.zip", "invoice-2024-03.pdf", "notes.txt"],
    ),
    ("claims", &["Water damage, kitchen", "Cracked windscreen"]),
    ("reports", &["Q1 revenue", "Weekly sign-ups"]),
];

/// Opens (creating if needed) the SQLite file at `path`, switches it to WAL, creates the tables
/// and seeds the empty ones.
pub fn open_database(path: impl AsRef<Path>) -> rusqlite::Result<Db> {
    let conn = Connection::open(path)?;
    // WAL: readers (say, `sqlite3` on the same file) do not block the server's writes.
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    tracing::debug!(journal_mode = mode, "viewsets: database opened");
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.busy_timeout(Duration::from_secs(5))?;
    for table in TABLES {
        conn.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                id INTEGER PRIMARY KEY,
                name TEXT NOT NULL,
                updated_at INTEGER NOT NULL /* unix millis */
            );"
        ))?;
    }
    for (table, names) in SEED {
        let count: i64 =
            conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))?;
        if count == 0 {
            for name in names {
                let stamp = next_stamp(&conn, table)?;
                conn.execute(
                    &format!("INSERT INTO {table} (name, updated_at) VALUES (?1, ?2)"),
                    params![name, stamp],
                )?;
            }
        }
    }
    Ok(Arc::new(Mutex::new(conn)))
}

/// The last `updated_at` this process handed out.
static LAST_STAMP: AtomicI64 = AtomicI64::new(0);

/// An `updated_at` for a write to `table`: now in Unix milliseconds, but always later than every
/// stamp in the table and every stamp handed out before, so two writes within one millisecond
/// still give the table (and the row) a new revision.
fn next_stamp(conn: &Connection, table: &str) -> rusqlite::Result<i64> {
    let table_max: i64 = conn.query_row(
        &format!("SELECT COALESCE(MAX(updated_at), 0) FROM {table}"),
        [],
        |r| r.get(0),
    )?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let floor = now.max(table_max + 1);
    let previous = LAST_STAMP
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
            Some(floor.max(last + 1))
        })
        .unwrap_or_else(|last| last);
    Ok(floor.max(previous + 1))
}

/// `17` → `Some(17)`; anything but plain ASCII digits that fit an `i64` → `None` (a 404).
fn parse_id(id: &str) -> Option<i64> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    id.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// The viewset
// ---------------------------------------------------------------------------------------------

/// One table served as a DRF-style viewset at `/{table}` and `/{table}/{id}`.
#[derive(Debug, Clone)]
pub struct TableViewSet {
    table: &'static str,
    db: Db,
}

impl TableViewSet {
    /// The viewset for `table`, one of [`TABLES`] (its name goes into SQL as it is).
    pub fn new(table: &'static str, db: Db) -> Self {
        assert!(TABLES.contains(&table), "unknown table {table:?}");
        Self { table, db }
    }

    /// The list's validator: the table's revision, `{table}-{count}-{max updated_at}`, from one
    /// query. Inserts and updates raise the maximum and deletes lower the count, so every
    /// write changes it. `None` (no ETag, the handler runs) if the query fails.
    pub fn list_etag(&self, _req: &HttpRequest) -> Option<String> {
        let revision = self.conn().query_row(
            &format!(
                "SELECT COUNT(*), COALESCE(MAX(updated_at), 0) FROM {}",
                self.table
            ),
            [],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
        );
        match revision {
            Ok((count, max)) => Some(format!("{}-{count}-{max}", self.table)),
            Err(err) => {
                tracing::error!(table = self.table, %err, "viewsets: revision query failed");
                None
            }
        }
    }

    /// An item's validator: `{table}-{id}-{updated_at}`, or `None` if the row does not exist
    /// (then `If-Match: *` fails with 412 and the handler answers 404).
    pub fn item_etag(&self, req: &HttpRequest) -> Option<String> {
        let id = parse_id(req.match_info().get("id")?)?;
        match self.find(id) {
            Ok(row) => row.map(|row| self.row_etag(&row)),
            Err(err) => {
                tracing::error!(table = self.table, id, %err, "viewsets: item query failed");
                None
            }
        }
    }

    fn row_etag(&self, row: &Row) -> String {
        format!("\"{}-{}-{}\"", self.table, row.id, row.updated_at)
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a half-done statement behind: SQLite
        // statements are atomic, so a poisoned lock is still a usable connection.
        self.db.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn find(&self, id: i64) -> rusqlite::Result<Option<Row>> {
        self.conn()
            .query_row(
                &format!(
                    "SELECT id, name, updated_at FROM {} WHERE id = ?1",
                    self.table
                ),
                [id],
                row_from_sql,
            )
            .optional()
    }

    fn all(&self) -> rusqlite::Result<Vec<Row>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT id, name, updated_at FROM {} ORDER BY id",
            self.table
        ))?;
        stmt.query_map([], row_from_sql)?.collect()
    }

    fn insert(&self, name: &str) -> rusqlite::Result<Row> {
        let conn = self.conn();
        let updated_at = next_stamp(&conn, self.table)?;
        conn.execute(
            &format!(
                "INSERT INTO {} (name, updated_at) VALUES (?1, ?2)",
                self.table
            ),
            params![name, updated_at],
        )?;
        Ok(Row {
            id: conn.last_insert_rowid(),
            name: name.to_owned(),
            updated_at,
        })
    }

    /// Sets `name` (if given) and a new `updated_at`; `None` if the row does not exist.
    fn update(&self, id: i64, name: Option<&str>) -> rusqlite::Result<Option<Row>> {
        let conn = self.conn();
        let updated_at = next_stamp(&conn, self.table)?;
        conn.query_row(
            &format!(
                "UPDATE {} SET name = COALESCE(?1, name), updated_at = ?2 WHERE id = ?3
                 RETURNING id, name, updated_at",
                self.table
            ),
            params![name, updated_at, id],
            row_from_sql,
        )
        .optional()
    }

    /// `true` if the row existed.
    fn delete(&self, id: i64) -> rusqlite::Result<bool> {
        let deleted = self
            .conn()
            .execute(&format!("DELETE FROM {} WHERE id = ?1", self.table), [id])?;
        Ok(deleted > 0)
    }

    /// The row as JSON, with its ETag so a client can send it back in `If-Match` (the policy
    /// adds validators itself only on GET and HEAD).
    fn row_response(&self, mut builder: actix_web::HttpResponseBuilder, row: &Row) -> HttpResponse {
        builder
            .insert_header((header::ETAG, self.row_etag(row)))
            .json(row)
    }

    /// `PUT` and `PATCH`, once the body is parsed.
    fn write(&self, id: &str, name: Option<&str>) -> HttpResponse {
        if let Some(name) = name
            && let Err(res) = validate_name(name)
        {
            return res;
        }
        let Some(key) = parse_id(id) else {
            return not_found(id);
        };
        match self.update(key, name) {
            Ok(Some(row)) => self.row_response(HttpResponse::Ok(), &row),
            Ok(None) => not_found(id),
            Err(err) => database_error(&err),
        }
    }
}

fn row_from_sql(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok(Row {
        id: r.get(0)?,
        name: r.get(1)?,
        updated_at: r.get(2)?,
    })
}

/// A name must hold something besides whitespace.
#[allow(
    clippy::result_large_err,
    reason = "the error is the response, sent at once"
)]
fn validate_name(name: &str) -> Result<(), HttpResponse> {
    if name.trim().is_empty() {
        return Err(HttpResponse::BadRequest().json(serde_json::json!({
            "error": "invalid name",
            "detail": "name must not be empty",
        })));
    }
    Ok(())
}

fn not_found(id: &str) -> HttpResponse {
    HttpResponse::NotFound().json(serde_json::json!({ "error": "not found", "id": id }))
}

fn database_error(err: &rusqlite::Error) -> HttpResponse {
    tracing::error!(%err, "viewsets: database error");
    HttpResponse::InternalServerError().json(serde_json::json!({ "error": "database error" }))
}

/// Every action answers through `#[etag_cached]`: the method's validator (if any) runs first,
/// a 304 or 412 is answered without running the body, and reads get
/// `Cache-Control: max-age=60, must-revalidate` (writes and errors
/// `no-cache, no-store, must-revalidate`). The macro also fills in `ACTIONS` from the methods
/// defined here: all six.
#[etag_cached(max_age = 60)]
impl ViewSet for TableViewSet {
    #[etag_cached(etag = Self::list_etag)]
    async fn list(&self, _req: HttpRequest) -> HttpResponse {
        LIST_BUILDS.fetch_add(1, Ordering::Relaxed);
        match self.all() {
            Ok(results) => HttpResponse::Ok().json(Page {
                count: results.len(),
                results,
            }),
            Err(err) => database_error(&err),
        }
    }

    async fn create(&self, req: HttpRequest, body: Bytes) -> HttpResponse {
        let input: FullInput = match json_body(&body) {
            Ok(input) => input,
            Err(res) => return res,
        };
        if let Err(res) = validate_name(&input.name) {
            return res;
        }
        match self.insert(&input.name) {
            Ok(row) => {
                let location = format!("{}/{}", req.path().trim_end_matches('/'), row.id);
                let mut builder = HttpResponse::Created();
                builder.insert_header((header::LOCATION, location));
                self.row_response(builder, &row)
            }
            Err(err) => database_error(&err),
        }
    }

    #[etag_cached(etag = Self::item_etag)]
    async fn retrieve(&self, _req: HttpRequest, id: String) -> HttpResponse {
        let found = match parse_id(&id) {
            Some(key) => self.find(key),
            None => Ok(None),
        };
        match found {
            // No ETag here: the macro sets the validator's on GET/HEAD.
            Ok(Some(row)) => HttpResponse::Ok().json(row),
            Ok(None) => not_found(&id),
            Err(err) => database_error(&err),
        }
    }

    #[etag_cached(etag = Self::item_etag)]
    async fn update(&self, _req: HttpRequest, id: String, body: Bytes) -> HttpResponse {
        match json_body::<FullInput>(&body) {
            Ok(input) => self.write(&id, Some(&input.name)),
            Err(res) => res,
        }
    }

    #[etag_cached(etag = Self::item_etag)]
    async fn partial_update(&self, _req: HttpRequest, id: String, body: Bytes) -> HttpResponse {
        match json_body::<PartialInput>(&body) {
            Ok(input) => self.write(&id, input.name.as_deref()),
            Err(res) => res,
        }
    }

    #[etag_cached(etag = Self::item_etag)]
    async fn destroy(&self, _req: HttpRequest, id: String) -> HttpResponse {
        let Some(key) = parse_id(&id) else {
            return not_found(&id);
        };
        match self.delete(key) {
            Ok(true) => HttpResponse::NoContent().finish(),
            Ok(false) => not_found(&id),
            Err(err) => database_error(&err),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The app
// ---------------------------------------------------------------------------------------------

/// Mounts one [`TableViewSet`] per table of [`TABLES`] at `/{table}`, all on `db`.
pub fn configure(cfg: &mut ServiceConfig, db: &Db) {
    for table in TABLES {
        viewset::register(cfg, table, TableViewSet::new(table, Arc::clone(db)));
    }
}

/// The complete app: the viewsets from [`configure`] inside [`ConditionalGet`] and `Compress`.
///
/// `ConditionalGet` is registered before `Compress`, so `Compress` wraps it (see the README).
/// The handlers set their own ETags, so the middleware hashes nothing here; it weakens the
/// tag (`W/"…"`) when the client accepts a compressed body.
pub fn app(
    db: Db,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = Error,
        InitError = (),
    >,
> {
    App::new()
        .wrap(ConditionalGet::default())
        .wrap(Compress::default())
        .configure(move |cfg| configure(cfg, &db))
}

/// The database file: `--database <path>` (or `--database=<path>`) in `args`, else
/// `database_url` (`DATABASE_URL`; a `sqlite://` or `sqlite:` prefix is dropped), else
/// [`DEFAULT_DATABASE`].
pub fn database_path(
    args: impl IntoIterator<Item = String>,
    database_url: Option<String>,
) -> Result<PathBuf, String> {
    let mut args = args.into_iter();
    let mut from_args = None;
    while let Some(arg) = args.next() {
        if arg == "--database" {
            from_args = Some(args.next().ok_or("--database needs a path")?);
        } else if let Some(path) = arg.strip_prefix("--database=") {
            from_args = Some(path.to_owned());
        } else {
            return Err(format!(
                "unknown argument {arg:?}; usage: viewsets [--database <path>]"
            ));
        }
    }
    let path = from_args
        .or(database_url)
        .unwrap_or_else(|| DEFAULT_DATABASE.to_owned());
    let path = path
        .strip_prefix("sqlite://")
        .or_else(|| path.strip_prefix("sqlite:"))
        .unwrap_or(&path);
    if path.is_empty() {
        return Err("the database path is empty".to_owned());
    }
    Ok(PathBuf::from(path))
}

/// The `curl` lines `main` prints for `url` (no trailing `/`).
pub fn curl_lines(url: &str) -> Vec<String> {
    let etag = "ETAG=$(curl -sI {url}/uploads | grep -i '^etag:' | cut -d' ' -f2 | tr -d '\\r')"
        .replace("{url}", url);
    vec![
        format!("curl -i {url}/uploads"),
        format!("{etag}  # or paste the ETag by hand"),
        format!("curl -i -H \"If-None-Match: $ETAG\" {url}/uploads"),
        format!(
            "curl -i -X POST -H 'Content-Type: application/json' -d '{{\"name\":\"report.csv\"}}' {url}/uploads"
        ),
        format!(
            "curl -i -X PUT -H 'If-Match: \"uploads-1-0\"' -d '{{\"name\":\"renamed\"}}' {url}/uploads/1"
        ),
        format!("curl -I {url}/uploads"),
        format!("curl -i -X DELETE {url}/uploads/2"),
        format!("curl -i {url}/uploads/2"),
    ]
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    // Logs go to stderr, so stdout holds only the lines below.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();

    let invalid = |msg: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, msg);
    let path = database_path(std::env::args().skip(1), std::env::var("DATABASE_URL").ok())
        .map_err(invalid)?;
    let db = open_database(&path).map_err(|err| invalid(format!("{}: {err}", path.display())))?;

    let bind = std::env::var("BIND").unwrap_or_else(|_| DEFAULT_BIND.to_owned());
    // Built outside the factory closure: every worker shares this one connection.
    let server = HttpServer::new(move || app(Arc::clone(&db))).bind(&bind)?;
    for addr in server.addrs() {
        let url = format!("http://{addr}");
        println!(
            "Serving /uploads, /claims and /reports from {} on {url}/",
            path.display()
        );
        println!("Try (RUST_LOG=actix_conditional=debug logs each 304 and 412):");
        for line in curl_lines(&url) {
            println!("  {line}");
        }
    }
    server.run().await
}
