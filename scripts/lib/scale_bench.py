"""Scale figures of podnetd, with the Python client: how the cost of an
operation grows with what exists (real pods: processes in their own network
namespaces; services with cluster IPs).

Run inside the node namespace with KUBECONFIG set (scripts/bench-scale.sh does).
Prints one `name: value` line per figure.
Usage: scale_bench.py NAMESPACE DAEMON_PID PHASE [ARGS]
  pods LOW HIGH          scale.create_pod_ms_at_LOW/_at_HIGH, scale.delete_all_s_at_1000/_at_HIGH
                         (deletecollection -> the last DELETED event of a watch),
                         scale.idle_cpu_pct_at_HIGH_pods
  services LOW HIGH      scale.create_service_ms_at_LOW/_at_HIGH, api.watch_latency_ms_at_HIGH_services
  fill N                 N running pods, then return (for the reset figure)
  delete N               N running pods, then scale.delete_all_s_at_N (to profile the deletion alone)
  create N               N running pods (those there are kept), then scale.create_pod_ms_at_N (to profile
                         the creation alone)
"""
import json
import os
import re
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from kubernetes import client, config, watch

ns, daemon_pid, phase = sys.argv[1], int(sys.argv[2]), sys.argv[3]
args = [int(a) for a in sys.argv[4:]]
config.load_kube_config()
local = threading.local()
SAMPLES = 50
DELETE_RUNS = 5  # deletions timed per size; the median is printed
SETTLE_S = 5  # pause after filling, so a creation's after-work is not timed with a deletion
RESOURCE_VERSION = re.compile(rb'"resourceVersion":"(\d+)"')
WAIT = 900  # seconds: a generous bound for thousands of pods on a loaded 2-core machine


def core():
    if not hasattr(local, "core"):
        local.core = client.CoreV1Api(client.ApiClient())
    return local.core


def pod(name, labels=None):
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {"bench": "scale"}},
        "spec": {"terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "c", "image": "none", "command": ["sleep", "100000"]}]},
    }


def ready(p):
    conds = (p.status and p.status.conditions) or []
    return bool(p.status and p.status.pod_ip) and any(c.type == "Ready" and c.status == "True" for c in conds)


def ready_dict(p):
    st = p.get("status") or {}
    return bool(st.get("podIP")) and any(c.get("type") == "Ready" and c.get("status") == "True"
                                         for c in st.get("conditions") or [])


def count_pods(only_ready):
    # Raw JSON: the client's model objects cost about a second per 1,000 pods,
    # which would be measured along with the daemon.
    items = json.loads(core().list_namespaced_pod(ns, _preload_content=False).data)["items"]
    return sum(1 for p in items if not only_ready or ready_dict(p))


def wait_until(what, check):
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    sys.exit(f"scale_bench: {what} not reached within {WAIT} s")


def create_unless_there(name):
    try:
        core().create_namespaced_pod(ns, pod(name))
    except client.exceptions.ApiException as e:
        if e.status != 409:
            raise


def fill_pods(start, end):
    """Pods f<start>..f<end-1> created in parallel (those there are kept),
    then waited for until ready."""
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: create_unless_there(f"f{i}"), range(start, end)))
    wait_until(f"{end} ready pods", lambda: count_pods(True) >= end)


class PodWatch:
    """One watch on the namespace's pods, open across samples (opening one
    per sample measured the client's TLS handshake along with the daemon)."""

    def __init__(self):
        listed = json.loads(core().list_namespaced_pod(ns, limit=1, _preload_content=False).data)
        self.stream = core().list_namespaced_pod(
            ns, watch=True, resource_version=listed["metadata"]["resourceVersion"],
            timeout_seconds=WAIT, _preload_content=False)
        self.chunks = self.stream.stream(65536, decode_content=False)
        self.buf = b""

    def wait_ready(self, name):
        needle = f'"name":"{name}"'.encode()
        while True:
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                if needle in line:
                    ev = json.loads(line)
                    if ev.get("type") != "DELETED" and ready_dict(ev["object"]):
                        return
            chunk = next(self.chunks, None)
            if chunk is None:
                sys.exit(f"scale_bench: the watch ended before pod {name} was ready")
            self.buf += chunk

    def close(self):
        # Closed, not released: a connection given back to the pool with
        # the watch still streaming would answer the next request with it.
        self.stream.close()


def create_pod_ms(tag):
    """POST -> Running, ready, with an IP (seen through a watch), in ms;
    the median of SAMPLES pods made one after the other."""
    w = PodWatch()
    times = []
    for i in range(SAMPLES):
        name = f"m{tag}-{i}"
        t0 = time.perf_counter()
        core().create_namespaced_pod(ns, pod(name), _preload_content=False)
        w.wait_ready(name)
        times.append((time.perf_counter() - t0) * 1000)
    w.close()
    return statistics.median(times)


def delete_all_s():
    """Every pod deleted at once (deletecollection) -> the last pod's DELETED
    event, seen by a watch from the list's revision (polling the list every
    half second made the figure at 1,000 pods mostly the polling's). A watch
    that falls behind is ended by the server; it resumes from the last
    revision it saw, as client-go's reflectors do."""
    listed = json.loads(core().list_namespaced_pod(ns, _preload_content=False).data)
    left = {p["metadata"]["name"] for p in listed["items"]}
    revision = listed["metadata"]["resourceVersion"]

    def watch(since):
        return core().list_namespaced_pod(ns, watch=True, resource_version=since,
                                          timeout_seconds=WAIT, _preload_content=False)

    stream = watch(revision)
    t0 = time.perf_counter()
    # The answer lists every deleted pod: not decoded into the client's
    # models, whose cost would be timed along with the daemon's.
    core().delete_collection_namespaced_pod(ns, grace_period_seconds=1, _preload_content=False)
    while time.perf_counter() - t0 < WAIT:
        buf = b""
        for chunk in stream.stream(65536, decode_content=False):
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                seen = RESOURCE_VERSION.search(line)
                if seen:
                    revision = seen.group(1).decode()
                if b'"DELETED"' not in line:
                    continue
                ev = json.loads(line)
                if ev.get("type") == "DELETED":
                    left.discard(ev["object"]["metadata"]["name"])
            if not left:
                took = time.perf_counter() - t0
                stream.close()
                return took
        stream = watch(revision)
    sys.exit(f"scale_bench: {len(left)} pods not deleted within {WAIT} s")


def delete_all_median_s(n):
    """The median of DELETE_RUNS deletions of n pods, each of them filled
    again and settled first: one sub-second deletion of 1,000 pods on a
    shared 2-core machine varied by a third from run to run, and the
    ratio of medians of 3 between 3.4x and 5.1x on one build (five
    deletions add about two minutes to the benchmark)."""
    times = []
    for _ in range(DELETE_RUNS):
        fill_pods(0, n)
        time.sleep(SETTLE_S)
        times.append(delete_all_s())
    return statistics.median(times)


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def idle_cpu_pct(seconds=10):
    hz = os.sysconf("SC_CLK_TCK")
    before = cpu_ticks(daemon_pid)
    time.sleep(seconds)
    return (cpu_ticks(daemon_pid) - before) / hz / seconds * 100


def phase_pods(low, high):
    fill_pods(0, low)
    print(f"scale.create_pod_ms_at_{low}: {create_pod_ms('low'):.2f}", flush=True)
    print(f"scale.delete_all_s_at_1000: {delete_all_median_s(1000):.3f}", flush=True)
    fill_pods(0, high)
    print(f"scale.create_pod_ms_at_{high}: {create_pod_ms('high'):.2f}", flush=True)
    time.sleep(SETTLE_S)  # let the creations' after-work settle
    print(f"scale.idle_cpu_pct_at_{high}_pods: {idle_cpu_pct():.2f}", flush=True)
    print(f"scale.delete_all_s_at_{high}: {delete_all_median_s(high):.3f}", flush=True)


def service(name, selector=None):
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": selector or {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]}}


def create_service_ms(tag):
    times = []
    for i in range(SAMPLES):
        t0 = time.perf_counter()
        core().create_namespaced_service(ns, service(f"m{tag}-{i}"))
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def fill_services(start, end):
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: core().create_namespaced_service(ns, service(f"s{i}")), range(start, end)))


def watch_latency_ms():
    """A ready pod deleted -> a watcher sees its endpoint not ready, median of 10.
    The deletion's answer and the watch's events are read as raw JSON: the
    client's model objects (a V1Pod decoded from the answer, a
    V1EndpointSlice from each event, both under Python's one lock) took
    milliseconds of their own, measured along with the daemon."""
    disco = client.DiscoveryV1Api(client.ApiClient())
    core().create_namespaced_service(ns, service("w", {"app": "w"}))
    for i in range(3):
        core().create_namespaced_pod(ns, pod(f"w{i}", {"app": "w"}))
    wait_until("3 ready w pods", lambda: sum(ready(p) for p in core().list_namespaced_pod(ns, label_selector="app=w").items) >= 3)
    selector = "kubernetes.io/service-name=w"
    lat = []
    for n in range(10):
        victims = [p for p in core().list_namespaced_pod(ns, label_selector="app=w").items
                   if ready(p) and not p.metadata.deletion_timestamp]
        victim = victims[0].metadata.name
        seen = threading.Event()
        rv = disco.list_namespaced_endpoint_slice(ns, label_selector=selector).metadata.resource_version

        def not_ready(line):
            ev = json.loads(line)
            return any((e.get("targetRef") or {}).get("name") == victim
                       and not (e.get("conditions") or {}).get("ready")
                       for e in ev.get("object", {}).get("endpoints") or [])

        def watcher():
            stream = disco.list_namespaced_endpoint_slice(
                ns, watch=True, resource_version=rv, label_selector=selector,
                timeout_seconds=60, _preload_content=False)
            buf = b""
            for chunk in stream.stream(65536, decode_content=False):
                buf += chunk
                *lines, buf = buf.split(b"\n")
                if any(not_ready(line) for line in lines if line.strip()):
                    seen.set()
                    break
            stream.close()
        t = threading.Thread(target=watcher)
        t.start()
        time.sleep(0.3)
        t0 = time.perf_counter()
        core().delete_namespaced_pod(victim, ns, _preload_content=False).release_conn()
        if not seen.wait(60):
            sys.exit("scale_bench: the endpoint change was not seen within 60 s")
        lat.append((time.perf_counter() - t0) * 1000)
        t.join()
        core().create_namespaced_pod(ns, pod(f"w{3 + n}", {"app": "w"}))
        wait_until("3 ready w pods", lambda: sum(ready(p) and not p.metadata.deletion_timestamp
                                                 for p in core().list_namespaced_pod(ns, label_selector="app=w").items) >= 3)
    return statistics.median(lat)


def phase_services(low, high):
    fill_services(0, low)
    print(f"scale.create_service_ms_at_{low}: {create_service_ms('low'):.2f}", flush=True)
    fill_services(low, high)
    print(f"scale.create_service_ms_at_{high}: {create_service_ms('high'):.2f}", flush=True)
    print(f"api.watch_latency_ms_at_{high}_services: {watch_latency_ms():.2f}", flush=True)


if phase == "pods":
    phase_pods(*args)
elif phase == "services":
    phase_services(*args)
elif phase == "fill":
    fill_pods(0, args[0])
elif phase == "delete":
    print(f"scale.delete_all_s_at_{args[0]}: {delete_all_median_s(args[0]):.2f}", flush=True)
elif phase == "create":
    fill_pods(0, args[0])
    print(f"scale.create_pod_ms_at_{args[0]}: {create_pod_ms(str(time.time_ns())):.2f}", flush=True)
else:
    sys.exit(f"scale_bench: unknown phase {phase}")
