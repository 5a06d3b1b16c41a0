//! `N` requests through one scenario, in process, for counting instructions under callgrind
//! (`benches/cache_hit_ab.sh` runs it on two revisions): unlike wall time, the count is the
//! same whatever else the machine is doing.
//!
//! ```text
//! cargo bench -p actix-conditional-benches --bench hit_instructions --no-run
//! valgrind --tool=callgrind target/release/deps/hit_instructions-… cache_hit 32768 1000
//! ```
//!
//! Scenarios: `bare` (the handler alone), `cache_hit` (`ResponseCache::serve`, every request a
//! hit), `cache_hit_mw` (the cache as middleware), `cache_304` (a hit answered 304 from the
//! entry). Only public API that every revision since the caches landed has.

use std::hint::black_box;
use std::time::Duration;

use actix_conditional::response_cache::ResponseCache;
use actix_web::http::header::IF_NONE_MATCH;
use actix_web::{App, HttpRequest, HttpResponse, test, web};
use bytes::Bytes;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench` runs every bench binary with `--bench`: nothing to count then.
    let (Some(scenario), Some(size), Some(n)) = (args.get(1), args.get(2), args.get(3)) else {
        return;
    };
    if scenario == "--bench" {
        return;
    }
    let size: usize = size.parse().expect("a body size in bytes");
    let n: usize = n.parse().expect("a request count");
    let body = Bytes::from(vec![b'x'; size]);
    actix_rt::System::new().block_on(async move {
        let handler = move || {
            let body = body.clone();
            async move {
                HttpResponse::Ok()
                    .content_type("application/json")
                    .body(body)
            }
        };
        let cache = ResponseCache::ttl("instructions", Duration::from_secs(3600)).build();
        let get = || test::TestRequest::get().uri("/data");
        match scenario.as_str() {
            "bare" => {
                let app =
                    test::init_service(App::new().route("/data", web::get().to(handler))).await;
                run(&app, n, || get().to_request()).await;
            }
            "cache_hit" | "cache_304" => {
                let route = web::get().to(move |req: HttpRequest| {
                    let (cache, handler) = (cache.clone(), handler.clone());
                    async move { cache.serve(&req, move |_req| handler()).await }
                });
                let app = test::init_service(App::new().route("/data", route)).await;
                let first = test::call_service(&app, get().to_request()).await;
                let etag = first.headers().get("etag").cloned().expect("an ETag");
                let with_etag = scenario == "cache_304";
                run(&app, n, || match with_etag {
                    true => get()
                        .insert_header((IF_NONE_MATCH, etag.clone()))
                        .to_request(),
                    false => get().to_request(),
                })
                .await;
            }
            "cache_hit_mw" => {
                let app = App::new()
                    .wrap(cache)
                    .route("/data", web::get().to(handler));
                let app = test::init_service(app).await;
                run(&app, n, || get().to_request()).await;
            }
            other => panic!("unknown scenario {other}"),
        }
    });
}

async fn run<S, R, B>(app: &S, n: usize, make: impl Fn() -> R)
where
    S: actix_web::dev::Service<
            R,
            Response = actix_web::dev::ServiceResponse<B>,
            Error = actix_web::Error,
        >,
    B: actix_web::body::MessageBody,
{
    for _ in 0..n {
        let res = test::call_service(app, make()).await;
        black_box(test::read_body(res).await);
    }
}
