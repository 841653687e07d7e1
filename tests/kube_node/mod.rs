//! `podnetd` driven by the real kubectl, for root tests: the
//! daemon runs in a network namespace made for the test; every object
//! lives in a Kubernetes namespace unique to the run (`t<pid>k<n>`), so the
//! pods' network namespaces (`<namespace>.<pod>`) never collide; everything
//! is removed on drop, also when the test fails.
//!
//! A test file using it declares `mod daemon_support;` and `mod kube_node;`.

#![allow(dead_code)]

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::daemon_support::{require_env, run_timeout, text, wait_for, PODNETD};

/// `podnetd` in a network namespace made for the test, and a
/// Kubernetes namespace unique to the run for the test's objects.
pub struct KubeNode {
    /// The node's network namespace (`pnk-<pid>-<n>`).
    pub netns: String,
    /// The Kubernetes namespace of the test's objects (`t<pid>k<n>`).
    pub namespace: String,
    /// The daemon's state, socket, kubeconfig and log.
    pub _tmp: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    pub log: PathBuf,
    pub daemon: Option<Child>,
    /// Flags added to the daemon's command line by [`KubeNode::start_daemon`].
    pub extra_args: Vec<String>,
}

pub const API_PORT: u16 = 16443;

impl KubeNode {
    pub fn start() -> KubeNode {
        Self::start_with(&[])
    }

    /// As [`KubeNode::start`], with these extra `podnetd` flags.
    pub fn start_with(daemon_args: &[&str]) -> KubeNode {
        require_env();
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let tmp = tempfile::Builder::new()
            .prefix("podnet-kube-test-")
            .tempdir()
            .unwrap();
        let mut node = KubeNode {
            netns: format!("pnk-{pid}-{n}"),
            namespace: format!("t{pid}k{n}"),
            kubeconfig: tmp.path().join("admin.kubeconfig"),
            log: tmp.path().join("podnetd.log"),
            _tmp: tmp,
            daemon: None,
            extra_args: daemon_args.iter().map(|a| a.to_string()).collect(),
        };
        assert!(Command::new("ip")
            .args(["netns", "add", &node.netns])
            .status()
            .unwrap()
            .success());
        assert!(Command::new("ip")
            .args(["-n", &node.netns, "link", "set", "lo", "up"])
            .status()
            .unwrap()
            .success());
        node.start_daemon();
        let ns = format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {}\n",
            node.namespace
        );
        node.kubectl_ok(&["apply", "-f", "-"], Some(&ns));
        node
    }

    pub fn start_daemon(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", self.netns))
            .arg(PODNETD)
            .args(["--workers", "2", "--node-name", "node-t"])
            .arg("--api-listen")
            .arg(format!("127.0.0.1:{API_PORT}"))
            .arg("--state-dir")
            .arg(self._tmp.path().join("state"))
            .arg("--socket")
            .arg(self._tmp.path().join("podnet.sock"))
            .arg("--admin-kubeconfig")
            .arg(&self.kubeconfig)
            .args(crate::daemon_support::no_dns_forwarding(&self.extra_args))
            .args(&self.extra_args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.daemon = Some(child);
        let up = wait_for(Duration::from_secs(60), || {
            if let Some(st) = self.daemon.as_mut().unwrap().try_wait().unwrap() {
                panic!("podnetd exited with {st}:\n{}", self.log());
            }
            (self.kubeconfig.exists() && self.kubectl(&["get", "nodes"], None).status.success())
                .then_some(())
        });
        assert!(
            up.is_some(),
            "the API did not answer within 60 s:\n{}",
            self.log()
        );
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// kubectl in the node's network namespace (the API listens on its
    /// loopback), with only KUBECONFIG set.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        run_with_stdin(self.kubectl_command(args), stdin)
    }

    pub fn kubectl_ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}{}\ndaemon log:\n{}",
            text(&out.stdout),
            text(&out.stderr),
            self.log()
        );
        text(&out.stdout)
    }

    /// The kubectl command line, not started (for clients run beside the
    /// test: a watcher, an apply to interrupt).
    pub fn kubectl_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/var/run/netns/{}", self.netns))
            .arg("kubectl")
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self._tmp.path())
            .env("KUBECONFIG", &self.kubeconfig);
        cmd
    }

    /// kubectl in this test's namespace.
    pub fn k(&self, args: &[&str]) -> String {
        let mut a = vec!["-n", self.namespace.as_str()];
        a.extend_from_slice(args);
        self.kubectl_ok(&a, None)
    }

    pub fn apply(&self, manifest: &str) -> String {
        self.kubectl_ok(&["apply", "-n", &self.namespace, "-f", "-"], Some(manifest))
    }

    /// `curl` from the node namespace.
    pub fn curl(&self, url: &str) -> Option<String> {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/var/run/netns/{}", self.netns))
            .args(["curl", "-s", "--max-time", "5", url]);
        let (out, _) = run_timeout(cmd, Duration::from_secs(10));
        out.status.success().then(|| text(&out.stdout))
    }
}

impl KubeNode {
    /// Stops the daemon (SIGKILL, as a crash); pods keep running.
    pub fn stop_daemon(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
    }
}

impl Drop for KubeNode {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
        // Every pod namespace of this run, with whatever runs in it.
        let prefix = format!("{}.", self.namespace);
        for ns in podnet::sys::netns::list().unwrap_or_default() {
            if ns.starts_with(&prefix) {
                podnet::daemon::runtime::stop_processes_in(&ns);
                let _ = podnet::sys::netns::remove(&ns);
            }
        }
        // Their pinned mount and UTS namespaces (left by a daemon killed
        // before it deleted its pods).
        for ns in podnet::sys::mount::list() {
            if ns.starts_with(&prefix) {
                podnet::sys::mount::remove(&ns);
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

/// Runs `cmd` (at most 180 s without `stdin`), feeding it `stdin` if given.
/// The input is written beside the wait: a command may read it only as it
/// writes its output (kubectl exec reads its stdin as the pod takes it).
pub fn run_with_stdin(mut cmd: Command, stdin: Option<&str>) -> Output {
    use std::io::Write;
    let Some(input) = stdin else {
        return run_timeout(cmd, Duration::from_secs(180)).0;
    };
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to = child.stdin.take().unwrap();
    let input = input.to_string();
    let writer = std::thread::spawn(move || to.write_all(input.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    out
}
