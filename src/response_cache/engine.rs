//! The engine behind every [`ResponseCache`](super::ResponseCache): one decision loop for
//! every mode and entry point (`serve`, sections, middleware). A request is admitted, its
//! fingerprint taken, the entry classified by the cache's [`Strategy`] (fresh, patch, stale,
//! expired), and then it is answered, or it leads or waits for the key's build; the leader's
//! response is stored and handed to the waiters.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::header::{ETAG, HeaderMap, HeaderName, SET_COOKIE};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse};
use futures_util::future::LocalBoxFuture;

use super::clock::Clock;
use super::entry::{Captured, Entry, SectionPart, Snapshot, capture};
use super::flight::{FlightGuard, Flights, Join, Outcome, Waiter};
use super::generations::Generations;
use super::key::{base_key, has_user, query_forces_refresh, vary_matches, vary_values};
use super::stats::{Event, Stats};
use super::status::{CacheStatus, PassReason, Role, labelled};
use super::storable::{request_bypass, response_unstorable, vary_names};
use super::store::{Slot, Store};
use super::strategy::{Fingerprint, State, Strategy};
use super::tier::{self, Claimed, Invalidation, SharedTier, TierLease};
use crate::cache_control::cache_control_contains;

/// Where the cache's clock starts: 2^30 s (34 years), so any entry's age fits before it
/// (an entry read from a shared tier may predate this process).
const EPOCH: Duration = Duration::from_secs(1 << 30);

/// Re-runs the handler for a request: what `serve` builds and refreshes with.
pub(crate) type Refresher = Rc<dyn Fn(HttpRequest) -> LocalBoxFuture<'static, HttpResponse>>;
/// Names the user behind a credentialed request (`key_by`).
pub(crate) type UserKeyFn = Arc<dyn Fn(&HttpRequest) -> Option<String> + Send + Sync>;

/// Everything an engine is built from (assembled by the mode builders).
pub(crate) struct Settings {
    pub(crate) name: Arc<str>,
    pub(crate) strategy: Strategy,
    pub(crate) max_stale: Duration,
    pub(crate) max_bytes: u64,
    pub(crate) max_entry_bytes: usize,
    pub(crate) lock_timeout: Duration,
    pub(crate) hit_for_miss: Duration,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) key_by: Option<UserKeyFn>,
    pub(crate) forced_refresh: bool,
    /// Connects a shared tier to the cache's counters and stats, if it has one.
    pub(crate) tier: Option<TierFactory>,
    pub(crate) memory_copies: bool,
}

/// Makes a cache's shared tier, given its counters and stats.
pub(crate) type TierFactory = Box<dyn FnOnce(Arc<Generations>, Arc<Stats>) -> Arc<dyn SharedTier>>;

/// What to do with a request.
pub(crate) enum Plan {
    /// Answer with this (hit, stale, coalesced, 304).
    Respond(HttpResponse),
    /// Build the response and give it to [`Engine::finish`].
    Lead(Lead),
    /// Run the handler for this request alone and store nothing.
    Pass(CacheStatus),
}

/// A claim to build the entry for a key.
#[derive(Debug)]
pub(crate) struct Lead {
    base: String,
    key: Arc<str>,
    guard: FlightGuard,
    fingerprint: Option<Fingerprint>,
    generation: u64,
    /// Bytes that may stand in for a failed build (stale-on-error).
    stale: Option<Arc<Entry>>,
    /// The entry whose still-current sections the build keeps.
    old: Option<Arc<Entry>>,
    role: Role,
    lease: Option<TierLease>,
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
}

/// A response cache's state and its one decision loop.
pub(crate) struct Engine {
    name: Arc<str>,
    strategy: Strategy,
    generations: Arc<Generations>,
    store: Store,
    tier: Option<Arc<dyn SharedTier>>,
    flights: Arc<Flights>,
    stats: Arc<Stats>,
    clock: Arc<dyn Clock>,
    origin: Instant,
    max_stale: Duration,
    max_entry_bytes: usize,
    lock_timeout: Duration,
    hit_for_miss: Duration,
    key_by: Option<UserKeyFn>,
    forced_refresh: bool,
}

impl Engine {
    pub(crate) fn new(settings: Settings) -> Self {
        let stats = Arc::new(Stats::new(&settings.name));
        let life = settings.strategy.useful_life(settings.max_stale);
        let by_age = settings.strategy.expires_by_age();
        let store = Store::new(
            &settings.name,
            settings.max_bytes,
            life,
            by_age,
            settings.memory_copies || settings.tier.is_none(),
            &stats,
        );
        // A TTL entry built before an invalidation is never served again: free its memory.
        let on_invalidate_all =
            by_age.then(|| Box::new(store.clearer()) as Box<dyn Fn() + Send + Sync>);
        let generations = Arc::new(Generations::new(
            &settings.name,
            settings.strategy.section_names(),
            on_invalidate_all,
        ));
        let tier = settings
            .tier
            .map(|make| make(Arc::clone(&generations), Arc::clone(&stats)));
        Self {
            name: settings.name,
            strategy: settings.strategy,
            generations,
            store,
            tier,
            flights: Arc::default(),
            stats,
            origin: settings.clock.now(),
            clock: settings.clock,
            max_stale: settings.max_stale,
            max_entry_bytes: settings.max_entry_bytes,
            lock_timeout: settings.lock_timeout,
            hit_for_miss: settings.hit_for_miss,
            key_by: settings.key_by,
            forced_refresh: settings.forced_refresh,
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn stats(&self) -> &Stats {
        &self.stats
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// Whether the cache builds its own responses (sections) instead of running a handler.
    pub(crate) fn builds_itself(&self) -> bool {
        self.strategy.builds_itself()
    }

    /// The current time on the cache's clock, as an offset from its origin plus [`EPOCH`].
    fn now(&self) -> Duration {
        self.clock.now().saturating_duration_since(self.origin) + EPOCH
    }

    fn tier(&self) -> Option<&dyn SharedTier> {
        self.tier.as_deref()
    }

    /// Invalidates `section` (or everything) here at once, and tells the shared tier.
    pub(crate) fn invalidate(&self, section: Option<&str>) -> Invalidation {
        let (section, value) = self.generations.bump(section);
        tracing::debug!(cache = %self.name, ?section, generation = value, "response cache: invalidated");
        match self.tier() {
            Some(tier) => Invalidation::waiting(tier.publish(section, value)),
            None => Invalidation::ready(),
        }
    }

    /// Answers `req`: from an entry, or by leading or waiting for a build that runs
    /// `refresher` (or the cache's own builder, for sections).
    pub(crate) async fn respond(
        self: &Arc<Self>,
        req: &HttpRequest,
        refresher: Option<&Refresher>,
    ) -> HttpResponse {
        match self.plan(req, refresher).await {
            Plan::Respond(res) => res,
            Plan::Pass(status) => labelled(self.build(req, None, refresher).await.0, status),
            Plan::Lead(lead) => self.lead(req, lead, refresher).await,
        }
    }

    /// Decides how to answer `req`. With a `refresher` (or a cache that builds itself) a stale
    /// entry is refreshed in the background; without (the middleware: actix's router needs
    /// the request uniquely owned) the first stale reader refreshes in the foreground.
    pub(crate) async fn plan(
        self: &Arc<Self>,
        req: &HttpRequest,
        refresher: Option<&Refresher>,
    ) -> Plan {
        let Some(base) = self.admit(req) else {
            return Plan::Pass(CacheStatus::Bypass);
        };
        let mut forced = self.forced(req);
        if let Some(tier) = self.tier() {
            tier.sync_counters().await;
        }
        let generation = self.generations.all();
        let fingerprint = match self.strategy.fingerprint(req, &self.generations).await {
            Ok(fingerprint) => fingerprint,
            Err(err) => {
                tracing::warn!(cache = %self.name, error = %err, "response cache: revision failed; not caching this request");
                return self.pass(PassReason::RevisionFailed);
            }
        };
        let fp = fingerprint.as_ref();
        let key = self.store.key_for(&base, req.headers());
        // One deadline for all of this request's waits, however often it has to join again.
        let deadline = tokio::time::Instant::now() + self.lock_timeout;
        // Why: HEAD is served from the GET entry but must never build it. The route may not
        // take HEAD (a GET-only route answers 404/405), or answer it without a body; storing
        // that replaced the GET entry or marked the key hit-for-miss, uncaching its GETs.
        let may_lead = req.method() != Method::HEAD;
        let classify = |entry: &Entry| {
            self.strategy
                .classify(entry, self.now(), fp, generation, self.max_stale)
        };
        let usable = |entry: &Entry| {
            vary_matches(&entry.vary, req.headers()) && matches!(classify(entry), State::Fresh(_))
        };
        let lead = |guard, role, stale: Option<&Arc<Entry>>, old, lease| Lead {
            base: base.clone(),
            key: Arc::clone(&key),
            guard,
            fingerprint: fingerprint.clone(),
            generation,
            stale: stale.cloned(),
            old,
            role,
            lease,
        };
        loop {
            let mut old = None;
            let found = if forced {
                None
            } else {
                self.lookup(&key, req.headers(), &usable).await
            };
            match found {
                Some(Slot::Unshared { until }) if self.now() < until => {
                    return self.pass(PassReason::Uncacheable);
                }
                Some(Slot::Entry(entry)) if vary_matches(&entry.vary, req.headers()) => {
                    match classify(&entry) {
                        State::Fresh(status) => return self.hit(req, &entry, status, fp),
                        State::Patch if may_lead => {
                            if let Some(guard) = self.flights.try_lead(&key) {
                                self.stats.record(Event::Hit);
                                let old = Some(Arc::clone(&entry));
                                return Plan::Lead(lead(
                                    guard,
                                    Role::Section,
                                    Some(&entry),
                                    old,
                                    None,
                                ));
                            }
                        }
                        State::Stale | State::Patch => {
                            let background = refresher.is_some() || self.builds_itself();
                            if may_lead
                                && let Some(guard) = self.flights.try_lead(&key)
                                // Across instances too: if another one is refreshing this key,
                                // serve stale and let its result reach us through the tier.
                                && let Some(lease) = tier::try_claim(self.tier(), &key, self.now()).await
                            {
                                let old = Some(Arc::clone(&entry));
                                let lead = lead(guard, Role::Refresh, Some(&entry), old, lease);
                                if !background {
                                    self.stats.record(Event::Miss);
                                    tracing::debug!(cache = %self.name, %key, "response cache: stale, refreshing in this request");
                                    return Plan::Lead(lead);
                                }
                                self.refresh_in_background(req, lead, refresher.cloned());
                            }
                            self.stats.record(Event::Stale);
                            tracing::debug!(cache = %self.name, %key, "response cache: stale served");
                            let stale = CacheStatus::Stale {
                                collapsed: false,
                                failed: None,
                            };
                            return Plan::Respond(entry.respond(req, stale, self.now()));
                        }
                        State::Expired => old = Some(entry),
                    }
                }
                _ => {}
            }
            if !may_lead {
                return self.pass(PassReason::Head);
            }
            match self.flights.join(&key) {
                Join::Lead(guard) => {
                    // Look again under the claim: another leader may have stored the entry
                    // and ended its flight between the lookup above and this join.
                    if !forced
                        && let Some(Slot::Entry(entry)) = self.store.get(&key)
                        && usable(&entry)
                        && let State::Fresh(status) = classify(&entry)
                    {
                        guard.complete(Outcome::Fresh(Arc::clone(&entry)));
                        return self.hit(req, &entry, status, fp);
                    }
                    // Then across instances: one of them builds, the others wait for it.
                    let lease = if forced {
                        tier::try_claim(self.tier(), &key, self.now())
                            .await
                            .flatten()
                    } else {
                        let now = || self.now();
                        let claimed = tier::claim(
                            self.tier(),
                            &self.store,
                            &key,
                            req.headers(),
                            &now,
                            deadline,
                            &usable,
                        );
                        match claimed.await {
                            Claimed::Build(lease) => lease,
                            Claimed::Found(found_key, entry) => {
                                self.store.keep(&found_key, &entry);
                                guard.complete(Outcome::Fresh(Arc::clone(&entry)));
                                tracing::debug!(cache = %self.name, %key, "response cache: built by another instance");
                                let status = CacheStatus::Coalesced {
                                    status: entry.snapshot.status,
                                };
                                return self.coalesced(req, &entry, status);
                            }
                        }
                    };
                    self.stats.record(Event::Miss);
                    tracing::debug!(cache = %self.name, %key, forced, "response cache: miss");
                    let old = old.filter(|_| !forced);
                    return Plan::Lead(lead(guard, Role::Miss, None, old, lease));
                }
                Join::Wait(waiter) => {
                    match self.wait(req, &key, waiter, generation, fp, deadline).await {
                        Some(plan) => return plan,
                        None => forced = false,
                    }
                }
            }
        }
    }

    fn hit(
        &self,
        req: &HttpRequest,
        entry: &Entry,
        status: CacheStatus,
        fp: Option<&Fingerprint>,
    ) -> Plan {
        // Only a revision check verifies the bytes; a TTL hit does not.
        if fp.is_some() {
            entry.verified(self.now());
        }
        self.stats.record(Event::Hit);
        tracing::debug!(cache = %self.name, status = status.label(), "response cache: hit");
        Plan::Respond(entry.respond(req, status, self.now()))
    }

    fn pass(&self, reason: PassReason) -> Plan {
        self.stats.record(Event::Bypass);
        Plan::Pass(CacheStatus::Pass { reason })
    }

    /// What the cache holds for `key`: this instance's entry if `usable`, else (with a shared
    /// tier) the shared one when it is usable or newer, else whatever is local.
    async fn lookup(
        &self,
        key: &Arc<str>,
        req_headers: &HeaderMap,
        usable: &dyn Fn(&Entry) -> bool,
    ) -> Option<Slot> {
        let local = self.store.get(key);
        let local_entry = match &local {
            Some(Slot::Unshared { until }) if self.now() < *until => return local,
            Some(Slot::Entry(entry)) if vary_matches(&entry.vary, req_headers) => {
                if usable(entry) {
                    return local;
                }
                Some(Arc::clone(entry))
            }
            _ => None,
        };
        // Why not while this instance builds the key: its waiters get the result, and a stale
        // reader is answered from memory; asking the tier for every such read would only load it.
        let Some(tier) = self.tier().filter(|_| !self.flights.in_progress(key)) else {
            return local;
        };
        let (remote_key, remote) = match tier.get(key, self.now()).await? {
            tier::Fetched::Entry(entry) => (Arc::clone(key), entry),
            tier::Fetched::Vary(names) => {
                tier::follow(tier, &self.store, key, &names, req_headers, self.now()).await?
            }
        };
        let better = vary_matches(&remote.vary, req_headers)
            && local_entry
                .as_ref()
                .is_none_or(|l| usable(&remote) || remote.stored_at > l.stored_at);
        if !better {
            return local;
        }
        tracing::debug!(cache = %self.name, key = %remote_key, "response cache: found in the shared tier");
        self.store.keep(&remote_key, &remote);
        Some(Slot::Entry(remote))
    }

    /// The URL part of the key, or `None` for a request the cache must not touch.
    fn admit(&self, req: &HttpRequest) -> Option<String> {
        let mut reason = request_bypass(req, self.key_by.is_some());
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
            return None;
        }
        Some(base_key(req, user.as_deref(), self.forced_refresh))
    }

    /// Whether the client asked for a rebuild (`?refresh=true`, `Cache-Control: no-cache`).
    fn forced(&self, req: &HttpRequest) -> bool {
        self.forced_refresh
            && (query_forces_refresh(req.query_string())
                || cache_control_contains(req.headers(), "no-cache"))
    }

    /// Waits for another request's build; `None` means join again: its leader is gone or
    /// failed transiently (one waiter is re-elected), or it built before an invalidation this
    /// request saw (`generation`).
    async fn wait(
        &self,
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
            // its own client's write) holds the old data: join again (read-your-writes).
            Ok(Some(Outcome::Fresh(entry))) if entry.generation < generation => {
                tracing::debug!(cache = %self.name, %key, "response cache: flight predates an invalidation, retrying");
                None
            }
            // Built under an older fingerprint than this request saw: still the freshest bytes
            // there are, but say so (`stale`, with an `Age` past their lifetime).
            Ok(Some(Outcome::Fresh(entry)))
                if fp.is_some_and(|fp| entry.revision.as_deref() != Some(&fp.combined)) =>
            {
                Some(self.coalesced(
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
                Some(self.coalesced(req, &entry, status))
            }
            Ok(Some(Outcome::Stale(entry, failed))) => {
                let status = CacheStatus::Stale {
                    collapsed: true,
                    failed: Some(failed),
                };
                Some(self.coalesced(req, &entry, status))
            }
            Ok(Some(Outcome::Failed(snapshot))) => {
                self.stats.record(Event::Coalesced);
                let status = CacheStatus::Coalesced {
                    status: snapshot.status,
                };
                Some(Plan::Respond(labelled(snapshot.to_response(), status)))
            }
            Ok(Some(Outcome::Unshared)) => {
                // Not shareable: every waiter fetches on its own at once (and the key is
                // remembered as hit-for-pass by its leader).
                self.stats.record(Event::LockPass);
                Some(self.pass(PassReason::LeaderUncacheable))
            }
            Ok(Some(Outcome::Transient)) => {
                tracing::debug!(cache = %self.name, %key, "response cache: leader failed transiently, re-electing");
                self.stats.record(Event::LockTransient);
                None
            }
            Ok(None) => {
                // The leader was cancelled or its task dropped: one of the waiters takes over.
                tracing::debug!(cache = %self.name, %key, "response cache: leader gone, retrying");
                self.stats.record(Event::LockDangling);
                None
            }
            Err(_elapsed) => {
                tracing::warn!(cache = %self.name, %key, timeout = ?self.lock_timeout,
                    "response cache: waited too long for another request's build; building without storing");
                self.stats.record(Event::LockTimeout);
                Some(self.pass(PassReason::LockTimeout))
            }
        }
    }

    fn coalesced(&self, req: &HttpRequest, entry: &Entry, status: CacheStatus) -> Plan {
        if !vary_matches(&entry.vary, req.headers()) {
            // Built for another variant (its `Vary` was not known yet): build our own.
            return self.pass(PassReason::OtherVariant);
        }
        self.stats.record(Event::Coalesced);
        Plan::Respond(entry.respond(req, status, self.now()))
    }

    /// The response for `req` and, for sections, its parts: `refresher`'s, or the cache's own.
    fn build(
        self: &Arc<Self>,
        req: &HttpRequest,
        lead: Option<&Lead>,
        refresher: Option<&Refresher>,
    ) -> LocalBoxFuture<'static, (HttpResponse, Vec<SectionPart>)> {
        if let (false, Some(refresher)) = (self.builds_itself(), refresher) {
            let build = refresher(req.clone());
            return Box::pin(async move { (build.await, Vec::new()) });
        }
        let (this, req) = (Arc::clone(self), req.clone());
        let (fingerprint, old) =
            lead.map_or((None, None), |l| (l.fingerprint.clone(), l.old.clone()));
        Box::pin(async move {
            let fingerprint = match fingerprint {
                Some(fingerprint) => Some(fingerprint),
                None => match this.strategy.fingerprint(&req, &this.generations).await {
                    Ok(fingerprint) => fingerprint,
                    Err(err) => return (err.error_response(), Vec::new()),
                },
            };
            this.strategy
                .build_sections(&req, fingerprint.as_ref(), old.as_deref())
                .await
        })
    }

    /// Runs the build of `lead` as a task of its own (a client that goes away does not cancel
    /// it for the waiters) and answers with the leader's response.
    pub(crate) async fn lead(
        self: &Arc<Self>,
        req: &HttpRequest,
        lead: Lead,
        refresher: Option<&Refresher>,
    ) -> HttpResponse {
        let build = self.build(req, Some(&lead), refresher);
        let (this, own) = (Arc::clone(self), req.clone());
        let task = actix_rt::spawn(async move {
            let (res, parts) = build.await;
            this.finish(own.method(), own.headers(), lead, res, parts)
                .await
        });
        task.await.unwrap_or_else(|err| {
            tracing::error!(cache = %self.name, error = %err, "response cache: build panicked");
            self.stats.record(Event::RefreshFailure);
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

    fn refresh_in_background(
        self: &Arc<Self>,
        req: &HttpRequest,
        lead: Lead,
        refresher: Option<Refresher>,
    ) {
        let build = self.build(req, Some(&lead), refresher.as_ref());
        let (this, req) = (Arc::clone(self), req.clone());
        tracing::debug!(cache = %self.name, key = %lead.key, "response cache: refresh start");
        let task = actix_rt::spawn(async move {
            let (res, parts) = build.await;
            let res = this
                .finish(req.method(), req.headers(), lead, res, parts)
                .await;
            tracing::debug!(cache = %this.name, status = res.status().as_u16(), "response cache: refresh end");
        });
        // Why a watcher: nobody awaits a background refresh, so a panic in it went unseen;
        // count it in `refresh_failures`, as the stats document. (Its flight claim is
        // dropped with it, so the next stale read refreshes again.)
        let this = Arc::clone(self);
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
        self: &Arc<Self>,
        method: &Method,
        req_headers: &HeaderMap,
        lead: Lead,
        res: HttpResponse,
        parts: Vec<SectionPart>,
    ) -> HttpResponse {
        let status = res.status();
        let unstored = CacheStatus::led(lead.role, false, status);
        if status.is_server_error() || is_transient(status) {
            return self.failed(method, req_headers, lead, res).await;
        }
        // Why `has_user`: `private` may be stored only under a user's own key. With `key_by`
        // set, an anonymous request's key is shared, and its `private` answer was stored there.
        let keyed_by_user = self.key_by.is_some() && has_user(&lead.base);
        if let Some(reason) = response_unstorable(status, res.headers(), keyed_by_user) {
            tracing::debug!(cache = %self.name, key = %lead.key, reason, "response cache: not stored");
            // 304/412 answer one request's preconditions; they say nothing about the resource.
            if !matches!(status.as_u16(), 304 | 412) {
                self.store
                    .mark_unshared(&lead.key, self.now() + self.hit_for_miss);
            }
            lead.guard.complete(Outcome::Unshared);
            return labelled(res, unstored);
        }
        let (head, body) = match capture(res, self.max_entry_bytes).await {
            Captured::Buffered(head, body) => (head, body),
            Captured::Passthrough(res) => {
                tracing::debug!(cache = %self.name, key = %lead.key, "response cache: body streamed or too large; not stored");
                self.store
                    .mark_unshared(&lead.key, self.now() + self.hit_for_miss);
                lead.guard.complete(Outcome::Unshared);
                return labelled(res, unstored);
            }
        };
        self.stats.record(Event::Build);
        let names: Vec<HeaderName> = vary_names(head.headers())
            .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
            .collect();
        let key = if names.is_empty() {
            Arc::clone(&lead.key)
        } else {
            self.store.learn_vary(&lead.base, &names, req_headers)
        };
        let mut snapshot = Snapshot::new(status, head.headers(), body);
        if let Some(etag) = self
            .strategy
            .etag(&key, lead.fingerprint.as_ref(), &snapshot)
        {
            snapshot.headers.insert(ETAG, etag);
        }
        let now = self.now();
        let revision = lead.fingerprint.map(|f| f.combined.into_boxed_str());
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
        let current = self.generations.all() == lead.generation;
        if current {
            self.store.keep(&key, &entry);
            if key != lead.key {
                self.store.remove(&lead.key);
            }
        }
        tracing::debug!(cache = %self.name, %key, bytes = entry.snapshot.body.len(), "response cache: stored");
        lead.guard.complete(Outcome::Fresh(Arc::clone(&entry)));
        if current && let Some(tier) = self.tier() {
            // Awaited (bounded by the tier's timeout), so that when this client hears back the
            // other instances can find the entry; the lease is released only after the value.
            let vary = (!names.is_empty()).then_some((lead.base.as_str(), names.as_slice()));
            let life = self.strategy.useful_life(self.max_stale);
            if tier.put(&key, &entry, life, lead.lease, vary).await {
                self.stats.record(Event::L2Write);
            }
        }
        let status = CacheStatus::led(lead.role, current, status);
        entry.respond_to(method, req_headers, status, now)
    }

    /// A build that failed (5xx, or the transient 408/429): stale bytes stand in for it while
    /// within the stale window; else a transient failure re-elects a leader among the waiters
    /// and any other is shared with them (never stored).
    async fn failed(
        &self,
        method: &Method,
        req_headers: &HeaderMap,
        lead: Lead,
        res: HttpResponse,
    ) -> HttpResponse {
        let status = res.status();
        self.stats.record(Event::RefreshFailure);
        // The window is checked again now: a build that started inside it may end outside.
        let now = self.now();
        if let Some(stale) = lead.stale.filter(|stale| {
            self.strategy
                .within_stale_window(stale, now, self.max_stale)
        }) {
            tracing::warn!(cache = %self.name, key = %lead.key, status = status.as_u16(), "response cache: refresh failed; serving stale");
            lead.guard
                .complete(Outcome::Stale(Arc::clone(&stale), status));
            self.stats.record(Event::Stale);
            let served = CacheStatus::Stale {
                collapsed: false,
                failed: Some(status),
            };
            return stale.respond_to(method, req_headers, served, now);
        }
        tracing::warn!(cache = %self.name, key = %lead.key, status = status.as_u16(), "response cache: build failed; nothing stale to serve");
        let unstored = CacheStatus::led(lead.role, false, status);
        if is_transient(status) {
            lead.guard.complete(Outcome::Transient);
            return labelled(res, unstored);
        }
        if res.headers().contains_key(SET_COOKIE) {
            lead.guard.complete(Outcome::Unshared);
            return labelled(res, unstored);
        }
        match capture(res, self.max_entry_bytes).await {
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

/// A failure that concerns the leader's own request rather than the resource (RFC 9110
/// §15.5.9 Request Timeout, RFC 6585 §4 Too Many Requests): never handed to the requests that
/// waited for it; one of them builds again instead.
fn is_transient(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429)
}
