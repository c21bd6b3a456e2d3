"""Date ranges over a Currents bucket: which `event_type=`/`date=` hour partitions a run reads.

Currents writes `<root>/dataexport.<...>/event_type=<type>/date=<YYYY-MM-DD-HH>/...`. Braze warns the
names may change, so nothing here builds a path: event-type and hour folders are found by listing,
and only their `event_type=` and `date=` segments are interpreted. `date=` is the UTC hour Braze
queued the event, not the event's own `time`.
"""
import datetime
import os
import re
import time
from typing import NamedTuple

from apache_beam.io.filesystems import FileSystems

from currents_to_segment.transforms import ledger
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


def list_folders(uri):
    """Names of the folders directly under uri: a directory listing on local disks; on an object
    store, derived from the keys of one listing of everything below the prefix."""
    if "://" not in uri:
        return sorted(entry.name for entry in os.scandir(uri) if entry.is_dir())
    prefix = uri.rstrip("/") + "/"
    names = set()
    for metadata in FileSystems.match([prefix + "**"])[0].metadata_list:
        head, _, rest = metadata.path[len(prefix):].partition("/")
        if rest:
            names.add(head)
    return sorted(names)


def delimited_lister(head, list_prefixes):
    """A list_folders for URIs starting with head ("s3://", "gs://", "azfs://<account>/") that asks the
    store for one level only (a "/" delimiter), so that a day out of a month costs a few list calls
    instead of a listing of every key. list_prefixes(bucket, prefix) yields the full key prefixes one
    level below prefix."""
    def list_delimited(uri):
        bucket, _, key = uri[len(head):].partition("/")
        prefix = key.strip("/") + "/" if key.strip("/") else ""
        return sorted({child[len(prefix):].rstrip("/") for child in list_prefixes(bucket, prefix)})
    return list_delimited


def s3_prefixes(client):
    """list_prefixes over a boto3 S3 client (ListObjectsV2, paginated)."""
    def list_prefixes(bucket, prefix):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
            yield from (common["Prefix"] for common in page.get("CommonPrefixes", ()))
    return list_prefixes


def gcs_prefixes(client):
    """list_prefixes over a google.cloud.storage client (objects.list, paginated)."""
    def list_prefixes(bucket, prefix):
        for page in client.list_blobs(bucket, prefix=prefix, delimiter="/").pages:
            yield from page.prefixes
    return list_prefixes


def azure_prefixes(client):
    """list_prefixes over an azure.storage.blob BlobServiceClient; the "bucket" is the container."""
    def list_prefixes(container, prefix):
        for item in client.get_container_client(container).walk_blobs(name_starts_with=prefix, delimiter="/"):
            if item.name.endswith("/"):  # a BlobPrefix; the blobs at this level are not folders
                yield item.name
    return list_prefixes


def folder_lister(pipeline_options, root):
    """The folder listing for root, one level at a time on S3, GCS and Azure through the client Beam's
    own filesystem builds from the job's options (endpoints, credentials); list_folders elsewhere."""
    # pylint: disable=import-outside-toplevel  # each cloud's extra is optional
    if root.startswith("s3://"):
        from apache_beam.io.aws.clients.s3 import boto3_client
        return delimited_lister("s3://", s3_prefixes(boto3_client.Client(options=pipeline_options).client))
    if root.startswith("gs://"):
        from apache_beam.io.gcp import gcsio
        return delimited_lister("gs://", gcs_prefixes(gcsio.GcsIO(pipeline_options=pipeline_options).client))
    if root.startswith("azfs://"):
        from apache_beam.io.azure import blobstorageio
        account = root[len("azfs://"):].split("/", 1)[0]
        client = blobstorageio.BlobStorageIO(pipeline_options=pipeline_options).client
        return delimited_lister(f"azfs://{account}/", azure_prefixes(client))
    return list_folders


def event_type_folders(root, children=list_folders):
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


def select_partitions(root, start=None, end=None, event_types=None, children=list_folders):
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


class Selection(NamedTuple):
    """What a run reads: file patterns, the time range they were chosen for (None: not a range), the
    ledger scope of its files (a --by_event_time run sends only part of each file), and the event types
    read (None: all; files of other types are not read, whatever matched them)."""
    patterns: list
    partitions: list
    start: datetime.datetime = None
    end: datetime.datetime = None
    ledger_scope: str = ledger.WHOLE_FILE
    event_types: frozenset = None


def _names(values):
    return [name.strip() for value in values or () for name in value.split(",") if name.strip()]


def select_input(options, mapping=CLASSIC):
    """The files a run reads, from --input patterns or from --currents_root with the date options, and
    --event_types (types, or families of the mapping).

    With --by_event_time, the --late_hours partitions after --end are read too; the events whose own
    time falls outside [start, end) are filtered out later.
    """
    event_types = expand_event_types(_names(options.event_types), mapping)
    if options.input:
        return Selection(list(options.input), [], event_types=event_types)
    start = parse_hour(options.start) if options.start else None
    end = parse_hour(options.end) if options.end else None
    read_until = end + options.late_hours * HOUR if options.by_event_time else end
    partitions = select_partitions(options.currents_root, start, read_until, event_types,
                                   folder_lister(options, options.currents_root))
    scope = ledger.WHOLE_FILE
    if options.by_event_time:
        scope = ledger.time_scope(int(start.timestamp()), int(end.timestamp()))
    if end is None and partitions:
        end = max(p.hour for p in partitions) + HOUR
    return Selection([p.path + "/**" for p in partitions], partitions, start, end, scope, event_types)


# --- what a watch lists (--watch) ---------------------------------------------------------------------------

# Currents writes an hour partition's files during that hour and shortly after (the `date=` hour is when Braze
# queued the events): after the first listing, a watch under --currents_root looks in the partitions of the
# last WATCH_RECENT_HOURS hours.
WATCH_RECENT_HOURS = 3


class WatchedPatterns:
    """What a watch of --input patterns lists at every listing: the patterns themselves."""

    def __init__(self, patterns):
        self._patterns = list(patterns)

    def patterns(self, first):  # pylint: disable=unused-argument  # the same every time
        """The file patterns to list now."""
        return list(self._patterns)


class WatchedRoot:
    """What a watch of --currents_root lists: the hour partitions selected again at every listing (hours and event
    types appear): at the first listing every one in [start, end), later those of the last WATCH_RECENT_HOURS hours
    in it. `pipeline_options` give the object stores' clients (see folder_lister); `clock` gives UNIX seconds."""

    def __init__(self, root, pipeline_options, start=None, end=None, event_types=None, clock=time.time):
        self._root = root
        self._pipeline_options = pipeline_options
        self._start, self._end, self._event_types = start, end, event_types
        self._clock = clock

    def patterns(self, first):
        """The file patterns to list now: `<partition>/**` of each selected partition."""
        start = self._start
        if not first:
            now = datetime.datetime.fromtimestamp(self._clock(), UTC)
            recent = now.replace(minute=0, second=0, microsecond=0) - WATCH_RECENT_HOURS * HOUR
            start = max(start, recent) if start else recent
        lister = folder_lister(self._pipeline_options, self._root)
        return [p.path + "/**" for p in select_partitions(self._root, start, self._end, self._event_types, lister)]


def watched_input(options, pipeline_options, mapping=CLASSIC):
    """What a watch of these options lists at each listing (WatchedPatterns or WatchedRoot)."""
    if options.input:
        return WatchedPatterns(options.input)
    return WatchedRoot(options.currents_root, pipeline_options,
                       parse_hour(options.start) if options.start else None,
                       parse_hour(options.end) if options.end else None,
                       expand_event_types(_names(options.event_types), mapping))
