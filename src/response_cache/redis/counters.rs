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
//! A *broken* counter (above 2^52, negative, not an integer: see [`counter_lua`]) is repaired
//! the same way, by the read or by the next increment, to a value past any used before.
//!
//! A counter that cannot be read or written (a value of another type, `OOM`) is a Redis
//! failure: `actix_conditional_redis_up` says 0 until it works again, and an invalidation that
//! could not be published is replayed once it does, so invalidation never stops silently.

use std::sync::LazyLock;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use ::redis::cluster::ClusterClient;
use ::redis::{PushInfo, PushKind, RedisError};
use futures_util::StreamExt as _;
use futures_util::future::BoxFuture;
use tokio::sync::watch;

use super::Backend;
use super::conn::Source;
use super::health::code_of;
use crate::response_cache::generations::{Generations, MAX_COUNTER};

/// What the counter scripts share. A counter is stored as decimal digits, at most
/// [`MAX_COUNTER`] (2^52: Lua's numbers are doubles, exact to 2^53, and `+ 1` must stay
/// exact); anything else under the key (above it, negative, a fraction, text) is broken and
/// `valid` says `nil`. Numbers are written with `%.0f`, not `tostring` (`1e+14`).
///
/// `past` is what a broken counter is repaired to. Like a missing one, its value is unknown,
/// but unlike a missing one it may have been anything, so "one past the caller's copy" is not
/// enough: other instances may have had (and stamped entries with) higher values than the
/// caller's copy, and a repair that lands on one of them would let their old entries look
/// current. So it jumps to Redis's clock in microseconds (or past the caller's copy, if that
/// is higher): a counter only passes that clock after more than one invalidation per
/// microsecond on average since its creation (or last repair), so every value used before
/// is below the repaired one, and every instance, the caller included, takes the repair as an
/// invalidation. (Microseconds since 1970 reach 2^52 in the year 2112.)
macro_rules! counter_lua {
    () => {
        r"
local function valid(raw, max)
  if type(raw) ~= 'string' or #raw > 16 or not string.match(raw, '^%d+$') then
    return nil
  end
  local n = tonumber(raw)
  if n > max then
    return nil
  end
  return n
end
local function past(above, max)
  local t = redis.call('TIME')
  return math.min(math.max(above, tonumber(t[1]) * 1000000 + tonumber(t[2])), max)
end
local function text(v)
  return string.format('%.0f', v)
end
"
    };
}

/// Increments the counter `KEYS[1]` to at least `ARGV[1]` (the caller's copy after its own
/// bump) and publishes the new value on `ARGV[2]` (with `ARGV[3]` after it) with `ARGV[5]`
/// (`PUBLISH`, or `SPUBLISH` on a cluster: the channel is in the counter's slot). With
/// `ARGV[6]` `'1'` (a topology with replicas, see [`Backend::clock_counters`]) the new value
/// is also at least Redis's clock in microseconds. A broken counter is repaired first (see
/// [`counter_lua`]). Returns `{value, the broken value or ''}`; a
/// counter of another type is a `WRONGTYPE` error, left for someone to fix (it may be another
/// app's data under a colliding prefix).
/// `BUMP` and `SYNC`, sent by hash (`EVALSHA`, loaded on `NOSCRIPT`): `SYNC` runs on every
/// sync interval, and its source would cross the wire each time with `EVAL`.
static BUMP_SCRIPT: LazyLock<::redis::Script> = LazyLock::new(|| ::redis::Script::new(BUMP));
static SYNC_SCRIPT: LazyLock<::redis::Script> = LazyLock::new(|| ::redis::Script::new(SYNC));

const BUMP: &str = concat!(
    counter_lua!(),
    r"
local max = tonumber(ARGV[4])
local floor = tonumber(ARGV[1])
local raw = redis.call('GET', KEYS[1])
local v, repaired = 1, ''
if raw then
  local current = valid(raw, max)
  if current then
    v = current + 1
  else
    v = past(floor, max)
    repaired = string.sub(raw, 1, 64)
  end
end
if v < floor then
  v = floor
end
if ARGV[6] == '1' then
  v = past(v, max)
end
if v > max then
  return redis.error_reply('ERANGE invalidation counter past 2^52')
end
redis.call('SET', KEYS[1], text(v))
redis.call(ARGV[5], ARGV[2], text(v) .. '\n' .. ARGV[3])
return {v, repaired}
"
);

/// Reads counters. One below the caller's copy (`ARGV[i]`) means Redis lost it (a restart
/// without persistence, a flush) or never got an increment (made while it was unreachable):
/// whatever happened meanwhile is unknown, so it is set one past the caller's copy, which
/// every instance, the caller included, then takes as an invalidation. A broken one is
/// repaired as in [`counter_lua`]. With `ARGV[#KEYS + 2]` `'1'` (see
/// [`Backend::clock_counters`]) a lost counter is set to at least Redis's clock in
/// microseconds instead. Each key is read on its own (`pcall`), so one bad key does
/// not hide the others. Returns `{values, errors, broken values}`, one of each per key: the
/// value (-1 on an error), the error (`''`), the broken value that was repaired (`''`).
const SYNC: &str = concat!(
    counter_lua!(),
    r"
local max = tonumber(ARGV[#KEYS + 1])
local clock = ARGV[#KEYS + 2] == '1'
local values, errors, repaired = {}, {}, {}
for i, key in ipairs(KEYS) do
  local mine = tonumber(ARGV[i])
  values[i], errors[i], repaired[i] = -1, '', ''
  local raw = redis.pcall('GET', key)
  if type(raw) == 'table' and raw.err then
    errors[i] = raw.err
  else
    local current, write = 0, false
    if raw then
      current = valid(raw, max)
      if not current then
        repaired[i] = string.sub(raw, 1, 64)
        current = past(mine + 1, max)
        write = true
      end
    end
    if current < mine then
      current = mine + 1
      if clock then
        current = past(current, max)
      end
      write = true
    end
    local set = write and redis.pcall('SET', key, text(current))
    if type(set) == 'table' and set.err then
      errors[i] = set.err
    else
      values[i] = current
    end
  end
end
return {values, errors, repaired}
"
);

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
    /// `<prefix>:<cache>:gen[:<section>]`; on a cluster `<prefix>:{<cache>}:gen[:<section>]`:
    /// the braces are a hash tag, so a cache's counters (read together by [`SYNC`]) and its
    /// sharded channel share a slot.
    fn generation_key(&self, cache: &str, section: Option<&str>) -> String {
        let cache = if self.cluster {
            format!("{{{}}}", self.part(cache))
        } else {
            cache.to_owned()
        };
        match section {
            Some(section) => format!("{}:{cache}:gen:{section}", self.prefix),
            None => format!("{}:{cache}:gen", self.prefix),
        }
    }

    /// A cache's invalidation channel on a cluster (`SPUBLISH`/`SSUBSCRIBE`), in the slot
    /// of its counters: `<prefix>:{<cache>}:invalidations`.
    fn sharded_channel(&self, cache: &str) -> String {
        format!("{}:{{{}}}:invalidations", self.prefix, self.part(cache))
    }

    /// Where `cache`'s invalidations are published, and with which command.
    fn channel_of(&self, cache: &str) -> (String, &'static str) {
        if self.cluster {
            (self.sharded_channel(cache), "SPUBLISH")
        } else {
            (self.channel.clone(), "PUBLISH")
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
                let key = this.generation_key(&cache, section.as_deref());
                match this.warn_allowed(&key, std::time::Instant::now()) {
                    Some(suppressed) => tracing::warn!(cache, ?section, key, suppressed,
                        "response cache: invalidation not published (redis unavailable or failing); other instances learn of it when it works again"),
                    None => tracing::debug!(cache, ?section, "response cache: invalidation not published"),
                }
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
        let (channel, publish) = self.channel_of(cache);
        let clock = u8::from(self.clock_counters);
        let payload = match section {
            Some(section) => format!("{cache}\n{section}"),
            None => cache.to_owned(),
        };
        let subject = key.clone();
        let (value, repaired): (u64, String) = self
            .run("publish", key.clone(), move |mut conn| {
                Box::pin(async move {
                    BUMP_SCRIPT
                        .key(subject)
                        .arg(floor)
                        .arg(channel)
                        .arg(payload)
                        .arg(MAX_COUNTER)
                        .arg(publish)
                        .arg(clock)
                        .invoke_async(&mut conn)
                        .await
                })
            })
            .await?;
        if !repaired.is_empty() {
            self.repaired(&key, &repaired, value);
        }
        Some(value)
    }

    /// Says (rate-limited) that the counter `key` held `broken` and was repaired to `value`.
    fn repaired(&self, key: &str, broken: &str, value: u64) {
        match self.warn_allowed(key, std::time::Instant::now()) {
            Some(suppressed) => tracing::warn!(
                key,
                broken,
                value,
                suppressed,
                "response cache: repaired a broken invalidation counter (an invalidation for every instance)"
            ),
            None => tracing::debug!(
                key,
                broken,
                value,
                "response cache: repaired a broken invalidation counter"
            ),
        }
    }

    /// Adds a cache to those this backend keeps in step, and starts reading its counters.
    pub(crate) fn register(self: &Arc<Self>, generations: &Arc<Generations>) {
        self.caches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::downgrade(generations));
        self.registered.notify_one();
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
        let keys: Vec<String> = scopes
            .iter()
            .map(|scope| self.generation_key(generations.cache(), scope.as_deref()))
            .collect();
        let mut cmd = SYNC_SCRIPT.prepare_invoke();
        cmd.key(&keys);
        for scope in &scopes {
            cmd.arg(generations.local(scope.as_deref()));
        }
        cmd.arg(MAX_COUNTER);
        cmd.arg(u8::from(self.clock_counters));
        // The script reports each key's error itself; the call's own subject covers the
        // script as a whole.
        let subject = format!("{}*", self.generation_key(generations.cache(), None));
        let reply: Option<(Vec<i64>, Vec<String>, Vec<String>)> = self
            .run("sync", subject, move |mut conn| {
                Box::pin(async move { cmd.invoke_async(&mut conn).await })
            })
            .await;
        let Some((values, errors, repaired)) = reply else {
            return;
        };
        for (i, (scope, key)) in scopes.iter().zip(&keys).enumerate() {
            match errors.get(i).map(String::as_str) {
                Some("") => {}
                Some(error) => {
                    self.count_error("sync");
                    self.fault("sync", key, code_of(error), error);
                    continue;
                }
                None => continue, // not a reply of this script
            }
            self.succeeded("sync", key);
            let Some(value) = values.get(i).and_then(|v| u64::try_from(*v).ok()) else {
                continue;
            };
            if let Some(broken) = repaired.get(i).filter(|broken| !broken.is_empty()) {
                self.repaired(key, broken, value);
            }
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
/// (Through Sentinel, the primary is asked for again on each connect.)
pub(crate) async fn subscribe_loop(backend: Weak<Backend>, source: Source) {
    loop {
        let Some(this) = backend.upgrade() else {
            return;
        };
        let (channel, timeout, retry) = (this.channel.clone(), this.timeout, this.retry_interval);
        drop(this);
        let connected = tokio::time::timeout(timeout, async {
            let client = source.client().await?;
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

/// The subscription on a cluster: one sharded channel per cache (`SSUBSCRIBE`, in the slot of
/// the cache's counters), on a RESP3 cluster connection. Channels are added as caches
/// register. When a node of the subscription disconnects (a master killed, a failover), the
/// connection is dropped and made again, which learns the new topology and subscribes where
/// the slots now live; messages meanwhile may be lost, so the counters are re-read then.
pub(crate) async fn sharded_subscribe_loop(
    backend: Weak<Backend>,
    client: ClusterClient,
    mut pushes: tokio::sync::mpsc::UnboundedReceiver<PushInfo>,
) {
    let Some(registered) = backend.upgrade().map(|b| Arc::clone(&b.registered)) else {
        return;
    };
    let mut conn = None;
    let mut channels = std::collections::HashSet::new();
    loop {
        let Some(this) = backend.upgrade() else {
            return;
        };
        let (timeout, retry) = (this.timeout, this.retry_interval);
        if conn.is_none() {
            channels.clear();
            match tokio::time::timeout(timeout, client.get_async_connection()).await {
                Ok(Ok(connected)) => conn = Some(connected),
                _ => {
                    this.subscribed.store(false, Ordering::Relaxed);
                    drop(this);
                    tokio::time::sleep(retry).await;
                    continue;
                }
            }
        }
        let wanted: Vec<String> = this
            .live_caches()
            .iter()
            .map(|generations| this.sharded_channel(generations.cache()))
            .filter(|channel| !channels.contains(channel))
            .collect();
        let (mut added, mut failed) = (false, false);
        if let Some(connected) = conn.as_mut() {
            for channel in wanted {
                if let Ok(Ok(())) =
                    tokio::time::timeout(timeout, connected.ssubscribe(&channel)).await
                {
                    tracing::debug!(channel, "response cache: subscribed to invalidations");
                    channels.insert(channel);
                    added = true;
                } else {
                    failed = true;
                }
            }
        }
        if failed {
            // Perhaps a node that is gone: start over with a fresh view of the cluster.
            conn = None;
        }
        let all = !failed
            && this
                .live_caches()
                .iter()
                .all(|generations| channels.contains(&this.sharded_channel(generations.cache())));
        this.subscribed.store(all, Ordering::Relaxed);
        if added && all {
            // Messages sent before the subscription are gone.
            this.resync().await;
        }
        drop(this);
        let wait = if all { None } else { Some(retry) };
        tokio::select! {
            push = pushes.recv() => {
                let Some(push) = push else { return };
                let Some(this) = backend.upgrade() else { return };
                match push.kind {
                    PushKind::SMessage | PushKind::Message => {
                        // `[channel, payload]`
                        if let Some(payload) = push
                            .data
                            .get(1)
                            .and_then(|v| ::redis::from_redis_value_ref::<String>(v).ok())
                        {
                            this.on_message(&payload);
                        }
                    }
                    PushKind::Disconnection => {
                        tracing::debug!("response cache: a cluster node of the invalidation subscription disconnected; subscribing again");
                        this.subscribed.store(false, Ordering::Relaxed);
                        conn = None;
                        drop(this);
                        // Give the cluster a moment to notice (and promote a replica).
                        tokio::time::sleep(retry).await;
                    }
                    _ => {}
                }
            }
            () = async {
                match wait {
                    None => registered.notified().await,
                    Some(wait) => tokio::time::sleep(wait).await,
                }
            } => {}
        }
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
