//! This instance's memory: entries under a byte budget (moka), the keys remembered as not
//! shareable (hit-for-pass), and the `Vary` header names learnt per URL.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_web::http::header::{HeaderMap, HeaderName};

use super::entry::{ENTRY_OVERHEAD, Entry};
use super::key::{full_key, vary_values};
use super::stats::{Event, Stats};

/// What one byte of a key costs in memory: measured at about three
/// (`tests/memory_budget.rs`, `per_entry_costs`: 400 more key bytes cost about 1.27 KB more
/// per entry), so keys are weighed three times over; a long query string is not cheap.
const KEY_BYTE_COST: usize = 3;

/// What memory holds under a key.
#[derive(Debug, Clone)]
pub(crate) enum Slot {
    Entry(Arc<Entry>),
    /// Hit-for-pass: this key's responses were not shareable; do not coalesce until then.
    Unshared {
        until: Duration,
    },
}

/// The memory tier of one cache.
#[derive(Debug)]
pub(crate) struct Store {
    entries: moka::sync::Cache<Arc<str>, Slot>,
    learned_vary: moka::sync::Cache<Arc<str>, Arc<[HeaderName]>>,
    /// Whether any response varied yet: until one does, lookups skip `learned_vary`.
    any_vary: AtomicBool,
    /// Whether entries are kept here (off: a shared tier holds them, memory only remembers
    /// hit-for-pass keys).
    keeps_entries: bool,
}

impl Store {
    /// A store within `max_bytes`, whose entries are collected `life` after they were stored
    /// (`by_age`) or last read. These lifetimes only collect garbage: freshness is decided
    /// on the cache's own clock, from the times inside each entry.
    pub(crate) fn new(
        name: &Arc<str>,
        max_bytes: u64,
        life: Duration,
        by_age: bool,
        keeps_entries: bool,
        stats: &Arc<Stats>,
    ) -> Self {
        let (eviction_stats, eviction_name) = (Arc::clone(stats), Arc::clone(name));
        // The learnt `Vary` names are kept within the budget too: a sixteenth of it.
        let vary_bytes = max_bytes / 16;
        let builder = moka::sync::Cache::builder()
            .max_capacity(max_bytes - vary_bytes)
            .weigher(|key: &Arc<str>, slot: &Slot| {
                let key_len = u32::try_from(KEY_BYTE_COST * key.len()).unwrap_or(u32::MAX);
                match slot {
                    Slot::Entry(entry) => entry.weight().saturating_add(key_len),
                    // A hit-for-pass marker costs the store's bookkeeping as an entry does.
                    Slot::Unshared { .. } => key_len.saturating_add(ENTRY_OVERHEAD as u32),
                }
            })
            .eviction_listener(move |key, _slot, cause| {
                if cause == moka::notification::RemovalCause::Size {
                    eviction_stats.record(Event::Eviction);
                    tracing::debug!(cache = %eviction_name, %key, "response cache: evicted");
                }
            });
        let grace = life + Duration::from_secs(60);
        let entries = if by_age {
            builder.time_to_live(grace)
        } else {
            builder.time_to_idle(grace)
        }
        .build();
        Self {
            entries,
            // Keys can be long (a full query string), and every URL that varies has one here:
            // weigh them with the store's bookkeeping, keep the table in its share of the
            // budget and forget URLs nobody asked for in a while.
            learned_vary: moka::sync::Cache::builder()
                .weigher(|base: &Arc<str>, names: &Arc<[HeaderName]>| {
                    let names: usize = names.iter().map(|n| n.as_str().len() + 32).sum();
                    let weight = ENTRY_OVERHEAD + KEY_BYTE_COST * base.len() + names;
                    u32::try_from(weight).unwrap_or(u32::MAX)
                })
                .max_capacity(vary_bytes)
                .time_to_idle(life + Duration::from_secs(3600))
                .build(),
            any_vary: AtomicBool::new(false),
            keeps_entries,
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<Slot> {
        self.entries.get(key)
    }

    /// Keeps `entry` in memory, unless this cache keeps entries in its shared tier only.
    pub(crate) fn keep(&self, key: &Arc<str>, entry: &Arc<Entry>) {
        if self.keeps_entries {
            self.entries
                .insert(Arc::clone(key), Slot::Entry(Arc::clone(entry)));
        }
    }

    /// Remembers until `until` that `key`'s responses are not shared, so its requests run side
    /// by side instead of queueing behind one another (Varnish's hit-for-miss).
    pub(crate) fn mark_unshared(&self, key: &Arc<str>, until: Duration) {
        self.entries
            .insert(Arc::clone(key), Slot::Unshared { until });
    }

    pub(crate) fn remove(&self, key: &str) {
        self.entries.invalidate(key);
    }

    /// A function that drops every entry, for a TTL cache invalidated by another instance
    /// (its entries can never be served again).
    pub(crate) fn clearer(&self) -> impl Fn() + Send + Sync + 'static {
        let entries = self.entries.clone();
        move || entries.invalidate_all()
    }

    /// The key of the variant `req_headers` select of the URL `base`, from the `Vary` names
    /// learnt for it.
    pub(crate) fn key_for(&self, base: &str, req_headers: &HeaderMap) -> Arc<str> {
        let names = if self.any_vary.load(Ordering::Relaxed) {
            self.learned_vary.get(base).unwrap_or_default()
        } else {
            Arc::default()
        };
        full_key(base, &vary_values(&names, req_headers))
    }

    /// Remembers that responses under `base` vary on `names`; returns the key of the variant
    /// `req_headers` select.
    pub(crate) fn learn_vary(
        &self,
        base: &str,
        names: &[HeaderName],
        req_headers: &HeaderMap,
    ) -> Arc<str> {
        if names.is_empty() {
            return Arc::from(base);
        }
        self.learned_vary
            .insert(Arc::from(base), Arc::from(names.to_vec()));
        self.any_vary.store(true, Ordering::Relaxed);
        full_key(base, &vary_values(names, req_headers))
    }

    pub(crate) fn entry_count(&self) -> u64 {
        self.entries.entry_count()
    }

    /// Bytes the entries weigh against the budget (after pending housekeeping).
    pub(crate) fn weighted_bytes(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.weighted_size()
    }
}
