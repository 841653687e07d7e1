//! core/v1 Node: this node, as podnetd reports it.

use std::time::SystemTime;

use k8s_openapi::api::core::v1::Node;
use serde_json::Value;

use super::{age_cell, name_cell, Column, KindRules};

impl KindRules for Node {
    const SHORT_NAMES: &'static [&'static str] = &["no"];
    const STATUS: bool = true;

    fn columns() -> &'static [Column] {
        const C: &[Column] = &[
            Column::NAME,
            Column::new("Status", "string"),
            Column::new("Roles", "string"),
            Column::AGE,
            Column::new("Version", "string"),
            Column::wide("Internal-IP", "string"),
            Column::wide("External-IP", "string"),
            Column::wide("OS-Image", "string"),
            Column::wide("Kernel-Version", "string"),
            Column::wide("Container-Runtime", "string"),
        ];
        C
    }

    fn cells(&self, now: SystemTime) -> Vec<Value> {
        let status = self.status.clone().unwrap_or_default();
        let ready = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Ready")
            .map(|c| {
                if c.status == "True" {
                    "Ready"
                } else {
                    "NotReady"
                }
            })
            .unwrap_or("Unknown");
        let addr = |t: &str| {
            status
                .addresses
                .iter()
                .flatten()
                .find(|a| a.type_ == t)
                .map(|a| a.address.clone())
                .unwrap_or_else(|| "<none>".into())
        };
        let info = status.node_info.clone().unwrap_or_default();
        let roles: Vec<String> = self
            .metadata
            .labels
            .iter()
            .flatten()
            .filter_map(|(k, _)| {
                k.strip_prefix("node-role.kubernetes.io/")
                    .map(str::to_string)
            })
            .collect();
        vec![
            name_cell(&self.metadata),
            ready.into(),
            if roles.is_empty() {
                "<none>".into()
            } else {
                roles.join(",").into()
            },
            age_cell(&self.metadata, now),
            info.kubelet_version.clone().into(),
            addr("InternalIP").into(),
            addr("ExternalIP").into(),
            info.os_image.clone().into(),
            info.kernel_version.clone().into(),
            info.container_runtime_version.clone().into(),
        ]
    }
}
