#!/usr/bin/env python3
"""A callback receiver for execution-ledger, in Python 3 with the standard
library only: it verifies each callback's signature before it trusts it.

Every callback is a POST of the finished execution's JSON with the headers

    Ledger-Signature: t=1764806400,v1=5f2b…[,v1=…]   (one v1 per secret)
    Idempotency-Key: <the execution id, the same on every attempt>
    Ledger-Delivery-Attempt: <1 and on>
    User-Agent: execution-ledger/<version>

and v1 is the hex HMAC-SHA256, under the tenant's secret, of the timestamp,
a dot and the body exactly as sent: f"{t}.".encode() + body.

Usage:

    python3 examples/callback_receiver.py --secret "$LEDGER_CALLBACK_SECRET" [--port 8080]
    python3 examples/callback_receiver.py --secret NEW --secret OLD   # during a rotation

It answers 204 to a callback it verified (and to a repeat of one, which it
does not handle twice), 401 to one it did not, and prints one line for each:
`verified ID attempt N`, `repeat ID attempt N`, or `refused: WHY`.
"""

import argparse
import hashlib
import hmac
import http.server
import json
import sys
import time

TOLERANCE_SECS = 300


def verify(header, body, secrets, now=None, tolerance=TOLERANCE_SECS):
    """Returns None when `header` signs `body` under one of `secrets` within
    `tolerance` seconds of `now`, else why not."""
    if not header:
        return "no Ledger-Signature header"
    t, signatures = None, []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            t = value
        elif key == "v1":
            signatures.append(value)
    if t is None or not t.isdigit() or not signatures:
        return "a malformed Ledger-Signature header"
    age = abs((time.time() if now is None else now) - int(t))
    if age > tolerance:
        return f"a signature {int(age)} s old"
    signed = t.encode() + b"." + body
    for secret in secrets:
        expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
        # compare_digest takes the same time whatever the bytes.
        if any(hmac.compare_digest(expected, s) for s in signatures):
            return None
    return "no signature matches the body"


class Receiver(http.server.BaseHTTPRequestHandler):
    secrets = []
    seen = set()

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        why = verify(self.headers.get("Ledger-Signature"), body, self.secrets)
        if why is not None:
            print(f"refused: {why}", flush=True)
            self.send_response(401)
            self.end_headers()
            return
        # Only now is the body trusted.
        execution = json.loads(body)
        key = self.headers.get("Idempotency-Key")
        attempt = self.headers.get("Ledger-Delivery-Attempt")
        if key in self.seen:
            print(f"repeat {key} attempt {attempt}", flush=True)
        else:
            self.seen.add(key)
            print(f"verified {execution['executionId']} attempt {attempt}", flush=True)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_):
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--secret", action="append", required=True,
                        help="a secret the callbacks are signed with (repeat during a rotation)")
    parser.add_argument("--port", type=int, default=0, help="where to listen (default: any free port)")
    args = parser.parse_args()
    Receiver.secrets = args.secret
    server = http.server.HTTPServer(("127.0.0.1", args.port), Receiver)
    print(f"listening on http://127.0.0.1:{server.server_port}/hook", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
