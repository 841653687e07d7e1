//! `kubectl port-forward` against podnetd, with the real kubectl (SPDY/3.1
//! tunneled in a WebSocket, and over a plain SPDY upgrade as kubectl falls
//! back to): `pod/NAME` and `svc/NAME` reach a server that
//! listens on the pod's loopback address only (so the connection is made
//! inside the pod's network namespace), several connections in a row, a
//! download of many frames, and a refused port reported by kubectl; and
//! the Python client's `portforward` (the `v4.channel.k8s.io` protocol).
//!
//! Needs root (network namespaces); run with `cargo test --test root_portforward`.

mod daemon_support;
mod kube_node;

use std::fs::File;
use std::process::{Child, Stdio};
use std::time::Duration;

use daemon_support::{run_timeout, text, wait_for};
use kube_node::KubeNode;

const WEB: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: pf}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: python
    command: ["python3", "-c"]
    args:
    - |
      import http.server
      class H(http.server.BaseHTTPRequestHandler):
          def do_GET(self):
              body = b"x" * (1 << 20) if self.path == "/big" else b"served by web"
              self.send_response(200)
              self.send_header("Content-Length", str(len(body)))
              self.end_headers()
              self.wfile.write(body)
          def log_message(self, *a): pass
      http.server.ThreadingHTTPServer(("127.0.0.1", 8080), H).serve_forever()
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: pf}
  ports:
  - port: 80
    targetPort: 8080
"#;

/// `kubectl port-forward TARGET PORTS` running beside the test, its output
/// in files.
struct Forward {
    child: Child,
    stderr: std::path::PathBuf,
}

impl Forward {
    /// `websocket`: SPDY tunneled in a WebSocket (kubectl's default);
    /// else a connection upgraded to SPDY/3.1 (kubectl's fallback).
    fn start(node: &KubeNode, target: &str, ports: &str, name: &str, websocket: bool) -> Forward {
        let stderr = node._tmp.path().join(format!("{name}.err"));
        let child = node
            .kubectl_command(&["-n", &node.namespace, "port-forward", target, ports])
            .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", websocket.to_string())
            .stdout(File::create(node._tmp.path().join(format!("{name}.out"))).unwrap())
            .stderr(File::create(&stderr).unwrap())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        Forward { child, stderr }
    }

    /// What kubectl printed on stderr so far.
    fn errors(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The body and size of a GET through the node namespace's loopback.
fn get(node: &KubeNode, url: &str) -> Option<(String, usize)> {
    let mut cmd = std::process::Command::new("nsenter");
    cmd.arg(format!("--net=/var/run/netns/{}", node.netns))
        .args([
            "curl",
            "-sS",
            "--max-time",
            "20",
            "-w",
            "\n%{size_download}",
            url,
        ]);
    let (out, _) = run_timeout(cmd, Duration::from_secs(30));
    if !out.status.success() {
        return None;
    }
    let t = text(&out.stdout);
    let (body, size) = t.rsplit_once('\n')?;
    Some((body.to_string(), size.trim().parse().ok()?))
}

#[test]
fn root_kubectl_port_forward_reaches_the_pods_loopback_through_pod_and_service() {
    let _serial = daemon_support::serial();
    let node = KubeNode::start();
    node.apply(WEB);
    node.k(&["wait", "--for=condition=Ready", "pod/web", "--timeout=180s"]);

    for (i, (target, ports, websocket)) in [
        ("pod/web", "18080:8080", true),
        ("svc/web", "18081:80", true),
        ("pod/web", "18083:8080", false),
    ]
    .into_iter()
    .enumerate()
    {
        let local = ports.split(':').next().unwrap();
        let url = format!("http://127.0.0.1:{local}/");
        let fwd = Forward::start(&node, target, ports, &format!("fwd{i}"), websocket);
        // kubectl listens once its session is up; the server may still be
        // starting: both are waited for.
        let first = wait_for(Duration::from_secs(120), || get(&node, &url));
        let (body, _) = first.unwrap_or_else(|| {
            panic!(
                "no answer through `kubectl port-forward {target} {ports}` (WebSocket: {websocket}):\n{}\ndaemon log:\n{}",
                fwd.errors(),
                node.log()
            )
        });
        assert_eq!(body, "served by web", "{target}");
        // Each request is a new connection: a new pair of streams.
        for n in 0..5 {
            assert_eq!(
                get(&node, &url).map(|(b, _)| b).as_deref(),
                Some("served by web"),
                "request {n} through {target}"
            );
        }
        // A mebibyte comes back whole, in many frames.
        let big = get(&node, &format!("{url}big")).expect("the download");
        assert_eq!(big.1, 1 << 20, "{target}");
        assert!(big.0.bytes().all(|b| b == b'x'));
        drop(fwd);
    }

    // Nothing listens on 9999 in the pod: kubectl reports what the server
    // wrote on the error stream.
    let fwd = Forward::start(&node, "pod/web", "18082:9999", "refused", true);
    let reported = wait_for(Duration::from_secs(120), || {
        let _ = get(&node, "http://127.0.0.1:18082/");
        let err = fwd.errors();
        err.contains("error forwarding port 9999").then_some(err)
    });
    let err = fwd.errors();
    drop(fwd);
    assert!(
        reported.is_some(),
        "kubectl did not print the refused port:\n{err}\ndaemon log:\n{}",
        node.log()
    );
    assert!(err.contains("web"), "the pod is named: {err}");
}

/// The Python client's `portforward` (the `v4.channel.k8s.io` WebSocket
/// protocol, ports in the query): two ports at once, one served and one
/// refused, and a request written through the socket the client hands out.
#[test]
fn root_python_client_port_forward_uses_the_channel_protocol() {
    let _serial = daemon_support::serial();
    let node = KubeNode::start();
    node.apply(WEB);
    node.k(&["wait", "--for=condition=Ready", "pod/web", "--timeout=180s"]);
    let script = format!(
        r#"
import json, time
from kubernetes import client, config
from kubernetes.stream import portforward
config.load_kube_config(config_file={kubeconfig:?})
v1 = client.CoreV1Api()
out = {{}}
# The pod's server may still be starting: retry until it answers.
deadline = time.time() + 120
while True:
    pf = portforward(v1.connect_get_namespaced_pod_portforward, "web", {ns:?}, ports="8080,9999")
    s = pf.socket(8080)
    s.settimeout(30)
    s.sendall(b"GET /big HTTP/1.0\r\nHost: web\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    refused = pf.socket(9999)
    refused.settimeout(30)
    try:
        refused.recv(1)
    except Exception:
        pass
    out["error_9999"] = pf.error(9999)
    out["error_8080"] = pf.error(8080)
    pf.close()
    if data.startswith(b"HTTP/1.0 200") or time.time() > deadline:
        break
    time.sleep(1)
head, _, body = data.partition(b"\r\n\r\n")
out["status"] = head.split(b"\r\n")[0].decode()
out["body_len"] = len(body)
out["body_all_x"] = body == b"x" * len(body)
try:
    portforward(v1.connect_get_namespaced_pod_portforward, "web", {ns:?}, ports="0")
    out["bad_port"] = "accepted"
except Exception as e:
    out["bad_port"] = str(e)[:200]
print(json.dumps(out))
"#,
        kubeconfig = node.kubeconfig.display().to_string(),
        ns = node.namespace,
    );
    let mut cmd = std::process::Command::new("nsenter");
    cmd.arg(format!("--net=/var/run/netns/{}", node.netns))
        .args(["python3", "-c", &script]);
    let (out, _) = run_timeout(cmd, Duration::from_secs(240));
    let report = text(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(report.trim()).unwrap_or_else(|_| {
        panic!(
            "python: {report}{}\ndaemon log:\n{}",
            text(&out.stderr),
            node.log()
        )
    });
    assert_eq!(v["status"], "HTTP/1.0 200 OK", "{v}");
    assert_eq!(v["body_len"], 1 << 20, "{v}");
    assert_eq!(v["body_all_x"], true, "{v}");
    assert!(v["error_8080"].is_null(), "{v}");
    assert!(
        v["error_9999"]
            .as_str()
            .is_some_and(|e| e.contains("error forwarding port 9999") && e.contains("web")),
        "the refused port is reported on its error channel: {v}"
    );
    assert!(
        v["bad_port"].as_str().is_some_and(|e| e != "accepted"),
        "port 0 refused: {v}"
    );
}
