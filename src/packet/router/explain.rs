//! What the router would do with a new flow, without a packet: the
//! service frontend it hits, the backend the flow's hash picks, the
//! translations, the NetworkPolicy decision and the verdict
//! (`podnet explain`). It reads the same snapshots and calls the same
//! choices as the packet path; it changes nothing (no flow, no counter,
//! no affinity record).

use std::net::{IpAddr, SocketAddr};

use super::{is_service_addr, route, DropReason, EntryKind, FlowKey, Link, Router};
use crate::packet::policy::Decision;
use crate::packet::service::{Frontend, PoolId};

/// What the router does with the first packet of a flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowExplanation {
    /// Where the packet enters: the pod owning the source, else the host.
    pub ingress: Link,
    /// The service pool of the frontend the destination names, if any.
    pub pool: Option<PoolId>,
    /// Where destination NAT sends the flow (a service's backend).
    pub backend: Option<SocketAddr>,
    /// The address source NAT gives the flow (masquerade), if any.
    pub masquerade: Option<IpAddr>,
    /// The NetworkPolicy decision on the source and the translated
    /// destination, when the flow gets that far.
    pub policy: Option<Decision>,
    /// What happens to the packet.
    pub outcome: FlowOutcome,
}

/// The fate of a flow's first packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowOutcome {
    /// Sent out of this link.
    Forward(Link),
    /// Answered (TCP RST or ICMP error) and counted under this reason.
    Reject(DropReason),
    /// Dropped silently, counted under this reason.
    Drop(DropReason),
}

impl Router {
    /// Explains the new flow `src` -> `dst` over `protocol` (IP protocol
    /// number; the ports of ICMP are ignored). The backend shown is the
    /// one this source port's hash picks; with session affinity a
    /// client's earlier backend wins while its record lives.
    pub fn explain(&self, src: SocketAddr, dst: SocketAddr, protocol: u8) -> FlowExplanation {
        let snap = self.snapshot.load();
        let ingress = snap.pod_at(src.ip()).map_or(Link::Host, Link::Pod);
        let mut e = FlowExplanation {
            ingress,
            pool: None,
            backend: None,
            masquerade: None,
            policy: None,
            outcome: FlowOutcome::Forward(Link::Host),
        };
        if self.outside_to_inside(src.ip(), dst.ip(), ingress, &snap) {
            e.outcome = FlowOutcome::Drop(DropReason::FromOutside);
            return e;
        }
        let key = FlowKey {
            src: src.ip(),
            dst: dst.ip(),
            src_port: src.port(),
            dst_port: dst.port(),
            protocol,
            kind: EntryKind::Flow,
        };
        let frontend = Frontend {
            addr: dst.ip(),
            port: dst.port(),
            protocol,
        };
        let to = match snap.frontends.get(&frontend) {
            Some(pool) => {
                e.pool = Some(pool.id());
                let mode = self.service_mode(pool, ingress, dst.ip());
                let backend = match self.choose_backend(&key, &pool.backends(), mode.local_only) {
                    Ok(Some(b)) => b,
                    Ok(None) => {
                        e.outcome = FlowOutcome::Reject(DropReason::NoEndpoints);
                        return e;
                    }
                    Err(_) => {
                        e.outcome = FlowOutcome::Drop(DropReason::NoLocalEndpoints);
                        return e;
                    }
                };
                e.backend = Some(backend);
                if mode.masquerade {
                    e.masquerade = self.masquerade_addr(dst.ip());
                }
                backend
            }
            None => {
                if self.masquerades(dst.ip(), ingress, &snap) {
                    e.masquerade = self.masquerade_addr(dst.ip());
                }
                dst
            }
        };
        let decision = self
            .policy
            .load()
            .decide(src.ip(), to.ip(), protocol, to.port());
        let denied = decision.denied();
        e.policy = Some(decision);
        e.outcome = match denied {
            Some(crate::packet::policy::PolicyDirection::Egress) => {
                FlowOutcome::Drop(DropReason::PolicyEgress)
            }
            Some(crate::packet::policy::PolicyDirection::Ingress) => {
                FlowOutcome::Drop(DropReason::PolicyIngress)
            }
            None if e.pool.is_none() && is_service_addr(&self.config.network, &snap, dst.ip()) => {
                FlowOutcome::Reject(DropReason::NoService)
            }
            None => match route(&snap, to.ip()) {
                out if out == ingress => FlowOutcome::Drop(DropReason::NoRoute),
                Link::Host if self.is_unowned_pod_addr(to.ip()) => {
                    FlowOutcome::Reject(DropReason::NoRoute)
                }
                out => FlowOutcome::Forward(out),
            },
        };
        e
    }

    /// An address of the node's pod subnets that no pod has (not the
    /// gateway): the router answers host unreachable.
    pub(super) fn is_unowned_pod_addr(&self, addr: IpAddr) -> bool {
        let net = &self.config.network;
        let gateway =
            addr == IpAddr::V4(net.gateway_v4) || net.gateway_v6.map(IpAddr::V6) == Some(addr);
        !gateway && net.pod_subnets.iter().any(|n| n.contains(&addr))
    }
}
