"""Route: split events into one tagged output per catalog family; count and drop unmapped types."""
import apache_beam as beam

from transforms import metrics
from transforms.catalog import FAMILIES, spec_for


class _RouteFn(beam.DoFn):
    def setup(self):
        self._unsupported = metrics.TypeCounter(metrics.UNSUPPORTED_EVENT_TYPE)

    def process(self, event):
        spec = spec_for(event.event_type)
        if spec is None:
            self._unsupported.inc(event.event_type)
        else:
            yield beam.pvalue.TaggedOutput(spec.family, event)


class SplitByFamily(beam.PTransform):
    """Split CurrentsEvents by family; returns a DoOutputsTuple with one output per FAMILIES entry."""

    def expand(self, events):
        return events | "Route by family" >> beam.ParDo(_RouteFn()).with_outputs(*FAMILIES)
