//! What an engine is built from: the settings its mode builder assembles.

use std::sync::Arc;
use std::time::Duration;

use crate::response_cache::clock::Clock;
use crate::response_cache::downstream::Downstream;
use crate::response_cache::generations::Generations;
use crate::response_cache::key::QueryKey;
use crate::response_cache::stats::Stats;
use crate::response_cache::storable::UserKey;
use crate::response_cache::strategy::Strategy;
use crate::response_cache::tier::SharedTier;

/// Names the user behind a credentialed request (`key_by`).
pub(crate) type UserKeyFn = Arc<UserKey>;

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
    pub(crate) query_key: QueryKey,
    pub(crate) downstream: Downstream,
    /// Connects a shared tier to the cache's counters and stats, if it has one.
    pub(crate) tier: Option<TierFactory>,
    pub(crate) memory_copies: bool,
}

/// Makes a cache's shared tier, given its counters and stats.
pub(crate) type TierFactory = Box<dyn FnOnce(Arc<Generations>, Arc<Stats>) -> Arc<dyn SharedTier>>;
