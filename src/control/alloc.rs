//! Admission steps that hand out what a new object needs at once: the
//! node a pod runs on ([`NodeBinder`]), and cluster IPs.
//!
//! Cluster IPs: handed out when a Service is created, as the API server's
//! allocator does, so that `kubectl get svc` shows the address at once.
//!
//! The allocator is an [`Admission`] step of the object store: it sees a
//! Service before it is written (and may refuse it) and after it is
//! removed. The set of addresses in use is built from the stored Services
//! at start and kept in memory; allocation takes the next free address
//! after the last one handed out (from `.10` up, as kubeadm clusters
//! number theirs), so a freed address is not reused at once. One address
//! may be reserved for one service ([`ClusterIps::reserve`]: the cluster
//! DNS address for `kube-system/kube-dns`): it is never handed out
//! automatically and refused to any other service that asks for it.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Service;
use parking_lot::Mutex;
use serde_json::{json, Value};

use super::kinds::{self, FieldError, Kind};
use super::objects::{Admission, ObjectError, Objects};

/// The first offset handed out automatically in the service CIDR.
pub const FIRST_OFFSET: u32 = 10;

/// Cluster IP allocation from a service CIDR.
pub struct ClusterIps {
    cidr: Ipv4Net,
    state: Mutex<State>,
    /// An offset kept for one service (namespace, name).
    reserved: Option<(u32, String, String)>,
}

struct State {
    used: BTreeSet<u32>,
    next: u32,
}

fn invalid(name: &str, ip: &str, why: String) -> ObjectError {
    ObjectError::Invalid {
        kind: "Service".into(),
        name: name.into(),
        causes: vec![FieldError::invalid(
            "spec.clusterIPs",
            format!("[\"{ip}\"]"),
            &format!("failed to allocate IP {ip}: {why}"),
        )],
    }
}

impl ClusterIps {
    /// An allocator over `cidr` that knows the addresses stored Services hold.
    pub fn new(cidr: Ipv4Net, objects: &Objects) -> Self {
        let base = cidr.network().to_bits();
        let used = objects
            .list_as::<Service>(None, &Default::default())
            .iter()
            .filter_map(|s| {
                s.spec
                    .as_ref()?
                    .cluster_ip
                    .as_ref()?
                    .parse::<Ipv4Addr>()
                    .ok()
            })
            .filter(|ip| cidr.contains(ip))
            .map(|ip| ip.to_bits() - base)
            .collect();
        Self {
            cidr,
            state: Mutex::new(State {
                used,
                next: FIRST_OFFSET,
            }),
            reserved: None,
        }
    }

    /// Keeps `ip` for the service `namespace/name` alone (an address
    /// outside the CIDR reserves nothing).
    pub fn reserve(mut self, ip: std::net::IpAddr, namespace: &str, name: &str) -> Self {
        if let Some(off) = self.offset_of(&ip.to_string()) {
            self.reserved = Some((off, namespace.into(), name.into()));
        }
        self
    }

    fn size(&self) -> u32 {
        (1u64 << (32 - self.cidr.prefix_len())).min(u32::MAX as u64) as u32
    }

    fn offset_of(&self, ip: &str) -> Option<u32> {
        let ip: Ipv4Addr = ip.parse().ok()?;
        self.cidr
            .contains(&ip)
            .then(|| ip.to_bits() - self.cidr.network().to_bits())
    }

    fn take(
        &self,
        namespace: &str,
        name: &str,
        requested: Option<&str>,
    ) -> Result<Ipv4Addr, ObjectError> {
        let base = self.cidr.network().to_bits();
        let size = self.size();
        let mut st = self.state.lock();
        let reserved = self.reserved.as_ref().map(|r| r.0);
        if let Some(text) = requested {
            let off = self.offset_of(text).filter(|o| *o > 0 && *o < size - 1).ok_or_else(|| {
                invalid(name, text, format!("the provided IP is not in the valid range; the range of valid IPs is {}", self.cidr))
            })?;
            if let Some((r, rns, rname)) = &self.reserved {
                if *r == off && (rns.as_str(), rname.as_str()) != (namespace, name) {
                    return Err(invalid(
                        name,
                        text,
                        format!("the address is reserved for the cluster DNS service {rns}/{rname}; choose another or leave spec.clusterIP empty"),
                    ));
                }
            }
            if !st.used.insert(off) {
                return Err(invalid(
                    name,
                    text,
                    "provided IP is already allocated".into(),
                ));
            }
            return Ok(Ipv4Addr::from(base + off));
        }
        let span = size.saturating_sub(FIRST_OFFSET + 1);
        for i in 0..span {
            let off = FIRST_OFFSET + (st.next - FIRST_OFFSET + i) % span.max(1);
            if Some(off) != reserved && st.used.insert(off) {
                st.next = off + 1;
                return Ok(Ipv4Addr::from(base + off));
            }
        }
        Err(ObjectError::Forbidden(format!(
            "the service CIDR {} has no free cluster IP; delete services or widen --service-cidr",
            self.cidr
        )))
    }

    fn free(&self, ip: &str) {
        if let Some(off) = self.offset_of(ip) {
            self.state.lock().used.remove(&off);
        }
    }
}

fn cluster_ip(obj: &Value) -> Option<&str> {
    obj.pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .filter(|ip| !ip.is_empty() && *ip != "None")
}

impl Admission for ClusterIps {
    fn admit(&self, kind: &Kind, obj: &mut Value, old: Option<&Value>) -> Result<(), ObjectError> {
        if !kind.is::<Service>() {
            return Ok(());
        }
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let external_name =
            obj.pointer("/spec/type").and_then(Value::as_str) == Some("ExternalName");
        if let Some(old) = old {
            // An update keeps the address; a client that left it out (a
            // PUT of what it applied) gets it filled in.
            if let Some(ip) = cluster_ip(old) {
                if obj
                    .pointer("/spec/clusterIP")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .is_empty()
                {
                    obj["spec"]["clusterIP"] = ip.into();
                    obj["spec"]["clusterIPs"] = json!([ip]);
                }
            }
            return Ok(());
        }
        if external_name || obj.pointer("/spec/clusterIP").and_then(Value::as_str) == Some("None") {
            if !external_name {
                obj["spec"]["clusterIPs"] = json!(["None"]);
            }
            return Ok(());
        }
        let requested = cluster_ip(obj).map(str::to_string);
        let namespace = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let ip = self
            .take(&namespace, &name, requested.as_deref())?
            .to_string();
        obj["spec"]["clusterIP"] = ip.clone().into();
        obj["spec"]["clusterIPs"] = json!([ip]);
        obj["spec"]["ipFamilies"] = json!(["IPv4"]);
        obj["spec"]["ipFamilyPolicy"] = "SingleStack".into();
        Ok(())
    }

    fn abandoned(&self, kind: &Kind, obj: &Value) {
        if kind.is::<Service>() {
            if let Some(ip) = cluster_ip(obj) {
                self.free(ip);
            }
        }
    }
}

/// The node port range Kubernetes uses unless told otherwise
/// (`--service-node-port-range`).
pub const DEFAULT_NODE_PORT_RANGE: (u16, u16) = (30_000, 32_767);

/// Values handed out from a numbered range (node ports, offsets in a pool
/// of addresses), with the uncertainty an update leaves behind.
///
/// The store calls [`Admission::abandoned`] when a create is not written,
/// but not when an update is refused after admission (a conflict, a dry
/// run). So a value an update gives up is not freed outright: it is kept
/// and marked "maybe free", and only given out again when someone asks for
/// it by number and the store confirms no stored object holds it. A value
/// an update takes and then loses stays taken until the next start (which
/// rebuilds the set from the store): a leak, never a clash.
struct Numbers {
    used: BTreeSet<u32>,
    maybe_free: BTreeSet<u32>,
    next: u32,
}

impl Numbers {
    fn new(used: BTreeSet<u32>, first: u32) -> Numbers {
        Numbers {
            used,
            maybe_free: BTreeSet::new(),
            next: first,
        }
    }

    /// Takes `n`; `held` says whether a stored object still holds it.
    fn take_exact(&mut self, n: u32, held: impl FnOnce(u32) -> bool) -> bool {
        if self.used.insert(n) {
            self.maybe_free.remove(&n);
            return true;
        }
        if self.maybe_free.remove(&n) && !held(n) {
            return true;
        }
        false
    }

    /// Takes the next free value in `lo..=hi` after the last one handed out.
    fn take_any(&mut self, lo: u32, hi: u32) -> Option<u32> {
        let span = hi - lo + 1;
        let start = self.next.clamp(lo, hi) - lo;
        for i in 0..span {
            let n = lo + (start + i) % span;
            if self.used.insert(n) {
                self.next = n + 1;
                return Some(n);
            }
        }
        None
    }

    fn free(&mut self, n: u32) {
        self.used.remove(&n);
        self.maybe_free.remove(&n);
    }

    fn maybe_free(&mut self, n: u32) {
        if self.used.contains(&n) {
            self.maybe_free.insert(n);
        }
    }
}

fn service_name(obj: &Value) -> String {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

fn service_type(obj: &Value) -> &str {
    obj.pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
}

/// The node ports a Service object holds: every `spec.ports[].nodePort`
/// and `spec.healthCheckNodePort`.
fn held_node_ports(obj: &Value) -> Vec<u16> {
    let mut ports: Vec<u16> = obj
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("nodePort")?.as_u64())
        .chain(
            obj.pointer("/spec/healthCheckNodePort")
                .and_then(Value::as_u64),
        )
        .filter_map(|n| u16::try_from(n).ok())
        .filter(|n| *n > 0)
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// Node ports for `type: NodePort` and `LoadBalancer` Services, as the API
/// server's allocator hands them out: one per service port, from the
/// node port range, either chosen here or given in `nodePort` (then it must
/// be in the range and free, or the write is refused with 422 as the API
/// server refuses it); `healthCheckNodePort` too for a LoadBalancer with
/// `externalTrafficPolicy: Local`. A port is released when its Service is
/// deleted or no longer needs it (a type change to ClusterIP clears the
/// fields, as the API server does). The set in use is rebuilt from the
/// stored Services at start.
pub struct NodePorts {
    range: (u16, u16),
    objects: Objects,
    state: Mutex<Numbers>,
}

impl NodePorts {
    /// An allocator over `range` (inclusive) that knows the ports stored
    /// Services hold.
    pub fn new(range: (u16, u16), objects: &Objects) -> NodePorts {
        let used = objects
            .list(
                kinds::of::<Service>(),
                None,
                &Default::default(),
                &Default::default(),
            )
            .0
            .iter()
            .flat_map(held_node_ports)
            .filter(|p| (range.0..=range.1).contains(p))
            .map(u32::from)
            .collect();
        NodePorts {
            range,
            objects: objects.clone(),
            state: Mutex::new(Numbers::new(used, u32::from(range.0))),
        }
    }

    /// Whether a stored Service holds `port`.
    fn held(&self, port: u32) -> bool {
        self.objects
            .list(
                kinds::of::<Service>(),
                None,
                &Default::default(),
                &Default::default(),
            )
            .0
            .iter()
            .any(|s| held_node_ports(s).contains(&(port as u16)))
    }

    fn port_error(&self, name: &str, field: String, port: u16, why: String) -> ObjectError {
        ObjectError::Invalid {
            kind: "Service".into(),
            name: name.into(),
            causes: vec![FieldError::invalid(field, port, &why)],
        }
    }

    /// Takes `port` (given by the client) or a free one.
    fn take(
        &self,
        st: &mut Numbers,
        name: &str,
        field: String,
        given: Option<u16>,
    ) -> Result<u16, ObjectError> {
        let (lo, hi) = self.range;
        match given {
            Some(p) if !(lo..=hi).contains(&p) => Err(self.port_error(
                name,
                field,
                p,
                format!("provided port is not in the valid range. The range of valid ports is {lo}-{hi}"),
            )),
            Some(p) => {
                if st.take_exact(u32::from(p), |n| self.held(n)) {
                    Ok(p)
                } else {
                    Err(self.port_error(
                        name,
                        field,
                        p,
                        "provided port is already allocated".into(),
                    ))
                }
            }
            None => st
                .take_any(u32::from(lo), u32::from(hi))
                .map(|p| p as u16)
                .ok_or_else(|| {
                    ObjectError::Forbidden(format!(
                        "the node port range {lo}-{hi} has no free port; delete NodePort services or widen --service-node-port-range"
                    ))
                }),
        }
    }
}

impl Admission for NodePorts {
    fn admit(&self, kind: &Kind, obj: &mut Value, old: Option<&Value>) -> Result<(), ObjectError> {
        if !kind.is::<Service>() {
            return Ok(());
        }
        let name = service_name(obj);
        let type_ = service_type(obj).to_string();
        let wants = match type_.as_str() {
            "NodePort" => true,
            "LoadBalancer" => obj
                .pointer("/spec/allocateLoadBalancerNodePorts")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            _ => false,
        };
        let old_held: Vec<u16> = old.map(held_node_ports).unwrap_or_default();
        // The old object's node port per (port, protocol), so an update
        // that leaves `nodePort` out keeps it, as the API server does.
        let old_by_port: Vec<(i64, String, u16)> = old
            .and_then(|o| o.pointer("/spec/ports")?.as_array().cloned())
            .into_iter()
            .flatten()
            .filter_map(|p| {
                Some((
                    p.get("port")?.as_i64()?,
                    p.get("protocol")
                        .and_then(Value::as_str)
                        .unwrap_or("TCP")
                        .to_string(),
                    u16::try_from(p.get("nodePort")?.as_u64()?).ok()?,
                ))
            })
            .collect();
        let mut st = self.state.lock();
        let mut taken: Vec<u16> = Vec::new();
        let mut result = Ok(());
        let ports_len = obj
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        for i in 0..ports_len {
            let p = &mut obj["spec"]["ports"][i];
            if !wants {
                // A type without node ports: the API server clears them.
                if let Some(m) = p.as_object_mut() {
                    if type_ != "LoadBalancer" {
                        m.remove("nodePort");
                    }
                }
                if type_ != "LoadBalancer" {
                    continue;
                }
            }
            let given = p
                .get("nodePort")
                .and_then(Value::as_u64)
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| *n > 0);
            if !wants && given.is_none() {
                continue;
            }
            let inherited = given.or_else(|| {
                let port = p.get("port")?.as_i64()?;
                let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
                old_by_port
                    .iter()
                    .find(|(op, opr, np)| *op == port && opr == proto && !taken.contains(np))
                    .map(|(_, _, np)| *np)
            });
            let port = match inherited {
                Some(n) if old_held.contains(&n) && !taken.contains(&n) => n,
                other => {
                    match self.take(&mut st, &name, format!("spec.ports[{i}].nodePort"), other) {
                        Ok(n) => {
                            taken.push(n);
                            n
                        }
                        Err(e) => {
                            result = Err(e);
                            break;
                        }
                    }
                }
            };
            obj["spec"]["ports"][i]["nodePort"] = port.into();
            if !taken.contains(&port) {
                taken.push(port);
            }
        }
        // healthCheckNodePort: a LoadBalancer keeping client addresses.
        if result.is_ok() {
            let local = obj
                .pointer("/spec/externalTrafficPolicy")
                .and_then(Value::as_str)
                == Some("Local");
            if type_ == "LoadBalancer" && local {
                let given = obj
                    .pointer("/spec/healthCheckNodePort")
                    .and_then(Value::as_u64)
                    .and_then(|n| u16::try_from(n).ok())
                    .filter(|n| *n > 0)
                    .or_else(|| {
                        old.and_then(|o| o.pointer("/spec/healthCheckNodePort")?.as_u64())
                            .and_then(|n| u16::try_from(n).ok())
                    });
                let port = match given {
                    Some(n) if old_held.contains(&n) && !taken.contains(&n) => Ok(n),
                    other => self.take(&mut st, &name, "spec.healthCheckNodePort".into(), other),
                };
                match port {
                    Ok(n) => {
                        obj["spec"]["healthCheckNodePort"] = n.into();
                        taken.push(n);
                    }
                    Err(e) => result = Err(e),
                }
            } else if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                spec.remove("healthCheckNodePort");
            }
        }
        if let Err(e) = result {
            // Give back what this write took; the old object's ports stay.
            for n in taken.iter().filter(|n| !old_held.contains(n)) {
                st.free(u32::from(*n));
            }
            return Err(e);
        }
        // Ports the old object held and this one does not: maybe free (the
        // update may still be refused; see `Numbers`).
        for n in old_held.iter().filter(|n| !taken.contains(n)) {
            st.maybe_free(u32::from(*n));
        }
        Ok(())
    }

    fn abandoned(&self, kind: &Kind, obj: &Value) {
        if kind.is::<Service>() {
            let mut st = self.state.lock();
            for n in held_node_ports(obj) {
                st.free(u32::from(n));
            }
        }
    }
}

/// LoadBalancer addresses from the node's pool (`--lb-pool`), what
/// MetalLB's layer-2 mode hands out (without answering ARP): a
/// `type: LoadBalancer` Service gets the next free address of the pool in
/// `status.loadBalancer.ingress[0].ip` when it is written, and gives it
/// back when it is deleted or changes type. Without a pool the status
/// stays empty and `kubectl get svc` shows `<pending>`, as on a cluster
/// without a load-balancer controller.
pub struct LoadBalancerIps {
    pool: Ipv4Net,
    state: Mutex<Numbers>,
}

fn lb_ips(obj: &Value) -> Vec<Ipv4Addr> {
    obj.pointer("/status/loadBalancer/ingress")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|i| i.get("ip")?.as_str()?.parse().ok())
        .collect()
}

impl LoadBalancerIps {
    /// An allocator over `pool` that knows the addresses stored Services
    /// hold.
    pub fn new(pool: Ipv4Net, objects: &Objects) -> LoadBalancerIps {
        let base = pool.network().to_bits();
        let used = objects
            .list(
                kinds::of::<Service>(),
                None,
                &Default::default(),
                &Default::default(),
            )
            .0
            .iter()
            .flat_map(lb_ips)
            .filter(|ip| pool.contains(ip))
            .map(|ip| ip.to_bits() - base)
            .collect();
        LoadBalancerIps {
            pool,
            state: Mutex::new(Numbers::new(used, 0)),
        }
    }

    /// Offsets usable in the pool: all of a /31 or /32, else without the
    /// network and broadcast addresses.
    fn span(&self) -> (u32, u32) {
        let size = (1u64 << (32 - self.pool.prefix_len())) as u32;
        if self.pool.prefix_len() >= 31 {
            (0, size - 1)
        } else {
            (1, size - 2)
        }
    }

    fn offset(&self, ip: Ipv4Addr) -> Option<u32> {
        self.pool
            .contains(&ip)
            .then(|| ip.to_bits() - self.pool.network().to_bits())
    }
}

impl Admission for LoadBalancerIps {
    fn admit(&self, kind: &Kind, obj: &mut Value, old: Option<&Value>) -> Result<(), ObjectError> {
        if !kind.is::<Service>() {
            return Ok(());
        }
        let old_ips: Vec<Ipv4Addr> = old.map(lb_ips).unwrap_or_default();
        let mut st = self.state.lock();
        if service_type(obj) != "LoadBalancer" {
            for ip in &old_ips {
                if let Some(off) = self.offset(*ip) {
                    st.maybe_free(off);
                }
            }
            if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut) {
                status.remove("loadBalancer");
            }
            return Ok(());
        }
        let current = lb_ips(obj);
        if current.iter().any(|ip| self.pool.contains(ip)) {
            return Ok(());
        }
        let (lo, hi) = self.span();
        let base = self.pool.network().to_bits();
        // An address the old object held (a status write that dropped it
        // gets it back), else the next free one.
        let reuse = old_ips.iter().find_map(|ip| self.offset(*ip));
        let off = match reuse {
            Some(off) => Some(off),
            None => st.take_any(lo, hi),
        };
        let Some(off) = off else {
            // As a controller with an exhausted pool: the service stays
            // pending.
            tracing::warn!(
                service = %service_name(obj),
                "the LoadBalancer pool {} has no free address; the service stays <pending>",
                self.pool
            );
            return Ok(());
        };
        let ip = Ipv4Addr::from(base + off).to_string();
        if !obj.get("status").is_some_and(Value::is_object) {
            obj["status"] = json!({});
        }
        obj["status"]["loadBalancer"] = json!({"ingress": [{"ip": ip, "ipMode": "VIP"}]});
        Ok(())
    }

    fn abandoned(&self, kind: &Kind, obj: &Value) {
        if kind.is::<Service>() {
            let mut st = self.state.lock();
            for ip in lb_ips(obj) {
                if let Some(off) = self.offset(ip) {
                    st.free(off);
                }
            }
        }
    }
}

/// Binds a pod created without `spec.nodeName` to this node, as a
/// single-node cluster's scheduler would: the kubelet can start it without
/// a write of its own first.
pub struct NodeBinder {
    /// This node's name.
    pub node: String,
}

impl Admission for NodeBinder {
    fn admit(&self, kind: &Kind, obj: &mut Value, old: Option<&Value>) -> Result<(), ObjectError> {
        if old.is_none() && kind.kind == "Pod" {
            let bound = obj
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty());
            if !bound {
                if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                    spec.insert("nodeName".into(), self.node.clone().into());
                }
            }
        }
        Ok(())
    }

    fn abandoned(&self, _kind: &Kind, _obj: &Value) {}
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::SystemTime;

    use serde_json::json;

    use super::*;
    use crate::control::kinds;
    use crate::control::objects::{DeleteOptions, WriteOptions};
    use crate::control::store::MemStore;

    fn svc(name: &str, ip: Option<&str>) -> Value {
        let mut s = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": "x"}, "ports": [{"port": 80}]}});
        if let Some(ip) = ip {
            s["spec"]["clusterIP"] = ip.into();
        }
        s
    }

    #[test]
    fn cluster_ips_are_handed_out_once_and_kept() {
        let kv = Arc::new(MemStore::new());
        let cidr: Ipv4Net = "10.96.0.0/28".parse().unwrap();
        let base = Objects::new(kv.clone(), SystemTime::now()).unwrap();
        let o = base
            .clone()
            .with_admission(Arc::new(ClusterIps::new(cidr, &base)));
        let k = kinds::of::<Service>();
        let now = SystemTime::now();
        let a = o
            .create(
                k,
                Some("default"),
                svc("a", None),
                WriteOptions::default(),
                now,
            )
            .unwrap();
        assert_eq!(a["spec"]["clusterIP"], "10.96.0.10");
        assert_eq!(a["spec"]["clusterIPs"], json!(["10.96.0.10"]));
        let e = o
            .create(
                k,
                Some("default"),
                svc("b", Some("10.96.0.10")),
                WriteOptions::default(),
                now,
            )
            .unwrap_err();
        assert_eq!(e.code(), 422);
        assert!(e.to_string().contains("already allocated"), "{e}");
        let e = o
            .create(
                k,
                Some("default"),
                svc("b", Some("10.97.0.1")),
                WriteOptions::default(),
                now,
            )
            .unwrap_err();
        assert!(e.to_string().contains("valid range"), "{e}");
        let b = o
            .create(
                k,
                Some("default"),
                svc("b", Some("10.96.0.3")),
                WriteOptions::default(),
                now,
            )
            .unwrap();
        assert_eq!(b["spec"]["clusterIP"], "10.96.0.3");
        let h = o
            .create(
                k,
                Some("default"),
                svc("h", Some("None")),
                WriteOptions::default(),
                now,
            )
            .unwrap();
        assert_eq!(h["spec"]["clusterIP"], "None");
        // An update without the address keeps it.
        let mut put = a.clone();
        put["spec"].as_object_mut().unwrap().remove("clusterIP");
        put["spec"].as_object_mut().unwrap().remove("clusterIPs");
        let put = o
            .update(k, Some("default"), "a", put, None, WriteOptions::default())
            .unwrap();
        assert_eq!(put["spec"]["clusterIP"], "10.96.0.10");
        // A failed create (already exists) and a dry run take nothing.
        assert!(o
            .create(
                k,
                Some("default"),
                svc("a", None),
                WriteOptions::default(),
                now
            )
            .is_err());
        let dry = o
            .create(
                k,
                Some("default"),
                svc("d", None),
                WriteOptions {
                    dry_run: true,
                    ..Default::default()
                },
                now,
            )
            .unwrap();
        assert_eq!(dry["spec"]["clusterIP"], "10.96.0.11");
        let c = o
            .create(
                k,
                Some("default"),
                svc("c", None),
                WriteOptions::default(),
                now,
            )
            .unwrap();
        assert_eq!(
            c["spec"]["clusterIP"], "10.96.0.12",
            "not reused at once after the dry run"
        );
        // Deleted: free again, after the others; a restart sees what is held.
        o.delete(k, Some("default"), "a", DeleteOptions::default(), now)
            .unwrap();
        let again = ClusterIps::new(cidr, &base);
        assert!(again.state.lock().used.contains(&12) && !again.state.lock().used.contains(&10));
        let d = o
            .create(
                k,
                Some("default"),
                svc("d", None),
                WriteOptions::default(),
                now,
            )
            .unwrap();
        assert_eq!(d["spec"]["clusterIP"], "10.96.0.13");
        // /28: offsets 10..=14 are automatic; 14 then wraps to the freed 10.
        let e = o
            .create(
                k,
                Some("default"),
                svc("e", None),
                WriteOptions::default(),
                now,
            )
            .unwrap();
        assert_eq!(e["spec"]["clusterIP"], "10.96.0.14");
        let f = o
            .create(
                k,
                Some("default"),
                svc("f", None),
                WriteOptions::default(),
                now,
            )
            .unwrap();
        assert_eq!(f["spec"]["clusterIP"], "10.96.0.10");
        let g = o
            .create(
                k,
                Some("default"),
                svc("g", None),
                WriteOptions::default(),
                now,
            )
            .unwrap();
        assert_eq!(
            g["spec"]["clusterIP"], "10.96.0.11",
            "the one the dry run showed and left"
        );
        let full = o
            .create(
                k,
                Some("default"),
                svc("i", None),
                WriteOptions::default(),
                now,
            )
            .unwrap_err();
        assert_eq!(full.code(), 403);
    }

    fn node_port_svc(name: &str, type_: &str, node_ports: &[Option<u16>]) -> Value {
        let ports: Vec<Value> = node_ports
            .iter()
            .enumerate()
            .map(|(i, np)| {
                let mut p = json!({"name": format!("p{i}"), "port": 80 + i, "protocol": "TCP"});
                if let Some(np) = np {
                    p["nodePort"] = (*np).into();
                }
                p
            })
            .collect();
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"type": type_, "selector": {"app": "x"}, "ports": ports}})
    }

    fn objects_with(step: impl Fn(&Objects) -> Arc<dyn Admission>) -> (Objects, Objects) {
        let kv = Arc::new(MemStore::new());
        let base = Objects::new(kv, SystemTime::now()).unwrap();
        let o = base.clone().with_admission(step(&base));
        (base, o)
    }

    #[test]
    fn the_cluster_dns_address_is_kept_for_kube_dns_and_the_first_address_moves() {
        let cidr: Ipv4Net = "10.96.0.0/28".parse().unwrap();
        let (_, o) = objects_with(|b| {
            Arc::new(ClusterIps::new(cidr, b).reserve(
                "10.96.0.10".parse().unwrap(),
                "kube-system",
                "kube-dns",
            ))
        });
        let k = kinds::of::<Service>();
        let now = SystemTime::now();
        let create = |ns: &str, name: &str, ip: Option<&str>| {
            o.create(k, Some(ns), svc(name, ip), WriteOptions::default(), now)
        };
        // Before kube-dns exists, the first automatic address skips it.
        let a = create("default", "a", None).unwrap();
        assert_eq!(a["spec"]["clusterIP"], "10.96.0.11");
        let e = create("default", "b", Some("10.96.0.10")).unwrap_err();
        assert_eq!(e.code(), 422);
        assert!(
            e.to_string().contains("reserved for the cluster DNS"),
            "{e}"
        );
        let e = create("default", "kube-dns", Some("10.96.0.10")).unwrap_err();
        assert!(e.to_string().contains("kube-system/kube-dns"), "{e}");
        let dns = create("kube-system", "kube-dns", Some("10.96.0.10")).unwrap();
        assert_eq!(dns["spec"]["clusterIP"], "10.96.0.10");
        // The rest of the range is handed out, never the reserved address.
        let mut got = Vec::new();
        for i in 0..10 {
            match create("default", &format!("s{i}"), None) {
                Ok(v) => got.push(v["spec"]["clusterIP"].as_str().unwrap().to_string()),
                Err(e) => {
                    assert!(e.to_string().contains("no free cluster IP"), "{e}");
                    break;
                }
            }
        }
        assert_eq!(got, ["10.96.0.12", "10.96.0.13", "10.96.0.14"]);
    }

    #[test]
    fn node_ports_are_chosen_or_given_and_clashes_are_refused_as_the_api_server_does() {
        let (base, o) = objects_with(|b| Arc::new(NodePorts::new((30_000, 30_003), b)));
        let k = kinds::of::<Service>();
        let now = SystemTime::now();
        let opts = WriteOptions::default;
        let a = o
            .create(
                k,
                Some("default"),
                node_port_svc("a", "NodePort", &[None, Some(30_002)]),
                opts(),
                now,
            )
            .unwrap();
        assert_eq!(a["spec"]["ports"][0]["nodePort"], 30_000);
        assert_eq!(a["spec"]["ports"][1]["nodePort"], 30_002);
        let e = o
            .create(
                k,
                Some("default"),
                node_port_svc("b", "NodePort", &[Some(30_002)]),
                opts(),
                now,
            )
            .unwrap_err();
        assert_eq!(e.code(), 422);
        assert!(
            e.to_string().contains(
                "spec.ports[0].nodePort: Invalid value: 30002: provided port is already allocated"
            ),
            "{e}"
        );
        let e = o
            .create(
                k,
                Some("default"),
                node_port_svc("b", "NodePort", &[Some(8080)]),
                opts(),
                now,
            )
            .unwrap_err();
        assert!(e.to_string().contains("valid range"), "{e}");
        // A ClusterIP service takes none; a LoadBalancer takes them too.
        let c = o
            .create(
                k,
                Some("default"),
                node_port_svc("c", "ClusterIP", &[None]),
                opts(),
                now,
            )
            .unwrap();
        assert!(c["spec"]["ports"][0].get("nodePort").is_none());
        let lb = o
            .create(
                k,
                Some("default"),
                node_port_svc("lb", "LoadBalancer", &[None]),
                opts(),
                now,
            )
            .unwrap();
        assert_eq!(lb["spec"]["ports"][0]["nodePort"], 30_001);
        // Exhausted: 403 saying what to do; the failed write takes nothing.
        let e = o
            .create(
                k,
                Some("default"),
                node_port_svc("d", "NodePort", &[None, None]),
                opts(),
                now,
            )
            .unwrap_err();
        assert_eq!(e.code(), 403, "{e}");
        // An update that leaves nodePort out keeps it; a type change to
        // ClusterIP clears it, and a later request for it succeeds.
        let mut put = a.clone();
        put["spec"]["ports"][0]
            .as_object_mut()
            .unwrap()
            .remove("nodePort");
        let put = o
            .update(k, Some("default"), "a", put, None, opts())
            .unwrap();
        assert_eq!(put["spec"]["ports"][0]["nodePort"], 30_000);
        let mut to_cluster_ip = put.clone();
        to_cluster_ip["spec"]["type"] = "ClusterIP".into();
        let cip = o
            .update(k, Some("default"), "a", to_cluster_ip, None, opts())
            .unwrap();
        assert!(cip["spec"]["ports"][0].get("nodePort").is_none());
        let d = o
            .create(
                k,
                Some("default"),
                node_port_svc("d", "NodePort", &[Some(30_002)]),
                opts(),
                now,
            )
            .unwrap();
        assert_eq!(d["spec"]["ports"][0]["nodePort"], 30_002);
        // Deleted: free; a restart sees what stored services hold.
        o.delete(k, Some("default"), "lb", DeleteOptions::default(), now)
            .unwrap();
        let again = NodePorts::new((30_000, 30_003), &base);
        let used: Vec<u32> = again.state.lock().used.iter().copied().collect();
        assert_eq!(used, vec![30_002]);
        let e = o
            .create(
                k,
                Some("default"),
                node_port_svc("e", "NodePort", &[Some(30_001)]),
                opts(),
                now,
            )
            .unwrap();
        assert_eq!(e["spec"]["ports"][0]["nodePort"], 30_001);
    }

    #[test]
    fn load_balancer_with_local_policy_gets_a_health_check_node_port() {
        let (_, o) = objects_with(|b| Arc::new(NodePorts::new((30_000, 30_010), b)));
        let k = kinds::of::<Service>();
        let mut svc = node_port_svc("lb", "LoadBalancer", &[None]);
        svc["spec"]["externalTrafficPolicy"] = "Local".into();
        let lb = o
            .create(
                k,
                Some("default"),
                svc,
                WriteOptions::default(),
                SystemTime::now(),
            )
            .unwrap();
        let hc = lb["spec"]["healthCheckNodePort"].as_u64().unwrap();
        assert!(
            (30_000..=30_010).contains(&hc)
                && hc != lb["spec"]["ports"][0]["nodePort"].as_u64().unwrap()
        );
        let mut cluster = lb.clone();
        cluster["spec"]["externalTrafficPolicy"] = "Cluster".into();
        let cluster = o
            .update(
                k,
                Some("default"),
                "lb",
                cluster,
                None,
                WriteOptions::default(),
            )
            .unwrap();
        assert!(cluster["spec"].get("healthCheckNodePort").is_none());
    }

    #[test]
    fn load_balancer_addresses_come_from_the_pool_and_go_back() {
        let pool: Ipv4Net = "192.0.2.240/30".parse().unwrap();
        let (base, o) = objects_with(|b| Arc::new(LoadBalancerIps::new(pool, b)));
        let k = kinds::of::<Service>();
        let now = SystemTime::now();
        let ip = |v: &Value| v["status"]["loadBalancer"]["ingress"][0]["ip"].clone();
        let a = o
            .create(
                k,
                Some("default"),
                node_port_svc("a", "LoadBalancer", &[None]),
                WriteOptions::default(),
                now,
            )
            .unwrap();
        assert_eq!(ip(&a), "192.0.2.241");
        let b = o
            .create(
                k,
                Some("default"),
                node_port_svc("b", "LoadBalancer", &[None]),
                WriteOptions::default(),
                now,
            )
            .unwrap();
        assert_eq!(ip(&b), "192.0.2.242");
        let c = o
            .create(
                k,
                Some("default"),
                node_port_svc("c", "LoadBalancer", &[None]),
                WriteOptions::default(),
                now,
            )
            .unwrap();
        assert_eq!(ip(&c), Value::Null, "pool exhausted: pending");
        let n = o
            .create(
                k,
                Some("default"),
                node_port_svc("n", "NodePort", &[None]),
                WriteOptions::default(),
                now,
            )
            .unwrap();
        assert_eq!(ip(&n), Value::Null);
        // An update keeps the address.
        let a2 = o
            .update(
                k,
                Some("default"),
                "a",
                a.clone(),
                None,
                WriteOptions::default(),
            )
            .unwrap();
        assert_eq!(ip(&a2), "192.0.2.241");
        o.delete(k, Some("default"), "a", DeleteOptions::default(), now)
            .unwrap();
        let d = o
            .create(
                k,
                Some("default"),
                node_port_svc("d", "LoadBalancer", &[None]),
                WriteOptions::default(),
                now,
            )
            .unwrap();
        assert_eq!(ip(&d), "192.0.2.241");
        let again = LoadBalancerIps::new(pool, &base);
        assert_eq!(again.state.lock().used.len(), 2);
    }
}
