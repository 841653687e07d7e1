//! The internet checksum (RFC 1071): full computation, pseudo-header sums,
//! and RFC 1624 incremental updates.
//!
//! Sums are kept unfolded in a `u32` so that several pieces (pseudo-header,
//! header, payload) can be chained cheaply; [`fold`] reduces a sum to 16 bits
//! and [`finish`] turns it into the value stored in a checksum field.
//!
//! The incremental updates use RFC 1624 equation 3, `HC' = ~(~HC + ~m + m')`,
//! which (unlike equation 2 of RFC 1141) never turns a correct checksum into
//! the non-canonical `0xffff`, so an update followed by the reverse update
//! restores the original field exactly.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Adds `data`, as big-endian 16-bit words, to the ones-complement sum `initial`.
///
/// An odd trailing byte is padded with a zero byte, as the checksum
/// definition requires; when chaining several calls only the last piece may
/// have an odd length.
#[inline]
pub fn sum(data: &[u8], initial: u32) -> u32 {
    // 64-bit loads split into 32-bit halves in a 64-bit accumulator: no
    // overflow below 2^31 bytes, and since 2^16 == 1 (mod 0xffff) the fold
    // of 32-bit words equals the sum of the 16-bit words.
    let mut acc = u64::from(initial);
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        acc += (w >> 32) + (w & 0xffff_ffff);
    }
    let mut words = chunks.remainder().chunks_exact(2);
    for w in &mut words {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        acc += u64::from(*last) << 8;
    }
    // Fold 64 -> 32 bits, keeping the ones-complement value.
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc as u32
}

/// Folds the carries of a ones-complement sum into 16 bits (not complemented).
#[inline]
pub fn fold(sum: u32) -> u16 {
    let s = (sum & 0xffff) + (sum >> 16);
    let s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// The value to store in a checksum field whose covered bytes (with the
/// field zeroed) sum to `sum`: the complement of the folded sum.
#[inline]
pub fn finish(sum: u32) -> u16 {
    !fold(sum)
}

/// The internet checksum of `data` (with its checksum field zeroed).
///
/// Verifying: the checksum of data that includes a correct checksum field is 0.
#[inline]
pub fn internet_checksum(data: &[u8]) -> u16 {
    finish(sum(data, 0))
}

/// Sum of the IPv4 pseudo-header (RFC 793 / RFC 768) for `protocol` and an
/// upper-layer length of `len` bytes.
#[inline]
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, len: u16) -> u32 {
    let s = src.to_bits();
    let d = dst.to_bits();
    (s >> 16) + (s & 0xffff) + (d >> 16) + (d & 0xffff) + u32::from(protocol) + u32::from(len)
}

/// Sum of the IPv6 pseudo-header (RFC 8200 section 8.1) for `next_header`
/// and an upper-layer length of `len` bytes.
#[inline]
pub fn pseudo_header_v6(src: &Ipv6Addr, dst: &Ipv6Addr, next_header: u8, len: u32) -> u32 {
    // Folded before the rest is added: the sum of two addresses can be
    // 0xffff_ffff (all-ones addresses), and a wrapped carry is a checksum
    // off by one.
    let acc = u32::from(fold(sum(&dst.octets(), sum(&src.octets(), 0))));
    acc + (len >> 16) + (len & 0xffff) + u32::from(next_header)
}

/// Sum of the pseudo-header for either family; 0 when the two addresses are
/// of different families (there is no such packet).
#[inline]
pub fn pseudo_header(src: IpAddr, dst: IpAddr, protocol: u8, len: u32) -> u32 {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => pseudo_header_v4(s, d, protocol, len as u16),
        (IpAddr::V6(s), IpAddr::V6(d)) => pseudo_header_v6(&s, &d, protocol, len),
        _ => 0,
    }
}

/// Ones-complement difference of replacing the 16-bit word `old` by `new`
/// (`~old + new`), to be accumulated and applied with [`apply`].
#[inline]
pub fn diff16(old: u16, new: u16) -> u32 {
    u32::from(!old) + u32::from(new)
}

/// Ones-complement difference of replacing the 32-bit value `old` by `new`.
#[inline]
pub fn diff32(old: u32, new: u32) -> u32 {
    diff16((old >> 16) as u16, (new >> 16) as u16) + diff16(old as u16, new as u16)
}

/// Ones-complement difference of replacing the address `old` by `new`;
/// 0 (no change) when they are of different families.
#[inline]
pub fn diff_addr(old: IpAddr, new: IpAddr) -> u32 {
    match (old, new) {
        (IpAddr::V4(o), IpAddr::V4(n)) => diff32(o.to_bits(), n.to_bits()),
        (IpAddr::V6(o), IpAddr::V6(n)) => {
            let (o, n) = (o.to_bits(), n.to_bits());
            diff32((o >> 96) as u32, (n >> 96) as u32)
                + diff32((o >> 64) as u32, (n >> 64) as u32)
                + diff32((o >> 32) as u32, (n >> 32) as u32)
                + diff32(o as u32, n as u32)
        }
        _ => 0,
    }
}

/// Applies an accumulated difference (a sum of [`diff16`]-style terms) to the
/// checksum field value `check` (RFC 1624 equation 3).
///
/// The accumulated difference must stay below `2^32 - 2^16`, which holds for
/// well over ten thousand terms.
#[inline]
pub fn apply(check: u16, diff: u32) -> u16 {
    !fold(u32::from(!check) + diff)
}

/// Incrementally updates `check` for a 16-bit word changing from `old` to `new`.
#[inline]
pub fn update16(check: u16, old: u16, new: u16) -> u16 {
    apply(check, diff16(old, new))
}

/// Incrementally updates `check` for a 32-bit field changing from `old` to `new`.
#[inline]
pub fn update32(check: u16, old: u32, new: u32) -> u16 {
    apply(check, diff32(old, new))
}

/// Incrementally updates `check` for an address (in the header or the
/// pseudo-header) changing from `old` to `new`. Addresses of different
/// families leave `check` unchanged.
#[inline]
pub fn update_addr(check: u16, old: IpAddr, new: IpAddr) -> u16 {
    apply(check, diff_addr(old, new))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: bytes 00 01 f2 03 f4 f5 f6 f7 sum to 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data, 0)), 0xddf2);
        assert_eq!(internet_checksum(&data), !0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(fold(sum(&[0x12, 0x34, 0x56], 0)), 0x1234 + 0x5600);
        assert_eq!(fold(sum(&[0xab], 0)), 0xab00);
        assert_eq!(fold(sum(&[], 7)), 7);
    }

    #[test]
    fn matches_smoltcp_on_many_lengths() {
        let data: Vec<u8> = (0..1500u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in 0..data.len() {
            let ours = internet_checksum(&data[..len]);
            let theirs = !smoltcp::wire::checksum::data(&data[..len]);
            assert_eq!(ours, theirs, "len {len}");
        }
    }

    #[test]
    fn rfc1624_example() {
        // RFC 1624 section 4: HC 0xdd2f, m 0x5555 -> m' 0x3285 gives 0x0000.
        assert_eq!(update16(0xdd2f, 0x5555, 0x3285), 0x0000);
    }

    #[test]
    fn incremental_equals_full() {
        let mut data = [0u8; 40];
        for (i, b) in data.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37);
        }
        data[10] = 0;
        data[11] = 0;
        let check = internet_checksum(&data);
        let old = u32::from_be_bytes([data[12], data[13], data[14], data[15]]);
        let new: u32 = 0xc0a8_0101;
        data[12..16].copy_from_slice(&new.to_be_bytes());
        assert_eq!(update32(check, old, new), internet_checksum(&data));
        let back = update32(update32(check, old, new), new, old);
        assert_eq!(back, check);
    }
}
