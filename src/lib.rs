#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod cache_control;
pub mod condition;
pub mod conditional_get;
pub mod edge;
pub mod etag;
mod md5_digest;
pub mod not_modified;
pub mod preconditions;
pub mod response_cache;
pub mod viewset;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use crate::cache_control::{
    CachePolicy, add_never_cache_headers, patch_cache_control, patch_vary_headers,
};
pub use crate::conditional_get::ConditionalGet;
pub use crate::etag::ETagHasher;
pub use crate::preconditions::{Precondition, Validators, evaluate_preconditions};
#[allow(deprecated)]
pub use crate::response_cache::Scope;
pub use crate::response_cache::{CacheScope, CacheStatus, ResponseCache, Section, SectionedCache};
#[cfg(feature = "macros")]
#[cfg_attr(docsrs, doc(cfg(feature = "macros")))]
pub use actix_conditional_macros::{cache_control, etag_cached, never_cache};
