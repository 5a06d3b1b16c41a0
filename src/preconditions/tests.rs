//! Table-driven RFC 9110 §13.2.2 scenarios for [`evaluate_request`].

use std::time::{Duration, UNIX_EPOCH};

use actix_web::http::header::{HeaderName, HeaderValue};
use proptest::prelude::*;

use super::*;
use Precondition::{NotModified, PreconditionFailed, Proceed};

const LM: &[u8] = b"Sun, 06 Nov 1994 08:49:37 GMT";
const BEFORE: &[u8] = b"Sun, 06 Nov 1994 08:49:36 GMT";
const AFTER: &[u8] = b"Sun, 06 Nov 1994 08:49:38 GMT";
const LM_SECS: u64 = 784_111_777;

#[derive(Clone, Copy)]
enum Resource {
    /// ETag `"abc"`, Last-Modified `LM` plus 0.7 s (must be truncated).
    Both,
    EtagOnly,
    WeakEtagOnly,
    DateOnly,
    /// Exists (a 2xx response) but carries no validators.
    NoValidators,
    Missing,
}

fn validators(resource: Resource) -> Validators<'static> {
    let etag = EntityTagRef::parse(b"\"abc\"");
    let weak = EntityTagRef::parse(b"W/\"abc\"");
    let lm = UNIX_EPOCH + Duration::from_millis(LM_SECS * 1000 + 700);
    match resource {
        Resource::Both => Validators::new(etag, Some(lm)),
        Resource::EtagOnly => Validators::new(etag, None),
        Resource::WeakEtagOnly => Validators::new(weak, None),
        Resource::DateOnly => Validators::new(None, Some(lm)),
        Resource::NoValidators => Validators::new(None, None).exists(true),
        Resource::Missing => Validators::new(None, None),
    }
}

fn run(method: &Method, headers: &[(&str, &[u8])], resource: Resource) -> Precondition {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_bytes(value).unwrap(),
        );
    }
    evaluate_request(method, &map, &validators(resource))
}

type Case = (
    &'static str,
    Method,
    &'static [(&'static str, &'static [u8])],
    Resource,
    Precondition,
);

fn cases() -> Vec<Case> {
    use Resource::*;
    vec![
        (
            "no_conditional_headers_proceeds",
            Method::GET,
            &[],
            Both,
            Proceed,
        ),
        // §13.1.2 If-None-Match, weak comparison
        (
            "inm_exact_match_is_304",
            Method::GET,
            &[("if-none-match", b"\"abc\"")],
            Both,
            NotModified,
        ),
        (
            "inm_weak_request_tag_matches_strong",
            Method::GET,
            &[("if-none-match", b"W/\"abc\"")],
            Both,
            NotModified,
        ),
        (
            "inm_strong_request_tag_matches_weak",
            Method::GET,
            &[("if-none-match", b"\"abc\"")],
            WeakEtagOnly,
            NotModified,
        ),
        (
            "inm_member_of_list_matches",
            Method::GET,
            &[("if-none-match", b"\"x\", \"abc\" , \"y\"")],
            Both,
            NotModified,
        ),
        (
            "inm_match_on_second_field_line",
            Method::GET,
            &[("if-none-match", b"\"x\""), ("if-none-match", b"\"abc\"")],
            Both,
            NotModified,
        ),
        (
            "inm_mismatch_proceeds",
            Method::GET,
            &[("if-none-match", b"\"xyz\"")],
            Both,
            Proceed,
        ),
        (
            "inm_is_case_sensitive",
            Method::GET,
            &[("if-none-match", b"\"ABC\"")],
            Both,
            Proceed,
        ),
        (
            "inm_lowercase_w_prefix_is_invalid",
            Method::GET,
            &[("if-none-match", b"w/\"abc\"")],
            Both,
            Proceed,
        ),
        (
            "inm_comma_inside_tag_is_not_a_separator",
            Method::GET,
            &[("if-none-match", b"\"abc,d\"")],
            Both,
            Proceed,
        ),
        (
            "inm_star_matches_existing_resource",
            Method::GET,
            &[("if-none-match", b"*")],
            Both,
            NotModified,
        ),
        (
            "inm_star_matches_resource_without_etag",
            Method::GET,
            &[("if-none-match", b"*")],
            NoValidators,
            NotModified,
        ),
        (
            "inm_star_passes_for_missing_resource",
            Method::PUT,
            &[("if-none-match", b"*")],
            Missing,
            Proceed,
        ),
        (
            "inm_star_inside_list_is_invalid_member",
            Method::GET,
            &[("if-none-match", b"*, \"x\"")],
            Both,
            Proceed,
        ),
        (
            "inm_match_on_put_is_412",
            Method::PUT,
            &[("if-none-match", b"\"abc\"")],
            Both,
            PreconditionFailed,
        ),
        (
            "inm_star_on_put_to_existing_is_412",
            Method::PUT,
            &[("if-none-match", b"*")],
            Both,
            PreconditionFailed,
        ),
        (
            "inm_match_on_head_is_304",
            Method::HEAD,
            &[("if-none-match", b"\"abc\"")],
            Both,
            NotModified,
        ),
        (
            "inm_without_current_etag_proceeds",
            Method::GET,
            &[("if-none-match", b"\"abc\"")],
            DateOnly,
            Proceed,
        ),
        (
            "inm_empty_value_counts_as_absent",
            Method::GET,
            &[("if-none-match", b" "), ("if-modified-since", LM)],
            Both,
            NotModified,
        ),
        // §13.2.2 step 3 before 4: a present If-None-Match suppresses If-Modified-Since
        (
            "inm_mismatch_ignores_matching_ims",
            Method::GET,
            &[("if-none-match", b"\"xyz\""), ("if-modified-since", LM)],
            Both,
            Proceed,
        ),
        (
            "malformed_inm_still_suppresses_ims",
            Method::GET,
            &[("if-none-match", b","), ("if-modified-since", LM)],
            Both,
            Proceed,
        ),
        (
            "inm_match_wins_over_stale_ims",
            Method::GET,
            &[("if-none-match", b"\"abc\""), ("if-modified-since", BEFORE)],
            Both,
            NotModified,
        ),
        // §13.1.3 If-Modified-Since, whole seconds
        (
            "ims_equal_to_last_modified_is_304",
            Method::GET,
            &[("if-modified-since", LM)],
            Both,
            NotModified,
        ),
        (
            "ims_after_last_modified_is_304",
            Method::GET,
            &[("if-modified-since", AFTER)],
            DateOnly,
            NotModified,
        ),
        (
            "ims_before_last_modified_proceeds",
            Method::GET,
            &[("if-modified-since", BEFORE)],
            DateOnly,
            Proceed,
        ),
        (
            "ims_rfc850_format_is_accepted",
            Method::GET,
            &[("if-modified-since", b"Sunday, 06-Nov-94 08:49:37 GMT")],
            DateOnly,
            NotModified,
        ),
        (
            "ims_asctime_format_is_accepted",
            Method::GET,
            &[("if-modified-since", b"Sun Nov  6 08:49:37 1994")],
            DateOnly,
            NotModified,
        ),
        (
            "ims_invalid_date_is_ignored",
            Method::GET,
            &[("if-modified-since", b"yesterday")],
            DateOnly,
            Proceed,
        ),
        (
            "ims_two_field_lines_are_ignored",
            Method::GET,
            &[("if-modified-since", LM), ("if-modified-since", LM)],
            DateOnly,
            Proceed,
        ),
        (
            "ims_without_last_modified_is_ignored",
            Method::GET,
            &[("if-modified-since", AFTER)],
            EtagOnly,
            Proceed,
        ),
        (
            "ims_is_ignored_for_put",
            Method::PUT,
            &[("if-modified-since", AFTER)],
            DateOnly,
            Proceed,
        ),
        // §13.1.1 If-Match, strong comparison
        (
            "if_match_strong_match_proceeds",
            Method::PUT,
            &[("if-match", b"\"abc\"")],
            Both,
            Proceed,
        ),
        (
            "if_match_in_list_proceeds",
            Method::PUT,
            &[("if-match", b"\"x\", \"abc\"")],
            Both,
            Proceed,
        ),
        (
            "if_match_mismatch_is_412",
            Method::PUT,
            &[("if-match", b"\"xyz\"")],
            Both,
            PreconditionFailed,
        ),
        (
            "if_match_weak_request_tag_never_matches",
            Method::PUT,
            &[("if-match", b"W/\"abc\"")],
            Both,
            PreconditionFailed,
        ),
        (
            "if_match_against_weak_current_tag_fails",
            Method::PUT,
            &[("if-match", b"\"abc\"")],
            WeakEtagOnly,
            PreconditionFailed,
        ),
        (
            "if_match_on_get_mismatch_is_412",
            Method::GET,
            &[("if-match", b"\"xyz\"")],
            Both,
            PreconditionFailed,
        ),
        (
            "if_match_star_passes_when_resource_exists",
            Method::PUT,
            &[("if-match", b"*")],
            NoValidators,
            Proceed,
        ),
        (
            "if_match_star_fails_when_resource_missing",
            Method::PUT,
            &[("if-match", b"*")],
            Missing,
            PreconditionFailed,
        ),
        (
            "if_match_without_current_etag_fails",
            Method::PUT,
            &[("if-match", b"\"abc\"")],
            DateOnly,
            PreconditionFailed,
        ),
        (
            "malformed_if_match_fails_closed",
            Method::PUT,
            &[("if-match", b"garbage")],
            Both,
            PreconditionFailed,
        ),
        (
            "if_match_empty_value_counts_as_absent",
            Method::PUT,
            &[("if-match", b"")],
            Both,
            Proceed,
        ),
        // §13.1.4 If-Unmodified-Since, only without If-Match
        (
            "ius_not_modified_since_proceeds",
            Method::PUT,
            &[("if-unmodified-since", LM)],
            DateOnly,
            Proceed,
        ),
        (
            "ius_modified_since_is_412",
            Method::PUT,
            &[("if-unmodified-since", BEFORE)],
            DateOnly,
            PreconditionFailed,
        ),
        (
            "ius_without_last_modified_is_ignored",
            Method::PUT,
            &[("if-unmodified-since", BEFORE)],
            EtagOnly,
            Proceed,
        ),
        (
            "ius_invalid_date_is_ignored",
            Method::PUT,
            &[("if-unmodified-since", b"soon")],
            DateOnly,
            Proceed,
        ),
        (
            "ius_is_skipped_when_if_match_present",
            Method::PUT,
            &[("if-match", b"\"abc\""), ("if-unmodified-since", BEFORE)],
            Both,
            Proceed,
        ),
        (
            "ius_failure_on_get_is_412",
            Method::GET,
            &[("if-unmodified-since", BEFORE)],
            DateOnly,
            PreconditionFailed,
        ),
        // §13.2.2 order: If-Match before If-None-Match
        (
            "if_match_failure_beats_inm_match",
            Method::GET,
            &[("if-match", b"\"xyz\""), ("if-none-match", b"\"abc\"")],
            Both,
            PreconditionFailed,
        ),
        (
            "if_match_pass_then_inm_match_is_304",
            Method::GET,
            &[("if-match", b"\"abc\""), ("if-none-match", b"\"abc\"")],
            Both,
            NotModified,
        ),
        // §13.2.1: methods that ignore preconditions
        (
            "options_ignores_preconditions",
            Method::OPTIONS,
            &[("if-match", b"\"xyz\"")],
            Both,
            Proceed,
        ),
        (
            "trace_ignores_preconditions",
            Method::TRACE,
            &[("if-none-match", b"*")],
            Both,
            Proceed,
        ),
        (
            "connect_ignores_preconditions",
            Method::CONNECT,
            &[("if-none-match", b"*")],
            Both,
            Proceed,
        ),
    ]
}

#[test]
fn rfc_9110_13_2_2_scenarios() {
    let mut failures = Vec::new();
    for (name, method, headers, resource, expected) in cases() {
        let got = run(&method, headers, resource);
        if got != expected {
            failures.push(format!("{name}: expected {expected:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn oversized_if_none_match_means_full_response() {
    let huge = "\"abc\",".repeat(MAX_TAG_LIST_BYTES);
    let got = run(
        &Method::GET,
        &[("if-none-match", huge.as_bytes())],
        Resource::Both,
    );
    assert_eq!(got, Proceed);
}

#[test]
fn oversized_if_match_fails_closed() {
    let huge = "\"abc\",".repeat(MAX_TAG_LIST_BYTES);
    let got = run(
        &Method::PUT,
        &[("if-match", huge.as_bytes())],
        Resource::Both,
    );
    assert_eq!(got, PreconditionFailed);
}

#[test]
fn obs_text_in_if_none_match_does_not_hide_the_header() {
    let got = run(
        &Method::GET,
        &[("if-none-match", b"\"caf\xc3\xa9\", \"abc\"")],
        Resource::Both,
    );
    assert_eq!(got, NotModified);
}

fn header_value_bytes() -> impl Strategy<Value = Vec<u8>> {
    // Any byte a HeaderValue accepts: visible ASCII, space, tab and obs-text.
    proptest::collection::vec(
        prop_oneof![Just(b'\t'), 0x20u8..0x7f, 0x80u8..=0xff],
        0..300,
    )
}

proptest! {
    #[test]
    fn evaluation_never_panics_on_hostile_headers(
        inm in header_value_bytes(),
        im in header_value_bytes(),
        ims in header_value_bytes(),
        ius in header_value_bytes(),
        put in any::<bool>(),
    ) {
        let method = if put { Method::PUT } else { Method::GET };
        let headers: [(&str, &[u8]); 4] = [
            ("if-none-match", &inm),
            ("if-match", &im),
            ("if-modified-since", &ims),
            ("if-unmodified-since", &ius),
        ];
        let got = run(&method, &headers, Resource::Both);
        if put {
            prop_assert_ne!(got, NotModified);
        }
    }
}
