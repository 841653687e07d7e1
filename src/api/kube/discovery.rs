//! Discovery (`/api`, `/apis`, group versions with their resources),
//! `/version`, and the OpenAPI v3 documents as far as kubectl needs them.
//!
//! Why the OpenAPI documents are small: kubectl reads them to learn that
//! the server validates fields itself (a PATCH operation taking
//! `fieldValidation` for the kind); it then sends `fieldValidation=Strict`
//! and leaves validation to the server, which checks each field against the
//! `k8s-openapi` type. Full schemas (for `kubectl explain`) are not served.

use std::collections::BTreeMap;

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
/// path with a PATCH operation that takes `fieldValidation`.
pub fn openapi_v3_group_version(path: &str) -> Option<Value> {
    let mut paths = serde_json::Map::new();
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
        let op = |verb: &str| json!({"operationId": format!("{verb}{}", k.kind), "parameters": params, "x-kubernetes-group-version-kind": gvk, "x-kubernetes-action": verb, "responses": {"200": {"description": "OK"}}});
        paths.insert(item, json!({"patch": op("patch"), "put": op("put")}));
    }
    if paths.is_empty() {
        return None;
    }
    Some(
        json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": format!("v1.{KUBE_MINOR}.0")}, "paths": paths, "components": {"schemas": {}}}),
    )
}
