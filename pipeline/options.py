"""Command-line options of the job, and the helpers shared with replay-dead-letters.

Every standard Beam option (--runner, --project, ...) passes through next to these. The whole
configuration is checked once, in pipeline.config.
"""
import argparse
import ipaddress
import os
import urllib.parse

from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from currents_to_segment.transforms.currents import catalog
from currents_to_segment.transforms.segment import api as segment_api, client as segment_client, pacing, write_key
from currents_to_segment.transforms.flush_timer import DEFAULT_FLUSH_SECONDS

WRITE_KEY_ENV = "SEGMENT_WRITE_KEY"
REGION_ENDPOINTS = {"us": segment_api.US_ENDPOINT, "eu": segment_api.EU_ENDPOINT}
DEFAULT_MAX_BATCH_BYTES = segment_api.DEFAULT_MAX_REQUEST_BYTES
DEFAULT_REQUESTS_IN_FLIGHT = 8
MAX_REQUESTS_IN_FLIGHT = 64  # each is a thread with a connection of its own, per family, in every worker process
DEFAULT_MAX_OUTAGE_HOURS = 120.0


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
            help="Only these Currents event types or families of the mapping (push, email, sms, whatsapp with "
                 "--mapping current, in_app, content_card, news_feed, canvas_campaign, other); comma-separated, "
                 "repeatable. With --currents_root only their folders are listed; with --input the files of other "
                 "types are not read.")
        parser.add_argument(
            "--by_event_time", action="store_true", default=False,
            help="Select events by their own `time` in [start, end) instead of by the hour Braze queued "
                 "them: also reads the --late_hours partitions after --end.")
        parser.add_argument(
            "--late_hours", type=int, default=24, metavar="N",
            help="With --by_event_time: hours of partitions after --end to look in for late events. Default 24.")
        parser.add_argument(
            "--mapping", choices=sorted(catalog.BUILT_IN), default=catalog.DEFAULT,
            help="Which built-in mapping of Currents types to track calls: classic (the default: the 34 events "
                 "of Braze's original Segment for Currents page, userId only) or current (what Braze's connector "
                 "sends today: 52 events, anonymousId on every call, more properties and context).")
        parser.add_argument(
            "--mapping_file", default=None, metavar="PATH",
            help="A JSON file (any Beam filesystem) of changes to a built-in mapping: rename events, drop types, "
                 "add types, add or remove properties (see docs/events.md). Checked before anything runs.")
        parser.add_argument(
            "--include_anonymous_users", action="store_true", default=False,
            help="Also send the events of users without an external id, with anonymousId (their Braze user id) "
                 "only. Records with neither id are counted as dropped_no_id.")
        parser.add_argument(
            "--plan", action="store_true", default=False,
            help="Only list the partitions and files that would be read, with sizes and event counts per "
                 "type and hour; send nothing.")
        parser.add_argument(
            "--ledger", default=None, metavar="PATH",
            help="Folder (any Beam filesystem) recording each input file once all its events were accepted or "
                 "dead-lettered, and where they went (endpoint, a fingerprint of the write key, the options that "
                 "change the calls); later runs to the same destination skip the files it holds, a run to another "
                 "one sends them. For hourly incremental runs.")
        parser.add_argument(
            "--watch", action="store_true", default=False,
            help="Always on: list the inputs every --watch_interval seconds and forward each new file (a new path, "
                 "or a file rewritten under the same name or grown) once, as it lands, until Ctrl-C or SIGTERM, "
                 "which drains: no more listings, the files in flight are finished and recorded, the summary is "
                 "printed, exit 0 (a second signal aborts). Implies --streaming; runs on PrismRunner (locally), "
                 "FlinkRunner or DataflowRunner (FnApiRunner and DirectRunner are refused: they keep every "
                 "listing in memory). With --ledger, the files it holds are skipped, so a restarted watch picks "
                 "up where the last one stopped. With --currents_root, each listing looks in the hour partitions "
                 "of the last few hours, and every --full_listing_interval in all selected ones (bound them with "
                 "--start).")
        parser.add_argument(
            "--watch_interval", type=float, default=60.0, metavar="SECONDS",
            help="With --watch: seconds between two listings of the inputs. Default 60.")
        parser.add_argument(
            "--max_outage_hours", type=float, default=DEFAULT_MAX_OUTAGE_HOURS, metavar="HOURS",
            help="With --watch: while Segment stays unreachable past --max_retry_seconds, the watch dead-letters "
                 "nothing: it holds its files (reads and lists no new one, keeps what it has not delivered "
                 "unrecorded in the ledger) and probes Segment until it answers. After this many hours of continuous outage it stops, "
                 "exit 3, and the next watch sends the files it held. Fractions of an hour are taken. Default "
                 f"{DEFAULT_MAX_OUTAGE_HOURS:g} (5 days, as long as Braze's own connector holds events).")
        parser.add_argument(
            "--full_listing_interval", type=float, default=900.0, metavar="SECONDS",
            help="With --watch and --currents_root: seconds between two listings of every selected hour partition "
                 "(the listings between look in the last few hours only), so that a file Braze writes late into "
                 "an old hour is forwarded without a restart. Each costs a listing of the whole selection (on "
                 "S3/GCS about one list request per 1,000 files): raise it, or bound the selection with --start, "
                 "for a long history. Default 900.")
        parser.add_argument(
            "--rerun", action="store_true", default=False,
            help="With --ledger: read every selected file again, even those already in the ledger.")
        parser.add_argument(
            "--integrations", default=None, metavar="JSON",
            help='Segment `integrations` object added to every call, e.g. \'{"All": false}\' to reach only '
                 "warehouses when replaying days Segment can no longer deduplicate: each destination named once, "
                 "with true or false (or an object of its options).")
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
            help=f"Segment API base URL; requests go to <endpoint>/v1/batch. Default {segment_api.US_ENDPOINT}.")
        parser.add_argument(
            "--segment_region", choices=sorted(REGION_ENDPOINTS), default=None,
            help=f"Shortcut for the endpoint of a Segment region: eu = {segment_api.EU_ENDPOINT}. "
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
            "--window_seconds", type=int, default=3600, metavar="N",
            help="Event-time window in seconds; a request never mixes windows. Each worker fills one request "
                 "per open window, so small windows make small requests. Default 3600, the hour of a "
                 "Currents partition.")
        parser.add_argument(
            "--max_batch_bytes", type=int, default=DEFAULT_MAX_BATCH_BYTES, metavar="N",
            help=f"Largest request body in bytes, envelope included (at most {segment_api.MAX_REQUEST_BYTES}). "
                 f"Default {DEFAULT_MAX_BATCH_BYTES}.")
        parser.add_argument(
            "--max_batch_events", type=int, default=segment_api.MAX_BATCH_EVENTS, metavar="N",
            help=f"Most events in one request (at most {segment_api.MAX_BATCH_EVENTS}, Segment's limit). "
                 f"Default {segment_api.MAX_BATCH_EVENTS}.")
        parser.add_argument(
            "--flush_seconds", type=float, default=DEFAULT_FLUSH_SECONDS, metavar="SECONDS",
            help="How often each worker sends the requests it is filling and makes its dead-letter, dry-run and "
                 "ledger files final, besides at the end of every bundle (a bundle holds many files on "
                 "FnApiRunner and Prism): a run that is killed has recorded in the ledger every file finished "
                 f"before its last flush. Default {DEFAULT_FLUSH_SECONDS:g}.")
        parser.add_argument(
            "--max_requests_per_second", type=float, default=None, metavar="N",
            help="Client-side limit of requests per second per worker. Segment asks for at most 1,000/s "
                 "per workspace. Default: no limit.")
        parser.add_argument(
            "--max_events_per_second", type=float, default=None, metavar="N",
            help="Event budget of the whole job: Segment queues, or answers 429, past about 1,000 events/s per "
                 "workspace. Each worker process takes its share, N divided by the workers the options name: "
                 "--direct_num_workers with --direct_running_mode=multi_processing, --max_num_workers (else "
                 "--num_workers) on Dataflow (which runs one SDK process per vCPU: see docs/delivery.md), --parallelism "
                 "on Flink with workers outside this process; 1 where "
                 "the workers run in this process (FnApiRunner in memory, Prism and Flink in their LOOPBACK "
                 "default). Events are paced with a token bucket (requests of at most a quarter of a second of "
                 "the share) and no 1.25 s holds more than the share (a ceiling: runs average about 80%% of "
                 "it), the rate is halved on a 429 and restored gradually as Segment answers again, and a "
                 "Retry-After pauses all of the process's requests. Default: no budget.")
        parser.add_argument(
            "--max_requests_in_flight", type=int, default=DEFAULT_REQUESTS_IN_FLIGHT, metavar="N",
            help="Requests each family's delivery in a worker keeps in flight at once; a worker process has "
                 "that many threads (each with a connection of its own) per family, which all its deliveries "
                 "share. A bundle still ends only when each of its events "
                 "is accepted or dead-lettered. The slower Segment answers, the more this speeds a run up (see "
                 f"docs/delivery.md); 1 sends one request at a time, at most {MAX_REQUESTS_IN_FLIGHT}. "
                 f"Default {DEFAULT_REQUESTS_IN_FLIGHT}.")
        parser.add_argument(
            "--max_retry_attempts", type=int, default=None, metavar="N",
            help="At most this many attempts per request on transient errors (429, 5xx, network, no answer), "
                 "besides --max_retry_seconds. Default: no limit, only the time budget.")
        parser.add_argument(
            "--retry_backoff_seconds", type=float, default=0.5, metavar="SECONDS",
            help="First retry delay; it doubles on each attempt (with full jitter, capped at "
                 f"{segment_client.BACKOFF_CAP_SECONDS:g} s) unless Segment's Retry-After says longer. Default 0.5.")
        parser.add_argument(
            "--request_timeout_seconds", type=float, default=30.0, metavar="SECONDS",
            help="How long one attempt may take, from sending the request to the last byte of Segment's answer "
                 "(headers and body), before it is cut off and retried. Default 30.")
        parser.add_argument(
            "--max_retry_seconds", type=float, default=300.0, metavar="SECONDS",
            help="How long one request is retried while Segment fails (unreachable, 429, 5xx, no answer), from its "
                 "first attempt; the worker waits meanwhile, so an outage shorter than this loses nothing. Past "
                 "it the request's events are dead-lettered (retries_exhausted), and so are the next requests, "
                 f"but for one probe every {pacing.OUTAGE_PROBE_SECONDS:g} s (or every --max_retry_seconds, when "
                 "shorter), until Segment answers; a --watch holds them instead (see --max_outage_hours). "
                 "Default 300.")
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
        parser.add_argument(
            "--progress_seconds", type=float, default=10.0, metavar="SECONDS",
            help="Print a progress line to stderr this often (files read, events sent, requests, retries, "
                 "rate, elapsed); 0 for none. Default 10. Warnings about Segment come at once regardless.")
        parser.add_argument(
            "--quiet", action="store_true", default=False,
            help="No progress lines (warnings, errors and the summary are still printed).")
        parser.add_argument(
            "--metrics_port", type=int, default=None, metavar="PORT",
            help="Serve live metrics in Prometheus's text format at http://HOST:PORT/metrics, and /healthz (200 "
                 "while the job makes progress; 503 and one line why when Segment has failed past the retry "
                 "budget, or a --watch has not listed for three intervals), while the job runs, from this process "
                 "(every worker process on this machine counted; not on Dataflow: Cloud Monitoring has its "
                 "counters). 0 picks a free port (printed). Default: none.")
        parser.add_argument(
            "--metrics_host", default="127.0.0.1", metavar="HOST",
            help="The address --metrics_port listens on. Default 127.0.0.1 (this machine only); 0.0.0.0 for "
                 "every interface.")
        parser.add_argument(
            "--report_output", default=None, metavar="FILE.html",
            help="Also write a run report, one self-contained HTML page (no network), at the end of the run: "
                 "totals, per event type and Segment event, dead letters by reason and status with a sample each, "
                 "a timeline, latencies, the event-time range, the ledger and the mapping. A --watch rewrites it "
                 "every --report_refresh_seconds.")
        parser.add_argument(
            "--report_refresh_seconds", type=float, default=300.0, metavar="SECONDS",
            help="How often a --watch rewrites --report_output. Default 300.")


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


def _read_with_beam(path):
    try:
        with FileSystems.open(path) as stream:
            return stream.read()
    except BeamIOError as error:  # Beam wraps the cause in a dict keyed by path: keep the cause's words
        raise OSError(storage_reason(error)) from None


def resolve_write_key(source):
    """The write key of a KeySource ("" for None), or ConfigError with why it could not be read."""
    if source is None:
        return ""
    try:
        return write_key.resolve(source, read_file=_read_with_beam)
    except write_key.WriteKeyError as error:
        raise ConfigError(str(error)) from None


def field_names(values):
    """Names given as repeatable, comma-separated option values, as a frozenset."""
    return frozenset(name.strip() for value in values or () for name in value.split(",") if name.strip())


def is_loopback(host):
    """Whether a host name or address is this machine's loopback."""
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
        authority, slash, path = rest.partition("/")
        if "@" in authority:  # never shown, written to the summary or recorded in the ledger
            shown = f"{scheme}://***@{authority.rsplit('@', 1)[1]}{slash}{path}"
            raise ConfigError(f"--segment_endpoint {shown} holds credentials (user:password@): Segment takes only the "
                              "write key; give the endpoint without them")
        if scheme not in ("http", "https") or not rest:
            raise ConfigError(f"--segment_endpoint must be an http(s) URL, got {options.segment_endpoint!r}")
        parts = urllib.parse.urlsplit(endpoint)
        try:
            port = parts.port  # raises for a port that is not 0-65535
        except ValueError as error:
            raise ConfigError(f"--segment_endpoint {endpoint}: {error}") from error
        if port == 0:
            raise ConfigError(f"--segment_endpoint {endpoint}: port 0 cannot be connected to")
        host = parts.hostname or ""
        if not host:
            raise ConfigError(f"--segment_endpoint must name a host, got {options.segment_endpoint!r}")
        if scheme == "http" and not is_loopback(host) and not getattr(options, "allow_insecure_endpoint", False):
            raise ConfigError(f"--segment_endpoint {endpoint} is plain http to another machine: the write key and "
                              "your users' data would cross the network unencrypted (use https, or "
                              "--allow_insecure_endpoint)")
        return endpoint
    return REGION_ENDPOINTS[options.segment_region or "us"]
