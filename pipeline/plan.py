"""--plan: what a run would read, per event type and hour, without sending anything.

Event counts come from the Avro block headers, so no record is decoded.
"""
import collections
import re

import fastavro

from currents_to_segment.transforms import ledger
from currents_to_segment.transforms.currents.records import event_type_from_path
from currents_to_segment.transforms.file_access import FileAccess

_DATE = re.compile(r"(?:^|/)date=([^/]+)/")


def _count_events(files, path):
    with files.open(path) as stream:
        return sum(block.num_records for block in fastavro.block_reader(stream))


def _file_entry(files, metadata, skipped):
    """(events counted, text line) of one file; 0 events for a skipped or unreadable file."""
    line = f"    {metadata.path}  {metadata.size_in_bytes:,} bytes"
    if skipped:
        return 0, line + "  (in the ledger: skipped)"
    try:
        events = _count_events(files, metadata.path)
    except Exception as error:  # pylint: disable=broad-except  # any failure makes the file unreadable
        return 0, f"{line}  UNREADABLE: {error}".splitlines()[0]
    return events, f"{line}  {events:,} events"


def _sent_as(mapping, event_type):
    spec = mapping.spec_for(event_type)
    return (f'{mapping.name} mapping: {event_type} is sent as "{spec.segment_event}" ({spec.family})' if spec
            else f"{mapping.name} mapping: {event_type} is not sent (counted as unsupported_event_type)")


def describe(patterns, ledger_dir=None, scope=ledger.WHOLE_FILE, access=None, destination=None, mapping=None,
             event_types=None):
    """A text plan of the files the patterns select: first, per event type, whether the mapping (a
    catalog.Mapping) sends it and as which Segment event; then per (event type, hour) partition, and per file.

    Files the ledger holds for this scope and destination (ledger.destination_of; its write key None when
    unknown: entries of any key count; only the ledger partitions of these files are read) are listed as skipped; files whose path names a type not among
    `event_types` (when given) are left out. `access` lists and opens the files (a
    transforms.file_access.FileAccess; Beam's filesystems when None).
    """
    access = access or FileAccess()
    any_key = bool(destination) and destination.get("write_key") is None
    lookup = ledger.Lookup(ledger_dir, any_key) if ledger_dir else None
    where = ledger.destination_key(destination, any_key)
    files = {m.path: m for pattern in patterns for m in access.match(pattern)
             if event_types is None or event_type_from_path(m.path) in (None, *event_types)}
    groups = collections.defaultdict(list)
    for path in sorted(files):
        date = _DATE.search(path)
        groups[(event_type_from_path(path) or "(type in file header)", date.group(1) if date else "-")].append(
            files[path])
    lines, total_files, total_bytes, total_events = [], 0, 0, 0
    for (event_type, hour), members in sorted(groups.items()):
        entries = [_file_entry(access, m, lookup is not None and lookup.held(
            m.path, m.size_in_bytes, m.last_updated_in_seconds, scope, where) == ledger.RECORDED) for m in members]
        size, events = sum(m.size_in_bytes for m in members), sum(n for n, _ in entries)
        lines.append(f"{event_type}  date={hour}  {len(members)} files  {size:,} bytes  {events:,} events")
        lines.extend(line for _, line in entries)
        total_files, total_bytes, total_events = total_files + len(members), total_bytes + size, total_events + events
    lines.append(f"TOTAL  {len(groups)} partitions  {total_files} files  {total_bytes:,} bytes  "
                 f"{total_events:,} events to read")
    if mapping is not None:
        lines[:0] = [_sent_as(mapping, event_type) for event_type in sorted({t for t, _ in groups}) if
                     not event_type.startswith("(")]
    if any_key and ledger_dir:
        lines.insert(0, "(no write key was given: files the ledger holds for this endpoint and these mapping "
                        "options are shown as skipped, whatever the write key they were sent with)")
    return "\n".join(lines)
