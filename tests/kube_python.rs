//! The Python `kubernetes` client against the API server, in-process over
//! a durable store: create, list with selectors, watch from a
//! resourceVersion, resume after a disconnect, 410 past the history,
//! strategic and merge patches, delete, strict field validation, and no
//! credentials. Each script prints one JSON document; the assertions are
//! here.

mod kube_support;

use kube_support::KubeServer;
use serde_json::{json, Value};

const PRELUDE: &str = r#"
import json, threading, time
from kubernetes import client, config, dynamic, watch
from kubernetes.client.rest import ApiException
config.load_kube_config()
v1 = client.CoreV1Api()
apps = client.AppsV1Api()
ns = "default"
out = {}
def event(e):
    o = e["raw_object"]
    return [e["type"], o["metadata"]["name"], (o.get("data") or {}).get("k")]
"#;

fn script(body: &str) -> String {
    format!("{PRELUDE}\n{body}\nprint(json.dumps(out))\n")
}

#[test]
fn python_create_list_watch_patch_delete() {
    let s = KubeServer::start();
    let out = s.python_json(&script(
        r#"
# Models without apiVersion and kind, as most Python code builds them.
c = v1.create_namespaced_config_map(ns, client.V1ConfigMap(
    metadata=client.V1ObjectMeta(name="py-cm", labels={"app": "py"}), data={"k": "v1"}))
out["created"] = [c.metadata.name, c.metadata.uid, c.metadata.resource_version, c.kind]
v1.create_namespaced_config_map(ns, client.V1ConfigMap(
    metadata=client.V1ObjectMeta(name="py-other", labels={"app": "other"}), data={"k": "o"}))
d = apps.create_namespaced_deployment(ns, {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "py-web", "labels": {"app": "py"}},
    "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "py"}},
             "template": {"metadata": {"labels": {"app": "py"}},
                          "spec": {"containers": [{"name": "web", "image": "python:3",
                                                   "command": ["python3", "-m", "http.server"],
                                                   "env": [{"name": "A", "value": "1"}]}]}}}})
out["deploy"] = [d.metadata.name, d.spec.replicas, d.spec.strategy.type]
lst = v1.list_namespaced_config_map(ns, label_selector="app=py")
out["selected"] = sorted(i.metadata.name for i in lst.items)
out["not_other"] = sorted(i.metadata.name for i in v1.list_namespaced_config_map(ns, label_selector="app!=other").items)
out["selected_deploys"] = sorted(i.metadata.name for i in apps.list_namespaced_deployment(ns, label_selector="app in (py)").items)
start = lst.metadata.resource_version
# Changes after the list: two to py-cm, one to py-other (not selected), a delete.
p1 = v1.patch_namespaced_config_map("py-cm", ns, {"data": {"k": "v2"}},
    _content_type="application/strategic-merge-patch+json")
p2 = v1.patch_namespaced_config_map("py-cm", ns, {"metadata": {"labels": {"x": "y"}}, "data": {"k": "v3"}},
    _content_type="application/merge-patch+json")
out["patched"] = [p1.data, p2.data, p2.metadata.labels, p1.metadata.uid]
# A strategic merge patch merges a list keyed by name: env keeps A and gains B.
pd = apps.patch_namespaced_deployment("py-web", ns,
    {"spec": {"template": {"spec": {"containers": [{"name": "web", "env": [{"name": "B", "value": "2"}]}]}}}},
    _content_type="application/strategic-merge-patch+json")
out["env"] = sorted([e.name, e.value] for e in pd.spec.template.spec.containers[0].env)
out["generation"] = pd.metadata.generation
# A merge patch replaces the list.
pm = apps.patch_namespaced_deployment("py-web", ns,
    {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "python:3.12", "env": [{"name": "C", "value": "3"}]}]}}}},
    _content_type="application/merge-patch+json")
out["merge_env"] = [[e.name, e.value] for e in pm.spec.template.spec.containers[0].env]
v1.patch_namespaced_config_map("py-other", ns, {"data": {"k": "o2"}},
    _content_type="application/merge-patch+json")
# A ConfigMap deleted at once is answered with a Status naming it.
gone = v1.delete_namespaced_config_map("py-cm", ns)
out["delete_answer"] = [gone.get("kind"), gone.get("status"), (gone.get("details") or {}).get("name"),
                        (gone.get("details") or {}).get("kind"), (gone.get("details") or {}).get("uid")]
out["events"] = []
w = watch.Watch()
for e in w.stream(v1.list_namespaced_config_map, ns, label_selector="app=py",
                  resource_version=start, timeout_seconds=30):
    out["events"].append(event(e))
    if e["type"] == "DELETED":
        w.stop()
try:
    v1.read_namespaced_config_map("py-cm", ns)
    out["after_delete"] = 200
except ApiException as e:
    out["after_delete"] = e.status
apps.delete_namespaced_deployment("py-web", ns)
out["left"] = sorted(i.metadata.name for i in v1.list_namespaced_config_map(ns).items) + \
    sorted(i.metadata.name for i in apps.list_namespaced_deployment(ns).items)
"#,
    ));
    let created = &out["created"];
    assert_eq!(created[0], "py-cm", "{out}");
    assert_eq!(created[3], "ConfigMap", "{out}");
    assert!(created[1].as_str().is_some_and(|u| u.len() == 36), "{out}");
    assert_eq!(
        out["deploy"],
        json!(["py-web", 2, "RollingUpdate"]),
        "{out}"
    );
    assert_eq!(out["selected"], json!(["py-cm"]), "{out}");
    assert_eq!(out["not_other"], json!(["py-cm"]), "{out}");
    assert_eq!(out["selected_deploys"], json!(["py-web"]), "{out}");
    assert_eq!(
        out["patched"],
        json!([{"k": "v2"}, {"k": "v3"}, {"app": "py", "x": "y"}, created[1]]),
        "{out}"
    );
    assert_eq!(out["env"], json!([["A", "1"], ["B", "2"]]), "{out}");
    assert_eq!(out["generation"], 2, "{out}");
    assert_eq!(out["merge_env"], json!([["C", "3"]]), "{out}");
    // Exactly the selected object's changes after the list, in order.
    assert_eq!(
        out["events"],
        json!([
            ["MODIFIED", "py-cm", "v2"],
            ["MODIFIED", "py-cm", "v3"],
            ["DELETED", "py-cm", "v3"],
        ]),
        "{out}"
    );
    assert_eq!(
        out["delete_answer"],
        json!(["Status", "Success", "py-cm", "configmaps", created[1]]),
        "{out}"
    );
    assert_eq!(out["after_delete"], 404, "{out}");
    assert_eq!(out["left"], json!(["py-other"]), "{out}");
}

#[test]
fn python_watch_resumes_after_a_disconnect() {
    let s = KubeServer::start();
    let out = s.python_json(&script(
        r#"
N = 40
def patch(i):
    v1.patch_namespaced_config_map("counter", ns, {"data": {"k": str(i)}},
        _content_type="application/merge-patch+json")
c = v1.create_namespaced_config_map(ns, client.V1ConfigMap(
    metadata=client.V1ObjectMeta(name="counter", labels={"app": "resume"}), data={"k": "0"}))
rv = c.metadata.resource_version
# Ten changes before the first watch, ten more while no watch is open,
# the rest (and the delete) while the later watches come and go.
for i in range(1, 11):
    patch(i)
def writer():
    for i in range(21, N + 1):
        patch(i)
        time.sleep(0.02)
    v1.delete_namespaced_config_map("counter", ns)
seen, sessions, resumed_from = [], 0, []
deadline = time.time() + 120
done = False
while not done and time.time() < deadline:
    sessions += 1
    resumed_from.append(rv)
    w = watch.Watch()
    for e in w.stream(v1.list_namespaced_config_map, ns, label_selector="app=resume",
                      resource_version=rv, timeout_seconds=1):
        seen.append(event(e)[0:1] + event(e)[2:])
        if e["type"] == "DELETED":
            done = True
            w.stop()
    # The client's own record of the last revision it saw.
    rv = w.resource_version
    if sessions == 1:
        for i in range(11, 21):
            patch(i)
        t = threading.Thread(target=writer)
        t.start()
t.join()
out["seen"] = seen
out["sessions"] = sessions
"#,
    ));
    let mut want: Vec<Value> = (1..=40)
        .map(|i| json!(["MODIFIED", i.to_string()]))
        .collect();
    want.push(json!(["DELETED", "40"]));
    assert_eq!(out["seen"], Value::Array(want), "{out}");
    assert!(out["sessions"].as_u64().unwrap() >= 2, "{out}");
}

#[test]
fn python_watch_from_an_expired_revision_gets_410() {
    // A history of five events: twenty changes push the first out.
    let s = KubeServer::start_with_history(5);
    let out = s.python_json(&script(
        r#"
c = v1.create_namespaced_config_map(ns, client.V1ConfigMap(
    metadata=client.V1ObjectMeta(name="old"), data={"k": "0"}))
old = c.metadata.resource_version
for i in range(1, 21):
    v1.patch_namespaced_config_map("old", ns, {"data": {"k": str(i)}},
        _content_type="application/merge-patch+json")
try:
    got = [event(e) for e in watch.Watch().stream(v1.list_namespaced_config_map, ns,
                                                  resource_version=old, timeout_seconds=5)]
    out["expired"] = ["no error", got]
except ApiException as e:
    out["expired"] = [e.status, str(e.reason)]
# A revision the store has not reached (a client resuming against a store
# started afresh): 504 ResourceVersionTooLarge at once, and the client lists.
ahead = str(int(v1.list_namespaced_config_map(ns).metadata.resource_version) + 1000)
try:
    got = [event(e) for e in watch.Watch().stream(v1.list_namespaced_config_map, ns,
                                                  resource_version=ahead, timeout_seconds=5)]
    out["ahead"] = ["no error", got]
except ApiException as e:
    body = json.loads(e.body)
    out["ahead"] = [e.status, body["reason"], [c["reason"] for c in body["details"]["causes"]]]
# Listing again gives a revision to watch from.
lst = v1.list_namespaced_config_map(ns)
v1.patch_namespaced_config_map("old", ns, {"data": {"k": "after"}},
    _content_type="application/merge-patch+json")
w = watch.Watch()
out["relisted"] = []
for e in w.stream(v1.list_namespaced_config_map, ns, resource_version=lst.metadata.resource_version,
                  timeout_seconds=30):
    out["relisted"].append(event(e))
    w.stop()
"#,
    ));
    assert_eq!(out["expired"][0], 410, "{out}");
    assert!(
        out["expired"][1].as_str().unwrap().contains("Expired"),
        "{out}"
    );
    assert_eq!(
        out["ahead"],
        json!([504, "Timeout", ["ResourceVersionTooLarge"]]),
        "{out}"
    );
    assert_eq!(
        out["relisted"],
        json!([["MODIFIED", "old", "after"]]),
        "{out}"
    );
}

#[test]
fn python_strict_field_validation_and_no_credentials() {
    let s = KubeServer::start();
    let out = s.python_json(&script(
        r#"
# The typed models refuse unknown fields themselves; the dynamic client
# sends the body as written.
dyn = dynamic.DynamicClient(client.ApiClient())
cms = dyn.resources.get(api_version="v1", kind="ConfigMap")
body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "strict"}, "datta": {"a": "b"}}
try:
    cms.create(body=body, namespace=ns, query_params=[("fieldValidation", "Strict")])
    out["strict"] = [201, ""]
except ApiException as e:
    out["strict"] = [e.status, json.loads(e.body)]
out["after_strict"] = [i.metadata.name for i in cms.get(namespace=ns).items]
r = cms.create(body=body, namespace=ns, query_params=[("fieldValidation", "Ignore")])
out["ignored"] = [r.metadata.name, r.to_dict().get("datta")]
# No client certificate: 401 on reads and writes, nothing created.
anon = client.Configuration.get_default_copy()
anon.cert_file = None
anon.key_file = None
anon_v1 = client.CoreV1Api(client.ApiClient(anon))
try:
    anon_v1.list_namespaced_config_map(ns)
    out["anon_list"] = [200]
except ApiException as e:
    out["anon_list"] = [e.status, json.loads(e.body)]
try:
    anon_v1.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="anon")))
    out["anon_create"] = [201]
except ApiException as e:
    out["anon_create"] = [e.status]
out["names"] = sorted(i.metadata.name for i in v1.list_namespaced_config_map(ns).items)
"#,
    ));
    assert_eq!(out["strict"][0], 400, "{out}");
    assert_eq!(out["strict"][1]["kind"], "Status", "{out}");
    assert!(
        out["strict"][1]["message"]
            .as_str()
            .unwrap()
            .contains("unknown field \"datta\""),
        "{out}"
    );
    assert_eq!(out["after_strict"], json!([]), "{out}");
    assert_eq!(out["ignored"], json!(["strict", null]), "{out}");
    assert_eq!(out["anon_list"][0], 401, "{out}");
    assert_eq!(
        out["anon_list"][1],
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": "Unauthorized", "reason": "Unauthorized", "code": 401}),
        "{out}"
    );
    assert_eq!(out["anon_create"], json!([401]), "{out}");
    assert_eq!(out["names"], json!(["strict"]), "{out}");
}

#[test]
fn python_status_and_scale_subresources_and_initial_events() {
    let s = KubeServer::start();
    let out = s.python_json(&script(
        r#"
apps.create_namespaced_deployment(ns, {"metadata": {"name": "st", "labels": {"app": "st"}},
    "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "st"}},
             "template": {"metadata": {"labels": {"app": "st"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}})
# /status changes only the status; the main resource only the rest.
r = apps.patch_namespaced_deployment_status("st", ns, {"status": {"replicas": 5, "readyReplicas": 2}, "spec": {"replicas": 9}},
    _content_type="application/merge-patch+json")
out["status_patch"] = [r.status.replicas, r.status.ready_replicas, r.spec.replicas]
r = apps.patch_namespaced_deployment("st", ns, {"status": {"replicas": 7}, "spec": {"replicas": 3}},
    _content_type="application/merge-patch+json")
out["main_patch"] = [r.status.replicas, r.spec.replicas]
sc = apps.read_namespaced_deployment_scale("st", ns)
out["scale"] = [sc.spec.replicas, sc.status.replicas, sc.status.selector]
sc = apps.patch_namespaced_deployment_scale("st", ns, {"spec": {"replicas": 4}}, _content_type="application/merge-patch+json")
out["scale_patch"] = sc.spec.replicas
sc = apps.replace_namespaced_deployment_scale("st", ns, client.V1Scale(
    metadata=client.V1ObjectMeta(name="st"), spec=client.V1ScaleSpec(replicas=6)))
out["scale_replace"] = [sc.spec.replicas, apps.read_namespaced_deployment("st", ns).spec.replicas]
# A watch with initial events ends them with an annotated bookmark.
out["initial"] = []
w = watch.Watch()
for e in w.stream(apps.list_namespaced_deployment, ns, allow_watch_bookmarks=True, send_initial_events=True,
                  resource_version_match="NotOlderThan", timeout_seconds=30):
    meta = e["raw_object"]["metadata"]
    out["initial"].append([e["type"], meta.get("name"), meta.get("annotations")])
    if e["type"] == "BOOKMARK":
        w.stop()
"#,
    ));
    assert_eq!(out["status_patch"], json!([5, 2, 1]), "{out}");
    assert_eq!(out["main_patch"], json!([5, 3]), "{out}");
    assert_eq!(out["scale"], json!([3, 5, "app=st"]), "{out}");
    assert_eq!(out["scale_patch"], 4, "{out}");
    assert_eq!(out["scale_replace"], json!([6, 6]), "{out}");
    assert_eq!(
        out["initial"],
        json!([
            ["ADDED", "st", null],
            ["BOOKMARK", null, {"k8s.io/initial-events-end": "true"}]
        ]),
        "{out}"
    );
}

/// An object that stops matching a watch's selector leaves it as DELETED,
/// with its content as it last matched (as the API server's watch cache
/// sends it) at the revision of the change; coming back, it is ADDED.
#[test]
fn python_watch_with_a_selector_sees_objects_leave_and_return() {
    let s = KubeServer::start();
    let out = s.python_json(&script(
        r#"
c = v1.create_namespaced_config_map(ns, client.V1ConfigMap(
    metadata=client.V1ObjectMeta(name="moving", labels={"app": "sel"}), data={"k": "a"}))
left = v1.patch_namespaced_config_map("moving", ns, {"metadata": {"labels": {"app": "gone"}}, "data": {"k": "b"}},
    _content_type="application/merge-patch+json")
back = v1.patch_namespaced_config_map("moving", ns, {"metadata": {"labels": {"app": "sel"}}, "data": {"k": "c"}},
    _content_type="application/merge-patch+json")
out["rvs"] = [left.metadata.resource_version, back.metadata.resource_version]
out["events"] = []
w = watch.Watch()
for e in w.stream(v1.list_namespaced_config_map, ns, label_selector="app=sel",
                  resource_version=c.metadata.resource_version, timeout_seconds=30):
    o = e["raw_object"]
    out["events"].append([e["type"], o["metadata"]["labels"]["app"], o["data"]["k"], o["metadata"]["resourceVersion"]])
    if len(out["events"]) == 2:
        w.stop()
"#,
    ));
    let rvs = &out["rvs"];
    assert_eq!(
        out["events"],
        json!([
            ["DELETED", "sel", "a", rvs[0]],
            ["ADDED", "sel", "c", rvs[1]]
        ]),
        "{out}"
    );
}
