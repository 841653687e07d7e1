//! core/v1 Service: defaults, validation and `kubectl get svc` columns.
//! Cluster IPs are handed out by the store's admission step, not here.

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::SystemTime;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use super::validate::{dns1123_label, port, FieldError};
use super::{age_cell, name_cell, Column, KindRules};

const TYPES: &[&str] = &["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];
const PROTOCOLS: &[&str] = &["TCP", "UDP", "SCTP"];
const AFFINITIES: &[&str] = &["None", "ClientIP"];

/// `PORT(S)` as kubectl shows it: `80/TCP`, `80:30080/TCP`.
fn ports_cell(svc: &Service) -> String {
    let ports: Vec<String> = svc
        .spec
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .map(|p| {
            let proto = p.protocol.as_deref().unwrap_or("TCP");
            match p.node_port {
                Some(np) => format!("{}:{np}/{proto}", p.port),
                None => format!("{}/{proto}", p.port),
            }
        })
        .collect();
    if ports.is_empty() {
        "<none>".into()
    } else {
        ports.join(",")
    }
}

impl KindRules for Service {
    const SHORT_NAMES: &'static [&'static str] = &["svc"];
    const CATEGORIES: &'static [&'static str] = &["all"];
    const STATUS: bool = true;
    const NAME_IS_LABEL: bool = true;

    fn default_fields(&mut self) {
        let spec = self.spec.get_or_insert_with(Default::default);
        spec.type_.get_or_insert_with(|| "ClusterIP".into());
        spec.session_affinity.get_or_insert_with(|| "None".into());
        if spec.type_.as_deref() != Some("ExternalName") {
            spec.internal_traffic_policy
                .get_or_insert_with(|| "Cluster".into());
        }
        if matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer")) {
            spec.external_traffic_policy
                .get_or_insert_with(|| "Cluster".into());
        }
        for p in spec.ports.iter_mut().flatten() {
            p.protocol.get_or_insert_with(|| "TCP".into());
            p.target_port.get_or_insert(IntOrString::Int(p.port));
        }
    }

    fn validate(&self, old: Option<&Self>) -> Vec<FieldError> {
        let Some(spec) = &self.spec else {
            return vec![FieldError::required("spec")];
        };
        let mut errors = Vec::new();
        let type_ = spec.type_.as_deref().unwrap_or("ClusterIP");
        if !TYPES.contains(&type_) {
            errors.push(FieldError::not_supported("spec.type", type_, TYPES));
        }
        let headless = spec.cluster_ip.as_deref() == Some("None");
        let ports = spec.ports.as_deref().unwrap_or(&[]);
        if ports.is_empty() && !headless && type_ != "ExternalName" {
            errors.push(FieldError::required("spec.ports"));
        }
        let mut names = HashSet::new();
        let mut seen = HashSet::new();
        for (i, p) in ports.iter().enumerate() {
            let path = format!("spec.ports[{i}]");
            errors.extend(port(p.port, &format!("{path}.port")));
            match &p.name {
                Some(n) if !n.is_empty() => {
                    if let Some(why) = dns1123_label(n) {
                        errors.push(FieldError::invalid(
                            format!("{path}.name"),
                            format!("\"{n}\""),
                            &why,
                        ));
                    }
                    if !names.insert(n.clone()) {
                        errors.push(FieldError::duplicate(
                            format!("{path}.name"),
                            format!("\"{n}\""),
                        ));
                    }
                }
                _ if ports.len() > 1 => errors.push(FieldError::required(format!("{path}.name"))),
                _ => {}
            }
            let proto = p.protocol.as_deref().unwrap_or("TCP");
            if !PROTOCOLS.contains(&proto) {
                errors.push(FieldError::not_supported(
                    format!("{path}.protocol"),
                    proto,
                    PROTOCOLS,
                ));
            }
            if !seen.insert((p.port, proto.to_string())) {
                errors.push(FieldError::duplicate(
                    path.clone(),
                    format!("{{Port:{} Protocol:{proto}}}", p.port),
                ));
            }
            match &p.target_port {
                Some(IntOrString::Int(t)) => errors.extend(port(*t, &format!("{path}.targetPort"))),
                Some(IntOrString::String(s)) if s.is_empty() || s.len() > 15 => {
                    errors.push(FieldError::invalid(
                        format!("{path}.targetPort"),
                        format!("\"{s}\""),
                        "must be a port number or an IANA_SVC_NAME (at most 15 characters)",
                    ));
                }
                _ => {}
            }
            if let Some(np) = p.node_port {
                errors.extend(port(np, &format!("{path}.nodePort")));
            }
        }
        if let Some(ip) = spec.cluster_ip.as_deref() {
            if !ip.is_empty() && ip != "None" && ip.parse::<IpAddr>().is_err() {
                errors.push(FieldError::invalid(
                    "spec.clusterIP",
                    format!("\"{ip}\""),
                    "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                ));
            }
        }
        let affinity = spec.session_affinity.as_deref().unwrap_or("None");
        if !AFFINITIES.contains(&affinity) {
            errors.push(FieldError::not_supported(
                "spec.sessionAffinity",
                affinity,
                AFFINITIES,
            ));
        }
        if let Some(old_ip) = old
            .and_then(|o| o.spec.as_ref())
            .and_then(|s| s.cluster_ip.as_deref())
        {
            let new_ip = spec.cluster_ip.as_deref().unwrap_or("");
            if !old_ip.is_empty() && new_ip != old_ip && !new_ip.is_empty() {
                errors.push(FieldError::invalid(
                    "spec.clusterIP",
                    format!("\"{new_ip}\""),
                    "field is immutable",
                ));
            }
        }
        errors
    }

    fn columns() -> &'static [Column] {
        const C: &[Column] = &[
            Column::NAME,
            Column::new("Type", "string"),
            Column::new("Cluster-IP", "string"),
            Column::new("External-IP", "string"),
            Column::new("Port(s)", "string"),
            Column::AGE,
            Column::wide("Selector", "string"),
        ];
        C
    }

    fn cells(&self, now: SystemTime) -> Vec<Value> {
        let spec = self.spec.clone().unwrap_or_default();
        let external: Vec<String> = spec
            .external_ips
            .clone()
            .unwrap_or_default()
            .into_iter()
            .chain(
                self.status
                    .iter()
                    .flat_map(|s| s.load_balancer.iter())
                    .flat_map(|lb| lb.ingress.iter().flatten())
                    .filter_map(|i| i.ip.clone()),
            )
            .collect();
        let external = match (spec.type_.as_deref(), external.is_empty()) {
            (_, false) => external.join(","),
            (Some("LoadBalancer"), true) => "<pending>".into(),
            (Some("ExternalName"), true) => spec.external_name.clone().unwrap_or_default(),
            _ => "<none>".into(),
        };
        let selector = spec
            .selector
            .as_ref()
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_else(|| "<none>".into());
        vec![
            name_cell(&self.metadata),
            spec.type_.clone().unwrap_or_default().into(),
            spec.cluster_ip
                .clone()
                .unwrap_or_else(|| "<none>".into())
                .into(),
            external.into(),
            ports_cell(self).into(),
            age_cell(&self.metadata, now),
            selector.into(),
        ]
    }
}
