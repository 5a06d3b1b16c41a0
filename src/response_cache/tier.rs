//! The tier a cache shares with other instances (Redis, feature `redis`), as the engine sees
//! it: a trait, so the core has no knowledge of Redis and no `cfg` of its own. A cache without
//! one has `None` and lives in this process only.
//!
//! The cross-instance single-flight (who builds a key nobody has, and how the others wait for
//! it) is written here once, against the trait's lease primitives.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::http::header::{HeaderMap, HeaderName};
use futures_util::future::{BoxFuture, LocalBoxFuture};

use super::entry::Entry;
use super::key::vary_matches;
use super::store::{Slot, Store};

/// A claim on building a key across instances, held until the build is stored; dropping it
/// releases it. Opaque to the core: each tier downcasts its own.
pub(crate) type TierLease = Box<dyn Any + Send>;

/// A value read from the shared tier.
pub(crate) enum Fetched {
    /// An entry, its times set on the caller's clock.
    Entry(Arc<Entry>),
    /// The response under this base key varies on these request headers.
    Vary(Vec<HeaderName>),
    /// This key's responses are not shareable: every instance passes its requests to the
    /// handler, without waiting for a build (hit-for-pass).
    Pass,
}

/// What trying to take a build lease found.
pub(crate) struct LeaseAttempt {
    /// The lease, if this instance took it.
    pub(crate) lease: Option<TierLease>,
    /// What was stored under the key at the same moment.
    pub(crate) stored: Option<Fetched>,
}

/// What a waiter's poll found.
pub(crate) struct LeasePoll {
    pub(crate) stored: Option<Fetched>,
    pub(crate) held: bool,
}

/// A second tier shared by the instances of an app, bound to one cache.
///
/// Every call is bounded and answers `None`/`false` when the tier is unavailable: the cache
/// then runs on its own memory. `now` is the cache's clock, for the times of fetched entries.
pub(crate) trait SharedTier: Send + Sync + fmt::Debug {
    /// Before a request is answered: the invalidation counters as the tier has them now
    /// (read-your-writes), unless configured off.
    fn sync_counters(&self) -> LocalBoxFuture<'_, ()>;

    /// The value stored under `key`, if any and readable.
    fn get<'a>(&'a self, key: &'a str, now: Duration) -> LocalBoxFuture<'a, Option<Fetched>>;

    /// Stores `entry` under `key` for `life`, with a `Vary` pointer under the base key when
    /// the response varies, then releases `lease`. Whether the tier took it.
    fn put<'a>(
        &'a self,
        key: &'a str,
        entry: &'a Entry,
        life: Duration,
        lease: Option<TierLease>,
        vary: Option<(&'a str, &'a [HeaderName])>,
    ) -> LocalBoxFuture<'a, bool>;

    /// Marks `key` as not shareable for `life` (hit-for-pass), then releases `lease`: other
    /// instances waiting for this build, and later requests on any instance, go straight to
    /// their handler.
    fn put_pass<'a>(
        &'a self,
        key: &'a str,
        life: Duration,
        lease: Option<TierLease>,
    ) -> LocalBoxFuture<'a, ()>;

    /// Tries to take the build lease of `key`, reading its value in the same round trip.
    /// `None`: unavailable.
    fn try_lease<'a>(
        &'a self,
        key: &'a str,
        now: Duration,
    ) -> LocalBoxFuture<'a, Option<LeaseAttempt>>;

    /// Whether `key`'s lease is still held, and its value. `None`: unavailable.
    fn poll_lease<'a>(
        &'a self,
        key: &'a str,
        now: Duration,
    ) -> LocalBoxFuture<'a, Option<LeasePoll>>;

    /// Tells the other instances that `section` (or the whole cache) moved to `value` here;
    /// the future completes once the tier has it (or gave up).
    fn publish(&self, section: Option<&str>, value: u64) -> BoxFuture<'static, ()>;
}

/// What [`claim`] decided.
pub(crate) enum Claimed {
    /// Build it here (under a lease when the tier is reachable).
    Build(Option<TierLease>),
    /// Another instance built it; stored under this key (the request's variant, when the
    /// response varies).
    Found(Arc<str>, Arc<Entry>),
    /// The key is marked not shareable: build for this request alone.
    Pass,
    /// Another instance's build outlasted the wait (`lock_timeout`): build for this request
    /// alone, without storing, as a local waiter would.
    TimedOut,
}

/// For a stale refresh: `Some` to refresh here (holding a lease when the tier is reachable),
/// `None` when another instance is already refreshing this key.
pub(crate) async fn try_claim(
    tier: Option<&dyn SharedTier>,
    key: &str,
    now: Duration,
) -> Option<Option<TierLease>> {
    let Some(tier) = tier else {
        return Some(None);
    };
    match tier.try_lease(key, now).await {
        None => Some(None),
        Some(attempt) => attempt.lease.map(Some),
    }
}

/// Decides who builds a key nobody has: this instance (under a lease), or another one already
/// building it, whose result this one waits for (until `deadline`, then it builds too).
/// `usable` tells whether a stored entry answers the request.
pub(crate) async fn claim(
    tier: Option<&dyn SharedTier>,
    store: &Store,
    key: &str,
    req_headers: &HeaderMap,
    now: &dyn Fn() -> Duration,
    deadline: tokio::time::Instant,
    usable: &dyn Fn(&Entry) -> bool,
) -> Claimed {
    let Some(tier) = tier else {
        return Claimed::Build(None);
    };
    // What a stored value means for this request: `Some` ends the wait (an entry to use, or a
    // variant of this URL that is not ours: then build it here), `None` keeps waiting.
    let examine = async |stored: Option<Fetched>| -> Option<Claimed> {
        match stored? {
            Fetched::Entry(entry) if usable(&entry) => Some(Claimed::Found(Arc::from(key), entry)),
            Fetched::Entry(_) => None,
            Fetched::Pass => Some(Claimed::Pass),
            Fetched::Vary(names) => Some(
                match follow(tier, store, key, &names, req_headers, now()).await {
                    Some((full, entry)) if usable(&entry) => Claimed::Found(full, entry),
                    _ => Claimed::Build(None),
                },
            ),
        }
    };
    let mut delay = Duration::from_millis(5);
    loop {
        let Some(attempt) = tier.try_lease(key, now()).await else {
            return Claimed::Build(None);
        };
        // Stored just before we asked: take it (a lease taken with it is released on drop).
        if let Some(claimed) = examine(attempt.stored).await {
            return claimed;
        }
        if let Some(lease) = attempt.lease {
            return Claimed::Build(Some(lease));
        }
        tracing::debug!(key, "response cache: another instance is building; waiting");
        loop {
            let at = tokio::time::Instant::now();
            if at >= deadline {
                tracing::warn!(
                    key,
                    "response cache: waited too long for another instance's build; building without storing"
                );
                return Claimed::TimedOut;
            }
            tokio::time::sleep(delay.min(deadline - at)).await;
            delay = (delay * 2).min(Duration::from_millis(100));
            let Some(polled) = tier.poll_lease(key, now()).await else {
                return Claimed::Build(None);
            };
            if let Some(claimed) = examine(polled.stored).await {
                return claimed;
            }
            if !polled.held {
                // Its holder finished without storing, or died and the lease expired: one of
                // the waiters takes it over.
                break;
            }
        }
    }
}

/// What the cache holds for `key` that answers a request with these headers (its `Vary`
/// values match): this instance's entry if `fresh`, else (with a shared tier) the shared one
/// when it is fresh or newer than the local one, else whatever is local.
///
/// A hit-for-pass marker in the tier is remembered here for `pass_life`.
pub(crate) async fn lookup(
    store: &Store,
    tier: Option<&dyn SharedTier>,
    key: &Arc<str>,
    req_headers: &HeaderMap,
    (now, pass_life): (Duration, Duration),
    fresh: &dyn Fn(&Entry) -> bool,
) -> Option<Slot> {
    let local = match store.get(key) {
        Some(Slot::Entry(entry)) if !vary_matches(&entry.vary, req_headers) => None,
        local => local,
    };
    let local_entry = match &local {
        Some(Slot::Unshared { until }) if now < *until => return local,
        Some(Slot::Entry(entry)) if fresh(entry) => return local,
        Some(Slot::Entry(entry)) => Some(Arc::clone(entry)),
        _ => None,
    };
    let Some(tier) = tier else {
        return local;
    };
    let (remote_key, remote) = match tier.get(key, now).await? {
        Fetched::Entry(entry) => (Arc::clone(key), entry),
        Fetched::Vary(names) => follow(tier, store, key, &names, req_headers, now).await?,
        Fetched::Pass => {
            store.mark_unshared(key, now + pass_life);
            return Some(Slot::Unshared {
                until: now + pass_life,
            });
        }
    };
    let better = vary_matches(&remote.vary, req_headers)
        && local_entry
            .as_ref()
            .is_none_or(|l| fresh(&remote) || remote.stored_at > l.stored_at);
    if !better {
        return local;
    }
    tracing::debug!(key = %remote_key, "response cache: found in the shared tier");
    store.keep(&remote_key, &remote);
    Some(Slot::Entry(remote))
}

/// Follows a `Vary` pointer: learns the header names, then reads this request's variant.
pub(crate) async fn follow(
    tier: &dyn SharedTier,
    store: &Store,
    base: &str,
    names: &[HeaderName],
    req_headers: &HeaderMap,
    now: Duration,
) -> Option<(Arc<str>, Arc<Entry>)> {
    let full = store.learn_vary(base, names, req_headers);
    if &*full == base {
        return None;
    }
    match tier.get(&full, now).await? {
        Fetched::Entry(entry) => Some((full, entry)),
        Fetched::Vary(_) | Fetched::Pass => None,
    }
}

/// An invalidation on its way to the other instances; [`ResponseCache::invalidate`] has
/// already applied it to this one. Await it to know the shared tier has it and has broadcast
/// it (what a write handler should do before answering, so the client's next read, on any
/// instance, sees it), or drop it: it completes anyway. Without a shared tier it is ready at
/// once.
///
/// [`ResponseCache::invalidate`]: super::ResponseCache::invalidate
pub struct Invalidation {
    pending: Option<BoxFuture<'static, ()>>,
}

impl fmt::Debug for Invalidation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Invalidation")
            .field("done", &self.pending.is_none())
            .finish()
    }
}

impl Invalidation {
    pub(crate) fn ready() -> Self {
        Self { pending: None }
    }

    /// An invalidation that is done when `done` completes.
    pub(crate) fn waiting(done: BoxFuture<'static, ()>) -> Self {
        Self {
            pending: Some(done),
        }
    }
}

impl Future for Invalidation {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.pending.as_mut() {
            None => Poll::Ready(()),
            Some(pending) => match pending.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    self.pending = None;
                    Poll::Ready(())
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}
