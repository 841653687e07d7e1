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
//! connections are open, [`MAX_PER_CLIENT`] of them from one address, so
//! idle connections from one client leave room for every other.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::{failure, KubeApi};
use crate::api::pki::client_identity;

/// Time for a client to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for a client to send a request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections open at once.
pub const MAX_CONNECTIONS: usize = 4096;
/// Connections open at once from one address.
pub const MAX_PER_CLIENT: usize = 256;

/// Open connections per client address.
#[derive(Default)]
struct Connections {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

struct Slot {
    table: Arc<Mutex<Connections>>,
    client: IpAddr,
}

impl Slot {
    fn take(table: &Arc<Mutex<Connections>>, client: IpAddr) -> Option<Slot> {
        let mut t = table.lock();
        let mine = t.per_client.get(&client).copied().unwrap_or(0);
        if t.total >= MAX_CONNECTIONS || mine >= MAX_PER_CLIENT {
            return None;
        }
        t.total += 1;
        *t.per_client.entry(client).or_default() += 1;
        Some(Slot {
            table: table.clone(),
            client,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut t = self.table.lock();
        t.total -= 1;
        if let Some(n) = t.per_client.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                t.per_client.remove(&self.client);
            }
        }
    }
}

fn open_path(path: &str) -> bool {
    matches!(path, "/healthz" | "/livez" | "/readyz" | "/version")
}

/// Serves the API on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    api: KubeApi,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let connections = Arc::new(Mutex::new(Connections::default()));
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
            _ = shutdown.changed() => return,
        };
        let Some(slot) = Slot::take(&connections, peer.ip()) else {
            tracing::debug!(%peer, "API: connection limit reached, closing");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let api = api.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "API: TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let identity = client_identity(tls.get_ref().1.peer_certificates());
            let service = service_fn(move |req| {
                let api = api.clone();
                let identity = identity.clone();
                async move {
                    if identity.is_none() && !open_path(req.uri().path()) {
                        return Ok::<_, std::convert::Infallible>(failure(
                            401,
                            "Unauthorized",
                            "Unauthorized",
                        ));
                    }
                    Ok(api.handle(req).await)
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
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "API: connection ended with an error");
                    }
                }
                _ = shutdown.changed() => conn.as_mut().graceful_shutdown(),
            }
        });
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
}

impl Running {
    /// Binds `listen` and serves `api` with `tls` on a runtime of two
    /// threads, until [`Running::stop`] or drop.
    pub fn start(
        listen: std::net::SocketAddr,
        tls: Arc<rustls::ServerConfig>,
        api: KubeApi,
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
        let (stop, stopped) = watch::channel(false);
        let thread = std::thread::Builder::new()
            .name("podnet-api".into())
            .spawn(move || runtime.block_on(serve(listener, tls, api, stopped)))
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
