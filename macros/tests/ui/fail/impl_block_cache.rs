use actix_conditional_macros::etag_cached;
use actix_web::{HttpRequest, HttpResponse};

struct Articles;

#[etag_cached(max_age = 60, cache = "articles", ttl = 30)]
impl Articles {
    async fn list(_req: HttpRequest) -> HttpResponse {
        HttpResponse::Ok().finish()
    }
}

fn main() {}
