//! Per-cache counters: kept in atomics for [`ResponseCache::stats`](super::ResponseCache::stats)
//! and mirrored to the [`metrics`] facade (`actix_conditional_cache_<event>_total{cache="…"}`),
//! so any metrics exporter (Prometheus, StatsD, …) picks them up. Install the exporter's
//! recorder before the first request: each cache registers its counters at its first event.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// What happened, counted per cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    Build,
    Hit,
    Miss,
    Stale,
    Coalesced,
    Bypass,
    RefreshFailure,
    Eviction,
    L2Hit,
    L2Write,
    L2Undecodable,
    LockTimeout,
    LockPass,
    LockDangling,
    LockTransient,
    RevisionFailure,
}

impl Event {
    fn metric(self) -> &'static str {
        match self {
            Self::Build => "actix_conditional_cache_builds_total",
            Self::Hit => "actix_conditional_cache_hits_total",
            Self::Miss => "actix_conditional_cache_misses_total",
            Self::Stale => "actix_conditional_cache_stale_served_total",
            Self::Coalesced => "actix_conditional_cache_coalesced_total",
            Self::Bypass => "actix_conditional_cache_bypasses_total",
            Self::RefreshFailure => "actix_conditional_cache_refresh_failures_total",
            Self::Eviction => "actix_conditional_cache_evictions_total",
            Self::L2Hit => "actix_conditional_cache_redis_hits_total",
            Self::L2Write => "actix_conditional_cache_redis_writes_total",
            Self::L2Undecodable => "actix_conditional_cache_redis_undecodable_total",
            Self::LockTimeout => "actix_conditional_cache_lock_timeouts_total",
            Self::LockPass => "actix_conditional_cache_lock_passes_total",
            Self::LockDangling => "actix_conditional_cache_lock_dangling_total",
            Self::LockTransient => "actix_conditional_cache_lock_transient_total",
            Self::RevisionFailure => "actix_conditional_cache_revision_failures_total",
        }
    }
}

/// A point-in-time copy of a cache's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Handler (or section) runs whose result the cache took: misses, refreshes, rebuilds.
    pub builds: u64,
    /// Responses served from a fresh entry (`hit`, `hit-revision`, `section`).
    pub hits: u64,
    /// Requests that found nothing usable and led a build (`miss`, `refresh`).
    pub misses: u64,
    /// Responses served from a stale entry (`stale`).
    pub stale_served: u64,
    /// Requests that waited for another request's build (`coalesced`).
    pub coalesced: u64,
    /// Requests the cache did not touch (credentials, methods, uncacheable keys).
    pub bypasses: u64,
    /// Rebuilds that failed (error status, panic), whether or not stale bytes covered them.
    pub refresh_failures: u64,
    /// Entries evicted to keep the byte budget.
    pub evictions: u64,
    /// Entries read back from Redis (another instance's builds, or this one's after its
    /// memory lost them).
    pub redis_hits: u64,
    /// Entries written to Redis.
    pub redis_writes: u64,
    /// Values in Redis that could not be read (another layout version, corrupt): misses.
    pub redis_undecodable: u64,
    /// Waits for another request's build that passed `lock_timeout`: the waiter built for
    /// itself without storing.
    pub lock_timeouts: u64,
    /// Waiters released at once because the build they waited for was not shareable: each
    /// fetched on its own (and the key is remembered as hit-for-pass).
    pub lock_passes: u64,
    /// Waits whose leader was dropped unfinished (cancelled, its task gone): one waiter took
    /// over.
    pub lock_dangling: u64,
    /// Waits whose leader failed transiently (408, 429): a new leader was elected among them.
    pub lock_transient: u64,
    /// Revision (or section revision) queries that failed: the request was answered from a
    /// stored entry within its stale window (`stale`, stale-on-error) or, with none, by the
    /// handler without storing.
    pub revision_failures: u64,
}

/// Every event, in `Event as usize` order.
const EVENTS: [Event; 16] = [
    Event::Build,
    Event::Hit,
    Event::Miss,
    Event::Stale,
    Event::Coalesced,
    Event::Bypass,
    Event::RefreshFailure,
    Event::Eviction,
    Event::L2Hit,
    Event::L2Write,
    Event::L2Undecodable,
    Event::LockTimeout,
    Event::LockPass,
    Event::LockDangling,
    Event::LockTransient,
    Event::RevisionFailure,
];

#[derive(Debug)]
pub(crate) struct Stats {
    name: metrics::SharedString,
    counters: [AtomicU64; 16],
    /// The metrics handles, registered with the recorder at the first event (so a recorder
    /// installed before serving, after the cache was built, still gets them) rather than per
    /// event, which would build a labelled key and look it up on every hit.
    handles: OnceLock<Vec<metrics::Counter>>,
}

impl Stats {
    pub(crate) fn new(name: &str) -> Self {
        Self {
            // A shared `Arc<str>`: cloning the label per event costs no allocation.
            name: metrics::SharedString::from(std::sync::Arc::<str>::from(name)),
            counters: Default::default(),
            handles: OnceLock::new(),
        }
    }

    pub(crate) fn record(&self, event: Event) {
        self.counters[event as usize].fetch_add(1, Ordering::Relaxed);
        let handles = self.handles.get_or_init(|| {
            EVENTS
                .iter()
                .map(|event| metrics::counter!(event.metric(), "cache" => self.name.clone()))
                .collect()
        });
        handles[event as usize].increment(1);
    }

    pub(crate) fn snapshot(&self) -> CacheStats {
        let get = |event: Event| self.counters[event as usize].load(Ordering::Relaxed);
        CacheStats {
            builds: get(Event::Build),
            hits: get(Event::Hit),
            misses: get(Event::Miss),
            stale_served: get(Event::Stale),
            coalesced: get(Event::Coalesced),
            bypasses: get(Event::Bypass),
            refresh_failures: get(Event::RefreshFailure),
            evictions: get(Event::Eviction),
            redis_hits: get(Event::L2Hit),
            redis_writes: get(Event::L2Write),
            redis_undecodable: get(Event::L2Undecodable),
            lock_timeouts: get(Event::LockTimeout),
            lock_passes: get(Event::LockPass),
            lock_dangling: get(Event::LockDangling),
            lock_transient: get(Event::LockTransient),
            revision_failures: get(Event::RevisionFailure),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_each_event_apart() {
        let stats = Stats::new("t");
        stats.record(Event::Build);
        stats.record(Event::Hit);
        stats.record(Event::Hit);
        let snap = stats.snapshot();
        assert_eq!((snap.builds, snap.hits, snap.misses), (1, 2, 0));
    }
}
