// `section` exists only on a sectioned cache's builder: on a TTL builder it does not compile.
use std::time::Duration;

use actix_conditional::response_cache::{ResponseCache, Section};
use actix_web::HttpRequest;

fn main() {
    let section = Section::new(
        "core",
        |_req: HttpRequest| async { Ok::<_, actix_web::Error>(String::from("1")) },
        |_req: HttpRequest| async { Ok::<_, actix_web::Error>(1) },
    );
    let _ = ResponseCache::ttl("c", Duration::from_secs(30))
        .section(section)
        .build();
}
