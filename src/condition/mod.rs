//! Handler-level caching: Django's `@condition`, `@etag`, `@last_modified`, `@cache_control`
//! and `@never_cache`, as plain functions the `#[etag_cached]`, `#[cache_control]` and
//! `#[never_cache]` attributes expand to (and that you can call by hand).
//!
//! Validators computed *before* the handler answer 304 and 412 without running it: a revision
//! query instead of building and hashing the body, and lost-update protection for writes.
//!
//! ```
//! use actix_conditional::CachePolicy;
//! use actix_conditional::condition::{HandlerPolicy, RequestValidators};
//! use actix_web::{HttpRequest, HttpResponse, http::{StatusCode, header}, test, web, App};
//!
//! const POLICY: HandlerPolicy = HandlerPolicy::new(CachePolicy::revalidate(60));
//!
//! async fn report(req: HttpRequest) -> HttpResponse {
//!     let revision = "rev-7"; // e.g. MAX(updated_at) of the table: one cheap query
//!     let validators = RequestValidators::new().etag(Some(revision));
//!     POLICY.respond(&req, validators, async { HttpResponse::Ok().body("expensive report") }).await
//! }
//!
//! # actix_web::rt::System::new().block_on(async {
//! let app = test::init_service(App::new().route("/", web::get().to(report))).await;
//! let res = test::call_service(&app, test::TestRequest::get().to_request()).await;
//! assert_eq!(res.headers().get(header::ETAG).unwrap(), "\"rev-7\"");
//! assert_eq!(res.headers().get(header::CACHE_CONTROL).unwrap(), "max-age=60, must-revalidate");
//!
//! let req = test::TestRequest::get().insert_header((header::IF_NONE_MATCH, "\"rev-7\""));
//! let res = test::call_service(&app, req.to_request()).await;
//! assert_eq!(res.status(), StatusCode::NOT_MODIFIED); // the report was never built
//! # });
//! ```
//!
//! # Conditional writes
//!
//! A pre-check alone cannot stop lost updates: two writes with the same `If-Match` can both
//! pass it before either is applied. Once the check passes, the handler finds what it was
//! checked against in [`Validated::of`] and makes its write conditional on it
//! (`UPDATE … WHERE version = ?`); [`Validated::ensure_written`] turns a write that changed
//! nothing into the same 412 ([`PreconditionFailed`]). See [`Validated`] for an example.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::http::header::{self, EntityTag, HeaderValue, HttpDate};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, Responder};

use crate::cache_control::{
    CachePolicy, TargetedPolicies, add_never_cache_headers, cache_control_contains,
    for_credentials, patch_cache_control, patch_vary_headers,
};
use crate::not_modified::{not_modified, precondition_failed};
use crate::preconditions::{EntityTagRef, Precondition, Validators, evaluate_preconditions};

mod compare_and_set;
mod shape;

pub use self::compare_and_set::{PreconditionFailed, Validated, WriteCondition};
pub(crate) use self::shape::EarlyAnswer;
pub use self::shape::ResponseShape;

/// What mutations and errors get: `no-cache, no-store, must-revalidate`.
pub const MUTATION_POLICY: CachePolicy = CachePolicy::new().no_cache().no_store().must_revalidate();

/// The cache policy of one handler: `read` for successful GET/HEAD responses (and their 304s),
/// [`MUTATION_POLICY`] for everything else, merged into what the handler set with
/// [`patch_cache_control`]'s rules, plus `Vary` names. Reads may also get targeted fields
/// (`CDN-Cache-Control`, `Surrogate-Control`, RFC 9213); nothing else does.
///
/// ```
/// use actix_conditional::CachePolicy;
/// use actix_conditional::condition::HandlerPolicy;
/// use actix_web::{HttpResponse, http::header, test::TestRequest};
///
/// // Browsers revalidate every time; the CDN holds the answer ten minutes.
/// const POLICY: HandlerPolicy =
///     HandlerPolicy::new(CachePolicy::revalidate(0)).cdn(CachePolicy::new().max_age(600));
///
/// let mut res = HttpResponse::Ok().finish();
/// POLICY.apply(&TestRequest::get().to_http_request(), &mut res);
/// assert_eq!(res.headers().get(header::CACHE_CONTROL).unwrap(), "max-age=0, must-revalidate");
/// assert_eq!(res.headers().get(header::CDN_CACHE_CONTROL).unwrap(), "max-age=600");
///
/// let mut res = HttpResponse::Ok().finish();
/// POLICY.apply(&TestRequest::post().to_http_request(), &mut res);
/// assert_eq!(res.headers().get(header::CACHE_CONTROL).unwrap(), "no-cache, no-store, must-revalidate");
/// assert!(!res.headers().contains_key(header::CDN_CACHE_CONTROL));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandlerPolicy {
    read: CachePolicy,
    targeted: TargetedPolicies,
    vary: &'static [&'static str],
    groups: &'static [&'static str],
}

impl HandlerPolicy {
    /// A policy whose reads get `read`.
    pub const fn new(read: CachePolicy) -> Self {
        Self {
            read,
            targeted: TargetedPolicies::new(),
            vary: &[],
            groups: &[],
        }
    }

    /// Cache groups (RFC 9875): reads list them in `Cache-Groups`; a 2xx answer to an unsafe
    /// method lists them in `Cache-Group-Invalidation`, so caches downstream drop what they
    /// stored under them (see [`edge`](crate::edge)).
    #[must_use]
    pub const fn groups(self, groups: &'static [&'static str]) -> Self {
        Self { groups, ..self }
    }

    /// Reads also get `CDN-Cache-Control` with `policy` (RFC 9213 §3), see [`TargetedPolicies`].
    #[must_use]
    pub const fn cdn(self, policy: CachePolicy) -> Self {
        Self {
            targeted: self.targeted.cdn(policy),
            ..self
        }
    }

    /// Reads also get `Surrogate-Control` with `policy`, see [`TargetedPolicies`].
    #[must_use]
    pub const fn surrogate(self, policy: CachePolicy) -> Self {
        Self {
            targeted: self.targeted.surrogate(policy),
            ..self
        }
    }

    /// Reads also get the targeted fields of `targeted` (replacing any set before).
    #[must_use]
    pub const fn targeted(self, targeted: TargetedPolicies) -> Self {
        Self { targeted, ..self }
    }

    /// Adds `Vary` names (merged with [`patch_vary_headers`]) to every response.
    #[must_use]
    pub const fn vary(self, names: &'static [&'static str]) -> Self {
        Self {
            vary: names,
            ..self
        }
    }

    /// The policy for reads.
    pub const fn read(&self) -> CachePolicy {
        self.read
    }

    /// Evaluates `validators` before the handler, then runs it only if needed.
    ///
    /// 1. If the request's preconditions decide (RFC 9110 §13.2.2): a 304 for GET/HEAD, a 412
    ///    otherwise, and `handler` is dropped unpolled, so nothing is computed or written.
    /// 2. Otherwise `handler` runs, with what was checked in the request's extensions
    ///    ([`Validated::of`]: a write makes itself conditional on it, see
    ///    [conditional writes](self#conditional-writes)); on GET/HEAD its response gets the
    ///    validators as `ETag` and `Last-Modified` unless it set its own (Django's
    ///    `@condition`), so [`ConditionalGet`](crate::ConditionalGet) will not hash its body.
    /// 3. Either way the cache policy is applied ([`apply`](Self::apply)).
    pub async fn respond<Fut, R>(
        &self,
        req: &HttpRequest,
        validators: RequestValidators,
        handler: Fut,
    ) -> HttpResponse
    where
        Fut: Future<Output = R>,
        R: Responder,
    {
        self.respond_shaped(req, validators, None, handler).await
    }

    /// [`respond`](Self::respond), learning from the handler's 200s how an outer `Compress`
    /// treats them ([`ResponseShape`]), so that a 304 or 412 answered before the handler
    /// carries the `ETag` form and `Vary` its 200 would (RFC 9110 §15.4.5). `#[etag_cached]`
    /// calls this with one `ResponseShape` per handler.
    pub async fn respond_learning<Fut, R>(
        &self,
        req: &HttpRequest,
        validators: RequestValidators,
        shape: &ResponseShape,
        handler: Fut,
    ) -> HttpResponse
    where
        Fut: Future<Output = R>,
        R: Responder,
    {
        self.respond_shaped(req, validators, Some(shape), handler)
            .await
    }

    async fn respond_shaped<Fut, R>(
        &self,
        req: &HttpRequest,
        validators: RequestValidators,
        shape: Option<&ResponseShape>,
        handler: Fut,
    ) -> HttpResponse
    where
        Fut: Future<Output = R>,
        R: Responder,
    {
        let mut res = match validators.check(req) {
            Some(mut early) => {
                let hint = shape.map_or(EarlyAnswer::UNKNOWN, ResponseShape::hint);
                early.extensions_mut().insert(hint);
                early
            }
            None => {
                validators.validated(req).store_in(req);
                let mut res = handler.await.respond_to(req).map_into_boxed_body();
                validators.set_on(req, &mut res);
                if let Some(shape) = shape
                    && matches!(*req.method(), Method::GET | Method::HEAD)
                {
                    shape.record(res.status(), res.headers());
                }
                res
            }
        };
        self.apply(req, &mut res);
        res
    }

    /// Applies the policy to a finished response: `read` for GET/HEAD answered 2xx or 304,
    /// [`MUTATION_POLICY`] for every other method and status, then the `Vary` names, then the
    /// [`groups`](Self::groups).
    ///
    /// A read answered to a request with `Authorization` also gets `private`, unless `read`
    /// is explicitly `public` (RFC 9111 §3.5: see [`with_cache_control`], which does the same).
    ///
    /// Reads also get the targeted fields (`private` too when their final `Cache-Control` is,
    /// whoever set it, see
    /// [`TargetedPolicies::patch`]); other answers get none, so a CDN that reads
    /// `CDN-Cache-Control` instead of `Cache-Control` sees no lifetime for them.
    pub fn apply(&self, req: &HttpRequest, res: &mut HttpResponse) {
        let status = res.status();
        let is_read = matches!(*req.method(), Method::GET | Method::HEAD)
            && (status.is_success() || status == StatusCode::NOT_MODIFIED);
        let policy = if is_read {
            for_credentials(self.read, req)
        } else {
            MUTATION_POLICY
        };
        patch_cache_control(res.headers_mut(), &policy);
        if is_read {
            let private = cache_control_contains(res.headers(), "private");
            self.targeted.patch(res.headers_mut(), private);
        }
        if !self.vary.is_empty() {
            patch_vary_headers(res.headers_mut(), self.vary);
        }
        if !self.groups.is_empty() {
            if is_read {
                crate::edge::add_groups(res.headers_mut(), self.groups);
            } else if !req.method().is_safe() && status.is_success() {
                // RFC 9875 §3: only an unsafe method's answer invalidates.
                crate::edge::add_invalidations(res.headers_mut(), self.groups);
            }
        }
    }
}

/// Validators known before the handler runs: Django's `etag_func` and `last_modified_func`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestValidators {
    etag: Option<EntityTag>,
    last_modified: Option<SystemTime>,
}

impl RequestValidators {
    /// No validators yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current entity-tag, if the resource exists.
    #[must_use]
    pub fn etag(mut self, etag: Option<impl IntoETag>) -> Self {
        self.etag = etag.and_then(IntoETag::into_etag);
        self
    }

    /// The current modification time, if known (compared in whole seconds).
    #[must_use]
    pub fn last_modified(mut self, last_modified: Option<impl IntoLastModified>) -> Self {
        self.last_modified = last_modified.map(IntoLastModified::into_last_modified);
        self
    }

    /// The early answer, if the preconditions decide: a 304 carrying the validators, or an
    /// empty 412, which for GET and HEAD carries them too (Django's `@condition` sets `ETag`
    /// and `Last-Modified` on every GET/HEAD answer, 412 included). `None` means "run the
    /// handler".
    ///
    /// The resource exists when a validator is known (Django's rule for `*`). Methods that
    /// ignore preconditions (OPTIONS, CONNECT, TRACE) always get `None`.
    pub fn check(&self, req: &HttpRequest) -> Option<HttpResponse> {
        let etag = self.etag.as_ref().map(EntityTagRef::from);
        let validators = Validators::new(etag, self.last_modified);
        match evaluate_preconditions(req.head(), &validators) {
            Precondition::Proceed => None,
            Precondition::NotModified => {
                tracing::debug!(path = req.path(), "condition: 304 before the handler");
                let mut res = HttpResponse::Ok().finish();
                self.set_on(req, &mut res);
                Some(not_modified(res).map_into_boxed_body())
            }
            Precondition::PreconditionFailed => {
                tracing::debug!(path = req.path(), method = %req.method(), "condition: 412 before the handler");
                let mut res = precondition_failed();
                self.set_on(req, &mut res);
                Some(res)
            }
        }
    }

    /// What a handler gets once [`check`](Self::check) let `req` through: these validators and
    /// the condition its write must still meet ([`Validated`]). [`HandlerPolicy::respond`]
    /// stores it in the request for you.
    pub fn validated(&self, req: &HttpRequest) -> Validated {
        Validated::new(req, self.etag.as_ref(), self.last_modified)
    }

    /// Sets `ETag` and `Last-Modified` on a GET/HEAD response that has none of its own.
    pub fn set_on(&self, req: &HttpRequest, res: &mut HttpResponse) {
        if !matches!(*req.method(), Method::GET | Method::HEAD) {
            return;
        }
        let headers = res.headers_mut();
        if let Some(etag) = &self.etag
            && !headers.contains_key(header::ETAG)
        {
            headers.insert(header::ETAG, EntityTagRef::from(etag).to_header_value());
        }
        // httpdate cannot format years past 9999 (it panics): such a time is not sent.
        if let Some(modified) = self.last_modified
            && modified < UNIX_EPOCH + Duration::from_secs(253_402_300_799)
            && !headers.contains_key(header::LAST_MODIFIED)
            && let Ok(value) = HeaderValue::from_str(&HttpDate::from(modified).to_string())
        {
            headers.insert(header::LAST_MODIFIED, value);
        }
    }
}

/// A value usable as an entity-tag validator.
pub trait IntoETag {
    /// The tag, or `None` if the value cannot be one (it is then ignored, never a panic).
    fn into_etag(self) -> Option<EntityTag>;
}

impl IntoETag for EntityTag {
    fn into_etag(self) -> Option<EntityTag> {
        Some(self)
    }
}

impl IntoETag for &str {
    /// Django's `quote_etag`: a bare token `rev-7` becomes `"rev-7"`; a value already quoted
    /// (`"rev-7"` or `W/"rev-7"`) is taken as it is. Bytes a tag cannot hold give `None`.
    fn into_etag(self) -> Option<EntityTag> {
        if let Some(tag) = EntityTagRef::parse(self.as_bytes()) {
            let opaque = std::str::from_utf8(tag.opaque()).ok()?.to_owned();
            return Some(EntityTag::new(tag.is_weak(), opaque));
        }
        EntityTagRef::new(false, self.as_bytes())?;
        Some(EntityTag::new_strong(self.to_owned()))
    }
}

impl IntoETag for String {
    fn into_etag(self) -> Option<EntityTag> {
        self.as_str().into_etag()
    }
}

/// A value usable as a modification-time validator.
pub trait IntoLastModified {
    /// The time; compared with request dates in whole seconds.
    fn into_last_modified(self) -> SystemTime;
}

impl IntoLastModified for SystemTime {
    fn into_last_modified(self) -> SystemTime {
        self
    }
}

impl IntoLastModified for HttpDate {
    fn into_last_modified(self) -> SystemTime {
        self.into()
    }
}

/// Django's `@cache_control(...)`: runs the handler, then merges `policy` into its
/// `Cache-Control` with [`patch_cache_control`].
pub async fn with_cache_control<Fut, R>(
    req: &HttpRequest,
    policy: CachePolicy,
    handler: Fut,
) -> HttpResponse
where
    Fut: Future<Output = R>,
    R: Responder,
{
    with_cache_control_targeted(req, policy, TargetedPolicies::new(), handler).await
}

/// [`with_cache_control`], then `targeted` merged into the targeted fields (RFC 9213), on
/// every answer as `Cache-Control` is; `private` too when the final `Cache-Control` is (see
/// [`TargetedPolicies::patch`]).
pub async fn with_cache_control_targeted<Fut, R>(
    req: &HttpRequest,
    policy: CachePolicy,
    targeted: TargetedPolicies,
    handler: Fut,
) -> HttpResponse
where
    Fut: Future<Output = R>,
    R: Responder,
{
    let mut res = handler.await.respond_to(req).map_into_boxed_body();
    let policy = for_credentials(policy, req);
    patch_cache_control(res.headers_mut(), &policy);
    let private = cache_control_contains(res.headers(), "private");
    targeted.patch(res.headers_mut(), private);
    res
}

/// Django's `@never_cache`: runs the handler, then [`add_never_cache_headers`].
pub async fn with_never_cache<Fut, R>(req: &HttpRequest, handler: Fut) -> HttpResponse
where
    Fut: Future<Output = R>,
    R: Responder,
{
    let mut res = handler.await.respond_to(req).map_into_boxed_body();
    add_never_cache_headers(res.headers_mut());
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_tokens_are_quoted_like_djangos_quote_etag() {
        assert_eq!(
            "rev-7".into_etag(),
            Some(EntityTag::new_strong("rev-7".into()))
        );
        assert_eq!(
            "\"rev-7\"".into_etag(),
            Some(EntityTag::new_strong("rev-7".into()))
        );
        assert_eq!("W/\"r\"".into_etag(), Some(EntityTag::new_weak("r".into())));
    }

    #[test]
    fn invalid_tags_are_ignored_not_panicked_on() {
        assert_eq!("a b".into_etag(), None);
        assert_eq!("a\"b".into_etag(), None);
        assert_eq!(String::from("\u{7f}").into_etag(), None);
    }
}
