"""Command-line options of the job, and their validation.

Every standard Beam option (--runner, --project, ...) passes through next to these.
"""
import argparse
import ipaddress
import json
import os
import urllib.parse

from apache_beam.io.filesystem import BeamIOError
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline import partitions
from transforms import segment_client, write_key

WRITE_KEY_ENV = "SEGMENT_WRITE_KEY"
REGION_ENDPOINTS = {"us": segment_client.US_ENDPOINT, "eu": segment_client.EU_ENDPOINT}
DEFAULT_MAX_BATCH_BYTES = 475_000  # below Segment's 500 KB, as Segment's own libraries aim


class ConfigError(Exception):
    """A wrong or missing option: the run stops at once with this one line."""


class StrictParser(argparse.ArgumentParser):
    """An argument parser whose errors are ConfigErrors (one line, exit 1) instead of an exit."""

    def error(self, message):
        raise ConfigError(message)


def unknown_flags(argv, option_classes):
    """The arguments of argv that none of these PipelineOptions classes defines."""
    parser = StrictParser(allow_abbrev=False, add_help=False)
    for options_class in option_classes:
        options_class._add_argparse_args(parser)  # pylint: disable=protected-access
    return parser.parse_known_args(argv)[1]


def storage_reason(error):
    """The innermost cause of a storage error in one line: Beam wraps each pattern's failure, and each
    listing's, in a BeamIOError keyed by path."""
    while isinstance(error, BeamIOError) and len(error.exception_details or {}) == 1:
        error = next(iter(error.exception_details.values()))
    first = error.args[0] if error.args and isinstance(error.args[0], str) else str(error)
    line = (first.strip().splitlines() or [type(error).__name__])[0]
    cause = getattr(error, "cause", None)  # a Google client's RetryError keeps the last failure here
    return f"{line} (last error: {storage_reason(cause)})" if isinstance(cause, Exception) else line


class CurrentsToSegmentOptions(PipelineOptions):
    """Options of the Braze Currents → Segment job."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--input", action="append", default=None, metavar="PATTERN",
            help="Currents Avro file pattern on any Beam filesystem (local, gs://, s3://, azfs://); "
                 "repeatable. '**' matches across folders, e.g. 'bucket/prefix/**/*.avro'. "
                 "Alternative to --currents_root.")
        parser.add_argument(
            "--currents_root", default=None, metavar="URI",
            help="Instead of --input: the Currents prefix configured in Braze (the folder holding the "
                 "dataexport.* folders), or any folder below it down to one event_type= folder. Hour "
                 "partitions are found by listing; with --start/--end only those hours are read.")
        parser.add_argument(
            "--start", default=None, metavar="HOUR",
            help="With --currents_root: first hour to read, UTC, YYYY-MM-DD or YYYY-MM-DDTHH (inclusive).")
        parser.add_argument(
            "--end", default=None, metavar="HOUR",
            help="With --currents_root: hour to stop before, UTC, YYYY-MM-DD or YYYY-MM-DDTHH (exclusive).")
        parser.add_argument(
            "--event_types", action="append", default=None, metavar="NAMES",
            help="With --currents_root: only these Currents event types or families (push, email, sms, "
                 "in_app, content_card, news_feed, canvas_campaign, other); comma-separated, repeatable.")
        parser.add_argument(
            "--by_event_time", action="store_true", default=False,
            help="Select events by their own `time` in [start, end) instead of by the hour Braze queued "
                 "them: also reads the --late_hours partitions after --end.")
        parser.add_argument(
            "--late_hours", type=int, default=24, metavar="N",
            help="With --by_event_time: hours of partitions after --end to look in for late events. Default 24.")
        parser.add_argument(
            "--plan", action="store_true", default=False,
            help="Only list the partitions and files that would be read, with sizes and event counts per "
                 "type and hour; send nothing.")
        parser.add_argument(
            "--ledger", default=None, metavar="PATH",
            help="Folder (any Beam filesystem) recording each input file once all its events were accepted or "
                 "dead-lettered; later runs skip the files it holds. For hourly incremental runs.")
        parser.add_argument(
            "--rerun", action="store_true", default=False,
            help="With --ledger: read every selected file again, even those already in the ledger.")
        parser.add_argument(
            "--integrations", default=None, metavar="JSON",
            help='Segment `integrations` object added to every call, e.g. \'{"All": false}\' to reach only '
                 "warehouses when replaying days Segment can no longer deduplicate.")
        parser.add_argument(
            "--segment_write_key", default=None, metavar="KEY",
            help=f"Segment source write key. Prefer, in this order: the {WRITE_KEY_ENV} environment "
                 "variable (the default), --segment_write_key_file, --segment_write_key_secret. The key is "
                 "never printed, logged or kept in the pipeline options.")
        parser.add_argument(
            "--segment_write_key_file", default=None, metavar="PATH",
            help="Read the write key from this file (any Beam filesystem), on each worker.")
        parser.add_argument(
            "--segment_write_key_secret", default=None, metavar="NAME",
            help="Read the write key from GCP Secret Manager, on each worker: "
                 "projects/P/secrets/S/versions/V (needs the gcp extra).")
        parser.add_argument(
            "--allow_insecure_endpoint", action="store_true", default=False,
            help="Allow an http:// --segment_endpoint that is not on this machine (loopback is always "
                 "allowed). TLS certificates are always verified on https.")
        parser.add_argument(
            "--redact_fields", action="append", default=None, metavar="NAMES",
            help="Properties or context.traits to leave out of every call, e.g. email,campaign_name; "
                 "comma-separated, repeatable.")
        parser.add_argument(
            "--hash_fields", action="append", default=None, metavar="NAMES",
            help="Properties or context.traits to send as the SHA-256 hex digest of their value, e.g. email; "
                 "comma-separated, repeatable.")
        parser.add_argument(
            "--segment_endpoint", default=None, metavar="URL",
            help=f"Segment API base URL; requests go to <endpoint>/v1/batch. Default {segment_client.US_ENDPOINT}.")
        parser.add_argument(
            "--segment_region", choices=sorted(REGION_ENDPOINTS), default=None,
            help=f"Shortcut for the endpoint of a Segment region: eu = {segment_client.EU_ENDPOINT}. "
                 "An EU workspace needs its EU write key.")
        parser.add_argument(
            "--dead_letter_output", default="dead_letters", metavar="DIR",
            help="Directory (any Beam filesystem) for dead_letters-*.jsonl: events and files that could not "
                 "be sent or read, with the reason. Default: ./dead_letters.")
        parser.add_argument(
            "--dry_run_output", default=None, metavar="DIR",
            help="Write the exact request bodies as requests-*.jsonl under DIR instead of sending them. "
                 "Needs no write key.")
        parser.add_argument(
            "--summary_output", default=None, metavar="FILE",
            help="Also write the run summary (counts per event type) as JSON to FILE.")
        parser.add_argument(
            "--window_seconds", type=int, default=60, metavar="N",
            help="Event-time window in seconds; batches never mix windows. Default 60.")
        parser.add_argument(
            "--max_batch_bytes", type=int, default=DEFAULT_MAX_BATCH_BYTES, metavar="N",
            help=f"Largest request body in bytes, envelope included (at most {segment_client.MAX_REQUEST_BYTES}). "
                 f"Default {DEFAULT_MAX_BATCH_BYTES}.")
        parser.add_argument(
            "--max_batch_events", type=int, default=segment_client.MAX_BATCH_EVENTS, metavar="N",
            help=f"Most events in one request (at most {segment_client.MAX_BATCH_EVENTS}, Segment's limit). "
                 f"Default {segment_client.MAX_BATCH_EVENTS}.")
        parser.add_argument(
            "--shards_per_window", type=int, default=1, metavar="N",
            help="Parallel request streams per window. More speeds up big windows on many workers; "
                 "fewer makes fuller requests for sparse data. Default 1: windows already run in parallel.")
        parser.add_argument(
            "--max_requests_per_second", type=float, default=None, metavar="N",
            help="Client-side limit of requests per second per worker. Segment asks for at most 1,000/s "
                 "per workspace. Default: no limit.")
        parser.add_argument(
            "--max_retry_attempts", type=int, default=8, metavar="N",
            help="Attempts per request on transient errors (429, 5xx, network) before its events are "
                 "dead-lettered. Default 8.")
        parser.add_argument(
            "--retry_backoff_seconds", type=float, default=0.5, metavar="SECONDS",
            help="First retry delay; it doubles on each attempt (with full jitter, capped at 60 s) unless "
                 "Segment's Retry-After says longer. Default 0.5.")
        parser.add_argument(
            "--request_timeout_seconds", type=float, default=30.0, metavar="SECONDS",
            help="How long to wait for Segment's answer to one request before retrying it. Default 30.")
        parser.add_argument(
            "--max_retry_seconds", type=float, default=300.0, metavar="SECONDS",
            help="Longest time to keep retrying one request, in seconds. Default 300.")
        parser.add_argument(
            "--message_id_namespace", default=None, metavar="NAMESPACE",
            help="Unset: messageId is the Currents event id. Set: messageId is uuid5(namespace, id), for "
                 "sending the same events to two Segment sources. A non-UUID namespace is first hashed "
                 "with uuid5(NAMESPACE_URL, namespace).")
        parser.add_argument(
            "--passthrough_fields", action="store_true", default=False,
            help="Also send every other non-null Currents field as a property under its own name.")
        parser.add_argument(
            "--fail_on_dead_letters", action="store_true", default=False,
            help="Exit with status 2 when anything was dead-lettered (for schedulers). Default: exit 0.")


def split_write_key(argv):
    """(the --segment_write_key value or None, argv without it): the key must not reach the pipeline
    options, which runners display."""
    rest, key, args = [], None, iter(argv)
    for arg in args:
        if arg == "--segment_write_key":
            key = next(args, None)
        elif arg.startswith("--segment_write_key="):
            key = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    return key, rest


def key_source(options, key_flag):
    """Where the write key comes from (a write_key.KeySource), or None when nothing names one."""
    given = [(kind, reference) for kind, reference in (
        (write_key.VALUE, key_flag), (write_key.FILE, options.segment_write_key_file),
        (write_key.SECRET, options.segment_write_key_secret)) if reference]
    if len(given) > 1:
        raise ConfigError("give only one of --segment_write_key, --segment_write_key_file, "
                          "--segment_write_key_secret")
    if given:
        return write_key.KeySource(*given[0])
    if os.environ.get(WRITE_KEY_ENV):
        return write_key.KeySource(write_key.ENV, WRITE_KEY_ENV)
    return None


def resolve_write_key(source):
    """The write key of a KeySource ("" for None), or ConfigError with why it could not be read."""
    if source is None:
        return ""
    try:
        return write_key.resolve(source)
    except write_key.WriteKeyError as error:
        raise ConfigError(str(error)) from None


def field_names(values):
    """Names given as repeatable, comma-separated option values, as a frozenset."""
    return frozenset(name.strip() for value in values or () for name in value.split(",") if name.strip())


def _is_loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_endpoint(options):
    """The Segment base URL from --segment_endpoint or --segment_region."""
    if options.segment_endpoint and options.segment_region:
        raise ConfigError("give either --segment_endpoint or --segment_region, not both")
    if options.segment_endpoint:
        endpoint = options.segment_endpoint.rstrip("/")
        scheme, _, rest = endpoint.partition("://")
        if scheme not in ("http", "https") or not rest:
            raise ConfigError(f"--segment_endpoint must be an http(s) URL, got {options.segment_endpoint!r}")
        host = urllib.parse.urlsplit(endpoint).hostname or ""
        if scheme == "http" and not _is_loopback(host) and not getattr(options, "allow_insecure_endpoint", False):
            raise ConfigError(f"--segment_endpoint {endpoint} is plain http to another machine: the write key and "
                              "your users' data would cross the network unencrypted (use https, or "
                              "--allow_insecure_endpoint)")
        return endpoint
    return REGION_ENDPOINTS[options.segment_region or "us"]


def _validate_input(options):
    if options.input and options.currents_root:
        raise ConfigError("give either --input or --currents_root, not both")
    if not options.input and not options.currents_root:
        raise ConfigError("no input: give --input PATTERN (repeatable) or --currents_root URI")
    ranged = [f"--{name}" for name in ("start", "end", "event_types", "by_event_time")
              if getattr(options, name)]
    if ranged and not options.currents_root:
        raise ConfigError(f"{', '.join(ranged)} select partitions under --currents_root; with --input, "
                          "name the files in the pattern instead")
    hours = {}
    for name in ("start", "end"):
        if getattr(options, name):
            try:
                hours[name] = partitions.parse_hour(getattr(options, name))
            except ValueError as error:
                raise ConfigError(f"--{name}: {error}") from error
    if "start" in hours and "end" in hours and hours["end"] <= hours["start"]:
        raise ConfigError(f"--end {options.end} is not after --start {options.start}")
    if options.by_event_time and len(hours) < 2:
        raise ConfigError("--by_event_time needs both --start and --end")
    if options.late_hours < 0:
        raise ConfigError(f"--late_hours must be 0 or more, got {options.late_hours}")
    if options.rerun and not options.ledger:
        raise ConfigError("--rerun only makes sense with --ledger")


def parse_integrations(options):
    """The --integrations JSON object, or None."""
    if not options.integrations:
        return None
    try:
        integrations = json.loads(options.integrations)
    except ValueError as error:
        raise ConfigError(f"--integrations is not JSON: {error}") from error
    if not isinstance(integrations, dict):
        raise ConfigError('--integrations must be a JSON object, e.g. {"All": false}')
    return integrations


def validate(options, key):
    """Raise ConfigError for option values the job cannot run with (`key`: the resolved write key)."""
    _validate_input(options)
    parse_integrations(options)
    if not key and not options.dry_run_output and not options.plan:
        raise ConfigError(f"no Segment write key: set {WRITE_KEY_ENV}, or give --segment_write_key_file or "
                          "--segment_write_key_secret (or use --dry_run_output DIR to write requests without sending)")
    smallest = segment_client.MAX_EVENT_BYTES + segment_client.envelope_bytes(key)
    if not smallest <= options.max_batch_bytes <= segment_client.MAX_REQUEST_BYTES:
        raise ConfigError(f"--max_batch_bytes must be between {smallest} (one largest event) and "
                          f"{segment_client.MAX_REQUEST_BYTES}, got {options.max_batch_bytes}")
    if not 1 <= options.max_batch_events <= segment_client.MAX_BATCH_EVENTS:
        raise ConfigError(f"--max_batch_events must be between 1 and {segment_client.MAX_BATCH_EVENTS}, "
                          f"got {options.max_batch_events}")
    for name in ("window_seconds", "shards_per_window", "max_retry_attempts"):
        if getattr(options, name) < 1:
            raise ConfigError(f"--{name} must be at least 1, got {getattr(options, name)}")
    overlap = field_names(options.redact_fields) & field_names(options.hash_fields)
    if overlap:
        raise ConfigError(f"{', '.join(sorted(overlap))}: in both --redact_fields and --hash_fields")
    for name in ("max_requests_per_second", "max_retry_seconds", "retry_backoff_seconds",
                 "request_timeout_seconds"):
        value = getattr(options, name)
        if value is not None and value <= 0:
            raise ConfigError(f"--{name} must be positive, got {value}")
