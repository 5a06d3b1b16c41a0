// `respond` answers from a sectioned cache's sections; a TTL cache has no such method.
use std::time::Duration;

use actix_conditional::response_cache::ResponseCache;
use actix_web::HttpRequest;

async fn handler(req: HttpRequest) -> actix_web::HttpResponse {
    let cache = ResponseCache::ttl("c", Duration::from_secs(30)).build();
    cache.respond(&req).await
}

fn main() {
    let _ = handler;
}
