//! Where Redis is ([`RedisTopology`]: one server, a Redis Cluster, or a primary found through
//! Sentinel) and the one connection type the rest of the backend talks through ([`Conn`]).
//!
//! Every operation of the backend is written once, against [`Conn`], and touches one hash
//! slot (see the key layout in the [module docs](super)), so the same script or pipeline runs
//! on a single server and on a cluster.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::ClusterClient;
use ::redis::cluster_async::ClusterConnection;
use ::redis::sentinel::{SentinelClient, SentinelServerType};
use ::redis::{Client, Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};

/// Where the Redis tier lives; what [`RedisBackend::builder`](super::RedisBackend::builder)
/// takes (a `&str` or `String` is read by [`RedisTopology::parse`]: a server's URL, or a
/// `cluster:`/`sentinel:` list).
///
/// What each one guarantees during a failover is in `docs/redis.md` ("Topologies").
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RedisTopology {
    /// One `redis-server` (`redis://host:port/db`, `rediss://`, `unix://`).
    Single(String),
    /// A Redis Cluster: the URLs of some of its nodes (`redis://host:port`), from which the
    /// client learns the rest and follows `MOVED`/`ASK` redirections and failovers. Needs
    /// Redis 7 or later (sharded pub/sub).
    Cluster(Vec<String>),
    /// A primary (with replicas) watched by Sentinels: the Sentinels' URLs and the name of
    /// the monitored primary (`sentinel monitor <name> …`). The primary is asked for on the
    /// first call and again whenever it stops answering as one, so a failover is followed
    /// without a restart. (The data nodes are reached without a password and on database 0.)
    Sentinel {
        /// URLs of the Sentinels (`redis://host:26379`).
        sentinels: Vec<String>,
        /// The primary's name as the Sentinels know it.
        service: String,
    },
}

impl RedisTopology {
    /// One server.
    pub fn single(url: impl Into<String>) -> Self {
        Self::Single(url.into())
    }

    /// A Redis Cluster reached through any of `nodes`.
    pub fn cluster<I, S>(nodes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::Cluster(nodes.into_iter().map(Into::into).collect())
    }

    /// The primary named `service` by the Sentinels at `sentinels`.
    pub fn sentinel<I, S>(sentinels: I, service: impl Into<String>) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::Sentinel {
            sentinels: sentinels.into_iter().map(Into::into).collect(),
            service: service.into(),
        }
    }

    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }
}

impl fmt::Debug for RedisTopology {
    // Not derived: URLs may carry a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Single(_) => f.write_str("Single(..)"),
            Self::Cluster(nodes) => write!(f, "Cluster({} nodes)", nodes.len()),
            Self::Sentinel { sentinels, service } => f
                .debug_struct("Sentinel")
                .field("sentinels", &sentinels.len())
                .field("service", service)
                .finish(),
        }
    }
}

impl RedisTopology {
    /// Reads a topology from one string, as an environment variable holds it:
    ///
    /// - `redis://host:port/db` (or `rediss://`, `unix://`): one server;
    /// - `cluster:redis://host1:port1,redis://host2:port2`: a cluster, through any of these
    ///   nodes;
    /// - `sentinel:<name>@redis://host1:26379,redis://host2:26379`: the primary the
    ///   Sentinels call `<name>`.
    ///
    /// Nothing is checked here; [`build`](super::RedisBackendBuilder::build) refuses a
    /// malformed URL. (This is what `From<&str>` does, so
    /// [`RedisBackend::builder`](super::RedisBackend::builder) and
    /// [`RedisBackend::new`](super::RedisBackend::new) take these strings too.)
    ///
    /// ```
    /// use actix_conditional::response_cache::RedisTopology;
    ///
    /// assert_eq!(
    ///     RedisTopology::parse("redis://127.0.0.1:6379/"),
    ///     RedisTopology::single("redis://127.0.0.1:6379/")
    /// );
    /// assert_eq!(
    ///     RedisTopology::parse("cluster:redis://10.0.0.1:7000,redis://10.0.0.2:7000"),
    ///     RedisTopology::cluster(["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"])
    /// );
    /// assert_eq!(
    ///     RedisTopology::parse("sentinel:mymaster@redis://10.0.0.1:26379,redis://10.0.0.2:26379"),
    ///     RedisTopology::sentinel(["redis://10.0.0.1:26379", "redis://10.0.0.2:26379"], "mymaster")
    /// );
    /// ```
    pub fn parse(spec: &str) -> Self {
        let list = |urls: &str| -> Vec<String> {
            urls.split(',')
                .map(str::trim)
                .filter(|url| !url.is_empty())
                .map(str::to_owned)
                .collect()
        };
        if let Some(nodes) = spec.strip_prefix("cluster:") {
            return Self::Cluster(list(nodes));
        }
        if let Some((service, sentinels)) = spec
            .strip_prefix("sentinel:")
            .and_then(|rest| rest.split_once('@'))
        {
            return Self::Sentinel {
                sentinels: list(sentinels),
                service: service.to_owned(),
            };
        }
        Self::Single(spec.to_owned())
    }
}

impl From<&str> for RedisTopology {
    /// [`RedisTopology::parse`].
    fn from(spec: &str) -> Self {
        Self::parse(spec)
    }
}

impl From<String> for RedisTopology {
    /// [`RedisTopology::parse`].
    fn from(spec: String) -> Self {
        Self::parse(&spec)
    }
}

impl From<&String> for RedisTopology {
    /// [`RedisTopology::parse`].
    fn from(spec: &String) -> Self {
        Self::parse(spec)
    }
}

/// The connection every Redis call of the backend goes through: a `redis` connection
/// manager (one server, or the Sentinels' current primary) or a cluster connection. Cheap to
/// clone; clones share the connections.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(Arc<SentinelConn>),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
            Self::Sentinel(sentinel) => Box::pin(async move {
                let (epoch, mut conn) = sentinel.primary().await?;
                let reply = conn.req_packed_command(cmd).await;
                sentinel.check(epoch, reply.as_ref().err());
                reply
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Sentinel(sentinel) => Box::pin(async move {
                let (epoch, mut conn) = sentinel.primary().await?;
                let reply = conn.req_packed_commands(pipeline, offset, count).await;
                sentinel.check(epoch, reply.as_ref().err());
                reply
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
            Self::Sentinel(_) => 0,
        }
    }
}

/// A connection to whichever server the Sentinels name as the primary. It is asked for on
/// first use and asked again after any call fails for want of a connection or meets a
/// replica (`READONLY`): after a failover the next call after the breaker's retry interval
/// reaches the new primary, without a restart.
pub(crate) struct SentinelConn {
    sentinel: tokio::sync::Mutex<SentinelClient>,
    config: ConnectionManagerConfig,
    current: Mutex<Option<(u64, ConnectionManager)>>,
    epoch: AtomicU64,
}

impl SentinelConn {
    /// The current primary's connection, asking the Sentinels for it if there is none.
    async fn primary(&self) -> RedisResult<(u64, ConnectionManager)> {
        if let Some(current) = self.current() {
            return Ok(current);
        }
        let mut sentinel = self.sentinel.lock().await;
        // Another call may have found it while this one waited.
        if let Some(current) = self.current() {
            return Ok(current);
        }
        let client = sentinel.async_get_client().await?;
        let conn = ConnectionManager::new_with_config(client, self.config.clone()).await?;
        let epoch = self.epoch.fetch_add(1, Ordering::Relaxed) + 1;
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some((epoch, conn.clone()));
        tracing::info!(
            epoch,
            "response cache: connected to the redis primary named by sentinel"
        );
        Ok((epoch, conn))
    }

    /// A client for the current primary (for the invalidation subscription).
    pub(crate) async fn primary_client(&self) -> RedisResult<Client> {
        self.sentinel.lock().await.async_get_client().await
    }

    fn current(&self) -> Option<(u64, ConnectionManager)> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// After a call on the connection of `epoch`: forgets that connection if the error says
    /// the server is gone or no longer the primary, so the next call asks the Sentinels.
    fn check(&self, epoch: u64, err: Option<&RedisError>) {
        let Some(err) = err else { return };
        let lost = err.is_io_error()
            || err.is_connection_dropped()
            || err.is_connection_refusal()
            || err.is_timeout()
            || err.is_unrecoverable_error()
            || matches!(err.code(), Some("READONLY" | "MASTERDOWN" | "LOADING"));
        if !lost {
            return;
        }
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current.as_ref().is_some_and(|(e, _)| *e == epoch) {
            *current = None;
            tracing::debug!(epoch, error = %err, "response cache: asking sentinel for the primary again");
        }
    }
}

/// What the invalidation subscription connects to.
pub(crate) enum Subscription {
    /// Plain pub/sub on one server (the Sentinels' primary is asked for on each connect).
    Plain(Source),
    /// Sharded pub/sub (`SSUBSCRIBE`) on a cluster: a RESP3 cluster connection whose pushes
    /// arrive on the receiver.
    Sharded(
        Box<ClusterClient>,
        tokio::sync::mpsc::UnboundedReceiver<::redis::PushInfo>,
    ),
}

/// Where a plain subscription connects.
pub(crate) enum Source {
    Client(Client),
    Sentinel(Arc<SentinelConn>),
}

impl Source {
    pub(crate) async fn client(&self) -> RedisResult<Client> {
        match self {
            Self::Client(client) => Ok(client.clone()),
            Self::Sentinel(sentinel) => sentinel.primary_client().await,
        }
    }
}

/// Opens the data connection (lazily: nothing is reached before the first call) and
/// describes the subscription. Must run inside the backend's runtime.
pub(crate) fn open(
    topology: &RedisTopology,
    timeout: std::time::Duration,
) -> RedisResult<(Conn, Subscription)> {
    use std::time::Duration;
    // Why these settings: our own timeout and breaker decide when Redis is down, so the
    // clients make one quick attempt per call instead of retrying behind our back.
    let manager_config = || {
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(100))
    };
    match topology {
        RedisTopology::Single(url) => {
            let client = Client::open(url.as_str())?;
            let conn = ConnectionManager::new_lazy_with_config(client.clone(), manager_config())?;
            Ok((
                Conn::Single(conn),
                Subscription::Plain(Source::Client(client)),
            ))
        }
        RedisTopology::Cluster(nodes) => {
            // A few retries here are redirections (`MOVED`, `ASK`) and topology refreshes
            // after a failover, which the client follows itself; all within our timeout.
            let builder = || {
                ClusterClient::builder(nodes.iter().map(String::as_str))
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(3)
                    .min_retry_wait(10)
                    .max_retry_wait(100)
            };
            let data = builder().build()?;
            let conn = data.get_pending_async_connection_with_config(
                ::redis::cluster::ClusterConfig::new()
                    .set_connection_timeout(timeout)
                    .set_response_timeout(timeout),
            );
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let pubsub = builder()
                .use_protocol(::redis::ProtocolVersion::RESP3)
                .push_sender(tx)
                .build()?;
            Ok((
                Conn::Cluster(conn),
                Subscription::Sharded(Box::new(pubsub), rx),
            ))
        }
        RedisTopology::Sentinel { sentinels, service } => {
            let client = SentinelClient::build(
                sentinels.iter().map(String::as_str).collect(),
                service.clone(),
                None,
                SentinelServerType::Master,
            )?;
            let sentinel = Arc::new(SentinelConn {
                sentinel: tokio::sync::Mutex::new(client),
                config: manager_config(),
                current: Mutex::new(None),
                epoch: AtomicU64::new(0),
            });
            Ok((
                Conn::Sentinel(Arc::clone(&sentinel)),
                Subscription::Plain(Source::Sentinel(sentinel)),
            ))
        }
    }
}
