//! core/v1 PersistentVolume (cluster-scoped): validation and the
//! `kubectl get pv` columns (NAME CAPACITY ACCESS MODES RECLAIM POLICY
//! STATUS CLAIM STORAGECLASS VOLUMEATTRIBUTESCLASS REASON AGE).

use std::time::SystemTime;

use k8s_openapi::api::core::v1::PersistentVolume;
use serde_json::Value;

use super::persistent_volume_claim::{access_modes_cell, validate_access_modes};
use super::validate::FieldError;
use super::{age_cell, name_cell, Column, KindRules};

const RECLAIM_POLICIES: &[&str] = &["Delete", "Recycle", "Retain"];

impl KindRules for PersistentVolume {
    const SHORT_NAMES: &'static [&'static str] = &["pv"];
    const STATUS: bool = true;

    fn default_fields(&mut self) {
        let spec = self.spec.get_or_insert_with(Default::default);
        spec.persistent_volume_reclaim_policy
            .get_or_insert_with(|| "Retain".into());
        spec.volume_mode.get_or_insert_with(|| "Filesystem".into());
        let status = self.status.get_or_insert_with(Default::default);
        status.phase.get_or_insert_with(|| "Pending".into());
    }

    fn validate(&self, _old: Option<&Self>) -> Vec<FieldError> {
        let spec = self.spec.clone().unwrap_or_default();
        let mut errors = validate_access_modes(spec.access_modes.as_ref(), "spec.accessModes");
        if spec
            .capacity
            .as_ref()
            .and_then(|c| c.get("storage"))
            .is_none()
        {
            errors.push(FieldError::required("spec.capacity"));
        }
        if let Some(p) = spec.persistent_volume_reclaim_policy.as_deref() {
            if !RECLAIM_POLICIES.contains(&p) {
                errors.push(FieldError::not_supported(
                    "spec.persistentVolumeReclaimPolicy",
                    p,
                    RECLAIM_POLICIES,
                ));
            }
        }
        match (&spec.host_path, &spec.local) {
            (Some(h), _) if !h.path.starts_with('/') => errors.push(FieldError::invalid(
                "spec.hostPath.path",
                format!("\"{}\"", h.path),
                "must be an absolute path",
            )),
            (_, Some(l)) if !l.path.starts_with('/') => errors.push(FieldError::invalid(
                "spec.local.path",
                format!("\"{}\"", l.path),
                "must be an absolute path",
            )),
            (None, None) => errors.push(FieldError::required(
                "spec: a volume source (podnet serves hostPath and local volumes)",
            )),
            _ => {}
        }
        errors
    }

    fn columns() -> &'static [Column] {
        const C: &[Column] = &[
            Column::NAME,
            Column::new("Capacity", "string"),
            Column::new("Access Modes", "string"),
            Column::new("Reclaim Policy", "string"),
            Column::new("Status", "string"),
            Column::new("Claim", "string"),
            Column::new("StorageClass", "string"),
            Column::new("VolumeAttributesClass", "string"),
            Column::new("Reason", "string"),
            Column::AGE,
            Column::wide("VolumeMode", "string"),
        ];
        C
    }

    fn cells(&self, now: SystemTime) -> Vec<Value> {
        let spec = self.spec.clone().unwrap_or_default();
        let status = self.status.clone().unwrap_or_default();
        let claim = spec
            .claim_ref
            .as_ref()
            .map(|c| {
                format!(
                    "{}/{}",
                    c.namespace.clone().unwrap_or_default(),
                    c.name.clone().unwrap_or_default()
                )
            })
            .unwrap_or_default();
        let phase = if self.metadata.deletion_timestamp.is_some() {
            "Terminating".to_string()
        } else {
            status.phase.clone().unwrap_or_default()
        };
        vec![
            name_cell(&self.metadata),
            spec.capacity
                .as_ref()
                .and_then(|c| c.get("storage"))
                .map(|q| q.0.clone())
                .unwrap_or_default()
                .into(),
            access_modes_cell(spec.access_modes.as_ref()),
            spec.persistent_volume_reclaim_policy
                .unwrap_or_default()
                .into(),
            phase.into(),
            claim.into(),
            spec.storage_class_name.unwrap_or_default().into(),
            spec.volume_attributes_class_name
                .unwrap_or_else(|| "<unset>".into())
                .into(),
            status.reason.unwrap_or_default().into(),
            age_cell(&self.metadata, now),
            spec.volume_mode.unwrap_or_default().into(),
        ]
    }
}
