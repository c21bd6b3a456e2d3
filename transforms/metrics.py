"""Beam counters of the pipeline: their names, and per-event-type counters created on demand.

The summary is built from these counters alone, so that it is right on every runner, including
ones that run DoFns in other processes or machines.
"""
from apache_beam.metrics import Metrics

NAMESPACE = "currents_to_segment"

# Per-event-type counters are named "<metric>:<event type>".
READ = "read"
DROPPED_NO_EXTERNAL_ID = "dropped_no_external_id"
UNSUPPORTED_EVENT_TYPE = "unsupported_event_type"
SENT = "sent"
DEAD_LETTERED = "dead_lettered"
OUTSIDE_TIME_RANGE = "outside_time_range"  # only with --by_event_time

# Plain counters.
UNREADABLE_FILES = "unreadable_files"
REQUESTS = "requests"
RETRIES = "retries"
RETRIES_EXHAUSTED = "retries_exhausted"  # events dead-lettered because Segment stayed unreachable


def counter(name):
    """Return the pipeline's counter of that name."""
    return Metrics.counter(NAMESPACE, name)


class TypeCounter:
    """One metric counted per Currents event type; counters are created on first use."""

    def __init__(self, metric):
        self._metric = metric
        self._counters = {}

    def inc(self, event_type, n=1):
        """Add n to the metric of this event type."""
        counter_ = self._counters.get(event_type)
        if counter_ is None:
            counter_ = self._counters[event_type] = counter(f"{self._metric}:{event_type}")
        counter_.inc(n)
