"""The run summary, from Beam metrics: totals, per event type, a printed table and a JSON file.

Every event read ends exactly once, so the totals balance, and so does each event type's row:
read = dropped_no_external_id + unsupported_event_type + sent + dead_lettered (+ outside_time_range
with --by_event_time, + dropped_no_id with --include_anonymous_users, + held_back with --watch). In a dry run, "sent"
means written to the dry-run requests: the table says "would send" and the JSON has "dry_run": true.

held_back (a watch only): events read from files the watch left unfinished when it gave up on Segment (down for
--max_outage_hours, or a drain during an outage), neither sent nor dead-lettered; those files, and the files it
did not read (`files_held_back` counts both), are not recorded in the ledger: the next watch reads them again.

What a run prints around the summary, and the exit status it gets, is pipeline.run_report's.
"""
import collections
import datetime
import json

from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter

from currents_to_segment.pipeline.report_page import TYPE_COLUMNS
from currents_to_segment.transforms import metrics

# Per-type metric → the summary's key for its total, and its column's header (one table: the report's).
_TOTAL_KEYS = {key: total for key, _, total in TYPE_COLUMNS}
_HEADERS = {key: header for key, header, _ in TYPE_COLUMNS}


def run_counters(result=None, tally_dir=None, failed=False):
    """The run's counters as {name: value}, from the one source that has them all; the choice is made here:

    1. this process's tally, when the SDK workers ran in this process (FnApiRunner, or a portable runner such as
       Prism in its default LOOPBACK environment): Prism (2.77) keeps only one bundle's increments of a counter
       that two bundles report before it has asked the worker what the counter is, so its totals can come out
       short, and a failed in-process run leaves no result;
    2. else the runner's metrics, summed over steps (committed where the runner has them);
    3. else, for a failed run without metrics (multi-processing), what its worker processes on this machine last
       wrote to `tally_dir` (every second; see metrics.write_tally).
    """
    tally = metrics.process_totals()
    if tally:
        return collections.Counter(tally)
    counters = collections.Counter()
    try:
        query = result.metrics().query(MetricsFilter())
    except Exception:  # pylint: disable=broad-except  # no result, or a failed job with no metrics to give
        query = {"counters": []}
    query = {kind: [found for found in query.get(kind, ()) if metrics.is_ours(found.key.metric.namespace)]
             for kind in ("counters", "distributions")}
    for counter in query["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        counters[counter.key.metric.name] += value or 0
    observed = []
    for found in query["distributions"]:
        value = found.committed if found.committed is not None else found.attempted
        if value is not None and value.count:
            name = found.key.metric.name
            observed.append({f"{name}.count": value.count, f"{name}.sum": value.sum, f"{name}.min": value.min,
                             f"{name}.max": value.max})
    counters = metrics.merge([counters, *observed])
    if not counters and failed and tally_dir:
        counters.update(metrics.read_tallies(tally_dir))
    return counters


def _per_type_keys(by_event_time, include_anonymous, watch):
    optional = {metrics.OUTSIDE_TIME_RANGE: by_event_time, metrics.DROPPED_NO_ID: include_anonymous,
                metrics.HELD_BACK: watch}
    return [metric for metric in (metrics.READ, *metrics.OUTCOMES) if optional.get(metric, True)]


def summarize(counters, *, by_event_time=False, include_anonymous=False, with_ledger=False, dry_run=False,
              watch=False, run=None, mapping=None):
    """Build the summary dict from counter values.

    With by_event_time it also has `outside_time_range` (events read from late partitions whose time
    is outside the range); with include_anonymous, `dropped_no_id` (records with neither an external nor a
    Braze user id); with watch, `held_back` and `files_held_back`; with a ledger, `ledger` (files skipped as
    already sent, files recorded, files read but not recorded, files the ledger holds only for other destinations). `run` (a dict: run id, times, inputs, delivery options) is added as it is; with
    its duration, `events_per_second` (sent). With the run's `mapping` (a catalog.Mapping), `by_segment_event`: the
    events sent by the Segment event name they were sent as.
    """
    keys = _per_type_keys(by_event_time, include_anonymous, watch)
    totals = collections.Counter()
    by_type = collections.defaultdict(lambda: dict.fromkeys(keys, 0))
    for name, value in counters.items():
        metric, _, event_type = name.partition(":")
        if metric in keys and event_type:
            totals[metric] += value
            by_type[event_type][metric] += value
    summary = {_TOTAL_KEYS[metric]: totals[metric] for metric in keys}
    summary.update({
        "unreadable_files": counters.get(metrics.UNREADABLE_FILES, 0),
        "requests": counters.get(metrics.REQUESTS, 0),
        "retries": counters.get(metrics.RETRIES, 0),
        "throttled_seconds": counters.get(metrics.THROTTLING_SECONDS, 0),
        "rejected_by_segment": counters.get(metrics.REJECTED_BY_SEGMENT, 0),
        "dead_letters_by_reason": metrics.by_suffix(counters, metrics.LETTERS_BY_REASON),
        "records_lost": counters.get(metrics.RECORDS_LOST, 0),
        "requests_by_status": metrics.by_suffix(counters, metrics.REQUESTS_BY_STATUS),
        "bytes_sent": counters.get(metrics.BYTES_SENT, 0),
        "duplicate_ids": counters.get(metrics.DUPLICATE_IDS, 0),
        "files_read": counters.get(metrics.FILES_READ, 0),
        "dry_run": dry_run,
        "by_event_type": {event_type: by_type[event_type] for event_type in sorted(by_type)},
    })
    if watch:
        summary["files_held_back"] = counters.get(metrics.FILES_HELD_BACK, 0)
    if with_ledger:
        summary["ledger"] = {"files_skipped": counters.get(metrics.LEDGER_FILES_SKIPPED, 0),
                             "files_recorded": counters.get(metrics.LEDGER_FILES_RECORDED, 0)}
        if counters.get(metrics.LEDGER_FILES_UNBALANCED):
            summary["ledger"]["files_not_recorded"] = counters[metrics.LEDGER_FILES_UNBALANCED]
        if counters.get(metrics.LEDGER_FILES_ELSEWHERE):
            summary["ledger"]["files_recorded_for_other_destinations"] = counters[metrics.LEDGER_FILES_ELSEWHERE]
        if counters.get(metrics.LEDGER_FILES_RESENT_WITHIN_DEDUP):
            summary["ledger"]["files_sent_otherwise_within_24h"] = counters[metrics.LEDGER_FILES_RESENT_WITHIN_DEDUP]
        malformed = list(metrics.by_suffix(counters, metrics.LEDGER_MALFORMED))
        if malformed:
            summary["ledger"]["malformed_lines"] = malformed  # "<ledger file> line <n>", each skipped
    summary["event_time"] = event_time(counters)
    summary["lag_seconds"] = seconds_percentiles(counters, metrics.DELIVERY_LAG_MS, (0.5, 0.95))
    summary["request_seconds"] = seconds_percentiles(counters, metrics.REQUEST_MS, (0.5, 0.95, 0.99))
    if mapping is not None:
        by_event = collections.Counter()
        for event_type, row in by_type.items():
            spec = mapping.spec_for(event_type)
            if spec is not None and row[metrics.SENT]:
                by_event[spec.segment_event] += row[metrics.SENT]
        summary["by_segment_event"] = dict(sorted(by_event.items()))
    summary["balanced"] = is_balanced(summary)
    if run:
        summary.update(run)
        if run.get("duration_seconds") is not None:  # waits of several worker processes overlap in time too
            summary["throttled_seconds"] = min(summary["throttled_seconds"], int(run["duration_seconds"]))
            summary["events_per_second"] = round(summary["sent"] / run["duration_seconds"], 1) \
                if run["duration_seconds"] > 0 else None
    return summary


def event_time(counters):
    """{"oldest", "newest"}: the time of the oldest and newest event sent (ISO 8601, UTC), None when none was."""
    observed = metrics.distribution(counters, metrics.EVENT_TIME)
    return {key: None if observed[statistic] is None else
            datetime.datetime.fromtimestamp(observed[statistic], datetime.timezone.utc).isoformat()
            for key, statistic in (("oldest", "min"), ("newest", "max"))}


def seconds_percentiles(counters, name, quantiles):
    """{"p50": ..., "max": ...}: percentiles (estimated from the histogram's buckets) and the largest value observed
    of a histogram in milliseconds, in seconds; None when nothing was observed."""
    observed = metrics.distribution(counters, name)
    found = {f"p{round(q * 100)}": metrics.quantile(counters, name, q) for q in quantiles}
    found["max"] = observed["max"]
    return {key: None if value is None else round(value / 1000, 3) for key, value in found.items()}


def _outcome_keys(summary):
    return [_TOTAL_KEYS[metric] for metric in metrics.OUTCOMES if _TOTAL_KEYS[metric] in summary]


def unaccounted(summary):
    """Events read that no outcome accounts for (0 when the summary balances)."""
    return summary["events_read"] - sum(summary[key] for key in _outcome_keys(summary))


def is_balanced(summary):
    """True when every event read is accounted for exactly once, in the totals and in each type's row."""
    rows_balance = all(row[metrics.READ] == sum(value for key, value in row.items() if key != metrics.READ)
                       for row in summary["by_event_type"].values())
    return unaccounted(summary) == 0 and rows_balance


def format_table(summary):
    """The summary as a fixed-width text table: one row per event type, then the totals."""
    sent_header = "would send" if summary.get("dry_run") else "sent"
    names = {**_HEADERS, metrics.SENT: sent_header}
    keys = _per_type_keys("outside_time_range" in summary, "dropped_no_id" in summary, "held_back" in summary)
    header = ("event type", *(names[key] for key in keys))
    rows = [(event_type, *(f"{counts[key]:,}" for key in keys))
            for event_type, counts in summary["by_event_type"].items()]
    rows.append(("TOTAL", *(f"{summary[_TOTAL_KEYS[key]]:,}" for key in keys)))
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in [header, *rows]]
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    lines.append(f"unreadable files: {summary['unreadable_files']}   requests: {summary['requests']:,}"
                 f"{' (dry run: written, not sent)' if summary.get('dry_run') else ''}   "
                 f"retries: {summary['retries']:,}   "
                 + (f"throttled: {summary['throttled_seconds']:,} s   " if summary.get("throttled_seconds") else "")
                 + f"duplicate ids: {summary['duplicate_ids']:,}   "
                 f"balanced: {'yes' if summary['balanced'] else 'NO'}"
                 + (f" (and {summary['records_lost']:,} records lost in unreadable parts of files, each part in a "
                    "dead letter)" if summary.get("records_lost") else ""))
    if summary.get("dead_letters_by_reason"):
        lines.append("dead letters by reason: " + ", ".join(f"{reason} {n:,}"
                                                            for reason, n in summary["dead_letters_by_reason"].items()))
    if summary.get("files_held_back"):
        lines.append(f"held back: {summary['files_held_back']:,} files not delivered while Segment was down ("
                     f"{summary['held_back']:,} events read from them neither sent nor dead-lettered): not recorded in the "
                     "ledger, the next watch reads them again")
    if "ledger" in summary:
        ledger = summary["ledger"]
        lines.append(f"ledger: {ledger['files_skipped']} files skipped as already sent, "
                     f"{ledger['files_recorded']} recorded"
                     + (f", {ledger['files_not_recorded']} read but not recorded (events unaccounted for)"
                        if ledger.get("files_not_recorded") else "")
                     + (f"; {ledger['files_recorded_for_other_destinations']} files it holds only for another "
                        "endpoint, write key or mapping options were sent to this one"
                        if ledger.get("files_recorded_for_other_destinations") else ""))
    return "\n".join(lines)


def write_json(path, summary):
    """Write the summary as JSON to a path on any Beam filesystem."""
    with FileSystems.create(path) as stream:
        stream.write(json.dumps(summary, indent=2, sort_keys=True, default=str).encode("utf-8"))
