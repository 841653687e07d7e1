//! A pod's volumes resolved from the store, as the kubelet's volume
//! plugins read them: `configMap`, `secret`, `downwardAPI` and `projected`
//! volumes become the files to write (path, bytes, mode); `emptyDir` and
//! `hostPath` pass through. The runtime writes and mounts them
//! ([`super::pod::PodRuntime::sync_volumes`]); errors carry the kubelet's
//! messages, reported as `FailedMount` events while the pod waits in
//! `ContainerCreating`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, KeyToPath, PersistentVolume, PersistentVolumeClaim, Pod,
    Secret, Volume,
};

use super::pod_env::parse_quantity;
use crate::control::objects::{ObjectError, Objects};

/// One file of a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileData {
    /// The content.
    pub bytes: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
}

/// What a volume is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeData {
    /// Files written atomically (configMap, secret, downwardAPI,
    /// projected); on tmpfs if `memory` (secrets, projected).
    Files {
        /// Relative path -> file.
        files: BTreeMap<String, FileData>,
        /// On tmpfs, never on disk.
        memory: bool,
    },
    /// An empty directory for the pod's life.
    EmptyDir {
        /// `medium: Memory` (tmpfs).
        memory: bool,
        /// `sizeLimit` in bytes (the tmpfs size).
        size_limit: Option<u64>,
    },
    /// A path of the host.
    HostPath {
        /// The path.
        path: String,
        /// `type` ("" for no check).
        type_: String,
    },
}

/// A named, resolved volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodVolume {
    /// `spec.volumes[].name`.
    pub name: String,
    /// Its content.
    pub data: VolumeData,
}

/// The volume kinds podnet serves, for messages.
pub const SUPPORTED: &[&str] = &[
    "configMap",
    "secret",
    "emptyDir",
    "hostPath",
    "downwardAPI",
    "projected",
    "persistentVolumeClaim",
];

const DEFAULT_MODE: i32 = 0o644;

fn gone<T>(r: Result<T, ObjectError>) -> Result<Option<T>, String> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(ObjectError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// Keys to files: all keys, or `items` (a missing key is an error unless
/// `optional`).
fn project(
    data: BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    mode: i32,
    optional: bool,
    what: &str,
    out: &mut BTreeMap<String, FileData>,
) -> Result<(), String> {
    match items {
        None => {
            for (k, v) in data {
                out.insert(
                    k,
                    FileData {
                        bytes: v,
                        mode: mode as u32,
                    },
                );
            }
        }
        Some(items) => {
            for it in items {
                match data.get(&it.key) {
                    Some(v) => {
                        out.insert(
                            it.path.clone(),
                            FileData {
                                bytes: v.clone(),
                                mode: it.mode.unwrap_or(mode) as u32,
                            },
                        );
                    }
                    None if optional => {}
                    None => return Err(format!("{what} references non-existent {}", it.key)),
                }
            }
        }
    }
    Ok(())
}

fn config_map_data(cm: ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut d: BTreeMap<String, Vec<u8>> = cm
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .collect();
    for (k, v) in cm.binary_data.unwrap_or_default() {
        d.insert(k, v.0);
    }
    d
}

fn secret_data(s: Secret) -> BTreeMap<String, Vec<u8>> {
    s.data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect()
}

/// Go's `%q` of a string, as the downward API quotes label values.
fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `key="value"` lines, sorted, without a final newline (the kubelet's
/// `fieldpath.FormatMap`).
pub fn format_map(m: Option<&BTreeMap<String, String>>) -> String {
    m.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

fn downward_items(
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    mode: i32,
    out: &mut BTreeMap<String, FileData>,
) -> Result<(), String> {
    for it in items {
        let Some(f) = &it.field_ref else {
            return Err(format!(
                "downwardAPI item {}: only fieldRef is supported on podnet",
                it.path
            ));
        };
        let meta = &pod.metadata;
        let value = match f.field_path.as_str() {
            "metadata.labels" => format_map(meta.labels.as_ref()),
            "metadata.annotations" => format_map(meta.annotations.as_ref()),
            "metadata.name" => meta.name.clone().unwrap_or_default(),
            "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
            "metadata.uid" => meta.uid.clone().unwrap_or_default(),
            p => {
                let keyed = |prefix: &str, m: Option<&BTreeMap<String, String>>| {
                    p.strip_prefix(prefix)
                        .and_then(|k| k.strip_suffix("']"))
                        .map(|k| m.and_then(|m| m.get(k)).cloned().unwrap_or_default())
                };
                keyed("metadata.labels['", meta.labels.as_ref())
                    .or_else(|| keyed("metadata.annotations['", meta.annotations.as_ref()))
                    .ok_or_else(|| {
                        format!(
                            "downwardAPI item {}: fieldRef {p:?} is not supported",
                            it.path
                        )
                    })?
            }
        };
        out.insert(
            it.path.clone(),
            FileData {
                bytes: value.into_bytes(),
                mode: it.mode.unwrap_or(mode) as u32,
            },
        );
    }
    Ok(())
}

/// Resolves one volume; the error is the kubelet's SetUp message.
fn resolve(objects: &Objects, pod: &Pod, v: &Volume) -> Result<VolumeData, String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    if let Some(cm) = &v.config_map {
        let optional = cm.optional == Some(true);
        let mut files = BTreeMap::new();
        let mode = cm.default_mode.unwrap_or(DEFAULT_MODE);
        match gone(objects.get_as::<ConfigMap>(Some(ns), &cm.name))? {
            Some(obj) => project(
                config_map_data(obj),
                cm.items.as_ref(),
                mode,
                optional,
                "configmap references non-existent config key:",
                &mut files,
            )?,
            None if optional => {}
            None => return Err(format!("configmap {:?} not found", cm.name)),
        }
        return Ok(VolumeData::Files {
            files,
            memory: false,
        });
    }
    if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let optional = s.optional == Some(true);
        let mut files = BTreeMap::new();
        let mode = s.default_mode.unwrap_or(DEFAULT_MODE);
        match gone(objects.get_as::<Secret>(Some(ns), &name))? {
            Some(obj) => project(
                secret_data(obj),
                s.items.as_ref(),
                mode,
                optional,
                "references non-existent secret key:",
                &mut files,
            )?,
            None if optional => {}
            None => return Err(format!("secret {name:?} not found")),
        }
        return Ok(VolumeData::Files {
            files,
            memory: true,
        });
    }
    if let Some(d) = &v.downward_api {
        let mut files = BTreeMap::new();
        let mode = d.default_mode.unwrap_or(DEFAULT_MODE);
        downward_items(pod, d.items.as_deref().unwrap_or(&[]), mode, &mut files)?;
        return Ok(VolumeData::Files {
            files,
            memory: false,
        });
    }
    if let Some(p) = &v.projected {
        let mode = p.default_mode.unwrap_or(DEFAULT_MODE);
        let mut files = BTreeMap::new();
        for src in p.sources.iter().flatten() {
            if let Some(cm) = &src.config_map {
                let optional = cm.optional == Some(true);
                match gone(objects.get_as::<ConfigMap>(Some(ns), &cm.name))? {
                    Some(obj) => project(
                        config_map_data(obj),
                        cm.items.as_ref(),
                        mode,
                        optional,
                        "configmap references non-existent config key:",
                        &mut files,
                    )?,
                    None if optional => {}
                    None => return Err(format!("configmap {:?} not found", cm.name)),
                }
            } else if let Some(s) = &src.secret {
                let optional = s.optional == Some(true);
                match gone(objects.get_as::<Secret>(Some(ns), &s.name))? {
                    Some(obj) => project(
                        secret_data(obj),
                        s.items.as_ref(),
                        mode,
                        optional,
                        "references non-existent secret key:",
                        &mut files,
                    )?,
                    None if optional => {}
                    None => return Err(format!("secret {:?} not found", s.name)),
                }
            } else if let Some(d) = &src.downward_api {
                downward_items(pod, d.items.as_deref().unwrap_or(&[]), mode, &mut files)?;
            } else {
                return Err(
                    "projected sources other than configMap, secret and downwardAPI are not supported on podnet"
                        .into(),
                );
            }
        }
        return Ok(VolumeData::Files {
            files,
            memory: true,
        });
    }
    if let Some(e) = &v.empty_dir {
        let size_limit = match &e.size_limit {
            Some(q) => Some(
                parse_quantity(&q.0)
                    .filter(|n| *n > 0)
                    .map(|n| ((n + 999_999_999) / 1_000_000_000) as u64)
                    .ok_or_else(|| format!("emptyDir sizeLimit {:?} is not a size", q.0))?,
            ),
            None => None,
        };
        return Ok(VolumeData::EmptyDir {
            memory: e.medium.as_deref() == Some("Memory"),
            size_limit,
        });
    }
    if let Some(c) = &v.persistent_volume_claim {
        // The bound volume's directory, as the kubelet mounts a local
        // volume; the pod waits (ContainerCreating) until the claim is bound.
        let claim = gone(objects.get_as::<PersistentVolumeClaim>(Some(ns), &c.claim_name))?
            .ok_or_else(|| format!("persistentvolumeclaim {:?} not found", c.claim_name))?;
        let volume = claim
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.clone())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("persistentvolumeclaim {:?} is not bound", c.claim_name))?;
        let pv = gone(objects.get_as::<PersistentVolume>(None, &volume))?
            .ok_or_else(|| format!("persistentvolume {volume:?} not found"))?;
        let spec = pv.spec.unwrap_or_default();
        let path = spec
            .host_path
            .map(|h| h.path)
            .or(spec.local.map(|l| l.path))
            .ok_or_else(|| {
                format!("persistentvolume {volume:?} has no hostPath or local path: podnet mounts only those")
            })?;
        return Ok(VolumeData::HostPath {
            path,
            type_: "Directory".into(),
        });
    }
    if let Some(h) = &v.host_path {
        return Ok(VolumeData::HostPath {
            path: h.path.clone(),
            type_: h.type_.clone().unwrap_or_default(),
        });
    }
    Err(format!(
        "volume type not supported on podnet (supported: {})",
        SUPPORTED.join(", ")
    ))
}

/// Every volume of the pod, or the first failure as the kubelet words it:
/// `MountVolume.SetUp failed for volume "NAME" : WHY`.
pub fn resolve_volumes(objects: &Objects, pod: &Pod) -> Result<Vec<PodVolume>, String> {
    let mut out = Vec::new();
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let data = resolve(objects, pod, v)
            .map_err(|why| format!("MountVolume.SetUp failed for volume {:?} : {why}", v.name))?;
        out.push(PodVolume {
            name: v.name.clone(),
            data,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_formatted_as_the_downward_api_does() {
        let m: BTreeMap<String, String> = [
            ("b".to_string(), "two words".to_string()),
            ("a".to_string(), "q\"x\n".to_string()),
        ]
        .into();
        assert_eq!(format_map(Some(&m)), "a=\"q\\\"x\\n\"\nb=\"two words\"");
        assert_eq!(format_map(None), "");
    }
}
