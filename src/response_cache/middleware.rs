//! The cache as actix middleware, and the middleware that invalidates after a mutation.

use std::future::{Ready, ready};
use std::rc::Rc;
use std::sync::Arc;

use actix_web::Error;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::http::header::{
    IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE,
};
use futures_util::future::LocalBoxFuture;

use super::engine::Plan;
use super::stats::Event;
use super::status::labelled;
use super::{CacheScope, ResponseCache};

impl<S, B> Transform<S, ServiceRequest> for ResponseCache
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<BoxBody>;
    type Error = Error;
    type Transform = ResponseCacheMiddleware<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(ResponseCacheMiddleware {
            service: Rc::new(service),
            cache: self.clone(),
        }))
    }
}

/// The service [`ResponseCache`] wraps around an app, scope or resource.
#[derive(Debug)]
pub struct ResponseCacheMiddleware<S> {
    service: Rc<S>,
    cache: ResponseCache,
}

impl<S, B> Service<ServiceRequest> for ResponseCacheMiddleware<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<BoxBody>;
    type Error = Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, mut req: ServiceRequest) -> Self::Future {
        let service = Rc::clone(&self.service);
        let engine = Arc::clone(self.cache.engine());
        Box::pin(async move {
            let res = match engine.plan(req.request(), None).await {
                Plan::Respond(res) => Ok(req.into_response(res)),
                Plan::Pass(status) => {
                    let res = service.call(req).await?.map_into_boxed_body();
                    let (req, res) = res.into_parts();
                    Ok(ServiceResponse::new(req, labelled(res, status)))
                }
                // A sectioned cache builds its responses itself; it never runs the service.
                Plan::Lead(lead) if engine.builds_itself() => {
                    let res = lead.run(&engine, req.request(), None).await;
                    Ok(req.into_response(res))
                }
                Plan::Lead(lead) => {
                    // The handler must build the full 200 whatever the client holds, so its
                    // response can be stored; the client's preconditions are evaluated
                    // against the stored entry afterwards.
                    let method = req.method().clone();
                    let headers = req.headers().clone();
                    for name in [
                        IF_MATCH,
                        IF_NONE_MATCH,
                        IF_MODIFIED_SINCE,
                        IF_UNMODIFIED_SINCE,
                        IF_RANGE,
                    ] {
                        req.headers_mut().remove(name);
                    }
                    // Its own task, so a client that goes away does not cancel the build the
                    // waiters depend on.
                    let task = actix_rt::spawn({
                        let engine = Arc::clone(&engine);
                        async move {
                            let res = match service.call(req).await {
                                Ok(res) => res,
                                Err(err) => {
                                    lead.fail(err.as_response_error().status_code());
                                    return Err(err);
                                }
                            };
                            let (req, res) = res.into_parts();
                            let res = lead
                                .finish(
                                    &engine,
                                    &method,
                                    &headers,
                                    res.map_into_boxed_body(),
                                    Vec::new(),
                                )
                                .await;
                            Ok::<_, Error>(ServiceResponse::new(req, res))
                        }
                    });
                    match task.await {
                        Ok(res) => res,
                        Err(err) => {
                            tracing::error!(cache = %engine.name(), error = %err, "response cache: build panicked");
                            engine.stats().record(Event::RefreshFailure);
                            Err(actix_web::error::ErrorInternalServerError(
                                "handler panicked",
                            ))
                        }
                    }
                }
            };
            res.map(|res| {
                let (req, res) = res.into_parts();
                let res = engine.finish(&req, res);
                ServiceResponse::new(req, res)
            })
        })
    }
}

/// Invalidates a cache after every 2xx response to an unsafe method (POST, PUT, PATCH,
/// DELETE, …) of the routes it wraps; see
/// [`ResponseCache::invalidates`].
#[derive(Debug, Clone)]
pub struct InvalidateOnSuccess {
    cache: ResponseCache,
    scope: CacheScope,
}

impl InvalidateOnSuccess {
    pub(crate) fn new(cache: ResponseCache, scope: CacheScope) -> Self {
        Self { cache, scope }
    }
}

impl<S, B> Transform<S, ServiceRequest> for InvalidateOnSuccess
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Transform = InvalidateOnSuccessMiddleware<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(InvalidateOnSuccessMiddleware {
            service: Rc::new(service),
            config: self.clone(),
        }))
    }
}

/// The service [`InvalidateOnSuccess`] wraps.
#[derive(Debug)]
pub struct InvalidateOnSuccessMiddleware<S> {
    service: Rc<S>,
    config: InvalidateOnSuccess,
}

impl<S, B> Service<ServiceRequest> for InvalidateOnSuccessMiddleware<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let service = Rc::clone(&self.service);
        let config = self.config.clone();
        // RFC 9110 §9.2.1: a safe method changes nothing, so a GET or HEAD through these
        // routes invalidates nothing (nor lists the group: RFC 9875 §3, unsafe methods only).
        let unsafe_method = !req.method().is_safe();
        Box::pin(async move {
            let mut res = service.call(req).await?;
            // Only after success: a failed write changed nothing worth rebuilding for. Awaited,
            // so that with Redis the other instances have been told before the client hears
            // back (its next read, wherever it lands, sees the write).
            if unsafe_method && res.status().is_success() {
                config.cache.invalidate(&config.scope).await;
                // RFC 9875 §3: caches on the path invalidate this group too.
                let group = config.cache.invalidation_group(&config.scope);
                crate::edge::add_invalidations(res.headers_mut(), [group]);
            }
            Ok(res)
        })
    }
}
