//! The two sides of a build: the leader (runs it, stores what may be stored, hands the
//! outcome to the waiters) and the waiters (wait for that outcome, bounded, and act on it).

use std::sync::Arc;

use actix_web::http::header::{ETAG, HeaderMap, HeaderName, SET_COOKIE};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse};
use futures_util::future::LocalBoxFuture;

use super::{Engine, Plan, Refresher};
use crate::response_cache::entry::{Captured, Entry, SectionPart, Snapshot, capture};
use crate::response_cache::flight::{FlightGuard, Outcome, Waiter};
use crate::response_cache::key::{has_user, vary_values};
use crate::response_cache::stats::Event;
use crate::response_cache::status::{CacheStatus, PassReason, Role, labelled};
use crate::response_cache::storable::{response_unstorable, vary_names};
use crate::response_cache::strategy::{Fingerprint, predates_invalidation};
use crate::response_cache::tier::TierLease;

/// A claim to build the entry for a key.
#[derive(Debug)]
pub(crate) struct Lead {
    pub(super) base: String,
    pub(super) key: Arc<str>,
    pub(super) guard: FlightGuard,
    pub(super) fingerprint: Option<Fingerprint>,
    pub(super) generation: u64,
    /// Bytes that may stand in for a failed build (stale-on-error).
    pub(super) stale: Option<Arc<Entry>>,
    /// The entry whose still-current sections the build keeps.
    pub(super) old: Option<Arc<Entry>>,
    pub(super) role: Role,
    pub(super) lease: Option<TierLease>,
    /// Sections: a rebuild for an invalidation, which leaves the sections that changed only
    /// through their revision to stale-while-revalidate.
    pub(super) defer: bool,
}

impl Lead {
    /// The build ended in an error before producing a response (the middleware's inner
    /// service returned `Err`): a 5xx goes to the waiters as a built 5xx would; a transient
    /// status re-elects a leader among them; anything else lets each run its own request.
    pub(crate) fn fail(self, status: StatusCode) {
        self.guard.complete(if is_transient(status) {
            Outcome::Transient
        } else if status.is_server_error() {
            Outcome::Failed(Arc::new(Snapshot::internal_error()))
        } else {
            Outcome::Unshared
        });
    }

    /// Runs the build of `lead` as a task of its own (a client that goes away does not cancel
    /// it for the waiters) and answers with the leader's response.
    pub(crate) async fn run(
        self,
        engine: &Arc<Engine>,
        req: &HttpRequest,
        refresher: Option<&Refresher>,
    ) -> HttpResponse {
        let build = build(engine, req, Some(&self), refresher);
        let lead = self;
        let (engine2, own) = (Arc::clone(engine), req.clone());
        let task = actix_rt::spawn(async move {
            let (res, parts) = build.await;
            lead.finish(&engine2, own.method(), own.headers(), res, parts)
                .await
        });
        task.await.unwrap_or_else(|err| {
            tracing::error!(cache = %engine.name, error = %err, "response cache: build panicked");
            engine.stats.record(Event::RefreshFailure);
            let status = StatusCode::INTERNAL_SERVER_ERROR;
            labelled(
                HttpResponse::new(status),
                CacheStatus::Miss {
                    stored: false,
                    status,
                },
            )
        })
    }

    pub(super) fn refresh_in_background(
        self,
        engine: &Arc<Engine>,
        req: &HttpRequest,
        refresher: Option<&Refresher>,
    ) {
        let build = build(engine, req, Some(&self), refresher);
        let lead = self;
        let (this, req) = (Arc::clone(engine), req.clone());
        tracing::debug!(cache = %engine.name, key = %lead.key, "response cache: refresh start");
        let task = actix_rt::spawn(async move {
            let (res, parts) = build.await;
            let res = lead
                .finish(&this, req.method(), req.headers(), res, parts)
                .await;
            tracing::debug!(cache = %this.name, status = res.status().as_u16(), "response cache: refresh end");
        });
        // Why a watcher: nobody awaits a background refresh, so a panic in it went unseen;
        // count it in `refresh_failures`, as the stats document. (Its flight claim is
        // dropped with it, so the next stale read refreshes again.)
        let this = Arc::clone(engine);
        actix_rt::spawn(async move {
            if let Err(err) = task.await
                && err.is_panic()
            {
                tracing::error!(cache = %this.name, error = %err, "response cache: refresh panicked; stale bytes kept");
                this.stats.record(Event::RefreshFailure);
            }
        });
    }

    /// Stores what the leader built (if it may be stored), publishes the outcome to the
    /// waiters, and returns the leader's own response.
    pub(crate) async fn finish(
        self,
        engine: &Arc<Engine>,
        method: &Method,
        req_headers: &HeaderMap,
        res: HttpResponse,
        parts: Vec<SectionPart>,
    ) -> HttpResponse {
        let (lead, status) = (self, res.status());
        let unstored = CacheStatus::led(lead.role, false, status);
        if status.is_server_error() || is_transient(status) {
            return lead.failed(engine, method, req_headers, res).await;
        }
        // Why `has_user`: `private` may be stored only under a user's own key. With `key_by`
        // set, an anonymous request's key is shared, and its `private` answer was stored there.
        let keyed_by_user = engine.key_by.is_some() && has_user(&lead.base);
        if let Some(reason) = response_unstorable(status, res.headers(), keyed_by_user) {
            tracing::debug!(cache = %engine.name, key = %lead.key, reason, "response cache: not stored");
            // 304/412 answer one request's preconditions; they say nothing about the resource.
            lead.guard.complete(Outcome::Unshared);
            if !matches!(status.as_u16(), 304 | 412) {
                pass_key(engine, &lead.key, lead.lease).await;
            }
            return labelled(res, unstored);
        }
        let (head, body) = match capture(res, engine.max_entry_bytes).await {
            Captured::Buffered(head, body) => (head, body),
            Captured::Passthrough(res) => {
                tracing::debug!(cache = %engine.name, key = %lead.key, "response cache: body streamed or too large; not stored");
                lead.guard.complete(Outcome::Unshared);
                pass_key(engine, &lead.key, lead.lease).await;
                return labelled(res, unstored);
            }
        };
        engine.stats.record(Event::Build);
        let names: Vec<HeaderName> = vary_names(head.headers())
            .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
            .collect();
        let key = if names.is_empty() {
            Arc::clone(&lead.key)
        } else {
            engine.store.learn_vary(&lead.base, &names, req_headers)
        };
        let mut snapshot = Snapshot::new(status, head.headers(), body);
        let asked = lead.fingerprint.as_ref().map(|f| f.combined.clone());
        let fingerprint = lead
            .fingerprint
            .map(|fingerprint| engine.strategy.as_built(fingerprint, &parts));
        // Some sections kept bytes older than the request's fingerprint (`defer`): what is
        // served is partly stale, and says so (a refresh of the rest follows).
        let partly_stale = fingerprint.as_ref().map(|f| &f.combined) != asked.as_ref();
        if let Some(etag) = engine.strategy.etag(&key, fingerprint.as_ref(), &snapshot) {
            snapshot.headers.insert(ETAG, etag);
        }
        let now = engine.now();
        let revision = fingerprint.map(|f| f.combined.into_boxed_str());
        let vary = vary_values(&names, req_headers);
        let entry = Arc::new(Entry::new(
            snapshot,
            now,
            revision,
            vary,
            parts,
            lead.generation,
        ));
        // An invalidation that happened while this was building wins: keep the bytes out of
        // the store (the waiters, who asked before it, still get them).
        let current = engine.generations.all() == lead.generation;
        if current {
            engine.store.keep(&key, &entry);
            if key != lead.key {
                engine.store.remove(&lead.key);
            }
        }
        tracing::debug!(cache = %engine.name, %key, bytes = entry.snapshot.body.len(), "response cache: stored");
        lead.guard.complete(Outcome::Fresh(Arc::clone(&entry)));
        if current && let Some(tier) = engine.tier() {
            // Awaited (bounded by the tier's timeout), so that when this client hears back the
            // other instances can find the entry; the lease is released only after the value.
            let vary = (!names.is_empty()).then_some((lead.base.as_str(), names.as_slice()));
            let life = engine.strategy.useful_life(engine.max_stale);
            if tier.put(&key, &entry, life, lead.lease, vary).await {
                engine.stats.record(Event::L2Write);
            }
        }
        let status = if partly_stale {
            CacheStatus::Stale {
                collapsed: false,
                failed: None,
            }
        } else {
            CacheStatus::led(lead.role, current, status)
        };
        engine.serve_entry(method, req_headers, &entry, status, now)
    }

    /// A build that failed (5xx, or the transient 408/429): stale bytes stand in for it while
    /// within the stale window; else a transient failure re-elects a leader among the waiters
    /// and any other is shared with them (never stored).
    async fn failed(
        self,
        engine: &Engine,
        method: &Method,
        req_headers: &HeaderMap,
        res: HttpResponse,
    ) -> HttpResponse {
        let (lead, status) = (self, res.status());
        engine.stats.record(Event::RefreshFailure);
        // The window is checked again now: a build that started inside it may end outside.
        let now = engine.now();
        if let Some(stale) = lead.stale.filter(|stale| {
            engine
                .strategy
                .within_stale_window(stale, now, engine.max_stale)
        }) {
            tracing::warn!(cache = %engine.name, key = %lead.key, status = status.as_u16(), "response cache: refresh failed; serving stale");
            lead.guard
                .complete(Outcome::Stale(Arc::clone(&stale), status));
            engine.stats.record(Event::Stale);
            let served = CacheStatus::Stale {
                collapsed: false,
                failed: Some(status),
            };
            return engine.serve_entry(method, req_headers, &stale, served, now);
        }
        tracing::warn!(cache = %engine.name, key = %lead.key, status = status.as_u16(), "response cache: build failed; nothing stale to serve");
        let unstored = CacheStatus::led(lead.role, false, status);
        if is_transient(status) {
            lead.guard.complete(Outcome::Transient);
            return labelled(res, unstored);
        }
        if res.headers().contains_key(SET_COOKIE) {
            lead.guard.complete(Outcome::Unshared);
            return labelled(res, unstored);
        }
        match capture(res, engine.max_entry_bytes).await {
            Captured::Buffered(head, body) => {
                let snapshot = Snapshot::new(status, head.headers(), body);
                let res = labelled(snapshot.to_response(), unstored);
                lead.guard.complete(Outcome::Failed(Arc::new(snapshot)));
                res
            }
            Captured::Passthrough(res) => {
                lead.guard.complete(Outcome::Unshared);
                labelled(res, unstored)
            }
        }
    }
}

/// Remembers for `hit_for_miss` that `key`'s responses are not shared, here and in the shared
/// tier (then releasing `lease`), so requests for it, on every instance, run side by side
/// instead of queueing behind one another (Varnish's hit-for-pass).
async fn pass_key(engine: &Engine, key: &Arc<str>, lease: Option<TierLease>) {
    engine
        .store
        .mark_unshared(key, engine.now() + engine.hit_for_miss);
    if let Some(tier) = engine.tier() {
        tier.put_pass(key, engine.hit_for_miss, lease).await;
    }
}

/// The response for `req` and, for sections, its parts: `refresher`'s, or the cache's own.
pub(super) fn build(
    engine: &Arc<Engine>,
    req: &HttpRequest,
    lead: Option<&Lead>,
    refresher: Option<&Refresher>,
) -> LocalBoxFuture<'static, (HttpResponse, Vec<SectionPart>)> {
    if let (false, Some(refresher)) = (engine.builds_itself(), refresher) {
        let build = refresher(req.clone());
        return Box::pin(async move { (build.await, Vec::new()) });
    }
    let (this, req) = (Arc::clone(engine), req.clone());
    let (fingerprint, old, defer) = lead.map_or((None, None, false), |l| {
        (l.fingerprint.clone(), l.old.clone(), l.defer)
    });
    Box::pin(async move {
        let fingerprint = match fingerprint {
            Some(fingerprint) => Some(fingerprint),
            None => match this.strategy.fingerprint(&req, &this.generations).await {
                Ok(fingerprint) => fingerprint,
                Err(err) => return (err.error_response(), Vec::new()),
            },
        };
        this.strategy
            .build_sections(&req, fingerprint.as_ref(), old.as_deref(), defer)
            .await
    })
}

/// Waits for another request's build; `None` means join again: its leader is gone or
/// failed transiently (one waiter is re-elected), or it built before an invalidation this
/// request saw (`generation`).
pub(super) async fn wait(
    engine: &Engine,
    req: &HttpRequest,
    key: &str,
    waiter: Waiter,
    generation: u64,
    fp: Option<&Fingerprint>,
    deadline: tokio::time::Instant,
) -> Option<Plan> {
    let outcome = tokio::time::timeout_at(deadline, waiter.outcome()).await;
    match outcome {
        // Why: a build that started before an invalidation this request already saw (say,
        // its own client's write, of the cache or of one of its sections) holds the old
        // data: join again (read-your-writes).
        Ok(Some(Outcome::Fresh(entry)))
            if entry.generation < generation
                || fp.is_some_and(|fp| predates_invalidation(&entry, generation, fp)) =>
        {
            tracing::debug!(cache = %engine.name, %key, "response cache: flight predates an invalidation, retrying");
            None
        }
        // Built under an older fingerprint than this request saw: still the freshest bytes
        // there are, but say so (`stale`, with an `Age` past their lifetime).
        Ok(Some(Outcome::Fresh(entry)))
            if fp.is_some_and(|fp| entry.revision.as_deref() != Some(&fp.combined)) =>
        {
            Some(engine.coalesced(
                req,
                &entry,
                CacheStatus::Stale {
                    collapsed: true,
                    failed: None,
                },
            ))
        }
        Ok(Some(Outcome::Fresh(entry))) => {
            let status = CacheStatus::Coalesced {
                status: entry.snapshot.status,
            };
            Some(engine.coalesced(req, &entry, status))
        }
        Ok(Some(Outcome::Stale(entry, failed))) => {
            let status = CacheStatus::Stale {
                collapsed: true,
                failed: Some(failed),
            };
            Some(engine.coalesced(req, &entry, status))
        }
        Ok(Some(Outcome::Failed(snapshot))) => {
            engine.stats.record(Event::Coalesced);
            let status = CacheStatus::Coalesced {
                status: snapshot.status,
            };
            Some(Plan::Respond(labelled(snapshot.to_response(), status)))
        }
        Ok(Some(Outcome::Unshared)) => {
            // Not shareable: every waiter fetches on its own at once (and the key is
            // remembered as hit-for-pass by its leader).
            engine.stats.record(Event::LockPass);
            Some(engine.pass(PassReason::LeaderUncacheable))
        }
        // Our instance's leader gave up waiting for another instance's build at its own
        // deadline; ours is later: join again, and wait (or lead the wait) until it.
        Ok(Some(Outcome::TimedOut)) => None,
        Ok(Some(Outcome::Transient)) => {
            tracing::debug!(cache = %engine.name, %key, "response cache: leader failed transiently, re-electing");
            engine.stats.record(Event::LockTransient);
            None
        }
        Ok(None) => {
            // The leader was cancelled or its task dropped: one of the waiters takes over.
            tracing::debug!(cache = %engine.name, %key, "response cache: leader gone, retrying");
            engine.stats.record(Event::LockDangling);
            None
        }
        Err(_elapsed) => {
            tracing::warn!(cache = %engine.name, %key, timeout = ?engine.lock_timeout,
                "response cache: waited too long for another request's build; building without storing");
            engine.stats.record(Event::LockTimeout);
            Some(engine.pass(PassReason::LockTimeout))
        }
    }
}

/// A failure that concerns the leader's own request rather than the resource (RFC 9110
/// §15.5.9 Request Timeout, RFC 6585 §4 Too Many Requests): never handed to the requests that
/// waited for it; one of them builds again instead.
fn is_transient(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429)
}
