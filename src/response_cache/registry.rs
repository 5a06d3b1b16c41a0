//! Process-wide caches by name: what `#[etag_cached(cache = "…")]` and
//! `#[etag_cached(invalidates = "…")]` use.
//!
//! A registry entry lives in a `static`, outside every worker, so a cache found by name is
//! by construction one cache for all workers: the per-worker mistake cannot happen through it.
//!
//! ```
//! use std::time::Duration;
//! use actix_conditional::response_cache::{self, ResponseCache};
//!
//! let cache = ResponseCache::ttl("registry-doc", Duration::from_secs(30)).build();
//! cache.register();
//! assert_eq!(response_cache::named("registry-doc").unwrap().name(), "registry-doc");
//! assert!(response_cache::named("nope").is_none());
//! ```

use std::collections::HashMap;
use std::sync::{LazyLock, PoisonError, RwLock};

use super::{CacheScope, Invalidation, ResponseCache, TtlCacheBuilder};

static NAMED: LazyLock<RwLock<HashMap<String, ResponseCache>>> = LazyLock::new(RwLock::default);

impl ResponseCache {
    /// Makes this cache the one [`named`] returns for its name (replacing any earlier one),
    /// e.g. so handlers declaring `#[etag_cached(cache = "…")]` or `invalidates = "…"` find it.
    pub fn register(&self) -> &Self {
        let mut named = NAMED.write().unwrap_or_else(PoisonError::into_inner);
        if named.insert(self.name().to_owned(), self.clone()).is_some() {
            tracing::debug!(cache = %self.name(), "response cache: registered name replaced");
        }
        self
    }
}

/// The registered cache called `name`.
pub fn named(name: &str) -> Option<ResponseCache> {
    NAMED
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(name)
        .cloned()
}

/// The registered cache called `name`, building and registering `init()`'s cache first if
/// there is none (what `#[etag_cached(cache = "…", ttl = N)]` calls on its first request).
pub fn named_or_register(name: &str, init: impl FnOnce() -> TtlCacheBuilder) -> ResponseCache {
    if let Some(cache) = named(name) {
        return cache;
    }
    let mut named = NAMED.write().unwrap_or_else(PoisonError::into_inner);
    named
        .entry(name.to_owned())
        .or_insert_with(|| init().build_checked(false))
        .clone()
}

/// Invalidates the registered cache `name` (one `section`, or all of it); logs a warning if
/// there is no such cache. Await the result to wait for the broadcast to other instances
/// (see [`ResponseCache::invalidate`]).
pub fn invalidate_named(name: &str, section: Option<&'static str>) -> Invalidation {
    match named(name) {
        Some(cache) => cache.invalidate(&match section {
            Some(section) => CacheScope::section(section),
            None => CacheScope::All,
        }),
        None => {
            tracing::warn!(
                cache = name,
                "response cache: nothing registered under this name to invalidate"
            );
            Invalidation::ready()
        }
    }
}
