//! Header field offsets and small bounds-checked byte accessors.

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::checksum::diff16;

/// Protocol numbers used here.
pub mod proto {
    pub const HOP_BY_HOP: u8 = 0;
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const ICMPV6: u8 = 58;
    pub const NO_NEXT: u8 = 59;
    pub const DEST_OPTS: u8 = 60;
}

/// IPv4 header (RFC 791).
pub mod ipv4 {
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const TOTAL_LEN: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLAGS_FRAG: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
    pub const HEADER_LEN: usize = 20;
    pub const FLAG_DF: u16 = 0x4000;
    pub const FLAG_MF: u16 = 0x2000;
    pub const FRAG_OFFSET_MASK: u16 = 0x1fff;
}

/// IPv6 fixed header (RFC 8200).
pub mod ipv6 {
    pub const VER_TC_FLOW: usize = 0;
    pub const PAYLOAD_LEN: usize = 4;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: usize = 8;
    pub const DST: usize = 24;
    pub const HEADER_LEN: usize = 40;
    /// Fragment header: next header, reserved, offset/flags, identification.
    pub const FRAG_HEADER_LEN: usize = 8;
    pub const FRAG_OFFSET_MASK: u16 = 0xfff8;
    pub const FRAG_M: u16 = 0x0001;
    /// Upper bound on extension headers walked before giving up.
    pub const MAX_EXT_HEADERS: usize = 8;
}

/// TCP header (RFC 9293).
pub mod tcp {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const SEQ: usize = 4;
    pub const ACK: usize = 8;
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: usize = 14;
    pub const CHECKSUM: usize = 16;
    pub const URGENT: usize = 18;
    pub const HEADER_LEN: usize = 20;
}

/// UDP header (RFC 768).
pub mod udp {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const LENGTH: usize = 4;
    pub const CHECKSUM: usize = 6;
    pub const HEADER_LEN: usize = 8;
}

/// ICMP and ICMPv6 header (RFC 792, RFC 4443).
pub mod icmp {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const IDENT: usize = 4;
    pub const SEQ: usize = 6;
    /// Second word: unused / next-hop MTU (v4) / MTU (v6) / pointer.
    pub const REST: usize = 4;
    pub const HEADER_LEN: usize = 8;
    /// Minimum for any ICMPv6 message (type, code, checksum).
    pub const MIN_LEN: usize = 4;

    pub const V4_ECHO_REPLY: u8 = 0;
    pub const V4_DEST_UNREACHABLE: u8 = 3;
    pub const V4_SOURCE_QUENCH: u8 = 4;
    pub const V4_REDIRECT: u8 = 5;
    pub const V4_ECHO_REQUEST: u8 = 8;
    pub const V4_TIME_EXCEEDED: u8 = 11;
    pub const V4_PARAM_PROBLEM: u8 = 12;

    pub const V6_DEST_UNREACHABLE: u8 = 1;
    pub const V6_PACKET_TOO_BIG: u8 = 2;
    pub const V6_TIME_EXCEEDED: u8 = 3;
    pub const V6_PARAM_PROBLEM: u8 = 4;
    pub const V6_ECHO_REQUEST: u8 = 128;
    pub const V6_ECHO_REPLY: u8 = 129;
    pub const V6_REDIRECT: u8 = 137;
}

/// Big-endian u16 at `off`; the caller has checked `off + 2 <= b.len()`.
#[inline(always)]
pub fn get16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}

/// Big-endian u32 at `off`; the caller has checked `off + 4 <= b.len()`.
#[inline(always)]
pub fn get32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// Writes a big-endian u16 at `off`.
#[inline(always)]
pub fn set16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_be_bytes());
}

/// Writes a big-endian u32 at `off`.
#[inline(always)]
pub fn set32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_be_bytes());
}

/// IPv4 address at `off`.
#[inline(always)]
pub fn get_v4(b: &[u8], off: usize) -> Ipv4Addr {
    Ipv4Addr::from(get32(b, off))
}

/// IPv6 address at `off`.
#[inline(always)]
pub fn get_v6(b: &[u8], off: usize) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[off..off + 16]);
    Ipv6Addr::from(a)
}

/// Replaces the u16 at `off` with `new`, returning the checksum difference
/// (0 when unchanged, so untouched fields leave checksums alone).
#[inline(always)]
pub fn replace16(b: &mut [u8], off: usize, new: u16) -> u32 {
    let old = get16(b, off);
    if old == new {
        return 0;
    }
    set16(b, off, new);
    diff16(old, new)
}

/// Replaces the address at `off` with `new` (4 or 16 bytes by its family),
/// returning the checksum difference (0 when unchanged).
#[inline(always)]
pub fn replace_addr(b: &mut [u8], off: usize, new: IpAddr) -> u32 {
    match new {
        IpAddr::V4(a) => {
            let new = a.to_bits();
            let old = get32(b, off);
            if old == new {
                return 0;
            }
            set32(b, off, new);
            diff16((old >> 16) as u16, (new >> 16) as u16) + diff16(old as u16, new as u16)
        }
        IpAddr::V6(a) => {
            let new = a.octets();
            let old = &mut b[off..off + 16];
            if *old == new {
                return 0;
            }
            let mut d = 0;
            for i in (0..16).step_by(2) {
                d += diff16(
                    u16::from_be_bytes([old[i], old[i + 1]]),
                    u16::from_be_bytes([new[i], new[i + 1]]),
                );
            }
            old.copy_from_slice(&new);
            d
        }
    }
}
