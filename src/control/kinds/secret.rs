//! core/v1 Secret (stored and served; its use inside pods comes with
//! volumes). `stringData` is folded into `data` on write, as the API server
//! does.

use std::time::SystemTime;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use serde_json::Value;

use super::config_map::validate_keys;
use super::validate::FieldError;
use super::{age_cell, name_cell, Column, KindRules};

impl KindRules for Secret {
    fn default_fields(&mut self) {
        self.type_.get_or_insert_with(|| "Opaque".into());
        if let Some(strings) = self.string_data.take() {
            let data = self.data.get_or_insert_with(Default::default);
            for (k, v) in strings {
                data.insert(k, ByteString(v.into_bytes()));
            }
        }
    }

    fn validate(&self, _old: Option<&Self>) -> Vec<FieldError> {
        validate_keys(self.data.iter().flat_map(|d| d.keys()), "data")
    }

    fn columns() -> &'static [Column] {
        const C: &[Column] = &[
            Column::NAME,
            Column::new("Type", "string"),
            Column::new("Data", "integer"),
            Column::AGE,
        ];
        C
    }

    fn cells(&self, now: SystemTime) -> Vec<Value> {
        vec![
            name_cell(&self.metadata),
            self.type_.clone().unwrap_or_default().into(),
            self.data.as_ref().map_or(0, |d| d.len()).into(),
            age_cell(&self.metadata, now),
        ]
    }
}
