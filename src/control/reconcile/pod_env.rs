//! A container's environment, resolved as the kubelet resolves it
//! (`makeEnvironmentVariables`): `envFrom` first (ConfigMaps and Secrets,
//! with `prefix`; keys that are not valid variable names skipped and
//! reported), then `env` in order, each value literal or from
//! `valueFrom` (`fieldRef`, `resourceFieldRef`, `configMapKeyRef`,
//! `secretKeyRef`); a later variable of the same name wins.
//!
//! A required object or key that is missing is an error with the kubelet's
//! own message (`configmap "x" not found`, `couldn't find key k in
//! ConfigMap default/x`), which the kubelet reports as the container's
//! `CreateContainerConfigError`; an `optional` one is left out.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, ResourceFieldSelector, Secret};

use crate::control::objects::{ObjectError, Objects};

/// The reason a container waits with when its environment (or anything
/// else of its configuration) cannot be made.
pub const CONFIG_ERROR: &str = "CreateContainerConfigError";

/// The node's allocatable resources, which stand for a container's
/// limits when it has none (as the kubelet does for `resourceFieldRef`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocatable {
    /// CPU in millicores.
    pub cpu_millis: i128,
    /// Memory in bytes.
    pub memory_bytes: i128,
    /// Ephemeral storage in bytes.
    pub ephemeral_bytes: i128,
}

/// A resolved environment, and the warnings the kubelet records as events
/// (`InvalidEnvironmentVariableNames`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ResolvedEnv {
    /// `NAME=value` pairs in order, each name once.
    pub vars: Vec<(String, String)>,
    /// Event messages for keys skipped from `envFrom`.
    pub skipped: Vec<String>,
}

impl ResolvedEnv {
    fn set(&mut self, name: String, value: String) {
        match self.vars.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.vars.push((name, value)),
        }
    }
}

/// What the environment of a container is made from besides the pod.
pub struct EnvSources<'a> {
    /// The store, for ConfigMaps and Secrets (of the pod's namespace).
    pub objects: &'a Objects,
    /// `status.hostIP`.
    pub host_ip: &'a str,
    /// The pod's address, known before its status is written.
    pub pod_ip: Option<&'a str>,
    /// The node's allocatable resources.
    pub allocatable: Allocatable,
}

/// A ConfigMap or a Secret, as far as the environment reads it.
enum Source {
    ConfigMap(Option<ConfigMap>),
    Secret(Option<Secret>),
}

fn fetch(objects: &Objects, ns: &str, name: &str, secret: bool) -> Result<Source, String> {
    fn gone<T>(r: Result<T, ObjectError>) -> Result<Option<T>, String> {
        match r {
            Ok(v) => Ok(Some(v)),
            Err(ObjectError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }
    Ok(if secret {
        Source::Secret(gone(objects.get_as::<Secret>(Some(ns), name))?)
    } else {
        Source::ConfigMap(gone(objects.get_as::<ConfigMap>(Some(ns), name))?)
    })
}

/// The objects one container's environment reads, each fetched once.
struct Cache<'a> {
    objects: &'a Objects,
    namespace: &'a str,
    seen: BTreeMap<(bool, String), Source>,
}

impl Cache<'_> {
    fn get(&mut self, secret: bool, name: &str) -> Result<&Source, String> {
        let key = (secret, name.to_string());
        if !self.seen.contains_key(&key) {
            let s = fetch(self.objects, self.namespace, name, secret)?;
            self.seen.insert(key.clone(), s);
        }
        Ok(&self.seen[&key])
    }
}

impl Source {
    fn found(&self) -> bool {
        match self {
            Source::ConfigMap(c) => c.is_some(),
            Source::Secret(s) => s.is_some(),
        }
    }

    /// The kubelet's message for a missing object.
    fn not_found(secret: bool, name: &str) -> String {
        let resource = if secret { "secret" } else { "configmap" };
        format!("{resource} {name:?} not found")
    }

    /// Every key and value (a Secret's bytes as text, lossily, as Go's
    /// `string([]byte)` keeps them).
    fn entries(&self) -> BTreeMap<String, String> {
        match self {
            Source::ConfigMap(Some(c)) => c.data.clone().unwrap_or_default(),
            Source::Secret(Some(s)) => s
                .data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
                .collect(),
            _ => BTreeMap::new(),
        }
    }
}

/// Whether `name` is a valid environment variable name
/// (`[-._a-zA-Z][-._a-zA-Z0-9]*`, the API's `IsEnvVarName`).
pub fn is_env_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    let ok_first = |c: char| c.is_ascii_alphabetic() || matches!(c, '-' | '.' | '_');
    match chars.next() {
        Some(c) if ok_first(c) => chars.all(|c| ok_first(c) || c.is_ascii_digit()),
        _ => false,
    }
}

/// A container's environment, or the message of why it cannot be made.
pub fn container_env(pod: &Pod, c: &Container, src: &EnvSources) -> Result<ResolvedEnv, String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut out = ResolvedEnv::default();
    let mut cache = Cache {
        objects: src.objects,
        namespace: ns,
        seen: BTreeMap::new(),
    };
    for from in c.env_from.iter().flatten() {
        let (secret, name, optional) = match (&from.config_map_ref, &from.secret_ref) {
            (Some(r), _) => (false, r.name.clone(), r.optional == Some(true)),
            (None, Some(r)) => (true, r.name.clone(), r.optional == Some(true)),
            (None, None) => continue,
        };
        let source = cache.get(secret, &name)?;
        if !source.found() {
            if optional {
                continue;
            }
            return Err(Source::not_found(secret, &name));
        }
        let prefix = from.prefix.as_deref().unwrap_or("");
        let mut invalid = Vec::new();
        for (k, v) in source.entries() {
            let k = format!("{prefix}{k}");
            if is_env_var_name(&k) {
                out.set(k, v);
            } else {
                invalid.push(k);
            }
        }
        if !invalid.is_empty() {
            invalid.sort();
            let what = if secret { "secret" } else { "configMap" };
            out.skipped.push(format!(
                "Keys [{}] from the EnvFrom {what} {ns}/{name} were skipped since they are considered invalid environment variable names.",
                invalid.join(", ")
            ));
        }
    }
    for e in c.env.iter().flatten() {
        if let Some(v) = &e.value {
            let v = expand(v, &out.vars);
            out.set(e.name.clone(), v);
            continue;
        }
        let Some(from) = &e.value_from else {
            out.set(e.name.clone(), String::new());
            continue;
        };
        let value = if let Some(field) = &from.field_ref {
            field_value(pod, &field.field_path, src).ok_or_else(|| {
                format!(
                    "env {}: fieldRef {:?} is not a field the downward API offers",
                    e.name, field.field_path
                )
            })?
        } else if let Some(res) = &from.resource_field_ref {
            resource_value(pod, c, res, src.allocatable)
                .map_err(|why| format!("env {}: {why}", e.name))?
        } else if let Some(r) = &from.config_map_key_ref {
            let source = cache.get(false, &r.name)?;
            let optional = r.optional == Some(true);
            if !source.found() {
                if optional {
                    continue;
                }
                return Err(Source::not_found(false, &r.name));
            }
            match source.entries().remove(&r.key) {
                Some(v) => v,
                None if optional => continue,
                None => {
                    return Err(format!(
                        "couldn't find key {} in ConfigMap {ns}/{}",
                        r.key, r.name
                    ))
                }
            }
        } else if let Some(r) = &from.secret_key_ref {
            let source = cache.get(true, &r.name)?;
            let optional = r.optional == Some(true);
            if !source.found() {
                if optional {
                    continue;
                }
                return Err(Source::not_found(true, &r.name));
            }
            match source.entries().remove(&r.key) {
                Some(v) => v,
                None if optional => continue,
                None => {
                    return Err(format!(
                        "couldn't find key {} in Secret {ns}/{}",
                        r.key, r.name
                    ))
                }
            }
        } else {
            return Err(format!("env {}: valueFrom names no source", e.name));
        };
        out.set(e.name.clone(), value);
    }
    Ok(out)
}

/// Expands `$(NAME)` with the variables defined before (as the kubelet
/// does for `env[].value`); `$$` is a literal `$`; an unknown reference is
/// left as written.
pub fn expand(value: &str, defined: &[(String, String)]) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('(') {
            match body.find(')') {
                Some(end) => {
                    let name = &body[..end];
                    match defined.iter().find(|(n, _)| n == name) {
                        Some((_, v)) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &body[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = body;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The downward API's `fieldRef` value, or None for a path it does not
/// offer.
pub fn field_value(pod: &Pod, path: &str, src: &EnvSources) -> Option<String> {
    let meta = &pod.metadata;
    let status = pod.status.clone().unwrap_or_default();
    let keyed = |prefix: &str, map: Option<&BTreeMap<String, String>>| {
        path.strip_prefix(prefix)
            .and_then(|k| k.strip_suffix("']"))
            .map(|k| map.and_then(|m| m.get(k)).cloned().unwrap_or_default())
    };
    Some(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default(),
        "spec.serviceAccountName" => pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into()),
        "status.podIP" => src
            .pod_ip
            .map(str::to_string)
            .or(status.pod_ip)
            .unwrap_or_default(),
        "status.podIPs" => match src.pod_ip {
            Some(ip) if status.pod_ips.is_none() => ip.to_string(),
            _ => status
                .pod_ips
                .iter()
                .flatten()
                .map(|p| p.ip.clone())
                .collect::<Vec<_>>()
                .join(","),
        },
        "status.hostIP" | "status.hostIPs" => src.host_ip.to_string(),
        _ => keyed("metadata.labels['", meta.labels.as_ref())
            .or_else(|| keyed("metadata.annotations['", meta.annotations.as_ref()))?,
    })
}

/// A `resourceFieldRef` value as the kubelet renders it: the container's
/// (or, with `containerName`, another container's) limit or request divided
/// by `divisor` (default 1) and rounded up; a limit the container does not
/// set is the node's allocatable amount.
pub fn resource_value(
    pod: &Pod,
    c: &Container,
    sel: &ResourceFieldSelector,
    node: Allocatable,
) -> Result<String, String> {
    let c = match sel.container_name.as_deref() {
        Some(n) if !n.is_empty() && n != c.name => pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .find(|x| x.name == n)
            .ok_or_else(|| format!("resourceFieldRef names no container {n:?}"))?,
        _ => c,
    };
    let res = c.resources.clone().unwrap_or_default();
    let (limits, requests) = (
        res.limits.unwrap_or_default(),
        res.requests.unwrap_or_default(),
    );
    let (map, name, default) = match sel.resource.as_str() {
        "limits.cpu" => (&limits, "cpu", node.cpu_millis * 1_000_000),
        "limits.memory" => (&limits, "memory", node.memory_bytes * NANO),
        "limits.ephemeral-storage" => (&limits, "ephemeral-storage", node.ephemeral_bytes * NANO),
        "requests.cpu" => (&requests, "cpu", 0),
        "requests.memory" => (&requests, "memory", 0),
        "requests.ephemeral-storage" => (&requests, "ephemeral-storage", 0),
        other => {
            return Err(format!(
                "resourceFieldRef resource {other:?} is not supported; use limits.cpu, limits.memory, limits.ephemeral-storage, requests.cpu, requests.memory or requests.ephemeral-storage"
            ))
        }
    };
    let amount = match map.get(name) {
        Some(q) => {
            parse_quantity(&q.0).ok_or_else(|| format!("{name} {:?} is not a quantity", q.0))?
        }
        None => default,
    };
    let divisor = match &sel.divisor {
        Some(d) if !d.0.is_empty() && d.0 != "0" => {
            parse_quantity(&d.0).ok_or_else(|| format!("divisor {:?} is not a quantity", d.0))?
        }
        _ => NANO,
    };
    if divisor <= 0 {
        return Err(format!("divisor {:?} must be positive", sel.divisor));
    }
    // CPU is compared in millicores, the rest in whole units, as the
    // kubelet's MilliValue()/Value() round each side up first.
    let unit = if name == "cpu" { 1_000_000 } else { NANO };
    let ceil = |v: i128, u: i128| (v + u - 1).div_euclid(u);
    let (a, d) = (ceil(amount, unit), ceil(divisor, unit).max(1));
    Ok(ceil(a, d).to_string())
}

/// Nano-units in one unit.
const NANO: i128 = 1_000_000_000;

/// A `resource.Quantity` in nano-units (`500m` -> 500_000_000, `1Ki` ->
/// 1024e9), or None if it is not one.
pub fn parse_quantity(text: &str) -> Option<i128> {
    let t = text.trim();
    let (t, negative) = match t.strip_prefix('-') {
        Some(r) => (r, true),
        None => (t.strip_prefix('+').unwrap_or(t), false),
    };
    let end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, suffix) = t.split_at(end);
    if number.is_empty() || number == "." {
        return None;
    }
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if frac.contains('.') || frac.len() > 9 {
        return None;
    }
    let mut nanos: i128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    nanos = nanos.checked_mul(NANO)?;
    if !frac.is_empty() {
        let f: i128 = frac.parse().ok()?;
        nanos += f * 10i128.pow(9 - frac.len() as u32);
    }
    let scaled = |num: i128, den: i128| -> Option<i128> { nanos.checked_mul(num).map(|v| v / den) };
    let value = match suffix {
        "" => nanos,
        "n" => nanos / NANO,
        "u" => scaled(1, 1_000_000)?,
        "m" => scaled(1, 1000)?,
        "k" => scaled(1000, 1)?,
        "M" => scaled(1_000_000, 1)?,
        "G" => scaled(NANO, 1)?,
        "T" => scaled(1_000_000_000_000, 1)?,
        "P" => scaled(1_000_000_000_000_000, 1)?,
        "E" => scaled(1_000_000_000_000_000_000, 1)?,
        "Ki" => scaled(1 << 10, 1)?,
        "Mi" => scaled(1 << 20, 1)?,
        "Gi" => scaled(1 << 30, 1)?,
        "Ti" => scaled(1 << 40, 1)?,
        "Pi" => scaled(1 << 50, 1)?,
        "Ei" => scaled(1 << 60, 1)?,
        s if s.starts_with(['e', 'E']) => {
            let exp: i32 = s[1..].parse().ok()?;
            if exp >= 0 {
                scaled(10i128.checked_pow(exp as u32)?, 1)?
            } else {
                scaled(1, 10i128.checked_pow(exp.unsigned_abs())?)?
            }
        }
        _ => return None,
    };
    Some(if negative { -value } else { value })
}

/// Whether `pod` reads the ConfigMap (`secret` false) or Secret named
/// `name` anywhere: env, envFrom, volumes, projected volumes.
pub fn pod_uses(pod: &Pod, secret: bool, name: &str) -> bool {
    let Some(spec) = &pod.spec else { return false };
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    for c in containers {
        for from in c.env_from.iter().flatten() {
            let r = if secret {
                from.secret_ref.as_ref().map(|r| &r.name)
            } else {
                from.config_map_ref.as_ref().map(|r| &r.name)
            };
            if r.is_some_and(|n| n == name) {
                return true;
            }
        }
        for e in c.env.iter().flatten() {
            let Some(from) = &e.value_from else { continue };
            let r = if secret {
                from.secret_key_ref.as_ref().map(|r| &r.name)
            } else {
                from.config_map_key_ref.as_ref().map(|r| &r.name)
            };
            if r.is_some_and(|n| n == name) {
                return true;
            }
        }
    }
    for v in spec.volumes.iter().flatten() {
        let direct = if secret {
            v.secret.as_ref().and_then(|s| s.secret_name.as_deref())
        } else {
            v.config_map.as_ref().map(|c| c.name.as_str())
        };
        if direct == Some(name) {
            return true;
        }
        for s in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            let r = if secret {
                s.secret.as_ref().map(|r| r.name.as_str())
            } else {
                s.config_map.as_ref().map(|r| r.name.as_str())
            };
            if r == Some(name) {
                return true;
            }
        }
    }
    false
}
