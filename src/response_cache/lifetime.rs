//! Never stale on arrival: the lifetime a served entry declares downstream covers its `Age`.
//!
//! A cache downstream (a browser, Varnish, a CDN) computes `current_age` from the `Age` we
//! send and holds the response while its lifetime (`max-age`, or for shared caches
//! `s-maxage`, `CDN-Cache-Control`, `Surrogate-Control`) exceeds it (RFC 9111 §4.2, §4.2.3).
//! An entry kept here longer than the lifetime its handler declared would otherwise arrive
//! already stale: Varnish stores it with a negative TTL and never hits again, Squid
//! revalidates on every request.
//!
//! The rule, applied to every lifetime directive of those fields as an entry is served:
//!
//! - **fresh** bytes declare `max(declared, age + min(declared, fresh_left))`: downstream
//!   may keep them for up to the declared lifetime *after they arrive*, never past the point
//!   where this cache would itself stop calling them fresh (and never less than declared, so
//!   a fresh build is sent exactly as its handler wrote it). A declared lifetime of `0`
//!   ("always revalidate") is left as it is: raising it would make caches that ignore `Age`
//!   (HTTP/1.0 caches, some client libraries) keep it;
//! - **stale** bytes (served while a refresh runs, or standing in for a failed one) keep the
//!   lifetime they declared, so they are stale downstream too (RFC 5861 §4: freshness is not
//!   counted twice), and declare `stale-while-revalidate` covering the excess: `age -
//!   declared` plus as long as this cache would still serve them (RFC 5861 §3). Unless the
//!   response forbids serving stale (`must-revalidate`, `proxy-revalidate`, `no-cache`): then
//!   it arrives stale and is revalidated, as it asks.
//!
//! `Age` itself is never altered: it is the honest time since the bytes were built or, in
//! revision mode, last verified current (RFC 9111 §5.1).
//!
//! ```
//! use std::time::Duration;
//! use actix_conditional::response_cache::{ManualClock, ResponseCache};
//! use actix_web::{HttpResponse, test};
//!
//! # actix_web::rt::System::new().block_on(async {
//! let clock = ManualClock::new();
//! let cache = ResponseCache::ttl("lifetime-doc", Duration::from_secs(30))
//!     .max_stale(Duration::from_secs(40))
//!     .clock(clock.clone())
//!     .build();
//! let req = test::TestRequest::get().uri("/a").to_http_request();
//! let build = |_| async {
//!     HttpResponse::Ok().insert_header(("cache-control", "public, max-age=15")).body("a")
//! };
//! let header = |res: &HttpResponse, name| res.headers().get(name).unwrap().clone();
//! let res = cache.serve(&req, build).await;
//! assert_eq!(header(&res, "cache-control"), "public, max-age=15"); // as the handler wrote it
//!
//! // 20 s old (past the declared 15), 10 s fresh left here: 20 + min(15, 10).
//! clock.advance(Duration::from_secs(20));
//! let res = cache.serve(&req, build).await;
//! assert_eq!(header(&res, "age"), "20");
//! assert_eq!(header(&res, "cache-control"), "public, max-age=30");
//!
//! // 35 s old: stale, servable here for 35 s more; 20 s past its lifetime + 35 s.
//! clock.advance(Duration::from_secs(15));
//! let res = cache.serve(&req, build).await;
//! assert_eq!(
//!     header(&res, "cache-control"),
//!     "public, max-age=15, stale-while-revalidate=55",
//! );
//! # });
//! ```

use std::time::Duration;

use actix_web::http::header::{CACHE_CONTROL, HeaderMap, HeaderName, HeaderValue};

use crate::cache_control::{Directive, parse_cache_control};

/// `CDN-Cache-Control` (RFC 9213 §2): `Cache-Control` syntax, for CDNs only.
const CDN_CACHE_CONTROL: HeaderName = HeaderName::from_static("cdn-cache-control");
/// `Surrogate-Control` (Edge Architecture Specification; Fastly, Varnish setups).
const SURROGATE_CONTROL: HeaderName = HeaderName::from_static("surrogate-control");

/// How much longer this cache will treat an entry as fresh, and then as servable stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    /// `None`: fresh for as long as it declares (revision mode: verified just now).
    /// `Some(0)`: stale.
    pub(crate) fresh_left: Option<Duration>,
    /// How long stale bytes would still be served here.
    pub(crate) stale_left: Duration,
}

impl Window {
    /// Bytes that are stale here, servable for `stale_left` more.
    pub(crate) fn stale(stale_left: Duration) -> Self {
        Self {
            fresh_left: Some(Duration::ZERO),
            stale_left,
        }
    }
}

/// Rewrites the lifetime directives of `headers` (see the module docs) for bytes `age`
/// seconds old with `window` left here.
pub(crate) fn fit(headers: &mut HeaderMap, age: u64, window: Window) {
    for name in [CACHE_CONTROL, CDN_CACHE_CONTROL, SURROGATE_CONTROL] {
        if !headers.contains_key(&name) {
            continue;
        }
        if let Some(value) = fitted(headers, &name, age, window) {
            headers.insert(name, value);
        }
    }
}

/// The field's new value, or `None` when it needs no change.
fn fitted(headers: &HeaderMap, name: &HeaderName, age: u64, window: Window) -> Option<HeaderValue> {
    let directives: Vec<Directive<'_>> = headers
        .get_all(name)
        .flat_map(|line| parse_cache_control(line.as_bytes()))
        .collect();
    let stale = window.fresh_left == Some(Duration::ZERO);
    let forbids_stale = directives
        .iter()
        .any(|d| d.is("must-revalidate") || d.is("proxy-revalidate") || d.is("no-cache"));
    let has_lifetime = directives
        .iter()
        .any(|d| is_lifetime(d) && d.delta_seconds().is_some());
    if !has_lifetime {
        // Nothing declared, nothing to cover (heuristic freshness is the cache's own call).
        return None;
    }
    if stale && forbids_stale {
        return None;
    }
    let stale_left = window.stale_left.as_secs().max(1);
    // What the stale window must cover: from the shortest lifetime declared (the one a cache
    // that reads it counts from) to this cache's own end of serving these bytes.
    let shortest = directives
        .iter()
        .filter(|d| is_lifetime(d))
        .filter_map(Directive::delta_seconds)
        .map(u64::from)
        .min()
        .unwrap_or(0);
    let cover = age.saturating_sub(shortest).saturating_add(stale_left);
    let mut changed = false;
    let mut out: Vec<u8> = Vec::with_capacity(64);
    let mut swr_done = false;
    for d in &directives {
        let mut value: Option<Vec<u8>> = d.value().map(<[u8]>::to_vec);
        if stale {
            if d.is("stale-while-revalidate") {
                swr_done = true;
                if d.delta_seconds().map_or(0, u64::from) < cover {
                    value = Some(cover.to_string().into_bytes());
                    changed = true;
                }
            }
        } else if is_lifetime(d)
            && let Some(declared) = d.delta_seconds().map(u64::from)
            && declared > 0
        {
            let left = window
                .fresh_left
                .map_or(declared, |left| left.as_secs().max(1).min(declared));
            let fitted = declared.max(age.saturating_add(left));
            if fitted != declared {
                value = Some(fitted.to_string().into_bytes());
                changed = true;
            }
        }
        if !out.is_empty() {
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(d.name());
        if let Some(value) = value {
            out.push(b'=');
            out.extend_from_slice(&value);
        }
    }
    if stale && !swr_done {
        out.extend_from_slice(format!(", stale-while-revalidate={cover}").as_bytes());
        changed = true;
    }
    if !changed {
        return None;
    }
    HeaderValue::from_bytes(&out).ok()
}

fn is_lifetime(d: &Directive<'_>) -> bool {
    d.is("max-age") || d.is("s-maxage")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(cc: &str, age: u64, window: Window) -> String {
        let mut headers = HeaderMap::new();
        headers.insert(CACHE_CONTROL, HeaderValue::from_str(cc).unwrap());
        fit(&mut headers, age, window);
        headers
            .get(CACHE_CONTROL)
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned()
    }

    fn fresh(left: u64) -> Window {
        Window {
            fresh_left: Some(Duration::from_secs(left)),
            stale_left: Duration::from_secs(60),
        }
    }

    #[test]
    fn a_fresh_build_goes_out_as_declared() {
        assert_eq!(
            run("public, max-age=15", 0, fresh(30)),
            "public, max-age=15"
        );
        // A TTL shorter than the declared lifetime never shortens it.
        assert_eq!(
            run("public, max-age=60", 0, fresh(30)),
            "public, max-age=60"
        );
    }

    #[test]
    fn an_old_fresh_hit_declares_a_lifetime_covering_its_age() {
        // 20 s old, 10 s fresh left here: 20 + min(15, 10).
        assert_eq!(
            run("public, max-age=15", 20, fresh(10)),
            "public, max-age=30"
        );
        // 2 s old, plenty left: 15 s more downstream.
        assert_eq!(
            run("public, max-age=15, s-maxage=20", 2, fresh(28)),
            "public, max-age=17, s-maxage=22"
        );
        // Revision mode: verified just now, fresh as declared.
        let verified = Window {
            fresh_left: None,
            stale_left: Duration::ZERO,
        };
        assert_eq!(run("max-age=15", 0, verified), "max-age=15");
    }

    #[test]
    fn stale_bytes_are_stale_downstream_and_say_how_long_they_may_be_served() {
        let window = Window::stale(Duration::from_secs(25));
        // 35 s old, 15 s declared: 20 s past it, plus the 25 s this cache still serves them.
        assert_eq!(
            run("public, max-age=15", 35, window),
            "public, max-age=15, stale-while-revalidate=45"
        );
        // A longer declared window is kept; a shorter one is raised.
        assert_eq!(
            run("max-age=15, stale-while-revalidate=100", 35, window),
            "max-age=15, stale-while-revalidate=100"
        );
        assert_eq!(
            run(
                "max-age=15, stale-while-revalidate=10, s-maxage=30",
                35,
                window
            ),
            "max-age=15, stale-while-revalidate=45, s-maxage=30"
        );
        // must-revalidate forbids serving stale downstream: it arrives stale, as it asks.
        assert_eq!(
            run("max-age=15, must-revalidate", 35, window),
            "max-age=15, must-revalidate"
        );
    }

    #[test]
    fn every_targeted_field_is_fitted_and_others_are_left_alone() {
        let mut headers = HeaderMap::new();
        headers.insert(
            CACHE_CONTROL,
            HeaderValue::from_static("max-age=0, must-revalidate"),
        );
        headers.insert(CDN_CACHE_CONTROL, HeaderValue::from_static("max-age=600"));
        headers.insert(SURROGATE_CONTROL, HeaderValue::from_static("max-age=600"));
        fit(&mut headers, 700, fresh(100));
        // "Always revalidate" stays that, even for caches that ignore `Age`.
        assert_eq!(
            headers.get(CACHE_CONTROL).unwrap(),
            "max-age=0, must-revalidate"
        );
        assert_eq!(headers.get(CDN_CACHE_CONTROL).unwrap(), "max-age=800");
        assert_eq!(headers.get(SURROGATE_CONTROL).unwrap(), "max-age=800");
    }

    #[test]
    fn no_lifetime_no_change() {
        assert_eq!(run("no-store", 100, fresh(1)), "no-store");
        assert_eq!(run("max-age=abc", 100, fresh(1)), "max-age=abc");
    }
}
