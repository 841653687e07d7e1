"""Times podnetd API requests over its Unix socket, without a CLI process in
the measurement: `api_time.py SOCKET attach PREFIX N` attaches N existing
namespaces /var/run/netns/PREFIX-i as pods, `api_time.py SOCKET run PREFIX N`
creates N pods running `sleep infinity` (namespace creation included), and
`api_time.py SOCKET delete PREFIX N` deletes them. Prints one duration in
milliseconds per request (create requests only)."""
import json
import socket
import sys
import time


def request(path_sock, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else b""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(path_sock)
    head = f"{method} {path} HTTP/1.1\r\nHost: podnetd\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    s.sendall(head.encode() + data)
    chunks = []
    while True:
        c = s.recv(65536)
        if not c:
            break
        chunks.append(c)
    s.close()
    resp = b"".join(chunks)
    status = int(resp.split(b" ", 2)[1])
    if status >= 300:
        body = resp.split(b"\r\n\r\n", 1)[-1].decode(errors="replace")
        sys.exit(f"{method} {path} failed with {status}: {body}")
    return resp


def main():
    sock, op, prefix, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    for i in range(n):
        name = f"{prefix}-{i}"
        if op == "delete":
            request(sock, "DELETE", f"/v1/pods/{name}")
            continue
        if op == "attach":
            body = {"name": name, "netns": f"/var/run/netns/{name}"}
        else:
            body = {"name": name, "command": ["sleep", "infinity"]}
        t0 = time.perf_counter()
        request(sock, "POST", "/v1/pods", body)
        print(f"{(time.perf_counter() - t0) * 1e3:.3f}", flush=True)


main()
