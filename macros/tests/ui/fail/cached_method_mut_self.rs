use actix_conditional_macros::etag_cached;
use actix_web::{HttpRequest, HttpResponse};

#[derive(Clone)]
struct Counter {
    hits: u32,
}

#[etag_cached(max_age = 60)]
impl Counter {
    #[etag_cached(cache = "counter", ttl = 30)]
    async fn show(&mut self, _req: HttpRequest) -> HttpResponse {
        self.hits += 1;
        HttpResponse::Ok().body(self.hits.to_string())
    }
}

fn main() {}
