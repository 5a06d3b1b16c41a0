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

/// The `X-Cache` response header.
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");
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
        /// The status of the failed refresh these bytes stand in for, if one failed.
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
    /// The revision fingerprint could not be computed.
    RevisionFailed,
    /// A HEAD request with nothing stored: HEAD never builds the GET entry.
    Head,
    /// The shared build was made for another variant (`Vary`) of the URL.
    OtherVariant,
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

    /// Records this status on `res` and renders its headers: the one place they are written.
    pub(crate) fn apply(self, res: &mut HttpResponse) {
        self.render(res.headers_mut());
        res.extensions_mut().insert(self);
    }

    fn render(self, headers: &mut HeaderMap) {
        headers.insert(X_CACHE, HeaderValue::from_static(self.label()));
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
            assert_eq!(res.headers().get(X_CACHE).unwrap(), label);
            assert_eq!(CacheStatus::of(&res), Some(status));
        }
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
