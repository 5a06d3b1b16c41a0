//! The [`ConditionalGet`] middleware: body-hash ETags, 304 Not Modified and 412 Precondition
//! Failed for GET and HEAD.
//!
//! ```
//! use actix_conditional::ConditionalGet;
//! use actix_web::{App, HttpResponse, test, web, http::{StatusCode, header}};
//!
//! # actix_web::rt::System::new().block_on(async {
//! let app = test::init_service(
//!     App::new()
//!         .wrap(ConditionalGet::default())
//!         .route("/", web::get().to(|| async { HttpResponse::Ok().body("hello") })),
//! )
//! .await;
//!
//! let res = test::call_service(&app, test::TestRequest::get().to_request()).await;
//! assert_eq!(res.status(), StatusCode::OK);
//! let etag = res.headers().get(header::ETAG).unwrap().clone();
//!
//! let req = test::TestRequest::get()
//!     .insert_header((header::IF_NONE_MATCH, etag.clone()))
//!     .to_request();
//! let res = test::call_service(&app, req).await;
//! assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
//! assert_eq!(res.headers().get(header::ETAG), Some(&etag));
//! # });
//! ```

mod middleware;

pub use self::middleware::{
    ConditionalGet, ConditionalGetFuture, ConditionalGetMiddleware, DEFAULT_MAX_BODY_BYTES,
};
// The middleware's `hasher` setting; the type and its rules live in `crate::etag`.
pub use crate::etag::ETagHasher;
