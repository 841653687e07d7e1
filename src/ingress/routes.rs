//! The route table: every served Ingress's rules merged into one lookup
//! from (host, path) to a backend, built from the objects (sans-IO: no
//! store, no clock, no sockets), so it is tested exhaustively without root.
//!
//! Matching, as the Ingress specification says it:
//!
//! * **Host.** An exact host first (`foo.bar.com`), then a wildcard
//!   (`*.bar.com` matches `foo.bar.com`, one label only: not `bar.com`,
//!   not `a.foo.bar.com`), then the rules without a host. The first group
//!   that has the host decides: a path it does not match goes to the
//!   default backend, not to a less specific group (what ingress-nginx does
//!   with its server blocks). Hosts compare case-insensitively, without a
//!   port or a trailing dot.
//! * **Path.** `Exact` matches the path exactly (case-sensitive); `Prefix`
//!   matches element by element on `/` (`/foo` matches `/foo`, `/foo/` and
//!   `/foo/bar`, never `/foobar`; a trailing `/` of the rule's path is
//!   ignored); `ImplementationSpecific` is treated as `Prefix`. The longest
//!   path wins; on a tie `Exact` wins over `Prefix`; then the oldest
//!   Ingress (creation time, then namespace/name), then rule order.
//! * **Default backend.** `spec.defaultBackend` of the oldest served Ingress
//!   that has one; without it an unmatched request is a 404.
//!
//! A backend resolves, when the table is built, to the service's cluster
//! IP and port (the fast path then load-balances the connection), to the
//! ready endpoints of a headless service, or to why it is unavailable (a
//! 503: no such service or port, no ready endpoint).

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};

use crate::control::reconcile::endpoints::SERVICE_NAME_LABEL;

/// Where a request for a backend goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The service's cluster IP and port: podnet's fast path picks the pod.
    ClusterIp(SocketAddr),
    /// A headless service's ready endpoints (pod address, target port).
    Endpoints(Vec<SocketAddr>),
    /// Nothing to connect to (answered with a 503 at once); the reason.
    Unavailable(String),
}

/// A backend of a route: the service it names and where that leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// `namespace/service:port`, for the access log and error pages.
    pub name: String,
    /// Where to connect.
    pub target: Target,
}

/// How a rule's path matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PathMatch {
    /// The whole path, exactly.
    Exact,
    /// Element-wise prefix (`Prefix` and `ImplementationSpecific`).
    Prefix,
}

#[derive(Debug, Clone)]
struct PathRule {
    /// Exact: the path; Prefix: its elements.
    path: String,
    elements: Vec<String>,
    how: PathMatch,
    /// The length that decides "longest" (Prefix: without a trailing `/`).
    len: usize,
    backend: Arc<Backend>,
}

impl PathRule {
    fn matches(&self, path: &str) -> bool {
        match self.how {
            PathMatch::Exact => path == self.path,
            PathMatch::Prefix => {
                let mut request = path.split('/').filter(|e| !e.is_empty());
                self.elements
                    .iter()
                    .all(|e| request.next() == Some(e.as_str()))
            }
        }
    }
}

/// Every served Ingress's rules, merged; swapped in whole on a change.
#[derive(Debug, Default)]
pub struct RouteTable {
    exact: HashMap<String, Vec<PathRule>>,
    /// By the part after `*.`.
    wildcard: HashMap<String, Vec<PathRule>>,
    any_host: Vec<PathRule>,
    default_backend: Option<Arc<Backend>>,
}

/// A host as matched: lower case, no port, no trailing dot.
pub fn normalize_host(host: &str) -> String {
    host_key(host).into_owned()
}

/// [`normalize_host`], borrowed when the host is lower case already (as
/// nearly every request's is).
fn host_key(host: &str) -> Cow<'_, str> {
    let h = host.trim();
    // `[::1]:80`, `host:80`; a bare IPv6 address has several colons.
    let h = if let Some(rest) = h.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else if h.matches(':').count() == 1 {
        h.split(':').next().unwrap_or("")
    } else {
        h
    };
    let h = h.trim_end_matches('.');
    if h.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(h.to_ascii_lowercase())
    } else {
        Cow::Borrowed(h)
    }
}

impl RouteTable {
    /// The table for `ingresses` (those podnet serves), resolving backends
    /// against `services` and their `slices`.
    pub fn build(ingresses: &[Ingress], services: &[Service], slices: &[EndpointSlice]) -> Self {
        let mut ordered: Vec<&Ingress> = ingresses.iter().collect();
        ordered.sort_by_key(|i| age_key(i));
        let world = World::new(services, slices);
        let mut table = RouteTable::default();
        for ing in ordered {
            let ns = ing.metadata.namespace.clone().unwrap_or_default();
            let Some(spec) = &ing.spec else { continue };
            if table.default_backend.is_none() {
                if let Some(b) = &spec.default_backend {
                    table.default_backend = Some(Arc::new(world.resolve(&ns, b)));
                }
            }
            for rule in spec.rules.iter().flatten() {
                let host = normalize_host(rule.host.as_deref().unwrap_or(""));
                let group = if host.is_empty() {
                    &mut table.any_host
                } else if let Some(suffix) = host.strip_prefix("*.") {
                    table.wildcard.entry(suffix.to_string()).or_default()
                } else {
                    table.exact.entry(host).or_default()
                };
                for p in rule.http.iter().flat_map(|h| h.paths.iter()) {
                    let path = p.path.clone().unwrap_or_default();
                    let how = if p.path_type == "Exact" {
                        PathMatch::Exact
                    } else {
                        PathMatch::Prefix
                    };
                    let elements: Vec<String> = path
                        .split('/')
                        .filter(|e| !e.is_empty())
                        .map(str::to_string)
                        .collect();
                    let len = match how {
                        PathMatch::Exact => path.len(),
                        PathMatch::Prefix => path.trim_end_matches('/').len(),
                    };
                    group.push(PathRule {
                        path,
                        elements,
                        how,
                        len,
                        backend: Arc::new(world.resolve(&ns, &p.backend)),
                    });
                }
            }
        }
        // Longest first, Exact before Prefix; the sort is stable, so the
        // older Ingress and the earlier rule stay first among equals.
        let order = |g: &mut Vec<PathRule>| g.sort_by_key(|r| (std::cmp::Reverse(r.len), r.how));
        table.exact.values_mut().for_each(order);
        table.wildcard.values_mut().for_each(order);
        order(&mut table.any_host);
        table
    }

    /// The backend for a request to `host` (as sent: port and case do not
    /// matter) and `path` (without the query); `None`: a 404.
    pub fn route(&self, host: &str, path: &str) -> Option<&Arc<Backend>> {
        let host = host_key(host);
        let group = self
            .exact
            .get(host.as_ref())
            .or_else(|| {
                let (first, rest) = host.split_once('.')?;
                (!first.is_empty())
                    .then(|| self.wildcard.get(rest))
                    .flatten()
            })
            .unwrap_or(&self.any_host);
        group
            .iter()
            .find(|r| r.matches(path))
            .map(|r| &r.backend)
            .or(self.default_backend.as_ref())
    }

    /// Whether nothing is routed (no rules, no default backend).
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty()
            && self.wildcard.is_empty()
            && self.any_host.is_empty()
            && self.default_backend.is_none()
    }
}

/// Oldest first: creation time, then namespace and name.
pub(crate) fn age_key(i: &Ingress) -> (i64, String, String) {
    (
        i.metadata
            .creation_timestamp
            .as_ref()
            .map_or(i64::MAX, |t| t.0.as_second()),
        i.metadata.namespace.clone().unwrap_or_default(),
        i.metadata.name.clone().unwrap_or_default(),
    )
}

/// Services and slices by (namespace, name), for resolving backends.
struct World<'a> {
    services: HashMap<(&'a str, &'a str), &'a Service>,
    slices: HashMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>,
}

impl<'a> World<'a> {
    fn new(services: &'a [Service], slices: &'a [EndpointSlice]) -> Self {
        let key = |m: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            (
                m.namespace.as_deref().unwrap_or(""),
                m.name.as_deref().unwrap_or(""),
            )
        };
        let mut by_service: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
        for s in slices {
            if let Some(svc) = s
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
            {
                by_service
                    .entry((s.metadata.namespace.as_deref().unwrap_or(""), svc.as_str()))
                    .or_default()
                    .push(s);
            }
        }
        World {
            services: services.iter().map(|s| (key(&s.metadata), s)).collect(),
            slices: by_service,
        }
    }

    fn resolve(&self, ns: &str, backend: &IngressBackend) -> Backend {
        let Some(sb) = &backend.service else {
            let what = backend
                .resource
                .as_ref()
                .map_or("-".to_string(), |r| format!("{}/{}", r.kind, r.name));
            return Backend {
                name: format!("{ns}/{what}"),
                target: Target::Unavailable(format!(
                    "resource backend {what}: podnet's ingress serves service backends only"
                )),
            };
        };
        let port = sb.port.clone().unwrap_or_default();
        let port_text = match (&port.name, port.number) {
            (Some(n), _) if !n.is_empty() => n.clone(),
            (_, Some(n)) => n.to_string(),
            _ => "?".into(),
        };
        let name = format!("{ns}/{}:{port_text}", sb.name);
        let unavailable = |why: String| Backend {
            name: name.clone(),
            target: Target::Unavailable(why),
        };
        let Some(svc) = self.services.get(&(ns, sb.name.as_str())) else {
            return unavailable(format!("service {ns}/{} not found", sb.name));
        };
        let spec = svc.spec.clone().unwrap_or_default();
        let Some(sp) = spec.ports.iter().flatten().find(|p| match &port.name {
            Some(n) if !n.is_empty() => p.name.as_deref() == Some(n.as_str()),
            _ => Some(p.port) == port.number,
        }) else {
            return unavailable(format!("service {ns}/{} has no port {port_text}", sb.name));
        };
        // Ready endpoints of this port (terminating but serving ones count
        // when nothing is ready, as the fast path does).
        let port_name = sp.name.clone().unwrap_or_default();
        let mut ready = Vec::new();
        let mut serving = Vec::new();
        for slice in self
            .slices
            .get(&(ns, sb.name.as_str()))
            .into_iter()
            .flatten()
        {
            let Some(target_port) = slice
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.clone().unwrap_or_default() == port_name)
                .and_then(|p| p.port)
            else {
                continue;
            };
            for e in slice.endpoints.iter().flatten() {
                let c = e.conditions.clone().unwrap_or_default();
                let is_ready = c.ready.unwrap_or(true);
                let is_serving = c.serving.unwrap_or(is_ready) && c.terminating.unwrap_or(false);
                for a in &e.addresses {
                    if let Ok(ip) = a.parse::<IpAddr>() {
                        let addr = SocketAddr::new(ip, target_port as u16);
                        if is_ready {
                            ready.push(addr);
                        } else if is_serving {
                            serving.push(addr);
                        }
                    }
                }
            }
        }
        let endpoints = if ready.is_empty() { serving } else { ready };
        if endpoints.is_empty() {
            return unavailable(format!("service {ns}/{} has no ready endpoints", sb.name));
        }
        let target = match spec.cluster_ip.as_deref() {
            Some("None") | None | Some("") => {
                let mut e = endpoints;
                e.sort();
                e.dedup();
                Target::Endpoints(e)
            }
            Some(ip) => match ip.parse::<IpAddr>() {
                Ok(ip) => Target::ClusterIp(SocketAddr::new(ip, sp.port as u16)),
                Err(_) => Target::Unavailable(format!(
                    "service {ns}/{} has no usable cluster IP ({ip})",
                    sb.name
                )),
            },
        };
        Backend { name, target }
    }
}

#[cfg(test)]
mod tests;
