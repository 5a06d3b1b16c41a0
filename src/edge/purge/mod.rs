//! Purges: tell the caches downstream (Varnish, a CDN) to drop what a mutation invalidated.
//!
//! ```
//! use std::future::Future;
//! use std::pin::Pin;
//! use std::sync::{Arc, Mutex};
//! use std::time::Duration;
//! use actix_conditional::edge::purge::{PurgeError, Purger, Purges};
//!
//! /// A purger of your own: here it remembers what it was asked to purge.
//! struct Recorder(Arc<Mutex<Vec<String>>>);
//!
//! impl Purger for Recorder {
//!     fn name(&self) -> &str {
//!         "recorder"
//!     }
//!     fn purge<'a>(
//!         &'a self,
//!         groups: &'a [String],
//!     ) -> Pin<Box<dyn Future<Output = Result<(), PurgeError>> + Send + 'a>> {
//!         Box::pin(async move {
//!             self.0.lock().unwrap().extend_from_slice(groups);
//!             Ok(())
//!         })
//!     }
//! }
//!
//! /// A destination that is down.
//! struct Down;
//!
//! impl Purger for Down {
//!     fn name(&self) -> &str {
//!         "down"
//!     }
//!     fn purge<'a>(
//!         &'a self,
//!         _groups: &'a [String],
//!     ) -> Pin<Box<dyn Future<Output = Result<(), PurgeError>> + Send + 'a>> {
//!         Box::pin(async { Err(PurgeError::Other("connection refused".into())) })
//!     }
//! }
//!
//! # actix_web::rt::System::new().block_on(async {
//! let seen = Arc::new(Mutex::new(Vec::new()));
//! // Build once, clone into every worker.
//! let purges = Purges::builder()
//!     .purger(Recorder(seen.clone()))
//!     .purger(Down)
//!     .wait(Duration::from_millis(100)) // what a mutation waits at most
//!     .build()
//!     .unwrap();
//!
//! let outcome = purges.purge(vec!["challenges".into(), "challenge:42".into()]).await;
//! assert_eq!(*seen.lock().unwrap(), ["challenges", "challenge:42"]);
//! // The recorder acknowledged both groups; `Down` did not within 100 ms.
//! assert_eq!((outcome.purged, outcome.pending, outcome.dropped), (2, 2, 0));
//! assert!(!outcome.is_done());
//! // Its two groups stay queued and are retried with backoff while the process lives.
//! let stats = purges.stats();
//! assert!(stats.failed >= 1);
//! assert_eq!(stats.pending, 2);
//! # });
//! ```
//!
//! # Pieces
//!
//! - [`Purger`]: one destination, one attempt per call. With the `purge` feature:
//!   `VarnishPurger` (an HTTP `PURGE` carrying `xkey-purge`, for varnish-modules' xkey),
//!   `FastlyPurger` and `CloudflarePurger` (their purge-by-tag APIs).
//! - [`Purges`]: the dispatcher. [`Purges::purge`] queues the groups for every purger and
//!   resolves when all of them acknowledged, or after [`wait`](PurgesBuilder::wait), whichever
//!   comes first ([`PurgeOutcome`] says which). Nothing is dropped silently: what did not land
//!   is retried with exponential backoff on a dedicated thread while the process lives;
//!   identical pending groups coalesce, so the bounded queue fills only with distinct groups;
//!   past the bound a group is dropped with an error event and counted.
//! - Observability: [`Purges::stats`] ([`PurgeStats`]), the metrics
//!   `actix_conditional_purges_total{purger, outcome="ok|retried|failed"}`,
//!   `actix_conditional_purges_dropped_total{purger}` and the gauge
//!   `actix_conditional_purges_pending{purger}`, and `tracing` events: a warning per failed
//!   attempt, an info event when a purge lands after failures, an error per dropped group.
//!
//! Purges are idempotent, so a batch that failed anywhere is retried whole.

mod dispatcher;
mod purger;
mod queue;
mod stats;

#[cfg(feature = "purge")]
mod cloudflare;
#[cfg(feature = "purge")]
mod fastly;
#[cfg(feature = "purge")]
mod http;
#[cfg(feature = "purge")]
mod varnish;

#[cfg(feature = "purge")]
#[cfg_attr(docsrs, doc(cfg(feature = "purge")))]
pub use cloudflare::CloudflarePurger;
pub use dispatcher::{PurgeOutcome, Purges, PurgesBuilder};
#[cfg(feature = "purge")]
#[cfg_attr(docsrs, doc(cfg(feature = "purge")))]
pub use fastly::FastlyPurger;
pub use purger::{GroupMap, PurgeError, Purger};
pub use stats::PurgeStats;
#[cfg(feature = "purge")]
#[cfg_attr(docsrs, doc(cfg(feature = "purge")))]
pub use varnish::VarnishPurger;
