use actix_conditional_macros::etag_cached;
use actix_web::{App, HttpResponse, get};

#[get("/")]
#[etag_cached(max_age = 60, public)]
async fn index() -> HttpResponse {
    HttpResponse::Ok().body("hello")
}

fn main() {
    let _app = App::new().service(index);
}
