//! Health checks of `externalTrafficPolicy: Local` services, as kube-proxy
//! serves them: on a LoadBalancer service's `spec.healthCheckNodePort`, on
//! every node address, any HTTP request gets
//! `{"service":{"namespace":..,"name":..},"localEndpoints":N,"serviceProxyHealthy":true}`,
//! with 200 when this node has a ready endpoint of the service and 503 when
//! it has none, so an outside load balancer sends traffic only to nodes
//! that can serve it without a hop.
//!
//! A reconciler keyed by Service (under its own tag) follows Services and
//! their EndpointSlices, keeps each such service's count of ready local
//! endpoints, and opens or closes its port; one thread with a small tokio
//! runtime serves every port.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::control::objects::{LabelSelector, ObjectError, Objects};
use crate::control::reconcile::endpoints::SERVICE_NAME_LABEL;
use crate::control::reconcile::{event_kind, meta_str, Key, Next, Reconciler};
use crate::control::store::Event;

const TAG: &str = "HealthCheckNodePort";

/// How long a client has to send its request head.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What one port answers.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Health {
    namespace: String,
    name: String,
    local_endpoints: usize,
}

impl Health {
    /// The status line's code and the JSON body kube-proxy sends.
    fn answer(&self) -> (u16, String) {
        let body = serde_json::json!({
            "service": {"namespace": self.namespace, "name": self.name},
            "localEndpoints": self.local_endpoints,
            "serviceProxyHealthy": true,
        });
        let code = if self.local_endpoints > 0 { 200 } else { 503 };
        (code, body.to_string())
    }
}

type Table = Arc<Mutex<HashMap<u16, Health>>>;

enum Command {
    Open(u16),
    Close(u16),
}

/// Serves the health-check node ports of the node's Local services.
pub struct HealthChecks {
    node: String,
    table: Table,
    /// Which port each service holds.
    ports: Mutex<HashMap<(String, String), u16>>,
    commands: mpsc::UnboundedSender<Command>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HealthChecks {
    /// Starts the serving thread for the node `node` (endpoints whose
    /// `nodeName` is another node's do not count).
    pub fn start(node: String) -> std::io::Result<HealthChecks> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let table: Table = Arc::default();
        let (commands, mut rx) = mpsc::unbounded_channel::<Command>();
        let t = table.clone();
        let thread = std::thread::Builder::new()
            .name("podnet-health".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let mut listeners: HashMap<u16, tokio::task::JoinHandle<()>> = HashMap::new();
                    while let Some(cmd) = rx.recv().await {
                        match cmd {
                            Command::Open(port) => {
                                if listeners.contains_key(&port) {
                                    continue;
                                }
                                let addr = SocketAddr::from(([0, 0, 0, 0], port));
                                match tokio::net::TcpListener::bind(addr).await {
                                    Ok(l) => {
                                        listeners.insert(port, tokio::spawn(serve(l, port, t.clone())));
                                    }
                                    Err(e) => tracing::warn!(
                                        "cannot serve the health check of a Local service on port {port}: {e}; load balancers will see this node as down"
                                    ),
                                }
                            }
                            Command::Close(port) => {
                                if let Some(h) = listeners.remove(&port) {
                                    h.abort();
                                }
                            }
                        }
                    }
                    for (_, h) in listeners {
                        h.abort();
                    }
                });
            })?;
        Ok(HealthChecks {
            node,
            table,
            ports: Mutex::default(),
            commands,
            thread: Some(thread),
        })
    }

    fn close(&self, key: &(String, String)) {
        if let Some(port) = self.ports.lock().remove(key) {
            self.table.lock().remove(&port);
            let _ = self.commands.send(Command::Close(port));
        }
    }

    /// Ready endpoints of the service on this node.
    fn local_endpoints(&self, objects: &Objects, ns: &str, name: &str) -> usize {
        let Ok(sel) = LabelSelector::parse(&format!("{SERVICE_NAME_LABEL}={name}")) else {
            return 0;
        };
        objects
            .list_as::<EndpointSlice>(Some(ns), &sel)
            .iter()
            .flat_map(|s| s.endpoints.iter().flatten())
            .filter(|e| e.node_name.as_deref().is_none_or(|n| n == self.node))
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
            .map(|e| e.addresses.len().min(1))
            .sum()
    }
}

impl Drop for HealthChecks {
    fn drop(&mut self) {
        // Closing the channel ends the loop, which aborts the listeners.
        let (dead, _) = mpsc::unbounded_channel();
        self.commands = dead;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Answers every connection on `listener` from the table's entry for `port`.
async fn serve(listener: tokio::net::TcpListener, port: u16, table: Table) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        let table = table.clone();
        tokio::spawn(async move {
            let mut head = Vec::with_capacity(512);
            let mut buf = [0u8; 512];
            let read = tokio::time::timeout(REQUEST_TIMEOUT, async {
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                true
            })
            .await;
            if read != Ok(true) {
                return;
            }
            let health = table.lock().get(&port).cloned();
            let (code, body) = match health {
                Some(h) => h.answer(),
                None => (503, "{}".to_string()),
            };
            let reason = if code == 200 {
                "OK"
            } else {
                "Service Unavailable"
            };
            let response = format!(
                "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nX-Content-Type-Options: nosniff\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(response.as_bytes()).await;
            let _ = conn.shutdown().await;
        });
    }
}

/// The health-check port a service asks for: a LoadBalancer keeping
/// client addresses (`externalTrafficPolicy: Local`).
fn health_check_port(svc: &Service) -> Option<u16> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() != Some("LoadBalancer")
        || spec.external_traffic_policy.as_deref() != Some("Local")
    {
        return None;
    }
    u16::try_from(spec.health_check_node_port?).ok()
}

impl Reconciler for HealthChecks {
    fn kind(&self) -> &'static str {
        TAG
    }

    fn keys_for(&self, _objects: &Objects, event: &Event) -> Vec<Key> {
        let key = |ns: &str, name: &str| Key {
            kind: TAG,
            namespace: ns.into(),
            name: name.into(),
        };
        match event_kind(event) {
            Some(("Service", obj)) => {
                vec![key(meta_str(obj, "namespace"), meta_str(obj, "name"))]
            }
            Some(("EndpointSlice", obj)) => obj
                .pointer("/metadata/labels")
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
                .and_then(Value::as_str)
                .map(|svc| key(meta_str(obj, "namespace"), svc))
                .into_iter()
                .collect(),
            _ => Vec::new(),
        }
    }

    fn initial_keys(&self, objects: &Objects) -> Vec<Key> {
        objects
            .list_as::<Service>(None, &LabelSelector::default())
            .iter()
            .filter(|s| health_check_port(s).is_some())
            .map(|s| Key {
                kind: TAG,
                namespace: s.metadata.namespace.clone().unwrap_or_default(),
                name: s.metadata.name.clone().unwrap_or_default(),
            })
            .collect()
    }

    fn reconcile(
        &self,
        objects: &Objects,
        key: &Key,
        _now: SystemTime,
    ) -> Result<Next, ObjectError> {
        let id = (key.namespace.clone(), key.name.clone());
        let port = match objects.get_as::<Service>(Some(&key.namespace), &key.name) {
            Ok(svc) => health_check_port(&svc),
            Err(ObjectError::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        let Some(port) = port else {
            self.close(&id);
            return Ok(Next::Done);
        };
        if self.ports.lock().get(&id) != Some(&port) {
            self.close(&id);
            self.ports.lock().insert(id.clone(), port);
            let _ = self.commands.send(Command::Open(port));
        }
        let health = Health {
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            local_endpoints: self.local_endpoints(objects, &key.namespace, &key.name),
        };
        self.table.lock().insert(port, health);
        Ok(Next::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_is_kube_proxys() {
        let mut h = Health {
            namespace: "default".into(),
            name: "web".into(),
            local_endpoints: 2,
        };
        let (code, body) = h.answer();
        assert_eq!(code, 200);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"service": {"namespace": "default", "name": "web"},
                "localEndpoints": 2, "serviceProxyHealthy": true})
        );
        h.local_endpoints = 0;
        assert_eq!(h.answer().0, 503);
    }

    #[test]
    fn only_local_load_balancers_ask_for_a_health_check() {
        let svc = |ty: &str, policy: &str, port: Option<i32>| Service {
            spec: Some(k8s_openapi::api::core::v1::ServiceSpec {
                type_: Some(ty.into()),
                external_traffic_policy: Some(policy.into()),
                health_check_node_port: port,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            health_check_port(&svc("LoadBalancer", "Local", Some(31000))),
            Some(31000)
        );
        assert_eq!(
            health_check_port(&svc("LoadBalancer", "Cluster", Some(31000))),
            None
        );
        assert_eq!(
            health_check_port(&svc("NodePort", "Local", Some(31000))),
            None
        );
        assert_eq!(health_check_port(&svc("LoadBalancer", "Local", None)), None);
    }
}
