//! Root tests: lifecycles. A statefulset's pods come in order with stable
//! names and addresses; the daemon survives SIGKILL and SIGTERM restarts
//! with pods (same processes), addresses and services intact; `podnet
//! reset` removes everything; workloads scale.

mod daemon_support;

use std::collections::BTreeMap;
use std::time::Duration;

use daemon_support::{
    alive, ip_of, kill, name_of, phase, pod_netns, restarts, running, serial, text, wait_for,
    whoami_server, Node, POD_START, RESTART, SETTLE,
};
use serde_json::Value;

fn sleeper() -> Vec<String> {
    vec!["sleep".into(), "3600".into()]
}

/// `podnet statefulset create NAME --replicas N --service SVC [--label L] -- CMD`.
fn create_statefulset(
    node: &Node,
    name: &str,
    replicas: u32,
    svc: &str,
    label: Option<&str>,
    cmd: &[String],
) {
    let n = replicas.to_string();
    let mut args: Vec<&str> = vec![
        "statefulset",
        "create",
        name,
        "--replicas",
        &n,
        "--service",
        svc,
    ];
    if let Some(l) = label {
        args.extend(["--label", l]);
    }
    args.push("--");
    args.extend(cmd.iter().map(String::as_str));
    node.podnet_ok(&args);
}

#[test]
fn statefulset_pods_come_in_order_and_keep_name_and_address() {
    let _s = serial();
    let node = Node::start();
    let db = node.name("db");
    let dbsvc = node.name("dbsvc");
    let label = format!("app={db}");
    let vip = node.create_service(&dbsvc, &label, &["80:8080"], &[]);
    create_statefulset(&node, &db, 2, &dbsvc, Some(&label), &whoami_server(8080));
    let p0 = format!("{db}-0");
    let p1 = format!("{db}-1");
    // Ordered: db-1 never exists before db-0 runs.
    let mut seen = Vec::new();
    wait_for(POD_START * 2, || {
        // db-1 first: a db-0 read after it is at least as new as the
        // moment db-1 was made (db-0 read first could be older).
        let b = node.pod(&p1);
        let a = node.pod(&p0);
        seen.push(format!(
            "{:?} {:?}",
            a.as_ref().map(|p| phase(p).to_string()),
            b.as_ref().map(|p| phase(p).to_string())
        ));
        let bv = b?;
        let a = a.unwrap_or_else(|| panic!("{p1} exists before {p0}"));
        assert!(
            running(&a) || restarts(&a) > 0,
            "{p1} created while {p0} is {}: {a}",
            phase(&a)
        );
        running(&bv).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "statefulset pods not running: {seen:?}\n{}",
            node.daemon_log()
        )
    });
    let st = wait_for(SETTLE, || {
        let s = node.json(&["statefulset", "get", &db]);
        (s["status"]["readyReplicas"] == 2).then_some(s)
    })
    .unwrap_or_else(|| {
        panic!(
            "statefulset never reported 2 ready replicas: {}",
            node.json(&["statefulset", "get", &db])
        )
    });
    assert_eq!(st["spec"]["serviceName"], dbsvc.as_str(), "{st}");
    let a0 = node.wait_running(&p0);
    let a1 = node.wait_running(&p1);
    let ip0 = ip_of(&a0).unwrap();
    let ip1 = ip_of(&a1).unwrap();
    let created = |p: &Value| {
        p["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    assert!(created(&a0) <= created(&a1), "{p0} created after {p1}");
    assert_ne!(ip0, ip1);
    node.curl_until_ok(&node.ns, &format!("http://{ip0}:8080/"));
    node.curl_until_ok(&node.ns, &format!("http://{ip1}:8080/"));

    // Kill db-0's process with SIGKILL: it is restarted in place (after the
    // kubelet's back-off), with the same name and address.
    let pid0 = node.pid_of(&a0);
    let pid1 = node.pid_of(&a1);
    kill(pid0, "KILL");
    let back = wait_for(RESTART, || {
        node.pod(&p0)
            .filter(|p| running(p) && restarts(p) >= 1 && node.pid_of(p) != pid0)
    })
    .unwrap_or_else(|| {
        panic!(
            "{p0} was not restarted: {:?}\n{}",
            node.pod(&p0),
            node.daemon_log()
        )
    });
    assert_eq!(
        ip_of(&back).as_deref(),
        Some(ip0.as_str()),
        "{p0} came back with another address: {back}"
    );
    let body = node.curl_until_ok(&node.ns, &format!("http://{ip0}:8080/"));
    assert_eq!(
        body,
        format!("{p0} {ip0}"),
        "the new {p0} answers on the old address"
    );
    // db-1 untouched.
    let b1 = node.wait_running(&p1);
    assert_eq!(ip_of(&b1), Some(ip1.clone()));
    assert_eq!(node.pid_of(&b1), pid1, "{p1} was restarted too");
    assert_eq!(restarts(&b1), 0, "{b1}");
    // The service has both endpoints again.
    node.wait_endpoints(&dbsvc, "both pods are endpoints", |e| {
        let mut want = vec![format!("{ip0}:8080"), format!("{ip1}:8080")];
        want.sort();
        e == want
    });
    node.curl_until_ok(&node.ns, &format!("http://{vip}/"));

    // Delete db-1: the statefulset makes a new pod of the same name, which
    // keeps the address. (`--wait=false`: whether `pod delete` returns when
    // the old pod is gone although a new one took its name is
    // daemon_cli's `delete_waits_for_the_pod_not_for_its_replacement`.)
    let uid1 = b1["metadata"]["uid"].clone();
    node.podnet_ok(&["pod", "delete", &p1, "--wait=false"]);
    let new1 = wait_for(POD_START, || {
        node.pod(&p1)
            .filter(|p| running(p) && p["metadata"]["uid"] != uid1)
    })
    .unwrap_or_else(|| {
        panic!(
            "{p1} was not recreated: {:?}\n{}",
            node.pod(&p1),
            node.daemon_log()
        )
    });
    assert_eq!(
        ip_of(&new1).as_deref(),
        Some(ip1.as_str()),
        "the recreated {p1} has another address: {new1}"
    );
    let body = node.curl_until_ok(&node.ns, &format!("http://{ip1}:8080/"));
    assert_eq!(body, format!("{p1} {ip1}"));
}

/// Pods, their addresses and pids as the daemon reports them, once every
/// pod runs.
fn snapshot(node: &Node) -> BTreeMap<String, (String, u32)> {
    node.pods()
        .iter()
        .map(|p| {
            let pid = if running(p) { node.pid_of(p) } else { 0 };
            (name_of(p), (ip_of(p).unwrap_or_default(), pid))
        })
        .collect()
}

/// Waits until `n` pods exist and all run; their snapshot.
fn running_snapshot(node: &Node, n: usize) -> BTreeMap<String, (String, u32)> {
    wait_for(POD_START, || {
        let pods = node.pods();
        (pods.len() == n && pods.iter().all(running)).then(|| snapshot(node))
    })
    .unwrap_or_else(|| {
        panic!(
            "not {n} running pods: {:?}\n{}",
            node.pods()
                .iter()
                .map(|p| (name_of(p), phase(p).to_string()))
                .collect::<Vec<_>>(),
            node.daemon_log()
        )
    })
}

fn restart_keeps_pods_and_services(sig: &str) {
    let _s = serial();
    let mut node = Node::start();
    let web = node.name("web");
    let label = format!("app={web}");
    node.create_deployment(&web, 2, &whoami_server(8080));
    let solo = node.name("solo");
    node.run_pod(&solo, &[&label], &whoami_server(8080));
    let svc = node.name("svc");
    let vip = node.create_service(&svc, &label, &["80:8080"], &[]);
    let client = node.name("cli");
    let client_ns = pod_netns(&client);
    node.run_pod(&client, &[], &sleeper());
    node.wait_running(&client);
    let before = running_snapshot(&node, 4);
    node.wait_endpoints(&svc, "three endpoints", |e| e.len() == 3);
    for (name, (ip, _)) in &before {
        if name != &client {
            node.curl_until_ok(&client_ns, &format!("http://{ip}:8080/"));
        }
    }
    node.curl_until_ok(&client_ns, &format!("http://{vip}/"));
    let eps_before = node.endpoints(&svc);

    let st = node.signal_daemon(sig, Duration::from_secs(30));
    assert!(st.is_some(), "podnetd did not exit within 30 s of SIG{sig}");
    if sig == "TERM" {
        assert!(
            st.unwrap().success(),
            "podnetd exit status after SIGTERM: {st:?}\n{}",
            node.daemon_log()
        );
    }
    // Pods are still alive, in their namespaces, while the daemon is down.
    for (name, (_, pid)) in &before {
        assert!(
            alive(*pid),
            "pod {name} (pid {pid}) died with the daemon (SIG{sig})"
        );
        assert!(
            node.pod_namespaces().contains(&pod_netns(name)),
            "namespace of {name} gone after SIG{sig}"
        );
    }

    node.start_daemon();
    // The same pods, addresses and processes: adopted, not restarted.
    let after = running_snapshot(&node, 4);
    assert_eq!(
        after,
        before,
        "after a SIG{sig} restart the pods (name -> ip, pid) changed\n{}",
        node.daemon_log()
    );
    for p in node.pods() {
        assert_eq!(
            restarts(&p),
            0,
            "{} restarted across the daemon restart",
            name_of(&p)
        );
    }
    // Reattached with the same offload flags as at creation.
    let offload = node.offload();
    assert!(node.wait_vnet_hdr(&node.ns, "podnet0", offload), "podnet0");
    for name in before.keys() {
        assert!(
            node.wait_vnet_hdr(&pod_netns(name), "eth0", offload),
            "{name}'s eth0 reattached with other offload flags"
        );
    }
    // The service answers again, with the same VIP and endpoints.
    let svc_after = node.json(&["service", "get", &svc]);
    assert_eq!(svc_after["spec"]["clusterIP"].as_str(), Some(vip.as_str()));
    node.curl_until_ok(&client_ns, &format!("http://{vip}/"));
    node.wait_endpoints(&svc, "the endpoints of before the restart", |e| {
        e == eps_before
    });
    for i in 0..10 {
        node.curl(&client_ns, &format!("http://{vip}/"), 5)
            .unwrap_or_else(|e| panic!("request {i} after the SIG{sig} restart: {e}"));
    }
    // Pod to pod and host to pod work again.
    for (name, (ip, _)) in &before {
        if name != &client {
            node.curl(&client_ns, &format!("http://{ip}:8080/"), 5)
                .unwrap_or_else(|e| panic!("pod -> {name}: {e}"));
            node.curl(&node.ns, &format!("http://{ip}:8080/"), 5)
                .unwrap_or_else(|e| panic!("host -> {name}: {e}"));
        }
    }
    // The daemon still supervises the adopted pods: kill a deployment
    // pod's process, it is restarted in place.
    let victim = before
        .keys()
        .find(|n| n.starts_with(&format!("{web}-")))
        .expect("a deployment pod")
        .clone();
    let (victim_ip, victim_pid) = before[&victim].clone();
    kill(victim_pid, "KILL");
    let back = wait_for(RESTART, || {
        node.pod(&victim)
            .filter(|p| running(p) && restarts(p) >= 1 && node.pid_of(p) != victim_pid)
    })
    .unwrap_or_else(|| {
        panic!(
            "after the SIG{sig} restart, killed pod {victim} was not restarted: {:?}\n{}",
            node.pod(&victim),
            node.daemon_log()
        )
    });
    assert_eq!(ip_of(&back), Some(victim_ip.clone()), "{back}");
    node.curl_until_ok(&client_ns, &format!("http://{victim_ip}:8080/"));
}

#[test]
fn daemon_sigkill_and_restart_keeps_pods_addresses_and_services() {
    restart_keeps_pods_and_services("KILL");
}

#[test]
fn daemon_sigterm_and_restart_keeps_pods_addresses_and_services() {
    restart_keeps_pods_and_services("TERM");
}

#[test]
fn reset_removes_everything() {
    let _s = serial();
    let mut node = Node::start();
    let web = node.name("web");
    let label = format!("app={web}");
    node.create_deployment(&web, 2, &whoami_server(8080));
    let db = node.name("db");
    create_statefulset(&node, &db, 1, &web, None, &whoami_server(8080));
    let solo = node.name("solo");
    node.run_pod(&solo, &[], &sleeper());
    let svc = node.name("svc");
    node.create_service(&svc, &label, &["80:8080"], &[]);
    let pods = running_snapshot(&node, 4);
    assert_eq!(
        node.pod_namespaces().len(),
        4,
        "{:?}",
        node.pod_namespaces()
    );
    assert!(node.state_dir().exists());
    assert!(node.kubeconfig.exists(), "no admin kubeconfig was written");
    let (o, _) = node.exec_in(
        &node.ns,
        &["ip", "link", "show", "podnet0"],
        Duration::from_secs(5),
    );
    assert!(o.status.success(), "podnet0 exists before the reset");

    let out = node.podnet_ok(&["reset", "--force"]);
    assert!(
        out.starts_with("reset: removed 4 pods, 1 deployments, 1 statefulsets, 1 services"),
        "reset: {out}"
    );
    let st = node.wait_daemon_exit(Duration::from_secs(60));
    assert!(
        st.is_some(),
        "the daemon did not exit within 60 s of `podnet reset`\n{}",
        node.daemon_log()
    );
    assert!(
        st.unwrap().success(),
        "daemon exit status after reset: {st:?}"
    );
    assert!(
        node.pod_namespaces().is_empty(),
        "pod namespaces left after reset: {:?}",
        node.pod_namespaces()
    );
    for (name, (_, pid)) in &pods {
        assert!(
            !alive(*pid),
            "pod {name}'s process {pid} survived the reset"
        );
    }
    let state = node.state_dir();
    if state.exists() {
        let left: Vec<String> = std::fs::read_dir(state)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path().display().to_string()))
            .collect();
        assert!(left.is_empty(), "state dir not empty after reset: {left:?}");
    }
    assert!(
        !node.kubeconfig.exists(),
        "the admin kubeconfig {} is still there",
        node.kubeconfig.display()
    );
    assert!(
        !node.sock.exists(),
        "the API socket {} is still there",
        node.sock.display()
    );
    let (o, _) = node.exec_in(
        &node.ns,
        &["ip", "link", "show", "podnet0"],
        Duration::from_secs(5),
    );
    assert!(
        !o.status.success(),
        "podnet0 still exists after reset: {}",
        text(&o.stdout)
    );
    let (o, _) = node.exec_in(&node.ns, &["ip", "route", "show"], Duration::from_secs(5));
    let routes = text(&o.stdout);
    assert!(
        !routes.contains("10.244.") && !routes.contains("10.96."),
        "routes left after reset: {routes}"
    );
}

/// Scaling and deleting workloads: a deployment grows and shrinks to the
/// asked number of pods; a statefulset scaled down removes its highest
/// ordinals and their namespaces; deleting either removes its pods.
#[test]
fn workloads_scale_up_and_down_and_delete_their_pods() {
    let _s = serial();
    let node = Node::start();
    let web = node.name("web");
    let db = node.name("db");
    // Pods listed (terminating ones too: a pod is gone once its processes are).
    let count = |prefix: &str| -> usize {
        node.pods()
            .iter()
            .filter(|p| name_of(p).starts_with(prefix))
            .count()
    };
    let wait_count = |prefix: &str, n: usize| {
        wait_for(POD_START, || (count(prefix) == n).then_some(()))
            .unwrap_or_else(|| panic!("{prefix}: expected {n} pods, have {}", count(prefix)));
    };
    let sleep = ["--", "sleep", "infinity"];
    let mut args = vec!["deployment", "create", &web, "--replicas", "2"];
    args.extend(sleep);
    assert_eq!(
        node.podnet_ok(&args),
        format!("deployment.apps/{web} created\n")
    );
    wait_count(&format!("{web}-"), 2);
    assert_eq!(
        node.podnet_ok(&["deployment", "scale", &web, "--replicas", "4"]),
        format!("deployment.apps/{web} scaled\n")
    );
    wait_count(&format!("{web}-"), 4);
    node.podnet_ok(&["deployment", "scale", &web, "--replicas", "1"]);
    wait_count(&format!("{web}-"), 1);
    let d = node.json(&["deployment", "get", &web]);
    assert_eq!(d["spec"]["replicas"], 1, "{d}");
    // The default label app=NAME selects the pods.
    assert_eq!(
        d["spec"]["selector"]["matchLabels"]["app"],
        web.as_str(),
        "{d}"
    );
    assert_eq!(node.pods_labelled(&format!("app={web}")).len(), 1);

    let mut args = vec![
        "statefulset",
        "create",
        &db,
        "--replicas",
        "3",
        "--service",
        "none",
    ];
    args.extend(sleep);
    node.podnet_ok(&args);
    wait_count(&format!("{db}-"), 3);
    node.podnet_ok(&["statefulset", "scale", &db, "--replicas", "1"]);
    wait_count(&format!("{db}-"), 1);
    assert!(
        node.pod(&format!("{db}-0")).is_some(),
        "the lowest ordinal stays"
    );
    let gone = [pod_netns(&format!("{db}-1")), pod_netns(&format!("{db}-2"))];
    wait_for(SETTLE, || {
        (!node.pod_namespaces().iter().any(|n| gone.contains(n))).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "scaled-away pods keep namespaces: {:?}",
            node.pod_namespaces()
        )
    });

    node.podnet_ok(&["deployment", "delete", &web]);
    node.podnet_ok(&["statefulset", "delete", &db]);
    wait_count(&format!("{web}-"), 0);
    wait_count(&format!("{db}-"), 0);
    let out = node.podnet(&["deployment", "get", &web]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not found"),
        "{}",
        text(&out.stderr)
    );
    wait_for(SETTLE, || node.pod_namespaces().is_empty().then_some(()))
        .unwrap_or_else(|| panic!("namespaces left: {:?}", node.pod_namespaces()));
}

/// A pod whose eth0 lost its address and route while the daemon was down
/// (someone ran `ip addr flush` in it) is repaired when the daemon finds it
/// again after a restart.
#[test]
fn a_restart_repairs_a_pods_eth0() {
    let _s = serial();
    let mut node = Node::start();
    let web = node.name("rep");
    node.run_pod(&web, &[], &whoami_server(8080));
    let ip = node.pod_ip(&web);
    let pid = node.pod_pid(&web);
    let web_ns = pod_netns(&web);
    node.curl_until_ok(&node.ns, &format!("http://{ip}:8080/"));
    assert!(node
        .signal_daemon("KILL", Duration::from_secs(30))
        .is_some());
    let run = |args: &[&str]| {
        let out = std::process::Command::new("ip")
            .args(args)
            .output()
            .expect("ip");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    run(&["-n", &web_ns, "addr", "flush", "dev", "eth0"]);
    run(&["-n", &web_ns, "route", "flush", "dev", "eth0"]);
    assert!(!run(&["-n", &web_ns, "addr", "show", "dev", "eth0"]).contains(&ip));
    node.start_daemon();
    let repaired = wait_for(SETTLE, || {
        run(&["-n", &web_ns, "addr", "show", "dev", "eth0"])
            .contains(&ip)
            .then_some(())
    });
    assert!(repaired.is_some(), "eth0 address not restored");
    assert!(run(&["-n", &web_ns, "route"]).contains("default dev eth0"));
    let body = node.curl_until_ok(&node.ns, &format!("http://{ip}:8080/"));
    assert_eq!(body, format!("{web} {ip}"));
    // Repaired, not replaced: the same process answers.
    assert_eq!(node.pod_pid(&web), pid, "the pod's process was replaced");
}

/// A pod server that sends `BULK_BYTES` to every connection on port 9000.
fn bulk_server() -> Vec<String> {
    let code = format!(
        r#"import socket, threading
data = bytes(range(256)) * ({BULK_BYTES} // 256)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("", 9000))
s.listen(8)
def serve(c):
    c.sendall(data)
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,)).start()
"#
    );
    vec!["python3".into(), "-c".into(), code]
}

const BULK_BYTES: usize = 8 << 20;

/// Offloads are a daemon setting, not a device's: a daemon restarted with
/// `--no-offload` reattaches the pods' devices without virtio-net headers
/// (and clears their offload mask, or the kernel would still hand it
/// super-packets), and traffic keeps working, bulk TCP included.
#[test]
fn a_restart_with_offloads_off_reattaches_pods_without_them() {
    let _s = serial();
    let mut node = Node::start_with(&[]);
    let web = node.name("off");
    let label = format!("app={web}");
    node.run_pod(&web, &[&label], &bulk_server());
    let client = node.name("cli");
    node.run_pod(&client, &[], &["sleep".to_string(), "3600".to_string()]);
    node.wait_running(&client);
    node.wait_running(&web);
    let svc = node.name("svc");
    let vip = node.create_service(&svc, &label, &["80:9000"], &[]);
    // Bulk TCP from the pod through the service, counted by the client.
    let code = format!(
        r#"import socket, time
for attempt in range(100):
    try:
        s = socket.create_connection(("{vip}", 80), timeout=10)
        break
    except OSError:
        time.sleep(0.1)
n = 0
while True:
    b = s.recv(1 << 20)
    if not b:
        break
    n += len(b)
print(n)
"#
    );
    let bulk = |node: &Node| {
        let (out, err, ok) = node.python(&pod_netns(&client), &code, Duration::from_secs(60));
        assert!(ok, "bulk transfer through {vip} failed: {out}{err}");
        assert_eq!(out.trim(), BULK_BYTES.to_string(), "bytes received");
    };
    bulk(&node);
    assert!(node.vnet_hdr(&pod_netns(&web), "eth0") && node.vnet_hdr(&node.ns, "podnet0"));

    assert!(node
        .signal_daemon("TERM", Duration::from_secs(30))
        .is_some());
    node.set_daemon_args(&["--no-offload"]);
    node.start_daemon();
    for pod in [&web, &client] {
        assert!(
            node.wait_vnet_hdr(&pod_netns(pod), "eth0", false),
            "{pod}'s eth0 still has offloads"
        );
    }
    assert!(node.wait_vnet_hdr(&node.ns, "podnet0", false));
    // With a stale offload mask the daemon would read super-packets it
    // cannot frame, and this would fail.
    bulk(&node);
}

/// Two daemons on one host (two nodes of a test topology, or a test beside
/// a real node): one starting, and one being reset, leave the other's pods
/// (their network namespaces `default.NAME` and processes) alone.
#[test]
fn a_daemon_leaves_another_daemons_pods_alone() {
    let _s = serial();
    let a = Node::start();
    let pod = a.name("mine");
    a.run_pod(&pod, &[], &sleeper());
    let pid = a.pod_pid(&pod);
    let ns = pod_netns(&pod);
    assert!(a.pod_namespaces().contains(&ns));

    let mut b = Node::start();
    let other = b.name("theirs");
    b.run_pod(&other, &[], &sleeper());
    b.wait_running(&other);
    assert!(
        a.pod_namespaces().contains(&ns) && alive(pid),
        "starting another daemon removed {ns} or killed its process {pid}\n{}",
        b.daemon_log()
    );
    b.podnet_ok(&["reset", "--force"]);
    assert!(b.wait_daemon_exit(Duration::from_secs(60)).is_some());
    assert!(
        a.pod_namespaces().contains(&ns) && alive(pid),
        "resetting another daemon removed {ns} or killed its process {pid}"
    );
    let p = a.wait_running(&pod);
    assert_eq!(a.pid_of(&p), pid);
    assert_eq!(restarts(&p), 0);
}

/// Spawns `sleep 3600` as process `pid` (the number a dead process had),
/// by setting the kernel's last handed-out pid just below it; None when
/// another process takes the number first every time.
fn spawn_with_pid(pid: u32) -> Option<std::process::Child> {
    for _ in 0..100 {
        if let Err(e) = std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()) {
            eprintln!("cannot set the last pid: {e}");
            return None;
        }
        let mut child = std::process::Command::new("sleep")
            .arg("3600")
            .spawn()
            .ok()?;
        if child.id() == pid {
            return Some(child);
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    None
}

/// A pod's process dies while the daemon is down and an unrelated process
/// gets its pid: the restarted daemon neither takes that process for the
/// pod (the pod's container is started again) nor signals it when the pod
/// is deleted.
#[test]
fn a_reused_pid_is_never_taken_for_the_pod_nor_signalled() {
    let _s = serial();
    let mut node = Node::start();
    let p = node.name("reuse");
    node.run_pod(&p, &[], &["sleep".into(), "3600".into()]);
    let pod = node.wait_running(&p);
    let pid = node.pid_of(&pod);
    node.signal_daemon("KILL", Duration::from_secs(30))
        .expect("podnetd did not die of SIGKILL");
    kill(pid, "KILL");
    // Gone and reaped: its number free again.
    let gone = || !std::path::Path::new(&format!("/proc/{pid}")).exists();
    assert!(
        wait_for(Duration::from_secs(30), || gone().then_some(())).is_some(),
        "the pod's process {pid} did not die"
    );
    let mut impostor =
        spawn_with_pid(pid).unwrap_or_else(|| panic!("no process could be started as pid {pid}"));

    node.start_daemon();
    let restarted = wait_for(POD_START, || {
        node.pod(&p)
            .filter(|pod| running(pod) && node.pid_of(pod) != pid)
    });
    let still_alive = alive(pid);
    let _ = node.podnet(&["pod", "delete", &p]);
    let alive_after_delete = alive(pid);
    let _ = impostor.kill();
    let _ = impostor.wait();
    assert!(
        restarted.is_some(),
        "the pod was not started again: {:?}\n{}",
        node.pod(&p),
        node.daemon_log()
    );
    assert!(
        still_alive,
        "the process that reused pid {pid} was killed at restart"
    );
    assert!(
        alive_after_delete,
        "deleting the pod killed the unrelated process with its old pid {pid}"
    );
}

/// The soft and hard "Max open files" of a process, from /proc.
fn open_files_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    let mut f = line["Max open files".len()..].split_whitespace();
    (f.next().unwrap().into(), f.next().unwrap().into())
}

#[test]
fn a_daemon_started_with_a_low_open_files_limit_raises_it_and_runs_its_pods() {
    let _s = serial();
    let mut node = Node::start();
    node.signal_daemon("TERM", RESTART).expect("daemon stopped");
    // A service manager's default soft limit is 1,024; each pod holds a few
    // descriptors in the daemon (its eth0, its process's pidfd, its
    // namespaces), so a few hundred pods would use it up. 64 here.
    node.set_open_files_limit(Some(64));
    node.start_daemon();
    let pid = node.daemon_pid();
    let (soft, hard) = open_files_limits(pid);
    assert_eq!(
        soft, hard,
        "the daemon raises its soft limit to the hard one"
    );
    let web = node.name("web");
    let mut args = vec!["deployment", "create", &web, "--replicas", "30", "--"];
    let cmd = sleeper();
    args.extend(cmd.iter().map(String::as_str));
    node.podnet_ok(&args);
    let prefix = format!("{web}-");
    let all_running = wait_for(POD_START * 3, || {
        let pods = node.pods();
        let mine: Vec<_> = pods
            .iter()
            .filter(|p| name_of(p).starts_with(&prefix))
            .collect();
        (mine.len() == 30 && mine.iter().all(|p| running(p))).then_some(())
    });
    assert!(
        all_running.is_some(),
        "30 pods did not all run; log:\n{}",
        node.daemon_log()
    );
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd dir")
        .count();
    assert!(
        open > 64,
        "the daemon holds {open} descriptors: the test must need more than the limit it was started with"
    );
}
