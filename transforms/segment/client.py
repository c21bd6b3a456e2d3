"""The client for Segment's batch endpoint (`POST /v1/batch`).

Events arrive already serialized (see transforms.segment.api). A `SegmentClient` follows the contract of Segment's
HTTP tracking API: requests stay within the byte and event bounds of its ClientSettings, bodies are gzipped,
transient failures are retried with exponential backoff and full jitter (honouring Retry-After) for up to
`max_retry_seconds` from the request's first attempt (the last attempt is made at that deadline, so an outage or
hang shorter than the budget costs nothing; `max_attempts` adds a cap on attempts, none by default), a refused
batch (400/413) is split to isolate the events Segment refuses, and configuration errors (401/403/404/3xx) stop the
run. While one request is retried the caller waits. Past the budget, its events are rejected as retries_exhausted;
but with a Breaker that holds (a watch), the request waits instead, probing Segment now and then, until Segment
answers, or its events are rejected as held_back once the watch has given up on Segment (see
transforms.segment.pacing). The `Breaker` and the `Pacer` it is given are shared by the clients of a process; an
optional observer is told of every attempt, with when it started (for progress lines and warnings), and
`on_wait(seconds)` of every wait before it begins.

Knows nothing of Beam; imports no Beam module. A client is not thread-safe: use one per thread.
"""
from __future__ import annotations

import email.utils
import gzip
import math
import random
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Sequence

import requests
from requests.adapters import HTTPAdapter

from currents_to_segment.transforms.segment.api import (
    BATCH_PATH, DEFAULT_MAX_REQUEST_BYTES, EVENT_TOO_LARGE, MAX_BATCH_EVENTS, MAX_EVENT_BYTES, MAX_REQUEST_BYTES,
    HELD_BACK, REJECTED_BY_SEGMENT, RETRIES_EXHAUSTED, SPLIT_STATUSES, US_ENDPOINT, Attempt, Rejection, SendReport,
    config_error, envelope_bytes, format_sent_at, is_transient, plan_batches, request_body)
from currents_to_segment.transforms.segment.pacing import GIVEN_UP, OUTAGE_PROBE_SECONDS, PROBE, Breaker, Pacer

_RETRY_AFTER_CAP_SECONDS = 300.0
BACKOFF_CAP_SECONDS = 30.0  # the longest wait between two attempts (but for Retry-After): how late a recovery is seen
_EXCERPT_CHARS = 500
USER_AGENT = "braze-currents-to-segment"
GZIP_LEVEL = 6
_NETWORK_ERRORS = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


@dataclass(frozen=True)
class ClientSettings:
    """Everything a SegmentClient is built from but the write key (which is resolved where it is used)."""

    endpoint: str = US_ENDPOINT
    timeout: tuple[float, float] = (5.0, 30.0)
    max_attempts: int | None = None  # None: as many as the time budget allows
    max_retry_seconds: float = 300.0
    backoff_base: float = 0.5
    backoff_cap: float = BACKOFF_CAP_SECONDS  # the longest wait between two attempts (but for Retry-After)
    max_requests_per_second: float | None = None  # of one process's clients together
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_events: int = MAX_BATCH_EVENTS
    events_per_second: float | None = None  # the event budget of one process's clients together (its share)
    requests_in_flight: int = 1  # requests a sender keeps in flight, each with a client (and a thread) of its own
    probe_seconds: float = OUTAGE_PROBE_SECONDS  # during an outage, one attempt this often
    # A watch: requests are held during an outage (not dead-lettered) for up to this long; None: a batch run.
    max_outage_seconds: float | None = None

    def retry_budget(self) -> str:
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


class SegmentClient:
    """Sends serialized events to Segment's /v1/batch over one pooled, TLS-verifying requests.Session."""

    def __init__(self, write_key: str, settings: ClientSettings = ClientSettings(), *,
                 observer: Callable[[Attempt], None] | None = None, breaker: Breaker | None = None,
                 pacer: Pacer | None = None, on_wait: Callable[[float], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                 rng: Callable[[], float] = random.random):
        """A client of `settings` (endpoint: US_ENDPOINT, EU_ENDPOINT or a test server).

        Requests are cut to at most settings.max_request_bytes and settings.max_events; observer(Attempt) is
        called after each HTTP attempt. A request is retried for up to settings.max_retry_seconds (and
        max_attempts, when given); `breaker` (shared with other clients, or the client's own) holds requests back
        once one has used that up. `pacer` (shared, or the client's own, of the settings' budget and request rate)
        says when a request may start; on_wait(seconds) is told of every wait before it begins.
        """
        if not write_key:
            raise ValueError("the Segment write key is empty")
        if not 0 < settings.max_request_bytes <= MAX_REQUEST_BYTES or not 0 < settings.max_events <= MAX_BATCH_EVENTS:
            raise ValueError(f"requests must stay within {MAX_REQUEST_BYTES} bytes and {MAX_BATCH_EVENTS} events")
        self._settings = settings
        self._url = settings.endpoint.rstrip("/") + BATCH_PATH
        self._write_key = write_key
        self._envelope_bytes = envelope_bytes(write_key)
        self._pacer = pacer or Pacer(settings.events_per_second, settings.max_requests_per_second, clock=clock,
                                     sleep=sleep)
        self._on_wait = on_wait
        self._observer = observer
        self._observing = observer  # this send's
        self._breaker = breaker or Breaker(clock, probe_seconds=settings.probe_seconds,
                                           max_outage_seconds=settings.max_outage_seconds)
        self._sleep = sleep
        self._clock = clock
        self._rng = rng
        self._session = requests.Session()
        self._session.mount("https://", HTTPAdapter())
        self._session.mount("http://", HTTPAdapter())
        self._session.auth = (write_key, "")
        self._session.headers.update({"Content-Type": "application/json", "Content-Encoding": "gzip",
                                      "User-Agent": USER_AGENT})

    def __repr__(self) -> str:
        return f"SegmentClient(url={self._url!r})"

    def close(self) -> None:
        """Close the pooled connections."""
        self._session.close()

    def send(self, payloads: Sequence[bytes], observer: Callable[[Attempt], None] | None = None) -> SendReport:
        """Deliver the payloads; raise SegmentConfigError on 401/403/404/3xx, otherwise report every index.
        `observer`, when given, is told of this send's attempts instead of the client's own."""
        self._observing = observer or self._observer
        report = SendReport(accepted=[], rejected=[], requests=0, retries=0)
        sendable = []
        for index, payload in enumerate(payloads):
            if len(payload) > MAX_EVENT_BYTES:
                report.rejected.append(Rejection(index, EVENT_TOO_LARGE, None, None))
            else:
                sendable.append(index)
        for batch in plan_batches([len(payloads[i]) for i in sendable], max_bytes=self._settings.max_request_bytes,
                                  max_events=self._settings.max_events, envelope=self._envelope_bytes):
            self._send_group(sendable[batch.start:batch.stop], payloads, report)
        return report

    def _send_group(self, group: list[int], payloads: Sequence[bytes], report: SendReport) -> None:
        """Send one request's events; on 400/413 split in halves so only the refused events end up rejected."""
        answer, failure = self._deliver([payloads[index] for index in group], report)
        if answer.status is not None and 200 <= answer.status < 300:
            report.accepted.extend(group)
        elif answer.status in SPLIT_STATUSES and len(group) > 1:
            half = len(group) // 2
            self._send_group(group[:half], payloads, report)
            self._send_group(group[half:], payloads, report)
        else:
            excerpt = answer.text[:_EXCERPT_CHARS]
            report.rejected.extend(Rejection(index, failure or REJECTED_BY_SEGMENT, answer.status, excerpt)
                                   for index in group)

    def _deliver(self, batch: list[bytes], report: SendReport) -> tuple[_Answer, str | None]:
        """POST until a non-transient answer, or the budget is spent (RETRIES_EXHAUSTED), or, with a breaker that
        holds, the watch gave up on Segment (HELD_BACK); return (last answer, that failure or None)."""
        admitted, probe, last = self._breaker.admit()
        while True:
            if not admitted:
                if not self._breaker.holds:
                    return _Answer(last.status, f"not sent: Segment's last answers failed (last: {last.status or ''} "
                                                f"{last.text[:200]}); next probe within "
                                                f"{self._settings.probe_seconds:g} s"), RETRIES_EXHAUSTED
                turn = self._breaker.wait_for_turn(self._on_wait)  # a watch holds the request until Segment answers
                if turn == GIVEN_UP:
                    last = last or _Answer(None, "")
                    return _Answer(last.status, f"held back: the watch gave up on Segment ({self._breaker.gave_up}); "
                                                f"last answer: {last.status or ''} {last.text[:200]}"), HELD_BACK
                probe = turn == PROBE
            answer, exhausted = self._attempts(batch, report, probe)
            if not exhausted:
                return answer, None
            if not self._breaker.holds:
                return answer, RETRIES_EXHAUSTED
            admitted, last = False, answer

    def _attempts(self, batch: list[bytes], report: SendReport, probe: bool) -> tuple[_Answer, bool]:
        """POST until a non-transient answer or the retry budget is spent (a probe: one attempt); return (last
        answer, exhausted)."""
        first = self._clock()
        deadline = first + self._settings.max_retry_seconds
        attempt = 0
        while True:
            self._pacer.acquire(len(batch), self._on_wait)
            started = time.time()
            answer = self._post(batch, attempt)
            report.requests += 1
            if answer.status is not None and (error := config_error(answer.status, self._url)):
                self._tell(answer, False, attempt, started)
                raise error
            if not is_transient(answer.status):
                self._breaker.reset()
                self._tell(answer, False, attempt, started)
                return answer, False
            attempt += 1
            remaining = deadline - self._clock()
            if probe or remaining <= 0 or (self._settings.max_attempts and attempt >= self._settings.max_attempts):
                self._breaker.trip(answer, since=first)
                self._tell(answer, False, attempt - 1, started)
                return answer, True
            self._tell(answer, True, attempt - 1, started)
            self._breaker.failed()
            # The last wait ends at the deadline, where one more attempt is made.
            self._wait(min(self._backoff_seconds(attempt - 1, answer.retry_after), remaining))
            report.retries += 1

    def _wait(self, seconds: float) -> None:
        if self._on_wait is not None and seconds > 0:
            self._on_wait(seconds)
        self._sleep(seconds)

    def _tell(self, answer: _Answer, retrying: bool, attempt: int, started: float) -> None:
        if self._observing is not None:
            self._observing(Attempt(answer.status, _short(answer.text) if answer.status is None else "", retrying,
                                   attempt + 1, started, answer.timed_out))

    def _backoff_seconds(self, attempt: int, retry_after: float | None) -> float:
        jitter = self._rng() * min(self._settings.backoff_cap, self._settings.backoff_base * 2 ** attempt)
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
                self._url, data=gzip.compress(body, compresslevel=GZIP_LEVEL),
                headers={"X-Retry-Count": str(attempt)}, timeout=self._settings.timeout, allow_redirects=False)
        except requests.exceptions.ConnectTimeout as error:
            return _Answer(None, f"{type(error).__name__}: no connection within {self._settings.timeout[0]:g} s", timed_out=True)
        except requests.Timeout as error:
            return _Answer(None, f"{type(error).__name__}: no answer within {self._settings.timeout[1]:g} s", timed_out=True)
        except _NETWORK_ERRORS as error:
            return _Answer(None, f"{type(error).__name__}: {error}")
        return _Answer(response.status_code, response.text, _retry_after_seconds(response.headers.get("Retry-After")))
