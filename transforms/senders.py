"""How a Delivery's requests go out: to Segment (`SegmentSender`), or, in a dry run, as the exact request bodies
into files (`DryRunSender`). Both take requests as lists of calls, (event type, file account, messageId, payload)
each, and return the requests answered as (calls, SendReport) pairs: `submit(calls)` those answered since (it may
wait for room), `done()` likewise without waiting, `drain()` after waiting for every one. `wait_for_segment()` is
where a watch holds its next file while Segment fails (False once it gave up on Segment: see
transforms.segment.pacing.Breaker), and `gave_up` says why it did.

Counts go to `count(name, n)`, which must be thread-safe: a SegmentSender counts from its sending threads. Knows
nothing of Beam; imports no Beam module.
"""
import collections
import datetime
import threading
import time

from currents_to_segment.transforms.delivery import DEAD_LETTERS_MADE
from currents_to_segment.transforms.segment.api import (
    HELD_BACK, REJECTED_BY_SEGMENT, RETRIES_EXHAUSTED, SendReport, format_sent_at, request_body)
from currents_to_segment.transforms.segment.client import SegmentClient
from currents_to_segment.transforms.segment.in_flight import InFlight, SendingThreads
from currents_to_segment.transforms.segment.pacing import Breaker, Pacer, RefusalBreaker, ThrottledTime

SENT = "sent"  # per event type: "sent:<event type>"
REQUESTS = "requests"  # HTTP attempts (retries included), or request bodies written in a dry run
RETRIES = "retries"
REQUESTS_BY_STATUS = "requests_by_status"  # HTTP attempts by Segment's status: "requests_by_status:<status>"
NO_ANSWER = "no_answer"  # the status of an attempt without an answer (network error, timeout)
BYTES_SENT = "bytes_sent"  # the JSON bytes of the events Segment accepted (as serialized, before gzip)
REQUEST_MS = "request_ms"  # observed per HTTP attempt: from its start to its answer (or to none), in milliseconds


class ProcessSending:
    """What the senders of one process share while they send to one endpoint in one run: one Breaker (an outage
    costs one retry budget), one RefusalBreaker (once Segment has refused everything for a while, nothing more is
    sent but a probe now and then), one Pacer (the process's share of the event budget, and Retry-After pauses), the
    time the process had requests held back (ThrottledTime: waits of requests in flight together count once), and
    the threads that make the requests, at most `threads`, each with a SegmentClient of its own (a client is not
    thread-safe): a runner that makes a sender per bundle it runs at once (Prism) does not multiply them.

    In a watch (settings.max_outage_seconds), the breaker holds requests and files during an outage (`hooks`:
    its stop_requested and on_give_up; see pacing.Breaker)."""

    def __init__(self, settings, threads, **hooks):
        self.breaker = Breaker(probe_seconds=settings.probe_seconds, max_outage_seconds=settings.max_outage_seconds,
                               **hooks)
        self.pacer = Pacer(settings.events_per_second, settings.max_requests_per_second)
        self.refusals = RefusalBreaker(probe_seconds=settings.probe_seconds)
        self.throttled = ThrottledTime()
        self.threads = SendingThreads(threads)
        self._settings = settings
        self._local = threading.local()
        self._clients = []
        self._lock = threading.Lock()

    def client(self, write_key):
        """This thread's client (one per thread and write key)."""
        clients = getattr(self._local, "clients", None)
        if clients is None:
            clients = self._local.clients = {}
        client = clients.get(write_key)
        if client is None:
            client = clients[write_key] = SegmentClient(write_key, self._settings, breaker=self.breaker,
                                                        pacer=self.pacer, refusals=self.refusals,
                                                        on_wait=self.throttled.wait)
            with self._lock:
                self._clients.append(client)
        return client

    def __del__(self):  # when no delivery of the process holds it any more (see transforms.deliver)
        try:
            self.threads.close()
            for client in self._clients:
                client.close()
        except Exception:  # pylint: disable=broad-except  # at interpreter exit, modules may be gone
            pass


def _count_sent(count, calls, indexes):
    for event_type, n in collections.Counter(calls[i][0] for i in indexes).items():
        count(f"{SENT}:{event_type}", n)


class SegmentSender:
    """Requests POSTed to Segment, up to settings.requests_in_flight at once, by the threads and clients of the
    process's `sending` (a ProcessSending, which also holds the breaker, the pacer and the time throttled).
    `observer(attempt)` is told of every HTTP attempt, from the sending threads, and `observe(REQUEST_MS, ms)` of how
    long it took. A request waits for its turn with
    the pacer in the caller's thread, so that requests do not queue in flight for it (a Retry-After pause is waited
    out there for no longer than a request's retry budget: see transforms.segment.pacing.Pacer)."""

    def __init__(self, write_key, settings, sending, count, observer=None, observe=lambda name, value: None,
                 clock=time.time):
        self._key = write_key
        self._sending = sending
        self._count = count
        self._observe_value = observe
        self._clock = clock
        self._observer = observer
        self._max_pause = settings.max_retry_seconds
        self._in_flight = InFlight(self._send, settings.requests_in_flight, sending.threads)

    def _observe(self, attempt):
        self._count(REQUESTS, 1)
        self._count(f"{REQUESTS_BY_STATUS}:{NO_ANSWER if attempt.status is None else attempt.status}", 1)
        if attempt.retrying:
            self._count(RETRIES, 1)
        if attempt.started:
            self._observe_value(REQUEST_MS, max(round((self._clock() - attempt.started) * 1000), 0))
        if self._observer is not None:
            self._observer(attempt)

    def _send(self, calls):
        """In a sending thread: POST one request's calls, and count what came of it."""
        report = self._sending.client(self._key).send([payload for _, _, _, payload in calls], self._observe)
        _count_sent(self._count, calls, report.accepted)
        if report.accepted:
            self._count(BYTES_SENT, sum(len(calls[i][3]) for i in report.accepted))
        letters = sum(1 for rejection in report.rejected if rejection.reason != HELD_BACK)
        if letters:
            self._count(DEAD_LETTERS_MADE, letters)
            for reason in (RETRIES_EXHAUSTED, REJECTED_BY_SEGMENT):
                n = sum(1 for rejection in report.rejected if rejection.reason == reason)
                if n:
                    self._count(reason, n)
        return report

    def submit(self, calls):
        self._sending.pacer.wait_for_turn(self._sending.throttled.wait, max_pause=self._max_pause)
        return self._in_flight.submit(calls)

    def done(self):
        return self._in_flight.done() if len(self._in_flight) else []

    def drain(self):
        return self._in_flight.drain()

    def wait_for_segment(self):
        return self._sending.breaker.wait_while_open(self._sending.throttled.wait)

    @property
    def gave_up(self):
        return self._sending.breaker.gave_up

    def close(self):
        self._in_flight.close()


class DryRunSender:
    """Dry run: the exact body that would be POSTed for each request (with an empty write key), as a line of `lines`
    (a PartFile); once `drain()` has made the file durable, its events count as sent."""

    def __init__(self, lines, count):
        self._lines = lines
        self._count = count
        self._written = []
        self._bytes = 0  # of the events written since the file was last made durable

    def submit(self, calls):
        self._count(REQUESTS, 1)
        self._bytes += sum(len(payload) for _, _, _, payload in calls)
        sent_at = format_sent_at(datetime.datetime.now(datetime.timezone.utc))
        self._lines.write(request_body([payload for _, _, _, payload in calls], "", sent_at).decode("utf-8"))
        # Kept until the file is durable: who the calls are of, not the calls (their payloads are in the file).
        self._written.append([who for (event_type, account), n in collections.Counter(
            (event_type, account) for event_type, account, _, _ in calls).items()
            for who in [(event_type, account, None, None)] * n])
        return []

    def done(self):
        return []

    def wait_for_segment(self):
        return True

    gave_up = None

    def drain(self):
        self._lines.commit()
        written, self._written = self._written, []
        if self._bytes:
            self._count(BYTES_SENT, self._bytes)
            self._bytes = 0
        answered = []
        for calls in written:
            accepted = list(range(len(calls)))
            _count_sent(self._count, calls, accepted)
            answered.append((calls, SendReport(accepted=accepted, rejected=[], requests=0, retries=0)))
        return answered

    def close(self):
        pass
