//! Discovery (`/api`, `/apis`, group versions with their resources),
//! `/version`, and the OpenAPI v3 documents as far as kubectl needs them.
//!
//! The OpenAPI v3 documents carry, per group version, each kind's item
//! path with a PATCH operation that takes `fieldValidation` (from which
//! kubectl learns that the server validates fields itself, so it sends
//! `fieldValidation=Strict`), and the kinds' schemas with everything they
//! refer to, generated from the `k8s-openapi` types (their `JsonSchema`
//! implementations), for `kubectl explain` and for kubectl's client-side
//! apply, which computes strategic merge patches from the
//! `x-kubernetes-patch-*` extensions added here ([`PATCH_STRATEGIES`]).

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde_json::{json, Value};

use crate::control::kinds::{Kind, KINDS};

/// The Kubernetes version the API follows (k8s-openapi's `v1_37`).
pub const KUBE_MINOR: &str = "37";

/// `/version`.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": KUBE_MINOR,
        "gitVersion": format!("v1.{KUBE_MINOR}.0-podnet.{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, match std::env::consts::ARCH { "x86_64" => "amd64", "aarch64" => "arm64", a => a }),
    })
}

/// `/api`.
pub fn core_versions() -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]})
}

fn groups() -> BTreeMap<&'static str, Vec<&'static str>> {
    let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for k in KINDS.iter().filter(|k| !k.group.is_empty()) {
        let versions = groups.entry(k.group).or_default();
        if !versions.contains(&k.version) {
            versions.push(k.version);
        }
    }
    groups
}

/// `/apis`.
pub fn group_list() -> Value {
    let groups: Vec<Value> = groups()
        .into_iter()
        .map(|(g, versions)| {
            let vs: Vec<Value> = versions
                .iter()
                .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                .collect();
            json!({"name": g, "versions": vs, "preferredVersion": vs[0]})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/GROUP`.
pub fn group(name: &str) -> Option<Value> {
    let versions = groups().remove(name)?;
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    Some(
        json!({"kind": "APIGroup", "apiVersion": "v1", "name": name, "versions": vs, "preferredVersion": vs[0]}),
    )
}

fn verbs(subresource: bool) -> Vec<&'static str> {
    if subresource {
        vec!["get", "patch", "update"]
    } else {
        vec![
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }
}

/// `/api/v1` or `/apis/GROUP/VERSION`: the resources served there.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let kinds: Vec<&Kind> = KINDS
        .iter()
        .filter(|k| k.group == group && k.version == version)
        .collect();
    if kinds.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for k in kinds {
        let mut main_verbs = verbs(false);
        if k.kind == "Namespace" {
            // Namespaces are deleted one by one (see `super::KubeApi::handle`).
            main_verbs.retain(|v| *v != "deletecollection");
        }
        let mut r = json!({
            "name": k.plural, "singularName": k.singular, "namespaced": k.namespaced,
            "kind": k.kind, "verbs": main_verbs,
        });
        if !k.short_names.is_empty() {
            r["shortNames"] = json!(k.short_names);
        }
        if !k.categories.is_empty() {
            r["categories"] = json!(k.categories);
        }
        resources.push(r);
        if k.status {
            resources.push(json!({"name": format!("{}/status", k.plural), "singularName": "", "namespaced": k.namespaced, "kind": k.kind, "verbs": verbs(true)}));
        }
        if k.scale {
            resources.push(json!({"name": format!("{}/scale", k.plural), "singularName": "", "namespaced": k.namespaced, "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": verbs(true)}));
        }
        if k.kind == "Pod" {
            resources.push(json!({"name": "pods/log", "singularName": "", "namespaced": true, "kind": "Pod", "verbs": ["get"]}));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: the group versions with a document each.
pub fn openapi_v3_root() -> Value {
    let mut paths = serde_json::Map::new();
    for k in KINDS.iter() {
        let p = gv_path(k.group, k.version);
        paths.insert(p.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash=podnet{}", env!("CARGO_PKG_VERSION"))}));
    }
    json!({"paths": paths})
}

/// `/openapi/v3/api/v1`, `/openapi/v3/apis/GROUP/VERSION`: each kind's item
/// path with its PATCH and PUT operations, and the kinds' schemas. Built
/// once; the documents do not change while the daemon runs.
pub fn openapi_v3_group_version(path: &str) -> Option<Value> {
    static DOCUMENTS: LazyLock<BTreeMap<String, Value>> = LazyLock::new(|| {
        let mut paths: Vec<String> = KINDS.iter().map(|k| gv_path(k.group, k.version)).collect();
        paths.dedup();
        paths
            .into_iter()
            .map(|p| {
                let doc = openapi_v3_document(&p);
                (p, doc)
            })
            .collect()
    });
    DOCUMENTS.get(path).cloned()
}

/// The document of one group version (`api/v1`, `apis/apps/v1`).
fn openapi_v3_document(path: &str) -> Value {
    let mut paths = serde_json::Map::new();
    let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
    let mut kind_schemas = Vec::new();
    for k in KINDS.iter().filter(|k| gv_path(k.group, k.version) == path) {
        let item = if k.namespaced {
            format!("/{path}/namespaces/{{namespace}}/{}/{{name}}", k.plural)
        } else {
            format!("/{path}/{}/{{name}}", k.plural)
        };
        let gvk = json!({"group": k.group, "version": k.version, "kind": k.kind});
        let params = json!([
            {"name": "dryRun", "in": "query", "schema": {"type": "string"}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
        ]);
        let reference = (k.schema)(&mut generator);
        // kubectl computes a strategic merge patch from the schemas only for
        // a kind whose PATCH says it takes one (CRDs do not).
        let patch_bodies: &[&str] = &[
            "application/apply-patch+yaml",
            "application/json-patch+json",
            "application/merge-patch+json",
            "application/strategic-merge-patch+json",
        ];
        let op = |verb: &str, types: &[&str]| {
            let content: serde_json::Map<String, Value> = types
                .iter()
                .map(|t| (t.to_string(), json!({"schema": reference.as_value()})))
                .collect();
            json!({"operationId": format!("{verb}{}", k.kind), "parameters": params, "x-kubernetes-group-version-kind": gvk, "x-kubernetes-action": verb,
                "requestBody": {"content": content},
                "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": reference.as_value()}}}}})
        };
        paths.insert(
            item,
            json!({"patch": op("patch", patch_bodies), "put": op("put", &["application/json"])}),
        );
        if let Some(name) = reference
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix("#/components/schemas/"))
        {
            kind_schemas.push((name.to_string(), gvk));
        }
    }
    let mut schemas = generator.take_definitions(true);
    for (name, gvk) in kind_schemas {
        if let Some(schema) = schemas.get_mut(&name).and_then(Value::as_object_mut) {
            schema.insert("x-kubernetes-group-version-kind".into(), json!([gvk]));
            // The Rust types make `metadata` required; the API does not
            // (a name can come from `generateName`, the namespace from the path).
            if let Some(Value::Array(required)) = schema.get_mut("required") {
                required.retain(|f| f != "metadata");
                if required.is_empty() {
                    schema.remove("required");
                }
            }
        }
    }
    for (schema, field, strategy, key) in PATCH_STRATEGIES {
        if let Some(property) = schemas
            .get_mut(*schema)
            .and_then(|s| s.pointer_mut(&format!("/properties/{field}")))
            .and_then(Value::as_object_mut)
        {
            property.insert("x-kubernetes-patch-strategy".into(), json!(strategy));
            if !key.is_empty() {
                property.insert("x-kubernetes-patch-merge-key".into(), json!(key));
            }
        }
    }
    json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": format!("v1.{KUBE_MINOR}.0")}, "paths": paths, "components": {"schemas": schemas}})
}

/// The lists kubectl merges element by element when it computes a
/// strategic merge patch (schema, property, strategy, merge key), as the
/// Kubernetes API's own OpenAPI documents mark them; the same lists the
/// server merges (see `super::strategic_merge`).
pub const PATCH_STRATEGIES: &[(&str, &str, &str, &str)] = &[
    ("io.k8s.api.core.v1.PodSpec", "containers", "merge", "name"),
    (
        "io.k8s.api.core.v1.PodSpec",
        "initContainers",
        "merge",
        "name",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "ephemeralContainers",
        "merge",
        "name",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "volumes",
        "merge,retainKeys",
        "name",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "imagePullSecrets",
        "merge",
        "name",
    ),
    ("io.k8s.api.core.v1.PodSpec", "hostAliases", "merge", "ip"),
    (
        "io.k8s.api.core.v1.PodSpec",
        "topologySpreadConstraints",
        "merge",
        "topologyKey",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "schedulingGates",
        "merge",
        "name",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "resourceClaims",
        "merge,retainKeys",
        "name",
    ),
    ("io.k8s.api.core.v1.Container", "env", "merge", "name"),
    (
        "io.k8s.api.core.v1.Container",
        "ports",
        "merge",
        "containerPort",
    ),
    (
        "io.k8s.api.core.v1.Container",
        "volumeMounts",
        "merge",
        "mountPath",
    ),
    (
        "io.k8s.api.core.v1.Container",
        "volumeDevices",
        "merge",
        "devicePath",
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "env",
        "merge",
        "name",
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "ports",
        "merge",
        "containerPort",
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeMounts",
        "merge",
        "mountPath",
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeDevices",
        "merge",
        "devicePath",
    ),
    ("io.k8s.api.core.v1.ServiceSpec", "ports", "merge", "port"),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "ownerReferences",
        "merge",
        "uid",
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "finalizers",
        "merge",
        "",
    ),
    (
        "io.k8s.api.core.v1.PodStatus",
        "conditions",
        "merge",
        "type",
    ),
    ("io.k8s.api.core.v1.PodStatus", "podIPs", "merge", "ip"),
    ("io.k8s.api.core.v1.PodStatus", "hostIPs", "merge", "ip"),
    (
        "io.k8s.api.core.v1.NodeStatus",
        "conditions",
        "merge",
        "type",
    ),
    (
        "io.k8s.api.core.v1.NodeStatus",
        "addresses",
        "merge",
        "type",
    ),
    ("io.k8s.api.core.v1.NodeSpec", "podCIDRs", "merge", ""),
    (
        "io.k8s.api.core.v1.NamespaceStatus",
        "conditions",
        "merge",
        "type",
    ),
    (
        "io.k8s.api.apps.v1.DeploymentStatus",
        "conditions",
        "merge",
        "type",
    ),
    (
        "io.k8s.api.apps.v1.ReplicaSetStatus",
        "conditions",
        "merge",
        "type",
    ),
    (
        "io.k8s.api.apps.v1.StatefulSetStatus",
        "conditions",
        "merge",
        "type",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `$ref` in a value, recursively.
    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r);
                }
                m.values().for_each(|c| refs(c, out));
            }
            Value::Array(a) => a.iter().for_each(|c| refs(c, out)),
            _ => {}
        }
    }

    #[test]
    fn every_kind_has_a_schema_marked_with_its_group_version_kind() {
        for k in KINDS.iter() {
            let doc = openapi_v3_group_version(&gv_path(k.group, k.version)).expect("document");
            let schemas = doc["components"]["schemas"].as_object().expect("schemas");
            let found = schemas.values().any(|s| {
                s["x-kubernetes-group-version-kind"]
                    .as_array()
                    .is_some_and(|l| {
                        l.iter().any(|g| {
                            g["kind"] == k.kind
                                && g["group"] == k.group
                                && g["version"] == k.version
                        })
                    })
            });
            assert!(found, "no schema for {}/{}", k.api_version, k.kind);
        }
    }

    #[test]
    fn references_resolve_within_their_document() {
        for path in ["api/v1", "apis/apps/v1", "apis/discovery.k8s.io/v1"] {
            let doc = openapi_v3_group_version(path).expect("document");
            let mut found = Vec::new();
            refs(&doc, &mut found);
            assert!(!found.is_empty(), "{path}: no references");
            for r in found {
                let name = r
                    .strip_prefix("#/components/schemas/")
                    .unwrap_or_else(|| panic!("{path}: reference {r} outside the schemas"));
                assert!(
                    doc["components"]["schemas"].get(name).is_some(),
                    "{path}: {r} does not resolve"
                );
            }
        }
    }

    #[test]
    fn merge_lists_carry_their_patch_strategy() {
        let core = openapi_v3_group_version("api/v1").expect("core");
        let containers = &core["components"]["schemas"]["io.k8s.api.core.v1.PodSpec"]["properties"]
            ["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
        let ports =
            &core["components"]["schemas"]["io.k8s.api.core.v1.ServiceSpec"]["properties"]["ports"];
        assert_eq!(ports["x-kubernetes-patch-merge-key"], "port");
        // Every entry of the table names a property that exists.
        let apps = openapi_v3_group_version("apis/apps/v1").expect("apps");
        for (schema, field, _, _) in PATCH_STRATEGIES {
            let in_core = core["components"]["schemas"][schema]["properties"].get(*field);
            let in_apps = apps["components"]["schemas"][schema]["properties"].get(*field);
            assert!(
                in_core
                    .or(in_apps)
                    .is_some_and(|p| p.get("x-kubernetes-patch-strategy").is_some()),
                "{schema}.{field}"
            );
        }
    }

    #[test]
    fn pod_metadata_is_not_required() {
        let core = openapi_v3_group_version("api/v1").expect("core");
        let pod = &core["components"]["schemas"]["io.k8s.api.core.v1.Pod"];
        assert!(pod.get("required").is_none_or(|r| !r
            .as_array()
            .is_some_and(|r| r.iter().any(|f| f == "metadata"))));
    }
}
