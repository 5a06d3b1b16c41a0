//! In-process cost of a [`ResponseCache`] hit against bare actix-web serving the same bytes.
//!
//! Each iteration builds a GET, sends it through an `actix_web::test::init_service` app with
//! `call_service` and reads the whole body, as `benches/conditional_get.rs` does. The handler
//! returns a deterministic JSON body of 1 KiB or 32 KiB, cloned from a `Bytes` built once.
//! Groups, each with one benchmark per size:
//!
//! - `bare`: the handler, no cache (the baseline);
//! - `cache_hit`: the handler behind [`ResponseCache::serve`] (TTL one hour), every request a
//!   hit (`X-Cache: hit`, checked before timing);
//! - `cache_hit_mw`: the same cache as a middleware (`.wrap(cache)`);
//! - `cache_304`: a hit with a matching `If-None-Match`, answered 304 from the entry.
//!
//! No socket is involved, so this is the hit path's CPU cost per request; the wrk load test
//! (`benches/load.sh`) measures it over real sockets. Medians and ratios to `bare` are kept in
//! `BENCHMARKS.md`.
//!
//! ```sh
//! cargo bench -p actix-conditional-benches --bench response_cache            # about 40 seconds
//! cargo bench -p actix-conditional-benches --bench response_cache -- 1KiB    # one size
//! ```

use std::time::{Duration, Instant};

use actix_conditional::ResponseCache;
use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::test::{self, TestRequest};
use actix_web::web::{self, Bytes};
use actix_web::{App, HttpRequest, HttpResponse};
use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main,
};

const SIZES: [(usize, &str); 2] = [(1024, "1KiB"), (32 * 1024, "32KiB")];

/// A valid JSON array of exactly `size` bytes, the same on every run.
fn json_body(size: usize) -> Bytes {
    let mut body = String::with_capacity(size);
    body.push('[');
    for id in 0_u32.. {
        let item = format!(
            r#"{{"id":{id},"name":"item-{id:05}","tags":["alpha","beta"],"price":{}.{:02},"active":{}}}"#,
            id % 997,
            id % 100,
            id.is_multiple_of(3),
        );
        // Keep room for a separating comma and the closing bracket.
        if body.len() + item.len() + 2 > size {
            break;
        }
        if id > 0 {
            body.push(',');
        }
        body.push_str(&item);
    }
    body.extend(std::iter::repeat_n(' ', size - 1 - body.len()));
    body.push(']');
    assert_eq!(body.len(), size);
    Bytes::from(body)
}

async fn handler(body: web::Data<Bytes>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(body.get_ref().clone())
}

/// The body from app data (a build receives only the request).
fn body_of(req: &HttpRequest) -> web::Data<Bytes> {
    req.app_data::<web::Data<Bytes>>()
        .cloned()
        .expect("the body is app data")
}

async fn cached(req: HttpRequest, cache: web::Data<ResponseCache>) -> HttpResponse {
    cache
        .serve(&req, |req: HttpRequest| handler(body_of(&req)))
        .await
}

/// The GET every benchmark sends, with `If-None-Match` when given.
fn request(if_none_match: Option<&HeaderValue>) -> TestRequest {
    let req = TestRequest::get().uri("/data");
    match if_none_match {
        Some(tag) => req.insert_header((header::IF_NONE_MATCH, tag.clone())),
        None => req,
    }
}

fn configure<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    group
}

/// One benchmark: `iters` requests through `app` inside a single `block_on`, timing only the
/// loop. actix services are `!Send`, so the app stays on this thread's actix runtime.
fn bench_app<S, R, B>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &actix_rt::SystemRunner,
    label: &str,
    app: &S,
    make_req: impl Fn() -> R,
    expect: (StatusCode, Option<&str>),
) where
    S: Service<R, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    // Check once, outside the timing, that the scenario is the one we mean to measure (the
    // first request of a cached app is its miss and fills the cache).
    rt.block_on(async {
        let _fill = test::read_body(test::call_service(app, make_req()).await).await;
        let res = test::call_service(app, make_req()).await;
        // The cache's typed status (what `Cache-Status` and the opt-in `X-Cache` render).
        let cache = res
            .response()
            .extensions()
            .get::<actix_conditional::response_cache::CacheStatus>()
            .map(|status| status.label());
        assert_eq!((res.status(), cache), expect, "{label}: (status, cache)");
    });
    group.bench_function(BenchmarkId::from_parameter(label), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let res = test::call_service(app, make_req()).await;
                    std::hint::black_box(test::read_body(res).await);
                }
                start.elapsed()
            })
        });
    });
}

fn bench(c: &mut Criterion) {
    let rt = actix_rt::System::new();
    let bodies: Vec<(Bytes, &str)> = SIZES
        .iter()
        .map(|&(n, label)| (json_body(n), label))
        .collect();
    let new_cache = || ResponseCache::ttl("bench", Duration::from_secs(3600)).build();

    let mut group = configure(c, "bare");
    for (body, label) in &bodies {
        group.throughput(Throughput::Bytes(body.len() as u64));
        let app = rt.block_on(test::init_service(
            App::new()
                .app_data(web::Data::new(body.clone()))
                .route("/data", web::get().to(handler)),
        ));
        let make_req = || request(None).to_request();
        bench_app(
            &mut group,
            &rt,
            label,
            &app,
            make_req,
            (StatusCode::OK, None),
        );
    }
    group.finish();

    let mut group = configure(c, "cache_hit");
    for (body, label) in &bodies {
        group.throughput(Throughput::Bytes(body.len() as u64));
        let app = rt.block_on(test::init_service(
            App::new()
                .app_data(web::Data::new(body.clone()))
                .app_data(web::Data::new(new_cache()))
                .route("/data", web::get().to(cached)),
        ));
        let make_req = || request(None).to_request();
        let expect = (StatusCode::OK, Some("hit"));
        bench_app(&mut group, &rt, label, &app, make_req, expect);
    }
    group.finish();

    let mut group = configure(c, "cache_hit_mw");
    for (body, label) in &bodies {
        group.throughput(Throughput::Bytes(body.len() as u64));
        let app = rt.block_on(test::init_service(
            App::new()
                .wrap(new_cache())
                .app_data(web::Data::new(body.clone()))
                .route("/data", web::get().to(handler)),
        ));
        let make_req = || request(None).to_request();
        let expect = (StatusCode::OK, Some("hit"));
        bench_app(&mut group, &rt, label, &app, make_req, expect);
    }
    group.finish();

    let mut group = configure(c, "cache_304");
    for (body, label) in &bodies {
        group.throughput(Throughput::Bytes(body.len() as u64));
        let app = rt.block_on(test::init_service(
            App::new()
                .app_data(web::Data::new(body.clone()))
                .app_data(web::Data::new(new_cache()))
                .route("/data", web::get().to(cached)),
        ));
        let etag = rt.block_on(async {
            let res = test::call_service(&app, request(None).to_request()).await;
            res.headers()
                .get(header::ETAG)
                .expect("the cache sets an ETag")
                .clone()
        });
        let make_req = || request(Some(&etag)).to_request();
        let expect = (StatusCode::NOT_MODIFIED, Some("hit"));
        bench_app(&mut group, &rt, label, &app, make_req, expect);
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
