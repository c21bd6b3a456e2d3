"""Ledger: which input files were fully handled, so that incremental runs skip them.

A file is recorded (path, size, modification time) only when every event read from it, and every
unreadable part of it, is accounted for: accepted by Segment, dropped or skipped and counted, or in a
dead-letter file that is complete. `RecordInLedger` takes the files each family's delivery finished (see
transforms.delivery: a file is finished in the call that read it) and writes their entries, committed every
flush: a run that is killed has recorded the files it finished before the last commit, and the next run sends
only the others again (their deterministic messageIds make the files in flight harmless within Segment's
24-hour deduplication). (The job also removes a run's entries when it fails or its summary does not balance.)

The ledger is laid out by partition (transforms.ledger_files: a Currents hour, or the folder of files outside
one): `SkipFilesInLedger` groups the files listed by partition and reads only those partitions, so a run's cost
follows its inputs, not the history the ledger holds. Each run writes its own entry files and never rewrites
another's, so two runs that overlap cannot lose each other's entries; a file both read is sent by both (and
deduplicated). Small files are merged (ledger_files.compact) without losing an entry a concurrent run writes.

An entry has a scope: "" when every event of the file was considered, or the event-time range of a
--by_event_time run, which sent only part of the file. It also has a destination: where the events went
and what shaped them (the endpoint, a fingerprint of the write key, never the key, and the mapping options:
messageId namespace, integrations, passthrough, redacted and hashed fields), written once per entry file. A
file is skipped when the ledger holds it with scope "" or with the current run's scope, for the current run's
destination: a run to another Segment source, or with other options, sends it again. Entries written before
destinations were recorded hold none, and count for no destination.
"""
import collections
import datetime
import hashlib
import json
import time
import uuid

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindows

from currents_to_segment.transforms import ledger_files, metrics
from currents_to_segment.transforms.files import at_earliest_timestamp
from currents_to_segment.transforms.flush_timer import DEFAULT_FLUSH_SECONDS, FlushTimer
from currents_to_segment.transforms.ledger_files import WHOLE_FILE, entry_key, partition_of

MALFORMED = metrics.LEDGER_MALFORMED


def key_fingerprint(write_key):
    """What the ledger keeps of a write key: enough to tell two keys apart, nothing to recover one from."""
    if write_key is None:
        return None
    return "sha256:" + hashlib.sha256(f"currents-to-segment write key {write_key}".encode()).hexdigest()[:16]


def destination_of(endpoint, write_key, mapping):
    """Where a run's events go and what shapes them (`mapping`: a dict of the options that change the calls);
    the write key is kept as its fingerprint (None: unknown, as for --plan without a key)."""
    return {"endpoint": endpoint, "write_key": key_fingerprint(write_key), "mapping": mapping}


def destination_key(recorded, any_key=False):
    """What two destinations must share for an entry of one to count for the other; None for an entry without
    one. With any_key, the write key is left out (a plan without the key: entries of any key count)."""
    if not isinstance(recorded, dict):
        return None
    if any_key:
        recorded = {name: value for name, value in recorded.items() if name != "write_key"}
    return json.dumps(recorded, sort_keys=True)


def route_key(recorded):
    """What decides where a destination's calls go and their messageIds: its endpoint, write key and messageId
    namespace, without what else shapes the calls (None: an entry without one). Two destinations of one route send
    a file's events under the same messageIds, which Segment drops as duplicates for about a day."""
    if not isinstance(recorded, dict):
        return None
    shape = recorded.get("mapping")
    namespace = shape.get("message_id_namespace") if isinstance(shape, dict) else None
    return json.dumps([recorded.get("endpoint"), recorded.get("write_key"), namespace])


def time_scope(start, end):
    """The scope of a --by_event_time run over [start, end) (UNIX seconds)."""
    return f"time:{start}-{end}"


def new_run_id():
    """A ledger run id that sorts by start time and never collides."""
    return f"{datetime.datetime.now(datetime.timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def covers(recorded, scope, destination):
    """True when entries recorded as these (scope, destination key) pairs mean that a run of `scope` to
    `destination` (a destination_key) has nothing left to send of the file."""
    return any(where == destination and (kind == WHOLE_FILE or kind == scope) for kind, where in recorded)


RECORDED = "recorded"  # Lookup.held: the file is recorded for this scope and destination
ELSEWHERE = "elsewhere"  # ... only for other destinations
# How long Segment drops a messageId it has seen (about a day): a file sent again within it, shaped otherwise, is
# mostly dropped.
DEDUP_SECONDS = 24 * 3600


class Lookup:
    """What a ledger holds of input files, read a partition at a time as files are asked about (see
    transforms.ledger_files): `entries(path, size, modified)` → [(scope, destination key)], and `held(...)` what
    they mean for a run. A partition read is kept `max_age` seconds (None: for the lookup's life; a watch asks
    again as files are recorded), at most `max_partitions` of them. A line that is not an entry is told once per
    ledger file to `on_malformed(ledger file, line number)` (its first such line)."""

    def __init__(self, ledger_dir, any_key=False, on_malformed=None, max_age=None, max_partitions=None,
                 clock=time.monotonic):
        self._ledger_dir, self._any_key, self._max_age, self._clock = ledger_dir, any_key, max_age, clock
        self._max_partitions = max_partitions
        self._on_malformed = on_malformed
        self._told = set()
        # partition → (read at, {file key: [(scope, destination key)]}), the most recently used last
        self._partitions = collections.OrderedDict()
        self._legacy = self._index(ledger_files.read_legacy(ledger_dir, self._malformed))

    def _malformed(self, path, number, reason):
        if path not in self._told:
            self._told.add(path)
            ledger_files.warn_malformed(path, number, reason)
            if self._on_malformed is not None:
                self._on_malformed(path, number)

    def _index(self, entries):
        found, keys = {}, {}
        for key, scope, destination, started in entries:
            if id(destination) not in keys:  # the entries under one header share their destination: keyed once
                keys[id(destination)] = (destination_key(destination, self._any_key), route_key(destination))
            found.setdefault(key, []).append((scope, *keys[id(destination)], started))
        return found

    def _partition(self, partition):
        now = self._clock()
        kept = self._partitions.get(partition)
        if kept is None or (self._max_age is not None and now - kept[0] >= self._max_age):
            kept = self._partitions[partition] = (now, self._index(
                ledger_files.read_partition(self._ledger_dir, partition, self._malformed)))
        self._partitions.move_to_end(partition)
        while self._max_partitions is not None and len(self._partitions) > self._max_partitions:
            self._partitions.popitem(last=False)
        return kept[1]

    def _recorded(self, path, size, modified):
        """(scope, destination key, route key, started) of each entry of this file version."""
        key = entry_key(path, size, modified)
        return self._partition(partition_of(path)).get(key, []) + self._legacy.get(key, [])

    def entries(self, path, size, modified):
        """The (scope, destination key) pairs recorded for this file version."""
        return [(scope, where) for scope, where, _, _ in self._recorded(path, size, modified)]

    def sent_otherwise_since(self, path, size, modified, route, since):
        """True when a run that started at `since` (UNIX seconds) or later recorded this file version as sent to
        `route` (a route_key: the same endpoint, write key and messageIds) with other options shaping the calls:
        Segment still drops those messageIds as duplicates (see DEDUP_SECONDS)."""
        return any(where_route == route and started is not None and started >= since
                   for _, _, where_route, started in self._recorded(path, size, modified))

    def held(self, path, size, modified, scope, destination):
        """RECORDED when the ledger holds this file version for `scope` and `destination` (a destination_key): a
        run has nothing left to send of it; ELSEWHERE when it holds it only for other destinations; else None."""
        entries = self.entries(path, size, modified)
        if covers(entries, scope, destination):
            return RECORDED
        return ELSEWHERE if any(where != destination for _, where in entries) else None

    def forget(self):
        """Forget the partitions read."""
        self._partitions.clear()


def count_malformed(path, number):
    """Count, in the pipeline's counters, a ledger file with lines that are not entries (named for the summary)."""
    metrics.counter(f"{MALFORMED}:{path} line {number}").inc()


class _KeepUnrecordedFn(beam.DoFn):
    """(ledger partition, [FileMetadata]) → the FileMetadata the partition does not hold for this scope and
    destination."""

    def __init__(self, ledger_dir, scope, destination):
        super().__init__()
        self._ledger_dir = ledger_dir
        self._scope = scope
        self._destination = destination_key(destination)
        self._route = route_key(destination)

    def setup(self):
        self._skipped = metrics.counter(metrics.LEDGER_FILES_SKIPPED)
        self._elsewhere = metrics.counter(metrics.LEDGER_FILES_ELSEWHERE)
        self._resent = metrics.counter(metrics.LEDGER_FILES_RESENT_WITHIN_DEDUP)
        self._lookup = Lookup(self._ledger_dir, on_malformed=count_malformed)

    def process(self, grouped):
        _, files = grouped
        self._lookup.forget()  # one partition at a time: memory follows a partition, not the ledger
        for metadata in files:
            held = self._lookup.held(metadata.path, metadata.size_in_bytes, metadata.last_updated_in_seconds,
                                     self._scope, self._destination)
            if held == RECORDED:
                self._skipped.inc()
                continue
            if held == ELSEWHERE:
                self._elsewhere.inc()
                if self._lookup.sent_otherwise_since(metadata.path, metadata.size_in_bytes,
                                                     metadata.last_updated_in_seconds, self._route,
                                                     time.time() - DEDUP_SECONDS):
                    self._resent.inc()
            yield metadata


class SkipFilesInLedger(beam.PTransform):
    """FileMetadata → the FileMetadata not recorded in the ledger folder for this scope and destination (see
    `destination_of`): the files are grouped by ledger partition, and each partition of the ledger is read once,
    only those that can hold the files listed."""

    def __init__(self, ledger_dir, scope=WHOLE_FILE, destination=None):
        super().__init__()
        self._ledger_dir = ledger_dir
        self._scope = scope
        self._destination = destination

    def expand(self, files):
        return (files
                | "Key by ledger partition" >> beam.Map(lambda metadata: (partition_of(metadata.path), metadata))
                | "At earliest timestamp" >> at_earliest_timestamp()
                | "Group by ledger partition" >> beam.GroupByKey()
                | "Keep unrecorded" >> beam.ParDo(_KeepUnrecordedFn(self._ledger_dir, self._scope, self._destination))
                # The default windowing again (timestamps unchanged), the same as every other stage's.
                | "Global window" >> beam.WindowInto(GlobalWindows()))


class _RecordFilesFn(beam.DoFn):
    """(path, size, modified) of a finished file → its entry, in this bundle's own entry files, one per ledger
    partition (committed every flush and at the end of the bundle)."""

    def __init__(self, ledger_dir, run_id, scope, destination, flush_seconds, family):
        super().__init__()
        self._ledger_dir, self._run_id, self._scope = ledger_dir, run_id, scope
        self._family = family
        self._destination = destination
        self._flush_seconds = flush_seconds
        self._writer = self._flushes = None
        self._written = 0

    def setup(self):
        self._recorded = metrics.counter(metrics.LEDGER_FILES_RECORDED, self._family)

    def start_bundle(self):
        self._writer = ledger_files.PartitionWriter(self._ledger_dir, self._run_id, self._scope, self._destination)
        self._flushes = FlushTimer(self._flush_seconds)
        self._written = 0

    def process(self, file):
        self._writer.write(tuple(file))
        self._written += 1
        if self._flushes.due():
            self._commit()

    def _commit(self):
        self._writer.commit()
        self._recorded.inc(self._written)
        self._written = 0

    def finish_bundle(self):
        self._commit()


class RecordInLedger(beam.PTransform):
    """(path, size, modified) of each finished file → this run's ledger entries, written as
    `<ledger partition>/entries-<run id>-<part>.jsonl` under the ledger folder, committed every `flush_seconds` and
    at the end of each bundle (so a run that is killed has recorded what it finished before the last commit);
    `family`: the family whose files it records, whose Beam counter is its own (see metrics.namespace)."""

    def __init__(self, ledger_dir, run_id, scope=WHOLE_FILE, destination=None, flush_seconds=DEFAULT_FLUSH_SECONDS,
                 family=None):
        super().__init__()
        self._ledger_dir = ledger_dir
        self._run_id = run_id
        self._scope = scope
        self._destination = destination
        self._flush_seconds = flush_seconds
        self._family = family

    def expand(self, files):
        return files | "Write entries" >> beam.ParDo(_RecordFilesFn(
            self._ledger_dir, self._run_id, self._scope, self._destination, self._flush_seconds, self._family))
