//! Root tests: cluster DNS served by podnetd, asked from inside pods with
//! the real resolvers (glibc's `getent`, Python, `dig`), objects made with
//! the real kubectl: service names (full and through the search path),
//! a headless StatefulSet's pod names following the pod, SRV and PTR
//! records, NXDOMAIN for unknown cluster names, and a name outside the
//! cluster answered by the test's own upstream server (a tiny DNS server
//! in the node's namespace; the daemon never asks the host's resolvers).
//!
//! Needs root; the harness is `kube_node`.

mod daemon_support;
mod kube_node;

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use daemon_support::{run_timeout, text, wait_for, PODNET, POD_START, SETTLE};
use kube_node::KubeNode;

/// The test's upstream: answers `ext.example.` A 192.0.2.77 (TTL 60),
/// NXDOMAIN otherwise, and appends each question to a log file.
const UPSTREAM: &str = r#"
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", int(sys.argv[1])))
log = open(sys.argv[2], "a", buffering=1)
while True:
    q, peer = s.recvfrom(4096)
    i, labels = 12, []
    while q[i]:
        labels.append(q[i + 1:i + 1 + q[i]].decode().lower())
        i += 1 + q[i]
    qtype = struct.unpack("!H", q[i + 1:i + 3])[0]
    question = q[12:i + 5]
    name = ".".join(labels)
    log.write(f"{name} {qtype}\n")
    if name == "ext.example" and qtype == 1:
        head = struct.pack("!HHHHHH", struct.unpack("!H", q[:2])[0], 0x8180, 1, 1, 0, 0)
        rr = struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + bytes([192, 0, 2, 77])
        s.sendto(head + question + rr, peer)
    else:
        head = struct.pack("!HHHHHH", struct.unpack("!H", q[:2])[0], 0x8183, 1, 0, 0, 0)
        s.sendto(head + question, peer)
"#;

const UPSTREAM_PORT: u16 = 5353;

/// The upstream server, stopped on drop.
struct Upstream(Child);

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_upstream(node: &KubeNode) -> (Upstream, std::path::PathBuf) {
    let script = node._tmp.path().join("upstream.py");
    let log = node._tmp.path().join("upstream.log");
    std::fs::write(&script, UPSTREAM).unwrap();
    std::fs::write(&log, "").unwrap();
    let child = Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{}", node.netns))
        .arg("python3")
        .arg(&script)
        .arg(UPSTREAM_PORT.to_string())
        .arg(&log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    (Upstream(child), log)
}

/// `podnet pod exec POD -- ARGS` against the test's daemon.
fn exec(node: &KubeNode, pod: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(PODNET);
    cmd.arg("--socket")
        .arg(node._tmp.path().join("podnet.sock"))
        .args(["-n", &node.namespace, "pod", "exec", pod, "--"])
        .args(args);
    run_timeout(cmd, Duration::from_secs(30)).0
}

fn exec_ok(node: &KubeNode, pod: &str, args: &[&str]) -> String {
    let out = exec(node, pod, args);
    assert!(
        out.status.success(),
        "exec {args:?} in {pod} failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn jsonpath(node: &KubeNode, what: &str, path: &str) -> String {
    let out = node.kubectl(
        &[
            "-n",
            &node.namespace,
            "get",
            what,
            "-o",
            &format!("jsonpath={path}"),
        ],
        None,
    );
    text(&out.stdout)
}

/// Waits for `pod` Running with an address (`when` names the step in a
/// failure); returns the address.
fn wait_running(node: &KubeNode, pod: &str, when: &str) -> String {
    let ip = wait_for(POD_START, || {
        let ip = jsonpath(node, &format!("pod/{pod}"), "{.status.podIP}");
        (jsonpath(node, &format!("pod/{pod}"), "{.status.phase}") == "Running" && !ip.is_empty())
            .then_some(ip)
    });
    ip.unwrap_or_else(|| {
        panic!(
            "pod {pod} not Running ({when}):\n{}\n{}\n{}",
            node.k(&["get", "pod", pod, "-o", "yaml"]),
            node.k(&["get", "events"]),
            node.log()
        )
    })
}

/// `dig @10.96.0.10 ARGS +short` in `pod`, its lines.
fn dig_short(node: &KubeNode, pod: &str, args: &[&str]) -> Vec<String> {
    let mut a = vec!["dig", "@10.96.0.10", "+short", "+time=2", "+tries=2"];
    a.extend_from_slice(args);
    exec_ok(node, pod, &a)
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}

/// The `status:` of a full `dig` answer.
fn dig_status(node: &KubeNode, pod: &str, args: &[&str]) -> String {
    let mut a = vec!["dig", "@10.96.0.10", "+time=2", "+tries=2"];
    a.extend_from_slice(args);
    let out = exec_ok(node, pod, &a);
    out.split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or_else(|| panic!("no status in dig's answer:\n{out}"))
        .to_string()
}

/// Waits until `getent hosts NAME` in `pod` gives `want` first.
fn wait_getent(node: &KubeNode, pod: &str, name: &str, want: &str) {
    let got = wait_for(SETTLE, || {
        let out = exec(node, pod, &["getent", "hosts", name]);
        let first = text(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_string();
        (first == want).then_some(())
    });
    assert!(
        got.is_some(),
        "getent hosts {name} in {pod} never gave {want}: {:?}\n{}",
        exec(node, pod, &["getent", "hosts", name]),
        node.log()
    );
}

const SLEEPER: &str = r#"["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]"#;

#[test]
fn root_cluster_dns_answers_pods_from_services_statefulsets_and_upstream() {
    let node = KubeNode::start_with(&["--dns-upstream", &format!("127.0.0.1:{UPSTREAM_PORT}")]);
    let (_upstream, upstream_log) = start_upstream(&node);
    let ns = node.namespace.clone();

    // The cluster DNS service holds the address pods are given; the first
    // service the test makes gets another one.
    let dns_ip = node.kubectl_ok(
        &[
            "-n",
            "kube-system",
            "get",
            "svc",
            "kube-dns",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ],
        None,
    );
    assert_eq!(dns_ip, "10.96.0.10");
    node.apply(&format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: c
        image: busybox
        command: {SLEEPER}
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {{app: web}}
  ports:
  - {{name: http, port: 80, targetPort: 8080}}
---
apiVersion: v1
kind: Service
metadata:
  name: db
spec:
  clusterIP: None
  selector: {{app: db}}
  ports:
  - {{name: pg, port: 5432}}
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db
spec:
  serviceName: db
  replicas: 1
  selector: {{matchLabels: {{app: db}}}}
  template:
    metadata: {{labels: {{app: db}}}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: c
        image: busybox
        command: {SLEEPER}
---
apiVersion: v1
kind: Pod
metadata:
  name: client
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: c
    image: busybox
    command: {SLEEPER}
"#
    ));
    let web_ip = jsonpath(&node, "svc/web", "{.spec.clusterIP}");
    assert!(!web_ip.is_empty() && web_ip != "10.96.0.10", "{web_ip}");
    wait_running(&node, "client", "first start");
    let db0_ip = wait_running(&node, "db-0", "first start");

    // Service names, full and through the search path (glibc's resolver
    // reading the pod's resolv.conf).
    let fqdn = format!("web.{ns}.svc.cluster.local");
    wait_getent(&node, "client", &fqdn, &web_ip);
    wait_getent(&node, "client", "web", &web_ip);
    // The StatefulSet's pod by its stable name.
    wait_getent(&node, "client", "db-0.db", &db0_ip);

    // dig against the cluster DNS address: A, AAAA (no IPv6 service
    // address: an empty answer, not an error), SRV, PTR, over UDP and TCP.
    assert_eq!(dig_short(&node, "client", &[&fqdn, "A"]), [web_ip.as_str()]);
    assert_eq!(
        dig_short(&node, "client", &["+tcp", &fqdn, "A"]),
        [web_ip.as_str()]
    );
    assert_eq!(dig_status(&node, "client", &[&fqdn, "AAAA"]), "NOERROR");
    assert!(dig_short(&node, "client", &[&fqdn, "AAAA"]).is_empty());
    assert_eq!(
        dig_short(&node, "client", &[&format!("_http._tcp.{fqdn}"), "SRV"]),
        [format!("0 100 80 {fqdn}.")]
    );
    let db_fqdn = format!("db.{ns}.svc.cluster.local");
    assert_eq!(
        dig_short(&node, "client", &[&format!("_pg._tcp.{db_fqdn}"), "SRV"]),
        [format!("0 100 5432 db-0.{db_fqdn}.")]
    );
    assert_eq!(
        dig_short(&node, "client", &[&db_fqdn, "A"]),
        [db0_ip.as_str()]
    );
    assert_eq!(
        dig_short(&node, "client", &["-x", &web_ip]),
        [format!("{fqdn}.")]
    );
    assert_eq!(
        dig_short(&node, "client", &["-x", &db0_ip]),
        [format!("db-0.{db_fqdn}.")]
    );
    let client_ip = jsonpath(&node, "pod/client", "{.status.podIP}");
    assert_eq!(
        dig_short(&node, "client", &["-x", &client_ip]),
        [format!(
            "{}.{ns}.pod.cluster.local.",
            client_ip.replace('.', "-")
        )]
    );

    // An unknown cluster name: NXDOMAIN, answered (not a timeout).
    let unknown = format!("nope.{ns}.svc.cluster.local");
    assert_eq!(dig_status(&node, "client", &[&unknown, "A"]), "NXDOMAIN");
    let t0 = Instant::now();
    let out = exec(&node, "client", &["getent", "hosts", &unknown]);
    eprintln!(
        "getent hosts {unknown}: exit {:?} in {:?}",
        out.status.code(),
        t0.elapsed()
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    // Python's getfqdn in a pod returns (its own name from /etc/hosts and
    // the cluster DNS for the rest).
    let fq = exec_ok(
        &node,
        "client",
        &[
            "python3",
            "-c",
            "import socket, time; t = time.monotonic(); n = socket.getfqdn(); print(n, round((time.monotonic() - t) * 1000, 1))",
        ],
    );
    eprintln!("socket.getfqdn() in a pod: {fq}");
    assert!(fq.starts_with("client"), "{fq}");

    // A name outside the cluster: the test's upstream answers; the second
    // ask is served from the cache.
    assert_eq!(
        dig_short(&node, "client", &["ext.example", "A"]),
        ["192.0.2.77"]
    );
    assert_eq!(
        dig_short(&node, "client", &["ext.example", "A"]),
        ["192.0.2.77"]
    );
    let asked = std::fs::read_to_string(&upstream_log).unwrap();
    assert_eq!(
        asked.lines().filter(|l| *l == "ext.example 1").count(),
        1,
        "upstream log:\n{asked}"
    );
    assert_eq!(
        dig_status(&node, "client", &["other.example", "A"]),
        "NXDOMAIN"
    );

    // db-0 deleted: the name follows the pod that comes back.
    node.k(&["delete", "pod", "db-0", "--wait=true", "--timeout=90s"]);
    let new_ip = wait_running(&node, "db-0", "after kubectl delete pod db-0");
    wait_getent(&node, "client", "db-0.db", &new_ip);
    assert_eq!(dig_short(&node, "client", &[&db_fqdn, "A"]), [new_ip]);

    // Services that go leave DNS as they leave the fast path.
    node.k(&["delete", "svc", "web"]);
    let gone = wait_for(SETTLE, || {
        (dig_status(&node, "client", &[&fqdn, "A"]) == "NXDOMAIN").then_some(())
    });
    assert!(
        gone.is_some(),
        "{fqdn} still answered after the service was deleted"
    );
}
