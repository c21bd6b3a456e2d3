"""Route: split items (see transforms.elements) into one tagged output per family of the mapping, by their event
type; the records of types the mapping does not send are counted (unsupported_event_type) and handed in, and
they and every other item of such a type (or of none: a file whose type could not be read) go to UNSUPPORTED.
Every `flush_seconds` a TICK goes down every output, so that each chain makes final what it holds in time."""
import apache_beam as beam

from transforms import elements, metrics
from transforms.elements import RECORDS
from transforms.flush_timer import DEFAULT_FLUSH_SECONDS, FlushTimer

UNSUPPORTED = "unsupported"


class _RouteFn(beam.DoFn):
    def __init__(self, mapping, flush_seconds):
        super().__init__()
        self._mapping = mapping
        self._flush_seconds = flush_seconds
        self._flushes = None

    def setup(self):
        self._unsupported = metrics.TypeCounter(metrics.UNSUPPORTED_EVENT_TYPE)

    def start_bundle(self):
        self._flushes = FlushTimer(self._flush_seconds)

    def process(self, item):
        if self._flushes.due():
            for output in (*self._mapping.families, UNSUPPORTED):
                yield beam.pvalue.TaggedOutput(output, elements.tick())
        event_type = elements.event_type_of(item)
        spec = self._mapping.spec_for(event_type) if event_type else None
        if spec is not None:
            yield beam.pvalue.TaggedOutput(spec.family, item)
        elif elements.kind(item) == RECORDS:
            _, _, source_file, block = item
            self._unsupported.inc(event_type, len(block))
            yield beam.pvalue.TaggedOutput(UNSUPPORTED, elements.handled(event_type, source_file, len(block)))
        else:
            yield beam.pvalue.TaggedOutput(UNSUPPORTED, item)


class SplitByFamily(beam.PTransform):
    """Split items by the family a catalog.Mapping gives their event type; returns a DoOutputsTuple with one
    output per family of the mapping, and UNSUPPORTED; each gets a TICK every `flush_seconds`."""

    def __init__(self, mapping, flush_seconds=DEFAULT_FLUSH_SECONDS):
        super().__init__()
        self._mapping = mapping
        self._flush_seconds = flush_seconds

    def expand(self, items):
        return items | "Route by family" >> beam.ParDo(_RouteFn(self._mapping, self._flush_seconds)).with_outputs(
            *self._mapping.families, UNSUPPORTED)
