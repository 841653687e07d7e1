//! Maglev consistent hashing: the lookup tables that pick a service backend
//! for a new flow.
//!
//! This module owns [`MaglevTable`], built by the control plane when a
//! service's endpoints change and read by the fast path for every new flow
//! (Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load
//! Balancer", NSDI 2016, section 3.4).
//!
//! # How a table is built
//!
//! The table has `M` slots, `M` prime. Every backend gets its own permutation of
//! the slots from two hashes of its address: it starts at `offset = h1 % M` and
//! steps by `skip = h2 % (M - 1) + 1`. Because `M` is prime, every `skip` is
//! coprime with `M`, so the walk visits every slot exactly once. Backends take
//! turns, each claiming the next slot of its permutation that is still free,
//! until all slots are claimed. A flow hash then maps to a slot, and the slot to
//! a backend.
//!
//! # Design choices
//!
//! * **Order does not matter.** Backends take turns in the order of their
//!   addresses, not of the slice they are given in, so two nodes that know the
//!   same endpoint set in a different order build the same table (the index
//!   returned by [`MaglevTable::lookup`] is still into the caller's slice).
//! * **Stable, hand-written hash.** The per-backend hashes are a fixed
//!   SplitMix64-style mix of the address bytes, not `ahash`, whose output
//!   depends on the CPU features it was compiled for and may change between
//!   versions. The table is therefore a pure function of (address set, size):
//!   the same on every node, every build and every run, which keeps nodes that
//!   receive the same flow (ECMP, failover) choosing the same backend.
//! * **Ladder sizes.** [`MaglevTable::size_for`] picks the smallest prime of a
//!   fixed ladder ([`SIZE_LADDER`], roughly doubling) that holds `backends *
//!   min_ratio`, not the next prime above it. A backend coming or going then
//!   rarely changes the size, which matters because a size change remaps
//!   nearly every slot. [`MaglevTable::size_for_update`] keeps the current size
//!   while it still fits, so a service whose backend count hovers at a rung
//!   boundary does not change size back and forth.
//! * **`u16` slots.** A slot stores the backend's index, so a table costs 2 bytes
//!   per slot: at the default ratio of 100, 100 backends take 16,381 slots
//!   (32 KiB) and 1,000 backends 131,071 slots (256 KiB); a 10-endpoint service
//!   takes 1,021 slots (2 KiB). `u16` halves the memory (and cache footprint on
//!   the lookup path) against `u32`, at the price of at most [`MAX_BACKENDS`]
//!   backends per service, far more than the ladder can hold at a useful ratio.
//! * **Lookup without division.** [`MaglevTable::lookup`] folds the 64-bit flow
//!   hash to 32 bits and reduces it modulo `M` with a precomputed multiplier
//!   (Lemire, "Faster Remainder by Direct Computation", 2019): exact, a few
//!   cycles, no `div` instruction, and unlike a multiply-shift range reduction
//!   it stays uniform for flow hashes that only use their low bits.
//!
//! # Balance and disruption (measured)
//!
//! The turn-taking fill gives every backend `floor(M / N)` or `ceil(M / N)`
//! slots, so a backend's share differs from the equal share by less than
//! `N / M <= 1 / min_ratio` relative (under 1% at the default ratio of 100; 0.49%
//! for 100 backends in 16,381 slots).
//!
//! Maglev trades a little disruption for that balance: when a backend leaves,
//! some slots that were not on it move too, because the other backends' turns
//! fall differently. Measured over every single-backend removal (slots that
//! were on the removed backend not counted):
//!
//! | backends | slots (ratio) | worst | mean |
//! |---|---|---|---|
//! | 100 | 16,381 (164) | 1.52% | 1.39% |
//! | 100, one added | 16,381 (164) | 1.49% | 1.38% |
//! | 81 | 8,191 (101) | 2.05% | 1.80% |
//! | 160 | 16,381 (102) | 1.89% | 1.76% |
//! | 1,000 | 131,071 (131) | 0.56% | 0.55% |
//!
//! Disruption falls as the ratio grows and is worst for small services. Over
//! every service of 2 to 200 backends, the worst removal moves 3.30% of the
//! other slots at `min_ratio` 100 (20 backends in 2,039 slots), 2.21% at 200
//! and 1.63% at 400 (the ignored test `disruption_survey` measures this). So the
//! 2% bound holds for 100 backends at the default ratio of 100 (the test
//! `disruption_100_backends` pins it), but a guarantee for every service size
//! needs a ratio of about 400, four times the memory and build time. The
//! default stays at 100, as the service table's design asks; existing flows
//! are pinned by connection tracking, so disruption only moves new flows.
//!
//! Building the 1,000-backend table (131,071 slots) takes 3.1 to 3.6 ms (median,
//! varying with the load from other builds) on
//! this 2-core machine (`cargo bench --bench maglev`, id `maglev/build_1000`);
//! a lookup takes about 1 ns.

use std::net::SocketAddr;

/// The table sizes [`MaglevTable::size_for`] chooses from: primes, each roughly
/// twice the one before.
pub const SIZE_LADDER: [u32; 13] = [
    251, 509, 1_021, 2_039, 4_093, 8_191, 16_381, 32_749, 65_521, 131_071, 262_139, 524_287,
    1_048_573,
];

/// The largest table [`MaglevTable::build`] accepts: 1,048,573 slots (2 MiB).
pub const MAX_SIZE: u32 = SIZE_LADDER[SIZE_LADDER.len() - 1];

/// The most backends one table can hold: slot values are `u16` and `u16::MAX`
/// marks a free slot while building.
pub const MAX_BACKENDS: usize = u16::MAX as usize;

/// The default minimum number of slots per backend, as the service table uses
/// it: at least 100 slots per backend keeps each backend's share within 1% of
/// equal.
pub const DEFAULT_MIN_RATIO: u32 = 100;

/// Marks a slot not yet claimed during the fill; never left in a built table.
const FREE: u16 = u16::MAX;

/// Why a Maglev table could not be sized or built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MaglevError {
    /// The backend list is empty; a service with no endpoints needs no table
    /// (the router rejects its flows instead).
    #[error("no backends: a Maglev table needs at least one; reject the service's flows instead")]
    NoBackends,
    /// More backends than one table can hold at the requested ratio.
    #[error(
        "{backends} backends is too many: at most {max} fit at this ratio; \
         lower the minimum slots per backend or split the service"
    )]
    TooManyBackends {
        /// Backends requested.
        backends: usize,
        /// The most backends that fit.
        max: usize,
    },
    /// The table size is not a prime, so some backends' permutations would not
    /// cover the table.
    #[error("table size {size} is not prime; use MaglevTable::size_for to choose one")]
    SizeNotPrime {
        /// The size given.
        size: u32,
    },
    /// The table has fewer slots than `backends * min_ratio`.
    #[error(
        "table size {size} is too small for {backends} backends at {min_ratio} slots each; \
         use MaglevTable::size_for to choose one"
    )]
    SizeTooSmall {
        /// The size given.
        size: u32,
        /// Backends requested.
        backends: usize,
        /// Slots required per backend.
        min_ratio: u32,
    },
    /// The table size is above [`MAX_SIZE`].
    #[error("table size {size} is above the maximum of {max} slots; use MaglevTable::size_for")]
    SizeTooLarge {
        /// The size given.
        size: u32,
        /// The largest size accepted.
        max: u32,
    },
}

/// A Maglev lookup table mapping a flow hash to a backend index.
///
/// Immutable once built; share it between worker threads behind an `Arc`.
/// Heap memory is 2 bytes per slot ([`MaglevTable::memory_bytes`]).
#[derive(Clone, PartialEq, Eq)]
pub struct MaglevTable {
    /// Backend index (into the slice given to `build`) per slot.
    slots: Box<[u16]>,
    /// `ceil(2^64 / size)`, the multiplier for division-free `% size`.
    reciprocal: u64,
    /// Number of slots, prime, equal to `slots.len()`.
    size: u32,
    /// Number of backends the table was built over.
    backends: u32,
}

impl std::fmt::Debug for MaglevTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaglevTable")
            .field("size", &self.size)
            .field("backends", &self.backends)
            .finish_non_exhaustive()
    }
}

impl MaglevTable {
    /// The smallest size of [`SIZE_LADDER`] with at least `backends * min_ratio`
    /// slots (and at least one slot per backend when `min_ratio` is 0).
    ///
    /// A ladder rather than the next prime keeps the size unchanged when a
    /// backend comes or goes, so the change disrupts few flows.
    pub fn size_for(backends: usize, min_ratio: u32) -> Result<u32, MaglevError> {
        let required = required_slots(backends, min_ratio)?;
        SIZE_LADDER
            .iter()
            .copied()
            .find(|&size| u64::from(size) >= required)
            .ok_or(MaglevError::TooManyBackends {
                backends,
                max: max_backends(min_ratio),
            })
    }

    /// Like [`MaglevTable::size_for`], but keeps `current` while it is prime,
    /// still holds `backends * min_ratio` slots and is no more than four times
    /// what is needed.
    ///
    /// Use it when a service's endpoints change: a size change remaps nearly
    /// every slot, and this hysteresis stops a service whose backend count
    /// hovers at a ladder boundary from changing size back and forth.
    pub fn size_for_update(
        current: u32,
        backends: usize,
        min_ratio: u32,
    ) -> Result<u32, MaglevError> {
        let fresh = Self::size_for(backends, min_ratio)?;
        let required = required_slots(backends, min_ratio)?;
        let current_wide = u64::from(current);
        if current_wide >= required
            && current_wide <= required.saturating_mul(4)
            && current <= MAX_SIZE
            && is_prime(current)
        {
            Ok(current)
        } else {
            Ok(fresh)
        }
    }

    /// Builds a table of `size` slots over `backends`, identified by their
    /// address (pod IP and target port).
    ///
    /// `size` must be prime, at most [`MAX_SIZE`] and at least
    /// `backends.len()`; use [`MaglevTable::size_for`] to choose it. The result
    /// depends only on the set of addresses and `size`: the same on every node
    /// and run, and independent of the order of `backends` (indices returned by
    /// [`MaglevTable::lookup`] still refer to `backends` as given). A duplicated
    /// address splits its share between its copies.
    pub fn build(backends: &[SocketAddr], size: u32) -> Result<MaglevTable, MaglevError> {
        let count = backends.len();
        if count == 0 {
            return Err(MaglevError::NoBackends);
        }
        if count > MAX_BACKENDS {
            return Err(MaglevError::TooManyBackends {
                backends: count,
                max: MAX_BACKENDS,
            });
        }
        if size > MAX_SIZE {
            return Err(MaglevError::SizeTooLarge {
                size,
                max: MAX_SIZE,
            });
        }
        if !is_prime(size) {
            return Err(MaglevError::SizeNotPrime { size });
        }
        if (size as usize) < count {
            return Err(MaglevError::SizeTooSmall {
                size,
                backends: count,
                min_ratio: 1,
            });
        }

        // Turn order is by address so the table does not depend on the order
        // the control plane happened to list the endpoints in.
        let mut order: Vec<u16> = (0..count as u16).collect();
        order.sort_unstable_by_key(|&i| backends[usize::from(i)]);

        let mut walks: Vec<Walk> = order
            .iter()
            .map(|&i| Walk::new(&backends[usize::from(i)], size))
            .collect();

        let slots = fill(&order, &mut walks, size);
        Ok(MaglevTable {
            slots,
            reciprocal: u64::MAX / u64::from(size) + 1,
            size,
            backends: count as u32,
        })
    }

    /// The backend index (into the slice given to [`MaglevTable::build`]) for
    /// a flow hash.
    ///
    /// O(1), no allocation, never panics. The flow hash should be a good hash
    /// of the flow's tuple; its two 32-bit halves are folded together, so
    /// either half may carry the entropy.
    #[inline]
    pub fn lookup(&self, flow_hash: u64) -> usize {
        let folded = (flow_hash ^ (flow_hash >> 32)) as u32;
        let slot = fast_mod(folded, self.reciprocal, self.size);
        // `slot < size == slots.len()` always; `get` keeps this panic-free
        // without unsafe, and the branch is never taken.
        self.slots
            .get(slot as usize)
            .map_or(0, |&backend| usize::from(backend))
    }

    /// Number of slots (a prime).
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Number of backends the table was built over.
    pub fn backends(&self) -> usize {
        self.backends as usize
    }

    /// Heap bytes held by the table: 2 bytes per slot (the struct itself adds
    /// `size_of::<MaglevTable>()`).
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of_val::<[u16]>(&self.slots)
    }
}

/// `backends * max(min_ratio, 1)`, after checking the backend count.
fn required_slots(backends: usize, min_ratio: u32) -> Result<u64, MaglevError> {
    if backends == 0 {
        return Err(MaglevError::NoBackends);
    }
    let max = max_backends(min_ratio);
    if backends > max {
        return Err(MaglevError::TooManyBackends { backends, max });
    }
    Ok((backends as u64).saturating_mul(u64::from(min_ratio.max(1))))
}

/// The most backends a ladder size can hold at `min_ratio`.
fn max_backends(min_ratio: u32) -> usize {
    (MAX_SIZE / min_ratio.max(1)).min(MAX_BACKENDS as u32) as usize
}

/// One backend's walk through its permutation of the slots.
#[derive(Clone, Copy)]
struct Walk {
    /// The next slot of the permutation to try.
    next: u32,
    /// The permutation's step, in `1..size`.
    skip: u32,
}

impl Walk {
    fn new(addr: &SocketAddr, size: u32) -> Walk {
        let size = u64::from(size);
        // Two independent hashes of the same identity (distinct seeds).
        let offset = hash_addr(addr, 0x6d61_676c_6576_3031) % size;
        let skip = hash_addr(addr, 0x6d61_676c_6576_3032) % (size - 1).max(1) + 1;
        Walk {
            next: offset as u32,
            skip: skip as u32,
        }
    }
}

/// Claims every slot by letting the backends take turns, in `order`, each
/// taking the next free slot of its permutation. `order[rank]` is the
/// caller's index of the backend walking `walks[rank]`.
fn fill(order: &[u16], walks: &mut [Walk], size: u32) -> Box<[u16]> {
    let mut slots = vec![FREE; size as usize].into_boxed_slice();
    let mut remaining = size;
    loop {
        for (&backend, walk) in order.iter().zip(walks.iter_mut()) {
            let mut slot = walk.next;
            // Terminates: the permutation covers every slot (size is prime, so
            // skip is coprime with it) and at least one slot is still free.
            while slots[slot as usize] != FREE {
                slot += walk.skip;
                if slot >= size {
                    slot -= size;
                }
            }
            slots[slot as usize] = backend;
            slot += walk.skip;
            if slot >= size {
                slot -= size;
            }
            walk.next = slot;
            remaining -= 1;
            if remaining == 0 {
                return slots;
            }
        }
    }
}

/// A stable 64-bit hash of a backend's address (IP and port), seeded.
///
/// Hand-written so the table is the same on every platform and version.
fn hash_addr(addr: &SocketAddr, seed: u64) -> u64 {
    let port = u64::from(addr.port());
    match addr {
        SocketAddr::V4(v4) => {
            let ip = u64::from(u32::from(*v4.ip()));
            finish(mix(seed ^ ip), port | (4 << 16))
        }
        SocketAddr::V6(v6) => {
            let ip = u128::from(*v6.ip());
            let h = mix(seed ^ (ip >> 64) as u64);
            let h = mix(h ^ ip as u64);
            finish(h, port | (6 << 16))
        }
    }
}

fn finish(h: u64, last: u64) -> u64 {
    mix(mix(h ^ last) ^ 0x9e37_79b9_7f4a_7c15)
}

/// The SplitMix64 finalizer: a bijection on `u64` with full avalanche.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `value % divisor` given `reciprocal == u64::MAX / divisor + 1`, exact for
/// every 32-bit `value` and `divisor >= 2` (Lemire et al. 2019).
#[inline]
fn fast_mod(value: u32, reciprocal: u64, divisor: u32) -> u32 {
    let low = reciprocal.wrapping_mul(u64::from(value));
    ((u128::from(low) * u128::from(divisor)) >> 64) as u32
}

/// Trial division; fast enough for table sizes (at most ~1,000 divisions).
fn is_prime(n: u32) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n.is_multiple_of(2) || n.is_multiple_of(3) {
        return false;
    }
    let mut d = 5u32;
    while u64::from(d) * u64::from(d) <= u64::from(n) {
        if n.is_multiple_of(d) || n.is_multiple_of(d + 2) {
            return false;
        }
        d += 6;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV6};

    /// Pod `i` of a node subnet, on the service's target port.
    fn pod(i: u32) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::from(0x0af4_0000u32.wrapping_add(i)), 8080))
    }

    fn pods(n: u32) -> Vec<SocketAddr> {
        (0..n).map(pod).collect()
    }

    /// The backend address in every slot.
    fn slot_addrs(table: &MaglevTable, backends: &[SocketAddr]) -> Vec<SocketAddr> {
        (0..u64::from(table.size()))
            .map(|slot| backends[table.lookup(slot)])
            .collect()
    }

    /// Fraction of slots that change backend between `before` and `after`,
    /// ignoring slots on `changed` (in either table): those must move.
    fn moved_fraction(before: &[SocketAddr], after: &[SocketAddr], changed: SocketAddr) -> f64 {
        let (mut moved, mut counted) = (0u32, 0u32);
        for (b, a) in before.iter().zip(after) {
            if *b == changed || *a == changed {
                continue;
            }
            counted += 1;
            if b != a {
                moved += 1;
            }
        }
        f64::from(moved) / f64::from(counted)
    }

    #[test]
    fn ladder_is_prime_and_increasing() {
        for pair in SIZE_LADDER.windows(2) {
            assert!(pair[0] < pair[1]);
        }
        assert!(SIZE_LADDER.iter().all(|&size| is_prime(size)));
    }

    #[test]
    fn is_prime_matches_sieve() {
        let limit = 20_000usize;
        let mut composite = vec![false; limit];
        for n in 2..limit {
            if !composite[n] {
                for m in (n * n..limit).step_by(n) {
                    composite[m] = true;
                }
            }
            assert_eq!(is_prime(n as u32), !composite[n], "{n}");
        }
        assert!(!is_prime(0) && !is_prime(1));
        assert!(is_prime(4_294_967_291)); // largest 32-bit prime
        assert!(!is_prime(u32::MAX));
    }

    #[test]
    fn size_for_picks_the_smallest_rung() {
        assert_eq!(MaglevTable::size_for(1, 100), Ok(251));
        assert_eq!(MaglevTable::size_for(3, 100), Ok(509));
        assert_eq!(MaglevTable::size_for(10, 100), Ok(1_021));
        assert_eq!(MaglevTable::size_for(100, 100), Ok(16_381));
        assert_eq!(MaglevTable::size_for(1_000, 100), Ok(131_071));
        assert_eq!(MaglevTable::size_for(10_485, 100), Ok(MAX_SIZE));
        assert_eq!(MaglevTable::size_for(300, 0), Ok(509));
        // One backend more or fewer keeps the size, so few flows move.
        assert_eq!(MaglevTable::size_for(99, 100), Ok(16_381));
        assert_eq!(MaglevTable::size_for(101, 100), Ok(16_381));
    }

    #[test]
    fn size_for_errors() {
        assert_eq!(MaglevTable::size_for(0, 100), Err(MaglevError::NoBackends));
        assert_eq!(
            MaglevTable::size_for(10_486, 100),
            Err(MaglevError::TooManyBackends {
                backends: 10_486,
                max: 10_485
            })
        );
        assert_eq!(
            MaglevTable::size_for(usize::MAX, u32::MAX),
            Err(MaglevError::TooManyBackends {
                backends: usize::MAX,
                max: 0
            })
        );
        assert!(matches!(
            MaglevTable::size_for(70_000, 1),
            Err(MaglevError::TooManyBackends {
                max: MAX_BACKENDS,
                ..
            })
        ));
    }

    #[test]
    fn size_for_update_keeps_a_size_that_still_fits() {
        // 82 backends need a rung up from 81; coming back down keeps it.
        assert_eq!(MaglevTable::size_for(81, 100), Ok(8_191));
        assert_eq!(MaglevTable::size_for(82, 100), Ok(16_381));
        assert_eq!(MaglevTable::size_for_update(8_191, 82, 100), Ok(16_381));
        assert_eq!(MaglevTable::size_for_update(16_381, 81, 100), Ok(16_381));
        // Far too large, not prime, or too small: a fresh rung.
        assert_eq!(MaglevTable::size_for_update(16_381, 10, 100), Ok(1_021));
        assert_eq!(MaglevTable::size_for_update(16_383, 81, 100), Ok(8_191));
        assert_eq!(MaglevTable::size_for_update(1_021, 81, 100), Ok(8_191));
        assert_eq!(
            MaglevTable::size_for_update(1_021, 0, 100),
            Err(MaglevError::NoBackends)
        );
    }

    #[test]
    fn build_errors() {
        let backends = pods(10);
        assert_eq!(
            MaglevTable::build(&[], 251).unwrap_err(),
            MaglevError::NoBackends
        );
        for size in [0, 1, 4, 1_000, 16_383] {
            assert_eq!(
                MaglevTable::build(&backends, size).unwrap_err(),
                MaglevError::SizeNotPrime { size }
            );
        }
        assert_eq!(
            MaglevTable::build(&backends, 7).unwrap_err(),
            MaglevError::SizeTooSmall {
                size: 7,
                backends: 10,
                min_ratio: 1
            }
        );
        assert_eq!(
            MaglevTable::build(&backends, 4_294_967_291).unwrap_err(),
            MaglevError::SizeTooLarge {
                size: 4_294_967_291,
                max: MAX_SIZE
            }
        );
        let too_many = vec![pod(1); MAX_BACKENDS + 1];
        assert_eq!(
            MaglevTable::build(&too_many, MAX_SIZE).unwrap_err(),
            MaglevError::TooManyBackends {
                backends: MAX_BACKENDS + 1,
                max: MAX_BACKENDS
            }
        );
        // Error messages say what to do.
        let message = MaglevError::SizeNotPrime { size: 4 }.to_string();
        assert!(message.contains("size_for"), "{message}");
    }

    #[test]
    fn tiny_tables_work() {
        let one = MaglevTable::build(&pods(1), 2).unwrap();
        assert_eq!(
            (one.lookup(0), one.lookup(1), one.lookup(u64::MAX)),
            (0, 0, 0)
        );
        let full = MaglevTable::build(&pods(3), 3).unwrap();
        let mut seen: Vec<usize> = (0..3).map(|h| full.lookup(h)).collect();
        seen.sort_unstable();
        assert_eq!(seen, [0, 1, 2]);
    }

    #[test]
    fn deterministic_and_order_independent() {
        let backends = pods(100);
        let size = MaglevTable::size_for(100, DEFAULT_MIN_RATIO).unwrap();
        let a = MaglevTable::build(&backends, size).unwrap();
        let b = MaglevTable::build(&backends, size).unwrap();
        assert_eq!(a, b);

        let mut reversed = backends.clone();
        reversed.reverse();
        let r = MaglevTable::build(&reversed, size).unwrap();
        assert_eq!(slot_addrs(&a, &backends), slot_addrs(&r, &reversed));
    }

    /// Pins the table contents across versions and platforms: nodes in a
    /// rolling upgrade must keep agreeing. Changing the hash or the fill order
    /// changes these values; do it only on purpose.
    #[test]
    fn golden_tables() {
        fn fingerprint(table: &MaglevTable) -> u64 {
            (0..u64::from(table.size())).fold(0, |h, slot| {
                h.wrapping_mul(1_000_003) ^ table.lookup(slot) as u64
            })
        }
        let v4 = MaglevTable::build(&pods(5), 251).unwrap();
        let first: Vec<usize> = (0..16).map(|h| v4.lookup(h)).collect();
        assert_eq!(first, [3, 4, 1, 4, 0, 3, 1, 2, 2, 0, 3, 1, 0, 3, 3, 0]);
        assert_eq!(fingerprint(&v4), 12_348_966_472_092_300_252);

        let v6: Vec<SocketAddr> = (0..5u16)
            .map(|i| {
                let ip = Ipv6Addr::new(0xfd00, 0x10, 0x244, 0, 0, 0, 0, 5 + i);
                SocketAddr::V6(SocketAddrV6::new(ip, 443, 0, 0))
            })
            .collect();
        let v6 = MaglevTable::build(&v6, 1_021).unwrap();
        assert_eq!(fingerprint(&v6), 6_113_782_221_760_241_606);
    }

    #[test]
    fn balance_is_floor_or_ceil() {
        for n in [1u32, 2, 7, 10, 100, 333] {
            let backends = pods(n);
            let size = MaglevTable::size_for(n as usize, DEFAULT_MIN_RATIO).unwrap();
            let table = MaglevTable::build(&backends, size).unwrap();
            let mut counts = vec![0u32; n as usize];
            for slot in 0..u64::from(size) {
                counts[table.lookup(slot)] += 1;
            }
            let (floor, ceil) = (size / n, size.div_ceil(n));
            let equal = f64::from(size) / f64::from(n);
            for &count in &counts {
                assert!(count == floor || count == ceil, "n={n} count={count}");
                let deviation = (f64::from(count) - equal).abs() / equal;
                assert!(
                    deviation < 1.0 / f64::from(DEFAULT_MIN_RATIO),
                    "{deviation}"
                );
            }
        }
    }

    #[test]
    fn disruption_100_backends() {
        let backends = pods(100);
        let size = MaglevTable::size_for(100, DEFAULT_MIN_RATIO).unwrap();
        let table = MaglevTable::build(&backends, size).unwrap();
        let before = slot_addrs(&table, &backends);

        let mut worst_remove = 0f64;
        let mut sum_remove = 0f64;
        for removed in 0..backends.len() {
            let mut fewer = backends.clone();
            let gone = fewer.remove(removed);
            assert_eq!(
                MaglevTable::size_for(fewer.len(), DEFAULT_MIN_RATIO),
                Ok(size)
            );
            let after = slot_addrs(&MaglevTable::build(&fewer, size).unwrap(), &fewer);
            let moved = moved_fraction(&before, &after, gone);
            worst_remove = worst_remove.max(moved);
            sum_remove += moved;
        }

        let mut worst_add = 0f64;
        let mut sum_add = 0f64;
        let added_count = 100;
        for added in 0..added_count {
            let mut more = backends.clone();
            let new = pod(1_000 + added);
            more.insert(added as usize, new);
            assert_eq!(
                MaglevTable::size_for(more.len(), DEFAULT_MIN_RATIO),
                Ok(size)
            );
            let after = slot_addrs(&MaglevTable::build(&more, size).unwrap(), &more);
            let moved = moved_fraction(&before, &after, new);
            worst_add = worst_add.max(moved);
            sum_add += moved;
        }
        println!(
            "maglev disruption, 100 backends, {size} slots: remove max {:.3}% mean {:.3}%, \
             add max {:.3}% mean {:.3}%",
            worst_remove * 100.0,
            sum_remove,
            worst_add * 100.0,
            sum_add * 100.0 / f64::from(added_count),
        );
        assert!(worst_remove <= 0.02, "removal moved {worst_remove}");
        assert!(worst_add <= 0.02, "addition moved {worst_add}");
    }

    proptest! {
        #[test]
        fn fast_mod_is_exact(value: u32, divisor in 2u32..) {
            let reciprocal = u64::MAX / u64::from(divisor) + 1;
            prop_assert_eq!(fast_mod(value, reciprocal, divisor), value % divisor);
        }

        #[test]
        fn lookup_in_range(
            n in 1usize..300,
            ratio in 0u32..=100,
            seed: u32,
            hashes in proptest::collection::vec(any::<u64>(), 1..64),
        ) {
            let backends: Vec<SocketAddr> = (0..n as u32)
                .map(|i| pod(seed.wrapping_add(i.wrapping_mul(7_919))))
                .collect();
            let size = MaglevTable::size_for(n, ratio).unwrap();
            let table = MaglevTable::build(&backends, size).unwrap();
            prop_assert_eq!(table.backends(), n);
            prop_assert_eq!(table.size(), size);
            prop_assert_eq!(table.memory_bytes(), size as usize * 2);
            for hash in hashes.into_iter().chain([0, u64::MAX, u64::from(size)]) {
                prop_assert!(table.lookup(hash) < n);
            }
        }
    }

    /// How the worst single-removal disruption depends on the ratio, over
    /// services of 2 to 200 backends (about two minutes in release):
    /// `cargo test --release --lib maglev::tests::disruption_survey -- --ignored --nocapture`
    #[test]
    #[ignore = "survey for choosing the ratio; slow"]
    fn disruption_survey() {
        for ratio in [100u32, 200, 400] {
            let (mut worst_all, mut worst_n) = (0f64, 0);
            for n in 2u32..=200 {
                let backends = pods(n);
                let size = MaglevTable::size_for(n as usize, ratio).unwrap();
                let table = MaglevTable::build(&backends, size).unwrap();
                let before = slot_addrs(&table, &backends);
                for removed in 0..n as usize {
                    let mut fewer = backends.clone();
                    let gone = fewer.remove(removed);
                    let after = slot_addrs(&MaglevTable::build(&fewer, size).unwrap(), &fewer);
                    let moved = moved_fraction(&before, &after, gone);
                    if moved > worst_all {
                        (worst_all, worst_n) = (moved, n);
                    }
                }
            }
            println!(
                "ratio {ratio}: worst removal moves {:.2}% (at {worst_n} backends)",
                worst_all * 100.0
            );
        }
    }
}
