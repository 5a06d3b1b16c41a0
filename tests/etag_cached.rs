//! `#[etag_cached]`, `#[cache_control]` and `#[never_cache]` end to end.

use std::cell::Cell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_conditional::condition::Validated;
use actix_conditional::viewset::{self, ViewSet};
use actix_conditional::{ConditionalGet, cache_control, etag_cached, never_cache};
use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::header::{self, HeaderName};
use actix_web::http::{Method, StatusCode};
use actix_web::test::{self, TestRequest};
use actix_web::web::{self, Bytes};
use actix_web::{App, HttpRequest, HttpResponse, Responder, ResponseError, get, route};

thread_local! {
    static RUNS: Cell<u32> = const { Cell::new(0) };
}

fn runs() -> u32 {
    RUNS.with(Cell::get)
}

fn ran() {
    RUNS.with(|r| r.set(r.get() + 1));
}

fn revision(_req: &HttpRequest) -> Option<String> {
    Some("rev-7".to_owned())
}

async fn modified(_req: &HttpRequest) -> Option<SystemTime> {
    Some(UNIX_EPOCH + Duration::from_secs(784_111_777))
}

#[etag_cached(max_age = 60, etag = revision, last_modified = modified)]
async fn report() -> impl Responder {
    ran();
    "the report"
}

#[etag_cached(max_age = 30, private, vary = ["Accept-Language"])]
async fn with_extractors(
    path: web::Path<(u32, String)>,
    req: HttpRequest,
) -> Result<HttpResponse, actix_web::Error> {
    let (id, name) = path.into_inner();
    let lang = req.headers().get(header::ACCEPT_LANGUAGE).is_some();
    let n: u32 = name.parse().map_err(actix_web::error::ErrorBadRequest)?;
    Ok(HttpResponse::Ok().body(format!("{id}:{n}:{lang}")))
}

#[get("/above")]
#[etag_cached(max_age = 5)]
async fn get_above() -> &'static str {
    "above"
}

#[etag_cached(max_age = 5)]
#[route("/below", method = "GET", method = "HEAD")]
async fn get_below() -> &'static str {
    "below"
}

thread_local! {
    static VERSION: Cell<u32> = const { Cell::new(3) };
}

fn versioned(_req: &HttpRequest) -> Option<String> {
    Some(format!("v{}", VERSION.with(Cell::get)))
}

/// A compare-and-set write through the macro: it reads what `If-Match` was checked against.
#[etag_cached(max_age = 0, etag = versioned)]
async fn compare_and_set(req: HttpRequest, racing: web::Path<bool>) -> HttpResponse {
    let validated = Validated::of(&req).expect("stored before the handler runs");
    if racing.into_inner() {
        // Another write lands between the check and this one.
        VERSION.with(|v| v.set(v.get() + 1));
    }
    let expected = validated.expected_etag().map(|tag| tag.tag().to_owned());
    let current = format!("v{}", VERSION.with(Cell::get));
    let changed = usize::from(expected.is_none_or(|tag| tag == current));
    if let Err(conflict) = validated.ensure_written(changed) {
        return conflict.error_response();
    }
    VERSION.with(|v| v.set(v.get() + 1));
    HttpResponse::Ok().body(format!("written over {current}"))
}

#[etag_cached(max_age = 60)]
async fn mutate() -> HttpResponse {
    HttpResponse::Created().body("made")
}

#[cache_control(max_age = 3600, public)]
async fn django_cache_control() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "private"))
        .body("x")
}

/// Django's `@cache_control(no_cache="Set-Cookie", private="X-Token", custom=456)`.
#[cache_control(
    max_age = 60,
    no_cache = "Set-Cookie",
    private = "X-Token",
    extensions = ["custom=456", "x-flag"]
)]
async fn django_vocabulary() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-cache=\"Link\", custom=1"))
        .body("x")
}

#[never_cache]
async fn django_never_cache() -> &'static str {
    "x"
}

struct Items;

impl Items {
    fn item_etag(&self, req: &HttpRequest) -> Option<String> {
        let id = req.match_info().get("id")?;
        (id == "1").then(|| format!("item-{id}-v3"))
    }
}

#[etag_cached(max_age = 60)]
impl ViewSet for Items {
    async fn list(&self, _req: HttpRequest) -> HttpResponse {
        HttpResponse::Ok().json(["one"])
    }

    #[etag_cached(etag = Self::item_etag)]
    async fn retrieve(&self, _req: HttpRequest, id: String) -> HttpResponse {
        ran();
        if id == "1" {
            HttpResponse::Ok().json("one")
        } else {
            HttpResponse::NotFound().finish()
        }
    }

    #[etag_cached(etag = Self::item_etag)]
    async fn update(&self, _req: HttpRequest, _id: String, _body: Bytes) -> HttpResponse {
        ran();
        HttpResponse::Ok().json("updated")
    }
}

async fn call(req: TestRequest) -> ServiceResponse<impl MessageBody + use<>> {
    let app = test::init_service(
        App::new()
            .wrap(ConditionalGet::default())
            .route("/report", web::get().to(report))
            .route("/extract/{id}/{n}", web::get().to(with_extractors))
            .route("/mutate", web::post().to(mutate))
            .route("/cas/{racing}", web::put().to(compare_and_set))
            .route("/cc", web::get().to(django_cache_control))
            .route("/never", web::get().to(django_never_cache))
            .route("/vocabulary", web::get().to(django_vocabulary))
            .service(get_above)
            .service(get_below)
            .configure(|cfg| viewset::register(cfg, "items", Items)),
    )
    .await;
    app.call(req.to_request()).await.unwrap()
}

fn header<B>(res: &ServiceResponse<B>, name: HeaderName) -> Option<&str> {
    res.headers().get(name).map(|v| v.to_str().unwrap())
}

#[actix_rt::test]
async fn read_gets_max_age_must_revalidate_and_the_validators() {
    let res = call(TestRequest::get().uri("/report")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        header(&res, header::CACHE_CONTROL),
        Some("max-age=60, must-revalidate")
    );
    assert_eq!(header(&res, header::ETAG), Some("\"rev-7\""));
    assert_eq!(
        header(&res, header::LAST_MODIFIED),
        Some("Sun, 06 Nov 1994 08:49:37 GMT")
    );
}

#[actix_rt::test]
async fn matching_validator_is_304_before_the_handler() {
    let before = runs();
    let res = call(
        TestRequest::get()
            .uri("/report")
            .insert_header((header::IF_NONE_MATCH, "\"rev-7\"")),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(
        header(&res, header::CACHE_CONTROL),
        Some("max-age=60, must-revalidate")
    );
    assert_eq!(runs(), before);
}

#[actix_rt::test]
async fn options_and_extractors_work_together() {
    let res = call(TestRequest::get().uri("/extract/3/4")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        header(&res, header::CACHE_CONTROL),
        Some("private, max-age=30, must-revalidate")
    );
    // `accept-encoding` from `ConditionalGet`: an identity answer of a compressible type.
    assert_eq!(
        header(&res, header::VARY),
        Some("Accept-Language, accept-encoding")
    );
    assert_eq!(test::read_body(res).await, "3:4:false");
    let res = call(TestRequest::get().uri("/extract/3/x")).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        header(&res, header::CACHE_CONTROL),
        Some("no-cache, no-store, must-revalidate")
    );
}

#[actix_rt::test]
async fn works_with_actix_route_macros_in_either_order() {
    for uri in ["/above", "/below"] {
        let res = call(TestRequest::get().uri(uri)).await;
        assert_eq!(res.status(), StatusCode::OK, "{uri}");
        assert_eq!(
            header(&res, header::CACHE_CONTROL),
            Some("max-age=5, must-revalidate")
        );
    }
    let res = call(TestRequest::default().method(Method::HEAD).uri("/below")).await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[actix_rt::test]
async fn mutation_gets_no_store() {
    let res = call(TestRequest::post().uri("/mutate")).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(
        header(&res, header::CACHE_CONTROL),
        Some("no-cache, no-store, must-revalidate")
    );
}

#[actix_rt::test]
async fn django_cache_control_and_never_cache() {
    let res = call(TestRequest::get().uri("/cc")).await;
    assert_eq!(
        header(&res, header::CACHE_CONTROL),
        Some("public, max-age=3600")
    );
    let res = call(TestRequest::get().uri("/never")).await;
    assert_eq!(
        header(&res, header::CACHE_CONTROL),
        Some("max-age=0, no-cache, no-store, must-revalidate, private")
    );
}

#[actix_rt::test]
async fn viewset_impl_gets_policy_validators_and_actions() {
    let res = call(TestRequest::get().uri("/items")).await;
    assert_eq!(
        header(&res, header::CACHE_CONTROL),
        Some("max-age=60, must-revalidate")
    );
    let res = call(TestRequest::get().uri("/items/1")).await;
    assert_eq!(header(&res, header::ETAG), Some("\"item-1-v3\""));

    let before = runs();
    let res = call(
        TestRequest::get()
            .uri("/items/1")
            .insert_header((header::IF_NONE_MATCH, "\"item-1-v3\"")),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    let res = call(
        TestRequest::put()
            .uri("/items/1")
            .insert_header((header::IF_MATCH, "\"item-1-v2\"")),
    )
    .await;
    assert_eq!(res.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(
        runs(),
        before,
        "neither the 304 nor the 412 ran the handler"
    );

    let res = call(
        TestRequest::put()
            .uri("/items/1")
            .insert_header((header::IF_MATCH, "\"item-1-v3\"")),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        header(&res, header::CACHE_CONTROL),
        Some("no-cache, no-store, must-revalidate")
    );

    // Generated ACTIONS: list, retrieve, update; destroy is not implemented.
    let res = call(TestRequest::delete().uri("/items/1")).await;
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(header(&res, header::ALLOW), Some("GET, HEAD, PUT"));
}

#[actix_rt::test]
async fn a_write_that_loses_the_race_after_the_check_gets_the_same_412() {
    VERSION.with(|v| v.set(3));
    // Stale If-Match: the check answers 412 before the handler.
    let req = TestRequest::put()
        .uri("/cas/false")
        .insert_header((header::IF_MATCH, "\"v2\""));
    let early = call(req).await;
    assert_eq!(early.status(), StatusCode::PRECONDITION_FAILED);

    // Current If-Match, but another write lands after the check: the compare-and-set
    // refuses, with the same answer.
    let req = TestRequest::put()
        .uri("/cas/true")
        .insert_header((header::IF_MATCH, "\"v3\""));
    let late = call(req).await;
    assert_eq!(late.status(), StatusCode::PRECONDITION_FAILED);
    for name in [header::CACHE_CONTROL, header::CONTENT_LENGTH, header::ETAG] {
        assert_eq!(header(&late, name.clone()), header(&early, name));
    }

    // Current If-Match and no race: written.
    let req = TestRequest::put()
        .uri("/cas/false")
        .insert_header((header::IF_MATCH, "\"v4\""));
    let res = call(req).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(VERSION.with(Cell::get), 5);
}

#[actix_rt::test]
async fn cache_control_takes_field_qualified_and_extension_directives() {
    let res = call(TestRequest::get().uri("/vocabulary")).await;
    // Merged as Django merges: no-cache fields accumulate, an extension is replaced in place,
    // the rest is appended; field names in RFC 9111's quoted-string form.
    assert_eq!(
        header(&res, header::CACHE_CONTROL).unwrap(),
        r#"no-cache="Link", no-cache="Set-Cookie", custom=456, private="X-Token", max-age=60, x-flag"#
    );
}
