//! Property tests for `actix_conditional::cache_control`: hostile `Cache-Control` and `Vary`
//! headers never panic, always yield one valid field line, and re-parse to the same thing.
//!
//! Cases come from `ProptestConfig::default()`, so `PROPTEST_CASES=5000 cargo test --test
//! cache_control` runs more of them.

use actix_conditional::cache_control::{
    CachePolicy, DELTA_SECONDS_MAX, add_never_cache_headers, cache_control_contains,
    parse_cache_control, parse_delta_seconds, patch_cache_control, patch_vary_headers,
};
use actix_web::http::header::{CACHE_CONTROL, HeaderMap, HeaderValue, VARY};
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

// --- properties --------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::default())]

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
