"""The client for Segment's batch endpoint (`POST /v1/batch`).

Events arrive already serialized (see transforms.segment.api). A `SegmentClient` follows the contract of Segment's
HTTP tracking API: requests stay within the byte and event bounds of its ClientSettings, bodies are gzipped,
each attempt has a deadline of its own (the read part of `timeout`, for the whole answer: a server trickling its
headers or its body is cut off there, and the attempt is a timeout), transient failures are retried with
exponential backoff and full jitter (honouring Retry-After, but never waiting past the budget) for up to
`max_retry_seconds` from the request's first attempt (the last attempt is made at that deadline, so an outage or
hang shorter than the budget costs nothing; `max_attempts` adds a cap on attempts, none by default), a refused
batch (400/413) is split to isolate the events Segment refuses (until a `RefusalBreaker` says Segment refuses
everything: the events not sent yet are then rejected without a request), and configuration errors
(401/403/404/3xx, or a 2xx whose body is not Segment's JSON: not Segment's API) stop the run. While one request is
retried the caller waits. Past the budget, its events are rejected as retries_exhausted;
but with a Breaker that holds (a watch), the request waits instead, probing Segment now and then, until Segment
answers, or its events are rejected as held_back once the watch has given up on Segment (see
transforms.segment.pacing). The `Breaker`, `RefusalBreaker` and `Pacer` it is given are shared by the clients of a
process; an
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
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Sequence

import requests
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.poolmanager import pool_classes_by_scheme as _DEFAULT_POOL_CLASSES

from currents_to_segment.transforms.segment.api import (
    BATCH_PATH, DEFAULT_MAX_REQUEST_BYTES, EVENT_TOO_LARGE, MAX_BATCH_EVENTS, MAX_EVENT_BYTES, MAX_REQUEST_BYTES,
    HELD_BACK, REJECTED_BY_SEGMENT, RETRIES_EXHAUSTED, SPLIT_STATUSES, US_ENDPOINT, Attempt, Rejection, SendReport,
    config_error, envelope_bytes, format_sent_at, is_transient, not_segments_answer, plan_batches, request_body)
from currents_to_segment.transforms.segment.pacing import (
    GIVEN_UP, OUTAGE_PROBE_SECONDS, PROBE, Breaker, Pacer, RefusalBreaker)

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
    # (connect, answer): a connection is opened within the first; the second is the deadline of a whole attempt
    # (the request sent, the answer's headers and body read), and of each read.
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



_ATTEMPT = threading.local()  # the deadline of the attempt this thread is making (`_Deadline`), if any
_RECHECK_SECONDS = 0.05  # past the deadline, how often to look again for a connection still being opened


class _Deadline:
    """The deadline of one attempt: at it, the connections of the attempt (told by `watch`) are shut down, so that a
    read blocked on one (headers or a body trickling in, each byte within the read timeout) ends at once; `fired`
    then says so. A connection still being opened is shut down as soon as it is open (opening it is bounded by the
    connect timeout). `end()` once the attempt is over: nothing is shut down after it."""

    def __init__(self, seconds: float):
        self._lock = threading.Lock()
        self._watched: list = []  # urllib3 connections, and the responses read from them
        self._over = False
        self.fired = False
        self._timer = self._arm(seconds)

    def _arm(self, seconds: float) -> threading.Timer:
        timer = threading.Timer(seconds, self._fire)
        timer.daemon = True
        timer.start()
        return timer

    def watch(self, connection_or_response) -> None:
        with self._lock:
            self._watched.append(connection_or_response)
            if self.fired and not self._over:
                self._shut_down()

    def _fire(self) -> None:
        with self._lock:
            if self._over:
                return
            self.fired = True
            if not self._shut_down():
                self._timer = self._arm(_RECHECK_SECONDS)

    def _shut_down(self) -> bool:
        """Under the lock: shut down what is watched; whether anything was."""
        done = False
        for watched in self._watched:
            try:
                if hasattr(watched, "sock"):  # a connection: its socket while open (None before and once closed)
                    if watched.sock is not None:
                        # socket.socket's own shutdown, not SSLSocket's (which would unwrap it under the reader).
                        socket.socket.shutdown(watched.sock, socket.SHUT_RDWR)
                        done = True
                elif hasattr(watched, "shutdown"):  # a urllib3 response (2.3+): its socket, even once handed to it
                    watched.shutdown()
                    done = True
            except (OSError, ValueError, RuntimeError):
                pass  # already closed, or handed back to the pool by a read that the shutdown just ended
        return done

    def end(self) -> None:
        with self._lock:
            self._over = True
            self._timer.cancel()


def _watched(pool_class: type) -> type:
    """A urllib3 pool class whose connections are watched by the deadline of the attempt that uses them."""

    class Watched(pool_class):
        def _make_request(self, conn, *args, **kwargs):  # pylint: disable=arguments-differ
            deadline = getattr(_ATTEMPT, "deadline", None)
            if deadline is not None:
                deadline.watch(conn)
            return super()._make_request(conn, *args, **kwargs)

    Watched.__name__ = Watched.__qualname__ = f"Watched{pool_class.__name__}"
    return Watched


_WATCHED_POOLS = {"http": _watched(HTTPConnectionPool), "https": _watched(HTTPSConnectionPool)}


class _WatchedAdapter(HTTPAdapter):
    """requests' adapter, with pools whose connections an attempt's deadline can shut down (a SOCKS proxy's pools,
    of other classes, are left as they are: only the per-read timeout bounds those)."""

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _WATCHED_POOLS

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if manager.pool_classes_by_scheme is _DEFAULT_POOL_CLASSES:
            manager.pool_classes_by_scheme = _WATCHED_POOLS
        return manager


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
                 pacer: Pacer | None = None, refusals: RefusalBreaker | None = None,
                 on_wait: Callable[[float], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                 rng: Callable[[], float] = random.random):
        """A client of `settings` (endpoint: US_ENDPOINT, EU_ENDPOINT or a test server).

        Requests are cut to at most settings.max_request_bytes and settings.max_events; observer(Attempt) is
        called after each HTTP attempt. A request is retried for up to settings.max_retry_seconds (and
        max_attempts, when given); `breaker` (shared with other clients, or the client's own) holds requests back
        once one has used that up. `pacer` (shared, or the client's own, of the settings' budget and request rate)
        says when a request may start; on_wait(seconds) is told of every wait before it begins. `refusals`
        (shared, or the client's own) stops the sending once Segment refuses everything.
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
        self._refusals = refusals or RefusalBreaker(clock, probe_seconds=settings.probe_seconds)
        self._sleep = sleep
        self._clock = clock
        self._rng = rng
        self._session = requests.Session()
        self._session.mount("https://", _WatchedAdapter())
        self._session.mount("http://", _WatchedAdapter())
        self._session.auth = (write_key, "")
        self._session.headers.update({"Content-Type": "application/json", "Content-Encoding": "gzip",
                                      "User-Agent": USER_AGENT})

    def __repr__(self) -> str:
        return f"SegmentClient(url={self._url!r})"

    def close(self) -> None:
        """Close the pooled connections."""
        self._session.close()

    def send(self, payloads: Sequence[bytes], observer: Callable[[Attempt], None] | None = None) -> SendReport:
        """Deliver the payloads; raise SegmentConfigError on 401/403/404/3xx or a 2xx that is not Segment's, otherwise
        report every index.
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
        """Send one request's events; on 400/413 split in halves so only the refused events end up rejected. Once
        the RefusalBreaker says Segment refuses everything, the events are rejected without a request."""
        stopped = self._refusals.stopped()
        if stopped:
            status, why = stopped
            report.rejected.extend(Rejection(index, REJECTED_BY_SEGMENT, status, why) for index in group)
            return
        answer, failure = self._deliver([payloads[index] for index in group], report)
        if answer.status is not None and 200 <= answer.status < 300:
            self._refusals.accepted()
            report.accepted.extend(group)
        elif answer.status in SPLIT_STATUSES and len(group) > 1:
            half = len(group) // 2
            self._send_group(group[:half], payloads, report)
            self._send_group(group[half:], payloads, report)
        else:
            if answer.status in SPLIT_STATUSES:
                self._refusals.refused(answer.status, answer.text)
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
            # A Retry-After pause is sat out for no longer than the budget leaves (the attempt is then made at the
            # deadline, as after a backoff).
            self._pacer.acquire(len(batch), self._on_wait, max_pause=deadline - self._clock())
            started = time.time()
            answer = self._post(batch, attempt, deadline)
            report.requests += 1
            if answer.status is not None and (error := config_error(answer.status, self._url) or (
                    200 <= answer.status < 300 and not_segments_answer(answer.status, answer.text, self._url))):
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
            # The last wait ends at the deadline, where one more attempt is made (whatever Retry-After asks).
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

    def _post(self, batch: list[bytes], attempt: int, deadline: float) -> _Answer:
        """One HTTP attempt with a fresh sentAt; network errors become an answer without status. The pacer is
        told the answer, its Retry-After cut to what is left of the request's budget (`deadline`, on the client's
        clock): a pause of every request of the process never outlasts it."""
        answer = self._attempt(batch, attempt)
        retry_after = answer.retry_after
        if retry_after is not None:
            retry_after = min(retry_after, max(deadline - self._clock(), 0.0))
        self._pacer.answered(answer.status, retry_after)
        return answer

    def _attempt(self, batch: list[bytes], attempt: int) -> _Answer:
        """POST once; the whole attempt (connection, request, headers and body of the answer) is given the read
        part of the timeout, after which its connection is shut down and it is a timeout."""
        body = gzip.compress(request_body(batch, self._write_key, format_sent_at(datetime.now(timezone.utc))),
                             compresslevel=GZIP_LEVEL)
        connect, answer_seconds = self._settings.timeout
        deadline = _ATTEMPT.deadline = _Deadline(answer_seconds)
        response = None
        try:
            response = self._session.post(self._url, data=body, headers={"X-Retry-Count": str(attempt)},
                                          timeout=self._settings.timeout, allow_redirects=False, stream=True)
            deadline.watch(response.raw)
            text = response.text  # read here, within the deadline
        except requests.exceptions.ConnectTimeout as error:
            return _Answer(None, f"{type(error).__name__}: no connection within {connect:g} s", timed_out=True)
        except Exception as error:  # pylint: disable=broad-except  # what cutting a read off raises varies
            if deadline.fired:
                return self._cut_off(response, answer_seconds)
            if isinstance(error, requests.Timeout):
                return _Answer(None, f"{type(error).__name__}: no answer within {answer_seconds:g} s", timed_out=True)
            if isinstance(error, _NETWORK_ERRORS):
                return _Answer(None, f"{type(error).__name__}: {error}")
            raise
        finally:
            deadline.end()
            _ATTEMPT.deadline = None
            if response is not None:
                response.close()
        if deadline.fired:  # cut off at the very end: the answer may be short of its end
            return self._cut_off(response, answer_seconds)
        return _Answer(response.status_code, text, _retry_after_seconds(response.headers.get("Retry-After")))

    @staticmethod
    def _cut_off(response, seconds: float) -> _Answer:
        """The answer of an attempt its deadline cut off: a timeout, like no answer at all."""
        what = "no answer" if response is None else f"no whole answer ({response.status_code}, its body cut off)"
        return _Answer(None, f"ReadTimeout: {what} within {seconds:g} s", timed_out=True)
