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

The file's text is checked before anything runs (the caller reads it, from any filesystem): a problem is a
MappingFileError, one line naming the file, the entry and the fix. Imports no Beam module.
"""
import json

from currents_to_segment.transforms.currents.catalog import BUILT_IN, EventSpec, Mapping

KEYS = ("base", "rename", "drop", "add", "properties")
_ADD_KEYS = ("family", "event", "properties", "context")
_PROPERTY_CHANGE_KEYS = ("add", "remove")


class MappingFileError(ValueError):
    """A mapping file that cannot be used, in one line."""


def _objects_without_duplicates(pairs):
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise MappingFileError(f'"{key}" is given twice')
        seen[key] = value
    return seen


def _reject_constant(name):
    raise MappingFileError(f"{name} is not JSON")


class _Checker:
    """Raises MappingFileError for the entry at `where` of the file, with the fix."""

    def __init__(self, path):
        self.path = path

    def fail(self, where, problem):
        raise MappingFileError(f"--mapping_file {self.path}: {where}: {problem}")

    def object(self, value, where, known=None):
        if not isinstance(value, dict):
            self.fail(where, f"must be a JSON object, got {json.dumps(value)}"[:300])
        for key in value:
            if known is not None and key not in known:
                self.fail(where, f'unknown key "{key}" (known: {", ".join(known)})')
        return value

    def text(self, value, where, what="the name"):
        if not isinstance(value, str) or not value.strip():
            self.fail(where, f"{what} must be a non-empty string, got {json.dumps(value)}"[:300])
        return value

    def pairs(self, value, where, what):
        """A {key: Avro field} object as (key, field) pairs."""
        found = []
        for key, field in self.object(value, where).items():
            self.text(key, where, f"a {what} name")
            if field is None or field == "":
                self.fail(f'{where}["{key}"]', f'no source field: give the Avro field it is read from, e.g. '
                                              f'"{key}": "{key}"')
            found.append((key, self.text(field, f'{where}["{key}"]', "the source field")))
        return tuple(found)


def _context_pairs(check, value, where):
    found = check.pairs(value, where, "context path")
    for path, _ in found:
        parts = path.split(".")
        if not all(parts) or parts[0] == "library":
            check.fail(f'{where}["{path}"]', "a context path is names joined by dots, such as traits.email or "
                                             "device.model (context.library is the job's own)")
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
        events[event_type] = events[event_type]._replace(segment_event=check.text(name, f'rename["{event_type}"]'))

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
            event_type, family, check.text(entry["event"], f"{where}.event"),
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
    try:
        changes = json.loads(text, object_pairs_hook=_objects_without_duplicates, parse_constant=_reject_constant)
    except MappingFileError as error:
        raise MappingFileError(f"--mapping_file {path}: {error}") from None
    except ValueError as error:
        raise MappingFileError(f"--mapping_file {path} is not JSON: {error}") from None
    base_name = changes.get("base", default_base) if isinstance(changes, dict) else default_base
    base = BUILT_IN.get(base_name)
    if base is None:
        raise MappingFileError(f"--mapping_file {path}: base: {json.dumps(base_name)} is not a built-in mapping: "
                               f"use one of {', '.join(BUILT_IN)}")
    return apply_changes(base, changes, path)
