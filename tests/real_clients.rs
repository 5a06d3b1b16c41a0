//! The viewsets example behind real clients: headless Chromium (its HTTP cache revalidates
//! with `If-None-Match` and gets a 304) and nginx as a shared cache (`proxy_cache`: stores
//! reads for their `max-age`, revalidates expired ones with `If-None-Match`, never stores a
//! mutation's answer or one given to a request with `Authorization`).
//!
//! The app is `examples/viewsets.rs` on a temporary SQLite file, on a real port, wrapped in a
//! recorder that logs what reached it, so each test can tell what the client or the proxy
//! answered by itself. Both tools come from Debian (`apt-get install -y chromium nginx`, which
//! `.ci/run` does); without them the tests fail, unless the user opts out outside CI with
//! `ACTIX_CONDITIONAL_SKIP=nginx,chromium`.

use std::io::Read as _;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_conditional::CachePolicy;
use actix_conditional::response_cache::SectionsCacheBuilder;
use actix_web::Error;
use actix_web::dev::ServiceRequest;
use actix_web::http::header::IF_NONE_MATCH;
use actix_web::middleware::{Next, from_fn};

#[path = "common/http.rs"]
mod http;
#[path = "common/missing.rs"]
mod missing;

#[path = "../examples/viewsets.rs"]
#[allow(dead_code, unreachable_pub)]
mod viewsets;

/// One request as the app saw it, and its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    method: String,
    path: String,
    if_none_match: bool,
    status: u16,
}

/// The example on a fresh database, logging every request that reaches it.
struct App {
    server: http::Server,
    seen: Arc<Mutex<Vec<Seen>>>,
    dir: TempDir,
}

impl App {
    fn start(test: &str) -> Self {
        Self::start_with(test, |builder| builder)
    }

    fn start_with(
        test: &str,
        configure_summary: impl FnOnce(SectionsCacheBuilder) -> SectionsCacheBuilder,
    ) -> Self {
        let dir = TempDir::new(test);
        let db = viewsets::open_database(dir.path.join("app.sqlite3")).expect("database");
        let caches = viewsets::caches_configured(
            &db,
            &format!("challenges-{test}"),
            &format!("summary-{test}"),
            |builder| builder,
            configure_summary,
        );
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let server = http::Server::start(move || {
            let log = Arc::clone(&log);
            viewsets::app_with_caches(caches.clone()).wrap(from_fn(
                move |req: ServiceRequest, next: Next<_>| {
                    let log = Arc::clone(&log);
                    async move {
                        let method = req.method().to_string();
                        let path = req.path().to_owned();
                        let if_none_match = req.headers().contains_key(IF_NONE_MATCH);
                        let res = next.call(req).await?;
                        log.lock().unwrap().push(Seen {
                            method,
                            path,
                            if_none_match,
                            status: res.status().as_u16(),
                        });
                        Ok::<_, Error>(res)
                    }
                },
            ))
        });
        Self { server, seen, dir }
    }

    fn seen(&self, path: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path == path)
            .cloned()
            .collect()
    }
}

/// A directory under the temp dir, removed on drop.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn new(test: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "real-clients-{test}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("temp dir");
        Self { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The tool's path, or `None` (said loudly) when it is missing and the user opted out of it
/// with `ACTIX_CONDITIONAL_SKIP`; a panic otherwise.
fn tool(name: &str, candidates: &[&str]) -> Option<PathBuf> {
    if let Some(found) = candidates.iter().map(Path::new).find(|p| p.exists()) {
        return Some(found.to_owned());
    }
    missing::tool_missing(name, &format!("apt-get install -y {name}"));
    None
}

/// Kills the child when dropped.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

// ---------------------------------------------------------------------------------------------
// Chromium
// ---------------------------------------------------------------------------------------------

#[test]
fn a_browser_revalidates_with_if_none_match_and_shows_the_data_from_a_304() {
    let Some(chromium) = tool(
        "chromium",
        &["/usr/bin/chromium", "/usr/bin/chromium-browser"],
    ) else {
        return;
    };
    let app = App::start("chromium");
    let url = format!("http://{}/demo", app.server.addr());
    let profile = app.dir.path.join("profile");
    // The flags this machine needs (no network but loopback, no sandbox as root), a fresh
    // profile, and virtual time so the page's two fetches finish before the DOM is dumped.
    let child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=10000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(&url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium starts");
    let mut child = ChildGuard(child);
    let mut stdout = child.0.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut dom = String::new();
        let _ = stdout.read_to_string(&mut dom);
        dom
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    while child.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "chromium did not finish in 90 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let dom = reader.join().unwrap();

    assert!(
        dom.contains(r#"<p id="status">done</p>"#),
        "the page ran: {dom}"
    );
    let shown = |id: &str| {
        let start = dom
            .find(&format!(r#"<output id="{id}">"#))
            .unwrap_or_else(|| panic!("no {id} in {dom}"));
        let rest = &dom[start..];
        let text = &rest[rest.find('>').unwrap() + 1..rest.find("</output>").unwrap()];
        text.to_owned()
    };
    let (first, second) = (shown("first"), shown("second"));
    assert!(first.starts_with("200 uploads=3 "), "{first}");
    assert_eq!(first, second, "the page shows the same data both times");

    let summary = app.seen("/state/summary");
    assert_eq!(summary.len(), 2, "{summary:?}");
    assert_eq!(
        (summary[0].if_none_match, summary[0].status),
        (false, 200),
        "{summary:?}"
    );
    assert_eq!(
        (summary[1].if_none_match, summary[1].status),
        (true, 304),
        "the browser's second fetch is conditional and answered 304: {summary:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// nginx
// ---------------------------------------------------------------------------------------------

/// nginx on a free port in front of `upstream`, configured from `docs/nginx-shared-cache.conf`
/// (the file the docs recommend), with its paths in `dir`.
struct Nginx {
    _child: ChildGuard,
    port: u16,
}

impl Nginx {
    fn start(nginx: &Path, dir: &Path, upstream: u16) -> Self {
        let port = free_port();
        let template = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/nginx-shared-cache.conf"),
        )
        .expect("the documented config");
        let prefix = dir.join("nginx");
        std::fs::create_dir_all(prefix.join("logs")).unwrap();
        let conf = template
            .replace("127.0.0.1:8080", &format!("127.0.0.1:{upstream}"))
            .replace("127.0.0.1:8000", &format!("127.0.0.1:{port}"))
            .replace(
                "/var/cache/nginx/api",
                &prefix.join("cache").display().to_string(),
            );
        // One process (`master_process off`): killing it leaves no orphaned workers.
        let head = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {p}/nginx.pid;\nerror_log {p}/logs/error.log warn;\nevents {{ worker_connections 256; }}\n",
            p = prefix.display()
        );
        let temp = format!(
            "client_body_temp_path {p}/client_body;\nproxy_temp_path {p}/proxy;\nfastcgi_temp_path {p}/fastcgi;\nuwsgi_temp_path {p}/uwsgi;\nscgi_temp_path {p}/scgi;\naccess_log off;\n",
            p = prefix.display()
        );
        let conf = format!("{head}http {{\n{temp}{conf}\n}}\n");
        let conf_path = prefix.join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new(nginx)
            .arg("-p")
            .arg(&prefix)
            .arg("-e")
            .arg(prefix.join("logs/error.log"))
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("nginx starts");
        let mut child = ChildGuard(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            let log = || std::fs::read_to_string(prefix.join("logs/error.log")).unwrap_or_default();
            if let Some(status) = child.0.try_wait().unwrap() {
                panic!("nginx exited ({status}): {}", log());
            }
            assert!(Instant::now() < deadline, "nginx did not listen: {}", log());
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            _child: child,
            port,
        }
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &[u8])],
        body: Option<&str>,
    ) -> http::Response {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut conn = http::Conn::open(addr);
        conn.send(method, path, headers, body)
    }

    fn get(&self, path: &str) -> http::Response {
        self.send("GET", path, &[], None)
    }
}

/// GETs `path` until nginx's copy has expired (its clock counts whole seconds, so two seconds
/// of `max-age` last up to three), and returns the first answer that is not a `HIT`.
fn until_expired(nginx: &Nginx, path: &str) -> http::Response {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let res = nginx.get(path);
        if cache_status(&res) != "HIT" {
            return res;
        }
        assert!(Instant::now() < deadline, "still a HIT after 5 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn cache_status(res: &http::Response) -> &str {
    res.get("x-proxy-cache").unwrap_or("-")
}

#[test]
fn nginx_stores_reads_revalidates_with_if_none_match_and_never_shares_private_or_mutations() {
    let Some(nginx_bin) = tool("nginx", &["/usr/sbin/nginx", "/usr/bin/nginx"]) else {
        return;
    };
    // The summary fresh for two seconds (instead of `max-age=0`, which nginx does not store),
    // so the test can watch an entry expire and be revalidated; two, because nginx's clock
    // counts whole seconds and the HIT right after the MISS must fall inside the lifetime.
    let app = App::start_with("nginx", |builder| {
        builder.cache_control(CachePolicy::revalidate(2))
    });
    let nginx = Nginx::start(&nginx_bin, &app.dir.path, app.server.addr().port());

    // A read with `max-age=60`: stored, then answered by nginx alone.
    let first = nginx.get("/uploads");
    assert_eq!((first.status, cache_status(&first)), (200, "MISS"));
    let second = nginx.get("/uploads");
    assert_eq!((second.status, cache_status(&second)), (200, "HIT"));
    assert_eq!(second.body, first.body);
    assert_eq!(
        app.seen("/uploads").len(),
        1,
        "the app saw the first GET only"
    );

    // `max-age=2, must-revalidate`: stored for two seconds; then nginx revalidates with the ETag
    // it holds, and the app's 304 refreshes its copy (RFC 9111 §4.3.3).
    let first = nginx.get("/state/summary");
    assert_eq!((first.status, cache_status(&first)), (200, "MISS"));
    assert_eq!(cache_status(&nginx.get("/state/summary")), "HIT");
    let again = until_expired(&nginx, "/state/summary");
    assert_eq!((again.status, cache_status(&again)), (200, "REVALIDATED"));
    assert_eq!(
        again.body, first.body,
        "nginx serves its copy, refreshed by the 304"
    );
    let summary = app.seen("/state/summary");
    assert_eq!(
        summary
            .iter()
            .map(|s| (s.if_none_match, s.status))
            .collect::<Vec<_>>(),
        [(false, 200), (true, 304)]
    );

    // Mutations always reach the app, and their answers are never stored.
    let create = |name: &str| {
        nginx.send(
            "POST",
            "/uploads",
            &[],
            Some(&format!(r#"{{"name":"{name}"}}"#)),
        )
    };
    let (a, b) = (create("a.csv"), create("a.csv"));
    assert_eq!((a.status, b.status), (201, 201));
    assert_ne!(
        a.json()["id"],
        b.json()["id"],
        "two rows: both POSTs reached the app"
    );
    assert!(a.cache_control().contains(&"no-store"), "{a:?}");
    // Once the copy expires, a revalidation brings the write: the first one may still be
    // answered 304 from the app's stale bytes while its cache refreshes them in the background
    // (stale-while-revalidate at the origin), then a 200 replaces nginx's copy.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let res = until_expired(&nginx, "/state/summary");
        assert_eq!(res.status, 200);
        if res.json()["core"]["uploads"]["count"] == 5 {
            assert_eq!(cache_status(&res), "EXPIRED", "a 200 replaced the copy");
            break;
        }
        assert_eq!(cache_status(&res), "REVALIDATED", "{res:?}");
        assert!(Instant::now() < deadline, "the write never showed");
    }

    // A request with `Authorization`: passed through, and its answer is `private`, so nginx
    // does not store it: the next anonymous request goes to the app, not to alice's copy.
    let alice = nginx.send(
        "GET",
        "/uploads/1",
        &[("Authorization", b"Bearer alice")],
        None,
    );
    assert_eq!((alice.status, cache_status(&alice)), (200, "BYPASS"));
    assert!(alice.cache_control().contains(&"private"), "{alice:?}");
    let anonymous = nginx.get("/uploads/1");
    assert_eq!((anonymous.status, cache_status(&anonymous)), (200, "MISS"));
    let alice_again = nginx.send(
        "GET",
        "/uploads/1",
        &[("Authorization", b"Bearer alice")],
        None,
    );
    assert_eq!(
        cache_status(&alice_again),
        "BYPASS",
        "never answered from the cache"
    );
    assert_eq!(
        app.seen("/uploads/1").len(),
        3,
        "every one of them reached the app"
    );
}
