"""Write: send each batch to Segment's /v1/batch, or write its exact request body in a dry run.

The HTTP work (session, retries, splitting on 400) belongs to SegmentClient; this module only maps
its report onto counters and dead letters. A bundle ends only after every event in it was accepted
or dead-lettered, because `send` is synchronous. A configuration error (401/403/404) raises
SegmentConfigError and fails the run.
"""
import collections
import datetime

import apache_beam as beam

from transforms import dead_letters, metrics, write_key
from transforms.jsonl import write_jsonl
from transforms.elements import DEAD_LETTER
from transforms.segment_client import SegmentClient, format_sent_at, request_body


class _BatchFn(beam.DoFn):
    """Shared counters of the two ways to deliver a batch."""

    def setup(self):
        self._sent = metrics.TypeCounter(metrics.SENT)
        self._requests = metrics.counter(metrics.REQUESTS)
        self._retries = metrics.counter(metrics.RETRIES)
        self._retries_exhausted = metrics.counter(metrics.RETRIES_EXHAUSTED)

    def _count_sent(self, events):
        for event_type, n in collections.Counter(e.event_type for e in events).items():
            self._sent.inc(event_type, n)


class _PostBatchFn(_BatchFn):
    """POST one batch; accepted events are counted as sent, rejected ones become dead letters.

    The write key is resolved here, on the worker, from the KeySource in the client settings.
    """

    def __init__(self, client_settings):
        super().__init__()
        self._client_settings = client_settings
        self._client = None

    def setup(self):
        super().setup()
        settings = dict(self._client_settings)
        settings["write_key"] = write_key.resolve(settings.pop("key_source"))
        self._client = SegmentClient(**settings)

    def process(self, batch):
        report = self._client.send([event.payload for event in batch])
        self._requests.inc(report.requests)
        self._retries.inc(report.retries)
        self._count_sent([batch[i] for i in report.accepted])
        for rejection in report.rejected:
            if rejection.reason == "retries_exhausted":
                self._retries_exhausted.inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letters.event_letter(
                batch[rejection.index], rejection.reason, http_status=rejection.status,
                response_excerpt=rejection.response_excerpt))

    def teardown(self):
        if self._client is not None:
            self._client.close()


class _DryRunBodyFn(_BatchFn):
    """The exact body that would be POSTed for one batch (with an empty write key)."""

    def process(self, batch):
        self._requests.inc()
        self._count_sent(batch)
        sent_at = format_sent_at(datetime.datetime.now(datetime.timezone.utc))
        yield request_body([event.payload for event in batch], "", sent_at).decode("utf-8")


class WriteToSegment(beam.PTransform):
    """Deliver batches of SegmentEvents; returns the PCollection of dead letters.

    With `dry_run_output`, request bodies are written as JSONL files `requests-*.jsonl` under that
    directory instead of being sent, and `client_settings` is not used.
    """

    def __init__(self, client_settings=None, dry_run_output=None):
        super().__init__()
        self._client_settings = client_settings
        self._dry_run_output = dry_run_output

    def expand(self, batches):
        if self._dry_run_output:
            bodies = batches | "Request bodies" >> beam.ParDo(_DryRunBodyFn()).with_outputs(
                DEAD_LETTER, main="bodies")
            _ = bodies.bodies | "Write bodies" >> write_jsonl(self._dry_run_output, "requests")
            return bodies[DEAD_LETTER]
        posted = batches | "POST /v1/batch" >> beam.ParDo(_PostBatchFn(self._client_settings)).with_outputs(
            DEAD_LETTER, main="accepted")
        return posted[DEAD_LETTER]
