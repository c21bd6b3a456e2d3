"""Entry point: load and check the configuration, run the job, report what happened.

    python -m pipeline --runner=FnApiRunner --input 'bucket/**/*.avro' --dry_run_output out/requests
    python -m pipeline make-sample-bucket DIR    # write a demo Currents bucket
    python -m pipeline replay-dead-letters DIR   # resend dead-lettered calls as they were

Exit status (the README has the same table):
  0    the run completed and every event is accounted for (dead letters are reported, not fatal)
  1    configuration error, found before anything is sent (one line), or Segment answering 401/403/404/3xx
  2    with --fail_on_dead_letters: something was dead-lettered or unreadable
  3    Segment stayed unreachable past the retry budget (those events are in the dead letters)
  4    the run failed after it started (an output could not be written, a worker failed): the events not
       delivered or dead-lettered are not recorded in the ledger; run again
  5    the summary does not balance (events lost on the way): nothing is recorded in the ledger
  130  interrupted (Ctrl-C); 143 terminated (SIGTERM): nothing is recorded in the ledger
"""
import argparse
import datetime
import logging
import re
import signal
import sys
import threading

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import S3Options

from pipeline import assembly, config, plan, replay, sample_bucket, summary
from pipeline.options import ConfigError, CurrentsToSegmentOptions, storage_reason
from transforms import ledger, metrics, progress
from transforms.jsonl import OutputWriteError
from transforms.s3_files import FileAccess
from transforms.segment_client import SegmentConfigError

EXIT_OK = 0
EXIT_CONFIG_ERROR = 1
EXIT_DEAD_LETTERS = 2
EXIT_SEGMENT_UNREACHABLE = 3
EXIT_RUN_FAILED = 4
EXIT_UNBALANCED = 5
EXIT_INTERRUPTED = 128 + signal.SIGINT
EXIT_TERMINATED = 128 + signal.SIGTERM
SUBCOMMANDS = {"make-sample-bucket": sample_bucket.main, "replay-dead-letters": replay.main}
# Segment keeps messageIds for about a day: a replay of older events is not deduplicated.
DEDUP_WINDOW = datetime.timedelta(hours=24)
# The failures the job raises on purpose, as runners re-raise them: by type, or as text in another error.
_KNOWN_FAILURES = (SegmentConfigError, OutputWriteError)
_KNOWN_FAILURE_TEXT = re.compile(r"\b(SegmentConfigError|OutputWriteError): ([^\n]+)")
_STEP_SUFFIX = re.compile(r" \[while running '[^']*'\]")


class _Signals:
    """Ctrl-C and SIGTERM during a run: each raises KeyboardInterrupt where the run is, and is remembered, since a
    runner may re-raise the interruption as another error (Beam's DoFn runner wraps what a DoFn raises)."""

    NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}

    def __init__(self):
        self.received = None
        self._previous = {}

    def _handle(self, signum, frame):  # pylint: disable=unused-argument
        self.received = signum
        raise KeyboardInterrupt(self.NAMES[signum])

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # Python takes signals in the main thread only
            self._previous = {signum: signal.signal(signum, self._handle) for signum in self.NAMES}
        return self

    def __exit__(self, *exc_info):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _help_parser():
    parser = argparse.ArgumentParser(
        prog="python -m pipeline",
        description="Send Braze Currents Avro events to Segment as track calls (an Apache Beam job).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Every standard Beam option (--runner, --project, --temp_location, ...) passes through. "
               "Subcommands: 'make-sample-bucket DIR' writes a demo Currents bucket; 'replay-dead-letters DIR' "
               "resends dead-lettered calls unchanged (see 'replay-dead-letters --help').\n\n"
               + __doc__[__doc__.index("Exit status"):])
    CurrentsToSegmentOptions._add_argparse_args(parser)  # pylint: disable=protected-access
    return parser


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


class _QuietKnownFailures(logging.Filter):
    """Beam logs each failed bundle with its traceback; for the failures the job reports itself in one
    line (a 401, an output that cannot be written, Ctrl-C or SIGTERM), that traceback is noise."""

    def __init__(self, signals):
        super().__init__()
        self._signals = signals

    def filter(self, record):
        if self._signals.received:
            return False
        error = record.exc_info[1] if record.exc_info else None
        return _known_failure(error) is None and not _KNOWN_FAILURE_TEXT.search(record.getMessage())


# Where Beam logs a failed bundle: in process, and as relayed from the worker processes of multi-processing.
_BEAM_ERROR_LOGGERS = ("apache_beam.runners.common", "apache_beam.runners.worker.sdk_worker",
                       "apache_beam.runners.portability.fn_api_runner.fn_runner",
                       "apache_beam.runners.portability.local_job_service")


def _warn(text):
    """A highlighted warning on stderr (bold on a terminal)."""
    line = f"WARNING: {text}"
    print(f"\x1b[1m{line}\x1b[0m" if sys.stderr.isatty() else line, file=sys.stderr)


def _warn_if_beyond_dedup(end):
    if end is None:
        return
    age = datetime.datetime.now(datetime.timezone.utc) - end
    if age > DEDUP_WINDOW:
        print(f"warning: the selected range ended {age.days} days {age.seconds // 3600} hours ago; Segment "
              "deduplicates messageIds for about 24 h only, so events already sent will be duplicated in "
              "destinations other than warehouses (consider --integrations '{\"All\": false}').",
              file=sys.stderr)


def _run_facts(job_config, ended):
    """What the summary JSON says of the run itself."""
    return {"run_id": job_config.run_id, "started_at": job_config.started.isoformat(),
            "ended_at": ended.isoformat(), "duration_seconds": round((ended - job_config.started).total_seconds(), 3),
            "inputs": job_config.inputs, "delivery": job_config.delivery_options(),
            "dead_letter_output": job_config.dead_letter_output, "dry_run_output": job_config.dry_run_output,
            "ledger_output": job_config.ledger}


def _summary(counters, job_config, outcome):
    run = dict(_run_facts(job_config, datetime.datetime.now(datetime.timezone.utc)), outcome=outcome)
    return summary.summarize(counters, by_event_time=job_config.by_event_time, with_ledger=bool(job_config.ledger),
                             dry_run=bool(job_config.dry_run_output), run=run)


def _print_summary(run_summary, job_config):
    """Print the table and where the outputs are; write the JSON. Returns False when the JSON could not be written."""
    print(summary.format_table(run_summary))
    print(f"dead letters: {job_config.dead_letter_output}"
          + (f"   dry-run requests: {job_config.dry_run_output}" if job_config.dry_run_output else "")
          + (f"   summary: {job_config.summary_output}" if job_config.summary_output else ""))
    if not job_config.summary_output:
        return True
    try:
        summary.write_json(job_config.summary_output, run_summary)
    except Exception as error:  # pylint: disable=broad-except  # each filesystem fails its own way
        print(f"error: cannot write --summary_output {job_config.summary_output}: {storage_reason(error)} "
              "(the summary above is the run's)", file=sys.stderr)
        return False
    return True


def _forget_run(job_config):
    """Remove this run's ledger entries (a run that failed, was stopped or does not balance records nothing)."""
    if not job_config.ledger:
        return
    try:
        entries = ledger.run_entries(job_config.ledger, job_config.run_id)
        if entries:
            FileSystems.delete(entries)
    except Exception as error:  # pylint: disable=broad-except
        print(f"error: could not remove this run's ledger entries {job_config.ledger}/entries-{job_config.run_id}-*: "
              f"{storage_reason(error)}; remove them by hand", file=sys.stderr)


def _report(counters, job_config):
    """Print and write the summary of a finished run; return the exit status it calls for."""
    run_summary = _summary(counters, job_config, "completed")
    written = _print_summary(run_summary, job_config)
    where = job_config.dead_letter_output
    if not run_summary["balanced"]:
        _forget_run(job_config)
        print(f"error: the summary does not balance: {summary.unaccounted(run_summary):,} events read are neither "
              "sent, dropped nor dead-lettered (or a type's row does not add up); nothing was recorded in the "
              "ledger; run again", file=sys.stderr)
        return EXIT_UNBALANCED
    if run_summary["rejected_by_segment"]:
        _warn(f"Segment rejected {run_summary['rejected_by_segment']:,} events (400/413): they are in the dead "
              f"letters under {where} with reason rejected_by_segment and Segment's answer; fix them and replay "
              f"with: python -m pipeline replay-dead-letters {where}")
    unreachable = counters.get(metrics.RETRIES_EXHAUSTED, 0)
    if unreachable:
        print(f"error: Segment stayed unreachable past the retry budget for {unreachable:,} events; they are in "
              f"the dead letters under {where} (replay them with: python -m pipeline replay-dead-letters {where})",
              file=sys.stderr)
        return EXIT_SEGMENT_UNREACHABLE
    if not written:
        return EXIT_RUN_FAILED
    undelivered = run_summary["dead_lettered"] or run_summary["unreadable_files"]
    return EXIT_DEAD_LETTERS if undelivered and job_config.fail_on_dead_letters else EXIT_OK


def _report_failure(job_config, what, status, result=None):
    """One line for a run that stopped after it started, the summary of what it did, and nothing in the ledger."""
    counters = None
    if result is not None:
        try:
            counters = summary.counters_of(result)
        except Exception:  # pylint: disable=broad-except  # a failed job may have no metrics to give
            counters = None
    if counters is None:
        # An in-process runner leaves no result: what its DoFns counted in this process is what is known.
        counters = metrics.process_totals()
    _forget_run(job_config)
    known = counters.get(metrics.FILES_LISTED) or metrics.totals(counters, metrics.READ)
    run_summary = _summary(counters, job_config, "failed")
    lost = (f"{summary.unaccounted(run_summary):,} events read were neither delivered nor dead-lettered"
            if known else "events may have been read that were neither delivered nor dead-lettered")
    consequence = "nothing was recorded in the ledger; " if job_config.ledger else ""
    if known:
        _print_summary(run_summary, job_config)
    print(f"error: {what}: {lost}; {consequence}run again (the same messageIds make resent events harmless "
          "within Segment's 24 h)", file=sys.stderr)
    return status


def _execute(job):
    """Run the loaded job on its runner; return the exit status."""
    job_config = job.config
    pipeline = beam.Pipeline(options=job.pipeline_options)
    assembly.build(pipeline, job_config)
    metrics.reset_process_totals()
    result = None
    signals = _Signals()
    quiet = _QuietKnownFailures(signals)
    for name in _BEAM_ERROR_LOGGERS:
        logging.getLogger(name).addFilter(quiet)
    try:
        with signals:
            result = pipeline.run()
            if getattr(result, "has_job", True) is False:
                # Only the job graph was written (a Dataflow template launch): the runner starts the job later.
                print("job graph written; its counters will be on the runner's job page", file=sys.stderr)
                return EXIT_OK
            result.wait_until_finish()
            progress.stop()
        return _report(summary.counters_of(result), job_config)
    except (KeyboardInterrupt, Exception) as error:  # pylint: disable=broad-except  # every failure gets its line
        progress.stop()
        if signals.received or isinstance(error, KeyboardInterrupt):
            signum = signals.received or signal.SIGINT
            status = EXIT_TERMINATED if signum == signal.SIGTERM else EXIT_INTERRUPTED
            return _report_failure(job_config, f"interrupted by {_Signals.NAMES[signum]}", status)
        known = _known_failure(error)
        if known and known[0] == SegmentConfigError.__name__:
            _forget_run(job_config)
            sent = metrics.totals(metrics.process_totals(), metrics.SENT)
            before = f" ({sent:,} events were sent before it; nothing was recorded in the ledger)" if sent else ""
            print(f"error: {known[1]}{before}", file=sys.stderr)
            return EXIT_CONFIG_ERROR
        what = known[1] if known else f"the run failed: {type(error).__name__}: " + \
            _STEP_SUFFIX.sub("", (str(error).strip().splitlines() or [""])[0])
        return _report_failure(job_config, what, EXIT_RUN_FAILED, result)
    finally:
        progress.stop()  # also after a template launch, and idempotent
        for name in _BEAM_ERROR_LOGGERS:
            logging.getLogger(name).removeFilter(quiet)


def run(argv):
    """Run the job with these command-line arguments; return the exit status."""
    job = config.load(argv, ledger.new_run_id())
    options = job.options
    if job.config is None:  # --plan
        selection = job.selection
        print(plan.describe(selection.patterns, None if options.rerun else options.ledger, selection.ledger_scope,
                            FileAccess(job.pipeline_options.view_as(S3Options))))
        return EXIT_OK
    for pattern in job.config.inputs.get("unmatched", ()):
        logging.warning("no file matched --input %s", pattern)
    _warn_if_beyond_dedup(job.config.selection.end)
    return _execute(job)


def main(argv=None):
    """Console entry point; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in SUBCOMMANDS:
        return SUBCOMMANDS[argv[0]](argv[1:])
    if {"-h", "--help"} & set(argv):
        _help_parser().print_help()
        return EXIT_OK
    try:
        return run(argv)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
