//! The host side of the kubelet: [`HostRuntime`] implements
//! [`PodRuntime`] with network namespaces, TUN devices, IPAM addresses and
//! processes.
//!
//! A pod `NAME` in namespace `NS` lives in the network namespace
//! `/var/run/netns/NS.NAME` (a namespace name has no dot, so the first dot
//! splits the two), with a persistent TUN `eth0` configured there (address
//! /32, `lo` up, `default dev eth0`, MTU) whose descriptor the data plane
//! serves. A StatefulSet's pod takes its address with the IPAM identity
//! `NS/NAME`, so it comes back with the same one. A container's process is
//! the leader of its own process group (signals go to the group); its
//! output is appended to `STATE/logs/NS_NAME_CONTAINER.log`, whose lines
//! the [`LogClock`] times (renamed and removed through it, with their
//! times).
//!
//! Exits are noticed by [`HostRuntime::reap`] (on SIGCHLD) and reported
//! through the `exited` callback, so the kubelet looks at the pod at once.
//! After a daemon restart, pods are taken over as they are: namespace and
//! address kept, `eth0` reattached, and each container process that is
//! still the one its status names (container ID `podnet://PID-START`: pid
//! and start time, so a reused pid is never taken for it) watched through
//! a pidfd. A container whose process is gone is started again by the
//! kubelet (its restart count goes on).

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Container, Pod, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use parking_lot::Mutex;

use super::config::DaemonConfig;
use super::dataplane::{Dataplane, UNPUBLISHED_MAX};
use super::identity;
use super::janitor;
use super::log_clock::LogClock;
use super::publish::ReadyBackends;
use super::reclaim::Reclaimer;
use super::volumes;
use crate::control::ipam::{AllocateRequest, Families, Ipam, OwnerKey};
use crate::control::reconcile::pod::{Allocatable, PodRuntime, ProcessState};
use crate::control::reconcile::pod_volumes::{PodVolume, VolumeData};
use crate::packet::router::FlowSelector;
use crate::packet::{Link, PodAddrs, PodId};
use crate::sys::link;
use crate::sys::mount::{self as sysmount, PodNs};
use crate::sys::netns::{self, NetNs};
use crate::sys::process::{self, Signal};
use crate::sys::tun::{Tun, TunOptions};

/// A container's process: our child, or one adopted after a restart of
/// the daemon (no longer our child: watched through a pidfd, its exit
/// status unknowable).
enum Handle {
    Child(Child),
    Adopted(process::PidFd),
}

struct Process {
    handle: Handle,
    pid: u32,
    /// Start time in clock ticks since boot: with the pid, the process's
    /// identity (the container ID `podnet://PID-START`).
    start_ticks: u64,
    started: SystemTime,
    exit: Option<(i32, SystemTime)>,
    /// A child watched by the [`ExitWatcher`] (a SIGCHLD says only that
    /// some child exited): what it reaped of the child.
    reaped: Option<ReapedExit>,
}

/// A watched child's exit code and time, once the [`ExitWatcher`] has
/// reaped it (off the reconcilers' thread: reaping a process is a fifth of
/// the work of its exit). Held while the child is signalled or waited for
/// by pid, so that the watcher cannot free the pid in between.
type ReapedExit = Arc<Mutex<Option<(i32, SystemTime)>>>;

/// The exit code reported for an adopted process, whose real status only
/// its parent could read: 137, as the kubelet reports a container it lost
/// track of (`ContainerStatusUnknown`).
const UNKNOWN_EXIT: i32 = 137;

impl Process {
    /// Notices an exit; true if the process has exited (now or before).
    fn poll_exit(&mut self) -> bool {
        self.with_reaped(Self::poll_exit_held)
    }

    /// Runs `f` with the [`ReapedExit`] held, so that the watcher cannot
    /// reap the child meanwhile, passing what it holds.
    fn with_reaped<R>(&mut self, f: impl FnOnce(&mut Self, Option<(i32, SystemTime)>) -> R) -> R {
        let slot = self.reaped.clone();
        let held = slot.as_ref().map(|s| s.lock());
        f(self, held.as_deref().copied().flatten())
    }

    /// [`Process::poll_exit`] with the [`ReapedExit`] held by the caller,
    /// which passes what it holds.
    fn poll_exit_held(&mut self, reaped: Option<(i32, SystemTime)>) -> bool {
        if self.exit.is_some() {
            return true;
        }
        if reaped.is_some() {
            self.exit = reaped;
            return true;
        }
        let code = match &mut self.handle {
            Handle::Child(c) => match c.try_wait() {
                Ok(Some(status)) => exit_code(status),
                _ => return false,
            },
            Handle::Adopted(fd) if fd.exited() => UNKNOWN_EXIT,
            Handle::Adopted(_) => return false,
        };
        self.exit = Some((code, SystemTime::now()));
        true
    }

    /// Sends `sig` to the process group, unless the process has exited
    /// (its pid may be someone else's by now).
    fn signal_group(&mut self, sig: Signal) -> Result<(), String> {
        self.with_reaped(|p, reaped| {
            if p.poll_exit_held(reaped) {
                return Ok(());
            }
            // Not reaped, and the watcher cannot reap it meanwhile: the
            // pid is still the child's (a zombie at worst).
            process::kill_group(p.pid, sig).map_err(|e| e.to_string())
        })
    }

    /// SIGKILL to the group, and the child reaped.
    fn kill(&mut self) {
        let _ = self.signal_group(Signal::SIGKILL);
        self.with_reaped(|p, reaped| {
            if let (Handle::Child(c), None) = (&mut p.handle, reaped) {
                let _ = c.wait();
            }
        });
    }

    fn container_id(&self) -> String {
        format!("podnet://{}-{}", self.pid, self.start_ticks)
    }
}

/// Parses a container ID `podnet://PID-START`.
fn parse_container_id(id: &str) -> Option<(u32, u64)> {
    let (pid, start) = id.strip_prefix("podnet://")?.split_once('-')?;
    Some((pid.parse().ok()?, start.parse().ok()?))
}

struct PodEntry {
    uid: String,
    /// `NS.NAME` under /var/run/netns, or the path of an attached namespace.
    netns: String,
    /// The pod was attached to a namespace someone else made
    /// ([`ATTACH_NETNS_ANNOTATION`]): its eth0 is podnet's, the namespace is not.
    attached: bool,
    ip: Ipv4Addr,
    ipv6: Option<Ipv6Addr>,
    id: PodId,
    tun: Arc<Tun>,
    containers: HashMap<String, Process>,
    /// The pod's mount and UTS namespaces (none for an attached pod,
    /// which runs in someone else's sandbox).
    pod_ns: Option<Arc<PodNs>>,
    /// Each volume's source (its directory, or the host path), by name,
    /// as last made by `sync_volumes`.
    volumes: HashMap<String, PathBuf>,
    /// A fingerprint of each files volume's last payload, so an unchanged
    /// one is not compared file by file on every pass.
    payloads: HashMap<String, u64>,
    /// The fast path was seen choosing the pod for new connections after
    /// its deletion: its process may hold connections not yet accepted.
    was_chosen: bool,
    /// When such a pod was first seen drained (see [`DRAIN_SETTLE`]).
    drained_at: Option<std::time::Instant>,
}

/// How long a pod the fast path chose must stay drained before it counts
/// as drained: a SYN a worker had already sent it when the publisher took
/// it out of the choice is then in its socket table (a worker writes a
/// packet within microseconds of choosing its backend).
const DRAIN_SETTLE: Duration = Duration::from_millis(10);

/// A pod annotated with a network namespace path (`/var/run/netns/NAME`,
/// `/proc/PID/ns/net`) joins that namespace instead of getting its own, as a
/// container runtime hands a sandbox to CNI: podnet adds `eth0`, the
/// address and the route there, runs the pod's containers in it, and on
/// deletion removes only `eth0`.
pub const ATTACH_NETNS_ANNOTATION: &str = "podnet.io/netns";

/// The lowest data-plane link id no pod uses.
fn next_pod_id(pods: &HashMap<(String, String), PodEntry>) -> PodId {
    // One of 1..=len+1 is free: a bitmap of those, not a hash set (hashing
    // every pod's id made each install cost microseconds per pod).
    let mut used = vec![false; pods.len() + 2];
    for e in pods.values() {
        if let Some(u) = used.get_mut(e.id.0 as usize) {
            *u = true;
        }
    }
    PodId(
        (1..used.len())
            .find(|&i| !used[i])
            .map_or(u32::MAX - 1, |i| i as u32),
    )
}

impl PodEntry {
    fn open_netns(&self) -> Result<NetNs, netns::NetnsError> {
        if self.attached {
            NetNs::open_path(std::path::Path::new(&self.netns))
        } else {
            NetNs::open(&self.netns)
        }
    }
}

/// Called with a pod's namespace and name when one of its processes exits.
pub type ExitNotice = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// Pods on this host.
pub struct HostRuntime {
    config: DaemonConfig,
    node_name: String,
    dataplane: Arc<Dataplane>,
    ipam: Mutex<Ipam>,
    pods: Mutex<HashMap<(String, String), PodEntry>>,
    exited: ExitNotice,
    /// Set by a reset: nothing new is made.
    resetting: std::sync::atomic::AtomicBool,
    /// Exits of adopted processes (not our children: no SIGCHLD).
    watcher: ExitWatcher,
    /// Removes what deleted pods leave (devices, pins, directories) off
    /// the reconcilers' thread.
    reclaim: Reclaimer,
    /// Pods removed since the fast path's pod table was last published
    /// (see [`HostRuntime::publish_pods_soon`]).
    pods_unpublished: std::sync::atomic::AtomicUsize,
    /// Pods with a child the [`ExitWatcher`] does not watch (its pidfd
    /// could not be opened): what [`HostRuntime::reap`] looks at.
    unwatched: Mutex<std::collections::HashSet<(String, String)>>,
    /// The container logs under `STATE/logs`, by pod: read from the
    /// directory on first use and kept up to date since, so removing a
    /// deleted pod's logs does not look through every pod's (which made
    /// deleting every pod quadratic in their number).
    log_files: Mutex<Option<LogIndex>>,
    /// When the bytes of the container logs were first seen.
    log_clock: Arc<LogClock>,
    /// The addresses the fast path balances new connections to.
    ready_backends: Arc<ReadyBackends>,
}

/// Container log file names by pod (namespace, name).
type LogIndex = HashMap<(String, String), std::collections::HashSet<String>>;

/// Watches the pidfds of adopted processes on one thread and reports their
/// exits through the runtime's `exited` callback.
struct ExitWatcher {
    registry: mio::Registry,
    waiting: Arc<Mutex<HashMap<usize, Watched>>>,
    next: std::sync::atomic::AtomicUsize,
    stop: Arc<mio::Waker>,
    thread: Option<std::thread::JoinHandle<()>>,
}

const STOP: mio::Token = mio::Token(0);

/// A process the [`ExitWatcher`] watches.
struct Watched {
    namespace: String,
    name: String,
    /// The watcher's own descriptor for the process.
    fd: process::PidFd,
    /// Where to put the exit of a child it reaps (none for an adopted
    /// process, which is not ours to reap).
    reaped: Option<ReapedExit>,
}

impl ExitWatcher {
    fn start(exited: ExitNotice) -> std::io::Result<ExitWatcher> {
        let mut poll = mio::Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let stop = Arc::new(mio::Waker::new(poll.registry(), STOP)?);
        let waiting: Arc<Mutex<HashMap<usize, Watched>>> = Arc::default();
        let thread = {
            let waiting = waiting.clone();
            let registry = poll.registry().try_clone()?;
            std::thread::Builder::new()
                .name("podnet-pidfd".into())
                .spawn(move || {
                    // An exit it reports is handled by the reconcilers'
                    // thread: waking for each of thousands, it preempted
                    // that thread instead of using the idle core.
                    if let Err(e) = process::make_thread_background(0) {
                        tracing::debug!("cannot make the exit watcher a background thread: {e}");
                    }
                    let mut events = mio::Events::with_capacity(64);
                    loop {
                        if let Err(e) = poll.poll(&mut events, None) {
                            if e.kind() == std::io::ErrorKind::Interrupted {
                                continue;
                            }
                            tracing::error!("cannot watch adopted pod processes: {e}");
                            return;
                        }
                        for ev in events.iter() {
                            if ev.token() == STOP {
                                return;
                            }
                            let Some(w) = waiting.lock().remove(&ev.token().0) else {
                                continue;
                            };
                            use std::os::fd::AsRawFd;
                            let _ =
                                registry.deregister(&mut mio::unix::SourceFd(&w.fd.as_raw_fd()));
                            if let Some(slot) = &w.reaped {
                                let mut slot = slot.lock();
                                // An error: reaped already, by a kill.
                                if let (None, Ok(Some(code))) = (*slot, w.fd.reap()) {
                                    *slot = Some((code, SystemTime::now()));
                                }
                            }
                            exited(&w.namespace, &w.name);
                        }
                    }
                })?
        };
        Ok(ExitWatcher {
            registry,
            waiting,
            next: std::sync::atomic::AtomicUsize::new(1),
            stop,
            thread: Some(thread),
        })
    }

    /// Reports the exit of the process behind `fd` (the watcher's own) as
    /// the pod's, having reaped it into `reaped` if it is a child.
    fn watch(
        &self,
        fd: process::PidFd,
        ns: &str,
        name: &str,
        reaped: Option<ReapedExit>,
    ) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        let raw = fd.as_raw_fd();
        let token = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.waiting.lock().insert(
            token,
            Watched {
                namespace: ns.to_string(),
                name: name.to_string(),
                fd,
                reaped,
            },
        );
        let registered = self.registry.register(
            &mut mio::unix::SourceFd(&raw),
            mio::Token(token),
            mio::Interest::READABLE,
        );
        if registered.is_err() {
            self.waiting.lock().remove(&token);
        }
        registered
    }
}

impl Drop for ExitWatcher {
    fn drop(&mut self) {
        let _ = self.stop.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The file name of a container's log under `STATE/logs`.
pub fn log_file_name(namespace: &str, pod: &str, container: &str) -> String {
    format!("{namespace}_{pod}_{container}.log")
}

/// The file name of the log of a container's instance before its last
/// restart (`kubectl logs --previous`).
pub fn previous_log_file_name(namespace: &str, pod: &str, container: &str) -> String {
    format!("{namespace}_{pod}_{container}.previous.log")
}

/// The network namespace name of a pod.
pub fn netns_name(namespace: &str, name: &str) -> String {
    format!("{namespace}.{name}")
}

fn key(pod: &Pod) -> (String, String) {
    (
        pod.metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        pod.metadata.name.clone().unwrap_or_default(),
    )
}

/// Configures a pod's `eth0` from inside its namespace: `lo` up, MTU, the
/// address(es) as host routes, `default dev eth0`. Idempotent.
pub(crate) fn configure_eth0(
    mtu: u32,
    ip: Ipv4Addr,
    v6: Option<Ipv6Addr>,
) -> Result<(), link::LinkError> {
    link::set_up("lo")?;
    link::set_mtu("eth0", mtu)?;
    link::add_address(
        "eth0",
        IpNet::from(ipnet::Ipv4Net::new(ip, 32).expect("/32")),
    )?;
    if let Some(v6) = v6 {
        link::add_address(
            "eth0",
            IpNet::from(ipnet::Ipv6Net::new(v6, 128).expect("/128")),
        )?;
    }
    link::set_up("eth0")?;
    link::add_route("0.0.0.0/0".parse().expect("literal"), "eth0")?;
    if v6.is_some() {
        link::add_route("::/0".parse().expect("literal"), "eth0")?;
    }
    Ok(())
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// The IPAM request for a pod's address: owned by its uid, and, for a
/// StatefulSet's pod, under the sticky identity `NS/NAME`.
fn lease_request(pod: &Pod) -> AllocateRequest {
    let (ns, name) = key(pod);
    let req = AllocateRequest::new(pod.metadata.uid.clone().unwrap_or_default())
        .families(Families::Configured);
    if stateful(pod) {
        req.identity(format!("{ns}/{name}"))
    } else {
        req
    }
}

/// The network namespace path a pod is attached to
/// ([`ATTACH_NETNS_ANNOTATION`]), if it is not given its own.
fn attached_netns(pod: &Pod) -> Option<String> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ATTACH_NETNS_ANNOTATION))
        .cloned()
}

/// Runs `kubectl exec` commands in the namespaces of a pod's running
/// container, with the container's environment (read from its process)
/// and working directory.
impl crate::api::kube::exec::PodExec for HostRuntime {
    fn connect(&self, pod: &Pod, port: u16) -> Result<std::net::TcpStream, String> {
        let netns = {
            let pods = self.pods.lock();
            let entry = pods
                .get(&key(pod))
                .filter(|e| Some(&e.uid) == pod.metadata.uid.as_ref())
                .ok_or("the pod is not running on this node")?;
            entry.open_netns().map_err(|e| e.to_string())?
        };
        // The socket is made in the pod's namespace and stays there.
        netns
            .run(|| {
                let timeout = std::time::Duration::from_secs(5);
                let v4 = std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port));
                let v6 = std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
                std::net::TcpStream::connect_timeout(&v4, timeout)
                    .or_else(|_| std::net::TcpStream::connect_timeout(&v6, timeout))
            })
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("connect to localhost:{port} in the pod: {e}"))
    }

    fn exec(
        &self,
        pod: &Pod,
        container: &str,
        command: &[String],
        tty: bool,
        stdin: bool,
    ) -> Result<crate::api::kube::exec::ExecChild, String> {
        let (netns, pod_ns, pid) = {
            let pods = self.pods.lock();
            let entry = pods
                .get(&key(pod))
                .filter(|e| Some(&e.uid) == pod.metadata.uid.as_ref())
                .ok_or("the pod is not running on this node")?;
            let pid = entry
                .containers
                .get(container)
                .filter(|p| p.exit.is_none())
                .map(|p| p.pid)
                .ok_or_else(|| format!("container {container} is not running"))?;
            let netns = entry.open_netns().map_err(|e| e.to_string())?;
            (netns, entry.pod_ns.clone(), pid)
        };
        let env = process_environment(pid);
        let cwd = pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .find(|c| c.name == container)
            .and_then(|c| c.working_dir.clone());
        let (child, terminal) = process::spawn_exec(
            &netns,
            pod_ns.as_deref(),
            command,
            &env,
            cwd.as_deref(),
            tty,
            stdin,
        )
        .map_err(|e| e.to_string())?;
        Ok(crate::api::kube::exec::ExecChild { child, terminal })
    }
}

/// The environment a process started with (`/proc/PID/environ`); empty if
/// it cannot be read.
fn process_environment(pid: u32) -> Vec<(String, String)> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter_map(|kv| {
                    let kv = std::str::from_utf8(kv).ok()?;
                    let (k, v) = kv.split_once('=')?;
                    (!k.is_empty()).then(|| (k.to_string(), v.to_string()))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// How long a reset waits for deleted pods' devices and pins to go.
const RESET_RECLAIM_WAIT: Duration = Duration::from_secs(120);

/// Removes a deleted pod's directory under `STATE/pods` (its volumes'
/// files among them).
fn remove_pod_files(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), "cannot remove the pod's files: {e}");
        }
    }
}

/// Whether a StatefulSet controls the pod (its address is then sticky).
fn stateful(pod: &Pod) -> bool {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true) && r.kind == "StatefulSet")
}

impl HostRuntime {
    /// A runtime for this node; `exited(namespace, name)` is called when a
    /// pod's process exits.
    pub fn new(
        config: DaemonConfig,
        node_name: String,
        dataplane: Arc<Dataplane>,
        ipam: Ipam,
        exited: ExitNotice,
        ready_backends: Arc<ReadyBackends>,
    ) -> Self {
        let logs = config.state_dir.join("logs");
        let _ = std::fs::create_dir_all(&logs);
        let log_clock = Arc::new(LogClock::start(&logs));
        Self {
            config,
            node_name,
            dataplane,
            ipam: Mutex::new(ipam),
            pods: Mutex::new(HashMap::new()),
            watcher: ExitWatcher::start(exited.clone()).expect("an epoll instance and a thread"),
            exited,
            resetting: std::sync::atomic::AtomicBool::new(false),
            reclaim: Reclaimer::start().expect("a thread"),
            pods_unpublished: std::sync::atomic::AtomicUsize::new(0),
            unwatched: Mutex::default(),
            log_files: Mutex::new(None),
            log_clock,
            ready_backends,
        }
    }

    /// The log file of a container.
    pub fn log_path(&self, namespace: &str, name: &str, container: &str) -> PathBuf {
        self.config
            .state_dir
            .join("logs")
            .join(log_file_name(namespace, name, container))
    }

    /// When the bytes of the container logs were first seen.
    pub fn log_clock(&self) -> Arc<LogClock> {
        self.log_clock.clone()
    }

    /// Publishes the fast path's pod table after a pod's removal: at once
    /// every [`UNPUBLISHED_MAX`] removals, else with the next creation or
    /// [`HostRuntime::flush`] (rebuilding the table once per removal made
    /// deleting every pod quadratic in their number). Until then the
    /// removed pod's address still routes to its device, which is open and
    /// leads nowhere; its address is quarantined, and a creation that
    /// takes it publishes first.
    fn publish_pods_soon(&self) {
        use std::sync::atomic::Ordering;
        if self.pods_unpublished.fetch_add(1, Ordering::Relaxed) + 1 >= UNPUBLISHED_MAX {
            self.publish_pods(&self.pods.lock());
        }
    }

    /// Publishes what pod removals left unpublished: the fast path's pod
    /// table and link table. The daemon calls it whenever its reconcilers
    /// are idle.
    pub fn flush(&self) {
        use std::sync::atomic::Ordering;
        if self.pods_unpublished.load(Ordering::Relaxed) > 0 {
            self.publish_pods(&self.pods.lock());
        }
        self.dataplane.flush();
    }

    /// Waits (at most `max`) until what deleted pods left is removed; true
    /// if it is. For a stopping daemon.
    pub fn wait_reclaimed(&self, max: Duration) -> bool {
        self.flush();
        self.reclaim.wait_idle(max)
    }

    fn publish_pods(&self, pods: &HashMap<(String, String), PodEntry>) {
        self.pods_unpublished
            .store(0, std::sync::atomic::Ordering::Relaxed);
        let table: Vec<(PodId, PodAddrs)> = pods
            .values()
            .map(|e| {
                (
                    e.id,
                    PodAddrs {
                        v4: Some(e.ip),
                        v6: e.ipv6,
                    },
                )
            })
            .collect();
        if let Err(e) = self.dataplane.router().set_pods(&table) {
            tracing::error!("cannot publish pod addresses: {e}");
        }
    }

    /// Notices exited processes and reports them.
    ///
    /// Children and adopted processes with a pidfd are reported by the
    /// [`ExitWatcher`] instead, one pod per exit: looking at every process
    /// on every SIGCHLD made deleting all pods quadratic in their number.
    /// Only the pods with an unwatched child are looked at (none, unless a
    /// pidfd could not be opened): going through every pod on every
    /// SIGCHLD, under the lock the reconcilers need, cost a deletion of
    /// thousands of pods time in proportion to their square.
    pub fn reap(&self) {
        let candidates: Vec<(String, String)> = self.unwatched.lock().iter().cloned().collect();
        if candidates.is_empty() {
            return;
        }
        let (mut done, mut settled) = (Vec::new(), Vec::new());
        {
            let mut pods = self.pods.lock();
            for key in candidates {
                let Some(entry) = pods.get_mut(&key) else {
                    settled.push(key);
                    continue;
                };
                let mut running = false;
                for p in entry.containers.values_mut() {
                    let watched = p.reaped.is_some() || matches!(p.handle, Handle::Adopted(_));
                    if watched || p.exit.is_some() {
                        continue;
                    }
                    if p.poll_exit() {
                        done.push(key.clone());
                    } else {
                        running = true;
                    }
                }
                if !running {
                    settled.push(key);
                }
            }
        }
        {
            let mut unwatched = self.unwatched.lock();
            for key in &settled {
                unwatched.remove(key);
            }
        }
        for (ns, name) in done {
            (self.exited)(&ns, &name);
        }
    }

    /// At start: releases the addresses of pods that are gone (a crash
    /// between a pod's removal and its address's release), and removes the
    /// network namespaces of pods that are gone, with what runs in them. A
    /// namespace counts as a pod's when it is named `NS.NAME` for a
    /// Kubernetes namespace `NS` in the store; others are left alone.
    /// Returns how many addresses of live pods IPAM had lost and holds
    /// again.
    pub fn recover(&self, pods: &[Pod]) -> usize {
        let live: std::collections::HashSet<String> =
            pods.iter().filter_map(|p| p.metadata.uid.clone()).collect();
        match self
            .ipam
            .lock()
            .gc(|o| live.contains(&o.0), SystemTime::now())
        {
            Ok(released) if !released.is_empty() => {
                tracing::warn!(
                    count = released.len(),
                    "released the addresses of pods that are gone"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::error!("cannot release the addresses of pods that are gone: {e}"),
        }
        let names: std::collections::HashSet<String> = pods
            .iter()
            .map(|p| {
                netns_name(
                    p.metadata.namespace.as_deref().unwrap_or("default"),
                    p.metadata.name.as_deref().unwrap_or(""),
                )
            })
            .collect();
        let made = self.made_namespaces();
        for ns in netns::list().unwrap_or_default() {
            // Only what this daemon recorded making: another podnetd on the
            // host (a test topology) has pods of the same naming.
            if made.contains(&ns) && !names.contains(&ns) {
                tracing::warn!(netns = %ns, "removing the network namespace of a pod that is gone");
                stop_processes_in(&ns);
                sysmount::remove(&ns);
                let _ = netns::remove(&ns);
            }
        }
        sysmount::remove_retired();
        for ns in sysmount::list() {
            if made.contains(&ns) && !names.contains(&ns) {
                sysmount::remove(&ns);
            }
        }
        self.remove_gone_pod_dirs(&live);
        for ns in made {
            if !names.contains(&ns) {
                self.forget_namespace(&ns);
            }
        }
        let claimed = self.claim_addresses(pods);
        let (mut adopted, mut processes) = (0, 0);
        for pod in pods {
            let status = pod.status.as_ref();
            let on_node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref())
                == Some(self.node_name.as_str());
            let live = status.and_then(|s| s.pod_ip.as_ref()).is_some()
                && !matches!(
                    status.and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                );
            if !(on_node && live) {
                continue;
            }
            match self.adopt(pod) {
                Ok(n) => {
                    adopted += 1;
                    processes += n;
                }
                Err(e) => tracing::warn!(
                    pod = ?key(pod),
                    "cannot take the pod over after a restart (it is set up again): {e}"
                ),
            }
        }
        if adopted > 0 {
            tracing::info!(
                pods = adopted,
                processes,
                "took over the pods and processes of the previous daemon"
            );
        }
        claimed
    }

    /// Makes IPAM hold the address every live pod of this node has (its
    /// status names it, or, for a pod whose status does not yet, the
    /// `eth0` of the namespace podnet made for it has it), whatever IPAM's
    /// files lost: an address in use is never handed out again. A lease
    /// found missing is claimed again and logged; an address IPAM gives to
    /// someone else is logged as the conflict it is. Returns how many
    /// leases were claimed again.
    fn claim_addresses(&self, pods: &[Pod]) -> usize {
        let mut claimed = 0;
        for pod in pods {
            let on_node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref())
                == Some(self.node_name.as_str());
            let status = pod.status.as_ref();
            let finished = matches!(
                status.and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            );
            let Some(uid) = pod.metadata.uid.clone() else {
                continue;
            };
            if !on_node || finished {
                continue;
            }
            let (ns, name) = key(pod);
            let in_status = status
                .and_then(|s| s.pod_ip.as_deref())
                .and_then(|ip| ip.parse::<IpAddr>().ok());
            let Some(ip) = in_status.or_else(|| self.eth0_address(&ns, &name, pod)) else {
                continue;
            };
            let owner = OwnerKey::from(uid.clone());
            let mut ipam = self.ipam.lock();
            if ipam.get(&owner).is_some_and(|a| a.addrs().any(|a| a == ip)) {
                continue;
            }
            let req = lease_request(pod).families(Families::V4).address(ip);
            match ipam.allocate(req, SystemTime::now()) {
                Ok(_) => {
                    claimed += 1;
                    tracing::warn!(
                        pod = %format!("{ns}/{name}"),
                        %ip,
                        from = if in_status.is_some() { "status" } else { "eth0" },
                        state = %self.config.state_dir.join("ipam").display(),
                        "IPAM did not hold the address of a running pod (its files were damaged or removed?); claimed it again"
                    )
                }
                Err(e) => tracing::error!(
                    pod = %format!("{ns}/{name}"),
                    %ip,
                    "the pod's address cannot be claimed in IPAM: {e}"
                ),
            }
        }
        claimed
    }

    /// The IPv4 address on `eth0` in the network namespace podnet made for
    /// a pod, if it made one and it is there (a pod set up by a daemon
    /// that stopped before writing its status).
    fn eth0_address(&self, ns: &str, name: &str, pod: &Pod) -> Option<IpAddr> {
        if attached_netns(pod).is_some() {
            return None;
        }
        let ns_name = netns_name(ns, name);
        if !self.recorded(&ns_name) {
            return None;
        }
        let handle = NetNs::open(&ns_name).ok()?;
        let addrs = handle.run(link::addresses).ok()?.ok()?;
        addrs.into_iter().find_map(|(dev, net)| match net {
            IpNet::V4(v4) if dev == "eth0" => Some(IpAddr::V4(v4.addr())),
            _ => None,
        })
    }

    /// Takes over a pod the previous daemon ran: its namespace and address
    /// as they are, `eth0` reattached (and its configuration repaired), and
    /// each container process that is still the one the pod's status names
    /// (pid and start time, in the same network namespace), watched by a
    /// pidfd. Returns how many processes were taken over; a container whose
    /// process is gone is started again by the kubelet.
    fn adopt(&self, pod: &Pod) -> Result<usize, String> {
        use std::os::unix::fs::MetadataExt;
        let (ns, name) = key(pod);
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let status = pod.status.clone().unwrap_or_default();
        let attach = attached_netns(pod);
        let ns_name = attach.clone().unwrap_or_else(|| netns_name(&ns, &name));
        let handle = match &attach {
            Some(path) => NetNs::open_path(std::path::Path::new(path)),
            None => NetNs::open(&ns_name),
        }
        .map_err(|e| format!("its network namespace {ns_name} is gone: {e}"))?;
        if attach.is_none() && !self.recorded(&ns_name) {
            // Made by a podnetd from before namespaces were recorded.
            let _ = self.record_namespace(&ns_name);
        }
        let had: Option<Ipv4Addr> = status.pod_ip.as_deref().and_then(|ip| ip.parse().ok());
        let mut req = lease_request(pod);
        if let Some(ip) = had {
            req = req.address(IpAddr::V4(ip));
        }
        let alloc = self
            .ipam
            .lock()
            .allocate(req, SystemTime::now())
            .map_err(|e| format!("no address: {e}"))?;
        let Some(ip) = alloc.v4.filter(|ip| Some(*ip) == had) else {
            let _ = self
                .ipam
                .lock()
                .release(&OwnerKey::from(uid.clone()), SystemTime::now());
            return Err(format!(
                "IPAM does not hold its address {} for it",
                status.pod_ip.as_deref().unwrap_or("?")
            ));
        };
        let (mtu, v6) = (self.config.mtu, alloc.v6);
        let options = TunOptions {
            persistent: true,
            offload: self.config.offload,
        };
        let tun = handle
            .run(move || -> Result<Tun, String> {
                let tun = Tun::open("eth0", options).map_err(|e| e.to_string())?;
                configure_eth0(mtu, ip, v6).map_err(|e| e.to_string())?;
                Ok(tun)
            })
            .map_err(|e| e.to_string())
            .and_then(|r| r)
            .map_err(|e| format!("cannot reattach eth0 in {ns_name}: {e}"))?;
        let _ = tun.set_nonblocking(true);
        let tun = Arc::new(tun);

        let net = std::fs::metadata(handle.path())
            .map(|m| (m.dev(), m.ino()))
            .ok();
        let mut containers = HashMap::new();
        for cs in status.container_statuses.iter().flatten() {
            let Some(running) = cs.state.as_ref().and_then(|s| s.running.as_ref()) else {
                continue;
            };
            let Some((pid, start)) = cs.container_id.as_deref().and_then(parse_container_id) else {
                continue;
            };
            // The same process: same start time, same network namespace.
            let same = process::start_time(pid) == Some(start)
                && std::fs::metadata(format!("/proc/{pid}/ns/net"))
                    .map(|m| (m.dev(), m.ino()))
                    .ok()
                    == net;
            if !same {
                continue;
            }
            let Ok(fd) = process::PidFd::open(pid) else {
                continue;
            };
            let watched = fd
                .try_clone()
                .and_then(|own| self.watcher.watch(own, &ns, &name, None));
            if let Err(e) = watched {
                tracing::warn!(pod = %name, pid, "cannot watch the adopted process: {e}");
                continue;
            }
            let started = running
                .started_at
                .as_ref()
                .and_then(|t| u64::try_from(t.0.as_second()).ok())
                .map(|secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
                .unwrap_or_else(SystemTime::now);
            containers.insert(
                cs.name.clone(),
                Process {
                    handle: Handle::Adopted(fd),
                    pid,
                    start_ticks: start,
                    started,
                    exit: None,
                    reaped: None,
                },
            );
        }
        if containers.is_empty() && attach.is_none() {
            // Nothing to keep: whatever runs there is not the pod's any more.
            stop_processes_in(&ns_name);
        }
        let adopted = containers.len();
        let pod_ns = match &attach {
            Some(_) => None,
            // Kept as they are, with their mounts; made again if gone.
            None => match PodNs::open(&ns_name) {
                Ok(p) => Some(Arc::new(p)),
                Err(_) => Some(Arc::new(
                    PodNs::create(&ns_name, &identity::hostname(pod))
                        .map_err(|e| format!("cannot make its mount and UTS namespaces: {e}"))?,
                )),
            },
        };
        let entry = PodEntry {
            uid,
            netns: ns_name,
            attached: attach.is_some(),
            ip,
            ipv6: v6,
            id: PodId(0),
            tun,
            containers,
            pod_ns,
            volumes: HashMap::new(),
            payloads: HashMap::new(),
            was_chosen: false,
            drained_at: None,
        };
        self.install(&mut self.pods.lock(), (ns, name), entry);
        Ok(adopted)
    }

    /// Gives a pod's device a data-plane link id, and makes it known to
    /// the fast path (addresses) and the workers (the device).
    fn install(
        &self,
        pods: &mut HashMap<(String, String), PodEntry>,
        key: (String, String),
        mut entry: PodEntry,
    ) {
        let id = next_pod_id(pods);
        entry.id = id;
        let tun = entry.tun.clone();
        pods.insert(key, entry);
        self.publish_pods(pods);
        self.dataplane.add(Link::Pod(id), tun);
    }

    /// For a reset: stops every pod (SIGKILL), removes their devices,
    /// namespaces, addresses and logs, and every namespace this daemon
    /// recorded making that no running pod holds (left by a crash); makes
    /// nothing new afterwards. Returns what could not be removed.
    pub fn remove_all(&self) -> Vec<String> {
        use std::sync::atomic::Ordering;
        self.resetting.store(true, Ordering::SeqCst);
        let entries: Vec<_> = self.pods.lock().drain().collect();
        // Every pod namespace (theirs and any other recorded) is removed
        // below, after one pass over /proc for all of them.
        for (key, entry) in entries {
            let _ = self.teardown(&key, entry, true);
        }
        let mut removed: std::collections::HashSet<janitor::NamespaceId> = Default::default();
        if !self.wait_reclaimed(RESET_RECLAIM_WAIT) {
            tracing::warn!("removing the deleted pods' devices and pins is taking long; going on");
        }
        let mut warnings = Vec::new();
        let made = self.made_namespaces();
        sysmount::remove_retired();
        for ns in sysmount::list() {
            if made.contains(&ns) {
                sysmount::remove(&ns);
            }
        }
        self.remove_gone_pod_dirs(&Default::default());
        let _ = std::fs::remove_dir(self.config.state_dir.join("pods"));
        for ns in netns::list().unwrap_or_default() {
            if made.contains(&ns) {
                removed.extend(janitor::namespace_id(&ns));
                if let Err(e) = netns::remove(&ns) {
                    warnings.push(format!("network namespace {ns} could not be removed: {e}"));
                }
            }
        }
        // One pass over /proc for every namespace.
        janitor::kill_processes_in(&removed);
        for ns in made {
            self.forget_namespace(&ns);
        }
        warnings
    }

    /// The container logs in `STATE/logs` by pod (names are
    /// `NAMESPACE_POD_CONTAINER.log`; none of the three holds a `_`).
    fn read_log_index(&self) -> LogIndex {
        let mut index = LogIndex::new();
        let Ok(dir) = std::fs::read_dir(self.config.state_dir.join("logs")) else {
            return index;
        };
        for f in dir.flatten() {
            let Some(file) = f.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let mut parts = file.strip_suffix(".log").unwrap_or("").splitn(3, '_');
            if let (Some(ns), Some(pod), Some(_)) = (parts.next(), parts.next(), parts.next()) {
                index
                    .entry((ns.to_string(), pod.to_string()))
                    .or_default()
                    .insert(file.clone());
            }
        }
        index
    }

    /// Notes a container log file made for the pod `key`.
    fn note_log(&self, key: &(String, String), container: &str) {
        self.note_log_file(key, log_file_name(&key.0, &key.1, container));
    }

    fn note_log_file(&self, key: &(String, String), file: String) {
        if let Some(index) = self.log_files.lock().as_mut() {
            index.entry(key.clone()).or_default().insert(file);
        }
    }

    /// Releases the leases of owners that are not live pods; `live` lists
    /// the uids of the pods in the store, and is read with IPAM locked, so
    /// a lease taken for a pod created since cannot be missed.
    pub fn release_orphan_leases(&self, live: impl FnOnce() -> Vec<String>) {
        // Listed before the lock: pods being set up need the allocator.
        let live: std::collections::HashSet<String> = live().into_iter().collect();
        let mut ipam = self.ipam.lock();
        match ipam.gc(|o| live.contains(&o.0), SystemTime::now()) {
            Ok(released) if !released.is_empty() => tracing::warn!(
                count = released.len(),
                "released the addresses of pods that are gone"
            ),
            Ok(_) => {}
            Err(e) => tracing::error!("cannot release the addresses of pods that are gone: {e}"),
        }
    }

    /// Removes `STATE/pods/UID` of every pod not in `live` (uids).
    fn remove_gone_pod_dirs(&self, live: &std::collections::HashSet<String>) {
        let Ok(dir) = std::fs::read_dir(self.config.state_dir.join("pods")) else {
            return;
        };
        for e in dir.flatten() {
            if let Some(uid) = e.file_name().to_str() {
                if !live.contains(uid) {
                    self.remove_pod_dir(uid);
                }
            }
        }
    }

    /// Addresses IPAM holds (leases) and pods this runtime runs.
    pub fn counts(&self) -> (usize, usize) {
        (self.ipam.lock().list().len(), self.pods.lock().len())
    }

    /// Where the names of the network namespaces podnet made are recorded,
    /// each before its namespace is made and removed after it is gone, so
    /// a restart or a reset finds every namespace podnet made, whether the
    /// object store knows its pod or not.
    fn made_dir(&self) -> PathBuf {
        self.config.state_dir.join("netns")
    }

    /// Records that the namespace `ns` is about to be made. The record has
    /// to outlive the daemon, not the machine: what it records (a name
    /// under `/var/run/netns`, the processes in it) lives in memory and is
    /// gone after a reboot, so it is not synced to the disk.
    fn record_namespace(&self, ns: &str) -> std::io::Result<()> {
        let dir = self.made_dir();
        std::fs::create_dir_all(&dir)?;
        std::fs::File::create(dir.join(ns)).map(drop)
    }

    /// Has the janitor empty the namespace `ns`, then remove its name and
    /// its record (see [`janitor`]).
    fn remove_namespace_later(&self, ns: &str) {
        janitor::remove_namespace_later(ns, self.made_dir().join(ns));
    }

    fn forget_namespace(&self, ns: &str) {
        let _ = std::fs::remove_file(self.made_dir().join(ns));
    }

    /// Whether podnet recorded making the namespace `ns`.
    fn recorded(&self, ns: &str) -> bool {
        self.made_dir().join(ns).exists()
    }

    /// The namespaces podnet recorded as made.
    fn made_namespaces(&self) -> std::collections::HashSet<String> {
        std::fs::read_dir(self.made_dir())
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().to_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn check_not_resetting(&self) -> Result<(), String> {
        if self.resetting.load(std::sync::atomic::Ordering::SeqCst) {
            return Err("the node is being reset".into());
        }
        Ok(())
    }

    /// Removes a pod's network and processes; its logs too if `logs`
    /// (kept while the pod object exists, for `kubectl logs`).
    ///
    /// Returns the name of the pod's own network namespace, which the
    /// caller removes with whatever still runs there
    /// ([`HostRuntime::remove_namespace_later`], or in one pass for many pods).
    /// The pod's device goes with its namespace: the kernel removes the
    /// devices of dying namespaces in batches, where deleting each one here
    /// would wait for an RCU barrier per pod.
    fn teardown(
        &self,
        (ns, name): &(String, String),
        entry: PodEntry,
        logs: bool,
    ) -> Option<String> {
        let router = self.dataplane.router();
        router.reset_flows(FlowSelector::Client(IpAddr::V4(entry.ip)), &mut |l, p| {
            self.dataplane.send_packet(l, p)
        });
        self.dataplane.remove(Link::Pod(entry.id));
        if entry.attached {
            let _ = entry.tun.set_persistent(false);
        }
        let mut removed = None;
        let mut processes = Vec::new();
        for (container, mut p) in entry.containers {
            // Killed now, reaped with the rest below.
            let _ = p.signal_group(Signal::SIGKILL);
            processes.push(p);
            if logs {
                self.log_clock.remove(&log_file_name(ns, name, &container));
                self.log_clock
                    .remove(&previous_log_file_name(ns, name, &container));
            }
        }
        let mut pins = None;
        if entry.attached {
            // Someone else's namespace: only eth0 was podnet's.
            let removed = NetNs::open_path(std::path::Path::new(&entry.netns))
                .map_err(|e| e.to_string())
                .and_then(|h| {
                    h.run(|| link::delete_link("eth0"))
                        .map_err(|e| e.to_string())
                });
            if let Err(e) = removed {
                tracing::warn!(netns = %entry.netns, "cannot remove eth0 of an attached pod: {e}");
            }
        } else {
            pins = sysmount::retire(&entry.netns);
            removed = Some(entry.netns.clone());
        }
        let dir = self.retire_pod_dir(&entry.uid);
        let _ = self
            .ipam
            .lock()
            .release(&OwnerKey::from(entry.uid.clone()), SystemTime::now());
        // The kernel's slow part, in the order it was done here before.
        self.reclaim.release(entry.tun);
        self.reclaim.run(move || {
            for mut p in processes {
                p.kill();
            }
            if let Some(pins) = pins {
                pins.remove();
            }
            if let Some(dir) = dir {
                remove_pod_files(&dir);
            }
        });
        removed
    }

    /// Binds a container's `volumeMounts` in the pod's mount namespace
    /// (once: a mount point already showing its source is left alone),
    /// making missing mount points (recorded, removed with the pod).
    fn mount_volumes(&self, pod: &Pod, container: &str, entry: &PodEntry) -> Result<(), String> {
        let mounts: Vec<_> = pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .filter(|c| c.name == container)
            .flat_map(|c| c.volume_mounts.iter().flatten())
            .cloned()
            .collect();
        if mounts.is_empty() {
            return Ok(());
        }
        let Some(pod_ns) = &entry.pod_ns else {
            return Err("volumes need the pod's own mount namespace; a pod attached to another network namespace (podnet.io/netns) has none".into());
        };
        let mut plan = Vec::new();
        for m in &mounts {
            let source = entry.volumes.get(&m.name).ok_or_else(|| {
                format!(
                    "volume {:?} of mount {} is not set up",
                    m.name, m.mount_path
                )
            })?;
            let source = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                Some(sub) => {
                    if Path::new(sub)
                        .components()
                        .any(|c| !matches!(c, std::path::Component::Normal(_)))
                    {
                        return Err(format!(
                            "subPath {sub:?} must be a relative path without '..'"
                        ));
                    }
                    source.join(sub)
                }
                None => source.clone(),
            };
            plan.push((
                source,
                PathBuf::from(&m.mount_path),
                m.read_only == Some(true),
            ));
        }
        let record = self.pod_dir(&entry.uid).join("made-mount-points");
        pod_ns
            .run(|| -> Result<(), String> {
                use std::os::unix::fs::MetadataExt;
                for (source, target, ro) in &plan {
                    if !source.exists() {
                        // A subPath the volume lacks: made, as the kubelet does.
                        std::fs::create_dir_all(source)
                            .map_err(|e| format!("cannot make {}: {e}", source.display()))?;
                    }
                    let id = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
                    if id(target).is_some() && id(target) == id(source) {
                        continue;
                    }
                    if std::fs::metadata(target).is_ok_and(|m| m.nlink() == 0) {
                        // The bind of a subPath file an update replaced
                        // since: bound again at this start, as the kubelet
                        // does.
                        sysmount::detach(target);
                    }
                    if std::fs::symlink_metadata(target).is_err() {
                        let mut made = Vec::new();
                        let mut missing = target.as_path();
                        let want_dir = source.is_dir();
                        let leaf = if want_dir { None } else { Some(target.clone()) };
                        if !want_dir {
                            missing = target.parent().unwrap_or(Path::new("/"));
                        }
                        let mut p = missing.to_path_buf();
                        while !p.exists() {
                            made.push(p.clone());
                            if !p.pop() {
                                break;
                            }
                        }
                        std::fs::create_dir_all(missing).map_err(|e| {
                            format!("cannot make the mount point {}: {e}", missing.display())
                        })?;
                        if let Some(f) = leaf {
                            std::fs::File::create(&f).map_err(|e| {
                                format!("cannot make the mount point {}: {e}", f.display())
                            })?;
                            made.push(f);
                        }
                        let mut text = String::new();
                        for m in made {
                            text.push_str(&format!("{}\n", m.display()));
                        }
                        let mut f = OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(&record)
                            .map_err(|e| {
                                format!("cannot record mount points in {}: {e}", record.display())
                            })?;
                        f.write_all(text.as_bytes())
                            .map_err(|e| format!("cannot record mount points: {e}"))?;
                    }
                    sysmount::bind(source, target, *ro).map_err(|e| e.to_string())?;
                }
                Ok(())
            })
            .map_err(|e| e.to_string())
            .and_then(|r| r)
    }

    /// `STATE/pods/UID`: the pod's files (hosts, resolv.conf, volumes).
    fn pod_dir(&self, uid: &str) -> PathBuf {
        self.config.state_dir.join("pods").join(uid)
    }

    /// Removes the pod's files, and the mount points made for it on the
    /// host's filesystem (empty directories, deepest first).
    fn remove_pod_dir(&self, uid: &str) {
        if let Some(dir) = self.retire_pod_dir(uid) {
            remove_pod_files(&dir);
        }
    }

    /// Removes the mount points made for the pod `uid` (paths a new pod
    /// may need) and returns its directory, to remove with
    /// [`remove_pod_files`] (named by the uid: no new pod needs it).
    fn retire_pod_dir(&self, uid: &str) -> Option<PathBuf> {
        if uid.is_empty() || uid.contains('/') || uid.starts_with('.') {
            return None;
        }
        let dir = self.pod_dir(uid);
        if let Ok(made) = std::fs::read_to_string(dir.join("made-mount-points")) {
            let mut paths: Vec<&str> = made.lines().filter(|l| !l.is_empty()).collect();
            paths.sort_by_key(|p| std::cmp::Reverse(p.len()));
            for p in paths {
                let _ = std::fs::remove_dir(p).or_else(|_| {
                    // A file mount point (a subPath of a file) made for it.
                    match std::fs::metadata(p) {
                        Ok(m) if m.is_file() && m.len() == 0 => std::fs::remove_file(p),
                        _ => Ok(()),
                    }
                });
            }
        }
        Some(dir)
    }

    /// Writes the pod's `/etc/hosts` and `/etc/resolv.conf` (in place,
    /// only when they change) and binds them into its mount namespace
    /// once.
    fn identity_files(&self, pod: &Pod, entry: &PodEntry) -> Result<(), String> {
        let Some(pod_ns) = &entry.pod_ns else {
            return Ok(());
        };
        let dir = self.pod_dir(&entry.uid);
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
        let mut ips = vec![IpAddr::V4(entry.ip)];
        ips.extend(entry.ipv6.map(IpAddr::V6));
        let node = identity::ResolvConf::parse(
            &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        );
        let files = [
            ("hosts", identity::hosts_file(pod, &ips), "/etc/hosts"),
            (
                "resolv.conf",
                identity::resolv_conf(pod, self.config.cluster_dns, &node).render(),
                "/etc/resolv.conf",
            ),
        ];
        for (name, text, _) in &files {
            let path = dir.join(name);
            if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                // In place: a bind mount holds the inode, not the name.
                std::fs::write(&path, text)
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            }
        }
        let suffix = |name: &str| format!("/pods/{}/{name}", entry.uid);
        pod_ns
            .run(|| -> Result<(), String> {
                for (name, _, target) in &files {
                    let target = Path::new(target);
                    if sysmount::mounted_from(target, &suffix(name)) {
                        continue;
                    }
                    if !target.exists() {
                        // /etc/resolv.conf may be a dangling link
                        // (systemd-resolved off): nothing to bind onto.
                        tracing::warn!(target = %target.display(), "missing on this host; the pod has none");
                        continue;
                    }
                    sysmount::bind(&dir.join(name), target, false).map_err(|e| e.to_string())?;
                }
                Ok(())
            })
            .map_err(|e| e.to_string())
            .and_then(|r| r)
    }
}

/// Kills (SIGKILL) every process whose network namespace is the named one.
pub fn stop_processes_in(ns_name: &str) {
    use std::os::unix::fs::MetadataExt;
    let Ok(target) = std::fs::metadata(PathBuf::from(netns::NETNS_RUN_DIR).join(ns_name)) else {
        return;
    };
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        if let Ok(m) = std::fs::metadata(p.path().join("ns/net")) {
            if m.ino() == target.ino() && m.dev() == target.dev() {
                let _ = process::kill(pid, Signal::SIGKILL);
            }
        }
    }
}

/// An HTTP GET against `addr` with a deadline; true for a 2xx or 3xx.
fn http_get(addr: SocketAddr, host: &str, path: &str, timeout: Duration) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, timeout) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: kube-probe/1.37\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    if s.read_exact(&mut head).is_err() {
        return false;
    }
    let code: u16 = std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    head.starts_with(b"HTTP/1.") && (200..400).contains(&code)
}

fn probe_port(c: &Container, port: &IntOrString) -> Option<u16> {
    match port {
        IntOrString::Int(p) => u16::try_from(*p).ok(),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok()),
    }
}

impl PodRuntime for HostRuntime {
    fn node_name(&self) -> String {
        self.node_name.clone()
    }

    fn host_ip(&self) -> String {
        self.config.gateway().to_string()
    }

    fn drained(&self, pod: &Pod) -> bool {
        let chosen = pod
            .status
            .iter()
            .flat_map(|s| s.pod_ips.iter().flatten())
            .filter_map(|ip| ip.ip.parse().ok())
            .any(|ip| self.ready_backends.contains(ip));
        let pid = {
            let mut pods = self.pods.lock();
            let Some(entry) = pods.get_mut(&key(pod)) else {
                return true;
            };
            if chosen {
                entry.was_chosen = true;
                entry.drained_at = None;
                return false;
            }
            // Connections the fast path handed the pod and its process has
            // not taken yet would be reset when it stops listening. Only
            // a pod that was chosen is looked at: reading its socket table
            // walks the kernel's whole TCP hash (milliseconds).
            if !entry.was_chosen {
                return true;
            }
            entry
                .containers
                .values_mut()
                .find_map(|p| (!p.poll_exit()).then_some(p.pid))
        };
        let waiting = matches!(pid.map(process::unaccepted_connections), Some(Ok(n)) if n > 0);
        let mut pods = self.pods.lock();
        let Some(entry) = pods.get_mut(&key(pod)) else {
            return true;
        };
        if waiting {
            entry.drained_at = None;
            return false;
        }
        let since = *entry.drained_at.get_or_insert_with(std::time::Instant::now);
        since.elapsed() >= DRAIN_SETTLE
    }

    fn sync_volumes(&self, pod: &Pod, vols: &[PodVolume]) -> Result<(), String> {
        use std::hash::{Hash, Hasher};
        let mut pods = self.pods.lock();
        let Some(entry) = pods.get_mut(&key(pod)) else {
            return Err("the pod has no network yet".into());
        };
        if Some(&entry.uid) != pod.metadata.uid.as_ref() {
            return Err("the pod has no network yet".into());
        }
        let Some(pod_ns) = entry.pod_ns.clone() else {
            return Err("volumes need the pod's own mount namespace; a pod attached to another network namespace (podnet.io/netns) has none".into());
        };
        let pod_dir = self.pod_dir(&entry.uid);
        let failed = |name: &str, why: String| {
            format!("MountVolume.SetUp failed for volume {name:?} : {why}")
        };
        for v in vols {
            let dir = volumes::volume_dir(&pod_dir, &v.name);
            let source = match &v.data {
                VolumeData::HostPath { path, type_ } => {
                    volumes::check_host_path(path, type_).map_err(|e| failed(&v.name, e))?;
                    if type_.is_empty() && !Path::new(path).exists() {
                        // No type: a missing path is made a directory, as
                        // container runtimes do.
                        std::fs::create_dir_all(path)
                            .map_err(|e| failed(&v.name, format!("cannot create {path}: {e}")))?;
                    }
                    PathBuf::from(path)
                }
                VolumeData::EmptyDir { memory, size_limit } => {
                    std::fs::create_dir_all(&dir).map_err(|e| {
                        failed(&v.name, format!("cannot make {}: {e}", dir.display()))
                    })?;
                    let _ = std::fs::set_permissions(
                        &dir,
                        std::os::unix::fs::PermissionsExt::from_mode(0o777),
                    );
                    if *memory {
                        let d = dir.clone();
                        let size = *size_limit;
                        pod_ns
                            .run(move || {
                                if sysmount::is_mount_point(&d) {
                                    return Ok(());
                                }
                                sysmount::tmpfs(&d, size, 0o777)
                            })
                            .map_err(|e| e.to_string())
                            .and_then(|r| r.map_err(|e| e.to_string()))
                            .map_err(|e| failed(&v.name, e))?;
                    }
                    dir
                }
                VolumeData::Files { files, memory } => {
                    let mut h = std::collections::hash_map::DefaultHasher::new();
                    for (k, f) in files {
                        k.hash(&mut h);
                        f.bytes.hash(&mut h);
                        f.mode.hash(&mut h);
                    }
                    memory.hash(&mut h);
                    let print = h.finish();
                    if entry.payloads.get(&v.name) != Some(&print) {
                        std::fs::create_dir_all(&dir).map_err(|e| {
                            failed(&v.name, format!("cannot make {}: {e}", dir.display()))
                        })?;
                        let d = dir.clone();
                        let memory = *memory;
                        pod_ns
                            .run(move || -> Result<bool, String> {
                                // Written from inside the pod, where its
                                // tmpfs is: never on a disk.
                                if memory && !sysmount::is_mount_point(&d) {
                                    sysmount::tmpfs(&d, None, 0o755).map_err(|e| e.to_string())?;
                                }
                                volumes::write_atomic(&d, files, SystemTime::now())
                                    .map_err(|e| e.to_string())
                            })
                            .map_err(|e| e.to_string())
                            .and_then(|r| r)
                            .map_err(|e| failed(&v.name, e))?;
                        entry.payloads.insert(v.name.clone(), print);
                    }
                    dir
                }
            };
            entry.volumes.insert(v.name.clone(), source);
        }
        Ok(())
    }

    fn allocatable(&self) -> Allocatable {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as i128;
        let memory_kib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i128>().ok())
            })
            .unwrap_or(0);
        let disk = nix::sys::statvfs::statvfs(&self.config.state_dir)
            .map(|s| s.blocks() as i128 * s.fragment_size() as i128)
            .unwrap_or(0);
        Allocatable {
            cpu_millis: cpus * 1000,
            memory_bytes: memory_kib * 1024,
            ephemeral_bytes: disk,
        }
    }

    fn setup_network(&self, pod: &Pod) -> Result<String, String> {
        self.check_not_resetting()?;
        let (ns, name) = key(pod);
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let mut pods = self.pods.lock();
        if let Some(e) = pods.get(&(ns.clone(), name.clone())) {
            if e.uid == uid {
                return Ok(e.ip.to_string());
            }
        }
        if let Some(old) = pods.remove(&(ns.clone(), name.clone())) {
            // The same name, a new pod (a StatefulSet's): the old one's
            // network goes first.
            if let Some(netns) = self.teardown(&(ns.clone(), name.clone()), old, true) {
                // Its name is taken again at once: removed here.
                stop_processes_in(&netns);
                let _ = netns::remove(&netns);
                self.forget_namespace(&netns);
            }
        }
        let req = lease_request(pod);
        let alloc = self
            .ipam
            .lock()
            .allocate(req, SystemTime::now())
            .map_err(|e| format!("no address for the pod: {e}"))?;
        let release = || {
            let _ = self
                .ipam
                .lock()
                .release(&OwnerKey::from(uid.clone()), SystemTime::now());
        };
        let Some(ip) = alloc.v4 else {
            release();
            return Err("IPAM returned no IPv4 address".into());
        };
        let attach = attached_netns(pod);
        let ns_name = attach.clone().unwrap_or_else(|| netns_name(&ns, &name));
        let handle = match &attach {
            Some(path) => NetNs::open_path(std::path::Path::new(path)).map_err(|e| {
                release();
                format!("cannot open the network namespace {path} to attach the pod to: {e}")
            })?,
            None => {
                // A namespace of that name left by a crash (or by the daemon
                // before a restart) is ours to replace, with whatever still
                // runs in it; one podnet did not make is not ours to touch.
                let exists = std::path::Path::new(netns::NETNS_RUN_DIR)
                    .join(&ns_name)
                    .exists();
                if exists && !self.recorded(&ns_name) {
                    release();
                    return Err(format!(
                        "a network namespace named {ns_name} exists and this podnetd did not make it                          (another podnetd on this host?); remove it or rename the pod"
                    ));
                }
                stop_processes_in(&ns_name);
                let _ = netns::remove(&ns_name);
                if let Err(e) = self.record_namespace(&ns_name) {
                    release();
                    return Err(format!(
                        "cannot record the network namespace {ns_name} in {}: {e}",
                        self.made_dir().display()
                    ));
                }
                NetNs::create(&ns_name).map_err(|e| {
                    release();
                    format!("cannot create the network namespace {ns_name}: {e}")
                })?
            }
        };
        let (mtu, v6) = (self.config.mtu, alloc.v6);
        let options = TunOptions {
            persistent: true,
            offload: self.config.offload,
        };
        let made = handle.run(move || -> Result<Tun, String> {
            let tun = Tun::open("eth0", options).map_err(|e| e.to_string())?;
            if let Err(e) = configure_eth0(mtu, ip, v6) {
                let _ = tun.set_persistent(false);
                return Err(e.to_string());
            }
            Ok(tun)
        });
        let tun = match made.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok(t) => Arc::new(t),
            Err(e) => {
                if attach.is_none() {
                    let _ = netns::remove(&ns_name);
                }
                release();
                return Err(format!("cannot set up eth0 of {ns_name}: {e}"));
            }
        };
        let _ = tun.set_nonblocking(true);
        let pod_ns = match &attach {
            Some(_) => None,
            None => match PodNs::create(&ns_name, &identity::hostname(pod)) {
                Ok(p) => Some(Arc::new(p)),
                Err(e) => {
                    let _ = tun.set_persistent(false);
                    drop(tun);
                    let _ = netns::remove(&ns_name);
                    self.forget_namespace(&ns_name);
                    release();
                    return Err(format!(
                        "cannot make the pod's mount and UTS namespaces: {e}"
                    ));
                }
            },
        };
        let entry = PodEntry {
            uid,
            netns: ns_name,
            attached: attach.is_some(),
            ip,
            ipv6: v6,
            id: PodId(0),
            tun,
            containers: HashMap::new(),
            pod_ns,
            volumes: HashMap::new(),
            payloads: HashMap::new(),
            was_chosen: false,
            drained_at: None,
        };
        self.install(&mut pods, (ns, name), entry);
        Ok(ip.to_string())
    }

    fn teardown_network(&self, pod: &Pod) {
        let k = key(pod);
        let entry = self.pods.lock().remove(&k);
        if entry.is_none() {
            // Not set up by this daemon: a crash between its address and
            // its namespace, or a previous daemon's pod that was not taken
            // over (killed before its status named its address) and is
            // deleted before it is set up again. Its address goes back, and
            // the namespace, if a podnet recorded making it, goes with
            // whatever runs there.
            if let Some(uid) = &pod.metadata.uid {
                let _ = self
                    .ipam
                    .lock()
                    .release(&OwnerKey::from(uid.clone()), SystemTime::now());
            }
            let ns_name = netns_name(&k.0, &k.1);
            if attached_netns(pod).is_none() && self.recorded(&ns_name) {
                sysmount::remove(&ns_name);
                self.remove_namespace_later(&ns_name);
            }
        }
        if let Some(entry) = entry {
            if let Some(netns) = self.teardown(&k, entry, false) {
                self.remove_namespace_later(&netns);
            }
            self.publish_pods_soon();
        }
    }

    fn start(
        &self,
        pod: &Pod,
        container: &str,
        argv: &[String],
        env: &[(String, String)],
    ) -> Result<(), String> {
        self.check_not_resetting()?;
        let (ns, name) = key(pod);
        let path = self.log_path(&ns, &name, container);
        if std::fs::metadata(&path).is_ok_and(|m| m.len() > 0) {
            // The output of the instance before this one: kept for
            // `kubectl logs --previous` until the next restart.
            let previous = previous_log_file_name(&ns, &name, container);
            if self
                .log_clock
                .rename(&log_file_name(&ns, &name, container), &previous)
                .is_ok()
            {
                self.note_log_file(&(ns.clone(), name.clone()), previous);
            }
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("cannot open the container log: {e}"))?;
        self.note_log(&(ns.clone(), name.clone()), container);
        let mut pods = self.pods.lock();
        let entry = pods
            .get_mut(&(ns.clone(), name.clone()))
            .ok_or("the pod has no network yet")?;
        if argv.is_empty() {
            return Err("the container has neither command nor args: podnet runs commands, it does not pull images".into());
        }
        let handle = entry.open_netns().map_err(|e| e.to_string())?;
        self.identity_files(pod, entry)?;
        self.mount_volumes(pod, container, entry)?;
        let mut env = env.to_vec();
        if !env.iter().any(|(k, _)| k == "HOSTNAME") {
            env.push(("HOSTNAME".into(), identity::hostname(pod)));
        }
        let cwd = pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .find(|c| c.name == container)
            .and_then(|c| c.working_dir.clone());
        let child = process::spawn_in_pod(
            &handle,
            entry.pod_ns.as_deref(),
            argv,
            &env,
            log,
            cwd.as_deref(),
        )
        .map_err(|e| e.to_string())?;
        let pid = child.id();
        // Not reaped until this pod's processes are looked at, so the pid
        // is still the child's (a zombie at worst).
        let reaped: ReapedExit = Arc::default();
        let watched = process::PidFd::open(pid)
            .and_then(|fd| self.watcher.watch(fd, &ns, &name, Some(reaped.clone())))
            .is_ok();
        if !watched {
            self.unwatched.lock().insert((ns.clone(), name.clone()));
        }
        let reaped = watched.then_some(reaped);
        entry.containers.insert(
            container.to_string(),
            Process {
                handle: Handle::Child(child),
                pid,
                start_ticks: process::start_time(pid).unwrap_or(0),
                started: SystemTime::now(),
                exit: None,
                reaped,
            },
        );
        Ok(())
    }

    fn state(&self, pod: &Pod, container: &str) -> ProcessState {
        let mut pods = self.pods.lock();
        let Some(entry) = pods.get_mut(&key(pod)) else {
            return ProcessState::Absent;
        };
        if entry.uid != pod.metadata.uid.clone().unwrap_or_default() {
            return ProcessState::Absent;
        }
        let Some(p) = entry.containers.get_mut(container) else {
            return ProcessState::Absent;
        };
        p.poll_exit();
        match p.exit {
            Some((code, at)) => ProcessState::Exited(code, at),
            None => ProcessState::Running(p.started),
        }
    }

    fn signal(&self, pod: &Pod, container: &str, kill: bool) {
        let mut pods = self.pods.lock();
        if let Some(p) = pods
            .get_mut(&key(pod))
            .and_then(|e| e.containers.get_mut(container))
        {
            let sig = if kill {
                Signal::SIGKILL
            } else {
                Signal::SIGTERM
            };
            if let Err(e) = p.signal_group(sig) {
                tracing::warn!(pod = ?key(pod), container, "cannot signal: {e}");
            }
        }
    }

    fn container_id(&self, pod: &Pod, container: &str) -> Option<String> {
        let pods = self.pods.lock();
        let entry = pods.get(&key(pod))?;
        if Some(&entry.uid) != pod.metadata.uid.as_ref() {
            return None;
        }
        entry.containers.get(container).map(Process::container_id)
    }

    fn probe(&self, pod: &Pod, container: &Container, probe: &Probe) -> bool {
        let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
        let Some(ip) = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_ref())
            .and_then(|ip| ip.parse::<IpAddr>().ok())
        else {
            return false;
        };
        if let Some(t) = &probe.tcp_socket {
            let Some(port) = probe_port(container, &t.port) else {
                return false;
            };
            return TcpStream::connect_timeout(&SocketAddr::new(ip, port), timeout).is_ok();
        }
        if let Some(h) = &probe.http_get {
            let Some(port) = probe_port(container, &h.port) else {
                return false;
            };
            let host = h.host.clone().unwrap_or_else(|| ip.to_string());
            return http_get(
                SocketAddr::new(ip, port),
                &host,
                h.path.as_deref().unwrap_or("/"),
                timeout,
            );
        }
        if let Some(e) = &probe.exec {
            let argv = e.command.clone().unwrap_or_default();
            let opened = self
                .pods
                .lock()
                .get(&key(pod))
                .map(|e| (e.open_netns(), e.pod_ns.clone()));
            let Some((Ok(handle), pod_ns)) = opened else {
                return false;
            };
            let Ok(devnull) = OpenOptions::new().write(true).open("/dev/null") else {
                return false;
            };
            let Ok(mut child) =
                process::spawn_in_pod(&handle, pod_ns.as_deref(), &argv, &[], devnull, None)
            else {
                return false;
            };
            let deadline = std::time::Instant::now() + timeout;
            loop {
                match child.try_wait() {
                    Ok(Some(status)) => return status.success(),
                    Ok(None) if std::time::Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    _ => {
                        let _ = process::kill_group(child.id(), Signal::SIGKILL);
                        let _ = child.wait();
                        return false;
                    }
                }
            }
        }
        false
    }

    fn forget(&self, namespace: &str, name: &str) {
        let k = (namespace.to_string(), name.to_string());
        let entry = self.pods.lock().remove(&k);
        if let Some(entry) = entry {
            if let Some(netns) = self.teardown(&k, entry, true) {
                self.remove_namespace_later(&netns);
            }
            self.publish_pods_soon();
        }
        let files = self
            .log_files
            .lock()
            .get_or_insert_with(|| self.read_log_index())
            .remove(&k)
            .unwrap_or_default();
        for f in files {
            self.log_clock.remove(&f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_container_id;

    #[test]
    fn container_ids_name_pid_and_start_time() {
        assert_eq!(
            parse_container_id("podnet://1234-98765"),
            Some((1234, 98765))
        );
        for bad in [
            "podnet://uid/name",
            "docker://1-2",
            "podnet://-1",
            "podnet://1-x",
            "",
        ] {
            assert_eq!(parse_container_id(bad), None, "{bad}");
        }
    }
}
