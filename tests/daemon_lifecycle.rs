//! Root tests: lifecycles. A statefulset's pods come in order with stable
//! names and addresses; the daemon survives SIGKILL and SIGTERM restarts
//! with pods and services intact; `podnet reset` removes everything.

mod daemon_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use daemon_support::{alive, kill, serial, text, wait_for, whoami_server, Node};

#[test]
fn statefulset_pods_come_in_order_and_keep_name_and_address() {
    let _s = serial();
    let node = Node::start();
    let db = node.name("db");
    let dbsvc = node.name("dbsvc");
    let label = format!("app={db}");
    let vip = node.create_service(&dbsvc, &label, &["80:8080"], &[]);
    let mut args: Vec<String> = [
        "statefulset",
        "create",
        &db,
        "--replicas",
        "2",
        "--service",
        &dbsvc,
        "--label",
        &label,
        "--",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    args.extend(whoami_server(8080));
    node.podnet_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let p0 = format!("{db}-0");
    let p1 = format!("{db}-1");
    // Ordered: db-1 never exists before db-0 runs.
    let start = Instant::now();
    loop {
        let a = node.pod(&p0);
        let b = node.pod(&p1);
        if let Some(bv) = &b {
            let a = a
                .as_ref()
                .unwrap_or_else(|| panic!("{p1} exists before {p0}"));
            assert!(
                a["phase"] == "Running" || a["restarts"].as_u64() > Some(0),
                "{p1} created while {p0} is {}",
                a["phase"]
            );
            if bv["phase"] == "Running" {
                break;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "statefulset pods not running in 10 s: {a:?} {b:?}\n{}",
            node.daemon_log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let s = node.json(&["statefulset", "get", &db]);
    let pods: Vec<&str> = s["pods"]
        .as_array()
        .expect("pods")
        .iter()
        .filter_map(|p| p.as_str())
        .collect();
    assert_eq!(
        pods,
        vec![p0.as_str(), p1.as_str()],
        "statefulset pods: {s}"
    );
    let a0 = node.wait_running(&p0);
    let a1 = node.wait_running(&p1);
    let ip0 = a0["ip"].as_str().unwrap().to_string();
    let ip1 = a1["ip"].as_str().unwrap().to_string();
    assert!(
        a0["created"].as_u64() <= a1["created"].as_u64(),
        "{p0} created after {p1}"
    );
    assert_ne!(ip0, ip1);
    node.curl_until_ok(&node.ns, &format!("http://{ip0}:8080/"));
    node.curl_until_ok(&node.ns, &format!("http://{ip1}:8080/"));

    // Kill db-0 with SIGKILL: it comes back with the same name and address.
    let pid0 = a0["pid"].as_u64().unwrap() as u32;
    kill(pid0, "KILL");
    let back = wait_for(Duration::from_secs(10), || {
        node.pod(&p0).filter(|p| {
            p["phase"] == "Running" && p["pid"].as_u64().is_some_and(|pid| pid as u32 != pid0)
        })
    })
    .unwrap_or_else(|| {
        panic!(
            "{p0} did not come back in 10 s: {:?}\n{}",
            node.pod(&p0),
            node.daemon_log()
        )
    });
    assert_eq!(
        back["ip"].as_str(),
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
    assert_eq!(b1["ip"].as_str(), Some(ip1.as_str()));
    assert_eq!(b1["pid"], a1["pid"], "{p1} was restarted too");
    // The service has both endpoints again.
    let eps = wait_for(Duration::from_secs(5), || {
        let mut e = node.endpoints(&dbsvc);
        e.sort();
        (e.len() == 2).then_some(e)
    })
    .unwrap_or_else(|| panic!("endpoints {:?}", node.endpoints(&dbsvc)));
    let mut want = vec![format!("{ip0}:8080"), format!("{ip1}:8080")];
    want.sort();
    assert_eq!(eps, want);
    node.curl_until_ok(&node.ns, &format!("http://{vip}/"));
}

/// Pods, their addresses and pids as the daemon reports them.
fn snapshot(node: &Node) -> BTreeMap<String, (String, u64)> {
    let list = node.json(&["pod", "list"]);
    list.as_array()
        .expect("pod list is an array")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                (
                    p["ip"].as_str().unwrap_or("").to_string(),
                    p["pid"].as_u64().unwrap_or(0),
                ),
            )
        })
        .collect()
}

fn restart_keeps_pods_and_services(sig: &str) {
    let _s = serial();
    let mut node = Node::start();
    let web = node.name("web");
    let label = format!("app={web}");
    let mut args: Vec<String> = [
        "deployment",
        "create",
        &web,
        "--replicas",
        "2",
        "--label",
        &label,
        "--",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    args.extend(whoami_server(8080));
    node.podnet_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let solo = node.name("solo");
    node.run_pod(&solo, &[&label], &whoami_server(8080));
    let svc = node.name("svc");
    let vip = node.create_service(&svc, &label, &["80:8080"], &[]);
    let client = node.name("cli");
    node.run_pod(&client, &[], &["sleep".to_string(), "3600".to_string()]);
    node.wait_running(&client);
    wait_for(Duration::from_secs(10), || {
        (snapshot(&node).len() == 4 && node.endpoints(&svc).len() == 3).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "pods {:?} endpoints {:?}",
            snapshot(&node),
            node.endpoints(&svc)
        )
    });
    let before = snapshot(&node);
    for (name, (ip, _)) in &before {
        if name != &client {
            node.curl_until_ok(&client, &format!("http://{ip}:8080/"));
        }
    }
    node.curl_until_ok(&client, &format!("http://{vip}/"));
    let eps_before = {
        let mut e = node.endpoints(&svc);
        e.sort();
        e
    };

    let st = node.signal_daemon(sig, Duration::from_secs(10));
    assert!(st.is_some(), "podnetd did not exit within 10 s of SIG{sig}");
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
            alive(*pid as u32),
            "pod {name} (pid {pid}) died with the daemon (SIG{sig})"
        );
        assert!(
            node.pod_namespaces().contains(name),
            "namespace of {name} gone after SIG{sig}"
        );
    }

    let restarted = Instant::now();
    node.start_daemon();
    let after = snapshot(&node);
    // Reattached by name with the same flags as at creation.
    let offload = node.offload();
    assert_eq!(node.vnet_hdr(&node.ns, "podnet0"), offload, "podnet0");
    for name in before.keys() {
        assert_eq!(
            node.vnet_hdr(name, "eth0"),
            offload,
            "{name}'s eth0 reattached with other offload flags"
        );
    }
    assert_eq!(
        after,
        before,
        "after a SIG{sig} restart the pods (name -> ip, pid) changed\n{}",
        node.daemon_log()
    );
    // The service answers again within a few seconds, with the same VIP and endpoints.
    let svc_after = node.json(&["service", "get", &svc]);
    assert_eq!(svc_after["clusterIP"].as_str(), Some(vip.as_str()));
    let body = wait_for(Duration::from_secs(5), || {
        node.curl(&client, &format!("http://{vip}/"), 1).ok()
    })
    .unwrap_or_else(|| {
        panic!(
            "service {vip} did not answer within 5 s of the restart\n{}",
            node.daemon_log()
        )
    });
    eprintln!(
        "SIG{sig}: service answered {:?} after the restart ({body})",
        restarted.elapsed()
    );
    let mut eps = node.endpoints(&svc);
    eps.sort();
    assert_eq!(eps, eps_before, "endpoints changed across the restart");
    for i in 0..10 {
        node.curl(&client, &format!("http://{vip}/"), 2)
            .unwrap_or_else(|e| panic!("request {i} after the SIG{sig} restart: {e}"));
    }
    // Pod to pod and host to pod work again.
    for (name, (ip, _)) in &before {
        if name != &client {
            node.curl(&client, &format!("http://{ip}:8080/"), 2)
                .unwrap_or_else(|e| panic!("pod -> {name}: {e}"));
            node.curl(&node.ns, &format!("http://{ip}:8080/"), 2)
                .unwrap_or_else(|e| panic!("host -> {name}: {e}"));
        }
    }
    // The daemon still supervises the reattached pods: kill a deployment
    // pod, it is replaced.
    let d = node.json(&["deployment", "get", &web]);
    let victim = d["pods"][0].as_str().expect("a deployment pod").to_string();
    let (_, vpid) = before[&victim];
    kill(vpid as u32, "KILL");
    wait_for(Duration::from_secs(10), || {
        let s = snapshot(&node);
        let d = node.json(&["deployment", "get", &web]);
        let pods: Vec<String> = d["pods"]
            .as_array()?
            .iter()
            .filter_map(|p| p.as_str().map(String::from))
            .collect();
        (pods.len() == 2
            && !pods.contains(&victim)
            && pods
                .iter()
                .all(|p| s.get(p).is_some_and(|(_, pid)| *pid > 0)))
        .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "after the SIG{sig} restart, killed pod {victim} was not replaced: {}\n{}",
            node.json(&["deployment", "get", &web]),
            node.daemon_log()
        )
    });
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
    let mut args: Vec<String> = [
        "deployment",
        "create",
        &web,
        "--replicas",
        "2",
        "--label",
        &label,
        "--",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    args.extend(whoami_server(8080));
    node.podnet_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let db = node.name("db");
    let mut args: Vec<String> = [
        "statefulset",
        "create",
        &db,
        "--replicas",
        "1",
        "--service",
        &web,
        "--",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    args.extend(whoami_server(8080));
    node.podnet_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let solo = node.name("solo");
    node.run_pod(&solo, &[], &["sleep".to_string(), "3600".to_string()]);
    let svc = node.name("svc");
    node.create_service(&svc, &label, &["80:8080"], &[]);
    node.wait_running(&solo);
    node.wait_running(&format!("{db}-0"));
    let pods = wait_for(Duration::from_secs(10), || {
        let s = snapshot(&node);
        (s.len() == 4 && s.values().all(|(_, pid)| *pid > 0)).then_some(s)
    })
    .unwrap_or_else(|| panic!("four pods: {:?}", snapshot(&node)));
    assert_eq!(
        node.pod_namespaces().len(),
        4,
        "{:?}",
        node.pod_namespaces()
    );
    assert!(node.state_dir().exists());
    let (o, _) = node.exec_in(
        &node.ns,
        &["ip", "link", "show", "podnet0"],
        Duration::from_secs(3),
    );
    assert!(o.status.success(), "podnet0 exists before the reset");

    let out = node.podnet_ok(&["reset", "--force"]);
    eprintln!("reset: {out}");
    let st = node.wait_daemon_exit(Duration::from_secs(10));
    assert!(
        st.is_some(),
        "the daemon did not exit within 10 s of `podnet reset`\n{}",
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
            !alive(*pid as u32),
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
        !node.sock.exists(),
        "the API socket {} is still there",
        node.sock.display()
    );
    let (o, _) = node.exec_in(
        &node.ns,
        &["ip", "link", "show", "podnet0"],
        Duration::from_secs(3),
    );
    assert!(
        !o.status.success(),
        "podnet0 still exists after reset: {}",
        text(&o.stdout)
    );
    let (o, _) = node.exec_in(&node.ns, &["ip", "route", "show"], Duration::from_secs(3));
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
    let count = |prefix: &str| -> usize {
        let pods = node.json(&["pod", "list"]);
        pods.as_array()
            .map(|a| {
                a.iter()
                    .filter(|p| p["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
                    .count()
            })
            .unwrap_or(0)
    };
    let wait_count = |prefix: &str, n: usize| {
        wait_for(Duration::from_secs(10), || {
            (count(prefix) == n).then_some(())
        })
        .unwrap_or_else(|| panic!("{prefix}: expected {n} pods, have {}", count(prefix)));
    };
    let sleep = ["--", "sleep", "infinity"];
    let mut args = vec!["deployment", "create", &web, "--replicas", "2"];
    args.extend(sleep);
    node.podnet_ok(&args);
    wait_count(&format!("{web}-"), 2);
    node.podnet_ok(&["deployment", "scale", &web, "--replicas", "4"]);
    wait_count(&format!("{web}-"), 4);
    node.podnet_ok(&["deployment", "scale", &web, "--replicas", "1"]);
    wait_count(&format!("{web}-"), 1);
    let d = node.json(&["deployment", "get", &web]);
    assert_eq!(d["replicas"], 1, "{d}");

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
    let namespaces = node.pod_namespaces();
    assert!(
        !namespaces
            .iter()
            .any(|n| n == &format!("{db}-2") || n == &format!("{db}-1")),
        "scaled-away pods keep namespaces: {namespaces:?}"
    );

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
    node.curl_until_ok(&node.ns, &format!("http://{ip}:8080/"));
    assert!(node.signal_daemon("KILL", Duration::from_secs(5)).is_some());
    let run = |args: &[&str]| {
        let out = std::process::Command::new("ip")
            .args(args)
            .output()
            .expect("ip");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    run(&["-n", &web, "addr", "flush", "dev", "eth0"]);
    run(&["-n", &web, "route", "flush", "dev", "eth0"]);
    assert!(!run(&["-n", &web, "addr", "show", "dev", "eth0"]).contains(&ip));
    node.start_daemon();
    let repaired = wait_for(Duration::from_secs(5), || {
        run(&["-n", &web, "addr", "show", "dev", "eth0"])
            .contains(&ip)
            .then_some(())
    });
    assert!(repaired.is_some(), "eth0 address not restored");
    assert!(run(&["-n", &web, "route"]).contains("default dev eth0"));
    let body = node.curl_until_ok(&node.ns, &format!("http://{ip}:8080/"));
    assert_eq!(body, format!("{web} {ip}"));
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
        let (out, err, ok) = node.python(&client, &code, Duration::from_secs(30));
        assert!(ok, "bulk transfer through {vip} failed: {out}{err}");
        assert_eq!(out.trim(), BULK_BYTES.to_string(), "bytes received");
    };
    bulk(&node);
    assert!(node.vnet_hdr(&web, "eth0") && node.vnet_hdr(&node.ns, "podnet0"));

    assert!(node
        .signal_daemon("TERM", Duration::from_secs(10))
        .is_some());
    node.set_daemon_args(&["--no-offload"]);
    node.start_daemon();
    for pod in [&web, &client] {
        assert!(
            !node.vnet_hdr(pod, "eth0"),
            "{pod}'s eth0 still has offloads"
        );
    }
    assert!(!node.vnet_hdr(&node.ns, "podnet0"));
    // With a stale offload mask the daemon would read super-packets it
    // cannot frame, and this would fail.
    bulk(&node);
}
