//! The `podnet` binary against the real Kubernetes API served in-process
//! on a temporary Unix socket over a temporary store (no kubelet, no
//! reconcilers: objects are what the API made of them): what it creates,
//! the server's table columns, JSON objects and lists, scaling through
//! `/scale`, the server's validation reaching the user with the field
//! named, exit codes, and the messages a user sees. The node views (NAT,
//! conntrack, stats, reset) and everything needing pods to run are in the
//! root `daemon_*` tests.

mod kube_support;

use std::process::{Command, Output};

use kube_support::KubeServer;
use serde_json::Value;

fn server() -> KubeServer {
    KubeServer::start_with_socket()
}

fn podnet(server: Option<&KubeServer>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_podnet"));
    cmd.env_remove("PODNET_SOCKET");
    if let Some(server) = server {
        cmd.arg("--socket")
            .arg(server.socket.as_ref().expect("a socket"));
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

#[track_caller]
fn json(o: Output) -> Value {
    let out = ok(o);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// The words of each line of a table.
fn cells(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect()
}

/// Sets a pod's status as a kubelet would (`PATCH .../status`), so exec
/// has an address to show.
fn set_running(s: &KubeServer, name: &str, ip: &str) {
    let body = serde_json::to_vec(&serde_json::json!({
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}
    }))
    .unwrap();
    podnet::api::ApiClient::new(s.socket.as_ref().unwrap())
        .request_typed(
            "PATCH",
            &format!("/api/v1/namespaces/default/pods/{name}/status"),
            "application/merge-patch+json",
            Some(&body),
        )
        .expect("patch the pod's status");
}

#[test]
fn pod_lifecycle_in_tables_and_json() {
    let s = server();
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
            "--env",
            "MODE=test",
            "--",
            "sleep",
            "100",
        ],
    ));
    assert_eq!(out, "pod/web created\n");
    ok(podnet(
        Some(&s),
        &["po", "run", "cache-long-name", "--", "redis-server"],
    ));

    // The server's Table: kubectl's columns, aligned.
    let table = ok(podnet(Some(&s), &["pod", "list"]));
    let rows = cells(&table);
    assert_eq!(rows.len(), 3, "{table}");
    assert_eq!(
        rows[0],
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        "{table}"
    );
    let header = table.lines().next().unwrap();
    let status_col = header.find("STATUS").unwrap();
    for line in table.lines().skip(1) {
        assert_eq!(
            line[status_col..].split_whitespace().next(),
            Some("Pending"),
            "columns do not line up (no kubelet here: Pending): {table}"
        );
    }
    let mut names: Vec<&str> = rows[1..].iter().map(|r| r[0].as_str()).collect();
    names.sort();
    assert_eq!(names, ["cache-long-name", "web"]);
    assert_eq!(rows[1][1], "0/1", "{table}");

    let wide = ok(podnet(Some(&s), &["-o", "wide", "pod", "get", "web"]));
    let wide_rows = cells(&wide);
    assert_eq!(wide_rows.len(), 2, "{wide}");
    for col in ["IP", "NODE", "NOMINATED", "READINESS"] {
        assert!(
            wide_rows[0].iter().any(|c| c == col),
            "{col} missing: {wide}"
        );
    }
    assert!(wide.contains("<none>"), "no IP yet shows <none>: {wide}");

    // JSON: the Kubernetes object as the CLI built it.
    let pod = json(podnet(Some(&s), &["pod", "get", "web", "-o", "json"]));
    assert_eq!(pod["kind"], "Pod");
    assert_eq!(pod["apiVersion"], "v1");
    assert_eq!(pod["metadata"]["name"], "web");
    assert_eq!(pod["metadata"]["namespace"], "default");
    assert_eq!(pod["metadata"]["labels"]["app"], "web");
    assert!(pod["metadata"]["uid"].is_string(), "{pod}");
    assert!(pod["metadata"]["creationTimestamp"].is_string(), "{pod}");
    assert_eq!(pod["spec"]["restartPolicy"], "OnFailure");
    let c = &pod["spec"]["containers"][0];
    assert_eq!(c["name"], "web");
    assert_eq!(c["command"], serde_json::json!(["sleep", "100"]));
    assert_eq!(
        c["env"],
        serde_json::json!([{"name": "MODE", "value": "test"}])
    );
    let list = json(podnet(Some(&s), &["pod", "list", "-o", "json"]));
    assert_eq!(list["items"].as_array().map(Vec::len), Some(2), "{list}");

    // Delete: the message, then it is gone (an unscheduled pod goes at once).
    assert_eq!(
        ok(podnet(Some(&s), &["pod", "delete", "web"])),
        "pod \"web\" deleted\n"
    );
    let o = podnet(Some(&s), &["pod", "get", "web"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o), "error: pods \"web\" not found\n");
    assert!(stdout(&o).is_empty());
    let o = podnet(Some(&s), &["pod", "delete", "web"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o), "error: pods \"web\" not found\n");

    // Creating what exists is a conflict.
    let o = podnet(Some(&s), &["pod", "run", "cache-long-name", "--", "x"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
}

#[test]
fn namespaces_are_chosen_with_n() {
    let s = server();
    ok(podnet(
        Some(&s),
        &["-n", "kube-system", "pod", "run", "sys", "--", "sleep", "1"],
    ));
    let pod = json(podnet(
        Some(&s),
        &["pod", "get", "sys", "-n", "kube-system", "-o", "json"],
    ));
    assert_eq!(pod["metadata"]["namespace"], "kube-system");
    let o = podnet(Some(&s), &["pod", "list"]);
    assert!(o.status.success());
    assert!(stdout(&o).is_empty(), "{}", stdout(&o));
    assert_eq!(stderr(&o), "No resources found in default namespace.\n");
    let table = ok(podnet(Some(&s), &["pod", "list", "-n", "kube-system"]));
    assert!(table.lines().any(|l| l.starts_with("sys ")), "{table}");
    let o = podnet(
        Some(&s),
        &["-n", "nosuchns", "pod", "run", "x", "--", "true"],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("nosuchns"), "{}", stderr(&o));
}

#[test]
fn attach_annotates_the_namespace_path_and_runs_a_pause_process() {
    let s = server();
    let pod = json(podnet(
        Some(&s),
        &[
            "pod",
            "attach",
            "cni",
            "--netns",
            "/proc/self/ns/net",
            "--label",
            "app=cni",
            "-o",
            "json",
        ],
    ));
    assert_eq!(
        pod["metadata"]["annotations"]["podnet.io/netns"],
        "/proc/self/ns/net"
    );
    assert_eq!(pod["metadata"]["labels"]["app"], "cni");
    let c = &pod["spec"]["containers"][0];
    assert_eq!(c["name"], "pause");
    assert_eq!(c["command"], serde_json::json!(["sleep", "infinity"]));
    assert_eq!(pod["spec"]["terminationGracePeriodSeconds"], 0);

    // A namespace that does not exist: refused before any request.
    let o = podnet(
        Some(&s),
        &[
            "pod",
            "attach",
            "gone",
            "--netns",
            "/var/run/netns/no-such-podnet-ns",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("/var/run/netns/no-such-podnet-ns does not exist"),
        "{}",
        stderr(&o)
    );
    assert!(podnet(Some(&s), &["pod", "get", "gone"]).status.code() == Some(1));
}

#[test]
fn deployments_statefulsets_and_services() {
    let s = server();
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
                "--label",
                "tier=front",
                "--",
                "httpd"
            ]
        )),
        "deployment.apps/web created\n"
    );
    let table = ok(podnet(Some(&s), &["deploy", "list"]));
    let rows = cells(&table);
    assert_eq!(
        rows[0],
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        "{table}"
    );
    assert_eq!(rows[1][..2], ["web", "0/3"], "{table}");
    let d = json(podnet(
        Some(&s),
        &["deployment", "get", "web", "-o", "json"],
    ));
    assert_eq!(d["kind"], "Deployment");
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(
        d["spec"]["selector"]["matchLabels"],
        serde_json::json!({"app": "web", "tier": "front"})
    );
    assert_eq!(d["spec"]["template"]["metadata"]["labels"]["tier"], "front");
    assert_eq!(
        ok(podnet(
            Some(&s),
            &["deployment", "scale", "web", "--replicas", "2"]
        )),
        "deployment.apps/web scaled\n"
    );
    let d = json(podnet(
        Some(&s),
        &["deployment", "get", "web", "-o", "json"],
    ));
    assert_eq!(d["spec"]["replicas"], 2, "scaled through /scale: {d}");
    // Without --label: app=NAME.
    ok(podnet(
        Some(&s),
        &[
            "deployment",
            "create",
            "plain",
            "--replicas",
            "1",
            "--",
            "x",
        ],
    ));
    let d = json(podnet(
        Some(&s),
        &["deployment", "get", "plain", "-o", "json"],
    ));
    assert_eq!(
        d["spec"]["selector"]["matchLabels"],
        serde_json::json!({"app": "plain"})
    );
    let list = json(podnet(Some(&s), &["deployment", "list", "-o", "json"]));
    assert_eq!(list["items"].as_array().map(Vec::len), Some(2), "{list}");

    assert_eq!(
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
        )),
        "statefulset.apps/db created\n"
    );
    let table = ok(podnet(Some(&s), &["sts", "list", "-o", "wide"]));
    let rows = cells(&table);
    assert_eq!(rows[0][..3], ["NAME", "READY", "AGE"], "{table}");
    assert_eq!(rows[1][..2], ["db", "0/2"], "{table}");
    assert_eq!(
        ok(podnet(
            Some(&s),
            &["statefulset", "scale", "db", "--replicas", "1"],
        )),
        "statefulset.apps/db scaled\n"
    );
    let st = json(podnet(Some(&s), &["sts", "get", "db", "-o", "json"]));
    assert_eq!(st["spec"]["replicas"], 1);
    assert_eq!(st["spec"]["serviceName"], "db");

    let svc = json(podnet(
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
    assert_eq!(svc["kind"], "Service");
    assert_eq!(svc["spec"]["clusterIP"], "10.96.0.10");
    assert_eq!(svc["spec"]["sessionAffinity"], "ClientIP");
    assert_eq!(svc["spec"]["selector"], serde_json::json!({"app": "web"}));
    let ports = &svc["spec"]["ports"];
    assert_eq!(ports[0]["name"], "80-8080");
    assert_eq!(ports[0]["port"], 80);
    assert_eq!(ports[0]["targetPort"], 8080);
    assert_eq!(ports[0]["protocol"], "TCP");
    assert_eq!(ports[1]["name"], "53-53-udp");
    assert_eq!(ports[1]["protocol"], "UDP");
    // One port: no name needed; a cluster IP from the service CIDR.
    let one = json(podnet(
        Some(&s),
        &[
            "svc",
            "create",
            "one",
            "--selector",
            "app=one",
            "--port",
            "80",
            "-o",
            "json",
        ],
    ));
    let ip: std::net::Ipv4Addr = one["spec"]["clusterIP"]
        .as_str()
        .expect("a cluster IP")
        .parse()
        .unwrap();
    assert!(
        "10.96.0.0/12"
            .parse::<ipnet::Ipv4Net>()
            .unwrap()
            .contains(&ip),
        "{ip}"
    );
    assert!(one["spec"]["ports"][0]["name"].is_null(), "{one}");
    assert_eq!(one["spec"]["ports"][0]["targetPort"], 80, "{one}");

    let table = ok(podnet(Some(&s), &["svc", "list"]));
    let rows = cells(&table);
    assert_eq!(
        rows[0],
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ],
        "{table}"
    );
    let web = rows.iter().find(|r| r[0] == "web").expect("web row");
    assert_eq!(
        web[1..5],
        ["ClusterIP", "10.96.0.10", "<none>", "80/TCP,53/UDP"],
        "{table}"
    );

    // Deletes, with the owner's dependents; lists then say so.
    assert_eq!(
        ok(podnet(Some(&s), &["service", "delete", "web"])),
        "service \"web\" deleted\n"
    );
    assert_eq!(
        ok(podnet(Some(&s), &["statefulset", "delete", "db"])),
        "statefulset.apps \"db\" deleted\n"
    );
    ok(podnet(Some(&s), &["deployment", "delete", "web"]));
    ok(podnet(
        Some(&s),
        &["deployment", "delete", "plain", "--wait=false"],
    ));
    let o = podnet(Some(&s), &["deployment", "list"]);
    assert!(o.status.success());
    assert!(stdout(&o).is_empty(), "{}", stdout(&o));
    assert_eq!(stderr(&o), "No resources found in default namespace.\n");
    let list = json(podnet(Some(&s), &["deployment", "list", "-o", "json"]));
    assert_eq!(list["items"], serde_json::json!([]), "{list}");
    let o = podnet(Some(&s), &["deployment", "scale", "web", "--replicas", "1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not found"), "{}", stderr(&o));
}

#[test]
fn apply_creates_and_updates_from_a_manifest() {
    let s = server();
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("app.yaml");
    let write = |replicas: u32| {
        std::fs::write(
            &manifest,
            format!(
                "apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: api}}
  template:
    metadata:
      labels: {{app: api}}
    spec:
      containers:
      - name: api
        image: podnet/command
        command: [sleep, infinity]
---
apiVersion: v1
kind: Service
metadata:
  name: api
spec:
  selector: {{app: api}}
  ports:
  - port: 80
"
            ),
        )
        .unwrap();
    };
    write(2);
    let path = manifest.to_str().unwrap();
    assert_eq!(
        ok(podnet(Some(&s), &["apply", "-f", path])),
        "deployment.apps/api serverside-applied\nservice/api serverside-applied\n"
    );
    write(4);
    ok(podnet(Some(&s), &["apply", "-f", path]));
    let d = json(podnet(
        Some(&s),
        &["deployment", "get", "api", "-o", "json"],
    ));
    assert_eq!(d["spec"]["replicas"], 4);
    ok(podnet(Some(&s), &["service", "get", "api"]));
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

    let o = podnet(None, &["pod", "run", "web", "--env", "=x", "--", "x"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("expected NAME=VALUE"), "{}", stderr(&o));

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

    let o = podnet(None, &["deployment", "scale", "web", "--replicas", "-1"]);
    assert_eq!(o.status.code(), Some(2));

    let o = podnet(None, &["pod", "run", "web"]);
    assert_eq!(o.status.code(), Some(2));

    let o = podnet(None, &["-o", "yaml", "pod", "list"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn server_side_validation_reaches_the_user_with_the_field() {
    let s = server();
    let o = podnet(Some(&s), &["pod", "run", "Web", "--", "x"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.starts_with("error: "), "{err}");
    assert!(
        err.contains("metadata.name") && err.contains("\"Web\""),
        "the field and the value: {err}"
    );
    assert!(err.contains("RFC 1123"), "what a name must be: {err}");

    let o = podnet(
        Some(&s),
        &[
            "service",
            "create",
            "svc",
            "--selector",
            "app=x",
            "--port",
            "80",
            "--cluster-ip",
            "1.2.3.4",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("spec.clusterIP") && err.contains("1.2.3.4"),
        "the field and the value: {err}"
    );
    // Nothing was created.
    assert_eq!(
        podnet(Some(&s), &["svc", "get", "svc"]).status.code(),
        Some(1)
    );
    assert_eq!(
        podnet(Some(&s), &["pod", "get", "Web"]).status.code(),
        Some(1)
    );
}

#[test]
fn exec_of_a_missing_or_unstarted_pod_fails_cleanly() {
    let s = server();
    let o = podnet(Some(&s), &["pod", "exec", "nope", "--", "true"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "error: pod \"nope\" not found in namespace default\n"
    );
    // No kubelet here: the pod has no address yet.
    ok(podnet(Some(&s), &["pod", "run", "web", "--", "x"]));
    let o = podnet(Some(&s), &["pod", "exec", "web", "--", "true"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("pod web has no network yet"), "{err}");
    // With an address but no namespace on this host: the failing step is named.
    set_running(&s, "web", "10.244.0.7");
    let o = podnet(Some(&s), &["pod", "exec", "web", "--", "true"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("cannot enter pod web's network namespace"),
        "{err}"
    );
    assert!(err.contains("default.web"), "{err}");
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
    let s = server();
    // podnet's own namespace stands in for a pod's: entering it changes nothing.
    ok(podnet(
        Some(&s),
        &["pod", "attach", "host", "--netns", "/proc/self/ns/net"],
    ));
    set_running(&s, "host", "10.244.0.2");
    let o = podnet(
        Some(&s),
        &[
            "pod",
            "exec",
            "host",
            "--",
            "sh",
            "-c",
            "echo $POD_NAME $POD_NAMESPACE $POD_IP; exit 7",
        ],
    );
    if can_setns() {
        assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
        assert_eq!(stdout(&o), "host default 10.244.0.2\n");
        let o = podnet(Some(&s), &["pod", "exec", "host", "--", "/nonexistent/cmd"]);
        assert_eq!(o.status.code(), Some(127));
        assert!(stderr(&o).contains("cannot run \"/nonexistent/cmd\" in pod host"));
    } else {
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains("cannot enter"), "{}", stderr(&o));
    }
}
