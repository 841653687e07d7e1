//! ReplicaSet -> Pods: as many live pods from the template as
//! `spec.replicas` says, and the ReplicaSet's status.
//!
//! A pod counts while it is neither terminating nor finished. Surplus pods
//! go in the order Kubernetes uses: not yet running before running, not
//! ready before ready, newer before older. Pods matching the selector
//! without a controller are adopted, as the ReplicaSet controller does.

use std::time::SystemTime;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::events::{record, reference};
use super::{
    controller_keys, controller_ref, event_kind, is_controlled_by, key_of, Key, Next, Reconciler,
};
use crate::control::kinds::workload::to_query;
use crate::control::objects::{DeleteOptions, LabelSelector, ObjectError, Objects};
use crate::control::store::Event;

/// The ReplicaSet reconciler.
pub struct ReplicaSets;

/// Whether a pod's Ready condition is True.
pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Whether a pod still counts: not terminating, not finished.
pub fn pod_active(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && !matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
}

/// The order in which surplus pods are deleted: lower first.
fn deletion_rank(pod: &Pod) -> (u8, u8, std::cmp::Reverse<i64>) {
    let scheduled = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_ref())
        .is_some_and(|n| !n.is_empty());
    let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
    let created = pod
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(0, |t| t.0.as_second());
    (
        u8::from(scheduled) + u8::from(running),
        u8::from(pod_ready(pod)),
        std::cmp::Reverse(created),
    )
}

/// The pods a ReplicaSet (or StatefulSet) owns, adopting matching orphans.
pub fn owned_pods(
    objects: &Objects,
    owner: &ObjectMeta,
    selector: &LabelSelector,
    owner_ref: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
) -> Result<Vec<Pod>, ObjectError> {
    let ns = owner.namespace.as_deref();
    let mut owned = Vec::new();
    for mut pod in objects.list_as::<Pod>(ns, selector) {
        if is_controlled_by(&pod.metadata, owner) {
            owned.push(pod);
        } else if pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .all(|r| r.controller != Some(true))
            && pod_active(&pod)
            && owner.deletion_timestamp.is_none()
        {
            pod.metadata
                .owner_references
                .get_or_insert_with(Vec::new)
                .push(owner_ref.clone());
            match objects.update_as(&pod, None) {
                Ok(p) => owned.push(p),
                Err(ObjectError::Conflict { .. } | ObjectError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(owned)
}

impl Reconciler for ReplicaSets {
    fn kind(&self) -> &'static str {
        "ReplicaSet"
    }

    fn keys_for(&self, _objects: &Objects, event: &Event) -> Vec<Key> {
        match event_kind(event) {
            Some(("ReplicaSet", obj)) => vec![key_of("ReplicaSet", obj)],
            Some(("Pod", _)) => controller_keys("ReplicaSet", event),
            _ => Vec::new(),
        }
    }

    fn reconcile(
        &self,
        objects: &Objects,
        key: &Key,
        now: SystemTime,
    ) -> Result<Next, ObjectError> {
        let rs: ReplicaSet = objects.get_as(Some(&key.namespace), &key.name)?;
        let selector =
            to_query(&rs.spec.selector).map_err(|e| ObjectError::BadRequest(e.to_string()))?;
        let pods = owned_pods(objects, &rs.metadata, &selector, &controller_ref(&rs))?;
        let mut active: Vec<Pod> = pods.iter().filter(|p| pod_active(p)).cloned().collect();
        let want = if rs.metadata.deletion_timestamp.is_some() {
            0
        } else {
            rs.spec.replicas.unwrap_or(1).max(0) as usize
        };
        if active.len() < want {
            let template = rs.spec.template.clone().unwrap_or_default();
            for _ in active.len()..want {
                let mut pod = Pod {
                    metadata: ObjectMeta {
                        generate_name: Some(format!("{}-", key.name)),
                        namespace: Some(key.namespace.clone()),
                        labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
                        annotations: template
                            .metadata
                            .as_ref()
                            .and_then(|m| m.annotations.clone()),
                        owner_references: Some(vec![controller_ref(&rs)]),
                        ..Default::default()
                    },
                    spec: template.spec.clone(),
                    status: None,
                };
                if let Some(spec) = pod.spec.as_mut() {
                    spec.node_name = None;
                }
                let created = objects.create_as(Some(&key.namespace), &pod, now)?;
                let msg = format!(
                    "Created pod: {}",
                    created.metadata.name.clone().unwrap_or_default()
                );
                record(
                    objects,
                    reference(&rs),
                    false,
                    "SuccessfulCreate",
                    msg,
                    "replicaset-controller",
                    now,
                );
                active.push(created);
            }
        } else if active.len() > want {
            active.sort_by_key(deletion_rank);
            let surplus: Vec<Pod> = active.drain(..active.len() - want).collect();
            for pod in surplus {
                let name = pod.metadata.name.clone().unwrap_or_default();
                match objects.delete(
                    crate::control::kinds::of::<Pod>(),
                    Some(&key.namespace),
                    &name,
                    DeleteOptions::default(),
                    now,
                ) {
                    Ok(_) => {
                        let msg = format!("Deleted pod: {name}");
                        record(
                            objects,
                            reference(&rs),
                            false,
                            "SuccessfulDelete",
                            msg,
                            "replicaset-controller",
                            now,
                        );
                    }
                    Err(ObjectError::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let ready = active.iter().filter(|p| pod_ready(p)).count() as i32;
        let terminating = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_some())
            .count() as i32;
        let status = ReplicaSetStatus {
            replicas: active.len() as i32,
            fully_labeled_replicas: Some(active.len() as i32),
            ready_replicas: Some(ready),
            available_replicas: Some(ready),
            terminating_replicas: Some(terminating),
            observed_generation: rs.metadata.generation,
            conditions: None,
        };
        if rs.status.as_ref() != Some(&status) {
            let mut updated = rs.clone();
            updated.status = Some(status);
            objects.update_as(&updated, Some("status"))?;
        }
        Ok(Next::Done)
    }
}
