//! Single-flight under a real race: 8 threads, each its own actix System (as 8 workers are),
//! released together onto one cold key of a fresh cache, many times over. Each trial must run
//! the builder exactly once. This caught a lookup/join window in which a request that missed
//! the store joined an empty flight map just after the first leader finished, and built again
//! (about 3% of trials before the fix). `RACE_TRIALS` raises the count (default 300).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use actix_conditional::{ResponseCache, Section};
use actix_web::HttpResponse;
use actix_web::test::TestRequest;

#[path = "common/cache_status.rs"]
mod cache_status;

/// The `X-Cache` label of this library's `Cache-Status` member, read with an sf parser.
fn cache_label(headers: &actix_web::http::header::HeaderMap) -> &'static str {
    cache_status::label(headers.get_all("cache-status").map(|v| v.to_str().unwrap()))
}

/// TTL cache through `serve`.
#[test]
fn cold_key_races_build_once() {
    let (threads, trials) = (8, trials());
    let mut doubled = 0;
    for trial in 0..trials {
        let cache = ResponseCache::ttl(format!("race-{trial}"), Duration::from_secs(30)).build();
        let builds = Arc::new(AtomicUsize::new(0));
        let barrier = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (cache, builds, barrier) = (cache.clone(), builds.clone(), barrier.clone());
                thread::spawn(move || {
                    actix_rt::System::new().block_on(async move {
                        let req = TestRequest::get().uri("/x").to_http_request();
                        barrier.wait();
                        let res = cache
                            .serve(&req, move |_| {
                                builds.fetch_add(1, Ordering::SeqCst);
                                async { HttpResponse::Ok().body("x") }
                            })
                            .await;
                        assert_eq!(res.status(), 200);
                    })
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        if builds.load(Ordering::SeqCst) > 1 {
            doubled += 1;
        }
    }
    assert_eq!(
        doubled, 0,
        "trials with more than one build: {doubled}/{trials}"
    );
}

fn trials() -> usize {
    std::env::var("RACE_TRIALS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(300)
}

/// One sectioned miss counts one build (it used to be counted twice).
#[actix_rt::test]
async fn a_sectioned_miss_counts_one_build() {
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let cache = ResponseCache::sections("double-count")
        .section(Section::new(
            "core",
            |_req| async { Ok::<_, actix_web::Error>("1".to_owned()) },
            move |_req| {
                r.fetch_add(1, Ordering::SeqCst);
                async { Ok::<_, actix_web::Error>(serde_json::json!({"a": 1})) }
            },
        ))
        .build();
    let req = TestRequest::get().uri("/s").to_http_request();
    let res = cache.respond(&req).await;
    assert_eq!(cache_label(res.headers()), "miss");
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the section was built once");
    assert_eq!(cache.stats().builds, 1, "stats: {:?}", cache.stats());
}

/// Sectioned cache through `respond`.
#[test]
fn cold_sectioned_key_races_build_once() {
    let (threads, trials) = (8, trials());
    let mut doubled = 0;
    for trial in 0..trials {
        let builds = Arc::new(AtomicUsize::new(0));
        let b = builds.clone();
        let cache = ResponseCache::sections(format!("srace-{trial}"))
            .section(Section::new(
                "core",
                |_req| async { Ok::<_, actix_web::Error>("1".to_owned()) },
                move |_req| {
                    b.fetch_add(1, Ordering::SeqCst);
                    async { Ok::<_, actix_web::Error>(1) }
                },
            ))
            .build();
        let barrier = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (cache, barrier) = (cache.clone(), barrier.clone());
                thread::spawn(move || {
                    actix_rt::System::new().block_on(async move {
                        let req = TestRequest::get().uri("/s").to_http_request();
                        barrier.wait();
                        assert_eq!(cache.respond(&req).await.status(), 200);
                    })
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        if builds.load(Ordering::SeqCst) > 1 {
            doubled += 1;
        }
    }
    assert_eq!(
        doubled, 0,
        "sectioned trials with more than one build: {doubled}/{trials}"
    );
}
