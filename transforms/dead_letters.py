"""Dead letters: what the pipeline could not send, with the reason, counted and written as JSONL.

Every letter has the same keys so that it can be filtered with one query and replayed later:
reason, event_type, source_file, message_id, http_status, response_excerpt, error, message (the
Segment call exactly as it would have been sent) and record (the Currents record, for records that
could not be mapped). A file that could not be decoded also says how many events were read from it
before the error.
"""
import json

import apache_beam as beam

from transforms import metrics
from transforms.jsonl import write_jsonl

UNREADABLE_FILE = "unreadable_file"
_ERROR_CHARS = 500


def _letter(reason, event_type, source_file, **fields):
    letter = {
        "reason": reason, "event_type": event_type, "source_file": source_file, "message_id": None,
        "http_status": None, "response_excerpt": None, "error": None, "message": None, "record": None,
    }
    letter.update(fields)
    return letter


def _describe(error):
    return f"{type(error).__name__}: {error}"[:_ERROR_CHARS]


def event_letter(event, reason, *, http_status=None, response_excerpt=None, error=None):
    """Dead letter of a SegmentEvent that was not accepted."""
    return _letter(reason, event.event_type, event.source_file, message_id=event.message_id,
                   http_status=http_status, response_excerpt=response_excerpt, error=error,
                   message=json.loads(event.payload))


def record_letter(event, reason, error):
    """Dead letter of a CurrentsEvent that could not be mapped to a track call."""
    return _letter(reason, event.event_type, event.source_file, error=_describe(error),
                   record=dict(event.record))


def file_letter(path, event_type, error, events_read):
    """Dead letter of a file that could not be decoded (wholly or from some point on)."""
    return _letter(UNREADABLE_FILE, event_type, path, error=_describe(error), events_read_before_error=events_read)


class _CountFn(beam.DoFn):
    """Counts each letter: unreadable files, or dead-lettered events per event type."""

    def setup(self):
        self._dead_lettered = metrics.TypeCounter(metrics.DEAD_LETTERED)
        self._unreadable_files = metrics.counter(metrics.UNREADABLE_FILES)

    def process(self, letter):
        if letter["reason"] == UNREADABLE_FILE:
            self._unreadable_files.inc()
        else:
            self._dead_lettered.inc(letter["event_type"])
        yield json.dumps(letter, ensure_ascii=False, default=repr)


class WriteDeadLetters(beam.PTransform):
    """Count dead letters and write them as JSONL files `dead_letters-*.jsonl` under a directory (none
    when there are no dead letters); returns the names of the files written."""

    def __init__(self, output_dir):
        super().__init__()
        self._output_dir = output_dir

    def expand(self, letters):
        return (letters
                | "Count" >> beam.ParDo(_CountFn())
                | "Write JSONL" >> write_jsonl(self._output_dir, "dead_letters"))
