//! Root tests: the `podnet` CLI against a real podnetd. Bad input fails
//! with a clear message and a non-zero exit; `pod exec` runs in the pod's
//! namespace and passes the exit code through; `pod logs` shows the
//! process's output; tables show the server's columns; a pod's
//! `containerID` names its process.

mod daemon_support;

use std::time::Duration;

use daemon_support::{
    alive, container_pid, ip_of, pod_netns, restarts, serial, text, wait_for, Node, SETTLE,
};

#[test]
fn bad_input_conflicts_exec_and_logs() {
    let _s = serial();
    let mut node = Node::start();

    // A port that is not a number: refused by the CLI (usage error).
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
    assert_eq!(
        out.status.code(),
        Some(2),
        "--port abc: {}{err}",
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
    // Out of range, bad protocol, bad selector (the CLI's); a cluster IP
    // outside the service CIDR, a name that is no DNS label, a missing
    // object (the server's).
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
        vec!["pod", "delete", "nosuchpod"],
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
    let out = node.podnet(&[
        "service",
        "create",
        &x,
        "--selector",
        "app=x",
        "--port",
        "80",
        "--cluster-ip",
        "1.2.3.4",
    ]);
    let err = text(&out.stderr);
    assert!(
        err.contains("1.2.3.4") && err.contains("clusterIP"),
        "{err}"
    );
    let out = node.podnet(&["pod", "get", "nosuchpod"]);
    assert_eq!(text(&out.stderr), "error: pods \"nosuchpod\" not found\n");
    assert!(
        node.daemon_exited().is_none(),
        "the daemon died on bad input\n{}",
        node.daemon_log()
    );

    // Creating a pod twice: conflict.
    let p = node.name("pod");
    let script = "echo hello-from-$HOSTNAME; echo to-stderr >&2; exec sleep 3600";
    node.run_pod(&p, &["app=cli"], &["sh".into(), "-c".into(), script.into()]);
    let ip = node.pod_ip(&p);
    let out = node.podnet(&["pod", "run", &p, "--", "sleep", "1"]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "second pod run {p} succeeded");
    assert!(
        err.contains("already exists"),
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
        "echo $POD_NAME $POD_IP; ip route show default",
    ]);
    assert!(out.status.success());
    let o = text(&out.stdout);
    assert!(
        o.starts_with(&format!("{p} {ip}\n")),
        "POD_NAME POD_IP: {o}"
    );
    assert!(o.contains("dev eth0"), "default route in the pod: {o}");
    let out = node.podnet(&["pod", "exec", "nosuchpod", "--", "true"]);
    assert!(!out.status.success(), "exec in a missing pod succeeded");
    assert!(
        text(&out.stderr).contains("not found"),
        "{}",
        text(&out.stderr)
    );

    // pod logs: the process's stdout and stderr.
    let logs = wait_for(SETTLE, || {
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
        "HOSTNAME (the pod name) not in the environment: {logs}"
    );

    // The tables: kubectl's columns; the address in the wide one.
    let table = node.podnet_ok(&["pod", "list"]);
    let lines: Vec<&str> = table.lines().collect();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        "{table}"
    );
    let row: Vec<&str> = lines
        .iter()
        .find(|l| l.starts_with(&p))
        .unwrap_or_else(|| panic!("pod list lacks {p}: {table}"))
        .split_whitespace()
        .collect();
    assert_eq!(&row[..4], [p.as_str(), "1/1", "Running", "0"], "{table}");
    let wide = node.podnet_ok(&["pod", "get", &p, "-o", "wide"]);
    assert!(
        wide.lines()
            .next()
            .is_some_and(|h| h.contains("IP") && h.contains("NODE")),
        "{wide}"
    );
    assert!(wide.contains(&ip), "pod get -o wide lacks {ip}: {wide}");

    // Delete: `pod "NAME" deleted` once it is gone, its namespace too.
    let out = node.podnet_ok(&["pod", "delete", &p]);
    assert_eq!(out, format!("pod \"{p}\" deleted\n"));
    assert!(node.pod(&p).is_none(), "pod {p} still there after delete");
    // The namespace goes a moment later, once the daemon's janitor has
    // stopped whatever still ran in it.
    let gone = wait_for(Duration::from_secs(30), || {
        (!node.pod_namespaces().contains(&pod_netns(&p))).then_some(())
    });
    assert!(gone.is_some(), "namespace of {p} left after delete");
    assert!(
        node.daemon_exited().is_none(),
        "the daemon died\n{}",
        node.daemon_log()
    );

    // The raw API: root-only socket; every bad request is a 4xx with a
    // Kubernetes Status saying why, and the daemon keeps running.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&node.sock)
        .expect("socket")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "API socket mode {mode:o}");
    let sock = node.sock.display().to_string();
    for (method, path, body) in [
        ("POST", "/api/v1/namespaces/default/pods", "{not json"),
        (
            "POST",
            "/api/v1/namespaces/default/pods",
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"ok"},"spec":{"containers":[]}}"#,
        ),
        (
            "POST",
            "/api/v1/namespaces/default/services",
            r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"s"},"spec":{"selector":{"a":"b"},"ports":[{"port":0}]}}"#,
        ),
        (
            "POST",
            "/apis/apps/v1/namespaces/default/deployments",
            r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d"},"spec":{"replicas":-1,"selector":{"matchLabels":{"a":"b"}},"template":{"metadata":{"labels":{"a":"b"}},"spec":{"containers":[{"name":"c","image":"x"}]}}}}"#,
        ),
        ("GET", "/api/v1/namespaces/default/nosuchkind", ""),
        ("DELETE", "/podnet/v1/nat", ""),
    ] {
        let (o, timed_out) = daemon_support::run_timeout(
            {
                let mut c = std::process::Command::new("curl");
                c.args([
                    "-sS",
                    "-m",
                    "10",
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
            Duration::from_secs(15),
        );
        assert!(!timed_out, "{method} {path} hung");
        let reply = text(&o.stdout);
        let (json, code) = reply.rsplit_once('\n').unwrap_or(("", &reply));
        let code: u32 = code.trim().parse().unwrap_or(0);
        assert!(
            (400..500).contains(&code),
            "{method} {path} {body:?}: expected a 4xx, got {code}: {reply}"
        );
        let status: serde_json::Value = serde_json::from_str(json)
            .unwrap_or_else(|e| panic!("{method} {path}: not a Status ({e}): {reply}"));
        assert_eq!(status["kind"], "Status", "{method} {path}: {reply}");
        assert!(
            status["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{method} {path}: no message: {reply}"
        );
    }
    assert!(
        node.daemon_exited().is_none(),
        "the daemon died on a bad request\n{}",
        node.daemon_log()
    );
    node.podnet_ok(&["pod", "list"]);
}

/// `status.containerStatuses[0].containerID` is `podnet://PID-STARTTIME`:
/// the pid of the pod's process (alive, in the pod's namespace), so a
/// restart of the same pid number is told apart by its start time.
#[test]
fn container_id_names_the_pod_process() {
    let _s = serial();
    let node = Node::start();
    let p = node.name("pid");
    node.run_pod(&p, &[], &["sleep".into(), "3600".into()]);
    let pod = node.wait_running(&p);
    let id = pod["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let pid = container_pid(&pod)
        .unwrap_or_else(|| panic!("containerID {id:?} is not podnet://PID-STARTTIME"));
    assert!(alive(pid), "containerID {id}: no process {pid}");
    let inode = |path: &str| {
        std::os::unix::fs::MetadataExt::ino(
            &std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}")),
        )
    };
    assert_eq!(
        inode(&format!("/proc/{pid}/ns/net")),
        inode(&format!("/var/run/netns/{}", pod_netns(&p))),
        "process {pid} of containerID {id} is not in the pod's namespace"
    );
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert_eq!(
        comm.trim(),
        "sleep",
        "process {pid} is not the pod's command"
    );
    let start = id
        .rsplit_once('-')
        .map(|(_, s)| s.to_string())
        .unwrap_or_default();
    assert!(
        !start.is_empty() && start.chars().all(|c| c.is_ascii_digit()),
        "containerID {id}: no start time"
    );
    assert_eq!(restarts(&pod), 0);
    assert!(ip_of(&pod).is_some());
}

/// `pod delete` waits until the pod is gone, as `kubectl delete` does: a
/// new pod that takes the same name (a statefulset's) is not the deleted
/// one, so the wait ends when the old pod's processes have stopped.
#[test]
fn delete_waits_for_the_pod_not_for_its_replacement() {
    let _s = serial();
    let node = Node::start();
    let db = node.name("db");
    node.podnet_ok(&[
        "statefulset",
        "create",
        &db,
        "--replicas",
        "1",
        "--service",
        &db,
        "--",
        "sleep",
        "infinity",
    ]);
    let p0 = format!("{db}-0");
    let old = node.wait_running(&p0);
    let pid = node.pid_of(&old);
    let out = node.podnet(&["pod", "delete", &p0]);
    assert!(
        out.status.success(),
        "pod delete {p0} (recreated by its statefulset): {}",
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout), format!("pod \"{p0}\" deleted\n"));
    assert!(
        !alive(pid),
        "pod delete returned while {p0}'s process {pid} runs"
    );
    let new = node.wait_running(&p0);
    assert_ne!(new["metadata"]["uid"], old["metadata"]["uid"]);
}
