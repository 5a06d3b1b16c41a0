//! [`Purges`]: hands groups to every purger, bounds how long the caller waits, and keeps
//! retrying in the background what did not land in time.
//!
//! Every attempt runs on one dedicated thread with its own current-thread tokio runtime, not on
//! the caller's: actix workers are single-threaded runtimes that stop with their server, and a
//! purge queued by one must outlive it. The thread also owns every timer (per-attempt timeout,
//! backoff, the callers' `wait`), so the future [`Purges::purge`] returns needs no runtime of
//! its own. One task per purger ("lane"): a dead Varnish never delays the CDN's purges.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::FutureExt as _;
use tokio::sync::{Notify, oneshot};

use super::queue::{Queue, Refusal};
use super::stats::{LaneStats, PurgeStats};
use super::{PurgeError, Purger};

/// How a call to [`Purges::purge`] ended, counted in (purger, group) pairs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PurgeOutcome {
    /// Pairs acknowledged by their purger.
    pub purged: usize,
    /// Pairs still queued when `wait` elapsed: they are retried in the background while the
    /// process lives.
    pub pending: usize,
    /// Pairs given up (queue full, or a group the purger can never send), each logged as an
    /// error and counted.
    pub dropped: usize,
}

impl PurgeOutcome {
    /// Every purger acknowledged every group.
    pub fn is_done(&self) -> bool {
        self.pending == 0 && self.dropped == 0
    }
}

/// The delay before retry number `failures` (1 = after the first failure): `initial`, doubled
/// per failure, capped at `max`. No jitter: one dispatcher per process retries one batch per
/// purger at a time, so there is no herd to spread, and tests can predict it.
pub(crate) fn backoff(initial: Duration, max: Duration, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(31);
    initial.saturating_mul(1 << doublings).min(max)
}

#[derive(Debug, Clone, Copy)]
struct Settings {
    timeout: Duration,
    wait: Duration,
    backoff_initial: Duration,
    backoff_max: Duration,
    max_pending: usize,
    max_batch: usize,
}

/// Builds [`Purges`]; from [`Purges::builder`].
#[must_use]
pub struct PurgesBuilder {
    purgers: Vec<Arc<dyn Purger>>,
    settings: Settings,
}

impl std::fmt::Debug for PurgesBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.purgers.iter().map(|p| p.name()).collect();
        f.debug_struct("PurgesBuilder")
            .field("purgers", &names)
            .field("settings", &self.settings)
            .finish()
    }
}

impl PurgesBuilder {
    /// Adds a destination. Each purger gets every group and is retried on its own.
    pub fn purger(mut self, purger: impl Purger) -> Self {
        self.purgers.push(Arc::new(purger));
        self
    }

    /// The longest one attempt may take before it counts as failed (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.settings.timeout = timeout;
        self
    }

    /// How long [`Purges::purge`] waits for every purger before it answers with what is still
    /// pending (default 2 s). This is what a mutation's response waits at most.
    pub fn wait(mut self, wait: Duration) -> Self {
        self.settings.wait = wait;
        self
    }

    /// Retry delays: `initial` after the first failure, doubled per failure, never more than
    /// `max` (default 250 ms up to 30 s).
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.settings.backoff_initial = initial;
        self.settings.backoff_max = max.max(initial);
        self
    }

    /// The bound on pending (purger, group) pairs (default 10 000). Duplicates coalesce, so
    /// the bound is reached only by that many *distinct* groups failing to land; past it a
    /// group is dropped with an error event and counted.
    pub fn max_pending(mut self, max: usize) -> Self {
        self.settings.max_pending = max;
        self
    }

    /// The most groups handed to a purger in one attempt (default 1 000); purgers split further
    /// to their vendor's limits.
    pub fn max_batch(mut self, max: usize) -> Self {
        self.settings.max_batch = max.max(1);
        self
    }

    /// Starts the purge thread.
    ///
    /// # Errors
    /// The thread or its runtime could not be created.
    pub fn build(self) -> std::io::Result<Purges> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let lanes = self.purgers.len();
        let shared = Arc::new(Shared {
            stats: self
                .purgers
                .iter()
                .map(|p| LaneStats::new(p.name()))
                .collect(),
            wake: (0..lanes).map(|_| Notify::new()).collect(),
            queue: Mutex::new(Queue::new(lanes, self.settings.max_pending)),
            purgers: self.purgers,
            settings: self.settings,
            runtime: runtime.handle().clone(),
            closed: AtomicBool::new(false),
        });
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("actix-conditional-purges".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let lanes: Vec<_> = (0..lanes)
                        .map(|lane| tokio::spawn(run_lane(thread_shared.clone(), lane)))
                        .collect();
                    for lane in lanes {
                        let _ = lane.await;
                    }
                });
            })?;
        Ok(Purges {
            shared: shared.clone(),
            _closer: Arc::new(Closer(shared)),
        })
    }
}

struct Shared {
    purgers: Vec<Arc<dyn Purger>>,
    settings: Settings,
    queue: Mutex<Queue>,
    wake: Vec<Notify>,
    stats: Vec<LaneStats>,
    runtime: tokio::runtime::Handle,
    /// Every handle is gone: lanes stop once their queue is empty.
    closed: AtomicBool,
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        // The queue's invariants hold between statements; a panic elsewhere cannot break them.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Closes the lanes when the last [`Purges`] clone is dropped; what is pending still lands.
struct Closer(Arc<Shared>);

impl Drop for Closer {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::SeqCst);
        for wake in &self.0.wake {
            wake.notify_one();
        }
    }
}

/// The purge dispatcher: a cloneable handle (build it once, clone it into every worker).
///
/// See the [module docs](super) for an example.
#[derive(Clone)]
pub struct Purges {
    shared: Arc<Shared>,
    _closer: Arc<Closer>,
}

impl std::fmt::Debug for Purges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.shared.purgers.iter().map(|p| p.name()).collect();
        f.debug_struct("Purges")
            .field("purgers", &names)
            .field("settings", &self.shared.settings)
            .finish()
    }
}

impl Purges {
    /// A builder with the defaults: 5 s per attempt, 2 s wait, backoff 250 ms up to 30 s,
    /// 10 000 pending groups, 1 000 groups per attempt.
    pub fn builder() -> PurgesBuilder {
        PurgesBuilder {
            purgers: Vec::new(),
            settings: Settings {
                timeout: Duration::from_secs(5),
                wait: Duration::from_secs(2),
                backoff_initial: Duration::from_millis(250),
                backoff_max: Duration::from_secs(30),
                max_pending: 10_000,
                max_batch: 1_000,
            },
        }
    }

    /// Purges `groups` at every purger. The work is queued when this is *called* (dropping
    /// the future cancels nothing); the future resolves when every purger acknowledged every
    /// group, or when `wait` elapsed, whichever comes first. What did not land stays queued
    /// and is retried with backoff in the background.
    pub fn purge(
        &self,
        groups: Vec<String>,
    ) -> impl Future<Output = PurgeOutcome> + Send + 'static {
        let mut groups = groups;
        let mut seen = std::collections::HashSet::with_capacity(groups.len());
        groups.retain(|group| seen.insert(group.clone()));
        let shared = &self.shared;
        let (tx, rx) = oneshot::channel();
        let check = |lane: usize, group: &str| {
            shared.purgers[lane]
                .check(group)
                .map_err(|error| error.to_string())
        };
        let (done, lane_lens) = {
            let mut queue = shared.queue();
            let done = queue.enqueue(&groups, check, tx);
            let lens: Vec<usize> = (0..shared.purgers.len())
                .map(|l| queue.lane_len(l))
                .collect();
            (done, lens)
        };
        for (lane, group, refusal) in &done.refused {
            let purger = shared.purgers[*lane].name();
            shared.stats[*lane].dropped(1);
            match refusal {
                Refusal::Invalid(reason) => tracing::error!(
                    purger, group, reason = %reason,
                    "purge dropped: the purger can never send this group"
                ),
                Refusal::Full => tracing::error!(
                    purger,
                    group,
                    max_pending = shared.settings.max_pending,
                    "purge dropped: the purge queue is full"
                ),
            }
        }
        for (lane, len) in lane_lens.iter().enumerate() {
            shared.stats[lane].set_pending(*len);
        }
        for lane in &done.woken {
            shared.wake[*lane].notify_one();
        }
        if let Some(id) = done.waiter {
            let deadline_shared = shared.clone();
            let wait = shared.settings.wait;
            shared.runtime.spawn(async move {
                tokio::time::sleep(wait).await;
                deadline_shared.queue().expire(id);
            });
        }
        let fallback = PurgeOutcome {
            pending: done.pending,
            dropped: done.refused.len(),
            purged: 0,
        };
        // The sender is dropped unanswered only if the purge thread is gone.
        async move { rx.await.unwrap_or(fallback) }
    }

    /// How long [`purge`](Self::purge) waits at most.
    pub fn wait(&self) -> Duration {
        self.shared.settings.wait
    }

    /// Counters summed over every purger.
    pub fn stats(&self) -> PurgeStats {
        self.purger_stats()
            .into_iter()
            .fold(PurgeStats::default(), |sum, (_, stats)| sum + stats)
    }

    /// Counters per purger, by [`Purger::name`], in the order they were added.
    pub fn purger_stats(&self) -> Vec<(String, PurgeStats)> {
        let queue = self.shared.queue();
        self.shared
            .purgers
            .iter()
            .enumerate()
            .map(|(lane, purger)| {
                let stats = self.shared.stats[lane].snapshot(queue.lane_len(lane));
                (purger.name().to_owned(), stats)
            })
            .collect()
    }
}

/// One purger's loop: take a batch, attempt it, settle it; back off after a failure.
async fn run_lane(shared: Arc<Shared>, lane: usize) {
    let purger = shared.purgers[lane].clone();
    let stats = &shared.stats[lane];
    let settings = shared.settings;
    let mut failures: u32 = 0;
    loop {
        let batch = shared.queue().take_batch(lane, settings.max_batch);
        if batch.is_empty() {
            if shared.closed.load(Ordering::SeqCst) {
                return;
            }
            shared.wake[lane].notified().await;
            continue;
        }
        let attempt = AssertUnwindSafe(purger.purge(&batch)).catch_unwind();
        let result = match tokio::time::timeout(settings.timeout, attempt).await {
            Ok(Ok(result)) => result,
            Ok(Err(_panic)) => Err(PurgeError::Other("the purger panicked".into())),
            Err(_elapsed) => Err(PurgeError::Timeout(settings.timeout)),
        };
        let name = purger.name();
        match result {
            Ok(()) => {
                // Counted before the queue settles the batch: settling wakes the callers of
                // `purge`, who may read `stats()` at once.
                stats.succeeded(failures > 0);
                let pending = {
                    let mut queue = shared.queue();
                    queue.succeed(lane);
                    queue.lane_len(lane)
                };
                stats.set_pending(pending);
                if failures > 0 {
                    tracing::info!(
                        purger = name,
                        groups = batch.len(),
                        failures,
                        "purge landed after retries"
                    );
                } else {
                    tracing::debug!(purger = name, groups = batch.len(), "purge landed");
                }
                failures = 0;
            }
            Err(error) if error.is_permanent() => {
                stats.dropped(batch.len());
                let pending = {
                    let mut queue = shared.queue();
                    queue.drop_in_flight(lane);
                    queue.lane_len(lane)
                };
                stats.set_pending(pending);
                tracing::error!(purger = name, groups = ?batch, %error, "purge dropped: it can never succeed");
                failures = 0;
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                stats.failed();
                let pending = {
                    let mut queue = shared.queue();
                    queue.fail(lane);
                    queue.lane_len(lane)
                };
                stats.set_pending(pending);
                let retry_in = backoff(settings.backoff_initial, settings.backoff_max, failures);
                tracing::warn!(
                    purger = name, %error, failures, pending, ?retry_in,
                    "purge attempt failed; retrying in the background"
                );
                tokio::time::sleep(retry_in).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Instant;

    use futures_util::future::BoxFuture;

    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let ms = Duration::from_millis;
        let delays: Vec<_> = (1..=6).map(|n| backoff(ms(100), ms(1000), n)).collect();
        assert_eq!(
            delays,
            [ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]
        );
        assert_eq!(
            backoff(ms(100), ms(1000), u32::MAX),
            ms(1000),
            "no overflow"
        );
        assert_eq!(backoff(Duration::MAX, Duration::MAX, 40), Duration::MAX);
    }

    /// Fails its first `fail_first` attempts, then records what it is handed.
    struct Scripted {
        fail_first: usize,
        attempts: AtomicUsize,
        landed: Mutex<Vec<Vec<String>>>,
        hang: bool,
    }

    impl Scripted {
        fn new(fail_first: usize) -> Arc<Self> {
            Arc::new(Self {
                fail_first,
                attempts: AtomicUsize::new(0),
                landed: Mutex::new(Vec::new()),
                hang: false,
            })
        }
    }

    struct Handle(Arc<Scripted>, &'static str);

    impl Purger for Handle {
        fn name(&self) -> &str {
            self.1
        }

        fn purge<'a>(&'a self, groups: &'a [String]) -> BoxFuture<'a, Result<(), PurgeError>> {
            Box::pin(async move {
                let attempt = self.0.attempts.fetch_add(1, Ordering::SeqCst);
                if self.0.hang {
                    std::future::pending::<()>().await;
                }
                if attempt < self.0.fail_first {
                    return Err(PurgeError::Other(format!("attempt {attempt} fails")));
                }
                self.0.landed.lock().unwrap().push(groups.to_vec());
                Ok(())
            })
        }

        fn check(&self, group: &str) -> Result<(), PurgeError> {
            if group.contains(' ') {
                return Err(PurgeError::InvalidGroup {
                    group: group.into(),
                    reason: "space".into(),
                });
            }
            Ok(())
        }
    }

    fn block_on<F: Future>(future: F) -> F::Output {
        // A plain runtime with no timer: the dispatcher's thread owns every timer.
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    fn groups(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn every_purger_gets_every_group_once() {
        let (a, b) = (Scripted::new(0), Scripted::new(0));
        let purges = Purges::builder()
            .purger(Handle(a.clone(), "a"))
            .purger(Handle(b.clone(), "b"))
            .build()
            .unwrap();
        let outcome = block_on(purges.purge(groups(&["x", "y", "x"])));
        assert_eq!(
            (outcome.purged, outcome.pending, outcome.dropped),
            (4, 0, 0)
        );
        assert_eq!(*a.landed.lock().unwrap(), [groups(&["x", "y"])]);
        assert_eq!(*b.landed.lock().unwrap(), [groups(&["x", "y"])]);
        let stats = purges.stats();
        assert_eq!((stats.succeeded, stats.failed, stats.pending), (2, 0, 0));
    }

    #[test]
    fn failures_are_retried_with_backoff_within_the_wait() {
        let flaky = Scripted::new(2);
        let purges = Purges::builder()
            .purger(Handle(flaky.clone(), "flaky"))
            .backoff(ms(10), ms(20))
            .wait(ms(2_000))
            .build()
            .unwrap();
        let started = Instant::now();
        let outcome = block_on(purges.purge(groups(&["x"])));
        assert!(outcome.is_done());
        assert!(started.elapsed() >= ms(30), "backed off 10 + 20 ms");
        assert_eq!(flaky.attempts.load(Ordering::SeqCst), 3);
        let stats = purges.stats();
        assert_eq!((stats.succeeded, stats.recovered, stats.failed), (1, 1, 2));
    }

    #[test]
    fn the_caller_waits_at_most_wait_and_the_purge_lands_later() {
        let slow = Scripted::new(3);
        let purges = Purges::builder()
            .purger(Handle(slow.clone(), "slow"))
            .backoff(ms(60), ms(60))
            .wait(ms(50))
            .build()
            .unwrap();
        let started = Instant::now();
        let outcome = block_on(purges.purge(groups(&["x"])));
        let waited = started.elapsed();
        assert!(waited >= ms(50) && waited < ms(150), "waited {waited:?}");
        assert_eq!((outcome.purged, outcome.pending), (0, 1));
        assert_eq!(purges.stats().pending, 1);
        while slow.landed.lock().unwrap().is_empty() {
            assert!(started.elapsed() < ms(2_000), "never landed");
            std::thread::sleep(ms(5));
        }
        // `landed` is pushed just before the queue settles: give it a moment.
        while purges.stats().pending != 0 {
            std::thread::sleep(ms(1));
        }
        assert_eq!(purges.stats().failed, 3);
    }

    #[test]
    fn a_hanging_attempt_times_out() {
        let hang = Arc::new(Scripted {
            fail_first: 0,
            attempts: AtomicUsize::new(0),
            landed: Mutex::new(Vec::new()),
            hang: true,
        });
        let purges = Purges::builder()
            .purger(Handle(hang.clone(), "hang"))
            .timeout(ms(20))
            .backoff(ms(5), ms(5))
            .wait(ms(100))
            .build()
            .unwrap();
        let outcome = block_on(purges.purge(groups(&["x"])));
        assert_eq!(outcome.pending, 1);
        let attempts = hang.attempts.load(Ordering::SeqCst);
        assert!(
            (2..=5).contains(&attempts),
            "{attempts} attempts of 20 ms + 5 ms in 100 ms"
        );
        assert!(purges.stats().failed >= 2);
    }

    #[test]
    fn invalid_groups_and_overflow_are_dropped_loudly() {
        let blocked = Arc::new(Scripted {
            fail_first: usize::MAX,
            attempts: AtomicUsize::new(0),
            landed: Mutex::new(Vec::new()),
            hang: false,
        });
        let purges = Purges::builder()
            .purger(Handle(blocked, "down"))
            .backoff(ms(1_000), ms(1_000))
            .wait(ms(10))
            .max_pending(2)
            .build()
            .unwrap();
        let outcome = block_on(purges.purge(groups(&["a b", "a", "b", "c"])));
        assert_eq!((outcome.pending, outcome.dropped), (2, 2));
        // Duplicates of queued groups coalesce: the bound does not move.
        let outcome = block_on(purges.purge(groups(&["a", "b"])));
        assert_eq!((outcome.pending, outcome.dropped), (2, 0));
        let stats = purges.stats();
        assert_eq!((stats.pending, stats.dropped), (2, 2));
    }

    #[test]
    fn no_purger_and_no_group_answer_at_once() {
        let none = Purges::builder().build().unwrap();
        assert!(block_on(none.purge(groups(&["a"]))).is_done());
        let one = Purges::builder()
            .purger(Handle(Scripted::new(0), "one"))
            .build()
            .unwrap();
        assert_eq!(block_on(one.purge(Vec::new())), PurgeOutcome::default());
    }

    #[test]
    fn a_purge_queued_before_the_last_handle_drops_still_lands() {
        let late = Scripted::new(1);
        let purges = Purges::builder()
            .purger(Handle(late.clone(), "late"))
            .backoff(ms(20), ms(20))
            .wait(ms(1))
            .build()
            .unwrap();
        let pending = purges.purge(groups(&["x"]));
        drop(purges);
        assert_eq!(block_on(pending).pending, 1);
        let started = Instant::now();
        while late.landed.lock().unwrap().is_empty() {
            assert!(started.elapsed() < ms(2_000), "never landed");
            std::thread::sleep(ms(5));
        }
    }
}
