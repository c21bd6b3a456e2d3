"""Route: split events into one tagged output per family of the mapping; count the types the mapping does not
send, which are accounted for on the HANDLED output."""
import apache_beam as beam

from transforms import metrics
from transforms.elements import HANDLED, handled


class _RouteFn(beam.DoFn):
    def __init__(self, mapping):
        super().__init__()
        self._mapping = mapping

    def setup(self):
        self._unsupported = metrics.TypeCounter(metrics.UNSUPPORTED_EVENT_TYPE)

    def process(self, event):
        spec = self._mapping.spec_for(event.event_type)
        if spec is None:
            self._unsupported.inc(event.event_type)
            yield beam.pvalue.TaggedOutput(HANDLED, handled(event.source_file))
        else:
            yield beam.pvalue.TaggedOutput(spec.family, event)


class SplitByFamily(beam.PTransform):
    """Split CurrentsEvents by the family a catalog.Mapping gives their type; returns a DoOutputsTuple with one
    output per family of the mapping, and HANDLED for the events of types it does not send."""

    def __init__(self, mapping):
        super().__init__()
        self._mapping = mapping

    def expand(self, events):
        return events | "Route by family" >> beam.ParDo(_RouteFn(self._mapping)).with_outputs(
            *self._mapping.families, HANDLED)
