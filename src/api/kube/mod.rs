//! The Kubernetes API, served over HTTPS by podnetd, so that kubectl and
//! client libraries work against it unchanged.
//!
//! | module | owns |
//! |---|---|
//! | [`body`] | request bodies, read up to [`MAX_BODY`] (413 beyond) |
//! | [`apply`] | `podnet apply -f`: manifests to server-side apply requests |
//! | [`discovery`] | `/api`, `/apis`, resource lists, `/version`, OpenAPI v3 |
//! | [`logs`] | `pods/NAME/log`: a container's output, tailed, by time, with timestamps, followed |
//! | [`exec`], [`exec_spdy`] | `pods/NAME/exec` over a WebSocket and over SPDY/3.1 |
//! | [`portforward`], [`spdy`] | `pods/NAME/portforward`; the SPDY/3.1 framing both use |
//! | [`table`] | `Table` answers for `kubectl get` |
//! | [`status`] | `Status` error bodies |
//! | [`protobuf`] | Kubernetes protobuf request bodies (`kubectl create KIND`) decoded to JSON |
//! | [`patch`] | JSON merge, JSON and strategic merge patches; server-side apply |
//! | [`watch`] | `?watch=true` streams |
//! | [`server`] | TLS, HTTP/1.1 and HTTP/2 (hyper), authentication, limits |
//!
//! Every request goes through [`KubeApi::handle`]; the object rules live
//! in [`crate::control::objects`], so this layer only parses requests and
//! shapes answers.
//!
//! Server-side apply (`application/apply-patch+yaml`) is a whole-object
//! upsert: the applied configuration is created, or merged (as a JSON
//! merge patch) into the live object. Field ownership (`managedFields`)
//! and conflicts between managers are not tracked.

pub mod apply;
pub mod body;
pub mod discovery;
pub mod exec;
pub mod exec_spdy;
pub mod logs;
pub mod patch;
pub mod portforward;
pub mod protobuf;
pub mod server;
pub mod spdy;
pub mod status;
pub mod strategic_merge;
pub mod table;
pub mod watch;

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::SystemTime;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};

use crate::control::kinds::{self, Kind};
use crate::control::objects::{
    DeleteOptions, FieldSelector, FieldValidation, LabelSelector, ObjectError, Objects,
    Propagation, WriteOptions,
};
use table::IncludeObject;

/// The body of every answer: whole, or streamed (watch).
pub type Body = BoxBody<Bytes, Infallible>;

/// Largest request body, as the Kubernetes API server allows (3 MiB).
pub const MAX_BODY: usize = 3 << 20;

/// The API over an object store.
#[derive(Clone)]
pub struct KubeApi {
    objects: Objects,
    logs: Option<std::sync::Arc<dyn logs::LogSource>>,
    exec: Option<std::sync::Arc<dyn exec::PodExec>>,
    metrics: Option<std::sync::Arc<dyn MetricsSource>>,
    node: Option<std::sync::Arc<dyn crate::api::node::NodeSource>>,
}

/// What `/metrics` shows: the node's counters in the Prometheus text format.
pub trait MetricsSource: Send + Sync {
    /// The current metrics, rendered.
    fn render(&self) -> String;
}

/// The parsed query string.
pub struct Query(HashMap<String, String>);

impl Query {
    fn parse(q: Option<&str>) -> Self {
        let mut map = HashMap::new();
        for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            map.insert(percent_decode(k), percent_decode(v));
        }
        Query(map)
    }

    /// One parameter.
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1"))
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let escaped = (b == b'%')
            .then(|| Some((hex(*bytes.get(i + 1)?)? << 4) | hex(*bytes.get(i + 2)?)?))
            .flatten();
        match (b, escaped) {
            (_, Some(decoded)) => {
                out.push(decoded);
                i += 2;
            }
            (b'+', None) => out.push(b' '),
            (b, None) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Runs `work`, a long one, so that the other tasks of the runtime thread
/// it runs on are taken over by another thread meanwhile (on a runtime of
/// one thread, such as a test's, it simply runs).
fn long_running<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

/// A JSON answer.
pub fn json_response(code: u16, body: &Value) -> Response<Body> {
    let bytes = serde_json::to_vec(body).expect("JSON values serialize");
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(bytes)).boxed())
        .expect("a valid response")
}

/// A `<Kind>List` answer written item by item: each object is serialized
/// as it comes and dropped, so a list of thousands is not held decoded and
/// as text at once. The list's `metadata` comes last, once its revision is
/// known.
struct ListBody {
    json: Vec<u8>,
    items: usize,
}

impl ListBody {
    fn new(kind: &Kind) -> Self {
        let mut json = Vec::with_capacity(16 * 1024);
        json.extend_from_slice(b"{\"kind\":");
        Self::string(&mut json, &format!("{}List", kind.kind));
        json.extend_from_slice(b",\"apiVersion\":");
        Self::string(&mut json, kind.api_version);
        json.extend_from_slice(b",\"items\":[");
        ListBody { json, items: 0 }
    }

    fn string(json: &mut Vec<u8>, s: &str) {
        serde_json::to_writer(json, s).expect("a string serializes");
    }

    fn push(&mut self, item: &Value) {
        if self.items > 0 {
            self.json.push(b',');
        }
        self.items += 1;
        serde_json::to_writer(&mut self.json, item).expect("JSON values serialize");
    }

    fn finish(mut self, revision: crate::control::store::Revision) -> Response<Body> {
        self.json
            .extend_from_slice(b"],\"metadata\":{\"resourceVersion\":\"");
        self.json.extend_from_slice(revision.to_string().as_bytes());
        self.json.extend_from_slice(b"\"}}");
        Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(self.json)).boxed())
            .expect("a valid response")
    }
}

/// A `Status` failure answer.
pub fn failure(code: u16, reason: &str, message: &str) -> Response<Body> {
    json_response(code, &status::failure(code, reason, message))
}

/// A pod subresource served over an upgraded connection.
type StreamServe = fn(
    &Objects,
    Option<&std::sync::Arc<dyn exec::PodExec>>,
    &str,
    &str,
    Request<hyper::body::Incoming>,
) -> Response<Body>;

/// A request refused before it reached the objects.
pub struct Reject {
    code: u16,
    reason: &'static str,
    message: String,
}

impl Reject {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Reject {
            code,
            reason,
            message: message.into(),
        }
    }

    fn bad(message: String) -> Self {
        Reject {
            code: 400,
            reason: "BadRequest",
            message,
        }
    }
}

impl From<Reject> for Response<Body> {
    fn from(r: Reject) -> Self {
        failure(r.code, r.reason, &r.message)
    }
}

/// Where a request points, once the path is read.
struct Target {
    kind: &'static Kind,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

enum Route {
    Json(Value),
    Resource(Target),
    NotFound,
}

fn route(path: &str) -> Route {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let (group, version, rest) = match segs.as_slice() {
        [] => {
            return Route::Json(
                json!({"paths": ["/api", "/api/v1", "/apis", "/healthz", "/livez", "/readyz", "/version", "/metrics", "/openapi/v3", "/podnet/v1"]}),
            )
        }
        ["version"] => return Route::Json(discovery::version()),
        ["api"] => return Route::Json(discovery::core_versions()),
        ["apis"] => return Route::Json(discovery::group_list()),
        ["apis", g] => return discovery::group(g).map_or(Route::NotFound, Route::Json),
        ["openapi", "v3"] => return Route::Json(discovery::openapi_v3_root()),
        ["openapi", "v3", rest @ ..] => {
            return discovery::openapi_v3_group_version(&rest.join("/"))
                .map_or(Route::NotFound, Route::Json)
        }
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Route::NotFound,
    };
    if rest.is_empty() {
        return discovery::resource_list(group, version).map_or(Route::NotFound, Route::Json);
    }
    // `namespaces/NS/PLURAL...` is a namespaced collection; `namespaces/NAME`
    // and `namespaces/NAME/status` are the Namespace itself.
    let (namespace, rest) = match rest {
        ["namespaces", ns, plural, more @ ..]
            if kinds::find(group, version, plural).is_some_and(|k| k.namespaced) =>
        {
            (Some(ns.to_string()), [&[*plural][..], more].concat())
        }
        _ => (None, rest.to_vec()),
    };
    let Some(kind) = kinds::find(group, version, rest[0]) else {
        return Route::NotFound;
    };
    // Unknown subresources (and unknown kinds under a namespace, which
    // read as one) are not found, as on an API server.
    if rest.len() > 3
        || rest
            .get(2)
            .is_some_and(|sub| !matches!(*sub, "status" | "scale" | "log" | "exec" | "portforward"))
    {
        return Route::NotFound;
    }
    Route::Resource(Target {
        kind,
        namespace,
        name: rest.get(1).map(|s| s.to_string()),
        subresource: rest.get(2).map(|s| s.to_string()),
    })
}

fn wants_table(req: &Request<hyper::body::Incoming>) -> bool {
    req.headers()
        .get("accept")
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| {
            a.split(',')
                .next()
                .is_some_and(|first| first.contains("as=Table"))
        })
}

fn write_options(q: &Query) -> Result<WriteOptions, Reject> {
    let field_validation = match q.get("fieldValidation") {
        None | Some("") | Some("Warn") => FieldValidation::Warn,
        Some("Strict") => FieldValidation::Strict,
        Some("Ignore") => FieldValidation::Ignore,
        Some(other) => {
            return Err(Reject::new(
                400,
                "BadRequest",
                format!("fieldValidation {other:?} is not one of Ignore, Warn, Strict"),
            ))
        }
    };
    let dry_run = match q.get("dryRun") {
        None | Some("") => false,
        Some("All") => true,
        Some(other) => {
            return Err(Reject::new(
                400,
                "BadRequest",
                format!("dryRun {other:?} is not supported, only All"),
            ))
        }
    };
    Ok(WriteOptions {
        dry_run,
        field_validation,
    })
}

impl KubeApi {
    /// The API over `objects`.
    pub fn new(objects: Objects) -> Self {
        Self {
            objects,
            logs: None,
            exec: None,
            metrics: None,
            node: None,
        }
    }

    /// Serves podnet's node views (`/podnet/v1/...`) from `source`.
    pub fn with_node(mut self, source: std::sync::Arc<dyn crate::api::node::NodeSource>) -> Self {
        self.node = Some(source);
        self
    }

    /// Serves `/metrics` from `source`.
    pub fn with_metrics(mut self, source: std::sync::Arc<dyn MetricsSource>) -> Self {
        self.metrics = Some(source);
        self
    }

    /// Serves `pods/NAME/log` from `source`.
    pub fn with_logs(mut self, source: std::sync::Arc<dyn logs::LogSource>) -> Self {
        self.logs = Some(source);
        self
    }

    /// Runs `pods/NAME/exec` requests with `runner`.
    pub fn with_exec(mut self, runner: std::sync::Arc<dyn exec::PodExec>) -> Self {
        self.exec = Some(runner);
        self
    }

    /// The object store.
    pub fn objects(&self) -> &Objects {
        &self.objects
    }

    fn error(&self, kind: &Kind, e: &ObjectError) -> Response<Body> {
        json_response(e.code(), &status::from_error(e, kind.group, kind.kind))
    }

    /// `/podnet/v1/...`: the node's NAT table, flows, counters and reset.
    async fn node_view(&self, req: &Request<hyper::body::Incoming>, path: &str) -> Response<Body> {
        use crate::api::node::{
            FlowQuery, CONNTRACK_PATH, EXPLAIN_PATH, NAT_PATH, RESET_PATH, STATS_PATH,
        };
        let Some(node) = self.node.clone() else {
            return failure(404, "NotFound", "this server has no node views");
        };
        let method = req.method();
        let want = match path {
            NAT_PATH | CONNTRACK_PATH | STATS_PATH | EXPLAIN_PATH => Method::GET,
            RESET_PATH => Method::POST,
            _ => {
                return failure(
                    404,
                    "NotFound",
                    "the server could not find the requested resource (podnet serves /podnet/v1/nat, conntrack, stats, explain and reset)",
                )
            }
        };
        if method != want {
            return failure(
                405,
                "MethodNotAllowed",
                &format!("{path} takes {want} only"),
            );
        }
        let query = if path == EXPLAIN_PATH {
            match FlowQuery::from_query_string(req.uri().query().unwrap_or("")) {
                Ok(q) => Some(q),
                Err(e) => return failure(400, "BadRequest", &e.to_string()),
            }
        } else {
            None
        };
        let path = path.to_string();
        // Listing flows or removing every pod can take a while: off the
        // reactor.
        let answer = tokio::task::spawn_blocking(move || match path.as_str() {
            NAT_PATH => serde_json::to_value(node.nat_rules()),
            CONNTRACK_PATH => serde_json::to_value(node.conntrack()),
            STATS_PATH => serde_json::to_value(node.stats()),
            EXPLAIN_PATH => match &query {
                Some(q) => serde_json::to_value(node.explain(q)),
                None => serde_json::to_value(()),
            },
            _ => serde_json::to_value(node.reset()),
        })
        .await;
        match answer {
            Ok(Ok(v)) => json_response(200, &v),
            _ => failure(
                500,
                "InternalError",
                "the node view failed; see the daemon's log",
            ),
        }
    }

    /// Answers one request (already authenticated).
    pub async fn handle(&self, req: Request<hyper::body::Incoming>) -> Response<Body> {
        let path = req.uri().path().to_string();
        let query = Query::parse(req.uri().query());
        match path.as_str() {
            "/healthz" | "/livez" | "/readyz" => {
                return Response::builder()
                    .header("content-type", "text/plain")
                    .body(Full::new(Bytes::from_static(b"ok")).boxed())
                    .expect("a valid response")
            }
            "/metrics" => {
                let Some(m) = &self.metrics else {
                    return failure(404, "NotFound", "this server has no metrics");
                };
                return Response::builder()
                    .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
                    .body(Full::new(Bytes::from(m.render())).boxed())
                    .expect("a valid response");
            }
            p if p.starts_with("/podnet/") => return self.node_view(&req, p).await,
            _ => {}
        }
        let target = match route(&path) {
            Route::Json(v) if req.method() == Method::GET => return json_response(200, &v),
            Route::Json(_) => return failure(405, "MethodNotAllowed", "only GET is served here"),
            Route::NotFound => {
                return failure(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                )
            }
            Route::Resource(t) => t,
        };
        // Streams upgraded out of HTTP: exec and port-forward.
        let stream = match target.subresource.as_deref() {
            Some("exec") => Some(("exec", exec::serve as StreamServe)),
            Some("portforward") => Some(("port-forward", portforward::serve as StreamServe)),
            _ => None,
        };
        if let (true, Some((what, serve))) = (target.kind.kind == "Pod", stream) {
            return match (req.method(), target.name.as_deref()) {
                (&Method::GET | &Method::POST, Some(name)) => {
                    let name = name.to_string();
                    let ns = target.namespace.clone().unwrap_or_else(|| "default".into());
                    serve(&self.objects, self.exec.as_ref(), &ns, &name, req)
                }
                _ => failure(
                    405,
                    "MethodNotAllowed",
                    &format!("{what} takes GET or POST on a pod"),
                ),
            };
        }
        let table = wants_table(&req);
        let method = req.method().clone();
        let content_type = req
            .headers()
            .get("content-type")
            .and_then(|c| c.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        let declared = req
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|l| l.to_str().ok())
            .and_then(|l| l.parse::<u64>().ok());
        let version = req.version();
        let body = match body::read(req.into_body(), declared, version).await {
            Ok(b) => b,
            Err(refused) => return refused,
        };
        let now = SystemTime::now();
        let kind = target.kind;
        if kind.namespaced && target.namespace.is_none() && target.name.is_some() {
            return failure(404, "NotFound", "the server could not find the requested resource (a namespaced resource needs /namespaces/NS/)");
        }
        let ns = target.namespace.as_deref();
        match (
            &method,
            target.name.as_deref(),
            target.subresource.as_deref(),
        ) {
            (&Method::GET, None, _) if query.flag("watch") => {
                watch::serve(self.objects.clone(), kind, ns, &query, table)
            }
            (&Method::GET, None, _) => self.list(kind, ns, &query, table, now),
            (&Method::POST, None, _) => {
                let opts = match write_options(&query) {
                    Ok(o) => o,
                    Err(r) => return r.into(),
                };
                let obj = match parse_object(&body, &content_type, kind) {
                    Ok(v) => v,
                    Err(r) => return r.into(),
                };
                match self.objects.create(kind, ns, obj, opts, now) {
                    Ok(created) => json_response(201, &created),
                    Err(e) => self.error(kind, &e),
                }
            }
            (&Method::DELETE, None, _) => self.delete_collection(kind, ns, &query, now),
            (&Method::GET, Some(name), Some("log")) if kind.kind == "Pod" => logs::serve(
                &self.objects,
                self.logs.as_ref(),
                ns.unwrap_or("default"),
                name,
                &query,
            ),
            (&Method::GET, Some(name), None) => match self.objects.get(kind, ns, name) {
                Ok(obj) if table => json_response(
                    200,
                    &table::table(
                        kind,
                        &[obj],
                        None,
                        IncludeObject::parse(query.get("includeObject")),
                        now,
                    ),
                ),
                Ok(obj) => json_response(200, &obj),
                Err(e) => self.error(kind, &e),
            },
            (&Method::GET, Some(name), Some("status")) if kind.status => {
                match self.objects.get(kind, ns, name) {
                    Ok(obj) => json_response(200, &obj),
                    Err(e) => self.error(kind, &e),
                }
            }
            (_, Some(name), Some("scale")) if kind.scale => {
                self.scale(kind, ns, name, &method, &body, &content_type, &query)
            }
            (&Method::PUT, Some(name), sub @ (None | Some("status")))
                if sub.is_none() || kind.status =>
            {
                let opts = match write_options(&query) {
                    Ok(o) => o,
                    Err(r) => return r.into(),
                };
                let obj = match parse_object(&body, &content_type, kind) {
                    Ok(v) => v,
                    Err(r) => return r.into(),
                };
                match self.objects.update(kind, ns, name, obj, sub, opts) {
                    Ok(obj) => json_response(200, &obj),
                    Err(e) => self.error(kind, &e),
                }
            }
            (&Method::PATCH, Some(name), sub @ (None | Some("status")))
                if sub.is_none() || kind.status =>
            {
                let opts = match write_options(&query) {
                    Ok(o) => o,
                    Err(r) => return r.into(),
                };
                match patch::patch(
                    &self.objects,
                    kind,
                    ns,
                    name,
                    sub,
                    &content_type,
                    &body,
                    opts,
                    now,
                ) {
                    Ok((code, obj)) => json_response(code, &obj),
                    Err(patch::PatchFailure::Object(e)) => self.error(kind, &e),
                    Err(patch::PatchFailure::Response(code, reason, message)) => {
                        failure(code, reason, &message)
                    }
                }
            }
            (&Method::DELETE, Some(name), None) => {
                let opts = match delete_options(&query, &body) {
                    Ok(o) => o,
                    Err(r) => return r.into(),
                };
                if let Some(refused) = refuse_deletion(kind, name) {
                    return refused;
                }
                match self.objects.delete(kind, ns, name, opts, now) {
                    Ok(obj) => json_response(200, &deleted(kind, obj)),
                    Err(e) => self.error(kind, &e),
                }
            }
            _ => failure(
                405,
                "MethodNotAllowed",
                &format!("{method} is not supported on {path}"),
            ),
        }
    }

    fn selectors(kind: &Kind, query: &Query) -> Result<(LabelSelector, FieldSelector), Reject> {
        let labels = LabelSelector::parse(query.get("labelSelector").unwrap_or(""))
            .map_err(|e| Reject::bad(e.to_string()))?;
        let fields = FieldSelector::parse(query.get("fieldSelector").unwrap_or(""), kind.fields)
            .map_err(|e| Reject::bad(e.to_string()))?;
        Ok((labels, fields))
    }

    fn list(
        &self,
        kind: &Kind,
        ns: Option<&str>,
        query: &Query,
        table: bool,
        now: SystemTime,
    ) -> Response<Body> {
        let (labels, fields) = match Self::selectors(kind, query) {
            Ok(s) => s,
            Err(r) => return r.into(),
        };
        let (items, revision) = self.objects.list(kind, ns, &labels, &fields);
        if table {
            let include = IncludeObject::parse(query.get("includeObject"));
            return json_response(
                200,
                &table::table(kind, &items, Some(revision.to_string()), include, now),
            );
        }
        let mut body = ListBody::new(kind);
        for item in items {
            body.push(&item);
        }
        body.finish(revision)
    }

    fn delete_collection(
        &self,
        kind: &Kind,
        ns: Option<&str>,
        query: &Query,
        now: SystemTime,
    ) -> Response<Body> {
        if kind.kind == "Namespace" {
            // As on an API server: namespaces are deleted one by one
            // (`kubectl delete ns --all` does), never `default` and the
            // other system ones.
            return failure(
                405,
                "MethodNotAllowed",
                "namespaces cannot be deleted as a collection; delete them one by one",
            );
        }
        let (labels, fields) = match Self::selectors(kind, query) {
            Ok(s) => s,
            Err(r) => return r.into(),
        };
        let opts = match delete_options(query, &Bytes::new()) {
            Ok(o) => o,
            Err(r) => return r.into(),
        };
        // Thousands of objects may go: this runtime thread's other tasks
        // (watch streams sending the deletions as they happen) move to
        // another thread meanwhile instead of waiting for the answer.
        let mut body = ListBody::new(kind);
        match long_running(|| {
            self.objects
                .delete_collection(kind, ns, &labels, &fields, opts, now, |deleted| {
                    body.push(&deleted)
                })
        }) {
            Ok(revision) => body.finish(revision),
            Err(e) => self.error(kind, &e),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn scale(
        &self,
        kind: &Kind,
        ns: Option<&str>,
        name: &str,
        method: &Method,
        body: &Bytes,
        content_type: &str,
        query: &Query,
    ) -> Response<Body> {
        let obj = match self.objects.get(kind, ns, name) {
            Ok(o) => o,
            Err(e) => return self.error(kind, &e),
        };
        let scale = patch::scale_of(&obj);
        let wanted = match *method {
            Method::GET => return json_response(200, &scale),
            Method::PUT => match parse_body(body, content_type) {
                Ok(v) => v,
                Err(r) => return r.into(),
            },
            Method::PATCH => match patch::apply_patch_document(&scale, content_type, body) {
                Ok(v) => v,
                Err(patch::PatchFailure::Response(code, reason, message)) => {
                    return failure(code, reason, &message)
                }
                Err(patch::PatchFailure::Object(e)) => return self.error(kind, &e),
            },
            _ => return failure(405, "MethodNotAllowed", "scale takes GET, PUT and PATCH"),
        };
        let Some(replicas) = wanted.pointer("/spec/replicas").and_then(Value::as_i64) else {
            return failure(422, "Invalid", "spec.replicas: Required value");
        };
        if let Some(rv) = wanted
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
        {
            if rv
                != obj
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .unwrap_or("")
            {
                return self.error(kind, &ObjectError::Conflict { plural: kind.plural.into(), name: name.into(), message: "the object has been modified; please apply your changes to the latest version and try again".into() });
            }
        }
        let opts = match write_options(query) {
            Ok(o) => o,
            Err(r) => return r.into(),
        };
        // Without a resourceVersion from the client, a write that lost a
        // race with a reconciler (a status update) is made again on the
        // object as it is now, as an API server's update loop does.
        // (A patch is applied to the current scale, which carries the
        // current resourceVersion: only the client's own one guards.)
        let guarded = match *method {
            Method::PATCH => serde_json::from_slice::<Value>(body)
                .ok()
                .is_some_and(|p| p.pointer("/metadata/resourceVersion").is_some()),
            _ => wanted.pointer("/metadata/resourceVersion").is_some(),
        };
        let mut obj = obj;
        for _ in 0..SCALE_RETRIES {
            let mut updated = obj.clone();
            updated["spec"]["replicas"] = replicas.into();
            match self.objects.update(kind, ns, name, updated, None, opts) {
                Ok(o) => return json_response(200, &patch::scale_of(&o)),
                Err(ObjectError::Conflict { .. }) if !guarded => {
                    obj = match self.objects.get(kind, ns, name) {
                        Ok(o) => o,
                        Err(e) => return self.error(kind, &e),
                    };
                }
                Err(e) => return self.error(kind, &e),
            }
        }
        let e = ObjectError::Conflict {
            plural: kind.plural.into(),
            name: name.into(),
            message: "the object kept changing; try again".into(),
        };
        self.error(kind, &e)
    }
}

/// How many times a scale without a resourceVersion is tried against an
/// object that other writers keep changing.
const SCALE_RETRIES: usize = 16;

/// Namespaces the API server never deletes (its NamespaceLifecycle
/// admission): everything podnetd and its users rely on lives there.
pub const IMMORTAL_NAMESPACES: [&str; 3] = ["default", "kube-system", "kube-public"];

/// The 403 a delete gets when its object may never be deleted.
fn refuse_deletion(kind: &Kind, name: &str) -> Option<Response<Body>> {
    (kind.kind == "Namespace" && IMMORTAL_NAMESPACES.contains(&name)).then(|| {
        let mut s = status::failure(
            403,
            "Forbidden",
            &format!(
                "{} \"{name}\" is forbidden: this namespace may not be deleted",
                kind.plural
            ),
        );
        s["details"] = json!({"name": name, "kind": kind.plural});
        json_response(403, &s)
    })
}

/// Kinds whose delete answers with the deleted object, as their API server
/// registries do (`ReturnDeletedObject`); the others answer a `Status`
/// naming it, unless the object is still terminating (finalizers, a pod's
/// grace period, foreground deletion), which is answered with the object.
const RETURNS_DELETED_OBJECT: [&str; 3] = ["Pod", "Service", "Namespace"];

/// The answer to a delete that returned `obj`.
fn deleted(kind: &Kind, obj: Value) -> Value {
    if obj.pointer("/metadata/deletionTimestamp").is_some()
        || RETURNS_DELETED_OBJECT.contains(&kind.kind)
    {
        return obj;
    }
    let meta = |f: &str| obj.pointer(&format!("/metadata/{f}")).cloned();
    let mut s = status::success();
    s["details"] = json!({
        "name": meta("name").unwrap_or(Value::Null),
        "group": kind.group,
        "kind": kind.plural,
        "uid": meta("uid").unwrap_or(Value::Null),
    });
    s
}

/// Reads the object of a create or update of `kind`. A body without
/// `apiVersion` or `kind` takes them from the path it was sent to, as the
/// API server's decoder does (the Python client's models leave them out
/// unless the caller sets them).
fn parse_object(body: &Bytes, content_type: &str, kind: &Kind) -> Result<Value, Reject> {
    let mut obj = parse_body(body, content_type)?;
    for (field, value) in [("apiVersion", kind.api_version), ("kind", kind.kind)] {
        if obj.get(field).is_none_or(|v| v.is_null() || v == "") {
            obj[field] = value.into();
        }
    }
    Ok(obj)
}

/// Reads a JSON, YAML or Kubernetes protobuf request body.
fn parse_body(body: &Bytes, content_type: &str) -> Result<Value, Reject> {
    if content_type == "application/vnd.kubernetes.protobuf" {
        return protobuf::decode(body).map_err(|e| match e {
            protobuf::DecodeError::Truncated { .. }
            | protobuf::DecodeError::Malformed { .. }
            | protobuf::DecodeError::BadMagic => {
                Reject::bad(format!("the protobuf body could not be decoded: {e}"))
            }
            e => Reject::new(415, "UnsupportedMediaType", e.to_string()),
        });
    }
    // As the API server: a body without a type is JSON (the Python client
    // sends its creates so); one of any other type (a form, plain text) is
    // refused, not guessed at.
    let yaml = match content_type {
        "" | "application/json" => false,
        "application/yaml" => true,
        other => {
            return Err(Reject::new(
                415,
                "UnsupportedMediaType",
                format!("the body of the request was in an unknown format ({other:?}) - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf"),
            ))
        }
    };
    let parsed: Result<Value, String> = if yaml {
        std::str::from_utf8(body)
            .map_err(|e| e.to_string())
            .and_then(|s| serde_saphyr::from_str(s).map_err(|e| e.to_string()))
    } else {
        serde_json::from_slice(body).map_err(|e| e.to_string())
    };
    match parsed {
        Ok(v) if v.is_object() => Ok(v),
        Ok(_) => Err(Reject::new(
            400,
            "BadRequest",
            "the request body is not an object",
        )),
        Err(e) => Err(Reject::new(
            400,
            "BadRequest",
            format!("the request body could not be decoded: {e}"),
        )),
    }
}

fn delete_options(query: &Query, body: &Bytes) -> Result<DeleteOptions, Reject> {
    let body: Value = if body.iter().all(|b| b.is_ascii_whitespace()) {
        json!({})
    } else {
        serde_json::from_slice(body)
            .map_err(|e| Reject::bad(format!("DeleteOptions could not be decoded: {e}")))?
    };
    let policy = query
        .get("propagationPolicy")
        .map(str::to_string)
        .or_else(|| {
            body.get("propagationPolicy")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .or_else(|| {
            match body
                .get("orphanDependents")
                .and_then(Value::as_bool)
                .or(query.get("orphanDependents").map(|v| v == "true"))
            {
                Some(true) => Some("Orphan".into()),
                _ => None,
            }
        });
    let propagation = match policy.as_deref() {
        None | Some("Background") => Propagation::Background,
        Some("Foreground") => Propagation::Foreground,
        Some("Orphan") => Propagation::Orphan,
        Some(other) => {
            return Err(Reject::new(
                400,
                "BadRequest",
                format!("propagationPolicy {other:?} is not one of Background, Foreground, Orphan"),
            ))
        }
    };
    let grace = query
        .get("gracePeriodSeconds")
        .and_then(|g| g.parse().ok())
        .or_else(|| body.get("gracePeriodSeconds").and_then(Value::as_i64));
    let dry_run = query.get("dryRun") == Some("All")
        || body
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|d| d.iter().any(|x| x == "All"));
    let precondition_revision = body
        .pointer("/preconditions/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|rv| rv.parse().ok());
    Ok(DeleteOptions {
        dry_run,
        grace_period_seconds: grace,
        propagation,
        precondition_revision,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let t = |p: &str| match route(p) {
            Route::Resource(t) => (t.kind.kind, t.namespace, t.name, t.subresource),
            _ => panic!("{p} not a resource"),
        };
        assert_eq!(t("/api/v1/pods"), ("Pod", None, None, None));
        assert_eq!(
            t("/api/v1/namespaces/default/pods/web/status"),
            (
                "Pod",
                Some("default".into()),
                Some("web".into()),
                Some("status".into())
            )
        );
        assert_eq!(
            t("/api/v1/namespaces/kube-system"),
            ("Namespace", None, Some("kube-system".into()), None)
        );
        assert_eq!(
            t("/api/v1/namespaces/x/status"),
            ("Namespace", None, Some("x".into()), Some("status".into()))
        );
        assert_eq!(
            t("/apis/apps/v1/namespaces/d/deployments/web/scale"),
            (
                "Deployment",
                Some("d".into()),
                Some("web".into()),
                Some("scale".into())
            )
        );
        assert!(matches!(
            route("/apis/apps/v1/namespaces/d/widgets"),
            Route::NotFound
        ));
        assert!(matches!(route("/apis/apps/v1"), Route::Json(_)));
    }

    /// A list answer, and a collection deletion's, is one JSON document:
    /// every item (in key order), the list's kind and its revision.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn list_and_deleted_collection_answers() {
        use crate::control::objects::WriteOptions;
        let objects = Objects::new(
            std::sync::Arc::new(crate::control::store::MemStore::new()),
            SystemTime::now(),
        )
        .unwrap();
        let api = KubeApi::new(objects.clone());
        let pods = kinds::of::<k8s_openapi::api::core::v1::Pod>();
        let now = SystemTime::now();
        let answer = |r: Response<Body>| async move {
            assert_eq!(r.status(), StatusCode::OK);
            let bytes = r.into_body().collect().await.unwrap().to_bytes();
            serde_json::from_slice::<Value>(&bytes).expect("one JSON document")
        };
        let names = |list: &Value| -> Vec<String> {
            list["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
                .collect()
        };
        let empty = answer(api.list(pods, Some("default"), &Query::parse(None), false, now)).await;
        assert_eq!(empty["kind"], "PodList");
        assert_eq!(empty["items"], json!([]));
        for (name, app) in [("a", "web"), ("b", "db"), ("c", "web")] {
            let pod = json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "labels": {"app": app}},
                "spec": {"containers": [{"name": "c", "image": "x", "command": ["sleep", "1"]}]}});
            objects
                .create(pods, Some("default"), pod, WriteOptions::default(), now)
                .unwrap();
        }
        let revision = objects.kv().revision().to_string();
        let listed = answer(api.list(pods, Some("default"), &Query::parse(None), false, now)).await;
        assert_eq!(listed["apiVersion"], "v1");
        assert_eq!(listed["metadata"]["resourceVersion"], revision.as_str());
        assert_eq!(names(&listed), ["a", "b", "c"]);
        let query = Query::parse(Some("labelSelector=app%3Dweb"));
        let deleted = answer(api.delete_collection(pods, Some("default"), &query, now)).await;
        assert_eq!(deleted["kind"], "PodList");
        assert_eq!(deleted["metadata"]["resourceVersion"], revision.as_str());
        assert_eq!(names(&deleted), ["a", "c"]);
        // Unscheduled pods go at once: only the other one is left.
        let left = answer(api.list(pods, Some("default"), &Query::parse(None), false, now)).await;
        assert_eq!(names(&left), ["b"]);
        let none = answer(api.delete_collection(pods, Some("default"), &query, now)).await;
        assert_eq!(none["items"], json!([]));
    }

    #[test]
    fn query_decoding() {
        let q = Query::parse(Some("labelSelector=app%3Dweb%2Ctier+in+%28a%29&watch=1"));
        assert_eq!(q.get("labelSelector"), Some("app=web,tier in (a)"));
        assert!(q.flag("watch"));
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
