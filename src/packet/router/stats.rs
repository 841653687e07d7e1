//! What the router counts: verdicts, drops by [`DropReason`], and the
//! connection tracking table's evictions by [`EvictReason`].
//!
//! Counting is on the packet path, so it costs a plain store into the
//! thread's own cache line ([`Counters`]); reading sums the stripes and
//! may run at any time, from any thread. Everything that turns counts
//! into words (metrics, logs, `podnet stats`) reads [`RouterStats`] on the
//! control side.

use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam::utils::CachePadded;

pub use super::super::conntrack::EvictReason;
use super::{Link, Verdict};

/// Why a packet was dropped. Small and `Copy` so counters index by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DropReason {
    /// Not a valid IPv4/IPv6 packet (bad header, length or checksum).
    Malformed = 0,
    /// A pod sent with a source address that is not its own.
    Spoofed = 1,
    /// The TTL ran out and no ICMP error may be sent about this packet.
    TtlExceeded = 2,
    /// A service with no endpoints, where no RST/ICMP may be sent.
    NoEndpoints = 3,
    /// A service address with no service on this port/protocol, where no
    /// RST/ICMP may be sent.
    NoService = 4,
    /// The connection tracking table is full.
    ConntrackFull = 5,
    /// The flow's reply tuple is already used by another flow.
    ReplyClash = 6,
    /// A later fragment of a datagram whose first fragment was not seen.
    FragmentWithoutFlow = 7,
    /// No route: the packet would go back where it came from.
    NoRoute = 8,
    /// The pod the packet came from is unknown (stale link).
    UnknownPod = 9,
    /// The packet is bigger than the buffer can carry after rewriting.
    TooBig = 10,
    /// The packet's virtio-net header (offloads) cannot be honoured: a
    /// super-packet whose GSO type or size does not fit it, or a partial
    /// checksum that cannot be finished.
    BadOffload = 11,
    /// A new flow from a source that already holds its share of the
    /// connection tracking table (see `ConnTrackConfig::source_share_percent`).
    ConntrackSourceShare = 12,
    /// A packet from outside the node (not from the host itself) to a pod
    /// address or a cluster IP: those are reachable from inside only.
    FromOutside = 13,
    /// A service with `externalTrafficPolicy` or `internalTrafficPolicy`
    /// `Local` has endpoints, but none on this node (kube-proxy drops).
    NoLocalEndpoints = 14,
    /// A new flow the destination pod's NetworkPolicies do not let in.
    PolicyIngress = 15,
    /// A new flow the source pod's NetworkPolicies do not let out.
    PolicyEgress = 16,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 17] = [
        DropReason::Malformed,
        DropReason::Spoofed,
        DropReason::TtlExceeded,
        DropReason::NoEndpoints,
        DropReason::NoService,
        DropReason::ConntrackFull,
        DropReason::ReplyClash,
        DropReason::FragmentWithoutFlow,
        DropReason::NoRoute,
        DropReason::UnknownPod,
        DropReason::TooBig,
        DropReason::BadOffload,
        DropReason::ConntrackSourceShare,
        DropReason::FromOutside,
        DropReason::NoLocalEndpoints,
        DropReason::PolicyIngress,
        DropReason::PolicyEgress,
    ];

    /// A short name for metrics and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::Spoofed => "spoofed",
            DropReason::TtlExceeded => "ttl_exceeded",
            DropReason::NoEndpoints => "no_endpoints",
            DropReason::NoService => "no_service",
            DropReason::ConntrackFull => "conntrack_full",
            DropReason::ReplyClash => "reply_clash",
            DropReason::FragmentWithoutFlow => "fragment_without_flow",
            DropReason::NoRoute => "no_route",
            DropReason::UnknownPod => "unknown_pod",
            DropReason::TooBig => "too_big",
            DropReason::BadOffload => "bad_offload",
            DropReason::ConntrackSourceShare => "conntrack_source_share",
            DropReason::FromOutside => "from_outside",
            DropReason::NoLocalEndpoints => "no_local_endpoints",
            DropReason::PolicyIngress => "policy_ingress",
            DropReason::PolicyEgress => "policy_egress",
        }
    }

    /// `dropped.<name>`, as [`RouterStats::by_reason`] lists it.
    pub fn qualified_name(self) -> &'static str {
        match self {
            DropReason::Malformed => "dropped.malformed",
            DropReason::Spoofed => "dropped.spoofed",
            DropReason::TtlExceeded => "dropped.ttl_exceeded",
            DropReason::NoEndpoints => "dropped.no_endpoints",
            DropReason::NoService => "dropped.no_service",
            DropReason::ConntrackFull => "dropped.conntrack_full",
            DropReason::ReplyClash => "dropped.reply_clash",
            DropReason::FragmentWithoutFlow => "dropped.fragment_without_flow",
            DropReason::NoRoute => "dropped.no_route",
            DropReason::UnknownPod => "dropped.unknown_pod",
            DropReason::TooBig => "dropped.too_big",
            DropReason::BadOffload => "dropped.bad_offload",
            DropReason::ConntrackSourceShare => "dropped.conntrack_source_share",
            DropReason::FromOutside => "dropped.from_outside",
            DropReason::NoLocalEndpoints => "dropped.no_local_endpoints",
            DropReason::PolicyIngress => "dropped.policy_ingress",
            DropReason::PolicyEgress => "dropped.policy_egress",
        }
    }
}

/// Counts of verdicts, readable at any time without locks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouterStats {
    /// Packets forwarded to a pod.
    pub forwarded_to_pod: u64,
    /// Packets forwarded to the host side.
    pub forwarded_to_host: u64,
    /// Generated replies (RST, ICMP errors).
    pub replies: u64,
    /// Drops, by reason (index = `DropReason as usize`).
    pub drops: [u64; DropReason::ALL.len()],
    /// Connection tracking entries evicted before their timeout, by
    /// reason (index = `EvictReason as usize`).
    pub evictions: [u64; EvictReason::ALL.len()],
}

impl RouterStats {
    /// Drops for one reason.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }

    /// Evictions for one reason.
    pub fn evicted(&self, reason: EvictReason) -> u64 {
        self.evictions[reason as usize]
    }

    /// Every counter by reason, as `(name, count)`, zeros included, in a
    /// fixed order: drops as `dropped.<reason>` (every [`DropReason`]),
    /// then evictions as `evicted.<reason>` (every [`EvictReason`]). For
    /// `podnet stats` and the drop log.
    pub fn by_reason(&self) -> Vec<(&'static str, u64)> {
        let drops = DropReason::ALL
            .iter()
            .map(|&r| (r.qualified_name(), self.dropped(r)));
        let evictions = EvictReason::ALL
            .iter()
            .map(|&r| (evict_qualified_name(r), self.evicted(r)));
        drops.chain(evictions).collect()
    }
}

/// `evicted.<reason>`.
fn evict_qualified_name(r: EvictReason) -> &'static str {
    match r {
        EvictReason::EarlyDrop => "evicted.early_drop",
        EvictReason::NearFull => "evicted.near_full",
    }
}

const COUNTERS: usize = 3 + DropReason::ALL.len();
/// Threads beyond this many share stripes (and pay for atomic adds).
const STRIPES: usize = 64;

/// Verdict counters, one cache line per thread: a worker thread owns its
/// stripe, so it counts with a plain load and store (no locked
/// instruction); readers sum the stripes.
pub(super) struct Counters {
    stripes: Box<[CachePadded<[AtomicU64; COUNTERS]>]>,
}

thread_local! {
    /// This thread's stripe, and whether it has it to itself.
    pub(super) static STRIPE: (usize, bool) = {
        use std::sync::atomic::AtomicUsize;
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        (n % STRIPES, n < STRIPES)
    };
}

impl Counters {
    pub(super) fn new() -> Counters {
        Counters {
            stripes: (0..STRIPES)
                .map(|_| CachePadded::new(std::array::from_fn(|_| AtomicU64::new(0))))
                .collect(),
        }
    }

    #[inline(always)]
    pub(super) fn count(&self, (stripe, exclusive): (usize, bool), v: Verdict) {
        let i = match v {
            Verdict::Forward(Link::Pod(_)) => 0,
            Verdict::Forward(Link::Host) => 1,
            Verdict::Reply => 2,
            Verdict::Drop(r) => 3 + r as usize,
        };
        let c = &self.stripes[stripe][i];
        if exclusive {
            c.store(c.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
        } else {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(super) fn read(&self) -> RouterStats {
        let sum = |i: usize| {
            self.stripes
                .iter()
                .map(|s| s[i].load(Ordering::Relaxed))
                .sum()
        };
        let mut st = RouterStats {
            forwarded_to_pod: sum(0),
            forwarded_to_host: sum(1),
            replies: sum(2),
            ..RouterStats::default()
        };
        for (i, d) in st.drops.iter_mut().enumerate() {
            *d = sum(3 + i);
        }
        st
    }
}
