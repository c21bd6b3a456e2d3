"""Benchmark: a run's cost with a year of ledger history (issue 22): a run of one new hour, and its --plan, with a
ledger of 0, about 100,000 and 1,000,000 recorded files; and a --watch started at the year's first hour.

1. A Currents root (generated once, cached): a year of hour partitions (2023, 8,760 hours) of small files, 12 an hour
   (one every 5 minutes: 3 event types, 4 files each), a few events each (105,120 files), written with the project's
   own generator (pipeline.sample_bucket) and Braze's schemas; then one new hour (2024-01-01T00) of 60,000 events in
   12 files of 5,000.
2. The year recorded the way users would: twelve monthly runs over the root (`--start 2023-MM-01 --end ...`), one
   ledger, each a process of its own (FnApiRunner) sending to a loopback Segment (answering in one send). The
   ledger is kept in the cache: --reuse skips this step when the cached ledger was recorded from the same bucket.
3. Ledgers of 0 files (empty), of the year (105,120 files, recorded by the runs: the ~100,000 point) and of
   1,000,000 files (the year's, plus 894,880 entries written with the project's own writer,
   transforms.ledger_files.PartitionWriter, 12 an hour for the hours before the year, as for the same destination):
   for each, the wall time and peak RSS of the whole process (startup included) of
     (a) a run of the new hour (`--start/--end` one hour, `--ledger`), sending its 60,000 events to the server;
     (b) `--plan` of the same hour with the ledger.
   Each measured run starts from a copy of the ledger (hard links: a run only adds files, and renames and deletes
   only in the new hour's partition); measurements are interleaved (empty, year, million, again) and repeated;
   the medians are reported, with the ratio to the empty ledger's in the same rounds.
4. A --watch on Prism started at the year's first hour with (a copy of) the year's ledger, the new hour there
   already, against a watch of the new hour alone with an empty ledger: seconds from the process start to the last
   of the 60,000 events accepted, peak RSS of the process tree; then SIGTERM (a drain), exit status 0, and the
   server's count: exactly the new hour's 60,000 events, each once, none of the year.
5. Where the time goes, in this process with the project's own functions: the listing of a ledger's first-layout
   files, and the watch's first listing (its Currents listing, its ledger lookups as listed and by hour).

The server listens on a fixed port (--port): a ledger entry's destination is the endpoint, port included, so the
year's ledger counts only for the same endpoint.

Peak RSS: the peak of the summed VmRSS of the process tree, sampled every 0.2 s (benchmarks/side_by_side.py's
TreeSampler). Not os.wait4's ru_maxrss: Linux counts in a child's the peak of the memory it ran in before its exec,
this process's (here a few hundred MB once the ledgers are written), which would hide what the job itself uses.

    .venv/bin/python benchmarks/ledger_history.py                      # everything (first time: about 25 minutes)
    .venv/bin/python benchmarks/ledger_history.py --reuse --repeats 3 --results benchmarks/RESULTS.md

Generated data lives under --cache (default /tmp/ledger-history); nothing is written in the project but --results.
"""
import argparse
import datetime
import json
import multiprocessing
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

# pylint: disable=wrong-import-position
import side_by_side  # noqa: E402  # the process-tree sampler, the one-send server, the machine description
from currents_to_segment.pipeline.sample_bucket import currents_path, make_record, write_currents_file  # noqa: E402
from currents_to_segment.transforms import ledger, ledger_files  # noqa: E402
from currents_to_segment.transforms.currents import schemas as currents_schemas  # noqa: E402

KEY = side_by_side.KEY
UTC = datetime.timezone.utc
HOUR = datetime.timedelta(hours=1)
YEAR = 2023  # 365 days: 8,760 hours
YEAR_START = datetime.datetime(YEAR, 1, 1, tzinfo=UTC)
NEW_HOUR = datetime.datetime(YEAR + 1, 1, 1, tzinfo=UTC)  # the hour after the year
EVENT_TYPES = ("users.messages.email.Delivery", "users.messages.email.Send", "users.messages.pushnotification.Send")
FILES_PER_HOUR = 12  # one every 5 minutes, spread over the event types
YEAR_EVENTS_PER_FILE = 5
NEW_HOUR_EVENTS = 60_000
MILLION = 1_000_000
YEAR_PREFIX, NEW_PREFIX = "year", "new"  # the external ids of the year's users and the new hour's
BUCKET_VERSION = 1  # change when the bucket's shape changes: the cache is written again


def _hour_text(hour):
    return hour.strftime("%Y-%m-%dT%H")


# ---------------------------------------------------------------------------------------------------------
# The Currents root

def _files_of_hour(root, hour, per_file, prefix, seq):
    """Write an hour's FILES_PER_HOUR files (5 minutes apart, the event types in turn); the next seq."""
    hour_start = int(hour.timestamp())
    for index in range(FILES_PER_HOUR):
        event_type = EVENT_TYPES[index % len(EVENT_TYPES)]
        schema = _schema(event_type)
        minute = index * 5
        records = [make_record(event_type, schema, seq + i, external_user_id=f"{prefix}-{seq + i}",
                               time=hour_start + minute * 60 + (i * 300) // per_file) for i in range(per_file)]
        path = currents_path(root, event_type, hour, offset=index * 1000, partition=0)
        write_currents_file(path, schema, records, "deflate", sync_marker=seq.to_bytes(16, "big"))
        seq += per_file
    return seq


_SCHEMAS = {}


def _schema(event_type):
    if event_type not in _SCHEMAS:
        import fastavro  # pylint: disable=import-outside-toplevel
        _SCHEMAS[event_type] = fastavro.parse_schema(currents_schemas.schema(event_type))
    return _SCHEMAS[event_type]


def _write_hours(args):
    root, hours, per_file, prefix, seq = args
    for hour in hours:
        seq = _files_of_hour(root, hour, per_file, prefix, seq)
    return len(hours)


def make_root(cache):
    """The cached Currents root (written when missing); (root, its description)."""
    root = os.path.join(cache, f"currents-v{BUCKET_VERSION}")
    marker = os.path.join(cache, f"currents-v{BUCKET_VERSION}.json")
    if os.path.exists(marker):
        with open(marker, encoding="utf-8") as stream:
            return root, json.load(stream)
    shutil.rmtree(root, ignore_errors=True)
    started = time.monotonic()
    hours = [YEAR_START + n * HOUR for n in range(int((NEW_HOUR - YEAR_START) / HOUR))]
    per_hour = FILES_PER_HOUR * YEAR_EVENTS_PER_FILE
    # two processes, each a half of the year (sequence numbers apart, so every event id is distinct)
    halves = [hours[:len(hours) // 2], hours[len(hours) // 2:]]
    jobs = [(root, half, YEAR_EVENTS_PER_FILE, YEAR_PREFIX, offset * per_hour)
            for half, offset in zip(halves, (0, len(halves[0])))]
    with multiprocessing.Pool(2) as pool:
        pool.map(_write_hours, jobs)
    _files_of_hour(root, NEW_HOUR, NEW_HOUR_EVENTS // FILES_PER_HOUR, NEW_PREFIX, 10 ** 9)
    described = {"id": uuid.uuid4().hex, "hours": len(hours), "files": len(hours) * FILES_PER_HOUR,
                 "events": len(hours) * per_hour, "new_hour_files": FILES_PER_HOUR,
                 "new_hour_events": NEW_HOUR_EVENTS, "seconds": round(time.monotonic() - started, 1)}
    with open(marker, "w", encoding="utf-8") as stream:
        json.dump(described, stream)
    return root, described


# ---------------------------------------------------------------------------------------------------------
# The loopback server: side_by_side's (one send per answer), counting events by user prefix, live

def _tally_server_class():
    base = side_by_side._one_write_server_class()  # pylint: disable=protected-access

    class Tally(list):
        """What the server keeps of the events it accepts: ids, distinct ids, users' prefixes, last time."""

        def __init__(self):
            super().__init__()
            self.ids = set()
            self.prefixes = Counter()
            self.last_at = None

        def extend(self, batch):
            for event in batch:
                self.ids.add(event.get("messageId"))
                self.prefixes[str(event.get("userId")).split("-", 1)[0]] += 1
            self.last_at = time.time()
            list.extend(self, (None for _ in batch))  # only the count

    class TallyServer(base):
        def __init__(self, write_key, port):
            super().__init__(write_key)
            self.accepted = Tally()
            self._port = port

        def __enter__(self):
            super().__enter__()
            # The same port every time: the ledger's destination is the endpoint, port included.
            listening, handler = self._httpd, self._httpd.RequestHandlerClass
            listening.shutdown()
            listening.server_close()
            self._httpd = type(listening)(("127.0.0.1", self._port), handler)
            threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
            return self

        def state(self):
            with self._lock:
                return {"accepted": len(self.accepted), "distinct": len(self.accepted.ids),
                        "prefixes": dict(self.accepted.prefixes), "last_at": self.accepted.last_at,
                        "requests": len(self.requests), "statuses": dict(self.statuses),
                        "violations": len(self.violations)}

        def reset(self):
            with self._lock:
                self.accepted = Tally()
                self.requests.clear()
                self.statuses.clear()
                self.violations.clear()

    return TallyServer


def _serve(port, connection):
    with _tally_server_class()(KEY, port) as server:
        connection.send(server.url)
        while True:
            command = connection.recv()
            if command == "reset":
                server.reset()
            connection.send(server.state())
            if command == "stop":
                return


class Server:
    """A server process of its own on 127.0.0.1:port: `url`, `state()` (what it accepted so far), `reset()`, `stop()`."""

    def __init__(self, port):
        self._connection, child_end = multiprocessing.Pipe()
        self._process = multiprocessing.Process(target=_serve, args=(port, child_end), daemon=True)
        self._process.start()
        self.url = self._connection.recv()

    def _ask(self, command):
        self._connection.send(command)
        return self._connection.recv()

    def state(self):
        return self._ask("state")

    def reset(self):
        return self._ask("reset")

    def stop(self):
        seen = self._ask("stop")
        self._process.join()
        return seen


# ---------------------------------------------------------------------------------------------------------
# Runs

def job_argv(runner, root, start, end, ledger_dir, url, work, *extra):
    argv = [sys.executable, "-m", "pipeline", *runner, "--currents_root", root, "--start", _hour_text(start)]
    if end is not None:
        argv += ["--end", _hour_text(end)]
    if ledger_dir is not None:
        argv += ["--ledger", ledger_dir]
    return argv + ["--segment_endpoint", url, "--dead_letter_output", os.path.join(work, "dead"),
                   "--summary_output", os.path.join(work, "summary.json"), "--quiet", *extra]


FNAPI = ["--runner=FnApiRunner"]
ENV = dict(os.environ, SEGMENT_WRITE_KEY=KEY, PYTHONUNBUFFERED="1")


def _summary(work):
    try:
        with open(os.path.join(work, "summary.json"), encoding="utf-8") as stream:
            return json.load(stream)
    except OSError:
        return None


def _month_starts():
    return [datetime.datetime(YEAR, month, 1, tzinfo=UTC) for month in range(1, 13)] + [NEW_HOUR]


def record_year(cache, root, bucket, reuse, scratch, server):
    """The year's ledger, recorded by twelve monthly runs (or the cached one, with reuse); (path, the runs' rows,
    None or, when reused, the date the cached one was recorded)."""
    recorded = os.path.join(cache, "ledger-year")
    marker = recorded + ".json"
    if reuse and os.path.exists(marker):
        with open(marker, encoding="utf-8") as stream:
            kept = json.load(stream)
        if kept["bucket"] == bucket["id"] and kept.get("endpoint") == server.url:
            print(f"year's ledger: reused from the cache (recorded by twelve monthly runs in "
                  f"{sum(row['wall'] for row in kept['months']):,.0f} s)")
            when = kept.get("recorded") or f"{datetime.date.fromtimestamp(os.path.getmtime(marker)):%Y-%m-%d}"
            return recorded, kept["months"], when
        print("year's ledger: the cached one was recorded from another bucket or to another endpoint: recorded again")
    shutil.rmtree(recorded, ignore_errors=True)
    if os.path.exists(marker):
        os.remove(marker)
    months = []
    starts = _month_starts()
    per_month_files = []
    for start, end in zip(starts, starts[1:]):
        hours = int((end - start) / HOUR)
        per_month_files.append(hours * FILES_PER_HOUR)
        work = tempfile.mkdtemp(prefix=f"month-{start:%m}-", dir=scratch)
        server.reset()
        wall, code, _, sampler = side_by_side.measure(
            job_argv(FNAPI, root, start, end, recorded, server.url, work), ENV, os.path.join(work, "output.log"))
        seen = server.state()
        summary = _summary(work) or {}
        expected = hours * FILES_PER_HOUR * YEAR_EVENTS_PER_FILE
        row = {"month": f"{start:%Y-%m}", "files": hours * FILES_PER_HOUR, "wall": wall, "code": code,
               "events": seen["accepted"], "distinct": seen["distinct"], "expected": expected,
               "recorded": (summary.get("ledger") or {}).get("files_recorded"),
               "tree_rss_mb": sampler.peak_rss_kib / 1024}
        months.append(row)
        ok = code == 0 and seen["accepted"] == seen["distinct"] == expected and row["recorded"] == row["files"]
        print(f"  month {row['month']}: {row['files']:,} files, {wall:,.1f} s, exit {code}, {seen['accepted']:,} "
              f"events accepted ({expected:,} expected), {row['recorded']} files recorded, peak RSS "
              f"{row['tree_rss_mb']:,.0f} MB{'' if ok else '  <-- NOT AS EXPECTED'}", flush=True)
        if not ok:
            print(side_by_side._tail(os.path.join(work, "output.log")))  # pylint: disable=protected-access
            raise SystemExit("a monthly run did not record its month: the year's ledger is not cached")
        shutil.rmtree(work, ignore_errors=True)
    with open(marker, "w", encoding="utf-8") as stream:
        json.dump({"bucket": bucket["id"], "endpoint": server.url, "months": months,
                   "recorded": f"{datetime.date.today():%Y-%m-%d}"}, stream)
    return recorded, months, None


def ledger_shape(ledger_dir):
    """(partitions, entry files, bytes, entries) of a ledger folder."""
    partitions = files = size = entries = 0
    for entry in os.scandir(ledger_dir):
        if not entry.is_dir():
            continue
        partitions += 1
        for item in os.scandir(entry.path):
            if item.name.endswith(".jsonl") and not item.name.startswith("."):
                files += 1
                size += item.stat().st_size
                with open(item.path, "rb") as stream:
                    entries += sum(1 for line in stream if line.startswith(b'{"path"'))
    return partitions, files, size, entries


def _first_header(ledger_dir):
    """The header line (scope, destination) of one of a ledger's entry files."""
    for entry in sorted(os.scandir(ledger_dir), key=lambda e: e.name):
        for item in sorted(os.scandir(entry.path), key=lambda e: e.name):
            if item.name.endswith(".jsonl") and not item.name.startswith("."):
                with open(item.path, encoding="utf-8") as stream:
                    found = json.loads(stream.readline())
                if "ledger" in found:
                    return found
    raise SystemExit(f"no header line in {ledger_dir}")


def make_million(cache, root, year_ledger, year_entries):
    """A ledger of MILLION files: the year's (hard links to the recorded files) and entries written with the
    project's PartitionWriter, FILES_PER_HOUR an hour for the hours before the year, for the destination the
    year was recorded for (the header of its files). Cached; (path, synthesized entries, seconds it took to write
    them, or None when cached)."""
    million = os.path.join(cache, "ledger-million")
    marker = million + ".json"
    year_marker = year_ledger + ".json"
    if os.path.exists(marker) and os.path.getmtime(marker) >= os.path.getmtime(year_marker):
        with open(marker, encoding="utf-8") as stream:
            return million, json.load(stream)["synthesized"], None
    shutil.rmtree(million, ignore_errors=True)
    hard_copy(year_ledger, million)
    found = _first_header(year_ledger)
    synthesized = MILLION - year_entries
    run_id = ledger.new_run_id()
    writer = ledger_files.PartitionWriter(million, run_id, found["scope"], found["destination"])
    started = time.monotonic()
    hour, written = YEAR_START, 0
    while written < synthesized:
        hour -= HOUR
        for index in range(min(FILES_PER_HOUR, synthesized - written)):
            event_type = EVENT_TYPES[index % len(EVENT_TYPES)]
            path = currents_path(root, event_type, hour, offset=index * 1000, partition=0)
            writer.write((path, 1_900 + index, hour.timestamp() + 300 * index + 1.5))
            written += 1
        writer.commit()
    seconds = time.monotonic() - started
    with open(marker, "w", encoding="utf-8") as stream:
        json.dump({"synthesized": written, "from": _hour_text(hour), "seconds": seconds}, stream)
    return million, written, seconds


def hard_copy(source, target):
    """A copy of a ledger folder made of hard links (a run only adds files, and renames or deletes files only in
    the partitions it writes: the source stays as it was)."""
    if source is not None:
        subprocess.run(["cp", "-al", source, target], check=True)
    else:
        os.makedirs(target)


def measured(label, argv, work, server, expect_events):
    """One measured process; a row."""
    server.reset()
    wall, code, _, sampler = side_by_side.measure(argv, ENV, os.path.join(work, "output.log"))
    seen = server.state()
    row = {"label": label, "wall": wall, "code": code, "tree_rss_mb": sampler.peak_rss_kib / 1024, "accepted": seen["accepted"], "distinct": seen["distinct"],
           "prefixes": seen["prefixes"], "summary": _summary(work)}
    row["ok"] = code == 0 and seen["accepted"] == seen["distinct"] == expect_events and \
        seen["prefixes"].get(YEAR_PREFIX, 0) == 0
    if not row["ok"]:
        row["tail"] = side_by_side._tail(os.path.join(work, "output.log"))  # pylint: disable=protected-access
    return row


def run_and_plan(ledgers, root, scratch, server, repeats):
    """(a) a run of the new hour and (b) its --plan with each ledger, interleaved, `repeats` rounds; {(kind, name):
    [rows]}."""
    rows = {}
    for round_ in range(repeats):
        for name, source in ledgers:
            for kind in ("run", "plan"):
                work = tempfile.mkdtemp(prefix=f"{kind}-{name}-", dir=scratch)
                copy = os.path.join(work, "ledger")
                if kind == "run":
                    copied = time.monotonic()
                    hard_copy(source, copy)
                    copied = time.monotonic() - copied
                    argv = job_argv(FNAPI, root, NEW_HOUR, NEW_HOUR + HOUR, copy, server.url, work)
                    expect = NEW_HOUR_EVENTS
                else:  # a plan writes nothing: the ledger itself (the same every time)
                    copied = 0.0
                    argv = job_argv(FNAPI, root, NEW_HOUR, NEW_HOUR + HOUR, source or copy, server.url, work,
                                    "--plan")
                    expect = 0
                    if source is None:
                        os.makedirs(copy)
                row = measured(f"{kind} {name}", argv, work, server, expect)
                row["copy_seconds"] = copied
                if kind == "plan":
                    row["plan_total"] = _plan_total(os.path.join(work, "output.log"))
                    row["ok"] = row["ok"] and "12 files" in (row["plan_total"] or "")
                else:
                    recorded = ((row["summary"] or {}).get("ledger") or {}).get("files_recorded")
                    row["ok"] = row["ok"] and recorded == FILES_PER_HOUR
                rows.setdefault((kind, name), []).append(row)
                print(f"  round {round_ + 1} {kind:4} ledger {name:8}: {row['wall']:6.1f} s, peak RSS "
                      f"{row['tree_rss_mb']:5.0f} MB, exit {row['code']}"
                      + (f", {row['accepted']:,} events accepted" if kind == "run" else f", {row['plan_total']}")
                      + ("" if row["ok"] else "  <-- NOT AS EXPECTED"), flush=True)
                if not row["ok"]:
                    print(row.get("tail", ""))
                shutil.rmtree(work, ignore_errors=True)
    return rows


def _plan_total(log_path):
    with open(log_path, encoding="utf-8", errors="replace") as stream:
        totals = [line.strip() for line in stream if line.startswith("TOTAL")]
    return totals[-1] if totals else None


def watch(name, start, source, root, scratch, server, prism, timeout):
    """A --watch on Prism from `start` with a copy of the ledger `source` (None: empty); a row."""
    work = tempfile.mkdtemp(prefix=f"watch-{name}-", dir=scratch)
    copy = os.path.join(work, "ledger")
    hard_copy(source, copy)
    server.reset()
    argv = job_argv(["--runner=PrismRunner", f"--prism_location={prism}"], root, start, None, copy, server.url, work,
                    "--watch")
    log_path = os.path.join(work, "output.log")
    with open(log_path, "wb") as log:
        started_at = time.time()
        process = subprocess.Popen(argv, cwd=ROOT, env=ENV, stdout=log, stderr=subprocess.STDOUT)
        sampler = side_by_side.TreeSampler(process.pid)
        sampler.start()
        seen = server.state()
        while process.poll() is None and time.time() - started_at < timeout:
            seen = server.state()
            if seen["prefixes"].get(NEW_PREFIX, 0) >= NEW_HOUR_EVENTS:
                break
            time.sleep(0.2)
        delivered_at = seen["last_at"] if seen["prefixes"].get(NEW_PREFIX, 0) >= NEW_HOUR_EVENTS else None
        time.sleep(2)  # anything sent twice or of the year comes with the rest
        stop = time.time()
        ended_early = process.poll() is not None
        process.send_signal(signal.SIGTERM)  # a drain: no more listings, the files in flight finished
        while process.poll() is None and time.time() < stop + 180:
            time.sleep(0.05)
        drained = time.time() - stop
        if process.poll() is None:  # not drained in 3 minutes
            process.kill()
            process.wait()
        sampler.stop()
    final = server.state()
    row = {"label": f"watch {name}", "last_event": None if delivered_at is None else delivered_at - started_at,
           "code": process.returncode, "drain": drained, "tree_rss_mb": sampler.peak_rss_kib / 1024,
           "processes": sampler.most_processes, "accepted": final["accepted"], "distinct": final["distinct"],
           "prefixes": final["prefixes"], "summary": _summary(work), "ended_early": ended_early}
    recorded = ((row["summary"] or {}).get("ledger") or {}).get("files_recorded")
    skipped = ((row["summary"] or {}).get("ledger") or {}).get("files_skipped")
    row["recorded"], row["skipped"] = recorded, skipped
    row["ok"] = (process.returncode == 0 and delivered_at is not None and final["accepted"] == final["distinct"] ==
                 NEW_HOUR_EVENTS and final["prefixes"].get(NEW_PREFIX) == NEW_HOUR_EVENTS and not ended_early)
    print(f"  watch {name:8}: last of the {NEW_HOUR_EVENTS:,} events at "
          f"{'never' if row['last_event'] is None else format(row['last_event'], '.1f') + ' s'}, peak RSS "
          f"{row['tree_rss_mb']:,.0f} MB (tree of up to {row['processes']} processes); SIGTERM -> exit {row['code']} "
          f"in {drained:.1f} s; {final['accepted']:,} events accepted ({final['distinct']:,} distinct, "
          f"{final['prefixes']}); ledger: {skipped} files skipped, {recorded} recorded"
          + ("" if row["ok"] else "  <-- NOT AS EXPECTED"), flush=True)
    if not row["ok"]:
        print(side_by_side._tail(log_path, 30))  # pylint: disable=protected-access
    shutil.rmtree(work, ignore_errors=True)
    return row


def diagnose(root, year_ledger, ledgers):
    """Where the time goes, measured in this process with the project's own functions (warm caches): the read of
    a ledger's first-layout files (ledger_files.read_legacy: a Lookup's start, and a run's migrate), and the watch's
    first listing from the year's first hour as transforms.watch._ListFn makes it (the partitions the watch lists,
    FileAccess.match of each, a Lookup as the watch keeps it), its lookups in the order listed and by hour."""
    # pylint: disable=import-outside-toplevel
    from apache_beam.options.pipeline_options import PipelineOptions
    from currents_to_segment.pipeline import partitions
    from currents_to_segment.transforms import watch as watching
    from currents_to_segment.transforms.file_access import FileAccess

    found = {"legacy": {}}
    for name, path in ledgers:
        if path is not None:
            times = []
            for _ in range(3):
                started = time.monotonic()
                ledger_files.read_legacy(path)
                times.append(time.monotonic() - started)
            found["legacy"][name] = statistics.median(times)
    patterns = partitions.WatchedRoot(root, PipelineOptions([]), YEAR_START).patterns(full=True)
    access = FileAccess()
    started = time.monotonic()
    listed = [(pattern, access.match(pattern)) for pattern in patterns]
    found["listing"] = (time.monotonic() - started, len(patterns), sum(len(files) for _, files in listed))
    reads = [0]
    read_partition = ledger_files.read_partition

    def counted(*args, **kwargs):
        reads[0] += 1
        return read_partition(*args, **kwargs)

    ledger_files.read_partition = counted
    try:
        for order, ordered in (("as listed", listed), ("by hour", sorted(listed, key=lambda pair: _hour_of(pair[0])))):
            lookup = ledger.Lookup(year_ledger, max_age=watching.LEDGER_READ_SECONDS,
                                   max_partitions=watching.LEDGER_PARTITIONS_KEPT)
            reads[0] = 0
            started = time.monotonic()
            for _, files in ordered:
                for metadata in files:
                    lookup.entries(metadata.path, metadata.size_in_bytes, metadata.last_updated_in_seconds)
            found[order] = (time.monotonic() - started, reads[0])
    finally:
        ledger_files.read_partition = read_partition
    return found


def _hour_of(path):
    return path[path.index("/date=") + 6:][:13]


def diagnosis_lines(found):
    if not found:
        return []
    if "error" in found:
        return ["", f"Where the time goes: not measured ({found['error']})."]
    seconds, patterns, files = found["listing"]
    lines = ["", "Where the time goes, measured in the benchmark's process with the project's own functions (warm "
             "caches):", "", "| what | seconds |", "|---|---:|"]
    for name, took in found["legacy"].items():
        lines.append(f"| `ledger_files.read_legacy` of the {name} ledger (median of 3) | {took:.2f} |")
    lines.append(f"| the watch's first listing from the year's first hour: FileAccess.match of each of its {patterns:,} "
                 f"partitions ({files:,} files) | {seconds:.1f} |")
    for order in ("as listed", "by hour"):
        took, reads = found[order]
        lines.append(f"| its ledger lookups (a Lookup as the watch keeps it), partitions {order}: {reads:,} ledger "
                     f"partition reads | {took:.1f} |")
    return lines + ["", "`read_legacy` looks for the first layout's files, `<ledger>/entries-*.jsonl`, at the top of "
                    "the ledger (on a local disk through glob: Beam's match walked every file below `<ledger>` "
                    "before it filtered); a `--plan` does it once, a run twice (its migrate and its "
                    "SkipFilesInLedger), a watch three times (its migrate and the Lookups of two steps)."]


# ---------------------------------------------------------------------------------------------------------
# Report

def _median(rows, key):
    return statistics.median(row[key] for row in rows)


def _count(value):
    return "-" if value is None else f"{value:,}"


def _bound(ok):
    return "met" if ok else "NOT met"


def report(command, machine, bucket, recording, shapes, synthesized, rows, watches, repeats, load, diagnosis):
    months, reused = recording
    names = [name for name, _ in shapes]
    lines = ["", f"## A year of ledger history (issue 22): a run of one new hour, --plan, and a watch, "
             f"{datetime.date.today():%Y-%m-%d}", "",
             f"`benchmarks/ledger_history.py`. Command: `{command}`", "",
             "Machine: " + "; ".join(machine) + f". Load average at the start: {load}; other engineers' tests were "
             "running at the same time.", "",
             f"Data: a Currents root of {bucket['hours']:,} hour partitions ({YEAR}) of {FILES_PER_HOUR} small files "
             f"an hour (one every 5 minutes; {len(EVENT_TYPES)} event types, deflate, {YEAR_EVENTS_PER_FILE} events "
             f"each): {bucket['files']:,} files, {bucket['events']:,} events, written with pipeline/sample_bucket.py "
             f"and Braze's schemas; then the new hour ({_hour_text(NEW_HOUR)}): {NEW_HOUR_EVENTS:,} events in "
             f"{FILES_PER_HOUR} files. Every run is a process of its own (`python -m pipeline`, startup included), "
             "sending to a loopback Segment server in another process (answering in one send).", "",
             "The year recorded the way users would: twelve monthly runs (`--runner=FnApiRunner --currents_root ... "
             "--start YYYY-MM-01 --end <next month> --ledger L`), one ledger"
             + (f" (run by this benchmark on {reused}, the same machine, and kept: `--reuse`)" if reused else "")
             + ":", "",
             "| month | files | wall s | events accepted | files recorded |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {m['month']} | {m['files']:,} | {m['wall']:,.1f} | {m['events']:,} | {m['recorded']:,} |"
              for m in months]
    lines += [f"| total | {sum(m['files'] for m in months):,} | {sum(m['wall'] for m in months):,.1f} | "
              f"{sum(m['events'] for m in months):,} | {sum(m['recorded'] for m in months):,} |", ""]
    lines += ["Ledgers measured (partitions are `date=` hour folders):", "",
              "| ledger | files recorded | partitions | entry files | size MB | how |", "|---|---:|---:|---:|---:|---|"]
    how = {"empty": "an empty folder", "year": "the twelve monthly runs above (the ~100,000 point)",
           "million": f"the year's, plus {synthesized:,} entries written with transforms.ledger_files.PartitionWriter "
                      f"({FILES_PER_HOUR} an hour, the {synthesized // FILES_PER_HOUR:,} hours before the year, about "
                      "8.5 years), for the year's destination"}
    for name, (partitions, files, size, entries) in shapes:
        lines.append(f"| {name} | {entries:,} | {partitions:,} | {files:,} | {size / 1e6:,.1f} | {how[name]} |")
    lines += ["", f"A run of the new hour (`--start {_hour_text(NEW_HOUR)} --end {_hour_text(NEW_HOUR + HOUR)} "
              f"--ledger <copy>`, FnApiRunner, {NEW_HOUR_EVENTS:,} events sent) and its `--plan` (same options and "
              f"`--plan`), median of {repeats} interleaved rounds; ratio = median of each round's ratio to the "
              "empty ledger's run in the same round:", "",
              "| ledger | run: wall s | vs empty | peak RSS MB | vs empty | plan: wall s | vs empty | peak RSS MB | "
              "vs empty |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    base = {kind: rows[(kind, "empty")] for kind in ("run", "plan")}

    def ratio(kind, name):
        return statistics.median(row["wall"] / b["wall"] for row, b in zip(rows[(kind, name)], base[kind]))

    def extra(kind, name):
        return _median(rows[(kind, name)], "tree_rss_mb") - _median(base[kind], "tree_rss_mb")

    for name in names:
        cells = []
        for kind in ("run", "plan"):
            found = rows[(kind, name)]
            cells += [f"{_median(found, 'wall'):.1f}", f"{ratio(kind, name):.2f}x",
                      f"{_median(found, 'tree_rss_mb'):.0f}", f"{extra(kind, name):+.0f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Every round's figures (wall s / peak RSS MB of the process tree):", ""]
    for (kind, name), found in rows.items():
        lines.append(f"- {kind} {name}: " + ", ".join(f"{r['wall']:.1f} s / {r['tree_rss_mb']:.0f} MB" for r in found)
                     + ("" if all(r["ok"] for r in found) else " (NOT ALL AS EXPECTED)"))
    checks = []
    year_plan = rows[("plan", "year")]
    run_ratio = ratio("run", "year")
    plan_limit = statistics.median(1.5 * b["wall"] + 2 for b in base["plan"])
    checks.append(("one new hour with the year's ledger: within 1.5x the wall time of the empty ledger's",
                   f"{run_ratio:.2f}x", run_ratio <= 1.5))
    checks.append(("... and within +50 MB peak RSS", f"{extra('run', 'year'):+.0f} MB", extra("run", "year") <= 50))
    checks.append(("`--plan` with the year's ledger: within 1.5x + 2 s",
                   f"{_median(year_plan, 'wall'):.1f} s (limit {plan_limit:.1f} s)",
                   _median(year_plan, "wall") <= plan_limit))
    checks.append(("... and within +50 MB peak RSS", f"{extra('plan', 'year'):+.0f} MB", extra("plan", "year") <= 50))
    if "million" in names:  # not a bound of the issue: the same limits, at 1,000,000 files
        million_plan = _median(rows[("plan", "million")], "wall")
        checks.append(("(not in the issue) the same run with 1,000,000 files: within 1.5x and +50 MB",
                       f"{ratio('run', 'million'):.2f}x, {extra('run', 'million'):+.0f} MB",
                       ratio("run", "million") <= 1.5 and extra("run", "million") <= 50))
        checks.append(("(not in the issue) `--plan` with 1,000,000 files: within 1.5x + 2 s and +50 MB",
                       f"{million_plan:.1f} s (limit {plan_limit:.1f} s), {extra('plan', 'million'):+.0f} MB",
                       million_plan <= plan_limit and extra("plan", "million") <= 50))
    if watches:
        lines += ["", f"A watch on Prism (`--runner=PrismRunner --watch --currents_root ... --start <hour> --ledger "
                  "<copy>`, default --watch_interval), the new hour already there when it starts; seconds from the "
                  f"process start to the last of the new hour's {NEW_HOUR_EVENTS:,} events accepted by the server; "
                  "then SIGTERM (a drain):", "",
                  "| watch | last event s | peak RSS MB (tree) | events accepted (distinct) | of the year | ledger: "
                  "skipped / recorded | SIGTERM -> exit (drain s) |", "|---|---:|---:|---:|---:|---:|---|"]
        for row in watches:
            last = "never" if row["last_event"] is None else f"{row['last_event']:.1f}"
            lines.append(f"| {row['label']} | {last} | {row['tree_rss_mb']:.0f} | {row['accepted']:,} "
                         f"({row['distinct']:,}) | {row['prefixes'].get(YEAR_PREFIX, 0):,} | {_count(row['skipped'])} / "
                         f"{_count(row['recorded'])} | {row['code']} ({row['drain']:.1f}) |")
        alone = [row for row in watches if row["label"] == "watch new-hour"]
        year = [row for row in watches if row["label"] == "watch year"]
        if alone and year and all(r["last_event"] is not None for r in alone + year):
            limit = 1.5 * statistics.median(r["last_event"] for r in alone) + 15
            last = statistics.median(r["last_event"] for r in year)
            more = statistics.median(r["tree_rss_mb"] for r in year) - statistics.median(
                r["tree_rss_mb"] for r in alone)
            checks.append(("watch from the year's first hour: exactly the new hour's events, each once, exit 0",
                           "yes" if all(r["ok"] for r in year) else "no", all(r["ok"] for r in year)))
            checks.append(("... its last event within 1.5x + 15 s of the watch of the new hour alone",
                           f"{last:.1f} s (limit {limit:.1f} s)", last <= limit))
            checks.append(("... its process tree within +100 MB", f"{more:+.0f} MB", more <= 100))
    lines += diagnosis_lines(diagnosis)
    lines += ["", "Against the bounds of issue 22:", "", "| bound | measured | |", "|---|---|---|"]
    lines += [f"| {what} | {value} | {_bound(ok)} |" for what, value, ok in checks]
    lines += ["", "Peak RSS is the peak of the summed VmRSS of the process tree, sampled every 0.2 s. Each measured "
              "run starts from a copy of its ledger (hard links); `--plan` writes nothing and reads the ledger "
              "itself.", ""]
    return lines, checks


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", default="/tmp/ledger-history", help="where the generated root and the recorded "
                        "ledgers are kept between runs (default /tmp/ledger-history)")
    parser.add_argument("--reuse", action="store_true", help="use the cached year's ledger instead of recording the "
                        "year again (when it was recorded from the cached root)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of the interleaved runs and plans (default 3)")
    parser.add_argument("--watch-repeats", type=int, default=1, help="rounds of the two watches (default 1)")
    parser.add_argument("--no-million", action="store_true", help="leave out the 1,000,000-file ledger")
    parser.add_argument("--no-watch", action="store_true", help="leave out the watches")
    parser.add_argument("--no-diagnosis", action="store_true", help="leave out the timing of the parts")
    parser.add_argument("--watch-timeout", type=float, default=900.0)
    parser.add_argument("--port", type=int, default=18_722, help="the loopback server's port (default 18722): "
                        "always the same, since the ledger's destination is the endpoint, port included")
    parser.add_argument("--results", metavar="FILE", help="append the report to FILE (Markdown) as a new section")
    args = parser.parse_args(argv)

    command = " ".join(shlex.quote(side_by_side._shown(a)) for a in [sys.executable, *sys.argv])  # pylint: disable=protected-access
    machine = side_by_side.machine_description()
    load = ", ".join(f"{n:.1f}" for n in os.getloadavg())
    print("\n".join(machine))
    print(f"command: {command}\nload average: {load}")
    os.makedirs(args.cache, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="work-", dir=args.cache)
    prism = side_by_side.prism_location()
    try:
        started = time.monotonic()
        root, bucket = make_root(args.cache)
        print(f"\nCurrents root: {bucket['files']:,} files of the year ({bucket['hours']:,} hours), "
              f"{bucket['events']:,} events; the new hour {_hour_text(NEW_HOUR)}: {NEW_HOUR_EVENTS:,} events in "
              f"{FILES_PER_HOUR} files ({time.monotonic() - started:.0f} s; written in {bucket['seconds']:.0f} s)",
              flush=True)
        server = Server(args.port)
        try:
            print("\nThe year recorded by twelve monthly runs:", flush=True)
            year_ledger, months, reused = record_year(args.cache, root, bucket, args.reuse, scratch, server)
            shapes = [("empty", (0, 0, 0, 0)), ("year", ledger_shape(year_ledger))]
            ledgers = [("empty", None), ("year", year_ledger)]
            synthesized = 0
            if not args.no_million:
                million, synthesized, seconds = make_million(args.cache, root, year_ledger, shapes[1][1][3])
                shapes.append(("million", ledger_shape(million)))
                ledgers.append(("million", million))
                print(f"1,000,000-file ledger: the year's and {synthesized:,} entries written with PartitionWriter "
                      + ("(cached)" if seconds is None else f"in {seconds:.0f} s"))
            for name, (partitions, files, size, entries) in shapes:
                print(f"ledger {name}: {entries:,} files recorded, {partitions:,} partitions, {files:,} entry files, "
                      f"{size / 1e6:,.1f} MB")
            print(f"\nA run of the new hour and its --plan, {args.repeats} interleaved rounds:", flush=True)
            rows = run_and_plan(ledgers, root, scratch, server, args.repeats)
            watches = []
            if not args.no_watch:
                if not prism:
                    print("no Prism binary (PRISM_LOCATION or .tools/prism-*/prism): no watch")
                else:
                    print(f"\nWatches on Prism (the new hour there already), {args.watch_repeats} round(s):",
                          flush=True)
                    for _ in range(args.watch_repeats):
                        watches.append(watch("new-hour", NEW_HOUR, None, root, scratch, server, prism,
                                             args.watch_timeout))
                        watches.append(watch("year", YEAR_START, year_ledger, root, scratch, server, prism,
                                             args.watch_timeout))
        finally:
            server.stop()
        diagnosis = None
        if not args.no_diagnosis:
            print("\nWhere the time goes (in this process) ...", flush=True)
            try:
                diagnosis = diagnose(root, year_ledger, ledgers)
            except Exception as error:  # pylint: disable=broad-except  # the project's internals changed
                diagnosis = {"error": f"{type(error).__name__}: {error}"}
        lines, checks = report(command, machine, bucket, (months, reused), shapes, synthesized, rows, watches,
                               args.repeats, load, diagnosis)
        print("\n".join(lines))
        if args.results:
            with open(args.results, "a+", encoding="utf-8") as stream:
                stream.seek(0)
                ending = stream.read()[-2:]  # a blank line before the new section, not more
                gap = "" if ending in ("", "\n\n") else "\n" if ending.endswith("\n") else "\n\n"
                stream.write(gap + "\n".join(lines[1:]))
            print(f"appended to {args.results}")
        return 0 if all(ok for what, _, ok in checks if not what.startswith("(not in the issue)")) else 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
