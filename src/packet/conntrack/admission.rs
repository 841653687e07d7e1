//! Who may add an entry when the table is busy: a share of the table per
//! source address, and early drop of unanswered flows when it is full.
//!
//! Without these, one pod sending SYNs from every port to a service fills
//! the whole table with half-open flows that live for two minutes
//! (`nf_conntrack_tcp_timeout_syn_sent`), and every other pod's new
//! connections are refused until they expire.
//!
//! * **Per-source share.** Each entry is charged to the source address of
//!   its original direction (a pod, or a client outside the node). A source
//!   holding its share ([`super::ConnTrackConfig::source_share_percent`] of
//!   the table) gets no more entries; other sources are not affected. The
//!   counts live in a two-row count-min sketch of fixed size (no map, no
//!   allocation, no lock): a source's charge goes to one counter in each
//!   row, chosen by a seeded hash of its address, and it is refused only
//!   when *both* its counters are at the share. Two sources sharing one
//!   counter add up there, so the estimate is never below the truth (a
//!   source never exceeds its share, bar the few entries racing workers add
//!   at the same moment); an innocent pod is refused only if both of its
//!   counters collide with heavy sources, about (heavy sources / 4,096)² —
//!   one in 16 million for a single flooding pod. The seed is per table, so
//!   an outside sender cannot pick addresses that collide.
//! * **Early drop**, as Linux's `early_drop()` in `nf_conntrack_core.c`:
//!   when the table is full, a new flow looks at the chains of its own
//!   bucket and the next ones (up to [`EVICTION_BUCKETS`] buckets,
//!   [`EVICTION_HOOKS`] entries) and takes the place of the first entry
//!   that was never answered (TCP `SYN_SENT`/`SYN_RECV`, UDP/ICMP
//!   unreplied; Linux's "not ASSURED") or is already closed. Established
//!   and replied flows are never dropped early, and neither are records.
//!   Victims are sampled where the hash puts them, so a flood's own entries,
//!   being most of the unanswered ones, are most of the victims.
//!   The packet path cannot unlink (removal belongs to the control thread),
//!   so it *claims* the victim: one atomic OR marks it dead (a worker and a
//!   remover cannot both win), the victim's place in the count and the
//!   share is given to the new flow at once, lookups stop seeing it, and it
//!   is queued for the control thread, which unlinks queued entries at its
//!   next [`super::ConnTrack::reclaim`] (or any later removal pass).
//! * **Near-full eviction**, as Linux's `gc_worker` once a packet-path early
//!   drop has failed: the next sweep also removes unanswered entries while
//!   the table is above 95% of its size.
//!
//! Refusals are the caller's to count ([`super::InsertError`]); evictions
//! are counted here, by [`EvictReason`].

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::PackedKey;

/// Buckets an early drop looks at, from the new flow's own (Linux:
/// `NF_CT_EVICTION_RANGE`).
pub(super) const EVICTION_BUCKETS: usize = 8;
/// Entries (hooks) an early drop looks at, at most: the cost bound of a
/// new flow into a full table.
pub(super) const EVICTION_HOOKS: usize = 16;

/// Counters per sketch row: a power of two.
const WIDTH: usize = 4096;
const ROWS: usize = 2;

/// Why an entry left the table before its timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EvictReason {
    /// A new flow took the place of an unanswered one in a full table
    /// (Linux's `early_drop` statistic).
    EarlyDrop = 0,
    /// A sweep removed an unanswered flow while the table was above 95% of
    /// its size, after a new flow had found no victim.
    NearFull = 1,
}

impl EvictReason {
    /// Every reason, in counter order.
    pub const ALL: [EvictReason; 2] = [EvictReason::EarlyDrop, EvictReason::NearFull];

    /// A short name for metrics and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            EvictReason::EarlyDrop => "early_drop",
            EvictReason::NearFull => "near_full",
        }
    }
}

/// The two counters a source is charged to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ShareSlots([u32; ROWS]);

/// Entries per source (estimated from above), in fixed storage.
pub(super) struct SourceShares {
    counters: Box<[AtomicU32]>,
    limit: u32,
    seed: [u64; 2],
}

impl SourceShares {
    /// A sketch refusing a source once it holds `limit` entries
    /// (`usize::MAX`: never).
    pub(super) fn new(limit: usize, seed: [u64; 2]) -> SourceShares {
        SourceShares {
            counters: (0..ROWS * WIDTH).map(|_| AtomicU32::new(0)).collect(),
            limit: limit.clamp(1, u32::MAX as usize) as u32,
            seed,
        }
    }

    /// Heap bytes of the counters.
    pub(super) fn bytes(&self) -> usize {
        self.counters.len() * std::mem::size_of::<AtomicU32>()
    }

    /// The counters of the source of `key` (its original direction).
    #[inline(always)]
    pub(super) fn slots(&self, key: &PackedKey) -> ShareSlots {
        let w = &key.0;
        let h = super::mix(
            super::mix(w[0] ^ self.seed[0], w[1] ^ self.seed[1]),
            self.seed[0] ^ (w[4] >> 48 & 1),
        );
        let row0 = (h as usize) & (WIDTH - 1);
        let row1 = WIDTH + ((h >> 32) as usize & (WIDTH - 1));
        ShareSlots([row0 as u32, row1 as u32])
    }

    /// Charges one entry to `slots`, unless the source already holds its
    /// share. Reads first, so a source over its share (a flood) costs only
    /// loads of cache lines that stay shared.
    #[inline(always)]
    pub(super) fn try_charge(&self, slots: ShareSlots) -> bool {
        let [a, b] = slots.0.map(|i| &self.counters[i as usize]);
        if a.load(Ordering::Relaxed).min(b.load(Ordering::Relaxed)) >= self.limit {
            return false;
        }
        a.fetch_add(1, Ordering::Relaxed);
        b.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Gives back one entry charged to `slots`.
    #[inline]
    pub(super) fn refund(&self, slots: ShareSlots) {
        for i in slots.0 {
            self.counters[i as usize].fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The estimate for the source of `key`: at least what it holds.
    pub(super) fn estimate(&self, key: &PackedKey) -> usize {
        let s = self.slots(key);
        s.0.iter()
            .map(|&i| self.counters[i as usize].load(Ordering::Relaxed))
            .min()
            .unwrap_or(0) as usize
    }

    /// Entries charged in each row (each equals the table's count when no
    /// insert or removal is under way).
    #[cfg(test)]
    pub(super) fn row_totals(&self) -> [u64; ROWS] {
        std::array::from_fn(|r| {
            self.counters[r * WIDTH..(r + 1) * WIDTH]
                .iter()
                .map(|c| u64::from(c.load(Ordering::Relaxed)))
                .sum()
        })
    }
}

/// Evictions, by reason.
#[derive(Default)]
pub(super) struct Evictions([AtomicU64; EvictReason::ALL.len()]);

impl Evictions {
    #[inline]
    pub(super) fn count(&self, reason: EvictReason, n: u64) {
        self.0[reason as usize].fetch_add(n, Ordering::Relaxed);
    }

    pub(super) fn read(&self) -> [u64; EvictReason::ALL.len()] {
        std::array::from_fn(|i| self.0[i].load(Ordering::Relaxed))
    }
}
