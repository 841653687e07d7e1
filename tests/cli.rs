//! The `podnet` binary against the in-memory fake daemon on a temporary
//! socket: table and JSON output, exit codes, and the messages a user sees.

mod common;

use std::process::{Command, Output};

use common::TestServer;
use podnet::api::{Pod, Service};

fn podnet(server: Option<&TestServer>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_podnet"));
    cmd.env_remove("PODNET_SOCKET");
    if let Some(server) = server {
        cmd.arg("--socket").arg(&server.socket);
    }
    cmd.args(args).output().expect("run podnet")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

#[track_caller]
fn ok(o: Output) -> String {
    assert!(o.status.success(), "failed: {}\n{}", o.status, stderr(&o));
    stdout(&o)
}

#[test]
fn pod_lifecycle_in_tables_and_json() {
    let s = TestServer::start();
    let out = ok(podnet(
        Some(&s),
        &[
            "pod",
            "run",
            "web",
            "--label",
            "app=web",
            "--restart",
            "on-failure",
            "--",
            "sleep",
            "100",
        ],
    ));
    assert_eq!(out, "pod/web created\n");
    ok(podnet(
        Some(&s),
        &["po", "run", "cache-long-name", "--", "redis"],
    ));

    let table = ok(podnet(Some(&s), &["pod", "list"]));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    let header = lines[0];
    assert!(
        header.starts_with("NAME              STATUS    IP           RESTARTS   AGE"),
        "{table}"
    );
    // Columns line up: every row's IP starts where the header's does.
    let ip_col = header.find("IP").unwrap();
    for row in &lines[1..] {
        assert_eq!(&row[ip_col..ip_col + 9], "10.244.0.", "{table}");
    }
    assert!(
        table.contains("web    ") && table.contains("Running"),
        "{table}"
    );

    let wide = ok(podnet(Some(&s), &["-o", "wide", "pod", "get", "web"]));
    assert!(
        wide.contains("LABELS") && wide.contains("app=web") && wide.contains("sleep 100"),
        "{wide}"
    );

    let json = ok(podnet(Some(&s), &["pod", "get", "web", "-o", "json"]));
    let pod: Pod = serde_json::from_str(&json).unwrap();
    assert_eq!(pod.name, "web");
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    for key in ["name", "ip", "phase", "labels", "restarts"] {
        assert!(value.get(key).is_some(), "{key} missing in {json}");
    }
    assert_eq!(value["restartPolicy"], "OnFailure");
    let list: Vec<Pod> =
        serde_json::from_str(&ok(podnet(Some(&s), &["pod", "list", "-o", "json"]))).unwrap();
    assert_eq!(list.len(), 2);

    assert_eq!(
        ok(podnet(Some(&s), &["pod", "logs", "web"])),
        "hello from web\nline two\n"
    );
    assert_eq!(
        ok(podnet(Some(&s), &["pod", "delete", "web"])),
        "pod \"web\" deleted\n"
    );

    let o = podnet(Some(&s), &["pod", "get", "web"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o), "error: pod \"web\" not found\n");
    assert!(stdout(&o).is_empty());
}

#[test]
fn attach_sends_the_namespace_path() {
    let s = TestServer::start();
    let out = ok(podnet(
        Some(&s),
        &[
            "pod",
            "attach",
            "cni",
            "--netns",
            "/proc/self/ns/net",
            "-o",
            "json",
        ],
    ));
    let pod: Pod = serde_json::from_str(&out).unwrap();
    assert_eq!(pod.netns, "/proc/self/ns/net");
}

#[test]
fn deployments_statefulsets_services_nat_conntrack_reset() {
    let s = TestServer::start();
    assert_eq!(
        ok(podnet(
            Some(&s),
            &[
                "deployment",
                "create",
                "web",
                "--replicas",
                "3",
                "--label",
                "app=web",
                "--",
                "httpd"
            ]
        )),
        "deployment/web created\n"
    );
    let table = ok(podnet(Some(&s), &["deploy", "list"]));
    assert!(
        table.starts_with("NAME   READY   AGE\nweb    3/3     "),
        "{table}"
    );
    assert_eq!(
        ok(podnet(
            Some(&s),
            &["deployment", "scale", "web", "--replicas", "2"]
        )),
        "deployment/web scaled\n"
    );
    assert!(ok(podnet(Some(&s), &["deployment", "get", "web"])).contains("2/2"));

    ok(podnet(
        Some(&s),
        &[
            "statefulset",
            "create",
            "db",
            "--replicas",
            "2",
            "--service",
            "db",
            "--",
            "postgres",
        ],
    ));
    let table = ok(podnet(Some(&s), &["sts", "list", "-o", "wide"]));
    assert!(table.contains("db-0,db-1"), "{table}");
    ok(podnet(
        Some(&s),
        &["statefulset", "scale", "db", "--replicas", "1"],
    ));

    let out = ok(podnet(
        Some(&s),
        &[
            "service",
            "create",
            "web",
            "--selector",
            "app=web",
            "--port",
            "80:8080/tcp",
            "--port",
            "53/udp",
            "--cluster-ip",
            "10.96.0.10",
            "--session-affinity",
            "ClientIP",
            "-o",
            "json",
        ],
    ));
    let svc: Service = serde_json::from_str(&out).unwrap();
    assert_eq!(svc.cluster_ip, "10.96.0.10");
    assert_eq!(svc.endpoints.len(), 4, "2 pods x 2 ports");
    let value: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(value["clusterIP"], "10.96.0.10");
    assert_eq!(value["sessionAffinity"], "ClientIP");

    let table = ok(podnet(Some(&s), &["svc", "list"]));
    assert!(
        table.starts_with("NAME   CLUSTER-IP   PORT(S)              ENDPOINTS"),
        "{table}"
    );
    assert!(table.contains("80:8080/TCP,53/UDP"), "{table}");
    assert!(table.contains("+ 1 more..."), "{table}");

    let nat = ok(podnet(Some(&s), &["nat", "list"]));
    assert!(nat.starts_with("FRONTEND"), "{nat}");
    assert!(
        nat.contains("10.96.0.10:80/TCP   web       10.244.0."),
        "{nat}"
    );
    let ct = ok(podnet(Some(&s), &["conntrack", "list"]));
    assert!(
        ct.contains("ESTABLISHED") && ct.contains("10.96.0.10:80"),
        "{ct}"
    );

    ok(podnet(Some(&s), &["service", "delete", "web"]));
    ok(podnet(Some(&s), &["statefulset", "delete", "db"]));
    // Not a terminal: no confirmation asked.
    let out = ok(podnet(Some(&s), &["reset"]));
    assert_eq!(
        out,
        "reset: removed 2 pods, 1 deployments, 0 statefulsets, 0 services\n"
    );
    let o = podnet(Some(&s), &["deployment", "list"]);
    assert!(o.status.success());
    assert!(stdout(&o).is_empty());
    assert_eq!(stderr(&o), "No deployments found.\n");
    assert_eq!(
        ok(podnet(Some(&s), &["deployment", "list", "-o", "json"])),
        "[]\n"
    );
}

#[test]
fn a_missing_daemon_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("none.sock");
    let o = Command::new(env!("CARGO_BIN_EXE_podnet"))
        .env("PODNET_SOCKET", &socket)
        .args(["pod", "list"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.starts_with(&format!(
            "error: cannot connect to podnetd at {}",
            socket.display()
        )),
        "{err}"
    );
    assert!(
        err.contains("is the daemon running? (set --socket or PODNET_SOCKET)"),
        "{err}"
    );
}

#[test]
fn bad_arguments_fail_before_any_request() {
    // No server at all: these must fail on parsing, with usage exit code 2.
    let o = podnet(
        None,
        &[
            "service",
            "create",
            "web",
            "--selector",
            "app=web",
            "--port",
            "80:http",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("expected PORT[:TARGET][/tcp|/udp]"), "{err}");

    let o = podnet(
        None,
        &[
            "service",
            "create",
            "web",
            "--selector",
            "app",
            "--port",
            "80",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("expected K=V[,K=V]"), "{}", stderr(&o));

    let o = podnet(None, &["pod", "run", "web", "--label", "app", "--", "x"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("expected KEY=VALUE"), "{}", stderr(&o));

    let o = podnet(
        None,
        &["pod", "run", "web", "--restart", "sometimes", "--", "x"],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("always, on-failure, never"),
        "{}",
        stderr(&o)
    );

    let o = podnet(None, &["pod", "run", "web"]);
    assert_eq!(o.status.code(), Some(2));

    let o = podnet(None, &["-o", "yaml", "pod", "list"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn server_side_validation_reaches_the_user() {
    let s = TestServer::start();
    let o = podnet(Some(&s), &["pod", "run", "Web", "--", "x"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.starts_with("error: invalid pod name \"Web\""), "{err}");
    assert!(err.contains("DNS label"), "{err}");
}

#[test]
fn exec_of_a_missing_pod_fails_cleanly() {
    let s = TestServer::start();
    let o = podnet(Some(&s), &["pod", "exec", "nope", "--", "true"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o), "error: pod \"nope\" not found\n");
    // The fake's namespace path does not exist: the failing step is named.
    ok(podnet(Some(&s), &["pod", "run", "web", "--", "x"]));
    let o = podnet(Some(&s), &["pod", "exec", "web", "--", "true"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("cannot enter pod web's network namespace"),
        "{err}"
    );
    assert!(err.contains("/var/run/netns/web"), "{err}");
}

/// Whether this process may setns(2): CAP_SYS_ADMIN (bit 21) in its effective set.
fn can_setns() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|caps| u64::from_str_radix(caps.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 21) != 0)
}

#[test]
fn exec_enters_the_namespace_and_passes_the_exit_code_through() {
    let s = TestServer::start();
    // podnet's own namespace stands in for a pod's: entering it changes nothing.
    ok(podnet(
        Some(&s),
        &["pod", "attach", "host", "--netns", "/proc/self/ns/net"],
    ));
    let o = podnet(
        Some(&s),
        &[
            "pod",
            "exec",
            "host",
            "--",
            "sh",
            "-c",
            "echo $POD_NAME $POD_IP; exit 7",
        ],
    );
    if can_setns() {
        assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
        assert_eq!(stdout(&o), "host 10.244.0.2\n");
        let o = podnet(Some(&s), &["pod", "exec", "host", "--", "/nonexistent/cmd"]);
        assert_eq!(o.status.code(), Some(127));
        assert!(stderr(&o).contains("cannot run \"/nonexistent/cmd\" in pod host"));
    } else {
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains("needs root"), "{}", stderr(&o));
    }
}
