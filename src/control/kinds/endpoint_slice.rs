//! discovery.k8s.io/v1 EndpointSlice: written by the service reconciler.

use std::time::SystemTime;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::Value;

use super::validate::FieldError;
use super::{age_cell, name_cell, Column, KindRules};

const ADDRESS_TYPES: &[&str] = &["IPv4", "IPv6", "FQDN"];

impl KindRules for EndpointSlice {
    fn validate(&self, _old: Option<&Self>) -> Vec<FieldError> {
        if ADDRESS_TYPES.contains(&self.address_type.as_str()) {
            Vec::new()
        } else {
            vec![FieldError::not_supported(
                "addressType",
                &self.address_type,
                ADDRESS_TYPES,
            )]
        }
    }

    fn columns() -> &'static [Column] {
        const C: &[Column] = &[
            Column::NAME,
            Column::new("AddressType", "string"),
            Column::new("Ports", "string"),
            Column::new("Endpoints", "string"),
            Column::AGE,
        ];
        C
    }

    fn cells(&self, now: SystemTime) -> Vec<Value> {
        let ports: Vec<String> = self
            .ports
            .iter()
            .flatten()
            .filter_map(|p| p.port.map(|p| p.to_string()))
            .collect();
        let mut addrs: Vec<String> = self
            .endpoints
            .iter()
            .flatten()
            .flat_map(|e| e.addresses.clone())
            .collect();
        let more = addrs.len().saturating_sub(3);
        addrs.truncate(3);
        let mut cell = if addrs.is_empty() {
            "<unset>".to_string()
        } else {
            addrs.join(",")
        };
        if more > 0 {
            cell.push_str(&format!(" + {more} more..."));
        }
        vec![
            name_cell(&self.metadata),
            self.address_type.clone().into(),
            if ports.is_empty() {
                "<unset>".into()
            } else {
                ports.join(",").into()
            },
            cell.into(),
            age_cell(&self.metadata, now),
        ]
    }
}
