"""The elements that flow between the stages, and the tag every stage uses for its dead letters."""
from typing import Any, Mapping, NamedTuple

DEAD_LETTER = "dead_letter"


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
