//! What a handler's 200s look like to compression, so that a 304 or 412 decided before the
//! handler runs carries the `ETag` form and `Vary` its 200 would (RFC 9110 §15.4.5).

use std::sync::atomic::{AtomicU8, Ordering};

use actix_web::http::StatusCode;
use actix_web::http::header::HeaderMap;

use crate::etag::{encodable_parts, is_content_coded};

/// How a handler's 200s meet an outer `Compress`, learnt from the last one it answered.
///
/// A 304 (or a GET's 412) decided from validators has no body and no `Content-Type`: nothing
/// in it says whether its 200 would be compressed. [`ConditionalGet`](crate::ConditionalGet)
/// weakens the 200's tag and adds `Vary: accept-encoding` only when `Compress` would encode
/// it (not for `image/png`, a 204, or a body already coded), and the 304 must match (RFC 9110
/// §15.4.5: same `ETag`, same `Vary`). `#[etag_cached]` keeps one of these per handler
/// ([`HandlerPolicy::respond_learning`](super::HandlerPolicy::respond_learning)): each 200
/// records its shape, each early answer is labelled with it. Until the handler's first 200 in
/// this process, early answers are treated as compressible, which is what JSON APIs are.
#[derive(Debug, Default)]
pub struct ResponseShape(AtomicU8);

/// Not seen yet.
const UNKNOWN: u8 = 0;
/// `Compress` would encode it (for a client that accepts a coding).
const ENCODABLE: u8 = 1;
/// `Compress` leaves it alone.
const PLAIN: u8 = 2;
/// Already content-coded by the handler.
const CODED: u8 = 3;

impl ResponseShape {
    /// Nothing learnt yet.
    pub const fn new() -> Self {
        Self(AtomicU8::new(UNKNOWN))
    }

    /// Learns from a 200 the handler answered.
    pub fn record(&self, status: StatusCode, headers: &HeaderMap) {
        if status != StatusCode::OK {
            return;
        }
        // Relaxed: a hint about headers, not a synchronisation point.
        self.0
            .store(EarlyAnswer::of(status, headers).0, Ordering::Relaxed);
    }

    /// The label an early answer carries.
    pub(crate) fn hint(&self) -> EarlyAnswer {
        EarlyAnswer(self.0.load(Ordering::Relaxed))
    }
}

/// On a 304 or 412 answered before the handler: what its 200 would have looked like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EarlyAnswer(u8);

impl EarlyAnswer {
    /// Not learnt: assumed encodable, as JSON is.
    pub(crate) const UNKNOWN: Self = Self(UNKNOWN);

    /// The label for an answer standing in for this 200 (a response cache's 304 knows it).
    pub(crate) fn of(status: StatusCode, headers: &HeaderMap) -> Self {
        Self(if is_content_coded(headers) {
            CODED
        } else if encodable_parts(status, headers) {
            ENCODABLE
        } else {
            PLAIN
        })
    }

    /// Whether `Compress` would encode the 200 for a client that accepts a coding.
    pub(crate) fn encodable(self) -> bool {
        matches!(self.0, UNKNOWN | ENCODABLE)
    }

    /// Whether the 200 is content-coded whatever the client accepts.
    pub(crate) fn coded(self) -> bool {
        self.0 == CODED
    }
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{self, HeaderValue};

    use super::*;

    fn shape_of(content_type: &'static str, coding: Option<&'static str>) -> EarlyAnswer {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        if let Some(coding) = coding {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(coding));
        }
        let shape = ResponseShape::new();
        shape.record(StatusCode::OK, &headers);
        shape.hint()
    }

    #[test]
    fn learns_from_200s_only() {
        assert_eq!(ResponseShape::new().hint(), EarlyAnswer::UNKNOWN);
        assert!(shape_of("application/json", None).encodable());
        let png = shape_of("image/png", None);
        assert!(!png.encodable() && !png.coded());
        let coded = shape_of("application/json", Some("br"));
        assert!(!coded.encodable() && coded.coded());

        let shape = ResponseShape::new();
        shape.record(StatusCode::NOT_FOUND, &HeaderMap::new());
        assert_eq!(shape.hint(), EarlyAnswer::UNKNOWN);
    }
}
