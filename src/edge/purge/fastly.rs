//! [`FastlyPurger`]: Fastly's batch purge by surrogate key.
//!
//! API followed: Fastly API reference, Purging, "Purge multiple surrogate key tags"
//! (`POST /service/{service_id}/purge`, JSON body `{"surrogate_keys": [...]}`, token in
//! `Fastly-Key`, `Fastly-Soft-Purge: 1` for a soft purge; "Up to 256 surrogate keys can be
//! purged in one batch request"; default server `https://api.fastly.com`).

use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::http;
use super::purger::{GroupMap, mapped};
use super::{PurgeError, Purger};
use crate::edge::{Vendor, vendor_tag};

/// Fastly's documented maximum number of keys per batch purge.
const MAX_KEYS_PER_REQUEST: usize = 256;

/// Purges groups from a Fastly service by surrogate key (the groups as `Surrogate-Key` tags).
///
/// ```no_run
/// use actix_conditional::edge::purge::{FastlyPurger, Purges};
///
/// let fastly = FastlyPurger::new("SU1Z0isxPaozGVKXdv0eY", std::env::var("FASTLY_KEY").unwrap())
///     .soft(true); // mark stale rather than evict
/// let purges = Purges::builder().purger(fastly).build().unwrap();
/// ```
#[derive(Clone)]
pub struct FastlyPurger {
    name: String,
    base: String,
    service_id: String,
    token: String,
    soft: bool,
    max_keys: usize,
    map: GroupMap,
    client: reqwest::Client,
}

impl std::fmt::Debug for FastlyPurger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastlyPurger")
            .field("name", &self.name)
            .field("base", &self.base)
            .field("service_id", &self.service_id)
            .field("token", &"<redacted>")
            .field("soft", &self.soft)
            .field("max_keys", &self.max_keys)
            .finish_non_exhaustive()
    }
}

impl FastlyPurger {
    /// A purger for service `service_id`, authenticated by API token `api_token` (a token
    /// with the `purge_select` scope is enough). Named `fastly`, hard purges.
    pub fn new(service_id: impl Into<String>, api_token: impl Into<String>) -> Self {
        Self {
            name: "fastly".into(),
            base: "https://api.fastly.com".into(),
            service_id: service_id.into(),
            token: api_token.into(),
            soft: false,
            max_keys: MAX_KEYS_PER_REQUEST,
            // By default a group is purged under the tag the `Edge` renders for it
            // (`vendor_tag`): the same token, hashed where the vendor cannot take it.
            map: Arc::new(|group: &str| vendor_tag(group, Vendor::SurrogateKey)),
            client: http::client(),
        }
    }

    /// Soft purges (`Fastly-Soft-Purge: 1`: objects are marked stale, so `stale-while-revalidate`
    /// and `stale-if-error` can still serve them) instead of hard ones.
    #[must_use]
    pub fn soft(mut self, soft: bool) -> Self {
        self.soft = soft;
        self
    }

    /// The API's base URL (default `https://api.fastly.com`); tests point it at a local server.
    ///
    /// # Errors
    /// [`PurgeError::Config`] when it is not an http(s) URL.
    pub fn base_url(mut self, base: &str) -> Result<Self, PurgeError> {
        http::join(base, &[])?;
        self.base = base.to_owned();
        Ok(self)
    }

    /// Keys per request (default and most: 256, Fastly's documented limit); more are split.
    #[must_use]
    pub fn max_keys_per_request(mut self, max: usize) -> Self {
        self.max_keys = max.clamp(1, MAX_KEYS_PER_REQUEST);
        self
    }

    /// The name in metrics and logs (default `fastly`).
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Maps each group to its surrogate key (default: `vendor_tag(group, Vendor::SurrogateKey)`,
    /// the tag an [`Edge`](crate::edge::Edge) rendering `Surrogate-Key` gives it).
    #[must_use]
    pub fn map_groups(mut self, map: impl Fn(&str) -> String + Send + Sync + 'static) -> Self {
        self.map = Arc::new(map);
        self
    }

    async fn attempt(&self, groups: &[String]) -> Result<(), PurgeError> {
        let url = http::join(&self.base, &["service", &self.service_id, "purge"])?;
        let keys = mapped(&self.map, groups);
        // One request after the other: a failure stops the attempt, and the retry sends the
        // whole batch again (a purge is idempotent).
        for chunk in keys.chunks(self.max_keys) {
            let body = serde_json::json!({ "surrogate_keys": chunk });
            let mut request = self
                .client
                .post(url.clone())
                .header("fastly-key", &self.token)
                .header("accept", "application/json")
                .header("content-type", "application/json")
                .body(body.to_string());
            if self.soft {
                request = request.header("fastly-soft-purge", "1");
            }
            http::send(&url, request).await?;
        }
        Ok(())
    }
}

impl Purger for FastlyPurger {
    fn name(&self) -> &str {
        &self.name
    }

    fn purge<'a>(&'a self, groups: &'a [String]) -> BoxFuture<'a, Result<(), PurgeError>> {
        Box::pin(self.attempt(groups))
    }
}
