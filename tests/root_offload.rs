//! Root tests of TUN offloads: devices opened with virtio-net headers (and
//! reattached with the same flags), and real kernel TCP moved through the
//! data plane between two pod namespaces via a service address, once with
//! offloads on both sides (super-packets pass through whole) and once with
//! a receiver without offloads (super-packets are cut into segments in
//! software and the receiving kernel verifies every checksum).
//!
//! Every packet stays inside the namespaces the test creates: the data
//! plane runs in this process and links only their two TUN devices.

mod sys_support;

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use podnet::daemon::dataplane::Dataplane;
use podnet::packet::service::{Backend, Frontend, PoolId, PoolSpec};
use podnet::packet::{Link, PodAddrs, PodId, Router, RouterConfig};
use podnet::sys::link;
use podnet::sys::tun::{Tun, TunOptions, VNET_HDR_LEN};
use sys_support::NsGuard;

const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 5);
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 6);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const CLIENT_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0x244, 0, 0, 0, 0, 5);
const SERVER_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0x244, 0, 0, 0, 0, 6);
const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0x96, 0, 0, 0, 0, 0x10);

/// Opens `eth0` in `ns` and configures it as the daemon does a dual-stack pod's.
fn pod_eth0(ns: &NsGuard, ip: Ipv4Addr, ip6: Ipv6Addr, offload: bool) -> Tun {
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
                link::add_address("eth0", format!("{ip6}/128").parse().unwrap())?;
                link::set_up("eth0")?;
                link::add_route("0.0.0.0/0".parse().unwrap(), "eth0")?;
                link::add_route("::/0".parse().unwrap(), "eth0")?;
                Ok(tun)
            },
        )
        .unwrap()
        .unwrap();
    assert_eq!(tun.offload(), offload);
    tun.set_nonblocking(true).unwrap();
    tun
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

/// Both sides generate the same pseudo-random bytes and check the SHA-256
/// of what they receive.
const COMMON: &str = r#"
import hashlib, random, socket, sys, time
N = int(sys.argv[2])
DATA = random.Random(7).randbytes(N)
WANT = hashlib.sha256(DATA).hexdigest()
def recv_all(c, n):
    h, got = hashlib.sha256(), 0
    while got < n:
        b = c.recv(1 << 20)
        if not b:
            break
        h.update(b)
        got += len(b)
    return got, h.hexdigest()
"#;

const SERVER: &str = r#"
s = socket.socket(socket.AF_INET6)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", 8080))
s.listen(1)
print("listening", flush=True)
c, _ = s.accept()
got, digest = recv_all(c, N)
assert (got, digest) == (N, WANT), f"server received {got} bytes, sha256 {digest}"
c.sendall(DATA)
c.shutdown(socket.SHUT_WR)
c.recv(1)
print("server ok", flush=True)
"#;

const CLIENT: &str = r#"
for attempt in range(100):
    try:
        c = socket.create_connection((sys.argv[1], 80), timeout=30)
        break
    except OSError:
        time.sleep(0.1)
else:
    raise SystemExit("cannot connect")
c.sendall(DATA)
got, digest = recv_all(c, N)
assert (got, digest) == (N, WANT), f"client received {got} bytes, sha256 {digest}"
c.close()
print("client ok", flush=True)
"#;

fn python_in(ns: &NsGuard, script: &str, vip: IpAddr, bytes: usize) -> ChildGuard {
    ChildGuard(
        Command::new("ip")
            .args(["netns", "exec", ns.name(), "python3", "-c"])
            .arg(format!("{COMMON}{script}"))
            .arg(vip.to_string())
            .arg(bytes.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 must be installed"),
    )
}

/// Two dual-stack pod namespaces (client 10.244.0.5 and fd00:10:244::5,
/// server .6 and ::6) joined by an in-process data plane, with a service
/// 10.96.0.10 and fd00:10:96::10, port `ports.0` -> server `ports.1`
/// over `protocol`. Fields drop in order: the data plane
/// (closing the devices) before the namespaces.
struct TwoPods {
    dataplane: Dataplane,
    router: Arc<Router>,
    client_udp_offload: bool,
    server_ns: NsGuard,
    client_ns: NsGuard,
}

impl TwoPods {
    fn new(client_offload: bool, server_offload: bool, protocol: u8, ports: (u16, u16)) -> TwoPods {
        let client_ns = NsGuard::new("offc");
        let server_ns = NsGuard::new("offs");
        let client = Arc::new(pod_eth0(&client_ns, CLIENT_IP, CLIENT_IP6, client_offload));
        let server = Arc::new(pod_eth0(&server_ns, SERVER_IP, SERVER_IP6, server_offload));
        let client_udp_offload = client.udp_offload();

        let router = Arc::new(Router::new(RouterConfig::default()));
        let (c, s) = (PodId(1), PodId(2));
        let addrs = |ip, ip6| PodAddrs {
            v4: Some(ip),
            v6: Some(ip6),
        };
        router
            .set_pods(&[
                (c, addrs(CLIENT_IP, CLIENT_IP6)),
                (s, addrs(SERVER_IP, SERVER_IP6)),
            ])
            .unwrap();
        // One pool per family: a service address translates to a backend
        // of its own family.
        let pools = [
            (PoolId(1), IpAddr::V4(VIP), IpAddr::V4(SERVER_IP)),
            (PoolId(2), IpAddr::V6(VIP6), IpAddr::V6(SERVER_IP6)),
        ];
        let specs: Vec<PoolSpec> = pools
            .iter()
            .map(|&(id, vip, _)| PoolSpec {
                id,
                frontends: vec![Frontend {
                    addr: vip,
                    port: ports.0,
                    protocol,
                }],
                session_affinity: None,
                traffic: Default::default(),
            })
            .collect();
        router.set_services(&specs).unwrap();
        for (id, _, backend) in pools {
            router
                .set_endpoints(
                    id,
                    &[Backend {
                        addr: SocketAddr::new(backend, ports.1),
                        terminating: false,
                    }],
                )
                .unwrap();
        }
        let dataplane = Dataplane::start(router.clone(), 2, Instant::now()).unwrap();
        dataplane.add(Link::Pod(c), client);
        dataplane.add(Link::Pod(s), server);
        TwoPods {
            dataplane,
            router,
            client_udp_offload,
            server_ns,
            client_ns,
        }
    }

    /// Runs `server` in the server pod until it prints `listening`, then
    /// `client` in the client pod, towards `vip`; both must succeed.
    fn run(&self, server: &str, client: &str, bytes: usize, vip: IpAddr) {
        let mut srv = python_in(&self.server_ns, server, vip, bytes);
        let mut line = String::new();
        BufReader::new(srv.0.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "listening");
        let cli = python_in(&self.client_ns, client, vip, bytes);
        let cli_out = finish(cli, Duration::from_secs(60));
        let srv_out = finish(srv, Duration::from_secs(30));
        assert!(cli_out.contains("client ok"), "{cli_out}");
        assert!(srv_out.contains("server ok"), "{srv_out}");
    }

    /// Stops the data plane; returns (super-packets segmented in software,
    /// packets forwarded to pods).
    fn finish(mut self) -> (u64, u64) {
        self.dataplane.stop();
        let st = self.dataplane.stats();
        eprintln!(
            "{} forwarded to pods, {} super-packets segmented, {} checksums finished",
            self.router.stats().forwarded_to_pod,
            st.segmented.load(Ordering::Relaxed),
            st.checksums_finished.load(Ordering::Relaxed)
        );
        assert_eq!(st.offload_errors.load(Ordering::Relaxed), 0);
        (
            st.segmented.load(Ordering::Relaxed),
            self.router.stats().forwarded_to_pod,
        )
    }
}

/// Moves `bytes` each way over one TCP connection client -> service `vip`
/// -> server; returns (super-packets segmented, packets forwarded to pods).
fn transfer(client_offload: bool, server_offload: bool, bytes: usize, vip: IpAddr) -> (u64, u64) {
    let pods = TwoPods::new(client_offload, server_offload, 6, (80, 8080));
    pods.run(SERVER, CLIENT, bytes, vip);
    pods.finish()
}

const BYTES: usize = 16 << 20;

#[test]
fn tcp_through_a_service_with_offloads_on_both_sides_moves_super_packets_whole() {
    let (segmented, forwarded) = transfer(true, true, BYTES, IpAddr::V4(VIP));
    assert_eq!(segmented, 0, "both sides take super-packets: none is cut");
    // 32 MiB moved in both directions, plus ACKs: one MSS per packet would
    // take more than 2 * 16 MiB / 1460 forwarded packets. Fewer show that
    // super-packets went through whole.
    let one_mss_each = 2 * BYTES as u64 / 1460;
    assert!(
        forwarded < one_mss_each,
        "{forwarded} packets forwarded for {one_mss_each} MSS-sized segments of data"
    );
}

#[test]
fn tcp_to_a_receiver_without_offloads_is_segmented_and_verified_by_its_kernel() {
    // The server's kernel gets only plain segments (no virtio header) and
    // verifies every checksum: a wrong seed from the NAT, or a wrong
    // segment, loses data and fails the SHA-256 check.
    let (segmented, _) = transfer(true, false, BYTES, IpAddr::V4(VIP));
    assert!(
        segmented > 0,
        "the client's super-packets were cut in software"
    );
}

#[test]
fn tcp_without_offloads_on_either_side_still_works() {
    let (segmented, _) = transfer(false, false, 4 << 20, IpAddr::V4(VIP));
    assert_eq!(segmented, 0);
}

/// IPv6 (TSO6 super-packets, the general path rather than the IPv4 fast
/// path): whole to a receiver with offloads, segmented and verified by the
/// kernel of one without.
#[test]
fn tcp_over_ipv6_through_a_service_with_and_without_receiver_offloads() {
    let (segmented, forwarded) = transfer(true, true, BYTES, IpAddr::V6(VIP6));
    assert_eq!(segmented, 0);
    assert!(
        forwarded < 2 * BYTES as u64 / 1440,
        "{forwarded} packets forwarded"
    );
    let (segmented, _) = transfer(true, false, BYTES, IpAddr::V6(VIP6));
    assert!(
        segmented > 0,
        "the client's super-packets were cut in software"
    );
}

/// UDP segmentation offload (a socket with UDP_SEGMENT): the client's
/// kernel hands over one super-datagram of 10 segments; the server must
/// receive the 10 datagrams intact, through the service's NAT.
const UDP_SERVER: &str = r#"
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", 9000))
print("listening", flush=True)
seen = set()
while len(seen) < 10:
    b, peer = s.recvfrom(65536)
    i = int.from_bytes(b[:4], "big")
    assert len(b) == 1400 and b == i.to_bytes(4, "big") + DATA[i * 1396:(i + 1) * 1396], f"datagram {i}: {len(b)} bytes"
    seen.add(i)
s.sendto(b"ok", peer)
print("server ok", flush=True)
"#;

const UDP_CLIENT: &str = r#"
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(17, 103, 1400)  # SOL_UDP, UDP_SEGMENT: 1400-byte segments
s.connect((sys.argv[1], 53))
s.settimeout(1)
burst = b"".join(i.to_bytes(4, "big") + DATA[i * 1396:(i + 1) * 1396] for i in range(10))
for attempt in range(20):
    s.send(burst)
    try:
        if s.recv(10) == b"ok":
            print("client ok", flush=True)
            break
    except OSError:
        pass
else:
    raise SystemExit("no answer")
"#;

#[test]
fn udp_super_datagrams_reach_receivers_with_and_without_offloads_over_both_families() {
    for (server_offload, vip) in [
        (true, IpAddr::V4(VIP)),
        (false, IpAddr::V4(VIP)),
        (true, IpAddr::V6(VIP6)),
        (false, IpAddr::V6(VIP6)),
    ] {
        let pods = TwoPods::new(true, server_offload, 17, (53, 9000));
        let uso = pods.client_udp_offload;
        pods.run(UDP_SERVER, UDP_CLIENT, 1396 * 10, vip);
        let (segmented, _) = pods.finish();
        if !server_offload && uso {
            assert!(
                segmented > 0,
                "the client's USO super-datagram was cut in software"
            );
        }
        if server_offload {
            assert_eq!(segmented, 0);
        }
    }
}

/// A write with a virtio-net header reaches the namespace's kernel (a
/// partial UDP checksum that kernel finishes and accepts); reattaching by
/// name with offloads gives a device with offloads again, and without them
/// a plain one whose reads carry no header.
#[test]
fn offload_devices_take_virtio_headers_and_reattach_with_the_same_flags() {
    let ns = NsGuard::new("offd");
    let tun = pod_eth0(
        &ns,
        Ipv4Addr::new(10, 99, 0, 2),
        "fd00:99::2".parse().unwrap(),
        true,
    );
    // UDP 10.99.1.1:40000 -> 10.99.0.2:9 (closed), its checksum left partial:
    // the field holds the pseudo-header seed.
    let payload = b"offload";
    let total = 28 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&[10, 99, 1, 1]);
    p[16..20].copy_from_slice(&[10, 99, 0, 2]);
    let c = podnet::packet::wire::checksum::internet_checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20..22].copy_from_slice(&40000u16.to_be_bytes());
    p[22..24].copy_from_slice(&9u16.to_be_bytes());
    p[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p[28..].copy_from_slice(payload);
    let seed = podnet::packet::wire::checksum::fold(podnet::packet::wire::checksum::pseudo_header(
        IpAddr::V4(Ipv4Addr::new(10, 99, 1, 1)),
        IpAddr::V4(Ipv4Addr::new(10, 99, 0, 2)),
        17,
        (8 + payload.len()) as u32,
    ));
    p[26..28].copy_from_slice(&seed.to_be_bytes());
    use podnet::packet::wire::virtio::{flags, VnetHdr};
    let hdr = VnetHdr {
        flags: flags::NEEDS_CSUM,
        csum_start: 20,
        csum_offset: 6,
        ..VnetHdr::NONE
    };
    assert_eq!(tun.write_offload(&hdr.to_bytes(), &p).unwrap(), total);
    expect_port_unreachable(&tun, &p[..28]);
    // Without offloads such a header is refused rather than sent mangled.
    drop(tun);
    let plain = ns
        .ns
        .run(|| {
            Tun::open(
                "eth0",
                TunOptions {
                    persistent: true,
                    offload: false,
                },
            )
        })
        .unwrap()
        .unwrap();
    assert!(!plain.offload());
    plain.set_nonblocking(true).unwrap();
    let e = plain.write_offload(&hdr.to_bytes(), &p).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    // A plain packet with a full checksum works on the plain device.
    let mut full = p.clone();
    full[26..28].copy_from_slice(&[0, 0]);
    let sum = podnet::packet::wire::checksum::sum(&full[20..], u32::from(seed));
    full[26..28].copy_from_slice(&podnet::packet::wire::checksum::finish(sum).to_be_bytes());
    assert_eq!(plain.write(&full).unwrap(), total);
    expect_port_unreachable(&plain, &full[..28]);
    drop(plain);
    let again = ns
        .ns
        .run(|| {
            Tun::open(
                "eth0",
                TunOptions {
                    persistent: true,
                    offload: true,
                },
            )
        })
        .unwrap()
        .unwrap();
    assert!(again.offload());
    again.set_nonblocking(true).unwrap();
    assert_eq!(again.write(&full).unwrap(), total);
    expect_port_unreachable(&again, &full[..28]);
    again.set_persistent(false).unwrap();
}

/// Reads until the namespace's ICMP port unreachable about `quoted` comes
/// out (bounded wait).
fn expect_port_unreachable(tun: &Tun, quoted: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = vec![0u8; 70_000];
    loop {
        assert!(
            Instant::now() < deadline,
            "no ICMP port unreachable came back"
        );
        let mut hdr = [0u8; VNET_HDR_LEN];
        let n = match tun.read_offload(&mut hdr, &mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            Err(e) => panic!("reading the TUN: {e}"),
        };
        let p = &buf[..n];
        if n < 56 || p[0] != 0x45 || p[9] != 1 {
            continue; // IPv6 chatter
        }
        assert_eq!((p[20], p[21]), (3, 3), "ICMP port unreachable");
        // The quoted UDP checksum is the finished one on both paths.
        assert_eq!(&p[28..48], &quoted[..20], "quoted IP header");
        assert_eq!(&p[48..54], &quoted[20..26], "quoted UDP ports and length");
        return;
    }
}
