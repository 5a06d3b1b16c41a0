//! The pending purges: per purger ("lane"), the groups waiting for an attempt and the batch in
//! flight, plus the callers waiting on them. Pure bookkeeping, no I/O and no clock, so every
//! rule is unit-tested here; the dispatcher drives it under one mutex.
//!
//! Rules:
//! - a group already *queued* on a lane is coalesced: the new caller waits on the same entry
//!   and the bound does not grow;
//! - a group *in flight* is queued again, not coalesced: that attempt may have left before the
//!   write the new caller is purging for, so its success proves nothing for the new caller;
//! - a failed batch goes back to the front of its lane, merged with duplicates queued
//!   meanwhile;
//! - the bound counts every (lane, group) entry, queued or in flight; a group refused for the
//!   bound is reported to the caller as dropped, never forgotten silently.

use std::collections::{HashMap, VecDeque};

use tokio::sync::oneshot;

use super::PurgeOutcome;

/// A caller's identity in the waiter table.
pub(crate) type WaiterId = u64;

#[derive(Debug)]
struct Waiter {
    /// Entries still pending.
    remaining: usize,
    purged: usize,
    dropped: usize,
    /// Taken by whichever comes first: the last entry settling, or the `wait` deadline.
    tx: Option<oneshot::Sender<PurgeOutcome>>,
}

impl Waiter {
    fn outcome(&self) -> PurgeOutcome {
        PurgeOutcome {
            purged: self.purged,
            pending: self.remaining,
            dropped: self.dropped,
        }
    }
}

#[derive(Debug, Default)]
struct Lane {
    /// Groups waiting for an attempt, oldest first, with the callers waiting on each.
    queued: VecDeque<(String, Vec<WaiterId>)>,
    in_flight: Vec<(String, Vec<WaiterId>)>,
}

impl Lane {
    fn queued_position(&self, group: &str) -> Option<usize> {
        self.queued.iter().position(|(queued, _)| queued == group)
    }

    fn len(&self) -> usize {
        self.queued.len() + self.in_flight.len()
    }
}

/// Why a group was not queued on a lane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The purger's `check` refused it: the message.
    Invalid(String),
    /// The queue was at its bound.
    Full,
}

/// What [`Queue::enqueue`] did.
#[derive(Debug, Default)]
pub(crate) struct Enqueued {
    /// `None` when nothing is pending for this caller (the outcome was sent already).
    pub(crate) waiter: Option<WaiterId>,
    /// Lanes that got new work.
    pub(crate) woken: Vec<usize>,
    /// (lane, group, why) for every group not queued.
    pub(crate) refused: Vec<(usize, String, Refusal)>,
    /// Entries the caller waits on, coalesced ones included.
    pub(crate) pending: usize,
}

#[derive(Debug)]
pub(crate) struct Queue {
    lanes: Vec<Lane>,
    waiters: HashMap<WaiterId, Waiter>,
    next_waiter: WaiterId,
    max_pending: usize,
    pending: usize,
}

impl Queue {
    pub(crate) fn new(lanes: usize, max_pending: usize) -> Self {
        Self {
            lanes: (0..lanes).map(|_| Lane::default()).collect(),
            waiters: HashMap::new(),
            next_waiter: 0,
            max_pending,
            pending: 0,
        }
    }

    /// Queues `groups` (already deduplicated) on every lane; `check(lane, group)` is the
    /// lane's purger's [`check`](super::Purger::check).
    pub(crate) fn enqueue(
        &mut self,
        groups: &[String],
        check: impl Fn(usize, &str) -> Result<(), String>,
        tx: oneshot::Sender<PurgeOutcome>,
    ) -> Enqueued {
        let id = self.next_waiter;
        self.next_waiter += 1;
        let mut done = Enqueued::default();
        let mut dropped = 0;
        for (index, lane) in self.lanes.iter_mut().enumerate() {
            let mut woken = false;
            for group in groups {
                if let Err(reason) = check(index, group) {
                    done.refused
                        .push((index, group.clone(), Refusal::Invalid(reason)));
                    dropped += 1;
                } else if let Some(at) = lane.queued_position(group) {
                    // Callers whose wait is over need no answer: dropping their ids keeps an
                    // entry's list bounded by the callers still waiting, however many writes
                    // coalesce onto it while the destination is down.
                    let ids = &mut lane.queued[at].1;
                    ids.retain(|waiting| self.waiters.contains_key(waiting));
                    ids.push(id);
                    done.pending += 1;
                } else if self.pending >= self.max_pending {
                    done.refused.push((index, group.clone(), Refusal::Full));
                    dropped += 1;
                } else {
                    lane.queued.push_back((group.clone(), vec![id]));
                    self.pending += 1;
                    done.pending += 1;
                    woken = true;
                }
            }
            if woken {
                done.woken.push(index);
            }
        }
        let waiter = Waiter {
            remaining: done.pending,
            purged: 0,
            dropped,
            tx: Some(tx),
        };
        if done.pending == 0 {
            let outcome = waiter.outcome();
            if let Some(tx) = waiter.tx {
                let _ = tx.send(outcome);
            }
        } else {
            self.waiters.insert(id, waiter);
            done.waiter = Some(id);
        }
        done
    }

    /// Moves up to `max` queued groups of `lane` in flight and returns them (empty: nothing
    /// to do). A batch already in flight is returned again, unchanged.
    pub(crate) fn take_batch(&mut self, lane: usize, max: usize) -> Vec<String> {
        let lane = &mut self.lanes[lane];
        if lane.in_flight.is_empty() {
            let take = lane.queued.len().min(max.max(1));
            lane.in_flight = lane.queued.drain(..take).collect();
        }
        lane.in_flight
            .iter()
            .map(|(group, _)| group.clone())
            .collect()
    }

    /// The batch in flight on `lane` was acknowledged. Returns how many groups it held.
    pub(crate) fn succeed(&mut self, lane: usize) -> usize {
        self.settle(lane, true)
    }

    /// The batch in flight on `lane` can never be sent: every caller is told it was dropped.
    pub(crate) fn drop_in_flight(&mut self, lane: usize) -> usize {
        self.settle(lane, false)
    }

    fn settle(&mut self, lane: usize, purged: bool) -> usize {
        let batch = std::mem::take(&mut self.lanes[lane].in_flight);
        self.pending -= batch.len();
        for (_, ids) in &batch {
            for id in ids {
                let Some(waiter) = self.waiters.get_mut(id) else {
                    continue; // its deadline passed: it already has its outcome
                };
                waiter.remaining -= 1;
                if purged {
                    waiter.purged += 1;
                } else {
                    waiter.dropped += 1;
                }
                if waiter.remaining == 0 {
                    self.finish(*id);
                }
            }
        }
        batch.len()
    }

    /// The batch in flight on `lane` failed: back to the front of the lane, ahead of what was
    /// queued meanwhile, merged with its duplicates there.
    pub(crate) fn fail(&mut self, lane: usize) {
        let lane = &mut self.lanes[lane];
        for (group, mut ids) in std::mem::take(&mut lane.in_flight).into_iter().rev() {
            if let Some(at) = lane.queued_position(&group) {
                let (_, newer) = lane.queued.remove(at).unwrap_or_default();
                ids.extend(newer);
                self.pending -= 1;
            }
            ids.retain(|waiting| self.waiters.contains_key(waiting));
            lane.queued.push_front((group, ids));
        }
    }

    /// The caller's `wait` elapsed: it gets the outcome so far; its entries stay queued.
    pub(crate) fn expire(&mut self, id: WaiterId) {
        self.finish(id);
    }

    fn finish(&mut self, id: WaiterId) {
        if let Some(waiter) = self.waiters.remove(&id)
            && let Some(tx) = waiter.tx
        {
            let _ = tx.send(PurgeOutcome {
                purged: waiter.purged,
                pending: waiter.remaining,
                dropped: waiter.dropped,
            });
        }
    }

    /// Entries pending on `lane`, queued or in flight.
    pub(crate) fn lane_len(&self, lane: usize) -> usize {
        self.lanes[lane].len()
    }

    /// Entries pending on every lane.
    #[cfg(test)]
    pub(crate) fn pending(&self) -> usize {
        self.pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    fn accept(_: usize, _: &str) -> Result<(), String> {
        Ok(())
    }

    fn enqueue(queue: &mut Queue, names: &[&str]) -> (Enqueued, oneshot::Receiver<PurgeOutcome>) {
        let (tx, rx) = oneshot::channel();
        (queue.enqueue(&groups(names), accept, tx), rx)
    }

    #[test]
    fn callers_coalescing_onto_a_stuck_entry_do_not_grow_it() {
        let mut queue = Queue::new(1, 100);
        for _ in 0..10_000 {
            let (done, _rx) = enqueue(&mut queue, &["a"]);
            queue.expire(done.waiter.unwrap());
        }
        let (_, _rx) = enqueue(&mut queue, &["a"]);
        assert_eq!(queue.pending(), 1);
        assert!(
            queue.lanes[0].queued[0].1.len() <= 1,
            "expired callers are forgotten"
        );
        assert_eq!(queue.take_batch(0, 10), ["a"]);
        queue.fail(0);
        assert!(queue.lanes[0].queued[0].1.len() <= 1);
    }

    #[test]
    fn a_batch_that_lands_completes_its_callers() {
        let mut queue = Queue::new(2, 100);
        let (done, mut rx) = enqueue(&mut queue, &["a", "b"]);
        assert_eq!(done.woken, [0, 1]);
        assert_eq!(done.pending, 4);
        assert_eq!(queue.pending(), 4);
        assert_eq!(queue.take_batch(0, 10), ["a", "b"]);
        assert_eq!(queue.succeed(0), 2);
        assert!(rx.try_recv().is_err(), "lane 1 still pending");
        assert_eq!(queue.take_batch(1, 1), ["a"]);
        queue.succeed(1);
        assert_eq!(queue.take_batch(1, 1), ["b"]);
        queue.succeed(1);
        let outcome = rx.try_recv().unwrap();
        assert_eq!(
            (outcome.purged, outcome.pending, outcome.dropped),
            (4, 0, 0)
        );
        assert!(outcome.is_done());
        assert_eq!(queue.pending(), 0);
        assert!(queue.take_batch(0, 10).is_empty());
    }

    #[test]
    fn queued_duplicates_coalesce_but_in_flight_ones_queue_again() {
        let mut queue = Queue::new(1, 100);
        let (_, mut first) = enqueue(&mut queue, &["a"]);
        let (again, mut second) = enqueue(&mut queue, &["a"]);
        assert!(again.woken.is_empty(), "coalesced: no new work");
        assert_eq!(queue.pending(), 1);
        assert_eq!(queue.take_batch(0, 10), ["a"]);
        // In flight now: a third caller's purge may postdate this attempt.
        let (third, mut third_rx) = enqueue(&mut queue, &["a"]);
        assert_eq!(third.woken, [0]);
        assert_eq!(queue.pending(), 2);
        queue.succeed(0);
        assert!(first.try_recv().unwrap().is_done());
        assert!(second.try_recv().unwrap().is_done());
        assert!(third_rx.try_recv().is_err());
        assert_eq!(queue.take_batch(0, 10), ["a"]);
        queue.succeed(0);
        assert!(third_rx.try_recv().unwrap().is_done());
    }

    #[test]
    fn a_failed_batch_goes_first_and_merges_with_newer_duplicates() {
        let mut queue = Queue::new(1, 100);
        let (_, mut first) = enqueue(&mut queue, &["a", "b"]);
        assert_eq!(queue.take_batch(0, 10), ["a", "b"]);
        let (_, mut second) = enqueue(&mut queue, &["c", "b"]);
        assert_eq!(queue.pending(), 4);
        queue.fail(0);
        assert_eq!(queue.pending(), 3, "b merged");
        assert_eq!(queue.take_batch(0, 10), ["a", "b", "c"]);
        queue.succeed(0);
        assert_eq!(first.try_recv().unwrap().purged, 2);
        assert_eq!(second.try_recv().unwrap().purged, 2);
    }

    #[test]
    fn the_bound_refuses_loudly_and_coalescing_still_works_at_the_bound() {
        let mut queue = Queue::new(1, 2);
        let (done, _rx) = enqueue(&mut queue, &["a", "b", "c"]);
        assert_eq!(done.refused, [(0, "c".to_owned(), Refusal::Full)]);
        assert_eq!(done.pending, 2);
        let (done, mut rx) = enqueue(&mut queue, &["a", "d"]);
        assert_eq!(done.pending, 1, "a coalesced although the queue is full");
        assert_eq!(done.refused, [(0, "d".to_owned(), Refusal::Full)]);
        assert_eq!(queue.take_batch(0, 10), ["a", "b"]);
        queue.succeed(0);
        let outcome = rx.try_recv().unwrap();
        assert_eq!(
            (outcome.purged, outcome.pending, outcome.dropped),
            (1, 0, 1)
        );
        assert!(!outcome.is_done());
    }

    #[test]
    fn refused_groups_are_dropped_per_lane() {
        let mut queue = Queue::new(2, 100);
        let (tx, mut rx) = oneshot::channel();
        let only_lane_0 = |lane: usize, _: &str| {
            if lane == 1 {
                Err("no".to_owned())
            } else {
                Ok(())
            }
        };
        let done = queue.enqueue(&groups(&["a"]), only_lane_0, tx);
        assert_eq!(
            done.refused,
            [(1, "a".to_owned(), Refusal::Invalid("no".into()))]
        );
        assert_eq!(queue.lane_len(1), 0);
        queue.take_batch(0, 10);
        queue.succeed(0);
        let outcome = rx.try_recv().unwrap();
        assert_eq!((outcome.purged, outcome.dropped), (1, 1));
    }

    #[test]
    fn nothing_to_do_answers_at_once() {
        let mut queue = Queue::new(0, 100);
        let (done, mut rx) = enqueue(&mut queue, &["a"]);
        assert_eq!(done.waiter, None);
        assert!(rx.try_recv().unwrap().is_done());
    }

    #[test]
    fn an_expired_caller_gets_what_is_known_and_the_work_stays() {
        let mut queue = Queue::new(1, 100);
        let (done, mut rx) = enqueue(&mut queue, &["a"]);
        queue.take_batch(0, 10);
        queue.fail(0);
        queue.expire(done.waiter.unwrap());
        let outcome = rx.try_recv().unwrap();
        assert_eq!((outcome.purged, outcome.pending), (0, 1));
        assert_eq!(queue.lane_len(0), 1, "still queued for the background");
        queue.take_batch(0, 10);
        queue.succeed(0); // no caller left to tell: no panic
        assert_eq!(queue.pending(), 0);
    }

    #[test]
    fn a_dropped_batch_is_reported_as_dropped() {
        let mut queue = Queue::new(1, 100);
        let (_, mut rx) = enqueue(&mut queue, &["a", "b"]);
        queue.take_batch(0, 10);
        assert_eq!(queue.drop_in_flight(0), 2);
        let outcome = rx.try_recv().unwrap();
        assert_eq!(
            (outcome.purged, outcome.pending, outcome.dropped),
            (0, 0, 2)
        );
    }
}
