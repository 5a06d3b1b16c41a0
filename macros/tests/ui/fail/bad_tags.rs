use actix_conditional_macros::etag_cached;

#[etag_cached(max_age = 60, tags = "challenges défis")]
async fn index() -> &'static str {
    "hello"
}

#[etag_cached(max_age = 60, tags = "  ")]
async fn empty() -> &'static str {
    "hello"
}

#[etag_cached(max_age = 60, tags = challenges)]
async fn not_a_string() -> &'static str {
    "hello"
}

fn main() {}
