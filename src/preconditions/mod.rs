//! RFC 9110 §13 conditional requests: parse the request's preconditions and decide.
//!
//! This module is pure: it needs a request head and the resource's validators, no runtime.
//! The [`ConditionalGet`](crate::ConditionalGet) middleware calls it after the handler (with
//! the response's validators), and handler-level validators call it before the handler.
//!
//! ```
//! use actix_conditional::preconditions::{EntityTagRef, Precondition, Validators, evaluate_preconditions};
//! use actix_web::http::{Method, header::{HeaderValue, IF_NONE_MATCH, IF_MATCH}};
//! use actix_web::dev::RequestHead;
//!
//! let current = EntityTagRef::parse(b"\"v2\"").unwrap();
//! let validators = Validators::new(Some(current), None);
//!
//! // A client that already holds "v2" (weakly, through a compressing proxy) gets a 304.
//! let mut get = RequestHead::default();
//! get.headers.insert(IF_NONE_MATCH, HeaderValue::from_static("\"v1\", W/\"v2\""));
//! assert_eq!(evaluate_preconditions(&get, &validators), Precondition::NotModified);
//!
//! // A write based on "v1" is refused: lost-update protection.
//! let mut put = RequestHead::default();
//! put.method = Method::PUT;
//! put.headers.insert(IF_MATCH, HeaderValue::from_static("\"v1\""));
//! assert_eq!(evaluate_preconditions(&put, &validators), Precondition::PreconditionFailed);
//! ```

mod entity_tag;
mod http_date;

use std::time::SystemTime;

use actix_web::dev::RequestHead;
use actix_web::http::Method;
use actix_web::http::header::{
    HeaderMap, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_UNMODIFIED_SINCE,
};

pub use self::entity_tag::{
    EntityTagList, EntityTagMembers, EntityTagRef, MAX_TAG_LIST_BYTES, join_field_lines,
};
pub(crate) use self::http_date::single_date;
pub use self::http_date::{parse_http_date, truncate_to_seconds};

/// The outcome of evaluating a request's preconditions (RFC 9110 §13.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Perform the method, or keep the response the handler produced.
    Proceed,
    /// Answer 304 Not Modified (only ever for GET and HEAD).
    NotModified,
    /// Answer 412 Precondition Failed.
    PreconditionFailed,
}

/// What the server knows about the selected representation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validators<'a> {
    etag: Option<EntityTagRef<'a>>,
    last_modified: Option<u64>,
    exists: bool,
}

impl<'a> Validators<'a> {
    /// The resource's entity-tag and modification time.
    ///
    /// The resource counts as existing (for `If-Match: *` and `If-None-Match: *`) when either
    /// validator is known, which is how Django's `@condition` models a missing resource; use
    /// [`exists`](Self::exists) to say otherwise. The time is truncated to whole seconds.
    pub fn new(etag: Option<EntityTagRef<'a>>, last_modified: Option<SystemTime>) -> Self {
        Self {
            etag,
            last_modified: last_modified.map(http_date::unix_seconds),
            exists: etag.is_some() || last_modified.is_some(),
        }
    }

    /// Overrides whether a current representation exists. A 2xx response from a handler always
    /// is one, whether or not it carries validators.
    #[must_use]
    pub fn exists(mut self, exists: bool) -> Self {
        self.exists = exists;
        self
    }

    /// The entity-tag, if any.
    pub fn etag(&self) -> Option<EntityTagRef<'a>> {
        self.etag
    }
}

/// Evaluates `If-Match`, `If-Unmodified-Since`, `If-None-Match` and `If-Modified-Since` in the
/// order of RFC 9110 §13.2.2.
///
/// Which header is *present* decides the path, not whether its value is valid: a present but
/// malformed `If-Match` fails closed (412) and a present `If-None-Match` suppresses
/// `If-Modified-Since` even if none of its members parse. Invalid dates are ignored (§13.1.3).
/// CONNECT, OPTIONS and TRACE ignore preconditions (§13.2.1). The caller applies the other
/// half of §13.2.1: preconditions only apply when the unconditional response would be 2xx.
pub fn evaluate_preconditions(head: &RequestHead, validators: &Validators<'_>) -> Precondition {
    evaluate_request(&head.method, &head.headers, validators)
}

/// [`evaluate_preconditions`] over a method and headers.
pub fn evaluate_request(
    method: &Method,
    headers: &HeaderMap,
    validators: &Validators<'_>,
) -> Precondition {
    if matches!(*method, Method::CONNECT | Method::OPTIONS | Method::TRACE) {
        return Precondition::Proceed;
    }
    let is_get_or_head = matches!(*method, Method::GET | Method::HEAD);

    // Step 1: If-Match, strong comparison (§13.1.1). Step 2 only when If-Match is absent.
    let if_match = join_field_lines(headers.get_all(IF_MATCH));
    if let Some(list) = if_match.as_deref().and_then(EntityTagList::parse) {
        if !if_match_passes(list, validators) {
            return Precondition::PreconditionFailed;
        }
    } else if let (Some(date), Some(modified)) = (
        http_date::single_date(headers.get_all(IF_UNMODIFIED_SINCE)),
        validators.last_modified,
    ) {
        // Step 2: If-Unmodified-Since (§13.1.4). With no Last-Modified the header is ignored,
        // as the RFC says; Django, nginx and `send` answer 412 there instead.
        if modified > date {
            return Precondition::PreconditionFailed;
        }
    }

    // Step 3: If-None-Match, weak comparison (§13.1.2). Step 4 only when it is absent.
    let if_none_match = join_field_lines(headers.get_all(IF_NONE_MATCH));
    if let Some(list) = if_none_match.as_deref().and_then(EntityTagList::parse) {
        return if none_match_passes(list, validators) {
            Precondition::Proceed
        } else if is_get_or_head {
            Precondition::NotModified
        } else {
            Precondition::PreconditionFailed
        };
    }

    // Step 4: If-Modified-Since, GET and HEAD only (§13.1.3).
    if is_get_or_head
        && let Some(date) = http_date::single_date(headers.get_all(IF_MODIFIED_SINCE))
        && let Some(modified) = validators.last_modified
        && modified <= date
    {
        return Precondition::NotModified;
    }

    Precondition::Proceed
}

/// §13.1.1: true if `*` and the resource exists, or some member strongly matches the etag.
/// (An empty or whitespace-only value counts as an absent header, as Go and Django treat it.)
fn if_match_passes(list: EntityTagList<'_>, validators: &Validators<'_>) -> bool {
    match list {
        EntityTagList::Any => validators.exists,
        EntityTagList::Tags(mut members) => validators
            .etag
            .is_some_and(|current| members.any(|tag| tag.strong_eq(&current))),
        // Fail closed: a write must not proceed on a condition we did not check.
        EntityTagList::TooLarge => false,
    }
}

/// §13.1.2: false if `*` and the resource exists, or some member weakly matches the etag.
fn none_match_passes(list: EntityTagList<'_>, validators: &Validators<'_>) -> bool {
    match list {
        EntityTagList::Any => !validators.exists,
        EntityTagList::Tags(mut members) => !validators
            .etag
            .is_some_and(|current| members.any(|tag| tag.weak_eq(&current))),
        // Not examined: the full response is always a correct answer.
        EntityTagList::TooLarge => true,
    }
}

#[cfg(test)]
mod tests;
