//! Pod -> network and processes on this node: the kubelet's part.
//!
//! What touches the host is behind [`PodRuntime`] (the daemon's runtime
//! makes namespaces, TUN devices and processes; tests use a fake), so this
//! reconciler is the kubelet's logic alone, with time passed in:
//!
//! * an unbound pod is bound to this node (`spec.nodeName`);
//! * its network comes first (`status.podIP`), then each container's
//!   process (`command` + `args`, or `args` alone; `image` is shown, never
//!   pulled) with its environment ([`super::pod_env`]); a ConfigMap or
//!   Secret (key) it needs and that is missing keeps it waiting with
//!   `CreateContainerConfigError`, and a change of one wakes the pods
//!   that use it;
//! * `restartPolicy` as Kubernetes defines it, with crash-loop back-off
//!   (10 s doubling to 5 min, reset after 10 min of running;
//!   `CrashLoopBackOff` shown while waiting);
//! * startup, liveness and readiness probes with their timings; a
//!   container without a readiness probe is ready while it runs; a
//!   liveness failure restarts the container;
//! * a pod being deleted gets SIGTERM once it is drained (its endpoints
//!   have left the fast path's choice for new connections and those it
//!   was handed are accepted; at most [`DRAIN_MAX`]), then SIGKILL after
//!   its grace period; once its processes
//!   are gone its network is removed and the pod object with it;
//! * status as a cluster reports it: phase, podIP(s), hostIP, conditions
//!   (PodScheduled, Initialized, ContainersReady, Ready), container
//!   statuses with state, lastState, restartCount, ready, started.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus, Probe,
};
use parking_lot::Mutex;

use super::events::{record, reference};
pub use super::pod_env::Allocatable;
use super::pod_env::{container_env, pod_uses, EnvSources, CONFIG_ERROR};
use super::pod_volumes::{resolve_volumes, PodVolume};
use super::{event_kind, key_of, Key, Next, Reconciler};
use crate::control::kinds;
use crate::control::objects::{kube_time, DeleteOptions, LabelSelector, ObjectError, Objects};
use crate::control::store::Event;

/// A container's process as the runtime sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessState {
    /// Not started (or forgotten, after a restart of the daemon).
    Absent,
    /// Running since the given time.
    Running(SystemTime),
    /// Exited with a code (128 + signal for a signal).
    Exited(i32, SystemTime),
}

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// `startupProbe`.
    Startup,
    /// `livenessProbe`.
    Liveness,
    /// `readinessProbe`.
    Readiness,
}

/// What the kubelet asks of the host. Implementations key everything by
/// the pod's namespace, name and uid.
pub trait PodRuntime: Send + Sync {
    /// This node's name.
    fn node_name(&self) -> String;
    /// This node's address (`status.hostIP`).
    fn host_ip(&self) -> String;
    /// Makes the pod's network if it is not there; returns its IPv4 address.
    fn setup_network(&self, pod: &Pod) -> Result<String, String>;
    /// Removes the pod's network (and anything left of its processes).
    fn teardown_network(&self, pod: &Pod);
    /// Starts a container's process with `argv` and `env` in the pod.
    fn start(
        &self,
        pod: &Pod,
        container: &str,
        argv: &[String],
        env: &[(String, String)],
    ) -> Result<(), String>;
    /// A container's process.
    fn state(&self, pod: &Pod, container: &str) -> ProcessState;
    /// Sends SIGTERM, or SIGKILL if `kill`.
    fn signal(&self, pod: &Pod, container: &str, kill: bool);
    /// Runs one probe (bounded by its `timeoutSeconds`); true on success.
    fn probe(&self, pod: &Pod, container: &Container, probe: &Probe) -> bool;
    /// Removes whatever is left of a pod that is gone from the store.
    fn forget(&self, namespace: &str, name: &str);
    /// The runtime's ID of a container's current process
    /// (`status.containerStatuses[].containerID`), if it has one.
    fn container_id(&self, _pod: &Pod, _container: &str) -> Option<String> {
        None
    }
    /// Makes (or brings up to date) the pod's volumes; called before its
    /// containers start and on every later pass (a ConfigMap, Secret or
    /// label change reaches running pods this way). The error is the
    /// kubelet's `MountVolume.SetUp failed ...` message.
    fn sync_volumes(&self, _pod: &Pod, _volumes: &[PodVolume]) -> Result<(), String> {
        Ok(())
    }
    /// Whether a deleted pod is drained: the node's fast path no longer
    /// chooses it for a new connection to a service, and every connection
    /// it was handed has been accepted by its process. Its processes get
    /// SIGTERM only then (or after [`DRAIN_MAX`]), so no connection is
    /// handed to a process that has stopped accepting.
    fn drained(&self, _pod: &Pod) -> bool {
        true
    }
    /// The node's allocatable resources, for `resourceFieldRef` limits a
    /// container does not set.
    fn allocatable(&self) -> Allocatable {
        Allocatable {
            cpu_millis: 1000,
            memory_bytes: 1 << 30,
            ephemeral_bytes: 10 << 30,
        }
    }
}

impl<T: PodRuntime> PodRuntime for std::sync::Arc<T> {
    fn node_name(&self) -> String {
        (**self).node_name()
    }
    fn host_ip(&self) -> String {
        (**self).host_ip()
    }
    fn setup_network(&self, pod: &Pod) -> Result<String, String> {
        (**self).setup_network(pod)
    }
    fn teardown_network(&self, pod: &Pod) {
        (**self).teardown_network(pod)
    }
    fn start(
        &self,
        pod: &Pod,
        container: &str,
        argv: &[String],
        env: &[(String, String)],
    ) -> Result<(), String> {
        (**self).start(pod, container, argv, env)
    }
    fn state(&self, pod: &Pod, container: &str) -> ProcessState {
        (**self).state(pod, container)
    }
    fn signal(&self, pod: &Pod, container: &str, kill: bool) {
        (**self).signal(pod, container, kill)
    }
    fn probe(&self, pod: &Pod, container: &Container, probe: &Probe) -> bool {
        (**self).probe(pod, container, probe)
    }
    fn forget(&self, namespace: &str, name: &str) {
        (**self).forget(namespace, name)
    }
    fn container_id(&self, pod: &Pod, container: &str) -> Option<String> {
        (**self).container_id(pod, container)
    }
    fn allocatable(&self) -> Allocatable {
        (**self).allocatable()
    }
    fn sync_volumes(&self, pod: &Pod, volumes: &[PodVolume]) -> Result<(), String> {
        (**self).sync_volumes(pod, volumes)
    }
    fn drained(&self, pod: &Pod) -> bool {
        (**self).drained(pod)
    }
}

#[derive(Default, Clone)]
struct ProbeState {
    successes: i32,
    failures: i32,
    passed: bool,
    next: Option<SystemTime>,
}

#[derive(Default, Clone)]
struct ContainerMemory {
    restarts: i32,
    backoff_until: Option<SystemTime>,
    last_exit: Option<ContainerStateTerminated>,
    probes: HashMap<ProbeKind, ProbeState>,
    /// The run whose exit was already counted.
    counted_exit: Option<SystemTime>,
}

#[derive(Default)]
struct PodMemory {
    uid: String,
    containers: HashMap<String, ContainerMemory>,
    term_sent: Option<SystemTime>,
    kill_sent: bool,
    /// When the deletion was first seen: SIGTERM waits until the pod is
    /// drained (at most [`DRAIN_MAX`]; see [`PodRuntime::drained`]).
    deletion_seen: Option<SystemTime>,
}

/// The pod reconciler.
pub struct Kubelet<R: PodRuntime> {
    runtime: R,
    memory: Mutex<HashMap<(String, String), PodMemory>>,
}

/// The longest a deleted pod's SIGTERM waits for it to be drained
/// (bounded by its grace period too): a stuck publisher or a process that
/// accepts nothing delays a deletion, it does not keep the pod.
pub const DRAIN_MAX: Duration = Duration::from_secs(10);
/// How often that wait looks again.
const DRAIN_POLL: Duration = Duration::from_millis(10);

const BACKOFF_START: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Running this long resets the back-off.
const BACKOFF_RESET: Duration = Duration::from_secs(600);

fn secs(n: Option<i32>, default: i32) -> Duration {
    Duration::from_secs(n.unwrap_or(default).max(0) as u64)
}

fn condition(type_: &str, ok: bool, old: Option<&PodStatus>, now: SystemTime) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    let prev = old
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == type_));
    PodCondition {
        type_: type_.into(),
        status: status.into(),
        last_transition_time: match prev {
            Some(p) if p.status == status => p.last_transition_time.clone(),
            _ => Some(kube_time(now)),
        },
        reason: (!ok && type_ != "PodScheduled").then(|| {
            if type_ == "Ready" || type_ == "ContainersReady" {
                "ContainersNotReady".into()
            } else {
                "PodNotReady".into()
            }
        }),
        ..Default::default()
    }
}

/// The process a container runs: `command` + `args`, or `args` alone.
pub fn argv(c: &Container) -> Vec<String> {
    c.command
        .iter()
        .flatten()
        .chain(c.args.iter().flatten())
        .cloned()
        .collect()
}

impl<R: PodRuntime> Kubelet<R> {
    /// A kubelet over `runtime`.
    pub fn new(runtime: R) -> Self {
        Self {
            runtime,
            memory: Mutex::new(HashMap::new()),
        }
    }

    /// The runtime.
    pub fn runtime(&self) -> &R {
        &self.runtime
    }

    /// Steps a probe; returns whether it currently passes and when it is due.
    fn run_probe(
        &self,
        pod: &Pod,
        c: &Container,
        probe: &Probe,
        st: &mut ProbeState,
        started: SystemTime,
        now: SystemTime,
    ) -> Option<SystemTime> {
        let first = started + secs(probe.initial_delay_seconds, 0);
        let due = st.next.unwrap_or(first);
        if now < due {
            return Some(due);
        }
        if self.runtime.probe(pod, c, probe) {
            st.successes += 1;
            st.failures = 0;
            if st.successes >= probe.success_threshold.unwrap_or(1) {
                st.passed = true;
            }
        } else {
            st.failures += 1;
            st.successes = 0;
            if st.failures >= probe.failure_threshold.unwrap_or(3) {
                st.passed = false;
            }
        }
        let next = now + secs(probe.period_seconds, 10).max(Duration::from_secs(1));
        st.next = Some(next);
        Some(next)
    }

    fn terminate(
        &self,
        objects: &Objects,
        pod: &Pod,
        mem: &mut PodMemory,
        now: SystemTime,
    ) -> Result<Next, ObjectError> {
        let names: Vec<String> = pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter().map(|c| c.name.clone()))
            .collect();
        let running: Vec<&String> = names
            .iter()
            .filter(|n| matches!(self.runtime.state(pod, n), ProcessState::Running(_)))
            .collect();
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let name = pod.metadata.name.as_deref().unwrap_or("");
        let grace = Duration::from_secs(
            pod.metadata
                .deletion_grace_period_seconds
                .or(pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds))
                .unwrap_or(30)
                .max(0) as u64,
        );
        if !running.is_empty() && mem.term_sent.is_none() {
            // The endpoints reconcilers mark the pod terminating and the
            // publisher takes it out of new connections' choice; wait for
            // that, and for the connections it was handed before to be
            // accepted, before the process stops accepting.
            let seen = *mem.deletion_seen.get_or_insert(now);
            let waited = now.duration_since(seen).unwrap_or_default();
            if waited < DRAIN_MAX.min(grace) && !self.runtime.drained(pod) {
                return Ok(Next::After(DRAIN_POLL));
            }
        }
        if running.is_empty() {
            self.runtime.teardown_network(pod);
            let opts = DeleteOptions {
                grace_period_seconds: Some(0),
                ..Default::default()
            };
            return match objects.delete(kinds::of::<Pod>(), Some(ns), name, opts, now) {
                Ok(_) | Err(ObjectError::NotFound { .. }) => Ok(Next::Done),
                Err(e) => Err(e),
            };
        }
        let sent = *mem.term_sent.get_or_insert_with(|| {
            for n in &running {
                self.runtime.signal(pod, n, false);
                record(
                    objects,
                    reference(pod),
                    false,
                    "Killing",
                    format!("Stopping container {n}"),
                    "kubelet",
                    now,
                );
            }
            now
        });
        if now >= sent + grace {
            if !mem.kill_sent {
                for n in &running {
                    self.runtime.signal(pod, n, true);
                }
                mem.kill_sent = true;
            }
            return Ok(Next::After(Duration::from_millis(100)));
        }
        Ok(Next::After(
            (sent + grace)
                .duration_since(now)
                .unwrap_or_default()
                .min(Duration::from_millis(200)),
        ))
    }
}

impl<R: PodRuntime> Reconciler for Kubelet<R> {
    fn kind(&self) -> &'static str {
        "Pod"
    }

    fn keys_for(&self, objects: &Objects, event: &Event) -> Vec<Key> {
        match event_kind(event) {
            Some(("Pod", obj)) => vec![key_of("Pod", obj)],
            // A pod waiting for a key starts once it appears; a running
            // pod's volumes follow the object.
            // A pod waiting for its claim starts once it is bound.
            Some(("PersistentVolumeClaim", obj)) => {
                let changed = key_of("PersistentVolumeClaim", obj);
                let node = self.runtime.node_name();
                objects
                    .list_as::<Pod>(Some(&changed.namespace), &LabelSelector::default())
                    .into_iter()
                    .filter(|p| {
                        p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node.as_str())
                            && super::volume_claims::claims_of(p).contains(&changed.name)
                    })
                    .map(|p| Key {
                        kind: "Pod",
                        namespace: changed.namespace.clone(),
                        name: p.metadata.name.unwrap_or_default(),
                    })
                    .collect()
            }
            Some((kind @ ("ConfigMap" | "Secret"), obj)) => {
                let changed = key_of(kind, obj);
                let node = self.runtime.node_name();
                objects
                    .list_as::<Pod>(Some(&changed.namespace), &LabelSelector::default())
                    .into_iter()
                    .filter(|p| {
                        p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node.as_str())
                            && pod_uses(p, kind == "Secret", &changed.name)
                    })
                    .map(|p| Key {
                        kind: "Pod",
                        namespace: changed.namespace.clone(),
                        name: p.metadata.name.unwrap_or_default(),
                    })
                    .collect()
            }
            _ => Vec::new(),
        }
    }

    fn reconcile(
        &self,
        objects: &Objects,
        key: &Key,
        now: SystemTime,
    ) -> Result<Next, ObjectError> {
        let mem_key = (key.namespace.clone(), key.name.clone());
        let mut pod: Pod = match objects.get_as(Some(&key.namespace), &key.name) {
            Ok(p) => p,
            Err(ObjectError::NotFound { .. }) => {
                self.memory.lock().remove(&mem_key);
                self.runtime.forget(&key.namespace, &key.name);
                return Ok(Next::Done);
            }
            Err(e) => return Err(e),
        };
        let node = self.runtime.node_name();
        let Some(spec) = pod.spec.clone() else {
            return Ok(Next::Done);
        };
        match spec.node_name.as_deref() {
            None | Some("") => {
                pod.spec.as_mut().expect("checked").node_name = Some(node.clone());
                objects.update_as(&pod, None)?;
                return Ok(Next::Done);
            }
            Some(n) if n != node => return Ok(Next::Done),
            Some(_) => {}
        }
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let mut memory = self.memory.lock();
        let mem = memory.entry(mem_key).or_default();
        if mem.uid != uid {
            // A new pod under an old name (a StatefulSet's): start afresh,
            // but keep the counts the stored status has (a daemon restart).
            *mem = PodMemory {
                uid: uid.clone(),
                ..Default::default()
            };
            for cs in pod
                .status
                .iter()
                .flat_map(|s| s.container_statuses.iter().flatten())
            {
                let m = mem.containers.entry(cs.name.clone()).or_default();
                m.restarts = cs.restart_count;
                m.last_exit = cs.last_state.as_ref().and_then(|s| s.terminated.clone());
            }
        }
        if pod.metadata.deletion_timestamp.is_some() {
            return self.terminate(objects, &pod, mem, now);
        }
        let old_status = pod.status.clone();
        let phase_done = matches!(
            old_status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        );
        if phase_done {
            // Finished: its network (and address) is released; the object
            // and its logs stay until it is deleted, as in Kubernetes.
            self.runtime.teardown_network(&pod);
            return Ok(Next::Done);
        }
        let mut next: Option<SystemTime> = None;
        let mut soon = |t: SystemTime| next = Some(next.map_or(t, |n: SystemTime| n.min(t)));

        // Events are written after the status, which readers wait on.
        let mut later: Vec<(bool, &str, String)> = Vec::new();
        // Network first.
        let ip = match old_status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .filter(|ip| !ip.is_empty())
        {
            Some(ip) => match self.runtime.setup_network(&pod) {
                Ok(now_ip) if now_ip != ip => {
                    // Its network was made anew (its namespace was gone,
                    // its address taken), as a kubelet recreating a
                    // sandbox does: the status follows the address.
                    tracing::warn!(pod = %key.name, was = %ip, now = %now_ip, "the pod's network was set up anew with another address");
                    Some(now_ip)
                }
                Ok(_) => Some(ip),
                Err(e) => {
                    tracing::warn!(pod = %key.name, "network: {e}");
                    soon(now + Duration::from_secs(1));
                    Some(ip)
                }
            },
            None => match self.runtime.setup_network(&pod) {
                Ok(ip) => Some(ip),
                Err(e) => {
                    tracing::warn!(pod = %key.name, "cannot set up the network: {e}");
                    soon(now + Duration::from_secs(1));
                    None
                }
            },
        };

        // Volumes before any container; kept up to date while it runs.
        let mut volumes_ready = true;
        if ip.is_some() && spec.volumes.as_ref().is_some_and(|v| !v.is_empty()) {
            let synced = resolve_volumes(objects, &pod)
                .and_then(|vols| self.runtime.sync_volumes(&pod, &vols));
            if let Err(msg) = synced {
                volumes_ready = false;
                later.push((true, "FailedMount", msg));
                soon(now + Duration::from_secs(2));
            }
        }
        let policy = spec.restart_policy.as_deref().unwrap_or("Always");
        let mut statuses = Vec::new();
        let (mut all_ready, mut any_running, mut all_done, mut any_failed) =
            (true, false, true, false);
        for c in &spec.containers {
            let m = mem.containers.entry(c.name.clone()).or_default();
            let mut state = if ip.is_some() {
                self.runtime.state(&pod, &c.name)
            } else {
                ProcessState::Absent
            };
            // An exit is counted once: it decides a restart.
            if let ProcessState::Exited(code, at) = state {
                if m.counted_exit != Some(at) {
                    m.counted_exit = Some(at);
                    m.last_exit = Some(ContainerStateTerminated {
                        exit_code: code,
                        reason: Some(if code == 0 { "Completed" } else { "Error" }.into()),
                        finished_at: Some(kube_time(at)),
                        ..Default::default()
                    });
                    m.probes.clear();
                    let restart = policy == "Always" || (policy == "OnFailure" && code != 0);
                    if restart {
                        let msg = format!(
                            "Back-off restarting failed container {} in pod {}_{}",
                            c.name, key.name, key.namespace
                        );
                        later.push((true, "BackOff", msg));
                        let exp = m.restarts.clamp(0, 5) as u32;
                        let backoff = (BACKOFF_START * 2u32.pow(exp)).min(BACKOFF_MAX);
                        m.backoff_until = Some(at + backoff);
                        m.restarts += 1;
                    } else {
                        m.backoff_until = None;
                    }
                }
            }
            let restartable =
                |code: i32| policy == "Always" || (policy == "OnFailure" && code != 0);
            let mut waiting: Option<(&str, Option<String>)> = None;
            if ip.is_some() {
                let start_now = match state {
                    ProcessState::Absent => true,
                    ProcessState::Exited(code, _) => {
                        restartable(code) && m.backoff_until.is_none_or(|t| now >= t)
                    }
                    ProcessState::Running(_) => false,
                };
                if start_now && !volumes_ready {
                    waiting = Some(("ContainerCreating", None));
                } else if start_now {
                    let host_ip = self.runtime.host_ip();
                    let sources = EnvSources {
                        objects,
                        host_ip: &host_ip,
                        pod_ip: ip.as_deref(),
                        allocatable: self.runtime.allocatable(),
                    };
                    let started = container_env(&pod, c, &sources)
                        .map_err(|e| (CONFIG_ERROR, e))
                        .and_then(|env| {
                            for msg in &env.skipped {
                                later.push((true, "InvalidEnvironmentVariableNames", msg.clone()));
                            }
                            self.runtime
                                .start(&pod, &c.name, &argv(c), &env.vars)
                                .map_err(|e| ("RunContainerError", e))
                        });
                    match started {
                        Ok(()) => {
                            later.push((false, "Started", format!("Started container {}", c.name)));
                            state = self.runtime.state(&pod, &c.name);
                        }
                        Err((reason, e)) => {
                            later.push((true, "Failed", format!("Error: {e}")));
                            waiting = Some((reason, Some(e)));
                            soon(now + BACKOFF_START);
                        }
                    }
                } else if let ProcessState::Exited(code, _) = state {
                    if restartable(code) {
                        waiting = Some((
                            "CrashLoopBackOff",
                            Some(format!(
                                "back-off restarting failed container {} in pod {}",
                                c.name, key.name
                            )),
                        ));
                        if let Some(t) = m.backoff_until {
                            soon(t);
                        }
                    }
                }
            } else {
                waiting = Some(("ContainerCreating", None));
            }
            let mut ready = false;
            let mut started = None;
            let container_state = match (state, waiting) {
                (_, Some((reason, message))) => {
                    all_done = false;
                    ContainerState {
                        waiting: Some(ContainerStateWaiting {
                            reason: Some(reason.into()),
                            message,
                        }),
                        ..Default::default()
                    }
                }
                (ProcessState::Running(since), None) => {
                    any_running = true;
                    all_done = false;
                    if now.duration_since(since).unwrap_or_default() >= BACKOFF_RESET {
                        m.backoff_until = None;
                    }
                    // Startup gates the others; liveness restarts;
                    // readiness decides the endpoint.
                    let startup_ok = match &c.startup_probe {
                        Some(p) => {
                            let mut st = m.probes.remove(&ProbeKind::Startup).unwrap_or_default();
                            if !st.passed {
                                if let Some(t) = self.run_probe(&pod, c, p, &mut st, since, now) {
                                    soon(t);
                                }
                                if st.failures >= p.failure_threshold.unwrap_or(3) {
                                    self.runtime.signal(&pod, &c.name, true);
                                }
                            }
                            let ok = st.passed;
                            m.probes.insert(ProbeKind::Startup, st);
                            ok
                        }
                        None => true,
                    };
                    started = Some(startup_ok);
                    if startup_ok {
                        if let Some(p) = &c.liveness_probe {
                            let mut st = m.probes.remove(&ProbeKind::Liveness).unwrap_or_default();
                            if let Some(t) = self.run_probe(&pod, c, p, &mut st, since, now) {
                                soon(t);
                            }
                            if st.failures >= p.failure_threshold.unwrap_or(3) {
                                tracing::info!(pod = %key.name, container = %c.name, "liveness probe failed; restarting");
                                let msg = format!(
                                    "Container {} failed liveness probe, will be restarted",
                                    c.name
                                );
                                later.push((true, "Unhealthy", msg));
                                self.runtime.signal(&pod, &c.name, true);
                                st = ProbeState::default();
                                soon(now + Duration::from_millis(100));
                            }
                            m.probes.insert(ProbeKind::Liveness, st);
                        }
                        ready = match &c.readiness_probe {
                            Some(p) => {
                                let mut st =
                                    m.probes.remove(&ProbeKind::Readiness).unwrap_or_default();
                                if let Some(t) = self.run_probe(&pod, c, p, &mut st, since, now) {
                                    soon(t);
                                }
                                let ok = st.passed;
                                m.probes.insert(ProbeKind::Readiness, st);
                                ok
                            }
                            None => true,
                        };
                    }
                    ContainerState {
                        running: Some(ContainerStateRunning {
                            started_at: Some(kube_time(since)),
                        }),
                        ..Default::default()
                    }
                }
                (ProcessState::Exited(code, at), None) => {
                    any_failed |= code != 0;
                    ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            exit_code: code,
                            reason: Some(if code == 0 { "Completed" } else { "Error" }.into()),
                            finished_at: Some(kube_time(at)),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }
                }
                (ProcessState::Absent, None) => {
                    all_done = false;
                    ContainerState {
                        waiting: Some(ContainerStateWaiting {
                            reason: Some("ContainerCreating".into()),
                            message: None,
                        }),
                        ..Default::default()
                    }
                }
            };
            all_ready &= ready;
            statuses.push(ContainerStatus {
                name: c.name.clone(),
                image: c.image.clone().unwrap_or_default(),
                image_id: String::new(),
                container_id: Some(
                    self.runtime
                        .container_id(&pod, &c.name)
                        .unwrap_or_else(|| format!("podnet://{}/{}", uid, c.name)),
                ),
                ready,
                started,
                restart_count: m.restarts,
                state: Some(container_state),
                last_state: m.last_exit.clone().map(|t| ContainerState {
                    terminated: Some(t),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
        let phase = if ip.is_none() {
            "Pending"
        } else if all_done && !statuses.is_empty() {
            if any_failed {
                "Failed"
            } else {
                "Succeeded"
            }
        } else if any_running || statuses.iter().any(|s| s.restart_count > 0) {
            "Running"
        } else {
            "Pending"
        };
        let ready = all_ready && phase == "Running";
        let old = old_status.as_ref();
        let status = PodStatus {
            phase: Some(phase.into()),
            pod_ip: ip.clone(),
            pod_ips: ip.clone().map(|ip| vec![PodIP { ip }]),
            host_ip: Some(self.runtime.host_ip()),
            host_ips: Some(vec![HostIP {
                ip: self.runtime.host_ip(),
            }]),
            start_time: old
                .and_then(|s| s.start_time.clone())
                .or_else(|| Some(kube_time(now))),
            conditions: Some(vec![
                condition("PodScheduled", true, old, now),
                condition("Initialized", true, old, now),
                condition("ContainersReady", ready, old, now),
                condition("Ready", ready, old, now),
            ]),
            container_statuses: Some(statuses),
            qos_class: Some("BestEffort".into()),
            ..Default::default()
        };
        drop(memory);
        if old_status.as_ref() != Some(&status) {
            pod.status = Some(status);
            pod = objects.update_as(&pod, Some("status"))?;
        }
        if old_status.is_none() {
            // Bound at creation (the node's binder), or by this kubelet.
            let msg = format!(
                "Successfully assigned {}/{} to {}",
                key.namespace,
                key.name,
                self.runtime.node_name()
            );
            record(
                objects,
                reference(&pod),
                false,
                "Scheduled",
                msg,
                "default-scheduler",
                now,
            );
        }
        for (warning, reason, message) in later {
            record(
                objects,
                reference(&pod),
                warning,
                reason,
                message,
                "kubelet",
                now,
            );
        }
        Ok(match next {
            Some(t) => Next::After(t.duration_since(now).unwrap_or_default()),
            None => Next::Done,
        })
    }
}
