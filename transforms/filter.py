"""Filters, each counting what it drops per event type and saying on its HANDLED output that the
dropped events are accounted for.

`DropUsersWithoutId`: Braze's connector sends users with an external id (as Segment's `userId`); users
without one (a null, empty or blank external_user_id) are sent only when the customer opts in
(--include_anonymous_users), with their Braze user id as `anonymousId`; a record with neither id has nothing
to identify the user by, and is counted as `dropped_no_id`. `KeepEventTime`: a replay by event time keeps
only the events that happened in the chosen range, wherever Braze queued them.
"""
import apache_beam as beam

from transforms import metrics
from transforms.elements import HANDLED, handled
from transforms.map import BRAZE_ID_FIELD, has_text


def has_external_id(record):
    """True when the record's external_user_id is a non-blank string."""
    return has_text(record.get("external_user_id"))


def has_braze_id(record):
    """True when the record's Braze user id (user_id, sent as anonymousId) is a non-blank string."""
    return has_text(record.get(BRAZE_ID_FIELD))


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


class _DropUsersWithoutIdFn(beam.DoFn):
    def __init__(self, include_anonymous):
        super().__init__()
        self._include_anonymous = include_anonymous

    def setup(self):
        self._no_external_id = metrics.TypeCounter(metrics.DROPPED_NO_EXTERNAL_ID)
        self._no_id = metrics.TypeCounter(metrics.DROPPED_NO_ID)

    def process(self, event):
        record = event.record
        if has_external_id(record) or (self._include_anonymous and has_braze_id(record)):
            yield event
            return
        (self._no_id if self._include_anonymous else self._no_external_id).inc(event.event_type)
        yield beam.pvalue.TaggedOutput(HANDLED, handled(event.source_file))


class DropUsersWithoutId(beam.PTransform):
    """Keep the CurrentsEvents of users who can be sent ("events"): with an external_user_id, or, with
    `include_anonymous`, with a Braze user_id; count the others (dropped_no_external_id, or dropped_no_id),
    which go to HANDLED as (source file, 1)."""

    def __init__(self, include_anonymous=False):
        super().__init__()
        self._include_anonymous = include_anonymous

    def expand(self, events):
        return events | "Keep users with an id" >> beam.ParDo(
            _DropUsersWithoutIdFn(self._include_anonymous)).with_outputs(HANDLED, main="events")


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
