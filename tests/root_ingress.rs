//! The HTTP(S) ingress of podnetd, from outside the node: an "outside"
//! network namespace joined to the node's namespace by a veth pair on an
//! underlay subnet (192.0.2.0/24, a route to the node only, as a browser's
//! machine has), real kubectl for the objects, real curl as the client.
//!
//! Needs root. Everything lives in namespaces this test makes (the node's
//! through `kube_node`, the outside one here), removed on drop, also when
//! the test fails.

mod daemon_support;
mod kube_node;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use daemon_support::{run_timeout, text, wait_for};
use kube_node::KubeNode;

/// The node's address on the underlay, and the outside client's.
const NODE_ADDR: &str = "192.0.2.1";
const CLIENT_ADDR: &str = "192.0.2.2";

/// The backend: GET answers with the pod's name and what the proxy told
/// it; POST echoes the body's length and SHA-256 (chunked or not);
/// `Upgrade: websocket` is answered with a WebSocket that echoes text frames.
const BACKEND: &str = r#"import base64, hashlib, http.server, os
NAME = os.environ["HOSTNAME"]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def reply(self, code, body):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        if self.headers.get("Upgrade", "").lower() == "websocket":
            return self.websocket()
        h = self.headers
        line = "%s path=%s host=%s xff=%s proto=%s real=%s\n" % (NAME, self.path, h.get("Host"),
            h.get("X-Forwarded-For"), h.get("X-Forwarded-Proto"), h.get("X-Real-IP"))
        self.reply(200, line.encode())
    def do_POST(self):
        body = b""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                body += self.rfile.read(size)
                self.rfile.readline()
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.reply(200, ("%s got=%d sha256=%s\n" % (NAME, len(body), hashlib.sha256(body).hexdigest())).encode())
    def websocket(self):
        key = self.headers["Sec-WebSocket-Key"] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", base64.b64encode(hashlib.sha1(key.encode()).digest()).decode())
        self.end_headers()
        self.close_connection = True
        while True:
            hdr = self.rfile.read(2)
            if len(hdr) < 2:
                return
            n = hdr[1] & 0x7f
            mask = self.rfile.read(4) if hdr[1] & 0x80 else bytes(4)
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(n)))
            if hdr[0] & 0x0f == 8:
                return
            out = ("%s echo %s" % (NAME, data.decode())).encode()
            self.wfile.write(bytes([0x81, len(out)]) + out)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("", 8080), H).serve_forever()
"#;

/// A WebSocket client: handshake to my-app.com/ws through ADDR:PORT, two
/// text frames, prints the status line and each echo.
const WS_CLIENT: &str = r#"import base64, os, socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
key = base64.b64encode(os.urandom(16)).decode()
s.sendall(("GET /ws HTTP/1.1\r\nHost: my-app.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % key).encode())
buf = b""
while b"\r\n\r\n" not in buf:
    d = s.recv(4096)
    if not d:
        sys.exit("closed during the handshake: %r" % buf)
    buf += d
head, rest = buf.split(b"\r\n\r\n", 1)
print(head.decode().split("\r\n")[0])
for msg in ["hello", "again"]:
    p = msg.encode()
    mask = os.urandom(4)
    s.sendall(bytes([0x81, 0x80 | len(p)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(p)))
    while len(rest) < 2 or len(rest) < 2 + (rest[1] & 0x7f):
        d = s.recv(4096)
        if not d:
            sys.exit("closed before the echo of %s" % msg)
        rest += d
    n = rest[1] & 0x7f
    print(rest[2:2 + n].decode())
    rest = rest[2 + n:]
"#;

fn indent(code: &str, by: usize) -> String {
    code.lines()
        .map(|l| format!("{}{l}\n", " ".repeat(by)))
        .collect()
}

fn deployment(name: &str, replicas: u32, port_name: &str) -> String {
    deployment_with(name, replicas, port_name, BACKEND, 2)
}

fn deployment_with(name: &str, replicas: u32, port_name: &str, code: &str, grace: u32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      terminationGracePeriodSeconds: {grace}
      containers:
      - name: {name}
        image: python:3
        command: ["python3", "-c"]
        args:
        - |
{code}        ports:
        - containerPort: 8080
        readinessProbe:
          httpGet: {{path: /, port: 8080}}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  selector: {{app: {name}}}
  ports:
  - name: {port_name}
    port: 80
    targetPort: 8080
"#,
        code = indent(code, 10)
    )
}

/// Two hosts, a path to a second service by port name, TLS for my-app.com;
/// no class (podnet's is the default).
const INGRESS: &str = r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: my-app
spec:
  tls:
  - hosts: [my-app.com]
    secretName: my-app-tls
  rules:
  - host: my-app.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service:
            name: web
            port:
              number: 80
      - path: /api
        pathType: Prefix
        backend:
          service:
            name: api
            port:
              name: http
  - host: api.my-app.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend: {service: {name: api, port: {name: http}}}
"#;

/// The outside namespace, with its veth joined to the node's namespace.
struct Outside {
    netns: String,
}

impl Outside {
    fn new(node: &KubeNode) -> Outside {
        let pid = std::process::id();
        let out = Outside {
            netns: format!("pnio-{pid}"),
        };
        let ip = |args: &[&str]| {
            let st = Command::new("ip").args(args).status().unwrap();
            assert!(st.success(), "ip {args:?} failed");
        };
        let (o, n) = (format!("pnio{pid}"), format!("pnin{pid}"));
        ip(&["netns", "add", &out.netns]);
        ip(&["-n", &out.netns, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            &out.netns,
            "link",
            "add",
            &o,
            "type",
            "veth",
            "peer",
            "name",
            &n,
            "netns",
            &node.netns,
        ]);
        ip(&[
            "-n",
            &out.netns,
            "addr",
            "add",
            &format!("{CLIENT_ADDR}/24"),
            "dev",
            &o,
        ]);
        ip(&["-n", &out.netns, "link", "set", &o, "up"]);
        ip(&[
            "-n",
            &node.netns,
            "addr",
            "add",
            &format!("{NODE_ADDR}/24"),
            "dev",
            &n,
        ]);
        ip(&["-n", &node.netns, "link", "set", &n, "up"]);
        out
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/var/run/netns/{}", self.netns))
            .arg(program);
        cmd
    }

    /// curl from outside: (status, HTTP version, body); status "000" when
    /// no answer came.
    fn curl(&self, args: &[&str]) -> (String, String, String) {
        let mut cmd = self.command("curl");
        cmd.args([
            "-sS",
            "--max-time",
            "20",
            "-w",
            "\n%{http_code} %{http_version}",
        ])
        .args(args);
        let (out, _) = run_timeout(cmd, Duration::from_secs(30));
        let all = text(&out.stdout);
        let (body, last) = all.rsplit_once('\n').unwrap_or(("", &all));
        let mut it = last.split_whitespace();
        let code = it.next().unwrap_or("000").to_string();
        let version = it.next().unwrap_or("").to_string();
        (code, version, body.to_string())
    }

    /// `curl --resolve HOST:80:NODE http://HOST/PATH`.
    fn http(&self, host: &str, path: &str) -> (String, String, String) {
        self.curl(&[
            "--resolve",
            &format!("{host}:80:{NODE_ADDR}"),
            &format!("http://{host}{path}"),
        ])
    }

    /// Polls until `f` of a request's answer holds (generous bound).
    fn until(
        &self,
        what: &str,
        node: &KubeNode,
        mut request: impl FnMut() -> (String, String, String),
        ok: impl Fn(&(String, String, String)) -> bool,
    ) -> (String, String, String) {
        let mut last = Default::default();
        let got = wait_for(Duration::from_secs(90), || {
            last = request();
            ok(&last).then(|| last.clone())
        });
        got.unwrap_or_else(|| {
            panic!(
                "{what}: last answer {last:?}\ndaemon log:\n{}",
                tail(&node.log())
            )
        })
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth pair, both ends.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

/// The log without its colour escapes (`ESC [ ... m`).
fn strip_ansi(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(80)..].join("\n")
}

/// A CA and a certificate for `host` signed by it, as PEM files in `dir`:
/// (ca.pem, tls.crt, tls.key).
fn certificate(dir: &Path, host: &str, tag: &str) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("podnet ingress test CA {tag}"));
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![host.to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, host);
    let cert = params.signed_by(&key, &ca).unwrap();
    let paths = (
        dir.join(format!("ca-{tag}.pem")),
        dir.join(format!("tls-{tag}.crt")),
        dir.join(format!("tls-{tag}.key")),
    );
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

fn tls_secret(node: &KubeNode, crt: &Path, key: &Path) {
    let yaml = node.kubectl_ok(
        &[
            "create",
            "secret",
            "tls",
            "my-app-tls",
            "-n",
            &node.namespace,
            &format!("--cert={}", crt.display()),
            &format!("--key={}", key.display()),
            "--dry-run=client",
            "-o",
            "yaml",
        ],
        None,
    );
    node.apply(&yaml);
}

#[test]
fn root_ingress_routes_hosts_and_paths_from_outside_with_tls_websocket_and_503() {
    let _serial = daemon_support::serial();
    let node = KubeNode::start();
    let outside = Outside::new(&node);
    let tmp = tempfile::tempdir().unwrap();

    // podnet's IngressClass is there, the default.
    let classes = node.kubectl_ok(&["get", "ingressclass"], None);
    assert!(
        classes.contains("CONTROLLER") && classes.contains("podnet.io/ingress"),
        "{classes}"
    );

    node.apply(&deployment("web", 2, "web"));
    node.apply(&deployment("api", 1, "http"));
    node.apply(INGRESS);
    node.k(&["rollout", "status", "deployment/web", "--timeout=180s"]);
    node.k(&["rollout", "status", "deployment/api", "--timeout=180s"]);

    // status.loadBalancer gets the node's InternalIP; kubectl shows it.
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
    assert!(!internal.is_empty());
    let shown = wait_for(Duration::from_secs(60), || {
        let out = node.k(&["get", "ingress", "my-app"]);
        out.contains(&internal).then_some(out)
    })
    .unwrap_or_else(|| {
        panic!(
            "no address on the Ingress:\n{}",
            node.k(&["get", "ing", "-o", "yaml"])
        )
    });
    let row = shown.lines().nth(1).unwrap().to_string();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells[..5],
        [
            "my-app",
            "podnet",
            "my-app.com,api.my-app.com",
            internal.as_str(),
            "80,"
        ],
        "{shown}"
    );
    assert!(shown.lines().next().unwrap().contains("ADDRESS"), "{shown}");

    // Host and path routing, from outside.
    let (_, _, body) = outside.until(
        "http://my-app.com/ through the ingress",
        &node,
        || outside.http("my-app.com", "/"),
        |(code, _, body)| code == "200" && body.starts_with("web-"),
    );
    assert!(body.contains("host=my-app.com "), "{body}");
    assert!(body.contains(&format!("xff={CLIENT_ADDR} ")), "{body}");
    assert!(body.contains(&format!("real={CLIENT_ADDR}")), "{body}");
    assert!(body.contains("proto=http "), "{body}");
    let (code, _, body) = outside.http("my-app.com", "/api/items?x=1");
    assert_eq!(code, "200", "{body}");
    assert!(
        body.starts_with("api-") && body.contains("path=/api/items?x=1 "),
        "{body}"
    );
    let (code, _, body) = outside.http("my-app.com", "/apixyz");
    assert!(code == "200" && body.starts_with("web-"), "{code} {body}");
    let (code, _, body) = outside.http("api.my-app.com", "/anything");
    assert!(code == "200" && body.starts_with("api-"), "{code} {body}");
    let (code, _, body) = outside.http("unknown.example", "/");
    assert_eq!(code, "404", "unknown host: {body}");

    // A chunked upload of 3 MiB reaches the pod whole.
    let upload = tmp.path().join("upload.bin");
    let data: Vec<u8> = (0..3u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&upload, &data).unwrap();
    let sum = {
        let out = Command::new("sha256sum").arg(&upload).output().unwrap();
        text(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    let (code, _, body) = outside.curl(&[
        "--resolve",
        &format!("my-app.com:80:{NODE_ADDR}"),
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &format!("@{}", upload.display()),
        "http://my-app.com/upload",
    ]);
    assert_eq!(code, "200", "{body}");
    assert!(
        body.contains(&format!("got={} sha256={sum}", data.len())),
        "{body}"
    );

    // A WebSocket through the ingress: one connection, two echoes.
    let mut ws = outside.command("python3");
    ws.args(["-c", WS_CLIENT, NODE_ADDR, "80"]);
    let (out, _) = run_timeout(ws, Duration::from_secs(60));
    let lines = text(&out.stdout);
    let lines: Vec<&str> = lines.lines().collect();
    assert!(
        out.status.success() && lines.len() == 3,
        "{lines:?} {}",
        text(&out.stderr)
    );
    assert!(lines[0].contains("101"), "{lines:?}");
    let pod = lines[1].split_whitespace().next().unwrap();
    assert!(pod.starts_with("web-"), "{lines:?}");
    assert_eq!(lines[1], format!("{pod} echo hello"));
    assert_eq!(lines[2], format!("{pod} echo again"));

    // TLS: the Secret made after the Ingress is picked up; SNI, h2 and h1.
    let (ca1, crt1, key1) = certificate(tmp.path(), "my-app.com", "one");
    tls_secret(&node, &crt1, &key1);
    let https = |ca: &Path, version: &str| {
        outside.curl(&[
            version,
            "--resolve",
            &format!("my-app.com:443:{NODE_ADDR}"),
            "--cacert",
            &ca.display().to_string(),
            "https://my-app.com/api/tls",
        ])
    };
    let (_, version, body) = outside.until(
        "https://my-app.com/ with the first certificate",
        &node,
        || https(&ca1, "--http2"),
        |(code, _, _)| code == "200",
    );
    assert_eq!(version, "2", "h2 by ALPN");
    assert!(
        body.starts_with("api-") && body.contains("proto=https "),
        "{body}"
    );
    let (code, version, _) = https(&ca1, "--http1.1");
    assert_eq!((code.as_str(), version.as_str()), ("200", "1.1"));

    // The Secret updated: the new certificate is served, without a restart.
    let (ca2, crt2, key2) = certificate(tmp.path(), "my-app.com", "two");
    tls_secret(&node, &crt2, &key2);
    outside.until(
        "https://my-app.com/ with the second certificate",
        &node,
        || https(&ca2, "--http2"),
        |(code, _, _)| code == "200",
    );
    let (code, _, _) = https(&ca1, "--http2");
    assert_eq!(code, "000", "the old certificate is no longer served");

    // No ready endpoints: 503 at once; the other service still answers.
    node.k(&["scale", "deployment/web", "--replicas=0"]);
    let (_, _, body) = outside.until(
        "503 with web scaled to 0",
        &node,
        || outside.http("my-app.com", "/"),
        |(code, _, _)| code == "503",
    );
    assert!(body.contains("web"), "{body}");
    let (code, _, body) = outside.http("my-app.com", "/api");
    assert!(code == "200" && body.starts_with("api-"), "{code} {body}");

    // One access log line per request.
    let log = strip_ansi(&node.log());
    let line = log
        .lines()
        .find(|l| l.contains("ingress request") && l.contains("status=503"))
        .unwrap_or_else(|| panic!("no access log line for the 503:\n{}", tail(&log)));
    for field in [
        "method=GET",
        "host=my-app.com",
        "path=/",
        "upstream=",
        "duration_ms=",
    ] {
        assert!(line.contains(field), "{field} missing: {line}");
    }
}

/// Keep-alive clients through the ingress until stdin closes: four
/// threads, each with one connection (a new one after any failure),
/// requesting GET / with Host my-app.com in a loop. Prints `running` after
/// the first answers, then at the end one JSON line: requests, failures
/// (any answer but 200, any error), the first failures, the pods seen.
const LOAD: &str = r#"import http.client, json, sys, threading, time
addr = sys.argv[1]
stop = threading.Event(); lock = threading.Lock()
stats = {"requests": 0, "failures": 0, "errors": [], "pods": {}}
def client():
    conn = None
    while not stop.is_set():
        try:
            if conn is None:
                conn = http.client.HTTPConnection(addr, 80, timeout=20)
            conn.request("GET", "/", headers={"Host": "my-app.com"})
            r = conn.getresponse(); body = r.read().decode()
            ok = r.status == 200
            why = "" if ok else "%d %s" % (r.status, body.strip())
        except Exception as e:
            ok, why = False, repr(e)
            conn = None
        with lock:
            stats["requests"] += 1
            if ok:
                pod = body.split()[0]
                stats["pods"][pod] = stats["pods"].get(pod, 0) + 1
            else:
                stats["failures"] += 1
                if len(stats["errors"]) < 10:
                    stats["errors"].append("%.3f %s" % (time.time(), why))
ts = [threading.Thread(target=client) for _ in range(4)]
[t.start() for t in ts]
while stats["requests"] < 20:
    time.sleep(0.05)
print("running", flush=True)
sys.stdin.read()
stop.set(); [t.join() for t in ts]
print(json.dumps(stats), flush=True)
"#;

/// A backend that stops as a well-behaved server does on SIGTERM: it stops
/// accepting, answers what comes on its open connections with
/// `Connection: close`, and exits after the requests in flight are done.
const GRACEFUL: &str = r#"import http.server, os, signal, threading, time
NAME = os.environ["HOSTNAME"]
stopping = threading.Event()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = ("%s path=%s\n" % (NAME, self.path)).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        if stopping.is_set():
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
srv = http.server.ThreadingHTTPServer(("", 8080), H)
def term(*_):
    stopping.set()
    threading.Thread(target=srv.shutdown).start()
signal.signal(signal.SIGTERM, term)
srv.serve_forever()
time.sleep(3)
"#;

#[test]
fn root_ingress_rolling_update_under_load_fails_no_request() {
    let _serial = daemon_support::serial();
    let node = KubeNode::start();
    let outside = Outside::new(&node);
    node.apply(&deployment_with("web", 3, "web", GRACEFUL, 10));
    node.apply(
        r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: rollout
spec:
  rules:
  - host: my-app.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend: {service: {name: web, port: {number: 80}}}
"#,
    );
    node.k(&["rollout", "status", "deployment/web", "--timeout=180s"]);
    outside.until(
        "the ingress serves my-app.com",
        &node,
        || outside.http("my-app.com", "/"),
        |(code, _, _)| code == "200",
    );
    let before: Vec<String> = node
        .k(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ])
        .split_whitespace()
        .map(str::to_string)
        .collect();

    let mut load = outside.command("python3");
    load.args(["-c", LOAD, NODE_ADDR])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut load = load.spawn().unwrap();
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdin = load.stdin.take().unwrap();
    let stdout = load.stdout.take().unwrap();
    let _load = KillOnDrop(load);
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    assert_eq!(
        lines.recv_timeout(Duration::from_secs(120)).ok().as_deref(),
        Some("running"),
        "the load did not start:\n{}",
        tail(&node.log())
    );

    // Every pod replaced, one by one (maxSurge 1, maxUnavailable 0 for 3
    // replicas by default), under the load.
    node.k(&["rollout", "restart", "deployment/web"]);
    node.k(&["rollout", "status", "deployment/web", "--timeout=300s"]);
    // The old pods' ends (SIGTERM, their last answers, exit) under the load too.
    for pod in &before {
        node.k(&[
            "wait",
            "--for=delete",
            &format!("pod/{pod}"),
            "--timeout=120s",
        ]);
    }
    drop(stdin);
    let summary = lines
        .recv_timeout(Duration::from_secs(120))
        .expect("the load's summary");
    let stats: serde_json::Value = serde_json::from_str(&summary).unwrap();
    let after: Vec<String> = node
        .k(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ])
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let pods = stats["pods"].as_object().unwrap();
    eprintln!(
        "rollout under load: {} requests, {} failed, per pod {:?}",
        stats["requests"], stats["failures"], pods
    );
    assert_eq!(
        stats["failures"],
        0,
        "requests failed during the rollout: {summary}\n{}",
        tail(&node.log())
    );
    assert!(
        before.iter().any(|p| pods.contains_key(p)) && after.iter().any(|p| pods.contains_key(p)),
        "old pods {before:?} and new pods {after:?} both served: {summary}"
    );
    assert!(
        before.iter().all(|p| !after.contains(p)),
        "every pod was replaced"
    );
}
