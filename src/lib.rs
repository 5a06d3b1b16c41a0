#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod cache_control;
mod cc_tmp;
pub mod conditional_get;
pub mod not_modified;
pub mod preconditions;

// TEMP pub use crate::cache_control::{
// TEMP    CachePolicy, add_never_cache_headers, patch_cache_control, patch_vary_headers,
// TEMP };
pub use crate::conditional_get::{ConditionalGet, ETagHasher};
pub use crate::preconditions::{Precondition, Validators, evaluate_preconditions};
