//! Per-purger counters: kept in atomics for [`Purges::stats`](super::Purges::stats) and mirrored
//! to the [`metrics`] facade, named like the response caches' metrics:
//!
//! - `actix_conditional_purges_total{purger, outcome}`: attempts, with `outcome` = `ok` (landed
//!   at the first attempt), `retried` (landed after failed attempts) or `failed`;
//! - `actix_conditional_purges_dropped_total{purger}`: groups given up (queue full, or a group
//!   the purger can never send);
//! - `actix_conditional_purges_pending{purger}` (gauge): groups queued or in flight.
//!
//! Handles are registered at the first event, so a recorder installed after the dispatcher was
//! built still gets them.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// A point-in-time copy of purge counters (one purger's, or the sum over all of them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PurgeStats {
    /// Attempts that landed (`outcome="ok"` plus `outcome="retried"`).
    pub succeeded: u64,
    /// Of those, attempts that landed after failed ones: recoveries (`outcome="retried"`).
    pub recovered: u64,
    /// Attempts that failed: an error answer, no answer, a timeout (`outcome="failed"`). Each
    /// is retried with backoff.
    pub failed: u64,
    /// Groups queued or in flight now, summed over purgers.
    pub pending: u64,
    /// Groups given up: the queue was at its bound, or the purger can never send them.
    pub dropped: u64,
}

impl std::ops::Add for PurgeStats {
    type Output = Self;

    fn add(self, other: Self) -> Self {
        Self {
            succeeded: self.succeeded + other.succeeded,
            recovered: self.recovered + other.recovered,
            failed: self.failed + other.failed,
            pending: self.pending + other.pending,
            dropped: self.dropped + other.dropped,
        }
    }
}

#[derive(Debug)]
struct Handles {
    ok: metrics::Counter,
    retried: metrics::Counter,
    failed: metrics::Counter,
    dropped: metrics::Counter,
    pending: metrics::Gauge,
}

/// One purger's counters.
#[derive(Debug)]
pub(crate) struct LaneStats {
    name: metrics::SharedString,
    succeeded: AtomicU64,
    recovered: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    handles: OnceLock<Handles>,
}

impl LaneStats {
    pub(crate) fn new(name: &str) -> Self {
        Self {
            name: metrics::SharedString::from(std::sync::Arc::<str>::from(name)),
            succeeded: AtomicU64::new(0),
            recovered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            handles: OnceLock::new(),
        }
    }

    fn handles(&self) -> &Handles {
        self.handles.get_or_init(|| {
            let total = "actix_conditional_purges_total";
            let name = || self.name.clone();
            Handles {
                ok: metrics::counter!(total, "purger" => name(), "outcome" => "ok"),
                retried: metrics::counter!(total, "purger" => name(), "outcome" => "retried"),
                failed: metrics::counter!(total, "purger" => name(), "outcome" => "failed"),
                dropped: metrics::counter!("actix_conditional_purges_dropped_total", "purger" => name()),
                pending: metrics::gauge!("actix_conditional_purges_pending", "purger" => name()),
            }
        })
    }

    /// An attempt landed; `after_failures`: earlier attempts of this batch failed.
    pub(crate) fn succeeded(&self, after_failures: bool) {
        self.succeeded.fetch_add(1, Ordering::Relaxed);
        if after_failures {
            self.recovered.fetch_add(1, Ordering::Relaxed);
            self.handles().retried.increment(1);
        } else {
            self.handles().ok.increment(1);
        }
    }

    pub(crate) fn failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.handles().failed.increment(1);
    }

    pub(crate) fn dropped(&self, groups: usize) {
        self.dropped.fetch_add(groups as u64, Ordering::Relaxed);
        self.handles().dropped.increment(groups as u64);
    }

    pub(crate) fn set_pending(&self, groups: usize) {
        self.handles().pending.set(groups as f64);
    }

    pub(crate) fn snapshot(&self, pending: usize) -> PurgeStats {
        PurgeStats {
            succeeded: self.succeeded.load(Ordering::Relaxed),
            recovered: self.recovered.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            pending: pending as u64,
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}
