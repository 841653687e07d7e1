//! A fake daemon for the API tests: an in-memory [`ApiHandler`] served on a
//! Unix socket in a temporary directory, so the server, the client and the CLI
//! are tested end to end without root.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use podnet::api::*;

/// Fixed creation time so that outputs are predictable apart from AGE.
const CREATED: u64 = 1_700_000_000;

#[derive(Default)]
struct State {
    pods: BTreeMap<String, Pod>,
    deployments: BTreeMap<String, Deployment>,
    statefulsets: BTreeMap<String, StatefulSet>,
    services: BTreeMap<String, Service>,
    next_ip: u32,
    next_vip: u32,
    next_suffix: u32,
}

/// The in-memory daemon. A pod named `panic` makes `get_pod` panic, to test
/// that a failing handler becomes a 500.
#[derive(Default)]
pub struct MemoryHandler {
    state: Mutex<State>,
}

impl State {
    fn new_pod(
        &mut self,
        name: &str,
        labels: &Labels,
        command: &[String],
        owner: Option<&str>,
    ) -> Pod {
        self.next_ip += 1;
        let pod = Pod {
            name: name.to_string(),
            uid: format!("uid-{name}-{}", self.next_ip),
            ip: Some(format!("10.244.0.{}", self.next_ip + 1)),
            ipv6: Some(format!("fd00:10:244::{:x}", self.next_ip + 1)),
            phase: PodPhase::Running,
            labels: labels.clone(),
            restarts: 0,
            restart_policy: RestartPolicy::Always,
            command: command.to_vec(),
            netns: format!("/var/run/netns/{name}"),
            pid: Some(1000 + self.next_ip),
            owner: owner.map(str::to_string),
            message: None,
            created: Some(CREATED),
        };
        self.pods.insert(name.to_string(), pod.clone());
        pod
    }

    fn refresh_endpoints(&mut self) {
        for svc in self.services.values_mut() {
            svc.endpoints = self
                .pods
                .values()
                .filter(|p| p.phase == PodPhase::Running)
                .filter(|p| svc.selector.iter().all(|(k, v)| p.labels.get(k) == Some(v)))
                .flat_map(|p| {
                    svc.ports
                        .iter()
                        .map(move |port| format!("{}:{}", p.ip.clone().unwrap(), port.target_port))
                })
                .collect();
        }
    }

    fn scale_deployment(&mut self, name: &str, replicas: u32) -> Deployment {
        let mut d = self.deployments[name].clone();
        while d.pods.len() > replicas as usize {
            let pod = d.pods.pop().unwrap();
            self.pods.remove(&pod);
        }
        while d.pods.len() < replicas as usize {
            self.next_suffix += 1;
            let pod = format!("{name}-x{:04}", self.next_suffix);
            self.new_pod(&pod, &d.labels, &d.command, Some(name));
            d.pods.push(pod);
        }
        d.replicas = replicas;
        d.ready = replicas;
        self.deployments.insert(name.to_string(), d.clone());
        self.refresh_endpoints();
        d
    }

    fn scale_statefulset(&mut self, name: &str, replicas: u32) -> StatefulSet {
        let mut s = self.statefulsets[name].clone();
        while s.pods.len() > replicas as usize {
            let pod = s.pods.pop().unwrap();
            self.pods.remove(&pod);
        }
        while s.pods.len() < replicas as usize {
            let pod = format!("{name}-{}", s.pods.len());
            self.new_pod(&pod, &s.labels, &s.command, Some(name));
            s.pods.push(pod);
        }
        s.replicas = replicas;
        s.ready = replicas;
        self.statefulsets.insert(name.to_string(), s.clone());
        self.refresh_endpoints();
        s
    }
}

fn not_found(kind: &str, name: &str) -> ApiError {
    ApiError::not_found(format!("{kind} \"{name}\" not found"))
}

fn exists(kind: &str, name: &str) -> ApiError {
    ApiError::conflict(format!("{kind} \"{name}\" already exists"))
}

impl MemoryHandler {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ApiHandler for MemoryHandler {
    fn list_pods(&self) -> Result<Vec<Pod>, ApiError> {
        Ok(self.state().pods.values().cloned().collect())
    }
    fn create_pod(&self, spec: PodSpec) -> Result<Pod, ApiError> {
        let mut s = self.state();
        if s.pods.contains_key(&spec.name) {
            return Err(exists("pod", &spec.name));
        }
        let mut pod = s.new_pod(&spec.name, &spec.labels, &spec.command, None);
        pod.restart_policy = spec.restart_policy;
        if let Some(netns) = spec.netns {
            pod.netns = netns;
            pod.pid = None;
        }
        s.pods.insert(pod.name.clone(), pod.clone());
        s.refresh_endpoints();
        Ok(pod)
    }
    fn get_pod(&self, name: &str) -> Result<Pod, ApiError> {
        if name == "panic" {
            panic!("the fake handler panics on purpose");
        }
        self.state()
            .pods
            .get(name)
            .cloned()
            .ok_or_else(|| not_found("pod", name))
    }
    fn delete_pod(&self, name: &str) -> Result<Pod, ApiError> {
        let mut s = self.state();
        let pod = s.pods.remove(name).ok_or_else(|| not_found("pod", name))?;
        s.refresh_endpoints();
        Ok(pod)
    }
    fn pod_logs(&self, name: &str) -> Result<Vec<u8>, ApiError> {
        let s = self.state();
        let pod = s.pods.get(name).ok_or_else(|| not_found("pod", name))?;
        Ok(format!("hello from {}\nline two\n", pod.name).into_bytes())
    }

    fn list_deployments(&self) -> Result<Vec<Deployment>, ApiError> {
        Ok(self.state().deployments.values().cloned().collect())
    }
    fn create_deployment(&self, spec: DeploymentSpec) -> Result<Deployment, ApiError> {
        let mut s = self.state();
        if s.deployments.contains_key(&spec.name) {
            return Err(exists("deployment", &spec.name));
        }
        let d = Deployment {
            name: spec.name.clone(),
            replicas: 0,
            ready: 0,
            labels: spec.labels,
            command: spec.command,
            pods: vec![],
            created: Some(CREATED),
        };
        s.deployments.insert(spec.name.clone(), d);
        Ok(s.scale_deployment(&spec.name, spec.replicas))
    }
    fn get_deployment(&self, name: &str) -> Result<Deployment, ApiError> {
        self.state()
            .deployments
            .get(name)
            .cloned()
            .ok_or_else(|| not_found("deployment", name))
    }
    fn delete_deployment(&self, name: &str) -> Result<Deployment, ApiError> {
        let mut s = self.state();
        if !s.deployments.contains_key(name) {
            return Err(not_found("deployment", name));
        }
        let mut d = s.scale_deployment(name, 0);
        s.deployments.remove(name);
        d.replicas = 0;
        Ok(d)
    }
    fn scale_deployment(&self, name: &str, scale: Scale) -> Result<Deployment, ApiError> {
        let mut s = self.state();
        if !s.deployments.contains_key(name) {
            return Err(not_found("deployment", name));
        }
        Ok(s.scale_deployment(name, scale.replicas))
    }

    fn list_statefulsets(&self) -> Result<Vec<StatefulSet>, ApiError> {
        Ok(self.state().statefulsets.values().cloned().collect())
    }
    fn create_statefulset(&self, spec: StatefulSetSpec) -> Result<StatefulSet, ApiError> {
        let mut s = self.state();
        if s.statefulsets.contains_key(&spec.name) {
            return Err(exists("statefulset", &spec.name));
        }
        let set = StatefulSet {
            name: spec.name.clone(),
            replicas: 0,
            ready: 0,
            service: spec.service,
            labels: spec.labels,
            command: spec.command,
            pods: vec![],
            created: Some(CREATED),
        };
        s.statefulsets.insert(spec.name.clone(), set);
        Ok(s.scale_statefulset(&spec.name, spec.replicas))
    }
    fn get_statefulset(&self, name: &str) -> Result<StatefulSet, ApiError> {
        self.state()
            .statefulsets
            .get(name)
            .cloned()
            .ok_or_else(|| not_found("statefulset", name))
    }
    fn delete_statefulset(&self, name: &str) -> Result<StatefulSet, ApiError> {
        let mut s = self.state();
        if !s.statefulsets.contains_key(name) {
            return Err(not_found("statefulset", name));
        }
        let set = s.scale_statefulset(name, 0);
        s.statefulsets.remove(name);
        Ok(set)
    }
    fn scale_statefulset(&self, name: &str, scale: Scale) -> Result<StatefulSet, ApiError> {
        let mut s = self.state();
        if !s.statefulsets.contains_key(name) {
            return Err(not_found("statefulset", name));
        }
        Ok(s.scale_statefulset(name, scale.replicas))
    }

    fn list_services(&self) -> Result<Vec<Service>, ApiError> {
        Ok(self.state().services.values().cloned().collect())
    }
    fn create_service(&self, spec: ServiceSpec) -> Result<Service, ApiError> {
        let mut s = self.state();
        if s.services.contains_key(&spec.name) {
            return Err(exists("service", &spec.name));
        }
        s.next_vip += 1;
        let cluster_ip = spec
            .cluster_ip
            .unwrap_or_else(|| format!("10.96.0.{}", s.next_vip + 9));
        let svc = Service {
            name: spec.name.clone(),
            cluster_ip,
            ports: spec.ports,
            selector: spec.selector,
            session_affinity: spec.session_affinity,
            endpoints: vec![],
            created: Some(CREATED),
        };
        s.services.insert(spec.name.clone(), svc);
        s.refresh_endpoints();
        Ok(s.services[&spec.name].clone())
    }
    fn get_service(&self, name: &str) -> Result<Service, ApiError> {
        self.state()
            .services
            .get(name)
            .cloned()
            .ok_or_else(|| not_found("service", name))
    }
    fn delete_service(&self, name: &str) -> Result<Service, ApiError> {
        self.state()
            .services
            .remove(name)
            .ok_or_else(|| not_found("service", name))
    }

    fn nat_rules(&self) -> Result<Vec<NatRule>, ApiError> {
        let s = self.state();
        let mut rules = Vec::new();
        for svc in s.services.values() {
            for port in &svc.ports {
                let backends = svc
                    .endpoints
                    .iter()
                    .filter(|e| e.ends_with(&format!(":{}", port.target_port)))
                    .map(|e| NatBackend {
                        address: e.clone(),
                        state: "ready".into(),
                    })
                    .collect();
                rules.push(NatRule {
                    service: svc.name.clone(),
                    frontend: format!("{}:{}/{}", svc.cluster_ip, port.port, port.protocol),
                    backends,
                });
            }
        }
        Ok(rules)
    }
    fn conntrack(&self) -> Result<Vec<ConntrackEntry>, ApiError> {
        Ok(vec![ConntrackEntry {
            protocol: "tcp".into(),
            state: "ESTABLISHED".into(),
            original: FlowTuple {
                src: "10.244.0.2:40000".into(),
                dst: "10.96.0.10:80".into(),
            },
            reply: FlowTuple {
                src: "10.244.0.3:8080".into(),
                dst: "10.244.0.2:40000".into(),
            },
            idle_seconds: 3,
        }])
    }
    fn reset(&self) -> Result<ResetSummary, ApiError> {
        let mut s = self.state();
        let summary = ResetSummary {
            pods: s.pods.len() as u32,
            deployments: s.deployments.len() as u32,
            statefulsets: s.statefulsets.len() as u32,
            services: s.services.len() as u32,
            warnings: vec![],
        };
        *s = State::default();
        Ok(summary)
    }
}

/// The fake daemon on a socket in a temporary directory; stops on drop.
pub struct TestServer {
    pub socket: PathBuf,
    shutdown: Arc<AtomicBool>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    pub fn start() -> TestServer {
        Self::start_with(ServerConfig::default())
    }

    pub fn start_with(config: ServerConfig) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("podnet.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let shutdown = Arc::new(AtomicBool::new(false));
        let handler: Arc<dyn ApiHandler> = Arc::new(MemoryHandler::default());
        let stop = Arc::clone(&shutdown);
        let thread = std::thread::spawn(move || serve_with(listener, handler, stop, config));
        TestServer {
            socket,
            shutdown,
            thread: Some(thread),
            _dir: dir,
        }
    }

    pub fn client(&self) -> ApiClient {
        ApiClient::new(&self.socket).with_timeout(Duration::from_secs(10))
    }

    /// Stops the server and returns what `serve` returned.
    pub fn stop(mut self) -> std::io::Result<()> {
        self.shutdown.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
