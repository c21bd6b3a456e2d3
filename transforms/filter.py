"""Filters, each counting what it drops per event type and saying on its HANDLED output that the
dropped events are accounted for.

`DropAnonymousUsers`: Braze's connector sends only users with an external id, as Segment's `userId`;
a null, empty or blank id has nothing to identify the user by. `KeepEventTime`: a replay by event
time keeps only the events that happened in the chosen range, wherever Braze queued them.
"""
import apache_beam as beam

from transforms import metrics
from transforms.elements import HANDLED, handled


def has_external_id(record):
    """True when the record's external_user_id is a non-blank string."""
    value = record.get("external_user_id")
    return isinstance(value, str) and bool(value.strip())


class _DropFn(beam.DoFn):
    """Keep the events `keep(record)` is true for; count the others under `metric` and hand them in."""

    def __init__(self, metric):
        super().__init__()
        self._metric = metric

    def setup(self):
        self._dropped = metrics.TypeCounter(self._metric)

    def keep(self, record):
        raise NotImplementedError

    def process(self, event):
        if self.keep(event.record):
            yield event
        else:
            self._dropped.inc(event.event_type)
            yield beam.pvalue.TaggedOutput(HANDLED, handled(event.source_file))


class _DropAnonymousFn(_DropFn):
    def __init__(self):
        super().__init__(metrics.DROPPED_NO_EXTERNAL_ID)

    def keep(self, record):
        return has_external_id(record)


class DropAnonymousUsers(beam.PTransform):
    """Keep the CurrentsEvents whose user has an external_user_id ("events"); count the others, which
    go to HANDLED as (source file, 1)."""

    def expand(self, events):
        return events | "Keep identified users" >> beam.ParDo(_DropAnonymousFn()).with_outputs(
            HANDLED, main="events")


def in_time_range(record, start, end):
    """True when the record's `time` (UNIX seconds) is in [start, end); a record without an integer
    time is kept, so that the map stage dead-letters it with the reason."""
    value = record.get("time")
    return not isinstance(value, int) or start <= value < end


class _KeepEventTimeFn(_DropFn):
    def __init__(self, start, end):
        super().__init__(metrics.OUTSIDE_TIME_RANGE)
        self._start, self._end = start, end

    def keep(self, record):
        return in_time_range(record, self._start, self._end)


class KeepEventTime(beam.PTransform):
    """Keep the CurrentsEvents whose own `time` is in [start, end) (UNIX seconds, "events"); count the
    others, which go to HANDLED as (source file, 1)."""

    def __init__(self, start, end):
        super().__init__()
        self._start, self._end = start, end

    def expand(self, events):
        return events | "Keep events in range" >> beam.ParDo(_KeepEventTimeFn(self._start, self._end)).with_outputs(
            HANDLED, main="events")
