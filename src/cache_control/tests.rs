//! Unit tests of the `cache_control` module.

use actix_web::{
    HttpResponse,
    http::header::{
        CACHE_CONTROL, ETAG, EXPIRES, HeaderMap, HeaderName, HeaderValue, LAST_MODIFIED, VARY,
    },
};

use super::parse::*;
use super::patch::*;
use super::policy::*;
use crate::preconditions::truncate_to_seconds;
use std::time::SystemTime;

fn headers_with(name: &HeaderName, lines: &[&[u8]]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in lines {
        headers.append(name.clone(), HeaderValue::from_bytes(line).unwrap());
    }
    headers
}

/// `patch_cache_control` over existing field lines; the single resulting line, if any.
fn patched(lines: &[&str], policy: CachePolicy) -> Option<String> {
    let lines: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
    let mut headers = headers_with(&CACHE_CONTROL, &lines);
    patch_cache_control(&mut headers, &policy);
    assert!(headers.get_all(CACHE_CONTROL).count() <= 1);
    headers
        .get(CACHE_CONTROL)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

fn patched_one(existing: &str, policy: CachePolicy) -> String {
    patched(&[existing], policy).expect("a Cache-Control line")
}

fn vary(lines: &[&str], new: &[&str]) -> Option<String> {
    let lines: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
    let mut headers = headers_with(&VARY, &lines);
    patch_vary_headers(&mut headers, new);
    assert!(headers.get_all(VARY).count() <= 1);
    headers.get(VARY).map(|v| v.to_str().unwrap().to_owned())
}

fn directives(value: &[u8]) -> Vec<(&[u8], Option<&[u8]>)> {
    parse_cache_control(value)
        .map(|d| (d.name(), d.value()))
        .collect()
}

// --- CachePolicy --------------------------------------------------------------------------

#[test]
fn policy_renders_every_directive_in_canonical_order() {
    let policy = CachePolicy::new()
        .stale_if_error(60)
        .immutable()
        .stale_while_revalidate(30)
        .proxy_revalidate()
        .must_revalidate()
        .no_store()
        .no_cache()
        .s_maxage(120)
        .max_age(60)
        .public();
    assert_eq!(
        policy.to_string(),
        "public, max-age=60, s-maxage=120, no-cache, no-store, must-revalidate, \
         proxy-revalidate, immutable, stale-while-revalidate=30, stale-if-error=60"
    );
    assert_eq!(policy.to_header_value(), policy.to_string().as_str());
}

#[test]
fn empty_policy_renders_nothing() {
    assert_eq!(CachePolicy::new().to_string(), "");
    assert_eq!(CachePolicy::default(), CachePolicy::new());
    assert!(CachePolicy::new().is_empty());
    assert!(!CachePolicy::new().immutable().is_empty());
}

#[test]
fn later_visibility_replaces_earlier() {
    assert_eq!(CachePolicy::new().public().private().to_string(), "private");
    assert_eq!(CachePolicy::new().private().public().to_string(), "public");
    assert_eq!(
        CachePolicy::new().private().visibility(),
        Some(Visibility::Private)
    );
}

#[test]
fn revalidate_is_max_age_plus_must_revalidate() {
    assert_eq!(
        CachePolicy::revalidate(60).to_string(),
        "max-age=60, must-revalidate"
    );
}

#[test]
fn never_has_the_directives_of_djangos_never_cache() {
    let never = CachePolicy::never();
    assert_eq!(never.max_age_secs(), Some(0));
    assert!(never.has_no_cache() && never.has_no_store() && never.has_must_revalidate());
    assert!(never.is_private() && !never.is_public());
    assert!(!never.has_proxy_revalidate() && !never.has_immutable());
}

#[test]
fn getters_report_what_was_set() {
    const P: CachePolicy = CachePolicy::new()
        .max_age(1)
        .s_maxage(2)
        .stale_while_revalidate(3)
        .stale_if_error(4)
        .public()
        .proxy_revalidate()
        .immutable();
    assert_eq!(
        (
            P.max_age_secs(),
            P.s_maxage_secs(),
            P.stale_while_revalidate_secs(),
            P.stale_if_error_secs()
        ),
        (Some(1), Some(2), Some(3), Some(4))
    );
    assert!(P.is_public() && P.has_proxy_revalidate() && P.has_immutable());
    assert!(!P.has_no_cache() && !P.has_no_store() && !P.has_must_revalidate());
    assert_eq!(CachePolicy::new().visibility(), None);
}

#[test]
fn max_u32_seconds_render_unclamped() {
    assert_eq!(
        CachePolicy::new().max_age(u32::MAX).to_string(),
        "max-age=4294967295"
    );
}

#[test]
fn policy_is_a_header_value_for_insert_header() {
    let res = HttpResponse::Ok()
        .insert_header((CACHE_CONTROL, CachePolicy::never()))
        .finish();
    assert_eq!(
        res.headers().get(CACHE_CONTROL).unwrap(),
        "private, max-age=0, no-cache, no-store, must-revalidate"
    );
}

// --- parser -------------------------------------------------------------------------------

#[test]
fn parser_splits_members_and_keeps_values_verbatim() {
    assert_eq!(
        directives(br#"Max-Age=60 , no-cache="a, b",x="q\"c,d" , private"#),
        vec![
            (&b"Max-Age"[..], Some(&b"60"[..])),
            (b"no-cache", Some(br#""a, b""#)),
            (b"x", Some(br#""q\"c,d""#)),
            (b"private", None),
        ]
    );
}

#[test]
fn parser_skips_empty_and_nameless_members() {
    assert_eq!(
        directives(b" ,, a ,\t, = ,=x, b=,"),
        vec![(&b"a"[..], None), (b"b", Some(&b""[..]))]
    );
    assert!(directives(&[b','; 10_000]).is_empty());
    assert!(directives(b"").is_empty());
}

#[test]
fn parser_trims_whitespace_around_equals() {
    assert_eq!(
        directives(b"max-age = 5,\tfoo=\t\"x y\" "),
        vec![
            (&b"max-age"[..], Some(&b"5"[..])),
            (b"foo", Some(br#""x y""#))
        ]
    );
}

#[test]
fn unterminated_quote_runs_to_end_of_value() {
    assert_eq!(
        directives(br#"a, no-cache="x, max-age=5"#),
        vec![
            (&b"a"[..], None),
            (b"no-cache", Some(&br#""x, max-age=5"#[..]))
        ]
    );
    assert_eq!(
        directives(br#"x="\"#),
        vec![(&b"x"[..], Some(&br#""\"#[..]))]
    );
}

#[test]
fn text_after_closing_quote_belongs_to_the_value() {
    assert_eq!(
        directives(br#"a="b"c, d"#),
        vec![(&b"a"[..], Some(&br#""b"c"#[..])), (b"d", None)]
    );
}

#[test]
fn parser_passes_non_utf8_bytes_through() {
    assert_eq!(
        directives(b"\xff\xfe=\x80, public"),
        vec![(&b"\xff\xfe"[..], Some(&b"\x80"[..])), (b"public", None)]
    );
}

#[test]
fn delta_seconds_saturate_at_two_to_the_31() {
    assert_eq!(parse_delta_seconds(b"2147483647"), Some(2_147_483_647));
    assert_eq!(parse_delta_seconds(b"2147483648"), Some(DELTA_SECONDS_MAX));
    assert_eq!(parse_delta_seconds(b"4294967296"), Some(DELTA_SECONDS_MAX));
    assert_eq!(
        parse_delta_seconds(&[b'9'; 10_000]),
        Some(DELTA_SECONDS_MAX)
    );
    assert_eq!(parse_delta_seconds(b"007"), Some(7));
    assert_eq!(parse_delta_seconds(b" 5\t"), Some(5));
}

#[test]
fn delta_seconds_reject_anything_but_digits() {
    for bad in [
        &b""[..],
        b"abc",
        b"-5",
        b"+5",
        b"1_0",
        b"1.5",
        b"5s",
        b"\"",
        b"\"\"",
        b"\"5",
        b"\xd9\xa3",
    ] {
        assert_eq!(parse_delta_seconds(bad), None, "{bad:?}");
    }
    assert_eq!(parse_delta_seconds(b"\"30\""), Some(30));
}

// --- cache_control_contains ---------------------------------------------------------------

#[test]
fn contains_ignores_case_and_reads_every_line() {
    let headers = headers_with(&CACHE_CONTROL, &[b"private", b"max-age=0, NO-STORE"]);
    assert!(cache_control_contains(&headers, "no-store"));
    assert!(cache_control_contains(&headers, "Private"));
    assert!(!cache_control_contains(&headers, "no-cache"));
    assert!(!cache_control_contains(&HeaderMap::new(), "no-store"));
}

#[test]
fn qualified_no_store_counts_as_no_store() {
    let headers = headers_with(&CACHE_CONTROL, &[br#"no-store="Set-Cookie""#]);
    assert!(cache_control_contains(&headers, "no-store"));
}

#[test]
fn directive_names_inside_values_do_not_count() {
    let headers = headers_with(
        &CACHE_CONTROL,
        &[br#"no-cache="no-store, x", x-no-store, no-storex, private=no-store"#],
    );
    assert!(!cache_control_contains(&headers, "no-store"));
}

// --- patch_cache_control ------------------------------------------------------------------

#[test]
fn patch_on_missing_header_equals_the_policy() {
    for policy in [
        CachePolicy::revalidate(60),
        CachePolicy::never(),
        CachePolicy::new().public().max_age(5).stale_if_error(9),
    ] {
        assert_eq!(patched(&[], policy), Some(policy.to_string()));
    }
}

#[test]
fn smaller_max_age_wins() {
    let p = CachePolicy::new().max_age(60);
    assert_eq!(patched_one("max-age=300", p), "max-age=60");
    assert_eq!(patched_one("max-age=30", p), "max-age=30");
    assert_eq!(patched_one("max-age=007", p), "max-age=7");
}

#[test]
fn malformed_existing_max_age_loses_to_the_new_one() {
    // Django raises ValueError for `abc` and ``; keeps -5; reads `max-age` as int(True) == 1
    // and `1_0` as 10.
    for existing in [
        "max-age=abc",
        "max-age=",
        "max-age=-5",
        "max-age",
        "max-age=1_0",
        "max-age=5s",
    ] {
        assert_eq!(
            patched_one(existing, CachePolicy::new().max_age(60)),
            "max-age=60",
            "{existing}"
        );
    }
}

#[test]
fn malformed_existing_max_age_is_kept_when_no_new_one() {
    assert_eq!(
        patched_one("max-age=abc", CachePolicy::new().no_store()),
        "max-age=abc, no-store"
    );
}

#[test]
fn quoted_existing_max_age_is_read() {
    let p = CachePolicy::new().max_age(60);
    assert_eq!(patched_one(r#"max-age="30""#, p), "max-age=30");
    assert_eq!(patched_one(r#"max-age="300""#, p), "max-age=60");
}

#[test]
fn overflowing_existing_max_age_loses_to_any_new_one() {
    let huge = "max-age=99999999999999999999";
    assert_eq!(
        patched_one(huge, CachePolicy::new().max_age(60)),
        "max-age=60"
    );
    assert_eq!(
        patched_one(huge, CachePolicy::new().max_age(u32::MAX)),
        "max-age=4294967295"
    );
    // Compared exactly, so re-patching is stable above 2^31 too.
    assert_eq!(
        patched_one("max-age=4294967295", CachePolicy::new().max_age(u32::MAX)),
        "max-age=4294967295"
    );
    assert_eq!(
        patched_one("max-age=2147483649", CachePolicy::new().max_age(u32::MAX)),
        "max-age=2147483649"
    );
}

#[test]
fn public_removes_private() {
    let p = CachePolicy::new().public();
    assert_eq!(patched_one("private", p), "public");
    assert_eq!(
        patched_one(r#"private="Set-Cookie", max-age=5"#, p),
        "max-age=5, public"
    );
}

#[test]
fn private_removes_public() {
    let p = CachePolicy::new().private();
    assert_eq!(patched_one("public, immutable", p), "immutable, private");
    assert_eq!(patched_one("PUBLIC", p), "private");
}

#[test]
fn private_replaces_qualified_private_in_place() {
    assert_eq!(
        patched_one(
            r#"private="Set-Cookie", max-age=5"#,
            CachePolicy::new().private()
        ),
        "private, max-age=5"
    );
}

#[test]
fn bare_no_cache_replaces_field_names() {
    assert_eq!(
        patched_one(
            r#"max-age=5, no-cache="Set-Cookie""#,
            CachePolicy::new().no_cache()
        ),
        "max-age=5, no-cache"
    );
    assert_eq!(
        patched_one(r#"no-cache, no-cache="X""#, CachePolicy::new()),
        "no-cache"
    );
}

#[test]
fn no_cache_field_names_accumulate_in_first_seen_order() {
    assert_eq!(
        patched_one(
            r#"no-cache="B", max-age=3, no-cache="A", NO-CACHE="B""#,
            CachePolicy::new().max_age(10)
        ),
        r#"no-cache="B", no-cache="A", max-age=3"#
    );
}

#[test]
fn override_keeps_original_position() {
    assert_eq!(
        patched_one("Max-Age=60, NO-STORE, x-ext", CachePolicy::new().no_store()),
        "max-age=60, no-store, x-ext"
    );
    assert_eq!(
        patched_one("s-maxage=600, max-age=60", CachePolicy::new().s_maxage(900)),
        "s-maxage=900, max-age=60"
    );
}

#[test]
fn duplicate_directive_keeps_first_position_and_last_value() {
    assert_eq!(
        patched_one(
            "max-age=10, public, max-age=20",
            CachePolicy::new().max_age(15)
        ),
        "max-age=15, public"
    );
    assert_eq!(
        patched_one("x=1, public, X=2", CachePolicy::new()),
        "x=2, public"
    );
}

#[test]
fn extensions_and_quoted_values_are_kept_verbatim() {
    assert_eq!(
        patched_one(
            r#"foo=bar, community="UCI, x", EXT=Mixed"#,
            CachePolicy::new().immutable()
        ),
        r#"foo=bar, community="UCI, x", ext=Mixed, immutable"#
    );
}

#[test]
fn every_field_line_is_read_and_written_back_as_one() {
    assert_eq!(
        patched(
            &["public", "max-age=300", "x-a, x-b"],
            CachePolicy::new().max_age(60)
        ),
        Some("public, max-age=60, x-a, x-b".to_owned())
    );
}

#[test]
fn unterminated_quote_is_dropped_not_spread() {
    assert_eq!(
        patched(
            &[r#"no-cache="abc"#, "public"],
            CachePolicy::new().max_age(1)
        ),
        Some("public, max-age=1".to_owned())
    );
}

#[test]
fn non_utf8_existing_bytes_are_kept_verbatim() {
    let mut headers = headers_with(&CACHE_CONTROL, &[b"x=\xff\xfe, \xe9t\xe9"]);
    patch_cache_control(&mut headers, &CachePolicy::new().no_store());
    assert_eq!(
        headers.get(CACHE_CONTROL).unwrap().as_bytes(),
        b"x=\xff\xfe, \xe9t\xe9, no-store"
    );
}

#[test]
fn garbage_existing_headers_do_not_panic() {
    let commas = ",".repeat(10_000);
    let many = (0..10_000)
        .map(|i| format!("x{i}"))
        .collect::<Vec<_>>()
        .join(",");
    let fields = (0..10_000)
        .map(|i| format!("no-cache=f{i}"))
        .collect::<Vec<_>>()
        .join(",");
    for garbage in [
        "=",
        "==",
        ",=,",
        "\"",
        "\\",
        "max-age=\"",
        "max-age=99999999999999999999",
        "no-cache=\"\\",
        commas.as_str(),
        many.as_str(),
        fields.as_str(),
    ] {
        let out = patched(&[garbage], CachePolicy::revalidate(60));
        assert!(
            out.is_some_and(|v| v.contains("max-age=60")),
            "{garbage:.40}"
        );
    }
    assert_eq!(
        patched(&[&commas], CachePolicy::new().public()),
        Some("public".to_owned())
    );
}

#[test]
fn empty_result_removes_the_header() {
    assert_eq!(patched(&[",, ,"], CachePolicy::new()), None);
    assert_eq!(patched(&[], CachePolicy::new()), None);
}

#[test]
fn patch_is_idempotent() {
    let policy = CachePolicy::never().s_maxage(3);
    let once = patched_one(r#"public, no-cache="a", max-age=30, x"#, policy);
    assert_eq!(patched_one(&once, policy), once);
}

// --- add_never_cache_headers --------------------------------------------------------------

#[test]
fn never_cache_matches_djangos_order() {
    let mut headers = HeaderMap::new();
    add_never_cache_headers(&mut headers);
    assert_eq!(
        headers.get(CACHE_CONTROL).unwrap(),
        "max-age=0, no-cache, no-store, must-revalidate, private"
    );
}

#[test]
fn never_cache_sets_expires_to_now_when_absent() {
    let mut headers = HeaderMap::new();
    // HTTP dates have whole seconds: "now" is the second it was set in, no later.
    let before = truncate_to_seconds(SystemTime::now());
    add_never_cache_headers(&mut headers);
    let after = SystemTime::now();
    let expires = headers.get(EXPIRES).unwrap().to_str().unwrap();
    let expires = httpdate::parse_http_date(expires).unwrap();
    assert!(
        before <= expires && expires <= after,
        "Expires {expires:?} is not the moment it was set ({before:?}..={after:?})"
    );
}

#[test]
fn never_cache_keeps_an_existing_expires() {
    let mut headers = headers_with(&EXPIRES, &[b"Wed, 21 Oct 2015 07:28:00 GMT"]);
    add_never_cache_headers(&mut headers);
    assert_eq!(
        headers.get(EXPIRES).unwrap(),
        "Wed, 21 Oct 2015 07:28:00 GMT"
    );
}

#[test]
fn never_cache_sets_neither_last_modified_nor_etag() {
    let mut headers = HeaderMap::new();
    add_never_cache_headers(&mut headers);
    assert!(!headers.contains_key(LAST_MODIFIED) && !headers.contains_key(ETAG));
    assert_eq!(headers.len(), 2);
}

#[test]
fn never_cache_keeps_existing_positions_and_drops_public() {
    let mut headers = headers_with(
        &CACHE_CONTROL,
        &[br#"public, no-cache="Set-Cookie", s-maxage=600, max-age=5"#],
    );
    add_never_cache_headers(&mut headers);
    assert_eq!(
        headers.get(CACHE_CONTROL).unwrap(),
        "no-cache, s-maxage=600, max-age=0, no-store, must-revalidate, private"
    );
}

// --- patch_vary_headers -------------------------------------------------------------------

#[test]
fn vary_appends_new_names_in_order() {
    assert_eq!(
        vary(&["Accept-Encoding"], &["Cookie", "Accept-Language"]),
        Some("Accept-Encoding, Cookie, Accept-Language".to_owned())
    );
    assert_eq!(vary(&[], &["Cookie"]), Some("Cookie".to_owned()));
}

#[test]
fn vary_deduplicates_ignoring_case_and_keeps_first_spelling() {
    assert_eq!(
        vary(
            &["cookie, Accept", "ACCEPT"],
            &["Cookie", "origin", "Origin"]
        ),
        Some("cookie, Accept, origin".to_owned())
    );
}

#[test]
fn vary_star_wins() {
    assert_eq!(vary(&["Accept, Cookie"], &["*"]), Some("*".to_owned()));
    assert_eq!(vary(&["*"], &["Cookie"]), Some("*".to_owned()));
    assert_eq!(vary(&["Cookie", " * "], &[]), Some("*".to_owned()));
    assert_eq!(vary(&["x*"], &[]), Some("x*".to_owned()));
}

#[test]
fn vary_trims_and_drops_empty_members() {
    assert_eq!(
        vary(&["  Accept ,,Cookie , "], &[" Origin ", "", " , "]),
        Some("Accept, Cookie, Origin".to_owned())
    );
    assert_eq!(vary(&[",,"], &[]), None);
    assert_eq!(vary(&[], &[]), None);
}

#[test]
fn vary_new_entries_may_be_lists() {
    assert_eq!(
        vary(&["cookie"], &["Accept, Cookie"]),
        Some("cookie, Accept".to_owned())
    );
}

#[test]
fn vary_skips_new_names_with_control_characters() {
    assert_eq!(
        vary(&["Accept"], &["Bad\nName", "Ok", "\0"]),
        Some("Accept, Ok".to_owned())
    );
}

#[test]
fn vary_keeps_non_utf8_existing_bytes() {
    let mut headers = headers_with(&VARY, &[b"X-\xff, Accept"]);
    patch_vary_headers(&mut headers, &["Cookie"]);
    assert_eq!(
        headers.get(VARY).unwrap().as_bytes(),
        b"X-\xff, Accept, Cookie"
    );
}
