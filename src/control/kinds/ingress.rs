//! networking.k8s.io/v1 Ingress: validation as the API server does its
//! main points, and `kubectl get ingress` columns (NAME CLASS HOSTS ADDRESS
//! PORTS AGE). What podnetd does with an Ingress is in [`crate::ingress`].

use std::net::IpAddr;
use std::time::SystemTime;

use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};
use serde_json::Value;

use super::validate::{dns1035_label, dns1123_subdomain, port, FieldError};
use super::{age_cell, name_cell, Column, KindRules};

/// The path types of `spec.rules[].http.paths[].pathType`.
pub const PATH_TYPES: &[&str] = &["Exact", "ImplementationSpecific", "Prefix"];

/// The deprecated class annotation (still honoured by controllers).
pub const CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

/// ADDRESS is cut to this width outside `-o wide`, as kubectl's printer does.
const ADDRESS_WIDTH: usize = 16;

/// A rule or TLS host: a DNS subdomain, or `*.` and one; never an IP.
pub fn validate_host(host: &str, field: &str) -> Option<FieldError> {
    if host.parse::<IpAddr>().is_ok() {
        return Some(FieldError::invalid(
            field,
            format!("\"{host}\""),
            "must be a DNS name, not an IP address",
        ));
    }
    if host.contains('*') {
        let ok = host
            .strip_prefix("*.")
            .is_some_and(|rest| dns1123_subdomain(rest).is_none());
        return (!ok).then(|| {
            FieldError::invalid(
                field,
                format!("\"{host}\""),
                "a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS subdomain, which must consist of lower case alphanumeric characters, '-' or '.' and end with an alphanumeric character (e.g. '*.example.com')",
            )
        });
    }
    dns1123_subdomain(host).map(|why| FieldError::invalid(field, format!("\"{host}\""), &why))
}

/// A port name (IANA_SVC_NAME): 1-15 of `[a-z0-9-]`, a letter in it, no
/// `--`, no `-` at either end.
pub(super) fn port_name(name: &str) -> Option<String> {
    let ok = (1..=15).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.chars().any(|c| c.is_ascii_lowercase())
        && !name.contains("--")
        && !name.starts_with('-')
        && !name.ends_with('-');
    (!ok).then(|| "must be no more than 15 characters, contain only lowercase alphanumeric characters or '-', contain at least one letter, and not begin or end with '-' or contain '--'".into())
}

/// A backend: a service (name, and a port number or name) or a resource.
fn validate_backend(b: &IngressBackend, field: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    match (&b.service, &b.resource) {
        (Some(_), Some(_)) => errors.push(FieldError::invalid(
            field,
            "\"\"",
            "cannot set both resource and service backends",
        )),
        (None, None) => errors.push(FieldError::invalid(
            field,
            "\"\"",
            "resource or service backend is required",
        )),
        (None, Some(r)) => {
            if r.kind.is_empty() {
                errors.push(FieldError::required(format!("{field}.resource.kind")));
            }
            if r.name.is_empty() {
                errors.push(FieldError::required(format!("{field}.resource.name")));
            }
        }
        (Some(svc), None) => {
            let f = format!("{field}.service");
            if svc.name.is_empty() {
                errors.push(FieldError::required(format!("{f}.name")));
            } else if let Some(why) = dns1035_label(&svc.name) {
                errors.push(FieldError::invalid(
                    format!("{f}.name"),
                    format!("\"{}\"", svc.name),
                    &why,
                ));
            }
            let p = svc.port.clone().unwrap_or_default();
            let name = p.name.as_deref().filter(|n| !n.is_empty());
            let number = p.number.filter(|n| *n != 0);
            match (name, number) {
                (Some(_), Some(_)) => errors.push(FieldError::invalid(
                    field,
                    "\"\"",
                    "cannot set both port name & port number",
                )),
                (Some(n), None) => {
                    if let Some(why) = port_name(n) {
                        errors.push(FieldError::invalid(
                            format!("{f}.port.name"),
                            format!("\"{n}\""),
                            &why,
                        ));
                    }
                }
                (None, Some(n)) => errors.extend(port(n, &format!("{f}.port.number"))),
                (None, None) => errors.push(FieldError {
                    message: "Required value: port name or number is required".into(),
                    ..FieldError::required(format!("{f}.port"))
                }),
            }
        }
    }
    errors
}

/// A path of a rule: type, and for Exact and Prefix an absolute, clean path.
fn validate_path(path: &str, path_type: &str, field: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if path_type.is_empty() {
        errors.push(FieldError {
            message: "Required value: pathType must be specified".into(),
            ..FieldError::required(format!("{field}.pathType"))
        });
        return errors;
    }
    if !PATH_TYPES.contains(&path_type) {
        errors.push(FieldError::not_supported(
            format!("{field}.pathType"),
            path_type,
            PATH_TYPES,
        ));
        return errors;
    }
    let pfield = format!("{field}.path");
    if path_type == "ImplementationSpecific" {
        if !path.is_empty() && !path.starts_with('/') {
            errors.push(FieldError::invalid(
                pfield,
                format!("\"{path}\""),
                "must be an absolute path",
            ));
        }
        return errors;
    }
    if !path.starts_with('/') {
        errors.push(FieldError::invalid(
            pfield,
            format!("\"{path}\""),
            "must be an absolute path",
        ));
        return errors;
    }
    for bad in ["//", "/./", "/../", "%2f", "%2F"] {
        if path.contains(bad) {
            errors.push(FieldError::invalid(
                pfield.clone(),
                format!("\"{path}\""),
                &format!("must not contain '{bad}'"),
            ));
        }
    }
    for bad in ["/..", "/."] {
        if path.ends_with(bad) {
            errors.push(FieldError::invalid(
                pfield.clone(),
                format!("\"{path}\""),
                &format!("cannot end with '{bad}'"),
            ));
        }
    }
    errors
}

impl KindRules for Ingress {
    const SHORT_NAMES: &'static [&'static str] = &["ing"];
    const STATUS: bool = true;
    const GENERATION: bool = true;

    fn validate(&self, old: Option<&Self>) -> Vec<FieldError> {
        let Some(spec) = &self.spec else {
            return vec![FieldError::required("spec")];
        };
        let mut errors = Vec::new();
        let rules = spec.rules.as_deref().unwrap_or(&[]);
        if spec.default_backend.is_none() && rules.is_empty() {
            errors.push(FieldError::invalid(
                "spec.rules",
                "[]",
                "either `defaultBackend` or `rules` must be specified",
            ));
        }
        if let Some(b) = &spec.default_backend {
            errors.extend(validate_backend(b, "spec.defaultBackend"));
        }
        for (i, rule) in rules.iter().enumerate() {
            let f = format!("spec.rules[{i}]");
            if let Some(host) = rule.host.as_deref().filter(|h| !h.is_empty()) {
                errors.extend(validate_host(host, &format!("{f}.host")));
            }
            let Some(http) = &rule.http else {
                continue;
            };
            if http.paths.is_empty() {
                errors.push(FieldError::required(format!("{f}.http.paths")));
            }
            for (j, p) in http.paths.iter().enumerate() {
                let pf = format!("{f}.http.paths[{j}]");
                errors.extend(validate_path(
                    p.path.as_deref().unwrap_or(""),
                    &p.path_type,
                    &pf,
                ));
                errors.extend(validate_backend(&p.backend, &format!("{pf}.backend")));
            }
        }
        for (i, tls) in spec.tls.iter().flatten().enumerate() {
            let f = format!("spec.tls[{i}]");
            for (j, host) in tls.hosts.iter().flatten().enumerate() {
                errors.extend(validate_host(host, &format!("{f}.hosts[{j}]")));
            }
            if let Some(name) = tls.secret_name.as_deref().filter(|n| !n.is_empty()) {
                if let Some(why) = dns1123_subdomain(name) {
                    errors.push(FieldError::invalid(
                        format!("{f}.secretName"),
                        format!("\"{name}\""),
                        &why,
                    ));
                }
            }
        }
        if let Some(class) = spec.ingress_class_name.as_deref() {
            if let Some(why) = dns1123_subdomain(class) {
                errors.push(FieldError::invalid(
                    "spec.ingressClassName",
                    format!("\"{class}\""),
                    &why,
                ));
            }
            let annotated = self
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(CLASS_ANNOTATION));
            if let (None, Some(a)) = (old, annotated) {
                errors.push(FieldError::invalid(
                    format!("metadata.annotations.{CLASS_ANNOTATION}"),
                    format!("\"{a}\""),
                    "can not be set when the class field is also set",
                ));
            }
        }
        errors
    }

    fn columns() -> &'static [Column] {
        const C: &[Column] = &[
            Column::NAME,
            Column::new("Class", "string"),
            Column::new("Hosts", "string"),
            Column::new("Address", "string"),
            Column::new("Ports", "string"),
            Column::AGE,
        ];
        C
    }

    fn cells(&self, now: SystemTime) -> Vec<Value> {
        let spec = self.spec.clone().unwrap_or_default();
        let class = spec
            .ingress_class_name
            .clone()
            .unwrap_or_else(|| "<none>".into());
        // kubectl's formatHosts: at most three, then "+ N more...".
        let rules = spec.rules.clone().unwrap_or_default();
        let mut hosts: Vec<String> = Vec::new();
        let mut more = false;
        for r in &rules {
            more |= hosts.len() == 3;
            match r.host.as_deref() {
                Some(h) if !more && !h.is_empty() => hosts.push(h.to_string()),
                _ => {}
            }
        }
        let hosts = match (hosts.is_empty(), more) {
            (true, _) => "*".to_string(),
            (false, false) => hosts.join(","),
            (false, true) => format!("{} + {} more...", hosts.join(","), rules.len() - 3),
        };
        let mut addresses: Vec<String> = self
            .status
            .iter()
            .flat_map(|s| s.load_balancer.iter())
            .flat_map(|lb| lb.ingress.iter().flatten())
            .filter_map(|i| {
                i.ip.clone()
                    .filter(|s| !s.is_empty())
                    .or_else(|| i.hostname.clone().filter(|s| !s.is_empty()))
            })
            .collect();
        addresses.sort();
        addresses.dedup();
        let mut address = addresses.join(",");
        if address.len() > ADDRESS_WIDTH {
            address.truncate(ADDRESS_WIDTH - 3);
            address.push_str("...");
        }
        let ports = if spec.tls.as_ref().is_some_and(|t| !t.is_empty()) {
            "80, 443"
        } else {
            "80"
        };
        vec![
            name_cell(&self.metadata),
            class.into(),
            hosts.into(),
            address.into(),
            ports.into(),
            age_cell(&self.metadata, now),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ingress(spec: Value) -> Ingress {
        serde_json::from_value(json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "web"}, "spec": spec
        }))
        .unwrap()
    }

    fn fields(spec: Value) -> Vec<String> {
        ingress(spec)
            .validate(None)
            .into_iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect()
    }

    fn backend() -> Value {
        json!({"service": {"name": "web", "port": {"number": 80}}})
    }

    #[test]
    fn the_documentation_example_is_valid() {
        let spec = json!({
            "ingressClassName": "podnet",
            "tls": [{"hosts": ["https-example.foo.com"], "secretName": "testsecret-tls"}],
            "rules": [{"host": "*.foo.com", "http": {"paths": [
                {"path": "/testpath", "pathType": "Prefix", "backend": backend()},
                {"path": "/x", "pathType": "Exact", "backend": {"service": {"name": "web", "port": {"name": "http"}}}},
                {"pathType": "ImplementationSpecific", "backend": backend()},
            ]}}]
        });
        assert_eq!(fields(spec), Vec::<String>::new());
        assert_eq!(
            fields(json!({"defaultBackend": backend()})),
            Vec::<String>::new()
        );
    }

    #[test]
    fn the_api_servers_main_rules_are_enforced() {
        let path = |p: Value| json!({"rules": [{"http": {"paths": [p]}}]});
        let e = fields(path(json!({"path": "/", "backend": backend()})));
        assert!(e[0].contains("pathType: Required value"), "{e:?}");
        let e = fields(path(
            json!({"path": "/", "pathType": "Regex", "backend": backend()}),
        ));
        assert!(e[0].contains("Unsupported value: \"Regex\""), "{e:?}");
        let e = fields(path(
            json!({"path": "foo", "pathType": "Prefix", "backend": backend()}),
        ));
        assert!(e[0].contains("must be an absolute path"), "{e:?}");
        let e = fields(path(
            json!({"path": "/a//b", "pathType": "Exact", "backend": backend()}),
        ));
        assert!(e[0].contains("must not contain '//'"), "{e:?}");
        let e = fields(path(
            json!({"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web"}}}),
        ));
        assert!(e[0].contains("port name or number is required"), "{e:?}");
        let e = fields(path(json!({"path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": "web", "port": {"number": 80, "name": "http"}}}})));
        assert!(
            e[0].contains("cannot set both port name & port number"),
            "{e:?}"
        );
        let e = fields(path(
            json!({"path": "/", "pathType": "Prefix", "backend": {}}),
        ));
        assert!(
            e[0].contains("resource or service backend is required"),
            "{e:?}"
        );
        let e = fields(json!({}));
        assert!(e[0].contains("either `defaultBackend` or `rules`"), "{e:?}");
        let e = fields(json!({"rules": [{"host": "*.*.foo.com"}]}));
        assert!(e[0].contains("wildcard"), "{e:?}");
        let e = fields(json!({"rules": [{"host": "10.0.0.1"}]}));
        assert!(e[0].contains("not an IP address"), "{e:?}");
        let e = fields(json!({"rules": [{"host": "Foo.com"}]}));
        assert!(e[0].starts_with("spec.rules[0].host"), "{e:?}");
        let e = fields(
            json!({"defaultBackend": backend(), "tls": [{"hosts": ["a_b"], "secretName": "Bad"}]}),
        );
        assert_eq!(e.len(), 2, "{e:?}");
    }

    #[test]
    fn class_annotation_and_field_together_are_refused_on_create() {
        let mut ing = ingress(json!({"ingressClassName": "podnet", "defaultBackend": backend()}));
        ing.metadata.annotations =
            Some([(CLASS_ANNOTATION.to_string(), "podnet".to_string())].into());
        assert!(ing.validate(None)[0]
            .message
            .contains("can not be set when the class field is also set"));
        assert!(ing.validate(Some(&ing.clone())).is_empty());
    }

    #[test]
    fn columns_read_as_kubectl_prints_them() {
        let mut ing = ingress(json!({
            "tls": [{"hosts": ["a.com"], "secretName": "s"}],
            "rules": [{"host": "a.com"}, {"host": "b.com"}, {}, {"host": "d.com"}, {"host": "e.com"}]
        }));
        ing.status = serde_json::from_value(
            json!({"loadBalancer": {"ingress": [{"ip": "192.168.100.200"}, {"ip": "10.0.0.1"}]}}),
        )
        .unwrap();
        let cells = ing.cells(SystemTime::now());
        assert_eq!(cells[1], "<none>");
        assert_eq!(cells[2], "a.com,b.com,d.com + 2 more...");
        assert_eq!(cells[3], "10.0.0.1,192....");
        assert_eq!(cells[4], "80, 443");
        let plain = ingress(json!({"defaultBackend": backend(), "ingressClassName": "podnet"}));
        let cells = plain.cells(SystemTime::now());
        assert_eq!(
            (&cells[1], &cells[2], &cells[3], &cells[4]),
            (&json!("podnet"), &json!("*"), &json!(""), &json!("80"))
        );
    }
}
