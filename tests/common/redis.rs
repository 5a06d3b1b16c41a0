//! A real `redis-server` on 127.0.0.1 and a free port, for the Redis tests: started per test,
//! killable and restartable on the same port, killed when dropped.
//!
//! Without `redis-server` on the PATH the tests fail, unless the user opts out with
//! `ACTIX_CONDITIONAL_SKIP=redis` outside CI (see `missing.rs`).
#![allow(dead_code)] // Each test binary uses a different part of this module.

#[path = "missing.rs"]
mod missing;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` child process.
#[derive(Debug)]
pub(crate) struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server, or returns `None` (after saying so) when there is no `redis-server`
    /// and the user opted out of the Redis tests; a panic otherwise.
    pub(crate) fn start() -> Option<Self> {
        let available = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !available {
            missing::tool_missing("redis", "apt-get install -y redis-server");
            return None;
        }
        let port = TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut server = Self { port, child: None };
        server.restart();
        Some(server)
    }

    /// The URL clients connect to.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server at once (SIGKILL: no shutdown, no save).
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it (again) on the same port, with nothing stored, and waits until it answers.
    pub(crate) fn restart(&mut self) {
        self.kill();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--protected-mode", "no", "--loglevel", "warning"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.ping() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not answer PING", self.port);
    }

    /// Stops the process (SIGSTOP): connections stay open, nothing answers.
    pub(crate) fn pause(&self) {
        self.signal("-STOP");
    }

    /// Resumes a paused server (SIGCONT).
    pub(crate) fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("server running").id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    fn ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        if stream.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
    }

    /// A plain synchronous connection, to look at or tamper with what the caches stored.
    pub(crate) fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .expect("url")
            .get_connection_with_timeout(Duration::from_secs(2))
            .expect("redis connection")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // SIGKILL ends a paused (SIGSTOPped) server too.
        self.kill();
    }
}

/// A real Redis Cluster on 127.0.0.1: three masters with one replica each, started in a
/// temporary directory (`--cluster-node-timeout 1000`, nothing persisted), joined with
/// `redis-cli --cluster create`, killed (and its directory removed) when dropped.
#[derive(Debug)]
pub(crate) struct RedisCluster {
    dir: std::path::PathBuf,
    ports: Vec<u16>,
    children: Vec<Option<Child>>,
}

impl RedisCluster {
    /// Starts a cluster, or `None` (after saying so) without `redis-server`/`redis-cli` and an
    /// opt-out; a panic otherwise.
    #[allow(
        clippy::zombie_processes,
        reason = "a node that exited is reaped by try_wait; the others are killed and waited for on drop"
    )]
    pub(crate) fn start() -> Option<Self> {
        let available = ["redis-server", "redis-cli"].iter().all(|tool| {
            Command::new(tool)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success())
        });
        if !available {
            missing::tool_missing("redis", "apt-get install -y redis-server redis-tools");
            return None;
        }
        let ports = free_port_pairs(6);
        let dir = std::env::temp_dir().join(format!(
            "actix-conditional-cluster-{}-{}",
            std::process::id(),
            ports[0]
        ));
        let mut cluster = Self {
            dir,
            ports: ports.clone(),
            children: Vec::new(),
        };
        for i in 0..ports.len() {
            // A port found free may be taken by another test before this node binds it (or
            // its cluster bus, port + 10000): the node then exits, and it is started again
            // on another pair.
            let mut attempts = 0;
            loop {
                let port = cluster.ports[i];
                let node_dir = cluster.dir.join(port.to_string());
                std::fs::create_dir_all(&node_dir).expect("cluster node dir");
                let mut child = Command::new("redis-server")
                    .args(["--port", &port.to_string()])
                    .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                    .args(["--protected-mode", "no", "--loglevel", "warning"])
                    .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"])
                    .args(["--cluster-replica-validity-factor", "0"])
                    .arg("--dir")
                    .arg(&node_dir)
                    .stdout(Stdio::null())
                    .stderr(Stdio::inherit())
                    .spawn()
                    .expect("redis-server starts");
                let deadline = Instant::now() + Duration::from_secs(30);
                let mut exited = false;
                while !ping(port) {
                    if child.try_wait().ok().flatten().is_some() {
                        exited = true;
                        break;
                    }
                    if Instant::now() >= deadline {
                        let _ = child.kill();
                        let _ = child.wait();
                        panic!("cluster node {i} did not answer");
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                if !exited {
                    cluster.children.push(Some(child));
                    break;
                }
                attempts += 1;
                assert!(attempts < 5, "cluster node {i} exited at start 5 times");
                let taken: Vec<u16> = cluster.ports.clone();
                cluster.ports[i] = free_port_pairs(1 + taken.len())
                    .into_iter()
                    .find(|candidate| !taken.contains(candidate))
                    .expect("a free port pair");
            }
        }
        let ports = cluster.ports.clone();
        let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli runs");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.wait_until_ok(Duration::from_secs(30), true);
        Some(cluster)
    }

    /// Waits until every running node says `cluster_state:ok` and, with `replicas`, each of
    /// the three masters has a replica in sync (so a killed master has one to promote).
    pub(crate) fn wait_until_ok(&self, timeout: Duration, replicas: bool) {
        let deadline = Instant::now() + timeout;
        loop {
            let ok = self
                .running()
                .all(|port| cli(port, &["CLUSTER", "INFO"]).contains("cluster_state:ok"))
                && (!replicas || {
                    let masters = self.masters();
                    masters.len() == 3
                        && masters.iter().all(|&port| {
                            let info = cli(port, &["INFO", "replication"]);
                            info.contains("connected_slaves:1") && info.contains("state=online")
                        })
                });
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "the cluster did not become ok");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn running(&self) -> impl Iterator<Item = u16> + '_ {
        self.ports
            .iter()
            .zip(&self.children)
            .filter(|(_, child)| child.is_some())
            .map(|(port, _)| *port)
    }

    /// The ports of the running masters.
    pub(crate) fn masters(&self) -> Vec<u16> {
        self.running()
            .filter(|&port| cli(port, &["ROLE"]).starts_with("master"))
            .collect()
    }

    /// Node URLs, for a `RedisTopology::cluster`.
    pub(crate) fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}/"))
            .collect()
    }

    /// Kills the master that serves `key`'s slot (SIGKILL); returns its port.
    pub(crate) fn kill_master_of(&mut self, key: &str) -> u16 {
        let any = self.running().next().expect("a running node");
        let slot: u16 = cli(any, &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .expect("a slot");
        let port = self
            .masters()
            .into_iter()
            .find(|&port| serves(port, slot))
            .expect("a master serves the slot");
        let i = self.ports.iter().position(|&p| p == port).unwrap();
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        port
    }

    /// Moves `slots` slots from the first master to the second with
    /// `redis-cli --cluster reshard` (keys migrate: clients meet `ASK`, then `MOVED`).
    pub(crate) fn reshard(&self, slots: u32) {
        let masters = self.masters();
        let id = |port: u16| cli(port, &["CLUSTER", "MYID"]).trim().to_owned();
        let out = Command::new("redis-cli")
            .args(["--cluster", "reshard", &format!("127.0.0.1:{}", masters[0])])
            .args(["--cluster-from", &id(masters[0])])
            .args(["--cluster-to", &id(masters[1])])
            .args(["--cluster-slots", &slots.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli runs");
        assert!(
            out.status.success(),
            "redis-cli --cluster reshard failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A synchronous cluster connection, to look at or tamper with what the caches stored.
    pub(crate) fn connection(&self) -> redis::cluster::ClusterConnection {
        redis::cluster::ClusterClient::new(self.urls())
            .expect("urls")
            .get_connection()
            .expect("cluster connection")
    }
}

/// Whether the node on `port` serves `slot` (a range of its own line in `CLUSTER NODES`).
fn serves(port: u16, slot: u16) -> bool {
    let nodes = cli(port, &["CLUSTER", "NODES"]);
    let Some(line) = nodes.lines().find(|line| line.contains("myself")) else {
        return false;
    };
    line.split_whitespace().skip(8).any(|range| {
        let mut ends = range.splitn(2, '-');
        let (Some(lo), hi) = (ends.next().and_then(|s| s.parse::<u16>().ok()), ends.next()) else {
            return false;
        };
        let hi = hi.and_then(|s| s.parse::<u16>().ok()).unwrap_or(lo);
        (lo..=hi).contains(&slot)
    })
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().filter_map(Option::take) {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `redis-cli -p port args…`, its output ('' if it fails).
pub(crate) fn cli(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default()
}

fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

/// `n` free ports whose cluster bus port (+10000) is free too. Held while searching, so no
/// two are the same.
pub(crate) fn free_port_pairs(n: usize) -> Vec<u16> {
    // The search goes on from where the last call of this process stopped: two tests
    // starting clusters at once would otherwise find the same free ports and collide.
    static CURSOR: std::sync::Mutex<u16> = std::sync::Mutex::new(0);
    let mut cursor = CURSOR
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if *cursor == 0 {
        *cursor = 20_000 + (std::process::id() % 20_000) as u16;
    }
    let mut held = Vec::new();
    let mut ports = Vec::new();
    let start = *cursor;
    let mut port = start;
    while ports.len() < n {
        port = if port >= 45_000 { 20_000 } else { port + 1 };
        assert_ne!(port, start, "no free port pairs");
        let (Ok(a), Ok(b)) = (
            TcpListener::bind(("127.0.0.1", port)),
            TcpListener::bind(("127.0.0.1", port + 10_000)),
        ) else {
            continue;
        };
        held.push((a, b));
        ports.push(port);
    }
    *cursor = port;
    ports
}

/// A primary, one replica and three Sentinels on 127.0.0.1 (`down-after-milliseconds` 1000),
/// in a temporary directory; killed (and the directory removed) when dropped.
#[derive(Debug)]
pub(crate) struct RedisSentinels {
    dir: std::path::PathBuf,
    /// Primary, replica (as started).
    data: Vec<(u16, Option<Child>)>,
    sentinels: Vec<(u16, Option<Child>)>,
}

/// The name the Sentinels monitor the primary under.
pub(crate) const SENTINEL_SERVICE: &str = "mymaster";

impl RedisSentinels {
    /// Starts them and waits until every Sentinel knows the replica and the other two; `None`
    /// (after saying so) without `redis-server`/`redis-cli` and an opt-out.
    pub(crate) fn start() -> Option<Self> {
        let available = ["redis-server", "redis-cli"].iter().all(|tool| {
            Command::new(tool)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success())
        });
        if !available {
            missing::tool_missing("redis", "apt-get install -y redis-server redis-tools");
            return None;
        }
        let ports = free_port_pairs(5);
        let dir = std::env::temp_dir().join(format!(
            "actix-conditional-sentinel-{}-{}",
            std::process::id(),
            ports[0]
        ));
        std::fs::create_dir_all(&dir).expect("sentinel dir");
        let mut set = Self {
            dir,
            data: Vec::new(),
            sentinels: Vec::new(),
        };
        let (primary, replica) = (ports[0], ports[1]);
        for (port, replica_of) in [(primary, None), (replica, Some(primary))] {
            // `--dir`: a replica writes the primary's snapshot there on a full sync.
            let mut cmd = Command::new("redis-server");
            cmd.args(["--port", &port.to_string()])
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args(["--protected-mode", "no", "--loglevel", "warning"])
                .arg("--dir")
                .arg(&set.dir)
                .stdout(Stdio::null())
                .stderr(Stdio::inherit());
            if let Some(of) = replica_of {
                cmd.args(["--replicaof", "127.0.0.1", &of.to_string()]);
            }
            set.data
                .push((port, Some(cmd.spawn().expect("redis-server starts"))));
            wait_for_ping(port);
        }
        for &port in &ports[2..] {
            let conf = set.dir.join(format!("sentinel-{port}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {dir}\n\
                     sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {primary} 2\n\
                     sentinel down-after-milliseconds {SENTINEL_SERVICE} 1000\n\
                     sentinel failover-timeout {SENTINEL_SERVICE} 5000\n\
                     sentinel parallel-syncs {SENTINEL_SERVICE} 1\n",
                    dir = set.dir.display()
                ),
            )
            .expect("sentinel config");
            let child = Command::new("redis-server")
                .arg(&conf)
                .args(["--sentinel", "--loglevel", "warning"])
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("redis-server --sentinel starts");
            set.sentinels.push((port, Some(child)));
            wait_for_ping(port);
        }
        // Wait until the replica is in sync and every Sentinel has found it and the others
        // (hello messages every 2 s): only then can they agree on a failover.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let info = cli(primary, &["INFO", "replication"]);
            let synced = info.contains("connected_slaves:1") && info.contains("state=online");
            let known = set.sentinels.iter().all(|(port, _)| {
                let master = cli(*port, &["SENTINEL", "MASTER", SENTINEL_SERVICE]);
                let field = |name: &str| {
                    let mut lines = master.lines();
                    lines
                        .by_ref()
                        .find(|line| line.trim() == name)
                        .and_then(|_| lines.next())
                        .map(|v| v.trim().to_owned())
                };
                field("num-slaves").as_deref() == Some("1")
                    && field("num-other-sentinels").as_deref() == Some("2")
            });
            if synced && known {
                break;
            }
            assert!(Instant::now() < deadline, "the sentinels did not settle");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(set)
    }

    /// The Sentinels' URLs, for a `RedisTopology::sentinel`.
    pub(crate) fn urls(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|(port, _)| format!("redis://127.0.0.1:{port}/"))
            .collect()
    }

    /// The port of the primary as the first Sentinel names it.
    pub(crate) fn primary(&self) -> Option<u16> {
        let port = self.sentinels[0].0;
        let reply = cli(
            port,
            &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_SERVICE],
        );
        reply.lines().nth(1).and_then(|p| p.trim().parse().ok())
    }

    /// Kills the current primary (SIGKILL); returns its port.
    pub(crate) fn kill_primary(&mut self) -> u16 {
        let primary = self.primary().expect("a primary");
        for (port, child) in &mut self.data {
            if *port == primary
                && let Some(mut child) = child.take()
            {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        primary
    }

    /// A connection to the current primary.
    pub(crate) fn connection(&self) -> redis::Connection {
        let port = self.primary().expect("a primary");
        redis::Client::open(format!("redis://127.0.0.1:{port}/"))
            .expect("url")
            .get_connection_with_timeout(Duration::from_secs(2))
            .expect("redis connection")
    }
}

impl Drop for RedisSentinels {
    fn drop(&mut self) {
        for (_, child) in self.sentinels.iter_mut().chain(self.data.iter_mut()) {
            if let Some(mut child) = child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn wait_for_ping(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ping(port) {
        assert!(
            Instant::now() < deadline,
            "redis on port {port} did not answer"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
