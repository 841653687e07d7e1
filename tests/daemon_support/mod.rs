//! Shared harness of the `daemon_*` root tests: a real `podnetd` started in a
//! fresh "node" network namespace with its own state directory, socket and
//! admin kubeconfig, the `podnet` CLI against it (its `-o json` answers are
//! Kubernetes objects), real clients run with `ip netns exec`, and a guard
//! that removes everything (daemon, pod processes, namespaces, state) on
//! drop, also when the test panics.
//!
//! Names: every pod / deployment / statefulset / service name of one
//! [`Node`] starts with its prefix `t<pid>x<n>-`, the node namespace is
//! `pnt-<pid>-<n>`, and a pod's network namespace is `default.<pod>`
//! ([`pod_netns`]), so parallel runs and other test binaries never collide
//! and cleanup only touches what this node made.
//!
//! No test asserts how fast something happens: each waits for a condition
//! with a generous bound (the machine is shared), and asserts the outcome.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use podnet::api::ApiClient;
use serde_json::Value;

pub const PODNETD: &str = env!("CARGO_BIN_EXE_podnetd");
pub const PODNET: &str = env!("CARGO_BIN_EXE_podnet");

/// One daemon test at a time per test binary: a daemon, its pods and their
/// clients already load a small shared machine.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Fails (never skips) without root or without a tool the tests use.
pub fn require_env() {
    assert!(
        podnet::sys::is_root(),
        "the daemon tests need root (network namespaces, TUN devices, netlink); \
         run them as root, e.g. `sudo scripts/test.sh` or `sudo -E cargo test --test daemon_...`"
    );
    for (tool, package) in [
        ("ip", "iproute2"),
        ("nsenter", "util-linux"),
        ("curl", "curl"),
        ("socat", "socat"),
        ("python3", "python3"),
    ] {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            found,
            "the daemon tests need `{tool}`: install it (apt-get install -y {package}); \
             scripts/test.sh installs it when missing"
        );
    }
}

/// Runs `cmd` with a hard time limit; the child is SIGKILLed at the deadline.
/// Returns its output and whether it timed out.
pub fn run_timeout(mut cmd: Command, limit: Duration) -> (Output, bool) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let t_out = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + limit;
    let mut timed_out = false;
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            let _ = child.kill();
            break child.wait().expect("wait");
        }
        thread::sleep(Duration::from_millis(10));
    };
    let stdout = t_out.join().unwrap_or_default();
    let stderr = t_err.join().unwrap_or_default();
    (
        Output {
            status,
            stdout,
            stderr,
        },
        timed_out,
    )
}

/// How long a pod may take to become Running on a busy machine.
pub const POD_START: Duration = Duration::from_secs(60);
/// How long the daemon may take to notice a change and act on it.
pub const SETTLE: Duration = Duration::from_secs(30);
/// How long a killed container may take to be restarted in place (the
/// kubelet waits a back-off of 10 s before the first restart).
pub const RESTART: Duration = Duration::from_secs(60);

/// Polls `f` every 50 ms until it returns `Some` or `limit` passes.
pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `kill -SIG pid`.
pub fn kill(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// Whether a process exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            // state is the field after the ")" of comm
            let state = s.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        }
        Err(_) => false,
    }
}

/// A python3 HTTP server on `port` answering every GET with the pod's name
/// (`$HOSTNAME`, which the kubelet sets, as Kubernetes does) and the
/// address the request reached (the pod's IP, also through a service):
/// `NAME IP`.
pub fn whoami_server(port: u16) -> Vec<String> {
    let code = format!(
        r#"import http.server, os
name = os.environ["HOSTNAME"]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = (name + " " + self.request.getsockname()[0]).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("", {port}), H).serve_forever()
"#
    );
    vec!["python3".into(), "-c".into(), code]
}

/// A socat UDP server on `port` answering every datagram with `pong $HOSTNAME`.
pub fn udp_pong_server(port: u16) -> Vec<String> {
    vec![
        "socat".into(),
        format!("UDP4-RECVFROM:{port},fork"),
        "SYSTEM:echo pong $HOSTNAME".into(),
    ]
}

/// The network namespace of pod `name` (in the `default` namespace), as
/// `ip netns` lists it.
pub fn pod_netns(name: &str) -> String {
    podnet::daemon::runtime::netns_name("default", name)
}

/// A pod's `status.phase` ("" when it has none yet).
pub fn phase(pod: &Value) -> &str {
    pod["status"]["phase"].as_str().unwrap_or("")
}

/// A pod's `status.podIP`.
pub fn ip_of(pod: &Value) -> Option<String> {
    pod["status"]["podIP"].as_str().map(String::from)
}

/// The restarts of a pod's first container.
pub fn restarts(pod: &Value) -> u64 {
    pod["status"]["containerStatuses"][0]["restartCount"]
        .as_u64()
        .unwrap_or(0)
}

/// A pod's `metadata.name`.
pub fn name_of(pod: &Value) -> String {
    pod["metadata"]["name"].as_str().unwrap_or("").to_string()
}

/// Whether the pod is being deleted.
pub fn terminating(pod: &Value) -> bool {
    !pod["metadata"]["deletionTimestamp"].is_null()
}

/// The pid in the first container's `containerID`, `podnet://PID-STARTTIME`.
pub fn container_pid(pod: &Value) -> Option<u32> {
    let id = pod["status"]["containerStatuses"][0]["containerID"].as_str()?;
    let (pid, _start) = id.strip_prefix("podnet://")?.split_once('-')?;
    pid.parse().ok()
}

/// Running with an address and a running first container, not being deleted.
pub fn running(pod: &Value) -> bool {
    phase(pod) == "Running"
        && ip_of(pod).is_some()
        && pod["status"]["containerStatuses"][0]["state"]["running"].is_object()
        && !terminating(pod)
}

/// The processes of a network namespace (a name under /var/run/netns or a
/// path) that none of its other processes started: a pod's container (one,
/// unless two copies run), wherever its parent is.
fn namespace_root_processes(ns: &str) -> Vec<u32> {
    use std::os::unix::fs::MetadataExt;
    let path = if ns.starts_with('/') {
        PathBuf::from(ns)
    } else {
        Path::new("/var/run/netns").join(ns)
    };
    let Ok(ino) = std::fs::metadata(&path).map(|m| m.ino()) else {
        return Vec::new();
    };
    let Ok(proc) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let pids: Vec<u32> = proc
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|pid: &u32| {
            std::fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|m| m.ino() == ino)
        })
        .collect();
    let parent = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit(')')
            .next()?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    pids.iter()
        .copied()
        .filter(|p| alive(*p) && parent(*p).is_none_or(|pp| !pids.contains(&pp)))
        .collect()
}

/// `--dns-upstream none` unless `args` choose an upstream: a test's
/// daemon never forwards names to the host's resolvers.
pub fn no_dns_forwarding(args: &[String]) -> Vec<&'static str> {
    if args.iter().any(|a| a.starts_with("--dns-upstream")) {
        Vec::new()
    } else {
        vec!["--dns-upstream", "none"]
    }
}

/// One node: a namespace with a running `podnetd`, removed on drop.
pub struct Node {
    /// The node namespace, `pnt-<pid>-<n>`.
    pub ns: String,
    /// Prefix of every object name of this node, `t<pid>x<n>-`.
    pub prefix: String,
    pub dir: PathBuf,
    pub state: PathBuf,
    pub sock: PathBuf,
    pub log: PathBuf,
    /// Where the daemon writes its admin kubeconfig (never /etc/podnet).
    pub kubeconfig: PathBuf,
    daemon: Option<Child>,
    /// Flags given to `podnetd` beyond the harness's own.
    daemon_args: Vec<String>,
    /// The soft limit on open files the daemon is started with, if not the
    /// harness's own.
    open_files: Option<u64>,
    names: AtomicU32,
    _tmp: Option<tempfile::TempDir>,
}

impl Node {
    /// Creates the node namespace and starts the daemon in it; waits until
    /// its API answers. The daemon gets the flags in
    /// `PODNET_TEST_DAEMON_FLAGS` (whitespace-separated), so the whole suite
    /// can run with, say, `--no-offload` (scripts/test.sh does).
    pub fn start() -> Node {
        let flags = std::env::var("PODNET_TEST_DAEMON_FLAGS").unwrap_or_default();
        Node::start_with(&flags.split_whitespace().collect::<Vec<_>>())
    }

    /// As [`Node::start`], with exactly these extra `podnetd` flags (kept
    /// for restarts; see [`Node::set_daemon_args`]).
    pub fn start_with(daemon_args: &[&str]) -> Node {
        require_env();
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let ns = format!("pnt-{pid}-{n}");
        let prefix = format!("t{pid}x{n}-");
        let tmp = tempfile::Builder::new()
            .prefix("podnet-daemon-test-")
            .tempdir()
            .expect("temp dir");
        let dir = tmp.path().to_path_buf();
        let mut node = Node {
            ns: ns.clone(),
            prefix,
            state: dir.join("state"),
            sock: dir.join("podnet.sock"),
            log: dir.join("podnetd.log"),
            kubeconfig: dir.join("admin.kubeconfig"),
            dir,
            daemon: None,
            daemon_args: Vec::new(),
            open_files: None,
            names: AtomicU32::new(0),
            _tmp: Some(tmp),
        };
        node.set_daemon_args(daemon_args);
        // From here on, Drop cleans up whatever exists.
        sh_ok(Command::new("ip").args(["netns", "add", &ns]));
        sh_ok(Command::new("ip").args(["-n", &ns, "link", "set", "lo", "up"]));
        node.start_daemon();
        node
    }

    /// A name unique to this node: `<prefix><tag><n>`.
    pub fn name(&self, tag: &str) -> String {
        let n = self.names.fetch_add(1, Ordering::Relaxed);
        format!("{}{tag}{n}", self.prefix)
    }

    /// Starts `podnetd` in the node namespace (again, after a stop) and
    /// waits up to 60 s for the API.
    pub fn start_daemon(&mut self) {
        if let Err(e) = self.try_start_daemon() {
            panic!("{e}");
        }
    }

    /// As [`Node::start_daemon`], but a daemon that exits at start is an
    /// `Err` with its log, not a panic (for tests of refused starts).
    pub fn try_start_daemon(&mut self) -> Result<(), String> {
        assert!(self.daemon.is_none(), "daemon already running");
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("daemon log file");
        // prlimit (util-linux) execs nsenter, which execs podnetd: one pid.
        let mut command = match self.open_files {
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:")).arg("nsenter");
                c
            }
            None => Command::new("nsenter"),
        };
        let child = command
            .arg(format!("--net=/var/run/netns/{}", self.ns))
            .arg(PODNETD)
            .arg("--state-dir")
            .arg(&self.state)
            .arg("--socket")
            .arg(&self.sock)
            .arg("--admin-kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--workers", "2"])
            .args(no_dns_forwarding(&self.daemon_args))
            .args(&self.daemon_args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("starting podnetd with nsenter (util-linux)");
        self.daemon = Some(child);
        let mut exited = None;
        let ok = wait_for(Duration::from_secs(60), || {
            if let Some(s) = self.daemon_exited() {
                exited = Some(s);
                return Some(());
            }
            let (out, _) = run_timeout(self.cli(&["pod", "list"]), Duration::from_secs(5));
            out.status.success().then_some(())
        });
        if let Some(s) = exited {
            self.daemon = None;
            return Err(format!(
                "podnetd exited at start with {s}; log:\n{}",
                self.daemon_log()
            ));
        }
        assert!(
            ok.is_some(),
            "podnetd did not answer on {} within 60 s; log:\n{}",
            self.sock.display(),
            self.daemon_log()
        );
        Ok(())
    }

    /// Extra `podnetd` flags for the next [`Node::start_daemon`].
    pub fn set_daemon_args(&mut self, args: &[&str]) {
        self.daemon_args = args.iter().map(|a| a.to_string()).collect();
    }

    /// The soft limit on open files for the next [`Node::start_daemon`]
    /// (`None`: the harness's own).
    pub fn set_open_files_limit(&mut self, soft: Option<u64>) {
        self.open_files = soft;
    }

    /// Whether the daemon runs with offloads (no `--no-offload` flag).
    pub fn offload(&self) -> bool {
        !self.daemon_args.iter().any(|a| a == "--no-offload")
    }

    /// Whether the TUN device `dev` in namespace `ns` was last opened with
    /// virtio-net headers (offloads), as `ip -d link` reports it.
    pub fn vnet_hdr(&self, ns: &str, dev: &str) -> bool {
        let out = Command::new("ip")
            .args(["-n", ns, "-d", "link", "show", "dev", dev])
            .output()
            .expect("ip");
        let text = text(&out.stdout);
        assert!(
            text.contains("tun type tun"),
            "{dev} in {ns} is not a TUN device: {text}"
        );
        text.contains("vnet_hdr on")
    }

    /// Waits until `dev` in `ns` is a TUN device whose virtio-net headers
    /// are `on` (a restarted daemon reattaches devices in the background);
    /// whether that happened.
    pub fn wait_vnet_hdr(&self, ns: &str, dev: &str, on: bool) -> bool {
        wait_for(SETTLE, || {
            let out = Command::new("ip")
                .args(["-n", ns, "-d", "link", "show", "dev", dev])
                .output()
                .ok()?;
            let t = text(&out.stdout);
            (t.contains("tun type tun") && t.contains("vnet_hdr on") == on).then_some(())
        })
        .is_some()
    }

    /// The daemon's pid.
    pub fn daemon_pid(&self) -> u32 {
        self.daemon.as_ref().expect("daemon running").id()
    }

    /// `Some(status)` once the daemon process has exited.
    pub fn daemon_exited(&mut self) -> Option<ExitStatus> {
        self.daemon
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Sends `sig` to the daemon and waits up to `limit` for it to exit;
    /// returns its status (None: still running).
    pub fn signal_daemon(&mut self, sig: &str, limit: Duration) -> Option<ExitStatus> {
        let pid = self.daemon_pid();
        kill(pid, sig);
        let st = wait_for(limit, || self.daemon_exited());
        if st.is_some() {
            self.daemon = None;
        }
        st
    }

    /// Waits up to `limit` for the daemon to exit by itself (after `reset`).
    pub fn wait_daemon_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let st = wait_for(limit, || self.daemon_exited());
        if st.is_some() {
            self.daemon = None;
        }
        st
    }

    pub fn daemon_log(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = s.lines().rev().take(60).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// A `podnet --socket SOCK ARGS...` command.
    pub fn cli(&self, args: &[&str]) -> Command {
        let mut c = Command::new(PODNET);
        c.arg("--socket").arg(&self.sock).args(args);
        c.env_remove("PODNET_SOCKET");
        c
    }

    /// Runs the CLI (120 s limit: a delete waits for the pod's processes
    /// to stop, up to its grace period).
    pub fn podnet(&self, args: &[&str]) -> Output {
        let (out, timed_out) = run_timeout(self.cli(args), Duration::from_secs(120));
        assert!(!timed_out, "podnet {args:?} hung for 120 s");
        out
    }

    /// Runs the CLI, panics unless it succeeds; returns stdout.
    pub fn podnet_ok(&self, args: &[&str]) -> String {
        let out = self.podnet(args);
        assert!(
            out.status.success(),
            "podnet {args:?} failed ({}): {}{}\ndaemon log:\n{}",
            out.status,
            text(&out.stderr),
            text(&out.stdout),
            self.daemon_log()
        );
        text(&out.stdout)
    }

    /// `podnet -o json ARGS...` parsed.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        let s = self.podnet_ok(&a);
        serde_json::from_str(&s).unwrap_or_else(|e| panic!("podnet {a:?}: bad JSON ({e}): {s}"))
    }

    /// A GET of the Kubernetes API on the daemon's socket, for what the
    /// CLI has no shortcut for (label selectors, EndpointSlices).
    pub fn api_get(&self, path: &str) -> Value {
        ApiClient::new(&self.sock)
            .with_timeout(Duration::from_secs(30))
            .get::<Value>(path)
            .unwrap_or_else(|e| panic!("GET {path}: {e}\ndaemon log:\n{}", self.daemon_log()))
    }

    /// `Some(pod JSON)` if the pod exists (`podnet pod get NAME -o json`).
    pub fn pod(&self, name: &str) -> Option<Value> {
        let out = self.podnet(&["pod", "get", name, "-o", "json"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Every pod (`podnet pod list -o json`'s items).
    pub fn pods(&self) -> Vec<Value> {
        let list = self.json(&["pod", "list"]);
        list["items"]
            .as_array()
            .unwrap_or_else(|| panic!("pod list has no items: {list}"))
            .clone()
    }

    /// The pods with label `label` (`K=V`), terminating ones included.
    pub fn pods_labelled(&self, label: &str) -> Vec<Value> {
        let selector = label.replace('=', "%3D").replace(',', "%2C");
        let list = self.api_get(&format!(
            "/api/v1/namespaces/default/pods?labelSelector={selector}"
        ));
        list["items"].as_array().cloned().unwrap_or_default()
    }

    /// Runs a standalone pod: `pod run NAME --label.. -- CMD`.
    pub fn run_pod(&self, name: &str, labels: &[&str], cmd: &[String]) {
        let mut args: Vec<&str> = vec!["pod", "run", name];
        for l in labels {
            args.extend(["--label", l]);
        }
        args.push("--");
        args.extend(cmd.iter().map(String::as_str));
        self.podnet_ok(&args);
    }

    /// `podnet deployment create NAME --replicas N --label app=NAME -- CMD`.
    pub fn create_deployment(&self, name: &str, replicas: u32, cmd: &[String]) {
        let label = format!("app={name}");
        let n = replicas.to_string();
        let mut args: Vec<&str> = vec![
            "deployment",
            "create",
            name,
            "--replicas",
            &n,
            "--label",
            &label,
            "--",
        ];
        args.extend(cmd.iter().map(String::as_str));
        self.podnet_ok(&args);
    }

    /// Waits until the deployment `name` (pods labelled `app=NAME`) has
    /// exactly `n` pods, all Running and none terminating; returns
    /// (pod name -> ip).
    pub fn deployment_pods(&self, name: &str, n: usize) -> BTreeMap<String, String> {
        let label = format!("app={name}");
        wait_for(POD_START, || {
            let pods = self.pods_labelled(&label);
            (pods.len() == n && pods.iter().all(running)).then(|| {
                pods.iter()
                    .map(|p| (name_of(p), ip_of(p).unwrap_or_default()))
                    .collect()
            })
        })
        .unwrap_or_else(|| {
            panic!(
                "deployment {name} never had {n} running pods: {:#?}\n{}",
                self.pods_labelled(&label)
                    .iter()
                    .map(|p| (name_of(p), phase(p).to_string(), terminating(p)))
                    .collect::<Vec<_>>(),
                self.daemon_log()
            )
        })
    }

    /// Waits for a pod to be Running with an address and a running
    /// container; returns its JSON.
    pub fn wait_running(&self, name: &str) -> Value {
        wait_for(POD_START, || self.pod(name).filter(running)).unwrap_or_else(|| {
            panic!(
                "pod {name} not Running with an IP within {POD_START:?}: {:?}\ndaemon log:\n{}",
                self.pod(name),
                self.daemon_log()
            )
        })
    }

    pub fn pod_ip(&self, name: &str) -> String {
        ip_of(&self.wait_running(name)).expect("ip")
    }

    /// The pid of a running pod's process: from its `containerID`
    /// (`podnet://PID-STARTTIME`). While a daemon still reports the older
    /// `podnet://UID/NAME`, the process is found in the pod's namespace
    /// instead (and `container_id_names_the_pod_process` in daemon_cli
    /// fails).
    pub fn pod_pid(&self, name: &str) -> u32 {
        let pod = self.wait_running(name);
        self.pid_of(&pod)
    }

    /// [`Node::pod_pid`] of a pod's JSON.
    pub fn pid_of(&self, pod: &Value) -> u32 {
        if let Some(pid) = container_pid(pod) {
            return pid;
        }
        let name = name_of(pod);
        let ns = pod["metadata"]["annotations"]["podnet.io/netns"]
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| pod_netns(&name));
        match namespace_root_processes(&ns)[..] {
            [pid] => pid,
            ref roots => panic!(
                "pod {name}: no pid in containerID {}, and namespace {ns} has not one \
                 first process but {roots:?} (two copies of the pod's process?)",
                pod["status"]["containerStatuses"][0]["containerID"]
            ),
        }
    }

    /// Creates a service; returns its cluster IP.
    pub fn create_service(
        &self,
        name: &str,
        selector: &str,
        ports: &[&str],
        extra: &[&str],
    ) -> String {
        let mut args: Vec<&str> = vec!["service", "create", name, "--selector", selector];
        for p in ports {
            args.extend(["--port", p]);
        }
        args.extend(extra);
        self.podnet_ok(&args);
        let svc = self.json(&["service", "get", name]);
        svc["spec"]["clusterIP"]
            .as_str()
            .unwrap_or_else(|| panic!("service {name} has no clusterIP: {svc}"))
            .to_string()
    }

    /// The service's ready endpoints, `IP:PORT`, sorted, from its
    /// EndpointSlices (as kube-proxy reads them).
    pub fn endpoints(&self, svc: &str) -> Vec<String> {
        let list = self.api_get(&format!(
            "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices\
             ?labelSelector=kubernetes.io%2Fservice-name%3D{svc}"
        ));
        let mut out = Vec::new();
        for slice in list["items"].as_array().into_iter().flatten() {
            let ports: Vec<u64> = slice["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["port"].as_u64())
                .collect();
            for ep in slice["endpoints"].as_array().into_iter().flatten() {
                if ep["conditions"]["ready"] == Value::Bool(false) {
                    continue;
                }
                for addr in ep["addresses"].as_array().into_iter().flatten() {
                    for port in &ports {
                        out.push(format!("{}:{port}", addr.as_str().unwrap_or("")));
                    }
                }
            }
        }
        out.sort();
        out
    }

    /// Waits until the service's ready endpoints satisfy `done`; returns them.
    pub fn wait_endpoints(
        &self,
        svc: &str,
        what: &str,
        done: impl Fn(&[String]) -> bool,
    ) -> Vec<String> {
        wait_for(SETTLE, || {
            let e = self.endpoints(svc);
            done(&e).then_some(e)
        })
        .unwrap_or_else(|| {
            panic!(
                "service {svc}: {what} never held; endpoints {:?}\n{}",
                self.endpoints(svc),
                self.daemon_log()
            )
        })
    }

    /// Runs `ip netns exec NS ARGS...` with a time limit.
    pub fn exec_in(&self, ns: &str, args: &[&str], limit: Duration) -> (Output, bool) {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).args(args);
        run_timeout(c, limit)
    }

    /// Runs `ip netns exec` in pod `pod`'s namespace.
    pub fn exec_pod(&self, pod: &str, args: &[&str], limit: Duration) -> (Output, bool) {
        self.exec_in(&pod_netns(pod), args, limit)
    }

    /// `curl -sS -m SECS URL` from namespace `ns`: `Ok(body)` or `Err(why)`.
    pub fn curl(&self, ns: &str, url: &str, secs: u32) -> Result<String, String> {
        self.curl_args(ns, url, secs, &[])
    }

    pub fn curl_args(
        &self,
        ns: &str,
        url: &str,
        secs: u32,
        extra: &[&str],
    ) -> Result<String, String> {
        let m = secs.to_string();
        let mut args = vec!["curl", "-sS", "--noproxy", "*", "-m", &m];
        args.extend(extra);
        args.push(url);
        let (out, timed_out) = self.exec_in(ns, &args, Duration::from_secs(secs as u64 + 5));
        if out.status.success() && !timed_out {
            Ok(text(&out.stdout))
        } else {
            Err(format!(
                "curl {url} from {ns}: {} (timed out: {timed_out}) {}",
                out.status,
                text(&out.stderr).trim()
            ))
        }
    }

    /// Waits (30 s) until `curl URL` from `ns` succeeds; returns the body.
    pub fn curl_until_ok(&self, ns: &str, url: &str) -> String {
        let mut last = String::new();
        wait_for(SETTLE, || match self.curl(ns, url, 3) {
            Ok(b) => Some(b),
            Err(e) => {
                last = e;
                None
            }
        })
        .unwrap_or_else(|| {
            panic!(
                "{url} from {ns} never answered in {SETTLE:?}: {last}\ndaemon log:\n{}",
                self.daemon_log()
            )
        })
    }

    /// Sends one UDP datagram `payload` with socat from `ns` to `addr`
    /// (`IP:PORT`) and returns the first answer (3 s wait).
    pub fn udp(&self, ns: &str, addr: &str, payload: &str, extra: &str) -> Result<String, String> {
        let script = format!("echo {payload} | socat -T 3 - UDP4:{addr}{extra}");
        let (out, timed_out) = self.exec_in(ns, &["sh", "-c", &script], Duration::from_secs(8));
        let body = text(&out.stdout);
        if out.status.success() && !timed_out && !body.is_empty() {
            Ok(body)
        } else {
            Err(format!(
                "udp {addr} from {ns}: {} (timed out: {timed_out}) out={body:?} err={}",
                out.status,
                text(&out.stderr).trim()
            ))
        }
    }

    /// Sends one UDP datagram without waiting for an answer.
    pub fn udp_send(&self, ns: &str, addr: &str, payload: &str, extra: &str) {
        let script = format!("echo {payload} | socat -u - UDP4-SENDTO:{addr}{extra}");
        let _ = self.exec_in(ns, &["sh", "-c", &script], Duration::from_secs(5));
    }

    /// Waits (30 s) until a UDP exchange succeeds.
    pub fn udp_until_ok(&self, ns: &str, addr: &str) -> String {
        let mut last = String::new();
        wait_for(SETTLE, || match self.udp(ns, addr, "ping", "") {
            Ok(b) => Some(b),
            Err(e) => {
                last = e;
                None
            }
        })
        .unwrap_or_else(|| {
            panic!(
                "UDP {addr} from {ns} never answered in {SETTLE:?}: {last}\ndaemon log:\n{}",
                self.daemon_log()
            )
        })
    }

    /// Runs a python3 snippet in namespace `ns`; returns (stdout, stderr, ok).
    pub fn python(&self, ns: &str, code: &str, limit: Duration) -> (String, String, bool) {
        let (out, timed_out) = self.exec_in(ns, &["python3", "-c", code], limit);
        (
            text(&out.stdout),
            text(&out.stderr),
            out.status.success() && !timed_out,
        )
    }

    /// Whether a namespace name is this node's: its own, a pod's
    /// (`default.<prefix>...`), or one a test made (`<prefix>...`).
    fn owns_namespace(&self, n: &str) -> bool {
        n == self.ns
            || n.starts_with(&self.prefix)
            || n.split_once('.')
                .is_some_and(|(_, pod)| pod.starts_with(&self.prefix))
    }

    /// Namespaces that belong to this node (its own and its pods').
    pub fn namespaces(&self) -> Vec<String> {
        let out = Command::new("ip").args(["netns", "list"]).output();
        let Ok(out) = out else { return Vec::new() };
        text(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| self.owns_namespace(n))
            .map(String::from)
            .collect()
    }

    /// Pod namespaces (`default.<pod>`) of this node still listed by `ip netns`.
    pub fn pod_namespaces(&self) -> Vec<String> {
        self.namespaces()
            .into_iter()
            .filter(|n| *n != self.ns && !n.starts_with(&self.prefix))
            .collect()
    }

    pub fn state_dir(&self) -> &Path {
        &self.state
    }
}

fn sh_ok(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (is iproute2 installed?)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        text(&out.stderr)
    );
}

fn kill_namespace_processes(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in text(&out.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-9", pid]).status();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            kill(child.id(), "TERM");
            let deadline = Instant::now() + Duration::from_secs(3);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        if thread::panicking() {
            eprintln!("---- podnetd log ({}) ----\n{}", self.ns, self.daemon_log());
        }
        let namespaces = self.namespaces();
        for ns in &namespaces {
            kill_namespace_processes(ns);
        }
        // Give killed processes a moment to go before removing their namespaces.
        thread::sleep(Duration::from_millis(50));
        for ns in &namespaces {
            kill_namespace_processes(ns);
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        // The pods' pinned mount and UTS namespaces, named alike (also of
        // a pod whose network namespace lost its name).
        for ns in podnet::sys::mount::list() {
            if self.owns_namespace(&ns) {
                podnet::sys::mount::remove(&ns);
            }
        }
        // The temp dir (state, socket, log) goes with `_tmp`.
    }
}
