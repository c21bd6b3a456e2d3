"""Deliver one family's files to Segment: `DeliverToSegment[<family>]` in the job graph.

    CurrentsFile → decode → keep users with an id (and events in range) → map → cut into requests → send
                 → dead letters → the file, once every unit of it is accounted for (for the ledger)

The work is a transforms.delivery.Delivery (Beam-free) per DoFn instance, handed one file at a time in `process`;
each file is finished in the bundle that read it (at the latest when the bundle ends, which waits for every answer),
so its output needs no join and the ledger records it as soon as it is finished. The
sending objects each process shares (the breaker, the pacer and the time throttled: a senders.ProcessSending) come
through Beam's `Shared`, one handle per job (see pipeline.assembly): every family's DoFns in a process use the
same ones, and a new job gets new ones.

Beam's counters can only be incremented from the DoFn's own thread: what the sending threads count is tallied at
once in this process and handed to Beam's counters from the DoFn's thread (`CountsFromThreads`). The time a worker
had requests held back (pacing, Retry-After, backoffs) is reported as Beam's `cumulativeThrottlingSeconds`,
which Dataflow's autoscaler reads.

In a watch (`stop_marker`), from a request's first failed attempt until Segment answers, `process` blocks before
reading the next file (and while sending), holding what it has not delivered, and this process lists no new file
(transforms.watch): the runner has none to give it (back-pressure). Once the process's breaker gives up on
Segment (after --max_outage_hours of outage, or when the stop marker of a drain appears during an outage), the stop
marker is written (the watch's listings end), what was not delivered is held back and left unrecorded, and the
pipeline ends as a drained watch does.
"""
import collections
import threading
from dataclasses import dataclass
from typing import Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils.shared import Shared

from currents_to_segment.transforms import jsonl, ledger, letters as dead_letters, metrics, progress, watch
from currents_to_segment.transforms.currents.catalog import Mapping
from currents_to_segment.transforms.currents.records import RecordFilter
from currents_to_segment.transforms.currents.track_calls import TrackSettings
from currents_to_segment.transforms.delivery import CurrentsFile, Delivery
from currents_to_segment.transforms.file_access import FileAccess
from currents_to_segment.transforms.progress import ProgressSettings
from currents_to_segment.transforms.segment import write_key
from currents_to_segment.transforms.segment.batching import BatchSettings
from currents_to_segment.transforms.segment.client import ClientSettings
from currents_to_segment.transforms.segment.pacing import OUTAGE_TOO_LONG
from currents_to_segment.transforms.senders import DryRunSender, ProcessSending, SegmentSender


@dataclass(frozen=True)
class DeliverySettings:  # pylint: disable=too-many-instance-attributes  # one place for what delivery needs
    """Everything a family's delivery is built from (pipeline.config builds it once, checked)."""

    track: TrackSettings  # how records become calls (its `mapping`: the catalog)
    record_filter: RecordFilter  # which records are sent
    batch: BatchSettings  # how calls are cut into requests
    client: Optional[ClientSettings]  # how requests are sent; None in a dry run
    key_source: Optional[write_key.KeySource]  # where the write key comes from, resolved on the worker
    dead_letter_output: str
    dry_run_output: Optional[str]  # a dry run writes request bodies here instead of sending them
    run_id: str
    progress: ProgressSettings = ProgressSettings()
    stop_marker: Optional[str] = None  # a watch's (see transforms.watch); None: a batch run

    @property
    def mapping(self) -> Mapping:
        return self.track.mapping


class CountsFromThreads:
    """Counters of a DoFn that works in threads of its own, where Beam's counters cannot be incremented (Beam keeps
    them per DoFn thread): `add` (from any thread) adds to this process's tally at once (for progress lines, and
    the summary of a run that stops) and keeps the count for Beam, which `flush` (from the DoFn's thread) gives to
    Beam's counters; `observe` likewise for values observed one by one (Beam's distributions: see
    metrics.observe_in_tally)."""

    def __init__(self, step=None):
        self._step = step  # the family's (see metrics.namespace)
        self._lock = threading.Lock()
        self._owed = collections.Counter()
        self._owed_values = []
        self._beam = {}
        self._observers = {}

    def add(self, name, n=1):
        metrics.add_to_tally(name, n)
        with self._lock:
            self._owed[name] += n

    def observe(self, name, value):
        metrics.observe_in_tally(name, value)
        with self._lock:
            self._owed_values.append((name, value))

    def flush(self):
        with self._lock:
            owed, self._owed = self._owed, collections.Counter()
            values, self._owed_values = self._owed_values, []
        for name, n in owed.items():
            beam_counter = self._beam.get(name)
            if beam_counter is None:
                beam_counter = self._beam[name] = metrics.beam_counter(name, self._step)
            beam_counter.inc(n)
        for name, value in values:
            observer = self._observers.get(name)
            if observer is None:
                observer = self._observers[name] = metrics.beam_observer(name, self._step)
            observer.update(value)


def _read_with_beam(path):
    """A file's bytes, from any Beam filesystem (a write key kept in a file)."""
    with FileSystems.open(path) as stream:
        return stream.read()


def _outage_hooks(settings):
    """What a watch's breaker is given (see pacing.Breaker): whether the watch is drained (its stop marker exists),
    and, when it gives up on Segment because the outage lasted too long, the stop marker written, so that the watch
    ends. Nothing for a batch run."""
    marker = settings.stop_marker
    if marker is None:
        return {}

    def on_give_up(reason):
        if reason == OUTAGE_TOO_LONG:
            watch.request_stop(marker)
    return {"stop_requested": lambda: watch.stop_requested(marker), "on_give_up": on_give_up}


class _DeliverFilesFn(beam.DoFn):
    """CurrentsFile → (path, size, modified) of the file once it is finished (see transforms.delivery); on a FLUSH
    from the route, what is held is sent and the files finished are handed on."""

    def __init__(self, settings, access, shared, family):
        super().__init__()
        self._settings = settings
        self._access = access
        self._shared = shared
        self._family = family
        self._delivery = self._sender = self._letters = None

    def setup(self):
        settings = self._settings
        self._counts = CountsFromThreads(self._family)
        reporter = progress.reporter(settings.progress)
        destination = None  # a dry run's letters say none
        if settings.dry_run_output:
            jsonl.remove_stale_temporaries(settings.dry_run_output, jsonl.REQUESTS)
            self._sender = DryRunSender(jsonl.PartFile(settings.dry_run_output, jsonl.REQUESTS, settings.run_id,
                                                       "dry-run requests"), self._counts.add)
        else:
            client = settings.client
            # Requests in flight for each family's delivery, and threads for them all: more deliveries at once (a
            # runner that runs bundles side by side) share those.
            threads = client.requests_in_flight * (len(settings.mapping.families) + 1)
            sending = self._shared.acquire(lambda: ProcessSending(client, threads, **_outage_hooks(settings)),
                                           tag=(settings.run_id, client.endpoint))
            self._sending = sending  # held: the process's objects live as long as a DoFn uses them
            if settings.stop_marker:  # a watch: its listings in this process wait while this breaker holds
                progress.watch_state().holds_with(settings.stop_marker, sending.breaker)
            key = write_key.resolve(settings.key_source, read_file=_read_with_beam)
            self._sender = SegmentSender(key, client, sending, self._counts.add, observer=reporter.observe,
                                         observe=self._counts.observe)
            # Where the events go, as the ledger says it (the key's fingerprint, never the key), in every letter.
            destination = dead_letters.destination(client.endpoint, ledger.key_fingerprint(key))
        # The temporaries of this host's writers that were killed (an interrupted run): nothing reads them.
        jsonl.remove_stale_temporaries(settings.dead_letter_output, jsonl.DEAD_LETTERS)
        self._letters = jsonl.AccountedLines(settings.dead_letter_output, jsonl.DEAD_LETTERS, settings.run_id,
                                             "dead letters")
        self._delivery = Delivery(
            track=settings.track, record_filter=settings.record_filter,
            batch=settings.batch, sender=self._sender, count=self._counts.add, observe=self._counts.observe,
            letters=self._letters, destination=destination)

    def process(self, file):
        file = CurrentsFile(*file)
        if file.path is None:  # FLUSH: send what is held, hand on what is finished
            try:
                finished = self._delivery.flush()
            finally:
                self._count()
        else:
            try:
                finished = self._delivery.deliver(file, lambda: self._access.open(file.path))
            finally:
                progress.watch_state().read(file.path)
                self._count()
        for done in finished:
            yield done.path, done.size, done.modified

    def _count(self):
        """Hand Beam what was counted so far, and the time throttled."""
        if not self._settings.dry_run_output:
            throttled = self._sending.throttled.take_whole_seconds()
            if throttled:
                self._counts.add(metrics.THROTTLING_SECONDS, throttled)
        self._counts.flush()

    def finish_bundle(self):
        try:
            finished = self._delivery.finish()
        finally:
            self._count()
        for done in finished:
            # At the start of time in the global window: what takes it (the ledger's writer) is a plain ParDo, which no
            # timestamp makes late.
            yield GlobalWindows.windowed_value((done.path, done.size, done.modified))

    def teardown(self):
        if self._letters is not None:  # letters never committed: their files are not finished, nor recorded
            self._letters.discard()
        if self._sender is not None:
            self._sender.close()


class DeliverToSegment(beam.PTransform):
    """CurrentsFile (of one family) → (path, size, modified) of each file once every event of it is delivered,
    dropped and counted, or durably dead-lettered; `shared`: the job's apache_beam.utils.shared.Shared handle for
    the sending objects of each process; `family`: the family it delivers, whose Beam counters are its own (see
    metrics.namespace)."""

    def __init__(self, settings, access=None, shared=None, family=None):
        super().__init__()
        self._settings = settings
        self._access = access or FileAccess()
        self._shared = shared if shared is not None else Shared()
        self._family = family

    def expand(self, files):
        return files | "Deliver files" >> beam.ParDo(_DeliverFilesFn(self._settings, self._access, self._shared,
                                                                     self._family))
