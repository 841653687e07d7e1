//! Wire layer of the fast path: IPv4/IPv6 with TCP, UDP and ICMP/ICMPv6.
//!
//! This module owns everything that touches packet bytes directly:
//!
//! | item | what it does |
//! |---|---|
//! | [`checksum`] | full internet checksum, pseudo-header sums, RFC 1624 incremental updates |
//! | [`parse`] | one validating pass over a packet, producing a [`PacketInfo`] |
//! | [`parse_inner`] | the packet embedded in an ICMP error ([`InnerPacket`]) |
//! | [`rewrite`], [`decrement_ttl`], [`rewrite_icmp_error`] | in-place NAT rewrites with incremental checksums |
//! | [`write_tcp_reset`], [`write_icmp_error`] | replies a router generates, built in the caller's buffer |
//! | [`virtio`] | the virtio-net header of offloading TUN devices; partial-checksum rules |
//! | [`gso`] | software segmentation of super-packets |
//!
//! Contract: [`parse`] never panics, and once it returned `Ok(info)` for a
//! buffer, no other function here panics on that buffer with that `info`
//! (each also re-checks its bounds, so a stale or forged `info` is ignored
//! rather than trusted). Nothing here allocates, does IO or reads a clock.
//!
//! Why hand-written offsets rather than smoltcp's `Packet` views: the router
//! needs exactly one bounds-checked pass over the headers that yields all the
//! fields conntrack and NAT need, and rewrites that touch only the bytes that
//! change. smoltcp's views check and re-read per layer and its `Repr`s
//! re-emit whole headers (with full checksums), which is the right tool for a
//! stack but several times the work per packet for a NAT. smoltcp stays the
//! reference: the tests build fixtures with its `Repr`s and verify every
//! checksum this module produces with its views.
//!
//! Transport checksums are never verified here: like a kernel router, the fast
//! path forwards what it does not terminate and updates checksums
//! incrementally, so a corrupt segment stays corrupt (and is dropped by its
//! receiver) rather than becoming valid.

pub mod checksum;
mod field;
pub mod gso;
mod parse;
mod reply;
mod rewrite;
#[cfg(test)]
mod tests;
pub mod virtio;

use std::net::IpAddr;

pub use parse::{parse, parse_inner};
pub use reply::{write_icmp_error, write_tcp_reset, write_tcp_rst, IcmpErrorKind};
pub use rewrite::{decrement_ttl, rewrite, rewrite_icmp_error, rewrite_with};

/// IP version of a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IpVersion {
    /// IPv4 (RFC 791).
    V4,
    /// IPv6 (RFC 8200).
    V6,
}

/// Fragmentation state of a packet.
///
/// An IPv4 packet with offset 0 and MF clear, and an IPv6 "atomic fragment"
/// (fragment header with offset 0 and M clear, RFC 6946), are [`Fragment::None`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fragment {
    /// Not fragmented.
    None,
    /// First fragment (offset 0, more fragments follow): carries the transport header.
    First {
        /// IPv4 identification (widened) or IPv6 fragment header identification.
        id: u32,
    },
    /// Any later fragment: no transport header, only payload bytes.
    Later {
        /// IPv4 identification (widened) or IPv6 fragment header identification.
        id: u32,
    },
}

/// The TCP flags byte (byte 13 of the TCP header, CWR and ECE included).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    /// No more data from sender.
    pub const FIN: TcpFlags = TcpFlags(0x01);
    /// Synchronize sequence numbers.
    pub const SYN: TcpFlags = TcpFlags(0x02);
    /// Reset the connection.
    pub const RST: TcpFlags = TcpFlags(0x04);
    /// Push function.
    pub const PSH: TcpFlags = TcpFlags(0x08);
    /// Acknowledgment field is significant.
    pub const ACK: TcpFlags = TcpFlags(0x10);

    /// True when every flag set in `other` is also set in `self`.
    #[inline]
    pub const fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for TcpFlags {
    type Output = TcpFlags;
    #[inline]
    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | rhs.0)
    }
}

/// The transport-layer view of a parsed packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// A TCP segment (data offset >= 5, whole header present).
    Tcp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
        /// Sequence number.
        seq: u32,
        /// Acknowledgment number (meaningful only with [`TcpFlags::ACK`]).
        ack: u32,
        /// Flags byte.
        flags: TcpFlags,
    },
    /// A UDP datagram (8-byte header present, length field sane).
    Udp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
    },
    /// ICMP/ICMPv6 echo request or reply; the identifier plays the port's role in NAT.
    IcmpEcho {
        /// True for a request (ICMP 8, ICMPv6 128), false for a reply (ICMP 0, ICMPv6 129).
        request: bool,
        /// Echo identifier.
        ident: u16,
    },
    /// ICMP/ICMPv6 error (v4: destination unreachable 3, time exceeded 11,
    /// parameter problem 12; v6: 1, 2, 3, 4) carrying the offending packet's
    /// header starting at `inner_offset`; see [`parse_inner`].
    IcmpError {
        /// ICMP type.
        icmp_type: u8,
        /// ICMP code.
        code: u8,
        /// Offset in the buffer of the embedded IP header (ICMP header + 8).
        inner_offset: usize,
    },
    /// Other protocol, other ICMP type, or a non-first fragment (no transport header).
    Other,
}

/// Everything the fast path needs from one packet, found in one pass by [`parse`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PacketInfo {
    /// IP version.
    pub version: IpVersion,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// TTL (v4) or hop limit (v6).
    pub ttl: u8,
    /// Upper-layer protocol, after IPv6 extension headers (6, 17, 1, 58, ...).
    /// 59 (no next header) for an IPv6 packet whose header chain ends there.
    pub protocol: u8,
    /// Offset of the transport header (or of the fragment payload).
    pub l4_offset: usize,
    /// IP total length (v4) or 40 + payload length (v6); bytes in the buffer
    /// beyond it are ignored by every function here.
    pub packet_len: usize,
    /// Fragmentation state.
    pub fragment: Fragment,
    /// Transport header view.
    pub transport: Transport,
}

/// Why a packet (or the packet inside an ICMP error) was rejected.
///
/// A router drops such packets; none of them can be translated safely.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum WireError {
    /// The buffer ends before the IP header (or extension header) does, or
    /// before the length the IP header announces.
    #[error("packet truncated: buffer shorter than its headers or announced length")]
    Truncated,
    /// The version nibble is neither 4 nor 6 (or, for an ICMP error's inner
    /// packet, differs from the outer packet's version).
    #[error("bad IP version")]
    BadVersion,
    /// IPv4 IHL below 5.
    #[error("bad IPv4 header length")]
    BadHeaderLength,
    /// IPv4 total length smaller than the header.
    #[error("bad IP total length")]
    BadTotalLength,
    /// IPv4 header checksum does not verify.
    #[error("bad IPv4 header checksum")]
    BadHeaderChecksum,
    /// The transport header does not fit in the packet, or is malformed
    /// (TCP data offset < 5 or beyond the packet, UDP length out of range,
    /// ICMP header shorter than its type needs).
    #[error("bad or truncated transport header")]
    BadTransportHeader,
    /// IPv6 extension header chain malformed: hop-by-hop not first, two
    /// fragment headers, a header beyond the packet, or too many headers.
    #[error("bad IPv6 extension header chain")]
    BadExtensionHeader,
    /// [`parse_inner`] was called for a packet that is not an ICMP error.
    #[error("not an ICMP error")]
    NotIcmpError,
    /// The packet inside an ICMP error is a non-first fragment: it has no
    /// ports, so it cannot be matched to a flow.
    #[error("ICMP error about a non-first fragment")]
    InnerNonFirstFragment,
}

/// New addresses and ports for a NAT rewrite.
///
/// Both addresses must be of the packet's family; [`rewrite`] and
/// [`rewrite_icmp_error`] leave the buffer untouched otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Endpoints {
    /// New source address.
    pub src: IpAddr,
    /// New source port (echo identifier of a request).
    pub src_port: u16,
    /// New destination address.
    pub dst: IpAddr,
    /// New destination port (echo identifier of a reply).
    pub dst_port: u16,
}

/// The packet embedded in an ICMP error: at least its IP header and the first
/// 8 bytes of its transport header (for TCP, UDP and ICMP echo).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InnerPacket {
    /// Offset of the inner IP header in the buffer.
    pub offset: usize,
    /// Inner IP version (always the outer one).
    pub version: IpVersion,
    /// Inner source address (the address the erroring packet was sent from).
    pub src: IpAddr,
    /// Inner destination address.
    pub dst: IpAddr,
    /// Inner upper-layer protocol (after IPv6 extension headers).
    pub protocol: u8,
    /// Offset of the inner transport header in the buffer.
    pub l4_offset: usize,
    /// Inner source port; for an inner ICMP echo, its identifier; 0 for
    /// protocols without ports.
    pub src_port: u16,
    /// Inner destination port; for an inner ICMP echo, its identifier (the
    /// same as `src_port`); 0 for protocols without ports.
    pub dst_port: u16,
    /// Bytes of the inner packet present in the buffer (up to the outer packet's end).
    pub available: usize,
}
