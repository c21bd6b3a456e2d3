"""Entry point: load and check the configuration, run the job, report what happened.

    python -m pipeline --runner=FnApiRunner --input 'bucket/**/*.avro' --dry_run_output out/requests
    python -m pipeline make-sample-bucket DIR    # write a demo Currents bucket
    python -m pipeline replay-dead-letters DIR   # resend dead-lettered calls as they were
    python -m pipeline compact-ledger LEDGER     # merge a ledger's small files (for a schedule)

Exit status (the README has the same table); every failure is one line (naming the run's log, where Beam's own
output went) after the summary of what happened:
  0    the run completed and every event is accounted for (dead letters are reported, not fatal)
  1    configuration error, found before anything is sent (one line), or Segment answering 401/403/404/3xx
  2    with --fail_on_dead_letters: something was dead-lettered or unreadable (one line says how much)
  3    Segment stayed unreachable past the retry budget (those events are in the dead letters); a --watch
       dead-letters nothing for an outage: Segment stayed unreachable for --max_outage_hours, or the watch was
       drained during an outage (the files it held are not recorded in the ledger: the next watch sends them)
  4    the run failed after it started (an output could not be written, a worker failed): the events not
       delivered or dead-lettered are not recorded in the ledger; run again
  5    the summary does not balance (events lost on the way): nothing is recorded in the ledger
  6    Segment rejected every event it was sent (400/413) and accepted none (they are in the dead letters)
  130  interrupted (Ctrl-C); 143 terminated (SIGTERM): nothing is recorded in the ledger (a --watch drains on the
       first Ctrl-C or SIGTERM and exits as a finished run; a second one interrupts it, and it keeps in the
       ledger the files it delivered)
"""
import argparse
import logging
import os
import shutil
import signal
import sys
import threading
from typing import Any, NamedTuple, Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import S3Options

from currents_to_segment.pipeline import (
    assembly, compact, config, job_control, plan, replay, run_log, run_report, sample_bucket, summary)
from currents_to_segment.pipeline.monitor import Monitor
from currents_to_segment.pipeline.options import ConfigError, CurrentsToSegmentOptions, storage_reason
# The exit statuses of the table above, importable from the entry point as well as from the report that decides them.
from currents_to_segment.pipeline.run_report import (  # pylint: disable=unused-import
    EXIT_ALL_REJECTED, EXIT_CONFIG_ERROR, EXIT_DEAD_LETTERS, EXIT_INTERRUPTED, EXIT_OK, EXIT_RUN_FAILED,
    EXIT_SEGMENT_UNREACHABLE, EXIT_TERMINATED, EXIT_UNBALANCED, KEEP_RUN_DIR)
from currents_to_segment.transforms import ledger, ledger_files, metrics, progress
from currents_to_segment.transforms import watch as transforms_watch
from currents_to_segment.transforms.file_access import FileAccess

SUBCOMMANDS = {"make-sample-bucket": sample_bucket.main, "replay-dead-letters": replay.main,
               "compact-ledger": compact.main}


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

    def reclaim(self):
        """Take back the signals a runner took while it started: Beam's Flink job server sets a Ctrl-C handler of its
        own that stops the job server (and so an embedded cluster and its job) before interrupting the run, so a
        watch could not drain on Ctrl-C."""
        if self._previous:
            for signum in self.NAMES:
                signal.signal(signum, self._handle)


def _help_parser():
    parser = argparse.ArgumentParser(
        prog="python -m pipeline",
        description="Send Braze Currents Avro events to Segment as track calls (an Apache Beam job).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Every standard Beam option (--runner, --project, --temp_location, ...) passes through. "
               "Subcommands: 'make-sample-bucket DIR' writes a demo Currents bucket; 'replay-dead-letters DIR' "
               "resends dead-lettered calls unchanged (see 'replay-dead-letters --help'); 'compact-ledger LEDGER' "
               "merges a ledger's small files.\n\n"
               + __doc__[__doc__.index("Exit status"):])
    CurrentsToSegmentOptions._add_argparse_args(parser)  # pylint: disable=protected-access
    return parser


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
            signals.reclaim()
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
    pipeline = beam.Pipeline(runner=job_control.runner(job.pipeline_options, job_config.run_id),
                             options=job.pipeline_options)
    assembly.build(pipeline, job_config)
    metrics.reset_process_totals()
    monitor = Monitor(job_config, lambda counters: run_report.live_summary(counters, job_config)).start()
    log_path = os.path.join(job_config.run_dir, "run.log") if job_config.run_dir else None
    log = run_log.RunLog(log_path).open() if log_path else None
    try:
        ended = _run(pipeline, _Signals(_drainer(job_config.watch)))
        if ended.signum == run_log.WORKER_FAILED:
            ended = _Ended(ended.result, RuntimeError(log.worker_failure), None)
        if ended.error is not None:
            _stop_job(ended.result, pipeline.runner, job.pipeline_options)
        status = _report(ended, job_config, log_path, monitor)
    finally:
        monitor.stop()
        if log is not None and not until_exit:
            log.close()
        if job_config.watch:
            _remove_stop_marker(job_config.watch.stop_marker)
    if status not in KEEP_RUN_DIR and job_config.run_dir:  # kept only where the run's last line names its log
        shutil.rmtree(job_config.run_dir, ignore_errors=True)
    return status


def _stop_job(result, runner, pipeline_options):
    """A run that did not complete cancels its job where the job would outlive it (a Flink cluster, Dataflow),
    before its summary: nothing is sent, nor recorded in the ledger, after the run's last line. A third Ctrl-C
    leaves the job as it is."""
    try:
        for line in job_control.stop_job(result, runner, pipeline_options):
            print(line, file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print("warning: stopped cancelling the job: it may still be running", file=sys.stderr, flush=True)


def _report(ended, job_config, log_path, monitor):
    """Hand how the run ended to the report; the exit status it gives."""
    if ended.graph_only:
        return run_report.report_job_graph_written()
    counters = summary.run_counters(ended.result, job_config.run_dir, failed=ended.error is not None)
    if ended.error is None:
        return run_report.report_completed(counters, job_config, monitor)
    if ended.signum:
        return run_report.report_stopped(job_config, ended.signum, _Signals.NAMES[ended.signum], counters, log_path,
                                         monitor)
    return run_report.report_failed(job_config, ended.error, counters, log_path, monitor)


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


def _migrate_ledger(ledger_dir):
    """Move a ledger of the first layout into partitions, once, with a line saying so (ConfigError when it
    cannot: nothing has been sent)."""
    try:
        moved, files = ledger_files.migrate(ledger_dir)
    except Exception as error:  # pylint: disable=broad-except  # each filesystem fails its own way
        raise ConfigError(f"cannot move the ledger {ledger_dir} into partitions: {storage_reason(error)}") from error
    if files:
        print(f"ledger {ledger_dir}: moved {moved:,} entries of {files:,} files of the first layout into partitions "
              "(once; later runs read only the partitions of their inputs)", file=sys.stderr)


def run(argv, until_exit=False):
    """Run the job with these command-line arguments; return the exit status. until_exit: the process ends with
    the run (the command line), so Beam's output stays in the run's log until it does."""
    job = config.load(argv, ledger.new_run_id())
    options = job.options
    if job.config is None:  # --plan
        selection = job.selection
        print(plan.describe(selection.patterns, None if options.rerun else job.ledger, selection.ledger_scope,
                            FileAccess(job.pipeline_options.view_as(S3Options)), job.destination, job.mapping,
                            selection.event_types))
        return EXIT_OK
    for pattern in job.config.inputs.get("unmatched", ()):
        logging.warning("no file matched --input %s", pattern)
    run_report.warn_if_beyond_dedup(job.config.selection.end)
    job_control.check_workers(job.pipeline_options)
    if job.config.ledger:
        _migrate_ledger(job.config.ledger)
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
