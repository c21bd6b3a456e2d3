"""What a run reads, from its options: --input patterns, or the hour partitions of a Currents root (found with
transforms.currents.partitions, listing folders through Beam's filesystems or the stores' own clients, one level at
a time); and what a --watch lists again at each listing.
"""
import datetime
import os
import time
from typing import NamedTuple

from apache_beam.io.filesystems import FileSystems

from currents_to_segment.transforms import ledger
from currents_to_segment.transforms.currents.catalog import CLASSIC
from currents_to_segment.transforms.currents import partitions as layout
from currents_to_segment.transforms.currents.partitions import HOUR, UTC, expand_event_types, parse_hour

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


def event_type_folders(root, children=list_folders):
    """transforms.currents.partitions.event_type_folders, listing with Beam's filesystems unless told otherwise."""
    return layout.event_type_folders(root, children)


def select_partitions(root, start=None, end=None, event_types=None, children=list_folders):
    """transforms.currents.partitions.select_partitions, listing with Beam's filesystems unless told otherwise."""
    return layout.select_partitions(root, start, end, event_types, children=children)


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


def absolute(path):
    """A local path or pattern made absolute (so that a file named relatively, with ./ or absolutely is one file
    for the ledger and the dead letters); a URI as it is."""
    return path if "://" in path else os.path.abspath(path)


def select_input(options, mapping=CLASSIC):
    """The files a run reads, from --input patterns or from --currents_root with the date options, and
    --event_types (types, or families of the mapping).

    With --by_event_time, the --late_hours partitions after --end are read too; the events whose own
    time falls outside [start, end) are filtered out later.
    """
    event_types = expand_event_types(_names(options.event_types), mapping)
    if options.input:
        return Selection([absolute(pattern) for pattern in options.input], [], event_types=event_types)
    start = parse_hour(options.start) if options.start else None
    end = parse_hour(options.end) if options.end else None
    read_until = end + options.late_hours * HOUR if options.by_event_time else end
    partitions = select_partitions(absolute(options.currents_root), start, read_until, event_types,
                                   children=folder_lister(options, options.currents_root))
    scope = ledger.WHOLE_FILE
    if options.by_event_time:
        scope = ledger.time_scope(int(start.timestamp()), int(end.timestamp()))
    if end is None and partitions:
        end = max(p.hour for p in partitions) + HOUR
    return Selection([p.path + "/**" for p in partitions], partitions, start, end, scope, event_types)


# --- what a watch lists (--watch) ---------------------------------------------------------------------------

# Currents writes an hour partition's files during that hour and shortly after (the `date=` hour is when Braze
# queued the events): between full listings, a watch under --currents_root looks in the partitions of the
# last WATCH_RECENT_HOURS hours (a backlog written late into older hours is found by the next full listing).
WATCH_RECENT_HOURS = 3


class WatchedPatterns:
    """What a watch of --input patterns lists at every listing: the patterns themselves."""

    def __init__(self, patterns):
        self._patterns = list(patterns)

    def patterns(self, full):  # pylint: disable=unused-argument  # the same every time
        """The file patterns to list now."""
        return list(self._patterns)


class WatchedRoot:
    """What a watch of --currents_root lists: the hour partitions selected again at every listing (hours and event
    types appear): at a full listing (the first, and one every --full_listing_interval) every one in [start, end),
    at the others those of the last WATCH_RECENT_HOURS hours in it. `pipeline_options` give the object stores' clients (see folder_lister); `clock` gives UNIX seconds."""

    def __init__(self, root, pipeline_options, start=None, end=None, event_types=None, clock=time.time):
        self._root = root
        self._pipeline_options = pipeline_options
        self._start, self._end, self._event_types = start, end, event_types
        self._clock = clock

    def patterns(self, full):
        """The file patterns to list now: `<partition>/**` of each selected partition."""
        start = self._start
        if not full:
            now = datetime.datetime.fromtimestamp(self._clock(), UTC)
            recent = now.replace(minute=0, second=0, microsecond=0) - WATCH_RECENT_HOURS * HOUR
            start = max(start, recent) if start else recent
        lister = folder_lister(self._pipeline_options, self._root)
        selected = select_partitions(self._root, start, self._end, self._event_types, children=lister)
        # Hour by hour, each hour's types together: the ledger keeps an hour's files in one partition, read once.
        return [p.path + "/**" for p in sorted(selected, key=lambda p: (p.hour, p.event_type, p.path))]


def watched_input(options, pipeline_options, mapping=CLASSIC):
    """What a watch of these options lists at each listing (WatchedPatterns or WatchedRoot)."""
    if options.input:
        return WatchedPatterns([absolute(pattern) for pattern in options.input])
    return WatchedRoot(absolute(options.currents_root), pipeline_options,
                       parse_hour(options.start) if options.start else None,
                       parse_hour(options.end) if options.end else None,
                       expand_event_types(_names(options.event_types), mapping))
