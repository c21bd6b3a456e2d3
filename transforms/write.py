"""Write: send each REQUEST item (see transforms.elements) to Segment's /v1/batch, or write its exact request
body in a dry run.

The HTTP work (session, retries, splitting on 400) belongs to SegmentClient; this module only maps its report
onto counters, HANDLED items for the events Segment accepted (in a dry run: whose request bodies are durably
written) and LETTER items for the others. A bundle ends only after every event in it was accepted or
dead-lettered, because `send` is synchronous. A configuration error (401/403/404) raises SegmentConfigError and
fails the run. Every other item passes on.
"""
import collections
import datetime

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindows

from transforms import elements, jsonl, metrics, progress, segment_client, write_key
from transforms.elements import REJECTED_BY_SEGMENT, REQUEST, RETRIES_EXHAUSTED, ItemFn
from transforms.flush_timer import DEFAULT_FLUSH_SECONDS, FlushTimer
from transforms.segment_client import format_sent_at, request_body


def _accounts(calls):
    """((event type, source file), events) pairs of a request's calls."""
    return collections.Counter((event_type, source_file) for event_type, source_file, _, _ in calls).items()


class _DeliverFn(ItemFn):
    """The counters shared by the two ways to deliver a REQUEST."""

    KINDS = (REQUEST,)

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

    def _delivered(self, accounts):
        """Count delivered events per type, and hand them in."""
        for (event_type, source_file), n in accounts:
            self._sent.inc(event_type, n)
            yield elements.handled(event_type, source_file, n)


class _PostRequestFn(_DeliverFn):
    """POST one request; accepted events are counted as sent and handed in, rejected ones become LETTERs.

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

    def handle(self, item):
        _, _, calls = item
        report = self._client.send([payload for _, _, _, payload in calls])
        yield from self._delivered(_accounts([calls[i] for i in report.accepted]))
        if not report.rejected:
            return
        self._letters.inc(len(report.rejected))
        for rejection in report.rejected:
            if rejection.reason == RETRIES_EXHAUSTED:
                self._retries_exhausted.inc()
            elif rejection.reason == REJECTED_BY_SEGMENT:
                self._rejected.inc()
            event_type, source_file, message_id, payload = calls[rejection.index]
            yield elements.letter_item(elements.call_letter(
                event_type, source_file, message_id, payload, rejection.reason, http_status=rejection.status,
                response_excerpt=rejection.response_excerpt))

    def teardown(self):
        if self._client is not None:
            self._client.close()


class _WriteRequestBodyFn(_DeliverFn):
    """Dry run: the exact body that would be POSTed for one REQUEST (with an empty write key), as a line of this
    bundle's request files; once a file is committed (every flush and at the end of the bundle), its events are
    counted as sent and handed in."""

    def __init__(self, directory, run_id, progress_settings, flush_seconds):
        super().__init__(progress_settings)
        self._args = (directory, jsonl.REQUESTS, run_id, "dry-run requests")
        self._flush_seconds = flush_seconds
        self._lines = self._flushes = None

    def start_bundle(self):
        self._lines = jsonl.AccountedLines(*self._args)
        self._flushes = FlushTimer(self._flush_seconds)

    def handle(self, item):
        _, _, calls = item
        self._requests.inc()
        sent_at = format_sent_at(datetime.datetime.now(datetime.timezone.utc))
        body = request_body([payload for _, _, _, payload in calls], "", sent_at).decode("utf-8")
        self._lines.write(body, _accounts(calls))
        yield from self.tick()

    def tick(self):
        if self._flushes.due():
            yield from self._delivered(self._lines.commit())

    def finish_bundle(self):
        for item in self._delivered(self._lines.commit()):
            yield GlobalWindows.windowed_value(item)


class WriteToSegment(beam.PTransform):
    """Items → items with each REQUEST delivered with a SegmentClient built from `client_settings` and the key of
    `key_source` (HANDLED for what Segment accepted, LETTER for the rest).

    The clients of one process share a segment_client.Breaker per run (`run_id`) and endpoint. With
    `dry_run_output`, request bodies are written as this run's `requests-<run id>-*.jsonl` files under that
    directory instead of being sent (made final every `flush_seconds`), and no client is built.
    """

    def __init__(self, client_settings=None, key_source=None, *, dry_run_output=None, run_id=None,
                 progress_settings=progress.ProgressSettings(), flush_seconds=DEFAULT_FLUSH_SECONDS):
        super().__init__()
        self._flush_seconds = flush_seconds
        self._client_settings = client_settings
        self._key_source = key_source
        self._dry_run_output = dry_run_output
        self._run_id = run_id
        self._progress_settings = progress_settings

    def expand(self, items):
        if self._dry_run_output:
            return items | "Write request bodies" >> beam.ParDo(_WriteRequestBodyFn(
                self._dry_run_output, self._run_id, self._progress_settings, self._flush_seconds))
        return items | "POST /v1/batch" >> beam.ParDo(
            _PostRequestFn(self._client_settings, self._key_source, self._progress_settings, self._run_id))
