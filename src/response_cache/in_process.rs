//! A shared tier kept in this process's memory ([`InProcessTier`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use actix_web::http::header::HeaderName;
use futures_util::future::{BoxFuture, LocalBoxFuture};

use super::entry::{ENTRY_OVERHEAD, Entry};
use super::generations::Generations;
use super::stats::{Event, Stats};
use super::tier::{Fetched, LeaseAttempt, LeasePoll, SharedTier, TierLease};

/// Default byte budget of an in-process tier: 64 MiB. A value that does not fit once expired
/// ones are gone is not stored (the caches keep their own copies).
pub const DEFAULT_IN_PROCESS_MAX_BYTES: usize = 64 * 1024 * 1024;

/// Default life of a build lease: how long a build may run before another cache sharing the
/// tier may start the same one: 5 s.
pub const DEFAULT_IN_PROCESS_LEASE_TTL: Duration = Duration::from_secs(5);

/// A shared tier kept in this process's memory: what Redis (feature `redis`) is to the instances
/// of an app, for several caches of one process. Each cache stays its own (memory tier,
/// flights, counters), as an instance would; through the tier they share entries, build
/// leases and invalidations. Use it to run several apps in one binary on one cache name, or
/// to test multi-instance behaviour without a Redis server.
///
/// ```
/// use std::time::Duration;
/// use actix_conditional::response_cache::{CacheStatus, InProcessTier, ResponseCache, CacheScope};
/// use actix_web::{HttpResponse, test};
///
/// # actix_web::rt::System::new().block_on(async {
/// let tier = InProcessTier::new();
/// let cache = |_instance: &str| {
///     ResponseCache::ttl("shared", Duration::from_secs(30)).shared_in_process(&tier).build()
/// };
/// let (a, b) = (cache("a"), cache("b"));
/// let req = test::TestRequest::get().uri("/x").to_http_request();
/// let res = a.serve(&req, |_| async { HttpResponse::Ok().body("built by a") }).await;
/// assert_eq!(CacheStatus::of(&res).unwrap().label(), "miss");
/// // `b` never ran a handler: it found a's build in the tier.
/// let res = b.serve(&req, |_| async { HttpResponse::Ok().body("built by b") }).await;
/// assert_eq!(CacheStatus::of(&res).unwrap().label(), "hit");
/// // An invalidation on `a` reaches `b`.
/// a.invalidate(&CacheScope::All).await;
/// let res = b.serve(&req, |_| async { HttpResponse::Ok().body("built by b") }).await;
/// assert_eq!(CacheStatus::of(&res).unwrap().label(), "miss");
/// # });
/// ```
///
/// Cloning is cheap and shares the tier.
#[derive(Clone, Default)]
pub struct InProcessTier {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    values: HashMap<String, Stored>,
    leases: HashMap<String, (u64, Instant)>,
    counters: HashMap<(String, Option<String>), u64>,
    caches: Vec<Weak<Generations>>,
    tokens: u64,
    lease_ttl: Option<Duration>,
    max_bytes: Option<usize>,
    /// What `values` weigh (keys, entries, pointers).
    bytes: usize,
    /// Values stored since the last sweep of expired ones.
    since_sweep: usize,
}

impl State {
    /// Stores `value` under `key` within the byte budget; whether it fit.
    fn store(&mut self, key: String, value: Stored) -> bool {
        self.remove(&key);
        let weight = value.weight(&key);
        let budget = self.max_bytes.unwrap_or(DEFAULT_IN_PROCESS_MAX_BYTES);
        self.since_sweep += 1;
        if self.bytes + weight > budget || self.since_sweep >= 256 {
            self.sweep();
        }
        if self.bytes + weight > budget {
            return false;
        }
        self.bytes += weight;
        self.values.insert(key, value);
        true
    }

    fn remove(&mut self, key: &str) {
        if let Some(old) = self.values.remove(key) {
            self.bytes -= old.weight(key);
        }
    }

    /// Drops the values whose life has ended.
    fn sweep(&mut self) {
        let now = Instant::now();
        let expired: Vec<String> = self
            .values
            .iter()
            .filter(|(_, value)| value.until() <= now)
            .map(|(key, _)| key.clone())
            .collect();
        for key in expired {
            self.remove(&key);
        }
        self.since_sweep = 0;
    }
}

enum Stored {
    Entry {
        entry: Arc<Entry>,
        at: Instant,
        until: Instant,
    },
    Vary {
        names: Vec<HeaderName>,
        until: Instant,
    },
    Pass {
        until: Instant,
    },
}

impl Stored {
    fn until(&self) -> Instant {
        match self {
            Self::Entry { until, .. } | Self::Vary { until, .. } | Self::Pass { until } => *until,
        }
    }

    /// Bytes it costs in the budget, with its key.
    fn weight(&self, key: &str) -> usize {
        key.len()
            + match self {
                Self::Entry { entry, .. } => entry.weight() as usize,
                Self::Vary { names, .. } => {
                    let names: usize = names.iter().map(|n| n.as_str().len() + 32).sum();
                    ENTRY_OVERHEAD + names
                }
                Self::Pass { .. } => ENTRY_OVERHEAD,
            }
    }
}

impl fmt::Debug for InProcessTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("InProcessTier")
            .field("values", &state.values.len())
            .field("leases", &state.leases.len())
            .finish_non_exhaustive()
    }
}

impl InProcessTier {
    /// An empty tier.
    pub fn new() -> Self {
        Self::default()
    }

    /// The most the stored values may weigh (default [`DEFAULT_IN_PROCESS_MAX_BYTES`]).
    pub fn max_bytes(self, max_bytes: usize) -> Self {
        self.lock().max_bytes = Some(max_bytes);
        self
    }

    /// Bytes the stored values weigh.
    pub fn weighted_bytes(&self) -> usize {
        self.lock().bytes
    }

    /// How long a build lease lives (default [`DEFAULT_IN_PROCESS_LEASE_TTL`]).
    pub fn lease_ttl(self, ttl: Duration) -> Self {
        self.lock().lease_ttl = Some(ttl);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The tier as one cache sees it.
    pub(crate) fn bind(
        &self,
        generations: Arc<Generations>,
        stats: Arc<Stats>,
    ) -> Arc<dyn SharedTier> {
        self.lock().caches.push(Arc::downgrade(&generations));
        Arc::new(Bound {
            tier: self.clone(),
            generations,
            stats,
        })
    }
}

/// One cache's view of an [`InProcessTier`].
struct Bound {
    tier: InProcessTier,
    generations: Arc<Generations>,
    stats: Arc<Stats>,
}

impl fmt::Debug for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bound")
            .field("cache", &self.generations.cache())
            .finish_non_exhaustive()
    }
}

/// A held lease; dropping it releases it (if it is still ours).
struct Lease {
    tier: InProcessTier,
    key: String,
    token: u64,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut state = self.tier.lock();
        if state
            .leases
            .get(&self.key)
            .is_some_and(|(token, _)| *token == self.token)
        {
            state.leases.remove(&self.key);
        }
    }
}

impl Bound {
    fn key(&self, key: &str) -> String {
        format!("{}\0{key}", self.generations.cache())
    }

    /// The value under `key`, its entry's times moved onto the caller's clock.
    fn read(&self, state: &State, key: &str, now: Duration) -> Option<Fetched> {
        let at = Instant::now();
        match state.values.get(&self.key(key))? {
            Stored::Entry {
                entry,
                at: stored,
                until,
            } if at < *until => {
                let elapsed = at.saturating_duration_since(*stored);
                let entry = entry.copy_built_at(now.saturating_sub(elapsed));
                self.stats.record(Event::L2Hit);
                Some(Fetched::Entry(Arc::new(entry)))
            }
            Stored::Vary { names, until } if at < *until => Some(Fetched::Vary(names.clone())),
            Stored::Pass { until } if at < *until => Some(Fetched::Pass),
            _ => None,
        }
    }
}

impl SharedTier for Bound {
    /// Reads the counters as Redis's `SYNC` script does: one below this cache's copy (an
    /// invalidation the tier never got) is set one past it, an invalidation for everyone.
    fn sync_counters(&self) -> LocalBoxFuture<'_, ()> {
        let cache = self.generations.cache();
        let scopes = std::iter::once(None).chain(self.generations.section_names().map(Some));
        let values: Vec<(Option<String>, u64)> = {
            let mut state = self.tier.lock();
            scopes
                .map(|section| {
                    let mine = self.generations.local(section);
                    let counter = state
                        .counters
                        .entry((cache.to_owned(), section.map(str::to_owned)))
                        .or_default();
                    if *counter < mine {
                        *counter = mine + 1;
                    }
                    (section.map(str::to_owned), *counter)
                })
                .collect()
        };
        for (section, value) in values {
            self.generations.observe(section.as_deref(), value);
        }
        Box::pin(async {})
    }

    fn get<'a>(&'a self, key: &'a str, now: Duration) -> LocalBoxFuture<'a, Option<Fetched>> {
        let fetched = self.read(&self.tier.lock(), key, now);
        Box::pin(async move { fetched })
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        entry: &'a Entry,
        life: Duration,
        lease: Option<TierLease>,
        vary: Option<(&'a str, &'a [HeaderName])>,
    ) -> LocalBoxFuture<'a, bool> {
        let at = Instant::now();
        let until = at + life;
        let copy = entry.copy_built_at(entry.stored_at);
        let stored = {
            let mut state = self.tier.lock();
            let entry = Arc::new(copy);
            let stored = state.store(self.key(key), Stored::Entry { entry, at, until });
            if stored && let Some((base, names)) = vary {
                let names = names.to_vec();
                state.store(self.key(base), Stored::Vary { names, until });
            }
            stored
        };
        drop(lease); // released after the value, as Redis does in one pipeline
        Box::pin(async move { stored })
    }

    fn put_pass<'a>(
        &'a self,
        key: &'a str,
        life: Duration,
        lease: Option<TierLease>,
    ) -> LocalBoxFuture<'a, ()> {
        let until = Instant::now() + life;
        self.tier
            .lock()
            .store(self.key(key), Stored::Pass { until });
        drop(lease);
        Box::pin(async {})
    }

    fn try_lease<'a>(
        &'a self,
        key: &'a str,
        now: Duration,
    ) -> LocalBoxFuture<'a, Option<LeaseAttempt>> {
        let mut state = self.tier.lock();
        let at = Instant::now();
        let lease_key = self.key(key);
        let free = state
            .leases
            .get(&lease_key)
            .is_none_or(|(_, until)| *until <= at);
        let lease = free.then(|| {
            state.tokens += 1;
            let token = state.tokens;
            let ttl = state.lease_ttl.unwrap_or(DEFAULT_IN_PROCESS_LEASE_TTL);
            state.leases.insert(lease_key.clone(), (token, at + ttl));
            Box::new(Lease {
                tier: self.tier.clone(),
                key: lease_key,
                token,
            }) as TierLease
        });
        let stored = self.read(&state, key, now);
        Box::pin(async move { Some(LeaseAttempt { lease, stored }) })
    }

    fn poll_lease<'a>(
        &'a self,
        key: &'a str,
        now: Duration,
    ) -> LocalBoxFuture<'a, Option<LeasePoll>> {
        let state = self.tier.lock();
        let at = Instant::now();
        let held = state
            .leases
            .get(&self.key(key))
            .is_some_and(|(_, until)| *until > at);
        let stored = self.read(&state, key, now);
        Box::pin(async move { Some(LeasePoll { stored, held }) })
    }

    fn publish(&self, section: Option<&str>, value: u64) -> BoxFuture<'static, ()> {
        let cache = self.generations.cache().to_owned();
        let (value, caches) = {
            let mut state = self.tier.lock();
            let counter = state
                .counters
                .entry((cache.clone(), section.map(str::to_owned)))
                .or_default();
            *counter = (*counter + 1).max(value);
            let value = *counter;
            state.caches.retain(|weak| weak.strong_count() > 0);
            (
                value,
                state
                    .caches
                    .iter()
                    .filter_map(Weak::upgrade)
                    .collect::<Vec<_>>(),
            )
        };
        for generations in caches.iter().filter(|g| g.cache() == cache) {
            generations.observe(section, value);
        }
        Box::pin(async {})
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use actix_web::{HttpResponse, test};
    use bytes::Bytes;

    use super::*;
    use crate::response_cache::ResponseCache;

    /// Caches of one name on one tier; every key's body is 1 KiB (a value weighs about
    /// 2.3 KiB with its headers and overhead: 7 fit in 16 KiB).
    async fn fill(tier: &InProcessTier, prefix: &str, keys: usize) -> ResponseCache {
        let cache = ResponseCache::ttl("budget", Duration::from_secs(60))
            .shared_in_process(tier)
            .build();
        for i in 0..keys {
            let req = test::TestRequest::get()
                .uri(&format!("/{prefix}{i}"))
                .to_http_request();
            let body = Bytes::from(vec![b'x'; 1024]);
            cache
                .serve(&req, move |_| {
                    let body = body.clone();
                    async move { HttpResponse::Ok().body(body) }
                })
                .await;
        }
        cache
    }

    #[actix_rt::test]
    async fn the_byte_budget_holds_and_expired_values_make_room() {
        let tier = InProcessTier::new().max_bytes(16 * 1024);
        let cache = fill(&tier, "k", 64).await;
        let weighed = tier.weighted_bytes();
        assert!(weighed <= 16 * 1024, "{weighed} bytes over a 16 KiB budget");
        assert!(
            weighed > 8 * 1024,
            "{weighed}: the budget is used, not left empty"
        );
        let stored = tier.lock().values.len();
        assert!((4..64).contains(&stored), "{stored} values for 64 keys");
        // Only what the tier took was counted as written to it.
        assert_eq!(cache.stats().redis_writes, stored as u64);

        // Once their life ends, expired values are swept to make room for new ones.
        let until = Instant::now();
        for value in tier.lock().values.values_mut() {
            if let Stored::Entry { until: life, .. } = value {
                *life = until;
            }
        }
        let _ = fill(&tier, "n", 64).await;
        let state = tier.lock();
        assert!(
            state.values.keys().all(|key| key.contains("/n")),
            "expired values kept"
        );
        assert!(
            state.values.len() >= 4,
            "new values refused: {}",
            state.values.len()
        );
        assert!(state.bytes <= 16 * 1024);
    }
}
