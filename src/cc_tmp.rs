#![allow(missing_docs, unreachable_pub)]
use actix_web::http::header::{CACHE_CONTROL, HeaderMap, HeaderValue, VARY};
pub fn cache_control_contains(h: &HeaderMap, d: &str) -> bool {
    h.get_all(CACHE_CONTROL).any(|v| {
        v.to_str()
            .unwrap_or("")
            .split(',')
            .any(|p| p.trim().split('=').next().unwrap().eq_ignore_ascii_case(d))
    })
}
pub fn patch_vary_headers(h: &mut HeaderMap, n: &[&str]) {
    if !h.contains_key(VARY) {
        h.insert(VARY, HeaderValue::from_str(n[0]).unwrap());
    }
}
