//! Support for macro expansions; not a public API.
//!
//! `Validator(f(&req)).resolve().await` works whether `f` is an `async fn` returning
//! `Option<V>` or a plain `fn` returning `Option<V>`: method lookup tries the by-value impl
//! (`Validator<F: Future>`) before the by-reference one (`&Validator<Option<V>>`), so the
//! macro needs no hint about which kind of function it was given ("autoref specialization").

use std::future::{Future, Ready, ready};

/// The value a validator function returned: a future or an `Option`.
#[derive(Debug)]
pub struct Validator<T>(pub T);

/// Picked when the validator function was `async`.
pub trait ResolveAsync {
    /// The future's output.
    type Output;
    /// The future to await.
    type Future: Future<Output = Self::Output>;
    /// Hands the future back.
    fn resolve(self) -> Self::Future;
}

impl<F: Future> ResolveAsync for Validator<F> {
    type Output = F::Output;
    type Future = F;
    fn resolve(self) -> F {
        self.0
    }
}

/// Picked when the validator function was synchronous.
pub trait ResolveSync {
    /// The validator.
    type Output;
    /// Wraps it in a ready future.
    fn resolve(self) -> Ready<Self::Output>;
}

impl<V: Clone> ResolveSync for &Validator<Option<V>> {
    type Output = Option<V>;
    fn resolve(self) -> Ready<Option<V>> {
        ready(self.0.clone())
    }
}

/// `#[etag_cached(invalidates = "name[:section]")]`: invalidate after a 2xx answer only, and
/// (with Redis) answer once the other instances have been told; the answer names the group
/// (`name`, or `name:section`) in `Cache-Group-Invalidation` for caches downstream (RFC 9875
/// §3).
pub async fn invalidate_on_success(
    res: &mut actix_web::HttpResponse,
    name: &str,
    section: Option<&'static str>,
) {
    if res.status().is_success() {
        crate::response_cache::invalidate_named(name, section).await;
        let scope = section.map_or(crate::Scope::All, crate::Scope::section);
        let group = match crate::response_cache::named(name) {
            Some(cache) => cache.invalidation_group(&scope),
            // Nothing registered here (logged by `invalidate_named`): what was declared.
            None => section.map_or_else(|| name.to_owned(), |section| format!("{name}:{section}")),
        };
        crate::edge::add_invalidations(res.headers_mut(), [group]);
    }
}

/// `#[etag_cached(cache = "name")]` without `ttl` and no cache registered under `name`: a
/// configuration error, answered 500 and logged, rather than silently serving uncached.
pub fn missing_cache(name: &str) -> actix_web::HttpResponse {
    tracing::error!(
        cache = name,
        "#[etag_cached(cache = ...)]: no response cache registered under this name; call ResponseCache::register() before serving"
    );
    actix_web::HttpResponse::InternalServerError().finish()
}

#[cfg(test)]
mod tests {
    use super::{ResolveAsync as _, ResolveSync as _, Validator};

    fn sync_tag() -> Option<&'static str> {
        Some("v1")
    }

    async fn async_tag() -> Option<&'static str> {
        Some("v2")
    }

    #[actix_rt::test]
    async fn resolves_sync_and_async_validators() {
        assert_eq!(Validator(sync_tag()).resolve().await, Some("v1"));
        assert_eq!(Validator(async_tag()).resolve().await, Some("v2"));
    }
}
