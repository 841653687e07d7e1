//! `kubectl exec` over SPDY/3.1 ([`super::spdy`]), as the kubelet serves
//! it to clients that do not use the WebSocket: kubectl before 1.30, and
//! later ones when the WebSocket upgrade is refused
//! (`KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false` forces it).
//!
//! The client upgrades to `SPDY/3.1` with `X-Stream-Protocol-Version`
//! headers naming the protocols it speaks, in its order of preference; the
//! first one served is answered ([`negotiate`]). It then opens a stream per
//! pipe, named by its header `streamType`: `error`, then `stdin`, `stdout`
//! and `stderr` (not with a terminal) as the query asked, and `resize`
//! with a terminal (v3 and later). The command starts once all are open.
//! Its output goes out on `stdout` and `stderr`, which are closed (FIN)
//! when it has exited; then the error stream says how it ended and is
//! closed, and the session ends:
//!
//! * v4: a `metav1.Status`, JSON, with the exit code as the WebSocket
//!   protocol sends it (kubectl exits with that code). v5 over SPDY is v4,
//!   as on a kubelet (its one addition, closing stdin by a message, is
//!   the WebSocket's).
//! * v3 and v2: nothing on success, else the status's message as text
//!   (kubectl then exits with 1, not the command's code).
//!
//! A FIN (or a reset) on `stdin` closes the command's stdin; each line on
//! `resize` is a `{"Width":W,"Height":H}` for the terminal.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use super::exec::{
    exit_status, start_failure, ExecRequest, Input, Output, PodExec, RunningCommand, STDERR,
};
use super::spdy::{self, Frame, FrameReader};

/// The stream protocols served, in the order a client is answered when it
/// offers several in no order of its own.
pub const PROTOCOLS: [&str; 4] = [
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
];

/// How long the client has to open its streams, as a kubelet's default.
const STREAM_WAIT: Duration = Duration::from_secs(30);
/// Frames queued for the client before senders wait.
const OUT_QUEUE: usize = 64;
/// The longest `resize` line kept while its end has not come.
const MAX_RESIZE_LINE: usize = 4096;

/// What the error stream carries, and whether there is a `resize` stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    /// Error text; no terminal resizing.
    V2,
    /// Error text; terminal resizing.
    V3,
    /// A JSON `Status` with the exit code; terminal resizing.
    V4,
}

/// The first protocol of `offered` (the client's, in its order) that is
/// served, with the version it is spoken as.
pub fn negotiate(offered: &[&str]) -> Option<(&'static str, Version)> {
    offered.iter().find_map(|p| match *p {
        "v5.channel.k8s.io" => Some((PROTOCOLS[0], Version::V4)),
        "v4.channel.k8s.io" => Some((PROTOCOLS[1], Version::V4)),
        "v3.channel.k8s.io" => Some((PROTOCOLS[2], Version::V3)),
        "v2.channel.k8s.io" => Some((PROTOCOLS[3], Version::V2)),
        _ => None,
    })
}

/// What the error stream carries for a command that exited with `code`
/// (nothing for a success before v4).
fn exit_report(version: Version, code: i32) -> Option<Vec<u8>> {
    let status = exit_status(code);
    match version {
        Version::V4 => Some(status.to_string().into_bytes()),
        _ if code == 0 => None,
        _ => status["message"].as_str().map(|m| m.as_bytes().to_vec()),
    }
}

/// What the error stream carries for a command that could not start.
fn start_report(version: Version, message: &str) -> Vec<u8> {
    match version {
        Version::V4 => start_failure(message).to_string().into_bytes(),
        _ => message.as_bytes().to_vec(),
    }
}

/// The client's streams, by what they carry.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Streams {
    error: Option<u32>,
    stdin: Option<u32>,
    stdout: Option<u32>,
    stderr: Option<u32>,
    resize: Option<u32>,
}

impl Streams {
    /// Notes stream `id` of type `kind`; false for a type not known.
    fn note(&mut self, kind: &str, id: u32) -> bool {
        let slot = match kind {
            "error" => &mut self.error,
            "stdin" => &mut self.stdin,
            "stdout" => &mut self.stdout,
            "stderr" => &mut self.stderr,
            "resize" => &mut self.resize,
            _ => return false,
        };
        *slot = Some(id);
        true
    }

    /// Whether every stream the client opens for `asked` is open.
    fn complete(&self, version: Version, asked: &ExecRequest) -> bool {
        let wanted = [
            (true, self.error),
            (asked.stdin, self.stdin),
            (asked.stdout, self.stdout),
            // A terminal has no stderr of its own.
            (asked.stderr && !asked.tty, self.stderr),
            (asked.tty && version >= Version::V3, self.resize),
        ];
        wanted.iter().all(|(want, got)| !want || got.is_some())
    }
}

fn data(stream: u32, bytes: Vec<u8>) -> Frame {
    Frame::Data {
        stream,
        fin: false,
        data: bytes,
    }
}

fn fin(stream: u32) -> Frame {
    Frame::Data {
        stream,
        fin: true,
        data: Vec::new(),
    }
}

/// Serves one exec session over `io`, a connection upgraded to SPDY/3.1,
/// until the command has exited and its end is sent, or the client goes
/// away.
pub(super) async fn session<T>(
    io: T,
    version: Version,
    runner: Arc<dyn PodExec>,
    pod: Pod,
    container: String,
    asked: ExecRequest,
) where
    T: AsyncRead + AsyncWrite + Send + 'static,
{
    let (rd, wr) = tokio::io::split(io);
    let (out, writer) = spdy::spawn_writer(wr, OUT_QUEUE);
    let mut frames = FrameReader::new(rd);
    let opened = tokio::time::timeout(
        STREAM_WAIT,
        open_streams(&mut frames, &out, version, &asked),
    );
    let streams = match opened.await {
        Ok(Some(s)) => s,
        Ok(None) => return end(out, writer).await,
        Err(_) => {
            tracing::debug!("exec: the client did not open its streams in time");
            return end(out, writer).await;
        }
    };
    let (mut command, output) = match RunningCommand::start(runner, pod, container, &asked).await {
        Ok(c) => c,
        Err(message) => {
            let error = streams.error.expect("a complete set has an error stream");
            let _ = out.send(data(error, start_report(version, &message))).await;
            for s in [streams.stdout, streams.stderr].into_iter().flatten() {
                let _ = out.send(fin(s)).await;
            }
            let _ = out.send(fin(error)).await;
            return end(out, writer).await;
        }
    };
    let mut carry = tokio::spawn(carry_output(output, streams, version, out.clone()));
    let mut resize = Vec::new();
    let mut finished = false;
    loop {
        tokio::select! {
            done = &mut carry => {
                finished = done.unwrap_or(false);
                break;
            }
            frame = frames.next() => match frame {
                Ok(Some(Frame::Data { stream, fin, data })) => {
                    if Some(stream) == streams.stdin {
                        if !data.is_empty() {
                            command.write(Input::Data(data)).await;
                        }
                        if fin {
                            command.close_stdin();
                        }
                    } else if Some(stream) == streams.resize {
                        resize.extend_from_slice(&data);
                        while let Some(n) = memchr::memchr(b'\n', &resize) {
                            command.resize(&resize[..n]);
                            resize.drain(..=n);
                        }
                        if resize.len() > MAX_RESIZE_LINE {
                            resize.clear();
                        }
                    }
                }
                Ok(Some(Frame::RstStream { stream, .. })) if Some(stream) == streams.stdin => {
                    command.close_stdin();
                }
                Ok(Some(Frame::Ping { id })) => {
                    let _ = out.send(Frame::Ping { id }).await;
                }
                Ok(Some(Frame::GoAway { .. })) | Ok(None) | Err(_) => break,
                Ok(Some(_)) => {}
            },
        }
    }
    command.close_stdin();
    if !finished {
        carry.abort();
        command.hang_up();
    }
    end(out, writer).await;
}

/// Answers the client's streams until every one `asked` needs is open;
/// `None` if the client went away first.
async fn open_streams<R>(
    frames: &mut FrameReader<R>,
    out: &mpsc::Sender<Frame>,
    version: Version,
    asked: &ExecRequest,
) -> Option<Streams>
where
    R: AsyncRead + Unpin,
{
    let mut streams = Streams::default();
    while !streams.complete(version, asked) {
        match frames.next().await {
            Ok(Some(Frame::SynStream {
                stream, headers, ..
            })) => {
                // The client waits for each reply before its next stream.
                let reply = Frame::SynReply {
                    stream,
                    headers: Vec::new(),
                };
                out.send(reply).await.ok()?;
                let kind = spdy::header(&headers, "streamtype").unwrap_or("");
                if !streams.note(kind, stream) {
                    tracing::debug!(kind, "exec: a stream of an unknown type");
                }
            }
            Ok(Some(Frame::Ping { id })) => out.send(Frame::Ping { id }).await.ok()?,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return None,
        }
    }
    Some(streams)
}

/// Sends the command's output on its streams, then, once it has exited,
/// closes them and reports the end on the error stream. False if the
/// client went away first.
async fn carry_output(
    mut output: mpsc::Receiver<Output>,
    streams: Streams,
    version: Version,
    out: mpsc::Sender<Frame>,
) -> bool {
    while let Some(o) = output.recv().await {
        match o {
            Output::Data(channel, bytes) => {
                let stream = if channel == STDERR {
                    streams.stderr
                } else {
                    streams.stdout
                };
                // Output the client did not ask for is dropped.
                if let Some(s) = stream {
                    if out.send(data(s, bytes)).await.is_err() {
                        return false;
                    }
                }
            }
            Output::Exit(code) => {
                let mut last: Vec<Frame> = [streams.stdout, streams.stderr]
                    .into_iter()
                    .flatten()
                    .map(fin)
                    .collect();
                if let Some(error) = streams.error {
                    last.extend(exit_report(version, code).map(|r| data(error, r)));
                    last.push(fin(error));
                }
                for f in last {
                    if out.send(f).await.is_err() {
                        return false;
                    }
                }
                return true;
            }
        }
    }
    false
}

/// Ends the session: what is queued is written, then the connection is
/// shut down (as a kubelet closes it once the status is written).
async fn end(out: mpsc::Sender<Frame>, writer: tokio::task::JoinHandle<()>) {
    drop(out);
    let _ = writer.await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::kube::exec::ExecChild;
    use bytes::BytesMut;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Runs commands on this host, as a pod's runtime would in the pod.
    struct Host;

    impl PodExec for Host {
        fn connect(&self, _: &Pod, _: u16) -> Result<std::net::TcpStream, String> {
            Err("not here".into())
        }

        fn exec(
            &self,
            _: &Pod,
            _: &str,
            command: &[String],
            _tty: bool,
            stdin: bool,
        ) -> Result<ExecChild, String> {
            use std::process::Stdio;
            let child = std::process::Command::new(&command[0])
                .args(&command[1..])
                .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("{}: {e}", command[0]))?;
            Ok(ExecChild {
                child,
                terminal: None,
            })
        }
    }

    fn asked(command: &[&str], stdin: bool) -> ExecRequest {
        ExecRequest {
            command: command.iter().map(|c| c.to_string()).collect(),
            container: None,
            stdin,
            stdout: true,
            stderr: true,
            tty: false,
        }
    }

    /// What a client saw of a session: the bytes of each of its streams,
    /// which streams the server closed, and whether the server ended the
    /// connection.
    #[derive(Debug, Default)]
    struct Seen {
        bytes: std::collections::HashMap<u32, Vec<u8>>,
        closed: Vec<u32>,
        replies: Vec<u32>,
    }

    impl Seen {
        fn text(&self, stream: u32) -> String {
            String::from_utf8_lossy(self.bytes.get(&stream).map_or(&[][..], |b| b)).into_owned()
        }
    }

    /// Plays kubectl against a session: opens the streams (error 1, stdin 3
    /// when `stdin` is given, stdout 5, stderr 7), sends `stdin` and closes
    /// it, and reads until the server ends the connection.
    async fn client(version: Version, request: ExecRequest, stdin: Option<&[u8]>) -> Seen {
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        let server = tokio::spawn(session(
            theirs,
            version,
            Arc::new(Host),
            Pod::default(),
            "main".into(),
            request,
        ));
        let (mut rd, mut wr) = tokio::io::split(ours);
        let mut enc = spdy::Encoder::with_dictionary();
        let mut kinds = vec![(1, "error")];
        if stdin.is_some() {
            kinds.push((3, "stdin"));
        }
        kinds.extend([(5, "stdout"), (7, "stderr")]);
        for (id, kind) in kinds {
            let syn = Frame::SynStream {
                stream: id,
                fin: false,
                headers: vec![("streamtype".into(), kind.into())],
            };
            wr.write_all(&enc.encode(&syn)).await.unwrap();
        }
        if let Some(input) = stdin {
            for piece in input.chunks(1000) {
                wr.write_all(&enc.encode(&data(3, piece.to_vec())))
                    .await
                    .unwrap();
            }
            wr.write_all(&enc.encode(&fin(3))).await.unwrap();
        }
        let mut seen = Seen::default();
        let mut dec = spdy::Decoder::default();
        let mut buf = BytesMut::new();
        loop {
            while let Some(f) = dec.decode(&mut buf).unwrap() {
                match f {
                    Frame::SynReply { stream, .. } => seen.replies.push(stream),
                    Frame::Data { stream, fin, data } => {
                        seen.bytes.entry(stream).or_default().extend(data);
                        if fin {
                            seen.closed.push(stream);
                        }
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            if rd.read_buf(&mut buf).await.unwrap() == 0 {
                break;
            }
        }
        server.await.unwrap();
        seen
    }

    fn run<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn clients_are_answered_with_the_first_protocol_served() {
        let kubectl = [
            "v5.channel.k8s.io",
            "v4.channel.k8s.io",
            "v3.channel.k8s.io",
            "v2.channel.k8s.io",
            "channel.k8s.io",
        ];
        assert_eq!(negotiate(&kubectl), Some((PROTOCOLS[0], Version::V4)));
        assert_eq!(negotiate(&kubectl[1..]), Some((PROTOCOLS[1], Version::V4)));
        assert_eq!(negotiate(&kubectl[2..]), Some((PROTOCOLS[2], Version::V3)));
        assert_eq!(negotiate(&kubectl[3..]), Some((PROTOCOLS[3], Version::V2)));
        assert_eq!(negotiate(&kubectl[4..]), None);
        assert_eq!(negotiate(&["portforward.k8s.io"]), None);
    }

    #[test]
    fn v4_reports_the_exit_code_in_a_status_after_the_output() {
        let seen = run(client(
            Version::V4,
            asked(&["sh", "-c", "echo out; echo err >&2; exit 3"], false),
            None,
        ));
        assert_eq!(seen.replies, [1, 5, 7], "each stream answered");
        assert_eq!(seen.text(5), "out\n");
        assert_eq!(seen.text(7), "err\n");
        let status: serde_json::Value = serde_json::from_str(&seen.text(1)).unwrap();
        assert_eq!(status["status"], "Failure");
        assert_eq!(status["reason"], "NonZeroExitCode");
        assert_eq!(status["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(status["details"]["causes"][0]["message"], "3");
        // Output closed before the error stream, which kubectl reads last.
        assert_eq!(seen.closed, [5, 7, 1]);
        let seen = run(client(Version::V4, asked(&["true"], false), None));
        assert_eq!(seen.text(1), r#"{"metadata":{},"status":"Success"}"#);
    }

    #[test]
    fn v2_and_v3_report_a_failure_as_text_and_success_as_nothing() {
        for version in [Version::V2, Version::V3] {
            let seen = run(client(version, asked(&["sh", "-c", "exit 5"], false), None));
            assert_eq!(
                seen.text(1),
                "command terminated with non-zero exit code: exit status 5"
            );
            assert_eq!(seen.closed, [5, 7, 1]);
            let seen = run(client(version, asked(&["true"], false), None));
            assert_eq!(seen.text(1), "");
            assert_eq!(seen.closed, [5, 7, 1]);
        }
    }

    #[test]
    fn stdin_reaches_the_command_and_its_fin_closes_it() {
        let input: Vec<u8> = (0..5000u32)
            .flat_map(|i| format!("{i}\n").into_bytes())
            .collect();
        let seen = run(client(Version::V4, asked(&["cat"], true), Some(&input)));
        assert_eq!(seen.text(5).as_bytes(), &input[..]);
        assert_eq!(seen.replies, [1, 3, 5, 7]);
        assert_eq!(seen.text(1), r#"{"metadata":{},"status":"Success"}"#);
    }

    #[test]
    fn a_command_that_cannot_start_is_reported_on_the_error_stream() {
        let seen = run(client(
            Version::V4,
            asked(&["/no/such/command"], false),
            None,
        ));
        let status: serde_json::Value = serde_json::from_str(&seen.text(1)).unwrap();
        assert!(status["message"]
            .as_str()
            .unwrap()
            .contains("/no/such/command"));
        assert_eq!(seen.closed, [5, 7, 1]);
        let seen = run(client(
            Version::V2,
            asked(&["/no/such/command"], false),
            None,
        ));
        assert!(seen.text(1).contains("/no/such/command"), "{seen:?}");
    }

    #[test]
    fn streams_are_complete_when_every_one_asked_for_is_open() {
        let mut tty = asked(&["sh"], true);
        tty.tty = true;
        let mut s = Streams::default();
        for (kind, id) in [("error", 1), ("stdin", 3), ("stdout", 5)] {
            assert!(!s.complete(Version::V4, &tty));
            assert!(s.note(kind, id));
        }
        assert!(s.complete(Version::V2, &tty), "v2 has no resize stream");
        assert!(!s.complete(Version::V3, &tty), "a terminal's resize stream");
        assert!(s.note("resize", 7));
        assert!(s.complete(Version::V4, &tty), "no stderr with a terminal");
        assert!(!s.note("other", 9));
    }
}
