//! Parsing: one bounds-checked pass from the first byte to the transport header.

use std::net::IpAddr;

use super::checksum;
use super::field::{self, get16, get32, get_v4, get_v6, icmp, ipv4, ipv6, proto, tcp, udp};
use super::{Fragment, InnerPacket, IpVersion, PacketInfo, TcpFlags, Transport, WireError};

/// Parses an IPv4 or IPv6 packet starting at `packet[0]`.
///
/// IPv4: version 4, IHL >= 5 (options skipped), total length >= IHL * 4 and
/// within the buffer, header checksum verified. IPv6: payload length within
/// the buffer; hop-by-hop (first only), routing, destination options and
/// fragment headers are walked (at most 8); other next headers, including
/// 59 (no next header), AH and ESP, end the walk as the upper-layer protocol.
/// A non-first fragment has [`Transport::Other`]; a first fragment must hold
/// the whole transport header. Transport checksums are not verified.
///
/// Never panics; allocation-free.
#[inline]
pub fn parse(packet: &[u8]) -> Result<PacketInfo, WireError> {
    let Some(&first) = packet.first() else {
        return Err(WireError::Truncated);
    };
    match first >> 4 {
        4 => parse_v4(packet),
        6 => parse_v6(packet),
        _ => Err(WireError::BadVersion),
    }
}

#[inline(always)]
fn parse_v4(buf: &[u8]) -> Result<PacketInfo, WireError> {
    if buf.len() < ipv4::HEADER_LEN {
        return Err(WireError::Truncated);
    }
    let ihl = usize::from(buf[ipv4::VER_IHL] & 0x0f) * 4;
    if ihl < ipv4::HEADER_LEN {
        return Err(WireError::BadHeaderLength);
    }
    let total = usize::from(get16(buf, ipv4::TOTAL_LEN));
    if total < ihl {
        return Err(WireError::BadTotalLength);
    }
    let Some(pkt) = buf.get(..total) else {
        return Err(WireError::Truncated);
    };
    if header_sum(&pkt[..ihl]) != 0xffff {
        return Err(WireError::BadHeaderChecksum);
    }
    let fragment = v4_fragment(pkt);
    let protocol = pkt[ipv4::PROTOCOL];
    let transport = match fragment {
        Fragment::Later { .. } => Transport::Other,
        _ => parse_transport(IpVersion::V4, protocol, &pkt[ihl..], ihl, fragment)?,
    };
    Ok(PacketInfo {
        version: IpVersion::V4,
        src: IpAddr::V4(get_v4(pkt, ipv4::SRC)),
        dst: IpAddr::V4(get_v4(pkt, ipv4::DST)),
        ttl: pkt[ipv4::TTL],
        protocol,
        l4_offset: ihl,
        packet_len: total,
        fragment,
        transport,
    })
}

/// Folded ones-complement sum of an IPv4 header; 0xffff when its checksum is right.
#[inline(always)]
fn header_sum(hdr: &[u8]) -> u16 {
    // The option-less header is the common case: five words, no loop.
    if let Ok(h) = <&[u8; 20]>::try_from(hdr) {
        let w = |i: usize| u64::from(u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]));
        let s = w(0) + w(4) + w(8) + w(12) + w(16);
        return checksum::fold(((s & 0xffff_ffff) + (s >> 32)) as u32);
    }
    checksum::fold(checksum::sum(hdr, 0))
}

/// Fragment state of an IPv4 header (at least 20 bytes).
#[inline(always)]
fn v4_fragment(hdr: &[u8]) -> Fragment {
    let flags = get16(hdr, ipv4::FLAGS_FRAG);
    let id = u32::from(get16(hdr, ipv4::IDENT));
    if flags & ipv4::FRAG_OFFSET_MASK != 0 {
        Fragment::Later { id }
    } else if flags & ipv4::FLAG_MF != 0 {
        Fragment::First { id }
    } else {
        Fragment::None
    }
}

#[inline]
fn parse_v6(buf: &[u8]) -> Result<PacketInfo, WireError> {
    if buf.len() < ipv6::HEADER_LEN {
        return Err(WireError::Truncated);
    }
    let total = ipv6::HEADER_LEN + usize::from(get16(buf, ipv6::PAYLOAD_LEN));
    let Some(pkt) = buf.get(..total) else {
        return Err(WireError::Truncated);
    };
    let chain = walk_v6_ext(pkt, pkt[ipv6::NEXT_HEADER])?;
    let transport = match chain.fragment {
        Fragment::Later { .. } => Transport::Other,
        _ => parse_transport(
            IpVersion::V6,
            chain.protocol,
            &pkt[chain.l4_offset..],
            chain.l4_offset,
            chain.fragment,
        )?,
    };
    Ok(PacketInfo {
        version: IpVersion::V6,
        src: IpAddr::V6(get_v6(pkt, ipv6::SRC)),
        dst: IpAddr::V6(get_v6(pkt, ipv6::DST)),
        ttl: pkt[ipv6::HOP_LIMIT],
        protocol: chain.protocol,
        l4_offset: chain.l4_offset,
        packet_len: total,
        fragment: chain.fragment,
        transport,
    })
}

/// End of an IPv6 extension header chain.
struct V6Chain {
    protocol: u8,
    l4_offset: usize,
    fragment: Fragment,
}

/// Walks the extension headers of the IPv6 packet `pkt` (fixed header
/// included, at least 40 bytes), starting with next header `next`.
#[inline]
fn walk_v6_ext(pkt: &[u8], mut next: u8) -> Result<V6Chain, WireError> {
    let mut off = ipv6::HEADER_LEN;
    let mut fragment = Fragment::None;
    let mut seen_fragment = false;
    for i in 0..=ipv6::MAX_EXT_HEADERS {
        match next {
            proto::HOP_BY_HOP | proto::ROUTING | proto::DEST_OPTS => {
                // RFC 8200 4.1: hop-by-hop only right after the fixed header.
                if next == proto::HOP_BY_HOP && i != 0 {
                    return Err(WireError::BadExtensionHeader);
                }
                let Some(hdr) = pkt.get(off..off + 2) else {
                    return Err(WireError::BadExtensionHeader);
                };
                let len = (usize::from(hdr[1]) + 1) * 8;
                if off + len > pkt.len() {
                    return Err(WireError::BadExtensionHeader);
                }
                next = hdr[0];
                off += len;
            }
            proto::FRAGMENT => {
                if seen_fragment {
                    return Err(WireError::BadExtensionHeader);
                }
                seen_fragment = true;
                let Some(hdr) = pkt.get(off..off + ipv6::FRAG_HEADER_LEN) else {
                    return Err(WireError::BadExtensionHeader);
                };
                next = hdr[0];
                off += ipv6::FRAG_HEADER_LEN;
                let word = get16(hdr, 2);
                let id = get32(hdr, 4);
                if word & ipv6::FRAG_OFFSET_MASK != 0 {
                    // What follows is fragment data, not headers.
                    return Ok(V6Chain {
                        protocol: next,
                        l4_offset: off,
                        fragment: Fragment::Later { id },
                    });
                }
                if word & ipv6::FRAG_M != 0 {
                    fragment = Fragment::First { id };
                }
            }
            _ => {
                return Ok(V6Chain {
                    protocol: next,
                    l4_offset: off,
                    fragment,
                })
            }
        }
    }
    Err(WireError::BadExtensionHeader)
}

/// Parses the transport header at `l4` (which ends at the packet's end).
#[inline(always)]
fn parse_transport(
    version: IpVersion,
    protocol: u8,
    l4: &[u8],
    l4_offset: usize,
    fragment: Fragment,
) -> Result<Transport, WireError> {
    match (protocol, version) {
        (proto::TCP, _) => {
            if l4.len() < tcp::HEADER_LEN {
                return Err(WireError::BadTransportHeader);
            }
            let doff = usize::from(l4[tcp::DATA_OFF] >> 4) * 4;
            if doff < tcp::HEADER_LEN || doff > l4.len() {
                return Err(WireError::BadTransportHeader);
            }
            Ok(Transport::Tcp {
                src_port: get16(l4, tcp::SRC_PORT),
                dst_port: get16(l4, tcp::DST_PORT),
                seq: get32(l4, tcp::SEQ),
                ack: get32(l4, tcp::ACK),
                flags: TcpFlags(l4[tcp::FLAGS]),
            })
        }
        (proto::UDP, _) => {
            if l4.len() < udp::HEADER_LEN {
                return Err(WireError::BadTransportHeader);
            }
            let len = usize::from(get16(l4, udp::LENGTH));
            // A first fragment's UDP length covers the whole datagram.
            let too_long = len > l4.len() && fragment == Fragment::None;
            if len < udp::HEADER_LEN || too_long {
                return Err(WireError::BadTransportHeader);
            }
            Ok(Transport::Udp {
                src_port: get16(l4, udp::SRC_PORT),
                dst_port: get16(l4, udp::DST_PORT),
            })
        }
        (proto::ICMP, IpVersion::V4) => {
            if l4.len() < icmp::HEADER_LEN {
                return Err(WireError::BadTransportHeader);
            }
            Ok(match l4[icmp::TYPE] {
                icmp::V4_ECHO_REQUEST | icmp::V4_ECHO_REPLY => Transport::IcmpEcho {
                    request: l4[icmp::TYPE] == icmp::V4_ECHO_REQUEST,
                    ident: get16(l4, icmp::IDENT),
                },
                icmp::V4_DEST_UNREACHABLE | icmp::V4_TIME_EXCEEDED | icmp::V4_PARAM_PROBLEM => {
                    Transport::IcmpError {
                        icmp_type: l4[icmp::TYPE],
                        code: l4[icmp::CODE],
                        inner_offset: l4_offset + icmp::HEADER_LEN,
                    }
                }
                _ => Transport::Other,
            })
        }
        (proto::ICMPV6, IpVersion::V6) => {
            if l4.len() < icmp::MIN_LEN {
                return Err(WireError::BadTransportHeader);
            }
            let ty = l4[icmp::TYPE];
            let known = matches!(ty, 1..=4 | icmp::V6_ECHO_REQUEST | icmp::V6_ECHO_REPLY);
            if known && l4.len() < icmp::HEADER_LEN {
                return Err(WireError::BadTransportHeader);
            }
            Ok(match ty {
                icmp::V6_ECHO_REQUEST | icmp::V6_ECHO_REPLY => Transport::IcmpEcho {
                    request: ty == icmp::V6_ECHO_REQUEST,
                    ident: get16(l4, icmp::IDENT),
                },
                1..=4 => Transport::IcmpError {
                    icmp_type: ty,
                    code: l4[icmp::CODE],
                    inner_offset: l4_offset + icmp::HEADER_LEN,
                },
                _ => Transport::Other,
            })
        }
        _ => Ok(Transport::Other),
    }
}

/// Parses the packet embedded in the ICMP error `info` describes.
///
/// The inner packet must be of the outer packet's IP version, hold its whole
/// IP header (IPv4 options and IPv6 extension headers included) and, for TCP,
/// UDP and ICMP/ICMPv6, the first 8 bytes of its transport header. Its total
/// length and header checksum are not checked: an ICMP error quotes a
/// truncated packet, and the quoting router may have decremented the TTL.
/// For an inner ICMP echo, `src_port` and `dst_port` both hold the
/// identifier; for an inner protocol without ports (or another ICMP type)
/// both are 0 and [`super::rewrite_icmp_error`] translates addresses only.
///
/// Never panics, even if `info` was not produced by [`parse`] on `buf`.
pub fn parse_inner(buf: &[u8], info: &PacketInfo) -> Result<InnerPacket, WireError> {
    let Transport::IcmpError { inner_offset, .. } = info.transport else {
        return Err(WireError::NotIcmpError);
    };
    let Some(inner) = buf.get(inner_offset..info.packet_len) else {
        return Err(WireError::Truncated);
    };
    let Some(&first) = inner.first() else {
        return Err(WireError::Truncated);
    };
    let expected = match info.version {
        IpVersion::V4 => 4,
        IpVersion::V6 => 6,
    };
    if first >> 4 != expected {
        return Err(WireError::BadVersion);
    }
    let (src, dst, protocol, l4_rel) = match info.version {
        IpVersion::V4 => {
            if inner.len() < ipv4::HEADER_LEN {
                return Err(WireError::Truncated);
            }
            let ihl = usize::from(first & 0x0f) * 4;
            if ihl < ipv4::HEADER_LEN {
                return Err(WireError::BadHeaderLength);
            }
            if ihl > inner.len() {
                return Err(WireError::Truncated);
            }
            if let Fragment::Later { .. } = v4_fragment(inner) {
                return Err(WireError::InnerNonFirstFragment);
            }
            (
                IpAddr::V4(get_v4(inner, ipv4::SRC)),
                IpAddr::V4(get_v4(inner, ipv4::DST)),
                inner[ipv4::PROTOCOL],
                ihl,
            )
        }
        IpVersion::V6 => {
            if inner.len() < ipv6::HEADER_LEN {
                return Err(WireError::Truncated);
            }
            let chain = walk_v6_ext(inner, inner[ipv6::NEXT_HEADER])?;
            if let Fragment::Later { .. } = chain.fragment {
                return Err(WireError::InnerNonFirstFragment);
            }
            (
                IpAddr::V6(get_v6(inner, ipv6::SRC)),
                IpAddr::V6(get_v6(inner, ipv6::DST)),
                chain.protocol,
                chain.l4_offset,
            )
        }
    };
    let l4 = &inner[l4_rel..];
    let icmp_proto = match info.version {
        IpVersion::V4 => proto::ICMP,
        IpVersion::V6 => proto::ICMPV6,
    };
    let (src_port, dst_port) = if protocol == proto::TCP || protocol == proto::UDP {
        if l4.len() < 8 {
            return Err(WireError::Truncated);
        }
        (get16(l4, 0), get16(l4, 2))
    } else if protocol == icmp_proto {
        if l4.len() < icmp::HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if inner_echo_type(info.version, l4[icmp::TYPE]).is_some() {
            let ident = get16(l4, icmp::IDENT);
            (ident, ident)
        } else {
            (0, 0)
        }
    } else {
        (0, 0)
    };
    Ok(InnerPacket {
        offset: inner_offset,
        version: info.version,
        src,
        dst,
        protocol,
        l4_offset: inner_offset + l4_rel,
        src_port,
        dst_port,
        available: inner.len(),
    })
}

/// `Some(is_request)` when `ty` is an echo request/reply type of `version`.
#[inline]
pub(super) fn inner_echo_type(version: IpVersion, ty: u8) -> Option<bool> {
    match (version, ty) {
        (IpVersion::V4, field::icmp::V4_ECHO_REQUEST) => Some(true),
        (IpVersion::V4, field::icmp::V4_ECHO_REPLY) => Some(false),
        (IpVersion::V6, field::icmp::V6_ECHO_REQUEST) => Some(true),
        (IpVersion::V6, field::icmp::V6_ECHO_REPLY) => Some(false),
        _ => None,
    }
}
