//! storage.k8s.io/v1 StorageClass (cluster-scoped): defaults, validation and
//! the `kubectl get sc` columns (NAME PROVISIONER RECLAIMPOLICY
//! VOLUMEBINDINGMODE ALLOWVOLUMEEXPANSION AGE; the default class's name
//! shows ` (default)`, as the API server prints it). podnetd makes its own
//! class, `podnet-local`, at start.

use std::time::SystemTime;

use k8s_openapi::api::storage::v1::StorageClass;
use serde_json::Value;

use super::validate::FieldError;
use super::{age_cell, Column, KindRules};

/// The annotation that makes a class the default for claims without one.
pub const DEFAULT_CLASS_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";

const BINDING_MODES: &[&str] = &["Immediate", "WaitForFirstConsumer"];
const RECLAIM_POLICIES: &[&str] = &["Delete", "Retain"];

/// Whether `class` is marked as the default.
pub fn is_default(class: &StorageClass) -> bool {
    class
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
        .is_some_and(|v| v == "true")
}

impl KindRules for StorageClass {
    const SHORT_NAMES: &'static [&'static str] = &["sc"];

    fn default_fields(&mut self) {
        self.reclaim_policy.get_or_insert_with(|| "Delete".into());
        self.volume_binding_mode
            .get_or_insert_with(|| "Immediate".into());
    }

    fn validate(&self, old: Option<&Self>) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if self.provisioner.is_empty() {
            errors.push(FieldError::required("provisioner"));
        }
        if let Some(p) = self.reclaim_policy.as_deref() {
            if !RECLAIM_POLICIES.contains(&p) {
                errors.push(FieldError::not_supported(
                    "reclaimPolicy",
                    p,
                    RECLAIM_POLICIES,
                ));
            }
        }
        if let Some(m) = self.volume_binding_mode.as_deref() {
            if !BINDING_MODES.contains(&m) {
                errors.push(FieldError::not_supported(
                    "volumeBindingMode",
                    m,
                    BINDING_MODES,
                ));
            }
        }
        if let Some(old) = old {
            for (field, changed) in [
                ("provisioner", old.provisioner != self.provisioner),
                ("parameters", old.parameters != self.parameters),
                ("reclaimPolicy", old.reclaim_policy != self.reclaim_policy),
                (
                    "volumeBindingMode",
                    old.volume_binding_mode != self.volume_binding_mode,
                ),
            ] {
                if changed {
                    errors.push(FieldError::forbidden(
                        field,
                        "updates to this field are forbidden",
                    ));
                }
            }
        }
        errors
    }

    fn columns() -> &'static [Column] {
        const C: &[Column] = &[
            Column::NAME,
            Column::new("Provisioner", "string"),
            Column::new("ReclaimPolicy", "string"),
            Column::new("VolumeBindingMode", "string"),
            Column::new("AllowVolumeExpansion", "string"),
            Column::AGE,
        ];
        C
    }

    fn cells(&self, now: SystemTime) -> Vec<Value> {
        let name = self.metadata.name.clone().unwrap_or_default();
        let name = if is_default(self) {
            format!("{name} (default)")
        } else {
            name
        };
        vec![
            name.into(),
            self.provisioner.clone().into(),
            self.reclaim_policy.clone().unwrap_or_default().into(),
            self.volume_binding_mode.clone().unwrap_or_default().into(),
            self.allow_volume_expansion
                .unwrap_or(false)
                .to_string()
                .into(),
            age_cell(&self.metadata, now),
        ]
    }
}
