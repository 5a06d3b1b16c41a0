//! Configuring and starting a [`RedisBackend`]: its thread, connection and background loops.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::conn::{self, RedisTopology, Subscription};
use super::counters::{sharded_subscribe_loop, subscribe_loop, sync_loop};
use super::{
    Backend, DEFAULT_LEASE_TTL, DEFAULT_PREFIX, DEFAULT_RETRY_INTERVAL, DEFAULT_SYNC_INTERVAL,
    DEFAULT_TIMEOUT, RedisBackend, RedisBackendError,
};

/// Configures a [`RedisBackend`].
#[derive(Debug, Clone)]
#[must_use]
pub struct RedisBackendBuilder {
    topology: RedisTopology,
    prefix: String,
    timeout: Duration,
    retry_interval: Duration,
    sync_interval: Duration,
    lease_ttl: Duration,
    read_your_writes: bool,
}

impl RedisBackendBuilder {
    pub(super) fn new(topology: RedisTopology) -> Self {
        Self {
            topology,
            prefix: DEFAULT_PREFIX.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            retry_interval: DEFAULT_RETRY_INTERVAL,
            sync_interval: DEFAULT_SYNC_INTERVAL,
            lease_ttl: DEFAULT_LEASE_TTL,
            read_your_writes: true,
        }
    }

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
    ///
    /// Every instance sharing a prefix must use the same one: a lease with a longer time to
    /// live left (or none) is taken as broken (written by something else) and taken over.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// Whether every request a shared cache answers first waits for a read of the cache's
    /// invalidation counters that began after it arrived (default: yes). Concurrent requests
    /// share one read (a small script), so it costs about one Redis round trip of latency; in
    /// exchange an invalidation is seen by every instance on its next request, and a client
    /// whose write was answered reads it back wherever its next request lands.
    ///
    /// Off, requests never wait for Redis on a memory hit: other instances learn of an
    /// invalidation from its broadcast (usually within a millisecond, but pub/sub is best
    /// effort) or at the latest after [`sync_interval`](Self::sync_interval).
    pub fn read_your_writes(mut self, enabled: bool) -> Self {
        self.read_your_writes = enabled;
        self
    }

    /// Starts the backend's thread and connects in the background.
    ///
    /// # Errors
    ///
    /// [`RedisBackendError::InvalidUrl`] for a malformed URL (of a server, a cluster node or
    /// a Sentinel), [`RedisBackendError::Runtime`] if its thread cannot start.
    pub fn build(self) -> Result<RedisBackend, RedisBackendError> {
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
        let (conn, subscription) = {
            let _entered = handle.enter();
            conn::open(&self.topology, self.timeout).map_err(RedisBackendError::InvalidUrl)?
        };
        let cluster = self.topology.is_cluster();
        let prefix = if cluster {
            super::untagged(&self.prefix).into_owned()
        } else {
            self.prefix
        };
        let backend = Arc::new(Backend {
            channel: format!("{prefix}:invalidations"),
            prefix,
            cluster,
            clock_counters: !matches!(self.topology, RedisTopology::Single(_)),
            registered: Arc::new(tokio::sync::Notify::new()),
            handle,
            stop: Mutex::new(Some(stop_tx)),
            conn,
            timeout: self.timeout,
            retry_interval: self.retry_interval,
            sync_interval: self.sync_interval,
            lease_ttl: self.lease_ttl,
            read_your_writes: self.read_your_writes,
            up: AtomicBool::new(true),
            healthy: AtomicBool::new(true),
            faults: Mutex::default(),
            faulty: AtomicBool::new(false),
            // A failure that stops recurring for this long is over: counters are re-read
            // every `sync_interval`, and a tripped breaker probes every `retry_interval`, so
            // one still there recurs well within it.
            fault_hold: 2 * self.retry_interval.max(self.sync_interval),
            warnings: Mutex::default(),
            retry_at: Mutex::new(None),
            errors: AtomicU64::new(0),
            subscribed: AtomicBool::new(false),
            caches: Mutex::new(Vec::new()),
            pending: Mutex::new(HashSet::new()),
        });
        metrics::gauge!("actix_conditional_redis_up").set(1.0);
        match subscription {
            Subscription::Plain(source) => {
                backend
                    .handle
                    .spawn(subscribe_loop(Arc::downgrade(&backend), source));
            }
            Subscription::Sharded(client, pushes) => {
                backend.handle.spawn(sharded_subscribe_loop(
                    Arc::downgrade(&backend),
                    *client,
                    pushes,
                ));
            }
        }
        backend.handle.spawn(sync_loop(Arc::downgrade(&backend)));
        Ok(RedisBackend { inner: backend })
    }
}
