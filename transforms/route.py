"""Route: split events into one tagged output per catalog family; count unmapped types, which are
accounted for on the HANDLED output."""
import apache_beam as beam

from transforms import metrics
from transforms.catalog import FAMILIES, spec_for
from transforms.elements import HANDLED, handled


class _RouteFn(beam.DoFn):
    def setup(self):
        self._unsupported = metrics.TypeCounter(metrics.UNSUPPORTED_EVENT_TYPE)

    def process(self, event):
        spec = spec_for(event.event_type)
        if spec is None:
            self._unsupported.inc(event.event_type)
            yield beam.pvalue.TaggedOutput(HANDLED, handled(event.source_file))
        else:
            yield beam.pvalue.TaggedOutput(spec.family, event)


class SplitByFamily(beam.PTransform):
    """Split CurrentsEvents by family; returns a DoOutputsTuple with one output per FAMILIES entry, and
    HANDLED for the events of types Segment is not sent."""

    def expand(self, events):
        return events | "Route by family" >> beam.ParDo(_RouteFn()).with_outputs(*FAMILIES, HANDLED)
