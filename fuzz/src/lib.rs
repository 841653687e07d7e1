//! What the fuzz targets share: the router they feed, how an input splits
//! into packets, and the wire-layer exercise.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use podnet::packet::conntrack::ConnTrackConfig;
use podnet::packet::router::NodeNetwork;
use podnet::packet::service::{Backend, Frontend, PoolId, PoolSpec};
use podnet::packet::wire::{self, gso::Segmenter, virtio, Endpoints, Transport};
use podnet::packet::{Link, PacketBuf, PodAddrs, PodId, Router, RouterConfig, Timestamp};

/// When the first packet of an input arrives.
pub const NOW: Timestamp = Timestamp::from_secs(100);

const VIP4: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, 0x10);

fn pod4(d: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 0, d)
}

fn pod6(d: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x10, 0x244, 0, 0, 0, 0, d)
}

/// A dual-stack node: pods 1 (10.244.0.5, fd00:10:244::5), 2 (.6, ::6) and
/// 3 (.7, IPv4 only); TCP and UDP services on 10.96.0.10:80 backed by pods
/// 2 and 3 on 8080, one of them with client affinity; a TCP service on
/// [fd00:96::10]:80 backed by pod 2; a service with no backends on port 81.
/// A small conntrack table: one router is built per input.
pub fn router() -> Router {
    let r = Router::new(RouterConfig {
        network: NodeNetwork {
            pod_subnets: vec![
                "10.244.0.0/24".parse().expect("literal"),
                "fd00:10:244::/64".parse().expect("literal"),
            ],
            service_cidrs: vec![
                "10.96.0.0/12".parse().expect("literal"),
                "fd00:96::/112".parse().expect("literal"),
            ],
            gateway_v4: pod4(1),
            gateway_v6: Some(pod6(1)),
        },
        conntrack: ConnTrackConfig {
            max_entries: 64,
            ..ConnTrackConfig::default()
        },
        ..RouterConfig::default()
    });
    r.set_pods(&[
        (
            PodId(1),
            PodAddrs {
                v4: Some(pod4(5)),
                v6: Some(pod6(5)),
            },
        ),
        (
            PodId(2),
            PodAddrs {
                v4: Some(pod4(6)),
                v6: Some(pod6(6)),
            },
        ),
        (
            PodId(3),
            PodAddrs {
                v4: Some(pod4(7)),
                v6: None,
            },
        ),
    ])
    .expect("pods");
    let frontend = |addr: IpAddr, port, protocol| Frontend {
        addr,
        port,
        protocol,
    };
    r.set_services(&[
        PoolSpec {
            id: PoolId(1),
            frontends: vec![frontend(VIP4.into(), 80, 6)],
            session_affinity: None,
            traffic: Default::default(),
        },
        PoolSpec {
            id: PoolId(2),
            frontends: vec![frontend(VIP4.into(), 80, 17)],
            session_affinity: Some(std::time::Duration::from_secs(60)),
            traffic: Default::default(),
        },
        PoolSpec {
            id: PoolId(3),
            frontends: vec![frontend(VIP6.into(), 80, 6)],
            session_affinity: None,
            traffic: Default::default(),
        },
        PoolSpec {
            id: PoolId(4),
            frontends: vec![frontend(VIP4.into(), 81, 6)],
            session_affinity: None,
            traffic: Default::default(),
        },
    ])
    .expect("services");
    let backend = |addr: IpAddr| Backend {
        addr: SocketAddr::new(addr, 8080),
        terminating: false,
    };
    let web4 = [backend(pod4(6).into()), backend(pod4(7).into())];
    r.set_endpoints(PoolId(1), &web4).expect("endpoints");
    r.set_endpoints(PoolId(2), &web4).expect("endpoints");
    r.set_endpoints(PoolId(3), &[backend(pod6(6).into())])
        .expect("endpoints");
    r
}

/// The ingress a link byte chooses: the host, or pod 1..4 (4 is unknown).
pub fn link(b: u8) -> Link {
    match b % 5 {
        0 => Link::Host,
        n => Link::Pod(PodId(u32::from(n))),
    }
}

/// One packet of an input.
pub struct Part<'a> {
    /// Chooses the ingress (and flags, see the targets).
    pub link: u8,
    /// Its virtio-net header.
    pub vnet: virtio::VnetHdr,
    /// Its bytes; `None` when the input has no such packet.
    pub packet: Option<&'a [u8]>,
}

fn part(data: &[u8]) -> (u8, virtio::VnetHdr, &[u8]) {
    let link = data.first().copied().unwrap_or(0);
    let rest = data.get(1..).unwrap_or(&[]);
    match rest.split_first_chunk::<{ virtio::HEADER_LEN }>() {
        Some((h, rest)) => (link, virtio::VnetHdr::from_bytes(h), rest),
        None => (link, virtio::VnetHdr::NONE, rest),
    }
}

/// Splits `[link][vnet][len: 2][packet 1][link][vnet][packet 2]`.
/// The first part's packet is always there (maybe empty).
pub fn split_two(data: &[u8]) -> (Part<'_>, Part<'_>) {
    let (link1, vnet1, rest) = part(data);
    let (p1, rest) = match rest.split_first_chunk::<2>() {
        Some((len, rest)) => {
            let len = usize::from(u16::from_be_bytes(*len)).min(rest.len());
            rest.split_at(len)
        }
        None => (rest, &[][..]),
    };
    let (link2, vnet2, p2) = part(rest);
    let first = Part {
        link: link1,
        vnet: vnet1,
        packet: Some(p1),
    };
    let second = Part {
        link: link2,
        vnet: vnet2,
        packet: (!rest.is_empty()).then_some(p2),
    };
    (first, second)
}

/// Concatenates parts into an input of the router target's format (for
/// seeds and regression inputs).
pub fn join_two(first: (u8, &[u8; 10], &[u8]), second: Option<(u8, &[u8; 10], &[u8])>) -> Vec<u8> {
    let mut v = vec![first.0];
    v.extend_from_slice(first.1);
    v.extend_from_slice(&(first.2.len() as u16).to_be_bytes());
    v.extend_from_slice(first.2);
    if let Some((l, h, p)) = second {
        v.push(l);
        v.extend_from_slice(h);
        v.extend_from_slice(p);
    }
    v
}

/// The reply to a forwarded packet: its addresses and ports swapped (which
/// leaves every checksum, partial seeds included, right), with its offload
/// state. `None` when the packet does not parse.
pub fn reply_of(pkt: &PacketBuf) -> Option<PacketBuf> {
    let info = wire::parse(pkt.as_slice()).ok()?;
    let mut out = PacketBuf::from_bytes(pkt.as_slice());
    out.set_vnet(pkt.vnet());
    let b = out.as_mut_slice();
    let (src, dst, n) = match info.version {
        wire::IpVersion::V4 => (12, 16, 4),
        wire::IpVersion::V6 => (8, 24, 16),
    };
    for i in 0..n {
        b.swap(src + i, dst + i);
    }
    if let Transport::Tcp { .. } | Transport::Udp { .. } = info.transport {
        let l4 = info.l4_offset;
        for i in 0..2 {
            b.swap(l4 + i, l4 + 2 + i);
        }
    }
    Some(out)
}

/// Segments written per super-packet at most (plus the last one): a
/// 64 KiB packet with `gso_size` 1 would make 65,000.
const MAX_SEGMENTS: usize = 64;

/// The wire target: `[vnet: 10][packet]`.
pub fn wire(data: &[u8]) {
    let (hdr, packet) = match data.split_first_chunk::<{ virtio::HEADER_LEN }>() {
        Some((h, rest)) => (virtio::VnetHdr::from_bytes(h), rest),
        None => (virtio::VnetHdr::NONE, data),
    };
    let view = virtio::VirtioNetHdr::new_checked(data);
    if let Ok(view) = view {
        assert_eq!(virtio::VnetHdr::parse(&view), hdr);
        assert_eq!(virtio::VnetHdr::from_bytes(&hdr.to_bytes()), hdr);
    }
    let Ok(info) = wire::parse(packet) else {
        return;
    };
    if let Ok(inner) = wire::parse_inner(packet, &info) {
        let mut b = packet.to_vec();
        wire::rewrite_icmp_error(
            &mut b,
            &info,
            &inner,
            info.dst,
            info.src,
            &Endpoints {
                src: inner.dst,
                src_port: 1,
                dst: inner.src,
                dst_port: 2,
            },
        );
        assert!(
            wire::parse(&b).is_ok(),
            "a rewritten ICMP error no longer parses"
        );
    }
    let checksum = virtio::check(&hdr, &info);

    // NAT rewrites in both families (one is of the wrong family: a no-op).
    for (a, b) in [
        (IpAddr::from(VIP4), IpAddr::from(pod4(6))),
        (IpAddr::from(VIP6), IpAddr::from(pod6(6))),
    ] {
        let new = Endpoints {
            src: a,
            src_port: 40000,
            dst: b,
            dst_port: 8080,
        };
        let mut buf = packet.to_vec();
        wire::rewrite_with(
            &mut buf,
            &info,
            &new,
            checksum.unwrap_or(virtio::L4Checksum::Full),
        );
        let same_family = a.is_ipv4() == (info.version == wire::IpVersion::V4);
        if same_family {
            assert!(
                wire::parse(&buf).is_ok(),
                "a rewritten packet no longer parses"
            );
        } else {
            assert_eq!(
                buf, packet,
                "a rewrite of the wrong family changed the packet"
            );
        }
    }
    let mut buf = packet.to_vec();
    let _ = wire::decrement_ttl(&mut buf, &info);

    // Generated replies, in a buffer as large as the router's.
    let mut out = vec![0u8; 65_536 + 64];
    out[..packet.len()].copy_from_slice(packet);
    if let Some(n) = wire::write_tcp_reset(&mut out, &info) {
        assert!(
            wire::parse(&out[..n]).is_ok(),
            "a generated reset does not parse"
        );
    }
    let mut out = vec![0u8; packet.len().max(1280) + 64];
    out[..packet.len()].copy_from_slice(packet);
    let from = match info.version {
        wire::IpVersion::V4 => IpAddr::from(pod4(1)),
        wire::IpVersion::V6 => IpAddr::from(pod6(1)),
    };
    for kind in [
        wire::IcmpErrorKind::HostUnreachable,
        wire::IcmpErrorKind::PortUnreachable,
        wire::IcmpErrorKind::TimeExceeded,
    ] {
        let mut o = out.clone();
        if let Some(n) = wire::write_icmp_error(&mut o, &info, from, kind) {
            assert!(
                wire::parse(&o[..n]).is_ok(),
                "a generated ICMP error does not parse"
            );
        }
    }

    // A partial checksum finished in place, then segmentation.
    let mut buf = packet[..info.packet_len.min(packet.len())].to_vec();
    let _ = virtio::complete_checksum(&mut buf, &hdr, info.protocol);
    if let Ok(seg) = Segmenter::new(packet, &info, &hdr) {
        let mut out = vec![0u8; 65_536];
        let n = seg.segments();
        for i in (0..n.min(MAX_SEGMENTS)).chain([n - 1, n]) {
            match seg.write(packet, i, &mut out) {
                Ok(len) => {
                    assert!(i < n);
                    assert!(
                        wire::parse(&out[..len]).is_ok(),
                        "segment {i} of {n} does not parse"
                    );
                }
                Err(_) => assert!(i >= n, "segment {i} of {n} failed"),
            }
        }
        let _ = seg.write(packet, 0, &mut out[..seg.header_len()]);
    }
}
