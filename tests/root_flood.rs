//! One pod SYN-floods a service while another opens real connections
//! through the same cluster IP: the other pod's connections succeed (issue
//! 9, item 4). Before per-source shares, the flood filled all 262,144
//! connection tracking entries in seconds and the other pod's new
//! connections timed out.
//!
//! Needs root. `podnetd` runs in a network namespace made for
//! the test (the `kube_node` harness); the flood and every connection stay
//! inside the pods' and the node's namespaces, removed on drop.
//!
//! Prints `flood.other_pod_success_ratio` and `flood.rss_mb_peak` (with
//! `--nocapture`; `scripts/bench-flood.sh` runs it that way).

mod daemon_support;
mod kube_node;

use std::time::Duration;

use daemon_support::wait_for;
use kube_node::KubeNode;

/// Connections the other pod opens, one after another.
const CONNECTIONS: usize = 400;

/// Backends answering HTTP on six ports, behind one service with six ports
/// (80-85 -> 8080-8085), as in the reproduction.
fn echo_manifest() -> String {
    let ports: String = (0..6)
        .map(|i| {
            format!(
                "  - {{name: p{i}, port: {}, targetPort: {}}}\n",
                80 + i,
                8080 + i
            )
        })
        .collect();
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: echo
spec:
  replicas: 2
  selector:
    matchLabels: {{app: echo}}
  template:
    metadata:
      labels: {{app: echo}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: echo
        image: python:3
        command: ["python3", "-c"]
        args:
        - |
          import http.server, threading
          class H(http.server.BaseHTTPRequestHandler):
              protocol_version = "HTTP/1.0"
              def do_GET(self):
                  self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok")
              def log_message(self, *a): pass
          class S(http.server.ThreadingHTTPServer):
              request_queue_size = 1024
          servers = [S(("", 8080 + i), H) for i in range(6)]
          for s in servers[1:]:
              threading.Thread(target=s.serve_forever, daemon=True).start()
          servers[0].serve_forever()
        readinessProbe:
          httpGet: {{path: /, port: 8080}}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: echo
spec:
  selector: {{app: echo}}
  ports:
{ports}"#
    )
}

/// A pod sending TCP SYNs from every source port to the six service ports
/// through a raw socket, as fast as Python can, until it is deleted. As
/// flood tools do, it keeps its own kernel from resetting the backends'
/// SYN-ACKs (an iptables rule in the pod's own network namespace), so the
/// flows stay half-open until they time out (60 s in SYN_RECV).
fn flood_manifest(cluster_ip: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: flood
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: flood
    image: python:3
    command: ["python3", "-c"]
    args:
    - |
      import shutil, socket, struct, subprocess
      try:
          subprocess.run([shutil.which("iptables") or "/usr/sbin/iptables", "-A", "OUTPUT", "-p", "tcp", "--tcp-flags", "RST", "RST", "-j", "DROP"], check=True)
          print("own RSTs dropped", flush=True)
      except (OSError, subprocess.CalledProcessError) as e:
          print("own RSTs not dropped:", e, flush=True)
      dst = "{cluster_ip}"
      ports = range(80, 86)
      u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.connect((dst, 80)); src = u.getsockname()[0]; u.close()
      sa, da = socket.inet_aton(src), socket.inet_aton(dst)
      s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
      ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0, 64, 6, 0, sa, da)
      def fold(x):
          while x >> 16: x = (x & 0xffff) + (x >> 16)
          return x
      # Checksum of each port's SYN with source port 0; the port adds in.
      base = {{p: sum(struct.unpack("!16H", sa + da + struct.pack("!BBH", 0, 6, 20) + struct.pack("!HHIIBBHHH", 0, p, 1, 0, 0x50, 0x02, 65535, 0, 0))) for p in ports}}
      print("flooding", src, "->", dst, flush=True)
      sent = errors = 0
      while True:
          for sport in range(1024, 65536):
              for p in ports:
                  c = 0xffff - fold(base[p] + sport)
                  try:
                      s.sendto(ip + struct.pack("!HHIIBBHHH", sport, p, 1, 0, 0x50, 0x02, 65535, c, 0), (dst, 0)); sent += 1
                  except OSError:
                      errors += 1
              if sport % 8192 == 0: print("sent", sent, "errors", errors, flush=True)
"#
    )
}

/// A pod opening `CONNECTIONS` TCP connections to the service over its six
/// ports, 20 at a time (an HTTP request on each), with generous timeouts;
/// prints `result ok=N of=M` and the first errors, then exits.
fn client_manifest(cluster_ip: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: client
spec:
  restartPolicy: Never
  containers:
  - name: client
    image: python:3
    command: ["python3", "-c"]
    args:
    - |
      import socket
      from concurrent.futures import ThreadPoolExecutor
      def one(i):
          try:
              c = socket.create_connection(("{cluster_ip}", 80 + i % 6), timeout=30)
              c.settimeout(30)
              c.sendall(b"GET / HTTP/1.0\r\n\r\n")
              data = b""
              while True:
                  chunk = c.recv(4096)
                  if not chunk: break
                  data += chunk
              c.close()
              return None if data.endswith(b"ok") else repr(data[:40])
          except Exception as e:
              return repr(e)
      with ThreadPoolExecutor(20) as pool:
          errors = [e for e in pool.map(one, range({CONNECTIONS})) if e]
      print("result ok=%d of=%d" % ({CONNECTIONS} - len(errors), {CONNECTIONS}), errors[:5], flush=True)
"#
    )
}

/// The value of the metric line starting with `series` (0 if absent).
fn metric(node: &KubeNode, series: &str) -> f64 {
    let metrics = node.kubectl_ok(&["get", "--raw", "/metrics"], None);
    metrics
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Peak resident memory of a process (VmHWM), in MiB.
fn rss_peak_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

#[test]
fn root_a_syn_flood_from_one_pod_leaves_other_pods_connections_alone() {
    let _serial = daemon_support::serial();
    let node = KubeNode::start();
    let pid = node.daemon.as_ref().expect("daemon").id();
    node.apply(&echo_manifest());
    node.k(&["rollout", "status", "deployment/echo", "--timeout=180s"]);
    let cluster_ip = node.k(&["get", "svc", "echo", "-o", "jsonpath={.spec.clusterIP}"]);
    let rss_before = rss_peak_mb(pid);

    // The flood, until it holds its share of the table (or, without
    // shares, all of it) and is refused more.
    node.apply(&flood_manifest(&cluster_ip));
    let refused = || {
        metric(
            &node,
            r#"podnet_packets_dropped_total{reason="conntrack_source_share"}"#,
        ) + metric(
            &node,
            r#"podnet_packets_dropped_total{reason="conntrack_full"}"#,
        )
    };
    let share_full = wait_for(Duration::from_secs(300), || {
        let n = refused();
        (n > 0.0).then_some(n)
    });
    assert!(
        share_full.is_some(),
        "the flood was never refused; flood log:\n{}\ndaemon log:\n{}",
        node.k(&["logs", "flood"]),
        node.log()
    );
    let max_per_source = metric(&node, "podnet_conntrack_max_per_source");
    let entries = metric(&node, "podnet_conntrack_entries");

    // Meanwhile, another pod's connections through the same cluster IP.
    node.apply(&client_manifest(&cluster_ip));
    let done = wait_for(Duration::from_secs(900), || {
        let phase = node.k(&["get", "pod", "client", "-o", "jsonpath={.status.phase}"]);
        (phase == "Succeeded" || phase == "Failed").then_some(phase)
    });
    let log = node.k(&["logs", "client"]);
    assert!(done.is_some(), "the client did not finish:\n{log}");
    let still_refused = refused();
    let flood_phase = node.k(&["get", "pod", "flood", "-o", "jsonpath={.status.phase}"]);
    let rss_peak = rss_peak_mb(pid);
    node.k(&["delete", "pod", "flood", "--wait=false"]);

    let ok: usize = log
        .lines()
        .find_map(|l| l.strip_prefix("result ok="))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no result in the client's log:\n{log}"));
    let ratio = ok as f64 / CONNECTIONS as f64;
    println!("flood.other_pod_success_ratio: {ratio:.4}");
    println!("flood.rss_mb_peak: {rss_peak:.1}");
    println!("flood.rss_mb_before: {rss_before:.1}");
    println!("flood.conntrack_entries_at_share: {entries}");
    println!("flood.max_per_source: {max_per_source}");
    println!("flood.refused_at_end: {still_refused}");
    assert_eq!(
        flood_phase, "Running",
        "the flood stopped before the client was done"
    );
    assert!(
        still_refused > share_full.unwrap_or(0.0),
        "the flood was not refused while the client ran"
    );
    assert!(
        ratio >= 0.99,
        "the other pod's connections: {ok} of {CONNECTIONS} succeeded:\n{log}"
    );
}
