//! The viewsets example served on a real port over a fresh SQLite file of its own, removed
//! (with its WAL files) when dropped. The including test declares
//! `#[path = "../examples/viewsets.rs"] mod viewsets;` and `#[path = "common/http.rs"] mod http;`.
#![allow(dead_code)] // Each test binary uses a different part of this module.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::{http, viewsets};

/// A running example; its caches are named after the test, so metrics stay apart.
pub(crate) struct Example {
    // Dropped in declaration order: the server stops before its database is removed.
    pub(crate) server: http::Server,
    pub(crate) path: PathBuf,
}

impl Example {
    pub(crate) fn start(test: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "example-{test}-{}-{}.sqlite3",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let db = viewsets::open_database(&path).expect("database");
        let caches = viewsets::caches_named(
            &db,
            &format!("challenges-{test}"),
            &format!("summary-{test}"),
        );
        let server = http::Server::start(move || viewsets::app_with_caches(caches.clone()));
        Self { server, path }
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.path.display()));
        }
    }
}
