//! Django reference data: `tests/fixtures/django_parity.json`, produced by running real Django
//! with `tests/django/gen_parity.py`. Nothing in the fixture is typed by hand.
//!
//! Include it from a test with `#[path = "common/django.rs"] mod django;`, or add
//! `pub mod django;` to `tests/common/mod.rs` and use `common::django`.
#![allow(dead_code)] // Each test binary uses a different part of this module.

use serde::Deserialize;

/// The fixture, embedded at compile time so tests need no working directory.
const FIXTURE: &str = include_str!("../fixtures/django_parity.json");

/// The whole fixture; see `tests/django/gen_parity.py` for what each section holds.
#[derive(Debug, Deserialize)]
pub(crate) struct Fixture {
    pub(crate) django_version: String,
    pub(crate) python_version: String,
    pub(crate) policy_fields_in_canonical_order: Vec<String>,
    pub(crate) patch_cache_control: Vec<PatchCase>,
    /// Field-qualified `no-cache`/`private` and extension directives.
    pub(crate) patch_cache_control_vocabulary: Vocabulary,
    pub(crate) divergences: Divergences,
    pub(crate) add_never_cache_headers: Vec<NeverCacheCase>,
    pub(crate) patch_vary_headers: Vec<VaryCase>,
    pub(crate) etags: Vec<EtagCase>,
}

/// `patch_cache_control(response, **policy)` on a response whose `Cache-Control` is `existing`.
#[derive(Debug, Deserialize)]
pub(crate) struct PatchCase {
    pub(crate) name: String,
    pub(crate) existing: Option<String>,
    /// Django keyword arguments (`max_age`, `public`, ...): `true` or a number of seconds.
    pub(crate) policy: serde_json::Map<String, serde_json::Value>,
    pub(crate) django: String,
    /// Django renders several `no-cache="field"` values from a Python set: their relative
    /// order changes with `PYTHONHASHSEED`.
    pub(crate) no_cache_order_unspecified: bool,
}

/// Cases recorded later than the rest, with the Django that produced them.
#[derive(Debug, Deserialize)]
pub(crate) struct Vocabulary {
    pub(crate) django_version: String,
    pub(crate) cases: Vec<PatchCase>,
}

/// Inputs where actix-conditional deliberately differs from Django.
#[derive(Debug, Deserialize)]
pub(crate) struct Divergences {
    pub(crate) patch_cache_control: Vec<PatchDivergence>,
    pub(crate) patch_vary_headers: Vec<VaryDivergence>,
}

/// A `patch_cache_control` input we answer differently; `django` is `None` when it raised.
#[derive(Debug, Deserialize)]
pub(crate) struct PatchDivergence {
    pub(crate) name: String,
    pub(crate) existing: Option<String>,
    pub(crate) policy: serde_json::Map<String, serde_json::Value>,
    pub(crate) reason: String,
    pub(crate) django: Option<String>,
    pub(crate) error: Option<String>,
}

/// A `patch_vary_headers` input we answer differently.
#[derive(Debug, Deserialize)]
pub(crate) struct VaryDivergence {
    pub(crate) name: String,
    pub(crate) existing: Option<String>,
    pub(crate) new: Vec<String>,
    pub(crate) reason: String,
    pub(crate) django: String,
}

/// `add_never_cache_headers(response)`.
#[derive(Debug, Deserialize)]
pub(crate) struct NeverCacheCase {
    pub(crate) name: String,
    pub(crate) existing_cache_control: Option<String>,
    pub(crate) existing_expires: Option<String>,
    pub(crate) cache_control: String,
    /// Django set `Expires` to the current time (there was none before).
    pub(crate) expires_set_to_now: bool,
    /// `Expires` afterwards, when it was already present.
    pub(crate) expires: Option<String>,
    /// Lower-cased names of the headers Django added.
    pub(crate) headers_added: Vec<String>,
}

/// `patch_vary_headers(response, new)`.
#[derive(Debug, Deserialize)]
pub(crate) struct VaryCase {
    pub(crate) name: String,
    pub(crate) existing: Option<String>,
    pub(crate) new: Vec<String>,
    pub(crate) django: String,
}

/// A GET through Django's `ConditionalGetMiddleware`, for a 200 with `body` and the given
/// `Cache-Control`; `etag` is the `ETag` it set (`None`: no ETag).
#[derive(Debug, Deserialize)]
pub(crate) struct EtagCase {
    pub(crate) name: String,
    pub(crate) body: Body,
    pub(crate) body_len: usize,
    pub(crate) cache_control: Option<String>,
    pub(crate) etag: Option<String>,
}

/// A response body as stored in the fixture.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Body {
    /// Lowercase hex.
    Hex(String),
    /// Text, sent as its UTF-8 bytes.
    Utf8(String),
    /// `len` bytes, `byte[i] = (i * mul + add) % modulus`, so 100 KiB fit on one line.
    Affine {
        len: usize,
        mul: usize,
        add: usize,
        modulus: usize,
    },
}

impl Body {
    /// The body bytes.
    pub(crate) fn bytes(&self) -> Vec<u8> {
        match self {
            Self::Hex(hex) => decode_hex(hex),
            Self::Utf8(text) => text.as_bytes().to_vec(),
            Self::Affine {
                len,
                mul,
                add,
                modulus,
            } => (0..*len)
                .map(|i| u8::try_from((i * mul + add) % modulus).expect("modulus <= 256"))
                .collect(),
        }
    }
}

fn decode_hex(hex: &str) -> Vec<u8> {
    assert!(hex.len().is_multiple_of(2), "odd-length hex");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digit"))
        .collect()
}

/// Parses the embedded fixture.
pub(crate) fn fixture() -> Fixture {
    serde_json::from_str(FIXTURE).expect("tests/fixtures/django_parity.json is valid")
}

/// **Django's MD5 ETag vectors**: `(body, etag)` for every body Django's
/// `ConditionalGetMiddleware` tagged on a plain 200 (no `Cache-Control`), e.g.
/// `(b"hello", "\"5d41402abc4b2a76b9719d911017c592\"")`.
///
/// For the middleware's parity test, e.g. through
/// `ConditionalGet::default().hasher(ETagHasher::Md5)`: the `ETag` must equal `etag` exactly.
/// Bodies Django does not tag (empty, or `no-store`) are in [`etag_cases`] with `etag: None`.
pub(crate) fn md5_etag_vectors() -> Vec<(Vec<u8>, String)> {
    fixture()
        .etags
        .into_iter()
        .filter(|case| case.cache_control.is_none())
        .filter_map(|case| Some((case.body.bytes(), case.etag?)))
        .collect()
}

/// Every ETag case, including the responses Django leaves untagged.
pub(crate) fn etag_cases() -> Vec<EtagCase> {
    fixture().etags
}
