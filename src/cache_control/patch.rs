//! Django's merge rules: `patch_cache_control`, `add_never_cache_headers`, `patch_vary_headers`.

use std::{
    borrow::Cow,
    cell::RefCell,
    collections::{HashMap, HashSet},
    time::SystemTime,
};

use actix_web::http::header::{CACHE_CONTROL, EXPIRES, HeaderMap, HeaderName, HeaderValue, VARY};
use bytes::Bytes;

use super::parse::*;
use super::policy::*;

/// Merges `policy` into the response's `Cache-Control`, with Django's `patch_cache_control`
/// rules.
///
/// 1. Every `Cache-Control` field line is read (as one list, see [`parse_cache_control`]).
///    Names are lower-cased; values are kept verbatim. A directive that appears twice keeps
///    its first position and its last value (a Python `dict`).
/// 2. If both the header and `policy` have `max-age`, the smaller wins (a decorator and a
///    middleware both setting it). An existing `max-age` that is not valid delta-seconds loses
///    (Django raises `ValueError` there).
/// 3. Setting `public` removes an existing `private`, and setting `private` removes an existing
///    `public`, qualified forms included.
/// 4. `no-cache` values accumulate: `no-cache="Set-Cookie"` and `no-cache="Cookie"` both stay,
///    but a bare `no-cache` (like `policy`'s) replaces them all.
/// 5. Any other directive of `policy` replaces an existing one *in its original position*;
///    new directives are appended in [`CachePolicy`]'s canonical order.
///
/// The result is written back as one field line. If it is empty, `Cache-Control` is removed.
/// Garbage in the existing header (non-UTF-8 bytes, `max-age=abc`, 10,000 commas) never
/// panics: it is kept verbatim or skipped as described in the [module docs](mod@crate::cache_control).
///
/// # Examples
///
/// ```
/// use actix_conditional::cache_control::{CachePolicy, patch_cache_control};
/// use actix_web::http::header::{CACHE_CONTROL, HeaderMap, HeaderValue};
///
/// let mut headers = HeaderMap::new();
/// headers.insert(
///     CACHE_CONTROL,
///     HeaderValue::from_static(r#"no-cache="Set-Cookie", Max-Age=300, x-ext"#),
/// );
/// patch_cache_control(&mut headers, &CachePolicy::new().max_age(60).no_store());
/// assert_eq!(
///     headers.get(CACHE_CONTROL).unwrap(),
///     r#"no-cache="Set-Cookie", max-age=60, x-ext, no-store"#,
/// );
/// ```
pub fn patch_cache_control(headers: &mut HeaderMap, policy: &CachePolicy) {
    if !headers.contains_key(CACHE_CONTROL) {
        // The common case (the handler set none) renders the same line for the same policy
        // every time, on every request: remember it per thread instead of merging anew.
        if let Some(value) = rendered_alone(policy) {
            headers.insert(CACHE_CONTROL, value);
        }
        return;
    }
    let new: Vec<NewDirective> = policy.directives().collect();
    patch_in_steps(headers, &[&new]);
}

/// What [`patch_cache_control`] writes for `policy` on a response without `Cache-Control`.
pub(super) fn rendered_alone(policy: &CachePolicy) -> Option<HeaderValue> {
    // Policies are few (one per handler); past this many distinct ones, nothing is kept.
    const MAX_REMEMBERED: usize = 64;
    thread_local! {
        static RENDERED: RefCell<HashMap<CachePolicy, Option<HeaderValue>>> =
            RefCell::new(HashMap::new());
    }
    RENDERED.with(|rendered| {
        if let Some(value) = rendered.borrow().get(policy) {
            return value.clone();
        }
        let mut fresh = HeaderMap::new();
        let new: Vec<NewDirective> = policy.directives().collect();
        patch_in_steps(&mut fresh, &[&new]);
        let value = fresh.get(CACHE_CONTROL).cloned();
        let mut rendered = rendered.borrow_mut();
        if rendered.len() < MAX_REMEMBERED {
            rendered.insert(*policy, value.clone());
        }
        value
    })
}

/// Marks a response as never to be cached, exactly as Django's `add_never_cache_headers`
/// (and so the `@never_cache` decorator) does.
///
/// 1. `Expires` is set to now, unless the response already has one
///    (Django: `patch_response_headers(response, cache_timeout=-1)`).
/// 2. `max-age=0` is merged in, then `no-cache, no-store, must-revalidate, private`, each with
///    [`patch_cache_control`]'s rules.
///
/// On a response without `Cache-Control` this gives
/// `max-age=0, no-cache, no-store, must-revalidate, private`. Existing directives keep their
/// positions and a `public` is removed. `Last-Modified` and `ETag` are not touched: current
/// Django adds only `Expires` and `Cache-Control` here (the parity fixture records which headers
/// it added).
///
/// # Examples
///
/// ```
/// use actix_conditional::cache_control::add_never_cache_headers;
/// use actix_web::http::header::{CACHE_CONTROL, EXPIRES, HeaderMap, HeaderValue};
///
/// let mut headers = HeaderMap::new();
/// headers.insert(CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
/// add_never_cache_headers(&mut headers);
/// assert_eq!(
///     headers.get(CACHE_CONTROL).unwrap(),
///     "max-age=0, no-cache, no-store, must-revalidate, private",
/// );
/// assert!(headers.contains_key(EXPIRES));
/// ```
pub fn add_never_cache_headers(headers: &mut HeaderMap) {
    if !headers.contains_key(EXPIRES) {
        // IMF-fixdate, as Django's `http_date(time.time())` (RFC 9110 §5.6.7).
        if let Ok(now) = HeaderValue::from_str(&httpdate::fmt_http_date(SystemTime::now())) {
            headers.insert(EXPIRES, now);
        }
    }
    // Two calls in Django, so two steps here: the second step's directives are appended after
    // `max-age=0`, in Django's keyword order (`private` last), not CachePolicy's order.
    patch_in_steps(
        headers,
        &[
            &[(MAX_AGE, NewValue::Seconds(0))],
            &[
                (NO_CACHE, NewValue::Bare),
                (NO_STORE, NewValue::Bare),
                (MUST_REVALIDATE, NewValue::Bare),
                (PRIVATE, NewValue::Bare),
            ],
        ],
    );
}

/// Django's `patch_cache_control` applied once per step to `Cache-Control`.
fn patch_in_steps(headers: &mut HeaderMap, steps: &[&[NewDirective]]) {
    patch_field(headers, &CACHE_CONTROL, Syntax::List, steps);
}

/// How the members of a cache-control field are read and written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Syntax {
    /// A `Cache-Control` list (RFC 9111 §5.2): lenient, members kept verbatim.
    List,
    /// A Dictionary Structured Field (RFC 8941 §3.2), as targeted fields are (RFC 9213 §2.1).
    /// The existing field is read as a whole with an RFC 8941 parser, as a targeted cache
    /// reads it, so each name appears once and the merge writes each once.
    Dictionary,
}

/// Django's `patch_cache_control` applied once per step to the field `name`, parsing and
/// writing the header once.
pub(super) fn patch_field(
    headers: &mut HeaderMap,
    name: &HeaderName,
    syntax: Syntax,
    steps: &[&[NewDirective]],
) {
    // Owned members of a parsed dictionary; declared first so `merged` can borrow them.
    let members;
    let rendered = {
        let mut merged = Merged::default();
        match syntax {
            Syntax::List => {
                let existing = headers
                    .get_all(name)
                    .flat_map(|line| parse_cache_control(line.as_bytes()));
                for directive in existing {
                    merged.add_existing(directive);
                }
            }
            Syntax::Dictionary => {
                members = dictionary_members(headers, name);
                for (key, value) in &members {
                    let value = value.as_deref().map(str::as_bytes);
                    merged.add_existing(Directive::new(key.as_bytes(), value));
                }
            }
        }
        for step in steps {
            merged.apply(step);
        }
        merged.render()
    };
    if rendered.is_empty() {
        headers.remove(name);
        return;
    }
    let value = HeaderValue::from_maybe_shared(Bytes::from(rendered)).unwrap_or_else(|_| {
        // Unreachable in practice: every byte comes from a valid HeaderValue or from us.
        // Should it happen, the policy alone is still a safe answer.
        let mut merged = Merged::default();
        for step in steps {
            merged.apply(step);
        }
        HeaderValue::from_maybe_shared(Bytes::from(merged.render()))
            .unwrap_or_else(|_| HeaderValue::from_static("no-store"))
    });
    headers.insert(name.clone(), value);
}

/// The members of the field `name` read as one RFC 8941 Dictionary (its field lines joined
/// with commas, RFC 8941 §4.2), each as `(key, value as serialized)`; a bare (`true`) member
/// has no value, and its parameters are dropped (RFC 9213 §2.1: caches ignore them).
///
/// A field that is not a valid Dictionary gives nothing: a targeted cache ignores such a
/// field entirely (RFC 9213 §2.1), so none of it was in effect, and keeping part of it would
/// put into effect directives that were not.
fn dictionary_members(headers: &HeaderMap, name: &HeaderName) -> Vec<(String, Option<String>)> {
    let mut joined = Vec::new();
    for line in headers.get_all(name) {
        if !joined.is_empty() {
            joined.extend_from_slice(b", ");
        }
        joined.extend_from_slice(line.as_bytes());
    }
    let dictionary = match sfv::Parser::new(&joined)
        .with_version(sfv::Version::Rfc8941)
        .parse::<sfv::Dictionary>()
    {
        Ok(dictionary) => dictionary,
        Err(error) => {
            tracing::debug!(
                field = %name,
                %error,
                "targeted field: not a structured-field dictionary, ignored as caches ignore it (RFC 9213 §2.1)"
            );
            return Vec::new();
        }
    };
    dictionary
        .into_iter()
        .filter_map(|(key, entry)| {
            if let sfv::ListEntry::Item(item) = &entry
                && item.bare_item.as_boolean() == Some(true)
            {
                return Some((key.as_str().to_owned(), None));
            }
            let mut one = sfv::Dictionary::new();
            one.insert(key.clone(), entry);
            // `key=value`: serialized alone, the member's value follows `key=`.
            let member = sfv::FieldType::serialize(&one)?;
            let value = member.strip_prefix(key.as_str())?.strip_prefix('=')?;
            Some((key.as_str().to_owned(), Some(value.to_owned())))
        })
        .collect()
}

/// Django's `defaultdict(set)` of directives: insertion-ordered, last value wins, `no-cache`
/// values accumulate.
#[derive(Debug, Default)]
struct Merged<'a> {
    /// Insertion order; `None` marks a directive deleted by public/private.
    entries: Vec<Option<(Vec<u8>, Slot<'a>)>>,
    /// Lower-cased name → index into `entries`, so 10,000 distinct names stay linear.
    index: HashMap<Vec<u8>, usize>,
}

#[derive(Debug)]
enum Slot<'a> {
    /// `name`
    Bare,
    /// `name=value`, value verbatim.
    Value(Cow<'a, [u8]>),
    /// `no-cache`: a bare `no-cache` wins over any field-name values (Django's `True in values`).
    /// Field names are a set (Django's) kept in first-seen order.
    NoCache {
        bare: bool,
        fields: Vec<Cow<'a, [u8]>>,
        seen: HashSet<Cow<'a, [u8]>>,
    },
}

impl<'a> Merged<'a> {
    fn slot(&self, name: &[u8]) -> Option<&Slot<'a>> {
        let i = *self.index.get(name)?;
        self.entries[i].as_ref().map(|(_, slot)| slot)
    }

    fn slot_mut(&mut self, name: &[u8]) -> Option<&mut Slot<'a>> {
        let i = *self.index.get(name)?;
        self.entries[i].as_mut().map(|(_, slot)| slot)
    }

    fn insert(&mut self, name: Vec<u8>, slot: Slot<'a>) {
        if let Some(existing) = self.slot_mut(&name) {
            // Python dict assignment: the key keeps its original position.
            *existing = slot;
        } else {
            self.index.insert(name.clone(), self.entries.len());
            self.entries.push(Some((name, slot)));
        }
    }

    fn remove(&mut self, name: &str) {
        if let Some(i) = self.index.remove(name.as_bytes()) {
            self.entries[i] = None;
        }
    }

    fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name.as_bytes())
    }

    fn add_existing(&mut self, d: Directive<'a>) {
        if d.value().is_some_and(is_unterminated_quote) {
            // `no-cache="abc` ran to the end of its field line. Written back, it would swallow
            // the directives after it, so it is dropped (Django keeps it).
            return;
        }
        let name = d.name().to_ascii_lowercase();
        if name == NO_CACHE.as_bytes() {
            self.add_no_cache(d.value().map(Cow::Borrowed));
            return;
        }
        let slot = match d.value() {
            Some(v) => Slot::Value(v.into()),
            None => Slot::Bare,
        };
        self.insert(name, slot);
    }

    fn add_no_cache(&mut self, field: Option<Cow<'a, [u8]>>) {
        if self.slot(NO_CACHE.as_bytes()).is_none() {
            let empty = Slot::NoCache {
                bare: false,
                fields: Vec::new(),
                seen: HashSet::new(),
            };
            self.insert(NO_CACHE.as_bytes().to_vec(), empty);
        }
        if let Some(Slot::NoCache { bare, fields, seen }) = self.slot_mut(NO_CACHE.as_bytes()) {
            match field {
                None => *bare = true,
                // Once bare, field names are never rendered (Django: `True in values`).
                Some(_) if *bare => {}
                Some(f) => {
                    if seen.insert(f.clone()) {
                        fields.push(f);
                    }
                }
            }
        }
    }

    /// One call of Django's `patch_cache_control(response, **kwargs)`.
    fn apply(&mut self, new: &[NewDirective]) {
        let has = |wanted: &str| new.iter().any(|&(name, _)| name == wanted);

        // Django: `min(int(cc["max-age"]), kwargs["max_age"])`. Where `int()` would raise (or
        // accept what delta-seconds does not: a sign, `_`, a bare `max-age` read as
        // `int(True)`), the existing value is treated as absent and the new max-age wins.
        // The comparison is exact, not clamped to 2^31 (RFC 9111 §1.2.2): the result is one of
        // the two values as written, so patching twice with the same policy changes nothing.
        let existing_max_age = match self.slot(MAX_AGE.as_bytes()) {
            Some(Slot::Value(v)) => parse_delta_seconds_u64(v),
            _ => None,
        };

        // Allow overriding private caching and vice versa (RFC 9111 §5.2.2.7, §5.2.2.9).
        if self.contains(PRIVATE) && has(PUBLIC) {
            self.remove(PRIVATE);
        } else if self.contains(PUBLIC) && has(PRIVATE) {
            self.remove(PUBLIC);
        }

        for &(name, value) in new {
            if name == NO_CACHE {
                match value {
                    // Django's `no_cache="Set-Cookie"`: added to the set, quoted (RFC 9111
                    // §5.2.2.4 generates the quoted-string form).
                    NewValue::Fields(fields) => {
                        for field in fields.iter().filter(|f| is_token(f.as_bytes())) {
                            let quoted = format!("\"{field}\"").into_bytes();
                            self.add_no_cache(Some(Cow::Owned(quoted)));
                        }
                    }
                    _ => self.add_no_cache(None),
                }
                continue;
            }
            let slot = match value {
                NewValue::Bare => Slot::Bare,
                NewValue::Text(text) => Slot::Value(Cow::Borrowed(text.as_bytes())),
                NewValue::Fields(fields) => {
                    let names: Vec<&str> = fields
                        .iter()
                        .copied()
                        .filter(|f| is_token(f.as_bytes()))
                        .collect();
                    Slot::Value(format!("\"{}\"", names.join(", ")).into_bytes().into())
                }
                NewValue::Seconds(secs) => {
                    let secs = match existing_max_age {
                        // Smaller than a u32, so the conversion cannot fail.
                        Some(old) if name == MAX_AGE => {
                            u32::try_from(old).unwrap_or(secs).min(secs)
                        }
                        _ => secs,
                    };
                    Slot::Value(secs.to_string().into_bytes().into())
                }
            };
            self.insert(name.as_bytes().to_vec(), slot);
        }
    }

    fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut push = |name: &[u8], value: Option<&[u8]>| {
            if !out.is_empty() {
                out.extend_from_slice(b", ");
            }
            out.extend_from_slice(name);
            if let Some(value) = value {
                out.push(b'=');
                out.extend_from_slice(value);
            }
        };
        for (name, slot) in self.entries.iter().flatten() {
            match slot {
                Slot::Bare => push(name, None),
                Slot::Value(v) => push(name, Some(v)),
                Slot::NoCache { bare: true, .. } => push(name, None),
                Slot::NoCache {
                    bare: false,
                    fields,
                    ..
                } => {
                    for field in fields {
                        push(name, Some(field));
                    }
                }
            }
        }
        out
    }
}

/// Adds header names to `Vary` (RFC 9110 §12.5.5), with Django's `patch_vary_headers` rules.
///
/// - Every existing `Vary` field line is read and split on commas; whitespace and empty members
///   are dropped.
/// - Names are compared ignoring ASCII case; the first spelling is kept, and the original order
///   is kept (caches may hash the list).
/// - If `*` appears anywhere, existing or new, the result is `*`.
/// - Each entry of `new_headers` may itself be a comma-separated list; entries with bytes that
///   cannot appear in a header value (control characters) are skipped.
///
/// The result is written back as one field line; an empty result removes `Vary`.
///
/// # Examples
///
/// ```
/// use actix_conditional::cache_control::patch_vary_headers;
/// use actix_web::http::header::{HeaderMap, HeaderValue, VARY};
///
/// let mut headers = HeaderMap::new();
/// headers.insert(VARY, HeaderValue::from_static("Accept-Encoding, cookie"));
/// patch_vary_headers(&mut headers, &["Cookie", "Accept-Language"]);
/// assert_eq!(headers.get(VARY).unwrap(), "Accept-Encoding, cookie, Accept-Language");
///
/// patch_vary_headers(&mut headers, &["*"]);
/// assert_eq!(headers.get(VARY).unwrap(), "*");
/// ```
pub fn patch_vary_headers(headers: &mut HeaderMap, new_headers: &[&str]) {
    let rendered = {
        let existing = headers
            .get_all(VARY)
            .flat_map(|line| split_list(line.as_bytes()));
        let new = new_headers
            .iter()
            .filter(|name| name.bytes().all(is_field_value_byte))
            .flat_map(|name| split_list(name.as_bytes()));

        let mut seen = HashSet::new();
        let mut out = Vec::new();
        let mut star = false;
        for name in existing.chain(new) {
            if name == b"*" {
                star = true;
                break;
            }
            if seen.insert(name.to_ascii_lowercase()) {
                if !out.is_empty() {
                    out.extend_from_slice(b", ");
                }
                out.extend_from_slice(name);
            }
        }
        if star { b"*".to_vec() } else { out }
    };
    if rendered.is_empty() {
        headers.remove(VARY);
        return;
    }
    // Every byte comes from a valid HeaderValue or from a filtered &str: this cannot fail, and
    // if it somehow did, the existing header is left as it was.
    if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(rendered)) {
        headers.insert(VARY, value);
    }
}

/// Members of a comma-separated list, trimmed, empty ones skipped. Not quote-aware: `Vary`
/// holds field names only (RFC 9110 §12.5.5).
fn split_list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|m| !m.is_empty())
}

/// What `HeaderValue::from_bytes` accepts: visible ASCII, SP, HTAB and obs-text.
const fn is_field_value_byte(b: u8) -> bool {
    (b >= 0x20 && b != 0x7f) || b == b'\t'
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every combination of visibility, ages and flags (3 × 3 × 3 × 3 × 2^5 policies).
    fn all_policies() -> Vec<CachePolicy> {
        let ages = [None, Some(0), Some(60)];
        let mut out = Vec::new();
        for vis in 0..3 {
            for max_age in ages {
                for s_maxage in ages {
                    for swr in ages {
                        for flags in 0..32u8 {
                            let mut p = match vis {
                                1 => CachePolicy::new().public(),
                                2 => CachePolicy::new().private(),
                                _ => CachePolicy::new(),
                            };
                            if let Some(v) = max_age {
                                p = p.max_age(v);
                            }
                            if let Some(v) = s_maxage {
                                p = p.s_maxage(v);
                            }
                            if let Some(v) = swr {
                                p = p.stale_while_revalidate(v);
                            }
                            let flag = |bit: u8| flags & (1 << bit) != 0;
                            if flag(0) {
                                p = p.no_cache();
                            }
                            if flag(1) {
                                p = p.no_store();
                            }
                            if flag(2) {
                                p = p.must_revalidate();
                            }
                            if flag(3) {
                                p = p.immutable();
                            }
                            if flag(4) {
                                p = p.stale_if_error(30);
                            }
                            out.push(p);
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn the_remembered_line_is_what_the_merge_writes() {
        for policy in all_policies() {
            let mut merged = HeaderMap::new();
            let new: Vec<NewDirective> = policy.directives().collect();
            patch_in_steps(&mut merged, &[&new]);
            // Twice: the first call renders and remembers (up to its bound), the second reads.
            for _ in 0..2 {
                let mut fast = HeaderMap::new();
                patch_cache_control(&mut fast, &policy);
                assert_eq!(
                    fast.get(CACHE_CONTROL),
                    merged.get(CACHE_CONTROL),
                    "{policy:?}"
                );
            }
        }
    }
}
