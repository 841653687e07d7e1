//! `podnet apply -f`: the multi-document YAML kubectl takes, sent as
//! server-side apply requests (one per document) to the Kubernetes API on
//! the daemon's socket.

use serde_json::Value;

use crate::control::kinds::KINDS;

/// The documents of a manifest (empty ones skipped).
pub fn documents(text: &str) -> Result<Vec<Value>, String> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text)
        .map_err(|e| format!("the manifest is not valid YAML: {e}"))?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// The path an apply of `doc` goes to (`?fieldManager=podnet`), and a
/// `kind/name` to report it by; `namespace` unless the document names one.
pub fn apply_target(doc: &Value, namespace: &str) -> Result<(String, String), String> {
    let api_version = doc
        .get("apiVersion")
        .and_then(Value::as_str)
        .ok_or("a document has no apiVersion")?;
    let kind_name = doc
        .get("kind")
        .and_then(Value::as_str)
        .ok_or("a document has no kind")?;
    let name = doc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("a {kind_name} has no metadata.name"))?;
    let kind = KINDS
        .iter()
        .find(|k| k.api_version == api_version && k.kind == kind_name)
        .ok_or_else(|| format!("podnet does not serve {api_version} {kind_name}"))?;
    let base = if kind.group.is_empty() {
        format!("/api/{}", kind.version)
    } else {
        format!("/apis/{}/{}", kind.group, kind.version)
    };
    let path = if kind.namespaced {
        let ns = doc
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or(namespace);
        format!(
            "{base}/namespaces/{ns}/{}/{name}?fieldManager=podnet",
            kind.plural
        )
    } else {
        format!("{base}/{}/{name}?fieldManager=podnet", kind.plural)
    };
    let group = if kind.group.is_empty() {
        String::new()
    } else {
        format!(".{}", kind.group)
    };
    Ok((path, format!("{}{group}/{name}", kind.singular)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_map_to_apply_paths() {
        let docs = documents("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n---\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\n  namespace: team\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns1\n").unwrap();
        assert_eq!(docs.len(), 3);
        assert_eq!(
            apply_target(&docs[0], "default").unwrap(),
            (
                "/api/v1/namespaces/default/configmaps/c?fieldManager=podnet".into(),
                "configmap/c".into()
            )
        );
        assert_eq!(
            apply_target(&docs[1], "default").unwrap(),
            (
                "/apis/apps/v1/namespaces/team/deployments/d?fieldManager=podnet".into(),
                "deployment.apps/d".into()
            )
        );
        assert_eq!(
            apply_target(&docs[2], "x").unwrap().0,
            "/api/v1/namespaces/ns1?fieldManager=podnet"
        );
        let bad = documents("apiVersion: v9\nkind: Widget\nmetadata:\n  name: w\n").unwrap();
        assert!(apply_target(&bad[0], "default")
            .unwrap_err()
            .contains("does not serve"));
        assert!(documents("a: [").is_err());
    }
}
