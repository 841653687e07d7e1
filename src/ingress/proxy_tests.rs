//! The proxy in-process, without root: a real listener on 127.0.0.1 and
//! services whose "cluster IP" is 127.0.0.1, so every answer of the proxy's
//! own (404, 502, 503, 504) and the forwarded headers are checked over TCP.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use serde_json::json;

use super::routes::RouteTable;
use super::{IngressProxy, ProxyConfig, Shared};

/// A service `name` at 127.0.0.1:`port` with one endpoint, ready or not.
fn service(name: &str, port: u16, ready: bool) -> (Service, EndpointSlice) {
    let svc = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"clusterIP": "127.0.0.1", "ports": [{"port": port}]}
    }))
    .unwrap();
    let slice = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default",
            "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "ports": [{"name": "", "port": port}],
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": ready}}]
    }))
    .unwrap();
    (svc, slice)
}

fn proxy(paths: &[(&str, &str)], services: Vec<(Service, EndpointSlice)>) -> IngressProxy {
    let paths: Vec<_> = paths
        .iter()
        .map(|(p, svc)| {
            let port = services
                .iter()
                .find(|(s, _)| s.metadata.name.as_deref() == Some(svc))
                .map_or(80, |(s, _)| {
                    s.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port
                });
            json!({"path": p, "pathType": "Prefix",
                "backend": {"service": {"name": svc, "port": {"number": port}}}})
        })
        .collect();
    let ing: Ingress = serde_json::from_value(json!({
        "metadata": {"name": "i", "namespace": "default"},
        "spec": {"rules": [{"host": "my-app.com", "http": {"paths": paths}}]}
    }))
    .unwrap();
    let (svcs, slices): (Vec<_>, Vec<_>) = services.into_iter().unzip();
    let shared = Arc::new(Shared::default());
    shared
        .routes
        .store(Arc::new(RouteTable::build(&[ing], &svcs, &slices)));
    IngressProxy::start(
        ProxyConfig {
            http: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            https: None,
            upstream_timeout: Duration::from_secs(1),
        },
        shared,
    )
    .unwrap()
}

/// One request over a fresh connection; the whole answer.
fn get(proxy: &IngressProxy, host: &str, path: &str) -> String {
    let mut s = TcpStream::connect(proxy.http_addr.unwrap()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nX-Forwarded-For: 203.0.113.9\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// A backend answering each request with its own head as the body.
fn echo_head_backend() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && c.read(&mut b).unwrap_or(0) == 1 {
                head.push(b[0]);
            }
            let _ = write!(
                c,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nKeep-Alive: timeout=5\r\n\r\n",
                head.len()
            );
            let _ = c.write_all(&head);
        }
    });
    port
}

#[test]
fn answers_of_its_own_404_502_503_504() {
    // Silent: accepts, never answers. Closed: nothing listens.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let closed_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let p = proxy(
        &[("/slow", "slow"), ("/gone", "gone"), ("/down", "down")],
        vec![
            service("slow", silent_port, true),
            service("gone", closed_port, true),
            service("down", echo_head_backend(), false),
        ],
    );
    let status = |a: &str| a.lines().next().unwrap_or("").to_string();
    assert!(status(&get(&p, "other.com", "/slow")).contains("404"));
    assert!(status(&get(&p, "my-app.com", "/nothing")).contains("404"));
    assert!(status(&get(&p, "my-app.com", "/down")).contains("503"));
    assert!(status(&get(&p, "my-app.com", "/gone")).contains("502"));
    assert!(status(&get(&p, "my-app.com", "/slow/x")).contains("504"));
    drop(silent);
    p.stop();
}

#[test]
fn forwards_with_host_kept_and_forwarded_headers() {
    let p = proxy(
        &[("/", "web")],
        vec![service("web", echo_head_backend(), true)],
    );
    let answer = get(&p, "My-App.com:8080", "/a/b?c=d");
    let lower = answer.to_ascii_lowercase();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(lower.contains("get /a/b?c=d http/1.1\r\n"), "{answer}");
    assert!(lower.contains("host: my-app.com:8080\r\n"), "{answer}");
    assert!(
        lower.contains("x-forwarded-for: 203.0.113.9, 127.0.0.1\r\n"),
        "{answer}"
    );
    assert!(lower.contains("x-real-ip: 127.0.0.1\r\n"), "{answer}");
    assert!(lower.contains("x-forwarded-proto: http\r\n"), "{answer}");
    assert!(
        lower.contains("x-forwarded-host: my-app.com:8080\r\n"),
        "{answer}"
    );
    // The client's Connection: close is not passed on; the service's
    // Keep-Alive is not passed back.
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(
        !body.to_ascii_lowercase().contains("connection: close"),
        "{body}"
    );
    assert!(!head.to_ascii_lowercase().contains("keep-alive"), "{head}");
    p.stop();
}

/// A backend that closes its first connection after reading a request head
/// (as a pod stopping under a pooled connection does) and answers 200 on
/// every later one; counts connections.
fn closes_first_connection() -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(AtomicUsize::new(0));
    let n = seen.clone();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let first = n.fetch_add(1, Ordering::SeqCst) == 0;
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && c.read(&mut b).unwrap_or(0) == 1 {
                head.push(b[0]);
            }
            if first {
                continue; // dropped: closed without an answer
            }
            let _ = write!(c, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n");
        }
    });
    (port, seen)
}

#[test]
fn a_request_without_a_body_is_sent_again_on_a_new_connection_a_post_is_not() {
    use std::sync::atomic::Ordering;
    let (get_port, get_seen) = closes_first_connection();
    let (post_port, post_seen) = closes_first_connection();
    let p = proxy(
        &[("/get", "g"), ("/post", "p")],
        vec![service("g", get_port, true), service("p", post_port, true)],
    );
    let answer = get(&p, "my-app.com", "/get");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(get_seen.load(Ordering::SeqCst), 2, "sent again, once");

    let mut s = TcpStream::connect(p.http_addr.unwrap()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "POST /post HTTP/1.1\r\nHost: my-app.com\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    assert_eq!(
        post_seen.load(Ordering::SeqCst),
        1,
        "a POST is never sent twice"
    );
    p.stop();
}
