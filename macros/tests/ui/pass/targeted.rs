use actix_conditional::viewset::ViewSet;
use actix_conditional_macros::{cache_control, etag_cached};
use actix_web::{HttpRequest, HttpResponse, web::Bytes};

#[etag_cached(max_age = 0, cdn_max_age = 600, surrogate_max_age = 3600)]
async fn scores() -> &'static str {
    "scores"
}

#[cache_control(cdn_max_age = 600)]
async fn only_cdn() -> &'static str {
    "cdn"
}

#[cache_control(public, max_age = 60, surrogate_max_age = 86400)]
async fn schedule() -> &'static str {
    "schedule"
}

#[derive(Clone)]
struct Posts;

#[etag_cached(max_age = 0, public, cdn_max_age = 600)]
impl ViewSet for Posts {
    #[etag_cached(cdn_max_age = 60, cache = "posts", ttl = 30)]
    async fn list(&self, _req: HttpRequest) -> HttpResponse {
        HttpResponse::Ok().finish()
    }

    async fn create(&self, _: HttpRequest, body: Bytes) -> HttpResponse {
        HttpResponse::Created().body(body)
    }
}

fn main() {
    let _ = (scores, only_cdn, schedule);
}
