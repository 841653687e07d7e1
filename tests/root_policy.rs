//! NetworkPolicy with the real daemon and kubectl (root): three namespaces
//! (`ns=x|y|z`) of three pods each (`pod=a|b|c`), every pod answering on
//! TCP and UDP ports 80 and 81 (named `serve-80-tcp`, ...). After each
//! policy change, the reachability of every pair on every port and protocol
//! is probed from inside the pods and compared with what the Kubernetes
//! spec says, computed here from the test's own model of the policies (the
//! same model renders the manifests kubectl applies): isolation per
//! direction, rules adding up, pod and namespace selectors (both = AND),
//! ipBlock with except, ports by number, range and name. Implementation
//! rules podnet documents: a pod always reaches itself.
//!
//! Also: a denied connection times out (dropped, never reset); a service's
//! flow is decided on its backend; an established connection of a pair that
//! a new policy denies stops, without a reset; the drops are counted by
//! direction.

mod daemon_support;
mod kube_node;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use daemon_support::{run_timeout, text, wait_for, PODNET};
use ipnet::Ipv4Net;
use kube_node::KubeNode;

const NAMES: [&str; 3] = ["x", "y", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];
const PORTS: [u16; 2] = [80, 81];

/// Every pod's server: TCP and UDP on 80 and 81; a TCP connection gets its
/// pod's name for every line it sends (so it can be held open and used).
const SERVER: &str = r#"import socket, sys, threading
name = sys.argv[1]
def tcp(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(256)
    while True:
        c, _ = s.accept()
        def serve(c):
            f = c.makefile("rb")
            try:
                for _ in f:
                    c.sendall((name + "\n").encode())
            except OSError:
                pass
            c.close()
        threading.Thread(target=serve, args=(c,), daemon=True).start()
def udp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", port))
    while True:
        _, peer = s.recvfrom(2048); s.sendto(name.encode(), peer)
for p in (80, 81):
    threading.Thread(target=tcp, args=(p,), daemon=True).start()
    threading.Thread(target=udp, args=(p,), daemon=True).start()
threading.Event().wait()
"#;

/// Probes every `ip port proto` line of stdin at once; prints `ip port proto
/// RESULT` with RESULT ok, timeout, refused or reset.
const PROBE: &str = r#"import socket, sys, threading
out = []; lock = threading.Lock()
def probe(ip, port, proto):
    try:
        if proto == "tcp":
            s = socket.create_connection((ip, int(port)), timeout=1.5)
            s.settimeout(1.5); s.sendall(b"hi\n"); r = s.recv(100); s.close()
            res = "ok" if r else "reset"
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1.5)
            s.sendto(b"hi", (ip, int(port))); s.recvfrom(100); s.close(); res = "ok"
    except socket.timeout:
        res = "timeout"
    except ConnectionRefusedError:
        res = "refused"
    except OSError as e:
        res = "reset" if "reset" in str(e).lower() else "error:" + str(e).replace(" ", "_")
    with lock:
        out.append("%s %s %s %s" % (ip, port, proto, res))
ts = [threading.Thread(target=probe, args=l.split()) for l in sys.stdin if l.strip()]
[t.start() for t in ts]; [t.join() for t in ts]
print("\n".join(out))
"#;

/// Holds one TCP connection and sends a line every 100 ms; prints `flowing`
/// once answers come, then `stopped REASON` when an answer does not come.
const HOLD: &str = r#"import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
s.settimeout(2)
f = s.makefile("rb")
said = False
while True:
    try:
        s.sendall(b"x\n")
        if not f.readline():
            print("stopped closed", flush=True); break
        if not said:
            print("flowing", flush=True); said = True
    except socket.timeout:
        print("stopped timeout", flush=True); break
    except OSError as e:
        print("stopped " + ("reset" if "reset" in str(e).lower() else "error"), flush=True); break
    time.sleep(0.1)
"#;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
    fn kube(self) -> &'static str {
        match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
        }
    }
}

/// One pod of the model.
struct PodModel {
    ns: usize,
    name: &'static str,
    ip: Ipv4Addr,
}

impl PodModel {
    fn label(&self) -> &'static str {
        self.name
    }
    /// The pod's named ports: `serve-PORT-PROTO`.
    fn named_port(&self, name: &str, proto: Proto) -> Option<u16> {
        PORTS
            .into_iter()
            .find(|p| name == format!("serve-{p}-{}", proto.name()))
    }
}

#[derive(Clone)]
enum PortRef {
    Num(u16, Option<u16>),
    Name(&'static str),
}

#[derive(Clone)]
struct PortSpec {
    proto: Proto,
    port: Option<PortRef>,
}

#[derive(Clone)]
enum Peer {
    /// podSelector `pod=` (None: `{}`) and namespaceSelector `ns=` (None:
    /// absent; Some(None): `{}`).
    Select {
        pod: Option<&'static str>,
        ns: Option<Option<&'static str>>,
    },
    Block {
        cidr: Ipv4Net,
        except: Vec<Ipv4Net>,
    },
}

#[derive(Clone)]
struct RuleModel {
    peers: Vec<Peer>,
    ports: Vec<PortSpec>,
}

#[derive(Clone)]
struct PolicyModel {
    name: &'static str,
    ns: usize,
    /// `pod=` label of the selected pods; None selects all.
    select: Option<&'static str>,
    ingress: Option<Vec<RuleModel>>,
    egress: Option<Vec<RuleModel>>,
}

struct World {
    namespaces: Vec<String>,
    pods: Vec<PodModel>,
}

impl World {
    fn pod(&self, ns: &str, name: &str) -> usize {
        let n = NAMES.iter().position(|x| *x == ns).unwrap();
        self.pods
            .iter()
            .position(|p| p.ns == n && p.name == name)
            .unwrap()
    }

    fn peer_matches(&self, policy: &PolicyModel, peer: &Peer, other: &PodModel) -> bool {
        match peer {
            Peer::Block { cidr, except } => {
                cidr.contains(&other.ip) && !except.iter().any(|e| e.contains(&other.ip))
            }
            Peer::Select { pod, ns } => {
                let ns_ok = match ns {
                    None => other.ns == policy.ns,
                    Some(None) => true,
                    Some(Some(label)) => NAMES[other.ns] == *label,
                };
                ns_ok && pod.is_none_or(|l| other.label() == l)
            }
        }
    }

    fn port_matches(spec: &PortSpec, dst: &PodModel, proto: Proto, port: u16) -> bool {
        spec.proto == proto
            && match &spec.port {
                None => true,
                Some(PortRef::Num(p, None)) => *p == port,
                Some(PortRef::Num(p, Some(end))) => (*p..=*end).contains(&port),
                Some(PortRef::Name(n)) => dst.named_port(n, proto) == Some(port),
            }
    }

    /// Whether the destination's ingress (`ingress`) or the source's
    /// egress lets the connection `src` -> `dst`:`port`/`proto` through.
    fn direction_allows(
        &self,
        policies: &[PolicyModel],
        (src, dst, proto, port): (&PodModel, &PodModel, Proto, u16),
        ingress: bool,
    ) -> bool {
        let (pod, other) = if ingress { (dst, src) } else { (src, dst) };
        let mut isolated = false;
        for p in policies {
            let rules = if ingress { &p.ingress } else { &p.egress };
            let Some(rules) = rules else { continue };
            if p.ns != pod.ns || p.select.is_some_and(|l| pod.label() != l) {
                continue;
            }
            isolated = true;
            for r in rules {
                let peers = r.peers.is_empty()
                    || r.peers.iter().any(|peer| self.peer_matches(p, peer, other));
                let ports = r.ports.is_empty()
                    || r.ports
                        .iter()
                        .any(|s| Self::port_matches(s, dst, proto, port));
                if peers && ports {
                    return true;
                }
            }
        }
        !isolated
    }

    /// What the spec says of `src` -> `dst`:`port`/`proto`.
    fn allows(
        &self,
        policies: &[PolicyModel],
        src: usize,
        dst: usize,
        proto: Proto,
        port: u16,
    ) -> bool {
        if src == dst {
            return true; // a pod cannot block itself
        }
        let (s, d) = (&self.pods[src], &self.pods[dst]);
        let conn = (s, d, proto, port);
        self.direction_allows(policies, conn, false) && self.direction_allows(policies, conn, true)
    }

    fn manifest(&self, p: &PolicyModel) -> String {
        let sel = |label: Option<&str>, key: &str| match label {
            None => "{}".to_string(),
            Some(l) => format!("{{matchLabels: {{{key}: \"{l}\"}}}}"),
        };
        let rules = |rules: &[RuleModel], dir: &str| -> String {
            let mut out = String::new();
            for r in rules {
                out += "  - ";
                let mut first = true;
                let mut field = |s: String| {
                    out += &(if first { s } else { format!("    {s}") });
                    first = false;
                };
                if !r.peers.is_empty() {
                    let peers: Vec<String> = r
                        .peers
                        .iter()
                        .map(|peer| match peer {
                            Peer::Block { cidr, except } => format!(
                                "{{ipBlock: {{cidr: {cidr}, except: [{}]}}}}",
                                except
                                    .iter()
                                    .map(|e| e.to_string())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                            Peer::Select { pod, ns } => {
                                let mut parts = Vec::new();
                                if let Some(l) = pod {
                                    parts.push(format!("podSelector: {}", sel(Some(l), "pod")));
                                } else if ns.is_none() {
                                    parts.push("podSelector: {}".to_string());
                                }
                                if let Some(n) = ns {
                                    parts.push(format!("namespaceSelector: {}", sel(*n, "ns")));
                                }
                                format!("{{{}}}", parts.join(", "))
                            }
                        })
                        .collect();
                    field(format!("{dir}: [{}]\n", peers.join(", ")));
                }
                if !r.ports.is_empty() {
                    let ports: Vec<String> = r
                        .ports
                        .iter()
                        .map(|s| match &s.port {
                            None => format!("{{protocol: {}}}", s.proto.kube()),
                            Some(PortRef::Num(p, None)) => {
                                format!("{{protocol: {}, port: {p}}}", s.proto.kube())
                            }
                            Some(PortRef::Num(p, Some(e))) => {
                                format!("{{protocol: {}, port: {p}, endPort: {e}}}", s.proto.kube())
                            }
                            Some(PortRef::Name(n)) => {
                                format!("{{protocol: {}, port: {n}}}", s.proto.kube())
                            }
                        })
                        .collect();
                    field(format!("ports: [{}]\n", ports.join(", ")));
                }
                if first {
                    out += "{}\n";
                }
            }
            out
        };
        let mut types = Vec::new();
        let mut body = String::new();
        if let Some(r) = &p.ingress {
            types.push("Ingress");
            body += &format!("  ingress:{}\n", if r.is_empty() { " []" } else { "" });
            body += &rules(r, "from");
        }
        if let Some(r) = &p.egress {
            types.push("Egress");
            body += &format!("  egress:{}\n", if r.is_empty() { " []" } else { "" });
            body += &rules(r, "to");
        }
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {}\n  namespace: {}\nspec:\n  podSelector: {}\n  policyTypes: [{}]\n{body}",
            p.name,
            self.namespaces[p.ns],
            sel(p.select, "pod"),
            types.join(", ")
        )
    }
}

/// Removes the network and pinned namespaces of the test's pods (on drop,
/// before the node's own cleanup; also when the test fails).
struct PodsGuard(Vec<String>);

impl Drop for PodsGuard {
    fn drop(&mut self) {
        for ns in podnet::sys::netns::list().unwrap_or_default() {
            if self.0.iter().any(|p| ns.starts_with(&format!("{p}."))) {
                podnet::daemon::runtime::stop_processes_in(&ns);
                let _ = podnet::sys::netns::remove(&ns);
            }
        }
        for ns in podnet::sys::mount::list() {
            if self.0.iter().any(|p| ns.starts_with(&format!("{p}."))) {
                podnet::sys::mount::remove(&ns);
            }
        }
    }
}

type Matrix = BTreeMap<(usize, usize, Proto, u16), String>;

/// Starts [`PROBE`] in the network namespace `netns` with `targets` (its
/// `ip port proto` lines) on its stdin.
fn spawn_probe(netns: &str, targets: &str) -> std::process::Child {
    use std::io::Write;
    let mut child = Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{netns}"))
        .args(["python3", "-c", PROBE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(targets.as_bytes())
        .unwrap();
    child
}

/// Probes every pair, port and protocol once, from inside the pods.
fn probe_all(world: &World) -> Matrix {
    let targets: String = world
        .pods
        .iter()
        .flat_map(|d| {
            PORTS.into_iter().flat_map(move |port| {
                [Proto::Tcp, Proto::Udp]
                    .into_iter()
                    .map(move |p| format!("{} {port} {}\n", d.ip, p.name()))
            })
        })
        .collect();
    let children: Vec<_> = world
        .pods
        .iter()
        .map(|s| spawn_probe(&format!("{}.{}", world.namespaces[s.ns], s.name), &targets))
        .collect();
    let mut m = Matrix::new();
    for (src, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        for line in text(&out.stdout).lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let [ip, port, proto, res] = f[..] else {
                continue;
            };
            let dst = world
                .pods
                .iter()
                .position(|p| p.ip.to_string() == ip)
                .unwrap();
            let proto = if proto == "tcp" {
                Proto::Tcp
            } else {
                Proto::Udp
            };
            m.insert((src, dst, proto, port.parse().unwrap()), res.to_string());
        }
    }
    m
}

fn expected(world: &World, policies: &[PolicyModel]) -> BTreeMap<(usize, usize, Proto, u16), bool> {
    let mut m = BTreeMap::new();
    for s in 0..world.pods.len() {
        for d in 0..world.pods.len() {
            for proto in [Proto::Tcp, Proto::Udp] {
                for port in PORTS {
                    m.insert(
                        (s, d, proto, port),
                        world.allows(policies, s, d, proto, port),
                    );
                }
            }
        }
    }
    m
}

/// Probes until the matrix is what the spec says (policies are published a
/// moment after kubectl returns), bounded; returns the diff on failure.
fn check_matrix(world: &World, policies: &[PolicyModel], step: &str) {
    let want = expected(world, policies);
    let name = |i: usize| format!("{}/{}", NAMES[world.pods[i].ns], world.pods[i].name);
    let mut last = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        let got = probe_all(world);
        let mut diff = Vec::new();
        for (k, allowed) in &want {
            let res = got.get(k).map(String::as_str).unwrap_or("missing");
            let ok = match (allowed, res) {
                (true, "ok") => true,
                (false, "timeout") => true,
                // A denied TCP connection must be dropped, never answered:
                // a refusal or reset is a failure even when "denied".
                _ => false,
            };
            if !ok {
                diff.push(format!(
                    "{} -> {} {}/{}: want {}, got {res}",
                    name(k.0),
                    name(k.1),
                    k.3,
                    k.2.name(),
                    if *allowed { "ok" } else { "timeout (dropped)" }
                ));
            }
        }
        if diff.is_empty() {
            eprintln!("step {step}: {} probes as the spec says", want.len());
            return;
        }
        last = diff;
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!(
        "step {step}: {} of {} probes differ from the spec:\n{}",
        last.len(),
        want.len(),
        last.join("\n")
    );
}

fn counter(node: &KubeNode, name: &str) -> u64 {
    let mut cmd = Command::new(PODNET);
    cmd.arg("--socket")
        .arg(node._tmp.path().join("podnet.sock"))
        .arg("stats");
    let out = text(&run_timeout(cmd, Duration::from_secs(30)).0.stdout);
    out.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in podnet stats:\n{out}"))
}

#[test]
fn policy_matrix_follows_the_spec_through_every_change() {
    let node = KubeNode::start();
    let namespaces: Vec<String> = NAMES
        .iter()
        .map(|n| format!("{}{n}", node.namespace))
        .collect();
    let _pods = PodsGuard(namespaces.clone());
    let code = serde_json::to_string(SERVER).unwrap();
    let mut manifest = String::new();
    for (i, ns) in namespaces.iter().enumerate() {
        manifest += &format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels: {{ns: \"{}\"}}\n---\n",
            NAMES[i]
        );
        for pod in PODS {
            manifest += &format!(
                r#"apiVersion: v1
kind: Pod
metadata:
  name: {pod}
  namespace: {ns}
  labels: {{pod: "{pod}"}}
spec:
  containers:
  - name: serve
    image: python
    command: ["python3", "-c", {code}, "{ns}/{pod}"]
    ports:
    - {{name: serve-80-tcp, containerPort: 80, protocol: TCP}}
    - {{name: serve-81-tcp, containerPort: 81, protocol: TCP}}
    - {{name: serve-80-udp, containerPort: 80, protocol: UDP}}
    - {{name: serve-81-udp, containerPort: 81, protocol: UDP}}
    readinessProbe:
      tcpSocket: {{port: 80}}
      periodSeconds: 1
---
"#
            );
        }
    }
    node.kubectl_ok(&["apply", "-f", "-"], Some(&manifest));
    let mut pods = Vec::new();
    for (i, ns) in namespaces.iter().enumerate() {
        node.kubectl_ok(
            &[
                "wait",
                "-n",
                ns,
                "--for=condition=Ready",
                "pod",
                "--all",
                "--timeout=300s",
            ],
            None,
        );
        for pod in PODS {
            let ip = node.kubectl_ok(
                &[
                    "get",
                    "pod",
                    "-n",
                    ns,
                    pod,
                    "-o",
                    "jsonpath={.status.podIP}",
                ],
                None,
            );
            pods.push(PodModel {
                ns: i,
                name: pod,
                ip: ip.trim().parse().expect("a pod address"),
            });
        }
    }
    let world = World { namespaces, pods };
    let subnet: Ipv4Net = "10.244.0.0/16".parse().unwrap();
    let xb = world.pods[world.pod("x", "b")].ip;

    // (0) No policy: everything reaches everything.
    let mut policies: Vec<PolicyModel> = Vec::new();
    check_matrix(&world, &policies, "0 (no policy)");

    // An established connection z/c -> x/c, to be cut by step 1.
    let hold = Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{}.c", world.namespaces[2]))
        .args([
            "python3",
            "-c",
            HOLD,
            &world.pods[world.pod("x", "c")].ip.to_string(),
            "80",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut hold = KillOnDrop(hold);
    // Its lines, read on a thread so a silent client cannot hang the test.
    let (lines_tx, hold_out) = std::sync::mpsc::channel::<String>();
    let stdout = hold.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    assert_eq!(
        hold_out
            .recv_timeout(Duration::from_secs(60))
            .ok()
            .as_deref(),
        Some("flowing"),
        "the held connection did not start"
    );

    let tcp = |port: Option<PortRef>| PortSpec {
        proto: Proto::Tcp,
        port,
    };
    let udp = |port: Option<PortRef>| PortSpec {
        proto: Proto::Udp,
        port,
    };
    let steps: Vec<PolicyModel> = vec![
        // (1) Default deny of ingress in x.
        PolicyModel {
            name: "deny-ingress",
            ns: 0,
            select: None,
            ingress: Some(vec![]),
            egress: None,
        },
        // (2) x/a lets in x's pods labelled pod=b, on TCP 80 only.
        PolicyModel {
            name: "a-from-b",
            ns: 0,
            select: Some("a"),
            ingress: Some(vec![RuleModel {
                peers: vec![Peer::Select {
                    pod: Some("b"),
                    ns: None,
                }],
                ports: vec![tcp(Some(PortRef::Num(80, None)))],
            }]),
            egress: None,
        },
        // (3) All of x lets in namespace y on the named port serve-81-tcp,
        // and z's pod=a (both selectors in one peer) on every port.
        PolicyModel {
            name: "from-y-and-za",
            ns: 0,
            select: None,
            ingress: Some(vec![
                RuleModel {
                    peers: vec![Peer::Select {
                        pod: None,
                        ns: Some(Some("y")),
                    }],
                    ports: vec![tcp(Some(PortRef::Name("serve-81-tcp")))],
                },
                RuleModel {
                    peers: vec![Peer::Select {
                        pod: Some("a"),
                        ns: Some(Some("z")),
                    }],
                    ports: vec![],
                },
            ]),
            egress: None,
        },
        // (4) Default deny of egress in y ...
        PolicyModel {
            name: "deny-egress",
            ns: 1,
            select: None,
            ingress: None,
            egress: Some(vec![]),
        },
        // ... and y/c may reach namespace x on ports 80-81, TCP and UDP.
        PolicyModel {
            name: "c-to-x",
            ns: 1,
            select: Some("c"),
            ingress: None,
            egress: Some(vec![RuleModel {
                peers: vec![Peer::Select {
                    pod: None,
                    ns: Some(Some("x")),
                }],
                ports: vec![
                    tcp(Some(PortRef::Num(80, Some(81)))),
                    udp(Some(PortRef::Num(80, Some(81)))),
                ],
            }]),
        },
        // (5) z/a lets in the pod network except x/b.
        PolicyModel {
            name: "a-from-block",
            ns: 2,
            select: Some("a"),
            ingress: Some(vec![RuleModel {
                peers: vec![Peer::Block {
                    cidr: subnet,
                    except: vec![Ipv4Net::new(xb, 32).unwrap()],
                }],
                ports: vec![],
            }]),
            egress: None,
        },
        // (6) z/b isolated both ways with no rule.
        PolicyModel {
            name: "b-isolated",
            ns: 2,
            select: Some("b"),
            ingress: Some(vec![]),
            egress: Some(vec![]),
        },
    ];

    for (i, p) in steps.iter().enumerate() {
        let applied = Instant::now();
        node.kubectl_ok(&["apply", "-f", "-"], Some(&world.manifest(p)));
        policies.push(p.clone());
        if i == 0 {
            // z/c -> x/c is now denied: the held connection stops, dropped.
            let line = hold_out
                .recv_timeout(Duration::from_secs(60))
                .expect("the held connection of a newly denied pair kept flowing");
            assert_eq!(
                line, "stopped timeout",
                "a newly denied connection stops by drops, not a reset"
            );
            eprintln!(
                "established connection: its last answer came at most {:.2} s after kubectl apply returned (the client gives up 2 s after its last answer)",
                (applied.elapsed().as_secs_f64() - 2.0).max(0.0)
            );
        }
        check_matrix(&world, &policies, &format!("{} (+{})", i + 1, p.name));
        if i == 2 {
            // Through a service to x/b:80: decided on the backend.
            node.kubectl_ok(
                &["apply", "-f", "-"],
                Some(&format!(
                    "apiVersion: v1\nkind: Service\nmetadata:\n  name: xb\n  namespace: {}\nspec:\n  selector: {{pod: b}}\n  ports:\n  - {{port: 80, targetPort: 80}}\n",
                    world.namespaces[0]
                )),
            );
            let vip = node.kubectl_ok(
                &[
                    "get",
                    "svc",
                    "-n",
                    &world.namespaces[0],
                    "xb",
                    "-o",
                    "jsonpath={.spec.clusterIP}",
                ],
                None,
            );
            for (from, allowed) in [("y", false), ("z", true)] {
                let src = world.pod(from, "a");
                assert_eq!(
                    world.allows(&policies, src, world.pod("x", "b"), Proto::Tcp, 80),
                    allowed
                );
                let want = if allowed { "ok" } else { "timeout" };
                let got = wait_for(Duration::from_secs(60), || {
                    let child = spawn_probe(
                        &format!("{}.a", world.namespaces[world.pods[src].ns]),
                        &format!("{} 80 tcp\n", vip.trim()),
                    );
                    let out = text(&child.wait_with_output().unwrap().stdout);
                    let res = out.split_whitespace().last()?.to_string();
                    (res == want).then_some(res)
                });
                assert!(
                    got.is_some(),
                    "{from}/a -> service xb (x/b:80): want {want}"
                );
            }
        }
    }
    assert!(counter(&node, "dropped.policy_ingress") > 0);
    assert!(counter(&node, "dropped.policy_egress") > 0);

    // Back, one policy at a time, to everything open.
    for p in steps.iter().rev() {
        node.kubectl_ok(
            &[
                "delete",
                "networkpolicy",
                "-n",
                &world.namespaces[p.ns],
                p.name,
            ],
            None,
        );
        policies.retain(|q| !(q.name == p.name && q.ns == p.ns));
        check_matrix(&world, &policies, &format!("-{}", p.name));
    }
    for ns in &world.namespaces {
        let _ = node.kubectl(&["delete", "namespace", ns, "--wait=false"], None);
    }
}
