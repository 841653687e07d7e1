//! Services as the fast path sees them: frontends (a cluster IP, node
//! address or external IP with a port and protocol) that lead to a backend
//! pool, and the choice of a backend for a new flow.
//!
//! One Kubernetes service port becomes one [`ServicePool`]; its ClusterIP,
//! NodePort and external-IP frontends all point at the same pool. Each pool
//! holds its backends behind its own atomic pointer, so changing one
//! service's endpoints rebuilds that service's Maglev table and nothing else.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use super::maglev::{MaglevError, MaglevTable};

/// Identifies a service pool (one service port) between control plane and
/// fast path; the control plane chooses the numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolId(pub u32);

/// An address, port and protocol at which a service is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Frontend {
    /// Cluster IP, node address (NodePort) or external IP.
    pub addr: IpAddr,
    /// Service port (or node port).
    pub port: u16,
    /// IP protocol number (6 TCP, 17 UDP).
    pub protocol: u8,
}

/// One endpoint of a service: a pod address and the target port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Backend {
    /// Pod IP and target port.
    pub addr: SocketAddr,
    /// The pod is shutting down: it keeps its existing flows but receives
    /// new ones only when every backend of the pool is terminating.
    pub terminating: bool,
}

/// Which endpoints a pool's traffic may use and whether external clients
/// are masqueraded: Kubernetes' `externalTrafficPolicy` and
/// `internalTrafficPolicy`, as kube-proxy applies them.
///
/// "Local" endpoints are the ones on this node: addresses in the node's
/// pod subnets. With one node every endpoint is local; the choice is kept
/// per endpoint so that the rule stays right when nodes are added.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TrafficPolicy {
    /// `externalTrafficPolicy: Local`, for traffic from outside the pods to
    /// a NodePort, LoadBalancer or external-IP frontend: keep the client's
    /// address and use local endpoints only (none: drop, as kube-proxy
    /// does). `false` (`Cluster`): masquerade the client to the node's
    /// address and use any endpoint.
    pub external_local: bool,
    /// `internalTrafficPolicy: Local`, for traffic from pods (and to the
    /// cluster IP): local endpoints only (none: drop).
    pub internal_local: bool,
}

/// What the control plane declares for a pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolSpec {
    /// The pool's identity.
    pub id: PoolId,
    /// Where the pool is reached.
    pub frontends: Vec<Frontend>,
    /// ClientIP session affinity timeout (Kubernetes' default is 10800 s),
    /// or `None` for per-flow Maglev choice.
    pub session_affinity: Option<Duration>,
    /// Traffic policies ([`TrafficPolicy::default`]: `Cluster` for both).
    pub traffic: TrafficPolicy,
}

/// Kubernetes' default ClientIP affinity timeout
/// (`sessionAffinityConfig.clientIP.timeoutSeconds`).
pub const DEFAULT_AFFINITY_TIMEOUT: Duration = Duration::from_secs(10_800);

/// The backends of a pool and the lookup table new flows use.
#[derive(Debug)]
pub struct BackendSet {
    all: Box<[Backend]>,
    /// Backends new flows may go to: the ready ones, or every terminating
    /// one when none is ready.
    eligible: Box<[SocketAddr]>,
    maglev: Option<MaglevTable>,
}

impl BackendSet {
    /// An empty set: new flows are rejected.
    pub fn empty() -> BackendSet {
        BackendSet {
            all: Box::new([]),
            eligible: Box::new([]),
            maglev: None,
        }
    }

    /// Builds the set and its Maglev table (`min_ratio` table slots per
    /// eligible backend at least). `current_size` is the table size of the
    /// set this one replaces (0 for none): it is kept while it still fits,
    /// because a size change remaps nearly every flow.
    pub fn build(
        backends: &[Backend],
        min_ratio: u32,
        current_size: u32,
    ) -> Result<BackendSet, MaglevError> {
        let mut all: Vec<Backend> = backends.to_vec();
        // Order does not matter to Maglev, but a canonical order makes
        // equal sets compare equal and duplicates easy to drop.
        all.sort_by_key(|b| (b.addr, b.terminating));
        all.dedup_by_key(|b| b.addr);
        let ready: Vec<SocketAddr> = all
            .iter()
            .filter(|b| !b.terminating)
            .map(|b| b.addr)
            .collect();
        let eligible = if ready.is_empty() {
            all.iter().map(|b| b.addr).collect()
        } else {
            ready
        };
        let maglev = if eligible.is_empty() {
            None
        } else {
            let size = if current_size == 0 {
                MaglevTable::size_for(eligible.len(), min_ratio)?
            } else {
                MaglevTable::size_for_update(current_size, eligible.len(), min_ratio)?
            };
            Some(MaglevTable::build(&eligible, size)?)
        };
        Ok(BackendSet {
            all: all.into_boxed_slice(),
            eligible: eligible.into_boxed_slice(),
            maglev,
        })
    }

    /// Every backend, terminating ones included.
    pub fn backends(&self) -> &[Backend] {
        &self.all
    }

    /// Backends that may receive new flows.
    pub fn eligible(&self) -> &[SocketAddr] {
        &self.eligible
    }

    /// Whether `addr` may receive new flows.
    pub fn is_eligible(&self, addr: SocketAddr) -> bool {
        self.eligible.contains(&addr)
    }

    /// The backend for a new flow with hash `flow_hash`, or `None` when the
    /// pool has no backend.
    #[inline]
    pub fn choose(&self, flow_hash: u64) -> Option<SocketAddr> {
        let table = self.maglev.as_ref()?;
        self.eligible.get(table.lookup(flow_hash)).copied()
    }

    /// The backend for a new flow that may only use backends `local`
    /// accepts, or `None` when no eligible backend is local. When every
    /// eligible backend is local this is [`BackendSet::choose`]; otherwise
    /// the flow hash picks among the local ones (no table: this is the
    /// rare multi-node case, and costs one pass over the backends).
    pub fn choose_where(
        &self,
        flow_hash: u64,
        local: impl Fn(SocketAddr) -> bool,
    ) -> Option<SocketAddr> {
        let count = self.eligible.iter().filter(|a| local(**a)).count();
        if count == self.eligible.len() {
            return self.choose(flow_hash);
        }
        if count == 0 {
            return None;
        }
        let k = (flow_hash % count as u64) as usize;
        self.eligible.iter().filter(|a| local(**a)).nth(k).copied()
    }

    /// Size of the Maglev table (0 without backends).
    pub fn table_size(&self) -> u32 {
        self.maglev.as_ref().map_or(0, |m| m.size())
    }
}

/// A service pool in the fast path.
#[derive(Debug)]
pub struct ServicePool {
    id: PoolId,
    frontends: Box<[Frontend]>,
    affinity_timeout: Option<Duration>,
    traffic: TrafficPolicy,
    backends: ArcSwap<BackendSet>,
}

impl ServicePool {
    /// A pool with no backends yet.
    pub fn new(spec: &PoolSpec) -> ServicePool {
        ServicePool {
            id: spec.id,
            frontends: spec.frontends.clone().into_boxed_slice(),
            affinity_timeout: spec.session_affinity,
            traffic: spec.traffic,
            backends: ArcSwap::from_pointee(BackendSet::empty()),
        }
    }

    /// A pool declared by `spec` that keeps the backends of `old`.
    pub fn respecified(spec: &PoolSpec, old: &ServicePool) -> ServicePool {
        ServicePool {
            id: spec.id,
            frontends: spec.frontends.clone().into_boxed_slice(),
            affinity_timeout: spec.session_affinity,
            traffic: spec.traffic,
            backends: ArcSwap::new(old.backends.load_full()),
        }
    }

    /// The pool's identity.
    pub fn id(&self) -> PoolId {
        self.id
    }

    /// Where the pool is reached.
    pub fn frontends(&self) -> &[Frontend] {
        &self.frontends
    }

    /// ClientIP affinity timeout, if affinity is on.
    pub fn affinity_timeout(&self) -> Option<Duration> {
        self.affinity_timeout
    }

    /// The pool's traffic policies.
    #[inline]
    pub fn traffic(&self) -> TrafficPolicy {
        self.traffic
    }

    /// The current backends (lock-free load).
    #[inline]
    pub fn backends(&self) -> arc_swap::Guard<Arc<BackendSet>> {
        self.backends.load()
    }

    /// Publishes a new backend set; returns the previous one.
    pub fn swap_backends(&self, set: BackendSet) -> Arc<BackendSet> {
        self.backends.swap(Arc::new(set))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn be(i: u8, terminating: bool) -> Backend {
        Backend {
            addr: SocketAddr::from(([10, 244, 0, i], 8080)),
            terminating,
        }
    }

    #[test]
    fn terminating_backends_get_new_flows_only_when_all_are_terminating() {
        let set = BackendSet::build(&[be(2, false), be(3, true)], 100, 0).unwrap();
        assert_eq!(set.eligible(), &[be(2, false).addr]);
        for h in 0..1000u64 {
            assert_eq!(
                set.choose(h.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
                Some(be(2, false).addr)
            );
        }
        let set = BackendSet::build(&[be(2, true), be(3, true)], 100, 0).unwrap();
        assert_eq!(set.eligible().len(), 2);
        assert_eq!(set.backends().len(), 2);
    }

    #[test]
    fn local_choice_uses_only_local_backends_and_maglev_when_all_are() {
        let set = BackendSet::build(&[be(2, false), be(3, false), be(4, false)], 100, 0).unwrap();
        for h in 0..200u64 {
            let h = h.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            assert_eq!(set.choose_where(h, |_| true), set.choose(h));
            let only3 = set.choose_where(h, |a| a == be(3, false).addr);
            assert_eq!(only3, Some(be(3, false).addr));
        }
        assert_eq!(set.choose_where(1, |_| false), None);
    }

    #[test]
    fn empty_set_chooses_nothing() {
        let set = BackendSet::build(&[], 100, 0).unwrap();
        assert_eq!(set.choose(42), None);
        assert_eq!(set.table_size(), 0);
    }

    #[test]
    fn duplicate_backends_are_merged() {
        let set = BackendSet::build(&[be(2, false), be(2, false), be(3, false)], 100, 0).unwrap();
        assert_eq!(set.backends().len(), 2);
    }
}
