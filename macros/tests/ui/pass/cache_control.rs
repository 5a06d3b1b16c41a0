use actix_conditional_macros::cache_control;
use actix_web::{App, Responder, get, web};

#[get("/logo.svg")]
#[cache_control(max_age = 60, public)]
async fn logo() -> &'static str {
    "<svg/>"
}

#[cache_control(
    no_cache,
    no_store,
    must_revalidate,
    proxy_revalidate,
    private,
    max_age = 0,
    s_maxage = 0
)]
async fn account(name: web::Path<String>) -> impl Responder {
    name.into_inner()
}

#[cache_control(
    immutable,
    max_age = 31536000,
    stale_while_revalidate = 1,
    stale_if_error = 2
)]
async fn asset() -> String {
    String::new()
}

fn main() {
    let _app = App::new()
        .service(logo)
        .route("/account/{name}", web::get().to(account))
        .route("/asset", web::get().to(asset));
}
