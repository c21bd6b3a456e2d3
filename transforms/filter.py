"""Filter: drop events of users without an `external_user_id`, counted per event type.

Braze's connector sends only users with an external id, as Segment's `userId`; a null, empty or
blank id has nothing to identify the user by.
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
