"""Batch: cut the calls of CALLS items (see transforms.elements) into REQUEST items bounded by exact body size
and event count, per bundle, without a shuffle of events.

Calls are grouped by event-time window (`time // window_seconds`, arithmetic on each call's time): a request
never mixes windows. Each worker keeps, for every window open in its bundle, the request being filled; a
request is sent as soon as the next call would not fit it (`Batcher.add`, the same greedy rule as
`segment_client.plan_batches`), and every open request is sent at the end of the bundle, so a bundle ends only
when each of its events is sent or dead-lettered. What a worker holds is bounded: past `MAX_BUFFERED_BYTES`
or `MAX_OPEN_WINDOWS`, the fullest open request is sent early (as Beam's own window-aware BatchElements
does). Every `flush_seconds` all open requests are sent too, so that the files read so far can be recorded in
the ledger while a long bundle goes on (see transforms.ledger).

Events with the same messageId (Currents delivers at least once, in the same file or in others) are counted
as duplicate ids when the second comes within the last `MAX_REMEMBERED_IDS` ids the worker's chain saw in
its bundle (`RecentIds`: a bounded memory, so that a day's run stays in flat memory). Both are sent; Segment
deduplicates them.
"""
import collections
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindows

from transforms import elements, metrics
from transforms.elements import CALLS, ItemFn
from transforms.flush_timer import FlushTimer

# Bounds on what one worker holds back: 16 MiB is about 35 full requests, and few bundles have more
# than 64 one-minute windows open at once (a Currents file spans minutes).
MAX_BUFFERED_BYTES = 4 * 2 ** 20
MAX_OPEN_WINDOWS = 64
MAX_REMEMBERED_IDS = 10_000


@dataclass(frozen=True)
class BatchSettings:
    """How events are cut into requests: event-time windows, and exact body and count bounds."""

    window_seconds: int
    max_bytes: int
    max_events: int
    envelope: int  # bytes of an empty body with this write key


class RecentIds:
    """The last `size` ids seen (by their hash); `seen_before(id)` says whether an id is among them, and
    remembers it. Beam-free."""

    def __init__(self, size=MAX_REMEMBERED_IDS):
        self._size = size
        self._order = collections.deque()
        self._ids = set()

    def seen_before(self, message_id):
        key = hash(message_id)
        if key in self._ids:
            return True
        self._ids.add(key)
        self._order.append(key)
        if len(self._order) > self._size:
            self._ids.discard(self._order.popleft())
        return False


class _OpenRequest:
    __slots__ = ("items", "body")

    def __init__(self, envelope):
        self.items, self.body = [], envelope


class Batcher:
    """Requests being filled, one per key (a window); Beam-free.

    `add` returns the requests (key, items) that are complete or must leave the buffer now; `drain`
    returns all that are open. A request is `envelope + sizes + one comma between two payloads` bytes.
    """

    def __init__(self, settings, max_buffered_bytes=MAX_BUFFERED_BYTES, max_open=MAX_OPEN_WINDOWS):
        self._settings = settings
        self._max_buffered, self._max_open = max_buffered_bytes, max_open
        self._open = {}
        self._buffered = 0

    def add(self, key, item, size):
        settings = self._settings
        ready = []
        request = self._open.get(key)
        if request is None:
            request = self._open[key] = _OpenRequest(settings.envelope)
        elif request.body + 1 + size > settings.max_bytes or len(request.items) >= settings.max_events:
            ready.append(self._close(key))
            request = self._open[key] = _OpenRequest(settings.envelope)
        before = request.body
        request.body += size + (1 if request.items else 0)
        request.items.append(item)
        self._buffered += request.body - before
        while self._open and (self._buffered > self._max_buffered or len(self._open) > self._max_open):
            ready.append(self._close(max(self._open, key=lambda k: self._open[k].body)))
        return ready

    def _close(self, key):
        request = self._open.pop(key)
        self._buffered -= request.body - self._settings.envelope
        return key, request.items

    def drain(self):
        return [self._close(key) for key in list(self._open)]

    def __contains__(self, key):
        return key in self._open

    @property
    def buffered_bytes(self):
        """Payload bytes held (commas included), for tests and bounds."""
        return self._buffered


class _CutRequestsFn(ItemFn):
    """CALLS → REQUEST items, one per request, each within one event-time window."""

    KINDS = (CALLS,)

    def __init__(self, settings, flush_seconds):
        super().__init__()
        self._settings = settings
        self._flush_seconds = flush_seconds
        self._batcher = self._flushes = self._seen = None

    def setup(self):
        self._duplicates = metrics.counter(metrics.DUPLICATE_IDS)

    def start_bundle(self):
        self._batcher = Batcher(self._settings)
        self._flushes = FlushTimer(self._flush_seconds)
        self._seen = RecentIds()

    def handle(self, item):
        _, event_type, source_file, block = item
        window_seconds, batcher, seen_before = self._settings.window_seconds, self._batcher, self._seen.seen_before
        ready, duplicates = [], 0
        for time, message_id, payload in block:
            if seen_before(message_id):
                duplicates += 1
            ready += batcher.add(time // window_seconds, (event_type, source_file, message_id, payload), len(payload))
        if duplicates:
            self._duplicates.inc(duplicates)
        yield from self._requests(ready)
        yield from self.tick()

    @staticmethod
    def _requests(ready):
        for window, calls in ready:
            yield elements.request(window, calls)

    def tick(self):
        if self._flushes.due():
            yield from self._requests(self._batcher.drain())

    def finish_bundle(self):
        for window, calls in self._batcher.drain():
            # Every item is in the global window at the start of time (see elements.at_earliest_timestamp).
            yield GlobalWindows.windowed_value(elements.request(window, calls))
        self._seen = None


class BatchForSegment(beam.PTransform):
    """Items → items whose CALLS are cut into REQUEST items (BatchSettings), without a shuffle; open requests are
    also sent every `flush_seconds`."""

    def __init__(self, settings, flush_seconds):
        super().__init__()
        self._settings = settings
        self._flush_seconds = flush_seconds

    def expand(self, items):
        return items | "Cut into requests" >> beam.ParDo(_CutRequestsFn(self._settings, self._flush_seconds))
