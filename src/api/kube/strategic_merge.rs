//! Kubernetes *strategic merge patch* (`application/strategic-merge-patch+json`) over
//! [`serde_json::Value`].
//!
//! This is the PATCH type kubectl sends for `kubectl apply` of an existing object
//! (client-side apply), `kubectl set env`, `kubectl rollout restart`, `kubectl label`,
//! `kubectl annotate`, `kubectl edit`, and plain `kubectl patch`. The semantics follow the
//! *apply* half of `k8s.io/apimachinery/pkg/util/strategicpatch` (1.3x), as the API server
//! runs it (`StrategicMergeMapPatch` with parallel lists merged and unmatched nulls ignored).
//! The implementation is independent; only the behaviour is modelled on upstream.
//!
//! The single entry point is [`apply`]. It works on a copy and swaps it in on success, so on
//! error the target is left exactly as it was.
//!
//! # Maps
//!
//! * Objects merge recursively, key by key.
//! * A `null` value in the patch deletes the key (a `null` for a missing key is a no-op).
//! * A patch value of a different JSON type than the stored value (or a scalar) replaces it.
//!
//! # Lists
//!
//! Lists are **replaced** by the patch list unless their field path has a merge strategy.
//! Merge-strategy lists of objects are merged element by element on a *merge key*: the patch
//! element with the same merge-key value is merged (recursively) into the stored element, new
//! elements are added. Merge-strategy lists of primitives are merged as an ordered set
//! (union, duplicates removed). Merge keys come from this table (field path → strategy),
//! which covers the core/v1 and apps/v1 types (pod templates are found at any depth):
//!
//! | field (path suffix)                                                | strategy                 |
//! |--------------------------------------------------------------------|--------------------------|
//! | `spec.containers`, `spec.initContainers`, `spec.ephemeralContainers` | merge key `name`         |
//! | `<container>.env`                                                  | merge key `name`         |
//! | `<container>.ports`                                                | merge key `containerPort`|
//! | `spec.ports` at the top of the object (Service)                    | merge key `port`         |
//! | `<container>.volumeMounts`                                         | merge key `mountPath`    |
//! | `<container>.volumeDevices`                                        | merge key `devicePath`   |
//! | `spec.volumes`                                                     | merge key `name`         |
//! | `spec.imagePullSecrets`                                            | merge key `name`         |
//! | `spec.hostAliases`                                                 | merge key `ip`           |
//! | `spec.topologySpreadConstraints`                                   | merge key `topologyKey`  |
//! | `spec.schedulingGates`, `spec.resourceClaims`                      | merge key `name`         |
//! | `metadata.ownerReferences`                                         | merge key `uid`          |
//! | `metadata.finalizers`                                              | primitive set merge      |
//! | `conditions` (any status)                                          | merge key `type`         |
//! | `status.podIPs`, `status.hostIPs`                                  | merge key `ip`           |
//! | top-level `status.addresses` (Node)                                | merge key `type`         |
//! | top-level `spec.podCIDRs` (Node)                                   | primitive set merge      |
//! | top-level `secrets` (ServiceAccount)                               | merge key `name`         |
//! | `args`, `command`, `envFrom`, `tolerations`, everything else       | replace                  |
//!
//! `<container>` means directly inside an element of `containers`, `initContainers` or
//! `ephemeralContainers`; so container `ports` merge by `containerPort`, a Service's
//! `spec.ports` by `port`, and other `ports` lists (e.g. NetworkPolicy) are replaced.
//!
//! **Inference for fields not in the table.** kubectl computes its patches from the real
//! Go struct tags, so for a merge list missing from the table it still sends merge
//! directives. If a field has no table entry and the patch carries `$setElementOrder/<field>`
//! (objects with one common key → that key is the merge key; primitives → primitive merge),
//! `$deleteFromPrimitiveList/<field>` (primitive merge), or a `{"$patch": "delete", <key>: ..}`
//! element with exactly one other key, the list is merged with the inferred strategy instead
//! of being replaced by what is only a delta. Fields explicitly listed as "replace" above are
//! never inferred.
//!
//! # Directives
//!
//! * `$patch: replace` in an object: the object is replaced by the rest of the patch object.
//!   As a list element (`{"$patch": "replace"}`): the whole merge list is replaced by the
//!   other patch elements.
//! * `$patch: delete` in an object: the object's content is deleted (it becomes `{}`, as
//!   upstream). As a list element with the merge key: every stored element with that key
//!   value is removed.
//! * `$patch: merge`: the default; accepted and ignored (upstream rejects it explicitly).
//! * `$retainKeys: [..]`: stored keys not listed are dropped before merging. Every non-null
//!   key of the patch object must be listed, otherwise the patch is rejected (as upstream).
//! * `$setElementOrder/<field>: [..]`: merge-key objects (or primitives) giving the order of
//!   the merged list. The patch list must name its elements in the same relative order. The
//!   resulting order follows upstream exactly: the named elements come in directive order;
//!   stored elements not named ("server-only") keep their relative order and are interleaved
//!   by their position in the stored list: a server-only element is emitted before a named
//!   element only when both were in the stored list and it was earlier; otherwise the named
//!   element goes first. (The design doc says server-only items go first; the code does not,
//!   and we follow the code, including the reference order it ends up using after in-place
//!   deletions, which matters when a patch deletes and adds elements at once.)
//!   Without the directive, the same rule applies with the patch list's own order; so a
//!   brand-new element is placed before the remaining stored elements it is compared
//!   with, not appended (e.g. stored `[A, B]` + patch `[C]` gives `[C, A, B]`, exactly as a
//!   real API server does).
//! * `$deleteFromPrimitiveList/<field>: [..]`: removes those values from a primitive list.
//! * Directive keys never appear in the result: values inserted where nothing was stored
//!   are themselves run through the patch logic (their nulls and directives are processed).
//! * Any other key starting with `$` is rejected, except `$ref` and `$schema`, which are
//!   ordinary fields of CustomResourceDefinition schemas.
//!
//! # Errors
//!
//! [`PatchError`] messages name the field path (e.g.
//! `spec.template.spec.containers[name=web].env`). Rejected: a top-level patch that is not an
//! object, unknown `$` keys, a bad `$patch` value, directive values of the wrong type, merge
//! list elements without their merge key, lists mixing objects and primitives or containing
//! lists, objects in a primitive merge list, `$retainKeys` not covering the patch, a patch list
//! ordered against its `$setElementOrder`, `$patch` directives inside a list that is replaced
//! as a whole, and nesting deeper than 256 levels. `apply` never panics.
//!
//! # Not supported / differences from upstream
//!
//! * No OpenAPI or Go-struct schema: strategies come from the table above (plus inference),
//!   so custom resources or fields outside the table are replaced (upstream rejects SMP for
//!   custom resources anyway). Map-level `patchStrategy: replace` fields do not exist in
//!   core/v1 or apps/v1, so objects are always merged.
//! * Patch *creation* (two/three-way diff) and conflict detection are not implemented.
//! * `$setElementOrder` on a list that is replaced (no merge strategy) is ignored.
//! * Upstream quirks not reproduced: a `$deleteFromPrimitiveList` for a missing field does
//!   not create the field; a list added where nothing was stored has its `$patch: delete`
//!   elements dropped instead of kept; stored list elements without the merge key are kept
//!   as unmatched elements instead of failing the patch; numbers compare by value (`80`
//!   equals `80.0`), as in Go's float64 decoding.

use serde_json::{Map, Value};
use std::fmt;

/// Why a patch could not be applied (each message says what was wrong in the patch).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The top-level patch is not a JSON object.
    #[error("patch must be a JSON object, got {found}")]
    PatchNotObject {
        /// JSON type found.
        found: &'static str,
    },
    /// The stored object is neither a JSON object nor null.
    #[error("target must be a JSON object, got {found}")]
    TargetNotObject {
        /// JSON type found.
        found: &'static str,
    },
    /// A `$`-prefixed key that is not a known directive.
    #[error("{path}: unknown patch directive {key:?}")]
    UnknownDirective {
        /// Field path of the object holding the key.
        path: String,
        /// The offending key.
        key: String,
    },
    /// `$patch` with a value other than `replace`, `delete` or `merge`.
    #[error(
        "{path}: invalid $patch value {value} (expected \"replace\", \"delete\" or \"merge\")"
    )]
    InvalidPatchValue {
        /// Field path of the object holding `$patch`.
        path: String,
        /// The value, as JSON.
        value: String,
    },
    /// A directive whose value must be a list is not one.
    #[error("{path}: {directive} must be a list, got {found}")]
    DirectiveNotList {
        /// Field path of the object holding the directive.
        path: String,
        /// The directive key.
        directive: String,
        /// JSON type found.
        found: &'static str,
    },
    /// A directive list holds an element of the wrong shape.
    #[error("{path}: invalid element in {directive}: {reason}")]
    InvalidDirectiveElement {
        /// Field path of the object holding the directive.
        path: String,
        /// The directive key.
        directive: String,
        /// What is wrong.
        reason: String,
    },
    /// An element of a merge list in the patch lacks the merge key.
    #[error("{path}: list element {element} has no merge key {key:?}")]
    MissingMergeKey {
        /// Field path of the list.
        path: String,
        /// The merge key.
        key: String,
        /// The element, as JSON (truncated).
        element: String,
    },
    /// A list cannot be merged (mixed element types, nested lists, objects without key...).
    #[error("{path}: {reason}")]
    InvalidList {
        /// Field path of the list.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A key of the patch object is missing from its `$retainKeys` list.
    #[error("{path}: key {key:?} is set in the patch but not listed in $retainKeys")]
    RetainKeysMismatch {
        /// Field path of the object.
        path: String,
        /// The key.
        key: String,
    },
    /// The patch list names its elements in another order than `$setElementOrder`.
    #[error("{path}: the order of the patch list does not match $setElementOrder/{field}")]
    SetElementOrderMismatch {
        /// Field path of the object holding the directive.
        path: String,
        /// The list field.
        field: String,
    },
    /// The patch nests deeper than the supported limit.
    #[error("{path}: patch nesting exceeds {max} levels")]
    TooDeep {
        /// Field path where the limit was hit (truncated).
        path: String,
        /// The limit.
        max: usize,
    },
}

/// Applies a strategic merge patch to `target` (the stored object, JSON) in place.
///
/// Merge keys are found from the field path (see the module docs). On error `target` is
/// left unchanged.
pub fn apply(target: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let Value::Object(patch) = patch else {
        return Err(PatchError::PatchNotObject {
            found: type_name(patch),
        });
    };
    let base = match target {
        Value::Object(m) => m.clone(),
        Value::Null => Map::new(),
        other => {
            return Err(PatchError::TargetNotObject {
                found: type_name(other),
            });
        }
    };
    let merged = merge_object(base, patch, &mut Path::default())?;
    *target = Value::Object(merged);
    Ok(())
}

const MAX_DEPTH: usize = 256;
const PATCH: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ORDER: &str = "$setElementOrder/";
const DELETE_PRIMITIVES: &str = "$deleteFromPrimitiveList/";

// ---------------------------------------------------------------------------------------
// Field paths
// ---------------------------------------------------------------------------------------

enum Seg {
    Field(String),
    Elem(String),
}

#[derive(Default)]
struct Path(Vec<Seg>);

impl Path {
    fn push_field(&mut self, name: &str) -> Result<(), PatchError> {
        self.push(Seg::Field(name.to_owned()))
    }

    fn push_elem(&mut self, label: String) -> Result<(), PatchError> {
        self.push(Seg::Elem(label))
    }

    fn push(&mut self, seg: Seg) -> Result<(), PatchError> {
        if self.0.len() >= MAX_DEPTH {
            let mut shown = self.to_string();
            shown.truncate(200);
            return Err(PatchError::TooDeep {
                path: shown,
                max: MAX_DEPTH,
            });
        }
        self.0.push(seg);
        Ok(())
    }

    fn pop(&mut self) {
        self.0.pop();
    }

    /// Object field names only (list positions dropped), used for strategy lookup.
    fn fields(&self) -> Vec<&str> {
        self.0
            .iter()
            .filter_map(|s| match s {
                Seg::Field(f) => Some(f.as_str()),
                Seg::Elem(_) => None,
            })
            .collect()
    }

    fn here(&self) -> String {
        self.to_string()
    }

    /// The path of `field` inside the current object, for error messages.
    fn child(&self, field: &str) -> String {
        if self.0.is_empty() {
            field.to_owned()
        } else {
            format!("{self}.{field}")
        }
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("<root>");
        }
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Field(name) if i == 0 => f.write_str(name)?,
                Seg::Field(name) => write!(f, ".{name}")?,
                Seg::Elem(label) => write!(f, "[{label}]")?,
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Strategy {
    Replace,
    MergeKey(String),
    Primitives,
}

/// Known strategies by field path (`fields` ends with the list field's own name).
fn table_strategy(fields: &[&str]) -> Option<Strategy> {
    let (&last, init) = fields.split_last()?;
    let parent = init.last().copied().unwrap_or("");
    let in_container = matches!(
        parent,
        "containers" | "initContainers" | "ephemeralContainers"
    );
    let key = |k: &str| Some(Strategy::MergeKey(k.to_owned()));
    match last {
        "containers" | "initContainers" | "ephemeralContainers" if parent == "spec" => key("name"),
        "env" if in_container => key("name"),
        "ports" if in_container => key("containerPort"),
        "ports" if fields == ["spec", "ports"] => key("port"),
        "volumeMounts" if in_container => key("mountPath"),
        "volumeDevices" if in_container => key("devicePath"),
        "volumes" | "imagePullSecrets" | "schedulingGates" | "resourceClaims"
            if parent == "spec" =>
        {
            key("name")
        }
        "hostAliases" if parent == "spec" => key("ip"),
        "topologySpreadConstraints" if parent == "spec" => key("topologyKey"),
        "ownerReferences" if parent == "metadata" => key("uid"),
        "finalizers" if parent == "metadata" => Some(Strategy::Primitives),
        "conditions" => key("type"),
        "podIPs" | "hostIPs" if parent == "status" => key("ip"),
        "addresses" if fields == ["status", "addresses"] => key("type"),
        "podCIDRs" if fields == ["spec", "podCIDRs"] => Some(Strategy::Primitives),
        "secrets" if fields == ["secrets"] => key("name"),
        "args" | "command" | "envFrom" | "tolerations" => Some(Strategy::Replace),
        _ => None,
    }
}

/// Strategy of list field `field` of the object at `path`, whose patch object is `patch`.
fn field_strategy(path: &Path, patch: &Map<String, Value>, field: &str) -> Strategy {
    let mut fields = path.fields();
    fields.push(field);
    if let Some(s) = table_strategy(&fields) {
        return s;
    }
    infer_strategy(patch, field).unwrap_or(Strategy::Replace)
}

/// Merge strategy implied by directives that only make sense for merge lists.
fn infer_strategy(patch: &Map<String, Value>, field: &str) -> Option<Strategy> {
    if let Some(Value::Array(order)) = patch.get(&format!("{SET_ORDER}{field}")) {
        if !order.is_empty() && order.iter().all(is_scalar) {
            return Some(Strategy::Primitives);
        }
        let mut common: Option<&String> = None;
        for el in order {
            let Value::Object(m) = el else { return None };
            let mut keys = m.keys();
            let (Some(k), None) = (keys.next(), keys.next()) else {
                return None;
            };
            if common.is_some_and(|c| c != k) {
                return None;
            }
            common = Some(k);
        }
        return common.map(|k| Strategy::MergeKey(k.clone()));
    }
    if patch.contains_key(&format!("{DELETE_PRIMITIVES}{field}")) {
        return Some(Strategy::Primitives);
    }
    if let Some(Value::Array(list)) = patch.get(field) {
        for el in list {
            let Value::Object(m) = el else { continue };
            if m.get(PATCH).and_then(Value::as_str) != Some("delete") {
                continue;
            }
            let mut others = m.keys().filter(|k| !k.starts_with('$'));
            if let (Some(k), None) = (others.next(), others.next()) {
                return Some(Strategy::MergeKey(k.clone()));
            }
        }
    }
    None
}

// ---------------------------------------------------------------------------------------
// Objects
// ---------------------------------------------------------------------------------------

enum KeyKind<'a> {
    Patch,
    RetainKeys,
    SetOrder(&'a str),
    DeletePrimitives(&'a str),
    Field,
}

fn classify<'a>(key: &'a str, path: &Path) -> Result<KeyKind<'a>, PatchError> {
    if !key.starts_with('$') {
        return Ok(KeyKind::Field);
    }
    let unknown = || PatchError::UnknownDirective {
        path: path.here(),
        key: key.to_owned(),
    };
    match key {
        PATCH => Ok(KeyKind::Patch),
        RETAIN_KEYS => Ok(KeyKind::RetainKeys),
        "$ref" | "$schema" => Ok(KeyKind::Field),
        _ => {
            if let Some(f) = key.strip_prefix(SET_ORDER) {
                if f.is_empty() {
                    return Err(unknown());
                }
                Ok(KeyKind::SetOrder(f))
            } else if let Some(f) = key.strip_prefix(DELETE_PRIMITIVES) {
                if f.is_empty() {
                    return Err(unknown());
                }
                Ok(KeyKind::DeletePrimitives(f))
            } else {
                Err(unknown())
            }
        }
    }
}

fn merge_object(
    mut orig: Map<String, Value>,
    patch: &Map<String, Value>,
    path: &mut Path,
) -> Result<Map<String, Value>, PatchError> {
    // Validate every directive key up front.
    let mut kinds = Vec::with_capacity(patch.len());
    for (k, v) in patch {
        kinds.push((k.as_str(), classify(k, path)?, v));
    }

    if let Some(directive) = patch.get(PATCH) {
        match directive.as_str() {
            Some("replace") => {
                let rest: Map<String, Value> = patch
                    .iter()
                    .filter(|(k, _)| k.as_str() != PATCH)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                return merge_object(Map::new(), &rest, path);
            }
            Some("delete") => return Ok(Map::new()),
            Some("merge") => {}
            _ => {
                return Err(PatchError::InvalidPatchValue {
                    path: path.here(),
                    value: short_json(directive),
                });
            }
        }
    }

    if let Some(retain) = patch.get(RETAIN_KEYS) {
        let Value::Array(retain) = retain else {
            return Err(PatchError::DirectiveNotList {
                path: path.here(),
                directive: RETAIN_KEYS.to_owned(),
                found: type_name(retain),
            });
        };
        let listed = |k: &str| retain.iter().any(|r| r.as_str() == Some(k));
        for (k, kind, v) in &kinds {
            if matches!(kind, KeyKind::Field) && !v.is_null() && !listed(k) {
                return Err(PatchError::RetainKeysMismatch {
                    path: path.here(),
                    key: (*k).to_owned(),
                });
            }
        }
        orig.retain(|k, _| listed(k));
    }

    let mut consumed: Vec<&str> = Vec::new();
    for (k, kind, v) in &kinds {
        if let KeyKind::SetOrder(field) = kind {
            if apply_set_element_order(&mut orig, patch, k, field, v, path)? {
                consumed.push(field);
            }
        }
    }

    for (k, kind, v) in &kinds {
        if matches!(kind, KeyKind::Field) && !consumed.contains(k) {
            merge_field(&mut orig, patch, k, v, path)?;
        }
    }

    for (k, kind, v) in &kinds {
        if let KeyKind::DeletePrimitives(field) = kind {
            delete_from_primitive_list(&mut orig, k, field, v, path)?;
        }
    }
    Ok(orig)
}

fn merge_field(
    orig: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    key: &str,
    pv: &Value,
    path: &mut Path,
) -> Result<(), PatchError> {
    if pv.is_null() {
        orig.retain(|k, _| k != key); // keeps key order under `preserve_order`
        return Ok(());
    }
    let strategy = pv.is_array().then(|| field_strategy(path, patch, key));
    let current = match orig.get_mut(key) {
        Some(slot) => std::mem::take(slot),
        None => Value::Null,
    };
    path.push_field(key)?;
    let merged = match (current, pv, strategy) {
        (Value::Object(o), Value::Object(p), _) => merge_object(o, p, path).map(Value::Object),
        (Value::Array(o), Value::Array(p), Some(s)) if s != Strategy::Replace => {
            merge_list(o, p, &s, path).map(|m| Value::Array(m.merged))
        }
        (_, Value::Array(p), Some(s)) => fresh_list(p, &s, path),
        (_, other, _) => fresh(other, path),
    };
    path.pop();
    orig.insert(key.to_owned(), merged?);
    Ok(())
}

/// A patch value stored where nothing (or a value of another type) was: its own nulls and
/// directives are processed so that none of them reach the result.
fn fresh(pv: &Value, path: &mut Path) -> Result<Value, PatchError> {
    Ok(match pv {
        Value::Object(p) => Value::Object(merge_object(Map::new(), p, path)?),
        // Lists reach here only without field context (as elements of replaced lists).
        Value::Array(p) => Value::Array(replace_list(p, path)?),
        other => other.clone(),
    })
}

fn fresh_list(p: &[Value], strategy: &Strategy, path: &mut Path) -> Result<Value, PatchError> {
    Ok(Value::Array(match strategy {
        Strategy::Replace => replace_list(p, path)?,
        s => merge_list(Vec::new(), p, s, path)?.merged,
    }))
}

/// The patch list of a field without merge strategy: it replaces the stored list.
fn replace_list(p: &[Value], path: &mut Path) -> Result<Vec<Value>, PatchError> {
    let mut out = Vec::with_capacity(p.len());
    for (i, el) in p.iter().enumerate() {
        if let Value::Object(m) = el {
            if let Some(d) = m.get(PATCH) {
                if d.as_str() == Some("replace") && m.len() == 1 {
                    continue; // "replace the whole list": what a replace list does anyway
                }
                return Err(PatchError::InvalidList {
                    path: path.here(),
                    reason: format!(
                        "this list has no merge key and is replaced as a whole; \
                         $patch in its element {} is not supported",
                        short_json(el)
                    ),
                });
            }
        }
        path.push_elem(i.to_string())?;
        let v = fresh(el, path);
        path.pop();
        out.push(v?);
    }
    Ok(out)
}

fn delete_from_primitive_list(
    orig: &mut Map<String, Value>,
    directive: &str,
    field: &str,
    v: &Value,
    path: &Path,
) -> Result<(), PatchError> {
    let Value::Array(del) = v else {
        return Err(PatchError::DirectiveNotList {
            path: path.here(),
            directive: directive.to_owned(),
            found: type_name(v),
        });
    };
    if let Some(bad) = del.iter().find(|d| !is_scalar(d)) {
        return Err(PatchError::InvalidDirectiveElement {
            path: path.here(),
            directive: directive.to_owned(),
            reason: format!("{} is not a primitive value", short_json(bad)),
        });
    }
    match orig.get_mut(field) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Array(list)) => {
            if list.iter().any(|x| !is_scalar(x)) {
                return Err(PatchError::InvalidList {
                    path: path.child(field),
                    reason: format!(
                        "{directive} applies to a list of primitives, but the stored list holds objects or lists"
                    ),
                });
            }
            list.retain(|x| !del.iter().any(|d| value_eq(x, d)));
            Ok(())
        }
        Some(other) => Err(PatchError::InvalidList {
            path: path.child(field),
            reason: format!(
                "{directive} applies to a list, but the stored value is {}",
                type_name(other)
            ),
        }),
    }
}

// ---------------------------------------------------------------------------------------
// Merge lists
// ---------------------------------------------------------------------------------------

/// How list elements are identified.
#[derive(Clone, Copy)]
enum Ident<'a> {
    /// Objects, by the value of this merge key.
    Key(&'a str),
    /// Primitives, by value.
    Value,
}

impl Ident<'_> {
    fn of<'v>(&self, el: &'v Value) -> Option<&'v Value> {
        match self {
            Ident::Key(k) => el.as_object().and_then(|m| m.get(*k)),
            Ident::Value => Some(el),
        }
    }
}

fn same_ident(a: Option<&Value>, b: Option<&Value>) -> bool {
    matches!((a, b), (Some(a), Some(b)) if value_eq(a, b))
}

fn index_of(order: &[Option<Value>], id: Option<&Value>) -> Option<usize> {
    order.iter().position(|o| same_ident(o.as_ref(), id))
}

struct MergedList {
    merged: Vec<Value>,
    /// Stored-list order as upstream's reference slice sees it after merging (see
    /// `merge_object_list`), used when `$setElementOrder` reorders the result.
    server_order: Vec<Option<Value>>,
    ident_key: Option<String>,
}

/// Classifies the elements of both lists: `Ok(Some(true))` objects, `Ok(Some(false))`
/// primitives, `Ok(None)` no elements.
fn element_kind<'a>(
    mut elements: impl Iterator<Item = &'a Value>,
    path: &Path,
) -> Result<Option<bool>, PatchError> {
    let mut kind = None;
    elements.try_for_each(|el| {
        if el.is_array() {
            return Err(PatchError::InvalidList {
                path: path.here(),
                reason: "lists of lists cannot be merged".to_owned(),
            });
        }
        let is_obj = el.is_object();
        match kind {
            None => kind = Some(is_obj),
            Some(k) if k != is_obj => {
                return Err(PatchError::InvalidList {
                    path: path.here(),
                    reason: format!(
                        "list mixes objects and primitive values (element {})",
                        short_json(el)
                    ),
                });
            }
            Some(_) => {}
        }
        Ok(())
    })?;
    Ok(kind)
}

fn merge_list(
    orig: Vec<Value>,
    patch: &[Value],
    strategy: &Strategy,
    path: &mut Path,
) -> Result<MergedList, PatchError> {
    match element_kind(orig.iter().chain(patch), path)? {
        None => Ok(MergedList {
            merged: orig,
            server_order: Vec::new(),
            ident_key: None,
        }),
        Some(false) => Ok(merge_primitive_list(orig, patch)),
        Some(true) => match strategy {
            Strategy::MergeKey(key) => merge_object_list(orig, patch, key, path),
            _ => Err(PatchError::InvalidList {
                path: path.here(),
                reason: "cannot merge a list of objects without a merge key".to_owned(),
            }),
        },
    }
}

fn merge_primitive_list(orig: Vec<Value>, patch: &[Value]) -> MergedList {
    let mut merged: Vec<Value> = Vec::with_capacity(orig.len() + patch.len());
    for v in orig.iter().chain(patch) {
        if !merged.iter().any(|m| value_eq(m, v)) {
            merged.push(v.clone());
        }
    }
    let server_order: Vec<Option<Value>> = orig.into_iter().map(Some).collect();
    let patch_order: Vec<Option<Value>> = patch.iter().cloned().map(Some).collect();
    let merged = normalize_order(merged, &patch_order, &server_order, Ident::Value);
    MergedList {
        merged,
        server_order,
        ident_key: None,
    }
}

fn merge_object_list(
    mut live: Vec<Value>,
    patch: &[Value],
    key: &str,
    path: &mut Path,
) -> Result<MergedList, PatchError> {
    let ident = Ident::Key(key);
    // Upstream merges into the stored slice in place: deletions shift it, and appends write
    // into the slots freed at its end until its capacity (its original length, as the API
    // server builds it) is reached. The caller later uses that same backing array as the
    // "stored order" for $setElementOrder, so we track what it would contain.
    let n = live.len();
    let mut alias: Vec<Option<Value>> = live.iter().map(|e| ident.of(e).cloned()).collect();
    let mut alias_len = n;
    let mut reallocated = false;

    let mut rest: Vec<(&Map<String, Value>, &Value)> = Vec::new();
    let mut replace = false;
    for el in patch {
        let Value::Object(m) = el else { continue };
        let key_value = || {
            m.get(key).ok_or_else(|| PatchError::MissingMergeKey {
                path: path.here(),
                key: key.to_owned(),
                element: short_json(el),
            })
        };
        match m.get(PATCH) {
            Some(d) if d.as_str() == Some("delete") => {
                let kv = key_value()?;
                while let Some(i) = live.iter().position(|e| same_ident(ident.of(e), Some(kv))) {
                    live.remove(i);
                    if !reallocated && i < alias_len {
                        // Go's `append(s[:i], s[i+1:]...)`: shift left, last slot untouched.
                        let tail: Vec<Option<Value>> =
                            alias.get(i + 1..alias_len).unwrap_or_default().to_vec();
                        if let Some(dst) = alias.get_mut(i..i + tail.len()) {
                            dst.clone_from_slice(&tail);
                        }
                        alias_len -= 1;
                    }
                }
            }
            Some(d) if d.as_str() == Some("replace") => replace = true,
            Some(d) if d.as_str() == Some("merge") => rest.push((m, key_value()?)),
            Some(d) => {
                return Err(PatchError::InvalidPatchValue {
                    path: path.here(),
                    value: short_json(d),
                });
            }
            None => rest.push((m, key_value()?)),
        }
    }

    let patch_order: Vec<Option<Value>> = rest.iter().map(|(_, kv)| Some((*kv).clone())).collect();

    if replace {
        let mut merged = Vec::with_capacity(rest.len());
        for (m, kv) in &rest {
            path.push_elem(elem_label(key, kv))?;
            let v = merge_object(Map::new(), m, path);
            path.pop();
            merged.push(Value::Object(v?));
        }
        return Ok(MergedList {
            merged,
            server_order: alias,
            ident_key: Some(key.to_owned()),
        });
    }

    let base_order: Vec<Option<Value>> = live.iter().map(|e| ident.of(e).cloned()).collect();
    for (m, kv) in &rest {
        path.push_elem(elem_label(key, kv))?;
        let found = live.iter().position(|e| same_ident(ident.of(e), Some(kv)));
        let result = match found {
            Some(i) => {
                let current = match std::mem::take(&mut live[i]) {
                    Value::Object(o) => o,
                    _ => Map::new(),
                };
                merge_object(current, m, path).map(|o| live[i] = Value::Object(o))
            }
            None => merge_object(Map::new(), m, path).map(|o| {
                live.push(Value::Object(o));
                if !reallocated && alias_len < n {
                    alias[alias_len] = Some((*kv).clone());
                    alias_len += 1;
                } else {
                    reallocated = true;
                }
            }),
        };
        path.pop();
        result?;
    }

    let merged = normalize_order(live, &patch_order, &base_order, ident);
    Ok(MergedList {
        merged,
        server_order: alias,
        ident_key: Some(key.to_owned()),
    })
}

/// Upstream's ordering: elements named in `named_order` first sorted by it, the others by
/// `server_order`, then both interleaved by `merge_sorted`.
fn normalize_order(
    merged: Vec<Value>,
    named_order: &[Option<Value>],
    server_order: &[Option<Value>],
    ident: Ident<'_>,
) -> Vec<Value> {
    let (mut named, mut server_only): (Vec<Value>, Vec<Value>) = merged
        .into_iter()
        .partition(|el| index_of(named_order, ident.of(el)).is_some());
    named.sort_by_key(|el| index_of(named_order, ident.of(el)));
    server_only.sort_by_key(|el| index_of(server_order, ident.of(el)).unwrap_or(usize::MAX));
    merge_sorted(server_only, named, server_order, ident)
}

/// Interleaves `left` (server-only) into `right` (named): a left element goes first only if
/// both are in `server_order` and it comes earlier there.
fn merge_sorted(
    left: Vec<Value>,
    right: Vec<Value>,
    server_order: &[Option<Value>],
    ident: Ident<'_>,
) -> Vec<Value> {
    let mut out = Vec::with_capacity(left.len() + right.len());
    let mut left = left.into_iter().peekable();
    let mut right = right.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => matches!(
                (
                    index_of(server_order, ident.of(l)),
                    index_of(server_order, ident.of(r)),
                ),
                (Some(li), Some(ri)) if li < ri
            ),
        };
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next);
    }
    out
}

/// Handles `$setElementOrder/<field>`; returns whether the field's patch list was consumed.
fn apply_set_element_order(
    orig: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    directive: &str,
    field: &str,
    order: &Value,
    path: &mut Path,
) -> Result<bool, PatchError> {
    let Value::Array(order) = order else {
        return Err(PatchError::DirectiveNotList {
            path: path.here(),
            directive: directive.to_owned(),
            found: type_name(order),
        });
    };
    let strategy = field_strategy(path, patch, field);
    if strategy == Strategy::Replace {
        return Ok(false);
    }
    let bad_element = |reason: String| PatchError::InvalidDirectiveElement {
        path: path.here(),
        directive: directive.to_owned(),
        reason,
    };
    let patch_list = match patch.get(field) {
        None => None,
        Some(Value::Array(p)) => Some(p.as_slice()),
        Some(other) => {
            return Err(PatchError::InvalidList {
                path: path.child(field),
                reason: format!(
                    "{directive} is set, so the patch value must be a list, got {}",
                    type_name(other)
                ),
            });
        }
    };
    let stored = match orig.get_mut(field) {
        Some(Value::Array(a)) => Some(std::mem::take(a)),
        _ => None,
    };

    // Identify elements as the data is shaped: merge-key objects or primitive values.
    let objects = element_kind(
        order
            .iter()
            .chain(patch_list.unwrap_or_default())
            .chain(stored.iter().flatten()),
        &Path::default(),
    )
    .map_err(|_| {
        bad_element(
            "elements must all be merge-key objects or all primitives, like the list".to_owned(),
        )
    })?
    .unwrap_or(false);
    let ident = match (&strategy, objects) {
        (Strategy::MergeKey(k), true) => Ident::Key(k.as_str()),
        (_, false) => Ident::Value,
        (_, true) => {
            return Err(bad_element(
                "objects given for a list of primitives".to_owned(),
            ));
        }
    };
    let order_keys: Vec<Option<Value>> = order.iter().map(|e| ident.of(e).cloned()).collect();
    if let (Ident::Key(k), Some(pos)) = (ident, order_keys.iter().position(Option::is_none)) {
        return Err(bad_element(format!(
            "{} has no merge key {k:?}",
            short_json(&order[pos])
        )));
    }
    if let Some(p) = patch_list {
        check_patch_order(p, &order_keys, ident, path, field)?;
    }

    path.push_field(field)?;
    let merged = match (stored, patch_list) {
        (None, None) => {
            path.pop();
            return Ok(true);
        }
        (Some(s), None) => {
            let server_order = s.iter().map(|e| ident.of(e).cloned()).collect();
            Ok(MergedList {
                merged: s,
                server_order,
                ident_key: None,
            })
        }
        (s, Some(p)) => merge_list(s.unwrap_or_default(), p, &strategy, path),
    };
    path.pop();
    let merged = merged?;
    let ident = match merged.ident_key.as_deref() {
        Some(k) => Ident::Key(k),
        None => ident,
    };
    let result = normalize_order(merged.merged, &order_keys, &merged.server_order, ident);
    orig.insert(field.to_owned(), Value::Array(result));
    Ok(true)
}

/// Patch-list elements (other than directives) must appear in `$setElementOrder` in the
/// same relative order.
fn check_patch_order(
    patch: &[Value],
    order: &[Option<Value>],
    ident: Ident<'_>,
    path: &Path,
    field: &str,
) -> Result<(), PatchError> {
    let mut oi = 0;
    for el in patch {
        if el.as_object().is_some_and(|m| m.contains_key(PATCH)) {
            continue;
        }
        let id = ident.of(el);
        if id.is_none() {
            if let Ident::Key(k) = ident {
                return Err(PatchError::MissingMergeKey {
                    path: path.child(field),
                    key: k.to_owned(),
                    element: short_json(el),
                });
            }
        }
        while oi < order.len() && !same_ident(order[oi].as_ref(), id) {
            oi += 1;
        }
        if oi == order.len() {
            return Err(PatchError::SetElementOrderMismatch {
                path: path.here(),
                field: field.to_owned(),
            });
        }
        oi += 1;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn is_scalar(v: &Value) -> bool {
    !matches!(v, Value::Array(_) | Value::Object(_))
}

/// JSON equality where numbers compare by value (Go decodes them all to float64).
fn value_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => match (x.as_u64(), y.as_u64()) {
                (Some(x), Some(y)) => x == y,
                _ => x.as_f64() == y.as_f64(),
            },
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| value_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| value_eq(v, w)))
        }
        _ => a == b,
    }
}

fn elem_label(key: &str, kv: &Value) -> String {
    match kv {
        Value::String(s) => format!("{key}={s}"),
        other => format!("{key}={}", short_json(other)),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn short_json(v: &Value) -> String {
    let mut s = v.to_string();
    if s.len() > 120 {
        let mut cut = 117;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patched(target: Value, patch: Value) -> Value {
        let mut t = target;
        apply(&mut t, &patch).unwrap_or_else(|e| panic!("patch failed: {e}"));
        t
    }

    fn rejected(target: Value, patch: Value) -> PatchError {
        let mut t = target.clone();
        let err = apply(&mut t, &patch).expect_err("patch should be rejected");
        assert_eq!(t, target, "target must be unchanged after an error");
        err
    }

    fn names(list: &Value, key: &str) -> Vec<Value> {
        list.as_array()
            .expect("list")
            .iter()
            .map(|e| e[key].clone())
            .collect()
    }

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web", "tier": "frontend"},
                         "annotations": {"deployment.kubernetes.io/revision": "3"}},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate",
                             "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [{
                            "name": "web",
                            "image": "web:1",
                            "args": ["--a", "--b"],
                            "env": [{"name": "A", "value": "1"},
                                    {"name": "B", "value": "2"},
                                    {"name": "C", "value": "3"}],
                            "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                            "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}]
                        }, {
                            "name": "sidecar",
                            "image": "proxy:1"
                        }],
                        "volumes": [{"name": "data", "emptyDir": {}}]
                    }
                }
            }
        })
    }

    fn containers(d: &Value) -> &Value {
        &d["spec"]["template"]["spec"]["containers"]
    }

    // ---- the patches kubectl sends -------------------------------------------------

    #[test]
    fn kubectl_set_env_on_container_without_env() {
        let target = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "image": "web:1"}, {"name": "other", "image": "o:1"}]}}}});
        let out = patched(
            target,
            json!({"spec":{"template":{"spec":{"containers":[{"env":[{"name":"X","value":"1"}],"name":"web"}]}}}}),
        );
        assert_eq!(
            out,
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "web", "image": "web:1", "env": [{"name": "X", "value": "1"}]},
                {"name": "other", "image": "o:1"}]}}}})
        );
    }

    #[test]
    fn kubectl_set_env_adds_to_existing_env_upstream_order() {
        // Without $setElementOrder a new element goes before the stored ones it is
        // compared with (upstream mergeSortedSlice), not to the end.
        let out = patched(
            deployment(),
            json!({"spec":{"template":{"spec":{"containers":[{"env":[{"name":"X","value":"1"}],"name":"web"}]}}}}),
        );
        let env = &containers(&out)[0]["env"];
        assert_eq!(names(env, "name"), vec!["X", "A", "B", "C"]);
        // Nothing else touched.
        assert_eq!(
            containers(&out)[1],
            json!({"name": "sidecar", "image": "proxy:1"})
        );
        assert_eq!(containers(&out)[0]["image"], "web:1");
    }

    #[test]
    fn kubectl_set_env_two_way_patch_with_set_element_order() {
        // What kubectl really sends (CreateTwoWayMergePatch adds $setElementOrder).
        let out = patched(
            deployment(),
            json!({"spec":{"template":{"spec":{
                "$setElementOrder/containers":[{"name":"web"},{"name":"sidecar"}],
                "containers":[{
                    "$setElementOrder/env":[{"name":"A"},{"name":"B"},{"name":"C"},{"name":"X"}],
                    "env":[{"name":"X","value":"1"}],
                    "name":"web"}]}}}}),
        );
        assert_eq!(
            names(&containers(&out)[0]["env"], "name"),
            vec!["A", "B", "C", "X"]
        );
        assert_eq!(names(containers(&out), "name"), vec!["web", "sidecar"]);
    }

    #[test]
    fn kubectl_set_env_update_and_unset() {
        // `kubectl set env deployment/web A=9 B-`
        let out = patched(
            deployment(),
            json!({"spec":{"template":{"spec":{
                "$setElementOrder/containers":[{"name":"web"},{"name":"sidecar"}],
                "containers":[{
                    "$setElementOrder/env":[{"name":"A"},{"name":"C"}],
                    "env":[{"name":"A","value":"9"},{"$patch":"delete","name":"B"}],
                    "name":"web"}]}}}}),
        );
        assert_eq!(
            containers(&out)[0]["env"],
            json!([{"name": "A", "value": "9"}, {"name": "C", "value": "3"}])
        );
    }

    #[test]
    fn kubectl_rollout_restart() {
        let patch = json!({"spec":{"template":{"metadata":{"annotations":{
            "kubectl.kubernetes.io/restartedAt":"2026-12-02T11:43:11Z"}}}}});
        let out = patched(deployment(), patch.clone());
        assert_eq!(
            out["spec"]["template"]["metadata"],
            json!({"labels": {"app": "web"},
                   "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-12-02T11:43:11Z"}})
        );
        // Everything else is untouched.
        let mut expected = deployment();
        expected["spec"]["template"]["metadata"]["annotations"] =
            json!({"kubectl.kubernetes.io/restartedAt": "2026-12-02T11:43:11Z"});
        assert_eq!(out, expected);
        // Second restart overwrites the timestamp.
        let again = patched(
            out,
            json!({"spec":{"template":{"metadata":{"annotations":{
                "kubectl.kubernetes.io/restartedAt":"2026-12-02T12:00:00Z"}}}}}),
        );
        assert_eq!(
            again["spec"]["template"]["metadata"]["annotations"]
                ["kubectl.kubernetes.io/restartedAt"],
            "2026-12-02T12:00:00Z"
        );
    }

    #[test]
    fn kubectl_label_and_annotate() {
        // `kubectl label deploy web tier- env=prod` and `kubectl annotate deploy web note=x`
        let out = patched(
            deployment(),
            json!({"metadata":{"labels":{"tier":null,"env":"prod"},"annotations":{"note":"x"}}}),
        );
        assert_eq!(
            out["metadata"]["labels"],
            json!({"app": "web", "env": "prod"})
        );
        assert_eq!(
            out["metadata"]["annotations"],
            json!({"deployment.kubernetes.io/revision": "3", "note": "x"})
        );
        // Removing a label that does not exist is a no-op, not an insertion of null.
        let out = patched(out, json!({"metadata":{"labels":{"nope":null}}}));
        assert_eq!(
            out["metadata"]["labels"],
            json!({"app": "web", "env": "prod"})
        );
    }

    #[test]
    fn kubectl_apply_three_way_patch() {
        // last-applied had env A, B, C and the image web:1; the new manifest drops B,
        // removes C's value, changes the image and drops args. `sidecar` was injected by
        // a webhook and is not in the manifest, so it must survive.
        let patch = json!({
            "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}"}},
            "spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "web"}],
                "containers": [{
                    "$setElementOrder/env": [{"name": "A"}, {"name": "C"}],
                    "args": null,
                    "env": [{"name": "C", "value": null, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                            {"$patch": "delete", "name": "B"}],
                    "image": "web:2",
                    "name": "web"
                }]
            }}}
        });
        let out = patched(deployment(), patch);
        let web = &containers(&out)[0];
        assert_eq!(web["image"], "web:2");
        assert!(web.get("args").is_none());
        assert_eq!(
            web["env"],
            json!([{"name": "A", "value": "1"},
                   {"name": "C", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}])
        );
        assert_eq!(names(containers(&out), "name"), vec!["web", "sidecar"]);
        assert_eq!(
            web["ports"],
            json!([{"containerPort": 8080, "protocol": "TCP"}])
        );
        assert_eq!(
            out["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"],
            "{...}"
        );
        assert_eq!(
            out["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
            "3"
        );
    }

    #[test]
    fn kubectl_apply_reorders_containers_only() {
        let out = patched(
            deployment(),
            json!({"spec":{"template":{"spec":{
                "$setElementOrder/containers":[{"name":"sidecar"},{"name":"web"}]}}}}),
        );
        assert_eq!(names(containers(&out), "name"), vec!["sidecar", "web"]);
        assert_eq!(containers(&out)[1]["image"], "web:1");
    }

    #[test]
    fn kubectl_apply_strategy_switch_with_retain_keys() {
        // Changing the Deployment strategy to Recreate: kubectl sends $retainKeys.
        let out = patched(
            deployment(),
            json!({"spec":{"strategy":{"$retainKeys":["type"],"rollingUpdate":null,"type":"Recreate"}}}),
        );
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn volume_source_switch_with_retain_keys() {
        let out = patched(
            deployment(),
            json!({"spec":{"template":{"spec":{"volumes":[
                {"$retainKeys":["configMap","name"],"configMap":{"name":"cm"},"name":"data"}]}}}}),
        );
        assert_eq!(
            out["spec"]["template"]["spec"]["volumes"],
            json!([{"name": "data", "configMap": {"name": "cm"}}])
        );
    }

    // ---- merge keys by field path --------------------------------------------------

    #[test]
    fn service_ports_merge_by_port() {
        let svc = json!({"kind": "Service", "spec": {"selector": {"app": "web"}, "ports": [
            {"name": "http", "port": 80, "targetPort": 8080},
            {"name": "https", "port": 443, "targetPort": 8443}]}});
        let out = patched(
            svc.clone(),
            json!({"spec":{"ports":[{"port":443,"targetPort":9443},{"port":80,"$patch":"delete"}]}}),
        );
        assert_eq!(
            out["spec"]["ports"],
            json!([{"name": "https", "port": 443, "targetPort": 9443}])
        );
        // Replacing the whole list.
        let out = patched(
            svc,
            json!({"spec":{"ports":[{"$patch":"replace"},{"name":"grpc","port":9000}]}}),
        );
        assert_eq!(
            out["spec"]["ports"],
            json!([{"name": "grpc", "port": 9000}])
        );
        assert_eq!(out["spec"]["selector"], json!({"app": "web"}));
    }

    #[test]
    fn container_ports_merge_by_container_port() {
        let out = patched(
            deployment(),
            json!({"spec":{"template":{"spec":{"containers":[{"name":"web","ports":[
                {"containerPort":8080,"name":"http"},{"containerPort":9090,"name":"metrics"}]}]}}}}),
        );
        let ports = &containers(&out)[0]["ports"];
        assert_eq!(
            ports,
            &json!([{"containerPort": 8080, "protocol": "TCP", "name": "http"},
                    {"containerPort": 9090, "name": "metrics"}])
        );
    }

    #[test]
    fn other_ports_lists_are_replaced() {
        let np = json!({"kind": "NetworkPolicy", "spec": {"ingress": [{"ports": [{"port": 80}, {"port": 443}]}]}});
        let out = patched(np, json!({"spec":{"ingress":[{"ports":[{"port":8080}]}]}}));
        assert_eq!(out["spec"]["ingress"], json!([{"ports": [{"port": 8080}]}]));
    }

    #[test]
    fn replace_lists_args_and_tolerations() {
        let out = patched(
            json!({"spec": {"tolerations": [{"key": "a"}, {"key": "b"}],
                            "containers": [{"name": "w", "args": ["x", "y"], "envFrom": [{"configMapRef": {"name": "a"}}]}]}}),
            json!({"spec": {"tolerations": [{"key": "c"}],
                            "containers": [{"name": "w", "args": ["z"], "envFrom": [{"secretRef": {"name": "s"}}]}]}}),
        );
        assert_eq!(
            out,
            json!({"spec": {"tolerations": [{"key": "c"}],
                            "containers": [{"name": "w", "args": ["z"], "envFrom": [{"secretRef": {"name": "s"}}]}]}})
        );
    }

    #[test]
    fn volume_mounts_merge_by_mount_path() {
        let out = patched(
            deployment(),
            json!({"spec":{"template":{"spec":{"containers":[{"name":"web","volumeMounts":[
                {"mountPath":"/data","readOnly":true},{"mountPath":"/cache","name":"cache"}]}]}}}}),
        );
        assert_eq!(
            containers(&out)[0]["volumeMounts"],
            json!([{"name": "data", "mountPath": "/data", "readOnly": true},
                   {"mountPath": "/cache", "name": "cache"}])
        );
    }

    #[test]
    fn owner_references_by_uid_and_conditions_by_type() {
        let pod = json!({
            "metadata": {"ownerReferences": [{"uid": "u1", "kind": "ReplicaSet", "name": "rs"}]},
            "status": {"conditions": [{"type": "Ready", "status": "False"},
                                      {"type": "Initialized", "status": "True"}]}});
        let out = patched(
            pod,
            json!({"metadata":{"ownerReferences":[{"uid":"u1","controller":true}]},
                   "status":{"conditions":[{"type":"Ready","status":"True"}]}}),
        );
        assert_eq!(
            out["metadata"]["ownerReferences"],
            json!([{"uid": "u1", "kind": "ReplicaSet", "name": "rs", "controller": true}])
        );
        assert_eq!(
            out["status"]["conditions"],
            json!([{"type": "Ready", "status": "True"}, {"type": "Initialized", "status": "True"}])
        );
    }

    #[test]
    fn finalizers_union_and_delete() {
        let obj = json!({"metadata": {"finalizers": ["a", "b"]}});
        let out = patched(obj.clone(), json!({"metadata":{"finalizers":["b","c"]}}));
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b", "c"]));
        // Duplicates collapse; "c" is new, so it goes before the stored "a" (upstream).
        let out = patched(
            obj.clone(),
            json!({"metadata":{"finalizers":["c","b","c"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["c", "a", "b"]));
        let out = patched(
            out,
            json!({"metadata":{"$deleteFromPrimitiveList/finalizers":["a","zzz"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["c", "b"]));
        // Namespace spec.finalizers has no merge strategy.
        let ns = json!({"spec": {"finalizers": ["kubernetes"]}});
        assert_eq!(
            patched(ns, json!({"spec":{"finalizers":["x"]}}))["spec"]["finalizers"],
            json!(["x"])
        );
    }

    #[test]
    fn primitive_list_apply_patch_from_design_doc() {
        // preserve-order-in-strategic-merge-patch.md, "List of Primitives".
        let live = json!({"metadata": {"finalizers": ["b", "e", "a", "c", "d"]}});
        let out = patched(
            live,
            json!({"metadata":{"$setElementOrder/finalizers":["a","b","f"],
                               "$deleteFromPrimitiveList/finalizers":["c"],
                               "finalizers":["f"]}}),
        );
        // Upstream code (not the doc's idealised result) interleaves by stored position.
        assert_eq!(
            out["metadata"]["finalizers"],
            json!(["e", "a", "b", "f", "d"])
        );
    }

    #[test]
    fn deeply_nested_delete() {
        let out = patched(
            deployment(),
            json!({"spec":{"template":{"spec":{"containers":[
                {"name":"web","resources":{"limits":{"cpu":null}}}]}}}}),
        );
        assert_eq!(
            containers(&out)[0]["resources"],
            json!({"limits": {"memory": "1Gi"}})
        );
        let out = patched(
            out,
            json!({"spec":{"template":{"spec":{"containers":[
                {"name":"web","resources":{"limits":{"memory":null}}}]}}}}),
        );
        assert_eq!(containers(&out)[0]["resources"], json!({"limits": {}}));
    }

    #[test]
    fn map_directives_replace_and_delete() {
        let out = patched(
            deployment(),
            json!({"spec":{"selector":{"$patch":"replace","matchLabels":{"x":"y"}}}}),
        );
        assert_eq!(out["spec"]["selector"], json!({"matchLabels": {"x": "y"}}));
        let out = patched(
            deployment(),
            json!({"spec":{"strategy":{"$patch":"delete"}}}),
        );
        assert_eq!(out["spec"]["strategy"], json!({}));
        let out = patched(
            deployment(),
            json!({"metadata":{"labels":{"$patch":"merge","x":"1"}}}),
        );
        assert_eq!(
            out["metadata"]["labels"],
            json!({"app": "web", "tier": "frontend", "x": "1"})
        );
        let out = patched(deployment(), json!({"$patch":"delete"}));
        assert_eq!(out, json!({}));
    }

    #[test]
    fn list_element_delete_removes_all_matches_and_unknown_is_noop() {
        let out = patched(
            json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}, {"name": "a", "x": 1}]}}),
            json!({"spec": {"containers": [{"name": "a", "$patch": "delete"},
                                           {"name": "zz", "$patch": "delete"}]}}),
        );
        assert_eq!(out, json!({"spec": {"containers": [{"name": "b"}]}}));
    }

    #[test]
    fn values_inserted_fresh_carry_no_directives_or_nulls() {
        let out = patched(
            json!({"spec": {}}),
            json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "a"}],
                "containers": [{"name": "a", "env": [{"name": "X", "value": null},
                                                     {"name": "Y", "$patch": "delete"}],
                                "resources": {"$patch": "replace", "limits": {"cpu": "1", "mem": null}}}]}}}}),
        );
        assert_eq!(
            out,
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "a", "env": [{"name": "X"}], "resources": {"limits": {"cpu": "1"}}}]}}}})
        );
        assert!(!has_directive_keys(&out));
    }

    #[test]
    fn type_mismatch_replaces() {
        let out = patched(
            json!({"a": {"b": 1}, "c": [1, 2], "d": "s"}),
            json!({"a": "str", "c": {"x": 1}, "d": [1]}),
        );
        assert_eq!(out, json!({"a": "str", "c": {"x": 1}, "d": [1]}));
    }

    #[test]
    fn numbers_compare_by_value_for_merge_keys() {
        let out = patched(
            json!({"spec": {"ports": [{"port": 80, "name": "a"}]}}),
            json!({"spec": {"ports": [{"port": 80.0, "name": "b"}]}}),
        );
        assert_eq!(out["spec"]["ports"].as_array().map(Vec::len), Some(1));
        assert_eq!(out["spec"]["ports"][0]["name"], "b");
    }

    #[test]
    fn crd_schema_dollar_fields_pass_through() {
        let out = patched(
            json!({"spec": {}}),
            json!({"spec": {"schema": {"$schema": "http://json-schema.org/draft-04/schema#",
                                       "$ref": "#/definitions/x"}}}),
        );
        assert_eq!(out["spec"]["schema"]["$ref"], "#/definitions/x");
    }

    #[test]
    fn inferred_merge_key_for_fields_outside_the_table() {
        // A merge list we do not know, patched the way kubectl patches merge lists.
        let target = json!({"spec": {"widgets": [{"id": "a", "v": 1}, {"id": "b", "v": 2}]}});
        let out = patched(
            target.clone(),
            json!({"spec": {"$setElementOrder/widgets": [{"id": "b"}, {"id": "c"}],
                            "widgets": [{"id": "c", "v": 3}, {"id": "a", "$patch": "delete"}]}}),
        );
        assert_eq!(
            out["spec"]["widgets"],
            json!([{"id": "b", "v": 2}, {"id": "c", "v": 3}])
        );
        let out = patched(
            target.clone(),
            json!({"spec": {"widgets": [{"id": "a", "$patch": "delete"}]}}),
        );
        assert_eq!(out["spec"]["widgets"], json!([{"id": "b", "v": 2}]));
        // Without directives an unknown list is replaced.
        let out = patched(target, json!({"spec": {"widgets": [{"id": "z"}]}}));
        assert_eq!(out["spec"]["widgets"], json!([{"id": "z"}]));
    }

    // ---- upstream ordering cases (k8s patch_test.go raw test cases) -------------------

    #[test]
    fn upstream_add_map_and_delete_map_with_conflict() {
        let out = patched(
            json!({"mergingList": [{"name": 1, "other": "a"}, {"name": 4, "other": "c"}]}),
            json!({"$setElementOrder/mergingList": [{"name": 2}, {"name": 3}],
                   "mergingList": [{"name": 2}, {"name": 3}, {"name": 1, "$patch": "delete"}]}),
        );
        assert_eq!(
            out,
            json!({"mergingList": [{"name": 4, "other": "c"}, {"name": 2}, {"name": 3}]})
        );
    }

    #[test]
    fn upstream_add_map_to_merging_list_by_pointer() {
        let out = patched(
            json!({"mergeItemPtr": [{"name": 1, "other": "a"}, {"name": 3}]}),
            json!({"$setElementOrder/mergeItemPtr": [{"name": 1}, {"name": 2}],
                   "mergeItemPtr": [{"name": 2}]}),
        );
        assert_eq!(
            out,
            json!({"mergeItemPtr": [{"name": 1, "other": "a"}, {"name": 2}, {"name": 3}]})
        );
    }

    #[test]
    fn upstream_set_element_order_item_not_in_list() {
        let out = patched(
            json!({"mergingList": [{"name": 1}, {"name": 3}]}),
            json!({"$setElementOrder/mergingList": [{"name": 3}, {"name": 2}, {"name": 1}],
                   "mergingList": [{"name": 3, "value": 3}, {"name": 1, "value": 1}]}),
        );
        assert_eq!(
            out,
            json!({"mergingList": [{"name": 3, "value": 3}, {"name": 1, "value": 1}]})
        );
    }

    #[test]
    fn upstream_delete_and_reorder_in_one_list_reorder_in_another() {
        let out = patched(
            json!({"spec": {"containers": [{"name": "a", "v": "a"}, {"name": "b", "v": "b"}],
                            "volumes": [{"name": "c"}, {"name": "d"}]}}),
            json!({"spec": {"$setElementOrder/containers": [{"name": "b"}],
                            "$setElementOrder/volumes": [{"name": "d"}, {"name": "c"}],
                            "containers": [{"$patch": "delete", "name": "a"}]}}),
        );
        assert_eq!(
            out,
            json!({"spec": {"containers": [{"name": "b", "v": "b"}],
                            "volumes": [{"name": "d"}, {"name": "c"}]}})
        );
    }

    #[test]
    fn design_doc_order_without_set_element_order() {
        // Live B C A, patch A' B' D: server-only C first, then the patch order.
        let out = patched(
            json!({"spec": {"volumes": [{"name": "B"}, {"name": "C"}, {"name": "A"}]}}),
            json!({"spec": {"volumes": [{"name": "A", "x": 1}, {"name": "B", "x": 1}, {"name": "D"}]}}),
        );
        assert_eq!(
            names(&out["spec"]["volumes"], "name"),
            vec!["C", "A", "B", "D"]
        );
    }

    #[test]
    fn server_only_items_interleave_by_stored_position() {
        // Live C B D A E, order [A, B]: server-only items keep their place relative to
        // the named ones they preceded in the stored list.
        let out = patched(
            json!({"spec": {"volumes": [{"name": "C"}, {"name": "B"}, {"name": "D"}, {"name": "A"}, {"name": "E"}]}}),
            json!({"spec": {"$setElementOrder/volumes": [{"name": "A"}, {"name": "B"}],
                            "volumes": [{"name": "A", "x": 1}, {"name": "B", "x": 1}]}}),
        );
        assert_eq!(
            names(&out["spec"]["volumes"], "name"),
            vec!["C", "D", "A", "B", "E"]
        );
    }

    /// Raw three-way cases of upstream's patch_test.go: (current, three-way patch, result).
    /// The field names are not in the table, so this also exercises merge-key inference.
    #[test]
    fn upstream_raw_three_way_cases() {
        let ml = |items: Value| json!({ "mergingList": items });
        let il = |items: Value| json!({ "mergingIntList": items });
        let cases: Vec<(&str, Value, Value, Value)> = vec![
            (
                "merge lists of scalars",
                il(json!([1, 2, 4])),
                json!({"$setElementOrder/mergingIntList": [1, 2, 3], "mergingIntList": [3]}),
                il(json!([1, 2, 3, 4])),
            ),
            (
                "add an item in a list of primitives and preserve order",
                il(json!([1, 4, 2])),
                json!({"$setElementOrder/mergingIntList": [3, 1, 2], "mergingIntList": [3]}),
                il(json!([3, 1, 4, 2])),
            ),
            (
                "delete an item in a list of primitives and preserve order",
                il(json!([1, 2, 3])),
                json!({"$setElementOrder/mergingIntList": [2, 1],
                       "$deleteFromPrimitiveList/mergingIntList": [3]}),
                il(json!([2, 1])),
            ),
            (
                "add multiple items in a int list and preserve order",
                il(json!([1, 2])),
                json!({"$setElementOrder/mergingIntList": [1, 4, 2, 3], "mergingIntList": [4, 3]}),
                il(json!([1, 4, 2, 3])),
            ),
            (
                "add an item in a list and preserve order",
                ml(json!([{"name": 1, "other": "a"}, {"name": 2, "value": 2, "other": "b"}])),
                json!({"$setElementOrder/mergingList": [{"name": 3}, {"name": 1}, {"name": 2}],
                       "mergingList": [{"name": 3, "value": 3}]}),
                ml(json!([{"name": 3, "value": 3}, {"name": 1, "other": "a"},
                          {"name": 2, "value": 2, "other": "b"}])),
            ),
            (
                "add multiple items in a list and preserve order",
                ml(json!([{"name": 1, "other": "a"}, {"name": 2, "value": 2, "other": "b"}])),
                json!({"$setElementOrder/mergingList": [{"name": 1}, {"name": 4}, {"name": 2}, {"name": 3}],
                       "mergingList": [{"name": 4, "value": 4}, {"name": 3, "value": 3}]}),
                ml(json!([{"name": 1, "other": "a"}, {"name": 4, "value": 4},
                          {"name": 2, "value": 2, "other": "b"}, {"name": 3, "value": 3}])),
            ),
            (
                "delete an item in a list and preserve order",
                ml(
                    json!([{"name": 1, "other": "a"}, {"name": 2, "value": 2, "other": "b"},
                          {"name": 3, "value": 3}]),
                ),
                json!({"$setElementOrder/mergingList": [{"name": 2}, {"name": 1}],
                       "mergingList": [{"name": 3, "$patch": "delete"}]}),
                ml(json!([{"name": 2, "value": 2, "other": "b"}, {"name": 1, "other": "a"}])),
            ),
            (
                "change an item in a list and preserve order",
                ml(
                    json!([{"name": 1, "other": "a"}, {"name": 2, "value": 2, "other": "b"},
                          {"name": 3, "value": 3}]),
                ),
                json!({"$setElementOrder/mergingList": [{"name": 2}, {"name": 3}, {"name": 1}],
                       "mergingList": [{"name": 3, "value": "x"}]}),
                ml(
                    json!([{"name": 2, "value": 2, "other": "b"}, {"name": 3, "value": "x"},
                          {"name": 1, "other": "a"}]),
                ),
            ),
            (
                "add and delete an item in a list and preserve order",
                ml(
                    json!([{"name": 1, "other": "a"}, {"name": 2, "value": 2, "other": "b"},
                          {"name": 3, "value": 3}]),
                ),
                json!({"$setElementOrder/mergingList": [{"name": 4}, {"name": 2}, {"name": 1}],
                       "mergingList": [{"name": 4, "value": 4}, {"name": 3, "$patch": "delete"}]}),
                ml(
                    json!([{"name": 4, "value": 4}, {"name": 2, "value": 2, "other": "b"},
                          {"name": 1, "other": "a"}]),
                ),
            ),
            (
                "set elements order in a list with server-only items",
                ml(
                    json!([{"name": 1, "other": "a"}, {"name": 3, "value": 3}, {"name": 4, "value": 4},
                          {"name": 2, "value": 2}, {"name": 9}]),
                ),
                json!({"$setElementOrder/mergingList": [{"name": 4}, {"name": 2}, {"name": 3}, {"name": 1}]}),
                ml(
                    json!([{"name": 4, "value": 4}, {"name": 2, "value": 2}, {"name": 3, "value": 3},
                          {"name": 1, "other": "a"}, {"name": 9}]),
                ),
            ),
            (
                "set elements order in a list with server-only items 2",
                ml(
                    json!([{"name": 1, "other": "a"}, {"name": 2, "value": 2}, {"name": 9},
                          {"name": 3, "value": 3}, {"name": 4, "value": 4}]),
                ),
                json!({"$setElementOrder/mergingList": [{"name": 2}, {"name": 1}, {"name": 4}, {"name": 3}]}),
                ml(
                    json!([{"name": 2, "value": 2}, {"name": 1, "other": "a"}, {"name": 9},
                          {"name": 4, "value": 4}, {"name": 3, "value": 3}]),
                ),
            ),
            (
                "set elements order in a list with server-only items 3",
                ml(
                    json!([{"name": 1, "other": "a"}, {"name": 2, "value": 2}, {"name": 7}, {"name": 9},
                          {"name": 8}, {"name": 3, "value": 3}, {"name": 4, "value": 4}]),
                ),
                json!({"$setElementOrder/mergingList": [{"name": 2}, {"name": 1}, {"name": 4}, {"name": 3}]}),
                ml(
                    json!([{"name": 2, "value": 2}, {"name": 1, "other": "a"}, {"name": 7}, {"name": 9},
                          {"name": 8}, {"name": 4, "value": 4}, {"name": 3, "value": 3}]),
                ),
            ),
            (
                "nested patch merge with empty list",
                json!({"name": "hi", "mergingList": [{"name": "hello2"}]}),
                json!({"$setElementOrder/mergingList": [{"name": "hello"}, {"name": "doesntexist"}],
                       "mergingList": [{"name": "hello"}]}),
                json!({"name": "hi", "mergingList": [{"name": "hello"}, {"name": "hello2"}]}),
            ),
            (
                "add field to map in merging list by pointer with conflict",
                json!({"mergeItemPtr": [
                    {"name": 1, "other": "a", "mergeItemPtr": [{"name": 1, "value": "a"},
                                                               {"name": 2, "value": 2, "other": "b"}]},
                    {"name": 2, "other": "b"}]}),
                json!({"$setElementOrder/mergeItemPtr": [{"name": 1}, {"name": 2}],
                       "mergeItemPtr": [{"$setElementOrder/mergeItemPtr": [{"name": 1}, {"name": 2}],
                                         "name": 1, "mergeItemPtr": [{"name": 1, "value": 1}]}]}),
                json!({"mergeItemPtr": [
                    {"name": 1, "other": "a", "mergeItemPtr": [{"name": 1, "value": 1},
                                                               {"name": 2, "value": 2, "other": "b"}]},
                    {"name": 2, "other": "b"}]}),
            ),
        ];
        for (name, current, patch, expected) in cases {
            let mut t = current;
            apply(&mut t, &patch).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(t, expected, "{name}");
        }
    }

    // ---- errors --------------------------------------------------------------------

    #[test]
    fn invalid_patch_directive_value() {
        let e = rejected(
            deployment(),
            json!({"spec": {"strategy": {"$patch": "bogus"}}}),
        );
        assert!(matches!(e, PatchError::InvalidPatchValue { .. }), "{e}");
        assert!(e.to_string().contains("spec.strategy"), "{e}");
        let e = rejected(deployment(), json!({"spec": {"$patch": 1}}));
        assert!(matches!(e, PatchError::InvalidPatchValue { .. }), "{e}");
        let e = rejected(
            deployment(),
            json!({"spec":{"template":{"spec":{"containers":[{"name":"web","$patch":"explode"}]}}}}),
        );
        assert!(
            e.to_string().contains("spec.template.spec.containers"),
            "{e}"
        );
    }

    #[test]
    fn unknown_directive_keys() {
        for key in [
            "$foo",
            "$setElementOrder/",
            "$setElementOrder",
            "$deleteFromPrimitiveList",
            "$retainkeys",
        ] {
            let e = rejected(deployment(), json!({"metadata": {"labels": {key: []}}}));
            match &e {
                PatchError::UnknownDirective { path, key: k } => {
                    assert_eq!(path, "metadata.labels");
                    assert_eq!(k, key);
                }
                other => panic!("{key}: unexpected {other}"),
            }
        }
    }

    #[test]
    fn set_element_order_must_be_a_list() {
        let e = rejected(
            deployment(),
            json!({"spec":{"template":{"spec":{"$setElementOrder/containers":"web"}}}}),
        );
        assert!(matches!(e, PatchError::DirectiveNotList { .. }), "{e}");
        assert!(e.to_string().contains("spec.template.spec"), "{e}");
        assert!(e.to_string().contains("$setElementOrder/containers"), "{e}");
        let e = rejected(
            deployment(),
            json!({"spec":{"template":{"spec":{"$setElementOrder/containers":[{"image":"x"}]}}}}),
        );
        assert!(
            matches!(e, PatchError::InvalidDirectiveElement { .. }),
            "{e}"
        );
    }

    #[test]
    fn set_element_order_must_match_patch_order() {
        let e = rejected(
            deployment(),
            json!({"spec":{"template":{"spec":{
                "$setElementOrder/containers":[{"name":"web"},{"name":"sidecar"}],
                "containers":[{"name":"sidecar","image":"p:2"},{"name":"web","image":"w:2"}]}}}}),
        );
        assert!(
            matches!(e, PatchError::SetElementOrderMismatch { .. }),
            "{e}"
        );
        let e = rejected(
            deployment(),
            json!({"spec":{"template":{"spec":{
                "$setElementOrder/containers":[{"name":"web"}],
                "containers":[{"name":"new","image":"n:1"}]}}}}),
        );
        assert!(
            matches!(e, PatchError::SetElementOrderMismatch { .. }),
            "{e}"
        );
    }

    #[test]
    fn merge_list_element_without_merge_key() {
        let e = rejected(
            deployment(),
            json!({"spec":{"template":{"spec":{"containers":[{"name":"web","env":[{"value":"1"}]}]}}}}),
        );
        match &e {
            PatchError::MissingMergeKey { path, key, .. } => {
                assert_eq!(path, "spec.template.spec.containers[name=web].env");
                assert_eq!(key, "name");
            }
            other => panic!("unexpected {other}"),
        }
        let e = rejected(
            deployment(),
            json!({"spec":{"template":{"spec":{"containers":[{"image":"x"}]}}}}),
        );
        assert!(
            e.to_string().contains("spec.template.spec.containers"),
            "{e}"
        );
        let e = rejected(
            deployment(),
            json!({"spec":{"template":{"spec":{"containers":[{"$patch":"delete"}]}}}}),
        );
        assert!(matches!(e, PatchError::MissingMergeKey { .. }), "{e}");
    }

    #[test]
    fn bad_list_shapes() {
        let e = rejected(
            deployment(),
            json!({"spec":{"template":{"spec":{"containers":["web"]}}}}),
        );
        assert!(matches!(e, PatchError::InvalidList { .. }), "{e}");
        let e = rejected(
            json!({"metadata": {"finalizers": ["a"]}}),
            json!({"metadata": {"finalizers": [{"x": 1}]}}),
        );
        assert!(e.to_string().contains("metadata.finalizers"), "{e}");
        let e = rejected(
            json!({"metadata": {"finalizers": ["a"]}}),
            json!({"metadata": {"finalizers": [["a"]]}}),
        );
        assert!(e.to_string().contains("lists of lists"), "{e}");
        let e = rejected(
            json!({"metadata": {"finalizers": ["a"]}}),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": "a"}}),
        );
        assert!(matches!(e, PatchError::DirectiveNotList { .. }), "{e}");
        let e = rejected(
            json!({"spec": {"tolerations": []}}),
            json!({"spec": {"tolerations": [{"key": "a", "$patch": "delete", "effect": "x"}]}}),
        );
        assert!(e.to_string().contains("spec.tolerations"), "{e}");
    }

    #[test]
    fn retain_keys_errors() {
        let e = rejected(
            deployment(),
            json!({"spec":{"strategy":{"$retainKeys":["type"],"type":"Recreate","rollingUpdate":{"maxSurge":1}}}}),
        );
        match &e {
            PatchError::RetainKeysMismatch { path, key } => {
                assert_eq!(path, "spec.strategy");
                assert_eq!(key, "rollingUpdate");
            }
            other => panic!("unexpected {other}"),
        }
        let e = rejected(
            deployment(),
            json!({"spec":{"strategy":{"$retainKeys":"type"}}}),
        );
        assert!(matches!(e, PatchError::DirectiveNotList { .. }), "{e}");
    }

    #[test]
    fn top_level_shapes() {
        let e = rejected(deployment(), json!([1]));
        assert!(matches!(e, PatchError::PatchNotObject { .. }));
        let e = rejected(json!([1]), json!({}));
        assert!(matches!(e, PatchError::TargetNotObject { .. }));
        assert_eq!(patched(Value::Null, json!({"a": 1})), json!({"a": 1}));
    }

    #[test]
    fn target_unchanged_when_a_later_part_fails() {
        // Labels are merged before spec is visited (keys are processed in order), and the
        // error comes from deep inside spec: the label change must not leak out.
        let patch = json!({
            "metadata": {"labels": {"tier": null, "new": "x"}},
            "spec": {"template": {"spec": {"containers": [
                {"name": "web", "image": "web:2", "env": [{"value": "no-name"}]}]}}}});
        let err = rejected(deployment(), patch);
        assert!(err.to_string().contains("env"), "{err}");
    }

    #[test]
    fn too_deep_is_an_error_not_a_crash() {
        let mut patch = json!({"leaf": 1});
        for _ in 0..400 {
            patch = json!({ "n": patch });
        }
        let e = rejected(json!({}), patch);
        assert!(matches!(e, PatchError::TooDeep { .. }), "{e}");
    }

    // ---- property-style robustness ---------------------------------------------------

    fn has_directive_keys(v: &Value) -> bool {
        match v {
            Value::Object(m) => m.iter().any(|(k, v)| {
                (k.starts_with('$') && k != "$ref" && k != "$schema") || has_directive_keys(v)
            }),
            Value::Array(a) => a.iter().any(has_directive_keys),
            _ => false,
        }
    }

    /// Small deterministic generator (xorshift) of Kubernetes-flavoured JSON.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[(self.next() % items.len() as u64) as usize]
        }
        fn value(&mut self, depth: u32, directives: bool) -> Value {
            let keys = [
                "spec",
                "metadata",
                "containers",
                "env",
                "name",
                "ports",
                "port",
                "containerPort",
                "finalizers",
                "volumes",
                "conditions",
                "type",
                "labels",
                "value",
                "args",
                "template",
                "mergingList",
            ];
            let directive_keys = [
                "$patch",
                "$retainKeys",
                "$setElementOrder/containers",
                "$setElementOrder/env",
                "$deleteFromPrimitiveList/finalizers",
                "$setElementOrder/mergingList",
                "$bogus",
            ];
            let scalars = [
                json!(null),
                json!("web"),
                json!("a"),
                json!(80),
                json!(80.0),
                json!(true),
                json!("delete"),
                json!("replace"),
                json!("merge"),
            ];
            let roll = self.next() % 10;
            if depth == 0 || roll < 3 {
                return scalars[(self.next() % scalars.len() as u64) as usize].clone();
            }
            if roll < 6 {
                let n = self.next() % 4;
                return Value::Array((0..n).map(|_| self.value(depth - 1, directives)).collect());
            }
            let mut m = Map::new();
            for _ in 0..(self.next() % 5) {
                let k = if directives && self.next().is_multiple_of(4) {
                    self.pick(&directive_keys)
                } else {
                    self.pick(&keys)
                };
                m.insert(k.to_owned(), self.value(depth - 1, directives));
            }
            Value::Object(m)
        }
    }

    #[test]
    fn random_shapes_never_panic_and_never_leak_directives() {
        let mut g = Gen(0x9E37_79B9_7F4A_7C15);
        let mut applied = 0;
        for _ in 0..5000 {
            let target = match g.value(6, false) {
                Value::Object(m) => Value::Object(m),
                other => json!({ "spec": other }),
            };
            let patch = match g.value(6, true) {
                Value::Object(m) => Value::Object(m),
                other => json!({ "spec": other }),
            };
            let mut t = target.clone();
            match apply(&mut t, &patch) {
                Ok(()) => {
                    applied += 1;
                    assert!(!has_directive_keys(&t), "directive leaked: {patch} -> {t}");
                }
                Err(e) => {
                    assert_eq!(t, target, "half-patched after {e}");
                    assert!(!e.to_string().is_empty());
                }
            }
        }
        assert!(
            applied > 500,
            "generator too hostile: only {applied} patches applied"
        );
    }

    #[test]
    fn random_patches_on_a_real_deployment() {
        let mut g = Gen(42);
        for _ in 0..2000 {
            let fragment = g.value(4, true);
            let patch = json!({"spec": {"template": {"spec": {"containers": [
                {"name": "web", "env": [fragment.clone()]}], "volumes": fragment}}}});
            let mut t = deployment();
            if apply(&mut t, &patch).is_ok() {
                assert!(!has_directive_keys(&t), "directive leaked: {patch} -> {t}");
            } else {
                assert_eq!(t, deployment());
            }
        }
    }
}
