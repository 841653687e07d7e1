//! `conntrack.bytes_per_flow`: heap bytes per tracked flow with 1,000,000
//! flows, counted by a wrapping global allocator (requested bytes), plus the
//! resident-set growth per flow as the kernel sees it (allocator overhead
//! included).
//!
//! `cargo bench --bench conntrack_memory`

use std::net::{Ipv4Addr, SocketAddr};

use podnet::packet::conntrack::ConnTrackConfig;
use podnet::packet::service::{Backend, Frontend, PoolId, PoolSpec};
use podnet::packet::{Link, PacketBuf, PodAddrs, PodId, Router, RouterConfig, Timestamp, Verdict};

#[path = "../tests/alloc_support/mod.rs"]
mod alloc_support;

#[global_allocator]
static ALLOC: alloc_support::Counting = alloc_support::Counting;

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn main() {
    // `cargo test --benches` runs bench binaries too; keep that quick.
    let flows: usize = if std::env::args().any(|a| a == "--bench") {
        1_000_000
    } else {
        10_000
    };
    let before = alloc_support::live_bytes();
    let rss_before = rss_bytes();
    let r = Router::new(RouterConfig {
        conntrack: ConnTrackConfig {
            max_entries: flows,
            // Memory per flow, not fairness: the short run's flows all
            // come from one client, which a per-source share would cut.
            source_share_percent: 100,
            ..ConnTrackConfig::default()
        },
        ..RouterConfig::default()
    });
    r.set_pods(&[(
        PodId(1),
        PodAddrs {
            v4: Some(Ipv4Addr::new(10, 244, 0, 10)),
            v6: None,
        },
    )])
    .unwrap();
    r.set_services(&[PoolSpec {
        id: PoolId(0),
        frontends: vec![Frontend {
            addr: Ipv4Addr::new(10, 96, 0, 10).into(),
            port: 80,
            protocol: 17,
        }],
        session_affinity: None,
        traffic: Default::default(),
    }])
    .unwrap();
    r.set_endpoints(
        PoolId(0),
        &[Backend {
            addr: SocketAddr::from(([10, 244, 0, 10], 8080)),
            terminating: false,
        }],
    )
    .unwrap();
    // UDP datagrams from distinct host-side clients, each a new flow.
    let mut buf = PacketBuf::new(2048);
    for n in 0..flows {
        let src = Ipv4Addr::from(0x0b00_0000 + (n >> 14) as u32);
        let port = 1024 + (n & 0x3fff) as u16;
        let p = buf.buffer_mut();
        p[..28].fill(0);
        p[0] = 0x45;
        p[2..4].copy_from_slice(&28u16.to_be_bytes());
        p[8] = 64;
        p[9] = 17;
        p[12..16].copy_from_slice(&src.octets());
        p[16..20].copy_from_slice(&[10, 96, 0, 10]);
        let mut sum = 0u32;
        for i in (0..20).step_by(2) {
            sum += u32::from(u16::from_be_bytes([p[i], p[i + 1]]));
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        p[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        p[20..22].copy_from_slice(&port.to_be_bytes());
        p[22..24].copy_from_slice(&80u16.to_be_bytes());
        p[24..26].copy_from_slice(&8u16.to_be_bytes());
        buf.set_len(28);
        let v = r.process(Timestamp::from_secs(1), &mut buf, Link::Host);
        assert_eq!(v, Verdict::Forward(Link::Pod(PodId(1))), "flow {n}");
    }
    assert_eq!(r.conntrack().len(), flows);
    let live = alloc_support::live_bytes();
    let rss = rss_bytes();
    // The table allocates its buckets and entry storage for `max_entries`
    // at creation; all of it belongs to the flows it holds, so the whole
    // heap growth since before the router is counted.
    let per_flow = (live - before) as f64 / flows as f64;
    println!("conntrack.bytes_per_flow: {per_flow:.1}");
    println!(
        "conntrack.rss_bytes_per_flow: {:.1}",
        (rss - rss_before) as f64 / flows as f64
    );
    println!("conntrack.flows: {flows}");
}
