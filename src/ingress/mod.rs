//! HTTP(S) ingress: a reverse proxy inside podnetd that serves the
//! networking.k8s.io/v1 Ingresses of class `podnet`.
//!
//! | module | owns |
//! |---|---|
//! | [`routes`] | the route table (hosts, paths, default backend) built from Ingresses, Services and EndpointSlices; sans-IO |
//!
//! Which Ingresses are served: those naming no class (podnet's class is the
//! cluster default), those whose `spec.ingressClassName` is an IngressClass
//! of controller [`CONTROLLER`] (`podnet`, made at start, is one), and
//! those with the deprecated annotation `kubernetes.io/ingress.class:
//! podnet`. Others belong to another controller and are left alone.

pub mod routes;

use k8s_openapi::api::networking::v1::{Ingress, IngressClass};

use crate::control::kinds::ingress::CLASS_ANNOTATION;

/// The IngressClass podnetd makes at start.
pub const CLASS: &str = "podnet";

/// The controller name of podnet's IngressClasses.
pub const CONTROLLER: &str = "podnet.io/ingress";

/// Whether podnet serves `ing`, given the IngressClasses there are.
pub fn is_served(ing: &Ingress, classes: &[IngressClass]) -> bool {
    let named = ing
        .spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.as_deref());
    let annotated = ing
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CLASS_ANNOTATION))
        .map(String::as_str);
    match (named, annotated) {
        (Some(name), _) => {
            name == CLASS
                || classes.iter().any(|c| {
                    c.metadata.name.as_deref() == Some(name)
                        && c.spec.as_ref().and_then(|s| s.controller.as_deref()) == Some(CONTROLLER)
                })
        }
        (None, Some(a)) => a == CLASS,
        (None, None) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn served_classes() {
        let ing = |class: Option<&str>, annotation: Option<&str>| -> Ingress {
            let mut v = json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                "metadata": {"name": "i"}, "spec": {}});
            if let Some(c) = class {
                v["spec"]["ingressClassName"] = c.into();
            }
            if let Some(a) = annotation {
                v["metadata"]["annotations"] = json!({ CLASS_ANNOTATION: a });
            }
            serde_json::from_value(v).unwrap()
        };
        let classes: Vec<IngressClass> = vec![
            serde_json::from_value(json!({"metadata": {"name": "mine"}, "spec": {"controller": CONTROLLER}}))
                .unwrap(),
            serde_json::from_value(json!({"metadata": {"name": "nginx"}, "spec": {"controller": "k8s.io/ingress-nginx"}}))
                .unwrap(),
        ];
        assert!(is_served(&ing(None, None), &classes));
        assert!(is_served(&ing(Some("podnet"), None), &classes));
        assert!(is_served(&ing(Some("mine"), None), &classes));
        assert!(is_served(&ing(None, Some("podnet")), &classes));
        assert!(!is_served(&ing(Some("nginx"), None), &classes));
        assert!(!is_served(&ing(None, Some("nginx")), &classes));
        assert!(!is_served(&ing(Some("unknown"), None), &classes));
    }
}
