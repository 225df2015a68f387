"""A local stand-in for tenants' ERP endpoints (NetSuite, Dynamics 365, S/4HANA, Oracle Fusion
cannot be reached from here). It accepts every POST with 201 and an id, remembers the
Idempotency-Key of each request, and on SIGTERM/exit prints how many requests and distinct keys
it saw, so the demo can show that every journal arrived exactly once.

usage: erp_receiver.py PORT SUMMARY_FILE
"""

import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

seen = {}
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server naming)
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        key = self.headers.get("Idempotency-Key", "")
        with lock:
            first = key not in seen
            seen.setdefault(key, []).append(len(body))
            ref = f"erp-{len(seen)}"
        self.send_response(201 if first else 200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps({"id": ref, "replayed": not first}).encode())

    def log_message(self, *args):
        pass


def main():
    port, summary = int(sys.argv[1]), sys.argv[2]
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)

    def stop(*_):
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    server.serve_forever()
    with open(summary, "w", encoding="utf-8") as f:
        json.dump({"requests": sum(len(v) for v in seen.values()), "distinct_keys": len(seen)}, f)


if __name__ == "__main__":
    main()
