//! The tier shared between instances (Redis, feature `redis`), as the engine sees it: a
//! lookup, a store, a build claim and an invalidation broadcast, each a no-op for a cache
//! without one. Keeps the engine free of `cfg`s.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
#[cfg(feature = "redis")]
use std::time::Duration;

use actix_web::http::header::{HeaderMap, HeaderName};
use futures_util::future::BoxFuture;

use super::Inner;
use super::entry::Entry;
#[cfg(feature = "redis")]
use super::redis::{self, Backend};
#[cfg(feature = "redis")]
use super::stats::Event;

/// The second tier of one cache.
pub(crate) struct Shared {
    #[cfg(feature = "redis")]
    backend: Option<(Arc<Backend>, Arc<redis::Gate>)>,
    /// Whether entries are kept in this instance's memory too (the L1).
    pub(crate) l1: bool,
}

/// A claim on building a key across instances, held until the build is stored.
#[derive(Debug)]
pub(crate) enum Lease {
    #[cfg(feature = "redis")]
    Redis(redis::Lease),
}

/// What [`Shared::claim`] decided.
pub(crate) enum Claimed {
    /// Build it here (under a lease when Redis is reachable).
    Build(Option<Lease>),
    /// Another instance built it; stored under this key (the request's variant, when the
    /// response varies).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    Found(Arc<str>, Arc<Entry>),
}

impl Shared {
    /// No second tier: the cache lives in this process only.
    pub(crate) fn local() -> Self {
        Self {
            #[cfg(feature = "redis")]
            backend: None,
            l1: true,
        }
    }

    #[cfg(feature = "redis")]
    pub(crate) fn redis(backend: Arc<Backend>, l1: bool) -> Self {
        Self {
            backend: Some((backend, Arc::default())),
            l1,
        }
    }

    /// Whether entries are shared with other instances.
    pub(crate) fn is_shared(&self) -> bool {
        #[cfg(feature = "redis")]
        return self.backend.is_some();
        #[cfg(not(feature = "redis"))]
        false
    }

    /// Called once the cache exists: it joins the backend's counter sync.
    pub(crate) fn register(&self, inner: &Arc<Inner>) {
        #[cfg(feature = "redis")]
        if let Some((backend, _)) = &self.backend {
            backend.register(inner);
        }
        let _ = inner;
    }

    /// Before a request is answered from a shared cache: the invalidation counters as Redis
    /// has them now, unless `read_your_writes` is off (see
    /// [`RedisBackendBuilder::read_your_writes`](super::RedisBackendBuilder::read_your_writes)).
    pub(crate) async fn sync_counters(&self, inner: &Arc<Inner>) {
        #[cfg(feature = "redis")]
        if let Some((backend, gate)) = &self.backend
            && backend.read_your_writes
        {
            backend.fresh_counters(inner, gate).await;
        }
        let _ = inner;
    }

    /// The entry other instances stored under `key`, if any and readable, and the key it is
    /// under: when `key` is a URL whose response varies (and this instance had not learnt
    /// on what), the variant for `req_headers`.
    pub(crate) async fn get(
        &self,
        inner: &Inner,
        key: &str,
        req_headers: &HeaderMap,
    ) -> Option<(Arc<str>, Arc<Entry>)> {
        #[cfg(feature = "redis")]
        if let Some((backend, _)) = &self.backend {
            let stored = backend
                .lookup(backend.entry_key(&inner.name, key))
                .await??;
            return match inner.decoded(key, stored)? {
                Fetched::Entry(entry) => Some((Arc::from(key), entry)),
                Fetched::Vary(names) => follow(backend, inner, key, &names, req_headers).await,
            };
        }
        let _ = (inner, key, req_headers);
        None
    }

    /// Stores `entry` under `key` for the other instances, releasing `lease` in the same round
    /// trip. `vary`: the base key and the header names, when the response varies, so other
    /// instances find the variants.
    pub(crate) async fn put(
        &self,
        inner: &Inner,
        key: &str,
        entry: &Entry,
        lease: Option<Lease>,
        vary: Option<(&str, &[HeaderName])>,
    ) {
        #[cfg(feature = "redis")]
        if let Some((backend, _)) = &self.backend {
            let life = inner.shared_life();
            let value = redis::encode(key, entry, redis::millis(life));
            let lease = lease.map(|Lease::Redis(lease)| lease);
            let pointer = vary.map(|(base, names)| {
                (
                    backend.entry_key(&inner.name, base),
                    redis::encode_vary(base, names),
                )
            });
            if backend
                .store(
                    backend.entry_key(&inner.name, key),
                    value,
                    life,
                    lease,
                    pointer,
                )
                .await
            {
                inner.stats.record(Event::L2Write);
            }
            return;
        }
        let _ = (inner, key, entry, lease, vary);
    }

    /// Decides who builds a key nobody has: this instance (under a lease), or another one
    /// already building it, whose result this one waits for (until `deadline`, then it
    /// builds too). `usable` tells whether a stored entry answers the request.
    pub(crate) async fn claim(
        &self,
        inner: &Inner,
        key: &str,
        req_headers: &HeaderMap,
        deadline: tokio::time::Instant,
        usable: &dyn Fn(&Entry) -> bool,
    ) -> Claimed {
        #[cfg(feature = "redis")]
        if let Some((backend, _)) = &self.backend {
            return claim_redis(backend, inner, key, req_headers, deadline, usable).await;
        }
        let _ = (inner, key, req_headers, deadline, usable);
        Claimed::Build(None)
    }

    /// For a stale refresh: `Some` to refresh here (holding a lease when Redis is
    /// reachable), `None` when another instance is already refreshing this key.
    pub(crate) async fn try_claim(&self, inner: &Inner, key: &str) -> Option<Option<Lease>> {
        #[cfg(feature = "redis")]
        if let Some((backend, _)) = &self.backend {
            let attempt = redis::Lease::try_acquire(
                backend,
                backend.lease_key(&inner.name, key),
                backend.entry_key(&inner.name, key),
            )
            .await;
            return match attempt {
                None => Some(None),
                Some(attempt) => attempt.lease.map(|lease| Some(Lease::Redis(lease))),
            };
        }
        let _ = (inner, key);
        Some(None)
    }

    /// Tells the other instances that `section` (or the whole cache) moved to generation
    /// `value` on this one.
    pub(crate) fn publish(
        &self,
        inner: &Arc<Inner>,
        section: Option<&str>,
        value: u64,
    ) -> Invalidation {
        #[cfg(feature = "redis")]
        if let Some((backend, _)) = &self.backend {
            return backend.publish(inner, section.map(str::to_owned), value);
        }
        let _ = (inner, section, value);
        Invalidation::ready()
    }
}

#[cfg(feature = "redis")]
async fn claim_redis(
    backend: &Arc<Backend>,
    inner: &Inner,
    key: &str,
    req_headers: &HeaderMap,
    deadline: tokio::time::Instant,
    usable: &dyn Fn(&Entry) -> bool,
) -> Claimed {
    let lease_key = backend.lease_key(&inner.name, key);
    let entry_key = backend.entry_key(&inner.name, key);
    // What a stored value means for this request: `Some` ends the wait (an entry to use, or
    // a variant of this URL that is not ours: then build it here), `None` keeps waiting.
    let examine = async |stored: Option<redis::Stored>| -> Option<Claimed> {
        match inner.decoded(key, stored?)? {
            Fetched::Entry(entry) if usable(&entry) => Some(Claimed::Found(Arc::from(key), entry)),
            Fetched::Entry(_) => None,
            Fetched::Vary(names) => Some(
                match follow(backend, inner, key, &names, req_headers).await {
                    Some((full, entry)) if usable(&entry) => Claimed::Found(full, entry),
                    _ => Claimed::Build(None),
                },
            ),
        }
    };
    let mut delay = Duration::from_millis(5);
    loop {
        let Some(attempt) =
            redis::Lease::try_acquire(backend, lease_key.clone(), entry_key.clone()).await
        else {
            return Claimed::Build(None);
        };
        // Stored just before we asked: take it (a lease taken with it is released on drop).
        if let Some(claimed) = examine(attempt.stored).await {
            return claimed;
        }
        if let Some(lease) = attempt.lease {
            return Claimed::Build(Some(Lease::Redis(lease)));
        }
        tracing::debug!(cache = %inner.name, key, "response cache: another instance is building; waiting");
        loop {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                tracing::warn!(cache = %inner.name, key, timeout = ?inner.lock_timeout,
                    "response cache: waited too long for another instance's build; building here");
                return Claimed::Build(None);
            }
            tokio::time::sleep(delay.min(deadline - now)).await;
            delay = (delay * 2).min(Duration::from_millis(100));
            let Some(polled) =
                redis::Lease::poll(backend, lease_key.clone(), entry_key.clone()).await
            else {
                return Claimed::Build(None);
            };
            if let Some(claimed) = examine(polled.stored).await {
                return claimed;
            }
            if !polled.lease_held {
                // Its holder finished without storing, or died and the lease expired: one
                // of the waiters takes it over.
                break;
            }
        }
    }
}

/// Follows a Vary pointer: learns the header names, then reads this request's variant.
#[cfg(feature = "redis")]
async fn follow(
    backend: &Arc<Backend>,
    inner: &Inner,
    base: &str,
    names: &[HeaderName],
    req_headers: &HeaderMap,
) -> Option<(Arc<str>, Arc<Entry>)> {
    let full = inner.learn_vary(base, names, req_headers);
    if &*full == base {
        return None;
    }
    let stored = backend
        .lookup(backend.entry_key(&inner.name, &full))
        .await??;
    match inner.decoded(&full, stored)? {
        Fetched::Entry(entry) => Some((full, entry)),
        Fetched::Vary(_) => None,
    }
}

/// An invalidation on its way to the other instances; [`ResponseCache::invalidate`] has
/// already applied it to this one. Await it to know Redis has it and has broadcast it (what a
/// write handler should do before answering, so the client's next read, on any instance,
/// sees it), or drop it: it completes anyway. Without Redis it is ready at once.
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

    #[cfg(feature = "redis")]
    pub(crate) fn waiting(done: impl Future<Output = ()> + Send + 'static) -> Self {
        Self {
            pending: Some(Box::pin(done)),
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

impl Inner {
    /// How long an entry is worth keeping in the shared tier: TTL mode, until it is too
    /// stale to serve; revision modes, as long as its revision may stay current.
    #[cfg(feature = "redis")]
    pub(crate) fn shared_life(&self) -> Duration {
        match &self.freshness {
            super::Freshness::Ttl(ttl) => *ttl + self.max_stale,
            _ => self.max_stale + Duration::from_secs(3600),
        }
    }

    /// A value read from the shared tier: an entry, its times set from its remaining life
    /// there (Redis's clock, so instances need not agree on theirs), or a Vary pointer;
    /// `None` if it cannot be read.
    #[cfg(feature = "redis")]
    pub(crate) fn decoded(&self, key: &str, (value, pttl): redis::Stored) -> Option<Fetched> {
        let decoded = match redis::decode(key, value) {
            Ok(redis::Value::Entry(decoded)) => decoded,
            Ok(redis::Value::Vary(names)) => return Some(Fetched::Vary(names)),
            Err(err) => {
                tracing::warn!(cache = %self.name, key, error = %err, "response cache: unreadable value in redis; treated as a miss");
                self.stats.record(Event::L2Undecodable);
                return None;
            }
        };
        let remaining = u64::try_from(pttl).unwrap_or(decoded.life_ms);
        let elapsed = Duration::from_millis(decoded.life_ms.saturating_sub(remaining));
        let snapshot = super::entry::Snapshot::new(decoded.status, &decoded.headers, decoded.body);
        let entry = Entry::new(
            snapshot,
            self.now().saturating_sub(elapsed),
            decoded.revision,
            decoded.vary,
            decoded.sections,
            decoded.generation,
        );
        self.stats.record(Event::L2Hit);
        Some(Fetched::Entry(Arc::new(entry)))
    }

    /// Remembers that responses under `base` vary on `names` (learnt from another
    /// instance); returns the key of the variant `req_headers` select.
    #[cfg(feature = "redis")]
    fn learn_vary(&self, base: &str, names: &[HeaderName], req_headers: &HeaderMap) -> Arc<str> {
        if names.is_empty() {
            return Arc::from(base);
        }
        self.learned_vary
            .insert(Arc::from(base), Arc::from(names.to_vec()));
        self.any_vary
            .store(true, std::sync::atomic::Ordering::Relaxed);
        super::key::full_key(base, &super::key::vary_values(names, req_headers))
    }
}

/// A value read from the shared tier.
#[cfg(feature = "redis")]
pub(crate) enum Fetched {
    Entry(Arc<Entry>),
    /// The response under this base key varies on these request headers.
    Vary(Vec<HeaderName>),
}
