//! `kubectl exec` and `kubectl cp` against podnetd, with the real kubectl
//! (WebSocket, v5.channel.k8s.io, and SPDY/3.1 as kubectl falls back to it)
//! and the Python client (v4): exit codes, stdout and stderr apart, stdin
//! closed at its end, a terminal driven by a pseudo-terminal in the test,
//! the pod's namespaces and environment, and errors that name the problem.
//!
//! Needs root (network namespaces); run with `cargo test --test root_exec`.

mod daemon_support;
mod kube_node;

use std::process::Command;
use std::time::Duration;

use daemon_support::{run_timeout, text};
use kube_node::KubeNode;

const POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: box
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox
    command: ["sleep", "100000"]
    workingDir: /tmp
    env:
    - name: GREETING
      value: hello from the pod
"#;

/// A pod that is Running, with its IP.
fn running_box(node: &KubeNode) -> String {
    node.apply(POD);
    node.k(&["wait", "--for=condition=Ready", "pod/box", "--timeout=180s"]);
    node.k(&["get", "pod", "box", "-o", "jsonpath={.status.podIP}"])
}

fn exec(node: &KubeNode, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut a = vec!["-n", node.namespace.as_str(), "exec"];
    a.extend_from_slice(args);
    node.kubectl(&a, stdin)
}

/// kubectl's switch to SPDY/3.1 for exec, as when the WebSocket upgrade
/// is refused.
const NO_WEBSOCKETS: (&str, &str) = ("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false");

/// `kubectl exec` over SPDY/3.1.
fn spdy_exec(node: &KubeNode, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut a = vec!["-n", node.namespace.as_str(), "exec"];
    a.extend_from_slice(args);
    let mut cmd = node.kubectl_command(&a);
    cmd.env(NO_WEBSOCKETS.0, NO_WEBSOCKETS.1);
    kube_node::run_with_stdin(cmd, stdin)
}

#[test]
fn root_kubectl_exec_runs_in_the_pod_with_its_streams_and_exit_code() {
    let _serial = daemon_support::serial();
    let node = KubeNode::start();
    let ip = running_box(&node);

    // Exit code, stdout and stderr apart.
    let out = exec(
        &node,
        &[
            "box",
            "--",
            "sh",
            "-c",
            "echo to-out; echo to-err >&2; exit 3",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(3), "exit code: {out:?}");
    assert_eq!(text(&out.stdout), "to-out\n");
    assert!(
        text(&out.stderr).contains("to-err"),
        "stderr: {}",
        text(&out.stderr)
    );

    // The pod's network, UTS and mount namespaces, its environment and
    // working directory.
    let out = exec(
        &node,
        &[
            "box",
            "-c",
            "main",
            "--",
            "sh",
            "-c",
            "echo \"$GREETING\"; hostname; pwd; ip -o -4 addr show dev eth0",
        ],
        None,
    );
    assert!(out.status.success(), "{out:?}\n{}", node.log());
    let lines = text(&out.stdout);
    let lines: Vec<&str> = lines.lines().collect();
    assert_eq!(lines[0], "hello from the pod");
    assert_eq!(lines[1], "box");
    assert_eq!(lines[2], "/tmp");
    assert!(
        lines[3].contains(&format!("inet {ip}/")),
        "eth0 of the pod: {lines:?}"
    );

    // stdin reaches the command and its end ends the command (v5 close).
    let input: String = (0..2000).map(|i| format!("line {i}\n")).collect();
    let out = exec(&node, &["-i", "box", "--", "cat"], Some(&input));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), input, "cat echoed its stdin");

    // 16 MB to a command that starts reading late: held back, not lost.
    let big = "x".repeat(16 << 20);
    let out = exec(
        &node,
        &["-i", "box", "--", "sh", "-c", "sleep 1; wc -c"],
        Some(&big),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), (16u32 << 20).to_string());

    // kubectl cp, both ways (exec of tar).
    let local = node._tmp.path().join("payload.txt");
    std::fs::write(&local, "copied through exec\n").unwrap();
    let target = format!(
        "{}/box:/tmp/payload-{}.txt",
        node.namespace,
        std::process::id()
    );
    node.kubectl_ok(&["cp", local.to_str().unwrap(), &target], None);
    let back = node._tmp.path().join("back.txt");
    node.kubectl_ok(&["cp", &target, back.to_str().unwrap()], None);
    assert_eq!(
        std::fs::read_to_string(&back).unwrap(),
        "copied through exec\n"
    );
    let _ = std::fs::remove_file(format!("/tmp/payload-{}.txt", std::process::id()));

    // Errors that name the problem.
    let out = node.kubectl(&["-n", &node.namespace, "logs", "--previous", "box"], None);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("previous terminated container"),
        "{}",
        text(&out.stderr)
    );
    let out = node.kubectl(
        &["-n", &node.namespace, "exec", "nosuchpod", "--", "true"],
        None,
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not found"),
        "{}",
        text(&out.stderr)
    );
    let out = exec(&node, &["box", "-c", "other", "--", "true"], None);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("container other is not valid"),
        "{}",
        text(&out.stderr)
    );
    let out = exec(&node, &["box", "--", "/no/such/command"], None);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("/no/such/command"),
        "{}",
        text(&out.stderr)
    );
}

/// Drives `kubectl exec -it` through a pseudo-terminal of 33 rows and 101
/// columns: the command sees a terminal of that size, and its exit code
/// comes back.
const TTY_DRIVER: &str = r#"
import fcntl, os, pty, select, struct, sys, termios, time
pid, fd = pty.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 101, 0, 0))
out = b""
sent = False
deadline = time.time() + 120
while time.time() < deadline:
    r, _, _ = select.select([fd], [], [], 0.5)
    if not sent and (r or out == b""):
        time.sleep(1)
        os.write(fd, b"tty; stty size; exit 7\n")
        sent = True
    if r:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(status))
"#;

/// `kubectl exec -it box -- sh` in a pseudo-terminal of 33 rows and 101
/// columns, with `env` set for kubectl: the shell has a terminal of that
/// size and its exit code comes back.
fn check_terminal_session(node: &KubeNode, env: &[(&str, &str)]) {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/var/run/netns/{}", node.netns))
        .args(["python3", "-c", TTY_DRIVER, "kubectl"])
        .args(["-n", &node.namespace, "exec", "-it", "box", "--", "sh"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", node._tmp.path())
        .env("TERM", "xterm")
        .env("KUBECONFIG", &node.kubeconfig)
        .envs(env.iter().copied());
    let (out, _) = run_timeout(cmd, Duration::from_secs(180));
    let seen = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(7),
        "exit code through the terminal session:\n{seen}\n{}\n{}",
        text(&out.stderr),
        node.log()
    );
    assert!(
        seen.contains("/dev/pts/"),
        "the shell has a terminal:\n{seen}"
    );
    assert!(seen.contains("33 101"), "the terminal's size:\n{seen}");
}

#[test]
fn root_kubectl_exec_with_a_terminal() {
    let _serial = daemon_support::serial();
    let node = KubeNode::start();
    running_box(&node);
    check_terminal_session(&node, &[]);
}

#[test]
fn root_kubectl_exec_over_spdy() {
    let _serial = daemon_support::serial();
    let node = KubeNode::start();
    running_box(&node);

    // SPDY it is: a POST upgraded (the WebSocket's upgrade is a GET).
    let out = spdy_exec(&node, &["-v=6", "box", "--", "true"], None);
    let log = text(&out.stderr);
    assert!(out.status.success(), "{log}\n{}", node.log());
    assert!(
        log.lines()
            .any(|l| l.contains("POST") && l.contains("/exec?") && l.contains("101")),
        "kubectl's requests:\n{log}"
    );

    // Exit code, stdout and stderr apart.
    let out = spdy_exec(
        &node,
        &["box", "--", "sh", "-c", "echo out; echo err >&2; exit 3"],
        None,
    );
    assert_eq!(out.status.code(), Some(3), "exit code: {out:?}");
    assert_eq!(text(&out.stdout), "out\n");
    assert!(text(&out.stderr).contains("err"), "{}", text(&out.stderr));

    // stdin reaches the command, and its end (a FIN) ends the command.
    let out = spdy_exec(&node, &["-i", "box", "--", "cat"], Some("hi\n"));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "hi\n");
    let input: String = (0..2000).map(|i| format!("line {i}\n")).collect();
    let out = spdy_exec(&node, &["-i", "box", "--", "cat"], Some(&input));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), input, "cat echoed its stdin");

    // A command that is not there.
    let out = spdy_exec(&node, &["box", "--", "/no/such/command"], None);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("/no/such/command"),
        "{}",
        text(&out.stderr)
    );

    // A terminal that follows kubectl's size.
    check_terminal_session(&node, &[NO_WEBSOCKETS]);
}

#[test]
fn root_python_client_exec_over_v4() {
    let _serial = daemon_support::serial();
    let node = KubeNode::start();
    running_box(&node);
    let script = r#"
import sys
from kubernetes import client, config
from kubernetes.stream import stream
config.load_kube_config()
api = client.CoreV1Api()
out = stream(api.connect_get_namespaced_pod_exec, "box", sys.argv[1],
             command=["sh", "-c", "echo python-$((6*7))"],
             stderr=True, stdin=False, stdout=True, tty=False)
print(out.strip())
"#;
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/var/run/netns/{}", node.netns))
        .args(["python3", "-c", script, &node.namespace])
        .env("KUBECONFIG", &node.kubeconfig);
    let (out, _) = run_timeout(cmd, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stderr),
        node.log()
    );
    assert_eq!(text(&out.stdout).trim(), "python-42");
}

#[test]
fn root_kubectl_logs_previous_shows_the_instance_before_the_last_restart() {
    let _serial = daemon_support::serial();
    let node = KubeNode::start();
    let counter = node._tmp.path().join("instances");
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: flaky
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: none
    command:
    - sh
    - -c
    - 'n=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}; echo instance-$n; [ $n -ge 2 ] && exec sleep 100000; exit 1'
"#,
        c = counter.display()
    );
    node.apply(&manifest);
    node.k(&[
        "wait",
        "--for=condition=Ready",
        "pod/flaky",
        "--timeout=180s",
    ]);
    assert_eq!(node.k(&["logs", "flaky"]), "instance-2\n");
    assert_eq!(node.k(&["logs", "--previous", "flaky"]), "instance-1\n");
    // The previous instance's lines keep their times.
    let timed = node.k(&["logs", "--previous", "--timestamps", "flaky"]);
    let (time, line) = timed.split_once(' ').unwrap();
    assert_eq!(line, "instance-1\n");
    assert!(time.len() == 30 && time.ends_with('Z'), "{timed}");
    assert_eq!(
        node.k(&["logs", "-p", "-f", "flaky", "-c", "main"]),
        "instance-1\n",
        "a previous instance's log ends: nothing to follow"
    );
}
