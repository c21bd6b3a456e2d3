"""The ledger's files: where an entry lives, how it is written and read, and how small files are merged.

A run reads only the part of the ledger that can hold its inputs, so what it costs follows its inputs, not the
history the ledger has recorded:

    <ledger>/date=2024-03-01-09/entries-<run id>-<part>.jsonl    a file of a Currents hour partition
    <ledger>/date=2024-03-01-09/compacted-<id>.jsonl             what `compact` merged
    <ledger>/dir=<16 hex digits>/...                             files outside an hour partition, by their folder

A file's ledger partition is the `date=` hour folder of its path, else a hash of its folder. An entry file starts
with a header line, the run, scope and destination of the entries after it (see transforms.ledger), written once
per file; then one line per input file: {"path", "size", "modified"}. Paths are normalized (absolute, one form
per scheme), so a file named relatively, with `./` or absolutely is one entry.

Merging (`compact`): a partition's files are read and written again as one `compacted-*` file, which is complete
(written under a hidden name, then renamed) before the files it replaces are deleted: a reader sees the entries
twice for a moment, never not at all, and a file a concurrent run writes meanwhile is not among those deleted.
Files of runs that started less than COMPACT_AFTER_SECONDS ago are left alone (a run that fails or does not
balance removes its own files). Writers compact a partition once it holds more than COMPACT_FILES files.

Ledgers of the first layout (`entries-*.jsonl` at the top, the destination in every entry) are still read, and
`migrate` moves them into partitions once. Uses Beam's filesystems (any scheme); no pipeline.
"""
import datetime
import glob
import hashlib
import json
import logging
import os
import re
import uuid

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from currents_to_segment.transforms import jsonl

WHOLE_FILE = ""
LAYOUT = 2  # the `ledger` field of a header line
COMPACTED = "compacted"
COMPACT_FILES = 8  # a writer merges a partition's files once there are more than this many
COMPACT_AFTER_SECONDS = 6 * 3600  # files of runs started more recently are not merged (see module doc)
_DATE = re.compile(r"/(date=\d{4}-\d{2}-\d{2}-\d{2})/")
_RUN_STARTED = re.compile(r"^entries-(\d{8}T\d{6}Z)-")
_NOT_NORMAL = re.compile(r"//|/\.\.?(/|$)|/$")  # what abspath would change in an absolute path
_RETRIES = 3  # reading a partition again when a file vanished under a concurrent compaction


def normalize_path(path):
    """The one form of a path the ledger keys: absolute for a local file (`./`, `..` and repeated slashes
    resolved against the working directory), and for a URI its scheme in lower case and no repeated slash."""
    scheme, separator, rest = path.partition("://")
    if not separator:
        if path.startswith("/") and not _NOT_NORMAL.search(path):
            return path  # already in its one form (most paths: those a run lists): spares abspath's work
        return os.path.abspath(path)
    return f"{scheme.lower()}://{re.sub('/{2,}', '/', rest)}"


def partition_of(path):
    """The ledger partition of an input file: its Currents `date=` hour folder, else `dir=` and a hash of its
    folder (normalized)."""
    path = normalize_path(path)
    found = _DATE.search(path)
    if found:
        return found.group(1)
    folder = path.rsplit("/", 1)[0]
    return "dir=" + hashlib.sha256(folder.encode("utf-8")).hexdigest()[:16]


def entry_key(path, size, modified):
    """What identifies a file version, (normalized path, size, modified): a rewritten or grown file is read again."""
    return normalize_path(path), size, modified


def header(run_id, scope, destination, started=None):
    """The first line of an entry file: what its entries share (a merged file's: when the newest run it merged
    started, in UNIX seconds, which an entry file's name says otherwise)."""
    found = {"ledger": LAYOUT, "run": run_id, "scope": scope, "destination": destination}
    if started is not None:
        found["started"] = started
    return found


def entry(file):
    """The line of one input file (path, size, modified) under a header."""
    path, size, modified = file
    return {"path": normalize_path(path), "size": size, "modified": modified}


def partition_dir(ledger_dir, partition):
    return f"{ledger_dir.rstrip('/')}/{partition}"


ENTRY_FILES = "*.jsonl"  # in a partition: entry files and merged files (temporary files are hidden)
_LEGACY_FILES = f"{jsonl.LEDGER_ENTRIES}-*.jsonl"  # the first layout's, at the top of the ledger


def _match(folder, names):
    """The paths of the files named like `names` (a glob without `**`, maybe with one `*/` level) in folder. On a
    local disk through glob: Beam's match walks and stats every file below the folder before it filters (a listing
    of the whole ledger to find its top level's files)."""
    if "://" not in folder:
        return sorted(glob.glob(os.path.join(glob.escape(folder.rstrip("/")), names)))  # hidden files left out
    return [metadata.path for metadata in FileSystems.match([f"{folder.rstrip('/')}/{names}"])[0].metadata_list]


class Malformed(Exception):
    """A line that is not a ledger line."""


def _read_text(path):
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
        return stream.read().decode("utf-8", errors="replace")


def parse(text, path, on_malformed=None):
    """The entries of one ledger file's text, as (file key, scope, destination, started) tuples (the entries under
    one header share its destination object; started: when the run that recorded them started, in UNIX seconds, or
    None when unknown); a line that is not a ledger line is skipped, and told to on_malformed(path, line number,
    reason) (default: a warning)."""
    started = _started(path.rsplit("/", 1)[-1])
    context = {"scope": WHOLE_FILE, "destination": None, "started": started}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            found = json.loads(line)
            if not isinstance(found, dict):
                raise Malformed("not a JSON object")
            if "ledger" in found:  # a header: the lines after it share its run, scope and destination
                merged = found.get("started")
                context = {"scope": found.get("scope", WHOLE_FILE), "destination": found.get("destination"),
                           "started": merged if isinstance(merged, (int, float)) else started}
                if not isinstance(context["scope"], str):
                    raise Malformed("its scope is not a string")
                continue
            path_, size, modified = found["path"], found["size"], found["modified"]
            if not isinstance(path_, str) or not isinstance(size, int) or not isinstance(modified, (int, float)):
                raise Malformed("path, size or modified of the wrong type")
            scope = found.get("scope", context["scope"])  # the first layout: every entry says its own
            if not isinstance(scope, str):
                raise Malformed("its scope is not a string")
            yield (entry_key(path_, size, modified), scope, found.get("destination", context["destination"]),
                   context["started"])
        except (ValueError, KeyError, TypeError, Malformed) as error:
            reason = (f"no {error}" if isinstance(error, KeyError) else str(error)).splitlines()[0]
            (on_malformed or warn_malformed)(path, number, reason)


def warn_malformed(path, number, reason):
    logging.warning("ledger file %s line %d is not a ledger entry (%s): skipped", path, number, reason)


def read_files(paths, on_malformed=None):
    """The entries of these ledger files (see parse). FileNotFoundError when one vanished (compacted meanwhile)."""
    for path in paths:
        try:
            text = _read_text(path)
        except Exception as error:  # pylint: disable=broad-except  # each filesystem says "not found" its own way
            if not FileSystems.exists(path):
                raise FileNotFoundError(path) from error
            raise
        yield from parse(text, path, on_malformed)


def read_partition(ledger_dir, partition, on_malformed=None):
    """Every entry of one ledger partition (a list; read again when a file vanished under a compaction, which
    wrote the file that holds its entries before it deleted it)."""
    for attempt in range(_RETRIES):
        try:
            return list(read_files(_match(partition_dir(ledger_dir, partition), ENTRY_FILES), on_malformed))
        except FileNotFoundError:
            if attempt == _RETRIES - 1:
                raise
    return []


def read_legacy(ledger_dir, on_malformed=None):
    """The entries of the first layout's files (at the top of the ledger folder), until `migrate` moved them."""
    return list(read_files(_match(ledger_dir, _LEGACY_FILES), on_malformed))


class PartitionWriter:
    """One writer's entry files: a PartFile per ledger partition, each starting with the header; `commit()`
    makes them final (and merges a partition that holds more than COMPACT_FILES files)."""

    def __init__(self, ledger_dir, run_id, scope, destination):
        self._ledger_dir, self._run_id = ledger_dir, run_id
        self._header = json.dumps(header(run_id, scope, destination))
        self._parts = {}

    def write(self, file):
        partition = partition_of(file[0])
        part = self._parts.get(partition)
        if part is None:
            part = self._parts[partition] = jsonl.PartFile(partition_dir(self._ledger_dir, partition),
                                                           jsonl.LEDGER_ENTRIES, self._run_id, "ledger entries")
            part.write(self._header)
        part.write(json.dumps(entry(file)))

    def commit(self):
        """Make the entries written final; the partitions they went to."""
        parts, self._parts = self._parts, {}
        for part in parts.values():
            part.commit()
        for partition in parts:
            try:
                compact_partition(self._ledger_dir, partition, minimum=COMPACT_FILES + 1)
            except Exception as error:  # pylint: disable=broad-except  # the entries are written: merging can wait
                logging.warning("could not merge the ledger partition %s: %s",
                                partition_dir(self._ledger_dir, partition),
                                f"{type(error).__name__}: {error}".splitlines()[0])
        return list(parts)


def _started(file_name):
    """When the run that wrote this entry file started (UNIX seconds), from its run id; None for a merged file."""
    found = _RUN_STARTED.match(file_name)
    if not found:
        return None
    return datetime.datetime.strptime(found.group(1), "%Y%m%dT%H%M%SZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def _mergeable(path, now, older_than):
    started = _started(path.rsplit("/", 1)[-1])
    return started is None or started <= now - older_than


def _write_merged(folder, entries):
    """One compacted file of these entries (deduplicated), a header per (scope, destination), which keeps when the
    newest run of its entries started."""
    groups, texts, newest = {}, {}, {}
    for key, scope, destination, started in entries:
        text = texts.get(id(destination))  # the entries under one header share their destination
        if text is None:
            text = texts[id(destination)] = json.dumps(destination, sort_keys=True)
        groups.setdefault((scope, text), (scope, destination, {}))[2][key] = None
        if started is not None:
            newest[(scope, text)] = max(started, newest.get((scope, text), started))
    part = jsonl.PartFile(folder, COMPACTED, uuid.uuid4().hex[:8], "the compacted ledger")
    for group, (scope, destination, keys) in groups.items():
        part.write(json.dumps(header(None, scope, destination, newest.get(group))))
        for key in keys:
            path, size, modified = key
            part.write(json.dumps({"path": path, "size": size, "modified": modified}))
    part.commit()


def compact_partition(ledger_dir, partition, minimum=2, older_than=COMPACT_AFTER_SECONDS):
    """Merge a partition's files into one when it holds at least `minimum` files, leaving out those of runs
    started less than `older_than` seconds ago; the number of files merged (0: none)."""
    folder = partition_dir(ledger_dir, partition)
    files = _match(folder, ENTRY_FILES)
    if len(files) < minimum:
        return 0
    now = datetime.datetime.now(datetime.timezone.utc).timestamp()
    mergeable = [path for path in files if _mergeable(path, now, older_than)]
    if len(mergeable) < 2:
        return 0
    entries, whole = [], []
    for path in mergeable:
        malformed = []
        try:
            found = list(read_files([path], on_malformed=lambda *where: malformed.append(where)))
        except FileNotFoundError:
            continue  # merged by a concurrent compaction, whose copy is complete
        if not malformed:  # a file with a line that is not an entry stays as it is, where its warning says
            entries.extend(found)
            whole.append(path)
    if len(whole) < 2:
        return 0
    _write_merged(folder, entries)
    try:
        FileSystems.delete(whole)
    except Exception:  # pylint: disable=broad-except  # deleted by a concurrent compaction: its copy is complete
        pass
    return len(whole)


def partitions(ledger_dir):
    """The partitions of a ledger folder (a listing of the whole ledger: for `compact`, not for a run)."""
    prefix = ledger_dir.rstrip("/") + "/"
    found = set()
    for path in _match(ledger_dir, f"*/{ENTRY_FILES}"):
        head, _, rest = path[len(prefix):].partition("/")
        if rest and "/" not in rest:
            found.add(head)
    return sorted(found)


def compact(ledger_dir, older_than=COMPACT_AFTER_SECONDS):
    """Merge the files of every partition of a ledger (see compact_partition); (partitions merged, files)."""
    merged = [compact_partition(ledger_dir, partition, older_than=older_than) for partition in partitions(ledger_dir)]
    return sum(1 for n in merged if n), sum(merged)


def migrate(ledger_dir):
    """Move the first layout's entries (files at the top of the ledger) into partitions, once: each partition's
    entries written as one merged file, then the old files deleted. The number of (entries, files) moved."""
    old = _match(ledger_dir, _LEGACY_FILES)
    if not old:
        return 0, 0
    by_partition = {}
    for found in read_files(old):
        by_partition.setdefault(partition_of(found[0][0]), []).append(found)
    for partition, entries in by_partition.items():
        _write_merged(partition_dir(ledger_dir, partition), entries)
    FileSystems.delete(old)
    return sum(len(entries) for entries in by_partition.values()), len(old)


def run_files(ledger_dir, run_id):
    """The entry files one run wrote, in any partition (a listing of the whole ledger: for a run that fails)."""
    name = f"{jsonl.LEDGER_ENTRIES}-{run_id}-*.jsonl"
    return _match(ledger_dir, f"*/{name}") + _match(ledger_dir, name)
