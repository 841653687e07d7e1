//! The object store's API-server rules, in memory.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service};
use serde_json::{json, Value};

use super::*;
use crate::control::store::MemStore;

fn objects() -> Objects {
    Objects::new(Arc::new(MemStore::new()), SystemTime::now()).unwrap()
}

fn strict() -> WriteOptions {
    WriteOptions {
        field_validation: FieldValidation::Strict,
        ..Default::default()
    }
}

fn pod(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "labels": labels},
           "spec": {"nodeName": "node", "containers": [{"name": "c", "image": "python", "command": ["sleep", "1000"]}]}})
}

fn svc(name: &str, port: i64) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
           "spec": {"selector": {"app": "web"}, "ports": [{"port": port}]}})
}

#[test]
fn create_fills_metadata_and_defaults() {
    let o = objects();
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let p = o
        .create(
            kinds::of::<Pod>(),
            Some("default"),
            pod("web", json!({"app": "web"})),
            strict(),
            now,
        )
        .unwrap();
    assert_eq!(p["metadata"]["namespace"], "default");
    assert_eq!(p["metadata"]["uid"].as_str().unwrap().len(), 36);
    assert_eq!(p["metadata"]["creationTimestamp"], "2027-01-15T08:00:00Z");
    assert_eq!(p["metadata"]["generation"], 1);
    assert!(p["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse::<u64>()
        .is_ok());
    assert_eq!(p["spec"]["restartPolicy"], "Always");
    assert_eq!(p["spec"]["terminationGracePeriodSeconds"], 30);
    let s = o
        .create(
            kinds::of::<Service>(),
            Some("default"),
            svc("web", 80),
            strict(),
            now,
        )
        .unwrap();
    assert_eq!(s["spec"]["ports"][0]["targetPort"], 80);
    assert_eq!(s["spec"]["ports"][0]["protocol"], "TCP");
    // generateName
    let mut g = pod("", json!({}));
    g["metadata"]["generateName"] = "web-".into();
    let g = o
        .create(kinds::of::<Pod>(), Some("default"), g, strict(), now)
        .unwrap();
    assert!(g["metadata"]["name"].as_str().unwrap().starts_with("web-"));
    assert_eq!(g["metadata"]["name"].as_str().unwrap().len(), 9);
}

#[test]
fn bad_objects_are_refused_and_change_nothing() {
    let o = objects();
    let now = SystemTime::now();
    let before = o.kv().revision();
    let e = o
        .create(
            kinds::of::<Service>(),
            Some("default"),
            svc("web", 70000),
            strict(),
            now,
        )
        .unwrap_err();
    assert_eq!(e.code(), 422);
    assert!(
        e.to_string()
            .contains("spec.ports[0].port: Invalid value: 70000"),
        "{e}"
    );
    let e = o
        .create(
            kinds::of::<Service>(),
            Some("default"),
            svc("Web_1", 80),
            strict(),
            now,
        )
        .unwrap_err();
    assert_eq!(e.code(), 422);
    assert!(e.to_string().contains("metadata.name"), "{e}");
    let mut unknown = svc("web", 80);
    unknown["spec"]["portz"] = json!([1]);
    let e = o
        .create(
            kinds::of::<Service>(),
            Some("default"),
            unknown.clone(),
            strict(),
            now,
        )
        .unwrap_err();
    assert_eq!(e.code(), 400);
    assert!(
        e.to_string().contains("unknown field \"spec.portz\""),
        "{e}"
    );
    // Without strict validation the unknown field is dropped.
    let ok = o
        .create(
            kinds::of::<Service>(),
            Some("default"),
            unknown,
            WriteOptions::default(),
            now,
        )
        .unwrap();
    assert!(ok["spec"].get("portz").is_none());
    o.remove(
        kinds::of::<Service>(),
        Some("default"),
        "web",
        None,
        Propagation::Background,
    )
    .unwrap();
    let e = o
        .create(
            kinds::of::<Pod>(),
            Some("nope"),
            pod("p", json!({})),
            strict(),
            now,
        )
        .unwrap_err();
    assert_eq!(e.code(), 404);
    let mut wrong = pod("p", json!({}));
    wrong["kind"] = "Service".into();
    assert_eq!(
        o.create(kinds::of::<Pod>(), Some("default"), wrong, strict(), now)
            .unwrap_err()
            .code(),
        400
    );
    let mut bad_label = pod("p", json!({"bad key": "v"}));
    bad_label["metadata"]["labels"] = json!({"bad key": "v"});
    assert_eq!(
        o.create(
            kinds::of::<Pod>(),
            Some("default"),
            bad_label,
            strict(),
            now
        )
        .unwrap_err()
        .code(),
        422
    );
    assert_eq!(
        o.kv().revision(),
        before + 2,
        "only the create and the remove of the lenient service wrote"
    );
    let e = o.create(
        kinds::of::<Pod>(),
        Some("default"),
        pod("p", json!({})),
        WriteOptions {
            dry_run: true,
            ..strict()
        },
        now,
    );
    assert!(e.is_ok());
    assert!(
        o.get(kinds::of::<Pod>(), Some("default"), "p").is_err(),
        "dry run wrote nothing"
    );
}

#[test]
fn update_is_compare_and_swap_on_resource_version() {
    let o = objects();
    let now = SystemTime::now();
    let k = kinds::of::<ConfigMap>();
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}});
    let created = o.create(k, Some("default"), cm, strict(), now).unwrap();
    let mut v1 = created.clone();
    v1["data"]["a"] = "2".into();
    let updated = o
        .update(k, Some("default"), "c", v1.clone(), None, strict())
        .unwrap();
    assert_eq!(updated["data"]["a"], "2");
    assert_eq!(updated["metadata"]["uid"], created["metadata"]["uid"]);
    // The same stale resourceVersion again: 409, nothing changed.
    v1["data"]["a"] = "3".into();
    let e = o
        .update(k, Some("default"), "c", v1, None, strict())
        .unwrap_err();
    assert_eq!(e.code(), 409);
    assert_eq!(o.get(k, Some("default"), "c").unwrap()["data"]["a"], "2");
    // Already exists.
    let again = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
    assert_eq!(
        o.create(k, Some("default"), again, strict(), now)
            .unwrap_err()
            .code(),
        409
    );
}

#[test]
fn status_and_spec_are_written_apart_and_generation_follows_spec() {
    let o = objects();
    let now = SystemTime::now();
    let k = kinds::of::<Deployment>();
    let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}},
        "status": {"replicas": 99}});
    let created = o.create(k, Some("default"), d, strict(), now).unwrap();
    assert!(
        created.get("status").is_none(),
        "status from a create is dropped"
    );
    let mut with_status = created.clone();
    with_status["status"] = json!({"replicas": 2});
    with_status["spec"]["replicas"] = 5.into();
    let s = o
        .update(
            k,
            Some("default"),
            "web",
            with_status,
            Some("status"),
            strict(),
        )
        .unwrap();
    assert_eq!(s["status"]["replicas"], 2);
    assert_eq!(s["spec"]["replicas"], 2, "/status does not change the spec");
    assert_eq!(s["metadata"]["generation"], 1);
    let mut scaled = s.clone();
    scaled["spec"]["replicas"] = 5.into();
    scaled["status"] = json!({"replicas": 0});
    let u = o
        .update(k, Some("default"), "web", scaled, None, strict())
        .unwrap();
    assert_eq!(u["spec"]["replicas"], 5);
    assert_eq!(
        u["status"]["replicas"], 2,
        "the main resource does not change status"
    );
    assert_eq!(u["metadata"]["generation"], 2);
    // Selector not matching the template: 422.
    let mut bad = u.clone();
    bad["spec"]["template"]["metadata"]["labels"]["app"] = "other".into();
    assert_eq!(
        o.update(k, Some("default"), "web", bad, None, strict())
            .unwrap_err()
            .code(),
        422
    );
}

fn owned_by(mut obj: Value, owner: &Value) -> Value {
    obj["metadata"]["ownerReferences"] = json!([{
        "apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true}]);
    obj
}

fn rs(name: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}})
}

#[test]
fn deleting_an_owner_collects_its_dependents() {
    let o = objects();
    let now = SystemTime::now();
    let (rk, pk) = (kinds::of::<ReplicaSet>(), kinds::of::<Pod>());
    for (policy, rs_name) in [
        (Propagation::Background, "bg"),
        (Propagation::Orphan, "orphan"),
        (Propagation::Foreground, "fg"),
    ] {
        let owner = o
            .create(rk, Some("default"), rs(rs_name), strict(), now)
            .unwrap();
        let mut p = owned_by(pod(&format!("{rs_name}-p"), json!({"app": "web"})), &owner);
        // A finished pod goes at once, without a grace period.
        p["spec"]["nodeName"] = "".into();
        o.create(pk, Some("default"), p, strict(), now).unwrap();
        let opts = DeleteOptions {
            propagation: policy,
            ..Default::default()
        };
        let answer = o.delete(rk, Some("default"), rs_name, opts, now).unwrap();
        let pod_left = o.get(pk, Some("default"), &format!("{rs_name}-p"));
        match policy {
            Propagation::Background => {
                assert!(o.get(rk, Some("default"), rs_name).is_err());
                assert!(pod_left.is_err(), "dependent removed");
            }
            Propagation::Orphan => {
                let p = pod_left.unwrap();
                assert!(
                    p["metadata"]["ownerReferences"]
                        .as_array()
                        .unwrap()
                        .is_empty(),
                    "freed of its owner"
                );
            }
            Propagation::Foreground => {
                assert!(answer["metadata"]["deletionTimestamp"].is_string());
                assert!(
                    o.get(rk, Some("default"), rs_name).is_ok(),
                    "owner waits for its dependents"
                );
                // The dependent is gone by now (removed at once); the next
                // collector pass finishes the owner.
                o.collect_dependents(&answer, Propagation::Background);
                o.finish_foreground_deletions(false);
                assert!(o.get(rk, Some("default"), rs_name).is_err());
            }
        }
    }
}

#[test]
fn a_running_pod_terminates_gracefully() {
    let o = objects();
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let pk = kinds::of::<Pod>();
    o.create(pk, Some("default"), pod("p", json!({})), strict(), now)
        .unwrap();
    let d = o
        .delete(pk, Some("default"), "p", DeleteOptions::default(), now)
        .unwrap();
    assert_eq!(d["metadata"]["deletionGracePeriodSeconds"], 30);
    assert_eq!(d["metadata"]["deletionTimestamp"], "2027-01-15T08:00:30Z");
    assert!(
        o.get(pk, Some("default"), "p").is_ok(),
        "kept until its process stopped"
    );
    let forced = DeleteOptions {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    o.delete(pk, Some("default"), "p", forced, now).unwrap();
    assert!(o.get(pk, Some("default"), "p").is_err());
}

#[test]
fn a_collection_deletion_takes_what_the_selector_matches_as_single_deletions_do() {
    let o = objects();
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let pk = kinds::of::<Pod>();
    for (name, app) in [("web-1", "web"), ("web-2", "web"), ("db", "db")] {
        o.create(
            pk,
            Some("default"),
            pod(name, json!({"app": app})),
            strict(),
            now,
        )
        .unwrap();
    }
    // Not scheduled: nothing runs, so it goes at once.
    let mut idle = pod("web-idle", json!({"app": "web"}));
    idle["spec"].as_object_mut().unwrap().remove("nodeName");
    o.create(pk, Some("default"), idle, strict(), now).unwrap();
    let before = o.kv().revision();
    let web = LabelSelector::parse("app=web").unwrap();
    let delete_web = || {
        let mut deleted = Vec::new();
        let listed_at = o
            .delete_collection(
                pk,
                Some("default"),
                &web,
                &FieldSelector::default(),
                DeleteOptions::default(),
                now,
                |d| deleted.push(d),
            )
            .unwrap();
        (deleted, listed_at)
    };
    let (deleted, listed_at) = delete_web();
    assert_eq!(listed_at, before);
    let mut names: Vec<&str> = deleted
        .iter()
        .map(|d| d["metadata"]["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["web-1", "web-2", "web-idle"]);
    for d in &deleted {
        let name = d["metadata"]["name"].as_str().unwrap();
        match o.get(pk, Some("default"), name) {
            // A running pod terminates: what was answered is what is stored.
            Ok(stored) => {
                assert_eq!(&stored, d, "{name}");
                assert_eq!(d["metadata"]["deletionGracePeriodSeconds"], 30);
            }
            Err(ObjectError::NotFound { .. }) => assert_eq!(name, "web-idle"),
            Err(e) => panic!("{name}: {e}"),
        }
    }
    let db = o.get(pk, Some("default"), "db").unwrap();
    assert!(db.pointer("/metadata/deletionTimestamp").is_none());
    // Again: already terminating pods are answered as they are, unchanged.
    let (again, _) = delete_web();
    assert_eq!(again.len(), 2);
    assert_eq!(o.kv().revision(), before + 3, "nothing written again");
}

#[test]
fn list_and_watch_by_namespace_and_selector() {
    let o = objects();
    let now = SystemTime::now();
    let pk = kinds::of::<Pod>();
    o.create(
        kinds::of::<Namespace>(),
        None,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}),
        strict(),
        now,
    )
    .unwrap();
    let start = o.kv().revision();
    let mut w = o.watch(pk, Some("team"), start).unwrap();
    o.create(
        pk,
        Some("default"),
        pod("a", json!({"app": "web"})),
        strict(),
        now,
    )
    .unwrap();
    o.create(
        pk,
        Some("team"),
        pod("b", json!({"app": "web"})),
        strict(),
        now,
    )
    .unwrap();
    o.create(
        pk,
        Some("team"),
        pod("c", json!({"app": "db"})),
        strict(),
        now,
    )
    .unwrap();
    let web = LabelSelector::parse("app=web").unwrap();
    let all = FieldSelector::default();
    assert_eq!(o.list(pk, None, &web, &all).0.len(), 2);
    assert_eq!(
        o.list(pk, Some("team"), &LabelSelector::default(), &all)
            .0
            .len(),
        2
    );
    let named = FieldSelector::parse("metadata.name=c", &[]).unwrap();
    assert_eq!(
        o.list(pk, None, &LabelSelector::default(), &named).0.len(),
        1
    );
    let e = w.try_recv().unwrap();
    assert_eq!(Objects::event_object(&e)["metadata"]["name"], "b");
    assert_eq!(
        Objects::event_object(&w.try_recv().unwrap())["metadata"]["name"],
        "c"
    );
    assert!(w.try_recv().is_err());
    // Deleting the namespace: Terminating, its running pods terminate
    // gracefully, and it goes once they are gone.
    let t = o
        .delete(
            kinds::of::<Namespace>(),
            None,
            "team",
            DeleteOptions::default(),
            now,
        )
        .unwrap();
    assert_eq!(t["status"]["phase"], "Terminating");
    let p = pod("late", json!({}));
    assert_eq!(
        o.create(pk, Some("team"), p, strict(), now)
            .unwrap_err()
            .code(),
        403,
        "nothing new in a terminating namespace"
    );
    let left = o.list(pk, Some("team"), &LabelSelector::default(), &all).0;
    assert_eq!(left.len(), 2);
    assert!(left
        .iter()
        .all(|p| p["metadata"]["deletionTimestamp"].is_string()));
    for p in left {
        let force = DeleteOptions {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        o.delete(
            pk,
            Some("team"),
            p["metadata"]["name"].as_str().unwrap(),
            force,
            now,
        )
        .unwrap();
    }
    assert!(
        o.get(kinds::of::<Namespace>(), None, "team").is_ok(),
        "removed by the next pass"
    );
    o.finish_namespace_deletions(now);
    assert!(o.get(kinds::of::<Namespace>(), None, "team").is_err());
    assert_eq!(o.list(pk, None, &LabelSelector::default(), &all).0.len(), 1);
    assert_eq!(
        o.delete(
            kinds::of::<Namespace>(),
            None,
            "default",
            DeleteOptions::default(),
            now
        )
        .unwrap_err()
        .code(),
        403
    );
}

#[test]
fn secrets_fold_string_data_and_typed_helpers_round_trip() {
    let o = objects();
    let now = SystemTime::now();
    let s = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"pw": "hunter2"}});
    let stored = o
        .create(kinds::of::<Secret>(), Some("default"), s, strict(), now)
        .unwrap();
    assert_eq!(stored["data"]["pw"], "aHVudGVyMg==");
    assert_eq!(stored["type"], "Opaque");
    let typed: Secret = o.get_as(Some("default"), "s").unwrap();
    assert_eq!(typed.data.unwrap()["pw"].0, b"hunter2");
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some("c".into());
    let created = o.create_as(Some("default"), &cm, now).unwrap();
    let mut changed = created.clone();
    changed.data = Some([("k".to_string(), "v".to_string())].into());
    o.update_as(&changed, None).unwrap();
    // The stale copy loses.
    assert_eq!(o.update_as(&changed, None).unwrap_err().code(), 409);
    assert_eq!(
        o.list_as::<ConfigMap>(Some("default"), &LabelSelector::default())
            .len(),
        1
    );
}

#[test]
fn dependents_are_found_after_more_writes_than_a_watch_queues() {
    let o = objects();
    let now = SystemTime::now();
    let (rk, ck) = (kinds::of::<ReplicaSet>(), kinds::of::<ConfigMap>());
    let owner = o
        .create(rk, Some("default"), rs("owner"), strict(), now)
        .unwrap();
    // The index is made at the first lookup; then more writes than a watch
    // queues (it is cut off and made again), and dependents among them,
    // in this namespace and in another (not the owner's: left alone).
    let other = o
        .create(rk, Some("default"), rs("other"), strict(), now)
        .unwrap();
    o.delete(rk, Some("default"), "other", DeleteOptions::default(), now)
        .unwrap();
    let _ = other;
    o.create(
        kinds::of::<Namespace>(),
        None,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "elsewhere"}}),
        strict(),
        now,
    )
    .unwrap();
    let n = crate::control::store::engine::WATCH_QUEUE + 100;
    for i in 0..n {
        let cm =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("c{i}")}});
        let cm = if i % 1000 == 7 {
            owned_by(cm, &owner)
        } else {
            cm
        };
        o.create(ck, Some("default"), cm, strict(), now).unwrap();
    }
    let stranger = owned_by(
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}}),
        &owner,
    );
    o.create(ck, Some("elsewhere"), stranger, strict(), now)
        .unwrap();
    o.delete(rk, Some("default"), "owner", DeleteOptions::default(), now)
        .unwrap();
    let left: Vec<String> = o
        .list(
            ck,
            Some("default"),
            &LabelSelector::default(),
            &FieldSelector::default(),
        )
        .0
        .iter()
        .map(|c| c["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        left.len(),
        n - n.div_ceil(1000),
        "every dependent collected, nothing else"
    );
    assert!(
        !left.iter().any(|c| c.ends_with("007") || c == "c7"),
        "{left:?}"
    );
    assert!(
        o.get(ck, Some("elsewhere"), "s").is_ok(),
        "another namespace's object is not a dependent"
    );
}

/// A foreground deletion started by another process (a daemon before a
/// restart) is finished by a full pass; the quick pass looks only at the
/// deletions this process started.
#[test]
fn a_foreground_deletion_from_before_a_restart_is_finished_by_a_full_pass() {
    let store: Arc<dyn KvStore> = Arc::new(MemStore::new());
    let now = SystemTime::now();
    let (rk, pk) = (kinds::of::<ReplicaSet>(), kinds::of::<Pod>());
    let before = Objects::new(store.clone(), now).unwrap();
    let owner = before
        .create(rk, Some("default"), rs("fg"), strict(), now)
        .unwrap();
    let mut p = owned_by(pod("fg-p", json!({"app": "web"})), &owner);
    p["spec"]["nodeName"] = "".into();
    before
        .create(pk, Some("default"), p, strict(), now)
        .unwrap();
    let opts = DeleteOptions {
        propagation: Propagation::Foreground,
        ..Default::default()
    };
    let answer = before.delete(rk, Some("default"), "fg", opts, now).unwrap();
    before.collect_dependents(&answer, Propagation::Background);
    assert!(before.get(pk, Some("default"), "fg-p").is_err());

    let after = Objects::new(store, now).unwrap();
    after.finish_foreground_deletions(false);
    assert!(
        after.get(rk, Some("default"), "fg").is_ok(),
        "the quick pass knows nothing of it"
    );
    after.finish_foreground_deletions(true);
    assert!(after.get(rk, Some("default"), "fg").is_err());
}
