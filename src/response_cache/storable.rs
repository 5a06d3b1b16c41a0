//! Which requests may be answered from a shared cache and which responses may be stored
//! (RFC 9111 §3 and §3.5, and Varnish's builtin rules).
//!
//! By default the cache is *shared*: a request carrying `Authorization` or `Cookie` bypasses
//! it (actix-session, unlike Django's sessions, adds no `Vary: Cookie`, so nothing else would
//! keep one user's page from another), and a response is stored only if it is a `200` with no
//! `Set-Cookie`, no `private`, `no-store` or `no-cache`, no `Vary: *`, and a body in memory.
//! [`ResponseCacheBuilder::key_by`](super::ResponseCacheBuilder::key_by) opts in to caching
//! credentialed requests, each under its own key.

use actix_web::HttpRequest;
use actix_web::http::header::{
    AUTHORIZATION, COOKIE, HeaderMap, HeaderName, RANGE, SET_COOKIE, VARY,
};
use actix_web::http::{Method, StatusCode};

use super::key::{QueryKey, base_key, query_forces_refresh};
use crate::cache_control::cache_control_contains;

/// Names the user behind a credentialed request (a cache's `key_by`).
pub(crate) type UserKey = dyn Fn(&HttpRequest) -> Option<String> + Send + Sync;

/// The URL part of the key of `req` (see [`base_key`]), or why the cache must not touch it.
/// `key_by` names the user of a credentialed request, when the cache keys by user; `query`
/// says how the query string enters the key.
pub(crate) fn admit(
    req: &HttpRequest,
    key_by: Option<&UserKey>,
    forced_refresh: bool,
    query: &QueryKey,
) -> Result<String, &'static str> {
    let mut reason = request_bypass(req, key_by.is_some());
    let user = match (key_by, reason) {
        (Some(key_by), None) => {
            let user = key_by(req);
            if user.is_none() && request_bypass(req, false).is_some() {
                reason = Some("credentials without a user key");
            }
            user
        }
        _ => None,
    };
    match reason {
        Some(reason) => Err(reason),
        None => Ok(base_key(req, user.as_deref(), forced_refresh, query)),
    }
}

/// Whether the client asked for a rebuild (`?refresh=true`, `Cache-Control: no-cache`) and
/// the cache honours that (`forced_refresh`).
pub(crate) fn forced(req: &HttpRequest, forced_refresh: bool) -> bool {
    forced_refresh
        && (query_forces_refresh(req.query_string())
            || cache_control_contains(req.headers(), "no-cache"))
}

/// Why a request bypasses the cache, or `None` if it may be served from it.
pub(crate) fn request_bypass(req: &HttpRequest, keyed_by_user: bool) -> Option<&'static str> {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return Some("method");
    }
    let headers = req.headers();
    if !keyed_by_user && (headers.contains_key(AUTHORIZATION) || headers.contains_key(COOKIE)) {
        return Some("credentials");
    }
    if headers.contains_key(RANGE) {
        return Some("range");
    }
    // RFC 9111 §5.2.1.5: a cache must not store a response to a `no-store` request.
    if cache_control_contains(headers, "no-store") {
        return Some("request no-store");
    }
    None
}

/// Why a response must not be stored, or `None` if it may be.
pub(crate) fn response_unstorable(
    status: StatusCode,
    headers: &HeaderMap,
    keyed_by_user: bool,
) -> Option<&'static str> {
    if status != StatusCode::OK {
        return Some("status");
    }
    if headers.contains_key(SET_COOKIE) {
        return Some("set-cookie");
    }
    if cache_control_contains(headers, "no-store") {
        return Some("no-store");
    }
    if cache_control_contains(headers, "no-cache") {
        return Some("no-cache");
    }
    if !keyed_by_user && cache_control_contains(headers, "private") {
        return Some("private");
    }
    if vary_names(headers).any(|name| name == "*") {
        return Some("vary *");
    }
    // Fail closed: a `Vary` we cannot read would otherwise share one variant with all.
    let unreadable = headers.get_all(VARY).any(|value| value.to_str().is_err())
        || vary_names(headers).any(|name| HeaderName::from_bytes(name.as_bytes()).is_err());
    if unreadable {
        return Some("unreadable vary");
    }
    None
}

/// The header names in the response's `Vary` lines, lowercased, without duplicates or `*`
/// handling (the caller refuses `*` first).
pub(crate) fn vary_names(headers: &HeaderMap) -> impl Iterator<Item = String> + '_ {
    headers
        .get_all(VARY)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{CACHE_CONTROL, HeaderValue};
    use actix_web::test::TestRequest;

    use super::*;

    #[test]
    fn credentials_bypass_unless_keyed_by_user() {
        let req = TestRequest::get()
            .insert_header((AUTHORIZATION, "Bearer x"))
            .to_http_request();
        assert_eq!(request_bypass(&req, false), Some("credentials"));
        assert_eq!(request_bypass(&req, true), None);
        let req = TestRequest::get()
            .insert_header((COOKIE, "s=1"))
            .to_http_request();
        assert_eq!(request_bypass(&req, false), Some("credentials"));
        assert_eq!(
            request_bypass(&TestRequest::post().to_http_request(), false),
            Some("method")
        );
        assert_eq!(
            request_bypass(&TestRequest::get().to_http_request(), false),
            None
        );
    }

    #[test]
    fn unstorable_responses() {
        let with = |name, value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(name, HeaderValue::from_static(value));
            headers
        };
        let ok = StatusCode::OK;
        assert_eq!(response_unstorable(ok, &HeaderMap::new(), false), None);
        assert_eq!(
            response_unstorable(StatusCode::NOT_FOUND, &HeaderMap::new(), false),
            Some("status")
        );
        assert_eq!(
            response_unstorable(ok, &with(SET_COOKIE, "a=b"), true),
            Some("set-cookie")
        );
        assert_eq!(
            response_unstorable(ok, &with(CACHE_CONTROL, "private, max-age=5"), false),
            Some("private")
        );
        assert_eq!(
            response_unstorable(ok, &with(CACHE_CONTROL, "private"), true),
            None
        );
        assert_eq!(
            response_unstorable(ok, &with(CACHE_CONTROL, "no-store"), true),
            Some("no-store")
        );
        assert_eq!(
            response_unstorable(ok, &with(CACHE_CONTROL, "No-Cache"), false),
            Some("no-cache")
        );
        assert_eq!(
            response_unstorable(ok, &with(VARY, "Accept, *"), false),
            Some("vary *")
        );
        assert_eq!(
            response_unstorable(ok, &with(VARY, "Accept, bad name"), false),
            Some("unreadable vary")
        );
        let mut obs_text = HeaderMap::new();
        obs_text.insert(
            VARY,
            HeaderValue::from_bytes(b"Accept-\xffLanguage").unwrap(),
        );
        assert_eq!(
            response_unstorable(ok, &obs_text, false),
            Some("unreadable vary")
        );
    }
}
