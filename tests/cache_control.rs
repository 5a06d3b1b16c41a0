//! Property tests for `actix_conditional::cache_control`: hostile `Cache-Control`, `Vary` and
//! targeted (`CDN-Cache-Control`, `Surrogate-Control`) headers never panic, always yield one
//! valid field line, and re-parse to the same thing.
//!
//! Cases come from `ProptestConfig::default()`, so `PROPTEST_CASES=5000 cargo test --test
//! cache_control` runs more of them.

use actix_conditional::cache_control::{
    CachePolicy, DELTA_SECONDS_MAX, SURROGATE_CONTROL, Target, Visibility, add_never_cache_headers,
    cache_control_contains, parse_cache_control, parse_delta_seconds, patch_cache_control,
    patch_targeted, patch_vary_headers,
};
use actix_web::http::header::{
    CACHE_CONTROL, CDN_CACHE_CONTROL, HeaderMap, HeaderName, HeaderValue, VARY,
};
use proptest::prelude::*;

// --- strategies --------------------------------------------------------------------------------

/// Bytes `HeaderValue::from_bytes` accepts, leaning towards the ones the parser cares about.
fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        4 => any::<u8>().prop_map(|b| vec![if (b < 0x20 && b != b'\t') || b == 0x7f { b'x' } else { b }]),
        2 => Just(b",".to_vec()),
        2 => Just(b"=".to_vec()),
        2 => Just(b"\"".to_vec()),
        1 => Just(b"\\".to_vec()),
        2 => Just(b" ".to_vec()),
        1 => Just(b"\t".to_vec()),
        2 => prop::sample::select(vec![
            "max-age", "MAX-AGE", "s-maxage", "no-cache", "no-store", "public", "private",
            "Private", "must-revalidate", "immutable", "stale-if-error", "*", "Cookie",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        2 => "[0-9]{1,25}".prop_map(String::into_bytes),
        1 => Just(b"-".to_vec()),
        // Structured-field syntax, for the targeted fields (RFC 8941).
        1 => prop::sample::select(vec![";", "?1", "(", ")", ":", "*", "1.5", "_", "/"])
            .prop_map(|s| s.as_bytes().to_vec()),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
}

fn header_lines() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(header_bytes(), 0..4)
}

fn policy() -> impl Strategy<Value = CachePolicy> {
    let secs = || prop::option::of(prop_oneof![Just(0_u32), Just(u32::MAX), any::<u32>()]);
    (
        (0_u8..3, secs(), secs(), secs(), secs()),
        prop::array::uniform5(any::<bool>()),
    )
        .prop_map(|((vis, max_age, s_maxage, swr, sie), flags)| {
            let mut p = CachePolicy::new();
            p = match vis {
                1 => p.public(),
                2 => p.private(),
                _ => p,
            };
            let set = |p: CachePolicy, v: Option<u32>, f: fn(CachePolicy, u32) -> CachePolicy| {
                v.map_or(p, |v| f(p, v))
            };
            p = set(p, max_age, CachePolicy::max_age);
            p = set(p, s_maxage, CachePolicy::s_maxage);
            p = set(p, swr, CachePolicy::stale_while_revalidate);
            p = set(p, sie, CachePolicy::stale_if_error);
            let flag_setters: [fn(CachePolicy) -> CachePolicy; 5] = [
                CachePolicy::no_cache,
                CachePolicy::no_store,
                CachePolicy::must_revalidate,
                CachePolicy::proxy_revalidate,
                CachePolicy::immutable,
            ];
            for (on, setter) in flags.into_iter().zip(flag_setters) {
                if on {
                    p = setter(p);
                }
            }
            p
        })
}

fn map_with(name: &actix_web::http::header::HeaderName, lines: &[Vec<u8>]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in lines {
        headers.append(
            name.clone(),
            HeaderValue::from_bytes(line).expect("valid bytes"),
        );
    }
    headers
}

fn single_line(headers: &HeaderMap, name: &actix_web::http::header::HeaderName) -> Option<Vec<u8>> {
    let mut lines = headers.get_all(name);
    let first = lines.next().map(|v| v.as_bytes().to_vec());
    assert!(lines.next().is_none(), "more than one {name} line");
    first
}

/// A policy read back from a rendered `Cache-Control`: every directive `CachePolicy` knows,
/// each at most once; `None` if anything else (or a repeat, or a bad value) is there.
fn read_policy(value: &[u8]) -> Option<CachePolicy> {
    let mut policy = CachePolicy::new();
    let mut seen = std::collections::HashSet::new();
    for d in parse_cache_control(value) {
        let name = std::str::from_utf8(d.name()).ok()?.to_owned();
        if !seen.insert(name.clone()) {
            return None;
        }
        let secs = || d.delta_seconds();
        let bare = || d.value().is_none().then_some(());
        policy = match name.as_str() {
            "public" => bare().map(|()| policy.public())?,
            "private" => bare().map(|()| policy.private())?,
            "no-cache" => bare().map(|()| policy.no_cache())?,
            "no-store" => bare().map(|()| policy.no_store())?,
            "must-revalidate" => bare().map(|()| policy.must_revalidate())?,
            "proxy-revalidate" => bare().map(|()| policy.proxy_revalidate())?,
            "immutable" => bare().map(|()| policy.immutable())?,
            "max-age" => policy.max_age(secs()?),
            "s-maxage" => policy.s_maxage(secs()?),
            "stale-while-revalidate" => policy.stale_while_revalidate(secs()?),
            "stale-if-error" => policy.stale_if_error(secs()?),
            _ => return None,
        };
    }
    Some(policy)
}

/// `policy` as a cache reads it: delta-seconds past 2^31 are 2^31 (RFC 9111 §1.2.2).
fn as_read(policy: CachePolicy) -> CachePolicy {
    const CAP: u32 = DELTA_SECONDS_MAX;
    let mut p = CachePolicy::new();
    p = match policy.visibility() {
        Some(Visibility::Public) => p.public(),
        Some(Visibility::Private) => p.private(),
        None => p,
    };
    let set = |p: CachePolicy, v: Option<u32>, f: fn(CachePolicy, u32) -> CachePolicy| {
        v.map_or(p, |v| f(p, v.min(CAP)))
    };
    p = set(p, policy.max_age_secs(), CachePolicy::max_age);
    p = set(p, policy.s_maxage_secs(), CachePolicy::s_maxage);
    p = set(
        p,
        policy.stale_while_revalidate_secs(),
        CachePolicy::stale_while_revalidate,
    );
    p = set(p, policy.stale_if_error_secs(), CachePolicy::stale_if_error);
    for (on, setter) in [
        (
            policy.has_no_cache(),
            CachePolicy::no_cache as fn(CachePolicy) -> CachePolicy,
        ),
        (policy.has_no_store(), CachePolicy::no_store),
        (policy.has_must_revalidate(), CachePolicy::must_revalidate),
        (policy.has_proxy_revalidate(), CachePolicy::proxy_revalidate),
        (policy.has_immutable(), CachePolicy::immutable),
    ] {
        if on {
            p = setter(p);
        }
    }
    p
}

// --- properties --------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::default())]

    /// Render, parse, rebuild: the same policy (RFC 9111 §5.2 syntax, one directive each).
    #[test]
    fn a_rendered_policy_reads_back_as_itself(policy in policy()) {
        let rendered = policy.to_header_value();
        prop_assert_eq!(read_policy(rendered.as_bytes()), Some(as_read(policy)), "{:?}", rendered);
        // And merged into an empty response, it is the same line.
        let mut headers = HeaderMap::new();
        patch_cache_control(&mut headers, &policy);
        let merged = headers.get(CACHE_CONTROL).map(|v| v.as_bytes().to_vec()).unwrap_or_default();
        prop_assert_eq!(read_policy(&merged), Some(as_read(policy)));
    }

    #[test]
    fn patch_never_panics_and_writes_one_valid_line(lines in header_lines(), policy in policy()) {
        let mut headers = map_with(&CACHE_CONTROL, &lines);
        patch_cache_control(&mut headers, &policy);
        let out = single_line(&headers, &CACHE_CONTROL);
        if let Some(out) = &out {
            prop_assert!(HeaderValue::from_bytes(out).is_ok());
            prop_assert!(!out.is_empty());
        }
        // Every directive of the policy is in the result.
        for d in parse_cache_control(policy.to_string().as_bytes()) {
            let name = std::str::from_utf8(d.name()).unwrap();
            prop_assert!(cache_control_contains(&headers, name), "{name} missing");
        }
        // The policy's max-age is an upper bound.
        if let Some(max) = policy.max_age_secs() {
            let got: Vec<u32> = parse_cache_control(out.as_deref().unwrap_or_default())
                .filter(|d| d.is("max-age"))
                .map(|d| d.delta_seconds().unwrap())
                .collect();
            prop_assert_eq!(got.len(), 1);
            prop_assert!(got[0] <= max);
        }
        // public and private never both survive a policy that sets one of them.
        if policy.visibility().is_some() {
            prop_assert!(
                !(cache_control_contains(&headers, "public")
                    && cache_control_contains(&headers, "private"))
            );
        }
    }

    #[test]
    fn reparsing_the_result_is_stable(lines in header_lines(), policy in policy()) {
        let mut headers = map_with(&CACHE_CONTROL, &lines);
        patch_cache_control(&mut headers, &policy);
        let once = single_line(&headers, &CACHE_CONTROL);

        // Re-reading with nothing to add changes nothing...
        patch_cache_control(&mut headers, &CachePolicy::new());
        prop_assert_eq!(&single_line(&headers, &CACHE_CONTROL), &once);
        // ...and the same policy again changes nothing either.
        patch_cache_control(&mut headers, &policy);
        prop_assert_eq!(&single_line(&headers, &CACHE_CONTROL), &once);
    }

    #[test]
    fn never_cache_never_panics(lines in header_lines()) {
        let mut headers = map_with(&CACHE_CONTROL, &lines);
        add_never_cache_headers(&mut headers);
        for directive in ["max-age", "no-cache", "no-store", "must-revalidate", "private"] {
            prop_assert!(cache_control_contains(&headers, directive));
        }
        prop_assert!(!cache_control_contains(&headers, "public"));
    }

    #[test]
    fn parser_yields_trimmed_non_empty_names(bytes in header_bytes()) {
        let mut count = 0;
        for d in parse_cache_control(&bytes) {
            count += 1;
            let name = d.name();
            prop_assert!(!name.is_empty());
            prop_assert!(!name.contains(&b',') && !name.contains(&b'='));
            prop_assert!(![b' ', b'\t'].contains(&name[0]));
            prop_assert!(![b' ', b'\t'].contains(&name[name.len() - 1]));
        }
        // Bounded: never more directives than bytes.
        prop_assert!(count <= bytes.len());
    }

    #[test]
    fn delta_seconds_saturate(n in any::<u128>()) {
        let expected = u32::try_from(n.min(u128::from(DELTA_SECONDS_MAX))).unwrap();
        prop_assert_eq!(parse_delta_seconds(n.to_string().as_bytes()), Some(expected));
        prop_assert_eq!(parse_delta_seconds(format!("\"{n}\"").as_bytes()), Some(expected));
    }

    #[test]
    fn vary_is_deduplicated_and_idempotent(
        lines in header_lines(),
        new in prop::collection::vec("[ -~]{0,12}", 0..5),
    ) {
        let new: Vec<&str> = new.iter().map(String::as_str).collect();
        let mut headers = map_with(&VARY, &lines);
        patch_vary_headers(&mut headers, &new);
        let once = single_line(&headers, &VARY);
        if let Some(out) = &once {
            let members: Vec<Vec<u8>> = out
                .split(|&b| b == b',')
                .map(|m| m.trim_ascii().to_ascii_lowercase())
                .collect();
            let mut unique = members.clone();
            unique.sort();
            unique.dedup();
            prop_assert_eq!(unique.len(), members.len(), "duplicates in {:?}", out);
            prop_assert!(members.iter().all(|m| !m.is_empty()));
            prop_assert!(out.as_slice() == b"*" || !members.iter().any(|m| m.as_slice() == b"*"));
        }
        patch_vary_headers(&mut headers, &new);
        prop_assert_eq!(single_line(&headers, &VARY), once);
    }
}

// --- targeted fields (RFC 9213) ----------------------------------------------------------------

/// An RFC 9213 targeted field: `CDN-Cache-Control` or another one named.
fn dictionary_target() -> impl Strategy<Value = Target> {
    prop_oneof![
        Just(Target::Cdn),
        Just(Target::Named(HeaderName::from_static(
            "cloudflare-cdn-cache-control"
        ))),
    ]
}

/// Field lines made of plausible members (valid ones, RFC 9111 ones a dictionary rejects,
/// garbage), so merges of well-formed dictionaries are common.
fn member_lines() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let member = prop_oneof![
        "(no-cache|No-Cache|private)=\"[A-Za-z-]{1,8}\"",
        "no-cache=[a-z]{1,6}",
        "(max-age|s-maxage|stale-if-error)=[0-9]{1,17}",
        "max-age=\"[0-9]{1,3}\"",
        "(public|private|no-store|must-revalidate|ext)(;[a-z]=[0-9])?",
        "[a-z*][a-z0-9_.*-]{0,5}(=(\\?[01]|[0-9.]{1,4}|:[a-z=]{0,4}:|[A-Za-z][a-z:/]{0,3}))?",
        "[ -~]{0,6}",
    ];
    let line =
        prop::collection::vec(member, 0..6).prop_map(|members| members.join(", ").into_bytes());
    prop::collection::vec(line, 0..3)
}

/// The field parsed as an RFC 8941 Dictionary, as a targeted cache reads it (RFC 9213 §2.1).
fn dictionary(value: &[u8]) -> Result<sfv::Dictionary, String> {
    sfv::Parser::new(value)
        .with_version(sfv::Version::Rfc8941)
        .parse::<sfv::Dictionary>()
        .map_err(|error| format!("{error}: {:?}", String::from_utf8_lossy(value)))
}

proptest! {
    #![proptest_config(ProptestConfig::default())]

    #[test]
    fn targeted_patch_never_panics_and_writes_a_valid_dictionary(
        target in dictionary_target(),
        lines in prop_oneof![header_lines(), member_lines()],
        policy in policy(),
    ) {
        let name = target.header_name();
        let mut headers = map_with(&name, &lines);
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        patch_targeted(&mut headers, &target, &policy);
        // Cache-Control is not touched.
        prop_assert_eq!(headers.get(CACHE_CONTROL).unwrap(), "no-store");
        let Some(out) = single_line(&headers, &name) else {
            prop_assert!(policy.is_empty());
            return Ok(());
        };
        prop_assert!(HeaderValue::from_bytes(&out).is_ok());
        let dict = dictionary(&out).map_err(TestCaseError::fail)?;
        prop_assert!(!dict.is_empty());
        // No key twice: a dictionary keeps only a repeated key's last value (RFC 8941 §3.2),
        // so several `no-cache="field"` values must have become one.
        prop_assert_eq!(dict.len(), parse_cache_control(&out).count());
        // Every directive of the policy is a key of the result...
        for d in parse_cache_control(policy.to_string().as_bytes()) {
            let key = std::str::from_utf8(d.name()).unwrap();
            prop_assert!(dict.keys().any(|k| k.as_str() == key), "{key} missing");
        }
        // ...its max-age an sf-integer no greater than the policy's.
        if let Some(max) = policy.max_age_secs() {
            let entry = dict.iter().find(|(k, _)| k.as_str() == "max-age").map(|(_, v)| v);
            let Some(sfv::ListEntry::Item(item)) = entry else {
                return Err(TestCaseError::fail("max-age is not an item"));
            };
            let Some(got) = item.bare_item.as_integer() else {
                return Err(TestCaseError::fail("max-age is not an integer"));
            };
            prop_assert!(i64::from(got) <= i64::from(max));
        }
        if policy.visibility().is_some() {
            let has = |key: &str| dict.keys().any(|k| k.as_str() == key);
            prop_assert!(!(has("public") && has("private")));
        }

        // Patching again with the same policy, or nothing, changes nothing.
        patch_targeted(&mut headers, &target, &policy);
        prop_assert_eq!(single_line(&headers, &name), Some(out.clone()));
        patch_targeted(&mut headers, &target, &CachePolicy::new());
        prop_assert_eq!(single_line(&headers, &name), Some(out));
    }

    #[test]
    fn surrogate_control_merges_exactly_as_cache_control(lines in header_lines(), policy in policy()) {
        let mut surrogate = map_with(&SURROGATE_CONTROL, &lines);
        patch_targeted(&mut surrogate, &Target::Surrogate, &policy);
        let mut cache_control = map_with(&CACHE_CONTROL, &lines);
        patch_cache_control(&mut cache_control, &policy);
        prop_assert_eq!(
            single_line(&surrogate, &SURROGATE_CONTROL),
            single_line(&cache_control, &CACHE_CONTROL)
        );
        prop_assert!(!surrogate.contains_key(CDN_CACHE_CONTROL));
    }
}
