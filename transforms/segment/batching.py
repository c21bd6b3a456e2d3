"""Cutting serialized calls into requests bounded by exact body size and event count (`Batcher`), per event-time
window, and a bounded memory of recent messageIds (`RecentIds`). Beam-free.

A request is sent as soon as the next call would not fit it (the same greedy rule as
transforms.segment.api.plan_batches). What a Batcher holds is bounded: past `MAX_BUFFERED_BYTES` or
`MAX_OPEN_WINDOWS`, the fullest open request is let go early (as Beam's own window-aware BatchElements does).
"""
import collections
from dataclasses import dataclass

# Bounds on what one worker holds back: 4 MiB is about 9 full requests, and few bundles have more
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
