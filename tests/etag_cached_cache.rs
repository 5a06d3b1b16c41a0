//! `#[etag_cached(cache = …, ttl = …)]` and `#[etag_cached(invalidates = …)]`: handlers answered
//! from a named, process-wide `ResponseCache`, and mutations that invalidate one.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use actix_conditional::response_cache::{self, CacheScope, ManualClock, ResponseCache};
use actix_conditional::viewset::{self, ViewSet};
use actix_conditional::{Section, etag_cached};
use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::test::{self, TestRequest};
use actix_web::{App, HttpRequest, HttpResponse, web};

#[path = "common/cache_status.rs"]
mod cache_status;

/// The `X-Cache` label of this library's `Cache-Status` member, read with an sf parser.
fn cache_label(headers: &actix_web::http::header::HeaderMap) -> &'static str {
    cache_status::label(headers.get_all("cache-status").map(|v| v.to_str().unwrap()))
}

static ACTIVE_BUILDS: AtomicU32 = AtomicU32::new(0);

#[etag_cached(max_age = 15, public, cache = "macro-challenges", ttl = 30)]
async fn active(path: web::Path<u32>, query: web::Query<Vec<(String, String)>>) -> HttpResponse {
    let n = ACTIVE_BUILDS.fetch_add(1, Ordering::SeqCst) + 1;
    HttpResponse::Ok().body(format!(
        "season {} build {n} ({} params)",
        path.into_inner(),
        query.len()
    ))
}

#[actix_rt::test]
async fn cache_option_serves_hits_without_the_handler_and_keeps_the_policy() {
    let app = test::init_service(App::new().route("/seasons/{n}", web::get().to(active))).await;
    let get = || TestRequest::get().uri("/seasons/7?x=1").to_request();

    let res = test::call_service(&app, get()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(cache_label(res.headers()), "miss");
    assert_eq!(
        res.headers().get(header::CACHE_CONTROL).unwrap(),
        "public, max-age=15, must-revalidate"
    );
    let etag = res.headers().get(header::ETAG).unwrap().clone();
    assert_eq!(test::read_body(res).await, "season 7 build 1 (1 params)");

    let res = test::call_service(&app, get()).await;
    assert_eq!(cache_label(res.headers()), "hit");
    assert!(res.headers().contains_key(header::AGE));
    assert_eq!(test::read_body(res).await, "season 7 build 1 (1 params)");

    // A conditional request is answered from the stored ETag.
    let req = TestRequest::get()
        .uri("/seasons/7?x=1")
        .insert_header((header::IF_NONE_MATCH, etag))
        .to_request();
    let res = test::call_service(&app, req).await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(ACTIVE_BUILDS.load(Ordering::SeqCst), 1);

    // The macro registered one process-wide cache under the name, with its TTL.
    let cache = response_cache::named("macro-challenges").expect("registered by the macro");
    assert_eq!(cache.stats().builds, 1);
}

static STALE_BUILDS: AtomicU32 = AtomicU32::new(0);

#[etag_cached(max_age = 5, cache = "macro-preregistered")]
async fn preregistered(path: web::Path<String>) -> String {
    let n = STALE_BUILDS.fetch_add(1, Ordering::SeqCst) + 1;
    format!("{} #{n}", path.into_inner())
}

#[actix_rt::test]
async fn background_refresh_re_extracts_the_arguments() {
    let clock = ManualClock::new();
    ResponseCache::ttl("macro-preregistered", Duration::from_secs(10))
        .clock(clock.clone())
        .build()
        .register();
    let app = test::init_service(App::new().route("/p/{name}", web::get().to(preregistered))).await;
    let get = || TestRequest::get().uri("/p/alpha").to_request();

    assert_eq!(test::call_and_read_body(&app, get()).await, "alpha #1");
    clock.advance(Duration::from_secs(11));
    let res = test::call_service(&app, get()).await;
    assert_eq!(cache_label(res.headers()), "stale");
    assert_eq!(test::read_body(res).await, "alpha #1");
    // The refresh runs in the background with extractors taken from a clone of the request.
    for _ in 0..10 {
        actix_rt::task::yield_now().await;
    }
    let res = test::call_service(&app, get()).await;
    assert_eq!(cache_label(res.headers()), "hit");
    assert_eq!(test::read_body(res).await, "alpha #2");
}

#[etag_cached(max_age = 5, cache = "macro-never-registered")]
async fn unregistered() -> &'static str {
    "never"
}

#[actix_rt::test]
async fn a_cache_name_nobody_registered_is_a_loud_500() {
    let app = test::init_service(App::new().route("/", web::get().to(unregistered))).await;
    let res = test::call_service(&app, TestRequest::get().to_request()).await;
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    // Debug builds (tests are) say what is wrong and how to fix it in the body too.
    let body = test::read_body(res).await;
    let body = std::str::from_utf8(&body).unwrap();
    assert!(
        body.contains("\"macro-never-registered\"") && body.contains(".register()"),
        "{body}"
    );
}

static TAIL: AtomicU32 = AtomicU32::new(0);

#[etag_cached(max_age = 0, invalidates = "macro-summary:tail")]
async fn add_event(body: web::Bytes) -> HttpResponse {
    if body.is_empty() {
        return HttpResponse::BadRequest().finish();
    }
    TAIL.fetch_add(1, Ordering::SeqCst);
    HttpResponse::Created().finish()
}

#[actix_rt::test]
async fn invalidates_option_applies_only_after_a_2xx() {
    let summary = ResponseCache::sections("macro-summary")
        .section(Section::new(
            "core",
            |_req: HttpRequest| async { Ok::<_, actix_web::Error>("c1".to_owned()) },
            |_req: HttpRequest| async { Ok::<_, actix_web::Error>(vec![1, 2, 3]) },
        ))
        .inline_section(Section::new(
            "tail",
            // The revision does not see the writes: only the invalidation tells the cache.
            |_req: HttpRequest| async { Ok::<_, actix_web::Error>("t1".to_owned()) },
            |_req: HttpRequest| async { Ok::<_, actix_web::Error>(TAIL.load(Ordering::SeqCst)) },
        ))
        .build();
    summary.register();
    let cache = summary.clone();
    let app = test::init_service(
        App::new()
            .route(
                "/summary",
                web::get().to(move |req: HttpRequest| {
                    let cache = cache.clone();
                    async move { cache.respond(&req).await }
                }),
            )
            .route("/events", web::post().to(add_event)),
    )
    .await;
    let get = || TestRequest::get().uri("/summary").to_request();

    let res = test::call_service(&app, get()).await;
    assert_eq!(cache_label(res.headers()), "miss");
    assert_eq!(test::read_body(res).await, r#"{"core":[1,2,3],"tail":0}"#);
    let res = test::call_service(&app, get()).await;
    assert_eq!(cache_label(res.headers()), "hit-revision");

    // A failed mutation invalidates nothing.
    let res = test::call_service(&app, TestRequest::post().uri("/events").to_request()).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let res = test::call_service(&app, get()).await;
    assert_eq!(cache_label(res.headers()), "hit-revision");

    let res = test::call_service(
        &app,
        TestRequest::post()
            .uri("/events")
            .set_payload("x")
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(
        res.headers().get(header::CACHE_CONTROL).unwrap(),
        "no-cache, no-store, must-revalidate"
    );
    let res = test::call_service(&app, get()).await;
    assert_eq!(cache_label(res.headers()), "section");
    assert_eq!(test::read_body(res).await, r#"{"core":[1,2,3],"tail":1}"#);
    summary.invalidate(&CacheScope::All);
}

/// A viewset whose reads are cached: `self` is cloned into each build, so its state is shared
/// through an `Arc`.
#[derive(Clone, Default)]
struct Scores {
    builds: std::sync::Arc<AtomicU32>,
}

#[etag_cached(max_age = 60, public)]
impl ViewSet for Scores {
    #[etag_cached(cache = "macro-viewset", ttl = 30)]
    async fn list(&self, _req: HttpRequest) -> HttpResponse {
        let n = self.builds.fetch_add(1, Ordering::SeqCst) + 1;
        HttpResponse::Ok().body(format!("scores build {n}"))
    }

    #[etag_cached(max_age = 10, cache = "macro-viewset", ttl = 30)]
    async fn retrieve(&self, req: HttpRequest, id: String) -> HttpResponse {
        let n = self.builds.fetch_add(1, Ordering::SeqCst) + 1;
        let builds = || self.builds.load(Ordering::SeqCst);
        HttpResponse::Ok().body(format!(
            "score {id} at {} build {n}/{}",
            req.path(),
            builds()
        ))
    }

    async fn create(&self, _req: HttpRequest, body: web::Bytes) -> HttpResponse {
        HttpResponse::Created().body(body)
    }
}

#[actix_rt::test]
async fn cache_option_on_impl_block_methods() {
    use actix_conditional::viewset::{Action, ViewSet as _};
    assert_eq!(
        Scores::ACTIONS,
        &[Action::List, Action::Retrieve, Action::Create]
    );
    let scores = Scores::default();
    let builds = std::sync::Arc::clone(&scores.builds);
    let app =
        test::init_service(App::new().configure(|cfg| viewset::register(cfg, "scores", scores)))
            .await;

    let res = test::call_service(&app, TestRequest::get().uri("/scores").to_request()).await;
    assert_eq!(cache_label(res.headers()), "miss");
    assert_eq!(
        res.headers().get(header::CACHE_CONTROL).unwrap(),
        "public, max-age=60, must-revalidate"
    );
    assert_eq!(test::read_body(res).await, "scores build 1");
    let res = test::call_service(&app, TestRequest::get().uri("/scores").to_request()).await;
    assert_eq!(cache_label(res.headers()), "hit");
    assert_eq!(test::read_body(res).await, "scores build 1");

    let get = || TestRequest::get().uri("/scores/9").to_request();
    let res = test::call_service(&app, get()).await;
    assert_eq!(cache_label(res.headers()), "miss");
    assert_eq!(
        res.headers().get(header::CACHE_CONTROL).unwrap(),
        "public, max-age=10, must-revalidate"
    );
    let etag = res.headers().get(header::ETAG).unwrap().clone();
    assert_eq!(test::read_body(res).await, "score 9 at /scores/9 build 2/2");
    let res = test::call_service(&app, get()).await;
    assert_eq!(cache_label(res.headers()), "hit");
    assert_eq!(test::read_body(res).await, "score 9 at /scores/9 build 2/2");
    let head = TestRequest::default()
        .method(actix_web::http::Method::HEAD)
        .uri("/scores/9")
        .insert_header((header::IF_NONE_MATCH, etag))
        .to_request();
    assert_eq!(
        test::call_service(&app, head).await.status(),
        StatusCode::NOT_MODIFIED
    );
    assert_eq!(builds.load(Ordering::SeqCst), 2);

    // Uncached methods of the block keep the plain policy.
    let post = TestRequest::post()
        .uri("/scores")
        .set_payload("s")
        .to_request();
    let res = test::call_service(&app, post).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(cache_label(res.headers()), "<none>");
}

struct Reports;

#[etag_cached(max_age = 5)]
impl Reports {
    /// No receiver, `&HttpRequest`, a pattern parameter: refreshed in the background with the
    /// parameters of the request that found the entry stale.
    #[etag_cached(cache = "macro-reports")]
    async fn show(req: &HttpRequest, (kind, mut page): (String, u32)) -> HttpResponse {
        page += 1;
        let n = REPORT_BUILDS.fetch_add(1, Ordering::SeqCst) + 1;
        HttpResponse::Ok().body(format!("{kind} page {page} of {} #{n}", req.path()))
    }
}

static REPORT_BUILDS: AtomicU32 = AtomicU32::new(0);

#[actix_rt::test]
async fn cached_method_refreshes_in_the_background_with_its_parameters() {
    let clock = ManualClock::new();
    ResponseCache::ttl("macro-reports", Duration::from_secs(10))
        .clock(clock.clone())
        .build()
        .register();
    let app = test::init_service(App::new().route(
        "/reports/{kind}",
        web::get().to(|req: HttpRequest, kind: web::Path<String>| async move {
            Reports::show(&req, (kind.into_inner(), 1)).await
        }),
    ))
    .await;
    let get = || TestRequest::get().uri("/reports/sales").to_request();

    assert_eq!(
        test::call_and_read_body(&app, get()).await,
        "sales page 2 of /reports/sales #1"
    );
    clock.advance(Duration::from_secs(11));
    let res = test::call_service(&app, get()).await;
    assert_eq!(cache_label(res.headers()), "stale");
    // Stale bytes keep their lifetime (stale downstream too); `must-revalidate` forbids
    // serving them stale, so no stale window is added: they are revalidated, as they ask.
    assert_eq!(res.headers().get(header::AGE).unwrap(), "11");
    assert_eq!(
        res.headers().get(header::CACHE_CONTROL).unwrap(),
        "max-age=5, must-revalidate"
    );
    for _ in 0..10 {
        actix_rt::task::yield_now().await;
    }
    let res = test::call_service(&app, get()).await;
    assert_eq!(cache_label(res.headers()), "hit");
    assert_eq!(
        test::read_body(res).await,
        "sales page 2 of /reports/sales #2"
    );
}

/// Run by the test below in a child process with no `tracing` subscriber installed.
#[actix_rt::test]
#[ignore = "run by `the_misconfiguration_reaches_stderr_with_no_subscriber`"]
async fn child_hits_an_unregistered_cache() {
    let app = test::init_service(App::new().route("/", web::get().to(unregistered))).await;
    for _ in 0..3 {
        let res = test::call_service(&app, TestRequest::get().to_request()).await;
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}

#[test]
fn the_misconfiguration_reaches_stderr_with_no_subscriber() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_hits_an_unregistered_cache",
            "--ignored",
            "--test-threads=1",
        ])
        .output()
        .expect("the test binary runs itself");
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("\"macro-never-registered\""))
        .collect();
    assert_eq!(lines.len(), 1, "once per name, not per request: {stderr}");
    assert!(
        lines[0].starts_with("actix-conditional: #[etag_cached(cache"),
        "{stderr}"
    );
}
