//! The API server and client end to end over a Unix socket, against the
//! in-memory fake daemon: every route, and every way a request can be bad.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use common::TestServer;
use podnet::api::*;

/// Sends raw bytes, returns (status, head, body) of the answer.
fn raw(server: &TestServer, request: &[u8]) -> (u16, String, String) {
    let mut stream = UnixStream::connect(&server.socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head[9..12].parse().unwrap();
    (status, head.to_string(), body.to_string())
}

fn request(method: &str, path: &str, body: &str) -> Vec<u8> {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn error_of(body: &str) -> String {
    serde_json::from_str::<ErrorBody>(body)
        .unwrap_or_else(|e| panic!("not an ErrorBody ({e}): {body}"))
        .error
}

fn api_err(e: ClientError) -> (u16, String) {
    match e {
        ClientError::Api { status, message } => (status, message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn pod_spec(name: &str) -> PodSpec {
    PodSpec {
        name: name.into(),
        labels: [("app".to_string(), "web".to_string())].into(),
        restart_policy: RestartPolicy::OnFailure,
        command: vec!["sleep".into(), "100".into()],
        netns: None,
    }
}

#[test]
fn pods_round_trip() {
    let server = TestServer::start();
    let c = server.client();
    assert!(c.list_pods().unwrap().is_empty());
    let pod = c.create_pod(&pod_spec("web")).unwrap();
    assert_eq!(pod.name, "web");
    assert_eq!(pod.restart_policy, RestartPolicy::OnFailure);
    assert_eq!(pod.phase, PodPhase::Running);
    assert_eq!(c.get_pod("web").unwrap(), pod);
    assert_eq!(c.list_pods().unwrap(), vec![pod.clone()]);
    assert_eq!(c.pod_logs("web").unwrap(), b"hello from web\nline two\n");
    let (status, msg) = api_err(c.create_pod(&pod_spec("web")).unwrap_err());
    assert_eq!((status, msg.as_str()), (409, "pod \"web\" already exists"));
    assert_eq!(c.delete_pod("web").unwrap(), pod);
    let (status, msg) = api_err(c.get_pod("web").unwrap_err());
    assert_eq!((status, msg.as_str()), (404, "pod \"web\" not found"));
    assert_eq!(api_err(c.pod_logs("web").unwrap_err()).0, 404);
    assert_eq!(api_err(c.delete_pod("web").unwrap_err()).0, 404);

    let attached = c
        .create_pod(&PodSpec {
            name: "cni".into(),
            labels: Default::default(),
            restart_policy: RestartPolicy::Always,
            command: vec![],
            netns: Some("/proc/1/ns/net".into()),
        })
        .unwrap();
    assert_eq!(attached.netns, "/proc/1/ns/net");
}

#[test]
fn deployments_and_statefulsets_round_trip() {
    let server = TestServer::start();
    let c = server.client();
    let d = c
        .create_deployment(&DeploymentSpec {
            name: "web".into(),
            replicas: 3,
            labels: [("app".to_string(), "web".to_string())].into(),
            command: vec!["httpd".into()],
        })
        .unwrap();
    assert_eq!((d.replicas, d.ready, d.pods.len()), (3, 3, 3));
    assert_eq!(c.scale_deployment("web", 1).unwrap().pods.len(), 1);
    assert_eq!(c.get_deployment("web").unwrap().replicas, 1);
    assert_eq!(c.list_deployments().unwrap().len(), 1);
    assert_eq!(c.list_pods().unwrap().len(), 1);
    c.delete_deployment("web").unwrap();
    assert!(c.list_pods().unwrap().is_empty());
    assert_eq!(api_err(c.scale_deployment("web", 2).unwrap_err()).0, 404);

    let s = c
        .create_statefulset(&StatefulSetSpec {
            name: "db".into(),
            replicas: 2,
            service: "db".into(),
            labels: Default::default(),
            command: vec!["db".into()],
        })
        .unwrap();
    assert_eq!(s.pods, ["db-0", "db-1"]);
    assert_eq!(
        c.scale_statefulset("db", 3).unwrap().pods,
        ["db-0", "db-1", "db-2"]
    );
    assert_eq!(c.get_statefulset("db").unwrap().service, "db");
    assert_eq!(c.list_statefulsets().unwrap().len(), 1);
    c.delete_statefulset("db").unwrap();
    assert_eq!(api_err(c.get_statefulset("db").unwrap_err()).0, 404);
}

#[test]
fn services_nat_conntrack_and_reset() {
    let server = TestServer::start();
    let c = server.client();
    c.create_pod(&pod_spec("web")).unwrap();
    let svc = c
        .create_service(&ServiceSpec {
            name: "web".into(),
            selector: parse_selector("app=web").unwrap(),
            ports: vec![parse_port_spec("80:8080").unwrap()],
            cluster_ip: Some("10.96.0.10".into()),
            session_affinity: SessionAffinity::ClientIP,
        })
        .unwrap();
    assert_eq!(svc.cluster_ip, "10.96.0.10");
    assert_eq!(svc.endpoints, ["10.244.0.2:8080"]);
    assert_eq!(c.get_service("web").unwrap(), svc);
    assert_eq!(c.list_services().unwrap(), vec![svc]);
    let nat = c.nat_rules().unwrap();
    assert_eq!(nat[0].frontend, "10.96.0.10:80/TCP");
    assert_eq!(nat[0].backends[0].address, "10.244.0.2:8080");
    assert_eq!(c.conntrack().unwrap()[0].state, "ESTABLISHED");
    let summary = c.reset().unwrap();
    assert_eq!((summary.pods, summary.services), (1, 1));
    assert!(c.list_services().unwrap().is_empty());
    assert_eq!(api_err(c.delete_service("web").unwrap_err()).0, 404);
}

#[test]
fn json_is_shaped_like_kubectl() {
    let spec: ServiceSpec = serde_json::from_str(
        r#"{"name":"dns","selector":{"app":"dns"},"clusterIP":"10.96.0.10",
            "ports":[{"port":53,"protocol":"UDP"},{"name":"tcp","port":53,"targetPort":5353}],
            "sessionAffinity":"ClientIP"}"#,
    )
    .unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some("10.96.0.10"));
    assert_eq!(spec.ports[0].target_port, 53, "targetPort defaults to port");
    assert_eq!(spec.ports[0].protocol, Protocol::UDP);
    assert_eq!(
        spec.ports[1].protocol,
        Protocol::TCP,
        "protocol defaults to TCP"
    );
    assert_eq!(spec.session_affinity, SessionAffinity::ClientIP);
    let json = serde_json::to_value(&spec).unwrap();
    assert_eq!(json["clusterIP"], "10.96.0.10");
    assert_eq!(json["ports"][1]["targetPort"], 5353);
    assert_eq!(json["sessionAffinity"], "ClientIP");

    let pod: PodSpec = serde_json::from_str(r#"{"name":"a","command":["x"]}"#).unwrap();
    assert_eq!(pod.restart_policy, RestartPolicy::Always);
    let json = serde_json::to_value(&pod).unwrap();
    assert_eq!(json["restartPolicy"], "Always");
    let p: PodSpec =
        serde_json::from_str(r#"{"name":"a","command":["x"],"restartPolicy":"OnFailure"}"#)
            .unwrap();
    assert_eq!(p.restart_policy, RestartPolicy::OnFailure);
}

#[test]
fn the_router_validates_names_and_specs() {
    let server = TestServer::start();
    let c = server.client();
    let long_deployment = format!(
        r#"{{"name":"{}","replicas":1,"command":["x"]}}"#,
        "d".repeat(60)
    );
    let long_statefulset = format!(
        r#"{{"name":"{}","replicas":11,"service":"s","command":["x"]}}"#,
        "s".repeat(61)
    );
    let cases: Vec<(&str, &str, &str, &str)> = vec![
        ("GET", "/v1/pods/Web", "", "invalid pod name \"Web\""),
        ("DELETE", "/v1/services/a_b", "", "invalid service name"),
        ("GET", "/v1/pods/-x/logs", "", "DNS label"),
        (
            "PUT",
            "/v1/deployments/UP/scale",
            r#"{"replicas":1}"#,
            "invalid deployment name",
        ),
        (
            "POST",
            "/v1/pods",
            r#"{"name":"web.1","command":["x"]}"#,
            "invalid pod name \"web.1\"",
        ),
        ("POST", "/v1/pods", r#"{"name":"web"}"#, "needs a command"),
        (
            "POST",
            "/v1/pods",
            r#"{"name":"web","command":[""]}"#,
            "empty program name",
        ),
        (
            "POST",
            "/v1/pods",
            r#"{"name":"web","netns":"relative"}"#,
            "not an absolute path",
        ),
        (
            "POST",
            "/v1/pods",
            r#"{"name":"web","command":["x"],"labels":{"app":"a b"}}"#,
            "invalid value \"a b\" for label \"app\"",
        ),
        ("POST", "/v1/deployments", &long_deployment, "too long"),
        (
            "POST",
            "/v1/statefulsets",
            &long_statefulset,
            "too long for 11 replicas",
        ),
        (
            "POST",
            "/v1/statefulsets",
            r#"{"name":"db","replicas":1,"service":"Svc","command":["x"]}"#,
            "invalid service name \"Svc\"",
        ),
        (
            "POST",
            "/v1/services",
            r#"{"name":"s","ports":[]}"#,
            "at least one port",
        ),
        (
            "POST",
            "/v1/services",
            r#"{"name":"s","ports":[{"port":0}]}"#,
            "ports must be 1-65535",
        ),
        (
            "POST",
            "/v1/services",
            r#"{"name":"s","ports":[{"port":80},{"port":80,"targetPort":81}]}"#,
            "given twice",
        ),
        (
            "POST",
            "/v1/services",
            r#"{"name":"s","ports":[{"port":80}],"clusterIP":"banana"}"#,
            "not an IP address",
        ),
    ];
    for (method, path, body, want) in cases {
        let (status, _, answer) = raw(&server, &request(method, path, body));
        let message = error_of(&answer);
        assert_eq!(status, 400, "{method} {path} {body}: {message}");
        assert!(
            message.contains(want),
            "{method} {path}: {message:?} lacks {want:?}"
        );
    }
    // The client escapes a bad name, and the server reports it as typed.
    let (status, message) = api_err(c.get_pod("Bad Name/x").unwrap_err());
    assert_eq!(status, 400);
    assert!(message.contains("\"Bad Name/x\""), "{message}");
}

#[test]
fn bad_json_is_a_400_naming_the_problem() {
    let server = TestServer::start();
    for (body, want) in [
        ("{not json", "invalid PodSpec JSON: key must be a string"),
        (r#"{"command":["x"]}"#, "missing field `name`"),
        (
            r#"{"name":"a","command":["x"],"restart":"Never"}"#,
            "unknown field `restart`",
        ),
        (
            r#"{"name":"a","command":["x"],"restartPolicy":"Sometimes"}"#,
            "unknown variant `Sometimes`",
        ),
        ("", "the request body is empty; send a JSON PodSpec"),
        ("[1,2]", "invalid PodSpec JSON"),
    ] {
        let (status, _, answer) = raw(&server, &request("POST", "/v1/pods", body));
        let message = error_of(&answer);
        assert_eq!(status, 400, "{body}: {message}");
        assert!(message.contains(want), "{body}: {message:?} lacks {want:?}");
    }
    let (status, _, answer) = raw(
        &server,
        &request("PUT", "/v1/statefulsets/db/scale", r#"{"replicas":-1}"#),
    );
    assert_eq!(status, 400);
    assert!(error_of(&answer).contains("invalid Scale JSON"), "{answer}");
}

#[test]
fn unknown_routes_are_404_and_wrong_methods_405() {
    let server = TestServer::start();
    for path in [
        "/",
        "/v2/pods",
        "/v1/nodes",
        "/v1/pods/a/b",
        "/v1/services/a/scale",
        "*",
    ] {
        let (status, _, answer) = raw(&server, &request("GET", path, ""));
        assert_eq!(status, 404, "{path}");
        assert!(
            error_of(&answer).contains("the API serves /v1/pods"),
            "{answer}"
        );
    }
    for (method, path, allow) in [
        ("PUT", "/v1/pods", "GET, POST"),
        ("POST", "/v1/pods/web", "GET, DELETE"),
        ("DELETE", "/v1/pods/web/logs", "GET"),
        ("GET", "/v1/deployments/web/scale", "PUT"),
        ("POST", "/v1/nat", "GET"),
        ("DELETE", "/v1/conntrack", "GET"),
        ("GET", "/v1/reset", "POST"),
        ("PATCH", "/v1/services", "GET, POST"),
    ] {
        let (status, head, answer) = raw(&server, &request(method, path, ""));
        assert_eq!(status, 405, "{method} {path}");
        assert!(head.contains(&format!("Allow: {allow}")), "{head}");
        assert!(error_of(&answer).contains(&format!("method {method} is not allowed")));
    }
    // Trailing slashes and query strings are tolerated.
    assert_eq!(raw(&server, &request("GET", "/v1/pods/", "")).0, 200);
    assert_eq!(raw(&server, &request("GET", "/v1/pods?watch=1", "")).0, 200);
}

#[test]
fn oversized_chunked_and_garbage_requests_get_4xx() {
    let server = TestServer::start();
    // Announced too large: refused before the body is read.
    let (status, _, answer) = raw(
        &server,
        b"POST /v1/pods HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n{",
    );
    assert_eq!(status, 413);
    assert!(error_of(&answer).contains("larger than the limit of 1048576 bytes"));
    // Really sent by the client: the client still reports the server's answer.
    let huge = "x".repeat(3 << 20);
    let err = server
        .client()
        .post::<Pod, _>("/v1/pods", Some(&huge))
        .unwrap_err();
    assert_eq!(api_err(err).0, 413);

    let (status, _, answer) = raw(
        &server,
        b"POST /v1/pods HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
    assert_eq!(status, 411);
    assert!(error_of(&answer).contains("Content-Length"));

    for garbage in [
        &b"\x00\x01\x02\xff\xfe garbage\r\n\r\n"[..],
        b"GET /v1/pods\r\n\r\n",
        b"GET /v1/pods HTTP/1.1\r\nBad Header\r\n\r\n",
        b"POST /v1/pods HTTP/1.1\r\nContent-Length: ten\r\n\r\n",
        b"POST /v1/pods HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    ] {
        let (status, _, answer) = raw(&server, garbage);
        assert_eq!(status, 400, "{garbage:?}");
        error_of(&answer);
    }
    let (status, _, _) = raw(
        &server,
        format!("GET /{} HTTP/1.1\r\n", "a".repeat(20_000)).as_bytes(),
    );
    assert_eq!(status, 431);
    let many: String = (0..100).map(|i| format!("X-{i}: y\r\n")).collect();
    let (status, _, _) = raw(
        &server,
        format!("GET /v1/pods HTTP/1.1\r\n{many}\r\n").as_bytes(),
    );
    assert_eq!(status, 431);
    // Still serving.
    assert!(server.client().list_pods().unwrap().is_empty());
}

#[test]
fn a_client_that_disconnects_mid_request_is_harmless() {
    let server = TestServer::start();
    for partial in [
        &b""[..],
        b"POST /v1/po",
        b"POST /v1/pods HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"name\":",
    ] {
        let mut s = UnixStream::connect(&server.socket).unwrap();
        s.write_all(partial).unwrap();
        drop(s);
    }
    // A client that sends, then closes before reading the answer.
    let mut s = UnixStream::connect(&server.socket).unwrap();
    s.write_all(&request(
        "POST",
        "/v1/pods",
        r#"{"name":"a","command":["x"]}"#,
    ))
    .unwrap();
    drop(s);
    let c = server.client();
    let deadline = Instant::now() + Duration::from_secs(5);
    while c.list_pods().unwrap().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(c.get_pod("a").unwrap().name, "a");
}

#[test]
fn a_silent_client_times_out_with_408() {
    let server = TestServer::start_with(ServerConfig {
        request_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    });
    let start = Instant::now();
    let (status, _, answer) = raw(
        &server,
        b"POST /v1/pods HTTP/1.1\r\nContent-Length: 10\r\n\r\n{",
    );
    assert_eq!(status, 408);
    assert!(error_of(&answer).contains("not complete within"));
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn connections_beyond_the_limit_get_503() {
    let server = TestServer::start_with(ServerConfig {
        max_connections: 1,
        request_timeout: Duration::from_secs(2),
        ..ServerConfig::default()
    });
    let mut hog = UnixStream::connect(&server.socket).unwrap();
    hog.write_all(b"GET /v1/pods HTTP/1.1\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let (status, _, answer) = raw(&server, &request("GET", "/v1/pods", ""));
    assert_eq!(status, 503);
    assert!(error_of(&answer).contains("try again"));
    drop(hog);
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.client().list_pods().is_err() {
        assert!(Instant::now() < deadline, "the slot was never freed");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_panicking_handler_is_a_500_and_the_server_goes_on() {
    let server = TestServer::start();
    let (status, message) = api_err(server.client().get_pod("panic").unwrap_err());
    assert_eq!(status, 500);
    assert!(
        message.contains("podnetd failed while handling GET /v1/pods/panic"),
        "{message}"
    );
    assert!(server.client().list_pods().unwrap().is_empty());
}

#[test]
fn expect_100_continue_is_honoured() {
    let server = TestServer::start();
    let body = r#"{"name":"curl","command":["x"]}"#;
    let mut s = UnixStream::connect(&server.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "POST /v1/pods HTTP/1.1\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    )
    .unwrap();
    let mut interim = [0u8; 25];
    s.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(body.as_bytes()).unwrap();
    let mut rest = String::new();
    s.read_to_string(&mut rest).unwrap();
    assert!(rest.starts_with("HTTP/1.1 201 Created\r\n"), "{rest}");
}

#[test]
fn client_errors_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing.sock");
    let err = ApiClient::new(&missing).list_pods().unwrap_err();
    assert!(matches!(err, ClientError::NotRunning { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&format!(
        "cannot connect to podnetd at {}",
        missing.display()
    )));
    assert!(
        msg.contains("is the daemon running? (set --socket or PODNET_SOCKET)"),
        "{msg}"
    );

    // A stale socket file with nobody listening.
    let stale = dir.path().join("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    assert!(matches!(
        ApiClient::new(&stale).list_pods().unwrap_err(),
        ClientError::NotRunning { .. }
    ));

    // Something that is not podnetd on the socket.
    let other = dir.path().join("other.sock");
    let listener = UnixListener::bind(&other).unwrap();
    let t = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.write_all(b"SSH-2.0-OpenSSH\r\n").unwrap();
    });
    let err = ApiClient::new(&other).list_pods().unwrap_err();
    t.join().unwrap();
    assert!(matches!(err, ClientError::BadResponse(_)), "{err:?}");

    // A daemon that never answers.
    let silent = dir.path().join("silent.sock");
    let listener = UnixListener::bind(&silent).unwrap();
    let err = ApiClient::new(&silent)
        .with_timeout(Duration::from_millis(200))
        .list_pods()
        .unwrap_err();
    drop(listener);
    assert!(matches!(err, ClientError::Timeout { .. }), "{err:?}");
}

#[test]
fn serve_returns_soon_after_shutdown() {
    let server = TestServer::start();
    server.client().list_pods().unwrap();
    let start = Instant::now();
    server.stop().unwrap();
    assert!(start.elapsed() < Duration::from_secs(2));
}
