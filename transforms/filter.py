"""Filters, each counting what it drops per event type.

`DropAnonymousUsers`: Braze's connector sends only users with an external id, as Segment's `userId`;
a null, empty or blank id has nothing to identify the user by. `KeepEventTime`: a replay by event
time keeps only the events that happened in the chosen range, wherever Braze queued them.
"""
import apache_beam as beam

from transforms import metrics


def has_external_id(record):
    """True when the record's external_user_id is a non-blank string."""
    value = record.get("external_user_id")
    return isinstance(value, str) and bool(value.strip())


class _DropAnonymousFn(beam.DoFn):
    def setup(self):
        self._dropped = metrics.TypeCounter(metrics.DROPPED_NO_EXTERNAL_ID)

    def process(self, event):
        if has_external_id(event.record):
            yield event
        else:
            self._dropped.inc(event.event_type)


class DropAnonymousUsers(beam.PTransform):
    """Keep the CurrentsEvents whose user has an external_user_id; count the others."""

    def expand(self, events):
        return events | "Keep identified users" >> beam.ParDo(_DropAnonymousFn())


def in_time_range(record, start, end):
    """True when the record's `time` (UNIX seconds) is in [start, end); a record without an integer
    time is kept, so that the map stage dead-letters it with the reason."""
    value = record.get("time")
    return not isinstance(value, int) or start <= value < end


class _KeepEventTimeFn(beam.DoFn):
    def __init__(self, start, end):
        super().__init__()
        self._start, self._end = start, end

    def setup(self):
        self._outside = metrics.TypeCounter(metrics.OUTSIDE_TIME_RANGE)

    def process(self, event):
        if in_time_range(event.record, self._start, self._end):
            yield event
        else:
            self._outside.inc(event.event_type)


class KeepEventTime(beam.PTransform):
    """Keep the CurrentsEvents whose own `time` is in [start, end) (UNIX seconds); count the others."""

    def __init__(self, start, end):
        super().__init__()
        self._start, self._end = start, end

    def expand(self, events):
        return events | "Keep events in range" >> beam.ParDo(_KeepEventTimeFn(self._start, self._end))
