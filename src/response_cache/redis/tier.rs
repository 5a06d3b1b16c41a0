//! Redis as the [`SharedTier`] of one cache: keys, the value layout of [`codec`](super::codec),
//! leases and the cache's invalidation counters.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::HeaderName;
use futures_util::future::{BoxFuture, LocalBoxFuture};

use super::codec::{self, Value};
use super::counters::Gate;
use super::lease::Lease;
use super::{Backend, RedisBackend, Stored, millis};
use crate::response_cache::entry::{Entry, Snapshot};
use crate::response_cache::generations::Generations;
use crate::response_cache::stats::{Event, Stats};
use crate::response_cache::tier::{Fetched, LeaseAttempt, LeasePoll, SharedTier, TierLease};

/// One cache's view of a [`RedisBackend`].
pub(crate) struct RedisTier {
    backend: Arc<Backend>,
    generations: Arc<Generations>,
    stats: Arc<Stats>,
    /// Coalesces this cache's per-request counter reads.
    gate: Arc<Gate>,
}

impl std::fmt::Debug for RedisTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTier")
            .field("cache", &self.generations.cache())
            .finish_non_exhaustive()
    }
}

impl RedisBackend {
    /// The shared tier of the cache whose counters are `generations`; the backend keeps
    /// them in step with the other instances from now on.
    pub(crate) fn tier(
        &self,
        generations: Arc<Generations>,
        stats: Arc<Stats>,
    ) -> Arc<dyn SharedTier> {
        self.inner.register(&generations);
        Arc::new(RedisTier {
            backend: Arc::clone(&self.inner),
            generations,
            stats,
            gate: Arc::default(),
        })
    }
}

impl RedisTier {
    fn entry_key(&self, key: &str) -> String {
        self.backend.entry_key(self.generations.cache(), key)
    }

    fn lease_key(&self, key: &str) -> String {
        self.backend.lease_key(self.generations.cache(), key)
    }

    /// A value read from Redis: an entry, its times set from its remaining life there
    /// (Redis's clock, so instances need not agree on theirs), or a Vary pointer; `None` if
    /// it cannot be read.
    fn decoded(&self, key: &str, (value, pttl): Stored, now: Duration) -> Option<Fetched> {
        let decoded = match codec::decode(key, value) {
            Ok(Value::Entry(decoded)) => decoded,
            Ok(Value::Vary(names)) => return Some(Fetched::Vary(names)),
            Ok(Value::Pass) => return Some(Fetched::Pass),
            Err(err) => {
                // Not a Redis failure: another version's layout is expected during a rolling
                // upgrade, and the build overwrites it. Warned about once per key and interval.
                let redis_key = self.entry_key(key);
                match self
                    .backend
                    .warn_allowed(&redis_key, std::time::Instant::now())
                {
                    Some(suppressed) => {
                        tracing::warn!(cache = %self.generations.cache(), key, redis_key, error = %err, suppressed,
                        "response cache: unreadable value in redis; treated as a miss")
                    }
                    None => tracing::debug!(cache = %self.generations.cache(), key, error = %err,
                        "response cache: unreadable value in redis; treated as a miss"),
                }
                self.stats.record(Event::L2Undecodable);
                return None;
            }
        };
        let remaining = u64::try_from(pttl).unwrap_or(decoded.life_ms);
        let elapsed = Duration::from_millis(decoded.life_ms.saturating_sub(remaining));
        let snapshot = Snapshot::new(decoded.status, &decoded.headers, decoded.body);
        let entry = Entry::new(
            snapshot,
            now.saturating_sub(elapsed),
            decoded.revision,
            decoded.vary,
            decoded.sections,
            decoded.generation,
        );
        self.stats.record(Event::L2Hit);
        Some(Fetched::Entry(Arc::new(entry)))
    }
}

impl SharedTier for RedisTier {
    fn sync_counters(&self) -> LocalBoxFuture<'_, ()> {
        Box::pin(async move {
            if self.backend.read_your_writes {
                self.backend
                    .fresh_counters(&self.generations, &self.gate)
                    .await;
            }
        })
    }

    fn get<'a>(&'a self, key: &'a str, now: Duration) -> LocalBoxFuture<'a, Option<Fetched>> {
        Box::pin(async move {
            let stored = self.backend.lookup(self.entry_key(key)).await??;
            self.decoded(key, stored, now)
        })
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        entry: &'a Entry,
        life: Duration,
        lease: Option<TierLease>,
        vary: Option<(&'a str, &'a [HeaderName])>,
    ) -> LocalBoxFuture<'a, bool> {
        Box::pin(async move {
            let value = codec::encode(key, entry, millis(life));
            let lease = lease.and_then(|lease| lease.downcast::<Lease>().ok().map(|l| *l));
            let pointer =
                vary.map(|(base, names)| (self.entry_key(base), codec::encode_vary(base, names)));
            self.backend
                .store(self.entry_key(key), value, life, lease, pointer)
                .await
        })
    }

    fn put_pass<'a>(
        &'a self,
        key: &'a str,
        life: Duration,
        lease: Option<TierLease>,
    ) -> LocalBoxFuture<'a, ()> {
        Box::pin(async move {
            let lease = lease.and_then(|lease| lease.downcast::<Lease>().ok().map(|l| *l));
            let value = codec::encode_pass(key);
            self.backend
                .store(self.entry_key(key), value, life, lease, None)
                .await;
        })
    }

    fn try_lease<'a>(
        &'a self,
        key: &'a str,
        now: Duration,
    ) -> LocalBoxFuture<'a, Option<LeaseAttempt>> {
        Box::pin(async move {
            let attempt =
                Lease::try_acquire(&self.backend, self.lease_key(key), self.entry_key(key)).await?;
            Some(LeaseAttempt {
                lease: attempt.lease.map(|lease| Box::new(lease) as TierLease),
                stored: attempt
                    .stored
                    .and_then(|stored| self.decoded(key, stored, now)),
            })
        })
    }

    fn poll_lease<'a>(
        &'a self,
        key: &'a str,
        now: Duration,
    ) -> LocalBoxFuture<'a, Option<LeasePoll>> {
        Box::pin(async move {
            let polled =
                Lease::poll(&self.backend, self.lease_key(key), self.entry_key(key)).await?;
            Some(LeasePoll {
                stored: polled
                    .stored
                    .and_then(|stored| self.decoded(key, stored, now)),
                held: polled.lease_held,
            })
        })
    }

    fn publish(&self, section: Option<&str>, value: u64) -> BoxFuture<'static, ()> {
        self.backend
            .publish(&self.generations, section.map(str::to_owned), value)
    }
}
