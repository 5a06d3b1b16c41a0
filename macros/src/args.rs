//! Option parsing shared by `#[etag_cached]`, `#[cache_control]` and `#[never_cache]`.
//!
//! Every option is one row of the `options!` table below: its keyword, its `Key` variant and the
//! kind of value it takes. A macro accepts a subset of the keys (`ETAG_CACHED_KEYS`,
//! `CACHE_CONTROL_KEYS`); the parser peeks only those, so an unknown key reads
//! "expected one of: `max_age`, …" with exactly the keys that macro accepts.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote};
use syn::parse::{Lookahead1, ParseStream, Parser as _};
use syn::punctuated::Punctuated;
use syn::{Error, LitInt, LitStr, Path, Token, bracketed};

/// The kind of value an option takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A bare flag: `public`.
    Flag,
    /// A bare flag, or field names qualifying it: `no_cache`, `no_cache = "Set-Cookie"`,
    /// `private = ["Set-Cookie", "Authorization-Info"]` (RFC 9111 §5.2.2.4, §5.2.2.7).
    FlagOrFields,
    /// Extension directives (RFC 9111 §5.2.3): `extensions = ["custom=456", "x-flag"]`.
    Extensions,
    /// Delta-seconds: `max_age = 60` (a `u32` integer literal).
    Seconds,
    /// Header names: `vary = ["Accept-Language"]`.
    HeaderNames,
    /// A function path: `etag = revision`.
    FnPath,
    /// A string literal: `cache = "challenges"`.
    Str,
    /// Space-separated cache group names: `tags = "challenges challenge-list"`.
    Groups,
}

macro_rules! options {
    ($($variant:ident => $kw:ident : $kind:ident,)*) => {
        mod kw {
            $(syn::custom_keyword!($kw);)*
        }

        /// One option key.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum Key {
            $($variant,)*
        }

        impl Key {
            /// The key as written in the attribute.
            pub(crate) const fn name(self) -> &'static str {
                match self {
                    $(Key::$variant => stringify!($kw),)*
                }
            }

            const fn kind(self) -> Kind {
                match self {
                    $(Key::$variant => Kind::$kind,)*
                }
            }

            fn peek(self, lookahead: &Lookahead1<'_>) -> bool {
                match self {
                    $(Key::$variant => lookahead.peek(kw::$kw),)*
                }
            }

            fn parse_keyword(self, input: ParseStream<'_>) -> syn::Result<Span> {
                match self {
                    $(Key::$variant => input.parse::<kw::$kw>().map(|kw| kw.span),)*
                }
            }
        }
    };
}

options! {
    MaxAge => max_age: Seconds,
    SMaxage => s_maxage: Seconds,
    Public => public: Flag,
    Private => private: FlagOrFields,
    NoCache => no_cache: FlagOrFields,
    NoStore => no_store: Flag,
    MustRevalidate => must_revalidate: Flag,
    ProxyRevalidate => proxy_revalidate: Flag,
    Immutable => immutable: Flag,
    StaleWhileRevalidate => stale_while_revalidate: Seconds,
    StaleIfError => stale_if_error: Seconds,
    CdnMaxAge => cdn_max_age: Seconds,
    SurrogateMaxAge => surrogate_max_age: Seconds,
    Vary => vary: HeaderNames,
    Etag => etag: FnPath,
    LastModified => last_modified: FnPath,
    Cache => cache: Str,
    Ttl => ttl: Seconds,
    Invalidates => invalidates: Str,
    Tags => tags: Groups,
    Extensions => extensions: Extensions,
}

/// Keys accepted by `#[etag_cached]`, in the order the error message lists them.
pub(crate) const ETAG_CACHED_KEYS: &[Key] = &[
    Key::MaxAge,
    Key::SMaxage,
    Key::Public,
    Key::Private,
    Key::StaleWhileRevalidate,
    Key::StaleIfError,
    Key::CdnMaxAge,
    Key::SurrogateMaxAge,
    Key::Vary,
    Key::Etag,
    Key::LastModified,
    Key::Cache,
    Key::Ttl,
    Key::Invalidates,
    Key::Tags,
    Key::Extensions,
];

/// Keys accepted by `#[cache_control]` (Django's `cache_control` keyword arguments).
pub(crate) const CACHE_CONTROL_KEYS: &[Key] = &[
    Key::MaxAge,
    Key::SMaxage,
    Key::Public,
    Key::Private,
    Key::NoCache,
    Key::NoStore,
    Key::MustRevalidate,
    Key::ProxyRevalidate,
    Key::Immutable,
    Key::StaleWhileRevalidate,
    Key::StaleIfError,
    Key::CdnMaxAge,
    Key::SurrogateMaxAge,
    Key::Extensions,
];

/// Cache-Control directives in the order they are chained onto `CachePolicy::new()`.
const DIRECTIVES: &[Key] = &[
    Key::Public,
    Key::Private,
    Key::NoCache,
    Key::NoStore,
    Key::MaxAge,
    Key::SMaxage,
    Key::MustRevalidate,
    Key::ProxyRevalidate,
    Key::Immutable,
    Key::StaleWhileRevalidate,
    Key::StaleIfError,
];

/// A parsed option value.
#[derive(Clone)]
enum Value {
    Flag,
    Seconds(u32),
    HeaderNames(Vec<LitStr>),
    FnPath(Path),
    Str(LitStr),
    /// Field names qualifying `no_cache` or `private`.
    Fields(Vec<LitStr>),
    /// `(name, argument)` of each extension directive.
    Extensions(Vec<(String, Option<String>)>),
}

#[derive(Clone)]
struct Entry {
    key: Key,
    span: Span,
    value: Value,
}

/// The options of one attribute, in source order, each key at most once.
#[derive(Clone, Default)]
pub(crate) struct Options {
    entries: Vec<Entry>,
}

impl Options {
    /// Parses `args` accepting only `allowed` keys.
    pub(crate) fn parse(args: TokenStream, allowed: &'static [Key]) -> syn::Result<Self> {
        (|input: ParseStream<'_>| Self::parse_from(input, allowed)).parse2(args)
    }

    /// Parses options from `input` (usable with `Attribute::parse_args_with`).
    pub(crate) fn parse_from(input: ParseStream<'_>, allowed: &[Key]) -> syn::Result<Self> {
        let mut options = Self::default();
        // Semantic errors (duplicates, overflow, bad header names) do not desynchronise the
        // token stream, so they are collected and reported together; syntax errors stop parsing.
        let mut errors: Option<Error> = None;
        let mut push = |error: Error| match &mut errors {
            Some(errors) => errors.combine(error),
            None => errors = Some(error),
        };

        while !input.is_empty() {
            let lookahead = input.lookahead1();
            let Some(key) = allowed.iter().copied().find(|key| key.peek(&lookahead)) else {
                return Err(with(errors, lookahead.error()));
            };
            let span = key.parse_keyword(input)?;
            let value = match key.kind() {
                Kind::Flag => Value::Flag,
                Kind::FlagOrFields if input.peek(Token![=]) => {
                    input.parse::<Token![=]>()?;
                    let names: Vec<LitStr> = if input.peek(syn::token::Bracket) {
                        let content;
                        bracketed!(content in input);
                        Punctuated::<LitStr, Token![,]>::parse_terminated(&content)?
                            .into_iter()
                            .collect()
                    } else {
                        vec![input.parse()?]
                    };
                    if names.is_empty() {
                        push(Error::new(span, "expected one or more header field names"));
                    }
                    for name in &names {
                        if !is_token(&name.value()) {
                            push(Error::new_spanned(name, "invalid header field name"));
                        }
                    }
                    Value::Fields(names)
                }
                Kind::FlagOrFields => Value::Flag,
                Kind::Extensions => {
                    input.parse::<Token![=]>()?;
                    let content;
                    bracketed!(content in input);
                    let members = Punctuated::<LitStr, Token![,]>::parse_terminated(&content)?;
                    let mut extensions = Vec::new();
                    for member in &members {
                        match parse_extension(&member.value()) {
                            Ok(extension) => extensions.push(extension),
                            Err(message) => push(Error::new_spanned(member, message)),
                        }
                    }
                    Value::Extensions(extensions)
                }
                Kind::Seconds => {
                    input.parse::<Token![=]>()?;
                    let lit: LitInt = input.parse()?;
                    match lit.base10_parse::<u32>() {
                        Ok(seconds) => Value::Seconds(seconds),
                        Err(error) => {
                            push(error);
                            Value::Seconds(0)
                        }
                    }
                }
                Kind::HeaderNames => {
                    input.parse::<Token![=]>()?;
                    let content;
                    bracketed!(content in input);
                    let names = Punctuated::<LitStr, Token![,]>::parse_terminated(&content)?;
                    for name in &names {
                        if !is_token(&name.value()) {
                            push(Error::new_spanned(name, "invalid header name"));
                        }
                    }
                    Value::HeaderNames(names.into_iter().collect())
                }
                Kind::FnPath => {
                    input.parse::<Token![=]>()?;
                    Value::FnPath(input.parse()?)
                }
                Kind::Str => {
                    input.parse::<Token![=]>()?;
                    let lit: LitStr = input.parse()?;
                    if lit.value().is_empty() {
                        push(Error::new_spanned(&lit, "expected a non-empty name"));
                    }
                    Value::Str(lit)
                }
                Kind::Groups => {
                    input.parse::<Token![=]>()?;
                    let lit: LitStr = input.parse()?;
                    if let Err(error) = check_groups(&lit) {
                        push(error);
                    }
                    Value::Str(lit)
                }
            };

            if options.get(key).is_some() {
                push(Error::new(
                    span,
                    format!("`{}` specified more than once", key.name()),
                ));
            } else {
                options.entries.push(Entry { key, span, value });
            }

            if input.is_empty() {
                break;
            }
            if let Err(error) = input.parse::<Token![,]>() {
                return Err(with(errors, error));
            }
        }

        if let Some(conflict) = options.conflict() {
            push(conflict);
        }
        match errors {
            Some(errors) => Err(errors),
            None => Ok(options),
        }
    }

    fn get(&self, key: Key) -> Option<&Entry> {
        self.entries.iter().find(|entry| entry.key == key)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn has(&self, key: Key) -> bool {
        self.get(key).is_some()
    }

    /// `public` and `private` exclude each other (RFC 9111 §5.2.2.6, §5.2.2.9), and `private`
    /// excludes the targeted lifetimes. Checked for each attribute, and again for a method's
    /// options merged with its `impl` block's.
    pub(crate) fn conflict(&self) -> Option<Error> {
        // A field-qualified `private="…"` leaves the response shareable: no conflict.
        let bare_private = self
            .get(Key::Private)
            .filter(|entry| matches!(entry.value, Value::Flag));
        if let Some(private) = bare_private
            && let Some(targeted) = [Key::CdnMaxAge, Key::SurrogateMaxAge]
                .into_iter()
                .find_map(|key| self.get(key))
        {
            // A CDN reads its targeted field instead of Cache-Control (RFC 9213 §2.2): a
            // lifetime there would have it store and share a private answer.
            let later = self
                .entries
                .iter()
                .rev()
                .find(|entry| entry.key == private.key || entry.key == targeted.key)?;
            return Some(Error::new(
                later.span,
                format!(
                    "`{}` cannot be combined with `private`: a CDN obeys its targeted field instead of Cache-Control (RFC 9213), so it would store and share a private answer",
                    targeted.key.name()
                ),
            ));
        }
        self.get(Key::Public)?;
        bare_private?;
        // Entries are in source order: point at whichever of the two came second.
        let later = self.entries.iter().rev().find(|entry| {
            matches!(entry.key, Key::Public)
                || (entry.key == Key::Private && matches!(entry.value, Value::Flag))
        })?;
        Some(Error::new(
            later.span,
            "`public` and `private` cannot be combined",
        ))
    }

    /// These options with `over`'s options taking precedence (method-level over impl-level).
    pub(crate) fn overridden_by(&self, over: &Self) -> Self {
        let exclusive = |key: Key| match key {
            Key::Public => Some(Key::Private),
            Key::Private => Some(Key::Public),
            _ => None,
        };
        let mut entries: Vec<Entry> = self
            .entries
            .iter()
            .filter(|entry| {
                !over.has(entry.key) && exclusive(entry.key).is_none_or(|other| !over.has(other))
            })
            .cloned()
            .collect();
        entries.extend(over.entries.iter().cloned());
        Self { entries }
    }

    /// These options without `keys`.
    pub(crate) fn without(&self, keys: &[Key]) -> Self {
        Self {
            entries: self
                .entries
                .iter()
                .filter(|entry| !keys.contains(&entry.key))
                .cloned()
                .collect(),
        }
    }

    /// `::actix_conditional::CachePolicy::new()` with every Cache-Control directive chained on;
    /// `extra` (such as `must_revalidate`) is added even if not written.
    pub(crate) fn cache_policy(&self, extra: &[Key]) -> TokenStream {
        let calls = DIRECTIVES.iter().filter_map(|&key| {
            let method = syn::Ident::new(key.name(), Span::call_site());
            match self.get(key).map(|entry| &entry.value) {
                Some(Value::Seconds(seconds)) => {
                    let seconds = proc_macro2::Literal::u32_unsuffixed(*seconds);
                    Some(quote!(.#method(#seconds)))
                }
                Some(Value::Fields(names)) => {
                    let method =
                        syn::Ident::new(&format!("{}_fields", key.name()), Span::call_site());
                    Some(quote!(.#method(&[#(#names),*])))
                }
                Some(_) => Some(quote!(.#method())),
                None if extra.contains(&key) => Some(quote!(.#method())),
                None => None,
            }
        });
        let extensions = match self.get(Key::Extensions).map(|entry| &entry.value) {
            Some(Value::Extensions(extensions)) if !extensions.is_empty() => {
                let members = extensions.iter().map(|(name, value)| match value {
                    Some(value) => quote!((#name, ::core::option::Option::Some(#value))),
                    None => quote!((#name, ::core::option::Option::None)),
                });
                Some(quote!(.extensions(&[#(#members),*])))
            }
            _ => None,
        };
        quote!(::actix_conditional::CachePolicy::new() #(#calls)* #extensions)
    }

    /// `::actix_conditional::cache_control::TargetedPolicies::new()` with `.cdn(...)` and
    /// `.surrogate(...)` for `cdn_max_age` and `surrogate_max_age`; `None` if neither is given.
    pub(crate) fn targeted_policies(&self) -> Option<TokenStream> {
        let calls: Vec<TokenStream> = [
            (Key::CdnMaxAge, quote!(cdn)),
            (Key::SurrogateMaxAge, quote!(surrogate)),
        ]
        .into_iter()
        .filter_map(|(key, method)| {
            let seconds = proc_macro2::Literal::u32_unsuffixed(self.seconds(key)?);
            Some(quote!(.#method(::actix_conditional::CachePolicy::new().max_age(#seconds))))
        })
        .collect();
        if calls.is_empty() {
            return None;
        }
        Some(quote!(::actix_conditional::cache_control::TargetedPolicies::new() #(#calls)*))
    }

    /// The `vary = [...]` names, if given.
    pub(crate) fn vary(&self) -> Option<&[LitStr]> {
        match self.get(Key::Vary).map(|entry| &entry.value) {
            Some(Value::HeaderNames(names)) => Some(names),
            _ => None,
        }
    }

    /// The string given for `key` (`cache`, `invalidates`).
    pub(crate) fn str_value(&self, key: Key) -> Option<&LitStr> {
        match self.get(key).map(|entry| &entry.value) {
            Some(Value::Str(lit)) => Some(lit),
            _ => None,
        }
    }

    /// The group names given for `tags`, in order, without repeats.
    pub(crate) fn groups(&self) -> Option<Vec<String>> {
        let Some(Value::Str(lit)) = self.get(Key::Tags).map(|entry| &entry.value) else {
            return None;
        };
        let mut groups: Vec<String> = Vec::new();
        for group in lit.value().split_ascii_whitespace() {
            if !groups.iter().any(|seen| seen == group) {
                groups.push(group.to_owned());
            }
        }
        Some(groups)
    }

    /// The seconds given for `key` (`ttl`).
    pub(crate) fn seconds(&self, key: Key) -> Option<u32> {
        match self.get(key).map(|entry| &entry.value) {
            Some(Value::Seconds(seconds)) => Some(*seconds),
            _ => None,
        }
    }

    /// The span of `key` as written, if present.
    pub(crate) fn span(&self, key: Key) -> Option<Span> {
        self.get(key).map(|entry| entry.span)
    }

    /// The function path given for `key` (`etag` or `last_modified`).
    pub(crate) fn fn_path(&self, key: Key) -> Option<&Path> {
        match self.get(key).map(|entry| &entry.value) {
            Some(Value::FnPath(path)) => Some(path),
            _ => None,
        }
    }
}

fn with(errors: Option<Error>, error: Error) -> Error {
    match errors {
        Some(mut errors) => {
            errors.combine(error);
            errors
        }
        None => error,
    }
}

/// Longest group name, as `actix_conditional::edge::MAX_GROUP_BYTES`.
const MAX_GROUP_BYTES: usize = 1024;

/// `tags = "a b"`: one or more space-separated names, each an RFC 8941 `sf-string` (printable
/// ASCII; space separates) of at most `MAX_GROUP_BYTES`, as `Cache-Groups` can carry them.
fn check_groups(lit: &LitStr) -> syn::Result<()> {
    let value = lit.value();
    if value.split_ascii_whitespace().next().is_none() {
        return Err(Error::new_spanned(
            lit,
            "expected one or more space-separated cache group names",
        ));
    }
    for group in value.split_ascii_whitespace() {
        if !group.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::new_spanned(
                lit,
                format!(
                    "invalid cache group name {group:?}: only printable ASCII is allowed (RFC 8941 sf-string), separated by spaces"
                ),
            ));
        }
        if group.len() > MAX_GROUP_BYTES {
            return Err(Error::new_spanned(
                lit,
                format!("cache group name longer than {MAX_GROUP_BYTES} bytes"),
            ));
        }
    }
    Ok(())
}

/// RFC 9110 §5.1: a field name is a `token` (1*tchar).
/// `name` or `name=argument` (RFC 9111 §5.2.3: `token [ "=" ( token / quoted-string ) ]`),
/// the name lower-cased as caches compare it.
fn parse_extension(member: &str) -> Result<(String, Option<String>), String> {
    let (name, value) = match member.split_once('=') {
        Some((name, value)) => (name, Some(value)),
        None => (member, None),
    };
    if !is_token(name) {
        return Err(format!("invalid directive name {name:?}: expected a token"));
    }
    let known = [
        "max-age",
        "s-maxage",
        "public",
        "private",
        "no-cache",
        "no-store",
        "must-revalidate",
        "proxy-revalidate",
        "immutable",
        "stale-while-revalidate",
        "stale-if-error",
    ];
    let lower = name.to_ascii_lowercase();
    if known.contains(&lower.as_str()) {
        return Err(format!(
            "`{lower}` has its own option: write `{}` instead of an extension",
            lower.replace('-', "_")
        ));
    }
    if let Some(value) = value
        && !(is_token(value) || is_quoted_string(value))
    {
        return Err(format!(
            "invalid argument {value:?} for `{lower}`: expected a token or a quoted-string"
        ));
    }
    Ok((lower, value.map(str::to_owned)))
}

/// RFC 9110 §5.6.4 `quoted-string`, all of `s` (visible ASCII inside; `\` escapes).
fn is_quoted_string(s: &str) -> bool {
    let Some(inner) = s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) else {
        return false;
    };
    let mut escaped = false;
    for b in inner.bytes() {
        let visible = b == b'\t' || b == b' ' || b.is_ascii_graphic();
        if !visible || (!escaped && b == b'"') {
            return false;
        }
        escaped = !escaped && b == b'\\';
    }
    !escaped
}

fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Emits the original item followed by `error` (actix-web-codegen's `input_and_compile_error`),
/// so the item still exists and only the precise message shows.
pub(crate) fn input_and_compile_error(item: impl ToTokens, error: &Error) -> TokenStream {
    let error = error.to_compile_error();
    quote!(#item #error)
}

/// Prints `tokens` to stderr when `ACTIX_CONDITIONAL_MACROS_DEBUG` is set.
pub(crate) fn debug_expansion(name: &str, tokens: &TokenStream) {
    if std::env::var_os("ACTIX_CONDITIONAL_MACROS_DEBUG").is_some() {
        eprintln!("#[{name}] expanded to:\n{tokens}\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn etag(args: TokenStream) -> syn::Result<Options> {
        Options::parse(args, ETAG_CACHED_KEYS)
    }

    fn message(result: syn::Result<Options>) -> String {
        match result {
            Ok(_) => panic!("should fail"),
            Err(error) => error.to_string(),
        }
    }

    fn cache_control(args: TokenStream) -> syn::Result<Options> {
        Options::parse(args, CACHE_CONTROL_KEYS)
    }

    #[test]
    fn field_qualified_directives_and_extensions() {
        let options = cache_control(quote!(
            no_cache = "Set-Cookie",
            private = ["Authorization-Info", "X-Token"],
            public,
            extensions = ["custom=456", "Community=\"UCI\"", "x-flag"]
        ))
        .unwrap_or_else(|error| panic!("{error}"));
        let policy = options.cache_policy(&[]).to_string();
        assert!(
            policy.contains("no_cache_fields (& [\"Set-Cookie\"])"),
            "{policy}"
        );
        assert!(
            policy.contains("private_fields (& [\"Authorization-Info\" , \"X-Token\"])"),
            "{policy}"
        );
        assert!(
            policy.contains("\"community\""),
            "names are lower-cased: {policy}"
        );
        // A qualified `private` may stand beside `public`; a bare one may not.
        assert_eq!(
            message(cache_control(quote!(public, private))),
            "`public` and `private` cannot be combined"
        );
        assert_eq!(
            message(cache_control(quote!(no_cache = "a b"))),
            "invalid header field name"
        );
        assert_eq!(
            message(cache_control(quote!(private = []))),
            "expected one or more header field names"
        );
        assert!(
            message(cache_control(quote!(extensions = ["max-age=5"])))
                .starts_with("`max-age` has its own option")
        );
        assert!(
            message(cache_control(quote!(extensions = ["x=a b"]))).starts_with("invalid argument")
        );
        assert!(
            message(cache_control(quote!(extensions = ["a b"])))
                .starts_with("invalid directive name")
        );
    }

    #[test]
    fn parses_every_kind() {
        let options = etag(quote!(
            max_age = 60,
            public,
            vary = ["Accept-Language", "Cookie"],
            etag = Self::rev,
        ))
        .unwrap_or_else(|error| panic!("{error}"));
        assert!(options.has(Key::MaxAge) && options.has(Key::Public));
        assert_eq!(options.vary().unwrap().len(), 2);
        assert!(options.fn_path(Key::Etag).is_some());
        assert!(options.fn_path(Key::LastModified).is_none());
    }

    #[test]
    fn unknown_key_lists_accepted_keys() {
        let message = message(etag(quote!(max_age = 1, no_store)));
        assert!(
            message.starts_with("expected one of: `max_age`, `s_maxage`"),
            "{message}"
        );
        assert!(!message.contains("no_cache"), "{message}");
    }

    #[test]
    fn duplicate_key() {
        assert_eq!(
            message(etag(quote!(max_age = 1, max_age = 2))),
            "`max_age` specified more than once"
        );
    }

    #[test]
    fn value_errors() {
        assert_eq!(
            message(etag(quote!(max_age = "60"))),
            "expected integer literal"
        );
        assert_eq!(
            message(etag(quote!(max_age = 99999999999))),
            "number too large to fit in target type"
        );
        assert_eq!(message(etag(quote!(vary = ["a b"]))), "invalid header name");
    }

    #[test]
    fn tags_are_space_separated_printable_ascii() {
        let options = etag(quote!(max_age = 1, tags = " a  b:1\tc a "))
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(options.groups().unwrap(), ["a", "b:1", "c"]);
        assert_eq!(
            message(etag(quote!(tags = " "))),
            "expected one or more space-separated cache group names"
        );
        assert!(message(etag(quote!(tags = "ok é"))).starts_with("invalid cache group name \"é\""));
        let long = "x".repeat(MAX_GROUP_BYTES + 1);
        assert_eq!(
            message(etag(quote!(tags = #long))),
            "cache group name longer than 1024 bytes"
        );
    }

    #[test]
    fn public_private_conflict() {
        assert_eq!(
            message(etag(quote!(public, max_age = 1, private))),
            "`public` and `private` cannot be combined"
        );
    }

    #[test]
    fn targeted_lifetimes() {
        let parse = |args| etag(args).unwrap_or_else(|error| panic!("{error}"));
        assert!(parse(quote!(max_age = 0)).targeted_policies().is_none());
        let options = parse(quote!(
            max_age = 0,
            surrogate_max_age = 9,
            cdn_max_age = 600
        ));
        assert_eq!(
            options.targeted_policies().unwrap().to_string(),
            quote!(
                ::actix_conditional::cache_control::TargetedPolicies::new()
                    .cdn(::actix_conditional::CachePolicy::new().max_age(600))
                    .surrogate(::actix_conditional::CachePolicy::new().max_age(9))
            )
            .to_string()
        );
        // Not Cache-Control directives.
        assert_eq!(
            options.cache_policy(&[]).to_string(),
            quote!(::actix_conditional::CachePolicy::new().max_age(0)).to_string()
        );
        // A method's `private` under a block's `cdn_max_age` conflicts once merged.
        let merged = parse(quote!(cdn_max_age = 1)).overridden_by(&parse(quote!(private)));
        assert!(merged.conflict().is_some());
        assert!(parse(quote!(public, cdn_max_age = 1)).conflict().is_none());
    }

    #[test]
    fn override_replaces_keys_and_exclusive_flags() {
        let parse = |args| etag(args).unwrap_or_else(|error| panic!("{error}"));
        let outer = parse(quote!(max_age = 60, public, s_maxage = 5));
        let inner = parse(quote!(max_age = 10, private));
        let merged = outer.overridden_by(&inner);
        assert!(!merged.has(Key::Public) && merged.has(Key::Private) && merged.has(Key::SMaxage));
        assert_eq!(
            merged.cache_policy(&[Key::MustRevalidate]).to_string(),
            quote!(
                ::actix_conditional::CachePolicy::new()
                    .private()
                    .max_age(10)
                    .s_maxage(5)
                    .must_revalidate()
            )
            .to_string()
        );
    }
}
