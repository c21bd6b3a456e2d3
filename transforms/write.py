"""Write: send each batch to Segment's /v1/batch, or write its exact request body in a dry run.

The HTTP work (session, retries, splitting on 400) belongs to SegmentClient; this module only maps
its report onto counters, dead letters and what was delivered. A bundle ends only after every event
in it was accepted or dead-lettered, because `send` is synchronous. A configuration error
(401/403/404) raises SegmentConfigError and fails the run.

WriteToSegment returns DELIVERED, (source file, events) for the events Segment accepted (in a dry run:
whose request bodies are durably written), and DEAD_LETTER for the others.
"""
import collections
import datetime

import apache_beam as beam

from transforms import dead_letters, jsonl, metrics, progress, segment_client, write_key
from transforms.checkpoints import DEFAULT_CHECKPOINT_SECONDS
from transforms.elements import DEAD_LETTER, REJECTED_BY_SEGMENT, RETRIES_EXHAUSTED, handled
from transforms.segment_client import format_sent_at, request_body

DELIVERED = "delivered"


def _accounts(events):
    """(source file, events) pairs of a list of SegmentEvents."""
    return tuple(collections.Counter(event.source_file for event in events).items())


class _BatchFn(beam.DoFn):
    """Shared counters of the two ways to deliver a batch."""

    def __init__(self, progress_settings):
        super().__init__()
        self._progress_settings = progress_settings

    def setup(self):
        self._sent = metrics.TypeCounter(metrics.SENT)
        self._requests = metrics.counter(metrics.REQUESTS)
        self._retries = metrics.counter(metrics.RETRIES)
        self._retries_exhausted = metrics.counter(metrics.RETRIES_EXHAUSTED)
        self._rejected = metrics.counter(metrics.REJECTED_BY_SEGMENT)
        self._letters = metrics.counter(metrics.DEAD_LETTERS_MADE)
        self._progress = progress.reporter(self._progress_settings)

    def _count_sent(self, events):
        for event_type, n in collections.Counter(e.event_type for e in events).items():
            self._sent.inc(event_type, n)


class _PostBatchFn(_BatchFn):
    """POST one batch; accepted events are counted as sent and DELIVERED, rejected ones become dead letters.

    The write key is resolved here, on the worker, from its KeySource.
    """

    def __init__(self, client_settings, key_source, progress_settings, run_id):
        super().__init__(progress_settings)
        self._client_settings = client_settings
        self._key_source = key_source
        self._run_id = run_id
        self._client = None

    def setup(self):
        super().setup()
        # The clients of this process that send to one endpoint in this run share one breaker: an outage costs
        # one budget.
        self._client = self._client_settings.client(
            write_key.resolve(self._key_source), observer=self._observe,
            breaker=segment_client.shared_breaker(f"{self._run_id} {self._client_settings.endpoint}"))

    def _observe(self, attempt):
        """Count each HTTP attempt as it happens (for live progress), and tell the progress reporter."""
        self._requests.inc()
        if attempt.retrying:
            self._retries.inc()
        self._progress.observe(attempt)

    def process(self, batch):
        report = self._client.send([event.payload for event in batch])
        accepted = [batch[i] for i in report.accepted]
        self._count_sent(accepted)
        for source_file, n in _accounts(accepted):
            yield beam.pvalue.TaggedOutput(DELIVERED, handled(source_file, n))
        self._letters.inc(len(report.rejected))
        for rejection in report.rejected:
            if rejection.reason == RETRIES_EXHAUSTED:
                self._retries_exhausted.inc()
            elif rejection.reason == REJECTED_BY_SEGMENT:
                self._rejected.inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letters.event_letter(
                batch[rejection.index], rejection.reason, http_status=rejection.status,
                response_excerpt=rejection.response_excerpt))

    def teardown(self):
        if self._client is not None:
            self._client.close()


class _DryRunBodyFn(_BatchFn):
    """(what its events account for, the exact body that would be POSTed) for one batch, with an empty write key."""

    def process(self, batch):
        self._requests.inc()
        sent_at = format_sent_at(datetime.datetime.now(datetime.timezone.utc))
        kinds = collections.Counter((event.source_file, event.event_type) for event in batch)
        yield tuple(kinds.items()), request_body([event.payload for event in batch], "", sent_at).decode("utf-8")


class _CountWrittenBodiesFn(beam.DoFn):
    """((source file, event type), n) of request bodies durably written → counted as sent, and DELIVERED."""

    def setup(self):
        self._sent = metrics.TypeCounter(metrics.SENT)

    def process(self, written):
        (source_file, event_type), n = written
        self._sent.inc(event_type, n)
        yield handled(source_file, n)


class WriteToSegment(beam.PTransform):
    """Deliver batches of SegmentEvents with a SegmentClient built from `client_settings` and the key of
    `key_source`; returns a dict with DELIVERED and DEAD_LETTER.

    The clients of one process share a segment_client.Breaker per run (`run_id`) and endpoint. With
    `dry_run_output`, request bodies are written as this run's `requests-<run id>-*.jsonl` files under that
    directory instead of being sent, and no client is built.
    """

    def __init__(self, client_settings=None, key_source=None, *, dry_run_output=None, run_id=None,
                 progress_settings=progress.ProgressSettings(), checkpoint_seconds=DEFAULT_CHECKPOINT_SECONDS):
        super().__init__()
        self._checkpoint_seconds = checkpoint_seconds
        self._client_settings = client_settings
        self._key_source = key_source
        self._dry_run_output = dry_run_output
        self._run_id = run_id
        self._progress_settings = progress_settings

    def expand(self, batches):
        if self._dry_run_output:
            written = (batches
                       | "Request bodies" >> beam.ParDo(_DryRunBodyFn(self._progress_settings))
                       | "Write bodies" >> jsonl.WriteJsonLines(self._dry_run_output, jsonl.REQUESTS, self._run_id,
                                                                "dry-run requests", self._checkpoint_seconds)
                       | "Count written" >> beam.ParDo(_CountWrittenBodiesFn()))
            return {DELIVERED: written, DEAD_LETTER: batches.pipeline | "No dead letters" >> beam.Create([])}
        posted = batches | "POST /v1/batch" >> beam.ParDo(
            _PostBatchFn(self._client_settings, self._key_source, self._progress_settings, self._run_id)).with_outputs(
                DEAD_LETTER, DELIVERED, main="responses")
        return {DELIVERED: posted[DELIVERED], DEAD_LETTER: posted[DEAD_LETTER]}
