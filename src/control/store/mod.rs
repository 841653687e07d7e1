//! The key-value store under every Kubernetes object podnetd keeps.
//!
//! The trait [`KvStore`] is shaped like etcd's v3 API, because an etcd
//! backend comes next for clusters of several nodes: one revision counter
//! for the whole store, every key carrying the revision that created it and
//! the one that last changed it, writes that succeed only if a key is still
//! at the revision the writer read (compare-and-swap), and watches that
//! start from a past revision.
//!
//! | module | owns |
//! |---|---|
//! | [`engine`] | the in-memory index, the bounded event history and the watchers; [`MemStore`] |
//! | [`file`] | [`FileStore`]: the engine made durable by a checksummed log and snapshots |
//! | [`encrypt`] | [`encrypt::Encryption`]: Secrets sealed with an AEAD in the files (never in memory) |
//! | [`sync`] | [`SyncPolicy`]: when a log reaches the disk (also used by the IPAM store) |
//!
//! # Invariants
//! * The revision increases by exactly one per successful put or delete and
//!   never goes back, across restarts too.
//! * A write is acknowledged (returns `Ok`) only once it is durable. In
//!   [`FileStore`] that means: it survives the death of the process
//!   (SIGKILL) under every [`SyncPolicy`]; it survives power loss too (as
//!   far as the disk honours `fdatasync`) under [`SyncPolicy::Always`], and
//!   under [`SyncPolicy::Periodic`] (the default) once at most
//!   [`sync::SYNC_INTERVAL`] has passed. After a power loss the store
//!   reopens at a revision it acknowledged, never with a gap.
//! * A watcher sees every event after its start revision, in revision order,
//!   with no gap: either the events, or [`WatchError::Compacted`] when the
//!   history no longer reaches back that far (the API answers 410 Gone), or
//!   the end of its stream when it falls too far behind (it then resumes
//!   from the last revision it saw, as a Kubernetes client does).

mod compactor;
pub mod encrypt;
pub mod engine;
pub mod file;
pub mod sync;

use std::sync::Arc;

pub use engine::MemStore;
pub use file::{FileStore, StoreOptions};
pub use sync::SyncPolicy;

/// A store revision: the count of writes since the store was made.
pub type Revision = u64;

/// One key with its value and revisions, as etcd reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The key, a `/`-separated path.
    pub key: String,
    /// The value (for objects, their JSON).
    pub value: Arc<[u8]>,
    /// The revision that created the key (unchanged by updates).
    pub create_revision: Revision,
    /// The revision of the last write to the key.
    pub mod_revision: Revision,
    /// Writes to the key since it was created, 1 for a new key.
    pub version: u64,
}

/// What a write requires of the key it changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precondition {
    /// Nothing: write unconditionally.
    None,
    /// The key must not exist (a create).
    Absent,
    /// The key must exist and have been last written at this revision.
    ModRevision(Revision),
}

/// What happened to a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Created or updated.
    Put,
    /// Deleted.
    Delete,
}

/// One change, delivered to watchers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The key after a put; for a delete, the key as it was, with
    /// `mod_revision` set to the deleting revision.
    pub kv: KeyValue,
    /// The key before the change, if it existed.
    pub prev: Option<KeyValue>,
    /// The values of `kv` and `prev` as their first reader parsed them.
    pub parsed: ParsedOnce,
}

/// The values of an event, parsed by their first reader and kept for the
/// others: every reconciler looks at every event, and parsing each
/// object again for each of them was a fifth of the reconcilers' time
/// when thousands of pods were deleted. Shared by the copies of an event
/// that each watcher gets (the reconcilers and every API watch stream),
/// so an object is parsed once whoever reads it first. A cache, not part
/// of the event: events compare equal whatever it holds.
#[derive(Clone, Default)]
pub struct ParsedOnce(std::sync::Arc<ParsedValues>);

#[derive(Default)]
struct ParsedValues {
    now: std::sync::OnceLock<serde_json::Value>,
    prev: std::sync::OnceLock<serde_json::Value>,
}

impl ParsedOnce {
    /// The value after the change, parsed by `parse` the first time.
    pub fn now(&self, parse: impl FnOnce() -> serde_json::Value) -> &serde_json::Value {
        self.0.now.get_or_init(parse)
    }

    /// The value before the change, parsed by `parse` the first time.
    pub fn prev(&self, parse: impl FnOnce() -> serde_json::Value) -> &serde_json::Value {
        self.0.prev.get_or_init(parse)
    }
}

impl PartialEq for ParsedOnce {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for ParsedOnce {}

impl std::fmt::Debug for ParsedOnce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ParsedOnce")
    }
}

impl Event {
    /// The revision of the change.
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}

/// Why a write was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The precondition did not hold; nothing was written.
    #[error("{key} was changed by someone else (now {}); read it again and retry", current.as_ref().map(|kv| format!("at revision {}", kv.mod_revision)).unwrap_or_else(|| "absent".into()))]
    Conflict {
        /// The key.
        key: String,
        /// The key as it is now, if it exists.
        current: Option<KeyValue>,
    },
    /// The key to delete does not exist.
    #[error("{key} does not exist")]
    NotFound {
        /// The key.
        key: String,
    },
    /// The write could not be made durable; nothing was changed in memory.
    #[error("could not write the store: {0}")]
    Storage(String),
}

/// Why a watch could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    /// The history no longer holds the events after the requested revision.
    #[error("revision {requested} is older than the oldest revision kept ({oldest}); list again and watch from the list's revision")]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The oldest revision a watch can start from now.
        oldest: Revision,
    },
}

/// The receiving end of a watch. The stream ends (receive gives `None`) when
/// the watcher fell too far behind or the store closed; resume from the last
/// revision seen.
pub type WatchReceiver = tokio::sync::mpsc::Receiver<Event>;

/// A revisioned key-value store, shaped like etcd v3.
pub trait KvStore: Send + Sync {
    /// The revision of the last write.
    fn revision(&self) -> Revision;

    /// One key.
    fn get(&self, key: &str) -> Option<KeyValue>;

    /// All keys starting with `prefix`, in key order, and the revision they
    /// were read at (a consistent snapshot).
    fn range(&self, prefix: &str) -> (Vec<KeyValue>, Revision);

    /// Writes `value` at `key` if `precondition` holds; returns the key as
    /// written.
    fn put(
        &self,
        key: &str,
        value: Arc<[u8]>,
        precondition: Precondition,
    ) -> Result<KeyValue, WriteError>;

    /// Deletes `key` if `precondition` holds; returns the key as it was,
    /// with `mod_revision` set to the deleting revision.
    fn delete(&self, key: &str, precondition: Precondition) -> Result<KeyValue, WriteError>;

    /// Streams every change to keys under `prefix` after revision `after`.
    fn watch(&self, prefix: &str, after: Revision) -> Result<WatchReceiver, WatchError>;

    /// The oldest revision a watch can start after.
    fn oldest_watchable(&self) -> Revision;
}

#[cfg(test)]
mod tests;
