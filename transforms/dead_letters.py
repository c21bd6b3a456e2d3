"""Dead letters: what the pipeline could not send, with the reason, counted and written as JSONL.

Every letter has the same keys so that it can be filtered with one query and replayed later:
reason, event_type, source_file, message_id, http_status, response_excerpt, error, message (the
Segment call exactly as it would have been sent) and record (the Currents record, for records that
could not be mapped). A file that could not be decoded also says how many events were read from it
before the error.

The reasons are named in transforms.elements. Each run writes its own files,
`dead_letters-<run id>-<part>.jsonl`, one per bundle and checkpoint that had letters.
"""
import json

import apache_beam as beam

from transforms import jsonl, metrics
from transforms.checkpoints import DEFAULT_CHECKPOINT_SECONDS
from transforms.elements import UNREADABLE_FILE, handled
_ERROR_CHARS = 500


def _letter(reason, event_type, source_file, **fields):
    letter = {
        "reason": reason, "event_type": event_type, "source_file": source_file, "message_id": None,
        "http_status": None, "response_excerpt": None, "error": None, "message": None, "record": None,
    }
    letter.update(fields)
    return letter


def _describe(error):
    """An exception as "Type: message", or a text as it is, cut to _ERROR_CHARS."""
    return (error if isinstance(error, str) else f"{type(error).__name__}: {error}")[:_ERROR_CHARS]


def event_letter(event, reason, *, http_status=None, response_excerpt=None, error=None):
    """Dead letter of a SegmentEvent that was not accepted."""
    return _letter(reason, event.event_type, event.source_file, message_id=event.message_id,
                   http_status=http_status, response_excerpt=response_excerpt, error=error,
                   message=json.loads(event.payload))


def record_letter(event, reason, error):
    """Dead letter of a CurrentsEvent that could not be decoded or mapped to a track call (error: an exception or
    a text)."""
    return _letter(reason, event.event_type, event.source_file, error=_describe(error),
                   record=dict(event.record))


def file_letter(path, event_type, error, events_read):
    """Dead letter of a file that could not be decoded (wholly or from some point on)."""
    return _letter(UNREADABLE_FILE, event_type, path, error=_describe(error), events_read_before_error=events_read)


def _to_line(letter):
    """(what the letter accounts for, its JSON line): one unit of its source file, of this kind of letter."""
    kind = (letter["source_file"], letter["event_type"], letter["reason"] == UNREADABLE_FILE)
    return ((kind, 1),), json.dumps(letter, ensure_ascii=False, default=repr)


class _CountWrittenFn(beam.DoFn):
    """Counts the letters whose file is complete (unreadable parts of files, or dead-lettered events per
    event type) and hands their units in: ((source file, event type, unreadable), n) → (source file, n)."""

    def setup(self):
        self._dead_lettered = metrics.TypeCounter(metrics.DEAD_LETTERED)
        self._unreadable_files = metrics.counter(metrics.UNREADABLE_FILES)

    def process(self, written):
        (source_file, event_type, unreadable), n = written
        if unreadable:
            self._unreadable_files.inc(n)
        else:
            self._dead_lettered.inc(event_type, n)
        yield handled(source_file, n)


class WriteDeadLetters(beam.PTransform):
    """Write dead letters as this run's `dead_letters-<run id>-<part>.jsonl` files under a directory (none
    when there are none), and count them once written; returns the (source file, units) they account for,
    emitted once the files holding them are complete."""

    def __init__(self, output_dir, run_id, checkpoint_seconds=DEFAULT_CHECKPOINT_SECONDS):
        super().__init__()
        self._output_dir = output_dir
        self._run_id = run_id
        self._checkpoint_seconds = checkpoint_seconds

    def expand(self, letters):
        return (letters
                | "To JSON lines" >> beam.Map(_to_line)
                | "Write JSONL" >> jsonl.WriteJsonLines(self._output_dir, jsonl.DEAD_LETTERS, self._run_id,
                                                        "dead letters", self._checkpoint_seconds)
                | "Count written" >> beam.ParDo(_CountWrittenFn()))
