//! The `Edge` middleware: vendor tag headers rendered from `Cache-Groups`, and purges of what
//! a 2xx write invalidated, sent before the write answers (for at most the purge bound), once
//! per write however many instances share the caches.
//!
//! The purgers here are in-memory recorders (the HTTP purgers' requests are checked against a
//! recording server in `tests/purge.rs`, and against a real Varnish in `tests/edge_caches.rs`).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_conditional::edge::purge::{PurgeError, Purger, Purges};
use actix_conditional::edge::{self, Edge, TagHeaders};
use actix_conditional::response_cache::{CacheScope, CacheStatus, InProcessTier, ResponseCache};
use actix_conditional::viewset::{self, Action, ViewSet};
use actix_web::http::StatusCode;
use actix_web::test::{self, TestRequest};
use actix_web::{App, HttpRequest, HttpResponse, web};
use bytes::Bytes;

/// Remembers every purge it is asked for; optionally never answers (a hung edge).
#[derive(Clone, Default)]
struct Recorder {
    calls: Arc<Mutex<Vec<Vec<String>>>>,
    hang: bool,
}

impl Recorder {
    fn calls(&self) -> Vec<Vec<String>> {
        self.calls.lock().unwrap().clone()
    }
}

impl Purger for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }

    fn purge<'a>(
        &'a self,
        groups: &'a [String],
    ) -> Pin<Box<dyn Future<Output = Result<(), PurgeError>> + Send + 'a>> {
        Box::pin(async move {
            if self.hang {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            self.calls.lock().unwrap().push(groups.to_vec());
            Ok(())
        })
    }
}

fn purges(recorder: &Recorder, wait: Duration) -> Purges {
    Purges::builder()
        .purger(recorder.clone())
        .timeout(Duration::from_secs(5))
        .wait(wait)
        .build()
        .unwrap()
}

/// A viewset answering `/notes` and `/notes/{id}`; a create with an empty body is a 400.
struct Notes;

impl ViewSet for Notes {
    const ACTIONS: &'static [Action] = &[Action::List, Action::Create, Action::Retrieve];

    async fn list(&self, _req: HttpRequest) -> HttpResponse {
        HttpResponse::Ok().json(["a", "b"])
    }

    async fn create(&self, _req: HttpRequest, body: Bytes) -> HttpResponse {
        if body.is_empty() {
            return HttpResponse::BadRequest().finish();
        }
        HttpResponse::Created().finish()
    }

    async fn retrieve(&self, _req: HttpRequest, id: String) -> HttpResponse {
        HttpResponse::Ok().body(id)
    }
}

fn header(res: &actix_web::dev::ServiceResponse, name: &str) -> Option<String> {
    res.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

#[actix_rt::test]
async fn reads_carry_vendor_tags_and_a_2xx_write_is_purged_before_it_answers() {
    let recorder = Recorder::default();
    let edge = Edge::new()
        .tag_headers(TagHeaders::new().xkey().surrogate_key())
        .purges(purges(&recorder, Duration::from_secs(2)));
    let app = test::init_service(
        App::new()
            .wrap(edge)
            .configure(|cfg| viewset::register(cfg, "notes", Notes)),
    )
    .await;

    for uri in ["/notes", "/notes/7"] {
        let res = test::call_service(&app, TestRequest::get().uri(uri).to_request()).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(edge::groups(res.headers()), ["notes"], "{uri}");
        assert_eq!(header(&res, "xkey").as_deref(), Some("notes"));
        assert_eq!(header(&res, "surrogate-key").as_deref(), Some("notes"));
    }
    assert!(recorder.calls().is_empty(), "reads purge nothing");

    // A failed write changed nothing: nothing to purge.
    let res = test::call_service(&app, TestRequest::post().uri("/notes").to_request()).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(recorder.calls().is_empty());

    let res = test::call_service(
        &app,
        TestRequest::post()
            .uri("/notes")
            .set_payload("x")
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(edge::invalidations(res.headers()), ["notes"]);
    // Purged by the time the write answered: the next read through the edge is fresh.
    assert_eq!(recorder.calls(), [vec!["notes".to_owned()]]);
}

#[actix_rt::test]
async fn a_hung_edge_delays_a_write_by_the_bound_only_and_the_purge_stays_queued() {
    let recorder = Recorder {
        hang: true,
        ..Recorder::default()
    };
    let purges = purges(&recorder, Duration::from_millis(300));
    let edge = Edge::new().purges(purges.clone());
    let app = test::init_service(
        App::new()
            .wrap(edge)
            .configure(|cfg| viewset::register(cfg, "notes", Notes)),
    )
    .await;
    let started = Instant::now();
    let res = test::call_service(
        &app,
        TestRequest::post()
            .uri("/notes")
            .set_payload("x")
            .to_request(),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "the write waited {took:?}: the bound is 300 ms"
    );
    // Not dropped: still in flight, to be retried while the process lives.
    let stats = purges.stats();
    assert_eq!(stats.pending, 1, "{stats:?}");
    assert_eq!(stats.dropped, 0, "{stats:?}");
}

/// Two instances whose caches share a tier (as with Redis): a write on one invalidates both
/// instances' caches, but only the instance that answered the write purges the edge.
#[actix_rt::test]
async fn one_purge_per_write_however_many_instances_share_the_caches() {
    let tier = InProcessTier::new();
    let recorder = Recorder::default();
    let edge = Edge::new().purges(purges(&recorder, Duration::from_secs(2)));
    let instance = |tier: &InProcessTier| {
        ResponseCache::ttl("edge-shared", Duration::from_secs(30))
            .shared_in_process(tier)
            .build()
    };
    let (cache_a, cache_b) = (instance(&tier), instance(&tier));
    let app = |cache: ResponseCache| {
        let read = cache.clone();
        App::new()
            .wrap(edge.clone())
            .route(
                "/board",
                web::get().to(move |req: HttpRequest| {
                    let cache = read.clone();
                    async move {
                        cache
                            .serve(&req, |_| async {
                                HttpResponse::Ok()
                                    .insert_header(("cache-control", "public, max-age=15"))
                                    .body("board")
                            })
                            .await
                    }
                }),
            )
            .service(
                web::resource("/board/write")
                    .wrap(cache.invalidates(CacheScope::All))
                    .route(web::post().to(HttpResponse::NoContent)),
            )
    };
    let a = test::init_service(app(cache_a)).await;
    let b = test::init_service(app(cache_b)).await;
    let read = || TestRequest::get().uri("/board").to_request();

    let res = test::call_service(&a, read()).await;
    assert_eq!(edge::groups(res.headers()), ["edge-shared"]);
    let res = test::call_service(&b, read()).await;
    assert_eq!(CacheStatus::of(res.response()).unwrap().label(), "hit");

    let res = test::call_service(&a, TestRequest::post().uri("/board/write").to_request()).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(edge::invalidations(res.headers()), ["edge-shared"]);
    // Both instances' caches were invalidated...
    let res = test::call_service(&b, read()).await;
    assert_eq!(CacheStatus::of(res.response()).unwrap().label(), "miss");
    // ...and the edge was purged once, by the instance that answered the write.
    assert_eq!(recorder.calls(), [vec!["edge-shared".to_owned()]]);
}

/// `repurge_after`: the same groups purged again later, for a fetch the edge had in flight
/// across the write; the write itself waits only for the first.
#[actix_rt::test]
async fn repurge_after_purges_the_groups_again_later() {
    let recorder = Recorder::default();
    let edge = Edge::new()
        .purges(purges(&recorder, Duration::from_secs(2)))
        .repurge_after(Duration::from_millis(100));
    let app = test::init_service(
        App::new()
            .wrap(edge)
            .configure(|cfg| viewset::register(cfg, "notes", Notes)),
    )
    .await;
    let write = TestRequest::post().uri("/notes").set_payload("x");
    let res = test::call_service(&app, write.to_request()).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(
        recorder.calls().len(),
        1,
        "the write waited for the first purge only"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while recorder.calls().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "no second purge: {:?}",
            recorder.calls()
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(recorder.calls()[1], ["notes"]);
}
