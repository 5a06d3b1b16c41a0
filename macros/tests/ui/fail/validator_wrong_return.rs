use actix_conditional::etag_cached;
use actix_web::HttpRequest;

// Returns the tag itself instead of `Option<String>`.
fn revision(_req: &HttpRequest) -> String {
    "rev-7".to_owned()
}

#[etag_cached(max_age = 60, etag = revision)]
async fn report() -> &'static str {
    "report"
}

fn main() {}
