//! The HTTP purgers against a recording server on 127.0.0.1: the exact requests each sends
//! (method, path, headers, JSON body, splitting), and the dispatcher's behaviour when the
//! destination is down, comes back, or accepts and never answers.
//!
//! The Prometheus recorder is one per process, so each test names its purgers after itself.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use actix_conditional::edge::purge::{
    CloudflarePurger, FastlyPurger, PurgeOutcome, Purges, VarnishPurger,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// One request as the server read it; header names lowercased, in arrival order.
#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Recorded {
    fn header(&self, name: &str) -> Option<&str> {
        let mut values = self.headers.iter().filter(|(n, _)| n == name);
        let value = values.next().map(|(_, v)| v.as_str());
        assert!(values.next().is_none(), "{name} sent twice");
        value
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    /// Answer every request with this status and body.
    Answer(u16, &'static str),
    /// Accept, read nothing, answer nothing.
    Hang,
}

/// A one-thread HTTP/1.1 server that records requests and answers `Connection: close`.
struct Server {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(mode: Mode) -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap(), mode)
    }

    fn start_on(addr: SocketAddr, mode: Mode) -> Self {
        let listener = TcpListener::bind(addr).expect("bind the recording server");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, stopped) = (requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new(); // `Hang`: connections kept open, never answered
            while !stopped.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => match mode {
                        Mode::Hang => held.push(stream),
                        Mode::Answer(status, body) => {
                            if let Some(request) = answer(stream, status, body) {
                                log.lock().unwrap().push(request);
                            }
                        }
                    },
                    Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(error) => panic!("accept: {error}"),
                }
            }
        });
        Self {
            addr,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

fn answer(stream: TcpStream, status: u16, body: &str) -> Option<Recorded> {
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_owned(), parts.next()?.to_owned());
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let length = headers
        .iter()
        .find(|(name, _)| name == "content-length")
        .map_or(0, |(_, value)| value.parse().unwrap());
    let mut bytes = vec![0; length];
    reader.read_exact(&mut bytes).ok()?;
    let mut stream = reader.into_inner();
    let reply = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(reply.as_bytes()).ok()?;
    Some(Recorded {
        method,
        path,
        headers,
        body: String::from_utf8(bytes).unwrap(),
    })
}

/// A port nothing listens on (bound, then released).
fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| PrometheusBuilder::new().install_recorder().unwrap())
}

fn groups(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

/// How long the tests that expect every purge to land wait for it. `Purges::purge` answers as
/// soon as every purger is done, so this costs nothing when they land; the default 2 s was
/// too short for a loaded CI machine's first TLS client set-up (a rare "not done" failure).
const LANDS: Duration = Duration::from_secs(30);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    actix_web::rt::System::new().block_on(future)
}

fn assert_done(outcome: PurgeOutcome, purged: usize) {
    assert!(outcome.is_done(), "{outcome:?}");
    assert_eq!(outcome.purged, purged);
}

const OK: Mode = Mode::Answer(200, r#"{"status":"ok"}"#);

#[test]
fn varnish_sends_purge_with_the_xkey_header_to_every_address() {
    let (one, two) = (Server::start(OK), Server::start(OK));
    let varnish = VarnishPurger::new([one.url(), format!("{}varnish/purge", two.url())])
        .unwrap()
        .name("varnish_sends");
    let purges = Purges::builder()
        .purger(varnish)
        .wait(LANDS)
        .build()
        .unwrap();
    assert_done(
        block_on(purges.purge(groups(&["challenges", "challenge:42"]))),
        2,
    );
    for (server, path) in [(&one, "/"), (&two, "/varnish/purge")] {
        let requests = server.requests();
        assert_eq!(requests.len(), 1, "{requests:?}");
        let request = &requests[0];
        assert_eq!(
            (request.method.as_str(), request.path.as_str()),
            ("PURGE", path)
        );
        assert_eq!(
            request.header("xkey-purge"),
            Some("challenges challenge:42")
        );
        assert_eq!(request.header("xkey-softpurge"), None);
        assert!(request.body.is_empty());
    }
}

/// By default a purger names each group as the `Edge` rendered it on responses: a group the
/// vendor cannot take as a tag (here, with a space) is purged under the same stable hash.
#[test]
fn by_default_purgers_purge_the_tags_the_edge_rendered() {
    use actix_conditional::edge::{TagHeaders, render_vendor_tags};
    use actix_web::http::header::HeaderMap;

    let server = Server::start(OK);
    let varnish = VarnishPurger::new([server.url()])
        .unwrap()
        .name("default_mapping");
    let purges = Purges::builder()
        .purger(varnish)
        .wait(LANDS)
        .build()
        .unwrap();
    let groups = groups(&["board", "weekly report"]);
    let mut headers = HeaderMap::new();
    render_vendor_tags(&mut headers, &groups, &TagHeaders::new().xkey());
    let rendered = headers.get("xkey").unwrap().to_str().unwrap().to_owned();
    assert!(rendered.starts_with("board h-"), "{rendered}");
    assert_done(block_on(purges.purge(groups)), 2);
    let requests = server.requests();
    assert_eq!(requests[0].header("xkey-purge"), Some(rendered.as_str()));
}

#[test]
fn varnish_soft_purges_custom_headers_mapping_and_splitting() {
    let server = Server::start(OK);
    let soft = VarnishPurger::new([server.url()])
        .unwrap()
        .name("varnish_soft")
        .soft(true)
        .max_header_bytes(9)
        .map_groups(|group| group.replace(':', "-"));
    let purges = Purges::builder().purger(soft).wait(LANDS).build().unwrap();
    assert_done(block_on(purges.purge(groups(&["a:1", "b:2", "c:3"]))), 3);
    let values: Vec<_> = server
        .requests()
        .iter()
        .map(|r| {
            assert_eq!(r.header("xkey-purge"), None);
            r.header("xkey-softpurge").unwrap().to_owned()
        })
        .collect();
    assert_eq!(values, ["a-1 b-2", "c-3"], "9 bytes per header at most");

    let named = VarnishPurger::new([server.url()])
        .unwrap()
        .name("varnish_named")
        .header_names("x-purge", "x-soft")
        .unwrap();
    let purges = Purges::builder().purger(named).wait(LANDS).build().unwrap();
    assert_done(block_on(purges.purge(groups(&["a"]))), 1);
    assert_eq!(
        server.requests().last().unwrap().header("x-purge"),
        Some("a")
    );
}

#[test]
fn fastly_follows_the_batch_purge_api_in_chunks_of_256() {
    let server = Server::start(Mode::Answer(200, r#"{"k0":"108-1391560174-974124"}"#));
    let fastly = FastlyPurger::new("SVC id", "secret-token")
        .base_url(&format!("{}fastly-api", server.url()))
        .unwrap()
        .name("fastly_batches");
    let keys: Vec<String> = (0..600).map(|n| format!("k{n}")).collect();
    let purges = Purges::builder()
        .purger(fastly)
        .wait(LANDS)
        .build()
        .unwrap();
    assert_done(block_on(purges.purge(keys.clone())), 600);
    let requests = server.requests();
    let sizes: Vec<usize> = requests
        .iter()
        .map(|r| r.json()["surrogate_keys"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, [256, 256, 88]);
    let sent: Vec<String> = requests
        .iter()
        .flat_map(|r| {
            let body = r.json();
            body["surrogate_keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k.as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(sent, keys, "every key once, in order");
    for request in &requests {
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/fastly-api/service/SVC%20id/purge");
        assert_eq!(request.header("fastly-key"), Some("secret-token"));
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_eq!(request.header("accept"), Some("application/json"));
        assert_eq!(request.header("fastly-soft-purge"), None);
        assert_eq!(
            request.json().as_object().unwrap().len(),
            1,
            "only surrogate_keys"
        );
    }
}

#[test]
fn fastly_soft_purge_sets_its_header() {
    let server = Server::start(OK);
    let fastly = FastlyPurger::new("svc", "t")
        .base_url(&server.url())
        .unwrap()
        .soft(true)
        .map_groups(|group| format!("app-{group}"))
        .name("fastly_soft");
    let purges = Purges::builder()
        .purger(fastly)
        .wait(LANDS)
        .build()
        .unwrap();
    assert_done(block_on(purges.purge(groups(&["summary"]))), 1);
    let request = &server.requests()[0];
    assert_eq!(request.path, "/service/svc/purge");
    assert_eq!(request.header("fastly-soft-purge"), Some("1"));
    assert_eq!(
        request.json(),
        serde_json::json!({"surrogate_keys": ["app-summary"]})
    );
}

#[test]
fn cloudflare_follows_purge_cache_by_tags_in_chunks_of_100() {
    let server = Server::start(Mode::Answer(
        200,
        r#"{"success":true,"errors":[],"messages":[],"result":{"id":"x"}}"#,
    ));
    let cloudflare = CloudflarePurger::new("zone1", "cf-token")
        .base_url(&server.url())
        .unwrap()
        .name("cloudflare_batches");
    let tags: Vec<String> = (0..250).map(|n| format!("t{n}")).collect();
    let purges = Purges::builder()
        .purger(cloudflare)
        .wait(LANDS)
        .build()
        .unwrap();
    assert_done(block_on(purges.purge(tags.clone())), 250);
    let requests = server.requests();
    let bodies: Vec<serde_json::Value> = requests.iter().map(Recorded::json).collect();
    let sizes: Vec<usize> = bodies
        .iter()
        .map(|b| b["tags"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, [100, 100, 50]);
    assert_eq!(bodies[2], serde_json::json!({"tags": tags[200..]}));
    for request in &requests {
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/client/v4/zones/zone1/purge_cache");
        assert_eq!(request.header("authorization"), Some("Bearer cf-token"));
        assert_eq!(request.header("content-type"), Some("application/json"));
    }
}

#[test]
fn error_answers_are_failures_even_a_2xx_saying_success_false() {
    metrics();
    let refused = Server::start(Mode::Answer(
        200,
        r#"{"success":false,"errors":[{"code":1}]}"#,
    ));
    let cloudflare = CloudflarePurger::new("z", "t")
        .base_url(&refused.url())
        .unwrap()
        .name("cloudflare_success_false");
    let broken = Server::start(Mode::Answer(503, "backend fetch failed"));
    let varnish = VarnishPurger::new([broken.url()])
        .unwrap()
        .name("varnish_503");
    let purges = Purges::builder()
        .purger(cloudflare)
        .purger(varnish)
        .wait(ms(150))
        .backoff(ms(20), ms(20))
        .build()
        .unwrap();
    let outcome = block_on(purges.purge(groups(&["a"])));
    assert_eq!((outcome.purged, outcome.pending), (0, 2));
    for (name, stats) in purges.purger_stats() {
        assert!(stats.failed >= 2, "{name}: {stats:?}");
        assert_eq!((stats.succeeded, stats.pending), (0, 1), "{name}");
    }
    let rendered = metrics().render();
    for purger in ["cloudflare_success_false", "varnish_503"] {
        let failed =
            format!(r#"actix_conditional_purges_total{{purger="{purger}",outcome="failed"}}"#);
        assert!(rendered.contains(&failed), "{failed} in\n{rendered}");
        let pending = format!(r#"actix_conditional_purges_pending{{purger="{purger}"}} 1"#);
        assert!(rendered.contains(&pending), "{pending} in\n{rendered}");
    }
}

#[test]
fn with_the_server_down_the_caller_waits_only_wait_and_the_purge_lands_when_it_is_back() {
    metrics();
    let addr = free_addr();
    let varnish = VarnishPurger::new([format!("http://{addr}/")])
        .unwrap()
        .name("varnish_down");
    let purges = Purges::builder()
        .purger(varnish)
        .timeout(ms(200))
        .wait(ms(300))
        .backoff(ms(20), ms(80))
        .build()
        .unwrap();
    let started = Instant::now();
    let outcome = block_on(purges.purge(groups(&["challenges"])));
    let waited = started.elapsed();
    assert!(waited >= ms(300) && waited < ms(600), "waited {waited:?}");
    assert_eq!(
        (outcome.purged, outcome.pending, outcome.dropped),
        (0, 1, 0)
    );
    let stats = purges.stats();
    assert!(stats.failed >= 2, "connection refused, retried: {stats:?}");
    assert_eq!(stats.pending, 1);

    // A second write for the same group meanwhile coalesces with the queued one (or, had it
    // arrived during an attempt, merges with it when that attempt fails).
    let outcome = block_on(purges.purge(groups(&["challenges"])));
    assert_eq!(outcome.pending, 1);
    while purges.stats().pending != 1 {
        assert!(started.elapsed() < Duration::from_secs(5), "never merged");
        std::thread::sleep(ms(1));
    }

    let server = Server::start_on(addr, OK);
    while purges.stats().pending != 0 {
        assert!(started.elapsed() < Duration::from_secs(5), "never landed");
        std::thread::sleep(ms(5));
    }
    let requests = server.requests();
    assert_eq!(requests.len(), 1, "one purge for both writes: {requests:?}");
    assert_eq!(requests[0].header("xkey-purge"), Some("challenges"));
    let stats = purges.stats();
    assert_eq!((stats.succeeded, stats.recovered), (1, 1));
    let rendered = metrics().render();
    let retried = r#"actix_conditional_purges_total{purger="varnish_down",outcome="retried"} 1"#;
    assert!(rendered.contains(retried), "{retried} in\n{rendered}");
    assert!(rendered.contains(r#"actix_conditional_purges_pending{purger="varnish_down"} 0"#));

    // Healthy again: the next purge lands within the caller's wait.
    assert_done(block_on(purges.purge(groups(&["challenge:7"]))), 1);
}

#[test]
fn a_server_that_never_answers_times_the_attempt_out() {
    let server = Server::start(Mode::Hang);
    let fastly = FastlyPurger::new("svc", "t")
        .base_url(&server.url())
        .unwrap()
        .name("fastly_hangs");
    let purges = Purges::builder()
        .purger(fastly)
        .timeout(ms(100))
        .backoff(ms(10), ms(10))
        .wait(ms(400))
        .build()
        .unwrap();
    let started = Instant::now();
    let outcome = block_on(purges.purge(groups(&["a"])));
    let waited = started.elapsed();
    assert!(waited >= ms(400) && waited < ms(700), "waited {waited:?}");
    assert_eq!(outcome.pending, 1);
    let failed = purges.stats().failed;
    // 100 ms per attempt + 10 ms backoff: three or four attempts timed out in 400 ms.
    assert!((2..=4).contains(&failed), "{failed} timed-out attempts");
    assert!(server.requests().is_empty());
}

#[test]
fn the_queue_bound_drops_loudly_and_counts() {
    metrics();
    let addr = free_addr();
    let varnish = VarnishPurger::new([format!("http://{addr}/")])
        .unwrap()
        .name("varnish_full");
    let purges = Purges::builder()
        .purger(varnish)
        .max_pending(3)
        .wait(ms(50))
        // Attempts at about 0, 200, 400 ms: the second call below (about 50 ms) finds the
        // batch queued, not in flight, so `a` coalesces.
        .backoff(ms(200), ms(200))
        .build()
        .unwrap();
    let outcome = block_on(purges.purge(groups(&["a", "b", "c", "d", "e"])));
    assert_eq!((outcome.pending, outcome.dropped), (3, 2));
    let outcome = block_on(purges.purge(groups(&["a", "f", "bad\u{7}group"])));
    assert_eq!(
        (outcome.pending, outcome.dropped),
        (1, 2),
        "a coalesced; f full; bad invalid"
    );
    let stats = purges.stats();
    assert_eq!((stats.pending, stats.dropped), (3, 4));
    let rendered = metrics().render();
    let dropped = r#"actix_conditional_purges_dropped_total{purger="varnish_full"} 4"#;
    assert!(rendered.contains(dropped), "{dropped} in\n{rendered}");

    // What was kept lands once the server is up.
    let server = Server::start_on(addr, OK);
    let started = Instant::now();
    while purges.stats().pending != 0 {
        assert!(started.elapsed() < Duration::from_secs(5), "never landed");
        std::thread::sleep(ms(5));
    }
    let sent: Vec<_> = server
        .requests()
        .iter()
        .map(|r| r.header("xkey-purge").unwrap().to_owned())
        .collect();
    assert_eq!(sent, ["a b c"]);
}
