//! `Status` objects, the API server's error answers, so kubectl prints
//! them as it does against a cluster.

use serde_json::{json, Value};

use crate::control::objects::ObjectError;

/// A `Status` failure body with `code`, `reason` and `message`.
pub fn failure(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

/// The `Status` of an object error, with `details` naming the object and
/// the invalid fields.
pub fn from_error(e: &ObjectError, group: &str, kind: &str) -> Value {
    let mut s = failure(e.code(), e.reason(), &e.to_string());
    match e {
        ObjectError::NotFound { plural, name }
        | ObjectError::AlreadyExists { plural, name }
        | ObjectError::Conflict { plural, name, .. } => {
            s["details"] = json!({"name": name, "group": group, "kind": plural.split('.').next().unwrap_or(plural)});
        }
        ObjectError::Invalid { name, causes, .. } => {
            let causes: Vec<Value> = causes
                .iter()
                .map(|c| json!({"reason": c.reason.as_str(), "message": c.message, "field": c.field}))
                .collect();
            s["details"] = json!({"name": name, "group": group, "kind": kind, "causes": causes});
        }
        _ => {}
    }
    s
}

/// The `Status` of a success without an object (a deleted collection).
pub fn success() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})
}
