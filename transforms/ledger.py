"""Ledger: which input files were fully handled, so that incremental runs skip them.

A file is recorded (path, size, modification time) only when every event read from it, and every
unreadable part of it, is accounted for: accepted by Segment, dropped or skipped and counted, or in a
dead-letter file that is complete. `RecordInLedger` is the last stage of the chain a file's items travel
down (see transforms.elements): it takes the FILE_READ of each file (the units it must see handled) and the
HANDLED items of the stages before it (the filters' drops, the write stage's deliveries, the dead-letter
writer's durable letters), and records a file as soon as its units have all come back, in the bundle that
read it, committing its entries every flush: a run that is killed has recorded the files it finished, and
the next run sends only the others again (their deterministic messageIds make the files in flight harmless
within Segment's 24-hour deduplication). (The job also removes a run's entries when it fails or its summary
does not balance.)

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
import collections
import datetime
import hashlib
import json
import typing
import uuid

import apache_beam as beam
from apache_beam.coders import coders
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.fileio import EmptyMatchTreatment
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import GlobalWindow, GlobalWindows

from transforms import jsonl, metrics
from transforms.elements import FILE_READ, HANDLED, at_earliest_timestamp
from transforms.flush_timer import DEFAULT_FLUSH_SECONDS, FlushTimer

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


class _RecordCompleteFilesFn(beam.DoFn):
    """FILE_READ and HANDLED items → an entry, in this bundle's own entry files (one committed every flush and at
    the end of the bundle), for each file whose units all came back within the bundle; what is left at the end
    of the bundle (files not complete, units of files read elsewhere) goes on, keyed by path, to be joined with
    the rest of the run's. Other items end here."""

    def __init__(self, ledger_dir, run_id, scope, destination, flush_seconds):
        super().__init__()
        self._ledger_dir, self._run_id, self._scope = ledger_dir, run_id, scope
        self._destination = destination
        self._flush_seconds = flush_seconds
        self._part = self._flushes = None
        self._reads, self._units, self._written = {}, collections.Counter(), 0

    def setup(self):
        self._recorded = metrics.counter(metrics.LEDGER_FILES_RECORDED)

    def start_bundle(self):
        self._part = jsonl.PartFile(self._ledger_dir, jsonl.LEDGER_ENTRIES, self._run_id, "ledger entries")
        self._flushes = FlushTimer(self._flush_seconds)
        self._reads, self._units, self._written = {}, collections.Counter(), 0

    def process(self, item):
        kind = item[0]
        if kind == FILE_READ:
            _, _, file, units = item
            path = file[0]
            self._reads[path] = (file, units)
        elif kind == HANDLED:
            _, _, path, units = item
            self._units[path] += units
        else:  # a TICK, or an item no earlier stage took (none does in the job)
            if self._flushes.due():
                self._commit()
            return
        read = self._reads.get(path)
        if read is not None and self._units[path] == read[1]:
            del self._reads[path]
            self._units.pop(path, None)
            self._part.write(json.dumps(entry(read[0], self._run_id, self._scope, self._destination)))
            self._written += 1
        if self._flushes.due():
            self._commit()

    def _commit(self):
        self._part.commit()
        self._recorded.inc(self._written)
        self._written = 0

    def finish_bundle(self):
        self._commit()
        for path, read in self._reads.items():
            yield GlobalWindows.windowed_value((path, (_FILE, read)))
        for path, units in self._units.items():
            yield GlobalWindows.windowed_value((path, (_HANDLED, units)))


_FILE, _HANDLED = "file", "handled"


class _RecordJoinedFilesFn(beam.DoFn):
    """(path, (FILE, (file, units)) or (HANDLED, units)) of files not complete within one bundle, joined by path in
    Beam state → the ledger entry of each file as soon as its units have all come back (in a batch run and in a
    watch alike), in this bundle's own entry file. A file still short of units when the run ends is counted as
    unbalanced (not recorded)."""

    PARTS = BagStateSpec("parts", coders.StrUtf8Coder())  # each part as JSON: [kind, value]
    END = TimerSpec("end", TimeDomain.WATERMARK)

    def __init__(self, ledger_dir, run_id, scope, destination):
        super().__init__()
        self._ledger_dir, self._run_id, self._scope = ledger_dir, run_id, scope
        self._destination = destination
        self._part, self._written = None, 0

    def setup(self):
        self._recorded = metrics.counter(metrics.LEDGER_FILES_RECORDED)
        self._unbalanced = metrics.counter(metrics.LEDGER_FILES_UNBALANCED)

    def start_bundle(self):
        self._part = jsonl.PartFile(self._ledger_dir, jsonl.LEDGER_ENTRIES, self._run_id, "ledger entries")
        self._written = 0

    def process(self, keyed, parts=beam.DoFn.StateParam(PARTS), end=beam.DoFn.TimerParam(END)):
        _, part = keyed
        parts.add(json.dumps(part))
        joined = [json.loads(one) for one in parts.read()]
        reads = [value for kind, value in joined if kind == _FILE]
        if reads and sum(value for kind, value in joined if kind == _HANDLED) == sum(units for _, units in reads):
            for file, _ in reads:
                self._part.write(json.dumps(entry(file, self._run_id, self._scope, self._destination)))
                self._written += 1
            parts.clear()
            end.clear()
        else:
            end.set(GlobalWindow().max_timestamp())

    @on_timer(END)
    def at_end(self, parts=beam.DoFn.StateParam(PARTS)):
        self._unbalanced.inc(sum(1 for one in parts.read() if json.loads(one)[0] == _FILE))
        parts.clear()

    def finish_bundle(self):
        self._part.commit()
        self._recorded.inc(self._written)


class RecordInLedger(beam.PTransform):
    """Items (their FILE_READ and HANDLED) → this run's ledger entries, one per file whose units are all handled,
    written as `entries-<run id>-<part>.jsonl` under the ledger folder.

    A file whose FILE_READ and units one bundle of this stage sees (every file, when the chain before it is fused
    with the read, as on FnApiRunner and Prism) is recorded by that bundle, at the next flush (`flush_seconds`)
    or at its end; any other file is recorded once a join by path in Beam state has all of its units.
    """

    def __init__(self, ledger_dir, run_id, scope=WHOLE_FILE, destination=None, flush_seconds=DEFAULT_FLUSH_SECONDS):
        super().__init__()
        self._ledger_dir = ledger_dir
        self._run_id = run_id
        self._scope = scope
        self._destination = destination
        self._flush_seconds = flush_seconds

    def expand(self, items):
        return (items
                | "Record complete files" >> beam.ParDo(_RecordCompleteFilesFn(
                    self._ledger_dir, self._run_id, self._scope, self._destination, self._flush_seconds)
                ).with_output_types(typing.Tuple[str, typing.Any])  # keyed by path: a deterministic key coder
                | "Record the rest, joined by file" >> beam.ParDo(_RecordJoinedFilesFn(
                    self._ledger_dir, self._run_id, self._scope, self._destination)))


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
