use actix_conditional_macros::etag_cached;

#[etag_cached(public)]
async fn index() -> &'static str {
    "hello"
}

fn main() {}
