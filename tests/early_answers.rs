//! A 304 or 412 decided from validators before the handler carries what its 200 carries
//! (RFC 9110 §15.4.5): the same `ETag` form (weak only where `Compress` would encode the
//! 200), the same `Vary`, and on a GET's 412 the validators themselves (Django's `@condition`).
//! Over compressible and non-compressible content types, with and without `Accept-Encoding`,
//! and in both orders of `ConditionalGet` and `Compress`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_conditional::{ConditionalGet, etag_cached};
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderName};
use actix_web::middleware::Compress;
use actix_web::test::{self, TestRequest};
use actix_web::{App, HttpRequest, HttpResponse, web};

fn revision(_req: &HttpRequest) -> Option<&'static str> {
    Some("v1")
}

fn modified(_req: &HttpRequest) -> Option<SystemTime> {
    Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
}

/// Large enough for `Compress` to encode it when the content type allows.
fn body() -> String {
    "0123456789".repeat(200)
}

#[etag_cached(max_age = 60, etag = revision, last_modified = modified)]
async fn json() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(body())
}

#[etag_cached(max_age = 60, etag = revision, last_modified = modified)]
async fn png() -> HttpResponse {
    HttpResponse::Ok().content_type("image/png").body(body())
}

#[etag_cached(max_age = 60, etag = revision, last_modified = modified)]
async fn already_coded() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((header::CONTENT_ENCODING, "br"))
        .body(body())
}

#[derive(Debug, Clone, Copy)]
enum Order {
    /// README's order: `ConditionalGet` registered first, so `Compress` wraps it.
    CompressOutside,
    /// The other one: `ConditionalGet` sees encoded bodies.
    ConditionalGetOutside,
}

fn header<B>(res: &ServiceResponse<B>, name: HeaderName) -> Option<String> {
    res.headers()
        .get(name)
        .map(|value| value.to_str().unwrap().to_owned())
}

fn varies_on_encoding<B>(res: &ServiceResponse<B>) -> bool {
    res.headers().get_all(header::VARY).any(|v| {
        v.to_str()
            .unwrap()
            .to_ascii_lowercase()
            .contains("accept-encoding")
    })
}

/// The 200, the 304 for its tag and a 412, from `app`.
macro_rules! three_answers {
    ($app:expr, $request:expr) => {{
        let app = test::init_service(
            $app.route("/json", web::get().to(json))
                .route("/png", web::get().to(png))
                .route("/coded", web::get().to(already_coded)),
        )
        .await;
        let full = app.call($request(None)).await.unwrap();
        let tag = header(&full, header::ETAG).unwrap();
        let nm = app
            .call($request(Some((header::IF_NONE_MATCH, tag.as_str()))))
            .await
            .unwrap();
        let failed = app
            .call($request(Some((header::IF_MATCH, "\"other\""))))
            .await
            .unwrap();
        (
            full.map_into_boxed_body(),
            nm.map_into_boxed_body(),
            failed.map_into_boxed_body(),
        )
    }};
}

async fn check(order: Order, path: &str, accept: Option<&str>) {
    let request = |extra: Option<(HeaderName, &str)>| {
        let mut req = TestRequest::get().uri(path);
        if let Some(accept) = accept {
            req = req.insert_header((header::ACCEPT_ENCODING, accept));
        }
        if let Some(extra) = extra {
            req = req.insert_header(extra);
        }
        req.to_request()
    };
    let (full, not_modified, failed) = match order {
        Order::CompressOutside => three_answers!(
            App::new()
                .wrap(ConditionalGet::default())
                .wrap(Compress::default()),
            request
        ),
        Order::ConditionalGetOutside => three_answers!(
            App::new()
                .wrap(Compress::default())
                .wrap(ConditionalGet::default()),
            request
        ),
    };
    let case = format!("{order:?} {path} Accept-Encoding: {accept:?}");
    assert_eq!(full.status(), StatusCode::OK, "{case}");
    assert_eq!(not_modified.status(), StatusCode::NOT_MODIFIED, "{case}");
    assert_eq!(failed.status(), StatusCode::PRECONDITION_FAILED, "{case}");
    for early in [&not_modified, &failed] {
        assert_eq!(
            header(early, header::ETAG),
            header(&full, header::ETAG),
            "{case}: {} carries the 200's tag",
            early.status()
        );
        assert_eq!(
            varies_on_encoding(early),
            varies_on_encoding(&full),
            "{case}: {} varies as the 200 does",
            early.status()
        );
        assert_eq!(
            header(early, header::LAST_MODIFIED),
            header(&full, header::LAST_MODIFIED),
            "{case}"
        );
    }
}

#[actix_rt::test]
async fn early_answers_match_their_200_in_every_combination() {
    for order in [Order::CompressOutside, Order::ConditionalGetOutside] {
        for path in ["/json", "/png", "/coded"] {
            for accept in [Some("gzip"), None] {
                check(order, path, accept).await;
            }
        }
    }
}

#[actix_rt::test]
async fn the_shapes_differ_where_they_should() {
    // Not vacuous: a compressible body's tag is weak for a gzip client, an image's is not.
    let app = test::init_service(
        App::new()
            .wrap(ConditionalGet::default())
            .wrap(Compress::default())
            .route("/json", web::get().to(json))
            .route("/png", web::get().to(png)),
    )
    .await;
    let get = |path: &'static str| {
        TestRequest::get()
            .uri(path)
            .insert_header((header::ACCEPT_ENCODING, "gzip"))
            .insert_header((header::IF_NONE_MATCH, "\"v1\""))
            .to_request()
    };
    let json = app.call(get("/json")).await.unwrap();
    assert_eq!(json.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(json.headers().get(header::ETAG).unwrap(), "W/\"v1\"");
    // The first early answer for /png comes before any 200: JSON is assumed. After one 200,
    // its shape is known.
    let warm = TestRequest::get()
        .uri("/png")
        .insert_header((header::ACCEPT_ENCODING, "gzip"))
        .to_request();
    assert_eq!(app.call(warm).await.unwrap().status(), StatusCode::OK);
    let png = app.call(get("/png")).await.unwrap();
    assert_eq!(png.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(png.headers().get(header::ETAG).unwrap(), "\"v1\"");
    assert!(!png.headers().contains_key(header::VARY));
}

/// A response cache's 304 stands in for a stored 200: `ConditionalGet` outside it gives the
/// 304 the 200's tag form and `Vary` (here: an image, so neither weakened nor varied).
#[actix_rt::test]
async fn a_response_caches_304_matches_its_stored_200() {
    use actix_conditional::ResponseCache;
    use actix_conditional::response_cache::ManualClock;

    let cache = ResponseCache::ttl("early-answers-png", Duration::from_secs(30))
        .clock(ManualClock::new())
        .build();
    let serve = move |req: HttpRequest| {
        let cache = cache.clone();
        async move {
            cache
                .serve(&req, |_req| async {
                    HttpResponse::Ok()
                        .content_type("image/png")
                        .insert_header((header::ETAG, "\"png-1\""))
                        .body(body())
                })
                .await
        }
    };
    let app = test::init_service(
        App::new()
            .wrap(ConditionalGet::default())
            .wrap(Compress::default())
            .route("/cached.png", web::get().to(serve)),
    )
    .await;
    let gzip = || {
        TestRequest::get()
            .uri("/cached.png")
            .insert_header((header::ACCEPT_ENCODING, "gzip"))
    };
    let full = app.call(gzip().to_request()).await.unwrap();
    assert_eq!(full.status(), StatusCode::OK);
    assert_eq!(full.headers().get(header::ETAG).unwrap(), "\"png-1\"");
    let req = gzip().insert_header((header::IF_NONE_MATCH, "\"png-1\""));
    let res = app.call(req.to_request()).await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(&res, header::ETAG), header(&full, header::ETAG));
    assert_eq!(varies_on_encoding(&res), varies_on_encoding(&full));
}
