# rollout_bench NODE KNS — `rollout.failed_requests`: a Deployment of 10 pods
# (Python HTTP servers with a readiness probe, draining on SIGTERM) behind a
# ClusterIP Service is rolled (`kubectl set env`) while a client in the node
# namespace sends requests to the cluster IP back to back; prints the requests
# that failed (target 0), those sent, and the rollout's duration.
# Sourced by bench-api.sh (KUBECONFIG set, kubectl on PATH).
rollout_bench() {
    local node=${1:?rollout_bench: NODE missing} kns=${2:?rollout_bench: KNS missing}
    local k=(nsenter --net="/var/run/netns/$node" kubectl -n "$kns")
    "${k[@]}" apply -f - >/dev/null <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata:
  name: roll
spec:
  replicas: 10
  selector:
    matchLabels: {app: roll}
  strategy:
    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}
  template:
    metadata:
      labels: {app: roll}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: web
        image: python
        command: ["python3", "-c"]
        args:
        - |
          import http.server, signal, threading
          class H(http.server.BaseHTTPRequestHandler):
              protocol_version = "HTTP/1.0"
              def do_GET(self):
                  self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok")
              def log_message(self, *a): pass
          srv = http.server.ThreadingHTTPServer(("", 8080), H)
          signal.signal(signal.SIGTERM, lambda *a: threading.Thread(target=srv.shutdown).start())
          srv.serve_forever()
        readinessProbe:
          httpGet: {path: /, port: 8080}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: roll
spec:
  selector: {app: roll}
  ports:
  - port: 80
    targetPort: 8080
YAML
    "${k[@]}" rollout status deployment/roll --timeout=600s >/dev/null
    local ip stop out t0 t1
    ip=$("${k[@]}" get svc roll -o 'jsonpath={.spec.clusterIP}')
    stop=$(mktemp -u "${TMPDIR:-/tmp}/podnet-rollout-stop.XXXXXX")
    out=$(mktemp "${TMPDIR:-/tmp}/podnet-rollout-out.XXXXXX")
    nsenter --net="/var/run/netns/$node" python3 -c '
import os, sys, urllib.request
url, stop = sys.argv[1], sys.argv[2]
ok = fail = 0
while not os.path.exists(stop):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            r.read()
            ok += 1
    except Exception:
        fail += 1
print(ok, fail)
' "http://$ip/" "$stop" >"$out" &
    local client=$!
    sleep 1
    t0=$(date +%s.%N)
    "${k[@]}" set env deployment/roll X=1 >/dev/null
    "${k[@]}" rollout status deployment/roll --timeout=600s >/dev/null
    t1=$(date +%s.%N)
    touch "$stop"
    wait "$client"
    local ok fail
    read -r ok fail <"$out"
    rm -f "$stop" "$out"
    echo "rollout.failed_requests: $fail"
    echo "rollout.requests: $((ok + fail))"
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "rollout.s: %.2f\n", b - a }'
    "${k[@]}" delete deployment/roll svc/roll --wait=false >/dev/null
}
