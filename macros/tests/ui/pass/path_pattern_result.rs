// actix-web 4's `web::Path` has a private field, so `web::Path((a, b))` cannot be written as a
// parameter pattern (with or without the macro); `Query`/`Json`/`Form` patterns can.
use actix_conditional_macros::etag_cached;
use actix_web::{App, HttpRequest, HttpResponse, web};

#[etag_cached(max_age = 30, s_maxage = 120)]
async fn sum(
    req: HttpRequest,
    path: web::Path<(u32, String)>,
    web::Query((c, d)): web::Query<(u32, u32)>,
    mut _extra: web::Query<Vec<(String, String)>>,
) -> Result<HttpResponse, actix_web::Error> {
    let (a, b) = path.into_inner();
    let b: u32 = b.parse().map_err(actix_web::error::ErrorBadRequest)?;
    _extra.0.clear();
    Ok(HttpResponse::Ok().body(format!("{} {}", a + b + c + d, req.path())))
}

fn main() {
    let _app = App::new().route("/{a}/{b}", web::get().to(sum));
}
