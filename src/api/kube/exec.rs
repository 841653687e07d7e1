//! `pods/NAME/exec` (`kubectl exec`, and `kubectl cp`, which is exec of
//! `tar`): a command run in a pod's namespaces, its stdin, stdout and
//! stderr (or a terminal) carried over a WebSocket as the API server
//! carries them for kubectl 1.30 and later, or over SPDY/3.1 as older
//! clients (and kubectl, when the WebSocket upgrade is refused) ask.
//!
//! [`RunningCommand`] is the command's side, whatever carries its streams.
//! Over a WebSocket the subprotocol is `v5.channel.k8s.io` (kubectl's
//! first choice) or `v4.channel.k8s.io` (the Python client's). Each binary
//! message starts with its channel: 0 stdin, 1 stdout, 2 stderr, 3 the
//! closing `Status` (a failed command's exit code is its cause `ExitCode`,
//! which kubectl exits with), 4 the terminal's size
//! (`{"Width":W,"Height":H}`). In v5 the client closes stdin with
//! `[255, 0]`. The SPDY transport is [`super::exec_spdy`].

use std::io::{Read, Write};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::{exec_spdy, failure, Body, Reject};
use crate::control::objects::{ObjectError, Objects};

/// The WebSocket subprotocols served, in order of preference.
pub const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

const STDIN: u8 = 0;
pub(super) const STDOUT: u8 = 1;
pub(super) const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
/// v5: `[CLOSE, channel]` half-closes a channel.
const CLOSE: u8 = 255;
/// Client messages for stdin held while the command has not read them.
const STDIN_QUEUE: usize = 16;

/// Runs commands in pods and connects to their ports (the node's runtime).
pub trait PodExec: Send + Sync {
    /// A TCP connection to `port` on the loopback address of `pod`'s
    /// network namespace (`kubectl port-forward`).
    fn connect(&self, pod: &Pod, port: u16) -> Result<std::net::TcpStream, String>;

    /// Starts `command` in the namespaces of container `container` of
    /// `pod`, with a terminal if `tty`, with a stdin to write to if
    /// `stdin`.
    fn exec(
        &self,
        pod: &Pod,
        container: &str,
        command: &[String],
        tty: bool,
        stdin: bool,
    ) -> Result<ExecChild, String>;
}

/// A command started by [`PodExec::exec`].
pub struct ExecChild {
    /// The process, with piped stdin, stdout and stderr unless it has a
    /// terminal.
    pub child: std::process::Child,
    /// The terminal's controlling side, when it has one (its stdio are
    /// then the other side).
    pub terminal: Option<crate::sys::pty::Terminal>,
}

/// What the request asked for.
#[derive(Debug, Default, PartialEq)]
pub(super) struct ExecRequest {
    pub(super) command: Vec<String>,
    pub(super) container: Option<String>,
    pub(super) stdin: bool,
    pub(super) stdout: bool,
    pub(super) stderr: bool,
    pub(super) tty: bool,
}

impl ExecRequest {
    /// From the query string (`command` repeats, one per argument).
    fn parse(query: Option<&str>) -> ExecRequest {
        let mut r = ExecRequest::default();
        let flag = |v: &str| matches!(v, "true" | "1");
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = super::percent_decode(v);
            match super::percent_decode(k).as_str() {
                "command" => r.command.push(v),
                "container" => r.container = Some(v),
                "stdin" => r.stdin = flag(&v),
                "stdout" => r.stdout = flag(&v),
                "stderr" => r.stderr = flag(&v),
                "tty" => r.tty = flag(&v),
                _ => {}
            }
        }
        r
    }
}

/// The subprotocol to speak: the first of the client's that is served.
fn negotiate(offered: &str) -> Option<&'static str> {
    offered
        .split(',')
        .map(str::trim)
        .find_map(|p| PROTOCOLS.iter().find(|s| **s == p).copied())
}

/// The `Status` sent on the error channel when the command ends.
pub(super) fn exit_status(code: i32) -> serde_json::Value {
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("command terminated with non-zero exit code: exit status {code}"),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}
    })
}

/// The `Status` sent when the command could not be started.
pub(super) fn start_failure(message: &str) -> serde_json::Value {
    json!({
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "InternalError",
        "code": 500
    })
}

fn frame(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::Binary(v.into())
}

/// Answers an exec request: checks it, upgrades the connection, and runs
/// the command once upgraded.
pub fn serve(
    objects: &Objects,
    runner: Option<&Arc<dyn PodExec>>,
    ns: &str,
    name: &str,
    mut req: Request<hyper::body::Incoming>,
) -> Response<Body> {
    let asked = ExecRequest::parse(req.uri().query());
    let transport = match Transport::of(&req) {
        Ok(t) => t,
        Err(r) => return r.into(),
    };
    let pod = match stream_pod(objects, ns, name) {
        Ok(p) => p,
        Err(r) => return r.into(),
    };
    if asked.command.is_empty() {
        return failure(400, "BadRequest", "you must specify at least 1 command");
    }
    if !(asked.stdin || asked.stdout || asked.stderr) {
        return failure(
            400,
            "BadRequest",
            "you must specify at least 1 of stdin, stdout, stderr",
        );
    }
    let container = match super::logs::pick_container(&pod, asked.container.as_deref()) {
        Ok(c) => c,
        Err(message) => return failure(400, "BadRequest", &message),
    };
    let runner = match require_running(&pod, "a command can only run in a running pod")
        .and_then(|()| require_runner(runner, "exec"))
    {
        Ok(r) => r,
        Err(r) => return r.into(),
    };
    let upgrade = hyper::upgrade::on(&mut req);
    let response = match &transport {
        Transport::WebSocket { key, protocol } => Response::builder()
            .header("upgrade", "websocket")
            .header("sec-websocket-accept", derive_accept_key(key.as_bytes()))
            .header("sec-websocket-protocol", *protocol),
        Transport::Spdy { protocol, .. } => Response::builder()
            .header("upgrade", "SPDY/3.1")
            .header("x-stream-protocol-version", *protocol),
    };
    tokio::spawn(async move {
        let upgraded = match upgrade.await {
            Ok(u) => TokioIo::new(u),
            Err(e) => {
                tracing::debug!(error = %e, "exec: the upgrade did not complete");
                return;
            }
        };
        match transport {
            Transport::WebSocket { protocol, .. } => {
                let ws = WebSocketStream::from_raw_socket(upgraded, Role::Server, None).await;
                run(ws, runner, pod, container, asked, protocol == PROTOCOLS[0]).await;
            }
            Transport::Spdy { version, .. } => {
                exec_spdy::session(upgraded, version, runner, pod, container, asked).await;
            }
        }
    });
    switching_protocols(response)
}

/// How the client asked to carry the streams.
enum Transport {
    WebSocket {
        key: String,
        protocol: &'static str,
    },
    Spdy {
        protocol: &'static str,
        version: exec_spdy::Version,
    },
}

impl Transport {
    /// The upgrade `req` asks for, or why it cannot be served.
    fn of(req: &Request<hyper::body::Incoming>) -> Result<Transport, Reject> {
        let header = |h: &str| header_text(req, h);
        let upgrade = header("upgrade");
        if upgrade.eq_ignore_ascii_case("SPDY/3.1") {
            // One header per protocol, as Go clients send them.
            let offered: Vec<&str> = req
                .headers()
                .get_all("x-stream-protocol-version")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .collect();
            if offered.is_empty() {
                return Err(Reject::bad(
                    "unable to upgrade: X-Stream-Protocol-Version is required".into(),
                ));
            }
            return match exec_spdy::negotiate(&offered) {
                Some((protocol, version)) => Ok(Transport::Spdy { protocol, version }),
                None => Err(Reject::new(
                    403,
                    "Forbidden",
                    format!(
                        "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts {:?}",
                        exec_spdy::PROTOCOLS
                    ),
                )),
            };
        }
        let key = header("sec-websocket-key");
        if !upgrade.eq_ignore_ascii_case("websocket") || key.is_empty() {
            return Err(Reject::bad(
                "exec needs an upgrade to a WebSocket (Upgrade: websocket, Sec-WebSocket-Key) or to SPDY/3.1".into(),
            ));
        }
        match negotiate(&header("sec-websocket-protocol")) {
            Some(protocol) => Ok(Transport::WebSocket { key, protocol }),
            None => Err(Reject::bad(format!(
                "exec is served over a WebSocket with subprotocol {}, or over SPDY/3.1",
                PROTOCOLS.join(" or ")
            ))),
        }
    }
}

/// The value of header `name` as text ("" when absent or not text).
pub(super) fn header_text(req: &Request<hyper::body::Incoming>, name: &str) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// The pod a stream (exec, port-forward) goes to, or why not.
pub(super) fn stream_pod(objects: &Objects, ns: &str, name: &str) -> Result<Pod, Reject> {
    objects.get_as(Some(ns), name).map_err(|e| match e {
        ObjectError::NotFound { .. } => Reject::new(404, "NotFound", e.to_string()),
        e => Reject::new(e.code(), e.reason(), e.to_string()),
    })
}

/// Refused unless `pod` is running; `needs` says what needs it.
pub(super) fn require_running(pod: &Pod, needs: &str) -> Result<(), Reject> {
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending");
    if phase == "Running" {
        return Ok(());
    }
    let name = pod.metadata.name.as_deref().unwrap_or("");
    Err(Reject::bad(format!(
        "pod {name} is {phase}, not Running: {needs}"
    )))
}

/// The node's runtime, refused on a server that runs no pods.
pub(super) fn require_runner(
    runner: Option<&Arc<dyn PodExec>>,
    what: &str,
) -> Result<Arc<dyn PodExec>, Reject> {
    runner
        .cloned()
        .ok_or_else(|| Reject::bad(format!("this server runs no pods: {what} is not available")))
}

/// A `101 Switching Protocols` answer with `headers`' upgrade headers.
pub(super) fn switching_protocols(headers: hyper::http::response::Builder) -> Response<Body> {
    headers
        .status(101)
        .header("connection", "Upgrade")
        .body(
            Empty::<Bytes>::new()
                .map_err(|never| match never {})
                .boxed(),
        )
        .expect("a valid response")
}

/// What the client sent, for the command.
pub(super) enum Input {
    Data(Vec<u8>),
    /// Stdin closed.
    Close,
}

/// What the command sends towards the client.
pub(super) enum Output {
    /// Bytes on [`STDOUT`] (the terminal's too) or [`STDERR`].
    Data(u8, Vec<u8>),
    /// The command exited with this code, after its last output.
    Exit(i32),
}

/// A command started for a client, whatever carries its streams: its
/// output (read on threads of its own), its stdin (written on a thread of
/// its own, through a bounded queue: a command that reads slowly, such as
/// tar under kubectl cp, slows the client down instead of its input piling
/// up here), its terminal.
pub(super) struct RunningCommand {
    /// The command's stdin, if the client asked for one.
    stdin: Option<mpsc::Sender<Input>>,
    terminal: Option<crate::sys::pty::Terminal>,
    pid: u32,
}

impl RunningCommand {
    /// Starts the command `asked` for in `container` of `pod`, with its
    /// output and then its exit code to read; the message for the client
    /// if it could not be started.
    pub(super) async fn start(
        runner: Arc<dyn PodExec>,
        pod: Pod,
        container: String,
        asked: &ExecRequest,
    ) -> Result<(RunningCommand, mpsc::Receiver<Output>), String> {
        let started = {
            let command = asked.command.clone();
            let (tty, stdin) = (asked.tty, asked.stdin);
            tokio::task::spawn_blocking(move || runner.exec(&pod, &container, &command, tty, stdin))
                .await
        };
        let mut started = match started {
            Ok(Ok(s)) => s,
            Ok(Err(m)) => return Err(m),
            Err(_) => return Err("the command could not be started".to_string()),
        };
        let (out_tx, output) = mpsc::channel::<Output>(16);
        let mut readers = Vec::new();
        let mut stdin: Option<Box<dyn Write + Send>> = None;
        let mut terminal = None;
        if let Some(t) = started.terminal.take() {
            if let Ok(r) = t.try_clone_file() {
                readers.push(spawn_reader(r, STDOUT, out_tx.clone()));
            }
            if asked.stdin {
                stdin = t
                    .try_clone_file()
                    .ok()
                    .map(|f| Box::new(f) as Box<dyn Write + Send>);
            }
            terminal = Some(t);
        } else {
            if let Some(o) = started.child.stdout.take() {
                readers.push(spawn_reader(o, STDOUT, out_tx.clone()));
            }
            if let Some(e) = started.child.stderr.take() {
                readers.push(spawn_reader(e, STDERR, out_tx.clone()));
            }
            stdin = started
                .child
                .stdin
                .take()
                .map(|s| Box::new(s) as Box<dyn Write + Send>);
        }
        let pid = started.child.id();
        let mut child = started.child;
        std::thread::spawn(move || {
            for r in readers {
                let _ = r.join();
            }
            let code = match child.wait() {
                Ok(status) => exit_code(status),
                Err(_) => 1,
            };
            let _ = out_tx.blocking_send(Output::Exit(code));
        });
        let stdin = stdin.map(|mut w| {
            let (tx, mut rx) = mpsc::channel::<Input>(STDIN_QUEUE);
            std::thread::spawn(move || {
                while let Some(Input::Data(d)) = rx.blocking_recv() {
                    if w.write_all(&d).is_err() {
                        break;
                    }
                }
            });
            tx
        });
        let command = RunningCommand {
            stdin,
            terminal,
            pid,
        };
        Ok((command, output))
    }

    /// Passes `input` on to the command's stdin (dropped without one);
    /// waits while its queue is full.
    pub(super) async fn write(&self, input: Input) {
        if let Some(tx) = &self.stdin {
            let _ = tx.send(input).await;
        }
    }

    /// Closes the command's stdin.
    pub(super) fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Sets the terminal's size from a `{"Width":W,"Height":H}` message.
    pub(super) fn resize(&self, message: &[u8]) {
        if let (Some(t), Some((w, h))) = (&self.terminal, parse_size(message)) {
            let _ = t.set_size(w, h);
        }
    }

    /// The client went away before the command ended: a terminal's session
    /// is hung up, as a terminal closing does.
    pub(super) fn hang_up(&self) {
        if self.terminal.is_some() {
            let _ = crate::sys::process::kill_group(self.pid, crate::sys::process::Signal::SIGHUP);
        }
    }
}

/// Carries the command's streams over the WebSocket until it exits (and
/// its output is sent) or the client goes away.
async fn run<S>(
    mut ws: WebSocketStream<S>,
    runner: Arc<dyn PodExec>,
    pod: Pod,
    container: String,
    asked: ExecRequest,
    v5: bool,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut command, mut out_rx) =
        match RunningCommand::start(runner, pod, container, &asked).await {
            Ok(c) => c,
            Err(message) => {
                let status = start_failure(&message).to_string();
                let _ = ws.send(frame(ERROR, status.as_bytes())).await;
                let _ = ws.close(Some(normal_closure())).await;
                return;
            }
        };
    let (mut sink, mut source) = ws.split();
    // Output on a task of its own: waiting for room in stdin's queue must
    // never stop it (the command may be blocked writing its output).
    let mut output = tokio::spawn(async move {
        while let Some(o) = out_rx.recv().await {
            let m = match o {
                Output::Data(channel, data) => frame(channel, &data),
                Output::Exit(code) => frame(ERROR, exit_status(code).to_string().as_bytes()),
            };
            if sink.send(m).await.is_err() {
                return false;
            }
        }
        // The command exited and its status is sent.
        let _ = sink.send(Message::Close(Some(normal_closure()))).await;
        let _ = sink.close().await;
        true
    });
    let mut finished = false;
    loop {
        tokio::select! {
            done = &mut output => {
                finished = done.unwrap_or(false);
                break;
            }
            incoming = source.next() => match incoming {
                Some(Ok(Message::Binary(data))) => match data.split_first() {
                    Some((&STDIN, rest)) => command.write(Input::Data(rest.to_vec())).await,
                    Some((&RESIZE, rest)) => command.resize(rest),
                    Some((&CLOSE, [STDIN])) if v5 => command.write(Input::Close).await,
                    _ => {}
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    command.close_stdin();
    if !finished {
        command.hang_up();
    }
}

/// A close with status 1000: kubectl's readers take it as the end of each
/// stream (a close without a status reads as an error).
fn normal_closure() -> CloseFrame {
    CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }
}

fn spawn_reader(
    mut from: impl Read + Send + 'static,
    channel: u8,
    to: mpsc::Sender<Output>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match from.read(&mut buf) {
                // A terminal whose last user left reads EIO: its end.
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to
                        .blocking_send(Output::Data(channel, buf[..n].to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    })
}

/// The exit code of a process as a shell reports it (128 + a signal).
fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

/// `{"Width":W,"Height":H}`.
fn parse_size(data: &[u8]) -> Option<(u16, u16)> {
    let v: serde_json::Value = serde_json::from_slice(data).ok()?;
    let w = u16::try_from(v.get("Width")?.as_u64()?).ok()?;
    let h = u16::try_from(v.get("Height")?.as_u64()?).ok()?;
    Some((w, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_repeats_command_once_per_argument() {
        let r = ExecRequest::parse(Some(
            "command=sh&command=-c&command=echo%20hi%3B%20exit%203&container=c&stdin=true&stdout=true&stderr=true&tty=false",
        ));
        assert_eq!(
            r,
            ExecRequest {
                command: vec!["sh".into(), "-c".into(), "echo hi; exit 3".into()],
                container: Some("c".into()),
                stdin: true,
                stdout: true,
                stderr: true,
                tty: false,
            }
        );
    }

    #[test]
    fn v5_is_chosen_over_v4_and_unknown_protocols_are_not() {
        assert_eq!(
            negotiate("v5.channel.k8s.io, v4.channel.k8s.io, v3.channel.k8s.io"),
            Some("v5.channel.k8s.io")
        );
        assert_eq!(
            negotiate("v4.channel.k8s.io,channel.k8s.io"),
            Some("v4.channel.k8s.io")
        );
        assert_eq!(negotiate("SPDY/3.1"), None);
        assert_eq!(negotiate(""), None);
    }

    #[test]
    fn a_failed_command_reports_its_exit_code_as_kubectl_reads_it() {
        let s = exit_status(3);
        assert_eq!(s["status"], "Failure");
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(s["details"]["causes"][0]["message"], "3");
        assert_eq!(exit_status(0)["status"], "Success");
    }

    #[test]
    fn terminal_sizes_parse_and_bad_ones_are_ignored() {
        assert_eq!(parse_size(br#"{"Width":120,"Height":40}"#), Some((120, 40)));
        assert_eq!(parse_size(br#"{"Width":-1,"Height":40}"#), None);
        assert_eq!(parse_size(b"garbage"), None);
    }
}
