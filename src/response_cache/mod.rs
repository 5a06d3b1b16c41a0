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
//! // What happened is in `Cache-Status` (RFC 9211), after any member of a cache before us.
//! let status = |res: &actix_web::dev::ServiceResponse| res.headers().get("cache-status").cloned().unwrap();
//! let res = test::call_service(&app, get()).await;
//! assert_eq!(status(&res), "actix-conditional; fwd=miss; fwd-status=200; stored");
//! let res = test::call_service(&app, get()).await;
//! assert_eq!(status(&res), "actix-conditional; hit; ttl=30");
//! assert_eq!(test::read_body(res).await, "[1, 2, 3]");
//!
//! clock.advance(Duration::from_secs(31)); // past the TTL: stale bytes now, one refresh behind
//! let res = test::call_service(&app, get()).await;
//! assert_eq!(status(&res), "actix-conditional; hit; detail=stale");
//! assert_eq!(res.headers().get("age").unwrap(), "31");
//! actix_web::rt::task::yield_now().await; // let the background refresh run
//! let res = test::call_service(&app, get()).await;
//! assert_eq!(status(&res), "actix-conditional; hit; ttl=30");
//! assert_eq!(builds.load(Ordering::SeqCst), 2);
//! # });
//! ```
//!
//! # Modes
//!
//! Each mode has its own builder (a type-state: a setting that makes no sense for a mode does
//! not exist on its builder), and all three run on one engine with one decision loop.
//!
//! - **TTL** ([`ResponseCache::ttl`]): an entry is fresh for the TTL (`X-Cache: hit`), then
//!   stale for [`max_stale`](ResponseCacheBuilder::max_stale) more: readers get the stale
//!   bytes at once (`stale`) while exactly one refresh runs; a failed refresh keeps the stale
//!   bytes (a warning is logged). Past that it is a miss.
//! - **Revision** ([`ResponseCache::revision`]): a cheap async function returns a fingerprint
//!   of the data (say `MAX(updated_at)` per table). Equal fingerprint: `hit-revision`. Changed:
//!   `stale` and one background refresh, for up to `max_stale` (default 300 s) after the bytes
//!   were last known current; past that, a `miss`. The ETag is derived from the fingerprint,
//!   so a matching `If-None-Match` is a 304 that costs one revision query and no body. If the
//!   revision query fails, the stored bytes are served `stale` within that same window
//!   (stale-on-error, counted in `revision_failures`); with none, the handler answers and
//!   nothing is stored.
//! - **Sections** ([`ResponseCache::sections`], answered by [`SectionedCache::respond`]): a
//!   JSON object built from named sections, each with its own revision; when only
//!   [inline](ResponseCacheBuilder::inline_section) sections changed, only they are rebuilt
//!   and merged in the request (`section`). A failing section revision serves the whole
//!   stored object `stale`, as in revision mode.
//!
//! # Read-your-writes
//!
//! A change the cache learns of in two ways is treated in two ways:
//!
//! - **Through an explicit invalidation** ([`invalidate`](ResponseCache::invalidate),
//!   [`invalidates`](ResponseCache::invalidates), `#[etag_cached(invalidates = …)]`, a
//!   viewset's writes): a write this app made, whose client may read it back at once. An
//!   entry built before it is never served as it is, stale or not: the next read of the
//!   invalidated scope rebuilds it before answering, like a miss (one build; concurrent
//!   readers wait for it, bounded by [`lock_timeout`](ResponseCacheBuilder::lock_timeout)).
//!   For a sectioned cache the invalidated section is rebuilt, inline or not, with any
//!   changed inline section; a non-inline section whose revision merely changed keeps its
//!   bytes in that answer and is refreshed in the background after it. If the rebuild fails,
//!   the old bytes stand in for it within the stale window (stale-on-error). With a shared tier
//!   the invalidation reaches every instance before the write is answered, so this holds
//!   wherever the client's next read lands.
//! - **Through the revision functions only** (data changed by another process, a cron job,
//!   another app): stale-while-revalidate as above, the old bytes at once while one refresh
//!   runs.
//!
//! A TTL cache never serves an entry built before an invalidation either: it is a miss.
//!
//! What happened to a request is a [`CacheStatus`] (read it with [`CacheStatus::of`]). Every
//! answer the cache handles carries it as a `Cache-Status` member (RFC 9211), appended after
//! the members of any cache nearer the origin: `actix-conditional; hit; ttl=12`,
//! `…; fwd=miss; fwd-status=200; stored`, `…; hit; detail=stale`, `…; fwd=miss;
//! fwd-status=200; collapsed` (see [`CacheStatus::cache_status`] for every case; the cache key
//! only with [`cache_status_key`](ResponseCacheBuilder::cache_status_key)). `X-Cache` (`hit`,
//! `hit-revision`, `section`, `stale`, `miss`, `refresh`, `coalesced`, `bypass`) is an opt-in
//! ([`x_cache`](ResponseCacheBuilder::x_cache)) for dashboards built on it.
//!
//! Served entries carry `Age` (RFC 9111 §5.1): seconds since the bytes were built or, in
//! revision mode, last verified current (`0` on a `hit-revision`). **No answer arrives
//! stale by its own headers**: the lifetimes it declares (`max-age`, `s-maxage`,
//! `CDN-Cache-Control`, `Surrogate-Control`) are raised to cover its `Age`, up to what is left
//! of the entry's freshness here, and stale answers declare a lifetime equal to their `Age`
//! plus `stale-while-revalidate` for the stale window left here (RFC 5861 §3), so caches
//! after this one neither store them with a negative TTL nor count freshness twice. The rule
//! in full is in the `lifetime` module's source. Revision-mode entries carry `X-Revision`.
//!
//! # Single-flight and its outcomes
//!
//! Concurrent misses for one key, on any worker, run the handler once; the others wait. The
//! build runs as its own task, so a client that disconnects does not cancel it for the
//! others. What a waiter gets, as pingora's cache lock has it (each counted in
//! [`CacheStats`]):
//!
//! - **the build's response** (`coalesced`): a stored 200, or an error (5xx) that is handed to
//!   every waiter and never stored; a panicking build answers its own request and every
//!   waiter with a 500 at once (nobody retries in series behind it);
//! - **timeout** (`lock_timeouts`): the wait is bounded by
//!   [`lock_timeout`](ResponseCacheBuilder::lock_timeout) once per request, however often it
//!   joins; then it builds for itself without storing, like nginx's
//!   `proxy_cache_lock_timeout`;
//! - **pass** (`lock_passes`): the build was not shareable (`Set-Cookie`, `no-store`, a 404,
//!   a streamed body, …): every waiter fetches on its own at once, and the key is remembered
//!   for [`hit_for_miss`](ResponseCacheBuilder::hit_for_miss) so later requests skip the lock
//!   (Varnish's hit-for-pass);
//! - **dangling leader** (`lock_dangling`): a build dropped unfinished (its runtime stopped)
//!   wakes the waiters, and exactly one of them takes over;
//! - **transient failure** (`lock_transient`): a build answered `408` or `429`, which concern
//!   the leader's own request, not the resource: the waiters are not handed it; one of them
//!   builds again.
//!
//! With a shared tier the same happens across instances, through build leases.
//!
//! # Shared tiers
//!
//! A cache lives in its process's memory. With Redis (`ResponseCacheBuilder::redis`, feature
//! `redis`) or an [`InProcessTier`] it also shares entries, invalidations and builds with the
//! caches of the same name elsewhere; the engine sees either through one trait, and the
//! invalidation counters of a cache are one object both keep in step.
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
//! # Keys, cache busting and the byte budget
//!
//! By default every distinct query string is an entry of its own: `?a=1&b=2` and `?b=2&a=1`
//! are two, and random ones (`?_=1`, `?_=2`, …) make every request a miss, a full rebuild and
//! a new entry that pushes useful ones out. Two builder options shape the query part of the
//! key (the shared tier, Redis or in-process, is keyed by the same key):
//!
//! - [`normalize_query`](ResponseCacheBuilder::normalize_query) puts it in canonical form
//!   (sorted by name, one encoding), merging spellings of one request;
//! - [`query_keys`](ResponseCacheBuilder::query_keys) keeps only the parameters it lists,
//!   normalised: the defence against cache busting, as Varnish's `std.querysort` with an
//!   allow-list `regsub` is. The other parameters stay in the request the handler sees, so
//!   the handler must ignore them (extract a struct with only the listed fields).
//!
//! Whatever gets in, memory stays within [`max_bytes`](ResponseCacheBuilder::max_bytes): an
//! entry weighs its key, body, header lines and revision plus a per-entry and per-header
//! overhead measured with a counting allocator (moka's bookkeeping, the header table), a
//! hit-for-pass marker its key plus that overhead, and the `Vary` names learnt per URL take
//! a sixteenth of the budget. A flood of unique query strings against a 16 MiB cache keeps
//! the server's RSS under 48 MiB (`tests/memory_budget.rs`).
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

mod builder;
mod clock;
mod downstream;
mod engine;
mod entry;
mod flight;
mod generations;
mod handler;
mod in_process;
mod key;
mod lifetime;
mod middleware;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;
mod registry;
mod sections;
mod stats;
mod status;
mod storable;
mod store;
mod strategy;
mod tier;

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, Responder};

pub use self::builder::{
    ResponseCacheBuilder, RevisionCacheBuilder, SectionsCacheBuilder, TtlCacheBuilder, mode,
};
pub use self::clock::{Clock, ManualClock, SystemClock};
pub use self::in_process::{
    DEFAULT_IN_PROCESS_LEASE_TTL, DEFAULT_IN_PROCESS_MAX_BYTES, InProcessTier,
};
pub use self::middleware::{InvalidateOnSuccess, ResponseCacheMiddleware};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::redis::{RedisBackend, RedisBackendBuilder, RedisBackendError, RedisTopology};
pub use self::registry::{invalidate_named, named, named_or_register};
pub use self::sections::{Section, SectionedCache};
pub use self::stats::CacheStats;
pub use self::status::{
    CACHE_STATUS, CACHE_STATUS_NAME, CacheStatus, PassReason, X_CACHE, X_REVISION,
};
pub use self::tier::Invalidation;

use self::engine::{Engine, Refresher};

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

/// Which part of a cache to invalidate: all of it, or one section.
///
/// (Named `Scope` before 0.2; that name is kept as a deprecated alias. It clashed with
/// `actix_web::Scope` under glob imports.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheScope {
    /// Every entry (for a sectioned cache, every section).
    All,
    /// One section of a sectioned cache; for other caches the same as [`All`](Self::All).
    Section(Cow<'static, str>),
}

/// The former name of [`CacheScope`].
#[deprecated(
    since = "0.2.0",
    note = "renamed `CacheScope`: `Scope` clashed with `actix_web::Scope`"
)]
pub type Scope = CacheScope;

impl CacheScope {
    /// One section by name.
    pub fn section(name: impl Into<Cow<'static, str>>) -> Self {
        Self::Section(name.into())
    }
}

/// A server-side response cache; see the [module docs](self). Cloning is cheap and shares the
/// cache.
#[derive(Clone)]
pub struct ResponseCache {
    engine: Arc<Engine>,
}

impl fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseCache")
            .field("name", &self.engine.name())
            .field("entries", &self.engine.store().entry_count())
            .finish_non_exhaustive()
    }
}

impl ResponseCache {
    fn from_engine(engine: Engine) -> Self {
        Self {
            engine: Arc::new(engine),
        }
    }

    pub(crate) fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The cache's name (the `cache` label of its metrics).
    pub fn name(&self) -> &str {
        self.engine.name()
    }

    /// A copy of the cache's counters.
    pub fn stats(&self) -> CacheStats {
        self.engine.stats().snapshot()
    }

    /// Bytes the stored entries weigh against the budget (after pending housekeeping).
    pub fn weighted_bytes(&self) -> u64 {
        self.engine.store().weighted_bytes()
    }

    /// Answers `req` from the cache, running `build` on a miss or, in the background, to
    /// refresh a stale entry.
    ///
    /// `build` receives the request (a clone for background refreshes): take app data and
    /// path parameters from it. It may be called again long after this request ended. It
    /// should build the full response and leave preconditions to the cache: it sees the
    /// client's `If-None-Match` and the like, and a 304 or 412 it answers is not stored.
    /// (A [sectioned](SectionedCache) cache builds its responses from its sections and
    /// never calls `build`.)
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
        self.engine.respond(req, Some(&refresher)).await
    }

    /// Invalidates entries: for TTL and revision caches every entry; for a sectioned cache,
    /// every section or the one named. The next read of what it invalidated is rebuilt before
    /// it is answered (read-your-writes: one build that concurrent readers wait for, the old
    /// bytes served only if it fails; see the [module docs](self#read-your-writes)). Call it
    /// *after* the write it reflects has committed.
    ///
    /// It does not reach caches in front of the app: for that, use
    /// [`invalidate_in`](Self::invalidate_in) on the write's response (or
    /// [`invalidates`](Self::invalidates), or `#[etag_cached(invalidates = …)]`), which lists
    /// the invalidated group for an [`Edge`](crate::edge::Edge) to purge.
    ///
    /// It applies to this process at once. With Redis (`ResponseCacheBuilder::redis`) it is
    /// also counted there and broadcast to the other instances: await the returned
    /// [`Invalidation`] to answer the write only once they have been told (what
    /// [`invalidates`](Self::invalidates) and `#[etag_cached(invalidates = …)]` do), or drop
    /// it.
    pub fn invalidate(&self, scope: &CacheScope) -> Invalidation {
        self.engine.invalidate(match scope {
            CacheScope::All => None,
            CacheScope::Section(name) => Some(name),
        })
    }

    /// The cache group (RFC 9875) that invalidating `scope` reaches downstream: the cache's
    /// name, or `name:section` for one of its sections. A section this cache does not have
    /// invalidates all of it, and so names the whole cache.
    ///
    /// ```
    /// use actix_conditional::{ResponseCache, CacheScope};
    /// use std::time::Duration;
    ///
    /// let cache = ResponseCache::ttl("challenges", Duration::from_secs(30)).build();
    /// assert_eq!(cache.invalidation_group(&CacheScope::All), "challenges");
    /// assert_eq!(cache.invalidation_group(&CacheScope::section("weekly")), "challenges");
    /// ```
    pub fn invalidation_group(&self, scope: &CacheScope) -> String {
        match scope {
            CacheScope::Section(section) if self.engine.has_section(section) => {
                format!("{}:{section}", self.name())
            }
            CacheScope::All | CacheScope::Section(_) => self.name().to_owned(),
        }
    }

    /// [`invalidate`](Self::invalidate), and lists the scope's
    /// [`invalidation_group`](Self::invalidation_group) in `res`'s `Cache-Group-Invalidation`
    /// (RFC 9875 §3), so caches downstream, and an [`Edge`](crate::edge::Edge)'s purges, drop
    /// their copies too: the form to use in a write handler that invalidates by hand. Call it
    /// once the write has committed, on the response that reports it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use actix_conditional::edge;
    /// use actix_conditional::response_cache::{ResponseCache, CacheScope};
    /// use actix_web::HttpResponse;
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let cache = ResponseCache::ttl("board", Duration::from_secs(30)).build();
    /// let mut res = HttpResponse::NoContent().finish();
    /// cache.invalidate_in(&mut res, &CacheScope::All).await;
    /// assert_eq!(edge::invalidations(res.headers()), ["board"]);
    /// # });
    /// ```
    pub fn invalidate_in(&self, res: &mut HttpResponse, scope: &CacheScope) -> Invalidation {
        crate::edge::add_invalidations(res.headers_mut(), [self.invalidation_group(scope)]);
        self.invalidate(scope)
    }

    /// A middleware that calls [`invalidate`](Self::invalidate) after each 2xx response to an
    /// unsafe method (RFC 9110 §9.2.1: not GET, HEAD, OPTIONS or TRACE) of the routes it wraps
    /// (a mutation handler declaring what it invalidates), and adds the
    /// scope's [`invalidation_group`](Self::invalidation_group) to the response's
    /// `Cache-Group-Invalidation` so caches downstream drop their copies too.
    pub fn invalidates(&self, scope: CacheScope) -> InvalidateOnSuccess {
        InvalidateOnSuccess::new(self.clone(), scope)
    }
}
