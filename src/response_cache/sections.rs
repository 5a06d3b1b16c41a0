//! Sectioned responses: a JSON object whose members are built by named [`Section`]s, each with
//! its own revision, so a fast-moving tail can be rebuilt without the stable core.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::future::LocalBoxFuture;
use serde::Serialize;

use super::ResponseCache;
use super::entry::SectionPart;
use crate::CachePolicy;

/// A revision function, type-erased: `Send + Sync` so one cache serves every worker, while
/// its future may be `!Send` (it runs on the worker that asked).
pub(crate) type RevisionFn = Arc<
    dyn Fn(HttpRequest) -> LocalBoxFuture<'static, Result<String, actix_web::Error>> + Send + Sync,
>;

type BuildFn = Arc<
    dyn Fn(HttpRequest) -> LocalBoxFuture<'static, Result<Bytes, actix_web::Error>> + Send + Sync,
>;

/// One named member of a sectioned response: a cheap revision function and the builder of
/// its JSON value.
#[derive(Clone)]
pub struct Section {
    name: Cow<'static, str>,
    revision: RevisionFn,
    build: BuildFn,
    inline: bool,
}

impl fmt::Debug for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Section")
            .field("name", &self.name)
            .field("inline", &self.inline)
            .finish_non_exhaustive()
    }
}

impl Section {
    /// A section named `name` (its key in the JSON object), whose data has the fingerprint
    /// `revision` returns and whose value `build` returns, each with its own error type
    /// (anything `Into<actix_web::Error>`). Closures whose error type cannot be inferred
    /// (`async { Ok(…) }`) read better with [`fallible`](Self::fallible) or
    /// [`infallible`](Self::infallible).
    pub fn new<R, RFut, RErr, B, BFut, T, BErr>(
        name: impl Into<Cow<'static, str>>,
        revision: R,
        build: B,
    ) -> Self
    where
        R: Fn(HttpRequest) -> RFut + Send + Sync + 'static,
        RFut: Future<Output = Result<String, RErr>> + 'static,
        RErr: Into<actix_web::Error> + 'static,
        B: Fn(HttpRequest) -> BFut + Send + Sync + 'static,
        BFut: Future<Output = Result<T, BErr>> + 'static,
        T: Serialize,
        BErr: Into<actix_web::Error> + 'static,
    {
        let revision: RevisionFn = Arc::new(move |req| {
            let fut = revision(req);
            Box::pin(async move { fut.await.map_err(Into::into) })
        });
        let build: BuildFn = Arc::new(move |req| {
            let fut = build(req);
            Box::pin(async move {
                let value = fut.await.map_err(Into::into)?;
                serde_json::to_vec(&value)
                    .map(Bytes::from)
                    .map_err(actix_web::error::ErrorInternalServerError)
            })
        });
        Self {
            name: name.into(),
            revision,
            build,
            inline: false,
        }
    }

    /// [`new`](Self::new) for functions that cannot fail: `revision` gives a `String`, `build`
    /// a serializable value, both `async`. Nothing to annotate.
    ///
    /// ```
    /// use actix_conditional::{ResponseCache, Section};
    /// use actix_web::HttpRequest;
    ///
    /// async fn tail_revision(_req: HttpRequest) -> String {
    ///     "17".to_owned() // e.g. SELECT MAX(id) FROM events
    /// }
    ///
    /// let tail = Section::infallible("tail", tail_revision, |_req: HttpRequest| async {
    ///     vec!["signed up", "uploaded"]
    /// });
    /// assert_eq!(tail.name(), "tail");
    /// let feed = ResponseCache::sections("infallible-feed").section(tail).build();
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// use actix_web::{App, test, web};
    /// let app = test::init_service(App::new().route(
    ///     "/feed",
    ///     web::get().to(move |req: HttpRequest| {
    ///         let feed = feed.clone();
    ///         async move { feed.respond(&req).await }
    ///     }),
    /// ))
    /// .await;
    /// let res = test::call_service(&app, test::TestRequest::get().uri("/feed").to_request()).await;
    /// assert_eq!(res.status(), 200);
    /// assert_eq!(test::read_body(res).await, r#"{"tail":["signed up","uploaded"]}"#);
    /// # });
    /// ```
    pub fn infallible<R, RFut, B, BFut, T>(
        name: impl Into<Cow<'static, str>>,
        revision: R,
        build: B,
    ) -> Self
    where
        R: Fn(HttpRequest) -> RFut + Send + Sync + 'static,
        RFut: Future<Output = String> + 'static,
        B: Fn(HttpRequest) -> BFut + Send + Sync + 'static,
        BFut: Future<Output = T> + 'static,
        T: Serialize + 'static,
    {
        Self::fallible(
            name,
            move |req| {
                let fut = revision(req);
                async move { Ok(fut.await) }
            },
            move |req| {
                let fut = build(req);
                async move { Ok(fut.await) }
            },
        )
    }

    /// [`new`](Self::new) with the error type fixed to `actix_web::Error`, so closures that
    /// end in `Ok(…)`, or use `?` on an `actix_web::Error` (or any
    /// [`ResponseError`](actix_web::ResponseError)), need no annotation (with `new` they need `Ok::<_, actix_web::Error>(…)`). A failed revision
    /// or build serves the stored bytes stale while they are within the stale window.
    ///
    /// ```
    /// use actix_conditional::{ResponseCache, Section};
    /// use actix_web::{HttpRequest, error::{ErrorBadRequest, ErrorServiceUnavailable}};
    ///
    /// let core = Section::fallible(
    ///     "core",
    ///     |_req: HttpRequest| async { Ok("7.2".to_owned()) },
    ///     |req: HttpRequest| async move {
    ///         let id = req.match_info().get("id").unwrap_or("0");
    ///         let id: u32 = id.parse().map_err(ErrorBadRequest)?;
    ///         if id == 13 {
    ///             return Err(ErrorServiceUnavailable("database busy"));
    ///         }
    ///         Ok(serde_json::json!({ "id": id }))
    ///     },
    /// );
    /// let cache = ResponseCache::sections("summary").section(core).build();
    /// # let _ = cache;
    /// ```
    pub fn fallible<R, RFut, B, BFut, T>(
        name: impl Into<Cow<'static, str>>,
        revision: R,
        build: B,
    ) -> Self
    where
        R: Fn(HttpRequest) -> RFut + Send + Sync + 'static,
        RFut: Future<Output = Result<String, actix_web::Error>> + 'static,
        B: Fn(HttpRequest) -> BFut + Send + Sync + 'static,
        BFut: Future<Output = Result<T, actix_web::Error>> + 'static,
        T: Serialize + 'static,
    {
        Self::new(name, revision, build)
    }

    pub(crate) fn inline(mut self) -> Self {
        self.inline = true;
        self
    }

    pub(crate) fn is_inline(&self) -> bool {
        self.inline
    }

    /// The section's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn key(&self) -> Cow<'static, str> {
        self.name.clone()
    }

    /// The user's fingerprint with the cache's (`all`) and this section's (`own`)
    /// invalidation counters mixed in.
    pub(crate) async fn revision(
        &self,
        req: &HttpRequest,
        all: u64,
        own: u64,
    ) -> Result<String, actix_web::Error> {
        let mut revision = (self.revision)(req.clone()).await?;
        if own > 0 || all > 0 {
            revision.push_str(&format!("~{all}.{own}"));
        }
        Ok(revision)
    }
}

/// Rebuilds the sections whose revision differs from `old`'s (all when `old` is empty) and
/// keeps the others' bytes. `generations` are the sections' invalidation counters the
/// revisions were taken under, recorded with each rebuilt part. With `defer`, a non-inline
/// section that changed only through its revision (not invalidated since `old` was built)
/// keeps its old part too: a rebuild in the request for an invalidation rebuilds what was
/// invalidated, and leaves the rest to stale-while-revalidate.
pub(crate) async fn build_parts(
    sections: &[Section],
    revisions: &[String],
    generations: &[u64],
    old: &[SectionPart],
    req: &HttpRequest,
    defer: bool,
) -> Result<Vec<SectionPart>, actix_web::Error> {
    let mut parts = Vec::with_capacity(sections.len());
    for (i, (section, revision)) in sections.iter().zip(revisions).enumerate() {
        let generation = generations.get(i).copied().unwrap_or(0);
        match old.get(i) {
            Some(part) if *part.revision == **revision => parts.push(part.clone()),
            Some(part) if defer && !section.inline && part.generation == generation => {
                parts.push(part.clone());
            }
            _ => parts.push(SectionPart {
                revision: revision.clone().into_boxed_str(),
                json: (section.build)(req.clone()).await?,
                generation,
            }),
        }
    }
    Ok(parts)
}

/// `{"name":value,…}` from the parts' bytes, without re-serialising any of them.
pub(crate) fn merged_body(sections: &[Section], parts: &[SectionPart]) -> Bytes {
    let len: usize = parts.iter().map(|p| p.json.len()).sum::<usize>()
        + sections.iter().map(|s| s.name.len() + 4).sum::<usize>()
        + 2;
    let mut body = BytesMut::with_capacity(len);
    body.put_u8(b'{');
    for (i, (section, part)) in sections.iter().zip(parts).enumerate() {
        if i > 0 {
            body.put_u8(b',');
        }
        let name = serde_json::to_vec(section.name.as_ref()).expect("a string serialises");
        body.put_slice(&name);
        body.put_u8(b':');
        body.put_slice(&part.json);
    }
    body.put_u8(b'}');
    body.freeze()
}

/// A sectioned cache ([`ResponseCache::sections`]): answer with [`respond`](Self::respond).
/// It dereferences to its [`ResponseCache`] for what every cache has (invalidation, stats,
/// registration).
#[derive(Clone, Debug)]
pub struct SectionedCache {
    cache: ResponseCache,
    policy: CachePolicy,
}

impl SectionedCache {
    pub(crate) fn new(cache: ResponseCache, policy: CachePolicy) -> Self {
        Self { cache, policy }
    }

    /// Answers `req` from the cache.
    ///
    /// Unchanged revisions: `hit-revision`. Only [inline](super::SectionsCacheBuilder::inline_section)
    /// sections changed: they are rebuilt now and merged into the stored bytes (`section`).
    /// Another section changed: the stored bytes at once (`stale`) while one background
    /// refresh rebuilds the changed sections, for up to `max_stale` after the bytes were last
    /// known current; past that, a `miss` that rebuilds them in the request. A section
    /// [invalidated](ResponseCache::invalidate) since the bytes were built is rebuilt in the
    /// request instead (read-your-writes): `miss`, or `stale` when another section that only
    /// changed keeps its old bytes in that answer until its background refresh.
    ///
    /// An answer to a request with `Authorization` is marked `private` unless the cache's
    /// [`cache_control`](super::SectionsCacheBuilder::cache_control) is explicitly `public`
    /// (RFC 9111 §3.5), so no shared cache in front hands it to other users.
    pub async fn respond(&self, req: &HttpRequest) -> HttpResponse {
        let mut res = self.cache.engine().respond(req, None).await;
        let policy = crate::cache_control::for_credentials(self.policy, req);
        if policy.is_private() && !self.policy.is_private() {
            crate::patch_cache_control(res.headers_mut(), &CachePolicy::new().private());
        }
        res
    }

    /// The cache behind it.
    pub fn cache(&self) -> &ResponseCache {
        &self.cache
    }
}

impl Deref for SectionedCache {
    type Target = ResponseCache;

    fn deref(&self) -> &ResponseCache {
        &self.cache
    }
}
