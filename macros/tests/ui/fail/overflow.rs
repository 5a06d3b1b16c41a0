use actix_conditional_macros::etag_cached;

#[etag_cached(max_age = 99999999999)]
async fn index() -> &'static str {
    "hello"
}

fn main() {}
