//! The three ways a cache decides what an entry is worth: TTL, revision, sections. The engine
//! runs one decision loop for all of them and asks its strategy how to fingerprint a request,
//! how to classify an entry, and (sections) how to rebuild only what changed.

use std::time::Duration;

use actix_web::http::header::{CACHE_CONTROL, HeaderValue};
use actix_web::{HttpRequest, HttpResponse};

use super::entry::{Entry, SectionPart, Snapshot};
use super::generations::Generations;
use super::lifetime::Window;
use super::sections::{RevisionFn, Section, build_parts, merged_body};
use super::status::CacheStatus;
use crate::etag::ETagHasher;

/// How one cache decides freshness.
pub(crate) enum Strategy {
    /// Fresh for `ttl` after the build; generated ETags use `hasher`.
    Ttl { ttl: Duration, hasher: ETagHasher },
    /// Fresh while the fingerprint is unchanged.
    Revision(RevisionFn),
    /// A JSON object of sections, each with its own fingerprint.
    Sections {
        sections: Vec<Section>,
        cache_control: HeaderValue,
    },
}

/// The fingerprint of the data behind one request (revision modes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    /// What entries are compared on, and what `X-Revision` shows.
    pub(crate) combined: String,
    /// Per section (sections mode; empty otherwise).
    pub(crate) parts: Vec<String>,
    /// Per section, its invalidation counter as mixed into `parts` (sections mode).
    pub(crate) generations: Vec<u64>,
}

/// What an entry is worth to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Serve it as it is.
    Fresh(CacheStatus),
    /// Sections: only inline sections changed; rebuild them in this request.
    Patch,
    /// Serve it while one refresh runs.
    Stale,
    /// Made out of date by an explicit invalidation (of the cache, or of a section it holds)
    /// since it was built: never served while it is rebuilt, so that a client that wrote
    /// through `invalidate` reads its write; rebuilt in the request (led, or waited for),
    /// like a miss, with these bytes kept for stale-on-error. `inline`: only inline sections
    /// changed.
    Invalidated { inline: bool },
    /// Too old to serve; build (reusing what is still current).
    Expired,
}

impl Strategy {
    /// The request's fingerprint with the invalidation counters mixed in, so an
    /// invalidation changes it too (and every instance derives the same one). `None` in TTL
    /// mode.
    pub(crate) async fn fingerprint(
        &self,
        req: &HttpRequest,
        generations: &Generations,
    ) -> Result<Option<Fingerprint>, actix_web::Error> {
        let all = generations.all();
        match self {
            Self::Ttl { .. } => Ok(None),
            Self::Revision(revision) => {
                let mut combined = revision(req.clone()).await?;
                if all > 0 {
                    combined.push_str(&format!("~{all}"));
                }
                Ok(Some(Fingerprint {
                    combined,
                    parts: Vec::new(),
                    generations: Vec::new(),
                }))
            }
            Self::Sections { sections, .. } => {
                let mut parts = Vec::with_capacity(sections.len());
                let mut owns = Vec::with_capacity(sections.len());
                for (i, section) in sections.iter().enumerate() {
                    let own = generations.section_at(i);
                    owns.push(own);
                    parts.push(section.revision(req, all, own).await?);
                }
                Ok(Some(Fingerprint {
                    combined: combine(sections, parts.iter().map(String::as_str)),
                    parts,
                    generations: owns,
                }))
            }
        }
    }

    /// What `entry` is worth at `now` to a request with fingerprint `fingerprint`, under the
    /// whole-cache counter `generation`.
    pub(crate) fn classify(
        &self,
        entry: &Entry,
        now: Duration,
        fingerprint: Option<&Fingerprint>,
        generation: u64,
        max_stale: Duration,
    ) -> State {
        if let Self::Ttl { ttl, .. } = self {
            if entry.generation != generation {
                return State::Expired;
            }
            let age = now.saturating_sub(entry.stored_at);
            return if age < *ttl {
                State::Fresh(CacheStatus::Hit { ttl: *ttl - age })
            } else if age < *ttl + max_stale {
                State::Stale
            } else {
                State::Expired
            };
        }
        let current = fingerprint.map(|f| f.combined.as_str());
        if entry.revision.as_deref() == current {
            return State::Fresh(CacheStatus::HitRevision);
        }
        let inline = |fingerprint| match self {
            Self::Sections { sections, .. } => {
                changed(entry, fingerprint).all(|i| sections[i].is_inline())
            }
            _ => false,
        };
        if let Some(fingerprint) = fingerprint {
            // An explicit invalidation is a write this app made (and a client may be waiting
            // to read it back): the bytes are not served as they are, stale or not.
            if predates_invalidation(entry, generation, fingerprint) {
                return State::Invalidated {
                    inline: inline(fingerprint),
                };
            }
            if inline(fingerprint) {
                return State::Patch;
            }
        }
        if self.within_stale_window(entry, now, max_stale) {
            State::Stale
        } else {
            State::Expired
        }
    }

    /// Whether stale bytes may still be served: within `max_stale` past the TTL (TTL mode),
    /// or since they were last known current (revision modes).
    pub(crate) fn within_stale_window(
        &self,
        entry: &Entry,
        now: Duration,
        max_stale: Duration,
    ) -> bool {
        match self {
            Self::Ttl { ttl, .. } => now.saturating_sub(entry.stored_at) < *ttl + max_stale,
            _ => now.saturating_sub(entry.verified_at()) <= max_stale,
        }
    }

    /// How much longer `entry` counts as fresh here, and then as servable stale: what the
    /// lifetime it declares downstream must fit (see [`lifetime`](super::lifetime)).
    pub(crate) fn window(
        &self,
        entry: &Entry,
        now: Duration,
        max_stale: Duration,
        stale: bool,
    ) -> Window {
        match self {
            Self::Ttl { ttl, .. } => {
                let age = now.saturating_sub(entry.stored_at);
                let stale_left = (*ttl + max_stale).saturating_sub(age);
                if stale {
                    Window::stale(stale_left)
                } else {
                    Window {
                        fresh_left: Some(ttl.saturating_sub(age)),
                        stale_left,
                    }
                }
            }
            _ => {
                let stale_left = max_stale.saturating_sub(now.saturating_sub(entry.verified_at()));
                if stale {
                    Window::stale(stale_left)
                } else {
                    Window {
                        fresh_left: None,
                        stale_left,
                    }
                }
            }
        }
    }

    /// How long an entry is worth keeping: TTL mode, until it is too stale to serve;
    /// revision modes, as long as its revision may stay current (idle time).
    pub(crate) fn useful_life(&self, max_stale: Duration) -> Duration {
        match self {
            Self::Ttl { ttl, .. } => *ttl + max_stale,
            _ => max_stale + Duration::from_secs(3600),
        }
    }

    /// Whether entries expire by age (TTL) rather than by idleness.
    pub(crate) fn expires_by_age(&self) -> bool {
        matches!(self, Self::Ttl { .. })
    }

    /// The section names, for the invalidation counters.
    pub(crate) fn section_names(&self) -> Vec<std::borrow::Cow<'static, str>> {
        match self {
            Self::Sections { sections, .. } => sections.iter().map(Section::key).collect(),
            _ => Vec::new(),
        }
    }

    /// Whether the cache builds its responses itself (sections) rather than running the
    /// handler it wraps.
    pub(crate) fn builds_itself(&self) -> bool {
        matches!(self, Self::Sections { .. })
    }

    /// The ETag a stored entry gets: revision modes, one derived from the fingerprint (so a
    /// 304 needs no body); TTL mode, the hash of the body unless the handler set one.
    pub(crate) fn etag(
        &self,
        key: &str,
        fingerprint: Option<&Fingerprint>,
        snapshot: &Snapshot,
    ) -> Option<HeaderValue> {
        match (self, fingerprint) {
            (_, Some(fingerprint)) => Some(revision_etag(key, &fingerprint.combined)),
            (Self::Ttl { hasher, .. }, None) if snapshot.etag().is_none() => {
                Some(hasher.etag(&snapshot.body))
            }
            _ => None,
        }
    }

    /// The fingerprint of what was built under `fingerprint`: itself, unless a sectioned build
    /// kept some changed sections' old parts ([`build_parts`]'s `defer`); then the one those
    /// parts were built under, so the entry says what it holds (its ETag and `X-Revision`
    /// too) and the next request refreshes the rest.
    pub(crate) fn as_built(&self, fingerprint: Fingerprint, parts: &[SectionPart]) -> Fingerprint {
        let Self::Sections { sections, .. } = self else {
            return fingerprint;
        };
        let same = parts.len() == fingerprint.parts.len()
            && parts
                .iter()
                .zip(&fingerprint.parts)
                .all(|(part, current)| *part.revision == **current);
        if same || parts.len() != sections.len() {
            return fingerprint;
        }
        Fingerprint {
            combined: combine(sections, parts.iter().map(|p| &*p.revision)),
            parts: parts.iter().map(|p| p.revision.to_string()).collect(),
            generations: parts.iter().map(|p| p.generation).collect(),
        }
    }

    /// Sections: builds the response, rebuilding the sections whose fingerprint differs from
    /// `old`'s (all of them when `old` is `None`; with `defer`, see [`build_parts`]). Other
    /// modes build nothing here.
    pub(crate) async fn build_sections(
        &self,
        req: &HttpRequest,
        fingerprint: Option<&Fingerprint>,
        old: Option<&Entry>,
        defer: bool,
    ) -> (HttpResponse, Vec<SectionPart>) {
        let Self::Sections {
            sections,
            cache_control,
        } = self
        else {
            unreachable!("only sectioned caches build themselves")
        };
        let old = old.map_or(&[][..], |entry| entry.sections.as_slice());
        let parts = match fingerprint {
            Some(fingerprint) => {
                build_parts(
                    sections,
                    &fingerprint.parts,
                    &fingerprint.generations,
                    old,
                    req,
                    defer,
                )
                .await
            }
            None => Err(actix_web::error::ErrorInternalServerError(
                "sections need a fingerprint",
            )),
        };
        match parts {
            Ok(parts) => {
                let res = HttpResponse::Ok()
                    .content_type("application/json")
                    .insert_header((CACHE_CONTROL, cache_control.clone()))
                    .body(merged_body(sections, &parts));
                (res, parts)
            }
            Err(err) => (err.error_response(), Vec::new()),
        }
    }
}

/// `name=revision;…` over the sections: what a sectioned entry is compared on.
fn combine<'a>(sections: &[Section], revisions: impl Iterator<Item = &'a str>) -> String {
    let mut combined = String::new();
    for (i, (section, revision)) in sections.iter().zip(revisions).enumerate() {
        if i > 0 {
            combined.push(';');
        }
        combined.push_str(section.name());
        combined.push('=');
        combined.push_str(revision);
    }
    combined
}

/// Whether `entry` was built before an invalidation that a request with `fingerprint` has
/// seen: of the whole cache (`generation`), or of one of its sections. (A change seen only
/// through the revision functions is not one: it keeps stale-while-revalidate.)
pub(crate) fn predates_invalidation(
    entry: &Entry,
    generation: u64,
    fingerprint: &Fingerprint,
) -> bool {
    entry.generation < generation
        || fingerprint
            .generations
            .iter()
            .zip(&entry.sections)
            .any(|(current, part)| part.generation < *current)
}

/// The indices of the sections whose fingerprint differs from the one `entry` was built under.
fn changed<'a>(entry: &'a Entry, fingerprint: &'a Fingerprint) -> impl Iterator<Item = usize> + 'a {
    fingerprint
        .parts
        .iter()
        .enumerate()
        .filter(|(i, part)| {
            entry
                .sections
                .get(*i)
                .is_none_or(|p| *p.revision != ***part)
        })
        .map(|(i, _)| i)
}

/// The strong ETag for a revision fingerprint: `"rv-"` and 32 hex digits of XXH3-128 over the
/// key and the fingerprint, so two variants (`Vary`) never share a tag.
pub(crate) fn revision_etag(key: &str, revision: &str) -> HeaderValue {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(key.as_bytes());
    hasher.update(b"\0");
    hasher.update(revision.as_bytes());
    let tag = format!("\"rv-{:032x}\"", hasher.digest128());
    HeaderValue::from_str(&tag).expect("hex in quotes is a valid header value")
}
