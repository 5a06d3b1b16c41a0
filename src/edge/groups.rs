//! RFC 9875 cache groups: the `Cache-Groups` and `Cache-Group-Invalidation` response fields.
//!
//! Both are RFC 8941 Lists of Strings (RFC 9875 §2, §3), read and written here with a real
//! structured-field parser and serializer (`sfv`), never by splitting on commas.
//!
//! Merging rules, the same for both fields:
//! - members already present come first, in their order; new groups are appended in the
//!   order given; a group already present (compared character by character, RFC 9875 §2.1)
//!   is not repeated;
//! - a group that cannot be an `sf-string` (anything outside printable ASCII 0x20–0x7E,
//!   RFC 8941 §3.3.3), an empty one, or one longer than [`MAX_GROUP_BYTES`] is dropped with a
//!   warning;
//! - the field never holds more than [`MAX_GROUPS`] members nor more than [`MAX_FIELD_BYTES`]
//!   bytes: members past either bound are dropped, first come first kept, with a warning;
//! - an existing field that does not parse is replaced. RFC 8941 §4.2 has recipients ignore a
//!   field that fails to parse *as a whole*, so keeping it would hide the groups appended to
//!   it; replacing it with a valid list that holds ours loses nothing a cache could have read.

use actix_web::HttpResponse;
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use sfv::{BareItem, Item, List, ListEntry, ListSerializer, Parser};

/// `Cache-Groups` (RFC 9875 §2): the groups a response belongs to.
pub const CACHE_GROUPS: HeaderName = HeaderName::from_static("cache-groups");

/// `Cache-Group-Invalidation` (RFC 9875 §3): on a response to an unsafe method, the groups
/// whose stored responses caches on the path may invalidate. Caches ignore it on responses to
/// safe methods.
pub const CACHE_GROUP_INVALIDATION: HeaderName =
    HeaderName::from_static("cache-group-invalidation");

/// Most members one field holds. RFC 9875 §2 asks caches to support at least 32; Akamai keeps
/// 128 tags per object, so more than this would be dropped at the edge anyway.
pub const MAX_GROUPS: usize = 128;

/// Longest group name, in bytes: Fastly's surrogate-key limit and Cloudflare's purge limit
/// per tag. RFC 9875 §2 asks caches to support at least 32 characters.
pub const MAX_GROUP_BYTES: usize = 1024;

/// Largest serialized field, in bytes. Small enough to leave room for the rest of the header
/// block within nginx's default `proxy_buffer_size` (one 4 KB or 8 KB page) and Varnish's
/// default `http_resp_hdr_len` (8 KB).
pub const MAX_FIELD_BYTES: usize = 4096;

/// Appends `groups` to the response's `Cache-Groups`.
///
/// Members already there come first; new groups follow in the order given, without repeats.
/// A group that is empty, longer than [`MAX_GROUP_BYTES`] or not printable ASCII (it could
/// not be an RFC 8941 `sf-string`) is dropped with a warning, and so are members past
/// [`MAX_GROUPS`] or [`MAX_FIELD_BYTES`]. An existing field that does not parse is replaced:
/// recipients ignore such a field as a whole (RFC 8941 §4.2), so it hid nothing.
pub fn add_groups(headers: &mut HeaderMap, groups: impl IntoIterator<Item = impl AsRef<str>>) {
    merge(headers, &CACHE_GROUPS, groups);
}

/// Appends `groups` to the response's `Cache-Group-Invalidation`, with the rules of
/// [`add_groups`]. Only meaningful on the response to an unsafe method (RFC 9875 §3).
pub fn add_invalidations(
    headers: &mut HeaderMap,
    groups: impl IntoIterator<Item = impl AsRef<str>>,
) {
    merge(headers, &CACHE_GROUP_INVALIDATION, groups);
}

/// The groups listed in `Cache-Groups`, in order, without repeats. Members that are not
/// Strings are skipped; a field that does not parse yields no group (RFC 8941 §4.2), with a
/// debug event.
pub fn groups(headers: &HeaderMap) -> Vec<String> {
    strings(headers, &CACHE_GROUPS)
}

/// The groups listed in `Cache-Group-Invalidation`, like [`groups`].
pub fn invalidations(headers: &HeaderMap) -> Vec<String> {
    strings(headers, &CACHE_GROUP_INVALIDATION)
}

/// Adds `groups` to the response's `Cache-Groups`: a handler's own tags (`challenge:42`).
pub fn tag(res: &mut HttpResponse, groups: impl IntoIterator<Item = impl AsRef<str>>) {
    add_groups(res.headers_mut(), groups);
}

/// Adds `groups` to the response's `Cache-Group-Invalidation`: what a successful write
/// changed. Caches act on it only on responses to unsafe methods (RFC 9875 §3), so call it
/// from a mutation handler.
pub fn invalidate(res: &mut HttpResponse, groups: impl IntoIterator<Item = impl AsRef<str>>) {
    add_invalidations(res.headers_mut(), groups);
}

/// Whether `group` can be listed: a non-empty `sf-string` (RFC 8941 §3.3.3: printable ASCII)
/// of at most [`MAX_GROUP_BYTES`].
pub fn is_valid_group(group: &str) -> bool {
    !group.is_empty()
        && group.len() <= MAX_GROUP_BYTES
        && group.bytes().all(|b| (0x20..=0x7e).contains(&b))
}

/// The field's members, all its lines joined (RFC 8941 §4.2: lines combine as one list).
fn parse(headers: &HeaderMap, name: &HeaderName) -> Result<List, String> {
    let mut joined = String::new();
    for value in headers.get_all(name) {
        let value = value.to_str().map_err(|_| "not visible ASCII".to_owned())?;
        if !joined.is_empty() {
            joined.push_str(", ");
        }
        joined.push_str(value);
    }
    Parser::new(&joined)
        .parse::<List>()
        .map_err(|error| error.to_string())
}

fn strings(headers: &HeaderMap, name: &HeaderName) -> Vec<String> {
    let list = match parse(headers, name) {
        Ok(list) => list,
        Err(error) => {
            tracing::debug!(field = %name, %error, "cache groups: malformed field ignored");
            return Vec::new();
        }
    };
    let mut out: Vec<String> = Vec::new();
    for group in list.iter().filter_map(as_group) {
        if !out.iter().any(|seen| seen == group) {
            out.push(group.to_owned());
        }
    }
    out
}

/// The group a member names, if it is a String (RFC 9875 §2: a List of Strings).
fn as_group(entry: &ListEntry) -> Option<&str> {
    match entry {
        ListEntry::Item(Item {
            bare_item: BareItem::String(group),
            ..
        }) => Some(group.as_str()),
        _ => None,
    }
}

/// Bytes `entry` takes in a serialized list, separator not included.
fn serialized_len(entry: &ListEntry) -> usize {
    let mut ser = ListSerializer::new();
    ser.members([entry]);
    ser.finish().map_or(0, |text| text.len())
}

fn merge(
    headers: &mut HeaderMap,
    name: &HeaderName,
    groups: impl IntoIterator<Item = impl AsRef<str>>,
) {
    let existing = parse(headers, name).unwrap_or_else(|error| {
        tracing::debug!(field = %name, %error, "cache groups: replacing a malformed field");
        List::new()
    });

    let mut kept: List = Vec::new();
    let mut bytes = 0;
    let mut dropped: Vec<String> = Vec::new();
    let mut fits = |entry: &ListEntry, kept: &List| {
        let len = serialized_len(entry) + if kept.is_empty() { 0 } else { 2 };
        if kept.len() < MAX_GROUPS && bytes + len <= MAX_FIELD_BYTES {
            bytes += len;
            true
        } else {
            false
        }
    };
    let is_listed =
        |kept: &List, group: &str| kept.iter().any(|entry| as_group(entry) == Some(group));

    for entry in existing {
        if as_group(&entry).is_some_and(|group| is_listed(&kept, group)) {
            continue;
        }
        if fits(&entry, &kept) {
            kept.push(entry);
        } else {
            dropped.push(format!("{entry:?}"));
        }
    }
    for group in groups {
        let group = group.as_ref();
        if !is_valid_group(group) {
            tracing::warn!(field = %name, group = ?group, "cache groups: not a valid group name (1 to {MAX_GROUP_BYTES} printable ASCII characters); dropped");
            count_dropped(name, 1);
            continue;
        }
        if is_listed(&kept, group) {
            continue;
        }
        let Ok(string) = sfv::String::from_string(group.to_owned()) else {
            continue; // unreachable: `is_valid_group` checked the sf-string alphabet
        };
        let entry = ListEntry::Item(Item::new(BareItem::String(string)));
        if fits(&entry, &kept) {
            kept.push(entry);
        } else {
            dropped.push(group.to_owned());
        }
    }
    if !dropped.is_empty() {
        tracing::warn!(field = %name, ?dropped, "cache groups: over {MAX_GROUPS} members or {MAX_FIELD_BYTES} bytes; the last ones dropped");
        count_dropped(name, dropped.len());
    }

    let mut ser = ListSerializer::new();
    ser.members(&kept);
    match ser.finish().map(HeaderValue::try_from) {
        Some(Ok(value)) => {
            headers.insert(name.clone(), value);
        }
        // An RFC 8941 serialization is visible ASCII and spaces: always a valid value.
        Some(Err(_)) | None => {
            headers.remove(name);
        }
    }
}

/// Counts groups left out of a field, so a write whose `Cache-Group-Invalidation` could not
/// list (and so not purge) all it changed shows in the metrics, not only in a log line:
/// `actix_conditional_cache_groups_dropped_total{field}`.
fn count_dropped(field: &HeaderName, groups: usize) {
    metrics::counter!("actix_conditional_cache_groups_dropped_total", "field" => field.as_str().to_owned())
        .increment(u64::try_from(groups).unwrap_or(u64::MAX));
}
