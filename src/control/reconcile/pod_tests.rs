//! The kubelet reconciler against a fake runtime and a fake clock.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Container, Pod, Probe};
use parking_lot::Mutex;
use serde_json::json;

use super::pod::{Kubelet, PodRuntime, ProcessState};
use super::replica_set::pod_ready;
use super::*;
use crate::control::kinds;
use crate::control::objects::{DeleteOptions, WriteOptions};
use crate::control::store::MemStore;

/// A start the fake saw: pod, argv, env.
type Started = (String, Vec<String>, Vec<(String, String)>);

struct Fake {
    now: Mutex<SystemTime>,
    procs: Mutex<HashMap<(String, String), ProcessState>>,
    networks: Mutex<HashMap<String, String>>,
    started: Mutex<Vec<Started>>,
    signals: Mutex<Vec<(String, bool)>>,
    probe_ok: Mutex<bool>,
    /// Processes that ignore SIGTERM.
    stubborn: Mutex<bool>,
    /// Pods not drained: the fast path still sends new connections to them.
    balanced: Mutex<std::collections::HashSet<String>>,
}

impl Default for Fake {
    fn default() -> Self {
        Fake {
            now: Mutex::new(SystemTime::UNIX_EPOCH),
            procs: Default::default(),
            networks: Default::default(),
            started: Default::default(),
            signals: Default::default(),
            probe_ok: Default::default(),
            stubborn: Default::default(),
            balanced: Default::default(),
        }
    }
}

impl PodRuntime for Fake {
    fn node_name(&self) -> String {
        "node-1".into()
    }
    fn host_ip(&self) -> String {
        "192.0.2.1".into()
    }
    fn setup_network(&self, pod: &Pod) -> Result<String, String> {
        let mut n = self.networks.lock();
        let len = n.len();
        Ok(n.entry(pod.metadata.name.clone().unwrap())
            .or_insert_with(|| format!("10.244.0.{}", len + 2))
            .clone())
    }
    fn drained(&self, pod: &Pod) -> bool {
        !self
            .balanced
            .lock()
            .contains(pod.metadata.name.as_deref().unwrap())
    }
    fn teardown_network(&self, pod: &Pod) {
        self.networks
            .lock()
            .remove(pod.metadata.name.as_deref().unwrap());
    }
    fn start(
        &self,
        pod: &Pod,
        container: &str,
        argv: &[String],
        env: &[(String, String)],
    ) -> Result<(), String> {
        let name = pod.metadata.name.clone().unwrap();
        self.started
            .lock()
            .push((name.clone(), argv.to_vec(), env.to_vec()));
        self.procs.lock().insert(
            (name, container.into()),
            ProcessState::Running(*self.now.lock()),
        );
        Ok(())
    }
    fn state(&self, pod: &Pod, container: &str) -> ProcessState {
        *self
            .procs
            .lock()
            .get(&(pod.metadata.name.clone().unwrap(), container.into()))
            .unwrap_or(&ProcessState::Absent)
    }
    fn signal(&self, pod: &Pod, container: &str, kill: bool) {
        let name = pod.metadata.name.clone().unwrap();
        self.signals.lock().push((name.clone(), kill));
        if kill || !*self.stubborn.lock() {
            let code = if kill { 137 } else { 143 };
            self.procs.lock().insert(
                (name, container.into()),
                ProcessState::Exited(code, *self.now.lock()),
            );
        }
    }
    fn probe(&self, _: &Pod, _: &Container, _: &Probe) -> bool {
        *self.probe_ok.lock()
    }
    fn forget(&self, _: &str, name: &str) {
        self.networks.lock().remove(name);
    }
}

struct Node {
    objects: Objects,
    manager: Manager,
    rt: Arc<Fake>,
    now: SystemTime,
}

impl Node {
    fn new() -> Node {
        let objects = Objects::new(Arc::new(MemStore::new()), SystemTime::now()).unwrap();
        let rt = Arc::new(Fake::default());
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        *rt.now.lock() = now;
        let manager = Manager::new(objects.clone(), vec![Box::new(Kubelet::new(rt.clone()))]);
        Node {
            objects,
            manager,
            rt,
            now,
        }
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        *self.rt.now.lock() = self.now;
        self.manager.run_until_idle(self.now);
    }

    fn pod(&self, name: &str) -> Pod {
        self.objects.get_as(Some("default"), name).unwrap()
    }

    fn exit(&mut self, name: &str, code: i32) {
        self.rt.procs.lock().insert(
            (name.into(), "c".into()),
            ProcessState::Exited(code, self.now),
        );
        // The runtime's exit notice: the pod is looked at again.
        let mut p = self.pod(name);
        p.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert("test/poke".into(), format!("{:?}", self.now));
        self.objects.update_as(&p, None).unwrap();
    }

    /// Deletes pod `name` as the API does (graceful: the kubelet stops it).
    fn delete(&mut self, name: &str) {
        self.objects
            .delete(
                kinds::of::<Pod>(),
                Some("default"),
                name,
                DeleteOptions::default(),
                self.now,
            )
            .unwrap();
    }

    fn create(&mut self, spec: serde_json::Value) {
        self.objects
            .create(
                kinds::of::<Pod>(),
                Some("default"),
                spec,
                WriteOptions::default(),
                self.now,
            )
            .unwrap();
        self.advance(Duration::ZERO);
    }
}

fn pod_json(name: &str, policy: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut c = json!({"name": "c", "image": "python:3", "args": ["python3", "-m", "http.server"], "env": [{"name": "X", "value": "1"}]});
    if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {"restartPolicy": policy, "containers": [c]}})
}

#[test]
fn a_pod_is_bound_addressed_started_and_ready() {
    let mut n = Node::new();
    n.create(pod_json("web", "Always", json!({})));
    let p = n.pod("web");
    assert_eq!(
        p.spec.as_ref().unwrap().node_name.as_deref(),
        Some("node-1")
    );
    let st = p.status.clone().unwrap();
    assert_eq!(st.phase.as_deref(), Some("Running"));
    assert_eq!(st.pod_ip.as_deref(), Some("10.244.0.2"));
    assert_eq!(st.host_ip.as_deref(), Some("192.0.2.1"));
    assert!(pod_ready(&p), "no readiness probe: ready while running");
    let started = n.rt.started.lock().clone();
    assert_eq!(started.len(), 1);
    assert_eq!(
        started[0].1,
        ["python3", "-m", "http.server"],
        "args alone when command is empty"
    );
    assert_eq!(started[0].2, [("X".to_string(), "1".to_string())]);
}

#[test]
fn restart_policy_and_crash_loop_back_off() {
    let mut n = Node::new();
    n.create(pod_json("always", "Always", json!({})));
    n.exit("always", 1);
    n.advance(Duration::ZERO);
    let cs = n
        .pod("always")
        .status
        .unwrap()
        .container_statuses
        .unwrap()
        .remove(0);
    assert_eq!(cs.restart_count, 1);
    assert_eq!(
        cs.state.unwrap().waiting.unwrap().reason.as_deref(),
        Some("CrashLoopBackOff")
    );
    assert_eq!(cs.last_state.unwrap().terminated.unwrap().exit_code, 1);
    assert!(!pod_ready(&n.pod("always")));
    n.advance(Duration::from_secs(9));
    assert_eq!(n.rt.started.lock().len(), 1, "still backing off");
    n.advance(Duration::from_secs(1));
    assert_eq!(n.rt.started.lock().len(), 2, "restarted after 10 s");
    assert!(pod_ready(&n.pod("always")));
    // The second crash waits 20 s.
    n.exit("always", 2);
    n.advance(Duration::from_secs(19));
    assert_eq!(n.rt.started.lock().len(), 2);
    n.advance(Duration::from_secs(1));
    assert_eq!(n.rt.started.lock().len(), 3);

    n.create(pod_json("once", "OnFailure", json!({})));
    n.exit("once", 0);
    n.advance(Duration::ZERO);
    assert_eq!(
        n.pod("once").status.unwrap().phase.as_deref(),
        Some("Succeeded")
    );
    n.create(pod_json("never", "Never", json!({})));
    n.exit("never", 3);
    n.advance(Duration::from_secs(60));
    let st = n.pod("never").status.unwrap();
    assert_eq!(st.phase.as_deref(), Some("Failed"));
    assert_eq!(st.container_statuses.unwrap()[0].restart_count, 0);
}

#[test]
fn readiness_and_liveness_probes() {
    let mut n = Node::new();
    let probes = json!({
        "readinessProbe": {"tcpSocket": {"port": 8000}, "initialDelaySeconds": 2, "periodSeconds": 1, "failureThreshold": 2},
        "livenessProbe": {"tcpSocket": {"port": 8000}, "initialDelaySeconds": 30, "periodSeconds": 5, "failureThreshold": 3},
    });
    n.create(pod_json("web", "Always", probes));
    assert!(
        !pod_ready(&n.pod("web")),
        "not ready before the first probe"
    );
    *n.rt.probe_ok.lock() = true;
    n.advance(Duration::from_secs(2));
    assert!(pod_ready(&n.pod("web")));
    // Two failures make it not ready; the process keeps running.
    *n.rt.probe_ok.lock() = false;
    n.advance(Duration::from_secs(1));
    assert!(pod_ready(&n.pod("web")), "one failure is not enough");
    n.advance(Duration::from_secs(1));
    assert!(!pod_ready(&n.pod("web")));
    assert_eq!(n.rt.started.lock().len(), 1);
    // Liveness from 30 s: three failures 5 s apart kill and restart it.
    for _ in 0..40 {
        n.advance(Duration::from_secs(1));
    }
    let kills = n.rt.signals.lock().iter().filter(|(_, kill)| *kill).count();
    assert_eq!(kills, 1, "killed once by the liveness probe");
    assert_eq!(
        n.pod("web").status.unwrap().container_statuses.unwrap()[0].restart_count,
        1
    );
}

#[test]
fn deletion_terms_then_kills_then_removes() {
    let mut n = Node::new();
    let mut spec = pod_json("web", "Always", json!({}));
    spec["spec"]["terminationGracePeriodSeconds"] = 5.into();
    n.create(spec);
    n.delete("web");
    // SIGTERM only once the fast path sends it no new connection.
    n.rt.balanced.lock().insert("web".into());
    n.advance(Duration::ZERO);
    n.advance(Duration::from_millis(500));
    assert!(
        n.rt.signals.lock().is_empty(),
        "no SIGTERM while the pod is a ready backend"
    );
    n.rt.balanced.lock().clear();
    n.advance(Duration::from_millis(10));
    assert_eq!(*n.rt.signals.lock(), [("web".to_string(), false)]);
    // Polite processes go at SIGTERM.
    n.advance(Duration::from_millis(200));
    n.advance(Duration::from_millis(200));
    assert!(
        n.objects.get_as::<Pod>(Some("default"), "web").is_err(),
        "removed once its process stopped"
    );
    assert!(n.rt.networks.lock().is_empty(), "network removed");
    assert_eq!(*n.rt.signals.lock(), [("web".to_string(), false)]);

    // A stubborn one gets SIGKILL after the grace period.
    *n.rt.stubborn.lock() = true;
    n.rt.signals.lock().clear();
    let mut spec = pod_json("slow", "Always", json!({}));
    spec["spec"]["terminationGracePeriodSeconds"] = 5.into();
    n.create(spec);
    n.delete("slow");
    n.advance(Duration::ZERO);
    for _ in 0..20 {
        n.advance(Duration::from_millis(200));
    }
    assert!(
        n.objects.get_as::<Pod>(Some("default"), "slow").is_ok(),
        "still within its grace period"
    );
    for _ in 0..10 {
        n.advance(Duration::from_millis(200));
    }
    assert!(n.objects.get_as::<Pod>(Some("default"), "slow").is_err());
    assert_eq!(
        *n.rt.signals.lock(),
        [("slow".to_string(), false), ("slow".to_string(), true)]
    );
}

#[test]
fn the_downward_api_fills_env_and_other_sources_are_refused() {
    let mut n = Node::new();
    let env = json!({"env": [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
        {"name": "TIER", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['tier']"}}},
        {"name": "PLAIN", "value": "v"},
    ]});
    let mut pod = pod_json("web", "Always", env);
    pod["metadata"]["labels"] = json!({"tier": "front"});
    n.create(pod);
    let started = n.rt.started.lock().clone();
    assert_eq!(started.len(), 1, "{:?}", n.pod("web").status);
    let got: std::collections::BTreeMap<_, _> = started[0].2.iter().cloned().collect();
    assert_eq!(got["POD_NAME"], "web");
    assert_eq!(got["POD_NAMESPACE"], "default");
    assert_eq!(
        got["POD_IP"], "10.244.0.2",
        "the address given at this start"
    );
    assert_eq!(got["NODE"], "node-1");
    assert_eq!(got["HOST_IP"], "192.0.2.1");
    assert_eq!(got["TIER"], "front");
    assert_eq!(got["PLAIN"], "v");
}

impl Node {
    fn put(&mut self, kind: &str, name: &str, data: serde_json::Value) {
        let mut obj = json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": name}});
        let field = if kind == "Secret" {
            "stringData"
        } else {
            "data"
        };
        obj[field] = data;
        let k = kinds::KINDS.iter().find(|k| k.kind == kind).unwrap();
        let stored = self.objects.get(k, Some("default"), name);
        match stored {
            Ok(old) => {
                obj["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
                self.objects
                    .update(k, Some("default"), name, obj, None, WriteOptions::default())
                    .unwrap();
            }
            Err(_) => {
                self.objects
                    .create(k, Some("default"), obj, WriteOptions::default(), self.now)
                    .unwrap();
            }
        }
        self.advance(Duration::ZERO);
    }

    fn waiting(&self, name: &str) -> Option<(String, String)> {
        let cs = self.pod(name).status?.container_statuses?;
        let w = cs[0].state.as_ref()?.waiting.clone()?;
        Some((w.reason.unwrap_or_default(), w.message.unwrap_or_default()))
    }

    fn events(&self) -> Vec<(String, String)> {
        self.objects
            .list_as::<k8s_openapi::api::core::v1::Event>(Some("default"), &Default::default())
            .into_iter()
            .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
            .collect()
    }

    fn env_of(&self, pod: &str) -> std::collections::BTreeMap<String, String> {
        let started = self.rt.started.lock();
        let last = started.iter().rev().find(|s| s.0 == pod).expect("started");
        last.2.iter().cloned().collect()
    }
}

#[test]
fn a_missing_config_map_or_key_waits_with_the_kubelets_message_then_starts() {
    let mut n = Node::new();
    let env = json!({"env": [
        {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "a"}}},
        {"name": "S", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "pw"}}},
        {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "x", "optional": true}}},
        {"name": "REF", "value": "a=$(A) $$(A) $(UNSET)"},
    ]});
    n.create(pod_json("app", "Always", env));
    assert_eq!(
        n.waiting("app"),
        Some((
            "CreateContainerConfigError".into(),
            "configmap \"cfg\" not found".into()
        ))
    );
    assert!(n
        .events()
        .contains(&("Failed".into(), "Error: configmap \"cfg\" not found".into())));
    assert!(n.rt.started.lock().is_empty());

    // The ConfigMap without the key: the next message, at once (the
    // ConfigMap's event wakes the pod).
    n.put("ConfigMap", "cfg", json!({"b": "2"}));
    assert_eq!(
        n.waiting("app").unwrap().1,
        "couldn't find key a in ConfigMap default/cfg"
    );
    n.put("ConfigMap", "cfg", json!({"a": "1", "b": "2"}));
    assert_eq!(n.waiting("app").unwrap().1, "secret \"sec\" not found");
    n.put("Secret", "sec", json!({"other": "x"}));
    assert_eq!(
        n.waiting("app").unwrap().1,
        "couldn't find key pw in Secret default/sec"
    );
    assert!(n.rt.started.lock().is_empty());
    n.put("Secret", "sec", json!({"pw": "hunter2"}));
    let env = n.env_of("app");
    assert_eq!(env["A"], "1");
    assert_eq!(env["S"], "hunter2");
    assert!(!env.contains_key("OPT"), "optional and missing: left out");
    assert_eq!(env["REF"], "a=1 $(A) $(UNSET)");
    assert_eq!(n.waiting("app"), None);
}

#[test]
fn env_from_with_prefix_skips_invalid_names_and_env_wins() {
    let mut n = Node::new();
    n.put(
        "ConfigMap",
        "cfg",
        json!({"LEVEL": "debug", "1bad": "x", "ok.dotted": "y", "MODE": "from-map"}),
    );
    n.put("Secret", "sec", json!({"TOKEN": "t0k"}));
    let env = json!({
        "envFrom": [
            {"configMapRef": {"name": "cfg"}},
            {"prefix": "SEC_", "secretRef": {"name": "sec"}},
            {"configMapRef": {"name": "absent", "optional": true}},
        ],
        "env": [{"name": "MODE", "value": "literal"}],
    });
    n.create(pod_json("app", "Always", env));
    let env = n.env_of("app");
    assert_eq!(env["LEVEL"], "debug");
    assert_eq!(env["ok.dotted"], "y");
    assert_eq!(env["SEC_TOKEN"], "t0k");
    assert_eq!(env["MODE"], "literal", "env overrides envFrom");
    assert!(!env.contains_key("1bad"));
    assert!(n.events().contains(&(
        "InvalidEnvironmentVariableNames".into(),
        "Keys [1bad] from the EnvFrom configMap default/cfg were skipped since they are considered invalid environment variable names.".into()
    )));

    let missing = json!({"envFrom": [{"secretRef": {"name": "gone"}}]});
    n.create(pod_json("other", "Always", missing));
    assert_eq!(
        n.waiting("other"),
        Some((
            "CreateContainerConfigError".into(),
            "secret \"gone\" not found".into()
        ))
    );
}

#[test]
fn resource_field_refs_render_as_the_kubelet_does() {
    let mut n = Node::new();
    let env = json!({
        "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": "250m"}},
        "env": [
            {"name": "CPU_LIMIT", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
            {"name": "CPU_LIMIT_M", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1m"}}},
            {"name": "CPU_REQ_M", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu", "divisor": "1m"}}},
            {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory"}}},
            {"name": "MEM_MI", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
            {"name": "MEM_REQ", "valueFrom": {"resourceFieldRef": {"resource": "requests.memory"}}},
        ],
    });
    n.create(pod_json("app", "Always", env));
    let env = n.env_of("app");
    assert_eq!(env["CPU_LIMIT"], "1", "500m rounded up to whole cores");
    assert_eq!(env["CPU_LIMIT_M"], "500");
    assert_eq!(env["CPU_REQ_M"], "250");
    assert_eq!(env["MEM"], (128u64 << 20).to_string());
    assert_eq!(env["MEM_MI"], "128");
    assert_eq!(env["MEM_REQ"], "0", "no request: 0");

    // No limits: the node's allocatable amount (the fake: 1 core, 1 GiB).
    let env = json!({"env": [
        {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1m"}}},
        {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
    ]});
    n.create(pod_json("bare", "Always", env));
    let env = n.env_of("bare");
    assert_eq!(env["CPU"], "1000");
    assert_eq!(env["MEM"], "1024");
}

#[test]
fn quantities_and_expansion() {
    use super::pod_env::{expand, is_env_var_name, parse_quantity};
    let g = 1_000_000_000i128;
    assert_eq!(parse_quantity("1"), Some(g));
    assert_eq!(parse_quantity("500m"), Some(g / 2));
    assert_eq!(parse_quantity("0.5"), Some(g / 2));
    assert_eq!(parse_quantity("1Ki"), Some(1024 * g));
    assert_eq!(parse_quantity("2M"), Some(2_000_000 * g));
    assert_eq!(parse_quantity("1e3"), Some(1000 * g));
    assert_eq!(parse_quantity("100u"), Some(100_000));
    for bad in ["", "abc", "1x", "1.2.3", ".", "1Zi"] {
        assert_eq!(parse_quantity(bad), None, "{bad}");
    }
    let vars = [("A".to_string(), "x".to_string())];
    assert_eq!(expand("$(A)-$(B)-$$-$", &vars), "x-$(B)-$-$");
    assert_eq!(expand("$(A", &vars), "$(A");
    assert!(is_env_var_name("a.b-c_1"));
    assert!(!is_env_var_name("1a"));
    assert!(!is_env_var_name("a b"));
    assert!(!is_env_var_name(""));
}

#[test]
fn a_deleted_pod_still_balanced_to_gets_sigterm_after_the_drain_bound() {
    let mut n = Node::new();
    let mut spec = pod_json("web", "Always", json!({}));
    spec["spec"]["terminationGracePeriodSeconds"] = 30.into();
    n.create(spec);
    n.rt.balanced.lock().insert("web".into());
    n.delete("web");
    n.advance(Duration::ZERO);
    for _ in 0..9 {
        n.advance(Duration::from_secs(1));
    }
    assert!(n.rt.signals.lock().is_empty(), "waiting for the fast path");
    n.advance(Duration::from_secs(1));
    assert_eq!(
        *n.rt.signals.lock(),
        [("web".to_string(), false)],
        "a publisher that never lets go delays the pod, it does not keep it"
    );
}
