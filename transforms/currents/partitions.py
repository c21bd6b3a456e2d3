"""The layout of a Currents bucket: which `event_type=`/`date=` hour partitions a run reads.

Currents writes `<root>/dataexport.<...>/event_type=<type>/date=<YYYY-MM-DD-HH>/...`. Braze warns the
names may change, so nothing here builds a path: event-type and hour folders are found by listing (with the
`children(uri)` the caller gives: folder names under a URI), and only their `event_type=` and `date=` segments are
interpreted. `date=` is the UTC hour Braze queued the event, not the event's own `time`. Imports no Beam module.
"""
import datetime
import re
from typing import NamedTuple

from currents_to_segment.transforms.currents.catalog import CLASSIC

UTC = datetime.timezone.utc
HOUR = datetime.timedelta(hours=1)
_EVENT_TYPE = re.compile(r"^event_type=(.+)$")
_DATE = re.compile(r"^date=(\d{4}-\d{2}-\d{2}-\d{2})$")
_HOUR_FORMATS = ("%Y-%m-%dT%H", "%Y-%m-%d")


class Partition(NamedTuple):
    """One `date=` hour folder of one event type."""
    event_type: str
    hour: datetime.datetime
    path: str


def parse_hour(text):
    """Parse YYYY-MM-DD or YYYY-MM-DDTHH (UTC) into an aware datetime; ValueError otherwise."""
    for hour_format in _HOUR_FORMATS:
        try:
            return datetime.datetime.strptime(text, hour_format).replace(tzinfo=UTC)
        except ValueError:
            continue
    raise ValueError(f"{text!r} is not YYYY-MM-DD or YYYY-MM-DDTHH")


def hours_between(start, end):
    """The hours from start (inclusive) to end (exclusive)."""
    hours = []
    while start < end:
        hours.append(start)
        start += HOUR
    return hours


def expand_event_types(names, mapping=CLASSIC):
    """Event types named directly or through a family name of the mapping (push, email, ...); None means all."""
    if not names:
        return None
    selected = set()
    for name in names:
        if name in mapping.families:
            selected.update(mapping.types_of(name))
        else:
            selected.add(name)
    return frozenset(selected)


def _join(parent, child):
    return parent.rstrip("/") + "/" + child


def event_type_folders(root, children):
    """The `event_type=` folders at, just under, or two levels under root, as (event type, path) pairs.

    Two levels: a prefix holding several `dataexport.*` folders (one per Currents integration).
    `children` lists the folder names under a URI.
    """
    root = root.rstrip("/")
    found = _EVENT_TYPE.match(root.rsplit("/", 1)[-1])
    if found:
        return [(found.group(1), root)]
    folders = []
    for name in children(root):
        found = _EVENT_TYPE.match(name)
        if found:
            folders.append((found.group(1), _join(root, name)))
            continue
        for child in children(_join(root, name)):
            found = _EVENT_TYPE.match(child)
            if found:
                folders.append((found.group(1), _join(_join(root, name), child)))
    return sorted(folders)


def select_partitions(root, start=None, end=None, event_types=None, *, children):
    """The hour partitions under root whose hour is in [start, end), of the selected event types.

    Lists the root (and, for a prefix, each dataexport folder) once, then each selected event-type
    folder once; never one listing per hour.
    """
    partitions = []
    for event_type, folder in event_type_folders(root, children):
        if event_types is not None and event_type not in event_types:
            continue
        for name in children(folder):
            found = _DATE.match(name)
            if not found:
                continue
            hour = datetime.datetime.strptime(found.group(1), "%Y-%m-%d-%H").replace(tzinfo=UTC)
            if (start is None or hour >= start) and (end is None or hour < end):
                partitions.append(Partition(event_type, hour, _join(folder, name)))
    return partitions
