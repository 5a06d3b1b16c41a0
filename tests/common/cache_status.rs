//! Reads `Cache-Status` (RFC 9211) with a real structured-field parser (`sfv`, RFC 8941), and
//! maps this library's member back to the `X-Cache` label the tests speak in.
#![allow(dead_code)] // Each test binary uses a different part of this module.

use std::collections::BTreeMap;

use sfv::{BareItem, List, ListEntry, Parser};

/// One cache's member: its name and parameters, each rendered as text (`?1` for a bare flag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    pub(crate) name: String,
    pub(crate) params: BTreeMap<String, String>,
}

impl Member {
    pub(crate) fn param(&self, key: &str) -> Option<&str> {
        self.params.get(key).map(String::as_str)
    }

    pub(crate) fn has(&self, key: &str) -> bool {
        self.params.contains_key(key)
    }

    /// The `X-Cache` label this member stands for.
    pub(crate) fn label(&self) -> &'static str {
        let detail = self.param("detail");
        if self.has("hit") {
            return match detail {
                Some("revision") => "hit-revision",
                Some("stale") => "stale",
                _ => "hit",
            };
        }
        match (self.param("fwd"), detail) {
            (Some("stale"), Some("stale")) => "stale",
            (Some("stale"), Some("section")) => "section",
            (Some("stale"), _) => "refresh",
            (Some("bypass"), _) => "bypass",
            (Some("miss" | "request" | "vary-miss"), None) if self.has("collapsed") => "coalesced",
            (Some("miss" | "request" | "vary-miss"), _) => "miss",
            other => panic!("not a member this library renders: {other:?} in {self:?}"),
        }
    }
}

/// Every member of the `Cache-Status` field lines given, in order; panics on a field that is
/// not a valid sf-list.
pub(crate) fn members<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<Member> {
    let joined = lines.into_iter().collect::<Vec<_>>().join(", ");
    let list: List = Parser::new(&joined)
        .parse()
        .unwrap_or_else(|err| panic!("Cache-Status {joined:?} is not an sf-list: {err}"));
    list.into_iter()
        .map(|entry| {
            let ListEntry::Item(item) = entry else {
                panic!("Cache-Status {joined:?} has an inner list");
            };
            let name = match &item.bare_item {
                BareItem::Token(token) => token.as_str().to_owned(),
                BareItem::String(string) => string.as_str().to_owned(),
                other => panic!("Cache-Status member named {other:?} in {joined:?}"),
            };
            let params = item
                .params
                .iter()
                .map(|(key, value)| {
                    let value = match value {
                        BareItem::Boolean(true) => "?1".to_owned(),
                        BareItem::Boolean(false) => "?0".to_owned(),
                        BareItem::Integer(n) => n.to_string(),
                        BareItem::Token(token) => token.as_str().to_owned(),
                        BareItem::String(string) => string.as_str().to_owned(),
                        other => format!("{other:?}"),
                    };
                    (key.as_str().to_owned(), value)
                })
                .collect();
            Member { name, params }
        })
        .collect()
}

/// This library's member: the last one named `actix-conditional` (a cache appends its own).
pub(crate) fn ours<'a>(lines: impl IntoIterator<Item = &'a str>) -> Option<Member> {
    members(lines)
        .into_iter()
        .rev()
        .find(|member| member.name == "actix-conditional")
}

/// The `X-Cache` label of this library's member, or `<none>` without one.
pub(crate) fn label<'a>(lines: impl IntoIterator<Item = &'a str>) -> &'static str {
    ours(lines).map_or("<none>", |member| member.label())
}
