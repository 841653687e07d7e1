//! Root tests: the `podnet` CLI against a real podnetd. Bad input fails
//! with a clear message and a non-zero exit; `pod exec` runs in the pod's
//! namespace and passes the exit code through; `pod logs` shows the
//! process's output.

mod daemon_support;

use std::time::Duration;

use daemon_support::{serial, text, wait_for, Node};

#[test]
fn bad_input_conflicts_exec_and_logs() {
    let _s = serial();
    let mut node = Node::start();

    // A port that is not a number.
    let x = node.name("x");
    let out = node.podnet(&[
        "service",
        "create",
        &x,
        "--selector",
        "app=x",
        "--port",
        "abc",
    ]);
    let err = text(&out.stderr);
    assert!(
        !out.status.success(),
        "--port abc succeeded: {}",
        text(&out.stdout)
    );
    assert!(
        err.contains("abc") && err.to_lowercase().contains("port"),
        "unclear message for --port abc: {err}"
    );
    assert!(
        node.podnet(&["service", "get", &x]).status.code() != Some(0),
        "service {x} was created anyway"
    );
    // Out of range, bad protocol, bad selector.
    for bad in [
        vec![
            "service",
            "create",
            &x,
            "--selector",
            "app=x",
            "--port",
            "70000",
        ],
        vec![
            "service",
            "create",
            &x,
            "--selector",
            "app=x",
            "--port",
            "80/sctp",
        ],
        vec![
            "service",
            "create",
            &x,
            "--selector",
            "nonsense",
            "--port",
            "80",
        ],
        vec![
            "service",
            "create",
            &x,
            "--selector",
            "app=x",
            "--port",
            "80",
            "--cluster-ip",
            "1.2.3.4",
        ],
        vec!["pod", "run", "Not_A_DNS_Label", "--", "sleep", "1"],
        vec!["deployment", "scale", "nosuchdeployment", "--replicas", "2"],
        vec!["pod", "get", "nosuchpod"],
    ] {
        let out = node.podnet(&bad);
        let err = text(&out.stderr);
        assert!(
            !out.status.success(),
            "podnet {bad:?} succeeded: {}",
            text(&out.stdout)
        );
        assert!(
            err.trim().len() > 10,
            "podnet {bad:?}: no useful message: {err:?}"
        );
        assert!(!err.contains("panicked"), "podnet {bad:?}: {err}");
    }
    assert!(
        node.daemon_exited().is_none(),
        "the daemon died on bad input\n{}",
        node.daemon_log()
    );

    // Creating a pod twice: conflict.
    let p = node.name("pod");
    let script = "echo hello-from-$POD_NAME; echo to-stderr >&2; exec sleep 3600";
    node.run_pod(&p, &["app=cli"], &["sh".into(), "-c".into(), script.into()]);
    let ip = node.pod_ip(&p);
    let out = node.podnet(&["pod", "run", &p, "--", "sleep", "1"]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "second pod run {p} succeeded");
    assert!(
        err.contains("exists") || err.to_lowercase().contains("conflict"),
        "not a conflict error: {err}"
    );
    assert_eq!(
        node.pod_ip(&p),
        ip,
        "the failed second create changed the pod"
    );

    // pod exec: runs in the pod's namespace, exit code passed through.
    let out = node.podnet(&["pod", "exec", &p, "--", "ip", "-4", "addr", "show", "eth0"]);
    assert!(
        out.status.success(),
        "pod exec ip addr: {}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains(&format!("inet {ip}/32")),
        "eth0 of {p} lacks {ip}/32: {}",
        text(&out.stdout)
    );
    let out = node.podnet(&["pod", "exec", &p, "--", "sh", "-c", "exit 3"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "exit code not passed through: {}",
        text(&out.stderr)
    );
    let out = node.podnet(&[
        "pod",
        "exec",
        &p,
        "--",
        "sh",
        "-c",
        "echo $POD_NAME; ip route show default",
    ]);
    assert!(out.status.success());
    assert!(
        text(&out.stdout).contains("dev eth0"),
        "default route in the pod: {}",
        text(&out.stdout)
    );
    let out = node.podnet(&["pod", "exec", "nosuchpod", "--", "true"]);
    assert!(!out.status.success(), "exec in a missing pod succeeded");

    // pod logs: the process's stdout and stderr.
    let logs = wait_for(Duration::from_secs(5), || {
        let l = text(&node.podnet(&["pod", "logs", &p]).stdout);
        (l.contains("to-stderr") && l.contains("hello-from")).then_some(l)
    })
    .unwrap_or_else(|| {
        panic!(
            "pod logs lack the output: {:?}",
            text(&node.podnet(&["pod", "logs", &p]).stdout)
        )
    });
    assert!(
        logs.contains(&format!("hello-from-{p}")),
        "POD_NAME not in the environment: {logs}"
    );

    // The table output lists the pod with its address.
    let table = node.podnet_ok(&["pod", "list"]);
    assert!(
        table.contains(&p) && table.contains(&ip),
        "pod list table: {table}"
    );
    // Delete, then it is gone and its namespace too.
    node.podnet_ok(&["pod", "delete", &p]);
    wait_for(Duration::from_secs(10), || {
        node.pod(&p).is_none().then_some(())
    })
    .unwrap_or_else(|| panic!("pod {p} still there after delete: {:?}", node.pod(&p)));
    assert!(
        !node.pod_namespaces().contains(&p),
        "namespace {p} left after delete"
    );
    assert!(
        node.daemon_exited().is_none(),
        "the daemon died\n{}",
        node.daemon_log()
    );

    // The raw API: root-only socket; every bad request is a 4xx with a
    // message, and the daemon keeps running.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&node.sock)
        .expect("socket")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "API socket mode {mode:o}");
    let sock = node.sock.display().to_string();
    for (method, path, body) in [
        ("POST", "/v1/pods", "{not json"),
        (
            "POST",
            "/v1/pods",
            r#"{"name":"ok","command":[],"bogus":1}"#,
        ),
        (
            "POST",
            "/v1/services",
            r#"{"name":"s","selector":{"a":"b"},"ports":[{"port":0}]}"#,
        ),
        (
            "POST",
            "/v1/deployments",
            r#"{"name":"d","replicas":100000,"command":["sleep","1"]}"#,
        ),
        ("GET", "/v1/nosuchkind", ""),
        ("DELETE", "/v1/nat", ""),
    ] {
        let (o, timed_out) = daemon_support::run_timeout(
            {
                let mut c = std::process::Command::new("curl");
                c.args([
                    "-sS",
                    "-m",
                    "3",
                    "--unix-socket",
                    &sock,
                    "-X",
                    method,
                    "-H",
                    "Content-Type: application/json",
                    "-w",
                    "\n%{http_code}",
                ]);
                if !body.is_empty() {
                    c.args(["--data-binary", body]);
                }
                c.arg(format!("http://localhost{path}"));
                c
            },
            Duration::from_secs(5),
        );
        assert!(!timed_out, "{method} {path} hung");
        let reply = text(&o.stdout);
        let code: u32 = reply
            .lines()
            .last()
            .unwrap_or("")
            .trim()
            .parse()
            .unwrap_or(0);
        assert!(
            (400..500).contains(&code),
            "{method} {path} {body:?}: expected a 4xx, got {code}: {reply}"
        );
        assert!(
            reply.contains("error"),
            "{method} {path}: no error message: {reply}"
        );
    }
    assert!(
        node.daemon_exited().is_none(),
        "the daemon died on a bad request\n{}",
        node.daemon_log()
    );
    node.podnet_ok(&["pod", "list"]);
}
