//! Cluster DNS, sans-IO: the records of the cluster zone as kube-dns and
//! CoreDNS's `kubernetes` plugin answer them, built into an immutable
//! [`Zone`] from Services and EndpointSlices, beside an index of pod
//! addresses ([`PodAddresses`]) updated one pod at a time, and the answer to
//! one query over both. A pod coming or going never rebuilds the zone: on a
//! node with thousands of pods, that rebuild cost more than the pod. The daemon's DNS server (`crate::daemon::dns`) moves the
//! bytes, publishes a new zone when those objects change, and forwards what
//! [`answer`] says is not the cluster's to upstream resolvers through the
//! [`cache`].
//!
//! Records (TTL [`TTL`] s, as CoreDNS's default):
//! * `SVC.NS.svc.DOMAIN`: A/AAAA = the cluster IPs; for a headless service
//!   (`clusterIP: None`) the ready endpoint addresses; ExternalName: CNAME.
//! * `HOST.SVC.NS.svc.DOMAIN` for each endpoint of a headless service, HOST
//!   being the endpoint's hostname (a pod's `hostname` under a `subdomain`:
//!   the StatefulSet's `db-0.db`) or its dashed address.
//! * `_PORT._PROTO.SVC.NS.svc.DOMAIN` SRV for named ports: the service name
//!   at the service port, or (headless) each endpoint's name at its port.
//! * `A-B-C-D.NS.pod.DOMAIN` for each pod address.
//! * PTR for cluster IPs (to the service) and pod IPs (to the endpoint name
//!   of a headless service, else the pod name above).
//!
//! A name in the cluster zone (or a reverse name in its address ranges) that
//! has nothing is NXDOMAIN at once, with the zone's SOA so that resolvers
//! cache the answer; a name with records of other types only, or with names
//! below it, is NODATA. Everything else is [`Answer::Forward`].
//!
//! Wire format: `hickory-proto` (maintained, used by hickory-dns; it parses
//! and emits every record type and EDNS, so this module only decides).

pub mod cache;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, PTR, SOA, SRV};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use parking_lot::RwLock;
use serde_json::Value;

/// The TTL of every cluster record (CoreDNS's `kubernetes` plugin default).
pub const TTL: u32 = 5;

/// The label tying an EndpointSlice to its service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The largest UDP answer without EDNS (RFC 1035).
pub const CLASSIC_UDP_SIZE: usize = 512;

/// The records of the cluster zone at one moment.
#[derive(Debug, Default)]
pub struct Zone {
    /// `cluster.local`, lower case, no trailing dot.
    domain: String,
    /// Records by owner name (lower case, no trailing dot).
    records: HashMap<String, Vec<RData>>,
    /// Every owner name and every name between it and the zone apex
    /// (names that exist, for NODATA rather than NXDOMAIN).
    exists: HashSet<String>,
    /// Address ranges whose reverse names this zone answers.
    reverse: Vec<IpNet>,
    /// The pods' addresses, shared with the zones before and after.
    pods: Arc<PodAddresses>,
    serial: u32,
}

/// What a zone is built from.
#[derive(Debug, Default)]
pub struct ZoneSource<'a> {
    /// The cluster domain (`cluster.local`).
    pub domain: &'a str,
    /// The ranges of cluster IPs and pod IPs: their reverse names are ours.
    pub reverse: &'a [IpNet],
    /// Every service.
    pub services: &'a [Service],
    /// Every EndpointSlice.
    pub slices: &'a [EndpointSlice],
    /// The pods' addresses (kept up to date by their owner, not rebuilt).
    pub pods: Arc<PodAddresses>,
    /// The SOA serial (seconds since the epoch suit).
    pub serial: u32,
}

fn dashed(ip: IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

/// The reverse name of `ip` (`4.3.2.1.in-addr.arpa`), lower case, no dot.
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::with_capacity(72);
            for b in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
            }
            s.push_str("ip6.arpa");
            s
        }
    }
}

/// The address a full reverse name stands for.
fn parse_reverse(name: &str) -> Option<IpAddr> {
    if let Some(rest) = name.strip_suffix(".in-addr.arpa") {
        let parts: Vec<u8> = rest
            .split('.')
            .map(|p| p.parse().ok())
            .collect::<Option<_>>()?;
        let [d, c, b, a] = parts[..] else { return None };
        return Some(IpAddr::V4(Ipv4Addr::new(a, b, c, d)));
    }
    let rest = name.strip_suffix(".ip6.arpa")?;
    let nibbles: Vec<u8> = rest
        .split('.')
        .map(|p| {
            (p.len() == 1)
                .then(|| u8::from_str_radix(p, 16).ok())
                .flatten()
        })
        .collect::<Option<_>>()?;
    if nibbles.len() != 32 {
        return None;
    }
    let mut octets = [0u8; 16];
    for (i, pair) in nibbles.chunks(2).enumerate() {
        octets[15 - i] = pair[0] | (pair[1] << 4);
    }
    Some(IpAddr::V6(Ipv6Addr::from(octets)))
}

/// The address a dashed pod label (`10-244-0-5`, `fd00-10-244--5`) stands
/// for.
fn undashed(label: &str) -> Option<IpAddr> {
    if label.matches('-').count() == 3 {
        if let Ok(v4) = label.replace('-', ".").parse::<Ipv4Addr>() {
            return Some(IpAddr::V4(v4));
        }
    }
    label
        .replace('-', ":")
        .parse::<Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

/// The addresses of the pods that have them, by pod: what the
/// `A-B-C-D.NS.pod.DOMAIN` names and the pods' reverse names answer from.
///
/// Updated in place, one pod at a time ([`PodAddresses::set`]), and read by
/// every query under a read lock held for one lookup: a pod's change costs
/// the same with ten pods or ten thousand, where rebuilding the zone for it
/// read every pod.
#[derive(Debug, Default)]
pub struct PodAddresses {
    index: RwLock<PodIndex>,
}

#[derive(Debug, Default)]
struct PodIndex {
    /// Each pod's addresses, by (namespace, name).
    by_pod: HashMap<(String, String), Vec<IpAddr>>,
    /// The pods having each address (two only while an address moves).
    by_ip: HashMap<IpAddr, Vec<(String, String)>>,
    /// How many pods with addresses each namespace has.
    per_namespace: HashMap<String, usize>,
}

impl PodAddresses {
    /// The addresses a pod object (JSON) has in DNS: its `podIPs` and
    /// `podIP`, none once it has finished (Succeeded or Failed).
    pub fn addresses_of(pod: &Value) -> Vec<IpAddr> {
        let Some(status) = pod.get("status") else {
            return Vec::new();
        };
        if matches!(
            status.get("phase").and_then(Value::as_str),
            Some("Succeeded" | "Failed")
        ) {
            return Vec::new();
        }
        let listed = status
            .get("podIPs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| p.get("ip"));
        let mut ips: Vec<IpAddr> = listed
            .chain(status.get("podIP"))
            .filter_map(|v| v.as_str()?.parse().ok())
            .collect();
        ips.sort();
        ips.dedup();
        ips
    }

    /// The index of `pods` (JSON objects).
    pub fn of_pods<'a>(pods: impl IntoIterator<Item = &'a Value>) -> PodAddresses {
        let all = PodAddresses::default();
        for p in pods {
            let meta = |f: &str| {
                p.pointer(&format!("/metadata/{f}"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            all.set(&meta("namespace"), &meta("name"), Self::addresses_of(p));
        }
        all
    }

    /// Sets the addresses of pod `namespace/name` (none: it has gone or
    /// finished).
    pub fn set(&self, namespace: &str, name: &str, ips: Vec<IpAddr>) {
        let key = (namespace.to_string(), name.to_string());
        let mut ix = self.index.write();
        if ix.by_pod.get(&key) == Some(&ips) {
            return;
        }
        if let Some(old) = ix.by_pod.remove(&key) {
            for ip in old {
                if let Some(owners) = ix.by_ip.get_mut(&ip) {
                    owners.retain(|o| *o != key);
                    if owners.is_empty() {
                        ix.by_ip.remove(&ip);
                    }
                }
            }
            if let Some(n) = ix.per_namespace.get_mut(namespace) {
                *n -= 1;
                if *n == 0 {
                    ix.per_namespace.remove(namespace);
                }
            }
        }
        if ips.is_empty() {
            return;
        }
        for ip in &ips {
            let owners = ix.by_ip.entry(*ip).or_default();
            owners.push(key.clone());
            owners.sort();
        }
        *ix.per_namespace.entry(key.0.clone()).or_default() += 1;
        ix.by_pod.insert(key, ips);
    }

    /// How many pods have addresses.
    pub fn len(&self) -> usize {
        self.index.read().by_pod.len()
    }

    /// Whether no pod has an address.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a pod in `namespace` has `ip`.
    fn has(&self, namespace: &str, ip: IpAddr) -> bool {
        let ix = self.index.read();
        ix.by_ip
            .get(&ip)
            .is_some_and(|o| o.iter().any(|(ns, _)| ns == namespace))
    }

    /// The namespace of the first pod (by name) having `ip`.
    fn namespace_of(&self, ip: IpAddr) -> Option<String> {
        let ix = self.index.read();
        ix.by_ip.get(&ip)?.first().map(|(ns, _)| ns.clone())
    }

    /// Whether `namespace` (all: `None`) has a pod with an address.
    fn any_in(&self, namespace: Option<&str>) -> bool {
        let ix = self.index.read();
        match namespace {
            Some(ns) => ix.per_namespace.contains_key(ns),
            None => !ix.by_pod.is_empty(),
        }
    }
}

fn name(text: &str) -> Name {
    // Owner names are made here from Kubernetes names (DNS labels), so
    // they parse; a bad one would only lose its record.
    Name::from_ascii(format!("{text}.")).unwrap_or_else(|_| Name::root())
}

fn address(ip: IpAddr) -> RData {
    match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    }
}

fn lower_no_dot(n: &Name) -> String {
    let s = n.to_lowercase().to_ascii();
    s.strip_suffix('.').unwrap_or(&s).to_string()
}

impl Zone {
    /// Builds the zone from the objects.
    pub fn build(src: &ZoneSource<'_>) -> Zone {
        let mut z = Zone {
            domain: src.domain.trim_end_matches('.').to_ascii_lowercase(),
            reverse: src.reverse.to_vec(),
            pods: src.pods.clone(),
            serial: src.serial,
            ..Default::default()
        };
        let mut slices: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
        for s in src.slices {
            let ns = s.metadata.namespace.as_deref().unwrap_or("");
            if let Some(svc) = s
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
            {
                slices.entry((ns, svc.as_str())).or_default().push(s);
            }
        }
        for svc in src.services {
            let ns = svc.metadata.namespace.as_deref().unwrap_or("");
            let Some(svc_name) = svc.metadata.name.as_deref() else {
                continue;
            };
            let spec = svc.spec.clone().unwrap_or_default();
            let base = format!("{svc_name}.{ns}.svc.{}", z.domain);
            if spec.type_.as_deref() == Some("ExternalName") {
                if let Some(ext) = spec.external_name.as_deref() {
                    let target = name(ext.trim_end_matches('.'));
                    z.add(&base, RData::CNAME(CNAME(target)));
                }
                continue;
            }
            let mut ips: Vec<IpAddr> = spec
                .cluster_ips
                .iter()
                .flatten()
                .chain(spec.cluster_ip.iter())
                .filter_map(|ip| ip.parse().ok())
                .collect();
            ips.dedup();
            let headless = spec.cluster_ip.as_deref() == Some("None");
            if !headless {
                if ips.is_empty() {
                    continue;
                }
                for ip in &ips {
                    z.add(&base, address(*ip));
                    z.add_ptr(*ip, &base);
                }
                for p in spec.ports.iter().flatten() {
                    let Some(port_name) = p.name.as_deref().filter(|n| !n.is_empty()) else {
                        continue;
                    };
                    let proto = p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
                    z.add(
                        &format!("_{port_name}._{proto}.{base}"),
                        RData::SRV(SRV::new(0, 100, p.port as u16, name(&base))),
                    );
                }
                continue;
            }
            // Headless: the endpoints themselves.
            let publish_not_ready = spec.publish_not_ready_addresses == Some(true);
            z.exists.insert(base.clone());
            for slice in slices.get(&(ns, svc_name)).into_iter().flatten() {
                for e in slice.endpoints.iter().flatten() {
                    let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                    if !ready && !publish_not_ready {
                        continue;
                    }
                    for a in &e.addresses {
                        let Ok(ip) = a.parse::<IpAddr>() else {
                            continue;
                        };
                        let host = e
                            .hostname
                            .clone()
                            .filter(|h| !h.is_empty())
                            .unwrap_or_else(|| dashed(ip));
                        let own = format!("{host}.{base}");
                        z.add(&base, address(ip));
                        z.add(&own, address(ip));
                        z.add_ptr(ip, &own);
                        for p in slice.ports.iter().flatten() {
                            let (Some(port_name), Some(port)) =
                                (p.name.as_deref().filter(|n| !n.is_empty()), p.port)
                            else {
                                continue;
                            };
                            let proto = p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
                            z.add(
                                &format!("_{port_name}._{proto}.{base}"),
                                RData::SRV(SRV::new(0, 100, port as u16, name(&own))),
                            );
                        }
                    }
                }
            }
        }
        z
    }

    fn add(&mut self, owner: &str, data: RData) {
        let list = self.records.entry(owner.to_string()).or_default();
        if !list.contains(&data) {
            list.push(data);
        }
        // The owner and the names between it and the apex exist.
        let mut n = owner;
        while !n.is_empty() && self.exists.insert(n.to_string()) {
            match n.split_once('.') {
                Some((_, parent)) => n = parent,
                None => break,
            }
        }
    }

    fn add_ptr(&mut self, ip: IpAddr, target: &str) {
        let rev = reverse_name(ip);
        self.add(&rev, RData::PTR(PTR(name(target))));
    }

    /// The records of `qname` (lower case, no dot): the zone's own, else
    /// a pod's name or a pod's reverse name.
    fn records(&self, qname: &str) -> Option<Cow<'_, [RData]>> {
        if let Some(r) = self.records.get(qname) {
            return Some(Cow::Borrowed(r.as_slice()));
        }
        let pods_suffix = format!(".pod.{}", self.domain);
        if let Some(rest) = qname.strip_suffix(&pods_suffix) {
            let (label, ns) = rest.split_once('.')?;
            let ip = undashed(label).filter(|ip| !ns.contains('.') && self.pods.has(ns, *ip))?;
            return Some(Cow::Owned(vec![address(ip)]));
        }
        let ip = parse_reverse(qname)?;
        let ns = self.pods.namespace_of(ip)?;
        let owner = format!("{}.{ns}.pod.{}", dashed(ip), self.domain);
        Some(Cow::Owned(vec![RData::PTR(PTR(name(&owner)))]))
    }

    /// Whether `qname` (lower case, no dot) exists: it has records, or
    /// names below it have.
    fn exists(&self, qname: &str) -> bool {
        if self.exists.contains(qname) {
            return true;
        }
        if qname == self.domain || qname == format!("pod.{}", self.domain) {
            return self.pods.any_in(None);
        }
        let pods_suffix = format!(".pod.{}", self.domain);
        match qname.strip_suffix(&pods_suffix) {
            Some(ns) if !ns.contains('.') => self.pods.any_in(Some(ns)),
            _ => false,
        }
    }

    /// Whether `qname` (lower case, no dot) is this zone's to answer.
    fn is_ours(&self, qname: &str) -> bool {
        if qname == self.domain || qname.ends_with(&format!(".{}", self.domain)) {
            return true;
        }
        parse_reverse(qname).is_some_and(|ip| self.reverse.iter().any(|n| n.contains(&ip)))
    }

    fn soa(&self) -> Record {
        let apex = name(&self.domain);
        let soa = SOA::new(
            name(&format!("ns.dns.{}", self.domain)),
            name(&format!("hostmaster.{}", self.domain)),
            self.serial,
            7200,
            1800,
            86400,
            TTL,
        );
        Record::from_rdata(apex, TTL, RData::SOA(soa))
    }

    /// The number of owner names with records (for logs and metrics).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the zone has no records.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// What to do with a query.
#[derive(Debug)]
#[must_use]
pub enum Answer {
    /// Send this response.
    Reply(Message),
    /// Not the cluster's: ask the upstream resolvers.
    Forward,
}

/// A response to `query` with its question, id and flags, no records.
pub fn response_to(query: &Message, code: ResponseCode) -> Message {
    let mut m = Message::new();
    m.set_id(query.id())
        .set_message_type(MessageType::Response)
        .set_op_code(query.op_code())
        .set_recursion_desired(query.recursion_desired())
        .set_recursion_available(true)
        .set_checking_disabled(query.checking_disabled())
        .set_response_code(code);
    m.add_queries(query.queries().iter().cloned());
    if query.extensions().is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        m.set_edns(edns);
    }
    m
}

/// The answer to `query` from `zone`.
pub fn answer(zone: &Zone, query: &Message) -> Answer {
    if query.message_type() != MessageType::Query {
        return Answer::Reply(response_to(query, ResponseCode::FormErr));
    }
    if query.op_code() != OpCode::Query {
        return Answer::Reply(response_to(query, ResponseCode::NotImp));
    }
    let [q] = query.queries() else {
        return Answer::Reply(response_to(query, ResponseCode::FormErr));
    };
    let qname = lower_no_dot(q.name());
    if !zone.is_ours(&qname) {
        return Answer::Forward;
    }
    let mut m = response_to(query, ResponseCode::NoError);
    m.set_authoritative(true);
    if q.query_class() != DNSClass::IN && q.query_class() != DNSClass::ANY {
        m.set_response_code(ResponseCode::Refused);
        return Answer::Reply(m);
    }
    let Some(records) = zone.records(&qname) else {
        if !zone.exists(&qname) {
            m.set_response_code(ResponseCode::NXDomain);
        }
        m.add_name_server(zone.soa());
        return Answer::Reply(m);
    };
    let qtype = q.query_type();
    let wanted = |d: &RData| qtype == RecordType::ANY || d.record_type() == qtype;
    let mut found: Vec<&RData> = records.iter().filter(|d| wanted(d)).collect();
    if found.is_empty() {
        // A CNAME answers every type (the target is not the cluster's:
        // the client's resolver follows it).
        found = records
            .iter()
            .filter(|d| d.record_type() == RecordType::CNAME)
            .collect();
    }
    if found.is_empty() {
        m.add_name_server(zone.soa());
        return Answer::Reply(m);
    }
    let owner = q.name().clone();
    for d in found {
        m.add_answer(Record::from_rdata(owner.clone(), TTL, d.clone()));
        // The addresses of SRV targets, as CoreDNS adds them.
        if let RData::SRV(srv) = d {
            let target = lower_no_dot(srv.target());
            for a in zone.records(&target).iter().flat_map(|r| r.iter()) {
                if matches!(a, RData::A(_) | RData::AAAA(_)) {
                    m.add_additional(Record::from_rdata(srv.target().clone(), TTL, a.clone()));
                }
            }
        }
    }
    Answer::Reply(m)
}

/// The bytes of `m` for a UDP client that takes `limit` bytes: when the
/// whole answer does not fit, the header and question with TC set, so the
/// client asks again over TCP.
pub fn encode_for_udp(m: &Message, limit: usize) -> Option<Vec<u8>> {
    let bytes = m.to_vec().ok()?;
    if bytes.len() <= limit {
        return Some(bytes);
    }
    let mut t = m.truncate();
    t.set_truncated(true);
    t.to_vec().ok()
}

/// How many bytes a UDP answer to `query` may take.
pub fn udp_limit(query: &Message) -> usize {
    query
        .extensions()
        .as_ref()
        .map(|e| (e.max_payload() as usize).max(CLASSIC_UDP_SIZE))
        .unwrap_or(CLASSIC_UDP_SIZE)
}
