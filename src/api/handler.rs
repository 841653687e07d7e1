//! The operations of the API ([`ApiHandler`], implemented by the daemon) and
//! the router that maps a method, a path and a JSON body onto them.
//!
//! The router is pure (no IO) so it is tested without sockets. It validates
//! everything that does not need the daemon's state — names, labels, ports,
//! replica counts — so a handler only ever sees well-formed requests and only
//! has to answer for what depends on its state (not found, conflict).

use std::net::IpAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::parse::{validate_labels, validate_name, MAX_NAME_LEN};
use super::types::*;

/// An error answer: an HTTP status and a message for a person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// HTTP status code (4xx for the caller's mistakes, 5xx for the daemon's).
    pub status: u16,
    /// What went wrong and, where possible, what to do about it.
    pub message: String,
}

impl ApiError {
    /// An error with any status.
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// 404: the named object does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, message)
    }

    /// 400: the request is malformed or invalid.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }

    /// 409: the request conflicts with existing state (name taken, address in use).
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(409, message)
    }

    /// 500: the daemon failed; the message should name the step that failed.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, message)
    }
}

/// The operations of the API, one method per route. The daemon implements it;
/// the HTTP server ([`super::serve`]) calls it from one thread per connection,
/// so methods may run concurrently.
///
/// Names and specs passed in are already validated by the router (DNS-label
/// names, label syntax, non-empty commands, valid ports and IPs), so an
/// implementation only reports errors that depend on its state.
pub trait ApiHandler: Send + Sync {
    /// `GET /v1/pods`
    fn list_pods(&self) -> Result<Vec<Pod>, ApiError>;
    /// `POST /v1/pods`: run a command in a new namespace, or attach `spec.netns`.
    fn create_pod(&self, spec: PodSpec) -> Result<Pod, ApiError>;
    /// `GET /v1/pods/{name}`
    fn get_pod(&self, name: &str) -> Result<Pod, ApiError>;
    /// `DELETE /v1/pods/{name}`: stop the pod, remove it; returns it as it was.
    fn delete_pod(&self, name: &str) -> Result<Pod, ApiError>;
    /// `GET /v1/pods/{name}/logs`: the process's stdout and stderr, raw bytes.
    fn pod_logs(&self, name: &str) -> Result<Vec<u8>, ApiError>;

    /// `GET /v1/deployments`
    fn list_deployments(&self) -> Result<Vec<Deployment>, ApiError>;
    /// `POST /v1/deployments`
    fn create_deployment(&self, spec: DeploymentSpec) -> Result<Deployment, ApiError>;
    /// `GET /v1/deployments/{name}`
    fn get_deployment(&self, name: &str) -> Result<Deployment, ApiError>;
    /// `DELETE /v1/deployments/{name}`: delete it and its pods; returns it as it was.
    fn delete_deployment(&self, name: &str) -> Result<Deployment, ApiError>;
    /// `PUT /v1/deployments/{name}/scale`
    fn scale_deployment(&self, name: &str, scale: Scale) -> Result<Deployment, ApiError>;

    /// `GET /v1/statefulsets`
    fn list_statefulsets(&self) -> Result<Vec<StatefulSet>, ApiError>;
    /// `POST /v1/statefulsets`
    fn create_statefulset(&self, spec: StatefulSetSpec) -> Result<StatefulSet, ApiError>;
    /// `GET /v1/statefulsets/{name}`
    fn get_statefulset(&self, name: &str) -> Result<StatefulSet, ApiError>;
    /// `DELETE /v1/statefulsets/{name}`: delete it and its pods; returns it as it was.
    fn delete_statefulset(&self, name: &str) -> Result<StatefulSet, ApiError>;
    /// `PUT /v1/statefulsets/{name}/scale`
    fn scale_statefulset(&self, name: &str, scale: Scale) -> Result<StatefulSet, ApiError>;

    /// `GET /v1/services`
    fn list_services(&self) -> Result<Vec<Service>, ApiError>;
    /// `POST /v1/services`
    fn create_service(&self, spec: ServiceSpec) -> Result<Service, ApiError>;
    /// `GET /v1/services/{name}`
    fn get_service(&self, name: &str) -> Result<Service, ApiError>;
    /// `DELETE /v1/services/{name}`: returns it as it was.
    fn delete_service(&self, name: &str) -> Result<Service, ApiError>;

    /// `GET /v1/nat`: the service NAT table.
    fn nat_rules(&self) -> Result<Vec<NatRule>, ApiError>;
    /// `GET /v1/conntrack`: live flows.
    fn conntrack(&self) -> Result<Vec<ConntrackEntry>, ApiError>;
    /// `POST /v1/reset`: stop every pod and remove everything podnet created.
    fn reset(&self) -> Result<ResetSummary, ApiError>;
}

/// A routed answer, before HTTP framing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// For 405: the methods the path accepts (the `Allow` header).
    pub allow: Option<&'static str>,
}

pub(crate) const JSON: &str = "application/json";
pub(crate) const TEXT: &str = "text/plain; charset=utf-8";

impl Reply {
    fn json<T: Serialize>(status: u16, value: &T) -> Reply {
        match serde_json::to_vec_pretty(value) {
            Ok(mut body) => {
                body.push(b'\n');
                Reply {
                    status,
                    content_type: JSON,
                    body,
                    allow: None,
                }
            }
            Err(e) => Reply::error(&ApiError::internal(format!(
                "cannot encode the response as JSON: {e}"
            ))),
        }
    }

    pub(crate) fn error(err: &ApiError) -> Reply {
        // An error must look like one to the client, whatever status a handler chose.
        let status = if (400..600).contains(&err.status) {
            err.status
        } else {
            500
        };
        let body = ErrorBody {
            error: err.message.clone(),
        };
        // An ErrorBody always serializes; fall back to a fixed body regardless.
        let mut body =
            serde_json::to_vec(&body).unwrap_or_else(|_| br#"{"error":"internal error"}"#.to_vec());
        body.push(b'\n');
        Reply {
            status,
            content_type: JSON,
            body,
            allow: None,
        }
    }

    fn from_result<T: Serialize>(status: u16, result: Result<T, ApiError>) -> Reply {
        match result {
            Ok(value) => Reply::json(status, &value),
            Err(e) => Reply::error(&e),
        }
    }
}

/// The resources the API serves, for messages about unknown routes.
const ROUTES: &str = "/v1/pods[/NAME[/logs]], /v1/deployments[/NAME[/scale]], \
                      /v1/statefulsets[/NAME[/scale]], /v1/services[/NAME], /v1/nat, \
                      /v1/conntrack, /v1/reset";

/// What a path names, before the method is looked at.
enum Route {
    Collection(Kind),
    Object(Kind, String),
    Logs(String),
    Scale(Kind, String),
    Nat,
    Conntrack,
    Reset,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Pod,
    Deployment,
    StatefulSet,
    Service,
}

impl Kind {
    fn from_segment(s: &str) -> Option<Kind> {
        match s {
            "pods" => Some(Kind::Pod),
            "deployments" => Some(Kind::Deployment),
            "statefulsets" => Some(Kind::StatefulSet),
            "services" => Some(Kind::Service),
            _ => None,
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Kind::Pod => "pod",
            Kind::Deployment => "deployment",
            Kind::StatefulSet => "statefulset",
            Kind::Service => "service",
        }
    }

    fn spec(self) -> &'static str {
        match self {
            Kind::Pod => "PodSpec",
            Kind::Deployment => "DeploymentSpec",
            Kind::StatefulSet => "StatefulSetSpec",
            Kind::Service => "ServiceSpec",
        }
    }
}

fn parse_route(path: &str) -> Option<Route> {
    let path = path.strip_suffix('/').unwrap_or(path);
    let rest = path.strip_prefix("/v1/")?;
    let segments: Vec<String> = rest.split('/').map(percent_decode).collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let name = |s: &str| s.to_string();
    match segments.as_slice() {
        ["nat"] => Some(Route::Nat),
        ["conntrack"] => Some(Route::Conntrack),
        ["reset"] => Some(Route::Reset),
        [kind] => Some(Route::Collection(Kind::from_segment(kind)?)),
        [kind, n] => Some(Route::Object(Kind::from_segment(kind)?, name(n))),
        ["pods", n, "logs"] => Some(Route::Logs(name(n))),
        [kind, n, "scale"] => match Kind::from_segment(kind)? {
            k @ (Kind::Deployment | Kind::StatefulSet) => Some(Route::Scale(k, name(n))),
            _ => None,
        },
        _ => None,
    }
}

/// Decodes `%XX` escapes (the client escapes names that are not plain), so
/// that a bad name is reported as the user typed it. Bytes that do not form
/// UTF-8 are replaced, which the name check then rejects.
fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Answers one request. Never panics: a panicking handler becomes a 500.
pub(crate) fn route(handler: &dyn ApiHandler, method: &str, target: &str, body: &[u8]) -> Reply {
    // The API takes no query parameters; ignore any rather than 404 on them.
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    let Some(route) = parse_route(path) else {
        return Reply::error(&ApiError::not_found(format!(
            "no such route: {method} {}; the API serves {ROUTES}",
            quote_path(path)
        )));
    };
    match catch_unwind(AssertUnwindSafe(|| {
        dispatch(handler, method, path, route, body)
    })) {
        Ok(reply) => reply,
        Err(_) => Reply::error(&ApiError::internal(format!(
            "podnetd failed while handling {method} {}; see the daemon's log",
            quote_path(path)
        ))),
    }
}

fn quote_path(path: &str) -> String {
    const MAX: usize = 120;
    if path.len() <= MAX {
        path.to_string()
    } else {
        let mut end = MAX;
        while !path.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &path[..end])
    }
}

fn method_not_allowed(method: &str, path: &str, allow: &'static str) -> Reply {
    let mut reply = Reply::error(&ApiError::new(
        405,
        format!(
            "method {method} is not allowed on {}; use {}",
            quote_path(path),
            allow.replace(", ", " or ")
        ),
    ));
    reply.allow = Some(allow);
    reply
}

fn name_ok(kind: &str, name: &str) -> Result<(), ApiError> {
    validate_name(kind, name).map_err(|e| ApiError::bad_request(e.message()))
}

fn decode<T: DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(format!(
            "the request body is empty; send a JSON {what}"
        )));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid {what} JSON: {e}")))
}

fn dispatch(
    handler: &dyn ApiHandler,
    method: &str,
    path: &str,
    route: Route,
    body: &[u8],
) -> Reply {
    match route {
        Route::Collection(kind) => match method {
            "GET" => match kind {
                Kind::Pod => Reply::from_result(200, handler.list_pods()),
                Kind::Deployment => Reply::from_result(200, handler.list_deployments()),
                Kind::StatefulSet => Reply::from_result(200, handler.list_statefulsets()),
                Kind::Service => Reply::from_result(200, handler.list_services()),
            },
            "POST" => create(handler, kind, body),
            _ => method_not_allowed(method, path, "GET, POST"),
        },
        Route::Object(kind, name) => {
            let (get, delete) = (method == "GET", method == "DELETE");
            if !get && !delete {
                return method_not_allowed(method, path, "GET, DELETE");
            }
            if let Err(e) = name_ok(kind.noun(), &name) {
                return Reply::error(&e);
            }
            let name = name.as_str();
            match (kind, get) {
                (Kind::Pod, true) => Reply::from_result(200, handler.get_pod(name)),
                (Kind::Pod, false) => Reply::from_result(200, handler.delete_pod(name)),
                (Kind::Deployment, true) => Reply::from_result(200, handler.get_deployment(name)),
                (Kind::Deployment, false) => {
                    Reply::from_result(200, handler.delete_deployment(name))
                }
                (Kind::StatefulSet, true) => Reply::from_result(200, handler.get_statefulset(name)),
                (Kind::StatefulSet, false) => {
                    Reply::from_result(200, handler.delete_statefulset(name))
                }
                (Kind::Service, true) => Reply::from_result(200, handler.get_service(name)),
                (Kind::Service, false) => Reply::from_result(200, handler.delete_service(name)),
            }
        }
        Route::Logs(name) => {
            if method != "GET" {
                return method_not_allowed(method, path, "GET");
            }
            match name_ok("pod", &name).and_then(|()| handler.pod_logs(&name)) {
                Ok(text) => Reply {
                    status: 200,
                    content_type: TEXT,
                    body: text,
                    allow: None,
                },
                Err(e) => Reply::error(&e),
            }
        }
        Route::Scale(kind, name) => {
            if method != "PUT" {
                return method_not_allowed(method, path, "PUT");
            }
            let name = name.as_str();
            let scale = name_ok(kind.noun(), name)
                .and_then(|()| decode::<Scale>("Scale", body))
                .and_then(|scale| {
                    if kind == Kind::StatefulSet {
                        statefulset_names_fit(name, scale.replicas)?;
                    }
                    Ok(scale)
                });
            match (scale, kind) {
                (Err(e), _) => Reply::error(&e),
                (Ok(scale), Kind::Deployment) => {
                    Reply::from_result(200, handler.scale_deployment(name, scale))
                }
                (Ok(scale), _) => Reply::from_result(200, handler.scale_statefulset(name, scale)),
            }
        }
        Route::Nat => match method {
            "GET" => Reply::from_result(200, handler.nat_rules()),
            _ => method_not_allowed(method, path, "GET"),
        },
        Route::Conntrack => match method {
            "GET" => Reply::from_result(200, handler.conntrack()),
            _ => method_not_allowed(method, path, "GET"),
        },
        Route::Reset => match method {
            "POST" => Reply::from_result(200, handler.reset()),
            _ => method_not_allowed(method, path, "POST"),
        },
    }
}

fn create(handler: &dyn ApiHandler, kind: Kind, body: &[u8]) -> Reply {
    let what = kind.spec();
    let result = match kind {
        Kind::Pod => decode::<PodSpec>(what, body)
            .and_then(|spec| validate_pod(&spec).map(|()| spec))
            .map(|spec| Reply::from_result(201, handler.create_pod(spec))),
        Kind::Deployment => decode::<DeploymentSpec>(what, body)
            .and_then(|spec| validate_deployment(&spec).map(|()| spec))
            .map(|spec| Reply::from_result(201, handler.create_deployment(spec))),
        Kind::StatefulSet => decode::<StatefulSetSpec>(what, body)
            .and_then(|spec| validate_statefulset(&spec).map(|()| spec))
            .map(|spec| Reply::from_result(201, handler.create_statefulset(spec))),
        Kind::Service => decode::<ServiceSpec>(what, body)
            .and_then(|spec| validate_service(&spec).map(|()| spec))
            .map(|spec| Reply::from_result(201, handler.create_service(spec))),
    };
    result.unwrap_or_else(|e| Reply::error(&e))
}

fn labels_ok(labels: &Labels) -> Result<(), ApiError> {
    validate_labels(labels).map_err(|e| ApiError::bad_request(e.message()))
}

fn command_ok(kind: &str, command: &[String]) -> Result<(), ApiError> {
    match command.first() {
        None => Err(ApiError::bad_request(format!(
            "a {kind} needs a command: give the program and its arguments after `--`"
        ))),
        Some(program) if program.is_empty() => Err(ApiError::bad_request(format!(
            "the {kind}'s command starts with an empty program name"
        ))),
        Some(_) => Ok(()),
    }
}

fn validate_pod(spec: &PodSpec) -> Result<(), ApiError> {
    name_ok("pod", &spec.name)?;
    labels_ok(&spec.labels)?;
    match &spec.netns {
        Some(path) if !path.starts_with('/') => Err(ApiError::bad_request(format!(
            "netns {path:?} is not an absolute path; give the namespace file, e.g. \
             /var/run/netns/NAME or /proc/PID/ns/net"
        ))),
        Some(_) if spec.command.is_empty() => Ok(()),
        _ => command_ok("pod", &spec.command),
    }
}

/// Deployment pods are `NAME-xxxxx`, and every pod name must be a DNS label.
const DEPLOYMENT_SUFFIX: usize = 6;

fn validate_deployment(spec: &DeploymentSpec) -> Result<(), ApiError> {
    name_ok("deployment", &spec.name)?;
    if spec.name.len() + DEPLOYMENT_SUFFIX > MAX_NAME_LEN {
        return Err(ApiError::bad_request(format!(
            "deployment name {:?} is too long: its pods are named NAME-xxxxx, which must fit \
             in {MAX_NAME_LEN} characters, so use at most {} characters",
            spec.name,
            MAX_NAME_LEN - DEPLOYMENT_SUFFIX
        )));
    }
    labels_ok(&spec.labels)?;
    command_ok("deployment", &spec.command)
}

/// StatefulSet pods are `NAME-0` .. `NAME-(replicas-1)`; the longest must be a DNS label.
fn statefulset_names_fit(name: &str, replicas: u32) -> Result<(), ApiError> {
    let last = replicas.saturating_sub(1).to_string();
    if name.len() + 1 + last.len() > MAX_NAME_LEN {
        return Err(ApiError::bad_request(format!(
            "statefulset name {name:?} is too long for {replicas} replicas: pod {name}-{last} \
             would be longer than {MAX_NAME_LEN} characters; use a shorter name"
        )));
    }
    Ok(())
}

fn validate_statefulset(spec: &StatefulSetSpec) -> Result<(), ApiError> {
    name_ok("statefulset", &spec.name)?;
    statefulset_names_fit(&spec.name, spec.replicas)?;
    name_ok("service", &spec.service)?;
    labels_ok(&spec.labels)?;
    command_ok("statefulset", &spec.command)
}

fn validate_service(spec: &ServiceSpec) -> Result<(), ApiError> {
    name_ok("service", &spec.name)?;
    labels_ok(&spec.selector)?;
    if spec.ports.is_empty() {
        return Err(ApiError::bad_request(
            "a service needs at least one port, e.g. --port 80:8080/tcp",
        ));
    }
    for (i, port) in spec.ports.iter().enumerate() {
        if port.port == 0 || port.target_port == 0 {
            return Err(ApiError::bad_request(format!(
                "service port {port}: ports must be 1-65535"
            )));
        }
        if let Some(name) = &port.name {
            name_ok("port", name)?;
        }
        for other in &spec.ports[..i] {
            if other.port == port.port && other.protocol == port.protocol {
                return Err(ApiError::bad_request(format!(
                    "service port {}/{} is given twice",
                    port.port, port.protocol
                )));
            }
            if port.name.is_some() && other.name == port.name {
                return Err(ApiError::bad_request(format!(
                    "service port name {:?} is given twice",
                    port.name.as_deref().unwrap_or_default()
                )));
            }
        }
    }
    if let Some(ip) = &spec.cluster_ip {
        if ip.parse::<IpAddr>().is_err() {
            return Err(ApiError::bad_request(format!(
                "clusterIP {ip:?} is not an IP address; give one inside the service CIDR, \
                 e.g. 10.96.0.10, or leave it out to get one assigned"
            )));
        }
    }
    Ok(())
}
