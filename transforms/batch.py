"""Batch: group serialized events into Segment requests bounded by exact body size and event count.

Events are windowed by event time (fixed windows) and spread over a few shards per window; each
(window, shard) group is then cut greedily into requests. A request's size is known exactly before
it is built: envelope + payloads + one comma between each two payloads (see `plan_batches`).
Python's GroupIntoBatches bounds only the count, and BatchElements only the bytes; this bounds both.

Events with the same messageId (Currents delivers at least once, in the same file or in others) have
the same `time` and shard, so they meet in one group: each one after the first is counted as a
duplicate id. Both are sent; Segment deduplicates them.
"""
import zlib

import apache_beam as beam
from apache_beam.transforms import window

from transforms import metrics
from transforms.segment_client import plan_batches


def shard_of(message_id, shards):
    """A shard number stable across processes (str hash() is salted per process)."""
    return zlib.crc32(message_id.encode("utf-8")) % shards


class GroupIntoSegmentBatches(beam.PTransform):
    """SegmentEvents stamped with event time → lists of SegmentEvents, one list per request."""

    def __init__(self, *, window_seconds, max_bytes, max_events, envelope, shards):
        super().__init__()
        self._window_seconds = window_seconds
        self._limits = {"max_bytes": max_bytes, "max_events": max_events, "envelope": envelope}
        self._shards = shards

    def expand(self, events):
        shards = self._shards
        return (events
                | "Event-time windows" >> beam.WindowInto(window.FixedWindows(self._window_seconds))
                | "Key by shard" >> beam.Map(lambda event: (shard_of(event.message_id, shards), event))
                | "Group per window and shard" >> beam.GroupByKey()
                | "Cut into requests" >> beam.ParDo(_CutFn(self._limits))
                # Windows only decide which events may share a request; what follows is global.
                | "Back to one window" >> beam.WindowInto(window.GlobalWindows()))


class _CutFn(beam.DoFn):
    """(shard, events of one window) → lists of events, one per request; counts duplicate ids."""

    def __init__(self, limits):
        super().__init__()
        self._limits = limits

    def setup(self):
        self._duplicates = metrics.counter(metrics.DUPLICATE_IDS)

    def process(self, keyed_group):
        events = list(keyed_group[1])
        duplicates = len(events) - len({event.message_id for event in events})
        if duplicates:
            self._duplicates.inc(duplicates)
        for batch in plan_batches([len(e.payload) for e in events], **self._limits):
            yield events[batch.start:batch.stop]

