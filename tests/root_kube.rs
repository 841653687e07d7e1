//! podnetd with the Kubernetes control plane, driven by the
//! real kubectl: manifests applied, pods run as real processes in their own
//! network namespaces, services reached through their cluster IP.
//!
//! Needs root. The daemon runs in a node namespace made for the test; every
//! object lives in a Kubernetes namespace unique to the run (`t<pid>k<n>`),
//! so the pods' network namespaces (`<namespace>.<pod>`) never collide;
//! everything is removed on drop, also when the test fails (the harness
//! is `kube_node`).

mod daemon_support;
mod kube_node;

use std::fs::File;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use daemon_support::{run_timeout, text, wait_for};
use kube_node::KubeNode;

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

/// Running pods matching `selector` that are not being deleted, by name.
fn pod_names(node: &KubeNode, selector: &str) -> Vec<String> {
    let list: serde_json::Value =
        serde_json::from_str(&node.k(&["get", "pods", "-l", selector, "-o", "json"])).unwrap();
    let mut names: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null()
        })
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
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

    // `kubectl run NAME --image=X -- CMD` sends the command as args alone.
    node.k(&[
        "run",
        "hello",
        "--image=busybox",
        "--restart=Never",
        "--",
        "sh",
        "-c",
        "echo hi from $HOSTNAME",
    ]);
    let done = wait_for(Duration::from_secs(60), || {
        (node.k(&["get", "pod", "hello", "-o", "jsonpath={.status.phase}"]) == "Succeeded")
            .then_some(())
    });
    assert!(
        done.is_some(),
        "{}",
        node.k(&["get", "pod", "hello", "-o", "yaml"])
    );
    assert_eq!(node.k(&["logs", "hello"]).trim(), "hi from hello");
    // Finished: its network namespace and address are released; the object
    // and its log stay until it is deleted.
    let hello_ns = format!("{}.hello", node.namespace);
    let released = wait_for(Duration::from_secs(60), || {
        (!podnet::sys::netns::list()
            .unwrap_or_default()
            .contains(&hello_ns))
        .then_some(())
    });
    assert!(
        released.is_some(),
        "the finished pod kept its network namespace"
    );
    node.k(&["delete", "pod", "hello"]);

    // The same API on the root-only Unix socket, without TLS.
    let sock = node._tmp.path().join("podnet.sock");
    let (out, _) = run_timeout(
        {
            let mut c = Command::new("curl");
            c.args(["-s", "--unix-socket"]).arg(&sock).arg(format!(
                "http://localhost/api/v1/namespaces/{}/services/web",
                node.namespace
            ));
            c
        },
        Duration::from_secs(10),
    );
    let svc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(
        svc["spec"]["clusterIP"],
        cluster_ip.as_str(),
        "{}",
        text(&out.stdout)
    );

    // `podnet apply -f` takes the same manifests, over the socket.
    let manifest = format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-podnet\n  namespace: {}\ndata:\n  a: b\n", node.namespace);
    let out = {
        use std::io::Write;
        let mut child = Command::new(daemon_support::PODNET)
            .arg("--socket")
            .arg(&sock)
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(manifest.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    assert!(
        out.status.success(),
        "podnet apply: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("configmap/from-podnet serverside-applied"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(
        node.k(&["get", "cm", "from-podnet", "-o", "jsonpath={.data.a}"]),
        "b"
    );

    // The node's counters, as Prometheus reads them.
    let metrics = node.kubectl_ok(&["get", "--raw", "/metrics"], None);
    let value = |line_start: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {line_start} in\n{metrics}"))
    };
    assert!(value("podnet_packets_forwarded_total{to=\"pod\"}") > 0.0);
    assert_eq!(value("podnet_pods{phase=\"Running\"}"), 3.0);
    assert!(value("podnet_nat_rules") >= 1.0);
    assert!(value("kubeproxy_sync_proxy_rules_duration_seconds_count") >= 1.0);
    assert!(
        metrics.contains("podnet_packets_dropped_total{reason=\"spoofed\"}"),
        "{metrics}"
    );

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

/// A web server that finishes what it is serving on SIGTERM, as a
/// production server does (the pod leaves the fast path before SIGTERM).
fn graceful_web(extra_env: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  strategy:
    rollingUpdate: {{maxSurge: 1, maxUnavailable: 0}}
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      terminationGracePeriodSeconds: 10
      containers:
      - name: web
        image: python:3
        env: [{extra_env}]
        command: ["python3", "-c"]
        args:
        - |
          import http.server, os, signal, threading, time
          body = os.environ["HOSTNAME"].encode()
          class H(http.server.BaseHTTPRequestHandler):
              protocol_version = "HTTP/1.0"
              def do_GET(self):
                  self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
              def log_message(self, *a): pass
          srv = http.server.ThreadingHTTPServer(("", 8080), H)
          signal.signal(signal.SIGTERM, lambda *a: threading.Thread(target=srv.shutdown).start())
          srv.serve_forever()
          time.sleep(0.5)
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

/// The last `n` lines of `text`.
fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A client in the node namespace sending requests to `url` back to back
/// until `stop` exists; prints `ok N fail M`.
fn load_client(node: &KubeNode, url: &str, stop: &std::path::Path) -> Child {
    let code = format!(
        r#"import http.client, os, time, urllib.parse
u = urllib.parse.urlsplit({url:?})
ok = fail = 0
errors = []
while not os.path.exists({stop:?}):
    c = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=5)
    port = None
    try:
        c.connect()
        port = c.sock.getsockname()[1]
        c.request("GET", u.path or "/")
        c.getresponse().read()
        ok += 1
    except Exception as e:
        fail += 1
        errors.append(f"{{e!r}} at {{time.time():.3f}} from port {{port}}")
    finally:
        c.close()
print("ok", ok, "fail", fail, errors[:5], flush=True)
"#,
        stop = stop.display().to_string()
    );
    Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{}", node.netns))
        .args(["python3", "-c", &code])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn root_rolling_update_under_load_fails_no_request_and_undo_restores() {
    let _serial = daemon_support::serial();
    let node = KubeNode::start();
    node.apply(&graceful_web(""));
    node.k(&["rollout", "status", "deployment/web", "--timeout=180s"]);
    let cluster_ip = node.k(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    let before: Vec<String> = pod_names(&node, "app=web");

    let watch_log = node._tmp.path().join("watch.txt");
    let mut watcher = node
        .kubectl_command(&["get", "pods", "-w", "-n", &node.namespace])
        .stdout(File::create(&watch_log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let stop = node._tmp.path().join("stop");
    let client = load_client(&node, &format!("http://{cluster_ip}/"), &stop);
    node.k(&["set", "env", "deployment/web", "X=1"]);
    node.k(&["rollout", "status", "deployment/web", "--timeout=180s"]);
    std::fs::write(&stop, "").unwrap();
    let out = client.wait_with_output().unwrap();
    let report = text(&out.stdout);
    let words: Vec<&str> = report.split_whitespace().collect();
    assert!(
        words.len() >= 4 && words[0] == "ok" && words[2] == "fail",
        "client: {report}{}",
        text(&out.stderr)
    );
    let (ok, fail): (u64, u64) = (words[1].parse().unwrap(), words[3].parse().unwrap());
    assert!(ok > 0, "{report}");
    assert_eq!(
        fail,
        0,
        "requests failed during the rolling update: {report}\ncounters: {}\nend of the daemon log:\n{}",
        node.k(&["get", "--raw", "/podnet/v1/stats"]),
        tail_lines(&node.log(), 60)
    );

    let after = pod_names(&node, "app=web");
    assert_eq!(after.len(), 3);
    assert!(
        after.iter().all(|p| !before.contains(p)),
        "every pod replaced: {before:?} -> {after:?}"
    );
    for p in &after {
        let env = node.k(&["get", "pod", p, "-o", "jsonpath={.spec.containers[0].env}"]);
        assert!(env.contains("\"X\"") && env.contains("\"1\""), "{p}: {env}");
    }
    let history = node.k(&["rollout", "history", "deployment/web"]);
    assert!(history.contains('1') && history.contains('2'), "{history}");

    // `kubectl get pods -w` saw the new pods come.
    let seen = wait_for(Duration::from_secs(30), || {
        let w = std::fs::read_to_string(&watch_log).unwrap_or_default();
        after.iter().all(|p| w.contains(p.as_str())).then_some(w)
    });
    let _ = watcher.kill();
    let _ = watcher.wait();
    assert!(
        seen.is_some(),
        "kubectl get pods -w did not show {after:?}:\n{}",
        std::fs::read_to_string(&watch_log).unwrap_or_default()
    );

    // Undo: the first template again, as revision 3.
    node.k(&["rollout", "undo", "deployment/web"]);
    node.k(&["rollout", "status", "deployment/web", "--timeout=180s"]);
    let rev = node.k(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.metadata.annotations.deployment\\.kubernetes\\.io/revision}",
    ]);
    assert_eq!(rev, "3");
    let undone = pod_names(&node, "app=web");
    assert_eq!(undone.len(), 3, "{undone:?}");
    for p in &undone {
        let env = node.k(&["get", "pod", p, "-o", "jsonpath={.spec.containers[0].env}"]);
        assert!(
            !env.contains("\"X\""),
            "undo brought back the template without X: {p}: {env}"
        );
    }
}

#[test]
fn root_sigkill_during_apply_loses_no_acknowledged_object_and_pods_keep_their_addresses() {
    let _serial = daemon_support::serial();
    let mut node = KubeNode::start();
    node.apply(&web_manifest(2));
    node.k(&["rollout", "status", "deployment/web", "--timeout=180s"]);
    let ips = |node: &KubeNode| -> Vec<(String, String)> {
        let list: serde_json::Value =
            serde_json::from_str(&node.k(&["get", "pods", "-l", "app=web", "-o", "json"])).unwrap();
        let mut v: Vec<(String, String)> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["metadata"]["name"].as_str().unwrap().to_string(),
                    p["status"]["podIP"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let before = ips(&node);

    let manifest: String = (0..50)
        .map(|i| format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i}\ndata:\n  i: \"{i}\"\n---\n"))
        .collect();
    let mut apply = node
        .kubectl_command(&["apply", "-n", &node.namespace, "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        apply
            .stdin
            .take()
            .unwrap()
            .write_all(manifest.as_bytes())
            .unwrap();
    }
    // Kill the daemon once kubectl has had some of its writes acknowledged.
    std::thread::sleep(Duration::from_millis(
        150 + u64::from(std::process::id() % 300),
    ));
    let mut daemon = node.daemon.take().unwrap();
    let _ = daemon.kill(); // SIGKILL
    let _ = daemon.wait();
    let out = apply.wait_with_output().unwrap();
    let acked: Vec<String> = text(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.strip_prefix("configmap/")
                .and_then(|r| r.strip_suffix(" created"))
                .map(str::to_string)
        })
        .collect();

    // Left by a crash: the namespace of a pod that no longer exists, with
    // a process in it, recorded as podnet records a namespace before
    // making it (one it did not record is not its to remove).
    let ghost = format!("{}.ghost", node.namespace);
    assert!(Command::new("ip")
        .args(["netns", "add", &ghost])
        .status()
        .unwrap()
        .success());
    let made = node._tmp.path().join("state").join("netns");
    std::fs::create_dir_all(&made).unwrap();
    std::fs::write(made.join(&ghost), b"").unwrap();
    let mut ghost_proc = Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{ghost}"))
        .args(["sleep", "1000"])
        .spawn()
        .unwrap();

    node.start_daemon();
    let ghost_gone = wait_for(Duration::from_secs(30), || {
        (!podnet::sys::netns::list()
            .unwrap_or_default()
            .contains(&ghost)
            && ghost_proc.try_wait().unwrap().is_some())
        .then_some(())
    });
    let _ = ghost_proc.kill();
    let _ = ghost_proc.wait();
    assert!(
        ghost_gone.is_some(),
        "the orphaned pod namespace {ghost} (and its process) outlived the restart"
    );
    let stored = node.k(&[
        "get",
        "configmaps",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}{\"\\n\"}{end}",
    ]);
    let stored: Vec<&str> = stored.lines().filter(|l| l.starts_with("cm-")).collect();
    for name in &acked {
        assert!(
            stored.contains(&name.as_str()),
            "{name} was acknowledged but is gone; stored: {stored:?}"
        );
    }
    let mut unique = stored.clone();
    unique.dedup();
    assert_eq!(unique.len(), stored.len(), "an object twice: {stored:?}");
    eprintln!(
        "{} acknowledged before the kill, {} stored after the restart",
        acked.len(),
        stored.len()
    );

    // The pods are back, running, under their names and addresses.
    let back = wait_for(Duration::from_secs(120), || {
        let now = ips(&node);
        (now == before && pod_names(&node, "app=web").len() == 2).then_some(())
    });
    assert!(
        back.is_some(),
        "pods before {before:?}, after {:?}\n{}",
        ips(&node),
        node.log()
    );
    // The rest of the manifest applies after the restart.
    node.kubectl_ok(
        &["apply", "-n", &node.namespace, "-f", "-"],
        Some(&manifest),
    );
    let all = node.k(&["get", "configmaps", "-o", "name"]);
    assert_eq!(
        all.lines()
            .filter(|l| l.starts_with("configmap/cm-"))
            .count(),
        50
    );
}

/// A pod made just after another is deleted often gets the number the
/// deleted pod's network namespace had (the kernel hands out the lowest
/// free one). The stray-process sweep that follows a deletion must not
/// take the new pod's processes for the old one's.
#[test]
fn root_a_pod_made_right_after_a_deletion_is_left_running() {
    let _serial = daemon_support::serial();
    let node = KubeNode::start();
    let pod = |name: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: none\n    command: [\"sleep\", \"100000\"]\n"
        )
    };
    for round in 0..3 {
        let old = format!("old{round}");
        let new = format!("new{round}");
        node.apply(&pod(&old));
        node.k(&[
            "wait",
            "--for=condition=Ready",
            &format!("pod/{old}"),
            "--timeout=180s",
        ]);
        node.k(&["delete", "pod", &old, "--wait=true"]);
        node.apply(&pod(&new));
        node.k(&[
            "wait",
            "--for=condition=Ready",
            &format!("pod/{new}"),
            "--timeout=180s",
        ]);
    }
    // The sweep looks twice, a second apart: give it time to have looked.
    std::thread::sleep(Duration::from_secs(3));
    for round in 0..3 {
        let state = node.k(&[
            "get",
            "pod",
            &format!("new{round}"),
            "-o",
            "jsonpath={.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].state.running.startedAt}",
        ]);
        assert!(
            state.starts_with("0 ") && state.len() > 2,
            "new{round} was killed after old{round}'s deletion: {state}\n{}",
            node.log()
        );
    }
}
