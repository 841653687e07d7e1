//! The EndpointSlices of each service, by name, for the readers that look
//! them up per service (the endpoints reconciler, the fast-path
//! publisher). Slices are found by their `kubernetes.io/service-name`
//! label; a lookup by label looks at every slice of the namespace, which
//! made each service's reconcile cost time in proportion to the services
//! that exist. The index follows the EndpointSlice events its owner sees
//! in `keys_for`, is made from one list on first use, and is dropped when
//! the owner is asked for its initial keys (a start, or a watch restarted
//! after a gap), so it is made again from what the store holds.

use std::collections::{BTreeSet, HashMap};

use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::Value;

use super::endpoints::SERVICE_NAME_LABEL;
use super::meta_str;
use crate::control::objects::{LabelSelector, ObjectError, Objects};
use crate::control::store::{Event, EventKind};

type Names = HashMap<(String, String), BTreeSet<String>>;

/// Slice names by (namespace, service).
#[derive(Default)]
pub struct SliceIndex {
    names: parking_lot::Mutex<Option<Names>>,
}

fn service_of(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/labels")
        .and_then(|l| l.get(SERVICE_NAME_LABEL))
        .and_then(Value::as_str)
}

impl SliceIndex {
    fn with<T>(&self, objects: &Objects, f: impl FnOnce(&mut Names) -> T) -> T {
        let mut guard = self.names.lock();
        let names = guard.get_or_insert_with(|| {
            let mut all = Names::new();
            for s in objects.list_as::<EndpointSlice>(None, &LabelSelector::default()) {
                let svc = s
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SERVICE_NAME_LABEL));
                if let (Some(svc), Some(name)) = (svc, s.metadata.name.clone()) {
                    let ns = s.metadata.namespace.clone().unwrap_or_default();
                    all.entry((ns, svc.clone())).or_default().insert(name);
                }
            }
            all
        });
        f(names)
    }

    /// Follows one store event (`obj` is its object, decoded).
    pub fn observe(&self, objects: &Objects, event: &Event, obj: &Value) {
        if self.names.lock().is_none() {
            // Made from the store on first use, which already holds this.
            return;
        }
        let ns = meta_str(obj, "namespace").to_string();
        let name = meta_str(obj, "name").to_string();
        let before =
            Objects::event_prev_value(event).and_then(|p| service_of(p).map(str::to_string));
        let now = match event.kind {
            EventKind::Put => service_of(obj).map(str::to_string),
            EventKind::Delete => None,
        };
        self.with(objects, |all| {
            if let Some(svc) = before {
                if let Some(set) = all.get_mut(&(ns.clone(), svc)) {
                    set.remove(&name);
                }
            }
            if let Some(svc) = now {
                all.entry((ns, svc)).or_default().insert(name);
            }
        });
    }

    /// The slices of service `ns/svc` that exist.
    pub fn slices(
        &self,
        objects: &Objects,
        ns: &str,
        svc: &str,
    ) -> Result<Vec<EndpointSlice>, ObjectError> {
        let names: Vec<String> = self.with(objects, |all| {
            all.get(&(ns.to_string(), svc.to_string()))
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default()
        });
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            match objects.get_as::<EndpointSlice>(Some(ns), &name) {
                // The label is checked again: a slice relabelled since.
                Ok(s)
                    if s.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(SERVICE_NAME_LABEL))
                        .map(String::as_str)
                        == Some(svc) =>
                {
                    out.push(s)
                }
                Ok(_) | Err(ObjectError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Forgets everything (made again from the store on next use).
    pub fn reset(&self) {
        *self.names.lock() = None;
    }
}
