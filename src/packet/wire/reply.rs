//! Replies a router generates instead of forwarding: TCP RST (RFC 9293) and
//! ICMP/ICMPv6 errors (RFC 792, RFC 1122, RFC 1812, RFC 4443), built in the
//! buffer that held the offending packet, with full checksums.

use std::net::{IpAddr, SocketAddr};

use super::checksum::{finish, internet_checksum, pseudo_header, sum};
use super::field::{icmp, ipv4, ipv6, proto, set16, set32, tcp};
use super::{Fragment, IpVersion, PacketInfo, TcpFlags, Transport};

/// TTL / hop limit of generated packets.
const REPLY_TTL: u8 = 64;
/// RFC 1812 4.3.2.3: an ICMPv4 error is at most 576 bytes.
const ICMPV4_ERROR_MAX: usize = 576;
/// RFC 4443 2.4 (c): an ICMPv6 error is at most the minimum MTU.
const ICMPV6_ERROR_MAX: usize = 1280;

/// Which ICMP error to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IcmpErrorKind {
    /// Nothing listens on the port (v4 3/3, v6 1/4); what kube-proxy's REJECT sends for UDP.
    PortUnreachable,
    /// The destination cannot be reached (v4 3/1, v6 1/3 address unreachable).
    HostUnreachable,
    /// Administratively prohibited, e.g. by a network policy (v4 3/13, v6 1/1).
    AdminProhibited,
    /// TTL / hop limit exceeded in transit (v4 11/0, v6 3/0).
    TimeExceeded,
    /// The packet does not fit the next hop: v4 destination unreachable
    /// code 4 (fragmentation needed, RFC 1191) with the next-hop MTU, v6
    /// packet too big (type 2).
    PacketTooBig {
        /// MTU of the next hop.
        mtu: u16,
    },
}

impl IcmpErrorKind {
    /// (type, code, second header word) for `version`.
    fn header(self, version: IpVersion) -> (u8, u8, u32) {
        match (version, self) {
            (IpVersion::V4, IcmpErrorKind::PortUnreachable) => (icmp::V4_DEST_UNREACHABLE, 3, 0),
            (IpVersion::V4, IcmpErrorKind::HostUnreachable) => (icmp::V4_DEST_UNREACHABLE, 1, 0),
            (IpVersion::V4, IcmpErrorKind::AdminProhibited) => (icmp::V4_DEST_UNREACHABLE, 13, 0),
            (IpVersion::V4, IcmpErrorKind::TimeExceeded) => (icmp::V4_TIME_EXCEEDED, 0, 0),
            (IpVersion::V4, IcmpErrorKind::PacketTooBig { mtu }) => {
                (icmp::V4_DEST_UNREACHABLE, 4, u32::from(mtu))
            }
            (IpVersion::V6, IcmpErrorKind::PortUnreachable) => (icmp::V6_DEST_UNREACHABLE, 4, 0),
            (IpVersion::V6, IcmpErrorKind::HostUnreachable) => (icmp::V6_DEST_UNREACHABLE, 3, 0),
            (IpVersion::V6, IcmpErrorKind::AdminProhibited) => (icmp::V6_DEST_UNREACHABLE, 1, 0),
            (IpVersion::V6, IcmpErrorKind::TimeExceeded) => (icmp::V6_TIME_EXCEEDED, 0, 0),
            (IpVersion::V6, IcmpErrorKind::PacketTooBig { mtu }) => {
                (icmp::V6_PACKET_TOO_BIG, 0, u32::from(mtu))
            }
        }
    }
}

/// Writes an IP header for a generated packet at the start of `buf`
/// (`buf.len()` >= header length); `payload_len` excludes the IP header.
fn write_ip_header(buf: &mut [u8], src: IpAddr, dst: IpAddr, protocol: u8, payload_len: usize) {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let hdr = &mut buf[..ipv4::HEADER_LEN];
            hdr.fill(0);
            hdr[ipv4::VER_IHL] = 0x45;
            set16(
                hdr,
                ipv4::TOTAL_LEN,
                (ipv4::HEADER_LEN + payload_len) as u16,
            );
            hdr[ipv4::TTL] = REPLY_TTL;
            hdr[ipv4::PROTOCOL] = protocol;
            hdr[ipv4::SRC..ipv4::SRC + 4].copy_from_slice(&s.octets());
            hdr[ipv4::DST..ipv4::DST + 4].copy_from_slice(&d.octets());
            let check = internet_checksum(hdr);
            set16(hdr, ipv4::CHECKSUM, check);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let hdr = &mut buf[..ipv6::HEADER_LEN];
            hdr.fill(0);
            hdr[ipv6::VER_TC_FLOW] = 0x60;
            set16(hdr, ipv6::PAYLOAD_LEN, payload_len as u16);
            hdr[ipv6::NEXT_HEADER] = protocol;
            hdr[ipv6::HOP_LIMIT] = REPLY_TTL;
            hdr[ipv6::SRC..ipv6::SRC + 16].copy_from_slice(&s.octets());
            hdr[ipv6::DST..ipv6::DST + 16].copy_from_slice(&d.octets());
        }
        _ => {}
    }
}

fn header_len(version: IpVersion) -> usize {
    match version {
        IpVersion::V4 => ipv4::HEADER_LEN,
        IpVersion::V6 => ipv6::HEADER_LEN,
    }
}

/// Overwrites `buf` with a TCP RST answering the parsed TCP segment, and
/// returns the reply's length.
///
/// Addresses and ports are swapped; as RFC 9293 3.10.7.1 says, if the segment
/// had ACK the reset has `seq` = its ack and flags RST, else seq 0,
/// ack = its seq + segment length (+1 for SYN, +1 for FIN) and flags RST|ACK.
/// TTL 64, no options, window 0, full checksums.
///
/// None when the packet is not TCP, is itself a RST, is a non-first
/// fragment, is a first fragment without ACK (its segment length, needed for
/// the ack number, is unknown), or `buf` cannot hold the reply (it always can
/// when it holds the segment).
pub fn write_tcp_reset(buf: &mut [u8], info: &PacketInfo) -> Option<usize> {
    let Transport::Tcp {
        src_port,
        dst_port,
        seq,
        ack,
        flags,
    } = info.transport
    else {
        return None;
    };
    if flags.contains(TcpFlags::RST) || matches!(info.fragment, Fragment::Later { .. }) {
        return None;
    }
    let (reply_seq, reply_ack, reply_flags) = if flags.contains(TcpFlags::ACK) {
        (ack, 0, TcpFlags::RST)
    } else {
        if info.fragment != Fragment::None {
            return None;
        }
        let l4 = buf.get(info.l4_offset..info.packet_len)?;
        let data_off = usize::from(*l4.get(tcp::DATA_OFF)? >> 4) * 4;
        let seg_len = l4.len().checked_sub(data_off)?;
        let ctl =
            u32::from(flags.contains(TcpFlags::SYN)) + u32::from(flags.contains(TcpFlags::FIN));
        let ack = seq.wrapping_add(seg_len as u32).wrapping_add(ctl);
        (0, ack, TcpFlags::RST | TcpFlags::ACK)
    };
    let ack = reply_flags.contains(TcpFlags::ACK).then_some(reply_ack);
    write_tcp_rst(
        buf,
        SocketAddr::new(info.dst, dst_port),
        SocketAddr::new(info.src, src_port),
        reply_seq,
        ack,
    )
}

/// Builds in `buf` a bare TCP RST (no options, window 0, TTL 64, full
/// checksums) from `from` to `to` with sequence number `seq`, and with the
/// ACK flag and acknowledgment number when `ack` is given; returns its
/// length. None for mixed address families or a `buf` too small.
///
/// [`write_tcp_reset`] answers a received segment with it; the router also
/// uses it to reset the peers of flows whose backend went away.
pub fn write_tcp_rst(
    buf: &mut [u8],
    from: SocketAddr,
    to: SocketAddr,
    seq: u32,
    ack: Option<u32>,
) -> Option<usize> {
    let ip_len = match (from.ip(), to.ip()) {
        (IpAddr::V4(_), IpAddr::V4(_)) => ipv4::HEADER_LEN,
        (IpAddr::V6(_), IpAddr::V6(_)) => ipv6::HEADER_LEN,
        _ => return None,
    };
    let total = ip_len + tcp::HEADER_LEN;
    let reply = buf.get_mut(..total)?;
    write_ip_header(reply, from.ip(), to.ip(), proto::TCP, tcp::HEADER_LEN);
    let seg = &mut reply[ip_len..];
    seg.fill(0);
    set16(seg, tcp::SRC_PORT, from.port());
    set16(seg, tcp::DST_PORT, to.port());
    set32(seg, tcp::SEQ, seq);
    set32(seg, tcp::ACK, ack.unwrap_or(0));
    seg[tcp::DATA_OFF] = (tcp::HEADER_LEN as u8 / 4) << 4;
    seg[tcp::FLAGS] = if ack.is_some() {
        (TcpFlags::RST | TcpFlags::ACK).0
    } else {
        TcpFlags::RST.0
    };
    let pseudo = pseudo_header(from.ip(), to.ip(), proto::TCP, tcp::HEADER_LEN as u32);
    let check = finish(sum(seg, pseudo));
    set16(seg, tcp::CHECKSUM, check);
    Some(total)
}

/// True when `addr` cannot be the source of a packet that gets an ICMP error
/// (RFC 1122 3.2.2, RFC 4443 2.4 (e)): unspecified, loopback, multicast,
/// broadcast, "this network" or class E.
fn bad_error_target(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => {
            a.is_unspecified()
                || a.is_loopback()
                || a.is_multicast()
                || a.is_broadcast()
                || a.octets()[0] == 0
                || a.octets()[0] >= 240
        }
        IpAddr::V6(a) => a.is_unspecified() || a.is_loopback() || a.is_multicast(),
    }
}

/// True when a packet to `addr` gets no ICMP error of `kind`: multicast and
/// broadcast destinations (RFC 1122 3.2.2), except ICMPv6 packet too big,
/// which RFC 4443 2.4 (e.3) allows for multicast so PMTU discovery works.
fn silent_destination(addr: IpAddr, kind: IcmpErrorKind) -> bool {
    match addr {
        IpAddr::V4(a) => a.is_multicast() || a.is_broadcast(),
        IpAddr::V6(a) => a.is_multicast() && !matches!(kind, IcmpErrorKind::PacketTooBig { .. }),
    }
}

/// True when the packet is itself an ICMP error or an ICMPv6 redirect, which
/// must never cause an ICMP error (RFC 1122 3.2.2, RFC 4443 2.4 (e.1, e.2)).
fn is_icmp_error(buf: &[u8], info: &PacketInfo) -> bool {
    let ty = match info.transport {
        Transport::IcmpError { .. } => return true,
        Transport::IcmpEcho { .. } => return false,
        _ => buf.get(info.l4_offset).copied(),
    };
    match (info.version, info.protocol, ty) {
        (IpVersion::V4, proto::ICMP, Some(t)) => matches!(
            t,
            icmp::V4_DEST_UNREACHABLE
                | icmp::V4_SOURCE_QUENCH
                | icmp::V4_REDIRECT
                | icmp::V4_TIME_EXCEEDED
                | icmp::V4_PARAM_PROBLEM
        ),
        (IpVersion::V6, proto::ICMPV6, Some(t)) => t < 128 || t == icmp::V6_REDIRECT,
        _ => false,
    }
}

/// Builds in `buf` an ICMP (v4) or ICMPv6 error about the packet currently
/// in `buf[..info.packet_len]`, from `src` to the packet's source, and
/// returns the reply's length.
///
/// The original bytes move after the new headers, truncated so that the
/// reply is at most 576 bytes (v4, RFC 1812), 1280 bytes (v6, RFC 4443) and
/// `buf.len()`. TTL 64, full checksums.
///
/// None, leaving `buf` untouched, where RFC 1122 / RFC 4443 forbid an error
/// (the packet is an ICMP error, an ICMPv6 error or redirect, or a non-first
/// fragment; its source is unspecified, loopback, multicast, broadcast or
/// class E; its destination is multicast or broadcast, except for ICMPv6
/// packet too big), when `src` is of the other family, or when the reply
/// cannot quote the original IP header (extension headers included) and 8
/// bytes of its payload.
pub fn write_icmp_error(
    buf: &mut [u8],
    info: &PacketInfo,
    src: IpAddr,
    kind: IcmpErrorKind,
) -> Option<usize> {
    let v6 = match (info.version, src) {
        (IpVersion::V4, IpAddr::V4(_)) => false,
        (IpVersion::V6, IpAddr::V6(_)) => true,
        _ => return None,
    };
    if matches!(info.fragment, Fragment::Later { .. })
        || info.packet_len > buf.len()
        || is_icmp_error(buf, info)
        || bad_error_target(info.src)
        || silent_destination(info.dst, kind)
    {
        return None;
    }
    let ip_len = header_len(info.version);
    let hdr_len = ip_len + icmp::HEADER_LEN;
    let max = if v6 {
        ICMPV6_ERROR_MAX
    } else {
        ICMPV4_ERROR_MAX
    };
    let room = max.min(buf.len()).checked_sub(hdr_len)?;
    let quoted = info.packet_len.min(room);
    let must_quote = info.packet_len.min(info.l4_offset.saturating_add(8));
    if quoted < must_quote {
        return None;
    }
    let total = hdr_len + quoted;
    buf.copy_within(..quoted, hdr_len);

    let icmp_len = icmp::HEADER_LEN + quoted;
    let (icmp_proto, pseudo) = if v6 {
        let pseudo = pseudo_header(src, info.src, proto::ICMPV6, icmp_len as u32);
        (proto::ICMPV6, pseudo)
    } else {
        (proto::ICMP, 0)
    };
    write_ip_header(buf, src, info.src, icmp_proto, icmp_len);
    let (ty, code, rest) = kind.header(info.version);
    let msg = &mut buf[ip_len..total];
    msg[icmp::TYPE] = ty;
    msg[icmp::CODE] = code;
    set16(msg, icmp::CHECKSUM, 0);
    set32(msg, icmp::REST, rest);
    let check = finish(sum(msg, pseudo));
    set16(msg, icmp::CHECKSUM, check);
    Some(total)
}
