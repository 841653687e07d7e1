//! Root tests: services over changing pods. Endpoints follow labels; load
//! spreads over three replicas; ClientIP affinity sticks; a SIGKILLed
//! replica leaves the endpoints while requests keep succeeding and is
//! restarted in place; a deleted replica is replaced (new name, new
//! address); a client blocked on a dying pod gets a reset, not a hang; a
//! UDP flow to a dead backend is re-pinned.

mod daemon_support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use daemon_support::{
    ip_of, kill, pod_netns, restarts, running, serial, text, wait_for, whoami_server, Node,
    RESTART, SETTLE,
};
use podnet::api::ApiClient;

fn sleeper() -> Vec<String> {
    vec!["sleep".into(), "3600".into()]
}

/// Creates a deployment of `n` whoami servers on 8080 labelled `app=NAME`
/// and waits for `n` running pods; returns (name -> ip).
fn deployment(node: &Node, name: &str, n: u32) -> BTreeMap<String, String> {
    node.create_deployment(name, n, &whoami_server(8080));
    node.deployment_pods(name, n as usize)
}

/// Who answered: the pod name in a whoami body.
fn who(body: &str) -> String {
    body.split_whitespace().next().unwrap_or("").to_string()
}

/// Sets a pod's labels with a JSON merge patch (as `kubectl label` does).
fn relabel(node: &Node, pod: &str, labels: serde_json::Value) {
    let body = serde_json::to_vec(&serde_json::json!({"metadata": {"labels": labels}})).unwrap();
    ApiClient::new(&node.sock)
        .request_typed(
            "PATCH",
            &format!("/api/v1/namespaces/default/pods/{pod}"),
            "application/merge-patch+json",
            Some(&body),
        )
        .unwrap_or_else(|e| panic!("relabel {pod}: {e}"));
}

#[test]
fn endpoints_follow_labels() {
    let _s = serial();
    let node = Node::start();
    let app = node.name("app");
    let svc = node.name("svc");
    node.create_service(&svc, &format!("app={app},tier=web"), &["80:8080"], &[]);
    assert!(node.endpoints(&svc).is_empty());

    let yes = node.name("yes");
    let no = node.name("no");
    let other = node.name("oth");
    node.run_pod(
        &yes,
        &[&format!("app={app}"), "tier=web", "extra=1"],
        &whoami_server(8080),
    );
    node.run_pod(
        &no,
        &[&format!("app={app}"), "tier=db"],
        &whoami_server(8080),
    );
    node.run_pod(&other, &[], &whoami_server(8080));
    let yes_ip = node.pod_ip(&yes);
    let no_ip = node.pod_ip(&no);
    node.wait_running(&other);
    let eps = node.wait_endpoints(&svc, "the matching pod joins", |e| !e.is_empty());
    assert_eq!(
        eps,
        vec![format!("{yes_ip}:8080")],
        "only the matching pod is an endpoint (not {no_ip})"
    );

    // A second matching pod joins.
    let yes2 = node.name("yes");
    node.run_pod(
        &yes2,
        &[&format!("app={app}"), "tier=web"],
        &whoami_server(8080),
    );
    let yes2_ip = node.pod_ip(&yes2);
    let mut want = vec![format!("{yes_ip}:8080"), format!("{yes2_ip}:8080")];
    want.sort();
    node.wait_endpoints(&svc, "the second pod joins", |e| e == want);

    // A pod whose labels stop matching leaves; one whose labels start
    // matching joins.
    relabel(&node, &yes2, serde_json::json!({"tier": "db"}));
    relabel(&node, &no, serde_json::json!({"tier": "web"}));
    let mut want = vec![format!("{yes_ip}:8080"), format!("{no_ip}:8080")];
    want.sort();
    node.wait_endpoints(&svc, "endpoints follow the new labels", |e| e == want);
    // ... and the fast path follows: the service reaches only those two.
    let client = node.name("cli");
    node.run_pod(&client, &[], &sleeper());
    node.wait_running(&client);
    let vip = node.json(&["service", "get", &svc])["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    for i in 0..10 {
        let body = wait_for(SETTLE, || {
            node.curl(&pod_netns(&client), &format!("http://{vip}/"), 5)
                .ok()
        })
        .unwrap_or_else(|| panic!("request {i} through {vip} never answered"));
        assert!(
            who(&body) == yes || who(&body) == no,
            "request {i} answered by {body}, which does not match the selector"
        );
    }

    // A deleted pod leaves.
    node.podnet_ok(&["pod", "delete", &yes]);
    node.wait_endpoints(&svc, "the deleted pod leaves", |e| {
        e == [format!("{no_ip}:8080")]
    });
}

#[test]
fn load_spreads_over_three_replicas_and_client_ip_affinity_sticks() {
    let _s = serial();
    let node = Node::start();
    let web = node.name("web");
    let pods = deployment(&node, &web, 3);
    for p in pods.keys() {
        let rest = p.strip_prefix(&format!("{web}-")).unwrap_or("");
        assert!(
            rest.split('-').count() == 2 && rest.split('-').all(|s| !s.is_empty()),
            "deployment pod name {p} is not {web}-HASH-xxxxx"
        );
    }
    let ips: BTreeSet<&String> = pods.values().collect();
    assert_eq!(ips.len(), 3, "three distinct addresses: {pods:?}");
    let svc = node.name("svc");
    let vip = node.create_service(&svc, &format!("app={web}"), &["80:8080"], &[]);
    let sticky = node.name("sticky");
    let sticky_vip = node.create_service(
        &sticky,
        &format!("app={web}"),
        &["80:8080"],
        &["--session-affinity", "ClientIP"],
    );
    assert_eq!(
        node.json(&["service", "get", &sticky])["spec"]["sessionAffinity"],
        "ClientIP"
    );
    let client = node.name("cli");
    let client_ns = pod_netns(&client);
    node.run_pod(&client, &[], &sleeper());
    node.wait_running(&client);
    // Every replica ready (answers by IP) before counting.
    for ip in pods.values() {
        node.curl_until_ok(&client_ns, &format!("http://{ip}:8080/"));
    }
    node.wait_endpoints(&svc, "three endpoints", |e| e.len() == 3);
    node.wait_endpoints(&sticky, "three endpoints", |e| e.len() == 3);

    let mut seen = BTreeSet::new();
    let mut answers = Vec::new();
    for i in 0..60 {
        let body = node
            .curl(&client_ns, &format!("http://{vip}/"), 5)
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        let w = who(&body);
        assert!(
            pods.contains_key(&w),
            "answer from {w:?} is no replica: {body}"
        );
        seen.insert(w.clone());
        answers.push(w);
        if seen.len() == 3 {
            break;
        }
    }
    assert_eq!(
        seen.len(),
        3,
        "not all three replicas answered within 60 requests: {answers:?}"
    );

    // ClientIP affinity: one client, 20 requests, one pod.
    let mut sticky_seen = BTreeSet::new();
    for i in 0..20 {
        let body = node
            .curl(&client_ns, &format!("http://{sticky_vip}/"), 5)
            .unwrap_or_else(|e| panic!("sticky request {i}: {e}"));
        sticky_seen.insert(who(&body));
    }
    assert_eq!(
        sticky_seen.len(),
        1,
        "ClientIP affinity: 20 requests from one client hit {sticky_seen:?}"
    );
}

/// A replica whose process is SIGKILLed leaves the endpoints (requests go
/// to the others) and is restarted in place, same name and address; a
/// deleted replica is replaced by a new pod with a new name and address.
#[test]
fn killed_replica_leaves_the_service_and_a_deleted_one_is_replaced() {
    let _s = serial();
    let node = Node::start();
    let web = node.name("web");
    let pods = deployment(&node, &web, 3);
    let svc = node.name("svc");
    let vip = node.create_service(&svc, &format!("app={web}"), &["80:8080"], &[]);
    let client = node.name("cli");
    let client_ns = pod_netns(&client);
    node.run_pod(&client, &[], &sleeper());
    node.wait_running(&client);
    for ip in pods.values() {
        node.curl_until_ok(&client_ns, &format!("http://{ip}:8080/"));
    }
    node.wait_endpoints(&svc, "three endpoints", |e| e.len() == 3);
    let url = format!("http://{vip}/");
    node.curl_until_ok(&client_ns, &url);

    let (victim, victim_ip) = pods
        .iter()
        .next()
        .map(|(a, b)| (a.clone(), b.clone()))
        .unwrap();
    let victim_pid = node.pod_pid(&victim);
    kill(victim_pid, "KILL");

    // The dead replica leaves the endpoints (the kubelet restarts it only
    // after a back-off), and meanwhile every request succeeds.
    let victim_ep = format!("{victim_ip}:8080");
    node.wait_endpoints(&svc, "the dead replica leaves", |e| {
        e.len() == 2 && !e.contains(&victim_ep)
    });
    for i in 0..20 {
        let body = node.curl(&client_ns, &url, 5).unwrap_or_else(|e| {
            panic!(
                "request {i} of 20 after the dead endpoint left failed: {e}\nendpoints {:?}",
                node.endpoints(&svc)
            )
        });
        assert!(pods.contains_key(&who(&body)), "{body}");
    }

    // Restarted in place: same pod, same address, a new process.
    let back = wait_for(RESTART, || {
        node.pod(&victim)
            .filter(|p| running(p) && restarts(p) >= 1 && node.pid_of(p) != victim_pid)
    })
    .unwrap_or_else(|| {
        panic!(
            "the killed pod {victim} was not restarted: {:?}\n{}",
            node.pod(&victim),
            node.daemon_log()
        )
    });
    assert_eq!(ip_of(&back), Some(victim_ip.clone()), "{back}");
    node.wait_endpoints(&svc, "the restarted pod is an endpoint again", |e| {
        e.len() == 3 && e.contains(&victim_ep)
    });
    assert_eq!(
        node.deployment_pods(&web, 3),
        pods,
        "the deployment's pods changed"
    );

    // Delete a replica: the deployment replaces it with a new pod, a new
    // name and an address no other pod had.
    node.podnet_ok(&["pod", "delete", &victim]);
    let now = wait_for(RESTART, || {
        let now = node.deployment_pods(&web, 3);
        (!now.contains_key(&victim)).then_some(now)
    })
    .unwrap_or_else(|| panic!("the deleted pod {victim} was not replaced"));
    let new: Vec<(&String, &String)> = now.iter().filter(|(n, _)| !pods.contains_key(*n)).collect();
    assert_eq!(
        new.len(),
        1,
        "exactly one replacement: before {pods:?}, after {now:?}"
    );
    let old_ips: BTreeSet<&String> = pods.values().collect();
    assert!(
        !old_ips.contains(new[0].1),
        "the replacement took an address in use or just freed: {now:?}"
    );
    // ... serves through the service, and the deleted one is no endpoint.
    let want = new[0].0.clone();
    wait_for(SETTLE, || {
        (0..10).find_map(|_| {
            node.curl(&client_ns, &url, 3)
                .ok()
                .filter(|b| who(b) == want)
        })
    })
    .unwrap_or_else(|| panic!("the replacement {want} never answered through the service"));
    assert!(
        !node.endpoints(&svc).contains(&victim_ep),
        "the deleted pod is still an endpoint"
    );
    for i in 0..20 {
        node.curl(&client_ns, &url, 5)
            .unwrap_or_else(|e| panic!("request {i} after the replacement: {e}"));
    }
}

/// A server that accepts and holds each connection without reading or
/// answering.
fn holder() -> Vec<String> {
    vec![
        "python3".into(),
        "-c".into(),
        r#"import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("", 8080)); s.listen(16)
held = []
while True:
    c, a = s.accept(); held.append(c)
"#
        .into(),
    ]
}

/// Client: connects to VIP:80, sends a request, prints "sent", then blocks
/// on recv (30 s limit, far longer than a reset takes) and prints what
/// happened.
fn blocked_client(vip: &str) -> String {
    format!(
        r#"import socket, sys
s = socket.create_connection(("{vip}", 80), timeout=10)
s.sendall(b"GET / HTTP/1.0\r\n\r\n")
s.settimeout(30)
print("sent", flush=True)
sys.stdin.readline()
try:
    d = s.recv(100)
    print("data %r" % d, flush=True)
except ConnectionResetError:
    print("reset", flush=True)
except socket.timeout:
    print("timeout", flush=True)
except Exception as e:
    print("other %r" % e, flush=True)
"#
    )
}

/// Starts the blocked client in `ns`, waits until it sent, runs `kill_it`,
/// then lets it recv; returns its verdict line.
fn client_outcome(node: &Node, ns: &str, vip: &str, kill_it: impl FnOnce()) -> String {
    use std::io::{BufRead, BufReader, Write};
    let mut child = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "timeout",
            "60",
            "python3",
            "-u",
            "-c",
            &blocked_client(vip),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 client");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    // Bounded: the client's connect has a timeout and exits on error.
    out.read_line(&mut line).expect("client stdout");
    if line.trim() != "sent" {
        let _ = child.kill();
        let o = child.wait_with_output().unwrap();
        panic!(
            "client could not connect to {vip}: {line:?} {}\n{}",
            text(&o.stderr),
            node.daemon_log()
        );
    }
    // The client is now blocked (after the newline) in recv.
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"\n").unwrap();
    drop(stdin);
    thread::sleep(Duration::from_millis(300));
    kill_it();
    // Bounded by the client's own 30 s recv timeout (and `timeout 60`).
    let mut verdict = String::new();
    out.read_line(&mut verdict).expect("client verdict");
    let _ = child.kill();
    let _ = child.wait();
    verdict.trim().to_string()
}

fn assert_reset(verdict: &str, what: &str) {
    eprintln!("{what}: client saw {verdict}");
    assert_eq!(
        verdict, "reset",
        "{what}: the blocked client expected ConnectionResetError (not a 30 s timeout)"
    );
}

/// Runs the holder server as a pod that is never restarted, behind a
/// service, and a client pod; returns (server, vip, client, server pid)
/// once the server listens.
fn holder_behind_service(node: &Node) -> (String, String, String, u32) {
    let app = node.name("hold");
    let label = format!("app={app}");
    let server = node.name("hold");
    let mut cmd = vec![
        "pod",
        "run",
        &server,
        "--label",
        &label,
        "--restart",
        "never",
        "--",
    ]
    .into_iter()
    .map(String::from)
    .collect::<Vec<_>>();
    cmd.extend(holder());
    node.podnet_ok(&cmd.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(
        node.json(&["pod", "get", &server])["spec"]["restartPolicy"],
        "Never"
    );
    let svc = node.name("svc");
    let vip = node.create_service(&svc, &label, &["80:8080"], &[]);
    let client = node.name("cli");
    node.run_pod(&client, &[], &sleeper());
    node.wait_running(&client);
    let pid = node.pod_pid(&server);
    let ip = node.pod_ip(&server);
    node.wait_endpoints(&svc, "the server is an endpoint", |e| !e.is_empty());
    wait_for(SETTLE, || {
        let code = format!("import socket; socket.create_connection(('{ip}', 8080), timeout=2)");
        node.python(&pod_netns(&client), &code, Duration::from_secs(5))
            .2
            .then_some(())
    })
    .expect("holder server listening");
    (server, vip, client, pid)
}

#[test]
fn client_blocked_on_a_dying_pod_gets_a_reset() {
    let _s = serial();
    let node = Node::start();
    let (server, vip, client, pid) = holder_behind_service(&node);
    let verdict = client_outcome(&node, &pod_netns(&client), &vip, || kill(pid, "KILL"));
    assert_reset(&verdict, "server pod SIGKILLed");
    // Never restarted: the pod failed.
    let p = wait_for(SETTLE, || {
        node.pod(&server)
            .filter(|p| daemon_support::phase(p) == "Failed")
    });
    assert!(p.is_some(), "{:?}", node.pod(&server));
}

#[test]
fn client_blocked_on_a_dying_pod_gets_a_reset_from_the_daemon_when_the_pod_is_silent() {
    // As above, but the server pod's eth0 is set down before the kill, so
    // the pod's own kernel cannot send its RST/FIN: the reset must come
    // from the daemon resetting the flows of the endpoint that left.
    let _s = serial();
    let node = Node::start();
    let (server, vip, client, pid) = holder_behind_service(&node);
    let verdict = client_outcome(&node, &pod_netns(&client), &vip, || {
        let (o, _) = node.exec_pod(
            &server,
            &["ip", "link", "set", "eth0", "down"],
            Duration::from_secs(5),
        );
        assert!(o.status.success(), "eth0 down: {}", text(&o.stderr));
        kill(pid, "KILL");
    });
    assert_reset(&verdict, "silent server pod SIGKILLed");
}

#[test]
fn udp_flow_to_a_dead_backend_is_repinned() {
    use std::io::{BufRead, BufReader, Write};
    let _s = serial();
    let node = Node::start();
    let app = node.name("udp");
    let label = format!("app={app}");
    node.create_deployment(&app, 2, &daemon_support::udp_pong_server(9000));
    let pods = node.deployment_pods(&app, 2);
    let svc = node.name("svc");
    let vip = node.create_service(&svc, &label, &["53:9000/udp"], &[]);
    let client = node.name("cli");
    let client_ns = pod_netns(&client);
    node.run_pod(&client, &[], &sleeper());
    node.wait_running(&client);
    for ip in pods.values() {
        node.udp_until_ok(&client_ns, &format!("{ip}:9000"));
    }
    node.wait_endpoints(&svc, "two endpoints", |e| e.len() == 2);
    // One connected UDP socket (one flow): ask, wait for the test to kill
    // the answering pod, then ask again (for up to 20 s, far less than the
    // back-off after which the killed pod is restarted in place, and far
    // more than re-pinning takes).
    let code = format!(
        r#"import socket, time, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect(("{vip}", 53)); s.settimeout(1)
def ask():
    try:
        s.send(b"ping"); return s.recv(200).decode().strip()
    except Exception as e:
        return "error %r" % e
a = ask()
while a.startswith("error"):
    a = ask()
print(a, flush=True)
sys.stdin.readline()
t = time.monotonic()
while time.monotonic() - t < 20:
    b = ask()
    print(b, flush=True)
    if not b.startswith("error"):
        break
    time.sleep(0.05)
"#
    );
    let mut child = Command::new("ip")
        .args([
            "netns", "exec", &client_ns, "timeout", "60", "python3", "-u", "-c", &code,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 client");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).expect("first answer");
    let first_pod = first
        .trim()
        .strip_prefix("pong ")
        .unwrap_or_else(|| panic!("first answer: {first:?}"))
        .to_string();
    assert!(pods.contains_key(&first_pod), "answer from {first_pod:?}");
    // The whole container dies: socat's forked children share its UDP
    // socket and could answer for it.
    let pid = node.pod_pid(&first_pod);
    kill(pid, "KILL");
    let netns = pod_netns(&first_pod);
    if let Ok(o) = Command::new("ip").args(["netns", "pids", &netns]).output() {
        for p in text(&o.stdout).split_whitespace() {
            if let Ok(p @ 1..) = p.parse::<u32>() {
                kill(p, "KILL");
            }
        }
    }
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"\n").unwrap();
    drop(stdin);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).expect("client output");
    let _ = child.wait();
    eprintln!("after killing {first_pod}: {rest}");
    let last = rest.lines().last().unwrap_or("");
    assert!(
        last.starts_with("pong "),
        "the UDP flow was not re-pinned to a live backend within 20 s: {rest}"
    );
    let who_now = last.split_whitespace().nth(1).unwrap_or("");
    assert_ne!(
        who_now, first_pod,
        "answer from the killed pod (restarted in place), not from a re-pinned backend"
    );
    assert!(pods.contains_key(who_now), "answer from {who_now:?}");
}
