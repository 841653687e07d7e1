//! Deployment -> ReplicaSets, as the Kubernetes deployment controller does
//! it, so that `kubectl rollout status|history|undo|restart` work.
//!
//! * The ReplicaSet whose template equals the Deployment's (ignoring the
//!   `pod-template-hash` label) is the new one; if none does, it is made,
//!   named `<deployment>-<hash>`. It carries the revision
//!   (`deployment.kubernetes.io/revision`): one more than any other, also
//!   when an old ReplicaSet becomes new again (`rollout undo`).
//! * RollingUpdate: the new ReplicaSet grows while all pods stay within
//!   `replicas + maxSurge`; old ones shrink while available pods stay at or
//!   above `replicas - maxUnavailable` (percentages: surge rounds up,
//!   unavailable down; both zero means one may be unavailable).
//! * Recreate: old ReplicaSets go to zero, and the new one grows once
//!   their pods are gone.
//! * Old ReplicaSets at zero beyond `revisionHistoryLimit` are deleted.
//! * Status: replicas, updated, ready, available, unavailable, observed
//!   generation, and the `Available` and `Progressing` conditions that
//!   `kubectl rollout status` reads.

use std::collections::BTreeMap;
use std::time::SystemTime;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::events::{record, reference};
use super::{
    controller_keys, controller_ref, event_kind, is_controlled_by, key_of, template_hash, Key,
    Next, Reconciler,
};
use crate::control::kinds::workload::to_query;
use crate::control::objects::{kube_time, DeleteOptions, ObjectError, Objects};
use crate::control::store::Event;

/// The Deployment reconciler.
pub struct Deployments;

/// The revision annotation on Deployments and their ReplicaSets.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// The label that tells ReplicaSets of one Deployment apart.
pub const TEMPLATE_HASH: &str = "pod-template-hash";

fn revision(meta: &ObjectMeta) -> u64 {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// The template without the hash label, to compare templates.
fn plain_template(t: &PodTemplateSpec) -> PodTemplateSpec {
    let mut t = t.clone();
    if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(TEMPLATE_HASH);
    }
    t
}

/// `IntOrString` against `total`: an integer, or a percentage rounded up
/// or down.
fn scaled(v: Option<&IntOrString>, total: i32, round_up: bool) -> i32 {
    match v {
        None => 0,
        Some(IntOrString::Int(i)) => *i,
        Some(IntOrString::String(s)) => {
            let pct: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
            let x = pct * total as i64;
            (if round_up { (x + 99) / 100 } else { x / 100 }) as i32
        }
    }
}

fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.replicas.unwrap_or(0)
}

fn rs_available(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    now: SystemTime,
    old: Option<&DeploymentStatus>,
) -> DeploymentCondition {
    let status_s = if status { "True" } else { "False" };
    let prev = old
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_.as_deref() == Some(type_)));
    let unchanged = prev.is_some_and(|p| {
        p.status.as_deref() == Some(status_s) && p.reason.as_deref() == Some(reason)
    });
    DeploymentCondition {
        type_: Some(type_.into()),
        status: Some(status_s.into()),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: if unchanged {
            prev.and_then(|p| p.last_transition_time.clone())
        } else {
            Some(kube_time(now))
        },
        last_update_time: if unchanged {
            prev.and_then(|p| p.last_update_time.clone())
        } else {
            Some(kube_time(now))
        },
    }
}

impl Deployments {
    fn scale(
        objects: &Objects,
        d: &Deployment,
        rs: &ReplicaSet,
        replicas: i32,
        now: SystemTime,
    ) -> Result<ReplicaSet, ObjectError> {
        let from = rs_replicas(rs);
        if from == replicas {
            return Ok(rs.clone());
        }
        let mut rs = rs.clone();
        rs.spec.replicas = Some(replicas);
        let rs = objects.update_as(&rs, None)?;
        let name = rs.metadata.name.clone().unwrap_or_default();
        let dir = if replicas > from { "up" } else { "down" };
        let msg = format!("Scaled {dir} replica set {name} from {from} to {replicas}");
        record(
            objects,
            reference(d),
            false,
            "ScalingReplicaSet",
            msg,
            "deployment-controller",
            now,
        );
        Ok(rs)
    }
}

impl Reconciler for Deployments {
    fn kind(&self) -> &'static str {
        "Deployment"
    }

    fn keys_for(&self, _objects: &Objects, event: &Event) -> Vec<Key> {
        match event_kind(event) {
            Some(("Deployment", obj)) => vec![key_of("Deployment", obj)],
            Some(("ReplicaSet", _)) => controller_keys("Deployment", event),
            _ => Vec::new(),
        }
    }

    fn reconcile(
        &self,
        objects: &Objects,
        key: &Key,
        now: SystemTime,
    ) -> Result<Next, ObjectError> {
        let d: Deployment = objects.get_as(Some(&key.namespace), &key.name)?;
        if d.metadata.deletion_timestamp.is_some() {
            return Ok(Next::Done);
        }
        let ns = key.namespace.as_str();
        let selector =
            to_query(&d.spec.selector).map_err(|e| ObjectError::BadRequest(e.to_string()))?;
        let mut all: Vec<ReplicaSet> = objects
            .list_as::<ReplicaSet>(Some(ns), &selector)
            .into_iter()
            .filter(|rs| is_controlled_by(&rs.metadata, &d.metadata))
            .collect();
        all.sort_by_key(|rs| {
            (
                revision(&rs.metadata),
                rs.metadata
                    .creation_timestamp
                    .as_ref()
                    .map_or(0, |t| t.0.as_second()),
            )
        });
        let template = plain_template(&d.spec.template);
        let max_revision = all
            .iter()
            .map(|rs| revision(&rs.metadata))
            .max()
            .unwrap_or(0);
        let current = all.iter().position(|rs| {
            rs.spec.template.as_ref().map(plain_template).as_ref() == Some(&template)
        });
        let replicas = d.spec.replicas.unwrap_or(1).max(0);
        let recreate =
            d.spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");

        // The new ReplicaSet: found, promoted (undo), or made.
        let mut new_rs = match current {
            Some(i) => {
                let mut rs = all.remove(i);
                if revision(&rs.metadata) < max_revision || revision(&rs.metadata) == 0 {
                    rs.metadata
                        .annotations
                        .get_or_insert_with(BTreeMap::new)
                        .insert(REVISION.into(), (max_revision + 1).to_string());
                    rs = objects.update_as(&rs, None)?;
                }
                rs
            }
            None => {
                let hash = template_hash(&serde_json::to_value(&template).unwrap_or_default());
                let mut t = d.spec.template.clone();
                t.metadata
                    .get_or_insert_with(Default::default)
                    .labels
                    .get_or_insert_with(BTreeMap::new)
                    .insert(TEMPLATE_HASH.into(), hash.clone());
                let mut sel = d.spec.selector.clone();
                sel.match_labels
                    .get_or_insert_with(BTreeMap::new)
                    .insert(TEMPLATE_HASH.into(), hash.clone());
                let mut labels = t
                    .metadata
                    .as_ref()
                    .and_then(|m| m.labels.clone())
                    .unwrap_or_default();
                labels.insert(TEMPLATE_HASH.into(), hash.clone());
                let mut annotations = BTreeMap::new();
                annotations.insert(REVISION.to_string(), (max_revision + 1).to_string());
                if let Some(cause) = d
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get("kubernetes.io/change-cause"))
                {
                    annotations.insert("kubernetes.io/change-cause".into(), cause.clone());
                }
                let rs = ReplicaSet {
                    metadata: ObjectMeta {
                        name: Some(format!("{}-{hash}", key.name)),
                        namespace: Some(ns.into()),
                        labels: Some(labels),
                        annotations: Some(annotations),
                        owner_references: Some(vec![controller_ref(&d)]),
                        ..Default::default()
                    },
                    spec: ReplicaSetSpec {
                        replicas: Some(if recreate || !all.is_empty() {
                            0
                        } else {
                            replicas
                        }),
                        selector: sel,
                        template: Some(t),
                        min_ready_seconds: d.spec.min_ready_seconds,
                    },
                    status: None,
                };
                match objects.create_as(Some(ns), &rs, now) {
                    Ok(rs) => {
                        let n = rs_replicas(&rs);
                        if n > 0 {
                            let name = rs.metadata.name.clone().unwrap_or_default();
                            let msg = format!("Scaled up replica set {name} from 0 to {n}");
                            record(
                                objects,
                                reference(&d),
                                false,
                                "ScalingReplicaSet",
                                msg,
                                "deployment-controller",
                                now,
                            );
                        }
                        rs
                    }
                    // Made by an earlier pass we did not see yet.
                    Err(ObjectError::AlreadyExists { .. }) => {
                        return Err(ObjectError::Conflict {
                            plural: "replicasets".into(),
                            name: key.name.clone(),
                            message: "new ReplicaSet exists".into(),
                        })
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        let olds = all;

        if recreate {
            for rs in &olds {
                Self::scale(objects, &d, rs, 0, now)?;
            }
            // The new pods start once no old pod is left, terminating ones
            // included.
            let old_pods = objects
                .list_as::<Pod>(Some(ns), &selector)
                .into_iter()
                .filter(|p| {
                    olds.iter()
                        .any(|rs| is_controlled_by(&p.metadata, &rs.metadata))
                })
                .filter(|p| {
                    !matches!(
                        p.status.as_ref().and_then(|s| s.phase.as_deref()),
                        Some("Succeeded" | "Failed")
                    )
                })
                .count();
            if old_pods == 0 {
                new_rs = Self::scale(objects, &d, &new_rs, replicas, now)?;
            }
        } else {
            let strategy = d
                .spec
                .strategy
                .as_ref()
                .and_then(|s| s.rolling_update.as_ref());
            let mut surge = scaled(strategy.and_then(|r| r.max_surge.as_ref()), replicas, true);
            let mut unavailable = scaled(
                strategy.and_then(|r| r.max_unavailable.as_ref()),
                replicas,
                false,
            );
            if strategy.is_none() {
                surge = scaled(Some(&IntOrString::String("25%".into())), replicas, true);
                unavailable = scaled(Some(&IntOrString::String("25%".into())), replicas, false);
            }
            if surge == 0 && unavailable == 0 {
                unavailable = 1;
            }
            let total: i32 = olds.iter().map(rs_replicas).sum::<i32>() + rs_replicas(&new_rs);
            // Grow the new ReplicaSet within the surge.
            let new_replicas = rs_replicas(&new_rs);
            let target = if new_replicas >= replicas {
                replicas
            } else {
                (new_replicas + (replicas + surge - total).max(0)).min(replicas)
            };
            new_rs = Self::scale(objects, &d, &new_rs, target, now)?;
            // Shrink old ones within the unavailability budget. Pod counts
            // come from the specs, which are current, so that a status not
            // yet updated cannot make the budget look larger than it is.
            let min_available = replicas - unavailable;
            let all_pods: i32 = olds.iter().map(rs_replicas).sum::<i32>() + rs_replicas(&new_rs);
            let new_unavailable = (rs_replicas(&new_rs) - rs_available(&new_rs)).max(0);
            let mut budget = (all_pods - min_available - new_unavailable).max(0);
            let mut olds_now = Vec::new();
            for rs in &olds {
                // Unhealthy old pods go first: they cost no availability.
                let unhealthy = (rs_replicas(rs) - rs_available(rs)).max(0).min(budget);
                budget -= unhealthy;
                olds_now.push(Self::scale(
                    objects,
                    &d,
                    rs,
                    rs_replicas(rs) - unhealthy,
                    now,
                )?);
            }
            let available: i32 =
                olds_now.iter().map(rs_available).sum::<i32>() + rs_available(&new_rs);
            budget = budget.min((available - min_available).max(0));
            for rs in &olds_now {
                let down = budget.min(rs_replicas(rs));
                if down > 0 {
                    budget -= down;
                    Self::scale(objects, &d, rs, rs_replicas(rs) - down, now)?;
                }
            }
        }

        // History beyond the limit.
        let limit = d.spec.revision_history_limit.unwrap_or(10).max(0) as usize;
        let idle: Vec<&ReplicaSet> = olds
            .iter()
            .filter(|rs| rs_replicas(rs) == 0 && rs.status.as_ref().is_none_or(|s| s.replicas == 0))
            .collect();
        if idle.len() > limit {
            for rs in &idle[..idle.len() - limit] {
                let name = rs.metadata.name.clone().unwrap_or_default();
                let _ = objects.delete(
                    crate::control::kinds::of::<ReplicaSet>(),
                    Some(ns),
                    &name,
                    DeleteOptions::default(),
                    now,
                );
            }
        }

        // Status, from what the ReplicaSets report.
        let olds: Vec<ReplicaSet> = objects
            .list_as::<ReplicaSet>(Some(ns), &selector)
            .into_iter()
            .filter(|rs| {
                is_controlled_by(&rs.metadata, &d.metadata)
                    && rs.metadata.uid != new_rs.metadata.uid
            })
            .collect();
        let st = |rs: &ReplicaSet| rs.status.clone().unwrap_or_default();
        let new_st = st(&new_rs);
        let all_status: Vec<_> = olds
            .iter()
            .map(st)
            .chain(std::iter::once(new_st.clone()))
            .collect();
        let total_replicas: i32 = all_status.iter().map(|s| s.replicas).sum();
        let ready: i32 = all_status
            .iter()
            .map(|s| s.ready_replicas.unwrap_or(0))
            .sum();
        let available: i32 = all_status
            .iter()
            .map(|s| s.available_replicas.unwrap_or(0))
            .sum();
        let updated = new_st.replicas;
        let complete = updated == replicas
            && total_replicas == replicas
            && new_st.available_replicas.unwrap_or(0) == replicas
            && olds.iter().all(|rs| rs_replicas(rs) == 0);
        let strategy = d
            .spec
            .strategy
            .as_ref()
            .and_then(|s| s.rolling_update.as_ref());
        let max_unavailable = if recreate {
            replicas
        } else {
            scaled(
                strategy.and_then(|r| r.max_unavailable.as_ref()),
                replicas,
                false,
            )
        };
        let old = d.status.as_ref();
        let new_name = new_rs.metadata.name.clone().unwrap_or_default();
        let conditions = vec![
            condition(
                "Available",
                available >= replicas - max_unavailable,
                if available >= replicas - max_unavailable {
                    "MinimumReplicasAvailable"
                } else {
                    "MinimumReplicasUnavailable"
                },
                if available >= replicas - max_unavailable {
                    "Deployment has minimum availability.".into()
                } else {
                    "Deployment does not have minimum availability.".into()
                },
                now,
                old,
            ),
            if complete {
                condition(
                    "Progressing",
                    true,
                    "NewReplicaSetAvailable",
                    format!("ReplicaSet \"{new_name}\" has successfully progressed."),
                    now,
                    old,
                )
            } else {
                condition(
                    "Progressing",
                    true,
                    "ReplicaSetUpdated",
                    format!("ReplicaSet \"{new_name}\" is progressing."),
                    now,
                    old,
                )
            },
        ];
        let status = DeploymentStatus {
            observed_generation: d.metadata.generation,
            replicas: Some(total_replicas),
            updated_replicas: Some(updated),
            ready_replicas: Some(ready),
            available_replicas: Some(available),
            unavailable_replicas: Some((replicas - available).max(0)),
            terminating_replicas: None,
            conditions: Some(conditions),
            collision_count: None,
        };
        let rev = revision(&new_rs.metadata).to_string();
        let mut d2 = d.clone();
        let annotations = d2.metadata.annotations.get_or_insert_with(BTreeMap::new);
        if annotations.get(REVISION) != Some(&rev) {
            annotations.insert(REVISION.into(), rev);
            d2 = objects.update_as(&d2, None)?;
        }
        if d2.status.as_ref() != Some(&status) {
            d2.status = Some(status);
            objects.update_as(&d2, Some("status"))?;
        }
        Ok(Next::Done)
    }
}
