use actix_conditional::etag_cached;
use actix_web::HttpRequest;

// Takes the request by value: validators borrow it (`&HttpRequest`).
fn revision(_req: HttpRequest) -> Option<String> {
    Some("rev-7".to_owned())
}

#[etag_cached(max_age = 60, etag = revision)]
async fn report() -> &'static str {
    "report"
}

fn main() {}
