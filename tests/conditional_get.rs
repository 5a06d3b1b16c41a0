//! `ConditionalGet` behaviour through `actix_web::test`, one test per rule.

use std::io::Read;

use actix_conditional::{ConditionalGet, ETagHasher};
use actix_web::body::{BodySize, MessageBody, SizedStream};
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Compress;
use actix_web::test::{self, TestRequest};
use actix_web::{App, Error, HttpResponse, web};
use bytes::Bytes;
use futures_util::stream;

const BODY: &str = r#"{"items":[1,2,3],"name":"conditional"}"#;
const LAST_MODIFIED: &str = "Sun, 06 Nov 1994 08:49:37 GMT";

fn routes(cfg: &mut web::ServiceConfig) {
    let json = || {
        HttpResponse::Ok()
            .content_type("application/json")
            .body(BODY)
    };
    cfg.route(
        "/",
        web::route()
            .method(Method::GET)
            .to(move || async move { json() }),
    )
    .route(
        "/",
        web::route()
            .method(Method::HEAD)
            .to(move || async move { json() }),
    )
    .route(
        "/",
        web::post().to(|| async { HttpResponse::Ok().body(BODY) }),
    )
    .route(
        "/tagged",
        web::get().to(|| async {
            HttpResponse::Ok()
                .insert_header((header::ETAG, "\"handler-v1\""))
                .body(BODY)
        }),
    )
    .route(
        "/bad-tag",
        web::get().to(|| async {
            HttpResponse::Ok()
                .insert_header((header::ETAG, "not-quoted"))
                .body(BODY)
        }),
    )
    .route(
        "/dated",
        web::get().to(|| async {
            HttpResponse::Ok()
                .insert_header((header::LAST_MODIFIED, LAST_MODIFIED))
                .body(BODY)
        }),
    )
    .route(
        "/no-store",
        web::get().to(|| async {
            HttpResponse::Ok()
                .insert_header((header::CACHE_CONTROL, "private, No-Store"))
                .body(BODY)
        }),
    )
    .route(
        "/empty",
        web::get().to(|| async { HttpResponse::Ok().finish() }),
    )
    .route(
        "/missing",
        web::get().to(|| async { HttpResponse::NotFound().body("nope") }),
    )
    .route(
        "/created",
        web::get().to(|| async { HttpResponse::Created().body(BODY) }),
    )
    .route(
        "/stream",
        web::get().to(|| async {
            let chunks = ["chunk-1;", "chunk-2;", "chunk-3"]
                .map(|c| Ok::<_, Error>(Bytes::from_static(c.as_bytes())));
            HttpResponse::Ok().streaming(stream::iter(chunks))
        }),
    )
    .route(
        "/sized-stream",
        web::get().to(|| async {
            let chunks = ["abc", "def"].map(|c| Ok::<_, Error>(Bytes::from_static(c.as_bytes())));
            HttpResponse::Ok().body(SizedStream::new(6, stream::iter(chunks)))
        }),
    )
    .route(
        "/big",
        web::get().to(|| async { HttpResponse::Ok().body(vec![b'x'; 4096]) }),
    )
    .route(
        "/full-headers",
        web::get().to(|| async {
            HttpResponse::Ok()
                .content_type("application/json")
                .insert_header((header::CACHE_CONTROL, "max-age=60, must-revalidate"))
                .insert_header((header::CONTENT_LOCATION, "/full-headers"))
                .insert_header((header::EXPIRES, "Sun, 06 Nov 1994 08:50:37 GMT"))
                .insert_header((header::LAST_MODIFIED, LAST_MODIFIED))
                .insert_header((header::VARY, "Accept-Language"))
                .insert_header((header::CONTENT_LANGUAGE, "en"))
                .insert_header((header::CONTENT_LENGTH, "38"))
                .append_header((header::SET_COOKIE, "a=1; Path=/"))
                .append_header((header::SET_COOKIE, "b=2; HttpOnly"))
                .body(BODY)
        }),
    );
}

async fn call(
    middleware: ConditionalGet,
    req: TestRequest,
) -> ServiceResponse<impl MessageBody + use<>> {
    let app = test::init_service(App::new().wrap(middleware).configure(routes)).await;
    app.call(req.to_request()).await.unwrap()
}

async fn get(
    path: &str,
    headers: &[(header::HeaderName, &str)],
) -> ServiceResponse<impl MessageBody + use<>> {
    let mut req = TestRequest::get().uri(path);
    for (name, value) in headers {
        req = req.insert_header((name.clone(), *value));
    }
    call(ConditionalGet::default(), req).await
}

fn etag_of<B>(res: &ServiceResponse<B>) -> Option<String> {
    res.headers()
        .get(header::ETAG)
        .map(|v| v.to_str().unwrap().to_owned())
}

async fn default_etag() -> String {
    etag_of(&get("/", &[]).await).expect("200 carries an etag")
}

#[actix_rt::test]
async fn get_gets_strong_xxh3_etag_of_the_body() {
    let res = get("/", &[]).await;
    assert_eq!(res.status(), StatusCode::OK);
    let expected = format!("\"{:032x}\"", xxhash_rust::xxh3::xxh3_128(BODY.as_bytes()));
    assert_eq!(etag_of(&res).unwrap(), expected);
    assert_eq!(test::read_body(res).await, BODY);
}

fn xxh3_expected(body: &[u8]) -> String {
    format!("\"{:032x}\"", xxhash_rust::xxh3::xxh3_128(body))
}

#[actix_rt::test]
async fn md5_and_sha256_hashers_give_their_digests() {
    let req = || TestRequest::get().uri("/");
    let md5 = call(ConditionalGet::new().hasher(ETagHasher::Md5), req()).await;
    let sha = call(ConditionalGet::new().hasher(ETagHasher::Sha256), req()).await;
    let md5 = etag_of(&md5).unwrap();
    let sha = etag_of(&sha).unwrap();
    assert_eq!(md5.len(), 34);
    assert_eq!(sha.len(), 66);
    assert_eq!(md5, ETagHasher::Md5.etag(BODY.as_bytes()));
}

#[actix_rt::test]
async fn if_none_match_exact_tag_is_304_with_etag_kept() {
    let etag = default_etag().await;
    let res = get("/", &[(header::IF_NONE_MATCH, &etag)]).await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(etag_of(&res).unwrap(), etag);
    assert_eq!(res.response().body().size(), BodySize::None);
}

#[actix_rt::test]
async fn if_none_match_weak_form_is_304() {
    let etag = default_etag().await;
    let res = get("/", &[(header::IF_NONE_MATCH, &format!("W/{etag}"))]).await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
}

#[actix_rt::test]
async fn if_none_match_inside_a_list_is_304() {
    let etag = default_etag().await;
    let list = format!("\"a,b\", W/\"old\", {etag}, \"later\"");
    let res = get("/", &[(header::IF_NONE_MATCH, &list)]).await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
}

#[actix_rt::test]
async fn if_none_match_star_is_304() {
    let res = get("/", &[(header::IF_NONE_MATCH, "*")]).await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
}

#[actix_rt::test]
async fn if_none_match_mismatch_is_full_200() {
    let res = get("/", &[(header::IF_NONE_MATCH, "\"something-else\"")]).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(test::read_body(res).await, BODY);
}

#[actix_rt::test]
async fn request_no_cache_does_not_disable_304() {
    let etag = default_etag().await;
    let res = get(
        "/",
        &[
            (header::IF_NONE_MATCH, &etag),
            (header::CACHE_CONTROL, "no-cache"),
        ],
    )
    .await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
}

#[actix_rt::test]
async fn if_match_mismatch_is_empty_412() {
    let res = get("/", &[(header::IF_MATCH, "\"stale\"")]).await;
    assert_eq!(res.status(), StatusCode::PRECONDITION_FAILED);
    assert!(res.headers().get(header::ETAG).is_none());
    assert!(res.headers().get(header::CONTENT_TYPE).is_none());
    assert!(test::read_body(res).await.is_empty());
}

#[actix_rt::test]
async fn if_match_current_tag_is_200() {
    let etag = default_etag().await;
    let res = get("/", &[(header::IF_MATCH, &etag)]).await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[actix_rt::test]
async fn if_unmodified_since_before_last_modified_is_412() {
    let res = get(
        "/dated",
        &[(header::IF_UNMODIFIED_SINCE, "Sat, 05 Nov 1994 08:49:37 GMT")],
    )
    .await;
    assert_eq!(res.status(), StatusCode::PRECONDITION_FAILED);
}

#[actix_rt::test]
async fn if_modified_since_handler_last_modified_is_304() {
    let res = get("/dated", &[(header::IF_MODIFIED_SINCE, LAST_MODIFIED)]).await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(
        res.headers().get(header::LAST_MODIFIED).unwrap(),
        LAST_MODIFIED
    );
}

#[actix_rt::test]
async fn head_gets_the_get_headers_and_etag() {
    let get_res = get("/", &[]).await;
    let head_res = call(
        ConditionalGet::default(),
        TestRequest::default().method(Method::HEAD),
    )
    .await;
    assert_eq!(head_res.status(), StatusCode::OK);
    assert_eq!(etag_of(&head_res), etag_of(&get_res));
    assert_eq!(
        head_res.headers().get(header::CONTENT_TYPE),
        get_res.headers().get(header::CONTENT_TYPE)
    );
    // actix drops a HEAD body at the wire; tests/over_http.rs checks that part.
}

#[actix_rt::test]
async fn conditional_head_is_304() {
    let etag = default_etag().await;
    let req = TestRequest::default()
        .method(Method::HEAD)
        .insert_header((header::IF_NONE_MATCH, etag));
    let res = call(ConditionalGet::default(), req).await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
}

#[actix_rt::test]
async fn post_passes_through_untouched() {
    let req = TestRequest::post()
        .uri("/")
        .insert_header((header::IF_MATCH, "\"stale\""))
        .insert_header((header::IF_NONE_MATCH, "*"));
    let res = call(ConditionalGet::default(), req).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().get(header::ETAG).is_none());
    assert_eq!(test::read_body(res).await, BODY);
}

#[actix_rt::test]
async fn non_2xx_ignores_preconditions() {
    let res = get("/missing", &[(header::IF_NONE_MATCH, "*")]).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert!(res.headers().get(header::ETAG).is_none());
    assert_eq!(test::read_body(res).await, "nope");
    let res = get("/missing", &[(header::IF_MATCH, "\"x\"")]).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}

#[actix_rt::test]
async fn only_200_becomes_304() {
    let res = get("/created", &[(header::IF_NONE_MATCH, "*")]).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(test::read_body(res).await, BODY);
}

#[actix_rt::test]
async fn handler_etag_is_never_replaced() {
    let res = get("/tagged", &[]).await;
    assert_eq!(etag_of(&res).unwrap(), "\"handler-v1\"");
    let res = get("/tagged", &[(header::IF_NONE_MATCH, "\"handler-v1\"")]).await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
}

#[actix_rt::test]
async fn invalid_handler_etag_is_kept_and_never_panics() {
    let res = get("/bad-tag", &[(header::IF_NONE_MATCH, "\"not-quoted\"")]).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(etag_of(&res).unwrap(), "not-quoted");
    assert_eq!(test::read_body(res).await, BODY);
}

#[actix_rt::test]
async fn no_store_response_gets_no_etag() {
    let res = get("/no-store", &[]).await;
    assert!(res.headers().get(header::ETAG).is_none());
    assert_eq!(test::read_body(res).await, BODY);
}

#[actix_rt::test]
async fn empty_body_gets_no_etag() {
    let res = get("/empty", &[]).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().get(header::ETAG).is_none());
}

#[actix_rt::test]
async fn streaming_body_passes_through_byte_for_byte() {
    let res = get("/stream", &[(header::IF_NONE_MATCH, "*")]).await;
    // `*` matches any current representation, with or without an ETag.
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    let res = get("/stream", &[]).await;
    assert!(res.headers().get(header::ETAG).is_none());
    assert_eq!(test::read_body(res).await, "chunk-1;chunk-2;chunk-3");
}

#[actix_rt::test]
async fn sized_stream_is_never_emptied() {
    let res = get("/sized-stream", &[]).await;
    assert!(res.headers().get(header::ETAG).is_none());
    assert_eq!(test::read_body(res).await, "abcdef");
}

#[actix_rt::test]
async fn body_over_max_body_bytes_passes_through_without_etag() {
    let req = TestRequest::get().uri("/big");
    let res = call(ConditionalGet::new().max_body_bytes(4095), req).await;
    assert!(res.headers().get(header::ETAG).is_none());
    assert_eq!(test::read_body(res).await.len(), 4096);
    let res = call(
        ConditionalGet::new().max_body_bytes(4096),
        TestRequest::get().uri("/big"),
    )
    .await;
    assert!(res.headers().get(header::ETAG).is_some());
}

#[actix_rt::test]
async fn not_modified_keeps_cache_headers_and_cookies_and_drops_content_headers() {
    let etag = etag_of(&get("/full-headers", &[]).await).unwrap();
    let res = get("/full-headers", &[(header::IF_NONE_MATCH, &etag)]).await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    let h = res.headers();
    assert_eq!(
        h.get(header::CACHE_CONTROL).unwrap(),
        "max-age=60, must-revalidate"
    );
    assert_eq!(h.get(header::CONTENT_LOCATION).unwrap(), "/full-headers");
    assert_eq!(
        h.get(header::EXPIRES).unwrap(),
        "Sun, 06 Nov 1994 08:50:37 GMT"
    );
    assert_eq!(h.get(header::LAST_MODIFIED).unwrap(), LAST_MODIFIED);
    // The 200 went out as identity to a client that accepts no coding, so it (and this 304
    // standing in for it) varies on Accept-Encoding too, like its encoded siblings.
    assert_eq!(
        h.get(header::VARY).unwrap(),
        "Accept-Language, accept-encoding"
    );
    assert_eq!(h.get(header::ETAG).unwrap().to_str().unwrap(), etag);
    let cookies: Vec<&HeaderValue> = h.get_all(header::SET_COOKIE).collect();
    assert_eq!(cookies, ["a=1; Path=/", "b=2; HttpOnly"]);
    for gone in [
        header::CONTENT_TYPE,
        header::CONTENT_LENGTH,
        header::CONTENT_LANGUAGE,
    ] {
        assert!(!h.contains_key(&gone), "{gone} must not be on a 304");
    }
    assert_eq!(res.response().body().size(), BodySize::None);
}

// --- Compression: both wrap orders with the real `Compress` -----------------------------

fn gunzip(bytes: &[u8]) -> String {
    let mut out = String::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_string(&mut out)
        .unwrap();
    out
}

/// The supported order: `ConditionalGet` registered first, so `Compress` wraps it.
async fn call_inside_compress(req: TestRequest) -> ServiceResponse<impl MessageBody + use<>> {
    let app = test::init_service(
        App::new()
            .wrap(ConditionalGet::default())
            .wrap(Compress::default())
            .configure(routes),
    )
    .await;
    app.call(req.to_request()).await.unwrap()
}

/// The other order: `ConditionalGet` outermost, seeing what `Compress` produced.
async fn call_outside_compress(req: TestRequest) -> ServiceResponse<impl MessageBody + use<>> {
    let app = test::init_service(
        App::new()
            .wrap(Compress::default())
            .wrap(ConditionalGet::default())
            .configure(routes),
    )
    .await;
    app.call(req.to_request()).await.unwrap()
}

fn gzip_get(path: &str) -> TestRequest {
    TestRequest::get()
        .uri(path)
        .insert_header((header::ACCEPT_ENCODING, "gzip"))
}

#[actix_rt::test]
async fn inside_compress_gzip_body_gets_weak_etag_of_identity_bytes() {
    let identity = call_inside_compress(TestRequest::get().uri("/")).await;
    let strong = etag_of(&identity).unwrap();
    assert!(!strong.starts_with("W/"));
    assert!(identity.headers().get(header::CONTENT_ENCODING).is_none());

    let gzipped = call_inside_compress(gzip_get("/")).await;
    assert_eq!(
        gzipped.headers().get(header::CONTENT_ENCODING).unwrap(),
        "gzip"
    );
    assert_eq!(etag_of(&gzipped).unwrap(), format!("W/{strong}"));
    let vary: Vec<&HeaderValue> = gzipped.headers().get_all(header::VARY).collect();
    assert_eq!(vary, ["accept-encoding"]);
    assert_eq!(gunzip(&test::read_body(gzipped).await), BODY);
}

#[actix_rt::test]
async fn inside_compress_304_carries_the_vary_of_the_200() {
    let strong = etag_of(&call_inside_compress(TestRequest::get().uri("/")).await).unwrap();
    for tag in [strong.clone(), format!("W/{strong}")] {
        let res =
            call_inside_compress(gzip_get("/").insert_header((header::IF_NONE_MATCH, tag))).await;
        assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(res.headers().get(header::VARY).unwrap(), "accept-encoding");
        assert_eq!(etag_of(&res).unwrap(), format!("W/{strong}"));
        assert!(res.headers().get(header::CONTENT_ENCODING).is_none());
        assert_eq!(res.response().body().size(), BodySize::None);
    }
}

#[actix_rt::test]
async fn inside_compress_weak_tag_never_satisfies_if_match() {
    let res = call_inside_compress(gzip_get("/").insert_header((header::IF_MATCH, "*"))).await;
    assert_eq!(res.status(), StatusCode::OK);
    let strong = etag_of(&call_inside_compress(TestRequest::get().uri("/")).await).unwrap();
    let res = call_inside_compress(gzip_get("/").insert_header((header::IF_MATCH, strong))).await;
    assert_eq!(res.status(), StatusCode::PRECONDITION_FAILED);
}

#[actix_rt::test]
async fn outside_compress_hashes_nothing_encoded_and_weakens_handler_tags() {
    let res = call_outside_compress(gzip_get("/")).await;
    assert_eq!(res.headers().get(header::CONTENT_ENCODING).unwrap(), "gzip");
    assert!(res.headers().get(header::ETAG).is_none());
    assert_eq!(gunzip(&test::read_body(res).await), BODY);

    let res = call_outside_compress(gzip_get("/tagged")).await;
    assert_eq!(etag_of(&res).unwrap(), "W/\"handler-v1\"");

    let res = call_outside_compress(
        gzip_get("/tagged").insert_header((header::IF_NONE_MATCH, "\"handler-v1\"")),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(res.headers().get(header::VARY).unwrap(), "accept-encoding");
    assert!(res.headers().get(header::CONTENT_ENCODING).is_none());
}

#[actix_rt::test]
async fn outside_compress_identity_body_is_still_hashed_strong() {
    let res = call_outside_compress(TestRequest::get().uri("/")).await;
    let etag = etag_of(&res).unwrap();
    assert_eq!(etag, xxh3_expected(BODY.as_bytes()));
}

#[actix_rt::test]
async fn weakening_can_be_turned_off_when_nothing_compresses() {
    let res = call(
        ConditionalGet::new().weaken_when_compressible(false),
        gzip_get("/"),
    )
    .await;
    assert_eq!(etag_of(&res).unwrap(), xxh3_expected(BODY.as_bytes()));
}

#[actix_rt::test]
async fn inside_compress_pre_handler_304_matches_the_weak_200() {
    use actix_conditional::CachePolicy;
    use actix_conditional::condition::{HandlerPolicy, RequestValidators};
    const POLICY: HandlerPolicy = HandlerPolicy::new(CachePolicy::revalidate(60));
    async fn revisioned(req: actix_web::HttpRequest) -> HttpResponse {
        let validators = RequestValidators::new().etag(Some("rev-1"));
        POLICY
            .respond(&req, validators, async { HttpResponse::Ok().body(BODY) })
            .await
    }
    let app = test::init_service(
        App::new()
            .wrap(ConditionalGet::default())
            .wrap(Compress::default())
            .route("/rev", web::get().to(revisioned)),
    )
    .await;
    let ok = app.call(gzip_get("/rev").to_request()).await.unwrap();
    assert_eq!(etag_of(&ok).unwrap(), "W/\"rev-1\"");
    let req = gzip_get("/rev").insert_header((header::IF_NONE_MATCH, "W/\"rev-1\""));
    let res = app.call(req.to_request()).await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(etag_of(&res), etag_of(&ok));
    assert_eq!(res.headers().get(header::VARY).unwrap(), "accept-encoding");
    // Without Accept-Encoding the tag stays strong, and the 304 varies on Accept-Encoding as
    // its identity 200 does (RFC 9110 §15.4.5).
    let identity = TestRequest::get().uri("/rev");
    let ok = app.call(identity.to_request()).await.unwrap();
    assert_eq!(ok.headers().get(header::VARY).unwrap(), "accept-encoding");
    let req = TestRequest::get()
        .uri("/rev")
        .insert_header((header::IF_NONE_MATCH, "\"rev-1\""));
    let res = app.call(req.to_request()).await.unwrap();
    assert_eq!(etag_of(&res).unwrap(), "\"rev-1\"");
    assert_eq!(
        res.headers().get(header::VARY),
        ok.headers().get(header::VARY)
    );
}

/// RFC 9110 §12.5.5: a response that could have been encoded differently says so. An outer
/// `Compress` adds `Vary: accept-encoding` only to what it encodes; the identity 200 a client
/// without `Accept-Encoding` gets must carry it too, or a shared cache may hand that copy to
/// everyone (and a gzip copy, if `Vary` is lost on the way, to clients that cannot decode it).
#[actix_rt::test]
async fn compressible_identity_answers_vary_on_accept_encoding_like_their_encoded_siblings() {
    let app = test::init_service(
        App::new()
            .wrap(Compress::default())
            .wrap(ConditionalGet::new())
            .route(
                "/json",
                web::get().to(|| async {
                    HttpResponse::Ok()
                        .content_type("application/json")
                        .body("[1, 2, 3]".repeat(100))
                }),
            )
            .route(
                "/png",
                web::get().to(|| async {
                    HttpResponse::Ok()
                        .content_type("image/png")
                        .body(vec![0u8; 900])
                }),
            ),
    )
    .await;
    let vary = |headers: &header::HeaderMap| -> Vec<String> {
        headers
            .get_all(header::VARY)
            .map(|v| v.to_str().unwrap().to_ascii_lowercase())
            .collect()
    };
    let identity = test::call_service(&app, TestRequest::get().uri("/json").to_request()).await;
    assert!(identity.headers().get(header::CONTENT_ENCODING).is_none());
    assert_eq!(vary(identity.headers()), ["accept-encoding"]);
    let gzip = test::call_service(
        &app,
        TestRequest::get()
            .uri("/json")
            .insert_header((header::ACCEPT_ENCODING, "gzip"))
            .to_request(),
    )
    .await;
    assert_eq!(
        gzip.headers().get(header::CONTENT_ENCODING).unwrap(),
        "gzip"
    );
    assert_eq!(
        vary(gzip.headers()),
        ["accept-encoding"],
        "once, from Compress"
    );
    // Compress never encodes images: nothing varies.
    let png = test::call_service(&app, TestRequest::get().uri("/png").to_request()).await;
    assert!(vary(png.headers()).is_empty());
}
