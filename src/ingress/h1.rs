//! HTTP/1.x proxying on the ingress thread's own loop: one task per client
//! connection parses each request head ([`httparse`]), writes the upstream
//! request on a pooled keep-alive connection, parses the response head and
//! copies the bodies, with no task, channel or header map in between.
//!
//! Why not hyper's server and client, as h2 still uses: per plain request
//! they cost the ingress threads about twice nginx's user-space CPU (the
//! kernel's part was the same for both), spread over a connection task per
//! side, the channels between them and a header map built and cloned per
//! request (`scripts/bench-edge.sh -p ingress`, `ingress.cpu_us_per_req`).
//!
//! What it does, as the hyper path does (see [`super::proxy`]): the same
//! routing and answers of its own (404, 503, 502, 504), the same forwarded
//! headers, hop-by-hop headers dropped both ways, bodies streamed (never
//! buffered whole), `Upgrade` passed through, idempotent bodiless requests
//! sent once more on a new connection when a pooled one fails before the
//! response head, one access log line per request.
//!
//! Framing (RFC 9112 6): a request with both `Transfer-Encoding` and
//! `Content-Length`, with differing lengths, with a coding other than
//! `chunked`, or with `Transfer-Encoding` in HTTP/1.0 is refused (400 or
//! 501) and its connection closed, so that podnet and the pod never see two
//! different requests in the same bytes. Chunked bodies are passed on as
//! they came, checked chunk by chunk. `Expect: 100-continue` is answered
//! here, as nginx does. An HTTP/1.0 client's request goes upstream as
//! HTTP/1.0 (nginx's default for every request), so no answer to it is
//! chunked.

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::access_log;
use super::proxy::{Context, Peer, Pick, UpstreamField, HEAD_TIMEOUT};

/// The longest request or response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// The most header fields in a head.
const MAX_HEADERS: usize = 100;
/// How much is read from a socket at once.
const READ_SIZE: usize = 16 * 1024;
/// The longest chunk-size line or trailer section of a chunked body.
const MAX_CHUNK_META: usize = 16 * 1024;

/// How a connection ended other than by a client's clean close.
#[derive(Debug)]
pub(crate) enum End {
    /// The client's first bytes are HTTP/2's preface: serve it as h2, with
    /// these bytes read first.
    H2(BytesMut),
    /// Reading from or writing to the client failed, or it stopped in the
    /// middle of a request.
    Client(std::io::Error),
}

/// Where a message body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body.
    None,
    /// `Content-Length` bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the connection closes (responses only).
    UntilClose,
}

/// A request refused before it is routed: status, reason phrase, text.
struct Refusal(u16, &'static str, &'static str);

/// What the loop keeps of a client's request head.
struct RequestHead {
    /// The head as received; the ranges below are in it.
    head: Bytes,
    method: Range<usize>,
    /// The path without the query, for routing and the log.
    path: Range<usize>,
    host: Range<usize>,
    http10: bool,
    body: Framing,
    keep_alive: bool,
    upgrade: bool,
    expect_continue: bool,
    /// May be sent twice (RFC 9110 9.2.2).
    idempotent: bool,
}

impl RequestHead {
    fn text(&self, r: &Range<usize>) -> &str {
        // httparse allows only visible ASCII in methods and paths, and
        // the host is checked to be UTF-8 when parsed.
        self.head
            .get(r.clone())
            .and_then(|t| std::str::from_utf8(t).ok())
            .unwrap_or("")
    }
    fn method(&self) -> &str {
        self.text(&self.method)
    }
    /// The path: never empty (an absolute-form target without one has `/`).
    fn path(&self) -> &str {
        match self.text(&self.path) {
            "" => "/",
            p => p,
        }
    }
    fn host(&self) -> &str {
        self.text(&self.host)
    }
    fn is_head(&self) -> bool {
        self.method() == "HEAD"
    }
}

/// Headers that concern one connection only (RFC 9110 7.6.1), and those
/// this proxy writes itself.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
    "keep-alive",
    "proxy-connection",
];
const SET_HERE: [&str; 8] = [
    "host",
    "content-length",
    "expect",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-proto",
    "x-real-ip",
];

fn is(name: &str, one_of: &[&str]) -> bool {
    one_of.iter().any(|n| name.eq_ignore_ascii_case(n))
}

/// The comma-separated tokens of every `Connection` header.
fn connection_tokens<'a>(headers: &'a [httparse::Header<'a>]) -> impl Iterator<Item = &'a str> {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .filter_map(|h| std::str::from_utf8(h.value).ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// The one length all `Content-Length` fields agree on; `Err` if they do
/// not, or one is not a number.
fn content_length(headers: &[httparse::Header<'_>]) -> Result<Option<u64>, ()> {
    let mut length = None;
    for h in headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
    {
        for v in h.value.split(|&b| b == b',') {
            let v = v.trim_ascii();
            if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
                return Err(());
            }
            let n = std::str::from_utf8(v)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or(())?;
            if length.is_some_and(|l| l != n) {
                return Err(());
            }
            length = Some(n);
        }
    }
    Ok(length)
}

/// Whether the `Transfer-Encoding` fields end in `chunked`: `None` without
/// any, `Some(false)` with another final coding.
fn chunked(headers: &[httparse::Header<'_>]) -> Option<bool> {
    let mut last = None;
    for h in headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
    {
        for coding in h.value.split(|&b| b == b',') {
            let coding = coding.trim_ascii();
            if !coding.is_empty() {
                last = Some(coding.eq_ignore_ascii_case(b"chunked"));
            }
        }
        last.get_or_insert(false);
    }
    last
}

/// Where `part`, a slice of `base`, is in it (empty if it is not one).
fn offset(base: &[u8], part: &[u8]) -> Range<usize> {
    match (part.as_ptr() as usize).checked_sub(base.as_ptr() as usize) {
        Some(start) if start + part.len() <= base.len() => start..start + part.len(),
        _ => 0..0,
    }
}

/// Parses a request head at the start of `buf`. `Ok(None)`: not complete
/// yet. On success the upstream request head is in `up` and the head's
/// length is returned with what the loop keeps of it.
fn parse_request(
    buf: &[u8],
    peer: &Peer,
    up: &mut Vec<u8>,
) -> Result<Option<(usize, RequestHead)>, ParseError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return Err(ParseError::Refuse(Refusal(
                431,
                "Request Header Fields Too Large",
                "the request head is too large",
            )))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(ParseError::Refuse(Refusal(
                431,
                "Request Header Fields Too Large",
                "too many header fields",
            )))
        }
        Err(httparse::Error::Version) if buf.starts_with(b"PRI * HTTP/2.0") => {
            return Err(ParseError::H2)
        }
        Err(_) => {
            return Err(ParseError::Refuse(Refusal(
                400,
                "Bad Request",
                "not an HTTP/1.x request",
            )))
        }
    };
    let bad = |text| ParseError::Refuse(Refusal(400, "Bad Request", text));
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(bad("not an HTTP/1.x request"));
    };
    let headers = req.headers;
    let http10 = version == 0;

    // Framing.
    let length = content_length(headers).map_err(|()| bad("bad Content-Length"))?;
    let body = match (chunked(headers), length) {
        (None, None | Some(0)) => Framing::None,
        (None, Some(n)) => Framing::Length(n),
        (Some(_), _) if http10 => return Err(bad("Transfer-Encoding in an HTTP/1.0 request")),
        (Some(true), None) => Framing::Chunked,
        (Some(true), Some(_)) => return Err(bad("both Transfer-Encoding and Content-Length")),
        (Some(false), _) => {
            return Err(ParseError::Refuse(Refusal(
                501,
                "Not Implemented",
                "a transfer coding other than chunked",
            )))
        }
    };

    // Target: origin-form, or absolute-form (its authority is the host; an
    // empty path is `/`).
    let (path_and_query, authority) = if target.starts_with('/') {
        (target, None)
    } else {
        match target.parse::<hyper::Uri>() {
            Ok(uri) if uri.scheme().is_some() && uri.authority().is_some() => {
                let rest = &target[target.find("://").map_or(0, |i| i + 3)..];
                let end = rest.find(['/', '?']).unwrap_or(rest.len());
                let authority = rest[..end].rsplit('@').next().unwrap_or("");
                (&rest[end..], Some(authority))
            }
            _ => return Err(bad("bad path")),
        }
    };
    let path = path_and_query.split('?').next().unwrap_or("");
    let mut hosts = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("host"));
    // An absolute-form target's authority wins over Host (RFC 9112 3.2.2).
    let host: &[u8] = match (hosts.next(), hosts.next(), authority) {
        (Some(_), Some(_), _) => return Err(bad("more than one Host")),
        (_, _, Some(a)) => a.as_bytes(),
        (Some(h), None, None) if std::str::from_utf8(h.value).is_ok() => h.value,
        (Some(_), None, None) => return Err(bad("a Host that is not text")),
        (None, _, None) => b"",
    };

    let tokens = || connection_tokens(headers);
    let keep_alive = if http10 {
        tokens().any(|t| t.eq_ignore_ascii_case("keep-alive"))
    } else {
        !tokens().any(|t| t.eq_ignore_ascii_case("close"))
    };
    let upgrade_to = (!http10 && tokens().any(|t| t.eq_ignore_ascii_case("upgrade")))
        .then(|| {
            headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("upgrade"))
        })
        .flatten()
        .map(|h| h.value);
    let expect_continue = !http10
        && headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case("expect")
                && h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue")
        });

    // The upstream request head.
    up.clear();
    up.extend_from_slice(method.as_bytes());
    up.push(b' ');
    if !path_and_query.starts_with('/') {
        up.push(b'/');
    }
    up.extend_from_slice(path_and_query.as_bytes());
    up.extend_from_slice(if http10 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
    let mut forwarded_for: Vec<&[u8]> = Vec::new();
    for h in headers.iter() {
        if h.name.eq_ignore_ascii_case("x-forwarded-for") {
            let v = h.value.trim_ascii();
            if !v.is_empty() {
                forwarded_for.push(v);
            }
            continue;
        }
        if is(h.name, &HOP_BY_HOP)
            || is(h.name, &SET_HERE)
            || tokens().any(|t| t.eq_ignore_ascii_case(h.name))
        {
            continue;
        }
        put_header(up, h.name.as_bytes(), h.value);
    }
    put_header(up, b"host", host);
    put_header(up, b"x-forwarded-host", host);
    up.extend_from_slice(b"x-forwarded-for: ");
    for v in &forwarded_for {
        up.extend_from_slice(v);
        up.extend_from_slice(b", ");
    }
    up.extend_from_slice(peer.ip.as_bytes());
    up.extend_from_slice(b"\r\n");
    put_header(up, b"x-real-ip", peer.ip.as_bytes());
    put_header(up, b"x-forwarded-proto", peer.scheme.as_bytes());
    put_header(up, b"x-forwarded-port", peer.port.as_bytes());
    match body {
        Framing::Length(n) => put_length(up, n),
        Framing::Chunked => up.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::None | Framing::UntilClose => {}
    }
    if let Some(proto) = upgrade_to {
        up.extend_from_slice(b"connection: upgrade\r\n");
        put_header(up, b"upgrade", proto);
    }
    up.extend_from_slice(b"\r\n");

    let upgrade = upgrade_to.is_some();
    let idempotent = matches!(
        method,
        "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE" | "TRACE"
    );
    Ok(Some((
        len,
        RequestHead {
            head: Bytes::new(),
            method: offset(buf, method.as_bytes()),
            path: offset(buf, path.as_bytes()),
            host: offset(buf, host),
            http10,
            body,
            keep_alive,
            upgrade,
            expect_continue,
            idempotent,
        },
    )))
}

enum ParseError {
    Refuse(Refusal),
    H2,
}

fn put_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn put_length(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(b"content-length: ");
    out.extend_from_slice(itoa(n, &mut [0; 20]));
    out.extend_from_slice(b"\r\n");
}

/// `n` in decimal, in `buf`.
fn itoa(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// What the loop keeps of a response head.
struct ResponseHead {
    status: u16,
    body: Framing,
    /// The upstream connection may carry another request after this one.
    reusable: bool,
}

/// Parses a response head at the start of `buf` and writes the client's
/// response head into `out` without its final `Connection` field and
/// blank line. `Ok(None)`: not complete yet. `Err`: why the response is
/// unusable (a 502).
fn parse_response(
    buf: &[u8],
    req: &RequestHead,
    out: &mut Vec<u8>,
) -> Result<Option<(usize, ResponseHead)>, &'static str> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return Err("the response head is too large")
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err("not an HTTP/1.x response"),
    };
    let (Some(version), Some(status)) = (resp.version, resp.code) else {
        return Err("not an HTTP/1.x response");
    };
    let headers = resp.headers;
    let tokens = || connection_tokens(headers);
    let length = content_length(headers).map_err(|()| "bad Content-Length")?;
    let body = if req.is_head() || (100..200).contains(&status) || status == 204 || status == 304 {
        Framing::None
    } else {
        match (chunked(headers), length) {
            (Some(true), _) if req.http10 => return Err("a chunked answer to HTTP/1.0"),
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) => return Err("a transfer coding other than chunked"),
            (None, Some(n)) => Framing::Length(n),
            (None, None) => Framing::UntilClose,
        }
    };
    let reusable = version == 1
        && !req.http10
        && body != Framing::UntilClose
        && !tokens().any(|t| t.eq_ignore_ascii_case("close"));

    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa(u64::from(status), &mut [0; 20]));
    out.push(b' ');
    out.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in headers.iter() {
        if is(h.name, &HOP_BY_HOP)
            || h.name.eq_ignore_ascii_case("content-length")
            || tokens().any(|t| t.eq_ignore_ascii_case(h.name))
        {
            continue;
        }
        put_header(out, h.name.as_bytes(), h.value);
    }
    match (body, length) {
        (Framing::Chunked, _) => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        (_, Some(n)) => put_length(out, n),
        _ => {}
    }
    if status == 101 {
        out.extend_from_slice(b"connection: upgrade\r\n");
        if let Some(u) = headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("upgrade"))
        {
            put_header(out, b"upgrade", u.value);
        }
    }
    Ok(Some((
        len,
        ResponseHead {
            status,
            body,
            reusable,
        },
    )))
}

/// Finds where a chunked body ends (RFC 9112 7.1) in bytes fed to it as
/// they are copied, and refuses malformed framing.
#[derive(Debug, Default)]
pub(crate) struct ChunkedEnd {
    state: ChunkState,
    /// The chunk size being read, or the data left of the current chunk.
    size: u64,
    digits: u8,
    /// Bytes of size lines and trailers since the last data.
    meta: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    /// After the size: extensions or whitespace up to CR.
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line or the final CRLF.
    TrailerStart,
    Trailer,
    TrailerLf,
    FinalLf,
    Done,
}

/// Malformed chunked framing.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct BadChunk;

impl ChunkedEnd {
    /// Whether the body's last byte has been fed.
    pub(crate) fn done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Feeds `bytes`; returns how many of them belong to the body (all of
    /// them until it ends).
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Result<usize, BadChunk> {
        use ChunkState::*;
        let mut i = 0;
        while i < bytes.len() && self.state != Done {
            if self.state == Data {
                let take = (bytes.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                self.size -= take as u64;
                i += take;
                if self.size == 0 {
                    self.state = DataCr;
                }
                continue;
            }
            let b = bytes[i];
            i += 1;
            self.meta += 1;
            if self.meta > MAX_CHUNK_META {
                return Err(BadChunk);
            }
            self.state = match (self.state, b) {
                (Size, b) if b.is_ascii_hexdigit() => {
                    if self.digits == 16 {
                        return Err(BadChunk);
                    }
                    self.digits += 1;
                    self.size = self.size << 4 | u64::from((b as char).to_digit(16).unwrap_or(0));
                    Size
                }
                (Size, b';' | b' ' | b'\t') if self.digits > 0 => Extension,
                (Size, b'\r') if self.digits > 0 => SizeLf,
                (Extension, b'\r') => SizeLf,
                (Extension, b'\n') => return Err(BadChunk),
                (Extension, _) => Extension,
                (SizeLf, b'\n') => {
                    self.digits = 0;
                    if self.size == 0 {
                        TrailerStart
                    } else {
                        self.meta = 0;
                        Data
                    }
                }
                (DataCr, b'\r') => DataLf,
                (DataLf, b'\n') => Size,
                (TrailerStart, b'\r') => FinalLf,
                (TrailerStart | Trailer, b'\n') => return Err(BadChunk),
                (Trailer, b'\r') => TrailerLf,
                (TrailerStart | Trailer, _) => Trailer,
                (TrailerLf, b'\n') => TrailerStart,
                (FinalLf, b'\n') => Done,
                _ => return Err(BadChunk),
            };
        }
        Ok(i)
    }
}

/// Reads more of `stream` into `buf`; `Ok(0)` at its end.
async fn fill<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut BytesMut) -> std::io::Result<usize> {
    buf.reserve(READ_SIZE);
    stream.read_buf(buf).await
}

/// Why a body could not be copied.
enum CopyError {
    /// The side it came from failed or ended early.
    From(std::io::Error),
    /// The side it went to failed.
    To(std::io::Error),
}

/// Copies a body of `framing` from `from` (what is in `buf` first) to
/// `to`, starting with `head` written before it in the same write where
/// the body's first bytes are already in `buf`. What follows the body
/// stays in `buf`.
async fn copy_body<F, T>(
    framing: Framing,
    head: &mut Vec<u8>,
    from: &mut F,
    buf: &mut BytesMut,
    to: &mut T,
) -> Result<(), CopyError>
where
    F: AsyncRead + Unpin,
    T: AsyncWrite + Unpin,
{
    let early_end =
        || std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the body ended early");
    match framing {
        Framing::None => {
            to.write_all(head).await.map_err(CopyError::To)?;
        }
        Framing::Length(mut left) => {
            let first = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
            head.extend_from_slice(&buf[..first]);
            buf.advance(first);
            left -= first as u64;
            to.write_all(head).await.map_err(CopyError::To)?;
            while left > 0 {
                if buf.is_empty() && fill(from, buf).await.map_err(CopyError::From)? == 0 {
                    return Err(CopyError::From(early_end()));
                }
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                to.write_all(&buf[..n]).await.map_err(CopyError::To)?;
                buf.advance(n);
                left -= n as u64;
            }
        }
        Framing::Chunked => {
            let mut end = ChunkedEnd::default();
            let bad = |_| {
                CopyError::From(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "malformed chunked body",
                ))
            };
            let n = end.feed(buf).map_err(bad)?;
            head.extend_from_slice(&buf[..n]);
            buf.advance(n);
            to.write_all(head).await.map_err(CopyError::To)?;
            while !end.done() {
                if fill(from, buf).await.map_err(CopyError::From)? == 0 {
                    return Err(CopyError::From(early_end()));
                }
                let n = end.feed(buf).map_err(bad)?;
                to.write_all(&buf[..n]).await.map_err(CopyError::To)?;
                buf.advance(n);
            }
        }
        Framing::UntilClose => {
            to.write_all(head).await.map_err(CopyError::To)?;
            loop {
                if !buf.is_empty() {
                    to.write_all(buf).await.map_err(CopyError::To)?;
                    buf.clear();
                }
                if fill(from, buf).await.map_err(CopyError::From)? == 0 {
                    break;
                }
            }
        }
    }
    to.flush().await.map_err(CopyError::To)
}

/// A keep-alive HTTP/1.1 connection to a service, with what was read from
/// it and not used yet (nothing, when it is pooled).
pub(crate) struct UpstreamConn {
    stream: TcpStream,
    buf: BytesMut,
}

impl UpstreamConn {
    /// Whether the service closed the connection (or wrote to it unasked)
    /// while it was idle. Costs no system call unless the socket became
    /// readable.
    pub(crate) fn is_closed(&self) -> bool {
        !matches!(self.stream.try_read(&mut [0; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}

async fn connect(addr: SocketAddr) -> std::io::Result<UpstreamConn> {
    let stream = TcpStream::connect(addr).await?;
    let _ = stream.set_nodelay(true);
    Ok(UpstreamConn {
        stream,
        buf: BytesMut::with_capacity(READ_SIZE),
    })
}

/// An own answer: status line, a text body, `Connection: close` if
/// `close`. A HEAD request gets the head only.
fn answer(out: &mut Vec<u8>, status: u16, reason: &str, text: &str, close: bool, head_only: bool) {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa(u64::from(status), &mut [0; 20]));
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\ncontent-type: text/plain; charset=utf-8\r\n");
    put_header(
        out,
        b"date",
        httpdate::fmt_http_date(SystemTime::now()).as_bytes(),
    );
    put_length(out, text.len() as u64 + 1);
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(text.as_bytes());
        out.push(b'\n');
    }
}

/// Serves one client connection until it closes, the client stops in the
/// middle of a request, or it turns out to be h2 ([`End::H2`]).
pub(crate) async fn serve<S>(ctx: &Arc<Context>, peer: &Peer, client: &mut S) -> Result<(), End>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(READ_SIZE);
    let mut up_head = Vec::with_capacity(1024);
    let mut out = Vec::with_capacity(1024);
    let mut first = true;
    loop {
        // A request head, whole within HEAD_TIMEOUT of the wait for it.
        let head_deadline = tokio::time::Instant::now() + HEAD_TIMEOUT;
        let parsed = loop {
            if !buf.is_empty() {
                match parse_request(&buf, peer, &mut up_head) {
                    Ok(Some(p)) => break Ok(p),
                    Ok(None) => {}
                    Err(ParseError::H2) if first => return Err(End::H2(buf)),
                    Err(ParseError::H2) => {
                        break Err(Refusal(400, "Bad Request", "not an HTTP/1.x request"))
                    }
                    Err(ParseError::Refuse(r)) => break Err(r),
                }
            }
            match tokio::time::timeout_at(head_deadline, fill(client, &mut buf)).await {
                Ok(Ok(0)) if buf.is_empty() => return Ok(()),
                Ok(Ok(0)) => {
                    return Err(End::Client(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the client closed in the middle of a request head",
                    )))
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(End::Client(e)),
                // Idle (or slow) for too long: closed, as hyper did.
                Err(_) => return Ok(()),
            }
        };
        first = false;
        let req = match parsed {
            Ok((len, req)) => RequestHead {
                head: buf.split_to(len).freeze(),
                ..req
            },
            Err(Refusal(status, reason, text)) => {
                answer(&mut out, status, reason, text, true, false);
                client.write_all(&out).await.map_err(End::Client)?;
                let _ = client.flush().await;
                return Ok(());
            }
        };
        let t0 = Instant::now();
        // An own answer leaves a request body unread: the connection closes.
        let keep_if_own = req.keep_alive && req.body == Framing::None;
        let keep_alive = match ctx.pick(req.host(), req.path()) {
            Pick::NotFound => {
                let text = "404 Not Found: no Ingress rule for this host and path";
                answer(
                    &mut out,
                    404,
                    "Not Found",
                    text,
                    !keep_if_own,
                    req.is_head(),
                );
                log(&req, peer, 404, UpstreamField(None), t0);
                send(client, &out).await?;
                keep_if_own
            }
            Pick::Unavailable(backend) => {
                let text = format!("503 Service Unavailable: {}", backend.name);
                answer(
                    &mut out,
                    503,
                    "Service Unavailable",
                    &text,
                    !keep_if_own,
                    req.is_head(),
                );
                log(
                    &req,
                    peer,
                    503,
                    UpstreamField(Some((&backend.name, None))),
                    t0,
                );
                send(client, &out).await?;
                keep_if_own
            }
            Pick::Upstream(backend, addr) => {
                let to = Upstream {
                    addr,
                    field: UpstreamField(Some((&backend.name, Some(addr)))),
                    head: &up_head,
                };
                exchange(ctx, peer, &req, &to, client, &mut buf, &mut out, t0).await?
            }
        };
        if !keep_alive {
            return Ok(());
        }
    }
}

/// Writes `bytes` to the client, whole.
async fn send<S: AsyncWrite + Unpin>(client: &mut S, bytes: &[u8]) -> Result<(), End> {
    write_flush(client, bytes).await.map_err(End::Client)
}

async fn write_flush<S: AsyncWrite + Unpin>(to: &mut S, bytes: &[u8]) -> std::io::Result<()> {
    to.write_all(bytes).await?;
    to.flush().await
}

fn log(req: &RequestHead, peer: &Peer, status: u16, upstream: UpstreamField<'_>, t0: Instant) {
    access_log::record(&access_log::Access {
        method: req.method(),
        host: req.host(),
        path: req.path(),
        status,
        upstream,
        duration_ms: t0.elapsed().as_millis() as u64,
        client: peer.addr.ip(),
    });
}

/// Where a request goes, and the head it is sent with.
struct Upstream<'a> {
    addr: SocketAddr,
    field: UpstreamField<'a>,
    head: &'a [u8],
}

/// Why a request could not be sent or its response head read.
enum Failed {
    /// No response head within the upstream timeout.
    Timeout,
    /// Connecting, writing or reading failed.
    Io(std::io::Error),
    /// The response head is not one to pass on.
    BadResponse(&'static str),
}

/// Sends the request to `to` and relays the response (or answers 502 or
/// 504), logging it. Returns whether the client connection may carry
/// another request.
#[allow(clippy::too_many_arguments)]
async fn exchange<S>(
    ctx: &Arc<Context>,
    peer: &Peer,
    req: &RequestHead,
    to: &Upstream<'_>,
    client: &mut S,
    buf: &mut BytesMut,
    out: &mut Vec<u8>,
    t0: Instant,
) -> Result<bool, End>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let deadline = tokio::time::Instant::from_std(t0 + ctx.upstream_timeout);
    let sent =
        tokio::time::timeout_at(deadline, send_request(ctx, req, to, client, buf, out)).await;
    let (mut conn, resp) = match sent {
        Ok(Ok(r)) => r,
        Ok(Err(Stop::Client(e))) => return Err(End::Client(e)),
        Ok(Err(Stop::Failed(f, body_sent))) => {
            return answer_failure(ctx, peer, req, to, client, out, t0, f, body_sent).await
        }
        Err(_) => {
            return answer_failure(ctx, peer, req, to, client, out, t0, Failed::Timeout, true).await
        }
    };
    log(req, peer, resp.status, to.field, t0);

    if resp.status == 101 {
        if !req.upgrade {
            let text = "502 Bad Gateway: the service switched protocols unasked";
            answer(out, 502, "Bad Gateway", text, true, false);
            send(client, out).await?;
            return Ok(false);
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&conn.buf);
        send(client, out).await?;
        if conn.stream.write_all(buf).await.is_ok() {
            let _ = tokio::io::copy_bidirectional(client, &mut conn.stream).await;
        }
        return Ok(false);
    }

    let keep_alive = req.keep_alive && resp.body != Framing::UntilClose;
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if req.http10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    match copy_body(resp.body, out, &mut conn.stream, &mut conn.buf, client).await {
        Ok(()) => {
            if resp.reusable && conn.buf.is_empty() {
                ctx.pool.put_h1(to.addr, conn);
            }
            Ok(keep_alive)
        }
        // The service failed in the middle of the body: the client can
        // only be told by closing.
        Err(CopyError::From(e)) => {
            tracing::debug!(addr = %to.addr, "ingress: upstream body failed: {e}");
            Ok(false)
        }
        Err(CopyError::To(e)) => Err(End::Client(e)),
    }
}

/// Why [`send_request`] stopped.
enum Stop {
    /// The client failed or stopped in the middle of its body.
    Client(std::io::Error),
    /// The service: why, and whether the request body had been read.
    Failed(Failed, bool),
}

/// Sends the request head and body on a pooled connection (or a new one)
/// and reads the response head, passing 1xx heads but 101 to the client.
/// A pooled connection whose head could not be written is replaced by a
/// new one; a request that can be sent again (idempotent, no body, no
/// upgrade) is sent once more on a new connection if the first try got
/// no response head, as nginx's `proxy_next_upstream error` does.
async fn send_request<S>(
    ctx: &Context,
    req: &RequestHead,
    to: &Upstream<'_>,
    client: &mut S,
    buf: &mut BytesMut,
    out: &mut Vec<u8>,
) -> Result<(UpstreamConn, ResponseHead), Stop>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let resendable = req.idempotent && req.body == Framing::None && !req.upgrade;
    // Whether the request has been sent again (once at most), and whether
    // the next try takes a new connection.
    let (mut resent, mut fresh) = (false, false);
    loop {
        let pooled = if fresh {
            None
        } else {
            ctx.pool.take_h1(to.addr)
        };
        let reused = pooled.is_some();
        let mut conn = match pooled {
            Some(c) => c,
            None => match connect(to.addr).await {
                Ok(c) => c,
                Err(e) if resendable && !resent => {
                    tracing::debug!(addr = %to.addr, "ingress: connecting failed ({e}); trying once more");
                    (resent, fresh) = (true, true);
                    continue;
                }
                Err(e) => return Err(Stop::Failed(Failed::Io(e), false)),
            },
        };
        if let Err(e) = conn.stream.write_all(to.head).await {
            if reused {
                tracing::debug!(addr = %to.addr, "ingress: a pooled upstream connection failed ({e}); sending on a new one");
                fresh = true;
                continue;
            }
            return Err(Stop::Failed(Failed::Io(e), false));
        }
        if req.body != Framing::None {
            if req.expect_continue {
                write_flush(client, b"HTTP/1.1 100 Continue\r\n\r\n")
                    .await
                    .map_err(Stop::Client)?;
            }
            match copy_body(req.body, &mut Vec::new(), client, buf, &mut conn.stream).await {
                Ok(()) => {}
                Err(CopyError::From(e)) => return Err(Stop::Client(e)),
                Err(CopyError::To(e)) => return Err(Stop::Failed(Failed::Io(e), true)),
            }
        }
        loop {
            match read_response_head(&mut conn, req, out).await {
                Ok(resp) if (100..200).contains(&resp.status) && resp.status != 101 => {
                    if !req.http10 {
                        out.extend_from_slice(b"\r\n");
                        write_flush(client, out).await.map_err(Stop::Client)?;
                    }
                }
                Ok(resp) => return Ok((conn, resp)),
                Err(Failed::Io(e)) if resendable && !resent => {
                    tracing::debug!(addr = %to.addr, "ingress: upstream failed ({e}); sending the request again on a new connection");
                    (resent, fresh) = (true, true);
                    break;
                }
                Err(f) => return Err(Stop::Failed(f, true)),
            }
        }
    }
}

/// Answers 502 or 504 for a request the service did not answer.
#[allow(clippy::too_many_arguments)]
async fn answer_failure<S>(
    ctx: &Context,
    peer: &Peer,
    req: &RequestHead,
    to: &Upstream<'_>,
    client: &mut S,
    out: &mut Vec<u8>,
    t0: Instant,
    failed: Failed,
    body_read: bool,
) -> Result<bool, End>
where
    S: AsyncWrite + Unpin,
{
    let (status, reason, text) = match failed {
        Failed::Timeout => (
            504,
            "Gateway Timeout",
            format!(
                "504 Gateway Timeout: no answer from the service within {} s",
                ctx.upstream_timeout.as_secs()
            ),
        ),
        Failed::Io(e) => {
            tracing::debug!(addr = %to.addr, "ingress: upstream failed: {e}");
            let text = "502 Bad Gateway: the service refused or dropped the connection";
            (502, "Bad Gateway", text.to_string())
        }
        Failed::BadResponse(why) => {
            tracing::debug!(addr = %to.addr, "ingress: bad upstream response: {why}");
            (502, "Bad Gateway", format!("502 Bad Gateway: {why}"))
        }
    };
    // A request body not read to its end leaves the connection unusable.
    let keep_alive = req.keep_alive && (req.body == Framing::None || body_read);
    answer(out, status, reason, &text, !keep_alive, req.is_head());
    log(req, peer, status, to.field, t0);
    send(client, out).await?;
    Ok(keep_alive)
}

/// Reads a response head from `conn`; the client's head goes into `out`
/// (see [`parse_response`]).
async fn read_response_head(
    conn: &mut UpstreamConn,
    req: &RequestHead,
    out: &mut Vec<u8>,
) -> Result<ResponseHead, Failed> {
    loop {
        if !conn.buf.is_empty() {
            match parse_response(&conn.buf, req, out) {
                Ok(Some((len, resp))) => {
                    conn.buf.advance(len);
                    return Ok(resp);
                }
                Ok(None) => {}
                Err(why) => return Err(Failed::BadResponse(why)),
            }
        }
        let had = conn.buf.len();
        match fill(&mut conn.stream, &mut conn.buf).await {
            Ok(0) if had == 0 => {
                return Err(Failed::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the service closed the connection",
                )))
            }
            Ok(0) => return Err(Failed::BadResponse("the response head was cut short")),
            Ok(_) => {}
            Err(e) if had == 0 => return Err(Failed::Io(e)),
            Err(_) => return Err(Failed::BadResponse("the response head was cut short")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ends_at(body: &[u8]) -> Result<Option<usize>, BadChunk> {
        let mut end = ChunkedEnd::default();
        let n = end.feed(body)?;
        Ok(end.done().then_some(n))
    }

    #[test]
    fn a_chunked_body_ends_after_its_last_chunk_and_trailers() {
        let body =
            b"5\r\nhello\r\n1a;name=v\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Sum: 1\r\n\r\nNEXT";
        assert_eq!(ends_at(body), Ok(Some(body.len() - 4)));
        assert_eq!(ends_at(b"0\r\n\r\n"), Ok(Some(5)));
        // Fed a byte at a time, it ends at the same place.
        let mut end = ChunkedEnd::default();
        let mut used = 0;
        for b in body.iter() {
            used += end.feed(std::slice::from_ref(b)).unwrap();
        }
        assert!(end.done());
        assert_eq!(used, body.len() - 4);
        // Not the end yet.
        assert_eq!(ends_at(b"5\r\nhel"), Ok(None));
        assert_eq!(ends_at(b"0\r\nX: y\r\n"), Ok(None));
    }

    #[test]
    fn malformed_chunked_framing_is_refused() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\nhello\r\n",
            b"5\r\nhelloX\r\n",
            b"5\r\nhello\r\r",
            b"11111111111111111\r\n",
            b"0\r\n\n",
            b"0\r\nX: y\n",
        ] {
            assert_eq!(
                ends_at(bad),
                Err(BadChunk),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut long = b"1;".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_CHUNK_META));
        assert_eq!(ends_at(&long), Err(BadChunk));
    }

    fn peer() -> Peer {
        Peer::new(
            ([192, 0, 2, 2], 40000).into(),
            ([192, 0, 2, 1], 80).into(),
            "http",
        )
    }

    fn request(head: &str) -> Result<(String, RequestHead), u16> {
        let mut up = Vec::new();
        match parse_request(head.as_bytes(), &peer(), &mut up) {
            Ok(Some((len, r))) => {
                assert_eq!(len, head.len());
                let r = RequestHead {
                    head: Bytes::copy_from_slice(head.as_bytes()),
                    ..r
                };
                Ok((String::from_utf8(up).unwrap(), r))
            }
            Ok(None) => Err(0),
            Err(ParseError::Refuse(Refusal(s, _, _))) => Err(s),
            Err(ParseError::H2) => Err(2),
        }
    }

    #[test]
    fn the_upstream_request_has_forwarded_headers_and_no_hop_by_hop_ones() {
        let (up, r) = request(
            "GET /a/b?q=1 HTTP/1.1\r\nHost: my-app.com\r\nConnection: keep-alive, X-Drop\r\n\
             X-Drop: 1\r\nKeep-Alive: timeout=5\r\nX-Forwarded-For: 203.0.113.9\r\n\
             X-Real-IP: 1.2.3.4\r\nAccept: */*\r\n\r\n",
        )
        .unwrap();
        assert_eq!(
            up,
            "GET /a/b?q=1 HTTP/1.1\r\nAccept: */*\r\nhost: my-app.com\r\n\
             x-forwarded-host: my-app.com\r\nx-forwarded-for: 203.0.113.9, 192.0.2.2\r\n\
             x-real-ip: 192.0.2.2\r\nx-forwarded-proto: http\r\nx-forwarded-port: 80\r\n\r\n"
        );
        assert_eq!(
            (r.method(), r.host(), r.path()),
            ("GET", "my-app.com", "/a/b")
        );
        assert!(r.keep_alive && r.idempotent && !r.upgrade && r.body == Framing::None);
    }

    #[test]
    fn framing_that_two_parsers_could_read_differently_is_refused() {
        let h = |extra: &str| request(&format!("POST / HTTP/1.1\r\nHost: h\r\n{extra}\r\n"));
        assert_eq!(
            h("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n").err(),
            Some(400)
        );
        assert_eq!(
            h("Content-Length: 5\r\nContent-Length: 6\r\n").err(),
            Some(400)
        );
        assert_eq!(h("Content-Length: +5\r\n").err(), Some(400));
        assert_eq!(h("Transfer-Encoding: gzip\r\n").err(), Some(501));
        assert_eq!(h("Transfer-Encoding: chunked, gzip\r\n").err(), Some(501));
        assert_eq!(h("Host: other\r\n").err(), Some(400));
        assert!(request("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
        // Agreeing lengths are one length.
        let (up, r) = h("Content-Length: 5, 5\r\nContent-Length: 5\r\n").unwrap();
        assert_eq!(r.body, Framing::Length(5));
        assert_eq!(up.matches("content-length: 5\r\n").count(), 1, "{up}");
        let (up, r) = h("Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n").unwrap();
        assert!(r.body == Framing::Chunked && r.expect_continue && !r.idempotent);
        assert!(
            up.contains("transfer-encoding: chunked\r\n") && !up.to_lowercase().contains("expect"),
            "{up}"
        );
    }

    #[test]
    fn http10_and_absolute_form_and_upgrades() {
        let (up, r) = request("GET http://my-app.com:8080/x?y HTTP/1.0\r\n\r\n").unwrap();
        assert!(up.starts_with("GET /x?y HTTP/1.0\r\n"), "{up}");
        assert_eq!((r.host(), r.path()), ("my-app.com:8080", "/x"));
        assert!(!r.keep_alive && r.http10);
        let (up, r) = request("GET http://user@h.com?q=1 HTTP/1.1\r\n\r\n").unwrap();
        assert!(up.starts_with("GET /?q=1 HTTP/1.1\r\n"), "{up}");
        assert_eq!((r.host(), r.path()), ("h.com", "/"));
        let (up, r) = request("GET http://h.com HTTP/1.1\r\nHost: other\r\n\r\n").unwrap();
        assert!(up.starts_with("GET / HTTP/1.1\r\n"), "{up}");
        assert_eq!(
            (r.host(), r.path()),
            ("h.com", "/"),
            "the target's authority wins"
        );
        assert!(up.contains("host: h.com\r\n"), "{up}");
        let (_, r) = request("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").unwrap();
        assert!(r.keep_alive);
        let (up, r) = request(
            "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        )
        .unwrap();
        assert!(r.upgrade && r.keep_alive);
        assert!(
            up.ends_with("connection: upgrade\r\nupgrade: websocket\r\n\r\n"),
            "{up}"
        );
        assert_eq!(request("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").err(), Some(2));
        assert_eq!(request("GET /x HTTP/1.1\r\nHost: h\r\n").err(), Some(0));
        assert_eq!(
            request("GET * HTTP/1.1\r\nHost: h\r\n\r\n").err(),
            Some(400)
        );
    }

    fn response(req: &str, resp: &str) -> Result<(String, ResponseHead), &'static str> {
        let (_, r) = request(req).unwrap();
        let mut out = Vec::new();
        let (len, head) = parse_response(resp.as_bytes(), &r, &mut out)?.expect("complete");
        assert_eq!(len, resp.len());
        Ok((String::from_utf8(out).unwrap(), head))
    }

    #[test]
    fn response_framing_and_reuse() {
        let get = "GET / HTTP/1.1\r\nHost: h\r\n\r\n";
        let (out, r) = response(
            get,
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\nServer: x\r\n\r\n",
        )
        .unwrap();
        assert_eq!(out, "HTTP/1.1 200 OK\r\nServer: x\r\ncontent-length: 3\r\n");
        assert!(r.body == Framing::Length(3) && r.reusable);
        let (out, r) =
            response(get, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
        assert!(out.ends_with("transfer-encoding: chunked\r\n") && r.body == Framing::Chunked);
        let (_, r) = response(get, "HTTP/1.1 200 OK\r\n\r\n").unwrap();
        assert!(r.body == Framing::UntilClose && !r.reusable);
        let (_, r) = response(
            get,
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        assert!(!r.reusable);
        let (_, r) = response(get, "HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n").unwrap();
        assert!(!r.reusable);
        let (out, r) = response(
            "HEAD / HTTP/1.1\r\nHost: h\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n",
        )
        .unwrap();
        assert!(r.body == Framing::None && out.contains("content-length: 3"));
        let (_, r) = response(get, "HTTP/1.1 304 Not Modified\r\n\r\n").unwrap();
        assert!(r.body == Framing::None && r.reusable);
        assert!(response(
            get,
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"
        )
        .is_err());
        assert!(response(
            "GET / HTTP/1.0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .is_err());
    }

    use proptest::prelude::*;

    /// A head from parts a client could send, some of them hostile.
    fn any_head() -> impl Strategy<Value = Vec<u8>> {
        let field = prop_oneof![
            Just("Host: my-app.com".to_string()),
            Just("Content-Length: 3".to_string()),
            Just("Content-Length: 4".to_string()),
            Just("Transfer-Encoding: chunked".to_string()),
            Just("Transfer-Encoding: gzip, chunked".to_string()),
            Just("Connection: close, X-A".to_string()),
            Just("Connection: upgrade".to_string()),
            Just("Upgrade: websocket".to_string()),
            Just("X-Forwarded-For: 203.0.113.9".to_string()),
            Just("Expect: 100-continue".to_string()),
            Just("Keep-Alive: timeout=5".to_string()),
            Just("TE: trailers".to_string()),
            Just("X-A: named by Connection".to_string()),
            "[A-Za-z-]{1,12}: [ -~]{0,20}",
        ];
        let line = prop_oneof![
            Just("GET / HTTP/1.1"),
            Just("POST /a?b=c HTTP/1.1"),
            Just("HEAD /x HTTP/1.0"),
            Just("GET http://h.com HTTP/1.1"),
            Just("OPTIONS * HTTP/1.1"),
        ];
        (
            line,
            prop::collection::vec(field, 0..8),
            any::<Option<(usize, u8)>>(),
        )
            .prop_map(|(line, fields, flip)| {
                let mut head = format!("{line}\r\n{}\r\n\r\n", fields.join("\r\n")).into_bytes();
                if let Some((at, b)) = flip {
                    let at = at % head.len();
                    head[at] = b;
                }
                head
            })
    }

    proptest! {
        /// Whatever the bytes, parsing answers (never panics), and a head
        /// it accepts becomes an upstream head that parses again, with one
        /// Host, no hop-by-hop field and the same framing.
        #[test]
        fn any_request_head_is_refused_or_forwarded_whole(head in any_head()) {
            let mut up = Vec::new();
            if let Ok(Some((len, r))) = parse_request(&head, &peer(), &mut up) {
                // A flipped byte may end the head early: the rest is a body.
                prop_assert!(len <= head.len());
                let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut again = httparse::Request::new(&mut fields);
                prop_assert!(matches!(again.parse(&up), Ok(httparse::Status::Complete(n)) if n == up.len()));
                let names: Vec<String> = again.headers.iter().map(|h| h.name.to_ascii_lowercase()).collect();
                prop_assert_eq!(names.iter().filter(|n| *n == "host").count(), 1);
                let mut sent = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut client = httparse::Request::new(&mut sent);
                let _ = client.parse(&head);
                let named: Vec<String> = connection_tokens(client.headers).map(str::to_ascii_lowercase).collect();
                for n in &names {
                    prop_assert!(!named.contains(n) || n == "upgrade", "{} is named by Connection", n);
                    let upgrade = r.upgrade && (n == "connection" || n == "upgrade");
                    let framing = n == "transfer-encoding" && r.body == Framing::Chunked;
                    prop_assert!(!is(n, &HOP_BY_HOP) || upgrade || framing, "{} in {:?}", n, String::from_utf8_lossy(&up));
                }
                let length = content_length(again.headers).ok().flatten();
                let body = match (chunked(again.headers), length) {
                    (Some(true), None) => Framing::Chunked,
                    (None, Some(n)) => Framing::Length(n),
                    _ => Framing::None,
                };
                prop_assert_eq!(body, r.body);
            }
        }

        #[test]
        fn any_response_head_is_refused_or_passed_on(head in prop::collection::vec(any::<u8>(), 0..200)) {
            let (_, req) = request("GET / HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
            let mut out = Vec::new();
            let _ = parse_response(&head, &req, &mut out);
            let mut end = ChunkedEnd::default();
            let _ = end.feed(&head);
        }

        /// A chunked body of any chunks, fed in any pieces, ends exactly
        /// where it ends.
        #[test]
        fn a_chunked_body_ends_where_it_ends(
            chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..40), 0..6),
            trailer in prop::option::of("[A-Za-z]{1,8}: [a-z]{0,8}"),
            cuts in prop::collection::vec(1usize..30, 0..20),
        ) {
            let mut body = Vec::new();
            for c in &chunks {
                body.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                body.extend_from_slice(c);
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"0\r\n");
            if let Some(t) = &trailer {
                body.extend_from_slice(format!("{t}\r\n").as_bytes());
            }
            body.extend_from_slice(b"\r\n");
            let whole = body.len();
            body.extend_from_slice(b"GET /next HTTP/1.1\r\n");
            let mut end = ChunkedEnd::default();
            let (mut at, mut cuts) = (0, cuts.into_iter());
            while !end.done() {
                prop_assert!(at < body.len(), "the end was not found");
                let piece = cuts.next().unwrap_or(usize::MAX).min(body.len() - at);
                at += end.feed(&body[at..at + piece]).unwrap();
            }
            prop_assert_eq!(at, whole);
        }
    }

    #[test]
    fn numbers_in_decimal() {
        for n in [0, 7, 10, 65535, u64::MAX] {
            assert_eq!(itoa(n, &mut [0; 20]), n.to_string().as_bytes());
        }
    }
}
