use actix_conditional_macros::etag_cached;
use actix_web::{HttpRequest, HttpResponse};

struct Articles {
    title: String,
}

#[etag_cached(max_age = 60)]
impl Articles {
    #[etag_cached(cache = "articles", ttl = 30)]
    async fn show(&self, _req: HttpRequest) -> HttpResponse {
        HttpResponse::Ok().body(self.title.clone())
    }
}

fn main() {}
