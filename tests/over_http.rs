//! `ConditionalGet` over a real socket: the quickstart example's app served by
//! `actix_web::HttpServer` on `127.0.0.1:0` (one worker, its own thread), spoken to in raw
//! HTTP/1.1 so the assertions see the bytes actix actually writes (framing, `Content-Length`,
//! repeated header lines), which `actix_web::test::call_service` cannot show.
//!
//! Every read has a timeout, so a hang fails the test within seconds.

use std::io::Read;

use actix_web::http::header;
use actix_web::{HttpResponse, web};

#[path = "common/http.rs"]
mod http;

#[path = "../examples/quickstart.rs"]
#[allow(dead_code, unreachable_pub)]
mod quickstart;

use http::{Conn, Response, request};

const COOKIE_A: &str = "session=abc123; Path=/; HttpOnly";
const COOKIE_B: &str = "prefs=dark, compact; Path=/; Max-Age=3600";
const MANUAL_BODY: &str = "a body whose length the handler also set by hand";

// ---------------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------------

/// Routes that exist only in this test's server, behind the same middleware as the example's.
fn extra_routes(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/cookies",
        web::get().to(|| async {
            HttpResponse::Ok()
                .insert_header((header::CACHE_CONTROL, "private, max-age=0"))
                .append_header((header::SET_COOKIE, COOKIE_A))
                .append_header((header::SET_COOKIE, COOKIE_B))
                .body("cookie jar")
        }),
    )
    .route(
        "/manual-length",
        web::get().to(|| async {
            HttpResponse::Ok()
                .content_type("text/plain")
                .insert_header((header::CONTENT_LENGTH, MANUAL_BODY.len().to_string()))
                .body(MANUAL_BODY)
        }),
    )
    .route(
        "/raw-304",
        web::get().to(|| async {
            // A handler-built 304: not 2xx, so the middleware leaves it alone.
            HttpResponse::NotModified()
                .insert_header((header::CONTENT_LENGTH, "5"))
                .finish()
        }),
    );
}

/// The quickstart example's app plus [`extra_routes`], on a real socket.
fn start_server() -> http::Server {
    http::Server::start(|| quickstart::app().configure(extra_routes))
}

fn get(path: &str) -> Vec<u8> {
    request("GET", path, &[], None)
}

/// `"` + 32 lowercase hex digits + `"`: an xxh3-128 strong tag.
fn assert_strong_xxh3_etag(etag: &str) {
    let hex = etag
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap_or_else(|| panic!("not a strong quoted tag: {etag:?}"));
    assert_eq!(hex.len(), 32, "{etag:?}");
    assert!(
        hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "not lowercase hex: {etag:?}"
    );
}

fn catalogue_json() -> serde_json::Value {
    serde_json::to_value(quickstart::catalogue()).unwrap()
}

/// A 304 as RFC 9110 §15.4.5 wants it on the wire: no body, no length, no representation
/// metadata, but the validators and caching headers of the 200.
fn assert_bare_304(res: &Response, etag: &str, cache_control: &str) {
    assert_eq!(res.status, 304, "{res:#?}");
    for name in ["content-length", "content-type", "transfer-encoding"] {
        assert!(!res.has(name), "304 carries {name}: {res:#?}");
    }
    assert_eq!(res.get("etag"), Some(etag), "{res:#?}");
    assert_eq!(res.get("cache-control"), Some(cache_control), "{res:#?}");
    assert!(res.has("date"), "{res:#?}");
}

/// GET `/` on `conn`, checked, returning its ETag.
fn fetch_root(conn: &mut Conn) -> String {
    let res = conn.exchange(&get("/"));
    assert_eq!(res.status, 200, "{res:#?}");
    res.etag().to_owned()
}

// ---------------------------------------------------------------------------------------------
// GET
// ---------------------------------------------------------------------------------------------

#[test]
fn get_answers_200_with_a_strong_etag_and_the_json_body() {
    let server = start_server();
    let mut conn = server.connect();
    let res = conn.exchange(&get("/"));

    assert_eq!(res.status, 200, "{res:#?}");
    assert_strong_xxh3_etag(res.etag());
    let length: usize = res.get("content-length").unwrap().parse().unwrap();
    assert_eq!(length, res.body.len());
    assert!(
        res.body.len() > 2048,
        "a few KiB of JSON, got {}",
        res.body.len()
    );
    assert_eq!(res.get("content-type"), Some("application/json"));
    assert_eq!(res.get("cache-control"), Some(quickstart::CACHE_CONTROL));
    let json: serde_json::Value = serde_json::from_slice(&res.body).expect("JSON body");
    assert_eq!(json, catalogue_json());
    conn.assert_silent();

    // Same bytes, same tag: the tag is a pure function of the body.
    let again = conn.exchange(&get("/"));
    assert_eq!(again.etag(), res.etag());
    assert_eq!(again.body, res.body);
}

#[test]
fn get_of_an_item_has_its_own_etag_and_unknown_ids_are_a_plain_json_404() {
    let server = start_server();
    let mut conn = server.connect();
    let root = fetch_root(&mut conn);

    let item = conn.exchange(&get("/items/7"));
    assert_eq!(item.status, 200, "{item:#?}");
    assert_strong_xxh3_etag(item.etag());
    assert_ne!(item.etag(), root);
    let json: serde_json::Value = serde_json::from_slice(&item.body).unwrap();
    assert_eq!(json, serde_json::to_value(quickstart::item(7)).unwrap());

    // A 404 is outside the middleware's scope, even for `If-None-Match: *`.
    let missing = conn.exchange(&request(
        "GET",
        "/items/99",
        &[("If-None-Match", b"*")],
        None,
    ));
    assert_eq!(missing.status, 404, "{missing:#?}");
    assert!(!missing.has("etag"), "{missing:#?}");
    let json: serde_json::Value = serde_json::from_slice(&missing.body).unwrap();
    assert_eq!(json["id"], 99);
    conn.assert_silent();
}

// ---------------------------------------------------------------------------------------------
// If-None-Match → 304
// ---------------------------------------------------------------------------------------------

#[test]
fn if_none_match_exact_weak_listed_or_star_gets_a_bare_304() {
    let server = start_server();
    let mut conn = server.connect();
    let etag = fetch_root(&mut conn);

    let forms = [
        etag.clone(),
        format!("W/{etag}"),
        format!("\"x\", {etag}, \"y\""),
        "*".to_owned(),
    ];
    for form in &forms {
        let res = conn.exchange(&request(
            "GET",
            "/",
            &[("If-None-Match", form.as_bytes())],
            None,
        ));
        assert_bare_304(&res, &etag, quickstart::CACHE_CONTROL);
        // Not a single body byte follows, and the connection stays open.
        conn.assert_silent();
    }

    // A tag that does not match is a full 200.
    let res = conn.exchange(&request(
        "GET",
        "/",
        &[("If-None-Match", b"\"other\"")],
        None,
    ));
    assert_eq!(res.status, 200, "{res:#?}");
    assert_eq!(res.get("etag"), Some(etag.as_str()));
}

#[test]
fn a_304_leaves_keep_alive_framing_intact() {
    let server = start_server();
    let mut conn = server.connect();

    let first = conn.exchange(&get("/"));
    assert_eq!(first.status, 200, "{first:#?}");
    let etag = first.etag().to_owned();

    let not_modified = conn.exchange(&request(
        "GET",
        "/",
        &[("If-None-Match", etag.as_bytes())],
        None,
    ));
    assert_bare_304(&not_modified, &etag, quickstart::CACHE_CONTROL);
    conn.assert_silent();

    let third = conn.exchange(&get("/"));
    assert_eq!(third.status, 200, "{third:#?}");
    assert_eq!(third.etag(), etag);
    assert_eq!(third.body, first.body);
    conn.assert_silent();
}

#[test]
fn pipelined_requests_around_a_304_stay_in_step() {
    let server = start_server();
    let etag = fetch_root(&mut server.connect());

    // All three requests in one write: if the 304 leaked a body or a length, the responses
    // that follow it would be misread.
    let mut conn = server.connect();
    let mut burst = get("/");
    burst.extend(request(
        "GET",
        "/",
        &[("If-None-Match", etag.as_bytes())],
        None,
    ));
    burst.extend(get("/items/3"));
    conn.send_raw(&burst);

    let first = conn.read_response(false);
    assert_eq!(first.status, 200, "{first:#?}");
    assert_eq!(first.etag(), etag);
    let second = conn.read_response(false);
    assert_bare_304(&second, &etag, quickstart::CACHE_CONTROL);
    let third = conn.read_response(false);
    assert_eq!(third.status, 200, "{third:#?}");
    let json: serde_json::Value = serde_json::from_slice(&third.body).unwrap();
    assert_eq!(json["id"], 3);
    conn.assert_silent();
}

// ---------------------------------------------------------------------------------------------
// HEAD
// ---------------------------------------------------------------------------------------------

#[test]
fn head_has_the_get_etag_type_and_length_and_no_body() {
    let server = start_server();
    let mut conn = server.connect();
    let get_res = conn.exchange(&get("/"));
    assert_eq!(get_res.status, 200);

    let head = conn.exchange(&request("HEAD", "/", &[], None));
    assert_eq!(head.status, 200, "{head:#?}");
    assert_eq!(head.get("etag"), get_res.get("etag"));
    assert_eq!(head.get("content-type"), get_res.get("content-type"));
    assert_eq!(head.get("content-length"), get_res.get("content-length"));
    assert_eq!(
        head.get("content-length"),
        Some(get_res.body.len().to_string().as_str())
    );
    assert_eq!(head.get("cache-control"), Some(quickstart::CACHE_CONTROL));
    // Zero body bytes: nothing arrives after the head.
    conn.assert_silent();

    // And the connection still works.
    let after = conn.exchange(&get("/"));
    assert_eq!(after.body, get_res.body);
}

#[test]
fn conditional_head_with_a_matching_tag_is_a_304() {
    let server = start_server();
    let mut conn = server.connect();
    let etag = fetch_root(&mut conn);

    let res = conn.exchange(&request(
        "HEAD",
        "/",
        &[("If-None-Match", etag.as_bytes())],
        None,
    ));
    assert_bare_304(&res, &etag, quickstart::CACHE_CONTROL);
    conn.assert_silent();
}

// ---------------------------------------------------------------------------------------------
// If-Match → 412
// ---------------------------------------------------------------------------------------------

#[test]
fn if_match_that_fails_gets_an_empty_412_without_etag() {
    let server = start_server();
    let mut conn = server.connect();
    let res = conn.exchange(&request("GET", "/", &[("If-Match", b"\"nope\"")], None));

    assert_eq!(res.status, 412, "{res:#?}");
    assert_eq!(res.get("content-length"), Some("0"), "{res:#?}");
    assert!(res.body.is_empty());
    for name in ["etag", "content-type", "cache-control"] {
        assert!(!res.has(name), "412 carries {name}: {res:#?}");
    }
    conn.assert_silent();
}

#[test]
fn if_match_with_the_current_etag_gets_the_200() {
    let server = start_server();
    let mut conn = server.connect();
    let etag = fetch_root(&mut conn);

    let res = conn.exchange(&request("GET", "/", &[("If-Match", etag.as_bytes())], None));
    assert_eq!(res.status, 200, "{res:#?}");
    assert_eq!(res.get("etag"), Some(etag.as_str()));
    let json: serde_json::Value = serde_json::from_slice(&res.body).unwrap();
    assert_eq!(json, catalogue_json());
}

#[test]
fn if_match_star_passes_and_if_match_is_evaluated_before_if_none_match() {
    let server = start_server();
    let mut conn = server.connect();
    let etag = fetch_root(&mut conn);

    let star = conn.exchange(&request("GET", "/", &[("If-Match", b"*")], None));
    assert_eq!(star.status, 200, "{star:#?}");

    // §13.2.2 step 1 before step 3: a failing If-Match wins over a matching If-None-Match.
    let both = conn.exchange(&request(
        "GET",
        "/",
        &[
            ("If-Match", b"\"nope\""),
            ("If-None-Match", etag.as_bytes()),
        ],
        None,
    ));
    assert_eq!(both.status, 412, "{both:#?}");
    conn.assert_silent();
}

#[test]
fn if_none_match_split_over_two_field_lines_still_matches() {
    let server = start_server();
    let mut conn = server.connect();
    let etag = fetch_root(&mut conn);

    // RFC 9110 §5.3: repeated field lines form one comma-separated list.
    let res = conn.exchange(&request(
        "GET",
        "/",
        &[
            ("If-None-Match", b"\"x\""),
            ("If-None-Match", etag.as_bytes()),
        ],
        None,
    ));
    assert_bare_304(&res, &etag, quickstart::CACHE_CONTROL);
    conn.assert_silent();
}

// ---------------------------------------------------------------------------------------------
// Headers a 304 must keep or drop, as written on the wire
// ---------------------------------------------------------------------------------------------

#[test]
fn a_304_carries_each_set_cookie_line_separately() {
    let server = start_server();
    let mut conn = server.connect();
    let ok = conn.exchange(&get("/cookies"));
    assert_eq!(ok.status, 200, "{ok:#?}");
    assert_eq!(ok.all("set-cookie"), [COOKIE_A, COOKIE_B]);
    let etag = ok.etag().to_owned();

    let res = conn.exchange(&request(
        "GET",
        "/cookies",
        &[("If-None-Match", etag.as_bytes())],
        None,
    ));
    assert_bare_304(&res, &etag, "private, max-age=0");
    // Two lines, never one comma-joined line (the second cookie itself contains a comma).
    assert_eq!(res.all("set-cookie"), [COOKIE_A, COOKIE_B], "{res:#?}");
    conn.assert_silent();
}

#[test]
fn a_hand_set_content_length_is_not_sent_on_the_304() {
    let server = start_server();
    let mut conn = server.connect();
    let ok = conn.exchange(&get("/manual-length"));
    assert_eq!(ok.status, 200, "{ok:#?}");
    // actix writes its own length for the 200 and drops the duplicate the handler set.
    assert_eq!(
        ok.all("content-length"),
        [MANUAL_BODY.len().to_string().as_str()]
    );
    assert_eq!(ok.body_str(), MANUAL_BODY);
    let etag = ok.etag().to_owned();

    // For a 304 actix would write a hand-set Content-Length; the middleware must remove it.
    let res = conn.exchange(&request(
        "GET",
        "/manual-length",
        &[("If-None-Match", etag.as_bytes())],
        None,
    ));
    assert_eq!(res.status, 304, "{res:#?}");
    assert!(!res.has("content-length"), "{res:#?}");
    assert!(!res.has("content-type"), "{res:#?}");
    assert_eq!(res.get("etag"), Some(etag.as_str()));
    conn.assert_silent();

    let again = conn.exchange(&get("/manual-length"));
    assert_eq!(again.body_str(), MANUAL_BODY);
}

#[test]
fn actix_itself_writes_a_hand_set_content_length_on_a_304() {
    // Why the middleware must strip it, and proof that the check above can see it: actix's h1
    // encoder keeps a hand-set Content-Length on a 304 it did not build.
    let server = start_server();
    let mut conn = server.connect();
    let res = conn.exchange(&get("/raw-304"));
    assert_eq!(res.status, 304, "{res:#?}");
    assert_eq!(res.get("content-length"), Some("5"), "{res:#?}");
    conn.assert_silent();
}

// ---------------------------------------------------------------------------------------------
// Behind Compress
// ---------------------------------------------------------------------------------------------

#[test]
fn a_compressed_200_has_a_weak_etag_and_its_304_varies_on_accept_encoding() {
    let server = start_server();
    let mut conn = server.connect();
    let plain = conn.exchange(&get("/"));
    let strong = plain.etag().to_owned();

    let gzip = conn.exchange(&request("GET", "/", &[("Accept-Encoding", b"gzip")], None));
    assert_eq!(gzip.status, 200, "{gzip:#?}");
    assert_eq!(gzip.get("content-encoding"), Some("gzip"), "{gzip:#?}");
    // Same identity bytes, so the same digest, but weak: it labels a gzip coding too.
    assert_eq!(gzip.get("etag"), Some(format!("W/{strong}").as_str()));
    assert!(
        gzip.all("vary")
            .iter()
            .any(|v| v.eq_ignore_ascii_case("accept-encoding")),
        "{gzip:#?}"
    );
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(gzip.body.as_slice())
        .read_to_end(&mut json)
        .expect("gzip body");
    assert_eq!(json, plain.body);

    for tag in [format!("W/{strong}"), strong.clone()] {
        let res = conn.exchange(&request(
            "GET",
            "/",
            &[
                ("Accept-Encoding", b"gzip"),
                ("If-None-Match", tag.as_bytes()),
            ],
            None,
        ));
        assert_eq!(res.status, 304, "{tag}: {res:#?}");
        assert_eq!(res.get("etag"), Some(format!("W/{strong}").as_str()));
        assert!(
            res.all("vary")
                .iter()
                .any(|v| v.eq_ignore_ascii_case("accept-encoding")),
            "{res:#?}"
        );
        for name in [
            "content-encoding",
            "content-length",
            "content-type",
            "transfer-encoding",
        ] {
            assert!(!res.has(name), "304 carries {name}: {res:#?}");
        }
        conn.assert_silent();
    }

    // A weak tag never satisfies If-Match (strong comparison).
    let res = conn.exchange(&request(
        "GET",
        "/",
        &[
            ("Accept-Encoding", b"gzip"),
            ("If-Match", format!("W/{strong}").as_bytes()),
        ],
        None,
    ));
    assert_eq!(res.status, 412, "{res:#?}");
}

#[test]
fn head_with_accept_encoding_has_the_same_weak_etag_and_coding_as_get() {
    let server = start_server();
    let mut conn = server.connect();
    let gzip: &[(&str, &[u8])] = &[("Accept-Encoding", b"gzip")];
    let get_res = conn.exchange(&request("GET", "/", gzip, None));
    let head = conn.exchange(&request("HEAD", "/", gzip, None));
    assert_eq!(head.status, 200, "{head:#?}");
    assert!(head.etag().starts_with("W/\""), "{head:#?}");
    for name in [
        "etag",
        "content-encoding",
        "content-type",
        "content-length",
        "vary",
    ] {
        assert_eq!(head.all(name), get_res.all(name), "{name}: {head:#?}");
    }
    conn.assert_silent();

    let etag = head.etag().to_owned();
    let mut conditional = gzip.to_vec();
    conditional.push(("If-None-Match", etag.as_bytes()));
    let res = conn.exchange(&request("HEAD", "/", &conditional, None));
    assert_eq!(res.status, 304, "{res:#?}");
    assert_eq!(res.get("etag"), Some(etag.as_str()));
    conn.assert_silent();
}

// ---------------------------------------------------------------------------------------------
// Hostile input
// ---------------------------------------------------------------------------------------------

/// Sends GET `/` with one hostile header; the answer must be a well-formed, non-5xx response
/// (`expected`), and the same connection must then serve a plain GET.
fn assert_survives(name: &str, value: &[u8], expected: u16) {
    let server = start_server();
    let mut conn = server.connect();
    let res = conn.exchange(&request("GET", "/", &[(name, value)], None));
    assert!(res.status < 500, "{name}: {res:#?}");
    assert_eq!(res.status, expected, "{name}: {res:#?}");
    conn.assert_silent();

    let next = conn.exchange(&get("/"));
    assert_eq!(
        next.status, 200,
        "connection unusable after hostile {name}: {next:#?}"
    );
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&next.body).unwrap(),
        catalogue_json()
    );
}

#[test]
fn hostile_if_none_match_of_6000_commas_is_an_empty_list_and_a_200() {
    assert_survives("If-None-Match", &[b','; 6000], 200);
}

#[test]
fn hostile_if_none_match_of_200_members_is_a_200() {
    assert_survives("If-None-Match", "\"a\",".repeat(200).as_bytes(), 200);
}

#[test]
fn hostile_if_none_match_with_obs_text_is_a_200() {
    // Raw 0xE9 / 0xFF bytes (obs-text, legal inside an entity-tag) that match nothing.
    assert_survives("If-None-Match", b"W/\"caf\xE9\", \"\xFF\xFF\"", 200);
}

#[test]
fn obs_text_members_do_not_hide_a_matching_tag() {
    let server = start_server();
    let mut conn = server.connect();
    let etag = fetch_root(&mut conn);
    let mut value = b"\"caf\xE9\", ".to_vec();
    value.extend_from_slice(etag.as_bytes());
    let res = conn.exchange(&request("GET", "/", &[("If-None-Match", &value)], None));
    assert_bare_304(&res, &etag, quickstart::CACHE_CONTROL);
    conn.assert_silent();
}

#[test]
fn hostile_if_modified_since_with_a_five_digit_year_is_ignored() {
    assert_survives("If-Modified-Since", b"Sun, 06 Nov 99999 08:49:37 GMT", 200);
}

#[test]
fn hostile_if_match_of_a_bare_weak_prefix_fails_closed_with_412() {
    // Malformed If-Match fails closed (http-spec §2.3, as Go does).
    assert_survives("If-Match", b"W/", 412);
}
