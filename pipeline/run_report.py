"""What a run says and how it exits: its exit codes, the summary it prints and writes, the one line of a failure, and
the ledger entries a run that did not complete takes back.

The summary's arithmetic (counters → totals and rows, the balance, the table, the JSON) stays in pipeline.summary:
it knows nothing of a job's configuration, of stderr or of exit codes, and the tests and other tools use it as it
is. This module decides, from a run's configuration and how it ended, what to print around that summary and which
exit status the run gets (the table of exit statuses is pipeline.main's docstring and the README's).
"""
import datetime
import os
import re
import signal
import sys
from typing import NamedTuple

from apache_beam.io.filesystems import FileSystems

from currents_to_segment.pipeline import summary
from currents_to_segment.pipeline.options import storage_reason
from currents_to_segment.transforms import ledger, ledger_files, metrics
from currents_to_segment.transforms.jsonl import OutputWriteError
from currents_to_segment.transforms.segment.api import SegmentConfigError

EXIT_OK = 0
EXIT_CONFIG_ERROR = 1
EXIT_DEAD_LETTERS = 2
EXIT_SEGMENT_UNREACHABLE = 3
EXIT_RUN_FAILED = 4
EXIT_UNBALANCED = 5
EXIT_ALL_REJECTED = 6
EXIT_INTERRUPTED = 128 + signal.SIGINT
EXIT_TERMINATED = 128 + signal.SIGTERM
# The exit statuses whose last line names the run's log (see _log_note): the run's folder is kept for them.
KEEP_RUN_DIR = (EXIT_CONFIG_ERROR, EXIT_RUN_FAILED)
# The summary's "outcome" for each exit status (the JSON has both: "exit_code" and this).
OUTCOMES = {EXIT_OK: "completed", EXIT_CONFIG_ERROR: "refused_by_segment",
            EXIT_DEAD_LETTERS: "completed_with_dead_letters", EXIT_SEGMENT_UNREACHABLE: "segment_unreachable",
            EXIT_RUN_FAILED: "failed", EXIT_UNBALANCED: "unbalanced", EXIT_ALL_REJECTED: "all_rejected",
            EXIT_INTERRUPTED: "interrupted", EXIT_TERMINATED: "terminated"}
# Segment keeps messageIds for about a day: a replay of older events is not deduplicated.
DEDUP_WINDOW = datetime.timedelta(hours=24)
# The failures the job raises on purpose, as runners re-raise them: by type, or as text in another error.
_KNOWN_FAILURES = (SegmentConfigError, OutputWriteError)
_KNOWN_FAILURE_TEXT = re.compile(r"\b(SegmentConfigError|OutputWriteError): ([^\n]+)")
_STEP_SUFFIX = re.compile(r" \[while running '[^']*'\]")


class Failure(NamedTuple):
    """What a run that raised says of it (one line) and the exit status it gets."""

    line: str
    status: int


def warn_if_beyond_dedup(end):
    """Before a run: warn when the selected range ended longer ago than Segment deduplicates messageIds."""
    if end is None:
        return
    age = datetime.datetime.now(datetime.timezone.utc) - end
    if age > DEDUP_WINDOW:
        print(f"warning: the selected range ended {age.days} days {age.seconds // 3600} hours ago; Segment "
              "deduplicates messageIds for about 24 h only, so events already sent will be duplicated in "
              "destinations other than warehouses (consider --integrations '{\"All\": false}').",
              file=sys.stderr)


def report_job_graph_written():
    """Only the job graph was written (a Dataflow template launch): the runner starts the job later."""
    print("job graph written; its counters will be on the runner's job page", file=sys.stderr)
    return EXIT_OK


def report_completed(counters, job_config, monitor=None):
    """Print and write the summary of a run that completed (and its report, to `monitor`, a pipeline.monitor.Monitor);
    return the exit status it calls for (the summary says it too: its exit_code and outcome are the status's,
    decided before it is written)."""
    run_summary = _summary(counters, job_config, EXIT_OK)
    status, say = _completed_run_status(run_summary, counters, job_config)
    _set_status(run_summary, status)
    written = _print_summary(run_summary, job_config, counters, monitor)
    _warn_malformed_ledger(counters)
    for line in say:
        line()
    if not written and status in (EXIT_OK, EXIT_DEAD_LETTERS):
        return EXIT_RUN_FAILED
    return status


def _set_status(run_summary, status):
    run_summary.update(exit_code=status, outcome=OUTCOMES[status])


def _warn_malformed_ledger(counters):
    """One warning naming the ledger files with lines that are not entries (each such line was skipped)."""
    where = list(metrics.by_suffix(counters, ledger.MALFORMED))
    if where:
        _warn(f"the ledger has lines that are not entries, skipped (the rest was read): {'; '.join(where)}; a "
              "file they hold is sent again unless another entry records it: fix or remove those lines")


def report_stopped(job_config, signum, signal_name, counters, log_path, monitor=None):
    """A run stopped by Ctrl-C or SIGTERM: the summary so far and one line; exit 130 or 143."""
    status = EXIT_TERMINATED if signum == signal.SIGTERM else EXIT_INTERRUPTED
    # A run stopped on purpose leaves nothing behind (its run folder is removed): its line names no log.
    _report_unfinished(job_config, f"interrupted by {signal_name}", counters, None, status, interrupted=True,
                       monitor=monitor)
    return status


def report_failed(job_config, error, counters, log_path, monitor=None):
    """A run that raised: the summary so far and the one line its failure is; the exit status that goes with it."""
    failure = classify_failure(error)
    if failure.status == EXIT_CONFIG_ERROR:
        _report_refused_config(job_config, failure.line, counters, log_path, monitor)
    else:
        _report_unfinished(job_config, failure.line, counters, log_path, failure.status, monitor=monitor)
    return failure.status


def classify_failure(error):
    """The one line and the exit status of what a run raised: Segment refusing the key or the endpoint is a
    configuration error; any other failure, one the job raised on purpose or not, is a failed run."""
    known = _known_failure(error)
    if known and known[0] == SegmentConfigError.__name__:
        return Failure(known[1], EXIT_CONFIG_ERROR)
    what = known[1] if known else f"the run failed: {type(error).__name__}: " + \
        _STEP_SUFFIX.sub("", (str(error).strip().splitlines() or [""])[0])
    return Failure(what, EXIT_RUN_FAILED)


def _known_failure(error):
    """(kind, one line) of a failure the job raised on purpose, however the runner wrapped it; else None."""
    while error is not None:
        if isinstance(error, _KNOWN_FAILURES):
            return type(error).__name__, _STEP_SUFFIX.sub("", str(error).splitlines()[0])
        found = _KNOWN_FAILURE_TEXT.search(str(error))
        if found:
            return found.group(1), _STEP_SUFFIX.sub("", found.group(2))
        error = error.__cause__ or error.__context__
    return None


def _completed_run_status(run_summary, counters, job_config):
    """(the exit status of a run that completed, what to say about it: callables that print its lines, after the
    summary); a summary that does not balance takes back the run's ledger entries here."""
    where = job_config.dead_letter_output
    if not run_summary["balanced"]:
        _forget_run(job_config)
        return EXIT_UNBALANCED, [lambda: print(
            f"error: the summary does not balance: {summary.unaccounted(run_summary):,} events read are neither "
            "sent, dropped nor dead-lettered (or a type's row does not add up); nothing was recorded in the "
            "ledger; run again", file=sys.stderr)]
    say = []
    resent = run_summary.get("ledger", {}).get("files_sent_otherwise_within_24h")
    if resent:
        say.append(lambda: _warn(
            f"{resent:,} files were sent to this endpoint and write key less than 24 h ago with another mapping or "
            "other options shaping the calls: their calls keep their messageIds, which Segment drops as duplicates "
            "for about a day, so the changed calls were most likely not taken. To send them changed, run again with "
            "--message_id_namespace NAME (new messageIds: the old calls stay too) or after the 24 h"))
    throttled, took = run_summary.get("throttled_seconds", 0), run_summary.get("duration_seconds") or 0
    budget = job_config.delivery.client.events_per_second if job_config.delivery.client else None
    if budget and took >= 10 and throttled >= took / 2:
        say.append(lambda: print(
            f"note: requests waited {throttled:,} s of the run's {took:,.0f} s for the budget (or Segment's 429s): "
            f"{budget:g} events/s per worker was the limit; a larger --max_events_per_second (within the "
            "workspace's limit) makes such runs shorter", file=sys.stderr))
    rejected = run_summary["rejected_by_segment"]
    if rejected:
        say.append(lambda: _warn(
            f"Segment rejected {rejected:,} events (400/413): they are in the dead letters under {where} with "
            "reason rejected_by_segment and Segment's answer; fix them and replay with: python -m pipeline "
            f"replay-dead-letters {where}"))
    gave_up = _gave_up_line(run_summary, counters, job_config)
    if gave_up:
        return EXIT_SEGMENT_UNREACHABLE, say + [lambda: print(gave_up, file=sys.stderr)]
    unreachable = counters.get(metrics.RETRIES_EXHAUSTED, 0)
    if unreachable:
        return EXIT_SEGMENT_UNREACHABLE, say + [lambda: print(
            f"error: Segment stayed unreachable past the retry budget for {unreachable:,} events; they are in "
            f"the dead letters under {where} (replay them with: python -m pipeline replay-dead-letters {where})",
            file=sys.stderr)]
    if rejected and not run_summary["sent"]:
        return EXIT_ALL_REJECTED, say + [lambda: print(
            f"error: Segment rejected every event it was sent ({rejected:,}) and accepted none: check the "
            "endpoint and what the source accepts (Segment's answer is in each dead letter)", file=sys.stderr)]
    dead, unreadable = run_summary["dead_lettered"], run_summary["unreadable_files"]
    if (dead or unreadable) and job_config.fail_on_dead_letters:
        return EXIT_DEAD_LETTERS, say + [lambda: print(
            f"error: --fail_on_dead_letters: {dead:,} events dead-lettered and {unreadable:,} unreadable parts "
            f"of files (their letters are under {where})", file=sys.stderr)]
    return EXIT_OK, say


def _gave_up_line(run_summary, counters, job_config):
    """The line of a watch that gave up on Segment (down for --max_outage_hours, or drained during an outage), else
    None."""
    if counters.get(metrics.OUTAGE_TOO_LONG):
        client = job_config.delivery.client
        why = (f"Segment stayed unreachable for --max_outage_hours {client.max_outage_seconds / 3600:g}: the watch "
               "stopped")
    elif counters.get(metrics.DRAINED_IN_OUTAGE):
        why = "the watch was drained while Segment was unreachable: it stopped without waiting for Segment"
    else:
        return None
    files, events = run_summary.get("files_held_back", 0), run_summary.get("held_back", 0)
    then = ("they are not recorded in the ledger: the next watch with --ledger " + job_config.ledger + " sends them"
            if job_config.ledger else "without --ledger, the next watch sends every file it lists again")
    return (f"error: {why}; {files:,} files were not delivered ({events:,} events read from them held back, "
            f"none dead-lettered); {then}")


def _report_unfinished(job_config, what, counters, log_path, status, interrupted=False, monitor=None):
    """The summary of a run that stopped after it started, as far as it is known, one line saying what failed,
    and nothing in the ledger (but what an interrupted watch recorded)."""
    _forget_run(job_config, interrupted)
    known = counters.get(metrics.FILES_LISTED) or metrics.totals(counters, metrics.READ)
    run_summary = _summary(counters, job_config, status)
    _print_summary(run_summary, job_config, counters, monitor)
    lost = (f"{summary.unaccounted(run_summary):,} events read were neither delivered nor dead-lettered"
            if known else "events may have been read that were neither delivered nor dead-lettered")
    consequence = "nothing was recorded in the ledger; " if job_config.ledger else ""
    if job_config.ledger and interrupted and job_config.watch:
        consequence = "the ledger holds the files delivered before it (the next watch skips them); "
    print(f"error: {what}: {lost}; {consequence}run again (the same messageIds make resent events harmless "
          f"within Segment's 24 h){_log_note(log_path)}", file=sys.stderr)


def _report_refused_config(job_config, line, counters, log_path, monitor=None):
    """Segment refused the key or the endpoint during the run: the summary so far and one line."""
    _forget_run(job_config)
    _print_summary(_summary(counters, job_config, EXIT_CONFIG_ERROR), job_config, counters, monitor)
    sent = metrics.totals(counters, metrics.SENT)
    before = f" ({sent:,} events were sent before it; nothing was recorded in the ledger)" if sent else ""
    print(f"error: {line}{before}{_log_note(log_path)}", file=sys.stderr)


def _forget_run(job_config, interrupted=False):
    """Remove this run's ledger entries (a run that failed, was stopped or does not balance records nothing; but a
    watch that is interrupted keeps the entries of the files it delivered, which may be days of them)."""
    if not job_config.ledger or (interrupted and job_config.watch):
        return
    try:
        entries = ledger_files.run_files(job_config.ledger, job_config.run_id)
        if entries:
            FileSystems.delete(entries)
    except Exception as error:  # pylint: disable=broad-except
        print(f"error: could not remove this run's ledger entries {job_config.ledger}/*/entries-{job_config.run_id}-*: "
              f"{storage_reason(error)}; remove them by hand", file=sys.stderr)


def live_summary(counters, job_config):
    """The summary of a run that goes on (a watch's refreshed report): no exit status yet, outcome "running"."""
    return _summary(counters, job_config, None)


def _summary(counters, job_config, status):
    run = dict(_run_facts(job_config, datetime.datetime.now(datetime.timezone.utc)), exit_code=status,
               outcome=OUTCOMES.get(status, "running"))
    return summary.summarize(counters, by_event_time=job_config.by_event_time,
                             include_anonymous=job_config.delivery.track.include_anonymous,
                             with_ledger=bool(job_config.ledger), dry_run=bool(job_config.dry_run_output),
                             watch=bool(job_config.watch), run=run, mapping=job_config.delivery.track.mapping)


def _run_facts(job_config, ended):
    """What the summary JSON says of the run itself."""
    return {"run_id": job_config.run_id, "started_at": job_config.started.isoformat(),
            "ended_at": ended.isoformat(), "duration_seconds": round((ended - job_config.started).total_seconds(), 3),
            "inputs": job_config.inputs, "delivery": job_config.delivery_options(),
            "dead_letter_output": job_config.dead_letter_output, "dry_run_output": job_config.dry_run_output,
            "ledger_output": job_config.ledger}


def _print_summary(run_summary, job_config, counters, monitor):
    """Print the table and where the outputs are; write the JSON, and the report (`monitor`'s, which from now on
    shows these counters). Returns False when the JSON or the report could not be written."""
    print(summary.format_table(run_summary))
    print(f"dead letters: {job_config.dead_letter_output}"
          + (f"   dry-run requests: {job_config.dry_run_output}" if job_config.dry_run_output else "")
          + (f"   summary: {job_config.summary_output}" if job_config.summary_output else "")
          + (f"   report: {job_config.report_output}" if job_config.report_output else ""))
    written = monitor.finish(counters, run_summary) if monitor is not None else True
    if not job_config.summary_output:
        return written
    try:
        summary.write_json(job_config.summary_output, run_summary)
    except Exception as error:  # pylint: disable=broad-except  # each filesystem fails its own way
        print(f"error: cannot write --summary_output {job_config.summary_output}: {storage_reason(error)} "
              "(the summary above is the run's)", file=sys.stderr)
        return False
    return written


def _warn(text):
    """A highlighted warning on stderr (bold on a terminal)."""
    line = f"WARNING: {text}"
    print(f"\x1b[1m{line}\x1b[0m" if sys.stderr.isatty() else line, file=sys.stderr)


def _log_note(log_path):
    return f" (Beam's log of the run: {log_path})" if log_path and os.path.exists(log_path) else ""
