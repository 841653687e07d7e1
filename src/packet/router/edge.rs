//! The edges of the node: what the router does with traffic that crosses
//! the node's outward interface.
//!
//! * **Source NAT (masquerade).** A pod's new flow to an address beyond
//!   the node (not a pod, not a service, not the host, not a cluster CIDR)
//!   leaves with the node's address; so does the client of an external
//!   service with `externalTrafficPolicy: Cluster`. The translation is one
//!   conntrack entry whose reply key names the node's address and a port
//!   from [`SNAT_PORTS`], chosen as Linux's NAT chooses: the flow's own
//!   port when it is in the range and free, else the next free one from a
//!   start derived from the flow. Replies and ICMP errors about the flow
//!   then find it through the ordinary conntrack lookup. ICMP echo flows
//!   are translated the same way, the identifier standing in for the port.
//! * **Isolation.** Pod addresses and cluster IPs are reachable from
//!   inside the node only: a packet from the host side whose source is
//!   not one of the host's own addresses is dropped and counted
//!   ([`DropReason::FromOutside`]).
//! * **Hand-back.** The daemon steers some of the outward interface's
//!   traffic for the node's own address into the router (node ports, the
//!   source-NAT port range, ICMP). What the router does not know there is
//!   handed back to the host ([`Verdict::Forward`] to [`Link::Host`]),
//!   which delivers it as if it had never been steered.

use std::net::{IpAddr, Ipv4Addr};

use crossbeam::epoch;
use ipnet::IpNet;

use super::policy::Gate;
use super::{
    refused_flow, route, translation, DropReason, EntryKind, Flow, FlowKey, HashedKey, Link,
    PackedEntry, PackedKey, PacketBuf, Router, Snapshot, Verdict,
};
use crate::packet::conntrack::{proto, Direction, FlowState};
use crate::packet::wire::{self, PacketInfo, Transport};
use crate::packet::Timestamp;

/// The ports (and ICMP echo identifiers) source NAT uses on the node's
/// address: 61440-65535, one aligned block of 4096 so the daemon steers it
/// with one masked match. It lies above Linux's default ephemeral range
/// (`net.ipv4.ip_local_port_range`, 32768-60999), so the host's own
/// connections never clash with it, and above the NodePort range
/// (30000-32767 by default; the daemon refuses a range that overlaps).
pub const SNAT_PORTS: (u16, u16) = (61_440, 65_535);

/// How many ports a new flow tries before it is dropped
/// ([`DropReason::ReplyClash`]); Linux's NAT tries at most 128 as well.
const SNAT_TRIES: u32 = 128;

/// The node's edge, fixed for the router's lifetime.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EdgeConfig {
    /// The node's IPv4 address on the outward side: masqueraded traffic
    /// leaves from it. `None` turns the edge off: nothing is masqueraded,
    /// nothing handed back, and no source counts as outside.
    pub node_v4: Option<Ipv4Addr>,
    /// Every address of the host itself (the node address included; the
    /// gateways always count): traffic from them is the host's, not the
    /// outside world's, and traffic to them is not masqueraded.
    pub host_addrs: Vec<IpAddr>,
    /// Further destinations that are not masqueraded: the cluster's pod
    /// CIDR beyond this node's subnet (pod to pod across nodes keeps its
    /// addresses).
    pub no_masquerade: Vec<IpNet>,
}

impl EdgeConfig {
    /// Whether the edge is on (the node has an outward address).
    #[inline]
    pub fn enabled(&self) -> bool {
        self.node_v4.is_some()
    }
}

impl Router {
    /// Whether `addr` is one of the host's own addresses.
    #[inline]
    pub(super) fn is_host_addr(&self, addr: IpAddr) -> bool {
        let net = &self.config.network;
        let edge = &self.config.edge;
        addr == IpAddr::V4(net.gateway_v4)
            || net.gateway_v6.map(IpAddr::V6) == Some(addr)
            || edge.node_v4.map(IpAddr::V4) == Some(addr)
            || edge.host_addrs.contains(&addr)
    }

    #[inline]
    pub(super) fn in_service_cidr(&self, addr: IpAddr) -> bool {
        self.config
            .network
            .service_cidrs
            .iter()
            .any(|n| n.contains(&addr))
    }

    /// The address masqueraded traffic to `dst` leaves from, if any.
    #[inline]
    pub(super) fn masquerade_addr(&self, dst: IpAddr) -> Option<IpAddr> {
        match dst {
            IpAddr::V4(_) => self.config.edge.node_v4.map(IpAddr::V4),
            IpAddr::V6(_) => None,
        }
    }

    /// A packet from the outside world (the host side, from an address
    /// that is not the host's) to a pod or a cluster IP.
    pub(super) fn outside_to_inside(
        &self,
        src: IpAddr,
        dst: IpAddr,
        ingress: Link,
        snap: &Snapshot,
    ) -> bool {
        ingress == Link::Host
            && self.config.edge.enabled()
            && !self.is_host_addr(src)
            && (snap.pod_at(dst).is_some()
                || self
                    .config
                    .network
                    .pod_subnets
                    .iter()
                    .any(|n| n.contains(&dst))
                || self.in_service_cidr(dst))
    }

    /// Whether a new flow of this packet is masqueraded: from a pod, to an
    /// address beyond the node and the cluster.
    pub(super) fn masquerades(&self, dst: IpAddr, ingress: Link, snap: &Snapshot) -> bool {
        if !matches!(ingress, Link::Pod(_)) || self.masquerade_addr(dst).is_none() {
            return false;
        }
        let net = &self.config.network;
        !(snap.pod_at(dst).is_some()
            || net.pod_subnets.iter().any(|n| n.contains(&dst))
            || self.in_service_cidr(dst)
            || self
                .config
                .edge
                .no_masquerade
                .iter()
                .any(|n| n.contains(&dst))
            || snap.service_addrs.contains_key(&dst)
            || self.is_host_addr(dst))
    }

    /// Tracks a pod's new flow to the outside world, masqueraded.
    pub(super) fn new_egress_flow<'g>(
        &'g self,
        now: Timestamp,
        info: &PacketInfo,
        key: &FlowKey,
        guard: &'g epoch::Guard,
    ) -> Result<&'g Flow, Verdict> {
        let Some(node) = self.masquerade_addr(info.dst) else {
            return Err(Verdict::Drop(DropReason::NoRoute));
        };
        let reply = FlowKey {
            src: key.dst,
            dst: node,
            src_port: key.dst_port,
            dst_port: key.src_port,
            protocol: key.protocol,
            kind: EntryKind::Flow,
        }
        .pack();
        let hashed = self.conntrack.hashed(key.pack());
        self.insert_snat_flow(now, &hashed, reply, key.src_port, 0, guard)
    }

    /// Inserts a flow whose reply key is `reply` with its destination port
    /// (for ICMP echo: both ports, the identifier) taken from
    /// [`SNAT_PORTS`]: `keep` when it is in the range and free, else the
    /// next free one from a start the flow's hash gives.
    pub(super) fn insert_snat_flow<'g>(
        &'g self,
        now: Timestamp,
        key: &HashedKey,
        reply: PackedKey,
        keep: u16,
        tag: u32,
        guard: &'g epoch::Guard,
    ) -> Result<&'g Flow, Verdict> {
        let protocol = key.key().protocol();
        let echo = protocol == proto::ICMP || protocol == proto::ICMPV6;
        let state = if protocol == proto::TCP {
            FlowState::SynSent
        } else {
            FlowState::Unreplied
        };
        let (lo, hi) = SNAT_PORTS;
        let size = u32::from(hi - lo) + 1;
        let start = (self.choice_hasher.hash_packed(key.key()) % u64::from(size)) as u32;
        let keep = (lo..=hi).contains(&keep).then_some(keep);
        let candidates = keep
            .into_iter()
            .chain((0..SNAT_TRIES.min(size)).map(|i| lo + ((start + i) % size) as u16));
        let mut entry = PackedEntry {
            original: *key,
            reply,
            hook_reply: true,
            state,
            record_timeout_ms: 0,
            tag,
        };
        for port in candidates {
            entry.reply = if echo {
                reply.with_ports(port)
            } else {
                reply.with_dst_port(port)
            };
            match self.conntrack.add(&entry, now, guard) {
                Ok(found) => return Ok(found.flow),
                Err(e) => match refused_flow(&e) {
                    Some(verdict) => return Err(verdict),
                    // The port is held. By a finished TCP connection, it is
                    // free for a new one, as Linux's NAT lets a new
                    // connection take a tuple in TIME_WAIT: otherwise a
                    // pod's new connections to one server would stop at
                    // 4,096 per two minutes (the TIME_WAIT timeout).
                    None if protocol == proto::TCP
                        && self.release_finished(&entry.reply, guard) =>
                    {
                        match self.conntrack.add(&entry, now, guard) {
                            Ok(found) => return Ok(found.flow),
                            Err(e) => match refused_flow(&e) {
                                Some(verdict) => return Err(verdict),
                                None => continue,
                            },
                        }
                    }
                    None => continue,
                },
            }
        }
        Err(Verdict::Drop(DropReason::ReplyClash))
    }

    /// Removes the flow whose key `key` is, if that flow is a TCP
    /// connection already closed (CLOSE or TIME_WAIT); whether it did.
    fn release_finished(&self, key: &PackedKey, guard: &epoch::Guard) -> bool {
        let Some(found) = self
            .conntrack
            .lookup_packed(&self.conntrack.hashed(*key), guard)
        else {
            return false;
        };
        self.conntrack.retire_finished(found.flow)
    }

    /// ICMP echo (not fragmented): a tracked echo flow is translated (the
    /// identifier rewritten), a pod's new echo request beyond the node is
    /// masqueraded, anything else is forwarded as before.
    pub(super) fn echo_packet(
        &self,
        now: Timestamp,
        pkt: &mut PacketBuf,
        info: &PacketInfo,
        ingress: Link,
        snap: &Snapshot,
        guard: &epoch::Guard,
    ) -> Verdict {
        let Transport::IcmpEcho { request, ident } = info.transport else {
            return self.forward_plain(pkt, info, ingress, snap);
        };
        let key = FlowKey {
            src: info.src,
            dst: info.dst,
            src_port: ident,
            dst_port: ident,
            protocol: info.protocol,
            kind: EntryKind::Flow,
        };
        let (flow, dir) = match self.conntrack.lookup(&key, guard) {
            // A request may only travel the original direction and a reply
            // the other: anything else is not this flow's.
            Some(found) if request == (found.direction == Direction::Original) => {
                (found.flow, found.direction)
            }
            _ => match self.policy_gate(info.src, info.dst, info.protocol, 0) {
                Gate::Deny(reason) => return Verdict::Drop(reason),
                _ if request && self.masquerades(info.dst, ingress, snap) => {
                    let Some(node) = self.masquerade_addr(info.dst) else {
                        return self.forward_plain(pkt, info, ingress, snap);
                    };
                    let reply = FlowKey {
                        src: info.dst,
                        dst: node,
                        src_port: ident,
                        dst_port: ident,
                        protocol: info.protocol,
                        kind: EntryKind::Flow,
                    }
                    .pack();
                    let hashed = self.conntrack.hashed(key.pack());
                    match self.insert_snat_flow(now, &hashed, reply, ident, 0, guard) {
                        Ok(flow) => (flow, Direction::Original),
                        Err(v) => return v,
                    }
                }
                Gate::Track if request => {
                    return self.forward_tracked(now, pkt, info, &key, ingress, snap, guard)
                }
                _ => return self.forward_plain(pkt, info, ingress, snap),
            },
        };
        if !wire::decrement_ttl(pkt.as_mut_slice(), info) {
            return self.time_exceeded(pkt, info);
        }
        flow.touch(now);
        flow.track_datagram(dir);
        let t = translation(flow, dir);
        wire::rewrite(pkt.as_mut_slice(), info, &t);
        Verdict::Forward(route(snap, t.dst))
    }
}
