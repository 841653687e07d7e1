"""Pod start and volume figures of podnetd, with the Python client.

Run inside the node namespace with KUBECONFIG set (scripts/bench-volumes.sh
does). Prints one `name: value` line per figure (medians over N runs).
Usage: volume_bench.py NAMESPACE N MOUNT_DIR
"""
import statistics
import subprocess
import sys
import time

from kubernetes import client, config, watch

ns, n, mnt = sys.argv[1], int(sys.argv[2]), sys.argv[3]
config.load_kube_config()
core = client.CoreV1Api()
SLEEPER = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]


def pod(name, volumes=(), mounts=()):
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"terminationGracePeriodSeconds": 1, "volumes": list(volumes),
                 "containers": [{"name": "c", "image": "none", "command": SLEEPER,
                                 "volumeMounts": list(mounts)}]},
    }


def start_ms(body):
    """Create -> phase Running seen through a watch, in ms."""
    name = body["metadata"]["name"]
    w = watch.Watch()
    t0 = time.perf_counter()
    created = core.create_namespaced_pod(ns, body)
    for ev in w.stream(core.list_namespaced_pod, ns, field_selector=f"metadata.name={name}",
                       resource_version=created.metadata.resource_version, timeout_seconds=120):
        if ev["object"].status and ev["object"].status.phase == "Running":
            w.stop()
            return (time.perf_counter() - t0) * 1000
    raise SystemExit(f"pod {name} not Running within 120 s")


def delete(name):
    core.delete_namespaced_pod(name, ns, grace_period_seconds=0)


core.create_namespaced_config_map(ns, {"metadata": {"name": "cfg"}, "data": {"value": "0"}})
core.create_namespaced_secret(ns, {"metadata": {"name": "sec"}, "stringData": {"password": "s3cret"}})
volumes = [{"name": "cfg", "configMap": {"name": "cfg"}},
           {"name": "sec", "secret": {"secretName": "sec"}},
           {"name": "scratch", "emptyDir": {}}]

plain, with_volumes = [], []
for i in range(n):
    plain.append(start_ms(pod(f"plain{i}")))
    delete(f"plain{i}")
    mounts = [{"name": v["name"], "mountPath": f"{mnt}/v{i}/{v['name']}"} for v in volumes]
    with_volumes.append(start_ms(pod(f"vol{i}", volumes, mounts)))
    delete(f"vol{i}")
print(f"pod.start_ms: {statistics.median(plain):.1f}")
print(f"pod.start_with_volumes_ms: {statistics.median(with_volumes):.1f}")

# configmap.propagation_ms: update -> the file changes inside the pod (read
# in the pod's mount namespace, polled every 5 ms).
start_ms(pod("watcher", volumes[:1], [{"name": "cfg", "mountPath": f"{mnt}/watch"}]))
mntns = f"/run/podnet/ns/{ns}.watcher/mnt"


def read_in_pod():
    r = subprocess.run(["nsenter", f"--mount={mntns}", "cat", f"{mnt}/watch/value"],
                       capture_output=True, text=True)
    return r.stdout


times = []
for i in range(1, n + 1):
    t0 = time.perf_counter()
    core.patch_namespaced_config_map("cfg", ns, {"data": {"value": str(i)}})
    while read_in_pod() != str(i):
        if time.perf_counter() - t0 > 120:
            raise SystemExit(f"configmap update {i} not seen in the pod within 120 s")
        time.sleep(0.005)
    times.append((time.perf_counter() - t0) * 1000)
print(f"configmap.propagation_ms: {statistics.median(times):.1f}")
delete("watcher")
