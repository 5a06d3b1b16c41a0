//! Support for macro expansions; not a public API.
//!
//! `Validator(f(&req)).resolve().await` works whether `f` is an `async fn` returning
//! `Option<V>` or a plain `fn` returning `Option<V>`: method lookup tries the by-value impl
//! (`Validator<F: Future>`) before the by-reference one (`&Validator<Option<V>>`), so the
//! macro needs no hint about which kind of function it was given ("autoref specialization").
//! Anything else falls through to `&mut Validator<T>` ([`ResolveInvalid`]), whose bound fails
//! with a message that says what a validator must return.

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

/// Picked last, when the validator function returned neither `Option<V>` nor a future: its
/// only job is a compile error that names the fix (the `&mut` autoref is tried after the other
/// two, and the bound is on the method, so it is checked only once this impl is chosen).
pub trait ResolveInvalid {
    /// What the validator function returned.
    type Returned;
    /// Never usable: `Returned` is not a validator's result.
    fn resolve(self) -> Ready<Option<&'static str>>
    where
        Self::Returned: ValidatorResult;
}

impl<T> ResolveInvalid for &mut Validator<T> {
    type Returned = T;
    fn resolve(self) -> Ready<Option<&'static str>>
    where
        T: ValidatorResult,
    {
        ready(None)
    }
}

/// What an `etag` or `last_modified` validator may return; nothing implements it, so a
/// validator returning anything else gets this message.
#[diagnostic::on_unimplemented(
    message = "a validator must return `Option<V>` or a future of it, not `{Self}`",
    label = "this validator's result",
    note = "`etag = f`: `fn f(req: &HttpRequest) -> Option<String>` (or `&str`, `EntityTag`), `async fn` too",
    note = "`last_modified = f`: `fn f(req: &HttpRequest) -> Option<SystemTime>` (or `HttpDate`), `async fn` too",
    note = "return `None` when the resource does not exist"
)]
pub trait ValidatorResult {}

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
        let scope = section.map_or(crate::CacheScope::All, crate::CacheScope::section);
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
///
/// Loud even without a `tracing` subscriber (a new app often has none): the first time per
/// name it is also written to stderr, and debug builds put the message in the 500's body.
pub fn missing_cache(name: &str) -> actix_web::HttpResponse {
    let message = format!(
        "#[etag_cached(cache = \"{name}\")]: no response cache is registered under this name; \
         build it once before HttpServer::new and call .register() on it (or give the attribute \
         a `ttl` so it builds its own)"
    );
    tracing::error!(cache = name, "{message}");
    report_once(name, &message);
    let mut res = actix_web::HttpResponse::InternalServerError();
    if cfg!(debug_assertions) {
        res.content_type("text/plain; charset=utf-8").body(message)
    } else {
        res.finish()
    }
}

/// Writes `message` to stderr the first time `key` is reported in this process. Bounded: past
/// a few hundred distinct keys, nothing more is remembered or written.
pub(crate) fn report_once(key: &str, message: &str) {
    use std::collections::HashSet;
    use std::io::Write as _;
    use std::sync::{Mutex, PoisonError};
    const MAX_KEYS: usize = 256;
    static REPORTED: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let mut reported = REPORTED.lock().unwrap_or_else(PoisonError::into_inner);
    let reported = reported.get_or_insert_with(HashSet::new);
    if reported.len() < MAX_KEYS && reported.insert(key.to_owned()) {
        let _ = writeln!(std::io::stderr(), "actix-conditional: {message}");
    }
}

/// An MD5 implementation: its name and its digest function.
pub type Md5Digest = (&'static str, fn(&[u8]) -> [u8; 16]);

/// For `benches/md5.rs`: the MD5 ETags use (`md5-asm` on x86) and the pure-Rust `md-5` it
/// replaces there, side by side.
pub fn md5_digests() -> [Md5Digest; 2] {
    [
        ("used", crate::md5_digest::md5),
        ("md-5", crate::md5_digest::portable),
    ]
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
