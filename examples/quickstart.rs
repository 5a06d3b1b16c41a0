//! Quickstart: a small JSON API behind [`ConditionalGet`].
//!
//! `GET /` (and `HEAD /`) answers a catalogue of 30 items as JSON (a few KiB) with
//! `Cache-Control: max-age=60, must-revalidate`; `GET /items/{id}` answers one item, or a JSON
//! 404 for an unknown id. The handlers know nothing about ETags: the middleware hashes each 200
//! body into a strong `ETag`, answers a matching `If-None-Match` with a body-less 304 (ETag and
//! Cache-Control kept) and a failing `If-Match` with an empty 412.
//!
//! Run it, then paste the `curl` lines it prints:
//!
//! ```text
//! cargo run --example quickstart
//! BIND=127.0.0.1:18080 RUST_LOG=actix_conditional=debug cargo run --example quickstart
//! ```
//!
//! `BIND` sets the listen address (default `127.0.0.1:8080`); `RUST_LOG=actix_conditional=debug`
//! logs each decision the middleware takes (ETag computed, 304, 412, skipped).
//!
//! `curl --compressed` gets a compressed body (brotli or gzip) with a weak `W/"…"` tag (see [`app`]).
//!
//! The app is split so a test can reuse it (`tests/over_http.rs` includes this file):
//! [`configure`] registers the routes and [`app`] adds the middleware stack.

use actix_conditional::ConditionalGet;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Compress;
use actix_web::{App, Error, HttpResponse, HttpServer, web};
use serde::Serialize;

/// The address used when `BIND` is not set.
pub const DEFAULT_BIND: &str = "127.0.0.1:8080";

/// What the catalogue's responses tell caches: reuse for a minute, then revalidate (which is
/// where the 304s come in).
pub const CACHE_CONTROL: &str = "max-age=60, must-revalidate";

/// How many items the catalogue holds.
pub const ITEM_COUNT: u32 = 30;

/// One catalogue entry.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    /// 1-based id, as used in `/items/{id}`.
    pub id: u32,
    /// Human-readable name.
    pub name: String,
    /// Price in cents.
    pub price_cents: u32,
    /// Whether the item can be ordered.
    pub in_stock: bool,
    /// A few labels.
    pub tags: Vec<&'static str>,
}

/// The whole catalogue, as `GET /` serves it.
#[derive(Debug, Clone, Serialize)]
pub struct Catalogue {
    /// A name for the catalogue.
    pub name: &'static str,
    /// How many items follow.
    pub count: usize,
    /// The items, ordered by id.
    pub items: Vec<Item>,
}

/// Builds item `id` (1..=[`ITEM_COUNT`]) deterministically, so every run (and every test)
/// serves the same bytes and therefore the same ETag.
pub fn item(id: u32) -> Option<Item> {
    const COLOURS: [&str; 6] = ["red", "green", "blue", "amber", "slate", "ivory"];
    const THINGS: [&str; 5] = ["kettle", "lamp", "notebook", "teapot", "umbrella"];
    const TAGS: [&str; 4] = ["kitchen", "office", "gift", "outdoor"];
    if !(1..=ITEM_COUNT).contains(&id) {
        return None;
    }
    let i = id as usize;
    Some(Item {
        id,
        name: format!(
            "{} {}",
            COLOURS[i % COLOURS.len()],
            THINGS[i % THINGS.len()]
        ),
        price_cents: 499 + (id * 7919) % 10_000,
        in_stock: !id.is_multiple_of(4),
        tags: vec![TAGS[i % TAGS.len()], TAGS[(i + 1 + i / 4 % 3) % TAGS.len()]],
    })
}

/// The catalogue served at `/`.
pub fn catalogue() -> Catalogue {
    let items: Vec<Item> = (1..=ITEM_COUNT).filter_map(item).collect();
    Catalogue {
        name: "quickstart catalogue",
        count: items.len(),
        items,
    }
}

/// `GET /` and `HEAD /`: the catalogue. No ETag code here: `ConditionalGet` adds it.
async fn index() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, CACHE_CONTROL))
        .json(catalogue())
}

/// `GET /items/{id}` and `HEAD /items/{id}`: one item, or a JSON 404 (which the middleware
/// passes through untouched: preconditions only apply to 2xx).
async fn show_item(id: web::Path<u32>) -> HttpResponse {
    let id = id.into_inner();
    match item(id) {
        Some(item) => HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, CACHE_CONTROL))
            .json(item),
        None => HttpResponse::NotFound().json(serde_json::json!({
            "error": "not found",
            "id": id,
        })),
    }
}

/// Registers the routes. `web::get()` does not match HEAD in actix, so HEAD is routed to the
/// same handlers explicitly; the middleware gives it the same ETag and headers as GET.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/")
            .route(web::get().to(index))
            .route(web::head().to(index)),
    )
    .service(
        web::resource("/items/{id}")
            .route(web::get().to(show_item))
            .route(web::head().to(show_item)),
    );
}

/// The conditional-GET layer: [`ConditionalGet`] with its defaults (xxh3-128 body hash, 4 MiB
/// limit, weak tags for responses that `Compress` may encode).
pub fn conditional_get() -> ConditionalGet {
    ConditionalGet::default()
}

/// The complete app: the routes from [`configure`] inside the middleware stack. More routes
/// can be added to the returned `App`; the same middleware wraps them.
///
/// `ConditionalGet` is registered before `Compress`, so `Compress` wraps it: tags are hashed
/// over the uncompressed JSON and a 304 is decided before anything is compressed. A client
/// that sends `Accept-Encoding` (`curl --compressed`, browsers) gets a gzip/brotli body and a
/// weak `W/"…"` tag, which still produces 304s; a client that does not gets identity bytes and
/// the strong tag.
pub fn app() -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = Error,
        InitError = (),
    >,
> {
    App::new()
        .wrap(conditional_get())
        .wrap(Compress::default())
        .configure(configure)
}

/// The `curl` lines `main` prints for `url` (which ends in `/`).
pub fn curl_lines(url: &str) -> Vec<String> {
    vec![
        format!("curl -i {url}"),
        format!(
            "ETAG=$(curl -sI {url} | grep -i '^etag:' | cut -d' ' -f2 | tr -d '\\r')  # or paste the ETag by hand"
        ),
        format!("curl -i -H \"If-None-Match: $ETAG\" {url}"),
        format!("curl -I {url}"),
        format!("curl -i -H 'If-Match: \"nope\"' {url}"),
        format!("curl -i {url}items/7"),
    ]
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    // Logs go to stderr, so stdout holds only the lines below.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();

    let bind = std::env::var("BIND").unwrap_or_else(|_| DEFAULT_BIND.to_owned());
    let server = HttpServer::new(app).bind(&bind)?;
    for addr in server.addrs() {
        let url = format!("http://{addr}/");
        println!("Serving a JSON catalogue behind ConditionalGet on {url}");
        println!("Try (RUST_LOG=actix_conditional=debug logs the middleware's decisions):");
        for line in curl_lines(&url) {
            println!("  {line}");
        }
    }
    server.run().await
}
