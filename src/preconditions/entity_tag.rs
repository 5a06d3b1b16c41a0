//! Entity-tags on the wire: one tag (`ETag`) and tag lists (`If-Match`, `If-None-Match`).
//!
//! RFC 9110 §8.8.3 grammar:
//!
//! ```text
//! entity-tag = [ weak ] opaque-tag
//! weak       = %s"W/"                       ; case-sensitive
//! opaque-tag = DQUOTE *etagc DQUOTE
//! etagc      = %x21 / %x23-7E / obs-text    ; obs-text = %x80-FF, so "," is allowed
//! If-Match / If-None-Match = "*" / #entity-tag
//! ```
//!
//! Why not actix's typed `IfMatch` / `IfNoneMatch`: they split every field line on `,` without
//! regard to quotes (so the valid tag `"a,b"` is lost), recognise `*` only when the *first*
//! field line is `*`, and turn any non-ASCII (obs-text) byte into "header absent". Those are
//! fine for emitting headers but wrong for reading requests, so this module parses bytes
//! itself. It never allocates for a single field line and never panics.

use std::borrow::Cow;
use std::fmt;

use actix_web::http::header::{EntityTag, HeaderValue};

/// The most bytes of an `If-Match` / `If-None-Match` value that are examined.
///
/// Longer values are answered without looking at a single member: `If-None-Match` then counts
/// as "no match" (a full 200) and `If-Match` as "no match" (412). The bound keeps the work per
/// request linear in a small constant whatever a client sends.
pub const MAX_TAG_LIST_BYTES: usize = 8 * 1024;

/// A borrowed entity-tag (RFC 9110 §8.8.3): its weakness and its opaque tag without quotes.
///
/// Comparison is byte-for-byte and case-sensitive, with no unescaping (§8.8.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EntityTagRef<'a> {
    weak: bool,
    opaque: &'a [u8],
}

impl<'a> EntityTagRef<'a> {
    /// Makes a strong or weak tag from opaque bytes (without the quotes).
    ///
    /// Returns `None` if a byte is not allowed in an entity-tag (DQUOTE, space, control, DEL).
    pub fn new(weak: bool, opaque: &'a [u8]) -> Option<Self> {
        opaque
            .iter()
            .all(|&b| is_etagc(b))
            .then_some(Self { weak, opaque })
    }

    /// Parses a whole field value holding exactly one entity-tag, such as an `ETag` header.
    ///
    /// Surrounding spaces and tabs are ignored; anything else around the tag makes it invalid.
    pub fn parse(value: &'a [u8]) -> Option<Self> {
        let value = trim_ows(value);
        let (tag, rest) = scan_tag(value)?;
        rest.is_empty().then_some(tag)
    }

    /// Parses the value of an `ETag` response header.
    pub fn from_header(value: &'a HeaderValue) -> Option<Self> {
        Self::parse(value.as_bytes())
    }

    /// Whether the tag carries the `W/` prefix.
    pub fn is_weak(&self) -> bool {
        self.weak
    }

    /// The opaque tag, without quotes.
    pub fn opaque(&self) -> &'a [u8] {
        self.opaque
    }

    /// The same opaque tag, marked weak.
    pub fn weakened(self) -> Self {
        Self { weak: true, ..self }
    }

    /// Strong comparison (RFC 9110 §8.8.3.2): both strong and the opaque tags equal.
    pub fn strong_eq(&self, other: &EntityTagRef<'_>) -> bool {
        !self.weak && !other.weak && self.opaque == other.opaque
    }

    /// Weak comparison (RFC 9110 §8.8.3.2): the opaque tags equal, whatever the prefixes.
    pub fn weak_eq(&self, other: &EntityTagRef<'_>) -> bool {
        self.opaque == other.opaque
    }

    /// The tag as a header value: `"opaque"` or `W/"opaque"`.
    pub fn to_header_value(&self) -> HeaderValue {
        let mut bytes = Vec::with_capacity(self.opaque.len() + 4);
        if self.weak {
            bytes.extend_from_slice(b"W/");
        }
        bytes.push(b'"');
        bytes.extend_from_slice(self.opaque);
        bytes.push(b'"');
        HeaderValue::from_bytes(&bytes).expect("etagc bytes are valid header value bytes")
    }
}

impl<'a> From<&'a EntityTag> for EntityTagRef<'a> {
    /// Borrows actix's `EntityTag`; its constructors only accept valid tags.
    fn from(tag: &'a EntityTag) -> Self {
        Self {
            weak: tag.weak,
            opaque: tag.tag().as_bytes(),
        }
    }
}

impl fmt::Display for EntityTagRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = if self.weak { "W/" } else { "" };
        write!(f, "{prefix}\"{}\"", String::from_utf8_lossy(self.opaque))
    }
}

/// A parsed `If-Match` or `If-None-Match` value (RFC 9110 §13.1.1, §13.1.2).
#[derive(Debug, Clone)]
pub enum EntityTagList<'a> {
    /// `*`: any current representation.
    Any,
    /// A list of members; invalid members are skipped while iterating. It may yield nothing
    /// (e.g. for `,` or garbage), and the header still counts as present.
    Tags(EntityTagMembers<'a>),
    /// Longer than [`MAX_TAG_LIST_BYTES`]: not examined.
    TooLarge,
}

impl<'a> EntityTagList<'a> {
    /// Parses a (joined) field value. `None` means the header counts as absent: the value is
    /// empty or only whitespace, as Go and Django treat it.
    pub fn parse(value: &'a [u8]) -> Option<Self> {
        if value.len() > MAX_TAG_LIST_BYTES {
            return Some(Self::TooLarge);
        }
        match trim_ows(value) {
            b"" => None,
            b"*" => Some(Self::Any),
            members => Some(Self::Tags(EntityTagMembers { rest: members })),
        }
    }
}

/// Iterator over the valid members of an entity-tag list, left to right.
///
/// A member that does not parse (including `*` inside a list, which §13.1.1 does not allow) is
/// skipped up to the next comma outside quotes, as Django does; RFC 9110 §2.3 lets a recipient
/// recover valid members.
#[derive(Debug, Clone)]
pub struct EntityTagMembers<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for EntityTagMembers<'a> {
    type Item = EntityTagRef<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            // Empty members and optional whitespace are tolerated (§5.6.1.2).
            let start = self
                .rest
                .iter()
                .position(|&b| !matches!(b, b' ' | b'\t' | b','))?;
            let member = &self.rest[start..];
            if let Some((tag, after)) = scan_tag(member) {
                let after = trim_ows_start(after);
                match after.first() {
                    None => {
                        self.rest = after;
                        return Some(tag);
                    }
                    Some(b',') => {
                        self.rest = &after[1..];
                        return Some(tag);
                    }
                    Some(_) => {}
                }
            }
            self.rest = skip_member(member);
        }
    }
}

/// Joins every field line of a header with `,` (RFC 9110 §5.3), borrowing when there is one.
///
/// Returns `None` when the header is absent. Multi-line requests are rare, so only they
/// allocate; the join stops growing once it passes [`MAX_TAG_LIST_BYTES`].
pub fn join_field_lines<'a>(
    mut lines: impl Iterator<Item = &'a HeaderValue>,
) -> Option<Cow<'a, [u8]>> {
    let first = lines.next()?;
    let Some(second) = lines.next() else {
        return Some(Cow::Borrowed(first.as_bytes()));
    };
    let mut joined = first.as_bytes().to_vec();
    for line in std::iter::once(second).chain(lines) {
        if joined.len() > MAX_TAG_LIST_BYTES {
            break;
        }
        joined.push(b',');
        joined.extend_from_slice(line.as_bytes());
    }
    Some(Cow::Owned(joined))
}

/// RFC 9110 §8.8.3: `%x21 / %x23-7E / obs-text`.
fn is_etagc(b: u8) -> bool {
    b == 0x21 || (0x23..=0x7E).contains(&b) || b >= 0x80
}

/// Reads one entity-tag at the start of `input`; returns it and the bytes after it.
fn scan_tag(input: &[u8]) -> Option<(EntityTagRef<'_>, &[u8])> {
    let (weak, quoted) = match input {
        [b'W', b'/', rest @ ..] => (true, rest),
        rest => (false, rest),
    };
    let body = quoted.strip_prefix(b"\"")?;
    let end = body.iter().position(|&b| !is_etagc(b))?;
    if body[end] != b'"' {
        return None;
    }
    let tag = EntityTagRef {
        weak,
        opaque: &body[..end],
    };
    Some((tag, &body[end + 1..]))
}

/// Skips an unparsable member: up to and past the next comma outside quotes.
fn skip_member(member: &[u8]) -> &[u8] {
    let mut in_quotes = false;
    for (i, &b) in member.iter().enumerate() {
        match b {
            b'"' => in_quotes = !in_quotes,
            b',' if !in_quotes => return &member[i + 1..],
            _ => {}
        }
    }
    &[]
}

fn trim_ows_start(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|&b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(bytes.len());
    &bytes[start..]
}

pub(crate) fn trim_ows(bytes: &[u8]) -> &[u8] {
    let bytes = trim_ows_start(bytes);
    let end = bytes
        .iter()
        .rposition(|&b| !matches!(b, b' ' | b'\t'))
        .map_or(0, |i| i + 1);
    &bytes[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(value: &str) -> Vec<String> {
        match EntityTagList::parse(value.as_bytes()) {
            Some(EntityTagList::Tags(members)) => members.map(|t| t.to_string()).collect(),
            other => panic!("expected a tag list for {value:?}, got {other:?}"),
        }
    }

    #[test]
    fn parses_strong_and_weak_tags() {
        let strong = EntityTagRef::parse(b"\"abc\"").unwrap();
        assert!(!strong.is_weak());
        assert_eq!(strong.opaque(), b"abc");
        let weak = EntityTagRef::parse(b" W/\"abc\" ").unwrap();
        assert!(weak.is_weak());
        assert_eq!(weak.to_string(), "W/\"abc\"");
    }

    #[test]
    fn empty_opaque_tag_is_valid() {
        assert_eq!(EntityTagRef::parse(b"\"\"").unwrap().opaque(), b"");
    }

    #[test]
    fn lowercase_weak_prefix_is_invalid() {
        assert_eq!(EntityTagRef::parse(b"w/\"x\""), None);
    }

    #[test]
    fn unquoted_or_spaced_tags_are_invalid() {
        for bad in [
            &b"abc"[..],
            b"\"a b\"",
            b"\"abc",
            b"\"a\"b\"",
            b"\"a\" x",
            b"\"\x7f\"",
        ] {
            assert_eq!(EntityTagRef::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn obs_text_is_allowed_in_tags() {
        let tag = EntityTagRef::parse(b"\"caf\xc3\xa9\xff\"").unwrap();
        assert_eq!(tag.opaque(), b"caf\xc3\xa9\xff");
    }

    #[test]
    fn comma_inside_quotes_belongs_to_the_tag() {
        assert_eq!(tags("\"a,b\", W/\"c\""), ["\"a,b\"", "W/\"c\""]);
    }

    #[test]
    fn invalid_members_are_skipped() {
        assert_eq!(
            tags("\"a\", bogus, w/\"x\", *, \"b c\", \"d\""),
            ["\"a\"", "\"d\""]
        );
    }

    #[test]
    fn empty_members_and_whitespace_are_tolerated() {
        assert_eq!(tags(" , ,\t\"a\" ,, \"b\",  "), ["\"a\"", "\"b\""]);
    }

    #[test]
    fn lone_star_is_any_but_star_in_list_is_not() {
        assert!(matches!(
            EntityTagList::parse(b" * "),
            Some(EntityTagList::Any)
        ));
        assert_eq!(tags("*, \"a\""), ["\"a\""]);
    }

    #[test]
    fn empty_value_counts_as_absent() {
        assert!(EntityTagList::parse(b"").is_none());
        assert!(EntityTagList::parse(b" \t ").is_none());
    }

    #[test]
    fn garbage_yields_an_empty_list() {
        assert!(tags(",").is_empty());
        assert!(tags("\"unterminated, \"x").is_empty());
    }

    #[test]
    fn oversized_list_is_not_examined() {
        let huge = "\"a\",".repeat(MAX_TAG_LIST_BYTES);
        assert!(matches!(
            EntityTagList::parse(huge.as_bytes()),
            Some(EntityTagList::TooLarge)
        ));
    }

    #[test]
    fn field_lines_are_joined_in_order() {
        let lines = [
            HeaderValue::from_static("\"a\""),
            HeaderValue::from_static("\"b\""),
        ];
        let joined = join_field_lines(lines.iter()).unwrap();
        assert_eq!(&*joined, b"\"a\",\"b\"");
        let one = [HeaderValue::from_static("\"a\"")];
        assert!(matches!(
            join_field_lines(one.iter()),
            Some(Cow::Borrowed(_))
        ));
        assert!(join_field_lines([].iter()).is_none());
    }

    #[test]
    fn comparison_table_matches_rfc_9110_8_8_3_2() {
        let t = |s: &'static str| EntityTagRef::parse(s.as_bytes()).unwrap();
        // (A, B, strong, weak)
        let table = [
            ("W/\"1\"", "W/\"1\"", false, true),
            ("W/\"1\"", "W/\"2\"", false, false),
            ("W/\"1\"", "\"1\"", false, true),
            ("\"1\"", "\"1\"", true, true),
        ];
        for (a, b, strong, weak) in table {
            assert_eq!(t(a).strong_eq(&t(b)), strong, "{a} strong {b}");
            assert_eq!(t(a).weak_eq(&t(b)), weak, "{a} weak {b}");
        }
    }

    #[test]
    fn borrows_actix_entity_tags() {
        let tag = EntityTag::new_weak("v1".to_owned());
        assert_eq!(EntityTagRef::from(&tag).to_string(), "W/\"v1\"");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn list_bytes() -> impl Strategy<Value = Vec<u8>> {
            let piece = prop_oneof![
                Just(b"\"".to_vec()),
                Just(b",".to_vec()),
                Just(b"W/".to_vec()),
                Just(b"*".to_vec()),
                Just(b" ".to_vec()),
                "[a-z0-9]{0,6}".prop_map(String::into_bytes),
                proptest::collection::vec(any::<u8>(), 0..4),
            ];
            proptest::collection::vec(piece, 0..40).prop_map(|p| p.concat())
        }

        /// A reference reading of RFC 9110's grammar, written from the ABNF and nothing else:
        /// `#entity-tag` (§5.6.1: `[ element ] *( OWS "," OWS [ element ] )`), `entity-tag =
        /// [ weak ] opaque-tag`, `weak = %s"W/"`, `opaque-tag = DQUOTE *etagc DQUOTE`
        /// (§8.8.3). `None` when the value is not such a list: no recovery.
        fn reference_list(value: &[u8]) -> Option<Vec<(bool, Vec<u8>)>> {
            let is_ows = |b: u8| b == b' ' || b == b'\t';
            let mut tags = Vec::new();
            let mut i = 0;
            loop {
                while i < value.len() && is_ows(value[i]) {
                    i += 1;
                }
                if i == value.len() {
                    return Some(tags);
                }
                if value[i] == b',' {
                    i += 1;
                    continue;
                }
                let weak = value[i..].starts_with(b"W/");
                if weak {
                    i += 2;
                }
                if value.get(i) != Some(&b'"') {
                    return None;
                }
                i += 1;
                let start = i;
                while value.get(i).is_some_and(|&b| b != b'"') {
                    let b = value[i];
                    if !(b == 0x21 || (0x23..=0x7E).contains(&b) || b >= 0x80) {
                        return None;
                    }
                    i += 1;
                }
                if i == value.len() {
                    return None;
                }
                tags.push((weak, value[start..i].to_vec()));
                i += 1;
                while i < value.len() && is_ows(value[i]) {
                    i += 1;
                }
                match value.get(i) {
                    None => return Some(tags),
                    Some(b',') => i += 1,
                    Some(_) => return None,
                }
            }
        }

        /// Valid lists, built from the grammar: tags (with obs-text), empty elements, OWS.
        fn valid_list() -> impl Strategy<Value = Vec<u8>> {
            let opaque = proptest::collection::vec(
                prop_oneof![Just(0x21u8), 0x23u8..=0x7E, 0x80u8..=0xFF],
                0..8,
            );
            let element = prop_oneof![
                (any::<bool>(), opaque).prop_map(|(weak, opaque)| {
                    let mut tag = if weak {
                        b"W/\"".to_vec()
                    } else {
                        b"\"".to_vec()
                    };
                    tag.extend(opaque);
                    tag.push(b'"');
                    tag
                }),
                Just(Vec::new()),
            ];
            let ows = "[ \t]{0,2}".prop_map(String::into_bytes);
            proptest::collection::vec((ows.clone(), element, ows), 1..12).prop_map(|parts| {
                let mut out = Vec::new();
                for (i, (before, element, after)) in parts.into_iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend(before);
                    out.extend(element);
                    out.extend(after);
                }
                out
            })
        }

        /// What our parser yields for `value`, as `(weak, opaque)` pairs; `None` when it
        /// reads the header as absent, `*` or too large.
        fn ours(value: &[u8]) -> Option<Vec<(bool, Vec<u8>)>> {
            match EntityTagList::parse(value)? {
                EntityTagList::Tags(members) => Some(
                    members
                        .map(|tag| (tag.is_weak(), tag.opaque().to_vec()))
                        .collect(),
                ),
                EntityTagList::Any | EntityTagList::TooLarge => None,
            }
        }

        proptest! {
            /// Wherever the grammar accepts a value, we read exactly its tags; where it does
            /// not, we only ever yield tags that are valid (recovery, checked above).
            #[test]
            fn agrees_with_the_grammar_on_valid_lists(value in valid_list()) {
                let expected = reference_list(&value).expect("generated from the grammar");
                let trimmed_empty = value.iter().all(|&b| b == b' ' || b == b'\t');
                if trimmed_empty {
                    prop_assert_eq!(ours(&value), None, "an empty value counts as absent");
                } else {
                    prop_assert_eq!(ours(&value), Some(expected));
                }
            }

            #[test]
            fn agrees_with_the_grammar_on_noise(bytes in list_bytes()) {
                let trimmed = trim_ows(&bytes);
                if let Some(expected) = reference_list(&bytes)
                    && !trimmed.is_empty()
                    && trimmed != b"*"
                {
                    prop_assert_eq!(ours(&bytes), Some(expected));
                }
            }

            #[test]
            fn parsing_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
                let _ = EntityTagRef::parse(&bytes);
                if let Some(EntityTagList::Tags(members)) = EntityTagList::parse(&bytes) {
                    prop_assert!(members.count() <= bytes.len());
                }
            }

            #[test]
            fn every_member_yielded_is_a_valid_tag(bytes in list_bytes()) {
                if let Some(EntityTagList::Tags(members)) = EntityTagList::parse(&bytes) {
                    for tag in members {
                        let rendered = tag.to_header_value();
                        prop_assert_eq!(EntityTagRef::parse(rendered.as_bytes()), Some(tag));
                    }
                }
            }

            #[test]
            fn valid_tags_round_trip_through_a_list(
                raw in proptest::collection::vec(("[!#-~]{0,8}", any::<bool>()), 1..20)
            ) {
                let rendered: Vec<String> = raw
                    .iter()
                    .map(|(o, w)| format!("{}\"{o}\"", if *w { "W/" } else { "" }))
                    .collect();
                let value = rendered.join(" , ");
                prop_assert_eq!(tags(&value), rendered);
            }

            #[test]
            fn oversized_lists_take_no_member_work(extra in 1usize..4096) {
                let value = vec![b','; MAX_TAG_LIST_BYTES + extra];
                prop_assert!(matches!(EntityTagList::parse(&value), Some(EntityTagList::TooLarge)));
            }
        }
    }
}
