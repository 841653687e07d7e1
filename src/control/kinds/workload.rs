//! What the workload kinds (Deployment, ReplicaSet, StatefulSet) share: the
//! selector and template rules, and their table cells.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::Value;

use super::pod::validate_pod_spec;
use super::validate::{labels, FieldError};
use crate::control::objects::selector;

/// The selector as a query selector (`matchLabels` and `matchExpressions`).
pub fn to_query(sel: &LabelSelector) -> Result<selector::LabelSelector, selector::SelectorError> {
    let mut parts: Vec<String> = sel
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in sel.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            other => format!("{} {other} ({values})", e.key),
        });
    }
    selector::LabelSelector::parse(&parts.join(","))
}

/// Selector required and non-empty, matching the template's labels; the
/// template's pod spec valid; replicas not negative.
pub fn validate_template(
    sel: &LabelSelector,
    template: &PodTemplateSpec,
    replicas: Option<i32>,
) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if replicas.is_some_and(|r| r < 0) {
        errors.push(FieldError::invalid(
            "spec.replicas",
            replicas.unwrap_or(0),
            "must be greater than or equal to 0",
        ));
    }
    let template_labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    errors.extend(labels(
        Some(&template_labels),
        "spec.template.metadata.labels",
    ));
    match to_query(sel) {
        Ok(q) if q.is_empty() => errors.push(FieldError::invalid(
            "spec.selector",
            "{}",
            "empty selector is invalid for deployment",
        )),
        Ok(q) if !q.matches(&template_labels) => errors.push(FieldError::invalid(
            "spec.template.metadata.labels",
            format!("{template_labels:?}"),
            "`selector` does not match template `labels`",
        )),
        Ok(_) => {}
        Err(e) => errors.push(FieldError::invalid("spec.selector", "", &e.to_string())),
    }
    match &template.spec {
        Some(spec) => errors.extend(validate_pod_spec(spec, "spec.template.spec")),
        None => errors.push(FieldError::required("spec.template.spec")),
    }
    errors
}

/// The CONTAINERS and IMAGES cells.
pub fn containers_cells(template: &PodTemplateSpec) -> (Value, Value) {
    let containers = template
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or(&[]);
    let names: Vec<&str> = containers.iter().map(|c| c.name.as_str()).collect();
    let images: Vec<&str> = containers
        .iter()
        .map(|c| c.image.as_deref().unwrap_or(""))
        .collect();
    (names.join(",").into(), images.join(",").into())
}

/// The SELECTOR cell.
pub fn selector_cell(sel: &LabelSelector) -> Value {
    let parts: Vec<String> = sel
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if parts.is_empty() {
        "<none>".into()
    } else {
        parts.join(",").into()
    }
}
