//! The lock outcomes of the response cache's single-flight ([cache-core] item 6, "lock
//! outcomes, as pingora-cache has them"): what a request that WAITS for another request's
//! build of the same key gets when that build
//!
//! 1. takes longer than `lock_timeout` (the waiter builds for itself and stores nothing),
//! 2. turns out not to be storable (the waiters are released at once and each runs its own
//!    handler, concurrently; the key is then hit-for-pass),
//! 3. is dropped unfinished (one waiter takes over, the others wait for it),
//! 4. fails transiently, 408 or 429 (the waiters do not get that answer; one is re-elected;
//!    a 5xx and a panic are still shared).
//!
//! Each outcome runs against three tiers (`Tier`): one cache in memory (leader and waiters on
//! the same cache), two caches sharing an [`InProcessTier`], and two instances sharing a real
//! `redis-server` (feature `redis`; each test starts its own, see `common/redis.rs`). Across
//! instances the leader is on instance A and the waiters on B: B's first waiter leads B's own
//! flight and waits for A by polling A's build lease (`tier::claim`); B's other waiters wait on
//! B's flight. A lease tells B only "held" or "gone": released without a value (uncacheable,
//! transient failure, 5xx, panic, dropped build) or expired (a killed holder), B's first waiter
//! takes it over and builds for itself. That is what the cross-instance variants assert.
//!
//! Builds are held at [`Gate`]s the test opens; "all pass waiters run at once" is a barrier
//! every one of their handlers must reach. Every wait is bounded ([`WAIT`]), no sleep
//! synchronises anything. Every body is checked whole against what its build produced.

#[path = "common/response_cache.rs"]
#[macro_use]
mod support;

#[cfg(feature = "redis")]
#[path = "common/redis.rs"]
mod redis_server;

use std::fmt::Write as _;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use actix_conditional::response_cache::{
    CacheStatus, InProcessTier, PassReason, ResponseCache, TtlCacheBuilder,
};
use actix_web::http::StatusCode;
use actix_web::http::header::{CACHE_CONTROL, SET_COOKIE};
use actix_web::test::TestRequest;
use actix_web::{HttpRequest, HttpResponse};
use tokio::sync::Barrier;
use tokio::task::JoinHandle;

use support::{Counter, Gate, Res, TTL, WAIT, joined, read, until};

/// Waiters per scenario.
const N: usize = 3;
/// The lock timeout of the scenarios that must not time out: far beyond [`WAIT`], so a waiter
/// that waited it out fails the test instead of passing slowly.
const LONG: Duration = Duration::from_secs(30);
/// How soon after its leader let go a released waiter must have answered.
const PROMPTLY: Duration = Duration::from_secs(3);

// ---------------------------------------------------------------------------------------------
// The tiers
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tier {
    /// One cache: leader and waiters share its flights.
    Memory,
    /// Two caches of one name sharing an [`InProcessTier`]: entries and build leases.
    InProcess,
    /// Two instances, each its own `RedisBackend`, sharing one `redis-server`.
    #[cfg(feature = "redis")]
    Redis,
}

/// A test's tier: what the pairs of instances it makes share.
struct Env {
    tier: Tier,
    in_process: InProcessTier,
    #[cfg(feature = "redis")]
    redis: Option<redis_server::RedisServer>,
    #[cfg(feature = "redis")]
    conn: Option<std::cell::RefCell<redis::Connection>>,
}

impl Env {
    /// `None` when the tier is Redis and there is no `redis-server` (skipped loudly; a failure
    /// under CI, see `common/redis.rs`).
    fn new(tier: Tier) -> Option<Self> {
        #[cfg(feature = "redis")]
        let (redis, conn) = if tier == Tier::Redis {
            let server = redis_server::RedisServer::start()?;
            let conn = std::cell::RefCell::new(server.connection());
            (Some(server), Some(conn))
        } else {
            (None, None)
        };
        Some(Self {
            tier,
            // Leases live far longer than any scenario: one that goes away was released.
            in_process: InProcessTier::new().lease_ttl(Duration::from_secs(60)),
            #[cfg(feature = "redis")]
            redis,
            #[cfg(feature = "redis")]
            conn,
        })
    }

    /// Whether the leader and the waiters are on two instances.
    fn cross(&self) -> bool {
        self.tier != Tier::Memory
    }

    /// Instance A (the leader's) and B (the waiters'), on a cache named `name`, sharing
    /// `stage`. In memory both are the same cache.
    fn pair(&self, name: &str, lock_timeout: Duration, stage: &Stage) -> (Instance, Instance) {
        let builder = || ResponseCache::ttl(name, TTL).lock_timeout(lock_timeout);
        let cache = |builder: TtlCacheBuilder| -> ResponseCache {
            match self.tier {
                Tier::Memory => builder.build(),
                Tier::InProcess => builder.shared_in_process(&self.in_process).build(),
                #[cfg(feature = "redis")]
                Tier::Redis => builder.redis(&self.backend(name)).build(),
            }
        };
        let a = cache(builder());
        let b = if self.cross() {
            cache(builder())
        } else {
            a.clone()
        };
        let instance = |name, cache| Instance {
            name,
            cache,
            stage: stage.clone(),
        };
        (instance("a", a), instance("b", b))
    }

    /// One instance's backend: its own connections and thread, as another process has.
    /// `read_your_writes(false)`: no counter read before each request, so a request that
    /// finds its key being built on its own instance joins that flight in its first poll
    /// (the test knows it is waiting once it has arrived). Leases renew, and live 60 s.
    #[cfg(feature = "redis")]
    fn backend(&self, prefix: &str) -> actix_conditional::response_cache::RedisBackend {
        let url = self.redis.as_ref().expect("a Redis env").url();
        actix_conditional::response_cache::RedisBackend::builder(&url)
            .prefix(prefix)
            .timeout(Duration::from_secs(1))
            .read_your_writes(false)
            .lease_ttl(Duration::from_secs(60))
            .build()
            .expect("valid url")
    }

    /// How many times some instance polled a build lease held by another (Redis: the server's
    /// `EXISTS` count; only `tier::claim`'s poll sends it). Elsewhere 0.
    fn lease_polls(&self) -> u64 {
        #[cfg(feature = "redis")]
        if let Some(conn) = &self.conn {
            let info: String = redis::cmd("INFO")
                .arg("commandstats")
                .query(&mut *conn.borrow_mut())
                .expect("INFO commandstats");
            return info
                .lines()
                .find_map(|line| line.strip_prefix("cmdstat_exists:calls="))
                .and_then(|rest| rest.split(',').next())
                .map_or(0, |calls| calls.parse().expect("a count"));
        }
        0
    }

    /// Sends [`N`] requests for `path` to `b` while the leader's build (on `a`) is held, and
    /// returns once every one of them is waiting: the first with `first`'s cue, the others
    /// with `rest`'s. Across instances the first leads B's flight and polls A's lease (in
    /// process its first poll gets that far; with Redis the server counts its poll); the
    /// others are sent only then, and join B's flight in their first poll.
    async fn waiters(&self, b: &Instance, path: &str, first: Cue, rest: Cue) -> Vec<Task> {
        let arrived = b.stage.arrived.get();
        let polls = self.lease_polls();
        let mut tasks = vec![b.spawn(path, first)];
        until("the first waiter's arrival", || {
            b.stage.arrived.get() == arrived + 1
        })
        .await;
        #[cfg(feature = "redis")]
        if self.tier == Tier::Redis {
            // Its first poll is a few ms away: it waits for A's lease, not for Redis.
            until("the first waiter to poll A's lease", || {
                self.lease_polls() > polls
            })
            .await;
        }
        let _ = polls;
        tasks.extend((1..N).map(|_| b.spawn(path, rest)));
        until("every waiter's arrival", || {
            b.stage.arrived.get() == arrived + N
        })
        .await;
        tasks
    }
}

// ---------------------------------------------------------------------------------------------
// The instances and their handler
// ---------------------------------------------------------------------------------------------

/// What both instances' handlers share with the test.
#[derive(Debug, Clone)]
struct Stage {
    /// Handler runs, on either instance.
    runs: Counter,
    /// Requests sent (counted in the poll that starts them).
    arrived: Counter,
    /// `Cue::hold(i)` waits at `gates[i]`.
    gates: Arc<[Gate; 3]>,
    /// `Cue::barrier()` waits here until every party has arrived.
    barrier: Option<Arc<Barrier>>,
}

impl Stage {
    fn new() -> Self {
        Self {
            runs: Counter::default(),
            arrived: Counter::default(),
            gates: Arc::new([Gate::new(), Gate::new(), Gate::new()]),
            barrier: None,
        }
    }

    /// With a barrier of `parties` handlers.
    fn with_barrier(parties: usize) -> Self {
        Self {
            barrier: Some(Arc::new(Barrier::new(parties))),
            ..Self::new()
        }
    }

    fn open(&self, gate: usize) {
        self.gates[gate].open();
    }
}

/// What a request's handler does if this request builds (sent as request headers: a waiter
/// that takes over builds with its own request).
#[derive(Debug, Clone, Copy, Default)]
struct Cue {
    hold: Option<usize>,
    barrier: bool,
    status: Option<u16>,
    panic: bool,
}

impl Cue {
    fn plain() -> Self {
        Self::default()
    }

    fn hold(gate: usize) -> Self {
        Self {
            hold: Some(gate),
            ..Self::default()
        }
    }

    fn barrier() -> Self {
        Self {
            barrier: true,
            ..Self::default()
        }
    }

    fn status(self, status: u16) -> Self {
        Self {
            status: Some(status),
            ..self
        }
    }

    fn panics(self) -> Self {
        Self {
            panic: true,
            ..self
        }
    }

    fn request(self, path: &str) -> HttpRequest {
        let mut req = TestRequest::get().uri(path);
        if let Some(gate) = self.hold {
            req = req.insert_header(("x-hold", gate.to_string()));
        }
        if self.barrier {
            req = req.insert_header(("x-barrier", "1"));
        }
        if let Some(status) = self.status {
            req = req.insert_header(("x-status", status.to_string()));
        }
        if self.panic {
            req = req.insert_header(("x-panic", "1"));
        }
        req.to_http_request()
    }
}

/// What a key's responses are, by path: the resource's own property, whoever builds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ok,
    NoStore,
    SetCookie,
    Private,
    NotFound,
}

impl Kind {
    const UNCACHEABLE: [Self; 4] = [
        Self::NoStore,
        Self::SetCookie,
        Self::Private,
        Self::NotFound,
    ];

    fn path(self) -> &'static str {
        match self {
            Self::Ok => "/ok",
            Self::NoStore => "/no-store",
            Self::SetCookie => "/set-cookie",
            Self::Private => "/private",
            Self::NotFound => "/not-found",
        }
    }

    fn of(path: &str) -> Self {
        [
            Self::Ok,
            Self::NoStore,
            Self::SetCookie,
            Self::Private,
            Self::NotFound,
        ]
        .into_iter()
        .find(|kind| kind.path() == path)
        .expect("a known path")
    }

    fn status(self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            _ => StatusCode::OK,
        }
    }
}

/// The body of `build` (`"b2"`: run 2, on instance b): ~16 KiB, every line naming it, so a
/// response can be checked whole against what its build produced.
fn body(build: &str) -> String {
    format!("built by {build}\n").repeat(1000)
}

/// Which build produced `res` (`"b2"`: run 2, on instance b), after checking its body is whole.
fn built(res: &Res) -> String {
    let build = res
        .body
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("built by "))
        .unwrap_or_else(|| panic!("not a built body: {:?}", truncate(&res.body)))
        .to_owned();
    assert!(
        res.body == body(&build),
        "the body of build {build} is not whole: {} bytes, expected {}",
        res.body.len(),
        body(&build).len()
    );
    build
}

fn truncate(s: &str) -> &str {
    &s[..s.len().min(80)]
}

/// One app instance: its cache and the handler behind it.
#[derive(Debug, Clone)]
struct Instance {
    name: &'static str,
    cache: ResponseCache,
    stage: Stage,
}

/// A request answered, and when.
#[derive(Debug)]
struct Answer {
    res: Res,
    started: Instant,
    finished: Instant,
}

impl Answer {
    fn took(&self) -> Duration {
        self.finished - self.started
    }

    fn status(&self) -> Option<CacheStatus> {
        self.res.cache
    }
}

type Task = JoinHandle<Answer>;

impl Instance {
    /// Sends a request through `serve`, as a task of its own.
    fn spawn(&self, path: &str, cue: Cue) -> Task {
        let req = cue.request(path);
        let (name, cache, stage) = (self.name, self.cache.clone(), self.stage.clone());
        actix_rt::spawn(async move {
            let started = Instant::now();
            stage.arrived.bump();
            let res = cache.serve(&req, handler(name, &stage)).await;
            let res = read(res).await;
            Answer {
                res,
                started,
                finished: Instant::now(),
            }
        })
    }

    async fn get(&self, path: &str, cue: Cue) -> Answer {
        joined(self.spawn(path, cue)).await
    }
}

/// The handler of `instance`: counts its run, follows the request's cue, answers as the
/// path's [`Kind`] (status overridden by the cue) with the run's body.
fn handler(
    instance: &'static str,
    stage: &Stage,
) -> impl Fn(HttpRequest) -> futures_util::future::LocalBoxFuture<'static, HttpResponse> + 'static {
    let stage = stage.clone();
    move |req: HttpRequest| {
        let run = stage.runs.bump();
        let stage = stage.clone();
        Box::pin(async move {
            let header = |name: &str| {
                req.headers()
                    .get(name)
                    .map(|v| v.to_str().unwrap().to_owned())
            };
            if let Some(gate) = header("x-hold") {
                stage.gates[gate.parse::<usize>().unwrap()].pass().await;
            }
            if header("x-barrier").is_some() {
                let barrier = stage.barrier.clone().expect("a stage with a barrier");
                tokio::time::timeout(WAIT, barrier.wait())
                    .await
                    .expect("the pass waiters' handlers did not all run at once");
            }
            assert!(
                header("x-panic").is_none(),
                "build {instance}{run} panics (expected by the test)"
            );
            let kind = Kind::of(req.path());
            let status = header("x-status").map_or(kind.status(), |s| {
                StatusCode::from_u16(s.parse().unwrap()).unwrap()
            });
            let mut res = HttpResponse::build(status);
            match kind {
                Kind::NoStore => {
                    res.insert_header((CACHE_CONTROL, "no-store"));
                }
                Kind::SetCookie => {
                    res.insert_header((SET_COOKIE, "session=1; Path=/"));
                }
                Kind::Private => {
                    res.insert_header((CACHE_CONTROL, "private, max-age=60"));
                }
                Kind::Ok | Kind::NotFound => {}
            }
            res.body(body(&format!("{instance}{run}")))
        })
    }
}

async fn all(tasks: Vec<Task>) -> Vec<Answer> {
    let mut answers = Vec::with_capacity(tasks.len());
    for task in tasks {
        answers.push(joined(task).await);
    }
    answers
}

/// The answers' statuses and builds, for failure messages.
fn summary(answers: &[Answer]) -> String {
    let mut out = String::new();
    for a in answers {
        let build = a.res.body.lines().next().unwrap_or("").to_owned();
        let _ = write!(
            out,
            "\n  {} {:?} x-cache={} {build:?} after {:?}",
            a.res.status,
            a.status(),
            a.res.x_cache(),
            a.took()
        );
    }
    out
}

fn count(answers: &[Answer], status: CacheStatus) -> usize {
    answers
        .iter()
        .filter(|a| a.status() == Some(status))
        .count()
}

const fn miss(stored: bool, status: StatusCode) -> CacheStatus {
    CacheStatus::Miss { stored, status }
}

const fn pass(reason: PassReason) -> CacheStatus {
    CacheStatus::Pass { reason }
}

const fn coalesced(status: StatusCode) -> CacheStatus {
    CacheStatus::Coalesced { status }
}

fn is_hit(answer: &Answer) -> bool {
    matches!(answer.status(), Some(CacheStatus::Hit { .. })) && answer.res.x_cache() == "hit"
}

/// One waiter built (and stored) `build` and the others waited for it.
fn assert_one_built_the_rest_coalesced(answers: &[Answer], build: &str, what: &str) {
    let ok = StatusCode::OK;
    assert_eq!(
        (
            count(answers, miss(true, ok)),
            count(answers, coalesced(ok))
        ),
        (1, N - 1),
        "{what}: {}",
        summary(answers)
    );
    for a in answers {
        assert_eq!(a.res.status, ok);
        assert_eq!(built(&a.res), build, "{what}: {}", summary(answers));
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Timeout
// ---------------------------------------------------------------------------------------------

/// The leader's build is held past `lock_timeout`: each waiter gives up after it (not before,
/// not much later), runs its own handler and stores nothing (`Pass { LockTimeout }`, counted
/// in `lock_timeouts`); the leader's build, once done, is what the cache holds.
async fn timeout(tier: Tier) {
    const LOCK: Duration = Duration::from_millis(300);
    let Some(env) = Env::new(tier) else { return };
    let stage = Stage::new();
    let (a, b) = env.pair("timeout", LOCK, &stage);

    let leader = a.spawn("/ok", Cue::hold(0));
    until("the leader's build", || stage.runs.get() == 1).await;
    let waiters = env.waiters(&b, "/ok", Cue::plain(), Cue::plain()).await;
    let answers = all(waiters).await;

    let expected = pass(PassReason::LockTimeout);
    assert_eq!(count(&answers, expected), N, "{}", summary(&answers));
    let mut builds: Vec<String> = answers.iter().map(|a| built(&a.res)).collect();
    builds.sort();
    assert_eq!(builds, ["b2", "b3", "b4"], "each ran its own handler");
    for a in &answers {
        assert_eq!((a.res.status, a.res.x_cache()), (StatusCode::OK, "miss"));
        assert!(
            a.took() >= LOCK,
            "gave up before lock_timeout: {:?}",
            a.took()
        );
        assert!(a.took() < LOCK + PROMPTLY, "{}", summary(&answers));
    }
    assert_eq!(stage.runs.get(), 1 + N);
    let stats = b.cache.stats();
    assert_eq!(stats.lock_timeouts, N as u64, "{stats:?}");
    assert_eq!(
        stats.builds, 0,
        "a timed-out waiter stored its build: {stats:?}"
    );

    stage.open(0);
    let leader = joined(leader).await;
    assert_eq!(leader.status(), Some(miss(true, StatusCode::OK)));
    assert_eq!(built(&leader.res), "a1");
    // What the cache holds, on either instance, is the leader's build, not a waiter's.
    for instance in [&a, &b] {
        let res = instance.get("/ok", Cue::plain()).await;
        assert!(is_hit(&res), "{}: {:?}", instance.name, res.status());
        assert_eq!(built(&res.res), "a1", "{}", instance.name);
    }
    assert_eq!(stage.runs.get(), 1 + N);
}

#[actix_rt::test]
async fn timeout_memory() {
    timeout(Tier::Memory).await;
}

#[actix_rt::test]
async fn timeout_in_process_tier() {
    timeout(Tier::InProcess).await;
}

#[cfg(feature = "redis")]
#[actix_rt::test]
async fn timeout_redis() {
    timeout(Tier::Redis).await;
}

// ---------------------------------------------------------------------------------------------
// 2. Uncacheable leader: pass
// ---------------------------------------------------------------------------------------------

/// For each kind of unstorable response (`no-store`, `Set-Cookie`, `private`, 404): the
/// leader's answer releases the waiters at once, each runs its own handler, all at the same
/// time (a barrier all their handlers must reach), and the key is hit-for-pass on every
/// instance that saw it: a request no longer waits for another's build.
///
/// Every waiter passes (`LeaderUncacheable`, counted in `lock_passes`), on the leader's
/// instance and across instances alike: A leaves a hit-for-pass marker in the shared tier
/// before it releases its lease, so B's waiter polling the lease finds it and B's other
/// waiters are released with it.
async fn leader_uncacheable(tier: Tier) {
    let Some(env) = Env::new(tier) else { return };
    for kind in Kind::UNCACHEABLE {
        let takeovers = 0;
        let passes = N;
        let stage = Stage::with_barrier(passes);
        let (a, b) = env.pair(&format!("pass{}", kind.path()), LONG, &stage);
        let path = kind.path();
        let status = kind.status();

        let leader = a.spawn(path, Cue::hold(0));
        until("the leader's build", || stage.runs.get() == 1).await;
        let waiters = env.waiters(&b, path, Cue::barrier(), Cue::barrier()).await;
        stage.open(0);
        let released = Instant::now();

        let leader = joined(leader).await;
        assert_eq!(leader.status(), Some(miss(false, status)), "{kind:?}");
        assert_eq!(
            (leader.res.status, built(&leader.res)),
            (status, "a1".into())
        );
        let answers = all(waiters).await;
        let what = format!("{kind:?}: {}", summary(&answers));
        assert_eq!(
            count(&answers, pass(PassReason::LeaderUncacheable)),
            passes,
            "{what}"
        );
        assert_eq!(count(&answers, miss(false, status)), takeovers, "{what}");
        let mut builds: Vec<String> = answers.iter().map(|a| built(&a.res)).collect();
        builds.sort();
        assert_eq!(builds, ["b2", "b3", "b4"], "each ran its own: {what}");
        for a in &answers {
            assert_eq!((a.res.status, a.res.x_cache()), (status, "miss"), "{what}");
            assert!(a.finished - released < PROMPTLY, "{what}");
        }
        assert_eq!(stage.runs.get(), 1 + N, "{what}");
        let stats = b.cache.stats();
        assert_eq!(stats.lock_passes, passes as u64, "{kind:?}: {stats:?}");
        assert_eq!(stats.builds, 0, "{kind:?}: {stats:?}");

        // Hit-for-pass, on each instance: a request whose build is held does not make the
        // next one wait; both pass as uncacheable.
        for (instance, gate) in [(&a, 1), (&b, 2)] {
            let before = stage.runs.get();
            let held = instance.spawn(path, Cue::hold(gate));
            until("the held build", || stage.runs.get() == before + 1).await;
            let quick = instance.get(path, Cue::plain()).await;
            let what = format!("{kind:?} on {}", instance.name);
            assert_eq!(
                quick.status(),
                Some(pass(PassReason::Uncacheable)),
                "{what}"
            );
            assert_eq!(
                built(&quick.res),
                format!("{}{}", instance.name, before + 2)
            );
            stage.open(gate);
            let held = joined(held).await;
            assert_eq!(held.status(), Some(pass(PassReason::Uncacheable)), "{what}");
            assert_eq!(built(&held.res), format!("{}{}", instance.name, before + 1));
        }
        assert_eq!(b.cache.stats().lock_passes, passes as u64);
    }
}

#[actix_rt::test]
async fn leader_uncacheable_memory() {
    leader_uncacheable(Tier::Memory).await;
}

#[actix_rt::test]
async fn leader_uncacheable_in_process_tier() {
    leader_uncacheable(Tier::InProcess).await;
}

#[cfg(feature = "redis")]
#[actix_rt::test]
async fn leader_uncacheable_redis() {
    leader_uncacheable(Tier::Redis).await;
}

// ---------------------------------------------------------------------------------------------
// 3. Dropped leader (dangling)
// ---------------------------------------------------------------------------------------------

/// The leader's request runs on a System of its own (another thread, as an actix worker);
/// its build is held, then that System stops: the build task is dropped unfinished, with
/// its flight claim and its lease. The waiters wake at once (not after `lock_timeout`, nor a
/// lease's life: both 30 s and more here), one takes over and builds, the others get its
/// build, and that build is what the cache holds. The dropped build is never seen.
///
/// In memory each waiter counts the dangling wait (`lock_dangling`). Across instances
/// the dropped lease is released at once (in process by its `Drop`; with Redis by the
/// backend's thread, which outlives the stopped System): B's first waiter takes it over.
async fn dropped_leader(tier: Tier) {
    let Some(env) = Env::new(tier) else { return };
    let stage = Stage::new();
    let (a, b) = env.pair("dropped", LONG, &stage);

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let leader_system = {
        let a = a.clone();
        thread::spawn(move || {
            let system = actix_rt::System::new();
            system.block_on(async move {
                let _leader = a.spawn("/ok", Cue::hold(0));
                let _ = stopped.await;
            });
            // Its runtime goes with it: every task on it, the held build too, is dropped.
            drop(system);
        })
    };
    until("the leader's build", || stage.runs.get() == 1).await;
    // Whichever waiter takes over holds its build at gate 1, so the others must wait for it.
    let waiters = env.waiters(&b, "/ok", Cue::hold(1), Cue::hold(1)).await;

    stop.send(()).expect("the leader's System is running");
    until("the leader's System to stop", || {
        leader_system.is_finished()
    })
    .await;
    leader_system.join().expect("the leader's thread");
    let dropped = Instant::now();

    // In memory every waiter counts the dangling wait in the poll that joins again, so once
    // all are counted the one that took over leads and the others wait on its flight. Across
    // instances B's other waiters never left the flight of B's first waiter.
    let dangling = |n| env.cross() || b.cache.stats().lock_dangling == n;
    until("the take-over's build", || {
        stage.runs.get() == 2 && dangling(N as u64)
    })
    .await;
    assert!(
        dropped.elapsed() < PROMPTLY,
        "took over after {:?}",
        dropped.elapsed()
    );
    stage.open(1);

    let answers = all(waiters).await;
    assert_one_built_the_rest_coalesced(&answers, "b2", "after the leader was dropped");
    assert_eq!(stage.runs.get(), 2, "the dropped build, then one take-over");
    assert!(dangling(N as u64), "{:?}", b.cache.stats());

    // The take-over's build is stored; A finds it too (across instances, in the tier).
    for instance in [&a, &b] {
        let res = instance.get("/ok", Cue::plain()).await;
        assert!(is_hit(&res), "{}: {:?}", instance.name, res.status());
        assert_eq!(built(&res.res), "b2");
    }
    if env.cross() {
        assert_eq!(
            a.cache.stats().redis_hits,
            1,
            "A read B's build from the tier"
        );
    }
    assert_eq!(stage.runs.get(), 2);
}

#[actix_rt::test]
async fn dropped_leader_memory() {
    dropped_leader(Tier::Memory).await;
}

#[actix_rt::test]
async fn dropped_leader_in_process_tier() {
    dropped_leader(Tier::InProcess).await;
}

#[cfg(feature = "redis")]
#[actix_rt::test]
async fn dropped_leader_redis() {
    dropped_leader(Tier::Redis).await;
}

/// With Redis, a holder that dies (SIGKILL: no release, no more renewals) blocks the key for
/// what is left of its lease's life, then B's first waiter takes it over; B's other waiters
/// wait for that build. The holder is this test binary again, as another process
/// (`killed_holder_child`), with a 600 ms lease.
#[cfg(feature = "redis")]
#[actix_rt::test]
async fn dropped_leader_redis_killed_holder_lease_expires() {
    use redis::Commands as _;
    use std::io::BufRead as _;
    use std::process::{Command, Stdio};

    let Some(env) = Env::new(Tier::Redis) else {
        return;
    };
    let redis = env.redis.as_ref().expect("a Redis env");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["killed_holder_child", "--exact", "--ignored", "--nocapture"])
        .env(HOLDER_URL, redis.url())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the holder starts");
    let stdout = child.stdout.take().unwrap();
    let mut child = ChildGuard(child);
    // The holder bounds its own start (`until`), so this read ends either way.
    let building = std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|line| line == "HOLDER_BUILDING");
    assert!(building, "the holder's build started");

    let mut conn = redis.connection();
    let leases: Vec<String> = conn.keys(format!("{HOLDER}:{HOLDER}:lease:*")).unwrap();
    assert_eq!(leases.len(), 1, "the holder's lease: {leases:?}");

    let stage = Stage::new();
    let (_a, b) = env.pair(HOLDER, LONG, &stage);
    let waiters = env.waiters(&b, "/ok", Cue::hold(1), Cue::hold(1)).await;

    let _ = child.0.kill();
    let _ = child.0.wait();
    let killed = Instant::now();
    let left: i64 = conn.pttl(&leases[0]).unwrap();
    assert!(
        left > 0,
        "the dead holder's lease still blocks the key: {left}"
    );
    let left = Duration::from_millis(u64::try_from(left).unwrap());

    until("the take-over's build", || stage.runs.get() == 1).await;
    let waited = killed.elapsed();
    assert!(
        waited + Duration::from_millis(50) >= left,
        "took over before the lease expired: {waited:?} < {left:?}"
    );
    assert!(waited < HOLDER_LEASE + PROMPTLY, "{waited:?}");
    stage.open(1);

    let answers = all(waiters).await;
    assert_one_built_the_rest_coalesced(&answers, "b1", "after the holder was killed");
    assert_eq!(stage.runs.get(), 1);
    let res = b.get("/ok", Cue::plain()).await;
    assert!(
        is_hit(&res) && built(&res.res) == "b1",
        "{:?}",
        res.status()
    );
    assert!(!conn.exists::<_, bool>(&leases[0]).unwrap(), "released");
}

/// The killed holder's cache name and key prefix, its lease's life, and where it finds Redis.
#[cfg(feature = "redis")]
const HOLDER: &str = "killed";
#[cfg(feature = "redis")]
const HOLDER_LEASE: Duration = Duration::from_millis(600);
#[cfg(feature = "redis")]
const HOLDER_URL: &str = "AC_LOCK_OUTCOMES_REDIS_URL";

/// Kills the child process when dropped, so a failing test leaves nothing running.
#[cfg(feature = "redis")]
struct ChildGuard(std::process::Child);

#[cfg(feature = "redis")]
impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The lease holder of the test above, run as a child process: takes the lease of `/ok`, says
/// so, and builds until killed (bounded). Does nothing when run directly.
#[cfg(feature = "redis")]
#[test]
#[ignore = "run as a child process by dropped_leader_redis_killed_holder_lease_expires"]
fn killed_holder_child() {
    use std::io::Write as _;

    let Ok(url) = std::env::var(HOLDER_URL) else {
        return;
    };
    let backend = actix_conditional::response_cache::RedisBackend::builder(&url)
        .prefix(HOLDER)
        .lease_ttl(HOLDER_LEASE)
        .build()
        .unwrap();
    let cache = ResponseCache::ttl(HOLDER, TTL).redis(&backend).build();
    actix_rt::System::new().block_on(async move {
        let stage = Stage::new();
        let holder = Instance {
            name: "holder",
            cache,
            stage: stage.clone(),
        };
        let _build = holder.spawn("/ok", Cue::hold(0));
        until("the holder's build", || stage.runs.get() == 1).await;
        println!("HOLDER_BUILDING");
        std::io::stdout().flush().unwrap();
        // Killed long before this: the gate's own bound (`WAIT`) ends the build first.
        tokio::time::sleep(Duration::from_secs(60)).await;
    });
}

// ---------------------------------------------------------------------------------------------
// 4. Transient leader error (408, 429), and the 5xx and panic that are still shared
// ---------------------------------------------------------------------------------------------

/// A leader answering 408 or 429 (about its own request) keeps that answer to itself: no
/// waiter gets it, one is re-elected and builds (in memory each waiter counts a
/// `lock_transient`); its build is stored. A 5xx or a panic, in memory, is shared with the
/// waiters (`coalesced`) and not stored. Across instances no failed build reaches the tier:
/// A's lease is released without a value and B's first waiter builds for itself.
async fn transient_leader(tier: Tier) {
    let Some(env) = Env::new(tier) else { return };
    for (name, cue, failed) in [
        (
            "429",
            Cue::hold(0).status(429),
            StatusCode::TOO_MANY_REQUESTS,
        ),
        ("408", Cue::hold(0).status(408), StatusCode::REQUEST_TIMEOUT),
        (
            "503",
            Cue::hold(0).status(503),
            StatusCode::SERVICE_UNAVAILABLE,
        ),
        (
            "panic",
            Cue::hold(0).panics(),
            StatusCode::INTERNAL_SERVER_ERROR,
        ),
    ] {
        let stage = Stage::new();
        let (a, b) = env.pair(&format!("transient-{name}"), LONG, &stage);

        let leader = a.spawn("/ok", cue);
        until("the leader's build", || stage.runs.get() == 1).await;
        // A re-elected waiter holds its build at gate 1, so the others must wait for it.
        let waiters = env.waiters(&b, "/ok", Cue::hold(1), Cue::hold(1)).await;
        stage.open(0);
        let released = Instant::now();

        let leader = joined(leader).await;
        assert_eq!(leader.res.status, failed, "{name}");
        assert_eq!(leader.status(), Some(miss(false, failed)), "{name}");
        if name != "panic" {
            assert_eq!(built(&leader.res), "a1");
        }
        let shared = !env.cross() && matches!(name, "503" | "panic");
        if !shared {
            // In memory each waiter counts the transient failure in the poll that joins
            // again: once all are counted, one leads and the others wait on its flight.
            let transient = |n| env.cross() || b.cache.stats().lock_transient == n;
            until("the re-elected build", || {
                stage.runs.get() == 2 && transient(N as u64)
            })
            .await;
            assert!(
                released.elapsed() < PROMPTLY,
                "re-elected after {:?}",
                released.elapsed()
            );
            stage.open(1);
        }
        let answers = all(waiters).await;
        let what = format!("leader {name}: {}", summary(&answers));
        for a in &answers {
            assert!(a.finished - released < PROMPTLY, "{what}");
        }
        if shared {
            // Every waiter gets the leader's failure, as it is; nobody retries behind it.
            assert_eq!(count(&answers, coalesced(failed)), N, "{what}");
            for a in &answers {
                assert_eq!((a.res.status, a.res.x_cache()), (failed, "coalesced"));
                assert_eq!(a.res.body, leader.res.body, "{what}");
            }
            assert_eq!(stage.runs.get(), 1, "{what}");
            assert_eq!(b.cache.stats().lock_transient, 0);
            // Nothing was stored: the next request builds.
            let next = b.get("/ok", Cue::plain()).await;
            assert_eq!(next.status(), Some(miss(true, StatusCode::OK)), "{what}");
            assert_eq!(built(&next.res), "b2");
        } else {
            assert!(answers.iter().all(|a| a.res.status != failed), "{what}");
            assert_one_built_the_rest_coalesced(&answers, "b2", &what);
            assert_eq!(stage.runs.get(), 2, "{what}");
            if !env.cross() {
                assert_eq!(b.cache.stats().lock_transient, N as u64, "{what}");
            }
        }
        for instance in [&a, &b] {
            let res = instance.get("/ok", Cue::plain()).await;
            assert!(is_hit(&res), "{}: {what}", instance.name);
            assert_eq!(built(&res.res), "b2", "{what}");
        }
        assert_eq!(stage.runs.get(), 2, "{what}");
    }
}

#[actix_rt::test]
async fn transient_leader_memory() {
    transient_leader(Tier::Memory).await;
}

#[actix_rt::test]
async fn transient_leader_in_process_tier() {
    transient_leader(Tier::InProcess).await;
}

#[cfg(feature = "redis")]
#[actix_rt::test]
async fn transient_leader_redis() {
    transient_leader(Tier::Redis).await;
}
