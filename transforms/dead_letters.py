"""Dead letters: write each LETTER item (see transforms.elements) as a JSON line of this run's dead-letter files,
count it once its file is complete, and hand its unit in; every other item passes on.

Every letter has the same keys so that it can be filtered with one query and replayed later (see
elements.letter). Each run writes its own files, `dead_letters-<run id>-<part>.jsonl`, one per bundle and flush
that had letters, in every chain that had some (a chain per family branch).
"""
import json

import apache_beam as beam

from transforms import elements, jsonl, metrics
from transforms.elements import LETTER, UNREADABLE_FILE
from transforms.flush_timer import DEFAULT_FLUSH_SECONDS


def to_line(letter):
    """The JSON line of a letter."""
    return json.dumps(letter, ensure_ascii=False, default=repr)


class _WriteLettersFn(jsonl.LinesFn):
    """LETTER → a line of this bundle's dead-letter files; once committed, each letter is counted (an unreadable
    part of a file, or a dead-lettered event of its type) and its unit handed in."""

    KINDS = (LETTER,)

    def __init__(self, directory, run_id, flush_seconds):
        super().__init__(directory, jsonl.DEAD_LETTERS, run_id, "dead letters", flush_seconds)

    def setup(self):
        self._dead_lettered = metrics.TypeCounter(metrics.DEAD_LETTERED)
        self._unreadable_files = metrics.counter(metrics.UNREADABLE_FILES)

    def line(self, item):
        _, event_type, source_file, letter = item
        return to_line(letter), (((event_type, source_file, letter["reason"] == UNREADABLE_FILE), 1),)

    def committed(self, key, units):
        event_type, source_file, unreadable = key
        if unreadable:
            self._unreadable_files.inc(units)
        else:
            self._dead_lettered.inc(event_type, units)
        yield elements.handled(event_type, source_file, units)


class WriteDeadLetters(beam.PTransform):
    """Items → items with each LETTER written as a line of this run's `dead_letters-<run id>-<part>.jsonl` files
    under a directory (none when there are none), made final every `flush_seconds` and at the end of each
    bundle, then counted and handed in (HANDLED)."""

    def __init__(self, output_dir, run_id, flush_seconds=DEFAULT_FLUSH_SECONDS):
        super().__init__()
        self._output_dir = output_dir
        self._run_id = run_id
        self._flush_seconds = flush_seconds

    def expand(self, items):
        return items | "Write letters" >> beam.ParDo(_WriteLettersFn(self._output_dir, self._run_id,
                                                                     self._flush_seconds))
