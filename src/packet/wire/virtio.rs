//! The virtio-net header (`struct virtio_net_hdr`, virtio 1.x section 5.1.6)
//! that precedes every packet on a TUN device opened with `IFF_VNET_HDR`.
//!
//! It carries the offload state of one packet between the kernel and the
//! fast path:
//!
//! * `NEEDS_CSUM` (the kernel's `CHECKSUM_PARTIAL`): the transport checksum
//!   is not computed yet. The field at `csum_start + csum_offset` holds the
//!   *seed*, the folded (not complemented) sum of the pseudo-header; whoever
//!   finishes the packet adds the bytes from `csum_start` to the end and
//!   stores the complement. NAT of such a packet changes the seed only for
//!   what the pseudo-header covers (addresses), as a plain sum: see
//!   [`L4Checksum::Seed`].
//! * `gso_type` / `gso_size`: a super-packet (TSO, USO) of up to 64 KiB that
//!   the receiver, or [`super::gso`], cuts into `gso_size`-byte segments.
//!
//! Layout (10 bytes, little-endian: a TUN device speaks the legacy virtio
//! byte order, which is the host's, and podnet runs on little-endian hosts
//! only for offloads; see `sys::tun`):
//!
//! | offset | field |
//! |---|---|
//! | 0 | flags |
//! | 1 | gso_type |
//! | 2 | hdr_len (a hint: bytes of headers, possibly more) |
//! | 4 | gso_size (payload bytes per segment) |
//! | 6 | csum_start (offset from the IP header) |
//! | 8 | csum_offset (offset of the checksum field from csum_start) |
//!
//! [`VirtioNetHdr`] is the zero-copy view over those bytes, [`VnetHdr`] the
//! parsed value the packet path carries beside a packet, and [`check`]
//! decides how a NAT must treat the packet's transport checksum.

use super::checksum::{finish, fold, sum};
use super::field::{proto, tcp, udp};
use super::{Fragment, IpVersion, PacketInfo, Transport};

/// Length of `struct virtio_net_hdr` on a TUN device (the default
/// `TUNSETVNETHDRSZ`).
pub const HEADER_LEN: usize = 10;

mod field {
    pub const FLAGS: usize = 0;
    pub const GSO_TYPE: usize = 1;
    pub const HDR_LEN: usize = 2;
    pub const GSO_SIZE: usize = 4;
    pub const CSUM_START: usize = 6;
    pub const CSUM_OFFSET: usize = 8;
}

/// `flags` bits.
pub mod flags {
    /// The transport checksum is partial (`CHECKSUM_PARTIAL`).
    pub const NEEDS_CSUM: u8 = 1;
    /// The checksum was verified already (`CHECKSUM_UNNECESSARY`).
    pub const DATA_VALID: u8 = 2;
    /// Receive-side coalescing information is present (never on TUN).
    pub const RSC_INFO: u8 = 4;
}

/// `gso_type` values.
pub mod gso {
    /// Not a super-packet.
    pub const NONE: u8 = 0;
    /// TCP over IPv4 (TSO4).
    pub const TCPV4: u8 = 1;
    /// Legacy UDP fragmentation offload (UFO); never enabled by podnet.
    pub const UDP: u8 = 3;
    /// TCP over IPv6 (TSO6).
    pub const TCPV6: u8 = 4;
    /// UDP segmentation (USO4/USO6): each segment a whole datagram.
    pub const UDP_L4: u8 = 5;
    /// Set beside TCPV4/TCPV6: the stream uses ECN (CWR only on the first segment).
    pub const ECN: u8 = 0x80;
}

/// Zero-copy view of a virtio-net header. After [`VirtioNetHdr::new_checked`]
/// returned `Ok`, no accessor panics.
#[derive(Debug, Clone, Copy)]
pub struct VirtioNetHdr<T: AsRef<[u8]>> {
    buffer: T,
}

/// The buffer is shorter than [`HEADER_LEN`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("virtio-net header truncated: fewer than 10 bytes")]
pub struct Truncated;

impl<T: AsRef<[u8]>> VirtioNetHdr<T> {
    /// A view without a length check (accessors panic on a short buffer).
    pub const fn new_unchecked(buffer: T) -> VirtioNetHdr<T> {
        VirtioNetHdr { buffer }
    }

    /// A view of `buffer`, which must hold at least [`HEADER_LEN`] bytes.
    pub fn new_checked(buffer: T) -> Result<VirtioNetHdr<T>, Truncated> {
        let h = VirtioNetHdr::new_unchecked(buffer);
        h.check_len()?;
        Ok(h)
    }

    /// Ok when every accessor fits the buffer.
    pub fn check_len(&self) -> Result<(), Truncated> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Truncated)
        } else {
            Ok(())
        }
    }

    fn le16(&self, off: usize) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_le_bytes([b[off], b[off + 1]])
    }

    /// The `flags` byte.
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// The `gso_type` byte.
    pub fn gso_type(&self) -> u8 {
        self.buffer.as_ref()[field::GSO_TYPE]
    }

    /// `hdr_len`.
    pub fn hdr_len(&self) -> u16 {
        self.le16(field::HDR_LEN)
    }

    /// `gso_size`.
    pub fn gso_size(&self) -> u16 {
        self.le16(field::GSO_SIZE)
    }

    /// `csum_start`.
    pub fn csum_start(&self) -> u16 {
        self.le16(field::CSUM_START)
    }

    /// `csum_offset`.
    pub fn csum_offset(&self) -> u16 {
        self.le16(field::CSUM_OFFSET)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VirtioNetHdr<T> {
    fn set_le16(&mut self, off: usize, v: u16) {
        self.buffer.as_mut()[off..off + 2].copy_from_slice(&v.to_le_bytes());
    }

    /// Sets `flags`.
    pub fn set_flags(&mut self, v: u8) {
        self.buffer.as_mut()[field::FLAGS] = v;
    }

    /// Sets `gso_type`.
    pub fn set_gso_type(&mut self, v: u8) {
        self.buffer.as_mut()[field::GSO_TYPE] = v;
    }

    /// Sets `hdr_len`.
    pub fn set_hdr_len(&mut self, v: u16) {
        self.set_le16(field::HDR_LEN, v);
    }

    /// Sets `gso_size`.
    pub fn set_gso_size(&mut self, v: u16) {
        self.set_le16(field::GSO_SIZE, v);
    }

    /// Sets `csum_start`.
    pub fn set_csum_start(&mut self, v: u16) {
        self.set_le16(field::CSUM_START, v);
    }

    /// Sets `csum_offset`.
    pub fn set_csum_offset(&mut self, v: u16) {
        self.set_le16(field::CSUM_OFFSET, v);
    }
}

/// A parsed virtio-net header: the offload state of the packet beside it.
/// [`VnetHdr::NONE`] (all zero) is a plain packet with a complete checksum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VnetHdr {
    /// See [`flags`].
    pub flags: u8,
    /// See [`gso`].
    pub gso_type: u8,
    /// Header bytes hint.
    pub hdr_len: u16,
    /// Payload bytes per segment of a super-packet.
    pub gso_size: u16,
    /// Where checksumming starts (offset from the IP header).
    pub csum_start: u16,
    /// Offset of the checksum field from `csum_start`.
    pub csum_offset: u16,
}

impl VnetHdr {
    /// A plain packet: no partial checksum, not a super-packet.
    pub const NONE: VnetHdr = VnetHdr {
        flags: 0,
        gso_type: gso::NONE,
        hdr_len: 0,
        gso_size: 0,
        csum_start: 0,
        csum_offset: 0,
    };

    /// Reads the header from a checked view.
    pub fn parse<T: AsRef<[u8]>>(h: &VirtioNetHdr<T>) -> VnetHdr {
        VnetHdr {
            flags: h.flags(),
            gso_type: h.gso_type(),
            hdr_len: h.hdr_len(),
            gso_size: h.gso_size(),
            csum_start: h.csum_start(),
            csum_offset: h.csum_offset(),
        }
    }

    /// Reads the header from the first [`HEADER_LEN`] bytes of `bytes`.
    pub fn from_bytes(bytes: &[u8; HEADER_LEN]) -> VnetHdr {
        VnetHdr::parse(&VirtioNetHdr::new_unchecked(&bytes[..]))
    }

    /// Writes the header into a checked view.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, h: &mut VirtioNetHdr<T>) {
        h.set_flags(self.flags);
        h.set_gso_type(self.gso_type);
        h.set_hdr_len(self.hdr_len);
        h.set_gso_size(self.gso_size);
        h.set_csum_start(self.csum_start);
        h.set_csum_offset(self.csum_offset);
    }

    /// The header as the 10 bytes a TUN device reads.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        self.emit(&mut VirtioNetHdr::new_unchecked(&mut b[..]));
        b
    }

    /// The transport checksum field holds a pseudo-header seed.
    #[inline]
    pub const fn needs_csum(&self) -> bool {
        self.flags & flags::NEEDS_CSUM != 0
    }

    /// A super-packet (any GSO type).
    #[inline]
    pub const fn is_gso(&self) -> bool {
        self.gso_type & !gso::ECN != gso::NONE
    }

    /// Neither partial nor a super-packet: the bytes are the whole truth.
    #[inline]
    pub const fn is_plain(&self) -> bool {
        !self.needs_csum() && !self.is_gso()
    }
}

/// How a rewrite must treat the transport checksum of a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum L4Checksum {
    /// The field holds a complete checksum: every changed covered word
    /// updates it (RFC 1624).
    Full,
    /// The field holds the pseudo-header seed (`NEEDS_CSUM`): an address
    /// change adds its difference as a plain sum (the seed is not
    /// complemented); a port change leaves it alone, because the ports are
    /// summed when the checksum is finished.
    Seed,
}

/// Why a packet's virtio-net header cannot be honoured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum VnetError {
    /// `NEEDS_CSUM` points somewhere other than the TCP/UDP checksum field
    /// of this packet (another protocol, options, a fragment). A packet that
    /// is not a super-packet can be finished with [`complete_checksum`] and
    /// then handled as plain.
    #[error("partial checksum not at the packet's TCP/UDP checksum field")]
    ForeignPartial,
    /// The GSO type is unknown (or legacy UFO), does not match the packet's
    /// family and protocol, or comes with a zero `gso_size`: the packet
    /// cannot be segmented and must be dropped.
    #[error("GSO type or size does not fit the packet")]
    BadGso,
}

/// Offset of the transport checksum field of `protocol`, if it has one a
/// partial checksum may point at.
#[inline]
const fn check_field(protocol: u8) -> Option<u16> {
    match protocol {
        proto::TCP => Some(tcp::CHECKSUM as u16),
        proto::UDP => Some(udp::CHECKSUM as u16),
        _ => None,
    }
}

/// Decides how a NAT treats the checksum of the packet `info` describes,
/// given its header, from its fields alone (the fast path calls it with the
/// values it read itself).
#[inline]
pub fn check_fields(
    hdr: &VnetHdr,
    version: IpVersion,
    protocol: u8,
    l4_offset: usize,
    first_fragment_or_whole: bool,
) -> Result<L4Checksum, VnetError> {
    if hdr.is_gso() {
        let fits = match hdr.gso_type & !gso::ECN {
            gso::TCPV4 => version == IpVersion::V4 && protocol == proto::TCP,
            gso::TCPV6 => version == IpVersion::V6 && protocol == proto::TCP,
            gso::UDP_L4 => protocol == proto::UDP && hdr.gso_type & gso::ECN == 0,
            _ => false,
        };
        if !fits || hdr.gso_size == 0 || !first_fragment_or_whole {
            return Err(VnetError::BadGso);
        }
    }
    if !hdr.needs_csum() {
        return Ok(L4Checksum::Full);
    }
    match check_field(protocol) {
        Some(off)
            if first_fragment_or_whole
                && usize::from(hdr.csum_start) == l4_offset
                && hdr.csum_offset == off =>
        {
            Ok(L4Checksum::Seed)
        }
        _ if hdr.is_gso() => Err(VnetError::BadGso),
        _ => Err(VnetError::ForeignPartial),
    }
}

/// [`check_fields`] for a parsed packet.
#[inline]
pub fn check(hdr: &VnetHdr, info: &PacketInfo) -> Result<L4Checksum, VnetError> {
    let whole = matches!(info.fragment, Fragment::None)
        && matches!(
            info.transport,
            Transport::Tcp { .. } | Transport::Udp { .. }
        );
    check_fields(hdr, info.version, info.protocol, info.l4_offset, whole)
}

/// Finishes a partial checksum in place, as the kernel's
/// `skb_checksum_help` does: sums `packet[csum_start..]` (the seed in the
/// field included) and stores the complement. For UDP a result of 0 is
/// stored as 0xffff. Returns false, leaving `packet` untouched, when the
/// header does not point inside `packet`. `packet` must end where the IP
/// packet ends.
pub fn complete_checksum(packet: &mut [u8], hdr: &VnetHdr, protocol: u8) -> bool {
    let start = usize::from(hdr.csum_start);
    let at = start + usize::from(hdr.csum_offset);
    if at + 2 > packet.len() {
        return false;
    }
    let mut c = finish(sum(&packet[start..], 0));
    if c == 0 && protocol == proto::UDP {
        c = 0xffff;
    }
    packet[at..at + 2].copy_from_slice(&c.to_be_bytes());
    true
}

/// Applies an address difference (a sum of `diff16` terms) to a seed.
#[inline(always)]
pub fn apply_to_seed(seed: u16, diff: u32) -> u16 {
    fold(u32::from(seed) + diff)
}
