//! Vendor tag headers rendered from cache groups: Fastly `Surrogate-Key`, varnish-modules
//! `xkey`, Cloudflare `Cache-Tag`, Akamai `Edge-Cache-Tag`.
//!
//! Each vendor has its own separator, alphabet and limits (the constants below, each with the
//! vendor document it comes from). A group becomes a vendor tag through [`vendor_tag`]:
//! unchanged when the vendor accepts it as is, otherwise `h-` and the 16 hex digits of its
//! XXH3-64 hash (a stable token every vendor accepts). A purger maps the groups it invalidates
//! through the same function, so it purges exactly the tags that were rendered.
//!
//! Past a vendor's count or size budget, whole tags are dropped, first come first kept, with
//! a warning: the same groups always render the same header.

use std::collections::HashSet;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use xxhash_rust::xxh3::xxh3_64;

/// Fastly: longest surrogate key, in bytes ("Fastly VCL constraints and limitations": purges
/// citing longer keys fail).
pub const SURROGATE_KEY_MAX_KEY_BYTES: usize = 1024;
/// Fastly: only keys entirely within the first 16 KB of `Surrogate-Key` apply ("Fastly VCL
/// constraints and limitations").
pub const SURROGATE_KEY_MAX_HEADER_BYTES: usize = 16 * 1024;
/// Varnish: `http_resp_hdr_len` (Varnish parameter reference, default 8 KB) bounds one
/// backend response header line, name included; this leaves room for `xkey: ` and CRLF.
pub const XKEY_MAX_HEADER_BYTES: usize = 8000;
/// Varnish xkey: no per-key limit in the vmod; kept to Fastly's so a purge request's
/// `xkey-purge` header (bounded by `http_req_hdr_len`, 8 KB) carries several keys.
pub const XKEY_MAX_KEY_BYTES: usize = 1024;
/// Cloudflare: the aggregate `Cache-Tag` value must not exceed 16 KB ("Purge cache by
/// cache-tags"), read as 16 000 bytes to hold under either meaning of KB.
pub const CACHE_TAG_MAX_HEADER_BYTES: usize = 16_000;
/// Cloudflare: longest tag a purge API call accepts ("Purge cache by cache-tags").
pub const CACHE_TAG_MAX_TAG_BYTES: usize = 1024;
/// Akamai: at most 128 tags per object, the rest ignored ("Purge content by cache tag").
pub const EDGE_CACHE_TAG_MAX_TAGS: usize = 128;
/// Akamai: a tag cannot exceed 128 characters ("Purge content by cache tag").
pub const EDGE_CACHE_TAG_MAX_TAG_BYTES: usize = 128;

/// One vendor's tag header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Vendor {
    /// Fastly `Surrogate-Key` (space-separated). Also what a Varnish VCL can copy into
    /// `xkey`.
    SurrogateKey,
    /// varnish-modules `xkey` (space-separated; the vmod also splits on commas).
    Xkey,
    /// Cloudflare `Cache-Tag` (comma-separated, no spaces; tags are case-insensitive).
    CacheTag,
    /// Akamai `Edge-Cache-Tag` (comma-separated).
    EdgeCacheTag,
}

impl Vendor {
    /// Every vendor, in rendering order.
    pub const ALL: [Self; 4] = [
        Self::SurrogateKey,
        Self::Xkey,
        Self::CacheTag,
        Self::EdgeCacheTag,
    ];

    /// The response header this vendor reads its tags from.
    pub const fn header_name(self) -> HeaderName {
        HeaderName::from_static(match self {
            Self::SurrogateKey => "surrogate-key",
            Self::Xkey => "xkey",
            Self::CacheTag => "cache-tag",
            Self::EdgeCacheTag => "edge-cache-tag",
        })
    }

    /// Longest tag, in bytes.
    pub const fn max_tag_bytes(self) -> usize {
        match self {
            Self::SurrogateKey => SURROGATE_KEY_MAX_KEY_BYTES,
            Self::Xkey => XKEY_MAX_KEY_BYTES,
            Self::CacheTag => CACHE_TAG_MAX_TAG_BYTES,
            Self::EdgeCacheTag => EDGE_CACHE_TAG_MAX_TAG_BYTES,
        }
    }

    /// Most tags in one header.
    pub const fn max_tags(self) -> usize {
        match self {
            Self::EdgeCacheTag => EDGE_CACHE_TAG_MAX_TAGS,
            // No documented count: the size bound decides.
            Self::SurrogateKey | Self::Xkey | Self::CacheTag => usize::MAX,
        }
    }

    /// Largest header value, in bytes.
    pub const fn max_header_bytes(self) -> usize {
        match self {
            Self::SurrogateKey => SURROGATE_KEY_MAX_HEADER_BYTES,
            Self::Xkey => XKEY_MAX_HEADER_BYTES,
            Self::CacheTag => CACHE_TAG_MAX_HEADER_BYTES,
            // No documented size: 128 tags of 128 bytes and their commas.
            Self::EdgeCacheTag => EDGE_CACHE_TAG_MAX_TAGS * (EDGE_CACHE_TAG_MAX_TAG_BYTES + 1) - 1,
        }
    }

    const fn separator(self) -> &'static str {
        match self {
            Self::SurrogateKey | Self::Xkey => " ",
            Self::CacheTag | Self::EdgeCacheTag => ",",
        }
    }

    /// Whether this vendor reads `byte` as part of a tag.
    const fn allows(self, byte: u8) -> bool {
        match self {
            // Visible ASCII: the header is space-separated, and xkey and VCL copies between
            // the two also split on commas.
            Self::SurrogateKey | Self::Xkey | Self::CacheTag => {
                byte.is_ascii_graphic() && byte != b','
            }
            // Akamai: alphanumerics and !#$%'+./^_`|~- ("Purge content by cache tag").
            Self::EdgeCacheTag => {
                byte.is_ascii_alphanumeric()
                    || matches!(
                        byte,
                        b'!' | b'#'
                            | b'$'
                            | b'%'
                            | b'\''
                            | b'+'
                            | b'.'
                            | b'/'
                            | b'^'
                            | b'_'
                            | b'`'
                            | b'|'
                            | b'~'
                            | b'-'
                    )
            }
        }
    }

    /// Whether `tag` is accepted as is.
    fn accepts(self, tag: &str) -> bool {
        !tag.is_empty()
            && tag.len() <= self.max_tag_bytes()
            && tag.bytes().all(|byte| self.allows(byte))
    }

    /// How the header's value reads back as tags.
    fn split(self, value: &str) -> impl Iterator<Item = &str> {
        value
            .split(move |c: char| match self {
                Self::SurrogateKey => c.is_ascii_whitespace(),
                Self::Xkey => c.is_ascii_whitespace() || c == ',',
                Self::CacheTag | Self::EdgeCacheTag => c == ',',
            })
            .map(str::trim)
            .filter(|tag| !tag.is_empty())
    }
}

/// Length of a hashed tag: `h-` and 16 hex digits.
pub const HASHED_TAG_LEN: usize = 18;

/// The tag `vendor` gets for `group`: `group` itself when the vendor accepts it (its alphabet,
/// not empty, not too long), else `h-` and the 16 lowercase hex digits of `group`'s XXH3-64
/// hash. Pure and stable across processes and versions: purgers call it to purge exactly the
/// tags [`render_vendor_tags`] wrote. (A group itself spelt `h-` and 16 hex digits could share
/// a hashed group's tag: avoid that spelling.)
///
/// ```
/// use actix_conditional::edge::{Vendor, vendor_tag};
/// assert_eq!(vendor_tag("challenge:42", Vendor::SurrogateKey), "challenge:42");
/// // Akamai does not allow `:`. The token is pinned: purges must match across versions.
/// assert_eq!(vendor_tag("challenge:42", Vendor::EdgeCacheTag), "h-3387c46ae90fc55d");
/// ```
pub fn vendor_tag(group: &str, vendor: Vendor) -> String {
    if vendor.accepts(group) {
        group.to_owned()
    } else {
        hashed(group)
    }
}

fn hashed(group: &str) -> String {
    format!("h-{:016x}", xxh3_64(group.as_bytes()))
}

/// Which vendor headers [`render_vendor_tags`] writes, besides `Cache-Groups` (always kept).
///
/// ```
/// use actix_conditional::edge::{TagHeaders, Vendor};
/// const TAGS: TagHeaders = TagHeaders::new().surrogate_key().cache_tag();
/// assert_eq!(TAGS.vendors().collect::<Vec<_>>(), [Vendor::SurrogateKey, Vendor::CacheTag]);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[must_use]
pub struct TagHeaders {
    surrogate_key: bool,
    xkey: bool,
    cache_tag: bool,
    edge_cache_tag: bool,
}

impl TagHeaders {
    /// No vendor header.
    pub const fn new() -> Self {
        Self {
            surrogate_key: false,
            xkey: false,
            cache_tag: false,
            edge_cache_tag: false,
        }
    }

    /// Fastly `Surrogate-Key` (a Varnish VCL can also read it into `xkey`).
    pub const fn surrogate_key(self) -> Self {
        Self {
            surrogate_key: true,
            ..self
        }
    }

    /// varnish-modules `xkey`.
    pub const fn xkey(self) -> Self {
        Self { xkey: true, ..self }
    }

    /// Cloudflare `Cache-Tag`.
    pub const fn cache_tag(self) -> Self {
        Self {
            cache_tag: true,
            ..self
        }
    }

    /// Akamai `Edge-Cache-Tag`.
    pub const fn edge_cache_tag(self) -> Self {
        Self {
            edge_cache_tag: true,
            ..self
        }
    }

    /// Adds `vendor`'s header.
    pub const fn with(self, vendor: Vendor) -> Self {
        match vendor {
            Vendor::SurrogateKey => self.surrogate_key(),
            Vendor::Xkey => self.xkey(),
            Vendor::CacheTag => self.cache_tag(),
            Vendor::EdgeCacheTag => self.edge_cache_tag(),
        }
    }

    /// Whether `vendor`'s header is written.
    pub const fn has(&self, vendor: Vendor) -> bool {
        match vendor {
            Vendor::SurrogateKey => self.surrogate_key,
            Vendor::Xkey => self.xkey,
            Vendor::CacheTag => self.cache_tag,
            Vendor::EdgeCacheTag => self.edge_cache_tag,
        }
    }

    /// The vendors whose header is written, in [`Vendor::ALL`] order.
    pub fn vendors(&self) -> impl Iterator<Item = Vendor> + '_ {
        Vendor::ALL.into_iter().filter(|vendor| self.has(*vendor))
    }
}

/// Writes the tag header of each vendor in `which`: the tags already in that header (a
/// handler's own), then `groups`, each through [`vendor_tag`], without repeats, within the
/// vendor's limits (whole tags past them dropped, first come first kept, with a warning).
/// The result is one header line per vendor; nothing is written for an empty set.
pub fn render_vendor_tags(headers: &mut HeaderMap, groups: &[String], which: &TagHeaders) {
    for vendor in which.vendors() {
        render(headers, groups, vendor);
    }
}

fn render(headers: &mut HeaderMap, groups: &[String], vendor: Vendor) {
    let name = vendor.header_name();
    let existing: Vec<String> = headers
        .get_all(&name)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| vendor.split(value))
        .map(str::to_owned)
        .collect();

    let separator = vendor.separator();
    let mut value = String::new();
    let mut count = 0;
    let mut kept: HashSet<String> = HashSet::new();
    let mut dropped: Vec<&str> = Vec::new();
    let mut hashed_long: Vec<&str> = Vec::new();
    for tag in existing.iter().chain(groups) {
        let token = vendor_tag(tag, vendor);
        if token != *tag && tag.len() > vendor.max_tag_bytes() {
            hashed_long.push(tag);
        }
        if kept.contains(&token) {
            continue;
        }
        let extra = if value.is_empty() { 0 } else { separator.len() };
        if count >= vendor.max_tags()
            || value.len() + extra + token.len() > vendor.max_header_bytes()
        {
            dropped.push(tag);
            continue;
        }
        if !value.is_empty() {
            value.push_str(separator);
        }
        value.push_str(&token);
        count += 1;
        kept.insert(token);
    }
    if !hashed_long.is_empty() {
        tracing::warn!(header = %name, tags = ?hashed_long, "vendor tags: longer than {} bytes; sent hashed", vendor.max_tag_bytes());
    }
    if !dropped.is_empty() {
        tracing::warn!(header = %name, ?dropped, "vendor tags: over the vendor's budget; dropped");
    }
    // Tokens are visible ASCII joined by a space or comma: always a valid value.
    match HeaderValue::try_from(value) {
        Ok(value) if !value.is_empty() => {
            headers.insert(name, value);
        }
        _ => {
            headers.remove(name);
        }
    }
}
