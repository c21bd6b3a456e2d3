"""Entry point: parse options, check them, run the job, print and write the summary.

    python -m pipeline --runner=FnApiRunner --input 'bucket/**/*.avro' --dry_run_output out/requests
    python -m pipeline make-sample-bucket DIR    # write a demo Currents bucket
    python -m pipeline replay-dead-letters DIR   # resend dead-lettered calls as they were

Exit status: 0 when the run completed (dead letters are reported, not fatal), 1 on a configuration
error (one line on stderr), 2 with --fail_on_dead_letters when anything was dead-lettered, 3 when
Segment stayed unreachable past the retry budget (those events are in the dead letters).
"""
import argparse
import datetime
import logging
import re
import sys

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, S3Options

from pipeline import assembly, partitions, plan, replay, sample_bucket, summary
from pipeline.options import (
    ConfigError, CurrentsToSegmentOptions, field_names, key_source, parse_integrations, resolve_endpoint,
    resolve_write_key, split_write_key, storage_reason, unknown_flags, validate)
from transforms import ledger, metrics
from transforms.s3_files import FileAccess
from transforms.segment_client import SegmentConfigError, envelope_bytes

EXIT_CONFIG_ERROR = 1
EXIT_DEAD_LETTERS = 2
EXIT_SEGMENT_UNREACHABLE = 3
SUBCOMMANDS = {"make-sample-bucket": sample_bucket.main, "replay-dead-letters": replay.main}
# Segment keeps messageIds for about a day: a replay of older events is not deduplicated.
DEDUP_WINDOW = datetime.timedelta(hours=24)
_CONFIG_ERROR_TEXT = re.compile(r"SegmentConfigError: ([^\n]+)")


def _help_parser():
    parser = argparse.ArgumentParser(
        prog="python -m pipeline",
        description="Send Braze Currents Avro events to Segment as track calls (an Apache Beam job).",
        epilog="Every standard Beam option (--runner, --project, --temp_location, ...) passes through. "
               "Subcommands: 'make-sample-bucket DIR' writes a demo Currents bucket; 'replay-dead-letters DIR' "
               "resends dead-lettered calls unchanged (see 'replay-dead-letters --help').")
    CurrentsToSegmentOptions._add_argparse_args(parser)  # pylint: disable=protected-access
    return parser


def _reject_unknown_flags(argv):
    unknown = unknown_flags(argv, {str(cls): cls for cls in PipelineOptions.__subclasses__()}.values())
    if unknown:
        raise ConfigError(f"unknown option(s): {' '.join(unknown)} (see --help)")


def _require_matches(patterns):
    try:
        results = FileSystems.match(patterns, limits=[1] * len(patterns))
    except Exception as error:  # pylint: disable=broad-except  # each filesystem raises its own kinds
        raise ConfigError(f"cannot list --input {' '.join(patterns)}: {storage_reason(error)}") from error
    if not any(result.metadata_list for result in results):
        raise ConfigError(f"no file matched --input {' '.join(patterns)}")
    for pattern, result in zip(patterns, results):
        if not result.metadata_list:
            logging.warning("no file matched --input %s", pattern)


def _require_writable(options, run_id):
    """ConfigError when an output folder cannot be written (credentials, permissions, a missing bucket):
    found before any event is sent, not after, when the dead letters of sent events would be lost.

    Writes and deletes one small marker object in each; a marker that cannot be deleted is left behind.
    """
    folders = {"--dead_letter_output": options.dead_letter_output, "--dry_run_output": options.dry_run_output,
               "--ledger": options.ledger,
               "--summary_output": options.summary_output and FileSystems.split(options.summary_output)[0]}
    for flag, folder in folders.items():
        if not folder or "://" not in folder:
            continue  # local folders: no credentials involved, and no empty folder left in the way
        marker = FileSystems.join(folder, f".write-check-{run_id}")
        try:
            with FileSystems.create(marker) as stream:
                stream.write(b"currents-to-segment write check\n")  # object stores refuse empty uploads
        except Exception as error:  # pylint: disable=broad-except  # each filesystem raises its own kinds
            raise ConfigError(f"cannot write {flag} {folder}: {storage_reason(error)}") from error
        try:
            FileSystems.delete([marker])
        except Exception as error:  # pylint: disable=broad-except
            logging.warning("could not delete the write-check marker %s: %s", marker, storage_reason(error))


def _warn_if_beyond_dedup(end):
    if end is None:
        return
    age = datetime.datetime.now(datetime.timezone.utc) - end
    if age > DEDUP_WINDOW:
        print(f"warning: the selected range ended {age.days} days {age.seconds // 3600} hours ago; Segment "
              "deduplicates messageIds for about 24 h only, so events already sent will be duplicated in "
              "destinations other than warehouses (consider --integrations '{\"All\": false}').",
              file=sys.stderr)


def _segment_config_error(error):
    """The one line of a SegmentConfigError, whether raised here or re-raised as text by a runner."""
    while error is not None:
        if isinstance(error, SegmentConfigError):
            return str(error).splitlines()[0]
        found = _CONFIG_ERROR_TEXT.search(str(error))
        if found:
            return found.group(1)
        error = error.__cause__ or error.__context__
    return None


def _select(options):
    """What the run reads; ConfigError when the root cannot be listed."""
    try:
        return partitions.select_input(options)
    except Exception as error:  # pylint: disable=broad-except  # missing folder, bucket, credentials or extra
        raise ConfigError(f"cannot list --currents_root {options.currents_root}: {storage_reason(error)}") from error


def _require_input(options, selection):
    """ConfigError when nothing is there to read."""
    if options.input:
        _require_matches(options.input)
    elif not selection.partitions:
        raise ConfigError(f"no hour partition selected under --currents_root {options.currents_root} "
                          "(check --start, --end, --event_types)")


def _client_settings(options, source):
    """The SegmentClient's keyword arguments (the key as a KeySource, resolved on the workers)."""
    return {
        "endpoint": resolve_endpoint(options), "key_source": source,
        "max_attempts": options.max_retry_attempts, "max_retry_seconds": options.max_retry_seconds,
        "backoff_base": options.retry_backoff_seconds, "timeout": (5.0, options.request_timeout_seconds),
        "max_requests_per_second": options.max_requests_per_second,
    }


def _report(result, options):
    """Print and write the summary of a finished run; return the exit status it calls for."""
    counters = summary.counters_of(result)
    run_summary = summary.summarize(counters, by_event_time=options.by_event_time, with_ledger=bool(options.ledger))
    if options.summary_output:
        summary.write_json(options.summary_output, run_summary)
    print(summary.format_table(run_summary))
    print(f"dead letters: {options.dead_letter_output}"
          + (f"   dry-run requests: {options.dry_run_output}" if options.dry_run_output else "")
          + (f"   summary: {options.summary_output}" if options.summary_output else ""))
    unreachable = counters.get(metrics.RETRIES_EXHAUSTED, 0)
    if unreachable:
        print(f"error: Segment stayed unreachable past the retry budget for {unreachable} events; they are in "
              f"the dead letters under {options.dead_letter_output} (replay them with: python -m pipeline "
              f"replay-dead-letters {options.dead_letter_output})", file=sys.stderr)
        return EXIT_SEGMENT_UNREACHABLE
    undelivered = run_summary["dead_lettered"] or run_summary["unreadable_files"]
    return EXIT_DEAD_LETTERS if undelivered and options.fail_on_dead_letters else 0


def run(argv):
    """Run the job with these command-line arguments; return the exit status."""
    _reject_unknown_flags(argv)
    key_flag, argv = split_write_key(argv)
    pipeline_options = PipelineOptions(argv)
    # Listing happens here too (inputs, partitions, plan): with the job's filesystem options
    # (endpoints, credentials of S3, GCS, Azure).
    FileSystems.set_options(pipeline_options)
    options = pipeline_options.view_as(CurrentsToSegmentOptions)
    source = key_source(options, key_flag)
    write_key = resolve_write_key(source)
    validate(options, write_key)
    selection = _select(options)
    if options.plan:
        print(plan.describe(selection.patterns, None if options.rerun else options.ledger, selection.ledger_scope,
                            FileAccess(options.view_as(S3Options))))
        return 0
    _require_input(options, selection)
    run_id = ledger.new_run_id()
    _require_writable(options, run_id)
    _warn_if_beyond_dedup(selection.end)
    pipeline = beam.Pipeline(options=pipeline_options)
    assembly.build(pipeline, options, selection=selection,
                   client_settings=None if options.dry_run_output else _client_settings(options, source),
                   envelope=envelope_bytes(write_key), integrations=parse_integrations(options),
                   protect={"redact": field_names(options.redact_fields), "hash": field_names(options.hash_fields)},
                   run_id=run_id)
    result = pipeline.run()
    if getattr(result, "has_job", True) is False:
        # Only the job graph was written (a Dataflow template launch): the runner starts the job later.
        print("job graph written; its counters will be on the runner's job page", file=sys.stderr)
        return 0
    result.wait_until_finish()
    return _report(result, options)


def main(argv=None):
    """Console entry point; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in SUBCOMMANDS:
        return SUBCOMMANDS[argv[0]](argv[1:])
    if {"-h", "--help"} & set(argv):
        _help_parser().print_help()
        return 0
    try:
        return run(argv)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    except Exception as error:  # pylint: disable=broad-except
        line = _segment_config_error(error)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
