//! What the store holds: a `Send + Sync` snapshot of a response (never an `HttpResponse`,
//! which is `!Send`), with the times and revision that decide whether it is fresh.

use crate::condition::EarlyAnswer;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use actix_web::HttpResponse;
use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::http::StatusCode;
use actix_web::http::header::{
    AGE, CONNECTION, ETAG, HeaderMap, HeaderName, HeaderValue, IF_MATCH, IF_MODIFIED_SINCE,
    IF_NONE_MATCH, IF_UNMODIFIED_SINCE, LAST_MODIFIED, SET_COOKIE,
};
use bytes::Bytes;

use super::lifetime::{self, Window};
use super::status::{CACHE_STATUS, CacheStatus, X_CACHE, X_REVISION};
use crate::preconditions::{EntityTagRef, Precondition, Validators, evaluate_request};
use crate::{not_modified, preconditions};

/// Fields that belong to one connection (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
];

/// What one stored entry costs in memory beyond its key, body, header and revision bytes:
/// the `Arc<Entry>` and its struct, the header table's base, and the store's own per-entry
/// bookkeeping (for moka: its entry and entry-info records, deque nodes, hash-table bucket,
/// frequency-sketch share, the key's `Arc<str>` header).
///
/// Measured, not guessed: `tests/memory_budget.rs` (`per_entry_costs`, run with
/// `--nocapture`) fills a cache through a counting global allocator and divides its live
/// bytes by its entries, after churning it with twice as many evictions. A 2-byte body with
/// `Content-Type` and `ETag` costs about 1.5 KB; with 16 and 32 more headers, about 7.5 KB
/// and 12.5–13.5 KB (the header table grows by powers of two, and each value is a `Bytes`
/// with its own record); 400 more key bytes cost about 0.45 KB. These two constants are round
/// figures that keep every measured shape's weight at least 15 % above its cost, a margin
/// that also covers what `malloc` adds per allocation, which a live-byte count does not see.
pub(crate) const ENTRY_OVERHEAD: usize = 1024;

/// What one stored header line costs beyond its name and value bytes: its bucket in the
/// header table with the table's spare capacity, and the `Bytes` records of its name and
/// value. Measured with [`ENTRY_OVERHEAD`].
pub(crate) const HEADER_OVERHEAD: usize = 416;

/// Bytes a header line (or a varied request header kept with an entry) weighs.
fn header_weight(name: &HeaderName, value: Option<&HeaderValue>) -> usize {
    name.as_str().len() + value.map_or(0, HeaderValue::len) + HEADER_OVERHEAD
}

/// A response as stored: status, headers, the whole body, its validators.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    last_modified: Option<SystemTime>,
}

impl Snapshot {
    /// Takes the headers of `head` (minus the ones a cache must not replay) and `body`.
    // `body` is handed over, then copied to an exact-size buffer (see below).
    #[allow(clippy::needless_pass_by_value)]
    pub(crate) fn new(status: StatusCode, headers: &HeaderMap, body: Bytes) -> Self {
        // Hop-by-hop fields (RFC 9110 §7.6.1, RFC 9111 §3.1) describe one connection, not the
        // response: neither they nor the fields `Connection` names are stored.
        let named_by_connection: Vec<String> = headers
            .get_all(CONNECTION)
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(|name| name.trim().to_ascii_lowercase())
            .collect();
        let mut kept = HeaderMap::with_capacity(headers.len());
        for (name, value) in headers {
            // `Age`, `X-Cache` and `Cache-Status` are set per answer (a stored `Cache-Status`
            // would replay an inner cache's `fwd=miss` on every hit); `Set-Cookie` is never
            // shared.
            let ours = name == AGE || name == X_CACHE || name == CACHE_STATUS || name == SET_COOKIE;
            let hop_by_hop = HOP_BY_HOP.contains(&name.as_str())
                || named_by_connection.iter().any(|n| n == name.as_str());
            if !ours && !hop_by_hop {
                kept.append(name.clone(), value.clone());
            }
        }
        let last_modified = headers
            .get(LAST_MODIFIED)
            .and_then(|value| preconditions::parse_http_date(value.as_bytes()));
        // An exact-size copy: a `Bytes` can pin a larger allocation than its length (a
        // `Vec`'s spare capacity, the whole buffer it was sliced from), which the budget would
        // not see. One copy per store, never per hit.
        let body = if body.is_empty() {
            Bytes::new()
        } else {
            Bytes::copy_from_slice(&body)
        };
        Self {
            status,
            headers: kept,
            body,
            last_modified,
        }
    }

    /// An empty 500, what waiters get when the build they waited for panicked.
    pub(crate) fn internal_error() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            &HeaderMap::new(),
            Bytes::new(),
        )
    }

    /// The stored ETag, if any.
    pub(crate) fn etag(&self) -> Option<&HeaderValue> {
        self.headers.get(ETAG)
    }

    /// Bytes this snapshot costs in the store's byte budget: body and header lines (each
    /// with [`HEADER_OVERHEAD`]).
    pub(crate) fn weight(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(name, value)| header_weight(name, Some(value)))
            .sum();
        self.body.len() + headers
    }

    /// A response replaying this snapshot. The body is a reference-counted `Bytes`: no copy.
    pub(crate) fn to_response(&self) -> HttpResponse {
        let mut res = HttpResponse::with_body(self.status, BoxBody::new(self.body.clone()));
        // Appended into the response's own (pooled, empty) map rather than replacing it with
        // a clone: no table to allocate and free on every hit.
        let headers = res.headers_mut();
        for (name, value) in &self.headers {
            headers.append(name.clone(), value.clone());
        }
        res
    }

    /// RFC 9110 §13.2.2 against this snapshot's validators; only a 200 can become a 304.
    pub(crate) fn precondition(
        &self,
        method: &actix_web::http::Method,
        req: &HeaderMap,
    ) -> Precondition {
        // No conditional header: nothing to evaluate (§13.2.2), and most hits carry none, so
        // they skip parsing the stored ETag.
        let conditional = [
            IF_MATCH,
            IF_NONE_MATCH,
            IF_MODIFIED_SINCE,
            IF_UNMODIFIED_SINCE,
        ]
        .iter()
        .any(|name| req.contains_key(name));
        if self.status != StatusCode::OK || !conditional {
            return Precondition::Proceed;
        }
        let etag = self.etag().and_then(|v| EntityTagRef::parse(v.as_bytes()));
        let validators = Validators::new(etag, self.last_modified).exists(true);
        evaluate_request(method, req, &validators)
    }
}

/// A stored response and when it was built, on the cache's clock (offsets from its origin).
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) snapshot: Snapshot,
    /// When the bytes were built.
    pub(crate) stored_at: Duration,
    /// When the bytes were last known current (revision mode: the last equal revision).
    verified_at_nanos: AtomicU64,
    /// The revision fingerprint the bytes were built under (revision mode).
    pub(crate) revision: Option<Box<str>>,
    /// The request's values of the headers the response varies on, as built.
    pub(crate) vary: Vec<(HeaderName, Option<HeaderValue>)>,
    /// Per-section revision and bytes (sectioned revision mode).
    pub(crate) sections: Vec<SectionPart>,
    /// The cache's invalidation generation when the build started.
    pub(crate) generation: u64,
}

/// One section of a sectioned response, as built.
#[derive(Debug, Clone)]
pub(crate) struct SectionPart {
    pub(crate) revision: Box<str>,
    pub(crate) json: Bytes,
    /// The section's invalidation counter when it was built: an older one than the current
    /// means an explicit invalidation made it out of date (read-your-writes).
    pub(crate) generation: u64,
}

impl Entry {
    pub(crate) fn new(
        snapshot: Snapshot,
        now: Duration,
        revision: Option<Box<str>>,
        vary: Vec<(HeaderName, Option<HeaderValue>)>,
        sections: Vec<SectionPart>,
        generation: u64,
    ) -> Self {
        Self {
            snapshot,
            stored_at: now,
            verified_at_nanos: AtomicU64::new(nanos(now)),
            revision,
            vary,
            sections,
            generation,
        }
    }

    /// The same response and facts, built (and last verified) at `stored_at`: what a tier
    /// keeps, and hands back on another cache's clock.
    pub(crate) fn copy_built_at(&self, stored_at: Duration) -> Self {
        Self::new(
            self.snapshot.clone(),
            stored_at,
            self.revision.clone(),
            self.vary.clone(),
            self.sections.clone(),
            self.generation,
        )
    }

    /// When the bytes were last known to be current.
    pub(crate) fn verified_at(&self) -> Duration {
        Duration::from_nanos(self.verified_at_nanos.load(Ordering::Relaxed))
    }

    /// Records that the bytes were confirmed current at `now`.
    pub(crate) fn verified(&self, now: Duration) {
        self.verified_at_nanos
            .fetch_max(nanos(now), Ordering::Relaxed);
    }

    /// The `Age` to send (RFC 9111 §5.1: time since the response was generated *or validated*
    /// at the origin, which this cache is part of): seconds since the bytes were last known
    /// current, so a `hit-revision` just checked is `0`. Honest for stale bytes too: what
    /// makes them stale downstream is the lifetime they declare ([`lifetime`](super::lifetime)).
    pub(crate) fn age(&self, now: Duration) -> u64 {
        now.saturating_sub(self.verified_at()).as_secs()
    }

    /// Byte-budget weight without the key (the store adds it): body, headers, revision,
    /// sections, the varied request headers kept, and [`ENTRY_OVERHEAD`]; capped to what
    /// moka's `u32` weigher holds.
    pub(crate) fn weight(&self) -> u32 {
        let sections: usize = self
            .sections
            .iter()
            .map(|s| s.json.len() + s.revision.len() + HEADER_OVERHEAD)
            .sum();
        let vary: usize = self
            .vary
            .iter()
            .map(|(name, value)| header_weight(name, value.as_ref()))
            .sum();
        let revision = self.revision.as_deref().map_or(0, str::len);
        let weight = ENTRY_OVERHEAD + self.snapshot.weight() + sections + vary + revision;
        u32::try_from(weight).unwrap_or(u32::MAX)
    }

    /// The response for this entry, with its cache status, `Age`, a lifetime that covers it
    /// (`window`: what is left of it here), and preconditions applied.
    pub(crate) fn respond_to(
        &self,
        method: &actix_web::http::Method,
        req_headers: &HeaderMap,
        status: CacheStatus,
        now: Duration,
        window: Window,
    ) -> HttpResponse {
        let mut res = self.snapshot.to_response();
        status.apply(&mut res);
        let headers = res.headers_mut();
        let age = self.age(now);
        headers.insert(AGE, HeaderValue::from(age));
        lifetime::fit(headers, age, window);
        if let Some(revision) = self.revision.as_deref()
            && let Ok(value) = HeaderValue::from_str(revision)
        {
            headers.insert(X_REVISION, value);
        }
        match self.snapshot.precondition(method, req_headers) {
            Precondition::Proceed => res,
            Precondition::NotModified => {
                // What the 200 was, for `ConditionalGet` outside: the 304 has no Content-Type
                // to tell it whether to weaken the tag and vary (RFC 9110 §15.4.5).
                let shape = EarlyAnswer::of(res.status(), res.headers());
                let mut res = not_modified::not_modified(res).map_into_boxed_body();
                res.extensions_mut().insert(shape);
                res
            }
            Precondition::PreconditionFailed => {
                let mut failed = not_modified::precondition_failed();
                status.apply(&mut failed);
                failed
            }
        }
    }
}

fn nanos(at: Duration) -> u64 {
    u64::try_from(at.as_nanos()).unwrap_or(u64::MAX)
}

/// A handler's response, with its body either fully in memory or left untouched.
#[derive(Debug)]
pub(crate) enum Captured {
    /// The whole body, within the size limit.
    Buffered(HttpResponse<()>, Bytes),
    /// A streaming or oversized body, handed back as it was: never dropped, never truncated.
    Passthrough(HttpResponse),
}

/// Takes the body of `res` into memory if it is known to fit in `limit` bytes.
pub(crate) async fn capture(res: HttpResponse, limit: usize) -> Captured {
    let fits = match res.body().size() {
        BodySize::None => true,
        BodySize::Sized(len) => usize::try_from(len).is_ok_and(|len| len <= limit),
        // Unknown length (SSE, `streaming()`): never buffered, as Django skips streaming.
        BodySize::Stream => false,
    };
    if !fits {
        return Captured::Passthrough(res);
    }
    let (head, body) = res.into_parts();
    match body.try_into_bytes() {
        Ok(bytes) => Captured::Buffered(head, bytes),
        // A sized stream (actix-files' `SizedStream`): read it, since its length is known.
        Err(body) => match actix_web::body::to_bytes_limited(body, limit).await {
            Ok(Ok(bytes)) => Captured::Buffered(head, bytes),
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "response cache: body stream failed while buffering");
                Captured::Passthrough(HttpResponse::InternalServerError().finish())
            }
            Err(_) => {
                // Unreachable for an honest `Sized(n) <= limit` body; if a body lies about its
                // size, the bytes read so far are gone, so answer with an error, not a
                // truncated body.
                tracing::warn!("response cache: body larger than its declared size");
                Captured::Passthrough(HttpResponse::InternalServerError().finish())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_fields_and_our_own_are_not_stored() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "close, x-conn-token"),
            ("keep-alive", "timeout=5"),
            ("x-conn-token", "1"),
            ("transfer-encoding", "chunked"),
            ("set-cookie", "s=1"),
            ("age", "7"),
            ("x-cache", "hit"),
            ("content-type", "application/json"),
            ("cache-control", "max-age=60, s-maxage=90"),
        ] {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        let snapshot = Snapshot::new(StatusCode::OK, &headers, Bytes::from_static(b"{}"));
        let kept: Vec<&str> = snapshot.headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(kept.len(), 2, "{kept:?}");
        assert!(kept.contains(&"content-type") && kept.contains(&"cache-control"));
    }
}
