//! RFC 9875 cache groups end to end: `#[etag_cached(tags = …)]` on reads and writes,
//! `invalidates = …` and `ResponseCache::invalidates` naming their group in
//! `Cache-Group-Invalidation`. Fields are read with a structured-field parser (`sfv`).

use std::time::Duration;

use actix_conditional::viewset::{self, ViewSet};
use actix_conditional::{CacheScope, ResponseCache, Section, edge, etag_cached};
use actix_web::dev::ServiceResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderName};
use actix_web::test::{self, TestRequest};
use actix_web::web::{self, Bytes};
use actix_web::{App, HttpRequest, HttpResponse};
use sfv::{BareItem, List, ListEntry, Parser};

/// The field's members, which must all be Strings (RFC 9875 §2, §3); `None` without the field.
fn sf_strings<B>(res: &ServiceResponse<B>, name: &HeaderName) -> Option<Vec<String>> {
    let lines: Vec<&str> = res
        .headers()
        .get_all(name)
        .map(|value| value.to_str().unwrap())
        .collect();
    if lines.is_empty() {
        return None;
    }
    let list: List = Parser::new(&lines.join(", "))
        .parse()
        .unwrap_or_else(|error| panic!("{name}: {lines:?}: {error}"));
    Some(
        list.into_iter()
            .map(|entry| match entry {
                ListEntry::Item(item) => match item.bare_item {
                    BareItem::String(group) => group.as_str().to_owned(),
                    other => panic!("{name}: not a String: {other:?}"),
                },
                ListEntry::InnerList(inner) => panic!("{name}: inner list {inner:?}"),
            })
            .collect(),
    )
}

fn groups<B>(res: &ServiceResponse<B>) -> Option<Vec<String>> {
    sf_strings(res, &edge::CACHE_GROUPS)
}

fn invalidations<B>(res: &ServiceResponse<B>) -> Option<Vec<String>> {
    sf_strings(res, &edge::CACHE_GROUP_INVALIDATION)
}

fn revision(_req: &HttpRequest) -> Option<String> {
    Some("rev-1".to_owned())
}

#[etag_cached(max_age = 60, etag = revision, tags = "challenges challenge-list challenges")]
async fn challenges() -> HttpResponse {
    let mut res = HttpResponse::Ok().body("[]");
    edge::tag(&mut res, ["challenge:42"]);
    res
}

#[actix_rt::test]
async fn a_read_lists_its_groups_and_a_304_repeats_them() {
    let app = test::init_service(App::new().route("/challenges", web::get().to(challenges))).await;
    let res = test::call_service(&app, TestRequest::get().uri("/challenges").to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    // The handler's own group first (it was on the response), then the macro's, once each.
    assert_eq!(
        groups(&res).unwrap(),
        ["challenge:42", "challenges", "challenge-list"]
    );
    assert_eq!(invalidations(&res), None);

    let req = TestRequest::get()
        .uri("/challenges")
        .insert_header((header::IF_NONE_MATCH, "\"rev-1\""));
    let res = test::call_service(&app, req.to_request()).await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(groups(&res).unwrap(), ["challenges", "challenge-list"]);
}

#[derive(Clone)]
struct Notes;

#[etag_cached(max_age = 30, tags = "notes")]
impl ViewSet for Notes {
    async fn list(&self, _req: HttpRequest) -> HttpResponse {
        HttpResponse::Ok().json(["a"])
    }

    #[etag_cached(tags = "notes note-items")]
    async fn retrieve(&self, _req: HttpRequest, id: String) -> HttpResponse {
        if id == "1" {
            HttpResponse::Ok().json("a")
        } else {
            HttpResponse::NotFound().finish()
        }
    }

    async fn create(&self, _req: HttpRequest, body: Bytes) -> HttpResponse {
        if body.is_empty() {
            return HttpResponse::BadRequest().finish();
        }
        HttpResponse::Created().finish()
    }

    async fn destroy(&self, _req: HttpRequest, _id: String) -> HttpResponse {
        HttpResponse::NoContent().finish()
    }
}

#[actix_rt::test]
async fn a_viewset_tags_its_reads_and_invalidates_on_successful_writes() {
    let app =
        test::init_service(App::new().configure(|cfg| viewset::register(cfg, "notes", Notes)))
            .await;
    let call = |req: TestRequest| {
        let app = &app;
        async move { test::call_service(app, req.to_request()).await }
    };

    let res = call(TestRequest::get().uri("/notes")).await;
    assert_eq!(groups(&res).unwrap(), ["notes"]);
    assert_eq!(invalidations(&res), None);

    // A method's own `tags` replaces the block's.
    let res = call(TestRequest::get().uri("/notes/1")).await;
    assert_eq!(groups(&res).unwrap(), ["notes", "note-items"]);
    // A failed read lists no group: nothing is stored for it.
    let res = call(TestRequest::get().uri("/notes/2")).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(groups(&res), None);

    let res = call(TestRequest::post().uri("/notes").set_payload("x")).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(invalidations(&res).unwrap(), ["notes"]);
    assert_eq!(groups(&res), None);

    let res = call(TestRequest::delete().uri("/notes/1")).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(invalidations(&res).unwrap(), ["notes"]);

    // A failed write changed nothing: no invalidation.
    let res = call(TestRequest::post().uri("/notes")).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(invalidations(&res), None);
}

#[etag_cached(
    max_age = 15,
    public,
    cache = "groups-cached",
    ttl = 30,
    tags = "cached"
)]
async fn cached_read() -> &'static str {
    "stored"
}

#[actix_rt::test]
async fn a_cached_read_carries_its_groups_on_miss_and_hit() {
    let app = test::init_service(App::new().route("/cached", web::get().to(cached_read))).await;
    for expected in ["miss", "hit"] {
        let res = test::call_service(&app, TestRequest::get().uri("/cached").to_request()).await;
        let status = actix_conditional::response_cache::CacheStatus::of(res.response()).unwrap();
        assert_eq!(status.label(), expected);
        // The handler's tags, then the cache's own group (its name).
        assert_eq!(groups(&res).unwrap(), ["cached", "groups-cached"]);
    }
}

#[etag_cached(max_age = 0, invalidates = "groups-summary:tail")]
async fn add_to_tail(body: Bytes) -> HttpResponse {
    if body.is_empty() {
        return HttpResponse::BadRequest().finish();
    }
    HttpResponse::Created().finish()
}

#[etag_cached(max_age = 0, invalidates = "groups-ttl:nosuchsection")]
async fn write_ttl() -> HttpResponse {
    HttpResponse::Ok().finish()
}

#[etag_cached(max_age = 0, invalidates = "groups-unregistered:part", tags = "extra")]
async fn write_unregistered() -> HttpResponse {
    HttpResponse::Ok().finish()
}

fn summary(name: &'static str) -> ResponseCache {
    ResponseCache::sections(name)
        .section(Section::new(
            "tail",
            |_req: HttpRequest| async { Ok::<_, actix_web::Error>("t1".to_owned()) },
            |_req: HttpRequest| async { Ok::<_, actix_web::Error>(1) },
        ))
        .build()
        .cache()
        .clone()
}

#[actix_rt::test]
async fn invalidates_names_the_group_it_invalidated() {
    summary("groups-summary").register();
    ResponseCache::ttl("groups-ttl", Duration::from_secs(30))
        .build()
        .register();
    let app = test::init_service(
        App::new()
            .route("/tail", web::post().to(add_to_tail))
            .route("/ttl", web::post().to(write_ttl))
            .route("/unregistered", web::post().to(write_unregistered)),
    )
    .await;
    let post = |uri: &str, body: &'static str| TestRequest::post().uri(uri).set_payload(body);

    let res = test::call_service(&app, post("/tail", "x").to_request()).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(invalidations(&res).unwrap(), ["groups-summary:tail"]);
    let res = test::call_service(&app, post("/tail", "").to_request()).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(invalidations(&res), None);

    // A section the cache does not have invalidates all of it: the group is the whole cache.
    let res = test::call_service(&app, post("/ttl", "").to_request()).await;
    assert_eq!(invalidations(&res).unwrap(), ["groups-ttl"]);

    // Nothing registered: the group as declared, after the `tags` ones.
    let res = test::call_service(&app, post("/unregistered", "").to_request()).await;
    assert_eq!(
        invalidations(&res).unwrap(),
        ["extra", "groups-unregistered:part"]
    );
}

#[actix_rt::test]
async fn the_invalidating_middleware_names_its_group() {
    let ttl = ResponseCache::ttl("groups-mw", Duration::from_secs(30)).build();
    let sections = summary("groups-mw-sections");
    let ok = || web::post().to(|| async { HttpResponse::Ok().finish() });
    let app = test::init_service(
        App::new()
            .service(
                web::resource("/all")
                    .wrap(ttl.invalidates(CacheScope::All))
                    .route(ok()),
            )
            .service(
                web::resource("/tail")
                    .wrap(sections.invalidates(CacheScope::section("tail")))
                    .route(ok()),
            )
            .service(
                web::resource("/fails")
                    .wrap(ttl.invalidates(CacheScope::All))
                    .route(web::post().to(|| async { HttpResponse::Conflict().finish() })),
            ),
    )
    .await;
    let post = |uri: &str| TestRequest::post().uri(uri).to_request();

    let res = test::call_service(&app, post("/all")).await;
    assert_eq!(invalidations(&res).unwrap(), ["groups-mw"]);
    let res = test::call_service(&app, post("/tail")).await;
    assert_eq!(invalidations(&res).unwrap(), ["groups-mw-sections:tail"]);
    let res = test::call_service(&app, post("/fails")).await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    assert_eq!(invalidations(&res), None);
}
