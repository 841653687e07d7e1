//! The node daemon, `podnetd`: wiring of the fast path, the control plane,
//! the OS layer and the API.
//!
//! | module | owns |
//! |---|---|
//! | [`config`] | defaults, the TOML file, validation |
//! | [`dataplane`] | worker threads: TUN devices <-> [`crate::packet::Router`] |
//! | [`dns`] | the cluster DNS server (UDP and TCP at the node gateway, behind the `kube-dns` service) over [`crate::dns`] |
//! | [`identity`] | a pod's host name, `/etc/hosts` and `/etc/resolv.conf`, as the kubelet writes them |
//! | [`kube`] | the object store, the reconcilers, the Kubernetes API over HTTPS and the Unix socket, the node views |
//! | [`log_clock`] | when each byte of a container's log was first seen (inotify on the log directory, an index per log) |
//! | [`runtime`] | the kubelet's host side: pod namespaces, TUN devices, addresses, processes |
//! | [`state_check`] | damaged or missing state files at start: IPAM rebuilt, everything reported |
//! | [`volumes`] | pod volumes on the host: the atomic writer, hostPath checks, volume directories |
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
//! of it. With an egress interface (see [`resolve_edge`]): a clsact qdisc
//! and u32 filters on its ingress steering the node's edge traffic into
//! `podnet0` ([`crate::sys::tc`], removed at exit), `forwarding`,
//! `accept_local` and `rp_filter` of `podnet0` itself, and a route for the
//! LoadBalancer pool through it.

pub mod config;
pub mod dataplane;
pub mod dns;
pub mod health_check;
pub mod identity;
pub mod janitor;
pub mod kube;
pub mod log_clock;
pub mod metrics;
pub mod node;
pub mod policy;
pub mod publish;
pub mod rebuild;
pub mod reclaim;
pub mod runtime;
pub mod state_check;
pub mod volumes;

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use ipnet::{IpNet, Ipv4Net};

pub use config::{ConfigError, DaemonConfig, DnsUpstream};
use dataplane::Dataplane;

use crate::packet::router::{EdgeConfig, NodeNetwork};
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
    /// The cluster DNS server could not start.
    #[error(transparent)]
    Dns(#[from] dns::DnsError),
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
    match crate::sys::process::raise_open_file_limit() {
        Ok(n) => tracing::debug!("open files limit: {n}"),
        Err(e) => tracing::warn!("cannot raise the open files limit (pods hold descriptors): {e}"),
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
    let edge = resolve_edge(&config);
    let router = Arc::new(Router::new(RouterConfig {
        edge: EdgeConfig {
            node_v4: edge.node_ip,
            host_addrs: edge.host_addrs.clone(),
            no_masquerade: Vec::new(),
        },
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
    kube::run(config, shutdown, router, dataplane, edge)
}

/// The node's edge as found at start: the outward interface, the node's
/// address on it, and every address of the host.
#[derive(Clone, Debug, Default)]
pub struct Edge {
    /// `--egress-interface`, or the interface of the default route.
    pub egress: Option<String>,
    /// `--node-ip`, or the egress interface's primary IPv4 address.
    pub node_ip: Option<std::net::Ipv4Addr>,
    /// Every address of the node's namespace at start.
    pub host_addrs: Vec<std::net::IpAddr>,
}

/// Finds the edge; without an egress interface or a node address the edge
/// is off (logged): nothing is steered or masqueraded.
pub fn resolve_edge(config: &DaemonConfig) -> Edge {
    let addrs = link::addresses().unwrap_or_else(|e| {
        tracing::warn!("cannot list the node's addresses: {e}");
        Vec::new()
    });
    let egress = match &config.egress_interface {
        Some(dev) => Some(dev.clone()),
        None => link::default_route_interface().unwrap_or_else(|e| {
            tracing::warn!("cannot find the default route's interface: {e}");
            None
        }),
    };
    let node_ip = config.node_ip.or_else(|| {
        let dev = egress.as_deref()?;
        addrs.iter().find_map(|(name, net)| match net {
            IpNet::V4(n) if name == dev => Some(n.addr()),
            _ => None,
        })
    });
    match (&egress, node_ip) {
        (Some(dev), Some(ip)) => {
            tracing::info!(egress = %dev, node_ip = %ip, "edge: node ports, LoadBalancer addresses and egress masquerade through {dev}")
        }
        _ => tracing::info!(
            "edge off: no egress interface (no default route and no --egress-interface) or no address on it; pods reach nothing beyond the node and nothing outside reaches services"
        ),
    }
    let on = egress.is_some() && node_ip.is_some();
    Edge {
        egress: egress.filter(|_| on),
        node_ip: node_ip.filter(|_| on),
        host_addrs: addrs.into_iter().map(|(_, n)| n.addr()).collect(),
    }
}

/// The sysctls podnet sets on its own device for the edge (the device and
/// they go away together): packets podnetd writes into it with the node's
/// address as source (replies of node ports, masqueraded traffic) are
/// forwarded out of the egress interface, which needs forwarding on the
/// device they arrive on, a local source address accepted, and no
/// reverse-path check against it. Nothing else on the host is changed.
fn enable_edge_sysctls(dev: &str) -> Result<(), String> {
    for (key, value) in [
        ("forwarding", "1"),
        ("accept_local", "1"),
        ("rp_filter", "0"),
    ] {
        let path = format!("/proc/sys/net/ipv4/conf/{dev}/{key}");
        std::fs::write(&path, value).map_err(|e| format!("cannot set {path} to {value}: {e}"))?;
    }
    // The effective reverse-path filter is the larger of `all` and the
    // device's: strict (1) in `all` drops what podnetd answers.
    if std::fs::read_to_string("/proc/sys/net/ipv4/conf/all/rp_filter")
        .is_ok_and(|v| v.trim() == "1")
    {
        tracing::warn!(
            "net.ipv4.conf.all.rp_filter is 1 (strict): answers of node ports and masqueraded traffic will be dropped by the kernel; set it to 0 or 2 (loose)"
        );
    }
    Ok(())
}

/// Creates `podnet0` with the gateway address (its connected route covers
/// the pod subnet) and a route for the service CIDR. The device is
/// multi-queue with one queue per worker (see [`dataplane`]: a host flow is
/// served by the worker of its pod).
pub(crate) fn setup_host_device(
    config: &DaemonConfig,
    edge: &Edge,
) -> Result<Vec<Arc<Tun>>, DaemonError> {
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
    if edge.node_ip.is_some() {
        enable_edge_sysctls(dev).map_err(fail)?;
        // The host's own traffic to LoadBalancer addresses goes through the
        // fast path too.
        if let Some(pool) = config.lb_pool {
            link::add_route(IpNet::V4(pool), dev).map_err(|e| fail(e.to_string()))?;
        }
    }
    Ok(queues.into_iter().map(Arc::new).collect())
}
