//! The route table against the examples of the Ingress documentation
//! (path types, host wildcards, fan-out, name-based virtual hosting,
//! default backend) and the backend resolution rules.

use std::net::SocketAddr;

use serde_json::{json, Value};

use super::*;

fn ingress(name: &str, created: &str, spec: Value) -> Ingress {
    serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": name, "namespace": "default", "creationTimestamp": created},
        "spec": spec
    }))
    .unwrap()
}

fn service(name: &str, ip: &str, ports: Value) -> Service {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"clusterIP": ip, "ports": ports}
    }))
    .unwrap()
}

/// A slice of `svc` with one port (`port_name`, `target`) and endpoints
/// `(address, ready)`.
fn slice(svc: &str, port_name: &str, target: i32, eps: &[(&str, bool)]) -> EndpointSlice {
    let endpoints: Vec<Value> = eps
        .iter()
        .map(|(a, r)| json!({"addresses": [a], "conditions": {"ready": r, "serving": r, "terminating": false}}))
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{svc}-x"), "namespace": "default",
            "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "ports": [{"name": port_name, "port": target, "protocol": "TCP"}],
        "endpoints": endpoints
    }))
    .unwrap()
}

fn be(svc: &str, port: Value) -> Value {
    json!({"service": {"name": svc, "port": port}})
}

fn path(p: &str, t: &str, svc: &str) -> Value {
    json!({"path": p, "pathType": t, "backend": be(svc, json!({"number": 80}))})
}

/// Services s1..s9 on port 80 at 10.96.0.N, each with one ready endpoint.
fn world() -> (Vec<Service>, Vec<EndpointSlice>) {
    let mut services = Vec::new();
    let mut slices = Vec::new();
    for n in 1..10 {
        let name = format!("s{n}");
        services.push(service(
            &name,
            &format!("10.96.0.{n}"),
            json!([{"port": 80, "targetPort": 8080}]),
        ));
        slices.push(slice(&name, "", 8080, &[(&format!("10.244.0.{n}"), true)]));
    }
    (services, slices)
}

fn table(ingresses: &[Ingress]) -> RouteTable {
    let (services, slices) = world();
    RouteTable::build(ingresses, &services, &slices)
}

/// The service a request is routed to (`s3`), or "404".
fn to(t: &RouteTable, host: &str, p: &str) -> String {
    match t.route(host, p) {
        None => "404".into(),
        Some(b) => b
            .name
            .trim_start_matches("default/")
            .split(':')
            .next()
            .unwrap()
            .to_string(),
    }
}

const T0: &str = "2024-01-01T00:00:00Z";
const T1: &str = "2024-01-02T00:00:00Z";

#[test]
fn path_types_follow_the_documentations_table() {
    // Kubernetes docs, "Examples" under Path types: (rule, type, request, matches).
    let cases = [
        ("/", "Prefix", "/anything/at/all", true),
        ("/foo", "Exact", "/foo", true),
        ("/foo", "Exact", "/bar", false),
        ("/foo", "Exact", "/foo/", false),
        ("/foo/", "Exact", "/foo", false),
        ("/foo", "Prefix", "/foo", true),
        ("/foo", "Prefix", "/foo/", true),
        ("/foo/", "Prefix", "/foo", true),
        ("/foo/", "Prefix", "/foo/", true),
        ("/aaa/bb", "Prefix", "/aaa/bbb", false),
        ("/aaa/bbb", "Prefix", "/aaa/bbb", true),
        ("/aaa/bbb/", "Prefix", "/aaa/bbb", true),
        ("/aaa/bbb", "Prefix", "/aaa/bbb/", true),
        ("/aaa/bbb", "Prefix", "/aaa/bbb/ccc", true),
        ("/aaa/bbb", "Prefix", "/aaa/bbbxyz", false),
        ("/foo", "ImplementationSpecific", "/foo/bar", true),
        ("/foo", "ImplementationSpecific", "/foobar", false),
    ];
    for (rule, kind, request, matches) in cases {
        let t = table(&[ingress(
            "i",
            T0,
            json!({"rules": [{"http": {"paths": [path(rule, kind, "s1")]}}]}),
        )]);
        let got = to(&t, "any.example", request);
        assert_eq!(
            got == "s1",
            matches,
            "{kind} {rule} vs {request}: routed to {got}"
        );
    }
}

#[test]
fn longest_path_wins_and_exact_wins_a_tie() {
    let t = table(&[ingress(
        "i",
        T0,
        json!({"rules": [{"http": {"paths": [
            path("/", "Prefix", "s1"),
            path("/aaa", "Prefix", "s2"),
            path("/aaa", "Exact", "s3"),
            path("/aaa/bbb/", "Prefix", "s4"),
            path("/foo", "Exact", "s5"),
        ]}}]}),
    )]);
    assert_eq!(to(&t, "h", "/ccc"), "s1");
    assert_eq!(to(&t, "h", "/aaa/ccc"), "s2");
    assert_eq!(to(&t, "h", "/aaa"), "s3", "Exact over Prefix on a tie");
    assert_eq!(to(&t, "h", "/aaa/"), "s2");
    assert_eq!(to(&t, "h", "/aaa/bbb/x"), "s4");
    assert_eq!(to(&t, "h", "/aaa/bbb"), "s4");
    assert_eq!(to(&t, "h", "/foo"), "s5");
    assert_eq!(to(&t, "h", "/foo/x"), "s1");
}

#[test]
fn hosts_exact_then_one_label_wildcard_then_any() {
    let t = table(&[ingress(
        "i",
        T0,
        json!({"rules": [
            {"host": "foo.bar.com", "http": {"paths": [path("/", "Prefix", "s1")]}},
            {"host": "*.bar.com", "http": {"paths": [path("/", "Prefix", "s2")]}},
            {"host": "bar.foo.com", "http": {"paths": [path("/", "Prefix", "s3")]}},
            {"http": {"paths": [path("/", "Prefix", "s4")]}},
        ]}),
    )]);
    assert_eq!(to(&t, "foo.bar.com", "/"), "s1");
    assert_eq!(
        to(&t, "FOO.Bar.com:8080", "/x"),
        "s1",
        "case and port ignored"
    );
    assert_eq!(to(&t, "foo.bar.com.", "/x"), "s1", "trailing dot ignored");
    assert_eq!(to(&t, "baz.bar.com", "/"), "s2");
    assert_eq!(
        to(&t, "a.baz.bar.com", "/"),
        "s4",
        "a wildcard covers one label"
    );
    assert_eq!(to(&t, "bar.com", "/"), "s4", "the wildcard needs a label");
    assert_eq!(to(&t, "bar.foo.com", "/"), "s3");
    assert_eq!(to(&t, "10.0.0.1:80", "/"), "s4");
    assert_eq!(to(&t, "", "/"), "s4");
}

#[test]
fn unknown_host_is_a_404_and_a_host_without_the_path_takes_the_default_backend() {
    let fanout = ingress(
        "fanout",
        T1,
        json!({"rules": [{"host": "foo.bar.com", "http": {"paths": [
            path("/foo", "Prefix", "s1"),
            path("/bar", "Prefix", "s2"),
        ]}}]}),
    );
    let t = table(std::slice::from_ref(&fanout));
    assert_eq!(to(&t, "foo.bar.com", "/foo/x"), "s1");
    assert_eq!(to(&t, "foo.bar.com", "/bar"), "s2");
    assert_eq!(to(&t, "foo.bar.com", "/baz"), "404");
    assert_eq!(to(&t, "other.com", "/foo"), "404");
    // A default backend (of the oldest Ingress that has one) takes both.
    let newer_default = ingress(
        "d2",
        T1,
        json!({"defaultBackend": be("s9", json!({"number": 80}))}),
    );
    let older_default = ingress(
        "d1",
        T0,
        json!({"defaultBackend": be("s8", json!({"number": 80}))}),
    );
    let t = table(&[fanout, newer_default, older_default]);
    assert_eq!(to(&t, "foo.bar.com", "/baz"), "s8");
    assert_eq!(to(&t, "other.com", "/"), "s8");
    assert_eq!(to(&t, "foo.bar.com", "/foo"), "s1");
}

#[test]
fn rules_of_all_ingresses_merge_and_the_oldest_wins_a_conflict() {
    let a = ingress(
        "a",
        T1,
        json!({"rules": [{"host": "my-app.com", "http": {"paths": [path("/", "Prefix", "s1")]}}]}),
    );
    let b = ingress(
        "b",
        T0,
        json!({"rules": [{"host": "my-app.com", "http": {"paths": [
            path("/", "Prefix", "s2"), path("/api", "Prefix", "s3")]}}]}),
    );
    let t = table(&[a, b]);
    assert_eq!(to(&t, "my-app.com", "/"), "s2", "older Ingress b wins /");
    assert_eq!(to(&t, "my-app.com", "/api/v1"), "s3");
}

#[test]
fn backends_resolve_by_port_number_or_name_to_the_cluster_ip_or_endpoints() {
    let services = vec![
        service(
            "web",
            "10.96.0.10",
            json!([{"name": "http", "port": 80, "targetPort": 8080},
                   {"name": "admin", "port": 9000, "targetPort": 9090}]),
        ),
        service("headless", "None", json!([{"name": "http", "port": 80}])),
        service("empty", "10.96.0.11", json!([{"port": 80}])),
    ];
    let slices = vec![
        {
            let mut s = slice("web", "http", 8080, &[("10.244.0.5", true)]);
            let mut admin = slice("web", "admin", 9090, &[("10.244.0.5", true)]);
            admin.metadata.name = Some("web-admin".into());
            s.ports
                .as_mut()
                .unwrap()
                .extend(admin.ports.take().unwrap());
            s
        },
        slice(
            "headless",
            "http",
            8080,
            &[
                ("10.244.0.7", true),
                ("10.244.0.6", true),
                ("10.244.0.8", false),
            ],
        ),
        slice("empty", "", 8080, &[("10.244.0.9", false)]),
    ];
    let rule = |p: &str, svc: &str, port: Value| json!({"path": p, "pathType": "Prefix", "backend": be(svc, port)});
    let ing = ingress(
        "i",
        T0,
        json!({"rules": [{"http": {"paths": [
            rule("/by-number", "web", json!({"number": 9000})),
            rule("/by-name", "web", json!({"name": "http"})),
            rule("/no-port", "web", json!({"number": 81})),
            rule("/no-name", "web", json!({"name": "grpc"})),
            rule("/missing", "nope", json!({"number": 80})),
            rule("/headless", "headless", json!({"name": "http"})),
            rule("/not-ready", "empty", json!({"number": 80})),
        ]}}]}),
    );
    let t = RouteTable::build(&[ing], &services, &slices);
    let target = |p: &str| t.route("h", p).unwrap().target.clone();
    let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
    assert_eq!(
        target("/by-number"),
        Target::ClusterIp(sa("10.96.0.10:9000"))
    );
    assert_eq!(target("/by-name"), Target::ClusterIp(sa("10.96.0.10:80")));
    assert_eq!(t.route("h", "/by-name").unwrap().name, "default/web:http");
    assert_eq!(
        target("/headless"),
        Target::Endpoints(vec![sa("10.244.0.6:8080"), sa("10.244.0.7:8080")]),
        "ready endpoints only, at the target port"
    );
    for (p, why) in [
        ("/no-port", "has no port 81"),
        ("/no-name", "has no port grpc"),
        ("/missing", "not found"),
        ("/not-ready", "no ready endpoints"),
    ] {
        match target(p) {
            Target::Unavailable(r) => assert!(r.contains(why), "{p}: {r}"),
            other => panic!("{p}: {other:?}"),
        }
    }
}

#[test]
fn an_empty_table_routes_nothing() {
    let t = table(&[]);
    assert!(t.is_empty());
    assert_eq!(to(&t, "my-app.com", "/"), "404");
}
