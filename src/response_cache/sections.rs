//! Sectioned responses: a JSON object whose members are built by named [`Section`]s, each with
//! its own revision, so a fast-moving tail can be rebuilt without the stable core.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use actix_web::{HttpRequest, HttpResponse};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::future::LocalBoxFuture;
use serde::Serialize;

use super::engine::{Lead, Plan, labelled, spawn_refresh};
use super::entry::{Entry, SectionPart};
use super::flight::{Join, Outcome};
use super::shared::Claimed;
use super::stats::Event;
use super::{Freshness, Inner, ResponseCache, RevisionFn, Slot};

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
    generation: Arc<AtomicU64>,
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
    /// `revision` returns and whose value `build` returns.
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
            generation: Arc::new(AtomicU64::new(0)),
        }
    }

    pub(crate) fn inline(mut self) -> Self {
        self.inline = true;
        self
    }

    /// The section's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Invalidates the section on this instance; returns its new generation.
    pub(crate) fn bump(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// The section's invalidation generation on this instance.
    #[cfg(feature = "redis")]
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Raises the generation to `value` (learnt from another instance); returns the old one.
    #[cfg(feature = "redis")]
    pub(crate) fn observe(&self, value: u64) -> u64 {
        self.generation.fetch_max(value, Ordering::SeqCst)
    }

    /// The user's fingerprint with this section's and the cache's invalidations mixed in.
    async fn current(
        &self,
        req: &HttpRequest,
        cache_generation: u64,
    ) -> Result<String, actix_web::Error> {
        let mut revision = (self.revision)(req.clone()).await?;
        let own = self.generation.load(Ordering::SeqCst);
        if own > 0 || cache_generation > 0 {
            revision.push_str(&format!("~{cache_generation}.{own}"));
        }
        Ok(revision)
    }
}

/// Every section's current revision.
async fn revisions(
    sections: &[Section],
    req: &HttpRequest,
    generation: u64,
) -> Result<Vec<String>, actix_web::Error> {
    let mut out = Vec::with_capacity(sections.len());
    for section in sections {
        out.push(section.current(req, generation).await?);
    }
    Ok(out)
}

fn combine(sections: &[Section], revisions: &[String]) -> String {
    let mut out = String::new();
    for (section, revision) in sections.iter().zip(revisions) {
        if !out.is_empty() {
            out.push(';');
        }
        out.push_str(&section.name);
        out.push('=');
        out.push_str(revision);
    }
    out
}

/// The combined fingerprint, for a sections cache used through `serve` or as middleware.
pub(crate) async fn combined_revision(
    sections: &[Section],
    req: &HttpRequest,
) -> Result<String, actix_web::Error> {
    Ok(combine(sections, &revisions(sections, req, 0).await?))
}

/// Rebuilds the `changed` sections (all when `old` is empty) and keeps the others' bytes.
async fn build_parts(
    sections: &[Section],
    revisions: &[String],
    old: &[SectionPart],
    req: &HttpRequest,
) -> Result<Vec<SectionPart>, actix_web::Error> {
    let mut parts = Vec::with_capacity(sections.len());
    for (i, (section, revision)) in sections.iter().zip(revisions).enumerate() {
        match old.get(i) {
            Some(part) if *part.revision == **revision => parts.push(part.clone()),
            _ => parts.push(SectionPart {
                revision: revision.clone().into_boxed_str(),
                json: (section.build)(req.clone()).await?,
            }),
        }
    }
    Ok(parts)
}

/// `{"name":value,…}` from the parts' bytes, without re-serialising any of them.
fn merged_response(
    sections: &[Section],
    parts: &[SectionPart],
    cache_control: &HeaderValue,
) -> HttpResponse {
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
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, HeaderValue::from_static("application/json")))
        .insert_header((CACHE_CONTROL, cache_control.clone()))
        .body(body.freeze())
}

impl ResponseCache {
    /// Answers `req` from a sectioned cache ([`ResponseCache::sections`]).
    ///
    /// Unchanged revisions: `hit-revision`. Only [inline](super::ResponseCacheBuilder::inline_section)
    /// sections changed: they are rebuilt now and merged into the stored bytes (`section`).
    /// Another section changed: the stored bytes at once (`stale`) while one background
    /// refresh rebuilds the changed sections, for up to `max_stale` after the bytes were last
    /// known current; past that, a `miss` that rebuilds them in the request.
    ///
    /// An answer to a request with `Authorization` is marked `private` unless the cache's
    /// [`cache_control`](super::ResponseCacheBuilder::cache_control) is explicitly `public`
    /// (RFC 9111 §3.5), so no shared cache in front hands it to other users.
    pub async fn respond(&self, req: &HttpRequest) -> HttpResponse {
        let mut res = self.respond_sections(req).await;
        let policy = crate::cache_control::for_credentials(self.inner.cache_policy, req);
        if policy.is_private() && !self.inner.cache_policy.is_private() {
            crate::patch_cache_control(res.headers_mut(), &crate::CachePolicy::new().private());
        }
        res
    }

    async fn respond_sections(&self, req: &HttpRequest) -> HttpResponse {
        let inner = &self.inner;
        let Freshness::Sections(sections) = &inner.freshness else {
            tracing::error!(cache = %inner.name, "respond() needs a ResponseCache::sections cache");
            return HttpResponse::InternalServerError().finish();
        };
        let cache_control = inner.cache_control.clone();
        let build_all = || async {
            let generation = inner.generation();
            match revisions(sections, req, generation).await {
                Ok(revs) => match build_parts(sections, &revs, &[], req).await {
                    Ok(parts) => merged_response(sections, &parts, &cache_control),
                    Err(err) => err.error_response(),
                },
                Err(err) => err.error_response(),
            }
        };
        let base = match inner.admit(req) {
            Ok(base) => base,
            Err(label) => return labelled(build_all().await, label),
        };
        // With Redis: the invalidations other instances made up to now (read-your-writes).
        inner.shared.sync_counters(inner).await;
        let generation = inner.generation();
        let revs = match revisions(sections, req, generation).await {
            Ok(revs) => revs,
            Err(err) => {
                tracing::warn!(cache = %inner.name, error = %err, "response cache: section revision failed; not caching this request");
                inner.stats.record(Event::Bypass);
                return labelled(build_all().await, "miss");
            }
        };
        let combined = combine(sections, &revs);
        let key: Arc<str> = Arc::from(base.as_str());
        let mut forced = inner.forced(req);
        let deadline = tokio::time::Instant::now() + inner.lock_timeout;
        let current = |entry: &Entry| {
            entry.sections.len() == revs.len()
                && entry
                    .sections
                    .iter()
                    .zip(&revs)
                    .all(|(p, r)| *p.revision == **r)
        };
        loop {
            let now = inner.now();
            let entry = if forced {
                None
            } else {
                match inner.lookup(&key, req.headers(), &current).await {
                    Some(Slot::Entry(entry)) => Some(entry),
                    _ => None,
                }
            };
            let mut reuse: Option<Arc<Entry>> = None;
            if let Some(entry) = entry {
                let changed: Vec<usize> = (0..sections.len())
                    .filter(|&i| {
                        entry
                            .sections
                            .get(i)
                            .is_none_or(|p| *p.revision != *revs[i])
                    })
                    .collect();
                if forced {
                    // Rebuild everything below.
                } else if changed.is_empty() {
                    entry.verified(now);
                    inner.stats.record(Event::Hit);
                    tracing::debug!(cache = %inner.name, %key, "response cache: hit-revision");
                    return entry.respond(req.method(), req.headers(), "hit-revision", now);
                } else if changed.iter().all(|&i| sections[i].inline) {
                    if let Some(guard) = inner.flights.try_lead(&key) {
                        inner.stats.record(Event::Hit);
                        tracing::debug!(cache = %inner.name, %key, changed = changed.len(), "response cache: rebuilding inline sections");
                        let lead = Lead::new(
                            base,
                            key,
                            guard,
                            Some(combined),
                            generation,
                            Some(Arc::clone(&entry)),
                            "section",
                        );
                        return self
                            .build_detached(req, lead, revs, entry.sections.clone())
                            .await;
                    }
                    // Someone is already rebuilding: wait for it below.
                } else if now.saturating_sub(entry.verified_at()) <= inner.max_stale {
                    // Refreshed here unless another instance is already at it (Redis).
                    let claim = match inner.flights.try_lead(&key) {
                        Some(guard) => inner
                            .shared
                            .try_claim(inner, &key)
                            .await
                            .map(|lease| (guard, lease)),
                        None => None,
                    };
                    if let Some((guard, lease)) = claim {
                        let mut lead = Lead::new(
                            base.clone(),
                            Arc::clone(&key),
                            guard,
                            Some(combined.clone()),
                            generation,
                            Some(Arc::clone(&entry)),
                            "refresh",
                        );
                        lead.lease = lease;
                        let this = self.clone();
                        let (req2, revs2, old) =
                            (req.clone(), revs.clone(), entry.sections.clone());
                        tracing::debug!(cache = %inner.name, %key, "response cache: refresh start");
                        // Why `spawn_refresh`: it counts a panicking refresh as a failure.
                        spawn_refresh(Arc::clone(inner), async move {
                            let res = this.build_and_finish(&req2, lead, revs2, old).await;
                            tracing::debug!(cache = %this.inner.name, status = res.status().as_u16(), "response cache: refresh end");
                        });
                    }
                    inner.stats.record(Event::Stale);
                    tracing::debug!(cache = %inner.name, %key, "response cache: stale served");
                    return entry.respond(req.method(), req.headers(), "stale", now);
                } else {
                    // Too stale to serve; unchanged sections are still current, keep them.
                    reuse = Some(entry);
                }
            }
            match inner.flights.join(&key) {
                Join::Lead(guard) => {
                    // Look again under the claim: another leader may have stored current
                    // sections and ended its flight since the lookup above.
                    if !forced
                        && let Some(Slot::Entry(entry)) = inner.store.get(&key)
                        && current(&entry)
                    {
                        guard.complete(Outcome::Fresh(Arc::clone(&entry)));
                        inner.stats.record(Event::Hit);
                        return entry.respond(
                            req.method(),
                            req.headers(),
                            "hit-revision",
                            inner.now(),
                        );
                    }
                    // Then across instances: one of them builds, the others wait for it.
                    let lease = if forced {
                        inner.shared.try_claim(inner, &key).await.flatten()
                    } else {
                        match inner
                            .shared
                            .claim(inner, &key, req.headers(), deadline, &current)
                            .await
                        {
                            Claimed::Build(lease) => lease,
                            Claimed::Found(found_key, entry) => {
                                inner.keep(&found_key, &entry);
                                guard.complete(Outcome::Fresh(Arc::clone(&entry)));
                                inner.stats.record(Event::Coalesced);
                                return entry.respond(
                                    req.method(),
                                    req.headers(),
                                    "coalesced",
                                    inner.now(),
                                );
                            }
                        }
                    };
                    inner.stats.record(Event::Miss);
                    tracing::debug!(cache = %inner.name, %key, forced, "response cache: miss");
                    let old = match (&reuse, forced) {
                        (Some(entry), false) => entry.sections.clone(),
                        _ => Vec::new(),
                    };
                    let mut lead =
                        Lead::new(base, key, guard, Some(combined), generation, None, "miss");
                    lead.lease = lease;
                    return self.build_detached(req, lead, revs, old).await;
                }
                Join::Wait(waiter) => {
                    match inner
                        .wait(
                            req,
                            &key,
                            waiter,
                            generation,
                            Some(combined.as_str()),
                            deadline,
                        )
                        .await
                    {
                        Some(Plan::Respond(res)) => return res,
                        Some(Plan::Bypass(label)) => return labelled(build_all().await, label),
                        Some(Plan::Lead(_)) => unreachable!("waiting never leads"),
                        None => forced = false,
                    }
                }
            }
        }
    }

    /// Builds the changed sections, merges, and hands the response to the engine to store.
    /// [`build_and_finish`](Self::build_and_finish) as a task of its own, as `serve` runs its
    /// builds: a client that goes away does not cancel the build its waiters depend on, and a
    /// panicking section answers this request 500 while the waiters take over.
    async fn build_detached(
        &self,
        req: &HttpRequest,
        lead: Lead,
        revs: Vec<String>,
        old: Vec<SectionPart>,
    ) -> HttpResponse {
        let this = self.clone();
        let own = req.clone();
        let task =
            actix_rt::spawn(async move { this.build_and_finish(&own, lead, revs, old).await });
        task.await.unwrap_or_else(|err| {
            tracing::error!(cache = %self.inner.name, error = %err, "response cache: section build panicked");
            self.inner.stats.record(Event::RefreshFailure);
            labelled(HttpResponse::InternalServerError().finish(), "miss")
        })
    }

    async fn build_and_finish(
        &self,
        req: &HttpRequest,
        mut lead: Lead,
        revs: Vec<String>,
        old: Vec<SectionPart>,
    ) -> HttpResponse {
        let inner: &Arc<Inner> = &self.inner;
        let Freshness::Sections(sections) = &inner.freshness else {
            unreachable!("only sectioned caches build sections")
        };
        let res = match build_parts(sections, &revs, &old, req).await {
            Ok(parts) => {
                // Why no `Event::Build` here: `finish` counts the build when it stores it;
                // counting here too made every sectioned build count twice.
                let res = merged_response(sections, &parts, &inner.cache_control);
                lead.sections = parts;
                res
            }
            Err(err) => err.error_response(),
        };
        inner.finish(req.method(), req.headers(), lead, res).await
    }
}
