//! Cache keys (RFC 9111 §2, and §4.1 for `Vary`): host, path and query (without our
//! `refresh=true`), the user key when the policy keys by user, then the request's values of
//! every header the response varies on. Like Django's `learn_cache_key`, the `Vary` list is
//! learned per URL from the first stored response and the entry keeps the values it was built
//! for, rechecked on every hit.
//!
//! The query goes in as sent by default. [`QueryKey::Normalized`] puts it in canonical form
//! (pairs sorted by name, percent-encoding and `+` decoded and encoded one way), and
//! [`QueryKey::Only`] also drops every parameter not on an allow-list: Varnish's
//! `std.querysort` plus an allow-list `regsub`, the defence against cache busting (random
//! query strings making every request a miss and a new entry).

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

/// How the query string enters the key (the builders' `normalize_query` and `query_keys`).
#[derive(Debug, Clone, Default)]
pub(crate) enum QueryKey {
    /// As sent, minus empty pairs.
    #[default]
    Verbatim,
    /// In canonical form ([`normalize_query`]).
    Normalized,
    /// In canonical form, with only these parameter names (decoded bytes, sorted).
    Only(Arc<[Box<[u8]>]>),
}

impl QueryKey {
    /// An allow-list of parameter names.
    pub(crate) fn only<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut names: Vec<Box<[u8]>> = names
            .into_iter()
            .map(|name| name.into().into_bytes().into_boxed_slice())
            .collect();
        names.sort();
        names.dedup();
        Self::Only(names.into())
    }
}

/// The URL part of the key: `scheme://host path?query` (without `refresh=true` when
/// `strip_refresh`, i.e. when it forces a refresh rather than being an ordinary parameter;
/// the query as `query` says), and the user key after a NUL (which a request line cannot
/// contain, so no URL can imitate another user's key).
pub(crate) fn base_key(
    req: &HttpRequest,
    user: Option<&str>,
    strip_refresh: bool,
    query: &QueryKey,
) -> String {
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
    let allowed = match query {
        QueryKey::Verbatim => {
            let mut first = true;
            for pair in req.query_string().split('&') {
                if pair.is_empty() || (strip_refresh && REFRESH_PAIRS.contains(&pair)) {
                    continue;
                }
                key.push(if first { '?' } else { '&' });
                first = false;
                key.push_str(pair);
            }
            None
        }
        QueryKey::Normalized => Some(None),
        QueryKey::Only(names) => Some(Some(&names[..])),
    };
    if let Some(allowed) = allowed {
        let start = key.len();
        key.push('?');
        normalize_query(req.query_string(), allowed, strip_refresh, &mut key);
        if key.len() == start + 1 {
            key.truncate(start);
        }
    }
    if let Some(user) = user {
        key.push('\0');
        key.push_str(user);
    }
    key
}

/// Appends `query` in canonical form to `out`: empty pairs (and, when `strip_refresh`, our
/// `refresh=true`) dropped; names and values decoded as `application/x-www-form-urlencoded`
/// (`+` is a space, `%XX` a byte; a `%` not followed by two hex digits stays itself) and
/// encoded back one way, so `a=%31` and `a=1` are one key, as they are one value to
/// `web::Query`, serde and Django; pairs stably sorted by decoded name, so the order of
/// different names does not matter while repeated names keep their values in the order
/// sent (frameworks disagree on which of them wins: Django's `QueryDict` takes the last,
/// others the first, serde refuses them). With `allowed` (sorted), names not in it are
/// dropped.
pub(crate) fn normalize_query(
    query: &str,
    allowed: Option<&[Box<[u8]>]>,
    strip_refresh: bool,
    out: &mut String,
) {
    let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for pair in query.split('&') {
        if pair.is_empty() || (strip_refresh && REFRESH_PAIRS.contains(&pair)) {
            continue;
        }
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = form_decode(name);
        if allowed
            .is_some_and(|allowed| allowed.binary_search_by(|n| (**n).cmp(&name[..])).is_err())
        {
            continue;
        }
        pairs.push((name, form_decode(value)));
    }
    // Stable: repeated names keep the order they were sent in.
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        form_encode(name, out);
        out.push('=');
        form_encode(value, out);
    }
}

/// `application/x-www-form-urlencoded` decoding, to bytes (never lossy: two different byte
/// strings stay two keys).
fn form_decode(part: &str) -> Vec<u8> {
    let bytes = part.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| Some(hex(*bytes.get(i + 1)?)? << 4 | hex(*bytes.get(i + 2)?)?))
            .flatten();
        match (bytes[i], escaped) {
            (_, Some(byte)) => {
                decoded.push(byte);
                i += 3;
                continue;
            }
            (b'+', None) => decoded.push(b' '),
            (byte, None) => decoded.push(byte),
        }
        i += 1;
    }
    decoded
}

fn hex(byte: u8) -> Option<u8> {
    (byte as char)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// `application/x-www-form-urlencoded` encoding (the WHATWG URL standard's byte serializer:
/// `*-._` and alphanumerics as they are, space as `+`, any other byte as `%XX`).
fn form_encode(bytes: &[u8], out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &byte in bytes {
        match byte {
            b'*' | b'-' | b'.' | b'_' | b'0'..=b'9' | b'A'..=b'Z' | b'a'..=b'z' => {
                out.push(char::from(byte));
            }
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(char::from(HEX[usize::from(byte >> 4)]));
                out.push(char::from(HEX[usize::from(byte & 15)]));
            }
        }
    }
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
        assert_eq!(
            base_key(&plain, None, true, &QueryKey::Verbatim),
            base_key(&forced, None, true, &QueryKey::Verbatim)
        );
        assert!(query_forces_refresh("refresh=true&x=1"));
        assert!(!query_forces_refresh("refresh=false"));
        assert!(!query_forces_refresh("norefresh=true"));
    }

    #[test]
    fn users_and_variants_get_their_own_keys() {
        let req = TestRequest::get().uri("/a").to_http_request();
        assert_ne!(
            base_key(&req, Some("alice"), true, &QueryKey::Verbatim),
            base_key(&req, Some("bob"), true, &QueryKey::Verbatim)
        );
        assert_ne!(
            base_key(&req, Some("alice"), true, &QueryKey::Verbatim),
            base_key(&req, None, true, &QueryKey::Verbatim)
        );
        assert!(has_user(&base_key(
            &req,
            Some("alice"),
            true,
            &QueryKey::Verbatim
        )));
        assert!(!has_user(&base_key(&req, None, true, &QueryKey::Verbatim)));

        let names = [HeaderName::from_static("accept-language")];
        let fr = TestRequest::get()
            .insert_header(("accept-language", "fr"))
            .to_http_request();
        let de = TestRequest::get()
            .insert_header(("accept-language", "de"))
            .to_http_request();
        let base = base_key(&req, None, true, &QueryKey::Verbatim);
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
            let _ = query_forces_refresh(&query);
            for (rules, growth) in [
                (QueryKey::Verbatim, 1),
                // A decoded byte is encoded back in at most three (`%XX`).
                (QueryKey::Normalized, 3),
                (QueryKey::only(["a", "b"]), 3),
            ] {
                let key = base_key(&req, None, refresh, &rules);
                proptest::prop_assert!(key.len() <= "http:///a?".len() + growth * query.len() + 16);
                // Stripped, no query pair of the key forces a refresh any more. (Normalised,
                // `refresh=%74rue`, an ordinary parameter, is written `refresh=true`.)
                if refresh
                    && growth == 1
                    && let Some((_, key_query)) = key.split_once('?')
                {
                    proptest::prop_assert!(!query_forces_refresh(key_query));
                }
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

    /// The key's query for `query` under `rules`.
    fn key_query(query: &str, rules: &QueryKey) -> String {
        let req = TestRequest::get()
            .uri(&format!("/a?{query}"))
            .to_http_request();
        let key = base_key(&req, None, true, rules);
        key.split_once('?')
            .map(|(_, q)| q.to_owned())
            .unwrap_or_default()
    }

    #[test]
    fn normalized_queries_merge_spellings_of_one_request() {
        let rules = QueryKey::Normalized;
        let one = key_query("b=2&a=1", &rules);
        assert_eq!(one, "a=1&b=2");
        for other in ["a=1&b=2", "a=%31&b=2", "&a=1&&b=2&", "b=2&refresh=true&a=1"] {
            assert_eq!(key_query(other, &rules), one, "{other}");
        }
        assert_eq!(key_query("q=a+b", &rules), key_query("q=a%20b", &rules));
        assert_eq!(key_query("flag", &rules), "flag=");
        assert_eq!(key_query("x=%zz&y=%", &rules), "x=%25zz&y=%25");
        // Repeated names keep their order: which one wins is the handler's business.
        assert_eq!(key_query("p=2&a=0&p=1", &rules), "a=0&p=2&p=1");
        assert_ne!(key_query("p=1&p=2", &rules), key_query("p=2&p=1", &rules));
        // Verbatim (the default) keeps the query as sent.
        assert_eq!(key_query("b=2&a=1", &QueryKey::Verbatim), "b=2&a=1");
        // Nothing left: no `?` either.
        let req = TestRequest::get().uri("/a?refresh=true").to_http_request();
        assert_eq!(base_key(&req, None, true, &rules), "http:///a");
    }

    #[test]
    fn an_allow_list_keeps_only_its_parameters() {
        let rules = QueryKey::only(["page", "sort"]);
        assert_eq!(
            key_query("utm_source=x&sort=name&_=17&page=2", &rules),
            "page=2&sort=name"
        );
        assert_eq!(key_query("pa%67e=2&sort=name", &rules), "page=2&sort=name");
        assert_eq!(key_query("_=1", &rules), "");
        assert_eq!(
            key_query("page=1", &QueryKey::only(Vec::<String>::new())),
            ""
        );
    }

    /// Query pairs built from a small alphabet, so names repeat and escapes occur.
    fn pairs() -> impl proptest::strategy::Strategy<Value = Vec<(String, String)>> {
        proptest::collection::vec(("[a-c%+2 ]{0,3}", "[a-c%+=0-9 ]{0,4}"), 0..8)
    }

    fn join(pairs: &[(String, String)]) -> String {
        let pairs: Vec<String> = pairs.iter().map(|(n, v)| format!("{n}={v}")).collect();
        pairs.join("&")
    }

    fn normalized(query: &str, allowed: Option<&[Box<[u8]>]>) -> String {
        let mut out = String::new();
        normalize_query(query, allowed, true, &mut out);
        out
    }

    proptest::proptest! {
        #[test]
        fn normalizing_never_panics_and_is_idempotent(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
        ) {
            let query = String::from_utf8_lossy(&bytes);
            let once = normalized(&query, None);
            // What it writes is plain ASCII, safe in a URL and a key.
            proptest::prop_assert!(once.bytes().all(|b| b.is_ascii_graphic()));
            proptest::prop_assert_eq!(normalized(&once, None), once);
        }

        #[test]
        fn the_order_of_different_names_does_not_matter(
            pairs in pairs(),
            seed in proptest::num::u64::ANY,
        ) {
            // Keep the first pair of each decoded name: order across names is what may move.
            let mut seen = std::collections::HashSet::new();
            let unique: Vec<(String, String)> = pairs
                .into_iter()
                .filter(|(name, _)| seen.insert(form_decode(name)))
                .collect();
            let mut shuffled = unique.clone();
            let len = shuffled.len().max(1) as u64;
            for i in 0..shuffled.len() {
                let j = ((seed.rotate_left(i as u32) ^ i as u64) % len) as usize;
                shuffled.swap(i, j);
            }
            proptest::prop_assert_eq!(
                normalized(&join(&unique), None),
                normalized(&join(&shuffled), None)
            );
        }

        #[test]
        fn the_allow_list_is_respected(pairs in pairs()) {
            let rules = QueryKey::only(["a", "b c"]);
            let QueryKey::Only(allowed) = &rules else { unreachable!() };
            let query = join(&pairs);
            let key = normalized(&query, Some(allowed));
            let kept: Vec<Vec<u8>> = key
                .split('&')
                .filter(|pair| !pair.is_empty())
                .map(|pair| form_decode(pair.split_once('=').unwrap().0))
                .collect();
            proptest::prop_assert!(kept.iter().all(|name| name == b"a" || name == b"b c"));
            let expected = query
                .split('&')
                .filter(|pair| !pair.is_empty() && !REFRESH_PAIRS.contains(pair))
                .map(|pair| form_decode(pair.split_once('=').map_or(pair, |(n, _)| n)))
                .filter(|name| name == b"a" || name == b"b c")
                .count();
            proptest::prop_assert_eq!(kept.len(), expected);
            // The same as normalizing the listed pairs alone.
            let listed: Vec<(String, String)> = pairs
                .iter()
                .filter(|(name, _)| matches!(&form_decode(name)[..], b"a" | b"b c"))
                .cloned()
                .collect();
            proptest::prop_assert_eq!(key, normalized(&join(&listed), None));
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
