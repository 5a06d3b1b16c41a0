//! Several instances sharing one real `redis-server` (feature `redis`): shared entries,
//! invalidations seen by the other instance, one build for a cold burst across instances, a
//! killed lease holder taken over, and Redis killed, paused and restarted under load.
//!
//! Each test starts its own `redis-server` on a free 127.0.0.1 port (see `common/redis.rs`)
//! and two instances: two real `HttpServer`s, each with its own `RedisBackend` (its own
//! connections and subscription, as two processes have) and its own memory tier. The killed
//! lease holder is a real second process: this test binary, re-run as `lease_holder_child`.

#[path = "common/http.rs"]
mod http;
#[path = "common/redis.rs"]
mod redis_server;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use actix_conditional::edge::Edge;
use actix_conditional::edge::purge::{PurgeError, Purger, Purges};
use actix_conditional::response_cache::{
    CacheScope, RedisBackend, RedisBackendBuilder, RedisTopology, ResponseCache,
};
use actix_web::{App, HttpRequest, HttpResponse, web};
use redis::Commands as _;

use self::http::Server;
use self::redis_server::{RedisCluster, RedisSentinels, RedisServer, SENTINEL_SERVICE};

/// The Redis the instances share: one server or a cluster. The shared scenarios take one, so
/// the same test runs on both (`on_a_redis_cluster_the_shared_scenarios_hold`).
trait Topo {
    fn topology(&self) -> RedisTopology;
    /// A synchronous connection (to the cluster: routed by key), to look at or tamper with
    /// what the caches stored.
    fn conn(&self) -> AnyConn;
    /// What `lease_holder_child` reads to connect to the same Redis.
    fn child_env(&self) -> (&'static str, String);
    /// The Redis key of a cache's invalidation counter.
    fn counter(&self, prefix: &str, cache: &str) -> String;
}

impl Topo for RedisServer {
    fn topology(&self) -> RedisTopology {
        RedisTopology::single(self.url())
    }
    fn conn(&self) -> AnyConn {
        AnyConn(Box::new(self.connection()))
    }
    fn child_env(&self) -> (&'static str, String) {
        ("AC_TEST_REDIS_URL", self.url())
    }
    fn counter(&self, prefix: &str, cache: &str) -> String {
        format!("{prefix}:{cache}:gen")
    }
}

impl Topo for RedisCluster {
    fn topology(&self) -> RedisTopology {
        RedisTopology::cluster(self.urls())
    }
    fn conn(&self) -> AnyConn {
        AnyConn(Box::new(self.connection()))
    }
    fn child_env(&self) -> (&'static str, String) {
        ("AC_TEST_REDIS_CLUSTER", self.urls().join(","))
    }
    fn counter(&self, prefix: &str, cache: &str) -> String {
        // A hash tag: a cache's counters and its sharded channel share a slot.
        format!("{prefix}:{{{cache}}}:gen")
    }
}

impl Topo for RedisSentinels {
    fn topology(&self) -> RedisTopology {
        RedisTopology::sentinel(self.urls(), SENTINEL_SERVICE)
    }
    fn conn(&self) -> AnyConn {
        AnyConn(Box::new(self.connection()))
    }
    fn child_env(&self) -> (&'static str, String) {
        ("AC_TEST_REDIS_SENTINEL", self.urls().join(","))
    }
    fn counter(&self, prefix: &str, cache: &str) -> String {
        format!("{prefix}:{cache}:gen")
    }
}

/// A server's or a cluster's connection, for `redis::Commands`.
struct AnyConn(Box<dyn redis::ConnectionLike>);

impl redis::ConnectionLike for AnyConn {
    fn req_packed_command(&mut self, cmd: &[u8]) -> redis::RedisResult<redis::Value> {
        self.0.req_packed_command(cmd)
    }
    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> redis::RedisResult<Vec<redis::Value>> {
        self.0.req_packed_commands(cmd, offset, count)
    }
    fn req_command(&mut self, cmd: &redis::Cmd) -> redis::RedisResult<redis::Value> {
        self.0.req_command(cmd)
    }
    fn get_db(&self) -> i64 {
        self.0.get_db()
    }
    fn check_connection(&mut self) -> bool {
        self.0.check_connection()
    }
    fn is_open(&self) -> bool {
        self.0.is_open()
    }
}

/// The "database" every instance reads: one version number, bumped by writes.
#[derive(Debug, Default)]
struct Db {
    version: AtomicU64,
}

/// One app instance: a server, its cache and backend, and how often it ran the handler.
struct Instance {
    server: Server,
    cache: ResponseCache,
    backend: RedisBackend,
    builds: Arc<AtomicUsize>,
}

impl Instance {
    fn builds(&self) -> usize {
        self.builds.load(Ordering::SeqCst)
    }

    fn get(&self, path: &str) -> http::Response {
        self.server.connect().get(path)
    }

    fn write(&self) -> http::Response {
        self.server.connect().send("POST", "/write", &[], None)
    }
}

/// The tests' settings: short intervals so outages and leases play out in a second; a call
/// timeout generous enough for a loaded machine (the paused-Redis test sets its own).
fn backend_builder(redis: &dyn Topo, prefix: &str) -> RedisBackendBuilder {
    RedisBackend::builder(redis.topology())
        .prefix(prefix)
        .timeout(Duration::from_secs(1))
        .retry_interval(Duration::from_millis(200))
        .sync_interval(Duration::from_millis(200))
        .lease_ttl(Duration::from_millis(600))
}

fn backend(redis: &dyn Topo, prefix: &str) -> RedisBackend {
    backend_builder(redis, prefix).build().expect("valid url")
}

/// `GET /data` (TTL cache, 60 s, a build that takes `build`), `POST /write` (bumps the
/// version, invalidates the cache after its 2xx).
fn instance(redis: &dyn Topo, prefix: &str, db: &Arc<Db>, build: Duration) -> Instance {
    instance_on(backend(redis, prefix), db, build)
}

fn instance_on(backend: RedisBackend, db: &Arc<Db>, build: Duration) -> Instance {
    let cache = ResponseCache::ttl("data", Duration::from_secs(60))
        .redis(&backend)
        .build();
    start(cache, backend, db, build)
}

fn start(cache: ResponseCache, backend: RedisBackend, db: &Arc<Db>, build: Duration) -> Instance {
    start_with_edge(cache, backend, db, build, Edge::new())
}

/// [`start`], inside `edge` (the middleware that purges the caches in front of the app).
fn start_with_edge(
    cache: ResponseCache,
    backend: RedisBackend,
    db: &Arc<Db>,
    build: Duration,
    edge: Edge,
) -> Instance {
    let builds = Arc::new(AtomicUsize::new(0));
    let (c, d, b) = (cache.clone(), Arc::clone(db), Arc::clone(&builds));
    let server = Server::start_with_workers(2, move || {
        let (read_cache, read_db, read_builds) = (c.clone(), Arc::clone(&d), Arc::clone(&b));
        let write_db = Arc::clone(&d);
        App::new()
            .wrap(edge.clone())
            .route(
                "/data",
                web::get().to(move |req: HttpRequest| {
                    let (cache, db, builds) = (
                        read_cache.clone(),
                        Arc::clone(&read_db),
                        Arc::clone(&read_builds),
                    );
                    async move {
                        cache
                            .serve(&req, move |_req| {
                                let (db, builds) = (Arc::clone(&db), Arc::clone(&builds));
                                async move {
                                    builds.fetch_add(1, Ordering::SeqCst);
                                    actix_rt::time::sleep(build).await;
                                    let version = db.version.load(Ordering::SeqCst);
                                    HttpResponse::Ok()
                                        .json(serde_json::json!({ "version": version }))
                                }
                            })
                            .await
                    }
                }),
            )
            .service(
                web::resource("/write")
                    .wrap(c.invalidates(CacheScope::All))
                    .route(web::post().to(move || {
                        write_db.version.fetch_add(1, Ordering::SeqCst);
                        async { HttpResponse::NoContent().finish() }
                    })),
            )
    });
    Instance {
        server,
        cache,
        backend,
        builds,
    }
}

fn version(res: &http::Response) -> u64 {
    res.json()["version"].as_u64().expect("a version")
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

#[test]
fn two_instances_share_entries() {
    if let Some(redis) = RedisServer::start() {
        share_entries(&redis);
    }
}

fn share_entries(redis: &dyn Topo) {
    let db = Arc::new(Db::default());
    let a = instance(redis, "share", &db, Duration::ZERO);
    let b = instance(redis, "share", &db, Duration::ZERO);

    let first = a.get("/data");
    assert_eq!((first.status, first.cache_label()), (200, "miss"));
    let from_b = b.get("/data");
    assert_eq!(from_b.status, 200);
    assert_eq!(from_b.cache_label(), "hit", "{from_b:#?}");
    assert_eq!(from_b.body, first.body);
    assert_eq!(from_b.etag(), first.etag(), "one ETag on every instance");
    assert_eq!((a.builds(), b.builds()), (1, 0));
    assert_eq!(b.cache.stats().redis_hits, 1);
    assert_eq!(a.cache.stats().redis_writes, 1);

    // B kept it in memory: the next hit does not ask Redis.
    assert_eq!(b.get("/data").cache_label(), "hit");
    assert_eq!(b.cache.stats().redis_hits, 1);

    // A conditional request on B is answered from the shared validators.
    let etag = first.etag().to_owned();
    let res = b
        .server
        .connect()
        .send("GET", "/data", &[("If-None-Match", etag.as_bytes())], None);
    assert_eq!(res.status, 304);

    // Stored with a PX: the entry dies in Redis by itself.
    let mut conn = redis.conn();
    let keys: Vec<String> = conn.keys("share:data:e:*").unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let pttl: i64 = conn.pttl(&keys[0]).unwrap();
    assert!(pttl > 0 && pttl <= 360_000, "ttl + max stale: {pttl}");
}

#[test]
fn an_invalidation_on_one_instance_is_seen_by_the_other_on_its_next_request() {
    if let Some(redis) = RedisServer::start() {
        invalidation_seen_on_next_request(&redis);
    }
}

fn invalidation_seen_on_next_request(redis: &dyn Topo) {
    let db = Arc::new(Db::default());
    let a = instance(redis, "inval", &db, Duration::ZERO);
    let b = instance(redis, "inval", &db, Duration::ZERO);
    wait_until("both subscribed", Duration::from_secs(5), || {
        a.backend.is_subscribed() && b.backend.is_subscribed()
    });

    for round in 1..=20 {
        assert_eq!(version(&a.get("/data")), round - 1);
        assert_eq!(version(&b.get("/data")), round - 1);
        assert_eq!(b.get("/data").cache_label(), "hit");
        assert_eq!(a.write().status, 204);
        // B's very next request: not the old bytes.
        let res = b.get("/data");
        assert_eq!(version(&res), round, "round {round}: {res:#?}");
        assert_eq!(res.cache_label(), "miss");
    }
}

/// Remembers the purges it is asked for.
#[derive(Clone, Default)]
struct Recorder(Arc<std::sync::Mutex<Vec<Vec<String>>>>);

impl Purger for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }

    fn purge<'a>(
        &'a self,
        groups: &'a [String],
    ) -> futures_util::future::BoxFuture<'a, Result<(), PurgeError>> {
        self.0.lock().unwrap().push(groups.to_vec());
        Box::pin(async { Ok(()) })
    }
}

/// Issue 13: a write invalidates every instance's cache through Redis, but the edge in front
/// is purged once, by the instance that answered the write, not once per instance.
#[test]
fn a_write_purges_the_edge_once_whatever_the_number_of_instances() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let db = Arc::new(Db::default());
    let recorders = [Recorder::default(), Recorder::default()];
    let [a, b] = recorders.clone().map(|recorder| {
        let purges = Purges::builder().purger(recorder).build().unwrap();
        let backend = backend(&redis, "edge-once");
        let cache = ResponseCache::ttl("data", Duration::from_secs(60))
            .redis(&backend)
            .build();
        start_with_edge(
            cache,
            backend,
            &db,
            Duration::ZERO,
            Edge::new().purges(purges),
        )
    });
    wait_until("both subscribed", Duration::from_secs(5), || {
        a.backend.is_subscribed() && b.backend.is_subscribed()
    });
    assert_eq!(version(&a.get("/data")), 0);
    assert_eq!(b.get("/data").cache_label(), "hit");
    assert_eq!(a.write().status, 204);
    // B's cache was invalidated through Redis...
    let res = b.get("/data");
    assert_eq!((version(&res), res.cache_label()), (1, "miss"));
    // ...and only A, which answered the write, purged the edge: once, before answering.
    let calls = |i: usize| recorders[i].0.lock().unwrap().clone();
    assert_eq!(calls(0), [vec!["data".to_owned()]]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(calls(1).is_empty(), "instance B purged too: {:?}", calls(1));
}

#[test]
fn an_invalidation_whose_broadcast_was_lost_is_seen_on_the_next_request() {
    if let Some(redis) = RedisServer::start() {
        lost_broadcast_seen_on_next_request(&redis);
    }
}

fn lost_broadcast_seen_on_next_request(redis: &dyn Topo) {
    let db = Arc::new(Db::default());
    let a = instance(redis, "lost", &db, Duration::ZERO);
    assert_eq!(a.get("/data").cache_label(), "miss");
    assert_eq!(a.get("/data").cache_label(), "hit");
    // Another instance's invalidation whose message never arrived: the counter moved in
    // Redis, nothing was published. Each request reads the counters (read-your-writes).
    let mut conn = redis.conn();
    let _: u64 = conn.incr(redis.counter("lost", "data"), 1).unwrap();
    db.version.fetch_add(1, Ordering::SeqCst);
    let res = a.get("/data");
    assert_eq!((res.cache_label(), version(&res)), ("miss", 1));
}

#[test]
fn without_read_your_writes_a_lost_broadcast_is_caught_by_the_periodic_sync() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let db = Arc::new(Db::default());
    let backend = backend_builder(&redis, "lazy")
        .read_your_writes(false)
        .build()
        .unwrap();
    let a = instance_on(backend, &db, Duration::ZERO);
    assert_eq!(a.get("/data").cache_label(), "miss");
    assert_eq!(a.get("/data").cache_label(), "hit");
    let mut conn = redis.connection();
    let _: u64 = conn.incr("lazy:data:gen", 1).unwrap();
    db.version.fetch_add(1, Ordering::SeqCst);
    // Within the sync interval (200 ms here) the instance stops serving the old bytes.
    wait_until(
        "the sync to retire the entry",
        Duration::from_secs(3),
        || version(&a.get("/data")) == 1,
    );
}

#[test]
fn invalidations_still_reach_everyone_after_redis_lost_its_counters() {
    if let Some(redis) = RedisServer::start() {
        counters_lost_and_repaired(&redis);
    }
}

fn counters_lost_and_repaired(redis: &dyn Topo) {
    let db = Arc::new(Db::default());
    let a = instance(redis, "flushed", &db, Duration::ZERO);
    for _ in 0..3 {
        assert_eq!(a.write().status, 204);
    }
    assert_eq!(version(&a.get("/data")), 3);
    let _: () = redis::cmd("FLUSHALL").query(&mut redis.conn()).unwrap();
    // A new instance starts from nothing; its invalidation must not look old to A.
    let c = instance(redis, "flushed", &db, Duration::ZERO);
    assert_eq!(version(&c.get("/data")), 3);
    assert_eq!(c.write().status, 204);
    let res = a.get("/data");
    assert_eq!((res.cache_label(), version(&res)), ("miss", 4));
    let res = c.get("/data");
    assert_eq!(version(&res), 4);
    assert_eq!(res.cache_label(), "hit", "C finds A's build: {res:#?}");
}

#[test]
fn a_varying_response_is_found_by_an_instance_that_never_saw_it() {
    if let Some(redis) = RedisServer::start() {
        vary_variants_shared(&redis);
    }
}

fn vary_variants_shared(redis: &dyn Topo) {
    let vary_instance = || {
        let backend = backend(redis, "vary");
        let cache = ResponseCache::ttl("lang", Duration::from_secs(60))
            .redis(&backend)
            .build();
        let builds = Arc::new(AtomicUsize::new(0));
        let (c, b) = (cache.clone(), Arc::clone(&builds));
        let server = Server::start(move || {
            let (cache, builds) = (c.clone(), Arc::clone(&b));
            App::new().route(
                "/greeting",
                web::get().to(move |req: HttpRequest| {
                    let (cache, builds) = (cache.clone(), Arc::clone(&builds));
                    async move {
                        cache
                            .serve(&req, move |req: HttpRequest| {
                                builds.fetch_add(1, Ordering::SeqCst);
                                let fr = req
                                    .headers()
                                    .get("accept-language")
                                    .is_some_and(|v| v.as_bytes().starts_with(b"fr"));
                                async move {
                                    HttpResponse::Ok()
                                        .insert_header(("vary", "accept-language"))
                                        .body(if fr { "bonjour" } else { "hello" })
                                }
                            })
                            .await
                    }
                }),
            )
        });
        (server, cache, builds)
    };
    let get = |server: &Server, lang: &str| {
        server.connect().send(
            "GET",
            "/greeting",
            &[("Accept-Language", lang.as_bytes())],
            None,
        )
    };
    let (a, _a_cache, a_builds) = vary_instance();
    assert_eq!(get(&a, "fr").body_str(), "bonjour");
    assert_eq!(get(&a, "en").body_str(), "hello");
    assert_eq!(a_builds.load(Ordering::SeqCst), 2);

    let (b, b_cache, b_builds) = vary_instance();
    for (lang, body) in [("fr", "bonjour"), ("en", "hello"), ("fr", "bonjour")] {
        let res = get(&b, lang);
        assert_eq!((res.body_str(), res.cache_label()), (body, "hit"), "{lang}");
    }
    assert_eq!(
        b_builds.load(Ordering::SeqCst),
        0,
        "both variants came from Redis"
    );
    assert!(b_cache.stats().redis_hits >= 2);
    let res = get(&b, "de");
    assert_eq!((res.body_str(), res.cache_label()), ("hello", "miss"));
}

#[test]
fn a_hundred_cold_requests_across_two_instances_build_once() {
    if let Some(redis) = RedisServer::start() {
        hundred_cold_requests_build_once(&redis);
    }
}

fn hundred_cold_requests_build_once(redis: &dyn Topo) {
    let db = Arc::new(Db::default());
    let a = instance(redis, "cold", &db, Duration::from_millis(300));
    let b = instance(redis, "cold", &db, Duration::from_millis(300));
    let labels: Vec<(u16, String, Vec<u8>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..100)
            .map(|i| {
                let target = if i % 2 == 0 { &a } else { &b };
                s.spawn(move || {
                    let res = target.get("/data");
                    (res.status, res.cache_label().to_owned(), res.body)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(a.builds() + b.builds(), 1, "one build for both instances");
    assert!(labels.iter().all(|(status, _, _)| *status == 200));
    assert!(labels.iter().all(|(_, _, body)| *body == labels[0].2));
    let misses = labels.iter().filter(|(_, l, _)| l == "miss").count();
    assert_eq!(misses, 1, "{labels:?}");
    assert!(
        labels
            .iter()
            .all(|(_, l, _)| matches!(l.as_str(), "miss" | "coalesced" | "hit")),
        "{labels:?}"
    );
}

/// Kills the child process when dropped, so a failing test leaves nothing running.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_killed_lease_holder_is_taken_over_after_its_lease_expires() {
    if let Some(redis) = RedisServer::start() {
        killed_lease_holder_taken_over(&redis);
    }
}

fn killed_lease_holder_taken_over(redis: &dyn Topo) {
    // The holder: this binary again, as a separate process, whose build never ends.
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["lease_holder_child", "--exact", "--ignored", "--nocapture"])
        .env(redis.child_env().0, redis.child_env().1)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the child starts");
    let stdout = child.stdout.take().unwrap();
    let mut child = ChildGuard(child);
    let mut addr = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("CHILD_ADDR=") {
            addr = Some(rest.to_owned());
            break;
        }
    }
    let addr = addr.expect("the child prints its address");
    // Start its build (the response never comes; the stream is dropped with the child).
    let mut stream = TcpStream::connect(&addr).unwrap();
    stream
        .write_all(b"GET /data HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();

    let mut conn = redis.conn();
    let mut lease_key = String::new();
    wait_until("the child's lease", Duration::from_secs(5), || {
        let keys: Vec<String> = conn.keys("lease:data:lease:*").unwrap();
        keys.first().is_some_and(|k| {
            lease_key = k.clone();
            true
        })
    });
    // Alive, the holder renews: the lease outlives its 600 ms.
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        conn.exists::<_, bool>(&lease_key).unwrap(),
        "a live holder keeps its lease"
    );

    let _ = child.0.kill();
    let _ = child.0.wait();
    let killed = Instant::now();
    // Its last renewal is at most 200 ms old: the dead holder's lease still blocks the key.
    let left: i64 = conn.pttl(&lease_key).unwrap();
    assert!(
        left > 0,
        "the lease outlives its holder for a while: {left}"
    );

    let db = Arc::new(Db::default());
    let b = instance(redis, "lease", &db, Duration::ZERO);
    let res = b.get("/data");
    let waited = killed.elapsed();
    assert_eq!((res.status, res.cache_label()), (200, "miss"));
    assert_eq!(b.builds(), 1);
    // It waited for the lease to expire (600 ms after the last renewal), not for its own
    // lock timeout (10 s).
    let left = Duration::from_millis(u64::try_from(left).unwrap());
    assert!(
        waited + Duration::from_millis(150) >= left,
        "built before the lease expired: {waited:?} < {left:?}"
    );
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    assert!(!conn.exists::<_, bool>(&lease_key).unwrap());
    assert_eq!(b.get("/data").cache_label(), "hit");
}

/// The lease holder of the test above, run as a child process; does nothing when run
/// directly (`cargo test -- --ignored`).
#[test]
#[ignore = "run as a child process by a_killed_lease_holder_is_taken_over_after_its_lease_expires"]
fn lease_holder_child() {
    let topology = if let Ok(url) = std::env::var("AC_TEST_REDIS_URL") {
        RedisTopology::single(url)
    } else if let Ok(nodes) = std::env::var("AC_TEST_REDIS_CLUSTER") {
        RedisTopology::cluster(nodes.split(','))
    } else if let Ok(sentinels) = std::env::var("AC_TEST_REDIS_SENTINEL") {
        RedisTopology::sentinel(sentinels.split(','), SENTINEL_SERVICE)
    } else {
        return;
    };
    let backend = RedisBackend::builder(topology)
        .prefix("lease")
        .lease_ttl(Duration::from_millis(600))
        .build()
        .unwrap();
    let cache = ResponseCache::ttl("data", Duration::from_secs(60))
        .redis(&backend)
        .build();
    let db = Arc::new(Db::default());
    let holder = start(cache, backend, &db, Duration::from_secs(3600));
    println!("CHILD_ADDR={}", holder.server.addr());
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(600));
}

#[test]
fn redis_killed_mid_load_every_request_is_answered_then_the_cache_works_again() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let db = Arc::new(Db::default());
    let a = instance(&redis, "outage", &db, Duration::from_millis(2));
    let b = instance(&redis, "outage", &db, Duration::from_millis(2));
    let stop = AtomicBool::new(false);
    let answered = AtomicUsize::new(0);
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|i| {
                let (target, stop, answered) = (if i % 2 == 0 { &a } else { &b }, &stop, &answered);
                s.spawn(move || {
                    let mut bad = Vec::new();
                    let mut conn = target.server.connect();
                    let mut n = 0u64;
                    while !stop.load(Ordering::SeqCst) {
                        n += 1;
                        let res = if n.is_multiple_of(10) {
                            conn.send("POST", "/write", &[], None)
                        } else {
                            conn.get(&format!("/data?k={}", n % 7))
                        };
                        if !(200..300).contains(&res.status) {
                            bad.push(res.status);
                        }
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                    bad
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(700));
        redis.kill();
        std::thread::sleep(Duration::from_millis(1000));
        // A write while Redis is down: the other instance must learn of it once it is back.
        assert_eq!(a.write().status, 204);
        redis.restart();
        std::thread::sleep(Duration::from_millis(1200));
        stop.store(true, Ordering::SeqCst);
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    assert!(statuses.is_empty(), "non-2xx answers: {statuses:?}");
    assert!(answered.load(Ordering::SeqCst) > 100);
    assert!(a.backend.errors() > 0 && b.backend.errors() > 0);

    wait_until(
        "both instances back on Redis",
        Duration::from_secs(5),
        || {
            a.get("/data?probe");
            b.get("/data?probe");
            a.backend.is_available()
                && b.backend.is_available()
                && a.backend.is_subscribed()
                && b.backend.is_subscribed()
        },
    );
    // The invalidations made during the outage reached the other instance.
    let current = db.version.load(Ordering::SeqCst);
    assert_eq!(version(&b.get("/data?k=1")), current);
    assert_eq!(version(&a.get("/data?k=1")), current);
    // Shared again: A builds, B finds it in Redis.
    let builds_b = b.builds();
    assert_eq!(a.get("/data?after=restart").cache_label(), "miss");
    assert_eq!(b.get("/data?after=restart").cache_label(), "hit");
    assert_eq!(b.builds(), builds_b);
    // And invalidations travel again.
    assert_eq!(a.write().status, 204);
    assert_eq!(version(&b.get("/data?after=restart")), current + 1);
}

#[test]
fn a_paused_redis_costs_a_timeout_not_an_error() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let db = Arc::new(Db::default());
    let backend = backend_builder(&redis, "paused")
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let a = instance_on(backend, &db, Duration::ZERO);
    assert_eq!(a.get("/data").cache_label(), "miss");
    redis.pause();
    let started = Instant::now();
    for k in 0..5 {
        let res = a.get(&format!("/data?k={k}"));
        assert_eq!((res.status, res.cache_label()), (200, "miss"));
    }
    // The first call waits out its 100 ms timeout; then Redis is skipped for 200 ms.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(!a.backend.is_available());
    assert_eq!(a.get("/data").cache_label(), "hit", "memory still serves");
    redis.resume();
    wait_until("redis back", Duration::from_secs(5), || {
        a.get("/data?again");
        a.backend.is_available()
    });
}

#[test]
fn an_unreadable_value_is_a_miss() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let db = Arc::new(Db::default());
    let a = instance(&redis, "garbage", &db, Duration::ZERO);
    assert_eq!(a.get("/data").cache_label(), "miss");
    let mut conn = redis.connection();
    let keys: Vec<String> = conn.keys("garbage:data:e:*").unwrap();
    assert_eq!(keys.len(), 1);
    let _: () = conn
        .set(&keys[0], b"acE\x01not an entry".as_slice())
        .unwrap();

    let b = instance(&redis, "garbage", &db, Duration::ZERO);
    let res = b.get("/data");
    assert_eq!((res.status, res.cache_label()), (200, "miss"));
    assert_eq!(b.builds(), 1);
    assert!(b.cache.stats().redis_undecodable >= 1);
    // Its build replaced the bad value.
    let c = instance(&redis, "garbage", &db, Duration::ZERO);
    assert_eq!(c.get("/data").cache_label(), "hit");
}

#[test]
fn revision_mode_shares_entries_and_etags() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let db = Arc::new(Db::default());
    let revision_cache = |backend: &RedisBackend| {
        let db = Arc::clone(&db);
        ResponseCache::revision("docs", move |_req: HttpRequest| {
            let version = db.version.load(Ordering::SeqCst);
            async move { Ok::<_, actix_web::Error>(format!("v{version}")) }
        })
        .redis(backend)
        .build()
    };
    let backend_a = backend(&redis, "rev");
    let a = start(revision_cache(&backend_a), backend_a, &db, Duration::ZERO);
    let backend_b = backend(&redis, "rev");
    let b = start(revision_cache(&backend_b), backend_b, &db, Duration::ZERO);

    let first = a.get("/data");
    assert_eq!(first.cache_label(), "miss");
    let res = b.get("/data");
    assert_eq!(res.cache_label(), "hit-revision", "{res:#?}");
    assert_eq!(res.etag(), first.etag());
    assert_eq!(res.header("x-revision"), "v0");
    assert_eq!(b.builds(), 0);
    let etag = first.etag().to_owned();
    let res = b
        .server
        .connect()
        .send("GET", "/data", &[("If-None-Match", etag.as_bytes())], None);
    assert_eq!(res.status, 304);

    // A write on A (it invalidates): B's next read rebuilds before answering, never the old
    // bytes as stale: read-your-writes wherever the client's next request lands.
    assert_eq!(a.write().status, 204);
    let res = b.get("/data");
    assert_eq!(res.cache_label(), "miss", "{res:#?}");
    assert!(res.header("x-revision").starts_with("v1"), "{res:#?}");
    // And A finds B's rebuilt entry instead of building its own.
    let res = a.get("/data");
    assert!(res.header("x-revision").starts_with("v1"), "{res:#?}");
    assert_eq!(a.builds(), 1, "A built once, B refreshed once");
}

/// The warnings the library logs, from every thread (the servers' workers, the backends'
/// threads), for the tests that count them: one global subscriber for this test binary.
mod warnings {
    use std::fmt::Debug;
    use std::sync::{Mutex, Once};

    use tracing::field::{Field, Visit};
    use tracing_subscriber::layer::{Context, SubscriberExt as _};

    /// One warning: its `key` field (the Redis key it is about) and its message.
    #[derive(Debug, Clone, Default)]
    pub(crate) struct Warning {
        pub(crate) key: String,
        pub(crate) message: String,
    }

    impl Visit for Warning {
        fn record_str(&mut self, field: &Field, value: &str) {
            match field.name() {
                "key" => value.clone_into(&mut self.key),
                "message" => value.clone_into(&mut self.message),
                _ => {}
            }
        }

        fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
            match field.name() {
                "key" => self.key = format!("{value:?}"),
                "message" => self.message = format!("{value:?}"),
                _ => {}
            }
        }
    }

    static SEEN: Mutex<Vec<Warning>> = Mutex::new(Vec::new());

    struct Capture;

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
        fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
            if *event.metadata().level() == tracing::Level::WARN {
                let mut warning = Warning::default();
                event.record(&mut warning);
                SEEN.lock().unwrap().push(warning);
            }
        }
    }

    /// Starts capturing (once per process).
    pub(crate) fn capture() {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| {
            tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Capture))
                .expect("no other global subscriber in this test binary");
        });
    }

    /// The warnings so far about keys that start with `prefix` (tests use their own).
    pub(crate) fn about(prefix: &str) -> Vec<Warning> {
        SEEN.lock()
            .unwrap()
            .iter()
            .filter(|w| w.key.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// How many of `warnings` each key got, the most first.
    pub(crate) fn per_key(warnings: &[Warning]) -> Vec<(String, usize)> {
        let mut counts = std::collections::BTreeMap::<String, usize>::new();
        for warning in warnings {
            *counts.entry(warning.key.clone()).or_default() += 1;
        }
        let mut counts: Vec<_> = counts.into_iter().collect();
        counts.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
        counts
    }
}

/// Issue 14: a lease key that can never expire (no TTL, written by something else) or that
/// would outlive any lease of ours made every cold request wait out its lock timeout (10 s)
/// and build without storing. It is taken over at once, in one script.
#[test]
fn a_lease_that_would_not_expire_in_time_is_taken_over_at_once() {
    const LOCK_TIMEOUT: Duration = Duration::from_secs(3);
    let Some(redis) = RedisServer::start() else {
        return;
    };
    warnings::capture();
    let db = Arc::new(Db::default());
    let a = instance(&redis, "foreign", &db, Duration::ZERO);
    assert_eq!(a.get("/data").cache_label(), "miss");
    let mut conn = redis.connection();
    let keys: Vec<String> = conn.keys("foreign:data:e:*").unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let entry = keys[0].clone();
    let lease = entry.replace(":e:", ":lease:");
    // No TTL at all, then one far longer than `lease_ttl` (600 ms here).
    for foreign_ttl in [None, Some(3_600_000u64)] {
        let _: () = conn.del(&entry).unwrap();
        let _: () = match foreign_ttl {
            None => conn.set(&lease, "not-a-token-of-ours").unwrap(),
            Some(px) => conn.pset_ex(&lease, "not-a-token-of-ours", px).unwrap(),
        };
        // A new instance: nothing in memory, so the request is cold. Its lock timeout is
        // short enough for the client to see the old behaviour (a waiter that times out).
        let backend = backend(&redis, "foreign");
        let cache = ResponseCache::ttl("data", Duration::from_secs(60))
            .redis(&backend)
            .lock_timeout(LOCK_TIMEOUT)
            .build();
        let b = start(cache, backend, &db, Duration::ZERO);
        let started = Instant::now();
        let res = b.get("/data");
        let took = started.elapsed();
        assert_eq!(
            (res.status, res.cache_label()),
            (200, "miss"),
            "{foreign_ttl:?}"
        );
        assert_eq!(b.builds(), 1);
        // It built under the lease it took over, so it stored the value and released the
        // lease: not a waiter that timed out (which builds for itself without storing).
        assert!(
            !conn.exists::<_, bool>(&lease).unwrap(),
            "{foreign_ttl:?}: the broken lease is still there"
        );
        assert!(
            conn.exists::<_, bool>(&entry).unwrap(),
            "{foreign_ttl:?}: not stored"
        );
        assert!(took < LOCK_TIMEOUT / 2, "{foreign_ttl:?}: waited {took:?}");
        let c = instance(&redis, "foreign", &db, Duration::ZERO);
        assert_eq!(c.get("/data").cache_label(), "hit");
        assert_eq!(c.builds(), 0);
    }
    // Said so, once per instance that took one over.
    let warned = warnings::about(&lease);
    assert_eq!(warned.len(), 2, "{warned:#?}");
}

/// Issue 14: a counter key holding a value of another type (`WRONGTYPE` on every read and
/// increment) left `redis_up` at 1 while invalidations silently stopped, with one warning per
/// request. Now health says 0 while it fails, warnings are limited, and once the key is
/// fixed the invalidation made meanwhile reaches the other instance.
#[test]
fn a_counter_of_another_type_is_a_redis_failure_until_it_is_fixed() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    warnings::capture();
    let db = Arc::new(Db::default());
    let a = instance(&redis, "wrongtype", &db, Duration::ZERO);
    let b = instance(&redis, "wrongtype", &db, Duration::ZERO);
    wait_until("both subscribed", Duration::from_secs(5), || {
        a.backend.is_subscribed() && b.backend.is_subscribed()
    });
    assert_eq!(version(&a.get("/data")), 0);
    assert_eq!(b.get("/data").cache_label(), "hit");
    assert!(a.backend.is_available() && b.backend.is_available());

    let counter = "wrongtype:data:gen";
    let mut conn = redis.connection();
    let _: () = conn.del(counter).unwrap();
    let _: () = conn.rpush(counter, "not a counter").unwrap();
    for _ in 0..100 {
        let res = b.get("/data");
        assert_eq!((res.status, version(&res)), (200, 0));
        assert!(
            !b.backend.is_available(),
            "redis_up says 1 while reads fail"
        );
    }
    // A write meanwhile is answered; it cannot be published, and health says so.
    assert_eq!(a.write().status, 204);
    assert!(!a.backend.is_available());
    assert!(a.backend.errors() > 0 && b.backend.errors() > 0);
    // At most one warning per key and instance in the interval, not one per request.
    let warned = warnings::about("wrongtype:");
    let counts = warnings::per_key(&warned);
    assert!(!counts.is_empty(), "the failure was not logged");
    assert!(
        counts.iter().all(|(_, n)| *n <= 2),
        "{counts:?}: {warned:#?}"
    );

    // Fixed: health back to 1, and the invalidation made meanwhile reaches B.
    let _: () = conn.del(counter).unwrap();
    wait_until("redis_up back to 1", Duration::from_secs(5), || {
        a.get("/data");
        b.get("/data");
        a.backend.is_available() && b.backend.is_available()
    });
    wait_until("the write made meanwhile", Duration::from_secs(5), || {
        version(&b.get("/data")) == 1
    });
    // And invalidations travel as before.
    assert_eq!(a.write().status, 204);
    assert_eq!(version(&b.get("/data")), 2);
}

/// Issue 14: under `maxmemory` with `noeviction`, every write answers `OOM`: that is a Redis
/// failure (health 0, the breaker trips) warned about once per key, not once per request.
#[test]
fn out_of_memory_is_a_redis_failure_warned_once_per_key() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    warnings::capture();
    let db = Arc::new(Db::default());
    let backend = backend(&redis, "oom");
    // No memory tier: every request asks Redis, and so meets the error again.
    let cache = ResponseCache::ttl("data", Duration::from_secs(60))
        .redis(&backend)
        .memory_tier(false)
        .build();
    let a = start(cache, backend, &db, Duration::ZERO);
    assert_eq!(a.get("/data").cache_label(), "miss");
    assert_eq!(a.get("/data").cache_label(), "hit");
    assert!(a.backend.is_available());

    let mut conn = redis.connection();
    let config = |conn: &mut redis::Connection, name: &str, value: &str| {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value)
            .query(conn)
            .unwrap();
    };
    config(&mut conn, "maxmemory-policy", "noeviction");
    config(&mut conn, "maxmemory", "1");
    for _ in 0..100 {
        let res = a.get("/data?cold");
        assert_eq!(res.status, 200);
    }
    let warned = warnings::about("oom:");
    let counts = warnings::per_key(&warned);
    assert!(
        !counts.is_empty(),
        "the failure was not logged with its key"
    );
    assert!(
        counts.iter().all(|(_, n)| *n == 1),
        "{counts:?}: {warned:#?}"
    );
    assert!(
        !a.backend.is_available(),
        "redis_up says 1 while writes fail"
    );
    assert!(a.backend.errors() > 0);

    config(&mut conn, "maxmemory", "0");
    wait_until("redis_up back to 1", Duration::from_secs(5), || {
        a.get("/data?cold");
        a.backend.is_available()
    });
    // Stored again.
    let _ = a.get("/data?after");
    assert_eq!(a.get("/data?after").cache_label(), "hit");
}

/// Issue 14: a counter above 2^52 (or negative, or not an integer) was never repaired, and
/// invalidations stopped reaching the other instances. It is repaired like a lost one, to a
/// value above any used before, so no old entry can look current.
#[test]
fn a_broken_counter_is_repaired_and_invalidations_travel_again() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let db = Arc::new(Db::default());
    let a = instance(&redis, "range", &db, Duration::ZERO);
    let b = instance(&redis, "range", &db, Duration::ZERO);
    wait_until("both subscribed", Duration::from_secs(5), || {
        a.backend.is_subscribed() && b.backend.is_subscribed()
    });
    assert_eq!(version(&a.get("/data")), 0);
    assert_eq!(a.write().status, 204);
    assert_eq!(version(&b.get("/data")), 1);
    let counter = "range:data:gen";
    let mut conn = redis.connection();
    let read = |conn: &mut redis::Connection| -> u64 {
        let raw: String = conn.get(counter).unwrap();
        raw.parse()
            .unwrap_or_else(|_| panic!("not a counter: {raw:?}"))
    };
    let mut previous = read(&mut conn);
    for broken in ["9007199254740993", "4503599627370497", "-3", "2.5", "abc"] {
        let _: () = conn.set(counter, broken).unwrap();
        // B's counter read (before its next request is answered) repairs it.
        let res = b.get("/data");
        assert_eq!(res.status, 200);
        let repaired = read(&mut conn);
        assert!(
            repaired > previous && repaired <= 1 << 52,
            "{broken} → {repaired} (was {previous})"
        );
        // Every instance takes the repair as an invalidation, and writes travel again.
        let expected = db.version.load(Ordering::SeqCst);
        assert_eq!(version(&a.get("/data")), expected);
        assert_eq!(a.write().status, 204);
        let res = b.get("/data");
        assert_eq!(
            (version(&res), res.cache_label()),
            (expected + 1, "miss"),
            "{broken}"
        );
        assert_eq!(b.get("/data").cache_label(), "hit");
        previous = read(&mut conn);
        assert!(previous > repaired);
        assert!(a.backend.is_available() && b.backend.is_available());
    }
    // The increment repairs too, when it meets the broken value first.
    let _: () = conn.set(counter, "-1").unwrap();
    let expected = db.version.load(Ordering::SeqCst);
    assert_eq!(a.write().status, 204);
    assert!(read(&mut conn) > previous);
    assert_eq!(version(&b.get("/data")), expected + 1);
}

/// Issue 14: stale refreshes take the same lease, so a lease that never expired pinned stale
/// content (about 300 s, the whole stale window). The refresh takes it over instead.
#[test]
fn a_lease_that_would_not_expire_does_not_pin_stale_content() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let db = Arc::new(Db::default());
    let revision_db = Arc::clone(&db);
    let backend = backend(&redis, "pinned");
    let cache = ResponseCache::revision("docs", move |_req: HttpRequest| {
        let version = revision_db.version.load(Ordering::SeqCst);
        async move { Ok::<_, actix_web::Error>(format!("v{version}")) }
    })
    .redis(&backend)
    .build();
    let a = start(cache, backend, &db, Duration::ZERO);
    assert_eq!(a.get("/data").cache_label(), "miss");
    let mut conn = redis.connection();
    let keys: Vec<String> = conn.keys("pinned:docs:e:*").unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let lease = keys[0].replace(":e:", ":lease:");
    let _: () = conn.set(&lease, "not-a-token-of-ours").unwrap();

    // A change seen only through the revision (no invalidation): stale-while-revalidate,
    // whose background refresh needs the lease.
    db.version.fetch_add(1, Ordering::SeqCst);
    let res = a.get("/data");
    assert_eq!(
        (res.cache_label(), res.header("x-revision")),
        ("stale", "v0")
    );
    wait_until("the refresh", Duration::from_secs(3), || {
        a.get("/data").header("x-revision").starts_with("v1")
    });
    assert_eq!(a.builds(), 2);
    assert!(!conn.exists::<_, bool>(&lease).unwrap());
}

/// A revision query that fails on an instance that never built the key: the entry another
/// instance stored in Redis is served `stale` (stale-on-error), not the handler's answer.
#[test]
fn a_failing_revision_query_serves_stale_from_redis() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let db = Arc::new(Db::default());
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let revision_cache = |backend: &RedisBackend| {
        let (db, failing) = (Arc::clone(&db), Arc::clone(&failing));
        ResponseCache::revision("docs", move |_req: HttpRequest| {
            let result = if failing.load(Ordering::SeqCst) {
                Err(actix_web::error::ErrorServiceUnavailable(
                    "revision store down",
                ))
            } else {
                Ok(format!("v{}", db.version.load(Ordering::SeqCst)))
            };
            async move { result }
        })
        .redis(backend)
        .build()
    };
    let backend_a = backend(&redis, "rev-fails");
    let a = start(revision_cache(&backend_a), backend_a, &db, Duration::ZERO);
    let backend_b = backend(&redis, "rev-fails");
    let b = start(revision_cache(&backend_b), backend_b, &db, Duration::ZERO);

    assert_eq!(a.get("/data").cache_label(), "miss");
    failing.store(true, Ordering::SeqCst);
    let res = b.get("/data");
    assert_eq!((res.status, res.cache_label()), (200, "stale"), "{res:#?}");
    assert_eq!(res.header("x-revision"), "v0");
    assert!(
        res.header("cache-status").contains("fwd-status=503"),
        "{res:#?}"
    );
    assert_eq!((a.builds(), b.builds()), (1, 0));
    assert_eq!(b.cache.stats().revision_failures, 1);
}

/// Scripts go by hash (`EVALSHA`), loaded once per server (`NOSCRIPT` → `SCRIPT LOAD`), also
/// after Redis forgot them: a `SCRIPT FLUSH` changes nothing a client sees.
#[test]
fn scripts_are_sent_by_hash_and_reloaded_after_a_flush() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let db = Arc::new(Db::default());
    let a = instance(&redis, "by-hash", &db, Duration::ZERO);
    let b = instance(&redis, "by-hash", &db, Duration::ZERO);
    let mut conn = redis.connection();
    let calls = |conn: &mut redis::Connection, command: &str| -> u64 {
        let info: String = redis::cmd("INFO").arg("commandstats").query(conn).unwrap();
        info.lines()
            .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |n| n.parse().unwrap())
    };
    assert_eq!(a.get("/data").cache_label(), "miss");
    assert_eq!(a.write().status, 204);
    assert!(
        calls(&mut conn, "evalsha") >= 2,
        "the lease and the counter by hash"
    );

    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut conn).unwrap();
    let loads = calls(&mut conn, "script|load");
    assert_eq!(b.write().status, 204);
    let res = a.get("/data");
    assert_eq!((res.status, version(&res)), (200, 2), "{res:#?}");
    assert!(
        calls(&mut conn, "script|load") > loads,
        "loaded again after the flush"
    );
}

/// The shared scenarios above, on a real Redis Cluster (three masters, one replica each):
/// every key one operation touches is in one slot (hash tags), and invalidations travel on
/// sharded channels. Run one after the other on one cluster (each with its own prefix).
#[test]
fn on_a_redis_cluster_the_shared_scenarios_hold() {
    let Some(cluster) = RedisCluster::start() else {
        return;
    };
    share_entries(&cluster);
    invalidation_seen_on_next_request(&cluster);
    lost_broadcast_seen_on_next_request(&cluster);
    vary_variants_shared(&cluster);
    hundred_cold_requests_build_once(&cluster);
    killed_lease_holder_taken_over(&cluster);
    counters_lost_and_repaired(&cluster);

    // Slots moving under load (keys migrate: `ASK`, then `MOVED`): the client follows, and no
    // request fails.
    let db = Arc::new(Db::default());
    let a = instance(&cluster, "reshard", &db, Duration::from_millis(2));
    let b = instance(&cluster, "reshard", &db, Duration::from_millis(2));
    let stop = AtomicBool::new(false);
    let answered = AtomicUsize::new(0);
    let statuses = std::thread::scope(|s| {
        let loaded = s.spawn(|| load(&a, &b, &stop, &answered));
        std::thread::sleep(Duration::from_millis(300));
        cluster.reshard(1000);
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::SeqCst);
        loaded.join().unwrap()
    });
    assert!(statuses.is_empty(), "non-2xx answers: {statuses:?}");
    assert!(answered.load(Ordering::SeqCst) > 50);
    cluster.wait_until_ok(Duration::from_secs(10), false);
    let current = db.version.load(Ordering::SeqCst);
    assert_eq!(version(&a.get("/data?after=reshard")), current);
    assert_eq!(b.get("/data?after=reshard").cache_label(), "hit");
    assert_eq!(a.write().status, 204);
    assert_eq!(version(&b.get("/data?after=reshard")), current + 1);
}

/// Load on two instances (reads of 7 keys and writes) until `stop`: the non-2xx statuses.
fn load(a: &Instance, b: &Instance, stop: &AtomicBool, answered: &AtomicUsize) -> Vec<u16> {
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|i| {
                let target = if i % 2 == 0 { a } else { b };
                s.spawn(move || {
                    let mut bad = Vec::new();
                    let mut conn = target.server.connect();
                    let mut n = 0u64;
                    while !stop.load(Ordering::SeqCst) {
                        n += 1;
                        let res = if n.is_multiple_of(10) {
                            conn.send("POST", "/write", &[], None)
                        } else {
                            conn.get(&format!("/data?k={}", n % 7))
                        };
                        if !(200..300).contains(&res.status) {
                            bad.push(res.status);
                        }
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                    bad
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    })
}

#[test]
fn a_cluster_master_killed_mid_load_is_replaced_by_its_replica_and_nothing_fails() {
    let Some(mut cluster) = RedisCluster::start() else {
        return;
    };
    let db = Arc::new(Db::default());
    let a = instance(&cluster, "failover", &db, Duration::from_millis(2));
    let b = instance(&cluster, "failover", &db, Duration::from_millis(2));
    // Two more that learn of invalidations only from the broadcast (no per-request read, a
    // periodic sync too slow to matter): they show the sharded subscription survives.
    let lazy = |cluster: &RedisCluster| {
        let backend = backend_builder(cluster, "failover")
            .read_your_writes(false)
            .sync_interval(Duration::from_secs(3600))
            .build()
            .unwrap();
        instance_on(backend, &db, Duration::ZERO)
    };
    let (c, d) = (lazy(&cluster), lazy(&cluster));
    wait_until("all subscribed", Duration::from_secs(5), || {
        [&a, &b, &c, &d].iter().all(|i| i.backend.is_subscribed())
    });
    let counter = cluster.counter("failover", "data");

    let stop = AtomicBool::new(false);
    let answered = AtomicUsize::new(0);
    let statuses = std::thread::scope(|s| {
        let loaded = s.spawn(|| load(&a, &b, &stop, &answered));
        std::thread::sleep(Duration::from_millis(700));
        // The master of the counters and of the cache's channel.
        let killed = cluster.kill_master_of(&counter);
        tracing::info!(killed, "killed a master");
        let promoted = Instant::now();
        cluster.wait_until_ok(Duration::from_secs(20), false);
        let failover = promoted.elapsed();
        std::thread::sleep(Duration::from_millis(1000));
        stop.store(true, Ordering::SeqCst);
        (loaded.join().unwrap(), failover)
    });
    let (statuses, failover) = statuses;
    assert!(statuses.is_empty(), "non-2xx answers: {statuses:?}");
    assert!(answered.load(Ordering::SeqCst) > 100);
    assert!(failover < Duration::from_secs(20));

    wait_until(
        "every instance back on Redis",
        Duration::from_secs(10),
        || {
            a.get("/data?probe");
            b.get("/data?probe");
            // (C and D re-read counters only hourly: a command that failed during the
            // failover counts against their health for two sync intervals.)
            [&a, &b]
                .iter()
                .all(|i| i.backend.is_available() && i.backend.is_subscribed())
                && [&c, &d].iter().all(|i| i.backend.is_subscribed())
        },
    );
    let current = db.version.load(Ordering::SeqCst);
    assert_eq!(version(&b.get("/data?k=1")), current);
    assert_eq!(version(&a.get("/data?k=1")), current);

    // Invalidations still reach every instance, the broadcast-only ones too.
    assert_eq!(version(&c.get("/data?after")), current);
    assert_eq!(version(&d.get("/data?after")), current);
    assert_eq!(d.get("/data?after").cache_label(), "hit");
    assert_eq!(a.write().status, 204);
    assert_eq!(version(&b.get("/data?after")), current + 1);
    wait_until(
        "the broadcast on the promoted replica",
        Duration::from_secs(3),
        || {
            version(&c.get("/data?after")) == current + 1
                && version(&d.get("/data?after")) == current + 1
        },
    );

    // Increments the failover lost (replication lag): the counter as the promoted replica
    // might have had it. An instance that never saw the lost values invalidates next; its
    // value must still be above every value issued before, or the instances that saw them
    // would take it for "nothing changed" (C and D learn only from the broadcast).
    let mut conn = cluster.conn();
    let _: () = conn.set(&counter, 1).unwrap();
    let e = instance(&cluster, "failover", &db, Duration::ZERO);
    assert_eq!(e.write().status, 204);
    assert_eq!(version(&a.get("/data?after")), current + 2);
    assert_eq!(version(&e.get("/data?after")), current + 2);
    wait_until("the new value's broadcast", Duration::from_secs(3), || {
        version(&c.get("/data?after")) == current + 2
            && version(&d.get("/data?after")) == current + 2
    });
    let value: u64 = conn.get(&counter).unwrap();
    assert!(
        value > 1_000_000_000_000_000,
        "past Redis's clock in µs: {value}"
    );
    // And a counter lost with nobody writing is repaired by the next read, past the clock.
    let _: () = conn.del(&counter).unwrap();
    assert_eq!(version(&b.get("/data?after")), current + 2);
    let repaired: u64 = conn.get(&counter).unwrap();
    assert!(
        repaired > value,
        "repaired past every copy: {repaired} <= {value}"
    );
}

/// Through Sentinel: the shared scenarios, then the primary killed under load. The Sentinels
/// promote the replica; the backend asks them for the primary again once the old one stops
/// answering, and follows it without a restart.
#[test]
fn through_sentinel_a_killed_primary_is_followed_to_the_promoted_replica_and_nothing_fails() {
    let Some(mut sentinels) = RedisSentinels::start() else {
        return;
    };
    share_entries(&sentinels);
    invalidation_seen_on_next_request(&sentinels);
    killed_lease_holder_taken_over(&sentinels);

    let db = Arc::new(Db::default());
    let a = instance(&sentinels, "follow", &db, Duration::from_millis(2));
    let b = instance(&sentinels, "follow", &db, Duration::from_millis(2));
    // One that learns of invalidations only from the broadcast.
    let backend = backend_builder(&sentinels, "follow")
        .read_your_writes(false)
        .sync_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    let c = instance_on(backend, &db, Duration::ZERO);
    wait_until("all subscribed", Duration::from_secs(5), || {
        [&a, &b, &c].iter().all(|i| i.backend.is_subscribed())
    });

    let stop = AtomicBool::new(false);
    let answered = AtomicUsize::new(0);
    let (statuses, failover) = std::thread::scope(|s| {
        let loaded = s.spawn(|| load(&a, &b, &stop, &answered));
        std::thread::sleep(Duration::from_millis(700));
        let killed = sentinels.kill_primary();
        let started = Instant::now();
        wait_until("the failover", Duration::from_secs(30), || {
            sentinels.primary().is_some_and(|port| port != killed)
        });
        let failover = started.elapsed();
        std::thread::sleep(Duration::from_millis(1500));
        stop.store(true, Ordering::SeqCst);
        (loaded.join().unwrap(), failover)
    });
    tracing::info!(?failover, "sentinel failover");
    assert!(statuses.is_empty(), "non-2xx answers: {statuses:?}");
    assert!(answered.load(Ordering::SeqCst) > 100);

    wait_until(
        "every instance on the new primary",
        Duration::from_secs(10),
        || {
            a.get("/data?probe");
            b.get("/data?probe");
            [&a, &b]
                .iter()
                .all(|i| i.backend.is_available() && i.backend.is_subscribed())
                && c.backend.is_subscribed()
        },
    );
    let current = db.version.load(Ordering::SeqCst);
    assert_eq!(version(&a.get("/data?k=1")), current);
    assert_eq!(version(&b.get("/data?k=1")), current);
    // Shared again, on the new primary: A builds, B finds it.
    let builds_b = b.builds();
    assert_eq!(a.get("/data?after=failover").cache_label(), "miss");
    assert_eq!(b.get("/data?after=failover").cache_label(), "hit");
    assert_eq!(b.builds(), builds_b);
    // Invalidations travel, the broadcast too.
    assert_eq!(version(&c.get("/data?after=failover")), current);
    assert_eq!(a.write().status, 204);
    assert_eq!(version(&b.get("/data?after=failover")), current + 1);
    wait_until(
        "the broadcast from the new primary",
        Duration::from_secs(3),
        || version(&c.get("/data?after=failover")) == current + 1,
    );
    // Counters move past Redis's clock: increments the failover lost cannot come back.
    let value: u64 = sentinels
        .conn()
        .get(sentinels.counter("follow", "data"))
        .unwrap();
    assert!(value > 1_000_000_000_000_000, "{value}");
}
