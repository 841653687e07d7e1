//! NetworkPolicies, pods and namespaces -> the fast path's policy snapshot
//! ([`crate::packet::policy`]), enforced where flows are set up.
//!
//! The reconciler only marks the snapshot out of date (one key for the
//! node) on a change that can move a decision: any NetworkPolicy, a
//! namespace's labels, a pod's labels, addresses or phase. A thread of
//! its own ([`super::rebuild`]) compiles the snapshot and hands it to the
//! router, which re-decides the tracked flows. With no NetworkPolicy a
//! rebuild reads only the (empty) policy list.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;

use super::dataplane::Dataplane;
use super::rebuild::Rebuilder;
use crate::control::netpol;
use crate::control::objects::{LabelSelector, ObjectError, Objects};
use crate::control::reconcile::{event_kind, fields_changed, Key, Next, Reconciler};
use crate::control::store::Event;
use crate::packet::policy::PolicySnapshot;

const TAG: &str = "PolicySnapshot";

/// What of a pod policy decisions depend on.
const POD_FIELDS: [&str; 4] = [
    "/metadata/labels",
    "/status/podIP",
    "/status/podIPs",
    "/status/phase",
];

/// Keeps the router's NetworkPolicy snapshot in line with the store.
pub struct PolicyPublisher {
    rebuild: Rebuilder,
}

struct Builder {
    objects: Objects,
    dataplane: Arc<Dataplane>,
    /// The node's own addresses: traffic to and from them is never isolated.
    node_addrs: Vec<IpAddr>,
    /// Whether the last snapshot came from some policy.
    had_policies: bool,
}

impl Builder {
    fn build(&mut self) {
        let all = LabelSelector::default();
        let policies = self.objects.list_as::<NetworkPolicy>(None, &all);
        let router = self.dataplane.router();
        if policies.is_empty() {
            if self.had_policies {
                router.set_policy(PolicySnapshot::default());
                self.had_policies = false;
                tracing::info!("no NetworkPolicy left: every pod is open again");
            }
            return;
        }
        let pods = self.objects.list_as::<Pod>(None, &all);
        let namespaces = self.objects.list_as::<Namespace>(None, &all);
        let snapshot = netpol::compile(&policies, &pods, &namespaces, self.node_addrs.clone());
        let removed = router.set_policy(snapshot);
        self.had_policies = true;
        tracing::debug!(
            policies = policies.len(),
            pods = pods.len(),
            flows_removed = removed,
            "NetworkPolicy snapshot published"
        );
    }
}

impl PolicyPublisher {
    /// A publisher into `dataplane`'s router, with its compiling thread
    /// started.
    pub fn start(objects: Objects, dataplane: Arc<Dataplane>) -> std::io::Result<Self> {
        let config = dataplane.router().config();
        let net = &config.network;
        let mut node_addrs: Vec<IpAddr> = vec![IpAddr::V4(net.gateway_v4)];
        node_addrs.extend(net.gateway_v6.map(IpAddr::V6));
        node_addrs.extend(config.edge.node_v4.map(IpAddr::V4));
        node_addrs.extend(config.edge.host_addrs.iter().copied());
        node_addrs.sort();
        node_addrs.dedup();
        let mut builder = Builder {
            objects,
            dataplane,
            node_addrs,
            had_policies: false,
        };
        let rebuild = Rebuilder::start("podnet-policy", move || builder.build())?;
        Ok(PolicyPublisher { rebuild })
    }

    fn key() -> Key {
        Key {
            kind: TAG,
            namespace: String::new(),
            name: "node".into(),
        }
    }
}

impl Reconciler for PolicyPublisher {
    fn kind(&self) -> &'static str {
        TAG
    }

    fn keys_for(&self, _objects: &Objects, event: &Event) -> Vec<Key> {
        match event_kind(event) {
            Some(("NetworkPolicy", _)) => vec![Self::key()],
            Some(("Namespace", obj)) if fields_changed(event, obj, &["/metadata/labels"]) => {
                vec![Self::key()]
            }
            Some(("Pod", obj)) if fields_changed(event, obj, &POD_FIELDS) => vec![Self::key()],
            _ => Vec::new(),
        }
    }

    fn initial_keys(&self, _objects: &Objects) -> Vec<Key> {
        vec![Self::key()]
    }

    fn reconcile(
        &self,
        _objects: &Objects,
        _key: &Key,
        _now: SystemTime,
    ) -> Result<Next, ObjectError> {
        self.rebuild.mark();
        Ok(Next::Done)
    }
}
