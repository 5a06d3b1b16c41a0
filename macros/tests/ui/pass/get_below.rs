use actix_conditional_macros::etag_cached;
use actix_web::{App, Responder, route, web};

#[etag_cached(max_age = 60, private)]
#[route("/{name}", method = "GET", method = "HEAD")]
async fn greet(name: web::Path<String>) -> impl Responder {
    format!("hello {name}")
}

fn main() {
    let _app = App::new().service(greet);
}
