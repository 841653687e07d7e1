//! The daemon's Kubernetes control plane: the object
//! store, one reconciler per kind, the kubelet over the host runtime, the
//! fast-path publisher, and the Kubernetes API over HTTPS with its PKI and
//! admin kubeconfig.
//!
//! One thread runs the reconcilers ([`Manager`]); it wakes on every store
//! change, on a pod process's exit (SIGCHLD), and when a reconciler asked
//! to look again (probes, back-off, grace periods). No lock on objects is
//! held across netlink, namespace creation or a process spawn: reconcilers
//! read, act, and write back with compare-and-swap.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeCondition, NodeStatus, NodeSystemInfo};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::dataplane::Dataplane;
use super::metrics::{sync_histogram, NodeMetrics};
use super::node::NodeViews;
use super::publish::EdgeSteering;
use super::publish::FastPathPublisher;
use super::runtime::HostRuntime;
use super::state_check::{self, StateDamage};
use super::{setup_host_device, DaemonConfig, DaemonError, DnsUpstream};
use crate::api::kube::server::Running;
use crate::api::kube::KubeApi;
use crate::api::pki::{default_server_names, Pki};
use crate::control::alloc::{ClusterIps, LoadBalancerIps, NodeBinder, NodePorts};

use crate::control::kinds;
use crate::control::objects::{kube_time, MetadataOnly, ObjectError, Objects};
use crate::control::reconcile::deployment::Deployments;
use crate::control::reconcile::endpoints::ServiceEndpoints;
use crate::control::reconcile::pod::Kubelet;
use crate::control::reconcile::replica_set::ReplicaSets;
use crate::control::reconcile::stateful_set::StatefulSets;
use crate::control::reconcile::{events, Key, Manager};
use crate::control::store::encrypt::Encryption;
use crate::control::store::{FileStore, StoreOptions};
use crate::packet::{Link, Router};

fn state_err(config: &DaemonConfig, message: String) -> DaemonError {
    DaemonError::State {
        path: config.state_dir.clone(),
        message,
    }
}

/// This host's name, for the Node object.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_lowercase())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "podnet-node".into())
}

/// Writes this node's Node object: pod CIDR, address, Ready, capacity.
/// The InternalIP is the node's address on its egress side (`--node-ip`,
/// or the egress interface's), else the pod gateway's.
fn register_node(
    objects: &Objects,
    config: &DaemonConfig,
    name: &str,
    node_ip: Option<std::net::Ipv4Addr>,
    now: SystemTime,
) -> Result<(), ObjectError> {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut cidrs = vec![config.node_subnet.to_string()];
    if let Some(v6) = config.node_subnet_v6 {
        cidrs.push(v6.to_string());
    }
    let status = NodeStatus {
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: node_ip.unwrap_or_else(|| config.gateway()).to_string(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: name.into(),
            },
        ]),
        capacity: Some(
            [
                ("cpu".to_string(), Quantity(cpus.to_string())),
                (
                    "pods".to_string(),
                    Quantity(((1u64 << (32 - config.node_subnet.prefix_len())) - 3).to_string()),
                ),
            ]
            .into(),
        ),
        conditions: Some(vec![NodeCondition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: Some("PodnetReady".into()),
            message: Some("podnetd is running".into()),
            last_heartbeat_time: Some(kube_time(now)),
            last_transition_time: Some(kube_time(now)),
        }]),
        node_info: Some(NodeSystemInfo {
            architecture: std::env::consts::ARCH.into(),
            container_runtime_version: format!("podnet://{}", env!("CARGO_PKG_VERSION")),
            kernel_version: kernel,
            kube_proxy_version: String::new(),
            kubelet_version: format!("v1.{}.0-podnet", crate::api::kube::discovery::KUBE_MINOR),
            operating_system: std::env::consts::OS.into(),
            os_image: "podnet".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut node = match objects.get_as::<Node>(None, name) {
        Ok(n) => n,
        Err(ObjectError::NotFound { .. }) => {
            let mut labels = std::collections::BTreeMap::new();
            labels.insert("kubernetes.io/hostname".to_string(), name.to_string());
            labels.insert(
                "kubernetes.io/os".to_string(),
                std::env::consts::OS.to_string(),
            );
            labels.insert(
                "node-role.kubernetes.io/control-plane".to_string(),
                String::new(),
            );
            let node = Node {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    labels: Some(labels),
                    ..Default::default()
                },
                spec: Some(k8s_openapi::api::core::v1::NodeSpec {
                    pod_cidr: Some(config.node_subnet.to_string()),
                    pod_cidrs: Some(cidrs.clone()),
                    ..Default::default()
                }),
                status: None,
            };
            objects.create_as(None, &node, now)?
        }
        Err(e) => return Err(e),
    };
    node.status = Some(status);
    objects.update_as(&node, Some("status"))?;
    Ok(())
}

/// Container logs where the host runtime writes them, timed by its clock.
struct StateLogs {
    dir: std::path::PathBuf,
    clock: Arc<super::log_clock::LogClock>,
}

impl StateLogs {
    /// The clock's name for the log at `path` (a file in `dir`).
    fn name<'a>(&self, path: &'a std::path::Path) -> Option<&'a str> {
        path.strip_prefix(&self.dir).ok()?.to_str()
    }
}

impl crate::api::kube::logs::LogSource for StateLogs {
    fn log_path(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        previous: bool,
    ) -> Option<std::path::PathBuf> {
        let file = if previous {
            super::runtime::previous_log_file_name(namespace, pod, container)
        } else {
            super::runtime::log_file_name(namespace, pod, container)
        };
        Some(self.dir.join(file))
    }

    fn observe(&self, path: &std::path::Path) -> Option<u64> {
        self.clock.observe(self.name(path)?)
    }

    fn times(
        &self,
        path: &std::path::Path,
        from: u64,
        to: u64,
    ) -> crate::api::kube::logs::ByteTimes {
        let records = self
            .name(path)
            .map(|n| self.clock.records(n, from, to))
            .unwrap_or_default();
        crate::api::kube::logs::ByteTimes::new(records)
    }

    fn offset_since(&self, path: &std::path::Path, since: i64) -> u64 {
        self.name(path)
            .map_or(0, |n| self.clock.offset_since(n, since))
    }
}

/// How long a start waits for a previous daemon to let go of the state
/// directory (its threads can hold the lock for a moment after SIGKILL).
const LOCK_WAIT: Duration = Duration::from_secs(15);

/// Opens the object store, waiting (bounded, logged) while another process
/// still holds its lock.
fn open_store(config: &DaemonConfig) -> Result<FileStore, DaemonError> {
    let key_path = config.encryption_key_path();
    let (encryption, created) =
        Encryption::load_or_create(&key_path).map_err(|e| state_err(config, e.to_string()))?;
    if created {
        tracing::info!(file = %key_path.display(), "created the key Secrets are encrypted with at rest; back it up with the state directory");
    }
    let encryption = Arc::new(encryption);
    let deadline = Instant::now() + LOCK_WAIT;
    let mut logged = false;
    loop {
        let options = StoreOptions {
            sync: config.store_sync,
            encryption: Some(encryption.clone()),
            ..StoreOptions::default()
        };
        match FileStore::open_with_options(&config.state_dir, options) {
            Ok(s) => {
                tracing::info!(store_sync = %config.store_sync, dir = %s.dir().display(), "object store open");
                return Ok(s);
            }
            Err(crate::control::store::file::OpenError::Locked { path })
                if Instant::now() < deadline =>
            {
                if !logged {
                    tracing::warn!(
                        lock = %path.display(),
                        "the state directory is still locked (a previous podnetd exiting?); waiting up to {}s",
                        LOCK_WAIT.as_secs()
                    );
                    logged = true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => {
                if created {
                    // A key made just now opens nothing already sealed: do
                    // not leave it to be mistaken for the right one.
                    let _ = std::fs::remove_file(&key_path);
                }
                let hint = match &e {
                    crate::control::store::file::OpenError::Encryption { .. } => format!(
                        " (key file {}{})",
                        key_path.display(),
                        if created {
                            ", missing: give the one the store was written with"
                        } else {
                            ""
                        }
                    ),
                    _ => String::new(),
                };
                return Err(state_err(config, format!("{e}{hint}")));
            }
        }
    }
}

/// Runs the Kubernetes control plane until `shutdown` is set.
pub fn run(
    config: DaemonConfig,
    shutdown: Arc<AtomicBool>,
    router: Arc<Router>,
    dataplane: Dataplane,
    edge: super::Edge,
) -> Result<(), DaemonError> {
    let now = SystemTime::now();
    let mut damages: Vec<StateDamage> = state_check::check_object_store(&config)
        .into_iter()
        .collect();
    let store = Arc::new(open_store(&config)?);
    damages.extend(state_check::object_store_repairs(&store));
    let base = Objects::new(store, now).map_err(|e| state_err(&config, e.to_string()))?;
    let node_name = config.node_name.clone().unwrap_or_else(host_name);
    let mut objects = base
        .clone()
        .with_admission(Arc::new(
            ClusterIps::new(config.service_cidr, &base).reserve(
                config.cluster_dns,
                super::dns::SERVICE.0,
                super::dns::SERVICE.1,
            ),
        ))
        .with_admission(Arc::new(NodePorts::new(
            config.service_node_port_range,
            &base,
        )))
        .with_admission(Arc::new(NodeBinder {
            node: node_name.clone(),
        }))
        .with_admission(Arc::new(crate::ingress::DefaultClass::new(base.clone())));
    if let Some(pool) = config.lb_pool {
        objects = objects.with_admission(Arc::new(LoadBalancerIps::new(pool, &base)));
    }
    // Events are written off the reconcilers' thread, and never preempt it.
    let _event_writer = objects
        .start_deferred_writer(|| {
            if let Err(e) = crate::sys::process::make_thread_background(0) {
                tracing::debug!("cannot make the event writer a background thread: {e}");
            }
        })
        .map_err(DaemonError::Workers)?;
    register_node(&objects, &config, &node_name, edge.node_ip, now)
        .map_err(|e| state_err(&config, format!("cannot register the node: {e}")))?;
    crate::ingress::ensure_class(&objects, now).map_err(|e| {
        state_err(
            &config,
            format!("cannot create the IngressClass podnet: {e}"),
        )
    })?;

    if let Err(e) = crate::control::reconcile::volume_claims::ensure_class(&objects, now) {
        tracing::error!(
            "cannot create the StorageClass podnet-local: {e}; claims without a class will wait"
        );
    }
    if let Err(e) = super::dns::ensure_kube_dns(&objects, &config, now) {
        tracing::error!("cannot create the cluster DNS service kube-system/kube-dns: {e}; pods' names will not resolve");
    }

    // The object store's lock is held: the IPAM lock is free unless a
    // podnet of the other kind runs on this directory.
    let (ipam, ipam_damages) = state_check::open_ipam(&config)?;
    damages.extend(ipam_damages);

    let dataplane = Arc::new(dataplane);
    let sync = sync_histogram();
    let host = setup_host_device(&config, &edge)?;
    dataplane.add(Link::Host, host);
    let steering = match (&edge.egress, edge.node_ip) {
        (Some(dev), Some(ip)) => Some(Arc::new(EdgeSteering::start(dev, &config, ip).map_err(
            |e| DaemonError::HostDevice {
                device: dev.clone(),
                message: e.to_string(),
            },
        )?)),
        _ => None,
    };

    // The reconcilers, the kubelet's runtime woken by process exits.
    let poke_slot: Arc<parking_lot::Mutex<Option<crate::control::reconcile::Poker>>> =
        Arc::default();
    let exited = {
        let slot = poke_slot.clone();
        Arc::new(move |ns: &str, name: &str| {
            if let Some(p) = slot.lock().as_ref() {
                p.poke(Key {
                    kind: "Pod",
                    namespace: ns.into(),
                    name: name.into(),
                });
            }
        })
    };
    let publisher = Arc::new(
        FastPathPublisher::new(dataplane.clone(), sync.clone())
            .with_edge(edge.node_ip, steering.clone()),
    );
    let runtime = Arc::new(HostRuntime::new(
        config.clone(),
        node_name.clone(),
        dataplane.clone(),
        ipam,
        exited,
        publisher.ready_backends(),
    ));
    {
        let pods = objects.list_as::<k8s_openapi::api::core::v1::Pod>(None, &Default::default());
        let claimed = runtime.recover(&pods);
        if claimed > 0 {
            damages.push(StateDamage {
                file: config.state_dir.join("ipam").join("changes.log"),
                reason: "StateFileDamaged",
                message: format!(
                    "IPAM did not hold the addresses of {claimed} running pod(s): its files were damaged, \
                     cut short or removed; the addresses were claimed again from the pods"
                ),
            });
        }
        state_check::report(&objects, &node_name, &damages, now);
    }
    let reset_requested = Arc::new(AtomicBool::new(false));
    let node_views = Arc::new(NodeViews {
        dataplane: dataplane.clone(),
        publisher: publisher.clone(),
        objects: objects.clone(),
        runtime: runtime.clone(),
        shutdown: shutdown.clone(),
        reset_requested: reset_requested.clone(),
    });

    // The API: PKI made or loaded, kubeconfig written, HTTPS served.
    let service_ip: IpAddr = IpAddr::V4(std::net::Ipv4Addr::from(
        config.service_cidr.network().to_bits() + 1,
    ));
    let mut ips: Vec<IpAddr> = vec![
        "127.0.0.1".parse().expect("literal"),
        "::1".parse().expect("literal"),
        IpAddr::V4(config.gateway()),
        service_ip,
    ];
    if !config.api_listen.ip().is_unspecified() && !ips.contains(&config.api_listen.ip()) {
        ips.push(config.api_listen.ip());
    }
    let pki = Pki::load_or_create(&config.state_dir, &default_server_names(&node_name), &ips)
        .map_err(|e| state_err(&config, e.to_string()))?;
    let tls = pki
        .server_config()
        .map_err(|e| state_err(&config, e.to_string()))?;
    let api = Running::start_with_socket(
        config.api_listen,
        tls,
        KubeApi::new(objects.clone())
            .with_logs(Arc::new(StateLogs {
                dir: config.state_dir.join("logs"),
                clock: runtime.log_clock(),
            }))
            .with_exec(runtime.clone())
            .with_metrics(Arc::new(NodeMetrics {
                dataplane: dataplane.clone(),
                objects: objects.clone(),
                sync: sync.clone(),
                node: node_name.clone(),
            }))
            .with_node(node_views),
        Some(&config.socket),
    )
    .map_err(|e| state_err(&config, e.to_string()))?;
    let server = format!(
        "https://{}",
        if config.api_listen.ip().is_unspecified() {
            std::net::SocketAddr::new("127.0.0.1".parse().expect("literal"), api.addr.port())
        } else {
            api.addr
        }
    );
    pki.write_kubeconfig(&config.admin_kubeconfig, &server)
        .map_err(|e| state_err(&config, e.to_string()))?;

    // The ingress proxy, filled by its reconciler below.
    let ingress_tables = Arc::new(crate::ingress::Shared::default());
    let listen = |port: u16| (port != 0).then(|| std::net::SocketAddr::from(([0, 0, 0, 0], port)));
    let ingress = crate::ingress::IngressProxy::start(
        crate::ingress::ProxyConfig {
            http: listen(config.ingress_http_port),
            https: listen(config.ingress_https_port),
            upstream_timeout: Duration::from_secs(config.ingress_upstream_timeout_secs),
        },
        ingress_tables.clone(),
    )?;

    // Cluster DNS at the node gateway, reached at the kube-dns service.
    let dns_zone = Arc::new(arc_swap::ArcSwap::from_pointee(crate::dns::Zone::default()));
    let upstreams = match &config.dns_upstream {
        DnsUpstream::None => Vec::new(),
        DnsUpstream::Servers(s) => s.clone(),
        DnsUpstream::Host => super::dns::upstreams_from_resolv_conf(
            &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        ),
    };
    let dns = super::dns::DnsServer::start(
        std::net::SocketAddr::new(IpAddr::V4(config.gateway()), super::dns::PORT),
        dns_zone.clone(),
        upstreams.clone(),
    )?;
    let dns_builder = super::dns::DnsZone::start(objects.clone(), dns_zone.clone(), &config)?;
    tracing::info!(listen = %dns.addr, cluster_dns = %config.cluster_dns, upstreams = ?upstreams, "cluster DNS serving");

    let volume_dirs: Arc<dyn crate::control::reconcile::volume_claims::VolumeDirs> = Arc::new(
        super::volumes::LocalVolumeDirs::new(config.state_dir.join("volumes")),
    );
    let manager = Manager::new(
        objects.clone(),
        vec![
            Box::new(Kubelet::new(runtime.clone())),
            // Endpoints before the workload controllers: a deleted pod
            // leaves its service before its replacement is made.
            Box::new(ServiceEndpoints::default()),
            Box::new(ReplicaSets),
            Box::new(Deployments),
            Box::new(StatefulSets),
            Box::new(crate::control::reconcile::volume_claims::VolumeClaims::new(
                volume_dirs.clone(),
            )),
            Box::new(crate::control::reconcile::volume_claims::Volumes::new(
                volume_dirs,
            )),
            Box::new(publisher),
            Box::new(
                super::policy::PolicyPublisher::start(objects.clone(), dataplane.clone())
                    .map_err(DaemonError::Workers)?,
            ),
            Box::new(dns_builder),
            Box::new(
                super::health_check::HealthChecks::start(node_name.clone())
                    .map_err(DaemonError::Workers)?,
            ),
            Box::new(crate::ingress::IngressController::new(
                ingress_tables,
                node_name.clone(),
            )),
        ],
    );
    let mut manager = manager.with_stop(shutdown.clone());
    *poke_slot.lock() = Some(manager.poker());

    let mut sigchld = signal_hook::iterator::Signals::new([signal_hook::consts::SIGCHLD])
        .map_err(DaemonError::Workers)?;
    let sigchld_handle = sigchld.handle();
    let reaper = {
        let runtime = runtime.clone();
        std::thread::Builder::new()
            .name("podnet-sigchld".into())
            .spawn(move || {
                for _ in sigchld.forever() {
                    runtime.reap();
                }
            })
            .map_err(DaemonError::Workers)?
    };
    tracing::info!(
        api = %server,
        kubeconfig = %config.admin_kubeconfig.display(),
        node = %node_name,
        node_subnet = %config.node_subnet,
        service_cidr = %config.service_cidr,
        ingress_http = ?ingress.http_addr,
        ingress_https = ?ingress.https_addr,
        "podnetd ready (Kubernetes API)"
    );

    let mut drop_log = super::metrics::DropLog::default();
    let mut last_sweep = Instant::now();
    let mut last_gc = Instant::now();
    let mut gc_passes: u64 = 0;
    let mut last_prune = Instant::now();
    while !shutdown.load(Ordering::Relaxed) {
        let next = manager.run_until_idle(SystemTime::now());
        runtime.flush();
        if last_sweep.elapsed() >= Duration::from_secs(1) {
            router.sweep(dataplane.now());
            drop_log.tick_router(Instant::now(), &router);
            last_sweep = Instant::now();
        } else {
            router.reclaim();
        }
        if last_gc.elapsed() >= Duration::from_secs(1) {
            // Every object now and then; those deleted in the foreground
            // each second.
            gc_passes += 1;
            objects.finish_foreground_deletions(gc_passes % 60 == 1);
            objects.finish_namespace_deletions(SystemTime::now());
            last_gc = Instant::now();
        }
        if last_prune.elapsed() >= Duration::from_secs(60) {
            events::prune(&objects, SystemTime::now(), events::EVENT_TTL);
            runtime.release_orphan_leases(|| {
                objects
                    .scan::<MetadataOnly>(kinds::of::<k8s_openapi::api::core::v1::Pod>(), None)
                    .into_iter()
                    .filter_map(|p| p.metadata.uid)
                    .collect()
            });
            last_prune = Instant::now();
        }
        manager.wait(next, Duration::from_millis(50));
    }
    tracing::info!("stopping");
    if let Some(steering) = &steering {
        if let Err(e) = steering.remove() {
            tracing::warn!("cannot remove the edge's tc filters: {e}");
        }
    }
    sigchld_handle.close();
    let _ = reaper.join();
    api.stop();
    ingress.stop();
    dns.stop();
    let _ = std::fs::remove_file(&config.socket);
    drop(manager);
    if !runtime.wait_reclaimed(Duration::from_secs(30)) {
        tracing::warn!("stopping before the deleted pods' devices, pins and files are all removed; the next start removes the rest");
    }
    // Pods keep running across a restart of the daemon; their namespaces
    // and devices are persistent.
    drop(runtime);
    if reset_requested.load(Ordering::SeqCst) {
        remove_state(&config);
        tracing::info!("reset: pods, namespaces, devices, state and credentials removed");
    }
    Ok(())
}

/// After a reset: the state directory's contents (store, IPAM, logs, PKI, the record of namespaces made, the default Secrets key),
/// the directory itself if nothing else is in it, and the admin kubeconfig.
fn remove_state(config: &DaemonConfig) {
    for sub in ["store", "ipam", "logs", "pki", "netns", "volumes"] {
        let p = config.state_dir.join(sub);
        if p.exists() {
            if let Err(e) = std::fs::remove_dir_all(&p) {
                tracing::warn!(path = %p.display(), "reset: cannot remove: {e}");
            }
        }
    }
    // IPAM states found damaged at a start and kept for the operator.
    if let Ok(dir) = std::fs::read_dir(&config.state_dir) {
        for e in dir.flatten() {
            if e.file_name().to_string_lossy().starts_with("ipam.damaged-") {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    // The Secrets' key goes with the store it encrypted; one the operator
    // keeps elsewhere (`encryption-key-file`) is theirs.
    if config.encryption_key_file.is_none() {
        let _ = std::fs::remove_file(config.encryption_key_path());
    }
    let _ = std::fs::remove_dir(&config.state_dir);
    let _ = std::fs::remove_file(&config.admin_kubeconfig);
}
