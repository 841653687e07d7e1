//! Root tests: what a pod sees of its configuration, driven by the real
//! kubectl: env from ConfigMaps and Secrets, its host name, `/etc/hosts`
//! and `/etc/resolv.conf`, and its volumes (configMap updated while it
//! runs, secret on tmpfs, emptyDir across a restart, hostPath types),
//! each inside the pod's own mount namespace and gone from the host after
//! the pod is deleted.
//!
//! Needs root; the harness is `kube_node` (a daemon in a node network
//! namespace made for the test, a Kubernetes namespace unique to the run).

mod daemon_support;
mod kube_node;

use std::process::{Command, Output};
use std::time::Duration;

use daemon_support::{run_timeout, text, wait_for, PODNET, POD_START, RESTART, SETTLE};
use kube_node::KubeNode;

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

fn wait_running(node: &KubeNode, pod: &str) {
    let ok = wait_for(POD_START, || {
        (jsonpath(node, &format!("pod/{pod}"), "{.status.phase}") == "Running").then_some(())
    });
    assert!(
        ok.is_some(),
        "pod {pod} not Running:\n{}\n{}",
        node.k(&["get", "pod", pod, "-o", "yaml"]),
        node.log()
    );
}

/// Lines of the node's mount table (the host's: the daemon shares the
/// test's mount namespace) that mention `needle`.
fn host_mounts(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

fn state_dir(node: &KubeNode) -> std::path::PathBuf {
    node._tmp.path().join("state")
}

/// Deletes the pod and checks nothing of it is left: no mount on the host
/// naming it or its files, no `STATE/pods/UID`, no pinned namespaces.
fn delete_and_check_gone(node: &KubeNode, pod: &str) {
    let uid = jsonpath(node, &format!("pod/{pod}"), "{.metadata.uid}");
    assert!(!uid.is_empty());
    node.k(&["delete", "pod", pod, "--wait=true", "--timeout=90s"]);
    let pinned = std::path::Path::new("/run/podnet/ns").join(format!("{}.{pod}", node.namespace));
    let gone = wait_for(SETTLE, || {
        (!state_dir(node).join("pods").join(&uid).exists() && !pinned.exists()).then_some(())
    });
    assert!(
        gone.is_some(),
        "pod {pod}'s files or namespaces are left: {:?} {}",
        std::fs::read_dir(state_dir(node).join("pods")).map(|d| d.count()),
        pinned.display()
    );
    let left = host_mounts(&uid);
    assert!(
        left.is_empty(),
        "mounts of the pod left on the host: {left:?}"
    );
    let left = host_mounts(&format!("{}.{pod}", node.namespace));
    assert!(
        left.is_empty(),
        "mounts of the pod left on the host: {left:?}"
    );
}

const SLEEPER: &str = r#"["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]"#;

#[test]
fn root_hostname_hosts_and_resolv_conf_inside_the_pod() {
    let node = KubeNode::start();
    let before = host_mounts(&node.namespace);
    node.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: ident
spec:
  hostname: db-0
  subdomain: db
  terminationGracePeriodSeconds: 2
  hostAliases:
  - ip: "192.0.2.9"
    hostnames: ["foo.local", "bar.local"]
  dnsConfig:
    options:
    - name: timeout
      value: "1"
  containers:
  - name: c
    image: busybox
    command: {SLEEPER}
"#
    ));
    wait_running(&node, "ident");
    let ip = jsonpath(&node, "pod/ident", "{.status.podIP}");
    assert_eq!(exec_ok(&node, "ident", &["hostname"]).trim(), "db-0");
    let hosts = exec_ok(&node, "ident", &["cat", "/etc/hosts"]);
    assert!(
        hosts.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"),
        "{hosts}"
    );
    let fqdn = format!("db-0.db.{}.svc.cluster.local", node.namespace);
    assert!(
        hosts.contains(&format!("\n{ip}\t{fqdn}\tdb-0\n")),
        "{hosts}"
    );
    assert!(
        hosts.contains("\n192.0.2.9\tfoo.local\tbar.local\n"),
        "{hosts}"
    );
    let resolv = exec_ok(&node, "ident", &["cat", "/etc/resolv.conf"]);
    let search = format!(
        "search {0}.svc.cluster.local svc.cluster.local cluster.local",
        node.namespace
    );
    assert!(resolv.starts_with(&search), "{resolv}");
    assert!(resolv.contains("\nnameserver 10.96.0.10\n"), "{resolv}");
    assert!(resolv.contains("\noptions ndots:5 timeout:1\n"), "{resolv}");
    // The host's files and name are untouched.
    let host_hosts = std::fs::read_to_string("/etc/hosts").unwrap();
    assert!(!host_hosts.contains("Kubernetes-managed"));
    assert_ne!(
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap()
            .trim(),
        "db-0"
    );
    // The name resolves inside the pod, at once, from its hosts file.
    let got = exec_ok(&node, "ident", &["getent", "hosts", &fqdn]);
    assert!(got.starts_with(&ip), "{got}");
    delete_and_check_gone(&node, "ident");
    assert_eq!(host_mounts(&node.namespace), before);
}
