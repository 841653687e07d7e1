"""Times pod creation through podnetd's Kubernetes API on its Unix socket,
without a CLI process in the measurement.

`api_time.py SOCKET attach PREFIX N` attaches N existing namespaces
/var/run/netns/PREFIX-i as pods (the `podnet.io/netns` annotation, a pause
process), `api_time.py SOCKET run PREFIX N` creates N pods running
`sleep infinity` (namespace creation included), `api_time.py SOCKET delete
PREFIX N` deletes them and waits until they are gone. For each creation it
prints the milliseconds from the POST to a watch showing the pod with its
address (attach) or Running (run)."""
import json
import socket
import sys
import time

PODS = "/api/v1/namespaces/default/pods"


def connect(path_sock, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else b""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(60)
    s.connect(path_sock)
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: podnetd\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    )
    s.sendall(head.encode() + data)
    return s


def request(path_sock, method, path, body=None):
    s = connect(path_sock, method, path, body)
    chunks = []
    while True:
        c = s.recv(65536)
        if not c:
            break
        chunks.append(c)
    s.close()
    resp = b"".join(chunks)
    status = int(resp.split(b" ", 2)[1])
    payload = resp.split(b"\r\n\r\n", 1)[-1]
    if status >= 300 and not (method == "GET" and status == 404):
        sys.exit(f"{method} {path} failed with {status}: {payload.decode(errors='replace')}")
    return status, payload


def wait_until(path_sock, name, rv, done):
    """Watches the pod from `rv` until `done(pod)`."""
    s = connect(
        path_sock,
        "GET",
        f"{PODS}?watch=1&resourceVersion={rv}&fieldSelector=metadata.name%3D{name}",
    )
    buf = b""
    while True:
        c = s.recv(65536)
        if not c:
            sys.exit(f"the watch of pod {name} ended before it was ready")
        buf += c
        *lines, buf = buf.split(b"\n")
        for line in lines:
            line = line.strip()
            if not line.startswith(b"{"):
                continue
            event = json.loads(line)
            if done(event.get("object", {})):
                s.close()
                return


def main():
    sock, op, prefix, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    for i in range(n):
        name = f"{prefix}-{i}"
        if op == "delete":
            request(sock, "DELETE", f"{PODS}/{name}")
            while request(sock, "GET", f"{PODS}/{name}")[0] != 404:
                time.sleep(0.01)
            continue
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": {
                "containers": [
                    {"name": "c", "image": "podnet/command", "command": ["sleep", "infinity"]}
                ],
                "terminationGracePeriodSeconds": 0,
            },
        }
        if op == "attach":
            pod["metadata"]["annotations"] = {"podnet.io/netns": f"/var/run/netns/{name}"}

            def done(p):
                return bool(p.get("status", {}).get("podIP"))
        else:

            def done(p):
                return p.get("status", {}).get("phase") == "Running"

        t0 = time.perf_counter()
        _, created = request(sock, "POST", PODS, pod)
        rv = json.loads(created)["metadata"]["resourceVersion"]
        wait_until(sock, name, rv, done)
        print(f"{(time.perf_counter() - t0) * 1e3:.3f}", flush=True)


main()
