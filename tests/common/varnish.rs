//! A real `varnishd` (Varnish 7 with varnish-modules' xkey) on 127.0.0.1 and a free port, in
//! front of one backend port, running `docs/edge/varnish.vcl` as shipped (only the backend
//! port replaced). Its work directory (`-n`) lives in the test's temp dir; it can be stopped,
//! paused and restarted on the same port; it is stopped when dropped, and its logs (its own
//! output and `varnishlog`) are printed if the test fails.
//!
//! Runs `varnishd -F` (foreground: the manager, and its one child process serving requests)
//! with `-j none` (no privilege separation: the test may run as root, and the jail would need
//! the `varnish` user to read the temp dir), `-T none` (no management port) and 32 MB of
//! memory storage. Needs `common/daemon.rs` as `daemon`.
#![allow(dead_code)] // Each test binary uses a different part of this module.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::daemon::{self, Daemon};

/// The VCL the docs ship.
pub(crate) const VCL: &str = "docs/edge/varnish.vcl";

/// A `varnishd` child.
#[derive(Debug)]
pub(crate) struct Varnish {
    daemon: Daemon,
    program: PathBuf,
    workdir: PathBuf,
    vcl: PathBuf,
    port: u16,
}

impl Varnish {
    /// Starts Varnish in front of `127.0.0.1:{backend}`, its files in `dir`; `None` only if
    /// it is not installed and the user opted out (see `daemon::program`).
    pub(crate) fn start(dir: &Path, backend: u16) -> Option<Self> {
        Self::start_on(dir, backend, daemon::free_port())
    }

    /// [`Self::start`] on a given port (the app must know where to send its purges before
    /// Varnish, which must know the app's port, starts).
    pub(crate) fn start_on(dir: &Path, backend: u16, port: u16) -> Option<Self> {
        let program = daemon::program("varnish", &["/usr/sbin/varnishd"])?;
        let template = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(VCL))
            .expect("the shipped VCL");
        assert_eq!(
            template.matches(".port = \"8080\";").count(),
            1,
            "the VCL names its backend port once"
        );
        let root = dir.join("varnish");
        std::fs::create_dir_all(&root).unwrap();
        let vcl = root.join("edge.vcl");
        std::fs::write(
            &vcl,
            template.replace(".port = \"8080\";", &format!(".port = \"{backend}\";")),
        )
        .unwrap();
        let log = root.join("varnishd.log");
        let mut varnish = Self {
            daemon: Daemon::new("varnishd", vec![log]),
            program,
            workdir: root.join("work"),
            vcl,
            port,
        };
        varnish.restart();
        Some(varnish)
    }

    /// The port clients (and purgers) connect to.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:{port}`: where the app sends its `PURGE` requests.
    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts it (again) on the same port, with an empty cache, and waits until it listens.
    pub(crate) fn restart(&mut self) {
        self.stop();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.daemon.logs[0])
            .unwrap();
        let mut command = Command::new(&self.program);
        command
            .arg("-F")
            .args(["-j", "none", "-T", "none", "-s", "malloc,32m"])
            .arg("-n")
            .arg(&self.workdir)
            .arg("-a")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("-f")
            .arg(&self.vcl)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.daemon.spawn(command, self.port);
    }

    /// Stops it (SIGTERM: the manager stops its child and closes the port).
    pub(crate) fn stop(&mut self) {
        // A paused (SIGSTOPped) child would ignore the stop and outlive the test.
        if self.daemon.pid().is_some() {
            self.resume();
        }
        self.daemon.stop();
        // The child may close the listening socket a moment after the manager exits.
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(
                Instant::now() < deadline,
                "varnishd still listens after stop"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Freezes it (SIGSTOP to the manager and its child): connections are accepted by the
    /// kernel, nothing answers, the cache keeps its objects.
    pub(crate) fn pause(&self) {
        self.signal_all("-STOP");
    }

    /// Undoes [`Self::pause`].
    pub(crate) fn resume(&self) {
        self.signal_all("-CONT");
    }

    fn signal_all(&self, signal: &str) {
        let pid = self.daemon.pid().expect("varnishd running");
        for child in daemon::children(pid) {
            daemon::signal(child, signal);
        }
        daemon::signal(pid, signal);
    }

    /// What `varnishlog` holds for the requests with method `method` (grouped by request),
    /// from the running child's shared memory log.
    pub(crate) fn log_of(&self, method: &str) -> String {
        let out = Command::new("varnishlog")
            .arg("-n")
            .arg(&self.workdir)
            .args(["-d", "-g", "request", "-q"])
            .arg(format!("ReqMethod eq \"{method}\""))
            .output()
            .expect("varnishlog runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The whole shared memory log (the tail of it), for failure messages.
    pub(crate) fn log(&self) -> String {
        let out = Command::new("varnishlog")
            .arg("-n")
            .arg(&self.workdir)
            .args(["-d", "-g", "request"])
            .output()
            .expect("varnishlog runs");
        let text = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(400)..].join("\n")
    }
}

impl Drop for Varnish {
    fn drop(&mut self) {
        if self.daemon.child.is_none() {
            return;
        }
        self.resume();
        if std::thread::panicking() {
            eprintln!("---- varnishlog ----\n{}", self.log());
            eprintln!("{}", self.daemon.logs());
        }
        self.daemon.stop();
    }
}
