//! Conditional writes as compare-and-set: what the preconditions were checked against, handed
//! to the handler, and the 412 for a write that finds the resource changed since.

use std::fmt;
use std::time::SystemTime;

use actix_web::http::StatusCode;
use actix_web::http::header::{EntityTag, IF_MATCH, IF_UNMODIFIED_SINCE};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, ResponseError};

use crate::not_modified::precondition_failed;
use crate::preconditions::{EntityTagList, join_field_lines, single_date};

/// The condition a write must still meet when it is applied: what the request's `If-Match`
/// or `If-Unmodified-Since` was checked against (RFC 9110 §13.2.2, steps 1 and 2).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WriteCondition {
    /// `If-Match: *`: the resource must still exist.
    Exists,
    /// `If-Match` listed this tag, the validator's current one: the write applies only if it
    /// is still current (compare-and-set on the version it names).
    ETag(EntityTag),
    /// `If-Unmodified-Since` (without `If-Match`) held against this modification time: the
    /// write applies only if the resource was not modified after it.
    UnmodifiedSince(SystemTime),
}

/// What the preconditions of a request were checked against, for the handler that runs after
/// them: [`HandlerPolicy::respond`](super::HandlerPolicy::respond) (so every
/// `#[etag_cached]` handler with a validator) stores it in the request's extensions before
/// running the handler; read it with [`Validated::of`].
///
/// ```
/// use actix_conditional::CachePolicy;
/// use actix_conditional::condition::{HandlerPolicy, RequestValidators, Validated};
/// use actix_web::{HttpRequest, HttpResponse, ResponseError, http::{StatusCode, header}};
/// use actix_web::{test, web, App};
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// const POLICY: HandlerPolicy = HandlerPolicy::new(CachePolicy::revalidate(0));
/// static VERSION: AtomicU64 = AtomicU64::new(7);
///
/// async fn rename(req: HttpRequest) -> HttpResponse {
///     let current = format!("v{}", VERSION.load(Ordering::SeqCst));
///     let validators = RequestValidators::new().etag(Some(current));
///     POLICY.respond(&req, validators, async {
///         let validated = Validated::of(&req).expect("stored by `respond`");
///         let expected: u64 = validated.expected_etag().map_or(0, |tag| tag.tag()[1..].parse().unwrap());
///         // Another write lands between the check and this one.
///         VERSION.fetch_add(1, Ordering::SeqCst);
///         // The write itself is conditional: in SQL,
///         // `UPDATE … SET version = version + 1 WHERE id = ? AND version = ?`.
///         let changed = VERSION
///             .compare_exchange(expected, expected + 1, Ordering::SeqCst, Ordering::SeqCst)
///             .map_or(0, |_| 1);
///         match validated.ensure_written(changed) {
///             Ok(()) => HttpResponse::Ok().finish(),
///             Err(conflict) => conflict.error_response(),
///         }
///     })
///     .await
/// }
///
/// # actix_web::rt::System::new().block_on(async {
/// let app = test::init_service(App::new().route("/", web::put().to(rename))).await;
/// let req = test::TestRequest::put().insert_header((header::IF_MATCH, "\"v7\""));
/// let res = test::call_service(&app, req.to_request()).await;
/// // The pre-check passed ("v7" was current), the write lost the race: the same 412.
/// assert_eq!(res.status(), StatusCode::PRECONDITION_FAILED);
/// assert_eq!(res.headers().get(header::CACHE_CONTROL).unwrap(), "no-cache, no-store, must-revalidate");
/// # });
/// ```
///
/// # Why a pre-check alone is a race
///
/// [`RequestValidators::check`](super::RequestValidators::check) compares `If-Match` with the
/// tag the validator computed *now*, then the handler writes *later*. Two requests carrying
/// the same `If-Match` can both pass the check before either writes, and both writes then
/// succeed: the lost update `If-Match` exists to prevent (RFC 9110 §13.1.1, §13.2.1: the
/// condition must hold "when the method is applied"). Only the store can decide atomically,
/// so the handler makes the write itself conditional on what was validated
/// (`UPDATE … WHERE id = ? AND version = ?`, a Redis `WATCH`, an S3 `If-Match`) and, when
/// it changed nothing, answers exactly what the check would have: [`Validated::ensure_written`]
/// gives the [`PreconditionFailed`] error whose response is that 412.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validated {
    etag: Option<EntityTag>,
    last_modified: Option<SystemTime>,
    condition: Option<WriteCondition>,
}

impl Validated {
    /// What `req` was validated against, once its preconditions passed; `None` if no
    /// [`HandlerPolicy::respond`](super::HandlerPolicy::respond) (or
    /// [`RequestValidators::validated`](super::RequestValidators::validated) stored by hand)
    /// checked it.
    ///
    /// Not an extractor on purpose: extractors run before `#[etag_cached]` evaluates the
    /// validators, so one would always find nothing.
    pub fn of(req: &HttpRequest) -> Option<Self> {
        req.extensions().get::<Self>().cloned()
    }

    /// The result of a check that passed, for `req` and these validators.
    pub(crate) fn new(
        req: &HttpRequest,
        etag: Option<&EntityTag>,
        last_modified: Option<SystemTime>,
    ) -> Self {
        let headers = req.headers();
        let if_match = join_field_lines(headers.get_all(IF_MATCH));
        // The same reading of the headers as `evaluate_request`: If-Match first, and
        // If-Unmodified-Since only when it is absent (RFC 9110 §13.2.2).
        let condition = match if_match.as_deref().and_then(EntityTagList::parse) {
            Some(EntityTagList::Any) => Some(WriteCondition::Exists),
            // The check passed, so the current tag matched one of the listed ones.
            Some(EntityTagList::Tags(_) | EntityTagList::TooLarge) => {
                etag.cloned().map(WriteCondition::ETag)
            }
            None => single_date(headers.get_all(IF_UNMODIFIED_SINCE))
                .and(last_modified)
                .map(WriteCondition::UnmodifiedSince),
        };
        Self {
            etag: etag.cloned(),
            last_modified,
            condition,
        }
    }

    /// The validator's entity-tag, as the check saw it.
    pub fn etag(&self) -> Option<&EntityTag> {
        self.etag.as_ref()
    }

    /// The validator's modification time, as the check saw it.
    pub fn last_modified(&self) -> Option<SystemTime> {
        self.last_modified
    }

    /// The condition the write must still meet, if the request had one.
    pub fn condition(&self) -> Option<&WriteCondition> {
        self.condition.as_ref()
    }

    /// The tag the write must compare-and-set against: `Some` when `If-Match` listed tags (the
    /// validator's current one matched), `None` without `If-Match` or for `If-Match: *`.
    pub fn expected_etag(&self) -> Option<&EntityTag> {
        match &self.condition {
            Some(WriteCondition::ETag(tag)) => Some(tag),
            _ => None,
        }
    }

    /// Whether the write is conditional (`If-Match` or `If-Unmodified-Since` was evaluated).
    pub fn is_conditional(&self) -> bool {
        self.condition.is_some()
    }

    /// Turns a conditional write that changed nothing (`rows_changed == 0`: the version moved,
    /// or the resource went away, after the check) into [`PreconditionFailed`], the 412 the
    /// check itself gives (RFC 9110 §13.1.1). An unconditional write is never a conflict:
    /// whether changing nothing is a 404 is the handler's call.
    pub fn ensure_written(&self, rows_changed: usize) -> Result<(), PreconditionFailed> {
        if self.is_conditional() && rows_changed == 0 {
            tracing::debug!(condition = ?self.condition, "condition: 412, the conditional write changed nothing");
            return Err(PreconditionFailed);
        }
        Ok(())
    }

    /// Stores it in `req`'s extensions, for [`Validated::of`].
    pub(crate) fn store_in(self, req: &HttpRequest) {
        req.extensions_mut().insert(self);
    }
}

/// A conditional write found its precondition no longer true when applied. Its response is
/// the one a failed pre-check gives: an empty 412 Precondition Failed (see
/// [`precondition_failed`](crate::not_modified::precondition_failed)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PreconditionFailed;

impl fmt::Display for PreconditionFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("precondition failed: the resource changed after its validators were checked")
    }
}

impl std::error::Error for PreconditionFailed {}

impl ResponseError for PreconditionFailed {
    fn status_code(&self) -> StatusCode {
        StatusCode::PRECONDITION_FAILED
    }

    fn error_response(&self) -> HttpResponse {
        precondition_failed()
    }
}

#[cfg(test)]
mod tests {
    use actix_web::http::header;
    use actix_web::test::TestRequest;

    use super::*;

    fn validated(headers: &[(header::HeaderName, &str)]) -> Validated {
        let mut req = TestRequest::put();
        for (name, value) in headers {
            req = req.insert_header((name.clone(), *value));
        }
        let tag = EntityTag::new_strong("v2".into());
        Validated::new(
            &req.to_http_request(),
            Some(&tag),
            Some(SystemTime::UNIX_EPOCH),
        )
    }

    #[test]
    fn if_match_with_tags_expects_the_validated_tag() {
        let v = validated(&[(header::IF_MATCH, "\"v1\", \"v2\"")]);
        assert_eq!(v.expected_etag(), Some(&EntityTag::new_strong("v2".into())));
        assert_eq!(v.ensure_written(0), Err(PreconditionFailed));
        assert_eq!(v.ensure_written(1), Ok(()));
    }

    #[test]
    fn if_match_any_expects_existence() {
        let v = validated(&[(header::IF_MATCH, "*")]);
        assert_eq!(v.condition(), Some(&WriteCondition::Exists));
        assert_eq!(v.expected_etag(), None);
        assert_eq!(v.ensure_written(0), Err(PreconditionFailed));
    }

    #[test]
    fn if_unmodified_since_counts_only_without_if_match() {
        let date = "Sun, 06 Nov 1994 08:49:37 GMT";
        let v = validated(&[(header::IF_UNMODIFIED_SINCE, date)]);
        assert_eq!(
            v.condition(),
            Some(&WriteCondition::UnmodifiedSince(SystemTime::UNIX_EPOCH))
        );
        let v = validated(&[
            (header::IF_MATCH, "\"v2\""),
            (header::IF_UNMODIFIED_SINCE, date),
        ]);
        assert!(matches!(v.condition(), Some(WriteCondition::ETag(_))));
        // An invalid date is ignored (RFC 9110 §13.1.4), as the check ignored it.
        let v = validated(&[(header::IF_UNMODIFIED_SINCE, "yesterday")]);
        assert_eq!(v.condition(), None);
    }

    #[test]
    fn unconditional_writes_are_never_a_conflict() {
        let v = validated(&[]);
        assert!(!v.is_conditional());
        assert_eq!(v.ensure_written(0), Ok(()));
    }

    #[test]
    fn the_conflict_answers_like_the_pre_check() {
        let res = PreconditionFailed.error_response();
        let pre = precondition_failed();
        assert_eq!(res.status(), pre.status());
        let headers = |res: &HttpResponse| {
            let mut all: Vec<_> = res
                .headers()
                .iter()
                .map(|(n, v)| format!("{n}: {v:?}"))
                .collect();
            all.sort();
            all
        };
        assert_eq!(headers(&res), headers(&pre));
    }
}
