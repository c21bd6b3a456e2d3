"""Write: send each REQUEST item (see transforms.elements) to Segment's /v1/batch, or write its exact request
body in a dry run.

The HTTP work (session, retries, splitting on 400, pacing) belongs to SegmentClient; this module only maps its
report onto counters, HANDLED items for the events Segment accepted (in a dry run: whose request bodies are
durably written) and LETTER items for the others. A configuration error (401/403/404) raises SegmentConfigError
and fails the run. Every other item passes on.

Each DoFn keeps up to `requests_in_flight` requests in flight (`InFlight`: that many threads, each with a
SegmentClient of its own, since a client is not thread-safe; the Breaker and the Pacer are the process's). A
REQUEST waits for its turn with the pacer (in the DoFn's thread, so that requests do not queue in flight for it)
and for room; what finished is handed on from `process`, and everything in flight is waited for at each TICK (so
that the ledger downstream records files while a long bundle goes on) and at the end of the bundle, which
therefore still ends only when each of its events is accepted or dead-lettered. Beam's counters can only be
incremented from the DoFn's own thread: the sending threads tally what they do in this process at once, and the
DoFn's thread hands it to Beam (`CountsFromThreads`). The time a worker process had requests held back (pacing,
Retry-After, retry backoffs; `ThrottledTime`, waits that overlap counted once) is reported as Beam's
`cumulativeThrottlingSeconds` counter, which Dataflow's autoscaler reads.
"""
import collections
import concurrent.futures
import datetime
import math
import queue
import threading
import time

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindows

from transforms import elements, jsonl, metrics, progress, segment_client, write_key
from transforms.elements import REJECTED_BY_SEGMENT, REQUEST, RETRIES_EXHAUSTED, ItemFn
from transforms.flush_timer import DEFAULT_FLUSH_SECONDS
from transforms.segment_client import format_sent_at, request_body


def _accounts(calls):
    """((event type, source file), events) pairs of a request's calls."""
    return collections.Counter((event_type, source_file) for event_type, source_file, _, _ in calls).items()


def _delivered(sent, accounts):
    """Count delivered events per type on `sent` (a TypeCounter), and hand them in as HANDLED items."""
    for (event_type, source_file), n in accounts:
        sent.inc(event_type, n)
        yield elements.handled(event_type, source_file, n)


class ThrottledTime:
    """The seconds during which at least one of a stage's requests was held back; Beam-free, thread-safe.

    `wait(seconds)` is told of each wait as it begins: waits of requests in flight together that overlap count
    once. `take_whole_seconds()` returns the whole seconds not taken yet (Beam's throttling counter is an
    integer), keeping the fraction for later.
    """

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._covered_until = -math.inf
        self._total = 0.0
        self._taken = 0

    def wait(self, seconds):
        with self._lock:
            now = self._clock()
            start, end = max(now, self._covered_until), now + seconds
            if end > start:
                self._total += end - start
                self._covered_until = end

    @property
    def total(self):
        with self._lock:
            return self._total

    def take_whole_seconds(self):
        with self._lock:
            whole = int(self._total) - self._taken
            self._taken += whole
            return whole


class CountsFromThreads:
    """Counters of a DoFn that works in threads of its own, where Beam's counters cannot be incremented (Beam keeps
    them per DoFn thread): `add` (from any thread) adds to this process's tally at once (for progress lines, and
    the summary of a run that stops) and keeps the count for Beam, which `flush` (from the DoFn's thread) gives to
    Beam's counters."""

    def __init__(self):
        self._lock = threading.Lock()
        self._owed = collections.Counter()
        self._beam = {}

    def add(self, name, n=1):
        metrics.add_to_tally(name, n)
        with self._lock:
            self._owed[name] += n

    def flush(self):
        with self._lock:
            owed, self._owed = self._owed, collections.Counter()
        for name, n in owed.items():
            beam_counter = self._beam.get(name)
            if beam_counter is None:
                beam_counter = self._beam[name] = metrics.beam_counter(name)
            beam_counter.inc(n)


class InFlight:
    """Calls of `work(key)` run by `limit` daemon threads, at most `limit` at once; Beam-free.

    `submit(key)` waits for room, then starts the call; it, `done()` and `drain()` (which waits for every call)
    return the (key, result) pairs of the calls finished since. When a call raised, they raise it, and the calls
    not started yet are cancelled. A thread is started when a call finds none free (so a stage that never has
    two requests at once has one); they are daemons: a run that is interrupted does not wait for them. With a
    limit of 1 there is no thread: `submit` makes the call itself, in the caller's thread, and returns with it
    finished.
    """

    def __init__(self, work, limit, name="segment-sender"):
        if limit < 1:
            raise ValueError(f"at least one call in flight, got {limit}")
        self._work = work
        self._limit = limit
        self._name = name
        self._tasks = queue.SimpleQueue()
        self._pending = []  # (key, future), in the order submitted
        self._threads = []

    def _serve(self):
        while True:
            task = self._tasks.get()
            if task is None:
                return
            future, key = task
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(self._work(key))
                except BaseException as error:  # pylint: disable=broad-except  # handed to the caller
                    future.set_exception(error)

    def __len__(self):
        return len(self._pending)

    @property
    def threads(self):
        """How many threads were started."""
        return len(self._threads)

    def submit(self, key):
        if self._limit == 1:
            return [(key, self._work(key))]
        finished = self.done()
        while len(self._pending) >= self._limit:
            concurrent.futures.wait([future for _, future in self._pending],
                                    return_when=concurrent.futures.FIRST_COMPLETED)
            finished += self.done()
        future = concurrent.futures.Future()
        self._pending.append((key, future))
        if len(self._pending) > len(self._threads):  # every thread has a call to make
            thread = threading.Thread(target=self._serve, name=f"{self._name}-{len(self._threads)}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self._tasks.put((future, key))
        return finished

    def done(self):
        finished, pending = [], []
        for key, future in self._pending:  # one look at each: a call that ends meanwhile is in one list only
            (finished if future.done() else pending).append((key, future))
        if not finished:
            return []
        self._pending = pending
        return [(key, self._result(future)) for key, future in finished]

    def drain(self):
        concurrent.futures.wait([future for _, future in self._pending])
        return self.done()

    def _result(self, future):
        try:
            return future.result()
        except BaseException:
            self.cancel()
            raise

    def cancel(self):
        """Cancel the calls not started yet and forget every call in flight."""
        for _, future in self._pending:
            future.cancel()
        self._pending = []

    def close(self):
        """Cancel what has not started, and let the threads end once their call is over."""
        self.cancel()
        for _ in self._threads:
            self._tasks.put(None)


class _PostRequestFn(ItemFn):
    """POST REQUESTs, up to `requests_in_flight` of the client settings at once; accepted events are counted as
    sent and handed in, rejected ones become LETTERs.

    The write key is resolved here, on the worker, from its KeySource.
    """

    KINDS = (REQUEST,)

    def __init__(self, client_settings, key_source, progress_settings, run_id):
        super().__init__()
        self._client_settings = client_settings
        self._key_source = key_source
        self._progress_settings = progress_settings
        self._run_id = run_id
        self._in_flight = None
        self._clients = []

    def setup(self):
        self._counts = CountsFromThreads()
        self._progress = progress.reporter(self._progress_settings)
        self._key = write_key.resolve(self._key_source)
        # The clients of this process that send to one endpoint in this run share one breaker (an outage costs one
        # budget), one pacer (the process's share of the event budget, and Retry-After pauses) and the count of the
        # time they were held back.
        name = f"{self._run_id} {self._client_settings.endpoint}"
        self._breaker = segment_client.shared_breaker(name)
        self._pacer = segment_client.shared_pacer(name, self._client_settings)
        # (The waits of every request the process holds back at once count once, as the time it was throttled.)
        self._throttled = segment_client.process_shared(ThrottledTime, name, ThrottledTime)
        self._local = threading.local()
        self._clients = []
        self._clients_lock = threading.Lock()
        self._in_flight = InFlight(self._send, self._client_settings.requests_in_flight)

    def _send(self, calls):
        """In a sending thread: POST one request's calls with this thread's client, and count what came of it."""
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._client_settings.client(
                self._key, observer=self._observe, breaker=self._breaker, pacer=self._pacer,
                on_wait=self._throttled.wait)
            with self._clients_lock:
                self._clients.append(client)
        report = client.send([payload for _, _, _, payload in calls])
        counts = self._counts
        for (event_type, _), n in _accounts([calls[i] for i in report.accepted]):
            counts.add(f"{metrics.SENT}:{event_type}", n)
        if report.rejected:
            counts.add(metrics.DEAD_LETTERS_MADE, len(report.rejected))
            for reason, counter in ((RETRIES_EXHAUSTED, metrics.RETRIES_EXHAUSTED),
                                    (REJECTED_BY_SEGMENT, metrics.REJECTED_BY_SEGMENT)):
                n = sum(1 for rejection in report.rejected if rejection.reason == reason)
                if n:
                    counts.add(counter, n)
        return report

    def _observe(self, attempt):
        """In a sending thread: each HTTP attempt, for the counters and the progress reporter (live)."""
        self._counts.add(metrics.REQUESTS)
        if attempt.retrying:
            self._counts.add(metrics.RETRIES)
        self._progress.observe(attempt)

    def _count(self):
        """In the DoFn's thread: hand Beam what was counted so far, and the time throttled."""
        throttled = self._throttled.take_whole_seconds()
        if throttled:
            self._counts.add(metrics.THROTTLING_SECONDS, throttled)
        self._counts.flush()

    def _settle(self, step):
        """The outcomes of the requests `step` (a method of InFlight) reports finished, counted."""
        try:
            finished = step()
        finally:
            self._count()
        for calls, report in finished:
            yield from self._outcome(calls, report)

    def process(self, item):
        if len(self._in_flight) and item[0] not in self.KINDS:
            yield from self._settle(self._in_flight.done)  # what finished since, without waiting
        yield from super().process(item)

    def handle(self, item):
        _, _, calls = item
        # The pacer's wait (the budget, a Retry-After) is this thread's, not a request's in flight: the requests
        # in flight are those on their way, and the stage is held back (as Beam's IOs are) while it is throttled.
        self._pacer.wait_for_turn(self._throttled.wait)
        yield from self._settle(lambda: self._in_flight.submit(calls))

    def tick(self):
        yield from self._settle(self._in_flight.drain)

    def finish_bundle(self):
        for item in self._settle(self._in_flight.drain):
            # Every item is in the global window at the start of time (see elements.at_earliest_timestamp).
            yield GlobalWindows.windowed_value(item)

    @staticmethod
    def _outcome(calls, report):
        """HANDLED items for what Segment accepted, a LETTER for each event it did not (counted by `_send`)."""
        for (event_type, source_file), n in _accounts([calls[i] for i in report.accepted]):
            yield elements.handled(event_type, source_file, n)
        for rejection in report.rejected:
            event_type, source_file, message_id, payload = calls[rejection.index]
            yield elements.letter_item(elements.call_letter(
                event_type, source_file, message_id, payload, rejection.reason, http_status=rejection.status,
                response_excerpt=rejection.response_excerpt))

    def teardown(self):
        if self._in_flight is not None:
            self._in_flight.close()
        for client in self._clients:
            client.close()


class _WriteRequestBodyFn(jsonl.LinesFn):
    """Dry run: the exact body that would be POSTed for one REQUEST (with an empty write key), as a line of this
    bundle's request files; once a file is committed, its events are counted as sent and handed in."""

    KINDS = (REQUEST,)

    def __init__(self, directory, run_id, flush_seconds):
        super().__init__(directory, jsonl.REQUESTS, run_id, "dry-run requests", flush_seconds)

    def setup(self):
        self._sent = metrics.TypeCounter(metrics.SENT)
        self._requests = metrics.counter(metrics.REQUESTS)

    def line(self, item):
        _, _, calls = item
        self._requests.inc()
        sent_at = format_sent_at(datetime.datetime.now(datetime.timezone.utc))
        return request_body([payload for _, _, _, payload in calls], "", sent_at).decode("utf-8"), _accounts(calls)

    def committed(self, key, units):
        return _delivered(self._sent, ((key, units),))


class WriteToSegment(beam.PTransform):
    """Items → items with each REQUEST delivered with SegmentClients built from `client_settings` and the key of
    `key_source` (HANDLED for what Segment accepted, LETTER for the rest), `client_settings.requests_in_flight`
    at once per DoFn.

    The clients of one process share a segment_client.Breaker and a segment_client.Pacer per run (`run_id`) and
    endpoint. With
    `dry_run_output`, request bodies are written as this run's `requests-<run id>-*.jsonl` files under that
    directory instead of being sent (made final every `flush_seconds`), and no client is built.
    """

    def __init__(self, client_settings=None, key_source=None, *, dry_run_output=None, run_id=None,
                 progress_settings=progress.ProgressSettings(), flush_seconds=DEFAULT_FLUSH_SECONDS):
        super().__init__()
        self._flush_seconds = flush_seconds
        self._client_settings = client_settings
        self._key_source = key_source
        self._dry_run_output = dry_run_output
        self._run_id = run_id
        self._progress_settings = progress_settings

    def expand(self, items):
        if self._dry_run_output:
            return items | "Write request bodies" >> beam.ParDo(_WriteRequestBodyFn(
                self._dry_run_output, self._run_id, self._flush_seconds))
        return items | "POST /v1/batch" >> beam.ParDo(
            _PostRequestFn(self._client_settings, self._key_source, self._progress_settings, self._run_id))
