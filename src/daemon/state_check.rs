//! The state directory checked at start: damaged or missing files are
//! repaired in the safe direction where the truth can be rebuilt, and
//! reported, naming the file, in the log and as an event on the Node.
//!
//! * IPAM (`STATE/ipam/`) is rebuilt from the pods (their status and
//!   their namespaces' `eth0`): a damaged IPAM file is moved aside, kept
//!   for the operator, and the daemon starts with IPAM empty and claims
//!   every address in use again before anything is handed out.
//! * The object store (`STATE/store/`) cannot be rebuilt: a damaged one
//!   stops the start with an error naming the file, left untouched. A
//!   missing one, while podnet's record of the namespaces it made says
//!   pods ran, is reported: the pods it no longer knows are removed.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::{Node, ObjectReference};

use super::config::DaemonConfig;
use super::DaemonError;
use crate::control::ipam::{FileStore, Ipam, IpamConfig, OpenError, StoreError};
use crate::control::objects::Objects;
use crate::control::reconcile::events;

/// A state file found damaged or missing at start, and what was done.
#[derive(Debug, Clone)]
pub struct StateDamage {
    /// The file.
    pub file: PathBuf,
    /// `StateFileDamaged` or `StateFileMissing`.
    pub reason: &'static str,
    /// What is wrong and what was done about it.
    pub message: String,
}

impl StateDamage {
    /// Logs it (an error: the operator should look).
    fn log(&self) {
        tracing::error!(file = %self.file.display(), reason = self.reason, "{}", self.message);
    }
}

/// Whether podnet recorded making any pod namespace on this host
/// (`STATE/netns`), i.e. whether pods ran here.
fn pods_ran(config: &DaemonConfig) -> bool {
    std::fs::read_dir(config.state_dir.join("netns"))
        .map(|mut d| d.next().is_some())
        .unwrap_or(false)
}

/// Checks, before the object store is opened, that it is there when pods
/// ran: a store that is gone starts empty, and the pods it held are
/// removed as unknown; that is reported, as is a log gone from beside its
/// snapshot.
pub fn check_object_store(config: &DaemonConfig) -> Option<StateDamage> {
    let dir = config.state_dir.join("store");
    let snapshot = dir.join("snapshot");
    let log = dir.join("log");
    if snapshot.exists() && !log.exists() {
        // Every start writes a fresh log beside the snapshot.
        let damage = StateDamage {
            file: log,
            reason: "StateFileMissing",
            message: "the object store's log is missing: the writes since the last start of \
                      podnetd are lost; the store opens at its snapshot"
                .into(),
        };
        damage.log();
        return Some(damage);
    }
    if snapshot.exists() || log.exists() || !pods_ran(config) {
        return None;
    }
    let damage = StateDamage {
        file: snapshot,
        reason: "StateFileMissing",
        message: "the object store is missing while podnet's record says pods ran on this node: \
                  starting with no objects; the pods it held are unknown now and are removed \
                  (restore the store directory from a backup to keep them)"
            .into(),
    };
    damage.log();
    Some(damage)
}

/// Opens IPAM. A damaged IPAM state is moved aside (to
/// `STATE/ipam.damaged-<unix seconds>`, untouched) and IPAM starts empty:
/// the runtime then claims every address in use again from the pods and
/// their namespaces before anything is handed out. Missing IPAM files are
/// reported the same way.
pub fn open_ipam(config: &DaemonConfig) -> Result<(Ipam, Vec<StateDamage>), DaemonError> {
    let dir = config.state_dir.join("ipam");
    let mut damages = Vec::new();
    let state = dir.join("state.json");
    let log = dir.join("changes.log");
    if pods_ran(config) {
        for (file, present) in [(&state, state.exists()), (&log, log.exists())] {
            if !present {
                damages.push(StateDamage {
                    file: file.clone(),
                    reason: "StateFileMissing",
                    message: "an IPAM state file is missing: addresses in use are claimed again \
                              from the pods and their network namespaces"
                        .into(),
                });
            }
        }
    }
    let mut ipam = match try_open_ipam(config) {
        Ok(ipam) => ipam,
        Err(OpenError::Store(StoreError::Corrupt { path, reason })) => {
            let aside = moved_aside(&dir);
            std::fs::rename(&dir, &aside).map_err(|e| {
                DaemonError::Ipam(format!(
                    "IPAM state file {} is corrupt ({reason}) and its directory cannot be moved aside to {}: {e}; move it away by hand",
                    path.display(),
                    aside.display()
                ))
            })?;
            damages.push(StateDamage {
                file: path,
                reason: "StateFileDamaged",
                message: format!(
                    "the IPAM state is corrupt ({reason}): it was moved to {} as it was, and IPAM \
                     starts empty; addresses in use are claimed again from the pods and their \
                     network namespaces (recently released addresses may be handed out again \
                     sooner than the quarantine says)",
                    aside.display()
                ),
            });
            try_open_ipam(config).map_err(|e| DaemonError::Ipam(e.to_string()))?
        }
        Err(e) => return Err(DaemonError::Ipam(e.to_string())),
    };
    for d in &damages {
        d.log();
    }
    // Already logged by the store, naming the file.
    damages.extend(
        ipam.take_store_repairs()
            .into_iter()
            .map(|message| StateDamage {
                file: log.clone(),
                reason: "StateFileDamaged",
                message,
            }),
    );
    Ok((ipam, damages))
}

/// What opening the object store dropped from its damaged log, as damages
/// to report (the store logged them already).
pub fn object_store_repairs(store: &crate::control::store::FileStore) -> Vec<StateDamage> {
    store
        .repairs()
        .iter()
        .map(|message| StateDamage {
            file: store.dir().join("log"),
            reason: "StateFileDamaged",
            message: message.clone(),
        })
        .collect()
}

/// IPAM on its file store in `STATE/ipam`.
fn try_open_ipam(config: &DaemonConfig) -> Result<Ipam, OpenError> {
    let store = FileStore::open_with_sync(&config.state_dir, config.store_sync)?;
    Ipam::open(
        Box::new(store),
        IpamConfig {
            subnet_v4: Some(config.node_subnet),
            subnet_v6: config.node_subnet_v6,
            quarantine: Duration::from_secs(config.ip_quarantine_secs),
        },
    )
}

/// Where a damaged directory is moved: beside it, named by the time.
fn moved_aside(dir: &Path) -> PathBuf {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("ipam");
    let mut aside = dir.with_file_name(format!("{name}.damaged-{secs}"));
    let mut n = 1;
    while aside.exists() {
        aside = dir.with_file_name(format!("{name}.damaged-{secs}-{n}"));
        n += 1;
    }
    aside
}

/// Records each damage as a Warning event on the node (`kubectl get
/// events`, `kubectl describe node`), naming the file.
pub fn report(objects: &Objects, node: &str, damages: &[StateDamage], now: SystemTime) {
    let involved = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some(node.into()),
        uid: objects
            .get_as::<Node>(None, node)
            .ok()
            .and_then(|n| n.metadata.uid),
        ..Default::default()
    };
    for d in damages {
        events::record(
            objects,
            involved.clone(),
            true,
            d.reason,
            format!("{}: {}", d.file.display(), d.message),
            "podnetd",
            now,
        );
    }
}
