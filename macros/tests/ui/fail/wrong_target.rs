use actix_conditional_macros::etag_cached;

#[etag_cached(max_age = 60)]
struct Index;

fn main() {}
