use actix_conditional_macros::etag_cached;
use actix_web::{App, web};

/// Docs are kept on the handler.
#[etag_cached(max_age = 60)]
async fn index() -> &'static str {
    "hello"
}

fn main() {
    let _app = App::new().route("/", web::get().to(index));
}
