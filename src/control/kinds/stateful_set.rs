//! apps/v1 StatefulSet: defaults, validation and columns.

use std::time::SystemTime;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetUpdateStrategy};
use serde_json::Value;

use super::pod::default_pod_spec;
use super::validate::FieldError;
use super::workload::{containers_cells, validate_template};
use super::{age_cell, name_cell, Column, KindRules};

const POLICIES: &[&str] = &["OrderedReady", "Parallel"];

impl KindRules for StatefulSet {
    const SHORT_NAMES: &'static [&'static str] = &["sts"];
    const CATEGORIES: &'static [&'static str] = &["all"];
    const STATUS: bool = true;
    const GENERATION: bool = true;
    const SCALE: bool = true;

    fn default_fields(&mut self) {
        let spec = &mut self.spec;
        spec.replicas.get_or_insert(1);
        spec.revision_history_limit.get_or_insert(10);
        spec.pod_management_policy
            .get_or_insert_with(|| "OrderedReady".into());
        let strategy = spec
            .update_strategy
            .get_or_insert_with(StatefulSetUpdateStrategy::default);
        strategy.type_.get_or_insert_with(|| "RollingUpdate".into());
        if let Some(s) = spec.template.spec.as_mut() {
            default_pod_spec(s);
        }
    }

    fn validate(&self, _old: Option<&Self>) -> Vec<FieldError> {
        let spec = &self.spec;
        // Each claim template is a volume of every pod (its claim).
        let mut template = spec.template.clone();
        for t in spec.volume_claim_templates.iter().flatten() {
            let name = t.metadata.name.clone().unwrap_or_default();
            let pod_spec = template.spec.get_or_insert_with(Default::default);
            let volumes = pod_spec.volumes.get_or_insert_with(Vec::new);
            if !volumes.iter().any(|v| v.name == name) {
                volumes.push(k8s_openapi::api::core::v1::Volume {
                    name: name.clone(),
                    persistent_volume_claim: Some(
                        k8s_openapi::api::core::v1::PersistentVolumeClaimVolumeSource {
                            claim_name: format!("{name}-claim"),
                            read_only: None,
                        },
                    ),
                    ..Default::default()
                });
            }
        }
        let mut errors = validate_template(&spec.selector, &template, spec.replicas);
        let policy = spec
            .pod_management_policy
            .as_deref()
            .unwrap_or("OrderedReady");
        if !POLICIES.contains(&policy) {
            errors.push(FieldError::not_supported(
                "spec.podManagementPolicy",
                policy,
                POLICIES,
            ));
        }
        errors
    }

    fn columns() -> &'static [Column] {
        const C: &[Column] = &[
            Column::NAME,
            Column::new("Ready", "string"),
            Column::AGE,
            Column::wide("Containers", "string"),
            Column::wide("Images", "string"),
        ];
        C
    }

    fn cells(&self, now: SystemTime) -> Vec<Value> {
        let spec = self.spec.clone();
        let status = self.status.clone().unwrap_or_default();
        let (containers, images) = containers_cells(&spec.template);
        vec![
            name_cell(&self.metadata),
            format!(
                "{}/{}",
                status.ready_replicas.unwrap_or(0),
                spec.replicas.unwrap_or(1)
            )
            .into(),
            age_cell(&self.metadata, now),
            containers,
            images,
        ]
    }
}
