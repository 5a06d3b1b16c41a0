//! Cache keys (RFC 9111 §2, and §4.1 for `Vary`): host, path and query (without our
//! `refresh=true`), the user key when the policy keys by user, then the request's values of
//! every header the response varies on. Like Django's `learn_cache_key`, the `Vary` list is
//! learned per URL from the first stored response and the entry keeps the values it was built
//! for, rechecked on every hit.

use std::fmt::Write as _;
use std::sync::Arc;

use actix_web::HttpRequest;
use actix_web::http::header::{HOST, HeaderMap, HeaderName, HeaderValue};

/// The query pair that forces a refresh; it is left out of the key.
const REFRESH_PAIRS: [&str; 2] = ["refresh=true", "refresh=1"];

/// Whether the query string asks for a forced refresh (`?refresh=true`).
pub(crate) fn query_forces_refresh(query: &str) -> bool {
    query.split('&').any(|pair| REFRESH_PAIRS.contains(&pair))
}

/// The URL part of the key: `scheme://host path?query` (without `refresh=true` when
/// `strip_refresh`, i.e. when it forces a refresh rather than being an ordinary parameter), and the user key after a NUL (which a request
/// line cannot contain, so no URL can imitate another user's key).
pub(crate) fn base_key(req: &HttpRequest, user: Option<&str>, strip_refresh: bool) -> String {
    // The request's own authority (absolute-form or HTTP/2 `:authority`, else `Host`), not
    // `connection_info()`: that one parses `Forwarded` headers and allocates on every request,
    // and this is the hit path.
    let host = match req.uri().authority() {
        Some(authority) => authority.as_str(),
        None => req
            .headers()
            .get(HOST)
            .and_then(|host| host.to_str().ok())
            .unwrap_or(""),
    };
    let mut key = String::with_capacity(host.len() + req.uri().path().len() + 40);
    // The scheme too (http-spec §6.2): a TLS and a plain listener may serve different bytes.
    key.push_str(if req.app_config().secure() {
        "https://"
    } else {
        "http://"
    });
    key.push_str(host);
    key.push_str(req.uri().path());
    let mut first = true;
    for pair in req.query_string().split('&') {
        if pair.is_empty() || (strip_refresh && REFRESH_PAIRS.contains(&pair)) {
            continue;
        }
        key.push(if first { '?' } else { '&' });
        first = false;
        key.push_str(pair);
    }
    if let Some(user) = user {
        key.push('\0');
        key.push_str(user);
    }
    key
}

/// Whether a [`base_key`] holds a user key (the NUL before it; no URL contains one).
pub(crate) fn has_user(base: &str) -> bool {
    base.contains('\0')
}

/// The request's values of the `names` headers (several field lines joined with `, `).
pub(crate) fn vary_values(
    names: &[HeaderName],
    headers: &HeaderMap,
) -> Vec<(HeaderName, Option<HeaderValue>)> {
    names
        .iter()
        .map(|name| {
            let mut lines = headers.get_all(name);
            let value = match (lines.next(), lines.next()) {
                (None, _) => None,
                (Some(one), None) => Some(one.clone()),
                (Some(first), Some(second)) => {
                    let mut joined = first.as_bytes().to_vec();
                    for line in std::iter::once(second).chain(lines) {
                        joined.extend_from_slice(b", ");
                        joined.extend_from_slice(line.as_bytes());
                    }
                    HeaderValue::from_bytes(&joined).ok()
                }
            };
            (name.clone(), value)
        })
        .collect()
}

/// The full key: the base, then each varied header's value after a NUL.
pub(crate) fn full_key(base: &str, vary: &[(HeaderName, Option<HeaderValue>)]) -> Arc<str> {
    if vary.is_empty() {
        return Arc::from(base);
    }
    let mut key = String::from(base);
    for (name, value) in vary {
        let _ = write!(key, "\0{name}=");
        match value {
            // Lossy is fine: the value goes into the key only to tell variants apart.
            Some(value) => key.push_str(&String::from_utf8_lossy(value.as_bytes())),
            None => key.push('\u{1}'),
        }
    }
    Arc::from(key)
}

/// Whether a request's values of the varied headers equal the ones an entry was built for.
pub(crate) fn vary_matches(
    built_for: &[(HeaderName, Option<HeaderValue>)],
    headers: &HeaderMap,
) -> bool {
    let names: Vec<HeaderName> = built_for.iter().map(|(name, _)| name.clone()).collect();
    vary_values(&names, headers) == built_for
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    #[test]
    fn refresh_is_not_part_of_the_key() {
        let plain = TestRequest::get().uri("/a?x=1").to_http_request();
        let forced = TestRequest::get()
            .uri("/a?refresh=true&x=1")
            .to_http_request();
        assert_eq!(base_key(&plain, None, true), base_key(&forced, None, true));
        assert!(query_forces_refresh("refresh=true&x=1"));
        assert!(!query_forces_refresh("refresh=false"));
        assert!(!query_forces_refresh("norefresh=true"));
    }

    #[test]
    fn users_and_variants_get_their_own_keys() {
        let req = TestRequest::get().uri("/a").to_http_request();
        assert_ne!(
            base_key(&req, Some("alice"), true),
            base_key(&req, Some("bob"), true)
        );
        assert_ne!(
            base_key(&req, Some("alice"), true),
            base_key(&req, None, true)
        );
        assert!(has_user(&base_key(&req, Some("alice"), true)));
        assert!(!has_user(&base_key(&req, None, true)));

        let names = [HeaderName::from_static("accept-language")];
        let fr = TestRequest::get()
            .insert_header(("accept-language", "fr"))
            .to_http_request();
        let de = TestRequest::get()
            .insert_header(("accept-language", "de"))
            .to_http_request();
        let base = base_key(&req, None, true);
        let fr_vary = vary_values(&names, fr.headers());
        let de_vary = vary_values(&names, de.headers());
        assert_ne!(full_key(&base, &fr_vary), full_key(&base, &de_vary));
        assert!(vary_matches(&fr_vary, fr.headers()));
        assert!(!vary_matches(&fr_vary, de.headers()));
        assert!(!vary_matches(&fr_vary, req.headers()));
    }

    proptest::proptest! {
        #[test]
        fn any_query_gives_a_bounded_key_without_panic(
            query in "[A-Za-z0-9=&%._~+-]{0,400}",
            refresh in proptest::bool::ANY,
        ) {
            let req = TestRequest::get().uri(&format!("/a?{query}")).to_http_request();
            let key = base_key(&req, None, refresh);
            proptest::prop_assert!(key.len() <= "http:///a?".len() + query.len() + 16);
            let _ = query_forces_refresh(&query);
            // Stripped, no query pair of the key forces a refresh any more.
            if refresh && let Some((_, key_query)) = key.split_once('?') {
                proptest::prop_assert!(!query_forces_refresh(key_query));
            }
        }

        #[test]
        fn any_header_bytes_in_vary_values_never_panic(
            lines in proptest::collection::vec(proptest::collection::vec(
                proptest::prop_oneof![proptest::strategy::Just(b'\t'), 0x20u8..0x7f, 0x80u8..=0xff],
                0..64,
            ), 0..4),
        ) {
            let mut headers = HeaderMap::new();
            let name = HeaderName::from_static("accept-language");
            for line in &lines {
                headers.append(name.clone(), HeaderValue::from_bytes(line).unwrap());
            }
            let values = vary_values(std::slice::from_ref(&name), &headers);
            let _ = full_key("http://h/a", &values);
            proptest::prop_assert!(vary_matches(&values, &headers));
        }
    }

    #[test]
    fn repeated_field_lines_are_joined() {
        let mut headers = HeaderMap::new();
        let name = HeaderName::from_static("accept");
        headers.append(name.clone(), HeaderValue::from_static("a"));
        headers.append(name.clone(), HeaderValue::from_static("b"));
        let values = vary_values(std::slice::from_ref(&name), &headers);
        assert_eq!(values[0].1.as_ref().unwrap(), "a, b");
    }
}
