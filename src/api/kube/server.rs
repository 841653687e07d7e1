//! The HTTPS listener: TLS (rustls, client certificates from the node's CA
//! optional at the handshake), HTTP/1.1 and HTTP/2 (hyper), and the limits
//! that keep one client from starving the others.
//!
//! A request without a verified client certificate gets a 401 `Status`, as
//! kube-apiserver answers anonymous requests; `/healthz`, `/livez` and
//! `/readyz` are open, as there.
//!
//! Limits: a TLS handshake must finish within [`HANDSHAKE_TIMEOUT`], a
//! request head within [`HEADER_TIMEOUT`]; at most [`MAX_CONNECTIONS`]
//! connections are open, [`MAX_PER_CLIENT`] of them from one address. At a
//! limit, a new connection takes the place of the oldest idle one (no
//! request in progress: still in its handshake, its request head, or
//! between keep-alive requests), which is closed; only when every
//! connection is busy is the new one refused. So idle connections, however
//! many and however often reopened, never keep a client out.
//!
//! Stopping is graceful: no new connection is accepted, every open one
//! finishes the requests it has begun (for up to [`SHUTDOWN_GRACE`]) and
//! then closes (HTTP/2 `GOAWAY`, HTTP/1.1 `Connection: close`), and watch
//! streams end at once, as at their timeout, so their clients watch again
//! (from the last revision they saw) once the server is back. A connection
//! that has sent no request yet gets [`FIRST_REQUEST_GRACE`] for one to
//! arrive: its client may have sent it already.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::{failure, Body, KubeApi};
use crate::api::pki::client_identity;

/// Time for a client to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for a client to send a request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections open at once.
pub const MAX_CONNECTIONS: usize = 4096;
/// Connections open at once from one address.
pub const MAX_PER_CLIENT: usize = 256;
/// Time open requests get to finish once the server stops.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Time a connection that has sent no request yet gets, once the server
/// stops, for its first request to arrive (it may be on its way), as Go's
/// server allows new connections.
pub const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(2);

/// One open connection, as the limits see it.
struct Open {
    client: IpAddr,
    /// Requests begun and not yet answered in full.
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
    /// Told to close when a new connection takes its place.
    evict: Arc<tokio::sync::Notify>,
    evicting: bool,
}

/// Open connections, per client address, oldest first.
#[derive(Default)]
struct Connections {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
    open: std::collections::BTreeMap<u64, Open>,
    next: u64,
}

impl Connections {
    /// Tells the oldest idle connection (of `client`, or of anyone) to
    /// close; false if every one is busy.
    fn evict_idle(&mut self, client: Option<IpAddr>) -> bool {
        let victim = self.open.values_mut().find(|o| {
            !o.evicting
                && client.is_none_or(|c| c == o.client)
                && o.in_flight.load(std::sync::atomic::Ordering::SeqCst) == 0
        });
        match victim {
            Some(o) => {
                o.evicting = true;
                o.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

struct Slot {
    table: Arc<Mutex<Connections>>,
    client: IpAddr,
    id: u64,
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
    evict: Arc<tokio::sync::Notify>,
}

impl Slot {
    fn take(table: &Arc<Mutex<Connections>>, client: IpAddr) -> Option<Slot> {
        let mut t = table.lock();
        let mine = t.per_client.get(&client).copied().unwrap_or(0);
        if mine >= MAX_PER_CLIENT && !t.evict_idle(Some(client)) {
            return None;
        }
        if t.total >= MAX_CONNECTIONS && !t.evict_idle(None) {
            return None;
        }
        t.total += 1;
        *t.per_client.entry(client).or_default() += 1;
        let id = t.next;
        t.next += 1;
        let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let evict = Arc::new(tokio::sync::Notify::new());
        t.open.insert(
            id,
            Open {
                client,
                in_flight: in_flight.clone(),
                evict: evict.clone(),
                evicting: false,
            },
        );
        Some(Slot {
            table: table.clone(),
            client,
            id,
            in_flight,
            evict,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut t = self.table.lock();
        t.total -= 1;
        t.open.remove(&self.id);
        if let Some(n) = t.per_client.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                t.per_client.remove(&self.client);
            }
        }
    }
}

/// Counts a request as in progress until its answer is sent in full.
struct Busy(Arc<std::sync::atomic::AtomicUsize>);

impl Busy {
    fn begin(count: &Arc<std::sync::atomic::AtomicUsize>) -> Busy {
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Busy(count.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

fn open_path(path: &str) -> bool {
    matches!(path, "/healthz" | "/livez" | "/readyz" | "/version")
}

/// Returns once the server is stopping (or its handle is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// An answer body that ends early when the server stops, if it is still
/// waiting for data then (a watch stream); a body with its data at hand is
/// sent whole.
struct UntilShutdown {
    inner: Body,
    stopped: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// The request counts as in progress while its answer is being sent.
    _busy: Option<Busy>,
}

impl UntilShutdown {
    fn new(inner: Body, mut shutdown: watch::Receiver<bool>, busy: Option<Busy>) -> Self {
        let stopped = Box::pin(async move { stopped(&mut shutdown).await });
        Self {
            inner,
            stopped,
            _busy: busy,
        }
    }
}

impl hyper::body::Body for UntilShutdown {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => this.stopped.as_mut().poll(cx).map(|()| None),
            ready => ready,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Serves the API on `listener` until `shutdown` turns true, then lets
/// open requests finish (see the module docs).
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    api: KubeApi,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let connections = Arc::new(Mutex::new(Connections::default()));
    let mut open = tokio::task::JoinSet::new();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "API: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            // Reap finished connections as they end.
            Some(_) = open.join_next(), if !open.is_empty() => continue,
            () = stopped(&mut shutdown) => break,
        };
        let Some(slot) = Slot::take(&connections, peer.ip()) else {
            tracing::debug!(%peer, "API: connection limit reached, closing");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let api = api.clone();
        let mut shutdown = shutdown.clone();
        open.spawn(async move {
            let in_flight = slot.in_flight.clone();
            let evict = slot.evict.clone();
            let _slot = slot;
            let handshake = tokio::select! {
                r = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)) => r,
                // A new connection took this one's place before it spoke.
                () = evict.notified() => return,
            };
            let tls = match handshake {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "API: TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let identity = client_identity(tls.get_ref().1.peer_certificates());
            let stopping = shutdown.clone();
            // Holds a permit once the connection has begun a request.
            let begun = Arc::new(tokio::sync::Notify::new());
            let begins = begun.clone();
            let service = service_fn(move |req| {
                let api = api.clone();
                let identity = identity.clone();
                let stopping = stopping.clone();
                begins.notify_one();
                let busy = Busy::begin(&in_flight);
                async move {
                    let answer = if identity.is_none() && !open_path(req.uri().path()) {
                        failure(401, "Unauthorized", "Unauthorized")
                    } else {
                        api.handle(req).await
                    };
                    Ok::<_, std::convert::Infallible>(
                        answer.map(|body| UntilShutdown::new(body, stopping, Some(busy))),
                    )
                }
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            builder
                .http2()
                .timer(TokioTimer::new())
                .keep_alive_interval(Duration::from_secs(30));
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
            tokio::pin!(conn);
            let ended = tokio::select! {
                // The connection first, so a request whose head has arrived
                // is begun (and then finished) even when the stop came first.
                biased;
                r = conn.as_mut() => r,
                () = evict.notified() => {
                    // A new connection took this idle one's place.
                    conn.as_mut().graceful_shutdown();
                    conn.as_mut().await
                }
                () = stopped(&mut shutdown) => {
                    let ended = tokio::select! {
                        biased;
                        r = conn.as_mut() => Some(r),
                        () = begun.notified() => None,
                        () = tokio::time::sleep(FIRST_REQUEST_GRACE) => None,
                    };
                    match ended {
                        Some(r) => r,
                        None => {
                            // Finish what was begun, then close.
                            conn.as_mut().graceful_shutdown();
                            conn.as_mut().await
                        }
                    }
                }
            };
            if let Err(e) = ended {
                tracing::debug!(%peer, error = %e, "API: connection ended with an error");
            }
        });
    }
    drop(listener);
    let finished = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while open.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        tracing::warn!(
            connections = open.len(),
            "API: requests still open after the shutdown grace period; closing them"
        );
    }
}

/// A running API server on its own runtime thread.
pub struct Running {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Why the API server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listen address could not be bound.
    #[error(
        "cannot listen on {addr} for the Kubernetes API: {source}; choose another --api-listen"
    )]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS configuration could not be built.
    #[error(transparent)]
    Pki(#[from] crate::api::pki::PkiError),
    /// The runtime could not be started.
    #[error("cannot start the API runtime: {0}")]
    Runtime(std::io::Error),
    /// The Unix socket could not be made.
    #[error("cannot listen on the API socket {path}: {source}; choose another --socket")]
    Socket {
        /// The socket path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

impl Running {
    /// Binds `listen` and serves `api` with `tls` on a runtime of two
    /// threads, until [`Running::stop`] or drop.
    pub fn start(
        listen: std::net::SocketAddr,
        tls: Arc<rustls::ServerConfig>,
        api: KubeApi,
    ) -> Result<Running, StartError> {
        Self::start_with_socket(listen, tls, api, None)
    }

    /// [`Running::start`], also serving the API without TLS on the Unix
    /// socket `socket` (mode 0600; only root's connections are served).
    pub fn start_with_socket(
        listen: std::net::SocketAddr,
        tls: Arc<rustls::ServerConfig>,
        api: KubeApi,
        socket: Option<&std::path::Path>,
    ) -> Result<Running, StartError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("podnet-api")
            .enable_all()
            .build()
            .map_err(StartError::Runtime)?;
        let listener = runtime
            .block_on(async { TcpListener::bind(listen).await })
            .map_err(|source| StartError::Bind {
                addr: listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: listen,
            source,
        })?;
        let unix =
            match socket {
                None => None,
                Some(path) => Some(runtime.block_on(async { bind_unix(path) }).map_err(
                    |source| StartError::Socket {
                        path: path.display().to_string(),
                        source,
                    },
                )?),
            };
        let (stop, stopped) = watch::channel(false);
        let thread = std::thread::Builder::new()
            .name("podnet-api".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let tcp = serve(listener, tls, api.clone(), stopped.clone());
                    match unix {
                        Some(u) => {
                            tokio::join!(tcp, serve_unix(u, api, stopped));
                        }
                        None => tcp.await,
                    }
                })
            })
            .map_err(StartError::Runtime)?;
        Ok(Running {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// Stops accepting, lets open requests finish, and waits.
    pub fn stop(mut self) {
        self.shutdown();
    }

    /// Starts stopping (as [`Running::stop`]) without waiting.
    pub fn begin_stop(&self) {
        let _ = self.stop.send(true);
    }

    fn shutdown(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn bind_unix(path: &std::path::Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves the API on the root-only Unix socket: plain HTTP, and only to
/// peers running as root (checked with `SO_PEERCRED`, besides the mode).
async fn serve_unix(
    listener: tokio::net::UnixListener,
    api: KubeApi,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut open = tokio::task::JoinSet::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "API socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            // Reap finished connections as they end.
            Some(_) = open.join_next(), if !open.is_empty() => continue,
            _ = shutdown.changed() => break,
        };
        let root = stream.peer_cred().is_ok_and(|c| c.uid() == 0);
        let api = api.clone();
        let mut shutdown = shutdown.clone();
        let stopping = shutdown.clone();
        open.spawn(async move {
            let service = service_fn(move |req| {
                let api = api.clone();
                let stopping = stopping.clone();
                async move {
                    let answer = if root {
                        api.handle(req).await
                    } else {
                        failure(401, "Unauthorized", "the API socket serves root only")
                    };
                    // Watch streams end when the server stops, as on TCP.
                    Ok::<_, std::convert::Infallible>(
                        answer.map(|body| UntilShutdown::new(body, stopping, None)),
                    )
                }
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = shutdown.changed() => conn.as_mut().graceful_shutdown(),
            }
            // The request in progress (a reset, which stops the daemon,
            // among them) still gets its answer: graceful_shutdown only
            // asks the connection to close once it is answered.
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
        });
    }
    // Stopping: the open connections finish what they began.
    while open.join_next().await.is_some() {}
}
