//! Events: what the reconcilers did, for `kubectl describe` and `kubectl
//! get events`. A repeat of the same event (same object, reason and
//! message) counts up on one Event, as the Kubernetes event correlator
//! does; [`prune`] removes those older than the time to live.

use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::{Metadata, Resource};

use crate::control::kinds;
use crate::control::objects::{kube_time, DeleteOptions, ObjectError, Objects};

/// How long an event is kept after it last happened (the API server's default).
pub const EVENT_TTL: Duration = Duration::from_secs(3600);

/// A reference to `obj` for an event.
pub fn reference<K: Resource + Metadata<Ty = ObjectMeta>>(obj: &K) -> ObjectReference {
    let m = obj.metadata();
    ObjectReference {
        api_version: Some(K::API_VERSION.into()),
        kind: Some(K::KIND.into()),
        name: m.name.clone(),
        namespace: m.namespace.clone(),
        uid: m.uid.clone(),
        resource_version: m.resource_version.clone(),
        ..Default::default()
    }
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// Records an event about `involved` (`Normal` or `Warning`), from
/// `component`, at `now`. The write is deferred (see [`Objects::defer`]):
/// as the kubelet's event recorder does, the action it reports does not
/// wait for it. Failures are logged, never returned: an event is never
/// worth failing the action it reports.
pub fn record(
    objects: &Objects,
    involved: ObjectReference,
    warning: bool,
    reason: &str,
    message: String,
    component: &str,
    now: SystemTime,
) {
    let (reason, component) = (reason.to_string(), component.to_string());
    objects.defer(move |objects| {
        // A repeat written by another thread in between (the deferred
        // writer's queue was full) makes the count update conflict: read
        // it again.
        for _ in 0..3 {
            match write(
                objects, &involved, warning, &reason, &message, &component, now,
            ) {
                Err(ObjectError::Conflict { .. } | ObjectError::AlreadyExists { .. }) => continue,
                Err(e) => tracing::debug!(reason, "cannot record an event: {e}"),
                Ok(()) => {}
            }
            return;
        }
    });
}

/// Writes an event, or counts a repeat of it up.
fn write(
    objects: &Objects,
    involved: &ObjectReference,
    warning: bool,
    reason: &str,
    message: &str,
    component: &str,
    now: SystemTime,
) -> Result<(), ObjectError> {
    let ns = involved
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let obj_name = involved.name.clone().unwrap_or_default();
    let key = format!(
        "{}/{reason}/{message}",
        involved.uid.clone().unwrap_or_default()
    );
    let name = format!("{obj_name}.{:016x}", fnv(&key));
    match objects.get_as::<Event>(Some(&ns), &name) {
        Ok(mut e) => {
            e.count = Some(e.count.unwrap_or(1) + 1);
            e.last_timestamp = Some(kube_time(now));
            objects.update_as(&e, None).map(|_| ())
        }
        Err(ObjectError::NotFound { .. }) => {
            let e = Event {
                metadata: ObjectMeta {
                    name: Some(name),
                    namespace: Some(ns.clone()),
                    ..Default::default()
                },
                involved_object: involved.clone(),
                reason: Some(reason.into()),
                message: Some(message.into()),
                type_: Some(if warning { "Warning" } else { "Normal" }.into()),
                source: Some(EventSource {
                    component: Some(component.into()),
                    host: None,
                }),
                reporting_component: Some(component.into()),
                first_timestamp: Some(kube_time(now)),
                last_timestamp: Some(kube_time(now)),
                count: Some(1),
                ..Default::default()
            };
            objects.create_as(Some(&ns), &e, now).map(|_| ())
        }
        Err(e) => Err(e),
    }
}

/// What [`prune`] reads of an event.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventTimes {
    #[serde(default)]
    metadata: ObjectMeta,
    first_timestamp: Option<Time>,
    last_timestamp: Option<Time>,
}

/// Deletes events last seen more than `ttl` before `now`. Reads only the
/// events' names and times: a node keeps thousands of events.
pub fn prune(objects: &Objects, now: SystemTime, ttl: Duration) {
    let cutoff = now.checked_sub(ttl).unwrap_or(SystemTime::UNIX_EPOCH);
    let cutoff_s = cutoff
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    for e in objects.scan::<EventTimes>(kinds::of::<Event>(), None) {
        let last = e
            .last_timestamp
            .as_ref()
            .or(e.first_timestamp.as_ref())
            .map_or(0, |t| t.0.as_second());
        if last < cutoff_s {
            let _ = objects.delete(
                kinds::of::<Event>(),
                e.metadata.namespace.as_deref(),
                e.metadata.name.as_deref().unwrap_or(""),
                DeleteOptions::default(),
                now,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::store::MemStore;
    use std::sync::Arc;

    #[test]
    fn prune_deletes_only_the_events_last_seen_before_the_ttl() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let objects = Objects::new(Arc::new(MemStore::new()), t0).unwrap();
        let pod = |name: &str| ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        };
        record(
            &objects,
            pod("old"),
            false,
            "Started",
            "started".into(),
            "kubelet",
            t0,
        );
        let later = t0 + Duration::from_secs(7200);
        record(
            &objects,
            pod("new"),
            true,
            "BackOff",
            "backing off".into(),
            "kubelet",
            later,
        );
        let names = || {
            let mut n: Vec<String> = objects
                .list_as::<Event>(None, &Default::default())
                .into_iter()
                .filter_map(|e| e.involved_object.name)
                .collect();
            n.sort();
            n
        };
        assert_eq!(names(), ["new", "old"]);
        prune(&objects, later + Duration::from_secs(60), EVENT_TTL);
        assert_eq!(
            names(),
            ["new"],
            "the event seen two hours ago went, not the recent one"
        );
    }
}
