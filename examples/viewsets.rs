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
//! | `GET`/`HEAD /uploads/{id}` | 200 `{"id":1,"name":"…","updated_at":<unix millis>,"version":7}`, or 404 |
//! | `PUT /uploads/{id}` `{"name":"…"}` | 200 + the row |
//! | `PATCH /uploads/{id}` `{"name":"…"}` (optional) | 200 + the row |
//! | `DELETE /uploads/{id}` | 204 |
//!
//! The `impl ViewSet` block is annotated `#[etag_cached(max_age = 60)]`, so every action
//! computes its validator first and only then, if needed, runs its body
//! (`HandlerPolicy::respond` under the hood):
//!
//! - the list's ETag is the table's revision, `"{table}-{revision}"`
//!   ([`TableViewSet::list_etag`], one primary-key lookup in `revisions`);
//! - an item's ETag is `"{table}-{id}-{version}"` ([`TableViewSet::item_etag`]), absent when
//!   the row does not exist (the handler then answers 404). Versions and revisions are
//!   counters the database bumps inside each write (triggers, see [`open_database`]): never
//!   the same tag for two bodies, however many processes write;
//! - both also send `Last-Modified`: the table's last write, deletions included, for the list
//!   ([`TableViewSet::list_modified`]), the row's `updated_at` for an item
//!   ([`TableViewSet::item_modified`]), each once its second is over ([`last_modified_at`]).
//!   Caches that skip weak tags (Squid revalidates them only with `If-Modified-Since`, and
//!   `Compress` makes every tag weak) get their 304s from it.
//!
//! So a matching `If-None-Match` costs one query and no serialization (304, the handler never
//! runs: see [`LIST_BUILDS`]), and `PUT`/`PATCH`/`DELETE` with a stale `If-Match` answer 412
//! with the row untouched. The check alone would be a race (two writes with the same
//! `If-Match` can both pass it), so the write itself is a compare-and-set on the version the
//! check saw (`UPDATE … WHERE id = ? AND version = ?`, with [`Validated`]); when it changes
//! nothing, the answer is the same 412 ([`PreconditionFailed`]). Of 16 writes sent at once
//! with one `If-Match`, one wins and 15 get 412 (`tests/writes.rs`). Reads get
//! `Cache-Control: max-age=60, must-revalidate`; writes and errors get
//! `no-cache, no-store, must-revalidate`. Every successful write also invalidates the
//! summary's `core` section, so the writer's next `/state/summary` shows it.
//!
//! Bad input gets a JSON 4xx with an `error` field: malformed JSON, a missing or non-string or
//! empty `name` → 400; an unknown or non-integer id → 404; a method a path does not answer →
//! 405 with `Allow`.
//!
//! # Server-side caches
//!
//! Next to the viewsets, three endpoints show [`ResponseCache`] (see [`caches`]):
//!
//! | request | answer |
//! | --- | --- |
//! | `GET`/`HEAD /challenges/active` | 200 `{"count":N,"results":[…]}`, `Cache-Control: public, max-age=15`, `Last-Modified` of the `challenges` table; TTL cache, 30 s |
//! | `GET`/`HEAD /state/summary` | 200 `{"core":{…},"recent_progress":[…]}`; revision-gated, in two sections |
//! | `POST /progress` `{"event":"…"}` | 201 + the row; invalidates the `recent_progress` section |
//! | `GET /metrics` | the caches' counters in the Prometheus text format |
//! | `GET /demo` | a page that fetches `/state/summary` twice: the browser's second fetch is a conditional request, answered 304 |
//!
//! Every cached response says what happened in `Cache-Status` (RFC 9211):
//! `actix-conditional; fwd=miss; …`, `…; hit; ttl=N` (TTL), `…; hit; detail=revision` (the
//! fingerprint is unchanged), `…; fwd=stale; detail=section` (only `recent_progress` changed:
//! rebuilt and merged in the request), `…; hit; detail=stale` (the core changed: the old
//! bytes at once while one background refresh rebuilds it), `…; collapsed` (waited for another
//! request's build). `?refresh=true` forces a rebuild (`fwd=request`). The summary's ETag
//! follows its fingerprint, so `If-None-Match` is a 304 for one revision query.
//!
//! # In front: Varnish, a CDN
//!
//! Every answer lists its cache groups (`Cache-Groups`: the viewset's prefix, or the cache's
//! name) and every 2xx write what it changed (`Cache-Group-Invalidation`). With
//! `VARNISH_PURGE_URL=http://127.0.0.1:6081/` (and `--features purge`) the answers carry `xkey`
//! tags and each write purges that Varnish before it answers, waiting [`PURGE_WAIT`] at most
//! ([`edge_for_varnish`]; `docs/edge.md` has the VCL). `/challenges/active` declares a lifetime
//! that covers its `Age`, so caches in front never receive it already stale.
//!
//! The fingerprints come from a `revisions` table of per-table counters that SQLite triggers
//! bump on every `INSERT`, `UPDATE` and `DELETE` (see [`table_revisions`]).
//!
//! # Faults
//!
//! - Queries never run on actix's worker threads: [`Db`] runs them on blocking threads, reads
//!   on a pool of read-only connections, writes on the one write connection.
//! - Another connection holds the database's write lock (a long transaction, `sqlite3` with
//!   a `BEGIN IMMEDIATE` left open): a write waits at most [`BUSY_TIMEOUT`] (250 ms), for the
//!   write connection and then for the lock, then answers `503` with `Retry-After: 1`,
//!   `Cache-Control: no-store` and `{"error":"database busy"}`, invalidating nothing. Reads
//!   go on undelayed (WAL: readers never wait for SQLite's write lock), cached ones from
//!   their entries, and so does `/metrics`. Any other database error is a `500` with
//!   `{"error":"database error"}`, and the caches serve their stale bytes over either while
//!   they are within their stale window.
//! - A request body that has not fully arrived [`BODY_TIMEOUT`] (5 s) after its headers is
//!   answered `408` and the connection closed ([`body_deadline`]); one over [`BODY_LIMIT`] is a
//!   `413`. (actix-web itself bounds only the headers.)
//! - A database path that cannot be opened (a missing directory) stops the server at start
//!   with the path and SQLite's message, before it listens.
//! - Redis down or slow (with `--features redis`): the caches run on this process's memory;
//!   see `docs/redis.md`.
//!
//! ```text
//! cargo run --example viewsets
//! BIND=127.0.0.1:18090 DATABASE_URL=/tmp/vs.sqlite3 cargo run --example viewsets
//! cargo run --example viewsets -- --database /tmp/other.sqlite3
//! cargo run --example viewsets -- --reset   # delete the file first: start from the seed data
//! # two instances on one database, sharing their caches through one Redis:
//! REDIS_URL=redis://127.0.0.1:6379/ BIND=127.0.0.1:8081 DATABASE_URL=/tmp/vs.sqlite3 cargo run --features redis --example viewsets
//! REDIS_URL=redis://127.0.0.1:6379/ BIND=127.0.0.1:8082 DATABASE_URL=/tmp/vs.sqlite3 cargo run --features redis --example viewsets
//! ```
//!
//! `BIND` sets the listen address (default `127.0.0.1:8080`). The database is a SQLite file
//! chosen by `--database <path>`, else `DATABASE_URL` (a path; a `sqlite://` prefix is
//! accepted), else `viewsets.sqlite3` in the current directory; it is created, migrated and
//! seeded with a few rows at start. `RUST_LOG=actix_conditional=debug` logs each 304/412.
//! Built with `--features redis` and given `REDIS_URL`, the two caches are shared with every
//! instance on the same Redis ([`caches_on_redis`]; see `docs/redis.md`).
//!
//! The app is split so a test can reuse it (`tests/viewsets_over_http.rs` and
//! `tests/caches_over_http.rs` include this file): [`open_database`], [`caches`],
//! [`configure`], [`configure_caches`] and [`app_with_caches`]; `main` only reads the settings.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix_conditional::condition::{PreconditionFailed, Validated};
use actix_conditional::edge::Edge;
#[cfg(feature = "redis")]
use actix_conditional::response_cache::RedisBackend;
use actix_conditional::response_cache::{SectionsCacheBuilder, TtlCacheBuilder};
use actix_conditional::viewset::{self, ViewSet, json_body};
use actix_conditional::{
    CachePolicy, CacheScope, ConditionalGet, ResponseCache, Section, SectionedCache, etag_cached,
};
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::{Method, header};
use actix_web::middleware::Compress;
use actix_web::middleware::{Next, from_fn};
use actix_web::web::{self, Bytes, ServiceConfig};
use actix_web::{
    App, Error, HttpMessage as _, HttpRequest, HttpResponse, HttpServer, ResponseError,
};
use deadpool_sqlite::{Hook, HookError, Pool, PoolError, Runtime, Timeouts};
use futures_util::StreamExt as _;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};

/// How long a query may wait, for a free connection and then for another connection's lock,
/// before it answers 503.
pub const BUSY_TIMEOUT: Duration = Duration::from_millis(250);

/// The address used when `BIND` is not set.
pub const DEFAULT_BIND: &str = "127.0.0.1:8080";

/// The database file used when neither `--database` nor `DATABASE_URL` is given.
pub const DEFAULT_DATABASE: &str = "viewsets.sqlite3";

/// The tables, each served as a viewset at `/{table}`.
pub const TABLES: [&str; 3] = ["uploads", "claims", "reports"];

/// How many times a list body was built (incremented *after* the validators, inside the
/// handler): a 304 answered from the revision leaves it unchanged.
pub static LIST_BUILDS: AtomicU64 = AtomicU64::new(0);

/// One row, as every endpoint serializes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    /// Primary key.
    pub id: i64,
    /// Display name, never empty.
    pub name: String,
    /// Last write, in Unix milliseconds; strictly increases with every write to the table.
    pub updated_at: i64,
    /// Set by the database on every write, from the table's revision counter: never the
    /// same for two bodies of the table (the row's ETag is `"{table}-{id}-{version}"`).
    pub version: i64,
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

/// Challenges seeded into an empty `challenges` table: (title, points, active).
const SEED_CHALLENGES: [(&str, i64, bool); 4] = [
    ("Upload three files this week", 30, true),
    ("File a claim with photos", 50, true),
    ("Read the weekly report", 10, true),
    ("Spring clean-up (ended)", 20, false),
];

/// Tables whose every write bumps a counter in `revisions` (by trigger): the inputs of the
/// `/state/summary` fingerprints, and the viewsets' validators.
pub const REVISIONED: [&str; 4] = ["uploads", "claims", "reports", "progress"];

/// Tables whose last write time (`INSERT`, `UPDATE` or `DELETE`, by trigger) is kept in
/// `modified`: the `Last-Modified` of their lists (see [`table_last_modified`]).
pub const MODIFIED: [&str; 4] = ["uploads", "claims", "reports", "challenges"];

/// How many connections serve reads at once (their queries never wait for SQLite's write
/// lock: WAL).
pub const READ_CONNECTIONS: usize = 4;

/// `updated_at` for a write to `{table}`, computed by SQLite inside the write: now in Unix
/// milliseconds, but later than every stamp the table holds, so rows sort by their last
/// write even within one millisecond and across processes (the write lock orders them).
/// Only ordering and `Last-Modified` use it: validators come from versions (see
/// [`open_database`]).
const NEXT_STAMP: &str = "MAX(CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER), \
                          (SELECT COALESCE(MAX(updated_at), 0) + 1 FROM {table}))";

/// The example's database: SQLite connections in two pools whose every query runs on a
/// blocking thread (`spawn_blocking`, through `deadpool-sqlite`), never on an actix worker.
///
/// - Reads take one of [`READ_CONNECTIONS`] read-only connections. In WAL mode they never
///   wait for SQLite's write lock, so another process holding it delays no read.
/// - Writes take the one write connection (SQLite allows one writer at a time anyway) and run
///   in a `BEGIN IMMEDIATE` transaction.
///
/// Each call has one deadline, [`BUSY_TIMEOUT`], for waiting for a connection and then for
/// SQLite's lock: past it the call fails with `SQLITE_BUSY` (a 503, see [`database_error`]).
/// So a locked database delays only the requests that write, each by at most the busy
/// timeout, and cache hits and `/metrics` (no query) are not delayed at all.
#[derive(Clone)]
pub struct Db {
    pools: Arc<Pools>,
}

struct Pools {
    reads: Pool,
    writes: Pool,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("reads", &self.pools.reads.status())
            .field("writes", &self.pools.writes.status())
            .finish()
    }
}

impl Drop for Pools {
    fn drop(&mut self) {
        // deadpool-sync closes each connection on a blocking thread of the current Tokio
        // runtime, and panics where there is none (the last clone dropped on a plain thread,
        // as a test does once its server stopped): lend it one for the closing.
        if tokio::runtime::Handle::try_current().is_err()
            && let Ok(runtime) = tokio::runtime::Builder::new_current_thread().build()
        {
            let _entered = runtime.enter();
            self.reads.close();
            self.writes.close();
        }
    }
}

impl Db {
    /// Runs `query` on a read-only connection, off the worker thread.
    pub async fn read<T, F>(&self, query: F) -> rusqlite::Result<T>
    where
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        run(&self.pools.reads, move |conn| query(conn)).await
    }

    /// Runs `write` in a `BEGIN IMMEDIATE` transaction on the write connection, off the worker
    /// thread; commits if it returns `Ok`.
    pub async fn write<T, F>(&self, write: F) -> rusqlite::Result<T>
    where
        F: FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        run(&self.pools.writes, move |conn| {
            // IMMEDIATE: take the write lock first, so the busy timeout covers the wait for
            // it (a deferred transaction that reads first can fail at once on upgrade).
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = write(&tx)?;
            tx.commit()?;
            Ok(out)
        })
        .await
    }
}

/// Takes a connection from `pool` and runs `f` on a blocking thread, both within one
/// [`BUSY_TIMEOUT`].
async fn run<T, F>(pool: &Pool, f: F) -> rusqlite::Result<T>
where
    F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    T: Send + 'static,
{
    let deadline = Instant::now() + BUSY_TIMEOUT;
    let timeouts = Timeouts {
        wait: Some(BUSY_TIMEOUT),
        create: Some(BUSY_TIMEOUT),
        recycle: Some(BUSY_TIMEOUT),
    };
    let conn = match pool.timeout_get(&timeouts).await {
        Ok(conn) => conn,
        Err(PoolError::Backend(err)) => return Err(err),
        Err(PoolError::Timeout(_)) => return Err(busy("no connection free")),
        Err(err) => return Err(other_error(err)),
    };
    let Some(left) = deadline
        .checked_duration_since(Instant::now())
        .filter(|left| !left.is_zero())
    else {
        return Err(busy("deadline passed waiting for a connection"));
    };
    conn.interact(move |conn| {
        // What is left of this call's deadline, for SQLite's lock.
        conn.busy_timeout(left)?;
        f(conn)
    })
    .await
    .map_err(other_error)?
}

/// `SQLITE_BUSY`, as SQLite itself reports a lock it waited for in vain.
fn busy(why: &str) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
        Some(why.to_owned()),
    )
}

/// Any other failure of the pool (a panicking query, a closed pool) as a database error.
fn other_error(err: impl std::fmt::Display) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
        Some(err.to_string()),
    )
}

/// A pool of connections to `path`; `read_only` ones refuse writes (`query_only`).
fn pool(path: &Path, size: usize, read_only: bool) -> Pool {
    let setup = move |conn: &mut Connection| -> rusqlite::Result<()> {
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "query_only", read_only)
    };
    deadpool_sqlite::Config::new(path)
        .builder(Runtime::Tokio1)
        .unwrap_or_else(|never| match never {})
        .max_size(size)
        .post_create(Hook::async_fn(move |conn, _| {
            Box::pin(async move {
                conn.interact(setup)
                    .await
                    .map_err(|err| HookError::message(err.to_string()))?
                    .map_err(HookError::Backend)
            })
        }))
        .build()
        // Only a pool with timeouts and no runtime fails to build; this one has both.
        .unwrap_or_else(|err| unreachable!("the pool has a runtime: {err}"))
}

/// Opens (creating if needed) the SQLite file at `path`, switches it to WAL, creates the tables
/// (the viewsets' three, `challenges`, `progress`, and the `revisions` counters with their
/// triggers), seeds the empty ones, and returns the pools. Every step is idempotent:
/// reopening an existing file keeps its rows.
///
/// Every row of the viewsets' tables has a `version`, set by trigger on every `INSERT` and
/// `UPDATE` to its table's new `revisions` counter. Counters only grow and are bumped inside
/// the write's transaction, so a version is never given twice, not to two rows, not by two
/// processes writing at once, not after a delete: `"{table}-{id}-{version}"` names one body
/// only. (A process clock cannot promise that: two processes writing in the same
/// millisecond would give one tag to two bodies.)
pub fn open_database(path: impl AsRef<Path>) -> rusqlite::Result<Db> {
    let path = path.as_ref();
    let conn = Connection::open(path)?;
    // WAL: readers never wait for the writer, nor the writer for readers.
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    tracing::debug!(journal_mode = mode, "viewsets: database opened");
    conn.busy_timeout(BUSY_TIMEOUT * 20)?;
    for table in TABLES {
        conn.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                id INTEGER PRIMARY KEY,
                name TEXT NOT NULL,
                updated_at INTEGER NOT NULL /* unix millis */,
                version INTEGER NOT NULL DEFAULT 0
            );"
        ))?;
        // Files from before versions: the column, then a version per row (below).
        let has_version: bool = conn.query_row(
            &format!(
                "SELECT COUNT(*) > 0 FROM pragma_table_info('{table}') WHERE name = 'version'"
            ),
            [],
            |r| r.get(0),
        )?;
        if !has_version {
            conn.execute_batch(&format!(
                "ALTER TABLE {table} ADD COLUMN version INTEGER NOT NULL DEFAULT 0;"
            ))?;
        }
    }
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS challenges (
            id INTEGER PRIMARY KEY,
            title TEXT NOT NULL,
            points INTEGER NOT NULL,
            active INTEGER NOT NULL /* 0 or 1 */
        );
        CREATE TABLE IF NOT EXISTS progress (
            id INTEGER PRIMARY KEY,
            event TEXT NOT NULL,
            created_at INTEGER NOT NULL /* unix millis */
        );
        CREATE TABLE IF NOT EXISTS revisions (
            name TEXT PRIMARY KEY,
            rev INTEGER NOT NULL
        ) WITHOUT ROWID;",
    )?;
    // One counter per table, bumped by a trigger on every row inserted, updated or deleted,
    // in the same transaction as the write: see `table_revisions` for why. For the viewsets'
    // tables the same trigger gives the row the new counter as its version: one trigger, so
    // the bump and the read of the bumped value cannot be reordered.
    for table in REVISIONED {
        conn.execute(
            "INSERT OR IGNORE INTO revisions (name, rev) VALUES (?1, 0)",
            [table],
        )?;
        let bump = format!("UPDATE revisions SET rev = rev + 1 WHERE name = '{table}';");
        let versioned = TABLES.contains(&table);
        let stamp_row = |row: &str| {
            if versioned {
                format!(
                    "UPDATE {table} SET version = (SELECT rev FROM revisions WHERE name = '{table}')
                     WHERE id = {row}.id;"
                )
            } else {
                String::new()
            }
        };
        // An UPDATE that sets `version` itself (the trigger's own, above) is not a new write:
        // `WHEN` keeps the trigger from counting it twice.
        let triggers = [
            ("ins", "INSERT", "", stamp_row("NEW")),
            (
                "upd",
                "UPDATE",
                if versioned {
                    "WHEN NEW.version IS OLD.version"
                } else {
                    ""
                },
                stamp_row("NEW"),
            ),
            ("del", "DELETE", "", String::new()),
        ];
        for (suffix, event, when, stamp) in triggers {
            // Replaced, not kept: files from before versions have triggers without them.
            conn.execute_batch(&format!(
                "DROP TRIGGER IF EXISTS {table}_rev_{suffix};
                 CREATE TRIGGER {table}_rev_{suffix} AFTER {event} ON {table} {when}
                 BEGIN
                     {bump}
                     {stamp}
                 END;"
            ))?;
        }
        if versioned {
            // Rows from before versions get one each (the trigger above assigns it).
            conn.execute(
                &format!("UPDATE {table} SET name = name WHERE version = 0"),
                [],
            )?;
        }
    }
    // The last write to each table, in Unix milliseconds, strictly increasing. A deletion
    // counts: a list's `Last-Modified` must move when a row leaves it, which `MAX(updated_at)`
    // would not. A file that predates this table starts at "now", which is later than its
    // real last write: safe for `If-Modified-Since`, at worst one full answer more.
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS modified (
            name TEXT PRIMARY KEY,
            at INTEGER NOT NULL /* unix millis */
        ) WITHOUT ROWID;",
    )?;
    for table in MODIFIED {
        conn.execute(
            "INSERT OR IGNORE INTO modified (name, at) VALUES (?1, ?2)",
            params![table, unix_millis(SystemTime::now())],
        )?;
        for (suffix, event) in [("ins", "INSERT"), ("upd", "UPDATE"), ("del", "DELETE")] {
            conn.execute_batch(&format!(
                "CREATE TRIGGER IF NOT EXISTS {table}_mod_{suffix} AFTER {event} ON {table}
                 BEGIN
                     UPDATE modified
                     SET at = MAX(at + 1, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))
                     WHERE name = '{table}';
                 END;"
            ))?;
        }
    }
    let challenges: i64 = conn.query_row("SELECT COUNT(*) FROM challenges", [], |r| r.get(0))?;
    if challenges == 0 {
        for (title, points, active) in SEED_CHALLENGES {
            conn.execute(
                "INSERT INTO challenges (title, points, active) VALUES (?1, ?2, ?3)",
                params![title, points, active],
            )?;
        }
    }
    for (table, names) in SEED {
        let count: i64 =
            conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))?;
        if count == 0 {
            for name in names {
                insert_row(&conn, table, name)?;
            }
        }
    }
    drop(conn);
    Ok(Db {
        pools: Arc::new(Pools {
            reads: pool(path, READ_CONNECTIONS, true),
            writes: pool(path, 1, false),
        }),
    })
}

fn unix_millis(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The `Last-Modified` to send, as of `now`, for a write at `millis` (Unix milliseconds): its
/// whole second, once that second is over; `None` (no `Last-Modified`) while it is not.
///
/// `Last-Modified` has one-second granularity and must not be later than `Date`
/// (RFC 9110 §8.8.2.1). Sent during the second of the write, it would be that second, and a
/// second write within the same second would keep it: a cache revalidating with
/// `If-Modified-Since` would get a 304 for the older data (RFC 9110 §13.1.3 calls such a
/// date a weak validator). Once the second is over, every later write falls in a later second.
pub fn last_modified_at(millis: i64, now: SystemTime) -> Option<SystemTime> {
    let secs = u64::try_from(millis.div_euclid(1000)).ok()?;
    let now_secs = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
    (secs < now_secs).then(|| UNIX_EPOCH + Duration::from_secs(secs))
}

/// The `Last-Modified` of `table`'s contents (its last write, deletions included, from the
/// `modified` table), per [`last_modified_at`]; `None` too if the query fails.
pub async fn table_last_modified(db: &Db, table: &'static str) -> Option<SystemTime> {
    let at = db
        .read(move |conn| {
            conn.query_row("SELECT at FROM modified WHERE name = ?1", [table], |r| {
                r.get::<_, i64>(0)
            })
        })
        .await;
    match at {
        Ok(at) => last_modified_at(at, SystemTime::now()),
        Err(err) => {
            tracing::error!(table, %err, "viewsets: last-modified query failed");
            None
        }
    }
}

/// The `revisions` counter of `table`: it moves with every write to the table.
fn table_revision(conn: &Connection, table: &str) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT rev FROM revisions WHERE name = ?1")?
        .query_row([table], |r| r.get(0))
}

/// Inserts a row named `name` into `table`; its `version` comes from the trigger.
fn insert_row(conn: &Connection, table: &str, name: &str) -> rusqlite::Result<Row> {
    let stamp = NEXT_STAMP.replace("{table}", table);
    let id: i64 = conn.query_row(
        &format!("INSERT INTO {table} (name, updated_at) VALUES (?1, {stamp}) RETURNING id"),
        [name],
        |r| r.get(0),
    )?;
    // Read back: RETURNING does not see what the trigger wrote (the version).
    find_row(conn, table, id)?.ok_or(rusqlite::Error::QueryReturnedNoRows)
}

fn find_row(conn: &Connection, table: &str, id: i64) -> rusqlite::Result<Option<Row>> {
    conn.prepare_cached(&format!(
        "SELECT id, name, updated_at, version FROM {table} WHERE id = ?1"
    ))?
    .query_row([id], row_from_sql)
    .optional()
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

/// What a viewset write invalidates in the summary cache: the `core` section lists the
/// viewsets' tables.
pub const CORE: &str = "core";

/// One table served as a DRF-style viewset at `/{table}` and `/{table}/{id}`.
#[derive(Debug, Clone)]
pub struct TableViewSet {
    table: &'static str,
    db: Db,
    /// Invalidated (its [`CORE`] section) after every successful write, so the writer's next
    /// `/state/summary` shows the write (read-your-writes).
    summary: Option<SectionedCache>,
}

impl TableViewSet {
    /// The viewset for `table`, one of [`TABLES`] (its name goes into SQL as it is).
    pub fn new(table: &'static str, db: Db) -> Self {
        assert!(TABLES.contains(&table), "unknown table {table:?}");
        Self {
            table,
            db,
            summary: None,
        }
    }

    /// Every successful write also invalidates `summary`'s [`CORE`] section.
    #[must_use]
    pub fn invalidating(mut self, summary: SectionedCache) -> Self {
        self.summary = Some(summary);
        self
    }

    /// The list's validator: `{table}-{revision}`, the table's `revisions` counter (one
    /// primary-key lookup). Every insert, update and delete moves it, whoever writes, and it
    /// never moves back. `None` (no ETag, the handler runs) if the query fails.
    pub async fn list_etag(&self, _req: &HttpRequest) -> Option<String> {
        let table = self.table;
        match self.db.read(move |conn| table_revision(conn, table)).await {
            Ok(revision) => Some(format!("{table}-{revision}")),
            Err(err) => {
                tracing::error!(table, %err, "viewsets: revision query failed");
                None
            }
        }
    }

    /// An item's validator: `{table}-{id}-{version}`, or `None` if the row does not exist
    /// (then `If-Match: *` fails with 412 and the handler answers 404).
    pub async fn item_etag(&self, req: &HttpRequest) -> Option<String> {
        let id = parse_id(req.match_info().get("id")?)?;
        match self.find(id).await {
            Ok(row) => row.map(|row| self.row_etag(&row)),
            Err(err) => {
                tracing::error!(table = self.table, id, %err, "viewsets: item query failed");
                None
            }
        }
    }

    /// The list's `Last-Modified`: the table's last write, deletions included
    /// ([`table_last_modified`]). Caches that do not revalidate weak tags (Squid sends only
    /// `If-Modified-Since` for them, and compression makes every tag weak) get 304s from it.
    pub async fn list_modified(&self, _req: &HttpRequest) -> Option<SystemTime> {
        table_last_modified(&self.db, self.table).await
    }

    /// An item's `Last-Modified`: its `updated_at` ([`last_modified_at`]), or `None` if the row
    /// does not exist.
    pub async fn item_modified(&self, req: &HttpRequest) -> Option<SystemTime> {
        let id = parse_id(req.match_info().get("id")?)?;
        match self.find(id).await {
            Ok(row) => last_modified_at(row?.updated_at, SystemTime::now()),
            Err(err) => {
                tracing::error!(table = self.table, id, %err, "viewsets: item query failed");
                None
            }
        }
    }

    fn row_etag(&self, row: &Row) -> String {
        format!("\"{}-{}-{}\"", self.table, row.id, row.version)
    }

    async fn find(&self, id: i64) -> rusqlite::Result<Option<Row>> {
        let table = self.table;
        self.db.read(move |conn| find_row(conn, table, id)).await
    }

    async fn all(&self) -> rusqlite::Result<Vec<Row>> {
        let table = self.table;
        self.db
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT id, name, updated_at, version FROM {table} ORDER BY id"
                ))?;
                stmt.query_map([], row_from_sql)?.collect()
            })
            .await
    }

    async fn insert(&self, name: String) -> rusqlite::Result<Row> {
        let table = self.table;
        self.db.write(move |tx| insert_row(tx, table, &name)).await
    }

    /// Sets `name` (if given) and a new `updated_at` on row `id`, if its version is still
    /// `expected` (any version for `None`): one statement in one transaction, so no other
    /// write can land between the comparison and the change. `None` if no row changed.
    async fn update(
        &self,
        id: i64,
        name: Option<String>,
        expected: Option<i64>,
    ) -> rusqlite::Result<Option<Row>> {
        let table = self.table;
        let stamp = NEXT_STAMP.replace("{table}", table);
        self.db
            .write(move |tx| {
                let changed = tx.execute(
                    &format!(
                        "UPDATE {table} SET name = COALESCE(?1, name), updated_at = {stamp}
                         WHERE id = ?2 AND (?3 IS NULL OR version = ?3)"
                    ),
                    params![name, id, expected],
                )?;
                if changed == 0 {
                    return Ok(None);
                }
                // Read back in the same transaction: the trigger set the new version.
                find_row(tx, table, id)
            })
            .await
    }

    /// Deletes row `id` if its version is still `expected` (any for `None`); `true` if it did.
    async fn delete(&self, id: i64, expected: Option<i64>) -> rusqlite::Result<bool> {
        let table = self.table;
        self.db
            .write(move |tx| {
                let deleted = tx.execute(
                    &format!("DELETE FROM {table} WHERE id = ?1 AND (?2 IS NULL OR version = ?2)"),
                    params![id, expected],
                )?;
                Ok(deleted > 0)
            })
            .await
    }

    /// The row as JSON, with its ETag so a client can send it back in `If-Match` (the policy
    /// adds validators itself only on GET and HEAD).
    fn row_response(&self, mut builder: actix_web::HttpResponseBuilder, row: &Row) -> HttpResponse {
        builder
            .insert_header((header::ETAG, self.row_etag(row)))
            .json(row)
    }

    /// After a successful write: the summary's `core` section is rebuilt for the next read
    /// (read-your-writes), and caches downstream are told (`Cache-Group-Invalidation`).
    async fn written(&self, mut res: HttpResponse) -> HttpResponse {
        if let Some(summary) = &self.summary {
            summary
                .invalidate_in(&mut res, &CacheScope::section(CORE))
                .await;
        }
        res
    }

    /// `PUT` and `PATCH`, once the body is parsed: compare-and-set on the version that
    /// `If-Match` was checked against (see [`Validated`]).
    async fn write(&self, req: &HttpRequest, id: &str, name: Option<String>) -> HttpResponse {
        if let Some(name) = &name
            && let Err(res) = validate_name(name)
        {
            return res;
        }
        let Some(key) = parse_id(id) else {
            return not_found(id);
        };
        let validated = Validated::of(req);
        let expected = match expected_version(validated.as_ref()) {
            Ok(expected) => expected,
            Err(conflict) => return conflict.error_response(),
        };
        match self.update(key, name, expected).await {
            Ok(Some(row)) => {
                self.written(self.row_response(HttpResponse::Ok(), &row))
                    .await
            }
            Ok(None) => unchanged(validated.as_ref(), id),
            Err(err) => database_error(&err),
        }
    }
}

/// The version a conditional write must still find: the one in the tag `If-Match` was
/// checked against (`"{table}-{id}-{version}"`), `None` for an unconditional write or
/// `If-Match: *` (then only existence counts).
fn expected_version(validated: Option<&Validated>) -> Result<Option<i64>, PreconditionFailed> {
    let Some(tag) = validated.and_then(Validated::expected_etag) else {
        return Ok(None);
    };
    // Our own tags always parse; anything else cannot name a version of ours.
    let version = tag.tag().rsplit_once('-').and_then(|(_, v)| v.parse().ok());
    version.map(Some).ok_or(PreconditionFailed)
}

/// A write that changed nothing: the 412 of a failed precondition if the write was
/// conditional (the row changed or went away after the check), else a 404.
fn unchanged(validated: Option<&Validated>, id: &str) -> HttpResponse {
    match validated.map(|validated| validated.ensure_written(0)) {
        Some(Err(conflict)) => conflict.error_response(),
        _ => not_found(id),
    }
}

fn row_from_sql(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok(Row {
        id: r.get(0)?,
        name: r.get(1)?,
        updated_at: r.get(2)?,
        version: r.get(3)?,
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

/// A database error as a response: 503 with `Retry-After` while another connection holds the
/// database locked past [`BUSY_TIMEOUT`] (a transient state: retrying is right), else 500.
fn database_error(err: &rusqlite::Error) -> HttpResponse {
    if is_busy(err) {
        tracing::warn!(%err, "viewsets: database locked by another connection");
        return HttpResponse::ServiceUnavailable()
            .insert_header((header::RETRY_AFTER, "1"))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(serde_json::json!({ "error": "database busy" }));
    }
    tracing::error!(%err, "viewsets: database error");
    HttpResponse::InternalServerError()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({ "error": "database error" }))
}

/// Whether SQLite gave up waiting for a lock (`SQLITE_BUSY`, `SQLITE_LOCKED`).
fn is_busy(err: &rusqlite::Error) -> bool {
    matches!(
        err.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// Every action answers through `#[etag_cached]`: the method's validator (if any) runs first,
/// a 304 or 412 is answered without running the body, and reads get
/// `Cache-Control: max-age=60, must-revalidate` (writes and errors
/// `no-cache, no-store, must-revalidate`). The macro also fills in `ACTIONS` from the methods
/// defined here: all six. Writes with `If-Match` are then compare-and-set on the version the
/// check saw, so of two writes with the same `If-Match` one gets a 412 even when both pass
/// the check.
#[etag_cached(max_age = 60)]
impl ViewSet for TableViewSet {
    #[etag_cached(etag = Self::list_etag, last_modified = Self::list_modified)]
    async fn list(&self, _req: HttpRequest) -> HttpResponse {
        LIST_BUILDS.fetch_add(1, Ordering::Relaxed);
        match self.all().await {
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
        match self.insert(input.name).await {
            Ok(row) => {
                let location = format!("{}/{}", req.path().trim_end_matches('/'), row.id);
                let mut builder = HttpResponse::Created();
                builder.insert_header((header::LOCATION, location));
                self.written(self.row_response(builder, &row)).await
            }
            Err(err) => database_error(&err),
        }
    }

    #[etag_cached(etag = Self::item_etag, last_modified = Self::item_modified)]
    async fn retrieve(&self, _req: HttpRequest, id: String) -> HttpResponse {
        let found = match parse_id(&id) {
            Some(key) => self.find(key).await,
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
    async fn update(&self, req: HttpRequest, id: String, body: Bytes) -> HttpResponse {
        match json_body::<FullInput>(&body) {
            Ok(input) => self.write(&req, &id, Some(input.name)).await,
            Err(res) => res,
        }
    }

    #[etag_cached(etag = Self::item_etag)]
    async fn partial_update(&self, req: HttpRequest, id: String, body: Bytes) -> HttpResponse {
        match json_body::<PartialInput>(&body) {
            Ok(input) => self.write(&req, &id, input.name).await,
            Err(res) => res,
        }
    }

    #[etag_cached(etag = Self::item_etag)]
    async fn destroy(&self, req: HttpRequest, id: String) -> HttpResponse {
        let Some(key) = parse_id(&id) else {
            return not_found(&id);
        };
        let validated = Validated::of(&req);
        let expected = match expected_version(validated.as_ref()) {
            Ok(expected) => expected,
            Err(conflict) => return conflict.error_response(),
        };
        match self.delete(key, expected).await {
            Ok(true) => self.written(HttpResponse::NoContent().finish()).await,
            Ok(false) => unchanged(validated.as_ref(), &id),
            Err(err) => database_error(&err),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Server-side caches
// ---------------------------------------------------------------------------------------------

/// How long `/challenges/active` stays fresh in the server's cache.
pub const CHALLENGES_TTL: Duration = Duration::from_secs(30);

/// `Cache-Control` of `/challenges/active`: browsers and CDNs may keep it for 15 s, half the
/// server's TTL, so what they hold is never much older than what the server would send.
pub const CHALLENGES_POLICY: CachePolicy = CachePolicy::new().public().max_age(15);

/// How many progress events the `recent_progress` section holds, newest first.
pub const RECENT_PROGRESS: usize = 10;

/// How many rows of each table the `core` section shows, most recently written first.
pub const CORE_LATEST: usize = 3;

/// The content type of the Prometheus text exposition format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// The process's Prometheus recorder, installed on first use.
///
/// The `metrics` facade has one global recorder per process, so it is installed once
/// (`main` calls this first thing; tests, which start many servers in one process, share it).
/// Counters recorded before it is installed are lost, which is why [`caches`] calls it too.
/// Only counters are recorded here, so no periodic upkeep is needed beyond the
/// `run_upkeep` each scrape does.
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(handle) => handle,
            Err(err) => {
                // Another recorder owns the facade: /metrics stays empty, the app still runs.
                tracing::warn!(%err, "viewsets: could not install the Prometheus recorder");
                PrometheusBuilder::new().build_recorder().handle()
            }
        })
        .clone()
}

/// The app's response caches and what their handlers need, built once per process.
///
/// actix runs one `App` per worker thread and calls `HttpServer::new`'s closure once for
/// each. A cache built *inside* that closure would be one cache per worker: each worker would
/// build every response itself, and `POST /progress` would invalidate the `recent_progress`
/// section of its own worker only. So `main` calls [`caches`] once, before
/// `HttpServer::new`, and moves a clone into every app ([`ResponseCache`] is an `Arc`: the
/// clones are one cache).
#[derive(Debug, Clone)]
pub struct Caches {
    db: Db,
    /// `/challenges/active`: TTL mode, [`CHALLENGES_TTL`].
    pub challenges: ResponseCache,
    /// `/state/summary`: sectioned revision mode, `core` and `recent_progress`.
    pub summary: SectionedCache,
    /// What `/metrics` renders.
    pub metrics: PrometheusHandle,
}

impl Caches {
    /// The database the caches read.
    pub fn db(&self) -> &Db {
        &self.db
    }
}

/// The caches, named `challenges` and `summary` (their `cache` label in `/metrics`).
pub fn caches(db: &Db) -> Caches {
    caches_named(db, "challenges", "summary")
}

/// The caches under other names: metrics are one registry per process, so tests that start
/// several servers give each its own names to read its own counters.
pub fn caches_named(db: &Db, challenges: &str, summary: &str) -> Caches {
    caches_configured(
        db,
        challenges,
        summary,
        |builder| builder,
        |builder| builder,
    )
}

/// The caches shared with the app's other instances through Redis (`--features redis` and
/// `REDIS_URL`): a build on one instance is a hit on the others, `POST /progress` on one is
/// seen by all, and a cold key is built by one instance for all of them.
#[cfg(feature = "redis")]
pub fn caches_on_redis(db: &Db, redis: &RedisBackend) -> Caches {
    caches_configured(
        db,
        "challenges",
        "summary",
        |builder| builder.redis(redis),
        |builder| builder.redis(redis),
    )
}

/// The caches, each builder passed through its `configure_…` function first (say, a shorter
/// `cache_control` for the summary, or `.redis(…)` for both).
pub fn caches_configured(
    db: &Db,
    challenges: &str,
    summary: &str,
    configure_challenges: impl FnOnce(TtlCacheBuilder) -> TtlCacheBuilder,
    configure_summary: impl FnOnce(SectionsCacheBuilder) -> SectionsCacheBuilder,
) -> Caches {
    let metrics = prometheus();
    let challenges = configure_challenges(ResponseCache::ttl(challenges, CHALLENGES_TTL)).build();

    let core = {
        let (rev_db, build_db) = (db.clone(), db.clone());
        Section::new(
            CORE,
            move |_req: HttpRequest| {
                let db = rev_db.clone();
                async move { table_revisions(&db, &TABLES).await }
            },
            move |_req: HttpRequest| {
                let db = build_db.clone();
                async move { core_summary(&db).await.map_err(internal_error) }
            },
        )
    };
    let recent_progress = {
        let (rev_db, build_db) = (db.clone(), db.clone());
        Section::new(
            "recent_progress",
            move |_req: HttpRequest| {
                let db = rev_db.clone();
                async move { table_revisions(&db, &["progress"]).await }
            },
            move |_req: HttpRequest| {
                let db = build_db.clone();
                async move {
                    recent_progress(&db, RECENT_PROGRESS)
                        .await
                        .map_err(internal_error)
                }
            },
        )
    };
    let summary = ResponseCache::sections(summary)
        // The core (counts and latest rows of three tables) is the expensive part: when it
        // changes, readers get the previous bytes at once while one refresh rebuilds it.
        .section(core)
        // The progress tail moves fast and costs one indexed query: rebuilt in the request.
        .inline_section(recent_progress);
    let summary = configure_summary(summary).build();

    Caches {
        db: db.clone(),
        challenges,
        summary,
        metrics,
    }
}

/// The fingerprint of `tables`: their `revisions` counters joined with `.`, e.g. `7.2.3`.
///
/// Why counters bumped by triggers, rather than `COUNT(*)` and `MAX(updated_at)` per table:
///
/// - Every `INSERT`, `UPDATE` and `DELETE` bumps its table's counter, whoever writes (the
///   viewsets, `POST /progress`, or `sqlite3` on the same file), even an `UPDATE` that leaves
///   `updated_at` alone or a `DELETE` followed by an `INSERT` that restores the count.
///   `COUNT(*)`/`MAX(updated_at)` catches those only as long as every writer keeps
///   `updated_at` strictly increasing, as the viewsets (but not a hand-written `UPDATE`) do.
/// - The trigger runs inside the write's transaction, so the new counter and the new rows
///   commit together: a reader never sees the counter move before the data does (which could
///   store old bytes under the new fingerprint).
/// - The counters only grow and live in the file, so a fingerprint is never reused, not even
///   across restarts (a client's `If-None-Match` from a previous run cannot match new data;
///   only restoring an older copy of the file would turn them back).
/// - Reading it is a primary-key lookup per table, however large the tables grow, where
///   `COUNT(*)` scans the table.
pub async fn table_revisions(db: &Db, tables: &'static [&'static str]) -> Result<String, Error> {
    let revisions = db
        .read(move |conn| {
            tables
                .iter()
                .map(|table| table_revision(conn, table))
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .await
        .map_err(internal_error)?;
    let revisions: Vec<String> = revisions.iter().map(i64::to_string).collect();
    Ok(revisions.join("."))
}

/// One challenge, as `/challenges/active` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    /// Primary key.
    pub id: i64,
    /// What to do.
    pub title: String,
    /// What it earns.
    pub points: i64,
}

/// `GET /challenges/active`.
#[derive(Debug, Serialize)]
struct ChallengePage {
    count: usize,
    results: Vec<Challenge>,
}

/// One progress event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Primary key; grows with every event.
    pub id: i64,
    /// What happened, never empty.
    pub event: String,
    /// When, in Unix milliseconds.
    pub created_at: i64,
}

/// Body of `POST /progress`.
#[derive(Debug, Deserialize)]
struct ProgressInput {
    event: String,
}

/// One table in the `core` section.
#[derive(Debug, Serialize)]
struct TableSummary {
    count: i64,
    /// The [`CORE_LATEST`] most recently written rows.
    latest: Vec<Row>,
}

/// The `core` section.
#[derive(Debug, Serialize)]
struct CoreSummary {
    uploads: TableSummary,
    claims: TableSummary,
    reports: TableSummary,
}

/// A database error as an actix error answered like [`database_error`] (503 while locked,
/// else 500); the cache keeps serving stale bytes over it, if it has any.
fn internal_error(err: rusqlite::Error) -> Error {
    let res = database_error(&err);
    actix_web::error::InternalError::from_response(err, res).into()
}

async fn active_challenges(db: &Db) -> rusqlite::Result<Vec<Challenge>> {
    db.read(|conn| {
        let mut stmt = conn.prepare_cached(
            "SELECT id, title, points FROM challenges WHERE active = 1 ORDER BY points DESC, id",
        )?;
        stmt.query_map([], |r| {
            Ok(Challenge {
                id: r.get(0)?,
                title: r.get(1)?,
                points: r.get(2)?,
            })
        })?
        .collect()
    })
    .await
}

async fn core_summary(db: &Db) -> rusqlite::Result<CoreSummary> {
    db.read(|conn| {
        // One read transaction: the three tables as of one moment.
        let tx = conn.unchecked_transaction()?;
        let table = |table: &str| -> rusqlite::Result<TableSummary> {
            let count = tx.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))?;
            let mut stmt = tx.prepare_cached(&format!(
                "SELECT id, name, updated_at, version FROM {table}
                 ORDER BY updated_at DESC, id DESC LIMIT ?1"
            ))?;
            let latest = stmt
                .query_map([CORE_LATEST as i64], row_from_sql)?
                .collect::<rusqlite::Result<_>>()?;
            Ok(TableSummary { count, latest })
        };
        Ok(CoreSummary {
            uploads: table("uploads")?,
            claims: table("claims")?,
            reports: table("reports")?,
        })
    })
    .await
}

async fn recent_progress(db: &Db, limit: usize) -> rusqlite::Result<Vec<Progress>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    db.read(move |conn| {
        let mut stmt = conn.prepare_cached(
            "SELECT id, event, created_at FROM progress ORDER BY id DESC LIMIT ?1",
        )?;
        stmt.query_map([limit], progress_from_sql)?.collect()
    })
    .await
}

fn progress_from_sql(r: &rusqlite::Row<'_>) -> rusqlite::Result<Progress> {
    Ok(Progress {
        id: r.get(0)?,
        event: r.get(1)?,
        created_at: r.get(2)?,
    })
}

async fn insert_progress(db: &Db, event: String) -> rusqlite::Result<Progress> {
    let created_at = unix_millis(SystemTime::now());
    db.write(move |tx| {
        tx.query_row(
            "INSERT INTO progress (event, created_at) VALUES (?1, ?2)
             RETURNING id, event, created_at",
            params![event, created_at],
            progress_from_sql,
        )
    })
    .await
}

/// `GET`/`HEAD /challenges/active`: through the TTL cache, so within 30 s the query runs once
/// however many clients (on however many workers) ask.
async fn challenges_handler(req: HttpRequest, caches: web::Data<Caches>) -> HttpResponse {
    let db = caches.db.clone();
    caches
        .challenges
        .serve(&req, move |_req| {
            let db = db.clone();
            async move {
                // Runs on a miss, and again in the background once the entry is past its TTL.
                // `Last-Modified` before the query: a write between the two makes it older than
                // the data, so a revalidation gets the data again rather than a wrong 304.
                let modified = table_last_modified(&db, "challenges").await;
                match active_challenges(&db).await {
                    Ok(results) => {
                        let mut res = HttpResponse::Ok();
                        res.insert_header((header::CACHE_CONTROL, CHALLENGES_POLICY));
                        if let Some(modified) = modified {
                            // The cache answers `If-Modified-Since` from it (Squid's only
                            // validator for weak tags).
                            res.insert_header(header::LastModified(modified.into()));
                        }
                        res.json(ChallengePage {
                            count: results.len(),
                            results,
                        })
                    }
                    Err(err) => database_error(&err),
                }
            }
        })
        .await
}

/// `GET`/`HEAD /state/summary`: `{"core":…,"recent_progress":…}` from the sectioned cache.
async fn summary_handler(req: HttpRequest, caches: web::Data<Caches>) -> HttpResponse {
    caches.summary.respond(&req).await
}

/// `POST /progress` `{"event":"…"}`: 201 and the row. Wrapped in
/// `summary.invalidates(CacheScope::section("recent_progress"))` (see [`configure_caches`]).
async fn progress_handler(caches: web::Data<Caches>, body: Bytes) -> HttpResponse {
    let input: ProgressInput = match json_body(&body) {
        Ok(input) => input,
        Err(res) => return res,
    };
    if input.event.trim().is_empty() {
        return HttpResponse::BadRequest().json(serde_json::json!({
            "error": "invalid event",
            "detail": "event must not be empty",
        }));
    }
    match insert_progress(&caches.db, input.event).await {
        Ok(row) => HttpResponse::Created()
            .insert_header((header::CACHE_CONTROL, CachePolicy::never()))
            .json(row),
        Err(err) => database_error(&err),
    }
}

/// `GET /metrics`: every counter of the process's recorder, in the Prometheus text format.
async fn metrics_handler(caches: web::Data<Caches>) -> HttpResponse {
    caches.metrics.run_upkeep();
    HttpResponse::Ok()
        .content_type(METRICS_CONTENT_TYPE)
        // A scrape must see the current values; `no-store` also keeps `ConditionalGet` from
        // hashing it.
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(caches.metrics.render())
}

/// Mounts `/challenges/active`, `/state/summary`, `POST /progress` and `/metrics` on
/// `caches` (built once, see [`Caches`]).
pub fn configure_caches(cfg: &mut ServiceConfig, caches: &Caches) {
    cfg.app_data(web::Data::new(caches.clone()))
        .service(
            web::resource("/challenges/active")
                .get(challenges_handler)
                .head(challenges_handler),
        )
        .service(
            web::resource("/state/summary")
                .get(summary_handler)
                .head(summary_handler),
        )
        .service(
            web::resource("/progress")
                // The section's revision (the `progress` counter) moves with the insert anyway;
                // invalidating says so explicitly, and would keep the section right even for a
                // revision function that missed this write.
                .wrap(
                    caches
                        .summary
                        .invalidates(CacheScope::section("recent_progress")),
                )
                .post(progress_handler),
        )
        .service(
            web::resource("/metrics")
                .get(metrics_handler)
                .head(metrics_handler),
        )
        .service(web::resource("/demo").get(demo_handler));
}

/// `GET /demo`: a page that fetches `/state/summary` twice and shows both answers. Its
/// `Cache-Control: max-age=0, must-revalidate` and ETag make the browser's second fetch a
/// conditional request (`If-None-Match`), answered 304 from the cache's entry; the browser
/// then hands the page the body it kept. `tests/real_clients.rs` loads it in Chromium.
async fn demo_handler() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(DEMO_PAGE)
}

/// The page [`demo_handler`] serves.
pub const DEMO_PAGE: &str = r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>actix-conditional: two fetches</title></head>
<body>
<h1>/state/summary, fetched twice</h1>
<p>first: <output id="first">loading</output></p>
<p>second: <output id="second">loading</output></p>
<p id="status">running</p>
<script>
async function show(id) {
  const res = await fetch("/state/summary");
  const body = await res.json();
  const uploads = body.core.uploads.count;
  document.getElementById(id).textContent =
    `${res.status} uploads=${uploads} progress=${body.recent_progress.length}`;
}
show("first")
  .then(() => show("second"))
  .then(() => { document.getElementById("status").textContent = "done"; })
  .catch((err) => { document.getElementById("status").textContent = `failed: ${err}`; });
</script>
</body>
</html>
"#;

// ---------------------------------------------------------------------------------------------
// The app
// ---------------------------------------------------------------------------------------------

/// Mounts one [`TableViewSet`] per table of [`TABLES`] at `/{table}`, all on the caches'
/// database; each write invalidates the summary's [`CORE`] section.
pub fn configure(cfg: &mut ServiceConfig, caches: &Caches) {
    for table in TABLES {
        let viewset =
            TableViewSet::new(table, caches.db.clone()).invalidating(caches.summary.clone());
        viewset::register(cfg, table, viewset);
    }
}

/// The complete app on caches built once ([`caches`]): the viewsets from [`configure`] and
/// the cached endpoints from [`configure_caches`], inside [`ConditionalGet`] and `Compress`.
///
/// `ConditionalGet` is registered before `Compress`, so `Compress` wraps it (see the README).
/// The handlers set their own ETags, so the middleware hashes nothing here; it weakens the
/// tag (`W/"…"`) when the client accepts a compressed body. The caches store identity bytes:
/// they sit inside both.
///
/// Call it in `HttpServer::new`'s closure with a clone of one [`Caches`]:
/// `HttpServer::new(move || app_with_caches(caches.clone()))`.
pub fn app_with_caches(
    caches: Caches,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = Error,
        InitError = (),
    >,
> {
    app_with_edge(caches, Edge::new())
}

/// [`app_with_caches`] inside `edge`: the answers' cache groups (each viewset's prefix, each
/// cache's name) rendered for the caches in front ([`edge_from_env`]), and every 2xx write
/// purging what it invalidated before it answers, for at most the purge bound.
pub fn app_with_edge(
    caches: Caches,
    edge: Edge,
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
        // Outermost: it sees the groups every part of the app added, and the final status.
        .wrap(edge)
        // Before anything reads the body: a slow one is a 408, not a held connection.
        .wrap(from_fn(body_deadline))
        // Outermost of all: every error answer, whoever made it, gets a JSON body.
        .wrap(from_fn(json_errors))
        .default_service(web::to(unknown_route))
        .configure(move |cfg| {
            configure(cfg, &caches);
            configure_caches(cfg, &caches);
        })
}

/// How long a request body may take to arrive, from the end of its headers: past it the
/// request answers `408 Request Timeout` and the connection is closed.
///
/// actix-web bounds the headers (`client_request_timeout`, 5 s by default: a slow-headers
/// client gets a 408) but not the body: a client that sends its headers and then trickles
/// the body a byte at a time would hold the connection, and the handler's buffer, for as long
/// as it likes. [`body_deadline`] bounds it.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest request body accepted: actix-web's own default for `Bytes` and `Json`
/// (256 KiB); larger ones answer 413.
pub const BODY_LIMIT: usize = 256 * 1024;

/// Middleware: reads every request body (up to [`BODY_LIMIT`]) within [`BODY_TIMEOUT`] before
/// the handler runs; a body slower than that is answered `408` with `Connection: close`
/// (RFC 9110 §15.5.9), a longer one `413`.
pub async fn body_deadline(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    if matches!(*req.method(), Method::GET | Method::HEAD) {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    }
    let mut payload = req.take_payload();
    let read = async {
        let mut body = web::BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk?;
            if body.len() + chunk.len() > BODY_LIMIT {
                return Ok(None);
            }
            body.extend_from_slice(&chunk);
        }
        Ok::<_, Error>(Some(body.freeze()))
    };
    let refused = match tokio::time::timeout(BODY_TIMEOUT, read).await {
        Ok(Ok(Some(body))) => {
            req.set_payload(actix_web::dev::Payload::from(body));
            return next
                .call(req)
                .await
                .map(ServiceResponse::map_into_left_body);
        }
        Ok(Ok(None)) => HttpResponse::PayloadTooLarge()
            .insert_header((header::CONNECTION, "close"))
            .json(serde_json::json!({ "error": "body too large", "limit": BODY_LIMIT })),
        Ok(Err(err)) => return Err(err),
        Err(_elapsed) => {
            tracing::warn!(path = req.path(), timeout = ?BODY_TIMEOUT, "viewsets: request body too slow");
            HttpResponse::RequestTimeout()
                .insert_header((header::CONNECTION, "close"))
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .json(serde_json::json!({ "error": "request body too slow" }))
        }
    };
    Ok(req.into_response(refused).map_into_right_body())
}

/// Middleware: every 4xx and 5xx answer that has no body gets a JSON one,
/// `{"error":"<reason>"}`, as the viewsets' own errors have (the library's 412 and 304 are
/// empty by design, as Django's are; actix's 404 and 405 too). Headers are kept; HEAD answers
/// stay bodiless.
pub async fn json_errors(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let res = next.call(req).await?;
    let status = res.status();
    let empty = matches!(
        res.response().body().size(),
        actix_web::body::BodySize::Sized(0) | actix_web::body::BodySize::None
    );
    if !(status.is_client_error() || status.is_server_error()) || !empty {
        return Ok(res.map_into_left_body());
    }
    let reason = status
        .canonical_reason()
        .unwrap_or("error")
        .to_ascii_lowercase();
    let (req, res) = res.into_parts();
    let mut json = HttpResponse::build(status);
    for (name, value) in res.headers() {
        if name != header::CONTENT_LENGTH && name != header::CONTENT_TYPE {
            json.append_header((name.clone(), value.clone()));
        }
    }
    let json = json.json(serde_json::json!({ "error": reason }));
    Ok(ServiceResponse::new(req, json).map_into_right_body())
}

/// Any path the app does not serve: a JSON 404, as the viewsets' unknown ids get.
async fn unknown_route(req: HttpRequest) -> HttpResponse {
    HttpResponse::NotFound().json(serde_json::json!({ "error": "not found", "path": req.path() }))
}

/// How long a write waits for its purges at most: then it answers, and the purge is retried
/// in the background.
pub const PURGE_WAIT: Duration = Duration::from_secs(2);

/// The [`Edge`] for Varnish (varnish-modules `xkey`) at `varnish_urls`: answers carry `xkey`
/// tags, writes send `PURGE` with `xkey-purge` to every address, waiting [`PURGE_WAIT`] at most.
#[cfg(feature = "purge")]
pub fn edge_for_varnish<I, U>(varnish_urls: I) -> std::io::Result<Edge>
where
    I: IntoIterator<Item = U>,
    U: AsRef<str>,
{
    use actix_conditional::edge::TagHeaders;
    use actix_conditional::edge::purge::{Purges, VarnishPurger};
    let invalid = |err: actix_conditional::edge::purge::PurgeError| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, err.to_string())
    };
    // It purges each group under the tag the `xkey` header gave it (`vendor_tag`).
    let purger = VarnishPurger::new(varnish_urls).map_err(invalid)?;
    // Each attempt gives up after half the bound, so a hung Varnish is counted as a failure
    // (and retried) before the write answers.
    let purges = Purges::builder()
        .purger(purger)
        .timeout(PURGE_WAIT / 2)
        .wait(PURGE_WAIT)
        .build()?;
    Ok(Edge::new()
        .tag_headers(TagHeaders::new().xkey())
        .purges(purges))
}

/// The [`Edge`] `main` uses: [`edge_for_varnish`] on the comma-separated `VARNISH_PURGE_URL`
/// (with `--features purge`), else `Cache-Groups` alone.
pub fn edge_from_env() -> std::io::Result<Edge> {
    let urls = std::env::var("VARNISH_PURGE_URL")
        .ok()
        .filter(|urls| !urls.trim().is_empty());
    #[cfg(feature = "purge")]
    if let Some(urls) = urls {
        println!("Purging the Varnish at {urls} on writes");
        return edge_for_varnish(urls.split(',').map(str::trim));
    }
    #[cfg(not(feature = "purge"))]
    if urls.is_some() {
        tracing::warn!(
            "VARNISH_PURGE_URL is set but the example was built without `--features purge`: nothing is purged"
        );
    }
    Ok(Edge::new())
}

/// [`app_with_caches`] on caches of its own: each call builds new ones, so in
/// `HttpServer::new`'s closure every worker would get its own caches (see [`Caches`]). Fine
/// for a one-worker test server; `main` builds them once instead.
#[allow(
    clippy::needless_pass_by_value,
    reason = "the signature predates the caches: callers hand over their clone"
)]
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
    app_with_caches(caches(&db))
}

/// What `main` reads from its arguments and environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The SQLite file ([`database_path`]).
    pub database: PathBuf,
    /// `--reset` (or `RESET=1`): delete the file first, so the run starts from the seed data.
    pub reset: bool,
}

/// [`Settings`] from `args`, `database_url` (`DATABASE_URL`) and `reset` (`RESET`).
pub fn settings(
    args: impl IntoIterator<Item = String>,
    database_url: Option<String>,
    reset: Option<String>,
) -> Result<Settings, String> {
    let mut reset = reset.is_some_and(|value| !matches!(value.as_str(), "" | "0" | "false"));
    let mut rest = Vec::new();
    for arg in args {
        if arg == "--reset" {
            reset = true;
        } else {
            rest.push(arg);
        }
    }
    Ok(Settings {
        database: database_path(rest, database_url)?,
        reset,
    })
}

/// Deletes the SQLite file at `path` and its WAL files, if they exist.
pub fn remove_database(path: &Path) -> std::io::Result<()> {
    for suffix in ["", "-wal", "-shm"] {
        let file = PathBuf::from(format!("{}{suffix}", path.display()));
        match std::fs::remove_file(&file) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err),
            _ => {}
        }
    }
    Ok(())
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
                "unknown argument {arg:?}; usage: viewsets [--database <path>] [--reset]"
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

/// The `curl` lines `main` prints for `url` (no trailing `/`), each with what it shows and
/// what it should answer.
pub fn curl_lines(url: &str) -> Vec<String> {
    let etag = "ETAG=$(curl -sI {url}/uploads/1 | grep -i '^etag:' | cut -d' ' -f2 | tr -d '\\r')"
        .replace("{url}", url);
    vec![
        format!(
            "curl -i {url}/uploads  # 200, ETag: \"uploads-<revision>\", Cache-Control: max-age=60, must-revalidate"
        ),
        format!("curl -I {url}/uploads/1  # HEAD: the headers of GET, no body"),
        format!("{etag}  # the row's ETag, \"uploads-1-<version>\""),
        format!(
            "curl -i -H \"If-None-Match: $ETAG\" {url}/uploads/1  # 304, decided before the handler runs"
        ),
        format!(
            "curl -i -X PUT -H \"If-Match: $ETAG\" -H 'Content-Type: application/json' -d '{{\"name\":\"renamed\"}}' {url}/uploads/1  # 200 + the new ETag"
        ),
        format!(
            "curl -i -X PUT -H \"If-Match: $ETAG\" -H 'Content-Type: application/json' -d '{{\"name\":\"again\"}}' {url}/uploads/1  # 412: that ETag is stale now (no lost update)"
        ),
        format!(
            "curl -i -X POST -H 'Content-Type: application/json' -d '{{\"name\":\"report.csv\"}}' {url}/uploads  # 201 + Location"
        ),
        format!("curl -i -X DELETE {url}/uploads/2  # 204, then 404 (start again with --reset)"),
        format!("curl -i {url}/nowhere  # 404 with a JSON body, like every error here"),
        format!(
            "curl -i {url}/challenges/active  # twice: Cache-Status: fwd=miss, then hit; ttl=…, with Age"
        ),
        format!(
            "curl -i {url}/state/summary  # twice: Cache-Status: fwd=miss, then hit; detail=revision"
        ),
        format!(
            "curl -i -X POST -H 'Content-Type: application/json' -d '{{\"event\":\"uploaded report.csv\"}}' {url}/progress  # 201"
        ),
        format!(
            "curl -i {url}/state/summary  # Cache-Status: detail=section (only recent_progress rebuilt)"
        ),
        format!(
            "curl -i '{url}/state/summary?refresh=true'  # Cache-Status: fwd=request (forced rebuild)"
        ),
        format!("curl -s {url}/metrics | grep actix_conditional_cache  # the caches' counters"),
        format!("open {url}/demo in a browser: its second fetch of /state/summary is a 304"),
    ]
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    // Logs go to stderr, so stdout holds only the lines below. Without `RUST_LOG`, warnings
    // (a Redis outage, a failed refresh) and errors.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    // Before anything records a counter.
    prometheus();

    let invalid = |msg: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, msg);
    let settings = settings(
        std::env::args().skip(1),
        std::env::var("DATABASE_URL").ok(),
        std::env::var("RESET").ok(),
    )
    .map_err(invalid)?;
    let path = settings.database;
    if settings.reset {
        remove_database(&path).map_err(|err| invalid(format!("{}: {err}", path.display())))?;
        println!(
            "Starting from the seed data (--reset): {} removed",
            path.display()
        );
    }
    let db = open_database(&path).map_err(|err| invalid(format!("{}: {err}", path.display())))?;

    let bind = std::env::var("BIND").unwrap_or_else(|_| DEFAULT_BIND.to_owned());
    // Built outside the factory closure: every worker shares this one connection and these
    // caches (one cache for all workers: one build per key, invalidations seen everywhere).
    let redis_url = std::env::var("REDIS_URL")
        .ok()
        .filter(|url| !url.is_empty());
    #[cfg(feature = "redis")]
    let caches = match &redis_url {
        Some(url) => {
            let redis =
                RedisBackend::new(url).map_err(|err| invalid(format!("REDIS_URL: {err}")))?;
            println!("Sharing the caches with other instances through {url}");
            caches_on_redis(&db, &redis)
        }
        None => caches(&db),
    };
    #[cfg(not(feature = "redis"))]
    let caches = {
        if redis_url.is_some() {
            tracing::warn!(
                "REDIS_URL is set but the example was built without `--features redis`: the caches stay in this process"
            );
        }
        caches(&db)
    };
    let edge = edge_from_env()?;
    let server =
        HttpServer::new(move || app_with_edge(caches.clone(), edge.clone())).bind(&bind)?;
    for addr in server.addrs() {
        let url = format!("http://{addr}");
        println!(
            "Serving /uploads, /claims, /reports, /challenges/active, /state/summary, /progress \
             and /metrics from {} on {url}/",
            path.display()
        );
        println!("Try (RUST_LOG=actix_conditional=debug logs each 304, 412 and cache decision):");
        for line in curl_lines(&url) {
            println!("  {line}");
        }
    }
    server.run().await
}
