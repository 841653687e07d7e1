//! NetworkPolicy as the fast path sees it: a compiled, immutable
//! [`PolicySnapshot`] looked up by pod address, deciding a new flow per
//! direction (egress of the source pod, ingress of the destination pod).
//!
//! Kubernetes semantics: a pod selected by a policy whose `policyTypes`
//! name a direction is isolated in that direction (default deny); the
//! rules of every policy selecting it add up. A rule matches when one of
//! its peers matches the other end (or it has no peers) and one of its
//! ports matches (or it has no ports). Named ports are resolved on the
//! destination pod. As the Kubernetes documentation says, traffic to and
//! from the node a pod runs on (probes from the gateway, cluster DNS at
//! the gateway) is always allowed, and a pod cannot block itself.
//!
//! A decision allocates nothing: peers are sorted address lists and CIDR
//! blocks, ports are ranges or a name looked up on the destination pod.
//! The snapshot is built by the control plane
//! ([`crate::control::netpol::compile`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

/// IP protocol numbers the policies name.
pub mod proto {
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// SCTP.
    pub const SCTP: u8 = 132;
}

/// Who a rule's peer list lets through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peers {
    /// No `from`/`to`: every address.
    All,
    /// Selected pods' addresses (sorted) and `ipBlock`s (cidr, except).
    Some {
        /// Pod addresses picked by pod/namespace selectors, sorted.
        pods: Vec<IpAddr>,
        /// `ipBlock`s: the cidr and the blocks cut out of it.
        blocks: Vec<(IpNet, Vec<IpNet>)>,
    },
}

impl Peers {
    /// Whether `addr` is one of the peers.
    pub fn matches(&self, addr: IpAddr) -> bool {
        match self {
            Peers::All => true,
            Peers::Some { pods, blocks } => {
                pods.binary_search(&addr).is_ok()
                    || blocks.iter().any(|(cidr, except)| {
                        cidr.contains(&addr) && !except.iter().any(|e| e.contains(&addr))
                    })
            }
        }
    }
}

/// One entry of a rule's `ports`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortMatch {
    /// A protocol, every port.
    Any(u8),
    /// A protocol and a port range (`port` .. `endPort`, inclusive).
    Range(u8, u16, u16),
    /// A protocol and a port name, resolved on the destination pod.
    Named(u8, Arc<str>),
}

/// A compiled rule of one policy, for one direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `namespace/name` of the policy.
    pub policy: Arc<str>,
    /// The rule's index in the policy's `ingress` or `egress` list.
    pub index: usize,
    /// The other end.
    pub peers: Peers,
    /// The ports; empty means every port of every protocol.
    pub ports: Vec<PortMatch>,
}

/// What one direction's policies make of a flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirVerdict {
    /// No policy isolates the pod in this direction (or it is no pod).
    NotIsolated,
    /// Allowed by `policy` (`namespace/name`), rule `index`.
    Allowed {
        /// `namespace/name`.
        policy: Arc<str>,
        /// Rule index.
        index: usize,
    },
    /// Allowed because it comes from or goes to the node itself (probes,
    /// cluster DNS at the gateway).
    Node,
    /// Allowed because the pod talks to itself.
    SamePod,
    /// The pod is isolated and no rule matches; `policies` isolate it.
    Denied {
        /// `namespace/name` of the policies that select the pod.
        policies: Arc<[Arc<str>]>,
    },
}

impl DirVerdict {
    /// Whether the flow passes in this direction.
    pub fn allows(&self) -> bool {
        !matches!(self, DirVerdict::Denied { .. })
    }
}

/// One pod's isolation: the rules that apply when it is isolated.
#[derive(Debug, Clone, Default)]
pub struct Isolation {
    /// `namespace/name` of the policies selecting it in this direction.
    pub policies: Arc<[Arc<str>]>,
    /// Their rules, in policy then rule order.
    pub rules: Vec<Rule>,
}

/// A pod as the policies see it.
#[derive(Debug, Clone, Default)]
pub struct PodPolicy {
    /// `namespace/name` of the pod.
    pub pod: Arc<str>,
    /// Named container ports: (name, protocol, number).
    pub named_ports: Vec<(Arc<str>, u8, u16)>,
    /// Set when the pod is isolated for ingress.
    pub ingress: Option<Isolation>,
    /// Set when the pod is isolated for egress.
    pub egress: Option<Isolation>,
}

impl PodPolicy {
    /// Whether a policy isolates the pod in some direction.
    pub fn is_isolated(&self) -> bool {
        self.ingress.is_some() || self.egress.is_some()
    }

    fn named_port(&self, name: &str, proto: u8) -> Option<u16> {
        self.named_ports
            .iter()
            .find(|(n, p, _)| &**n == name && *p == proto)
            .map(|(_, _, port)| *port)
    }
}

/// The decision for a flow, per direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The source pod's egress.
    pub egress: DirVerdict,
    /// The destination pod's ingress.
    pub ingress: DirVerdict,
    /// Whether either end is a pod isolated in some direction: an allowed
    /// flow is then tracked, so its replies pass as part of it.
    pub isolated_end: bool,
}

impl Decision {
    /// Whether the flow passes both directions.
    pub fn allows(&self) -> bool {
        self.egress.allows() && self.ingress.allows()
    }

    /// The direction that denies the flow, the source's egress first.
    pub fn denied(&self) -> Option<PolicyDirection> {
        if !self.egress.allows() {
            Some(PolicyDirection::Egress)
        } else if !self.ingress.allows() {
            Some(PolicyDirection::Ingress)
        } else {
            None
        }
    }
}

/// A direction a pod is isolated in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyDirection {
    /// Traffic into the pod.
    Ingress,
    /// Traffic out of the pod.
    Egress,
}

/// Every pod's compiled policy, by address.
#[derive(Debug, Clone, Default)]
pub struct PolicySnapshot {
    pods: HashMap<IpAddr, Arc<PodPolicy>, ahash::RandomState>,
    node_addrs: Vec<IpAddr>,
    policies: usize,
    open: bool,
}

impl PolicySnapshot {
    /// A snapshot of `pods` (each under each of its addresses); traffic
    /// from `node_addrs` to pods is never isolated; `policies` counts the
    /// NetworkPolicies it was made from.
    pub fn new(
        pods: impl IntoIterator<Item = (IpAddr, Arc<PodPolicy>)>,
        node_addrs: Vec<IpAddr>,
        policies: usize,
    ) -> Self {
        let pods: HashMap<IpAddr, Arc<PodPolicy>, ahash::RandomState> = pods.into_iter().collect();
        let open = pods.values().all(|p| !p.is_isolated());
        Self {
            pods,
            node_addrs,
            policies,
            open,
        }
    }

    /// How many NetworkPolicies it was made from.
    pub fn policy_count(&self) -> usize {
        self.policies
    }

    /// Whether no pod is isolated in any direction (then every flow
    /// passes and the fast path can skip the lookup).
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// The pod at `addr`.
    pub fn pod(&self, addr: IpAddr) -> Option<&PodPolicy> {
        self.pods.get(&addr).map(|p| &**p)
    }

    /// The decision for a new flow `src` -> `dst`:`port` over `proto`
    /// (`dst` the post-DNAT destination).
    pub fn decide(&self, src: IpAddr, dst: IpAddr, proto: u8, port: u16) -> Decision {
        let src_pod = self.pods.get(&src);
        let dst_pod = self.pods.get(&dst);
        let port_ok = |m: &PortMatch| match m {
            PortMatch::Any(p) => *p == proto,
            PortMatch::Range(p, lo, hi) => *p == proto && (*lo..=*hi).contains(&port),
            PortMatch::Named(p, name) => {
                *p == proto && dst_pod.and_then(|d| d.named_port(name, proto)) == Some(port)
            }
        };
        let decide = |iso: Option<&Isolation>, other: IpAddr| -> DirVerdict {
            let Some(iso) = iso else {
                return DirVerdict::NotIsolated;
            };
            iso.rules
                .iter()
                .find(|r| {
                    r.peers.matches(other) && (r.ports.is_empty() || r.ports.iter().any(port_ok))
                })
                .map_or_else(
                    || DirVerdict::Denied {
                        policies: iso.policies.clone(),
                    },
                    |r| DirVerdict::Allowed {
                        policy: r.policy.clone(),
                        index: r.index,
                    },
                )
        };
        let isolated_end =
            src_pod.is_some_and(|p| p.is_isolated()) || dst_pod.is_some_and(|p| p.is_isolated());
        if src == dst && src_pod.is_some() {
            return Decision {
                egress: DirVerdict::SamePod,
                ingress: DirVerdict::SamePod,
                isolated_end,
            };
        }
        let egress = if self.node_addrs.contains(&dst) {
            DirVerdict::Node
        } else {
            decide(src_pod.and_then(|p| p.egress.as_ref()), dst)
        };
        let ingress = if self.node_addrs.contains(&src) {
            DirVerdict::Node
        } else {
            decide(dst_pod.and_then(|p| p.ingress.as_ref()), src)
        };
        Decision {
            egress,
            ingress,
            isolated_end,
        }
    }
}
