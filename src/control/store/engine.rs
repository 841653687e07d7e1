//! The in-memory heart of every store: the key index, the revision counter,
//! a bounded history of events and the watchers.
//!
//! A write is prepared ([`Engine::prepare_put`], [`Engine::prepare_delete`]:
//! preconditions checked, the event built, nothing changed), made durable
//! by the store that owns the engine, then committed ([`Engine::commit`]),
//! which applies it, keeps it in the history and hands it to the watchers.
//! A store holds its engine under one lock across the three steps, so
//! revisions are handed out in order and a watcher registered under the
//! same lock never misses an event.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::mpsc;

use super::{
    Event, EventKind, KeyValue, KvStore, Precondition, Revision, WatchError, WatchReceiver,
    WriteError,
};

/// Events kept for watches that resume from the past. A Kubernetes API
/// server keeps about the last five minutes; this is a count instead.
pub const DEFAULT_HISTORY: usize = 10_000;

/// Events queued for one watcher before it is cut off as too slow (it then
/// resumes from its last revision, or relists after a 410).
pub const WATCH_QUEUE: usize = 4096;

struct Watcher {
    prefix: String,
    tx: mpsc::Sender<Event>,
}

/// Index, history and watchers; see the module docs.
pub struct Engine {
    keys: BTreeMap<String, KeyValue>,
    revision: Revision,
    history: VecDeque<Event>,
    history_limit: usize,
    /// Every event after this revision is in `history`.
    history_start: Revision,
    watchers: Vec<Watcher>,
}

impl Engine {
    /// An engine holding `keys` at `revision` (as loaded from disk), with an
    /// empty history that starts there.
    pub fn new(keys: BTreeMap<String, KeyValue>, revision: Revision, history_limit: usize) -> Self {
        Self {
            keys,
            revision,
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            history_start: revision,
            watchers: Vec::new(),
        }
    }

    /// The revision of the last write.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &KeyValue> {
        self.keys.values()
    }

    /// One key.
    pub fn get(&self, key: &str) -> Option<KeyValue> {
        self.keys.get(key).cloned()
    }

    /// Keys under `prefix` and the current revision.
    pub fn range(&self, prefix: &str) -> (Vec<KeyValue>, Revision) {
        let items = self
            .keys
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.clone())
            .collect();
        (items, self.revision)
    }

    fn check(&self, key: &str, precondition: Precondition) -> Result<(), WriteError> {
        let current = self.keys.get(key);
        let ok = match precondition {
            Precondition::None => true,
            Precondition::Absent => current.is_none(),
            Precondition::ModRevision(rev) => current.is_some_and(|kv| kv.mod_revision == rev),
        };
        if ok {
            Ok(())
        } else {
            Err(WriteError::Conflict {
                key: key.to_string(),
                current: current.cloned(),
            })
        }
    }

    /// The event a put would make, without making it.
    pub fn prepare_put(
        &self,
        key: &str,
        value: Arc<[u8]>,
        precondition: Precondition,
    ) -> Result<Event, WriteError> {
        self.check(key, precondition)?;
        let revision = self.revision + 1;
        let prev = self.keys.get(key).cloned();
        let kv = KeyValue {
            key: key.to_string(),
            value,
            create_revision: prev.as_ref().map_or(revision, |p| p.create_revision),
            mod_revision: revision,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
        };
        Ok(Event {
            kind: EventKind::Put,
            kv,
            prev,
            parsed: Default::default(),
        })
    }

    /// The event a delete would make, without making it.
    pub fn prepare_delete(
        &self,
        key: &str,
        precondition: Precondition,
    ) -> Result<Event, WriteError> {
        let Some(prev) = self.keys.get(key).cloned() else {
            return Err(match precondition {
                Precondition::ModRevision(_) => WriteError::Conflict {
                    key: key.to_string(),
                    current: None,
                },
                _ => WriteError::NotFound {
                    key: key.to_string(),
                },
            });
        };
        self.check(key, precondition)?;
        let mut kv = prev.clone();
        kv.mod_revision = self.revision + 1;
        Ok(Event {
            kind: EventKind::Delete,
            kv,
            prev: Some(prev),
            parsed: Default::default(),
        })
    }

    /// Applies a prepared event (its revision must be the next one), keeps
    /// it in the history and delivers it.
    pub fn commit(&mut self, event: Event) {
        debug_assert_eq!(event.revision(), self.revision + 1);
        self.apply(&event);
        // Kept without the parsed values its watchers will share: the
        // history holds thousands of events, their JSON values many
        // times the size of their bytes.
        self.history.push_back(Event {
            parsed: Default::default(),
            ..event.clone()
        });
        while self.history.len() > self.history_limit {
            if let Some(old) = self.history.pop_front() {
                self.history_start = old.revision();
            }
        }
        self.watchers.retain(|w| {
            if !event.kv.key.starts_with(&w.prefix) {
                return !w.tx.is_closed();
            }
            // A full queue cuts the watcher off; it resumes from its last
            // revision, as a client of a Kubernetes API server does.
            w.tx.try_send(event.clone()).is_ok()
        });
    }

    fn apply(&mut self, event: &Event) {
        match event.kind {
            EventKind::Put => {
                self.keys.insert(event.kv.key.clone(), event.kv.clone());
            }
            EventKind::Delete => {
                self.keys.remove(&event.kv.key);
            }
        }
        self.revision = event.revision();
    }

    /// The oldest revision a watch can start after.
    pub fn oldest_watchable(&self) -> Revision {
        self.history_start
    }

    /// Starts a watch of `prefix` after revision `after`: the kept events
    /// after it first, then every new one.
    pub fn watch(&mut self, prefix: &str, after: Revision) -> Result<WatchReceiver, WatchError> {
        if after < self.history_start {
            return Err(WatchError::Compacted {
                requested: after,
                oldest: self.history_start,
            });
        }
        let backlog: Vec<&Event> = self
            .history
            .iter()
            .filter(|e| e.revision() > after && e.kv.key.starts_with(prefix))
            .collect();
        let (tx, rx) = mpsc::channel(WATCH_QUEUE.max(backlog.len() + 1));
        for event in backlog {
            // Cannot fail: the queue was sized for the backlog.
            let _ = tx.try_send(event.clone());
        }
        self.watchers.push(Watcher {
            prefix: prefix.to_string(),
            tx,
        });
        Ok(rx)
    }
}

/// A store that keeps everything in memory: for tests of the layers above,
/// and as the engine's plainest user.
pub struct MemStore {
    engine: Mutex<Engine>,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::with_history(DEFAULT_HISTORY)
    }

    /// An empty store keeping `history` events for watches.
    pub fn with_history(history: usize) -> Self {
        Self {
            engine: Mutex::new(Engine::new(BTreeMap::new(), 0, history)),
        }
    }
}

impl Default for MemStore {
    fn default() -> Self {
        Self::new()
    }
}

impl KvStore for MemStore {
    fn revision(&self) -> Revision {
        self.engine.lock().revision()
    }

    fn get(&self, key: &str) -> Option<KeyValue> {
        self.engine.lock().get(key)
    }

    fn range(&self, prefix: &str) -> (Vec<KeyValue>, Revision) {
        self.engine.lock().range(prefix)
    }

    fn put(
        &self,
        key: &str,
        value: Arc<[u8]>,
        precondition: Precondition,
    ) -> Result<KeyValue, WriteError> {
        let mut engine = self.engine.lock();
        let event = engine.prepare_put(key, value, precondition)?;
        let kv = event.kv.clone();
        engine.commit(event);
        Ok(kv)
    }

    fn delete(&self, key: &str, precondition: Precondition) -> Result<KeyValue, WriteError> {
        let mut engine = self.engine.lock();
        let event = engine.prepare_delete(key, precondition)?;
        let gone = event.kv.clone();
        engine.commit(event);
        Ok(gone)
    }

    fn watch(&self, prefix: &str, after: Revision) -> Result<WatchReceiver, WatchError> {
        self.engine.lock().watch(prefix, after)
    }

    fn oldest_watchable(&self) -> Revision {
        self.engine.lock().oldest_watchable()
    }
}
