//! The sans-IO packet fast path.
//!
//! | module | owns |
//! |---|---|
//! | [`wire`] | zero-copy packet views, checksums (full and RFC 1624 incremental), rewrites, generated replies |
//! | [`conntrack`] | the lock-free connection tracking table |
//! | [`maglev`] | Maglev consistent-hashing lookup tables |
//! | [`service`] | service frontends, backend pools and backend choice |
//! | [`router`] | [`Router::process`]: one packet in, one [`Verdict`] out; snapshots; counters |
//!
//! Nothing here does IO, reads a clock or takes a lock on the packet path:
//! time is an argument ([`Timestamp`]) and the control plane publishes
//! immutable snapshots that workers load atomically.

pub mod conntrack;
pub mod maglev;
pub mod policy;
pub mod router;
pub mod service;
pub mod wire;

pub use router::{DropReason, Link, PacketBuf, PodAddrs, PodId, Router, RouterConfig, Verdict};

/// A point in time, in milliseconds since an epoch the caller chooses (the
/// daemon uses a monotonic clock). The fast path never reads a clock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(u64);

impl Timestamp {
    /// A timestamp `ms` milliseconds after the epoch.
    #[inline]
    pub const fn from_millis(ms: u64) -> Timestamp {
        Timestamp(ms)
    }

    /// A timestamp `s` seconds after the epoch.
    #[inline]
    pub const fn from_secs(s: u64) -> Timestamp {
        Timestamp(s * 1000)
    }

    /// Milliseconds since the epoch.
    #[inline]
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// This time plus `d`.
    #[inline]
    pub fn after(self, d: std::time::Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(d.as_millis() as u64))
    }
}
