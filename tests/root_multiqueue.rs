//! Root tests of the multi-queue host device: `podnet0` opened with one
//! queue per worker (`IFF_MULTI_QUEUE`), reattaching only with the same
//! flag, and real kernel TCP from the host to two pods served by two
//! different workers, both directions checked byte for byte while both
//! connections run at once. A worker writes a flow's packets to the host on
//! the queue it reads, so the kernel hands the flow's next packets from the
//! host to that queue: the echo only completes if replies and the packets
//! after them keep finding a worker that knows where they go.
//!
//! Every packet stays inside the namespaces the test creates: the data
//! plane runs in this process and links only their TUN devices.

mod sys_support;

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use podnet::daemon::dataplane::Dataplane;
use podnet::packet::{Link, PodAddrs, PodId, Router, RouterConfig};
use podnet::sys::link;
use podnet::sys::tun::{Tun, TunError, TunOptions};
use sys_support::NsGuard;

const GATEWAY: &str = "10.244.0.1/24";
const POD_IPS: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 244, 0, 5), Ipv4Addr::new(10, 244, 0, 6)];
const PORT: u16 = 8080;
const BYTES: usize = 8 << 20;

/// Opens the host device `podnet0` in `node` with `queues` queues and the
/// gateway address, as the daemon does.
fn host_device(node: &NsGuard, queues: usize, offload: bool) -> Vec<Tun> {
    let tuns = node
        .ns
        .run(
            move || -> Result<Vec<Tun>, Box<dyn std::error::Error + Send + Sync>> {
                let options = TunOptions {
                    persistent: false,
                    offload,
                };
                let tuns = Tun::open_queues("podnet0", options, queues)?;
                link::set_up("lo")?;
                link::set_mtu("podnet0", 1500)?;
                link::add_address("podnet0", GATEWAY.parse().unwrap())?;
                link::set_up("podnet0")?;
                Ok(tuns)
            },
        )
        .unwrap()
        .unwrap();
    for tun in &tuns {
        assert!(tun.multi_queue());
        assert_eq!(tun.offload(), offload);
        tun.set_nonblocking(true).unwrap();
    }
    tuns
}

/// Opens a pod's `eth0` in `ns` with address `ip`/32 and a default route.
fn pod_eth0(ns: &NsGuard, ip: Ipv4Addr, offload: bool) -> Tun {
    let tun = ns
        .ns
        .run(
            move || -> Result<Tun, Box<dyn std::error::Error + Send + Sync>> {
                let tun = Tun::open(
                    "eth0",
                    TunOptions {
                        persistent: true,
                        offload,
                    },
                )?;
                link::set_up("lo")?;
                link::set_mtu("eth0", 1500)?;
                link::add_address("eth0", format!("{ip}/32").parse().unwrap())?;
                link::set_up("eth0")?;
                link::add_route("0.0.0.0/0".parse().unwrap(), "eth0")?;
                Ok(tun)
            },
        )
        .unwrap()
        .unwrap();
    tun.set_nonblocking(true).unwrap();
    tun
}

/// The queues the kernel shows for `dev` in `ns` (`/sys/class/net/DEV/queues`,
/// read through `ip netns exec`, which mounts the namespace's sysfs).
fn queue_dirs(ns: &NsGuard, dev: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns.name(), "ls"])
        .arg(format!("/sys/class/net/{dev}/queues"))
        .output()
        .expect("running ip netns exec ls");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut dirs: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    dirs.sort();
    dirs
}

/// Kills a child process on drop (a failing test leaves none behind).
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for a child, killing it if it has not finished after `limit` (a
/// hang guard, not a timing assertion); returns its stdout.
fn finish(mut child: ChildGuard, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            let mut out = String::new();
            if let Some(mut s) = child.0.stdout.take() {
                std::io::Read::read_to_string(&mut s, &mut out).unwrap();
            }
            let mut err = String::new();
            if let Some(mut s) = child.0.stderr.take() {
                std::io::Read::read_to_string(&mut s, &mut err).unwrap();
            }
            assert!(status.success(), "{status}: {out}\n{err}");
            return out;
        }
        assert!(Instant::now() < deadline, "a transfer process hung");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An echo server: sends back every byte it receives on one connection.
const ECHO_SERVER: &str = r#"
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(1)
print("listening", flush=True)
c, _ = s.accept()
while True:
    b = c.recv(1 << 20)
    if not b:
        break
    c.sendall(b)
c.close()
print("server ok", flush=True)
"#;

/// Sends N pseudo-random bytes to the echo server while reading them back
/// (a second thread), and checks what came back.
const ECHO_CLIENT: &str = r#"
import hashlib, random, socket, sys, threading, time
ip, port, n = sys.argv[2], int(sys.argv[1]), int(sys.argv[3])
data = random.Random(ip).randbytes(n)
for attempt in range(100):
    try:
        c = socket.create_connection((ip, port), timeout=30)
        break
    except OSError:
        time.sleep(0.1)
else:
    raise SystemExit("cannot connect to " + ip)
def send():
    c.sendall(data)
    c.shutdown(socket.SHUT_WR)
t = threading.Thread(target=send)
t.start()
h, got = hashlib.sha256(), 0
while True:
    b = c.recv(1 << 20)
    if not b:
        break
    h.update(b)
    got += len(b)
t.join()
assert (got, h.hexdigest()) == (n, hashlib.sha256(data).hexdigest()), f"echo from {ip}: {got} of {n} bytes"
print("client ok", flush=True)
"#;

fn python_in(ns: &NsGuard, script: &str, args: &[String]) -> ChildGuard {
    ChildGuard(
        Command::new("ip")
            .args(["netns", "exec", ns.name(), "python3", "-c", script])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 must be installed"),
    )
}

/// A node namespace with a two-queue `podnet0` and two pods joined by a
/// two-worker data plane; from the node, one echo connection to each pod
/// at once.
fn two_host_streams(offload: bool) {
    let pods: Vec<NsGuard> = (0..2).map(|_| NsGuard::new("mqp")).collect();
    let node = NsGuard::new("mqn");
    let host = host_device(&node, 2, offload);
    assert_eq!(
        queue_dirs(&node, "podnet0"),
        ["rx-0", "rx-1", "tx-0", "tx-1"]
    );
    let eths: Vec<Arc<Tun>> = pods
        .iter()
        .zip(POD_IPS)
        .map(|(ns, ip)| Arc::new(pod_eth0(ns, ip, offload)))
        .collect();

    let router = Arc::new(Router::new(RouterConfig::default()));
    let addrs: Vec<(PodId, PodAddrs)> = POD_IPS
        .iter()
        .enumerate()
        .map(|(i, &ip)| {
            (
                PodId(i as u32 + 1),
                PodAddrs {
                    v4: Some(ip),
                    v6: None,
                },
            )
        })
        .collect();
    router.set_pods(&addrs).unwrap();
    let mut dataplane = Dataplane::start(router.clone(), 2, Instant::now()).unwrap();
    assert_eq!(dataplane.workers(), 2);
    // Queues and devices go round robin: the host's two queues to workers
    // 0 and 1, then pod 1 to worker 0 and pod 2 to worker 1.
    dataplane.add(Link::Host, host);
    for (i, eth) in eths.into_iter().enumerate() {
        dataplane.add(Link::Pod(PodId(i as u32 + 1)), eth);
    }

    let mut servers = Vec::new();
    for ns in &pods {
        let mut srv = python_in(ns, ECHO_SERVER, &[PORT.to_string()]);
        let mut line = String::new();
        BufReader::new(srv.0.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "listening");
        servers.push(srv);
    }
    let clients: Vec<ChildGuard> = POD_IPS
        .iter()
        .map(|ip| {
            python_in(
                &node,
                ECHO_CLIENT,
                &[PORT.to_string(), ip.to_string(), BYTES.to_string()],
            )
        })
        .collect();
    for cli in clients {
        let out = finish(cli, Duration::from_secs(120));
        assert!(out.contains("client ok"), "{out}");
    }
    for srv in servers {
        let out = finish(srv, Duration::from_secs(30));
        assert!(out.contains("server ok"), "{out}");
    }
    dataplane.stop();
    let st = dataplane.stats();
    let stats = router.stats();
    let unsteered = st.host_unsteered.load(Ordering::Relaxed);
    eprintln!(
        "{} packets to pods, {} to the host, {unsteered} from the host read by a worker not serving their pod",
        stats.forwarded_to_pod, stats.forwarded_to_host,
    );
    assert!(stats.forwarded_to_host > 0);
    assert_eq!(st.offload_errors.load(Ordering::Relaxed), 0);
    // Only a flow's first packets (before the kernel has seen a reply on
    // the pod's worker's queue) may reach the other worker; were replies
    // written on another queue, half the host's packets would.
    assert!(
        unsteered * 10 <= stats.forwarded_to_pod,
        "{unsteered} of {} packets from the host were read by the wrong worker",
        stats.forwarded_to_pod
    );
    drop(dataplane);
    drop(node);
}

#[test]
fn two_host_streams_to_pods_on_two_workers_complete_with_offloads() {
    two_host_streams(true);
}

#[test]
fn two_host_streams_to_pods_on_two_workers_complete_without_offloads() {
    two_host_streams(false);
}

#[test]
fn a_multi_queue_device_opens_every_queue_and_reattaches_only_as_multi_queue() {
    let node = NsGuard::new("mqr");
    let options = TunOptions {
        persistent: true,
        offload: true,
    };
    let result = node
        .ns
        .run(move || -> Result<(), String> {
            let queues = Tun::open_queues("mq0", options, 3).map_err(|e| e.to_string())?;
            if queues.len() != 3 || queues.iter().any(|q| !q.multi_queue() || q.name() != "mq0") {
                return Err(format!("queues: {queues:?}"));
            }
            // While the queues are open, a single-queue open of the same
            // name is refused (the flags differ) and says so.
            match Tun::open("mq0", options) {
                Err(e @ TunError::Create { .. }) => {
                    if !e.to_string().contains("IFF_MULTI_QUEUE") {
                        return Err(format!("error does not name the flag: {e}"));
                    }
                }
                other => {
                    return Err(format!(
                        "single-queue open of a multi-queue device: {other:?}"
                    ))
                }
            }
            drop(queues);
            // The persistent device outlives its queues: reattach with
            // the same flag, one queue this time.
            let again = Tun::open_queues("mq0", options, 1).map_err(|e| e.to_string())?;
            if again.len() != 1 || !again[0].offload() {
                return Err(format!("reattached: {again:?}"));
            }
            again[0].set_persistent(false).map_err(|e| e.to_string())?;
            Ok(())
        })
        .unwrap();
    result.unwrap();
    assert!(!node.ip(&["link", "show"]).contains("mq0"));
}
