//! The [`Purger`] trait (one attempt to invalidate some cache groups at one destination), the
//! error it reports, and the group-mapping hook every built-in purger applies.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

/// Something that can invalidate cache groups downstream: a Varnish, a CDN, a proxy.
///
/// [`purge`](Purger::purge) makes **one attempt**: the [`Purges`](super::Purges) dispatcher
/// owns timeouts, retries, backoff, coalescing and metrics, so an implementation stays a plain
/// request. Purging is idempotent everywhere we know of (purging a group twice leaves the same
/// cache), which is what makes retrying a whole batch after a partial failure safe.
///
/// The future must not block its thread: every purger shares the dispatcher's runtime.
pub trait Purger: Send + Sync + 'static {
    /// A short, stable name: the `purger` label of the metrics and of `tracing` events.
    fn name(&self) -> &str;

    /// One attempt to invalidate `groups` (never empty, no duplicates). `Ok` means the
    /// destination acknowledged every group.
    fn purge<'a>(&'a self, groups: &'a [String]) -> BoxFuture<'a, Result<(), PurgeError>>;

    /// Whether this purger can ever send `group`. A group it refuses is reported (an error
    /// event, the `dropped` counters, [`PurgeOutcome::dropped`](super::PurgeOutcome)) when it is
    /// handed over, instead of failing every later attempt of the batch it would join.
    fn check(&self, group: &str) -> Result<(), PurgeError> {
        let _ = group;
        Ok(())
    }
}

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PurgeError {
    /// The destination answered, with a status that is not a success (or a success whose body
    /// says it failed, as Cloudflare's `"success": false`).
    Status {
        /// Where the request went (no credentials: they travel in headers).
        target: String,
        /// The HTTP status.
        status: u16,
        /// The start of the answer's body, for the log.
        body: String,
    },
    /// No answer: connection refused or reset, DNS, TLS.
    Transport {
        /// Where the request went.
        target: String,
        /// What the client said.
        message: String,
    },
    /// The attempt outlasted the dispatcher's per-attempt timeout.
    Timeout(Duration),
    /// This purger can never send the group (see [`Purger::check`]): it is dropped, loudly,
    /// rather than retried forever.
    InvalidGroup {
        /// The group as handed over.
        group: String,
        /// Why it cannot be sent.
        reason: String,
    },
    /// Invalid configuration (a base URL that does not parse, a bad header name).
    Config(String),
    /// Anything else, from a purger of your own.
    Other(String),
}

impl PurgeError {
    /// Whether retrying can never help: the dispatcher drops the batch (with an error event
    /// and the `dropped` counters) instead of retrying it.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::InvalidGroup { .. } | Self::Config(_))
    }
}

impl fmt::Display for PurgeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Status {
                target,
                status,
                body,
            } => write!(f, "{target} answered {status}: {body}"),
            Self::Transport { target, message } => write!(f, "{target}: {message}"),
            Self::Timeout(after) => write!(f, "no answer within {after:?}"),
            Self::InvalidGroup { group, reason } => write!(f, "group {group:?}: {reason}"),
            Self::Config(message) => write!(f, "configuration: {message}"),
            Self::Other(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for PurgeError {}

/// Maps a cache group to the key a vendor purges (hashing a group the vendor's key syntax
/// cannot carry, say). The built-in purgers apply it through `map_groups`; without one they
/// send the groups as given. It must be deterministic and agree with the tags rendered on
/// responses, or purges miss.
pub type GroupMap = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// `groups` through `map` (identity without one), duplicates removed, order kept: two groups
/// may map to one key.
#[cfg_attr(not(feature = "purge"), allow(dead_code))]
pub(crate) fn mapped(map: &GroupMap, groups: &[String]) -> Vec<String> {
    let mut seen = std::collections::HashSet::with_capacity(groups.len());
    groups
        .iter()
        .map(|group| map(group))
        .filter(|key| seen.insert(key.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_dedupes_and_keeps_order() {
        let groups = vec!["b".to_owned(), "a".to_owned(), "B".to_owned()];
        let identity: GroupMap = Arc::new(str::to_owned);
        assert_eq!(mapped(&identity, &groups), ["b", "a", "B"]);
        let lower: GroupMap = Arc::new(|g: &str| g.to_ascii_lowercase());
        assert_eq!(mapped(&lower, &groups), ["b", "a"]);
    }

    #[test]
    fn only_invalid_groups_and_configuration_are_permanent() {
        let invalid = PurgeError::InvalidGroup {
            group: "a\tb".into(),
            reason: "control character".into(),
        };
        assert!(invalid.is_permanent());
        assert!(PurgeError::Config("bad url".into()).is_permanent());
        assert!(!PurgeError::Timeout(Duration::from_secs(1)).is_permanent());
        let status = PurgeError::Status {
            target: "http://varnish/".into(),
            status: 503,
            body: String::new(),
        };
        assert!(!status.is_permanent());
        assert_eq!(status.to_string(), "http://varnish/ answered 503: ");
    }
}
