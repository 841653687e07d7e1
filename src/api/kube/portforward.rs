//! `pods/NAME/portforward` (`kubectl port-forward pod/NAME` and
//! `svc/NAME`, which kubectl turns into a pod and its target port): TCP
//! connections from the client to ports inside a pod's network namespace.
//!
//! The client speaks SPDY/3.1 ([`super::spdy`]) inside a WebSocket with
//! subprotocol `SPDY/3.1+portforward.k8s.io` (kubectl 1.31 and later), or,
//! when that upgrade is refused, over the connection upgraded to
//! `SPDY/3.1` with `X-Stream-Protocol-Version: portforward.k8s.io`. Both
//! are served, by one session over a byte stream.
//!
//! Client libraries (the Python `kubernetes` package) use the kubelet's
//! older WebSocket protocol instead, `v4.channel.k8s.io`, with the ports
//! in the query (`?ports=8080,9090`): one connection per port, port `i`
//! on channels `2i` (data) and `2i+1` (error), each opened by a frame
//! carrying its port number (two bytes, little endian), every message
//! prefixed with its channel byte. The WebSocket closes once every port's
//! connection has ended.
//!
//! For each local connection the client opens two streams with the headers
//! `streamtype` (`error`, then `data`), `port` and `requestID`, and waits
//! for each one's SYN_REPLY. Once both streams of a request are open, the
//! server connects to the port on the pod's loopback address from inside
//! its network namespace (as a kubelet's runtime does) and copies bytes
//! both ways; a failure is written on the error stream, which kubectl
//! prints. Half-closes (FIN) pass through; a reset stream stops its copy.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::exec::{
    header_text, require_runner, require_running, stream_pod, switching_protocols, PodExec,
};
use super::spdy::{self, Frame, FrameReader};
use super::{failure, Body};
use crate::control::objects::Objects;

/// The WebSocket subprotocol kubectl tunnels SPDY in.
pub const WEBSOCKET_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
/// The stream protocol of a plain SPDY upgrade.
pub const STREAM_PROTOCOL: &str = "portforward.k8s.io";
/// The kubelet's WebSocket channel protocol, as client libraries use it.
pub const CHANNEL_PROTOCOL: &str = "v4.channel.k8s.io";
/// Bytes read from a pod's connection per DATA frame at most.
const CHUNK: usize = 32 * 1024;
/// Frames queued for the client before senders wait.
const OUT_QUEUE: usize = 64;
/// Client data queued for one pod connection before the session waits.
const IN_QUEUE: usize = 16;

/// How the client asked to upgrade.
enum Upgrade {
    WebSocket { key: String },
    Spdy,
    Channels { key: String, ports: Vec<u16> },
}

/// The `ports` of a query (`ports=8080,9090`, or the parameter repeated).
fn query_ports(query: Option<&str>) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for pair in query.unwrap_or("").split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if super::percent_decode(k) != "ports" {
            continue;
        }
        for p in super::percent_decode(v).split(',') {
            match p.trim().parse::<u16>() {
                Ok(n) if n > 0 => ports.push(n),
                _ => {
                    return Err(format!(
                        "invalid port {p:?}: a port is a number from 1 to 65535"
                    ))
                }
            }
        }
    }
    if ports.is_empty() {
        return Err("query parameter \"ports\" is required".into());
    }
    Ok(ports)
}

/// Answers a port-forward request: checks it, upgrades the connection and
/// serves the session once upgraded.
pub fn serve(
    objects: &Objects,
    runner: Option<&Arc<dyn PodExec>>,
    ns: &str,
    name: &str,
    mut req: Request<hyper::body::Incoming>,
) -> Response<Body> {
    let header = |h: &str| header_text(&req, h);
    let offers = |h: &str, want: &str| header(h).split(',').any(|p| p.trim() == want);
    let upgrade_to = header("upgrade");
    let how = if upgrade_to.eq_ignore_ascii_case("websocket")
        && offers("sec-websocket-protocol", WEBSOCKET_PROTOCOL)
        && !header("sec-websocket-key").is_empty()
    {
        Upgrade::WebSocket {
            key: header("sec-websocket-key"),
        }
    } else if upgrade_to.eq_ignore_ascii_case("SPDY/3.1")
        && offers("x-stream-protocol-version", STREAM_PROTOCOL)
    {
        Upgrade::Spdy
    } else if upgrade_to.eq_ignore_ascii_case("websocket")
        && offers("sec-websocket-protocol", CHANNEL_PROTOCOL)
        && !header("sec-websocket-key").is_empty()
    {
        match query_ports(req.uri().query()) {
            Ok(ports) => Upgrade::Channels {
                key: header("sec-websocket-key"),
                ports,
            },
            Err(message) => return failure(400, "BadRequest", &message),
        }
    } else {
        return failure(
            400,
            "BadRequest",
            &format!(
                "port-forward needs an upgrade to a WebSocket with subprotocol {WEBSOCKET_PROTOCOL} or {CHANNEL_PROTOCOL}, or to SPDY/3.1 with X-Stream-Protocol-Version {STREAM_PROTOCOL}"
            ),
        );
    };
    let (pod, runner) = match stream_pod(objects, ns, name).and_then(|pod| {
        require_running(&pod, "its ports can only be forwarded while it runs")?;
        Ok((pod, require_runner(runner, "port-forward")?))
    }) {
        Ok(x) => x,
        Err(r) => return r.into(),
    };
    let upgrade = hyper::upgrade::on(&mut req);
    let response = Response::builder();
    let (response, channels) = match how {
        Upgrade::WebSocket { key } => (
            response
                .header("upgrade", "websocket")
                .header("sec-websocket-accept", derive_accept_key(key.as_bytes()))
                .header("sec-websocket-protocol", WEBSOCKET_PROTOCOL),
            None,
        ),
        Upgrade::Spdy => (
            response
                .header("upgrade", "SPDY/3.1")
                .header("x-stream-protocol-version", STREAM_PROTOCOL),
            None,
        ),
        Upgrade::Channels { key, ports } => (
            response
                .header("upgrade", "websocket")
                .header("sec-websocket-accept", derive_accept_key(key.as_bytes()))
                .header("sec-websocket-protocol", CHANNEL_PROTOCOL),
            Some(ports),
        ),
    };
    let websocket = response
        .headers_ref()
        .is_some_and(|h| h.contains_key("sec-websocket-accept"));
    tracing::debug!(pod = name, websocket, "port-forward: upgrading");
    tokio::spawn(async move {
        let upgraded = match upgrade.await {
            Ok(u) => TokioIo::new(u),
            Err(e) => {
                tracing::debug!(error = %e, "port-forward: the upgrade did not complete");
                return;
            }
        };
        if !websocket {
            return session(upgraded, runner, pod).await;
        }
        let ws = WebSocketStream::from_raw_socket(upgraded, Role::Server, None).await;
        if let Some(ports) = channels {
            return channel_session(ws, runner, Arc::new(pod), ports).await;
        }
        let (ours, theirs) = tokio::io::duplex(256 * 1024);
        let bridge = tokio::spawn(bridge(ws, theirs));
        session(ours, runner, pod).await;
        let _ = bridge.await;
    });
    switching_protocols(response)
}

/// One `v4.channel.k8s.io` session: a connection to each of `ports` in the
/// pod, port `i` on channels `2i` (data) and `2i+1` (error).
async fn channel_session<S>(
    ws: WebSocketStream<S>,
    runner: Arc<dyn PodExec>,
    pod: Arc<Pod>,
    ports: Vec<u16>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut source) = ws.split();
    let (out, mut out_rx) = mpsc::channel::<Vec<u8>>(OUT_QUEUE);
    let writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            if sink.send(Message::Binary(m.into())).await.is_err() {
                return;
            }
        }
        let _ = sink.close().await;
    });
    let mut to_pod = Vec::new();
    let mut copies = Vec::new();
    for (i, &port) in ports.iter().enumerate() {
        let data = (2 * i) as u8;
        // Each channel opens with its port number.
        for channel in [data, data + 1] {
            let mut first = vec![channel];
            first.extend_from_slice(&port.to_le_bytes());
            let _ = out.send(first).await;
        }
        let (tx, rx) = mpsc::channel::<Option<Bytes>>(IN_QUEUE);
        to_pod.push(tx);
        copies.push(tokio::spawn(forward_channel(
            runner.clone(),
            pod.clone(),
            port,
            data,
            rx,
            out.clone(),
        )));
    }
    drop(out);
    // Client data until it closes or every connection has ended (the
    // writer then closes the WebSocket).
    let all_done = async {
        for c in &mut copies {
            let _ = c.await;
        }
    };
    let from_client = async {
        while let Some(Ok(m)) = source.next().await {
            let bytes = match m {
                Message::Binary(b) => b,
                Message::Close(_) => break,
                _ => continue,
            };
            let Some((&channel, payload)) = bytes.split_first() else {
                continue;
            };
            // Odd channels (errors) are the server's to write.
            let Some(tx) = to_pod
                .get((channel / 2) as usize)
                .filter(|_| channel % 2 == 0)
            else {
                continue;
            };
            if !payload.is_empty() {
                let _ = tx.send(Some(bytes.slice(1..))).await;
            }
        }
    };
    tokio::select! {
        _ = all_done => {}
        _ = from_client => {}
    }
    drop(to_pod);
    for c in &copies {
        c.abort();
    }
    let _ = writer.await;
}

/// Connects to `port` in the pod and copies bytes both ways between it and
/// channel `data`; a failure is written on channel `data + 1`.
async fn forward_channel(
    runner: Arc<dyn PodExec>,
    pod: Arc<Pod>,
    port: u16,
    data: u8,
    from_client: mpsc::Receiver<Option<Bytes>>,
    out: mpsc::Sender<Vec<u8>>,
) {
    let conn = match connect(runner, pod, port).await {
        Ok(c) => c,
        Err(message) => {
            let mut m = vec![data + 1];
            m.extend_from_slice(message.as_bytes());
            let _ = out.send(m).await;
            return;
        }
    };
    let (pod_rd, pod_wr) = conn.into_split();
    let downstream = pod_to_client(pod_rd, &out, |bytes| {
        let mut m = Vec::with_capacity(bytes.len() + 1);
        m.push(data);
        m.extend_from_slice(bytes);
        m
    });
    // The pod closing its side ends the connection: the protocol has no
    // half-close to tell the client.
    tokio::select! {
        _ = downstream => {}
        _ = client_to_pod(from_client, pod_wr) => {}
    }
}

/// A connection to `port` on the pod's loopback address, from inside its
/// network namespace, or the error message for the client.
async fn connect(
    runner: Arc<dyn PodExec>,
    pod: Arc<Pod>,
    port: u16,
) -> Result<tokio::net::TcpStream, String> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    tokio::task::spawn_blocking(move || runner.connect(&pod, port))
        .await
        .unwrap_or_else(|e| Err(e.to_string()))
        .and_then(|s| {
            s.set_nonblocking(true).map_err(|e| e.to_string())?;
            tokio::net::TcpStream::from_std(s).map_err(|e| e.to_string())
        })
        .map_err(|e| format!("error forwarding port {port} to pod {name}: {e}"))
}

/// Carries the bytes of binary WebSocket messages to and from `pipe`, so
/// that the session reads one byte stream whichever way it came.
async fn bridge<S>(ws: WebSocketStream<S>, pipe: tokio::io::DuplexStream)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut source) = ws.split();
    let (mut from_session, mut to_session) = tokio::io::split(pipe);
    let inbound = async move {
        while let Some(Ok(m)) = source.next().await {
            match m {
                Message::Binary(b) if to_session.write_all(&b).await.is_err() => break,
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = to_session.shutdown().await;
    };
    let outbound = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from_session.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sink
                        .send(Message::Binary(buf[..n].to_vec().into()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        let _ = sink.close().await;
    };
    tokio::join!(inbound, outbound);
}

/// The streams of one forwarded connection, while they are being opened.
#[derive(Default)]
struct Opening {
    error: Option<u32>,
    data: Option<(u32, mpsc::Receiver<Option<Bytes>>)>,
    port: Option<String>,
}

/// One SPDY session: streams opened by the client, each pair of them a
/// connection to the pod.
async fn session<T>(io: T, runner: Arc<dyn PodExec>, pod: Pod)
where
    T: AsyncRead + AsyncWrite + Send + 'static,
{
    let (rd, wr) = tokio::io::split(io);
    let (out, writer) = spdy::spawn_writer(wr, OUT_QUEUE);
    let pod = Arc::new(pod);
    let mut frames = FrameReader::new(rd);
    let mut opening: HashMap<String, Opening> = HashMap::new();
    let mut to_pod: HashMap<u32, mpsc::Sender<Option<Bytes>>> = HashMap::new();
    let mut copies: HashMap<u32, JoinHandle<()>> = HashMap::new();
    loop {
        let frame = match frames.next().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(error = %e, "port-forward: ending the session");
                let _ = out.send(Frame::GoAway { last_stream: 0 }).await;
                break;
            }
        };
        match frame {
            Frame::SynStream {
                stream, headers, ..
            } => {
                if out
                    .send(Frame::SynReply {
                        stream,
                        headers: Vec::new(),
                    })
                    .await
                    .is_err()
                {
                    break;
                }
                let id = spdy::header(&headers, "requestid")
                    .unwrap_or("")
                    .to_string();
                let r = opening.entry(id.clone()).or_default();
                r.port = spdy::header(&headers, "port").map(str::to_string);
                match spdy::header(&headers, "streamtype") {
                    Some("error") => r.error = Some(stream),
                    Some("data") => {
                        let (tx, rx) = mpsc::channel(IN_QUEUE);
                        to_pod.insert(stream, tx);
                        r.data = Some((stream, rx));
                    }
                    _ => {
                        let _ = out
                            .send(Frame::RstStream {
                                stream,
                                status: spdy::PROTOCOL_ERROR,
                            })
                            .await;
                    }
                }
                if let Some(Opening {
                    error: Some(error),
                    data: Some((data, rx)),
                    port,
                }) = (r.error.is_some() && r.data.is_some())
                    .then(|| opening.remove(&id))
                    .flatten()
                {
                    let copy = tokio::spawn(forward(
                        runner.clone(),
                        pod.clone(),
                        port.unwrap_or_default(),
                        (error, data),
                        rx,
                        out.clone(),
                    ));
                    copies.insert(data, copy);
                }
            }
            Frame::Data { stream, fin, data } => {
                if let Some(tx) = to_pod.get(&stream).cloned() {
                    let gone = !data.is_empty() && tx.send(Some(data.into())).await.is_err();
                    if fin && !gone {
                        let _ = tx.send(None).await;
                    }
                    if fin || gone {
                        to_pod.remove(&stream);
                    }
                }
            }
            Frame::RstStream { stream, .. } => {
                to_pod.remove(&stream);
                if let Some(c) = copies.remove(&stream) {
                    c.abort();
                }
            }
            Frame::Ping { id } => {
                let _ = out.send(Frame::Ping { id }).await;
            }
            Frame::GoAway { .. } => break,
            Frame::SynReply { .. } | Frame::Ignored(_) => {}
        }
        copies.retain(|_, c| !c.is_finished());
    }
    for (_, c) in copies {
        c.abort();
    }
    drop(out);
    let _ = writer.await;
}

/// Connects to `port` in the pod and copies bytes both ways between the
/// connection and the data stream; failures go to the error stream. Both
/// streams are closed (FIN) at the end.
async fn forward(
    runner: Arc<dyn PodExec>,
    pod: Arc<Pod>,
    port: String,
    (error, data): (u32, u32),
    from_client: mpsc::Receiver<Option<Bytes>>,
    out: mpsc::Sender<Frame>,
) {
    let fin = |stream| Frame::Data {
        stream,
        fin: true,
        data: Vec::new(),
    };
    let connected = match port.parse::<u16>() {
        Ok(p) if p > 0 => connect(runner, pod, p).await,
        _ => Err(format!(
            "invalid port {port:?}: a port is a number from 1 to 65535"
        )),
    };
    let conn = match connected {
        Ok(c) => c,
        Err(message) => {
            let _ = out
                .send(Frame::Data {
                    stream: error,
                    fin: false,
                    data: message.into_bytes(),
                })
                .await;
            let _ = out.send(fin(error)).await;
            let _ = out.send(fin(data)).await;
            return;
        }
    };
    let (pod_rd, pod_wr) = conn.into_split();
    let downstream = async {
        let frame = |bytes: &[u8]| Frame::Data {
            stream: data,
            fin: false,
            data: bytes.to_vec(),
        };
        if pod_to_client(pod_rd, &out, frame).await {
            let _ = out.send(fin(data)).await;
        }
    };
    tokio::join!(client_to_pod(from_client, pod_wr), downstream);
    let _ = out.send(fin(error)).await;
}

/// Client bytes to the pod until the client's side ends (`None`, or the
/// sender gone); then the pod's side is shut (FIN).
async fn client_to_pod(
    mut from_client: mpsc::Receiver<Option<Bytes>>,
    mut pod: tokio::net::tcp::OwnedWriteHalf,
) {
    while let Some(Some(bytes)) = from_client.recv().await {
        if pod.write_all(&bytes).await.is_err() {
            break;
        }
    }
    let _ = pod.shutdown().await;
}

/// The pod's bytes to the client, `frame`d in pieces of at most [`CHUNK`]
/// bytes, until the pod's side ends (true) or the client is gone (false).
async fn pod_to_client<T>(
    mut pod: tokio::net::tcp::OwnedReadHalf,
    out: &mpsc::Sender<T>,
    frame: impl Fn(&[u8]) -> T,
) -> bool {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match pod.read(&mut buf).await {
            Ok(0) | Err(_) => return true,
            Ok(n) => {
                if out.send(frame(&buf[..n])).await.is_err() {
                    return false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::query_ports;

    #[test]
    fn ports_come_from_the_query_listed_or_repeated() {
        assert_eq!(query_ports(Some("ports=8080,9090")), Ok(vec![8080, 9090]));
        assert_eq!(query_ports(Some("ports=80&ports=443")), Ok(vec![80, 443]));
        assert_eq!(query_ports(Some("ports=80%2C81")), Ok(vec![80, 81]));
        for bad in ["ports=0", "ports=65536", "ports=http", "ports=", "x=1"] {
            assert!(query_ports(Some(bad)).is_err(), "{bad}");
        }
        assert!(query_ports(None).is_err());
    }
}
