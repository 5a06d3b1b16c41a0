//! The server that `benches/load.sh` puts under wrk: one 32 KiB JSON body served bare and
//! through [`ConditionalGet`], with identical handlers so that only the middleware differs.
//!
//! Routes, all `GET`, all answering the same `Bytes` built once at start
//! (`content-type: application/json`):
//!
//! - `/bare/32k`: no middleware;
//! - `/cg/32k`: in a scope wrapped by `ConditionalGet::default()` (XXH3 ETags);
//! - `/cg/32k/md5`: in a scope wrapped by `ConditionalGet::new().hasher(ETagHasher::Md5)`;
//! - `/cond/32k`: in a scope wrapped by `ConditionalGet::default()`, its handler wrapped by
//!   [`HandlerPolicy::respond`] with the constant validator `"v1"`: a matching
//!   `If-None-Match` is answered 304 *before* the handler (nothing built, nothing hashed); a
//!   200 carries `ETag: "v1"` and `Cache-Control: max-age=60, must-revalidate`, and the
//!   middleware, seeing the handler's ETag, hashes nothing.
//!
//! Each route sits in its own `web::scope`, so routing costs the same for all four.
//! `BIND` sets the address (default `127.0.0.1:8089`; port `0` picks a free one, and the line
//! printed at start names the real one) and `WORKERS` the worker count (default 1).
//!
//! ```sh
//! cargo run --release --example bench_server
//! BIND=127.0.0.1:0 WORKERS=2 cargo run --release --example bench_server
//! ```

#![allow(clippy::print_stdout, reason = "prints the address it listens on")]

use std::io;

use actix_conditional::condition::{HandlerPolicy, RequestValidators};
use actix_conditional::{CachePolicy, ConditionalGet, ETagHasher};
use actix_web::web::{self, Bytes};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer};

const BODY_BYTES: usize = 32 * 1024;

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
    Bytes::from(body)
}

/// The one handler every route uses: a refcount bump, no copy of the body.
async fn body_32k(body: web::Data<Bytes>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(body.get_ref().clone())
}

/// The policy of `/cond/32k`: validators before the handler, revalidate after a minute.
const COND_POLICY: HandlerPolicy = HandlerPolicy::new(CachePolicy::revalidate(60));

/// `/cond/32k`: [`body_32k`] behind a constant validator, what `#[etag_cached]` expands to.
async fn cond_32k(req: HttpRequest, body: web::Data<Bytes>) -> HttpResponse {
    let validators = RequestValidators::new().etag(Some("v1"));
    COND_POLICY.respond(&req, validators, body_32k(body)).await
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

#[actix_web::main]
async fn main() -> io::Result<()> {
    let bind = env_or("BIND", "127.0.0.1:8089");
    let workers: usize = env_or("WORKERS", "1")
        .parse()
        .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, format!("WORKERS: {err}")))?;
    let body = web::Data::new(json_body(BODY_BYTES));

    let server = HttpServer::new(move || {
        App::new()
            .app_data(body.clone())
            .service(web::scope("/bare").route("/32k", web::get().to(body_32k)))
            // Registered before `/cg`, which would otherwise claim the path and answer 404.
            .service(
                web::scope("/cg/32k/md5")
                    .wrap(ConditionalGet::new().hasher(ETagHasher::Md5))
                    .route("", web::get().to(body_32k)),
            )
            .service(
                web::scope("/cg")
                    .wrap(ConditionalGet::default())
                    .route("/32k", web::get().to(body_32k)),
            )
            .service(
                web::scope("/cond")
                    .wrap(ConditionalGet::default())
                    .route("/32k", web::get().to(cond_32k)),
            )
    })
    .workers(workers)
    .bind(&bind)?;

    for addr in server.addrs() {
        println!("bench_server listening on http://{addr} (workers: {workers})");
    }
    server.run().await
}
