//! Building the 304 Not Modified and 412 Precondition Failed responses.
//!
//! A 304 is the 200 it replaces minus its content (RFC 9110 §15.4.5): it MUST keep
//! `Cache-Control`, `Content-Location`, `Date`, `ETag`, `Expires` and `Vary`, because caches
//! refresh their stored headers from it (RFC 9111 §4.3.4), and it keeps every other header
//! too (`Last-Modified`, each `Set-Cookie` line, CORS and security headers), as Go and nginx
//! do. It drops the representation metadata it cannot vouch for and the body.
//!
//! ```
//! use actix_conditional::not_modified::not_modified;
//! use actix_web::{HttpResponse, body::{BodySize, MessageBody}, http::{StatusCode, header}};
//!
//! let ok = HttpResponse::Ok()
//!     .insert_header((header::ETAG, "\"v1\""))
//!     .insert_header((header::CACHE_CONTROL, "max-age=60"))
//!     .append_header((header::SET_COOKIE, "a=1"))
//!     .append_header((header::SET_COOKIE, "b=2"))
//!     .content_type("application/json")
//!     .body("{\"hello\":\"world\"}");
//!
//! let res = not_modified(ok);
//! assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
//! assert_eq!(res.headers().get(header::ETAG).unwrap(), "\"v1\"");
//! assert_eq!(res.headers().get(header::CACHE_CONTROL).unwrap(), "max-age=60");
//! assert_eq!(res.headers().get_all(header::SET_COOKIE).count(), 2);
//! assert!(!res.headers().contains_key(header::CONTENT_TYPE));
//! assert_eq!(res.body().size(), BodySize::None); // no `Content-Length: 0` on the wire
//! ```

use actix_web::HttpResponse;
use actix_web::body::None as NoBody;
use actix_web::http::StatusCode;
use actix_web::http::header::{
    ACCEPT_RANGES, CONTENT_ENCODING, CONTENT_LANGUAGE, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE,
    HeaderName, TRANSFER_ENCODING,
};

/// Representation metadata a 304 SHOULD NOT carry (RFC 9110 §15.4.5).
///
/// `Content-Length` goes too: actix writes no length for a 304 body but keeps one a handler
/// set by hand, and a length that differs from the 200's would be wrong.
pub const REPRESENTATION_HEADERS: [HeaderName; 7] = [
    CONTENT_TYPE,
    CONTENT_LENGTH,
    CONTENT_ENCODING,
    CONTENT_LANGUAGE,
    CONTENT_RANGE,
    TRANSFER_ENCODING,
    ACCEPT_RANGES,
];

/// Turns the response a GET would have produced into its 304.
///
/// The body is dropped unread and replaced by [`actix_web::body::None`], so no
/// `Content-Length: 0` is sent either.
pub fn not_modified<B>(response: HttpResponse<B>) -> HttpResponse<NoBody> {
    let mut response = response.set_body(NoBody::new());
    *response.status_mut() = StatusCode::NOT_MODIFIED;
    let headers = response.headers_mut();
    for name in &REPRESENTATION_HEADERS {
        headers.remove(name);
    }
    response
}

/// An empty 412 Precondition Failed, as Django's `get_conditional_response` builds it.
///
/// It carries no representation headers and an empty body (`Content-Length: 0`, so a
/// keep-alive client knows where it ends). [`ConditionalGet`](crate::ConditionalGet) sends it
/// as it is (Django's `ConditionalGetMiddleware` does too); validators checked before the
/// handler add their `ETag` and `Last-Modified` to it on GET and HEAD, as Django's
/// `@condition` does ([`RequestValidators::check`](crate::condition::RequestValidators::check)).
pub fn precondition_failed() -> HttpResponse {
    HttpResponse::PreconditionFailed().finish()
}

#[cfg(test)]
mod tests {
    use actix_web::body::{BodySize, MessageBody};
    use actix_web::http::header::{self, HeaderValue};

    use super::*;

    #[test]
    fn not_modified_keeps_the_headers_caches_refresh_from() {
        let kept = [
            (header::CACHE_CONTROL, "max-age=60"),
            (header::CONTENT_LOCATION, "/items/1"),
            (header::DATE, "Sun, 06 Nov 1994 08:49:37 GMT"),
            (header::ETAG, "\"v1\""),
            (header::EXPIRES, "Sun, 06 Nov 1994 08:50:37 GMT"),
            (header::LAST_MODIFIED, "Sun, 06 Nov 1994 08:00:00 GMT"),
            (header::VARY, "Accept-Encoding"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ];
        let mut ok = HttpResponse::Ok();
        for (name, value) in &kept {
            ok.insert_header((name.clone(), *value));
        }
        let res = not_modified(ok.body("x"));
        for (name, value) in &kept {
            assert_eq!(res.headers().get(name).unwrap(), value, "{name}");
        }
    }

    #[test]
    fn not_modified_drops_representation_metadata_and_body() {
        let mut ok = HttpResponse::Ok();
        for name in &REPRESENTATION_HEADERS {
            ok.insert_header((name.clone(), "x"));
        }
        let res = not_modified(ok.body("payload"));
        for name in &REPRESENTATION_HEADERS {
            assert!(!res.headers().contains_key(name), "{name}");
        }
        assert_eq!(res.body().size(), BodySize::None);
    }

    #[test]
    fn every_set_cookie_line_survives_separately() {
        let ok = HttpResponse::Ok()
            .append_header((header::SET_COOKIE, "a=1; Path=/"))
            .append_header((header::SET_COOKIE, "b=2, c; HttpOnly"))
            .finish();
        let res = not_modified(ok);
        let cookies: Vec<&HeaderValue> = res.headers().get_all(header::SET_COOKIE).collect();
        assert_eq!(cookies, ["a=1; Path=/", "b=2, c; HttpOnly"]);
    }

    #[test]
    fn precondition_failed_is_empty() {
        let res = precondition_failed();
        assert_eq!(res.status(), StatusCode::PRECONDITION_FAILED);
        assert!(res.headers().is_empty());
        assert_eq!(res.body().size(), BodySize::Sized(0));
    }
}
