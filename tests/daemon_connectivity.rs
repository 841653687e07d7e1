//! Root tests: traffic through a real podnetd. Pod -> pod and pod -> service
//! over TCP (curl against a python3 HTTP server) and UDP (socat); host ->
//! pod and -> service; hairpin; a service without endpoints refuses at once;
//! a pod cannot send from an address that is not its own.

mod daemon_support;

use std::time::Duration;

use daemon_support::{
    alive, pod_netns, serial, udp_pong_server, wait_for, whoami_server, Node, SETTLE,
};

fn sleeper() -> Vec<String> {
    vec!["sleep".into(), "3600".into()]
}

#[test]
fn pod_to_pod_pod_to_service_and_host_over_tcp_and_udp() {
    let _s = serial();
    let node = Node::start();
    let web = node.name("web");
    let udp = node.name("udp");
    let client = node.name("cli");
    node.run_pod(&web, &["app=web"], &whoami_server(8080));
    node.run_pod(&udp, &["app=udp"], &udp_pong_server(9000));
    node.run_pod(&client, &[], &sleeper());
    let web_ip = node.pod_ip(&web);
    let udp_ip = node.pod_ip(&udp);
    let client_ip = node.pod_ip(&client);
    assert_ne!(web_ip, client_ip);
    let client_ns = pod_netns(&client);
    let web_svc = node.name("websvc");
    let udp_svc = node.name("udpsvc");
    let web_vip = node.create_service(&web_svc, "app=web", &["80:8080"], &[]);
    let udp_vip = node.create_service(&udp_svc, "app=udp", &["53:9000/udp"], &[]);
    assert!(
        web_vip.starts_with("10.9") || web_vip.starts_with("10.1"),
        "cluster IP {web_vip} not in 10.96.0.0/12"
    );

    // pod -> pod, TCP
    let body = node.curl_until_ok(&client_ns, &format!("http://{web_ip}:8080/"));
    assert_eq!(body, format!("{web} {web_ip}"), "pod -> pod TCP answer");
    // pod -> pod, UDP
    let pong = node.udp_until_ok(&client_ns, &format!("{udp_ip}:9000"));
    assert_eq!(pong.trim(), format!("pong {udp}"), "pod -> pod UDP answer");
    // pod -> service, TCP
    let body = node.curl_until_ok(&client_ns, &format!("http://{web_vip}/"));
    assert_eq!(body, format!("{web} {web_ip}"), "pod -> service TCP answer");
    // pod -> service, UDP: the answer must come back from the VIP (socat's
    // connected UDP socket drops anything else), so reverse NAT works.
    let pong = node.udp_until_ok(&client_ns, &format!("{udp_vip}:53"));
    assert_eq!(
        pong.trim(),
        format!("pong {udp}"),
        "pod -> service UDP answer"
    );

    // host (node namespace) -> pod and -> service
    let body = node.curl_until_ok(&node.ns, &format!("http://{web_ip}:8080/"));
    assert_eq!(body, format!("{web} {web_ip}"), "host -> pod");
    let body = node.curl_until_ok(&node.ns, &format!("http://{web_vip}/"));
    assert_eq!(body, format!("{web} {web_ip}"), "host -> service");
    let pong = node.udp_until_ok(&node.ns, &format!("{udp_vip}:53"));
    assert_eq!(pong.trim(), format!("pong {udp}"), "host -> service UDP");
    let pong = node.udp_until_ok(&node.ns, &format!("{udp_ip}:9000"));
    assert_eq!(pong.trim(), format!("pong {udp}"), "host -> pod UDP");

    // Several requests in a row all succeed (no flaky first-packet-only path).
    for i in 0..10 {
        node.curl(&client_ns, &format!("http://{web_vip}/"), 5)
            .unwrap_or_else(|e| panic!("request {i} through the service: {e}"));
    }

    // The NAT table shows the service (NAMESPACE/NAME) and its backend.
    let nat = node.json(&["nat", "list"]);
    let rule = nat
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["frontend"] == format!("{web_vip}:80/TCP"))
        .unwrap_or_else(|| panic!("nat list lacks {web_vip}:80/TCP: {nat}"));
    assert_eq!(rule["service"], format!("default/{web_svc}"), "{rule}");
    assert_eq!(
        rule["backends"][0]["address"],
        format!("{web_ip}:8080"),
        "{rule}"
    );
    let table = node.podnet_ok(&["nat", "list"]);
    assert!(
        table.starts_with("FRONTEND") && table.contains(&format!("default/{web_svc}")),
        "nat list table: {table}"
    );
    // Conntrack shows the client's flows.
    let ct = node.json(&["conntrack", "list"]).to_string();
    assert!(
        ct.contains(&client_ip),
        "conntrack list lacks flows of {client_ip}: {ct}"
    );
}

#[test]
fn hairpin_pod_reaches_itself_through_its_own_service() {
    let _s = serial();
    let node = Node::start();
    let web = node.name("hp");
    let label = format!("app={web}");
    node.run_pod(&web, &[&label], &whoami_server(8080));
    let ip = node.pod_ip(&web);
    let svc = node.name("hpsvc");
    let vip = node.create_service(&svc, &label, &["80:8080"], &[]);
    node.wait_endpoints(&svc, "the pod is the only endpoint", |e| {
        e == [format!("{ip}:8080")]
    });
    let body = node.curl_until_ok(&pod_netns(&web), &format!("http://{vip}/"));
    assert_eq!(body, format!("{web} {ip}"), "hairpin answer");
    for i in 0..5 {
        node.curl(&pod_netns(&web), &format!("http://{vip}/"), 5)
            .unwrap_or_else(|e| panic!("hairpin request {i}: {e}"));
    }
}

/// A service without endpoints refuses, as a kernel router would: TCP gets
/// a reset (ECONNREFUSED) and UDP an ICMP port unreachable, well before the
/// clients' own timeouts, from a pod and from the host.
#[test]
fn service_without_endpoints_refuses() {
    let _s = serial();
    let node = Node::start();
    let client = node.name("cli");
    node.run_pod(&client, &[], &sleeper());
    node.wait_running(&client);
    let svc = node.name("empty");
    let vip = node.create_service(
        &svc,
        &format!("app={svc}nobody"),
        &["80:8080", "53:5353/udp"],
        &[],
    );
    assert!(node.endpoints(&svc).is_empty());
    // The NAT table has the frontend, without backends (a reject rule).
    wait_for(SETTLE, || {
        let nat = node.json(&["nat", "list"]);
        nat.as_array()?
            .iter()
            .find(|r| r["frontend"] == format!("{vip}:80/TCP"))
            .filter(|r| r["backends"].as_array().is_none_or(|b| b.is_empty()))
            .map(|_| ())
    })
    .unwrap_or_else(|| panic!("no reject rule for {vip}: {}", node.json(&["nat", "list"])));

    for ns in [pod_netns(&client), node.ns.clone()] {
        // TCP: ECONNREFUSED (an RST), not the client's 20 s timeout.
        let code = format!(
            r#"import socket
s = socket.socket(); s.settimeout(20)
try:
    s.connect(("{vip}", 80)); print("connected")
except ConnectionRefusedError:
    print("refused")
except Exception as e:
    print("other %r" % e)
"#
        );
        let (out, err, ok) = node.python(&ns, &code, Duration::from_secs(30));
        assert!(ok, "python in {ns}: {err}");
        assert_eq!(
            out.trim(),
            "refused",
            "TCP to a service without endpoints from {ns}: expected ECONNREFUSED"
        );

        // UDP: ICMP port unreachable -> ConnectionRefusedError on recv.
        let code = format!(
            r#"import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(20)
s.connect(("{vip}", 53))
try:
    s.send(b"x"); s.recv(100); print("answered")
except ConnectionRefusedError:
    print("refused")
except Exception as e:
    print("other %r" % e)
"#
        );
        let (out, err, ok) = node.python(&ns, &code, Duration::from_secs(30));
        assert!(ok, "python in {ns}: {err}");
        assert_eq!(
            out.trim(),
            "refused",
            "UDP to a service without endpoints from {ns}: expected ICMP port unreachable"
        );
    }

    // curl sees "connection refused" (exit 7), not its timeout (28).
    let (out, _) = node.exec_in(
        &pod_netns(&client),
        &["curl", "-sS", "-m", "20", &format!("http://{vip}/")],
        Duration::from_secs(30),
    );
    assert_eq!(
        out.status.code(),
        Some(7),
        "curl exit code (7 = connection refused): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The refusals were the daemon's own answers (a reply, not a drop).
    let stats = node.json(&["stats"]);
    let replies = stats
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == "replies")
        .unwrap_or_else(|| panic!("no replies counter in {stats}"));
    assert!(
        replies["value"].as_u64() >= Some(5),
        "refusals not counted as replies: {stats}"
    );
}

#[test]
fn pod_cannot_send_from_an_address_that_is_not_its_own() {
    let _s = serial();
    let node = Node::start();
    let web = node.name("web");
    let sink = node.name("sink");
    let spoofer = node.name("spoof");
    node.run_pod(&web, &[], &whoami_server(8080));
    // A UDP sink that logs every datagram with its source address.
    let sink_cmd: Vec<String> = vec![
        "python3".into(),
        "-u".into(),
        "-c".into(),
        r#"import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("", 9000))
while True:
    d, a = s.recvfrom(2048); print("got", d.decode().strip(), "from", a[0], flush=True)
"#
        .into(),
    ];
    node.run_pod(&sink, &[], &sink_cmd);
    node.run_pod(&spoofer, &[], &sleeper());
    let web_ip = node.pod_ip(&web);
    let sink_ip = node.pod_ip(&sink);
    let own_ip = node.pod_ip(&spoofer);
    let spoof_ns = pod_netns(&spoofer);
    let fake = "10.244.0.200";
    for ip in [&web_ip, &sink_ip, &own_ip] {
        assert_ne!(ip, fake, "test assumes {fake} is no pod's address");
    }
    // The normal address works.
    node.curl_until_ok(&spoof_ns, &format!("http://{web_ip}:8080/"));
    // Add a second address to eth0 inside the pod and send from it.
    let (out, _) = node.exec_in(
        &spoof_ns,
        &["ip", "addr", "add", &format!("{fake}/32"), "dev", "eth0"],
        Duration::from_secs(5),
    );
    assert!(
        out.status.success(),
        "ip addr add in the pod: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let r = node.curl_args(
        &spoof_ns,
        &format!("http://{web_ip}:8080/"),
        2,
        &["--interface", fake],
    );
    assert!(
        r.is_err(),
        "a request from the spoofed source {fake} to pod {web_ip} was answered: {r:?}"
    );
    // Spoofed UDP must not reach the sink at all (the answer could not come
    // back anyway, so look at what the sink received).
    node.udp_send(
        &spoof_ns,
        &format!("{sink_ip}:9000"),
        "spoofed",
        &format!(",bind={fake}"),
    );
    node.udp_send(
        &spoof_ns,
        &format!("{sink_ip}:9000"),
        "spoofed",
        &format!(",bind={fake}"),
    );
    // ... while the pod's own address still works.
    node.curl(&spoof_ns, &format!("http://{web_ip}:8080/"), 2)
        .expect("the pod's own address still works");
    node.udp_send(
        &spoof_ns,
        &format!("{sink_ip}:9000"),
        "legit",
        &format!(",bind={own_ip}"),
    );
    let logs = wait_for(SETTLE, || {
        let l = daemon_support::text(&node.podnet(&["pod", "logs", &sink]).stdout);
        l.contains("got legit").then_some(l)
    })
    .expect("the sink got the legitimate datagram");
    assert!(
        logs.contains(&format!("got legit from {own_ip}")),
        "sink log: {logs}"
    );
    assert!(
        !logs.contains("spoofed"),
        "a spoofed datagram reached the sink: {logs}"
    );
    assert!(
        !logs.contains(fake),
        "a datagram from {fake} reached the sink: {logs}"
    );
    // Nor the host: a UDP listener in the node namespace must see the
    // legitimate datagram and not the spoofed one.
    let listener = std::process::Command::new("ip")
        .args(["netns", "exec", &node.ns, "python3", "-u", "-c"])
        .arg(
            r#"import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("", 9100)); s.settimeout(10)
print("ready", flush=True)
try:
    while True:
        d, a = s.recvfrom(2048); print("got", d.decode().strip(), "from", a[0], flush=True)
except socket.timeout:
    pass
"#,
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 listener in the node namespace");
    // Wait for "ready" before sending.
    let mut listener = listener;
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(listener.stdout.as_mut().expect("piped")),
        &mut ready,
    )
    .expect("listener output");
    assert_eq!(ready.trim(), "ready");
    node.udp_send(
        &spoof_ns,
        "10.244.0.1:9100",
        "spoofed",
        &format!(",bind={fake}"),
    );
    node.udp_send(
        &spoof_ns,
        "10.244.0.1:9100",
        "legit",
        &format!(",bind={own_ip}"),
    );
    let out = listener.wait_with_output().expect("listener output");
    let host_log = daemon_support::text(&out.stdout);
    assert!(
        host_log.contains(&format!("got legit from {own_ip}")),
        "the host did not get the legitimate datagram: {host_log} {}",
        daemon_support::text(&out.stderr)
    );
    assert!(
        !host_log.contains("spoofed"),
        "a spoofed datagram reached the host: {host_log}"
    );
    // No flow from the fake address was tracked; the drops were counted.
    let ct = node.json(&["conntrack", "list"]).to_string();
    assert!(
        !ct.contains(fake),
        "conntrack has a flow from the spoofed address: {ct}"
    );
    let stats = node.json(&["stats"]);
    let spoofed = stats
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == "dropped.spoofed")
        .unwrap_or_else(|| panic!("no dropped.spoofed counter in {stats}"));
    assert!(spoofed["value"].as_u64() > Some(0), "{stats}");
}

#[test]
fn bulk_tcp_through_the_service_with_iperf3() {
    let _s = serial();
    let node = Node::start();
    assert!(
        std::process::Command::new("sh")
            .args(["-c", "command -v iperf3"])
            .output()
            .is_ok_and(|o| o.status.success()),
        "this test needs iperf3: apt-get install -y iperf3 (scripts/test.sh installs it)"
    );
    let srv = node.name("ipf");
    let label = format!("app={srv}");
    node.run_pod(
        &srv,
        &[&label],
        &["iperf3".into(), "-s".into(), "-p".into(), "5201".into()],
    );
    let client = node.name("cli");
    node.run_pod(&client, &[], &sleeper());
    node.wait_running(&client);
    node.wait_running(&srv);
    let svc = node.name("svc");
    let vip = node.create_service(&svc, &label, &["5201:5201"], &[]);
    let mut last = String::new();
    let ok = wait_for(SETTLE, || {
        let (o, _) = node.exec_pod(
            &client,
            &["iperf3", "-c", &vip, "-p", "5201", "-t", "2", "-J"],
            Duration::from_secs(20),
        );
        let out = daemon_support::text(&o.stdout);
        if o.status.success() {
            let v: serde_json::Value = serde_json::from_str(&out).ok()?;
            let bps = v["end"]["sum_received"]["bits_per_second"].as_f64()?;
            return Some(bps);
        }
        last = out;
        None
    });
    let bps = ok.unwrap_or_else(|| panic!("iperf3 through {vip} never succeeded: {last}"));
    eprintln!("iperf3 pod -> cluster IP -> pod: {:.2} Gbit/s", bps / 1e9);
    assert!(bps > 1e6, "bulk TCP through the service at {bps} bit/s");
}

/// `pod attach`: a namespace made by someone else (as a container runtime
/// hands one to CNI) becomes a pod: it gets an address, eth0 and a route,
/// a pause process, joins services by label, and on delete loses eth0 (and
/// its pause process) but keeps existing.
#[test]
fn an_existing_namespace_is_attached_as_a_pod() {
    let _s = serial();
    let node = Node::start();
    let ns = node.name("att");
    let path = format!("/var/run/netns/{ns}");
    let run = |args: &[&str]| {
        let out = std::process::Command::new("ip")
            .args(args)
            .output()
            .expect("ip");
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    run(&["netns", "add", &ns]);
    run(&["-n", &ns, "link", "set", "lo", "up"]);
    let label = format!("app={ns}");
    let out = node.podnet_ok(&["pod", "attach", &ns, "--netns", &path, "--label", &label]);
    assert_eq!(out, format!("pod/{ns} created\n"));
    // Running with an address, its only container a pause process in the
    // attached namespace (not in a `default.NAME` one of its own).
    let pod = node.wait_running(&ns);
    assert_eq!(
        pod["metadata"]["annotations"]["podnet.io/netns"],
        path.as_str()
    );
    assert_eq!(pod["spec"]["containers"][0]["name"], "pause", "{pod}");
    let ip = daemon_support::ip_of(&pod).expect("an address");
    let pause = node.pid_of(&pod);
    assert!(alive(pause), "pause process {pause} of {ns}");
    let pids = run(&["netns", "pids", &ns]);
    assert!(
        pids.split_whitespace().any(|p| p == pause.to_string()),
        "pause process {pause} is not in {ns}: {pids}"
    );
    assert!(
        !node.pod_namespaces().contains(&pod_netns(&ns)),
        "an attached pod got a namespace of its own"
    );
    assert!(run(&["-n", &ns, "-4", "addr", "show", "dev", "eth0"]).contains(&ip));
    assert!(run(&["-n", &ns, "route"]).contains("default dev eth0"));
    // Its workload is started by whoever owns the namespace.
    let mut server = std::process::Command::new("ip")
        .args(["netns", "exec", &ns])
        .args(whoami_server(8080))
        .env("HOSTNAME", &ns)
        .spawn()
        .expect("server");
    let svc = node.name("attsvc");
    let vip = node.create_service(&svc, &label, &["80:8080"], &[]);
    let body = node.curl_until_ok(&node.ns, &format!("http://{vip}/"));
    assert_eq!(body, format!("{ns} {ip}"));
    // `pod delete` waits until the pod is gone.
    let out = node.podnet(&["pod", "delete", &ns]);
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        out.status.success(),
        "pod delete {ns}: {}",
        daemon_support::text(&out.stderr)
    );
    assert_eq!(
        daemon_support::text(&out.stdout),
        format!("pod \"{ns}\" deleted\n")
    );
    assert!(node.pod(&ns).is_none(), "attached pod still listed");
    assert!(
        std::path::Path::new(&path).exists(),
        "an attached namespace is not podnet's to remove"
    );
    assert!(
        !run(&["-n", &ns, "link"]).contains("eth0"),
        "eth0 stays after delete"
    );
    assert!(
        wait_for(SETTLE, || (!alive(pause)).then_some(())).is_some(),
        "the pause process {pause} outlived its pod"
    );
}

/// Offloads on (the default): every device the daemon creates has
/// virtio-net headers. `--no-offload`: none has, and pod -> service, host
/// -> pod and bulk TCP still work.
#[test]
fn offloads_are_on_by_default_and_off_by_flag() {
    let _s = serial();
    for (flags, on) in [(&[][..], true), (&["--no-offload"][..], false)] {
        let node = Node::start_with(flags);
        let web = node.name("web");
        let label = format!("app={web}");
        node.run_pod(&web, &[&label], &whoami_server(8080));
        let client = node.name("cli");
        node.run_pod(&client, &[], &sleeper());
        node.wait_running(&client);
        assert_eq!(node.vnet_hdr(&node.ns, "podnet0"), on, "podnet0 {flags:?}");
        for pod in [&web, &client] {
            assert_eq!(
                node.vnet_hdr(&pod_netns(pod), "eth0"),
                on,
                "{pod} eth0 {flags:?}"
            );
        }
        let ip = node.pod_ip(&web);
        let svc = node.name("svc");
        let vip = node.create_service(&svc, &label, &["80:8080"], &[]);
        let body = node.curl_until_ok(&pod_netns(&client), &format!("http://{vip}/"));
        assert_eq!(body, format!("{web} {ip}"), "pod -> service {flags:?}");
        let body = node.curl_until_ok(&node.ns, &format!("http://{ip}:8080/"));
        assert_eq!(body, format!("{web} {ip}"), "host -> pod {flags:?}");
    }
}
