"""Read: list Currents Avro files, each once, and decode each block by block with its own writer schema into
items (see transforms.elements): a RECORDS item per block of records, a LETTER item per unreadable part, and a
FILE_READ item once the file is read to its end.

The event type comes from the `event_type=` path segment, else from the Avro record's full name
(`dataexport.S3.inner.users.messages.email.Send` → `users.messages.email.Send`). Fields are read by
name, so any schema version, field order and codec decodes.

Corruption costs only what it touches (see transforms.avro_blocks): a file whose header is unreadable
(not Avro, empty, a damaged magic, schema or codec) is one dead letter with `byte_range` [0, size];
inside a readable file a corrupt block is skipped whole (none of its records is emitted), decoding goes on
with the next block that checks out, and each skipped run of bytes is one dead letter with its `byte_range`
[start, end) and `records_lost` (the declared record counts, None when a count was unreadable).
`events_read_before_error` is the number of records emitted from the file before that region. The
`unreadable_files` counter of the dead-letter stage counts these letters, i.e. unreadable *parts* of
files (a file with two corrupt regions counts twice). A record whose strings are not all UTF-8 costs only
itself: it is an `invalid_record` letter naming the fields, their bytes shown with \\x escapes. The READ
counter counts the records decoded, those included.

A file that cannot be opened or read to its end (deleted since the listing, storage unreachable) is one
`unreadable_file` letter for what was not read, and the run goes on; it has no FILE_READ, so the ledger does
not record it and a later run reads it again. The FILE_READ of a file says how many units later stages must
account for: its records, and its unreadable parts.
"""
import re

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindows

from transforms import avro_blocks, elements, metrics, progress
from transforms.catalog import KNOWN_TYPES
from transforms.elements import INVALID_RECORD, at_earliest_timestamp
from transforms.file_access import FileAccess

MAX_BLOCK_RECORDS = 4_096
_KNOWN_IN_ORDER = sorted(KNOWN_TYPES)  # the most records in one RECORDS item (an Avro block may hold more)
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
    return next((known for known in _KNOWN_IN_ORDER if event_type.endswith("." + known)), event_type)


def region_letter(path, event_type, region, events_read):
    """The dead letter of a skipped region of a file (a BadRegion)."""
    return elements.file_letter(path, event_type, region.error, events_read, (region.start, region.end),
                                region.records_lost)


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
    """FileMetadata → a RECORDS item per good block (at most MAX_BLOCK_RECORDS records each); an unreadable
    header → one LETTER for the file; every skipped region → one LETTER with its byte range; a record whose
    strings are not UTF-8 → an invalid_record LETTER; then the FILE_READ. A file of a type not among
    `event_types` (when given) is left unread, and counted."""

    def __init__(self, files, progress_settings, event_types=None):
        super().__init__()
        self._files = files
        self._progress_settings = progress_settings
        self._event_types = event_types

    def setup(self):
        self._read = metrics.TypeCounter(metrics.READ)
        self._files_read = metrics.counter(metrics.FILES_READ)
        self._letters = metrics.counter(metrics.DEAD_LETTERS_MADE)
        self._other_types = metrics.counter(metrics.FILES_OF_OTHER_TYPES)
        progress.reporter(self._progress_settings)

    def _selected(self, event_type):
        if self._event_types is None or event_type in self._event_types:
            return True
        self._other_types.inc()
        return False

    def _dead_letter(self, letter):
        self._letters.inc()
        return elements.letter_item(letter)

    def process(self, metadata):
        try:
            yield from self._decode(metadata)
        finally:
            progress.watch_state().read(metadata.path)

    def _decode(self, metadata):
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
                        for start in range(0, len(item.records), MAX_BLOCK_RECORDS):
                            yield elements.records(event_type, path, item.records[start:start + MAX_BLOCK_RECORDS])
                        for undecodable in item.undecodable:
                            yield self._dead_letter(undecodable_letter(path, event_type, undecodable))
                        decoded = len(item.records) + len(item.undecodable)
                        events_read += decoded
                        self._read.inc(event_type, decoded)
                    position = item.end
        except avro_blocks.CorruptHeader as error:  # not an Avro file, or a broken header: nothing can be read
            letters += 1
            yield self._dead_letter(elements.file_letter(path, event_type, error, events_read,
                                                         (0, metadata.size_in_bytes)))
        except Exception as error:  # pylint: disable=broad-except  # storage: gone since the listing, or unreachable
            # One letter, and no FILE_READ: the file is not recorded in the ledger, so a later run reads it again.
            self._files_read.inc()
            yield self._dead_letter(elements.file_letter(
                path, event_type, StorageError(f"cannot read the file from storage: {type(error).__name__}: {error}"),
                events_read, (position, metadata.size_in_bytes)))
            return
        self._files_read.inc()
        yield elements.file_read(event_type, path, metadata.size_in_bytes, metadata.last_updated_in_seconds,
                                 events_read + letters)


class StorageError(Exception):
    """A file listed by the run could not be opened or read to its end."""


def undecodable_letter(path, event_type, undecodable):
    """The invalid_record letter of a record some of whose strings are not UTF-8 (an UndecodableRecord)."""
    problems = "; ".join(f"{field} is not valid UTF-8: {data!r}"[:300]
                         for field, data in zip(undecodable.fields, undecodable.raw))
    return elements.record_letter(event_type, path, undecodable.record, INVALID_RECORD,
                                  f"{problems} (the record shows those bytes as \\x escapes)")


def _first(items):
    return next(iter(items))


class ListCurrentsFiles(beam.PTransform):
    """The FileMetadata of every file matching any of the patterns, each once (a file matched twice is listed
    once), through a file_access.FileAccess (one S3 client per worker)."""

    def __init__(self, patterns, files=None):
        super().__init__()
        self._patterns = list(patterns)
        self._files = files or FileAccess()

    def expand(self, pbegin):
        return (pbegin
                | "Patterns" >> beam.Create(self._patterns)
                | "List files" >> beam.ParDo(_ListFilesFn(self._files))
                | "Key by path" >> beam.Map(lambda metadata: (metadata.path, metadata))
                | "At earliest timestamp" >> at_earliest_timestamp()
                | "Read each file once" >> beam.CombinePerKey(_first)
                | "Drop keys" >> beam.Values()
                # The default windowing again (timestamps unchanged), the same as every other stage's.
                | "Global window" >> beam.WindowInto(GlobalWindows()))


class ReadCurrentsFiles(beam.PTransform):
    """FileMetadata → items (see the module doc): decode each file through a file_access.FileAccess; with
    `event_types`, files of other types (by their path, else their header) are not read (nor recorded). The
    worker's progress lines start with `progress_settings`."""

    def __init__(self, files=None, event_types=None, progress_settings=progress.ProgressSettings()):
        super().__init__()
        self._files = files or FileAccess()
        self._event_types = event_types
        self._progress_settings = progress_settings

    def expand(self, files):
        return files | "Decode Avro" >> beam.ParDo(_DecodeFileFn(self._files, self._progress_settings,
                                                                 self._event_types))
