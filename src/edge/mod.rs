//! The edge: caches downstream of the application (Varnish, CDNs, nginx) and how the
//! application keeps them fresh.
//!
//! - [`purge`]: hand invalidated cache groups to purgers (Varnish xkey, Fastly, Cloudflare, or
//!   your own), with timeouts, retries with backoff, metrics, and a bound on how long a
//!   mutation waits.

pub mod purge;
