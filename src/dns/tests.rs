//! The resolver over zones built from objects, and the forwarding cache.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

use super::cache::AnswerCache;
use super::*;

fn service(v: serde_json::Value) -> Service {
    serde_json::from_value(v).unwrap()
}

fn objects() -> (Vec<Service>, Vec<EndpointSlice>, Vec<serde_json::Value>) {
    let services = vec![
        service(json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"port": 81}]}
        })),
        service(json!({
            "metadata": {"name": "db", "namespace": "shop"},
            "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}
        })),
        service(json!({
            "metadata": {"name": "out", "namespace": "shop"},
            "spec": {"type": "ExternalName", "externalName": "db.example.org"}
        })),
    ];
    let slices = vec![serde_json::from_value(json!({
        "metadata": {"name": "db-abc", "namespace": "shop",
                     "labels": {"kubernetes.io/service-name": "db"}},
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": ["10.244.0.7"], "hostname": "db-0", "conditions": {"ready": true}},
            {"addresses": ["10.244.0.8"], "conditions": {"ready": true}},
            {"addresses": ["10.244.0.9"], "hostname": "db-2", "conditions": {"ready": false}}
        ],
        "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]
    }))
    .unwrap()];
    let pods = vec![
        json!({
            "metadata": {"name": "client", "namespace": "shop"},
            "status": {"phase": "Running", "podIP": "10.244.0.5",
                       "podIPs": [{"ip": "10.244.0.5"}, {"ip": "fd00:10:244::5"}]}
        }),
        json!({
            "metadata": {"name": "db-0", "namespace": "shop"},
            "status": {"phase": "Running", "podIP": "10.244.0.7"}
        }),
        json!({
            "metadata": {"name": "done", "namespace": "shop"},
            "status": {"phase": "Succeeded", "podIP": "10.244.0.6"}
        }),
    ];
    (services, slices, pods)
}

fn zone() -> Zone {
    let (services, slices, pods) = objects();
    let reverse: Vec<IpNet> = vec![
        "10.96.0.0/12".parse().unwrap(),
        "10.244.0.0/24".parse().unwrap(),
        "fd00:10:244::/64".parse().unwrap(),
    ];
    Zone::build(&ZoneSource {
        domain: "cluster.local",
        reverse: &reverse,
        services: &services,
        slices: &slices,
        pods: Arc::new(PodAddresses::of_pods(&pods)),
        serial: 7,
    })
}

fn query(name: &str, t: RecordType) -> Message {
    let mut m = Message::new();
    m.set_id(4242)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    m
}

/// The response (round-tripped through the wire format) and its answer
/// data as text.
fn ask(z: &Zone, name: &str, t: RecordType) -> (Message, Vec<String>) {
    let q = query(name, t);
    let bytes = q.to_vec().unwrap();
    let q = Message::from_vec(&bytes).unwrap();
    match answer(z, &q) {
        Answer::Reply(m) => {
            let m = Message::from_vec(&m.to_vec().unwrap()).unwrap();
            assert_eq!(m.id(), 4242);
            assert_eq!(m.message_type(), MessageType::Response);
            assert_eq!(m.queries(), q.queries());
            let data = m.answers().iter().map(|r| r.data().to_string()).collect();
            (m, data)
        }
        Answer::Forward => panic!("{name} forwarded"),
    }
}

#[test]
fn a_service_name_is_its_cluster_ip() {
    let z = zone();
    let (m, data) = ask(&z, "web.shop.svc.cluster.local.", RecordType::A);
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert!(m.authoritative());
    assert_eq!(data, ["10.96.0.20"]);
    assert_eq!(m.answers()[0].ttl(), TTL);
    // Case does not matter; the question's spelling is kept.
    let (m, data) = ask(&z, "WEB.Shop.svc.cluster.local.", RecordType::A);
    assert_eq!(data, ["10.96.0.20"]);
    assert_eq!(
        m.answers()[0].name().to_ascii(),
        "WEB.Shop.svc.cluster.local."
    );
}

#[test]
fn no_aaaa_for_an_ipv4_service_is_nodata_with_the_soa() {
    let (m, data) = ask(&zone(), "web.shop.svc.cluster.local.", RecordType::AAAA);
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert!(data.is_empty());
    assert!(matches!(m.name_servers()[0].data(), RData::SOA(_)));
}

#[test]
fn a_headless_service_is_its_ready_endpoints_each_with_a_name() {
    let z = zone();
    let (_, mut data) = ask(&z, "db.shop.svc.cluster.local.", RecordType::A);
    data.sort();
    assert_eq!(
        data,
        ["10.244.0.7", "10.244.0.8"],
        "not-ready 10.244.0.9 left out"
    );
    let (_, data) = ask(&z, "db-0.db.shop.svc.cluster.local.", RecordType::A);
    assert_eq!(data, ["10.244.0.7"]);
    // No hostname: the dashed address names the endpoint.
    let (_, data) = ask(&z, "10-244-0-8.db.shop.svc.cluster.local.", RecordType::A);
    assert_eq!(data, ["10.244.0.8"]);
    let (m, _) = ask(&z, "db-2.db.shop.svc.cluster.local.", RecordType::A);
    assert_eq!(m.response_code(), ResponseCode::NXDomain);
}

#[test]
fn srv_records_for_named_ports_with_target_addresses() {
    let z = zone();
    let (m, data) = ask(
        &z,
        "_http._tcp.web.shop.svc.cluster.local.",
        RecordType::SRV,
    );
    assert_eq!(data, ["0 100 80 web.shop.svc.cluster.local."]);
    assert_eq!(m.additionals()[0].data().to_string(), "10.96.0.20");
    // An unnamed port has none.
    let (m, _) = ask(&z, "_81._tcp.web.shop.svc.cluster.local.", RecordType::SRV);
    assert_eq!(m.response_code(), ResponseCode::NXDomain);
    let (_, mut data) = ask(&z, "_pg._tcp.db.shop.svc.cluster.local.", RecordType::SRV);
    data.sort();
    assert_eq!(
        data,
        [
            "0 100 5432 10-244-0-8.db.shop.svc.cluster.local.",
            "0 100 5432 db-0.db.shop.svc.cluster.local."
        ]
    );
}

#[test]
fn ptr_for_cluster_ips_endpoints_and_pods() {
    let z = zone();
    let ptr = |ip: &str| {
        let name = format!("{}.", reverse_name(ip.parse().unwrap()));
        ask(&z, &name, RecordType::PTR)
    };
    assert_eq!(ptr("10.96.0.20").1, ["web.shop.svc.cluster.local."]);
    // A headless endpoint's name wins over the pod name.
    assert_eq!(ptr("10.244.0.7").1, ["db-0.db.shop.svc.cluster.local."]);
    assert_eq!(ptr("10.244.0.5").1, ["10-244-0-5.shop.pod.cluster.local."]);
    assert_eq!(
        ptr("fd00:10:244::5").1,
        ["fd00-10-244--5.shop.pod.cluster.local."]
    );
    // Ours but unknown (a finished pod's address): NXDOMAIN.
    assert_eq!(ptr("10.244.0.6").0.response_code(), ResponseCode::NXDomain);
    // Not ours: forwarded.
    let q = query("1.2.0.192.in-addr.arpa.", RecordType::PTR);
    assert!(matches!(answer(&z, &q), Answer::Forward));
}

#[test]
fn pod_names_answer_a_and_aaaa() {
    let z = zone();
    let (_, data) = ask(&z, "10-244-0-5.shop.pod.cluster.local.", RecordType::A);
    assert_eq!(data, ["10.244.0.5"]);
    let (_, data) = ask(
        &z,
        "fd00-10-244--5.shop.pod.cluster.local.",
        RecordType::AAAA,
    );
    assert_eq!(data, ["fd00:10:244::5"]);
}

#[test]
fn a_pod_change_is_answered_by_the_same_zone_without_a_rebuild() {
    let pods = Arc::new(PodAddresses::default());
    let z = Zone::build(&ZoneSource {
        domain: "cluster.local",
        reverse: &["10.244.0.0/24".parse().unwrap()],
        pods: pods.clone(),
        ..Default::default()
    });
    let name = "10-244-0-9.shop.pod.cluster.local.";
    let rev = "9.0.244.10.in-addr.arpa.";
    assert_eq!(
        ask(&z, name, RecordType::A).0.response_code(),
        ResponseCode::NXDomain
    );
    assert_eq!(
        ask(&z, "pod.cluster.local.", RecordType::A)
            .0
            .response_code(),
        ResponseCode::NXDomain
    );

    let ip: IpAddr = "10.244.0.9".parse().unwrap();
    pods.set("shop", "web-1", vec![ip]);
    assert_eq!(ask(&z, name, RecordType::A).1, ["10.244.0.9"]);
    assert_eq!(ask(&z, rev, RecordType::PTR).1, [name]);
    // The name is the namespace's: another namespace has no such pod.
    let other = "10-244-0-9.other.pod.cluster.local.";
    assert_eq!(
        ask(&z, other, RecordType::A).0.response_code(),
        ResponseCode::NXDomain
    );
    // Names above a pod's exist (NODATA), the namespace's too.
    for above in [
        "shop.pod.cluster.local.",
        "pod.cluster.local.",
        "cluster.local.",
    ] {
        let (m, data) = ask(&z, above, RecordType::A);
        assert_eq!(m.response_code(), ResponseCode::NoError, "{above}");
        assert!(data.is_empty());
    }
    // No AAAA for an IPv4 pod: NODATA.
    let (m, data) = ask(&z, name, RecordType::AAAA);
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert!(data.is_empty());

    // The address moves to a pod of another namespace (the first left):
    // the names follow, and the pod's old name is gone.
    pods.set("shop", "web-1", vec![]);
    pods.set("blog", "web-7", vec![ip]);
    assert_eq!(
        ask(&z, name, RecordType::A).0.response_code(),
        ResponseCode::NXDomain
    );
    assert_eq!(
        ask(&z, "shop.pod.cluster.local.", RecordType::A)
            .0
            .response_code(),
        ResponseCode::NXDomain
    );
    assert_eq!(
        ask(&z, rev, RecordType::PTR).1,
        ["10-244-0-9.blog.pod.cluster.local."]
    );
    pods.set("blog", "web-7", vec![]);
    assert!(pods.is_empty());
    assert_eq!(
        ask(&z, rev, RecordType::PTR).0.response_code(),
        ResponseCode::NXDomain
    );
}

#[test]
fn a_pods_dns_addresses_are_its_ips_until_it_finishes() {
    let running = json!({"status": {"phase": "Running", "podIP": "10.244.0.5",
        "podIPs": [{"ip": "10.244.0.5"}, {"ip": "fd00:10:244::5"}]}});
    let want: Vec<IpAddr> = vec![
        "10.244.0.5".parse().unwrap(),
        "fd00:10:244::5".parse().unwrap(),
    ];
    assert_eq!(PodAddresses::addresses_of(&running), want);
    let pending = json!({"status": {"phase": "Pending"}});
    assert!(PodAddresses::addresses_of(&pending).is_empty());
    let failed = json!({"status": {"phase": "Failed", "podIP": "10.244.0.5"}});
    assert!(PodAddresses::addresses_of(&failed).is_empty());
    let garbage = json!({"status": {"podIP": "not an address", "podIPs": [{"ip": 7}]}});
    assert!(PodAddresses::addresses_of(&garbage).is_empty());
}

#[test]
fn unknown_cluster_names_are_nxdomain_and_names_above_records_nodata() {
    let z = zone();
    for name in [
        "nope.shop.svc.cluster.local.",
        "web.other.svc.cluster.local.",
        "web.shop.svc.cluster.local.shop.svc.cluster.local.",
    ] {
        let (m, data) = ask(&z, name, RecordType::A);
        assert_eq!(m.response_code(), ResponseCode::NXDomain, "{name}");
        assert!(data.is_empty());
        let RData::SOA(soa) = m.name_servers()[0].data() else {
            panic!("no SOA for {name}");
        };
        assert_eq!(soa.minimum(), TTL);
    }
    for name in [
        "shop.svc.cluster.local.",
        "svc.cluster.local.",
        "cluster.local.",
    ] {
        let (m, data) = ask(&z, name, RecordType::A);
        assert_eq!(m.response_code(), ResponseCode::NoError, "{name}");
        assert!(data.is_empty());
    }
}

#[test]
fn external_name_is_a_cname_for_every_type() {
    let z = zone();
    for t in [RecordType::A, RecordType::AAAA, RecordType::CNAME] {
        let (_, data) = ask(&z, "out.shop.svc.cluster.local.", t);
        assert_eq!(data, ["db.example.org."], "{t}");
    }
}

#[test]
fn other_names_are_forwarded_and_bad_queries_refused() {
    let z = zone();
    assert!(matches!(
        answer(&z, &query("example.com.", RecordType::A)),
        Answer::Forward
    ));
    assert!(matches!(
        answer(&z, &query("cluster.local.example.com.", RecordType::A)),
        Answer::Forward
    ));
    let mut update = query("web.shop.svc.cluster.local.", RecordType::A);
    update.set_op_code(OpCode::Update);
    let Answer::Reply(m) = answer(&z, &update) else {
        panic!("an update forwarded")
    };
    assert_eq!(m.response_code(), ResponseCode::NotImp);
    let mut two = query("web.shop.svc.cluster.local.", RecordType::A);
    two.add_query(Query::query(Name::from_ascii("x.").unwrap(), RecordType::A));
    let Answer::Reply(m) = answer(&z, &two) else {
        panic!("two questions forwarded")
    };
    assert_eq!(m.response_code(), ResponseCode::FormErr);
    // Garbage never panics the parser the server uses.
    for len in 0..40 {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 37 % 251) as u8).collect();
        if let Ok(m) = Message::from_vec(&bytes) {
            let _ = answer(&z, &m);
        }
    }
}

#[test]
fn a_big_answer_is_truncated_for_udp_and_whole_for_edns() {
    let services: Vec<Service> = vec![service(json!({
        "metadata": {"name": "big", "namespace": "ns"},
        "spec": {"clusterIP": "None"}
    }))];
    let endpoints: Vec<serde_json::Value> = (1..=60)
        .map(|i| json!({"addresses": [format!("10.244.1.{i}")]}))
        .collect();
    let slices: Vec<EndpointSlice> = vec![serde_json::from_value(json!({
        "metadata": {"name": "big-1", "namespace": "ns",
                     "labels": {"kubernetes.io/service-name": "big"}},
        "addressType": "IPv4", "endpoints": endpoints
    }))
    .unwrap()];
    let z = Zone::build(&ZoneSource {
        domain: "cluster.local",
        services: &services,
        slices: &slices,
        ..Default::default()
    });
    let q = query("big.ns.svc.cluster.local.", RecordType::A);
    let Answer::Reply(m) = answer(&z, &q) else {
        panic!()
    };
    assert_eq!(m.answers().len(), 60);
    let small = encode_for_udp(&m, udp_limit(&q)).unwrap();
    assert!(small.len() <= CLASSIC_UDP_SIZE);
    let small = Message::from_vec(&small).unwrap();
    assert!(small.truncated());
    assert!(small.answers().is_empty());
    let mut q = q;
    let mut edns = Edns::new();
    edns.set_max_payload(4096);
    q.set_edns(edns);
    let Answer::Reply(m) = answer(&z, &q) else {
        panic!()
    };
    let whole = Message::from_vec(&encode_for_udp(&m, udp_limit(&q)).unwrap()).unwrap();
    assert!(!whole.truncated());
    assert_eq!(whole.answers().len(), 60);
}

fn upstream_answer(q: &Message, ttl: u32) -> Message {
    let mut m = response_to(q, ResponseCode::NoError);
    m.add_answer(Record::from_rdata(
        q.queries()[0].name().clone(),
        ttl,
        RData::A(A("192.0.2.1".parse().unwrap())),
    ));
    m
}

#[test]
fn the_cache_counts_ttls_down_and_forgets_at_expiry() {
    let mut c = AnswerCache::default();
    let t0 = Instant::now();
    let q = query("example.com.", RecordType::A);
    assert!(c.get(&q, t0).is_none());
    c.put(&upstream_answer(&q, 30), t0);
    let mut q2 = query("EXAMPLE.com.", RecordType::A);
    q2.set_id(9);
    let hit = c.get(&q2, t0 + Duration::from_secs(10)).unwrap();
    assert_eq!(hit.id(), 9);
    assert_eq!(hit.answers()[0].ttl(), 20);
    assert!(c.get(&q2, t0 + Duration::from_secs(30)).is_none());
    assert!(c.is_empty());
    // Another type is another entry.
    c.put(&upstream_answer(&q, 30), t0);
    assert!(c
        .get(&query("example.com.", RecordType::AAAA), t0)
        .is_none());
}

#[test]
fn the_cache_keeps_negative_answers_for_the_soa_minimum_and_not_errors() {
    let mut c = AnswerCache::default();
    let t0 = Instant::now();
    let q = query("nope.example.", RecordType::A);
    let mut nx = response_to(&q, ResponseCode::NXDomain);
    let soa = SOA::new(Name::root(), Name::root(), 1, 1, 1, 1, 15);
    nx.add_name_server(Record::from_rdata(Name::root(), 300, RData::SOA(soa)));
    c.put(&nx, t0);
    let hit = c.get(&q, t0 + Duration::from_secs(14)).unwrap();
    assert_eq!(hit.response_code(), ResponseCode::NXDomain);
    assert!(c.get(&q, t0 + Duration::from_secs(15)).is_none());
    // No SOA, SERVFAIL, truncated, TTL 0: not kept.
    c.put(&response_to(&q, ResponseCode::NXDomain), t0);
    c.put(&response_to(&q, ResponseCode::ServFail), t0);
    let mut tc = upstream_answer(&q, 30);
    tc.set_truncated(true);
    c.put(&tc, t0);
    c.put(&upstream_answer(&q, 0), t0);
    assert!(c.is_empty());
}

#[test]
fn reverse_names_round_trip() {
    for ip in ["10.96.0.10", "fd00:10:244::5", "::1", "255.255.255.255"] {
        let ip: IpAddr = ip.parse().unwrap();
        assert_eq!(parse_reverse(&reverse_name(ip)), Some(ip));
        // The same as hickory's own.
        let theirs = Name::from(ip).to_ascii();
        assert_eq!(format!("{}.", reverse_name(ip)), theirs);
    }
    assert_eq!(parse_reverse("1.2.3.in-addr.arpa"), None);
    assert_eq!(parse_reverse("1.2.3.256.in-addr.arpa"), None);
    assert_eq!(parse_reverse("x.ip6.arpa"), None);
}
