//! Compiles NetworkPolicies, pods and namespaces into the fast path's
//! [`PolicySnapshot`]: which pods each policy isolates, per direction, and
//! each rule's peers as pod addresses and CIDR blocks.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::kinds::workload::to_query;
use crate::packet::policy::{proto, Isolation, Peers, PodPolicy, PolicySnapshot, PortMatch, Rule};

fn labels_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> BTreeMap<String, String> {
    meta.labels.clone().unwrap_or_default()
}

/// Whether `sel` selects `labels`; a selector that does not parse selects
/// nothing (the API refuses such selectors anyway).
fn selects(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    to_query(sel).is_ok_and(|q| q.matches(labels))
}

fn protocol(name: Option<&str>) -> u8 {
    match name.unwrap_or("TCP") {
        "UDP" => proto::UDP,
        "SCTP" => proto::SCTP,
        _ => proto::TCP,
    }
}

/// A pod's addresses; none once it has finished (Succeeded or Failed),
/// as its addresses went back to IPAM and may be another pod's now.
fn pod_addrs(pod: &Pod) -> Vec<IpAddr> {
    let Some(status) = &pod.status else {
        return Vec::new();
    };
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return Vec::new();
    }
    let mut addrs: Vec<IpAddr> = status
        .pod_ips
        .iter()
        .flatten()
        .filter_map(|p| p.ip.parse().ok())
        .collect();
    if let Some(ip) = status.pod_ip.as_deref().and_then(|ip| ip.parse().ok()) {
        if !addrs.contains(&ip) {
            addrs.push(ip);
        }
    }
    addrs
}

fn ports(ports: Option<&Vec<NetworkPolicyPort>>) -> Vec<PortMatch> {
    ports
        .into_iter()
        .flatten()
        .map(|p| {
            let proto = protocol(p.protocol.as_deref());
            match &p.port {
                None => PortMatch::Any(proto),
                Some(IntOrString::Int(n)) => {
                    let lo = u16::try_from(*n).unwrap_or(0);
                    let hi = p.end_port.and_then(|e| u16::try_from(e).ok()).unwrap_or(lo);
                    PortMatch::Range(proto, lo, hi)
                }
                Some(IntOrString::String(name)) => PortMatch::Named(proto, name.as_str().into()),
            }
        })
        .collect()
}

/// Compiles the snapshot. `node_addrs` are the node's own addresses
/// (the pod gateway), whose traffic to pods is never isolated.
pub fn compile(
    policies: &[NetworkPolicy],
    pods: &[Pod],
    namespaces: &[Namespace],
    node_addrs: Vec<IpAddr>,
) -> PolicySnapshot {
    let ns_labels: BTreeMap<&str, BTreeMap<String, String>> = namespaces
        .iter()
        .filter_map(|n| Some((n.metadata.name.as_deref()?, labels_of(&n.metadata))))
        .collect();
    struct P<'a> {
        ns: &'a str,
        labels: BTreeMap<String, String>,
        addrs: Vec<IpAddr>,
        policy: PodPolicy,
    }
    let mut all: Vec<P> = pods
        .iter()
        .filter_map(|pod| {
            let ns = pod.metadata.namespace.as_deref()?;
            let name = pod.metadata.name.as_deref()?;
            let named_ports = pod
                .spec
                .iter()
                .flat_map(|s| &s.containers)
                .flat_map(|c| c.ports.iter().flatten())
                .filter_map(|p| {
                    let port = u16::try_from(p.container_port).ok()?;
                    Some((
                        p.name.as_deref()?.into(),
                        protocol(p.protocol.as_deref()),
                        port,
                    ))
                })
                .collect();
            Some(P {
                ns,
                labels: labels_of(&pod.metadata),
                addrs: pod_addrs(pod),
                policy: PodPolicy {
                    pod: format!("{ns}/{name}").into(),
                    named_ports,
                    ingress: None,
                    egress: None,
                },
            })
        })
        .collect();
    let empty = BTreeMap::new();
    let peer_pods = |policy_ns: &str, peer: &NetworkPolicyPeer, all: &[P]| -> Vec<IpAddr> {
        if peer.pod_selector.is_none() && peer.namespace_selector.is_none() {
            return Vec::new();
        }
        all.iter()
            .filter(|p| match &peer.namespace_selector {
                None => p.ns == policy_ns,
                Some(sel) => selects(sel, ns_labels.get(p.ns).unwrap_or(&empty)),
            })
            .filter(|p| {
                peer.pod_selector
                    .as_ref()
                    .is_none_or(|s| selects(s, &p.labels))
            })
            .flat_map(|p| p.addrs.iter().copied())
            .collect()
    };
    let compile_peers = |policy_ns: &str, peers: Option<&Vec<NetworkPolicyPeer>>, all: &[P]| {
        let Some(peers) = peers.filter(|p| !p.is_empty()) else {
            return Peers::All;
        };
        let mut pods = Vec::new();
        let mut blocks = Vec::new();
        for peer in peers {
            pods.extend(peer_pods(policy_ns, peer, all));
            if let Some(b) = &peer.ip_block {
                if let Ok(cidr) = b.cidr.parse::<IpNet>() {
                    let except = b
                        .except
                        .iter()
                        .flatten()
                        .filter_map(|e| e.parse().ok())
                        .collect();
                    blocks.push((cidr, except));
                }
            }
        }
        pods.sort();
        pods.dedup();
        Peers::Some { pods, blocks }
    };
    let mut sorted: Vec<&NetworkPolicy> = policies.iter().collect();
    sorted.sort_by_key(|p| (p.metadata.namespace.clone(), p.metadata.name.clone()));
    for np in sorted {
        let (Some(ns), Some(name), Some(spec)) = (
            np.metadata.namespace.as_deref(),
            np.metadata.name.as_deref(),
            np.spec.as_ref(),
        ) else {
            continue;
        };
        let id: Arc<str> = format!("{ns}/{name}").into();
        let types = spec.policy_types.clone().unwrap_or_else(|| {
            let mut t = vec!["Ingress".to_string()];
            if spec.egress.as_ref().is_some_and(|e| !e.is_empty()) {
                t.push("Egress".into());
            }
            t
        });
        let ingress_rules: Vec<Rule> = if types.iter().any(|t| t == "Ingress") {
            spec.ingress
                .iter()
                .flatten()
                .enumerate()
                .map(|(index, r)| Rule {
                    policy: id.clone(),
                    index,
                    peers: compile_peers(ns, r.from.as_ref(), &all),
                    ports: ports(r.ports.as_ref()),
                })
                .collect()
        } else {
            Vec::new()
        };
        let egress_rules: Vec<Rule> = if types.iter().any(|t| t == "Egress") {
            spec.egress
                .iter()
                .flatten()
                .enumerate()
                .map(|(index, r)| Rule {
                    policy: id.clone(),
                    index,
                    peers: compile_peers(ns, r.to.as_ref(), &all),
                    ports: ports(r.ports.as_ref()),
                })
                .collect()
        } else {
            Vec::new()
        };
        let selector = spec.pod_selector.clone().unwrap_or_default();
        for p in all
            .iter_mut()
            .filter(|p| p.ns == ns && selects(&selector, &p.labels))
        {
            for (on, yes, rules) in [
                (
                    &mut p.policy.ingress,
                    types.iter().any(|t| t == "Ingress"),
                    &ingress_rules,
                ),
                (
                    &mut p.policy.egress,
                    types.iter().any(|t| t == "Egress"),
                    &egress_rules,
                ),
            ] {
                if !yes {
                    continue;
                }
                let iso = on.get_or_insert_with(Isolation::default);
                let mut names: Vec<Arc<str>> = iso.policies.to_vec();
                names.push(id.clone());
                iso.policies = names.into();
                iso.rules.extend(rules.iter().cloned());
            }
        }
    }
    let count = policies.len();
    let entries = all.into_iter().flat_map(|p| {
        let policy = Arc::new(p.policy);
        p.addrs.into_iter().map(move |a| (a, policy.clone()))
    });
    PolicySnapshot::new(entries, node_addrs, count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::policy::DirVerdict;
    use serde_json::{json, Value};

    fn ns(name: &str, labels: Value) -> Namespace {
        let mut labels = labels;
        labels["kubernetes.io/metadata.name"] = name.into();
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap()
    }

    fn pod(ns: &str, name: &str, ip: &str, labels: Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"containers": [{"name": "c", "ports": [
                {"name": "http", "containerPort": 8080},
                {"name": "dns", "containerPort": 53, "protocol": "UDP"}]}]},
            "status": {"podIP": ip, "podIPs": [{"ip": ip}]}
        }))
        .unwrap()
    }

    fn policy(ns: &str, name: &str, spec: Value) -> NetworkPolicy {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns}, "spec": spec}))
            .unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn world() -> (Vec<Pod>, Vec<Namespace>) {
        (
            vec![
                pod("a", "web", "10.0.0.1", json!({"app": "web"})),
                pod("a", "db", "10.0.0.2", json!({"app": "db"})),
                pod("b", "web", "10.0.0.3", json!({"app": "web"})),
                pod("b", "client", "10.0.0.4", json!({"app": "client"})),
            ],
            vec![ns("a", json!({"team": "x"})), ns("b", json!({"team": "y"}))],
        )
    }

    #[test]
    fn no_policy_allows_everything() {
        let (pods, nss) = world();
        let s = compile(&[], &pods, &nss, vec![]);
        assert!(s.is_open());
        assert!(s
            .decide(ip("10.0.0.4"), ip("10.0.0.2"), proto::TCP, 5432)
            .allows());
    }

    #[test]
    fn default_deny_ingress_and_allow_by_label_add_up() {
        let (pods, nss) = world();
        let deny = policy(
            "a",
            "default-deny-ingress",
            json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
        );
        let allow = policy(
            "a",
            "db-from-web",
            json!({
            "podSelector": {"matchLabels": {"app": "db"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}],
                         "ports": [{"port": 5432}]}]}),
        );
        let s = compile(&[deny.clone(), allow], &pods, &nss, vec![ip("10.0.0.254")]);
        // Same-namespace web -> db:5432 allowed by db-from-web rule 0.
        let d = s.decide(ip("10.0.0.1"), ip("10.0.0.2"), proto::TCP, 5432);
        assert_eq!(
            d.ingress,
            DirVerdict::Allowed {
                policy: "a/db-from-web".into(),
                index: 0
            }
        );
        assert_eq!(d.egress, DirVerdict::NotIsolated);
        // Other port, other namespace's web, UDP: denied.
        assert!(!s
            .decide(ip("10.0.0.1"), ip("10.0.0.2"), proto::TCP, 5433)
            .allows());
        assert!(!s
            .decide(ip("10.0.0.3"), ip("10.0.0.2"), proto::TCP, 5432)
            .allows());
        assert!(!s
            .decide(ip("10.0.0.1"), ip("10.0.0.2"), proto::UDP, 5432)
            .allows());
        // The node (probes) still reaches isolated pods; b is untouched.
        assert_eq!(
            s.decide(ip("10.0.0.254"), ip("10.0.0.1"), proto::TCP, 80)
                .ingress,
            DirVerdict::Node
        );
        assert!(s
            .decide(ip("10.0.0.1"), ip("10.0.0.3"), proto::TCP, 80)
            .allows());
        match s
            .decide(ip("10.0.0.4"), ip("10.0.0.1"), proto::TCP, 80)
            .ingress
        {
            DirVerdict::Denied { policies } => assert_eq!(&*policies[0], "a/default-deny-ingress"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn namespace_and_pod_selector_in_one_peer_is_and() {
        let (pods, nss) = world();
        let and = policy(
            "a",
            "and",
            json!({"podSelector": {"matchLabels": {"app": "db"}},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "y"}},
                                   "podSelector": {"matchLabels": {"app": "client"}}}]}]}),
        );
        let s = compile(&[and], &pods, &nss, vec![]);
        assert!(s
            .decide(ip("10.0.0.4"), ip("10.0.0.2"), proto::TCP, 1)
            .allows());
        assert!(!s
            .decide(ip("10.0.0.3"), ip("10.0.0.2"), proto::TCP, 1)
            .allows());
        assert!(!s
            .decide(ip("10.0.0.1"), ip("10.0.0.2"), proto::TCP, 1)
            .allows());
    }

    #[test]
    fn egress_ip_block_with_except_ranges_and_named_ports() {
        let (pods, nss) = world();
        let eg = policy(
            "b",
            "egress",
            json!({"podSelector": {"matchLabels": {"app": "client"}},
            "policyTypes": ["Egress"],
            "egress": [
                {"to": [{"ipBlock": {"cidr": "10.0.0.0/24", "except": ["10.0.0.2/32"]}}],
                 "ports": [{"port": 32000, "endPort": 32768}]},
                {"ports": [{"port": "dns", "protocol": "UDP"}, {"port": "http"}]}]}),
        );
        let s = compile(&[eg], &pods, &nss, vec![]);
        let c = ip("10.0.0.4");
        assert!(s.decide(c, ip("10.0.0.1"), proto::TCP, 32768).allows());
        assert!(!s.decide(c, ip("10.0.0.1"), proto::TCP, 32769).allows());
        assert!(!s.decide(c, ip("10.0.0.2"), proto::TCP, 32000).allows());
        assert!(!s.decide(c, ip("192.168.1.1"), proto::TCP, 32000).allows());
        // Named ports resolve on the destination pod.
        let d = s.decide(c, ip("10.0.0.2"), proto::UDP, 53);
        assert_eq!(
            d.egress,
            DirVerdict::Allowed {
                policy: "b/egress".into(),
                index: 1
            }
        );
        assert!(s.decide(c, ip("10.0.0.2"), proto::TCP, 8080).allows());
        assert!(!s.decide(c, ip("10.0.0.2"), proto::TCP, 53).allows());
        assert!(!s.decide(c, ip("192.168.1.1"), proto::TCP, 8080).allows());
        // Ingress of the client is not isolated by an Egress-only policy.
        assert!(s.decide(ip("10.0.0.1"), c, proto::TCP, 1).allows());
    }
    mod prop {
        use super::*;
        use proptest::prelude::*;

        const NSS: [&str; 3] = ["a", "b", "c"];
        const APPS: [&str; 3] = ["x", "y", "z"];

        /// A label selector: empty, or `app=<one of APPS>`.
        fn sel(app: Option<usize>) -> Value {
            match app {
                None => json!({}),
                Some(i) => json!({"matchLabels": {"app": APPS[i]}}),
            }
        }

        fn peer() -> impl Strategy<Value = Value> {
            prop_oneof![
                proptest::option::of(0..3usize).prop_map(|a| json!({"podSelector": sel(a)})),
                (0..3usize).prop_map(|n| json!({"namespaceSelector":
                    {"matchLabels": {"kubernetes.io/metadata.name": NSS[n]}}})),
                (proptest::option::of(0..3usize), 0..3usize).prop_map(|(a, n)| json!({
                    "podSelector": sel(a),
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NSS[n]}}})),
                (0..9u8, any::<bool>()).prop_map(|(i, ex)| {
                    let except: Vec<String> = if ex { vec![format!("10.0.0.{}/32", i + 1)] } else { vec![] };
                    json!({"ipBlock": {"cidr": "10.0.0.0/28", "except": except}})
                }),
            ]
        }

        fn rule(key: &'static str) -> impl Strategy<Value = Value> {
            (
                proptest::option::of(proptest::collection::vec(peer(), 0..3)),
                proptest::option::of((1u16..6, 0u16..3, any::<bool>())),
            )
                .prop_map(move |(peers, port)| {
                    let mut r = json!({});
                    if let Some(p) = peers {
                        r[key] = p.into();
                    }
                    if let Some((lo, span, udp)) = port {
                        r["ports"] = json!([{"port": lo, "endPort": lo + span,
                            "protocol": if udp { "UDP" } else { "TCP" }}]);
                    }
                    r
                })
        }

        fn policy_spec() -> impl Strategy<Value = (usize, Value)> {
            (
                0..3usize,
                proptest::option::of(0..3usize),
                proptest::collection::vec(rule("from"), 0..3),
                proptest::collection::vec(rule("to"), 0..3),
                0..3usize,
            )
                .prop_map(|(ns, app, ingress, egress, types)| {
                    let types =
                        [vec!["Ingress"], vec!["Egress"], vec!["Ingress", "Egress"]][types].clone();
                    (
                        ns,
                        json!({"podSelector": sel(app), "ingress": ingress,
                                "egress": egress, "policyTypes": types}),
                    )
                })
        }

        /// The reference: the spec's rules read straight off the JSON.
        fn reference(
            pols: &[(usize, Value)],
            pods: &[(usize, usize, IpAddr)],
            src: usize,
            dst: usize,
            udp: bool,
            port: u16,
        ) -> bool {
            // A pod cannot block access to itself.
            if src == dst {
                return true;
            }
            let sel_ok = |s: &Value, app: usize| match s.get("matchLabels") {
                None => true,
                Some(m) => m["app"] == APPS[app],
            };
            let peer_ok = |pns: usize, peer: &Value, other: usize| -> bool {
                let (ons, oapp, oip) = pods[other];
                if let Some(b) = peer.get("ipBlock") {
                    let IpAddr::V4(v4) = oip else { return false };
                    let last = v4.octets()[3];
                    let excepted = b["except"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|e| e.as_str().unwrap() == format!("10.0.0.{last}/32"));
                    return last < 16 && !excepted;
                }
                let ns_ok = match peer.get("namespaceSelector") {
                    None => ons == pns,
                    Some(n) => n["matchLabels"]["kubernetes.io/metadata.name"] == NSS[ons],
                };
                ns_ok && peer.get("podSelector").is_none_or(|s| sel_ok(s, oapp))
            };
            let dir_ok = |pod: usize, other: usize, ty: &str, list: &str, peers: &str| -> bool {
                let (pns, papp, _) = pods[pod];
                let mut isolated = false;
                for (ns, spec) in pols {
                    if *ns != pns
                        || !sel_ok(&spec["podSelector"], papp)
                        || !spec["policyTypes"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|t| t == ty)
                    {
                        continue;
                    }
                    isolated = true;
                    for r in spec[list].as_array().unwrap() {
                        let peers_ok = match r.get(peers).and_then(Value::as_array) {
                            None => true,
                            Some(p) if p.is_empty() => true,
                            Some(p) => p.iter().any(|peer| peer_ok(*ns, peer, other)),
                        };
                        let ports_ok = match r.get("ports") {
                            None => true,
                            Some(ps) => ps.as_array().unwrap().iter().any(|p| {
                                (p["protocol"] == "UDP") == udp
                                    && p["port"].as_u64().unwrap() <= u64::from(port)
                                    && u64::from(port) <= p["endPort"].as_u64().unwrap()
                            }),
                        };
                        if peers_ok && ports_ok {
                            return true;
                        }
                    }
                }
                !isolated
            };
            dir_ok(src, dst, "Egress", "egress", "to")
                && dir_ok(dst, src, "Ingress", "ingress", "from")
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(3000))]
            #[test]
            fn compiled_decisions_match_the_spec(
                pols in proptest::collection::vec(policy_spec(), 0..4),
                pod_specs in proptest::collection::vec((0..3usize, 0..3usize), 2..8),
                flows in proptest::collection::vec((0..8usize, 0..8usize, any::<bool>(), 1u16..9), 1..20),
            ) {
                // Pods 10.0.0.1..; every other one outside the /28 block.
                let pods: Vec<(usize, usize, IpAddr)> = pod_specs.iter().enumerate()
                    .map(|(i, (ns, app))| {
                        let last = if i % 2 == 0 { i as u8 + 1 } else { i as u8 + 20 };
                        (*ns, *app, IpAddr::from([10, 0, 0, last]))
                    })
                    .collect();
                let kpods: Vec<Pod> = pods.iter().enumerate()
                    .map(|(i, (ns, app, ip))| pod(NSS[*ns], &format!("p{i}"), &ip.to_string(), json!({"app": APPS[*app]})))
                    .collect();
                let knss: Vec<Namespace> = NSS.iter().map(|n| ns(n, json!({}))).collect();
                let kpols: Vec<NetworkPolicy> = pols.iter().enumerate()
                    .map(|(i, (ns, spec))| policy(NSS[*ns], &format!("np{i}"), spec.clone()))
                    .collect();
                let snap = compile(&kpols, &kpods, &knss, vec![]);
                for (s, d, udp, port) in flows {
                    let (s, d) = (s % pods.len(), d % pods.len());
                    let proto = if udp { proto::UDP } else { proto::TCP };
                    let got = snap.decide(pods[s].2, pods[d].2, proto, port).allows();
                    prop_assert_eq!(got, reference(&pols, &pods, s, d, udp, port),
                        "flow {} -> {} {}/{}", s, d, port, if udp { "udp" } else { "tcp" });
                }
            }
        }
    }
}
