//! Which Redis failures are current (for `actix_conditional_redis_up`), and the rate limit on
//! their warnings.
//!
//! Times are passed in (`now`), so both are tested without a clock or a sleep.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How many keys the health and the warning limit track; past it, old records are dropped
/// (and, if none is old enough, new keys share one record), so a flood of failing keys (say,
/// an out-of-memory Redis and unique query strings) cannot grow them without bound.
const MAX_TRACKED: usize = 1024;

/// The key under which warnings are limited once [`MAX_TRACKED`] keys have warned recently.
const OTHER_KEYS: &str = "(other keys)";

/// The command errors of the last while, by `(operation, key)`: Redis is reported healthy
/// only while there are none. A record goes when the same operation on the same key succeeds
/// (the key was fixed or repaired), or when it has not happened again for the hold time
/// (nothing asks for that key any more, or the condition passed, e.g. memory was freed).
#[derive(Debug, Default)]
pub(crate) struct Faults {
    current: HashMap<(&'static str, String), Instant>,
}

impl Faults {
    /// A failure of `op` on `key` at `now`.
    pub(crate) fn record(&mut self, op: &'static str, key: &str, now: Instant, hold: Duration) {
        if self.current.len() >= MAX_TRACKED {
            self.prune(now, hold);
        }
        if let Some(at) = self.current.get_mut(&(op, key.to_owned())) {
            *at = now;
        } else if self.current.len() < MAX_TRACKED {
            self.current.insert((op, key.to_owned()), now);
        }
        // Else: full of recent failures; health is already down, and this one adds nothing.
    }

    /// `op` on `key` succeeded: whatever failed there before is fixed.
    pub(crate) fn clear(&mut self, op: &'static str, key: &str) {
        if !self.current.is_empty() {
            self.current.remove(&(op, key.to_owned()));
        }
    }

    /// Forgets failures that have not recurred for `hold`.
    pub(crate) fn prune(&mut self, now: Instant, hold: Duration) {
        self.current
            .retain(|_, at| now.saturating_duration_since(*at) < hold);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.current.is_empty()
    }
}

/// At most one warning per key per interval; the ones held back are counted and reported
/// with the next one.
#[derive(Debug, Default)]
pub(crate) struct Warnings {
    seen: HashMap<String, Seen>,
}

#[derive(Debug)]
struct Seen {
    last: Instant,
    suppressed: u64,
}

impl Warnings {
    /// Whether a warning about `key` may be logged at `now`: `Some(n)`, `n` the warnings
    /// held back since the last one; `None`: hold it back (log it at debug).
    pub(crate) fn admit(&mut self, key: &str, now: Instant, interval: Duration) -> Option<u64> {
        if let Some(seen) = self.seen.get_mut(key) {
            return Self::next(seen, now, interval);
        }
        if self.seen.len() >= MAX_TRACKED {
            self.seen
                .retain(|_, seen| now.saturating_duration_since(seen.last) < interval);
        }
        let key = if self.seen.len() >= MAX_TRACKED {
            if let Some(seen) = self.seen.get_mut(OTHER_KEYS) {
                return Self::next(seen, now, interval);
            }
            OTHER_KEYS
        } else {
            key
        };
        self.seen.insert(
            key.to_owned(),
            Seen {
                last: now,
                suppressed: 0,
            },
        );
        Some(0)
    }

    fn next(seen: &mut Seen, now: Instant, interval: Duration) -> Option<u64> {
        if now.saturating_duration_since(seen.last) < interval {
            seen.suppressed += 1;
            return None;
        }
        seen.last = now;
        Some(std::mem::take(&mut seen.suppressed))
    }
}

/// Error codes that say Redis as a whole cannot do its job right now (out of memory, a
/// read-only replica, a failed save that blocks writes, loading, a busy script, a cluster or
/// its master down), rather than that one key holds something unexpected. These trip the
/// breaker like an outage; an error about one key does not, since one bad key must not take
/// every cache off Redis.
pub(crate) fn server_wide(code: &str) -> bool {
    matches!(
        code,
        "OOM"
            | "READONLY"
            | "MISCONF"
            | "LOADING"
            | "BUSY"
            | "MASTERDOWN"
            | "CLUSTERDOWN"
            | "NOREPLICAS"
            | "TRYAGAIN"
    )
}

/// The error code of an error message as Redis words it (`WRONGTYPE Operation against…`).
pub(crate) fn code_of(message: &str) -> &str {
    message
        .split_whitespace()
        .next()
        .filter(|word| !word.is_empty() && word.bytes().all(|b| b.is_ascii_uppercase()))
        .unwrap_or("ERR")
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn any_message_gives_its_leading_code_or_err(message in "\\PC{0,40}") {
            let code = code_of(&message);
            prop_assert!(code == "ERR" || message.trim_start().starts_with(code));
            prop_assert!(!code.is_empty() && code.bytes().all(|b| b.is_ascii_uppercase()));
        }
    }

    const TEN: Duration = Duration::from_secs(10);

    #[test]
    fn one_warning_per_key_per_interval_and_the_held_back_ones_are_counted() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut warnings = Warnings::default();
        assert_eq!(warnings.admit("k1", at(0), TEN), Some(0));
        for ms in 1..1000 {
            assert_eq!(warnings.admit("k1", at(ms), TEN), None);
        }
        // Another key has its own allowance.
        assert_eq!(warnings.admit("k2", at(500), TEN), Some(0));
        assert_eq!(warnings.admit("k1", at(9_999), TEN), None);
        // The next one, an interval later, says how many were held back.
        assert_eq!(warnings.admit("k1", at(10_000), TEN), Some(1000));
        assert_eq!(warnings.admit("k1", at(10_001), TEN), None);
        assert_eq!(warnings.admit("k1", at(30_000), TEN), Some(1));
        assert_eq!(warnings.admit("k2", at(30_000), TEN), Some(0));
    }

    #[test]
    fn a_flood_of_keys_is_bounded() {
        let start = Instant::now();
        let mut warnings = Warnings::default();
        let admitted = (0..10 * MAX_TRACKED)
            .filter(|i| warnings.admit(&format!("k{i}"), start, TEN).is_some())
            .count();
        assert_eq!(admitted, MAX_TRACKED + 1, "then one for all the others");
        assert!(warnings.seen.len() <= MAX_TRACKED + 1);
        // Once they are old, new keys get their own warning again.
        assert_eq!(warnings.admit("fresh", start + TEN, TEN), Some(0));
    }

    #[test]
    fn a_fault_lasts_until_its_operation_succeeds_or_it_stops_recurring() {
        let start = Instant::now();
        let hold = Duration::from_secs(2);
        let mut faults = Faults::default();
        faults.record("sync", "p:c:gen", start, hold);
        faults.record("set", "p:c:e:1", start, hold);
        faults.clear("get", "p:c:e:1");
        faults.prune(start + Duration::from_secs(1), hold);
        assert!(!faults.is_empty());
        faults.clear("set", "p:c:e:1");
        // Still failing: recorded again within the hold.
        faults.record("sync", "p:c:gen", start + Duration::from_secs(1), hold);
        faults.prune(start + Duration::from_millis(2500), hold);
        assert!(!faults.is_empty());
        faults.prune(start + Duration::from_secs(3), hold);
        assert!(faults.is_empty());
        faults.record("sync", "p:c:gen", start, hold);
        faults.clear("sync", "p:c:gen");
        assert!(faults.is_empty());
    }

    #[test]
    fn codes_are_read_from_redis_messages() {
        assert_eq!(
            code_of("WRONGTYPE Operation against a key holding the wrong kind of value"),
            "WRONGTYPE"
        );
        assert_eq!(code_of("OOM command not allowed"), "OOM");
        assert_eq!(code_of("something else"), "ERR");
        assert_eq!(code_of(""), "ERR");
        assert!(server_wide("OOM") && !server_wide("WRONGTYPE"));
    }
}
