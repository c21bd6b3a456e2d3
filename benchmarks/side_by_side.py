"""Benchmark: several ways of sending the same Currents bucket to the same loopback Segment, side by side.

One run writes one generated Currents bucket (files of 5,000 events cycling through the 34 catalogued
types, newest schemas, deflate; every 10th user without an external_user_id; campaign, canvas and
variation names of realistic length), then runs each system as a process of its own, one after the
other, each against a fresh loopback Segment server (tests/segment_server.py's SegmentServer, in a
process of its own, answering every request in one write):

    bare       a plain Python loop: fastavro reads each file, transforms.currents.track_calls.to_track maps each record
               (records without an external id dropped with transforms.currents.records.has_external_id), orjson
               serializes, requests of at most 475,000 bytes and 2,500 events, gzipped, POSTed over one
               requests.Session (the baseline)
    analytics  the same loop handing each call to Segment's analytics-python 2.4 (segment.analytics,
               its defaults but write_key, host and sync_mode=False), then flush() and shutdown()
    fnapi      the job: python -m pipeline --runner=FnApiRunner
    mp2        the job on FnApiRunner with --direct_running_mode=multi_processing --direct_num_workers=2
    prism      the job on Beam's Prism runner (--prism_location=$PRISM_LOCATION, else .tools/prism-*/prism)

For each it measures the whole process, startup included: wall seconds, events accepted by the server
per second, user+sys CPU per event of the process and its descendants (os.wait4, and a 0.2 s sampling
of /proc for descendants nobody waits for), peak RSS (os.wait4's ru_maxrss: the largest single process;
and the peak of the summed VmRSS of the process tree, sampled every 0.2 s), requests received, request
body bytes on the wire per event (as received, i.e. compressed when the client gzips), and the ratio of
events/s to the bare loop; and it checks that every system delivered every expected event (records of
catalogued types with an external id). It prints a Markdown table, a machine description and the
command line, and with --results FILE writes them to FILE.

    .venv/bin/pip install -e '.[bench]' && \\
        .venv/bin/python benchmarks/side_by_side.py --events 1000000 --results benchmarks/RESULTS.md
    .venv/bin/python benchmarks/side_by_side.py --events 20000 --systems bare,fnapi
    .venv/bin/python benchmarks/side_by_side.py --events 200000 -- --window_seconds 3600   # more job options

If analytics-python's queue (max_queue_size 10,000 by default) overflows, track() returns False and the
event is lost: the run counts and reports it, then runs analytics-python again with
--analytics-max-queue-size (100,000 by default; 0 = unbounded) and reports both rows.

The server validates every request in Python (gzip, JSON, each event's size and fields), in a process
of its own but on the same machine: on a machine with few cores it competes with the measured process
for CPU, the same way for every system. The summed RSS of a process tree counts pages shared between
processes once per process.
"""
import argparse
import datetime
import glob
import json
import multiprocessing
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

KEY = "benchmark-write-key"
EVENTS_PER_FILE = 5_000  # as benchmarks/local_throughput.py: Currents writes up to 15,000 per file
NO_EXTERNAL_ID_EVERY = 10  # every 10th user has no external_user_id
MAX_REQUEST_BYTES = 475_000
MAX_REQUEST_EVENTS = 2_500
DEFAULT_SYSTEMS = ("bare", "analytics", "fnapi", "mp2", "prism")
SAMPLE_SECONDS = 0.2
# Names as Braze customers give them: tens of characters, repeated across events of one campaign.
_CAMPAIGN_NAMES = ("2024-03 Spring Sale - Lapsed Purchasers (US, 30d)", "Weekly Digest - Personalized Picks v3",
                   "Onboarding Day 3 - Complete Your Profile Reminder", "Cart Abandonment 2h - Free Shipping Offer")
_CANVAS_NAMES = ("Lifecycle - New User Activation Journey 2024", "Winback - 60 Days Inactive (Email + Push)",
                 "Loyalty Tier Upgrade - Gold Members Celebration")
_STEP_NAMES = ("Step 2 - Wait 1 Day then Send Reminder", "Entry - Welcome Message", "Branch B - Discount 15%")
_VARIATION_NAMES = ("Variant A - Short Subject Line", "Control Group", "Variant B - Emoji Subject + Hero Image")


# ---------------------------------------------------------------------------------------------------------
# The bucket

def _realistic_overrides(field_names, seq):
    values = {"campaign_name": _CAMPAIGN_NAMES[seq % len(_CAMPAIGN_NAMES)],
              "canvas_name": _CANVAS_NAMES[seq % len(_CANVAS_NAMES)],
              "canvas_step_name": _STEP_NAMES[seq % len(_STEP_NAMES)],
              "message_variation_name": _VARIATION_NAMES[seq % len(_VARIATION_NAMES)],
              "canvas_variation_name": _VARIATION_NAMES[(seq + 1) % len(_VARIATION_NAMES)]}
    return {name: value for name, value in values.items() if name in field_names}


def write_bucket(root, events):
    """benchmarks/local_throughput.write_bucket's files (EVENTS_PER_FILE events each, cycling through the
    34 types over one day of hours, newest schemas, deflate), but every NO_EXTERNAL_ID_EVERY-th record
    without an external_user_id (make_record always gives one) and names of realistic length.
    Return (records written, records the job should deliver)."""
    from currents_to_segment.transforms.currents import schemas as currents_schemas
    from currents_to_segment.pipeline.sample_bucket import currents_path, make_record, write_currents_file
    from currents_to_segment.transforms.currents.catalog import CLASSIC
    from currents_to_segment.transforms.currents.records import has_external_id

    start = int(datetime.datetime(2024, 3, 1, tzinfo=datetime.timezone.utc).timestamp())
    seq = expected = 0
    for index in range(max(1, events // EVENTS_PER_FILE)):
        event_type = sorted(CLASSIC.events)[index % len(CLASSIC.events)]
        schema = currents_schemas.schema(event_type)
        field_names = {field["name"] for field in schema["fields"]}
        hour = start + (index % 24) * 3600
        records = []
        for i in range(EVENTS_PER_FILE):
            n = seq + i
            external_user_id = None if n % NO_EXTERNAL_ID_EVERY == NO_EXTERNAL_ID_EVERY - 1 else f"user-{n}"
            records.append(make_record(event_type, schema, n, external_user_id=external_user_id,
                                       time=hour + (i * 3600) // EVENTS_PER_FILE,
                                       **_realistic_overrides(field_names, n)))
        expected += sum(1 for record in records if has_external_id(record))
        seq += EVENTS_PER_FILE
        path = currents_path(root, event_type, datetime.datetime.fromtimestamp(hour, datetime.timezone.utc),
                             offset=index)
        write_currents_file(path, schema, records, "deflate")
    return seq, expected


# ---------------------------------------------------------------------------------------------------------
# The loopback server

def _one_write_server_class():
    """SegmentServer whose handler writes status line, headers and body in one send (two small writes meet
    Nagle's algorithm and delayed ACKs), and which keeps only what the benchmark reports (message ids and
    sizes, not every body and event), so that a run of millions of events does not swell the server."""
    from tests.segment_server import SegmentServer, _handler_for
    from http.server import ThreadingHTTPServer

    class _MessageIds(list):
        def extend(self, batch):
            super().extend(event.get("messageId") for event in batch)

    class BenchServer(SegmentServer):
        def __init__(self, write_key, one_write=True):
            super().__init__(write_key=write_key)
            self.accepted = _MessageIds()
            self.one_write = one_write
            self.raw_bytes = 0
            self.largest_body = 0
            self.statuses = Counter()

        def accepted_ids(self):
            with self._lock:
                return Counter(self.accepted)

        def _next_action(self, record, document):
            answer = super()._next_action(record, document)
            with self._lock:
                self.raw_bytes += record.raw_bytes
                self.largest_body = max(self.largest_body, record.body_bytes or 0)
                self.statuses[getattr(answer, "status", answer)] += 1
            record.body = None  # the server needs it only to answer
            return answer

        def __enter__(self):
            handler = _handler_for(self)
            if self.one_write:
                class OneWriteHandler(handler):
                    def _write(self, answer):
                        body = answer.body.encode() if isinstance(answer.body, str) else answer.body
                        try:
                            self.send_response(answer.status)  # buffered by BaseHTTPRequestHandler
                            for name, value in answer.headers.items():
                                self.send_header(name, value)
                            self.send_header("Content-Length", str(len(body)))
                            self._headers_buffer.append(b"\r\n")
                            response = b"".join(self._headers_buffer) + body
                            self._headers_buffer = []
                            self.wfile.write(response)  # one send
                        except (BrokenPipeError, ConnectionResetError):
                            self.close_connection = True
                handler = OneWriteHandler
            self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
            threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01},
                             daemon=True).start()
            return self

    return BenchServer


def serve(write_key, one_write, connection):
    """Server process (benchmarks/local_throughput.serve's pattern): run until told to stop, then report."""
    with _one_write_server_class()(write_key, one_write) as server:
        connection.send(server.url)
        connection.recv()
        ids = server.accepted_ids()
        with server._lock:  # pylint: disable=protected-access
            connection.send({"accepted": len(server.accepted), "distinct": len(ids), "requests": len(server.requests),
                             "raw_bytes": server.raw_bytes, "largest_body": server.largest_body,
                             "statuses": dict(server.statuses), "violations": list(server.violations[:5]),
                             "violation_count": len(server.violations)})


class Server:
    """A fresh server process; `url`, then `stop()` returns what it saw."""

    def __init__(self, one_write=True):
        self._connection, child_end = multiprocessing.Pipe()
        self._process = multiprocessing.Process(target=serve, args=(KEY, one_write, child_end), daemon=True)
        self._process.start()
        self.url = self._connection.recv()

    def stop(self):
        self._connection.send("stop")
        seen = self._connection.recv()
        self._process.join()
        return seen


def server_round_trips(one_write, requests_count=40):
    """Median and max seconds of a small request's round trip over one keep-alive connection."""
    import gzip
    import requests
    server = Server(one_write)
    event = {"type": "track", "event": "Probe", "userId": "u", "timestamp": "2024-03-01T00:00:00.000Z",
             "properties": {}}
    session = requests.Session()
    session.auth = (KEY, "")
    times = []
    try:
        for n in range(requests_count):
            body = json.dumps({"batch": [dict(event, messageId=f"probe-{n}")], "sentAt": "2024-03-01T00:00:00.000Z",
                               "writeKey": KEY}).encode()
            started = time.perf_counter()
            response = session.post(server.url + "/v1/batch", data=gzip.compress(body),
                                    headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
            times.append(time.perf_counter() - started)
            response.raise_for_status()
    finally:
        session.close()
        server.stop()
    return statistics.median(times[1:]), max(times[1:])


# ---------------------------------------------------------------------------------------------------------
# The two systems that are not the job (run in a process of their own: this script with --child)

def _records(bucket, stats):
    """(event type, record) of every catalogued file under bucket, in path order."""
    import fastavro
    from currents_to_segment.transforms.currents.catalog import CLASSIC
    from currents_to_segment.transforms.currents.records import event_type_from_path

    paths = sorted(glob.glob(os.path.join(bucket, "**", "*.avro"), recursive=True))
    for path in paths:
        event_type = event_type_from_path(path)
        if event_type not in CLASSIC.events:
            stats["skipped_files"] += 1
            continue
        with open(path, "rb") as stream:
            for record in fastavro.reader(stream):
                stats["read"] += 1
                yield event_type, record


def run_bare(bucket, url, stats):
    """Baseline: read, map, orjson, cut, gzip, POST with one requests.Session."""
    import gzip
    import orjson
    import requests
    from currents_to_segment.transforms.currents.records import has_external_id
    from currents_to_segment.transforms.currents.track_calls import to_track
    from currents_to_segment.transforms.segment.api import (MAX_EVENT_BYTES, envelope_bytes, format_sent_at, request_body)

    session = requests.Session()
    session.auth = (KEY, "")
    session.headers.update({"Content-Type": "application/json", "Content-Encoding": "gzip"})
    endpoint = url.rstrip("/") + "/v1/batch"
    envelope = envelope_bytes(KEY)

    def post(batch):
        body = request_body(batch, KEY, format_sent_at(datetime.datetime.now(datetime.timezone.utc)))
        response = session.post(endpoint, data=gzip.compress(body, compresslevel=6), timeout=(5, 30))
        stats["requests"] += 1
        if response.status_code == 200:
            stats["sent"] += len(batch)
        else:
            stats["failed"] += len(batch)

    batch, size = [], envelope
    for event_type, record in _records(bucket, stats):
        if not has_external_id(record):
            stats["no_external_id"] += 1
            continue
        try:
            payload = orjson.dumps(to_track(record, event_type))
        except (TypeError, ValueError):
            stats["invalid"] += 1
            continue
        if len(payload) > MAX_EVENT_BYTES:
            stats["too_large"] += 1
            continue
        grown = size + len(payload) + (1 if batch else 0)
        if batch and (grown > MAX_REQUEST_BYTES or len(batch) >= MAX_REQUEST_EVENTS):
            post(batch)
            batch, grown = [], envelope + len(payload)
        batch.append(payload)
        size = grown
    if batch:
        post(batch)
    session.close()


def run_analytics(bucket, url, stats, max_queue_size):
    """The same loop through Segment's analytics-python, defaults but write_key, host, sync_mode (and
    max_queue_size when given)."""
    import segment.analytics as analytics
    from currents_to_segment.transforms.currents.records import has_external_id
    from currents_to_segment.transforms.currents.track_calls import to_track

    analytics.write_key = KEY
    analytics.host = url
    analytics.sync_mode = False
    if max_queue_size is not None:
        analytics.max_queue_size = max_queue_size
    stats["max_queue_size"] = analytics.max_queue_size
    stats["upload_size"] = analytics.Client.DefaultConfig.upload_size
    stats["gzip"] = analytics.gzip

    def on_error(_error, batch):
        stats["failed"] += len(batch)

    analytics.on_error = on_error
    utc = datetime.timezone.utc
    for event_type, record in _records(bucket, stats):
        if not has_external_id(record):
            stats["no_external_id"] += 1
            continue
        try:
            message = to_track(record, event_type)
        except (TypeError, ValueError):
            stats["invalid"] += 1
            continue
        queued, _ = analytics.track(user_id=message["userId"], event=message["event"],
                                    properties=message["properties"],
                                    timestamp=datetime.datetime.fromtimestamp(record["time"], utc),
                                    message_id=message["messageId"], context=message["context"])
        if queued:
            stats["sent"] += 1
        else:
            stats["dropped_queue_full"] += 1
    analytics.flush()
    analytics.shutdown()


def child_main(args):
    stats = Counter()
    if args.child == "bare":
        run_bare(args.bucket, args.url, stats)
    else:
        run_analytics(args.bucket, args.url, stats, args.max_queue_size)
    with open(args.stats, "w", encoding="utf-8") as stream:
        json.dump(stats, stream)
    return 0


# ---------------------------------------------------------------------------------------------------------
# Measuring a process tree

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _proc_table():
    """pid -> (ppid, utime+stime seconds) of every process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stream:
                fields = stream.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        # after the command: state, ppid, ... utime (14th field of the line) and stime (15th)
        table[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS)
    return table


def _rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status", "rb") as stream:
            for line in stream:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class TreeSampler(threading.Thread):
    """Every SAMPLE_SECONDS: the summed VmRSS of a process and all its descendants (peak kept), the last CPU
    seen of each of them, and how many processes the tree held at most."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self._pid = pid
        self._stop_event = threading.Event()
        self.peak_rss_kib = 0
        self.cpu_seconds = {}
        self.most_processes = 0

    def sample(self):
        table = _proc_table()
        children = {}
        for pid, (ppid, _) in table.items():
            children.setdefault(ppid, []).append(pid)
        tree, todo = [], [self._pid]
        while todo:
            pid = todo.pop()
            if pid in table:
                tree.append(pid)
                self.cpu_seconds[pid] = table[pid][1]
            todo.extend(children.get(pid, ()))
        self.most_processes = max(self.most_processes, len(tree))
        self.peak_rss_kib = max(self.peak_rss_kib, sum(_rss_kib(pid) for pid in tree))

    def run(self):
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(SAMPLE_SECONDS)

    def stop(self):
        self._stop_event.set()
        self.join()


def measure(argv, env, log_path):
    """Run argv as a child process; return wall seconds, exit code, rusage and the sampler."""
    with open(log_path, "wb") as log:
        started = time.monotonic()
        process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        sampler = TreeSampler(process.pid)
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.monotonic() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        sampler.stop()
    return wall, process.returncode, usage, sampler


def _tail(path, lines=15):
    try:
        with open(path, encoding="utf-8", errors="replace") as stream:
            return "".join(stream.readlines()[-lines:]).rstrip()
    except OSError:
        return ""


# ---------------------------------------------------------------------------------------------------------
# The systems

def prism_location():
    if os.environ.get("PRISM_LOCATION"):
        return os.environ["PRISM_LOCATION"]
    found = sorted(glob.glob(os.path.join(os.path.abspath(ROOT), ".tools", "prism-*", "prism")))
    return found[-1] if found else None


def _shown(text):
    """A path as the results show it: relative to the project when inside it, else its last part only (results
    are committed: they name no folder of the machine they were measured on)."""
    if not os.path.isabs(text):
        return text
    relative = os.path.relpath(text, os.path.abspath(ROOT))
    return relative if not relative.startswith("..") else os.path.join("...", os.path.basename(text.rstrip("/")))


def system_runs(name, args):
    """(label, argv maker(url, work), extra env, kind) of the runs a system name stands for."""
    script = os.path.abspath(__file__)

    def child(kind, max_queue_size=None):
        def argv(url, work):
            extra = [] if max_queue_size is None else ["--max-queue-size", str(max_queue_size)]
            return [sys.executable, script, "--child", kind, "--bucket", args.bucket, "--url", url,
                    "--stats", os.path.join(work, "stats.json"), *extra]
        return argv

    def job(runner_args):
        def argv(url, work):
            return [sys.executable, "-m", "pipeline", *runner_args, "--input", f"{args.bucket}/**",
                    "--segment_endpoint", url, "--quiet", "--dead_letter_output", os.path.join(work, "dead"),
                    "--summary_output", os.path.join(work, "summary.json"), *args.pipeline_args]
        return argv

    if name == "bare":
        return [("bare loop", child("bare"), "child")]
    if name == "analytics":
        return [("analytics-python", child("analytics"), "child"),
                (f"analytics-python (max_queue_size={args.analytics_max_queue_size or 'unbounded'})",
                 child("analytics", args.analytics_max_queue_size), "child-if-dropped")]
    if name == "fnapi":
        return [("job FnApiRunner", job(["--runner=FnApiRunner"]), "job")]
    if name == "mp2":
        return [("job multi-processing x2", job(["--runner=FnApiRunner", "--direct_running_mode=multi_processing",
                                                 "--direct_num_workers=2"]), "job")]
    if name == "prism":
        location = prism_location()
        if not location:
            return [("job Prism", None, "skip")]
        return [("job Prism", job(["--runner=PrismRunner", f"--prism_location={location}"]), "job")]
    raise ValueError(name)


def run_system(label, make_argv, kind, work_root, expected):
    """One measured run; a row of figures and notes."""
    work = tempfile.mkdtemp(prefix=label.split()[0].replace("-", "_") + "-", dir=work_root)
    server = Server()
    env = dict(os.environ, SEGMENT_WRITE_KEY=KEY, PYTHONUNBUFFERED="1")
    log_path = os.path.join(work, "output.log")
    try:
        wall, code, usage, sampler = measure(make_argv(server.url, work), env, log_path)
    finally:
        seen = server.stop()
    accepted = seen["accepted"]
    cpu_wait4 = usage.ru_utime + usage.ru_stime
    cpu_sampled = sum(sampler.cpu_seconds.values())
    row = {"system": label, "wall": wall, "code": code, "accepted": accepted, "distinct": seen["distinct"],
           "requests": seen["requests"], "raw_bytes": seen["raw_bytes"], "largest_body": seen["largest_body"],
           "cpu_wait4": cpu_wait4, "cpu_sampled": cpu_sampled, "cpu": max(cpu_wait4, cpu_sampled),
           "maxrss_mb": usage.ru_maxrss / 1024, "tree_rss_mb": sampler.peak_rss_kib / 1024,
           "processes": sampler.most_processes, "expected": expected, "notes": [], "stats": {}}
    notes = row["notes"]
    if code != 0:
        notes.append(f"{label}: exited with status {code}; last lines of its output ({log_path}):\n"
                     + _indent(_tail(log_path)))
    stats_path = os.path.join(work, "stats.json")
    if kind.startswith("child") and os.path.exists(stats_path):
        with open(stats_path, encoding="utf-8") as stream:
            row["stats"] = json.load(stream)
    summary_path = os.path.join(work, "summary.json")
    if kind == "job" and os.path.exists(summary_path):
        with open(summary_path, encoding="utf-8") as stream:
            row["stats"] = {"summary": json.load(stream)}
    dropped = row["stats"].get("dropped_queue_full", 0)
    if dropped:
        notes.append(f"{label}: analytics.track() returned False for {dropped:,} events (\"analytics-python queue "
                     f"is full\", max_queue_size={row['stats'].get('max_queue_size')}): those events were lost.")
    if row["stats"].get("failed"):
        notes.append(f"{label}: {row['stats']['failed']:,} events in requests that failed.")
    if accepted != expected or seen["distinct"] != expected:
        notes.append(f"{label}: MISMATCH: the server accepted {accepted:,} events ({seen['distinct']:,} distinct), "
                     f"expected {expected:,}.")
    if seen["violation_count"]:
        notes.append(f"{label}: {seen['violation_count']} contract violations, e.g. {seen['violations'][:2]}")
    bad = {status: n for status, n in seen["statuses"].items() if status != 200}
    if bad:
        notes.append(f"{label}: answers other than 200: {bad}")
    if cpu_sampled > cpu_wait4 * 1.05:
        notes.append(f"{label}: os.wait4 counted {cpu_wait4:.1f} s CPU but sampling the process tree saw "
                     f"{cpu_sampled:.1f} s (descendants not waited for): the larger is reported.")
    return row


def _indent(text):
    return "\n".join("    " + line for line in text.splitlines())


# ---------------------------------------------------------------------------------------------------------
# Report

def machine_description():
    model = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as stream:
            for line in stream:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory = "unknown"
    try:
        with open("/proc/meminfo", encoding="utf-8") as stream:
            for line in stream:
                if line.startswith("MemTotal:"):
                    memory = f"{int(line.split()[1]) / 1024 ** 2:.1f} GiB"
                    break
    except OSError:
        pass
    system = platform.platform()
    try:
        with open("/etc/os-release", encoding="utf-8") as stream:
            pretty = dict(line.rstrip("\n").split("=", 1) for line in stream if "=" in line).get("PRETTY_NAME")
        if pretty:
            system = f"{pretty.strip(chr(34))} ({system})"
    except OSError:
        pass
    import importlib.metadata

    def version(distribution):
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return [f"CPU: {model}", f"cores: {os.cpu_count()} ({usable} usable by this process)", f"RAM: {memory}",
            f"Python: {platform.python_version()} ({_shown(sys.executable)})", f"Apache Beam: {version('apache-beam')}",
            f"analytics-python: {version('segment-analytics-python')}, orjson: {version('orjson')}, "
            f"fastavro: {version('fastavro')}, requests: {version('requests')}", f"OS: {system}"]


def table(rows):
    bare = next((row for row in rows if row["system"] == "bare loop" and row["accepted"]), None)
    lines = ["| system | wall s | events/s | vs bare | CPU µs/event | peak RSS MB (largest process) "
             "| peak RSS MB (tree) | requests | wire bytes/event | events accepted | all delivered |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        if row.get("skipped"):
            lines.append(f"| {row['system']} | skipped | | | | | | | | | {row['skipped']} |")
            continue
        accepted = row["accepted"]
        rate = accepted / row["wall"] if row["wall"] else 0
        ratio = f"{rate / (bare['accepted'] / bare['wall']):.2f}x" if bare else "n/a"
        per_event = (lambda value: f"{value / accepted:,.1f}") if accepted else (lambda value: "n/a")
        delivered = "yes" if accepted == row["expected"] == row["distinct"] and row["code"] == 0 else \
            f"NO ({accepted:,} of {row['expected']:,})" if row["code"] == 0 else f"NO (exit {row['code']})"
        lines.append(f"| {row['system']} | {row['wall']:.1f} | {rate:,.0f} | {ratio} | "
                     f"{per_event(row['cpu'] * 1e6)} | {row['maxrss_mb']:,.0f} | {row['tree_rss_mb']:,.0f} | "
                     f"{row['requests']:,} | {per_event(row['raw_bytes'])} | {accepted:,} | {delivered} |")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events to generate (default 1,000,000)")
    parser.add_argument("--systems", default=",".join(DEFAULT_SYSTEMS),
                        help=f"comma-separated, of {', '.join(DEFAULT_SYSTEMS)} (default all)")
    parser.add_argument("--results", default=None, metavar="FILE", help="also write the report to FILE (Markdown)")
    parser.add_argument("--analytics-max-queue-size", type=int, default=100_000, metavar="N",
                        help="max_queue_size for analytics-python's second run, made only when its default "
                             "queue dropped events (default 100,000; 0 = unbounded)")
    parser.add_argument("--keep", action="store_true", help="keep the bucket and every run's output")
    parser.add_argument("--bucket-cache", metavar="DIR", default=None,
                        help="generate the bucket of --events under DIR once and reuse it in later runs")
    parser.add_argument("--child", choices=("bare", "analytics"), help=argparse.SUPPRESS)
    parser.add_argument("--bucket", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--stats", help=argparse.SUPPRESS)
    parser.add_argument("--max-queue-size", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("pipeline_args", nargs=argparse.REMAINDER,
                        help="after --: more options for the job's runs, e.g. -- --window_seconds 3600")
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args)
    args.pipeline_args = [a for a in args.pipeline_args if a != "--"]
    from currents_to_segment.transforms.currents.catalog import CLASSIC
    systems = [name.strip() for name in args.systems.split(",") if name.strip()]
    unknown = set(systems) - set(DEFAULT_SYSTEMS)
    if unknown:
        parser.error(f"unknown systems {sorted(unknown)}; choose among {', '.join(DEFAULT_SYSTEMS)}")

    command = " ".join(shlex.quote(_shown(a)) for a in [sys.executable, *sys.argv])
    machine = machine_description()
    print("\n".join(machine))
    print(f"command: {command}")

    work_root = tempfile.mkdtemp(prefix="side-by-side-")
    started = time.monotonic()
    if args.bucket_cache:
        # The same generated bucket for several benchmark runs (generating 1M events takes minutes).
        args.bucket = os.path.join(args.bucket_cache, f"bucket-{args.events}")
        counts = os.path.join(args.bucket_cache, f"bucket-{args.events}.json")
        if not os.path.exists(counts):
            written, expected = write_bucket(args.bucket, args.events)
            with open(counts, "w", encoding="utf-8") as stream:
                json.dump([written, expected], stream)
        with open(counts, encoding="utf-8") as stream:
            written, expected = json.load(stream)
    else:
        args.bucket = os.path.join(work_root, "bucket")
        written, expected = write_bucket(args.bucket, args.events)
    print(f"\nbucket: {written:,} events in {written // EVENTS_PER_FILE} files ({_shown(args.bucket)}), "
          f"{expected:,} with an external id, written in {time.monotonic() - started:.1f} s")

    one_write = server_round_trips(True)
    two_writes = server_round_trips(False)
    notes = [f"Loopback server check (40 small requests on one keep-alive connection): response in one write "
             f"(the benchmark's server) median {one_write[0] * 1000:.2f} ms, max {one_write[1] * 1000:.2f} ms; "
             f"tests/segment_server.py's own handler (headers and body in two writes) median "
             f"{two_writes[0] * 1000:.2f} ms, max {two_writes[1] * 1000:.2f} ms."]
    if one_write[0] > 0.02:
        notes.append("WARNING: the server's median round trip is over 20 ms: a Nagle/delayed-ACK stall?")
    print(notes[0])

    rows = []
    for name in systems:
        for label, make_argv, kind in system_runs(name, args):
            if kind == "skip":
                rows.append({"system": label, "skipped": "no Prism binary: set PRISM_LOCATION", "notes": []})
                notes.append(f"{label}: skipped, no Prism binary (set PRISM_LOCATION or run scripts/setup_prism.sh)")
                print(f"\n{label}: skipped (no Prism binary)")
                continue
            if kind == "child-if-dropped":
                if not rows or not rows[-1].get("stats", {}).get("dropped_queue_full"):
                    continue
                notes.append(f"{label}: run again because the default queue dropped events; max_queue_size set "
                             f"to {args.analytics_max_queue_size or 'unbounded (0)'}, everything else default.")
            print(f"\n{label}: running ...", flush=True)
            row = run_system(label, make_argv, kind, work_root, expected)
            rows.append(row)
            print(f"{label}: {row['wall']:.1f} s, exit {row['code']}, {row['accepted']:,} events accepted in "
                  f"{row['requests']:,} requests; CPU {row['cpu']:.1f} s (wait4 {row['cpu_wait4']:.1f} s, sampled "
                  f"{row['cpu_sampled']:.1f} s over up to {row['processes']} processes); largest body "
                  f"{row['largest_body']:,} bytes uncompressed")
            for note in row["notes"]:
                print(note)
            notes.extend(row["notes"])
            if row["stats"].get("gzip") is False:
                notes.append(f"{label}: analytics-python does not gzip by default (gzip=False) and sends "
                             f"{row['stats'].get('upload_size')} events per request: its wire bytes are "
                             "uncompressed JSON.")

    report = ["# Braze Currents -> Segment: side by side", "", f"Command: `{command}`", "",
              "Machine:", "", *[f"- {line}" for line in machine], "",
              f"Data: {written:,} generated Currents events in {written // EVENTS_PER_FILE} Avro files (deflate) of "
              f"{EVENTS_PER_FILE:,}, cycling through the {len(CLASSIC.events)} catalogued types "
              f"({min(written // EVENTS_PER_FILE, len(CLASSIC.events))} of them in this run); every {NO_EXTERNAL_ID_EVERY}th user without "
              f"an external id, so {expected:,} events to deliver. Every system runs as a process of its own "
              "(startup included) against a fresh loopback Segment server in another process.", "",
              *table(rows), "",
              "events/s = events accepted by the server / wall seconds of the process; CPU = user+sys of the "
              "process and its descendants; wire bytes = request bodies as received (gzipped unless said "
              "otherwise); the tree's RSS sums VmRSS over its processes (shared pages counted once per process).",
              "", "Notes:", "", *[f"- {note}" for note in dict.fromkeys(notes)], ""]
    print("\n" + "\n".join(report[report.index(table(rows)[0]):]))
    if args.results:
        with open(args.results, "w", encoding="utf-8") as stream:
            stream.write("\n".join(report))
        print(f"written to {args.results}")
    if args.keep:
        print(f"kept: {work_root}")
    else:
        import shutil
        shutil.rmtree(work_root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
