//! The `Transform` / `Service` plumbing of [`ConditionalGet`]; the rules live in
//! [`crate::etag`], [`crate::preconditions`] and [`crate::not_modified`].

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, ready};

use actix_web::body::{BodySize, BoxBody, EitherBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::http::header::{self, HeaderMap};
use actix_web::http::{Method, StatusCode};
use actix_web::{Error, HttpResponse};
use futures_util::future::{Ready, ready};
use pin_project_lite::pin_project;

use crate::cache_control::{cache_control_contains, patch_vary_headers};
use crate::condition::EarlyAnswer;
use crate::etag::{
    ETagHasher, encodable, is_content_coded, may_be_compressed, request_accepts_coding, weaken_etag,
};
use crate::not_modified::{not_modified, precondition_failed};
use crate::preconditions::{
    EntityTagRef, Precondition, Validators, evaluate_preconditions, parse_http_date,
};

/// Default for [`ConditionalGet::max_body_bytes`]: 4 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Conditional GET middleware: body-hash ETags, 304 Not Modified and 412 Precondition Failed
/// for GET and HEAD, in the manner of Django's `ConditionalGetMiddleware`.
///
/// For a GET or HEAD whose handler answered 2xx it:
/// 1. adds a strong `ETag` (`"` + lowercase hex digest + `"`) to a 200 that has none, whose
///    body is non-empty, in memory and at most [`max_body_bytes`](Self::max_body_bytes), and
///    whose `Cache-Control` has no `no-store`; streaming bodies pass through untouched;
/// 2. evaluates `If-Match`, `If-Unmodified-Since`, `If-None-Match` and `If-Modified-Since`
///    against the response's `ETag` and `Last-Modified` in RFC 9110 §13.2.2 order;
/// 3. answers 304 built from the real 200 (headers kept, body dropped) or an empty 412.
///
/// Other methods, and non-2xx responses, pass through unchanged. A handler-set `ETag` or
/// `Last-Modified` is never replaced, and a malformed one is left alone (never a panic).
///
/// # Compression
/// Register `ConditionalGet` *before* [`Compress`], so that
/// `Compress` wraps it: ETags are hashed over the identity bytes and a 304 is decided before
/// anything is compressed (Django's order with `GZipMiddleware`; nginx's too). Because actix's
/// `Compress` does not touch `ETag`, `ConditionalGet` weakens the tag itself (`W/"…"`, as
/// Django's `GZipMiddleware` and nginx do, RFC 9110 §8.8.3.3) whenever the request accepts a
/// content-coding and the content type is one `Compress` encodes, and gives such 304s the
/// `Vary: accept-encoding` the 200 carries. Weak tags still produce 304s (`If-None-Match` uses
/// weak comparison) but never satisfy `If-Match`; turn this off with
/// [`weaken_when_compressible(false)`](Self::weaken_when_compressible) if nothing compresses.
///
/// Registered *after* `Compress` (outside it), the middleware sees encoded streams: it hashes
/// nothing `Compress` encodes, and weakens any strong `ETag` on an encoded response.
///
/// # Examples
/// ```
/// use actix_conditional::{ConditionalGet, ETagHasher};
/// use actix_web::{App, middleware::Compress, web, HttpResponse};
///
/// let app = App::new()
///     .wrap(ConditionalGet::new().hasher(ETagHasher::Md5).max_body_bytes(1 << 20))
///     .wrap(Compress::default())
///     .route("/", web::get().to(|| async { HttpResponse::Ok().json([1, 2, 3]) }));
/// ```
///
/// [`Compress`]: https://docs.rs/actix-web/4/actix_web/middleware/struct.Compress.html
#[derive(Debug, Clone, Default)]
pub struct ConditionalGet {
    config: Rc<Config>,
}

#[derive(Debug, Clone, Copy)]
struct Config {
    hasher: ETagHasher,
    max_body_bytes: usize,
    weaken_when_compressible: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            hasher: ETagHasher::default(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            weaken_when_compressible: true,
        }
    }
}

impl ConditionalGet {
    /// The middleware with its defaults: [`ETagHasher::Xxh3`], a 4 MiB hashing limit, and weak
    /// tags for responses that a compressing layer may encode.
    pub fn new() -> Self {
        Self::default()
    }

    /// Which digest makes the ETag; [`ETagHasher::Md5`] reproduces Django's tags exactly.
    #[must_use]
    pub fn hasher(self, hasher: ETagHasher) -> Self {
        self.with(|c| c.hasher = hasher)
    }

    /// Bodies longer than this get no computed ETag and pass through as they are.
    #[must_use]
    pub fn max_body_bytes(self, limit: usize) -> Self {
        self.with(|c| c.max_body_bytes = limit)
    }

    /// Whether to weaken strong ETags on responses an outer
    /// `Compress` may encode (on by default; see [Compression](ConditionalGet#compression)).
    #[must_use]
    pub fn weaken_when_compressible(self, weaken: bool) -> Self {
        self.with(|c| c.weaken_when_compressible = weaken)
    }

    fn with(self, change: impl FnOnce(&mut Config)) -> Self {
        let mut config = *self.config;
        change(&mut config);
        Self {
            config: Rc::new(config),
        }
    }
}

impl<S, B> Transform<S, ServiceRequest> for ConditionalGet
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Transform = ConditionalGetMiddleware<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(ConditionalGetMiddleware {
            service,
            config: Rc::clone(&self.config),
        }))
    }
}

/// The per-worker service built by [`ConditionalGet`]; configure it there.
#[derive(Debug)]
pub struct ConditionalGetMiddleware<S> {
    service: S,
    config: Rc<Config>,
}

impl<S, B> Service<ServiceRequest> for ConditionalGetMiddleware<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Future = ConditionalGetFuture<S::Future>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        if !matches!(*req.method(), Method::GET | Method::HEAD) {
            tracing::trace!(method = %req.method(), "conditional_get: skipped, not GET or HEAD");
        }
        // RFC 9110 §13.2.1: after the handler only GET and HEAD can still be answered with a
        // 304; for unsafe methods the work is done, so precondition mode (validators evaluated
        // before the handler) is the tool there, as Django's middleware notes too.
        let config =
            matches!(*req.method(), Method::GET | Method::HEAD).then(|| Rc::clone(&self.config));
        ConditionalGetFuture {
            fut: self.service.call(req),
            config,
        }
    }
}

pin_project! {
    /// Response future of [`ConditionalGetMiddleware`].
    #[derive(Debug)]
    pub struct ConditionalGetFuture<F> {
        #[pin]
        fut: F,
        config: Option<Rc<Config>>,
    }
}

impl<F, B> Future for ConditionalGetFuture<F>
where
    F: Future<Output = Result<ServiceResponse<B>, Error>>,
    B: MessageBody + 'static,
{
    type Output = Result<ServiceResponse<EitherBody<B>>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = ready!(this.fut.poll(cx))?;
        Poll::Ready(Ok(match this.config {
            Some(config) => config.respond(res),
            None => res.map_into_left_body(),
        }))
    }
}

impl Config {
    fn respond<B: MessageBody + 'static>(
        &self,
        res: ServiceResponse<B>,
    ) -> ServiceResponse<EitherBody<B>> {
        let status = res.status();
        if status == StatusCode::NOT_MODIFIED
            || (status == StatusCode::PRECONDITION_FAILED
                && res.headers().contains_key(header::ETAG))
        {
            // A 304 decided before the handler (precondition mode) must carry the ETag and Vary
            // the 200 would have had (§15.4.5), so it gets the same weakening ours get; so
            // does a GET's 412 that carries the validators (Django's `@condition`).
            return self.match_early_answer(res);
        }
        if !status.is_success() {
            // §13.2.1: preconditions only apply where the response would be 2xx.
            tracing::debug!(%status, "conditional_get: skipped, status is not 2xx");
            return res.map_into_left_body();
        }
        let (req, response) = res.into_parts();
        let (mut response, body) = response.into_parts();

        let compressible = self.weaken_when_compressible && may_be_compressed(&req, &response);
        let body = if status == StatusCode::OK && !response.headers().contains_key(header::ETAG) {
            self.add_body_etag(&mut response, body)
        } else {
            EitherBody::left(body)
        };
        if compressible || is_content_coded(response.headers()) {
            weaken(response.headers_mut());
        } else if self.weaken_when_compressible && status == StatusCode::OK && encodable(&response)
        {
            // Sent as identity only because this client accepts no coding: its gzip siblings
            // carry `Vary: accept-encoding` (from `Compress`), so this one must too, or a
            // shared cache may hand the identity copy to every client, or (with `Vary`
            // stripped on the way) a gzip copy to one that cannot decode it (RFC 9110
            // §12.5.5). Encoded ones get it from `Compress` itself.
            patch_vary_headers(response.headers_mut(), &["accept-encoding"]);
        }

        let headers = response.headers();
        let etag = headers
            .get(header::ETAG)
            .and_then(EntityTagRef::from_header);
        let last_modified = headers
            .get(header::LAST_MODIFIED)
            .and_then(|value| parse_http_date(value.as_bytes()));
        // A 2xx is a current representation, validators or not (for `*`).
        let validators = Validators::new(etag, last_modified).exists(true);
        let decision = evaluate_preconditions(req.head(), &validators);

        let response = match decision {
            // §15.4.5: a 304 only stands in for a 200.
            Precondition::NotModified if status == StatusCode::OK => {
                tracing::debug!(path = req.path(), "conditional_get: 304 not modified");
                let mut response = not_modified(response);
                if compressible {
                    // The 200 gets this from `Compress`, which leaves body-less responses alone.
                    patch_vary_headers(response.headers_mut(), &["accept-encoding"]);
                }
                drop(body);
                response.map_into_boxed_body().map_into_right_body()
            }
            Precondition::PreconditionFailed => {
                tracing::debug!(
                    path = req.path(),
                    "conditional_get: 412 precondition failed"
                );
                precondition_failed().map_into_right_body()
            }
            Precondition::NotModified | Precondition::Proceed => response.set_body(body),
        };
        ServiceResponse::new(req, response)
    }

    /// The 200 path's rules for an answer without a body: what its 200 would have been is
    /// the [`EarlyAnswer`] label its maker left (learnt from the handler's 200s), else a
    /// compressible body, as JSON is.
    fn match_early_answer<B: MessageBody + 'static>(
        &self,
        mut res: ServiceResponse<B>,
    ) -> ServiceResponse<EitherBody<B>> {
        let shape = res
            .response()
            .extensions()
            .get::<EarlyAnswer>()
            .copied()
            .unwrap_or(EarlyAnswer::UNKNOWN);
        let accepts = request_accepts_coding(res.request());
        let headers = res.headers_mut();
        if shape.coded() || (self.weaken_when_compressible && accepts && shape.encodable()) {
            weaken(headers);
        }
        // The 200 varies on Accept-Encoding whenever `Compress` would encode it for some
        // client: from `Compress` when encoded, from us when sent as identity.
        if self.weaken_when_compressible && shape.encodable() {
            patch_vary_headers(headers, &["accept-encoding"]);
        }
        res.map_into_left_body()
    }

    /// Hashes an in-memory body into a strong ETag where it lies, or says why not.
    fn add_body_etag<B: MessageBody>(
        &self,
        response: &mut HttpResponse<()>,
        body: B,
    ) -> EitherBody<B> {
        let skip = |reason: &'static str, body: B| {
            tracing::debug!(reason, "conditional_get: no etag computed");
            EitherBody::left(body)
        };
        // Django's `needs_etag`: no ETag for responses that must not be stored.
        if cache_control_contains(response.headers(), "no-store") {
            return skip("cache-control no-store", body);
        }
        match body.size() {
            BodySize::None | BodySize::Sized(0) => return skip("empty body", body),
            BodySize::Stream => return skip("streaming body", body),
            BodySize::Sized(len) if len > self.max_body_bytes as u64 => {
                return skip("body over max_body_bytes", body);
            }
            BodySize::Sized(_) => {}
        }
        // Zero-copy for `Bytes`, `String`, `Vec<u8>` and the `BoxBody` that `HttpResponse::json`
        // and `body()` build. A sized stream comes back intact as `Err` and goes out unhashed:
        // buffering it could lose bytes on a mid-stream error (actix-middleware-etag empties
        // such bodies).
        match body.try_into_bytes() {
            Ok(bytes) => {
                let etag = self.hasher.etag(&bytes);
                tracing::debug!(hasher = ?self.hasher, etag = ?etag, "conditional_get: etag computed");
                response.headers_mut().insert(header::ETAG, etag);
                EitherBody::right(BoxBody::new(bytes))
            }
            Err(body) => skip("sized stream", body),
        }
    }
}

/// [`weaken_etag`], logged.
fn weaken(headers: &mut HeaderMap) {
    if weaken_etag(headers) {
        tracing::debug!(etag = ?headers.get(header::ETAG), "conditional_get: etag weakened, body is or may be content-coded");
    }
}
