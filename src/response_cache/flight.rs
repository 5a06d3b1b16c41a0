//! Single-flight: one computation per key, however many requests (on however many actix
//! workers) want it.
//!
//! Why not moka's `get_with`: it coalesces only *absent* keys, and our entries stay in the
//! store past their freshness (to be served stale), so expired-entry misses and stale
//! refreshes need a claim of their own. One small map serves both.
//!
//! The leader holds a [`FlightGuard`]; waiters hold a `watch` receiver. Completing the guard
//! publishes the [`Outcome`]. Dropping it while the build panics publishes a 500 to every
//! waiter (the error is shared, like a 5xx, and not retried in series); dropping it unfinished
//! otherwise (cancelled) closes the channel, and every waiter goes back to [`Flights::join`],
//! where exactly one of them becomes the new leader. Nothing here is tied to one worker: the map
//! is behind a `Mutex` and `watch` is runtime-agnostic.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use actix_web::http::StatusCode;
use tokio::sync::watch;

use super::entry::{Entry, Snapshot};

/// What a flight produced, handed to every waiter.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    /// A fresh entry, stored.
    Fresh(Arc<Entry>),
    /// The rebuild failed with this status and the stale entry stands in for it
    /// (stale-on-error).
    Stale(Arc<Entry>, StatusCode),
    /// The rebuild failed; the same error response goes to everyone, and is never stored.
    Failed(Arc<Snapshot>),
    /// The response must not be shared: every waiter runs its own request.
    Unshared,
    /// The build failed for a reason of the leader's own (408, 429): the waiters join again
    /// and one of them builds.
    Transient,
    /// The leader waited for another instance's build past its lock timeout: each waiter
    /// waits on until its own.
    TimedOut,
}

type Slot = watch::Receiver<Option<Outcome>>;

/// The flights in progress, by cache key.
#[derive(Debug, Default)]
pub(crate) struct Flights {
    map: Mutex<HashMap<Arc<str>, Slot>>,
}

/// Either lead the computation for a key or wait for its outcome.
#[derive(Debug)]
pub(crate) enum Join {
    Lead(FlightGuard),
    Wait(Waiter),
}

impl Flights {
    /// Joins the flight for `key`, starting it if none is in progress.
    pub(crate) fn join(self: &Arc<Self>, key: &Arc<str>) -> Join {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(rx) = map.get(key) {
            return Join::Wait(Waiter { rx: rx.clone() });
        }
        let (tx, rx) = watch::channel(None);
        map.insert(Arc::clone(key), rx);
        Join::Lead(FlightGuard {
            flights: Arc::clone(self),
            key: Arc::clone(key),
            tx: Some(tx),
        })
    }

    /// Starts a flight for `key` only if none is in progress (a stale refresh's claim).
    pub(crate) fn try_lead(self: &Arc<Self>, key: &Arc<str>) -> Option<FlightGuard> {
        match self.join(key) {
            Join::Lead(guard) => Some(guard),
            Join::Wait(_) => None,
        }
    }

    /// Whether a flight for `key` is in progress.
    pub(crate) fn in_progress(&self, key: &str) -> bool {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(key)
    }

    fn remove(&self, key: &str, tx: &watch::Sender<Option<Outcome>>) {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        // Only our own slot: a new leader may already have taken the key over.
        if map
            .get(key)
            .is_some_and(|rx| rx.same_channel(&tx.subscribe()))
        {
            map.remove(key);
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// The leader's claim on a key. Complete it, or drop it to hand the key to a waiter.
#[derive(Debug)]
pub(crate) struct FlightGuard {
    flights: Arc<Flights>,
    key: Arc<str>,
    tx: Option<watch::Sender<Option<Outcome>>>,
}

impl FlightGuard {
    /// Publishes the outcome to every waiter and ends the flight. Callers store a fresh
    /// entry *before* completing, so no request falls between the flight and the store.
    pub(crate) fn complete(mut self, outcome: Outcome) {
        if let Some(tx) = self.tx.take() {
            self.flights.remove(&self.key, &tx);
            tx.send_replace(Some(outcome));
        }
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            self.flights.remove(&self.key, &tx);
            if std::thread::panicking() {
                // The build panicked: every waiter gets a 500 now, as it would the build's own
                // 5xx (RFC-style shared error), instead of each taking over in turn and likely
                // panicking again, one after another.
                tx.send_replace(Some(Outcome::Failed(Arc::new(Snapshot::internal_error()))));
            }
            // Otherwise (cancelled): dropping `tx` wakes the waiters with an error, and one of
            // them takes over.
        }
    }
}

/// A request waiting for another's flight.
#[derive(Debug)]
pub(crate) struct Waiter {
    rx: Slot,
}

impl Waiter {
    /// The flight's outcome, or `None` if its leader gave up without one.
    pub(crate) async fn outcome(mut self) -> Option<Outcome> {
        match self.rx.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.clone(),
            Err(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn waiters_get_the_outcome_and_the_key_is_freed() {
        let flights = Arc::new(Flights::default());
        let key: Arc<str> = Arc::from("k");
        let Join::Lead(guard) = flights.join(&key) else {
            panic!("first join leads")
        };
        let Join::Wait(waiter) = flights.join(&key) else {
            panic!("second join waits")
        };
        guard.complete(Outcome::Unshared);
        assert!(matches!(waiter.outcome().await, Some(Outcome::Unshared)));
        assert_eq!(flights.len(), 0);
    }

    #[actix_rt::test]
    async fn a_dropped_leader_releases_waiters_and_one_takes_over() {
        let flights = Arc::new(Flights::default());
        let key: Arc<str> = Arc::from("k");
        let Join::Lead(guard) = flights.join(&key) else {
            panic!("first join leads")
        };
        let Join::Wait(a) = flights.join(&key) else {
            panic!("waits")
        };
        let Join::Wait(b) = flights.join(&key) else {
            panic!("waits")
        };
        drop(guard);
        assert!(a.outcome().await.is_none());
        assert!(b.outcome().await.is_none());
        assert!(matches!(flights.join(&key), Join::Lead(_)));
    }

    #[test]
    fn an_old_guard_does_not_remove_a_new_flight() {
        let flights = Arc::new(Flights::default());
        let key: Arc<str> = Arc::from("k");
        let Join::Lead(old) = flights.join(&key) else {
            panic!("leads")
        };
        // Simulate the map entry having been replaced by a new leader.
        flights.map.lock().unwrap().remove(&key);
        let Join::Lead(new) = flights.join(&key) else {
            panic!("leads")
        };
        drop(old);
        assert_eq!(flights.len(), 1);
        drop(new);
        assert_eq!(flights.len(), 0);
    }
}
