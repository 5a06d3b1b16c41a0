//! A tiny raw HTTP/1.1 test client and a real `actix_web::HttpServer` on `127.0.0.1:0` (one
//! worker, its own thread), so assertions see exactly what actix writes on the wire (framing,
//! `Content-Length`, repeated header lines), which `actix_web::test::call_service` cannot show.
//!
//! Every read has a timeout, so a hang fails the test within seconds.
//!
//! Include it from a test with `#[path = "common/http.rs"] mod http;`.
#![allow(dead_code)] // Each test binary uses a different part of this module.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServerHandle, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::{App, Error, HttpServer};
use serde_json::Value;

// Some test binaries include both this file and its sibling that loads it too.
#[allow(clippy::duplicate_mod)]
#[path = "cache_status.rs"]
pub(crate) mod cache_status;

/// Upper bound for connecting, writing and waiting for a response.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(3);
/// How long to wait for bytes that must not come (a body after a 304, 204 or HEAD).
pub(crate) const SILENCE: Duration = Duration::from_millis(300);
/// Refuse response heads larger than this (a runaway server must not eat the test's memory).
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;

// ---------------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------------

/// A running `HttpServer`; dropping it stops the server through its `ServerHandle`.
#[derive(Debug)]
pub(crate) struct Server {
    addr: SocketAddr,
    handle: ServerHandle,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Server {
    /// Serves the apps `app` builds (one per worker) and waits until the server listens.
    pub(crate) fn start<F, T, B>(app: F) -> Self
    where
        F: Fn() -> App<T> + Send + Clone + 'static,
        T: ServiceFactory<
                ServiceRequest,
                Config = (),
                Response = ServiceResponse<B>,
                Error = Error,
                InitError = (),
            > + 'static,
        B: MessageBody + 'static,
    {
        Self::start_with_workers(1, app)
    }

    /// [`Self::start`] with `workers` worker threads (each with its own app from `app`), for
    /// tests of state shared across workers.
    pub(crate) fn start_with_workers<F, T, B>(workers: usize, app: F) -> Self
    where
        F: Fn() -> App<T> + Send + Clone + 'static,
        T: ServiceFactory<
                ServiceRequest,
                Config = (),
                Response = ServiceResponse<B>,
                Error = Error,
                InitError = (),
            > + 'static,
        B: MessageBody + 'static,
    {
        let (tx, rx) = mpsc::channel();
        let thread = thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let server = HttpServer::new(app)
                    .workers(workers)
                    .disable_signals()
                    .shutdown_timeout(1)
                    .bind(("127.0.0.1", 0))?;
                let addr = server.addrs()[0];
                let server = server.run();
                tx.send((addr, server.handle()))
                    .expect("the test waits for the address");
                server.await
            })
        });
        let Ok((addr, handle)) = rx.recv_timeout(Duration::from_secs(10)) else {
            match thread.join() {
                Ok(result) => panic!("server did not start: {result:?}"),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        };
        assert!(addr.ip().is_loopback(), "{addr}");
        Self {
            addr,
            handle,
            thread: Some(thread),
        }
    }

    pub(crate) fn connect(&self) -> Conn {
        Conn::open(self.addr)
    }

    /// The address the server listens on.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // `stop` sends its command right away; the server thread ends once it is processed.
        drop(self.handle.stop(false));
        let Some(thread) = self.thread.take() else {
            return;
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !thread.is_finished() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        if thread.is_finished() {
            let result = thread.join();
            if !thread::panicking() {
                result
                    .expect("server thread panicked")
                    .expect("server failed");
            }
        } else if !thread::panicking() {
            panic!("server did not stop within 5 s");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A tiny HTTP/1.1 client
// ---------------------------------------------------------------------------------------------

/// Builds a request with `Host` and the given header lines, byte-for-byte (values may hold
/// obs-text), and, if `body` is given, a JSON `Content-Type`, its `Content-Length` and the body.
pub(crate) fn request(
    method: &str,
    path: &str,
    headers: &[(&str, &[u8])],
    body: Option<&str>,
) -> Vec<u8> {
    let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n").into_bytes();
    for (name, value) in headers {
        raw.extend_from_slice(name.as_bytes());
        raw.extend_from_slice(b": ");
        raw.extend_from_slice(value);
        raw.extend_from_slice(b"\r\n");
    }
    if let Some(body) = body {
        raw.extend_from_slice(b"Content-Type: application/json\r\n");
        raw.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
        raw.extend_from_slice(body.as_bytes());
    } else {
        raw.extend_from_slice(b"\r\n");
    }
    raw
}

/// One response as it came off the wire.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    /// Header lines in order, names lowercased, repeated lines kept apart.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Response {
    /// Every line named `name`, in order.
    pub(crate) fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The single line named `name`; panics if it is repeated.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        let all = self.all(name);
        assert!(all.len() <= 1, "{name} sent {} times: {self:#?}", all.len());
        all.first().copied()
    }

    pub(crate) fn has(&self, name: &str) -> bool {
        !self.all(name).is_empty()
    }

    /// The single line named `name`; panics if it is missing or repeated.
    pub(crate) fn header(&self, name: &str) -> &str {
        self.get(name)
            .unwrap_or_else(|| panic!("no {name}: {self:#?}"))
    }

    /// The `X-Cache` label of this library's `Cache-Status` member (`<none>` without one),
    /// read with a structured-field parser.
    pub(crate) fn cache_label(&self) -> &'static str {
        cache_status::label(self.all("cache-status"))
    }

    pub(crate) fn etag(&self) -> &str {
        self.header("etag")
    }

    pub(crate) fn body_str(&self) -> &str {
        std::str::from_utf8(&self.body).expect("utf-8 body")
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {self:#?}"))
    }

    /// The `Cache-Control` directives, trimmed, in order.
    pub(crate) fn cache_control(&self) -> Vec<&str> {
        self.header("cache-control")
            .split(',')
            .map(str::trim)
            .collect()
    }
}

/// One keep-alive connection.
#[derive(Debug)]
pub(crate) struct Conn {
    reader: BufReader<TcpStream>,
}

impl Conn {
    pub(crate) fn open(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connect");
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Self {
            reader: BufReader::new(stream),
        }
    }

    /// Writes `raw` as is (one request, or several pipelined); read the answers with
    /// [`Self::read_response`].
    pub(crate) fn send_raw(&mut self, raw: &[u8]) {
        self.reader.get_mut().write_all(raw).expect("send request");
    }

    /// Sends `raw` and reads the response (without a body if the request was a HEAD).
    pub(crate) fn exchange(&mut self, raw: &[u8]) -> Response {
        self.send_raw(raw);
        self.read_response(raw.starts_with(b"HEAD "))
    }

    pub(crate) fn get(&mut self, path: &str) -> Response {
        self.exchange(&request("GET", path, &[], None))
    }

    pub(crate) fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &[u8])],
        body: Option<&str>,
    ) -> Response {
        self.exchange(&request(method, path, headers, body))
    }

    fn read_line(&mut self, budget: &mut usize) -> Vec<u8> {
        let mut line = Vec::new();
        let n = (&mut self.reader)
            .take(*budget as u64)
            .read_until(b'\n', &mut line)
            .unwrap_or_else(|e| panic!("reading the response head failed ({e}); got {line:?}"));
        *budget -= n;
        assert!(
            n > 0,
            "connection closed where a response line was expected"
        );
        assert!(
            line.ends_with(b"\r\n"),
            "head line not CRLF-terminated (or head over {MAX_HEAD_BYTES} bytes): {:?}",
            String::from_utf8_lossy(&line)
        );
        line.truncate(line.len() - 2);
        line
    }

    /// Reads one response: a well-formed status line, the header lines, and the body framed
    /// by the rules of RFC 9112 §6.3 (none for HEAD, 1xx, 204 and 304).
    pub(crate) fn read_response(&mut self, head: bool) -> Response {
        let mut budget = MAX_HEAD_BYTES;
        let line = self.read_line(&mut budget);
        let line = String::from_utf8(line).expect("ASCII status line");
        let status = parse_status_line(&line);

        let mut headers = Vec::new();
        loop {
            let line = self.read_line(&mut budget);
            if line.is_empty() {
                break;
            }
            let colon = line
                .iter()
                .position(|&b| b == b':')
                .unwrap_or_else(|| panic!("header line without colon: {line:?}"));
            let name = std::str::from_utf8(&line[..colon]).expect("ASCII header name");
            assert!(
                !name.is_empty() && !name.contains(|c: char| c.is_ascii_whitespace()),
                "bad header name {name:?}"
            );
            let value = String::from_utf8_lossy(&line[colon + 1..])
                .trim()
                .to_owned();
            headers.push((name.to_ascii_lowercase(), value));
        }
        let mut response = Response {
            status,
            headers,
            body: Vec::new(),
        };

        let bodiless = head || (100..200).contains(&status) || status == 204 || status == 304;
        if bodiless {
            return response;
        }
        let chunked = response
            .all("transfer-encoding")
            .iter()
            .any(|te| te.to_ascii_lowercase().contains("chunked"));
        if chunked {
            assert!(
                !response.has("content-length"),
                "both chunked and length: {response:#?}"
            );
            response.body = self.read_chunked();
        } else if let Some(length) = response.get("content-length") {
            let length: usize = length.parse().expect("numeric content-length");
            let mut body = vec![0; length];
            self.reader
                .read_exact(&mut body)
                .unwrap_or_else(|e| panic!("body shorter than content-length {length}: {e}"));
            response.body = body;
        } else {
            // Close-delimited: only acceptable if the server says it closes.
            self.reader
                .read_to_end(&mut response.body)
                .expect("close-delimited body");
        }
        response
    }

    fn read_chunked(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        let mut budget = MAX_HEAD_BYTES;
        loop {
            let line = self.read_line(&mut budget);
            let line = String::from_utf8(line).expect("ASCII chunk size");
            let size = line.split(';').next().unwrap().trim();
            let size = usize::from_str_radix(size, 16).expect("hex chunk size");
            if size == 0 {
                // Trailer section, then the blank line.
                while !self.read_line(&mut budget).is_empty() {}
                return body;
            }
            let start = body.len();
            body.resize(start + size, 0);
            self.reader.read_exact(&mut body[start..]).expect("chunk");
            assert!(self.read_line(&mut budget).is_empty(), "chunk without CRLF");
        }
    }

    /// Asserts no byte follows the last response (no stray body after a 304, 204 or HEAD) and
    /// the connection is still open.
    pub(crate) fn assert_silent(&mut self) {
        assert!(
            self.reader.buffer().is_empty(),
            "unexpected bytes after the response: {:?}",
            String::from_utf8_lossy(self.reader.buffer())
        );
        self.reader
            .get_ref()
            .set_read_timeout(Some(SILENCE))
            .unwrap();
        let mut byte = [0; 1];
        let outcome = self.reader.get_mut().read(&mut byte);
        self.reader
            .get_ref()
            .set_read_timeout(Some(TIMEOUT))
            .unwrap();
        match outcome {
            Ok(0) => panic!("server closed the keep-alive connection"),
            Ok(_) => panic!("unexpected byte after the response: {:?}", byte[0] as char),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("connection error while expecting silence: {e}"),
        }
    }
}

/// `HTTP/1.1 200 OK` → 200, panicking on anything malformed.
pub(crate) fn parse_status_line(line: &str) -> u16 {
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    assert!(
        version == "HTTP/1.1" || version == "HTTP/1.0",
        "bad status line {line:?}"
    );
    assert!(
        code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit()),
        "bad status line {line:?}"
    );
    let status: u16 = code.parse().unwrap();
    assert!((100..600).contains(&status), "bad status line {line:?}");
    status
}
