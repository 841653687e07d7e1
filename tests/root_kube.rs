//! podnetd with the Kubernetes control plane (`--kube-api`), driven by the
//! real kubectl: manifests applied, pods run as real processes in their own
//! network namespaces, services reached through their cluster IP.
//!
//! Needs root. The daemon runs in a node namespace made for the test; every
//! object lives in a Kubernetes namespace unique to the run (`t<pid>k<n>`),
//! so the pods' network namespaces (`<namespace>.<pod>`) never collide;
//! everything is removed on drop, also when the test fails.

mod daemon_support;

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use daemon_support::{require_env, run_timeout, text, wait_for, PODNETD};

struct KubeNode {
    netns: String,
    namespace: String,
    _tmp: tempfile::TempDir,
    kubeconfig: PathBuf,
    log: PathBuf,
    daemon: Option<Child>,
}

const API_PORT: u16 = 16443;

impl KubeNode {
    fn start() -> KubeNode {
        require_env();
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let tmp = tempfile::Builder::new()
            .prefix("podnet-kube-test-")
            .tempdir()
            .unwrap();
        let mut node = KubeNode {
            netns: format!("pnk-{pid}-{n}"),
            namespace: format!("t{pid}k{n}"),
            kubeconfig: tmp.path().join("admin.kubeconfig"),
            log: tmp.path().join("podnetd.log"),
            _tmp: tmp,
            daemon: None,
        };
        assert!(Command::new("ip")
            .args(["netns", "add", &node.netns])
            .status()
            .unwrap()
            .success());
        assert!(Command::new("ip")
            .args(["-n", &node.netns, "link", "set", "lo", "up"])
            .status()
            .unwrap()
            .success());
        node.start_daemon();
        let ns = format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {}\n",
            node.namespace
        );
        node.kubectl_ok(&["apply", "-f", "-"], Some(&ns));
        node
    }

    fn start_daemon(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", self.netns))
            .arg(PODNETD)
            .args(["--kube-api", "--workers", "2", "--node-name", "node-t"])
            .arg("--api-listen")
            .arg(format!("127.0.0.1:{API_PORT}"))
            .arg("--state-dir")
            .arg(self._tmp.path().join("state"))
            .arg("--socket")
            .arg(self._tmp.path().join("podnet.sock"))
            .arg("--admin-kubeconfig")
            .arg(&self.kubeconfig)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.daemon = Some(child);
        let up = wait_for(Duration::from_secs(60), || {
            if let Some(st) = self.daemon.as_mut().unwrap().try_wait().unwrap() {
                panic!("podnetd exited with {st}:\n{}", self.log());
            }
            (self.kubeconfig.exists() && self.kubectl(&["get", "nodes"], None).status.success())
                .then_some(())
        });
        assert!(
            up.is_some(),
            "the API did not answer within 60 s:\n{}",
            self.log()
        );
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// kubectl in the node's network namespace (the API listens on its
    /// loopback), with only KUBECONFIG set.
    fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/var/run/netns/{}", self.netns))
            .arg("kubectl")
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self._tmp.path())
            .env("KUBECONFIG", &self.kubeconfig);
        match stdin {
            None => run_timeout(cmd, Duration::from_secs(180)).0,
            Some(input) => {
                use std::io::Write;
                let mut child = cmd
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(input.as_bytes())
                    .unwrap();
                child.wait_with_output().unwrap()
            }
        }
    }

    fn kubectl_ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}{}\ndaemon log:\n{}",
            text(&out.stdout),
            text(&out.stderr),
            self.log()
        );
        text(&out.stdout)
    }

    /// kubectl in this test's namespace.
    fn k(&self, args: &[&str]) -> String {
        let mut a = vec!["-n", self.namespace.as_str()];
        a.extend_from_slice(args);
        self.kubectl_ok(&a, None)
    }

    fn apply(&self, manifest: &str) -> String {
        self.kubectl_ok(&["apply", "-n", &self.namespace, "-f", "-"], Some(manifest))
    }

    /// `curl` from the node namespace.
    fn curl(&self, url: &str) -> Option<String> {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/var/run/netns/{}", self.netns))
            .args(["curl", "-s", "--max-time", "5", url]);
        let (out, _) = run_timeout(cmd, Duration::from_secs(10));
        out.status.success().then(|| text(&out.stdout))
    }
}

impl Drop for KubeNode {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
        // Every pod namespace of this run, with whatever runs in it.
        let prefix = format!("{}.", self.namespace);
        for ns in podnet::sys::netns::list().unwrap_or_default() {
            if ns.starts_with(&prefix) {
                podnet::daemon::runtime::stop_processes_in(&ns);
                let _ = podnet::sys::netns::remove(&ns);
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

fn web_manifest(replicas: u32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: web
        image: python:3
        command: ["python3", "-c"]
        args:
        - |
          import http.server, os
          body = os.environ["HOSTNAME"].encode()
          class H(http.server.BaseHTTPRequestHandler):
              def do_GET(self):
                  self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
              def log_message(self, *a): print(*a, flush=True)
          http.server.ThreadingHTTPServer(("", 8080), H).serve_forever()
        ports:
        - containerPort: 8080
        readinessProbe:
          httpGet: {{path: /, port: 8080}}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {{app: web}}
  ports:
  - port: 80
    targetPort: 8080
"#
    )
}

fn pod_names(node: &KubeNode, selector: &str) -> Vec<String> {
    let out = node.k(&[
        "get",
        "pods",
        "-l",
        selector,
        "-o",
        "jsonpath={range .items[?(@.status.phase==\"Running\")]}{.metadata.name}{\"\\n\"}{end}",
    ]);
    out.lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn root_kubectl_deploys_pods_behind_a_service_and_follows_changes() {
    let _serial = daemon_support::serial();
    let node = KubeNode::start();
    let nodes = node.kubectl_ok(&["get", "nodes", "-o", "wide"], None);
    assert!(
        nodes.contains("node-t") && nodes.contains("Ready"),
        "{nodes}"
    );
    assert_eq!(
        node.kubectl_ok(
            &["get", "node", "node-t", "-o", "jsonpath={.spec.podCIDR}"],
            None
        ),
        "10.244.0.0/24"
    );

    let applied = node.apply(&web_manifest(3));
    assert!(applied.contains("deployment.apps/web created"), "{applied}");
    node.k(&["rollout", "status", "deployment/web", "--timeout=180s"]);
    let pods = pod_names(&node, "app=web");
    assert_eq!(pods.len(), 3, "{pods:?}");
    let ips = node.k(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[*].status.podIP}",
    ]);
    assert!(
        ips.split_whitespace().all(|ip| ip.starts_with("10.244.0.")),
        "{ips}"
    );
    let wide = node.k(&["get", "pods", "-o", "wide"]);
    assert!(
        wide.contains("Running") && wide.contains("1/1") && wide.contains("node-t"),
        "{wide}"
    );

    let cluster_ip = node.k(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    assert!(cluster_ip.starts_with("10.96."), "{cluster_ip}");
    let eps = node.k(&[
        "get",
        "endpoints",
        "web",
        "-o",
        "jsonpath={.subsets[*].addresses[*].ip}",
    ]);
    assert_eq!(eps.split_whitespace().count(), 3, "{eps}");
    let slices = node.k(&[
        "get",
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=web",
        "-o",
        "jsonpath={.items[*].endpoints[*].addresses[0]}",
    ]);
    assert_eq!(slices.split_whitespace().count(), 3, "{slices}");

    // Requests through the cluster IP reach every pod.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..60 {
        if let Some(who) = node.curl(&format!("http://{cluster_ip}/")) {
            seen.insert(who);
        }
        if seen.len() == 3 {
            break;
        }
    }
    let mut expected: Vec<String> = pods.clone();
    expected.sort();
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), expected);

    // What the pods printed, and what happened to them.
    let logs = node.k(&["logs", &pods[0]]);
    assert!(logs.contains("GET / HTTP/1.1"), "{logs}");
    let tail = node.k(&["logs", &pods[0], "--tail=1"]);
    assert_eq!(tail.lines().count(), 1, "{tail}");
    let described = node.k(&["describe", "pod", &pods[0]]);
    assert!(
        described.contains("Events:")
            && described.contains("Started")
            && described.contains("Scheduled"),
        "{described}"
    );
    let events = node.k(&["get", "events"]);
    assert!(
        events.contains("ScalingReplicaSet") && events.contains("SuccessfulCreate"),
        "{events}"
    );

    // A deleted pod is replaced by a new one with its own address, and the
    // endpoints follow.
    let victim = pods[0].clone();
    node.k(&["delete", "pod", &victim, "--wait=true"]);
    let replaced = wait_for(Duration::from_secs(120), || {
        let now = pod_names(&node, "app=web");
        let eps = node.k(&[
            "get",
            "endpoints",
            "web",
            "-o",
            "jsonpath={.subsets[*].addresses[*].targetRef.name}",
        ]);
        (now.len() == 3
            && !now.contains(&victim)
            && eps.split_whitespace().count() == 3
            && !eps.contains(&victim))
        .then_some(now)
    });
    assert!(
        replaced.is_some(),
        "no replacement for {victim}:\n{}",
        node.k(&["get", "pods,endpoints", "-o", "wide"])
    );

    // Scaled, and everything it made goes with `delete -f`.
    node.k(&["scale", "deployment", "web", "--replicas=1"]);
    assert!(
        wait_for(Duration::from_secs(120), || (pod_names(&node, "app=web")
            .len()
            == 1)
            .then_some(()))
        .is_some()
    );
    node.kubectl_ok(
        &["delete", "-n", &node.namespace, "-f", "-"],
        Some(&web_manifest(1)),
    );
    let gone = wait_for(Duration::from_secs(120), || {
        let left = node.k(&["get", "deploy,rs,pods,svc,endpoints", "-o", "name"]);
        let netns = podnet::sys::netns::list().unwrap_or_default();
        (left.trim().is_empty()
            && !netns
                .iter()
                .any(|n| n.starts_with(&format!("{}.", node.namespace))))
        .then_some(())
    });
    assert!(
        gone.is_some(),
        "left behind:\n{}",
        node.k(&["get", "all", "-o", "wide"])
    );
}

#[test]
fn root_statefulset_pods_come_in_order_and_keep_their_addresses() {
    let _serial = daemon_support::serial();
    let node = KubeNode::start();
    node.apply(
        r#"apiVersion: v1
kind: Service
metadata:
  name: db
spec:
  clusterIP: None
  selector: {app: db}
  ports:
  - port: 5432
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db
spec:
  serviceName: db
  replicas: 2
  selector:
    matchLabels: {app: db}
  template:
    metadata:
      labels: {app: db}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: db
        image: postgres
        command: ["sleep", "100000"]
"#,
    );
    node.k(&["rollout", "status", "statefulset/db", "--timeout=180s"]);
    assert_eq!(pod_names(&node, "app=db"), ["db-0", "db-1"]);
    let created = |name: &str| {
        node.k(&[
            "get",
            "pod",
            name,
            "-o",
            "jsonpath={.metadata.creationTimestamp}",
        ])
    };
    assert!(created("db-0") <= created("db-1"), "db-0 first");
    let ip0 = node.k(&["get", "pod", "db-0", "-o", "jsonpath={.status.podIP}"]);
    let uid0 = node.k(&["get", "pod", "db-0", "-o", "jsonpath={.metadata.uid}"]);
    node.k(&["delete", "pod", "db-0", "--wait=true"]);
    let back = wait_for(Duration::from_secs(120), || {
        let uid = node.kubectl(
            &[
                "get",
                "pod",
                "db-0",
                "-n",
                &node.namespace,
                "-o",
                "jsonpath={.metadata.uid} {.status.podIP} {.status.phase}",
            ],
            None,
        );
        let t = text(&uid.stdout);
        (uid.status.success() && !t.starts_with(&uid0) && t.ends_with("Running")).then_some(t)
    });
    let back = back.unwrap_or_else(|| panic!("db-0 did not come back:\n{}", node.log()));
    assert!(
        back.contains(&ip0),
        "db-0 came back with another address: {back} (was {ip0})"
    );
}
