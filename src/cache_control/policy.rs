//! [`CachePolicy`]: the response directives we emit, rendered with their seconds.

use std::fmt;

use actix_web::HttpRequest;
use actix_web::http::header::{self, HeaderValue, InvalidHeaderValue, TryIntoHeaderValue};
use bytes::Bytes;

/// Largest delta-seconds value kept when parsing; bigger values saturate to it.
///
/// RFC 9111 §1.2.2: "If a cache receives a delta-seconds value greater than the greatest
/// integer it can represent, or if any of its subsequent calculations overflows, the cache
/// MUST consider the value to be 2147483648 (2^31) or the greatest positive integer it can
/// conveniently represent."
pub const DELTA_SECONDS_MAX: u32 = 1 << 31;

// Directive names, as generated (RFC 9111 §5.2.2, RFC 5861 §3-§4, RFC 8246 §2).
pub(super) const PUBLIC: &str = "public";
pub(super) const PRIVATE: &str = "private";
pub(super) const MAX_AGE: &str = "max-age";
pub(super) const S_MAXAGE: &str = "s-maxage";
pub(super) const NO_CACHE: &str = "no-cache";
pub(super) const NO_STORE: &str = "no-store";
pub(super) const MUST_REVALIDATE: &str = "must-revalidate";
pub(super) const PROXY_REVALIDATE: &str = "proxy-revalidate";
pub(super) const IMMUTABLE: &str = "immutable";
pub(super) const STALE_WHILE_REVALIDATE: &str = "stale-while-revalidate";
pub(super) const STALE_IF_ERROR: &str = "stale-if-error";

/// `public` or `private`: who may store the response (RFC 9111 §5.2.2.7, §5.2.2.9).
///
/// The two are mutually exclusive in a [`CachePolicy`]; setting one replaces the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Visibility {
    /// `public`: any cache may store the response, even where it otherwise could not
    /// (e.g. a response to a request with `Authorization`, RFC 9111 §3.5).
    Public,
    /// `private`: only the user's own (browser) cache may store the response; shared caches
    /// MUST NOT.
    Private,
}

/// A set of `Cache-Control` response directives, built with consuming `const` methods.
///
/// `CachePolicy` is a small `Copy` value. It is written to a response either as a whole header
/// (it implements [`TryIntoHeaderValue`], so `insert_header((CACHE_CONTROL, policy))` works), or
/// merged into whatever the handler already set with [`patch_cache_control`](super::patch_cache_control).
///
/// Directives render in one canonical order:
/// `public`/`private`, `max-age`, `s-maxage`, `no-cache`, `no-store`, `must-revalidate`,
/// `proxy-revalidate`, `immutable`, `stale-while-revalidate`, `stale-if-error`.
/// [`patch_cache_control`](super::patch_cache_control) appends new directives in that same order.
///
/// The builder does not reject contradictory combinations (`no-store` with `max-age`,
/// `must-revalidate` with `stale-while-revalidate`, RFC 9111 §4.2.4); it states what is sent.
/// Checking them is left to the callers that know the intent, such as the `#[etag_cached]`
/// macro.
///
/// # Examples
///
/// ```
/// use actix_conditional::cache_control::CachePolicy;
///
/// let assets = CachePolicy::new().public().max_age(31_536_000).immutable();
/// assert_eq!(assets.to_string(), "public, max-age=31536000, immutable");
///
/// let api = CachePolicy::revalidate(60).private();
/// assert_eq!(api.to_string(), "private, max-age=60, must-revalidate");
/// assert_eq!(api.max_age_secs(), Some(60));
///
/// assert_eq!(
///     CachePolicy::never().to_string(),
///     "private, max-age=0, no-cache, no-store, must-revalidate",
/// );
/// ```
///
/// # Why not actix's `CacheControl`
///
/// actix-web already has a typed [`CacheControl`](actix_web::http::header::CacheControl)
/// header, but as of actix-web 4.18 its [`CacheDirective`](actix_web::http::header::CacheDirective)
/// cannot carry this policy faithfully:
///
/// - it has no `immutable` (RFC 8246) variant;
/// - `stale-while-revalidate=N` and `stale-if-error=N` (RFC 5861) exist only as stringly-typed
///   `Extension(String, Option<String>)`, so their seconds are not typed, checked or comparable;
/// - names are matched case-sensitively, so `Max-Age=60` is read back as an extension;
/// - an out-of-range `max-age` (more than `u32::MAX`) is silently dropped instead of saturating
///   at 2^31 as RFC 9111 §1.2.2 requires, and a header with obs-text fails to parse entirely.
///
/// A fixed-order `Display` over a `Copy` struct is also cheaper than building a `Vec` of
/// directives for every response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CachePolicy {
    visibility: Option<Visibility>,
    max_age: Option<u32>,
    s_maxage: Option<u32>,
    no_cache: bool,
    no_store: bool,
    must_revalidate: bool,
    proxy_revalidate: bool,
    immutable: bool,
    stale_while_revalidate: Option<u32>,
    stale_if_error: Option<u32>,
}

impl CachePolicy {
    /// An empty policy: no directives. Renders as an empty string.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            visibility: None,
            max_age: None,
            s_maxage: None,
            no_cache: false,
            no_store: false,
            must_revalidate: false,
            proxy_revalidate: false,
            immutable: false,
            stale_while_revalidate: None,
            stale_if_error: None,
        }
    }

    /// `max-age=N, must-revalidate`: fresh for `max_age` seconds, then revalidate.
    ///
    /// This is what `#[etag_cached]` gives reads. `must-revalidate` also lets shared caches
    /// store responses to requests with `Authorization` (RFC 9111 §3.5): `HandlerPolicy` (and
    /// so `#[etag_cached]`) adds [`private`](Self::private) to reads answered to such
    /// requests; elsewhere, add it to authenticated or per-user endpoints yourself.
    #[must_use]
    pub const fn revalidate(max_age: u32) -> Self {
        Self::new().max_age(max_age).must_revalidate()
    }

    /// `max-age=0, no-cache, no-store, must-revalidate, private`: the directives of Django's
    /// `never_cache`.
    ///
    /// The policy renders them in canonical order (`private` first). To reproduce Django's
    /// header byte for byte, including its `Expires`, use [`add_never_cache_headers`](super::add_never_cache_headers).
    #[must_use]
    pub const fn never() -> Self {
        Self::new()
            .max_age(0)
            .no_cache()
            .no_store()
            .must_revalidate()
            .private()
    }

    /// `max-age=N`: the response is stale once its age exceeds `N` seconds (RFC 9111 §5.2.2.1).
    #[must_use]
    pub const fn max_age(mut self, seconds: u32) -> Self {
        self.max_age = Some(seconds);
        self
    }

    /// `s-maxage=N`: overrides `max-age` for shared caches and implies `proxy-revalidate` for
    /// them (RFC 9111 §5.2.2.10).
    #[must_use]
    pub const fn s_maxage(mut self, seconds: u32) -> Self {
        self.s_maxage = Some(seconds);
        self
    }

    /// `public`: any cache may store the response (RFC 9111 §5.2.2.9). Replaces `private`.
    #[must_use]
    pub const fn public(mut self) -> Self {
        self.visibility = Some(Visibility::Public);
        self
    }

    /// `private`: shared caches must not store the response (RFC 9111 §5.2.2.7).
    /// Replaces `public`.
    #[must_use]
    pub const fn private(mut self) -> Self {
        self.visibility = Some(Visibility::Private);
        self
    }

    /// `no-cache`: caches may store the response but must revalidate it before every reuse
    /// (RFC 9111 §5.2.2.4).
    #[must_use]
    pub const fn no_cache(mut self) -> Self {
        self.no_cache = true;
        self
    }

    /// `no-store`: no cache may store any part of the response (RFC 9111 §5.2.2.5).
    ///
    /// The `ConditionalGet` middleware does not hash bodies of `no-store` responses.
    #[must_use]
    pub const fn no_store(mut self) -> Self {
        self.no_store = true;
        self
    }

    /// `must-revalidate`: once stale, the response must not be reused without successful
    /// validation (RFC 9111 §5.2.2.2).
    #[must_use]
    pub const fn must_revalidate(mut self) -> Self {
        self.must_revalidate = true;
        self
    }

    /// `proxy-revalidate`: `must-revalidate` for shared caches only (RFC 9111 §5.2.2.8).
    #[must_use]
    pub const fn proxy_revalidate(mut self) -> Self {
        self.proxy_revalidate = true;
        self
    }

    /// `immutable`: while fresh, clients should not revalidate even on reload (RFC 8246 §2).
    ///
    /// Only for URLs whose content never changes (fingerprinted assets), never for API
    /// resources.
    #[must_use]
    pub const fn immutable(mut self) -> Self {
        self.immutable = true;
        self
    }

    /// `stale-while-revalidate=N`: after expiry a cache may serve the stale response for up to
    /// `N` seconds while it revalidates in the background (RFC 5861 §3).
    #[must_use]
    pub const fn stale_while_revalidate(mut self, seconds: u32) -> Self {
        self.stale_while_revalidate = Some(seconds);
        self
    }

    /// `stale-if-error=N`: if revalidation fails (5xx or unreachable), a cache may serve the
    /// stale response for up to `N` seconds past expiry (RFC 5861 §4).
    #[must_use]
    pub const fn stale_if_error(mut self, seconds: u32) -> Self {
        self.stale_if_error = Some(seconds);
        self
    }

    /// The `max-age` seconds, if set.
    #[must_use]
    pub const fn max_age_secs(&self) -> Option<u32> {
        self.max_age
    }

    /// The `s-maxage` seconds, if set.
    #[must_use]
    pub const fn s_maxage_secs(&self) -> Option<u32> {
        self.s_maxage
    }

    /// `public`, `private`, or neither.
    #[must_use]
    pub const fn visibility(&self) -> Option<Visibility> {
        self.visibility
    }

    /// Whether `public` is set.
    #[must_use]
    pub const fn is_public(&self) -> bool {
        matches!(self.visibility, Some(Visibility::Public))
    }

    /// Whether `private` is set.
    #[must_use]
    pub const fn is_private(&self) -> bool {
        matches!(self.visibility, Some(Visibility::Private))
    }

    /// Whether `no-cache` is set.
    #[must_use]
    pub const fn has_no_cache(&self) -> bool {
        self.no_cache
    }

    /// Whether `no-store` is set.
    #[must_use]
    pub const fn has_no_store(&self) -> bool {
        self.no_store
    }

    /// Whether `must-revalidate` is set.
    #[must_use]
    pub const fn has_must_revalidate(&self) -> bool {
        self.must_revalidate
    }

    /// Whether `proxy-revalidate` is set.
    #[must_use]
    pub const fn has_proxy_revalidate(&self) -> bool {
        self.proxy_revalidate
    }

    /// Whether `immutable` is set.
    #[must_use]
    pub const fn has_immutable(&self) -> bool {
        self.immutable
    }

    /// The `stale-while-revalidate` seconds, if set.
    #[must_use]
    pub const fn stale_while_revalidate_secs(&self) -> Option<u32> {
        self.stale_while_revalidate
    }

    /// The `stale-if-error` seconds, if set.
    #[must_use]
    pub const fn stale_if_error_secs(&self) -> Option<u32> {
        self.stale_if_error
    }

    /// Whether no directive is set.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        *self == Self::new()
    }

    /// The policy as a header value, e.g. `public, max-age=60`.
    #[must_use]
    pub fn to_header_value(&self) -> HeaderValue {
        // Only directive names, digits, "=", "," and " " are ever written.
        HeaderValue::from_maybe_shared(Bytes::from(self.to_string()))
            .expect("CachePolicy renders visible ASCII only")
    }

    /// The directives in canonical order, as `(name, seconds)`.
    pub(super) fn directives(&self) -> impl Iterator<Item = NewDirective> {
        let flag = |on: bool, name| on.then_some((name, None));
        let secs = |v: Option<u32>, name| v.map(|s| (name, Some(s)));
        [
            match self.visibility {
                Some(Visibility::Public) => Some((PUBLIC, None)),
                Some(Visibility::Private) => Some((PRIVATE, None)),
                None => None,
            },
            secs(self.max_age, MAX_AGE),
            secs(self.s_maxage, S_MAXAGE),
            flag(self.no_cache, NO_CACHE),
            flag(self.no_store, NO_STORE),
            flag(self.must_revalidate, MUST_REVALIDATE),
            flag(self.proxy_revalidate, PROXY_REVALIDATE),
            flag(self.immutable, IMMUTABLE),
            secs(self.stale_while_revalidate, STALE_WHILE_REVALIDATE),
            secs(self.stale_if_error, STALE_IF_ERROR),
        ]
        .into_iter()
        .flatten()
    }
}

impl fmt::Display for CachePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, secs)) in self.directives().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(name)?;
            if let Some(secs) = secs {
                write!(f, "={secs}")?;
            }
        }
        Ok(())
    }
}

/// Lets a policy be passed where actix takes a header value:
/// `HttpResponse::Ok().insert_header((CACHE_CONTROL, policy))`. Never fails; the error type is
/// the one actix's `(HeaderName, V)` header pairs require.
impl TryIntoHeaderValue for CachePolicy {
    type Error = InvalidHeaderValue;

    fn try_into_value(self) -> Result<HeaderValue, Self::Error> {
        Ok(self.to_header_value())
    }
}

/// `policy` for an answer to `req`: made `private` when the request carries `Authorization`
/// and `policy` is not explicitly `public`.
///
/// RFC 9111 §3.5: a shared cache may reuse a response to a request with `Authorization` for
/// *other* requests when the response carries `public`, `s-maxage` or `must-revalidate`. The
/// last two are set for other reasons (read policies carry `must-revalidate`), and proxies
/// such as nginx do not look at `Authorization` at all, so only an explicit `public` leaves
/// such an answer shareable.
pub(crate) fn for_credentials(policy: CachePolicy, req: &HttpRequest) -> CachePolicy {
    if !policy.is_public() && req.headers().contains_key(header::AUTHORIZATION) {
        policy.private()
    } else {
        policy
    }
}

/// A directive to merge: its name and, for delta-seconds directives, its argument.
pub(super) type NewDirective = (&'static str, Option<u32>);
