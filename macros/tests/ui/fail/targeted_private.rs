use actix_conditional_macros::{cache_control, etag_cached};
use actix_web::{HttpRequest, HttpResponse};

#[etag_cached(max_age = 0, private, cdn_max_age = 600)]
async fn mine() -> &'static str {
    "mine"
}

#[cache_control(surrogate_max_age = 60, max_age = 5, private)]
async fn yours() -> &'static str {
    "yours"
}

struct Inbox;

// On the block, `private`; on a method, a CDN lifetime: the merged options conflict.
#[etag_cached(max_age = 0, private)]
impl Inbox {
    #[etag_cached(cdn_max_age = 600)]
    async fn list(&self, _req: HttpRequest) -> HttpResponse {
        HttpResponse::Ok().finish()
    }
}

fn main() {}
