use actix_conditional::etag_cached;

#[etag_cached(max_age = 5, ttl = 30)]
async fn handler() -> &'static str {
    "x"
}

fn main() {}
