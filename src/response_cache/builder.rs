//! One builder per mode (a type-state, as moka's builders are): settings every cache has are
//! on all of them; [`hasher`](ResponseCacheBuilder::hasher) exists only for TTL caches, and
//! [`section`](ResponseCacheBuilder::section) and
//! [`cache_control`](ResponseCacheBuilder::cache_control) only for sectioned ones, so misuse
//! does not compile:
//!
//! ```compile_fail
//! use std::time::Duration;
//! use actix_conditional::response_cache::{ResponseCache, Section};
//! # let section: Section = todo!();
//! // error[E0599]: no method named `section` found for `ResponseCacheBuilder<Ttl>`
//! ResponseCache::ttl("c", Duration::from_secs(30)).section(section);
//! ```

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use actix_web::HttpRequest;

use super::clock::{Clock, SystemClock};
use super::downstream::Downstream;
use super::engine::{Engine, Settings, TierFactory, UserKeyFn};
use super::key::QueryKey;
use super::sections::{RevisionFn, Section, SectionedCache};
use super::strategy::Strategy;
use super::{
    DEFAULT_HIT_FOR_MISS, DEFAULT_LOCK_TIMEOUT, DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRY_BYTES,
    DEFAULT_MAX_STALE, ResponseCache,
};
use crate::CachePolicy;
use crate::etag::ETagHasher;

/// The modes a [`ResponseCacheBuilder`] can be in.
pub mod mode {
    use super::{CachePolicy, ETagHasher, RevisionFn, Section};

    /// A TTL cache ([`ResponseCache::ttl`](super::ResponseCache::ttl)).
    #[derive(Debug)]
    pub struct Ttl {
        pub(super) ttl: std::time::Duration,
        pub(super) hasher: ETagHasher,
    }

    /// A revision-gated cache ([`ResponseCache::revision`](super::ResponseCache::revision)).
    pub struct Revision {
        pub(super) revision: RevisionFn,
    }

    impl std::fmt::Debug for Revision {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Revision").finish_non_exhaustive()
        }
    }

    /// A sectioned cache ([`ResponseCache::sections`](super::ResponseCache::sections)).
    #[derive(Debug)]
    pub struct Sections {
        pub(super) sections: Vec<Section>,
        pub(super) policy: CachePolicy,
    }
}

use mode::{Revision, Sections, Ttl};

/// Configures a [`ResponseCache`]; `M` is its [mode](mode).
#[must_use]
pub struct ResponseCacheBuilder<M> {
    name: String,
    mode: M,
    max_stale: Option<Duration>,
    max_bytes: u64,
    max_entry_bytes: usize,
    lock_timeout: Duration,
    hit_for_miss: Duration,
    clock: Arc<dyn Clock>,
    key_by: Option<UserKeyFn>,
    forced_refresh: bool,
    query_key: QueryKey,
    downstream: Downstream,
    tier: Option<TierFactory>,
    memory_copies: bool,
}

/// The builder of a TTL cache.
pub type TtlCacheBuilder = ResponseCacheBuilder<Ttl>;
/// The builder of a revision-gated cache.
pub type RevisionCacheBuilder = ResponseCacheBuilder<Revision>;
/// The builder of a sectioned cache.
pub type SectionsCacheBuilder = ResponseCacheBuilder<Sections>;

impl<M> fmt::Debug for ResponseCacheBuilder<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseCacheBuilder")
            .field("name", &self.name)
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

impl ResponseCache {
    /// A TTL cache: entries are fresh for `ttl`, then served stale while one refresh runs.
    pub fn ttl(name: impl Into<String>, ttl: Duration) -> TtlCacheBuilder {
        ResponseCacheBuilder::new(
            name.into(),
            Ttl {
                ttl,
                hasher: ETagHasher::default(),
            },
        )
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
    pub fn revision<F, Fut, E>(name: impl Into<String>, revision: F) -> RevisionCacheBuilder
    where
        F: Fn(HttpRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, E>> + 'static,
        E: Into<actix_web::Error> + 'static,
    {
        let revision: RevisionFn = Arc::new(move |req| {
            let fut = revision(req);
            Box::pin(async move { fut.await.map_err(Into::into) })
        });
        ResponseCacheBuilder::new(name.into(), Revision { revision })
    }

    /// A revision-gated cache whose response is a JSON object of named [`Section`]s; add them
    /// with [`section`](ResponseCacheBuilder::section) and
    /// [`inline_section`](ResponseCacheBuilder::inline_section), answer with
    /// [`SectionedCache::respond`].
    pub fn sections(name: impl Into<String>) -> SectionsCacheBuilder {
        ResponseCacheBuilder::new(
            name.into(),
            Sections {
                sections: Vec::new(),
                policy: CachePolicy::revalidate(0),
            },
        )
    }
}

impl<M> ResponseCacheBuilder<M> {
    fn new(name: String, mode: M) -> Self {
        Self {
            name,
            mode,
            max_stale: None,
            max_bytes: DEFAULT_MAX_BYTES,
            max_entry_bytes: DEFAULT_MAX_ENTRY_BYTES,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            hit_for_miss: DEFAULT_HIT_FOR_MISS,
            clock: Arc::new(SystemClock),
            key_by: None,
            forced_refresh: true,
            query_key: QueryKey::Verbatim,
            downstream: Downstream::default(),
            tier: None,
            memory_copies: true,
        }
    }

    /// Shares the cache with other instances through Redis: entries, invalidations and
    /// builds (see the [`redis`](super::redis) module). Give every instance the same cache
    /// name.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis(mut self, backend: &super::RedisBackend) -> Self {
        let backend = backend.clone();
        self.tier = Some(Box::new(move |generations, stats| {
            backend.tier(generations, stats)
        }));
        self
    }

    /// Shares the cache with other caches of this process through `tier`: entries,
    /// invalidations and builds, as Redis (`redis`, feature `redis`) shares them between instances. Give
    /// every cache the same name.
    pub fn shared_in_process(mut self, tier: &super::InProcessTier) -> Self {
        let tier = tier.clone();
        self.tier = Some(Box::new(move |generations, stats| {
            tier.bind(generations, stats)
        }));
        self
    }

    /// Whether a cache with a shared tier (Redis, [in-process](super::InProcessTier)) also keeps entries in this
    /// process's memory (default: yes). Off, every lookup asks Redis: for instances that must
    /// not hold copies, and to measure what a Redis hit costs. Without a shared tier the
    /// memory tier is the cache, and this setting is ignored.
    pub fn memory_tier(mut self, enabled: bool) -> Self {
        self.memory_copies = enabled;
        self
    }

    /// How long stale bytes may still be served: past the TTL (TTL mode), or after the bytes
    /// were last known current (revision modes). Default [`DEFAULT_MAX_STALE`].
    pub fn max_stale(mut self, max_stale: Duration) -> Self {
        self.max_stale = Some(max_stale);
        self
    }

    /// The byte budget of this instance's memory; least useful entries go first. Default
    /// [`DEFAULT_MAX_BYTES`]. An entry weighs its key, body, header lines and revision plus a
    /// measured per-entry and per-header overhead (about 1 KiB and 0.4 KiB: moka's
    /// bookkeeping, the header table), so a budget holds fewer small entries than
    /// bodies alone suggest, and memory stays near the budget under a flood of unique keys.
    /// A sixteenth of it holds the `Vary` names learnt per URL.
    pub fn max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Bodies larger than this are served but not stored. Default [`DEFAULT_MAX_ENTRY_BYTES`].
    pub fn max_entry_bytes(mut self, max_entry_bytes: usize) -> Self {
        self.max_entry_bytes = max_entry_bytes;
        self
    }

    /// How long a request waits for another's build before building without storing (as
    /// nginx's `proxy_cache_lock_timeout`). Default [`DEFAULT_LOCK_TIMEOUT`].
    pub fn lock_timeout(mut self, lock_timeout: Duration) -> Self {
        self.lock_timeout = lock_timeout;
        self
    }

    /// How long a key whose response was not shareable bypasses coalescing (hit-for-pass).
    /// Default [`DEFAULT_HIT_FOR_MISS`].
    pub fn hit_for_miss(mut self, hit_for_miss: Duration) -> Self {
        self.hit_for_miss = hit_for_miss;
        self
    }

    /// The time source; tests pass a [`ManualClock`](super::ManualClock).
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
    /// endpoint exposed to the public, turn it off. Turned off, `refresh=true` is an ordinary
    /// query parameter, part of the key (unless [`query_keys`](Self::query_keys) leaves it
    /// out).
    pub fn forced_refresh(mut self, enabled: bool) -> Self {
        self.forced_refresh = enabled;
        self
    }

    /// Puts the query string into the key in canonical form (default: as sent): pairs sorted
    /// by name, `+` and percent-encoding decoded and encoded one way, empty pairs dropped, so
    /// `?b=2&a=1`, `?a=1&b=2` and `?a=%31&b=2` are one entry, as they are one request to
    /// `web::Query`. Repeated names keep their values in the order sent (which of them a
    /// handler reads differs between frameworks, so `?p=1&p=2` and `?p=2&p=1` stay two keys).
    ///
    /// This merges spellings of one request; it does not stop cache busting. For that, see
    /// [`query_keys`](Self::query_keys), which always normalises (this setting does not turn
    /// that off).
    pub fn normalize_query(mut self, enabled: bool) -> Self {
        if !matches!(self.query_key, QueryKey::Only(_)) {
            self.query_key = if enabled {
                QueryKey::Normalized
            } else {
                QueryKey::Verbatim
            };
        }
        self
    }

    /// Only the query parameters named here make the key, in canonical form (as
    /// [`normalize_query`](Self::normalize_query)); any other parameter is left out of it
    /// (names are compared decoded, so `pa%67e` is `page`). An empty list leaves the whole
    /// query out.
    ///
    /// This is the defence against cache busting: by default every distinct query string is
    /// an entry of its own, so random ones (`?x=1`, `?x=2`, …) make every request a miss, a
    /// full rebuild and a new entry that pushes useful ones out of the budget. With an
    /// allow-list, `?page=2&utm_source=x&_=123` is a hit on `?page=2`. (Varnish does this
    /// with `std.querysort` and a `regsub` allow-list on `req.url`; CDNs call it "cache key:
    /// query string, include only".)
    ///
    /// **The handler must ignore every other parameter**: they are not stripped from the
    /// request it sees (in [`serve`](super::ResponseCache::serve) its extractors have run
    /// already), and a response that depends on one would be stored and served to requests
    /// without it. Extract the query into a struct with only the listed fields
    /// (`web::Query<Page>`; serde ignores unknown fields unless told to deny them) rather
    /// than reading `query_string()`. Values of listed parameters are still free, so the
    /// byte budget (which weighs every key) is what bounds memory under a flood.
    ///
    /// ```
    /// use std::time::Duration;
    /// use actix_conditional::response_cache::{CacheStatus, ResponseCache};
    /// use actix_web::{HttpResponse, test};
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let cache = ResponseCache::ttl("list", Duration::from_secs(30))
    ///     .query_keys(["page", "sort"])
    ///     .build();
    /// let get = |uri: &str| test::TestRequest::get().uri(uri).to_http_request();
    /// let build = |_| async { HttpResponse::Ok().body("page 2") };
    /// let res = cache.serve(&get("/items?sort=name&page=2"), build).await;
    /// assert_eq!(CacheStatus::of(&res).unwrap().label(), "miss");
    /// // Another order, an unlisted parameter: the same entry.
    /// let res = cache.serve(&get("/items?page=2&_=1717&sort=name"), build).await;
    /// assert_eq!(CacheStatus::of(&res).unwrap().label(), "hit");
    /// # });
    /// ```
    pub fn query_keys<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.query_key = QueryKey::only(names);
        self
    }

    /// Also send `X-Cache` (`hit`, `hit-revision`, `section`, `stale`, `miss`, `refresh`,
    /// `coalesced`, `bypass`: [`CacheStatus::label`](super::CacheStatus::label)) beside
    /// `Cache-Status`, for dashboards and scripts built on it (default: no).
    pub fn x_cache(mut self, enabled: bool) -> Self {
        self.downstream.x_cache = enabled;
        self
    }

    /// Put each request's cache key in its `Cache-Status` member (`key="…"`, RFC 9211 §2.7;
    /// default: no, since a key can reveal what it is made of, such as a user's id).
    pub fn cache_status_key(mut self, enabled: bool) -> Self {
        self.downstream.expose_key = enabled;
        self
    }

    /// How an answer this cache declined to share for the request's `Cookie` or
    /// `Authorization` is marked downstream when its `Cache-Control` is explicitly `public`:
    /// by default it is made `private` (caches after this one do not share it either); with
    /// `true` it keeps `public` and gets `Vary: Cookie` (or `Authorization`), so downstream
    /// caches share it only among requests with the same credentials.
    pub fn vary_credentials(mut self, enabled: bool) -> Self {
        self.downstream.vary_credentials = enabled;
        self
    }

    fn engine(self, strategy: Strategy, warn_on_worker: bool) -> Engine {
        if warn_on_worker
            && std::thread::current()
                .name()
                .is_some_and(|name| name.starts_with("actix-server worker"))
        {
            tracing::warn!(cache = %self.name,
                "response cache built on an actix worker thread: each worker gets its own cache; build it once before HttpServer::new and clone it in");
        }
        Engine::new(Settings {
            name: Arc::from(self.name.as_str()),
            strategy,
            max_stale: self.max_stale.unwrap_or(DEFAULT_MAX_STALE),
            max_bytes: self.max_bytes,
            max_entry_bytes: self.max_entry_bytes,
            lock_timeout: self.lock_timeout,
            hit_for_miss: self.hit_for_miss,
            clock: self.clock,
            key_by: self.key_by,
            forced_refresh: self.forced_refresh,
            query_key: self.query_key,
            downstream: self.downstream,
            tier: self.tier,
            memory_copies: self.memory_copies,
        })
    }
}

impl TtlCacheBuilder {
    /// The hash behind ETags of entries whose handler set none. Default XXH3-128.
    pub fn hasher(mut self, hasher: ETagHasher) -> Self {
        self.mode.hasher = hasher;
        self
    }

    /// Builds the cache. Call it once, outside `HttpServer::new`'s closure.
    pub fn build(self) -> ResponseCache {
        self.build_checked(true)
    }

    /// `warn_on_worker`: a cache built on a worker for the process-wide registry is shared by
    /// construction, so only direct builds warn.
    pub(crate) fn build_checked(self, warn_on_worker: bool) -> ResponseCache {
        let Ttl { ttl, hasher } = self.mode;
        let strategy = Strategy::Ttl { ttl, hasher };
        ResponseCache::from_engine(self.engine(strategy, warn_on_worker))
    }
}

impl RevisionCacheBuilder {
    /// Builds the cache. Call it once, outside `HttpServer::new`'s closure.
    pub fn build(self) -> ResponseCache {
        let strategy = Strategy::Revision(Arc::clone(&self.mode.revision));
        ResponseCache::from_engine(self.engine(strategy, true))
    }
}

impl SectionsCacheBuilder {
    /// Adds a section rebuilt in the background when its revision changes (the response is
    /// served stale meanwhile).
    pub fn section(mut self, section: Section) -> Self {
        self.mode.sections.push(section);
        self
    }

    /// Adds a section cheap enough to rebuild inside the request: when only inline sections
    /// changed, they are rebuilt and merged at once (`X-Cache: section`).
    pub fn inline_section(mut self, section: Section) -> Self {
        self.mode.sections.push(section.inline());
        self
    }

    /// `Cache-Control` of the responses. Default `max-age=0, must-revalidate`: clients
    /// revalidate every time, and the revision ETag makes that a cheap 304.
    pub fn cache_control(mut self, policy: CachePolicy) -> Self {
        self.mode.policy = policy;
        self
    }

    /// Builds the cache. Call it once, outside `HttpServer::new`'s closure.
    pub fn build(mut self) -> SectionedCache {
        let policy = self.mode.policy;
        let strategy = Strategy::Sections {
            sections: std::mem::take(&mut self.mode.sections),
            cache_control: policy.to_header_value(),
        };
        SectionedCache::new(
            ResponseCache::from_engine(self.engine(strategy, true)),
            policy,
        )
    }
}
