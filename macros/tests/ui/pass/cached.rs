use actix_conditional::etag_cached;
use actix_web::{HttpResponse, web};

#[etag_cached(max_age = 15, public, cache = "challenges", ttl = 30)]
async fn active(path: web::Path<(u32,)>, query: web::Query<Vec<(String, String)>>) -> HttpResponse {
    HttpResponse::Ok().body(format!("{} {}", path.0, query.len()))
}

#[etag_cached(max_age = 0, invalidates = "summary:recent_progress")]
async fn add(body: web::Bytes) -> HttpResponse {
    HttpResponse::Created().body(body)
}

fn main() {
    let _ = actix_web::App::new()
        .route("/a/{n}", web::get().to(active))
        .route("/b", web::post().to(add));
}
