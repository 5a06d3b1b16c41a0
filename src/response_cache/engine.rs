//! The decision every cached request goes through, shared by [`ResponseCache::serve`] and the
//! middleware: look up, classify (fresh, stale, expired), join the key's flight, and store what
//! the leader built.
//!
//! [`ResponseCache::serve`]: super::ResponseCache::serve

use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix_web::HttpRequest;
use actix_web::HttpResponse;
use actix_web::http::Method;
use actix_web::http::header::{ETAG, HeaderMap, HeaderName, HeaderValue, SET_COOKIE};
use futures_util::future::LocalBoxFuture;

use super::entry::{Captured, Entry, SectionPart, Snapshot, X_CACHE, capture};
use super::flight::{FlightGuard, Join, Outcome, Waiter};
use super::key::{base_key, full_key, has_user, query_forces_refresh, vary_matches, vary_values};
use super::shared::{Claimed, Lease};
use super::stats::Event;
use super::storable::{request_bypass, response_unstorable, vary_names};
use super::{Freshness, Inner, Slot};
use crate::cache_control::cache_control_contains;

/// Where the cache's clock starts: 2^30 s (34 years), so any entry's age fits before it.
const EPOCH: Duration = Duration::from_secs(1 << 30);

/// Re-runs the handler for a request: what a background refresh calls.
pub(crate) type Refresher = Rc<dyn Fn(HttpRequest) -> LocalBoxFuture<'static, HttpResponse>>;

/// What to do with a request.
pub(crate) enum Plan {
    /// Answer with this (hit, stale, coalesced, 304).
    Respond(HttpResponse),
    /// Run the handler and give its response to [`Inner::finish`].
    Lead(Lead),
    /// Run the handler and label its response with this `X-Cache` value; store nothing.
    Bypass(&'static str),
}

/// A claim to build the entry for a key.
#[derive(Debug)]
pub(crate) struct Lead {
    base: String,
    key: Arc<str>,
    guard: FlightGuard,
    revision: Option<String>,
    generation: u64,
    stale: Option<Arc<Entry>>,
    label: &'static str,
    /// Sections already built for this response (sectioned mode).
    pub(crate) sections: Vec<SectionPart>,
    /// The claim on building this key across instances (Redis), released with the value.
    pub(crate) lease: Option<Lease>,
}

impl Lead {
    pub(crate) fn new(
        base: String,
        key: Arc<str>,
        guard: FlightGuard,
        revision: Option<String>,
        generation: u64,
        stale: Option<Arc<Entry>>,
        label: &'static str,
    ) -> Self {
        Self {
            base,
            key,
            guard,
            revision,
            generation,
            stale,
            label,
            sections: Vec::new(),
            lease: None,
        }
    }
}

impl Lead {
    /// The build ended in an error before producing a response (the middleware's inner
    /// service returned `Err`): a 5xx goes to the waiters as the build's own 5xx would;
    /// anything else lets each waiter run its own request.
    pub(crate) fn fail(self, status: actix_web::http::StatusCode) {
        if status.is_server_error() {
            self.guard
                .complete(Outcome::Failed(Arc::new(Snapshot::internal_error())));
        } else {
            self.guard.complete(Outcome::Unshared);
        }
    }
}

enum State {
    Fresh(&'static str),
    Stale,
    Expired,
}

impl Inner {
    /// The current time as an offset from the cache's origin, plus [`EPOCH`]: an entry
    /// read from Redis may predate this process, and its build time must still fit.
    pub(crate) fn now(&self) -> Duration {
        self.clock.now().saturating_duration_since(self.origin) + EPOCH
    }

    /// Decides how to answer `req`. `refresher` is given by [`serve`](super::ResponseCache::serve),
    /// which can rebuild in the background; the middleware cannot (actix's router needs the
    /// request uniquely owned), so there the first stale reader refreshes in the foreground.
    pub(crate) async fn plan(
        self: &Arc<Self>,
        req: &HttpRequest,
        refresher: Option<&Refresher>,
    ) -> Plan {
        let base = match self.admit(req) {
            Ok(base) => base,
            Err(label) => return Plan::Bypass(label),
        };
        let mut forced = self.forced(req);
        // With Redis: the invalidations other instances made up to now (read-your-writes).
        self.shared.sync_counters(self).await;
        let generation = self.generation();
        let revision = match self.current_revision(req, generation).await {
            Ok(revision) => revision,
            Err(err) => {
                tracing::warn!(cache = %self.name, error = %err, "response cache: revision failed; not caching this request");
                self.stats.record(Event::Bypass);
                return Plan::Bypass("miss");
            }
        };
        let names = if self.any_vary.load(std::sync::atomic::Ordering::Relaxed) {
            self.learned_vary.get(base.as_str()).unwrap_or_default()
        } else {
            Arc::default()
        };
        let vary = vary_values(&names, req.headers());
        let key = full_key(&base, &vary);
        // One deadline for all of this request's waits, however often it has to join again.
        let deadline = tokio::time::Instant::now() + self.lock_timeout;
        // Why: HEAD is served from the GET entry but must never build it. The route may not
        // take HEAD (a GET-only route answers 404/405), or answer it without a body; storing
        // that replaced the GET entry or marked the key hit-for-miss, uncaching its GETs.
        let may_lead = req.method() != Method::HEAD;

        let fresh = |entry: &Entry| {
            matches!(
                self.state(entry, self.now(), revision.as_deref(), generation),
                State::Fresh(_)
            )
        };

        loop {
            let now = self.now();
            if !forced {
                match self.lookup(&key, req.headers(), &fresh).await {
                    Some(Slot::Unshared { until }) if now < until => {
                        self.stats.record(Event::Bypass);
                        return Plan::Bypass("miss");
                    }
                    Some(Slot::Entry(entry)) if vary_matches(&entry.vary, req.headers()) => {
                        match self.state(&entry, now, revision.as_deref(), generation) {
                            State::Fresh(label) => {
                                // Only a revision check verifies the bytes; a TTL hit does not.
                                if revision.is_some() {
                                    entry.verified(now);
                                }
                                self.stats.record(Event::Hit);
                                tracing::debug!(cache = %self.name, %key, label, "response cache: hit");
                                return Plan::Respond(entry.respond(
                                    req.method(),
                                    req.headers(),
                                    label,
                                    now,
                                ));
                            }
                            State::Stale => {
                                if may_lead && let Some(guard) = self.flights.try_lead(&key) {
                                    // Across instances too: if another one is refreshing this
                                    // key, serve stale and let its result reach us via Redis.
                                    if let Some(lease) = self.shared.try_claim(self, &key).await {
                                        let mut lead = Lead::new(
                                            base.clone(),
                                            Arc::clone(&key),
                                            guard,
                                            revision.clone(),
                                            generation,
                                            Some(Arc::clone(&entry)),
                                            "refresh",
                                        );
                                        lead.lease = lease;
                                        match refresher {
                                            Some(refresher) => {
                                                self.refresh_in_background(req, lead, refresher)
                                            }
                                            None => {
                                                self.stats.record(Event::Miss);
                                                tracing::debug!(cache = %self.name, %key, "response cache: stale, refreshing in this request");
                                                return Plan::Lead(lead);
                                            }
                                        }
                                    }
                                }
                                self.stats.record(Event::Stale);
                                tracing::debug!(cache = %self.name, %key, "response cache: stale served");
                                return Plan::Respond(entry.respond(
                                    req.method(),
                                    req.headers(),
                                    "stale",
                                    now,
                                ));
                            }
                            State::Expired => {}
                        }
                    }
                    _ => {}
                }
            }
            if !may_lead {
                self.stats.record(Event::Bypass);
                return Plan::Bypass("miss");
            }
            match self.flights.join(&key) {
                Join::Lead(guard) => {
                    // Look again under the claim: another leader may have stored the entry and
                    // ended its flight between the lookup above and this join (a second build
                    // in ~2% of cold bursts otherwise).
                    if !forced
                        && let Some(Slot::Entry(entry)) = self.store.get(&key)
                        && vary_matches(&entry.vary, req.headers())
                        && let State::Fresh(label) =
                            self.state(&entry, self.now(), revision.as_deref(), generation)
                    {
                        guard.complete(Outcome::Fresh(Arc::clone(&entry)));
                        self.stats.record(Event::Hit);
                        return Plan::Respond(entry.respond(
                            req.method(),
                            req.headers(),
                            label,
                            self.now(),
                        ));
                    }
                    // Then across instances: one of them builds, the others wait for it.
                    let lease = if forced {
                        self.shared.try_claim(self, &key).await.flatten()
                    } else {
                        let usable = |entry: &Entry| {
                            vary_matches(&entry.vary, req.headers()) && fresh(entry)
                        };
                        match self
                            .shared
                            .claim(self, &key, req.headers(), deadline, &usable)
                            .await
                        {
                            Claimed::Build(lease) => lease,
                            Claimed::Found(found_key, entry) => {
                                self.keep(&found_key, &entry);
                                guard.complete(Outcome::Fresh(Arc::clone(&entry)));
                                self.stats.record(Event::Coalesced);
                                tracing::debug!(cache = %self.name, %key, "response cache: built by another instance");
                                return Plan::Respond(entry.respond(
                                    req.method(),
                                    req.headers(),
                                    "coalesced",
                                    self.now(),
                                ));
                            }
                        }
                    };
                    self.stats.record(Event::Miss);
                    tracing::debug!(cache = %self.name, %key, forced, "response cache: miss");
                    let mut lead = Lead::new(base, key, guard, revision, generation, None, "miss");
                    lead.lease = lease;
                    return Plan::Lead(lead);
                }
                Join::Wait(waiter) => {
                    match self
                        .wait(req, &key, waiter, generation, revision.as_deref(), deadline)
                        .await
                    {
                        Some(plan) => return plan,
                        None => forced = false,
                    }
                }
            }
        }
    }

    /// What the cache holds for `key`: this instance's entry if `fresh` says it is, else
    /// (with Redis) the shared one when it is fresh or newer, else whatever is local.
    pub(crate) async fn lookup(
        &self,
        key: &Arc<str>,
        req_headers: &HeaderMap,
        fresh: &dyn Fn(&Entry) -> bool,
    ) -> Option<Slot> {
        let local = self.store.get(key);
        let local_entry = match &local {
            Some(Slot::Unshared { until }) if self.now() < *until => return local,
            Some(Slot::Entry(entry)) if vary_matches(&entry.vary, req_headers) => {
                if fresh(entry) {
                    return local;
                }
                Some(Arc::clone(entry))
            }
            _ => None,
        };
        // Why not while this instance builds the key: its waiters get the result, and a stale
        // reader is answered from memory; asking Redis for every such read would only load it.
        if !self.shared.is_shared() || self.flights.in_progress(key) {
            return local;
        }
        let Some((remote_key, remote)) = self.shared.get(self, key, req_headers).await else {
            return local;
        };
        if !vary_matches(&remote.vary, req_headers) {
            return local;
        }
        let better = local_entry
            .as_ref()
            .is_none_or(|l| fresh(&remote) || remote.stored_at > l.stored_at);
        if !better {
            return local;
        }
        tracing::debug!(cache = %self.name, key = %remote_key, "response cache: found in redis");
        self.keep(&remote_key, &remote);
        Some(Slot::Entry(remote))
    }

    /// Keeps an entry from the shared tier in this instance's memory, if it has one.
    pub(crate) fn keep(&self, key: &Arc<str>, entry: &Arc<Entry>) {
        if self.shared.l1 {
            self.store
                .insert(Arc::clone(key), Slot::Entry(Arc::clone(entry)));
        }
    }

    /// The URL part of the key, or the `X-Cache` label for a request the cache must not touch.
    pub(crate) fn admit(&self, req: &HttpRequest) -> Result<String, &'static str> {
        let keyed_by_user = self.key_by.is_some();
        let mut reason = request_bypass(req, keyed_by_user);
        let user = match (&self.key_by, reason) {
            (Some(key_by), None) => {
                let user = key_by(req);
                if user.is_none() && request_bypass(req, false).is_some() {
                    reason = Some("credentials without a user key");
                }
                user
            }
            _ => None,
        };
        if let Some(reason) = reason {
            self.stats.record(Event::Bypass);
            tracing::debug!(cache = %self.name, reason, "response cache: bypass");
            return Err("bypass");
        }
        Ok(base_key(req, user.as_deref(), self.forced_refresh))
    }

    /// Whether the client asked for a rebuild (`?refresh=true`, `Cache-Control: no-cache`).
    pub(crate) fn forced(&self, req: &HttpRequest) -> bool {
        self.forced_refresh
            && (query_forces_refresh(req.query_string())
                || cache_control_contains(req.headers(), "no-cache"))
    }

    /// Waits for another request's build; `None` means its leader gave up, or built before an
    /// invalidation this request saw (`generation`): join again.
    pub(crate) async fn wait(
        &self,
        req: &HttpRequest,
        key: &str,
        waiter: Waiter,
        generation: u64,
        revision: Option<&str>,
        deadline: tokio::time::Instant,
    ) -> Option<Plan> {
        match tokio::time::timeout_at(deadline, waiter.outcome()).await {
            // Why: a build that started before an invalidation this request already saw (say,
            // its own client's write) holds the old data; it is not stored, and must not be
            // handed to this request either (read-your-writes). Join again.
            Ok(Some(Outcome::Fresh(entry))) if entry.generation < generation => {
                tracing::debug!(cache = %self.name, %key, "response cache: flight predates an invalidation, retrying");
                None
            }
            // Built under an older fingerprint than this request saw (the data changed while
            // it was building): still the freshest bytes there are, but say so (`stale`, with
            // an `Age` past their lifetime) rather than present them as current.
            Ok(Some(Outcome::Fresh(entry)))
                if revision.is_some() && entry.revision.as_deref() != revision =>
            {
                Some(self.coalesced(req, &entry, "stale"))
            }
            Ok(Some(Outcome::Fresh(entry))) => Some(self.coalesced(req, &entry, "coalesced")),
            Ok(Some(Outcome::Stale(entry))) => Some(self.coalesced(req, &entry, "stale")),
            Ok(Some(Outcome::Failed(snapshot))) => {
                self.stats.record(Event::Coalesced);
                Some(Plan::Respond(labelled(snapshot.to_response(), "coalesced")))
            }
            Ok(Some(Outcome::Unshared)) => {
                self.stats.record(Event::Bypass);
                Some(Plan::Bypass("miss"))
            }
            Ok(None) => {
                // The leader panicked or was cancelled: join again; one of the waiters
                // becomes the new leader.
                tracing::debug!(cache = %self.name, %key, "response cache: leader gone, retrying");
                None
            }
            Err(_elapsed) => {
                tracing::warn!(cache = %self.name, %key, timeout = ?self.lock_timeout,
                    "response cache: waited too long for another request's build; building without storing");
                self.stats.record(Event::Bypass);
                Some(Plan::Bypass("miss"))
            }
        }
    }

    fn coalesced(&self, req: &HttpRequest, entry: &Entry, label: &'static str) -> Plan {
        if !vary_matches(&entry.vary, req.headers()) {
            // Built for another variant (its `Vary` was not known yet): build our own.
            self.stats.record(Event::Bypass);
            return Plan::Bypass("miss");
        }
        self.stats.record(Event::Coalesced);
        Plan::Respond(entry.respond(req.method(), req.headers(), label, self.now()))
    }

    fn state(
        &self,
        entry: &Entry,
        now: Duration,
        revision: Option<&str>,
        generation: u64,
    ) -> State {
        match &self.freshness {
            Freshness::Ttl(ttl) => {
                if entry.generation != generation {
                    return State::Expired;
                }
                let age = now.saturating_sub(entry.stored_at);
                if age < *ttl {
                    State::Fresh("hit")
                } else if age < *ttl + self.max_stale {
                    State::Stale
                } else {
                    State::Expired
                }
            }
            Freshness::Revision(_) | Freshness::Sections(_) => {
                if entry.revision.as_deref() == revision {
                    State::Fresh("hit-revision")
                } else if now.saturating_sub(entry.verified_at()) <= self.max_stale {
                    State::Stale
                } else {
                    State::Expired
                }
            }
        }
    }

    /// Whether stale bytes may still be served: within `max_stale` past the TTL (TTL mode),
    /// or since they were last known current (revision modes).
    fn within_stale_window(&self, entry: &Entry, now: Duration) -> bool {
        match &self.freshness {
            Freshness::Ttl(ttl) => now.saturating_sub(entry.stored_at) < *ttl + self.max_stale,
            Freshness::Revision(_) | Freshness::Sections(_) => {
                now.saturating_sub(entry.verified_at()) <= self.max_stale
            }
        }
    }

    pub(crate) fn refresh_in_background(
        self: &Arc<Self>,
        req: &HttpRequest,
        lead: Lead,
        refresher: &Refresher,
    ) {
        let inner = Arc::clone(self);
        let req = req.clone();
        let build = refresher(req.clone());
        tracing::debug!(cache = %self.name, key = %lead.key, "response cache: refresh start");
        spawn_refresh(Arc::clone(self), async move {
            let res = build.await;
            let key = Arc::clone(&lead.key);
            let res = inner.finish(req.method(), req.headers(), lead, res).await;
            tracing::debug!(cache = %inner.name, %key, status = res.status().as_u16(), "response cache: refresh end");
        });
    }

    /// Stores what the leader built (if it may be stored), publishes the outcome to the
    /// waiters, and returns the leader's own response.
    pub(crate) async fn finish(
        self: &Arc<Self>,
        method: &Method,
        req_headers: &HeaderMap,
        lead: Lead,
        res: HttpResponse,
    ) -> HttpResponse {
        let status = res.status();
        // Why `has_user`: `private` may be stored only under a user's own key. With `key_by`
        // set, an anonymous request's key is shared, and its `private` answer was stored there.
        let keyed_by_user = self.key_by.is_some() && has_user(&lead.base);
        // 5xx, and the transient 408/429: a failed build, shared, never stored, and covered by
        // stale bytes while they are within the stale window.
        if status.is_server_error() || matches!(status.as_u16(), 408 | 429) {
            self.stats.record(Event::RefreshFailure);
            // The window is checked again now: a build that started inside it may end outside.
            let now = self.now();
            let stale = lead
                .stale
                .filter(|stale| self.within_stale_window(stale, now));
            if let Some(stale) = stale {
                tracing::warn!(cache = %self.name, key = %lead.key, status = status.as_u16(),
                    "response cache: refresh failed; serving stale");
                lead.guard.complete(Outcome::Stale(Arc::clone(&stale)));
                self.stats.record(Event::Stale);
                return stale.respond(method, req_headers, "stale", self.now());
            }
            tracing::warn!(cache = %self.name, key = %lead.key, status = status.as_u16(),
                "response cache: build failed; nothing stale to serve");
            if res.headers().contains_key(SET_COOKIE) {
                lead.guard.complete(Outcome::Unshared);
                return labelled(res, lead.label);
            }
            return match capture(res, self.max_entry_bytes).await {
                Captured::Buffered(head, body) => {
                    let snapshot = Snapshot::new(status, head.headers(), body);
                    let res = labelled(snapshot.to_response(), lead.label);
                    lead.guard.complete(Outcome::Failed(Arc::new(snapshot)));
                    res
                }
                Captured::Passthrough(res) => {
                    lead.guard.complete(Outcome::Unshared);
                    labelled(res, lead.label)
                }
            };
        }
        if let Some(reason) = response_unstorable(status, res.headers(), keyed_by_user) {
            tracing::debug!(cache = %self.name, key = %lead.key, reason, "response cache: not stored");
            // 304/412 answer one request's preconditions; they say nothing about the resource.
            if !matches!(status.as_u16(), 304 | 412) {
                self.mark_unshared(&lead.key);
            }
            lead.guard.complete(Outcome::Unshared);
            return labelled(res, lead.label);
        }
        let (head, body) = match capture(res, self.max_entry_bytes).await {
            Captured::Buffered(head, body) => (head, body),
            Captured::Passthrough(res) => {
                tracing::debug!(cache = %self.name, key = %lead.key, "response cache: body streamed or too large; not stored");
                self.mark_unshared(&lead.key);
                lead.guard.complete(Outcome::Unshared);
                return labelled(res, lead.label);
            }
        };
        self.stats.record(Event::Build);
        let names: Vec<HeaderName> = vary_names(head.headers())
            .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
            .collect();
        let vary = vary_values(&names, req_headers);
        let key = if names.is_empty() {
            Arc::clone(&lead.key)
        } else {
            self.learned_vary
                .insert(Arc::from(lead.base.as_str()), Arc::from(names.clone()));
            self.any_vary
                .store(true, std::sync::atomic::Ordering::Relaxed);
            full_key(&lead.base, &vary)
        };
        let mut snapshot = Snapshot::new(status, head.headers(), body);
        let etag = match lead.revision.as_deref() {
            // Revision mode: the tag follows the fingerprint, so a 304 needs no body.
            Some(revision) => Some(revision_etag(&key, revision)),
            None if snapshot.etag().is_none() => Some(self.hasher.etag(&snapshot.body)),
            None => None,
        };
        if let Some(etag) = etag {
            snapshot.headers.insert(ETAG, etag);
        }
        let now = self.now();
        let entry = Arc::new(Entry::new(
            snapshot,
            now,
            lead.revision.map(String::into_boxed_str),
            vary,
            lead.sections,
            lead.generation,
        ));
        // An invalidation that happened while this was building wins: keep the bytes out of
        // the store (the waiters, who asked before it, still get them).
        let current = self.generation() == lead.generation;
        if current {
            self.keep(&key, &entry);
            if key != lead.key {
                self.store.invalidate(&lead.key);
            }
        }
        tracing::debug!(cache = %self.name, %key, bytes = entry.snapshot.body.len(), "response cache: stored");
        lead.guard.complete(Outcome::Fresh(Arc::clone(&entry)));
        if current {
            // Awaited (bounded by the Redis timeout), so that when this client hears back, the
            // other instances can find the entry; the lease is released only after the value.
            let vary = (!names.is_empty()).then_some((lead.base.as_str(), names.as_slice()));
            self.shared.put(self, &key, &entry, lead.lease, vary).await;
        }
        entry.respond(method, req_headers, lead.label, now)
    }

    /// Remembers for a while that a key's responses are not shared, so requests for it run
    /// side by side instead of queueing behind one another (Varnish's hit-for-miss).
    fn mark_unshared(&self, key: &Arc<str>) {
        let until = self.now() + self.hit_for_miss;
        self.store.insert(Arc::clone(key), Slot::Unshared { until });
    }
}

/// Runs a background refresh as a task of its own.
///
/// Why the second task: nobody awaits a background refresh, so a panic in it went unseen;
/// this one watches it and counts the panic in `refresh_failures`, as the stats document.
/// (The refresh's flight claim is dropped with it, so the next stale read refreshes again.)
pub(crate) fn spawn_refresh(inner: Arc<Inner>, refresh: impl Future<Output = ()> + 'static) {
    let task = actix_rt::spawn(refresh);
    actix_rt::spawn(async move {
        if let Err(err) = task.await
            && err.is_panic()
        {
            tracing::error!(cache = %inner.name, error = %err, "response cache: refresh panicked; stale bytes kept");
            inner.stats.record(Event::RefreshFailure);
        }
    });
}

/// Sets `X-Cache` on a response the cache did not store.
pub(crate) fn labelled(mut res: HttpResponse, label: &'static str) -> HttpResponse {
    res.headers_mut()
        .insert(X_CACHE, HeaderValue::from_static(label));
    res
}

/// The strong ETag for a revision fingerprint: `"rv-"` and 32 hex digits of XXH3-128 over the
/// key and the fingerprint, so two variants (`Vary`) never share a tag.
pub(crate) fn revision_etag(key: &str, revision: &str) -> HeaderValue {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(key.as_bytes());
    hasher.update(b"\0");
    hasher.update(revision.as_bytes());
    let tag = format!("\"rv-{:032x}\"", hasher.digest128());
    HeaderValue::from_str(&tag).expect("hex in quotes is a valid header value")
}
