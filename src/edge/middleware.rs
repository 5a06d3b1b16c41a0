//! [`Edge`]: the middleware that speaks for the app to the caches in front of it.

use std::future::{Ready, ready};
use std::rc::Rc;
use std::time::Duration;

use actix_web::Error;
use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use futures_util::future::LocalBoxFuture;

use super::purge::Purges;
use super::{TagHeaders, groups, invalidations, render_vendor_tags};

/// The middleware that speaks for the app to the caches in front of it. Build it once and
/// clone it into every worker (a clone shares the purge dispatcher).
///
/// On every response it renders the vendor tag headers ([`TagHeaders`]) from the response's
/// `Cache-Groups` (a response cache's own groups, a viewset's, a handler's). On a 2xx answer
/// to an unsafe method that carries `Cache-Group-Invalidation` (RFC 9875 §3: what
/// `#[etag_cached(invalidates = …)]`, [`ResponseCache::invalidates`], the viewset router and
/// [`invalidate`](super::invalidate) add) it hands those groups to its [`Purges`] and answers
/// once they are purged or the purge bound ([`PurgesBuilder::wait`]) has passed; a purge
/// that missed the bound is retried in the background, never dropped silently.
///
/// A write that changes more groups than `Cache-Group-Invalidation` may list
/// ([`MAX_GROUPS`](super::MAX_GROUPS), [`MAX_FIELD_BYTES`](super::MAX_FIELD_BYTES)) has the
/// rest logged and counted (`actix_conditional_cache_groups_dropped_total`), not purged:
/// invalidate a coarser group (the cache's name) instead. A fetch the edge started before the
/// write can store old bytes after the purge: [`Edge::repurge_after`](Self::repurge_after) closes that window.
///
/// Only the instance that answered the write purges: invalidations that reach the other
/// instances (through Redis) invalidate their own caches, not the edge, so each purge is sent
/// once, however many instances run.
///
/// [`ResponseCache::invalidates`]: crate::response_cache::ResponseCache::invalidates
/// [`PurgesBuilder::wait`]: super::purge::PurgesBuilder::wait
///
/// ```
/// use actix_conditional::edge::{self, Edge, TagHeaders};
/// use actix_web::{App, HttpResponse, test, web};
///
/// # actix_web::rt::System::new().block_on(async {
/// let edge = Edge::new().tag_headers(TagHeaders::new().surrogate_key());
/// let app = test::init_service(App::new().wrap(edge).route(
///     "/challenges",
///     web::get().to(|| async {
///         let mut res = HttpResponse::Ok().body("[]");
///         edge::tag(&mut res, ["challenges"]);
///         res
///     }),
/// ))
/// .await;
/// let res = test::call_service(&app, test::TestRequest::get().uri("/challenges").to_request()).await;
/// assert_eq!(res.headers().get("cache-groups").unwrap(), r#""challenges""#);
/// assert_eq!(res.headers().get("surrogate-key").unwrap(), "challenges");
/// # });
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct Edge {
    tags: TagHeaders,
    purges: Option<Purges>,
    repurge_after: Option<Duration>,
}

impl Edge {
    /// No vendor tag headers (`Cache-Groups` only) and no purges.
    pub fn new() -> Self {
        Self::default()
    }

    /// Which vendor tag headers to render from `Cache-Groups`.
    pub fn tag_headers(mut self, tags: TagHeaders) -> Self {
        self.tags = tags;
        self
    }

    /// Where invalidated groups are purged.
    pub fn purges(mut self, purges: Purges) -> Self {
        self.purges = Some(purges);
        self
    }

    /// Purges the same groups once more `delay` after each write (default: never).
    ///
    /// Tag purges remove what the edge has *stored*. A fetch the edge started before the write
    /// committed (a slow read, or one collapsed with others) can still bring back the old
    /// bytes and store them after the purge, for their whole lifetime. A second purge, later
    /// than the edge's longest backend fetch, removes those. It is sent from this worker in the
    /// background: the write does not wait for it.
    pub fn repurge_after(mut self, delay: Duration) -> Self {
        self.repurge_after = Some(delay);
        self
    }
}

impl<S, B> Transform<S, ServiceRequest> for Edge
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Transform = EdgeMiddleware<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(EdgeMiddleware {
            service: Rc::new(service),
            edge: self.clone(),
        }))
    }
}

/// The service [`Edge`] wraps around an app or scope.
#[derive(Debug)]
pub struct EdgeMiddleware<S> {
    service: Rc<S>,
    edge: Edge,
}

impl<S, B> Service<ServiceRequest> for EdgeMiddleware<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let (service, edge) = (Rc::clone(&self.service), self.edge.clone());
        Box::pin(async move {
            // RFC 9110 §9.2.1: only unsafe methods change state; RFC 9875 §3 honours the
            // invalidation field on their responses only.
            let unsafe_method = !req.method().is_safe();
            let mut res = service.call(req).await?;
            let tagged = groups(res.headers());
            if !tagged.is_empty() {
                render_vendor_tags(res.headers_mut(), &tagged, &edge.tags);
            }
            if unsafe_method && res.status().is_success() {
                let invalidated = invalidations(res.headers());
                if !invalidated.is_empty() {
                    match &edge.purges {
                        Some(purges) => {
                            // The dispatcher resolves within its own `wait`; this bound holds
                            // even if its thread is gone, so a write never hangs on a purge.
                            let bound = purges.wait() + Duration::from_secs(1);
                            let purge = purges.purge(invalidated.clone());
                            if let Some(delay) = edge.repurge_after {
                                let (purges, groups) = (purges.clone(), invalidated.clone());
                                actix_rt::spawn(async move {
                                    actix_rt::time::sleep(delay).await;
                                    purges.purge(groups).await;
                                });
                            }
                            let Ok(outcome) = actix_rt::time::timeout(bound, purge).await else {
                                tracing::error!(groups = ?invalidated, "edge: the purge dispatcher did not answer; answering the write");
                                return Ok(res);
                            };
                            if outcome.is_done() {
                                tracing::debug!(groups = ?invalidated, "edge: purged before answering");
                            } else {
                                tracing::warn!(
                                    groups = ?invalidated,
                                    pending = outcome.pending,
                                    dropped = outcome.dropped,
                                    "edge: purge not confirmed within its bound; answering, retrying in the background"
                                );
                            }
                        }
                        None => {
                            tracing::trace!(groups = ?invalidated, "edge: no purgers configured")
                        }
                    }
                }
            }
            Ok(res)
        })
    }
}
