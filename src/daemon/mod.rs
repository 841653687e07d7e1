//! The node daemon, `podnetd`: wiring of the fast path, the control plane,
//! the OS layer and the API.
//!
//! | module | owns |
//! |---|---|
//! | [`config`] | defaults, the TOML file, validation |
//! | [`dataplane`] | worker threads: TUN devices <-> [`crate::packet::Router`] |
//! | [`kube`] | `--kube-api`: the object store, the reconcilers and the Kubernetes API over HTTPS |
//! | [`runtime`] | the kubelet's host side: pod namespaces, TUN devices, addresses, processes |
//! | [`metrics`] | `/metrics`: fast-path, data-plane and node counters (Prometheus text) |
//! | [`publish`] | Services and EndpointSlices -> fast-path pools |
//! | [`controller`] | pods, deployments, statefulsets, services; supervision; the API handler |
//!
//! [`run`] takes the configuration and a shutdown flag, so tests start the
//! daemon in-process and stop it by setting the flag.
//!
//! What the daemon changes on its host: the TUN device `podnet0` with the
//! node gateway address (a connected route for the pod subnet comes with
//! it) and a route for the service CIDR through it — both vanish when the
//! daemon exits; one network namespace (`/var/run/netns/<pod>`) with a
//! persistent TUN `eth0` per pod, which outlive the daemon so a restart
//! finds its pods again; the state directory and the API socket.
//! `podnet reset` removes all of it.

pub mod config;
pub mod controller;
pub mod dataplane;
pub mod kube;
pub mod metrics;
pub mod publish;
pub mod runtime;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::{IpNet, Ipv4Net};

pub use config::{ConfigError, DaemonConfig};
use controller::Controller;
use dataplane::Dataplane;

use crate::packet::router::NodeNetwork;
use crate::packet::{Link, Router, RouterConfig};
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
    /// The socket could not be created.
    #[error("cannot listen on {path}: {source}")]
    Socket {
        /// The socket path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The host device could not be set up.
    #[error("cannot set up the host device {device}: {message}")]
    HostDevice {
        /// The device.
        device: String,
        /// What failed.
        message: String,
    },
    /// The state could not be opened.
    #[error(transparent)]
    State(#[from] controller::StartError),
    /// Threads could not be started.
    #[error("cannot start workers: {0}")]
    Workers(std::io::Error),
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
        ..RouterConfig::default()
    }));
    let dataplane = Dataplane::start(router.clone(), config.worker_count(), clock)
        .map_err(DaemonError::Workers)?;
    if config.kube_api {
        return kube::run(config, shutdown, router, dataplane);
    }
    // Opening the state takes its lock: a second daemon stops here, before
    // touching the host device.
    let controller = Arc::new(Controller::open(
        config.clone(),
        dataplane,
        shutdown.clone(),
    )?);

    let host = setup_host_device(&config)?;
    controller.dataplane().add(Link::Host, host);
    controller.recover();

    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(|source| DaemonError::Socket {
            path: socket_text.clone(),
            source,
        })?;
    }
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).map_err(|source| DaemonError::Socket {
        path: socket_text.clone(),
        source,
    })?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600)).map_err(
        |source| DaemonError::Socket {
            path: socket_text.clone(),
            source,
        },
    )?;
    let api_stop = Arc::new(AtomicBool::new(false));
    let api = {
        let handler = controller.clone();
        let stop = api_stop.clone();
        std::thread::Builder::new()
            .name("podnet-api".into())
            .spawn(move || {
                if let Err(e) = crate::api::serve(listener, handler, stop) {
                    tracing::error!("API server stopped: {e}");
                }
            })
            .map_err(DaemonError::Workers)?
    };
    tracing::info!(
        socket = %socket_text,
        node_subnet = %config.node_subnet,
        service_cidr = %config.service_cidr,
        "podnetd ready"
    );

    // A pod process that exits wakes the supervisor at once (SIGCHLD), so
    // its endpoints leave the fast path within a millisecond or so, not at
    // the next poll. Pods from before a restart are not our children; the
    // poll finds those.
    let (wake_tx, wake_rx) = crossbeam::channel::bounded::<()>(1);
    let mut sigchld = signal_hook::iterator::Signals::new([signal_hook::consts::SIGCHLD])
        .map_err(DaemonError::Workers)?;
    let sigchld_handle = sigchld.handle();
    let sigchld_thread = std::thread::Builder::new()
        .name("podnet-sigchld".into())
        .spawn(move || {
            for _ in sigchld.forever() {
                let _ = wake_tx.try_send(());
            }
        })
        .map_err(DaemonError::Workers)?;

    let mut last_sweep = Instant::now();
    while !shutdown.load(Ordering::Relaxed) {
        controller.tick();
        if last_sweep.elapsed() >= Duration::from_secs(1) {
            router.sweep(controller.dataplane().now());
            last_sweep = Instant::now();
        } else {
            // Flows removed by the last sweep or a teardown become reusable
            // as soon as the workers have moved on, not a second later.
            router.reclaim();
        }
        let _ = wake_rx.recv_timeout(Duration::from_millis(50));
    }
    sigchld_handle.close();
    let _ = sigchld_thread.join();

    tracing::info!("stopping");
    api_stop.store(true, Ordering::Relaxed);
    let _ = api.join();
    controller.shutdown();
    let _ = std::fs::remove_file(&socket);
    if controller.reset_requested() {
        for sub in ["objects.json", "ipam", "logs"] {
            let p = config.state_dir.join(sub);
            let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
        }
        let _ = std::fs::remove_dir(&config.state_dir);
        tracing::info!("reset: pods, namespaces, devices and state removed");
    }
    // Dropping the controller stops the workers and closes the host
    // device, which takes its routes with it.
    drop(controller);
    Ok(())
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
