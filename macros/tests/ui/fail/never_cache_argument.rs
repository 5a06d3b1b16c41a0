use actix_conditional_macros::never_cache;

#[never_cache(max_age = 0)]
async fn login() -> &'static str {
    "welcome"
}

fn main() {}
