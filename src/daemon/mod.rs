//! The node daemon, `podnetd`: wiring of the fast path, the control plane,
//! the OS layer and the API.
//!
//! | module | owns |
//! |---|---|
//! | [`config`] | defaults, the TOML file, validation |
//! | [`dataplane`] | worker threads: TUN devices <-> [`crate::packet::Router`] |
//! | [`kube`] | the object store, the reconcilers, the Kubernetes API over HTTPS and the Unix socket, the node views |
//! | [`runtime`] | the kubelet's host side: pod namespaces, TUN devices, addresses, processes |
//! | [`node`] | `/podnet/v1`: NAT table, flows, counters, reset |
//! | [`metrics`] | `/metrics`: fast-path, data-plane and node counters (Prometheus text) |
//! | [`publish`] | Services and EndpointSlices -> fast-path pools |
//!
//! The HTTP(S) ingress proxy is [`crate::ingress`]; [`kube`] starts it and runs its reconciler.
//!
//! [`run`] takes the configuration and a shutdown flag, so tests start the
//! daemon in-process and stop it by setting the flag.
//!
//! What the daemon changes on its host: the TUN device `podnet0` with the
//! node gateway address (a connected route for the pod subnet comes with
//! it) and a route for the service CIDR through it — both vanish when the
//! daemon exits; one network namespace (`/var/run/netns/NS.POD`) with a
//! persistent TUN `eth0` per pod, which outlive the daemon so a restart
//! finds its pods again; the state directory, the API socket, the TCP
//! listener of the API and the admin kubeconfig. `podnet reset` removes all
//! of it.

pub mod config;
pub mod dataplane;
pub mod kube;
pub mod metrics;
pub mod node;
pub mod publish;
pub mod runtime;

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use ipnet::{IpNet, Ipv4Net};

pub use config::{ConfigError, DaemonConfig};
use dataplane::Dataplane;

use crate::packet::router::NodeNetwork;
use crate::packet::{Router, RouterConfig};
use crate::sys::{
    link,
    tun::{Tun, TunOptions},
};

/// Why the daemon stopped with an error. Each message says which stage
/// failed and what to do.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The daemon needs root.
    #[error("podnetd must run as root (it creates network namespaces and TUN devices)")]
    NotRoot,
    /// Another daemon answers on the socket.
    #[error("another podnetd is already serving {0}; stop it or choose another --socket")]
    AlreadyRunning(String),
    /// The host device could not be set up.
    #[error("cannot set up the host device {device}: {message}")]
    HostDevice {
        /// The device.
        device: String,
        /// What failed.
        message: String,
    },
    /// The state directory (object store, PKI) is unusable.
    #[error("state directory {path}: {message}")]
    State {
        /// The path.
        path: PathBuf,
        /// What is wrong and what to do.
        message: String,
    },
    /// IPAM could not open its store.
    #[error("IPAM: {0}")]
    Ipam(String),
    /// Threads could not be started.
    #[error("cannot start workers: {0}")]
    Workers(std::io::Error),
    /// The ingress proxy could not start (a port taken, TLS set-up).
    #[error(transparent)]
    Ingress(#[from] crate::ingress::StartError),
}

/// Runs the daemon until `shutdown` is set (SIGTERM, SIGINT, `podnet reset`).
/// Pods keep running after it returns, unless a reset removed them.
pub fn run(config: DaemonConfig, shutdown: Arc<AtomicBool>) -> Result<(), DaemonError> {
    config.validate()?;
    if !crate::sys::is_root() {
        return Err(DaemonError::NotRoot);
    }
    // `ip netns exec` gives its command a private mount namespace: pod
    // namespaces bind-mounted there are invisible to `ip netns` outside.
    // (`ip netns exec` execs its command, so the parent is the shell that
    // ran it, still in the host's mount namespace.)
    let parent = std::os::unix::process::parent_id();
    if let (Ok(own), Ok(outer)) = (
        std::fs::read_link("/proc/self/ns/mnt"),
        std::fs::read_link(format!("/proc/{parent}/ns/mnt")),
    ) {
        if own != outer {
            tracing::warn!(
                "podnetd runs in a private mount namespace (started by `ip netns exec`?): the pod \
                 namespaces it creates will not be visible to `ip netns` outside it; to run it in a \
                 network namespace use `nsenter --net=/var/run/netns/NAME podnetd`"
            );
        }
    }
    let socket = config.socket.clone();
    let socket_text = socket.display().to_string();
    if UnixStream::connect(&socket).is_ok() {
        return Err(DaemonError::AlreadyRunning(socket_text));
    }
    let clock = Instant::now();
    let mut pod_subnets = vec![IpNet::V4(config.node_subnet)];
    if let Some(v6) = config.node_subnet_v6 {
        pod_subnets.push(IpNet::V6(v6));
    }
    let router = Arc::new(Router::new(RouterConfig {
        network: NodeNetwork {
            pod_subnets,
            service_cidrs: vec![IpNet::V4(config.service_cidr)],
            gateway_v4: config.gateway(),
            gateway_v6: config.gateway_v6(),
        },
        conntrack: crate::packet::conntrack::ConnTrackConfig {
            source_share_percent: config.conntrack_source_share_percent,
            ..Default::default()
        },
        ..RouterConfig::default()
    }));
    let dataplane = Dataplane::start(router.clone(), config.worker_count(), clock)
        .map_err(DaemonError::Workers)?;
    kube::run(config, shutdown, router, dataplane)
}

/// Creates `podnet0` with the gateway address (its connected route covers
/// the pod subnet) and a route for the service CIDR. The device is
/// multi-queue with one queue per worker (see [`dataplane`]: a host flow is
/// served by the worker of its pod).
pub(crate) fn setup_host_device(config: &DaemonConfig) -> Result<Vec<Arc<Tun>>, DaemonError> {
    let fail = |message: String| DaemonError::HostDevice {
        device: config.host_device.clone(),
        message,
    };
    let dev = &config.host_device;
    let options = TunOptions {
        persistent: false,
        offload: config.offload,
    };
    let queues =
        Tun::open_queues(dev, options, config.worker_count()).map_err(|e| fail(e.to_string()))?;
    for queue in &queues {
        queue
            .set_nonblocking(true)
            .map_err(|e| fail(e.to_string()))?;
    }
    let gw = Ipv4Net::new(config.gateway(), config.node_subnet.prefix_len()).expect("valid prefix");
    link::set_mtu(dev, config.mtu).map_err(|e| fail(e.to_string()))?;
    link::add_address(dev, IpNet::V4(gw)).map_err(|e| fail(e.to_string()))?;
    if let (Some(v6), Some(gw6)) = (config.node_subnet_v6, config.gateway_v6()) {
        let net = ipnet::Ipv6Net::new(gw6, v6.prefix_len()).expect("valid prefix");
        link::add_address(dev, IpNet::V6(net)).map_err(|e| fail(e.to_string()))?;
    }
    link::set_up(dev).map_err(|e| fail(e.to_string()))?;
    link::add_route(IpNet::V4(config.service_cidr), dev).map_err(|e| fail(e.to_string()))?;
    Ok(queues.into_iter().map(Arc::new).collect())
}
