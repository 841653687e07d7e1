"""Kubernetes API figures of podnetd, with the Python client.

Run inside the node namespace with KUBECONFIG set (scripts/bench-api.sh does).
Prints one `name: value` line per figure.
Usage: api_bench.py NAMESPACE PODS LIST_OBJECTS
"""
import json
import statistics
import subprocess
import sys
import threading
import time

from kubernetes import client, config, watch

ns, n_pods, n_list = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
config.load_kube_config()
core = client.CoreV1Api()
apps = client.AppsV1Api()
api = client.ApiClient()


def pod(name, node=None, labels=None, cmd=("sleep", "100000")):
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "c", "image": "none", "command": list(cmd)}]},
    }


def ready(p):
    conds = (p.status and p.status.conditions) or []
    return bool(p.status and p.status.pod_ip) and any(c.type == "Ready" and c.status == "True" for c in conds)


# api.create_pod_ms: POST -> Running, ready, with an IP (seen through a watch).
times = []
for i in range(n_pods):
    name = f"p{i}"
    w = watch.Watch()
    t0 = time.perf_counter()
    created = core.create_namespaced_pod(ns, pod(name))
    for ev in w.stream(core.list_namespaced_pod, ns, field_selector=f"metadata.name={name}",
                       resource_version=created.metadata.resource_version, timeout_seconds=60):
        if ready(ev["object"]):
            times.append((time.perf_counter() - t0) * 1000)
            break
    w.stop()
print(f"api.create_pod_ms: {statistics.median(times):.2f}")
print(f"api.create_pod_ms_p90: {sorted(times)[int(len(times) * 0.9) - 1]:.2f}")
for i in range(n_pods):
    core.delete_namespaced_pod(f"p{i}", ns, grace_period_seconds=0)

# api.list_pods_ms at n_list pods (objects bound to another node, so that
# only the API's cost is measured), JSON and Table.
for i in range(n_list):
    core.create_namespaced_pod(ns, pod(f"l{i}", node="elsewhere"))
def timed_list(accept):
    ts = []
    for _ in range(20):
        t0 = time.perf_counter()
        method, url, headers, body, _ = api.param_serialize("GET", f"/api/v1/namespaces/{ns}/pods",
                                                            header_params={"Accept": accept})
        r = api.call_api(method, url, header_params=headers)
        r.read()
        ts.append((time.perf_counter() - t0) * 1000)
    return statistics.median(ts)
print(f"api.list_pods_ms: {timed_list('application/json'):.2f}")
print(f"api.list_pods_table_ms: {timed_list('application/json;as=Table;v=v1;g=meta.k8s.io'):.2f}")
print(f"api.list_pods_count: {n_list}")
core.delete_collection_namespaced_pod(ns, field_selector="spec.nodeName=elsewhere", grace_period_seconds=0)

# api.watch_latency_ms: a pod deleted -> a watcher sees its endpoint not ready.
apps.create_namespaced_deployment(ns, {
    "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "w"},
    "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "w"}},
             "template": {"metadata": {"labels": {"app": "w"}},
                          "spec": {"terminationGracePeriodSeconds": 5,
                                   "containers": [{"name": "c", "image": "none", "command": ["sleep", "100000"]}]}}}})
core.create_namespaced_service(ns, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "w"},
                                    "spec": {"selector": {"app": "w"}, "ports": [{"port": 80}]}})
subprocess.run(["kubectl", "rollout", "status", "-n", ns, "deployment/w", "--timeout=120s"], check=True,
               stdout=subprocess.DEVNULL)
def chosen_by_fast_path(ip):
    """Whether podnet's NAT table has `ip` as a ready backend of service w."""
    r = api.call_api("GET", api.configuration.host + "/podnet/v1/nat")
    r.read()
    return any(b["address"].rsplit(":", 1)[0] == ip and b["state"] == "ready"
               for rule in json.loads(r.data) if rule["service"] == f"{ns}/w"
               for b in rule["backends"])


def ready_victim():
    """A ready pod of w, not being deleted, and its address."""
    pods = [p for p in core.list_namespaced_pod(ns, label_selector="app=w").items
            if ready(p) and not p.metadata.deletion_timestamp]
    return pods[0].metadata.name, pods[0].status.pod_ip


def rolled_out():
    subprocess.run(["kubectl", "rollout", "status", "-n", ns, "deployment/w", "--timeout=120s"], check=True,
                   stdout=subprocess.DEVNULL)


lat = []
for _ in range(10):
    victim, _ = ready_victim()
    seen = threading.Event()
    disco = client.DiscoveryV1Api()
    rv = disco.list_namespaced_endpoint_slice(ns).metadata.resource_version
    def watcher():
        w = watch.Watch()
        for ev in w.stream(disco.list_namespaced_endpoint_slice, ns, resource_version=rv, timeout_seconds=30):
            for e in ev["object"].endpoints or []:
                if e.target_ref and e.target_ref.name == victim and not e.conditions.ready:
                    seen.set()
                    w.stop()
                    return
    t = threading.Thread(target=watcher)
    t.start()
    time.sleep(0.2)
    t0 = time.perf_counter()
    core.delete_namespaced_pod(victim, ns)
    seen.wait(30)
    lat.append((time.perf_counter() - t0) * 1000)
    t.join()
    rolled_out()
print(f"api.watch_latency_ms: {statistics.median(lat):.2f}")

# api.fast_path_latency_ms: the same deletion -> the NAT table no longer
# has the pod as a ready backend (timed apart from the watch, so that the
# polling does not slow the watcher down).
fast_path_lat = []
for _ in range(10):
    victim, victim_ip = ready_victim()
    while not chosen_by_fast_path(victim_ip):
        time.sleep(0.01)
    t0 = time.perf_counter()
    core.delete_namespaced_pod(victim, ns)
    # One GET of the NAT table takes about a millisecond.
    while chosen_by_fast_path(victim_ip):
        time.sleep(0.001)
    fast_path_lat.append((time.perf_counter() - t0) * 1000)
    rolled_out()
print(f"api.fast_path_latency_ms: {statistics.median(fast_path_lat):.2f}")

# api.apply_100_objects_s: kubectl apply of 100 ConfigMaps.
manifest = "".join(f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c{i}\ndata:\n  i: \"{i}\"\n---\n" for i in range(100))
t0 = time.perf_counter()
subprocess.run(["kubectl", "apply", "-n", ns, "-f", "-"], input=manifest.encode(), check=True, stdout=subprocess.DEVNULL)
print(f"api.apply_100_objects_s: {time.perf_counter() - t0:.2f}")

# exec.roundtrip_ms: `kubectl exec POD -- true` (kubectl's own start included),
# beside kubectl_get_ms, a `kubectl get pod` of the same pod: the part of a
# round trip that is kubectl's start, its credentials and a request.
def kubectl_ms(args):
    t0 = time.perf_counter()
    done = subprocess.run(["kubectl", "-n", ns] + args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if done.returncode != 0:
        sys.exit(f"api_bench: kubectl {' '.join(args)} exited {done.returncode}: {done.stderr.decode()}")
    return (time.perf_counter() - t0) * 1000


core.create_namespaced_pod(ns, pod("exec-bench"))
deadline = time.monotonic() + 120
while not ready(core.read_namespaced_pod("exec-bench", ns)):
    if time.monotonic() > deadline:
        sys.exit("api_bench: pod exec-bench not ready within 120 s")
    time.sleep(0.1)
print(f"exec.roundtrip_ms: {statistics.median([kubectl_ms(['exec', 'exec-bench', '--', 'true']) for _ in range(20)]):.2f}")
print(f"exec.kubectl_get_ms: {statistics.median([kubectl_ms(['get', 'pod', 'exec-bench']) for _ in range(20)]):.2f}")
