//! `Table` answers (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`),
//! so `kubectl get` shows the columns it shows against a cluster.

use std::time::SystemTime;

use serde_json::{json, Value};

use crate::control::kinds::Kind;

/// What a row carries besides its cells (`?includeObject=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    /// Nothing.
    None,
    /// The object's metadata (the default).
    Metadata,
    /// The whole object.
    Object,
}

impl IncludeObject {
    /// Parses the query value.
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        }
    }
}

fn column_definitions(kind: &Kind) -> Vec<Value> {
    kind.columns
        .iter()
        .map(|c| {
            json!({"name": c.name, "type": c.kind, "format": c.format, "description": "", "priority": c.priority})
        })
        .collect()
}

fn row(kind: &Kind, obj: &Value, include: IncludeObject, now: SystemTime) -> Value {
    let mut row = json!({"cells": (kind.cells)(obj, now)});
    match include {
        IncludeObject::None => {}
        IncludeObject::Metadata => {
            row["object"] = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj.get("metadata").cloned().unwrap_or(Value::Null),
            });
        }
        IncludeObject::Object => row["object"] = obj.clone(),
    }
    row
}

/// A table of `objects` at `resource_version`.
pub fn table(
    kind: &Kind,
    objects: &[Value],
    resource_version: Option<String>,
    include: IncludeObject,
    now: SystemTime,
) -> Value {
    let mut t = json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": column_definitions(kind),
        "rows": objects.iter().map(|o| row(kind, o, include, now)).collect::<Vec<_>>(),
    });
    if let Some(rv) = resource_version {
        t["metadata"]["resourceVersion"] = rv.into();
    }
    t
}
