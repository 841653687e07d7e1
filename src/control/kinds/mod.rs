//! The Kubernetes kinds podnetd serves: one file per kind with its
//! defaults, validation and `kubectl get` columns, and [`KINDS`], the
//! registry the store and the API read.
//!
//! Adding a kind: a file here implementing [`KindRules`] for the
//! `k8s-openapi` type, and one line in [`KINDS`]. The store, the API
//! (discovery, CRUD, watch, patch, tables) and the CLI then serve it.
//!
//! Everything works on the object's JSON (what is stored and served); a
//! kind's rules see the typed value, decoded with `k8s-openapi`. A field of
//! the request that the typed value does not keep is an unknown field
//! ([`unknown_fields`]), which is how strict field validation is done
//! without a schema of our own.

mod config_map;
mod deployment;
mod endpoint_slice;
mod endpoints;
mod event;
pub mod ingress;
pub mod ingress_class;
mod namespace;
pub mod network_policy;
mod node;
pub mod persistent_volume;
pub mod persistent_volume_claim;
pub mod pod;
mod replica_set;
mod secret;
mod service;
mod stateful_set;
pub mod storage_class;
pub mod validate;
pub mod workload;

use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::{Metadata, Resource};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

pub use validate::{FieldError, FieldReason};

/// One column of `kubectl get`, as a `Table` response describes it.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    /// The header.
    pub name: &'static str,
    /// `string`, `integer`, `date` ...
    pub kind: &'static str,
    /// `name` for the object's name column, else empty.
    pub format: &'static str,
    /// 0 for the default view, 1 for `-o wide` only.
    pub priority: u8,
}

impl Column {
    /// The NAME column.
    pub const NAME: Column = Column {
        name: "Name",
        kind: "string",
        format: "name",
        priority: 0,
    };
    /// The AGE column.
    pub const AGE: Column = Column::new("Age", "string");

    /// A column of the default view.
    pub const fn new(name: &'static str, kind: &'static str) -> Self {
        Self {
            name,
            kind,
            format: "",
            priority: 0,
        }
    }

    /// A column shown only with `-o wide`.
    pub const fn wide(name: &'static str, kind: &'static str) -> Self {
        Self {
            name,
            kind,
            format: "",
            priority: 1,
        }
    }
}

/// The NAME cell of an object.
pub fn name_cell(meta: &ObjectMeta) -> Value {
    Value::from(meta.name.clone().unwrap_or_default())
}

/// The AGE cell of an object, as kubectl shows it (`5m`, `3h12m`, `2d`).
pub fn age_cell(meta: &ObjectMeta, now: SystemTime) -> Value {
    let Some(created) = &meta.creation_timestamp else {
        return Value::from("<unknown>");
    };
    let now_s = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    Value::from(human_duration(now_s - created.0.as_second()))
}

/// A duration as kubectl prints ages: `45s`, `5m10s` under ten minutes,
/// `3h12m` under a day or so, then `2d5h`, `45d`, `2y30d`.
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    match s {
        _ if s < 120 => format!("{s}s"),
        _ if m < 10 => match s % 60 {
            0 => format!("{m}m"),
            r => format!("{m}m{r}s"),
        },
        _ if h < 3 => format!("{m}m"),
        _ if h < 8 => match m % 60 {
            0 => format!("{h}h"),
            r => format!("{h}h{r}m"),
        },
        _ if h < 48 => format!("{h}h"),
        _ if d < 8 => match h % 24 {
            0 => format!("{d}d"),
            r => format!("{d}d{r}h"),
        },
        _ if d < 730 => format!("{d}d"),
        _ => format!("{}y{}d", d / 365, d % 365),
    }
}

/// What a kind adds to the generic object handling. The defaults suit a
/// kind without rules.
pub trait KindRules:
    Resource
    + Metadata<Ty = ObjectMeta>
    + Serialize
    + DeserializeOwned
    + Clone
    + Default
    + schemars::JsonSchema
    + 'static
{
    /// `kubectl get` short names (`po`, `svc` ...).
    const SHORT_NAMES: &'static [&'static str] = &[];
    /// Categories (`all` for `kubectl get all`).
    const CATEGORIES: &'static [&'static str] = &[];
    /// Whether it has a `/status` subresource (then the main resource
    /// ignores status changes, and `/status` changes only status).
    const STATUS: bool = false;
    /// Whether it has a `/scale` subresource.
    const SCALE: bool = false;
    /// Whether `metadata.generation` counts its spec changes (workloads and
    /// pods; not ConfigMaps, Secrets, Services ...).
    const GENERATION: bool = false;
    /// Field selector paths beside `metadata.name` and `metadata.namespace`.
    const FIELDS: &'static [&'static str] = &[];
    /// Whether names follow DNS-1035 label rules (services) rather than
    /// DNS-1123 subdomain rules (most kinds).
    const NAME_IS_LABEL: bool = false;

    /// Fills defaults, as the API server's defaulting does.
    fn default_fields(&mut self) {}

    /// Checks the object (and, for an update, what it was); each error
    /// names its field path.
    fn validate(&self, _old: Option<&Self>) -> Vec<FieldError> {
        Vec::new()
    }

    /// The table columns (NAME and AGE included, where the kind shows them).
    fn columns() -> &'static [Column] {
        &[Column::NAME, Column::AGE]
    }

    /// The cells of [`KindRules::columns`] for this object at `now`.
    fn cells(&self, now: SystemTime) -> Vec<Value> {
        vec![name_cell(self.metadata()), age_cell(self.metadata(), now)]
    }
}

/// Why an object's JSON was refused before any rule ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Not the kind's apiVersion/kind, or not decodable as the kind.
    BadRequest(String),
    /// Fields the kind does not have (strict validation).
    UnknownFields(Vec<String>),
}

/// A kind, with its rules behind plain function pointers.
pub struct Kind {
    /// API group, empty for core.
    pub group: &'static str,
    /// Version (`v1`).
    pub version: &'static str,
    /// `group/version`, or `version` for core.
    pub api_version: &'static str,
    /// Kind (`Pod`).
    pub kind: &'static str,
    /// Resource (`pods`).
    pub plural: &'static str,
    /// Lower-case kind (`pod`).
    pub singular: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// See [`KindRules::SHORT_NAMES`].
    pub short_names: &'static [&'static str],
    /// See [`KindRules::CATEGORIES`].
    pub categories: &'static [&'static str],
    /// See [`KindRules::STATUS`].
    pub status: bool,
    /// See [`KindRules::SCALE`].
    pub scale: bool,
    /// See [`KindRules::GENERATION`].
    pub generation: bool,
    /// See [`KindRules::FIELDS`].
    pub fields: &'static [&'static str],
    /// See [`KindRules::columns`].
    pub columns: &'static [Column],
    /// Decodes, defaults and validates JSON; returns the normalised JSON.
    pub check: fn(&Value, Option<&Value>, bool) -> Result<Value, CheckError>,
    /// The table cells of an object's JSON at a time.
    pub cells: fn(&Value, SystemTime) -> Vec<Value>,
    /// Adds the kind's JSON schema (and those it refers to) to a generator's
    /// definitions; returns the reference to it.
    pub schema: fn(&mut schemars::SchemaGenerator) -> schemars::Schema,
    name_is_label: bool,
}

/// Why [`Kind::check`] refused an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckError {
    /// Could not be read as the kind.
    Decode(DecodeError),
    /// Read, but invalid.
    Invalid(Vec<FieldError>),
}

impl Kind {
    /// The kind of the `k8s-openapi` type `K`.
    pub fn of<K: KindRules>() -> Kind
    where
        K::Scope: ScopeIsNamespaced,
    {
        Kind {
            group: K::GROUP,
            version: K::VERSION,
            api_version: K::API_VERSION,
            kind: K::KIND,
            plural: K::URL_PATH_SEGMENT,
            singular: K::KIND.to_ascii_lowercase(),
            namespaced: <K::Scope as ScopeIsNamespaced>::NAMESPACED,
            short_names: K::SHORT_NAMES,
            categories: K::CATEGORIES,
            status: K::STATUS,
            scale: K::SCALE,
            generation: K::GENERATION,
            fields: K::FIELDS,
            columns: K::columns(),
            check: check::<K>,
            cells: |v, now| K::deserialize(v).map(|k| k.cells(now)).unwrap_or_default(),
            name_is_label: K::NAME_IS_LABEL,
            schema: |generator| generator.subschema_for::<K>(),
        }
    }

    /// Whether this is the kind `K`.
    pub fn is<K: Resource>(&self) -> bool {
        self.api_version == K::API_VERSION && self.kind == K::KIND
    }

    /// Checks a name as this kind's names are checked.
    pub fn validate_name(&self, name: &str) -> Option<String> {
        if self.name_is_label {
            validate::dns1035_label(name)
        } else {
            validate::dns1123_subdomain(name)
        }
    }
}

/// Turns `k8s-openapi`'s scope marker types into a flag.
pub trait ScopeIsNamespaced {
    /// Whether objects live in a namespace.
    const NAMESPACED: bool;
}

impl ScopeIsNamespaced for k8s_openapi::NamespaceResourceScope {
    const NAMESPACED: bool = true;
}

impl ScopeIsNamespaced for k8s_openapi::ClusterResourceScope {
    const NAMESPACED: bool = false;
}

/// Decodes `value` as `K`, defaults and validates it against `old`, and
/// returns its JSON; `strict` refuses unknown fields.
fn check<K: KindRules>(
    value: &Value,
    old: Option<&Value>,
    strict: bool,
) -> Result<Value, CheckError> {
    let decode = |v: &Value| -> Result<K, CheckError> {
        K::deserialize(v).map_err(|e| CheckError::Decode(DecodeError::BadRequest(e.to_string())))
    };
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
    if api_version != K::API_VERSION || kind != K::KIND {
        return Err(CheckError::Decode(DecodeError::BadRequest(format!(
            "the object is apiVersion {api_version:?} kind {kind:?}, this resource takes apiVersion {:?} kind {:?}",
            K::API_VERSION,
            K::KIND
        ))));
    }
    let mut typed = decode(value)?;
    if strict {
        let back = serde_json::to_value(&typed).unwrap_or(Value::Null);
        let unknown = unknown_fields(value, &back);
        if !unknown.is_empty() {
            return Err(CheckError::Decode(DecodeError::UnknownFields(unknown)));
        }
    }
    typed.default_fields();
    let old = old.map(decode).transpose()?;
    let mut errors = validate::metadata(typed.metadata());
    errors.extend(typed.validate(old.as_ref()));
    if !errors.is_empty() {
        return Err(CheckError::Invalid(errors));
    }
    Ok(serde_json::to_value(&typed).expect("k8s-openapi types serialize"))
}

/// Paths (`spec.template.spec.containers[0].foo`) present in `input` with a
/// value but absent from `typed`, its round trip through the typed value.
pub fn unknown_fields(input: &Value, typed: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk_unknown(input, typed, String::new(), &mut out);
    out
}

fn walk_unknown(input: &Value, typed: &Value, path: String, out: &mut Vec<String>) {
    match (input, typed) {
        (Value::Object(i), Value::Object(t)) => {
            for (k, v) in i {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match t.get(k) {
                    Some(tv) => walk_unknown(v, tv, p, out),
                    None if v.is_null() => {}
                    // `k8s-openapi` drops empty optional maps and lists it
                    // would print as such; those are known, just empty.
                    None if v.as_object().is_some_and(|o| o.is_empty())
                        || v.as_array().is_some_and(|a| a.is_empty()) => {}
                    None => out.push(p),
                }
            }
        }
        (Value::Array(i), Value::Array(t)) => {
            for (n, (iv, tv)) in i.iter().zip(t).enumerate() {
                walk_unknown(iv, tv, format!("{path}[{n}]"), out);
            }
        }
        _ => {}
    }
}

/// Every kind podnetd serves, one line each.
pub static KINDS: LazyLock<Vec<Kind>> = LazyLock::new(|| {
    use k8s_openapi::api::{
        apps::v1 as apps, core::v1 as core, discovery::v1 as discovery,
        networking::v1 as networking, storage::v1 as storage,
    };
    vec![
        Kind::of::<core::Namespace>(),
        Kind::of::<core::Node>(),
        Kind::of::<core::Pod>(),
        Kind::of::<core::Service>(),
        Kind::of::<core::Endpoints>(),
        Kind::of::<core::ConfigMap>(),
        Kind::of::<core::Secret>(),
        Kind::of::<core::Event>(),
        Kind::of::<discovery::EndpointSlice>(),
        Kind::of::<apps::Deployment>(),
        Kind::of::<apps::ReplicaSet>(),
        Kind::of::<apps::StatefulSet>(),
        Kind::of::<networking::Ingress>(),
        Kind::of::<networking::IngressClass>(),
        Kind::of::<networking::NetworkPolicy>(),
        Kind::of::<core::PersistentVolumeClaim>(),
        Kind::of::<core::PersistentVolume>(),
        Kind::of::<storage::StorageClass>(),
    ]
});

/// The kind served at `group`/`version` as `plural`.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Kind> {
    KINDS
        .iter()
        .find(|k| k.group == group && k.version == version && k.plural == plural)
}

/// The kind of `K`.
pub fn of<K: Resource>() -> &'static Kind {
    KINDS
        .iter()
        .find(|k| k.is::<K>())
        .expect("every kind used by podnet is registered in KINDS")
}
