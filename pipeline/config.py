"""The job's configuration: every option checked once, before anything runs, into one frozen JobConfig.

`load(argv)` checks, in this order, and stops at the first problem with a ConfigError (one line, exit 1):
1. the options themselves (values, combinations, the endpoint, the input: what it names, that it matches);
2. that every output can be written (dead letters, dry-run requests, summary, ledger; local or in a bucket);
3. the write key (found, readable, sendable in an HTTP header, and leaving room for an event in a request).
"""
import datetime
import difflib
import json
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Optional

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, S3Options, StandardOptions

from currents_to_segment.pipeline import partitions, runners
from currents_to_segment.pipeline.options import (
    MAX_REQUESTS_IN_FLIGHT, WRITE_KEY_ENV, ConfigError, CurrentsToSegmentOptions, field_names, key_source,
    resolve_endpoint, resolve_write_key, split_write_key, storage_reason, unknown_flags)
from currents_to_segment.transforms import ledger
from currents_to_segment.transforms.currents import catalog, mapping_file, schemas
from currents_to_segment.transforms.currents.partitions import parse_hour
from currents_to_segment.transforms.currents.records import RecordFilter
from currents_to_segment.transforms.currents.track_calls import TrackSettings
from currents_to_segment.transforms.deliver import DeliverySettings
from currents_to_segment.transforms.progress import ProgressSettings
from currents_to_segment.transforms.segment import api as segment_api
from currents_to_segment.transforms.segment.batching import BatchSettings
from currents_to_segment.transforms.segment.client import ClientSettings
from currents_to_segment.transforms.segment.pacing import OUTAGE_PROBE_SECONDS, request_events
from currents_to_segment.transforms.watch import WatchSettings

_FLOAT_OPTIONS = ("max_requests_per_second", "max_events_per_second", "max_retry_seconds", "retry_backoff_seconds", "request_timeout_seconds",
                  "progress_seconds", "flush_seconds", "watch_interval", "full_listing_interval", "max_outage_hours",
                  "report_refresh_seconds")
_POSITIVE_OPTIONS = ("max_requests_per_second", "max_events_per_second", "max_retry_seconds", "retry_backoff_seconds",
                     "request_timeout_seconds", "flush_seconds", "watch_interval", "full_listing_interval",
                     "max_outage_hours", "report_refresh_seconds")
_AT_LEAST_ONE = ("window_seconds", "max_retry_attempts", "max_requests_in_flight")
_GLOB = frozenset("*?[")
_CONNECT_TIMEOUT_SECONDS = 5.0  # to open a connection to Segment; --request_timeout_seconds is for the answer


@dataclass(frozen=True)
class JobConfig:  # pylint: disable=too-many-instance-attributes  # the whole job, in one place
    """Everything the assembly and the report need, checked."""

    run_id: str
    started: datetime.datetime
    selection: partitions.Selection
    inputs: dict  # what was asked for, for the summary
    dead_letter_output: str
    dry_run_output: Optional[str]
    summary_output: Optional[str]
    ledger: Optional[str]
    rerun: bool
    by_event_time: bool
    fail_on_dead_letters: bool
    delivery: DeliverySettings  # what each family's delivery is built from
    flush_seconds: float  # how often held requests, dead letters and ledger entries are made final
    destination: Optional[dict]  # where events go and what shapes them, as the ledger records it (see ledger)
    s3_options: Any  # the job's S3Options, for listing and opening s3:// files with one client
    run_dir: Optional[str]  # on this machine: the run's log and its processes' tallies (None: workers elsewhere)
    watch: Optional[WatchSettings] = None  # --watch; None: a batch run over what is there now
    metrics_host: str = "127.0.0.1"
    metrics_port: Optional[int] = None  # --metrics_port: live metrics and health, served by this process
    report_output: Optional[str] = None  # --report_output: the run's HTML report
    report_refresh_seconds: float = 300.0  # how often a watch rewrites it

    @property
    def skip_recorded(self):
        """True when files the ledger holds are skipped."""
        return bool(self.ledger) and not self.rerun

    def delivery_options(self):
        """The options that shape what Segment receives, for the summary."""
        track, batch, client = self.delivery.track, self.delivery.batch, self.delivery.client
        return {
            "endpoint": client.endpoint if client else None,
            "window_seconds": batch.window_seconds, "max_batch_bytes": batch.max_bytes,
            "max_batch_events": batch.max_events,
            "mapping": track.mapping.name, "include_anonymous_users": track.include_anonymous,
            "integrations": track.integrations, "message_id_namespace": track.message_id_namespace,
            "passthrough_fields": track.passthrough, "redact_fields": sorted(track.redact),
            "hash_fields": sorted(track.hashed),
            "max_retry_attempts": client.max_attempts if client else None,
            "max_retry_seconds": client.max_retry_seconds if client else None,
            "events_per_second_per_worker": client.events_per_second if client else None,
            "max_requests_in_flight": client.requests_in_flight if client else None,
        }


@dataclass(frozen=True)
class Job:
    """A loaded command line: Beam's options, ours, what it selects, and the JobConfig (None for --plan)."""

    pipeline_options: PipelineOptions
    options: CurrentsToSegmentOptions
    selection: partitions.Selection
    config: Optional[JobConfig]
    mapping: catalog.Mapping  # the run's (also for --plan)
    destination: Optional[dict] = None  # for --plan with --ledger: the write key's part is None without a key
    ledger: Optional[str] = None  # --ledger, absolute (for --plan too)


# --- 1. the options ---------------------------------------------------------------------------------

def parse_integrations(text):
    """The --integrations JSON object, or None: destination names (each once) to true or false, or to an object
    of that destination's options (Segment's integrations object)."""
    if text is None:
        return None
    try:
        integrations = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=mapping_file.objects_without_duplicates)
    except ValueError as error:
        raise ConfigError(f"--integrations is not JSON: {error}") from error
    if not isinstance(integrations, dict):
        raise ConfigError('--integrations must be a JSON object, e.g. {"All": false}')
    wrong = [name for name, value in integrations.items() if not isinstance(value, (bool, dict))]
    if wrong:
        raise ConfigError(f"--integrations {wrong[0]!r} is {json.dumps(integrations[wrong[0]])}: each destination "
                          'takes true or false (or an object of its options), e.g. {"All": false, "Mixpanel": true}')
    return integrations


def _reject_constant(name):
    raise ValueError(f"{name} is not JSON")


def _check_input(options):
    if options.input and options.currents_root:
        raise ConfigError("give either --input or --currents_root, not both")
    if not options.input and not options.currents_root:
        raise ConfigError("no input: give --input PATTERN (repeatable) or --currents_root URI")
    ranged = [f"--{name}" for name in ("start", "end", "by_event_time") if getattr(options, name)]
    if ranged and not options.currents_root:
        raise ConfigError(f"{', '.join(ranged)} select partitions under --currents_root; with --input, "
                          "name the files in the pattern instead")
    hours = {}
    for name in ("start", "end"):
        if getattr(options, name):
            try:
                hours[name] = parse_hour(getattr(options, name))
            except ValueError as error:
                raise ConfigError(f"--{name}: {error}") from error
    if "start" in hours and "end" in hours and hours["end"] <= hours["start"]:
        raise ConfigError(f"--end {options.end} is not after --start {options.start}")
    if options.by_event_time and len(hours) < 2:
        raise ConfigError("--by_event_time needs both --start and --end")
    if options.late_hours < 0:
        raise ConfigError(f"--late_hours must be 0 or more, got {options.late_hours}")
    for pattern in options.input or ():
        if "://" not in pattern and not _GLOB & set(pattern) and os.path.isdir(pattern):
            raise ConfigError(f"--input {pattern} names a folder: give a file pattern, e.g. "
                              f"'{pattern.rstrip('/')}/**' for every file under it")


def _check_numbers(options):
    for name in _FLOAT_OPTIONS:
        value = getattr(options, name)
        if value is not None and not math.isfinite(value):
            raise ConfigError(f"--{name} must be a finite number, got {value}")
    for name in _POSITIVE_OPTIONS:
        value = getattr(options, name)
        if value is not None and value <= 0:
            raise ConfigError(f"--{name} must be positive, got {value}")
    if options.progress_seconds < 0:
        raise ConfigError(f"--progress_seconds must be 0 (no progress lines) or more, got {options.progress_seconds}")
    for name in _AT_LEAST_ONE:
        if getattr(options, name) is not None and getattr(options, name) < 1:
            raise ConfigError(f"--{name} must be at least 1, got {getattr(options, name)}")
    if not 1 <= options.max_batch_events <= segment_api.MAX_BATCH_EVENTS:
        raise ConfigError(f"--max_batch_events must be between 1 and {segment_api.MAX_BATCH_EVENTS}, "
                          f"got {options.max_batch_events}")
    if options.max_requests_in_flight > MAX_REQUESTS_IN_FLIGHT:
        raise ConfigError(f"--max_requests_in_flight must be at most {MAX_REQUESTS_IN_FLIGHT} (each is a thread and a "
                          f"connection per family in every worker), got {options.max_requests_in_flight}")
    if options.max_batch_bytes > segment_api.MAX_REQUEST_BYTES:
        raise ConfigError(f"--max_batch_bytes must be at most {segment_api.MAX_REQUEST_BYTES}, "
                          f"got {options.max_batch_bytes}")


def check_options(options):
    """ConfigError for option values the job cannot run with (nothing is listed, written or read here)."""
    _check_input(options)
    _check_numbers(options)
    parse_integrations(options.integrations)
    resolve_endpoint(options)
    if options.message_id_namespace is not None and not options.message_id_namespace.strip():
        raise ConfigError("--message_id_namespace is empty (an unset variable?): it would change every messageId; "
                          "give a namespace, or leave the option out to send the Currents ids")
    overlap = field_names(options.redact_fields) & field_names(options.hash_fields)
    if overlap:
        raise ConfigError(f"{', '.join(sorted(overlap))}: in both --redact_fields and --hash_fields")
    if options.watch and options.by_event_time:
        raise ConfigError("--by_event_time selects a closed range of hours to send; --watch forwards files as they "
                          "land: give one or the other")
    if options.rerun and not options.ledger:
        raise ConfigError("--rerun only makes sense with --ledger")
    if options.ledger and options.dry_run_output:
        raise ConfigError("--ledger records files once Segment has their events; a dry run sends nothing, so it "
                          "takes no --ledger (use --plan with --ledger to see what the ledger would skip)")


def _check_event_types(options, mapping):
    """ConfigError naming an --event_types name that is no Currents type and no family of the mapping (it would
    select nothing, silently, with --input)."""
    known = set(mapping.families) | set(mapping.events) | set(schemas.event_types())
    for name in sorted(field_names(options.event_types)):
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.6)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(f"--event_types {name} is no Currents event type and no family of the {mapping.name} "
                              f"mapping ({', '.join(mapping.families)}){hint}")


def _select(options, mapping):
    """What the run reads; ConfigError when an event type is unknown or the root cannot be listed."""
    _check_event_types(options, mapping)
    try:
        return partitions.select_input(options, mapping)
    except Exception as error:  # pylint: disable=broad-except  # missing folder, bucket, credentials or extra
        raise ConfigError(f"cannot list --currents_root {options.currents_root}: {storage_reason(error)}") from error


def _require_matches(patterns):
    try:
        results = FileSystems.match(patterns, limits=[1] * len(patterns))
    except Exception as error:  # pylint: disable=broad-except  # each filesystem raises its own kinds
        raise ConfigError(f"cannot list --input {' '.join(patterns)}: {storage_reason(error)}") from error
    if not any(result.metadata_list for result in results):
        folders = [p for p in patterns if not _GLOB & set(p)]
        hint = f" (to read a folder, give '{folders[0].rstrip('/')}/**')" if folders else ""
        raise ConfigError(f"no file matched --input {' '.join(patterns)}{hint}")
    return [pattern for pattern, result in zip(patterns, results) if not result.metadata_list]


def _require_input(options, selection):
    """ConfigError when nothing is there to read; the patterns that matched nothing. A watch waits for files."""
    if options.watch:
        return []
    if options.input:
        return _require_matches(options.input)
    if not selection.partitions:
        raise ConfigError(f"no hour partition selected under --currents_root {options.currents_root} "
                          "(check --start, --end, --event_types)")
    return []


# --- 2. the outputs ---------------------------------------------------------------------------------

def _nearest_existing_folder(path):
    """The nearest folder of a local path that exists; ConfigError when a file stands in the way."""
    current = os.path.abspath(path)
    while not os.path.exists(current):
        current = os.path.dirname(current)
    if not os.path.isdir(current):
        raise ValueError(f"{current} is a file, not a folder")
    return current


def _write_marker(folder, run_id):
    marker = FileSystems.join(folder, f".write-check-{run_id}")
    with FileSystems.create(marker) as stream:
        stream.write(b"currents-to-segment write check\n")  # object stores refuse empty uploads
    FileSystems.delete([marker])


def _metrics_port(options, local_dir):
    """--metrics_port, checked: a port number, on a runner whose workers are on this machine."""
    port = options.metrics_port
    if port is None:
        return None
    if not 0 <= port <= 65535:
        raise ConfigError(f"--metrics_port must be a port number (0-65535; 0 picks a free one), got {port}")
    if local_dir is None:
        raise ConfigError("--metrics_port serves the counts of workers on this machine, and Dataflow's are elsewhere: "
                          "their counters are in Cloud Monitoring (see docs/runners.md)")
    return port


def require_writable(options, run_id):
    """ConfigError when an output cannot be written (a file in the way, permissions, credentials, a missing
    bucket): found before any event is sent, not after, when the dead letters of sent events would be lost.

    Writes and deletes one small marker in each output folder, or for a local folder that does not exist
    yet, in its nearest existing parent (nothing is left behind).
    """
    files = {"--summary_output": options.summary_output, "--report_output": options.report_output}
    for flag, path in files.items():
        if path and "://" not in path and os.path.isdir(path):
            raise ConfigError(f"cannot write {flag} {path}: it is a folder; give a file name")
    folders = {"--dead_letter_output": options.dead_letter_output, "--dry_run_output": options.dry_run_output,
               "--ledger": options.ledger,
               **{flag: FileSystems.split(path)[0] or "." for flag, path in files.items() if path}}
    for flag, folder in folders.items():
        if not folder:
            continue
        shown = files.get(flag) or folder
        try:
            _write_marker(folder if "://" in folder else _nearest_existing_folder(folder), run_id)
        except Exception as error:  # pylint: disable=broad-except  # each filesystem raises its own kinds
            raise ConfigError(f"cannot write {flag} {shown}: {storage_reason(error)}") from error


# --- 3. the key -------------------------------------------------------------------------------------

def check_key(key, source):
    """ConfigError when the write key cannot be sent as HTTP Basic credentials (never shows the key)."""
    if any(not 0x21 <= ord(char) <= 0x7E for char in key):
        raise ConfigError(f"the write key from {source} has characters that cannot be sent in an HTTP header "
                          "(spaces, control or non-ASCII characters): check how it was stored")


def _require_key(options, source):
    if options.dry_run_output:
        return ""
    write_key = resolve_write_key(source)
    if not write_key:
        raise ConfigError(f"no Segment write key: set {WRITE_KEY_ENV}, or give --segment_write_key_file or "
                          "--segment_write_key_secret (or use --dry_run_output DIR to write requests without sending)")
    check_key(write_key, source)
    return write_key


def _events_per_second_share(options):
    """The share of --max_events_per_second of each worker process (None: no budget)."""
    return options.max_events_per_second / runners.budget_workers(options)[0] if options.max_events_per_second else None


def _request_events(options):
    """The most events in one request: --max_batch_events, and under a budget at most a quarter of a second of
    a process's share of it (so that a workspace limit counted per second never sees a burst). Decided here, once:
    requests are cut to it where they are made."""
    share = None if options.dry_run_output else _events_per_second_share(options)
    return request_events(share, options.max_batch_events)


def _batching(options, write_key, request_size):
    problem = segment_api.request_bytes_problem(options.max_batch_bytes, write_key)
    if problem:
        raise ConfigError(f"--max_batch_bytes {problem}")
    return BatchSettings(options.window_seconds, options.max_batch_bytes, request_size,
                         segment_api.envelope_bytes(write_key))


# --- the whole ----------------------------------------------------------------------------------------

def _inputs(options, selection, unmatched):
    if options.input:
        inputs = {"input": list(options.input), "unmatched": unmatched}
        if selection.event_types is not None:
            inputs["event_types"] = sorted(selection.event_types)
        return inputs
    return {"currents_root": options.currents_root, "start": options.start, "end": options.end,
            "event_types": options.event_types, "by_event_time": options.by_event_time,
            "late_hours": options.late_hours if options.by_event_time else None,
            "partitions": len(selection.partitions)}


def budget_advice(options):
    """The line said at start when the job may go past Segment's workspace limit without a budget (a run over
    --currents_root, or a watch), else None."""
    if options.max_events_per_second or options.dry_run_output or not (options.currents_root or options.watch):
        return None
    return ("note: Segment queues events, or answers 429, past about 1,000 events/s per workspace; give this job a "
            "budget with --max_events_per_second N (each worker process takes its share, see --help)")


def _client_settings(options, request_size):
    return ClientSettings(
        endpoint=resolve_endpoint(options), timeout=(_CONNECT_TIMEOUT_SECONDS, options.request_timeout_seconds),
        max_attempts=options.max_retry_attempts, max_retry_seconds=options.max_retry_seconds,
        backoff_base=options.retry_backoff_seconds, max_requests_per_second=options.max_requests_per_second,
        max_request_bytes=options.max_batch_bytes, max_events=request_size,
        events_per_second=_events_per_second_share(options), requests_in_flight=options.max_requests_in_flight,
        probe_seconds=_probe_seconds(options), max_outage_seconds=_max_outage_seconds(options))


def _probe_seconds(options):
    """How often Segment is probed during an outage: every OUTAGE_PROBE_SECONDS, or every --max_retry_seconds when
    that is shorter."""
    return min(OUTAGE_PROBE_SECONDS, options.max_retry_seconds)


def _max_outage_seconds(options):
    """A watch's --max_outage_hours in seconds (it holds its files during an outage); None for a batch run."""
    return options.max_outage_hours * 3600 if options.watch else None


def load_mapping(options):
    """The catalog.Mapping of the options: a built-in one, or --mapping_file's changes to one."""
    if not options.mapping_file:
        return catalog.BUILT_IN[options.mapping]
    try:
        with FileSystems.open(options.mapping_file) as stream:
            text = stream.read().decode("utf-8")
    except Exception as error:  # pylint: disable=broad-except  # each filesystem fails its own way
        raise ConfigError(f"cannot read --mapping_file {options.mapping_file}: {type(error).__name__}: {error}"
                          .splitlines()[0]) from None
    try:
        return mapping_file.parse(text, options.mapping_file, options.mapping)
    except mapping_file.MappingFileError as error:
        raise ConfigError(str(error)) from None


def check_field_names(options, mapping):
    """ConfigError naming a --redact_fields or --hash_fields name that nothing the mapping sends carries (what it
    is instead, its close matches): a misspelt name would otherwise send the value in clear."""
    for flag in ("redact_fields", "hash_fields"):
        for name in sorted(field_names(getattr(options, flag))):
            problem = catalog.field_name_problem(mapping, name, options.passthrough_fields)
            if problem:
                raise ConfigError(f"--{flag} {name}: {problem}")


def _track(options, mapping):
    return TrackSettings(options.message_id_namespace, options.passthrough_fields,
                         parse_integrations(options.integrations), field_names(options.redact_fields),
                         field_names(options.hash_fields), mapping, options.include_anonymous_users)


def _record_filter(options, selection):
    time_range = (int(selection.start.timestamp()), int(selection.end.timestamp())) if options.by_event_time else None
    return RecordFilter(options.include_anonymous_users, time_range)


def _plan_destination(options, source, mapping):
    """The destination a --plan with --ledger compares the ledger's entries with; without a readable write key,
    its key part is unknown (entries of any key count)."""
    if not options.ledger:
        return None
    try:
        write_key = resolve_write_key(source) or None
    except ConfigError:
        write_key = None
    return ledger.destination_of(resolve_endpoint(options), write_key, _track(options, mapping).shape())


def _watch(options, pipeline_options, mapping, run_id):
    """The WatchSettings of a --watch run (which runs in streaming mode), else None."""
    if not options.watch:
        return None
    runners.check_watch_runner(pipeline_options)
    pipeline_options.view_as(StandardOptions).streaming = True
    stop_marker = FileSystems.join(options.dead_letter_output, f".stop-{run_id}")
    return WatchSettings(partitions.watched_input(options, pipeline_options, mapping), options.watch_interval, time.time(), stop_marker,
                         full_listing_interval=options.full_listing_interval)


def reject_unknown_flags(argv):
    """ConfigError naming the arguments no PipelineOptions class (ours or Beam's) defines."""
    unknown = unknown_flags(argv, {str(cls): cls for cls in PipelineOptions.__subclasses__()}.values())
    if unknown:
        raise ConfigError(f"unknown option(s): {' '.join(unknown)} (see --help)")


def load(argv, run_id):
    """The Job of a command line, checked in the order of the module doc; ConfigError at the first problem."""
    reject_unknown_flags(argv)
    key_flag, argv = split_write_key(argv)
    pipeline_options = PipelineOptions(argv)
    runners.keep_job_streams_open(pipeline_options, argv)
    # Listing happens here too (inputs, partitions, plan): with the job's filesystem options
    # (endpoints, credentials of S3, GCS, Azure).
    FileSystems.set_options(pipeline_options)
    options = pipeline_options.view_as(CurrentsToSegmentOptions)
    check_options(options)
    mapping = load_mapping(options)
    check_field_names(options, mapping)
    source = key_source(options, key_flag)
    selection = _select(options, mapping)
    ledger_dir = partitions.absolute(options.ledger) if options.ledger else None  # the same folder on any worker
    if options.plan:
        return Job(pipeline_options, options, selection, None, mapping, _plan_destination(options, source, mapping),
                   ledger_dir)
    unmatched = _require_input(options, selection)
    require_writable(options, run_id)
    write_key = _require_key(options, source)
    request_size = _request_events(options)
    client = None if options.dry_run_output else _client_settings(options, request_size)
    track = _track(options, mapping)
    local_dir = runners.run_dir(pipeline_options, run_id)
    watch = _watch(options, pipeline_options, mapping, run_id)
    config = JobConfig(
        run_id=run_id, started=datetime.datetime.now(datetime.timezone.utc), selection=selection,
        inputs=_inputs(options, selection, unmatched), dead_letter_output=options.dead_letter_output,
        dry_run_output=options.dry_run_output, summary_output=options.summary_output, ledger=ledger_dir,
        rerun=options.rerun, by_event_time=options.by_event_time, fail_on_dead_letters=options.fail_on_dead_letters,
        delivery=DeliverySettings(
            track=track, record_filter=_record_filter(options, selection),
            batch=_batching(options, write_key, request_size),
            client=client, key_source=None if options.dry_run_output else source,
            dead_letter_output=options.dead_letter_output, dry_run_output=options.dry_run_output, run_id=run_id,
            progress=ProgressSettings(0 if options.quiet else options.progress_seconds,
                                      client.retry_budget() if client else "", local_dir or "",
                                      _max_outage_seconds(options) if client else None, _probe_seconds(options)),
            stop_marker=watch.stop_marker if watch else None),
        flush_seconds=options.flush_seconds,
        destination=ledger.destination_of(client.endpoint, write_key, track.shape()) if client else None,
        s3_options=pipeline_options.view_as(S3Options), run_dir=local_dir,
        watch=watch, metrics_host=options.metrics_host, metrics_port=_metrics_port(options, local_dir),
        report_output=options.report_output, report_refresh_seconds=options.report_refresh_seconds)
    return Job(pipeline_options, options, selection, config, mapping, ledger=ledger_dir)

