"""The files to deliver: listed once each (`ListCurrentsFiles`), then routed by the family of their event type
(`RouteByFamily`), so that each family's branch delivers its own files.

A file's event type comes from its `event_type=` path segment, else from its Avro header's schema (read by the
route, one small read per such file). Files of types `--event_types` leaves out are counted and not read; files of
types the mapping does not send, and files whose header cannot be read, go to UNSUPPORTED, where they are read and
counted (or dead-lettered) all the same: every event read is accounted for.

Each branch's delivery holds back what it has not sent yet (requests are cut across files) and the answers it has
not collected: the route, which sees every file, is the one clock that tells every branch, every --flush_seconds,
to send what it holds and hand on the files that are finished (a FLUSH: a CurrentsFile without a path), so that a
branch whose files have all come still finishes them while the others go on.
"""
import apache_beam as beam
from apache_beam.transforms.window import GlobalWindows, TimestampCombiner

from currents_to_segment.transforms import metrics
from currents_to_segment.transforms.currents import records
from currents_to_segment.transforms.delivery import FLUSH, CurrentsFile
from currents_to_segment.transforms.file_access import FileAccess
from currents_to_segment.transforms.flush_timer import DEFAULT_FLUSH_SECONDS, FlushTimer

UNSUPPORTED = "unsupported"


def at_earliest_timestamp():
    """The global window, with a grouping's output at its earliest input's timestamp (not at the end of the
    window, Beam's default): file paths grouped before delivery keep the start-of-time timestamp, so that no
    later step ever sees late data."""
    return beam.WindowInto(GlobalWindows(), timestamp_combiner=TimestampCombiner.OUTPUT_AT_EARLIEST)


class _ListFilesFn(beam.DoFn):
    """Pattern → the FileMetadata of each file it matches."""

    def __init__(self, access):
        super().__init__()
        self._access = access

    def setup(self):
        self._listed = metrics.counter(metrics.FILES_LISTED)

    def process(self, pattern):
        found = self._access.match(pattern)
        self._listed.inc(len(found))
        yield from found


def _first(items):
    return next(iter(items))


class ListCurrentsFiles(beam.PTransform):
    """The FileMetadata of every file matching any of the patterns, each once (a file matched twice is listed
    once), through a file_access.FileAccess (one S3 client per worker)."""

    def __init__(self, patterns, access=None):
        super().__init__()
        self._patterns = list(patterns)
        self._access = access or FileAccess()

    def expand(self, pbegin):
        return (pbegin
                | "Patterns" >> beam.Create(self._patterns)
                | "List files" >> beam.ParDo(_ListFilesFn(self._access))
                | "Key by path" >> beam.Map(lambda metadata: (metadata.path, metadata))
                | "At earliest timestamp" >> at_earliest_timestamp()
                | "Read each file once" >> beam.CombinePerKey(_first)
                | "Drop keys" >> beam.Values()
                # The default windowing again (timestamps unchanged), the same as every other step's.
                | "Global window" >> beam.WindowInto(GlobalWindows()))


class _RouteFn(beam.DoFn):
    def __init__(self, mapping, access, event_types, flush_seconds):
        super().__init__()
        self._mapping = mapping
        self._access = access
        self._event_types = event_types
        self._flush_seconds = flush_seconds
        self._flushes = None

    def setup(self):
        self._other_types = metrics.counter(metrics.FILES_OF_OTHER_TYPES)

    def start_bundle(self):
        self._flushes = FlushTimer(self._flush_seconds)

    def _event_type(self, path):
        found = records.event_type_from_path(path)
        if found is not None:
            return found
        try:
            with self._access.open(path) as stream:
                return records.open_file(path, stream)[0]
        except Exception:  # pylint: disable=broad-except  # unreadable: its delivery dead-letters it with the reason
            return None

    def process(self, metadata):
        if self._flushes.due():
            for output in (*self._mapping.families, UNSUPPORTED):
                yield beam.pvalue.TaggedOutput(output, FLUSH)
        event_type = self._event_type(metadata.path)
        if event_type is not None and self._event_types is not None and event_type not in self._event_types:
            self._other_types.inc()
            return
        spec = self._mapping.spec_for(event_type) if event_type is not None else None
        yield beam.pvalue.TaggedOutput(spec.family if spec is not None else UNSUPPORTED, CurrentsFile(
            metadata.path, metadata.size_in_bytes, metadata.last_updated_in_seconds, event_type))


class RouteByFamily(beam.PTransform):
    """FileMetadata → CurrentsFile, one output per family of the mapping (a catalog.Mapping), and UNSUPPORTED; with
    `event_types`, files of other types are counted (files_of_other_types) and left out. Every `flush_seconds` a
    FLUSH goes down every output, so that a branch that gets no file for a while still finishes the files it holds
    (see transforms.deliver). Returns a DoOutputsTuple."""

    def __init__(self, mapping, access=None, event_types=None, flush_seconds=DEFAULT_FLUSH_SECONDS):
        super().__init__()
        self._mapping = mapping
        self._access = access or FileAccess()
        self._event_types = event_types
        self._flush_seconds = flush_seconds

    def expand(self, files):
        return files | "Route by event type" >> beam.ParDo(_RouteFn(
            self._mapping, self._access, self._event_types, self._flush_seconds)).with_outputs(
                *self._mapping.families, UNSUPPORTED)
