//! apps/v1 Deployment: defaults, validation and columns.

use std::time::SystemTime;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use super::pod::default_pod_spec;
use super::validate::FieldError;
use super::workload::{containers_cells, selector_cell, validate_template};
use super::{age_cell, name_cell, Column, KindRules};

const STRATEGIES: &[&str] = &["RollingUpdate", "Recreate"];

impl KindRules for Deployment {
    const SHORT_NAMES: &'static [&'static str] = &["deploy"];
    const CATEGORIES: &'static [&'static str] = &["all"];
    const STATUS: bool = true;
    const GENERATION: bool = true;
    const SCALE: bool = true;

    fn default_fields(&mut self) {
        let spec = &mut self.spec;
        spec.replicas.get_or_insert(1);
        spec.revision_history_limit.get_or_insert(10);
        spec.progress_deadline_seconds.get_or_insert(600);
        let strategy = spec
            .strategy
            .get_or_insert_with(DeploymentStrategy::default);
        strategy.type_.get_or_insert_with(|| "RollingUpdate".into());
        if strategy.type_.as_deref() == Some("RollingUpdate") {
            let ru = strategy
                .rolling_update
                .get_or_insert_with(RollingUpdateDeployment::default);
            ru.max_surge
                .get_or_insert_with(|| IntOrString::String("25%".into()));
            ru.max_unavailable
                .get_or_insert_with(|| IntOrString::String("25%".into()));
        }
        if let Some(s) = spec.template.spec.as_mut() {
            default_pod_spec(s);
        }
    }

    fn validate(&self, _old: Option<&Self>) -> Vec<FieldError> {
        let spec = &self.spec;
        let mut errors = validate_template(&spec.selector, &spec.template, spec.replicas);
        let strategy = spec
            .strategy
            .as_ref()
            .and_then(|s| s.type_.as_deref())
            .unwrap_or("RollingUpdate");
        if !STRATEGIES.contains(&strategy) {
            errors.push(FieldError::not_supported(
                "spec.strategy.type",
                strategy,
                STRATEGIES,
            ));
        }
        if strategy == "Recreate"
            && spec
                .strategy
                .as_ref()
                .is_some_and(|s| s.rolling_update.is_some())
        {
            errors.push(FieldError::forbidden(
                "spec.strategy.rollingUpdate",
                "may not be specified when strategy `type` is 'Recreate'",
            ));
        }
        errors
    }

    fn columns() -> &'static [Column] {
        const C: &[Column] = &[
            Column::NAME,
            Column::new("Ready", "string"),
            Column::new("Up-to-date", "string"),
            Column::new("Available", "string"),
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
        let (containers, images) = containers_cells(&spec.template);
        vec![
            name_cell(&self.metadata),
            format!(
                "{}/{}",
                status.ready_replicas.unwrap_or(0),
                spec.replicas.unwrap_or(1)
            )
            .into(),
            status.updated_replicas.unwrap_or(0).into(),
            status.available_replicas.unwrap_or(0).into(),
            age_cell(&self.metadata, now),
            containers,
            images,
            selector_cell(&spec.selector),
        ]
    }
}
