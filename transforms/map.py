"""Map: one Currents record to one Segment track call, serialized once.

`to_track` builds the call exactly as the catalog says (the catalog's properties and nothing else,
unless passthrough is on); `serialize` turns it into the compact JSON bytes every later stage uses.

A record that cannot be mapped costs only itself: it becomes an `invalid_record` dead letter with the
reason, and the run goes on. Among the reasons: a `time` that is not an integer of UNIX seconds in the
years 1970 to 9999 UTC (a value that looks like milliseconds or microseconds is not converted, since
Currents writes seconds: the letter says which unit it looks like), an `external_user_id` holding NUL
or other control characters or only invisible ones, an `id` over Segment's 100-character messageId limit.
"""
import hashlib
import importlib.metadata
import json
import time
import unicodedata
import uuid
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import apache_beam as beam

from transforms import dead_letters, metrics
from transforms.catalog import (
    COMMON_PROPERTIES, EMAIL_TRAIT_FAMILIES, EMAIL_TRAIT_FIELD, PROPERTY_CONVERTERS, spec_for)
from transforms.elements import DEAD_LETTER, EVENT_TOO_LARGE, INVALID_RECORD, SegmentEvent
from transforms.segment_client import MAX_EVENT_BYTES

DISTRIBUTION = "braze-currents-to-segment"
# Fields that become userId, timestamp and messageId rather than properties.
_ENVELOPE_FIELDS = frozenset({"id", "time", "external_user_id"})
# Timestamps Segment can be sent as ISO-8601 with a 4-digit year: 1970-01-01 up to 10000-01-01 (excluded).
END_OF_YEAR_9999 = 253_402_300_800
MAX_MESSAGE_ID_CHARS = 100  # Segment's limit
_SMALLER_UNITS = (("milliseconds", 10 ** 3), ("microseconds", 10 ** 6), ("nanoseconds", 10 ** 9))
# A value is said to look like one of those units only when it then falls in these years, when Currents
# events happen (2000 to 2099): 253402300800, just past year 9999 in seconds, would be 1978 in milliseconds.
_PLAUSIBLE_SECONDS = range(946_684_800, 4_102_444_800)


def _library():
    try:
        version = importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return {"name": DISTRIBUTION, "version": version}


LIBRARY = _library()


def event_time(value):
    """The Currents `time` as UNIX seconds within years 1970-9999; TypeError or ValueError with the reason."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"time must be an integer of UNIX seconds, got {value!r}")
    if 0 <= value < END_OF_YEAR_9999:
        return value
    looks_like = next((f" (it looks like {unit})" for unit, per_second in _SMALLER_UNITS
                       if value // per_second in _PLAUSIBLE_SECONDS), "")
    raise ValueError(f"time {value} is outside the years 1970-9999 as UNIX seconds{looks_like}")


def user_id(value):
    """The external_user_id as Segment's userId; ValueError when it holds control characters or only
    invisible ones (the caller has already dropped null and blank ids)."""
    if any(unicodedata.category(char) == "Cc" for char in value):
        raise ValueError(f"external_user_id {value!r} holds NUL or other control characters")
    if all(char.isspace() or unicodedata.category(char) == "Cf" for char in value):
        raise ValueError(f"external_user_id {value!r} holds only invisible characters")
    return value


def iso_timestamp(unix_seconds):
    """Format UNIX seconds as ISO-8601 UTC with milliseconds, e.g. 2024-03-01T12:00:00.000Z."""
    if not isinstance(unix_seconds, int) or isinstance(unix_seconds, bool):
        raise TypeError(f"time must be an integer of UNIX seconds, got {unix_seconds!r}")
    t = time.gmtime(unix_seconds)
    return (f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T"
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.000Z")


def namespace_uuid(namespace):
    """The UUID messageIds are derived in: the namespace itself when it is a UUID, else uuid5(URL, it)."""
    if namespace is None:
        return None
    try:
        return uuid.UUID(namespace)
    except ValueError:
        return uuid.uuid5(uuid.NAMESPACE_URL, namespace)


def message_id(currents_id, namespace=None):
    """Segment messageId of a Currents event: its `id`, or uuid5(namespace, id) when namespaced."""
    if not isinstance(currents_id, str) or not currents_id:
        raise ValueError("the record has no id")
    if namespace is not None:
        return str(uuid.uuid5(namespace, currents_id))
    if len(currents_id) > MAX_MESSAGE_ID_CHARS:
        raise ValueError(f"id has {len(currents_id)} characters, over Segment's {MAX_MESSAGE_ID_CHARS} for a "
                         "messageId (--message_id_namespace derives short ones)")
    return currents_id


def to_track(record, event_type, *, namespace=None, passthrough=False, integrations=None):
    """Build the Segment track call of one Currents record of a catalogued event type.

    A property is sent only when its source field is in the record and not null. With passthrough,
    every other non-null field is sent too, under its own name. `integrations` is Segment's
    destination filter object, sent as given.
    """
    spec = spec_for(event_type)
    properties = {}
    for name in COMMON_PROPERTIES:
        if record.get(name) is not None:
            properties[name] = record[name]
    for name, field in spec.properties.items():
        value = record.get(field)
        if value is not None:
            convert = PROPERTY_CONVERTERS.get(name)
            properties[name] = convert(value) if convert else value
    message = {
        "type": "track",
        "event": spec.segment_event,
        "userId": user_id(record["external_user_id"]),
        "timestamp": iso_timestamp(event_time(record.get("time"))),
        "messageId": message_id(record.get("id"), namespace),
        "properties": properties,
        "context": {"library": LIBRARY},
    }
    if integrations:
        message["integrations"] = integrations
    email_trait = spec.family in EMAIL_TRAIT_FAMILIES
    if email_trait and record.get(EMAIL_TRAIT_FIELD) is not None:
        message["context"]["traits"] = {"email": record[EMAIL_TRAIT_FIELD]}
    if passthrough:
        used = _ENVELOPE_FIELDS | set(spec.properties.values())
        if email_trait:
            used |= {EMAIL_TRAIT_FIELD}
        for field, value in record.items():
            if value is not None and field not in used:
                properties.setdefault(field, value)
    return message


def protect(message, redact=frozenset(), hashed=frozenset()):
    """Leave out the `redact` names and replace the `hashed` ones by the SHA-256 hex digest of their
    value (a string as is, anything else as JSON), in the properties and context.traits; in place."""
    context = message["context"]
    for fields in (message["properties"], context.get("traits", {})):
        for name in redact & fields.keys():
            del fields[name]
        for name in hashed & fields.keys():
            value = fields[name] if isinstance(fields[name], str) else json.dumps(fields[name])
            fields[name] = hashlib.sha256(value.encode("utf-8")).hexdigest()
    if "traits" in context and not context["traits"]:
        del context["traits"]
    return message


def serialize(message):
    """Compact UTF-8 JSON of a message; NaN and other non-JSON values raise ValueError."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


@dataclass(frozen=True)
class MappingSettings:
    """How records become calls: messageId namespace, passthrough of other fields, the `integrations`
    object sent with every call, and the property or trait names to redact or to hash."""

    message_id_namespace: Optional[str] = None
    passthrough: bool = False
    integrations: Optional[Mapping[str, Any]] = None
    redact: frozenset = frozenset()
    hashed: frozenset = frozenset()

    def shape(self):
        """Everything here that changes what Segment receives, as the options name it (for the ledger)."""
        return {"message_id_namespace": self.message_id_namespace, "passthrough_fields": self.passthrough,
                "integrations": self.integrations, "redact_fields": sorted(self.redact),
                "hash_fields": sorted(self.hashed)}


class _MapToTrackFn(beam.DoFn):
    """CurrentsEvent → SegmentEvent; invalid records and events over 32,000 bytes go to
    the dead-letter output instead, since Segment would reject the whole request carrying them."""

    def __init__(self, settings):
        super().__init__()
        self._settings = settings
        self._namespace = None

    def setup(self):
        self._namespace = namespace_uuid(self._settings.message_id_namespace)
        self._letters = metrics.counter(metrics.DEAD_LETTERS_MADE)

    def process(self, event):
        settings = self._settings
        try:
            message = to_track(event.record, event.event_type, namespace=self._namespace,
                               passthrough=settings.passthrough, integrations=settings.integrations)
            if settings.redact or settings.hashed:
                protect(message, settings.redact, settings.hashed)
            payload = serialize(message)
        except Exception as error:  # pylint: disable=broad-except  # any value that cannot be mapped costs its record
            self._letters.inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letters.record_letter(event, INVALID_RECORD, error))
            return
        segment_event = SegmentEvent(event.event_type, event.source_file, message["messageId"], payload)
        if len(payload) > MAX_EVENT_BYTES:
            self._letters.inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letters.event_letter(
                segment_event, EVENT_TOO_LARGE,
                error=f"{len(payload)} bytes serialized, Segment accepts at most {MAX_EVENT_BYTES}"))
            return
        yield segment_event


class ToSegmentTrack(beam.PTransform):
    """Map a PCollection of CurrentsEvent to SegmentEvent (tag "events", keeping the event-time timestamp
    the read stage gave it) and dead letters (tag DEAD_LETTER), as the MappingSettings say."""

    def __init__(self, settings=MappingSettings()):
        super().__init__()
        self._settings = settings

    def expand(self, events):
        return events | "To track call" >> beam.ParDo(_MapToTrackFn(self._settings)).with_outputs(
            DEAD_LETTER, main="events")
