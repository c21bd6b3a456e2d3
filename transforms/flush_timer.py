"""FlushTimer: how often a stage that holds things back within a bundle (open requests, a dead-letter, request
or ledger file being written) makes them final, so that a long bundle's output is sent and readable, and its
files recorded in the ledger, before the bundle ends (on FnApiRunner and Prism a bundle holds many files).
This is the job's own timer (--flush_seconds), not a Beam checkpoint.
"""
import time

DEFAULT_FLUSH_SECONDS = 10.0


class FlushTimer:
    """`due()` is true once every `seconds` (monotonic clock), the first time `seconds` after creation."""

    def __init__(self, seconds):
        self._seconds = seconds
        self._next = time.monotonic() + seconds

    def due(self):
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + self._seconds
        return True
