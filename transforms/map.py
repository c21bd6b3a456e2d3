"""Map: one Currents record to one Segment track call, serialized once.

`to_track` builds the call exactly as the catalog says (the catalog's properties and nothing else,
unless passthrough is on); `serialize` turns it into the compact JSON bytes every later stage uses.
"""
import hashlib
import importlib.metadata
import json
import time
import uuid

import apache_beam as beam
from apache_beam.transforms.window import TimestampedValue

from transforms import dead_letters
from transforms.catalog import (
    COMMON_PROPERTIES, EMAIL_TRAIT_FAMILIES, EMAIL_TRAIT_FIELD, PROPERTY_CONVERTERS, spec_for)
from transforms.elements import DEAD_LETTER, SegmentEvent
from transforms.segment_client import MAX_EVENT_BYTES

DISTRIBUTION = "braze-currents-to-segment"
# Fields that become userId, timestamp and messageId rather than properties.
_ENVELOPE_FIELDS = frozenset({"id", "time", "external_user_id"})


def _library():
    try:
        version = importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return {"name": DISTRIBUTION, "version": version}


LIBRARY = _library()


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
    return currents_id if namespace is None else str(uuid.uuid5(namespace, currents_id))


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
        "userId": record["external_user_id"],
        "timestamp": iso_timestamp(record.get("time")),
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


class _MapToTrackFn(beam.DoFn):
    """CurrentsEvent → timestamped SegmentEvent; invalid records and events over 32,000 bytes go to
    the dead-letter output instead, since Segment would reject the whole request carrying them."""

    def __init__(self, message_id_namespace, passthrough, integrations, protect_fields):
        super().__init__()
        self._message_id_namespace = message_id_namespace
        self._passthrough = passthrough
        self._integrations = integrations
        self._protect = protect_fields or {}
        self._namespace = None

    def setup(self):
        self._namespace = namespace_uuid(self._message_id_namespace)

    def process(self, event):
        try:
            message = to_track(event.record, event.event_type, namespace=self._namespace,
                               passthrough=self._passthrough, integrations=self._integrations)
            if self._protect:
                protect(message, self._protect.get("redact", frozenset()), self._protect.get("hash", frozenset()))
            payload = serialize(message)
        except (KeyError, TypeError, ValueError, OverflowError) as error:
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letters.record_letter(event, "invalid_record", error))
            return
        segment_event = SegmentEvent(event.event_type, event.source_file, message["messageId"], payload)
        if len(payload) > MAX_EVENT_BYTES:
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letters.event_letter(
                segment_event, "event_too_large",
                error=f"{len(payload)} bytes serialized, Segment accepts at most {MAX_EVENT_BYTES}"))
            return
        yield TimestampedValue(segment_event, event.record["time"])


class ToSegmentTrack(beam.PTransform):
    """Map a PCollection of CurrentsEvent to SegmentEvent (tag "events", stamped with the event's
    `time`) and dead letters (tag DEAD_LETTER). `protect_fields`: {"redact": names, "hash": names}."""

    def __init__(self, message_id_namespace=None, passthrough=False, integrations=None, protect_fields=None):
        super().__init__()
        self._fn_args = (message_id_namespace, passthrough, integrations, protect_fields)

    def expand(self, events):
        return events | "To track call" >> beam.ParDo(_MapToTrackFn(*self._fn_args)).with_outputs(
            DEAD_LETTER, main="events")
