//! The edges of the node, with the real daemon, kubectl and clients (root):
//! an "outside" network namespace joined to the node's by a veth pair on an
//! underlay subnet (the node's end is its egress interface and its default
//! route points at the outside), with a route to the node only, as a
//! browser's machine would have.
//!
//! From outside: a NodePort service on the node address, a LoadBalancer
//! address from `--lb-pool`; the backend sees the node's address under
//! `externalTrafficPolicy: Cluster` and the client's under `Local`. The
//! cluster IP and a pod IP are not reachable from outside, and the drops are
//! counted in `podnet stats`. A pod reaches a server in the outside
//! namespace, which sees the node's address; a pod's ping reaches it too;
//! an egress ipBlock policy with the server excepted denies it, the block
//! alone allows it; 200 pods connected to it at once each have a port of
//! their own. The
//! Local service's `healthCheckNodePort` answers 200 with its local
//! endpoints, then 503 when it has none.
//! Everything the daemon added to the egress interface is gone after it
//! stops.

mod daemon_support;
mod kube_node;

use std::process::Command;
use std::time::Duration;

use daemon_support::{kill, run_timeout, text, wait_for, PODNET};
use kube_node::KubeNode;

const NODE_IP: &str = "192.0.2.1";
const OUTSIDE_IP: &str = "192.0.2.2";
const LB_POOL: &str = "198.51.100.0/28";

/// The outside namespace, removed on drop (also when the test fails).
struct Outside {
    netns: String,
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

fn in_netns(netns: &str, args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/var/run/netns/{netns}")).args(args);
    let (out, _) = run_timeout(cmd, Duration::from_secs(30));
    (out.status.success(), text(&out.stdout) + &text(&out.stderr))
}

fn curl(netns: &str, url: &str) -> Option<String> {
    let (ok, out) = in_netns(netns, &["curl", "-s", "--max-time", "3", url]);
    ok.then_some(out)
}

/// The status code and body of a GET.
fn curl_status(netns: &str, url: &str) -> Option<(u16, String)> {
    let (ok, out) = in_netns(
        netns,
        &["curl", "-s", "--max-time", "3", "-w", "\n%{http_code}", url],
    );
    let (body, code) = out.trim_end().rsplit_once('\n')?;
    ok.then(|| Some((code.parse().ok()?, body.to_string())))?
}

/// An HTTP server answering every GET with the client's address.
const CLIENT_ECHO: &str = r#"import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = self.client_address[0].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), H).serve_forever()
"#;

/// One ICMP echo over a raw socket; prints the replier's address.
const PING: &str = r#"import socket, struct, sys, os
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.settimeout(3)
ident = os.getpid() & 0xffff
def csum(b):
    if len(b) % 2: b += b"\0"
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    t = (t >> 16) + (t & 0xffff); t += t >> 16
    return ~t & 0xffff
hdr = struct.pack("!BBHHH", 8, 0, 0, ident, 1) + b"podnet"
pkt = hdr[:2] + struct.pack("!H", csum(hdr)) + hdr[4:]
s.sendto(pkt, (sys.argv[1], 0))
while True:
    data, addr = s.recvfrom(2048)
    icmp = data[(data[0] & 15) * 4:]
    if icmp[0] == 0 and struct.unpack("!H", icmp[4:6])[0] == ident:
        print(addr[0]); break
"#;

/// How many pods connect out at once.
const MANY: usize = 200;

/// A TCP server that keeps every connection open and appends each
/// client's address and port to a file.
const HOLD: &str = r#"import socket, sys
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2])))
srv.listen(1024)
held = []
out = open(sys.argv[3], "a")
while True:
    conn, peer = srv.accept()
    held.append(conn)
    out.write("%s %d\n" % peer)
    out.flush()
"#;

/// A pod's command: connect to the server (retrying until it answers) and
/// keep the connection open.
const CONNECT_AND_HOLD: &str = r#"import socket, sys, time
while True:
    try:
        s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
        break
    except OSError:
        time.sleep(1)
time.sleep(1000000)
"#;

#[test]
fn outside_clients_reach_node_ports_and_load_balancers_pods_reach_the_outside_and_nothing_else_gets_in(
) {
    let mut node = KubeNode::start();
    node.stop_daemon();
    let pid = std::process::id();
    let outside = Outside {
        netns: format!("pne-out-{pid}"),
    };
    let (node_end, out_end) = (format!("pev{pid}"), format!("peo{pid}"));
    sh(&["ip", "netns", "add", &outside.netns]);
    sh(&["ip", "-n", &outside.netns, "link", "set", "lo", "up"]);
    sh(&[
        "ip",
        "link",
        "add",
        &node_end,
        "netns",
        &node.netns,
        "type",
        "veth",
        "peer",
        "name",
        &out_end,
        "netns",
        &outside.netns,
    ]);
    sh(&[
        "ip",
        "-n",
        &node.netns,
        "addr",
        "add",
        &format!("{NODE_IP}/24"),
        "dev",
        &node_end,
    ]);
    sh(&["ip", "-n", &node.netns, "link", "set", &node_end, "up"]);
    sh(&[
        "ip",
        "-n",
        &node.netns,
        "route",
        "add",
        "default",
        "via",
        OUTSIDE_IP,
    ]);
    sh(&[
        "ip",
        "-n",
        &outside.netns,
        "addr",
        "add",
        &format!("{OUTSIDE_IP}/24"),
        "dev",
        &out_end,
    ]);
    sh(&["ip", "-n", &outside.netns, "link", "set", &out_end, "up"]);
    // The outside knows the LoadBalancer pool lives behind the node (what
    // an ARP answer or a router would tell it), and, to try, the cluster's
    // internal addresses too.
    for net in [LB_POOL, "10.96.0.0/12", "10.244.0.0/24"] {
        sh(&[
            "ip",
            "-n",
            &outside.netns,
            "route",
            "add",
            net,
            "via",
            NODE_IP,
        ]);
    }
    node.extra_args = vec!["--lb-pool".into(), LB_POOL.into()];
    node.start_daemon();

    let server = std::process::Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{}", outside.netns))
        .args(["python3", "-c", CLIENT_ECHO, OUTSIDE_IP, "8000"])
        .spawn()
        .unwrap();
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server = KillOnDrop(server);

    let code = serde_json::to_string(CLIENT_ECHO).unwrap();
    let manifest = format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: web
        image: python
        command: ["python3", "-c"]
        args: [{code}, "0.0.0.0", "8080"]
        readinessProbe:
          tcpSocket: {{port: 8080}}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: web-cluster
spec:
  type: NodePort
  selector: {{app: web}}
  ports:
  - port: 80
    targetPort: 8080
    nodePort: 30080
---
apiVersion: v1
kind: Service
metadata:
  name: web-local
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  selector: {{app: web}}
  ports:
  - port: 80
    targetPort: 8080
"#
    );
    node.apply(&manifest);
    node.k(&["rollout", "status", "deployment/web", "--timeout=120s"]);

    // The API: the given node port, one chosen for the other service, its
    // health-check port, and a LoadBalancer address from the pool.
    let local_np = node.k(&[
        "get",
        "svc",
        "web-local",
        "-o",
        "jsonpath={.spec.ports[0].nodePort}",
    ]);
    let local_np: u16 = local_np.trim().parse().expect("a node port");
    assert!((30_000..=32_767).contains(&local_np));
    let hc = node.k(&[
        "get",
        "svc",
        "web-local",
        "-o",
        "jsonpath={.spec.healthCheckNodePort}",
    ]);
    assert!(
        hc.trim().parse::<u16>().is_ok(),
        "healthCheckNodePort: {hc:?}"
    );
    let lb_ip = node.k(&[
        "get",
        "svc",
        "web-local",
        "-o",
        "jsonpath={.status.loadBalancer.ingress[0].ip}",
    ]);
    assert_eq!(lb_ip.trim(), "198.51.100.1");
    let table = node.k(&["get", "svc"]);
    assert!(table.contains("80:30080/TCP"), "{table}");
    assert!(table.contains("198.51.100.1"), "{table}");
    let clash = node.kubectl(
        &["apply", "-n", &node.namespace, "-f", "-"],
        Some(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: clash\nspec:\n  type: NodePort\n  selector: {app: web}\n  ports:\n  - port: 80\n    nodePort: 30080\n",
        ),
    );
    let err = text(&clash.stderr);
    assert!(
        !clash.status.success()
            && err.contains(
                "spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"
            ),
        "{err}"
    );

    // The Node's InternalIP is its address on the underlay.
    let internal = node.kubectl_ok(
        &[
            "get",
            "node",
            "node-t",
            "-o",
            "jsonpath={.status.addresses[?(@.type==\"InternalIP\")].address}",
        ],
        None,
    );
    assert_eq!(
        internal.trim(),
        NODE_IP,
        "kubectl get nodes -o wide: INTERNAL-IP"
    );

    // From outside: Cluster masquerades, Local keeps the client.
    let seen = wait_for(Duration::from_secs(60), || {
        curl(&outside.netns, &format!("http://{NODE_IP}:30080/"))
    })
    .unwrap_or_else(|| panic!("the node port did not answer from outside:\n{}", node.log()));
    assert_eq!(seen, NODE_IP, "externalTrafficPolicy: Cluster");
    let seen = curl(&outside.netns, &format!("http://{}/", lb_ip.trim()))
        .unwrap_or_else(|| panic!("the LoadBalancer address did not answer:\n{}", node.log()));
    assert_eq!(seen, OUTSIDE_IP, "externalTrafficPolicy: Local");
    let seen = curl(&outside.netns, &format!("http://{NODE_IP}:{local_np}/")).unwrap();
    assert_eq!(seen, OUTSIDE_IP, "the Local service's node port");

    // The Local service's health check, as kube-proxy serves it.
    let hc_url = format!("http://{NODE_IP}:{}/healthz", hc.trim());
    let (code, body) = wait_for(Duration::from_secs(60), || {
        curl_status(&outside.netns, &hc_url).filter(|(c, _)| *c == 200)
    })
    .unwrap_or_else(|| {
        panic!(
            "the health check node port did not say healthy: {:?}\n{}",
            curl_status(&outside.netns, &hc_url),
            node.log()
        )
    });
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(code, 200);
    assert_eq!(health["localEndpoints"], 1, "{body}");
    assert_eq!(health["service"]["name"], "web-local", "{body}");

    // Not from outside: the cluster IP and the pod's address.
    let cluster_ip = node.k(&[
        "get",
        "svc",
        "web-cluster",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    let pod = node.k(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]);
    let pod_ip = node.k(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[0].status.podIP}",
    ]);
    assert!(
        node.curl(&format!("http://{}/", cluster_ip.trim()))
            .is_some(),
        "from the node it works"
    );
    assert_eq!(
        curl(&outside.netns, &format!("http://{}/", cluster_ip.trim())),
        None
    );
    assert_eq!(
        curl(&outside.netns, &format!("http://{}:8080/", pod_ip.trim())),
        None
    );
    let stats = {
        let mut cmd = Command::new(PODNET);
        cmd.arg("--socket")
            .arg(node._tmp.path().join("podnet.sock"))
            .arg("stats");
        text(&run_timeout(cmd, Duration::from_secs(30)).0.stdout)
    };
    let from_outside: u64 = stats
        .lines()
        .find(|l| l.contains("dropped.from_outside"))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap_or_else(|| panic!("no dropped.from_outside in podnet stats:\n{stats}"));
    assert!(from_outside >= 2, "{stats}");

    // Egress: the pod reaches the outside server, which sees the node.
    let pod_netns = format!("{}.{}", node.namespace, pod.trim());
    let seen = curl(&pod_netns, &format!("http://{OUTSIDE_IP}:8000/"))
        .unwrap_or_else(|| panic!("the pod did not reach the outside:\n{}", node.log()));
    assert_eq!(seen, NODE_IP, "masqueraded to the node's address");
    let (ok, out) = in_netns(&pod_netns, &["python3", "-c", PING, OUTSIDE_IP]);
    assert!(ok && out.trim() == OUTSIDE_IP, "ping from the pod: {out}");

    // An egress ipBlock policy as the documentation writes it: the outside
    // server cut out of the underlay block is denied; the block alone lets
    // it through again.
    let egress_policy = |except: &str| {
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: web-egress\nspec:\n  podSelector:\n    matchLabels: {{app: web}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - ipBlock:\n        cidr: 192.0.2.0/24{except}\n"
        )
    };
    let outside_url = format!("http://{OUTSIDE_IP}:8000/");
    node.apply(&egress_policy("\n        except: [192.0.2.2/32]"));
    assert!(
        wait_for(Duration::from_secs(60), || curl(&pod_netns, &outside_url)
            .is_none()
            .then_some(()))
        .is_some(),
        "an egress ipBlock with the server excepted still lets the pod reach it"
    );
    node.apply(&egress_policy(""));
    let seen =
        wait_for(Duration::from_secs(60), || curl(&pod_netns, &outside_url)).unwrap_or_else(|| {
            panic!(
                "the ipBlock egress rule does not let the pod out:\n{}",
                node.log()
            )
        });
    assert_eq!(seen, NODE_IP);
    node.k(&["delete", "networkpolicy", "web-egress"]);

    // 200 pods' connections at once: the outside server holds every one
    // open, so each needs a source port of its own on the node's address.
    let peers = node._tmp.path().join("peers");
    let holder = std::process::Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{}", outside.netns))
        .args(["python3", "-c", HOLD, OUTSIDE_IP, "8001"])
        .arg(&peers)
        .spawn()
        .unwrap();
    let _holder = KillOnDrop(holder);
    let connect = serde_json::to_string(CONNECT_AND_HOLD).unwrap();
    node.apply(&format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: many
spec:
  replicas: {MANY}
  selector:
    matchLabels: {{app: many}}
  template:
    metadata:
      labels: {{app: many}}
    spec:
      containers:
      - name: client
        image: python
        command: ["python3", "-c", {connect}, "{OUTSIDE_IP}", "8001"]
"#
    ));
    let held = wait_for(Duration::from_secs(900), || {
        let lines: Vec<String> = std::fs::read_to_string(&peers)
            .ok()?
            .lines()
            .map(str::to_string)
            .collect();
        (lines.len() >= MANY).then_some(lines)
    })
    .unwrap_or_else(|| {
        panic!(
            "{MANY} pods' connections did not all reach the outside server: {:?} did\n{}",
            std::fs::read_to_string(&peers).map(|s| s.lines().count()),
            node.log()
        )
    });
    let mut ports = std::collections::BTreeSet::new();
    for line in &held {
        let (addr, port) = line.split_once(' ').unwrap();
        assert_eq!(addr, NODE_IP, "masqueraded: {line}");
        let port: u16 = port.parse().unwrap();
        assert!(
            (61_440..=65_535).contains(&port),
            "a source-NAT port: {line}"
        );
        ports.insert(port);
    }
    assert_eq!(
        ports.len(),
        held.len(),
        "{} connections held at once share ports",
        held.len()
    );
    node.k(&["delete", "deployment", "many", "--wait=false"]);

    // No local endpoint left: the health check says so (503).
    node.k(&["scale", "deployment", "web", "--replicas=0"]);
    let (_, body) = wait_for(Duration::from_secs(120), || {
        curl_status(&outside.netns, &hc_url).filter(|(c, _)| *c == 503)
    })
    .unwrap_or_else(|| {
        panic!(
            "the health check still says healthy with no endpoint: {:?}",
            curl_status(&outside.netns, &hc_url)
        )
    });
    assert!(body.contains(r#""localEndpoints":0"#), "{body}");

    // A clean stop takes the steering away with it.
    let daemon_pid = node.daemon.as_ref().unwrap().id();
    kill(daemon_pid, "TERM");
    let stopped = wait_for(Duration::from_secs(60), || {
        node.daemon
            .as_mut()
            .unwrap()
            .try_wait()
            .unwrap()
            .map(|_| ())
    });
    assert!(stopped.is_some(), "podnetd did not stop:\n{}", node.log());
    let (_, qdiscs) = in_netns(&node.netns, &["tc", "qdisc", "show", "dev", &node_end]);
    assert!(!qdiscs.contains("clsact"), "{qdiscs}");
}
