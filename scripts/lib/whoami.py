"""An HTTP server that answers every GET with the pod's name (POD_NAME),
for demos and tests: `podnet pod run web -- python3 scripts/lib/whoami.py 8080`."""
import http.server
import os
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ((os.environ.get("POD_NAME") or os.environ.get("HOSTNAME", "?")) + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


port = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
http.server.ThreadingHTTPServer(("", port), Handler).serve_forever()
