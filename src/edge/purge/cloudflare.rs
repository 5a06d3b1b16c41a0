//! [`CloudflarePurger`]: Cloudflare's purge by cache-tags.
//!
//! API followed: Cloudflare API reference "Purge Cached Content"
//! (`POST /client/v4/zones/{zone_id}/purge_cache`, body `{"tags": [...]}`, an API token as
//! `Authorization: Bearer …`; the answer's JSON carries `"success"`), and the Cloudflare cache
//! docs "Purge cache" (purge limits: at most 100 tags, hostnames or prefixes per request on
//! every plan; older docs said 30) and "Purge cache by cache-tags".

use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::http;
use super::purger::{GroupMap, mapped};
use super::{PurgeError, Purger};
use crate::edge::{Vendor, vendor_tag};

/// Cloudflare's documented maximum operations (tags) per purge request.
const MAX_TAGS_PER_REQUEST: usize = 100;

/// Purges groups from a Cloudflare zone by cache-tag (the groups as `Cache-Tag` values).
///
/// ```no_run
/// use actix_conditional::edge::purge::{CloudflarePurger, Purges};
///
/// let token = std::env::var("CLOUDFLARE_API_TOKEN").unwrap(); // "Cache Purge" permission
/// let cloudflare = CloudflarePurger::new("023e105f4ecef8ad9ca31a8372d0c353", token);
/// let purges = Purges::builder().purger(cloudflare).build().unwrap();
/// ```
#[derive(Clone)]
pub struct CloudflarePurger {
    name: String,
    base: String,
    zone_id: String,
    token: String,
    max_tags: usize,
    map: GroupMap,
    client: reqwest::Client,
}

impl std::fmt::Debug for CloudflarePurger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudflarePurger")
            .field("name", &self.name)
            .field("base", &self.base)
            .field("zone_id", &self.zone_id)
            .field("token", &"<redacted>")
            .field("max_tags", &self.max_tags)
            .finish_non_exhaustive()
    }
}

impl CloudflarePurger {
    /// A purger for zone `zone_id`, authenticated by an API token with the Cache Purge
    /// permission. Named `cloudflare`.
    pub fn new(zone_id: impl Into<String>, api_token: impl Into<String>) -> Self {
        Self {
            name: "cloudflare".into(),
            base: "https://api.cloudflare.com".into(),
            zone_id: zone_id.into(),
            token: api_token.into(),
            max_tags: MAX_TAGS_PER_REQUEST,
            // By default a group is purged under the tag the `Edge` renders for it
            // (`vendor_tag`): the same token, hashed where the vendor cannot take it.
            map: Arc::new(|group: &str| vendor_tag(group, Vendor::CacheTag)),
            client: http::client(),
        }
    }

    /// The API's base URL (default `https://api.cloudflare.com`); tests point it at a local
    /// server.
    ///
    /// # Errors
    /// [`PurgeError::Config`] when it is not an http(s) URL.
    pub fn base_url(mut self, base: &str) -> Result<Self, PurgeError> {
        http::join(base, &[])?;
        self.base = base.to_owned();
        Ok(self)
    }

    /// Tags per request (default and most: 100, the documented limit); more are split.
    #[must_use]
    pub fn max_tags_per_request(mut self, max: usize) -> Self {
        self.max_tags = max.clamp(1, MAX_TAGS_PER_REQUEST);
        self
    }

    /// The name in metrics and logs (default `cloudflare`).
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Maps each group to its cache-tag (default: `vendor_tag(group, Vendor::CacheTag)`, the tag
    /// an [`Edge`](crate::edge::Edge) rendering `Cache-Tag` gives it).
    #[must_use]
    pub fn map_groups(mut self, map: impl Fn(&str) -> String + Send + Sync + 'static) -> Self {
        self.map = Arc::new(map);
        self
    }

    async fn attempt(&self, groups: &[String]) -> Result<(), PurgeError> {
        let url = http::join(
            &self.base,
            &["client", "v4", "zones", &self.zone_id, "purge_cache"],
        )?;
        let tags = mapped(&self.map, groups);
        for chunk in tags.chunks(self.max_tags) {
            let body = serde_json::json!({ "tags": chunk });
            let request = self
                .client
                .post(url.clone())
                .bearer_auth(&self.token)
                .header("content-type", "application/json")
                .body(body.to_string());
            let answer = http::send(&url, request).await?;
            // A 2xx whose envelope says `"success": false` failed all the same.
            let envelope: Option<serde_json::Value> = serde_json::from_str(&answer).ok();
            let success = envelope.as_ref().and_then(|e| e.get("success"));
            if success == Some(&serde_json::Value::Bool(false)) {
                return Err(PurgeError::Status {
                    target: url.to_string(),
                    status: 200,
                    body: http::excerpt(&answer),
                });
            }
        }
        Ok(())
    }
}

impl Purger for CloudflarePurger {
    fn name(&self) -> &str {
        &self.name
    }

    fn purge<'a>(&'a self, groups: &'a [String]) -> BoxFuture<'a, Result<(), PurgeError>> {
        Box::pin(self.attempt(groups))
    }
}
