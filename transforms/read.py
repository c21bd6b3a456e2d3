"""Read: list Currents Avro files, decode each block by block with its own writer schema, keep its path.

The event type comes from the `event_type=` path segment, else from the Avro record's full name
(`dataexport.S3.inner.users.messages.email.Send` → `users.messages.email.Send`). Fields are read by
name, so any schema version, field order and codec decodes.

Corruption costs only what it touches (see transforms.avro_blocks): a file whose header is unreadable
(not Avro, empty, a damaged magic, schema or codec) is one dead letter with `byte_range` [0, size];
inside a readable file a
corrupt block is skipped whole (none of its records is emitted), decoding goes on with the next block
that checks out, and each skipped run of bytes is one dead letter with its `byte_range` [start, end)
and `records_lost` (the declared record counts, None when a count was unreadable).
`events_read_before_error` is the number of records emitted from the file before that region. The
`unreadable_files` counter of the dead-letter stage counts these letters, i.e. unreadable *parts* of
files (a file with two corrupt regions counts twice). A record whose strings are not all UTF-8 costs only
itself: it is an `invalid_record` letter naming the fields, their bytes shown with \\x escapes. The READ
counter counts the records decoded, those included.

A file that cannot be opened or read to its end (deleted since the listing, storage unreachable) is one
`unreadable_file` letter for what was not read, and the run goes on; it has no FileRead, so the ledger does
not record it and a later run reads it again. Once a file is decoded, its FileRead (metadata, and the units
later stages must account for: its events and its unreadable parts) goes to the "files" output, for the
ledger.
"""
import re

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindows, TimestampedValue

from transforms import avro_blocks, dead_letters, metrics, progress
from transforms.catalog import KNOWN_TYPES
from transforms.elements import DEAD_LETTER, INVALID_RECORD, CurrentsEvent, FileRead, at_earliest_timestamp
from transforms.ledger import WHOLE_FILE, SkipFilesInLedger
from transforms.map import event_time
from transforms.s3_files import FileAccess

FILES = "files"
_PATH_EVENT_TYPE = re.compile(r"(?:^|/)event_type=([^/]+)/")
# Braze's producers prefix the record's full name with dataexport.<connector>.inner.
_NAME_PREFIX = re.compile(r"^dataexport\.[^.]+\.inner\.")


def event_type_from_path(path):
    """The `event_type=` segment of a Currents path (the last one), or None."""
    found = _PATH_EVENT_TYPE.findall(path)
    return found[-1] if found else None


def event_type_from_schema(schema):
    """The event type named by an Avro writer schema's full name.

    Producers other than the usual one prefix it differently; a name that ends with an event type a
    built-in mapping knows (`com.example.users.canvas.Entry`) is taken as that type.
    """
    name = schema.get("name", "")
    namespace = schema.get("namespace")
    full_name = name if "." in name or not namespace else f"{namespace}.{name}"
    event_type = _NAME_PREFIX.sub("", full_name)
    if event_type in KNOWN_TYPES:
        return event_type
    return next((known for known in sorted(KNOWN_TYPES) if event_type.endswith("." + known)), event_type)


def region_letter(path, event_type, region, events_read):
    """The dead letter of a skipped region of a file (a BadRegion)."""
    letter = dead_letters.file_letter(path, event_type, region.error, events_read)
    letter["byte_range"] = [region.start, region.end]
    letter["records_lost"] = region.records_lost
    return letter


def open_file(path, stream):
    """(event type, a BlockFile yielding every GoodBlock and BadRegion in order) of an open Currents file.

    Raises CorruptHeader when nothing of the file can be read.
    """
    container = avro_blocks.open_container(stream)
    return event_type_from_path(path) or event_type_from_schema(container.header.schema), container


class _ListFilesFn(beam.DoFn):
    """Pattern → the FileMetadata of each file it matches."""

    def __init__(self, files):
        super().__init__()
        self._files = files

    def setup(self):
        self._listed = metrics.counter(metrics.FILES_LISTED)

    def process(self, pattern):
        found = self._files.match(pattern)
        self._listed.inc(len(found))
        yield from found


class _DecodeFileFn(beam.DoFn):
    """FileMetadata → CurrentsEvent for each record of every good block; an unreadable header → one
    dead letter for the file; every skipped region → one dead letter with its byte range. A file of a type
    not among `event_types` (when given) is left unread, and counted."""

    def __init__(self, files, progress_settings, event_types=None):
        super().__init__()
        self._files = files
        self._progress_settings = progress_settings
        self._event_types = event_types

    def setup(self):
        self._read = metrics.TypeCounter(metrics.READ)
        self._files_read = metrics.counter(metrics.FILES_READ)
        self._other_types = metrics.counter(metrics.FILES_OF_OTHER_TYPES)
        self._letters = metrics.counter(metrics.DEAD_LETTERS_MADE)
        progress.reporter(self._progress_settings)

    def _dead_letter(self, letter):
        self._letters.inc()
        return beam.pvalue.TaggedOutput(DEAD_LETTER, letter)

    def _selected(self, event_type):
        if self._event_types is None or event_type in self._event_types:
            return True
        self._other_types.inc()
        return False

    def process(self, metadata):
        path = metadata.path
        event_type = event_type_from_path(path)
        if event_type and not self._selected(event_type):
            return
        events_read = letters = 0
        position = 0  # where decoding stands, for the letter of a failure
        try:
            with self._files.open(path) as stream:
                event_type, container = open_file(path, stream)
                if not self._selected(event_type):
                    return
                for item in container:
                    if isinstance(item, avro_blocks.BadRegion):
                        letters += 1
                        yield self._dead_letter(region_letter(path, event_type, item, events_read))
                    else:
                        for record in item.records:
                            yield stamped(CurrentsEvent(event_type, path, record))
                        for undecodable in item.undecodable:
                            yield self._dead_letter(undecodable_letter(path, event_type, undecodable))
                        decoded = len(item.records) + len(item.undecodable)
                        events_read += decoded
                        self._read.inc(event_type, decoded)
                    position = item.end
        except avro_blocks.CorruptHeader as error:  # not an Avro file, or a broken header: nothing can be read
            letters += 1
            yield self._dead_letter(lost_letter(path, event_type, error, events_read, 0, metadata.size_in_bytes))
        except Exception as error:  # pylint: disable=broad-except  # storage: gone since the listing, or unreachable
            # One letter, and no FileRead: the file is not recorded in the ledger, so a later run reads it again.
            self._files_read.inc()
            yield self._dead_letter(lost_letter(
                path, event_type, StorageError(f"cannot read the file from storage: {type(error).__name__}: {error}"),
                events_read, position, metadata.size_in_bytes))
            return
        self._files_read.inc()
        yield beam.pvalue.TaggedOutput(FILES, FileRead(metadata, events_read + letters))


class StorageError(Exception):
    """A file listed by the run could not be opened or read to its end."""


def lost_letter(path, event_type, error, events_read, start, size):
    """The dead letter of the part [start, size) of a file that could not be read."""
    letter = dead_letters.file_letter(path, event_type, error, events_read)
    letter["byte_range"] = [start, size]
    letter["records_lost"] = None
    return letter


def undecodable_letter(path, event_type, undecodable):
    """The invalid_record letter of a record some of whose strings are not UTF-8 (an UndecodableRecord)."""
    problems = "; ".join(f"{field} is not valid UTF-8: {data!r}"[:300]
                         for field, data in zip(undecodable.fields, undecodable.raw))
    return dead_letters.record_letter(CurrentsEvent(event_type, path, undecodable.record), INVALID_RECORD,
                                      f"{problems} (the record shows those bytes as \\x escapes)")


def stamped(event):
    """The event with its own `time` as its timestamp, assigned here once for every later stage; a record
    whose time is not valid keeps the file's (the start of time) and is dead-lettered by the map stage."""
    try:
        return TimestampedValue(event, event_time(event.record.get("time")))
    except (TypeError, ValueError):
        return event


def _first(items):
    return next(iter(items))


class ReadCurrentsFiles(beam.PTransform):
    """Read the files matching any of the patterns (a file matched twice is read once).

    With `ledger_dir`, files the ledger records for `ledger_scope` and `destination` are skipped; with
    `event_types`, files of other types (by their path, else their header) are not read (nor recorded). `s3_options` (the job's
    pipeline options) let s3:// patterns be listed and read with one client per worker (see
    transforms.s3_files); the worker's progress lines start with `progress_settings`. Returns a dict of PCollections: "events" (CurrentsEvent), DEAD_LETTER
    (unreadable files and parts of files) and FILES (a FileRead for each file read).
    """

    def __init__(self, patterns, ledger_dir=None, ledger_scope=WHOLE_FILE, destination=None, s3_options=None,
                 progress_settings=progress.ProgressSettings(), event_types=None):
        super().__init__()
        self._destination = destination
        self._event_types = event_types
        self._progress_settings = progress_settings
        self._patterns = list(patterns)
        self._ledger_dir = ledger_dir
        self._ledger_scope = ledger_scope
        self._files = FileAccess(s3_options)

    def expand(self, pbegin):
        files = (pbegin
                 | "Patterns" >> beam.Create(self._patterns)
                 | "List files" >> beam.ParDo(_ListFilesFn(self._files))
                 | "Key by path" >> beam.Map(lambda metadata: (metadata.path, metadata))
                 | "At earliest timestamp" >> at_earliest_timestamp()
                 | "Read each file once" >> beam.CombinePerKey(_first)
                 | "Drop keys" >> beam.Values())
        if self._ledger_dir:
            files = files | "Skip files in ledger" >> SkipFilesInLedger(self._ledger_dir, self._ledger_scope,
                                                                         self._destination)
        # The default windowing again (timestamps unchanged), the same as every other stage's.
        files = files | "Global window" >> beam.WindowInto(GlobalWindows())
        decoded = files | "Decode Avro" >> beam.ParDo(_DecodeFileFn(self._files, self._progress_settings,
                                                                    self._event_types)).with_outputs(
            DEAD_LETTER, FILES, main="events")
        return {"events": decoded.events, DEAD_LETTER: decoded[DEAD_LETTER], FILES: decoded[FILES]}
