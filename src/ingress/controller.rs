//! The ingress reconciler: rebuilds the route and certificate tables from
//! the store when an Ingress, IngressClass, Service, EndpointSlice, Secret
//! or the Node changes, swaps them in, and writes each served Ingress's
//! `status.loadBalancer` (the Node's InternalIP).
//!
//! It reconciles one key (the whole table): a rebuild reads every served
//! Ingress, the Services and slices they name, and their Secrets. That is
//! proportional to the cluster, which on one node is small; the proxy
//! never waits for it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::SystemTime;

use k8s_openapi::api::core::v1::{Node, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{
    Ingress, IngressClass, IngressLoadBalancerIngress, IngressLoadBalancerStatus, IngressStatus,
};
use parking_lot::Mutex;

use super::routes::RouteTable;
use super::tls::CertTable;
use super::{is_served, Shared};
use crate::control::objects::{LabelSelector, ObjectError, Objects};
use crate::control::reconcile::{event_kind, Key, Next, Reconciler};
use crate::control::store::Event;

/// The key kind of the route table.
const TAG: &str = "IngressRoutes";

/// Keeps the proxy's tables and the Ingresses' status in line with the store.
pub struct IngressController {
    shared: Arc<Shared>,
    node: String,
    provider: rustls::crypto::CryptoProvider,
    /// The certificate problems last logged (logged again only when they change).
    problems: Mutex<Vec<String>>,
}

impl IngressController {
    /// A controller filling `shared`, for the node named `node`.
    pub fn new(shared: Arc<Shared>, node: String) -> Self {
        Self {
            shared,
            node,
            provider: rustls::crypto::ring::default_provider(),
            problems: Mutex::default(),
        }
    }

    fn key() -> Key {
        Key {
            kind: TAG,
            namespace: String::new(),
            name: String::new(),
        }
    }

    /// The node's InternalIP, what served Ingresses show as their address.
    fn node_address(&self, objects: &Objects) -> Option<String> {
        let node = objects.get_as::<Node>(None, &self.node).ok()?;
        node.status?
            .addresses?
            .into_iter()
            .find(|a| a.type_ == "InternalIP")
            .map(|a| a.address)
    }
}

impl Reconciler for IngressController {
    fn kind(&self) -> &'static str {
        TAG
    }

    fn keys_for(&self, _objects: &Objects, event: &Event) -> Vec<Key> {
        match event_kind(event) {
            Some((
                "Ingress" | "IngressClass" | "Service" | "EndpointSlice" | "Secret" | "Node",
                _,
            )) => vec![Self::key()],
            _ => Vec::new(),
        }
    }

    fn initial_keys(&self, _objects: &Objects) -> Vec<Key> {
        vec![Self::key()]
    }

    fn reconcile(
        &self,
        objects: &Objects,
        _key: &Key,
        _now: SystemTime,
    ) -> Result<Next, ObjectError> {
        let all = LabelSelector::default();
        let classes: Vec<IngressClass> = objects.list_as(None, &all);
        let served: Vec<Ingress> = objects
            .list_as::<Ingress>(None, &all)
            .into_iter()
            .filter(|i| is_served(i, &classes))
            .collect();
        let namespaces: BTreeSet<String> = served
            .iter()
            .filter_map(|i| i.metadata.namespace.clone())
            .collect();
        let mut services: Vec<Service> = Vec::new();
        let mut slices: Vec<EndpointSlice> = Vec::new();
        let mut secrets: Vec<Secret> = Vec::new();
        for ns in &namespaces {
            services.extend(objects.list_as::<Service>(Some(ns), &all));
            slices.extend(objects.list_as::<EndpointSlice>(Some(ns), &all));
            let named: BTreeSet<&str> = served
                .iter()
                .filter(|i| i.metadata.namespace.as_deref() == Some(ns.as_str()))
                .flat_map(|i| i.spec.iter().flat_map(|s| s.tls.iter().flatten()))
                .filter_map(|t| t.secret_name.as_deref())
                .collect();
            for name in named {
                if let Ok(s) = objects.get_as::<Secret>(Some(ns), name) {
                    secrets.push(s);
                }
            }
        }
        self.shared
            .routes
            .store(Arc::new(RouteTable::build(&served, &services, &slices)));
        let (certs, problems) = CertTable::build(&served, &secrets, &self.provider);
        self.shared.certs.store(Arc::new(certs));
        {
            let mut last = self.problems.lock();
            if *last != problems {
                for p in &problems {
                    tracing::warn!("ingress TLS: {p}; that host gets the default certificate");
                }
                *last = problems;
            }
        }

        // status.loadBalancer: the node's address on each served Ingress.
        let Some(address) = self.node_address(objects) else {
            return Ok(Next::Done);
        };
        let want = IngressLoadBalancerStatus {
            ingress: Some(vec![IngressLoadBalancerIngress {
                ip: Some(address),
                ..Default::default()
            }]),
        };
        for mut ing in served {
            let has = ing.status.as_ref().and_then(|s| s.load_balancer.as_ref());
            if has == Some(&want) {
                continue;
            }
            ing.status = Some(IngressStatus {
                load_balancer: Some(want.clone()),
            });
            match objects.update_as(&ing, Some("status")) {
                Ok(_) | Err(ObjectError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Next::Done)
    }
}
