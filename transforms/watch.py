"""Watch: list the inputs every `interval` seconds, for ever, and hand on each new version of a file once (--watch).

    listings (one now, then one every interval, until the stop marker exists)
      → list the inputs → (path, FileMetadata) → keep each new version of a path → FileMetadata

A version is a path with its size and modification time: a new path, or a file rewritten under the same name, is
read once; a file listed again unchanged is not. Each path remembers, in Beam state (per key, on the worker that
owns the path), the last version handed on, until it is older than `forget_after` and the ledger holds it. With a
ledger, each listing leaves out the files it holds for this run's scope and destination (reading only the ledger
partitions of the files listed): a restarted watch picks up where the last one stopped, and the state stays as
small as the last hours' files, whatever the history.

What is listed: under --currents_root, every selected hour partition at the first listing and then every
`full_listing_interval` seconds (so that a file Braze writes late into an old hour is found), the last hours'
partitions at the listings between (see pipeline.partitions.WatchedRoot); --input patterns at every listing.

Stopping (a drain): once `stop_marker` exists (pipeline.main writes it on the first Ctrl-C or SIGTERM), no more
listing is made; the listings end, so the pipeline finishes the files in flight, records them and ends, as a
batch run does. Dataflow's own drain does the same (the listings' restriction is truncated).

The listings are a splittable DoFn like Beam's PeriodicImpulse: listing n is emitted at `start + n * interval`,
with that timestamp, and the watermark follows; the stop marker is looked at every STOP_CHECK_SECONDS (while
a listing waits, in the DoFn: see _wait_until).
"""
import json
import time
import typing
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.coders import coders
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.transforms import core
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Duration, Timestamp

from currents_to_segment.transforms import ledger, metrics, progress

STOP_CHECK_SECONDS = 1.0
LONGEST_WAIT_SECONDS = 60.0  # a listing waits this long in the DoFn at most, then is deferred
DEFAULT_FULL_LISTING_SECONDS = 900.0
FORGET_AFTER_SECONDS = 4 * 3600.0  # longer than a --currents_root watch looks back (pipeline.partitions)
LEDGER_READ_SECONDS = 60.0  # a ledger partition read is used this long
LEDGER_PARTITIONS_KEPT = 256  # and at most this many are kept
_AHEAD_SECONDS = 60.0  # a timer due this far past the clock fires only because the watermark went to its end
_EARLY_SECONDS = 0.2  # a call back this much before the deferral's time is early
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
        due = listing_due(start, interval, index)
        if (_called_back_early(watermark) and _wait_until(due, stop_marker)) or stop_requested(stop_marker):
            tracker.try_claim(tracker.current_restriction().stop)  # nothing more to claim: the listings end
            return
        now = time.time()
        while due <= now:  # each listing due (several after a pause)
            if not tracker.try_claim(index):
                return
            _advance(watermark, Timestamp.of(due))
            yield TimestampedValue(index, Timestamp.of(due))
            index += 1
            due = listing_due(start, interval, index)
        wait = min(due - now, STOP_CHECK_SECONDS)  # short: a runner that keeps the delay sees a drain at once
        _advance(watermark, Timestamp.of(now + wait))  # nothing comes before the next listing
        tracker.defer_remainder(Duration.of(wait))


def _called_back_early(watermark):
    """True when the runner calls the listings back before the deferral asked for has passed (the watermark was set
    to the time of the next call when it was deferred)."""
    asked = watermark.current_watermark()
    return asked is not None and time.time() < asked.micros / 1e6 - _EARLY_SECONDS


def _wait_until(due, stop_marker):
    """Wait here until `due` (UNIX seconds; at most LONGEST_WAIT_SECONDS), looking for the stop marker every
    STOP_CHECK_SECONDS; True once it exists. Only for a runner that calls deferred listings back early.

    Why wait in the DoFn rather than only defer: once the job's Impulse has finished (at once, on a Flink job
    without checkpoints), Beam's Flink runner fires a deferred element's timer at once, whatever the delay asked
    (ExecutableStageDoFnOperator.flushData), and each deferral leaves a state behind in Flink's heap: deferring
    alone, an idle watch on embedded Flink came back some 200 times a second and grew 16 MB/s. Waiting makes it one
    deferral per listing (or per LONGEST_WAIT_SECONDS) there. Runners that keep the delay (Prism, Dataflow) are
    never made to wait: Prism, splitting a bundle that waits, ran several waiting listings at once until they
    held every bundle slot it runs in parallel, and the watch stalled. The deferral itself stays short, so that
    there the next call comes within STOP_CHECK_SECONDS and a drain is seen at once."""
    until = min(due, time.time() + LONGEST_WAIT_SECONDS)
    while not stop_requested(stop_marker):
        left = until - time.time()
        if left <= 0:
            return False
        time.sleep(min(left, STOP_CHECK_SECONDS))
    return True


def _advance(watermark, to):
    current = watermark.current_watermark()
    if current is None or to > current:
        watermark.set_watermark(to)


def is_full_listing(start, interval, full_interval, index):
    """True for the listing that lists every selected partition: the first, and the first due after each
    `full_interval` seconds since the start."""
    if index == 0:
        return True
    due, before = listing_due(start, interval, index) - start, listing_due(start, interval, index - 1) - start
    return int(due // full_interval) != int(before // full_interval)


class ListedUnlessHolding:
    """What a watch lists (`watched`: a pipeline.partitions watched input), but nothing while this process holds its
    files because Segment fails (progress.WatchState.holding; `stop_marker` names the watch): the runner then has
    no new file to hand to the deliveries that wait, so that an outage does not pile up waiting bundles, each a copy
    of the stage's DoFns that the worker keeps after it (the memory of a watch stays flat through an outage). The
    files that land meanwhile are found by the first listing after Segment answers, a full one: a backlog after an
    incident lands late into old hour partitions."""

    def __init__(self, watched, stop_marker):
        self._watched = watched
        self._stop_marker = stop_marker
        self._skipped = False

    def patterns(self, full):
        if progress.watch_state().holding(self._stop_marker):
            self._skipped = True
            return []
        full, self._skipped = full or self._skipped, False
        return self._watched.patterns(full=full)


class _ListFn(beam.DoFn):
    """Listing number → (path, FileMetadata) of every file the watched inputs hold now that the ledger does not
    hold for this scope and destination (its partitions read at most once per LEDGER_READ_SECONDS)."""

    def __init__(self, settings, files, ledger_dir, scope, destination):
        super().__init__()
        self._settings = settings
        self._files = files
        self._ledger = (ledger_dir, scope, ledger.destination_key(destination))

    def setup(self):
        self._skipped = metrics.counter(metrics.LEDGER_FILES_SKIPPED)
        self._elsewhere = metrics.counter(metrics.LEDGER_FILES_ELSEWHERE)
        self._watched = ListedUnlessHolding(self._settings.watched, self._settings.stop_marker)
        ledger_dir = self._ledger[0]
        self._lookup = ledger.Lookup(ledger_dir, on_malformed=ledger.count_malformed, max_age=LEDGER_READ_SECONDS,
                                     max_partitions=LEDGER_PARTITIONS_KEPT) if ledger_dir else None

    def _recorded(self, metadata, first):
        """True when the ledger holds this version (counted as skipped at the first listing only: later listings
        find the same files again)."""
        if self._lookup is None:
            return False
        _, scope, destination = self._ledger
        held = self._lookup.held(metadata.path, metadata.size_in_bytes, metadata.last_updated_in_seconds, scope,
                                 destination)
        if first and held:
            (self._skipped if held == ledger.RECORDED else self._elsewhere).inc()
        return held == ledger.RECORDED

    def process(self, index):
        settings = self._settings
        full = is_full_listing(settings.start, settings.interval, settings.full_listing_interval, index)
        for pattern in self._watched.patterns(full=full):
            for metadata in self._files.match(pattern):
                if not self._recorded(metadata, index == 0):
                    yield metadata.path, metadata
        progress.watch_state().listed(time.time())


class _NewVersionsFn(beam.DoFn):
    """(path, FileMetadata) → the FileMetadata of a version of the path not handed on before.

    Each path remembers, in Beam state, the last version handed on, for `forget_after` seconds (of the listings'
    event time) and until the ledger holds it: then the path is forgotten, so the state follows the files of the
    last hours, not the whole history (the listing leaves out what the ledger holds). A forgotten path is dropped
    in two steps, 2 * LEDGER_READ_SECONDS apart, so that no listing can still go by a ledger read made before the
    file was recorded."""

    VERSION = ReadModifyWriteStateSpec("version", coders.StrUtf8Coder())
    FORGETTING = ReadModifyWriteStateSpec("forgetting", coders.BooleanCoder())
    FORGET = TimerSpec("forget", TimeDomain.WATERMARK)

    def __init__(self, ledger_dir, scope, destination, forget_after, stop_marker):
        super().__init__()
        self._ledger = (ledger_dir, scope, ledger.destination_key(destination))
        self._forget_after = forget_after
        self._stop_marker = stop_marker

    def setup(self):
        self._found = metrics.counter(metrics.FILES_LISTED)
        ledger_dir = self._ledger[0]
        self._lookup = ledger.Lookup(ledger_dir, max_age=LEDGER_READ_SECONDS,
                                     max_partitions=LEDGER_PARTITIONS_KEPT) if ledger_dir else None

    def process(self, keyed, timestamp=beam.DoFn.TimestampParam, version=beam.DoFn.StateParam(VERSION),
                forgetting=beam.DoFn.StateParam(FORGETTING), forget=beam.DoFn.TimerParam(FORGET)):
        path, metadata = keyed
        key = json.dumps(ledger.entry_key(path, metadata.size_in_bytes, metadata.last_updated_in_seconds))
        if version.read() == key:
            return
        version.write(key)
        forgetting.clear()
        forget.set(timestamp + Duration.of(self._forget_after))
        self._found.inc()
        progress.watch_state().found(path, metadata.last_updated_in_seconds)
        yield metadata

    @on_timer(FORGET)
    def forget_path(self, fired=beam.DoFn.TimestampParam, version=beam.DoFn.StateParam(VERSION),
                    forgetting=beam.DoFn.StateParam(FORGETTING), forget=beam.DoFn.TimerParam(FORGET)):
        if stop_requested(self._stop_marker) or fired.micros / 1e6 > time.time() + _AHEAD_SECONDS:
            return  # the watch is ending (a drain: the watermark jumps to the end of time): nothing to forget
        if forgetting.read():
            version.clear()
            forgetting.clear()
            return
        if self._held(version.read()):
            forgetting.write(True)
            forget.set(fired + Duration.of(2 * LEDGER_READ_SECONDS))
        else:  # not delivered yet (or no ledger): remembered for another while
            forget.set(fired + Duration.of(self._forget_after))

    def _held(self, key):
        if self._lookup is None or key is None:
            return False
        _, scope, destination = self._ledger
        return self._lookup.held(*json.loads(key), scope, destination) == ledger.RECORDED


@dataclass(frozen=True)
class WatchSettings:
    """What a watch lists and how often: `watched.patterns(full)` → the file patterns to list at a listing, a full
    one every `full_listing_interval` seconds (pipeline.partitions: --input patterns, or the hour partitions under
    --currents_root), every `interval` seconds from `start` (UNIX seconds), until `stop_marker` exists (written by
    the first Ctrl-C or SIGTERM); a path is remembered `forget_after` seconds, then until the ledger holds it."""

    watched: typing.Any
    interval: float
    start: float
    stop_marker: str
    full_listing_interval: float = DEFAULT_FULL_LISTING_SECONDS
    forget_after: float = FORGET_AFTER_SECONDS


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
                  | "List files" >> beam.ParDo(_ListFn(settings, self._files, *self._ledger)).with_output_types(
                      typing.Tuple[str, typing.Any]))  # keyed by path: a deterministic key coder for the state
        return listed | "Keep new versions" >> beam.ParDo(_NewVersionsFn(
            *self._ledger, settings.forget_after, settings.stop_marker))
