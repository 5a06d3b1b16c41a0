//! DRF-like viewsets: one type answers a collection (`/{prefix}`) and its items
//! (`/{prefix}/{id}`), mounted by [`register`] with HEAD wherever GET is.
//!
//! ```
//! use actix_conditional::viewset::{self, Action, ViewSet};
//! use actix_web::{App, HttpRequest, HttpResponse, http::{Method, StatusCode, header}, test};
//!
//! struct Greetings;
//!
//! impl ViewSet for Greetings {
//!     const ACTIONS: &'static [Action] = &[Action::List, Action::Retrieve];
//!
//!     async fn list(&self, _req: HttpRequest) -> HttpResponse {
//!         HttpResponse::Ok().json(["hello", "hi"])
//!     }
//!
//!     async fn retrieve(&self, _req: HttpRequest, id: String) -> HttpResponse {
//!         HttpResponse::Ok().json(format!("greeting {id}"))
//!     }
//! }
//!
//! # actix_web::rt::System::new().block_on(async {
//! let app = test::init_service(App::new().configure(|cfg| viewset::register(cfg, "greetings", Greetings))).await;
//!
//! let head = test::TestRequest::default().method(Method::HEAD).uri("/greetings/1");
//! assert_eq!(test::call_service(&app, head.to_request()).await.status(), StatusCode::OK);
//!
//! let delete = test::TestRequest::delete().uri("/greetings/1");
//! let res = test::call_service(&app, delete.to_request()).await;
//! assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
//! assert_eq!(res.headers().get(header::ALLOW).unwrap(), "GET, HEAD");
//! # });
//! ```

use std::rc::Rc;

use actix_web::http::Method;
use actix_web::http::header::{self, HeaderValue};
use actix_web::web::{self, Bytes, ServiceConfig};
use actix_web::{HttpRequest, HttpResponse};
use serde::de::DeserializeOwned;

/// One viewset action, with the route and method it answers (Django REST framework's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// `GET`/`HEAD /{prefix}`.
    List,
    /// `POST /{prefix}`.
    Create,
    /// `GET`/`HEAD /{prefix}/{id}`.
    Retrieve,
    /// `PUT /{prefix}/{id}`.
    Update,
    /// `PATCH /{prefix}/{id}`.
    PartialUpdate,
    /// `DELETE /{prefix}/{id}`.
    Destroy,
}

impl Action {
    fn methods(self) -> &'static [Method] {
        match self {
            Self::List | Self::Retrieve => &[Method::GET, Method::HEAD],
            Self::Create => &[Method::POST],
            Self::Update => &[Method::PUT],
            Self::PartialUpdate => &[Method::PATCH],
            Self::Destroy => &[Method::DELETE],
        }
    }

    fn on_item(self) -> bool {
        !matches!(self, Self::List | Self::Create)
    }
}

/// RFC 9875: a viewset's answers belong to one cache group, its prefix (`uploads`). Reads
/// (2xx or 304) list it in `Cache-Groups`; a 2xx write lists it in `Cache-Group-Invalidation`,
/// so one write makes caches downstream (and [`Edge`](crate::edge::Edge)'s purges) drop the
/// collection and every item at once: a write to an item changes the list too.
fn with_groups(action: Action, group: &str, mut res: HttpResponse) -> HttpResponse {
    let status = res.status();
    let headers = res.headers_mut();
    match action {
        Action::List | Action::Retrieve
            if status.is_success() || status == actix_web::http::StatusCode::NOT_MODIFIED =>
        {
            crate::edge::add_groups(headers, [group]);
        }
        Action::Create | Action::Update | Action::PartialUpdate | Action::Destroy
            if status.is_success() =>
        {
            crate::edge::add_invalidations(headers, [group]);
        }
        _ => {}
    }
    res
}

/// A resource answered by one type, as in Django REST framework.
///
/// Implement the actions you support and list them in [`ACTIONS`](Self::ACTIONS) (the
/// `#[etag_cached]` attribute on the `impl` block fills it in for you); the others are not
/// routed, so they answer 405 Method Not Allowed with an `Allow` header. Bodies arrive as bytes;
/// [`json_body`] turns them into a value or a clear 400.
///
/// The futures are not `Send`, like every actix handler's, hence `async fn` in the trait.
#[allow(async_fn_in_trait)]
pub trait ViewSet: 'static {
    /// The actions this viewset implements.
    const ACTIONS: &'static [Action];

    /// `GET /{prefix}`.
    async fn list(&self, req: HttpRequest) -> HttpResponse {
        not_implemented(&req)
    }

    /// `GET /{prefix}/{id}`.
    async fn retrieve(&self, req: HttpRequest, id: String) -> HttpResponse {
        let _ = id;
        not_implemented(&req)
    }

    /// `POST /{prefix}`.
    async fn create(&self, req: HttpRequest, body: Bytes) -> HttpResponse {
        let _ = body;
        not_implemented(&req)
    }

    /// `PUT /{prefix}/{id}`.
    async fn update(&self, req: HttpRequest, id: String, body: Bytes) -> HttpResponse {
        let _ = (id, body);
        not_implemented(&req)
    }

    /// `PATCH /{prefix}/{id}`.
    async fn partial_update(&self, req: HttpRequest, id: String, body: Bytes) -> HttpResponse {
        let _ = (id, body);
        not_implemented(&req)
    }

    /// `DELETE /{prefix}/{id}`.
    async fn destroy(&self, req: HttpRequest, id: String) -> HttpResponse {
        let _ = id;
        not_implemented(&req)
    }
}

/// Reached only if an action is listed in `ACTIONS` but not implemented.
fn not_implemented(req: &HttpRequest) -> HttpResponse {
    tracing::warn!(
        path = req.path(),
        "viewset: action listed in ACTIONS is not implemented"
    );
    HttpResponse::MethodNotAllowed().finish()
}

/// Mounts `viewset` at `/{prefix}` and `/{prefix}/{id}` on `cfg`.
///
/// Each listed action gets its route (List and Retrieve answer HEAD too, which actix's `#[get]`
/// does not do); any other method on either path answers 405 with `Allow`.
pub fn register<V: ViewSet>(cfg: &mut ServiceConfig, prefix: &str, viewset: V) {
    let viewset = Rc::new(viewset);
    let prefix = prefix.trim_matches('/');
    let group: Rc<str> = Rc::from(prefix);
    let mut collection = web::resource(format!("/{prefix}"));
    let mut item = web::resource(format!("/{prefix}/{{id}}"));

    for &action in V::ACTIONS {
        for method in action.methods() {
            let (vs, group) = (Rc::clone(&viewset), Rc::clone(&group));
            let route = web::route().method(method.clone());
            let route =
                match action {
                    Action::List => route.to(move |req| {
                        let (vs, group) = (Rc::clone(&vs), Rc::clone(&group));
                        async move { with_groups(action, &group, vs.list(req).await) }
                    }),
                    Action::Create => route.to(move |req, body: Bytes| {
                        let (vs, group) = (Rc::clone(&vs), Rc::clone(&group));
                        async move { with_groups(action, &group, vs.create(req, body).await) }
                    }),
                    Action::Retrieve => route.to(move |req, id: web::Path<String>| {
                        let (vs, group) = (Rc::clone(&vs), Rc::clone(&group));
                        async move {
                            with_groups(action, &group, vs.retrieve(req, id.into_inner()).await)
                        }
                    }),
                    Action::Update => route.to(move |req, id: web::Path<String>, body: Bytes| {
                        let (vs, group) = (Rc::clone(&vs), Rc::clone(&group));
                        async move {
                            with_groups(action, &group, vs.update(req, id.into_inner(), body).await)
                        }
                    }),
                    Action::PartialUpdate => {
                        route.to(move |req, id: web::Path<String>, body: Bytes| {
                            let (vs, group) = (Rc::clone(&vs), Rc::clone(&group));
                            async move {
                                with_groups(
                                    action,
                                    &group,
                                    vs.partial_update(req, id.into_inner(), body).await,
                                )
                            }
                        })
                    }
                    Action::Destroy => route.to(move |req, id: web::Path<String>| {
                        let (vs, group) = (Rc::clone(&vs), Rc::clone(&group));
                        async move {
                            with_groups(action, &group, vs.destroy(req, id.into_inner()).await)
                        }
                    }),
                };
            if action.on_item() {
                item = item.route(route);
            } else {
                collection = collection.route(route);
            }
        }
    }

    let allow = |on_item: bool| {
        let methods: Vec<&str> = V::ACTIONS
            .iter()
            .filter(|a| a.on_item() == on_item)
            .flat_map(|a| a.methods().iter().map(Method::as_str))
            .collect();
        HeaderValue::from_str(&methods.join(", ")).expect("method names are valid header text")
    };
    let collection_allow = allow(false);
    let item_allow = allow(true);
    cfg.service(collection.default_service(web::to(move || {
        method_not_allowed(collection_allow.clone())
    })))
    .service(item.default_service(web::to(move || method_not_allowed(item_allow.clone()))));
}

/// 405 with the methods the resource does answer (RFC 9110 §15.5.6: `Allow` is required).
async fn method_not_allowed(allow: HeaderValue) -> HttpResponse {
    HttpResponse::MethodNotAllowed()
        .insert_header((header::ALLOW, allow))
        .json(serde_json::json!({ "error": "method not allowed" }))
}

/// Parses a JSON request body, or answers 400 with a JSON error saying what is wrong
/// (malformed JSON, a missing field, a wrong type), as DRF's serializers do.
// The error is the response itself, returned at once by the handler: boxing it buys nothing.
#[allow(clippy::result_large_err)]
pub fn json_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, HttpResponse> {
    serde_json::from_slice(body).map_err(|err| {
        HttpResponse::BadRequest()
            .json(serde_json::json!({ "error": "invalid JSON body", "detail": err.to_string() }))
    })
}
