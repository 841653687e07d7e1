//! Connection tracking: the table of translated flows.
//!
//! Every flow is stored once and hooked into the hash table twice, under the
//! 5-tuple of each direction (as Linux conntrack's two tuple hashes), so a
//! packet finds its flow whichever way it travels.
//!
//! Concurrency: lookups and inserts are lock-free and run on every worker
//! thread; removal (expiry in [`ConnTrack::sweep`], backend teardown) is done
//! by one control thread at a time under a control-plane mutex. That split is
//! what keeps the chains simple and correct:
//! * an insert only ever compare-and-swaps a bucket head;
//! * a removal swaps a bucket head or stores into the `next` link of a
//!   predecessor, which no other thread writes;
//! * unlinked flows are reused once no reader can still hold them, and an
//!   unlinked flow keeps its `next` links, so a reader standing on it walks on
//!   safely.
//!
//! Storage and reclamation: entries live in a fixed [`slab`] allocated with
//! the table, so a new flow never calls the allocator. A removal pass (a
//! sweep, a teardown) retires what it unlinked as one batch and hands
//! crossbeam's epoch GC a single deferred function per batch, which only
//! marks the batch safe; the next removal pass recycles the batches marked
//! so far, on the control thread. One deferred function per entry would not
//! keep up: the GC runs a few hundred deferred functions per collection and
//! collects every 128th pin, so under churn (thousands of new flows a
//! second, swept as they expire) unreclaimed entries would pile up.
//!
//! Chain pointers are tagged with the direction of the hook they point to
//! (bit 0: original or reply), so one pointer names "this flow, this side".
//!
//! A bucket is one 64-bit word: the head hook (slab index and direction)
//! and a 16-bit summary of the chain, one bit per hook chosen by its key's
//! hash (a one-hash Bloom filter). Both change in the same compare-and-swap,
//! so the summary always covers every hook in the chain; a lookup whose bit
//! is clear is a miss without touching an entry. That matters most for a
//! new flow: its two lookups miss, and walking a chain there would cost a
//! cache miss per entry.
//!
//! Expiry never happens on the packet path; timeouts follow the Linux
//! conntrack defaults (`nf_conntrack_tcp_timeout_*`, `nf_conntrack_udp_*`).
//!
//! Admission under pressure (a share of the table per source, early drop
//! of unanswered flows when it is full) is in [`admission`].

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam::epoch::{self, Atomic, Guard, Shared};
use crossbeam::queue::ArrayQueue;
use parking_lot::Mutex;

pub use self::admission::EvictReason;
use self::admission::{Evictions, ShareSlots, SourceShares, EVICTION_BUCKETS, EVICTION_HOOKS};
use self::slab::Slab;
use super::Timestamp;
use crate::packet::wire::TcpFlags;

/// IP protocol numbers the tracker knows by name.
pub mod proto {
    /// Internet Control Message Protocol (IPv4).
    pub const ICMP: u8 = 1;
    /// Transmission Control Protocol.
    pub const TCP: u8 = 6;
    /// User Datagram Protocol.
    pub const UDP: u8 = 17;
    /// ICMP for IPv6.
    pub const ICMPV6: u8 = 58;
}

/// What a table entry tracks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EntryKind {
    /// A translated connection (TCP, UDP, ICMP echo).
    Flow = 0,
    /// A ClientIP session-affinity record: client -> service frontend pinned
    /// to one backend.
    Affinity = 1,
    /// The translation of a fragmented datagram, so its later fragments
    /// (which carry no ports) follow the first one.
    Fragment = 2,
}

/// One direction of a flow as seen on the wire: the 5-tuple plus what the
/// key identifies. For ICMP echo the identifier stands in for both ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port (TCP/UDP), echo identifier, or the high half of a fragment id.
    pub src_port: u16,
    /// Destination port (TCP/UDP), echo identifier, or the low half of a fragment id.
    pub dst_port: u16,
    /// IP protocol number.
    pub protocol: u8,
    /// What the key identifies.
    pub kind: EntryKind,
}

impl FlowKey {
    /// The key of the opposite direction: addresses and ports swapped.
    #[inline]
    pub fn reversed(&self) -> FlowKey {
        FlowKey {
            src: self.dst,
            dst: self.src,
            src_port: self.dst_port,
            dst_port: self.src_port,
            protocol: self.protocol,
            kind: self.kind,
        }
    }

    /// The packed form the table stores and compares.
    #[inline]
    pub fn pack(&self) -> PackedKey {
        let (s, fs) = addr_bits(self.src);
        let (d, fd) = addr_bits(self.dst);
        PackedKey([
            s as u64,
            (s >> 64) as u64,
            d as u64,
            (d >> 64) as u64,
            PackedKey::meta(
                self.src_port,
                self.dst_port,
                self.protocol,
                self.kind,
                fs | fd << 1,
            ),
        ])
    }
}

/// An address as a packed key stores it (IPv4 in the low 32 bits) and its
/// family bit (1 for IPv6).
#[inline(always)]
fn addr_bits(a: IpAddr) -> (u128, u64) {
    match a {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)), 0),
        IpAddr::V6(v6) => (u128::from(v6), 1),
    }
}

/// A [`FlowKey`] as five machine words: source, destination (128 bits each;
/// IPv4 in the low 32 bits), then ports, protocol, kind and address
/// families. Comparing and hashing it is a handful of instructions, which is
/// why the table stores keys this way.
#[derive(Clone, Copy, Debug, Eq)]
pub struct PackedKey([u64; 5]);

impl PartialEq for PackedKey {
    /// Word by word: the derived comparison of the array calls `memcmp`.
    #[inline(always)]
    fn eq(&self, other: &PackedKey) -> bool {
        let (a, b) = (&self.0, &other.0);
        ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4])) == 0
    }
}

impl PackedKey {
    #[inline(always)]
    fn meta(src_port: u16, dst_port: u16, protocol: u8, kind: EntryKind, families: u64) -> u64 {
        u64::from(src_port)
            | u64::from(dst_port) << 16
            | u64::from(protocol) << 32
            | (kind as u64) << 40
            | families << 48
    }

    /// The key of an IPv4 TCP/UDP flow direction, built straight from the
    /// header fields (the IPv4 fast path).
    #[inline(always)]
    pub fn v4_flow(src: u32, dst: u32, src_port: u16, dst_port: u16, protocol: u8) -> PackedKey {
        PackedKey([
            u64::from(src),
            0,
            u64::from(dst),
            0,
            PackedKey::meta(src_port, dst_port, protocol, EntryKind::Flow, 0),
        ])
    }

    /// The reply key of this (original) flow key once translated to
    /// `backend`: the backend answers the client from its own address and
    /// port. When the client is the backend itself (hairpin), the reply
    /// goes to the original destination instead, as the client's source
    /// is rewritten to it (a kernel drops a packet from its own address to
    /// itself).
    #[inline(always)]
    pub fn nat_reply(&self, backend: SocketAddr) -> PackedKey {
        let (bits, b_v6) = addr_bits(backend.ip());
        let (b, b_hi) = (bits as u64, (bits >> 64) as u64);
        let fam = self.0[4] >> 48;
        let (src_v6, dst_v6) = (fam & 1, fam >> 1 & 1);
        let hairpin = b == self.0[0] && b_hi == self.0[1] && b_v6 == src_v6;
        let (c, c_hi, c_v6) = if hairpin {
            (self.0[2], self.0[3], dst_v6)
        } else {
            (self.0[0], self.0[1], src_v6)
        };
        PackedKey([
            b,
            b_hi,
            c,
            c_hi,
            PackedKey::meta(
                backend.port(),
                self.src_port(),
                self.protocol(),
                EntryKind::Flow,
                b_v6 | c_v6 << 1,
            ),
        ])
    }

    /// The same key with another destination port.
    #[inline(always)]
    pub fn with_dst_port(mut self, port: u16) -> PackedKey {
        self.0[4] = (self.0[4] & !0xffff_0000) | u64::from(port) << 16;
        self
    }

    /// The same key with another destination address and port (source NAT
    /// seen from the reply side: the peer answers the node's address).
    #[inline(always)]
    pub fn with_dst(mut self, dst: IpAddr, port: u16) -> PackedKey {
        let (bits, v6) = addr_bits(dst);
        self.0[2] = bits as u64;
        self.0[3] = (bits >> 64) as u64;
        self.0[4] = (self.0[4] & !(0xffff_0000 | 2 << 48)) | u64::from(port) << 16 | v6 << 49;
        self
    }

    /// The same key with both ports set to `port` (an ICMP echo key, whose
    /// identifier stands in for both ports).
    #[inline(always)]
    pub fn with_ports(mut self, port: u16) -> PackedKey {
        self.0[4] = (self.0[4] & !0xffff_ffff) | u64::from(port) | u64::from(port) << 16;
        self
    }

    /// Whether both addresses are IPv4.
    #[inline(always)]
    pub fn is_v4(&self) -> bool {
        self.0[4] >> 48 == 0
    }

    /// Source address bits (an IPv4 address in the low 32 bits).
    #[inline(always)]
    pub fn src_bits(&self) -> u128 {
        u128::from(self.0[0]) | u128::from(self.0[1]) << 64
    }

    /// Destination address bits.
    #[inline(always)]
    pub fn dst_bits(&self) -> u128 {
        u128::from(self.0[2]) | u128::from(self.0[3]) << 64
    }

    /// Source port.
    #[inline(always)]
    pub fn src_port(&self) -> u16 {
        self.0[4] as u16
    }

    /// Destination port.
    #[inline(always)]
    pub fn dst_port(&self) -> u16 {
        (self.0[4] >> 16) as u16
    }

    /// IP protocol number.
    #[inline(always)]
    pub fn protocol(&self) -> u8 {
        (self.0[4] >> 32) as u8
    }

    /// The readable form.
    pub fn unpack(&self) -> FlowKey {
        let fam = self.0[4] >> 48;
        let addr = |bits: u128, v6: bool| -> IpAddr {
            if v6 {
                IpAddr::V6(bits.into())
            } else {
                IpAddr::V4((bits as u32).into())
            }
        };
        let kind = match (self.0[4] >> 40) as u8 {
            1 => EntryKind::Affinity,
            2 => EntryKind::Fragment,
            _ => EntryKind::Flow,
        };
        FlowKey {
            src: addr(self.src_bits(), fam & 1 != 0),
            dst: addr(self.dst_bits(), fam & 2 != 0),
            src_port: self.src_port(),
            dst_port: self.dst_port(),
            protocol: (self.0[4] >> 32) as u8,
            kind,
        }
    }
}

/// A packed key with its hash under one table's seed, so the several steps
/// of a new flow (prefetch, lookup, insert) hash it once.
#[derive(Clone, Copy, Debug)]
pub struct HashedKey {
    key: PackedKey,
    hash: u64,
    /// The table whose seed made `hash` ([`ConnTrack::hashed`]); another
    /// table's hash would put the key in the wrong bucket.
    table: u32,
}

impl HashedKey {
    /// The key.
    #[inline(always)]
    pub fn key(&self) -> &PackedKey {
        &self.key
    }
}

/// A new flow's entry in packed form ([`ConnTrack::insert_packed`]).
#[derive(Clone, Copy, Debug)]
pub struct PackedEntry {
    /// Key of the initiator's direction, as [`ConnTrack::hashed`] made it
    /// (a key hashed by another table is hashed again).
    pub original: HashedKey,
    /// Key of the reply direction (for records: the value they hold).
    pub reply: PackedKey,
    /// Whether the reply key is hooked into the table.
    pub hook_reply: bool,
    /// Initial state.
    pub state: FlowState,
    /// Timeout for [`FlowState::Record`] entries, in milliseconds.
    pub record_timeout_ms: u64,
    /// Opaque number kept with the entry.
    pub tag: u32,
}

/// Flow hashing with a per-table random seed, so a remote peer cannot aim
/// many flows at one bucket.
#[derive(Clone)]
pub(crate) struct FlowHasher {
    k: [u64; 4],
}

impl FlowHasher {
    pub(crate) fn random() -> Self {
        let s = ahash::RandomState::new();
        let k = [
            s.hash_one(0x5157_u64) | 1,
            s.hash_one(0x7a11_u64) | 1,
            s.hash_one(0x1f3d_u64),
            s.hash_one(0x9e37_u64),
        ];
        FlowHasher { k }
    }

    pub(crate) fn fixed(seed: u64) -> Self {
        let s = ahash::RandomState::with_seeds(seed, seed ^ 0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e);
        FlowHasher {
            k: [
                s.hash_one(1_u64) | 1,
                s.hash_one(2_u64) | 1,
                s.hash_one(3_u64),
                s.hash_one(4_u64),
            ],
        }
    }

    /// A multiply-fold hash over the packed key (folded 128-bit products, as
    /// in wyhash): a handful of cycles, and well mixed in every output bit.
    #[inline]
    pub(crate) fn hash(&self, key: &FlowKey) -> u64 {
        self.hash_packed(&key.pack())
    }

    /// [`Self::hash`] of a packed key.
    #[inline(always)]
    pub(crate) fn hash_packed(&self, key: &PackedKey) -> u64 {
        let w = &key.0;
        let a = mix(w[0] ^ self.k[0], w[1] ^ self.k[1]);
        let b = mix(w[2] ^ self.k[2], w[3] ^ self.k[3]);
        mix(a ^ w[4], b ^ self.k[0])
    }

    /// Hash of an address alone (ClientIP affinity spreads by client).
    #[inline]
    pub(crate) fn hash_addr(&self, addr: IpAddr) -> u64 {
        let key = FlowKey {
            src: addr,
            dst: addr,
            src_port: 0,
            dst_port: 0,
            protocol: 0,
            kind: EntryKind::Affinity,
        };
        self.hash(&key)
    }
}

#[inline]
fn mix(a: u64, b: u64) -> u64 {
    let r = u128::from(a).wrapping_mul(u128::from(b));
    (r as u64) ^ ((r >> 64) as u64)
}

/// Tracked state of a flow; decides its timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FlowState {
    /// TCP: SYN seen from the client.
    SynSent = 0,
    /// TCP: SYN-ACK seen from the backend.
    SynRecv = 1,
    /// TCP: handshake complete.
    Established = 2,
    /// TCP: one side sent FIN.
    FinWait = 3,
    /// TCP: both sides sent FIN; waiting for the last ACK.
    LastAck = 4,
    /// TCP: both FINs acknowledged.
    TimeWait = 5,
    /// TCP: reset seen.
    Close = 6,
    /// UDP / ICMP: packets seen in one direction only.
    Unreplied = 7,
    /// UDP / ICMP: packets seen in both directions.
    Replied = 8,
    /// A session-affinity or fragment record (fixed timeout).
    Record = 9,
}

impl FlowState {
    fn from_u8(v: u8) -> FlowState {
        match v & STATE_MASK {
            0 => FlowState::SynSent,
            1 => FlowState::SynRecv,
            2 => FlowState::Established,
            3 => FlowState::FinWait,
            4 => FlowState::LastAck,
            5 => FlowState::TimeWait,
            6 => FlowState::Close,
            7 => FlowState::Unreplied,
            8 => FlowState::Replied,
            _ => FlowState::Record,
        }
    }

    /// The name `conntrack -L` uses for this state.
    pub fn name(self) -> &'static str {
        match self {
            FlowState::SynSent => "SYN_SENT",
            FlowState::SynRecv => "SYN_RECV",
            FlowState::Established => "ESTABLISHED",
            FlowState::FinWait => "FIN_WAIT",
            FlowState::LastAck => "LAST_ACK",
            FlowState::TimeWait => "TIME_WAIT",
            FlowState::Close => "CLOSE",
            FlowState::Unreplied => "UNREPLIED",
            FlowState::Replied => "ASSURED",
            FlowState::Record => "RECORD",
        }
    }
}

/// Low bits of the state byte hold the [`FlowState`]; the two high bits
/// remember a FIN seen from each side; [`DEAD`] and [`QUEUED`] mark an
/// entry whose removal has begun.
const STATE_MASK: u8 = 0x0f;
/// The entry no longer counts: a remover or an early drop claimed it (one
/// atomic OR, so exactly one of them gives its place back). Lookups pass
/// it by; it is unlinked by the control thread.
const DEAD: u8 = 0x20;
/// A dead entry waiting in the early-drop queue: only the queue's drain
/// unlinks it (so the queued slab index still names this entry when the
/// drain comes).
const QUEUED: u8 = 0x10;
const HOOKS_REPLY: u8 = 1;
const HOOKS_DONE: u8 = 2;
const FIN_ORIGINAL: u8 = 0x40;
const FIN_REPLY: u8 = 0x80;

/// Timeouts per state. Defaults are the Linux conntrack sysctl defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// `nf_conntrack_tcp_timeout_syn_sent` (120 s).
    pub tcp_syn_sent: Duration,
    /// `nf_conntrack_tcp_timeout_syn_recv` (60 s).
    pub tcp_syn_recv: Duration,
    /// `nf_conntrack_tcp_timeout_established` (5 days).
    pub tcp_established: Duration,
    /// `nf_conntrack_tcp_timeout_fin_wait` (120 s).
    pub tcp_fin_wait: Duration,
    /// `nf_conntrack_tcp_timeout_last_ack` (30 s).
    pub tcp_last_ack: Duration,
    /// `nf_conntrack_tcp_timeout_time_wait` (120 s).
    pub tcp_time_wait: Duration,
    /// `nf_conntrack_tcp_timeout_close` (10 s).
    pub tcp_close: Duration,
    /// `nf_conntrack_udp_timeout` (30 s): one direction seen.
    pub udp_unreplied: Duration,
    /// `nf_conntrack_udp_timeout_stream` (120 s): both directions seen.
    pub udp_replied: Duration,
    /// `nf_conntrack_icmp_timeout` (30 s).
    pub icmp: Duration,
    /// `ipfrag_time` (30 s): how long later fragments may follow a first one.
    pub fragment: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        let s = Duration::from_secs;
        Timeouts {
            tcp_syn_sent: s(120),
            tcp_syn_recv: s(60),
            tcp_established: s(432_000),
            tcp_fin_wait: s(120),
            tcp_last_ack: s(30),
            tcp_time_wait: s(120),
            tcp_close: s(10),
            udp_unreplied: s(30),
            udp_replied: s(120),
            icmp: s(30),
            fragment: s(30),
        }
    }
}

/// Which side of a flow a packet travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the connection's initiator (the client).
    Original,
    /// From the responder (the backend) back to the initiator.
    Reply,
}

impl Direction {
    #[inline]
    fn tag(self) -> usize {
        match self {
            Direction::Original => 0,
            Direction::Reply => 1,
        }
    }

    #[inline]
    fn from_tag(tag: usize) -> Direction {
        if tag & 1 == 0 {
            Direction::Original
        } else {
            Direction::Reply
        }
    }
}

/// One tracked flow (or record). Shared by reference between workers; the
/// mutable parts are atomics.
pub struct Flow {
    next: [Atomic<Flow>; 2],
    /// Packed keys of the original and reply directions.
    keys: [PackedKey; 2],
    state: AtomicU8,
    /// Insertion progress: [`HOOKS_REPLY`] once the reply hook is in the
    /// table (records have none), [`HOOKS_DONE`] once the inserter has
    /// finished linking. Removers leave an entry alone until it is done, or
    /// a reply hook linked after the removal would point at a reused entry.
    hooks: AtomicU8,
    last_seen_ms: AtomicU64,
    /// For TCP: the next sequence number each side will send, i.e. what the
    /// other side expects; a RST carrying it is accepted (RFC 5961).
    original_next_seq: AtomicU32,
    reply_next_seq: AtomicU32,
    /// Timeout of a record, in milliseconds (flows use [`Timeouts`]).
    record_timeout_ms: u64,
    /// Opaque number the creator attaches (the router stores its service
    /// pool id here).
    tag: u32,
    /// Each hook's bit in its bucket's chain summary (0..16), by direction.
    summary_bit: [u8; 2],
}

impl Flow {
    /// The key of the initiator's direction.
    #[inline]
    pub fn original(&self) -> FlowKey {
        self.keys[0].unpack()
    }

    /// The key of the responder's direction, as the responder sends it.
    #[inline]
    pub fn reply(&self) -> FlowKey {
        self.keys[1].unpack()
    }

    /// The key of `dir`.
    #[inline]
    pub fn key(&self, dir: Direction) -> FlowKey {
        self.keys[dir.tag()].unpack()
    }

    /// The packed key of `dir`.
    #[inline(always)]
    pub fn packed(&self, dir: Direction) -> &PackedKey {
        &self.keys[dir.tag()]
    }

    /// The number the creator attached.
    #[inline]
    pub fn tag(&self) -> u32 {
        self.tag
    }

    /// The tracked state.
    #[inline]
    pub fn state(&self) -> FlowState {
        FlowState::from_u8(self.state.load(Ordering::Relaxed))
    }

    /// When a packet of this flow was last seen.
    #[inline]
    pub fn last_seen(&self) -> Timestamp {
        Timestamp::from_millis(self.last_seen_ms.load(Ordering::Relaxed))
    }

    /// The sequence number a RST to the initiator must carry.
    #[inline]
    pub fn reply_next_seq(&self) -> u32 {
        self.reply_next_seq.load(Ordering::Relaxed)
    }

    /// The sequence number a RST to the responder must carry.
    #[inline]
    pub fn original_next_seq(&self) -> u32 {
        self.original_next_seq.load(Ordering::Relaxed)
    }

    /// Marks the flow as used now. Skips the store when nothing changed at
    /// millisecond resolution, to keep the cache line clean across cores.
    #[inline]
    pub fn touch(&self, now: Timestamp) {
        let ms = now.as_millis();
        if self.last_seen_ms.load(Ordering::Relaxed) < ms {
            self.last_seen_ms.store(ms, Ordering::Relaxed);
        }
    }

    /// Advances the TCP state machine for a segment with `flags` travelling
    /// `dir`, carrying sequence number `seq` and `seg_len` sequence space
    /// (payload + SYN + FIN).
    #[inline]
    pub fn track_tcp(&self, dir: Direction, flags: TcpFlags, seq: u32, seg_len: u32) {
        let next_seq = match dir {
            Direction::Original => &self.original_next_seq,
            Direction::Reply => &self.reply_next_seq,
        };
        let next = seq.wrapping_add(seg_len);
        // Only move forward (mod 2^32) so a retransmission does not rewind
        // what the peer has already been sent.
        let cur = next_seq.load(Ordering::Relaxed);
        if (next.wrapping_sub(cur) as i32) > 0 || flags.contains(TcpFlags::SYN) {
            next_seq.store(next, Ordering::Relaxed);
        }
        let cur = self.state.load(Ordering::Relaxed);
        // The common case: an established flow carrying data or ACKs.
        if cur == FlowState::Established as u8
            && !flags.contains(TcpFlags::SYN)
            && !flags.contains(TcpFlags::FIN)
            && !flags.contains(TcpFlags::RST)
        {
            return;
        }
        if cur & DEAD != 0 {
            return;
        }
        let new = next_tcp_state(cur, dir, flags);
        if new != cur {
            // A lost race only loses one transition, which the next segment
            // of the same kind repeats; state never becomes invalid.
            let _ = self
                .state
                .compare_exchange(cur, new, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// Records a UDP/ICMP packet travelling `dir`.
    #[inline]
    pub fn track_datagram(&self, dir: Direction) {
        if dir == Direction::Reply && self.state.load(Ordering::Relaxed) != FlowState::Replied as u8
        {
            // An exchange, not a store: a dead (evicted) entry stays dead.
            let _ = self.state.compare_exchange(
                FlowState::Unreplied as u8,
                FlowState::Replied as u8,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// Whether the entry was removed or evicted (it may still be linked
    /// until the control thread unlinks it).
    #[inline(always)]
    pub fn is_dead(&self) -> bool {
        self.state.load(Ordering::Relaxed) & DEAD != 0
    }

    /// Marks the entry dead; true for the one caller that did (who then
    /// gives back its place in the count and its source's share).
    #[cfg(test)]
    fn claim(&self) -> bool {
        self.state.fetch_or(DEAD, Ordering::AcqRel) & DEAD == 0
    }

    /// Claims the entry for a removal pass: `None` if it is queued for the
    /// drain (which alone unlinks it), else whether this call marked it
    /// dead (and so gives its place back) rather than an earlier one.
    #[inline]
    fn claim_for_removal(&self) -> Option<bool> {
        let mut cur = self.state.load(Ordering::Acquire);
        loop {
            if cur & QUEUED != 0 {
                return None;
            }
            if cur & DEAD != 0 {
                return Some(false);
            }
            match self.state.compare_exchange_weak(
                cur,
                cur | DEAD,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(true),
                Err(now) => cur = now,
            }
        }
    }

    /// Claims the entry for the drain if its state byte passes `may`:
    /// marks it dead and queued. An exchange from the state judged, so an
    /// entry whose state moved meanwhile (a flow answered) is not claimed.
    #[inline]
    fn claim_for_drain(&self, may: impl Fn(u8) -> bool) -> bool {
        let cur = self.state.load(Ordering::Acquire);
        may(cur)
            && self
                .state
                .compare_exchange(
                    cur,
                    cur | DEAD | QUEUED,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    /// Claims the entry for an early drop if it may be dropped early (see
    /// [`early_droppable`]).
    #[inline]
    fn claim_for_early_drop(&self) -> bool {
        self.claim_for_drain(early_droppable)
    }

    /// Claims a finished entry (CLOSE or TIME_WAIT, not dead) for the
    /// drain, as an early drop does: a new SYN opens its tuple again.
    #[inline]
    fn claim_finished(&self) -> bool {
        self.claim_for_drain(|s| {
            s & DEAD == 0
                && matches!(
                    FlowState::from_u8(s),
                    FlowState::Close | FlowState::TimeWait
                )
        })
    }

    /// Whether the entry may make room for a new flow (see
    /// [`early_droppable`]).
    pub fn can_early_drop(&self) -> bool {
        early_droppable(self.state.load(Ordering::Relaxed))
    }

    fn protocol(&self) -> u8 {
        (self.keys[0].0[4] >> 32) as u8
    }

    fn timeout_ms(&self, t: &Timeouts) -> u64 {
        let d = match self.state() {
            FlowState::SynSent => t.tcp_syn_sent,
            FlowState::SynRecv => t.tcp_syn_recv,
            FlowState::Established => t.tcp_established,
            FlowState::FinWait => t.tcp_fin_wait,
            FlowState::LastAck => t.tcp_last_ack,
            FlowState::TimeWait => t.tcp_time_wait,
            FlowState::Close => t.tcp_close,
            FlowState::Unreplied if is_icmp(self.protocol()) => t.icmp,
            FlowState::Replied if is_icmp(self.protocol()) => t.icmp,
            FlowState::Unreplied => t.udp_unreplied,
            FlowState::Replied => t.udp_replied,
            FlowState::Record => return self.record_timeout_ms,
        };
        d.as_millis() as u64
    }

    /// Whether the flow has been idle longer than its state allows (or is
    /// dead already).
    pub fn is_expired(&self, now: Timestamp, timeouts: &Timeouts) -> bool {
        self.is_dead()
            || now
                .as_millis()
                .saturating_sub(self.last_seen_ms.load(Ordering::Relaxed))
                > self.timeout_ms(timeouts)
    }
}

/// Whether an entry in state byte `s` may be dropped early: never
/// answered (Linux: not ASSURED) or already closed, and not dead. Records
/// (affinity, fragments) never are: they are not flows.
#[inline(always)]
fn early_droppable(s: u8) -> bool {
    s & DEAD == 0
        && matches!(
            FlowState::from_u8(s),
            FlowState::SynSent
                | FlowState::SynRecv
                | FlowState::Unreplied
                | FlowState::Close
                | FlowState::TimeWait
        )
}

fn is_icmp(protocol: u8) -> bool {
    protocol == proto::ICMP || protocol == proto::ICMPV6
}

/// The TCP transition function (a compact version of Linux's
/// `tcp_conntracks` table; sequence windows are not checked).
fn next_tcp_state(cur: u8, dir: Direction, flags: TcpFlags) -> u8 {
    let fins = cur & (FIN_ORIGINAL | FIN_REPLY);
    let state = FlowState::from_u8(cur);
    if flags.contains(TcpFlags::RST) {
        return FlowState::Close as u8;
    }
    let with = |s: FlowState, f: u8| s as u8 | f;
    if flags.contains(TcpFlags::SYN) {
        return match (state, dir, flags.contains(TcpFlags::ACK)) {
            (FlowState::SynSent, Direction::Reply, true) => with(FlowState::SynRecv, 0),
            // A new SYN on a closed or closing tuple reopens it (port reuse).
            (FlowState::Close | FlowState::TimeWait, Direction::Original, false) => {
                with(FlowState::SynSent, 0)
            }
            _ => cur,
        };
    }
    if flags.contains(TcpFlags::FIN) {
        let fins = fins
            | match dir {
                Direction::Original => FIN_ORIGINAL,
                Direction::Reply => FIN_REPLY,
            };
        return match state {
            FlowState::Close | FlowState::TimeWait => cur,
            _ if fins == FIN_ORIGINAL | FIN_REPLY => with(FlowState::LastAck, fins),
            _ => with(FlowState::FinWait, fins),
        };
    }
    if flags.contains(TcpFlags::ACK) {
        return match (state, dir) {
            (FlowState::SynRecv, Direction::Original) => with(FlowState::Established, fins),
            (FlowState::LastAck, _) => with(FlowState::TimeWait, fins),
            _ => cur,
        };
    }
    cur
}

/// Why a flow could not be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InsertError {
    /// The table holds its configured maximum number of entries; raise
    /// `max_entries` or shorten timeouts.
    #[error(
        "connection tracking table is full ({max} entries); raise the limit or shorten timeouts"
    )]
    TableFull {
        /// The configured maximum.
        max: usize,
    },
    /// Another flow already answers to this flow's reply tuple (the same
    /// client port reaches one backend both directly and through a service).
    #[error("another tracked flow already uses this reply tuple")]
    ReplyClash,
    /// The flow's source already holds its share of the table; raise
    /// `source_share_percent` if one client legitimately needs more.
    #[error(
        "this source already holds its share of the connection tracking table ({limit} entries)"
    )]
    SourceShareExceeded {
        /// The most entries one source may hold.
        limit: usize,
    },
}

/// Sizing and timeouts of a [`ConnTrack`] table.
#[derive(Clone, Copy, Debug)]
pub struct ConnTrackConfig {
    /// Maximum number of entries (flows and records); new ones beyond it are
    /// refused and counted. Linux's `nf_conntrack_max` is of this order.
    pub max_entries: usize,
    /// Per-state timeouts.
    pub timeouts: Timeouts,
    /// The share of `max_entries` one source address (a pod, or a client
    /// beyond the node) may hold, in percent (1 to 100; 100: no limit
    /// below the table's). Default 25: one pod flooding SYNs fills a
    /// quarter of the table and the other three quarters stay for
    /// everyone else; a legitimate client needing more (a proxy opening
    /// tens of thousands of upstream connections) needs it raised.
    pub source_share_percent: u8,
}

impl Default for ConnTrackConfig {
    fn default() -> Self {
        ConnTrackConfig {
            max_entries: 262_144,
            timeouts: Timeouts::default(),
            source_share_percent: 25,
        }
    }
}

impl ConnTrackConfig {
    /// The most entries one source may hold.
    pub fn max_per_source(&self) -> usize {
        let percent = usize::from(self.source_share_percent.clamp(1, 100));
        (self.max_entries / 100 * percent + self.max_entries % 100 * percent / 100).max(1)
    }
}

/// What a new entry should hold.
#[derive(Clone, Copy, Debug)]
pub struct NewEntry {
    /// Key of the initiator's direction.
    pub original: FlowKey,
    /// Key of the reply direction (for records: the value they hold).
    pub reply: FlowKey,
    /// Whether the reply key is hooked into the table (flows) or only
    /// stored (records, found from the original side alone).
    pub hook_reply: bool,
    /// Initial state.
    pub state: FlowState,
    /// Timeout for [`FlowState::Record`] entries.
    pub record_timeout: Duration,
    /// Opaque number kept with the entry.
    pub tag: u32,
}

/// A copy of one entry's public facts, for listing (`podnet conntrack list`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowSummary {
    /// Key of the initiator's direction.
    pub original: FlowKey,
    /// Key of the reply direction.
    pub reply: FlowKey,
    /// Tracked state.
    pub state: FlowState,
    /// Last packet time.
    pub last_seen: Timestamp,
    /// The creator's tag.
    pub tag: u32,
    /// Next sequence number the initiator will send (TCP).
    pub original_next_seq: u32,
    /// Next sequence number the responder will send (TCP).
    pub reply_next_seq: u32,
}

/// A flow removed by [`ConnTrack::remove_where`], with what is needed to
/// tell its initiator.
pub type RemovedFlow = FlowSummary;

/// The connection tracking table.
pub struct ConnTrack {
    /// Bucket words: head hook and chain summary (see the module docs).
    buckets: Box<[AtomicU64]>,
    mask: usize,
    hasher: FlowHasher,
    count: AtomicUsize,
    config: ConnTrackConfig,
    /// Serialises removals (sweeps and teardown) and holds what they
    /// unlinked until it can be recycled; never taken by workers.
    removal: Mutex<Retired>,
    /// Entries unlinked but not yet recycled (a copy of the count in
    /// `removal`, readable without the lock).
    retired: AtomicUsize,
    /// Where entries live.
    slab: Slab,
    /// Tells this table's [`HashedKey`]s from other tables'.
    id: u32,
    /// Entries held per source address (see [`admission`]).
    shares: SourceShares,
    /// Entries early-dropped by workers, for the control thread to unlink.
    dead: ArrayQueue<u32>,
    /// Set when a new flow found the table full and nothing to drop
    /// early: the next sweep evicts unanswered entries above 95%.
    pressure: AtomicBool,
    evictions: Evictions,
}

/// Bucket word: slab index + 1 of the head hook (0: empty chain).
const HEAD_INDEX: u64 = 0xffff_ffff;
/// Bucket word: the head hook is a reply hook.
const HEAD_REPLY: u64 = 1 << 32;
/// Bucket word: the chain summary, 16 bits from here.
const SUMMARY_SHIFT: u32 = 48;
const SUMMARY: u64 = 0xffff << SUMMARY_SHIFT;

/// A key hash's bit position in its bucket's chain summary.
#[inline(always)]
fn summary_bit(hash: u64) -> u8 {
    (hash >> 60) as u8
}

// Two cache lines per entry; growing it costs memory and a miss per flow.
const _: () = assert!(std::mem::size_of::<Flow>() <= 128);

/// Room for entries beyond `max_entries`: removed entries wait a removal
/// pass or two before they are recycled, and the table should not refuse
/// flows meanwhile.
fn slab_capacity(max_entries: usize) -> usize {
    max_entries.saturating_add(max_entries / 8 + 256)
}

/// Unlinked entries waiting for every reader that could hold them to leave,
/// oldest batch first.
#[derive(Default)]
struct Retired {
    batches: VecDeque<RetiredBatch>,
}

/// The entries (slab indices) one removal pass unlinked.
struct RetiredBatch {
    /// Set by the epoch GC once no guard that could have reached these
    /// entries is still pinned.
    safe: Arc<AtomicBool>,
    entries: Vec<u32>,
}

impl Retired {
    /// Hands every batch the epoch GC has marked safe back to `slab`, with
    /// the entries given back unpublished; returns how many retired
    /// entries that recycled.
    fn recycle_safe(&mut self, slab: &Slab) -> usize {
        let mut safe = Vec::new();
        while let Some(batch) = self.batches.front() {
            if !batch.safe.load(Ordering::Acquire) {
                break;
            }
            safe.push(self.batches.pop_front().expect("front exists").entries);
        }
        let recycled = safe.iter().map(Vec::len).sum();
        // SAFETY: the caller holds the removal lock; each batch holds
        // entries unlinked by one pass, once each, whose epoch-GC flag is
        // set (every guard that could have reached them is gone).
        unsafe { slab.recycle(safe.into_iter().flatten()) };
        recycled
    }
}

/// A found entry and the direction its key matched, valid while both the
/// guard it was found under and the table live.
pub struct Found<'g> {
    /// The entry.
    pub flow: &'g Flow,
    /// The direction the looked-up key matched.
    pub direction: Direction,
}

impl ConnTrack {
    /// An empty table sized for `config.max_entries` (two hooks per flow,
    /// about one hook per bucket at capacity).
    pub fn new(config: ConnTrackConfig) -> ConnTrack {
        Self::with_hasher(config, FlowHasher::random())
    }

    fn with_hasher(config: ConnTrackConfig, hasher: FlowHasher) -> ConnTrack {
        let buckets = (config.max_entries.max(16) * 2).next_power_of_two();
        let spare = slab_capacity(config.max_entries) - config.max_entries;
        ConnTrack {
            shares: SourceShares::new(
                if config.source_share_percent >= 100 {
                    usize::MAX
                } else {
                    config.max_per_source()
                },
                [hasher.k[2], hasher.k[3]],
            ),
            dead: ArrayQueue::new(spare),
            pressure: AtomicBool::new(false),
            evictions: Evictions::default(),
            slab: Slab::new(slab_capacity(config.max_entries)),
            id: {
                static NEXT: AtomicU32 = AtomicU32::new(0);
                NEXT.fetch_add(1, Ordering::Relaxed)
            },
            buckets: (0..buckets).map(|_| AtomicU64::new(0)).collect(),
            mask: buckets - 1,
            hasher,
            count: AtomicUsize::new(0),
            config,
            removal: Mutex::new(Retired::default()),
            retired: AtomicUsize::new(0),
        }
    }

    /// The configuration the table was built with.
    pub fn config(&self) -> &ConnTrackConfig {
        &self.config
    }

    /// A table whose hashes follow `seed` (tests that need one layout).
    #[cfg(test)]
    pub(crate) fn with_seed(config: ConnTrackConfig, seed: u64) -> ConnTrack {
        Self::with_hasher(config, FlowHasher::fixed(seed))
    }

    /// Entries evicted before their timeout, by reason (index:
    /// `EvictReason as usize`).
    pub fn evictions(&self) -> [u64; EvictReason::ALL.len()] {
        self.evictions.read()
    }

    /// The most entries one source address may hold.
    pub fn max_per_source(&self) -> usize {
        self.config.max_per_source()
    }

    /// How many entries the source of `key` holds (an estimate that is
    /// never below the truth; see [`admission`]).
    pub fn source_entries(&self, key: &FlowKey) -> usize {
        self.shares.estimate(&key.pack())
    }

    /// Checks that each row of the share sketch sums to the entry count.
    #[cfg(test)]
    pub(crate) fn assert_shares_match_count(&self) {
        for total in self.shares.row_totals() {
            assert_eq!(total, self.len() as u64, "share sketch and count differ");
        }
    }

    /// Number of entries (flows and records).
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries removed from the table that cannot be reused yet: they wait
    /// for the worker threads pinned at their removal to move on, and are
    /// recycled by a later removal pass (e.g. the next sweep).
    pub fn retired_len(&self) -> usize {
        self.retired.load(Ordering::Relaxed)
    }

    /// Heap bytes the table holds, all allocated when it is created: the
    /// bucket array, the entry storage (whose pages the OS provides as
    /// entries are first used), the per-source counters and the early-drop
    /// queue (a stamp word beside each slot's index).
    pub fn heap_bytes(&self) -> usize {
        self.buckets.len() * std::mem::size_of::<AtomicU64>()
            + self.slab.bytes()
            + self.shares.bytes()
            + self.dead.capacity() * 2 * std::mem::size_of::<usize>()
    }

    /// `key` with its hash, for [`Self::prefetch`], [`Self::lookup_packed`]
    /// and [`Self::insert_packed`].
    #[inline(always)]
    pub fn hashed(&self, key: PackedKey) -> HashedKey {
        HashedKey {
            key,
            hash: self.hasher.hash_packed(&key),
            table: self.id,
        }
    }

    /// The bucket of `key` and the key's bit in its chain summary.
    #[inline(always)]
    fn slot(&self, key: &PackedKey) -> (&AtomicU64, u64) {
        self.slot_of(self.hasher.hash_packed(key))
    }

    /// `key`'s hash under this table's seed: the one it carries, unless
    /// another table made it.
    #[inline(always)]
    fn hash_of(&self, key: &HashedKey) -> u64 {
        if key.table == self.id {
            key.hash
        } else {
            self.hasher.hash_packed(&key.key)
        }
    }

    /// The bucket of a key hash and its bit in the chain summary.
    #[inline(always)]
    fn slot_of(&self, hash: u64) -> (&AtomicU64, u64) {
        (
            &self.buckets[hash as usize & self.mask],
            1 << (SUMMARY_SHIFT + (hash >> 60) as u32),
        )
    }

    /// The head hook a bucket word names.
    #[inline(always)]
    fn head<'g>(&self, word: u64) -> Shared<'g, Flow> {
        let index = word & HEAD_INDEX;
        if index == 0 {
            return Shared::null();
        }
        // SAFETY: bucket words are only written with indices of entries
        // of this table's slab (`head_word`).
        let entry = unsafe { self.slab.ptr(index as u32 - 1) };
        Shared::from(entry as *const Flow).with_tag(usize::from(word & HEAD_REPLY != 0))
    }

    /// The bucket word naming `hook` as head (no summary bits).
    #[inline(always)]
    fn head_word(&self, hook: Shared<'_, Flow>) -> u64 {
        if hook.is_null() {
            return 0;
        }
        let index = u64::from(self.slab.index_of(hook.as_raw())) + 1;
        index | if hook.tag() & 1 != 0 { HEAD_REPLY } else { 0 }
    }

    /// The summary of the chain starting at `hook`.
    fn chain_summary<'g>(&self, mut hook: Shared<'g, Flow>, guard: &'g Guard) -> u64 {
        let mut summary = 0;
        while let Some(f) = deref_in_epoch(hook) {
            let d = hook.tag() & 1;
            summary |= 1 << (SUMMARY_SHIFT + u32::from(f.summary_bit[d]));
            hook = f.next[d].load(Ordering::Acquire, guard);
        }
        summary
    }

    /// Re-derives a bucket's summary from its chain after a removal in the
    /// middle of it, so stale bits do not accumulate. Caller holds
    /// `self.removal`.
    fn resummarize(&self, bucket: &AtomicU64, guard: &Guard) {
        let mut word = bucket.load(Ordering::Acquire);
        loop {
            let summary = self.chain_summary(self.head(word), guard);
            let new = (word & !SUMMARY) | summary;
            // A failed exchange means an insert pushed a hook meanwhile.
            match bucket.compare_exchange(word, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return,
                Err(now) => word = now,
            }
        }
    }

    /// Checks that every bucket's summary covers the hooks in its chain.
    #[cfg(test)]
    pub(crate) fn assert_summaries_cover_chains(&self) {
        let guard = epoch::pin();
        for (i, bucket) in self.buckets.iter().enumerate() {
            let word = bucket.load(Ordering::Acquire);
            let chain = self.chain_summary(self.head(word), &guard);
            assert_eq!(chain & !word, 0, "bucket {i}: summary misses a hook");
        }
    }

    /// Asks the CPU to start loading the bucket of `key`, so a lookup a
    /// little later finds it in cache.
    #[inline(always)]
    pub fn prefetch(&self, key: &HashedKey) {
        prefetch(self.slot_of(self.hash_of(key)).0 as *const AtomicU64 as *const u8);
    }

    /// Finds the entry one of whose directions has `key`.
    ///
    /// The guard must come from `crossbeam::epoch::pin()` (the default
    /// collector, which reclamation waits for); another collector's guard
    /// protects nothing here and panics.
    #[inline]
    pub fn lookup<'g>(&'g self, key: &FlowKey, guard: &'g Guard) -> Option<Found<'g>> {
        self.lookup_packed(&self.hashed(key.pack()), guard)
    }

    /// [`Self::lookup`] by hashed packed key.
    #[inline]
    pub fn lookup_packed<'g>(&'g self, key: &HashedKey, guard: &'g Guard) -> Option<Found<'g>> {
        check_guard(guard);
        self.find(key, guard)
    }

    /// [`Self::lookup_packed`] for a guard known to be the default
    /// collector's (the router's own, from `epoch::pin`).
    #[inline]
    pub(crate) fn find<'g>(&'g self, key: &HashedKey, guard: &'g Guard) -> Option<Found<'g>> {
        let (bucket, bit) = self.slot_of(self.hash_of(key));
        let key = &key.key;
        let word = bucket.load(Ordering::Acquire);
        if word & bit == 0 {
            return None;
        }
        let mut cur = self.head(word);
        while let Some(flow) = deref_in_epoch(cur) {
            let dir = Direction::from_tag(cur.tag());
            if flow.keys[dir.tag()] == *key && !flow.is_dead() {
                return Some(Found {
                    flow,
                    direction: dir,
                });
            }
            cur = flow.next[dir.tag()].load(Ordering::Acquire, guard);
        }
        None
    }

    /// Adds an entry, or returns the entry already there for the same
    /// original key (another worker raced us to it). The guard must come
    /// from `crossbeam::epoch::pin()`, as for [`Self::lookup`].
    pub fn insert<'g>(
        &'g self,
        new: NewEntry,
        now: Timestamp,
        guard: &'g Guard,
    ) -> Result<Found<'g>, InsertError> {
        let entry = PackedEntry {
            original: self.hashed(new.original.pack()),
            reply: new.reply.pack(),
            hook_reply: new.hook_reply,
            state: new.state,
            record_timeout_ms: new.record_timeout.as_millis() as u64,
            tag: new.tag,
        };
        self.insert_packed(&entry, now, guard)
    }

    /// [`Self::insert`] of a packed entry.
    #[inline]
    pub fn insert_packed<'g>(
        &'g self,
        new: &PackedEntry,
        now: Timestamp,
        guard: &'g Guard,
    ) -> Result<Found<'g>, InsertError> {
        check_guard(guard);
        self.add(new, now, guard)
    }

    /// [`Self::insert_packed`] for a guard known to be the default
    /// collector's (the router's new-flow path).
    #[inline]
    pub(crate) fn add<'g>(
        &'g self,
        new: &PackedEntry,
        now: Timestamp,
        guard: &'g Guard,
    ) -> Result<Found<'g>, InsertError> {
        let original = new.original.key;
        let original_hash = self.hash_of(&new.original);
        let reply = self.hashed(new.reply);
        if new.hook_reply {
            // Start fetching the reply bucket now (a cache miss there is
            // much of a new flow's cost).
            self.prefetch(&reply);
        }
        // Both tuples are checked before an entry is taken, so packets that
        // repeat an existing entry or clash with one cannot use entries up.
        // A flow's repeat shows in its reply tuple (below); a record (first
        // fragment, affinity) has only its original key to show it. The
        // router looked a new flow's original key up just before, so it is
        // not looked up twice.
        if !new.hook_reply {
            if let Some(existing) = self.find(&new.original, guard) {
                return Ok(existing);
            }
        }
        // The source's share first: a source over it (a flood) is refused
        // before it can take a place in the table or drop another's entry.
        let slots = self.shares.slots(&original);
        if !self.shares.try_charge(slots) {
            return Err(InsertError::SourceShareExceeded {
                limit: self.config.max_per_source(),
            });
        }
        if self.count.fetch_add(1, Ordering::Relaxed) >= self.config.max_entries
            && !self.early_drop(original_hash, guard)
        {
            self.uncount(slots);
            if !self.pressure.load(Ordering::Relaxed) {
                self.pressure.store(true, Ordering::Relaxed);
            }
            return Err(InsertError::TableFull {
                max: self.config.max_entries,
            });
        }
        if new.hook_reply {
            if let Some(existing) = self.find(&reply, guard) {
                self.uncount(slots);
                // The same flow seen from its reply side means it exists.
                if existing.flow.keys[0] == original {
                    return Ok(Found {
                        flow: existing.flow,
                        direction: Direction::Original,
                    });
                }
                return Err(InsertError::ReplyClash);
            }
        }
        let Some(entry) = self.slab.take(Flow {
            next: [Atomic::null(), Atomic::null()],
            keys: [original, reply.key],
            state: AtomicU8::new(new.state as u8),
            hooks: AtomicU8::new(0),
            last_seen_ms: AtomicU64::new(now.as_millis()),
            original_next_seq: AtomicU32::new(0),
            reply_next_seq: AtomicU32::new(0),
            record_timeout_ms: new.record_timeout_ms,
            tag: new.tag,
            summary_bit: [summary_bit(original_hash), summary_bit(reply.hash)],
        }) else {
            // Every slot holds a live or a not yet recycled entry.
            self.uncount(slots);
            return Err(InsertError::TableFull {
                max: self.config.max_entries,
            });
        };
        let flow = Shared::from(entry as *const Flow);
        let flow_ref = deref_in_epoch(flow).expect("non-null");
        match self.link(flow, Direction::Original, original_hash, guard) {
            Ok(()) => {}
            Err(existing) => {
                self.uncount(slots);
                // `flow` was never published (the CAS that would have
                // published it failed), so no other thread can see it.
                // SAFETY: taken above and never linked.
                unsafe { self.slab.give_back_unpublished(entry) };
                return Ok(existing);
            }
        }
        let mut hooks = HOOKS_DONE;
        // A clash that appeared since the check above cannot be ordered
        // against a concurrent insert without a lock; this flow then goes
        // without a reply hook (its replies reach the other flow) until it
        // expires.
        if new.hook_reply && self.link(flow, Direction::Reply, reply.hash, guard).is_ok() {
            hooks |= HOOKS_REPLY;
        }
        flow_ref.hooks.store(hooks, Ordering::Release);
        Ok(Found {
            flow: flow_ref,
            direction: Direction::Original,
        })
    }

    /// Gives back the place of an entry claimed for the drain and queues
    /// it there (the next sweep unlinks it if the queue is full).
    fn queue_claimed(&self, flow: &Flow) {
        self.uncount(self.shares.slots(&flow.keys[0]));
        if self
            .dead
            .push(self.slab.index_of(flow as *const Flow))
            .is_err()
        {
            flow.state.fetch_and(!QUEUED, Ordering::AcqRel);
        }
    }

    /// Gives back a place taken in the count and in a source's share.
    #[inline]
    fn uncount(&self, slots: ShareSlots) {
        self.count.fetch_sub(1, Ordering::Relaxed);
        self.shares.refund(slots);
    }

    /// Makes room in a full table, as Linux's `early_drop()`: claims the
    /// first entry that may be dropped early in the chains of the buckets
    /// from `hash`'s on, so a new flow takes its place in the count (see
    /// [`admission`]). Bounded: [`EVICTION_BUCKETS`] buckets,
    /// [`EVICTION_HOOKS`] entries. Never waits, never allocates.
    #[cold]
    #[inline(never)]
    fn early_drop(&self, hash: u64, guard: &Guard) -> bool {
        let mut bucket = hash as usize & self.mask;
        let mut seen = 0;
        for _ in 0..EVICTION_BUCKETS {
            let mut cur = self.head(self.buckets[bucket].load(Ordering::Acquire));
            while let Some(f) = deref_in_epoch(cur) {
                // An entry still being linked is left to its inserter.
                if f.hooks.load(Ordering::Acquire) & HOOKS_DONE != 0 && f.claim_for_early_drop() {
                    // The victim leaves the count and its source's share;
                    // the caller's flow has already taken its place.
                    self.evictions.count(EvictReason::EarlyDrop, 1);
                    self.queue_claimed(f);
                    return true;
                }
                seen += 1;
                if seen >= EVICTION_HOOKS {
                    return false;
                }
                let d = cur.tag() & 1;
                cur = f.next[d].load(Ordering::Acquire, guard);
            }
            bucket = (bucket + 1) & self.mask;
        }
        false
    }

    /// Pushes one hook of `flow` (whose key in `dir` hashes to `hash`) at
    /// the head of its bucket, unless an entry with the same key appeared
    /// there first.
    fn link<'g>(
        &self,
        flow: Shared<'g, Flow>,
        dir: Direction,
        hash: u64,
        guard: &'g Guard,
    ) -> Result<(), Found<'g>> {
        let flow_ref = deref_in_epoch(flow).expect("non-null");
        let key = *flow_ref.packed(dir);
        let (bucket, bit) = self.slot_of(hash);
        let mine = self.head_word(flow.with_tag(dir.tag())) | bit;
        let mut word = bucket.load(Ordering::Acquire);
        let mut scanned_to = Shared::null();
        loop {
            let head = self.head(word);
            // Look for a duplicate among hooks pushed since the last scan;
            // none can be there if the summary lacks this key's bit.
            let mut cur = if word & bit != 0 { head } else { scanned_to };
            while cur != scanned_to {
                let Some(f) = deref_in_epoch(cur) else { break };
                let d = Direction::from_tag(cur.tag());
                if *f.packed(d) == key && !f.is_dead() {
                    return Err(Found {
                        flow: f,
                        direction: d,
                    });
                }
                cur = f.next[d.tag()].load(Ordering::Acquire, guard);
            }
            scanned_to = head;
            flow_ref.next[dir.tag()].store(head, Ordering::Relaxed);
            let new = mine | (word & SUMMARY);
            match bucket.compare_exchange(word, new, Ordering::Release, Ordering::Acquire) {
                Ok(_) => return Ok(()),
                Err(now) => word = now,
            }
        }
    }

    /// Unlinks one hook. Caller holds `self.removal`.
    fn unlink(&self, flow: Shared<'_, Flow>, dir: Direction, guard: &Guard) {
        let flow_ref = deref_in_epoch(flow).expect("non-null");
        let (bucket, _) = self.slot(flow_ref.packed(dir));
        let target = flow.with_tag(dir.tag());
        loop {
            let word = bucket.load(Ordering::Acquire);
            let head = self.head(word);
            let after = flow_ref.next[dir.tag()].load(Ordering::Acquire, guard);
            if head == target {
                let new = self.head_word(after) | self.chain_summary(after, guard);
                if bucket
                    .compare_exchange(word, new, Ordering::Release, Ordering::Relaxed)
                    .is_ok()
                {
                    return;
                }
                // A concurrent insert pushed in front; our hook is now in
                // the middle of the chain.
                continue;
            }
            let mut prev = head;
            while let Some(p) = deref_in_epoch(prev) {
                let pd = prev.tag();
                let next = p.next[pd].load(Ordering::Acquire, guard);
                if next == target {
                    // Only removals write a non-head link, and we hold the
                    // removal lock.
                    p.next[pd].store(after, Ordering::Release);
                    self.resummarize(bucket, guard);
                    return;
                }
                prev = next;
            }
            // Not found: already unlinked (cannot happen under the lock).
            return;
        }
    }

    /// Removes every entry for which `pred` is true; returns what was
    /// removed. Runs on the control thread; workers keep going meanwhile.
    pub fn remove_where(&self, mut pred: impl FnMut(&Flow) -> bool) -> Vec<RemovedFlow> {
        let mut retired = self.removal.lock();
        let guard = epoch::pin();
        let mut removed = Vec::new();
        let mut unlinked: Vec<u32> = Vec::new();
        self.drain_dead(&mut unlinked, &guard);
        for bucket in self.buckets.iter() {
            let mut cur = self.head(bucket.load(Ordering::Acquire));
            while let Some(f) = deref_in_epoch(cur) {
                let dir = Direction::from_tag(cur.tag());
                let next = f.next[dir.tag()].load(Ordering::Acquire, &guard);
                // Visit each entry once, from its original hook, and only
                // once its inserter is done with it.
                let hooks = f.hooks.load(Ordering::Acquire);
                // A queued entry is the drain's to unlink.
                let queued = f.state.load(Ordering::Acquire) & QUEUED != 0;
                if dir == Direction::Original && hooks & HOOKS_DONE != 0 && !queued && pred(f) {
                    let s = summary(f);
                    if self.detach(cur.with_tag(0), hooks, &guard) {
                        removed.push(s);
                        unlinked.push(self.slab.index_of(cur.as_raw()));
                    }
                }
                cur = next;
            }
        }
        self.retire(&mut retired, unlinked, guard);
        removed
    }

    /// Unlinks both hooks of an entry whose insert is done (`hooks` as read
    /// from it); the caller retires it. Gives back its place in the count
    /// and its source's share, unless an early drop did already. Caller
    /// holds `self.removal`.
    ///
    /// Returns false, and leaves the entry alone, if an early drop queued
    /// it meanwhile: the drain unlinks it (once: two unlinks would retire,
    /// and recycle, one entry twice).
    fn detach(&self, entry: Shared<'_, Flow>, hooks: u8, guard: &Guard) -> bool {
        let flow = deref_in_epoch(entry).expect("non-null");
        match flow.claim_for_removal() {
            None => return false,
            Some(true) => self.uncount(self.shares.slots(&flow.keys[0])),
            Some(false) => {}
        }
        self.unlink_both(entry, hooks, guard);
        true
    }

    /// Unlinks both hooks of an entry whose insert is done. Caller holds
    /// `self.removal`.
    fn unlink_both(&self, entry: Shared<'_, Flow>, hooks: u8, guard: &Guard) {
        self.unlink(entry, Direction::Original, guard);
        if hooks & HOOKS_REPLY != 0 {
            self.unlink(entry, Direction::Reply, guard);
        }
    }

    /// Unlinks the entries workers dropped early and queued, adding their
    /// slab indices to `unlinked`. Caller holds `self.removal`.
    fn drain_dead(&self, unlinked: &mut Vec<u32>, guard: &Guard) {
        while let Some(index) = self.dead.pop() {
            // SAFETY: workers queue indices of this slab's entries.
            let entry = unsafe { self.slab.ptr(index) };
            let shared = Shared::from(entry as *const Flow);
            let flow = deref_in_epoch(shared).expect("non-null");
            // Queued entries are linked until this drain (removal passes
            // skip them), so the index still names the entry queued.
            debug_assert!(flow.state.load(Ordering::Relaxed) & (DEAD | QUEUED) == DEAD | QUEUED);
            self.unlink_both(shared, flow.hooks.load(Ordering::Acquire), guard);
            unlinked.push(index);
        }
    }

    /// Ends a removal pass: queues what it unlinked as one batch, asks the
    /// epoch GC to mark the batch once no reader can hold it, and recycles
    /// the batches already marked.
    fn retire(&self, retired: &mut Retired, unlinked: Vec<u32>, guard: Guard) -> usize {
        if !unlinked.is_empty() {
            let safe = Arc::new(AtomicBool::new(false));
            let mark = safe.clone();
            guard.defer(move || mark.store(true, Ordering::Release));
            self.retired.fetch_add(unlinked.len(), Ordering::Relaxed);
            retired.batches.push_back(RetiredBatch {
                safe,
                entries: unlinked,
            });
        }
        // Hand the deferred mark to the GC now (a thread's own bag is
        // otherwise published only when 64 functions fill it) and let it
        // advance the epoch and run what has expired.
        guard.flush();
        drop(guard);
        self.reclaim_locked(retired)
    }

    /// Recycles removed entries whose readers have all moved on. Cheap (no
    /// scan of the table): call it often from a control thread, so that
    /// the entries of a large sweep or teardown are reused within moments
    /// rather than at the next sweep. Returns how many it recycled.
    pub fn reclaim(&self) -> usize {
        let mut retired = self.removal.lock();
        if !self.dead.is_empty() {
            let guard = epoch::pin();
            let mut unlinked = Vec::new();
            self.drain_dead(&mut unlinked, &guard);
            // Retiring recycles what is already safe, as below.
            return self.retire(&mut retired, unlinked, guard);
        }
        self.reclaim_locked(&mut retired)
    }

    fn reclaim_locked(&self, retired: &mut Retired) -> usize {
        if retired.batches.is_empty() {
            return 0;
        }
        // Each flush advances the epoch at most one step, and a batch is
        // safe two steps after it was sealed; workers that have unpinned
        // since do not hold it back.
        for _ in 0..2 {
            epoch::pin().flush();
        }
        let recycled = retired.recycle_safe(&self.slab);
        self.retired.fetch_sub(recycled, Ordering::Relaxed);
        recycled
    }

    /// Removes the entry whose original key is `key`, if any.
    pub fn remove(&self, key: &FlowKey) -> Option<RemovedFlow> {
        let retired = self.removal.lock();
        self.remove_with(retired, key)
    }

    /// Retires a finished flow (CLOSE or TIME_WAIT) whose tuple a new
    /// connection uses again (a client port used again): it is marked dead
    /// at once, so lookups and inserts pass it by and the new connection
    /// makes a flow of its own, and the control thread's drain unlinks it,
    /// as after an early drop. Never waits (a removal in progress does not
    /// matter): the packet path uses it. False if the flow is not finished
    /// or was claimed already.
    pub fn retire_finished(&self, flow: &Flow) -> bool {
        if !flow.claim_finished() {
            return false;
        }
        self.queue_claimed(flow);
        true
    }

    fn remove_with(
        &self,
        mut retired: parking_lot::MutexGuard<'_, Retired>,
        key: &FlowKey,
    ) -> Option<RemovedFlow> {
        let guard = epoch::pin();
        let key = key.pack();
        let mut cur = self.head(self.slot(&key).0.load(Ordering::Acquire));
        let mut found = None;
        while let Some(f) = deref_in_epoch(cur) {
            let dir = Direction::from_tag(cur.tag());
            let hooks = f.hooks.load(Ordering::Acquire);
            if dir == Direction::Original
                && hooks & HOOKS_DONE != 0
                && f.keys[0] == key
                && !f.is_dead()
            {
                found = Some((summary(f), cur.with_tag(0), hooks));
                break;
            }
            cur = f.next[dir.tag()].load(Ordering::Acquire, &guard);
        }
        let mut unlinked = Vec::new();
        let removed = found.and_then(|(s, entry, hooks)| {
            self.detach(entry, hooks, &guard).then(|| {
                unlinked.push(self.slab.index_of(entry.as_raw()));
                s
            })
        });
        self.retire(&mut retired, unlinked, guard);
        removed
    }

    /// Removes every entry idle longer than its timeout; returns how many.
    /// The caller drives this (e.g. once a second), never the packet path.
    ///
    /// After a new flow found the table full with nothing to drop early
    /// near its bucket, the sweep also evicts entries that may be dropped
    /// early while the table is above 95% of its size (Linux's `gc_worker`
    /// in the same case).
    pub fn sweep(&self, now: Timestamp) -> usize {
        let timeouts = self.config.timeouts;
        let pressure = self.pressure.swap(false, Ordering::Relaxed);
        let high = self.config.max_entries / 100 * 95;
        let mut evicted = 0;
        let removed = self.remove_where(|f| {
            if f.is_expired(now, &timeouts) {
                return true;
            }
            let evict = pressure && self.len() >= high && f.can_early_drop();
            evicted += u64::from(evict);
            evict
        });
        self.evictions.count(EvictReason::NearFull, evicted);
        removed.len()
    }

    /// A copy of every entry (flows and records).
    pub fn entries(&self) -> Vec<FlowSummary> {
        let guard = epoch::pin();
        let mut out = Vec::with_capacity(self.len());
        for bucket in self.buckets.iter() {
            let mut cur = self.head(bucket.load(Ordering::Acquire));
            while let Some(f) = deref_in_epoch(cur) {
                let dir = Direction::from_tag(cur.tag());
                if dir == Direction::Original && !f.is_dead() {
                    out.push(summary(f));
                }
                cur = f.next[dir.tag()].load(Ordering::Acquire, &guard);
            }
        }
        out
    }
}

fn summary(f: &Flow) -> FlowSummary {
    FlowSummary {
        original: f.original(),
        reply: f.reply(),
        state: f.state(),
        last_seen: f.last_seen(),
        tag: f.tag,
        original_next_seq: f.original_next_seq(),
        reply_next_seq: f.reply_next_seq(),
    }
}

/// Panics unless `guard` pins the default epoch collector: removals defer
/// reclamation to it, so only its guards keep entries from being reused.
#[inline(always)]
fn check_guard(guard: &Guard) {
    assert!(
        guard
            .collector()
            .is_some_and(|c| c == epoch::default_collector()),
        "connection tracking needs a guard from crossbeam::epoch::pin()"
    );
}

/// A hint to the CPU to start loading the cache line at `addr`.
#[inline(always)]
fn prefetch(addr: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint: it never dereferences the address
    // architecturally and cannot fault, whatever the address; SSE, which
    // provides it, is part of the x86_64 baseline.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(addr.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}

/// Dereferences a pointer loaded from the table under an epoch guard.
#[inline]
fn deref_in_epoch<'g>(p: Shared<'g, Flow>) -> Option<&'g Flow> {
    // SAFETY: every non-null pointer in the table points to an entry of its
    // slab, written whole by `insert` before it was linked; an unlinked
    // entry is reused only after every guard pinned at its removal is gone,
    // and the slab lives as long as the table, which `'g` borrows.
    unsafe { p.as_ref() }
}

mod admission;
#[cfg(test)]
mod admission_tests;
mod slab;
#[cfg(test)]
mod tests;
