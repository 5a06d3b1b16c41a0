//! Redis as the shared second tier of [`ResponseCache`](super::ResponseCache)s, for apps that run on several
//! instances (feature `redis`).
//!
//! ```
//! use std::time::Duration;
//! use actix_conditional::response_cache::{
//!     CacheStatus, RedisBackend, RedisBackendError, ResponseCache,
//! };
//! use actix_web::{App, HttpRequest, HttpResponse, test, web};
//!
//! # actix_web::rt::System::new().block_on(async {
//! assert!(matches!(RedisBackend::new("not a url"), Err(RedisBackendError::InvalidUrl(_))));
//!
//! // One backend per process (one connection, one subscription), shared by every cache.
//! // Nothing listens on port 1 here: the cache runs on local memory, as during an outage.
//! let redis = RedisBackend::builder("redis://127.0.0.1:1/")
//!     .prefix("myapp")
//!     .timeout(Duration::from_millis(50))
//!     .build()
//!     .unwrap();
//! let cache = ResponseCache::ttl("challenges", Duration::from_secs(30))
//!     .redis(&redis)
//!     .build();
//!
//! let app = test::init_service(App::new().route(
//!     "/challenges/active",
//!     web::get().to(move |req: HttpRequest| {
//!         let cache = cache.clone();
//!         async move {
//!             cache.serve(&req, |_req| async { HttpResponse::Ok().body("[1, 2, 3]") }).await
//!         }
//!     }),
//! ))
//! .await;
//! let get = || test::TestRequest::get().uri("/challenges/active").to_request();
//! let res = test::call_service(&app, get()).await;
//! assert_eq!(res.status(), 200); // never a 5xx because of Redis
//! assert_eq!(CacheStatus::of(res.response()).unwrap().label(), "miss");
//! let res = test::call_service(&app, get()).await;
//! assert_eq!(CacheStatus::of(res.response()).unwrap().label(), "hit");
//! assert!(!redis.is_available());
//! # });
//! ```
//!
//! What each instance does with it:
//!
//! - **Two tiers.** A lookup tries the instance's own memory first (L1), then Redis (L2); what
//!   it finds in Redis is kept in L1. A build is stored in both, in Redis with a `PX` of the
//!   entry's useful life (TTL mode: TTL + max stale; revision modes: max stale + 1 h) and in
//!   the layout of `codec` (versioned: a value from another version is a miss).
//! - **Invalidations and revisions in Redis.** Each cache (and each section) has a counter;
//!   [`invalidate`](super::ResponseCache::invalidate) increments it and publishes the new value
//!   on one pub/sub channel in the same script, and the write answers once that is done. Every
//!   request first waits for a read of the counters that began after it arrived (one read
//!   shared by concurrent requests; see
//!   [`read_your_writes`](RedisBackendBuilder::read_your_writes)), so an invalidation on one
//!   instance is seen by the others on their next request. The broadcast retires memory-tier
//!   entries at once; a re-read every [`sync_interval`](RedisBackendBuilder::sync_interval)
//!   and on every reconnect covers lost messages and repairs counters Redis lost. The counter
//!   is part of the revision fingerprint, so all instances hand out the same ETags.
//! - **Single-flight across instances.** An instance that misses takes a lease
//!   (`SET lease NX PX`, a random token, renewed every third of its life while the build runs,
//!   deleted only by a script that checks the token). The others poll for the value, up to the
//!   cache's [`lock_timeout`](super::ResponseCacheBuilder::lock_timeout), then build
//!   for themselves without storing; a lease whose holder died expires after
//!   [`lease_ttl`](RedisBackendBuilder::lease_ttl) and exactly one waiter takes it over. A
//!   build whose response is not shareable leaves a hit-for-pass marker under the key for
//!   the cache's [`hit_for_miss`](super::ResponseCacheBuilder::hit_for_miss) before its
//!   lease goes: the waiting instances, and later requests on any instance, go straight to
//!   their handler instead of queueing for a build that will not be stored.
//! - **Faults.** Every call has a [`timeout`](RedisBackendBuilder::timeout). A failed or slow
//!   call marks Redis unavailable (a warning, `actix_conditional_redis_up` 0 and
//!   `actix_conditional_redis_errors_total` counted): for
//!   [`retry_interval`](RedisBackendBuilder::retry_interval) no call is tried and every cache
//!   runs on its own memory, then one call probes again. Invalidations made meanwhile are
//!   replayed when Redis answers again. Redis never turns a request into a 5xx.
//! - **Command errors.** A command Redis answers with an error (`WRONGTYPE` under one of our
//!   keys, `OOM` under `maxmemory` with `noeviction`, …) is a failure too: counted, and
//!   `actix_conditional_redis_up` says 0 until the same command on that key succeeds again
//!   or the error stops recurring (see [`RedisBackend::is_available`]); errors that say Redis
//!   as a whole cannot serve (`OOM`, `READONLY`, …) also trip the breaker. Warnings about a
//!   key are limited to one per [`WARN_INTERVAL`]. A lease that would never expire in time
//!   is taken over, and a counter that is not a valid one is repaired (see `lease` and
//!   `counters`).
//!
//! - **Topologies.** One server, a Redis Cluster or a primary watched by Sentinel
//!   ([`RedisTopology`], through the same [`RedisBackend::builder`]). On a cluster every
//!   script and pipeline stays in one hash slot (an entry and its lease share a hash tag, as
//!   do a cache's counters and its sharded invalidation channel, `SPUBLISH`/`SSUBSCRIBE`);
//!   the client follows `MOVED`/`ASK` and failovers within the same timeout and breaker.
//!   Through Sentinel the primary is asked for again whenever it stops answering as one.
//!   With replicas, counters move to at least Redis's clock in microseconds, so increments a
//!   failover lost are repaired like a flushed counter and never issued again. See
//!   `docs/redis.md`, "Topologies".
//!
//! Redis connections live on a thread of their own (`actix-conditional-redis`, one
//! current-thread Tokio runtime), so they do not depend on which actix worker or test runtime
//! asked, nor on the main thread being polled.

mod builder;
mod codec;
mod conn;
mod counters;
mod health;
mod lease;
mod tier;

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use ::redis::{RedisError, RedisResult};
use bytes::Bytes;
use futures_util::future::BoxFuture;

pub use self::builder::RedisBackendBuilder;
use self::conn::Conn;
pub use self::conn::RedisTopology;
use self::health::{Faults, Warnings};
use self::lease::Lease;
use super::generations::Generations;

/// Default key prefix: `actix-conditional`.
pub const DEFAULT_PREFIX: &str = "actix-conditional";
/// Default limit on one Redis call: 250 ms.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(250);
/// Default pause before Redis is tried again after a failure: 1 s.
pub const DEFAULT_RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// Default period of the counter re-read that catches lost broadcasts: 1 s.
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// Default life of a build lease without renewal (how long a dead holder blocks a key): 5 s.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(5);
/// At most one warning per Redis key per this interval (a command error on it, a repaired
/// counter, a lease without expiry taken over): 10 s. The next one says how many were held
/// back meanwhile (those are logged at debug).
pub const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// Why a [`RedisBackend`] could not be set up.
#[derive(Debug)]
#[non_exhaustive]
pub enum RedisBackendError {
    /// The URL (of the server, a cluster node or a Sentinel) is not a Redis URL
    /// (`redis://host:port/db`, `rediss://`, `unix://`), or the topology is empty: fix the
    /// configuration.
    InvalidUrl(RedisError),
    /// The thread that runs the Redis connections could not be started (the process is out
    /// of threads or memory).
    Runtime(std::io::Error),
}

impl fmt::Display for RedisBackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidUrl(_) => f.write_str("invalid redis url"),
            Self::Runtime(_) => f.write_str("failed to start the redis runtime thread"),
        }
    }
}

impl std::error::Error for RedisBackendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::InvalidUrl(err) => Some(err),
            Self::Runtime(err) => Some(err),
        }
    }
}

/// A connection to Redis shared by the [`ResponseCache`]s of one process; see the
/// [module docs](self). Cloning is cheap and shares the connection.
///
/// [`ResponseCache`]: super::ResponseCache
#[derive(Clone)]
pub struct RedisBackend {
    pub(crate) inner: Arc<Backend>,
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("prefix", &self.inner.prefix)
            .field("available", &self.is_available())
            .finish_non_exhaustive()
    }
}

impl RedisBackend {
    /// A backend for `url` (or a `cluster:`/`sentinel:` list: see [`RedisTopology::parse`])
    /// with the default settings.
    ///
    /// # Errors
    ///
    /// [`RedisBackendError::InvalidUrl`] for a malformed URL. An unreachable server is not an
    /// error: the caches run on their own memory until it answers.
    pub fn new(url: &str) -> Result<Self, RedisBackendError> {
        Self::builder(url).build()
    }

    /// Configures a backend for a Redis server's URL, or for any [`RedisTopology`]: a
    /// Redis Cluster (a list of node URLs) or a primary found through Sentinel.
    ///
    /// ```
    /// use actix_conditional::response_cache::{RedisBackend, RedisTopology};
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// // One server.
    /// let single = RedisBackend::builder("redis://127.0.0.1:1/").build().unwrap();
    /// // A cluster: any of its nodes; the client learns the others.
    /// let cluster = RedisBackend::builder(RedisTopology::cluster([
    ///     "redis://127.0.0.1:7000",
    ///     "redis://127.0.0.1:7001",
    /// ]))
    /// .prefix("myapp")
    /// .build()
    /// .unwrap();
    /// // The primary the Sentinels call `mymaster`, followed through failovers.
    /// let sentinel = RedisBackend::builder(RedisTopology::sentinel(
    ///     ["redis://127.0.0.1:26379", "redis://127.0.0.1:26380"],
    ///     "mymaster",
    /// ))
    /// .build()
    /// .unwrap();
    /// # let _ = (single, cluster, sentinel);
    /// # });
    /// ```
    pub fn builder(topology: impl Into<RedisTopology>) -> RedisBackendBuilder {
        RedisBackendBuilder::new(topology.into())
    }

    /// Whether Redis answers and its commands succeed; what `actix_conditional_redis_up`
    /// says. False while the caches run local-only after a failed or slow call, and while
    /// commands fail on a key (a `WRONGTYPE` value, `OOM` under `maxmemory` with
    /// `noeviction`, …): until the same command on that key succeeds again (the key was
    /// fixed) or that failure has not recurred for twice the longer of
    /// [`retry_interval`](RedisBackendBuilder::retry_interval) and
    /// [`sync_interval`](RedisBackendBuilder::sync_interval).
    pub fn is_available(&self) -> bool {
        self.inner.healthy.load(Ordering::Relaxed)
    }

    /// Redis calls that failed, timed out or answered an error since the backend was built.
    pub fn errors(&self) -> u64 {
        self.inner.errors.load(Ordering::Relaxed)
    }

    /// Whether the invalidation subscription is connected.
    pub fn is_subscribed(&self) -> bool {
        self.inner.subscribed.load(Ordering::Relaxed)
    }
}

/// The shared state behind a [`RedisBackend`].
pub(crate) struct Backend {
    /// The key prefix (on a cluster, braces escaped: see [`untagged`]).
    prefix: String,
    /// The single-server channel; on a cluster each cache has its own sharded one
    /// ([`Backend::sharded_channel`]).
    channel: String,
    /// Whether Redis is a cluster: invalidations go out on sharded channels, and a Vary
    /// pointer is stored apart from its variant (another slot).
    cluster: bool,
    /// Whether counters move to at least Redis's clock (microseconds) on every increment and
    /// repair: on a topology with replicas (a cluster, Sentinel), where a failover can lose
    /// the last increments (replication is asynchronous). A failover takes longer than the
    /// nodes' clocks disagree, so every value issued after it is above every value issued
    /// before, lost ones included: a lost increment can never be issued again and look like
    /// "nothing changed" to an instance that saw it.
    pub(crate) clock_counters: bool,
    /// Woken when a cache registers (the sharded subscription then adds its channel).
    registered: Arc<tokio::sync::Notify>,
    handle: tokio::runtime::Handle,
    stop: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    conn: Conn,
    timeout: Duration,
    retry_interval: Duration,
    sync_interval: Duration,
    pub(crate) lease_ttl: Duration,
    pub(crate) read_your_writes: bool,
    /// Whether Redis answers (the breaker: false while calls are skipped).
    up: AtomicBool,
    /// `up`, and no command failed lately ([`faults`](Self::faults)): the health gauge.
    healthy: AtomicBool,
    /// Command errors of the last [`fault_hold`](Self::fault_hold), by operation and key.
    faults: Mutex<Faults>,
    /// Whether `faults` may hold something (spares successful calls its lock).
    faulty: AtomicBool,
    fault_hold: Duration,
    warnings: Mutex<Warnings>,
    /// While Redis is down: when the next call may probe it.
    retry_at: Mutex<Option<Instant>>,
    errors: AtomicU64,
    subscribed: AtomicBool,
    caches: Mutex<Vec<Weak<Generations>>>,
    /// Invalidations Redis has not heard of yet: (cache, section).
    pending: Mutex<HashSet<(String, Option<String>)>>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(stop) = self
            .stop
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = stop.send(());
        }
    }
}

/// One response of [`Backend::lookup`]: the stored bytes and their remaining `PTTL`.
pub(crate) type Stored = (Bytes, i64);

impl Backend {
    /// `<prefix>:<cache>:e:<hash of the key>`; on a cluster `<prefix>:<cache>:e:{<hash>}`:
    /// the braces are a hash tag, so the entry and its lease ([`lease_key`](Self::lease_key))
    /// share a slot and one script or pipeline can touch both, while different keys spread
    /// over the cluster. (On one server the keys stay as they were before clusters.)
    pub(crate) fn entry_key(&self, cache: &str, key: &str) -> String {
        self.keyed(cache, "e", key)
    }

    /// `<prefix>:<cache>:lease:<hash of the key>`, in the slot of the entry on a cluster.
    pub(crate) fn lease_key(&self, cache: &str, key: &str) -> String {
        self.keyed(cache, "lease", key)
    }

    fn keyed(&self, cache: &str, kind: &str, key: &str) -> String {
        let (prefix, cache, hash) = (&self.prefix, self.part(cache), hash(key));
        if self.cluster {
            format!("{prefix}:{cache}:{kind}:{{{hash:032x}}}")
        } else {
            format!("{prefix}:{cache}:{kind}:{hash:032x}")
        }
    }

    /// A name as it goes into a key: on a cluster with its braces escaped ([`untagged`]),
    /// so only our own braces choose slots.
    pub(crate) fn part<'a>(&self, name: &'a str) -> Cow<'a, str> {
        if self.cluster {
            untagged(name)
        } else {
            Cow::Borrowed(name)
        }
    }

    /// Runs one Redis operation on `key` (the key it is about, for the health and the
    /// warnings) on the backend's thread, bounded by the timeout; `None` when Redis is
    /// unavailable, failed or was too slow, or the command failed (logged and counted).
    pub(crate) async fn run<T, F>(
        self: &Arc<Self>,
        op: &'static str,
        key: String,
        f: F,
    ) -> Option<T>
    where
        T: Send + 'static,
        F: FnOnce(Conn) -> BoxFuture<'static, RedisResult<T>> + Send + 'static,
    {
        if !self.admit() {
            return None;
        }
        let (timeout, conn) = (self.timeout, self.conn.clone());
        let task = self
            .handle
            .spawn(async move { tokio::time::timeout(timeout, f(conn)).await });
        let failure = match task.await {
            Ok(Ok(Ok(value))) => {
                self.succeeded(op, &key);
                return Some(value);
            }
            Ok(Ok(Err(err))) => {
                let connectivity = err.is_io_error()
                    || err.is_timeout()
                    || err.is_connection_dropped()
                    || err.is_connection_refusal()
                    || err.is_unrecoverable_error();
                if !connectivity {
                    // Redis answered, with an error (a foreign value of another type under
                    // our key, out of memory, a reply we cannot read): a failure all the
                    // same, for the health and the counters, not a silent miss.
                    let code = err.code().unwrap_or_else(|| err.category()).to_owned();
                    self.count_error(op);
                    self.fault(op, &key, &code, &err.to_string());
                    return None;
                }
                err.to_string()
            }
            Ok(Err(_elapsed)) => format!("no answer within {timeout:?}"),
            Err(err) => format!("task failed: {err}"),
        };
        self.failed(op, &failure);
        None
    }

    /// Runs `f` on the backend's thread without waiting for it (releases, renewals).
    pub(crate) fn spawn<F>(&self, f: F) -> tokio::task::JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.handle.spawn(f)
    }

    fn admit(&self) -> bool {
        if self.up.load(Ordering::Relaxed) {
            return true;
        }
        let mut retry_at = self.retry_at.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        match *retry_at {
            Some(at) if now < at => false,
            _ => {
                // This call probes; the others keep skipping until it has answered or the
                // next interval has passed.
                *retry_at = Some(now + self.retry_interval);
                true
            }
        }
    }

    fn count_error(&self, op: &'static str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("actix_conditional_redis_errors_total", "op" => op).increment(1);
    }

    fn failed(&self, op: &'static str, error: &str) {
        self.count_error(op);
        *self.retry_at.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(Instant::now() + self.retry_interval);
        if self.up.swap(false, Ordering::Relaxed) {
            tracing::warn!(op, error, retry_in = ?self.retry_interval,
                "response cache: redis unavailable; caches run on local memory only");
        } else {
            tracing::debug!(op, error, "response cache: redis still unavailable");
        }
        self.refresh_health(Instant::now());
    }

    /// Redis answered `op` on `key` with an error (`code`, as Redis words it). It counts
    /// against the health until the same call succeeds or it stops recurring; an error that
    /// says Redis as a whole cannot serve (`OOM`, `READONLY`, …) also trips the breaker, as
    /// an outage does. Warned about at most once per key per [`WARN_INTERVAL`].
    pub(crate) fn fault(&self, op: &'static str, key: &str, code: &str, error: &str) {
        let now = Instant::now();
        let server_wide = health::server_wide(code);
        if server_wide {
            *self.retry_at.lock().unwrap_or_else(PoisonError::into_inner) =
                Some(now + self.retry_interval);
            self.up.store(false, Ordering::Relaxed);
        }
        {
            let mut faults = self.faults.lock().unwrap_or_else(PoisonError::into_inner);
            faults.record(op, key, now, self.fault_hold);
            self.faulty.store(true, Ordering::Relaxed);
        }
        self.refresh_health(now);
        match self.warn_allowed(key, now) {
            Some(suppressed) => tracing::warn!(
                op,
                key,
                code,
                error,
                suppressed,
                local_only = server_wide,
                "response cache: redis command failed; counted as a redis failure until it succeeds again"
            ),
            None => tracing::debug!(op, key, code, error, "response cache: redis command failed"),
        }
    }

    /// Whether a warning about `key` may be logged now (`Some`: how many were held back since
    /// the last one); see [`WARN_INTERVAL`].
    pub(crate) fn warn_allowed(&self, key: &str, now: Instant) -> Option<u64> {
        self.warnings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .admit(key, now, WARN_INTERVAL)
    }

    /// `op` on `key` worked: Redis answers, and whatever failed there before is fixed.
    pub(crate) fn succeeded(self: &Arc<Self>, op: &'static str, key: &str) {
        if !self.up.swap(true, Ordering::Relaxed) {
            tracing::info!("response cache: redis reachable again; resynchronising");
            // Invalidations made while it was down, then everyone's counters.
            let this = Arc::clone(self);
            self.handle.spawn(async move { this.resync().await });
            self.refresh_health(Instant::now());
        }
        if self.faulty.load(Ordering::Relaxed) {
            self.faults
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clear(op, key);
            self.refresh_health(Instant::now());
        }
    }

    /// Sets the health (and its gauge) from the breaker and the current faults.
    fn refresh_health(&self, now: Instant) {
        // Under the lock, so the gauge ends in step with the flag when calls race.
        let mut faults = self.faults.lock().unwrap_or_else(PoisonError::into_inner);
        faults.prune(now, self.fault_hold);
        self.faulty.store(!faults.is_empty(), Ordering::Relaxed);
        let healthy = self.up.load(Ordering::Relaxed) && faults.is_empty();
        if self.healthy.swap(healthy, Ordering::Relaxed) != healthy {
            metrics::gauge!("actix_conditional_redis_up").set(if healthy { 1.0 } else { 0.0 });
            if healthy {
                tracing::info!("response cache: redis healthy again");
            }
        }
    }

    /// The stored bytes under `entry_key`, with their remaining life in milliseconds.
    pub(crate) async fn lookup(self: &Arc<Self>, entry_key: String) -> Option<Option<Stored>> {
        self.run("get", entry_key.clone(), move |mut conn| {
            Box::pin(async move {
                let (value, pttl): (Option<Vec<u8>>, i64) = ::redis::pipe()
                    .get(&entry_key)
                    .pttl(&entry_key)
                    .query_async(&mut conn)
                    .await?;
                Ok(value.map(|value| (Bytes::from(value), pttl)))
            })
        })
        .await
    }

    /// Stores `value` for `life` (and a Vary `pointer` beside it), then, in the same round
    /// trip and in that order, releases `lease`, so waiters that see the lease gone find the
    /// value. Whether Redis took it.
    pub(crate) async fn store(
        self: &Arc<Self>,
        entry_key: String,
        value: Vec<u8>,
        life: Duration,
        lease: Option<Lease>,
        pointer: Option<(String, Vec<u8>)>,
    ) -> bool {
        let release = lease.map(Lease::disarm);
        let px = millis(life);
        let set = |key: &str, value: Vec<u8>| {
            let mut cmd = ::redis::cmd("SET");
            cmd.arg(key).arg(value).arg("PX").arg(px);
            cmd
        };
        let mut writes = vec![(entry_key.clone(), set(&entry_key, value))];
        if let Some((key, pointer)) = pointer {
            let cmd = set(&key, pointer);
            writes.push((key, cmd));
        }
        // On a cluster the writes may be in different slots (a variant, its base's Vary
        // pointer; the lease is the base's): those outside the lease's slot go first, one
        // by one, then the rest with the release, in one slot. So a waiter that sees the
        // lease gone finds what was stored, as with one pipeline on one server.
        let last = if self.cluster {
            let lease_slot = release.as_ref().map(|(key, _)| hash_tag(key));
            let (early, last): (Vec<_>, Vec<_>) = writes
                .into_iter()
                .partition(|(key, _)| lease_slot.is_none_or(|slot| hash_tag(key) != slot));
            for (key, cmd) in early {
                let stored = self
                    .run("set", key, move |mut conn| {
                        Box::pin(async move { cmd.exec_async(&mut conn).await })
                    })
                    .await
                    .is_some();
                if !stored {
                    if let Some((key, token)) = release {
                        lease::release_later(self, key, token);
                    }
                    return false;
                }
            }
            last
        } else {
            writes
        };
        if last.is_empty() && release.is_none() {
            return true;
        }
        let released = release.clone();
        let subject = last.first().map_or_else(
            || {
                release
                    .as_ref()
                    .map(|(key, _)| key.clone())
                    .unwrap_or_default()
            },
            |(key, _)| key.clone(),
        );
        let stored = self
            .run("set", subject, move |mut conn| {
                Box::pin(async move {
                    let mut pipe = ::redis::pipe();
                    for (_, cmd) in last {
                        pipe.add_command(cmd).ignore();
                    }
                    if let Some((key, token)) = &released {
                        pipe.add_command(lease::release_cmd(key, token)).ignore();
                    }
                    pipe.exec_async(&mut conn).await
                })
            })
            .await
            .is_some();
        if !stored && let Some((key, token)) = release {
            // The pipeline may not have reached Redis: free the lease on its own, so the
            // other instances need not wait out its life.
            lease::release_later(self, key, token);
        }
        stored
    }
}

/// The hash tag of one of our keys (between its first `{` and the next `}`), which decides
/// its slot on a cluster; the whole key if it has none.
fn hash_tag(key: &str) -> &str {
    key.find('{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.find('}')
                .filter(|&close| close > 0)
                .map(|close| &rest[..close])
        })
        .unwrap_or(key)
}

/// `part` with the characters that would make it a Redis Cluster hash tag (`{`, `}`) and
/// the escape character escaped (`%7B`, `%7D`, `%25`), so only our own braces choose slots.
pub(crate) fn untagged(part: &str) -> Cow<'_, str> {
    if !part.contains(['{', '}', '%']) {
        return Cow::Borrowed(part);
    }
    let mut out = String::with_capacity(part.len() + 8);
    for c in part.chars() {
        match c {
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            '%' => out.push_str("%25"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn hash(key: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(key.as_bytes())
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_a_cluster_what_one_operation_touches_shares_a_hash_tag() {
        let single = RedisBackend::builder("redis://127.0.0.1:1/")
            .prefix("p")
            .build()
            .unwrap();
        let cluster = RedisBackend::builder(RedisTopology::cluster(["redis://127.0.0.1:1/"]))
            .prefix("p{x}")
            .build()
            .unwrap();
        // One server: the keys as they always were.
        let entry = single.inner.entry_key("c", "k");
        assert!(
            entry.starts_with("p:c:e:") && !entry.contains('{'),
            "{entry}"
        );
        assert_eq!(
            single.inner.lease_key("c", "k"),
            entry.replace(":e:", ":lease:")
        );
        // A cluster: the entry and its lease in one slot, the user's braces escaped.
        let (entry, lease) = (
            cluster.inner.entry_key("c{1}%", "k"),
            cluster.inner.lease_key("c{1}%", "k"),
        );
        assert!(entry.starts_with("p%7Bx%7D:c%7B1%7D%25:e:{"), "{entry}");
        assert_eq!(hash_tag(&entry), hash_tag(&lease));
        assert_eq!(hash_tag(&entry).len(), 32);
        assert_ne!(
            hash_tag(&entry),
            hash_tag(&cluster.inner.entry_key("c{1}%", "other"))
        );
        assert_eq!(hash_tag("no tag"), "no tag");
        assert_eq!(hash_tag("a{}b{c}"), "a{}b{c}", "an empty tag is no tag");
        assert_eq!(untagged("plain"), "plain");
    }

    #[actix_rt::test]
    async fn after_a_failure_redis_is_left_alone_until_the_retry_interval() {
        // Nothing listens on port 1: every call that is made fails at once.
        let backend = RedisBackend::builder("redis://127.0.0.1:1/")
            .timeout(Duration::from_millis(200))
            .retry_interval(Duration::from_secs(3600))
            .build()
            .unwrap();
        let inner = &backend.inner;
        let lookup = || inner.lookup("k".to_owned());
        assert!(lookup().await.is_none());
        assert!(!backend.is_available());
        let errors = backend.errors();
        assert!(errors >= 1);
        for _ in 0..10 {
            assert!(lookup().await.is_none());
        }
        assert_eq!(backend.errors(), errors, "skipped, not tried");
    }

    #[test]
    fn a_command_error_holds_the_gauge_at_zero_until_the_command_succeeds_again() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let metrics = recorder.handle();
        let gauge = || {
            metrics
                .render()
                .lines()
                .find_map(|line| line.strip_prefix("actix_conditional_redis_up "))
                .map(str::to_owned)
        };
        metrics::with_local_recorder(&recorder, || {
            // Nothing is called here: the faults are reported by hand, as `run` does.
            let backend = RedisBackend::builder("redis://127.0.0.1:1/")
                .build()
                .unwrap();
            let inner = &backend.inner;
            assert!(backend.is_available());
            inner.fault(
                "sync",
                "p:c:gen",
                "WRONGTYPE",
                "WRONGTYPE Operation against a key",
            );
            inner.fault(
                "set",
                "p:c:e:1",
                "WRONGTYPE",
                "WRONGTYPE Operation against a key",
            );
            assert!(!backend.is_available());
            assert_eq!(gauge().as_deref(), Some("0"));
            // Another operation, or another key, working says nothing about these.
            inner.succeeded("get", "p:c:gen");
            inner.succeeded("sync", "p:c:e:1");
            assert!(!backend.is_available());
            inner.succeeded("sync", "p:c:gen");
            assert!(!backend.is_available(), "p:c:e:1 still fails");
            inner.succeeded("set", "p:c:e:1");
            assert!(backend.is_available());
            assert_eq!(gauge().as_deref(), Some("1"));
            // A key-level error leaves the breaker alone; a server-wide one trips it.
            assert!(inner.admit());
            inner.fault("set", "p:c:e:2", "OOM", "OOM command not allowed");
            assert!(!backend.is_available());
            assert!(!inner.admit(), "calls are skipped for the retry interval");
        });
    }
}
