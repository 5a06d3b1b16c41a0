//! In-process cost of [`ConditionalGet`] against bare actix-web.
//!
//! Each iteration builds a GET, sends it through an `actix_web::test::init_service` app with
//! `call_service` and reads the whole body. The handler returns a deterministic JSON body of
//! 1 KiB, 32 KiB or 1 MiB, cloned from a `Bytes` built once. Groups, each with one benchmark
//! per size:
//!
//! - `bare`: the app without the middleware (the baseline);
//! - `xxh3`, `md5`, `sha256`: the 200 path, ETag computed with that [`ETagHasher`];
//! - `xxh3_304`: the default middleware answering a matching `If-None-Match` with a 304
//!   (its throughput counts the body the 304 stands in for).
//!
//! No socket is involved, so this is the middleware's CPU cost per request; what a 304 saves
//! on the wire is measured by the wrk load test, `benches/load.sh`. Medians and ratios to
//! `bare` are kept in `BENCHMARKS.md`.
//!
//! ```sh
//! cargo bench -p actix-conditional-benches --bench conditional_get            # all groups, about 1.5 minutes
//! cargo bench -p actix-conditional-benches --bench conditional_get -- 32KiB   # one size
//! ```

use std::time::{Duration, Instant};

use actix_conditional::{ConditionalGet, ETagHasher};
use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::test::{self, TestRequest};
use actix_web::web::{self, Bytes};
use actix_web::{App, HttpResponse};
use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main,
};

const SIZES: [(usize, &str); 3] = [(1024, "1KiB"), (32 * 1024, "32KiB"), (1024 * 1024, "1MiB")];

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
    expect: (StatusCode, bool),
) where
    S: Service<R, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    // Check once, outside the timing, that the scenario is the one we mean to measure.
    rt.block_on(async {
        let res = test::call_service(app, make_req()).await;
        let has_etag = res.headers().contains_key(header::ETAG);
        assert_eq!(
            (res.status(), has_etag),
            expect,
            "{label}: (status, has ETag)"
        );
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

    let mut group = configure(c, "bare");
    for (body, label) in &bodies {
        group.throughput(Throughput::Bytes(body.len() as u64));
        let app = rt.block_on(test::init_service(
            App::new()
                .app_data(web::Data::new(body.clone()))
                .route("/data", web::get().to(handler)),
        ));
        bench_app(
            &mut group,
            &rt,
            label,
            &app,
            || request(None).to_request(),
            (StatusCode::OK, false),
        );
    }
    group.finish();

    for (name, hasher) in [
        ("xxh3", ETagHasher::Xxh3),
        ("md5", ETagHasher::Md5),
        ("sha256", ETagHasher::Sha256),
    ] {
        let mut group = configure(c, name);
        for (body, label) in &bodies {
            group.throughput(Throughput::Bytes(body.len() as u64));
            let app = rt.block_on(test::init_service(
                App::new()
                    .wrap(ConditionalGet::new().hasher(hasher))
                    .app_data(web::Data::new(body.clone()))
                    .route("/data", web::get().to(handler)),
            ));
            bench_app(
                &mut group,
                &rt,
                label,
                &app,
                || request(None).to_request(),
                (StatusCode::OK, true),
            );
        }
        group.finish();
    }

    let mut group = configure(c, "xxh3_304");
    for (body, label) in &bodies {
        group.throughput(Throughput::Bytes(body.len() as u64));
        let app = rt.block_on(test::init_service(
            App::new()
                .wrap(ConditionalGet::default())
                .app_data(web::Data::new(body.clone()))
                .route("/data", web::get().to(handler)),
        ));
        let etag = rt.block_on(async {
            let res = test::call_service(&app, request(None).to_request()).await;
            res.headers()
                .get(header::ETAG)
                .expect("the 200 carries an ETag")
                .clone()
        });
        bench_app(
            &mut group,
            &rt,
            label,
            &app,
            || request(Some(&etag)).to_request(),
            (StatusCode::NOT_MODIFIED, true),
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
