//! Reading `Cache-Control`: a lenient, allocation-free, quote-aware directive parser.

use std::iter::FusedIterator;

use actix_web::http::header::{CACHE_CONTROL, HeaderMap};

use super::policy::*;

/// One member of a `Cache-Control` list: `name` or `name=value` (RFC 9111 §5.2).
///
/// Both parts borrow from the header bytes. The name keeps its original case; compare it with
/// [`Directive::is`]. The value is kept verbatim (a quoted-string keeps its quotes); surrounding
/// whitespace is trimmed from both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Directive<'a> {
    name: &'a [u8],
    value: Option<&'a [u8]>,
}

impl<'a> Directive<'a> {
    /// A directive read by another parser (a targeted field's dictionary members).
    pub(super) const fn new(name: &'a [u8], value: Option<&'a [u8]>) -> Self {
        Self { name, value }
    }

    /// The directive name as sent, never empty.
    #[must_use]
    pub const fn name(&self) -> &'a [u8] {
        self.name
    }

    /// The argument after `=`, verbatim; `None` for a bare directive.
    #[must_use]
    pub const fn value(&self) -> Option<&'a [u8]> {
        self.value
    }

    /// Whether the name equals `name`, ignoring ASCII case (RFC 9111 §5.2).
    #[must_use]
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name.as_bytes())
    }

    /// The argument read as delta-seconds, see [`parse_delta_seconds`].
    #[must_use]
    pub fn delta_seconds(&self) -> Option<u32> {
        self.value.and_then(parse_delta_seconds)
    }
}

/// Iterator over the directives of one `Cache-Control` field value; see [`parse_cache_control`].
#[derive(Debug, Clone)]
pub struct Directives<'a> {
    rest: &'a [u8],
}

/// Reads a `Cache-Control` field value leniently, without allocating.
///
/// The value is a comma-separated list of `token [ "=" ( token / quoted-string ) ]`
/// (RFC 9111 §5.2). Reading is lenient, as a recipient's should be:
///
/// - bytes, not `str`: obs-text and other non-UTF-8 bytes pass through;
/// - empty members (`a,,b`, a trailing comma) are skipped (RFC 9110 §5.6.1);
/// - whitespace around members and around `=` is trimmed;
/// - a value that starts with `"` runs to its closing quote (honouring `\` escapes), so commas
///   inside it do not split; an unterminated quote runs to the end of the field line;
/// - members with an empty name (`=`, `=x`) are skipped.
///
/// Each byte is looked at a bounded number of times, so the work is linear in the input.
///
/// # Examples
///
/// ```
/// use actix_conditional::cache_control::parse_cache_control;
///
/// let mut it = parse_cache_control(br#"Max-Age=60, no-cache="Set-Cookie, Cookie",, public"#);
/// let d = it.next().unwrap();
/// assert!(d.is("max-age"));
/// assert_eq!(d.delta_seconds(), Some(60));
/// let d = it.next().unwrap();
/// assert_eq!(d.value(), Some(&br#""Set-Cookie, Cookie""#[..]));
/// assert_eq!(it.next().unwrap().name(), b"public");
/// assert!(it.next().is_none());
/// ```
#[must_use]
pub fn parse_cache_control(value: &[u8]) -> Directives<'_> {
    Directives { rest: value }
}

/// All directives of every `Cache-Control` field line in `headers`, in order.
///
/// Several field lines are one comma-separated list (RFC 9110 §5.3).
pub fn cache_control_directives(headers: &HeaderMap) -> impl Iterator<Item = Directive<'_>> {
    headers
        .get_all(CACHE_CONTROL)
        .flat_map(|line| parse_cache_control(line.as_bytes()))
}

/// Whether any `Cache-Control` field line has the directive `name`, ignoring ASCII case.
///
/// A qualified form counts: `no-store="x"` contains `no-store`. Commas inside quoted strings do
/// not split, so `no-cache="no-store"` does not. Scans bytes and never allocates.
///
/// # Examples
///
/// ```
/// use actix_conditional::cache_control::cache_control_contains;
/// use actix_web::http::header::{CACHE_CONTROL, HeaderMap, HeaderValue};
///
/// let mut headers = HeaderMap::new();
/// headers.append(CACHE_CONTROL, HeaderValue::from_static("private"));
/// headers.append(CACHE_CONTROL, HeaderValue::from_static("No-Store"));
/// assert!(cache_control_contains(&headers, "no-store"));
/// assert!(!cache_control_contains(&headers, "no-cache"));
/// ```
#[must_use]
pub fn cache_control_contains(headers: &HeaderMap, name: &str) -> bool {
    cache_control_directives(headers).any(|d| d.is(name))
}

/// Reads delta-seconds (RFC 9111 §1.2.2): `1*DIGIT`, saturating at [`DELTA_SECONDS_MAX`].
///
/// Surrounding whitespace is ignored and the quoted form `"60"` is accepted (RFC 9111 §5.2:
/// recipients ought to accept both forms). Anything else (empty, a sign, letters) is `None`:
/// such a value is invalid and, per RFC 9111 §4.2.1, makes the response stale.
///
/// # Examples
///
/// ```
/// use actix_conditional::cache_control::{DELTA_SECONDS_MAX, parse_delta_seconds};
///
/// assert_eq!(parse_delta_seconds(b"60"), Some(60));
/// assert_eq!(parse_delta_seconds(b"\"60\""), Some(60));
/// assert_eq!(parse_delta_seconds(b"99999999999999999999"), Some(DELTA_SECONDS_MAX));
/// assert_eq!(parse_delta_seconds(b"-1"), None);
/// assert_eq!(parse_delta_seconds(b"abc"), None);
/// ```
#[must_use]
pub fn parse_delta_seconds(value: &[u8]) -> Option<u32> {
    let n = parse_delta_seconds_u64(value)?;
    Some(u32::try_from(n).map_or(DELTA_SECONDS_MAX, |n| n.min(DELTA_SECONDS_MAX)))
}

/// [`parse_delta_seconds`] before the RFC 9111 §1.2.2 clamp, saturating at `u64::MAX`.
pub(super) fn parse_delta_seconds_u64(value: &[u8]) -> Option<u64> {
    let value = trim_ows(value);
    let digits = match value {
        [b'"', inner @ .., b'"'] => inner,
        _ => value,
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0_u64, |n, &d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

impl<'a> Iterator for Directives<'a> {
    type Item = Directive<'a>;

    fn next(&mut self) -> Option<Directive<'a>> {
        loop {
            // Skip separators and OWS; empty list members are allowed (RFC 9110 §5.6.1).
            let Some(start) = self.rest.iter().position(|&b| b != b',' && !is_ows(b)) else {
                self.rest = &[];
                return None;
            };
            let member = &self.rest[start..];
            let name_end = member
                .iter()
                .position(|&b| b == b'=' || b == b',')
                .unwrap_or(member.len());
            let name = trim_ows(&member[..name_end]);

            if member.get(name_end) != Some(&b'=') {
                // Bare directive. `name` is not empty: `member` starts with neither OWS nor ','.
                self.rest = &member[name_end..];
                return Some(Directive { name, value: None });
            }

            let after_eq = &member[name_end + 1..];
            let lead = after_eq.iter().take_while(|&&b| is_ows(b)).count();
            let raw = &after_eq[lead..];
            let quoted_len = if raw.first() == Some(&b'"') {
                quoted_string_len(raw).unwrap_or(raw.len())
            } else {
                0
            };
            let value_len = raw[quoted_len..]
                .iter()
                .position(|&b| b == b',')
                .map_or(raw.len(), |p| quoted_len + p);
            self.rest = &raw[value_len..];

            if name.is_empty() {
                // `=x`: not a directive; Django keeps it under the name "" (see module docs).
                continue;
            }
            return Some(Directive {
                name,
                value: Some(trim_ows(&raw[..value_len])),
            });
        }
    }
}

impl FusedIterator for Directives<'_> {}

/// Length of the quoted-string at the start of `s` (which starts with `"`), including both
/// quotes and honouring quoted-pairs; `None` when the closing quote is missing
/// (RFC 9110 §5.6.4).
pub(super) fn quoted_string_len(s: &[u8]) -> Option<usize> {
    let mut i = 1;
    while i < s.len() {
        match s[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// A value that opens a quoted-string and never closes it.
pub(super) fn is_unterminated_quote(value: &[u8]) -> bool {
    value.first() == Some(&b'"') && quoted_string_len(value).is_none()
}

pub(super) const fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

pub(super) fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !is_ows(*first) {
            break;
        }
        s = rest;
    }
    while let [rest @ .., last] = s {
        if !is_ows(*last) {
            break;
        }
        s = rest;
    }
    s
}
