"""Checkpoints: how often a stage that holds things back within a bundle (open requests, a dead-letter
or ledger file being written) makes them final, so that a long bundle's progress is durable before it
ends. A run killed midway then loses at most about one interval of work, and the ledger has recorded
every file completed before it (see transforms.ledger)."""
import time

DEFAULT_CHECKPOINT_SECONDS = 30.0


class Checkpoints:
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
