//! Attribute macros for [`actix-conditional`](https://docs.rs/actix-conditional).
//!
//! This crate is re-exported by `actix-conditional` behind its `macros` feature (on by default);
//! depend on `actix-conditional` rather than on this crate directly. The `#[etag_cached]`
//! attribute arrives with the macro work; until then the crate holds only its skeleton.
