//! Invalidation counters: one for the whole cache and one per section. Every counter a cache
//! has lives here; a shared tier (Redis) reads and raises them through this type only.
//!
//! Counters only go up: [`Generations::observe`] takes the larger of the local copy and a value
//! learnt elsewhere, so a late or repeated message can never undo an invalidation.

use std::borrow::Cow;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters above this are refused: only a foreign writer produces them (a shared tier's
/// scripting numbers are doubles, exact up to 2^53, and `+ 1` here must never overflow).
pub(crate) const MAX_COUNTER: u64 = 1 << 52;

/// What to do when the whole cache is invalidated by another instance: a TTL cache frees the
/// memory of entries that can never be served again.
type OnInvalidateAll = Box<dyn Fn() + Send + Sync>;

/// The invalidation counters of one cache.
pub(crate) struct Generations {
    cache: Box<str>,
    all: AtomicU64,
    sections: Vec<(Cow<'static, str>, AtomicU64)>,
    on_invalidate_all: Option<OnInvalidateAll>,
}

impl fmt::Debug for Generations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Generations")
            .field("cache", &self.cache)
            .field("all", &self.all)
            .finish_non_exhaustive()
    }
}

impl Generations {
    pub(crate) fn new(
        cache: &str,
        sections: impl IntoIterator<Item = Cow<'static, str>>,
        on_invalidate_all: Option<OnInvalidateAll>,
    ) -> Self {
        Self {
            cache: cache.into(),
            all: AtomicU64::new(0),
            sections: sections
                .into_iter()
                .map(|name| (name, AtomicU64::new(0)))
                .collect(),
            on_invalidate_all,
        }
    }

    /// The cache's name.
    pub(crate) fn cache(&self) -> &str {
        &self.cache
    }

    /// The whole-cache counter.
    pub(crate) fn all(&self) -> u64 {
        self.all.load(Ordering::SeqCst)
    }

    /// The counter of the section at `index` (in the order the sections were added).
    pub(crate) fn section_at(&self, index: usize) -> u64 {
        self.sections
            .get(index)
            .map_or(0, |(_, counter)| counter.load(Ordering::SeqCst))
    }

    /// The names of the sections, in order.
    pub(crate) fn section_names(&self) -> impl Iterator<Item = &str> {
        self.sections.iter().map(|(name, _)| name.as_ref())
    }

    /// This instance's copy of the counter of `section` (or of the whole cache). An unknown
    /// section reads as the whole cache.
    pub(crate) fn local(&self, section: Option<&str>) -> u64 {
        match section.and_then(|name| self.find(name)) {
            Some(counter) => counter.load(Ordering::SeqCst),
            None => self.all(),
        }
    }

    /// Invalidates `section` (`None`, or a name this cache does not have: all of it).
    /// Returns the section actually bumped and its new value.
    pub(crate) fn bump<'a>(&self, section: Option<&'a str>) -> (Option<&'a str>, u64) {
        if let Some(name) = section {
            if let Some(counter) = self.find(name) {
                return (Some(name), counter.fetch_add(1, Ordering::SeqCst) + 1);
            }
            tracing::warn!(cache = %self.cache, section = %name, "response cache: no such section; invalidating all");
        }
        (None, self.all.fetch_add(1, Ordering::SeqCst) + 1)
    }

    /// Raises the copy of a counter to `value`, learnt from another instance. Sections this
    /// cache does not have (another version of the app, mid-deploy) and absurd values are
    /// ignored. Whether it moved.
    pub(crate) fn observe(&self, section: Option<&str>, value: u64) -> bool {
        if value > MAX_COUNTER {
            tracing::warn!(cache = %self.cache, ?section, value, "response cache: ignoring an out-of-range invalidation counter");
            return false;
        }
        let previous = match section {
            None => self.all.fetch_max(value, Ordering::SeqCst),
            Some(name) => match self.find(name) {
                Some(counter) => counter.fetch_max(value, Ordering::SeqCst),
                None => return false,
            },
        };
        if previous >= value {
            return false;
        }
        tracing::debug!(cache = %self.cache, ?section, value, "response cache: invalidation from another instance");
        if section.is_none()
            && let Some(on_invalidate_all) = &self.on_invalidate_all
        {
            on_invalidate_all();
        }
        true
    }

    fn find(&self, name: &str) -> Option<&AtomicU64> {
        self.sections
            .iter()
            .find(|(section, _)| section == name)
            .map(|(_, counter)| counter)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    use super::*;

    #[test]
    fn counters_only_go_up_and_unknown_sections_mean_all() {
        let cleared = Arc::new(AtomicUsize::new(0));
        let on_all = {
            let cleared = Arc::clone(&cleared);
            Box::new(move || {
                cleared.fetch_add(1, Ordering::SeqCst);
            })
        };
        let generations = Generations::new("c", [Cow::Borrowed("tail")], Some(on_all));
        assert_eq!(generations.bump(Some("tail")), (Some("tail"), 1));
        assert_eq!(generations.bump(Some("nope")), (None, 1));
        assert_eq!(generations.local(Some("tail")), 1);
        assert!(generations.observe(Some("tail"), 5));
        assert!(!generations.observe(Some("tail"), 3), "never lowered");
        assert_eq!(generations.section_at(0), 5);
        assert!(!generations.observe(Some("other"), 9));
        assert!(!generations.observe(None, MAX_COUNTER + 1));
        assert_eq!(cleared.load(Ordering::SeqCst), 0);
        assert!(generations.observe(None, 4));
        assert_eq!((generations.all(), cleared.load(Ordering::SeqCst)), (4, 1));
    }
}
