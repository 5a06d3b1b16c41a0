//! What the HTTP purgers share: the client, URL building, and reading an answer.
//!
//! The client is `reqwest` (rustls, ring, webpki roots), not `awc`: `awc`'s client and futures
//! are `!Send`, bound to the single-threaded actix runtime that created them, while a
//! [`Purger`](super::Purger) is `Send + Sync` and its attempts run on the dispatcher's own
//! thread (so purges outlive any actix worker). `reqwest` is `Send`, pools connections, and
//! runs on any tokio runtime.

use super::PurgeError;

/// How much of an error answer's body goes into the error (and the log).
const BODY_EXCERPT: usize = 512;
/// The most of an answer's body read at all.
const MAX_BODY: usize = 64 * 1024;

pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(concat!("actix-conditional/", env!("CARGO_PKG_VERSION")))
        .build()
        // Only fails when the TLS backend cannot initialise; the plain client then still
        // reaches plain-HTTP Varnish addresses.
        .unwrap_or_default()
}

/// `base` with `segments` appended as path segments (each percent-encoded).
pub(crate) fn join(base: &str, segments: &[&str]) -> Result<reqwest::Url, PurgeError> {
    let mut url = parse(base)?;
    url.path_segments_mut()
        .map_err(|()| PurgeError::Config(format!("{base} cannot be a base URL")))?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

pub(crate) fn parse(url: &str) -> Result<reqwest::Url, PurgeError> {
    let parsed =
        reqwest::Url::parse(url).map_err(|error| PurgeError::Config(format!("{url}: {error}")))?;
    match parsed.scheme() {
        "http" | "https" => Ok(parsed),
        other => Err(PurgeError::Config(format!(
            "{url}: scheme {other} is not http(s)"
        ))),
    }
}

/// Sends `request`; a 2xx answer's body comes back, anything else is an error.
pub(crate) async fn send(
    target: &reqwest::Url,
    request: reqwest::RequestBuilder,
) -> Result<String, PurgeError> {
    let transport = |error: reqwest::Error| PurgeError::Transport {
        target: target.to_string(),
        message: chain(&error),
    };
    let mut response = request.send().await.map_err(transport)?;
    let status = response.status();
    // A purge API answers a few hundred bytes; a destination that streams more is read only
    // up to the limit (the attempt's timeout bounds the time, this the memory).
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport)? {
        let room = MAX_BODY.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_BODY {
            break;
        }
    }
    let body = String::from_utf8_lossy(&body).into_owned();
    if status.is_success() {
        Ok(body)
    } else {
        Err(PurgeError::Status {
            target: target.to_string(),
            status: status.as_u16(),
            body: excerpt(&body),
        })
    }
}

pub(crate) fn excerpt(body: &str) -> String {
    let mut end = body.len().min(BODY_EXCERPT);
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    body[..end].to_owned()
}

/// The error and its sources: reqwest's own message is often just "error sending request".
fn chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_encodes_segments_and_keeps_a_base_path() {
        let url = join("http://127.0.0.1:9/api/", &["service", "a b/c", "purge"]).unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9/api/service/a%20b%2Fc/purge"
        );
        let url = join("https://api.fastly.com", &["service", "x", "purge"]).unwrap();
        assert_eq!(url.as_str(), "https://api.fastly.com/service/x/purge");
        assert!(join("mailto:x@y", &["a"]).is_err());
        assert!(join("not a url", &["a"]).is_err());
    }

    #[test]
    fn excerpts_cut_on_a_char_boundary() {
        let body = "é".repeat(BODY_EXCERPT);
        let cut = excerpt(&body);
        assert!(cut.len() <= BODY_EXCERPT && body.starts_with(&cut));
    }
}
