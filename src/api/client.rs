//! The API client used by the CLI (and later the CNI plugin): one HTTP/1.1
//! request per connection over the daemon's root-only Unix socket, where
//! podnetd serves the Kubernetes API and podnet's node views; errors that
//! tell the user what to do (the daemon's `Status` message when it sent one).

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::node::{
    ConntrackEntry, NatRule, NodeCounter, ResetSummary, CONNTRACK_PATH, NAT_PATH, RESET_PATH,
    STATS_PATH,
};

/// The daemon's socket when neither `--socket` nor `PODNET_SOCKET` says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/podnet/podnet.sock";

/// Largest response the client reads (logs can be long, but not unbounded).
const MAX_RESPONSE: u64 = 64 << 20;

/// Why a request to the daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket (no file, or a stale one): the daemon is not running there.
    #[error(
        "cannot connect to podnetd at {}: {source}: is the daemon running? \
         (set --socket or PODNET_SOCKET)",
        socket.display()
    )]
    NotRunning {
        /// The socket tried.
        socket: PathBuf,
        /// What connect(2) said.
        source: io::Error,
    },
    /// The socket exists but this user may not use it.
    #[error(
        "permission denied connecting to podnetd at {}: the API is root-only; run podnet as root",
        socket.display()
    )]
    PermissionDenied {
        /// The socket tried.
        socket: PathBuf,
    },
    /// Connecting failed for another reason (e.g. the path is too long for a socket).
    #[error("cannot connect to podnetd at {}: {source}", socket.display())]
    Connect {
        /// The socket tried.
        socket: PathBuf,
        /// What connect(2) said.
        source: io::Error,
    },
    /// The daemon did not answer in time.
    #[error(
        "podnetd at {} did not answer within {}s; it may be busy or stuck (see its log)",
        socket.display(), timeout.as_secs()
    )]
    Timeout {
        /// The socket used.
        socket: PathBuf,
        /// The client's timeout.
        timeout: Duration,
    },
    /// The connection broke while sending or receiving.
    #[error("lost the connection to podnetd at {}: {source}", socket.display())]
    Io {
        /// The socket used.
        socket: PathBuf,
        /// The failing read or write.
        source: io::Error,
    },
    /// The daemon answered something that is not the expected HTTP or JSON
    /// (another program on the socket, or a daemon of another version).
    #[error("podnetd sent a response podnet cannot read: {0}")]
    BadResponse(String),
    /// The daemon refused or failed the request; the message is the daemon's.
    #[error("{message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The daemon's message.
        message: String,
    },
    /// The request could not be encoded as JSON.
    #[error("cannot encode the request as JSON: {0}")]
    Encode(#[source] serde_json::Error),
}

impl ClientError {
    /// The HTTP status, if the daemon answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A client of the podnetd API on a Unix socket.
#[derive(Debug, Clone)]
pub struct ApiClient {
    socket: PathBuf,
    timeout: Duration,
}

impl ApiClient {
    /// A client of the daemon at `socket`, with a 120 s timeout per read or
    /// write (a reset stops every pod, which can take a while).
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        ApiClient {
            socket: socket.into(),
            timeout: Duration::from_secs(120),
        }
    }

    /// The same client with another timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends one request and returns the body of a 2xx answer; a 4xx/5xx
    /// becomes [`ClientError::Api`] with the daemon's message.
    pub fn request_bytes(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Vec<u8>, ClientError> {
        self.request_typed(method, path, "application/json", body)
    }

    /// [`ApiClient::request_bytes`] with a body of another media type (a
    /// Kubernetes apply patch, `application/apply-patch+yaml`).
    pub fn request_typed(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Option<&[u8]>,
    ) -> Result<Vec<u8>, ClientError> {
        self.exchange(method, path, content_type, "application/json", body)
    }

    /// `GET path` answered as a Kubernetes `Table` (the columns `kubectl
    /// get` shows), as JSON.
    pub fn get_table(&self, path: &str) -> Result<serde_json::Value, ClientError> {
        let answer = self.exchange(
            "GET",
            path,
            "application/json",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
            None,
        )?;
        serde_json::from_slice(&answer)
            .map_err(|e| ClientError::BadResponse(format!("invalid JSON for GET {path}: {e}")))
    }

    fn exchange(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        accept: &str,
        body: Option<&[u8]>,
    ) -> Result<Vec<u8>, ClientError> {
        let mut stream = UnixStream::connect(&self.socket).map_err(|source| {
            let socket = self.socket.clone();
            match source.kind() {
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                    ClientError::NotRunning { socket, source }
                }
                io::ErrorKind::PermissionDenied => ClientError::PermissionDenied { socket },
                _ => ClientError::Connect { socket, source },
            }
        })?;
        let io_err = |source: io::Error| {
            if matches!(
                source.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) {
                ClientError::Timeout {
                    socket: self.socket.clone(),
                    timeout: self.timeout,
                }
            } else {
                ClientError::Io {
                    socket: self.socket.clone(),
                    source,
                }
            }
        };
        stream
            .set_read_timeout(Some(self.timeout))
            .and_then(|()| stream.set_write_timeout(Some(self.timeout)))
            .map_err(io_err)?;

        let body = body.unwrap_or_default();
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: podnetd\r\nUser-Agent: podnet/{}\r\n\
             Accept: {accept}\r\nConnection: close\r\nContent-Length: {}\r\n",
            env!("CARGO_PKG_VERSION"),
            body.len()
        );
        if !body.is_empty() {
            request.push_str(&format!("Content-Type: {content_type}\r\n"));
        }
        request.push_str("\r\n");
        let mut bytes = request.into_bytes();
        bytes.extend_from_slice(body);
        // The server may answer early (e.g. 413) and close before reading all of
        // the request; its answer is still there to read, so a failed write is
        // only reported if no answer follows.
        let write_result = stream.write_all(&bytes);

        let mut response = Vec::new();
        if let Err(e) = read_response(&mut stream, &mut response) {
            return Err(io_err(write_result.err().unwrap_or(e)));
        }
        if response.is_empty() {
            return Err(match write_result {
                Err(e) => io_err(e),
                Ok(()) => {
                    ClientError::BadResponse("the connection closed without an answer".to_string())
                }
            });
        }
        parse_response(&response)
    }

    /// Sends a request with an optional JSON body and decodes a JSON answer.
    pub fn request<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        method: &str,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(ClientError::Encode)?;
        let answer = self.request_bytes(method, path, body.as_deref())?;
        serde_json::from_slice(&answer)
            .map_err(|e| ClientError::BadResponse(format!("invalid JSON for {method} {path}: {e}")))
    }

    /// `GET path`, decoding the JSON answer.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.request::<T, ()>("GET", path, None)
    }

    /// `DELETE path`, decoding the JSON answer.
    pub fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.request::<T, ()>("DELETE", path, None)
    }

    /// `POST path` with an optional JSON body, decoding the JSON answer.
    pub fn post<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        self.request("POST", path, body)
    }

    /// `PUT path` with a JSON body, decoding the JSON answer.
    pub fn put<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.request("PUT", path, Some(body))
    }

    /// The service NAT table.
    pub fn nat_rules(&self) -> Result<Vec<NatRule>, ClientError> {
        self.get(NAT_PATH)
    }
    /// The tracked flows.
    pub fn conntrack(&self) -> Result<Vec<ConntrackEntry>, ClientError> {
        self.get(CONNTRACK_PATH)
    }
    /// The node's packet and drop counters.
    pub fn stats(&self) -> Result<Vec<NodeCounter>, ClientError> {
        self.get(STATS_PATH)
    }
    /// What the fast path would do with a new flow.
    pub fn explain(
        &self,
        query: &crate::api::node::FlowQuery,
    ) -> Result<crate::api::node::Explanation, ClientError> {
        self.get(&format!(
            "{}?{}",
            crate::api::node::EXPLAIN_PATH,
            query.to_query_string()
        ))
    }
    /// Stops every pod and removes what podnet made; the daemon then exits.
    pub fn reset(&self) -> Result<ResetSummary, ClientError> {
        self.post::<_, ()>(RESET_PATH, None)
    }
}

/// Reads the answer until the server closes the connection. A reset after
/// some bytes arrived is the end of the answer, not a failure: Linux resets a
/// Unix stream whose peer closes with unread input, which is what a server
/// that answers before reading the whole request (413, 503) does.
fn read_response(stream: &mut UnixStream, response: &mut Vec<u8>) -> io::Result<()> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                response.extend_from_slice(&chunk[..n]);
                if response.len() as u64 > MAX_RESPONSE {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("the answer is larger than {MAX_RESPONSE} bytes"),
                    ));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset && !response.is_empty() => {
                return Ok(())
            }
            Err(e) => return Err(e),
        }
    }
}

/// Percent-encodes what could change the shape of a path, so that a bad name
/// reaches the server's name check (and its message) intact instead of
/// becoming another route or a malformed request line.
pub fn path_segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn parse_response(response: &[u8]) -> Result<Vec<u8>, ClientError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Response::new(&mut headers);
    let head_len = match parsed.parse(response) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return Err(ClientError::BadResponse(
                "the answer ended inside its HTTP head".to_string(),
            ))
        }
        Err(e) => {
            return Err(ClientError::BadResponse(format!(
                "not HTTP ({e}); is something other than podnetd listening on the socket?"
            )))
        }
    };
    let status = parsed.code.unwrap_or(0);
    let mut body = &response[head_len..];
    let length = parsed
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| {
            std::str::from_utf8(h.value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        });
    if let Some(length) = length {
        if body.len() < length {
            return Err(ClientError::BadResponse(format!(
                "the answer ended after {} of {length} bytes",
                body.len()
            )));
        }
        body = &body[..length];
    }
    if (200..300).contains(&status) {
        return Ok(body.to_vec());
    }
    let status_message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .filter(|v| v["kind"] == "Status")
        .and_then(|v| v["message"].as_str().map(str::to_string));
    let message = match status_message {
        Some(m) => m,
        None => {
            let text = String::from_utf8_lossy(body);
            let text: String = text.trim().chars().take(500).collect();
            let reason = parsed.reason.unwrap_or("");
            if text.is_empty() {
                format!("podnetd answered {status} {reason}")
            } else {
                format!("podnetd answered {status} {reason}: {text}")
            }
        }
    };
    Err(ClientError::Api { status, message })
}
