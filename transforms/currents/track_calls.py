"""Currents records → Segment track calls, serialized once.

`TrackBuilder` builds the call exactly as the mapping's row says (its properties and context and nothing else,
unless passthrough is on), with `userId` = external_user_id when the user has one and `anonymousId` = the Braze
user id (`user_id`) when the mapping sends it on every call (current) or the user has no external id (anonymous
users, when they are sent); its row's plan is made once for the many records of one type. `serialize` turns a call
into the compact JSON bytes (orjson) every later step uses. `TrackSettings` is everything that shapes the calls.

A record that cannot be mapped costs only itself: the builder raises with the reason (the delivery makes it an
`invalid_record` dead letter). Among the reasons: a `time` that is not an integer of UNIX seconds in the years
1970 to 9999 UTC (a value that looks like milliseconds or microseconds is not converted, since Currents writes
seconds: the message says which unit it looks like), an `external_user_id` or `user_id` sent as an id holding NUL
or other control characters or only invisible ones, an `id` over Segment's 100-character messageId limit, a value
JSON cannot carry (NaN, infinities, bytes).

Knows nothing of Beam; imports no Beam module.
"""
import hashlib
import importlib.metadata
import json
import math
import time
import unicodedata
import uuid
from dataclasses import dataclass
from typing import Any, Mapping as MappingType, Optional

import orjson

from currents_to_segment.transforms.currents.catalog import (
    BRAZE_ID_FIELD, CLASSIC, CONVERTERS, ENVELOPE_FIELDS, Mapping, trait_name)
from currents_to_segment.transforms.currents.records import has_text

DISTRIBUTION = "braze-currents-to-segment"
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


def identity(value, field="external_user_id"):
    """An id sent as userId or anonymousId; ValueError when it holds control characters or only invisible ones
    (the caller has already left out null and blank ids)."""
    if any(unicodedata.category(char) == "Cc" for char in value):
        raise ValueError(f"{field} {value!r} holds NUL or other control characters")
    if all(char.isspace() or unicodedata.category(char) == "Cf" for char in value):
        raise ValueError(f"{field} {value!r} holds only invisible characters")
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


def _json_value(value):
    """The value, or ValueError for a float JSON cannot carry (NaN, infinities), in it or in a list it is."""
    if value.__class__ is float:
        if not math.isfinite(value):
            raise ValueError(f"{value} is not a JSON number")
    elif value.__class__ is list:
        for item in value:
            _json_value(item)
    return value


class TrackBuilder:
    """Builds the track calls of the records of one event type that a mapping sends, its row's plan (which
    fields, converters and context paths) made once."""

    def __init__(self, event_type, *, mapping=CLASSIC, namespace=None, passthrough=False, integrations=None):
        spec = mapping.spec_for(event_type)
        self._event = spec.segment_event
        self._properties = [(key, field, CONVERTERS.get(mapping.converters.get(key)))
                            for key, field in spec.properties]
        self._context = [(path.split("."), field) for path, field in spec.context]
        self._anonymous_id = mapping.anonymous_id
        self._namespace = namespace
        self._integrations = integrations
        used = ENVELOPE_FIELDS.keys() | {field for _, field in spec.properties + spec.context}
        # The fields a passthrough leaves out: those sent already, and user_id when it is the anonymousId.
        self._passthrough_used = {False: used, True: used | {BRAZE_ID_FIELD}} if passthrough else None

    def build(self, record):
        """The call of one record; ValueError or TypeError with the reason when none can be made."""
        properties = {}
        for key, field, convert in self._properties:
            value = record.get(field)
            if value is not None:
                properties[key] = convert(value) if convert else _json_value(value)
        message = {"type": "track", "event": self._event}
        external = record.get("external_user_id")
        if has_text(external):
            message["userId"] = identity(external)
        if self._anonymous_id or "userId" not in message:
            braze_id = record.get(BRAZE_ID_FIELD)
            if has_text(braze_id):
                message["anonymousId"] = identity(braze_id, BRAZE_ID_FIELD)
        if "userId" not in message and "anonymousId" not in message:
            raise ValueError("the record has neither an external_user_id nor a user_id to send")
        message["timestamp"] = iso_timestamp(event_time(record.get("time")))
        message["messageId"] = message_id(record.get("id"), self._namespace)
        message["properties"] = properties
        context = message["context"] = {"library": LIBRARY}
        if self._integrations:
            message["integrations"] = self._integrations
        for path, field in self._context:
            value = record.get(field)
            if value is not None:
                place = context
                for parent in path[:-1]:
                    place = place.setdefault(parent, {})
                place[path[-1]] = _json_value(value)
        if self._passthrough_used is not None:
            used = self._passthrough_used["anonymousId" in message]
            for field, value in record.items():
                if value is not None and field not in used:
                    properties.setdefault(field, _json_value(value))
        return message


def to_track(record, event_type, *, mapping=CLASSIC, namespace=None, passthrough=False, integrations=None):
    """Build the Segment track call of one Currents record of a type the mapping sends.

    A property or context value is sent only when its source field is in the record and not null. With
    passthrough, every other non-null field is sent too, as a property under its own name. `integrations`
    is Segment's destination filter object, sent as given. ValueError when the record has neither id.
    """
    return TrackBuilder(event_type, mapping=mapping, namespace=namespace, passthrough=passthrough,
                        integrations=integrations).build(record)


def hash_value(value):
    """The SHA-256 hex digest --hash_fields sends for a value: of a string as is, of anything else as JSON."""
    text = value if isinstance(value, str) else json.dumps(value)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def protect(message, redact=frozenset(), hashed=frozenset()):
    """Leave out the `redact` names and replace the `hashed` ones by the SHA-256 hex digest of their
    value (a string as is, anything else as JSON), in the properties and context.traits; in place."""
    context = message["context"]
    for fields in (message["properties"], context.get("traits", {})):
        for name in redact & fields.keys():
            del fields[name]
        for name in hashed & fields.keys():
            fields[name] = hash_value(fields[name])
    if "traits" in context and not context["traits"]:
        del context["traits"]
    return message


class RecordProtection:
    """What --redact_fields and --hash_fields do to the Currents record a dead letter keeps: a field the mapping
    sends under a redacted name (a property key, or the trait of a context.traits path) is left out, one sent
    under a hashed name holds the SHA-256 hex digest of the value as it would have been sent (converted, as
    `protect` hashes it); with passthrough, a field named directly is treated the same. A type the mapping does
    not send is treated as any of its types would be. Call `protected(event_type, record)`."""

    def __init__(self, mapping, redact=frozenset(), hashed=frozenset(), passthrough=False):
        self._mapping = mapping
        self._redact, self._hashed, self._passthrough = frozenset(redact), frozenset(hashed), passthrough
        self._plans = {}

    def _plan(self, event_type):
        """(fields left out, {field: converter or None} of the fields hashed) of a type."""
        try:
            return self._plans[event_type]
        except KeyError:
            pass
        spec = self._mapping.spec_for(event_type)
        specs = [spec] if spec is not None else list(self._mapping.events.values())
        left_out, hashed = set(), {}
        for each in specs:
            for key, field in each.properties:
                if key in self._redact:
                    left_out.add(field)
                elif key in self._hashed:
                    hashed.setdefault(field, CONVERTERS.get(self._mapping.converters.get(key)))
            for path, field in each.context:
                trait = trait_name(path)
                if trait in self._redact:
                    left_out.add(field)
                elif trait in self._hashed:
                    hashed.setdefault(field, None)
        if self._passthrough:
            left_out |= self._redact
            for field in self._hashed:
                hashed.setdefault(field, None)
        plan = self._plans[event_type] = (frozenset(left_out), {f: c for f, c in hashed.items() if f not in left_out})
        return plan

    def protected(self, event_type, record):
        """A copy of the record as a dead letter may keep it."""
        left_out, hashed = self._plan(event_type)
        kept = {}
        for field, value in record.items():
            if field in left_out:
                continue
            if field in hashed and value is not None:
                value = _hashed_in_letter(value, hashed[field])
            kept[field] = value
        return kept


def _hashed_in_letter(value, convert):
    """The digest of a value as it would have been sent, or of what it holds when it could not be sent."""
    try:
        return hash_value(convert(value) if convert else value)
    except Exception:  # pylint: disable=broad-except  # a value no call could carry (bytes, a wrong type)
        return hash_value(repr(value))


def serialize(message):
    """Compact UTF-8 JSON of a message (orjson); NaN, infinities and other non-JSON values raise ValueError (orjson
    itself writes NaN as null: the values are checked first)."""
    for value in _values(message):
        if value.__class__ is float and not math.isfinite(value):
            raise ValueError(f"{value} is not a JSON number")
    try:
        return orjson.dumps(message)
    except TypeError as error:  # orjson.JSONEncodeError: a type JSON has no form for (bytes, sets, ...)
        raise ValueError(str(error)) from None


def _values(document):
    """Every value of a JSON-like document, containers included."""
    stack = [document]
    while stack:
        value = stack.pop()
        yield value
        if value.__class__ is dict:
            stack.extend(value.values())
        elif value.__class__ is list:
            stack.extend(value)


@dataclass(frozen=True)
class TrackSettings:
    """How records become calls: the mapping (a catalog.Mapping), whether users without an external id are
    sent (anonymousId only), messageId namespace, passthrough of other fields, the `integrations` object sent
    with every call, and the property or trait names to redact or to hash."""

    message_id_namespace: Optional[str] = None
    passthrough: bool = False
    integrations: Optional[MappingType[str, Any]] = None
    redact: frozenset = frozenset()
    hashed: frozenset = frozenset()
    mapping: Mapping = CLASSIC
    include_anonymous: bool = False

    def shape(self):
        """Everything here that changes what Segment receives, as the options name it (for the ledger); the
        mapping as its name and the digest of its table."""
        return {"mapping": f"{self.mapping.name}:{self.mapping.digest()}",
                "include_anonymous_users": self.include_anonymous,
                "message_id_namespace": self.message_id_namespace, "passthrough_fields": self.passthrough,
                "integrations": self.integrations, "redact_fields": sorted(self.redact),
                "hash_fields": sorted(self.hashed)}
