"""Filters over RECORDS items (see transforms.elements): each keeps the records it is for, counts the others per
event type and says with a HANDLED item that they are accounted for; every other item passes on.

`DropUsersWithoutId`: Braze's connector sends users with an external id (as Segment's `userId`); users
without one (a null, empty or blank external_user_id) are sent only when the customer opts in
(--include_anonymous_users), with their Braze user id as `anonymousId`; a record with neither id has nothing
to identify the user by, and is counted as `dropped_no_id`. `KeepEventsInTimeRange`: a replay by event time
keeps only the events that happened in the chosen range, wherever Braze queued them.
"""
import apache_beam as beam

from transforms import elements, metrics
from transforms.elements import RECORDS, ItemFn
from transforms.map import BRAZE_ID_FIELD, has_text


def has_external_id(record):
    """True when the record's external_user_id is a non-blank string."""
    return has_text(record.get("external_user_id"))


def has_braze_id(record):
    """True when the record's Braze user id (user_id, sent as anonymousId) is a non-blank string."""
    return has_text(record.get(BRAZE_ID_FIELD))


def in_time_range(record, start, end):
    """True when the record's `time` (UNIX seconds) is in [start, end); a record without an integer
    time is kept, so that the map stage dead-letters it with the reason."""
    value = record.get("time")
    return not isinstance(value, int) or start <= value < end


class _FilterFn(ItemFn):
    """RECORDS → RECORDS of the records `reason(record)` is None for; the others counted under their reason
    (a per-type metric) and handed in as HANDLED."""

    KINDS = (RECORDS,)

    def setup(self):
        self._dropped = {}

    def reason(self, record):
        raise NotImplementedError

    def handle(self, item):
        _, event_type, source_file, block = item
        kept, dropped = [], {}
        for record in block:
            reason = self.reason(record)
            if reason is None:
                kept.append(record)
            else:
                dropped[reason] = dropped.get(reason, 0) + 1
        if kept:
            yield elements.records(event_type, source_file, kept) if dropped else item
        for reason, count in dropped.items():
            if reason not in self._dropped:
                self._dropped[reason] = metrics.TypeCounter(reason)
            self._dropped[reason].inc(event_type, count)
            yield elements.handled(event_type, source_file, count)


class _DropUsersWithoutIdFn(_FilterFn):
    def __init__(self, include_anonymous):
        super().__init__()
        self._include_anonymous = include_anonymous

    def reason(self, record):
        if has_external_id(record):
            return None
        if not self._include_anonymous:
            return metrics.DROPPED_NO_EXTERNAL_ID
        return None if has_braze_id(record) else metrics.DROPPED_NO_ID


class DropUsersWithoutId(beam.PTransform):
    """Items → items whose records are of users who can be sent: with an external_user_id, or, with
    `include_anonymous`, with a Braze user_id; the others are counted (dropped_no_external_id, or
    dropped_no_id) and handed in."""

    def __init__(self, include_anonymous=False):
        super().__init__()
        self._include_anonymous = include_anonymous

    def expand(self, items):
        return items | "Keep users with an id" >> beam.ParDo(_DropUsersWithoutIdFn(self._include_anonymous))


class _KeepEventsInTimeRangeFn(_FilterFn):
    def __init__(self, start, end):
        super().__init__()
        self._start, self._end = start, end

    def reason(self, record):
        return None if in_time_range(record, self._start, self._end) else metrics.OUTSIDE_TIME_RANGE


class KeepEventsInTimeRange(beam.PTransform):
    """Items → items whose records' own `time` is in [start, end) (UNIX seconds); the others are counted
    (outside_time_range) and handed in."""

    def __init__(self, start, end):
        super().__init__()
        self._start, self._end = start, end

    def expand(self, items):
        return items | "Keep events in range" >> beam.ParDo(_KeepEventsInTimeRangeFn(self._start, self._end))
