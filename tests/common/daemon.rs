//! What the real-cache helpers (`varnish.rs`, `squid.rs`) share: finding the program, a free
//! port, a temporary directory, and a child process that is stopped when dropped and whose
//! logs are printed when a test fails.
//!
//! A missing program fails the test: under CI (`CI` set, where `.ci/run` installs it) always,
//! elsewhere unless the user opts out with `ACTIX_CONDITIONAL_SKIP` (see `missing.rs`).
#![allow(dead_code)] // Each test binary uses a different part of this module.

#[path = "missing.rs"]
mod missing;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The first of `candidates` that exists; `None` (said loudly) when none does and the user
/// opted out of `package` with `ACTIX_CONDITIONAL_SKIP`; a panic otherwise.
pub(crate) fn program(package: &str, candidates: &[&str]) -> Option<PathBuf> {
    if let Some(found) = candidates.iter().map(Path::new).find(|p| p.exists()) {
        return Some(found.to_owned());
    }
    missing::tool_missing(package, &format!("apt-get install -y {package}"));
    None
}

/// A port nothing listens on right now.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A directory under the temp dir, removed on drop.
#[derive(Debug)]
pub(crate) struct TempDir {
    pub(crate) path: PathBuf,
}

impl TempDir {
    pub(crate) fn new(test: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "edge-{test}-{}-{}",
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

/// A server process: `name` for messages, `logs` printed if a test panics while it runs.
#[derive(Debug)]
pub(crate) struct Daemon {
    pub(crate) name: &'static str,
    pub(crate) child: Option<Child>,
    pub(crate) logs: Vec<PathBuf>,
}

impl Daemon {
    pub(crate) fn new(name: &'static str, logs: Vec<PathBuf>) -> Self {
        Self {
            name,
            child: None,
            logs,
        }
    }

    /// Spawns `command` and waits (at most 20 s) until `port` accepts connections.
    pub(crate) fn spawn(&mut self, mut command: Command, port: u16) {
        assert!(self.child.is_none(), "{} already running", self.name);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("{} does not start: {e}", self.name));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!("{} exited ({status}):\n{}", self.name, self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "{} did not listen on {port} in 20 s:\n{}",
                self.name,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The process id, while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGTERM (a clean stop: the server closes its port), then SIGKILL if it still runs
    /// after 5 s; waits for it either way.
    pub(crate) fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        signal(child.id(), "-TERM");
        let deadline = Instant::now() + Duration::from_secs(5);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.wait();
    }

    /// Every log file, each under a heading.
    pub(crate) fn logs(&self) -> String {
        let mut out = String::new();
        for log in &self.logs {
            let text = std::fs::read_to_string(log).unwrap_or_else(|e| format!("({e})"));
            // The tail: enough to see why, short enough to read.
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(200)..];
            out.push_str(&format!(
                "---- {} {} ----\n{}\n",
                self.name,
                log.display(),
                tail.join("\n")
            ));
        }
        out
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() && self.child.is_some() {
            eprintln!("{}", self.logs());
        }
        self.stop();
    }
}

/// `kill <signal> <pid>`, for a process this test started.
pub(crate) fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status();
}

/// The children of `pid` (`pgrep -P`), to pause a server's worker process with its parent.
pub(crate) fn children(pid: u32) -> Vec<u32> {
    let out = Command::new("pgrep")
        .args(["-P", &pid.to_string()])
        .output()
        .expect("pgrep runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}
