"""--mapping_file: a mapping of the user's own, as changes to a built-in one (transforms.currents.catalog), in JSON.

    {
      "base": "current",
      "rename": {"users.messages.email.Open": "Email Opened (Braze)"},
      "drop": ["users.messages.email.Delivery"],
      "add": {"users.messages.banner.Click": {"family": "in_app", "event": "Banner Clicked",
                                              "properties": {"banner_id": "banner_id", "campaign_id": "campaign_id"},
                                              "context": {"device.model": "device_model"}}},
      "properties": {"users.messages.email.Click": {"add": {"url_alias": "link_alias"}, "remove": ["user_agent"]}}
    }

Every key is optional. `base` is the built-in mapping changed (default: --mapping); `rename` gives types it
sends another Segment event name; `drop` stops sending types; `add` sends more types (or, with `drop`, replaces
one), each with its family (one of the base's: the pipeline's branches), its event name, its properties
(Segment key -> Avro field) and its context (a path under `context`, such as "traits.email", -> Avro field);
`properties` adds properties to (or changes the field of) a type sent, and removes some. Properties and
context are sent when the record has the field and it is not null.

Names that land in Segment's calls are checked against what Segment takes: an event name has 1 to
MAX_EVENT_NAME_CHARS characters, a property key or a whole context path 1 to MAX_KEY_CHARS, none with control
characters (so that no name alone can keep an event from fitting in Segment's 32 KB); a context path is not a
prefix of another of its event (`device` and `device.model` cannot both be set) and does not set a whole object of
Segment's context (`traits`, `device`: give a path under it). The file nests no deeper than MAX_DEPTH.

The file's text is checked before anything runs (the caller reads it, from any filesystem): a problem is a
MappingFileError, one line naming the file, the entry and the fix. Imports no Beam module.
"""
import json
import re
import unicodedata

from currents_to_segment.transforms.currents.catalog import BUILT_IN, EventSpec, Mapping

KEYS = ("base", "rename", "drop", "add", "properties")
_ADD_KEYS = ("family", "event", "properties", "context")
_PROPERTY_CHANGE_KEYS = ("add", "remove")
MAX_EVENT_NAME_CHARS = 200
MAX_KEY_CHARS = 256  # a property key, or a whole context path
MAX_DEPTH = 4  # the format's own: the file -> add -> a type -> its properties
# Segment's context fields that are objects: a mapping sets fields under them, never one whole.
_CONTEXT_OBJECTS = ("app", "campaign", "device", "library", "location", "network", "os", "page", "referrer",
                    "screen", "traits")
_SHOWN_CHARS = 60


class MappingFileError(ValueError):
    """A mapping file that cannot be used, in one line."""


def objects_without_duplicates(pairs):
    """A JSON object's pairs as a dict; MappingFileError (a ValueError) naming a key given twice (json would keep
    the last one silently)."""
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise MappingFileError(f'{_shown(key)} is given twice')
        seen[key] = value
    return seen


def _reject_constant(name):
    raise MappingFileError(f"{name} is not JSON")


def _shown(name, count=True):
    """A name as an error line shows it: JSON, cut when long (saying how long, unless `count` is False)."""
    text = json.dumps(name, ensure_ascii=False)
    if len(text) <= _SHOWN_CHARS:
        return text
    return f'{text[:_SHOWN_CHARS]}..."' + (f" ({len(name)} characters)" if count else "")


def _depth(text):
    """How deep the JSON text nests arrays and objects (strings skipped; counted without parsing, so that no depth
    is too much for the counting)."""
    depth = deepest = 0
    for bracket in re.findall(r'[\[\]{}]', re.sub(r'"(?:[^"\\]|\\.)*"', "", text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


class _Checker:
    """Raises MappingFileError for the entry at `where` of the file, with the fix."""

    def __init__(self, path):
        self.path = path

    def fail(self, where, problem):
        if len(where) > 2 * _SHOWN_CHARS:
            where = f"{where[:2 * _SHOWN_CHARS]}..."
        raise MappingFileError(f"--mapping_file {self.path}: {where}: {problem}")

    def object(self, value, where, known=None):
        if not isinstance(value, dict):
            self.fail(where, f"must be a JSON object, got {json.dumps(value)}"[:300])
        for key in value:
            if known is not None and key not in known:
                self.fail(where, f'unknown key {_shown(key)} (known: {", ".join(known)})')
        return value

    def text(self, value, where, what="the name"):
        if not isinstance(value, str) or not value.strip():
            self.fail(where, f"{what} must be a non-empty string, got {json.dumps(value)}"[:300])
        return value

    def segment_name(self, value, where, what, limit):
        """A name Segment receives (event name, property key, part of a context path): text of at most `limit`
        characters, without control characters."""
        self.text(value, where, what)
        if len(value) > limit:
            self.fail(where, f"{what} {_shown(value, count=False)} has {len(value)} characters: Segment takes at "
                             f"most {limit} here")
        if any(unicodedata.category(char) == "Cc" for char in value):
            self.fail(where, f"{what} {_shown(value)} holds control characters (a newline, a tab, NUL...)")
        return value

    def pairs(self, value, where, what):
        """A {key: Avro field} object as (key, field) pairs."""
        found = []
        for key, field in self.object(value, where).items():
            if what == "property":
                self.segment_name(key, f'{where}[{_shown(key, count=False)}]', "a property key", MAX_KEY_CHARS)
            else:
                self.text(key, where, f"a {what} name")
            if field is None or field == "":
                self.fail(f'{where}["{key}"]', f'no source field: give the Avro field it is read from, e.g. '
                                              f'"{key}": "{key}"')
            found.append((key, self.text(field, f'{where}["{key}"]', "the source field")))
        return tuple(found)


def _context_pairs(check, value, where):
    found = check.pairs(value, where, "context path")
    split = []
    for path, _ in found:
        parts = path.split(".")
        at = f'{where}[{_shown(path, count=False)}]'
        if not all(parts) or parts[0] == "library":
            check.fail(at, "a context path is names joined by dots, such as traits.email or "
                           "device.model (context.library is the job's own)")
        check.segment_name(path, at, "the context path", MAX_KEY_CHARS)  # so few levels, each short
        for part in parts:
            check.text(part, at, "a part of the context path")
        if len(parts) == 1 and parts[0] in _CONTEXT_OBJECTS:
            check.fail(at, f"context.{parts[0]} is an object of Segment's: give a path under it, such as "
                           f"{parts[0]}.{'email' if parts[0] == 'traits' else 'name'}")
        split.append((path, parts))
    for path, parts in split:
        for other, other_parts in split:
            if other != path and other_parts[:len(parts)] == parts:
                check.fail(f'{where}[{_shown(other)}]', f'it sets a field inside context.{path}, which "{path}" '
                                                        f"sets whole: give one or the other")
    return found


def apply_changes(base, changes, path):
    """The Mapping `changes` (the file's parsed JSON) make of `base`; MappingFileError naming `path`."""
    check = _Checker(path)
    check.object(changes, "the file", KEYS)
    events = dict(base.events)
    families = base.families

    def sent(event_type, where, fix):
        if event_type not in events:
            check.fail(where, f"the {base.name} mapping does not send {event_type}: {fix}")

    drop = changes.get("drop", [])
    if not isinstance(drop, list):
        check.fail("drop", f"must be a list of Currents event types, got {json.dumps(drop)}"[:300])
    for event_type in drop:
        check.text(event_type, "drop", "an event type")
        sent(event_type, f'drop["{event_type}"]', "leave it out of drop")
        del events[event_type]

    for event_type, name in check.object(changes.get("rename", {}), "rename").items():
        sent(event_type, f'rename["{event_type}"]', 'add it under "add" instead')
        events[event_type] = events[event_type]._replace(segment_event=check.segment_name(
            name, f'rename["{event_type}"]', "the name", MAX_EVENT_NAME_CHARS))

    for event_type, entry in check.object(changes.get("add", {}), "add").items():
        where = f'add["{event_type}"]'
        check.text(event_type, "add", "an event type")
        if event_type in events:
            check.fail(where, f"the {base.name} mapping already sends {event_type} (a type mapped twice): change it "
                              'with "rename" or "properties", or list it under "drop" too to replace it')
        check.object(entry, where, _ADD_KEYS)
        for required in ("family", "event"):
            if required not in entry:
                check.fail(where, f'"{required}" is missing')
        family = check.text(entry["family"], f"{where}.family", "the family")
        if family not in families:
            check.fail(f"{where}.family", f'"{family}" is not a family of the {base.name} mapping: use one of '
                                          f"{', '.join(families)}")
        events[event_type] = EventSpec(
            event_type, family, check.segment_name(entry["event"], f"{where}.event", "the name",
                                                   MAX_EVENT_NAME_CHARS),
            check.pairs(entry.get("properties", {}), f"{where}.properties", "property"),
            _context_pairs(check, entry.get("context", {}), f"{where}.context"))

    for event_type, change in check.object(changes.get("properties", {}), "properties").items():
        where = f'properties["{event_type}"]'
        sent(event_type, where, 'add it under "add" first')
        check.object(change, where, _PROPERTY_CHANGE_KEYS)
        spec = events[event_type]
        properties = dict(spec.properties)
        remove = change.get("remove", [])
        if not isinstance(remove, list):
            check.fail(f"{where}.remove", f"must be a list of property names, got {json.dumps(remove)}"[:300])
        for key in remove:
            check.text(key, f"{where}.remove", "a property name")
            if key not in properties:
                check.fail(f"{where}.remove", f'{event_type} has no property "{key}" (it has: '
                                              f"{', '.join(properties) or 'none'})")
            del properties[key]
        properties.update(check.pairs(change.get("add", {}), f"{where}.add", "property"))
        events[event_type] = spec._replace(properties=tuple(properties.items()))

    base_name = changes.get("base", base.name)
    return Mapping(f"{base_name}+{path.rsplit('/', 1)[-1]}", families, events, base.anonymous_id, base.converters)


def parse(text, path, default_base):
    """The Mapping the text of the mapping file at `path` describes, on the built-in mapping it names (default:
    `default_base`)."""
    depth = _depth(text)
    if depth > MAX_DEPTH:
        raise MappingFileError(f"--mapping_file {path}: arrays and objects nest {depth} deep, the format at most "
                               f"{MAX_DEPTH} (the file -> add -> a type -> its properties)")
    try:
        changes = json.loads(text, object_pairs_hook=objects_without_duplicates, parse_constant=_reject_constant)
    except MappingFileError as error:
        raise MappingFileError(f"--mapping_file {path}: {error}") from None
    except (ValueError, RecursionError) as error:
        raise MappingFileError(f"--mapping_file {path} is not JSON: {error}".splitlines()[0][:500]) from None
    base_name = changes.get("base", default_base) if isinstance(changes, dict) else default_base
    base = BUILT_IN.get(base_name) if isinstance(base_name, str) else None
    if base is None:
        raise MappingFileError(f"--mapping_file {path}: base: {json.dumps(base_name)} is not a built-in mapping: "
                               f"use one of {', '.join(BUILT_IN)}")
    return apply_changes(base, changes, path)
