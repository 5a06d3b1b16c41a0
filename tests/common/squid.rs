//! A real `squid` (Squid 5) as a reverse proxy on 127.0.0.1 and a free port, in front of one
//! backend port, running `docs/edge/squid.conf` as shipped (only its ports and its directory
//! replaced). Memory cache only; it is stopped when dropped, and its logs (`cache.log`,
//! `access.log`) are printed if the test fails.
//!
//! Runs `squid -N` (foreground, one process). Started as root, Squid switches to its
//! `cache_effective_user` (Debian: `proxy`) before it opens its logs, so its directory is made
//! world-writable. Needs `common/daemon.rs` as `daemon`.
#![allow(dead_code)] // Each test binary uses a different part of this module.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::daemon::{self, Daemon};

/// The configuration the docs ship.
pub(crate) const CONF: &str = "docs/edge/squid.conf";

/// A `squid` child.
#[derive(Debug)]
pub(crate) struct Squid {
    daemon: Daemon,
    root: PathBuf,
    port: u16,
}

impl Squid {
    /// Starts Squid in front of `127.0.0.1:{backend}`, its files in `dir`; `None` only if it
    /// is not installed and the user opted out (see `daemon::program`).
    pub(crate) fn start(dir: &Path, backend: u16) -> Option<Self> {
        let program = daemon::program("squid", &["/usr/sbin/squid"])?;
        let template = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(CONF))
            .expect("the shipped squid.conf");
        for placeholder in ["127.0.0.1:8000 ", "parent 8080 ", "/var/lib/squid-edge"] {
            assert!(
                template.contains(placeholder),
                "squid.conf has {placeholder:?}"
            );
        }
        let root = dir.join("squid");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o777)).unwrap();
        let port = daemon::free_port();
        let conf = template
            .replace("127.0.0.1:8000 ", &format!("127.0.0.1:{port} "))
            .replace("parent 8080 ", &format!("parent {backend} "))
            .replace("/var/lib/squid-edge", &root.display().to_string());
        let conf_path = root.join("squid.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let out = std::fs::File::create(root.join("stderr.log")).unwrap();
        let mut daemon = Daemon::new(
            "squid",
            vec![
                root.join("stderr.log"),
                root.join("cache.log"),
                root.join("access.log"),
            ],
        );
        let mut command = Command::new(program);
        command
            .arg("-N")
            .arg("-f")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        daemon.spawn(command, port);
        Some(Self { daemon, root, port })
    }

    /// The port clients connect to.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Squid's access log so far, one line per request: `… TCP_MEM_HIT/200 … GET http://…`.
    pub(crate) fn access_log(&self) -> Vec<String> {
        std::fs::read_to_string(self.root.join("access.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}
