//! The server that `benches/load.sh` puts under wrk: one 32 KiB JSON body served bare,
//! through [`ConditionalGet`] and from a [`ResponseCache`], with identical handlers so that
//! only the middleware or the cache differs.
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
//!   middleware, seeing the handler's ETag, hashes nothing;
//! - `/cache/32k`: [`ResponseCache::serve`] on a TTL cache (`bench`, TTL one hour) whose
//!   build is the `/bare/32k` handler: after the first request every response is a hit
//!   (`X-Cache: hit`, plus the `ETag` and `Age` the cache adds);
//! - `/refresh/32k`: the same on a TTL cache (`bench-refresh`) with a short TTL
//!   (`REFRESH_TTL_MS`, default 1000) whose build sleeps (`REFRESH_BUILD_MS`, default 200)
//!   before answering the same bytes: under load a background refresh is in progress about
//!   `BUILD / (TTL + BUILD)` of the time, while readers get the stale bytes (`X-Cache: stale`);
//! - with `--features redis` and `REDIS_URL` (what `benches/redis_load.sh` runs):
//!   `/l1/32k`, the `/cache/32k` cache shared through Redis (`bench-l1`: hits come from
//!   process memory, Redis holds a copy; each request first waits for the shared counter read
//!   of read-your-writes), `/l1-lazy/32k`, the same without that read (`bench-l1-lazy`,
//!   `read_your_writes(false)`), and `/l2/32k`, the same as `/l1/32k` with
//!   [`memory_tier(false)`](actix_conditional::response_cache::ResponseCacheBuilder::memory_tier)
//!   (`bench-l2`: every hit is a Redis `GET`);
//! - `/stats`: the caches' [`CacheStats`] as JSON (`{"bench":{"hits":…},…}`), so the load
//!   scripts can check that the hit runs were all hits and that the refresh runs refreshed.
//!
//! Each route sits in its own `web::scope`, so routing costs the same for all of them. Both
//! caches are built once, before `HttpServer::new`, and shared by every worker.
//! `BIND` sets the address (default `127.0.0.1:8089`; port `0` picks a free one, and the line
//! printed at start names the real one) and `WORKERS` the worker count (default 1).
//!
//! ```sh
//! cargo run --release --example bench_server
//! BIND=127.0.0.1:0 WORKERS=2 cargo run --release --example bench_server
//! ```

#![allow(clippy::print_stdout, reason = "prints the address it listens on")]

use std::io;
use std::time::Duration;

use actix_conditional::condition::{HandlerPolicy, RequestValidators};
use actix_conditional::response_cache::CacheStats;
use actix_conditional::{CachePolicy, ConditionalGet, ETagHasher, ResponseCache};
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

/// The two response caches, shared by every worker.
#[derive(Debug, Clone)]
struct Caches {
    /// `/cache/32k`: fresh for an hour, so every request after the first is a hit.
    hit: ResponseCache,
    /// `/refresh/32k`: a short TTL and a slow build, so refreshes overlap the load.
    refresh: ResponseCache,
    /// How long a `/refresh/32k` build sleeps.
    build_delay: Duration,
    /// `/l1/32k`, `/l1-lazy/32k` and `/l2/32k`, with `REDIS_URL`.
    redis: Option<[ResponseCache; 3]>,
}

/// The body from app data, as [`body_32k`] takes it (a build receives only the request).
fn body_of(req: &HttpRequest) -> web::Data<Bytes> {
    req.app_data::<web::Data<Bytes>>()
        .cloned()
        .expect("the body is app data of every app")
}

/// `/cache/32k`: [`body_32k`] behind a TTL cache that stays fresh for the whole run.
async fn cache_32k(req: HttpRequest, caches: web::Data<Caches>) -> HttpResponse {
    caches
        .hit
        .serve(&req, |req: HttpRequest| body_32k(body_of(&req)))
        .await
}

/// `/l1/32k`, `/l1-lazy/32k` and `/l2/32k`: [`body_32k`] behind a cache shared through Redis.
async fn redis_32k(req: HttpRequest, caches: web::Data<Caches>) -> HttpResponse {
    let Some([l1, lazy, l2]) = &caches.redis else {
        return HttpResponse::NotFound().body("start with --features redis and REDIS_URL");
    };
    let cache = if req.path().starts_with("/l1-lazy") {
        lazy
    } else if req.path().starts_with("/l1") {
        l1
    } else {
        l2
    };
    cache
        .serve(&req, |req: HttpRequest| body_32k(body_of(&req)))
        .await
}

/// The Redis-backed caches, when built with the feature and given `REDIS_URL`.
fn redis_caches() -> io::Result<Option<[ResponseCache; 3]>> {
    let Some(url) = std::env::var("REDIS_URL")
        .ok()
        .filter(|url| !url.is_empty())
    else {
        return Ok(None);
    };
    #[cfg(feature = "redis")]
    {
        use actix_conditional::response_cache::RedisBackend;
        let invalid = |err: actix_conditional::response_cache::RedisBackendError| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("REDIS_URL: {err}"))
        };
        let backend = RedisBackend::builder(&url)
            .prefix("bench")
            .build()
            .map_err(invalid)?;
        let lazy_backend = RedisBackend::builder(&url)
            .prefix("bench")
            .read_your_writes(false)
            .build()
            .map_err(invalid)?;
        let hour = Duration::from_secs(3600);
        // `X-Cache` (opt-in) is what benches/redis_load.sh checks.
        let l1 = ResponseCache::ttl("bench-l1", hour)
            .redis(&backend)
            .x_cache(true)
            .build();
        let lazy = ResponseCache::ttl("bench-l1-lazy", hour)
            .redis(&lazy_backend)
            .x_cache(true)
            .build();
        let l2 = ResponseCache::ttl("bench-l2", hour)
            .redis(&backend)
            .x_cache(true)
            .memory_tier(false)
            .build();
        Ok(Some([l1, lazy, l2]))
    }
    #[cfg(not(feature = "redis"))]
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("REDIS_URL={url} needs `--features redis`"),
    ))
}

/// `/refresh/32k`: [`body_32k`] after a sleep, behind a TTL cache that goes stale every
/// `REFRESH_TTL_MS`; stale readers are answered at once while the refresh sleeps.
async fn refresh_32k(req: HttpRequest, caches: web::Data<Caches>) -> HttpResponse {
    let delay = caches.build_delay;
    caches
        .refresh
        .serve(&req, move |req: HttpRequest| async move {
            actix_rt::time::sleep(delay).await;
            body_32k(body_of(&req)).await
        })
        .await
}

/// One cache's counters as a JSON object.
fn stats_json(stats: &CacheStats) -> String {
    format!(
        r#"{{"builds":{},"hits":{},"misses":{},"stale_served":{},"coalesced":{},"bypasses":{},"refresh_failures":{},"revision_failures":{},"evictions":{},"redis_hits":{},"redis_writes":{}}}"#,
        stats.builds,
        stats.hits,
        stats.misses,
        stats.stale_served,
        stats.coalesced,
        stats.bypasses,
        stats.refresh_failures,
        stats.revision_failures,
        stats.evictions,
        stats.redis_hits,
        stats.redis_writes,
    )
}

/// `/stats`: the counters of every cache.
async fn stats(caches: web::Data<Caches>) -> HttpResponse {
    let mut all = vec![&caches.hit, &caches.refresh];
    if let Some(redis) = &caches.redis {
        all.extend(redis);
    }
    let members: Vec<String> = all
        .iter()
        .map(|cache| format!(r#""{}":{}"#, cache.name(), stats_json(&cache.stats())))
        .collect();
    let body = format!("{{{}}}", members.join(","));
    HttpResponse::Ok()
        .content_type("application/json")
        .body(body)
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// A whole number of milliseconds from the environment.
fn env_millis(name: &str, default: &str) -> io::Result<Duration> {
    env_or(name, default)
        .parse()
        .map(Duration::from_millis)
        .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, format!("{name}: {err}")))
}

#[actix_web::main]
async fn main() -> io::Result<()> {
    let bind = env_or("BIND", "127.0.0.1:8089");
    let workers: usize = env_or("WORKERS", "1")
        .parse()
        .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, format!("WORKERS: {err}")))?;
    let refresh_ttl = env_millis("REFRESH_TTL_MS", "1000")?;
    let build_delay = env_millis("REFRESH_BUILD_MS", "200")?;
    let body = web::Data::new(json_body(BODY_BYTES));
    // Built here, outside the closure: one cache for every worker.
    let caches = web::Data::new(Caches {
        // `X-Cache` (opt-in) is what benches/load.sh checks.
        hit: ResponseCache::ttl("bench", Duration::from_secs(3600))
            .x_cache(true)
            .build(),
        refresh: ResponseCache::ttl("bench-refresh", refresh_ttl)
            .x_cache(true)
            .build(),
        build_delay,
        redis: redis_caches()?,
    });

    let server = HttpServer::new(move || {
        App::new()
            .app_data(body.clone())
            .app_data(caches.clone())
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
            .service(web::scope("/cache").route("/32k", web::get().to(cache_32k)))
            .service(web::scope("/refresh").route("/32k", web::get().to(refresh_32k)))
            .service(web::scope("/l1-lazy").route("/32k", web::get().to(redis_32k)))
            .service(web::scope("/l1").route("/32k", web::get().to(redis_32k)))
            .service(web::scope("/l2").route("/32k", web::get().to(redis_32k)))
            .service(web::scope("/stats").route("", web::get().to(stats)))
    })
    .workers(workers)
    .bind(&bind)?;

    for addr in server.addrs() {
        println!(
            "bench_server listening on http://{addr} (workers: {workers}, refresh TTL {refresh_ttl:?}, refresh build {build_delay:?})"
        );
    }
    server.run().await
}
