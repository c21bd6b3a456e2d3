"""Entry point: load and check the configuration, run the job, report what happened.

    python -m pipeline --runner=FnApiRunner --input 'bucket/**/*.avro' --dry_run_output out/requests
    python -m pipeline make-sample-bucket DIR    # write a demo Currents bucket
    python -m pipeline replay-dead-letters DIR   # resend dead-lettered calls as they were

Exit status (the README has the same table); every failure is one line (naming the run's log, where Beam's own
output went) after the summary of what happened:
  0    the run completed and every event is accounted for (dead letters are reported, not fatal)
  1    configuration error, found before anything is sent (one line), or Segment answering 401/403/404/3xx
  2    with --fail_on_dead_letters: something was dead-lettered or unreadable (one line says how much)
  3    Segment stayed unreachable past the retry budget (those events are in the dead letters)
  4    the run failed after it started (an output could not be written, a worker failed): the events not
       delivered or dead-lettered are not recorded in the ledger; run again
  5    the summary does not balance (events lost on the way): nothing is recorded in the ledger
  6    Segment rejected every event it was sent (400/413) and accepted none (they are in the dead letters)
  130  interrupted (Ctrl-C); 143 terminated (SIGTERM): nothing is recorded in the ledger (a --watch drains on the
       first Ctrl-C or SIGTERM and exits as a finished run; a second one interrupts it, and it keeps in the
       ledger the files it delivered)
"""
import argparse
import datetime
import logging
import os
import re
import shutil
import signal
import sys
import threading
from typing import Any, NamedTuple, Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import S3Options

from pipeline import assembly, config, plan, replay, run_log, sample_bucket, summary
from pipeline.options import ConfigError, CurrentsToSegmentOptions, storage_reason
from transforms import ledger, metrics, progress
from transforms import watch as transforms_watch
from transforms.jsonl import OutputWriteError
from transforms.file_access import FileAccess
from transforms.segment_client import SegmentConfigError

EXIT_OK = 0
EXIT_CONFIG_ERROR = 1
EXIT_DEAD_LETTERS = 2
EXIT_SEGMENT_UNREACHABLE = 3
EXIT_RUN_FAILED = 4
EXIT_UNBALANCED = 5
EXIT_ALL_REJECTED = 6
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
    """Ctrl-C and SIGTERM during a run, and SIGUSR1, which the run's log sends this process when a worker process
    died (run_log.RunLog.worker_failure): each raises KeyboardInterrupt where the run is, and is remembered, since
    a runner may re-raise the interruption as another error (Beam's DoFn runner wraps what a DoFn raises), and a
    runner may wait for a dead worker forever."""

    NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM", run_log.WORKER_FAILED: "a worker failure"}

    def __init__(self, drain=None):
        """drain: called on the first Ctrl-C or SIGTERM instead of interrupting (a watch drains); the next one
        interrupts."""
        self.received = None
        self.draining = None  # the signal that began a drain
        self._drain = drain
        self._previous = {}

    def _handle(self, signum, frame):  # pylint: disable=unused-argument
        if signum == run_log.WORKER_FAILED and self.received is not None:
            return  # the workers died of the Ctrl-C or SIGTERM already received
        if self._drain is not None and self.draining is None and signum != run_log.WORKER_FAILED:
            self.draining = signum
            self._drain(self.NAMES[signum])
            return
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
    return summary.summarize(counters, by_event_time=job_config.by_event_time,
                             include_anonymous=job_config.mapping.include_anonymous,
                             with_ledger=bool(job_config.ledger), dry_run=bool(job_config.dry_run_output), run=run)


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


def _forget_run(job_config, interrupted=False):
    """Remove this run's ledger entries (a run that failed, was stopped or does not balance records nothing; but a
    watch that is interrupted keeps the entries of the files it delivered, which may be days of them)."""
    if not job_config.ledger or (interrupted and job_config.watch):
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
    rejected = run_summary["rejected_by_segment"]
    if rejected:
        _warn(f"Segment rejected {rejected:,} events (400/413): they are in the dead letters under {where} with "
              "reason rejected_by_segment and Segment's answer; fix them and replay with: python -m pipeline "
              f"replay-dead-letters {where}")
    unreachable = counters.get(metrics.RETRIES_EXHAUSTED, 0)
    if unreachable:
        print(f"error: Segment stayed unreachable past the retry budget for {unreachable:,} events; they are in "
              f"the dead letters under {where} (replay them with: python -m pipeline replay-dead-letters {where})",
              file=sys.stderr)
        return EXIT_SEGMENT_UNREACHABLE
    if rejected and not run_summary["sent"]:
        print(f"error: Segment rejected every event it was sent ({rejected:,}) and accepted none: check the "
              "endpoint and what the source accepts (Segment's answer is in each dead letter)", file=sys.stderr)
        return EXIT_ALL_REJECTED
    if not written:
        return EXIT_RUN_FAILED
    dead, unreadable = run_summary["dead_lettered"], run_summary["unreadable_files"]
    if (dead or unreadable) and job_config.fail_on_dead_letters:
        print(f"error: --fail_on_dead_letters: {dead:,} events dead-lettered and {unreadable:,} unreadable parts "
              f"of files (their letters are under {where})", file=sys.stderr)
        return EXIT_DEAD_LETTERS
    return EXIT_OK


def _report_failure(job_config, what, status, counters, log_path, interrupted=False):
    """The summary of a run that stopped after it started, as far as it is known, one line saying what failed,
    and nothing in the ledger (but what an interrupted watch recorded)."""
    _forget_run(job_config, interrupted)
    known = counters.get(metrics.FILES_LISTED) or metrics.totals(counters, metrics.READ)
    run_summary = _summary(counters, job_config, "failed")
    _print_summary(run_summary, job_config)
    lost = (f"{summary.unaccounted(run_summary):,} events read were neither delivered nor dead-lettered"
            if known else "events may have been read that were neither delivered nor dead-lettered")
    consequence = "nothing was recorded in the ledger; " if job_config.ledger else ""
    if job_config.ledger and interrupted and job_config.watch:
        consequence = "the ledger holds the files delivered before it (the next watch skips them); "
    print(f"error: {what}: {lost}; {consequence}run again (the same messageIds make resent events harmless "
          f"within Segment's 24 h){_log_note(log_path)}", file=sys.stderr)
    return status


def _report_config_failure(job_config, line, counters, log_path):
    """Segment refused the key or the endpoint during the run: the summary so far, one line, exit 1."""
    _forget_run(job_config)
    _print_summary(_summary(counters, job_config, "failed"), job_config)
    sent = metrics.totals(counters, metrics.SENT)
    before = f" ({sent:,} events were sent before it; nothing was recorded in the ledger)" if sent else ""
    print(f"error: {line}{before}{_log_note(log_path)}", file=sys.stderr)
    return EXIT_CONFIG_ERROR


def _log_note(log_path):
    return f" (Beam's log of the run: {log_path})" if log_path and os.path.exists(log_path) else ""


class _Ended(NamedTuple):
    """How pipeline.run ended: its result (None when it raised before returning one), the error it raised, the
    signal that stopped it, and whether only a job graph was written (a template launch)."""

    result: Any
    error: Optional[BaseException]
    signum: Optional[int]
    graph_only: bool = False


def _run(pipeline, signals):
    """Run the pipeline to its end; how it ended (a worker's death as the error it is, not as a signal)."""
    result = None
    try:
        with signals:
            result = pipeline.run()
            if getattr(result, "has_job", True) is False:
                return _Ended(result, None, None, graph_only=True)
            result.wait_until_finish()
        return _Ended(result, None, None)
    except (KeyboardInterrupt, Exception) as error:  # pylint: disable=broad-except  # every failure gets its line
        interrupted = signals.received or (signal.SIGINT if isinstance(error, KeyboardInterrupt) else None)
        return _Ended(result, error, interrupted)
    finally:
        progress.stop()


def _execute(job, until_exit):
    """Run the loaded job on its runner, with Beam's output in the run's log on this machine (until the process
    exits, with until_exit); return the exit status."""
    job_config = job.config
    pipeline = beam.Pipeline(options=job.pipeline_options)
    assembly.build(pipeline, job_config)
    metrics.reset_process_totals()
    log_path = os.path.join(job_config.run_dir, "run.log") if job_config.run_dir else None
    log = run_log.RunLog(log_path).open() if log_path else None
    try:
        ended = _run(pipeline, _Signals(_drainer(job_config.watch)))
        if ended.signum == run_log.WORKER_FAILED:
            ended = _Ended(ended.result, RuntimeError(log.worker_failure), None)
        status = _finish(ended, job_config, log_path)
    finally:
        if log is not None and not until_exit:
            log.close()
        if job_config.watch:
            _remove_stop_marker(job_config.watch.stop_marker)
    if status == EXIT_OK and job_config.run_dir:
        shutil.rmtree(job_config.run_dir, ignore_errors=True)
    return status


def _drainer(watch):
    """What the first Ctrl-C or SIGTERM does to a watch: write its stop marker (no more listings; the files in
    flight are finished and recorded, then the run ends as a batch run does). None for a batch run."""
    if watch is None:
        return None

    def drain(name):
        try:
            transforms_watch.request_stop(watch.stop_marker)
        except Exception as error:  # pylint: disable=broad-except  # each filesystem fails its own way
            print(f"error: cannot stop the watch: cannot write {watch.stop_marker}: {storage_reason(error)}; a second "
                  "Ctrl-C or SIGTERM aborts it", file=sys.stderr)
            return
        print(f"{name}: draining: no more listings; finishing the files in flight, then the summary "
              "(a second Ctrl-C or SIGTERM aborts)", file=sys.stderr, flush=True)
    return drain


def _remove_stop_marker(stop_marker):
    try:
        if FileSystems.exists(stop_marker):
            FileSystems.delete([stop_marker])
    except Exception:  # pylint: disable=broad-except  # a marker left behind names a run that is over: harmless
        pass


def _finish(ended, job_config, log_path):
    """Report how the run ended; the exit status."""
    if ended.graph_only:
        # Only the job graph was written (a Dataflow template launch): the runner starts the job later.
        print("job graph written; its counters will be on the runner's job page", file=sys.stderr)
        return EXIT_OK
    counters = summary.run_counters(ended.result, job_config.run_dir, failed=ended.error is not None)
    if ended.error is None:
        return _report(counters, job_config)
    if ended.signum:
        status = EXIT_TERMINATED if ended.signum == signal.SIGTERM else EXIT_INTERRUPTED
        return _report_failure(job_config, f"interrupted by {_Signals.NAMES[ended.signum]}", status, counters,
                               log_path, interrupted=True)
    known = _known_failure(ended.error)
    if known and known[0] == SegmentConfigError.__name__:
        return _report_config_failure(job_config, known[1], counters, log_path)
    what = known[1] if known else f"the run failed: {type(ended.error).__name__}: " + \
        _STEP_SUFFIX.sub("", (str(ended.error).strip().splitlines() or [""])[0])
    return _report_failure(job_config, what, EXIT_RUN_FAILED, counters, log_path)


def run(argv, until_exit=False):
    """Run the job with these command-line arguments; return the exit status. until_exit: the process ends with
    the run (the command line), so Beam's output stays in the run's log until it does."""
    job = config.load(argv, ledger.new_run_id())
    options = job.options
    if job.config is None:  # --plan
        selection = job.selection
        print(plan.describe(selection.patterns, None if options.rerun else options.ledger, selection.ledger_scope,
                            FileAccess(job.pipeline_options.view_as(S3Options)), job.destination, job.mapping,
                            selection.event_types))
        return EXIT_OK
    for pattern in job.config.inputs.get("unmatched", ()):
        logging.warning("no file matched --input %s", pattern)
    _warn_if_beyond_dedup(job.config.selection.end)
    advice = config.budget_advice(options)
    if advice:
        print(advice, file=sys.stderr)
    return _execute(job, until_exit)


def main(argv=None, until_exit=False):
    """Run the command line (sys.argv without argv); returns the exit status. until_exit: the process ends when
    this returns (see run)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in SUBCOMMANDS:
        return SUBCOMMANDS[argv[0]](argv[1:])
    if {"-h", "--help"} & set(argv):
        _help_parser().print_help()
        return EXIT_OK
    try:
        return run(argv, until_exit)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_CONFIG_ERROR


def cli():
    """The console script and `python -m pipeline`: exit with the run's status."""
    sys.exit(main(until_exit=True))
