//! The engine behind every [`ResponseCache`](super::ResponseCache): one decision loop for
//! every mode and entry point (`serve`, sections, middleware). A request is admitted, its
//! fingerprint taken, the entry classified by the cache's [`Strategy`] (fresh, patch, stale,
//! expired), and then it is answered, or it leads or waits for the key's build; the leader's
//! response is stored and handed to the waiters.

use self::warn_every::WarnEvery;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::Method;
use actix_web::http::header::{HeaderMap, HeaderValue};

use crate::cache_control::cache_control_contains;
use crate::edge::CACHE_GROUPS;
use actix_web::{HttpRequest, HttpResponse};
use futures_util::future::LocalBoxFuture;

pub(crate) use self::lead::Lead;
use self::lead::{build, wait};
use super::clock::Clock;
use super::downstream::{Downstream, has_credentials};
use super::entry::Entry;
use super::flight::{Flights, Join, Outcome};
use super::generations::Generations;
use super::key::{QueryKey, vary_matches};
use super::stats::{Event, Stats};
use super::status::{CacheStatus, PassReason, Role, labelled};
use super::storable::{admit, forced};
use super::store::{Slot, Store};
use super::strategy::{Fingerprint, State, Strategy};
use super::tier::{self, Claimed, Invalidation, SharedTier};

mod lead;
mod settings;
mod warn_every;

pub(crate) use self::settings::{Settings, TierFactory, UserKeyFn};

/// Where the cache's clock starts: 2^30 s (34 years), so any entry's age fits before it
/// (an entry read from a shared tier may predate this process).
const EPOCH: Duration = Duration::from_secs(1 << 30);

/// Re-runs the handler for a request: what `serve` builds and refreshes with.
pub(crate) type Refresher = Rc<dyn Fn(HttpRequest) -> LocalBoxFuture<'static, HttpResponse>>;

/// What to do with a request.
pub(crate) enum Plan {
    /// Answer with this (hit, stale, coalesced, 304).
    Respond(HttpResponse),
    /// Build the response and give it to [`Engine::finish`].
    Lead(Lead),
    /// Run the handler for this request alone and store nothing.
    Pass(CacheStatus),
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
    query_key: QueryKey,
    downstream: Downstream,
    /// The groups of what this cache serves (its name, and `name:section` per section), and
    /// their `Cache-Groups` value rendered once (`None` if no name is a valid group).
    groups: (Vec<String>, Option<HeaderValue>),
    /// Revision failures recur on every request while their store is down: warned about at
    /// most once per [`WARN_EVERY`](warn_every::WARN_EVERY).
    revision_warnings: WarnEvery,
}

impl Engine {
    pub(crate) fn new(settings: Settings) -> Self {
        let stats = Arc::new(Stats::new(&settings.name));
        let groups = cache_groups(&settings.name, &settings.strategy.section_names());
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
            query_key: settings.query_key,
            downstream: settings.downstream,
            groups,
            revision_warnings: WarnEvery::default(),
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Whether this cache has a section called `name`.
    pub(crate) fn has_section(&self, name: &str) -> bool {
        self.generations
            .section_names()
            .any(|section| section == name)
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
        let res = match self.plan(req, refresher).await {
            Plan::Respond(res) => res,
            Plan::Pass(status) => labelled(build(self, req, None, refresher).await.0, status),
            Plan::Lead(lead) => lead.run(self, req, refresher).await,
        };
        self.finish(req, res)
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
        let mut forced = forced(req, self.forced_refresh);
        if let Some(tier) = self.tier() {
            tier.sync_counters().await;
        }
        let generation = self.generations.all();
        let fingerprint = match self.strategy.fingerprint(req, &self.generations).await {
            Ok(fingerprint) => fingerprint,
            Err(err) => return self.revision_failed(req, &base, &err).await,
        };
        let fp = fingerprint.as_ref();
        let key = self.store.key_for(&base, req.headers());
        // One deadline for all of this request's waits, however often it has to join again.
        let deadline = tokio::time::Instant::now() + self.lock_timeout;
        // Why: HEAD is served from the GET entry but must never build it. The route may not
        // take HEAD (a GET-only route answers 404/405), or answer it without a body; storing
        // that replaced the GET entry or marked the key hit-for-miss, uncaching its GETs.
        let may_lead = req.method() != Method::HEAD;
        let classify = |entry: &Entry, now| {
            self.strategy
                .classify(entry, now, fp, generation, self.max_stale)
        };
        let fresh = |entry: &Entry| matches!(classify(entry, self.now()), State::Fresh(_));
        let usable = |entry: &Entry| vary_matches(&entry.vary, req.headers()) && fresh(entry);
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
            defer: false,
        };
        loop {
            let mut old = None;
            // What stands in for a failed build (stale-on-error), and how the build is labelled.
            let (mut stale, mut role, mut defer) = (None, Role::Miss, false);
            let now = self.now();
            let found = if forced {
                None
            } else {
                self.lookup(&key, req.headers(), now, &fresh).await
            };
            match found {
                Some(Slot::Unshared { until }) if now < until => {
                    return self.pass(PassReason::Uncacheable);
                }
                Some(Slot::Entry(entry)) => {
                    match classify(&entry, now) {
                        State::Fresh(status) => return self.hit(req, &entry, status, fp, now),
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
                                lead.refresh_in_background(self, req, refresher);
                            }
                            self.stats.record(Event::Stale);
                            tracing::debug!(cache = %self.name, %key, "response cache: stale served");
                            let stale = CacheStatus::Stale {
                                collapsed: false,
                                failed: None,
                            };
                            return Plan::Respond(self.serve_entry(
                                req.method(),
                                req.headers(),
                                &entry,
                                stale,
                                self.now(),
                            ));
                        }
                        State::Invalidated { inline } => {
                            // Read-your-writes: rebuilt before answering, like a miss (one
                            // build, the others wait for it), but the bytes still stand in
                            // for a build that fails while they are within the stale window.
                            tracing::debug!(cache = %self.name, %key, "response cache: invalidated; rebuilding before answering");
                            if self
                                .strategy
                                .within_stale_window(&entry, now, self.max_stale)
                            {
                                stale = Some(Arc::clone(&entry));
                                // Sections invalidated one by one: only they are rebuilt now;
                                // one whose revision merely changed keeps its bytes, which
                                // may still be served (a refresh follows).
                                defer = entry.generation == generation;
                            }
                            if inline {
                                role = Role::Section;
                            }
                            old = Some(entry);
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
                        && vary_matches(&entry.vary, req.headers())
                        && let State::Fresh(status) = classify(&entry, self.now())
                    {
                        guard.complete(Outcome::Fresh(Arc::clone(&entry)));
                        return self.hit(req, &entry, status, fp, self.now());
                    }
                    // Then across instances: one of them builds, the others wait for it.
                    let lease = if forced {
                        tier::try_claim(self.tier(), &key, self.now())
                            .await
                            .flatten()
                    } else {
                        let now = || self.now();
                        // Boxed: only misses get here, and inline it would grow every
                        // request's future by its state.
                        let claimed = Box::pin(tier::claim(
                            self.tier(),
                            &self.store,
                            &key,
                            req.headers(),
                            &now,
                            deadline,
                            &usable,
                        ));
                        match claimed.await {
                            Claimed::Build(lease) => lease,
                            Claimed::TimedOut => {
                                guard.complete(Outcome::TimedOut);
                                self.stats.record(Event::LockTimeout);
                                return self.pass(PassReason::LockTimeout);
                            }
                            Claimed::Pass => {
                                // Another instance found the response not shareable.
                                let until = self.now() + self.hit_for_miss;
                                self.store.mark_unshared(&key, until);
                                guard.complete(Outcome::Unshared);
                                self.stats.record(Event::LockPass);
                                return self.pass(PassReason::LeaderUncacheable);
                            }
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
                    // `section` (only inline sections rebuilt) counts as a hit, as for a patch.
                    self.stats.record(if role == Role::Section {
                        Event::Hit
                    } else {
                        Event::Miss
                    });
                    tracing::debug!(cache = %self.name, %key, forced, "response cache: miss");
                    let old = old.filter(|_| !forced);
                    let mut lead = lead(guard, role, stale.as_ref(), old, lease);
                    lead.defer = defer && !forced;
                    return Plan::Lead(lead);
                }
                Join::Wait(waiter) => {
                    match Box::pin(wait(self, req, &key, waiter, generation, fp, deadline)).await {
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
        now: Duration,
    ) -> Plan {
        // Only a revision check verifies the bytes; a TTL hit does not.
        if fp.is_some() {
            entry.verified(now);
        }
        self.stats.record(Event::Hit);
        tracing::debug!(cache = %self.name, status = status.label(), "response cache: hit");
        Plan::Respond(self.serve_entry(req.method(), req.headers(), entry, status, now))
    }

    /// The fingerprint could not be taken (a revision or section revision query failed):
    /// stale-on-error (RFC 5861 §4), as for a failed refresh. The key does not depend on the
    /// fingerprint, so the stored entry is found as usual; within its stale window (revision
    /// modes: since it was last verified) it is served `stale`, carrying the failure's
    /// status. Without one, the handler answers and nothing is stored.
    async fn revision_failed(&self, req: &HttpRequest, base: &str, err: &actix_web::Error) -> Plan {
        self.stats.record(Event::RevisionFailure);
        let failed = err.as_response_error().status_code();
        let key = self.store.key_for(base, req.headers());
        let now = self.now();
        // Nothing is fresh without a fingerprint: the shared tier is asked too, for a newer
        // entry than this instance's (or one it does not have).
        let found = self.lookup(&key, req.headers(), now, &|_| false).await;
        if let Some(Slot::Entry(entry)) = found
            && vary_matches(&entry.vary, req.headers())
            && self
                .strategy
                .within_stale_window(&entry, now, self.max_stale)
        {
            match self.revision_warnings.warn(now) {
                Some(held_back) => {
                    tracing::warn!(cache = %self.name, %key, error = %err, status = failed.as_u16(), held_back, "response cache: revision failed; serving stale")
                }
                None => {
                    tracing::debug!(cache = %self.name, %key, error = %err, "response cache: revision failed; serving stale")
                }
            }
            self.stats.record(Event::Stale);
            let stale = CacheStatus::Stale {
                collapsed: false,
                failed: Some(failed),
            };
            return Plan::Respond(self.serve_entry(
                req.method(),
                req.headers(),
                &entry,
                stale,
                now,
            ));
        }
        match self.revision_warnings.warn(now) {
            Some(held_back) => {
                tracing::warn!(cache = %self.name, %key, error = %err, held_back, "response cache: revision failed, nothing stale to serve; not caching this request")
            }
            None => {
                tracing::debug!(cache = %self.name, %key, error = %err, "response cache: revision failed, nothing stale to serve")
            }
        }
        self.pass(PassReason::RevisionFailed)
    }

    fn pass(&self, reason: PassReason) -> Plan {
        self.stats.record(Event::Bypass);
        Plan::Pass(CacheStatus::Pass { reason })
    }

    /// What the cache holds for `key`: see [`tier::lookup`]. Not the shared tier while this
    /// instance builds the key: its waiters get the result, and a stale reader is answered
    /// from memory; asking the tier for every such read would only load it.
    async fn lookup(
        &self,
        key: &Arc<str>,
        req_headers: &HeaderMap,
        now: Duration,
        fresh: &dyn Fn(&Entry) -> bool,
    ) -> Option<Slot> {
        let tier = self.tier().filter(|_| !self.flights.in_progress(key));
        let times = (now, self.hit_for_miss);
        tier::lookup(&self.store, tier, key, req_headers, times, fresh).await
    }

    /// The URL part of the key, or `None` for a request the cache must not touch.
    fn admit(&self, req: &HttpRequest) -> Option<String> {
        match admit(
            req,
            self.key_by.as_deref(),
            self.forced_refresh,
            &self.query_key,
        ) {
            Ok(base) => Some(base),
            Err(reason) => {
                self.stats.record(Event::Bypass);
                tracing::debug!(cache = %self.name, reason, "response cache: bypass");
                None
            }
        }
    }

    /// `entry`'s response to a request with `method` and `req_headers`: status, `Age`, a
    /// lifetime that covers it (what is left of the entry's freshness here), preconditions.
    pub(crate) fn serve_entry(
        &self,
        method: &Method,
        req_headers: &HeaderMap,
        entry: &Entry,
        status: CacheStatus,
        now: Duration,
    ) -> HttpResponse {
        let window = self
            .strategy
            .window(entry, now, self.max_stale, status.is_stale());
        entry.respond_to(method, req_headers, status, now, window)
    }

    /// Renders what this cache tells the caches after it onto `res`, once, as it leaves:
    /// `Cache-Status` (and `X-Cache` if opted in) from the status recorded on it, and, for a
    /// request the cache declined to share because of its credentials, the same downstream.
    pub(crate) fn finish(&self, req: &HttpRequest, mut res: HttpResponse) -> HttpResponse {
        let Some(status) = CacheStatus::of(&res) else {
            return res;
        };
        let read = matches!(*req.method(), Method::GET | Method::HEAD);
        // RFC 9211 §2.2: why the request went to the handler, when the request decided it.
        let fwd = match status {
            CacheStatus::Miss { .. } | CacheStatus::Refresh { .. }
                if forced(req, self.forced_refresh) =>
            {
                Some("request")
            }
            CacheStatus::Bypass if !read => Some("method"),
            CacheStatus::Bypass if cache_control_contains(req.headers(), "no-store") => {
                Some("request")
            }
            _ => None,
        };
        // A per-user key (`key_by`) names its user: never shown.
        let key = if self.downstream.expose_key && !matches!(status, CacheStatus::Bypass) {
            admit(
                req,
                self.key_by.as_deref(),
                self.forced_refresh,
                &self.query_key,
            )
            .ok()
            .map(|base| self.store.key_for(&base, req.headers()))
            .filter(|key| !key.contains('\0'))
        } else {
            None
        };
        let response_status = res.status();
        let headers = res.headers_mut();
        if read {
            // RFC 9875 §2: what this cache serves belongs to its groups, so a write that
            // invalidates the cache (or a section) can have the edge drop it too.
            match &self.groups {
                (_, Some(value)) if !headers.contains_key(CACHE_GROUPS) => {
                    headers.insert(CACHE_GROUPS, value.clone());
                }
                (names, _) => crate::edge::add_groups(headers, names),
            }
        }
        status.render(
            headers,
            response_status,
            fwd,
            key.as_deref(),
            self.downstream.x_cache,
        );
        if read {
            // Decided by the request, whatever the cache did with it: an answer to credentials
            // (bypassed, or a `key_by` user's own entry) is that user's; any other was made
            // for anonymous requests and must not reach a credentialed one.
            if has_credentials(req.headers()) {
                self.downstream.credentials(req, headers);
            } else {
                self.downstream.shared(headers);
            }
        }
        res
    }

    fn coalesced(&self, req: &HttpRequest, entry: &Entry, status: CacheStatus) -> Plan {
        if !vary_matches(&entry.vary, req.headers()) {
            // Built for another variant (its `Vary` was not known yet): build our own.
            return self.pass(PassReason::OtherVariant);
        }
        self.stats.record(Event::Coalesced);
        Plan::Respond(self.serve_entry(req.method(), req.headers(), entry, status, self.now()))
    }
}

/// The groups of a cache named `name` with `sections` (RFC 9875 §2), those
/// [`ResponseCache::invalidation_group`](super::ResponseCache::invalidation_group) names, and
/// their `Cache-Groups` value.
fn cache_groups(
    name: &str,
    sections: &[std::borrow::Cow<'static, str>],
) -> (Vec<String>, Option<HeaderValue>) {
    let names: Vec<String> = std::iter::once(name.to_owned())
        .chain(sections.iter().map(|section| format!("{name}:{section}")))
        .collect();
    let mut headers = HeaderMap::new();
    crate::edge::add_groups(&mut headers, &names);
    let value = headers.remove(CACHE_GROUPS).next();
    (names, value)
}
