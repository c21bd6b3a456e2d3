"""Ledger: which input files were fully handled, so that incremental runs skip them.

A file is recorded (path, size, modification time) only when every event read from it, and every
unreadable part of it, is accounted for: accepted by Segment, dropped or skipped and counted, or in a
dead-letter file that is complete. `RecordInLedger` takes the files each family's delivery finished (see
transforms.delivery: a file is finished in the call that read it) and writes their entries, committed every
flush: a run that is killed has recorded the files it finished before the last commit, and the next run sends
only the others again (their deterministic messageIds make the files in flight harmless within Segment's
24-hour deduplication). (The job also removes a run's entries when it fails or its summary does not balance.)

Each run writes its own `entries-<run id>-*.jsonl` files and never rewrites another's, so two runs
that overlap cannot lose each other's entries; a file both read is sent by both (and deduplicated).

An entry has a scope: "" when every event of the file was considered, or the event-time range of a
--by_event_time run, which sent only part of the file. It also has a destination: where the events went
and what shaped them (the endpoint, a fingerprint of the write key, never the key, and the mapping options:
messageId namespace, integrations, passthrough, redacted and hashed fields). A file is skipped when the
ledger holds it with scope "" or with the current run's scope, for the current run's destination: a run to
another Segment source, or with other options, sends it again. Entries written before destinations were
recorded hold none, and count for no destination.
"""
import datetime
import hashlib
import json
import uuid

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.fileio import EmptyMatchTreatment
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindows

from currents_to_segment.transforms import jsonl, metrics
from currents_to_segment.transforms.files import at_earliest_timestamp
from currents_to_segment.transforms.flush_timer import DEFAULT_FLUSH_SECONDS, FlushTimer

WHOLE_FILE = ""


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


def entry(file, run_id, scope=WHOLE_FILE, destination=None):
    """The ledger entry of one input file: (path, size, modified)."""
    path, size, modified = file
    return {"path": path, "size": size, "modified": modified, "scope": scope, "run": run_id,
            "destination": destination}


def time_scope(start, end):
    """The scope of a --by_event_time run over [start, end) (UNIX seconds)."""
    return f"time:{start}-{end}"


def entry_key(path, size, modified):
    """What identifies a file version: a rewritten or grown file is read again."""
    return json.dumps([path, size, modified])


def _entries_pattern(ledger_dir):
    return jsonl.output_pattern(ledger_dir, jsonl.LEDGER_ENTRIES)


def run_entries(ledger_dir, run_id):
    """The paths of the entry files one run wrote."""
    return [metadata.path for metadata in FileSystems.match(
        [jsonl.output_pattern(ledger_dir, jsonl.LEDGER_ENTRIES, run_id)])[0].metadata_list]


def new_run_id():
    """A ledger run id that sorts by start time and never collides."""
    return f"{datetime.datetime.now(datetime.timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def _keyed_entries(stream):
    """(file key, entry) of each entry of a ledger file."""
    for line in stream.read().decode("utf-8").splitlines():
        if line.strip():
            recorded = json.loads(line)
            yield entry_key(recorded["path"], recorded["size"], recorded["modified"]), recorded


def _entries_of(readable_file):
    with readable_file.open(compression_type=CompressionTypes.UNCOMPRESSED) as stream:
        for key, recorded in _keyed_entries(stream):
            yield key, (recorded.get("scope", WHOLE_FILE), destination_key(recorded.get("destination")))


def covers(recorded, scope, destination):
    """True when entries recorded as these (scope, destination key) pairs mean that a run of `scope` to
    `destination` (a destination_key) has nothing left to send of the file."""
    return any(where == destination and (kind == WHOLE_FILE or kind == scope) for kind, where in recorded)


class _KeepUnrecordedFn(beam.DoFn):
    def __init__(self, scope, destination):
        super().__init__()
        self._scope = scope
        self._destination = destination_key(destination)

    def setup(self):
        self._skipped = metrics.counter(metrics.LEDGER_FILES_SKIPPED)
        self._elsewhere = metrics.counter(metrics.LEDGER_FILES_ELSEWHERE)

    def process(self, keyed):
        _, grouped = keyed
        recorded = list(grouped["ledger"])
        if covers(recorded, self._scope, self._destination):
            self._skipped.inc(len(grouped["file"]))
            return
        if any(where != self._destination for _, where in recorded):
            self._elsewhere.inc(len(grouped["file"]))
        yield from grouped["file"]


class SkipFilesInLedger(beam.PTransform):
    """FileMetadata → the FileMetadata not recorded in the ledger folder (a join on path, size, mtime) for this
    scope and destination (see `destination_of`)."""

    def __init__(self, ledger_dir, scope=WHOLE_FILE, destination=None):
        super().__init__()
        self._ledger_dir = ledger_dir
        self._scope = scope
        self._destination = destination

    def expand(self, files):
        recorded = (files.pipeline
                    | "Ledger files" >> beam.Create([_entries_pattern(self._ledger_dir)])
                    | "List ledger" >> fileio.MatchAll(EmptyMatchTreatment.ALLOW)
                    | "Open ledger" >> fileio.ReadMatches()
                    | "Ledger entries" >> beam.FlatMap(_entries_of)
                    | "Entries at earliest timestamp" >> at_earliest_timestamp())
        keyed = (files
                 | "Key files" >> beam.Map(lambda m: (entry_key(m.path, m.size_in_bytes, m.last_updated_in_seconds), m))
                 | "Files at earliest timestamp" >> at_earliest_timestamp())
        return ({"file": keyed, "ledger": recorded}
                | "Join with ledger" >> beam.CoGroupByKey()
                | "Keep unrecorded" >> beam.ParDo(_KeepUnrecordedFn(self._scope, self._destination))
                # The default windowing again (timestamps unchanged), the same as every other stage's.
                | "Global window" >> beam.WindowInto(GlobalWindows()))


class _RecordFilesFn(beam.DoFn):
    """(path, size, modified) of a finished file → its entry, in this bundle's own entry files (one committed every
    flush and at the end of the bundle)."""

    def __init__(self, ledger_dir, run_id, scope, destination, flush_seconds):
        super().__init__()
        self._ledger_dir, self._run_id, self._scope = ledger_dir, run_id, scope
        self._destination = destination
        self._flush_seconds = flush_seconds
        self._part = self._flushes = None
        self._written = 0

    def setup(self):
        self._recorded = metrics.counter(metrics.LEDGER_FILES_RECORDED)

    def start_bundle(self):
        self._part = jsonl.PartFile(self._ledger_dir, jsonl.LEDGER_ENTRIES, self._run_id, "ledger entries")
        self._flushes = FlushTimer(self._flush_seconds)
        self._written = 0

    def process(self, file):
        self._part.write(json.dumps(entry(tuple(file), self._run_id, self._scope, self._destination)))
        self._written += 1
        if self._flushes.due():
            self._commit()

    def _commit(self):
        self._part.commit()
        self._recorded.inc(self._written)
        self._written = 0

    def finish_bundle(self):
        self._commit()


class RecordInLedger(beam.PTransform):
    """(path, size, modified) of each finished file → this run's ledger entries, written as
    `entries-<run id>-<part>.jsonl` under the ledger folder, committed every `flush_seconds` and at the end of each
    bundle (so a run that is killed has recorded what it finished before the last commit)."""

    def __init__(self, ledger_dir, run_id, scope=WHOLE_FILE, destination=None, flush_seconds=DEFAULT_FLUSH_SECONDS):
        super().__init__()
        self._ledger_dir = ledger_dir
        self._run_id = run_id
        self._scope = scope
        self._destination = destination
        self._flush_seconds = flush_seconds

    def expand(self, files):
        return files | "Write entries" >> beam.ParDo(_RecordFilesFn(
            self._ledger_dir, self._run_id, self._scope, self._destination, self._flush_seconds))


def recorded(ledger_dir, any_key=False):
    """{file key: [(scope, destination key)]} of a ledger folder, read directly (for --plan, outside a pipeline);
    any_key: destination keys without the write key (see destination_key)."""
    found = {}
    for metadata in FileSystems.match([_entries_pattern(ledger_dir)])[0].metadata_list:
        with FileSystems.open(metadata.path, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
            for key, one in _keyed_entries(stream):
                found.setdefault(key, []).append(
                    (one.get("scope", WHOLE_FILE), destination_key(one.get("destination"), any_key)))
    return found
