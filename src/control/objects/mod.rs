//! The object store: Kubernetes objects over a [`KvStore`], with the API
//! server's rules for metadata, optimistic concurrency, subresources,
//! deletion and garbage collection of owned objects.
//!
//! Objects are stored as their JSON at `/registry/<group or core>/<plural>/
//! <namespace>/<name>` (cluster-scoped: without the namespace), without a
//! `resourceVersion`: that is the key's `mod_revision`, set on the way out,
//! as the Kubernetes API server does over etcd.
//!
//! Everything here works on JSON ([`Value`]) because the API serves JSON of
//! any registered kind; reconcilers use the typed helpers
//! ([`Objects::get_as`], [`Objects::list_as`], ...), which take and return
//! `k8s-openapi` types. Time is passed in.
//!
//! Deletion: an object with finalizers, or deleted with foreground
//! propagation, gets a `deletionTimestamp` and stays until its finalizers
//! are gone; a pod gets a `deletionTimestamp` and a grace period, and its
//! reconciler removes it once its process has stopped. Owned objects
//! (`ownerReferences`) of a removed object are removed with it
//! (background propagation), or freed of the reference (orphan).

mod deferred;
mod owners;
pub mod selector;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::{Metadata, Resource};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use super::kinds::{self, CheckError, DecodeError, FieldError, Kind, KINDS};
use super::store::{KvStore, Precondition, Revision, WatchError, WatchReceiver, WriteError};
pub use deferred::{DeferredWrite, DeferredWriter};
pub use selector::{FieldSelector, LabelSelector, SelectorError};

/// Namespaces that always exist.
pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Namespaces that may not be deleted, as on an API server.
pub const PERMANENT_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public"];

/// Why an object operation was refused; each maps to the API server's
/// `Status` reason and code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectError {
    /// 404 NotFound.
    #[error("{plural} \"{name}\" not found")]
    NotFound {
        /// Resource, with group (`deployments.apps`).
        plural: String,
        /// Name.
        name: String,
    },
    /// 409 AlreadyExists.
    #[error("{plural} \"{name}\" already exists")]
    AlreadyExists {
        /// Resource, with group.
        plural: String,
        /// Name.
        name: String,
    },
    /// 409 Conflict.
    #[error("Operation cannot be fulfilled on {plural} \"{name}\": {message}")]
    Conflict {
        /// Resource, with group.
        plural: String,
        /// Name.
        name: String,
        /// Why.
        message: String,
    },
    /// 422 Invalid.
    #[error("{kind} \"{name}\" is invalid: {}", causes.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", "))]
    Invalid {
        /// Kind (`Service`).
        kind: String,
        /// Name.
        name: String,
        /// Every invalid field.
        causes: Vec<FieldError>,
    },
    /// 400 BadRequest.
    #[error("{0}")]
    BadRequest(String),
    /// 410 Gone (a watch from too old a revision).
    #[error("too old resource version: {requested} ({oldest})")]
    Gone {
        /// Asked for.
        requested: Revision,
        /// Oldest available.
        oldest: Revision,
    },
    /// 405 MethodNotAllowed.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 403 Forbidden.
    #[error("{0}")]
    Forbidden(String),
    /// 500 InternalError: the store could not write.
    #[error("{0}")]
    Storage(String),
}

impl ObjectError {
    /// The HTTP status code.
    pub fn code(&self) -> u16 {
        match self {
            ObjectError::NotFound { .. } => 404,
            ObjectError::AlreadyExists { .. } | ObjectError::Conflict { .. } => 409,
            ObjectError::Invalid { .. } => 422,
            ObjectError::BadRequest(_) => 400,
            ObjectError::Gone { .. } => 410,
            ObjectError::MethodNotAllowed(_) => 405,
            ObjectError::Forbidden(_) => 403,
            ObjectError::Storage(_) => 500,
        }
    }

    /// The `Status.reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            ObjectError::NotFound { .. } => "NotFound",
            ObjectError::AlreadyExists { .. } => "AlreadyExists",
            ObjectError::Conflict { .. } => "Conflict",
            ObjectError::Invalid { .. } => "Invalid",
            ObjectError::BadRequest(_) => "BadRequest",
            ObjectError::Gone { .. } => "Expired",
            ObjectError::MethodNotAllowed(_) => "MethodNotAllowed",
            ObjectError::Forbidden(_) => "Forbidden",
            ObjectError::Storage(_) => "InternalError",
        }
    }
}

/// How strictly unknown fields are treated (`?fieldValidation=`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FieldValidation {
    /// Dropped silently.
    Ignore,
    /// Dropped (the API adds a warning).
    #[default]
    Warn,
    /// Refused with 400.
    Strict,
}

/// Options of a create or update.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteOptions {
    /// `?dryRun=All`: check everything, write nothing.
    pub dry_run: bool,
    /// `?fieldValidation=`.
    pub field_validation: FieldValidation,
}

/// How owned objects go with their owner (`propagationPolicy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Propagation {
    /// Dependents removed after the owner (the default).
    #[default]
    Background,
    /// Owner kept (with a `deletionTimestamp`) until its dependents are gone.
    Foreground,
    /// Dependents kept, freed of the owner reference.
    Orphan,
}

/// Options of a delete.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeleteOptions {
    /// `?dryRun=All`.
    pub dry_run: bool,
    /// `gracePeriodSeconds` (pods): `Some(0)` removes at once.
    pub grace_period_seconds: Option<i64>,
    /// `propagationPolicy`.
    pub propagation: Propagation,
    /// `preconditions.resourceVersion`.
    pub precondition_revision: Option<Revision>,
}

/// A step every create and update passes before it is written (the API
/// server's mutating and validating admission): cluster IP allocation, for
/// example.
pub trait Admission: Send + Sync {
    /// Sees (and may change or refuse) an object about to be created
    /// (`old` is `None`) or updated. Runs after validation.
    fn admit(&self, kind: &Kind, obj: &mut Value, old: Option<&Value>) -> Result<(), ObjectError>;

    /// The object admitted for creation was not written after all (a dry
    /// run, a conflict), or a stored object was removed: release what
    /// `admit` took for it.
    fn abandoned(&self, kind: &Kind, obj: &Value);
}

/// Where objects live, and the rules of the API server over them.
#[derive(Clone)]
pub struct Objects {
    kv: Arc<dyn KvStore>,
    admission: Vec<Arc<dyn Admission>>,
    owners: Arc<owners::OwnerIndex>,
    /// Store keys of objects this process gave the `foregroundDeletion`
    /// finalizer, with their kind: what
    /// [`Objects::finish_foreground_deletions`] looks at between full scans.
    foreground: Arc<parking_lot::Mutex<std::collections::BTreeMap<String, &'static Kind>>>,
    /// The deferred writer's queue while it runs (see [`Objects::defer`]).
    deferred: deferred::DeferredQueue,
}

/// `t` as a Kubernetes `Time` (second precision, as the API shows it).
pub fn kube_time(t: SystemTime) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::from_second(secs).unwrap_or_default(),
    )
}

fn rfc3339(t: SystemTime) -> String {
    kube_time(t).0.to_string()
}

/// A random version 4 UUID, as object uids are.
pub fn new_uid() -> String {
    let mut b: [u8; 16] = fastrand::u128(..).to_le_bytes();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The 5-character suffix of `generateName` (the API server's alphabet,
/// without vowels and look-alikes).
pub fn name_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[fastrand::usize(..ALPHABET.len())] as char)
        .collect()
}

/// The resource name with its group, as error messages print it.
fn qualified(kind: &Kind) -> String {
    if kind.group.is_empty() {
        kind.plural.to_string()
    } else {
        format!("{}.{}", kind.plural, kind.group)
    }
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

fn storage(e: WriteError) -> ObjectError {
    ObjectError::Storage(e.to_string())
}

/// An object's metadata alone, for [`Objects::scan`] passes that need
/// names, uids or labels (its spec and status are skipped, not built).
#[derive(Debug, Default, serde::Deserialize)]
pub struct MetadataOnly {
    /// The metadata.
    #[serde(default)]
    pub metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
}

impl Objects {
    /// The object store over `kv`, with the system namespaces made if
    /// missing.
    pub fn new(kv: Arc<dyn KvStore>, now: SystemTime) -> Result<Self, ObjectError> {
        let objects = Self {
            kv,
            admission: Vec::new(),
            owners: Arc::default(),
            foreground: Arc::default(),
            deferred: Arc::default(),
        };
        let ns = kinds::of::<k8s_openapi::api::core::v1::Namespace>();
        for name in SYSTEM_NAMESPACES {
            let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
            match objects.create(ns, None, obj, WriteOptions::default(), now) {
                Ok(_) | Err(ObjectError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(objects)
    }

    /// Adds an admission step (see [`Admission`]).
    pub fn with_admission(mut self, step: Arc<dyn Admission>) -> Self {
        self.admission.push(step);
        self
    }

    fn admit(&self, kind: &Kind, obj: &mut Value, old: Option<&Value>) -> Result<(), ObjectError> {
        for (i, step) in self.admission.iter().enumerate() {
            if let Err(e) = step.admit(kind, obj, old) {
                if old.is_none() {
                    for earlier in &self.admission[..i] {
                        earlier.abandoned(kind, obj);
                    }
                }
                return Err(e);
            }
        }
        Ok(())
    }

    fn abandon(&self, kind: &Kind, obj: &Value) {
        for step in &self.admission {
            step.abandoned(kind, obj);
        }
    }

    /// The store underneath.
    pub fn kv(&self) -> &Arc<dyn KvStore> {
        &self.kv
    }

    /// The key prefix of a kind's objects in `namespace` (all namespaces
    /// for `None`).
    pub fn prefix(kind: &Kind, namespace: Option<&str>) -> String {
        let group = if kind.group.is_empty() {
            "core"
        } else {
            kind.group
        };
        match namespace {
            Some(ns) if kind.namespaced => format!("/registry/{group}/{}/{ns}/", kind.plural),
            _ => format!("/registry/{group}/{}/", kind.plural),
        }
    }

    fn key(kind: &Kind, namespace: Option<&str>, name: &str) -> String {
        format!("{}{name}", Self::prefix(kind, namespace))
    }

    /// Decodes a stored value, with `resourceVersion` set.
    pub fn object_of(kv: &super::store::KeyValue) -> Value {
        let mut obj: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), kv.mod_revision.to_string().into());
        }
        obj
    }

    /// Writes `obj` under `key`: stored without `resourceVersion`,
    /// `managedFields` and `selfLink`, then given the write's revision as
    /// its `resourceVersion`, so it is what a read would return. In place:
    /// neither a copy of the object nor a parse of what was written (both
    /// were a pass over every object written, thousands of them when a
    /// collection is deleted).
    fn put_object(&self, key: &str, obj: &mut Value, pre: Precondition) -> Result<(), WriteError> {
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
            meta.remove("managedFields");
            meta.remove("selfLink");
        }
        let value = Arc::from(serde_json::to_vec(&*obj).expect("JSON values serialize"));
        let kv = self.kv.put(key, value, pre)?;
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), kv.mod_revision.to_string().into());
        }
        Ok(())
    }

    fn check(
        kind: &Kind,
        obj: &Value,
        old: Option<&Value>,
        opts: WriteOptions,
    ) -> Result<Value, ObjectError> {
        let name = meta_str(obj, "name").unwrap_or("").to_string();
        (kind.check)(obj, old, opts.field_validation == FieldValidation::Strict).map_err(
            |e| match e {
                CheckError::Decode(DecodeError::BadRequest(m)) => {
                    ObjectError::BadRequest(format!("error decoding {}: {m}", kind.kind))
                }
                CheckError::Decode(DecodeError::UnknownFields(fields)) => {
                    ObjectError::BadRequest(format!(
                        "strict decoding error: {}",
                        fields
                            .iter()
                            .map(|f| format!("unknown field \"{f}\""))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                }
                CheckError::Invalid(causes) => ObjectError::Invalid {
                    kind: kind.kind.to_string(),
                    name,
                    causes,
                },
            },
        )
    }

    fn namespace_exists(&self, ns: &str) -> Result<(), ObjectError> {
        let nskind = kinds::of::<k8s_openapi::api::core::v1::Namespace>();
        match self.kv.get(&Self::key(nskind, None, ns)) {
            Some(kv)
                if Self::object_of(&kv)
                    .pointer("/metadata/deletionTimestamp")
                    .is_none() =>
            {
                Ok(())
            }
            Some(_) => Err(ObjectError::Forbidden(format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            ))),
            None => Err(ObjectError::NotFound {
                plural: "namespaces".into(),
                name: ns.into(),
            }),
        }
    }

    /// Creates an object of `kind` in `namespace` (ignored for
    /// cluster-scoped kinds) and returns it as stored.
    pub fn create(
        &self,
        kind: &Kind,
        namespace: Option<&str>,
        mut obj: Value,
        opts: WriteOptions,
        now: SystemTime,
    ) -> Result<Value, ObjectError> {
        let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
            return Err(ObjectError::BadRequest("the object has no metadata".into()));
        };
        let namespace = if kind.namespaced {
            let body_ns = meta.get("namespace").and_then(Value::as_str);
            let ns = match (namespace, body_ns) {
                (Some(url), Some(body)) if url != body => {
                    return Err(ObjectError::BadRequest(
                        "the namespace of the provided object does not match the namespace sent on the request".into(),
                    ))
                }
                (Some(ns), _) | (None, Some(ns)) => ns.to_string(),
                (None, None) => "default".to_string(),
            };
            meta.insert("namespace".into(), ns.clone().into());
            Some(ns)
        } else {
            meta.remove("namespace");
            None
        };
        let mut name = meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let generate = meta
            .get("generateName")
            .and_then(Value::as_str)
            .map(str::to_string);
        if name.is_empty() {
            match &generate {
                Some(prefix) if !prefix.is_empty() => name = format!("{prefix}{}", name_suffix()),
                _ => {
                    return Err(ObjectError::Invalid {
                        kind: kind.kind.into(),
                        name: String::new(),
                        causes: vec![FieldError {
                            field: "metadata.name".into(),
                            reason: kinds::FieldReason::Required,
                            message: "Required value: name or generateName is required".into(),
                        }],
                    })
                }
            }
        }
        if let Some(why) = kind.validate_name(&name) {
            return Err(ObjectError::Invalid {
                kind: kind.kind.into(),
                name: name.clone(),
                causes: vec![FieldError::invalid(
                    "metadata.name",
                    format!("\"{name}\""),
                    &why,
                )],
            });
        }
        meta.insert("name".into(), name.clone().into());
        meta.insert("uid".into(), new_uid().into());
        meta.insert("creationTimestamp".into(), rfc3339(now).into());
        if kind.generation {
            meta.insert("generation".into(), 1.into());
        } else {
            meta.remove("generation");
        }
        meta.remove("resourceVersion");
        meta.remove("deletionTimestamp");
        meta.remove("deletionGracePeriodSeconds");
        if kind.status && !kind.is::<k8s_openapi::api::core::v1::Namespace>() {
            if let Some(o) = obj.as_object_mut() {
                o.remove("status");
            }
        }
        if let Some(ns) = &namespace {
            self.namespace_exists(ns)?;
        }
        let mut obj = Self::check(kind, &obj, None, opts)?;
        let key = Self::key(kind, namespace.as_deref(), &name);
        if self.kv.get(&key).is_some() {
            return Err(ObjectError::AlreadyExists {
                plural: qualified(kind),
                name,
            });
        }
        self.admit(kind, &mut obj, None)?;
        if opts.dry_run {
            self.abandon(kind, &obj);
            return Ok(obj);
        }
        match self.put_object(&key, &mut obj, Precondition::Absent) {
            Ok(()) => Ok(obj),
            Err(e) => {
                self.abandon(kind, &obj);
                match e {
                    WriteError::Conflict { .. } => Err(ObjectError::AlreadyExists {
                        plural: qualified(kind),
                        name,
                    }),
                    e => Err(storage(e)),
                }
            }
        }
    }

    /// One object.
    pub fn get(
        &self,
        kind: &Kind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ObjectError> {
        self.kv
            .get(&Self::key(kind, namespace, name))
            .map(|kv| Self::object_of(&kv))
            .ok_or_else(|| ObjectError::NotFound {
                plural: qualified(kind),
                name: name.into(),
            })
    }

    /// The objects of `kind` in `namespace` (all for `None`) matching the
    /// selectors, and the revision of the list.
    pub fn list(
        &self,
        kind: &Kind,
        namespace: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> (Vec<Value>, Revision) {
        let (kvs, revision) = self.kv.range(&Self::prefix(kind, namespace));
        let items = kvs
            .iter()
            .filter(|kv| labels.could_match_json(&kv.value))
            .map(Self::object_of)
            .filter(|o| labels.matches_object(o) && fields.matches_object(o))
            .collect();
        (items, revision)
    }

    /// Replaces an object (PUT). `subresource` is `None` for the object,
    /// `Some("status")` to change only its status. A `resourceVersion` in
    /// `obj` must match the stored one (else 409).
    pub fn update(
        &self,
        kind: &Kind,
        namespace: Option<&str>,
        name: &str,
        mut obj: Value,
        subresource: Option<&str>,
        opts: WriteOptions,
    ) -> Result<Value, ObjectError> {
        let key = Self::key(kind, namespace, name);
        let current = self.kv.get(&key).ok_or_else(|| ObjectError::NotFound {
            plural: qualified(kind),
            name: name.into(),
        })?;
        let old = Self::object_of(&current);
        if meta_str(&obj, "name").is_some_and(|n| n != name) {
            return Err(ObjectError::BadRequest(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                meta_str(&obj, "name").unwrap_or("")
            )));
        }
        let precondition = match meta_str(&obj, "resourceVersion") {
            Some(rv) if !rv.is_empty() => {
                let rv: Revision = rv.parse().map_err(|_| {
                    ObjectError::BadRequest(format!("invalid resourceVersion {rv:?}"))
                })?;
                if rv != current.mod_revision {
                    return Err(self.conflict(kind, name));
                }
                rv
            }
            _ => current.mod_revision,
        };
        let Some(o) = obj.as_object_mut() else {
            return Err(ObjectError::BadRequest("the body is not an object".into()));
        };
        // What a client may not change: identity, and the half of the
        // object the other endpoint owns.
        match subresource {
            Some("status") => {
                let status = o.get("status").cloned();
                let mut merged = old.clone();
                match status {
                    Some(s) => merged["status"] = s,
                    None => {
                        if let Some(m) = merged.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
                obj = merged;
            }
            Some(other) => {
                return Err(ObjectError::MethodNotAllowed(format!(
                    "subresource {other} cannot be updated here"
                )))
            }
            None => {
                if kind.status {
                    match old.get("status") {
                        Some(s) => {
                            o.insert("status".into(), s.clone());
                        }
                        None => {
                            o.remove("status");
                        }
                    }
                }
            }
        }
        {
            let meta = obj
                .get_mut("metadata")
                .and_then(Value::as_object_mut)
                .ok_or_else(|| ObjectError::BadRequest("the object has no metadata".into()))?;
            for field in [
                "uid",
                "creationTimestamp",
                "namespace",
                "name",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ] {
                match old.pointer(&format!("/metadata/{field}")) {
                    Some(v) => {
                        meta.insert(field.into(), v.clone());
                    }
                    None => {
                        meta.remove(field);
                    }
                }
            }
        }
        let mut obj = Self::check(kind, &obj, Some(&old), opts)?;
        self.admit(kind, &mut obj, Some(&old))?;
        let spec_changed = {
            let strip = |v: &Value| {
                let mut v = v.clone();
                if let Some(m) = v.as_object_mut() {
                    m.remove("metadata");
                    m.remove("status");
                }
                v
            };
            strip(&obj) != strip(&old)
        };
        if spec_changed && subresource.is_none() && kind.generation {
            let g = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            obj["metadata"]["generation"] = (g + 1).into();
        }
        if opts.dry_run {
            return Ok(obj);
        }
        // An object being deleted whose last finalizer went is removed.
        let finalizers_left = obj
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if obj.pointer("/metadata/deletionTimestamp").is_some()
            && !finalizers_left
            && !kind.is::<Pod>()
        {
            return self.remove(
                kind,
                namespace,
                name,
                Some(precondition),
                Propagation::Background,
            );
        }
        match self.put_object(&key, &mut obj, Precondition::ModRevision(precondition)) {
            Ok(()) => Ok(obj),
            Err(WriteError::Conflict { .. }) => Err(self.conflict(kind, name)),
            Err(e) => Err(storage(e)),
        }
    }

    fn conflict(&self, kind: &Kind, name: &str) -> ObjectError {
        ObjectError::Conflict {
            plural: qualified(kind),
            name: name.into(),
            message: "the object has been modified; please apply your changes to the latest version and try again".into(),
        }
    }

    /// Deletes an object as the API server does (see the module docs) and
    /// returns it as it was last (or still is, while it terminates).
    pub fn delete(
        &self,
        kind: &Kind,
        namespace: Option<&str>,
        name: &str,
        opts: DeleteOptions,
        now: SystemTime,
    ) -> Result<Value, ObjectError> {
        let key = Self::key(kind, namespace, name);
        let current = self.kv.get(&key).ok_or_else(|| ObjectError::NotFound {
            plural: qualified(kind),
            name: name.into(),
        })?;
        let obj = Self::object_of(&current);
        self.delete_found(kind, namespace, name, current.mod_revision, obj, opts, now)
    }

    /// Deletes every object of a kind in `namespace` (all namespaces for
    /// `None`) that the selectors match, as [`Objects::delete`] does each,
    /// hands each to `deleted` as it goes (thousands of decoded objects are
    /// not held at once) and returns the revision they were listed at. Each
    /// is deleted as it was listed (not read and decoded again); one that
    /// changed since is read again, one that is gone already is skipped.
    #[allow(clippy::too_many_arguments)]
    pub fn delete_collection(
        &self,
        kind: &Kind,
        namespace: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
        opts: DeleteOptions,
        now: SystemTime,
        mut deleted: impl FnMut(Value),
    ) -> Result<Revision, ObjectError> {
        let (kvs, revision) = self.kv.range(&Self::prefix(kind, namespace));
        for kv in kvs {
            if !labels.could_match_json(&kv.value) {
                continue;
            }
            let obj = Self::object_of(&kv);
            if !(labels.matches_object(&obj) && fields.matches_object(&obj)) {
                continue;
            }
            let name = meta_str(&obj, "name").unwrap_or("").to_string();
            let ns = meta_str(&obj, "namespace").map(str::to_string);
            let outcome = match self.delete_found(
                kind,
                ns.as_deref(),
                &name,
                kv.mod_revision,
                obj,
                opts,
                now,
            ) {
                Err(ObjectError::Conflict { .. }) if opts.precondition_revision.is_none() => {
                    self.delete(kind, ns.as_deref(), &name, opts, now)
                }
                outcome => outcome,
            };
            match outcome {
                Ok(obj) => deleted(obj),
                Err(ObjectError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(revision)
    }

    /// [`Objects::delete`] of an object read at `revision` as `obj`.
    #[allow(clippy::too_many_arguments)]
    fn delete_found(
        &self,
        kind: &Kind,
        namespace: Option<&str>,
        name: &str,
        revision: Revision,
        mut obj: Value,
        opts: DeleteOptions,
        now: SystemTime,
    ) -> Result<Value, ObjectError> {
        let key = Self::key(kind, namespace, name);
        if opts.precondition_revision.is_some_and(|rv| rv != revision) {
            return Err(self.conflict(kind, name));
        }
        if kind.is::<k8s_openapi::api::core::v1::Namespace>() {
            if PERMANENT_NAMESPACES.contains(&name) {
                return Err(ObjectError::Forbidden(format!(
                    "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
                )));
            }
            if opts.dry_run {
                return Ok(obj);
            }
            return self.terminate_namespace(name, obj, revision, now);
        }
        if opts.dry_run {
            return Ok(obj);
        }
        let has_finalizers = obj
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        let graceful_pod = kind.is::<Pod>()
            && opts.grace_period_seconds != Some(0)
            && obj
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty())
            && !matches!(
                obj.pointer("/status/phase").and_then(Value::as_str),
                Some("Succeeded" | "Failed")
            );
        let foreground =
            opts.propagation == Propagation::Foreground && !self.dependents(&obj).is_empty();
        if !(has_finalizers || graceful_pod || foreground) {
            return self.remove_as(
                kind,
                namespace,
                name,
                Precondition::ModRevision(revision),
                Some(obj),
                opts.propagation,
            );
        }
        if obj.pointer("/metadata/deletionTimestamp").is_some() && !foreground {
            // Already terminating: a shorter grace period may still apply.
            if !(graceful_pod && opts.grace_period_seconds.is_some()) {
                return Ok(obj);
            }
        }
        let grace = opts.grace_period_seconds.unwrap_or_else(|| {
            obj.pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(30)
        });
        let meta = &mut obj["metadata"];
        if graceful_pod {
            meta["deletionGracePeriodSeconds"] = grace.into();
            meta["deletionTimestamp"] =
                rfc3339(now + std::time::Duration::from_secs(grace.max(0) as u64)).into();
        } else if meta.get("deletionTimestamp").is_none() {
            meta["deletionTimestamp"] = rfc3339(now).into();
            meta["deletionGracePeriodSeconds"] = 0.into();
        }
        if foreground {
            let finalizers = meta["finalizers"].as_array().cloned().unwrap_or_default();
            if !finalizers.iter().any(|f| f == "foregroundDeletion") {
                let mut f = finalizers;
                f.push("foregroundDeletion".into());
                meta["finalizers"] = f.into();
            }
        }
        match self.put_object(&key, &mut obj, Precondition::ModRevision(revision)) {
            Ok(()) => {
                let known = KINDS
                    .iter()
                    .find(|k| k.group == kind.group && k.plural == kind.plural);
                if let (true, Some(kind)) = (foreground, known) {
                    self.foreground.lock().insert(key, kind);
                }
                Ok(obj)
            }
            Err(WriteError::Conflict { .. }) => Err(self.conflict(kind, name)),
            Err(e) => Err(storage(e)),
        }
    }

    /// Removes an object from the store now, then its dependents as
    /// `propagation` says.
    pub fn remove(
        &self,
        kind: &Kind,
        namespace: Option<&str>,
        name: &str,
        revision: Option<Revision>,
        propagation: Propagation,
    ) -> Result<Value, ObjectError> {
        let pre = revision.map_or(Precondition::None, Precondition::ModRevision);
        self.remove_as(kind, namespace, name, pre, None, propagation)
    }

    /// [`Objects::remove`] with the object as the caller read it at the
    /// revision `pre` names, if it has it decoded (so it is not decoded
    /// again).
    fn remove_as(
        &self,
        kind: &Kind,
        namespace: Option<&str>,
        name: &str,
        pre: Precondition,
        decoded: Option<Value>,
        propagation: Propagation,
    ) -> Result<Value, ObjectError> {
        let key = Self::key(kind, namespace, name);
        let gone = match (self.kv.delete(&key, pre), decoded) {
            (Ok(kv), Some(mut obj)) if matches!(pre, Precondition::ModRevision(_)) => {
                if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                    meta.insert("resourceVersion".into(), kv.mod_revision.to_string().into());
                }
                obj
            }
            (Ok(kv), _) => Self::object_of(&kv),
            (Err(WriteError::Conflict { .. }), _) => return Err(self.conflict(kind, name)),
            (Err(WriteError::NotFound { .. }), _) => {
                return Err(ObjectError::NotFound {
                    plural: qualified(kind),
                    name: name.into(),
                })
            }
            (Err(e), _) => return Err(storage(e)),
        };
        self.abandon(kind, &gone);
        self.collect_dependents(&gone, propagation);
        Ok(gone)
    }

    /// A namespace being deleted: `Terminating`, everything in it deleted
    /// (pods gracefully), and the namespace itself removed once it is
    /// empty ([`Objects::finish_namespace_deletions`] finishes what waits
    /// on pods), as the namespace controller does.
    fn terminate_namespace(
        &self,
        name: &str,
        mut obj: Value,
        revision: Revision,
        now: SystemTime,
    ) -> Result<Value, ObjectError> {
        let nskind = kinds::of::<k8s_openapi::api::core::v1::Namespace>();
        if obj.pointer("/metadata/deletionTimestamp").is_none() {
            obj["metadata"]["deletionTimestamp"] = rfc3339(now).into();
            obj["metadata"]["deletionGracePeriodSeconds"] = 0.into();
            obj["status"] = json!({"phase": "Terminating"});
            let key = Self::key(nskind, None, name);
            match self.put_object(&key, &mut obj, Precondition::ModRevision(revision)) {
                Ok(()) => {}
                Err(WriteError::Conflict { .. }) => return Err(self.conflict(nskind, name)),
                Err(e) => return Err(storage(e)),
            }
        }
        self.empty_namespace(name, now);
        match self.finish_namespace(name) {
            Some(gone) => Ok(gone),
            None => Ok(obj),
        }
    }

    /// Deletes what a terminating namespace still holds.
    fn empty_namespace(&self, name: &str, now: SystemTime) {
        for k in KINDS.iter().filter(|k| k.namespaced) {
            for kv in self.kv.range(&Self::prefix(k, Some(name))).0 {
                let o = Self::object_of(&kv);
                if o.pointer("/metadata/deletionTimestamp").is_some() {
                    continue;
                }
                let n = meta_str(&o, "name").unwrap_or("").to_string();
                let _ = self.delete(k, Some(name), &n, DeleteOptions::default(), now);
            }
        }
    }

    /// Removes the terminating namespace `name` if nothing is left in it.
    fn finish_namespace(&self, name: &str) -> Option<Value> {
        let empty = KINDS
            .iter()
            .filter(|k| k.namespaced)
            .all(|k| self.kv.range(&Self::prefix(k, Some(name))).0.is_empty());
        if !empty {
            return None;
        }
        let nskind = kinds::of::<k8s_openapi::api::core::v1::Namespace>();
        self.remove(nskind, None, name, None, Propagation::Background)
            .ok()
    }

    /// Finishes namespace deletions whose content is gone (a periodic pass,
    /// beside [`Objects::finish_foreground_deletions`]).
    pub fn finish_namespace_deletions(&self, now: SystemTime) {
        let nskind = kinds::of::<k8s_openapi::api::core::v1::Namespace>();
        for kv in self.kv.range(&Self::prefix(nskind, None)).0 {
            let o = Self::object_of(&kv);
            if o.pointer("/metadata/deletionTimestamp").is_some() {
                let name = meta_str(&o, "name").unwrap_or("").to_string();
                self.empty_namespace(&name, now);
                let _ = self.finish_namespace(&name);
            }
        }
    }

    /// The keys and objects whose `ownerReferences` name `owner`'s uid
    /// (in the owner's namespace, if it has one), from the owner index.
    fn dependents(&self, owner: &Value) -> Vec<(String, Value, &'static Kind)> {
        let Some(uid) = meta_str(owner, "uid") else {
            return Vec::new();
        };
        let namespace = meta_str(owner, "namespace");
        let keys = match self.owners.dependents(self.kv.as_ref(), uid) {
            Some(keys) => keys,
            None => self
                .kv
                .range("/registry/")
                .0
                .into_iter()
                .map(|kv| kv.key)
                .collect(),
        };
        let mut out = Vec::new();
        for key in keys {
            let Some(kind) = KINDS.iter().find(|k| {
                if namespace.is_some() && !k.namespaced {
                    return false;
                }
                key.starts_with(&Self::prefix(k, namespace))
            }) else {
                continue;
            };
            let Some(kv) = self.kv.get(&key) else {
                continue;
            };
            let obj = Self::object_of(&kv);
            let owned = obj
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|refs| {
                    refs.iter()
                        .any(|r| r.get("uid").and_then(Value::as_str) == Some(uid))
                });
            if owned {
                out.push((key, obj, kind));
            }
        }
        out
    }

    /// The garbage collector's work for one removed owner.
    fn collect_dependents(&self, owner: &Value, propagation: Propagation) {
        let uid = meta_str(owner, "uid").unwrap_or("").to_string();
        for (_, dep, kind) in self.dependents(owner) {
            let ns = meta_str(&dep, "namespace").map(str::to_string);
            let name = meta_str(&dep, "name").unwrap_or("").to_string();
            if propagation == Propagation::Orphan {
                let mut freed = dep.clone();
                if let Some(refs) = freed["metadata"]["ownerReferences"].as_array_mut() {
                    refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid.as_str()));
                }
                let _ = self.update(
                    kind,
                    ns.as_deref(),
                    &name,
                    freed,
                    None,
                    WriteOptions::default(),
                );
                continue;
            }
            // Other owners keep a dependent alive.
            let other_owner_alive = dep
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|r| r.get("uid").and_then(Value::as_str) != Some(uid.as_str()))
                .any(|r| self.owner_exists(r, ns.as_deref()));
            if !other_owner_alive {
                let opts = DeleteOptions {
                    propagation: Propagation::Background,
                    ..Default::default()
                };
                let _ = self.delete(kind, ns.as_deref(), &name, opts, SystemTime::now());
            }
        }
    }

    fn owner_exists(&self, reference: &Value, namespace: Option<&str>) -> bool {
        let api_version = reference
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        let kind_name = reference.get("kind").and_then(Value::as_str).unwrap_or("");
        let name = reference.get("name").and_then(Value::as_str).unwrap_or("");
        let uid = reference.get("uid").and_then(Value::as_str);
        KINDS
            .iter()
            .find(|k| k.api_version == api_version && k.kind == kind_name)
            .and_then(|k| self.get(k, namespace, name).ok())
            .is_some_and(|o| meta_str(&o, "uid") == uid)
    }

    /// Removes the `foregroundDeletion` finalizer of objects whose
    /// dependents are all gone, so their deletion completes. With `full`,
    /// every object is looked at (at start, and now and then for a
    /// finalizer that came another way than a foreground delete of this
    /// process); otherwise only those this process deleted in the
    /// foreground, so an idle node with many objects does no work here.
    pub fn finish_foreground_deletions(&self, full: bool) {
        let candidates: Vec<(String, &'static Kind)> = if full {
            // Only objects whose JSON names the finalizer are decoded (a
            // byte search, not a parse per object).
            let finder = memchr::memmem::Finder::new(b"\"foregroundDeletion\"");
            let mut found = Vec::new();
            for kind in KINDS.iter() {
                for kv in self.kv.range(&Self::prefix(kind, None)).0 {
                    if finder.find(&kv.value).is_some() {
                        found.push((kv.key, kind));
                    }
                }
            }
            let mut pending = self.foreground.lock();
            pending.extend(found.iter().map(|(k, kind)| (k.clone(), *kind)));
            pending.iter().map(|(k, kind)| (k.clone(), *kind)).collect()
        } else {
            let pending = self.foreground.lock();
            if pending.is_empty() {
                return;
            }
            pending.iter().map(|(k, kind)| (k.clone(), *kind)).collect()
        };
        for (key, kind) in candidates {
            let Some(kv) = self.kv.get(&key) else {
                self.foreground.lock().remove(&key);
                continue;
            };
            let obj = Self::object_of(&kv);
            let waiting = obj
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .is_some_and(|f| f.iter().any(|x| x == "foregroundDeletion"));
            if !waiting {
                self.foreground.lock().remove(&key);
                continue;
            }
            if !self.dependents(&obj).is_empty() {
                continue;
            }
            let mut done = obj.clone();
            if let Some(f) = done["metadata"]["finalizers"].as_array_mut() {
                f.retain(|x| x != "foregroundDeletion");
            }
            let ns = meta_str(&obj, "namespace").map(str::to_string);
            let name = meta_str(&obj, "name").unwrap_or("").to_string();
            if self
                .update(
                    kind,
                    ns.as_deref(),
                    &name,
                    done,
                    None,
                    WriteOptions::default(),
                )
                .is_ok()
            {
                self.foreground.lock().remove(&key);
            }
        }
    }

    /// Streams changes to a kind's objects in `namespace` after `after`.
    pub fn watch(
        &self,
        kind: &Kind,
        namespace: Option<&str>,
        after: Revision,
    ) -> Result<WatchReceiver, ObjectError> {
        self.kv
            .watch(&Self::prefix(kind, namespace), after)
            .map_err(
                |WatchError::Compacted { requested, oldest }| ObjectError::Gone {
                    requested,
                    oldest,
                },
            )
    }

    /// Decodes a watch event's object (with its resourceVersion).
    pub fn event_object(event: &super::store::Event) -> Value {
        Self::object_of(&event.kv)
    }

    /// A watch event's object after the change (with its
    /// resourceVersion), parsed once per event whoever asks.
    pub fn event_value(event: &super::store::Event) -> &Value {
        event.parsed.now(|| Self::object_of(&event.kv))
    }

    /// A watch event's object before the change, if it existed, parsed
    /// once per event.
    pub fn event_prev_value(event: &super::store::Event) -> Option<&Value> {
        event
            .prev
            .as_ref()
            .map(|kv| event.parsed.prev(|| Self::object_of(kv)))
    }

    /// The typed object `K` named `name`, decoded straight from its stored
    /// bytes (not through a JSON value: reconcilers read objects this way
    /// on every pass, and the value doubled the decoding).
    pub fn get_as<K>(&self, namespace: Option<&str>, name: &str) -> Result<K, ObjectError>
    where
        K: Resource + Metadata<Ty = ObjectMeta> + DeserializeOwned,
    {
        let kind = kinds::of::<K>();
        let kv = self
            .kv
            .get(&Self::key(kind, namespace, name))
            .ok_or_else(|| ObjectError::NotFound {
                plural: qualified(kind),
                name: name.into(),
            })?;
        let mut obj: K = serde_json::from_slice(&kv.value).map_err(|e| {
            ObjectError::Storage(format!("stored {} {name} does not decode: {e}", K::KIND))
        })?;
        obj.metadata_mut().resource_version = Some(kv.mod_revision.to_string());
        Ok(obj)
    }

    /// The typed objects `K` in `namespace` matching `labels`.
    pub fn list_as<K: Resource + DeserializeOwned>(
        &self,
        namespace: Option<&str>,
        labels: &LabelSelector,
    ) -> Vec<K> {
        self.list(
            kinds::of::<K>(),
            namespace,
            labels,
            &FieldSelector::default(),
        )
        .0
        .into_iter()
        .filter_map(|v| serde_json::from_value(v).ok())
        .collect()
    }

    /// Every object of `kind` in `namespace` (all: `None`), each decoded
    /// from its stored bytes straight into `T`: for passes over every
    /// object that read a few fields, where `T` names only those (as
    /// [`MetadataOnly`] does) (the rest
    /// is skipped without being built). Objects that do not decode into `T`
    /// are left out. No `resourceVersion` is set.
    pub fn scan<T: DeserializeOwned>(&self, kind: &Kind, namespace: Option<&str>) -> Vec<T> {
        let (kvs, _) = self.kv.range(&Self::prefix(kind, namespace));
        kvs.iter()
            .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
            .collect()
    }

    /// Creates a typed object unless one of its name exists (which is
    /// left as it is): for the objects podnetd makes at start.
    pub fn ensure_as<K: Resource + Serialize + DeserializeOwned>(
        &self,
        namespace: Option<&str>,
        obj: &K,
        now: SystemTime,
    ) -> Result<(), ObjectError> {
        match self.create_as(namespace, obj, now) {
            Ok(_) | Err(ObjectError::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The labels of an object podnetd makes itself.
    pub fn made_by_podnetd() -> std::collections::BTreeMap<String, String> {
        [(
            "app.kubernetes.io/managed-by".to_string(),
            "podnetd".to_string(),
        )]
        .into()
    }

    /// Creates a typed object.
    pub fn create_as<K: Resource + Serialize + DeserializeOwned>(
        &self,
        namespace: Option<&str>,
        obj: &K,
        now: SystemTime,
    ) -> Result<K, ObjectError> {
        let mut v = serde_json::to_value(obj).expect("k8s-openapi types serialize");
        v["apiVersion"] = K::API_VERSION.into();
        v["kind"] = K::KIND.into();
        let stored = self.create(kinds::of::<K>(), namespace, v, WriteOptions::default(), now)?;
        serde_json::from_value(stored).map_err(|e| ObjectError::Storage(e.to_string()))
    }

    /// Updates a typed object (or its status), with compare-and-swap on
    /// its `resourceVersion`.
    pub fn update_as<
        K: Resource
            + Serialize
            + DeserializeOwned
            + k8s_openapi::Metadata<Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
    >(
        &self,
        obj: &K,
        subresource: Option<&str>,
    ) -> Result<K, ObjectError> {
        let meta = obj.metadata();
        let name = meta.name.clone().unwrap_or_default();
        let ns = meta.namespace.clone();
        let mut v = serde_json::to_value(obj).expect("k8s-openapi types serialize");
        v["apiVersion"] = K::API_VERSION.into();
        v["kind"] = K::KIND.into();
        let stored = self.update(
            kinds::of::<K>(),
            ns.as_deref(),
            &name,
            v,
            subresource,
            WriteOptions::default(),
        )?;
        serde_json::from_value(stored).map_err(|e| ObjectError::Storage(e.to_string()))
    }
}

#[cfg(test)]
mod tests;
