//! The router: one packet in, one [`Verdict`] out.
//!
//! [`Router::process`] is what every worker thread calls for every packet.
//! It validates the packet, drops spoofed sources, finds or creates the
//! packet's flow (service lookup, backend choice, conntrack insert), rewrites
//! addresses and ports with incremental checksums, decrements the TTL and
//! says where the packet goes. Where a kernel router would answer (a service
//! without endpoints, an expired TTL, an unreachable pod address) it writes
//! the answer into the same buffer and returns [`Verdict::Reply`].
//!
//! The control plane changes what the router knows through `set_pods`,
//! `set_services` and `set_endpoints`; each publishes an immutable snapshot
//! (or one pool's backend set) with an atomic pointer swap, so workers never
//! wait and never see half an update.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use arc_swap::ArcSwap;
use crossbeam::epoch;
use ipnet::IpNet;
use parking_lot::Mutex;

use super::conntrack::{
    proto, ConnTrack, ConnTrackConfig, Direction, EntryKind, Flow, FlowHasher, FlowKey, FlowState,
    FlowSummary, HashedKey, InsertError, NewEntry, PackedEntry, PackedKey,
};
use super::maglev::MaglevError;
use super::policy::PolicySnapshot;
use super::service::{Backend, BackendSet, Frontend, PoolId, PoolSpec, ServicePool};
use super::wire::virtio::{self, L4Checksum, VnetError, VnetHdr};
use super::wire::{self, Endpoints, Fragment, IcmpErrorKind, PacketInfo, TcpFlags, Transport};
use super::Timestamp;
pub use edge::{EdgeConfig, SNAT_PORTS};
pub use explain::{FlowExplanation, FlowOutcome};
use stats::{Counters, STRIPE};
pub use stats::{DropReason, EvictReason, RouterStats};

/// A pod's slot number, chosen by the control plane; the daemon maps it to
/// the pod's TUN device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodId(pub u32);

/// Where a packet enters or leaves the router.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Link {
    /// The node side (`podnet0`): the host itself and everything beyond it.
    Host,
    /// A pod's `eth0`.
    Pod(PodId),
}

/// What to do with a processed packet.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send the (possibly rewritten) packet out of this link.
    Forward(Link),
    /// The buffer now holds a generated answer (TCP RST, ICMP error); send
    /// it back out of the link the packet came in on.
    Reply,
    /// Drop the packet.
    Drop(DropReason),
}

/// A caller-owned packet buffer: capacity for the largest packet plus room
/// to build an ICMP error around it, the length of the packet in it, and the
/// packet's offload state (its virtio-net header; [`VnetHdr::NONE`] for a
/// plain packet).
///
/// The router keeps the offload state valid: a rewrite of a packet with a
/// partial checksum keeps the seed right (see [`wire::virtio`]), a
/// super-packet stays one packet, and a generated reply is plain.
pub struct PacketBuf {
    data: Box<[u8]>,
    len: usize,
    vnet: VnetHdr,
}

impl PacketBuf {
    /// Capacity for a 64 KiB packet.
    pub const DEFAULT_CAPACITY: usize = 65_536;

    /// An empty buffer of `capacity` bytes (at least 1280, so an ICMPv6
    /// error always fits).
    pub fn new(capacity: usize) -> PacketBuf {
        PacketBuf {
            data: vec![0; capacity.max(1280)].into_boxed_slice(),
            len: 0,
            vnet: VnetHdr::NONE,
        }
    }

    /// A buffer holding a copy of `packet`.
    pub fn from_bytes(packet: &[u8]) -> PacketBuf {
        let mut b = PacketBuf::new(packet.len().max(1280) + 64);
        b.data[..packet.len()].copy_from_slice(packet);
        b.len = packet.len();
        b
    }

    /// The packet.
    #[inline]
    pub fn as_slice(&self) -> &[u8] {
        &self.data[..self.len]
    }

    /// The packet, mutable.
    #[inline]
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.data[..self.len]
    }

    /// The whole buffer, for reading a packet into; follow with `set_len`.
    #[inline]
    pub fn buffer_mut(&mut self) -> &mut [u8] {
        &mut self.data
    }

    /// Sets the packet length (clamped to the capacity).
    #[inline]
    pub fn set_len(&mut self, len: usize) {
        self.len = len.min(self.data.len());
    }

    /// Packet length.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer holds no packet.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Capacity.
    pub fn capacity(&self) -> usize {
        self.data.len()
    }

    /// The packet's offload state.
    #[inline]
    pub fn vnet(&self) -> VnetHdr {
        self.vnet
    }

    /// Sets the packet's offload state (as read with the packet).
    #[inline]
    pub fn set_vnet(&mut self, hdr: VnetHdr) {
        self.vnet = hdr;
    }
}

/// A pod's addresses (one per family at most).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PodAddrs {
    /// IPv4 address.
    pub v4: Option<Ipv4Addr>,
    /// IPv6 address.
    pub v6: Option<Ipv6Addr>,
}

impl PodAddrs {
    #[inline]
    fn owns(&self, addr: IpAddr) -> bool {
        match addr {
            IpAddr::V4(a) => self.v4 == Some(a),
            IpAddr::V6(a) => self.v6 == Some(a),
        }
    }
}

/// The node's own addressing, fixed for the router's lifetime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeNetwork {
    /// The node's pod subnets (one per family); an address in them with no
    /// pod gets ICMP host unreachable.
    pub pod_subnets: Vec<IpNet>,
    /// Service CIDRs; an address in them with no matching frontend is
    /// rejected rather than sent to the host.
    pub service_cidrs: Vec<IpNet>,
    /// The gateway's IPv4 address: source of generated ICMP errors.
    pub gateway_v4: Ipv4Addr,
    /// The gateway's IPv6 address.
    pub gateway_v6: Option<Ipv6Addr>,
}

impl Default for NodeNetwork {
    fn default() -> Self {
        NodeNetwork {
            pod_subnets: vec!["10.244.0.0/24".parse().expect("literal")],
            service_cidrs: vec!["10.96.0.0/12".parse().expect("literal")],
            gateway_v4: Ipv4Addr::new(10, 244, 0, 1),
            gateway_v6: None,
        }
    }
}

/// Router configuration.
#[derive(Clone, Debug)]
pub struct RouterConfig {
    /// Node addressing.
    pub network: NodeNetwork,
    /// Connection tracking size and timeouts.
    pub conntrack: ConnTrackConfig,
    /// Minimum Maglev table slots per backend (at least 100 keeps each
    /// backend's share within 1% of equal).
    pub maglev_min_ratio: u32,
    /// Handle packets of established IPv4 TCP/UDP flows on the specialised
    /// path (on by default; off only to compare it with the general path).
    pub ipv4_fast_path: bool,
    /// The node's edge: its own addresses, masquerade and isolation
    /// (off by default: no node address, nothing masqueraded).
    pub edge: EdgeConfig,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            network: NodeNetwork::default(),
            conntrack: ConnTrackConfig::default(),
            maglev_min_ratio: 100,
            ipv4_fast_path: true,
            edge: EdgeConfig::default(),
        }
    }
}

/// Pods and service frontends as one immutable, atomically swapped value.
struct Snapshot {
    pods: Vec<Option<PodAddrs>>,
    pod_by_v4: V4PodIndex,
    pod_by_v6: HashMap<Ipv6Addr, PodId, ahash::RandomState>,
    frontends: HashMap<Frontend, Arc<ServicePool>, ahash::RandomState>,
    pools: HashMap<PoolId, Arc<ServicePool>, ahash::RandomState>,
    /// Addresses that have at least one frontend (cluster IPs, external IPs,
    /// node addresses with node ports).
    service_addrs: HashMap<IpAddr, (), ahash::RandomState>,
}

impl Snapshot {
    fn empty() -> Snapshot {
        Snapshot {
            pods: Vec::new(),
            pod_by_v4: V4PodIndex::default(),
            pod_by_v6: HashMap::default(),
            frontends: HashMap::default(),
            pools: HashMap::default(),
            service_addrs: HashMap::default(),
        }
    }

    #[inline]
    fn pod(&self, id: PodId) -> Option<&PodAddrs> {
        self.pods.get(id.0 as usize)?.as_ref()
    }

    #[inline]
    fn pod_at(&self, addr: IpAddr) -> Option<PodId> {
        match addr {
            IpAddr::V4(a) => self.pod_by_v4.get(a.to_bits()),
            IpAddr::V6(a) => self.pod_by_v6.get(&a).copied(),
        }
    }
}

/// Pod by IPv4 address: a direct-indexed array over the node's pod subnet
/// (one load per lookup, no hashing), a hash map for anything outside it.
#[derive(Clone, Default)]
struct V4PodIndex {
    base: u32,
    /// `PodId + 1` per address of the node subnet; 0 for none.
    slots: Box<[u32]>,
    others: HashMap<u32, PodId, ahash::RandomState>,
}

impl V4PodIndex {
    /// An empty index covering `subnet` (at most a /16 is indexed directly).
    fn new(subnet: Option<ipnet::Ipv4Net>) -> V4PodIndex {
        match subnet {
            Some(n) if n.prefix_len() >= 16 => V4PodIndex {
                base: n.network().to_bits(),
                slots: vec![0; 1usize << (32 - n.prefix_len())].into_boxed_slice(),
                others: HashMap::default(),
            },
            _ => V4PodIndex::default(),
        }
    }

    #[inline(always)]
    fn get(&self, addr: u32) -> Option<PodId> {
        match self.slots.get(addr.wrapping_sub(self.base) as usize) {
            Some(&0) => None,
            Some(&id) => Some(PodId(id - 1)),
            None => self.others.get(&addr).copied(),
        }
    }

    /// Adds a pod; returns the pod that already had the address.
    fn insert(&mut self, addr: u32, id: PodId) -> Option<PodId> {
        if let Some(old) = self.get(addr) {
            return Some(old);
        }
        match self.slots.get_mut(addr.wrapping_sub(self.base) as usize) {
            Some(slot) => *slot = id.0.saturating_add(1),
            None => {
                self.others.insert(addr, id);
            }
        }
        None
    }
}

/// Why a control-plane update was refused. Nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// `set_endpoints` named a pool that `set_services` never declared.
    #[error("service pool {0:?} is not declared; declare it with set_services first")]
    UnknownPool(PoolId),
    /// Two pools claim the same frontend.
    #[error("frontend {addr}:{port}/{protocol} is claimed by pools {first:?} and {second:?}; each address, port and protocol may lead to one pool")]
    DuplicateFrontend {
        /// Frontend address.
        addr: IpAddr,
        /// Frontend port.
        port: u16,
        /// Frontend protocol.
        protocol: u8,
        /// One claimant.
        first: PoolId,
        /// The other claimant.
        second: PoolId,
    },
    /// Two pods claim the same address.
    #[error("address {addr} is claimed by pods {first:?} and {second:?}")]
    DuplicatePodAddress {
        /// The address.
        addr: IpAddr,
        /// One claimant.
        first: PodId,
        /// The other claimant.
        second: PodId,
    },
    /// Pod ids must be below `u32::MAX`.
    #[error("pod id {0:?} is out of range; use ids below 4294967295")]
    PodIdOutOfRange(PodId),
    /// The backend set could not be indexed.
    #[error("cannot build the Maglev table: {0}")]
    Maglev(#[from] MaglevError),
}

/// What `set_endpoints` changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointsChange {
    /// Backends that left the pool entirely; their flows should be reset
    /// with [`Router::reset_flows`].
    pub removed: Vec<SocketAddr>,
}

/// Which flows [`Router::reset_flows`] tears down.
#[derive(Clone, Copy, Debug)]
pub enum FlowSelector<'a> {
    /// Flows whose backend is one of these (the backend went away).
    Backends(&'a [SocketAddr]),
    /// Every flow of a pool (the service went away).
    Pool(PoolId),
    /// Flows whose client is this address (the client pod went away).
    Client(IpAddr),
}

/// What [`Router::reset_flows`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResetReport {
    /// Flows and records removed.
    pub removed: usize,
    /// TCP RSTs handed to the emit callback.
    pub resets_sent: usize,
}

/// How a new service flow is served (see `Router::service_mode`).
#[derive(Clone, Copy, Debug)]
struct ServiceMode {
    /// Only this node's endpoints may take it.
    local_only: bool,
    /// The client is masqueraded to the node's address.
    masquerade: bool,
}

/// The node's packet router and NAT. Share it between worker threads
/// (`Arc<Router>`); every method takes `&self`.
pub struct Router {
    config: RouterConfig,
    snapshot: ArcSwap<Snapshot>,
    conntrack: ConnTrack,
    /// Fixed-seed hash for backend choice: the same flow picks the same
    /// backend on every worker and after a restart.
    choice_hasher: FlowHasher,
    counters: Counters,
    /// Serialises publishers (control plane only).
    publish: Mutex<()>,
    /// NetworkPolicy, decided at flow setup (see `policy`).
    policy: ArcSwap<PolicySnapshot>,
    /// Whether some pod is isolated: while not, new flows skip the gate.
    policy_on: AtomicBool,
}

/// A worker thread's handle on the router: it keeps the current snapshot
/// (re-checked with one atomic load per packet), an epoch pin for the batch
/// and its own counter stripe, so the per-packet path touches no shared
/// cache line it does not need.
///
/// Call [`Worker::end_batch`] before the thread blocks (e.g. in `epoll`), so
/// flows removed meanwhile can be freed.
pub struct Worker<'r> {
    router: &'r Router,
    snapshot: arc_swap::Cache<&'r ArcSwap<Snapshot>, Arc<Snapshot>>,
    guard: Option<epoch::Guard>,
    stripe: (usize, bool),
}

impl Worker<'_> {
    /// As [`Router::process`].
    #[inline]
    pub fn process(&mut self, now: Timestamp, pkt: &mut PacketBuf, ingress: Link) -> Verdict {
        let guard = self.guard.get_or_insert_with(epoch::pin);
        let snap = self.snapshot.load();
        let v = self.router.process_inner(now, pkt, ingress, snap, guard);
        if v == Verdict::Reply {
            pkt.vnet = VnetHdr::NONE;
        }
        self.router.counters.count(self.stripe, v);
        v
    }

    /// Ends a batch of packets: releases the epoch pin.
    pub fn end_batch(&mut self) {
        self.guard = None;
    }
}

impl Router {
    /// A router with no pods and no services.
    pub fn new(config: RouterConfig) -> Router {
        Router {
            conntrack: ConnTrack::new(config.conntrack),
            config,
            snapshot: ArcSwap::from_pointee(Snapshot::empty()),
            choice_hasher: FlowHasher::fixed(0x706f_646e_6574),
            counters: Counters::new(),
            publish: Mutex::new(()),
            policy: ArcSwap::from_pointee(PolicySnapshot::default()),
            policy_on: AtomicBool::new(false),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RouterConfig {
        &self.config
    }

    /// The connection tracking table (for sweeps and listings).
    pub fn conntrack(&self) -> &ConnTrack {
        &self.conntrack
    }

    /// Service frontends (address, port, protocol) in the current snapshot.
    pub fn frontend_count(&self) -> usize {
        self.snapshot.load().frontends.len()
    }

    /// Verdict counters, and the connection tracking table's evictions.
    pub fn stats(&self) -> RouterStats {
        RouterStats {
            evictions: self.conntrack.evictions(),
            ..self.counters.read()
        }
    }

    // ---- control plane -------------------------------------------------

    /// Replaces the set of pods. Cost: O(pods).
    pub fn set_pods(&self, pods: &[(PodId, PodAddrs)]) -> Result<(), UpdateError> {
        let _g = self.publish.lock();
        let old = self.snapshot.load_full();
        let mut by_v4 = V4PodIndex::new(self.config.network.pod_subnets.iter().find_map(
            |n| match n {
                IpNet::V4(n) => Some(*n),
                IpNet::V6(_) => None,
            },
        ));
        let mut by_v6: HashMap<Ipv6Addr, PodId, ahash::RandomState> = HashMap::default();
        let max = pods
            .iter()
            .map(|(id, _)| id.0 as usize + 1)
            .max()
            .unwrap_or(0);
        let mut table = vec![None; max];
        for &(id, addrs) in pods {
            if id.0 == u32::MAX {
                return Err(UpdateError::PodIdOutOfRange(id));
            }
            if let Some(a) = addrs.v4 {
                if let Some(first) = by_v4.insert(a.to_bits(), id) {
                    return Err(UpdateError::DuplicatePodAddress {
                        addr: a.into(),
                        first,
                        second: id,
                    });
                }
            }
            if let Some(a) = addrs.v6 {
                if let Some(first) = by_v6.insert(a, id) {
                    return Err(UpdateError::DuplicatePodAddress {
                        addr: a.into(),
                        first,
                        second: id,
                    });
                }
            }
            table[id.0 as usize] = Some(addrs);
        }
        self.snapshot.store(Arc::new(Snapshot {
            pods: table,
            pod_by_v4: by_v4,
            pod_by_v6: by_v6,
            frontends: old.frontends.clone(),
            pools: old.pools.clone(),
            service_addrs: old.service_addrs.clone(),
        }));
        Ok(())
    }

    /// Replaces the set of service pools and their frontends. Pools that
    /// stay keep their backends; new pools start without backends; the ids
    /// of pools that went away are returned (reset their flows with
    /// [`FlowSelector::Pool`]). Cost: O(pools).
    pub fn set_services(&self, specs: &[PoolSpec]) -> Result<Vec<PoolId>, UpdateError> {
        let _g = self.publish.lock();
        let old = self.snapshot.load_full();
        let mut frontends: HashMap<Frontend, Arc<ServicePool>, ahash::RandomState> =
            HashMap::default();
        let mut pools: HashMap<PoolId, Arc<ServicePool>, ahash::RandomState> = HashMap::default();
        let mut service_addrs: HashMap<IpAddr, (), ahash::RandomState> = HashMap::default();
        for spec in specs {
            let pool = match old.pools.get(&spec.id) {
                Some(p)
                    if p.frontends() == spec.frontends.as_slice()
                        && p.affinity_timeout() == spec.session_affinity
                        && p.traffic() == spec.traffic =>
                {
                    p.clone()
                }
                Some(p) => Arc::new(ServicePool::respecified(spec, p)),
                None => Arc::new(ServicePool::new(spec)),
            };
            for fe in &spec.frontends {
                if let Some(other) = frontends.insert(*fe, pool.clone()) {
                    return Err(UpdateError::DuplicateFrontend {
                        addr: fe.addr,
                        port: fe.port,
                        protocol: fe.protocol,
                        first: other.id(),
                        second: spec.id,
                    });
                }
                // The node's own addresses carry node ports, but a packet
                // to another port of them is for the host, not refused.
                if !self.is_host_addr(fe.addr) {
                    service_addrs.insert(fe.addr, ());
                }
            }
            pools.insert(spec.id, pool);
        }
        let gone = old
            .pools
            .keys()
            .filter(|id| !pools.contains_key(id))
            .copied()
            .collect();
        self.snapshot.store(Arc::new(Snapshot {
            pods: old.pods.clone(),
            pod_by_v4: old.pod_by_v4.clone(),
            pod_by_v6: old.pod_by_v6.clone(),
            frontends,
            pools,
            service_addrs,
        }));
        Ok(gone)
    }

    /// Replaces one pool's backends. Cost: O(this pool's backends) — the
    /// pool's Maglev table is rebuilt, nothing else is touched. Backends
    /// that left are returned so their flows can be reset; backends marked
    /// terminating stay (their flows live on).
    pub fn set_endpoints(
        &self,
        pool: PoolId,
        backends: &[Backend],
    ) -> Result<EndpointsChange, UpdateError> {
        let snap = self.snapshot.load();
        let p = snap
            .pools
            .get(&pool)
            .ok_or(UpdateError::UnknownPool(pool))?;
        let current = p.backends().table_size();
        let set = BackendSet::build(backends, self.config.maglev_min_ratio, current)?;
        let old = p.swap_backends(set);
        let now = p.backends();
        let removed = old
            .backends()
            .iter()
            .filter(|b| !now.backends().iter().any(|n| n.addr == b.addr))
            .map(|b| b.addr)
            .collect();
        Ok(EndpointsChange { removed })
    }

    /// The backends of a pool, or `None` for an unknown pool.
    pub fn endpoints(&self, pool: PoolId) -> Option<Vec<Backend>> {
        let snap = self.snapshot.load();
        snap.pools
            .get(&pool)
            .map(|p| p.backends().backends().to_vec())
    }

    /// Removes the selected flows (and affinity / fragment records) and,
    /// for each TCP flow, hands `emit` a RST for the side that is still
    /// there, with the link to send it on, so no client is left hanging on
    /// a connection to a backend that is gone. Runs on the control thread;
    /// cost O(conntrack table).
    pub fn reset_flows(
        &self,
        selector: FlowSelector<'_>,
        emit: &mut dyn FnMut(Link, &[u8]),
    ) -> ResetReport {
        let matches = |f: &Flow| -> bool {
            match selector {
                FlowSelector::Backends(list) => {
                    f.original().kind != EntryKind::Fragment
                        && list.contains(&SocketAddr::new(f.reply().src, f.reply().src_port))
                }
                FlowSelector::Pool(id) => {
                    f.original().kind != EntryKind::Fragment && f.tag() == id.0
                }
                FlowSelector::Client(addr) => f.original().src == addr,
            }
        };
        // A client holding no entry (the share sketch never counts below
        // the truth) has nothing to remove: no pass over the table, which a
        // deletion of many pods would otherwise make once per pod.
        if let FlowSelector::Client(addr) = selector {
            let key = FlowKey {
                src: addr,
                dst: addr,
                src_port: 0,
                dst_port: 0,
                protocol: proto::TCP,
                kind: EntryKind::Flow,
            };
            if self.conntrack.source_entries(&key) == 0 {
                return ResetReport::default();
            }
        }
        let removed = self.conntrack.remove_where(|f| matches(f));
        let snap = self.snapshot.load();
        let mut report = ResetReport {
            removed: removed.len(),
            resets_sent: 0,
        };
        let mut buf = [0u8; 60];
        for flow in &removed {
            if flow.original.kind != EntryKind::Flow || flow.original.protocol != proto::TCP {
                continue;
            }
            if matches!(flow.state, FlowState::Close | FlowState::TimeWait) {
                continue;
            }
            // Tell the side that is still there: the client when the backend
            // went, the backend when the client went.
            let (to, seq, from) = match selector {
                FlowSelector::Client(_) => (
                    SocketAddr::new(flow.reply.src, flow.reply.src_port),
                    flow.original_next_seq,
                    SocketAddr::new(flow.reply.dst, flow.reply.dst_port),
                ),
                _ => (
                    SocketAddr::new(flow.original.src, flow.original.src_port),
                    flow.reply_next_seq,
                    SocketAddr::new(flow.original.dst, flow.original.dst_port),
                ),
            };
            let link = match snap.pod_at(to.ip()) {
                Some(id) => Link::Pod(id),
                None => Link::Host,
            };
            if let Some(n) = wire::write_tcp_rst(&mut buf, from, to, seq, None) {
                emit(link, &buf[..n]);
                report.resets_sent += 1;
            }
        }
        report
    }

    /// Removes expired flows and records; returns how many. Call it
    /// periodically from a control thread.
    pub fn sweep(&self, now: Timestamp) -> usize {
        self.conntrack.sweep(now)
    }

    /// Makes the storage of removed flows reusable once no worker can still
    /// hold them; cheap (no table scan). Call it often from a control
    /// thread (more often than [`Router::sweep`]).
    pub fn reclaim(&self) -> usize {
        self.conntrack.reclaim()
    }

    /// Every tracked flow and record.
    pub fn flows(&self) -> Vec<FlowSummary> {
        self.conntrack.entries()
    }

    // ---- packet path ---------------------------------------------------

    /// Processes one packet that arrived on `ingress`. The packet is
    /// rewritten in place (or replaced by a generated answer); the verdict
    /// says what to do with it. Never panics, never blocks, never allocates.
    ///
    /// Worker threads use a [`Worker`] instead, which saves the per-packet
    /// snapshot load and epoch pin.
    #[inline]
    pub fn process(&self, now: Timestamp, pkt: &mut PacketBuf, ingress: Link) -> Verdict {
        let snap = self.snapshot.load();
        let guard = epoch::pin();
        let v = self.process_inner(now, pkt, ingress, &snap, &guard);
        if v == Verdict::Reply {
            pkt.vnet = VnetHdr::NONE;
        }
        let stripe = STRIPE.with(|s| *s);
        self.counters.count(stripe, v);
        v
    }

    /// A per-thread handle for a worker's packet loop.
    pub fn worker(&self) -> Worker<'_> {
        Worker {
            router: self,
            snapshot: arc_swap::Cache::new(&self.snapshot),
            guard: None,
            stripe: STRIPE.with(|s| *s),
        }
    }

    #[inline(always)]
    fn process_inner(
        &self,
        now: Timestamp,
        pkt: &mut PacketBuf,
        ingress: Link,
        snap: &Snapshot,
        guard: &epoch::Guard,
    ) -> Verdict {
        // Whether the fast path already looked this flow up and found none,
        // so the general path need not look again.
        let mut untracked = false;
        if self.config.ipv4_fast_path {
            if let Some(v) = self.established_v4(now, pkt, ingress, snap, guard, &mut untracked) {
                return v;
            }
        }
        let info = match wire::parse(pkt.as_slice()) {
            Ok(i) => i,
            Err(_) => return Verdict::Drop(DropReason::Malformed),
        };
        // Link-layer padding beyond the IP length is not part of the packet.
        pkt.set_len(info.packet_len);
        let l4 = match virtio::check(&pkt.vnet, &info) {
            Ok(mode) => mode,
            Err(VnetError::ForeignPartial) if matches!(info.fragment, Fragment::None) => {
                // A partial checksum this path does not rewrite in place
                // (ICMP, other protocols): finish it, as the kernel does
                // before forwarding such a packet where it cannot stay partial.
                let hdr = pkt.vnet;
                if !virtio::complete_checksum(pkt.as_mut_slice(), &hdr, info.protocol) {
                    return Verdict::Drop(DropReason::BadOffload);
                }
                pkt.vnet.flags &= !virtio::flags::NEEDS_CSUM;
                L4Checksum::Full
            }
            Err(_) => return Verdict::Drop(DropReason::BadOffload),
        };
        if let Link::Pod(id) = ingress {
            match snap.pod(id) {
                Some(addrs) if addrs.owns(info.src) => {}
                Some(_) => return Verdict::Drop(DropReason::Spoofed),
                None => return Verdict::Drop(DropReason::UnknownPod),
            }
        }
        match info.transport {
            Transport::Tcp { .. } | Transport::Udp { .. } => {
                self.flow_packet(now, pkt, &info, ingress, snap, guard, untracked, l4)
            }
            Transport::IcmpError { .. } => self.icmp_error(now, pkt, &info, ingress, snap, guard),
            Transport::IcmpEcho { .. } if info.fragment == Fragment::None => {
                self.echo_packet(now, pkt, &info, ingress, snap, guard)
            }
            Transport::IcmpEcho { .. } | Transport::Other => match info.fragment {
                Fragment::Later { id } => self.later_fragment(pkt, &info, id, ingress, snap, guard),
                // Nothing to track without ports: decided packet by packet.
                _ => match self.policy_gate(info.src, info.dst, info.protocol, 0) {
                    policy::Gate::Deny(reason) => Verdict::Drop(reason),
                    _ => self.forward_plain(pkt, &info, ingress, snap),
                },
            },
        }
    }

    /// The specialised path for the packet a router sees most: IPv4 without
    /// options or fragmentation, TCP or UDP, of a tracked flow. One pass over
    /// fixed offsets, one conntrack lookup, one combined checksum update for
    /// addresses, ports and TTL. Anything else (and every check that fails)
    /// returns `None` and takes the general path, which gives the same result
    /// (see the differential test).
    #[inline(always)]
    fn established_v4(
        &self,
        now: Timestamp,
        pkt: &mut PacketBuf,
        ingress: Link,
        snap: &Snapshot,
        guard: &epoch::Guard,
        untracked: &mut bool,
    ) -> Option<Verdict> {
        use wire::checksum::{apply, diff16, diff32};
        let vnet = pkt.vnet;
        let b = pkt.as_mut_slice();
        let h: &[u8; 20] = b.get(..20)?.try_into().ok()?;
        if h[0] != 0x45 {
            return None;
        }
        let be16 = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
        let be32 = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let total = usize::from(be16(2));
        let ttl = h[8];
        let protocol = h[9];
        // Not a fragment (MF clear, offset 0); TTL left to decrement.
        if total > b.len() || be16(6) & 0x3fff != 0 || ttl <= 1 {
            return None;
        }
        if protocol != proto::TCP && protocol != proto::UDP {
            return None;
        }
        let src = be32(12);
        let dst = be32(16);
        let ports = b.get(20..24)?;
        let sport = u16::from_be_bytes([ports[0], ports[1]]);
        let dport = u16::from_be_bytes([ports[2], ports[3]]);
        let key = self
            .conntrack
            .hashed(PackedKey::v4_flow(src, dst, sport, dport, protocol));
        // The bucket is most likely not in cache: start loading it while
        // the header is checked.
        self.conntrack.prefetch(&key);
        let sum = (1..10).fold(u32::from(be16(0)), |acc, i| acc + u32::from(be16(2 * i)));
        if wire::checksum::fold(sum) != 0xffff {
            return None;
        }
        if let Link::Pod(id) = ingress {
            if snap.pod(id)?.v4.map(Ipv4Addr::to_bits) != Some(src) {
                return None;
            }
        }
        let l4 = b.get(20..total)?;
        let (check_at, header_len) = match protocol {
            proto::TCP => {
                let doff = usize::from(*l4.get(12)? >> 4) * 4;
                if doff < 20 || doff > l4.len() {
                    return None;
                }
                (16, doff)
            }
            proto::UDP => {
                let ulen = usize::from(u16::from_be_bytes([*l4.get(4)?, *l4.get(5)?]));
                if ulen < 8 || ulen > l4.len() {
                    return None;
                }
                (6, 8)
            }
            _ => return None,
        };
        let partial = match virtio::check_fields(&vnet, wire::IpVersion::V4, protocol, 20, true) {
            Ok(mode) => mode == L4Checksum::Seed,
            Err(_) => return None,
        };
        // The router's guards are always `epoch::pin()`'s.
        let (flow, direction) = match self.conntrack.find(&key, guard) {
            Some(found) => (found.flow, found.direction),
            None => {
                // A new flow to a service without affinity takes this path
                // too; everything else (rejects, affinity, plain routing)
                // goes to the general path, which need not look up again.
                let syn_only = protocol != proto::TCP || l4[13] & 0x12 == 0x02;
                let pool = snap.frontends.get(&Frontend {
                    addr: IpAddr::V4(Ipv4Addr::from(dst)),
                    port: dport,
                    protocol,
                });
                // Traffic from the host side (outside clients) and pools with
                // a Local policy are decided on the general path.
                let plain = |p: &ServicePool| {
                    p.affinity_timeout().is_none() && p.traffic() == Default::default()
                };
                let backend = match pool {
                    Some(pool) if syn_only && ingress != Link::Host && plain(pool) => pool
                        .backends()
                        .choose(self.choice_hasher.hash_packed(key.key()))
                        .map(|b| (b, pool.id())),
                    _ => None,
                };
                let Some((backend, pool)) = backend else {
                    *untracked = true;
                    return None;
                };
                if let policy::Gate::Deny(reason) = self.policy_gate(
                    IpAddr::V4(Ipv4Addr::from(src)),
                    backend.ip(),
                    protocol,
                    backend.port(),
                ) {
                    return Some(Verdict::Drop(reason));
                }
                match self.insert_service_flow(now, &key, backend, pool, guard) {
                    Ok(flow) => (flow, Direction::Original),
                    Err(v) => return Some(v),
                }
            }
        };
        // A new SYN on the tuple of a finished flow (a client port used
        // again) is a new connection: the general path decides it afresh.
        if protocol == proto::TCP
            && direction == Direction::Original
            && l4[13] & 0x12 == 0x02
            && matches!(flow.state(), FlowState::Close | FlowState::TimeWait)
        {
            return None;
        }
        let other = flow.packed(match direction {
            Direction::Original => Direction::Reply,
            Direction::Reply => Direction::Original,
        });
        if !other.is_v4() {
            return None;
        }
        let (new_src, new_sport) = (other.dst_bits() as u32, other.dst_port());
        let (new_dst, new_dport) = (other.src_bits() as u32, other.src_port());

        flow.touch(now);
        if protocol == proto::TCP {
            let flags = TcpFlags(l4[13]);
            let seq = u32::from_be_bytes([l4[4], l4[5], l4[6], l4[7]]);
            let payload = (l4.len() - header_len) as u32;
            let seg_len = payload
                + u32::from(flags.contains(TcpFlags::SYN))
                + u32::from(flags.contains(TcpFlags::FIN));
            flow.track_tcp(direction, flags, seq, seg_len);
        } else {
            flow.track_datagram(direction);
        }

        let addr_diff = diff32(src, new_src) + diff32(dst, new_dst);
        let ttl_diff = diff16(
            u16::from_be_bytes([ttl, protocol]),
            u16::from_be_bytes([ttl - 1, protocol]),
        );
        let ip_check = apply(be16(10), addr_diff + ttl_diff);
        let l4_old = u16::from_be_bytes([l4[check_at], l4[check_at + 1]]);
        let l4_diff = addr_diff + diff16(sport, new_sport) + diff16(dport, new_dport);
        let l4_check = if partial {
            // The field holds the pseudo-header seed: only addresses count.
            virtio::apply_to_seed(l4_old, addr_diff)
        } else if protocol == proto::UDP && l4_old == 0 {
            0 // no UDP checksum: stays absent
        } else {
            match apply(l4_old, l4_diff) {
                0 if protocol == proto::UDP => 0xffff,
                c => c,
            }
        };
        b[8] = ttl - 1;
        b[10..12].copy_from_slice(&ip_check.to_be_bytes());
        b[12..16].copy_from_slice(&new_src.to_be_bytes());
        b[16..20].copy_from_slice(&new_dst.to_be_bytes());
        let t = &mut b[20..];
        t[0..2].copy_from_slice(&new_sport.to_be_bytes());
        t[2..4].copy_from_slice(&new_dport.to_be_bytes());
        t[check_at..check_at + 2].copy_from_slice(&l4_check.to_be_bytes());
        pkt.set_len(total);
        Some(Verdict::Forward(match snap.pod_by_v4.get(new_dst) {
            Some(id) => Link::Pod(id),
            None => Link::Host,
        }))
    }

    /// TCP and UDP: existing flow, new service flow, or plain forwarding.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    fn flow_packet(
        &self,
        now: Timestamp,
        pkt: &mut PacketBuf,
        info: &PacketInfo,
        ingress: Link,
        snap: &Snapshot,
        guard: &epoch::Guard,
        untracked: bool,
        l4: L4Checksum,
    ) -> Verdict {
        let key = flow_key(info);
        let mut found = if untracked {
            None
        } else {
            self.conntrack
                .lookup(&key, guard)
                .map(|f| (f.flow, f.direction))
        };
        // A new SYN on the tuple of a finished flow is a new connection,
        // as Linux conntrack treats it: the old entry goes and the service
        // chooses a backend again (the old one may be terminating or gone;
        // reopening the tuple towards it sent a rolling update's client,
        // whose port came round again, to a pod that had stopped
        // accepting).
        if let (Some((flow, Direction::Original)), Transport::Tcp { flags, .. }) =
            (&found, info.transport)
        {
            if flags.contains(TcpFlags::SYN)
                && !flags.contains(TcpFlags::ACK)
                && self.conntrack.retire_finished(flow)
            {
                found = None;
            }
        }
        let (flow, dir) = match found {
            Some(f) => f,
            None => {
                if self.outside_to_inside(info.src, info.dst, ingress, snap) {
                    return Verdict::Drop(DropReason::FromOutside);
                }
                let frontend = Frontend {
                    addr: info.dst,
                    port: key.dst_port,
                    protocol: info.protocol,
                };
                let created = match snap.frontends.get(&frontend) {
                    Some(pool) => self.new_service_flow(now, pkt, info, &key, pool, ingress, guard),
                    None => match self.policy_gate(info.src, info.dst, info.protocol, key.dst_port)
                    {
                        policy::Gate::Deny(reason) => return Verdict::Drop(reason),
                        _ if self.masquerades(info.dst, ingress, snap) => {
                            self.new_egress_flow(now, info, &key, guard)
                        }
                        policy::Gate::Pass => return self.forward_plain(pkt, info, ingress, snap),
                        policy::Gate::Track => {
                            return self.forward_tracked(now, pkt, info, &key, ingress, snap, guard)
                        }
                    },
                };
                match created {
                    Ok(f) => (f, Direction::Original),
                    Err(v) => return v,
                }
            }
        };
        if !wire::decrement_ttl(pkt.as_mut_slice(), info) {
            return self.time_exceeded(pkt, info);
        }
        flow.touch(now);
        if let Transport::Tcp { seq, flags, .. } = info.transport {
            flow.track_tcp(dir, flags, seq, tcp_segment_len(pkt.as_slice(), info));
        } else {
            flow.track_datagram(dir);
        }
        let t = translation(flow, dir);
        wire::rewrite_with(pkt.as_mut_slice(), info, &t, l4);
        if let Fragment::First { id } = info.fragment {
            self.remember_fragment(now, info, id, &t, guard);
        }
        Verdict::Forward(route(snap, t.dst))
    }

    /// Creates the flow of a packet addressed to a service frontend, or
    /// answers it when it cannot be served.
    #[allow(clippy::too_many_arguments)]
    fn new_service_flow<'g>(
        &'g self,
        now: Timestamp,
        pkt: &mut PacketBuf,
        info: &PacketInfo,
        key: &FlowKey,
        pool: &ServicePool,
        ingress: Link,
        guard: &'g epoch::Guard,
    ) -> Result<&'g Flow, Verdict> {
        let backends = pool.backends();
        if let Transport::Tcp { flags, .. } = info.transport {
            // Only a SYN opens a connection; anything else (e.g. a segment
            // of a connection from before a restart) gets a RST at once,
            // unless policy denies the pair (then it is dropped, as a flow
            // removed by a policy change must not be reset).
            if !flags.contains(TcpFlags::SYN) || flags.contains(TcpFlags::ACK) {
                if let Some(b) = backends.choose(self.choice_hasher.hash(key)) {
                    if let policy::Gate::Deny(reason) =
                        self.policy_gate(info.src, b.ip(), info.protocol, b.port())
                    {
                        return Err(Verdict::Drop(reason));
                    }
                }
                return Err(self.reject(pkt, info, DropReason::NoEndpoints));
            }
        }
        let mode = self.service_mode(pool, ingress, info.dst);
        let backend = if mode.local_only || pool.affinity_timeout().is_none() {
            self.choose_backend(key, &backends, mode.local_only)?
        } else {
            let timeout = pool.affinity_timeout().unwrap_or_default();
            self.choose_with_affinity(now, info, key, pool, &backends, timeout, guard)
        };
        let Some(backend) = backend else {
            return Err(self.reject(pkt, info, DropReason::NoEndpoints));
        };
        // Policy before anything answers: a denied flow is dropped, never
        // reset.
        if let policy::Gate::Deny(reason) =
            self.policy_gate(info.src, backend.ip(), info.protocol, backend.port())
        {
            return Err(Verdict::Drop(reason));
        }
        let hashed = self.conntrack.hashed(key.pack());
        match (mode.masquerade, self.masquerade_addr(info.dst)) {
            (true, Some(node)) => {
                let reply = FlowKey {
                    src: backend.ip(),
                    dst: node,
                    src_port: backend.port(),
                    dst_port: key.src_port,
                    protocol: key.protocol,
                    kind: EntryKind::Flow,
                }
                .pack();
                self.insert_snat_flow(now, &hashed, reply, key.src_port, pool.id().0, guard)
            }
            _ => self.insert_service_flow(now, &hashed, backend, pool.id(), guard),
        }
    }

    /// How a service flow to `dst` that entered on `ingress` is served.
    /// Traffic from the host side to an address outside the service CIDR
    /// (node port, LoadBalancer or external IP) is external; from pods,
    /// every frontend is internal (kube-proxy short-circuits pod traffic to
    /// external addresses the same way).
    fn service_mode(&self, pool: &ServicePool, ingress: Link, dst: IpAddr) -> ServiceMode {
        let external = ingress == Link::Host && !self.in_service_cidr(dst);
        let traffic = pool.traffic();
        ServiceMode {
            local_only: if external {
                traffic.external_local
            } else {
                traffic.internal_local
            },
            masquerade: external && !traffic.external_local,
        }
    }

    /// The backend the flow's hash picks (from this node's endpoints only
    /// when `local_only`); without session affinity.
    fn choose_backend(
        &self,
        key: &FlowKey,
        backends: &BackendSet,
        local_only: bool,
    ) -> Result<Option<SocketAddr>, Verdict> {
        let hash = self.choice_hasher.hash(key);
        if !local_only {
            return Ok(backends.choose(hash));
        }
        let net = &self.config.network;
        match backends.choose_where(hash, |a| {
            net.pod_subnets.iter().any(|n| n.contains(&a.ip()))
        }) {
            Some(b) => Ok(Some(b)),
            // kube-proxy drops traffic for a Local policy without a local
            // endpoint (other nodes may have one).
            None if !backends.eligible().is_empty() => {
                Err(Verdict::Drop(DropReason::NoLocalEndpoints))
            }
            None => Ok(None),
        }
    }

    /// Tracks a new flow `key` of a service pool going to `backend`.
    #[inline]
    fn insert_service_flow<'g>(
        &'g self,
        now: Timestamp,
        key: &HashedKey,
        backend: SocketAddr,
        pool: PoolId,
        guard: &'g epoch::Guard,
    ) -> Result<&'g Flow, Verdict> {
        // Hairpin (a pod reaching itself through its own service) is
        // handled by the reply key: see `PackedKey::nat_reply`.
        let reply = key.key().nat_reply(backend);
        let state = if key.key().protocol() == proto::TCP {
            FlowState::SynSent
        } else {
            FlowState::Unreplied
        };
        let mut entry = PackedEntry {
            original: *key,
            reply,
            hook_reply: true,
            state,
            record_timeout_ms: 0,
            tag: pool.0,
        };
        // The same client port may reach one backend through two frontends
        // (two services, or a NodePort and a cluster IP); the second flow's
        // reply tuple would then be the first's. As Linux's NAT does, give
        // the second one another source port. A few pseudo-random tries in
        // the ephemeral range, derived from the flow so they are stable.
        for attempt in 0..=8u64 {
            if attempt > 0 {
                let seed = self.choice_hasher.hash_packed(key.key());
                let h = seed.wrapping_add(attempt.wrapping_mul(0x9e37_79b9_7f4a_7c15));
                entry.reply = reply.with_dst_port(32_768 + (h % 28_232) as u16);
            }
            match self.conntrack.add(&entry, now, guard) {
                Ok(found) => return Ok(found.flow),
                Err(e) => match refused_flow(&e) {
                    Some(verdict) => return Err(verdict),
                    None => continue,
                },
            }
        }
        Err(Verdict::Drop(DropReason::ReplyClash))
    }

    #[allow(clippy::too_many_arguments)]
    fn choose_with_affinity(
        &self,
        now: Timestamp,
        info: &PacketInfo,
        key: &FlowKey,
        pool: &ServicePool,
        backends: &BackendSet,
        timeout: std::time::Duration,
        guard: &epoch::Guard,
    ) -> Option<SocketAddr> {
        let record_key = FlowKey {
            src: info.src,
            dst: info.dst,
            src_port: 0,
            dst_port: key.dst_port,
            protocol: key.protocol,
            kind: EntryKind::Affinity,
        };
        if let Some(found) = self.conntrack.lookup(&record_key, guard) {
            let r = found.flow.reply();
            let pinned = SocketAddr::new(r.src, r.src_port);
            if backends.is_eligible(pinned) {
                found.flow.touch(now);
                return Some(pinned);
            }
        }
        let chosen = backends.choose(self.choice_hasher.hash_addr(info.src))?;
        let record = NewEntry {
            original: record_key,
            reply: FlowKey {
                src: chosen.ip(),
                src_port: chosen.port(),
                ..record_key
            },
            hook_reply: false,
            state: FlowState::Record,
            record_timeout: timeout,
            tag: pool.id().0,
        };
        // A full table or a racing insert only costs stickiness for this
        // flow; the Maglev choice by client address is sticky anyway while
        // the backend set is unchanged.
        if let Ok(found) = self.conntrack.insert(record, now, guard) {
            let r = found.flow.reply();
            let pinned = SocketAddr::new(r.src, r.src_port);
            if backends.is_eligible(pinned) {
                return Some(pinned);
            }
        }
        Some(chosen)
    }

    /// Records the translation of a first fragment so later fragments of
    /// the same datagram (which carry no ports) get the same addresses.
    fn remember_fragment(
        &self,
        now: Timestamp,
        info: &PacketInfo,
        id: u32,
        new: &Endpoints,
        guard: &epoch::Guard,
    ) {
        let original = fragment_key(info, id);
        let record = NewEntry {
            original,
            reply: FlowKey {
                src: new.src,
                dst: new.dst,
                ..original
            },
            hook_reply: false,
            state: FlowState::Record,
            record_timeout: self.config.conntrack.timeouts.fragment,
            tag: 0,
        };
        // When the table is full the later fragments are dropped and
        // counted (FragmentWithoutFlow); the sender retransmits.
        let _ = self.conntrack.insert(record, now, guard);
    }

    fn later_fragment(
        &self,
        pkt: &mut PacketBuf,
        info: &PacketInfo,
        id: u32,
        ingress: Link,
        snap: &Snapshot,
        guard: &epoch::Guard,
    ) -> Verdict {
        let key = fragment_key(info, id);
        let Some(found) = self.conntrack.lookup(&key, guard) else {
            if is_service_addr(&self.config.network, snap, info.dst) {
                return Verdict::Drop(DropReason::FragmentWithoutFlow);
            }
            return self.forward_plain(pkt, info, ingress, snap);
        };
        if !wire::decrement_ttl(pkt.as_mut_slice(), info) {
            return Verdict::Drop(DropReason::TtlExceeded);
        }
        let r = found.flow.reply();
        let new = Endpoints {
            src: r.src,
            src_port: 0,
            dst: r.dst,
            dst_port: 0,
        };
        wire::rewrite(pkt.as_mut_slice(), info, &new);
        Verdict::Forward(route(snap, new.dst))
    }

    /// An ICMP error about a translated flow is translated too (outer and
    /// embedded headers), or path MTU discovery breaks through services.
    fn icmp_error(
        &self,
        _now: Timestamp,
        pkt: &mut PacketBuf,
        info: &PacketInfo,
        ingress: Link,
        snap: &Snapshot,
        guard: &epoch::Guard,
    ) -> Verdict {
        let Ok(inner) = wire::parse_inner(pkt.as_slice(), info) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        // The embedded packet travelled the other way; its reversed tuple
        // is a key of the flow in the direction this error travels.
        let key = FlowKey {
            src: inner.dst,
            dst: inner.src,
            src_port: inner.dst_port,
            dst_port: inner.src_port,
            protocol: inner.protocol,
            kind: EntryKind::Flow,
        };
        let Some(found) = self.conntrack.lookup(&key, guard) else {
            return self.forward_plain(pkt, info, ingress, snap);
        };
        if !wire::decrement_ttl(pkt.as_mut_slice(), info) {
            // Never an ICMP error about an ICMP error.
            return Verdict::Drop(DropReason::TtlExceeded);
        }
        let other = found.flow.key(match found.direction {
            Direction::Original => Direction::Reply,
            Direction::Reply => Direction::Original,
        });
        let inner_new = Endpoints {
            src: other.src,
            src_port: other.src_port,
            dst: other.dst,
            dst_port: other.dst_port,
        };
        let outer_dst = other.src;
        // Rewrite the error's source only when the endpoint itself sent it;
        // an error from a router on the way keeps that router's address.
        let outer_src = if info.src == inner.dst {
            other.dst
        } else {
            info.src
        };
        wire::rewrite_icmp_error(
            pkt.as_mut_slice(),
            info,
            &inner,
            outer_src,
            outer_dst,
            &inner_new,
        );
        Verdict::Forward(route(snap, outer_dst))
    }

    /// A new flow without translation that the policy gate wants tracked:
    /// forwarded as [`Router::forward_plain`] does, and tracked when it goes
    /// out, so its replies pass as part of it.
    #[allow(clippy::too_many_arguments)]
    fn forward_tracked(
        &self,
        now: Timestamp,
        pkt: &mut PacketBuf,
        info: &PacketInfo,
        key: &FlowKey,
        ingress: Link,
        snap: &Snapshot,
        guard: &epoch::Guard,
    ) -> Verdict {
        let verdict = self.forward_plain(pkt, info, ingress, snap);
        if !matches!(verdict, Verdict::Forward(_)) {
            return verdict;
        }
        let flow = match self.track_untranslated(now, key, guard) {
            Ok(flow) => flow,
            Err(refused) => return refused,
        };
        flow.touch(now);
        if let Transport::Tcp { seq, flags, .. } = info.transport {
            flow.track_tcp(
                Direction::Original,
                flags,
                seq,
                tcp_segment_len(pkt.as_slice(), info),
            );
        } else {
            flow.track_datagram(Direction::Original);
        }
        if let Fragment::First { id } = info.fragment {
            let t = translation(flow, Direction::Original);
            self.remember_fragment(now, info, id, &t, guard);
        }
        verdict
    }

    /// Forwarding without translation: pod to pod, pod to host, host to pod.
    fn forward_plain(
        &self,
        pkt: &mut PacketBuf,
        info: &PacketInfo,
        ingress: Link,
        snap: &Snapshot,
    ) -> Verdict {
        if ingress == Link::Host && self.config.edge.enabled() {
            if self.is_host_addr(info.dst) {
                // Steered here from the outward interface but not ours (a
                // reply to the host's own connection, a ping of the node):
                // back to the host, which delivers it locally.
                return Verdict::Forward(Link::Host);
            }
            if self.outside_to_inside(info.src, info.dst, ingress, snap) {
                return Verdict::Drop(DropReason::FromOutside);
            }
        }
        if is_service_addr(&self.config.network, snap, info.dst) {
            return self.reject(pkt, info, DropReason::NoService);
        }
        let out = match snap.pod_at(info.dst) {
            Some(id) => Link::Pod(id),
            // A pod address with no pod: as a router with no neighbour
            // would, say so.
            None if self.is_unowned_pod_addr(info.dst) => {
                return self.icmp_reply(
                    pkt,
                    info,
                    IcmpErrorKind::HostUnreachable,
                    DropReason::NoRoute,
                );
            }
            None => Link::Host,
        };
        if out == ingress {
            return Verdict::Drop(DropReason::NoRoute);
        }
        if !wire::decrement_ttl(pkt.as_mut_slice(), info) {
            return self.time_exceeded(pkt, info);
        }
        Verdict::Forward(out)
    }

    /// Refuses a packet the way kube-proxy's REJECT does: TCP RST, or ICMP
    /// port unreachable from the address the packet was sent to.
    fn reject(&self, pkt: &mut PacketBuf, info: &PacketInfo, otherwise: DropReason) -> Verdict {
        if let Transport::Tcp { .. } = info.transport {
            return match wire::write_tcp_reset(pkt.buffer_mut(), info) {
                Some(n) => {
                    pkt.set_len(n);
                    Verdict::Reply
                }
                None => Verdict::Drop(otherwise),
            };
        }
        match wire::write_icmp_error(
            pkt.buffer_mut(),
            info,
            info.dst,
            IcmpErrorKind::PortUnreachable,
        ) {
            Some(n) => {
                pkt.set_len(n);
                Verdict::Reply
            }
            None => Verdict::Drop(otherwise),
        }
    }

    fn time_exceeded(&self, pkt: &mut PacketBuf, info: &PacketInfo) -> Verdict {
        self.icmp_reply(
            pkt,
            info,
            IcmpErrorKind::TimeExceeded,
            DropReason::TtlExceeded,
        )
    }

    fn icmp_reply(
        &self,
        pkt: &mut PacketBuf,
        info: &PacketInfo,
        kind: IcmpErrorKind,
        otherwise: DropReason,
    ) -> Verdict {
        let src = match info.src {
            IpAddr::V4(_) => IpAddr::V4(self.config.network.gateway_v4),
            IpAddr::V6(_) => match self.config.network.gateway_v6 {
                Some(g) => IpAddr::V6(g),
                None => return Verdict::Drop(otherwise),
            },
        };
        match wire::write_icmp_error(pkt.buffer_mut(), info, src, kind) {
            Some(n) => {
                pkt.set_len(n);
                Verdict::Reply
            }
            None => Verdict::Drop(otherwise),
        }
    }
}

/// The conntrack key of a TCP/UDP packet as it travels.
#[inline]
fn flow_key(info: &PacketInfo) -> FlowKey {
    let (src_port, dst_port) = match info.transport {
        Transport::Tcp {
            src_port, dst_port, ..
        }
        | Transport::Udp { src_port, dst_port } => (src_port, dst_port),
        _ => (0, 0),
    };
    FlowKey {
        src: info.src,
        dst: info.dst,
        src_port,
        dst_port,
        protocol: info.protocol,
        kind: EntryKind::Flow,
    }
}

#[inline]
fn fragment_key(info: &PacketInfo, id: u32) -> FlowKey {
    FlowKey {
        src: info.src,
        dst: info.dst,
        src_port: (id >> 16) as u16,
        dst_port: id as u16,
        protocol: info.protocol,
        kind: EntryKind::Fragment,
    }
}

/// How a packet of `flow` travelling `dir` is rewritten: it leaves looking
/// like the reverse of the other direction's key.
#[inline]
fn translation(flow: &Flow, dir: Direction) -> Endpoints {
    let other = match dir {
        Direction::Original => flow.reply(),
        Direction::Reply => flow.original(),
    };
    Endpoints {
        src: other.dst,
        src_port: other.dst_port,
        dst: other.src,
        dst_port: other.src_port,
    }
}

#[inline]
fn route(snap: &Snapshot, dst: IpAddr) -> Link {
    match snap.pod_at(dst) {
        Some(id) => Link::Pod(id),
        None => Link::Host,
    }
}

fn is_service_addr(net: &NodeNetwork, snap: &Snapshot, addr: IpAddr) -> bool {
    snap.service_addrs.contains_key(&addr) || net.service_cidrs.iter().any(|n| n.contains(&addr))
}

/// Sequence space a TCP segment occupies: payload plus one for SYN and FIN.
#[inline]
fn tcp_segment_len(packet: &[u8], info: &PacketInfo) -> u32 {
    let Transport::Tcp { flags, .. } = info.transport else {
        return 0;
    };
    let header = packet
        .get(info.l4_offset + 12)
        .map_or(20, |b| usize::from(b >> 4) * 4);
    let payload = info.packet_len.saturating_sub(info.l4_offset + header) as u32;
    payload + u32::from(flags.contains(TcpFlags::SYN)) + u32::from(flags.contains(TcpFlags::FIN))
}

mod edge;
mod explain;
mod policy;
mod stats;
#[cfg(test)]
mod tests;

/// What a refused conntrack insertion means for the packet: a drop when the
/// table or the source's share is full; `None` for a reply tuple that clashes
/// with another flow's (the caller tries another port).
pub(crate) fn refused_flow(e: &InsertError) -> Option<Verdict> {
    match e {
        InsertError::TableFull { .. } => Some(Verdict::Drop(DropReason::ConntrackFull)),
        InsertError::SourceShareExceeded { .. } => {
            Some(Verdict::Drop(DropReason::ConntrackSourceShare))
        }
        InsertError::ReplyClash => None,
    }
}
