//! Unit and property tests of the cache-group fields and the vendor renderers.

use std::collections::HashSet;

use actix_web::http::header::{HeaderMap, HeaderValue};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use sfv::{BareItem, List, ListEntry, Parser};

use super::*;

fn with(name: &actix_web::http::header::HeaderName, values: &[&str]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for value in values {
        headers.append(name.clone(), HeaderValue::from_str(value).unwrap());
    }
    headers
}

fn field(headers: &HeaderMap, name: &actix_web::http::header::HeaderName) -> String {
    headers
        .get(name)
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[test]
fn groups_are_appended_in_order_without_repeats() {
    let mut headers = with(&CACHE_GROUPS, &[r#""a", "b";revalidate"#]);
    add_groups(&mut headers, ["b", "c", "a", "c"]);
    assert_eq!(
        field(&headers, &CACHE_GROUPS),
        r#""a", "b";revalidate, "c""#
    );
    assert_eq!(groups(&headers), ["a", "b", "c"]);
}

#[test]
fn several_field_lines_read_as_one_list() {
    let headers = with(&CACHE_GROUP_INVALIDATION, &[r#""x""#, r#""y", "x""#]);
    assert_eq!(invalidations(&headers), ["x", "y"]);
}

#[test]
fn members_that_are_not_strings_are_kept_but_not_read_as_groups() {
    let mut headers = with(&CACHE_GROUPS, &[r#"tok, 5, ("in"), "s""#]);
    assert_eq!(groups(&headers), ["s"]);
    add_groups(&mut headers, ["t"]);
    assert_eq!(
        field(&headers, &CACHE_GROUPS),
        r#"tok, 5, ("in"), "s", "t""#
    );
}

#[test]
fn malformed_field_reads_as_empty_and_is_replaced() {
    let mut headers = with(&CACHE_GROUPS, &[r#""unterminated"#]);
    assert!(groups(&headers).is_empty());
    add_groups(&mut headers, ["a"]);
    assert_eq!(field(&headers, &CACHE_GROUPS), r#""a""#);
}

#[test]
fn invalid_group_names_are_dropped() {
    let mut headers = HeaderMap::new();
    let long = "x".repeat(MAX_GROUP_BYTES + 1);
    add_groups(
        &mut headers,
        ["", "é", "tab\t", long.as_str(), "quote\"back\\"],
    );
    assert_eq!(field(&headers, &CACHE_GROUPS), r#""quote\"back\\""#);
    assert_eq!(groups(&headers), ["quote\"back\\"]);
}

#[test]
fn nothing_valid_leaves_no_field() {
    let mut headers = HeaderMap::new();
    add_invalidations(&mut headers, [""]);
    assert!(headers.get(CACHE_GROUP_INVALIDATION).is_none());
}

#[test]
fn members_past_the_count_bound_are_dropped_first_come_first_kept() {
    let mut headers = HeaderMap::new();
    let many: Vec<String> = (0..MAX_GROUPS + 10).map(|i| format!("g{i}")).collect();
    add_groups(&mut headers, &many);
    assert_eq!(groups(&headers), many[..MAX_GROUPS]);
}

#[test]
fn tag_and_invalidate_write_on_the_response() {
    let mut res = actix_web::HttpResponse::Ok().finish();
    tag(&mut res, ["a"]);
    invalidate(&mut res, ["b"]);
    assert_eq!(groups(res.headers()), ["a"]);
    assert_eq!(invalidations(res.headers()), ["b"]);
}

#[test]
fn vendor_tags_keep_fitting_tags_and_hash_the_others() {
    assert_eq!(
        vendor_tag("challenge:42", Vendor::SurrogateKey),
        "challenge:42"
    );
    assert_eq!(vendor_tag("challenge:42", Vendor::CacheTag), "challenge:42");
    let hashed = vendor_tag("challenge:42", Vendor::EdgeCacheTag);
    assert_eq!(
        hashed,
        format!("h-{:016x}", xxhash_rust::xxh3::xxh3_64(b"challenge:42"))
    );
    assert!(hashed.starts_with("h-") && hashed.len() == HASHED_TAG_LEN);
    // The same group hashes alike for every vendor that rejects it.
    assert_eq!(
        vendor_tag("a b", Vendor::Xkey),
        vendor_tag("a b", Vendor::CacheTag)
    );
    assert_ne!(
        vendor_tag("a b", Vendor::Xkey),
        vendor_tag("a c", Vendor::Xkey)
    );
    assert_ne!(vendor_tag("a,b", Vendor::SurrogateKey), "a,b");
}

#[test]
fn vendor_headers_merge_with_tags_already_there() {
    let mut headers = with(&Vendor::CacheTag.header_name(), &["own, other"]);
    let groups = vec!["challenges".to_owned(), "own".to_owned()];
    render_vendor_tags(&mut headers, &groups, &TagHeaders::new().cache_tag().xkey());
    assert_eq!(
        field(&headers, &Vendor::CacheTag.header_name()),
        "own,other,challenges"
    );
    assert_eq!(
        field(&headers, &Vendor::Xkey.header_name()),
        "challenges own"
    );
    assert!(headers.get(Vendor::SurrogateKey.header_name()).is_none());
}

#[test]
fn akamai_keeps_128_tags() {
    let mut headers = HeaderMap::new();
    let groups: Vec<String> = (0..200).map(|i| format!("t{i}")).collect();
    render_vendor_tags(&mut headers, &groups, &TagHeaders::new().edge_cache_tag());
    let value = field(&headers, &Vendor::EdgeCacheTag.header_name());
    assert_eq!(
        value.split(',').collect::<Vec<_>>(),
        groups[..EDGE_CACHE_TAG_MAX_TAGS]
    );
}

#[test]
fn size_budgets_drop_whole_tags_and_keep_the_first() {
    // 20 distinct keys of 1000 bytes: 16 fit in Fastly's 16 KB, 8 in xkey's 8000 bytes.
    let groups: Vec<String> = (0..20)
        .map(|i| format!("{i:02}{}", "k".repeat(998)))
        .collect();
    let mut headers = HeaderMap::new();
    render_vendor_tags(
        &mut headers,
        &groups,
        &TagHeaders::new().surrogate_key().xkey().cache_tag(),
    );
    for (vendor, kept) in [
        (Vendor::SurrogateKey, 16),
        (Vendor::Xkey, 7),
        (Vendor::CacheTag, 15),
    ] {
        let value = field(&headers, &vendor.header_name());
        assert!(value.len() <= vendor.max_header_bytes(), "{vendor:?}");
        assert_eq!(split(vendor, &value), groups[..kept], "{vendor:?}");
    }
}

/// Group names as handlers write them, plus hostile ones: unicode, controls, separators,
/// quotes, long runs.
fn any_group() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z][a-z0-9:_-]{0,20}",
        1 => "[ -~]{0,40}",
        1 => any::<String>(),
        // Long runs built by repetition: regex strategies this long are slow to generate.
        1 => ("[a-z]{1,3}", 380..450usize).prop_map(|(run, n)| run.repeat(n)),
        1 => ("[a-z ,:]{1,5}", 20..60usize).prop_map(|(run, n)| run.repeat(n)),
    ]
}

fn split(vendor: Vendor, value: &str) -> Vec<String> {
    let sep = if matches!(vendor, Vendor::SurrogateKey | Vendor::Xkey) {
        ' '
    } else {
        ','
    };
    value.split(sep).map(str::to_owned).collect()
}

proptest! {
    // Cases from PROPTEST_CASES (CI: 4096); failures kept beside this file, as
    // `tests/cache_control.proptest-regressions` is.
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    /// Whatever the groups and whatever was there, the field parses, stays within bounds and
    /// lists every valid group that fits, in order.
    #[test]
    fn group_fields_stay_valid_and_bounded(
        existing in proptest::option::of("[ -~]{0,200}"),
        added in proptest::collection::vec(any_group(), 0..160),
    ) {
        let mut headers = HeaderMap::new();
        if let Some(existing) = &existing {
            headers.insert(CACHE_GROUPS, HeaderValue::from_str(existing).unwrap());
        }
        add_groups(&mut headers, &added);
        if let Some(value) = headers.get(CACHE_GROUPS) {
            let text = value.to_str().unwrap();
            prop_assert!(text.len() <= MAX_FIELD_BYTES);
            let list: List = Parser::new(text).parse().unwrap();
            prop_assert!(list.len() <= MAX_GROUPS);
            // Every string member is a valid group, listed once.
            let strings: Vec<String> = list.iter().filter_map(|entry| match entry {
                ListEntry::Item(item) => match &item.bare_item {
                    BareItem::String(s) => Some(s.as_str().to_owned()),
                    _ => None,
                },
                ListEntry::InnerList(_) => None,
            }).collect();
            prop_assert_eq!(&strings, &groups(&headers));
        }
        // With nothing there before and few enough groups, exactly the valid ones, in order.
        if existing.is_none() {
            let mut valid: Vec<&String> = Vec::new();
            for group in &added {
                if is_valid_group(group) && !valid.contains(&group) {
                    valid.push(group);
                }
            }
            // `"group"` with `"` and `\` escaped, and `, ` between members.
            let size: usize = valid
                .iter()
                .map(|g| g.len() + 2 + g.bytes().filter(|b| matches!(b, b'"' | b'\\')).count() + 2)
                .sum::<usize>()
                .saturating_sub(2);
            if valid.len() <= MAX_GROUPS && size <= MAX_FIELD_BYTES {
                prop_assert_eq!(groups(&headers), valid.into_iter().cloned().collect::<Vec<_>>());
            }
        }
    }

    /// Rendered vendor headers never break a limit, are valid header values, are the same
    /// for the same input, pass fitting tags unchanged and hold only tokens a purger maps
    /// the same groups to.
    #[test]
    fn vendor_headers_stay_within_limits(
        groups in proptest::collection::vec(any_group(), 0..160),
    ) {
        let which = TagHeaders::new().surrogate_key().xkey().cache_tag().edge_cache_tag();
        let mut headers = HeaderMap::new();
        render_vendor_tags(&mut headers, &groups, &which);
        let mut again = HeaderMap::new();
        render_vendor_tags(&mut again, &groups, &which);
        for vendor in Vendor::ALL {
            prop_assert_eq!(headers.get(vendor.header_name()), again.get(vendor.header_name()));
        }

        for vendor in Vendor::ALL {
            let purge_side: Vec<String> = groups.iter().map(|g| vendor_tag(g, vendor)).collect();
            let purgeable: HashSet<&String> = purge_side.iter().collect();
            let Some(value) = headers.get(vendor.header_name()) else {
                prop_assert!(groups.is_empty());
                continue;
            };
            let text = value.to_str().unwrap();
            prop_assert!(text.len() <= vendor.max_header_bytes());
            let tokens = split(vendor, text);
            let rendered: HashSet<&String> = tokens.iter().collect();
            prop_assert!(tokens.len() <= vendor.max_tags());
            for token in &tokens {
                prop_assert!(!token.is_empty() && token.len() <= vendor.max_tag_bytes());
                prop_assert_eq!(&vendor_tag(token, vendor), token, "a rendered token maps to itself");
                prop_assert!(purgeable.contains(token), "{token} is not what a purger computes");
            }
            // The first group is always rendered, unchanged when the vendor accepts it.
            prop_assert_eq!(&tokens[0], &purge_side[0]);
            for group in &groups {
                let token = vendor_tag(group, vendor);
                if rendered.contains(group) {
                    prop_assert_eq!(&token, group);
                }
            }
        }
    }

    /// Existing vendor headers of any content merge without panicking or breaking limits.
    #[test]
    fn hostile_existing_vendor_headers_are_bounded(
        existing in "[ -~]{0,3000}",
        groups in proptest::collection::vec(any_group(), 0..20),
    ) {
        for vendor in Vendor::ALL {
            let mut headers = HeaderMap::new();
            headers.insert(vendor.header_name(), HeaderValue::from_str(&existing).unwrap());
            render_vendor_tags(&mut headers, &groups, &TagHeaders::new().with(vendor));
            if let Some(value) = headers.get(vendor.header_name()) {
                let text = value.to_str().unwrap();
                prop_assert!(text.len() <= vendor.max_header_bytes());
                for token in split(vendor, text) {
                    prop_assert_eq!(&vendor_tag(&token, vendor), &token);
                }
            }
        }
    }
}
