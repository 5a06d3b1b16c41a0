//! The bytes an entry is stored as in Redis: a versioned, length-prefixed binary layout.
//!
//! Why by hand rather than serde + a format crate: `HeaderMap` and `StatusCode` are not
//! serde types (a mirror struct would copy every header twice), and decoding from the one
//! `Bytes` Redis returned lets the body be a slice of it, not a copy. The layout is small,
//! fixed and checked field by field; anything that does not parse (another version, a
//! truncated or foreign value) is a [`DecodeError`], which the cache treats as a miss.
//!
//! ```text
//! "acE" 0x02                      magic, version
//! u64 generation  u64 life_ms     the cache's invalidation generation; the PX it was set with
//! u16 status
//! str key                         the full cache key, checked on read (the Redis key is a hash)
//! opt str revision
//! u16 n  { str name, opt bytes value }    the request's values of the varied headers
//! u16 n  { str revision, u64 generation, bytes json }   sections (sectioned caches)
//! u16 n  { str name, bytes value }        response headers
//! bytes body
//! ```
//!
//! A URL whose response varies gets a second, small value under its *base* key (host, path,
//! query; no header values), so an instance that has not seen it yet learns which request
//! headers select the variant, and where to look:
//!
//! ```text
//! "acV" 0x02   str key   u16 n { str name }     the names in the response's `Vary`
//! ```
//!
//! A key whose responses were not shareable gets a marker for the cache's `hit_for_miss`, so
//! every instance sends its requests for it straight to the handler (hit-for-pass):
//!
//! ```text
//! "acP" 0x02   str key
//! ```
//!
//! Integers are big-endian; `str`/`bytes` are a `u32` length and the bytes; `opt` is a `u8`
//! (0 absent, 1 present) before the value.

use std::fmt;

use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use bytes::{Buf, BufMut, Bytes};

use crate::response_cache::entry::{Entry, SectionPart};

const MAGIC: &[u8; 3] = b"acE";
const VARY_MAGIC: &[u8; 3] = b"acV";
const PASS_MAGIC: &[u8; 3] = b"acP";
/// Bumped whenever the layout changes: an old instance reading a new value (or the reverse)
/// sees a miss, never a misread entry. (2: each section records its invalidation counter.)
pub(crate) const VERSION: u8 = 2;

/// A value as read back from Redis.
#[derive(Debug)]
pub(crate) enum Value {
    /// A stored response.
    Entry(Decoded),
    /// The response under this base key varies on these request headers.
    Vary(Vec<HeaderName>),
    /// This key's responses are not shareable (hit-for-pass).
    Pass,
}

/// An entry as read back from Redis.
#[derive(Debug)]
pub(crate) struct Decoded {
    pub(crate) generation: u64,
    pub(crate) life_ms: u64,
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) revision: Option<Box<str>>,
    pub(crate) vary: Vec<(HeaderName, Option<HeaderValue>)>,
    pub(crate) sections: Vec<SectionPart>,
}

/// Why a stored value could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// Not one of our values, or written by another layout version.
    Version,
    /// Shorter than its lengths say, or bytes left over.
    Truncated,
    /// A field that does not hold what it must (status, header name or value, UTF-8).
    Invalid(&'static str),
    /// A well-formed entry for another key (a hash collision, or a foreign writer).
    OtherKey,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Version => f.write_str("unknown magic or version"),
            Self::Truncated => f.write_str("truncated or trailing bytes"),
            Self::Invalid(what) => write!(f, "invalid {what}"),
            Self::OtherKey => f.write_str("entry of another key"),
        }
    }
}

/// The stored form of `entry` under `key`, set with a PX of `life_ms`.
pub(crate) fn encode(key: &str, entry: &Entry, life_ms: u64) -> Vec<u8> {
    let snapshot = &entry.snapshot;
    let mut out = Vec::with_capacity(snapshot.weight() + key.len() + 64);
    out.put_slice(MAGIC);
    out.put_u8(VERSION);
    out.put_u64(entry.generation);
    out.put_u64(life_ms);
    out.put_u16(snapshot.status.as_u16());
    put_bytes(&mut out, key.as_bytes());
    put_opt(&mut out, entry.revision.as_deref().map(str::as_bytes));
    out.put_u16(count(entry.vary.len()));
    for (name, value) in entry.vary.iter().take(usize::from(u16::MAX)) {
        put_bytes(&mut out, name.as_str().as_bytes());
        put_opt(&mut out, value.as_ref().map(HeaderValue::as_bytes));
    }
    out.put_u16(count(entry.sections.len()));
    for part in entry.sections.iter().take(usize::from(u16::MAX)) {
        put_bytes(&mut out, part.revision.as_bytes());
        out.put_u64(part.generation);
        put_bytes(&mut out, &part.json);
    }
    out.put_u16(count(snapshot.headers.len()));
    for (name, value) in snapshot.headers.iter().take(usize::from(u16::MAX)) {
        put_bytes(&mut out, name.as_str().as_bytes());
        put_bytes(&mut out, value.as_bytes());
    }
    put_bytes(&mut out, &snapshot.body);
    out
}

/// The stored form of "the response under `key` varies on `names`".
pub(crate) fn encode_vary(key: &str, names: &[HeaderName]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 32 * names.len() + 16);
    out.put_slice(VARY_MAGIC);
    out.put_u8(VERSION);
    put_bytes(&mut out, key.as_bytes());
    out.put_u16(count(names.len()));
    for name in names.iter().take(usize::from(u16::MAX)) {
        put_bytes(&mut out, name.as_str().as_bytes());
    }
    out
}

/// The stored form of "responses under `key` are not shareable".
pub(crate) fn encode_pass(key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 8);
    out.put_slice(PASS_MAGIC);
    out.put_u8(VERSION);
    put_bytes(&mut out, key.as_bytes());
    out
}

/// Reads a value written by [`encode`], [`encode_vary`] or [`encode_pass`] for `key`. An entry's body is a
/// slice of `value`: no copy.
pub(crate) fn decode(key: &str, value: Bytes) -> Result<Value, DecodeError> {
    let mut buf = value;
    if buf.len() < 4 || buf[3] != VERSION {
        return Err(DecodeError::Version);
    }
    let magic = buf.split_to(4);
    match &magic[..3] {
        m if m == MAGIC => decode_entry(key, buf).map(Value::Entry),
        m if m == VARY_MAGIC => decode_vary(key, buf).map(Value::Vary),
        m if m == PASS_MAGIC => decode_pass(key, buf).map(|()| Value::Pass),
        _ => Err(DecodeError::Version),
    }
}

fn decode_pass(key: &str, mut buf: Bytes) -> Result<(), DecodeError> {
    if take_bytes(&mut buf)? != key.as_bytes() {
        return Err(DecodeError::OtherKey);
    }
    if buf.has_remaining() {
        return Err(DecodeError::Truncated);
    }
    Ok(())
}

fn decode_vary(key: &str, mut buf: Bytes) -> Result<Vec<HeaderName>, DecodeError> {
    if take_bytes(&mut buf)? != key.as_bytes() {
        return Err(DecodeError::OtherKey);
    }
    let mut names = Vec::new();
    for _ in 0..take_u16(&mut buf)? {
        names.push(header_name(&take_bytes(&mut buf)?)?);
    }
    if buf.has_remaining() {
        return Err(DecodeError::Truncated);
    }
    Ok(names)
}

fn decode_entry(key: &str, mut buf: Bytes) -> Result<Decoded, DecodeError> {
    let generation = take_u64(&mut buf)?;
    let life_ms = take_u64(&mut buf)?;
    let status =
        StatusCode::from_u16(take_u16(&mut buf)?).map_err(|_| DecodeError::Invalid("status"))?;
    if take_bytes(&mut buf)? != key.as_bytes() {
        return Err(DecodeError::OtherKey);
    }
    let revision = take_opt(&mut buf)?
        .map(|b| utf8(&b, "revision"))
        .transpose()?;
    let mut vary = Vec::new();
    for _ in 0..take_u16(&mut buf)? {
        let name = header_name(&take_bytes(&mut buf)?)?;
        let value = take_opt(&mut buf)?.map(header_value).transpose()?;
        vary.push((name, value));
    }
    let mut sections = Vec::new();
    for _ in 0..take_u16(&mut buf)? {
        let revision = utf8(&take_bytes(&mut buf)?, "section revision")?;
        let generation = take_u64(&mut buf)?;
        sections.push(SectionPart {
            revision,
            json: take_bytes(&mut buf)?,
            generation,
        });
    }
    let n_headers = take_u16(&mut buf)?;
    let mut headers = HeaderMap::with_capacity(usize::from(n_headers));
    for _ in 0..n_headers {
        let name = header_name(&take_bytes(&mut buf)?)?;
        headers.append(name, header_value(take_bytes(&mut buf)?)?);
    }
    let body = take_bytes(&mut buf)?;
    if buf.has_remaining() {
        return Err(DecodeError::Truncated);
    }
    Ok(Decoded {
        generation,
        life_ms,
        status,
        headers,
        body,
        revision,
        vary,
        sections,
    })
}

fn count(len: usize) -> u16 {
    u16::try_from(len).unwrap_or(u16::MAX)
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    // Entries are bounded by `max_entry_bytes` (a `usize` far below 4 GiB in practice); a
    // longer field is cut at the length written, and the decoder then sees trailing bytes.
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.put_u32(len);
    out.put_slice(&bytes[..len as usize]);
}

fn put_opt(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(bytes) => {
            out.put_u8(1);
            put_bytes(out, bytes);
        }
        None => out.put_u8(0),
    }
}

fn take_u16(buf: &mut Bytes) -> Result<u16, DecodeError> {
    buf.try_get_u16().map_err(|_| DecodeError::Truncated)
}

fn take_u64(buf: &mut Bytes) -> Result<u64, DecodeError> {
    buf.try_get_u64().map_err(|_| DecodeError::Truncated)
}

fn take_bytes(buf: &mut Bytes) -> Result<Bytes, DecodeError> {
    let len = buf.try_get_u32().map_err(|_| DecodeError::Truncated)?;
    let len = usize::try_from(len).map_err(|_| DecodeError::Truncated)?;
    if buf.remaining() < len {
        return Err(DecodeError::Truncated);
    }
    Ok(buf.split_to(len))
}

fn take_opt(buf: &mut Bytes) -> Result<Option<Bytes>, DecodeError> {
    match buf.try_get_u8().map_err(|_| DecodeError::Truncated)? {
        0 => Ok(None),
        1 => take_bytes(buf).map(Some),
        _ => Err(DecodeError::Invalid("option flag")),
    }
}

fn utf8(bytes: &[u8], what: &'static str) -> Result<Box<str>, DecodeError> {
    std::str::from_utf8(bytes)
        .map(Box::from)
        .map_err(|_| DecodeError::Invalid(what))
}

fn header_name(bytes: &[u8]) -> Result<HeaderName, DecodeError> {
    HeaderName::from_bytes(bytes).map_err(|_| DecodeError::Invalid("header name"))
}

fn header_value(bytes: Bytes) -> Result<HeaderValue, DecodeError> {
    HeaderValue::from_maybe_shared(bytes).map_err(|_| DecodeError::Invalid("header value"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;
    use crate::response_cache::entry::Snapshot;

    fn entry(body: &[u8], revision: Option<&str>) -> Entry {
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static("content-type"),
            HeaderValue::from_static("application/json"),
        );
        headers.append(
            HeaderName::from_static("vary"),
            HeaderValue::from_static("accept-language"),
        );
        headers.append(
            HeaderName::from_static("vary"),
            HeaderValue::from_static("accept"),
        );
        let snapshot = Snapshot::new(StatusCode::OK, &headers, Bytes::copy_from_slice(body));
        Entry::new(
            snapshot,
            Duration::from_secs(5),
            revision.map(Box::from),
            vec![
                (
                    HeaderName::from_static("accept-language"),
                    Some(HeaderValue::from_static("fr")),
                ),
                (HeaderName::from_static("accept"), None),
            ],
            vec![SectionPart {
                revision: Box::from("3.1"),
                json: Bytes::from_static(b"{\"a\":1}"),
                generation: 4,
            }],
            7,
        )
    }

    fn entry_of(value: Value) -> Decoded {
        match value {
            Value::Entry(decoded) => decoded,
            Value::Vary(names) => panic!("a vary pointer: {names:?}"),
            Value::Pass => panic!("a pass marker"),
        }
    }

    #[test]
    fn pass_markers_round_trip_and_check_their_key() {
        let value = Bytes::from(encode_pass("http://h/p"));
        assert!(matches!(
            decode("http://h/p", value.clone()),
            Ok(Value::Pass)
        ));
        assert_eq!(
            decode("http://h/q", value.clone()).err(),
            Some(DecodeError::OtherKey)
        );
        let mut longer = value.to_vec();
        longer.push(0);
        assert_eq!(
            decode("http://h/p", Bytes::from(longer)).err(),
            Some(DecodeError::Truncated)
        );
    }

    #[test]
    fn vary_pointers_round_trip_and_check_their_key() {
        let names = [
            HeaderName::from_static("accept-language"),
            HeaderName::from_static("accept"),
        ];
        let bytes = encode_vary("http://h/a", &names);
        match decode("http://h/a", Bytes::from(bytes.clone())).unwrap() {
            Value::Vary(got) => assert_eq!(got, names),
            other => panic!("not a vary pointer: {other:?}"),
        }
        assert_eq!(
            decode("http://h/b", Bytes::from(bytes.clone())).unwrap_err(),
            DecodeError::OtherKey
        );
        for cut in 0..bytes.len() {
            assert!(decode("http://h/a", Bytes::copy_from_slice(&bytes[..cut])).is_err());
        }
    }

    #[test]
    fn round_trips_every_field() {
        let original = entry(b"[1,2,3]", Some("rev-9"));
        let bytes = encode("http://h/a", &original, 30_000);
        let decoded = entry_of(decode("http://h/a", Bytes::from(bytes)).unwrap());
        assert_eq!(decoded.generation, 7);
        assert_eq!(decoded.life_ms, 30_000);
        assert_eq!(decoded.status, StatusCode::OK);
        assert_eq!(decoded.body, "[1,2,3]");
        assert_eq!(decoded.revision.as_deref(), Some("rev-9"));
        assert_eq!(decoded.vary, original.vary);
        assert_eq!(decoded.sections.len(), 1);
        assert_eq!(&*decoded.sections[0].revision, "3.1");
        assert_eq!(decoded.sections[0].json, "{\"a\":1}");
        assert_eq!(decoded.sections[0].generation, 4);
        let pairs = |headers: &HeaderMap| {
            let mut pairs: Vec<(String, Vec<u8>)> = headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect();
            pairs.sort();
            pairs
        };
        assert_eq!(pairs(&decoded.headers), pairs(&original.snapshot.headers));
        assert_eq!(decoded.headers.get_all("vary").count(), 2);
    }

    #[test]
    fn refuses_other_keys_versions_and_truncation() {
        let bytes = encode("k", &entry(b"x", None), 1);
        assert_eq!(
            decode("other", Bytes::from(bytes.clone())).unwrap_err(),
            DecodeError::OtherKey
        );
        let mut newer = bytes.clone();
        newer[3] = VERSION + 1;
        assert_eq!(
            decode("k", Bytes::from(newer)).unwrap_err(),
            DecodeError::Version
        );
        for cut in 0..bytes.len() {
            assert!(decode("k", Bytes::copy_from_slice(&bytes[..cut])).is_err());
        }
        let mut longer = bytes;
        longer.push(0);
        assert_eq!(
            decode("k", Bytes::from(longer)).unwrap_err(),
            DecodeError::Truncated
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..512)) {
            for magic in [b"acE\x02", b"acV\x02"] {
                let mut value = magic.to_vec();
                value.extend_from_slice(&tail);
                let _ = decode("k", Bytes::from(value));
            }
            let _ = decode("k", Bytes::from(tail));
        }

        #[test]
        fn flipped_bytes_never_panic(index in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let mut value = encode("k", &entry(b"{\"ok\":true}", Some("r")), 5);
            let i = index.index(value.len());
            value[i] = byte;
            let _ = decode("k", Bytes::from(value));
        }

        #[test]
        fn bodies_and_revisions_round_trip(
            body in proptest::collection::vec(any::<u8>(), 0..2048),
            revision in proptest::option::of("[ -~]{0,40}"),
        ) {
            let original = entry(&body, revision.as_deref());
            let decoded = entry_of(decode("k", Bytes::from(encode("k", &original, 9))).unwrap());
            prop_assert_eq!(&decoded.body[..], &body[..]);
            prop_assert_eq!(decoded.revision.as_deref(), revision.as_deref());
        }
    }
}
