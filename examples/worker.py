#!/usr/bin/env python3
"""A worker for execution-ledger, in Python 3 with the standard library only.

It runs callables for a `ledger serve` over the worker protocol: it claims
attempts under a lease (long-polling, as many as it has free slots), runs
each one in a thread while another thread heartbeats it, and completes or
fails it by attempt number.

Usage:

    python3 examples/worker.py --server http://127.0.0.1:7474 --callable upper
    python3 examples/worker.py --data-dir ledger-data --callable upper --concurrency 8
    LEDGER_SERVER=http://ledger:7474 LEDGER_API_KEY=... python3 examples/worker.py \\
        --callable upper --callable resize=echo

Options (see --help):

    --server URL          the `ledger serve` to work for (env LEDGER_SERVER)
    --data-dir DIR        or the one serving DIR: the URL in DIR/serve.json,
                          read again when the server is restarted (env
                          LEDGER_DATA_DIR)
    --api-key KEY         sent as `Authorization: Bearer KEY` (env
                          LEDGER_API_KEY); a server without --keys needs none
    --callable NAME[=HANDLER]
                          run the callable NAME with the handler HANDLER
                          (default: the handler called NAME); repeatable
    --concurrency N       attempts run at once (default 4)
    --lease-ms N          the lease asked for each attempt (default 30000);
                          heartbeats renew it every third of it
    --wait-ms N           how long one claim waits for work (default 30000)
    --name W              the worker name the ledger records (default
                          HOST-PID)

Built-in handlers:

    echo    the output is the input (a JSON string, or null without input)
    upper   the output is the input upper-cased
    sleep   sleeps for the input's milliseconds, heartbeating with its
            progress; stops early when the execution is cancelled or the
            attempt is no longer its to run
    fail    fails with code "failed", retryable, message = the input

`ledger serve` itself runs callables called `echo`, `sleep` and `fail`, so a
worker that claims those names races with the server's own workers; give
yours other names: `--callable slow=sleep`.

Your own handlers: a handler is a function `(input, context, attempt)` that
returns the output (any JSON value) or raises `Failure(code, message,
retryable)`. `input` is the execution's input (a string, or None), `context`
its key-value context (a dict of strings, or None) and `attempt` the
`Attempt` being run (its ids, the whole execution record, `progress` to
report with the next heartbeat, and `sleep(seconds)`, which raises `Stopped`
once the attempt is cancelled or lost). Add it to HANDLERS, or from your own
module:

    import worker

    def resize(input, context, attempt):
        if not input:
            raise worker.Failure("bad_input", "resize takes a path", retryable=False)
        return {"thumbnail": input + ".64.png"}

    worker.HANDLERS["resize"] = resize
    worker.main()

Signals: SIGTERM or SIGINT (Ctrl-C) stops claiming, lets the running
attempts finish and answer, and exits 0. A second one exits at once (1); the
attempts it left are recovered by the server when their leases run out.

Errors: a connection error or a 5xx answer is retried with back-off (the
server may be restarting; an identical repeat of a complete or fail is
answered as the first time, so a retry is safe). `409 stale_attempt` means
the attempt is no longer this worker's (its lease ran out, it timed out, it
was cancelled): it is logged and the attempt dropped, never retried.

Exit codes: 0 stopped by a signal; 1 the server refused the worker (its API
key, say); 2 bad usage, including a claim the server refused as invalid.
One line per event goes to standard error.
"""

import argparse
import http.client
import json
import os
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request

# -- handlers -----------------------------------------------------------------


class Failure(Exception):
    """A handler's failure: the attempt fails with this code and message.

    With retryable=True the execution's retry policy decides whether another
    attempt runs; with retryable=False it fails for good.
    """

    def __init__(self, code, message, retryable=True):
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable


class Stopped(Exception):
    """Raised by Attempt.sleep once the attempt is not to be finished: the
    execution was cancelled, or the attempt is no longer this worker's."""


def echo(input, context, attempt):
    """The output is the input."""
    return input


def upper(input, context, attempt):
    """The output is the input upper-cased."""
    return (input or "").upper()


def sleep(input, context, attempt):
    """Sleeps for `input` milliseconds in small steps, reporting progress;
    stops early when the attempt is stopped."""
    try:
        ms = int((input or "0").strip())
    except ValueError:
        raise Failure("bad_input", f"sleep takes milliseconds, not {input!r}", retryable=False)
    start = time.monotonic()
    end = start + ms / 1000
    while (left := end - time.monotonic()) > 0:
        attempt.sleep(min(left, 0.25))
        attempt.progress = {"sleptMs": int((time.monotonic() - start) * 1000)}
    return {"sleptMs": ms}


def fail(input, context, attempt):
    """Fails with code "failed" (retryable) and the input as its message."""
    raise Failure("failed", input or "failed on purpose", retryable=True)


# Handler name -> function(input, context, attempt).
HANDLERS = {"echo": echo, "upper": upper, "sleep": sleep, "fail": fail}


# -- logging ------------------------------------------------------------------

_log_lock = threading.Lock()


def log(message):
    """One line to standard error, with the time."""
    with _log_lock:
        sys.stderr.write(f"{time.strftime('%H:%M:%S')} {message}\n")
        sys.stderr.flush()


# -- HTTP ---------------------------------------------------------------------


class Unreachable(Exception):
    """The server did not answer (or answered 5xx): worth retrying."""


class Server:
    """The `ledger serve` worked for: its URL (from --server, or read from
    DIR/serve.json again whenever it is unreachable), and its API key."""

    def __init__(self, url=None, data_dir=None, api_key=None):
        self.fixed_url = url.rstrip("/") if url else None
        self.data_dir = data_dir
        self.api_key = api_key
        self.url = self.fixed_url
        self.last_url = self.fixed_url

    def refresh(self):
        """With --data-dir: the URL in DIR/serve.json, which a restarted
        server rewrites (with a new port when it listens on port 0)."""
        if self.fixed_url:
            return
        path = os.path.join(self.data_dir, "serve.json")
        try:
            with open(path, encoding="utf-8") as f:
                url = json.load(f)["url"].rstrip("/")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            self.url = None
            raise Unreachable(f"{path}: {e} (is `ledger serve` running on {self.data_dir}?)")
        if url != self.last_url and self.last_url is not None:
            log(f"the server is now at {url}")
        self.url = self.last_url = url

    def post(self, path, body, timeout):
        """POSTs `body` as JSON; returns (status, decoded JSON answer).

        Raises Unreachable on a connection error or a 5xx answer."""
        if self.url is None:
            self.refresh()
        request = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode("utf-8"),
            headers={"Content-Type": "application/json", "Accept": "application/json"},
            method="POST",
        )
        if self.api_key:
            request.add_header("Authorization", f"Bearer {self.api_key}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        except (OSError, http.client.HTTPException) as e:
            # URLError, refused or reset connections and timeouts are OSErrors.
            url = self.url
            if not self.fixed_url:
                self.url = None  # read serve.json again on the next try
            raise Unreachable(f"{url}: {getattr(e, 'reason', e)}")
        try:
            answer = json.loads(raw) if raw else None
        except ValueError:
            answer = raw.decode("utf-8", "replace")
        if status >= 500:
            raise Unreachable(f"{path}: {status} {error_message(answer)}")
        return status, answer


def error_message(answer):
    """The message of a `{"error": {"code", "message"}}` answer."""
    if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
        return answer["error"].get("message", "")
    return str(answer)


class Backoff:
    """Delays between retries: 0.5 s, doubling up to 10 s."""

    def __init__(self):
        self.delay = 0.5

    def next(self):
        delay, self.delay = self.delay, min(self.delay * 2, 10.0)
        return delay


def failure(code, message, retryable):
    """The body of a `fail` answer."""
    return {"error": {"code": str(code), "message": str(message)}, "retryable": bool(retryable)}


class Interrupted(Exception):
    """A signal cut the main thread's wait short."""


def fatal(code, message):
    """Logs `message` and exits with `code`."""
    log(message)
    sys.exit(code)


# -- attempts -----------------------------------------------------------------


class Attempt:
    """One claimed attempt, as its handler sees it."""

    def __init__(self, record, handler_name):
        self.record = record  # the whole execution record as claimed
        self.execution_id = record["executionId"]
        self.number = record["attempt"]
        self.callable_name = record["callableName"]
        self.tenant_id = record.get("tenantId")
        self.lease_until = record.get("leaseUntil")
        self.handler_name = handler_name
        # Reported with the next heartbeat when not None (any JSON value).
        self.progress = None
        self.finished = threading.Event()  # the handler returned or raised
        self.stopping = threading.Event()  # cancelled, or no longer ours
        self.stop_reason = None

    @property
    def label(self):
        return f"{self.execution_id}#{self.number} {self.callable_name}"

    @property
    def path(self):
        return f"/v1/executions/{self.execution_id}/attempts/{self.number}"

    def stop(self, reason):
        if self.stop_reason is None:
            self.stop_reason = reason
        self.stopping.set()

    def sleep(self, seconds):
        """Sleeps, or raises Stopped as soon as the attempt is stopped."""
        if self.stopping.wait(seconds):
            raise Stopped(self.stop_reason)


class Worker:
    """Claims on the main thread; runs each attempt on a thread of its own,
    with a heartbeat thread beside it."""

    def __init__(self, server, callables, concurrency, lease_ms, wait_ms, name):
        self.server = server
        self.callables = callables  # callable name -> handler name
        self.concurrency = concurrency
        self.lease_ms = lease_ms
        self.wait_ms = wait_ms
        self.name = name
        self.running = {}  # thread -> Attempt
        self.running_lock = threading.Lock()
        self.slot_freed = threading.Event()
        # Set by the signal handler, read by the main thread: a plain flag,
        # since a signal handler must not take locks the main thread holds.
        self.stop_requested = False
        self.interruptible = False

    # The main thread: claim while there are free slots.

    def run(self):
        signal.signal(signal.SIGTERM, self.on_signal)
        signal.signal(signal.SIGINT, self.on_signal)
        names = ", ".join(c if c == h else f"{c}={h}" for c, h in self.callables.items())
        log(f"worker {self.name}: running {names} for {self.server.url or self.server.data_dir}"
            f" ({self.concurrency} at once, lease {self.lease_ms} ms)")
        backoff = Backoff()
        while not self.stop_requested:
            free = self.free_slots()
            if free == 0:
                self.slot_freed.wait(0.5)
                self.slot_freed.clear()
                continue
            try:
                began = time.monotonic()
                attempts = self.claim(free)
                backoff = Backoff()
            except Unreachable as e:
                delay = backoff.next()
                log(f"claim: {e}; retrying in {delay:g} s")
                if not self.interruptible_sleep(delay):
                    break
                continue
            except Interrupted:
                break
            for record in attempts:
                self.start(record)
            if not attempts and time.monotonic() - began < 1:
                # A short --wait-ms: do not ask again at once.
                if not self.interruptible_sleep(1 - (time.monotonic() - began)):
                    break
        with self.running_lock:
            threads = list(self.running)
        if threads:
            log(f"stopping: waiting for {len(threads)} running"
                f" attempt{'s' if len(threads) > 1 else ''} to finish")
        else:
            log("stopping")
        for thread in threads:
            thread.join()
        log("stopped")
        return 0

    def on_signal(self, signum, frame):
        if self.stop_requested:
            os.write(2, b"second signal: exiting now; the server recovers the attempts"
                        b" left when their leases run out\n")
            os._exit(1)
        self.stop_requested = True
        if self.interruptible:
            # The main thread is blocked in a claim's long poll or a back-off
            # sleep: cut it short. Closing a long poll's connection ends it
            # on the server too, claiming nothing.
            raise Interrupted()

    def interruptible_sleep(self, seconds):
        """Sleeps on the main thread; False when a signal cut it short."""
        try:
            self.interruptible = True
            if self.stop_requested:
                return False
            time.sleep(seconds)
            return True
        except Interrupted:
            return False
        finally:
            self.interruptible = False

    def free_slots(self):
        with self.running_lock:
            return self.concurrency - len(self.running)

    def claim(self, free):
        body = {
            "worker": self.name,
            "callables": list(self.callables),
            "max": free,
            "waitMs": self.wait_ms,
            "leaseMs": self.lease_ms,
        }
        try:
            self.interruptible = True
            if self.stop_requested:
                raise Interrupted()
            status, answer = self.server.post("/v1/workers/claim", body,
                                              timeout=self.wait_ms / 1000 + 30)
        finally:
            # A signal right here, as the answer arrives, loses it like any
            # lost response: the server recovers those attempts when their
            # leases run out.
            self.interruptible = False
        if status == 400:
            fatal(2, f"the server refused the claim: {error_message(answer)}"
                     " (--concurrency is sent as max, --wait-ms as waitMs, --lease-ms as leaseMs)")
        if status != 200:
            fatal(1, f"the server refused the claim: {status} {error_message(answer)}")
        return answer["attempts"]

    def start(self, record):
        attempt = Attempt(record, self.callables[record["callableName"]])
        log(f"claimed {attempt.label}")
        thread = threading.Thread(target=self.run_attempt, args=(attempt,), daemon=True,
                                  name=attempt.label)
        with self.running_lock:
            self.running[thread] = attempt
        thread.start()

    # An attempt's thread: run the handler, then answer.

    def run_attempt(self, attempt):
        try:
            heartbeat = threading.Thread(target=self.heartbeat, args=(attempt,), daemon=True)
            heartbeat.start()
            try:
                answer = self.handle(attempt)
            finally:
                attempt.finished.set()
                heartbeat.join()
            if attempt.stop_reason is not None:
                log(f"stopped {attempt.label}: {attempt.stop_reason}")
            elif answer is not None:
                self.answer(attempt, *answer)
        finally:
            with self.running_lock:
                del self.running[threading.current_thread()]
            self.slot_freed.set()

    def handle(self, attempt):
        """Runs the handler: ("complete", body) or ("fail", body), or None
        when the attempt was stopped."""
        handler = HANDLERS[attempt.handler_name]
        record = attempt.record
        try:
            output = handler(record.get("input"), record.get("context"), attempt)
        except Stopped:
            return None
        except Failure as f:
            return "fail", failure(f.code, f.message, f.retryable)
        except Exception as e:  # a bug in the handler: fail the attempt, keep working
            return "fail", failure("handler_error", f"{type(e).__name__}: {e}", True)
        try:
            json.dumps(output)
        except (TypeError, ValueError) as e:
            return "fail", failure("bad_output", f"the output is not JSON: {e}", False)
        return "complete", {"output": output}

    def answer(self, attempt, verb, body):
        """Completes or fails the attempt; retries until the server answers."""
        backoff = Backoff()
        while True:
            try:
                status, record = self.server.post(f"{attempt.path}/{verb}", body, timeout=30)
                break
            except Unreachable as e:
                delay = backoff.next()
                log(f"{verb} {attempt.label}: {e}; retrying in {delay:g} s")
                time.sleep(delay)
        if status == 409:
            log(f"stale {attempt.label}: {error_message(record)}; dropped")
        elif status != 200:
            log(f"{verb} {attempt.label} refused: {status} {error_message(record)}; dropped")
        elif verb == "complete":
            log(f"completed {attempt.label}")
        else:
            error = body["error"]
            log(f"failed {attempt.label}: {error['code']}: {error['message']}"
                f" (the execution is {record.get('status')})")

    # An attempt's heartbeat thread: renew the lease every third of it.

    def heartbeat(self, attempt):
        interval = self.lease_ms / 3000
        while not attempt.finished.wait(interval):
            body = {"leaseMs": self.lease_ms}
            if attempt.progress is not None:
                body["progress"] = attempt.progress
            try:
                status, beat = self.server.post(f"{attempt.path}/heartbeat", body,
                                                timeout=max(interval, 5))
            except Unreachable as e:
                # The next beat is the retry.
                log(f"heartbeat {attempt.label}: {e}")
                continue
            if status == 200 and beat.get("cancelRequested"):
                log(f"cancel requested for {attempt.label}")
                attempt.stop("the execution was cancelled")
                return
            if status == 409:
                log(f"stale {attempt.label}: {error_message(beat)}")
                attempt.stop("the attempt is no longer this worker's")
                return
            if status != 200:
                log(f"heartbeat {attempt.label} refused: {status} {error_message(beat)}")


# -- command line -------------------------------------------------------------


def positive(text):
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"takes a whole number from 1, not {text!r}")
    return n


def non_negative(text):
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"takes a whole number from 0, not {text!r}")
    return n


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Run callables for a `ledger serve` over its worker protocol.",
        epilog=f"built-in handlers: {', '.join(HANDLERS)}. SIGTERM or Ctrl-C stops claiming, "
               "lets running attempts finish and exits 0.",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--server", metavar="URL",
                       help="the ledger serve URL (env LEDGER_SERVER)")
    where.add_argument("--data-dir", metavar="DIR",
                       help="or the server of this data directory, from DIR/serve.json"
                            " (env LEDGER_DATA_DIR)")
    parser.add_argument("--api-key", metavar="KEY", default=os.environ.get("LEDGER_API_KEY"),
                        help="sent as a bearer token (env LEDGER_API_KEY)")
    parser.add_argument("--callable", metavar="NAME[=HANDLER]", action="append", required=True,
                        dest="callables",
                        help="run callable NAME with HANDLER (default: the handler NAME);"
                             " repeatable")
    parser.add_argument("--concurrency", type=positive, default=4, metavar="N",
                        help="attempts run at once (default 4)")
    parser.add_argument("--lease-ms", type=positive, default=30000, metavar="N",
                        help="the lease of each attempt, renewed every third of it"
                             " (default 30000)")
    parser.add_argument("--wait-ms", type=non_negative, default=30000, metavar="N",
                        help="how long one claim waits for work (default 30000)")
    parser.add_argument("--name", metavar="W", default=f"{socket.gethostname()}-{os.getpid()}",
                        help="the worker name recorded in started events (default HOST-PID)")
    args = parser.parse_args(argv)

    if not args.server and not args.data_dir:
        args.server = os.environ.get("LEDGER_SERVER")
        if not args.server:
            args.data_dir = os.environ.get("LEDGER_DATA_DIR")
    if not args.server and not args.data_dir:
        parser.error("--server URL (or LEDGER_SERVER) or --data-dir DIR is required")
    if args.server and not args.server.startswith(("http://", "https://")):
        parser.error(f"--server takes an http:// or https:// URL, not {args.server!r}")

    callables = {}
    for spec in args.callables:
        name, _, handler = spec.partition("=")
        handler = handler or name
        if not name:
            parser.error(f"--callable takes NAME or NAME=HANDLER, not {spec!r}")
        if handler not in HANDLERS:
            parser.error(f"--callable {spec}: no handler {handler!r}"
                         f" (there are: {', '.join(HANDLERS)})")
        callables[name] = handler
    args.callables = callables
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    server = Server(url=args.server, data_dir=args.data_dir, api_key=args.api_key)
    worker = Worker(server, args.callables, args.concurrency, args.lease_ms, args.wait_ms,
                    args.name)
    sys.exit(worker.run())


if __name__ == "__main__":
    main()
