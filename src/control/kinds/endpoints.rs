//! core/v1 Endpoints: written by the service reconciler.

use std::time::SystemTime;

use k8s_openapi::api::core::v1::Endpoints;
use serde_json::Value;

use super::{age_cell, name_cell, Column, KindRules};

impl KindRules for Endpoints {
    const SHORT_NAMES: &'static [&'static str] = &["ep"];

    fn columns() -> &'static [Column] {
        const C: &[Column] = &[
            Column::NAME,
            Column::new("Endpoints", "string"),
            Column::AGE,
        ];
        C
    }

    fn cells(&self, now: SystemTime) -> Vec<Value> {
        let mut shown = Vec::new();
        for subset in self.subsets.iter().flatten() {
            for a in subset.addresses.iter().flatten() {
                let ports = subset.ports.as_deref().unwrap_or(&[]);
                if ports.is_empty() {
                    shown.push(a.ip.clone());
                }
                for p in ports {
                    shown.push(format!("{}:{}", a.ip, p.port));
                }
            }
        }
        let more = shown.len().saturating_sub(3);
        shown.truncate(3);
        let mut cell = if shown.is_empty() {
            "<none>".to_string()
        } else {
            shown.join(",")
        };
        if more > 0 {
            cell.push_str(&format!(" + {more} more..."));
        }
        vec![
            name_cell(&self.metadata),
            cell.into(),
            age_cell(&self.metadata, now),
        ]
    }
}
