//! PersistentVolumeClaims and PersistentVolumes: the node's local
//! provisioner (`podnet.io/local`, what a single-node cluster's
//! local-path provisioner does) and the binder.
//!
//! * A claim of a class whose provisioner is `podnet.io/local` (the class
//!   `podnet-local`, the default, made at start) gets a directory of its
//!   own ([`VolumeDirs`]) and a PersistentVolume `pvc-UID` for it, bound to
//!   the claim both ways; a claim without a class gets the default class,
//!   as the API server's admission and the volume controller give it.
//! * A claim is protected while a pod that is not finished uses it
//!   (finalizer `kubernetes.io/pvc-protection`): deleting it leaves it
//!   Terminating until the pod is gone.
//! * A volume whose claim is gone is reclaimed by its policy: `Delete`
//!   removes the directory (with the data) and the volume; `Retain` keeps
//!   both, the volume `Released`.
//!
//! A pod's `persistentVolumeClaim` volume is the bound volume's directory
//! ([`super::pod_volumes`]); a StatefulSet's `volumeClaimTemplates` make one
//! claim per pod (`TEMPLATE-SET-ORDINAL`), kept when the pod is deleted, so
//! the pod made again gets the same data ([`super::stateful_set`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, ObjectReference, PersistentVolume, PersistentVolumeClaim,
    PersistentVolumeClaimStatus, PersistentVolumeSpec, PersistentVolumeStatus, Pod,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::Resource;

use super::events::{record, reference};
use super::{event_kind, key_of, Key, Next, Reconciler};
use crate::control::kinds::storage_class::{is_default, DEFAULT_CLASS_ANNOTATION};
use crate::control::kinds::{self};
use crate::control::objects::{DeleteOptions, ObjectError, Objects};
use crate::control::store::Event;

/// The provisioner name of podnet's local volumes.
pub const PROVISIONER: &str = "podnet.io/local";
/// The class podnetd makes at start (the default).
pub const CLASS: &str = "podnet-local";
/// The finalizer that keeps a claim while pods use it.
pub const PROTECTION: &str = "kubernetes.io/pvc-protection";
const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";

/// Where local volumes' directories are made.
pub trait VolumeDirs: Send + Sync {
    /// Makes the directory of the new volume `name`; returns its path.
    fn make(&self, name: &str) -> Result<String, String>;
    /// Removes a volume's directory and everything in it.
    fn remove(&self, path: &str) -> Result<(), String>;
}

/// Makes the class `podnet-local` (the default) if it is missing.
pub fn ensure_class(objects: &Objects, now: SystemTime) -> Result<(), ObjectError> {
    let class = StorageClass {
        metadata: ObjectMeta {
            name: Some(CLASS.into()),
            annotations: Some([(DEFAULT_CLASS_ANNOTATION.to_string(), "true".to_string())].into()),
            labels: Some(Objects::made_by_podnetd()),
            ..Default::default()
        },
        provisioner: PROVISIONER.into(),
        reclaim_policy: Some("Delete".into()),
        volume_binding_mode: Some("Immediate".into()),
        ..Default::default()
    };
    objects.ensure_as(None, &class, now)
}

/// The claims a pod's volumes name.
pub fn claims_of(pod: &Pod) -> Vec<String> {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| {
            v.persistent_volume_claim
                .as_ref()
                .map(|c| c.claim_name.clone())
        })
        .collect()
}

/// The claims a pod object (JSON) names in its volumes, read without
/// decoding the whole pod (this runs for every pod event).
fn claim_names(pod: &serde_json::Value) -> impl Iterator<Item = &str> {
    pod.pointer("/spec/volumes")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.pointer("/persistentVolumeClaim/claimName")?.as_str())
}

fn finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Provisions and binds claims, and lets a deleted claim go once no pod
/// uses it.
pub struct VolumeClaims {
    dirs: Arc<dyn VolumeDirs>,
}

impl VolumeClaims {
    /// A reconciler making volumes with `dirs`.
    pub fn new(dirs: Arc<dyn VolumeDirs>) -> Self {
        Self { dirs }
    }

    /// The class a claim gets: its own, or the default.
    fn class_of(
        &self,
        objects: &Objects,
        claim: &PersistentVolumeClaim,
    ) -> Result<Option<StorageClass>, ObjectError> {
        match claim
            .spec
            .as_ref()
            .and_then(|s| s.storage_class_name.as_deref())
        {
            Some("") => Ok(None),
            Some(name) => match objects.get_as::<StorageClass>(None, name) {
                Ok(c) => Ok(Some(c)),
                Err(ObjectError::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            },
            None => Ok(objects
                .list_as::<StorageClass>(None, &Default::default())
                .into_iter()
                .find(is_default)),
        }
    }

    fn provision(
        &self,
        objects: &Objects,
        mut claim: PersistentVolumeClaim,
        now: SystemTime,
    ) -> Result<Next, ObjectError> {
        let ns = claim.metadata.namespace.clone().unwrap_or_default();
        let name = claim.metadata.name.clone().unwrap_or_default();
        let Some(class) = self.class_of(objects, &claim)? else {
            record(
                objects,
                reference(&claim),
                false,
                "FailedBinding",
                "no persistent volumes available for this claim and no storage class is set".into(),
                "persistentvolume-controller",
                now,
            );
            return Ok(Next::Done);
        };
        if class.provisioner != PROVISIONER {
            // Someone else's class: their provisioner's claim.
            return Ok(Next::Done);
        }
        let class_name = class.metadata.name.clone().unwrap_or_default();
        let uid = claim.metadata.uid.clone().unwrap_or_default();
        let volume = format!("pvc-{uid}");
        let spec = claim.spec.clone().unwrap_or_default();
        let storage = spec
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .cloned()
            .unwrap_or_default();
        let path = match self.dirs.make(&volume) {
            Ok(p) => p,
            Err(why) => {
                record(
                    objects,
                    reference(&claim),
                    true,
                    "ProvisioningFailed",
                    format!("failed to provision volume with StorageClass {class_name:?}: {why}"),
                    PROVISIONER,
                    now,
                );
                return Ok(Next::After(Duration::from_secs(5)));
            }
        };
        let pv = PersistentVolume {
            metadata: ObjectMeta {
                name: Some(volume.clone()),
                annotations: Some([(PROVISIONED_BY.to_string(), PROVISIONER.to_string())].into()),
                ..Default::default()
            },
            spec: Some(PersistentVolumeSpec {
                access_modes: spec.access_modes.clone(),
                capacity: Some([("storage".to_string(), storage.clone())].into()),
                claim_ref: Some(ObjectReference {
                    api_version: Some(PersistentVolumeClaim::API_VERSION.into()),
                    kind: Some(PersistentVolumeClaim::KIND.into()),
                    namespace: Some(ns.clone()),
                    name: Some(name.clone()),
                    uid: Some(uid.clone()),
                    ..Default::default()
                }),
                host_path: Some(HostPathVolumeSource {
                    path,
                    type_: Some("Directory".into()),
                }),
                persistent_volume_reclaim_policy: class.reclaim_policy.clone(),
                storage_class_name: Some(class_name.clone()),
                volume_mode: spec.volume_mode.clone(),
                ..Default::default()
            }),
            status: None,
        };
        match objects.create_as(None, &pv, now) {
            Ok(_) | Err(ObjectError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
        let made = objects.get_as::<PersistentVolume>(None, &volume)?;
        if made.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound") {
            let mut made = made;
            made.status = Some(PersistentVolumeStatus {
                phase: Some("Bound".into()),
                ..Default::default()
            });
            objects.update_as(&made, Some("status"))?;
        }
        let spec = claim.spec.get_or_insert_with(Default::default);
        spec.volume_name = Some(volume.clone());
        spec.storage_class_name = Some(class_name);
        let annotations = claim.metadata.annotations.get_or_insert_with(BTreeMap::new);
        for (k, v) in [
            ("pv.kubernetes.io/bind-completed", "yes"),
            ("pv.kubernetes.io/bound-by-controller", "yes"),
            ("volume.kubernetes.io/storage-provisioner", PROVISIONER),
        ] {
            annotations.insert(k.into(), v.into());
        }
        let mut claim = objects.update_as(&claim, None)?;
        claim.status = Some(PersistentVolumeClaimStatus {
            phase: Some("Bound".into()),
            access_modes: claim.spec.as_ref().and_then(|s| s.access_modes.clone()),
            capacity: Some([("storage".to_string(), storage)].into()),
            ..Default::default()
        });
        let claim = objects.update_as(&claim, Some("status"))?;
        record(
            objects,
            reference(&claim),
            false,
            "ProvisioningSucceeded",
            format!("Successfully provisioned volume {volume}"),
            PROVISIONER,
            now,
        );
        Ok(Next::Done)
    }
}

impl Reconciler for VolumeClaims {
    fn kind(&self) -> &'static str {
        "PersistentVolumeClaim"
    }

    fn keys_for(&self, objects: &Objects, event: &Event) -> Vec<Key> {
        match event_kind(event) {
            Some(("PersistentVolumeClaim", obj)) => vec![key_of("PersistentVolumeClaim", obj)],
            // A pod that stops using a claim may let a deleted one go.
            Some(("Pod", obj)) => {
                let ns = obj
                    .pointer("/metadata/namespace")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or_default();
                let mut names: Vec<&str> = std::iter::once(obj)
                    .chain(Objects::event_prev_value(event))
                    .flat_map(claim_names)
                    .collect();
                names.sort_unstable();
                names.dedup();
                names
                    .into_iter()
                    .map(|name| Key {
                        kind: "PersistentVolumeClaim",
                        namespace: ns.to_string(),
                        name: name.to_string(),
                    })
                    .collect()
            }
            // A class made or changed: claims still waiting for one.
            Some(("StorageClass", _)) => objects
                .list_as::<PersistentVolumeClaim>(None, &Default::default())
                .into_iter()
                .filter(|c| {
                    c.spec
                        .as_ref()
                        .and_then(|s| s.volume_name.as_ref())
                        .is_none()
                })
                .map(|c| Key {
                    kind: "PersistentVolumeClaim",
                    namespace: c.metadata.namespace.unwrap_or_default(),
                    name: c.metadata.name.unwrap_or_default(),
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    fn reconcile(
        &self,
        objects: &Objects,
        key: &Key,
        now: SystemTime,
    ) -> Result<Next, ObjectError> {
        let mut claim: PersistentVolumeClaim = match objects.get_as(Some(&key.namespace), &key.name)
        {
            Ok(c) => c,
            Err(ObjectError::NotFound { .. }) => return Ok(Next::Done),
            Err(e) => return Err(e),
        };
        let protected = claim
            .metadata
            .finalizers
            .as_ref()
            .is_some_and(|f| f.iter().any(|f| f == PROTECTION));
        if claim.metadata.deletion_timestamp.is_some() {
            if !protected {
                return Ok(Next::Done);
            }
            let in_use = objects
                .list_as::<Pod>(Some(&key.namespace), &Default::default())
                .iter()
                .any(|p| !finished(p) && claims_of(p).contains(&key.name));
            if !in_use {
                claim
                    .metadata
                    .finalizers
                    .get_or_insert_with(Vec::new)
                    .retain(|f| f != PROTECTION);
                match objects.update_as(&claim, None) {
                    Ok(_) | Err(ObjectError::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            return Ok(Next::Done);
        }
        if !protected {
            claim
                .metadata
                .finalizers
                .get_or_insert_with(Vec::new)
                .push(PROTECTION.into());
            claim = objects.update_as(&claim, None)?;
        }
        let bound = claim
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.as_deref())
            .is_some_and(|v| !v.is_empty());
        if bound {
            return Ok(Next::Done);
        }
        self.provision(objects, claim, now)
    }
}

/// Reclaims volumes whose claims are gone.
pub struct Volumes {
    dirs: Arc<dyn VolumeDirs>,
}

impl Volumes {
    /// A reconciler removing volumes with `dirs`.
    pub fn new(dirs: Arc<dyn VolumeDirs>) -> Self {
        Self { dirs }
    }
}

impl Reconciler for Volumes {
    fn kind(&self) -> &'static str {
        "PersistentVolume"
    }

    fn keys_for(&self, _objects: &Objects, event: &Event) -> Vec<Key> {
        match event_kind(event) {
            Some(("PersistentVolume", obj)) => vec![key_of("PersistentVolume", obj)],
            Some(("PersistentVolumeClaim", obj)) => obj
                .pointer("/spec/volumeName")
                .and_then(serde_json::Value::as_str)
                .filter(|v| !v.is_empty())
                .map(|v| Key {
                    kind: "PersistentVolume",
                    namespace: String::new(),
                    name: v.to_string(),
                })
                .into_iter()
                .collect(),
            _ => Vec::new(),
        }
    }

    fn reconcile(
        &self,
        objects: &Objects,
        key: &Key,
        now: SystemTime,
    ) -> Result<Next, ObjectError> {
        let mut pv: PersistentVolume = match objects.get_as(None, &key.name) {
            Ok(v) => v,
            Err(ObjectError::NotFound { .. }) => return Ok(Next::Done),
            Err(e) => return Err(e),
        };
        if pv.metadata.deletion_timestamp.is_some() {
            return Ok(Next::Done);
        }
        let spec = pv.spec.clone().unwrap_or_default();
        let phase_now = pv.status.as_ref().and_then(|s| s.phase.clone());
        let set_phase = |pv: &mut PersistentVolume, phase: &str| -> Result<(), ObjectError> {
            if phase_now.as_deref() != Some(phase) {
                pv.status = Some(PersistentVolumeStatus {
                    phase: Some(phase.into()),
                    ..Default::default()
                });
                objects.update_as(pv, Some("status"))?;
            }
            Ok(())
        };
        let Some(claim_ref) = spec.claim_ref.as_ref() else {
            set_phase(&mut pv, "Available")?;
            return Ok(Next::Done);
        };
        let claim = match objects.get_as::<PersistentVolumeClaim>(
            claim_ref.namespace.as_deref(),
            claim_ref.name.as_deref().unwrap_or(""),
        ) {
            Ok(c) => Some(c),
            Err(ObjectError::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        if claim.is_some_and(|c| c.metadata.uid == claim_ref.uid) {
            set_phase(&mut pv, "Bound")?;
            return Ok(Next::Done);
        }
        // The claim is gone.
        let ours = pv
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(PROVISIONED_BY))
            .is_some_and(|p| p == PROVISIONER);
        if spec.persistent_volume_reclaim_policy.as_deref() != Some("Delete") || !ours {
            set_phase(&mut pv, "Released")?;
            return Ok(Next::Done);
        }
        if let Some(path) = spec.host_path.as_ref().map(|h| h.path.clone()) {
            if let Err(why) = self.dirs.remove(&path) {
                record(
                    objects,
                    reference(&pv),
                    true,
                    "VolumeFailedDelete",
                    why,
                    PROVISIONER,
                    now,
                );
                set_phase(&mut pv, "Failed")?;
                return Ok(Next::After(Duration::from_secs(10)));
            }
        }
        match objects.delete(
            kinds::of::<PersistentVolume>(),
            None,
            &key.name,
            DeleteOptions::default(),
            now,
        ) {
            Ok(_) | Err(ObjectError::NotFound { .. }) => Ok(Next::Done),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::objects::WriteOptions;
    use crate::control::reconcile::Manager;
    use crate::control::store::MemStore;
    use parking_lot::Mutex;
    use serde_json::json;

    /// Directories as a set of names.
    #[derive(Default)]
    struct Dirs(Mutex<Vec<String>>);

    impl VolumeDirs for Dirs {
        fn make(&self, name: &str) -> Result<String, String> {
            let path = format!("/volumes/{name}");
            self.0.lock().push(path.clone());
            Ok(path)
        }
        fn remove(&self, path: &str) -> Result<(), String> {
            self.0.lock().retain(|p| p != path);
            Ok(())
        }
    }

    fn world() -> (Objects, Manager, Arc<Dirs>, SystemTime) {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let objects = Objects::new(Arc::new(MemStore::new()), now).unwrap();
        let dirs = Arc::new(Dirs::default());
        let manager = Manager::new(
            objects.clone(),
            vec![
                Box::new(VolumeClaims::new(dirs.clone())),
                Box::new(Volumes::new(dirs.clone())),
            ],
        );
        ensure_class(&objects, now).unwrap();
        (objects, manager, dirs, now)
    }

    fn create(objects: &Objects, ns: Option<&str>, obj: serde_json::Value, now: SystemTime) {
        let kind = kinds::KINDS.iter().find(|k| k.kind == obj["kind"]).unwrap();
        objects
            .create(kind, ns, obj, WriteOptions::default(), now)
            .unwrap();
    }

    fn claim(name: &str) -> serde_json::Value {
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
               "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}}}})
    }

    fn pod_using(name: &str, claim: &str) -> serde_json::Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
               "spec": {"containers": [{"name": "c", "image": "x"}],
                        "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": claim}}]}})
    }

    #[test]
    fn a_claim_is_provisioned_bound_protected_and_reclaimed() {
        let (objects, mut manager, dirs, now) = world();
        create(&objects, Some("default"), claim("data"), now);
        create(&objects, Some("default"), pod_using("p", "data"), now);
        manager.run_until_idle(now);

        let c: PersistentVolumeClaim = objects.get_as(Some("default"), "data").unwrap();
        let spec = c.spec.clone().unwrap();
        let status = c.status.clone().unwrap();
        assert_eq!(status.phase.as_deref(), Some("Bound"));
        assert_eq!(spec.storage_class_name.as_deref(), Some(CLASS));
        assert_eq!(status.capacity.unwrap()["storage"].0, "2Gi");
        assert!(c
            .metadata
            .finalizers
            .unwrap()
            .contains(&PROTECTION.to_string()));
        let volume = spec.volume_name.unwrap();
        let pv: PersistentVolume = objects.get_as(None, &volume).unwrap();
        let pv_spec = pv.spec.unwrap();
        assert_eq!(pv.status.unwrap().phase.as_deref(), Some("Bound"));
        assert_eq!(pv_spec.claim_ref.unwrap().uid, c.metadata.uid);
        assert_eq!(
            pv_spec.persistent_volume_reclaim_policy.as_deref(),
            Some("Delete")
        );
        let path = pv_spec.host_path.unwrap().path;
        assert_eq!(*dirs.0.lock(), vec![path.clone()]);

        // In use: deleting it leaves it terminating, the volume kept.
        objects
            .delete(
                kinds::of::<PersistentVolumeClaim>(),
                Some("default"),
                "data",
                DeleteOptions::default(),
                now,
            )
            .unwrap();
        manager.run_until_idle(now);
        let c: PersistentVolumeClaim = objects.get_as(Some("default"), "data").unwrap();
        assert!(c.metadata.deletion_timestamp.is_some());
        assert_eq!(dirs.0.lock().len(), 1);

        // The pod goes: the claim, the volume and its directory follow.
        objects
            .delete(
                kinds::of::<Pod>(),
                Some("default"),
                "p",
                DeleteOptions {
                    grace_period_seconds: Some(0),
                    ..Default::default()
                },
                now,
            )
            .unwrap();
        manager.run_until_idle(now);
        assert!(objects
            .get_as::<PersistentVolumeClaim>(Some("default"), "data")
            .is_err());
        assert!(objects.get_as::<PersistentVolume>(None, &volume).is_err());
        assert!(dirs.0.lock().is_empty());
    }

    #[test]
    fn a_claim_of_another_provisioners_class_waits_and_retain_keeps_the_data() {
        let (objects, mut manager, dirs, now) = world();
        create(
            &objects,
            None,
            json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                   "metadata": {"name": "elsewhere"}, "provisioner": "example.com/nfs"}),
            now,
        );
        create(
            &objects,
            None,
            json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                   "metadata": {"name": "keep"}, "provisioner": PROVISIONER, "reclaimPolicy": "Retain"}),
            now,
        );
        let mut other = claim("other");
        other["spec"]["storageClassName"] = "elsewhere".into();
        create(&objects, Some("default"), other, now);
        let mut kept = claim("kept");
        kept["spec"]["storageClassName"] = "keep".into();
        create(&objects, Some("default"), kept, now);
        manager.run_until_idle(now);

        let other: PersistentVolumeClaim = objects.get_as(Some("default"), "other").unwrap();
        assert_eq!(other.status.unwrap().phase.as_deref(), Some("Pending"));
        let kept: PersistentVolumeClaim = objects.get_as(Some("default"), "kept").unwrap();
        let volume = kept.spec.unwrap().volume_name.unwrap();
        objects
            .delete(
                kinds::of::<PersistentVolumeClaim>(),
                Some("default"),
                "kept",
                DeleteOptions::default(),
                now,
            )
            .unwrap();
        manager.run_until_idle(now);
        let pv: PersistentVolume = objects.get_as(None, &volume).unwrap();
        assert_eq!(pv.status.unwrap().phase.as_deref(), Some("Released"));
        assert_eq!(dirs.0.lock().len(), 1, "Retain keeps the directory");
    }
}
