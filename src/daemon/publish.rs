//! Services and their EndpointSlices -> the fast path: one pool per
//! service port, reached at the cluster IP, balanced over the ready
//! endpoints (terminating but serving ones keep their flows, and take new
//! ones only when no endpoint is ready). Flows to endpoints that left are
//! reset, so clients see a reset rather than a silent timeout.
//!
//! A reconciler keyed by Service (under the tag `EndpointSlice`, the kind
//! whose changes it mostly follows).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::SystemTime;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use parking_lot::Mutex;
use serde_json::Value;

use super::dataplane::Dataplane;
use super::DaemonConfig;
use crate::api::node::{NatBackend, NatRule};
use crate::control::objects::{LabelSelector, ObjectError, Objects};
use crate::control::reconcile::endpoints::SERVICE_NAME_LABEL;
use crate::control::reconcile::slice_index::SliceIndex;
use crate::control::reconcile::{event_kind, meta_str, Key, Next, Reconciler};
use crate::control::store::Event;
use crate::packet::conntrack::proto;
use crate::packet::router::{FlowSelector, SNAT_PORTS};
use crate::packet::service::{
    Backend, Frontend, PoolId, PoolSpec, TrafficPolicy, DEFAULT_AFFINITY_TIMEOUT,
};
use crate::sys::tc::{Redirect, Steer, TcError};

const TAG: &str = "EndpointSlice";

/// The addresses the fast path balances new connections to: those that
/// are a ready (not terminating) backend of some published pool, with the
/// number of pools. The kubelet asks it before stopping a deleted pod's
/// processes, so a pod is sent SIGTERM only once no new connection can
/// reach it (see [`crate::control::reconcile::pod::PodRuntime::drained`]).
#[derive(Default)]
pub struct ReadyBackends(Mutex<HashMap<IpAddr, u32>>);

impl ReadyBackends {
    /// Whether `addr` is a ready backend of a published pool.
    pub fn contains(&self, addr: IpAddr) -> bool {
        self.0.lock().contains_key(&addr)
    }

    /// Accounts for a pool whose backends went from `old` to `new`.
    fn replace(&self, old: &[Backend], new: &[Backend]) {
        let ready = |set: &[Backend]| -> Vec<IpAddr> {
            let mut a: Vec<IpAddr> = set
                .iter()
                .filter(|b| !b.terminating)
                .map(|b| b.addr.ip())
                .collect();
            a.sort();
            a.dedup();
            a
        };
        let mut counts = self.0.lock();
        for addr in ready(old) {
            if let Some(n) = counts.get_mut(&addr) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(&addr);
                }
            }
        }
        for addr in ready(new) {
            *counts.entry(addr).or_default() += 1;
        }
    }
}

#[derive(Default)]
struct Published {
    /// Pools of each service (namespace, name), one per port, with their spec.
    services: BTreeMap<(String, String), Vec<PoolSpec>>,
    backends: HashMap<PoolId, Vec<Backend>>,
    next_pool: u32,
    ids: HashMap<(String, String, String), PoolId>,
    /// Service specs changed since the last publication.
    dirty: bool,
    last_publish: Option<std::time::Instant>,
}

/// The shortest time between two publications of the service table. Each
/// one builds the fast path's whole table (time in proportion to the
/// services), so one per service made creating N services cost N squared
/// (minutes at 10,000, while the reconcilers fell behind everything else);
/// a burst now shares publications. Endpoint changes are not delayed: they
/// swap one pool's backends.
const PUBLISH_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

/// What the daemon steers from the egress interface into `podnet0`: fixed
/// matches (the pod subnet and service CIDR, so the outside's packets to
/// them are counted when dropped; the source-NAT ports and ICMP of the
/// node's address, for masqueraded flows) plus one per node port and per
/// LoadBalancer or external address, following the services.
pub struct EdgeSteering {
    redirect: Redirect,
    node_ip: Ipv4Addr,
    service_cidr: ipnet::Ipv4Net,
    fixed: Vec<Steer>,
}

impl EdgeSteering {
    /// Sets up the egress interface's ingress hook and the fixed matches.
    pub fn start(egress: &str, config: &DaemonConfig, node_ip: Ipv4Addr) -> Result<Self, TcError> {
        let redirect = Redirect::start(egress, &config.host_device)?;
        let (lo, _) = SNAT_PORTS;
        let mut fixed = vec![
            Steer::Dst(config.node_subnet),
            Steer::Dst(config.service_cidr),
            Steer::Proto {
                dst: node_ip,
                protocol: proto::ICMP,
            },
        ];
        for protocol in [proto::TCP, proto::UDP] {
            fixed.push(Steer::Port {
                dst: node_ip,
                protocol,
                port: lo,
                mask: !(SNAT_PORTS.1 - lo),
            });
        }
        let s = EdgeSteering {
            redirect,
            node_ip,
            service_cidr: config.service_cidr,
            fixed,
        };
        s.redirect.sync(&s.fixed)?;
        Ok(s)
    }

    /// Steers exactly the fixed matches and what `frontends` need.
    fn sync<'a>(&self, frontends: impl Iterator<Item = &'a Frontend>) {
        let mut want = self.fixed.clone();
        for f in frontends {
            let IpAddr::V4(addr) = f.addr else { continue };
            let steer = if addr == self.node_ip {
                Steer::Port {
                    dst: addr,
                    protocol: f.protocol,
                    port: f.port,
                    mask: 0xffff,
                }
            } else if self.service_cidr.contains(&addr) {
                continue;
            } else {
                Steer::Dst(ipnet::Ipv4Net::from(addr))
            };
            if !want.contains(&steer) {
                want.push(steer);
            }
        }
        if let Err(e) = self.redirect.sync(&want) {
            tracing::error!("cannot steer node ports and external addresses: {e}");
        }
    }

    /// Removes what podnet added to the egress interface.
    pub fn remove(&self) -> Result<(), TcError> {
        self.redirect.remove()
    }

    /// The matches installed now.
    pub fn installed(&self) -> Vec<Steer> {
        self.redirect.installed()
    }
}

/// The fast-path publisher.
pub struct FastPathPublisher {
    dataplane: Arc<Dataplane>,
    node_ip: Option<Ipv4Addr>,
    steering: Option<Arc<EdgeSteering>>,
    state: Mutex<Published>,
    sync: prometheus_client::metrics::histogram::Histogram,
    /// The slices of each service, without a lookup by label.
    slices: SliceIndex,
    ready: Arc<ReadyBackends>,
}

fn protocol_number(p: Option<&str>) -> u8 {
    match p {
        Some("UDP") => proto::UDP,
        _ => proto::TCP,
    }
}

impl FastPathPublisher {
    /// A publisher into `dataplane`'s router.
    pub fn new(
        dataplane: Arc<Dataplane>,
        sync: prometheus_client::metrics::histogram::Histogram,
    ) -> Self {
        Self {
            dataplane,
            node_ip: None,
            steering: None,
            state: Mutex::new(Published {
                next_pool: 1,
                ..Default::default()
            }),
            sync,
            slices: SliceIndex::default(),
            ready: Arc::default(),
        }
    }

    /// The addresses this publisher has made ready backends.
    pub fn ready_backends(&self) -> Arc<ReadyBackends> {
        self.ready.clone()
    }

    /// Publishes node ports at `node_ip` and steers them (and external
    /// addresses) with `steering`.
    pub fn with_edge(
        mut self,
        node_ip: Option<Ipv4Addr>,
        steering: Option<Arc<EdgeSteering>>,
    ) -> Self {
        self.node_ip = node_ip;
        self.steering = steering;
        self
    }

    fn publish_specs(&self, st: &mut Published) {
        let specs: Vec<PoolSpec> = st.services.values().flatten().cloned().collect();
        if let Some(steering) = &self.steering {
            steering.sync(specs.iter().flat_map(|s| s.frontends.iter()));
        }
        match self.dataplane.router().set_services(&specs) {
            Ok(gone) => {
                for pool in gone {
                    if let Some(old) = st.backends.remove(&pool) {
                        self.ready.replace(&old, &[]);
                    }
                    self.dataplane
                        .router()
                        .reset_flows(FlowSelector::Pool(pool), &mut |l, p| {
                            self.dataplane.send_packet(l, p)
                        });
                }
            }
            Err(e) => tracing::error!("cannot publish services: {e}"),
        }
    }
}

impl Reconciler for FastPathPublisher {
    fn kind(&self) -> &'static str {
        TAG
    }

    fn keys_for(&self, objects: &Objects, event: &Event) -> Vec<Key> {
        match event_kind(event) {
            Some(("Service", obj)) => vec![Key {
                kind: TAG,
                namespace: meta_str(obj, "namespace").into(),
                name: meta_str(obj, "name").into(),
            }],
            Some(("EndpointSlice", obj)) => {
                self.slices.observe(objects, event, obj);
                obj.pointer("/metadata/labels")
                    .and_then(|l| l.get(SERVICE_NAME_LABEL))
                    .and_then(Value::as_str)
                    .map(|svc| Key {
                        kind: TAG,
                        namespace: meta_str(obj, "namespace").into(),
                        name: svc.into(),
                    })
                    .into_iter()
                    .collect()
            }
            _ => Vec::new(),
        }
    }

    fn initial_keys(&self, objects: &Objects) -> Vec<Key> {
        self.slices.reset();
        objects
            .list_as::<Service>(None, &LabelSelector::default())
            .into_iter()
            .map(|s| Key {
                kind: TAG,
                namespace: s.metadata.namespace.unwrap_or_default(),
                name: s.metadata.name.unwrap_or_default(),
            })
            .collect()
    }

    fn reconcile(
        &self,
        objects: &Objects,
        key: &Key,
        now: SystemTime,
    ) -> Result<Next, ObjectError> {
        let t0 = std::time::Instant::now();
        let r = self.publish_service(objects, key, now);
        self.sync.observe(t0.elapsed().as_secs_f64());
        r
    }
}

impl FastPathPublisher {
    /// `NAMESPACE/NAME (port P)` of the service port published as `pool`.
    pub fn pool_name(&self, pool: PoolId) -> Option<String> {
        let st = self.state.lock();
        st.ids
            .iter()
            .find(|(_, id)| **id == pool)
            .map(|((ns, name, port), _)| format!("{ns}/{name} (port {port})"))
    }

    /// The NAT table as published: one rule per service frontend, with the
    /// backends the fast path holds for it.
    pub fn nat_rules(&self) -> Vec<NatRule> {
        let st = self.state.lock();
        let router = self.dataplane.router();
        let mut rules = Vec::new();
        for ((ns, name), pools) in &st.services {
            for pool in pools {
                let backends = router.endpoints(pool.id).unwrap_or_default();
                for f in &pool.frontends {
                    let proto = if f.protocol == proto::UDP {
                        "UDP"
                    } else {
                        "TCP"
                    };
                    rules.push(NatRule {
                        service: format!("{ns}/{name}"),
                        frontend: format!("{}/{proto}", SocketAddr::new(f.addr, f.port)),
                        backends: backends
                            .iter()
                            .map(|b| NatBackend {
                                address: b.addr.to_string(),
                                state: if b.terminating {
                                    "terminating"
                                } else {
                                    "ready"
                                }
                                .into(),
                            })
                            .collect(),
                    });
                }
            }
        }
        rules
    }

    fn publish_service(
        &self,
        objects: &Objects,
        key: &Key,
        _now: SystemTime,
    ) -> Result<Next, ObjectError> {
        let id = (key.namespace.clone(), key.name.clone());
        let svc = match objects.get_as::<Service>(Some(&key.namespace), &key.name) {
            Ok(s) => Some(s),
            Err(ObjectError::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        let spec = svc
            .as_ref()
            .and_then(|s| s.spec.clone())
            .unwrap_or_default();
        let cluster_ip: Option<IpAddr> = spec.cluster_ip.as_deref().and_then(|ip| ip.parse().ok());
        let mut st = self.state.lock();
        // Pools: one per port, reached at the cluster IP.
        let mut pools = Vec::new();
        if let (Some(ip), Some(_)) = (cluster_ip, &svc) {
            for p in spec.ports.iter().flatten() {
                let port_key = (
                    key.namespace.clone(),
                    key.name.clone(),
                    p.name.clone().unwrap_or_else(|| p.port.to_string()),
                );
                let pool = match st.ids.get(&port_key) {
                    Some(id) => *id,
                    None => {
                        let id = PoolId(st.next_pool);
                        st.next_pool += 1;
                        st.ids.insert(port_key, id);
                        id
                    }
                };
                let protocol = protocol_number(p.protocol.as_deref());
                let mut frontends = vec![Frontend {
                    addr: ip,
                    port: p.port as u16,
                    protocol,
                }];
                let external_type =
                    matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));
                if let (true, Some(node), Some(np)) = (external_type, self.node_ip, p.node_port) {
                    frontends.push(Frontend {
                        addr: IpAddr::V4(node),
                        port: np as u16,
                        protocol,
                    });
                }
                // LoadBalancer ingress addresses and external IPs, at the
                // service port.
                let lb_ips = svc
                    .as_ref()
                    .and_then(|s| s.status.as_ref())
                    .and_then(|s| s.load_balancer.as_ref())
                    .and_then(|lb| lb.ingress.clone())
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|_| spec.type_.as_deref() == Some("LoadBalancer"))
                    .filter_map(|i| i.ip);
                for addr in lb_ips.chain(spec.external_ips.clone().unwrap_or_default()) {
                    let Ok(addr) = addr.parse::<IpAddr>() else {
                        continue;
                    };
                    let f = Frontend {
                        addr,
                        port: p.port as u16,
                        protocol,
                    };
                    if !frontends.contains(&f) {
                        frontends.push(f);
                    }
                }
                pools.push((
                    PoolSpec {
                        id: pool,
                        frontends,
                        session_affinity: (spec.session_affinity.as_deref() == Some("ClientIP"))
                            .then_some(DEFAULT_AFFINITY_TIMEOUT),
                        traffic: TrafficPolicy {
                            external_local: spec.external_traffic_policy.as_deref()
                                == Some("Local"),
                            internal_local: spec.internal_traffic_policy.as_deref()
                                == Some("Local"),
                        },
                    },
                    p.name.clone().unwrap_or_default(),
                ));
            }
        }
        let specs: Vec<PoolSpec> = pools.iter().map(|(s, _)| s.clone()).collect();
        if st.services.get(&id) != Some(&specs) {
            if specs.is_empty() {
                st.services.remove(&id);
                st.ids.retain(|k, _| {
                    (k.0.as_str(), k.1.as_str()) != (key.namespace.as_str(), key.name.as_str())
                });
            } else {
                st.services.insert(id.clone(), specs);
            }
            st.dirty = true;
        }
        if st.dirty {
            match st.last_publish.map(|t| t.elapsed()) {
                // Published a moment ago: come back (this service's
                // backends need its pools published first).
                Some(since) if since < PUBLISH_EVERY => {
                    return Ok(Next::After(PUBLISH_EVERY - since))
                }
                _ => {
                    self.publish_specs(&mut st);
                    st.dirty = false;
                    st.last_publish = Some(std::time::Instant::now());
                }
            }
        }
        // Backends from the slices.
        let slices: Vec<EndpointSlice> = self.slices.slices(objects, &key.namespace, &key.name)?;
        let mut removed = Vec::new();
        for (pool, port_name) in &pools {
            let mut backends = Vec::new();
            for slice in &slices {
                let Some(port) = slice
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| p.name.clone().unwrap_or_default() == *port_name)
                    .and_then(|p| p.port)
                else {
                    continue;
                };
                for e in slice.endpoints.iter().flatten() {
                    let c = e.conditions.clone().unwrap_or_default();
                    let ready = c.ready.unwrap_or(true);
                    let serving = c.serving.unwrap_or(ready);
                    let terminating = c.terminating.unwrap_or(false);
                    if !(ready || (terminating && serving)) {
                        continue;
                    }
                    for a in &e.addresses {
                        if let Ok(ip) = a.parse::<IpAddr>() {
                            backends.push(Backend {
                                addr: SocketAddr::new(ip, port as u16),
                                terminating: !ready,
                            });
                        }
                    }
                }
            }
            backends.sort_by_key(|b| b.addr);
            backends.dedup_by_key(|b| b.addr);
            if st.backends.get(&pool.id) == Some(&backends) {
                continue;
            }
            match self.dataplane.router().set_endpoints(pool.id, &backends) {
                Ok(change) => removed.extend(change.removed),
                Err(e) => tracing::error!(service = %key.name, "cannot publish endpoints: {e}"),
            }
            let old = st.backends.insert(pool.id, backends);
            let new = &st.backends[&pool.id];
            self.ready.replace(old.as_deref().unwrap_or_default(), new);
        }
        drop(st);
        if !removed.is_empty() {
            self.dataplane
                .router()
                .reset_flows(FlowSelector::Backends(&removed), &mut |l, p| {
                    self.dataplane.send_packet(l, p)
                });
        }
        Ok(Next::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(addr: &str, terminating: bool) -> Backend {
        Backend {
            addr: addr.parse().unwrap(),
            terminating,
        }
    }

    #[test]
    fn ready_backends_count_pools_and_skip_terminating_ones() {
        let ready = ReadyBackends::default();
        let a: IpAddr = "10.244.0.2".parse().unwrap();
        let b: IpAddr = "10.244.0.3".parse().unwrap();
        // Two pools (two ports of a service) with the same pod.
        let pool = [
            backend("10.244.0.2:80", false),
            backend("10.244.0.3:80", false),
        ];
        ready.replace(&[], &pool);
        ready.replace(&[], &[backend("10.244.0.2:443", false)]);
        assert!(ready.contains(a) && ready.contains(b));
        // One pool marks it terminating: the other still balances to it.
        let terminating = [
            backend("10.244.0.2:80", true),
            backend("10.244.0.3:80", false),
        ];
        ready.replace(&pool, &terminating);
        assert!(ready.contains(a));
        ready.replace(&[backend("10.244.0.2:443", false)], &[]);
        assert!(!ready.contains(a), "terminating everywhere");
        assert!(ready.contains(b));
        ready.replace(&terminating, &[]);
        assert!(!ready.contains(b));
        assert!(ready.0.lock().is_empty());
    }
}
