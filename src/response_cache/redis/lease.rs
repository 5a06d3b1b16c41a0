//! Build leases: which instance builds a cold key (`SET NX PX` with a random token, renewed
//! while the build runs, deleted only by its holder).
//!
//! A lease that can never expire (no TTL: written by something else, or `PERSIST`ed) or that
//! would outlive any lease of ours (a TTL above `lease_ttl`, which is what ours are set and
//! renewed to) is broken: left alone it would make every cold request wait out its
//! `lock_timeout` and, since stale refreshes take the same lease, pin stale content. It is
//! taken over by [`ACQUIRE`], in one script, so two instances cannot both take it: the first
//! sets its own token with a `PX`, after which the lease is no longer broken for the second.

use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{Backend, Stored, millis};

/// Extends the lease only if `token` still holds it: a holder whose lease expired and was
/// taken over must not extend the new holder's.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// Deletes the lease only if `token` still holds it (a late release must not free a lease
/// another instance took over after ours expired).
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Takes the lease `KEYS[1]` for token `ARGV[1]` for `ARGV[2]` ms if it is free, or broken (no
/// expiry, or one longer than `ARGV[2]`), and reads the entry `KEYS[2]` in the same step (a
/// build that finished just before must not be repeated). Returns `{taken, lease PTTL found,
/// value, value PTTL}`: `taken` 1 (free), 2 (broken, taken over) or 0 (held), the PTTL -2 when
/// the lease was free.
const ACQUIRE: &str = r"
local px = tonumber(ARGV[2])
local taken, found = 0, -2
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', px) then
  taken = 1
else
  found = redis.call('PTTL', KEYS[1])
  if found == -1 or found > px then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', px)
    taken = 2
  end
end
return {taken, found, redis.call('GET', KEYS[2]), redis.call('PTTL', KEYS[2])}
";

/// Whether a lease whose `PTTL` is `pttl` is broken for a backend whose leases live
/// `lease_px` ms: no expiry (`-1`), or longer than any lease of ours.
pub(crate) fn broken(pttl: i64, lease_px: u64) -> bool {
    pttl == -1 || u64::try_from(pttl).is_ok_and(|pttl| pttl > lease_px)
}

/// The scripts sent by hash (`EVALSHA`, loaded on `NOSCRIPT`), not as source on every call.
static ACQUIRE_SCRIPT: LazyLock<::redis::Script> = LazyLock::new(|| ::redis::Script::new(ACQUIRE));
static RENEW_SCRIPT: LazyLock<::redis::Script> = LazyLock::new(|| ::redis::Script::new(RENEW));

/// The release command, for pipelining after the value's `SET`. Sent as `EVAL` with its
/// source: inside a pipeline an `EVALSHA` that meets `NOSCRIPT` (a restarted or flushed Redis)
/// would fail there, with nothing to retry it, and leave the lease to expire.
pub(crate) fn release_cmd(key: &str, token: &str) -> ::redis::Cmd {
    let mut cmd = ::redis::cmd("EVAL");
    cmd.arg(RELEASE).arg(1).arg(key).arg(token);
    cmd
}

/// A held build lease. Renewed in the background until it is dropped or
/// [disarmed](Self::disarm); dropping it releases it.
pub(crate) struct Lease {
    backend: Arc<Backend>,
    key: String,
    token: String,
    renewal: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("key", &self.key).finish()
    }
}

/// What trying to take a lease found.
pub(crate) struct Attempt {
    /// The lease, if this instance took it.
    pub(crate) lease: Option<Lease>,
    /// The value stored under the entry key at the same moment, if any.
    pub(crate) stored: Option<Stored>,
}

/// What a waiter's poll found.
pub(crate) struct Polled {
    pub(crate) stored: Option<Stored>,
    pub(crate) lease_held: bool,
}

impl Lease {
    /// Tries to take the lease `lease_key`, reading `entry_key` in the same round trip (a
    /// build that finished just before must not be repeated). `None`: Redis unavailable.
    pub(crate) async fn try_acquire(
        backend: &Arc<Backend>,
        lease_key: String,
        entry_key: String,
    ) -> Option<Attempt> {
        let token = new_token();
        // Why a guard: a `SET NX` that times out here (or whose request goes away) may still
        // have been applied. Unless the reply says we did not get it, the token is released,
        // or nobody would build while the others wait out the lease's life.
        let mut unclaimed = Unclaimed {
            backend: Arc::clone(backend),
            key: lease_key.clone(),
            token: token.clone(),
            armed: true,
        };
        let px = millis(backend.lease_ttl);
        let (key, tok) = (lease_key.clone(), token.clone());
        let (taken, found, value, pttl): (u8, i64, Option<Vec<u8>>, i64) = backend
            .run("lease", lease_key.clone(), move |mut conn| {
                Box::pin(async move {
                    ACQUIRE_SCRIPT
                        .key(&key)
                        .key(&entry_key)
                        .arg(&tok)
                        .arg(px)
                        .invoke_async(&mut conn)
                        .await
                })
            })
            .await?;
        unclaimed.armed = false;
        if taken == 2 {
            let ttl = if found == -1 {
                "none".to_owned()
            } else {
                format!("{found} ms")
            };
            match backend.warn_allowed(&lease_key, std::time::Instant::now()) {
                Some(suppressed) => {
                    tracing::warn!(key = %lease_key, ttl, lease_ttl_ms = px, suppressed,
                    "response cache: took over a build lease that would not expire in time (written by something else?)")
                }
                None => {
                    tracing::debug!(key = %lease_key, ttl, "response cache: took over a broken build lease")
                }
            }
        }
        let stored = value.map(|value| (bytes::Bytes::from(value), pttl));
        let lease = (taken != 0).then(|| Self::held(backend, lease_key, token));
        Some(Attempt { lease, stored })
    }

    /// Whether the lease is still held and what is stored meanwhile. `None`: unavailable.
    /// A broken lease (see [`broken`]) is not held: the waiter then tries to take it over.
    pub(crate) async fn poll(
        backend: &Arc<Backend>,
        lease_key: String,
        entry_key: String,
    ) -> Option<Polled> {
        // `EXISTS` is redundant with `PTTL` (-2), but it is the one command only a poll sends,
        // which `tests/lock_outcomes.rs` counts to know a waiter is polling.
        let (value, pttl, exists, lease_pttl): (Option<Vec<u8>>, i64, bool, i64) = backend
            .run("poll", entry_key.clone(), move |mut conn| {
                Box::pin(async move {
                    ::redis::pipe()
                        .get(&entry_key)
                        .pttl(&entry_key)
                        .exists(&lease_key)
                        .pttl(&lease_key)
                        .query_async(&mut conn)
                        .await
                })
            })
            .await?;
        Some(Polled {
            stored: value.map(|value| (bytes::Bytes::from(value), pttl)),
            lease_held: exists && !broken(lease_pttl, millis(backend.lease_ttl)),
        })
    }

    fn held(backend: &Arc<Backend>, key: String, token: String) -> Self {
        let every = (backend.lease_ttl / 3).max(Duration::from_millis(10));
        let px = millis(backend.lease_ttl);
        let renewal = {
            let (backend2, key, token) = (Arc::clone(backend), key.clone(), token.clone());
            backend.spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let (key, token) = (key.clone(), token.clone());
                    let renewed: Option<i64> = backend2
                        .run("renew", key.clone(), move |mut conn| {
                            Box::pin(async move {
                                RENEW_SCRIPT
                                    .key(key)
                                    .arg(token)
                                    .arg(px)
                                    .invoke_async(&mut conn)
                                    .await
                            })
                        })
                        .await;
                    if renewed == Some(0) {
                        tracing::warn!("response cache: build lease lost (expired and taken over); another instance builds too");
                        return;
                    }
                }
            })
        };
        Self {
            backend: Arc::clone(backend),
            key,
            token,
            renewal: Some(renewal),
        }
    }

    /// Stops renewing and hands back `(key, token)` for a release sent with the value.
    pub(crate) fn disarm(mut self) -> (String, String) {
        if let Some(renewal) = self.renewal.take() {
            renewal.abort();
        }
        (
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.token),
        )
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(renewal) = self.renewal.take() else {
            return; // disarmed: released with the value
        };
        renewal.abort();
        // The build ended without storing (an error, not shareable, cancelled): free the key
        // for the next instance now rather than after the lease's life.
        release_later(
            &self.backend,
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.token),
        );
    }
}

/// A lease `SET NX` sent but not yet known to have failed; see [`Lease::try_acquire`].
struct Unclaimed {
    backend: Arc<Backend>,
    key: String,
    token: String,
    armed: bool,
}

impl Drop for Unclaimed {
    fn drop(&mut self) {
        if self.armed {
            release_later(
                &self.backend,
                std::mem::take(&mut self.key),
                std::mem::take(&mut self.token),
            );
        }
    }
}

/// Releases `key` if `token` holds it, on the backend's thread, without waiting.
pub(crate) fn release_later(backend: &Arc<Backend>, key: String, token: String) {
    let this = Arc::clone(backend);
    backend.spawn(async move {
        let _: Option<i64> = this
            .run("release", key.clone(), move |mut conn| {
                Box::pin(async move { release_cmd(&key, &token).query_async(&mut conn).await })
            })
            .await;
    });
}

/// A token no other holder has: 128 random bits from the operating system. (A process id,
/// a clock and a counter are not enough: containers all run as PID 1, and their clocks can
/// agree.) Should the system's source fail, which it does not on any supported platform, the
/// clock and counter still keep this process's tokens apart.
fn new_token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut bytes = [0_u8; 16];
    if let Err(err) = getrandom::fill(&mut bytes) {
        tracing::warn!(%err, "redis: no random lease token, falling back to clock and counter");
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        return format!("{nanos:x}-{count}");
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::new_token;

    #[test]
    fn tokens_are_128_random_bits_never_repeated() {
        let tokens: std::collections::HashSet<String> = (0..1000).map(|_| new_token()).collect();
        assert_eq!(tokens.len(), 1000);
        assert!(
            tokens
                .iter()
                .all(|t| t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()))
        );
    }
}
