//! Reconcilers: one per kind, each reading the object store and writing
//! what follows from it, as Kubernetes' controllers do.
//!
//! | module | turns | into |
//! |---|---|---|
//! | [`events`] | Events recorded by the others, repeats counted, old ones pruned | |
//! | [`pod_env`] | a container's environment (`env`, `envFrom`, ConfigMap and Secret keys, downward API, resources) | for [`pod`] |
//! | [`pod_volumes`] | a pod's volumes resolved from the store (configMap, secret, downwardAPI, projected files; emptyDir, hostPath) | for [`pod`] |
//! | [`pod`] | Pods on this node | network, processes, restarts, probes, termination, status (the kubelet), through a [`pod::PodRuntime`] |
//! | [`replica_set`] | ReplicaSets | Pods from the template, and the ReplicaSet's status |
//! | [`deployment`] | Deployments | ReplicaSets (rolling update, recreate, history) and status |
//! | [`stateful_set`] | StatefulSets | Pods with stable names, in order; rolling updates from the highest ordinal |
//! | [`endpoints`] | Services and Pods | Endpoints and EndpointSlices (ready, serving, terminating) |
//!
//! A reconciler is a function of the store and the time (passed in): it
//! reads what is, writes what should be with compare-and-swap, and says
//! when it wants to look again. [`Manager`] feeds it: it watches the store
//! and queues the objects an event concerns (the object itself, its
//! controlling owner, the services selecting a pod). Tests drive a manager
//! step by step with [`Manager::run_until_idle`], without root and
//! without threads.
//!
//! The queue is first in, first out, and a key already queued keeps its
//! place, as in a Kubernetes work queue: one thread runs every reconciler
//! here, so a key must not wait behind work queued after it (the
//! endpoints of a deleted pod behind the network set-up of its
//! replacement).

pub mod deployment;
pub mod endpoints;
pub mod events;
pub mod pod;
pub mod pod_env;
pub mod pod_volumes;
pub mod replica_set;
pub mod slice_index;
pub mod stateful_set;
pub mod volume_claims;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, SystemTime};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::{Metadata, Resource};
use serde_json::Value;

use super::objects::{ObjectError, Objects};
use super::store::{Event, Revision, WatchReceiver};

/// What a reconciler is asked to look at: kind, namespace, name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    /// The kind (`ReplicaSet`).
    pub kind: &'static str,
    /// The namespace.
    pub namespace: String,
    /// The name.
    pub name: String,
}

/// What a reconciler wants after a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Next {
    /// Nothing until something changes.
    #[default]
    Done,
    /// Another look after this long (a deadline, a back-off).
    After(Duration),
}

/// One reconciler.
pub trait Reconciler: Send + Sync {
    /// The kind it reconciles.
    fn kind(&self) -> &'static str;

    /// The keys (of [`Reconciler::kind`]) a store event concerns.
    fn keys_for(&self, objects: &Objects, event: &Event) -> Vec<Key>;

    /// Brings one object's world in line with it.
    fn reconcile(&self, objects: &Objects, key: &Key, now: SystemTime)
        -> Result<Next, ObjectError>;

    /// The keys to look at when the manager starts: every stored object of
    /// [`Reconciler::kind`], unless the reconciler keys by something else.
    fn initial_keys(&self, objects: &Objects) -> Vec<Key> {
        let Some(kind) = super::kinds::KINDS.iter().find(|k| k.kind == self.kind()) else {
            return Vec::new();
        };
        objects
            .kv()
            .range(&Objects::prefix(kind, None))
            .0
            .iter()
            .map(|kv| key_of(self.kind(), &Objects::object_of(kv)))
            .collect()
    }
}

/// A shared reconciler (the daemon keeps a handle to read its state).
impl<R: Reconciler + ?Sized> Reconciler for std::sync::Arc<R> {
    fn kind(&self) -> &'static str {
        (**self).kind()
    }
    fn keys_for(&self, objects: &Objects, event: &Event) -> Vec<Key> {
        (**self).keys_for(objects, event)
    }
    fn reconcile(
        &self,
        objects: &Objects,
        key: &Key,
        now: SystemTime,
    ) -> Result<Next, ObjectError> {
        (**self).reconcile(objects, key, now)
    }
    fn initial_keys(&self, objects: &Objects) -> Vec<Key> {
        (**self).initial_keys(objects)
    }
}

/// Feeds reconcilers from a store watch and runs them.
pub struct Manager {
    objects: Objects,
    reconcilers: Vec<Box<dyn Reconciler>>,
    events: WatchReceiver,
    queue: KeyQueue,
    /// Keys to look at again, and when.
    later: Timers,
    last: Revision,
    pokes: tokio::sync::mpsc::UnboundedReceiver<Key>,
    poker: Poker,
    /// The timer runtime [`Manager::wait`] blocks on (made once).
    waiter: Option<tokio::runtime::Runtime>,
    /// Set when the process stops: the loop leaves what is queued.
    stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

/// Asks a [`Manager`] to look at a key soon, from any thread (a runtime
/// that saw a process exit, for example).
#[derive(Clone)]
pub struct Poker(tokio::sync::mpsc::UnboundedSender<Key>);

impl Poker {
    /// Queues `key`.
    pub fn poke(&self, key: Key) {
        let _ = self.0.send(key);
    }
}

/// How many passes a key may take in one [`Manager::run_until_idle`]
/// before it is left for the next (a reconciler that never settles must
/// not hang the loop).
const MAX_PASSES: usize = 64;

impl Manager {
    /// A manager over `objects` that starts with every existing object of
    /// each reconciler's kind queued.
    pub fn new(objects: Objects, reconcilers: Vec<Box<dyn Reconciler>>) -> Self {
        let start = objects.kv().revision();
        let events = objects
            .kv()
            .watch("/registry/", start)
            .expect("a watch from the current revision always starts");
        let (tx, pokes) = tokio::sync::mpsc::unbounded_channel();
        let mut m = Self {
            objects,
            reconcilers,
            events,
            queue: KeyQueue::default(),
            later: Timers::default(),
            last: start,
            pokes,
            poker: Poker(tx),
            waiter: tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .ok(),
            stop: None,
        };
        m.queue_all();
        m
    }

    fn queue_all(&mut self) {
        for r in &self.reconcilers {
            self.queue.extend(r.initial_keys(&self.objects));
        }
    }

    /// Takes the events that arrived and queues what they concern; returns
    /// false if the watch ended (fell behind), after queueing everything
    /// again from a fresh watch.
    /// A handle to queue keys from elsewhere.
    pub fn poker(&self) -> Poker {
        self.poker.clone()
    }

    fn drain_events(&mut self) {
        while let Ok(key) = self.pokes.try_recv() {
            self.queue.insert(key);
        }
        loop {
            match self.events.try_recv() {
                Ok(event) => {
                    self.last = event.revision();
                    for r in &self.reconcilers {
                        self.queue.extend(r.keys_for(&self.objects, &event));
                    }
                }
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => return,
                Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                    // Cut off as too slow: go on from the last event seen
                    // while the store's history still holds what followed
                    // (looking at everything again costs every reconcile
                    // of every object); else start over from what is.
                    if let Ok(resumed) = self.objects.kv().watch("/registry/", self.last) {
                        tracing::debug!(
                            revision = self.last,
                            "reconcilers fell behind; resuming their watch"
                        );
                        self.events = resumed;
                        continue;
                    }
                    let now = self.objects.kv().revision();
                    tracing::warn!(
                        from = self.last,
                        to = now,
                        "reconcilers fell behind the store's history; looking at every object again"
                    );
                    self.events = self
                        .objects
                        .kv()
                        .watch("/registry/", now)
                        .expect("a watch from the current revision always starts");
                    self.last = now;
                    self.queue_all();
                    return;
                }
            }
        }
    }

    /// Makes [`Manager::run_until_idle`] return as soon as `stop` is set,
    /// leaving the rest queued (a stopping daemon looks at everything again
    /// when it starts).
    pub fn with_stop(mut self, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> Self {
        self.stop = Some(stop);
        self
    }

    /// Runs every queued and due key, and what their writes cause, until
    /// nothing is left to do at `now`. Returns when the next timed look is
    /// due, if any.
    pub fn run_until_idle(&mut self, now: SystemTime) -> Option<SystemTime> {
        while let Some(k) = self.later.pop_due(now) {
            self.queue.insert(k);
        }
        let mut passes: BTreeMap<Key, usize> = BTreeMap::new();
        loop {
            if self
                .stop
                .as_ref()
                .is_some_and(|s| s.load(std::sync::atomic::Ordering::Relaxed))
            {
                break;
            }
            self.drain_events();
            let Some(key) = self.queue.pop() else {
                break;
            };
            let n = passes.entry(key.clone()).or_default();
            *n += 1;
            if *n > MAX_PASSES {
                tracing::warn!(
                    ?key,
                    "reconciler keeps changing its object; looking again later"
                );
                self.later.insert(key, now + Duration::from_secs(1));
                continue;
            }
            let Some(r) = self.reconcilers.iter().find(|r| r.kind() == key.kind) else {
                continue;
            };
            match r.reconcile(&self.objects, &key, now) {
                Ok(Next::Done) => {}
                Ok(Next::After(d)) => {
                    self.later.insert(key, now + d);
                }
                Err(ObjectError::Conflict { .. }) => {
                    // Someone wrote in between: look again at once.
                    self.queue.insert(key);
                }
                Err(ObjectError::NotFound { .. }) => {}
                Err(e) => {
                    tracing::warn!(?key, error = %e, "reconcile failed; retrying in 1s");
                    self.later.insert(key, now + Duration::from_secs(1));
                }
            }
        }
        self.later.next()
    }

    /// Blocks until the store changes, a key is poked, or `until` (at most
    /// `max`), for a manager thread.
    pub fn wait(&mut self, until: Option<SystemTime>, max: Duration) {
        if !self.queue.is_empty() {
            return;
        }
        let timeout = until
            .map(|t| t.duration_since(SystemTime::now()).unwrap_or_default())
            .unwrap_or(max)
            .min(max);
        let Some(rt) = self.waiter.as_ref() else {
            std::thread::sleep(timeout);
            return;
        };
        let (events, pokes) = (&mut self.events, &mut self.pokes);
        let got = rt.block_on(async {
            tokio::select! {
                e = events.recv() => Some(Ok(e)),
                k = pokes.recv() => Some(Err(k)),
                _ = tokio::time::sleep(timeout) => None,
            }
        });
        match got {
            Some(Ok(Some(event))) => {
                self.last = event.revision();
                for r in &self.reconcilers {
                    self.queue.extend(r.keys_for(&self.objects, &event));
                }
            }
            Some(Err(Some(key))) => {
                self.queue.insert(key);
            }
            _ => {}
        }
    }
}

/// Keys to look at again at a time, in time order. Taking the due ones
/// and the next time costs O(log n), not a pass over every waiting key:
/// the manager asks after every store event, and while thousands of pods
/// terminate thousands of keys wait (a scan per event made deleting 4,000
/// pods quadratic).
#[derive(Default)]
struct Timers {
    by_time: BTreeSet<(SystemTime, Key)>,
    at: HashMap<Key, SystemTime>,
}

impl Timers {
    /// Looks at `key` at `at` (replacing an earlier time or a later one).
    fn insert(&mut self, key: Key, at: SystemTime) {
        if let Some(old) = self.at.insert(key.clone(), at) {
            self.by_time.remove(&(old, key.clone()));
        }
        self.by_time.insert((at, key));
    }

    /// A key due at `now`, earliest first.
    fn pop_due(&mut self, now: SystemTime) -> Option<Key> {
        if self.by_time.first()?.0 > now {
            return None;
        }
        let (_, key) = self.by_time.pop_first()?;
        self.at.remove(&key);
        Some(key)
    }

    /// When the next key is due.
    fn next(&self) -> Option<SystemTime> {
        self.by_time.first().map(|(t, _)| *t)
    }
}

/// Keys in the order they were first queued, each once.
#[derive(Default)]
struct KeyQueue {
    order: VecDeque<Key>,
    queued: HashSet<Key>,
}

impl KeyQueue {
    /// Queues `key` at the back, unless it is queued already.
    fn insert(&mut self, key: Key) {
        if self.queued.insert(key.clone()) {
            self.order.push_back(key);
        }
    }

    fn pop(&mut self) -> Option<Key> {
        let key = self.order.pop_front()?;
        self.queued.remove(&key);
        Some(key)
    }

    fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

impl Extend<Key> for KeyQueue {
    fn extend<I: IntoIterator<Item = Key>>(&mut self, keys: I) {
        for key in keys {
            self.insert(key);
        }
    }
}

/// A metadata string field of an object's JSON, or "".
pub fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// The key of an event's object under `kind`.
pub fn key_of(kind: &'static str, obj: &Value) -> Key {
    Key {
        kind,
        namespace: meta_str(obj, "namespace").to_string(),
        name: meta_str(obj, "name").to_string(),
    }
}

/// The kind of an event's object.
pub fn event_kind(event: &Event) -> Option<(&'static str, &Value)> {
    let obj = Objects::event_value(event);
    let kind = obj.get("kind").and_then(Value::as_str)?;
    let kind = super::kinds::KINDS.iter().find(|k| k.kind == kind)?.kind;
    Some((kind, obj))
}

/// Whether an event made, removed, or changed one of `pointers` (JSON
/// pointers) of its object.
pub fn fields_changed(event: &Event, obj: &Value, pointers: &[&str]) -> bool {
    let Some(prev) = Objects::event_prev_value(event) else {
        return true;
    };
    if matches!(event.kind, crate::control::store::EventKind::Delete) {
        return true;
    }
    pointers.iter().any(|p| obj.pointer(p) != prev.pointer(p))
}

/// Keys of `owner_kind` controlling the event's object (and the object's
/// previous state), from their `ownerReferences`.
pub fn controller_keys(owner_kind: &'static str, event: &Event) -> Vec<Key> {
    let mut keys = Vec::new();
    // Most objects have no owner: their bytes say so without a parse (of
    // the value before the change, above all, which nothing else may need).
    let owned = |kv: &crate::control::store::KeyValue| {
        memchr::memmem::find(&kv.value, b"\"ownerReferences\"").is_some()
    };
    let now = owned(&event.kv).then(|| Objects::event_value(event));
    let prev = event
        .prev
        .as_ref()
        .filter(|p| owned(p))
        .and_then(|_| Objects::event_prev_value(event));
    for obj in now.into_iter().chain(prev) {
        let refs = obj
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        for r in refs {
            if r.get("kind").and_then(Value::as_str) == Some(owner_kind)
                && r.get("controller").and_then(Value::as_bool) == Some(true)
            {
                keys.push(Key {
                    kind: owner_kind,
                    namespace: meta_str(obj, "namespace").to_string(),
                    name: r
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                });
            }
        }
    }
    keys
}

/// The controller reference to put on objects `owner` makes.
pub fn controller_ref<K: Resource + Metadata<Ty = ObjectMeta>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::API_VERSION.into(),
        kind: K::KIND.into(),
        name: owner.metadata().name.clone().unwrap_or_default(),
        uid: owner.metadata().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Whether `obj` is controlled by `owner` (uid match).
pub fn is_controlled_by(obj: &ObjectMeta, owner: &ObjectMeta) -> bool {
    obj.owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true) && Some(&r.uid) == owner.uid.as_ref())
}

/// A stable short hash of a value's JSON (FNV-1a, 32 bits), spelled with
/// the API server's safe alphabet: the `pod-template-hash`.
pub fn template_hash(v: &Value) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut h: u32 = 0x811c9dc5;
    for b in serde_json::to_vec(v).unwrap_or_default() {
        h ^= b as u32;
        h = h.wrapping_mul(0x01000193);
    }
    let mut out = String::new();
    let mut n = h as u64;
    while n > 0 || out.is_empty() {
        out.push(ALPHABET[(n % ALPHABET.len() as u64) as usize] as char);
        n /= ALPHABET.len() as u64;
    }
    out
}

#[cfg(test)]
mod pod_tests;
#[cfg(test)]
mod tests;

#[cfg(test)]
mod queue_tests {
    use std::time::{Duration, SystemTime};

    use super::{Key, KeyQueue, Timers};

    fn key(name: &str) -> Key {
        Key {
            kind: if name.starts_with('s') {
                "Service"
            } else {
                "Pod"
            },
            namespace: "default".into(),
            name: name.into(),
        }
    }

    #[test]
    fn keys_run_in_the_order_first_queued_each_once() {
        let mut q = KeyQueue::default();
        q.extend(["old-pod", "svc", "rs"].map(key));
        assert_eq!(q.pop(), Some(key("old-pod")));
        // Work caused by a later pass goes behind what was already waiting,
        // and a key queued again keeps its place.
        q.extend(["new-pod", "svc"].map(key));
        let order: Vec<Key> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(order, ["svc", "rs", "new-pod"].map(key));
        assert!(q.is_empty());
        // Popped keys may be queued again.
        q.insert(key("svc"));
        assert_eq!(q.pop(), Some(key("svc")));
    }

    #[test]
    fn timers_give_due_keys_earliest_first_and_a_new_time_replaces_the_old() {
        let t0 = SystemTime::UNIX_EPOCH;
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut t = Timers::default();
        assert_eq!(t.next(), None);
        t.insert(key("b"), at(30));
        t.insert(key("a"), at(10));
        t.insert(key("c"), at(20));
        // Looked at sooner, then later: the last time asked for counts.
        t.insert(key("c"), at(5));
        t.insert(key("a"), at(40));
        assert_eq!(t.next(), Some(at(5)));
        assert_eq!(t.pop_due(at(4)), None);
        assert_eq!(t.pop_due(at(30)), Some(key("c")));
        assert_eq!(t.pop_due(at(30)), Some(key("b")));
        assert_eq!(t.pop_due(at(30)), None, "a moved to 40");
        assert_eq!(t.next(), Some(at(40)));
        assert_eq!(t.pop_due(at(40)), Some(key("a")));
        assert_eq!(t.next(), None);
        assert!(t.at.is_empty());
    }
}
