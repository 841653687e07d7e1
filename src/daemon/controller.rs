//! The daemon's control plane: pods, deployments, statefulsets and
//! services, kept on disk, reconciled by a supervisor loop and published to
//! the fast path.
//!
//! One control-plane lock guards the objects; it is never taken by the
//! packet workers, which see changes only through router snapshots.
//!
//! A pod's life: an address from IPAM, a network namespace, a persistent
//! TUN device `eth0` created inside it and configured there (address /32,
//! `lo` up, `default dev eth0`, MTU), its descriptor handed to a worker,
//! then its process. When the process exits, the pod's endpoints leave the
//! fast path at once and their flows are reset; a deployment's pod is
//! replaced by a new pod with a new address, a statefulset's by one with
//! the same name and address, and a standalone pod restarts in place or
//! ends, as its restart policy says.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::config::DaemonConfig;
use super::dataplane::Dataplane;
use super::runtime::configure_eth0;
use crate::api::{
    ApiError, ApiHandler, ConntrackEntry, Deployment, DeploymentSpec, FlowTuple, NatBackend,
    NatRule, Pod, PodPhase, PodSpec, Protocol, ResetSummary, RestartPolicy, Scale, Service,
    ServiceSpec, SessionAffinity, StatefulSet, StatefulSetSpec,
};
use crate::control::ipam::{AllocateRequest, Families, Ipam, OwnerKey};
use crate::packet::conntrack::{proto, EntryKind};
use crate::packet::router::FlowSelector;
use crate::packet::service::{Backend, Frontend, PoolId, PoolSpec, DEFAULT_AFFINITY_TIMEOUT};
use crate::packet::{Link, PodAddrs, PodId};
use crate::sys::netns::{self, NetNs};
use crate::sys::process::{self, Signal};
use crate::sys::{
    link,
    tun::{Tun, TunOptions},
};

/// What owns a pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name")]
enum Owner {
    Deployment(String),
    StatefulSet(String),
}

impl Owner {
    fn name(&self) -> &str {
        match self {
            Owner::Deployment(n) | Owner::StatefulSet(n) => n,
        }
    }
}

/// A pod as kept on disk.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct PodRecord {
    spec: PodSpec,
    uid: String,
    owner: Option<Owner>,
    ip: Option<Ipv4Addr>,
    ipv6: Option<Ipv6Addr>,
    /// The router's slot for the pod's link while its network is up.
    pod_id: Option<u32>,
    phase: PodPhase,
    restarts: u32,
    pid: Option<u32>,
    netns: String,
    /// Whether podnet created the namespace (and removes it).
    netns_owned: bool,
    created: u64,
    message: Option<String>,
    /// Unix ms when deletion began (SIGTERM sent).
    terminating_since: Option<u64>,
    /// Unix ms at which a standalone pod's process is started again.
    restart_at: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct ServiceRecord {
    spec: ServiceSpec,
    cluster_ip: Ipv4Addr,
    /// One fast-path pool per port, in `spec.ports` order.
    pools: Vec<u32>,
    created: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct DeploymentRecord {
    spec: DeploymentSpec,
    created: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct StatefulSetRecord {
    spec: StatefulSetSpec,
    created: u64,
}

/// Everything the daemon keeps across restarts (IPAM keeps its own store).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Objects {
    pods: BTreeMap<String, PodRecord>,
    deployments: BTreeMap<String, DeploymentRecord>,
    statefulsets: BTreeMap<String, StatefulSetRecord>,
    services: BTreeMap<String, ServiceRecord>,
    next_pool: u32,
}

/// What exists only while the daemon runs.
#[derive(Default)]
struct Runtime {
    tun: Option<Arc<Tun>>,
    child: Option<Child>,
}

struct Inner {
    objects: Objects,
    ipam: Ipam,
    runtime: HashMap<String, Runtime>,
    /// Backends each pool had at the last sync, to find those that left.
    published: HashMap<u32, Vec<Backend>>,
    dirty: bool,
    /// Pods or services changed since the fast path was last told.
    changed: bool,
    /// The pool specs last published, to publish again only on a change.
    published_specs: Vec<PoolSpec>,
}

impl Inner {
    /// Records a change: to be saved, and to be published to the fast path.
    fn mark(&mut self) {
        self.dirty = true;
        self.changed = true;
    }
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The state directory is unusable.
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
}

/// The control plane. Implements the API.
pub struct Controller {
    config: DaemonConfig,
    dataplane: Dataplane,
    inner: Mutex<Inner>,
    shutdown: Arc<AtomicBool>,
    reset_requested: AtomicBool,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn random_suffix(len: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..len)
        .map(|_| ALPHABET[fastrand::usize(..ALPHABET.len())] as char)
        .collect()
}

fn objects_path(dir: &Path) -> PathBuf {
    dir.join("objects.json")
}

/// Writes `data` to `path` durably: new file, fsync, rename, fsync of the
/// directory.
fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("state")
    ));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

fn labels_match(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn protocol_number(p: Protocol) -> u8 {
    match p {
        Protocol::TCP => proto::TCP,
        Protocol::UDP => proto::UDP,
    }
}

impl Controller {
    /// Opens the state, creates nothing yet.
    pub fn open(
        config: DaemonConfig,
        dataplane: Dataplane,
        shutdown: Arc<AtomicBool>,
    ) -> Result<Controller, StartError> {
        let state_err = |message: String| StartError::State {
            path: config.state_dir.clone(),
            message,
        };
        fs::create_dir_all(config.state_dir.join("logs"))
            .map_err(|e| state_err(format!("cannot create it: {e}")))?;
        let path = objects_path(&config.state_dir);
        let objects = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StartError::State {
                path: path.clone(),
                message: format!(
                    "corrupt ({e}); move it away to start without its pods and services"
                ),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Objects::default(),
            Err(e) => return Err(state_err(format!("cannot read {}: {e}", path.display()))),
        };
        let store = crate::control::ipam::FileStore::open(&config.state_dir)
            .map_err(|e| StartError::Ipam(e.to_string()))?;
        let ipam = Ipam::open(
            Box::new(store),
            crate::control::ipam::IpamConfig {
                subnet_v4: Some(config.node_subnet),
                subnet_v6: config.node_subnet_v6,
                quarantine: Duration::from_secs(config.ip_quarantine_secs),
            },
        )
        .map_err(|e| StartError::Ipam(e.to_string()))?;
        Ok(Controller {
            config,
            dataplane,
            inner: Mutex::new(Inner {
                objects,
                ipam,
                runtime: HashMap::new(),
                published: HashMap::new(),
                dirty: false,
                changed: true,
                published_specs: Vec::new(),
            }),
            shutdown,
            reset_requested: AtomicBool::new(false),
        })
    }

    /// The data plane.
    pub fn dataplane(&self) -> &Dataplane {
        &self.dataplane
    }

    /// How a pod's `eth0` is opened, when created and when reattached
    /// after a restart (the same flags both times).
    fn eth0_options(&self) -> TunOptions {
        TunOptions {
            persistent: true,
            offload: self.config.offload,
        }
    }

    /// Whether `podnet reset` asked for everything to be removed.
    pub fn reset_requested(&self) -> bool {
        self.reset_requested.load(Ordering::Relaxed)
    }

    /// Finds the pods and services of a previous run again: reattaches to
    /// the persistent TUN devices of pods that are still alive, and treats
    /// the others as exited.
    pub fn recover(&self) {
        let mut inner = self.inner.lock();
        let names: Vec<String> = inner.objects.pods.keys().cloned().collect();
        for name in names {
            let Some(rec) = inner.objects.pods.get(&name).cloned() else {
                continue;
            };
            if rec.pod_id.is_none() {
                continue;
            }
            let attached = NetNs::open_path(Path::new(&rec.netns))
                .map_err(|e| e.to_string())
                .and_then(|ns| {
                    let (mtu, ip, v6) = (self.config.mtu, rec.ip, rec.ipv6);
                    let options = self.eth0_options();
                    ns.run(move || -> Result<Tun, String> {
                        let tun = Tun::open("eth0", options).map_err(|e| e.to_string())?;
                        // Idempotent: puts back whatever someone removed
                        // while the daemon was away.
                        if let Some(ip) = ip {
                            configure_eth0(mtu, ip, v6).map_err(|e| e.to_string())?;
                        }
                        Ok(tun)
                    })
                    .map_err(|e| e.to_string())?
                });
            match attached {
                Ok(tun) => {
                    let _ = tun.set_nonblocking(true);
                    let tun = Arc::new(tun);
                    self.dataplane
                        .add(Link::Pod(PodId(rec.pod_id.unwrap_or(0))), tun.clone());
                    inner.runtime.entry(name.clone()).or_default().tun = Some(tun);
                    tracing::info!(pod = %name, "reattached");
                }
                Err(e) => {
                    tracing::warn!(pod = %name, "network lost across the restart: {e}");
                    if let Some(r) = inner.objects.pods.get_mut(&name) {
                        r.message = Some(format!("network lost across a daemon restart: {e}"));
                        r.pid = None;
                    }
                    self.teardown_network(&mut inner, &name);
                    self.pod_exited(&mut inner, &name, None);
                }
            }
        }
        self.sync_router(&mut inner);
        inner.mark();
        self.save(&mut inner);
    }

    // ---- persistence ----------------------------------------------------

    fn save(&self, inner: &mut Inner) {
        if !inner.dirty {
            return;
        }
        match serde_json::to_vec_pretty(&inner.objects) {
            Ok(bytes) => {
                if let Err(e) = write_atomic(&objects_path(&self.config.state_dir), &bytes) {
                    tracing::error!("cannot save state: {e}");
                    return;
                }
                inner.dirty = false;
            }
            Err(e) => tracing::error!("cannot encode state: {e}"),
        }
    }

    // ---- pods -------------------------------------------------------------

    fn log_path(&self, name: &str) -> PathBuf {
        self.config
            .state_dir
            .join("logs")
            .join(format!("{name}.log"))
    }

    /// Allocates the address, builds the namespace and the TUN link, and
    /// registers the pod with the data plane. On error everything done so
    /// far is undone.
    fn setup_network(&self, inner: &mut Inner, name: &str) -> Result<(), String> {
        let rec = inner
            .objects
            .pods
            .get(name)
            .cloned()
            .ok_or("pod vanished")?;
        let mut req = AllocateRequest::new(rec.uid.clone()).families(Families::Configured);
        if let Some(Owner::StatefulSet(_)) = &rec.owner {
            req = req.identity(format!("statefulset/{name}"));
        }
        let alloc = inner
            .ipam
            .allocate(req, SystemTime::now())
            .map_err(|e| format!("no address: {e}"))?;
        let undo_ip = |inner: &mut Inner| {
            let _ = inner
                .ipam
                .release(&OwnerKey::from(rec.uid.clone()), SystemTime::now());
        };
        let Some(ip) = alloc.v4 else {
            undo_ip(inner);
            return Err("IPAM returned no IPv4 address".into());
        };
        let (ns, owned) = if rec.spec.netns.is_some() {
            match NetNs::open_path(Path::new(&rec.netns)) {
                Ok(ns) => (ns, false),
                Err(e) => {
                    undo_ip(inner);
                    return Err(e.to_string());
                }
            }
        } else {
            // A namespace left by a crash before it was recorded is ours.
            let _ = netns::remove(name);
            match NetNs::create(name) {
                Ok(ns) => (ns, true),
                Err(e) => {
                    undo_ip(inner);
                    return Err(e.to_string());
                }
            }
        };
        let mtu = self.config.mtu;
        let v6 = alloc.v6;
        let options = self.eth0_options();
        let configured = ns.run(move || -> Result<Tun, String> {
            let tun = Tun::open("eth0", options).map_err(|e| e.to_string())?;
            if let Err(e) = configure_eth0(mtu, ip, v6) {
                let _ = tun.set_persistent(false);
                return Err(e.to_string());
            }
            Ok(tun)
        });
        let tun = match configured.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok(t) => t,
            Err(e) => {
                if owned {
                    let _ = netns::remove(name);
                }
                undo_ip(inner);
                return Err(format!("cannot set up eth0: {e}"));
            }
        };
        let _ = tun.set_nonblocking(true);
        let used: HashSet<u32> = inner
            .objects
            .pods
            .values()
            .filter_map(|p| p.pod_id)
            .collect();
        let pod_id = (1..).find(|i| !used.contains(i)).unwrap_or(u32::MAX - 1);
        let tun = Arc::new(tun);
        if let Some(r) = inner.objects.pods.get_mut(name) {
            r.ip = Some(ip);
            r.ipv6 = v6;
            r.pod_id = Some(pod_id);
            r.netns = ns.path().display().to_string();
            r.netns_owned = owned;
        }
        inner.runtime.entry(name.to_string()).or_default().tun = Some(tun.clone());
        self.sync_router(inner);
        self.dataplane.add(Link::Pod(PodId(pod_id)), tun);
        inner.mark();
        Ok(())
    }

    /// Undoes `setup_network`: flows of the pod as a client are removed, its
    /// device and namespace deleted, its address released.
    fn teardown_network(&self, inner: &mut Inner, name: &str) {
        let Some(rec) = inner.objects.pods.get(name).cloned() else {
            return;
        };
        if let Some(ip) = rec.ip {
            let router = self.dataplane.router();
            router.reset_flows(FlowSelector::Client(IpAddr::V4(ip)), &mut |link, p| {
                self.dataplane.send_packet(link, p)
            });
        }
        if let Some(id) = rec.pod_id {
            self.dataplane.remove(Link::Pod(PodId(id)));
        }
        if let Some(rt) = inner.runtime.get_mut(name) {
            if let Some(tun) = rt.tun.take() {
                let _ = tun.set_persistent(false);
            }
        }
        if rec.pod_id.is_some() && !rec.netns_owned {
            // An attached namespace stays; its eth0 goes.
            if let Ok(ns) = NetNs::open_path(Path::new(&rec.netns)) {
                let _ = ns.run(|| link::delete_link("eth0"));
            }
        }
        if rec.netns_owned {
            if let Err(e) = netns::remove(name) {
                tracing::warn!(pod = %name, "cannot remove namespace: {e}");
            }
        }
        let _ = inner
            .ipam
            .release(&OwnerKey::from(rec.uid.clone()), SystemTime::now());
        if let Some(r) = inner.objects.pods.get_mut(name) {
            r.ip = None;
            r.ipv6 = None;
            r.pod_id = None;
            r.netns_owned = false;
        }
        self.sync_router(inner);
        inner.mark();
    }

    /// Starts (or restarts) the pod's process.
    fn start_process(&self, inner: &mut Inner, name: &str) -> Result<(), String> {
        let rec = inner
            .objects
            .pods
            .get(name)
            .cloned()
            .ok_or("pod vanished")?;
        if rec.spec.command.is_empty() {
            if let Some(r) = inner.objects.pods.get_mut(name) {
                r.phase = PodPhase::Running;
            }
            return Ok(());
        }
        let ns = NetNs::open_path(Path::new(&rec.netns)).map_err(|e| e.to_string())?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(name))
            .map_err(|e| format!("cannot open the log: {e}"))?;
        let mut env = vec![("POD_NAME".to_string(), name.to_string())];
        if let Some(ip) = rec.ip {
            env.push(("POD_IP".to_string(), ip.to_string()));
        }
        if let Some(ip) = rec.ipv6 {
            env.push(("POD_IPV6".to_string(), ip.to_string()));
        }
        let child =
            process::spawn_in(&ns, &rec.spec.command, &env, log).map_err(|e| e.to_string())?;
        if let Some(r) = inner.objects.pods.get_mut(name) {
            r.pid = Some(child.id());
            r.phase = PodPhase::Running;
            r.restart_at = None;
            r.message = None;
        }
        inner.runtime.entry(name.to_string()).or_default().child = Some(child);
        inner.mark();
        Ok(())
    }

    /// Creates a pod record and brings it up.
    fn create_pod_inner(
        &self,
        inner: &mut Inner,
        spec: PodSpec,
        owner: Option<Owner>,
    ) -> Result<Pod, ApiError> {
        if inner.objects.pods.contains_key(&spec.name) {
            return Err(ApiError::conflict(format!(
                "pod {:?} already exists",
                spec.name
            )));
        }
        if spec.netns.is_none() && Path::new(netns::NETNS_RUN_DIR).join(&spec.name).exists() {
            return Err(ApiError::conflict(format!(
                "a network namespace named {:?} already exists on this host; choose another pod name or remove it (ip netns del {})",
                spec.name, spec.name
            )));
        }
        let name = spec.name.clone();
        let rec = PodRecord {
            netns: spec
                .netns
                .clone()
                .unwrap_or_else(|| format!("{}/{}", netns::NETNS_RUN_DIR, name)),
            spec,
            uid: format!("{:016x}", fastrand::u64(..)),
            owner,
            ip: None,
            ipv6: None,
            pod_id: None,
            phase: PodPhase::Pending,
            restarts: 0,
            pid: None,
            netns_owned: false,
            created: unix_ms() / 1000,
            message: None,
            terminating_since: None,
            restart_at: None,
        };
        inner.objects.pods.insert(name.clone(), rec);
        inner.mark();
        if let Err(e) = self.setup_network(inner, &name) {
            inner.objects.pods.remove(&name);
            return Err(if e.contains("no address") {
                ApiError::new(503, format!("cannot create pod {name:?}: {e}"))
            } else {
                ApiError::internal(format!("cannot create pod {name:?}: {e}"))
            });
        }
        if let Err(e) = self.start_process(inner, &name) {
            self.teardown_network(inner, &name);
            inner.objects.pods.remove(&name);
            return Err(ApiError::bad_request(format!(
                "cannot start pod {name:?}: {e}"
            )));
        }
        self.sync_endpoints(inner);
        self.save(inner);
        tracing::info!(pod = %name, "created");
        Ok(self.pod_view(inner, &name).expect("just created"))
    }

    /// Begins deleting a pod: SIGTERM to its process group, endpoints
    /// marked terminating. The supervisor finishes it.
    fn begin_delete(&self, inner: &mut Inner, name: &str) {
        let Some(rec) = inner.objects.pods.get_mut(name) else {
            return;
        };
        if rec.terminating_since.is_some() {
            return;
        }
        rec.terminating_since = Some(unix_ms());
        let pid = rec.pid;
        inner.mark();
        match pid {
            Some(pid) => {
                let _ = process::kill_group(pid, Signal::SIGTERM);
            }
            None => self.finish_delete(inner, name),
        }
    }

    /// Removes a pod entirely.
    fn finish_delete(&self, inner: &mut Inner, name: &str) {
        if let Some(pid) = inner.objects.pods.get(name).and_then(|r| r.pid) {
            let _ = process::kill_group(pid, Signal::SIGKILL);
        }
        if let Some(mut rt) = inner.runtime.remove(name) {
            if let Some(mut child) = rt.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            inner.runtime.insert(
                name.to_string(),
                Runtime {
                    tun: rt.tun,
                    child: None,
                },
            );
        }
        self.teardown_network(inner, name);
        inner.runtime.remove(name);
        if let Some(rec) = inner.objects.pods.remove(name) {
            if let Some(Owner::StatefulSet(set)) = &rec.owner {
                // A statefulset pod scaled away (or whose set is gone)
                // gives up its sticky address.
                let keep = inner
                    .objects
                    .statefulsets
                    .get(set)
                    .is_some_and(|s| ordinal(name, set).is_some_and(|o| o < s.spec.replicas));
                if !keep {
                    let _ = inner.ipam.release_identity(&format!("statefulset/{name}"));
                }
            }
        }
        let _ = fs::remove_file(self.log_path(name));
        inner.mark();
        tracing::info!(pod = %name, "deleted");
    }

    /// Handles a pod whose process ended (`code` None: killed by a signal
    /// or unknown).
    fn pod_exited(&self, inner: &mut Inner, name: &str, code: Option<i32>) {
        let Some(rec) = inner.objects.pods.get_mut(name) else {
            return;
        };
        rec.pid = None;
        inner.mark();
        if let Some(rt) = inner.runtime.get_mut(name) {
            rt.child = None;
        }
        let rec = inner.objects.pods.get(name).cloned().expect("present");
        tracing::info!(pod = %name, ?code, "process exited");
        if rec.terminating_since.is_some() {
            self.finish_delete(inner, name);
            return;
        }
        if rec.owner.is_some() {
            // Replaced by its deployment or statefulset.
            self.finish_delete(inner, name);
            return;
        }
        let failed = code != Some(0);
        let restart = match rec.spec.restart_policy {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => failed,
            RestartPolicy::Never => false,
        };
        let how = match code {
            Some(c) => format!("process exited with code {c}"),
            None => "process was killed by a signal".to_string(),
        };
        let r = inner.objects.pods.get_mut(name).expect("present");
        if restart && r.pod_id.is_some() {
            r.restarts += 1;
            r.phase = PodPhase::Pending;
            let backoff = 100u64 << r.restarts.min(7);
            r.restart_at = Some(unix_ms() + backoff.min(10_000));
            r.message = Some(format!("{how}; restarting (back-off)"));
        } else {
            r.phase = if failed {
                PodPhase::Failed
            } else {
                PodPhase::Succeeded
            };
            r.message = Some(how);
            self.teardown_network(inner, name);
        }
    }

    fn pod_view(&self, inner: &Inner, name: &str) -> Option<Pod> {
        let r = inner.objects.pods.get(name)?;
        Some(Pod {
            name: name.to_string(),
            uid: r.uid.clone(),
            ip: r.ip.map(|i| i.to_string()),
            ipv6: r.ipv6.map(|i| i.to_string()),
            phase: r.phase,
            labels: r.spec.labels.clone(),
            restarts: r.restarts,
            restart_policy: r.spec.restart_policy,
            command: r.spec.command.clone(),
            netns: r.netns.clone(),
            pid: r.pid,
            owner: r.owner.as_ref().map(|o| o.name().to_string()),
            message: if r.terminating_since.is_some() {
                Some("terminating".to_string())
            } else {
                r.message.clone()
            },
            created: Some(r.created),
        })
    }

    // ---- publishing to the fast path ----------------------------------

    /// Publishes the pod table.
    fn sync_router(&self, inner: &mut Inner) {
        let pods: Vec<(PodId, PodAddrs)> = inner
            .objects
            .pods
            .values()
            .filter_map(|r| {
                Some((
                    PodId(r.pod_id?),
                    PodAddrs {
                        v4: r.ip,
                        v6: r.ipv6,
                    },
                ))
            })
            .collect();
        if let Err(e) = self.dataplane.router().set_pods(&pods) {
            tracing::error!("cannot publish pods: {e}");
        }
    }

    /// Publishes services and their endpoints; resets the flows of backends
    /// that left.
    fn sync_endpoints(&self, inner: &mut Inner) {
        let router = self.dataplane.router().clone();
        let specs: Vec<PoolSpec> = inner
            .objects
            .services
            .values()
            .flat_map(|s| {
                s.spec
                    .ports
                    .iter()
                    .zip(&s.pools)
                    .map(move |(p, pool)| PoolSpec {
                        id: PoolId(*pool),
                        frontends: vec![Frontend {
                            addr: IpAddr::V4(s.cluster_ip),
                            port: p.port,
                            protocol: protocol_number(p.protocol),
                        }],
                        session_affinity: match s.spec.session_affinity {
                            SessionAffinity::ClientIP => Some(DEFAULT_AFFINITY_TIMEOUT),
                            SessionAffinity::None => None,
                        },
                    })
            })
            .collect();
        inner.changed = false;
        let result = if specs == inner.published_specs {
            Ok(Vec::new())
        } else {
            router.set_services(&specs)
        };
        if result.is_ok() {
            inner.published_specs = specs;
        }
        match result {
            Ok(gone) => {
                for pool in gone {
                    inner.published.remove(&pool.0);
                    router.reset_flows(FlowSelector::Pool(pool), &mut |l, p| {
                        self.dataplane.send_packet(l, p)
                    });
                }
            }
            Err(e) => tracing::error!("cannot publish services: {e}"),
        }
        let mut removed_all = Vec::new();
        for svc in inner.objects.services.values() {
            for (port, pool) in svc.spec.ports.iter().zip(&svc.pools) {
                let mut backends: Vec<Backend> = inner
                    .objects
                    .pods
                    .values()
                    .filter(|p| {
                        p.phase == PodPhase::Running && p.ip.is_some() && p.pod_id.is_some()
                    })
                    .filter(|p| labels_match(&svc.spec.selector, &p.spec.labels))
                    .map(|p| Backend {
                        addr: SocketAddr::new(
                            IpAddr::V4(p.ip.expect("filtered")),
                            port.target_port,
                        ),
                        terminating: p.terminating_since.is_some(),
                    })
                    .collect();
                backends.sort_by_key(|b| b.addr);
                if inner.published.get(pool) == Some(&backends) {
                    continue;
                }
                match router.set_endpoints(PoolId(*pool), &backends) {
                    Ok(change) => removed_all.extend(change.removed),
                    Err(e) => tracing::error!("cannot publish endpoints of {}: {e}", svc.spec.name),
                }
                inner.published.insert(*pool, backends);
            }
        }
        if !removed_all.is_empty() {
            let report = router.reset_flows(FlowSelector::Backends(&removed_all), &mut |l, p| {
                self.dataplane.send_packet(l, p)
            });
            tracing::debug!(?report, "flows of removed endpoints reset");
        }
    }

    // ---- supervision ----------------------------------------------------

    /// One round of supervision: reaps exited processes, finishes
    /// deletions, restarts, reconciles deployments and statefulsets,
    /// publishes and saves. Called every ~100 ms.
    pub fn tick(&self) {
        let mut inner = self.inner.lock();
        let inner = &mut *inner;
        let now = unix_ms();
        let grace = self.config.termination_grace_secs * 1000;
        let names: Vec<String> = inner.objects.pods.keys().cloned().collect();
        for name in &names {
            let Some(rec) = inner.objects.pods.get(name).cloned() else {
                continue;
            };
            // Exited?
            if let Some(pid) = rec.pid {
                let exited = match inner.runtime.get_mut(name).and_then(|r| r.child.as_mut()) {
                    Some(child) => match child.try_wait() {
                        Ok(Some(status)) => Some(status.code()),
                        Ok(None) => None,
                        Err(_) => Some(None),
                    },
                    // Not our child (the daemon restarted): watch the pid.
                    None => (!process::is_alive(pid)).then_some(None),
                };
                if let Some(code) = exited {
                    self.pod_exited(inner, name, code);
                    continue;
                }
                if let Some(since) = rec.terminating_since {
                    if now.saturating_sub(since) > grace {
                        let _ = process::kill_group(pid, Signal::SIGKILL);
                    }
                }
                continue;
            }
            if rec.terminating_since.is_some() {
                self.finish_delete(inner, name);
                continue;
            }
            if let Some(at) = rec.restart_at {
                if at <= now {
                    if let Err(e) = self.start_process(inner, name) {
                        if let Some(r) = inner.objects.pods.get_mut(name) {
                            r.restarts += 1;
                            r.restart_at = Some(now + 10_000);
                            r.message = Some(format!("cannot restart: {e}"));
                        }
                    }
                }
            }
        }
        self.reconcile_deployments(inner);
        self.reconcile_statefulsets(inner);
        if inner.changed {
            self.sync_endpoints(inner);
        }
        self.save(inner);
    }

    fn reconcile_deployments(&self, inner: &mut Inner) {
        let deployments: Vec<DeploymentRecord> =
            inner.objects.deployments.values().cloned().collect();
        for d in deployments {
            let owner = Owner::Deployment(d.spec.name.clone());
            let mut live: Vec<(u64, String)> = inner
                .objects
                .pods
                .iter()
                .filter(|(_, p)| p.owner.as_ref() == Some(&owner) && p.terminating_since.is_none())
                .map(|(n, p)| (p.created, n.clone()))
                .collect();
            let want = d.spec.replicas as usize;
            while live.len() < want {
                let name = loop {
                    let n = format!("{}-{}", d.spec.name, random_suffix(5));
                    if !inner.objects.pods.contains_key(&n) {
                        break n;
                    }
                };
                let spec = PodSpec {
                    name: name.clone(),
                    labels: d.spec.labels.clone(),
                    restart_policy: RestartPolicy::Always,
                    command: d.spec.command.clone(),
                    netns: None,
                };
                match self.create_pod_inner(inner, spec, Some(owner.clone())) {
                    Ok(_) => live.push((unix_ms(), name)),
                    Err(e) => {
                        tracing::warn!(deployment = %d.spec.name, "cannot create a replica: {}", e.message);
                        break;
                    }
                }
            }
            if live.len() > want {
                // Newest first, as Kubernetes scales down.
                live.sort();
                for (_, name) in live.split_off(want) {
                    self.begin_delete(inner, &name);
                }
            }
        }
    }

    fn reconcile_statefulsets(&self, inner: &mut Inner) {
        let sets: Vec<StatefulSetRecord> = inner.objects.statefulsets.values().cloned().collect();
        for s in sets {
            let owner = Owner::StatefulSet(s.spec.name.clone());
            // Ordered creation: pod i only once 0..i are running.
            for i in 0..s.spec.replicas {
                let name = format!("{}-{i}", s.spec.name);
                match inner.objects.pods.get(&name) {
                    Some(p) if p.phase == PodPhase::Running && p.terminating_since.is_none() => {
                        continue
                    }
                    Some(_) => break,
                    None => {
                        let spec = PodSpec {
                            name: name.clone(),
                            labels: s.spec.labels.clone(),
                            restart_policy: RestartPolicy::Always,
                            command: s.spec.command.clone(),
                            netns: None,
                        };
                        if let Err(e) = self.create_pod_inner(inner, spec, Some(owner.clone())) {
                            tracing::warn!(statefulset = %s.spec.name, "cannot create {name}: {}", e.message);
                        }
                        break;
                    }
                }
            }
            // Ordered removal: the highest ordinal beyond the replicas first.
            let mut extra: Vec<(u32, String)> = inner
                .objects
                .pods
                .iter()
                .filter(|(_, p)| p.owner.as_ref() == Some(&owner))
                .filter_map(|(n, _)| ordinal(n, &s.spec.name).map(|o| (o, n.clone())))
                .filter(|(o, _)| *o >= s.spec.replicas)
                .collect();
            extra.sort();
            if let Some((_, name)) = extra.pop() {
                self.begin_delete(inner, &name);
            }
        }
    }

    /// Stops the supervisor's pods for `podnet reset` and removes what
    /// podnet made; returns the summary.
    fn reset_all(&self, inner: &mut Inner) -> ResetSummary {
        let mut summary = ResetSummary {
            pods: inner.objects.pods.len() as u32,
            deployments: inner.objects.deployments.len() as u32,
            statefulsets: inner.objects.statefulsets.len() as u32,
            services: inner.objects.services.len() as u32,
            warnings: Vec::new(),
        };
        inner.objects.deployments.clear();
        inner.objects.statefulsets.clear();
        let names: Vec<String> = inner.objects.pods.keys().cloned().collect();
        for name in names {
            if let Some(pid) = inner.objects.pods.get(&name).and_then(|p| p.pid) {
                let _ = process::kill_group(pid, Signal::SIGKILL);
            }
            self.finish_delete(inner, &name);
            if Path::new(netns::NETNS_RUN_DIR).join(&name).exists() {
                summary
                    .warnings
                    .push(format!("namespace {name} could not be removed"));
            }
        }
        for (name, _) in inner.ipam.identities() {
            let _ = inner.ipam.release_identity(&name);
        }
        inner.objects.services.clear();
        self.sync_endpoints(inner);
        inner.mark();
        self.save(inner);
        summary
    }

    /// Saves and stops supervising (pods stay up).
    pub fn shutdown(&self) {
        let mut inner = self.inner.lock();
        inner.mark();
        self.save(&mut inner);
        // Drop our handles on the children without killing them: pods
        // outlive the daemon.
        for rt in inner.runtime.values_mut() {
            rt.child = None;
        }
    }

    fn allocate_cluster_ip(
        &self,
        inner: &Inner,
        requested: Option<&str>,
    ) -> Result<Ipv4Addr, ApiError> {
        let used: HashSet<Ipv4Addr> = inner
            .objects
            .services
            .values()
            .map(|s| s.cluster_ip)
            .collect();
        let cidr = self.config.service_cidr;
        if let Some(text) = requested {
            let ip: Ipv4Addr = text.parse().map_err(|_| {
                ApiError::bad_request(format!("clusterIP {text:?} is not an IPv4 address"))
            })?;
            if !cidr.contains(&ip) || ip == cidr.network() || ip == cidr.broadcast() {
                return Err(ApiError::bad_request(format!(
                    "clusterIP {ip} is outside the service CIDR {cidr} (or is its network/broadcast address)"
                )));
            }
            if used.contains(&ip) {
                return Err(ApiError::conflict(format!(
                    "clusterIP {ip} is already used by another service"
                )));
            }
            return Ok(ip);
        }
        // From .10 up, as kubeadm clusters number theirs; .1 and .10 are
        // often taken by convention, but any free address is valid.
        let base = cidr.network().to_bits();
        let size = 1u64 << (32 - cidr.prefix_len());
        (10..size - 1)
            .map(|i| Ipv4Addr::from(base + i as u32))
            .find(|ip| !used.contains(ip))
            .ok_or_else(|| {
                ApiError::new(503, format!("service CIDR {cidr} has no free cluster IP"))
            })
    }

    fn service_view(&self, inner: &Inner, rec: &ServiceRecord) -> Service {
        let mut endpoints = Vec::new();
        for (port, pool) in rec.spec.ports.iter().zip(&rec.pools) {
            let _ = port;
            if let Some(list) = inner.published.get(pool) {
                endpoints.extend(
                    list.iter()
                        .filter(|b| !b.terminating)
                        .map(|b| b.addr.to_string()),
                );
            }
        }
        endpoints.sort();
        endpoints.dedup();
        Service {
            name: rec.spec.name.clone(),
            cluster_ip: rec.cluster_ip.to_string(),
            ports: rec.spec.ports.clone(),
            selector: rec.spec.selector.clone(),
            session_affinity: rec.spec.session_affinity,
            endpoints,
            created: Some(rec.created),
        }
    }

    /// The pods `owner` owns, and how many of them are running and not
    /// being deleted.
    fn owned_pods<'a>(inner: &'a Inner, owner: &Owner) -> (Vec<&'a PodRecord>, u32) {
        let pods: Vec<&PodRecord> = inner
            .objects
            .pods
            .values()
            .filter(|p| p.owner.as_ref() == Some(owner))
            .collect();
        let ready = pods
            .iter()
            .filter(|p| p.phase == PodPhase::Running && p.terminating_since.is_none())
            .count() as u32;
        (pods, ready)
    }

    fn deployment_view(inner: &Inner, d: &DeploymentRecord) -> Deployment {
        let (pods, ready) = Self::owned_pods(inner, &Owner::Deployment(d.spec.name.clone()));
        Deployment {
            name: d.spec.name.clone(),
            replicas: d.spec.replicas,
            ready,
            labels: d.spec.labels.clone(),
            command: d.spec.command.clone(),
            pods: pods.iter().map(|p| p.spec.name.clone()).collect(),
            created: Some(d.created),
        }
    }

    fn statefulset_view(inner: &Inner, s: &StatefulSetRecord) -> StatefulSet {
        let (mut pods, ready) = Self::owned_pods(inner, &Owner::StatefulSet(s.spec.name.clone()));
        pods.sort_by_key(|p| ordinal(&p.spec.name, &s.spec.name));
        StatefulSet {
            name: s.spec.name.clone(),
            replicas: s.spec.replicas,
            ready,
            service: s.spec.service.clone(),
            labels: s.spec.labels.clone(),
            command: s.spec.command.clone(),
            pods: pods.iter().map(|p| p.spec.name.clone()).collect(),
            created: Some(s.created),
        }
    }
}

/// The ordinal of a statefulset pod name `SET-N`.
fn ordinal(pod: &str, set: &str) -> Option<u32> {
    pod.strip_prefix(set)?.strip_prefix('-')?.parse().ok()
}

/// What deployments and statefulsets have in common for the API: a named
/// record with a replica count, kept in one map of [`Objects`].
trait Workload: Clone {
    /// The API's view of the record.
    type View;
    /// The kind, as the API names it in messages.
    const KIND: &'static str;
    fn records(objects: &Objects) -> &BTreeMap<String, Self>;
    fn records_mut(objects: &mut Objects) -> &mut BTreeMap<String, Self>;
    fn name(&self) -> &str;
    fn replicas(&self) -> u32;
    fn set_replicas(&mut self, replicas: u32);
    fn view(inner: &Inner, record: &Self) -> Self::View;
    /// Names of the pods it owns.
    fn pods(view: &Self::View) -> &[String];
}

impl Workload for DeploymentRecord {
    type View = Deployment;
    const KIND: &'static str = "deployment";
    fn records(o: &Objects) -> &BTreeMap<String, Self> {
        &o.deployments
    }
    fn records_mut(o: &mut Objects) -> &mut BTreeMap<String, Self> {
        &mut o.deployments
    }
    fn name(&self) -> &str {
        &self.spec.name
    }
    fn replicas(&self) -> u32 {
        self.spec.replicas
    }
    fn set_replicas(&mut self, replicas: u32) {
        self.spec.replicas = replicas;
    }
    fn view(inner: &Inner, record: &Self) -> Deployment {
        Controller::deployment_view(inner, record)
    }
    fn pods(view: &Deployment) -> &[String] {
        &view.pods
    }
}

impl Workload for StatefulSetRecord {
    type View = StatefulSet;
    const KIND: &'static str = "statefulset";
    fn records(o: &Objects) -> &BTreeMap<String, Self> {
        &o.statefulsets
    }
    fn records_mut(o: &mut Objects) -> &mut BTreeMap<String, Self> {
        &mut o.statefulsets
    }
    fn name(&self) -> &str {
        &self.spec.name
    }
    fn replicas(&self) -> u32 {
        self.spec.replicas
    }
    fn set_replicas(&mut self, replicas: u32) {
        self.spec.replicas = replicas;
    }
    fn view(inner: &Inner, record: &Self) -> StatefulSet {
        Controller::statefulset_view(inner, record)
    }
    fn pods(view: &StatefulSet) -> &[String] {
        &view.pods
    }
}

impl Controller {
    fn list_workloads<W: Workload>(&self) -> Result<Vec<W::View>, ApiError> {
        let inner = self.inner.lock();
        Ok(W::records(&inner.objects)
            .values()
            .map(|r| W::view(&inner, r))
            .collect())
    }

    fn create_workload<W: Workload>(&self, record: W) -> Result<W::View, ApiError> {
        let mut inner = self.inner.lock();
        let name = record.name().to_string();
        if W::records(&inner.objects).contains_key(&name) {
            return Err(ApiError::conflict(format!(
                "{} {name:?} already exists",
                W::KIND
            )));
        }
        self.check_replicas(&inner, record.replicas())?;
        W::records_mut(&mut inner.objects).insert(name.clone(), record);
        self.settle(&mut inner);
        self.view_workload::<W>(&inner, &name)
    }

    fn get_workload<W: Workload>(&self, name: &str) -> Result<W::View, ApiError> {
        let inner = self.inner.lock();
        self.view_workload::<W>(&inner, name)
    }

    fn view_workload<W: Workload>(&self, inner: &Inner, name: &str) -> Result<W::View, ApiError> {
        W::records(&inner.objects)
            .get(name)
            .map(|r| W::view(inner, r))
            .ok_or_else(|| ApiError::not_found(format!("{} {name:?} not found", W::KIND)))
    }

    fn delete_workload<W: Workload>(&self, name: &str) -> Result<W::View, ApiError> {
        let mut inner = self.inner.lock();
        let record = W::records_mut(&mut inner.objects)
            .remove(name)
            .ok_or_else(|| ApiError::not_found(format!("{} {name:?} not found", W::KIND)))?;
        let view = W::view(&inner, &record);
        for pod in W::pods(&view) {
            self.begin_delete(&mut inner, pod);
        }
        self.settle(&mut inner);
        Ok(view)
    }

    fn scale_workload<W: Workload>(&self, name: &str, scale: Scale) -> Result<W::View, ApiError> {
        let mut inner = self.inner.lock();
        self.check_replicas(&inner, scale.replicas)?;
        W::records_mut(&mut inner.objects)
            .get_mut(name)
            .ok_or_else(|| ApiError::not_found(format!("{} {name:?} not found", W::KIND)))?
            .set_replicas(scale.replicas);
        self.settle(&mut inner);
        self.view_workload::<W>(&inner, name)
    }
}

impl ApiHandler for Controller {
    fn list_pods(&self) -> Result<Vec<Pod>, ApiError> {
        let inner = self.inner.lock();
        Ok(inner
            .objects
            .pods
            .keys()
            .filter_map(|n| self.pod_view(&inner, n))
            .collect())
    }

    fn create_pod(&self, spec: PodSpec) -> Result<Pod, ApiError> {
        if let Some(path) = &spec.netns {
            NetNs::open_path(Path::new(path)).map_err(|e| ApiError::bad_request(e.to_string()))?;
        }
        let mut inner = self.inner.lock();
        self.create_pod_inner(&mut inner, spec, None)
    }

    fn get_pod(&self, name: &str) -> Result<Pod, ApiError> {
        let inner = self.inner.lock();
        self.pod_view(&inner, name)
            .ok_or_else(|| ApiError::not_found(format!("pod {name:?} not found")))
    }

    fn delete_pod(&self, name: &str) -> Result<Pod, ApiError> {
        let mut inner = self.inner.lock();
        let view = self
            .pod_view(&inner, name)
            .ok_or_else(|| ApiError::not_found(format!("pod {name:?} not found")))?;
        self.begin_delete(&mut inner, name);
        self.sync_endpoints(&mut inner);
        self.save(&mut inner);
        Ok(view)
    }

    fn pod_logs(&self, name: &str) -> Result<Vec<u8>, ApiError> {
        {
            let inner = self.inner.lock();
            if !inner.objects.pods.contains_key(name) {
                return Err(ApiError::not_found(format!("pod {name:?} not found")));
            }
        }
        match fs::read(self.log_path(name)) {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(ApiError::internal(format!(
                "cannot read the log of {name:?}: {e}"
            ))),
        }
    }

    fn list_deployments(&self) -> Result<Vec<Deployment>, ApiError> {
        self.list_workloads::<DeploymentRecord>()
    }

    fn create_deployment(&self, spec: DeploymentSpec) -> Result<Deployment, ApiError> {
        self.create_workload(DeploymentRecord {
            spec,
            created: unix_ms() / 1000,
        })
    }

    fn get_deployment(&self, name: &str) -> Result<Deployment, ApiError> {
        self.get_workload::<DeploymentRecord>(name)
    }

    fn delete_deployment(&self, name: &str) -> Result<Deployment, ApiError> {
        self.delete_workload::<DeploymentRecord>(name)
    }

    fn scale_deployment(&self, name: &str, scale: Scale) -> Result<Deployment, ApiError> {
        self.scale_workload::<DeploymentRecord>(name, scale)
    }

    fn list_statefulsets(&self) -> Result<Vec<StatefulSet>, ApiError> {
        self.list_workloads::<StatefulSetRecord>()
    }

    fn create_statefulset(&self, spec: StatefulSetSpec) -> Result<StatefulSet, ApiError> {
        self.create_workload(StatefulSetRecord {
            spec,
            created: unix_ms() / 1000,
        })
    }

    fn get_statefulset(&self, name: &str) -> Result<StatefulSet, ApiError> {
        self.get_workload::<StatefulSetRecord>(name)
    }

    fn delete_statefulset(&self, name: &str) -> Result<StatefulSet, ApiError> {
        self.delete_workload::<StatefulSetRecord>(name)
    }

    fn scale_statefulset(&self, name: &str, scale: Scale) -> Result<StatefulSet, ApiError> {
        self.scale_workload::<StatefulSetRecord>(name, scale)
    }

    fn list_services(&self) -> Result<Vec<Service>, ApiError> {
        let inner = self.inner.lock();
        Ok(inner
            .objects
            .services
            .values()
            .map(|s| self.service_view(&inner, s))
            .collect())
    }

    fn create_service(&self, spec: ServiceSpec) -> Result<Service, ApiError> {
        let mut inner = self.inner.lock();
        if inner.objects.services.contains_key(&spec.name) {
            return Err(ApiError::conflict(format!(
                "service {:?} already exists",
                spec.name
            )));
        }
        if spec.selector.is_empty() {
            return Err(ApiError::bad_request(
                "a service needs a selector (--selector K=V) to find its pods".to_string(),
            ));
        }
        let cluster_ip = self.allocate_cluster_ip(&inner, spec.cluster_ip.as_deref())?;
        let pools: Vec<u32> = (0..spec.ports.len() as u32)
            .map(|i| inner.objects.next_pool + i)
            .collect();
        inner.objects.next_pool += spec.ports.len() as u32;
        let rec = ServiceRecord {
            spec,
            cluster_ip,
            pools,
            created: unix_ms() / 1000,
        };
        let name = rec.spec.name.clone();
        inner.objects.services.insert(name.clone(), rec);
        self.settle(&mut inner);
        let rec = inner
            .objects
            .services
            .get(&name)
            .cloned()
            .expect("inserted");
        Ok(self.service_view(&inner, &rec))
    }

    fn get_service(&self, name: &str) -> Result<Service, ApiError> {
        let inner = self.inner.lock();
        let s = inner
            .objects
            .services
            .get(name)
            .ok_or_else(|| ApiError::not_found(format!("service {name:?} not found")))?;
        Ok(self.service_view(&inner, s))
    }

    fn delete_service(&self, name: &str) -> Result<Service, ApiError> {
        let mut inner = self.inner.lock();
        let s = inner
            .objects
            .services
            .remove(name)
            .ok_or_else(|| ApiError::not_found(format!("service {name:?} not found")))?;
        let view = self.service_view(&inner, &s);
        self.settle(&mut inner);
        Ok(view)
    }

    fn nat_rules(&self) -> Result<Vec<NatRule>, ApiError> {
        let inner = self.inner.lock();
        let router = self.dataplane.router();
        let mut rules = Vec::new();
        for svc in inner.objects.services.values() {
            for (port, pool) in svc.spec.ports.iter().zip(&svc.pools) {
                let backends = router.endpoints(PoolId(*pool)).unwrap_or_default();
                rules.push(NatRule {
                    service: svc.spec.name.clone(),
                    frontend: format!("{}:{}/{}", svc.cluster_ip, port.port, port.protocol),
                    backends: backends
                        .iter()
                        .map(|b| NatBackend {
                            address: b.addr.to_string(),
                            state: if b.terminating {
                                "terminating"
                            } else {
                                "ready"
                            }
                            .to_string(),
                        })
                        .collect(),
                });
            }
        }
        Ok(rules)
    }

    fn conntrack(&self) -> Result<Vec<ConntrackEntry>, ApiError> {
        let now = self.dataplane.now();
        let tuple = |k: &crate::packet::conntrack::FlowKey| FlowTuple {
            src: SocketAddr::new(k.src, k.src_port).to_string(),
            dst: SocketAddr::new(k.dst, k.dst_port).to_string(),
        };
        Ok(self
            .dataplane
            .router()
            .flows()
            .iter()
            .filter(|f| f.original.kind == EntryKind::Flow)
            .map(|f| ConntrackEntry {
                protocol: match f.original.protocol {
                    proto::TCP => "tcp".to_string(),
                    proto::UDP => "udp".to_string(),
                    n => n.to_string(),
                },
                state: f.state.name().to_string(),
                original: tuple(&f.original),
                reply: tuple(&f.reply),
                idle_seconds: now.as_millis().saturating_sub(f.last_seen.as_millis()) / 1000,
            })
            .collect())
    }

    fn reset(&self) -> Result<ResetSummary, ApiError> {
        let mut inner = self.inner.lock();
        let summary = self.reset_all(&mut inner);
        self.reset_requested.store(true, Ordering::Relaxed);
        // The daemon exits after answering and removes its device, routes
        // and state.
        let shutdown = self.shutdown.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            shutdown.store(true, Ordering::Relaxed);
        });
        Ok(summary)
    }
}

impl Controller {
    /// After an API change: reconciles workloads, publishes to the fast path
    /// and saves.
    fn settle(&self, inner: &mut Inner) {
        inner.mark();
        self.reconcile_deployments(inner);
        self.reconcile_statefulsets(inner);
        self.sync_endpoints(inner);
        self.save(inner);
    }

    fn check_replicas(&self, inner: &Inner, replicas: u32) -> Result<(), ApiError> {
        let usable = (1u64 << (32 - self.config.node_subnet.prefix_len())).saturating_sub(3);
        let used = inner
            .objects
            .pods
            .values()
            .filter(|p| p.ip.is_some())
            .count() as u64;
        if u64::from(replicas) > usable {
            return Err(ApiError::bad_request(format!(
                "{replicas} replicas cannot fit in the node subnet {} ({usable} pod addresses, {used} in use)",
                self.config.node_subnet
            )));
        }
        Ok(())
    }
}
