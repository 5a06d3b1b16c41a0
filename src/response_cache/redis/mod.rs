//! Redis as the shared second tier of [`ResponseCache`](super::ResponseCache)s, for apps that run on several
//! instances (feature `redis`).
//!
//! ```
//! use std::time::Duration;
//! use actix_conditional::response_cache::{RedisBackend, RedisBackendError, ResponseCache};
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
//! assert_eq!(res.headers().get("x-cache").unwrap(), "miss");
//! let res = test::call_service(&app, get()).await;
//! assert_eq!(res.headers().get("x-cache").unwrap(), "hit");
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
//!   [`invalidate`](super::ResponseCache::invalidate) increments it and publishes the new value on
//!   one pub/sub channel in the same script. Every instance raises its own copy on the
//!   message, which retires its L1 entries; a lost message is caught by re-reading the
//!   counters every [`sync_interval`](RedisBackendBuilder::sync_interval), by any stored
//!   entry built under a newer counter, and on every reconnect. The counter is part of the
//!   revision fingerprint, so all instances hand out the same ETags.
//! - **Single-flight across instances.** An instance that misses takes a lease
//!   (`SET lease NX PX`, a random token, renewed every third of its life while the build runs,
//!   deleted only by a script that checks the token). The others poll for the value, up to the
//!   cache's [`lock_timeout`](super::ResponseCacheBuilder::lock_timeout), then build
//!   themselves; a lease whose holder died expires after
//!   [`lease_ttl`](RedisBackendBuilder::lease_ttl) and exactly one waiter takes it over.
//! - **Faults.** Every call has a [`timeout`](RedisBackendBuilder::timeout). A failed or slow
//!   call marks Redis unavailable (a warning, `actix_conditional_redis_up` 0 and
//!   `actix_conditional_redis_errors_total` counted): for
//!   [`retry_interval`](RedisBackendBuilder::retry_interval) no call is tried and every cache
//!   runs on its own memory, then one call probes again. Invalidations made meanwhile are
//!   replayed when Redis answers again. Redis never turns a request into a 5xx.
//!
//! Redis connections live on a thread of their own (`actix-conditional-redis`, one
//! current-thread Tokio runtime), so they do not depend on which actix worker or test runtime
//! asked, nor on the main thread being polled.

mod codec;
mod lease;

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, RedisError, RedisResult};
use bytes::Bytes;
use futures_util::StreamExt as _;
use futures_util::future::BoxFuture;

pub(crate) use self::codec::{decode, encode};
pub(crate) use self::lease::Lease;
use super::Inner;
use super::shared::Invalidation;

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

/// Why a [`RedisBackend`] could not be set up.
#[derive(Debug)]
#[non_exhaustive]
pub enum RedisBackendError {
    /// The URL is not a Redis URL (`redis://host:port/db`, `rediss://`, `unix://`): fix the
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
    /// A backend for `url` with the default settings.
    ///
    /// # Errors
    ///
    /// [`RedisBackendError::InvalidUrl`] for a malformed URL. An unreachable server is not an
    /// error: the caches run on their own memory until it answers.
    pub fn new(url: &str) -> Result<Self, RedisBackendError> {
        Self::builder(url).build()
    }

    /// Configures a backend for `url`.
    pub fn builder(url: &str) -> RedisBackendBuilder {
        RedisBackendBuilder {
            url: url.to_owned(),
            prefix: DEFAULT_PREFIX.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            retry_interval: DEFAULT_RETRY_INTERVAL,
            sync_interval: DEFAULT_SYNC_INTERVAL,
            lease_ttl: DEFAULT_LEASE_TTL,
        }
    }

    /// Whether the last call to Redis succeeded (false while the caches run local-only).
    pub fn is_available(&self) -> bool {
        self.inner.up.load(Ordering::Relaxed)
    }

    /// Redis calls that failed or timed out since the backend was built.
    pub fn errors(&self) -> u64 {
        self.inner.errors.load(Ordering::Relaxed)
    }

    /// Whether the invalidation subscription is connected.
    pub fn is_subscribed(&self) -> bool {
        self.inner.subscribed.load(Ordering::Relaxed)
    }
}

/// Configures a [`RedisBackend`].
#[derive(Debug, Clone)]
#[must_use]
pub struct RedisBackendBuilder {
    url: String,
    prefix: String,
    timeout: Duration,
    retry_interval: Duration,
    sync_interval: Duration,
    lease_ttl: Duration,
}

impl RedisBackendBuilder {
    /// The prefix of every key and of the channel, so apps sharing one Redis keep apart.
    /// Default [`DEFAULT_PREFIX`].
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The longest one Redis call may take before it counts as failed. Default
    /// [`DEFAULT_TIMEOUT`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long caches stay local-only after a failed call before Redis is tried again.
    /// Default [`DEFAULT_RETRY_INTERVAL`].
    pub fn retry_interval(mut self, interval: Duration) -> Self {
        self.retry_interval = interval;
        self
    }

    /// How often the invalidation counters are re-read, in case a broadcast was lost: the
    /// longest an instance can miss an invalidation while Redis is up. Default
    /// [`DEFAULT_SYNC_INTERVAL`].
    pub fn sync_interval(mut self, interval: Duration) -> Self {
        self.sync_interval = interval;
        self
    }

    /// How long a build lease lives without renewal: how long other instances wait for a
    /// holder that died before one of them builds. Default [`DEFAULT_LEASE_TTL`].
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// Starts the backend's thread and connects in the background.
    ///
    /// # Errors
    ///
    /// [`RedisBackendError::InvalidUrl`] for a malformed URL, [`RedisBackendError::Runtime`]
    /// if its thread cannot start.
    pub fn build(self) -> Result<RedisBackend, RedisBackendError> {
        let client = Client::open(self.url.as_str()).map_err(RedisBackendError::InvalidUrl)?;
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("actix-conditional-redis".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(err) => {
                        let _ = handle_tx.send(Err(err));
                        return;
                    }
                };
                let _ = handle_tx.send(Ok(runtime.handle().clone()));
                // Runs until the backend is dropped (or the process ends).
                runtime.block_on(async {
                    let _ = stop_rx.await;
                });
            })
            .map_err(RedisBackendError::Runtime)?;
        let handle = handle_rx
            .recv()
            .map_err(|_| RedisBackendError::Runtime(std::io::Error::other("runtime thread died")))?
            .map_err(RedisBackendError::Runtime)?;
        // Why these settings: our own timeout and breaker decide when Redis is down, so the
        // manager makes one quick attempt per call instead of retrying behind our back.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(100));
        let conn = {
            let _entered = handle.enter();
            ConnectionManager::new_lazy_with_config(client.clone(), config)
                .map_err(RedisBackendError::InvalidUrl)?
        };
        let backend = Arc::new(Backend {
            channel: format!("{}:invalidations", self.prefix),
            prefix: self.prefix,
            handle,
            stop: Mutex::new(Some(stop_tx)),
            conn,
            timeout: self.timeout,
            retry_interval: self.retry_interval,
            sync_interval: self.sync_interval,
            lease_ttl: self.lease_ttl,
            up: AtomicBool::new(true),
            retry_at: Mutex::new(None),
            errors: AtomicU64::new(0),
            subscribed: AtomicBool::new(false),
            caches: Mutex::new(Vec::new()),
            pending: Mutex::new(HashSet::new()),
        });
        metrics::gauge!("actix_conditional_redis_up").set(1.0);
        backend
            .handle
            .spawn(subscribe_loop(Arc::downgrade(&backend), client));
        backend.handle.spawn(sync_loop(Arc::downgrade(&backend)));
        Ok(RedisBackend { inner: backend })
    }
}

/// The shared state behind a [`RedisBackend`].
pub(crate) struct Backend {
    prefix: String,
    channel: String,
    handle: tokio::runtime::Handle,
    stop: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    conn: ConnectionManager,
    timeout: Duration,
    retry_interval: Duration,
    sync_interval: Duration,
    pub(crate) lease_ttl: Duration,
    up: AtomicBool,
    /// While Redis is down: when the next call may probe it.
    retry_at: Mutex<Option<Instant>>,
    errors: AtomicU64,
    subscribed: AtomicBool,
    caches: Mutex<Vec<Weak<Inner>>>,
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

/// Increments a counter, to at least `floor` (the caller's copy after its own bump: a Redis
/// that lost its data restarts counters at 0, and the instances' copies must still see the
/// value move up), and publishes the new value.
const BUMP: &str = r"
local v = redis.call('INCR', KEYS[1])
local floor = tonumber(ARGV[1])
if v < floor then
  v = floor
  redis.call('SET', KEYS[1], v)
end
redis.call('PUBLISH', ARGV[2], v .. '\n' .. ARGV[3])
return v
";

/// One response of [`Backend::lookup`]: the stored bytes and their remaining `PTTL`.
pub(crate) type Stored = (Bytes, i64);

impl Backend {
    pub(crate) fn entry_key(&self, cache: &str, key: &str) -> String {
        format!("{}:{cache}:e:{:032x}", self.prefix, hash(key))
    }

    pub(crate) fn lease_key(&self, cache: &str, key: &str) -> String {
        format!("{}:{cache}:lease:{:032x}", self.prefix, hash(key))
    }

    fn generation_key(&self, cache: &str, section: Option<&str>) -> String {
        match section {
            Some(section) => format!("{}:{cache}:gen:{section}", self.prefix),
            None => format!("{}:{cache}:gen", self.prefix),
        }
    }

    /// Runs one Redis operation on the backend's thread, bounded by the timeout; `None` when
    /// Redis is unavailable, failed or was too slow (logged and counted).
    pub(crate) async fn run<T, F>(self: &Arc<Self>, op: &'static str, f: F) -> Option<T>
    where
        T: Send + 'static,
        F: FnOnce(ConnectionManager) -> BoxFuture<'static, RedisResult<T>> + Send + 'static,
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
                self.succeeded();
                return Some(value);
            }
            Ok(Ok(Err(err))) => {
                let connectivity = err.is_io_error()
                    || err.is_timeout()
                    || err.is_connection_dropped()
                    || err.is_connection_refusal()
                    || err.is_unrecoverable_error();
                if !connectivity {
                    // A command error (e.g. a foreign value of another type under our key):
                    // this call fails, Redis itself is fine.
                    self.count_error(op);
                    tracing::warn!(op, error = %err, "response cache: redis command failed");
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
            metrics::gauge!("actix_conditional_redis_up").set(0.0);
            tracing::warn!(op, error, retry_in = ?self.retry_interval,
                "response cache: redis unavailable; caches run on local memory only");
        } else {
            tracing::debug!(op, error, "response cache: redis still unavailable");
        }
    }

    fn succeeded(self: &Arc<Self>) {
        if !self.up.swap(true, Ordering::Relaxed) {
            metrics::gauge!("actix_conditional_redis_up").set(1.0);
            tracing::info!("response cache: redis reachable again; resynchronising");
            // Invalidations made while it was down, then everyone's counters.
            let this = Arc::clone(self);
            self.handle.spawn(async move { this.resync().await });
        }
    }

    /// The stored bytes under `entry_key`, with their remaining life in milliseconds.
    pub(crate) async fn lookup(self: &Arc<Self>, entry_key: String) -> Option<Option<Stored>> {
        self.run("get", move |mut conn| {
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

    /// Stores `value` for `life`, then (in the same round trip, in order) releases `lease`,
    /// so waiters that see the lease gone find the value.
    pub(crate) async fn store(
        self: &Arc<Self>,
        entry_key: String,
        value: Vec<u8>,
        life: Duration,
        lease: Option<Lease>,
    ) -> bool {
        let release = lease.map(Lease::disarm);
        let px = millis(life);
        self.run("set", move |mut conn| {
            Box::pin(async move {
                let mut pipe = ::redis::pipe();
                pipe.cmd("SET")
                    .arg(&entry_key)
                    .arg(value)
                    .arg("PX")
                    .arg(px)
                    .ignore();
                if let Some((key, token)) = &release {
                    pipe.add_command(lease::release_cmd(key, token)).ignore();
                }
                pipe.exec_async(&mut conn).await
            })
        })
        .await
        .is_some()
    }

    /// Bumps the counter of `cache` (or of one section) past `floor` and broadcasts the new
    /// value; the caller's own copy is raised to it. Queued for replay if Redis is down.
    pub(crate) fn publish(
        self: &Arc<Self>,
        inner: &Arc<Inner>,
        section: Option<String>,
        floor: u64,
    ) -> Invalidation {
        let this = Arc::clone(self);
        let inner = Arc::downgrade(inner);
        let task = self.handle.spawn(async move {
            let Some(inner) = inner.upgrade() else { return };
            let cache = inner.name.to_string();
            if let Some(value) = this.bump(&cache, section.as_deref(), floor).await {
                inner.observe_generation(section.as_deref(), value);
                tracing::debug!(cache, ?section, value, "response cache: invalidation published");
            } else {
                tracing::warn!(cache, ?section,
                    "response cache: invalidation not published (redis unavailable); other instances learn of it when it is back");
                this.pending
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert((cache, section));
            }
        });
        Invalidation::waiting(async move {
            let _ = task.await;
        })
    }

    async fn bump(self: &Arc<Self>, cache: &str, section: Option<&str>, floor: u64) -> Option<u64> {
        let key = self.generation_key(cache, section);
        let channel = self.channel.clone();
        let payload = match section {
            Some(section) => format!("{cache}\n{section}"),
            None => cache.to_owned(),
        };
        self.run("publish", move |mut conn| {
            Box::pin(async move {
                ::redis::cmd("EVAL")
                    .arg(BUMP)
                    .arg(1)
                    .arg(key)
                    .arg(floor)
                    .arg(channel)
                    .arg(payload)
                    .query_async(&mut conn)
                    .await
            })
        })
        .await
    }

    /// Adds a cache to those this backend keeps in step, and reads its counters now (bounded
    /// by the timeout), so its first requests already use the shared generation.
    pub(crate) fn register(self: &Arc<Self>, inner: &Arc<Inner>) {
        self.caches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::downgrade(inner));
        let (tx, rx) = std::sync::mpsc::channel();
        let (this, cache) = (Arc::clone(self), Arc::clone(inner));
        self.handle.spawn(async move {
            this.sync_cache(&cache).await;
            let _ = tx.send(());
        });
        if rx.recv_timeout(self.timeout * 2).is_err() {
            tracing::warn!(cache = %inner.name, "response cache: redis counters not read at start; using local ones until they are");
        }
    }

    /// Replays the invalidations Redis missed, then re-reads every cache's counters.
    async fn resync(self: &Arc<Self>) {
        let pending: Vec<(String, Option<String>)> = self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .collect();
        for (cache, section) in pending {
            let Some(inner) = self.cache(&cache) else {
                continue;
            };
            let floor = inner.local_generation(section.as_deref());
            match self.bump(&cache, section.as_deref(), floor).await {
                Some(value) => inner.observe_generation(section.as_deref(), value),
                None => {
                    self.pending
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert((cache, section));
                }
            }
        }
        for inner in self.live_caches() {
            self.sync_cache(&inner).await;
        }
    }

    async fn sync_cache(self: &Arc<Self>, inner: &Arc<Inner>) {
        let scopes: Vec<Option<String>> = std::iter::once(None)
            .chain(inner.section_names().into_iter().map(Some))
            .collect();
        let keys: Vec<String> = scopes
            .iter()
            .map(|s| self.generation_key(&inner.name, s.as_deref()))
            .collect();
        let values: Option<Vec<Option<u64>>> = self
            .run("sync", move |mut conn| {
                Box::pin(async move { ::redis::cmd("MGET").arg(keys).query_async(&mut conn).await })
            })
            .await;
        for (scope, value) in scopes.iter().zip(values.unwrap_or_default()) {
            if let Some(value) = value {
                inner.observe_generation(scope.as_deref(), value);
            }
        }
    }

    fn cache(&self, name: &str) -> Option<Arc<Inner>> {
        self.live_caches()
            .into_iter()
            .find(|inner| &*inner.name == name)
    }

    fn live_caches(&self) -> Vec<Arc<Inner>> {
        let mut caches = self.caches.lock().unwrap_or_else(PoisonError::into_inner);
        caches.retain(|weak| weak.strong_count() > 0);
        caches.iter().filter_map(Weak::upgrade).collect()
    }

    /// Applies a broadcast to the caches it names.
    fn on_message(&self, payload: &str) {
        let Some((value, cache, section)) = parse_message(payload) else {
            tracing::debug!(payload, "response cache: ignoring a malformed invalidation");
            return;
        };
        for inner in self.live_caches() {
            if &*inner.name == cache {
                inner.observe_generation(section, value);
            }
        }
    }
}

/// A broadcast, `"<value>\n<cache>[\n<section>]"`: the new counter, the cache, the section.
fn parse_message(payload: &str) -> Option<(u64, &str, Option<&str>)> {
    let mut parts = payload.splitn(3, '\n');
    let value = parts.next()?.parse().ok()?;
    let cache = parts.next()?;
    Some((value, cache, parts.next()))
}

/// Keeps one subscription to the invalidation channel, reconnecting after every loss; each
/// (re)connect re-reads the counters, since messages sent while it was away are gone.
async fn subscribe_loop(backend: Weak<Backend>, client: Client) {
    loop {
        let Some(this) = backend.upgrade() else {
            return;
        };
        let (channel, timeout, retry) = (this.channel.clone(), this.timeout, this.retry_interval);
        drop(this);
        let connected = tokio::time::timeout(timeout, async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, RedisError>(pubsub)
        })
        .await;
        if let Ok(Ok(pubsub)) = connected {
            let Some(this) = backend.upgrade() else {
                return;
            };
            this.subscribed.store(true, Ordering::Relaxed);
            tracing::debug!(channel, "response cache: subscribed to invalidations");
            this.resync().await;
            drop(this);
            let mut messages = pubsub.into_on_message();
            while let Some(msg) = messages.next().await {
                let Some(this) = backend.upgrade() else {
                    return;
                };
                match msg.get_payload::<String>() {
                    Ok(payload) => this.on_message(&payload),
                    Err(err) => {
                        tracing::debug!(error = %err, "response cache: unreadable invalidation")
                    }
                }
            }
            if let Some(this) = backend.upgrade() {
                this.subscribed.store(false, Ordering::Relaxed);
                tracing::warn!(
                    channel,
                    "response cache: invalidation subscription lost; reconnecting"
                );
            }
        }
        tokio::time::sleep(retry).await;
    }
}

/// The safety net for lost broadcasts: re-reads every counter each `sync_interval`.
async fn sync_loop(backend: Weak<Backend>) {
    loop {
        let Some(interval) = backend.upgrade().map(|b| b.sync_interval) else {
            return;
        };
        tokio::time::sleep(interval).await;
        let Some(this) = backend.upgrade() else {
            return;
        };
        this.resync().await;
    }
}

fn hash(key: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(key.as_bytes())
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn messages_name_a_value_a_cache_and_maybe_a_section() {
        assert_eq!(parse_message("7\nsummary"), Some((7, "summary", None)));
        assert_eq!(
            parse_message("8\nsummary\nrecent_progress"),
            Some((8, "summary", Some("recent_progress")))
        );
        assert_eq!(parse_message("x\nsummary"), None);
        assert_eq!(parse_message("9"), None);
        assert_eq!(parse_message(""), None);
    }

    proptest! {
        #[test]
        fn any_payload_parses_or_is_refused_without_panic(payload in "\\PC{0,64}") {
            let _ = parse_message(&payload);
        }

        #[test]
        fn published_payloads_round_trip(value in any::<u64>(), cache in "[a-z-]{1,20}", section in proptest::option::of("[a-z_]{1,20}")) {
            let payload = match &section {
                Some(section) => format!("{value}\n{cache}\n{section}"),
                None => format!("{value}\n{cache}"),
            };
            prop_assert_eq!(parse_message(&payload), Some((value, cache.as_str(), section.as_deref())));
        }
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
}
