use actix_conditional_macros::etag_cached;

#[etag_cached(max_age = 60, public, private)]
async fn index() -> &'static str {
    "hello"
}

fn main() {}
