"""Resend to Segment the messages a run dead-lettered, exactly as they were stored, each once.

    python -m pipeline replay-dead-letters DIR [--output DIR2] [--reasons rejected_by_segment,retries_exhausted]
                                           [--max_batch_bytes N] [--rerun] [--max_events_per_second N]
                                           [--to_other_destination]

Reads every dead_letters-*.jsonl directly in DIR, of every run written there (the job names them
dead_letters-<run id>-<part>.jsonl; any Beam filesystem; Beam's S3, GCS and Azure options such as
--s3_endpoint_url, --project or --azure_connection_string are accepted) and resends the `message` of each
letter with a replayed reason byte for byte (same messageId, so Segment deduplicates within its window), in
requests of at most --max_batch_bytes (default 475,000, the job's margin below Segment's 500,000).

Only to the Segment source the letters were meant for: a letter the job writes names its destination (the
endpoint and the write key's fingerprint, never the key), and when letters to replay name another destination
than this replay's (--segment_region or --segment_endpoint, and the key's fingerprint), nothing is sent: exit
1, one line saying how many letters are for which destination. --to_other_destination sends them here anyway,
on purpose. Letters without a destination (written by versions before it was recorded, or by a dry run) are
replayed wherever the replay sends.

What Segment accepted is recorded beside the letters, in DIR/delivered-<UTC timestamp>-<8 hex>.jsonl, one line
per message: {"message_id": ..., "digest": <SHA-256 hex of the exact bytes sent>}, written after each group of
messages is sent, so an interrupted replay keeps what it delivered. A replay of DIR skips the letters
whose message_id and digest were already delivered (counted as "already delivered"); a message corrected by
hand in its letter has another digest and is sent again. --rerun ignores the records and sends everything
again (still recording it). The same message dead-lettered twice (two letters, e.g. by two runs) is sent once
(counted as "duplicate letters"). The same messageId in letters with different bodies (two runs with other
options, a letter copied and edited) is sent once, from the newest letter: the last one in the file whose name
sorts last (the job's run ids begin with the run's UTC start time); the others are counted as "superseded
letters". A record line that cannot be read only means its message is sent again. A line that is not a letter
(not JSON, no known reason, a message that is not an object) is counted as unreadable and left in DIR. The
hidden temporary files of job processes of this host that were killed (.dead_letters-*.tmp) are not letters:
they are removed.

Letters that fail again go to DIR2/dead_letters-replay-<UTC timestamp>.jsonl (default DIR2:
DIR/replayed-<UTC timestamp>) with the new reason, status and excerpt, replay_attempts + 1 and this replay's
destination; replay that folder the same way (its deliveries are recorded in DIR2). Other letters are counted
as skipped and left in DIR.

It sends as fast as Segment answers, or within --max_events_per_second (the replay is one process: the whole
budget is its own; requests then carry at most a quarter of a second of it, as the job's) and
--max_requests_per_second. Every --progress_seconds (default 10; 0: never) a line on stderr says what is sent,
what failed again and what is left:

    progress 0:01:10  sent 55,003 (786/s)  failed 12  left 4,210

Ctrl-C (or SIGTERM) stops it with one line on stderr: what was delivered is recorded, so replaying DIR again
sends the rest (a request in flight when it stopped is sent again: Segment deduplicates its messageIds).

Exit status: 0 when every replayed message was accepted, 2 when some failed again or some lines are not
letters, 1 on a configuration error (one line on stderr), among them letters of another destination, 130
when interrupted by Ctrl-C, 143 by SIGTERM. The write key is never printed.
"""
import datetime
import hashlib
import json
import secrets
import signal
import sys
import threading
import time
from collections import Counter

from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.localfilesystem import LocalFileSystem
from apache_beam.options.pipeline_options import AzureOptions, GoogleCloudOptions, PipelineOptions, S3Options

from currents_to_segment.pipeline.options import (
    REGION_ENDPOINTS, WRITE_KEY_ENV, ConfigError, StrictParser, key_source, resolve_endpoint, resolve_write_key,
    split_write_key, storage_reason, unknown_flags)
from currents_to_segment.transforms import jsonl
from currents_to_segment.transforms.ledger import key_fingerprint
from currents_to_segment.transforms.letters import REASONS, destination as letter_destination
from currents_to_segment.transforms.segment.api import (
    DEFAULT_MAX_REQUEST_BYTES, MAX_BATCH_EVENTS, MAX_REQUEST_BYTES, REJECTED_BY_SEGMENT, RETRIES_EXHAUSTED,
    SegmentConfigError, request_bytes_problem)
from currents_to_segment.transforms.segment.client import ClientSettings, SegmentClient
from currents_to_segment.transforms.progress import elapsed_text
from currents_to_segment.transforms.segment.pacing import request_events
from currents_to_segment.transforms.currents.track_calls import serialize

DEFAULT_REASONS = f"{REJECTED_BY_SEGMENT},{RETRIES_EXHAUSTED}"
CHUNK = 4 * MAX_BATCH_EVENTS  # messages per send(): bounds memory on large folders
LETTERS, DELIVERED = "dead_letters-*.jsonl", "delivered-*.jsonl"  # DELIVERED must never match LETTERS
# Beam's options for reaching a bucket (endpoints, credentials, project), accepted besides our own.
STORAGE_OPTIONS = (S3Options, GoogleCloudOptions, AzureOptions)
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143  # Ctrl-C, SIGTERM: as the job's
SIGNALS = {signal.SIGINT: ("Ctrl-C", EXIT_INTERRUPTED), signal.SIGTERM: ("SIGTERM", EXIT_TERMINATED)}
SHOWN_DESTINATIONS = 3  # other destinations named in the refusal's line, at most


def _parser():
    parser = StrictParser(prog="replay-dead-letters", description=__doc__.split("\n")[0],
                          epilog="Letters are sent only to the destination they name (endpoint and write-key "
                                 "fingerprint, as the job writes them): letters of another one stop the replay "
                                 "before anything is sent (exit 1), unless --to_other_destination; letters "
                                 "without one (older versions, dry runs) are replayed here. "
                                 "What Segment accepts is recorded in DIR/delivered-<UTC timestamp>-<8 hex>.jsonl "
                                 "(message_id and SHA-256 of the bytes sent); a later replay of DIR skips those "
                                 "messages (\"already delivered\") unless --rerun, and sends a message edited "
                                 "in its letter again. Ctrl-C or SIGTERM stops it with one line (exit 130, 143), "
                                 "keeping those records. Beam's S3, GCS and Azure options (--s3_endpoint_url, "
                                 "--s3_region_name, --project, --azure_connection_string, ...) pass through to "
                                 "reach DIR in a bucket.")
    parser.add_argument("dir", metavar="DIR", help="dead-letter folder (any Beam filesystem); its delivered-*.jsonl "
                        "records are read and written there")
    parser.add_argument("--segment_write_key", metavar="KEY", help=f"default: ${WRITE_KEY_ENV}; never printed")
    parser.add_argument("--segment_write_key_file", metavar="PATH", help="read the write key from this file")
    parser.add_argument("--segment_write_key_secret", metavar="NAME",
                        help="read the write key from GCP Secret Manager (projects/P/secrets/S/versions/V)")
    parser.add_argument("--segment_endpoint", metavar="URL", help="Segment API base URL")
    parser.add_argument("--segment_region", choices=sorted(REGION_ENDPOINTS), help="Segment region")
    parser.add_argument("--output", metavar="DIR2", help="folder for what fails again "
                        "(default: DIR/replayed-<UTC timestamp>)")
    parser.add_argument("--reasons", default=DEFAULT_REASONS, help=f"comma-separated (default {DEFAULT_REASONS})")
    parser.add_argument("--max_batch_bytes", type=int, default=DEFAULT_MAX_REQUEST_BYTES, metavar="N",
                        help=f"largest request body in bytes, envelope included (at most {MAX_REQUEST_BYTES}; "
                             f"default {DEFAULT_MAX_REQUEST_BYTES}, as the job)")
    parser.add_argument("--rerun", action="store_true",
                        help="send every letter again, ignoring the DIR/delivered-*.jsonl records of earlier "
                             "replays (what is accepted is still recorded)")
    parser.add_argument("--max_retry_attempts", type=int, default=None, metavar="N",
                        help="at most this many attempts per request (default: no limit, only the time budget)")
    parser.add_argument("--max_retry_seconds", type=float, default=300.0, metavar="SECONDS",
                        help="how long one request is retried while Segment fails (default 300)")
    parser.add_argument("--to_other_destination", action="store_true",
                        help="send letters that name another destination (endpoint, write-key fingerprint) than "
                             "this replay's to this one anyway; without it, such letters stop the replay before "
                             "anything is sent")
    parser.add_argument("--max_events_per_second", type=float, default=None, metavar="N",
                        help="event budget of the replay (Segment queues, or answers 429, past about 1,000 "
                             "events/s per workspace); default: none")
    parser.add_argument("--max_requests_per_second", type=float, default=None, metavar="N",
                        help="at most this many requests per second (default: no limit)")
    parser.add_argument("--progress_seconds", type=float, default=10.0, metavar="SECONDS",
                        help="print a progress line to stderr this often (sent, failed again, left); 0 for none. "
                             "Default 10")
    return parser


def _reasons(value):
    reasons = {name.strip() for name in value.split(",") if name.strip()}
    unknown = sorted(reasons - set(REASONS))
    if unknown or not reasons:
        raise ConfigError(f"--reasons: unknown {', '.join(unknown) or 'empty list'} (known: {', '.join(REASONS)})")
    return reasons


def use_storage_options(extra):
    """Set Beam's filesystems up with the storage options among `extra`; ConfigError for any other."""
    unknown = unknown_flags(extra, STORAGE_OPTIONS)
    if unknown:
        raise ConfigError(f"unrecognized arguments: {' '.join(unknown)}")
    FileSystems.set_options(PipelineOptions(extra))


def dead_letter_files(directory):
    """Paths of the dead_letters-*.jsonl files directly in `directory`; ConfigError when there are none
    or the folder cannot be listed."""
    try:
        found = _match(directory, LETTERS)
    except BeamIOError as error:
        raise ConfigError(f"cannot list {directory}: {storage_reason(error)}") from error
    if not found:
        raise ConfigError(f"no {LETTERS} files in {directory}")
    return found


def _match(directory, pattern):
    found = FileSystems.match([FileSystems.join(directory, pattern)])[0].metadata_list
    return sorted(metadata.path for metadata in found)


def _reject_constant(name):
    raise ValueError(f"{name} is not JSON")


def _letter_of(line):
    """The letter a line holds (a JSON object with a known reason, and a message that is an object or null), or
    None when the line cannot be one."""
    try:
        letter = json.loads(line.decode("utf-8"), parse_constant=_reject_constant)
    except ValueError:
        return None
    if not isinstance(letter, dict) or not isinstance(letter.get("reason"), str) or letter["reason"] not in REASONS:
        return None
    if not isinstance(letter.get("message"), (dict, type(None))):
        return None
    return letter


def read_letters(paths, tally=None):
    """Yield each letter line by line, in the order of `paths`; count the other lines in tally["unreadable"]."""
    for path in paths:
        with FileSystems.open(path) as stream:
            for line in stream:
                if not line.strip():
                    continue
                letter = _letter_of(line)
                if letter is not None:
                    yield letter
                elif tally is not None:
                    tally["unreadable"] += 1


class _LazyOutput:
    """The output JSONL file, created on the first letter written to it."""

    def __init__(self, path):
        self.path, self._stream = path, None

    def write(self, letter):
        self._stream = self._stream or FileSystems.create(self.path)
        self._stream.write(json.dumps(letter, ensure_ascii=False, default=repr).encode("utf-8") + b"\n")

    def flush(self):
        """Push what was written to a local file to disk (a bucket's object exists only once closed, and
        GCS's writer refuses flush())."""
        if self._stream and isinstance(FileSystems.get_filesystem(self.path), LocalFileSystem):
            self._stream.flush()

    def close(self):
        if self._stream:
            self._stream.close()


class _NoOutput:
    """Where replay() records deliveries when the caller keeps no record."""

    def write(self, letter):
        pass

    def flush(self):
        pass


def _key(message_id, digest):
    """What identifies a delivered message (16 bytes, to keep the set of a large folder small)."""
    return hashlib.sha256(json.dumps([message_id, digest], ensure_ascii=False).encode()).digest()[:16]


def read_delivered(directory):
    """The keys of the messages that earlier replays recorded as delivered in directory/delivered-*.jsonl.
    A line that cannot be read (e.g. cut short by an interruption) is passed over: its message is sent again."""
    try:
        paths = _match(directory, DELIVERED)
    except BeamIOError as error:
        raise ConfigError(f"cannot list {directory}: {storage_reason(error)}") from error
    delivered = set()
    for path in paths:
        with FileSystems.open(path) as stream:
            for line in stream:
                try:
                    record = json.loads(line.decode("utf-8"), parse_constant=_reject_constant)
                except ValueError:
                    continue
                if isinstance(record, dict) and isinstance(record.get("digest"), str):
                    delivered.add(_key(record.get("message_id"), record["digest"]))
    return delivered


def _payload(letter):
    """The exact bytes sent for a letter's message, and the (message_id, digest) recorded when delivered."""
    message = letter["message"]
    payload = serialize(message)
    message_id = message.get("messageId") if isinstance(message, dict) else letter.get("message_id")
    return payload, message_id, hashlib.sha256(payload).hexdigest()


def _send(pending, client, output, delivered_output, tally, destination=None):
    """Resend the stored messages as they are; record those accepted, write those that fail again with
    their new outcome (and `destination`, where they failed now). `pending` holds (letter, payload, message_id,
    digest)."""
    report = client.send([payload for _, payload, _, _ in pending])
    tally["replayed"] += len(pending)
    tally["accepted"] += len(report.accepted)
    for index in sorted(report.accepted):
        _, _, message_id, digest = pending[index]
        delivered_output.write({"message_id": message_id, "digest": digest})
    delivered_output.flush()
    for rejection in sorted(report.rejected, key=lambda r: r.index):
        letter = dict(pending[rejection.index][0], reason=rejection.reason, http_status=rejection.status,
                      response_excerpt=rejection.response_excerpt, destination=destination)
        letter["replay_attempts"] = (letter.get("replay_attempts") or 0) + 1
        output.write(letter)
        tally["failed"] += 1


def _replayed(letter, reasons):
    return letter["reason"] in reasons and letter.get("message") is not None


class Survey:
    """What a first reading of the letters found: `newest` ({messageId: key of its newest body}), `to_send` (how
    many messages the replay will send, given the keys `delivered` before) and `elsewhere` ({(endpoint, key
    fingerprint): letters to replay that name that destination}, for the destinations other than `ours`)."""

    def __init__(self):
        self.newest, self.to_send, self.elsewhere = {}, 0, Counter()


def _destination_of(letter):
    """(endpoint, key fingerprint) of the destination a letter names; None when it names none (older versions,
    a dry run)."""
    named = letter.get("destination")
    if not isinstance(named, dict):
        return None
    endpoint = named.get("endpoint")
    return (endpoint.rstrip("/") if isinstance(endpoint, str) else endpoint), named.get("write_key")


def survey(letters, reasons, delivered=frozenset(), ours=None):
    """Read the letters once, oldest first (see Survey): the newest letter of a messageId wins when two letters
    hold different bodies for it; the letters to replay (not delivered already) that name a destination other
    than `ours` ((endpoint, key fingerprint); None: not checked) are counted per destination."""
    found, unnamed = Survey(), set()  # unnamed: the keys of messages without a messageId
    for letter in letters:
        if _replayed(letter, reasons):
            _, message_id, digest = _payload(letter)
            key = _key(message_id, digest)
            if message_id is None:
                unnamed.add(key)
            found.newest[message_id] = key
            named = _destination_of(letter)
            if ours is not None and named is not None and named != ours and key not in delivered:
                found.elsewhere[named] += 1
    found.to_send = (sum(key not in delivered for message_id, key in found.newest.items() if message_id is not None)
                     + len(unnamed - delivered))
    return found


def replay(letters, client, reasons, output, tally, skipped, delivered=frozenset(), delivered_output=None,
           newest=None, chunk=None, destination=None):
    """Resend the letters of the given reasons that carry a message, `chunk` (default CHUNK) at a time, but not
    those whose key is in `delivered`, nor a second letter of the same message, nor (with `newest`, from survey) a
    body of a messageId that a newer letter replaces; record what is accepted in delivered_output; write what fails
    again to output, naming `destination`; count the rest."""
    delivered_output = delivered_output or _NoOutput()
    chunk = chunk or CHUNK
    pending, queued = [], set()
    for letter in letters:
        if _replayed(letter, reasons):
            payload, message_id, digest = _payload(letter)
            key = _key(message_id, digest)
            if newest is not None and message_id is not None and newest.get(message_id, key) != key:
                tally["superseded"] += 1
            elif key in delivered:
                tally["already delivered"] += 1
            elif key in queued:
                tally["duplicates"] += 1
            else:
                queued.add(key)
                pending.append((letter, payload, message_id, digest))
                if len(pending) >= chunk:
                    _send(pending, client, output, delivered_output, tally, destination)
                    pending = []
        else:
            reason = letter["reason"]
            skipped[reason if reason not in reasons else f"{reason} without message"] += 1
    if pending:
        _send(pending, client, output, delivered_output, tally, destination)


def _report(tally, skipped, output_path):
    failed = f"failed again {tally['failed']}" + (f" (written to {output_path})" if tally["failed"] else "")
    line = f"replayed {tally['replayed']}: accepted {tally['accepted']}, {failed}, skipped {sum(skipped.values())}"
    if skipped:
        line += " (reasons not replayed: " + ", ".join(f"{r} {n}" for r, n in sorted(skipped.items())) + ")"
    if tally["already delivered"]:
        line += f", already delivered {tally['already delivered']}"
    if tally["duplicates"]:
        line += f", duplicate letters {tally['duplicates']} (sent once)"
    if tally["superseded"]:
        line += f", superseded letters {tally['superseded']} (a newer letter of the same messageId was sent instead)"
    if tally["unreadable"]:
        line += f", unreadable lines {tally['unreadable']} (left in the input)"
    return line


def _where(destination):
    endpoint, fingerprint = destination
    return f"{endpoint} key {fingerprint}"


def _refusal(elsewhere, ours, directory):
    """The line that refuses letters of other destinations (endpoints and key fingerprints, never a key)."""
    total = sum(elsewhere.values())
    ranked = sorted(elsewhere.items(), key=lambda item: (-item[1], str(item[0])))
    named = "; ".join(f"{n:,} for {_where(where)}" for where, n in ranked[:SHOWN_DESTINATIONS])
    if len(ranked) > SHOWN_DESTINATIONS:
        named += f"; {sum(n for _, n in ranked[SHOWN_DESTINATIONS:]):,} for {len(ranked) - SHOWN_DESTINATIONS} more"
    return (f"{total:,} letter{'' if total == 1 else 's'} in {directory} {'is' if total == 1 else 'are'} for another "
            f"Segment destination than this replay's ({_where(ours)}): {named}; nothing sent. Replay with the "
            f"write key (and --segment_region or --segment_endpoint) of those letters, or give "
            f"--to_other_destination to send them to this one")


class Progress:
    """A line on `stream` every `interval` seconds (0: none), from a daemon thread, while the replay sends:
    messages sent (accepted), failed again and left of `total`."""

    def __init__(self, tally, total, interval, stream=None, clock=time.monotonic):
        self._tally, self._total, self._interval = tally, total, interval
        self._stream, self._clock = stream or sys.stderr, clock
        self._started = clock()
        self._stop = threading.Event()
        self._thread = None

    def line(self):
        tally, elapsed = self._tally, self._clock() - self._started
        sent = tally["accepted"]
        rate = sent / elapsed if elapsed > 0 else 0.0
        return (f"progress {elapsed_text(elapsed)}  sent {sent:,} ({rate:,.0f}/s)  failed {tally['failed']:,}  "
                f"left {max(self._total - tally['replayed'], 0):,}")

    def _loop(self):
        while not self._stop.wait(self._interval):
            self._stream.write(self.line() + "\n")
            self._stream.flush()

    def __enter__(self):
        if self._interval > 0:
            self._thread = threading.Thread(target=self._loop, name="replay progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during a replay (`name`, `status`: see SIGNALS)."""

    def __init__(self, signum=signal.SIGINT):
        super().__init__(SIGNALS[signum][0])
        self.name, self.status = SIGNALS[signum]


def _interrupted(signum, _frame):
    raise Interrupted(signum)


class _Signals:
    """Ctrl-C and SIGTERM raise Interrupted in the main thread while the replay runs (elsewhere: left as they are)."""

    def __enter__(self):
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            self._previous = {signum: signal.signal(signum, _interrupted) for signum in SIGNALS}
        return self

    def __exit__(self, *exc_info):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _stop_line(stop, tally, total, output, delivered_output):
    """The one line of a replay stopped by Ctrl-C or SIGTERM."""
    name = getattr(stop, "name", "Ctrl-C")
    line = (f"interrupted ({name}): sent {tally['accepted']:,}, failed again {tally['failed']:,}, left "
            f"{max(total - tally['replayed'], 0):,}")
    if tally["accepted"]:
        line += f"; what was delivered is recorded in {delivered_output.path}"
    if tally["failed"]:
        line += f"; what failed again is in {output.path}"
    return line + "; replay the folder again to send the rest"


def _check(args, key):
    """ConfigError for the first option that cannot be used."""
    if not key:
        raise ConfigError(f"no Segment write key: set {WRITE_KEY_ENV} or give --segment_write_key")
    if (args.max_retry_attempts is not None and args.max_retry_attempts < 1) or not args.max_retry_seconds > 0:
        raise ConfigError("--max_retry_attempts must be at least 1 and --max_retry_seconds positive")
    for flag in ("max_events_per_second", "max_requests_per_second"):
        value = getattr(args, flag)
        if value is not None and not 0 < value < float("inf"):
            raise ConfigError(f"--{flag} must be a positive number, got {value:g}")
    if not 0 <= args.progress_seconds < float("inf"):
        raise ConfigError(f"--progress_seconds must be 0 or more, got {args.progress_seconds:g}")
    problem = request_bytes_problem(args.max_batch_bytes, key)
    if problem:
        raise ConfigError(f"--max_batch_bytes {problem}")


def run(args, key):
    """Replay the dead letters of args.dir with the resolved key; return the exit status."""
    _check(args, key)
    reasons, endpoint, paths = _reasons(args.reasons), resolve_endpoint(args), dead_letter_files(args.dir)
    ours = (endpoint.rstrip("/"), key_fingerprint(key))
    delivered = frozenset() if args.rerun else read_delivered(args.dir)
    jsonl.remove_stale_temporaries(args.dir, jsonl.DEAD_LETTERS)  # of killed job processes: never letters
    found = survey(read_letters(paths), reasons, delivered, ours)
    if found.elsewhere and not args.to_other_destination:
        raise ConfigError(_refusal(found.elsewhere, ours, args.dir))
    if found.elsewhere:
        print(f"note: --to_other_destination: {sum(found.elsewhere.values()):,} letters of other destinations are "
              f"sent to {_where(ours)}", file=sys.stderr)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    output = _LazyOutput(FileSystems.join(args.output or FileSystems.join(args.dir, f"replayed-{stamp}"),
                                          f"dead_letters-replay-{stamp}.jsonl"))
    delivered_output = _LazyOutput(FileSystems.join(args.dir, f"delivered-{stamp}-{secrets.token_hex(4)}.jsonl"))
    budget = args.max_events_per_second
    # Under a budget a request carries at most a quarter of a second of it (as the job's), and each is sent (and
    # recorded, and shown in the progress) on its own.
    request_size = request_events(budget, MAX_BATCH_EVENTS)
    client = SegmentClient(key, ClientSettings(endpoint=endpoint, max_attempts=args.max_retry_attempts,
                                               max_retry_seconds=args.max_retry_seconds,
                                               max_request_bytes=args.max_batch_bytes, max_events=request_size,
                                               events_per_second=budget,
                                               max_requests_per_second=args.max_requests_per_second))
    tally, skipped, stopped = Counter(), Counter(), None
    try:
        with Progress(tally, found.to_send, args.progress_seconds):
            replay(read_letters(paths, tally), client, reasons, output, tally, skipped, delivered, delivered_output,
                   found.newest, chunk=min(CHUNK, request_size) if budget else None,
                   destination=letter_destination(*ours))
    except KeyboardInterrupt as stop:
        stopped = stop
    finally:
        output.close()
        delivered_output.close()
        client.close()
    if stopped is not None:
        print(_stop_line(stopped, tally, found.to_send, output, delivered_output), file=sys.stderr)
        return getattr(stopped, "status", EXIT_INTERRUPTED)
    print(_report(tally, skipped, output.path))
    return 0 if not tally["failed"] and not tally["unreadable"] else 2


def main(argv=None):
    """Command line `replay-dead-letters DIR ...`; returns the exit status (0, 1, 2, 130 or 143, see the module
    doc)."""
    key_flag, rest = split_write_key(sys.argv[1:] if argv is None else list(argv))
    key = key_flag or ""
    try:
        with _Signals():
            args, extra = _parser().parse_known_args(rest)
            use_storage_options(extra)
            key = resolve_write_key(key_source(args, key_flag))
            return run(args, key)
    except SystemExit as done:  # --help
        return done.code or 0
    except KeyboardInterrupt as stop:  # before anything was sent
        name, status = (stop.name, stop.status) if isinstance(stop, Interrupted) else SIGNALS[signal.SIGINT]
        print(f"interrupted ({name}): nothing was sent", file=sys.stderr)
        return status
    except (ConfigError, SegmentConfigError, BeamIOError, OSError) as error:
        message = str(error).replace(key, "***") if key else str(error)
        print(f"error: {message.splitlines()[0] if message else type(error).__name__}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
