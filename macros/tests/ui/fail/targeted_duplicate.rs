use actix_conditional_macros::{cache_control, etag_cached};

#[etag_cached(max_age = 0, cdn_max_age = 600, cdn_max_age = 60)]
async fn scores() -> &'static str {
    "scores"
}

#[cache_control(surrogate_max_age = 1, max_age = 5, surrogate_max_age = 2)]
async fn schedule() -> &'static str {
    "schedule"
}

fn main() {}
