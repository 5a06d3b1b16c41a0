//! At most one warning per interval for a failure that recurs on every request (a revision
//! query against a database that is down): the first one, then one per interval with how many
//! were held back. Time is the cache's clock, so tests drive it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How often a recurring failure is warned about.
pub(crate) const WARN_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub(crate) struct WarnEvery {
    /// When the last warning went out, in nanoseconds of the cache's clock, plus one (0: never).
    last: AtomicU64,
    /// Failures since then that were logged at `debug` only.
    held_back: AtomicU64,
}

impl WarnEvery {
    /// `Some(held back since the last warning)` if this failure should be warned about,
    /// `None` if it should go to `debug`.
    pub(crate) fn warn(&self, now: Duration) -> Option<u64> {
        let now = u64::try_from(now.as_nanos())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let last = self.last.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= nanos(WARN_EVERY);
        // One caller wins the interval; the others are held back with it.
        if due
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.held_back.swap(0, Ordering::Relaxed));
        }
        self.held_back.fetch_add(1, Ordering::Relaxed);
        None
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_then_once_per_interval_with_the_count_held_back() {
        let limiter = WarnEvery::default();
        let at = |secs: u64| Duration::from_secs(secs);
        assert_eq!(limiter.warn(at(0)), Some(0));
        assert_eq!(limiter.warn(at(1)), None);
        assert_eq!(limiter.warn(at(9)), None);
        assert_eq!(limiter.warn(at(10)), Some(2));
        assert_eq!(limiter.warn(at(11)), None);
        assert_eq!(limiter.warn(at(25)), Some(1));
    }
}
