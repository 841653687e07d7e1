//! HTTP(S) ingress: a reverse proxy inside podnetd that serves the
//! networking.k8s.io/v1 Ingresses of class `podnet`.
//!
//! | module | owns |
//! |---|---|
//! | [`routes`] | the route table (hosts, paths, default backend) built from Ingresses, Services and EndpointSlices; sans-IO |
//! | [`tls`] | certificates from `kubernetes.io/tls` Secrets, picked by SNI; the default self-signed one |
//! | [`proxy`] | the listeners, routing and the answers of its own (404/502/503/504); h2 clients on hyper: headers, streaming, the access log |
//! | [`h1`] | HTTP/1.x clients on the ingress thread's own loop (httparse): the same, and upgrades |
//! | [`controller`] | the reconciler that rebuilds both tables from the store and writes `status.loadBalancer` |
//! | [`access_log`] | the daemon's log writer, which lets the ingress threads write their access log lines in batches |
//!
//! The tables live behind `arc-swap` ([`Shared`]): the reconciler swaps a
//! new table in whole; a request or a TLS handshake loads the current one
//! and never waits for a rebuild.
//!
//! Which Ingresses are served: those naming no class (podnet's class is the
//! cluster default), those whose `spec.ingressClassName` is an IngressClass
//! of controller [`CONTROLLER`] (`podnet`, made at start, is one), and
//! those with the deprecated annotation `kubernetes.io/ingress.class:
//! podnet`. Others belong to another controller and are left alone.

pub mod access_log;
pub mod controller;
mod h1;
pub mod proxy;
pub mod routes;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass, IngressClassSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::control::kinds::ingress::CLASS_ANNOTATION;
use crate::control::kinds::ingress_class::DEFAULT_CLASS_ANNOTATION;
use crate::control::kinds::Kind;
use crate::control::objects::{Admission, LabelSelector, ObjectError, Objects};
pub use controller::IngressController;
use routes::RouteTable;
use tls::CertTable;

/// The tables the proxy reads and the controller replaces.
#[derive(Default)]
pub struct Shared {
    /// Hosts and paths to backends.
    pub routes: ArcSwap<RouteTable>,
    /// Certificates by SNI.
    pub certs: Arc<ArcSwap<CertTable>>,
}

/// The IngressClass podnetd makes at start.
pub const CLASS: &str = "podnet";

/// The controller name of podnet's IngressClasses.
pub const CONTROLLER: &str = "podnet.io/ingress";

/// Whether podnet serves `ing`, given the IngressClasses there are.
pub fn is_served(ing: &Ingress, classes: &[IngressClass]) -> bool {
    let named = ing
        .spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.as_deref());
    let annotated = ing
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CLASS_ANNOTATION))
        .map(String::as_str);
    match (named, annotated) {
        (Some(name), _) => {
            name == CLASS
                || classes.iter().any(|c| {
                    c.metadata.name.as_deref() == Some(name)
                        && c.spec.as_ref().and_then(|s| s.controller.as_deref()) == Some(CONTROLLER)
                })
        }
        (None, Some(a)) => a == CLASS,
        (None, None) => true,
    }
}

/// Makes IngressClass `podnet` (controller [`CONTROLLER`], the cluster
/// default) unless an IngressClass of that name exists.
pub fn ensure_class(objects: &Objects, now: SystemTime) -> Result<(), ObjectError> {
    let class = IngressClass {
        metadata: ObjectMeta {
            name: Some(CLASS.into()),
            annotations: Some([(DEFAULT_CLASS_ANNOTATION.to_string(), "true".to_string())].into()),
            labels: Some(Objects::made_by_podnetd()),
            ..Default::default()
        },
        spec: Some(IngressClassSpec {
            controller: Some(CONTROLLER.into()),
            parameters: None,
        }),
    };
    objects.ensure_as(None, &class, now)
}

/// The DefaultIngressClass admission step: an Ingress created without a
/// class (neither `spec.ingressClassName` nor the deprecated annotation)
/// gets the default IngressClass's name, the newest one if several are
/// marked default, as the API server's admission plugin does.
pub struct DefaultClass {
    objects: Objects,
}

impl DefaultClass {
    /// The step, reading IngressClasses from `objects`.
    pub fn new(objects: Objects) -> Self {
        Self { objects }
    }
}

impl Admission for DefaultClass {
    fn admit(&self, kind: &Kind, obj: &mut Value, old: Option<&Value>) -> Result<(), ObjectError> {
        if old.is_some() || !kind.is::<Ingress>() {
            return Ok(());
        }
        let named = obj
            .pointer("/spec/ingressClassName")
            .and_then(Value::as_str)
            .is_some_and(|c| !c.is_empty());
        let annotated = obj
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(CLASS_ANNOTATION))
            .is_some();
        if named || annotated {
            return Ok(());
        }
        let default = self
            .objects
            .list_as::<IngressClass>(None, &LabelSelector::default())
            .into_iter()
            .filter(|c| {
                c.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                    .is_some_and(|v| v == "true")
            })
            .max_by_key(|c| {
                (
                    c.metadata
                        .creation_timestamp
                        .as_ref()
                        .map(|t| t.0.as_second()),
                    c.metadata.name.clone(),
                )
            });
        if let (Some(class), Some(spec)) =
            (default, obj.get_mut("spec").and_then(Value::as_object_mut))
        {
            spec.insert("ingressClassName".into(), class.metadata.name.into());
        }
        Ok(())
    }

    fn abandoned(&self, _kind: &Kind, _obj: &Value) {}
}

/// Where the proxy listens and how long it waits for a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyConfig {
    /// The HTTP listener (`None`: off).
    pub http: Option<SocketAddr>,
    /// The HTTPS listener (`None`: off).
    pub https: Option<SocketAddr>,
    /// How long a service may take to connect and send its response head.
    pub upstream_timeout: Duration,
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listen address could not be bound.
    #[error("cannot listen on {addr} for ingress: {source}; free the port or choose another with {flag} (0 turns it off)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The flag that sets its port.
        flag: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS configuration could not be made.
    #[error("cannot set up ingress TLS: {0}")]
    Tls(String),
    /// The runtime could not be started.
    #[error("cannot start the ingress runtime: {0}")]
    Runtime(std::io::Error),
}

/// How many threads serve the ingress, each with a runtime and listeners of
/// its own (`SO_REUSEPORT`: the kernel spreads connections over them), as
/// nginx runs a process per core: a connection lives on one thread, so no
/// request wakes another thread. A runtime shared by all threads spent an
/// eighth of its time in cross-thread wakeups under load.
fn worker_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

/// The running proxy, on threads of its own.
pub struct IngressProxy {
    /// Where HTTP is served, if on.
    pub http_addr: Option<SocketAddr>,
    /// Where HTTPS is served, if on.
    pub https_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// A listener on `addr` that other threads can bind too (`SO_REUSEPORT`),
/// registered with the runtime the caller has entered.
fn reuseport_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

impl IngressProxy {
    /// Binds the listeners of `config` and serves them from `shared` until
    /// [`IngressProxy::stop`] or drop.
    pub fn start(config: ProxyConfig, shared: Arc<Shared>) -> Result<IngressProxy, StartError> {
        let tls = match config.https {
            Some(_) => Some(tokio_rustls::TlsAcceptor::from(
                tls::server_config(shared.certs.clone()).map_err(StartError::Tls)?,
            )),
            None => None,
        };
        // The first thread's listeners fix the ports (0 picks one); the
        // others bind the same.
        let (mut http_at, mut https_at) = (config.http, config.https);
        let (stop, stopped) = watch::channel(false);
        let mut threads = Vec::new();
        for i in 0..worker_count() {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .on_thread_park(access_log::flush_this_thread)
                .build()
                .map_err(StartError::Runtime)?;
            let bind =
                |at: &mut Option<SocketAddr>, flag| -> Result<Option<TcpListener>, StartError> {
                    let Some(addr) = *at else { return Ok(None) };
                    let _entered = runtime.enter();
                    let l = reuseport_listener(addr).map_err(|source| StartError::Bind {
                        addr,
                        flag,
                        source,
                    })?;
                    *at = Some(l.local_addr().map_err(|source| StartError::Bind {
                        addr,
                        flag,
                        source,
                    })?);
                    Ok(Some(l))
                };
            let h = bind(&mut http_at, "--ingress-http-port")?;
            let s = bind(&mut https_at, "--ingress-https-port")?;
            let ctx = Arc::new(proxy::Context::new(shared.clone(), config.upstream_timeout));
            let tls = tls.clone();
            let stopped = stopped.clone();
            let thread = std::thread::Builder::new()
                .name(format!("podnet-ingress-{i}"))
                .spawn(move || {
                    access_log::batch_this_thread();
                    runtime.block_on(async move {
                        let a = async {
                            if let Some(l) = h {
                                proxy::serve(l, None, ctx.clone(), stopped.clone()).await;
                            }
                        };
                        let b = async {
                            if let Some(l) = s {
                                proxy::serve(l, tls, ctx.clone(), stopped.clone()).await;
                            }
                        };
                        let c = ctx.reap_idle(stopped.clone());
                        tokio::join!(a, b, c);
                    });
                    runtime.shutdown_timeout(Duration::from_secs(2));
                    access_log::flush_this_thread();
                })
                .map_err(StartError::Runtime)?;
            threads.push(thread);
        }
        Ok(IngressProxy {
            http_addr: http_at,
            https_addr: https_at,
            stop,
            threads,
        })
    }

    /// Stops accepting, closes open connections, and waits.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.stop.send(true);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for IngressProxy {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod proxy_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn served_classes() {
        let ing = |class: Option<&str>, annotation: Option<&str>| -> Ingress {
            let mut v = json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                "metadata": {"name": "i"}, "spec": {}});
            if let Some(c) = class {
                v["spec"]["ingressClassName"] = c.into();
            }
            if let Some(a) = annotation {
                v["metadata"]["annotations"] = json!({ CLASS_ANNOTATION: a });
            }
            serde_json::from_value(v).unwrap()
        };
        let classes: Vec<IngressClass> = vec![
            serde_json::from_value(json!({"metadata": {"name": "mine"}, "spec": {"controller": CONTROLLER}}))
                .unwrap(),
            serde_json::from_value(json!({"metadata": {"name": "nginx"}, "spec": {"controller": "k8s.io/ingress-nginx"}}))
                .unwrap(),
        ];
        assert!(is_served(&ing(None, None), &classes));
        assert!(is_served(&ing(Some("podnet"), None), &classes));
        assert!(is_served(&ing(Some("mine"), None), &classes));
        assert!(is_served(&ing(None, Some("podnet")), &classes));
        assert!(!is_served(&ing(Some("nginx"), None), &classes));
        assert!(!is_served(&ing(None, Some("nginx")), &classes));
        assert!(!is_served(&ing(Some("unknown"), None), &classes));
    }
}
