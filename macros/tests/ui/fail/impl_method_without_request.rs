use actix_conditional_macros::etag_cached;
use actix_web::HttpResponse;

struct Articles;

#[etag_cached(max_age = 60)]
impl Articles {
    async fn list(&self) -> HttpResponse {
        HttpResponse::Ok().finish()
    }
}

fn main() {}
