//! Root tests: services over changing pods. Endpoints follow labels; load
//! spreads over three replicas; ClientIP affinity sticks; a SIGKILLed
//! replica is replaced (new address) while requests keep succeeding; a
//! client blocked on a dying pod gets a reset, not a hang.

mod daemon_support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use daemon_support::{kill, serial, text, wait_for, whoami_server, Node};

fn sleeper() -> Vec<String> {
    vec!["sleep".into(), "3600".into()]
}

/// Creates a deployment of `n` whoami servers on 8080 labelled `app=NAME`
/// and waits for `n` running pods; returns (name -> ip).
fn deployment(node: &Node, name: &str, n: u32) -> BTreeMap<String, String> {
    let label = format!("app={name}");
    let mut args: Vec<String> = vec![
        "deployment".into(),
        "create".into(),
        name.into(),
        "--replicas".into(),
        n.to_string(),
        "--label".into(),
        label,
        "--".into(),
    ];
    args.extend(whoami_server(8080));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    node.podnet_ok(&a);
    running_pods(node, name, n)
}

/// Waits (10 s) until the deployment lists `n` pods, all Running.
fn running_pods(node: &Node, name: &str, n: u32) -> BTreeMap<String, String> {
    wait_for(Duration::from_secs(10), || {
        let d = node.json(&["deployment", "get", name]);
        let pods: Vec<String> = d["pods"]
            .as_array()?
            .iter()
            .filter_map(|p| p.as_str().map(String::from))
            .collect();
        if pods.len() != n as usize {
            return None;
        }
        let mut m = BTreeMap::new();
        for p in pods {
            let v = node.pod(&p)?;
            if v["phase"] != "Running" || !v["pid"].is_u64() {
                return None;
            }
            m.insert(p, v["ip"].as_str()?.to_string());
        }
        Some(m)
    })
    .unwrap_or_else(|| {
        panic!(
            "deployment {name} never had {n} running pods: {}\n{}",
            node.json(&["deployment", "get", name]),
            node.daemon_log()
        )
    })
}

/// Who answered: the pod name in a whoami body.
fn who(body: &str) -> String {
    body.split_whitespace().next().unwrap_or("").to_string()
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
    let eps = wait_for(Duration::from_secs(5), || {
        let e = node.endpoints(&svc);
        (!e.is_empty()).then_some(e)
    })
    .expect("the matching pod joins the endpoints");
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
    let eps: BTreeSet<String> = wait_for(Duration::from_secs(5), || {
        let e: BTreeSet<String> = node.endpoints(&svc).into_iter().collect();
        (e.len() == 2).then_some(e)
    })
    .unwrap_or_else(|| panic!("second pod never joined: {:?}", node.endpoints(&svc)));
    let want: BTreeSet<String> = [format!("{yes_ip}:8080"), format!("{yes2_ip}:8080")].into();
    assert_eq!(eps, want);

    // A deleted pod leaves.
    node.podnet_ok(&["pod", "delete", &yes]);
    let eps = wait_for(Duration::from_secs(10), || {
        let e = node.endpoints(&svc);
        (e.len() == 1).then_some(e)
    })
    .unwrap_or_else(|| panic!("deleted pod never left: {:?}", node.endpoints(&svc)));
    assert_eq!(eps, vec![format!("{yes2_ip}:8080")]);
}

#[test]
fn load_spreads_over_three_replicas_and_client_ip_affinity_sticks() {
    let _s = serial();
    let node = Node::start();
    let web = node.name("web");
    let pods = deployment(&node, &web, 3);
    for p in pods.keys() {
        assert!(
            p.len() == web.len() + 6 && p.starts_with(&format!("{web}-")),
            "deployment pod name {p} is not {web}-xxxxx"
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
    let client = node.name("cli");
    node.run_pod(&client, &[], &sleeper());
    node.wait_running(&client);
    // Every replica ready (answers by IP) before counting.
    for ip in pods.values() {
        node.curl_until_ok(&client, &format!("http://{ip}:8080/"));
    }
    wait_for(Duration::from_secs(5), || {
        (node.endpoints(&svc).len() == 3).then_some(())
    })
    .unwrap_or_else(|| panic!("endpoints: {:?}", node.endpoints(&svc)));

    let mut seen = BTreeSet::new();
    let mut answers = Vec::new();
    for i in 0..30 {
        let body = node
            .curl(&client, &format!("http://{vip}/"), 2)
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
        "not all three replicas answered within 30 requests: {answers:?}"
    );

    // ClientIP affinity: one client, 20 requests, one pod.
    let mut sticky_seen = BTreeSet::new();
    for i in 0..20 {
        let body = node
            .curl(&client, &format!("http://{sticky_vip}/"), 2)
            .unwrap_or_else(|e| panic!("sticky request {i}: {e}"));
        sticky_seen.insert(who(&body));
    }
    assert_eq!(
        sticky_seen.len(),
        1,
        "ClientIP affinity: 20 requests from one client hit {sticky_seen:?}"
    );
}

#[test]
fn killed_replica_is_replaced_with_a_new_address_and_requests_recover_within_2s() {
    let _s = serial();
    let node = Node::start();
    let web = node.name("web");
    let pods = deployment(&node, &web, 3);
    let svc = node.name("svc");
    let vip = node.create_service(&svc, &format!("app={web}"), &["80:8080"], &[]);
    let client = node.name("cli");
    node.run_pod(&client, &[], &sleeper());
    node.wait_running(&client);
    for ip in pods.values() {
        node.curl_until_ok(&client, &format!("http://{ip}:8080/"));
    }
    let url = format!("http://{vip}/");
    node.curl_until_ok(&client, &url);

    let (victim, victim_ip) = pods
        .iter()
        .next()
        .map(|(a, b)| (a.clone(), b.clone()))
        .unwrap();
    let victim_pid = node.pod_pid(&victim);
    kill(victim_pid, "KILL");
    let killed_at = Instant::now();

    // Within 2 s every request succeeds again: requests (1 s limit each)
    // until 2 s after the kill may fail (the dead pod's endpoint leaving,
    // the replacement's server still starting), after that 20 in a row must
    // succeed.
    let deadline = killed_at + Duration::from_secs(2);
    let mut log = Vec::new();
    while Instant::now() < deadline {
        let r = node.curl(&client, &url, 1);
        log.push(format!(
            "{:?}: {}",
            killed_at.elapsed(),
            match &r {
                Ok(b) => format!("ok {}", who(b)),
                Err(e) => e.clone(),
            }
        ));
        thread::sleep(Duration::from_millis(20));
    }
    let failures: Vec<&String> = log.iter().filter(|l| !l.contains(": ok ")).collect();
    eprintln!(
        "{} requests in the 2 s after the kill, failed: {failures:#?}",
        log.len()
    );
    for i in 0..20 {
        node.curl(&client, &url, 1).unwrap_or_else(|e| {
            panic!("request {i} of 20 from 2 s after the kill failed: {e}\nbefore: {log:#?}\nendpoints {:?}", node.endpoints(&svc))
        });
    }
    assert!(
        !node.endpoints(&svc).contains(&format!("{victim_ip}:8080")),
        "the dead pod is still an endpoint"
    );

    // The deployment has three running pods again; the replacement has a new
    // name and a new address.
    let now = running_pods(&node, &web, 3);
    assert!(
        !now.contains_key(&victim),
        "the killed pod {victim} is still listed: {now:?}"
    );
    let new: Vec<(&String, &String)> = now.iter().filter(|(n, _)| !pods.contains_key(*n)).collect();
    assert_eq!(
        new.len(),
        1,
        "exactly one replacement: before {pods:?}, after {now:?}"
    );
    assert_ne!(
        new[0].1, &victim_ip,
        "the replacement reuses the dead pod's address"
    );
    let old_ips: BTreeSet<&String> = pods.values().collect();
    assert!(
        !old_ips.contains(new[0].1),
        "the replacement took an address in use: {now:?}"
    );
    // ... and serves through the service.
    let want = new[0].0.clone();
    wait_for(Duration::from_secs(10), || {
        (0..10).find_map(|_| node.curl(&client, &url, 1).ok().filter(|b| who(b) == want))
    })
    .unwrap_or_else(|| panic!("the replacement {want} never answered through the service"));
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
/// on recv (10 s limit) and prints what happened with the elapsed time.
fn blocked_client(vip: &str) -> String {
    format!(
        r#"import socket, time, sys
s = socket.create_connection(("{vip}", 80), timeout=3)
s.sendall(b"GET / HTTP/1.0\r\n\r\n")
s.settimeout(10)
print("sent", flush=True)
sys.stdin.readline()
t = time.monotonic()
try:
    d = s.recv(100)
    print("data %r %.3f" % (d, time.monotonic() - t), flush=True)
except ConnectionResetError:
    print("reset %.3f" % (time.monotonic() - t), flush=True)
except socket.timeout:
    print("timeout %.3f" % (time.monotonic() - t), flush=True)
except Exception as e:
    print("other %r %.3f" % (e, time.monotonic() - t), flush=True)
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
    // Bounded: the client's connect has a 3 s timeout and exits on error.
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
    let mut verdict = String::new();
    let done = Instant::now();
    out.read_line(&mut verdict).expect("client verdict");
    let _ = child.kill();
    let _ = child.wait();
    assert!(done.elapsed() < Duration::from_secs(12), "client hung");
    verdict.trim().to_string()
}

fn assert_reset_quickly(verdict: &str, what: &str) {
    eprintln!("{what}: client saw {verdict}");
    let secs: f64 = verdict
        .strip_prefix("reset ")
        .unwrap_or_else(|| {
            panic!("{what}: the blocked client expected ConnectionResetError, got {verdict:?}")
        })
        .parse()
        .expect("seconds");
    assert!(secs < 3.0, "{what}: reset after {secs} s");
}

#[test]
fn client_blocked_on_a_dying_pod_gets_a_reset() {
    let _s = serial();
    let node = Node::start();
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
    let svc = node.name("svc");
    let vip = node.create_service(&svc, &label, &["80:8080"], &[]);
    let client = node.name("cli");
    node.run_pod(&client, &[], &sleeper());
    node.wait_running(&client);
    let pid = node.pod_pid(&server);
    wait_for(Duration::from_secs(5), || {
        (!node.endpoints(&svc).is_empty()).then_some(())
    })
    .expect("server is an endpoint");
    // Wait for the server to listen.
    let ip = node.pod_ip(&server);
    wait_for(Duration::from_secs(10), || {
        let code = format!("import socket; socket.create_connection(('{ip}', 8080), timeout=1)");
        node.python(&client, &code, Duration::from_secs(3))
            .2
            .then_some(())
    })
    .expect("holder server listening");

    let verdict = client_outcome(&node, &client, &vip, || kill(pid, "KILL"));
    assert_reset_quickly(&verdict, "server pod SIGKILLed");
}

#[test]
fn client_blocked_on_a_dying_pod_gets_a_reset_from_the_daemon_when_the_pod_is_silent() {
    // As above, but the server pod's eth0 is set down before the kill, so
    // the pod's own kernel cannot send its RST/FIN: the reset must come
    // from the daemon resetting the flows of the endpoint that left.
    let _s = serial();
    let node = Node::start();
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
    let svc = node.name("svc");
    let vip = node.create_service(&svc, &label, &["80:8080"], &[]);
    let client = node.name("cli");
    node.run_pod(&client, &[], &sleeper());
    node.wait_running(&client);
    let pid = node.pod_pid(&server);
    let ip = node.pod_ip(&server);
    wait_for(Duration::from_secs(5), || {
        (!node.endpoints(&svc).is_empty()).then_some(())
    })
    .expect("server is an endpoint");
    wait_for(Duration::from_secs(10), || {
        let code = format!("import socket; socket.create_connection(('{ip}', 8080), timeout=1)");
        node.python(&client, &code, Duration::from_secs(3))
            .2
            .then_some(())
    })
    .expect("holder server listening");

    let verdict = client_outcome(&node, &client, &vip, || {
        let (o, _) = node.exec_in(
            &server,
            &["ip", "link", "set", "eth0", "down"],
            Duration::from_secs(3),
        );
        assert!(o.status.success(), "eth0 down: {}", text(&o.stderr));
        kill(pid, "KILL");
    });
    assert_reset_quickly(&verdict, "silent server pod SIGKILLed");
}

#[test]
fn udp_flow_to_a_dead_backend_is_repinned() {
    use std::io::{BufRead, BufReader, Write};
    let _s = serial();
    let node = Node::start();
    let app = node.name("udp");
    let label = format!("app={app}");
    let mut args: Vec<String> = [
        "deployment",
        "create",
        &app,
        "--replicas",
        "2",
        "--label",
        &label,
        "--",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    args.extend(daemon_support::udp_pong_server(9000));
    node.podnet_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let pods = running_pods(&node, &app, 2);
    let svc = node.name("svc");
    let vip = node.create_service(&svc, &label, &["53:9000/udp"], &[]);
    let client = node.name("cli");
    node.run_pod(&client, &[], &sleeper());
    node.wait_running(&client);
    for ip in pods.values() {
        node.udp_until_ok(&client, &format!("{ip}:9000"));
    }
    // One connected UDP socket (one flow): ask, wait for the test to kill
    // the answering pod, then ask again for up to 3 s.
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
while time.monotonic() - t < 3:
    b = ask()
    print(b, "%.3f" % (time.monotonic() - t), flush=True)
    if not b.startswith("error"):
        break
    time.sleep(0.05)
"#
    );
    let mut child = Command::new("ip")
        .args([
            "netns", "exec", &client, "timeout", "20", "python3", "-u", "-c", &code,
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
    let pid = node.pod_pid(&first_pod);
    kill(pid, "KILL");
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
        "the UDP flow was not re-pinned to a live backend within 3 s: {rest}"
    );
    let who_now = last.split_whitespace().nth(1).unwrap_or("");
    assert_ne!(who_now, first_pod, "answer from the killed pod");
    let secs: f64 = last.split_whitespace().last().unwrap().parse().unwrap();
    assert!(secs < 2.0, "re-pinned only after {secs} s: {rest}");
}
