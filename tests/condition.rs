//! Pre-handler validators and handler cache policy (`actix_conditional::condition`), by hand:
//! the same functions `#[etag_cached]` expands to.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use actix_conditional::CachePolicy;
use actix_conditional::condition::{
    HandlerPolicy, RequestValidators, with_cache_control, with_never_cache,
};
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::header::{self, HeaderName};
use actix_web::http::{Method, StatusCode};
use actix_web::test::{self, TestRequest};
use actix_web::{App, HttpRequest, HttpResponse, web};

const POLICY: HandlerPolicy =
    HandlerPolicy::new(CachePolicy::revalidate(60)).vary(&["Accept-Language"]);
const MODIFIED: &str = "Sun, 06 Nov 1994 08:49:37 GMT";

/// A resource at revision "r1"; counts how often the handler body ran.
async fn call(req: TestRequest, runs: Rc<Cell<u32>>) -> ServiceResponse {
    let handler = move |req: HttpRequest| {
        let runs = Rc::clone(&runs);
        async move {
            let validators = RequestValidators::new()
                .etag(Some("r1"))
                .last_modified(Some(UNIX_EPOCH + Duration::from_secs(784_111_777)));
            POLICY
                .respond(&req, validators, async {
                    runs.set(runs.get() + 1);
                    let status = if req.method() == Method::POST {
                        StatusCode::CREATED
                    } else {
                        StatusCode::OK
                    };
                    HttpResponse::build(status).body("built")
                })
                .await
        }
    };
    let app = test::init_service(App::new().default_service(web::to(handler))).await;
    app.call(req.to_request()).await.unwrap()
}

fn header(res: &ServiceResponse, name: HeaderName) -> Option<&str> {
    res.headers().get(name).map(|v| v.to_str().unwrap())
}

#[actix_rt::test]
async fn get_runs_handler_and_gets_validators_and_read_policy() {
    let runs = Rc::new(Cell::new(0));
    let res = call(TestRequest::get(), Rc::clone(&runs)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(runs.get(), 1);
    assert_eq!(header(&res, header::ETAG), Some("\"r1\""));
    assert_eq!(header(&res, header::LAST_MODIFIED), Some(MODIFIED));
    assert_eq!(
        header(&res, header::CACHE_CONTROL),
        Some("max-age=60, must-revalidate")
    );
    assert_eq!(header(&res, header::VARY), Some("Accept-Language"));
}

#[actix_rt::test]
async fn a_read_with_authorization_is_private_unless_the_policy_is_public() {
    let runs = Rc::new(Cell::new(0));
    let authorized = || TestRequest::get().insert_header((header::AUTHORIZATION, "Bearer alice"));
    let res = call(authorized(), Rc::clone(&runs)).await;
    assert_eq!(
        header(&res, header::CACHE_CONTROL),
        Some("private, max-age=60, must-revalidate"),
        "RFC 9111 §3.5: must-revalidate alone would let a shared cache reuse it for others"
    );
    // Its 304 too.
    let res = call(
        authorized().insert_header((header::IF_NONE_MATCH, "\"r1\"")),
        Rc::clone(&runs),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(
        header(&res, header::CACHE_CONTROL),
        Some("private, max-age=60, must-revalidate")
    );

    // A policy that says `public` means it: shared caches may keep it.
    const PUBLIC: HandlerPolicy = HandlerPolicy::new(CachePolicy::revalidate(60).public());
    let app = test::init_service(App::new().default_service(web::to(
        |req: HttpRequest| async move {
            PUBLIC
                .respond(&req, RequestValidators::new(), async {
                    HttpResponse::Ok().body("open")
                })
                .await
        },
    )))
    .await;
    let res = app.call(authorized().to_request()).await.unwrap();
    assert_eq!(
        header(&res, header::CACHE_CONTROL),
        Some("public, max-age=60, must-revalidate")
    );
}

#[actix_rt::test]
async fn matching_if_none_match_is_304_without_running_the_handler() {
    let runs = Rc::new(Cell::new(0));
    let req = TestRequest::get().insert_header((header::IF_NONE_MATCH, "W/\"r1\""));
    let res = call(req, Rc::clone(&runs)).await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(runs.get(), 0);
    assert_eq!(header(&res, header::ETAG), Some("\"r1\""));
    assert_eq!(
        header(&res, header::CACHE_CONTROL),
        Some("max-age=60, must-revalidate")
    );
    assert_eq!(header(&res, header::VARY), Some("Accept-Language"));
    assert!(test::read_body(res).await.is_empty());
}

#[actix_rt::test]
async fn if_modified_since_is_304_without_running_the_handler() {
    let runs = Rc::new(Cell::new(0));
    let req = TestRequest::get().insert_header((header::IF_MODIFIED_SINCE, MODIFIED));
    let res = call(req, Rc::clone(&runs)).await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(runs.get(), 0);
}

#[actix_rt::test]
async fn stale_if_match_on_put_is_412_and_nothing_is_written() {
    let runs = Rc::new(Cell::new(0));
    let req = TestRequest::put().insert_header((header::IF_MATCH, "\"r0\""));
    let res = call(req, Rc::clone(&runs)).await;
    assert_eq!(res.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(runs.get(), 0);
    assert_eq!(
        header(&res, header::CACHE_CONTROL),
        Some("no-cache, no-store, must-revalidate")
    );
}

#[actix_rt::test]
async fn current_if_match_on_put_runs_the_handler_with_mutation_policy() {
    let runs = Rc::new(Cell::new(0));
    let req = TestRequest::put().insert_header((header::IF_MATCH, "\"r1\""));
    let res = call(req, Rc::clone(&runs)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(runs.get(), 1);
    assert_eq!(
        header(&res, header::CACHE_CONTROL),
        Some("no-cache, no-store, must-revalidate")
    );
    // Validators describe the state before the write: not sent on mutations (Django).
    assert_eq!(header(&res, header::ETAG), None);
}

#[actix_rt::test]
async fn if_unmodified_since_before_the_change_is_412() {
    let runs = Rc::new(Cell::new(0));
    let req = TestRequest::delete()
        .insert_header((header::IF_UNMODIFIED_SINCE, "Sat, 05 Nov 1994 08:49:37 GMT"));
    let res = call(req, Rc::clone(&runs)).await;
    assert_eq!(res.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(runs.get(), 0);
}

#[actix_rt::test]
async fn create_only_put_with_if_none_match_star_fails_on_existing_resource() {
    let runs = Rc::new(Cell::new(0));
    let req = TestRequest::put().insert_header((header::IF_NONE_MATCH, "*"));
    let res = call(req, Rc::clone(&runs)).await;
    assert_eq!(res.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(runs.get(), 0);
}

#[actix_rt::test]
async fn post_gets_no_store() {
    let runs = Rc::new(Cell::new(0));
    let res = call(TestRequest::post(), Rc::clone(&runs)).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(
        header(&res, header::CACHE_CONTROL),
        Some("no-cache, no-store, must-revalidate")
    );
}

#[actix_rt::test]
async fn missing_resource_if_match_star_is_412_and_plain_get_runs() {
    async fn missing(req: HttpRequest) -> HttpResponse {
        let validators = RequestValidators::new().etag(None::<String>);
        POLICY
            .respond(&req, validators, async {
                HttpResponse::NotFound().body("gone")
            })
            .await
    }
    let app = test::init_service(App::new().default_service(web::to(missing))).await;
    let req = TestRequest::put()
        .insert_header((header::IF_MATCH, "*"))
        .to_request();
    assert_eq!(
        app.call(req).await.unwrap().status(),
        StatusCode::PRECONDITION_FAILED
    );
    let res = app.call(TestRequest::get().to_request()).await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    // Errors are never cacheable for clients.
    assert_eq!(
        header(&res, header::CACHE_CONTROL),
        Some("no-cache, no-store, must-revalidate")
    );
}

#[actix_rt::test]
async fn handler_set_etag_wins_over_the_validator() {
    async fn own(req: HttpRequest) -> HttpResponse {
        let validators = RequestValidators::new().etag(Some("r1"));
        POLICY
            .respond(&req, validators, async {
                HttpResponse::Ok()
                    .insert_header((header::ETAG, "\"own\""))
                    .body("x")
            })
            .await
    }
    let app = test::init_service(App::new().default_service(web::to(own))).await;
    let res = app.call(TestRequest::get().to_request()).await.unwrap();
    assert_eq!(header(&res, header::ETAG), Some("\"own\""));
}

#[actix_rt::test]
async fn cache_control_and_never_cache_patch_after_the_handler() {
    async fn cached(req: HttpRequest) -> HttpResponse {
        let policy = CachePolicy::new().max_age(3600).public();
        with_cache_control(&req, policy, async {
            HttpResponse::Ok()
                .insert_header((header::CACHE_CONTROL, "private, max-age=60"))
                .body("x")
        })
        .await
    }
    async fn never(req: HttpRequest) -> HttpResponse {
        with_never_cache(&req, async { "x" }).await
    }
    let app = test::init_service(
        App::new()
            .route("/cached", web::get().to(cached))
            .route("/never", web::get().to(never)),
    )
    .await;
    let res = app
        .call(TestRequest::get().uri("/cached").to_request())
        .await
        .unwrap();
    // Django: `public` removes `private`, the smaller max-age wins.
    assert_eq!(
        header(&res, header::CACHE_CONTROL),
        Some("max-age=60, public")
    );
    let res = app
        .call(TestRequest::get().uri("/never").to_request())
        .await
        .unwrap();
    assert_eq!(
        header(&res, header::CACHE_CONTROL),
        Some("max-age=0, no-cache, no-store, must-revalidate, private")
    );
    assert!(res.headers().contains_key(header::EXPIRES));
}
