use actix_conditional::etag_cached;
use actix_web::HttpRequest;

fn revision(_req: &HttpRequest) -> Option<String> {
    None
}

#[etag_cached(max_age = 5, cache = "c", ttl = 30, etag = revision)]
async fn handler() -> &'static str {
    "x"
}

fn main() {}
