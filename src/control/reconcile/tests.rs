//! The reconcilers against an in-memory store; the test plays the kubelet
//! (binds pods, gives them IPs, marks them ready or gone).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Endpoints, Pod, PodCondition, PodStatus};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

use super::deployment::{Deployments, REVISION};
use super::endpoints::ServiceEndpoints;
use super::replica_set::{pod_ready, ReplicaSets};
use super::stateful_set::{ordinal, StatefulSets};
use super::*;
use crate::control::kinds;
use crate::control::objects::{DeleteOptions, LabelSelector, WriteOptions};
use crate::control::store::MemStore;

struct World {
    objects: Objects,
    manager: Manager,
    now: SystemTime,
    next_ip: u8,
}

impl World {
    fn new() -> World {
        let objects = Objects::new(Arc::new(MemStore::new()), SystemTime::now()).unwrap();
        let manager = Manager::new(
            objects.clone(),
            vec![
                Box::new(ReplicaSets),
                Box::new(Deployments),
                Box::new(StatefulSets),
                Box::new(ServiceEndpoints::default()),
            ],
        );
        World {
            objects,
            manager,
            now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            next_ip: 2,
        }
    }

    fn apply(&mut self, obj: serde_json::Value) {
        let kind = kinds::KINDS.iter().find(|k| k.kind == obj["kind"]).unwrap();
        self.objects
            .create(
                kind,
                Some("default"),
                obj,
                WriteOptions::default(),
                self.now,
            )
            .unwrap();
    }

    fn pods(&self) -> Vec<Pod> {
        self.objects
            .list_as::<Pod>(Some("default"), &LabelSelector::default())
    }

    /// The kubelet's part: bind, address and start every pending pod,
    /// ready or not; finish terminating pods.
    fn kubelet(&mut self, ready: bool) {
        for mut pod in self.pods() {
            let name = pod.metadata.name.clone().unwrap();
            if pod.metadata.deletion_timestamp.is_some() {
                let opts = DeleteOptions {
                    grace_period_seconds: Some(0),
                    ..Default::default()
                };
                self.objects
                    .delete(kinds::of::<Pod>(), Some("default"), &name, opts, self.now)
                    .unwrap();
                continue;
            }
            if pod.spec.as_ref().unwrap().node_name.is_none() {
                pod.spec.as_mut().unwrap().node_name = Some("node".into());
                pod = self.objects.update_as(&pod, None).unwrap();
            }
            let was_ready = pod_ready(&pod);
            if pod
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.as_ref())
                .is_none()
                || was_ready != ready
            {
                let ip = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.pod_ip.clone())
                    .unwrap_or_else(|| {
                        self.next_ip += 1;
                        format!("10.244.0.{}", self.next_ip)
                    });
                pod.status = Some(PodStatus {
                    phase: Some("Running".into()),
                    pod_ip: Some(ip),
                    conditions: Some(vec![PodCondition {
                        type_: "Ready".into(),
                        status: if ready { "True" } else { "False" }.into(),
                        ..Default::default()
                    }]),
                    ..Default::default()
                });
                self.objects.update_as(&pod, Some("status")).unwrap();
            }
        }
    }

    fn settle(&mut self) {
        self.manager.run_until_idle(self.now);
    }

    fn deployment(&self) -> Deployment {
        self.objects.get_as(Some("default"), "web").unwrap()
    }

    fn replica_sets(&self) -> Vec<ReplicaSet> {
        self.objects
            .list_as(Some("default"), &LabelSelector::default())
    }
}

fn web_deployment(replicas: i32) -> serde_json::Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "python", "command": ["python3", "-m", "http.server"]}]}}}})
}

#[test]
fn replica_set_keeps_its_count_and_reports_status() {
    let mut w = World::new();
    w.apply(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "rs"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "x"}},
            "template": {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}));
    w.settle();
    assert_eq!(w.pods().len(), 3);
    assert!(w
        .pods()
        .iter()
        .all(|p| p.metadata.name.as_ref().unwrap().starts_with("rs-")));
    w.kubelet(true);
    w.settle();
    let rs: ReplicaSet = w.objects.get_as(Some("default"), "rs").unwrap();
    let st = rs.status.unwrap();
    assert_eq!((st.replicas, st.ready_replicas), (3, Some(3)));
    // A pod that dies is replaced.
    let victim = w.pods()[0].metadata.name.clone().unwrap();
    w.objects
        .delete(
            kinds::of::<Pod>(),
            Some("default"),
            &victim,
            DeleteOptions {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
            w.now,
        )
        .unwrap();
    w.settle();
    assert_eq!(w.pods().len(), 3);
    assert!(w
        .pods()
        .iter()
        .all(|p| p.metadata.name.as_deref() != Some(&victim)));
    // Scaled down: the not-ready pod goes first.
    w.kubelet(true);
    let mut rs: ReplicaSet = w.objects.get_as(Some("default"), "rs").unwrap();
    rs.spec.replicas = Some(1);
    w.objects.update_as(&rs, None).unwrap();
    w.settle();
    w.kubelet(true);
    w.settle();
    assert_eq!(w.pods().len(), 1);
    // Deleting the ReplicaSet takes its pods.
    w.objects
        .delete(
            kinds::of::<ReplicaSet>(),
            Some("default"),
            "rs",
            DeleteOptions::default(),
            w.now,
        )
        .unwrap();
    w.kubelet(true);
    assert_eq!(w.pods().len(), 0);
}

#[test]
fn deployment_rolls_out_within_surge_and_unavailability() {
    let mut w = World::new();
    w.apply(web_deployment(3));
    w.settle();
    w.kubelet(true);
    w.settle();
    let d = w.deployment();
    let st = d.status.clone().unwrap();
    assert_eq!(
        (st.replicas, st.updated_replicas, st.available_replicas),
        (Some(3), Some(3), Some(3))
    );
    assert_eq!(d.metadata.annotations.as_ref().unwrap()[REVISION], "1");
    let first_rs = w.replica_sets()[0].metadata.name.clone().unwrap();
    assert!(first_rs.starts_with("web-"));

    // A new template (`kubectl set env`): one surge pod at a time, never
    // fewer than 3 available (maxUnavailable 0).
    let mut d = w.deployment();
    d.spec.template.spec.as_mut().unwrap().containers[0].env =
        Some(vec![k8s_openapi::api::core::v1::EnvVar {
            name: "X".into(),
            value: Some("1".into()),
            value_from: None,
        }]);
    w.objects.update_as(&d, None).unwrap();
    let mut rounds = 0;
    loop {
        w.settle();
        let ready = w
            .pods()
            .iter()
            .filter(|p| pod_ready(p) && p.metadata.deletion_timestamp.is_none())
            .count();
        assert!(ready >= 3, "availability fell to {ready}");
        // Terminating pods are outside the surge, as in Kubernetes.
        let live = w
            .pods()
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .count();
        assert!(live <= 4, "more than replicas + surge: {live}");
        w.kubelet(true);
        w.settle();
        let st = w.deployment().status.unwrap();
        if st.updated_replicas == Some(3)
            && st.replicas == Some(3)
            && st.available_replicas == Some(3)
        {
            break;
        }
        rounds += 1;
        assert!(rounds < 20, "rollout did not finish: {st:?}");
    }
    let d = w.deployment();
    assert_eq!(d.metadata.annotations.as_ref().unwrap()[REVISION], "2");
    let progressing = d
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_.as_deref() == Some("Progressing"))
        .unwrap();
    assert_eq!(
        progressing.reason.as_deref(),
        Some("NewReplicaSetAvailable")
    );
    let sets = w.replica_sets();
    assert_eq!(sets.len(), 2, "the old ReplicaSet stays as history");
    let old = sets
        .iter()
        .find(|rs| rs.metadata.name.as_deref() == Some(&first_rs))
        .unwrap();
    assert_eq!(old.spec.replicas, Some(0));

    // Undo: the old template comes back; its ReplicaSet becomes revision 3.
    let mut d = w.deployment();
    d.spec.template = old.spec.template.clone().unwrap();
    d.spec
        .template
        .metadata
        .as_mut()
        .unwrap()
        .labels
        .as_mut()
        .unwrap()
        .remove("pod-template-hash");
    w.objects.update_as(&d, None).unwrap();
    for _ in 0..10 {
        w.settle();
        w.kubelet(true);
    }
    w.settle();
    let old: ReplicaSet = w.objects.get_as(Some("default"), &first_rs).unwrap();
    assert_eq!(old.spec.replicas, Some(3));
    assert_eq!(old.metadata.annotations.as_ref().unwrap()[REVISION], "3");
    assert_eq!(
        w.replica_sets().len(),
        2,
        "no third ReplicaSet for a template seen before"
    );
}

#[test]
fn recreate_waits_for_old_pods_to_go() {
    let mut w = World::new();
    let mut d = web_deployment(2);
    d["spec"]["strategy"] = json!({"type": "Recreate"});
    w.apply(d);
    w.settle();
    w.kubelet(true);
    w.settle();
    let mut d = w.deployment();
    d.spec.template.metadata.as_mut().unwrap().annotations = Some(
        [(
            "kubectl.kubernetes.io/restartedAt".to_string(),
            "now".to_string(),
        )]
        .into(),
    );
    w.objects.update_as(&d, None).unwrap();
    w.settle();
    // Old pods terminating, no new ones yet.
    assert!(
        w.pods()
            .iter()
            .all(|p| p.metadata.deletion_timestamp.is_some()),
        "old pods must stop first"
    );
    w.kubelet(true);
    w.settle();
    w.kubelet(true);
    w.settle();
    assert_eq!(w.pods().len(), 2);
    assert_eq!(w.deployment().status.unwrap().updated_replicas, Some(2));
}

#[test]
fn endpoints_follow_ready_pods_and_terminating_ones_are_marked() {
    let mut w = World::new();
    w.apply(web_deployment(2));
    w.apply(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}));
    w.settle();
    w.kubelet(false);
    w.settle();
    let ep: Endpoints = w.objects.get_as(Some("default"), "web").unwrap();
    let subset = &ep.subsets.unwrap()[0];
    assert!(subset.addresses.is_none());
    assert_eq!(subset.not_ready_addresses.as_ref().unwrap().len(), 2);
    w.kubelet(true);
    w.settle();
    let ep: Endpoints = w.objects.get_as(Some("default"), "web").unwrap();
    let subset = &ep.subsets.unwrap()[0];
    assert_eq!(subset.addresses.as_ref().unwrap().len(), 2);
    assert_eq!(subset.ports.as_ref().unwrap()[0].port, 8080);
    let slices: Vec<EndpointSlice> = w
        .objects
        .list_as(Some("default"), &LabelSelector::default());
    assert_eq!(slices.len(), 1);
    let eps = slices[0].endpoints.clone().unwrap();
    assert_eq!(eps.len(), 2);
    assert!(eps
        .iter()
        .all(|e| e.conditions.as_ref().unwrap().ready == Some(true)));
    // A pod being deleted: not ready, still serving, terminating.
    let victim = w.pods()[0].metadata.name.clone().unwrap();
    w.objects
        .delete(
            kinds::of::<Pod>(),
            Some("default"),
            &victim,
            DeleteOptions::default(),
            w.now,
        )
        .unwrap();
    w.settle();
    let slice: EndpointSlice = w
        .objects
        .list_as::<EndpointSlice>(Some("default"), &LabelSelector::default())
        .remove(0);
    let e = slice
        .endpoints
        .unwrap()
        .into_iter()
        .find(|e| e.target_ref.as_ref().unwrap().name.as_deref() == Some(&victim))
        .unwrap();
    let c = e.conditions.unwrap();
    assert_eq!(
        (c.ready, c.serving, c.terminating),
        (Some(false), Some(true), Some(true))
    );
    // Deleting the service takes its Endpoints and slices.
    w.objects
        .delete(
            kinds::of::<k8s_openapi::api::core::v1::Service>(),
            Some("default"),
            "web",
            DeleteOptions::default(),
            w.now,
        )
        .unwrap();
    w.settle();
    assert!(w
        .objects
        .get_as::<Endpoints>(Some("default"), "web")
        .is_err());
    assert!(w
        .objects
        .list_as::<EndpointSlice>(Some("default"), &LabelSelector::default())
        .is_empty());
}

fn endpoint_ips(w: &World, service: &str) -> Vec<String> {
    let ep: Endpoints = w.objects.get_as(Some("default"), service).unwrap();
    let mut ips: Vec<String> = ep
        .subsets
        .unwrap_or_default()
        .into_iter()
        .flat_map(|s| s.addresses.unwrap_or_default())
        .map(|a| a.ip)
        .collect();
    ips.sort();
    ips
}

#[test]
fn pod_changes_reach_the_services_that_select_them_after_selector_changes() {
    let mut w = World::new();
    w.apply(web_deployment(2));
    w.apply(
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}),
    );
    w.settle();
    w.kubelet(true);
    w.settle();
    assert_eq!(endpoint_ips(&w, "web").len(), 2);
    // The service now selects other pods: none yet.
    let mut svc: k8s_openapi::api::core::v1::Service =
        w.objects.get_as(Some("default"), "web").unwrap();
    svc.spec.as_mut().unwrap().selector = Some([("app".to_string(), "other".to_string())].into());
    w.objects.update_as(&svc, None).unwrap();
    w.settle();
    assert!(endpoint_ips(&w, "web").is_empty());
    // A pod of the new selector, made ready: its change alone must lead
    // to the service (the old selector would not find it).
    w.apply(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "other", "labels": {"app": "other"}},
        "spec": {"containers": [{"name": "c", "image": "x", "command": ["sleep", "1"]}]}}));
    w.settle();
    w.kubelet(true);
    w.settle();
    let ips = endpoint_ips(&w, "web");
    let other: Pod = w.objects.get_as(Some("default"), "other").unwrap();
    assert_eq!(ips, vec![other.status.unwrap().pod_ip.unwrap()]);
    // A service made after the pods finds them as well, and one deleted and
    // made again with another selector follows the new one.
    w.apply(
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "late"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}),
    );
    w.settle();
    assert_eq!(endpoint_ips(&w, "late").len(), 2);
    w.objects
        .delete(
            kinds::of::<k8s_openapi::api::core::v1::Service>(),
            Some("default"),
            "late",
            DeleteOptions::default(),
            w.now,
        )
        .unwrap();
    w.settle();
    w.apply(
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "late"},
        "spec": {"selector": {"app": "other"}, "ports": [{"port": 80}]}}),
    );
    w.settle();
    // Relabel the "other" pod: it leaves both services that select app=other.
    let mut pod: Pod = w.objects.get_as(Some("default"), "other").unwrap();
    pod.metadata.labels = Some([("app".to_string(), "none".to_string())].into());
    w.objects.update_as(&pod, None).unwrap();
    w.settle();
    assert!(endpoint_ips(&w, "web").is_empty());
    assert!(endpoint_ips(&w, "late").is_empty());
}

fn names(w: &World) -> Vec<String> {
    let mut n: Vec<String> = w
        .pods()
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| p.metadata.name.unwrap())
        .collect();
    n.sort();
    n
}

#[test]
fn stateful_set_pods_come_in_order_keep_their_names_and_go_in_reverse() {
    let mut w = World::new();
    w.apply(json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
        "spec": {"replicas": 3, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "db", "image": "x"}]}}}}));
    w.settle();
    assert_eq!(names(&w), ["db-0"], "db-1 waits for db-0 to be ready");
    w.kubelet(false);
    w.settle();
    assert_eq!(names(&w), ["db-0"]);
    for _ in 0..3 {
        w.kubelet(true);
        w.settle();
    }
    assert_eq!(names(&w), ["db-0", "db-1", "db-2"]);
    let p0: Pod = w.objects.get_as(Some("default"), "db-0").unwrap();
    assert_eq!(p0.spec.as_ref().unwrap().hostname.as_deref(), Some("db-0"));
    assert_eq!(p0.spec.as_ref().unwrap().subdomain.as_deref(), Some("db"));
    let ip0 = p0.status.unwrap().pod_ip;
    // Deleted: back with the same name.
    w.objects
        .delete(
            kinds::of::<Pod>(),
            Some("default"),
            "db-0",
            DeleteOptions::default(),
            w.now,
        )
        .unwrap();
    w.kubelet(true);
    w.settle();
    assert_eq!(names(&w), ["db-0", "db-1", "db-2"]);
    let again: Pod = w.objects.get_as(Some("default"), "db-0").unwrap();
    assert_ne!(again.metadata.uid, p0.metadata.uid, "a new pod");
    let _ = ip0; // its address is IPAM's part (identity per pod name)
                 // Scale to 1: db-2 goes first, then db-1.
    w.kubelet(true);
    w.settle();
    let mut set: k8s_openapi::api::apps::v1::StatefulSet =
        w.objects.get_as(Some("default"), "db").unwrap();
    set.spec.replicas = Some(1);
    w.objects.update_as(&set, None).unwrap();
    w.settle();
    let terminating: Vec<String> = w
        .pods()
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_some())
        .map(|p| p.metadata.name.unwrap())
        .collect();
    assert_eq!(terminating, ["db-2"], "one at a time, from the top");
    for _ in 0..3 {
        w.kubelet(true);
        w.settle();
    }
    assert_eq!(names(&w), ["db-0"]);
    let st = w
        .objects
        .get_as::<k8s_openapi::api::apps::v1::StatefulSet>(Some("default"), "db")
        .unwrap()
        .status
        .unwrap();
    assert_eq!((st.replicas, st.ready_replicas), (1, Some(1)));
}

#[test]
fn stateful_set_rolls_from_the_highest_ordinal() {
    let mut w = World::new();
    w.apply(json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
        "spec": {"replicas": 3, "podManagementPolicy": "Parallel", "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "db", "image": "v1"}]}}}}));
    w.settle();
    assert_eq!(
        names(&w),
        ["db-0", "db-1", "db-2"],
        "Parallel makes all at once"
    );
    w.kubelet(true);
    w.settle();
    let mut set: k8s_openapi::api::apps::v1::StatefulSet =
        w.objects.get_as(Some("default"), "db").unwrap();
    set.spec.template.spec.as_mut().unwrap().containers[0].image = Some("v2".into());
    w.objects.update_as(&set, None).unwrap();
    let mut order = Vec::new();
    for _ in 0..12 {
        w.settle();
        for p in w.pods() {
            if p.metadata.deletion_timestamp.is_some() {
                order.push(ordinal("db", p.metadata.name.as_deref().unwrap()).unwrap());
            }
        }
        w.kubelet(true);
    }
    w.settle();
    assert_eq!(order, [2, 1, 0]);
    let images: Vec<String> = w
        .pods()
        .into_iter()
        .map(|p| p.spec.unwrap().containers[0].image.clone().unwrap())
        .collect();
    assert_eq!(images, ["v2", "v2", "v2"]);
    assert_eq!(ordinal("db", "db-01"), None);
    assert_eq!(ordinal("db", "dbx-1"), None);
}
