"""Ledger: which input files were fully handled, so that incremental runs skip them.

A file is recorded (path, size, modification time) only when every event read from it, and every
unreadable part of it, is accounted for: accepted by Segment, dropped or skipped and counted, or in a
dead-letter file that is complete. `RecordInLedger` takes exactly that as its input: the FileRead of
each file (the units it must see handled) and the HANDLED elements of the later stages, the write
stage's deliveries and the dead-letter writer's durable letters among them; it joins them by file and
records the files whose units all came back. A run that fails records nothing more, and the next run
sends those files again; their deterministic messageIds make that harmless within Segment's 24-hour
deduplication. (The job also removes a run's entries when its summary does not balance.)

Each run writes its own `entries-<run id>-*.jsonl` files and never rewrites another's, so two runs
that overlap cannot lose each other's entries; a file both read is sent by both (and deduplicated).

An entry has a scope: "" when every event of the file was considered, or the event-time range of a
--by_event_time run, which sent only part of the file. A file is skipped when the ledger holds it
with scope "" or with the current run's scope.
"""
import datetime
import json
import uuid

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.fileio import EmptyMatchTreatment
from apache_beam.io.filesystems import FileSystems

from transforms import jsonl, metrics

WHOLE_FILE = ""


def entry(metadata, run_id, scope=WHOLE_FILE):
    """The ledger entry of one input file."""
    return {"path": metadata.path, "size": metadata.size_in_bytes,
            "modified": metadata.last_updated_in_seconds, "scope": scope, "run": run_id}


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


def _keyed_scopes(stream):
    for line in stream.read().decode("utf-8").splitlines():
        if line.strip():
            recorded = json.loads(line)
            yield entry_key(recorded["path"], recorded["size"], recorded["modified"]), recorded.get("scope", "")


def _entries_of(readable_file):
    with readable_file.open(compression_type=CompressionTypes.UNCOMPRESSED) as stream:
        yield from _keyed_scopes(stream)


def covers(scopes, scope):
    """True when entries of these scopes mean a run of `scope` has nothing left to send of the file."""
    return WHOLE_FILE in scopes or scope in scopes


class _KeepUnrecordedFn(beam.DoFn):
    def __init__(self, scope):
        super().__init__()
        self._scope = scope

    def setup(self):
        self._skipped = metrics.counter(metrics.LEDGER_FILES_SKIPPED)

    def process(self, keyed):
        _, grouped = keyed
        if covers(set(grouped["ledger"]), self._scope):
            self._skipped.inc(len(grouped["file"]))
        else:
            yield from grouped["file"]


class SkipFilesInLedger(beam.PTransform):
    """FileMetadata → the FileMetadata not recorded in the ledger folder (a join on path, size, mtime)."""

    def __init__(self, ledger_dir, scope=WHOLE_FILE):
        super().__init__()
        self._ledger_dir = ledger_dir
        self._scope = scope

    def expand(self, files):
        recorded = (files.pipeline
                    | "Ledger files" >> beam.Create([_entries_pattern(self._ledger_dir)])
                    | "List ledger" >> fileio.MatchAll(EmptyMatchTreatment.ALLOW)
                    | "Open ledger" >> fileio.ReadMatches()
                    | "Ledger entries" >> beam.FlatMap(_entries_of))
        keyed = files | "Key files" >> beam.Map(
            lambda m: (entry_key(m.path, m.size_in_bytes, m.last_updated_in_seconds), m))
        return ({"file": keyed, "ledger": recorded}
                | "Join with ledger" >> beam.CoGroupByKey()
                | "Keep unrecorded" >> beam.ParDo(_KeepUnrecordedFn(self._scope)))


class _EntryFn(beam.DoFn):
    """(path, {"file": [FileRead], "handled": [units]}) → the ledger line of a file whose units are all handled."""

    def __init__(self, run_id, scope):
        super().__init__()
        self._run_id = run_id
        self._scope = scope

    def setup(self):
        self._recorded = metrics.counter(metrics.LEDGER_FILES_RECORDED)
        self._unbalanced = metrics.counter(metrics.LEDGER_FILES_UNBALANCED)

    def process(self, joined):
        _, grouped = joined
        handled_units = sum(grouped["handled"])
        for file_read in grouped["file"]:
            if handled_units != file_read.units:
                self._unbalanced.inc()
                continue
            self._recorded.inc()
            yield (), json.dumps(entry(file_read.metadata, self._run_id, self._scope))


class RecordInLedger(beam.PTransform):
    """{"files": FileRead, "handled": (source file, units)} → this run's ledger entries, one per file whose
    units are all handled, written as `entries-<run id>-<part>.jsonl` under the ledger folder."""

    def __init__(self, ledger_dir, run_id, scope=WHOLE_FILE):
        super().__init__()
        self._ledger_dir = ledger_dir
        self._run_id = run_id
        self._scope = scope

    def expand(self, inputs):
        files = inputs["files"] | "Key by path" >> beam.Map(lambda file_read: (file_read.metadata.path, file_read))
        handled = inputs["handled"] | "Units per file" >> beam.CombinePerKey(sum)
        return ({"file": files, "handled": handled}
                | "Join by file" >> beam.CoGroupByKey()
                | "Ledger entry" >> beam.ParDo(_EntryFn(self._run_id, self._scope))
                | "Write ledger" >> jsonl.WriteJsonLines(self._ledger_dir, jsonl.LEDGER_ENTRIES, self._run_id,
                                                         "ledger entries"))


def recorded_scopes(ledger_dir):
    """{entry key: set of scopes} of a ledger folder, read directly (for --plan, outside a pipeline)."""
    scopes = {}
    for metadata in FileSystems.match([_entries_pattern(ledger_dir)])[0].metadata_list:
        with FileSystems.open(metadata.path, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
            for key, scope in _keyed_scopes(stream):
                scopes.setdefault(key, set()).add(scope)
    return scopes
