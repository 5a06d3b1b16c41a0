//! Targeted cache control (RFC 9213): the same policy merge, into `CDN-Cache-Control`,
//! `Surrogate-Control` or another field that only some caches read.

use actix_web::http::header::{CACHE_CONTROL, CDN_CACHE_CONTROL, HeaderMap, HeaderName};

use super::patch::{Syntax, patch_cache_control, patch_field, rendered_alone};
use super::policy::{CachePolicy, NewDirective, NewValue};

/// `Surrogate-Control`: the field Fastly and other surrogates read instead of `Cache-Control`
/// (W3C Edge Architecture Specification 1.0; not an RFC 9213 field, see [`Target::Surrogate`]).
pub const SURROGATE_CONTROL: HeaderName = HeaderName::from_static("surrogate-control");

/// Which field a [`CachePolicy`] is written to: `Cache-Control`, read by every cache, or a
/// field targeted at some caches only (RFC 9213 §2).
///
/// A cache that knows a targeted field uses it *instead of* `Cache-Control` when it is present
/// and valid (RFC 9213 §2.2), and CDNs usually strip it before forwarding. So
/// `Cache-Control: max-age=0, must-revalidate` with `CDN-Cache-Control: max-age=600` makes
/// browsers revalidate on every use while the CDN serves the response for ten minutes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// `Cache-Control` (RFC 9111 §5.2): every cache. Merged exactly as
    /// [`patch_cache_control`] does.
    CacheControl,
    /// `CDN-Cache-Control` (RFC 9213 §3): CDN caches only.
    Cdn,
    /// `Surrogate-Control`: Fastly and other surrogates. Its syntax predates structured fields
    /// (`max-age=60+30`, `content="ESI/1.0"`), so it is merged with `Cache-Control`'s lenient
    /// rules, existing members kept verbatim.
    Surrogate,
    /// Another targeted field with `CDN-Cache-Control`'s rules, e.g.
    /// `Cloudflare-CDN-Cache-Control` or `Akamai-Cache-Control` (RFC 9213 §2). `Cache-Control`
    /// and `Surrogate-Control` given by name are merged as [`CacheControl`](Self::CacheControl)
    /// and [`Surrogate`](Self::Surrogate).
    Named(HeaderName),
}

impl Target {
    /// The field's name.
    #[must_use]
    pub fn header_name(&self) -> HeaderName {
        match self {
            Self::CacheControl => CACHE_CONTROL,
            Self::Cdn => CDN_CACHE_CONTROL,
            Self::Surrogate => SURROGATE_CONTROL,
            Self::Named(name) => name.clone(),
        }
    }

    /// How the field's members are read and written: an RFC 9213 targeted field is a
    /// Dictionary Structured Field (RFC 9213 §2.1), the other two are comma-separated lists.
    fn syntax(name: &HeaderName) -> Syntax {
        if *name == CACHE_CONTROL || *name == SURROGATE_CONTROL {
            Syntax::List
        } else {
            Syntax::Dictionary
        }
    }
}

/// Merges `policy` into the response's `target` field, with [`patch_cache_control`]'s rules
/// (the smaller `max-age` wins, `public` and `private` replace each other, `no-cache` field
/// names accumulate, other directives keep their position).
///
/// An RFC 9213 field ([`Target::Cdn`], [`Target::Named`]) is a Dictionary Structured Field
/// (RFC 9213 §2.1), and the result is always a valid one (RFC 8941 §3.2):
///
/// - the existing field is read as a whole with an RFC 8941 parser, as a targeted cache reads
///   it. If it is not a valid dictionary (`max-age=1_0`, non-ASCII bytes, an integer of more
///   than 15 digits anywhere), caches ignore all of it, so the policy alone is written (with a
///   `debug` event);
/// - a bare member's parameters are dropped (`no-store;x` becomes `no-store`): caches ignore
///   them, and the merge must see one `no-store`, not two;
/// - a repeated key keeps its last value (RFC 8941 §3.2): `no-cache="a", no-cache="b"` is
///   `no-cache="b"` to a targeted cache, and so to the merge (in `Cache-Control` both stay).
///
/// An existing `max-age` written as a string (`max-age="30"`) still takes part in "the smaller
/// wins"; one with parameters (`max-age=30;x`) does not, and the policy's value replaces it.
/// An empty result removes the field (an empty targeted field is ignored anyway,
/// RFC 9213 §2.1). Bad input never panics.
///
/// # Examples
///
/// ```
/// use actix_conditional::cache_control::{CachePolicy, Target, patch_targeted};
/// use actix_web::http::header::{CACHE_CONTROL, CDN_CACHE_CONTROL, HeaderMap, HeaderValue};
///
/// let mut headers = HeaderMap::new();
/// headers.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=0, must-revalidate"));
/// headers.insert(CDN_CACHE_CONTROL, HeaderValue::from_static("max-age=3600, stale-if-error=60"));
///
/// // Browsers revalidate; the CDN holds it ten minutes (the smaller max-age wins).
/// patch_targeted(&mut headers, &Target::Cdn, &CachePolicy::new().max_age(600));
/// assert_eq!(headers.get(CDN_CACHE_CONTROL).unwrap(), "max-age=600, stale-if-error=60");
/// assert_eq!(headers.get(CACHE_CONTROL).unwrap(), "max-age=0, must-revalidate");
///
/// // Surrogate-Control keeps its own syntax.
/// let mut headers = HeaderMap::new();
/// patch_targeted(&mut headers, &Target::Surrogate, &CachePolicy::new().max_age(60));
/// assert_eq!(headers.get("surrogate-control").unwrap(), "max-age=60");
/// ```
pub fn patch_targeted(headers: &mut HeaderMap, target: &Target, policy: &CachePolicy) {
    let name = target.header_name();
    if name == CACHE_CONTROL {
        patch_cache_control(headers, policy);
        return;
    }
    let syntax = Target::syntax(&name);
    // Extensions must be checked as Dictionary members: the remembered line is not.
    let check_members = syntax == Syntax::Dictionary && !policy.extension_directives().is_empty();
    if !headers.contains_key(&name) && !check_members {
        // The policy alone renders the same in every field: one remembered line per policy.
        if let Some(value) = rendered_alone(policy) {
            headers.insert(name, value);
        }
        return;
    }
    let mut new: Vec<NewDirective> = policy.directives().collect();
    if syntax == Syntax::Dictionary {
        // A targeted cache ignores a field that is not a valid Dictionary as a whole
        // (RFC 9213 §2.1): an extension that is not a valid member would void the lifetime
        // beside it, so it is left out of such a field.
        new.retain(|&(name, value)| is_dictionary_member(name, value));
    }
    patch_field(headers, &name, syntax, &[&new]);
}

/// Policies for the targeted fields, beside a response's `Cache-Control` policy: what
/// `cdn_max_age` and `surrogate_max_age` of `#[etag_cached]` and `#[cache_control]` set.
///
/// A small `Copy` value built with `const` methods, like [`CachePolicy`].
///
/// # Examples
///
/// ```
/// use actix_conditional::cache_control::{CachePolicy, TargetedPolicies};
/// use actix_web::http::header::{CDN_CACHE_CONTROL, HeaderMap};
///
/// const EDGE: TargetedPolicies = TargetedPolicies::new().cdn(CachePolicy::new().max_age(600));
///
/// let mut headers = HeaderMap::new();
/// EDGE.patch(&mut headers, false);
/// assert_eq!(headers.get(CDN_CACHE_CONTROL).unwrap(), "max-age=600");
/// assert!(!headers.contains_key("surrogate-control"));
///
/// // An answer Cache-Control marks private must not be stored by a CDN either.
/// let mut headers = HeaderMap::new();
/// EDGE.patch(&mut headers, true);
/// assert_eq!(headers.get(CDN_CACHE_CONTROL).unwrap(), "private, max-age=600");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TargetedPolicies {
    cdn: Option<CachePolicy>,
    surrogate: Option<CachePolicy>,
}

impl TargetedPolicies {
    /// No targeted field.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            cdn: None,
            surrogate: None,
        }
    }

    /// `CDN-Cache-Control` gets `policy` ([`Target::Cdn`]).
    #[must_use]
    pub const fn cdn(mut self, policy: CachePolicy) -> Self {
        self.cdn = Some(policy);
        self
    }

    /// `Surrogate-Control` gets `policy` ([`Target::Surrogate`]).
    #[must_use]
    pub const fn surrogate(mut self, policy: CachePolicy) -> Self {
        self.surrogate = Some(policy);
        self
    }

    /// The `CDN-Cache-Control` policy, if any.
    #[must_use]
    pub const fn cdn_policy(&self) -> Option<CachePolicy> {
        self.cdn
    }

    /// The `Surrogate-Control` policy, if any.
    #[must_use]
    pub const fn surrogate_policy(&self) -> Option<CachePolicy> {
        self.surrogate
    }

    /// Whether no targeted field is set.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.cdn.is_none() && self.surrogate.is_none()
    }

    /// Merges each policy into its field with [`patch_targeted`].
    ///
    /// `private`: the answer's `Cache-Control` has `private` (the handler or its policy said
    /// so, or the request carried credentials). Each targeted policy then gets `private` too: a cache that reads a
    /// targeted field ignores `Cache-Control` (RFC 9213 §2.2), so without it a CDN would store
    /// and share the answer.
    pub fn patch(&self, headers: &mut HeaderMap, private: bool) {
        for (target, policy) in [(Target::Cdn, self.cdn), (Target::Surrogate, self.surrogate)] {
            let Some(policy) = policy else { continue };
            let policy = if private { policy.private() } else { policy };
            patch_targeted(headers, &target, &policy);
        }
    }
}

/// Whether `name[=value]` is a valid RFC 8941 Dictionary member on its own.
fn is_dictionary_member(name: &str, value: NewValue) -> bool {
    let member = match value {
        NewValue::Text(text) => format!("{name}={text}"),
        // An extension's name alone must be a valid key too (lowercase, RFC 8941 §3.2).
        NewValue::Bare => name.to_owned(),
        // Only known directives carry these, and they render as valid members.
        NewValue::Seconds(_) | NewValue::Fields(_) => return true,
    };
    sfv::Parser::new(member.as_bytes())
        .with_version(sfv::Version::Rfc8941)
        .parse::<sfv::Dictionary>()
        .is_ok()
        || {
            tracing::debug!(
                member,
                "targeted field: extension left out, not a structured-field member"
            );
            false
        }
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::HeaderValue;

    use super::*;

    fn patched(target: &Target, existing: &[&[u8]], policy: CachePolicy) -> Option<String> {
        let name = target.header_name();
        let mut headers = HeaderMap::new();
        for line in existing {
            headers.append(name.clone(), HeaderValue::from_bytes(line).unwrap());
        }
        patch_targeted(&mut headers, target, &policy);
        assert!(headers.get_all(&name).count() <= 1);
        headers
            .get(&name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    fn is_dictionary(value: &str) -> bool {
        sfv::Parser::new(value)
            .with_version(sfv::Version::Rfc8941)
            .parse::<sfv::Dictionary>()
            .is_ok()
    }

    #[test]
    fn header_names() {
        assert_eq!(Target::CacheControl.header_name(), CACHE_CONTROL);
        assert_eq!(Target::Cdn.header_name().as_str(), "cdn-cache-control");
        assert_eq!(
            Target::Surrogate.header_name().as_str(),
            "surrogate-control"
        );
        let cf = HeaderName::from_static("cloudflare-cdn-cache-control");
        assert_eq!(Target::Named(cf.clone()).header_name(), cf);
    }

    #[test]
    fn cache_control_target_is_patch_cache_control() {
        let policy = CachePolicy::new().private().max_age(60);
        for existing in [
            &b"public, max-age=300, X-Ext"[..],
            b"max-age=abc",
            b"no-cache=\"a",
        ] {
            let mut expected = HeaderMap::new();
            expected.insert(CACHE_CONTROL, HeaderValue::from_bytes(existing).unwrap());
            patch_cache_control(&mut expected, &policy);
            assert_eq!(
                patched(&Target::CacheControl, &[existing], policy).as_deref(),
                expected.get(CACHE_CONTROL).map(|v| v.to_str().unwrap()),
            );
        }
    }

    #[test]
    fn same_merge_rules_in_every_target() {
        let policy = CachePolicy::new().public().max_age(600);
        for target in [Target::Cdn, Target::Surrogate] {
            assert_eq!(
                patched(
                    &target,
                    &[b"private, max-age=60, stale-if-error=30"],
                    policy
                )
                .as_deref(),
                Some("max-age=60, stale-if-error=30, public"),
                "{target:?}"
            );
            assert_eq!(
                patched(&target, &[], policy).as_deref(),
                Some("public, max-age=600")
            );
            assert_eq!(patched(&target, &[], CachePolicy::new()), None);
        }
    }

    #[test]
    fn only_its_own_field_is_touched() {
        let mut headers = HeaderMap::new();
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        patch_targeted(&mut headers, &Target::Cdn, &CachePolicy::new().max_age(600));
        assert_eq!(headers.get(CACHE_CONTROL).unwrap(), "no-store");
        assert_eq!(headers.get(CDN_CACHE_CONTROL).unwrap(), "max-age=600");
        assert!(!headers.contains_key(SURROGATE_CONTROL));
    }

    #[test]
    fn a_field_caches_would_ignore_is_replaced_by_the_policy() {
        let policy = CachePolicy::new().max_age(600);
        for existing in [
            &b"max-age=1_0, public"[..],
            b"X-Ext=\xff, public",
            b"max-age=1234567890123456",
            b"Max-Age=60",
            b"=x, public",
            b"no-cache=\"a",
            b"public,",
        ] {
            assert_eq!(
                patched(&Target::Cdn, &[existing], policy).as_deref(),
                Some("max-age=600"),
                "{:?}",
                String::from_utf8_lossy(existing)
            );
        }
    }

    #[test]
    fn a_valid_dictionary_is_merged_member_by_member() {
        let policy = CachePolicy::new().max_age(600).no_store();
        let cases: &[(&[&[u8]], &str)] = &[
            (&[b"max-age=-5, public"], "max-age=600, public, no-store"),
            (&[b"max-age=\"30\""], "max-age=30, no-store"),
            (&[b"max-age=30;x"], "max-age=600, no-store"),
            (
                &[b"no-store;a=0, ext=tok;a=1"],
                "no-store, ext=tok;a=1, max-age=600",
            ),
            (
                &[b"ext=(a b);q=1, flag=?0"],
                "ext=(a b);q=1, flag=?0, max-age=600, no-store",
            ),
            // Several field lines are one dictionary (RFC 8941 §4.2).
            (&[b"public", b"max-age=60"], "public, max-age=60, no-store"),
        ];
        for &(existing, expected) in cases {
            let got = patched(&Target::Cdn, existing, policy).unwrap();
            assert_eq!(got, expected, "{existing:?}");
            assert!(is_dictionary(&got), "{got}");
        }
    }

    #[test]
    fn surrogate_control_keeps_its_own_syntax() {
        assert_eq!(
            patched(
                &Target::Surrogate,
                &[b"content=\"ESI/1.0\", max-age=60+30"],
                CachePolicy::new().max_age(600),
            )
            .as_deref(),
            // `60+30` is not delta-seconds: like a malformed max-age, it loses.
            Some("content=\"ESI/1.0\", max-age=600"),
        );
    }

    #[test]
    fn a_repeated_key_is_read_as_a_targeted_cache_reads_it() {
        let existing: &[u8] = b"no-cache=\"Set-Cookie\", No-Cache=Cookie, max-age=9, max-age=7";
        // A dictionary keeps a repeated key's last value (RFC 8941 §3.2); keys are
        // case-sensitive, so `No-Cache` makes the whole field invalid.
        assert_eq!(
            patched(&Target::Cdn, &[existing], CachePolicy::new().max_age(8)).as_deref(),
            Some("max-age=8")
        );
        let existing: &[u8] = b"no-cache=\"Set-Cookie\", no-cache=\"a\\\\b\", max-age=9, max-age=7";
        let got = patched(&Target::Cdn, &[existing], CachePolicy::new().max_age(8)).unwrap();
        assert_eq!(got, r#"no-cache="a\\b", max-age=7"#);
        assert!(is_dictionary(&got));
        // In Cache-Control syntax both field names stay.
        assert_eq!(
            patched(
                &Target::Surrogate,
                &[b"no-cache=\"a\", no-cache=\"b\""],
                CachePolicy::new()
            )
            .as_deref(),
            Some("no-cache=\"a\", no-cache=\"b\"")
        );
    }

    #[test]
    fn a_named_field_follows_the_rfc_9213_rules() {
        let cf = Target::Named(HeaderName::from_static("cloudflare-cdn-cache-control"));
        assert_eq!(
            patched(&cf, &[b"max-age=9, ext"], CachePolicy::new().max_age(60)).as_deref(),
            Some("max-age=9, ext")
        );
        // By name, Cache-Control and Surrogate-Control keep their own rules.
        let by_name = Target::Named(CACHE_CONTROL);
        assert_eq!(
            patched(&by_name, &[b"bad=1_0"], CachePolicy::new()).as_deref(),
            Some("bad=1_0")
        );
    }

    #[test]
    fn extensions_that_are_not_dictionary_members_stay_out_of_targeted_fields() {
        let policy = CachePolicy::new().max_age(60).extensions(&[
            ("x-Flag", None),
            ("custom", Some("456")),
            ("odd", Some("\"a\\\\b\"")),
        ]);
        let mut headers = HeaderMap::new();
        patch_targeted(&mut headers, &Target::Cdn, &policy);
        // `x-Flag` is no key (uppercase); `odd="a\\b"` is a valid sf-string: kept.
        assert_eq!(
            headers
                .get(actix_web::http::header::CDN_CACHE_CONTROL)
                .unwrap(),
            r#"max-age=60, custom=456, odd="a\\b""#
        );
        // In Cache-Control, a list, every valid extension stays.
        let mut headers = HeaderMap::new();
        patch_targeted(&mut headers, &Target::CacheControl, &policy);
        assert_eq!(
            headers.get(actix_web::http::header::CACHE_CONTROL).unwrap(),
            r#"max-age=60, x-Flag, custom=456, odd="a\\b""#
        );
    }
}
