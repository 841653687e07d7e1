//! Fast-path costs: conntrack hit, the same for a 64 KiB super-packet with a
//! partial checksum, new flow (also with 1,000 NetworkPolicies loaded), hit
//! while endpoints change, and one service's endpoint update with 10,000
//! services loaded.
//!
//! `scripts/bench-fastpath.sh` runs this and prints the `name: value` lines.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use crossbeam::epoch;
use podnet::packet::conntrack::ConnTrackConfig;
use podnet::packet::policy::{Isolation, Peers, PodPolicy, PolicySnapshot, PortMatch, Rule};
use podnet::packet::service::{Backend, Frontend, PoolId, PoolSpec};
use podnet::packet::{Link, PacketBuf, PodAddrs, PodId, Router, RouterConfig, Timestamp, Verdict};

const NOW: Timestamp = Timestamp::from_secs(1);
const CLIENT: PodId = PodId(1);

fn ip(d: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 0, d)
}

fn vip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a60_0000 + i)
}

fn checksum(data: &[u8], initial: u32) -> u16 {
    podnet::packet::wire::checksum::finish(podnet::packet::wire::checksum::sum(data, initial))
}

/// A 64-byte TCP/IPv4 packet (20 IP + 20 TCP + 24 payload).
fn tcp_packet(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, flags: u8) -> Vec<u8> {
    let mut p = vec![0u8; 64];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&64u16.to_be_bytes());
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let t = &mut p[20..];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&1000u32.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&65535u16.to_be_bytes());
    for (i, b) in t[20..].iter_mut().enumerate() {
        *b = i as u8;
    }
    fix_checksums(&mut p);
    p
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

fn backends(base: u8, n: u8) -> Vec<Backend> {
    (0..n)
        .map(|i| Backend {
            addr: SocketAddr::from((ip(base + i), 8080)),
            terminating: false,
        })
        .collect()
}

/// A node with `services` services of `per_service` endpoints each; the
/// first service is 10.96.0.0:80.
fn node(services: u32, per_service: u8, max_flows: usize) -> Router {
    let r = Router::new(RouterConfig {
        conntrack: ConnTrackConfig {
            max_entries: max_flows,
            ..ConnTrackConfig::default()
        },
        ..RouterConfig::default()
    });
    let mut pods = vec![(
        CLIENT,
        PodAddrs {
            v4: Some(ip(5)),
            v6: None,
        },
    )];
    for i in 0..per_service {
        pods.push((
            PodId(10 + u32::from(i)),
            PodAddrs {
                v4: Some(ip(10 + i)),
                v6: None,
            },
        ));
    }
    r.set_pods(&pods).unwrap();
    let specs: Vec<PoolSpec> = (0..services)
        .map(|i| PoolSpec {
            id: PoolId(i),
            frontends: vec![Frontend {
                addr: vip(i).into(),
                port: 80,
                protocol: 6,
            }],
            session_affinity: None,
            traffic: Default::default(),
        })
        .collect();
    r.set_services(&specs).unwrap();
    for i in 0..services {
        r.set_endpoints(PoolId(i), &backends(10, per_service))
            .unwrap();
    }
    r
}

/// Times conntrack hits: one established flow, the client's 64-byte data
/// segment processed again and again (restoring the bytes costs a 64-byte
/// copy per packet, included).
fn hit(c: &mut Criterion, name: &str, r: &Router) {
    let syn = tcp_packet(ip(5), 40000, vip(0), 80, SYN);
    let mut buf = PacketBuf::new(2048);
    buf.buffer_mut()[..64].copy_from_slice(&syn);
    buf.set_len(64);
    let Verdict::Forward(Link::Pod(backend)) = r.process(NOW, &mut buf, Link::Pod(CLIENT)) else {
        panic!("SYN not forwarded to a pod");
    };
    // Complete the handshake so the flow is established, as a busy flow is.
    let server = Ipv4Addr::from(<[u8; 4]>::try_from(&buf.as_slice()[16..20]).unwrap());
    let synack = tcp_packet(server, 8080, ip(5), 40000, SYN | ACK);
    buf.buffer_mut()[..64].copy_from_slice(&synack);
    buf.set_len(64);
    assert_eq!(
        r.process(NOW, &mut buf, Link::Pod(backend)),
        Verdict::Forward(Link::Pod(CLIENT))
    );
    let data = tcp_packet(ip(5), 40000, vip(0), 80, ACK);
    buf.buffer_mut()[..64].copy_from_slice(&data);
    buf.set_len(64);
    assert!(matches!(
        r.process(NOW, &mut buf, Link::Pod(CLIENT)),
        Verdict::Forward(_)
    ));
    assert_eq!(r.flows()[0].state.name(), "ESTABLISHED");
    // As a daemon worker runs: a Worker handle, batches of 64 packets.
    let mut w = r.worker();
    let mut n = 0u32;
    c.bench_function(name, |b| {
        b.iter(|| {
            buf.buffer_mut()[..64].copy_from_slice(&data);
            buf.set_len(64);
            let v = w.process(NOW, &mut buf, Link::Pod(CLIENT));
            n += 1;
            if n.is_multiple_of(64) {
                w.end_batch();
            }
            black_box(v)
        })
    });
    if name == "fastpath/hit" {
        gso_rewrite(c, &mut w, &data);
    }
    drop(w);
    // The same through `Router::process` (snapshot load and epoch pin per packet).
    c.bench_function(&format!("{name}_unbatched"), |b| {
        b.iter(|| {
            buf.buffer_mut()[..64].copy_from_slice(&data);
            buf.set_len(64);
            black_box(r.process(NOW, &mut buf, Link::Pod(CLIENT)))
        })
    });
}

/// Times the NAT of a 64 KiB TSO super-packet of the established flow whose
/// 64-byte `data` segment `hit` times: NEEDS_CSUM, so only its headers and
/// the checksum seed change; it should cost what a 64-byte packet does.
/// Restoring the 40 header bytes per packet is included.
fn gso_rewrite(c: &mut Criterion, w: &mut podnet::packet::router::Worker<'_>, data: &[u8]) {
    use podnet::packet::wire::checksum::{fold, sum};
    use podnet::packet::wire::virtio::{flags, gso, VnetHdr};
    const PAYLOAD: usize = 65_000;
    let total = 40 + PAYLOAD;
    let mut p = vec![0u8; total];
    p[..40].copy_from_slice(&data[..40]);
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    for (i, b) in p[40..].iter_mut().enumerate() {
        *b = i as u8;
    }
    p[10..12].copy_from_slice(&[0, 0]);
    let c4 = checksum(&p[..20], 0);
    p[10..12].copy_from_slice(&c4.to_be_bytes());
    // The seed: the folded pseudo-header sum (addresses, protocol, length).
    let mut pseudo = [0u8; 12];
    pseudo[0..8].copy_from_slice(&p[12..20]);
    pseudo[9] = 6;
    pseudo[10..12].copy_from_slice(&((total - 20) as u16).to_be_bytes());
    p[36..38].copy_from_slice(&fold(sum(&pseudo, 0)).to_be_bytes());
    let hdr = VnetHdr {
        flags: flags::NEEDS_CSUM,
        gso_type: gso::TCPV4,
        hdr_len: 40,
        gso_size: 1448,
        csum_start: 20,
        csum_offset: 16,
    };
    let mut buf = PacketBuf::new(PacketBuf::DEFAULT_CAPACITY + 1024);
    buf.buffer_mut()[..total].copy_from_slice(&p);
    buf.set_len(total);
    buf.set_vnet(hdr);
    assert!(matches!(
        w.process(NOW, &mut buf, Link::Pod(CLIENT)),
        Verdict::Forward(_)
    ));
    assert_eq!(buf.vnet(), hdr, "a super-packet stays one");
    let mut n = 0u32;
    c.bench_function("fastpath/gso_rewrite", |b| {
        b.iter(|| {
            buf.buffer_mut()[..40].copy_from_slice(&p[..40]);
            buf.set_len(total);
            buf.set_vnet(hdr);
            let v = w.process(NOW, &mut buf, Link::Pod(CLIENT));
            n += 1;
            if n.is_multiple_of(64) {
                w.end_batch();
            }
            black_box(v)
        })
    });
}

/// The pieces of a hit, to see where its time goes.
fn pieces(c: &mut Criterion) {
    use podnet::packet::wire;
    let data = tcp_packet(ip(5), 40000, vip(0), 80, ACK);
    let mut buf = data.clone();
    c.bench_function("wire/parse", |b| {
        b.iter(|| wire::parse(black_box(&buf)).is_ok())
    });
    let info = wire::parse(&data).unwrap();
    let ep = [
        wire::Endpoints {
            src: ip(5).into(),
            src_port: 40000,
            dst: ip(10).into(),
            dst_port: 8080,
        },
        wire::Endpoints {
            src: ip(5).into(),
            src_port: 40000,
            dst: vip(0).into(),
            dst_port: 80,
        },
    ];
    let mut i = 0;
    c.bench_function("wire/rewrite", |b| {
        b.iter(|| {
            i ^= 1;
            wire::rewrite(black_box(&mut buf), &info, &ep[i]);
        })
    });
}

fn fastpath(c: &mut Criterion) {
    pieces(c);
    let r = node(1, 3, 1 << 16);
    hit(c, "fastpath/hit", &r);

    // While another thread publishes 1,000 endpoint changes per second
    // (a backend of the same service comes and goes).
    let r = Arc::new(node(1, 4, 1 << 16));
    let stop = Arc::new(AtomicBool::new(false));
    let updater = {
        let r = r.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (three, four) = (backends(10, 3), backends(10, 4));
            let mut n = 0u64;
            let start = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let set = if n.is_multiple_of(2) { &three } else { &four };
                r.set_endpoints(PoolId(0), set).unwrap();
                n += 1;
                let due = start + Duration::from_micros(n * 1000);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            n as f64 / start.elapsed().as_secs_f64()
        })
    };
    hit(c, "fastpath/hit_under_updates", &r);
    stop.store(true, Ordering::Relaxed);
    let rate = updater.join().unwrap();
    eprintln!("fastpath/hit_under_updates: endpoint updates per second: {rate:.0}");

    // New flows, then the same with 1,000 NetworkPolicies loaded (the
    // backends isolated, the clients let in by an ipBlock rule).
    new_flows(c, "fastpath/new_flow", &node(1, 10, NEW_FLOW_TABLE));
    let r = node(1, 10, NEW_FLOW_TABLE);
    r.set_policy(thousand_policies());
    new_flows(c, "policy/new_flow", &r);

    // One service's endpoints changed with 10,000 services x 10 endpoints.
    let r = node(10_000, 10, 1 << 10);
    let (ten, other) = (backends(10, 10), backends(11, 10));
    let mut flip = false;
    c.bench_function("snapshot/update", |b| {
        b.iter(|| {
            flip = !flip;
            r.set_endpoints(PoolId(1234), if flip { &other } else { &ten })
                .unwrap()
        })
    });
}

/// New flows are timed in batches of this many SYNs.
const BATCH: usize = 4096;
/// Batches kept in the table: it holds 65,536 flows while timed.
const LIVE_BATCHES: u32 = 16;
/// The conntrack table size for the new-flow benchmarks.
const NEW_FLOW_TABLE: usize = BATCH * LIVE_BATCHES as usize * 2;

/// Times new flows through `r` (a `node(1, 10, NEW_FLOW_TABLE)`).
fn new_flows(c: &mut Criterion, name: &str, r: &Router) {
    // New flows: every packet a SYN from a new client (address, port), into
    // a table kept at a steady 65,536 flows as a daemon's is: after each
    // timed batch of 4,096 new flows, the oldest 4,096 are removed, untimed,
    // as the sweeper removes expired flows. Packets are built untimed too.
    let template = tcp_packet(ip(5), 1, vip(0), 80, SYN);
    // Batch k comes from 11.0.x.y = 0x0b000000 + k, ports 1024.. ; built
    // into one reused buffer, so preparing a batch maps no fresh pages.
    let fill_batch = |k: u32, out: &mut Vec<[u8; 64]>| {
        out.clear();
        out.extend((0..BATCH).map(|n| {
            let mut b = [0u8; 64];
            b.copy_from_slice(&template);
            // Host-side sources: not pinned to a pod, so always fresh.
            b[12..16].copy_from_slice(&(0x0b00_0000 + k).to_be_bytes());
            b[20..22].copy_from_slice(&(n as u16 + 1024).to_be_bytes());
            fix_checksums(&mut b);
            b
        }));
    };
    let mut packets: Vec<[u8; 64]> = Vec::with_capacity(BATCH);
    let mut buf = PacketBuf::new(2048);
    let send = |r: &Router, packets: &[[u8; 64]], buf: &mut PacketBuf| {
        for p in packets {
            buf.buffer_mut()[..64].copy_from_slice(p);
            buf.set_len(64);
            let v = r.process(NOW, buf, Link::Host);
            let _ = black_box(v);
        }
    };
    let mut k = 0u32;
    for _ in 0..LIVE_BATCHES {
        fill_batch(k, &mut packets);
        send(r, &packets, &mut buf);
        k += 1;
    }
    c.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0u64;
            while done < iters {
                let n = (iters - done).min(BATCH as u64) as usize;
                fill_batch(k, &mut packets);
                let guard = epoch::pin();
                let start = Instant::now();
                send(r, &packets[..n], &mut buf);
                total += start.elapsed();
                drop(guard);
                done += n as u64;
                let oldest = std::net::IpAddr::from((0x0b00_0000 + k - LIVE_BATCHES).to_be_bytes());
                r.conntrack().remove_where(|f| f.original().src == oldest);
                k += 1;
            }
            total
        })
    });
    assert!(r.conntrack().len() <= BATCH * LIVE_BATCHES as usize);
    let st = r.stats();
    assert!(
        st.replies == 0 && st.drops.iter().all(|&d| d == 0),
        "new flows were not all forwarded: {st:?}"
    );
}

/// A policy snapshot of 1,000 NetworkPolicies over 2,000 pods: pod i of
/// 10.245.0.0/16 is isolated by policy i (i < 990), letting in one tenth
/// of the pods on TCP 8080; the ten backends 10.244.0.10-19 are isolated
/// by a deny-all policy, one letting in 200 of those pods and one letting
/// in the benchmark's clients (11.0.0.0/8) on TCP 8080.
fn thousand_policies() -> PolicySnapshot {
    let others: Vec<IpAddr> = (0..2000u32)
        .map(|i| IpAddr::V4(Ipv4Addr::from(0x0af5_0000 + i)))
        .collect();
    let group = |g: usize| -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = others.iter().skip(g).step_by(10).copied().collect();
        v.sort();
        v
    };
    let rule = |policy: String, peers: Peers| Rule {
        policy: policy.into(),
        index: 0,
        peers,
        ports: vec![PortMatch::Range(6, 8080, 8080)],
    };
    let mut pods = Vec::new();
    for (i, addr) in others.iter().enumerate().take(990) {
        let name = format!("bench/np-{i}");
        pods.push((
            *addr,
            Arc::new(PodPolicy {
                pod: format!("bench/pod-{i}").into(),
                named_ports: Vec::new(),
                ingress: Some(Isolation {
                    policies: vec![Arc::<str>::from(name.as_str())].into(),
                    rules: vec![rule(
                        name,
                        Peers::Some {
                            pods: group(i % 10),
                            blocks: Vec::new(),
                        },
                    )],
                }),
                egress: None,
            }),
        ));
    }
    let backend_isolation = Isolation {
        policies: vec![
            Arc::<str>::from("bench/deny-all"),
            "bench/allow-frontends".into(),
            "bench/allow-lb".into(),
        ]
        .into(),
        rules: vec![
            rule(
                "bench/allow-frontends".into(),
                Peers::Some {
                    pods: group(0),
                    blocks: Vec::new(),
                },
            ),
            rule(
                "bench/allow-lb".into(),
                Peers::Some {
                    pods: Vec::new(),
                    blocks: vec![("11.0.0.0/8".parse().unwrap(), Vec::new())],
                },
            ),
        ],
    };
    for b in 0..10u8 {
        pods.push((
            IpAddr::V4(ip(10 + b)),
            Arc::new(PodPolicy {
                pod: format!("bench/backend-{b}").into(),
                named_ports: Vec::new(),
                ingress: Some(backend_isolation.clone()),
                egress: None,
            }),
        ));
    }
    PolicySnapshot::new(pods, vec![IpAddr::V4(ip(1))], 1000)
}

/// Computes the IPv4 header and TCP checksums of a 64-byte TCP/IPv4 packet.
fn fix_checksums(p: &mut [u8]) {
    p[10] = 0;
    p[11] = 0;
    let c = checksum(&p[..20], 0);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[36] = 0;
    p[37] = 0;
    let mut pseudo = [0u8; 12];
    pseudo[0..8].copy_from_slice(&p[12..20]);
    pseudo[9] = 6;
    pseudo[10..12].copy_from_slice(&44u16.to_be_bytes());
    let c = checksum(&p[20..64], podnet::packet::wire::checksum::sum(&pseudo, 0));
    p[36..38].copy_from_slice(&c.to_be_bytes());
}

criterion_group!(benches, fastpath);
criterion_main!(benches);
