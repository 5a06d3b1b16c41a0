//! Entity-tag rules: which strong tag a body gets, and when that tag must be weakened.
//!
//! ```
//! use actix_conditional::{ConditionalGet, etag::ETagHasher};
//! use actix_web::{App, HttpResponse, http::header, test, web};
//!
//! // Strong (RFC 9110 §8.8.1): a digest of the exact body bytes, quoted lowercase hex.
//! let strong = ETagHasher::Md5.etag(b"hello");
//! assert_eq!(strong, "\"5d41402abc4b2a76b9719d911017c592\"");
//!
//! // A client that accepts gzip may get other bytes, so the same tag goes out weak (§8.8.3.3).
//! # actix_web::rt::System::new().block_on(async {
//! let app = test::init_service(
//!     App::new()
//!         .wrap(ConditionalGet::new().hasher(ETagHasher::Md5))
//!         .route("/", web::get().to(|| async { HttpResponse::Ok().body("hello") })),
//! )
//! .await;
//! let req = test::TestRequest::get().insert_header((header::ACCEPT_ENCODING, "gzip"));
//! let res = test::call_service(&app, req.to_request()).await;
//! assert_eq!(res.headers().get(header::ETAG).unwrap(), "W/\"5d41402abc4b2a76b9719d911017c592\"");
//! # });
//! ```
//!
//! # The rules
//!
//! - **A body hash is a strong validator** (RFC 9110 §8.8.1): [`ETagHasher`] digests the exact
//!   body bytes, so the tag changes whenever the representation data does, and writes it as
//!   an `ETag` field value (RFC 9110 §8.8.3): `"` + lowercase hex + `"`.
//! - **One strong tag must not label two content-codings** (RFC 9110 §8.8.3.3): gzip and
//!   identity bytes are different representations. actix's `Compress` leaves `ETag` alone, so
//!   [`ConditionalGet`](crate::ConditionalGet) weakens a strong tag (`W/"…"`, as Django's
//!   `GZipMiddleware` and nginx do) when the request accepts a content-coding other than
//!   identity and the response is one `Compress` would encode (not 204 or 206, not already
//!   coded, not an image other than SVG, not video), and whenever the response already has a
//!   `Content-Encoding` other than identity. A weak tag still earns 304s (`If-None-Match`
//!   uses weak comparison, RFC 9110 §8.8.3.2) but never satisfies `If-Match` (strong
//!   comparison, RFC 9110 §13.1.1). Where nothing compresses,
//!   [`weaken_when_compressible(false)`](crate::ConditionalGet::weaken_when_compressible)
//!   keeps every tag strong.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, AcceptEncoding, Encoding, HeaderMap, HeaderValue};
use actix_web::mime::{self, Mime};
use actix_web::{HttpMessage, HttpRequest, HttpResponse};
use sha2::{Digest, Sha256};

use crate::preconditions::EntityTagRef;

/// The digest behind a body-hash ETag.
///
/// Every choice yields a strong validator (RFC 9110 §8.8.1) over the exact body bytes. The
/// output is lowercase hex, which never contains `,`, `"` or `\`, so the tags survive even
/// naive parsers downstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ETagHasher {
    /// XXH3-128 (32 hex digits), the default: several times faster than MD5. Not
    /// cryptographic; its 128 bits make an accidental collision negligible for change
    /// detection, but a client able to choose bodies could craft one. Pick
    /// [`Sha256`](Self::Sha256) if response bodies are attacker-controlled and an ETag
    /// collision would matter.
    #[default]
    Xxh3,
    /// MD5 (32 hex digits): byte-identical to Django's `ConditionalGetMiddleware` ETags, so
    /// clients and caches keep their validators when a service moves from Django. It is the
    /// slowest choice (many times the cost of XXH3 on a 32 KiB body; see `BENCHMARKS.md`):
    /// pick it for compatibility, not by default. On x86 and x86_64 it runs RustCrypto's
    /// assembly MD5, as fast as OpenSSL's; elsewhere the pure-Rust `md-5`.
    Md5,
    /// SHA-256 (64 hex digits).
    Sha256,
}

/// Largest tag: SHA-256's 64 hex digits plus the two quotes.
const MAX_TAG_LEN: usize = 66;

impl ETagHasher {
    /// The quoted tag for `body`, e.g. `"5d41402abc4b2a76b9719d911017c592"` for MD5 of `hello`.
    pub fn etag(self, body: &[u8]) -> HeaderValue {
        let mut buf = [0u8; MAX_TAG_LEN];
        let len = self.write_tag(body, &mut buf);
        HeaderValue::from_bytes(&buf[..len]).expect("a quoted hex digest is a valid header value")
    }

    /// Writes `"hex"` into `buf` and returns its length; no heap allocation.
    fn write_tag(self, body: &[u8], buf: &mut [u8; MAX_TAG_LEN]) -> usize {
        let hex_len = match self {
            Self::Xxh3 => write_hex(
                &xxhash_rust::xxh3::xxh3_128(body).to_be_bytes(),
                &mut buf[1..],
            ),
            Self::Md5 => write_hex(&crate::md5_digest::md5(body), &mut buf[1..]),
            Self::Sha256 => write_hex(&Sha256::digest(body), &mut buf[1..]),
        };
        buf[0] = b'"';
        buf[hex_len + 1] = b'"';
        hex_len + 2
    }
}

fn write_hex(digest: &[u8], out: &mut [u8]) -> usize {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, byte) in digest.iter().enumerate() {
        out[2 * i] = HEX[usize::from(byte >> 4)];
        out[2 * i + 1] = HEX[usize::from(byte & 0x0f)];
    }
    digest.len() * 2
}

/// Whether an outer actix `Compress` would encode this response: the client accepts a coding
/// and the response is one `Compress` encodes (same content-type rule as its default
/// predicate, not already coded, not 204/206). Erring towards "yes" only costs a weak tag.
pub(crate) fn may_be_compressed(req: &HttpRequest, response: &HttpResponse<()>) -> bool {
    request_accepts_coding(req) && encodable(response)
}

/// Whether `Compress` would encode this response for a client that accepts a coding: its
/// content type is one `Compress` encodes, it is not already coded, not 204/206.
pub(crate) fn encodable(response: &HttpResponse<()>) -> bool {
    encodable_parts(response.status(), response.headers())
}

/// [`encodable`] from a status and headers.
pub(crate) fn encodable_parts(status: StatusCode, headers: &HeaderMap) -> bool {
    status != StatusCode::NO_CONTENT
        && status != StatusCode::PARTIAL_CONTENT
        && !headers.contains_key(header::CONTENT_ENCODING)
        && compressible_content_type(headers.get(header::CONTENT_TYPE))
}

/// Whether the request's `Accept-Encoding` lets `Compress` pick a coding other than identity.
pub(crate) fn request_accepts_coding(req: &HttpRequest) -> bool {
    const CODINGS: [Encoding; 5] = [
        Encoding::brotli(),
        Encoding::gzip(),
        Encoding::deflate(),
        Encoding::zstd(),
        Encoding::identity(),
    ];
    // Cheapest test first: API clients without Accept-Encoding stop here, unparsed.
    req.headers().contains_key(header::ACCEPT_ENCODING)
        && req
            .get_header::<AcceptEncoding>()
            .and_then(|accept| accept.negotiate(CODINGS.iter()))
            .is_some_and(|coding| coding != Encoding::identity())
}

/// actix `Compress`'s default predicate: everything but images (SVG excepted) and video.
fn compressible_content_type(content_type: Option<&HeaderValue>) -> bool {
    let mime = content_type
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<Mime>().ok());
    match mime {
        Some(mime) if mime.type_() == mime::IMAGE => mime.subtype() == mime::SVG,
        Some(mime) if mime.type_() == mime::VIDEO => false,
        _ => true,
    }
}

/// Whether the response already carries a `Content-Encoding` other than identity.
pub(crate) fn is_content_coded(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|coding| !coding.as_bytes().eq_ignore_ascii_case(b"identity"))
}

/// RFC 9110 §8.8.3.3: a strong tag must not label two content-codings of one resource, so a
/// strong `ETag` becomes `W/` + the same opaque tag. Returns whether it did; weak and malformed
/// tags are left as they are.
pub(crate) fn weaken_etag(headers: &mut HeaderMap) -> bool {
    let weakened = headers
        .get(header::ETAG)
        .and_then(EntityTagRef::from_header)
        .filter(|tag| !tag.is_weak())
        .map(|tag| tag.weakened().to_header_value());
    let Some(weak) = weakened else {
        return false;
    };
    headers.insert(header::ETAG, weak);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_tag_matches_known_digest() {
        assert_eq!(
            ETagHasher::Md5.etag(b"hello"),
            "\"5d41402abc4b2a76b9719d911017c592\""
        );
    }

    #[test]
    fn sha256_tag_matches_known_digest() {
        assert_eq!(
            ETagHasher::Sha256.etag(b"hello"),
            "\"2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824\""
        );
    }

    #[test]
    fn xxh3_tag_is_32_lowercase_hex_digits() {
        let tag = ETagHasher::Xxh3.etag(b"hello");
        let text = tag.to_str().unwrap();
        assert_eq!(text.len(), 34);
        assert!(
            text[1..33]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(
            text,
            format!("\"{:032x}\"", xxhash_rust::xxh3::xxh3_128(b"hello"))
        );
    }

    #[test]
    fn different_bodies_get_different_tags() {
        for hasher in [ETagHasher::Xxh3, ETagHasher::Md5, ETagHasher::Sha256] {
            assert_ne!(hasher.etag(b"a"), hasher.etag(b"b"));
        }
    }

    fn headers_with_etag(etag: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ETAG, HeaderValue::from_static(etag));
        headers
    }

    #[test]
    fn weaken_etag_marks_a_strong_tag_weak_and_leaves_the_rest() {
        let mut headers = headers_with_etag("\"abc\"");
        assert!(weaken_etag(&mut headers));
        assert_eq!(headers.get(header::ETAG).unwrap(), "W/\"abc\"");

        for untouched in ["W/\"abc\"", "abc", "\"a b\""] {
            let mut headers = headers_with_etag(untouched);
            assert!(!weaken_etag(&mut headers), "{untouched}");
            assert_eq!(headers.get(header::ETAG).unwrap(), untouched);
        }
        assert!(!weaken_etag(&mut HeaderMap::new()));
    }

    #[test]
    fn request_accepts_coding_only_for_a_coding_other_than_identity() {
        let accepts = |value: Option<&'static str>| {
            let mut req = actix_web::test::TestRequest::get();
            if let Some(value) = value {
                req = req.insert_header((header::ACCEPT_ENCODING, value));
            }
            request_accepts_coding(&req.to_http_request())
        };
        assert!(accepts(Some("gzip")));
        assert!(accepts(Some("identity;q=0.5, br")));
        assert!(!accepts(None));
        assert!(!accepts(Some("identity")));
        assert!(!accepts(Some("gzip;q=0")));
    }

    #[test]
    fn compressible_content_types_follow_compress_default_predicate() {
        let compressible =
            |value: &'static str| compressible_content_type(Some(&HeaderValue::from_static(value)));
        assert!(compressible_content_type(None));
        assert!(compressible("application/json"));
        assert!(compressible("image/svg+xml"));
        assert!(!compressible("image/png"));
        assert!(!compressible("video/mp4"));
    }

    #[test]
    fn may_be_compressed_skips_204_206_and_coded_responses() {
        let req = actix_web::test::TestRequest::get()
            .insert_header((header::ACCEPT_ENCODING, "gzip"))
            .to_http_request();
        let plain = || HttpResponse::with_body(StatusCode::OK, ());
        assert!(may_be_compressed(&req, &plain()));
        for status in [StatusCode::NO_CONTENT, StatusCode::PARTIAL_CONTENT] {
            assert!(!may_be_compressed(
                &req,
                &HttpResponse::with_body(status, ())
            ));
        }
        let mut coded = plain();
        coded
            .headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        assert!(!may_be_compressed(&req, &coded));
        assert!(is_content_coded(coded.headers()));
        assert!(!is_content_coded(plain().headers()));
    }
}
