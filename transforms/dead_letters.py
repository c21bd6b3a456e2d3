"""Dead letters: write each LETTER item (see transforms.elements) as a JSON line of this run's dead-letter files,
count it once its file is complete, and hand its unit in; every other item passes on.

Every letter has the same keys so that it can be filtered with one query and replayed later (see
elements.letter). Each run writes its own files, `dead_letters-<run id>-<part>.jsonl`, one per bundle and flush
that had letters, in every chain that had some (a chain per family branch).
"""
import json

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindows

from transforms import elements, jsonl, metrics
from transforms.elements import LETTER, UNREADABLE_FILE, ItemFn
from transforms.flush_timer import DEFAULT_FLUSH_SECONDS, FlushTimer


def to_line(letter):
    """The JSON line of a letter."""
    return json.dumps(letter, ensure_ascii=False, default=repr)


class _WriteLettersFn(ItemFn):
    """LETTER → a line of this bundle's dead-letter files, one committed every flush and at the end of the
    bundle; once committed, each letter is counted (an unreadable part of a file, or a dead-lettered event of
    its type) and its unit handed in."""

    KINDS = (LETTER,)

    def __init__(self, directory, run_id, flush_seconds):
        super().__init__()
        self._args = (directory, jsonl.DEAD_LETTERS, run_id, "dead letters")
        self._flush_seconds = flush_seconds
        self._lines = self._flushes = None

    def setup(self):
        self._dead_lettered = metrics.TypeCounter(metrics.DEAD_LETTERED)
        self._unreadable_files = metrics.counter(metrics.UNREADABLE_FILES)

    def start_bundle(self):
        self._lines = jsonl.AccountedLines(*self._args)
        self._flushes = FlushTimer(self._flush_seconds)

    def handle(self, item):
        _, event_type, source_file, letter = item
        self._lines.write(to_line(letter), (((event_type, source_file, letter["reason"] == UNREADABLE_FILE), 1),))
        yield from self.tick()

    def tick(self):
        if self._flushes.due():
            yield from self._committed()

    def _committed(self):
        for (event_type, source_file, unreadable), n in self._lines.commit():
            if unreadable:
                self._unreadable_files.inc(n)
            else:
                self._dead_lettered.inc(event_type, n)
            yield elements.handled(event_type, source_file, n)

    def finish_bundle(self):
        for item in self._committed():
            yield GlobalWindows.windowed_value(item)


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
