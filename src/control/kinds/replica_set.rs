//! apps/v1 ReplicaSet: defaults, validation and columns.

use std::time::SystemTime;

use k8s_openapi::api::apps::v1::ReplicaSet;
use serde_json::Value;

use super::pod::default_pod_spec;
use super::validate::FieldError;
use super::workload::{containers_cells, selector_cell, validate_template};
use super::{age_cell, name_cell, Column, KindRules};

impl KindRules for ReplicaSet {
    const SHORT_NAMES: &'static [&'static str] = &["rs"];
    const CATEGORIES: &'static [&'static str] = &["all"];
    const STATUS: bool = true;
    const GENERATION: bool = true;
    const SCALE: bool = true;

    fn default_fields(&mut self) {
        let spec = &mut self.spec;
        spec.replicas.get_or_insert(1);
        if let Some(s) = spec.template.as_mut().and_then(|t| t.spec.as_mut()) {
            default_pod_spec(s);
        }
    }

    fn validate(&self, _old: Option<&Self>) -> Vec<FieldError> {
        let spec = &self.spec;
        match &spec.template {
            Some(t) => validate_template(&spec.selector, t, spec.replicas),
            None => vec![FieldError::required("spec.template")],
        }
    }

    fn columns() -> &'static [Column] {
        const C: &[Column] = &[
            Column::NAME,
            Column::new("Desired", "integer"),
            Column::new("Current", "integer"),
            Column::new("Ready", "integer"),
            Column::AGE,
            Column::wide("Containers", "string"),
            Column::wide("Images", "string"),
            Column::wide("Selector", "string"),
        ];
        C
    }

    fn cells(&self, now: SystemTime) -> Vec<Value> {
        let spec = self.spec.clone();
        let status = self.status.clone().unwrap_or_default();
        let (containers, images) = containers_cells(&spec.template.clone().unwrap_or_default());
        vec![
            name_cell(&self.metadata),
            spec.replicas.unwrap_or(1).into(),
            status.replicas.into(),
            status.ready_replicas.unwrap_or(0).into(),
            age_cell(&self.metadata, now),
            containers,
            images,
            selector_cell(&spec.selector),
        ]
    }
}
