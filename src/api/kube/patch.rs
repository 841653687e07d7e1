//! PATCH: JSON merge patch (RFC 7386), JSON patch (RFC 6902), strategic
//! merge patch (what kubectl sends for `apply`, `set env`, `rollout
//! restart`), and server-side apply as a whole-object upsert.
//!
//! A patch is applied to the object as read and written back with
//! compare-and-swap on the revision read; when someone else wrote in
//! between, it is applied again to the new object (as the API server
//! does), unless the patch itself names a `resourceVersion`.

use std::time::SystemTime;

use bytes::Bytes;
use serde_json::{json, Value};

use super::strategic_merge;
use crate::control::kinds::Kind;
use crate::control::objects::{ObjectError, Objects, WriteOptions};

/// Why a patch failed.
pub enum PatchFailure {
    /// The object layer refused (404, 409, 422 ...).
    Object(ObjectError),
    /// The patch itself is bad: code, reason, message.
    Response(u16, &'static str, String),
}

const RETRIES: usize = 5;

fn bad(message: String) -> PatchFailure {
    PatchFailure::Response(400, "BadRequest", message)
}

fn parse(body: &Bytes, yaml: bool) -> Result<Value, PatchFailure> {
    if yaml {
        let text =
            std::str::from_utf8(body).map_err(|e| bad(format!("the patch is not UTF-8: {e}")))?;
        serde_saphyr::from_str(text)
            .map_err(|e| bad(format!("the patch could not be decoded as YAML: {e}")))
    } else {
        serde_json::from_slice(body)
            .map_err(|e| bad(format!("the patch could not be decoded as JSON: {e}")))
    }
}

/// `current` with the patch in `body` (of `content_type`) applied.
pub fn apply_patch_document(
    current: &Value,
    content_type: &str,
    body: &Bytes,
) -> Result<Value, PatchFailure> {
    let mut target = current.clone();
    match content_type {
        "application/merge-patch+json" | "application/apply-patch+yaml" => {
            let p = parse(body, content_type.ends_with("yaml"))?;
            if !p.is_object() {
                return Err(bad("a merge patch must be a JSON object".into()));
            }
            json_patch::merge(&mut target, &p);
        }
        "application/json-patch+json" => {
            let p: json_patch::Patch = serde_json::from_slice(body).map_err(|e| bad(format!("the JSON patch could not be decoded: {e}")))?;
            json_patch::patch(&mut target, &p).map_err(|e| PatchFailure::Response(422, "Invalid", format!("the JSON patch could not be applied: {e}")))?;
        }
        "application/strategic-merge-patch+json" => {
            let p = parse(body, false)?;
            strategic_merge::apply(&mut target, &p).map_err(|e| bad(format!("the strategic merge patch could not be applied: {e}")))?;
        }
        other => {
            return Err(PatchFailure::Response(
                415,
                "UnsupportedMediaType",
                format!("the body of the request was in an unknown format ({other:?}) - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json"),
            ))
        }
    }
    Ok(target)
}

/// Patches the object (or its status) and returns the HTTP code and the
/// object as written.
#[allow(clippy::too_many_arguments)]
pub fn patch(
    objects: &Objects,
    kind: &Kind,
    ns: Option<&str>,
    name: &str,
    subresource: Option<&str>,
    content_type: &str,
    body: &Bytes,
    opts: WriteOptions,
    now: SystemTime,
) -> Result<(u16, Value), PatchFailure> {
    let apply = content_type == "application/apply-patch+yaml";
    for _ in 0..RETRIES {
        let current = match objects.get(kind, ns, name) {
            Ok(c) => c,
            Err(ObjectError::NotFound { .. }) if apply && subresource.is_none() => {
                // Server-side apply creates what does not exist.
                let mut obj = parse(body, true)?;
                if obj.pointer("/metadata/name").is_none() {
                    obj["metadata"]["name"] = name.into();
                }
                return objects
                    .create(kind, ns, obj, opts, now)
                    .map(|o| (201, o))
                    .map_err(PatchFailure::Object);
            }
            Err(e) => return Err(PatchFailure::Object(e)),
        };
        let read_rv = current.pointer("/metadata/resourceVersion").cloned();
        let mut patched = apply_patch_document(&current, content_type, body)?;
        let pinned = patched.pointer("/metadata/resourceVersion") != read_rv.as_ref();
        if !pinned {
            patched["metadata"]["resourceVersion"] = read_rv.unwrap_or(Value::Null);
        }
        match objects.update(kind, ns, name, patched, subresource, opts) {
            Ok(o) => return Ok((200, o)),
            Err(ObjectError::Conflict { .. }) if !pinned => continue,
            Err(e) => return Err(PatchFailure::Object(e)),
        }
    }
    Err(PatchFailure::Response(
        409,
        "Conflict",
        format!("{name} kept changing while the patch was applied; try again"),
    ))
}

/// The autoscaling/v1 `Scale` of a workload.
pub fn scale_of(obj: &Value) -> Value {
    let meta = &obj["metadata"];
    let selector = obj
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"], "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
        "status": {
            "replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector,
        },
    })
}
