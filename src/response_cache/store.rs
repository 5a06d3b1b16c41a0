//! This instance's memory: entries under a byte budget (moka), the keys remembered as not
//! shareable (hit-for-pass), and the `Vary` header names learnt per URL.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_web::http::header::{HeaderMap, HeaderName};

use super::entry::{ENTRY_OVERHEAD, Entry};
use super::key::{full_key, vary_values};
use super::stats::{Event, Stats};

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
                let key_len = u32::try_from(key.len()).unwrap_or(u32::MAX);
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
                    let weight = ENTRY_OVERHEAD + base.len() + names;
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

#[cfg(test)]
mod tests {
    use actix_web::http::StatusCode;
    use actix_web::http::header::HeaderValue;
    use bytes::Bytes;

    use super::*;
    use crate::response_cache::entry::{HEADER_OVERHEAD, Snapshot};

    fn entry(headers: &[(&str, String)], body: &'static [u8]) -> Arc<Entry> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        let snapshot = Snapshot::new(StatusCode::OK, &map, Bytes::from_static(body));
        Arc::new(Entry::new(
            snapshot,
            Duration::ZERO,
            None,
            Vec::new(),
            Vec::new(),
            0,
        ))
    }

    /// What `key` and `entry` weigh in a store of their own.
    fn weighed(key: &str, entry: &Arc<Entry>) -> u64 {
        let stats = Arc::new(Stats::new("w"));
        let name: Arc<str> = Arc::from("w");
        let store = Store::new(&name, 1 << 30, Duration::from_secs(60), true, true, &stats);
        store.keep(&Arc::from(key), entry);
        store.weighted_bytes()
    }

    #[test]
    fn the_weigher_counts_key_headers_and_overhead_not_just_the_body() {
        let body = b"ok";
        let bare = entry(&[], body);
        let base = weighed("/a", &bare);
        assert!(
            base >= (ENTRY_OVERHEAD + 2 + 2) as u64,
            "an entry weighs its bookkeeping: {base}"
        );
        // A long key weighs what it adds.
        let long_key = format!("/a?{}", "q".repeat(4000));
        assert_eq!(weighed(&long_key, &bare), base + 4000 + 1);
        // Header lines weigh their bytes and their slot.
        let headers: Vec<(&str, String)> = (0..8).map(|_| ("x-big", "v".repeat(1000))).collect();
        let heavy = weighed("/a", &entry(&headers, body));
        assert_eq!(heavy, base + 8 * (5 + 1000 + HEADER_OVERHEAD as u64));
        // Hit-for-pass markers weigh their key and bookkeeping too.
        let stats = Arc::new(Stats::new("w"));
        let name: Arc<str> = Arc::from("w");
        let store = Store::new(&name, 1 << 30, Duration::from_secs(60), true, true, &stats);
        store.mark_unshared(&Arc::from(long_key.as_str()), Duration::from_secs(1));
        assert_eq!(
            store.weighted_bytes(),
            (ENTRY_OVERHEAD + long_key.len()) as u64
        );
    }
}
