//! Wire layer tests: byte fixtures both ways (smoltcp `Repr`s emit, we parse;
//! we emit, smoltcp verifies), malformed input, and properties.
//!
//! The property tests compare every rewrite with a packet built from scratch
//! with the translated fields and full checksums, byte for byte, so any
//! incremental-checksum slip (including the inner headers of ICMP errors)
//! shows up as a byte difference; smoltcp independently verifies checksums
//! wherever it can (unfragmented packets).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    Icmpv4Packet, Icmpv4Repr, Icmpv6Packet, Icmpv6Repr, IpAddress, IpProtocol, Ipv4Packet,
    Ipv4Repr, Ipv6Packet, Ipv6Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber, UdpPacket,
    UdpRepr,
};

use super::checksum::{finish, internet_checksum, pseudo_header, sum};
use super::*;

// ---------------------------------------------------------------------------
// A test packet builder: a spec in, bytes with full checksums out.
// ---------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
        seq: u32,
        ack: u32,
        flags: u8,
        opts: Vec<u8>,
    },
    Udp {
        sport: u16,
        dport: u16,
        no_checksum: bool,
    },
    Echo {
        request: bool,
        ident: u16,
        seq_no: u16,
    },
    IcmpError {
        ty: u8,
        code: u8,
        rest: u32,
        inner: Vec<u8>,
    },
    Raw {
        proto: u8,
    },
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Frag {
    None,
    First,
    /// Offset in 8-byte units (non-zero).
    Later(u16),
}

#[derive(Clone, Debug, PartialEq)]
struct Spec {
    src: IpAddr,
    dst: IpAddr,
    ttl: u8,
    frag_id: u32,
    frag: Frag,
    v4_options: Vec<u8>,
    /// (kind, body) with body.len() == 6 + 8k.
    v6_ext: Vec<(u8, Vec<u8>)>,
    l4: L4,
    payload: Vec<u8>,
}

impl Spec {
    fn simple(src: &str, dst: &str, l4: L4) -> Spec {
        Spec {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            ttl: 64,
            frag_id: 0x1234,
            frag: Frag::None,
            v4_options: vec![],
            v6_ext: vec![],
            l4,
            payload: b"hello, pod".to_vec(),
        }
    }

    fn v6(&self) -> bool {
        self.src.is_ipv6()
    }

    fn proto(&self) -> u8 {
        match self.l4 {
            L4::Tcp { .. } => 6,
            L4::Udp { .. } => 17,
            L4::Echo { .. } | L4::IcmpError { .. } => {
                if self.v6() {
                    58
                } else {
                    1
                }
            }
            L4::Raw { proto } => proto,
        }
    }

    fn l4_bytes(&self) -> Vec<u8> {
        if let Frag::Later(_) = self.frag {
            return self.payload.clone();
        }
        let v6 = self.v6();
        let mut b: Vec<u8>;
        match &self.l4 {
            L4::Tcp {
                sport,
                dport,
                seq,
                ack,
                flags,
                opts,
            } => {
                let hl = 20 + opts.len();
                b = vec![0; hl];
                b[0..2].copy_from_slice(&sport.to_be_bytes());
                b[2..4].copy_from_slice(&dport.to_be_bytes());
                b[4..8].copy_from_slice(&seq.to_be_bytes());
                b[8..12].copy_from_slice(&ack.to_be_bytes());
                b[12] = ((hl / 4) as u8) << 4;
                b[13] = *flags;
                b[14..16].copy_from_slice(&0xfaf0u16.to_be_bytes());
                b[20..].copy_from_slice(opts);
                b.extend_from_slice(&self.payload);
            }
            L4::Udp { sport, dport, .. } => {
                b = vec![0; 8];
                b[0..2].copy_from_slice(&sport.to_be_bytes());
                b[2..4].copy_from_slice(&dport.to_be_bytes());
                b.extend_from_slice(&self.payload);
                // A first fragment's UDP length is the whole datagram's.
                let extra = if self.frag == Frag::First { 16 } else { 0 };
                let len = (b.len() + extra) as u16;
                b[4..6].copy_from_slice(&len.to_be_bytes());
            }
            L4::Echo {
                request,
                ident,
                seq_no,
            } => {
                b = vec![0; 8];
                b[0] = match (v6, request) {
                    (false, true) => 8,
                    (false, false) => 0,
                    (true, true) => 128,
                    (true, false) => 129,
                };
                b[4..6].copy_from_slice(&ident.to_be_bytes());
                b[6..8].copy_from_slice(&seq_no.to_be_bytes());
                b.extend_from_slice(&self.payload);
            }
            L4::IcmpError {
                ty,
                code,
                rest,
                inner,
            } => {
                b = vec![*ty, *code, 0, 0];
                b.extend_from_slice(&rest.to_be_bytes());
                b.extend_from_slice(inner);
            }
            L4::Raw { .. } => b = self.payload.clone(),
        }
        let pseudo = pseudo_header(self.src, self.dst, self.proto(), b.len() as u32);
        match &self.l4 {
            L4::Tcp { .. } => {
                let c = finish(sum(&b, pseudo));
                b[16..18].copy_from_slice(&c.to_be_bytes());
            }
            L4::Udp { no_checksum, .. } => {
                let c = match finish(sum(&b, pseudo)) {
                    _ if *no_checksum => 0,
                    0 => 0xffff,
                    c => c,
                };
                b[6..8].copy_from_slice(&c.to_be_bytes());
            }
            L4::Echo { .. } | L4::IcmpError { .. } => {
                let c = finish(sum(&b, if v6 { pseudo } else { 0 }));
                b[2..4].copy_from_slice(&c.to_be_bytes());
            }
            L4::Raw { .. } => {}
        }
        b
    }

    fn build(&self) -> Vec<u8> {
        let body = self.l4_bytes();
        let mut p = Vec::new();
        if !self.v6() {
            let hl = 20 + self.v4_options.len();
            p.resize(hl, 0);
            p[0] = 0x40 | (hl / 4) as u8;
            p[2..4].copy_from_slice(&((hl + body.len()) as u16).to_be_bytes());
            p[4..6].copy_from_slice(&(self.frag_id as u16).to_be_bytes());
            let ff: u16 = match self.frag {
                Frag::None => 0x4000,
                Frag::First => 0x2000,
                Frag::Later(o) => 0x2000 | (o & 0x1fff),
            };
            p[6..8].copy_from_slice(&ff.to_be_bytes());
            p[8] = self.ttl;
            p[9] = self.proto();
            p[12..16].copy_from_slice(&ip_octets(self.src));
            p[16..20].copy_from_slice(&ip_octets(self.dst));
            p[20..].copy_from_slice(&self.v4_options);
            let c = internet_checksum(&p);
            p[10..12].copy_from_slice(&c.to_be_bytes());
        } else {
            let mut kinds: Vec<u8> = self.v6_ext.iter().map(|(k, _)| *k).collect();
            if self.frag != Frag::None {
                kinds.push(44);
            }
            kinds.push(self.proto());
            p.resize(40, 0);
            p[0] = 0x60;
            p[6] = kinds[0];
            p[7] = self.ttl;
            p[8..24].copy_from_slice(&ip_octets(self.src));
            p[24..40].copy_from_slice(&ip_octets(self.dst));
            for (i, (_, ext)) in self.v6_ext.iter().enumerate() {
                p.push(kinds[i + 1]);
                p.push(((ext.len() + 2) / 8 - 1) as u8);
                p.extend_from_slice(ext);
            }
            if self.frag != Frag::None {
                let word: u16 = match self.frag {
                    Frag::Later(o) => (o << 3) | 1,
                    _ => 1,
                };
                p.push(self.proto());
                p.push(0);
                p.extend_from_slice(&word.to_be_bytes());
                p.extend_from_slice(&self.frag_id.to_be_bytes());
            }
            let payload_len = (p.len() - 40 + body.len()) as u16;
            p[4..6].copy_from_slice(&payload_len.to_be_bytes());
        }
        p.extend_from_slice(&body);
        p
    }

    /// The same packet as the NAT should make it with `new`.
    fn translated(&self, new: &Endpoints) -> Spec {
        let mut s = self.clone();
        s.src = new.src;
        s.dst = new.dst;
        if let Frag::Later(_) = self.frag {
            return s;
        }
        match &mut s.l4 {
            L4::Tcp { sport, dport, .. } | L4::Udp { sport, dport, .. } => {
                *sport = new.src_port;
                *dport = new.dst_port;
            }
            L4::Echo { request, ident, .. } => {
                *ident = if *request { new.src_port } else { new.dst_port };
            }
            _ => {}
        }
        s
    }

    fn endpoints(&self) -> Endpoints {
        let (src_port, dst_port) = match self.l4 {
            L4::Tcp { sport, dport, .. } | L4::Udp { sport, dport, .. } => (sport, dport),
            L4::Echo { ident, .. } => (ident, ident),
            _ => (0, 0),
        };
        Endpoints {
            src: self.src,
            src_port,
            dst: self.dst,
            dst_port,
        }
    }
}

fn ip_octets(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn v4(s: &str) -> IpAddr {
    IpAddr::V4(s.parse::<Ipv4Addr>().unwrap())
}

fn v6(s: &str) -> IpAddr {
    IpAddr::V6(s.parse::<Ipv6Addr>().unwrap())
}

fn tcp(sport: u16, dport: u16, flags: u8) -> L4 {
    L4::Tcp {
        sport,
        dport,
        seq: 1000,
        ack: 2000,
        flags,
        opts: vec![],
    }
}

fn udp(sport: u16, dport: u16) -> L4 {
    L4::Udp {
        sport,
        dport,
        no_checksum: false,
    }
}

/// Verifies every checksum of an unfragmented packet with smoltcp.
fn smoltcp_verify(buf: &[u8]) {
    let info = parse(buf).expect("parse");
    let pkt = &buf[..info.packet_len];
    if info.version == IpVersion::V4 {
        assert!(Ipv4Packet::new_checked(pkt).unwrap().verify_checksum());
    }
    if info.fragment != Fragment::None {
        return;
    }
    let (src, dst) = (IpAddress::from(info.src), IpAddress::from(info.dst));
    let l4 = &pkt[info.l4_offset..];
    match (info.protocol, info.src, info.dst) {
        (6, _, _) => assert!(TcpPacket::new_checked(l4)
            .unwrap()
            .verify_checksum(&src, &dst)),
        (17, _, _) => assert!(UdpPacket::new_checked(l4)
            .unwrap()
            .verify_checksum(&src, &dst)),
        (1, _, _) => assert!(Icmpv4Packet::new_checked(l4).unwrap().verify_checksum()),
        (58, IpAddr::V6(s), IpAddr::V6(d)) => {
            assert!(Icmpv6Packet::new_checked(l4)
                .unwrap()
                .verify_checksum(&s, &d))
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------
// Fixtures: smoltcp emits, we parse.
// ---------------------------------------------------------------------------

fn caps() -> ChecksumCapabilities {
    ChecksumCapabilities::default()
}

#[test]
fn parse_smoltcp_ipv4_tcp() {
    let (src, dst) = (Ipv4Addr::new(10, 244, 0, 5), Ipv4Addr::new(10, 96, 0, 10));
    let repr = TcpRepr {
        src_port: 40000,
        dst_port: 80,
        control: TcpControl::Syn,
        seq_number: TcpSeqNumber(0x0102_0304),
        ack_number: None,
        window_len: 1024,
        window_scale: Some(7),
        max_seg_size: Some(1460),
        sack_permitted: true,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: b"",
    };
    let ip = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Tcp,
        payload_len: repr.buffer_len(),
        hop_limit: 63,
    };
    let mut buf = vec![0u8; 20 + repr.buffer_len() + 5]; // trailing bytes ignored
    let mut ipp = Ipv4Packet::new_unchecked(&mut buf[..]);
    ip.emit(&mut ipp, &caps());
    let mut tcpp = TcpPacket::new_unchecked(ipp.payload_mut());
    repr.emit(&mut tcpp, &src.into(), &dst.into(), &caps());
    let info = parse(&buf).unwrap();
    assert_eq!(
        info,
        PacketInfo {
            version: IpVersion::V4,
            src: src.into(),
            dst: dst.into(),
            ttl: 63,
            protocol: 6,
            l4_offset: 20,
            packet_len: 20 + repr.buffer_len(),
            fragment: Fragment::None,
            transport: Transport::Tcp {
                src_port: 40000,
                dst_port: 80,
                seq: 0x0102_0304,
                ack: 0,
                flags: TcpFlags::SYN,
            },
        }
    );
}

#[test]
fn parse_smoltcp_ipv6_udp() {
    let src: Ipv6Addr = "fd00:10:244::5".parse().unwrap();
    let dst: Ipv6Addr = "fd00:10:96::a".parse().unwrap();
    let payload = b"dns query";
    let ip = Ipv6Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Udp,
        payload_len: 8 + payload.len(),
        hop_limit: 7,
    };
    let mut buf = vec![0u8; 40 + 8 + payload.len()];
    let mut ipp = Ipv6Packet::new_unchecked(&mut buf[..]);
    ip.emit(&mut ipp);
    let mut udpp = UdpPacket::new_unchecked(ipp.payload_mut());
    UdpRepr {
        src_port: 5353,
        dst_port: 53,
    }
    .emit(
        &mut udpp,
        &src.into(),
        &dst.into(),
        payload.len(),
        |p| p.copy_from_slice(payload),
        &caps(),
    );
    let info = parse(&buf).unwrap();
    assert_eq!(info.version, IpVersion::V6);
    assert_eq!((info.src, info.dst), (src.into(), dst.into()));
    assert_eq!((info.ttl, info.protocol, info.l4_offset), (7, 17, 40));
    assert_eq!(info.packet_len, buf.len());
    assert_eq!(
        info.transport,
        Transport::Udp {
            src_port: 5353,
            dst_port: 53
        }
    );
}

#[test]
fn parse_smoltcp_icmp_echo_both_families() {
    let data = b"ping";
    // v4 request
    let (s4, d4) = (Ipv4Addr::new(10, 244, 0, 5), Ipv4Addr::new(8, 8, 8, 8));
    let echo = Icmpv4Repr::EchoRequest {
        ident: 0xbeef,
        seq_no: 1,
        data,
    };
    let ip = Ipv4Repr {
        src_addr: s4,
        dst_addr: d4,
        next_header: IpProtocol::Icmp,
        payload_len: echo.buffer_len(),
        hop_limit: 64,
    };
    let mut buf = vec![0u8; 20 + echo.buffer_len()];
    let mut ipp = Ipv4Packet::new_unchecked(&mut buf[..]);
    ip.emit(&mut ipp, &caps());
    echo.emit(&mut Icmpv4Packet::new_unchecked(ipp.payload_mut()), &caps());
    let info = parse(&buf).unwrap();
    assert_eq!(
        info.transport,
        Transport::IcmpEcho {
            request: true,
            ident: 0xbeef
        }
    );
    // v6 reply
    let (s6, d6): (Ipv6Addr, Ipv6Addr) =
        ("2001:db8::1".parse().unwrap(), "fd00::5".parse().unwrap());
    let echo = Icmpv6Repr::EchoReply {
        ident: 0x4242,
        seq_no: 9,
        data,
    };
    let ip = Ipv6Repr {
        src_addr: s6,
        dst_addr: d6,
        next_header: IpProtocol::Icmpv6,
        payload_len: echo.buffer_len(),
        hop_limit: 64,
    };
    let mut buf = vec![0u8; 40 + echo.buffer_len()];
    let mut ipp = Ipv6Packet::new_unchecked(&mut buf[..]);
    ip.emit(&mut ipp);
    echo.emit(
        &s6,
        &d6,
        &mut Icmpv6Packet::new_unchecked(ipp.payload_mut()),
        &caps(),
    );
    let info = parse(&buf).unwrap();
    assert_eq!(info.protocol, 58);
    assert_eq!(
        info.transport,
        Transport::IcmpEcho {
            request: false,
            ident: 0x4242
        }
    );
}

#[test]
fn parse_smoltcp_icmpv4_dst_unreachable_and_inner() {
    // The offending packet: UDP 10.0.0.1:1234 -> 10.96.0.10:53.
    let inner = Spec::simple("10.0.0.1", "10.96.0.10", udp(1234, 53)).build();
    let inner_ip = Ipv4Repr {
        src_addr: Ipv4Addr::new(10, 0, 0, 1),
        dst_addr: Ipv4Addr::new(10, 96, 0, 10),
        next_header: IpProtocol::Udp,
        payload_len: inner.len() - 20,
        hop_limit: 64,
    };
    let err = Icmpv4Repr::DstUnreachable {
        reason: smoltcp::wire::Icmpv4DstUnreachable::PortUnreachable,
        header: inner_ip,
        data: &inner[20..28],
    };
    let outer = Ipv4Repr {
        src_addr: Ipv4Addr::new(10, 96, 0, 10),
        dst_addr: Ipv4Addr::new(10, 0, 0, 1),
        next_header: IpProtocol::Icmp,
        payload_len: err.buffer_len(),
        hop_limit: 64,
    };
    let mut buf = vec![0u8; 20 + err.buffer_len()];
    let mut ipp = Ipv4Packet::new_unchecked(&mut buf[..]);
    outer.emit(&mut ipp, &caps());
    err.emit(&mut Icmpv4Packet::new_unchecked(ipp.payload_mut()), &caps());
    let info = parse(&buf).unwrap();
    assert_eq!(
        info.transport,
        Transport::IcmpError {
            icmp_type: 3,
            code: 3,
            inner_offset: 28
        }
    );
    let inner = parse_inner(&buf, &info).unwrap();
    assert_eq!(
        inner,
        InnerPacket {
            offset: 28,
            version: IpVersion::V4,
            src: v4("10.0.0.1"),
            dst: v4("10.96.0.10"),
            protocol: 17,
            l4_offset: 48,
            src_port: 1234,
            dst_port: 53,
            available: 28,
        }
    );
}

#[test]
fn parse_ipv4_options_and_fragments() {
    let mut spec = Spec::simple("10.0.0.1", "10.0.0.2", tcp(1, 2, 0x18));
    spec.v4_options = vec![1, 1, 1, 0, 0x44, 4, 5, 0]; // NOPs, EOL, timestamp-ish
    let buf = spec.build();
    let info = parse(&buf).unwrap();
    assert_eq!(info.l4_offset, 28);
    assert_eq!(info.fragment, Fragment::None);
    assert!(matches!(
        info.transport,
        Transport::Tcp {
            src_port: 1,
            dst_port: 2,
            ..
        }
    ));
    smoltcp_verify(&buf);

    spec.frag = Frag::First;
    let info = parse(&spec.build()).unwrap();
    assert_eq!(info.fragment, Fragment::First { id: 0x1234 });
    assert!(matches!(info.transport, Transport::Tcp { .. }));

    spec.frag = Frag::Later(3);
    spec.payload = vec![0xee; 3]; // shorter than any transport header
    let info = parse(&spec.build()).unwrap();
    assert_eq!(info.fragment, Fragment::Later { id: 0x1234 });
    assert_eq!(info.transport, Transport::Other);
    assert_eq!(info.protocol, 6);
}

#[test]
fn parse_ipv6_extension_headers_and_fragments() {
    let mut spec = Spec::simple("fd00::1", "fd00::2", udp(7, 8));
    spec.v6_ext = vec![
        (0, vec![1, 4, 0, 0, 0, 0]),
        (60, vec![0; 14]),
        (43, vec![0; 6]),
    ];
    let buf = spec.build();
    let info = parse(&buf).unwrap();
    assert_eq!(info.l4_offset, 40 + 8 + 16 + 8);
    assert_eq!(info.protocol, 17);
    assert_eq!(info.fragment, Fragment::None);
    assert_eq!(
        info.transport,
        Transport::Udp {
            src_port: 7,
            dst_port: 8
        }
    );
    smoltcp_verify(&buf);

    spec.frag = Frag::First;
    spec.frag_id = 0xdead_beef;
    let info = parse(&spec.build()).unwrap();
    assert_eq!(info.fragment, Fragment::First { id: 0xdead_beef });
    assert_eq!(info.l4_offset, 40 + 32 + 8);
    assert!(matches!(info.transport, Transport::Udp { .. }));

    spec.frag = Frag::Later(100);
    spec.payload = vec![1, 2];
    let info = parse(&spec.build()).unwrap();
    assert_eq!(info.fragment, Fragment::Later { id: 0xdead_beef });
    assert_eq!((info.transport, info.protocol), (Transport::Other, 17));

    // No next header ends the chain.
    let mut buf = Spec::simple("fd00::1", "fd00::2", L4::Raw { proto: 59 }).build();
    buf.truncate(40);
    buf[4..6].copy_from_slice(&0u16.to_be_bytes());
    let info = parse(&buf).unwrap();
    assert_eq!(
        (info.protocol, info.transport, info.l4_offset),
        (59, Transport::Other, 40)
    );
}

#[test]
fn parse_rejects_malformed() {
    let good4 = Spec::simple("10.0.0.1", "10.0.0.2", tcp(1, 2, 0x10)).build();
    let good6 = Spec::simple("fd00::1", "fd00::2", tcp(1, 2, 0x10)).build();
    assert!(parse(&good4).is_ok() && parse(&good6).is_ok());
    let with = |base: &[u8], f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = base.to_vec();
        f(&mut b);
        parse(&b)
    };
    // Fix the v4 header checksum after an edit.
    let refix = |b: &mut Vec<u8>| {
        let hl = usize::from(b[0] & 15) * 4;
        b[10] = 0;
        b[11] = 0;
        let c = internet_checksum(&b[..hl.min(b.len())]);
        b[10..12].copy_from_slice(&c.to_be_bytes());
    };
    assert_eq!(parse(&[]), Err(WireError::Truncated));
    assert_eq!(with(&good4, &|b| b[0] = 0x55), Err(WireError::BadVersion));
    assert_eq!(
        with(&good4, &|b| {
            b[0] = 0x44;
            refix(b)
        }),
        Err(WireError::BadHeaderLength)
    );
    assert_eq!(
        with(&good4, &|b| {
            b[2] = 0;
            b[3] = 19;
            refix(b)
        }),
        Err(WireError::BadTotalLength)
    );
    assert_eq!(
        with(&good4, &|b| {
            b[3] += 1;
            refix(b)
        }),
        Err(WireError::Truncated)
    );
    assert_eq!(
        with(&good4, &|b| b[8] ^= 1),
        Err(WireError::BadHeaderChecksum)
    );
    assert_eq!(
        with(&good4, &|b| b[32] = 0x40),
        Err(WireError::BadTransportHeader)
    );
    assert_eq!(
        with(&good4, &|b| b[32] = 0xf0),
        Err(WireError::BadTransportHeader)
    );
    assert_eq!(with(&good6, &|b| b[5] += 1), Err(WireError::Truncated));
    assert_eq!(
        with(&good6, &|b| b[52] = 0x10),
        Err(WireError::BadTransportHeader)
    );

    let udp4 = Spec::simple("10.0.0.1", "10.0.0.2", udp(1, 2)).build();
    assert_eq!(
        with(&udp4, &|b| b[25] = 7),
        Err(WireError::BadTransportHeader)
    );
    assert_eq!(
        with(&udp4, &|b| b[25] += 1),
        Err(WireError::BadTransportHeader)
    );

    let mut spec = Spec::simple("fd00::1", "fd00::2", udp(1, 2));
    spec.v6_ext = vec![(60, vec![0; 6]), (0, vec![0; 6])];
    assert_eq!(parse(&spec.build()), Err(WireError::BadExtensionHeader));
    spec.v6_ext = vec![(60, vec![0; 6]); 9];
    assert_eq!(parse(&spec.build()), Err(WireError::BadExtensionHeader));
    spec.v6_ext = vec![(60, vec![0; 6]); 8];
    assert!(parse(&spec.build()).is_ok());
    spec.v6_ext = vec![(44, vec![0; 6])];
    spec.frag = Frag::First;
    assert_eq!(parse(&spec.build()), Err(WireError::BadExtensionHeader));
    // Extension header longer than the packet.
    spec.frag = Frag::None;
    spec.v6_ext = vec![(60, vec![0; 6])];
    let mut b = spec.build();
    b[41] = 200;
    assert_eq!(parse(&b), Err(WireError::BadExtensionHeader));

    let short_echo = Spec {
        payload: vec![],
        ..Spec::simple(
            "10.0.0.1",
            "10.0.0.2",
            L4::Echo {
                request: true,
                ident: 1,
                seq_no: 1,
            },
        )
    };
    let mut b = short_echo.build();
    b.truncate(26);
    b[2..4].copy_from_slice(&26u16.to_be_bytes());
    refix(&mut b);
    assert_eq!(parse(&b), Err(WireError::BadTransportHeader));
}

fn fixtures() -> Vec<Vec<u8>> {
    let mut out = vec![];
    for (s, d) in [("10.0.0.1", "10.0.0.2"), ("fd00::1", "fd00::2")] {
        for l4 in [
            tcp(10, 20, 0x12),
            udp(30, 40),
            L4::Echo {
                request: true,
                ident: 5,
                seq_no: 6,
            },
        ] {
            let mut spec = Spec::simple(s, d, l4);
            out.push(spec.build());
            spec.v4_options = if spec.v6() { vec![] } else { vec![1; 12] };
            spec.v6_ext = if spec.v6() {
                vec![(0, vec![1, 0, 0, 0, 0, 0])]
            } else {
                vec![]
            };
            spec.frag = Frag::First;
            out.push(spec.build());
        }
    }
    out
}

#[test]
fn truncated_at_every_length_is_an_error() {
    for f in fixtures() {
        assert!(parse(&f).is_ok());
        for len in 0..f.len() {
            assert!(parse(&f[..len]).is_err(), "len {len} of {f:02x?}");
        }
    }
}

// ---------------------------------------------------------------------------
// Rewrites on fixtures.
// ---------------------------------------------------------------------------

#[test]
fn rewrite_tcp_v4_dnat() {
    let spec = Spec::simple("10.244.0.5", "10.96.0.10", tcp(40000, 80, 0x18));
    let mut buf = spec.build();
    let info = parse(&buf).unwrap();
    let new = Endpoints {
        src: v4("10.244.0.5"),
        src_port: 40000,
        dst: v4("10.244.0.9"),
        dst_port: 8080,
    };
    rewrite(&mut buf, &info, &new);
    assert_eq!(buf, spec.translated(&new).build());
    smoltcp_verify(&buf);
}

#[test]
fn rewrite_udp_zero_checksum_stays_zero() {
    let spec = Spec::simple(
        "10.244.0.5",
        "10.96.0.10",
        L4::Udp {
            sport: 1,
            dport: 53,
            no_checksum: true,
        },
    );
    let mut buf = spec.build();
    let info = parse(&buf).unwrap();
    let new = Endpoints {
        src: v4("192.168.1.1"),
        src_port: 999,
        dst: v4("10.244.0.9"),
        dst_port: 5353,
    };
    rewrite(&mut buf, &info, &new);
    assert_eq!(&buf[26..28], &[0, 0]);
    assert_eq!(buf, spec.translated(&new).build());
}

#[test]
fn rewrite_with_wrong_family_is_a_no_op() {
    let spec = Spec::simple("10.244.0.5", "10.96.0.10", udp(1, 2));
    let mut buf = spec.build();
    let info = parse(&buf).unwrap();
    let new = Endpoints {
        src: v6("fd00::1"),
        src_port: 3,
        dst: v4("10.0.0.1"),
        dst_port: 4,
    };
    rewrite(&mut buf, &info, &new);
    assert_eq!(buf, spec.build());
}

#[test]
fn rewrite_icmpv6_other_updates_pseudo_header() {
    // A neighbour solicitation-like message (type 135) is Transport::Other.
    let mut spec = Spec::simple(
        "fd00::1",
        "fd00::2",
        L4::Echo {
            request: true,
            ident: 0,
            seq_no: 0,
        },
    );
    spec.payload = vec![0; 16];
    let mut buf = spec.build();
    buf[40] = 135;
    buf[42] = 0;
    buf[43] = 0;
    let c = finish(sum(&buf[40..], pseudo_header(spec.src, spec.dst, 58, 24)));
    buf[42..44].copy_from_slice(&c.to_be_bytes());
    let info = parse(&buf).unwrap();
    assert_eq!(info.transport, Transport::Other);
    let new = Endpoints {
        src: v6("fd00::99"),
        src_port: 0,
        dst: v6("2001:db8::7"),
        dst_port: 0,
    };
    rewrite(&mut buf, &info, &new);
    smoltcp_verify(&buf);
}

#[test]
fn decrement_ttl_fixtures() {
    for (s, d) in [("10.0.0.1", "10.0.0.2"), ("fd00::1", "fd00::2")] {
        let mut spec = Spec::simple(s, d, udp(1, 2));
        for ttl in [0u8, 1] {
            spec.ttl = ttl;
            let mut buf = spec.build();
            let info = parse(&buf).unwrap();
            assert!(!decrement_ttl(&mut buf, &info));
            assert_eq!(buf, spec.build());
        }
        spec.ttl = 2;
        let mut buf = spec.build();
        let info = parse(&buf).unwrap();
        assert!(decrement_ttl(&mut buf, &info));
        spec.ttl = 1;
        assert_eq!(buf, spec.build());
        smoltcp_verify(&buf);
    }
}

// ---------------------------------------------------------------------------
// Generated replies: we emit, smoltcp parses and verifies.
// ---------------------------------------------------------------------------

fn check_rst(orig: &Spec, expect_seq: u32, expect_ack: Option<u32>) {
    let mut buf = orig.build();
    let info = parse(&buf).unwrap();
    let len = write_tcp_reset(&mut buf, &info).unwrap();
    let reply = &buf[..len];
    let (src, dst): (IpAddress, IpAddress) = (orig.dst.into(), orig.src.into());
    let seg = if orig.v6() {
        let p = Ipv6Packet::new_checked(reply).unwrap();
        let r = Ipv6Repr::parse(&p).unwrap();
        assert_eq!((r.hop_limit, r.next_header), (64, IpProtocol::Tcp));
        assert_eq!(
            (IpAddress::from(r.src_addr), IpAddress::from(r.dst_addr)),
            (src, dst)
        );
        &reply[40..]
    } else {
        let p = Ipv4Packet::new_checked(reply).unwrap();
        let r = Ipv4Repr::parse(&p, &caps()).unwrap();
        assert_eq!((r.hop_limit, r.next_header), (64, IpProtocol::Tcp));
        assert_eq!(
            (IpAddress::from(r.src_addr), IpAddress::from(r.dst_addr)),
            (src, dst)
        );
        &reply[20..]
    };
    let p = TcpPacket::new_checked(seg).unwrap();
    assert!(p.verify_checksum(&src, &dst));
    let r = TcpRepr::parse(&p, &src, &dst, &caps()).unwrap();
    let L4::Tcp { sport, dport, .. } = orig.l4 else {
        unreachable!()
    };
    assert_eq!((r.src_port, r.dst_port), (dport, sport));
    assert_eq!(r.control, TcpControl::Rst);
    assert_eq!(r.seq_number, TcpSeqNumber(expect_seq as i32));
    assert_eq!(r.ack_number, expect_ack.map(|a| TcpSeqNumber(a as i32)));
    assert_eq!(r.payload, b"");
    let info = parse(reply).unwrap();
    assert_eq!(info.packet_len, len);
}

#[test]
fn tcp_reset_fixtures() {
    for (s, d) in [("10.244.0.5", "10.96.0.10"), ("fd00::5", "fd00::a")] {
        // SYN without ACK: ack = seq + 1.
        let mut spec = Spec::simple(s, d, tcp(40000, 80, 0x02));
        spec.payload = vec![];
        check_rst(&spec, 0, Some(1001));
        // Data + FIN without ACK: ack = seq + len + 1.
        spec.l4 = tcp(40000, 80, 0x01);
        spec.payload = vec![7; 10];
        check_rst(&spec, 0, Some(1011));
        // With ACK: seq = their ack, no ACK.
        spec.l4 = tcp(40000, 80, 0x18);
        check_rst(&spec, 2000, None);
        // Never answer a RST, or UDP.
        spec.l4 = tcp(40000, 80, 0x04);
        let mut buf = spec.build();
        let info = parse(&buf).unwrap();
        assert_eq!(write_tcp_reset(&mut buf, &info), None);
        spec.l4 = udp(1, 2);
        let mut buf = spec.build();
        let info = parse(&buf).unwrap();
        assert_eq!(write_tcp_reset(&mut buf, &info), None);
    }
}

/// Found by the `wire_parse` fuzz target: all-ones IPv6 addresses sum to
/// 0xffff_ffff, and adding the length to that overflowed (a panic in debug
/// builds, a checksum off by one in release builds).
#[test]
fn tcp_reset_from_all_ones_ipv6_addresses() {
    let ones = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
    let mut spec = Spec::simple(ones, ones, tcp(40000, 80, 0x02));
    spec.payload = vec![];
    check_rst(&spec, 0, Some(1001));
    let a: std::net::Ipv6Addr = ones.parse().unwrap();
    let reference = {
        let mut s: u64 = 0;
        for w in a.octets().chunks(2).chain(a.octets().chunks(2)) {
            s += u64::from(u16::from_be_bytes([w[0], w[1]]));
        }
        s += 1 + 0xffff + 6;
        while s >> 16 != 0 {
            s = (s & 0xffff) + (s >> 16);
        }
        finish(s as u32)
    };
    let ours = finish(checksum::pseudo_header_v6(&a, &a, 6, 0x1_ffff));
    assert_eq!(ours, reference);
}

/// Checks an ICMP error we built about `orig` with smoltcp, and that our
/// own parse_inner finds the original tuple in it.
fn check_icmp_error(orig: &[u8], reply: &[u8], from: IpAddr, ty: u8, code: u8, rest: u32) {
    let oinfo = parse(orig).unwrap();
    let info = parse(reply).unwrap();
    assert_eq!((info.src, info.dst, info.ttl), (from, oinfo.src, 64));
    let l4 = &reply[info.l4_offset..info.packet_len];
    match (from, oinfo.src) {
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            assert!(reply.len() <= 1280);
            let p = Icmpv6Packet::new_checked(l4).unwrap();
            assert!(p.verify_checksum(&s, &d));
            assert_eq!((u8::from(p.msg_type()), p.msg_code()), (ty, code));
        }
        _ => {
            assert!(reply.len() <= 576);
            assert!(Ipv4Packet::new_checked(reply).unwrap().verify_checksum());
            let p = Icmpv4Packet::new_checked(l4).unwrap();
            assert!(p.verify_checksum());
            assert_eq!((u8::from(p.msg_type()), p.msg_code()), (ty, code));
        }
    }
    assert_eq!(u32::from_be_bytes(l4[4..8].try_into().unwrap()), rest);
    let quoted = &l4[8..];
    assert_eq!(quoted, &orig[..quoted.len()]);
    let Transport::IcmpError {
        icmp_type, code: c, ..
    } = info.transport
    else {
        panic!("not an ICMP error: {info:?}")
    };
    assert_eq!((icmp_type, c), (ty, code));
    let inner = parse_inner(reply, &info).unwrap();
    assert_eq!(
        (inner.src, inner.dst, inner.protocol),
        (oinfo.src, oinfo.dst, oinfo.protocol)
    );
}

#[test]
fn icmp_error_fixtures() {
    let kinds = [
        (IcmpErrorKind::PortUnreachable, (3, 3, 0), (1, 4, 0)),
        (IcmpErrorKind::HostUnreachable, (3, 1, 0), (1, 3, 0)),
        (IcmpErrorKind::AdminProhibited, (3, 13, 0), (1, 1, 0)),
        (IcmpErrorKind::TimeExceeded, (11, 0, 0), (3, 0, 0)),
        (
            IcmpErrorKind::PacketTooBig { mtu: 1400 },
            (3, 4, 1400),
            (2, 0, 1400),
        ),
    ];
    for (s, d, router) in [
        ("10.244.0.5", "10.96.0.10", "10.244.0.1"),
        ("fd00::5", "fd00::a", "fd00::1"),
    ] {
        for payload_len in [0usize, 10, 2000] {
            let mut spec = Spec::simple(s, d, udp(5000, 53));
            spec.payload = vec![0xab; payload_len];
            let orig = spec.build();
            for (kind, t4, t6) in kinds {
                let (ty, code, rest) = if spec.v6() { t6 } else { t4 };
                let mut buf = orig.clone();
                buf.resize(orig.len().max(1500), 0);
                let info = parse(&buf).unwrap();
                let len = write_icmp_error(&mut buf, &info, router.parse().unwrap(), kind).unwrap();
                check_icmp_error(&orig, &buf[..len], router.parse().unwrap(), ty, code, rest);
            }
        }
    }
}

#[test]
fn icmp_error_forbidden_cases() {
    let router4 = v4("10.244.0.1");
    let try_err = |spec: &Spec, from: IpAddr, kind: IcmpErrorKind| {
        let mut buf = spec.build();
        buf.resize(buf.len() + 100, 0);
        let before = buf.clone();
        let info = parse(&buf).unwrap();
        let r = write_icmp_error(&mut buf, &info, from, kind);
        if r.is_none() {
            assert_eq!(buf, before, "untouched when refused");
        }
        r
    };
    let base = Spec::simple("10.244.0.5", "10.96.0.10", udp(1, 2));
    assert!(try_err(&base, router4, IcmpErrorKind::PortUnreachable).is_some());
    assert!(try_err(&base, v6("fd00::1"), IcmpErrorKind::PortUnreachable).is_none());
    for (src, dst) in [
        ("0.0.0.0", "10.0.0.1"),
        ("127.0.0.1", "10.0.0.1"),
        ("224.0.0.1", "10.0.0.1"),
        ("255.255.255.255", "10.0.0.1"),
        ("10.0.0.1", "224.0.0.251"),
        ("10.0.0.1", "255.255.255.255"),
    ] {
        let spec = Spec {
            src: v4(src),
            dst: v4(dst),
            ..base.clone()
        };
        assert!(
            try_err(&spec, router4, IcmpErrorKind::PortUnreachable).is_none(),
            "{src} -> {dst}"
        );
    }
    // Non-first fragment.
    let spec = Spec {
        frag: Frag::Later(10),
        ..base.clone()
    };
    assert!(try_err(&spec, router4, IcmpErrorKind::TimeExceeded).is_none());
    // An ICMP error about an ICMP error.
    let err = Spec {
        l4: L4::IcmpError {
            ty: 3,
            code: 1,
            rest: 0,
            inner: base.build(),
        },
        ..base.clone()
    };
    assert!(try_err(&err, router4, IcmpErrorKind::TimeExceeded).is_none());
    // ... but an echo request does get one.
    let echo = Spec {
        l4: L4::Echo {
            request: true,
            ident: 1,
            seq_no: 1,
        },
        ..base.clone()
    };
    assert!(try_err(&echo, router4, IcmpErrorKind::TimeExceeded).is_some());
    // ICMPv6: errors and redirects get nothing; packet too big to multicast is allowed.
    let base6 = Spec::simple("fd00::5", "ff02::1", udp(1, 2));
    let router6 = v6("fd00::1");
    assert!(try_err(&base6, router6, IcmpErrorKind::PortUnreachable).is_none());
    assert!(try_err(&base6, router6, IcmpErrorKind::PacketTooBig { mtu: 1280 }).is_some());
    let err6 = Spec {
        dst: v6("fd00::a"),
        l4: L4::IcmpError {
            ty: 137,
            code: 0,
            rest: 0,
            inner: vec![0; 32],
        },
        ..base6.clone()
    };
    assert!(try_err(&err6, router6, IcmpErrorKind::TimeExceeded).is_none());
    // Buffer too small for the new headers + the IP header + 8 bytes (28 + 28).
    let full = Spec {
        payload: vec![],
        ..base.clone()
    }
    .build();
    assert_eq!(full.len(), 28);
    let info = parse(&full).unwrap();
    let kind = IcmpErrorKind::PortUnreachable;
    let mut small = full.clone();
    small.resize(55, 0);
    assert_eq!(write_icmp_error(&mut small, &info, router4, kind), None);
    let mut enough = full.clone();
    enough.resize(56, 0);
    assert_eq!(
        write_icmp_error(&mut enough, &info, router4, kind),
        Some(56)
    );
}

#[test]
fn rewrite_icmp_error_fixture_pmtud_through_a_service() {
    // Client 10.244.0.5:40000 talks to service 10.96.0.10:80, DNATed to
    // backend 10.244.0.9:8080. The backend answers "fragmentation needed"
    // about a client packet it received: outer backend -> client, inner
    // client -> backend. The client must see it from the service, about
    // client -> service, or its PMTU discovery ignores it.
    let inner_spec = Spec::simple("10.244.0.5", "10.244.0.9", tcp(40000, 8080, 0x18));
    let inner_bytes = inner_spec.build();
    let outer = Spec {
        l4: L4::IcmpError {
            ty: 3,
            code: 4,
            rest: 1400,
            inner: inner_bytes[..inner_bytes.len().min(48)].to_vec(),
        },
        ..Spec::simple("10.244.0.9", "10.244.0.5", udp(0, 0))
    };
    let mut buf = outer.build();
    let info = parse(&buf).unwrap();
    let inner = parse_inner(&buf, &info).unwrap();
    assert_eq!((inner.src_port, inner.dst_port), (40000, 8080));
    let inner_new = Endpoints {
        src: v4("10.244.0.5"),
        src_port: 40000,
        dst: v4("10.96.0.10"),
        dst_port: 80,
    };
    rewrite_icmp_error(
        &mut buf,
        &info,
        &inner,
        v4("10.96.0.10"),
        v4("10.244.0.5"),
        &inner_new,
    );
    let expected_inner = inner_spec.translated(&inner_new).build();
    let expected = Spec {
        src: v4("10.96.0.10"),
        l4: L4::IcmpError {
            ty: 3,
            code: 4,
            rest: 1400,
            inner: expected_inner[..48].to_vec(),
        },
        ..outer.clone()
    };
    assert_eq!(buf, expected.build());
    smoltcp_verify(&buf);
}

// ---------------------------------------------------------------------------
// Properties.
// ---------------------------------------------------------------------------

fn addr_strategy(v6: bool) -> BoxedStrategy<IpAddr> {
    if v6 {
        any::<[u8; 16]>().prop_map(|o| IpAddr::V6(o.into())).boxed()
    } else {
        any::<[u8; 4]>().prop_map(|o| IpAddr::V4(o.into())).boxed()
    }
}

fn l4_strategy() -> impl Strategy<Value = L4> {
    prop_oneof![
        (
            any::<u16>(),
            any::<u16>(),
            any::<u32>(),
            any::<u32>(),
            any::<u8>(),
            0usize..=10
        )
            .prop_flat_map(|(sport, dport, seq, ack, flags, words)| {
                prop::collection::vec(any::<u8>(), words * 4).prop_map(move |opts| L4::Tcp {
                    sport,
                    dport,
                    seq,
                    ack,
                    flags,
                    opts,
                })
            }),
        (any::<u16>(), any::<u16>(), prop::bool::weighted(0.1)).prop_map(
            |(sport, dport, no_checksum)| L4::Udp {
                sport,
                dport,
                no_checksum
            }
        ),
        (any::<bool>(), any::<u16>(), any::<u16>()).prop_map(|(request, ident, seq_no)| {
            L4::Echo {
                request,
                ident,
                seq_no,
            }
        }),
    ]
}

fn ext_strategy() -> impl Strategy<Value = Vec<(u8, Vec<u8>)>> {
    (
        any::<bool>(),
        prop::collection::vec((prop::sample::select(vec![43u8, 60]), 0usize..3), 0..3),
    )
        .prop_flat_map(|(hbh, rest)| {
            let mut kinds: Vec<(u8, usize)> = vec![];
            if hbh {
                kinds.push((0, 0));
            }
            kinds.extend(rest);
            kinds
                .into_iter()
                .map(|(k, n)| {
                    prop::collection::vec(any::<u8>(), 6 + 8 * n).prop_map(move |b| (k, b))
                })
                .collect::<Vec<_>>()
        })
}

/// Any TCP/UDP/echo packet, v4 (with options) or v6 (with extension
/// headers), unfragmented or a first fragment.
fn spec_strategy() -> impl Strategy<Value = Spec> {
    any::<bool>().prop_flat_map(|is_v6| {
        (
            addr_strategy(is_v6),
            addr_strategy(is_v6),
            any::<u8>(),
            any::<u32>(),
            prop::bool::weighted(0.2),
            (0usize..=10).prop_flat_map(|w| prop::collection::vec(any::<u8>(), w * 4)),
            ext_strategy(),
            l4_strategy(),
            prop::collection::vec(any::<u8>(), 0..80),
        )
            .prop_map(
                move |(src, dst, ttl, frag_id, first, opts, ext, l4, payload)| {
                    let frag_id = if is_v6 { frag_id } else { frag_id & 0xffff };
                    Spec {
                        src,
                        dst,
                        ttl,
                        frag_id,
                        frag: if first { Frag::First } else { Frag::None },
                        v4_options: if is_v6 { vec![] } else { opts },
                        v6_ext: if is_v6 { ext } else { vec![] },
                        l4,
                        payload,
                    }
                },
            )
    })
}

/// New endpoints for `spec`: each field either kept or random.
fn endpoints_strategy(spec: &Spec) -> impl Strategy<Value = Endpoints> {
    let old = spec.endpoints();
    let v6 = spec.v6();
    (
        addr_strategy(v6),
        addr_strategy(v6),
        any::<u16>(),
        any::<u16>(),
        any::<[bool; 4]>(),
    )
        .prop_map(move |(src, dst, sp, dp, keep)| Endpoints {
            src: if keep[0] { old.src } else { src },
            dst: if keep[1] { old.dst } else { dst },
            src_port: if keep[2] { old.src_port } else { sp },
            dst_port: if keep[3] { old.dst_port } else { dp },
        })
}

fn spec_and_endpoints() -> impl Strategy<Value = (Spec, Endpoints)> {
    spec_strategy().prop_flat_map(|s| {
        let e = endpoints_strategy(&s);
        (Just(s), e)
    })
}

/// An ICMP error (type per family) quoting a generated packet cut to `cut`
/// bytes (at least its headers + 8), with new outer and inner endpoints.
fn icmp_error_case() -> impl Strategy<Value = (Spec, Spec, usize, IpAddr, IpAddr, Endpoints)> {
    spec_strategy()
        .prop_filter("unfragmented inner", |s| s.frag == Frag::None)
        .prop_flat_map(|inner| {
            let v6 = inner.v6();
            let full = inner.build().len();
            let min = parse(&inner.build()).unwrap().l4_offset + 8;
            (
                Just(inner.clone()),
                min..=full,
                addr_strategy(v6),
                addr_strategy(v6),
                addr_strategy(v6),
                addr_strategy(v6),
                endpoints_strategy(&inner),
                any::<bool>(),
            )
        })
        .prop_map(|(inner, mut cut, a, b, c, d, inner_new, time_exceeded)| {
            let full = inner.build();
            let l4 = parse(&full).unwrap().l4_offset;
            // The inner TCP checksum is translated only when both its bytes are present.
            if matches!(inner.l4, L4::Tcp { .. }) && cut == l4 + 17 {
                cut += 1;
            }
            let (ty, code) = match (inner.v6(), time_exceeded) {
                (false, false) => (3, 4),
                (false, true) => (11, 0),
                (true, false) => (1, 4),
                (true, true) => (3, 0),
            };
            let outer = Spec {
                src: a,
                dst: b,
                ttl: 60,
                frag_id: 7,
                frag: Frag::None,
                v4_options: vec![],
                v6_ext: vec![],
                l4: L4::IcmpError {
                    ty,
                    code,
                    rest: 1280,
                    inner: full[..cut].to_vec(),
                },
                payload: vec![],
            };
            (outer, inner, cut, c, d, inner_new)
        })
}

/// Runs every function that accepts a parsed packet; none may panic.
fn exercise(bytes: &[u8], e: &Endpoints) {
    let Ok(info) = parse(bytes) else { return };
    let mut b = bytes.to_vec();
    rewrite(&mut b, &info, e);
    let mut b = bytes.to_vec();
    let _ = decrement_ttl(&mut b, &info);
    if let Ok(inner) = parse_inner(bytes, &info) {
        let mut b = bytes.to_vec();
        rewrite_icmp_error(&mut b, &info, &inner, e.dst, e.src, e);
    }
    let mut b = bytes.to_vec();
    let _ = write_tcp_reset(&mut b, &info);
    for extra in [0usize, 600] {
        let mut b = bytes.to_vec();
        b.resize(b.len() + extra, 0);
        let _ = write_icmp_error(
            &mut b,
            &info,
            e.src,
            IcmpErrorKind::PacketTooBig { mtu: 1280 },
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn builder_agrees_with_smoltcp(spec in spec_strategy()) {
        smoltcp_verify(&spec.build());
    }

    #[test]
    fn parse_finds_the_spec(spec in spec_strategy()) {
        let buf = spec.build();
        let info = parse(&buf).unwrap();
        prop_assert_eq!((info.src, info.dst, info.ttl), (spec.src, spec.dst, spec.ttl));
        prop_assert_eq!(info.protocol, spec.proto());
        prop_assert_eq!(info.packet_len, buf.len());
        let l4_len = spec.l4_bytes().len();
        prop_assert_eq!(info.l4_offset, buf.len() - l4_len);
        let frag = match spec.frag {
            Frag::None => Fragment::None,
            Frag::First => Fragment::First { id: spec.frag_id },
            Frag::Later(_) => Fragment::Later { id: spec.frag_id },
        };
        prop_assert_eq!(info.fragment, frag);
        let e = spec.endpoints();
        match (info.transport, &spec.l4) {
            (Transport::Tcp { src_port, dst_port, seq, ack, flags }, L4::Tcp { seq: s, ack: a, flags: f, .. }) => {
                prop_assert_eq!((src_port, dst_port, seq, ack, flags), (e.src_port, e.dst_port, *s, *a, TcpFlags(*f)));
            }
            (Transport::Udp { src_port, dst_port }, L4::Udp { .. }) => {
                prop_assert_eq!((src_port, dst_port), (e.src_port, e.dst_port));
            }
            (Transport::IcmpEcho { request, ident }, L4::Echo { request: r, .. }) => {
                prop_assert_eq!((request, ident), (*r, e.src_port));
            }
            (t, l) => prop_assert!(false, "{:?} parsed as {:?}", l, t),
        }
        // Trailing bytes beyond the IP length change nothing.
        let mut longer = buf.clone();
        longer.extend_from_slice(&[0xff; 9]);
        prop_assert_eq!(parse(&longer), Ok(info));
    }

    #[test]
    fn rewrite_equals_full_recomputation_and_reverses((spec, new) in spec_and_endpoints()) {
        let orig = spec.build();
        let mut buf = orig.clone();
        let info = parse(&buf).unwrap();
        rewrite(&mut buf, &info, &new);
        prop_assert_eq!(&buf, &spec.translated(&new).build());
        smoltcp_verify(&buf);
        let back_info = parse(&buf).unwrap();
        rewrite(&mut buf, &back_info, &spec.endpoints());
        prop_assert_eq!(&buf, &orig);
    }

    #[test]
    fn later_fragment_rewrite_changes_addresses_only((spec, new) in spec_and_endpoints()) {
        let spec = Spec { frag: Frag::Later(5), ..spec };
        let mut buf = spec.build();
        let info = parse(&buf).unwrap();
        prop_assert_eq!(info.transport, Transport::Other);
        rewrite(&mut buf, &info, &new);
        prop_assert_eq!(&buf, &spec.translated(&new).build());
    }

    #[test]
    fn decrement_ttl_equals_full_recomputation(spec in spec_strategy()) {
        let mut buf = spec.build();
        let info = parse(&buf).unwrap();
        let done = decrement_ttl(&mut buf, &info);
        prop_assert_eq!(done, spec.ttl > 1);
        let expected = if done { Spec { ttl: spec.ttl - 1, ..spec.clone() } } else { spec.clone() };
        prop_assert_eq!(&buf, &expected.build());
    }

    #[test]
    fn rewrite_icmp_error_equals_full_recomputation(
        (outer, inner_spec, cut, new_src, new_dst, inner_new) in icmp_error_case()
    ) {
        let orig = outer.build();
        let mut buf = orig.clone();
        let info = parse(&buf).unwrap();
        let inner = parse_inner(&buf, &info).unwrap();
        let old_inner = inner_spec.endpoints();
        prop_assert_eq!((inner.src, inner.dst), (old_inner.src, old_inner.dst));
        prop_assert_eq!(inner.available, cut);
        rewrite_icmp_error(&mut buf, &info, &inner, new_src, new_dst, &inner_new);
        let translated_inner = inner_spec.translated(&inner_new).build();
        let expected = Spec {
            src: new_src,
            dst: new_dst,
            l4: match &outer.l4 {
                L4::IcmpError { ty, code, rest, .. } => L4::IcmpError {
                    ty: *ty, code: *code, rest: *rest, inner: translated_inner[..cut].to_vec(),
                },
                _ => unreachable!(),
            },
            ..outer.clone()
        };
        prop_assert_eq!(&buf, &expected.build());
        smoltcp_verify(&buf);
        // And back.
        let info2 = parse(&buf).unwrap();
        let inner2 = parse_inner(&buf, &info2).unwrap();
        rewrite_icmp_error(&mut buf, &info2, &inner2, outer.src, outer.dst, &inner_spec.endpoints());
        prop_assert_eq!(&buf, &orig);
    }

    #[test]
    fn tcp_reset_is_valid_for_any_tcp_packet(spec in spec_strategy()) {
        let mut buf = spec.build();
        let info = parse(&buf).unwrap();
        let Transport::Tcp { flags, seq, ack, .. } = info.transport else { return Ok(()) };
        let r = write_tcp_reset(&mut buf, &info);
        if flags.contains(TcpFlags::RST) || (spec.frag == Frag::First && !flags.contains(TcpFlags::ACK)) {
            prop_assert_eq!(r, None);
            return Ok(());
        }
        let len = r.unwrap();
        smoltcp_verify(&buf[..len]);
        let reply = parse(&buf[..len]).unwrap();
        prop_assert_eq!((reply.src, reply.dst), (info.dst, info.src));
        let Transport::Tcp { seq: rs, ack: ra, flags: rf, .. } = reply.transport else { panic!() };
        if flags.contains(TcpFlags::ACK) {
            prop_assert_eq!((rs, rf), (ack, TcpFlags::RST));
        } else {
            let seg = (info.packet_len - info.l4_offset) as u32
                - u32::from(spec.l4_bytes()[12] >> 4) * 4
                + u32::from(flags.contains(TcpFlags::SYN))
                + u32::from(flags.contains(TcpFlags::FIN));
            prop_assert_eq!((rs, ra, rf), (0, seq.wrapping_add(seg), TcpFlags::RST | TcpFlags::ACK));
        }
    }

    #[test]
    fn icmp_error_is_valid_for_any_packet(spec in spec_strategy(), room in 0usize..1600, from_last in any::<u8>()) {
        let orig = spec.build();
        let mut buf = orig.clone();
        buf.resize(orig.len() + room, 0);
        let info = parse(&buf).unwrap();
        let from = match spec.src {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::new(10, 244, 0, from_last)),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, u16::from(from_last))),
        };
        if let Some(len) = write_icmp_error(&mut buf, &info, from, IcmpErrorKind::HostUnreachable) {
            let (ty, code) = if spec.v6() { (1, 3) } else { (3, 1) };
            check_icmp_error(&orig, &buf[..len], from, ty, code, 0);
        } else {
            prop_assert_eq!(&buf[..orig.len()], &orig[..]);
        }
    }

    #[test]
    fn nothing_panics_on_garbage(bytes in prop::collection::vec(any::<u8>(), 0..200), e in endpoints_strategy(&Spec::simple("10.0.0.1", "10.0.0.2", udp(1, 2)))) {
        exercise(&bytes, &e);
        let mut b6 = bytes.clone();
        if let Some(f) = b6.first_mut() { *f = 0x60 | (*f & 0x0f); }
        exercise(&b6, &e);
    }

    #[test]
    fn nothing_panics_on_mutated_packets(
        (spec, e) in spec_and_endpoints(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut b = spec.build();
        for (i, v) in &flips {
            let i = i.index(b.len());
            b[i] = *v;
        }
        exercise(&b, &e);
        exercise(&b[..cut.index(b.len() + 1)], &e);
    }

    #[test]
    fn nothing_panics_on_mutated_icmp_errors(
        (outer, _inner, _cut, s, d, e) in icmp_error_case(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let mut b = outer.build();
        for (i, v) in &flips {
            let i = i.index(b.len());
            // Keep the outer header intact so the inner parser gets exercised.
            if i >= 28 { b[i] = *v; }
        }
        exercise(&b, &Endpoints { src: s, dst: d, ..e });
    }
}

// ---------------------------------------------------------------------------
// Offloads: the virtio-net header, partial-checksum seeds, segmentation.
// ---------------------------------------------------------------------------

use super::gso::Segmenter;
use super::virtio::{
    check, complete_checksum, flags as vflags, gso as vgso, L4Checksum, VirtioNetHdr, VnetError,
    VnetHdr, HEADER_LEN,
};

/// Whether two checksum-field values are the same ones-complement number.
fn same_ones_complement(a: u16, b: u16) -> bool {
    a == b || (a == 0 && b == 0xffff) || (a == 0xffff && b == 0)
}

/// Turns a built TCP/UDP packet into what a kernel with checksum offload
/// hands over: the checksum field holds the pseudo-header seed.
fn make_partial(buf: &mut [u8]) -> VnetHdr {
    let info = parse(buf).unwrap();
    let l4_len = (info.packet_len - info.l4_offset) as u32;
    let seed = checksum::fold(pseudo_header(info.src, info.dst, info.protocol, l4_len));
    let off: u16 = if info.protocol == 6 { 16 } else { 6 };
    let at = info.l4_offset + usize::from(off);
    buf[at..at + 2].copy_from_slice(&seed.to_be_bytes());
    VnetHdr {
        flags: vflags::NEEDS_CSUM,
        csum_start: info.l4_offset as u16,
        csum_offset: off,
        ..VnetHdr::NONE
    }
}

#[test]
fn virtio_header_view_both_ways() {
    // What a kernel hands over for a TSO4 super-packet: NEEDS_CSUM, TCPV4,
    // hdr_len 66, gso_size 1448, csum_start 20, csum_offset 16 (little-endian).
    let bytes: [u8; HEADER_LEN] = [1, 1, 66, 0, 0xa8, 0x05, 20, 0, 16, 0];
    let view = VirtioNetHdr::new_checked(&bytes[..]).unwrap();
    let h = VnetHdr::parse(&view);
    assert_eq!(
        h,
        VnetHdr {
            flags: vflags::NEEDS_CSUM,
            gso_type: vgso::TCPV4,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 20,
            csum_offset: 16,
        }
    );
    assert!(h.needs_csum() && h.is_gso() && !h.is_plain());
    assert_eq!(h.to_bytes(), bytes);
    assert_eq!(VnetHdr::from_bytes(&bytes), h);
    for len in 0..HEADER_LEN {
        assert!(VirtioNetHdr::new_checked(&bytes[..len]).is_err());
    }
    assert!(VnetHdr::NONE.is_plain());
    assert_eq!(VnetHdr::NONE.to_bytes(), [0; HEADER_LEN]);
}

#[test]
fn virtio_check_decides_checksum_treatment() {
    let tcp4 = Spec::simple("10.0.0.1", "10.0.0.2", tcp(1, 2, 0x10)).build();
    let udp6 = Spec::simple("fd00::1", "fd00::2", udp(1, 2)).build();
    let echo = Spec::simple(
        "10.0.0.1",
        "10.0.0.2",
        L4::Echo {
            request: true,
            ident: 1,
            seq_no: 1,
        },
    )
    .build();
    let (i_tcp4, i_udp6, i_echo) = (
        parse(&tcp4).unwrap(),
        parse(&udp6).unwrap(),
        parse(&echo).unwrap(),
    );
    let partial = |start, off| VnetHdr {
        flags: vflags::NEEDS_CSUM,
        csum_start: start,
        csum_offset: off,
        ..VnetHdr::NONE
    };
    let gso = |ty, size| VnetHdr {
        gso_type: ty,
        gso_size: size,
        ..partial(20, 16)
    };
    assert_eq!(check(&VnetHdr::NONE, &i_tcp4), Ok(L4Checksum::Full));
    assert_eq!(check(&partial(20, 16), &i_tcp4), Ok(L4Checksum::Seed));
    assert_eq!(check(&partial(40, 6), &i_udp6), Ok(L4Checksum::Seed));
    assert_eq!(
        check(&gso(vgso::TCPV4, 1448), &i_tcp4),
        Ok(L4Checksum::Seed)
    );
    assert_eq!(
        check(&gso(vgso::TCPV4 | vgso::ECN, 1448), &i_tcp4),
        Ok(L4Checksum::Seed)
    );
    // Somewhere else than the TCP/UDP checksum: finish it first.
    assert_eq!(
        check(&partial(20, 6), &i_tcp4),
        Err(VnetError::ForeignPartial)
    );
    assert_eq!(
        check(&partial(20, 2), &i_echo),
        Err(VnetError::ForeignPartial)
    );
    // Super-packets that cannot be segmented as they say.
    assert_eq!(
        check(&gso(vgso::TCPV6, 1448), &i_tcp4),
        Err(VnetError::BadGso)
    );
    assert_eq!(check(&gso(vgso::TCPV4, 0), &i_tcp4), Err(VnetError::BadGso));
    assert_eq!(
        check(&gso(vgso::UDP, 1448), &i_tcp4),
        Err(VnetError::BadGso)
    );
    assert_eq!(check(&gso(9, 1448), &i_tcp4), Err(VnetError::BadGso));
    let g = VnetHdr {
        csum_offset: 6,
        ..gso(vgso::TCPV4, 1448)
    };
    assert_eq!(check(&g, &i_tcp4), Err(VnetError::BadGso));
}

#[test]
fn complete_checksum_finishes_a_seed() {
    for spec in [
        Spec::simple("10.0.0.1", "10.0.0.2", tcp(1, 2, 0x18)),
        Spec::simple("fd00::1", "fd00::2", udp(53, 5353)),
    ] {
        let want = spec.build();
        let mut b = want.clone();
        let hdr = make_partial(&mut b);
        assert_ne!(b, want);
        assert!(complete_checksum(&mut b, &hdr, spec.proto()));
        assert_eq!(b, want);
        smoltcp_verify(&b);
        let far = VnetHdr {
            csum_offset: b.len() as u16,
            ..hdr
        };
        assert!(!complete_checksum(&mut b, &far, spec.proto()));
        assert_eq!(b, want);
    }
}

/// A TCP or UDP super-packet as a kernel with TSO/USO hands it over.
fn super_packet(
    v6: bool,
    udp_l4: bool,
    payload: usize,
    gso_size: u16,
    flags: u8,
) -> (Vec<u8>, VnetHdr) {
    let (src, dst) = if v6 {
        ("fd00::5", "fd00:10::9")
    } else {
        ("10.244.0.5", "10.96.0.10")
    };
    let l4 = if udp_l4 {
        udp(4000, 53)
    } else {
        L4::Tcp {
            sport: 40000,
            dport: 80,
            seq: 0xffff_f000, // wraps within the packet
            ack: 77,
            flags,
            opts: vec![1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2], // NOP NOP timestamps
        }
    };
    let mut spec = Spec::simple(src, dst, l4);
    spec.payload = (0..payload).map(|i| (i * 31 + 7) as u8).collect();
    let mut b = spec.build();
    let mut hdr = make_partial(&mut b);
    hdr.gso_size = gso_size;
    hdr.gso_type = match (udp_l4, v6) {
        (true, _) => vgso::UDP_L4,
        (false, false) => vgso::TCPV4,
        (false, true) => vgso::TCPV6,
    };
    (b, hdr)
}

/// Segments a super-packet and checks each segment as a receiving stack
/// would: every checksum, lengths, IDs, sequence numbers, flags, and the
/// payload reassembled.
fn check_segments(b: &[u8], hdr: &VnetHdr) {
    let info = parse(b).unwrap();
    let seg = Segmenter::new(b, &info, hdr).unwrap();
    let headers = seg.header_len();
    let payload = &b[headers..];
    let size = usize::from(hdr.gso_size);
    assert_eq!(seg.segments(), payload.len().div_ceil(size).max(1));
    let mut out = vec![0u8; 65_536];
    let mut joined = Vec::new();
    let v4_id = u16::from_be_bytes([b[4], b[5]]);
    for i in 0..seg.segments() {
        let n = seg.write(b, i, &mut out).unwrap();
        let s = &out[..n];
        smoltcp_verify(s);
        let si = parse(s).unwrap();
        assert_eq!(si.packet_len, n);
        assert_eq!(
            (si.src, si.dst, si.protocol),
            (info.src, info.dst, info.protocol)
        );
        assert!(n - headers <= size);
        if info.version == IpVersion::V4 {
            assert_eq!(
                u16::from_be_bytes([s[4], s[5]]),
                v4_id.wrapping_add(i as u16)
            );
        }
        let last = i + 1 == seg.segments();
        match (si.transport, info.transport) {
            (
                Transport::Tcp { seq, flags, .. },
                Transport::Tcp {
                    seq: seq0,
                    flags: flags0,
                    ..
                },
            ) => {
                assert_eq!(seq, seq0.wrapping_add((i * size) as u32));
                let mut want = flags0.0;
                if !last {
                    want &= !0x09;
                }
                if i > 0 {
                    want &= !0x80;
                }
                assert_eq!(flags.0, want, "segment {i}");
            }
            (Transport::Udp { .. }, Transport::Udp { .. }) => {
                let l4 = &s[si.l4_offset..];
                assert_eq!(
                    usize::from(u16::from_be_bytes([l4[4], l4[5]])),
                    n - si.l4_offset
                );
            }
            other => panic!("transport changed: {other:?}"),
        }
        joined.extend_from_slice(&s[headers..]);
    }
    assert_eq!(joined, payload);
    assert!(seg.write(b, seg.segments(), &mut out).is_err());
    if !payload.is_empty() {
        assert_eq!(
            seg.write(b, 0, &mut out[..headers]),
            Err(gso::GsoError::BufferTooSmall)
        );
    }
}

#[test]
fn segmentation_fixtures() {
    // PSH, FIN and CWR set on the super-packet: FIN and PSH belong to the
    // last segment only, CWR to the first.
    for v6 in [false, true] {
        for udp_l4 in [false, true] {
            for (payload, size) in [
                (4000, 1000),
                (4321, 1448),
                (10, 1448),
                (0, 536),
                (65_000, 1448),
            ] {
                let (b, hdr) = super_packet(v6, udp_l4, payload, size, 0x10 | 0x08 | 0x01 | 0x80);
                check_segments(&b, &hdr);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// NAT of a packet whose checksum field holds a partial-checksum seed:
    /// the seed equals the pseudo-header sum of the new addresses computed
    /// from scratch, the other bytes equal the translated packet's, and the
    /// checksum finished afterwards is the translated packet's full checksum.
    #[test]
    fn seed_rewrite_matches_recomputation(
        (spec, new) in spec_and_endpoints()
            .prop_filter("unfragmented TCP/UDP", |(s, _)| s.frag == Frag::None
                && matches!(s.l4, L4::Tcp { .. } | L4::Udp { .. }))
    ) {
        let mut spec = spec;
        if let L4::Udp { no_checksum, .. } = &mut spec.l4 {
            *no_checksum = false; // a partial checksum is never "absent"
        }
        let mut b = spec.build();
        let hdr = make_partial(&mut b);
        let info = parse(&b).unwrap();
        prop_assert_eq!(check(&hdr, &info), Ok(L4Checksum::Seed));
        rewrite_with(&mut b, &info, &new, L4Checksum::Seed);

        let want = spec.translated(&new).build();
        let at = info.l4_offset + usize::from(hdr.csum_offset);
        let l4_len = (info.packet_len - info.l4_offset) as u32;
        let seed = u16::from_be_bytes([b[at], b[at + 1]]);
        let fresh = checksum::fold(pseudo_header(new.src, new.dst, info.protocol, l4_len));
        prop_assert!(same_ones_complement(seed, fresh), "seed {:#06x} fresh {:#06x}", seed, fresh);
        prop_assert_eq!(&b[..at], &want[..at]);
        prop_assert_eq!(&b[at + 2..], &want[at + 2..]);

        prop_assert!(complete_checksum(&mut b, &hdr, info.protocol));
        prop_assert_eq!(&b, &want);
        smoltcp_verify(&b);
    }

    /// Any super-packet, cut at any size, makes segments a receiver accepts.
    #[test]
    fn segmentation_properties(
        v6 in any::<bool>(),
        udp_l4 in any::<bool>(),
        payload in 0usize..9000,
        size in 1u16..2000,
        flags in any::<u8>(),
    ) {
        let (b, hdr) = super_packet(v6, udp_l4, payload, size, flags);
        check_segments(&b, &hdr);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Segmentation and checksum completion never panic, whatever the
    /// header says and even when the parsed view belongs to another packet.
    #[test]
    fn offload_functions_never_panic(
        spec in spec_strategy(),
        other in spec_strategy(),
        flips in prop::collection::vec((0usize..120, any::<u8>()), 0..4),
        hdr in any::<[u8; HEADER_LEN]>(),
        forged in any::<bool>(),
    ) {
        let mut bytes = spec.build();
        let other = other.build();
        let Ok(own) = parse(&bytes) else { return Ok(()) };
        let info = if forged { parse(&other).unwrap_or(own) } else { own };
        for (i, x) in flips {
            let n = bytes.len();
            bytes[i % n] ^= x;
        }
        let raw = VnetHdr::from_bytes(&hdr);
        // Also headers that fit the packet as a kernel's would, so that
        // segmentation gets going, with any segment size.
        let fitting = VnetHdr {
            flags: vflags::NEEDS_CSUM,
            gso_type: match (info.protocol, info.version) {
                (17, _) => vgso::UDP_L4,
                (_, IpVersion::V4) => vgso::TCPV4,
                _ => vgso::TCPV6,
            },
            csum_start: info.l4_offset as u16,
            csum_offset: if info.protocol == 17 { 6 } else { 16 },
            gso_size: raw.gso_size % 1500 + 1,
            hdr_len: raw.hdr_len,
        };
        for h in [raw, fitting] {
            let _ = check(&h, &info);
            let _ = complete_checksum(&mut bytes.clone(), &h, info.protocol);
            if let Ok(seg) = Segmenter::new(&bytes, &info, &h) {
                let mut out = vec![0u8; 2048];
                for i in 0..seg.segments().min(8) {
                    let _ = seg.write(&bytes, i, &mut out);
                }
                let _ = seg.write(&bytes, usize::MAX, &mut out);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The seed corpus of the fuzz targets (fuzz/seeds/), from these fixtures.
// ---------------------------------------------------------------------------

/// A virtio-net header: flags, gso_type, gso_size, csum_start, csum_offset.
fn vnet_bytes(
    flags: u8,
    gso_type: u8,
    gso_size: u16,
    csum_start: u16,
    csum_offset: u16,
) -> [u8; 10] {
    let mut h = [0u8; 10];
    h[0] = flags;
    h[1] = gso_type;
    h[4..6].copy_from_slice(&gso_size.to_le_bytes());
    h[6..8].copy_from_slice(&csum_start.to_le_bytes());
    h[8..10].copy_from_slice(&csum_offset.to_le_bytes());
    h
}

/// The offload headers a packet can come with: none, a partial checksum,
/// and (for TCP and UDP) a super-packet of 100-byte segments.
fn vnet_variants(packet: &[u8]) -> Vec<[u8; 10]> {
    let mut out = vec![[0; 10]];
    let info = parse(packet).unwrap();
    let (check, gso) = match (info.protocol, info.version) {
        (6, IpVersion::V4) => (16, 1),
        (6, IpVersion::V6) => (16, 4),
        (17, _) => (6, 5),
        _ => return out,
    };
    let start = info.l4_offset as u16;
    out.push(vnet_bytes(1, 0, 0, start, check));
    out.push(vnet_bytes(1, gso, 100, start, check));
    out
}

/// Writes the seed corpus of `wire_parse` (`[vnet][packet]`) and
/// `router_process` (see fuzz/src/lib.rs: `[link][vnet][len: 2][packet]`,
/// optionally followed by `[link][vnet][packet]`) into fuzz/seeds/.
/// Run: `cargo test --lib write_fuzz_seeds -- --ignored`.
#[test]
#[ignore = "writes fuzz/seeds/"]
fn write_fuzz_seeds() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let write = |target: &str, name: String, bytes: Vec<u8>| {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    };

    let mut wire = fixtures();
    let mut big = Spec::simple("10.0.0.1", "10.0.0.2", tcp(10, 20, 0x18));
    big.payload = vec![0x5a; 350];
    wire.push(big.build());
    big.src = v6("fd00::1");
    big.dst = v6("fd00::2");
    big.l4 = udp(30, 40);
    wire.push(big.build());
    let inner = Spec::simple("10.0.0.2", "10.0.0.1", udp(40, 30)).build();
    let error = |src: &str, dst: &str, ty: u8, inner: &[u8]| {
        Spec::simple(
            src,
            dst,
            L4::IcmpError {
                ty,
                code: 3,
                rest: 0,
                inner: inner.to_vec(),
            },
        )
        .build()
    };
    wire.push(error("10.0.0.3", "10.0.0.2", 3, &inner[..28]));
    let inner6 = Spec::simple("fd00::2", "fd00::1", udp(40, 30)).build();
    wire.push(error("fd00::3", "fd00::2", 1, &inner6[..48]));
    for (i, p) in wire.iter().enumerate() {
        for (j, h) in vnet_variants(p).iter().enumerate() {
            write(
                "wire_parse",
                format!("fixture-{i:02}-{j}"),
                [&h[..], p].concat(),
            );
        }
    }

    // The fuzz router: pods 1 (10.244.0.5, fd00:10:244::5), 2 (.6, ::6),
    // 3 (.7); services 10.96.0.10:80 TCP and UDP, [fd00:96::10]:80 TCP,
    // 10.96.0.10:81 TCP without backends. Link byte: % 5 is the host (0)
    // or a pod; 0x80 sends the reply to packet 1 as packet 2.
    let router = |name: &str, link: u8, p: &[u8], second: Option<(u8, &[u8])>| {
        for (j, h) in vnet_variants(p).iter().enumerate() {
            let mut v = vec![link];
            v.extend_from_slice(h);
            v.extend_from_slice(&(p.len() as u16).to_be_bytes());
            v.extend_from_slice(p);
            if let Some((l, p2)) = second {
                v.push(l);
                v.extend_from_slice(&[0; 10]);
                v.extend_from_slice(p2);
            }
            write("router_process", format!("{name}-{j}"), v);
        }
    };
    let syn = Spec::simple("10.244.0.5", "10.96.0.10", tcp(40000, 80, 0x02)).build();
    router("tcp-syn-to-service", 0x81, &syn, None);
    let ack = Spec::simple("10.244.0.5", "10.96.0.10", tcp(40000, 80, 0x10)).build();
    router("tcp-syn-then-ack", 0x01, &syn, Some((0x01, &ack)));
    let udp4 = Spec::simple("10.244.0.5", "10.96.0.10", udp(5000, 80)).build();
    router("udp-to-service", 0x81, &udp4, None);
    let error = Spec::simple(
        "10.244.0.6",
        "10.244.0.5",
        L4::IcmpError {
            ty: 3,
            code: 3,
            rest: 0,
            inner: Spec::simple("10.244.0.5", "10.244.0.6", udp(5000, 8080)).build()[..28].to_vec(),
        },
    )
    .build();
    router(
        "udp-then-port-unreachable",
        0x01,
        &udp4,
        Some((0x02, &error)),
    );
    let syn6 = Spec::simple("fd00:10:244::5", "fd00:96::10", tcp(40000, 80, 0x02)).build();
    router("tcp6-syn-to-service", 0x81, &syn6, None);
    let no_backend = Spec::simple("10.244.0.5", "10.96.0.10", tcp(40000, 81, 0x02)).build();
    router("tcp-syn-no-backend", 0x01, &no_backend, None);
    let from_host = Spec::simple("192.168.1.1", "10.244.0.6", tcp(50000, 8080, 0x02)).build();
    router("host-to-pod", 0x80, &from_host, None);
    let no_pod = Spec::simple("10.244.0.5", "10.244.0.99", udp(5000, 53)).build();
    router("to-missing-pod", 0x01, &no_pod, None);
    let echo = Spec::simple(
        "10.244.0.5",
        "10.244.0.6",
        L4::Echo {
            request: true,
            ident: 7,
            seq_no: 1,
        },
    )
    .build();
    router("echo-pod-to-pod", 0x81, &echo, None);
    let mut ttl1 = Spec::simple("10.244.0.5", "192.168.1.1", udp(5000, 53));
    ttl1.ttl = 1;
    router("ttl-expires", 0x01, &ttl1.build(), None);
    let mut data = Spec::simple("10.244.0.5", "10.96.0.10", tcp(40000, 80, 0x18));
    data.payload = vec![0x5a; 350];
    router("tcp-data-to-service", 0x81, &data.build(), None);
}
