//! Server-side response caches: TTL with single-flight and stale-on-error, or revision-gated
//! stale-while-revalidate, optionally built from sections.
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::time::Duration;
//! use actix_conditional::response_cache::{ManualClock, ResponseCache};
//! use actix_web::{App, HttpRequest, HttpResponse, test, web};
//!
//! # actix_web::rt::System::new().block_on(async {
//! let clock = ManualClock::new();
//! // Build the cache once, outside `HttpServer::new`'s closure, and clone it in:
//! // one cache for every worker.
//! let cache = ResponseCache::ttl("challenges", Duration::from_secs(30))
//!     .clock(clock.clone())
//!     .build();
//! let builds = Arc::new(AtomicUsize::new(0));
//!
//! let (c, b) = (cache.clone(), builds.clone());
//! let app = test::init_service(App::new().route(
//!     "/challenges/active",
//!     web::get().to(move |req: HttpRequest| {
//!         let (cache, builds) = (c.clone(), b.clone());
//!         async move {
//!             cache
//!                 .serve(&req, move |_req| {
//!                     builds.fetch_add(1, Ordering::SeqCst);
//!                     async { HttpResponse::Ok().body("[1, 2, 3]") }
//!                 })
//!                 .await
//!         }
//!     }),
//! ))
//! .await;
//!
//! let get = || test::TestRequest::get().uri("/challenges/active").to_request();
//! let res = test::call_service(&app, get()).await;
//! assert_eq!(res.headers().get("x-cache").unwrap(), "miss");
//! let res = test::call_service(&app, get()).await;
//! assert_eq!(res.headers().get("x-cache").unwrap(), "hit");
//! assert_eq!(test::read_body(res).await, "[1, 2, 3]");
//!
//! clock.advance(Duration::from_secs(31)); // past the TTL: stale bytes now, one refresh behind
//! let res = test::call_service(&app, get()).await;
//! assert_eq!(res.headers().get("x-cache").unwrap(), "stale");
//! assert_eq!(res.headers().get("age").unwrap(), "31");
//! actix_web::rt::task::yield_now().await; // let the background refresh run
//! let res = test::call_service(&app, get()).await;
//! assert_eq!(res.headers().get("x-cache").unwrap(), "hit");
//! assert_eq!(builds.load(Ordering::SeqCst), 2);
//! # });
//! ```
//!
//! # Modes
//!
//! - **TTL** ([`ResponseCache::ttl`]): an entry is fresh for the TTL (`X-Cache: hit`), then
//!   stale for [`max_stale`](ResponseCacheBuilder::max_stale) more: readers get the stale
//!   bytes at once (`stale`) while exactly one refresh runs; a failed refresh keeps the stale
//!   bytes (a warning is logged). Past that it is a miss.
//! - **Revision** ([`ResponseCache::revision`]): a cheap async function returns a fingerprint
//!   of the data (say `MAX(updated_at)` per table). Equal fingerprint: `hit-revision`. Changed:
//!   `stale` and one background refresh, for up to `max_stale` (default 300 s) after the bytes
//!   were last known current; past that, a `miss`. The ETag is derived from the fingerprint,
//!   so a matching `If-None-Match` is a 304 that costs one revision query and no body.
//! - **Sections** ([`ResponseCache::sections`]): a JSON object built from named sections,
//!   each with its own revision; when only [inline](ResponseCacheBuilder::inline_section)
//!   sections changed, only they are rebuilt and merged in the request (`section`).
//!
//! Every response that went through the cache carries `X-Cache`: `hit`, `hit-revision`,
//! `section`, `stale`, `miss`, `refresh` (the middleware's stale reader that refreshes),
//! `coalesced` (waited for another request's build) or `bypass`. Served entries carry `Age`
//! (RFC 9111 §5.1): seconds since the bytes were built or, in revision mode, last verified
//! current (`0` on a `hit-revision`); `stale` answers carry an `Age` past the `max-age` /
//! `s-maxage` they were stored with (RFC 5861 §4), so clients and CDNs never count freshness
//! twice. Revision-mode entries carry `X-Revision`.
//!
//! # Single-flight
//!
//! Concurrent misses for one key, on any worker, run the handler once; the others wait (up to
//! [`lock_timeout`](ResponseCacheBuilder::lock_timeout), then build for themselves without
//! storing, like nginx's `proxy_cache_lock_timeout`). The build runs as its own task, so a
//! client that disconnects does not cancel it for the others. An error (5xx) is handed to the
//! waiters and never stored; a panicking build answers its own request and every waiter
//! with a 500 at once (nobody retries in series behind it), and the next request builds
//! afresh. Were a build's task ever dropped unfinished, its waiters would join again and one
//! of them would take over. The wait is bounded once per request, however often it joins. A
//! key whose response turns out not to be shareable is remembered for a while
//! ([`hit_for_miss`](ResponseCacheBuilder::hit_for_miss)) so its requests do not queue.
//!
//! # What is never shared
//!
//! By default the cache refuses requests with `Authorization`, `Cookie` or `Range` and any
//! method but GET and HEAD, and stores only `200` responses without `Set-Cookie`, `private`,
//! `no-store`, `no-cache` or `Vary: *`, whose body is in memory and within
//! [`max_entry_bytes`](ResponseCacheBuilder::max_entry_bytes). The key holds host, path, query
//! and the request's values of every header in the response's `Vary`.
//! [`key_by`](ResponseCacheBuilder::key_by) opts in to caching credentialed requests, each
//! user under a key of their own.
//!
//! # One cache for all workers
//!
//! actix runs one app per worker thread. A cache built *inside* `HttpServer::new`'s closure is
//! one cache per worker: N builds per key, and an invalidation that reaches one worker only.
//! Build it before `HttpServer::new` and move a clone in (a `ResponseCache` is an `Arc`).
//! `build()` logs a warning when it runs on an actix worker thread.
//!
//! # Middleware or per handler
//!
//! [`serve`](ResponseCache::serve) wraps one handler and refreshes stale entries in the
//! background. The cache is also a middleware (`.wrap(cache.clone())` on an `App`, `Scope` or
//! `Resource`); there the stale reader that claims the refresh runs the handler itself
//! (`refresh`) while the others get the stale bytes at once, as nginx's
//! `proxy_cache_use_stale updating` does: actix's router needs each request uniquely owned, so
//! a middleware cannot replay one in the background. Register it inside `ConditionalGet` and
//! `Compress` (`.wrap(cache).wrap(ConditionalGet::default()).wrap(Compress::default())`) so it
//! stores identity bodies.
//!
//! Time comes from a [`Clock`]; tests inject a [`ManualClock`] instead of sleeping.

mod clock;
mod engine;
mod entry;
mod flight;
mod handler;
mod key;
mod middleware;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;
mod registry;
mod sections;
mod shared;
mod stats;
mod storable;

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, Responder};
use futures_util::future::LocalBoxFuture;

pub use self::clock::{Clock, ManualClock, SystemClock};
pub use self::entry::{X_CACHE, X_REVISION};
pub use self::middleware::{InvalidateOnSuccess, ResponseCacheMiddleware};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::redis::{RedisBackend, RedisBackendBuilder, RedisBackendError};
pub use self::registry::{invalidate_named, named, named_or_register};
pub use self::sections::Section;
pub use self::shared::Invalidation;
pub use self::stats::CacheStats;

use self::engine::{Plan, Refresher, labelled};
use self::entry::Entry;
use self::flight::Flights;
use self::shared::Shared;
use self::stats::{Event, Stats};
use crate::{CachePolicy, ETagHasher};

/// Default byte budget of one cache: 64 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Default largest body one entry may hold: 4 MiB, as `ConditionalGet` buffers.
pub const DEFAULT_MAX_ENTRY_BYTES: usize = 4 * 1024 * 1024;
/// Default time stale bytes may still be served (revision mode, stale-on-error): 300 s.
pub const DEFAULT_MAX_STALE: Duration = Duration::from_secs(300);
/// Default longest wait for another request's build: 10 s.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a key stays marked as not shareable: 30 s.
pub const DEFAULT_HIT_FOR_MISS: Duration = Duration::from_secs(30);

/// A revision function, type-erased: `Send + Sync` so one cache serves every worker, while
/// its future may be `!Send` (it runs on the worker that asked).
pub(crate) type RevisionFn = Arc<
    dyn Fn(HttpRequest) -> LocalBoxFuture<'static, Result<String, actix_web::Error>> + Send + Sync,
>;
type UserKeyFn = Arc<dyn Fn(&HttpRequest) -> Option<String> + Send + Sync>;

/// What decides whether an entry is fresh.
pub(crate) enum Freshness {
    Ttl(Duration),
    Revision(RevisionFn),
    Sections(Vec<Section>),
}

/// What the store holds under a key.
#[derive(Debug, Clone)]
pub(crate) enum Slot {
    Entry(Arc<Entry>),
    /// Hit-for-miss: this key's responses were not shareable; do not coalesce until then.
    Unshared {
        until: Duration,
    },
}

/// Which part of a cache to invalidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every entry (for a sectioned cache, every section).
    All,
    /// One section of a sectioned cache; for other caches the same as [`All`](Self::All).
    Section(Cow<'static, str>),
}

impl Scope {
    /// One section by name.
    pub fn section(name: impl Into<Cow<'static, str>>) -> Self {
        Self::Section(name.into())
    }
}

/// A server-side response cache; see the [module docs](self). Cloning is cheap and shares the
/// cache.
#[derive(Clone)]
pub struct ResponseCache {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) name: Arc<str>,
    pub(crate) freshness: Freshness,
    pub(crate) max_stale: Duration,
    pub(crate) max_entry_bytes: usize,
    pub(crate) lock_timeout: Duration,
    pub(crate) hit_for_miss: Duration,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) origin: Instant,
    pub(crate) store: moka::sync::Cache<Arc<str>, Slot>,
    pub(crate) learned_vary: moka::sync::Cache<Arc<str>, Arc<[HeaderName]>>,
    /// Whether any response varied yet: until one does, hits skip the `learned_vary` lookup.
    pub(crate) any_vary: AtomicBool,
    pub(crate) flights: Arc<Flights>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) key_by: Option<UserKeyFn>,
    pub(crate) forced_refresh: bool,
    pub(crate) hasher: ETagHasher,
    /// `Cache-Control` of sectioned responses, and the policy it renders.
    pub(crate) cache_control: HeaderValue,
    pub(crate) cache_policy: CachePolicy,
    /// The tier shared with other instances (Redis), if any.
    pub(crate) shared: Shared,
    generation: AtomicU64,
}

impl fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseCache")
            .field("name", &self.inner.name)
            .field("entries", &self.inner.store.entry_count())
            .field("weighted_bytes", &self.inner.store.weighted_size())
            .finish_non_exhaustive()
    }
}

impl ResponseCache {
    /// A TTL cache: entries are fresh for `ttl`, then served stale while one refresh runs.
    pub fn ttl(name: impl Into<String>, ttl: Duration) -> ResponseCacheBuilder {
        ResponseCacheBuilder::new(name.into(), Freshness::Ttl(ttl))
    }

    /// A revision-gated cache: `revision` returns a cheap fingerprint of the data behind a
    /// request; an entry is fresh while the fingerprint is unchanged.
    ///
    /// The fingerprint must change whenever the response would (read it *after* the writes it
    /// reflects have committed; a bump before the commit lets a reader cache old data under
    /// the new fingerprint). It must be a valid header value to appear in `X-Revision`. It
    /// receives a clone of the request and must not keep it beyond its future: in the
    /// middleware form the request goes on to actix's router, which needs it uniquely owned.
    ///
    /// On a cold (or evicted) key a conditional request still runs the handler once: the
    /// `Cache-Control`, `Vary` and other headers a 304 must repeat (RFC 9110 §15.4.5) are only
    /// known from a stored response.
    pub fn revision<F, Fut, E>(name: impl Into<String>, revision: F) -> ResponseCacheBuilder
    where
        F: Fn(HttpRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, E>> + 'static,
        E: Into<actix_web::Error> + 'static,
    {
        let revision: RevisionFn = Arc::new(move |req| {
            let fut = revision(req);
            Box::pin(async move { fut.await.map_err(Into::into) })
        });
        ResponseCacheBuilder::new(name.into(), Freshness::Revision(revision))
    }

    /// A revision-gated cache whose response is a JSON object of named [`Section`]s; add them
    /// with [`section`](ResponseCacheBuilder::section) and
    /// [`inline_section`](ResponseCacheBuilder::inline_section), answer with
    /// [`respond`](Self::respond).
    pub fn sections(name: impl Into<String>) -> ResponseCacheBuilder {
        ResponseCacheBuilder::new(name.into(), Freshness::Sections(Vec::new()))
    }

    /// The cache's name (the `cache` label of its metrics).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// A copy of the cache's counters.
    pub fn stats(&self) -> CacheStats {
        self.inner.stats.snapshot()
    }

    /// Bytes the stored entries weigh against the budget (after pending housekeeping).
    pub fn weighted_bytes(&self) -> u64 {
        self.inner.store.run_pending_tasks();
        self.inner.store.weighted_size()
    }

    /// Answers `req` from the cache, running `build` on a miss or, in the background, to
    /// refresh a stale entry.
    ///
    /// `build` receives the request (a clone for background refreshes): take app data and
    /// path parameters from it. It may be called again long after this request ended. It
    /// should build the full response and leave preconditions to the cache: it sees the
    /// client's `If-None-Match` and the like, and a 304 or 412 it answers is not stored.
    pub async fn serve<F, Fut, R>(&self, req: &HttpRequest, build: F) -> HttpResponse
    where
        F: Fn(HttpRequest) -> Fut + 'static,
        Fut: Future<Output = R> + 'static,
        R: Responder + 'static,
    {
        let refresher: Refresher = Rc::new(move |req: HttpRequest| {
            let fut = build(req.clone());
            Box::pin(async move { fut.await.respond_to(&req).map_into_boxed_body() })
        });
        self.serve_with(req, &refresher).await
    }

    pub(crate) async fn serve_with(
        &self,
        req: &HttpRequest,
        refresher: &Refresher,
    ) -> HttpResponse {
        match self.inner.plan(req, Some(refresher)).await {
            Plan::Respond(res) => res,
            Plan::Bypass(label) => labelled(refresher(req.clone()).await, label),
            Plan::Lead(lead) => {
                // The build runs as its own task: if this client goes away, the waiters still
                // get its result.
                let inner = Arc::clone(&self.inner);
                let build = refresher(req.clone());
                let own = req.clone();
                let task = actix_rt::spawn(async move {
                    let res = build.await;
                    inner.finish(own.method(), own.headers(), lead, res).await
                });
                task.await.unwrap_or_else(|err| {
                    tracing::error!(cache = %self.inner.name, error = %err, "response cache: build panicked");
                    self.inner.stats.record(Event::RefreshFailure);
                    labelled(HttpResponse::InternalServerError().finish(), "miss")
                })
            }
        }
    }

    /// Invalidates entries: for TTL and revision caches every entry (the next request is a
    /// miss, or in revision mode a stale-while-revalidate refresh); for a sectioned cache,
    /// every section or the one named. Call it *after* the write it reflects has committed.
    ///
    /// It applies to this process at once. With Redis ([`ResponseCacheBuilder::redis`]) it is
    /// also counted there and broadcast to the other instances: await the returned
    /// [`Invalidation`] to answer the write only once they have been told (what
    /// [`invalidates`](Self::invalidates) and `#[etag_cached(invalidates = …)]` do), or drop
    /// it.
    pub fn invalidate(&self, scope: &Scope) -> Invalidation {
        let inner = &self.inner;
        let (section, value) = match (&inner.freshness, scope) {
            (Freshness::Sections(sections), Scope::Section(name)) => {
                match sections.iter().find(|s| s.name() == name) {
                    Some(section) => (Some(section.name()), section.bump()),
                    None => {
                        tracing::warn!(cache = %inner.name, section = %name, "response cache: no such section; invalidating all");
                        (None, inner.generation.fetch_add(1, Ordering::SeqCst) + 1)
                    }
                }
            }
            _ => (None, inner.generation.fetch_add(1, Ordering::SeqCst) + 1),
        };
        tracing::debug!(cache = %inner.name, ?scope, generation = value, "response cache: invalidated");
        inner.shared.publish(inner, section, value)
    }

    /// A middleware that calls [`invalidate`](Self::invalidate) after each 2xx response of the
    /// routes it wraps (a mutation handler declaring what it invalidates).
    pub fn invalidates(&self, scope: Scope) -> InvalidateOnSuccess {
        InvalidateOnSuccess::new(self.clone(), scope)
    }
}

impl Inner {
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// This instance's copy of the invalidation counter of `section` (or the whole cache).
    #[cfg(feature = "redis")]
    pub(crate) fn local_generation(&self, section: Option<&str>) -> u64 {
        match self.section(section) {
            Some(section) => section.generation(),
            None => self.generation(),
        }
    }

    /// Raises this instance's copy of an invalidation counter to `value` (learnt from Redis);
    /// entries built under a lower one are then stale. Sections this instance does not have
    /// (another version of the app, mid-deploy) and absurd values are ignored.
    #[cfg(feature = "redis")]
    pub(crate) fn observe_generation(&self, section: Option<&str>, value: u64) {
        if value > redis::MAX_COUNTER {
            tracing::warn!(cache = %self.name, ?section, value, "response cache: ignoring an out-of-range invalidation counter from redis");
            return;
        }
        let previous = match (section, self.section(section)) {
            (None, _) => self.generation.fetch_max(value, Ordering::SeqCst),
            (Some(_), Some(section)) => section.observe(value),
            (Some(_), None) => return,
        };
        if previous < value {
            tracing::debug!(cache = %self.name, ?section, value, "response cache: invalidation from another instance");
            // TTL entries of an older generation are never served again: free their memory.
            // (Revision-mode entries stay, to be served stale while one refresh runs.)
            if section.is_none() && matches!(self.freshness, Freshness::Ttl(_)) {
                self.store.invalidate_all();
            }
        }
    }

    /// The names of a sectioned cache's sections (none for the other modes).
    #[cfg(feature = "redis")]
    pub(crate) fn section_names(&self) -> Vec<String> {
        match &self.freshness {
            Freshness::Sections(sections) => sections.iter().map(|s| s.name().to_owned()).collect(),
            _ => Vec::new(),
        }
    }

    #[cfg(feature = "redis")]
    fn section(&self, name: Option<&str>) -> Option<&Section> {
        match (&self.freshness, name) {
            (Freshness::Sections(sections), Some(name)) => {
                sections.iter().find(|s| s.name() == name)
            }
            _ => None,
        }
    }

    /// The fingerprint of the data behind `req` (revision mode), with the invalidation
    /// generation mixed in so `invalidate` changes it too.
    async fn current_revision(
        &self,
        req: &HttpRequest,
        generation: u64,
    ) -> Result<Option<String>, actix_web::Error> {
        let mut revision = match &self.freshness {
            Freshness::Ttl(_) => return Ok(None),
            Freshness::Revision(revision) => revision(req.clone()).await?,
            Freshness::Sections(sections) => sections::combined_revision(sections, req).await?,
        };
        if generation > 0 {
            revision.push_str(&format!("~{generation}"));
        }
        Ok(Some(revision))
    }
}

/// Configures a [`ResponseCache`].
pub struct ResponseCacheBuilder {
    name: String,
    freshness: Freshness,
    max_stale: Option<Duration>,
    max_bytes: u64,
    max_entry_bytes: usize,
    lock_timeout: Duration,
    hit_for_miss: Duration,
    clock: Arc<dyn Clock>,
    key_by: Option<UserKeyFn>,
    forced_refresh: bool,
    hasher: ETagHasher,
    cache_control: CachePolicy,
    #[cfg(feature = "redis")]
    redis: Option<RedisBackend>,
    l1: bool,
}

impl fmt::Debug for ResponseCacheBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseCacheBuilder")
            .field("name", &self.name)
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

impl ResponseCacheBuilder {
    fn new(name: String, freshness: Freshness) -> Self {
        Self {
            name,
            freshness,
            max_stale: None,
            max_bytes: DEFAULT_MAX_BYTES,
            max_entry_bytes: DEFAULT_MAX_ENTRY_BYTES,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            hit_for_miss: DEFAULT_HIT_FOR_MISS,
            clock: Arc::new(SystemClock),
            key_by: None,
            forced_refresh: true,
            hasher: ETagHasher::default(),
            cache_control: CachePolicy::revalidate(0),
            #[cfg(feature = "redis")]
            redis: None,
            l1: true,
        }
    }

    /// Shares the cache with other instances through Redis: entries, invalidations and
    /// builds (see the [`redis`] module). Give every instance the same cache name.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis(mut self, backend: &RedisBackend) -> Self {
        self.redis = Some(backend.clone());
        self
    }

    /// Whether a cache with [Redis](Self::redis) also keeps entries in this process's memory
    /// (default: yes). Off, every lookup asks Redis: for instances that must not hold copies,
    /// and to measure what a Redis hit costs. Without Redis the memory tier is the cache, and
    /// this setting is ignored.
    pub fn memory_tier(mut self, enabled: bool) -> Self {
        self.l1 = enabled;
        self
    }

    /// How long stale bytes may still be served: past the TTL (TTL mode), or after the bytes
    /// were last known current (revision modes). Default [`DEFAULT_MAX_STALE`].
    pub fn max_stale(mut self, max_stale: Duration) -> Self {
        self.max_stale = Some(max_stale);
        self
    }

    /// The byte budget (bodies, headers, keys); least useful entries go first. Default
    /// [`DEFAULT_MAX_BYTES`].
    pub fn max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Bodies larger than this are served but not stored. Default [`DEFAULT_MAX_ENTRY_BYTES`].
    pub fn max_entry_bytes(mut self, max_entry_bytes: usize) -> Self {
        self.max_entry_bytes = max_entry_bytes;
        self
    }

    /// How long a request waits for another's build before building without storing.
    pub fn lock_timeout(mut self, lock_timeout: Duration) -> Self {
        self.lock_timeout = lock_timeout;
        self
    }

    /// How long a key whose response was not shareable bypasses coalescing.
    pub fn hit_for_miss(mut self, hit_for_miss: Duration) -> Self {
        self.hit_for_miss = hit_for_miss;
        self
    }

    /// The time source; tests pass a [`ManualClock`].
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Opts in to caching requests with `Authorization` or `Cookie`: `key_by` names the user
    /// (e.g. from a verified session); each user's responses are stored under their own key,
    /// and `Cache-Control: private` responses become storable. A credentialed request for
    /// which it returns `None` bypasses the cache.
    pub fn key_by<F>(mut self, key_by: F) -> Self
    where
        F: Fn(&HttpRequest) -> Option<String> + Send + Sync + 'static,
    {
        self.key_by = Some(Arc::new(key_by));
        self
    }

    /// Whether `?refresh=true` or a request `Cache-Control: no-cache` forces a rebuild
    /// (default: yes). Forced rebuilds still coalesce, so a burst of them builds once, but any
    /// client can ask for one (browsers send `no-cache` on a hard reload): on an expensive
    /// endpoint exposed to the public, turn it off (http-spec pitfalls 7 and 27). Turned off,
    /// `refresh=true` is an ordinary query parameter, part of the key.
    pub fn forced_refresh(mut self, enabled: bool) -> Self {
        self.forced_refresh = enabled;
        self
    }

    /// The hash behind ETags of TTL-mode entries whose handler set none. Default XXH3-128.
    pub fn hasher(mut self, hasher: ETagHasher) -> Self {
        self.hasher = hasher;
        self
    }

    /// `Cache-Control` of a sectioned cache's responses (the handler sets its own in the
    /// other modes). Default `max-age=0, must-revalidate`: clients revalidate every time, and
    /// the revision ETag makes that a cheap 304.
    pub fn cache_control(mut self, policy: CachePolicy) -> Self {
        self.cache_control = policy;
        self
    }

    /// Adds a section rebuilt in the background when its revision changes (the response is
    /// served stale meanwhile). Only for [`ResponseCache::sections`].
    pub fn section(self, section: Section) -> Self {
        self.push_section(section)
    }

    /// Adds a section cheap enough to rebuild inside the request: when only inline sections
    /// changed, they are rebuilt and merged at once (`X-Cache: section`).
    pub fn inline_section(self, section: Section) -> Self {
        self.push_section(section.inline())
    }

    fn push_section(mut self, section: Section) -> Self {
        match &mut self.freshness {
            Freshness::Sections(sections) => sections.push(section),
            _ => panic!("sections belong to ResponseCache::sections caches"),
        }
        self
    }

    /// Builds the cache. Call it once, outside `HttpServer::new`'s closure.
    pub fn build(self) -> ResponseCache {
        self.build_checked(true)
    }

    /// `warn_on_worker`: a cache built on a worker for the process-wide registry is shared by
    /// construction, so only direct builds warn.
    pub(crate) fn build_checked(self, warn_on_worker: bool) -> ResponseCache {
        if warn_on_worker
            && std::thread::current()
                .name()
                .is_some_and(|name| name.starts_with("actix-server worker"))
        {
            tracing::warn!(cache = %self.name,
                "response cache built on an actix worker thread: each worker gets its own cache; build it once before HttpServer::new and clone it in");
        }
        let max_stale = self.max_stale.unwrap_or(DEFAULT_MAX_STALE);
        let stats = Arc::new(Stats::new(&self.name));
        let eviction_stats = Arc::clone(&stats);
        let name: Arc<str> = Arc::from(self.name.as_str());
        let eviction_name = Arc::clone(&name);
        let builder = moka::sync::Cache::builder()
            .max_capacity(self.max_bytes)
            .weigher(|key: &Arc<str>, slot: &Slot| {
                let key_len = u32::try_from(key.len()).unwrap_or(u32::MAX);
                match slot {
                    Slot::Entry(entry) => entry.weight().saturating_add(key_len),
                    Slot::Unshared { .. } => key_len.saturating_add(64),
                }
            })
            .eviction_listener(move |key, _slot, cause| {
                if cause == moka::notification::RemovalCause::Size {
                    eviction_stats.record(Event::Eviction);
                    tracing::debug!(cache = %eviction_name, %key, "response cache: evicted");
                }
            });
        // moka's clock is the real one; these lifetimes only collect garbage. Freshness is
        // decided on the injectable clock, from the times inside each entry.
        let store = match self.freshness {
            Freshness::Ttl(ttl) => builder.time_to_live(ttl + max_stale + Duration::from_secs(60)),
            _ => builder.time_to_idle(max_stale + Duration::from_secs(60)),
        }
        .build();
        let origin = self.clock.now();
        #[cfg(feature = "redis")]
        let shared = match &self.redis {
            Some(backend) => Shared::redis(Arc::clone(&backend.inner), self.l1),
            None => Shared::local(),
        };
        #[cfg(not(feature = "redis"))]
        let shared = Shared::local();
        let inner = Arc::new(Inner {
            name,
            freshness: self.freshness,
            max_stale,
            max_entry_bytes: self.max_entry_bytes,
            lock_timeout: self.lock_timeout,
            hit_for_miss: self.hit_for_miss,
            clock: self.clock,
            origin,
            store,
            // In the byte budget's spirit: keys can be long (a full query string), so weigh
            // them, cap the table at a sixteenth of the budget (at least 1 MiB) and forget
            // URLs nobody asked for in a while.
            learned_vary: moka::sync::Cache::builder()
                .weigher(|base: &Arc<str>, names: &Arc<[HeaderName]>| {
                    u32::try_from(base.len() + 32 * names.len() + 64).unwrap_or(u32::MAX)
                })
                .max_capacity((self.max_bytes / 16).max(1 << 20))
                .time_to_idle(max_stale + Duration::from_secs(3600))
                .build(),
            any_vary: AtomicBool::new(false),
            flights: Arc::default(),
            stats,
            key_by: self.key_by,
            forced_refresh: self.forced_refresh,
            hasher: self.hasher,
            cache_control: self.cache_control.to_header_value(),
            cache_policy: self.cache_control,
            shared,
            generation: AtomicU64::new(0),
        });
        inner.shared.register(&inner);
        ResponseCache { inner }
    }
}
