//! Speaking to the caches downstream: cache groups (RFC 9875), the vendor tag headers
//! rendered from them, purges of what a write invalidated ([`purge`]), and the [`Edge`]
//! middleware that does both for an app.
//!
//! A response lists the groups it belongs to in `Cache-Groups`; the response to a successful
//! write lists the groups it changed in `Cache-Group-Invalidation`. Both are RFC 8941 lists of
//! strings. CDNs and Varnish read their own tag headers instead, rendered from the same groups
//! by [`render_vendor_tags`] within each vendor's limits; [`vendor_tag`] gives a purger the
//! same mapping.
//!
//! ```
//! use actix_conditional::edge::{self, TagHeaders};
//! use actix_web::{HttpResponse, http::header::HeaderValue};
//!
//! let mut res = HttpResponse::Ok().finish();
//! edge::tag(&mut res, ["challenges", "challenge:42"]);
//! edge::tag(&mut res, ["challenges", "summary:weekly"]); // appended, not repeated
//! assert_eq!(
//!     res.headers().get(edge::CACHE_GROUPS).unwrap(),
//!     r#""challenges", "challenge:42", "summary:weekly""#,
//! );
//! let groups = edge::groups(res.headers());
//! assert_eq!(groups, ["challenges", "challenge:42", "summary:weekly"]);
//!
//! // Fastly and Akamai headers from the same groups. Akamai does not allow `:` in a tag, so
//! // those groups get a stable hashed token, the one a purger computes with `vendor_tag`.
//! let which = TagHeaders::new().surrogate_key().edge_cache_tag();
//! edge::render_vendor_tags(res.headers_mut(), &groups, &which);
//! assert_eq!(
//!     res.headers().get("surrogate-key").unwrap(),
//!     "challenges challenge:42 summary:weekly",
//! );
//! let akamai = edge::vendor_tag("challenge:42", edge::Vendor::EdgeCacheTag);
//! assert!(akamai.starts_with("h-") && akamai.len() == edge::HASHED_TAG_LEN);
//! let expected = format!(
//!     "challenges,{akamai},{}",
//!     edge::vendor_tag("summary:weekly", edge::Vendor::EdgeCacheTag),
//! );
//! assert_eq!(res.headers().get("edge-cache-tag").unwrap(), HeaderValue::from_str(&expected).unwrap());
//! ```

mod groups;
mod middleware;
pub mod purge;
mod vendor;

#[cfg(test)]
mod tests;

pub use self::groups::{
    CACHE_GROUP_INVALIDATION, CACHE_GROUPS, MAX_FIELD_BYTES, MAX_GROUP_BYTES, MAX_GROUPS,
    add_groups, add_invalidations, groups, invalidate, invalidations, is_valid_group, tag,
};
pub use self::middleware::{Edge, EdgeMiddleware};
pub use self::vendor::{
    CACHE_TAG_MAX_HEADER_BYTES, CACHE_TAG_MAX_TAG_BYTES, EDGE_CACHE_TAG_MAX_TAG_BYTES,
    EDGE_CACHE_TAG_MAX_TAGS, HASHED_TAG_LEN, SURROGATE_KEY_MAX_HEADER_BYTES,
    SURROGATE_KEY_MAX_KEY_BYTES, TagHeaders, Vendor, XKEY_MAX_HEADER_BYTES, XKEY_MAX_KEY_BYTES,
    render_vendor_tags, vendor_tag,
};
