//! In-place NAT rewrites with incremental (RFC 1624) checksum updates.
//!
//! Every function writes only the fields that change and folds their
//! differences into each checksum that covers them, in one pass. Bounds are
//! checked before the first write, so a call either rewrites the packet
//! completely or leaves it untouched.

use std::net::IpAddr;

use super::checksum::apply;
use super::field::{get16, icmp, ipv4, ipv6, proto, replace16, replace_addr, set16, tcp, udp};
use super::parse::inner_echo_type;
use super::virtio::{apply_to_seed, L4Checksum};
use super::{Endpoints, Fragment, InnerPacket, IpVersion, PacketInfo, Transport};

/// True when `addr` belongs to `version`.
#[inline(always)]
fn family_is(version: IpVersion, addr: IpAddr) -> bool {
    matches!(
        (version, addr),
        (IpVersion::V4, IpAddr::V4(_)) | (IpVersion::V6, IpAddr::V6(_))
    )
}

/// Offsets of the source and destination address and the header length of
/// an IP header of `version`.
#[inline(always)]
fn ip_layout(version: IpVersion) -> (usize, usize, usize) {
    match version {
        IpVersion::V4 => (ipv4::SRC, ipv4::DST, ipv4::HEADER_LEN),
        IpVersion::V6 => (ipv6::SRC, ipv6::DST, ipv6::HEADER_LEN),
    }
}

/// What [`rewrite`] changes in the transport header.
#[derive(Clone, Copy)]
enum L4Edit {
    /// Nothing (ICMPv4 error / other protocol / non-first fragment).
    None,
    /// Ports at 0 and 2, checksum at `check` (UDP when `udp`).
    Ports { check: usize, udp: bool },
    /// Echo identifier, ICMP checksum at 2; pseudo-header for v6.
    Ident { ident: u16 },
    /// Only the ICMPv6 checksum, for the pseudo-header change.
    Icmpv6PseudoOnly,
}

impl L4Edit {
    /// Bytes of transport header the edit touches.
    #[inline(always)]
    fn needs(self) -> usize {
        match self {
            L4Edit::None => 0,
            L4Edit::Ports { check, .. } => check + 2,
            L4Edit::Ident { .. } => icmp::HEADER_LEN,
            L4Edit::Icmpv6PseudoOnly => icmp::MIN_LEN,
        }
    }
}

/// Rewrites addresses and ports of the parsed packet in place.
///
/// Updates the IPv4 header checksum and the TCP/UDP/ICMPv6 checksum
/// incrementally (RFC 1624), only for fields that change. A UDP checksum of
/// 0 (absent in IPv4; invalid in IPv6, left for the receiver to drop) stays
/// 0; a computed 0 is stored as 0xffff. ICMP echo: the identifier becomes
/// `new.src_port` for a request and `new.dst_port` for a reply (the other
/// port is ignored); ICMPv4 has no pseudo-header, ICMPv6 has. A non-first
/// fragment gets only its addresses changed (its transport checksum lives in
/// the first fragment). ICMP errors and other protocols get their addresses
/// changed, plus the ICMPv6 checksum's pseudo-header part for any ICMPv6
/// message; use [`rewrite_icmp_error`] to translate an ICMP error's inner
/// packet too. Other protocols with pseudo-header checksums (DCCP, UDP-Lite)
/// are not updated.
///
/// `info` must come from [`super::parse`] on this buffer. If `new` has an
/// address of the other family, or `buf` is shorter than `info` says, the
/// buffer is left untouched.
#[inline]
pub fn rewrite(buf: &mut [u8], info: &PacketInfo, new: &Endpoints) {
    rewrite_with(buf, info, new, L4Checksum::Full);
}

/// [`rewrite`] for a packet whose TCP/UDP checksum field may hold a
/// partial-checksum seed ([`L4Checksum::Seed`], from
/// [`super::virtio::check`]): then only the address change is added to the
/// field, as a plain sum, and the UDP "0 means absent" rule does not apply
/// (a seed is never "absent"). `Seed` is ignored for other protocols.
#[inline]
pub fn rewrite_with(buf: &mut [u8], info: &PacketInfo, new: &Endpoints, l4: L4Checksum) {
    if !family_is(info.version, new.src) || !family_is(info.version, new.dst) {
        return;
    }
    let Some(pkt) = buf.get_mut(..info.packet_len) else {
        return;
    };
    let v6 = info.version == IpVersion::V6;
    let first = !matches!(info.fragment, Fragment::Later { .. });
    let edit = match info.transport {
        _ if !first => L4Edit::None,
        Transport::Tcp { .. } => L4Edit::Ports {
            check: tcp::CHECKSUM,
            udp: false,
        },
        Transport::Udp { .. } => L4Edit::Ports {
            check: udp::CHECKSUM,
            udp: true,
        },
        Transport::IcmpEcho { request, .. } => L4Edit::Ident {
            ident: if request { new.src_port } else { new.dst_port },
        },
        _ if v6 && info.protocol == proto::ICMPV6 => L4Edit::Icmpv6PseudoOnly,
        _ => L4Edit::None,
    };
    let (src_off, dst_off, hdr_len) = ip_layout(info.version);
    if pkt.len() < hdr_len || pkt.len() < info.l4_offset.saturating_add(edit.needs()) {
        return;
    }

    let addr_diff = replace_addr(pkt, src_off, new.src) + replace_addr(pkt, dst_off, new.dst);
    if !v6 && addr_diff != 0 {
        let check = get16(pkt, ipv4::CHECKSUM);
        set16(pkt, ipv4::CHECKSUM, apply(check, addr_diff));
    }

    let l4_bytes = &mut pkt[info.l4_offset..];
    let _ = match edit {
        L4Edit::None => 0,
        L4Edit::Ports { check, .. } if l4 == L4Checksum::Seed => {
            replace16(l4_bytes, 0, new.src_port);
            replace16(l4_bytes, 2, new.dst_port);
            if addr_diff != 0 {
                let seed = get16(l4_bytes, check);
                set16(l4_bytes, check, apply_to_seed(seed, addr_diff));
            }
            0
        }
        L4Edit::Ports { check, udp } => {
            let diff = addr_diff
                + replace16(l4_bytes, 0, new.src_port)
                + replace16(l4_bytes, 2, new.dst_port);
            update_transport_check(l4_bytes, check, udp, diff)
        }
        L4Edit::Ident { ident } => {
            let pseudo = if v6 { addr_diff } else { 0 };
            let diff = pseudo + replace16(l4_bytes, icmp::IDENT, ident);
            update_transport_check(l4_bytes, icmp::CHECKSUM, false, diff)
        }
        L4Edit::Icmpv6PseudoOnly => {
            update_transport_check(l4_bytes, icmp::CHECKSUM, false, addr_diff)
        }
    };
}

/// Applies `diff` to the checksum at `off` of `l4`, honouring UDP's "0 means
/// absent" rule when `udp`. Returns the difference of the checksum field
/// itself (for a checksum that covers this one, as in ICMP errors).
#[inline(always)]
fn update_transport_check(l4: &mut [u8], off: usize, udp: bool, diff: u32) -> u32 {
    if diff == 0 {
        return 0;
    }
    let old = get16(l4, off);
    if udp && old == 0 {
        return 0;
    }
    let mut new = apply(old, diff);
    if udp && new == 0 {
        new = 0xffff;
    }
    replace16(l4, off, new)
}

/// Decrements the TTL (IPv4, with an incremental header checksum update) or
/// the hop limit (IPv6) of the parsed packet.
///
/// Returns false, leaving the buffer untouched, when the TTL is <= 1: the
/// packet must not be forwarded (answer with
/// [`super::IcmpErrorKind::TimeExceeded`]). Also false when `buf` is shorter
/// than the IP header.
#[inline]
#[must_use]
pub fn decrement_ttl(buf: &mut [u8], info: &PacketInfo) -> bool {
    match info.version {
        IpVersion::V4 => {
            if buf.len() < ipv4::HEADER_LEN || buf[ipv4::VER_IHL] >> 4 != 4 {
                return false;
            }
            let ttl = buf[ipv4::TTL];
            if ttl <= 1 {
                return false;
            }
            // TTL shares a 16-bit word with the protocol; only its high byte changes.
            let old = get16(buf, ipv4::TTL);
            let diff = replace16(buf, ipv4::TTL, old - 0x0100);
            let check = get16(buf, ipv4::CHECKSUM);
            set16(buf, ipv4::CHECKSUM, apply(check, diff));
            true
        }
        IpVersion::V6 => {
            if buf.len() < ipv6::HEADER_LEN || buf[0] >> 4 != 6 {
                return false;
            }
            let hop_limit = buf[ipv6::HOP_LIMIT];
            if hop_limit <= 1 {
                return false;
            }
            buf[ipv6::HOP_LIMIT] = hop_limit - 1;
            true
        }
    }
}

/// Translates an ICMP error in place: the outer source and destination
/// addresses, and the embedded packet's addresses and ports (`inner_new`
/// holds the embedded packet's new source/destination, i.e. the translation
/// of the original flow in the direction it was sent).
///
/// Updates, all incrementally: the outer IPv4 header checksum; the inner
/// IPv4 header checksum; the inner UDP checksum (bytes 6..8 of the inner
/// transport header, always present; left at 0 if 0); the inner TCP checksum
/// if bytes 16..18 of the inner TCP header are present; the inner ICMP echo
/// identifier (`inner_new.src_port` for a request, `dst_port` for a reply,
/// as in [`rewrite`]) and checksum; and the outer ICMP/ICMPv6 checksum, which
/// covers all of the inner changes and, for ICMPv6, the outer pseudo-header.
///
/// `info` and `inner` must come from [`super::parse`] and
/// [`super::parse_inner`] on this buffer. If any address is of the wrong
/// family or the offsets do not fit the buffer, it is left untouched.
pub fn rewrite_icmp_error(
    buf: &mut [u8],
    info: &PacketInfo,
    inner: &InnerPacket,
    outer_src: IpAddr,
    outer_dst: IpAddr,
    inner_new: &Endpoints,
) {
    let version = info.version;
    let families_ok = inner.version == version
        && family_is(version, outer_src)
        && family_is(version, outer_dst)
        && family_is(version, inner_new.src)
        && family_is(version, inner_new.dst);
    let Transport::IcmpError { inner_offset, .. } = info.transport else {
        return;
    };
    if !families_ok || inner.offset != inner_offset {
        return;
    }
    let Some(pkt) = buf.get_mut(..info.packet_len) else {
        return;
    };
    let v6 = version == IpVersion::V6;
    let (src_off, dst_off, hdr_len) = ip_layout(version);
    let icmp_proto = if v6 { proto::ICMPV6 } else { proto::ICMP };

    // What the inner transport header holds, and how much of it must be present.
    #[derive(Clone, Copy)]
    enum Inner {
        Ports,
        Echo { request: bool },
        Nothing,
    }
    let inner_l4 = inner.l4_offset;
    let has8 = pkt.len() >= inner_l4.saturating_add(8);
    let kind = if inner.protocol == proto::TCP || inner.protocol == proto::UDP {
        Inner::Ports
    } else if inner.protocol == icmp_proto && has8 {
        match inner_echo_type(version, pkt[inner_l4]) {
            Some(request) => Inner::Echo { request },
            None => Inner::Nothing,
        }
    } else {
        Inner::Nothing
    };
    let needs_l4 = !matches!(kind, Inner::Nothing);
    if pkt.len() < hdr_len
        || pkt.len() < info.l4_offset.saturating_add(icmp::HEADER_LEN)
        || inner.offset < info.l4_offset.saturating_add(icmp::HEADER_LEN)
        || pkt.len() < inner.offset.saturating_add(hdr_len)
        || inner_l4 < inner.offset.saturating_add(hdr_len)
        || (needs_l4 && !has8)
    {
        return;
    }

    // Outer header.
    let outer_diff = replace_addr(pkt, src_off, outer_src) + replace_addr(pkt, dst_off, outer_dst);
    if !v6 && outer_diff != 0 {
        let check = get16(pkt, ipv4::CHECKSUM);
        set16(pkt, ipv4::CHECKSUM, apply(check, outer_diff));
    }

    // Inner IP header; `icmp_diff` collects every byte change the ICMP checksum covers.
    let inner_hdr = &mut pkt[inner.offset..];
    let inner_addr_diff = replace_addr(inner_hdr, src_off, inner_new.src)
        + replace_addr(inner_hdr, dst_off, inner_new.dst);
    let mut icmp_diff = inner_addr_diff;
    if !v6 && inner_addr_diff != 0 {
        let check = get16(inner_hdr, ipv4::CHECKSUM);
        icmp_diff += replace16(inner_hdr, ipv4::CHECKSUM, apply(check, inner_addr_diff));
    }

    // Inner transport header.
    let l4 = &mut pkt[inner_l4..];
    match kind {
        Inner::Ports => {
            let port_diff =
                replace16(l4, 0, inner_new.src_port) + replace16(l4, 2, inner_new.dst_port);
            icmp_diff += port_diff;
            let diff = inner_addr_diff + port_diff;
            if inner.protocol == proto::UDP {
                icmp_diff += update_transport_check(l4, udp::CHECKSUM, true, diff);
            } else if l4.len() >= tcp::CHECKSUM + 2 {
                icmp_diff += update_transport_check(l4, tcp::CHECKSUM, false, diff);
            }
        }
        Inner::Echo { request } => {
            let ident = if request {
                inner_new.src_port
            } else {
                inner_new.dst_port
            };
            let ident_diff = replace16(l4, icmp::IDENT, ident);
            icmp_diff += ident_diff;
            let pseudo = if v6 { inner_addr_diff } else { 0 };
            icmp_diff += update_transport_check(l4, icmp::CHECKSUM, false, pseudo + ident_diff);
        }
        Inner::Nothing => {}
    }

    // Outer ICMP checksum.
    if v6 {
        icmp_diff += outer_diff;
    }
    let icmp_hdr = &mut pkt[info.l4_offset..];
    update_transport_check(icmp_hdr, icmp::CHECKSUM, false, icmp_diff);
}
