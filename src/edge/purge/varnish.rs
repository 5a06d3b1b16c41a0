//! [`VarnishPurger`]: purges by xkey (varnish-modules) with an HTTP `PURGE` request.
//!
//! API followed: the varnish-modules manual page "vmod_xkey - Surrogate keys support for
//! Varnish Cache" (`xkey.purge(STRING keys)` / `xkey.softpurge(STRING keys)`, keys separated by
//! spaces and/or commas, called from `vcl_recv` on a `PURGE` request; the purge header's name
//! is whatever the VCL reads, `xkey-purge` in the module's own example). The VCL should answer
//! 2xx to a purge, whether or not objects matched: anything else counts as a failure.

use std::sync::Arc;

use futures_util::future::{BoxFuture, join_all};

use super::http;
use super::purger::{GroupMap, mapped};
use super::{PurgeError, Purger};
use crate::edge::{Vendor, vendor_tag};

/// Varnish's default `http_req_hdr_len` is 8 KB per request header line; stay well inside.
const DEFAULT_MAX_HEADER_BYTES: usize = 4096;

/// Purges groups from one or more Varnish servers through their xkey VCL.
///
/// Each attempt sends `PURGE <url>` with `xkey-purge: <space-separated keys>` (or
/// `xkey-softpurge` when [`soft`](Self::soft)) to every address; it succeeds when every address
/// answered 2xx (a retry purges the ones that already succeeded again: harmless). Keys longer
/// than one header allows are split over several requests.
///
/// ```no_run
/// use actix_conditional::edge::purge::{Purges, VarnishPurger};
///
/// let varnish = VarnishPurger::new(["http://10.0.0.5:6081/", "http://10.0.0.6:6081/"])
///     .unwrap()
///     .soft(true); // mark stale (grace still serves them) instead of evicting
/// let purges = Purges::builder().purger(varnish).build().unwrap();
/// ```
///
/// xkey splits keys on spaces and commas, exactly as it splits the `xkey` response header: by
/// default each group is sent as the tag [`vendor_tag`] renders for `xkey` (a group with a
/// space or comma as its stable hash), the same token the response carried.
#[derive(Clone)]
pub struct VarnishPurger {
    name: String,
    urls: Vec<reqwest::Url>,
    soft: bool,
    hard_header: reqwest::header::HeaderName,
    soft_header: reqwest::header::HeaderName,
    max_header_bytes: usize,
    map: GroupMap,
    client: reqwest::Client,
}

impl std::fmt::Debug for VarnishPurger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VarnishPurger")
            .field("name", &self.name)
            .field(
                "urls",
                &self
                    .urls
                    .iter()
                    .map(reqwest::Url::as_str)
                    .collect::<Vec<_>>(),
            )
            .field("soft", &self.soft)
            .field("hard_header", &self.hard_header)
            .field("soft_header", &self.soft_header)
            .field("max_header_bytes", &self.max_header_bytes)
            .finish_non_exhaustive()
    }
}

impl VarnishPurger {
    /// A purger for the Varnish servers at `urls` (each an `http://` or `https://` URL; the
    /// path is sent as the `PURGE` request's target). Named `varnish`, hard purges.
    ///
    /// # Errors
    /// [`PurgeError::Config`] for no URL or one that does not parse.
    pub fn new(urls: impl IntoIterator<Item = impl AsRef<str>>) -> Result<Self, PurgeError> {
        let urls = urls
            .into_iter()
            .map(|url| http::parse(url.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        if urls.is_empty() {
            return Err(PurgeError::Config(
                "VarnishPurger needs at least one URL".into(),
            ));
        }
        Ok(Self {
            name: "varnish".into(),
            urls,
            soft: false,
            hard_header: reqwest::header::HeaderName::from_static("xkey-purge"),
            soft_header: reqwest::header::HeaderName::from_static("xkey-softpurge"),
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            // By default a group is purged under the tag the `Edge` renders for it
            // (`vendor_tag`): the same token, hashed where the vendor cannot take it.
            map: Arc::new(|group: &str| vendor_tag(group, Vendor::Xkey)),
            client: http::client(),
        })
    }

    /// Soft purges (`xkey.softpurge`: objects become stale, grace may still serve them while
    /// refetching) instead of hard ones (`xkey.purge`: evicted).
    #[must_use]
    pub fn soft(mut self, soft: bool) -> Self {
        self.soft = soft;
        self
    }

    /// The request header names the VCL reads for hard and soft purges (default `xkey-purge`
    /// and `xkey-softpurge`).
    ///
    /// # Errors
    /// [`PurgeError::Config`] for an invalid header name.
    pub fn header_names(mut self, hard: &str, soft: &str) -> Result<Self, PurgeError> {
        let name = |name: &str| {
            reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| PurgeError::Config(format!("{name:?} is not a header name")))
        };
        self.hard_header = name(hard)?;
        self.soft_header = name(soft)?;
        Ok(self)
    }

    /// The name in metrics and logs (default `varnish`): give each purger its own.
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The longest purge header value per request (default 4096 bytes); more keys are split
    /// over several requests.
    #[must_use]
    pub fn max_header_bytes(mut self, max: usize) -> Self {
        self.max_header_bytes = max.max(1);
        self
    }

    /// Maps each group to the key Varnish knows it by (default: `vendor_tag(group, Vendor::Xkey)`,
    /// the tag an [`Edge`](crate::edge::Edge) rendering `xkey` gives it).
    #[must_use]
    pub fn map_groups(mut self, map: impl Fn(&str) -> String + Send + Sync + 'static) -> Self {
        self.map = Arc::new(map);
        self
    }

    fn header(&self) -> &reqwest::header::HeaderName {
        if self.soft {
            &self.soft_header
        } else {
            &self.hard_header
        }
    }

    async fn attempt(&self, groups: &[String]) -> Result<(), PurgeError> {
        let keys = mapped(&self.map, groups);
        for value in pack(&keys, self.max_header_bytes) {
            let value = reqwest::header::HeaderValue::from_str(&value).map_err(|_| {
                PurgeError::InvalidGroup {
                    group: value.clone(),
                    reason: "not a valid header value".into(),
                }
            })?;
            let method = reqwest::Method::from_bytes(b"PURGE").expect("PURGE is a token");
            let sends = self.urls.iter().map(|url| {
                let request = self
                    .client
                    .request(method.clone(), url.clone())
                    .header(self.header(), value.clone());
                http::send(url, request)
            });
            // Every address, concurrently; the first error is the attempt's.
            for result in join_all(sends).await {
                result?;
            }
        }
        Ok(())
    }
}

/// `keys` joined by spaces into values of at most `max` bytes (a longer key travels alone).
fn pack(keys: &[String], max: usize) -> Vec<String> {
    let mut values: Vec<String> = Vec::new();
    for key in keys {
        match values.last_mut() {
            Some(value) if value.len() + 1 + key.len() <= max => {
                value.push(' ');
                value.push_str(key);
            }
            _ => values.push(key.clone()),
        }
    }
    values
}

impl Purger for VarnishPurger {
    fn name(&self) -> &str {
        &self.name
    }

    fn purge<'a>(&'a self, groups: &'a [String]) -> BoxFuture<'a, Result<(), PurgeError>> {
        Box::pin(self.attempt(groups))
    }

    /// Refuses a group whose key is empty, not printable ASCII (a header value could not carry
    /// it), or longer than [`max_header_bytes`](Self::max_header_bytes).
    fn check(&self, group: &str) -> Result<(), PurgeError> {
        let key = mapped(&self.map, &[group.to_owned()]).remove(0);
        let reason = if key.trim().is_empty() {
            "empty key"
        } else if !key.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            "not printable ASCII"
        } else if key.len() > self.max_header_bytes {
            "longer than max_header_bytes"
        } else {
            return Ok(());
        };
        Err(PurgeError::InvalidGroup {
            group: group.to_owned(),
            reason: reason.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn keys_pack_into_values_within_the_limit() {
        assert_eq!(pack(&keys(&["a", "b", "c"]), 100), ["a b c"]);
        assert_eq!(pack(&keys(&["aa", "bb", "cc"]), 5), ["aa bb", "cc"]);
        assert_eq!(pack(&keys(&["toolong", "b"]), 3), ["toolong", "b"]);
        assert!(pack(&[], 10).is_empty());
    }

    #[test]
    fn check_refuses_what_a_header_cannot_carry() {
        let varnish = VarnishPurger::new(["http://127.0.0.1:1/"])
            .unwrap()
            .max_header_bytes(8);
        assert!(varnish.check("challenge:42").is_err(), "12 bytes > 8");
        assert!(varnish.check("ok").is_ok());
        assert!(varnish.check("a\nb").is_err());
        assert!(varnish.check("é").is_err());
        assert!(varnish.check(" ").is_err());
        let hashed = varnish.map_groups(|_| "h".to_owned());
        assert!(hashed.check("a\nb").is_ok(), "checked after mapping");
    }

    #[test]
    fn configuration_errors_are_reported() {
        assert!(VarnishPurger::new(Vec::<String>::new()).is_err());
        assert!(VarnishPurger::new(["ftp://x/"]).is_err());
        let varnish = VarnishPurger::new(["http://127.0.0.1:1/"]).unwrap();
        assert!(varnish.header_names("bad header", "x").is_err());
    }
}
