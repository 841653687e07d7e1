//! StatefulSet -> Pods `<name>-0 .. <name>-(replicas-1)`, each with a
//! stable name (and, through IPAM's identity for `<namespace>/<pod>`, a
//! stable address), as the StatefulSet controller makes them.
//!
//! * OrderedReady (the default): pod `i` is made only once pods `0..i` are
//!   running and ready; surplus pods go from the highest ordinal down, one
//!   at a time, each waited for. Parallel: all at once.
//! * A pod that is gone or finished is made again with the same name.
//! * RollingUpdate: pods of an older template revision are replaced from
//!   the highest ordinal down, one at a time, while every other pod is
//!   ready (`partition` keeps the ordinals below it).
//! * Pods get `hostname` = their name and `subdomain` = `serviceName`, and
//!   the labels `statefulset.kubernetes.io/pod-name`,
//!   `apps.kubernetes.io/pod-index` and `controller-revision-hash`.

use std::collections::BTreeMap;
use std::time::SystemTime;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::replica_set::{owned_pods, pod_active, pod_ready};
use super::{
    controller_keys, controller_ref, event_kind, key_of, template_hash, Key, Next, Reconciler,
};
use crate::control::kinds::{self, workload::to_query};
use crate::control::objects::{DeleteOptions, ObjectError, Objects};
use crate::control::store::Event;

/// The StatefulSet reconciler.
pub struct StatefulSets;

/// The label naming a pod's template revision.
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// The ordinal of `pod` in the set `set`, if it is one of its names.
pub fn ordinal(set: &str, pod: &str) -> Option<usize> {
    let rest = pod.strip_prefix(set)?.strip_prefix('-')?;
    if rest.is_empty() || (rest.len() > 1 && rest.starts_with('0')) {
        return None;
    }
    rest.parse().ok()
}

fn running_and_ready(pod: &Pod) -> bool {
    pod_active(pod)
        && pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        && pod_ready(pod)
}

fn revision_of(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()?
        .get(REVISION_LABEL)
        .map(String::as_str)
}

impl Reconciler for StatefulSets {
    fn kind(&self) -> &'static str {
        "StatefulSet"
    }

    fn keys_for(&self, _objects: &Objects, event: &Event) -> Vec<Key> {
        match event_kind(event) {
            Some(("StatefulSet", obj)) => vec![key_of("StatefulSet", obj)],
            Some(("Pod", _)) => controller_keys("StatefulSet", event),
            _ => Vec::new(),
        }
    }

    fn reconcile(
        &self,
        objects: &Objects,
        key: &Key,
        now: SystemTime,
    ) -> Result<Next, ObjectError> {
        let set: StatefulSet = objects.get_as(Some(&key.namespace), &key.name)?;
        let ns = key.namespace.as_str();
        let name = key.name.as_str();
        let selector =
            to_query(&set.spec.selector).map_err(|e| ObjectError::BadRequest(e.to_string()))?;
        let pods = owned_pods(objects, &set.metadata, &selector, &controller_ref(&set))?;
        let replicas = if set.metadata.deletion_timestamp.is_some() {
            0
        } else {
            set.spec.replicas.unwrap_or(1).max(0) as usize
        };
        let parallel = set.spec.pod_management_policy.as_deref() == Some("Parallel");
        let revision = format!(
            "{name}-{}",
            template_hash(&serde_json::to_value(&set.spec.template).unwrap_or_default())
        );
        let partition = set
            .spec
            .update_strategy
            .as_ref()
            .and_then(|u| u.rolling_update.as_ref())
            .and_then(|r| r.partition)
            .unwrap_or(0)
            .max(0) as usize;
        let on_delete = set
            .spec
            .update_strategy
            .as_ref()
            .and_then(|u| u.type_.as_deref())
            == Some("OnDelete");
        let mut by_ordinal: BTreeMap<usize, Pod> = BTreeMap::new();
        for pod in &pods {
            if let Some(i) = pod.metadata.name.as_deref().and_then(|n| ordinal(name, n)) {
                by_ordinal.insert(i, pod.clone());
            }
        }
        let delete = |pod_name: &str| -> Result<(), ObjectError> {
            match objects.delete(
                kinds::of::<Pod>(),
                Some(ns),
                pod_name,
                DeleteOptions::default(),
                now,
            ) {
                Ok(_) | Err(ObjectError::NotFound { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        };

        // Make what is missing, in order.
        for i in 0..replicas {
            match by_ordinal.get(&i) {
                Some(pod) if !pod_active(pod) => {
                    // Finished, or terminating: made again once gone.
                    if pod.metadata.deletion_timestamp.is_none() {
                        delete(pod.metadata.name.as_deref().unwrap_or(""))?;
                    }
                    if !parallel {
                        break;
                    }
                }
                Some(pod) => {
                    if !parallel && !running_and_ready(pod) {
                        break;
                    }
                }
                None => {
                    let pod_name = format!("{name}-{i}");
                    let template = set.spec.template.clone();
                    let mut labels = template
                        .metadata
                        .as_ref()
                        .and_then(|m| m.labels.clone())
                        .unwrap_or_default();
                    labels.insert(
                        "statefulset.kubernetes.io/pod-name".into(),
                        pod_name.clone(),
                    );
                    labels.insert("apps.kubernetes.io/pod-index".into(), i.to_string());
                    labels.insert(REVISION_LABEL.into(), revision.clone());
                    let mut spec = template.spec.clone().unwrap_or_default();
                    // One claim per pod and template, kept when the pod
                    // goes: the pod made again gets the same data.
                    for t in set.spec.volume_claim_templates.iter().flatten() {
                        let template_name = t.metadata.name.clone().unwrap_or_default();
                        let claim_name = format!("{template_name}-{name}-{i}");
                        let mut claim_labels = t.metadata.labels.clone().unwrap_or_default();
                        claim_labels
                            .extend(set.spec.selector.match_labels.clone().unwrap_or_default());
                        let claim = PersistentVolumeClaim {
                            metadata: ObjectMeta {
                                name: Some(claim_name.clone()),
                                namespace: Some(ns.into()),
                                labels: Some(claim_labels),
                                annotations: t.metadata.annotations.clone(),
                                ..Default::default()
                            },
                            spec: t.spec.clone(),
                            status: None,
                        };
                        match objects.create_as(Some(ns), &claim, now) {
                            Ok(_) | Err(ObjectError::AlreadyExists { .. }) => {}
                            Err(e) => return Err(e),
                        }
                        let volumes = spec.volumes.get_or_insert_with(Vec::new);
                        volumes.retain(|v| v.name != template_name);
                        volumes.push(Volume {
                            name: template_name,
                            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                                claim_name,
                                read_only: None,
                            }),
                            ..Default::default()
                        });
                    }
                    spec.hostname = Some(pod_name.clone());
                    spec.subdomain = Some(set.spec.service_name.clone().unwrap_or_default())
                        .filter(|s| !s.is_empty());
                    spec.node_name = None;
                    let pod = Pod {
                        metadata: ObjectMeta {
                            name: Some(pod_name),
                            namespace: Some(ns.into()),
                            labels: Some(labels),
                            annotations: template
                                .metadata
                                .as_ref()
                                .and_then(|m| m.annotations.clone()),
                            owner_references: Some(vec![controller_ref(&set)]),
                            ..Default::default()
                        },
                        spec: Some(spec),
                        status: None,
                    };
                    match objects.create_as(Some(ns), &pod, now) {
                        Ok(_) | Err(ObjectError::AlreadyExists { .. }) => {}
                        Err(e) => return Err(e),
                    }
                    if !parallel {
                        break;
                    }
                }
            }
        }

        // Remove the surplus, highest ordinal first.
        let surplus: Vec<&Pod> = by_ordinal.range(replicas..).rev().map(|(_, p)| p).collect();
        let lower_ready = by_ordinal
            .range(..replicas)
            .all(|(_, p)| running_and_ready(p));
        for pod in surplus {
            if pod.metadata.deletion_timestamp.is_some() {
                if !parallel {
                    break;
                }
                continue;
            }
            if !parallel && !lower_ready {
                break;
            }
            delete(pod.metadata.name.as_deref().unwrap_or(""))?;
            if !parallel {
                break;
            }
        }

        // Roll pods of an older revision, highest ordinal first.
        let all_ready = by_ordinal.len() == replicas && by_ordinal.values().all(running_and_ready);
        if !on_delete && all_ready {
            if let Some((_, old)) = by_ordinal
                .range(partition..replicas)
                .rev()
                .find(|(_, p)| revision_of(p) != Some(revision.as_str()))
            {
                delete(old.metadata.name.as_deref().unwrap_or(""))?;
            }
        }

        // Status.
        let active: Vec<&Pod> = by_ordinal.values().filter(|p| pod_active(p)).collect();
        let ready = active.iter().filter(|p| pod_ready(p)).count() as i32;
        let updated = active
            .iter()
            .filter(|p| revision_of(p) == Some(revision.as_str()))
            .count() as i32;
        let current_revision = if updated as usize == replicas && active.len() == replicas {
            revision.clone()
        } else {
            set.status
                .as_ref()
                .and_then(|s| s.current_revision.clone())
                .unwrap_or_else(|| revision.clone())
        };
        let current = active
            .iter()
            .filter(|p| revision_of(p) == Some(current_revision.as_str()))
            .count() as i32;
        let status = StatefulSetStatus {
            observed_generation: set.metadata.generation,
            replicas: active.len() as i32,
            ready_replicas: Some(ready),
            available_replicas: Some(ready),
            current_replicas: Some(current),
            updated_replicas: Some(updated),
            current_revision: Some(current_revision),
            update_revision: Some(revision),
            collision_count: set.status.as_ref().and_then(|s| s.collision_count),
            conditions: None,
        };
        if set.status.as_ref() != Some(&status) {
            let mut s = set.clone();
            s.status = Some(status);
            objects.update_as(&s, Some("status"))?;
        }
        Ok(Next::Done)
    }
}
