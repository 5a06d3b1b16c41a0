#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod cache_control;
pub mod conditional_get;
pub mod not_modified;
pub mod preconditions;

pub use crate::cache_control::{
    CachePolicy, add_never_cache_headers, patch_cache_control, patch_vary_headers,
};
pub use crate::conditional_get::{ConditionalGet, ETagHasher};
pub use crate::preconditions::{Precondition, Validators, evaluate_preconditions};
