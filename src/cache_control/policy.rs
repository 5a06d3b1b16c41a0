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
    no_cache_fields: &'static [&'static str],
    private_fields: &'static [&'static str],
    extensions: &'static [(&'static str, Option<&'static str>)],
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
            no_cache_fields: &[],
            private_fields: &[],
            extensions: &[],
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

    /// `no-cache="Set-Cookie"`: caches may reuse the stored response without revalidating,
    /// but not these header fields of it (RFC 9111 §5.2.2.4, the qualified form). Each field
    /// becomes its own `no-cache="…"` directive, as Django's `patch_cache_control` writes
    /// them, and they accumulate with the ones a response already has; a bare
    /// [`no_cache`](Self::no_cache) replaces them all. Names that are not tokens are skipped.
    ///
    /// ```
    /// use actix_conditional::cache_control::CachePolicy;
    ///
    /// let policy = CachePolicy::new().max_age(60).no_cache_fields(&["Set-Cookie"]);
    /// assert_eq!(policy.to_string(), r#"max-age=60, no-cache="Set-Cookie""#);
    /// ```
    #[must_use]
    pub const fn no_cache_fields(mut self, fields: &'static [&'static str]) -> Self {
        self.no_cache_fields = fields;
        self
    }

    /// `private="Authorization-Info"`: shared caches may store the response but not these
    /// header fields of it (RFC 9111 §5.2.2.7, the qualified form), rendered as one
    /// quoted list. Unlike a bare [`private`](Self::private), it leaves the response shareable
    /// and may stand beside `public`. A bare `private` wins over it.
    #[must_use]
    pub const fn private_fields(mut self, fields: &'static [&'static str]) -> Self {
        self.private_fields = fields;
        self
    }

    /// Extension directives (RFC 9111 §5.2.3), each `(name, argument)`, rendered after the
    /// others as `name` or `name=argument`: Django's `@cache_control(custom=456)`. The
    /// argument is written as given (a token, or a quoted-string with its quotes); a name
    /// that is not a token, or an argument that is neither, is skipped (never sent broken).
    ///
    /// ```
    /// use actix_conditional::cache_control::CachePolicy;
    ///
    /// let policy = CachePolicy::new()
    ///     .max_age(60)
    ///     .extensions(&[("custom", Some("456")), ("community", Some("\"UCI\"")), ("x-flag", None)]);
    /// assert_eq!(policy.to_string(), r#"max-age=60, custom=456, community="UCI", x-flag"#);
    /// ```
    #[must_use]
    pub const fn extensions(
        mut self,
        extensions: &'static [(&'static str, Option<&'static str>)],
    ) -> Self {
        self.extensions = extensions;
        self
    }

    /// The field names of a qualified `no-cache`.
    #[must_use]
    pub const fn no_cache_field_names(&self) -> &'static [&'static str] {
        self.no_cache_fields
    }

    /// The field names of a qualified `private`.
    #[must_use]
    pub const fn private_field_names(&self) -> &'static [&'static str] {
        self.private_fields
    }

    /// The extension directives.
    #[must_use]
    pub const fn extension_directives(&self) -> &'static [(&'static str, Option<&'static str>)] {
        self.extensions
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
        // Only tokens, digits, quoted-strings, "=", "," and " " are ever written (extensions and
        // field names are checked first), and all of those are valid field-value bytes.
        HeaderValue::from_maybe_shared(Bytes::from(self.to_string()))
            .expect("CachePolicy renders tokens and quoted-strings only")
    }

    /// The directives in canonical order, each with its argument.
    pub(super) fn directives(&self) -> impl Iterator<Item = NewDirective> {
        let flag = |on: bool, name| on.then_some((name, NewValue::Bare));
        let secs = |v: Option<u32>, name| v.map(|s| (name, NewValue::Seconds(s)));
        let fields = |fields: &'static [&'static str], name| {
            let valid = fields.iter().any(|f| is_token(f.as_bytes()));
            valid.then_some((name, NewValue::Fields(fields)))
        };
        let bare_private = matches!(self.visibility, Some(Visibility::Private));
        let head = [
            match self.visibility {
                Some(Visibility::Public) => Some((PUBLIC, NewValue::Bare)),
                Some(Visibility::Private) => Some((PRIVATE, NewValue::Bare)),
                None => None,
            },
            // A bare `private` covers every field: the qualified form would only narrow it.
            if bare_private {
                None
            } else {
                fields(self.private_fields, PRIVATE)
            },
            secs(self.max_age, MAX_AGE),
            secs(self.s_maxage, S_MAXAGE),
            if self.no_cache {
                flag(true, NO_CACHE)
            } else {
                fields(self.no_cache_fields, NO_CACHE)
            },
            flag(self.no_store, NO_STORE),
            flag(self.must_revalidate, MUST_REVALIDATE),
            flag(self.proxy_revalidate, PROXY_REVALIDATE),
            flag(self.immutable, IMMUTABLE),
            secs(self.stale_while_revalidate, STALE_WHILE_REVALIDATE),
            secs(self.stale_if_error, STALE_IF_ERROR),
        ];
        let extensions = self.extensions.iter().filter_map(|&(name, value)| {
            let valid = is_token(name.as_bytes())
                && value.is_none_or(|v| is_token(v.as_bytes()) || is_quoted_string(v.as_bytes()));
            if !valid {
                tracing::debug!(
                    name,
                    ?value,
                    "cache_control: extension directive skipped, not a token or quoted-string"
                );
                return None;
            }
            Some((name, value.map_or(NewValue::Bare, NewValue::Text)))
        });
        head.into_iter().flatten().chain(extensions)
    }
}

impl fmt::Display for CachePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut sep = |f: &mut fmt::Formatter<'_>| {
            if first {
                first = false;
                Ok(())
            } else {
                f.write_str(", ")
            }
        };
        for (name, value) in self.directives() {
            match value {
                NewValue::Bare => {
                    sep(f)?;
                    f.write_str(name)?;
                }
                NewValue::Seconds(secs) => {
                    sep(f)?;
                    write!(f, "{name}={secs}")?;
                }
                NewValue::Text(text) => {
                    sep(f)?;
                    write!(f, "{name}={text}")?;
                }
                // Django's form for no-cache: one directive per field (they accumulate);
                // RFC 9111's quoted list for private (one value, replaced as a whole).
                NewValue::Fields(fields) if name == NO_CACHE => {
                    for field in fields.iter().filter(|f| is_token(f.as_bytes())) {
                        sep(f)?;
                        write!(f, "{name}=\"{field}\"")?;
                    }
                }
                NewValue::Fields(fields) => {
                    sep(f)?;
                    write!(f, "{name}=\"")?;
                    let valid = fields.iter().filter(|f| is_token(f.as_bytes()));
                    for (i, field) in valid.enumerate() {
                        if i > 0 {
                            f.write_str(", ")?;
                        }
                        f.write_str(field)?;
                    }
                    f.write_str("\"")?;
                }
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

/// A directive to merge: its name and its argument.
pub(super) type NewDirective = (&'static str, NewValue);

/// The argument of a directive to merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NewValue {
    /// None: `no-store`.
    Bare,
    /// Delta-seconds: `max-age=60`.
    Seconds(u32),
    /// Field names (RFC 9111 §5.2.2.4, §5.2.2.7): `no-cache="Set-Cookie"`.
    Fields(&'static [&'static str]),
    /// An extension's argument as given: `custom=456`.
    Text(&'static str),
}

/// RFC 9110 §5.6.2 `token`: one or more tchar.
pub(super) fn is_token(s: &[u8]) -> bool {
    !s.is_empty()
        && s.iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// RFC 9110 §5.6.4 `quoted-string`, the whole of `s`.
fn is_quoted_string(s: &[u8]) -> bool {
    let Some(inner) = s.strip_prefix(b"\"").and_then(|s| s.strip_suffix(b"\"")) else {
        return false;
    };
    let mut escaped = false;
    for &b in inner {
        let ok = if escaped {
            b == b'\t' || b == b' ' || b.is_ascii_graphic() || b >= 0x80
        } else {
            b == b'\t' || b == b' ' || (b.is_ascii_graphic() && b != b'"') || b >= 0x80
        };
        if !ok {
            return false;
        }
        escaped = !escaped && b == b'\\';
    }
    !escaped
}
