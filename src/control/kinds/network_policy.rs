//! networking.k8s.io/v1 NetworkPolicy: the API server's defaults
//! (`policyTypes`, port protocol TCP), its validation (ports and
//! `endPort`, named ports, peers, `ipBlock` CIDR with `except` strictly
//! inside it, `policyTypes`) and `kubectl get netpol` columns (NAME
//! POD-SELECTOR AGE).

use std::time::SystemTime;

use ipnet::IpNet;
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use super::ingress::port_name;
use super::validate::FieldError;
use super::workload::to_query;
use super::{age_cell, name_cell, Column, KindRules};

const PROTOCOLS: &[&str] = &["TCP", "UDP", "SCTP"];
const POLICY_TYPES: &[&str] = &["Ingress", "Egress"];

/// A label selector at `field`, as the API server checks it.
fn validate_selector(sel: &LabelSelector, field: &str) -> Option<FieldError> {
    to_query(sel)
        .err()
        .map(|e| FieldError::invalid(field, "", &e.to_string()))
}

/// One entry of `ports`.
fn validate_port(p: &NetworkPolicyPort, field: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if let Some(proto) = p.protocol.as_deref() {
        if !PROTOCOLS.contains(&proto) {
            errors.push(FieldError::not_supported(
                format!("{field}.protocol"),
                proto,
                PROTOCOLS,
            ));
        }
    }
    match (&p.port, p.end_port) {
        (Some(IntOrString::Int(port)), end) => {
            errors.extend(super::validate::port(*port, &format!("{field}.port")));
            if let Some(end) = end {
                if end < *port {
                    errors.push(FieldError::invalid(
                        format!("{field}.endPort"),
                        port,
                        "must be greater than or equal to `port`",
                    ));
                }
                errors.extend(super::validate::port(end, &format!("{field}.endPort")));
            }
        }
        (Some(IntOrString::String(name)), end) => {
            if let Some(end) = end {
                errors.push(FieldError::invalid(
                    format!("{field}.endPort"),
                    end,
                    "may not be specified when `port` is non-numeric",
                ));
            }
            if let Some(why) = port_name(name) {
                errors.push(FieldError::invalid(
                    format!("{field}.port"),
                    format!("\"{name}\""),
                    &why,
                ));
            }
        }
        (None, Some(end)) => errors.push(FieldError::invalid(
            format!("{field}.endPort"),
            end,
            "may not be specified when `port` is not specified",
        )),
        (None, None) => {}
    }
    errors
}

/// An `ipBlock`: `cidr` a CIDR, each `except` a CIDR of the same family
/// strictly inside it.
fn validate_ip_block(b: &IPBlock, field: &str) -> Vec<FieldError> {
    if b.cidr.is_empty() {
        return vec![FieldError::required(format!("{field}.cidr"))];
    }
    let Ok(cidr) = b.cidr.parse::<IpNet>() else {
        return vec![FieldError::invalid(
            format!("{field}.cidr"),
            format!("\"{}\"", b.cidr),
            "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
        )];
    };
    let mut errors = Vec::new();
    for (i, e) in b.except.iter().flatten().enumerate() {
        let f = format!("{field}.except[{i}]");
        match e.parse::<IpNet>() {
            Err(_) => errors.push(FieldError::invalid(
                f,
                format!("\"{e}\""),
                "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            )),
            Ok(ex) if ex.prefix_len() <= cidr.prefix_len() || !cidr.contains(&ex) => errors.push(
                FieldError::invalid(f, format!("\"{e}\""), "must be a strict subset of `cidr`"),
            ),
            Ok(_) => {}
        }
    }
    errors
}

/// One entry of `from` / `to`: at least one of the selectors or an
/// `ipBlock`, and an `ipBlock` alone.
fn validate_peer(p: &NetworkPolicyPeer, field: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut peers = 0;
    if let Some(s) = &p.pod_selector {
        peers += 1;
        errors.extend(validate_selector(s, &format!("{field}.podSelector")));
    }
    if let Some(s) = &p.namespace_selector {
        peers += 1;
        errors.extend(validate_selector(s, &format!("{field}.namespaceSelector")));
    }
    if let Some(b) = &p.ip_block {
        peers += 1;
        errors.extend(validate_ip_block(b, &format!("{field}.ipBlock")));
    }
    if peers == 0 {
        errors.push(FieldError {
            message: "Required value: must specify a peer".into(),
            ..FieldError::required(field)
        });
    } else if peers > 1 && p.ip_block.is_some() {
        errors.push(FieldError::forbidden(
            field,
            "may not specify both ipBlock and another peer",
        ));
    }
    errors
}

fn validate_rule(
    ports: Option<&Vec<NetworkPolicyPort>>,
    peers: Option<&Vec<NetworkPolicyPeer>>,
    field: &str,
    peer_field: &str,
) -> Vec<FieldError> {
    let mut errors = Vec::new();
    for (i, p) in ports.into_iter().flatten().enumerate() {
        errors.extend(validate_port(p, &format!("{field}.ports[{i}]")));
    }
    for (i, p) in peers.into_iter().flatten().enumerate() {
        errors.extend(validate_peer(p, &format!("{field}.{peer_field}[{i}]")));
    }
    errors
}

/// A selector as `kubectl` prints it (`metav1.FormatLabelSelector`):
/// requirements sorted by key, `<none>` when empty.
pub fn format_selector(sel: &LabelSelector) -> String {
    let mut reqs: Vec<(String, String)> = sel
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), format!("{k}={v}")))
        .collect();
    for e in sel.match_expressions.iter().flatten() {
        let mut values = e.values.clone().unwrap_or_default();
        values.sort();
        let values = values.join(",");
        let text = match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            _ => return "<error>".into(),
        };
        reqs.push((e.key.clone(), text));
    }
    reqs.sort();
    if reqs.is_empty() {
        "<none>".into()
    } else {
        reqs.into_iter()
            .map(|(_, t)| t)
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl KindRules for NetworkPolicy {
    const SHORT_NAMES: &'static [&'static str] = &["netpol"];
    const GENERATION: bool = true;

    fn default_fields(&mut self) {
        let Some(spec) = self.spec.as_mut() else {
            return;
        };
        let ports = spec
            .ingress
            .iter_mut()
            .flatten()
            .flat_map(|r| r.ports.iter_mut().flatten())
            .chain(
                spec.egress
                    .iter_mut()
                    .flatten()
                    .flat_map(|r| r.ports.iter_mut().flatten()),
            );
        for p in ports {
            p.protocol.get_or_insert_with(|| "TCP".into());
        }
        // SetDefaults_NetworkPolicy: Ingress always, Egress when there
        // are egress rules.
        if spec.policy_types.as_ref().is_none_or(Vec::is_empty) {
            let mut types = vec!["Ingress".to_string()];
            if spec.egress.as_ref().is_some_and(|e| !e.is_empty()) {
                types.push("Egress".into());
            }
            spec.policy_types = Some(types);
        }
    }

    fn validate(&self, _old: Option<&Self>) -> Vec<FieldError> {
        let spec = self.spec.clone().unwrap_or_default();
        let mut errors: Vec<FieldError> = validate_selector(
            &spec.pod_selector.clone().unwrap_or_default(),
            "spec.podSelector",
        )
        .into_iter()
        .collect();
        for (i, r) in spec.ingress.iter().flatten().enumerate() {
            errors.extend(validate_rule(
                r.ports.as_ref(),
                r.from.as_ref(),
                &format!("spec.ingress[{i}]"),
                "from",
            ));
        }
        for (i, r) in spec.egress.iter().flatten().enumerate() {
            errors.extend(validate_rule(
                r.ports.as_ref(),
                r.to.as_ref(),
                &format!("spec.egress[{i}]"),
                "to",
            ));
        }
        let types = spec.policy_types.unwrap_or_default();
        for (i, t) in types.iter().enumerate() {
            if !POLICY_TYPES.contains(&t.as_str()) {
                errors.push(FieldError::not_supported(
                    format!("spec.policyTypes[{i}]"),
                    t,
                    POLICY_TYPES,
                ));
            }
        }
        if types.len() > POLICY_TYPES.len() {
            errors.push(FieldError::invalid(
                "spec.policyTypes",
                format!("{types:?}"),
                "may not specify more than two policyTypes",
            ));
        }
        errors
    }

    fn columns() -> &'static [Column] {
        const C: &[Column] = &[
            Column::NAME,
            Column::new("Pod-Selector", "string"),
            Column::AGE,
        ];
        C
    }

    fn cells(&self, now: SystemTime) -> Vec<Value> {
        let sel = self
            .spec
            .as_ref()
            .and_then(|s| s.pod_selector.clone())
            .unwrap_or_default();
        vec![
            name_cell(&self.metadata),
            format_selector(&sel).into(),
            age_cell(&self.metadata, now),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(spec: Value) -> NetworkPolicy {
        serde_json::from_value(json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "p", "namespace": "default"}, "spec": spec
        }))
        .unwrap()
    }

    fn fields(p: &NetworkPolicy) -> Vec<String> {
        p.validate(None).into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn docs_examples_are_valid_and_defaulted() {
        // kubernetes.io/docs/concepts/services-networking/network-policies
        let mut p = policy(json!({
            "podSelector": {"matchLabels": {"role": "db"}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [
                {"ipBlock": {"cidr": "172.17.0.0/16", "except": ["172.17.1.0/24"]}},
                {"namespaceSelector": {"matchLabels": {"project": "myproject"}}},
                {"podSelector": {"matchLabels": {"role": "frontend"}}}],
                "ports": [{"protocol": "TCP", "port": 6379}]}],
            "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/24"}}],
                "ports": [{"protocol": "TCP", "port": 32000, "endPort": 32768}]}]
        }));
        p.default_fields();
        assert!(p.validate(None).is_empty(), "{:?}", p.validate(None));
        assert_eq!(p.cells(SystemTime::now())[1], "role=db");

        let mut deny = policy(json!({"podSelector": {}}));
        deny.default_fields();
        assert!(deny.validate(None).is_empty());
        assert_eq!(
            deny.spec.as_ref().unwrap().policy_types,
            Some(vec!["Ingress".to_string()])
        );
        assert_eq!(deny.cells(SystemTime::now())[1], "<none>");

        let mut egress = policy(json!({"podSelector": {},
            "egress": [{"ports": [{"port": "dns"}]}]}));
        egress.default_fields();
        let spec = egress.spec.as_ref().unwrap();
        assert_eq!(
            spec.policy_types,
            Some(vec!["Ingress".to_string(), "Egress".to_string()])
        );
        assert_eq!(
            spec.egress.as_ref().unwrap()[0].ports.as_ref().unwrap()[0].protocol,
            Some("TCP".into())
        );
    }

    #[test]
    fn ports_peers_and_ip_blocks_are_checked() {
        let bad = policy(json!({"podSelector": {}, "ingress": [{
            "ports": [
                {"port": 0},
                {"port": 100, "endPort": 50},
                {"port": "http", "endPort": 90},
                {"endPort": 90},
                {"port": "Bad_Name"},
                {"protocol": "ICMP", "port": 1}],
            "from": [
                {},
                {"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}},
                {"ipBlock": {"cidr": "10.0.0.0/33"}},
                {"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.0.0/16", "10.1.0.0/24", "x"]}}]}],
            "policyTypes": ["Ingress", "Sideways"]}));
        assert_eq!(
            fields(&bad),
            [
                "spec.ingress[0].ports[0].port",
                "spec.ingress[0].ports[1].endPort",
                "spec.ingress[0].ports[2].endPort",
                "spec.ingress[0].ports[3].endPort",
                "spec.ingress[0].ports[4].port",
                "spec.ingress[0].ports[5].protocol",
                "spec.ingress[0].from[0]",
                "spec.ingress[0].from[1]",
                "spec.ingress[0].from[2].ipBlock.cidr",
                "spec.ingress[0].from[3].ipBlock.except[0]",
                "spec.ingress[0].from[3].ipBlock.except[1]",
                "spec.ingress[0].from[3].ipBlock.except[2]",
                "spec.policyTypes[1]",
            ]
        );
        let sctp = policy(
            json!({"podSelector": {}, "ingress": [{"ports": [{"protocol": "SCTP", "port": 9}]}]}),
        );
        assert!(sctp.validate(None).is_empty());
    }

    #[test]
    fn pod_selector_column_is_kubectls() {
        let p = policy(json!({"podSelector": {"matchLabels": {"b": "2", "a": "1"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["web", "api"]},
                                 {"key": "x", "operator": "DoesNotExist"}]}}));
        assert_eq!(
            p.cells(SystemTime::now())[1],
            "a=1,b=2,tier in (api,web),!x"
        );
    }
}
