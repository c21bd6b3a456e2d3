"""A Segment-compatible /v1/batch server on loopback, for tests.

It enforces Segment's documented HTTP API contract the way real Segment would (auth, gzip, 500,000-byte bodies,
32,000-byte events, 2,500 events per request answered 200 but dropped, required fields; a 2xx answers Segment's
`{"success": true}`, scripted ones too unless given a body of their own), records every request, every accepted
event and every contract violation, and can be scripted to answer with errors, drop connections, stall, or trickle
an answer's headers or body a piece at a time, so tests assert on what actually arrived. It can also answer each
request only after a latency, play a workspace's rate limit (`workspace_limit`: past N events in the last second,
429 with Retry-After), and write each answer (status line, headers and body) in one send (`one_write`, for
benchmarks: two small writes meet Nagle's algorithm and delayed ACKs).

    with SegmentServer(write_key="k") as server:
        server.script(429, "drop")
        ...  # send to server.url
        assert not server.violations
"""
from __future__ import annotations

import base64
import gzip
import json
import random
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

# The contract's limits, written out here rather than imported from the client so that a wrong client constant
# cannot hide itself from the tests.
BATCH_PATH = "/v1/batch"
MAX_BODY_BYTES = 500_000
MAX_EVENT_BYTES = 32_000
MAX_EVENTS = 2_500
MAX_MESSAGE_ID_CHARS = 100
REQUIRED_STRING_FIELDS = ("event", "messageId", "timestamp")
USER_FIELDS = ("userId", "anonymousId")  # one of them, at least


SUCCESS_BODY = b'{"success": true}'  # what Segment answers a request it took
TRICKLE_SECONDS = 1.0  # the default pace of "trickle_headers" and "trickle_body": one piece a second
TRICKLE_PIECES = 100  # header lines, or body bytes, trickled: about as many seconds (unless the client leaves)


@dataclass(frozen=True)
class Answer:
    """A scripted HTTP answer; its body by default (None) is Segment's {"success": true} for a 2xx (as JSON), else
    empty."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | str | None = None


@dataclass(eq=False)  # identity equality: two identical requests are still two records
class RequestRecord:
    """What one request carried and how it was answered (status None: connection dropped or still pending)."""

    method: str
    path: str
    headers: dict[str, str]
    raw_bytes: int
    body: bytes | None  # uncompressed; None when the gzip was unreadable
    events: int
    sent_at: str | None
    status: int | None = None
    received_at: float = 0.0  # UNIX seconds
    accepted_at: float | None = None  # UNIX seconds: when its events were taken (counted by a workspace limit)

    @property
    def body_bytes(self) -> int | None:
        """Uncompressed body length."""
        return None if self.body is None else len(self.body)

    @property
    def retry_count(self) -> int | None:
        """The X-Retry-Count header as an int, None when absent."""
        value = self.headers.get("X-Retry-Count")
        return None if value is None else int(value)


def _json_answer(status: int, document: dict) -> Answer:
    return Answer(status, {"Content-Type": "application/json"}, json.dumps(document))


def _compact_size(event: Any) -> int:
    return len(json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode())


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")  # Python accepts NaN and Infinity; Segment does not


def _decode(headers: dict[str, str], raw: bytes) -> tuple[bytes | None, Any]:
    """Return (uncompressed body or None, parsed JSON document or None)."""
    body = raw
    if headers.get("Content-Encoding", "").lower() == "gzip":
        try:
            body = gzip.decompress(raw)
        except (OSError, EOFError):
            return None, None
    try:
        return body, json.loads(body, parse_constant=_reject_constant)
    except ValueError:
        return body, None


def _event_problem(event: Any) -> str | None:
    """Why an event breaks the contract, or None."""
    if not isinstance(event, dict):
        return "an event is not a JSON object"
    if _compact_size(event) > MAX_EVENT_BYTES:
        return f"an event is {_compact_size(event):,} bytes, over {MAX_EVENT_BYTES:,}"
    if event.get("type") != "track":
        return f"an event has type {event.get('type')!r}, not 'track'"
    for name in REQUIRED_STRING_FIELDS:
        if not isinstance(event.get(name), str):
            return f"an event has no string {name!r}"
    if not any(isinstance(event.get(name), str) and event[name] for name in USER_FIELDS):
        return "an event has neither a userId nor an anonymousId (Segment: no_user_anon_id)"
    for name in USER_FIELDS:
        if event.get(name) is not None and not isinstance(event[name], str):
            return f"an event's {name!r} is neither a string nor null"
    if len(event["messageId"]) > MAX_MESSAGE_ID_CHARS:
        return f"a messageId has {len(event['messageId'])} chars, over {MAX_MESSAGE_ID_CHARS}"
    return None


class SegmentServer:
    """Segment's /v1/batch on 127.0.0.1 in a background thread; use as a context manager."""

    def __init__(self, write_key: str = "test-write-key", *, latency: float = 0.0, one_write: bool = False):
        """Create the server (not yet listening); requests must authenticate with write_key. Each answer is
        written `latency` seconds after its request arrived (requests are served concurrently), in one send with
        one_write."""
        self.write_key = write_key
        self.latency = latency
        self.one_write = one_write
        self._limit: tuple[int, str] | None = None  # (events per second, Retry-After)
        self._window: deque = deque()  # (UNIX time, events) of the requests accepted in the last second
        self._window_events = 0
        self.poison: Callable[[dict], bool] | None = None
        self.always: int | Answer | str | None = None  # the answer to every request: as `script` takes them
        self._faults: tuple[float, random.Random, tuple] | None = None
        self.requests: list[RequestRecord] = []
        self.accepted: list[dict] = []
        self.violations: list[str] = []
        self._script: deque = deque()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._released = threading.Event()
        self._outage: tuple[int, float, int | str] | None = None  # (first request, seconds, kind)
        self._outage_start: float | None = None
        self._httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        """Base URL to give the client (it appends /v1/batch)."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "SegmentServer":
        self._httpd = _Listener(("127.0.0.1", 0), _handler_for(self))
        # A short poll interval makes shutdown() return quickly instead of after up to half a second.
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._closing.set()
        self._released.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def script(self, *answers: int | Answer | str) -> None:
        """Queue answers, one per coming request, before normal processing: a status, an Answer, "drop",
        "stall:SECONDS" (wait, then answer 200 having accepted nothing), "accept_then_fail", "hold" (wait until
        `release()`, then answer as Segment would), "trickle_headers" (answer 200 having accepted nothing, its
        status line at once, then one header line every TRICKLE_SECONDS, TRICKLE_PIECES of them, before the
        rest), or "trickle_body" (the same, with the headers at once and a padded {"success": true} one byte
        every TRICKLE_SECONDS); "trickle_headers:SECONDS" and "trickle_body:SECONDS" set the pace."""
        for answer in answers:
            _check_action(answer)
        with self._lock:
            self._script.extend(answers)

    def release(self) -> None:
        """Let the requests held by a scripted "hold" go on."""
        self._released.set()

    def outage(self, seconds: float, kind: int | str = 503, *, after_requests: int = 0) -> None:
        """Be down for `seconds` from the arrival of the request after the next `after_requests`: answer every
        request with the status `kind`, or drop it ("drop"), or hang ("hang": no answer until the outage is over,
        then the connection is closed without one). After it, answer as Segment would."""
        with self._lock:
            self._outage = (len(self.requests) + after_requests, seconds, kind)
            self._outage_start = None

    def _outage_answer(self, record: RequestRecord) -> Answer | str | None:
        """The answer of the outage to a request, or None when none is on."""
        with self._lock:
            if self._outage is None:
                return None
            first, seconds, kind = self._outage
            if self._outage_start is None and self.requests.index(record) >= first:
                self._outage_start = record.received_at
            start = self._outage_start
        if start is None or not start <= record.received_at < start + seconds:
            return None
        if kind == "hang":
            self._closing.wait(start + seconds - time.time())
            return "drop"
        return "drop" if kind == "drop" else Answer(kind)

    def workspace_limit(self, events_per_second: int, retry_after: str = "1") -> None:
        """Play a workspace's rate limit: a request that would take the events accepted in the last second (a
        sliding window) past `events_per_second` is answered 429 with this Retry-After, and none of its events is
        accepted (a request of more events than the limit is never accepted)."""
        with self._lock:
            self._limit = (events_per_second, retry_after)

    def _within_limit(self, events: int) -> bool:
        """Whether the workspace limit, if any, takes `events` more now; if so they are counted in its window.
        Called with the lock held."""
        if self._limit is None:
            return True
        now = time.time()
        while self._window and self._window[0][0] <= now - 1.0:
            self._window_events -= self._window.popleft()[1]
        if self._window_events + events > self._limit[0]:
            return False
        self._window.append((now, events))
        self._window_events += events
        return True

    def inject_faults(self, rate: float, *, seed: int = 0, stall_seconds: float = 2.0) -> None:
        """Answer a share `rate` of requests (drawn with a seeded RNG) with a fault instead of processing
        them: 429 with Retry-After, 500, 502, 503, a dropped connection, a stall past the client's timeout,
        or accepting the events and then failing the answer."""
        kinds = (Answer(429, headers={"Retry-After": "0"}), Answer(500), Answer(502), Answer(503), "drop",
                 f"stall:{stall_seconds}", "accept_then_fail")
        with self._lock:
            self._faults = (rate, random.Random(seed), kinds)

    def accepted_ids(self) -> Counter:
        """How many times each messageId was accepted."""
        with self._lock:
            return Counter(event.get("messageId") for event in self.accepted)

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self.requests.append(record)

    def _violate(self, record: RequestRecord, problem: str) -> None:
        with self._lock:
            self.violations.append(f"request {self.requests.index(record) + 1}: {problem}")

    def _next_action(self, record: RequestRecord, document: Any) -> Answer | str:
        """The outage's answer while one lasts, else the scripted answer if one is queued (or a fault drawn), else
        the `always` answer, else the contract's answer."""
        outage = self._outage_answer(record)
        if outage is not None:
            return outage
        with self._lock:
            scripted = self._script.popleft() if self._script else None
            always = self.always
            if scripted is None and self._faults and self._faults[1].random() < self._faults[0]:
                scripted = self._faults[1].choice(self._faults[2])
        if scripted is None and always is not None:
            _check_action(always)
            scripted = always
        if scripted == "hold":
            self._released.wait()
            return self._process(record, document)
        if scripted == "accept_then_fail":
            answer = self._process(record, document)
            return Answer(500, body="accepted, then failed") if answer.status == 200 else answer
        if isinstance(scripted, int):
            return Answer(scripted)
        if scripted is not None:
            return scripted
        return self._process(record, document)

    def _process(self, record: RequestRecord, document: Any) -> Answer:
        """Answer as real Segment would, accepting the events only when the whole request is valid."""
        if record.method != "POST" or record.path != BATCH_PATH:
            return _json_answer(404, {"error": "not found"})
        if record.headers.get("Authorization") != self._expected_authorization():
            return _json_answer(401, {"error": "invalid write key"})
        problem = self._envelope_problem(record, document)
        if problem:
            return self._bad_request(record, problem)
        batch = document["batch"]
        if len(batch) > MAX_EVENTS:
            self._violate(record, f"{len(batch):,} events, over {MAX_EVENTS:,}: answered 200 and dropped them")
            return _json_answer(200, {"success": True})
        problem = next(filter(None, map(_event_problem, batch)), None)
        if problem:
            return self._bad_request(record, problem)
        if self.poison and any(self.poison(event) for event in batch):
            return _json_answer(400, {"error": "invalid event"})
        with self._lock:
            if not self._within_limit(len(batch)):
                return Answer(429, {"Content-Type": "application/json", "Retry-After": self._limit[1]},
                              json.dumps({"error": "rate limit exceeded"}))
            record.accepted_at = time.time()
            self.accepted.extend(batch)
        return _json_answer(200, {"success": True})

    def _expected_authorization(self) -> str:
        return "Basic " + base64.b64encode(f"{self.write_key}:".encode()).decode()

    def _bad_request(self, record: RequestRecord, problem: str) -> Answer:
        self._violate(record, problem)
        return _json_answer(400, {"error": problem})

    def _envelope_problem(self, record: RequestRecord, document: Any) -> str | None:
        """Why the request, apart from its events, breaks the contract, or None."""
        if record.body is None:
            return "Content-Encoding is gzip but the body is not"
        if len(record.body) > MAX_BODY_BYTES:
            return f"body is {len(record.body):,} bytes uncompressed, over {MAX_BODY_BYTES:,}"
        if not isinstance(document, dict) or not isinstance(document.get("batch"), list):
            return "body is not JSON with a 'batch' list"
        if not isinstance(document.get("sentAt"), str):
            return "body has no string 'sentAt'"
        if document.get("writeKey") != self.write_key:
            return "body 'writeKey' is missing or not the write key"
        return None

    def _stall(self, seconds: float) -> Answer:
        self._closing.wait(seconds)
        return _json_answer(200, {"success": True})


def _check_action(answer: int | Answer | str) -> None:
    """Raise ValueError unless `answer` is a scripted answer SegmentServer.script takes."""
    if isinstance(answer, str) and answer not in ("drop", "accept_then_fail", "hold") \
            and not answer.startswith(("stall:", "trickle_headers", "trickle_body")):
        raise ValueError(f"unknown scripted answer {answer!r}")
    if isinstance(answer, str) and answer.startswith("trickle_"):
        kind, _, seconds = answer.partition(":")
        if kind not in ("trickle_headers", "trickle_body") or (seconds and not float(seconds) > 0):
            raise ValueError(f"unknown scripted answer {answer!r}")


class _Listener(ThreadingHTTPServer):
    """A threading HTTP server with room for many connections waiting to be accepted (socketserver's default of
    5 resets connections when a job opens dozens at once, with requests in flight on every sending stage)."""

    request_queue_size = 256


def _handler_for(server: SegmentServer) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to one SegmentServer."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, so the client's connection pooling is exercised
        disable_nagle_algorithm = True  # headers and body go out in two writes: avoid the delayed-ACK stall

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = dict(self.headers.items())
            body, document = _decode(headers, raw)
            sent_at = document.get("sentAt") if isinstance(document, dict) else None
            batch = document.get("batch") if isinstance(document, dict) else None
            record = RequestRecord(self.command, self.path, headers, len(raw), body,
                                   len(batch) if isinstance(batch, list) else 0, sent_at, received_at=time.time())
            server._record(record)
            action = server._next_action(record, document)
            if action == "drop":
                self.close_connection = True
                return
            if isinstance(action, str) and action.startswith("stall:"):
                action = server._stall(float(action.removeprefix("stall:")))
            if isinstance(action, str) and action.startswith("trickle_"):
                kind, _, seconds = action.partition(":")
                record.status = 200
                self._trickle(kind == "trickle_headers", float(seconds) if seconds else TRICKLE_SECONDS)
                return
            if server.latency:
                server._closing.wait(record.received_at + server.latency - time.time())
            record.status = action.status
            self._write(action)

        do_GET = do_PUT = do_DELETE = do_PATCH = do_POST

        def _trickle(self, headers: bool, seconds: float) -> None:
            """Answer 200 a piece at a time (see SegmentServer.script), until done, the client leaves or the
            server closes; then close the connection."""
            self.close_connection = True
            body = SUCCESS_BODY + b" " * (TRICKLE_PIECES - len(SUCCESS_BODY))
            head = f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            try:
                self.wfile.write(b"HTTP/1.1 200 OK\r\n" + (b"" if headers else head))
                pieces = ([f"X-Trickle-{n}: .\r\n".encode() for n in range(TRICKLE_PIECES)] if headers
                          else [body[n:n + 1] for n in range(len(body))])
                for piece in pieces:
                    if server._closing.wait(seconds):
                        return
                    self.wfile.write(piece)
                if headers:
                    self.wfile.write(head + body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up

        def _write(self, answer: Answer) -> None:
            body, headers = answer.body, dict(answer.headers)
            if body is None:  # Segment's own body
                body = SUCCESS_BODY if 200 <= answer.status < 300 else b""
                if body:
                    headers.setdefault("Content-Type", "application/json")
            body = body.encode() if isinstance(body, str) else body
            try:
                self.send_response(answer.status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                if server.one_write:  # BaseHTTPRequestHandler buffers the status line and headers until here
                    self._headers_buffer.append(b"\r\n")
                    response, self._headers_buffer = b"".join(self._headers_buffer) + body, []
                    self.wfile.write(response)
                else:
                    self.end_headers()
                    self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client gave up (e.g. timed out during a stall)

        def log_message(self, format: str, *args: Any) -> None:
            """Silence the default per-request logging."""

    return Handler
