"""A Standard Webhooks receiver for tests and demos (python3 standard library only).

It verifies every request independently of ledgerflow's Rust code: for the endpoint whose URL
path matches the request, it reads the endpoint's `whsec_` secret from the tenants file's secret
reference, base64-decodes it and checks `webhook-signature` (any `v1,` entry) against
HMAC-SHA256 over "{webhook-id}.{webhook-timestamp}.{body}", and that the timestamp is within
5 minutes. It fails the FIRST attempt of about FAIL_PERCENT % of webhook-ids with a 503, chosen
deterministically by hashing the id, deduplicates by webhook-id the way a real receiver must,
and on SIGTERM writes a JSON summary:

    requests              every request received
    accepted              distinct webhook-ids accepted as new deliveries
    replays               requests for an already accepted webhook-id (answered 200, not applied)
    injected_failures     first attempts failed on purpose
    bad_signatures        requests whose signature or timestamp did not verify (answered 401)
    body_mismatches       webhook-ids that arrived with two different bodies
    unknown_paths         requests to a path no endpoint of the tenants file has
    accepted_twice        webhook-ids accepted as new more than once (must be 0)
    ids                   the accepted webhook-ids
    sample                one accepted request (id, timestamp, signature, body) to re-verify

usage: webhook_receiver.py PORT TENANTS_FILE SUMMARY_FILE [FAIL_PERCENT]
"""

import base64
import hashlib
import hmac
import json
import os
import signal
import sys
import threading
import time
import tomllib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

TOLERANCE_SECONDS = 300

lock = threading.Lock()
state = {
    "requests": 0,
    "replays": 0,
    "injected_failures": 0,
    "bad_signatures": 0,
    "unknown_paths": 0,
}
accepted = {}  # webhook-id -> sha256 of the body
accept_counts = {}  # webhook-id -> times accepted as new (must stay 1)
attempts = {}  # webhook-id -> requests seen
bodies = {}  # webhook-id -> set of body hashes seen
sample = {}


def load_endpoints(tenants_file):
    """URL path -> signing key bytes, from the tenants file and its secret references."""
    base = Path(tenants_file).resolve().parent
    with open(tenants_file, "rb") as f:
        config = tomllib.load(f)
    endpoints = {}
    for tenant in config.get("tenants", []):
        for hook in tenant.get("webhooks", []):
            ref = hook["secret"]
            if "file" in ref:
                path = Path(ref["file"])
                raw = (path if path.is_absolute() else base / path).read_text()
            else:
                raw = os.environ[ref["env"]]
            raw = raw.strip()
            key = base64.b64decode(raw[len("whsec_"):] if raw.startswith("whsec_") else raw)
            endpoints[urlparse(hook["url"]).path] = key
    return endpoints


def signature_ok(key, msg_id, timestamp, body, header):
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs(time.time() - ts) > TOLERANCE_SECONDS:
        return False
    signed = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    for entry in header.split(" "):
        version, _, sig = entry.partition(",")
        if version == "v1" and hmac.compare_digest(sig, expected):
            return True
    return False


def fails_first(msg_id, percent):
    return hashlib.sha256(msg_id.encode()).digest()[0] * 100 < percent * 256


class Handler(BaseHTTPRequestHandler):
    endpoints = {}
    fail_percent = 20

    def reply(self, code, text):
        data = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):  # noqa: N802 (http.server naming)
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        msg_id = self.headers.get("webhook-id", "")
        timestamp = self.headers.get("webhook-timestamp", "")
        header = self.headers.get("webhook-signature", "")
        digest = hashlib.sha256(body).hexdigest()
        with lock:
            state["requests"] += 1
            key = self.endpoints.get(urlparse(self.path).path)
            if key is None:
                state["unknown_paths"] += 1
                return self.reply(404, "no such endpoint")
            if not signature_ok(key, msg_id, timestamp, body, header):
                state["bad_signatures"] += 1
                return self.reply(401, "bad signature")
            bodies.setdefault(msg_id, set()).add(digest)
            attempts[msg_id] = attempts.get(msg_id, 0) + 1
            if attempts[msg_id] == 1 and fails_first(msg_id, self.fail_percent):
                state["injected_failures"] += 1
                return self.reply(503, "try again")
            if msg_id in accepted:
                state["replays"] += 1
                return self.reply(200, "already processed")
            accepted[msg_id] = digest
            accept_counts[msg_id] = accept_counts.get(msg_id, 0) + 1
            if not sample:
                sample.update(
                    path=urlparse(self.path).path,
                    id=msg_id,
                    timestamp=timestamp,
                    signature=header,
                    body=body.decode(),
                )
        self.reply(200, "ok")

    def log_message(self, *args):
        pass


def main():
    port, tenants_file, summary = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    Handler.endpoints = load_endpoints(tenants_file)
    if len(sys.argv) > 4:
        Handler.fail_percent = int(sys.argv[4])
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)

    def stop(*_):
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    print(f"listening on 127.0.0.1:{port}", flush=True)
    server.serve_forever()
    with lock:
        result = dict(state)
        result["accepted"] = len(accepted)
        result["body_mismatches"] = sum(1 for s in bodies.values() if len(s) > 1)
        result["accepted_twice"] = sum(1 for n in accept_counts.values() if n > 1)
        result["ids"] = sorted(accepted)
        result["sample"] = sample
    tmp = summary + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    Path(tmp).rename(summary)


if __name__ == "__main__":
    main()
