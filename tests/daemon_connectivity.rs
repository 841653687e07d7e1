//! Root tests: traffic through a real podnetd. Pod -> pod and pod -> service
//! over TCP (curl against a python3 HTTP server) and UDP (socat); host ->
//! pod and -> service; hairpin; a service without endpoints refuses at once;
//! a pod cannot send from an address that is not its own.

mod daemon_support;

use std::time::{Duration, Instant};

use daemon_support::{serial, udp_pong_server, wait_for, whoami_server, Node};

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
    let web_svc = node.name("websvc");
    let udp_svc = node.name("udpsvc");
    let web_vip = node.create_service(&web_svc, "app=web", &["80:8080"], &[]);
    let udp_vip = node.create_service(&udp_svc, "app=udp", &["53:9000/udp"], &[]);
    assert!(
        web_vip.starts_with("10.9") || web_vip.starts_with("10.1"),
        "cluster IP {web_vip} not in 10.96.0.0/12"
    );

    // pod -> pod, TCP
    let body = node.curl_until_ok(&client, &format!("http://{web_ip}:8080/"));
    assert_eq!(body, format!("{web} {web_ip}"), "pod -> pod TCP answer");
    // pod -> pod, UDP
    let pong = node.udp_until_ok(&client, &format!("{udp_ip}:9000"));
    assert_eq!(pong.trim(), format!("pong {udp}"), "pod -> pod UDP answer");
    // pod -> service, TCP
    let body = node.curl_until_ok(&client, &format!("http://{web_vip}/"));
    assert_eq!(body, format!("{web} {web_ip}"), "pod -> service TCP answer");
    // pod -> service, UDP: the answer must come back from the VIP (socat's
    // connected UDP socket drops anything else), so reverse NAT works.
    let pong = node.udp_until_ok(&client, &format!("{udp_vip}:53"));
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
        node.curl(&client, &format!("http://{web_vip}/"), 2)
            .unwrap_or_else(|e| panic!("request {i} through the service: {e}"));
    }

    // The NAT table shows the service and its backend.
    let nat = node.json(&["nat", "list"]).to_string();
    assert!(
        nat.contains(&web_vip) && nat.contains(&web_ip),
        "nat list lacks {web_vip} -> {web_ip}: {nat}"
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
    assert_eq!(
        node.endpoints(&svc),
        vec![format!("{ip}:8080")],
        "the only endpoint"
    );
    let body = node.curl_until_ok(&web, &format!("http://{vip}/"));
    assert_eq!(body, format!("{web} {ip}"), "hairpin answer");
    for i in 0..5 {
        node.curl(&web, &format!("http://{vip}/"), 2)
            .unwrap_or_else(|e| panic!("hairpin request {i}: {e}"));
    }
}

#[test]
fn service_without_endpoints_refuses_at_once() {
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

    for ns in [client.as_str(), node.ns.as_str()] {
        // TCP: ECONNREFUSED (an RST), well within 1 s.
        let code = format!(
            r#"import socket, time, sys
s = socket.socket(); s.settimeout(3)
t = time.monotonic()
try:
    s.connect(("{vip}", 80)); print("connected")
except ConnectionRefusedError:
    print("refused %.3f" % (time.monotonic() - t))
except Exception as e:
    print("other %r %.3f" % (e, time.monotonic() - t))
"#
        );
        let (out, err, ok) = node.python(ns, &code, Duration::from_secs(6));
        assert!(ok, "python in {ns}: {err}");
        let secs: f64 = out
            .strip_prefix("refused ")
            .unwrap_or_else(|| panic!("TCP to a service without endpoints from {ns}: expected ECONNREFUSED, got {out:?}"))
            .trim()
            .parse()
            .expect("seconds");
        assert!(secs < 1.0, "TCP refusal from {ns} took {secs} s");

        // UDP: ICMP port unreachable -> ConnectionRefusedError on recv.
        let code = format!(
            r#"import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
s.connect(("{vip}", 53))
t = time.monotonic()
try:
    s.send(b"x"); s.recv(100); print("answered")
except ConnectionRefusedError:
    print("refused %.3f" % (time.monotonic() - t))
except Exception as e:
    print("other %r %.3f" % (e, time.monotonic() - t))
"#
        );
        let (out, err, ok) = node.python(ns, &code, Duration::from_secs(6));
        assert!(ok, "python in {ns}: {err}");
        let secs: f64 = out
            .strip_prefix("refused ")
            .unwrap_or_else(|| panic!("UDP to a service without endpoints from {ns}: expected ICMP port unreachable (ConnectionRefusedError), got {out:?}"))
            .trim()
            .parse()
            .expect("seconds");
        assert!(secs < 1.0, "UDP refusal from {ns} took {secs} s");
    }

    // curl sees "connection refused" (exit 7) quickly, too.
    let t = Instant::now();
    let (out, _) = node.exec_in(
        &client,
        &["curl", "-sS", "-m", "3", &format!("http://{vip}/")],
        Duration::from_secs(6),
    );
    assert_eq!(
        out.status.code(),
        Some(7),
        "curl exit code (7 = connection refused): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "curl refusal took {:?}",
        t.elapsed()
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
    let fake = "10.244.0.200";
    for ip in [&web_ip, &sink_ip, &own_ip] {
        assert_ne!(ip, fake, "test assumes {fake} is no pod's address");
    }
    // The normal address works.
    node.curl_until_ok(&spoofer, &format!("http://{web_ip}:8080/"));
    // Add a second address to eth0 inside the pod and send from it.
    let (out, _) = node.exec_in(
        &spoofer,
        &["ip", "addr", "add", &format!("{fake}/32"), "dev", "eth0"],
        Duration::from_secs(5),
    );
    assert!(
        out.status.success(),
        "ip addr add in the pod: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let r = node.curl_args(
        &spoofer,
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
        &spoofer,
        &format!("{sink_ip}:9000"),
        "spoofed",
        &format!(",bind={fake}"),
    );
    node.udp_send(
        &spoofer,
        &format!("{sink_ip}:9000"),
        "spoofed",
        &format!(",bind={fake}"),
    );
    // ... while the pod's own address still works.
    node.curl(&spoofer, &format!("http://{web_ip}:8080/"), 2)
        .expect("the pod's own address still works");
    node.udp_send(
        &spoofer,
        &format!("{sink_ip}:9000"),
        "legit",
        &format!(",bind={own_ip}"),
    );
    let logs = daemon_support::wait_for(Duration::from_secs(5), || {
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
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("", 9100)); s.settimeout(3)
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
    std::thread::sleep(Duration::from_millis(500));
    node.udp_send(
        &spoofer,
        "10.244.0.1:9100",
        "spoofed",
        &format!(",bind={fake}"),
    );
    node.udp_send(
        &spoofer,
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
    // No flow from the fake address was tracked.
    let ct = node.json(&["conntrack", "list"]).to_string();
    assert!(
        !ct.contains(fake),
        "conntrack has a flow from the spoofed address: {ct}"
    );
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
    let ok = daemon_support::wait_for(Duration::from_secs(15), || {
        let (o, _) = node.exec_in(
            &client,
            &["iperf3", "-c", &vip, "-p", "5201", "-t", "2", "-J"],
            Duration::from_secs(8),
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
/// joins services by label, and on delete loses eth0 but keeps existing.
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
    node.podnet_ok(&["pod", "attach", &ns, "--netns", &path, "--label", &label]);
    // No process of its own: Running with an address, without a pid.
    let pod = node.pod(&ns).expect("attached pod listed");
    assert_eq!(pod["phase"], "Running", "{pod}");
    assert!(pod["pid"].is_null(), "{pod}");
    let ip = pod["ip"].as_str().expect("an address").to_string();
    assert!(run(&["-n", &ns, "-4", "addr", "show", "dev", "eth0"]).contains(&ip));
    assert!(run(&["-n", &ns, "route"]).contains("default dev eth0"));
    // Its workload is started by whoever owns the namespace.
    let mut server = std::process::Command::new("ip")
        .args(["netns", "exec", &ns])
        .args(whoami_server(8080))
        .env("POD_NAME", &ns)
        .env("POD_IP", &ip)
        .spawn()
        .expect("server");
    let svc = node.name("attsvc");
    let vip = node.create_service(&svc, &label, &["80:8080"], &[]);
    let body = node.curl_until_ok(&node.ns, &format!("http://{vip}/"));
    assert_eq!(body, format!("{ns} {ip}"));
    node.podnet_ok(&["pod", "delete", &ns]);
    let gone = wait_for(Duration::from_secs(5), || {
        node.pod(&ns).is_none().then_some(())
    });
    let _ = server.kill();
    let _ = server.wait();
    assert!(gone.is_some(), "attached pod not deleted");
    assert!(
        std::path::Path::new(&path).exists(),
        "an attached namespace is not podnet's to remove"
    );
    assert!(
        !run(&["-n", &ns, "link"]).contains("eth0"),
        "eth0 stays after delete"
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
            assert_eq!(node.vnet_hdr(pod, "eth0"), on, "{pod} eth0 {flags:?}");
        }
        let ip = node.pod_ip(&web);
        let svc = node.name("svc");
        let vip = node.create_service(&svc, &label, &["80:8080"], &[]);
        let body = node.curl_until_ok(&client, &format!("http://{vip}/"));
        assert_eq!(body, format!("{web} {ip}"), "pod -> service {flags:?}");
        let body = node.curl_until_ok(&node.ns, &format!("http://{ip}:8080/"));
        assert_eq!(body, format!("{web} {ip}"), "host -> pod {flags:?}");
    }
}
