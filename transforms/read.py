"""Read: list Currents Avro files, decode each with its own writer schema, keep its path.

The event type comes from the `event_type=` path segment, else from the Avro record's full name
(`dataexport.S3.inner.users.messages.email.Send` → `users.messages.email.Send`). Fields are read by
name, so any schema version, field order and codec decodes. A file that cannot be decoded is
dead-lettered with its path and error; the events read before the error go on.
"""
import re

import apache_beam as beam
import fastavro
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes

from transforms import dead_letters, metrics
from transforms.catalog import CATALOG
from transforms.elements import DEAD_LETTER, CurrentsEvent
from transforms.ledger import WHOLE_FILE, SkipFilesInLedger

_PATH_EVENT_TYPE = re.compile(r"(?:^|/)event_type=([^/]+)/")
# Braze's producers prefix the record's full name with dataexport.<connector>.inner.
_NAME_PREFIX = re.compile(r"^dataexport\.[^.]+\.inner\.")


def event_type_from_path(path):
    """The `event_type=` segment of a Currents path (the last one), or None."""
    found = _PATH_EVENT_TYPE.findall(path)
    return found[-1] if found else None


def event_type_from_schema(schema):
    """The event type named by an Avro writer schema's full name.

    Producers other than the usual one prefix it differently; a name that ends with a catalogued
    event type (`com.example.users.canvas.Entry`) is taken as that type.
    """
    name = schema.get("name", "")
    namespace = schema.get("namespace")
    full_name = name if "." in name or not namespace else f"{namespace}.{name}"
    event_type = _NAME_PREFIX.sub("", full_name)
    if event_type in CATALOG:
        return event_type
    return next((known for known in CATALOG if event_type.endswith("." + known)), event_type)


class _DecodeFileFn(beam.DoFn):
    """ReadableFile → CurrentsEvent for each record; an undecodable file → one dead letter."""

    def setup(self):
        self._read = metrics.TypeCounter(metrics.READ)

    def process(self, readable_file):
        path = readable_file.metadata.path
        event_type = event_type_from_path(path)
        events_read = 0
        try:
            with readable_file.open(compression_type=CompressionTypes.UNCOMPRESSED) as stream:
                reader = fastavro.reader(stream)
                event_type = event_type or event_type_from_schema(reader.writer_schema)
                for record in reader:
                    events_read += 1
                    yield CurrentsEvent(event_type, path, record)
        except Exception as error:  # pylint: disable=broad-except  # any decoding failure is the file's
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letters.file_letter(path, event_type, error, events_read))
        finally:
            if events_read:
                self._read.inc(event_type, events_read)


def _first(items):
    return next(iter(items))


class ReadCurrentsFiles(beam.PTransform):
    """Read the files matching any of the patterns (a file matched twice is read once).

    With `ledger_dir`, files the ledger records for `ledger_scope` are skipped. Returns a dict of PCollections:
    "events" (CurrentsEvent), DEAD_LETTER (unreadable files) and "files" (the FileMetadata read).
    """

    def __init__(self, patterns, ledger_dir=None, ledger_scope=WHOLE_FILE):
        super().__init__()
        self._patterns = list(patterns)
        self._ledger_dir = ledger_dir
        self._ledger_scope = ledger_scope

    def expand(self, pbegin):
        files = (pbegin
                 | "Patterns" >> beam.Create(self._patterns)
                 | "List files" >> fileio.MatchAll()
                 | "Key by path" >> beam.Map(lambda metadata: (metadata.path, metadata))
                 | "Read each file once" >> beam.CombinePerKey(_first)
                 | "Drop keys" >> beam.Values())
        if self._ledger_dir:
            files = files | "Skip files in ledger" >> SkipFilesInLedger(self._ledger_dir, self._ledger_scope)
        decoded = (files
                   | "Open" >> fileio.ReadMatches()
                   | "Decode Avro" >> beam.ParDo(_DecodeFileFn()).with_outputs(DEAD_LETTER, main="events"))
        return {"events": decoded.events, DEAD_LETTER: decoded[DEAD_LETTER], "files": files}
