//! Which objects name an owner in their `ownerReferences`, by the owner's
//! uid: the garbage collector's lookup at every deletion. Looking at every
//! object of the namespace instead made deleting all of N pods cost time
//! in proportion to N squared.
//!
//! The index follows the store through a watch of its own, drained at each
//! lookup: the store queues an event when a write commits, so a lookup
//! sees every write committed before it. When the watch was cut off (more
//! writes between two lookups than a watch queues), the index is made
//! again from one pass over the store.

use std::collections::{BTreeSet, HashMap};

use parking_lot::Mutex;
use serde_json::Value;

use crate::control::store::{EventKind, KvStore, WatchReceiver};

const ROOT: &str = "/registry/";

struct Index {
    events: WatchReceiver,
    /// Owner uid -> keys of the objects naming it.
    dependents: HashMap<String, BTreeSet<String>>,
    /// Key -> the owner uids it names.
    owners: HashMap<String, Vec<String>>,
}

/// See the module docs.
#[derive(Default)]
pub struct OwnerIndex(Mutex<Option<Index>>);

/// The owner uids an object's JSON names (decoded only if it has any).
fn owner_uids(raw: &[u8]) -> Vec<String> {
    if memchr::memmem::find(raw, b"\"ownerReferences\"").is_none() {
        return Vec::new();
    }
    let Ok(obj) = serde_json::from_slice::<Value>(raw) else {
        return Vec::new();
    };
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r.get("uid").and_then(Value::as_str))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

impl Index {
    fn build(kv: &dyn KvStore) -> Option<Index> {
        let events = kv.watch(ROOT, kv.revision()).ok()?;
        let mut index = Index {
            events,
            dependents: HashMap::new(),
            owners: HashMap::new(),
        };
        for item in kv.range(ROOT).0 {
            index.set(&item.key, owner_uids(&item.value));
        }
        Some(index)
    }

    fn set(&mut self, key: &str, uids: Vec<String>) {
        if let Some(old) = self.owners.remove(key) {
            for uid in old {
                if let Some(set) = self.dependents.get_mut(&uid) {
                    set.remove(key);
                    if set.is_empty() {
                        self.dependents.remove(&uid);
                    }
                }
            }
        }
        if uids.is_empty() {
            return;
        }
        for uid in &uids {
            self.dependents
                .entry(uid.clone())
                .or_default()
                .insert(key.to_string());
        }
        self.owners.insert(key.to_string(), uids);
    }

    /// Applies the queued events; false if the watch was cut off.
    fn catch_up(&mut self) -> bool {
        loop {
            match self.events.try_recv() {
                Ok(event) => {
                    let uids = match event.kind {
                        EventKind::Put => owner_uids(&event.kv.value),
                        EventKind::Delete => Vec::new(),
                    };
                    self.set(&event.kv.key, uids);
                }
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => return true,
                Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => return false,
            }
        }
    }
}

impl OwnerIndex {
    /// Keys of the objects whose `ownerReferences` name `uid`, as of every
    /// write committed so far. `None` if no watch could be started (then
    /// the caller looks at every object).
    pub fn dependents(&self, kv: &dyn KvStore, uid: &str) -> Option<Vec<String>> {
        let mut guard = self.0.lock();
        let current = match guard.as_mut() {
            Some(index) => index.catch_up(),
            None => false,
        };
        if !current {
            *guard = Index::build(kv);
        }
        let index = guard.as_ref()?;
        Some(
            index
                .dependents
                .get(uid)
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default(),
        )
    }
}
