"""Checkpoints: how often a stage that holds things back within a bundle (open requests, a dead-letter
or ledger file being written) makes them final, so that a long bundle's output is sent and readable
before the bundle ends (on FnApiRunner and Prism a bundle holds many files).

The ledger is recorded in the bundle that completes a file only on a runner that runs the ledger's
stage fused with the stages before it; FnApiRunner and Prism run each Flatten's consumer (the ledger
takes a Flatten of eight outputs) as a stage of its own once those before it are done, so there a killed
run has recorded nothing, and the next run sends everything again (see transforms.ledger).
"""
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
