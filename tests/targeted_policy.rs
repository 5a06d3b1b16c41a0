//! `cdn_max_age` and `surrogate_max_age` (RFC 9213 targeted fields) on `#[etag_cached]` and
//! `#[cache_control]`, end to end: reads get them, mutations and errors never do, and a
//! private answer makes them private too.

use actix_conditional::viewset::{self, ViewSet};
use actix_conditional::{cache_control, etag_cached};
use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, CDN_CACHE_CONTROL, HeaderName};
use actix_web::test::{self, TestRequest};
use actix_web::web::{self, Bytes};
use actix_web::{App, HttpRequest, HttpResponse};

const SURROGATE_CONTROL: HeaderName = HeaderName::from_static("surrogate-control");

fn revision(_req: &HttpRequest) -> Option<&'static str> {
    Some("r1")
}

#[etag_cached(max_age = 0, cdn_max_age = 600, surrogate_max_age = 3600, etag = revision)]
async fn scores(path: web::Path<String>) -> HttpResponse {
    match path.as_str() {
        "missing" => HttpResponse::NotFound().finish(),
        // The handler's own targeted field and Cache-Control are merged with, not replaced.
        "own" => HttpResponse::Ok()
            .insert_header((CDN_CACHE_CONTROL, "max-age=60, stale-if-error=30"))
            .body("own"),
        "mine" => HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "private"))
            .body("mine"),
        _ => HttpResponse::Ok().body("scores"),
    }
}

#[etag_cached(max_age = 0, cdn_max_age = 600)]
async fn post_score() -> HttpResponse {
    HttpResponse::Created().body("made")
}

#[cache_control(public, max_age = 60, cdn_max_age = 600, surrogate_max_age = 86400)]
async fn schedule() -> &'static str {
    "schedule"
}

#[cache_control(max_age = 60, cdn_max_age = 600)]
async fn not_public() -> &'static str {
    "not public"
}

#[etag_cached(
    max_age = 0,
    cdn_max_age = 30,
    cache = "targeted-policy-hits",
    ttl = 60
)]
async fn cached() -> &'static str {
    "cached"
}

#[derive(Clone)]
struct Posts;

#[etag_cached(max_age = 0, cdn_max_age = 600)]
impl ViewSet for Posts {
    async fn list(&self, _req: HttpRequest) -> HttpResponse {
        HttpResponse::Ok().json(["one"])
    }

    #[etag_cached(cdn_max_age = 60, surrogate_max_age = 120)]
    async fn retrieve(&self, _req: HttpRequest, id: String) -> HttpResponse {
        if id == "1" {
            HttpResponse::Ok().json("one")
        } else {
            HttpResponse::NotFound().finish()
        }
    }

    async fn create(&self, _req: HttpRequest, body: Bytes) -> HttpResponse {
        HttpResponse::Created().body(body)
    }

    async fn update(&self, _req: HttpRequest, _id: String, body: Bytes) -> HttpResponse {
        HttpResponse::Ok().body(body)
    }

    async fn destroy(&self, _req: HttpRequest, _id: String) -> HttpResponse {
        HttpResponse::NoContent().finish()
    }
}

async fn call(req: TestRequest) -> ServiceResponse<impl MessageBody + use<>> {
    let app = test::init_service(
        App::new()
            .route("/scores/{which}", web::get().to(scores))
            .route("/scores/{which}", web::head().to(scores))
            .route("/scores", web::post().to(post_score))
            .route("/schedule", web::route().to(schedule))
            .route("/not-public", web::get().to(not_public))
            .route("/cached", web::get().to(cached))
            .configure(|cfg| viewset::register(cfg, "posts", Posts)),
    )
    .await;
    app.call(req.to_request()).await.unwrap()
}

fn header<B>(res: &ServiceResponse<B>, name: &HeaderName) -> Option<String> {
    res.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

/// `(Cache-Control, CDN-Cache-Control, Surrogate-Control)` of the answer.
fn fields<B>(res: &ServiceResponse<B>) -> [Option<String>; 3] {
    [
        header(res, &header::CACHE_CONTROL),
        header(res, &CDN_CACHE_CONTROL),
        header(res, &SURROGATE_CONTROL),
    ]
}

fn some(values: [&str; 3]) -> [Option<String>; 3] {
    values.map(|v| (!v.is_empty()).then(|| v.to_owned()))
}

#[actix_rt::test]
async fn reads_get_each_audience_its_lifetime() {
    let res = call(TestRequest::get().uri("/scores/all")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        fields(&res),
        some(["max-age=0, must-revalidate", "max-age=600", "max-age=3600"])
    );
    let res = call(
        TestRequest::default()
            .method(actix_web::http::Method::HEAD)
            .uri("/scores/all"),
    )
    .await;
    assert_eq!(
        fields(&res),
        some(["max-age=0, must-revalidate", "max-age=600", "max-age=3600"])
    );
}

#[actix_rt::test]
async fn a_304_carries_the_targeted_fields_too() {
    let req = TestRequest::get()
        .uri("/scores/all")
        .insert_header((header::IF_NONE_MATCH, "\"r1\""));
    let res = call(req).await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    // A CDN refreshes its stored headers from the 304 (RFC 9111 §4.3.4).
    assert_eq!(
        fields(&res),
        some(["max-age=0, must-revalidate", "max-age=600", "max-age=3600"])
    );
}

#[actix_rt::test]
async fn the_handlers_own_fields_are_merged() {
    let res = call(TestRequest::get().uri("/scores/own")).await;
    assert_eq!(
        fields(&res),
        some([
            "max-age=0, must-revalidate",
            "max-age=60, stale-if-error=30",
            "max-age=3600"
        ])
    );
}

#[actix_rt::test]
async fn a_private_answer_is_private_for_cdns_too() {
    // Credentials: Cache-Control becomes private (RFC 9111 §3.5), and a CDN, which reads its
    // own field instead (RFC 9213 §2.2), must not store it either.
    let req = TestRequest::get()
        .uri("/scores/all")
        .insert_header((header::AUTHORIZATION, "Bearer x"));
    assert_eq!(
        fields(&call(req).await),
        some([
            "private, max-age=0, must-revalidate",
            "private, max-age=600",
            "private, max-age=3600"
        ])
    );
    // The handler's own `private`.
    let res = call(TestRequest::get().uri("/scores/mine")).await;
    assert_eq!(
        fields(&res),
        some([
            "private, max-age=0, must-revalidate",
            "private, max-age=600",
            "private, max-age=3600"
        ])
    );
}

#[actix_rt::test]
async fn errors_and_mutations_get_no_targeted_field() {
    let res = call(TestRequest::get().uri("/scores/missing")).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        fields(&res),
        some(["no-cache, no-store, must-revalidate", "", ""])
    );
    let res = call(TestRequest::post().uri("/scores")).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(
        fields(&res),
        some(["no-cache, no-store, must-revalidate", "", ""])
    );
}

#[actix_rt::test]
async fn viewset_reads_get_it_and_mutations_keep_no_store() {
    let res = call(TestRequest::get().uri("/posts")).await;
    assert_eq!(
        fields(&res),
        some(["max-age=0, must-revalidate", "max-age=600", ""])
    );
    // The method's own options override the block's.
    let res = call(TestRequest::get().uri("/posts/1")).await;
    assert_eq!(
        fields(&res),
        some(["max-age=0, must-revalidate", "max-age=60", "max-age=120"])
    );
    let res = call(TestRequest::get().uri("/posts/2")).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        fields(&res),
        some(["no-cache, no-store, must-revalidate", "", ""])
    );

    for (req, status) in [
        (TestRequest::post().uri("/posts"), StatusCode::CREATED),
        (TestRequest::put().uri("/posts/1"), StatusCode::OK),
        (
            TestRequest::delete().uri("/posts/1"),
            StatusCode::NO_CONTENT,
        ),
    ] {
        let res = call(req).await;
        assert_eq!(res.status(), status);
        assert_eq!(
            fields(&res),
            some(["no-cache, no-store, must-revalidate", "", ""])
        );
    }
}

#[actix_rt::test]
async fn cache_control_sets_them_on_every_answer() {
    // Django's decorator: every method and status, like Cache-Control itself.
    for req in [TestRequest::get(), TestRequest::post()] {
        let res = call(req.uri("/schedule")).await;
        assert_eq!(
            fields(&res),
            some(["public, max-age=60", "max-age=600", "max-age=86400"])
        );
    }
    // Explicitly public: shared even with credentials, for CDNs as for other caches.
    let req = TestRequest::get()
        .uri("/schedule")
        .insert_header((header::AUTHORIZATION, "Bearer x"));
    assert_eq!(
        fields(&call(req).await),
        some(["public, max-age=60", "max-age=600", "max-age=86400"])
    );
    // Not public: private with credentials, everywhere.
    let req = TestRequest::get()
        .uri("/not-public")
        .insert_header((header::AUTHORIZATION, "Bearer x"));
    assert_eq!(
        fields(&call(req).await),
        some(["private, max-age=60", "private, max-age=600", ""])
    );
}

#[actix_rt::test]
async fn a_cached_answer_keeps_its_targeted_field_on_hits() {
    let app = test::init_service(App::new().route("/cached", web::get().to(cached))).await;
    for expected in ["miss", "hit"] {
        let res = app
            .call(TestRequest::get().uri("/cached").to_request())
            .await
            .unwrap();
        let status = actix_conditional::response_cache::CacheStatus::of(res.response());
        assert_eq!(status.map(|s| s.label()), Some(expected));
        assert_eq!(
            header(&res, &CDN_CACHE_CONTROL).as_deref(),
            Some("max-age=30")
        );
    }
}
