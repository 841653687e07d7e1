//! Services and Pods -> Endpoints and EndpointSlices, as the endpoints and
//! endpointslice controllers do it.
//!
//! Every pod with an IP that the service's selector picks is an endpoint:
//! `ready` while its Ready condition is true and it is not terminating,
//! `serving` while Ready is true even when terminating, `terminating` once
//! it is being deleted. The fast path sends new connections to ready
//! endpoints only and lets established ones finish on terminating ones.
//! A named `targetPort` is looked up in each pod's container ports.
//! Services without a selector are left alone (their endpoints are the
//! user's), as in Kubernetes. One EndpointSlice per service and address
//! family, owned by the service, so both go together.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::SystemTime;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use super::replica_set::pod_ready;
use super::slice_index::SliceIndex;
use super::{event_kind, key_of, meta_str, Key, Next, Reconciler};
use crate::control::kinds;
use crate::control::objects::{LabelSelector, ObjectError, Objects};
use crate::control::store::{Event, EventKind};

/// The Endpoints and EndpointSlice reconciler, keyed by Service.
///
/// It keeps the selectors of the services it has seen, so that a pod's
/// change finds the services that select the pod without decoding every
/// service (which made each pod event cost time in proportion to the
/// services that exist). The copy follows the Service events and every
/// reconcile of a service (so a watch restarted after a gap, which
/// reconciles everything, also refreshes it).
#[derive(Default)]
pub struct ServiceEndpoints {
    selectors: parking_lot::Mutex<Option<Selectors>>,
    slices: SliceIndex,
}

/// Namespace -> the selectors of its services.
type Selectors = HashMap<String, NamespaceSelectors>;

/// The (non-empty) selectors of one namespace's services, each also filed
/// under its first `key=value` pair: a service selects a pod only if the
/// pod has that pair, so a pod's labels find the services that select it
/// by looking up each of its own pairs instead of going through every
/// service (at 10,000 services that pass was most of an endpoint update's
/// time).
#[derive(Default)]
struct NamespaceSelectors {
    of_service: HashMap<String, BTreeMap<String, String>>,
    by_first_pair: HashMap<String, HashMap<String, HashSet<String>>>,
}

impl NamespaceSelectors {
    fn insert(&mut self, name: &str, selector: BTreeMap<String, String>) {
        self.remove(name);
        if let Some((k, v)) = selector.iter().next() {
            self.by_first_pair
                .entry(k.clone())
                .or_default()
                .entry(v.clone())
                .or_default()
                .insert(name.to_string());
        }
        self.of_service.insert(name.to_string(), selector);
    }

    fn remove(&mut self, name: &str) {
        let Some(old) = self.of_service.remove(name) else {
            return;
        };
        let Some((k, v)) = old.iter().next() else {
            return;
        };
        if let Some(values) = self.by_first_pair.get_mut(k) {
            if let Some(names) = values.get_mut(v) {
                names.remove(name);
                if names.is_empty() {
                    values.remove(v);
                }
            }
            if values.is_empty() {
                self.by_first_pair.remove(k);
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.of_service.is_empty()
    }

    /// Adds to `out` the services whose selector `labels` satisfy.
    fn selecting<'a>(
        &'a self,
        labels: &serde_json::Map<String, Value>,
        out: &mut BTreeSet<&'a str>,
    ) {
        for (k, v) in labels {
            let Some(names) = v
                .as_str()
                .and_then(|v| self.by_first_pair.get(k.as_str())?.get(v))
            else {
                continue;
            };
            for name in names {
                let selects = self.of_service.get(name).is_some_and(|sel| {
                    sel.iter()
                        .all(|(sk, sv)| labels.get(sk).and_then(Value::as_str) == Some(sv))
                });
                if selects {
                    out.insert(name);
                }
            }
        }
    }
}

impl ServiceEndpoints {
    /// Runs `f` on the selector copy, made from the store on first use.
    fn with_selectors<T>(&self, objects: &Objects, f: impl FnOnce(&mut Selectors) -> T) -> T {
        let mut guard = self.selectors.lock();
        let selectors = guard.get_or_insert_with(|| {
            let mut all = Selectors::new();
            for svc in objects.list_as::<Service>(None, &LabelSelector::default()) {
                if let Some(sel) = svc.spec.as_ref().and_then(|s| s.selector.clone()) {
                    if !sel.is_empty() {
                        all.entry(svc.metadata.namespace.unwrap_or_default())
                            .or_default()
                            .insert(svc.metadata.name.as_deref().unwrap_or_default(), sel);
                    }
                }
            }
            all
        });
        f(selectors)
    }

    /// Records what a service selects now (`None`: gone, or no selector).
    fn remember(
        &self,
        objects: &Objects,
        ns: &str,
        name: &str,
        selector: Option<BTreeMap<String, String>>,
    ) {
        self.with_selectors(objects, |all| match selector.filter(|s| !s.is_empty()) {
            Some(sel) => {
                all.entry(ns.to_string()).or_default().insert(name, sel);
            }
            None => {
                if let Some(in_ns) = all.get_mut(ns) {
                    in_ns.remove(name);
                }
            }
        });
    }
}

/// The label tying an EndpointSlice to its service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
const MANAGER: &str = "endpointslice-controller.k8s.io";

fn selector_of(svc: &Service) -> Option<LabelSelector> {
    let sel = svc.spec.as_ref()?.selector.as_ref()?;
    (!sel.is_empty()).then(|| LabelSelector::from_map(sel))
}

/// A service port as resolved on a pod: name, port, protocol.
type ResolvedPort = (Option<String>, i32, String);

/// The port a service port reaches on `pod`.
fn target_port(pod: &Pod, target: Option<&IntOrString>, port: i32) -> Option<i32> {
    match target {
        None => Some(port),
        Some(IntOrString::Int(p)) => Some(*p),
        Some(IntOrString::String(name)) => pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port),
    }
}

fn pod_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        ..Default::default()
    }
}

impl Reconciler for ServiceEndpoints {
    fn kind(&self) -> &'static str {
        "Service"
    }

    fn initial_keys(&self, objects: &Objects) -> Vec<Key> {
        // A start or a restarted watch: the copies are made again.
        *self.selectors.lock() = None;
        self.slices.reset();
        objects
            .list_as::<Service>(None, &LabelSelector::default())
            .into_iter()
            .map(|s| Key {
                kind: "Service",
                namespace: s.metadata.namespace.unwrap_or_default(),
                name: s.metadata.name.unwrap_or_default(),
            })
            .collect()
    }

    fn keys_for(&self, objects: &Objects, event: &Event) -> Vec<Key> {
        match event_kind(event) {
            Some(("Service", obj)) => {
                let selector = match event.kind {
                    EventKind::Delete => None,
                    EventKind::Put => obj
                        .pointer("/spec/selector")
                        .and_then(|s| serde_json::from_value(s.clone()).ok()),
                };
                self.remember(
                    objects,
                    meta_str(obj, "namespace"),
                    meta_str(obj, "name"),
                    selector,
                );
                vec![key_of("Service", obj)]
            }
            Some(("Endpoints", obj)) => vec![key_of("Service", obj)],
            Some(("EndpointSlice", obj)) => {
                self.slices.observe(objects, event, obj);
                let svc = obj
                    .pointer("/metadata/labels")
                    .and_then(|l| l.get(SERVICE_NAME_LABEL))
                    .and_then(Value::as_str);
                svc.map(|name| Key {
                    kind: "Service",
                    namespace: meta_str(obj, "namespace").into(),
                    name: name.into(),
                })
                .into_iter()
                .collect()
            }
            Some(("Pod", obj)) => {
                let ns = meta_str(obj, "namespace");
                self.with_selectors(objects, |all| {
                    // The pod's labels now and before, looked at only
                    // where services select pods.
                    let Some(services) = all.get(ns).filter(|s| !s.is_empty()) else {
                        return Vec::new();
                    };
                    let mut selecting = BTreeSet::new();
                    [Some(obj), Objects::event_prev_value(event)]
                        .into_iter()
                        .flatten()
                        .filter_map(|o| o.pointer("/metadata/labels")?.as_object())
                        .for_each(|labels| services.selecting(labels, &mut selecting));
                    selecting
                        .into_iter()
                        .map(|name| Key {
                            kind: "Service",
                            namespace: ns.to_string(),
                            name: name.to_string(),
                        })
                        .collect()
                })
            }
            _ => Vec::new(),
        }
    }

    fn reconcile(
        &self,
        objects: &Objects,
        key: &Key,
        now: SystemTime,
    ) -> Result<Next, ObjectError> {
        let ns = key.namespace.as_str();
        let svc: Service = match objects.get_as::<Service>(Some(ns), &key.name) {
            Ok(s) => {
                let selector = s.spec.as_ref().and_then(|s| s.selector.clone());
                self.remember(objects, ns, &key.name, selector);
                s
            }
            Err(ObjectError::NotFound { .. }) => {
                self.remember(objects, ns, &key.name, None);
                // The Endpoints go with the service (the slices are owned
                // and collected).
                let _ = objects.remove(
                    kinds::of::<Endpoints>(),
                    Some(ns),
                    &key.name,
                    None,
                    Default::default(),
                );
                return Ok(Next::Done);
            }
            Err(e) => return Err(e),
        };
        let Some(selector) = selector_of(&svc) else {
            return Ok(Next::Done);
        };
        let mut pods: Vec<Pod> = objects
            .list_as::<Pod>(Some(ns), &selector)
            .into_iter()
            .filter(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.pod_ip.as_ref())
                    .is_some_and(|ip| !ip.is_empty())
            })
            .filter(|p| {
                !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                )
            })
            .collect();
        pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let svc_ports = svc
            .spec
            .as_ref()
            .and_then(|s| s.ports.clone())
            .unwrap_or_default();

        // Endpoints: subsets grouped by the resolved ports.
        let mut subsets: BTreeMap<Vec<ResolvedPort>, (Vec<EndpointAddress>, Vec<EndpointAddress>)> =
            BTreeMap::new();
        for pod in &pods {
            let ports: Vec<ResolvedPort> = svc_ports
                .iter()
                .filter_map(|p| {
                    Some((
                        p.name.clone(),
                        target_port(pod, p.target_port.as_ref(), p.port)?,
                        p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    ))
                })
                .collect();
            let addr = EndpointAddress {
                ip: pod
                    .status
                    .as_ref()
                    .and_then(|s| s.pod_ip.clone())
                    .unwrap_or_default(),
                hostname: pod.spec.as_ref().and_then(|s| s.hostname.clone()),
                node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
                target_ref: Some(pod_ref(pod)),
            };
            let entry = subsets.entry(ports).or_default();
            if pod_ready(pod) && pod.metadata.deletion_timestamp.is_none() {
                entry.0.push(addr);
            } else {
                entry.1.push(addr);
            }
        }
        let subsets: Vec<EndpointSubset> = subsets
            .into_iter()
            .map(|(ports, (ready, not_ready))| EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                ports: Some(
                    ports
                        .into_iter()
                        .map(|(name, port, protocol)| EndpointPort {
                            name,
                            port,
                            protocol: Some(protocol),
                            app_protocol: None,
                        })
                        .collect(),
                ),
            })
            .collect();
        let labels = svc.metadata.labels.clone();
        let legacy = Endpoints {
            metadata: ObjectMeta {
                name: Some(key.name.clone()),
                namespace: Some(ns.into()),
                labels: labels.clone(),
                ..Default::default()
            },
            subsets: (!subsets.is_empty()).then_some(subsets),
        };

        // One EndpointSlice (IPv4).
        let slice_ports: Vec<SlicePort> = svc_ports
            .iter()
            .map(|p| SlicePort {
                name: Some(p.name.clone().unwrap_or_default()),
                port: pods
                    .first()
                    .and_then(|pod| target_port(pod, p.target_port.as_ref(), p.port))
                    .or(match &p.target_port {
                        Some(IntOrString::Int(t)) => Some(*t),
                        None => Some(p.port),
                        _ => None,
                    }),
                protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: p.app_protocol.clone(),
            })
            .collect();
        let endpoints: Vec<Endpoint> = pods
            .iter()
            .filter(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.pod_ip.as_ref())
                    .is_some_and(|ip| ip.contains('.'))
            })
            .map(|pod| {
                let terminating = pod.metadata.deletion_timestamp.is_some();
                Endpoint {
                    addresses: vec![pod
                        .status
                        .as_ref()
                        .and_then(|s| s.pod_ip.clone())
                        .unwrap_or_default()],
                    conditions: Some(EndpointConditions {
                        ready: Some(pod_ready(pod) && !terminating),
                        serving: Some(pod_ready(pod)),
                        terminating: Some(terminating),
                    }),
                    hostname: pod.spec.as_ref().and_then(|s| s.hostname.clone()),
                    node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
                    target_ref: Some(pod_ref(pod)),
                    ..Default::default()
                }
            })
            .collect();
        let mut slice_labels = labels.clone().unwrap_or_default();
        slice_labels.insert(SERVICE_NAME_LABEL.into(), key.name.clone());
        slice_labels.insert(MANAGED_BY.into(), MANAGER.into());
        let existing = self.slices.slices(objects, ns, &key.name)?;
        let owner = super::controller_ref(&svc);
        match existing.into_iter().next() {
            Some(mut slice) => {
                let eps = (!endpoints.is_empty()).then_some(endpoints);
                if slice.endpoints != eps
                    || slice.ports.as_ref() != Some(&slice_ports)
                    || slice.metadata.labels.as_ref() != Some(&slice_labels)
                {
                    slice.endpoints = eps;
                    slice.ports = Some(slice_ports);
                    slice.metadata.labels = Some(slice_labels);
                    objects.update_as(&slice, None)?;
                }
            }
            None => {
                let slice = EndpointSlice {
                    metadata: ObjectMeta {
                        generate_name: Some(format!("{}-", key.name)),
                        namespace: Some(ns.into()),
                        labels: Some(slice_labels),
                        owner_references: Some(vec![owner]),
                        ..Default::default()
                    },
                    address_type: "IPv4".into(),
                    endpoints: (!endpoints.is_empty()).then_some(endpoints),
                    ports: Some(slice_ports),
                };
                objects.create_as(Some(ns), &slice, now)?;
            }
        }
        // The Endpoints after the slice: the fast path and kube-proxy-like
        // readers follow slices, so they learn first.
        match objects.get_as::<Endpoints>(Some(ns), &key.name) {
            Ok(mut existing) => {
                if existing.subsets != legacy.subsets || existing.metadata.labels != labels {
                    existing.subsets = legacy.subsets.clone();
                    existing.metadata.labels = labels.clone();
                    objects.update_as(&existing, None)?;
                }
            }
            Err(ObjectError::NotFound { .. }) => {
                objects.create_as(Some(ns), &legacy, now)?;
            }
            Err(e) => return Err(e),
        }
        Ok(Next::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn sel(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn selecting(s: &NamespaceSelectors, l: Value) -> Vec<String> {
        let mut out = BTreeSet::new();
        s.selecting(&labels(l), &mut out);
        out.into_iter().map(str::to_string).collect()
    }

    /// The index answers what a pass over every selector would: a service
    /// selects a pod whose labels hold all of its pairs, whichever pair it
    /// is filed under, and follows selector changes and removals.
    #[test]
    fn services_selecting_a_pods_labels() {
        let mut s = NamespaceSelectors::default();
        s.insert("web", sel(&[("app", "web")]));
        s.insert("web-prod", sel(&[("app", "web"), ("tier", "prod")]));
        s.insert("prod", sel(&[("tier", "prod")]));
        s.insert("db", sel(&[("app", "db")]));
        assert_eq!(
            selecting(&s, serde_json::json!({"app": "web", "tier": "prod"})),
            ["prod", "web", "web-prod"]
        );
        assert_eq!(selecting(&s, serde_json::json!({"app": "web"})), ["web"]);
        assert_eq!(selecting(&s, serde_json::json!({"tier": "prod"})), ["prod"]);
        assert!(selecting(&s, serde_json::json!({"app": 1, "x": "web"})).is_empty());
        // A new selector replaces the old one, under its own first pair.
        s.insert("web", sel(&[("app", "db")]));
        assert_eq!(
            selecting(&s, serde_json::json!({"app": "db"})),
            ["db", "web"]
        );
        assert!(selecting(&s, serde_json::json!({"app": "web"})).is_empty());
        s.remove("db");
        s.remove("web");
        s.remove("missing");
        assert!(selecting(&s, serde_json::json!({"app": "db"})).is_empty());
        s.remove("web-prod");
        s.remove("prod");
        assert!(s.is_empty());
        assert!(s.by_first_pair.is_empty(), "no empty buckets are left");
    }
}
