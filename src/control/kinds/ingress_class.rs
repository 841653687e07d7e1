//! networking.k8s.io/v1 IngressClass (cluster-scoped): defaults,
//! validation and `kubectl get ingressclass` columns (NAME CONTROLLER
//! PARAMETERS AGE). podnetd makes its own class, `podnet`, at start
//! ([`crate::ingress::ensure_class`]).

use std::time::SystemTime;

use k8s_openapi::api::networking::v1::IngressClass;
use serde_json::Value;

use super::validate::{dns1123_subdomain, FieldError};
use super::{age_cell, name_cell, Column, KindRules};

/// The annotation that makes a class the default for Ingresses without one.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";

const SCOPES: &[&str] = &["Cluster", "Namespace"];

/// `spec.controller`: a domain-prefixed path (`example.com/ingress`), at most 250.
fn validate_controller(c: &str) -> Option<FieldError> {
    let field = "spec.controller";
    if c.is_empty() {
        return Some(FieldError::required(field));
    }
    if c.len() > 250 {
        return Some(FieldError {
            reason: super::FieldReason::Invalid,
            field: field.into(),
            message: format!("Too long: may not be more than 250 bytes (is {})", c.len()),
        });
    }
    let ok = c
        .split_once('/')
        .is_some_and(|(domain, path)| dns1123_subdomain(domain).is_none() && !path.is_empty());
    (!ok).then(|| {
        FieldError::invalid(
            field,
            format!("\"{c}\""),
            "must be a domain-prefixed path (such as \"acme.io/foo\")",
        )
    })
}

impl KindRules for IngressClass {
    fn default_fields(&mut self) {
        if let Some(p) = self.spec.as_mut().and_then(|s| s.parameters.as_mut()) {
            p.scope.get_or_insert_with(|| "Cluster".into());
        }
    }

    fn validate(&self, old: Option<&Self>) -> Vec<FieldError> {
        let spec = self.spec.clone().unwrap_or_default();
        let controller = spec.controller.clone().unwrap_or_default();
        let mut errors: Vec<FieldError> = validate_controller(&controller).into_iter().collect();
        if let Some(old) = old {
            let was = old
                .spec
                .as_ref()
                .and_then(|s| s.controller.clone())
                .unwrap_or_default();
            if was != controller {
                errors.push(FieldError::invalid(
                    "spec.controller",
                    format!("\"{controller}\""),
                    "field is immutable",
                ));
            }
        }
        if let Some(p) = &spec.parameters {
            let f = "spec.parameters";
            if p.kind.is_empty() {
                errors.push(FieldError::required(format!("{f}.kind")));
            }
            if p.name.is_empty() {
                errors.push(FieldError::required(format!("{f}.name")));
            }
            let scope = p.scope.as_deref().unwrap_or("Cluster");
            match (scope, p.namespace.as_deref().filter(|n| !n.is_empty())) {
                ("Cluster", Some(_)) => errors.push(FieldError::forbidden(
                    format!("{f}.namespace"),
                    "`parameters.scope` is set to 'Cluster'",
                )),
                ("Namespace", None) => errors.push(FieldError {
                    message: "Required value: `parameters.scope` is set to 'Namespace'".into(),
                    ..FieldError::required(format!("{f}.namespace"))
                }),
                ("Cluster" | "Namespace", _) => {}
                (other, _) => {
                    errors.push(FieldError::not_supported(
                        format!("{f}.scope"),
                        other,
                        SCOPES,
                    ));
                }
            }
        }
        errors
    }

    fn columns() -> &'static [Column] {
        const C: &[Column] = &[
            Column::NAME,
            Column::new("Controller", "string"),
            Column::new("Parameters", "string"),
            Column::AGE,
        ];
        C
    }

    fn cells(&self, now: SystemTime) -> Vec<Value> {
        let spec = self.spec.clone().unwrap_or_default();
        // kubectl: KIND[.APIGROUP]/NAME, or <none>.
        let parameters = match &spec.parameters {
            None => "<none>".to_string(),
            Some(p) => match p.api_group.as_deref() {
                Some(g) => format!("{}.{g}/{}", p.kind, p.name),
                None => format!("{}/{}", p.kind, p.name),
            },
        };
        vec![
            name_cell(&self.metadata),
            spec.controller.unwrap_or_default().into(),
            parameters.into(),
            age_cell(&self.metadata, now),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn class(spec: Value) -> IngressClass {
        serde_json::from_value(json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
            "metadata": {"name": "c"}, "spec": spec
        }))
        .unwrap()
    }

    #[test]
    fn controller_is_a_domain_prefixed_path_and_immutable() {
        assert!(class(json!({"controller": "podnet.io/ingress"}))
            .validate(None)
            .is_empty());
        for bad in [json!({}), json!({"controller": "nginx"})] {
            assert_eq!(class(bad).validate(None).len(), 1);
        }
        let old = class(json!({"controller": "podnet.io/ingress"}));
        let new = class(json!({"controller": "k8s.io/ingress-nginx"}));
        assert!(new.validate(Some(&old))[0]
            .message
            .contains("field is immutable"));
    }

    #[test]
    fn parameters_scope_defaults_to_cluster_and_columns_print_them() {
        let mut c = class(json!({"controller": "example.com/ingress-controller",
            "parameters": {"apiGroup": "k8s.example.com", "kind": "IngressParameters", "name": "external-lb"}}));
        c.default_fields();
        assert!(c.validate(None).is_empty());
        assert_eq!(
            c.spec.as_ref().unwrap().parameters.as_ref().unwrap().scope,
            Some("Cluster".into())
        );
        let cells = c.cells(SystemTime::now());
        assert_eq!(cells[1], "example.com/ingress-controller");
        assert_eq!(cells[2], "IngressParameters.k8s.example.com/external-lb");
        let ns = class(json!({"controller": "a.io/b",
            "parameters": {"kind": "K", "name": "n", "scope": "Namespace"}}));
        assert!(ns.validate(None)[0].field.ends_with("namespace"));
    }
}
