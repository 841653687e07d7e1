//! core/v1 Event: what the reconcilers did, for `kubectl describe` and
//! `kubectl get events`.

use std::time::{SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Event;
use serde_json::Value;

use super::{human_duration, Column, KindRules};

impl KindRules for Event {
    const SHORT_NAMES: &'static [&'static str] = &["ev"];
    const FIELDS: &'static [&'static str] = &[
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    ];

    fn columns() -> &'static [Column] {
        const C: &[Column] = &[
            Column::new("Last Seen", "string"),
            Column::new("Type", "string"),
            Column::new("Reason", "string"),
            Column::new("Object", "string"),
            Column::new("Message", "string"),
        ];
        C
    }

    fn cells(&self, now: SystemTime) -> Vec<Value> {
        let now_s = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let last = self
            .last_timestamp
            .as_ref()
            .or(self.first_timestamp.as_ref())
            .map(|t| human_duration(now_s - t.0.as_second()))
            .unwrap_or_else(|| "<unknown>".into());
        let o = &self.involved_object;
        vec![
            last.into(),
            self.type_.clone().unwrap_or_default().into(),
            self.reason.clone().unwrap_or_default().into(),
            format!(
                "{}/{}",
                o.kind.clone().unwrap_or_default().to_lowercase(),
                o.name.clone().unwrap_or_default()
            )
            .into(),
            self.message.clone().unwrap_or_default().into(),
        ]
    }
}
