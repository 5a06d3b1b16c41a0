//! What happened to a request in a response cache, as a type, and the one place its headers
//! are rendered from.
//!
//! ```
//! use actix_conditional::response_cache::{CacheStatus, PassReason};
//! use actix_web::http::StatusCode;
//!
//! assert_eq!(CacheStatus::HitRevision.label(), "hit-revision");
//! let miss = CacheStatus::Miss { stored: true, status: StatusCode::OK };
//! assert_eq!(miss.label(), "miss");
//! assert!(miss.is_stored());
//! // Requests the cache answered by running the handler without a shared build are labelled
//! // `miss` too, but say why.
//! let pass = CacheStatus::Pass { reason: PassReason::LockTimeout };
//! assert_eq!(pass.label(), "miss");
//! assert!(!pass.is_stored());
//! ```

use std::time::Duration;

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};

/// The `X-Cache` response header: [`CacheStatus::label`], sent only by caches that opt in
/// ([`x_cache`](super::ResponseCacheBuilder::x_cache)).
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");
/// The `Cache-Status` response header (RFC 9211), sent by every response cache.
pub const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
/// How this library names itself in `Cache-Status` (an RFC 8941 token).
pub const CACHE_STATUS_NAME: &str = "actix-conditional";
/// The `X-Revision` response header: the revision fingerprint of the bytes served.
pub const X_REVISION: HeaderName = HeaderName::from_static("x-revision");

/// What a response cache did with one request. Every response that went through a cache
/// carries it (see [`CacheStatus::of`]); its `X-Cache` label is rendered from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CacheStatus {
    /// A fresh entry of a TTL cache; `ttl` is the freshness it has left.
    Hit {
        /// Time until the entry goes stale.
        ttl: Duration,
    },
    /// An entry whose revision fingerprint is unchanged: verified current just now.
    HitRevision,
    /// A sectioned entry whose changed inline sections were rebuilt in this request and merged.
    Section {
        /// Whether the merged response replaced the stored entry.
        stored: bool,
    },
    /// Stale bytes: past their TTL or revision while one refresh runs, or standing in for a
    /// refresh that failed (stale-on-error, RFC 5861 §4).
    Stale {
        /// Whether this request waited for another request's build to get them.
        collapsed: bool,
        /// The status of the failed refresh (or revision query) these bytes stand in for, if
        /// one failed.
        failed: Option<StatusCode>,
    },
    /// Nothing usable was stored: this request ran the handler (led the build).
    Miss {
        /// Whether its response was stored.
        stored: bool,
        /// The status the handler answered.
        status: StatusCode,
    },
    /// Middleware form: a stale entry refreshed by running the handler in this request.
    Refresh {
        /// Whether its response was stored.
        stored: bool,
        /// The status the handler answered.
        status: StatusCode,
    },
    /// This request waited for another request's build and got its response.
    Coalesced {
        /// The status of the shared response.
        status: StatusCode,
    },
    /// The handler ran for this request alone and nothing was stored (labelled `miss`).
    Pass {
        /// Why the request did not share a build.
        reason: PassReason,
    },
    /// The cache did not touch the request (credentials, method, `Range`).
    Bypass,
}

/// Appends `value` as an RFC 8941 §3.3.3 sf-string: quoted, `"` and `\` escaped; characters
/// outside printable ASCII (which an sf-string cannot hold) become `?`.
fn push_sf_string(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push('?'),
        }
    }
    out.push('"');
}

/// Why a request ran its own handler instead of sharing a stored entry or a build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PassReason {
    /// The key's responses were recently not shareable (hit-for-pass).
    Uncacheable,
    /// The build this request waited for turned out not to be shareable.
    LeaderUncacheable,
    /// The wait for another request's build passed the cache's `lock_timeout`.
    LockTimeout,
    /// The revision fingerprint could not be computed, and nothing stored was within its
    /// stale window to stand in for it.
    RevisionFailed,
    /// A HEAD request with nothing stored: HEAD never builds the GET entry.
    Head,
    /// The shared build was made for another variant (`Vary`) of the URL.
    OtherVariant,
}

impl PassReason {
    /// The `detail` token of its `Cache-Status` member.
    pub fn detail(self) -> &'static str {
        match self {
            Self::Uncacheable => "uncacheable",
            Self::LeaderUncacheable => "leader-uncacheable",
            Self::LockTimeout => "lock-timeout",
            Self::RevisionFailed => "revision-failed",
            Self::Head => "head",
            Self::OtherVariant => "other-variant",
        }
    }
}

impl CacheStatus {
    /// The `X-Cache` value: `hit`, `hit-revision`, `section`, `stale`, `miss`, `refresh`,
    /// `coalesced` or `bypass`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Hit { .. } => "hit",
            Self::HitRevision => "hit-revision",
            Self::Section { .. } => "section",
            Self::Stale { .. } => "stale",
            Self::Miss { .. } | Self::Pass { .. } => "miss",
            Self::Refresh { .. } => "refresh",
            Self::Coalesced { .. } => "coalesced",
            Self::Bypass => "bypass",
        }
    }

    /// Whether the bytes served are stale: their `Age` must then exceed the lifetime their
    /// `Cache-Control` grants (RFC 5861 §4), so no cache downstream counts freshness twice.
    pub fn is_stale(&self) -> bool {
        matches!(self, Self::Stale { .. })
    }

    /// Whether this request's response was stored.
    pub fn is_stored(&self) -> bool {
        matches!(
            self,
            Self::Section { stored: true }
                | Self::Miss { stored: true, .. }
                | Self::Refresh { stored: true, .. }
        )
    }

    /// Whether the request waited for another request's build.
    pub fn is_collapsed(&self) -> bool {
        matches!(
            self,
            Self::Coalesced { .. }
                | Self::Stale {
                    collapsed: true,
                    ..
                }
        )
    }

    /// The status a cache attached to `res`, if one handled it.
    pub fn of(res: &HttpResponse) -> Option<Self> {
        res.extensions().get::<Self>().copied()
    }

    /// Records this status on `res`; the cache renders its headers from it once, as the
    /// response leaves ([`render`](Self::render)).
    pub(crate) fn apply(self, res: &mut HttpResponse) {
        res.extensions_mut().insert(self);
    }

    /// Renders this status into `headers`: appends this cache's member to `Cache-Status`
    /// (RFC 9211 §2: a cache adds its own member after those of the caches nearer the origin
    /// and never rewrites theirs), and sets `X-Cache` when `x_cache`. `response` is the
    /// status of the response as the next hop (the handler) answered it, for `fwd-status`
    /// where the status itself does not carry it; `fwd` names why the request went to the
    /// handler when the request itself decided it (RFC 9211 §2.2: `request` for a forced
    /// rebuild or a request `no-store`, `method` for a method the cache never serves);
    /// `key` is exposed only when the cache is configured to.
    pub(crate) fn render(
        self,
        headers: &mut HeaderMap,
        response: StatusCode,
        fwd: Option<&'static str>,
        key: Option<&str>,
        x_cache: bool,
    ) {
        let member = self.member(response, fwd, key);
        match HeaderValue::from_str(&member) {
            Ok(value) => headers.append(CACHE_STATUS, value),
            // Unreachable: the member is built of tokens, integers and an escaped string.
            Err(_) => tracing::error!(%member, "response cache: invalid Cache-Status member"),
        }
        if x_cache {
            headers.insert(X_CACHE, HeaderValue::from_static(self.label()));
        }
    }

    /// This cache's `Cache-Status` list member (RFC 9211 §2), e.g.
    /// `actix-conditional; hit; ttl=12` or `actix-conditional; fwd=miss; fwd-status=200; stored`.
    ///
    /// | status | member parameters |
    /// |---|---|
    /// | `Hit` | `hit; ttl=<seconds left>` |
    /// | `HitRevision` | `hit; detail=revision` (the data's revision was checked just now) |
    /// | `Stale` (refresh running) | `hit; detail=stale` |
    /// | `Stale` (refresh or revision query failed) | `fwd=stale; fwd-status=<failed>; detail=stale` |
    /// | `Section` | `fwd=stale; fwd-status=200; detail=section` (+ `stored`) |
    /// | `Miss` | `fwd=miss` (`fwd=request` when the client forced it); `fwd-status` (+ `stored`) |
    /// | `Refresh` | `fwd=stale; fwd-status` (+ `stored`) |
    /// | `Coalesced` | `fwd=miss; fwd-status; collapsed` |
    /// | `Pass` | `fwd=miss` (`vary-miss` for another variant's build); `fwd-status; detail=<reason>` |
    /// | `Bypass` | `fwd=bypass` (`method` for a method it never serves, `request` for a request `no-store`); `fwd-status` |
    pub fn cache_status(&self, response: StatusCode) -> String {
        self.member(response, None, None)
    }

    fn member(self, response: StatusCode, fwd: Option<&'static str>, key: Option<&str>) -> String {
        use std::fmt::Write as _;
        let mut out = String::with_capacity(64);
        out.push_str(CACHE_STATUS_NAME);
        let miss = fwd.unwrap_or("miss");
        let (fwd_param, fwd_status, detail): (Option<&str>, Option<StatusCode>, Option<&str>) =
            match self {
                Self::Hit { ttl } => {
                    let _ = write!(out, "; hit; ttl={}", ttl.as_secs());
                    (None, None, None)
                }
                Self::HitRevision => {
                    out.push_str("; hit");
                    (None, None, Some("revision"))
                }
                Self::Stale { failed: None, .. } => {
                    out.push_str("; hit");
                    (None, None, Some("stale"))
                }
                Self::Stale {
                    failed: Some(failed),
                    ..
                } => (Some("stale"), Some(failed), Some("stale")),
                Self::Section { .. } => (Some("stale"), Some(StatusCode::OK), Some("section")),
                Self::Miss { status, .. } => (Some(miss), Some(status), None),
                Self::Refresh { status, .. } => (Some("stale"), Some(status), None),
                Self::Coalesced { status } => (Some(miss), Some(status), None),
                Self::Pass {
                    reason: PassReason::OtherVariant,
                } => (Some("vary-miss"), Some(response), None),
                Self::Pass { reason } => (Some(miss), Some(response), Some(reason.detail())),
                Self::Bypass => (Some("bypass"), Some(response), None),
            };
        if let Some(fwd) = fwd_param {
            let _ = write!(out, "; fwd={fwd}");
        }
        if let Some(status) = fwd_status {
            let _ = write!(out, "; fwd-status={}", status.as_u16());
        }
        if self.is_stored() {
            out.push_str("; stored");
        }
        // RFC 9211 §2.5: `collapsed` describes a request forwarded along with others; a hit
        // (stale bytes a waiter was handed) forwarded nothing.
        if self.is_collapsed() && fwd_param.is_some() {
            out.push_str("; collapsed");
        }
        if let Some(key) = key {
            out.push_str("; key=");
            push_sf_string(&mut out, key);
        }
        if let Some(detail) = detail {
            let _ = write!(out, "; detail={detail}");
        }
        out
    }

    /// The status of a build this request led, once its outcome is known.
    pub(crate) fn led(role: Role, stored: bool, status: StatusCode) -> Self {
        match role {
            Role::Miss => Self::Miss { stored, status },
            Role::Refresh => Self::Refresh { stored, status },
            Role::Section => Self::Section { stored },
        }
    }
}

/// Why a request leads a build: decides the status its response gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Nothing usable was stored.
    Miss,
    /// A stale entry is refreshed (in the background with `serve`, in the request as
    /// middleware).
    Refresh,
    /// A sectioned entry's inline sections are rebuilt in the request.
    Section,
}

/// Labels a response the cache did not take from an entry (pass, bypass, a leader's own).
pub(crate) fn labelled(mut res: HttpResponse, status: CacheStatus) -> HttpResponse {
    status.apply(&mut res);
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_the_x_cache_values() {
        let ok = StatusCode::OK;
        let cases = [
            (
                CacheStatus::Hit {
                    ttl: Duration::from_secs(1),
                },
                "hit",
            ),
            (CacheStatus::HitRevision, "hit-revision"),
            (CacheStatus::Section { stored: true }, "section"),
            (
                CacheStatus::Stale {
                    collapsed: false,
                    failed: None,
                },
                "stale",
            ),
            (
                CacheStatus::Miss {
                    stored: false,
                    status: ok,
                },
                "miss",
            ),
            (
                CacheStatus::Refresh {
                    stored: true,
                    status: ok,
                },
                "refresh",
            ),
            (CacheStatus::Coalesced { status: ok }, "coalesced"),
            (
                CacheStatus::Pass {
                    reason: PassReason::Head,
                },
                "miss",
            ),
            (CacheStatus::Bypass, "bypass"),
        ];
        for (status, label) in cases {
            assert_eq!(status.label(), label);
            let mut res = HttpResponse::Ok().finish();
            status.apply(&mut res);
            assert_eq!(CacheStatus::of(&res), Some(status));
            let mut headers = HeaderMap::new();
            status.render(&mut headers, ok, None, None, true);
            assert_eq!(headers.get(X_CACHE).unwrap(), label);
            let mut quiet = HeaderMap::new();
            status.render(&mut quiet, ok, None, None, false);
            assert!(!quiet.contains_key(X_CACHE), "X-Cache is opt-in");
            assert!(quiet.contains_key(CACHE_STATUS));
        }
    }

    #[test]
    fn cache_status_members() {
        let ok = StatusCode::OK;
        let cases = [
            (
                CacheStatus::Hit {
                    ttl: Duration::from_millis(12_900),
                },
                "actix-conditional; hit; ttl=12",
            ),
            (
                CacheStatus::HitRevision,
                "actix-conditional; hit; detail=revision",
            ),
            (
                CacheStatus::Stale {
                    collapsed: false,
                    failed: None,
                },
                "actix-conditional; hit; detail=stale",
            ),
            (
                CacheStatus::Stale {
                    collapsed: true,
                    failed: Some(StatusCode::BAD_GATEWAY),
                },
                "actix-conditional; fwd=stale; fwd-status=502; collapsed; detail=stale",
            ),
            (
                CacheStatus::Section { stored: true },
                "actix-conditional; fwd=stale; fwd-status=200; stored; detail=section",
            ),
            (
                CacheStatus::Miss {
                    stored: true,
                    status: ok,
                },
                "actix-conditional; fwd=miss; fwd-status=200; stored",
            ),
            (
                CacheStatus::Refresh {
                    stored: false,
                    status: StatusCode::SERVICE_UNAVAILABLE,
                },
                "actix-conditional; fwd=stale; fwd-status=503",
            ),
            (
                CacheStatus::Coalesced { status: ok },
                "actix-conditional; fwd=miss; fwd-status=200; collapsed",
            ),
            (
                CacheStatus::Pass {
                    reason: PassReason::LockTimeout,
                },
                "actix-conditional; fwd=miss; fwd-status=200; detail=lock-timeout",
            ),
            (
                CacheStatus::Pass {
                    reason: PassReason::OtherVariant,
                },
                "actix-conditional; fwd=vary-miss; fwd-status=200",
            ),
            (
                CacheStatus::Bypass,
                "actix-conditional; fwd=bypass; fwd-status=200",
            ),
        ];
        for (status, member) in cases {
            assert_eq!(status.cache_status(ok), member);
            let list: sfv::List = sfv::Parser::new(member).parse().expect(member);
            assert_eq!(list.len(), 1, "{member}");
        }
        // The client asked for the rebuild; the key, when exposed, is an escaped sf-string.
        let miss = CacheStatus::Miss {
            stored: true,
            status: ok,
        };
        assert_eq!(
            miss.member(ok, Some("request"), Some("GET /a?q=\"x\"\u{e9}")),
            r#"actix-conditional; fwd=request; fwd-status=200; stored; key="GET /a?q=\"x\"?""#
        );
    }

    proptest::proptest! {
        #[test]
        fn every_member_is_a_valid_sf_list_whatever_the_key(key in ".{0,64}", code in 100u16..600) {
            let status = StatusCode::from_u16(code).unwrap();
            for cache in [CacheStatus::Bypass, CacheStatus::Miss { stored: false, status }] {
                let fwd = (code % 2 == 0).then_some("request");
                let member = cache.member(status, fwd, Some(&key));
                let list: sfv::List = sfv::Parser::new(&member).parse().unwrap();
                let sfv::ListEntry::Item(item) = &list[0] else { panic!("{member}") };
                let shown = item.params.get("key").and_then(|v| v.as_string()).unwrap();
                proptest::prop_assert_eq!(shown.as_str().chars().count(), key.chars().count());
                proptest::prop_assert!(HeaderValue::from_str(&member).is_ok());
            }
        }
    }

    #[test]
    fn cache_status_appends_to_the_members_of_caches_nearer_the_origin() {
        let mut headers = HeaderMap::new();
        headers.insert(CACHE_STATUS, HeaderValue::from_static("origin-cache; hit"));
        CacheStatus::HitRevision.render(&mut headers, StatusCode::OK, None, None, false);
        let lines: Vec<_> = headers.get_all(CACHE_STATUS).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0], "origin-cache; hit");
        assert_eq!(lines[1], "actix-conditional; hit; detail=revision");
    }

    #[test]
    fn only_stale_answers_are_stale_and_only_stored_builds_are_stored() {
        let stale = CacheStatus::Stale {
            collapsed: true,
            failed: None,
        };
        assert!(stale.is_stale() && stale.is_collapsed() && !stale.is_stored());
        assert!(!CacheStatus::HitRevision.is_stale());
        let led = CacheStatus::led(Role::Refresh, true, StatusCode::OK);
        assert_eq!(led.label(), "refresh");
        assert!(led.is_stored() && !led.is_collapsed());
    }
}
