//! core/v1 Namespace.

use std::time::SystemTime;

use k8s_openapi::api::core::v1::{Namespace, NamespaceStatus};
use serde_json::Value;

use super::validate::{dns1123_label, FieldError};
use super::{age_cell, name_cell, Column, KindRules};

impl KindRules for Namespace {
    const SHORT_NAMES: &'static [&'static str] = &["ns"];
    const STATUS: bool = true;
    const FIELDS: &'static [&'static str] = &["status.phase"];

    fn default_fields(&mut self) {
        let status = self.status.get_or_insert_with(NamespaceStatus::default);
        status.phase.get_or_insert_with(|| "Active".into());
        self.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(
                "kubernetes.io/metadata.name".into(),
                self.metadata.name.clone().unwrap_or_default(),
            );
    }

    fn validate(&self, _old: Option<&Self>) -> Vec<FieldError> {
        let name = self.metadata.name.as_deref().unwrap_or("");
        dns1123_label(name)
            .map(|why| FieldError::invalid("metadata.name", format!("\"{name}\""), &why))
            .into_iter()
            .collect()
    }

    fn columns() -> &'static [Column] {
        const C: &[Column] = &[Column::NAME, Column::new("Status", "string"), Column::AGE];
        C
    }

    fn cells(&self, now: SystemTime) -> Vec<Value> {
        let phase = self
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        vec![
            name_cell(&self.metadata),
            phase.into(),
            age_cell(&self.metadata, now),
        ]
    }
}
