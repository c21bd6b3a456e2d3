"""Watch: list the inputs every `interval` seconds, for ever, and hand on each new version of a file once (--watch).

    listings (one now, then one every interval, until the stop marker exists)
      → list the inputs → (path, FileMetadata) → keep each new version of a path → FileMetadata

A version is a path with its size and modification time: a new path, or a file rewritten under the same name, is
read once; a file listed again unchanged is not. Each path remembers, in Beam state (per key, on the worker that
owns the path), the last version handed on. With a ledger, the files it holds for this run's scope and destination
(read by each worker as it starts) are skipped: a restarted watch picks up where the last one stopped.

Stopping (a drain): once `stop_marker` exists (pipeline.main writes it on the first Ctrl-C or SIGTERM), no more
listing is made; the listings end, so the pipeline finishes the files in flight, records them and ends, as a
batch run does. Dataflow's own drain does the same (the listings' restriction is truncated).

The listings are a splittable DoFn like Beam's PeriodicImpulse: listing n is emitted at `start + n * interval`,
with that timestamp, and the watermark follows; the stop marker is looked at every STOP_CHECK_SECONDS.
"""
import time
import typing
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.coders import coders
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.transforms import core
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Duration, Timestamp

from currents_to_segment.transforms import ledger, metrics, progress

STOP_CHECK_SECONDS = 1.0
_FOREVER = 2 ** 62  # listings in the restriction: more than any run makes


def stop_requested(stop_marker):
    """True once the stop marker exists (None: never)."""
    return bool(stop_marker) and FileSystems.exists(stop_marker)


def request_stop(stop_marker):
    """Write the stop marker: the watch makes no more listings and the pipeline ends once its files are done."""
    with FileSystems.create(stop_marker) as stream:
        stream.write(b"stop listing\n")  # object stores refuse empty uploads


def listing_due(start, interval, index):
    """When listing `index` is due (UNIX seconds)."""
    return start + interval * index


class _ListingsRestrictions(core.RestrictionProvider):
    def initial_restriction(self, element):
        return OffsetRange(0, _FOREVER)

    def create_tracker(self, restriction):
        return OffsetRestrictionTracker(restriction)

    def restriction_size(self, element, restriction):
        return 8  # one listing waits: there is always a little work

    def truncate(self, element, restriction):
        return None  # a runner's drain (Dataflow's): no more listings


class _ListingsFn(beam.DoFn):
    """(start, interval, stop marker) → listing numbers 0, 1, 2, ... each at its due time, until the marker exists."""

    @beam.DoFn.unbounded_per_element()
    def process(self, element, tracker=beam.DoFn.RestrictionParam(_ListingsRestrictions()),
                watermark=beam.DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider())):
        start, interval, stop_marker = element
        index = tracker.current_restriction().start
        while True:
            if stop_requested(stop_marker):
                tracker.try_claim(tracker.current_restriction().stop)  # nothing more to claim: the listings end
                return
            due = listing_due(start, interval, index)
            now = time.time()
            if due > now:
                wake = min(due, now + STOP_CHECK_SECONDS)
                _advance(watermark, Timestamp.of(wake))  # nothing comes before the next listing
                tracker.defer_remainder(Duration.of(wake - now))
                return
            if not tracker.try_claim(index):
                return
            _advance(watermark, Timestamp.of(due))
            yield TimestampedValue(index, Timestamp.of(due))
            index += 1


def _advance(watermark, to):
    current = watermark.current_watermark()
    if current is None or to > current:
        watermark.set_watermark(to)


class _ListFn(beam.DoFn):
    """Listing number → (path, FileMetadata) of every file the watched inputs hold now."""

    def __init__(self, watched, files):
        super().__init__()
        self._watched = watched
        self._files = files

    def process(self, index):
        for pattern in self._watched.patterns(first=index == 0):
            for metadata in self._files.match(pattern):
                yield metadata.path, metadata
        progress.watch_state().listed(time.time())


class _NewVersionsFn(beam.DoFn):
    """(path, FileMetadata) → the FileMetadata of a version of the path not handed on before (nor recorded in the
    ledger for this scope and destination when the worker started).

    The ledger is read by each worker as it starts (not as a side input: Flink's streaming side inputs need JVM
    options on Java 17); entries this run wrote since are versions already handed on, so reading them too changes
    nothing."""

    VERSION = ReadModifyWriteStateSpec("version", coders.StrUtf8Coder())

    def __init__(self, ledger_dir, scope, destination):
        super().__init__()
        self._ledger_dir = ledger_dir
        self._scope = scope
        self._destination = ledger.destination_key(destination)
        self._recorded = {}

    def setup(self):
        self._found = metrics.counter(metrics.FILES_LISTED)
        self._skipped = metrics.counter(metrics.LEDGER_FILES_SKIPPED)
        self._elsewhere = metrics.counter(metrics.LEDGER_FILES_ELSEWHERE)
        self._recorded = ledger.recorded(self._ledger_dir) if self._ledger_dir else {}

    def process(self, keyed, version=beam.DoFn.StateParam(VERSION)):
        path, metadata = keyed
        key = ledger.entry_key(path, metadata.size_in_bytes, metadata.last_updated_in_seconds)
        if version.read() == key:
            return
        version.write(key)
        self._found.inc()
        entries = self._recorded.get(key, ())
        if ledger.covers(entries, self._scope, self._destination):
            self._skipped.inc()
            return
        if any(where != self._destination for _, where in entries):
            self._elsewhere.inc()
        progress.watch_state().found(path, metadata.last_updated_in_seconds)
        yield metadata


@dataclass(frozen=True)
class WatchSettings:
    """What a watch lists and how often: `watched.patterns(first)` → the file patterns to list at a listing
    (pipeline.partitions: --input patterns, or the hour partitions under --currents_root), every `interval` seconds
    from `start` (UNIX seconds), until `stop_marker` exists (written by the first Ctrl-C or SIGTERM)."""

    watched: typing.Any
    interval: float
    start: float
    stop_marker: str


class WatchCurrentsFiles(beam.PTransform):
    """The FileMetadata of each new version of a file among the inputs `settings` (a WatchSettings) watch, listed
    through a file_access.FileAccess. With `ledger_dir`, the files that ledger holds for `scope` and `destination`
    are skipped."""

    def __init__(self, settings, files, ledger_dir=None, scope=ledger.WHOLE_FILE, destination=None):
        super().__init__()
        self._settings = settings
        self._files = files
        self._ledger = (ledger_dir, scope, destination)

    def expand(self, pbegin):
        settings = self._settings
        listed = (pbegin
                  | "Start" >> beam.Create([(settings.start, settings.interval, settings.stop_marker)])
                  | "Listings" >> beam.ParDo(_ListingsFn())
                  | "List files" >> beam.ParDo(_ListFn(settings.watched, self._files)).with_output_types(
                      typing.Tuple[str, typing.Any]))  # keyed by path: a deterministic key coder for the state
        return listed | "Keep new versions" >> beam.ParDo(_NewVersionsFn(*self._ledger))
