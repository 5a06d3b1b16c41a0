use actix_conditional_macros::etag_cached;

#[etag_cached(max_age = 60)]
fn index() -> &'static str {
    "hello"
}

fn main() {}
