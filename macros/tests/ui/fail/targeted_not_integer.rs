use actix_conditional_macros::{cache_control, etag_cached};

#[etag_cached(max_age = 0, cdn_max_age = "600")]
async fn quoted() -> &'static str {
    "a"
}

#[etag_cached(max_age = 0, surrogate_max_age = 1.5)]
async fn decimal() -> &'static str {
    "b"
}

#[cache_control(cdn_max_age = 4294967296)]
async fn overflow() -> &'static str {
    "c"
}

#[cache_control(cdn_max_age)]
async fn no_value() -> &'static str {
    "d"
}

fn main() {}
