//! A shared tier kept in this process's memory ([`InProcessTier`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use actix_web::http::header::HeaderName;
use futures_util::future::{BoxFuture, LocalBoxFuture};

use super::entry::Entry;
use super::generations::Generations;
use super::stats::{Event, Stats};
use super::tier::{Fetched, LeaseAttempt, LeasePoll, SharedTier, TierLease};

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
/// use actix_conditional::response_cache::{InProcessTier, ResponseCache, Scope};
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
/// assert_eq!(res.headers().get("x-cache").unwrap(), "miss");
/// // `b` never ran a handler: it found a's build in the tier.
/// let res = b.serve(&req, |_| async { HttpResponse::Ok().body("built by b") }).await;
/// assert_eq!(res.headers().get("x-cache").unwrap(), "hit");
/// // An invalidation on `a` reaches `b`.
/// a.invalidate(&Scope::All).await;
/// let res = b.serve(&req, |_| async { HttpResponse::Ok().body("built by b") }).await;
/// assert_eq!(res.headers().get("x-cache").unwrap(), "miss");
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
                let entry = Entry::new(
                    entry.snapshot.clone(),
                    now.saturating_sub(elapsed),
                    entry.revision.clone(),
                    entry.vary.clone(),
                    entry.sections.clone(),
                    entry.generation,
                );
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
        let copy = Entry::new(
            entry.snapshot.clone(),
            entry.stored_at,
            entry.revision.clone(),
            entry.vary.clone(),
            entry.sections.clone(),
            entry.generation,
        );
        {
            let mut state = self.tier.lock();
            let stored = Stored::Entry {
                entry: Arc::new(copy),
                at,
                until,
            };
            state.values.insert(self.key(key), stored);
            if let Some((base, names)) = vary {
                let names = names.to_vec();
                state
                    .values
                    .insert(self.key(base), Stored::Vary { names, until });
            }
        }
        drop(lease); // released after the value, as Redis does in one pipeline
        self.stats.record(Event::L2Write);
        Box::pin(async { true })
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
            .values
            .insert(self.key(key), Stored::Pass { until });
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
