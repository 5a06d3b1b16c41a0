//! Invalidation counters in Redis, and how each instance keeps its copy of them current.
//!
//! One counter per cache, and per section of a sectioned cache (`<prefix>:<cache>:gen[:s]`).
//! [`Backend::publish`] increments one and broadcasts the new value in the same script. Each
//! instance raises its copy (`fetch_max`, never lowers it) from four sources:
//!
//! 1. **Per request** ([`Backend::fresh_counters`], on unless
//!    [`read_your_writes(false)`](super::RedisBackendBuilder::read_your_writes)): before a
//!    cached request is answered, a read of the cache's counters that *started after the
//!    request arrived* must have completed. Concurrent requests share one read (at most one in
//!    flight and one queued), so it costs about one round trip of latency and one small
//!    script per batch. A write's response waits for its increment, so the client's next
//!    request, on any instance, sees it.
//! 2. **The broadcast** drops a TTL cache's memory tier at once (best effort: pub/sub keeps
//!    nothing for a subscriber that is away).
//! 3. **Every `sync_interval`** and on every reconnect: the same read, for every cache.
//! 4. **On reconnect**, invalidations made while Redis was unreachable are replayed.
//!
//! Reads go through [`SYNC`], which also repairs a Redis counter that is *below* the
//! caller's copy (Redis restarted without its data, or missed an invalidation made while it
//! was unreachable): it is set one past the copy, an invalidation for everyone, since what
//! happened meanwhile is unknown. So no instance's later increment can look like an old one.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use ::redis::{Client, RedisError};
use futures_util::StreamExt as _;
use futures_util::future::BoxFuture;
use tokio::sync::watch;

use super::Backend;
use crate::response_cache::generations::Generations;

/// Increments a counter, to at least `floor` (the caller's copy after its own bump), and
/// publishes the new value.
const BUMP: &str = r"
local v = redis.call('INCR', KEYS[1])
local floor = tonumber(ARGV[1])
if v < floor then
  v = floor
  redis.call('SET', KEYS[1], v)
end
redis.call('PUBLISH', ARGV[2], v .. '\n' .. ARGV[3])
return v
";

/// Reads counters. One below the caller's copy (`ARGV[i]`) means Redis lost it (a restart
/// without persistence, a flush) or never got an increment (made while it was unreachable):
/// whatever happened meanwhile is unknown, so it is set one past the caller's copy, which
/// every instance, the caller included, then takes as an invalidation.
const SYNC: &str = r"
local out = {}
for i, key in ipairs(KEYS) do
  local current = tonumber(redis.call('GET', key) or '0') or 0
  local mine = tonumber(ARGV[i])
  if current < mine then
    current = mine + 1
    redis.call('SET', key, current)
  end
  out[i] = current
end
return out
";

/// Coalesces the per-request counter reads of one cache: a request waits for the first read
/// that starts after it arrives, and every request waiting meanwhile shares that read.
#[derive(Debug)]
pub(crate) struct Gate {
    state: Mutex<GateState>,
    /// The number of reads completed.
    finished: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct GateState {
    started: u64,
    running: bool,
    queued: bool,
}

impl Default for Gate {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            finished: watch::Sender::new(0),
        }
    }
}

impl Backend {
    fn generation_key(&self, cache: &str, section: Option<&str>) -> String {
        match section {
            Some(section) => format!("{}:{cache}:gen:{section}", self.prefix),
            None => format!("{}:{cache}:gen", self.prefix),
        }
    }

    /// Returns once `generations` have been read from Redis by a read that began after this
    /// call (or that read failed: then the caches run on their local copies).
    pub(crate) async fn fresh_counters(
        self: &Arc<Self>,
        generations: &Arc<Generations>,
        gate: &Arc<Gate>,
    ) {
        let target = {
            let mut state = gate.state.lock().unwrap_or_else(PoisonError::into_inner);
            if state.running {
                state.queued = true;
                state.started + 1
            } else {
                state.started += 1;
                state.running = true;
                self.spawn_reads(Arc::downgrade(generations), Arc::clone(gate));
                state.started
            }
        };
        let mut finished = gate.finished.subscribe();
        // Bounded: each read is bounded by the call timeout, and the task that runs them
        // lives on the backend's thread, whatever happens to this request.
        let _ = finished.wait_for(|done| *done >= target).await;
    }

    /// Runs reads back to back on the backend's thread while requests keep queueing.
    fn spawn_reads(self: &Arc<Self>, generations: Weak<Generations>, gate: Arc<Gate>) {
        let this = Arc::clone(self);
        self.handle.spawn(async move {
            loop {
                if let Some(generations) = generations.upgrade() {
                    this.sync_cache(&generations).await;
                }
                let mut state = gate.state.lock().unwrap_or_else(PoisonError::into_inner);
                gate.finished.send_replace(state.started);
                if state.queued {
                    state.queued = false;
                    state.started += 1;
                } else {
                    state.running = false;
                    return;
                }
            }
        });
    }

    /// Bumps the counter of `cache` (or of one section) to at least `floor` and broadcasts
    /// the new value; the caller's own copy is raised to it. Queued for replay if Redis is
    /// down.
    pub(crate) fn publish(
        self: &Arc<Self>,
        generations: &Arc<Generations>,
        section: Option<String>,
        floor: u64,
    ) -> BoxFuture<'static, ()> {
        let this = Arc::clone(self);
        let generations = Arc::downgrade(generations);
        let task = self.handle.spawn(async move {
            let Some(generations) = generations.upgrade() else {
                return;
            };
            let cache = generations.cache().to_owned();
            if let Some(value) = this.bump(&cache, section.as_deref(), floor).await {
                generations.observe(section.as_deref(), value);
                tracing::debug!(cache, ?section, value, "response cache: invalidation published");
            } else {
                tracing::warn!(cache, ?section,
                    "response cache: invalidation not published (redis unavailable); other instances learn of it when it is back");
                this.pending
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert((cache, section));
            }
        });
        Box::pin(async move {
            let _ = task.await;
        })
    }

    async fn bump(self: &Arc<Self>, cache: &str, section: Option<&str>, floor: u64) -> Option<u64> {
        let key = self.generation_key(cache, section);
        let channel = self.channel.clone();
        let payload = match section {
            Some(section) => format!("{cache}\n{section}"),
            None => cache.to_owned(),
        };
        self.run("publish", move |mut conn| {
            Box::pin(async move {
                ::redis::cmd("EVAL")
                    .arg(BUMP)
                    .arg(1)
                    .arg(key)
                    .arg(floor)
                    .arg(channel)
                    .arg(payload)
                    .query_async(&mut conn)
                    .await
            })
        })
        .await
    }

    /// Adds a cache to those this backend keeps in step, and starts reading its counters.
    pub(crate) fn register(self: &Arc<Self>, generations: &Arc<Generations>) {
        self.caches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::downgrade(generations));
        let (this, cache) = (Arc::clone(self), Arc::downgrade(generations));
        self.handle.spawn(async move {
            if let Some(cache) = cache.upgrade() {
                this.sync_cache(&cache).await;
            }
        });
    }

    /// Replays the invalidations Redis missed, then re-reads every cache's counters.
    pub(crate) async fn resync(self: &Arc<Self>) {
        let pending: Vec<(String, Option<String>)> = self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .collect();
        for (cache, section) in pending {
            let Some(generations) = self.cache(&cache) else {
                continue;
            };
            let floor = generations.local(section.as_deref());
            match self.bump(&cache, section.as_deref(), floor).await {
                Some(value) => {
                    generations.observe(section.as_deref(), value);
                }
                None => {
                    self.pending
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert((cache, section));
                }
            }
        }
        for generations in self.live_caches() {
            self.sync_cache(&generations).await;
        }
    }

    /// One [`SYNC`] of a cache's counters (the cache's, then each section's).
    async fn sync_cache(self: &Arc<Self>, generations: &Arc<Generations>) {
        let scopes: Vec<Option<String>> = std::iter::once(None)
            .chain(
                generations
                    .section_names()
                    .map(|name| Some(name.to_owned())),
            )
            .collect();
        let mut cmd = ::redis::cmd("EVAL");
        cmd.arg(SYNC).arg(scopes.len());
        for scope in &scopes {
            cmd.arg(self.generation_key(generations.cache(), scope.as_deref()));
        }
        for scope in &scopes {
            cmd.arg(generations.local(scope.as_deref()));
        }
        let values: Option<Vec<u64>> = self
            .run("sync", move |mut conn| {
                Box::pin(async move { cmd.query_async(&mut conn).await })
            })
            .await;
        for (scope, value) in scopes.iter().zip(values.unwrap_or_default()) {
            generations.observe(scope.as_deref(), value);
        }
    }

    fn cache(&self, name: &str) -> Option<Arc<Generations>> {
        self.live_caches()
            .into_iter()
            .find(|generations| generations.cache() == name)
    }

    fn live_caches(&self) -> Vec<Arc<Generations>> {
        let mut caches = self.caches.lock().unwrap_or_else(PoisonError::into_inner);
        caches.retain(|weak| weak.strong_count() > 0);
        caches.iter().filter_map(Weak::upgrade).collect()
    }

    /// Applies a broadcast to the caches it names.
    fn on_message(&self, payload: &str) {
        let Some((value, cache, section)) = parse_message(payload) else {
            tracing::debug!(payload, "response cache: ignoring a malformed invalidation");
            return;
        };
        for generations in self.live_caches() {
            if generations.cache() == cache {
                generations.observe(section, value);
            }
        }
    }
}

/// A broadcast, `"<value>\n<cache>[\n<section>]"`: the new counter, the cache, the section.
fn parse_message(payload: &str) -> Option<(u64, &str, Option<&str>)> {
    let mut parts = payload.splitn(3, '\n');
    let value = parts.next()?.parse().ok()?;
    let cache = parts.next()?;
    Some((value, cache, parts.next()))
}

/// Keeps one subscription to the invalidation channel, reconnecting after every loss; each
/// (re)connect re-reads the counters, since messages sent while it was away are gone.
pub(crate) async fn subscribe_loop(backend: Weak<Backend>, client: Client) {
    loop {
        let Some(this) = backend.upgrade() else {
            return;
        };
        let (channel, timeout, retry) = (this.channel.clone(), this.timeout, this.retry_interval);
        drop(this);
        let connected = tokio::time::timeout(timeout, async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, RedisError>(pubsub)
        })
        .await;
        if let Ok(Ok(pubsub)) = connected {
            let Some(this) = backend.upgrade() else {
                return;
            };
            this.subscribed.store(true, Ordering::Relaxed);
            tracing::debug!(channel, "response cache: subscribed to invalidations");
            this.resync().await;
            drop(this);
            let mut messages = pubsub.into_on_message();
            while let Some(msg) = messages.next().await {
                let Some(this) = backend.upgrade() else {
                    return;
                };
                match msg.get_payload::<String>() {
                    Ok(payload) => this.on_message(&payload),
                    Err(err) => {
                        tracing::debug!(error = %err, "response cache: unreadable invalidation");
                    }
                }
            }
            if let Some(this) = backend.upgrade() {
                this.subscribed.store(false, Ordering::Relaxed);
                tracing::warn!(
                    channel,
                    "response cache: invalidation subscription lost; reconnecting"
                );
            }
        }
        tokio::time::sleep(retry).await;
    }
}

/// Re-reads every counter each `sync_interval`, for instances that see no requests.
pub(crate) async fn sync_loop(backend: Weak<Backend>) {
    loop {
        let Some(interval) = backend.upgrade().map(|b| b.sync_interval) else {
            return;
        };
        tokio::time::sleep(interval).await;
        let Some(this) = backend.upgrade() else {
            return;
        };
        this.resync().await;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn messages_name_a_value_a_cache_and_maybe_a_section() {
        assert_eq!(parse_message("7\nsummary"), Some((7, "summary", None)));
        assert_eq!(
            parse_message("8\nsummary\nrecent_progress"),
            Some((8, "summary", Some("recent_progress")))
        );
        assert_eq!(parse_message("x\nsummary"), None);
        assert_eq!(parse_message("9"), None);
        assert_eq!(parse_message(""), None);
    }

    proptest! {
        #[test]
        fn any_payload_parses_or_is_refused_without_panic(payload in "\\PC{0,64}") {
            let _ = parse_message(&payload);
        }

        #[test]
        fn published_payloads_round_trip(
            value in any::<u64>(),
            cache in "[a-z-]{1,20}",
            section in proptest::option::of("[a-z_]{1,20}"),
        ) {
            let payload = match &section {
                Some(section) => format!("{value}\n{cache}\n{section}"),
                None => format!("{value}\n{cache}"),
            };
            prop_assert_eq!(
                parse_message(&payload),
                Some((value, cache.as_str(), section.as_deref()))
            );
        }
    }
}
