use std::cell::Cell;
use std::time::SystemTime;

use actix_conditional_macros::etag_cached;
use actix_web::http::{StatusCode, header};
use actix_web::{App, HttpRequest, test, web};

thread_local! {
    static CALLS: Cell<u32> = const { Cell::new(0) };
}

fn revision(_req: &HttpRequest) -> Option<String> {
    Some("rev-1".to_owned())
}

async fn modified(_req: &HttpRequest) -> Option<SystemTime> {
    Some(SystemTime::UNIX_EPOCH)
}

#[etag_cached(
    max_age = 60,
    public,
    stale_while_revalidate = 30,
    stale_if_error = 600,
    vary = ["Accept-Language", "Accept-Encoding"],
    etag = revision,
    last_modified = modified,
)]
async fn article() -> String {
    CALLS.set(CALLS.get() + 1);
    "article".to_owned()
}

fn main() {
    actix_web::rt::System::new().block_on(async {
        let app = test::init_service(App::new().route("/", web::get().to(article))).await;

        let res = test::call_service(&app, test::TestRequest::get().to_request()).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers().get(header::ETAG).unwrap(), "\"rev-1\"");
        assert!(res.headers().contains_key(header::LAST_MODIFIED));
        let cache_control = res
            .headers()
            .get(header::CACHE_CONTROL)
            .unwrap()
            .to_str()
            .unwrap();
        for directive in [
            "public",
            "max-age=60",
            "must-revalidate",
            "stale-while-revalidate=30",
        ] {
            assert!(cache_control.contains(directive), "{cache_control}");
        }
        assert!(
            res.headers()
                .get(header::VARY)
                .unwrap()
                .to_str()
                .unwrap()
                .contains("Accept-Language")
        );

        let req = test::TestRequest::get().insert_header((header::IF_NONE_MATCH, "\"rev-1\""));
        let res = test::call_service(&app, req.to_request()).await;
        assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(CALLS.get(), 1, "304 must not run the handler");
    });
}
