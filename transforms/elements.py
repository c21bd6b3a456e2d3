"""The elements that flow between the stages, and the tags every stage uses for its side outputs.

Every event read ends exactly once: dropped, not supported, outside the time range, delivered or
dead-lettered. The stage that ends it says so on its HANDLED output as (source file, units), the
dead-letter writer once the letter is durably written; the ledger records a file when the units of
its FileRead are all handled.
"""
from typing import Any, Mapping, NamedTuple

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindows, TimestampCombiner

DEAD_LETTER = "dead_letter"
HANDLED = "handled"

# Dead-letter reasons: events Segment must not get (too large) or did not take (rejected, unreachable), records
# that could not be mapped, and files or parts of files that could not be decoded.
EVENT_TOO_LARGE = "event_too_large"
REJECTED_BY_SEGMENT = "rejected_by_segment"
RETRIES_EXHAUSTED = "retries_exhausted"
INVALID_RECORD = "invalid_record"
UNREADABLE_FILE = "unreadable_file"
REASONS = (EVENT_TOO_LARGE, REJECTED_BY_SEGMENT, RETRIES_EXHAUSTED, INVALID_RECORD, UNREADABLE_FILE)


class CurrentsEvent(NamedTuple):
    """One decoded Currents record and where it came from."""
    event_type: str
    source_file: str
    record: Mapping[str, Any]


class SegmentEvent(NamedTuple):
    """One Segment track call, serialized once as compact UTF-8 JSON, with what its dead letter needs."""
    event_type: str
    source_file: str
    message_id: str
    payload: bytes


class FileRead(NamedTuple):
    """A file the read stage has finished with: its FileMetadata, and how many units later stages must
    account for (the events decoded from it, plus one per unreadable part, whose dead letter it is)."""
    metadata: Any
    units: int


def handled(source_file, units=1):
    """The HANDLED element saying that `units` of a file's units are accounted for."""
    return source_file, units


def at_earliest_timestamp():
    """The global window, with a grouping's output at its earliest input's timestamp (not at the end of the
    window, Beam's default): file paths grouped before the read keep the start-of-time timestamp, so
    that events can be stamped with their event time without moving any timestamp back."""
    return beam.WindowInto(GlobalWindows(), timestamp_combiner=TimestampCombiner.OUTPUT_AT_EARLIEST)
