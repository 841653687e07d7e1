//! New flows at a steady table population, for counting rather than timing:
//! `scripts/bench-fastpath.sh` runs this under callgrind (instructions and
//! simulated cache misses per new flow), which gives the same numbers on a
//! quiet machine and a loaded one, so two versions of the fast path can be
//! compared where wall-clock medians drift by a quarter between runs.
//!
//! The workload is the `fastpath/new_flow` benchmark's: SYNs from host-side
//! clients to one service of 10 endpoints through a worker handle, 4,096 new
//! flows a round, the oldest round removed after each as a sweep would, so
//! the table holds 65,536 flows. Only [`one_packet`] is counted. Then, as
//! `fastpath/hit` does, one established flow's data segment 100,000 times
//! through [`one_hit`], counted apart.
//!
//! `cargo bench --bench new_flow_count -- ROUNDS` (default 40).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use podnet::packet::conntrack::ConnTrackConfig;
use podnet::packet::router::Worker;
use podnet::packet::service::{Backend, Frontend, PoolId, PoolSpec};
use podnet::packet::wire::checksum;
use podnet::packet::{Link, PacketBuf, PodAddrs, PodId, Router, RouterConfig, Timestamp, Verdict};

const BATCH: usize = 4096;
const LIVE_ROUNDS: u32 = 16;

fn main() {
    // `cargo test --benches` runs bench binaries too; keep that quick.
    let rounds: u32 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(if std::env::args().any(|a| a == "--bench") {
            40
        } else {
            LIVE_ROUNDS + 2
        });
    let r = Router::new(RouterConfig {
        conntrack: ConnTrackConfig {
            max_entries: BATCH * LIVE_ROUNDS as usize * 2,
            ..ConnTrackConfig::default()
        },
        ..RouterConfig::default()
    });
    let backend = |i: u8| Ipv4Addr::new(10, 244, 0, 10 + i);
    let pods: Vec<_> = (0..10u8)
        .map(|i| {
            (
                PodId(10 + u32::from(i)),
                PodAddrs {
                    v4: Some(backend(i)),
                    v6: None,
                },
            )
        })
        .collect();
    r.set_pods(&pods).unwrap();
    r.set_services(&[PoolSpec {
        id: PoolId(0),
        frontends: vec![Frontend {
            addr: Ipv4Addr::new(10, 96, 0, 10).into(),
            port: 80,
            protocol: 6,
        }],
        session_affinity: None,
        traffic: Default::default(),
    }])
    .unwrap();
    let backends: Vec<_> = (0..10u8)
        .map(|i| Backend {
            addr: SocketAddr::from((backend(i), 8080)),
            terminating: false,
        })
        .collect();
    r.set_endpoints(PoolId(0), &backends).unwrap();

    // A 40-byte TCP SYN to the service; source address and port set per flow.
    let mut syn = [0u8; 40];
    syn[0] = 0x45;
    syn[2..4].copy_from_slice(&40u16.to_be_bytes());
    syn[8] = 64;
    syn[9] = 6;
    syn[16..20].copy_from_slice(&[10, 96, 0, 10]);
    syn[22..24].copy_from_slice(&80u16.to_be_bytes());
    syn[32] = 5 << 4;
    syn[33] = 0x02;
    let now = Timestamp::from_secs(1);
    let mut buf = PacketBuf::new(2048);
    let mut forwarded = 0usize;
    for k in 0..rounds {
        let mut w = r.worker();
        for n in 0..BATCH {
            let mut p = syn;
            p[12..16].copy_from_slice(&(0x0b00_0000 + k).to_be_bytes());
            p[20..22].copy_from_slice(&(n as u16 + 1024).to_be_bytes());
            let sum = checksum::finish(checksum::sum(&p[..20], 0));
            p[10..12].copy_from_slice(&sum.to_be_bytes());
            buf.buffer_mut()[..40].copy_from_slice(&p);
            buf.set_len(40);
            if matches!(one_packet(&mut w, now, &mut buf), Verdict::Forward(_)) {
                forwarded += 1;
            }
            if n % 64 == 63 {
                w.end_batch();
            }
        }
        drop(w);
        if k >= LIVE_ROUNDS {
            let oldest = IpAddr::from((0x0b00_0000 + k - LIVE_ROUNDS).to_be_bytes());
            r.conntrack().remove_where(|f| f.original().src == oldest);
        }
    }
    assert_eq!(forwarded, rounds as usize * BATCH, "every SYN opens a flow");
    println!("new_flow_count.flows: {forwarded}");

    // Hits: the handshake of one more flow, then its ACK segment again and
    // again (the table still holds the churned flows).
    let client = Ipv4Addr::new(12, 0, 0, 1);
    let mut w = r.worker();
    let mut segment = syn;
    segment[12..16].copy_from_slice(&client.octets());
    segment[20..22].copy_from_slice(&40_000u16.to_be_bytes());
    let send = |w: &mut Worker<'_>, buf: &mut PacketBuf, p: &[u8; 40]| {
        let mut p = *p;
        p[10..12].fill(0);
        let sum = checksum::finish(checksum::sum(&p[..20], 0));
        p[10..12].copy_from_slice(&sum.to_be_bytes());
        buf.buffer_mut()[..40].copy_from_slice(&p);
        buf.set_len(40);
        w.process(now, buf, Link::Host)
    };
    let Verdict::Forward(Link::Pod(_)) = send(&mut w, &mut buf, &segment) else {
        panic!("SYN not forwarded to a pod");
    };
    let mut synack = [0u8; 40];
    synack.copy_from_slice(&buf.as_slice()[..40]);
    synack.copy_within(12..16, 16); // reply: server -> client
    synack[12..16].copy_from_slice(&buf.as_slice()[16..20]);
    synack[16..20].copy_from_slice(&client.octets());
    synack.copy_within(20..22, 22);
    synack[20..22].copy_from_slice(&buf.as_slice()[22..24]);
    synack[22..24].copy_from_slice(&40_000u16.to_be_bytes());
    synack[8] = 64;
    synack[33] = 0x12;
    assert!(matches!(
        send(&mut w, &mut buf, &synack),
        Verdict::Forward(Link::Host)
    ));
    segment[33] = 0x10;
    assert!(matches!(
        send(&mut w, &mut buf, &segment),
        Verdict::Forward(_)
    ));
    let mut data = segment;
    let sum = checksum::finish(checksum::sum(&data[..20], 0));
    data[10..12].copy_from_slice(&sum.to_be_bytes());
    let hits = if std::env::args().any(|a| a == "--bench") {
        100_000
    } else {
        1_000
    };
    for n in 0..hits {
        buf.buffer_mut()[..40].copy_from_slice(&data);
        buf.set_len(40);
        assert!(matches!(
            one_hit(&mut w, now, &mut buf, std::hint::black_box(Link::Host)),
            Verdict::Forward(_)
        ));
        if n % 64 == 63 {
            w.end_batch();
        }
    }
    println!("new_flow_count.hits: {hits}");
}

/// The counted part of a hit: one established flow's packet (a function of
/// its own, with the link as an argument so it is not merged with
/// [`one_packet`]).
#[inline(never)]
fn one_hit(w: &mut Worker<'_>, now: Timestamp, buf: &mut PacketBuf, ingress: Link) -> Verdict {
    w.process(now, buf, ingress)
}

/// The counted part: one packet through the worker.
#[inline(never)]
fn one_packet(w: &mut Worker<'_>, now: Timestamp, buf: &mut PacketBuf) -> Verdict {
    w.process(now, buf, Link::Host)
}
