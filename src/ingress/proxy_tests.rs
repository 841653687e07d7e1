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

/// Reads one HTTP/1.x message head from `r`: the first line and the header
/// fields with lower-case names.
fn read_head(r: &mut impl std::io::BufRead) -> Option<(String, Vec<(String, String)>)> {
    let mut first = String::new();
    if r.read_line(&mut first).ok()? == 0 {
        return None;
    }
    let mut fields = Vec::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            return Some((first.trim_end().to_string(), fields));
        }
        let (n, v) = line.split_once(':')?;
        fields.push((n.to_ascii_lowercase(), v.trim().to_string()));
    }
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// A chunked body as it came (`raw`) and decoded.
fn read_chunked(r: &mut impl std::io::BufRead) -> (Vec<u8>, Vec<u8>) {
    let (mut raw, mut data) = (Vec::new(), Vec::new());
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        raw.extend_from_slice(line.as_bytes());
        let size = usize::from_str_radix(line.trim_end().split(';').next().unwrap(), 16).unwrap();
        if size == 0 {
            loop {
                let mut t = String::new();
                r.read_line(&mut t).unwrap();
                raw.extend_from_slice(t.as_bytes());
                if t == "\r\n" {
                    return (raw, data);
                }
            }
        }
        let mut chunk = vec![0; size + 2];
        r.read_exact(&mut chunk).unwrap();
        raw.extend_from_slice(&chunk);
        data.extend_from_slice(&chunk[..size]);
    }
}

/// A keep-alive backend for the framing tests. By path: `/echo` answers
/// with the request head and the body as it came (`Content-Length`);
/// `/chunked` with `abc` in two chunks (to HTTP/1.0: until it closes);
/// `/close` with `bye` until it closes; `/hints` with a 103, then `ok`.
/// Counts connections.
fn framing_backend() -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = seen.clone();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut w = c.try_clone().unwrap();
                let mut r = std::io::BufReader::new(c);
                while let Some((line, fields)) = read_head(&mut r) {
                    let mut body = Vec::new();
                    if field(&fields, "transfer-encoding") == Some("chunked") {
                        body = read_chunked(&mut r).0;
                    } else if let Some(n) = field(&fields, "content-length") {
                        body = vec![0; n.parse().unwrap()];
                        r.read_exact(&mut body).unwrap();
                    }
                    let http10 = line.ends_with("HTTP/1.0");
                    let path = line.split(' ').nth(1).unwrap_or("");
                    let _ = match path {
                        "/echo" => {
                            let mut echo = format!("{line}\r\n").into_bytes();
                            for (n, v) in &fields {
                                echo.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
                            }
                            echo.extend_from_slice(b"\r\n");
                            echo.extend_from_slice(&body);
                            let head = line.starts_with("HEAD ");
                            write!(w, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", echo.len())
                                .and_then(|()| if head { Ok(()) } else { w.write_all(&echo) })
                        }
                        "/chunked" if http10 => {
                            let _ = w.write_all(b"HTTP/1.0 200 OK\r\n\r\nabc");
                            return;
                        }
                        "/chunked" => w.write_all(
                            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n2\r\nbc\r\n0\r\n\r\n",
                        ),
                        "/close" => {
                            let _ = w.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nbye");
                            return;
                        }
                        "/hints" => w.write_all(
                            b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                        ),
                        _ => w.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
                    };
                }
            });
        }
    });
    (port, seen)
}

/// A response read from the proxy: status line, fields, body (decoded).
struct Answer {
    status: String,
    fields: Vec<(String, String)>,
    body: Vec<u8>,
}

fn read_answer(r: &mut impl std::io::BufRead, head_request: bool) -> Answer {
    let (status, fields) = read_head(r).expect("a response");
    let interim = status.split(' ').nth(1).is_some_and(|c| c.starts_with('1'));
    let body = if head_request || interim {
        Vec::new()
    } else if field(&fields, "transfer-encoding") == Some("chunked") {
        read_chunked(r).1
    } else if let Some(n) = field(&fields, "content-length") {
        let mut b = vec![0; n.parse().unwrap()];
        r.read_exact(&mut b).unwrap();
        b
    } else {
        let mut b = Vec::new();
        r.read_to_end(&mut b).unwrap();
        b
    };
    Answer {
        status,
        fields,
        body,
    }
}

fn connect(p: &IngressProxy) -> (TcpStream, std::io::BufReader<TcpStream>) {
    let s = TcpStream::connect(p.http_addr.unwrap()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let r = std::io::BufReader::new(s.try_clone().unwrap());
    (s, r)
}

#[test]
fn pipelined_requests_with_bodies_both_ways_on_one_connection() {
    let (port, connections) = framing_backend();
    let p = proxy(&[("/", "web")], vec![service("web", port, true)]);
    let (mut s, mut r) = connect(&p);
    // Four requests at once: a body by length, a chunked body, a HEAD, a
    // chunked answer, then an interim 103 before the answer.
    s.write_all(
        b"POST /echo HTTP/1.1\r\nHost: my-app.com\r\nContent-Length: 5\r\n\r\nhello\
          POST /echo HTTP/1.1\r\nHost: my-app.com\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\n\
          HEAD /echo HTTP/1.1\r\nHost: my-app.com\r\n\r\n\
          GET /chunked HTTP/1.1\r\nHost: my-app.com\r\n\r\n\
          GET /hints HTTP/1.1\r\nHost: my-app.com\r\n\r\n",
    )
    .unwrap();
    let a = read_answer(&mut r, false);
    let echo = String::from_utf8(a.body).unwrap();
    assert!(a.status.starts_with("HTTP/1.1 200"), "{}", a.status);
    assert!(echo.starts_with("POST /echo HTTP/1.1\r\n"), "{echo}");
    assert!(
        echo.contains("content-length: 5\r\n") && echo.ends_with("\r\n\r\nhello"),
        "{echo}"
    );
    let a = read_answer(&mut r, false);
    let echo = String::from_utf8(a.body).unwrap();
    assert!(
        echo.contains("transfer-encoding: chunked\r\n")
            && echo.ends_with("\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\n"),
        "the chunked body passes as it came: {echo:?}"
    );
    let a = read_answer(&mut r, true);
    assert!(a.status.starts_with("HTTP/1.1 200") && field(&a.fields, "content-length").is_some());
    let a = read_answer(&mut r, false);
    assert_eq!(
        (a.body.as_slice(), field(&a.fields, "transfer-encoding")),
        (&b"abc"[..], Some("chunked"))
    );
    let a = read_answer(&mut r, false);
    assert!(a.status.starts_with("HTTP/1.1 103"), "{}", a.status);
    assert_eq!(field(&a.fields, "link"), Some("</s.css>"));
    let a = read_answer(&mut r, false);
    assert_eq!(
        (a.status.as_str(), a.body.as_slice()),
        ("HTTP/1.1 200 OK", &b"ok"[..])
    );
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one upstream connection, kept alive"
    );
    // An answer that ends with its connection ends the client's too.
    s.write_all(b"GET /close HTTP/1.1\r\nHost: my-app.com\r\n\r\n")
        .unwrap();
    let a = read_answer(&mut r, false);
    assert_eq!(a.body, b"bye");
    assert_eq!(field(&a.fields, "connection"), Some("close"));
    p.stop();
}

#[test]
fn an_http10_client_gets_no_chunked_answer() {
    let p = proxy(
        &[("/", "web")],
        vec![service("web", framing_backend().0, true)],
    );
    let (mut s, mut r) = connect(&p);
    s.write_all(b"GET /echo HTTP/1.0\r\nHost: my-app.com\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    let a = read_answer(&mut r, false);
    assert!(
        String::from_utf8(a.body)
            .unwrap()
            .starts_with("GET /echo HTTP/1.0\r\n"),
        "sent upstream as HTTP/1.0"
    );
    assert_eq!(field(&a.fields, "connection"), Some("keep-alive"));
    s.write_all(b"GET /chunked HTTP/1.0\r\nHost: my-app.com\r\n\r\n")
        .unwrap();
    let a = read_answer(&mut r, false);
    assert_eq!(a.body, b"abc");
    assert_eq!(field(&a.fields, "transfer-encoding"), None);
    p.stop();
}

#[test]
fn expect_100_continue_is_answered_by_the_proxy() {
    let p = proxy(
        &[("/", "web")],
        vec![service("web", framing_backend().0, true)],
    );
    let (mut s, mut r) = connect(&p);
    s.write_all(b"PUT /echo HTTP/1.1\r\nHost: my-app.com\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        .unwrap();
    // The body is sent only after the interim answer.
    let a = read_answer(&mut r, false);
    assert_eq!(a.status, "HTTP/1.1 100 Continue");
    s.write_all(b"data").unwrap();
    let a = read_answer(&mut r, false);
    let echo = String::from_utf8(a.body).unwrap();
    assert!(
        echo.ends_with("\r\n\r\ndata") && !echo.contains("expect"),
        "{echo}"
    );
    p.stop();
}

#[test]
fn framing_two_parsers_could_read_differently_is_refused_and_the_connection_closed() {
    let p = proxy(
        &[("/", "web")],
        vec![service("web", framing_backend().0, true)],
    );
    for (bad, status) in [
        ("Content-Length: 3\r\nTransfer-Encoding: chunked\r\n", "400"),
        ("Content-Length: 3\r\nContent-Length: 4\r\n", "400"),
        ("Transfer-Encoding: gzip\r\n", "501"),
    ] {
        let (mut s, mut r) = connect(&p);
        write!(s, "POST /echo HTTP/1.1\r\nHost: my-app.com\r\n{bad}\r\n0\r\n\r\nGET /echo HTTP/1.1\r\n\r\n").unwrap();
        let a = read_answer(&mut r, false);
        assert!(
            a.status.starts_with(&format!("HTTP/1.1 {status}")),
            "{bad}: {}",
            a.status
        );
        assert_eq!(field(&a.fields, "connection"), Some("close"));
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert!(
            rest.is_empty(),
            "nothing more is answered: {}",
            String::from_utf8_lossy(&rest)
        );
    }
    p.stop();
}

#[test]
fn h2_with_prior_knowledge_in_clear() {
    let p = proxy(
        &[("/", "web")],
        vec![service("web", framing_backend().0, true)],
    );
    let addr = p.http_addr.unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (status, body) = rt.block_on(async move {
        use http_body_util::{BodyExt, Empty};
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tcp),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let req = hyper::Request::get("http://my-app.com/echo")
            .body(Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        let status = resp.status();
        (status, resp.into_body().collect().await.unwrap().to_bytes())
    });
    assert_eq!(status, 200);
    let echo = String::from_utf8_lossy(&body);
    assert!(
        echo.starts_with("GET /echo HTTP/1.1\r\n") && echo.contains("host: my-app.com"),
        "{echo}"
    );
    p.stop();
}
