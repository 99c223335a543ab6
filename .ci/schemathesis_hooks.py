"""Hooks for .ci/schemathesis: keep the run's long-polls short.

The document allows waits of up to 60 s (a claim's waitMs, a result's
wait); a run that waited them out would take hours. Waits in that range are
cut to 100 ms before each request; longer ones, which the server refuses,
are sent as generated.
"""

import re

import schemathesis

SHORT_MS = 100


def wait_seconds(text):
    """The seconds a result's `wait` asks for, or None if it is not one."""
    m = re.fullmatch(r"\s*([+-]?[0-9.eE+-]+?)(ms|s)?\s*", text)
    if not m:
        return None
    try:
        n = float(m.group(1))
    except ValueError:
        return None
    return n / 1000 if m.group(2) == "ms" else n


@schemathesis.hook
def before_call(context, case, kwargs):
    op = case.operation
    if op.method.upper() == "POST" and op.path == "/v1/workers/claim":
        body = case.body
        if isinstance(body, dict) and type(body.get("waitMs")) is int and SHORT_MS < body["waitMs"] <= 60000:
            body["waitMs"] = SHORT_MS
    if op.method.upper() == "GET" and op.path == "/v1/executions/{id}/result":
        query = case.query
        if isinstance(query, dict) and isinstance(query.get("wait"), str):
            secs = wait_seconds(query["wait"])
            if secs is not None and SHORT_MS / 1000 < secs <= 60:
                query["wait"] = f"{SHORT_MS}ms"
