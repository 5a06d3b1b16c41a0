//! The query part of the key: `normalize_query` merges spellings of one request, and
//! `query_keys` (an allow-list) turns a cache-busting flood of random parameters into hits.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use actix_conditional::response_cache::{CacheStatus, ManualClock, ResponseCache};
use actix_web::test::{self, TestRequest};
use actix_web::{App, HttpRequest, HttpResponse, web};
use serde::Deserialize;

const TTL: Duration = Duration::from_secs(60);

#[derive(Deserialize)]
struct Page {
    page: Option<u32>,
    sort: Option<String>,
}

/// `/items` behind `cache` as a middleware; its handler reads only `page` and `sort`, as
/// `query_keys` requires. Counts its builds.
macro_rules! items {
    ($cache:expr, $builds:expr) => {{
        let builds = Arc::clone(&$builds);
        test::init_service(App::new().wrap($cache.clone()).route(
            "/items",
            web::get().to(move |query: web::Query<Page>| {
                builds.fetch_add(1, Ordering::SeqCst);
                let body = format!(
                    "page {} by {}",
                    query.page.unwrap_or(1),
                    query.sort.as_deref().unwrap_or("id")
                );
                async move { HttpResponse::Ok().body(body) }
            }),
        ))
        .await
    }};
}

/// The cache status label and body of `GET uri`.
macro_rules! get {
    ($app:expr, $uri:expr) => {{
        let res = test::call_service(&$app, TestRequest::get().uri($uri).to_request()).await;
        let label = CacheStatus::of(res.response()).map_or("none", |s| s.label());
        let body = test::read_body(res).await;
        (label, String::from_utf8(body.to_vec()).unwrap())
    }};
}

#[actix_rt::test]
async fn an_allow_list_turns_a_busting_flood_into_hits() {
    let cache = ResponseCache::ttl("busting", TTL)
        .clock(ManualClock::new())
        .query_keys(["page", "sort"])
        .build();
    let builds = Arc::new(AtomicUsize::new(0));
    let app = items!(cache, builds);

    assert_eq!(get!(app, "/items?page=2"), ("miss", "page 2 by id".into()));
    let weight = cache.weighted_bytes();
    for i in 0..500 {
        // Random junk, in any order around the listed parameter: one entry, all hits.
        let uri = if i % 2 == 0 {
            format!("/items?_={i}&page=2&utm_source=mail{i}")
        } else {
            format!("/items?page=2&cb={i}")
        };
        assert_eq!(get!(app, &uri), ("hit", "page 2 by id".into()), "{uri}");
    }
    assert_eq!(builds.load(Ordering::SeqCst), 1);
    assert_eq!(cache.weighted_bytes(), weight, "no entry was added");

    // Listed parameters still make their own entries, in any order and encoding.
    assert_eq!(get!(app, "/items?page=3&sort=name").0, "miss");
    assert_eq!(get!(app, "/items?sort=name&x=1&page=%33").0, "hit");
    assert_eq!(get!(app, "/items?page=3").0, "miss");
    assert_eq!(builds.load(Ordering::SeqCst), 3);
}

#[actix_rt::test]
async fn without_an_allow_list_every_junk_parameter_is_a_new_entry() {
    // The bug the allow-list guards against, shown on a default cache.
    let cache = ResponseCache::ttl("busted", TTL)
        .clock(ManualClock::new())
        .build();
    let builds = Arc::new(AtomicUsize::new(0));
    let app = items!(cache, builds);
    for i in 0..20 {
        assert_eq!(get!(app, &format!("/items?page=2&_={i}")).0, "miss");
    }
    assert_eq!(builds.load(Ordering::SeqCst), 20);
}

#[actix_rt::test]
async fn normalize_query_merges_orders_and_encodings_but_keeps_values_apart() {
    let build = |_req: HttpRequest| async { HttpResponse::Ok().body("x") };
    let label = |res: &HttpResponse| CacheStatus::of(res).unwrap().label();
    let req = |uri: &str| TestRequest::get().uri(uri).to_http_request();

    let cache = ResponseCache::ttl("normalized", TTL)
        .clock(ManualClock::new())
        .normalize_query(true)
        .build();
    assert_eq!(label(&cache.serve(&req("/s?b=2&a=1"), build).await), "miss");
    for same in ["/s?a=1&b=2", "/s?a=%31&b=2", "/s?&b=2&&a=1&"] {
        assert_eq!(
            label(&cache.serve(&req(same), build).await),
            "hit",
            "{same}"
        );
    }
    assert_eq!(label(&cache.serve(&req("/s?a=1&b=3"), build).await), "miss");
    assert_eq!(label(&cache.serve(&req("/s?a=1"), build).await), "miss");

    // The default keeps the query as sent.
    let verbatim = ResponseCache::ttl("verbatim", TTL)
        .clock(ManualClock::new())
        .build();
    assert_eq!(
        label(&verbatim.serve(&req("/s?b=2&a=1"), build).await),
        "miss"
    );
    assert_eq!(
        label(&verbatim.serve(&req("/s?a=1&b=2"), build).await),
        "miss"
    );
}

#[actix_rt::test]
async fn refresh_still_forces_a_rebuild_and_the_key_shows_only_listed_parameters() {
    let cache = ResponseCache::ttl("refresh", TTL)
        .clock(ManualClock::new())
        .query_keys(["page"])
        .cache_status_key(true)
        .build();
    let builds = Arc::new(AtomicUsize::new(0));
    let app = items!(cache, builds);
    assert_eq!(get!(app, "/items?page=1").0, "miss");
    let (label, _) = get!(app, "/items?page=1&refresh=true");
    assert_ne!(label, "hit", "a forced refresh rebuilt");
    assert_eq!(builds.load(Ordering::SeqCst), 2);
    assert_eq!(get!(app, "/items?page=1&junk=1").0, "hit");

    let res = test::call_service(
        &app,
        TestRequest::get().uri("/items?junk=1&page=1").to_request(),
    )
    .await;
    let status = res.headers().get("cache-status").unwrap().to_str().unwrap();
    assert!(status.contains("/items?page=1\""), "{status}");
    assert!(!status.contains("junk"), "{status}");
}
