"""The run summary, from Beam metrics: totals, per event type, a printed table and a JSON file.

The totals balance: events_read = dropped_no_external_id + unsupported_event_type + sent + dead_lettered.
"""
import collections
import json

from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter

from transforms import ledger, metrics

_TOTALS = (metrics.READ, metrics.DROPPED_NO_EXTERNAL_ID, metrics.UNSUPPORTED_EVENT_TYPE, metrics.SENT,
           metrics.DEAD_LETTERED, metrics.OUTSIDE_TIME_RANGE)
_PER_TYPE_KEYS = (metrics.READ, metrics.DROPPED_NO_EXTERNAL_ID, metrics.SENT, metrics.DEAD_LETTERED)


def counters_of(result):
    """The pipeline's counters as {name: value}, summed over steps (committed where the runner has it)."""
    counters = collections.Counter()
    query = result.metrics().query(MetricsFilter().with_namespace(metrics.NAMESPACE))
    for counter in query["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        counters[counter.key.metric.name] += value or 0
    return counters


def summarize(counters, *, by_event_time=False, with_ledger=False):
    """Build the summary dict from counter values.

    With by_event_time it also has `outside_time_range` (events read from late partitions whose time
    is outside the range); with a ledger, `ledger` (files skipped as already sent, files recorded).
    """
    totals = collections.Counter()
    by_type = collections.defaultdict(lambda: dict.fromkeys(_PER_TYPE_KEYS, 0))
    for name, value in counters.items():
        metric, _, event_type = name.partition(":")
        if metric in _TOTALS and event_type:
            totals[metric] += value
            if metric in _PER_TYPE_KEYS:
                by_type[event_type][metric] += value
    summary = {
        "events_read": totals[metrics.READ],
        "dropped_no_external_id": totals[metrics.DROPPED_NO_EXTERNAL_ID],
        "unsupported_event_type": totals[metrics.UNSUPPORTED_EVENT_TYPE],
        "sent": totals[metrics.SENT],
        "dead_lettered": totals[metrics.DEAD_LETTERED],
        "unreadable_files": counters.get(metrics.UNREADABLE_FILES, 0),
        "requests": counters.get(metrics.REQUESTS, 0),
        "by_event_type": {event_type: by_type[event_type] for event_type in sorted(by_type)},
    }
    if by_event_time:
        summary["outside_time_range"] = totals[metrics.OUTSIDE_TIME_RANGE]
    if with_ledger:
        summary["ledger"] = {"files_skipped": counters.get(ledger.FILES_SKIPPED, 0),
                             "files_recorded": counters.get(ledger.FILES_RECORDED, 0)}
    return summary


def is_balanced(summary):
    """True when every event read is accounted for exactly once."""
    return summary["events_read"] == (summary["dropped_no_external_id"] + summary["unsupported_event_type"]
                                      + summary["sent"] + summary["dead_lettered"]
                                      + summary.get("outside_time_range", 0))


def format_table(summary):
    """The summary as a fixed-width text table: one row per event type, then the totals."""
    header = ("event type", "read", "no external id", "sent", "dead-lettered")
    rows = [(event_type, *(str(counts[key]) for key in _PER_TYPE_KEYS))
            for event_type, counts in summary["by_event_type"].items()]
    rows.append(("TOTAL", *(str(summary[key]) for key in
                            ("events_read", "dropped_no_external_id", "sent", "dead_lettered"))))
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in [header, *rows]]
    lines.insert(1, "-" * len(lines[0]))
    lines.append(f"unsupported event types: {summary['unsupported_event_type']}   "
                 f"unreadable files: {summary['unreadable_files']}   requests: {summary['requests']}   "
                 f"balanced: {'yes' if is_balanced(summary) else 'NO'}")
    if "outside_time_range" in summary:
        lines.append(f"outside the event-time range (late partitions): {summary['outside_time_range']}")
    if "ledger" in summary:
        lines.append(f"ledger: {summary['ledger']['files_skipped']} files skipped as already sent, "
                     f"{summary['ledger']['files_recorded']} recorded")
    return "\n".join(lines)


def write_json(path, summary):
    """Write the summary as JSON to a path on any Beam filesystem."""
    with FileSystems.create(path) as stream:
        stream.write(json.dumps(summary, indent=2, sort_keys=True).encode("utf-8"))
