//! Software segmentation of super-packets (TSO, USO), for a destination that
//! cannot take them whole (a TUN device without offloads).
//!
//! Each segment is written into a caller-owned buffer, one at a time: the
//! headers of the super-packet, then the next `gso_size` bytes of payload,
//! with every field the kernel's own GSO (`tcp_gso_segment`,
//! `__udp_gso_segment`, `inet_gso_segment`) would set:
//!
//! * IPv4: total length, identification (+1 per segment), header checksum;
//!   IPv6: payload length.
//! * TCP: sequence number (+`gso_size` per segment); FIN and PSH only on the
//!   last segment, CWR only on the first; the full checksum.
//! * UDP: length and the full checksum (0 stored as 0xffff).
//!
//! The checksums are complete, so the receiving kernel verifies them. With
//! a partial checksum (the usual case) each segment's checksum is finished
//! from the super-packet's seed, as the kernel's GSO does, rather than
//! recomputed from the addresses: a wrong seed left by the NAT makes
//! segments the receiver drops, which is how the root tests check the
//! seeds against a real kernel.

use std::net::IpAddr;

use super::checksum::{diff16, finish, pseudo_header, sum};
use super::field::{get16, get32, get_v4, get_v6, ipv4, ipv6, proto, set16, set32, tcp, udp};
use super::virtio::{apply_to_seed, check, VnetError, VnetHdr};
use super::{IpVersion, PacketInfo};

/// Why a super-packet cannot be segmented.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum GsoError {
    /// The virtio-net header does not fit the packet (see [`VnetError`]).
    #[error("virtio-net header does not fit the packet: {0}")]
    Header(#[from] VnetError),
    /// The output buffer is smaller than a segment.
    #[error("segment buffer too small")]
    BufferTooSmall,
    /// The packet is shorter than its headers.
    #[error("super-packet shorter than its headers")]
    Truncated,
}

/// A super-packet prepared for segmentation: where its headers end and how
/// many segments it makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segmenter {
    version: IpVersion,
    protocol: u8,
    l4: usize,
    headers: usize,
    payload: usize,
    size: usize,
    segments: usize,
    /// The transport checksum field holds a pseudo-header seed.
    seeded: bool,
}

impl Segmenter {
    /// Prepares `packet` for segmentation by `hdr`. `info` is
    /// [`super::parse`]'s view of it (addresses and ports may have been
    /// rewritten since; offsets, lengths and protocol may not). A packet
    /// that is not a super-packet is one segment (its checksum completed if
    /// partial). A stale or forged `info` gives an error or wrong segments,
    /// never a panic.
    pub fn new(packet: &[u8], info: &PacketInfo, hdr: &VnetHdr) -> Result<Segmenter, GsoError> {
        check(hdr, info)?;
        let l4 = info.l4_offset;
        let min_l4 = match info.version {
            IpVersion::V4 => ipv4::HEADER_LEN,
            IpVersion::V6 => ipv6::HEADER_LEN,
        };
        let headers = match info.protocol {
            proto::TCP => {
                let off = packet.get(l4 + tcp::DATA_OFF).ok_or(GsoError::Truncated)?;
                l4 + usize::from(off >> 4) * 4
            }
            proto::UDP => l4 + udp::HEADER_LEN,
            _ => return Err(VnetError::BadGso.into()),
        };
        let len = info.packet_len.min(packet.len());
        let l4_header = if info.protocol == proto::TCP {
            tcp::HEADER_LEN
        } else {
            udp::HEADER_LEN
        };
        if l4 < min_l4 || headers < l4 + l4_header || headers > len {
            return Err(GsoError::Truncated);
        }
        let payload = len - headers;
        let size = if hdr.is_gso() {
            usize::from(hdr.gso_size)
        } else {
            payload.max(1)
        };
        Ok(Segmenter {
            version: info.version,
            protocol: info.protocol,
            l4,
            headers,
            payload,
            size,
            segments: payload.div_ceil(size).max(1),
            seeded: hdr.needs_csum(),
        })
    }

    /// Number of segments.
    pub fn segments(&self) -> usize {
        self.segments
    }

    /// Bytes of headers copied into every segment.
    pub fn header_len(&self) -> usize {
        self.headers
    }

    /// Writes segment `index` (< [`Segmenter::segments`]) of `packet` into
    /// `out`; returns its length. `packet` must be the one given to
    /// [`Segmenter::new`].
    pub fn write(&self, packet: &[u8], index: usize, out: &mut [u8]) -> Result<usize, GsoError> {
        if index >= self.segments {
            return Err(GsoError::Truncated);
        }
        let from = self.headers + index * self.size;
        let chunk = self
            .size
            .min(self.payload.saturating_sub(index * self.size));
        let len = self.headers + chunk;
        if out.len() < len {
            return Err(GsoError::BufferTooSmall);
        }
        if from + chunk > packet.len() {
            return Err(GsoError::Truncated);
        }
        out[..self.headers].copy_from_slice(&packet[..self.headers]);
        out[self.headers..len].copy_from_slice(&packet[from..from + chunk]);
        let seg = &mut out[..len];
        let l4 = self.l4;
        match self.version {
            IpVersion::V4 => {
                set16(seg, ipv4::TOTAL_LEN, len as u16);
                let id = get16(seg, ipv4::IDENT).wrapping_add(index as u16);
                set16(seg, ipv4::IDENT, id);
                set16(seg, ipv4::CHECKSUM, 0);
                let c = finish(sum(&seg[..l4], 0));
                set16(seg, ipv4::CHECKSUM, c);
            }
            IpVersion::V6 => {
                set16(seg, ipv6::PAYLOAD_LEN, (len - ipv6::HEADER_LEN) as u16);
            }
        }
        let check_at = if self.protocol == proto::TCP {
            let t = &mut seg[l4..];
            let seq = get32(t, tcp::SEQ).wrapping_add((index * self.size) as u32);
            set32(t, tcp::SEQ, seq);
            let mut flags = t[tcp::FLAGS];
            if index + 1 < self.segments {
                flags &= !(0x01 | 0x08); // FIN, PSH: only the last segment
            }
            if index > 0 {
                flags &= !0x80; // CWR: only the first
            }
            t[tcp::FLAGS] = flags;
            tcp::CHECKSUM
        } else {
            set16(&mut seg[l4..], udp::LENGTH, (len - l4) as u16);
            udp::CHECKSUM
        };
        let l4_len = (len - l4) as u16;
        if self.seeded {
            // As the kernel's GSO does: each segment's checksum grows from
            // the super-packet's seed (with the length changed), so a wrong
            // seed makes wrong segments, which the receiver refuses.
            let super_len = (self.headers + self.payload - l4) as u16;
            let seed = get16(seg, l4 + check_at);
            set16(
                seg,
                l4 + check_at,
                apply_to_seed(seed, diff16(super_len, l4_len)),
            );
            let mut c = finish(sum(&seg[l4..], 0));
            if c == 0 && self.protocol == proto::UDP {
                c = 0xffff;
            }
            set16(seg, l4 + check_at, c);
            return Ok(len);
        }
        set16(seg, l4 + check_at, 0);
        // Addresses from the bytes: the packet may have been rewritten since `info`.
        let (src, dst) = match self.version {
            IpVersion::V4 => (
                IpAddr::V4(get_v4(seg, ipv4::SRC)),
                IpAddr::V4(get_v4(seg, ipv4::DST)),
            ),
            IpVersion::V6 => (
                IpAddr::V6(get_v6(seg, ipv6::SRC)),
                IpAddr::V6(get_v6(seg, ipv6::DST)),
            ),
        };
        let pseudo = pseudo_header(src, dst, self.protocol, u32::from(l4_len));
        let mut c = finish(sum(&seg[l4..], pseudo));
        if c == 0 && self.protocol == proto::UDP {
            c = 0xffff;
        }
        set16(seg, l4 + check_at, c);
        Ok(len)
    }
}
