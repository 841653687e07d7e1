//! The API server: HTTP/1.1 over a Unix socket, one request per connection,
//! one thread per connection.
//!
//! Why not an async stack: the API carries a few requests a second from a
//! person or a CNI plugin, so threads are simpler and cost nothing that
//! matters, and the fast path never touches this code. Robustness comes from
//! limits instead: a deadline for the whole request (a silent or trickling
//! client cannot pin a thread), a cap on header and body size, a cap on
//! concurrent connections, and a 4xx JSON [`ErrorBody`](super::ErrorBody) for
//! every malformed request. Heads are parsed by `httparse`; bodies are framed
//! by `Content-Length` only (chunked bodies get 411).

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::handler::{route, ApiError, ApiHandler, Reply};

/// Limits of the server. [`ServerConfig::default`] is what `podnetd` uses.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Time a client has to send its whole request (head and body).
    pub request_timeout: Duration,
    /// Largest accepted request body, in bytes.
    pub max_body: usize,
    /// Connections served at once; more are answered 503 at once.
    pub max_connections: usize,
    /// How long [`serve_with`] waits for requests in flight after shutdown.
    pub drain_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            request_timeout: Duration::from_secs(10),
            max_body: 1 << 20,
            max_connections: 64,
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// Largest request head (request line and headers).
const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;
/// How often the accept loop looks at the shutdown flag while idle.
const ACCEPT_POLL: Duration = Duration::from_millis(50);

/// Serves the API on `listener` with the default [`ServerConfig`] until
/// `shutdown` becomes true (checked at least every 50 ms), then waits briefly
/// for requests in flight. See [`serve_with`].
pub fn serve(
    listener: UnixListener,
    handler: Arc<dyn ApiHandler>,
    shutdown: Arc<AtomicBool>,
) -> io::Result<()> {
    serve_with(listener, handler, shutdown, ServerConfig::default())
}

/// Serves the API on `listener` until `shutdown` becomes true.
///
/// Each connection gets its own thread and one request. Transient accept
/// errors (out of descriptors or memory, aborted connections) are waited out;
/// any other accept error ends the loop and is returned.
pub fn serve_with(
    listener: UnixListener,
    handler: Arc<dyn ApiHandler>,
    shutdown: Arc<AtomicBool>,
    config: ServerConfig,
) -> io::Result<()> {
    // Non-blocking accept, waiting in poll(2) with a timeout, so a new
    // connection is taken at once and the loop still sees `shutdown`
    // without needing a wake-up connection.
    listener.set_nonblocking(true)?;
    let mut poll = mio::Poll::new()?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
    poll.registry().register(
        &mut mio::unix::SourceFd(&fd),
        mio::Token(0),
        mio::Interest::READABLE,
    )?;
    let mut events = mio::Events::with_capacity(4);
    let config = Arc::new(config);
    let active = Arc::new(AtomicUsize::new(0));
    while !shutdown.load(Ordering::SeqCst) {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if let Err(e) = poll.poll(&mut events, Some(ACCEPT_POLL)) {
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
                continue;
            }
            Err(e) if is_transient(&e) => {
                thread::sleep(ACCEPT_POLL);
                continue;
            }
            Err(e) => return Err(e),
        };
        if active.load(Ordering::SeqCst) >= config.max_connections {
            reject_busy(stream, &config);
            continue;
        }
        let guard = ActiveGuard::new(&active);
        let (handler, config) = (Arc::clone(&handler), Arc::clone(&config));
        let spawned = thread::Builder::new()
            .name("podnet-api".into())
            .spawn(move || {
                let _guard = guard;
                handle_connection(stream, &*handler, &config);
            });
        // On failure the closure, its guard and the stream are dropped: the
        // client sees the connection close, and the server goes on.
        drop(spawned);
    }
    let deadline = Instant::now() + config.drain_timeout;
    while active.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted | io::ErrorKind::OutOfMemory
    ) || matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EPROTO)
    )
}

/// Counts a connection as active for as long as it lives.
struct ActiveGuard(Arc<AtomicUsize>);

impl ActiveGuard {
    fn new(active: &Arc<AtomicUsize>) -> Self {
        active.fetch_add(1, Ordering::SeqCst);
        ActiveGuard(Arc::clone(active))
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn reject_busy(mut stream: UnixStream, config: &ServerConfig) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
    let reply = Reply::error(&ApiError::new(
        503,
        format!(
            "podnetd is serving {} requests already; try again",
            config.max_connections
        ),
    ));
    if write_reply(&mut stream, &reply).is_ok() {
        let _ = stream.shutdown(Shutdown::Write);
        // Without blocking the accept loop: take only what is already there.
        if stream.set_nonblocking(true).is_ok() {
            let mut chunk = [0u8; 8192];
            for _ in 0..8 {
                if !matches!(stream.read(&mut chunk), Ok(n) if n > 0) {
                    break;
                }
            }
        }
    }
}

/// A request as the router needs it.
struct Request {
    method: String,
    target: String,
    body: Vec<u8>,
}

/// Why no request could be read.
enum ReadError {
    /// The client went away; there is nobody to answer.
    Gone,
    /// Answer this and close.
    Reply(Reply),
}

fn bad(status: u16, message: impl Into<String>) -> ReadError {
    ReadError::Reply(Reply::error(&ApiError::new(status, message)))
}

fn handle_connection(mut stream: UnixStream, handler: &dyn ApiHandler, config: &ServerConfig) {
    // An accepted socket does not inherit O_NONBLOCK on Linux; make sure anyway.
    if stream.set_nonblocking(false).is_err() {
        return;
    }
    let _ = stream.set_write_timeout(Some(config.request_timeout));
    let reply = match read_request(&mut stream, config) {
        Ok(request) => route(handler, &request.method, &request.target, &request.body),
        Err(ReadError::Gone) => return,
        Err(ReadError::Reply(reply)) => reply,
    };
    // The client may have gone away meanwhile; nothing to do about it then.
    if write_reply(&mut stream, &reply).is_ok() {
        let _ = stream.shutdown(Shutdown::Write);
        drain(&mut stream, DRAIN_BYTES, Duration::from_millis(200));
    }
}

/// Unread input left after an early answer (413, 411, 503) read and dropped.
const DRAIN_BYTES: usize = 2 << 20;

/// Reads and drops what the client still sends, within bounds. Linux resets a
/// Unix stream closed with unread input, and a client that sees the reset
/// before our answer cannot show the answer.
fn drain(stream: &mut UnixStream, max_bytes: usize, max_wait: Duration) {
    let deadline = Instant::now() + max_wait;
    let mut chunk = [0u8; 8192];
    let mut total = 0;
    while total < max_bytes {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => total += n,
        }
    }
}

/// Reads into `buf` until the deadline; `Ok(0)` at end of stream.
fn read_some(
    stream: &mut UnixStream,
    buf: &mut [u8],
    deadline: Instant,
    timeout: Duration,
) -> Result<usize, ReadError> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out(timeout));
        }
        if stream.set_read_timeout(Some(left)).is_err() {
            return Err(ReadError::Gone);
        }
        match stream.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(timed_out(timeout))
            }
            Err(_) => return Err(ReadError::Gone),
        }
    }
}

fn timed_out(timeout: Duration) -> ReadError {
    bad(
        408,
        format!(
            "the request was not complete within {}s; send the whole request at once",
            timeout.as_secs_f32()
        ),
    )
}

/// What the head says about the body.
struct Head {
    method: String,
    target: String,
    head_len: usize,
    content_length: usize,
    expect_continue: bool,
}

fn parse_head(buf: &[u8], max_body: usize) -> Result<Option<Head>, ReadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let head_len = match request.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(bad(
                431,
                format!("the request has more than {MAX_HEADERS} headers"),
            ))
        }
        Err(e) => {
            return Err(bad(
                400,
                format!(
                    "malformed HTTP request ({e}); podnetd speaks HTTP/1.1 with JSON bodies, \
                     e.g. `curl --unix-socket /run/podnet/podnet.sock http://localhost/v1/pods`"
                ),
            ))
        }
    };
    let mut content_length: Option<usize> = None;
    let mut expect_continue = false;
    for header in request.headers.iter() {
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(bad(
                411,
                "chunked or other transfer encodings are not supported; send the body with \
                 a Content-Length header",
            ));
        }
        if header.name.eq_ignore_ascii_case("content-length") {
            let value = std::str::from_utf8(header.value).unwrap_or("").trim();
            let n = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
                // Too many digits for usize is certainly too large.
                value.parse::<usize>().unwrap_or(usize::MAX)
            } else {
                return Err(bad(400, "the Content-Length header is not a number"));
            };
            if content_length.is_some_and(|old| old != n) {
                return Err(bad(
                    400,
                    "the request has conflicting Content-Length headers",
                ));
            }
            content_length = Some(n);
        }
        if header.name.eq_ignore_ascii_case("expect") {
            expect_continue = header.value.eq_ignore_ascii_case(b"100-continue");
        }
    }
    let content_length = content_length.unwrap_or(0);
    if content_length > max_body {
        return Err(bad(
            413,
            format!(
                "the request body ({content_length} bytes) is larger than the limit of \
                 {max_body} bytes"
            ),
        ));
    }
    Ok(Some(Head {
        method: request.method.unwrap_or_default().to_string(),
        target: request.path.unwrap_or_default().to_string(),
        head_len,
        content_length,
        expect_continue,
    }))
}

fn read_request(stream: &mut UnixStream, config: &ServerConfig) -> Result<Request, ReadError> {
    let deadline = Instant::now() + config.request_timeout;
    let timeout = config.request_timeout;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 8192];
    let head = loop {
        if let Some(head) = parse_head(&buf, config.max_body)? {
            break head;
        }
        if buf.len() >= MAX_HEAD {
            return Err(bad(
                431,
                format!("the request head is larger than {MAX_HEAD} bytes"),
            ));
        }
        let want = chunk.len().min(MAX_HEAD + 1 - buf.len());
        match read_some(stream, &mut chunk[..want], deadline, timeout)? {
            0 if buf.is_empty() => return Err(ReadError::Gone),
            0 => return Err(bad(400, "the request ended before its head was complete")),
            n => buf.extend_from_slice(&chunk[..n]),
        }
    };
    if head.expect_continue && head.content_length > buf.len() - head.head_len {
        let _ = stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
    let mut body = buf.split_off(head.head_len);
    while body.len() < head.content_length {
        let want = chunk.len().min(head.content_length - body.len());
        match read_some(stream, &mut chunk[..want], deadline, timeout)? {
            0 => {
                return Err(bad(
                    400,
                    format!(
                        "the request body ended after {} of the {} bytes its Content-Length \
                         announced",
                        body.len(),
                        head.content_length
                    ),
                ))
            }
            n => body.extend_from_slice(&chunk[..n]),
        }
    }
    // Bytes past Content-Length (a pipelined request) are ignored: one request per connection.
    body.truncate(head.content_length);
    Ok(Request {
        method: head.method,
        target: head.target,
        body,
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        422 => "Unprocessable Content",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

fn write_reply(stream: &mut UnixStream, reply: &Reply) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        reason(reply.status),
        reply.content_type,
        reply.body.len()
    );
    if let Some(allow) = reply.allow {
        head.push_str(&format!("Allow: {allow}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(&reply.body);
    stream.write_all(&out)?;
    stream.flush()
}
