//! The reverse proxy: HTTP/1.1 and h2 from clients (h2 by ALPN over TLS,
//! or by its preface in clear), HTTP/1.1 with keep-alive to the services.
//! HTTP/1.x clients are served by [`super::h1`]'s loop, h2 clients by
//! hyper's server and client here; both route, answer and log alike.
//!
//! Per request: the route table (loaded from an `arc-swap`, never a lock
//! the rebuild holds) gives the backend; one without a ready endpoint is
//! answered 503 at once; otherwise the request goes to the service's
//! cluster IP (podnet's fast path picks the pod) or, for a headless
//! service, to its ready endpoints in turn. Bodies stream both ways, never
//! buffered whole. `Upgrade` requests (WebSocket) are passed through: both
//! sides are upgraded, then bytes are copied both ways until either closes.
//!
//! Answers of its own: 404 (no rule for the host and path, and no default
//! backend), 503 (no such service or port, no ready endpoint), 502 (the
//! connection was refused or reset), 504 (no response head within the
//! upstream timeout, connecting included).
//!
//! Retries, as nginx's `proxy_next_upstream error`: a request that can be
//! sent again unchanged (an idempotent method, no body, no upgrade) whose
//! upstream connection fails before a response head is sent once more, on
//! a new connection (the cluster IP then picks a ready pod). A pooled
//! keep-alive connection to a pod that a rollout is stopping is closed or
//! reset under the proxy's feet; without the retry the client would get a
//! 502 for a pod that has already been replaced.
//!
//! Headers: hop-by-hop headers (RFC 9110 7.6.1, and those named by
//! `Connection`) are dropped both ways; `Host` is kept (an h2 client's
//! `:authority` becomes `Host`); `X-Forwarded-For` gets the client's
//! address appended; `X-Real-IP`, `X-Forwarded-Proto`, `X-Forwarded-Host`
//! and `X-Forwarded-Port` are set.
//!
//! One access log line per request (target `podnet::ingress::access`):
//! method, host, path, status, upstream, duration in ms until the
//! response head.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};
use hyper::body::Body as _;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::access_log;
use super::h1;
use super::routes::{Backend, Target};
use super::Shared;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body of every answer: a service's, streamed, or one of ours.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// How long a client has to send a request head, and a TLS client to
/// finish its handshake.
pub(super) const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long idle upstream connections are kept for reuse.
const POOL_IDLE: Duration = Duration::from_secs(60);
/// How many idle connections to one upstream address are kept.
const POOL_MAX_IDLE: usize = 256;

/// What every connection's requests share: one per ingress thread.
pub(crate) struct Context {
    pub shared: Arc<Shared>,
    pub(super) pool: Arc<UpstreamPool>,
    pub upstream_timeout: Duration,
    /// Turns over a headless service's endpoints.
    next: AtomicUsize,
}

impl Context {
    pub(crate) fn new(shared: Arc<Shared>, upstream_timeout: Duration) -> Self {
        Context {
            shared,
            pool: Arc::new(UpstreamPool::default()),
            upstream_timeout,
            next: AtomicUsize::new(0),
        }
    }

    /// Where a request for `host` and `path` goes.
    pub(super) fn pick(&self, host: &str, path: &str) -> Pick {
        let Some(b) = self.shared.routes.load().route(host, path).cloned() else {
            return Pick::NotFound;
        };
        let addr = match &b.target {
            Target::ClusterIp(a) => *a,
            Target::Endpoints(all) => all[self.next.fetch_add(1, Ordering::Relaxed) % all.len()],
            Target::Unavailable(why) => {
                tracing::debug!(backend = %b.name, "ingress: 503: {why}");
                return Pick::Unavailable(b);
            }
        };
        Pick::Upstream(b, addr)
    }

    /// Closes upstream connections idle longer than [`POOL_IDLE`], until
    /// `stop`.
    pub(crate) async fn reap_idle(&self, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(POOL_IDLE / 4);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.pool.reap(Instant::now()),
                _ = stop.changed() => return,
            }
        }
    }
}

/// Where a request goes.
pub(super) enum Pick {
    /// No rule for its host and path: 404.
    NotFound,
    /// A backend without a ready endpoint: 503.
    Unavailable(Arc<Backend>),
    /// This backend, at this address.
    Upstream(Arc<Backend>, SocketAddr),
}

/// Keep-alive HTTP/1.1 connections to services, by address: hyper's (for
/// h2 clients' requests) and [`h1`]'s. Each ingress thread has its own
/// (its connections live on its runtime), so the locks are never
/// contended; a connection goes back when its response body has been read
/// or dropped, and is taken newest first.
#[derive(Default)]
pub(super) struct UpstreamPool {
    senders: Idle<SendRequest<ProxyBody>>,
    streams: Idle<h1::UpstreamConn>,
}

/// A connection that can tell whether its service closed it.
trait Closable {
    fn is_closed(&self) -> bool;
}

impl Closable for SendRequest<ProxyBody> {
    fn is_closed(&self) -> bool {
        SendRequest::is_closed(self)
    }
}

impl Closable for h1::UpstreamConn {
    fn is_closed(&self) -> bool {
        h1::UpstreamConn::is_closed(self)
    }
}

/// Idle connections of one kind, by address, with when each went idle.
struct Idle<C> {
    by_addr: Mutex<HashMap<SocketAddr, Vec<(C, Instant)>>>,
}

impl<C> Default for Idle<C> {
    fn default() -> Self {
        Idle {
            by_addr: Mutex::new(HashMap::new()),
        }
    }
}

impl<C: Closable> Idle<C> {
    fn put(&self, addr: SocketAddr, conn: C) {
        if conn.is_closed() {
            return;
        }
        let mut idle = self.by_addr.lock();
        let conns = idle.entry(addr).or_default();
        if conns.len() < POOL_MAX_IDLE {
            conns.push((conn, Instant::now()));
        }
    }

    /// The newest idle connection to `addr` that is still open.
    fn take(&self, addr: SocketAddr) -> Option<C> {
        let mut idle = self.by_addr.lock();
        let conns = idle.get_mut(&addr)?;
        while let Some((c, since)) = conns.pop() {
            if !c.is_closed() && since.elapsed() < POOL_IDLE {
                return Some(c);
            }
        }
        None
    }

    fn reap(&self, now: Instant) {
        let mut idle = self.by_addr.lock();
        idle.retain(|_, conns| {
            conns.retain(|(c, since)| !c.is_closed() && now.duration_since(*since) < POOL_IDLE);
            !conns.is_empty()
        });
    }
}

/// Why a request could not be sent to a service.
#[derive(Debug)]
enum UpstreamError {
    Connect(std::io::Error),
    Http(hyper::Error),
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::Connect(e) => write!(f, "connect: {e}"),
            UpstreamError::Http(e) => match std::error::Error::source(e) {
                Some(s) => write!(f, "{e}: {s}"),
                None => write!(f, "{e}"),
            },
        }
    }
}

/// A response from a service, and the connection it came on until its
/// body is done.
struct Upstream {
    response: Response<Incoming>,
    lease: Lease,
}

/// A connection in use; back to its pool when dropped.
struct Lease {
    pool: Arc<UpstreamPool>,
    addr: SocketAddr,
    sender: Option<SendRequest<ProxyBody>>,
}

impl Lease {
    /// The connection, no longer to be pooled (an upgraded one).
    fn detach(mut self) -> Option<SendRequest<ProxyBody>> {
        self.sender.take()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(sender) = self.sender.take() {
            self.pool.put(self.addr, sender);
        }
    }
}

impl UpstreamPool {
    fn put(&self, addr: SocketAddr, sender: SendRequest<ProxyBody>) {
        self.senders.put(addr, sender);
    }

    fn take(&self, addr: SocketAddr) -> Option<SendRequest<ProxyBody>> {
        self.senders.take(addr)
    }

    /// An idle [`h1`] connection to `addr`.
    pub(super) fn take_h1(&self, addr: SocketAddr) -> Option<h1::UpstreamConn> {
        self.streams.take(addr)
    }

    /// Keeps an [`h1`] connection whose last response has been read whole.
    pub(super) fn put_h1(&self, addr: SocketAddr, conn: h1::UpstreamConn) {
        self.streams.put(addr, conn);
    }

    fn reap(&self, now: Instant) {
        self.senders.reap(now);
        self.streams.reap(now);
    }

    /// A new connection to `addr`, its driver spawned on this thread.
    async fn connect(addr: SocketAddr) -> Result<SendRequest<ProxyBody>, UpstreamError> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(UpstreamError::Connect)?;
        let _ = tcp.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(UpstreamError::Http)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!("ingress: upstream connection ended: {e}");
            }
        });
        Ok(sender)
    }

    /// Sends `req` to `addr` on an idle connection, or a new one if there
    /// is none (or `fresh`). A request that a pooled connection turned
    /// down unsent (it was closing) goes on the next one.
    async fn send(
        self: &Arc<Self>,
        addr: SocketAddr,
        mut req: Request<ProxyBody>,
        fresh: bool,
    ) -> Result<Upstream, UpstreamError> {
        loop {
            let pooled = if fresh { None } else { self.take(addr) };
            let reused = pooled.is_some();
            let mut sender = match pooled {
                Some(s) => s,
                None => Self::connect(addr).await?,
            };
            // A pooled connection may still be finishing its last response.
            if let Err(e) = sender.ready().await {
                if reused {
                    continue;
                }
                return Err(UpstreamError::Http(e));
            }
            match sender.try_send_request(req).await {
                Ok(response) => {
                    return Ok(Upstream {
                        response,
                        lease: Lease {
                            pool: self.clone(),
                            addr,
                            sender: Some(sender),
                        },
                    })
                }
                Err(mut e) => match e.take_message() {
                    Some(r) if reused => req = r,
                    _ => return Err(UpstreamError::Http(e.into_error())),
                },
            }
        }
    }
}

/// A service's response body; its connection goes back to the pool as
/// soon as the body ends (or is dropped).
struct PooledBody {
    body: Incoming,
    lease: Option<Lease>,
}

impl hyper::body::Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        match &frame {
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => this.lease = None,
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.lease = None,
            _ => {}
        }
        frame.map_err(|e| Box::new(e) as BoxError)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// An answer of the proxy's own, with a one-line text body.
fn answer(status: StatusCode, text: &str) -> Response<ProxyBody> {
    let mut r = Response::new(
        Full::new(Bytes::from(format!("{text}\n")))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Headers that concern one connection only (RFC 9110 7.6.1).
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Drops hop-by-hop headers, those `Connection` names included.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named.iter().chain(&HOP_BY_HOP) {
        headers.remove(n);
    }
}

/// The protocol an HTTP/1.1 request asks to switch to, if it does.
fn upgrade_of(req: &Request<Incoming>) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    let asks = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| req.headers().get(header::UPGRADE).cloned())
        .flatten()
}

/// The request's host as the client sent it (`Host`, else the h2 authority).
fn host_of(req: &Request<Incoming>) -> HeaderValue {
    match req.headers().get(header::HOST) {
        Some(h) if h.to_str().is_ok() => h.clone(),
        _ => req
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            .unwrap_or_else(|| HeaderValue::from_static("")),
    }
}

/// A client connection as the forwarded headers describe it, made once per
/// connection rather than per request.
pub(crate) struct Peer {
    pub(super) addr: SocketAddr,
    /// `X-Real-IP`, and `X-Forwarded-For` of a request that has none.
    pub(super) ip: HeaderValue,
    /// `X-Forwarded-Port`: the port the client connected to.
    pub(super) port: HeaderValue,
    /// `X-Forwarded-Proto`.
    pub(super) scheme: &'static str,
}

impl Peer {
    pub(super) fn new(addr: SocketAddr, local: SocketAddr, scheme: &'static str) -> Peer {
        Peer {
            addr,
            ip: HeaderValue::from_str(&addr.ip().to_string())
                .expect("an IP address is a header value"),
            port: HeaderValue::from(local.port()),
            scheme,
        }
    }
}

/// The access log's `upstream`: `-` (no rule), the backend's name (no
/// ready endpoint), or the name and the address the request went to.
#[derive(Clone, Copy)]
pub(super) struct UpstreamField<'a>(pub(super) Option<(&'a str, Option<SocketAddr>)>);

impl std::fmt::Display for UpstreamField<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            None => f.write_str("-"),
            Some((name, None)) => f.write_str(name),
            Some((name, Some(addr))) => write!(f, "{name} {addr}"),
        }
    }
}

/// Serves one request: route, forward, log.
pub(crate) async fn handle(
    ctx: Arc<Context>,
    req: Request<Incoming>,
    peer: Arc<Peer>,
) -> Response<ProxyBody> {
    let t0 = Instant::now();
    let method = req.method().clone();
    let host = host_of(&req);
    let host_str = host.to_str().unwrap_or("");
    let uri = req.uri().clone();
    let path = uri.path();
    let pick = ctx.pick(host_str, path);
    let (response, upstream) = match &pick {
        Pick::NotFound => (
            answer(
                StatusCode::NOT_FOUND,
                "404 Not Found: no Ingress rule for this host and path",
            ),
            UpstreamField(None),
        ),
        Pick::Unavailable(b) => (
            answer(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("503 Service Unavailable: {}", b.name),
            ),
            UpstreamField(Some((&b.name, None))),
        ),
        Pick::Upstream(b, addr) => {
            let r = forward(&ctx, req, *addr, &host, &peer).await;
            (r, UpstreamField(Some((&b.name, Some(*addr)))))
        }
    };
    access_log::record(&access_log::Access {
        method: method.as_str(),
        host: host_str,
        path,
        status: response.status().as_u16(),
        upstream,
        duration_ms: t0.elapsed().as_millis() as u64,
        client: peer.addr.ip(),
    });
    response
}

/// Sends the request to `addr` and returns the service's answer (or a
/// 502/504 of our own).
async fn forward(
    ctx: &Context,
    mut req: Request<Incoming>,
    addr: SocketAddr,
    host: &HeaderValue,
    peer: &Peer,
) -> Response<ProxyBody> {
    let upgrade = upgrade_of(&req);
    let client_side = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    parts.uri = match origin_form(&parts.uri) {
        Some(u) => u,
        None => return answer(StatusCode::BAD_REQUEST, "400 Bad Request: bad path"),
    };
    parts.version = Version::HTTP_11;
    let h = &mut parts.headers;
    strip_hop_by_hop(h);
    if let Some(proto) = &upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, proto.clone());
    }
    h.insert(header::HOST, host.clone());
    h.insert(X_FORWARDED_HOST, host.clone());
    let xff = match h.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(before) if !before.trim().is_empty() => {
            HeaderValue::from_str(&format!("{before}, {}", peer.addr.ip())).ok()
        }
        _ => Some(peer.ip.clone()),
    };
    if let Some(v) = xff {
        h.insert(X_FORWARDED_FOR, v);
    }
    h.insert(X_REAL_IP, peer.ip.clone());
    h.insert(X_FORWARDED_PROTO, HeaderValue::from_static(peer.scheme));
    h.insert(X_FORWARDED_PORT, peer.port.clone());

    // A copy to send again if the connection fails (see the module doc).
    let again =
        (upgrade.is_none() && is_idempotent(&parts.method) && body.is_end_stream()).then(|| {
            let mut r = Request::new(Empty::new().map_err(|never| match never {}).boxed());
            *r.method_mut() = parts.method.clone();
            *r.uri_mut() = parts.uri.clone();
            *r.version_mut() = parts.version;
            *r.headers_mut() = parts.headers.clone();
            r
        });
    let body: ProxyBody = body.map_err(|e| Box::new(e) as BoxError).boxed();
    let t0 = Instant::now();
    let mut sent = tokio::time::timeout(
        ctx.upstream_timeout,
        ctx.pool.send(addr, Request::from_parts(parts, body), false),
    )
    .await;
    if let (Ok(Err(e)), Some(again)) = (&sent, again) {
        tracing::debug!(%addr, "ingress: upstream failed ({e}); sending the request again on a new connection");
        let left = ctx.upstream_timeout.saturating_sub(t0.elapsed());
        sent = tokio::time::timeout(left, ctx.pool.send(addr, again, true)).await;
    }
    let Upstream {
        response: mut resp,
        lease,
    } = match sent {
        Err(_) => {
            return answer(
                StatusCode::GATEWAY_TIMEOUT,
                &format!(
                    "504 Gateway Timeout: no answer from the service within {} s",
                    ctx.upstream_timeout.as_secs()
                ),
            )
        }
        Ok(Err(e)) => {
            tracing::debug!(%addr, "ingress: upstream failed: {e}");
            return answer(
                StatusCode::BAD_GATEWAY,
                "502 Bad Gateway: the service refused or dropped the connection",
            );
        }
        Ok(Ok(r)) => r,
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_side) = client_side else {
            return answer(
                StatusCode::BAD_GATEWAY,
                "502 Bad Gateway: the service switched protocols unasked",
            );
        };
        let service_side = hyper::upgrade::on(&mut resp);
        // The connection is the upgraded stream's now, never pooled again.
        let conn = lease.detach();
        tokio::spawn(async move {
            let upgraded = tokio::try_join!(client_side, service_side);
            drop(conn);
            match upgraded {
                Ok((c, s)) => {
                    let (mut c, mut s) = (TokioIo::new(c), TokioIo::new(s));
                    let _ = tokio::io::copy_bidirectional(&mut c, &mut s).await;
                }
                Err(e) => tracing::debug!("ingress: upgrade failed: {e}"),
            }
        });
        let (mut parts, _) = resp.into_parts();
        let proto = parts.headers.get(header::UPGRADE).cloned();
        strip_hop_by_hop(&mut parts.headers);
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let Some(p) = proto {
            parts.headers.insert(header::UPGRADE, p);
        }
        return Response::from_parts(parts, Empty::new().map_err(|never| match never {}).boxed());
    }
    strip_hop_by_hop(resp.headers_mut());
    resp.map(|body| {
        PooledBody {
            body,
            lease: Some(lease),
        }
        .boxed()
    })
}

/// The request target as sent to a service: the path and query only.
fn origin_form(uri: &Uri) -> Option<Uri> {
    match uri.path_and_query() {
        Some(pq) if pq.as_str().starts_with('/') => {
            let mut parts = hyper::http::uri::Parts::default();
            parts.path_and_query = Some(pq.clone());
            Uri::from_parts(parts).ok()
        }
        Some(_) => None,
        None => Some(Uri::from_static("/")),
    }
}

/// Whether a request with this method may be sent twice (RFC 9110 9.2.2).
fn is_idempotent(method: &hyper::Method) -> bool {
    use hyper::Method;
    [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::PUT,
        Method::DELETE,
        Method::TRACE,
    ]
    .contains(method)
}

/// Accepts connections on `listener` until `stop`, serving each on its own
/// task: HTTP/1.x with [`h1::serve`], h2 (by ALPN, or by its preface in
/// clear) with hyper and [`handle`]; `tls` makes it the HTTPS listener.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    ctx: Arc<Context>,
    mut stop: watch::Receiver<bool>,
) {
    let local = listener
        .local_addr()
        .unwrap_or_else(|_| ([0, 0, 0, 0], 0).into());
    let scheme = if tls.is_some() { "https" } else { "http" };
    loop {
        let (tcp, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(%local, "ingress: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let _ = tcp.set_nodelay(true);
        let client = Arc::new(Peer::new(peer, local, scheme));
        let ctx = ctx.clone();
        let tls = tls.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = serve_connection(ctx, client, tcp, tls) => {}
                _ = stop.changed() => {}
            }
        });
    }
}

/// Serves one client connection to its end.
async fn serve_connection(
    ctx: Arc<Context>,
    client: Arc<Peer>,
    tcp: TcpStream,
    tls: Option<TlsAcceptor>,
) {
    let peer = client.addr;
    let ended = match tls {
        None => serve_h1_or_h2(ctx, client, tcp).await,
        Some(acceptor) => {
            let stream = match tokio::time::timeout(HEAD_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, "ingress: TLS handshake failed: {e}");
                    return;
                }
                Err(_) => return,
            };
            if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                serve_h2(ctx, client, stream).await
            } else {
                serve_h1_or_h2(ctx, client, stream).await
            }
        }
    };
    if let Err(e) = ended {
        tracing::debug!(%peer, "ingress: connection ended: {e}");
    }
}

/// Serves a connection with [`h1::serve`], or with hyper's h2 if its first
/// bytes are h2's preface (read again first).
async fn serve_h1_or_h2<I>(ctx: Arc<Context>, client: Arc<Peer>, mut io: I) -> Result<(), BoxError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    match h1::serve(&ctx, &client, &mut io).await {
        Ok(()) => Ok(()),
        Err(h1::End::Client(e)) => Err(e.into()),
        Err(h1::End::H2(prefix)) => serve_h2(ctx, client, Prefixed { prefix, inner: io }).await,
    }
}

/// Serves an h2 connection with hyper, each request with [`handle`].
async fn serve_h2<I>(ctx: Arc<Context>, client: Arc<Peer>, io: I) -> Result<(), BoxError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let (ctx, client) = (ctx.clone(), client.clone());
        async move { Ok::<_, std::convert::Infallible>(handle(ctx, req, client).await) }
    });
    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30))
        .serve_connection(TokioIo::new(io), service)
        .await
        .map_err(Into::into)
}

/// A stream whose first bytes were already read: they are read again
/// first (an h2 client's preface, read while looking for an HTTP/1.x head).
struct Prefixed<S> {
    prefix: bytes::BytesMut,
    inner: S,
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
