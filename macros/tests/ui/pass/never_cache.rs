use actix_conditional_macros::never_cache;
use actix_web::{App, HttpResponse, post};

#[never_cache]
#[post("/login")]
async fn login() -> Result<HttpResponse, actix_web::Error> {
    Ok(HttpResponse::Ok().body("welcome"))
}

fn main() {
    let _app = App::new().service(login);
}
