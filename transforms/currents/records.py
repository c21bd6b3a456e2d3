"""What a Currents file and its records say before they are mapped: the event type of a file (from its
`event_type=` path segment, else from its Avro writer schema's full name), and which records are sent.

Braze's connector sends users with an external id (as Segment's `userId`); users without one (a null, empty or
blank external_user_id) are sent only when the customer opts in (--include_anonymous_users), with their Braze user
id as `anonymousId`; a record with neither id has nothing to identify the user by. A replay by event time
(--by_event_time) keeps only the events that happened in the chosen range, wherever Braze queued them.

Knows nothing of Beam; imports no Beam module.
"""
import re
from typing import NamedTuple, Optional

from currents_to_segment.transforms.currents import avro_blocks
from currents_to_segment.transforms.currents.catalog import BRAZE_ID_FIELD, KNOWN_TYPES


# Why a record is not sent (each is also the name of its per-type counter).
DROPPED_NO_EXTERNAL_ID = "dropped_no_external_id"
DROPPED_NO_ID = "dropped_no_id"  # with anonymous users sent: neither an external id nor a Braze user id
OUTSIDE_TIME_RANGE = "outside_time_range"  # only with --by_event_time

_KNOWN_IN_ORDER = sorted(KNOWN_TYPES)
_PATH_EVENT_TYPE = re.compile(r"(?:^|/)event_type=([^/]+)/")
# Braze's producers prefix the record's full name with dataexport.<connector>.inner.
_NAME_PREFIX = re.compile(r"^dataexport\.[^.]+\.inner\.")


def event_type_from_path(path):
    """The `event_type=` segment of a Currents path (the last one), or None."""
    found = _PATH_EVENT_TYPE.findall(path)
    return found[-1] if found else None


def event_type_from_schema(schema):
    """The event type named by an Avro writer schema's full name.

    Producers other than the usual one prefix it differently; a name that ends with an event type a
    built-in mapping knows (`com.example.users.canvas.Entry`) is taken as that type.
    """
    name = schema.get("name", "")
    namespace = schema.get("namespace")
    full_name = name if "." in name or not namespace else f"{namespace}.{name}"
    event_type = _NAME_PREFIX.sub("", full_name)
    if event_type in KNOWN_TYPES:
        return event_type
    return next((known for known in _KNOWN_IN_ORDER if event_type.endswith("." + known)), event_type)


def open_file(path, stream):
    """(event type, a BlockFile yielding every GoodBlock and BadRegion in order) of an open Currents file.

    Raises avro_blocks.CorruptHeader when nothing of the file can be read.
    """
    container = avro_blocks.open_container(stream)
    return event_type_from_path(path) or event_type_from_schema(container.header.schema), container


def has_text(value):
    """True when a value is a string with something besides white space."""
    return isinstance(value, str) and bool(value.strip())


def has_external_id(record):
    """True when the record's external_user_id is a non-blank string."""
    return has_text(record.get("external_user_id"))


def has_braze_id(record):
    """True when the record's Braze user id (user_id, sent as anonymousId) is a non-blank string."""
    return has_text(record.get(BRAZE_ID_FIELD))


def in_time_range(record, start, end):
    """True when the record's `time` (UNIX seconds) is in [start, end); a record without an integer
    time is kept, so that mapping it dead-letters it with the reason."""
    value = record.get("time")
    return not isinstance(value, int) or start <= value < end


class RecordFilter(NamedTuple):
    """Which records are sent: users with an external id, or with `include_anonymous` any with a Braze user id;
    with `time_range` ((start, end) in UNIX seconds), only events of that range."""

    include_anonymous: bool = False
    time_range: Optional[tuple] = None

    def reason(self, record):
        """Why the record is not sent (DROPPED_NO_EXTERNAL_ID, DROPPED_NO_ID, OUTSIDE_TIME_RANGE), or None."""
        if self.time_range is not None and not in_time_range(record, *self.time_range):
            return OUTSIDE_TIME_RANGE
        if has_external_id(record):
            return None
        if not self.include_anonymous:
            return DROPPED_NO_EXTERNAL_ID
        return None if has_braze_id(record) else DROPPED_NO_ID
