//! core/v1 ConfigMap (stored and served; its use inside pods comes with
//! volumes).

use std::time::SystemTime;

use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::Value;

use super::validate::FieldError;
use super::{age_cell, name_cell, Column, KindRules};

/// A ConfigMap or Secret key: `[-._a-zA-Z0-9]+`, at most 253.
pub fn validate_keys<'a>(keys: impl Iterator<Item = &'a String>, field: &str) -> Vec<FieldError> {
    keys.filter(|k| {
        k.is_empty()
            || k.len() > 253
            || !k
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    })
    .map(|k| {
        FieldError::invalid(
            format!("{field}[{k}]"),
            format!("\"{k}\""),
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
        )
    })
    .collect()
}

impl KindRules for ConfigMap {
    const SHORT_NAMES: &'static [&'static str] = &["cm"];

    fn validate(&self, _old: Option<&Self>) -> Vec<FieldError> {
        let mut errors = validate_keys(self.data.iter().flat_map(|d| d.keys()), "data");
        errors.extend(validate_keys(
            self.binary_data.iter().flat_map(|d| d.keys()),
            "binaryData",
        ));
        errors
    }

    fn columns() -> &'static [Column] {
        const C: &[Column] = &[Column::NAME, Column::new("Data", "integer"), Column::AGE];
        C
    }

    fn cells(&self, now: SystemTime) -> Vec<Value> {
        let n = self.data.as_ref().map_or(0, |d| d.len())
            + self.binary_data.as_ref().map_or(0, |d| d.len());
        vec![
            name_cell(&self.metadata),
            n.into(),
            age_cell(&self.metadata, now),
        ]
    }
}
