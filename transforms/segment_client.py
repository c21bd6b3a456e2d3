"""HTTP client for Segment's batch endpoint (`POST /v1/batch`), used by the sink.

Events arrive already serialized as compact JSON bytes, one `bytes` per Segment message; request bodies are
assembled by byte concatenation so an event is never serialized twice and request sizes are known exactly.
It follows the contract of Segment's HTTP tracking API: requests stay within 500,000 bytes and 2,500 events,
bodies are gzipped, transient failures are retried with exponential backoff and full jitter (honouring
Retry-After) for up to `max_retry_seconds` from the request's first attempt (the last attempt is made at that
deadline, so an outage or hang shorter than the budget costs nothing; `max_attempts` adds a cap on attempts,
none by default), a rejected batch (400/413) is split to isolate the events Segment refuses, and configuration
errors (401/403/404/3xx) stop the run. While one request is retried the caller waits, with all the requests it
has yet to send. Once a request has used up its whole budget (Segment unreachable for longer), a `Breaker`
opens: the following requests are rejected as retries_exhausted without being sent, but for one probe attempt
every OUTAGE_PROBE_SECONDS, until Segment answers again; so an outage costs one budget, not one per request (a
timeout each, when Segment does not answer at all). Clients that share a Breaker (those of one process sending
to one endpoint in one run: `shared_breaker`) share that: the first to spend its budget spares the others theirs.
An optional observer is told of every attempt, with when it started (for progress lines and warnings).

How fast requests go is a `Pacer`'s, shared like the Breaker by the clients of one process (`shared_pacer`): an
event budget (a `TokenBucket`: a request of k events takes k tokens, and carries at most a quarter of a second of
the budget, so that a workspace limit counted per second never sees a burst), lowered on 429 and restored
gradually as Segment answers 2xx again; a Retry-After pauses every request of the process; and the requests per
second of --max_requests_per_second. Every wait (pacing, pauses, retry backoffs) is told, before it begins, to an
optional `on_wait(seconds)`, which the sink reports as Beam's throttling counter.

The client knows nothing of Beam. It is not thread-safe: use one per thread (a Breaker and a Pacer are).
"""
from __future__ import annotations

import email.utils
import gzip
import json
import math
import random
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from http import HTTPStatus
from typing import Callable, Sequence

import requests
from requests.adapters import HTTPAdapter

from transforms.elements import EVENT_TOO_LARGE, REJECTED_BY_SEGMENT, RETRIES_EXHAUSTED

BATCH_PATH = "/v1/batch"
MAX_REQUEST_BYTES = 500_000
# Requests are cut below Segment's 500 KB, with the margin Segment's own libraries aim for.
DEFAULT_MAX_REQUEST_BYTES = 475_000
MAX_EVENT_BYTES = 32_000
MAX_BATCH_EVENTS = 2_500
US_ENDPOINT = "https://api.segment.io"
EU_ENDPOINT = "https://events.eu1.segmentapis.com"

_RETRY_AFTER_CAP_SECONDS = 300.0
BACKOFF_CAP_SECONDS = 30.0  # the longest wait between two attempts (but for Retry-After): how late a recovery is seen
OUTAGE_PROBE_SECONDS = 30.0  # during an outage, one attempt this often; the other requests are not sent
_EXCERPT_CHARS = 500
_SPLIT_STATUSES = frozenset({400, 413})
# Under an event budget: a request carries at most this many seconds of it (and the bucket holds as much), the
# rate is halved on a 429 at most once per _CUT_INTERVAL_SECONDS, down to _MIN_RATE_SHARE of the budget, and
# each 2xx answer gives back _RECOVERY_STEP of it.
REQUEST_SECONDS = 0.25
_CUT_INTERVAL_SECONDS = 1.0
_MIN_RATE_SHARE = 1 / 16
_RECOVERY_STEP = 0.05
_NETWORK_ERRORS = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


def format_sent_at(now: datetime) -> str:
    """Format an aware datetime as ISO-8601 UTC with milliseconds and 'Z', e.g. "2026-11-28T12:00:00.000Z"."""
    utc = now.astimezone(timezone.utc)
    return f"{utc:%Y-%m-%dT%H:%M:%S}.{utc.microsecond // 1000:03d}Z"


def request_body(payloads: Sequence[bytes], write_key: str, sent_at: str) -> bytes:
    """Assemble a /v1/batch body from already-serialized events, without re-serializing them."""
    return (b'{"batch":[' + b",".join(payloads) + b'],"sentAt":"' + sent_at.encode("ascii")
            + b'","writeKey":' + json.dumps(write_key).encode("ascii") + b"}")


def envelope_bytes(write_key: str) -> int:
    """Size of a body with no events; n >= 1 payloads make it envelope + sum(len(p)) + (n - 1) bytes."""
    return len(request_body([], write_key, format_sent_at(datetime(2000, 1, 1, tzinfo=timezone.utc))))


def request_bytes_problem(max_bytes: int, write_key: str) -> str | None:
    """Why max_bytes cannot bound requests sent with this key (it must leave room for one largest event
    and stay within Segment's limit), or None."""
    smallest = MAX_EVENT_BYTES + envelope_bytes(write_key)
    if smallest <= max_bytes <= MAX_REQUEST_BYTES:
        return None
    return f"must be between {smallest} (one largest event) and {MAX_REQUEST_BYTES}, got {max_bytes}"


def plan_batches(sizes, *, max_bytes, max_events, envelope):
    """Cut a sequence of payload sizes into consecutive ranges, each a request within both limits.

    A request of payloads p1..pn is `envelope + sum(len(p)) + (n - 1)` bytes. A payload too big to
    share a request with anything is given one of its own.
    """
    batches = []
    start, body = 0, envelope
    for index, size in enumerate(sizes):
        count = index - start
        grown = body + size + (1 if count else 0)
        if count and (grown > max_bytes or count >= max_events):
            batches.append(range(start, index))
            start, grown = index, envelope + size
        body = grown
    if start < len(sizes):
        batches.append(range(start, len(sizes)))
    return batches


class SegmentConfigError(Exception):
    """Segment refused the request in a way retrying cannot fix (401/403/404/3xx): the run must stop."""


@dataclass(frozen=True)
class Rejection:
    """An event that was not delivered: reason is "event_too_large", "rejected_by_segment" or "retries_exhausted"."""

    index: int
    reason: str
    status: int | None
    response_excerpt: str | None


@dataclass
class SendReport:
    """Outcome of one send(): every payload index appears exactly once in accepted or rejected."""

    accepted: list[int]
    rejected: list[Rejection]
    requests: int
    retries: int


@dataclass(frozen=True)
class Attempt:
    """What an observer is told after each HTTP attempt: the status (None: network error or no answer), a short
    detail, whether the request will be retried, how many attempts it has had, and when this one started (UNIX
    seconds: a hang is seen only when the attempt times out, and began that long before)."""

    status: int | None
    detail: str
    retrying: bool
    attempt: int
    started: float = 0.0
    timed_out: bool = False  # no answer (or no connection) within the timeout: Segment hangs

    @property
    def failed(self) -> bool:
        """True when the attempt was not answered with a 2xx."""
        return self.status is None or not 200 <= self.status < 300

    @property
    def transient(self) -> bool:
        """True when the failure is Segment's (unreachable, 429, 5xx): what the client retries."""
        return _is_transient(self.status)

    def describe(self) -> str:
        """What the attempt got, e.g. "503 Service Unavailable" or "ConnectionError: [Errno 111] ..."."""
        return f"{self.status} {_phrase(self.status)}" if self.status is not None else self.detail or "no answer"


@dataclass(frozen=True)
class ClientSettings:
    """Everything a SegmentClient is built from but the write key (which is resolved where it is used)."""

    endpoint: str = US_ENDPOINT
    timeout: tuple[float, float] = (5.0, 30.0)
    max_attempts: int | None = None  # None: as many as the time budget allows
    max_retry_seconds: float = 300.0
    backoff_base: float = 0.5
    max_requests_per_second: float | None = None  # of one process's clients together
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_events: int = MAX_BATCH_EVENTS
    events_per_second: float | None = None  # the event budget of one process's clients together (its share)
    requests_in_flight: int = 1  # requests a sender keeps in flight, each with a client (and a thread) of its own

    def pacer(self) -> "Pacer":
        """A new Pacer with these settings' budget and request rate."""
        return Pacer(self.events_per_second, self.max_requests_per_second)

    def client(self, write_key: str, observer: Callable[[Attempt], None] | None = None,
               breaker: "Breaker | None" = None, pacer: "Pacer | None" = None,
               on_wait: Callable[[float], None] | None = None) -> "SegmentClient":
        """A SegmentClient with these settings (its own Breaker and Pacer unless they are given)."""
        return SegmentClient(self.endpoint, write_key, timeout=self.timeout, max_attempts=self.max_attempts,
                             max_retry_seconds=self.max_retry_seconds, backoff_base=self.backoff_base,
                             max_request_bytes=self.max_request_bytes, max_events=self.max_events,
                             observer=observer, breaker=breaker, pacer=pacer or self.pacer(), on_wait=on_wait)

    def budget(self) -> str:
        """The retry budget of one request, in words."""
        attempts = f"{self.max_attempts} attempts or " if self.max_attempts else ""
        return f"{attempts}{self.max_retry_seconds:g} s per request"


@dataclass(frozen=True)
class _Answer:
    """What one HTTP attempt produced; status is None for a network error."""

    status: int | None
    text: str
    retry_after: float | None = None
    timed_out: bool = False


_ERRNO = re.compile(r"\[Errno -?\d+\][^'\")(]*")


def _short(text: str) -> str:
    """A network error in a few words: its type and errno text when there is one ("ConnectionError: [Errno 111]
    Connection refused"), else its first 120 characters."""
    kind = text.split(":", 1)[0]
    found = _ERRNO.search(text)
    return f"{kind}: {found.group(0).strip()}" if found else text.splitlines()[0][:120] if text else ""


def _is_transient(status: int | None) -> bool:
    return status is None or status in (408, 410, 429, 460) or (500 <= status < 600 and status not in (501, 505))


def _config_error(status: int, url: str) -> SegmentConfigError | None:
    """The error to stop the run with, or None when the status is not a configuration error."""
    causes = {
        401: "the write key is wrong or belongs to another region (see --segment_write_key, --segment_region)",
        403: "the write key is not allowed to send to this source (see --segment_write_key)",
        404: "the endpoint is wrong: check the region (see --segment_region)",
    }
    if status in causes:
        cause = causes[status]
    elif 300 <= status < 400:
        cause = "the endpoint redirects, so it is not Segment's API: check the region (see --segment_region)"
    else:
        return None
    return SegmentConfigError(f"Segment answered {status} {_phrase(status)} for {url}: {cause}.")


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "(unknown status)"


def _retry_after_seconds(value: str | None) -> float | None:
    """Parse Retry-After (seconds or HTTP-date) into seconds from now, capped; None when absent or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (email.utils.parsedate_to_datetime(value) - datetime.now(timezone.utc)).total_seconds()
        except (TypeError, ValueError):
            return None
    return None if math.isnan(seconds) else min(max(seconds, 0.0), _RETRY_AFTER_CAP_SECONDS)


class Breaker:
    """Whether requests are sent: closed (all are) until a request has used up its retry budget; then open, and
    only one attempt every OUTAGE_PROBE_SECONDS is made (a probe), until one is answered. Thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._open = False
        self._last_probe = 0.0
        self._last_answer: _Answer | None = None

    def admit(self) -> tuple[bool, bool, "_Answer | None"]:
        """(send this request, as a probe, the last failure): when open, one caller per probe interval is let
        through, and the others are told the last failure."""
        with self._lock:
            if not self._open:
                return True, False, None
            now = self._clock()
            if now - self._last_probe >= OUTAGE_PROBE_SECONDS:
                self._last_probe = now
                return True, True, None
            return False, False, self._last_answer

    def trip(self, answer: "_Answer") -> None:
        """A request used up its budget (or a probe failed): open, with this last failure."""
        with self._lock:
            if not self._open:
                self._open, self._last_probe = True, self._clock()
            self._last_answer = answer

    def reset(self) -> None:
        """Segment answered: closed."""
        with self._lock:
            self._open = False


_PROCESS_SHARED: dict = {}
_PROCESS_SHARED_LOCK = threading.Lock()


def process_shared(kind: type, name: str, make: Callable[[], object]):
    """The one object of this `kind` and `name` (say, of a run and an endpoint) in this process, made by `make()`
    for the first caller and shared by every caller after."""
    with _PROCESS_SHARED_LOCK:
        found = _PROCESS_SHARED.get((kind, name))
        if found is None:
            found = _PROCESS_SHARED[(kind, name)] = make()
        return found


def shared_breaker(name: str) -> Breaker:
    """The one Breaker of this process of that name, shared by the clients that ask for it."""
    return process_shared(Breaker, name, Breaker)


def request_events(events_per_second: float) -> int:
    """The most events one request carries under this budget: REQUEST_SECONDS of it, at least one."""
    return max(1, int(events_per_second * REQUEST_SECONDS))


class TokenBucket:
    """A token bucket; pure (the caller gives the time) and not thread-safe.

    Tokens come at `rate` a second, up to `capacity`; it starts with `tokens` (default: full). `reserve(n, now)`
    takes n tokens at once and returns how long to wait before using them: the balance may go below zero (a
    request larger than the capacity still goes, later), and the callers after wait for that debt to be repaid.
    """

    def __init__(self, rate: float, capacity: float, now: float, tokens: float | None = None):
        if not rate > 0 or capacity < 0:
            raise ValueError(f"a token bucket needs a positive rate and a capacity of 0 or more, got {rate}, {capacity}")
        self.rate = rate
        self.capacity = capacity
        self._tokens = capacity if tokens is None else tokens
        self._updated = now

    def _refill(self, now: float) -> None:
        if now > self._updated:
            self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
            self._updated = now

    def tokens(self, now: float) -> float:
        """The balance at `now` (below zero: owed)."""
        self._refill(now)
        return self._tokens

    def reserve(self, n: float, now: float) -> float:
        """Take n tokens; the seconds from `now` until they are paid for."""
        self._refill(now)
        self._tokens -= n
        return max(0.0, -self._tokens / self.rate)

    def set_rate(self, rate: float, now: float) -> None:
        """Tokens come at `rate` from `now` on."""
        if not rate > 0:
            raise ValueError(f"a token bucket needs a positive rate, got {rate}")
        self._refill(now)
        self.rate = rate


class Pacer:
    """How fast the clients that share it send; thread-safe.

    With `events_per_second` (a budget), a request of k events waits for k tokens of a TokenBucket holding one
    request's worth (`max_request_events`, REQUEST_SECONDS of the budget), which starts empty (workers that start
    together do not burst together: from its start, a process never sends more than its budget); a 429 halves the rate (at most once per
    _CUT_INTERVAL_SECONDS, down to _MIN_RATE_SHARE of the budget), and each 2xx answer gives back _RECOVERY_STEP of
    the budget until the rate is the budget again. With `requests_per_second`, request starts are kept that far
    apart. With or without them, an answer with Retry-After pauses every request until it has passed.
    `acquire` blocks (with `sleep`) and tells `on_wait(seconds)` of each wait before it begins.
    """

    def __init__(self, events_per_second: float | None = None, requests_per_second: float | None = None, *,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        now = clock()
        self.budget = events_per_second
        self.max_request_events = request_events(events_per_second) if events_per_second else None
        self._events = (TokenBucket(events_per_second, self.max_request_events, now, tokens=0)
                        if events_per_second else None)
        self._requests = TokenBucket(requests_per_second, 1, now) if requests_per_second else None
        self._paused_until = -math.inf
        self._last_cut = -math.inf

    @property
    def rate(self) -> float | None:
        """Events per second allowed now (None: no budget)."""
        with self._lock:
            return self._events.rate if self._events else None

    def acquire(self, events: int, on_wait: Callable[[float], None] | None = None) -> float:
        """Wait until a request of `events` events may start; the seconds waited."""
        waited = self._sit_out_pause(on_wait)
        with self._lock:
            now = self._clock()
            wait = max(self._events.reserve(events, now) if self._events else 0.0,
                       self._requests.reserve(1, now) if self._requests else 0.0)
        waited += self._wait(wait, on_wait)
        # A pause that began while this request waited for its turn holds it too.
        return waited + self._sit_out_pause(on_wait)

    def wait_for_turn(self, on_wait: Callable[[float], None] | None = None) -> float:
        """Wait, without taking anything, until a request could start: no pause, nothing owed to the buckets by
        the requests already let go; the seconds waited. A caller that hands requests to other threads waits here
        first, so that the requests it hands on do not queue in the pacer, taking room in flight."""
        with self._lock:
            now = self._clock()
            owed = [self._paused_until - now]
            for bucket in (self._events, self._requests):
                if bucket is not None:
                    owed.append(-bucket.tokens(now) / bucket.rate)
        return self._wait(max(owed), on_wait)

    def _sit_out_pause(self, on_wait) -> float:
        waited = 0.0
        while True:
            with self._lock:
                pause = self._paused_until - self._clock()
            if pause <= 0:
                return waited
            waited += self._wait(pause, on_wait)

    def _wait(self, seconds: float, on_wait) -> float:
        if seconds <= 0:
            return 0.0
        if on_wait is not None:
            on_wait(seconds)
        self._sleep(seconds)
        return seconds

    def answered(self, status: int | None, retry_after: float | None = None) -> None:
        """What an attempt got: a 429 lowers the rate, a 2xx restores some of it, a Retry-After pauses all."""
        with self._lock:
            now = self._clock()
            if retry_after:
                self._paused_until = max(self._paused_until, now + retry_after)
            if self._events is None or status is None:
                return
            rate = self._events.rate
            if status == 429:
                if now - self._last_cut >= _CUT_INTERVAL_SECONDS:
                    self._last_cut = now
                    self._events.set_rate(max(rate / 2, self.budget * _MIN_RATE_SHARE), now)
            elif 200 <= status < 300 and rate < self.budget:
                self._events.set_rate(min(self.budget, rate + self.budget * _RECOVERY_STEP), now)


def shared_pacer(name: str, settings: ClientSettings) -> Pacer:
    """The one Pacer of this process of that name, made from the settings of the first client that asks for it,
    shared by the clients that ask for it."""
    return process_shared(Pacer, name, settings.pacer)


class SegmentClient:
    """Sends serialized events to Segment's /v1/batch over one pooled, TLS-verifying requests.Session."""

    def __init__(self, endpoint: str, write_key: str, *, timeout: tuple[float, float] = (5.0, 30.0),
                 max_attempts: int | None = None, max_retry_seconds: float = 300.0, backoff_base: float = 0.5,
                 backoff_cap: float = BACKOFF_CAP_SECONDS, max_requests_per_second: float | None = None,
                 gzip_level: int = 6, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
                 max_events: int = MAX_BATCH_EVENTS, observer: Callable[[Attempt], None] | None = None,
                 breaker: Breaker | None = None, pacer: Pacer | None = None,
                 on_wait: Callable[[float], None] | None = None,
                 user_agent: str = "braze-currents-to-segment", sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic, rng: Callable[[], float] = random.random):
        """Configure the client; endpoint is the base URL (US_ENDPOINT, EU_ENDPOINT or a test server).

        Requests are cut to at most max_request_bytes and max_events (and the pacer's max_request_events);
        observer(Attempt) is called after each HTTP attempt. A request is retried for up to max_retry_seconds (and
        max_attempts, when given); `breaker` (shared with other clients, or the client's own) holds requests back
        once one has used that up. `pacer` (shared, or the client's own, pacing max_requests_per_second) says
        when a request may start; on_wait(seconds) is told of every wait before it begins.
        """
        if not write_key:
            raise ValueError("the Segment write key is empty")
        if not 0 < max_request_bytes <= MAX_REQUEST_BYTES or not 0 < max_events <= MAX_BATCH_EVENTS:
            raise ValueError(f"requests must stay within {MAX_REQUEST_BYTES} bytes and {MAX_BATCH_EVENTS} events")
        self._url = endpoint.rstrip("/") + BATCH_PATH
        self._write_key = write_key
        self._envelope_bytes = envelope_bytes(write_key)
        self._timeout = timeout
        self._max_attempts = max_attempts
        self._max_retry_seconds = max_retry_seconds
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._pacer = pacer or Pacer(requests_per_second=max_requests_per_second, clock=clock, sleep=sleep)
        self._on_wait = on_wait
        self._gzip_level = gzip_level
        self._max_request_bytes = max_request_bytes
        self._max_events = min(max_events, self._pacer.max_request_events or max_events)
        self._observer = observer
        self._breaker = breaker or Breaker(clock)
        self._sleep = sleep
        self._clock = clock
        self._rng = rng
        self._session = requests.Session()
        self._session.mount("https://", HTTPAdapter())
        self._session.mount("http://", HTTPAdapter())
        self._session.auth = (write_key, "")
        self._session.headers.update({"Content-Type": "application/json", "Content-Encoding": "gzip",
                                      "User-Agent": user_agent})

    def __repr__(self) -> str:
        return f"SegmentClient(url={self._url!r})"

    def close(self) -> None:
        """Close the pooled connections."""
        self._session.close()

    def send(self, payloads: Sequence[bytes]) -> SendReport:
        """Deliver the payloads; raise SegmentConfigError on 401/403/404/3xx, otherwise report every index."""
        report = SendReport(accepted=[], rejected=[], requests=0, retries=0)
        sendable = []
        for index, payload in enumerate(payloads):
            if len(payload) > MAX_EVENT_BYTES:
                report.rejected.append(Rejection(index, EVENT_TOO_LARGE, None, None))
            else:
                sendable.append(index)
        for batch in plan_batches([len(payloads[i]) for i in sendable], max_bytes=self._max_request_bytes,
                                  max_events=self._max_events, envelope=self._envelope_bytes):
            self._send_group(sendable[batch.start:batch.stop], payloads, report)
        return report

    def _send_group(self, group: list[int], payloads: Sequence[bytes], report: SendReport) -> None:
        """Send one request's events; on 400/413 split in halves so only the refused events end up rejected."""
        answer, exhausted = self._deliver([payloads[index] for index in group], report)
        if answer.status is not None and 200 <= answer.status < 300:
            report.accepted.extend(group)
        elif answer.status in _SPLIT_STATUSES and len(group) > 1:
            half = len(group) // 2
            self._send_group(group[:half], payloads, report)
            self._send_group(group[half:], payloads, report)
        else:
            reason = RETRIES_EXHAUSTED if exhausted else REJECTED_BY_SEGMENT
            excerpt = answer.text[:_EXCERPT_CHARS]
            report.rejected.extend(Rejection(index, reason, answer.status, excerpt) for index in group)

    def _deliver(self, batch: list[bytes], report: SendReport) -> tuple[_Answer, bool]:
        """POST until a non-transient answer or the retry budget is spent; return (last answer, exhausted)."""
        admitted, probe, last = self._breaker.admit()
        if not admitted:
            return _Answer(last.status, f"not sent: Segment's last answers failed (last: {last.status or ''} "
                                        f"{last.text[:200]}); next probe within {OUTAGE_PROBE_SECONDS:g} s"), True
        deadline = self._clock() + self._max_retry_seconds
        attempt = 0
        while True:
            self._pacer.acquire(len(batch), self._on_wait)
            started = time.time()
            answer = self._post(batch, attempt)
            report.requests += 1
            if answer.status is not None and (error := _config_error(answer.status, self._url)):
                self._tell(answer, False, attempt, started)
                raise error
            if not _is_transient(answer.status):
                self._breaker.reset()
                self._tell(answer, False, attempt, started)
                return answer, False
            attempt += 1
            remaining = deadline - self._clock()
            if probe or remaining <= 0 or (self._max_attempts and attempt >= self._max_attempts):
                self._breaker.trip(answer)
                self._tell(answer, False, attempt - 1, started)
                return answer, True
            self._tell(answer, True, attempt - 1, started)
            # The last wait ends at the deadline, where one more attempt is made.
            self._wait(min(self._backoff_seconds(attempt - 1, answer.retry_after), remaining))
            report.retries += 1

    def _wait(self, seconds: float) -> None:
        if self._on_wait is not None and seconds > 0:
            self._on_wait(seconds)
        self._sleep(seconds)

    def _tell(self, answer: _Answer, retrying: bool, attempt: int, started: float) -> None:
        if self._observer is not None:
            self._observer(Attempt(answer.status, _short(answer.text) if answer.status is None else "", retrying,
                                   attempt + 1, started, answer.timed_out))

    def _backoff_seconds(self, attempt: int, retry_after: float | None) -> float:
        jitter = self._rng() * min(self._backoff_cap, self._backoff_base * 2 ** attempt)
        return jitter if retry_after is None else min(max(retry_after, jitter), _RETRY_AFTER_CAP_SECONDS)

    def _post(self, batch: list[bytes], attempt: int) -> _Answer:
        """One HTTP attempt with a fresh sentAt; network errors become an answer without status. The pacer is
        told the answer."""
        answer = self._attempt(batch, attempt)
        self._pacer.answered(answer.status, answer.retry_after)
        return answer

    def _attempt(self, batch: list[bytes], attempt: int) -> _Answer:
        body = request_body(batch, self._write_key, format_sent_at(datetime.now(timezone.utc)))
        try:
            response = self._session.post(
                self._url, data=gzip.compress(body, compresslevel=self._gzip_level),
                headers={"X-Retry-Count": str(attempt)}, timeout=self._timeout, allow_redirects=False)
        except requests.exceptions.ConnectTimeout as error:
            return _Answer(None, f"{type(error).__name__}: no connection within {self._timeout[0]:g} s", timed_out=True)
        except requests.Timeout as error:
            return _Answer(None, f"{type(error).__name__}: no answer within {self._timeout[1]:g} s", timed_out=True)
        except _NETWORK_ERRORS as error:
            return _Answer(None, f"{type(error).__name__}: {error}")
        return _Answer(response.status_code, response.text, _retry_after_seconds(response.headers.get("Retry-After")))
