//! What a response cache tells the caches after it (browsers, proxies, CDNs), beyond the
//! response it serves: which knobs it has, and the privacy rule for requests it did not share.
//!
//! A cache that refuses to share an answer because of the request's `Cookie` or
//! `Authorization` (it may be personal) must not let a cache downstream share it either:
//! otherwise Squid stores the answer to a request with a session cookie and serves it to the
//! next client without one (observed). So such an answer is made `private` (RFC 9111
//! §5.2.2.7), unless its policy is explicitly `public` and the cache is configured to say
//! `Vary: Cookie` instead ([`vary_credentials`](super::ResponseCacheBuilder::vary_credentials)),
//! which keeps it shareable among requests with the same cookie (RFC 9110 §12.5.5).
//!
//! The same rule, seen from the other side: an answer this cache *shares* was built for a
//! request without credentials, and a request with them would not get it here. So every
//! shareable answer varies on `Cookie` and `Authorization` (as Django's session middleware
//! adds `Vary: Cookie`): a cache downstream keeps serving it to every anonymous client, but
//! never hands it to a request with a session cookie (observed without it: Squid served the
//! anonymous copy to a logged-in client).
//!
//! ```
//! use std::time::Duration;
//! use actix_conditional::response_cache::ResponseCache;
//! use actix_web::{App, HttpResponse, test, web};
//!
//! # actix_web::rt::System::new().block_on(async {
//! let cache = ResponseCache::ttl("downstream-doc", Duration::from_secs(30)).build();
//! let app = test::init_service(App::new().wrap(cache).route(
//!     "/",
//!     web::get().to(|| async {
//!         HttpResponse::Ok().insert_header(("cache-control", "public, max-age=15")).body("hi")
//!     }),
//! ))
//! .await;
//! let req = test::TestRequest::get().uri("/").insert_header(("cookie", "session=alice"));
//! let res = test::call_service(&app, req.to_request()).await;
//! // Not shared here, not shared downstream.
//! assert_eq!(res.headers().get("cache-control").unwrap(), "max-age=15, private");
//! assert_eq!(
//!     res.headers().get("cache-status").unwrap(),
//!     "actix-conditional; fwd=bypass; fwd-status=200",
//! );
//! # });
//! ```

use actix_web::HttpRequest;
use actix_web::http::header::{AUTHORIZATION, COOKIE, HeaderMap, HeaderValue, VARY};

use crate::cache_control::{
    CachePolicy, Target, cache_control_contains, patch_cache_control, patch_targeted,
    patch_vary_headers,
};

/// How a cache renders its answers for the caches after it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Downstream {
    /// Also send `X-Cache: <label>` (opt-in, for dashboards built on it).
    pub(crate) x_cache: bool,
    /// Put the cache key in `Cache-Status` (`key=`); off by default (RFC 9211 §2.7: it may
    /// reveal what the key is made of).
    pub(crate) expose_key: bool,
    /// Answers the cache bypassed for their credentials: `Vary: Cookie` instead of `private`
    /// when the answer is explicitly `public`.
    pub(crate) vary_credentials: bool,
}

/// Whether a request carries credentials (`Cookie`, `Authorization`): its answer may be
/// personal.
pub(crate) fn has_credentials(req: &HeaderMap) -> bool {
    req.contains_key(COOKIE) || req.contains_key(AUTHORIZATION)
}

/// The request fields a shared cache's answers vary on (it declines requests with them).
const CREDENTIALS: [&str; 2] = ["Cookie", "Authorization"];

impl Downstream {
    /// An answer this (shared) cache took from an entry or built to share: downstream must
    /// not hand it to requests with credentials either (see the [module docs](self)).
    pub(crate) fn shared(&self, headers: &mut HeaderMap) {
        if cache_control_contains(headers, "private") || cache_control_contains(headers, "no-store")
        {
            return;
        }
        if headers.contains_key(VARY) {
            patch_vary_headers(headers, &CREDENTIALS);
        } else {
            // Most answers vary on nothing else: no list to merge on every hit.
            headers.insert(VARY, HeaderValue::from_static("Cookie, Authorization"));
        }
    }

    /// The privacy rule of the [module docs](self), for an answer to `req`, which carries
    /// credentials: bypassed by a shared cache, or a `key_by` user's own entry.
    pub(crate) fn credentials(&self, req: &HttpRequest, headers: &mut HeaderMap) {
        let sent: Vec<&str> = [(COOKIE, "Cookie"), (AUTHORIZATION, "Authorization")]
            .into_iter()
            .filter(|(name, _)| req.headers().contains_key(name))
            .map(|(_, label)| label)
            .collect();
        if sent.is_empty()
            || cache_control_contains(headers, "private")
            || cache_control_contains(headers, "no-store")
        {
            return;
        }
        if self.vary_credentials && cache_control_contains(headers, "public") {
            patch_vary_headers(headers, &sent);
            return;
        }
        tracing::debug!(
            credentials = ?sent,
            "response cache: bypassed for credentials; marked private downstream"
        );
        patch_cache_control(headers, &CachePolicy::new().private());
        // A CDN obeys its targeted field instead of `Cache-Control` (RFC 9213 §2.2), so a
        // targeted lifetime would still let it store the answer: make that private too.
        for target in [Target::Cdn, Target::Surrogate] {
            if headers.contains_key(target.header_name()) {
                patch_targeted(headers, &target, &CachePolicy::new().private());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{CACHE_CONTROL, CDN_CACHE_CONTROL};
    use actix_web::test::TestRequest;

    use super::*;

    fn answer(cache_control: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(CACHE_CONTROL, HeaderValue::from_static(cache_control));
        headers.insert(CDN_CACHE_CONTROL, HeaderValue::from_static("max-age=600"));
        headers
    }

    #[test]
    fn a_credentialed_answer_is_private_in_every_field_a_cache_obeys() {
        let req = TestRequest::get()
            .insert_header((COOKIE, "session=alice"))
            .to_http_request();
        let mut headers = answer("max-age=0, must-revalidate");
        Downstream::default().credentials(&req, &mut headers);
        assert_eq!(
            headers.get(CACHE_CONTROL).unwrap(),
            "max-age=0, must-revalidate, private"
        );
        let cdn = headers.get(CDN_CACHE_CONTROL).unwrap().to_str().unwrap();
        assert!(cdn.contains("private"), "{cdn}");
    }

    #[test]
    fn anonymous_requests_and_private_answers_are_left_alone() {
        let anonymous = TestRequest::get().to_http_request();
        let mut headers = answer("public, max-age=15");
        Downstream::default().credentials(&anonymous, &mut headers);
        assert_eq!(headers.get(CACHE_CONTROL).unwrap(), "public, max-age=15");

        let mut private = answer("private, max-age=15");
        Downstream::default().shared(&mut private);
        assert!(!private.contains_key(VARY));
        let mut shared = answer("public, max-age=15");
        Downstream::default().shared(&mut shared);
        assert_eq!(shared.get(VARY).unwrap(), "Cookie, Authorization");
    }
}
