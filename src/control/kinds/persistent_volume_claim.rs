//! core/v1 PersistentVolumeClaim: defaults, validation and the
//! `kubectl get pvc` columns (NAME STATUS VOLUME CAPACITY ACCESS MODES
//! STORAGECLASS VOLUMEATTRIBUTESCLASS AGE). Claims are provisioned and bound
//! by [`crate::control::reconcile::volume_claims`].

use std::time::SystemTime;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use serde_json::Value;

use super::validate::FieldError;
use super::{age_cell, name_cell, Column, KindRules};
use crate::control::reconcile::pod_env::parse_quantity;

/// The access modes a volume can have.
pub const ACCESS_MODES: &[&str] = &[
    "ReadWriteOnce",
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOncePod",
];

/// Access modes as `kubectl get` abbreviates them (`RWO,ROX`).
pub fn access_modes_cell(modes: Option<&Vec<String>>) -> Value {
    modes
        .into_iter()
        .flatten()
        .map(|m| match m.as_str() {
            "ReadWriteOnce" => "RWO",
            "ReadOnlyMany" => "ROX",
            "ReadWriteMany" => "RWX",
            "ReadWriteOncePod" => "RWOP",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(",")
        .into()
}

/// Checks a list of access modes at `field`.
pub fn validate_access_modes(modes: Option<&Vec<String>>, field: &str) -> Vec<FieldError> {
    let modes = modes.map(Vec::as_slice).unwrap_or_default();
    if modes.is_empty() {
        return vec![FieldError::required(field)];
    }
    modes
        .iter()
        .enumerate()
        .filter(|(_, m)| !ACCESS_MODES.contains(&m.as_str()))
        .map(|(i, m)| FieldError::not_supported(format!("{field}[{i}]"), m, ACCESS_MODES))
        .collect()
}

impl KindRules for PersistentVolumeClaim {
    const SHORT_NAMES: &'static [&'static str] = &["pvc"];
    const STATUS: bool = true;

    fn default_fields(&mut self) {
        let spec = self.spec.get_or_insert_with(Default::default);
        spec.volume_mode.get_or_insert_with(|| "Filesystem".into());
        let status = self.status.get_or_insert_with(Default::default);
        status.phase.get_or_insert_with(|| "Pending".into());
    }

    fn validate(&self, old: Option<&Self>) -> Vec<FieldError> {
        let spec = self.spec.clone().unwrap_or_default();
        let mut errors = validate_access_modes(spec.access_modes.as_ref(), "spec.accessModes");
        let storage = spec
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"));
        match storage {
            None => errors.push(FieldError::required("spec.resources[storage]")),
            Some(q) if parse_quantity(&q.0).is_none_or(|n| n <= 0) => {
                errors.push(FieldError::invalid(
                    "spec.resources.requests[storage]",
                    format!("\"{}\"", q.0),
                    "must be greater than zero",
                ))
            }
            Some(_) => {}
        }
        if let Some(mode) = spec.volume_mode.as_deref() {
            if !["Filesystem", "Block"].contains(&mode) {
                errors.push(FieldError::not_supported(
                    "spec.volumeMode",
                    mode,
                    &["Block", "Filesystem"],
                ));
            }
        }
        if let Some(old) = old {
            // Once bound, the claim's spec stays (a class may be set once,
            // as the API server lets the default be assigned later).
            let was = old.spec.clone().unwrap_or_default();
            let mut now = spec.clone();
            if was.storage_class_name.is_none() {
                now.storage_class_name = None;
            }
            if was.volume_name.is_none() {
                now.volume_name = None;
            }
            let mut then = was.clone();
            then.storage_class_name = now.storage_class_name.clone();
            then.volume_name = now.volume_name.clone();
            if now != then {
                errors.push(FieldError::forbidden(
                    "spec",
                    "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
                ));
            }
        }
        errors
    }

    fn columns() -> &'static [Column] {
        const C: &[Column] = &[
            Column::NAME,
            Column::new("Status", "string"),
            Column::new("Volume", "string"),
            Column::new("Capacity", "string"),
            Column::new("Access Modes", "string"),
            Column::new("StorageClass", "string"),
            Column::new("VolumeAttributesClass", "string"),
            Column::AGE,
            Column::wide("VolumeMode", "string"),
        ];
        C
    }

    fn cells(&self, now: SystemTime) -> Vec<Value> {
        let spec = self.spec.clone().unwrap_or_default();
        let status = self.status.clone().unwrap_or_default();
        let phase = if self.metadata.deletion_timestamp.is_some() {
            "Terminating".to_string()
        } else {
            status.phase.clone().unwrap_or_else(|| "Pending".into())
        };
        let capacity = status
            .capacity
            .as_ref()
            .and_then(|c| c.get("storage"))
            .map(|q| q.0.clone())
            .unwrap_or_default();
        vec![
            name_cell(&self.metadata),
            phase.into(),
            spec.volume_name.unwrap_or_default().into(),
            capacity.into(),
            access_modes_cell(status.access_modes.as_ref()),
            spec.storage_class_name.unwrap_or_default().into(),
            spec.volume_attributes_class_name
                .unwrap_or_else(|| "<unset>".into())
                .into(),
            age_cell(&self.metadata, now),
            spec.volume_mode.unwrap_or_default().into(),
        ]
    }
}
