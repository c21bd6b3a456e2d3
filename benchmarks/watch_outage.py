"""Benchmark: a --watch through an outage of Segment longer than the retry budget (issue 22's check).

Starts the job with --watch on an empty folder (in a process of its own, as a user starts it), lands a new Currents
file every --every seconds for --minutes minutes (whole, as an object store does: written aside, then renamed into
place), has the loopback Segment server answer 503 to everything from --down-at to --up-at minutes, then stops the
job with SIGTERM. Reports: events landed and delivered (and how many more than once), dead letters written, the exit
status, how long after Segment came back the files held were delivered, and the job's memory: the mean resident set
size of its process (and of it with the Prism runner's) in each minute.

    PRISM_LOCATION=... .venv/bin/python benchmarks/watch_outage.py --minutes 6 --every 2 --down-at 2 --up-at 4 \\
        -- --max_retry_seconds 30
"""
import argparse
import collections
import glob
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

# pylint: disable=wrong-import-position
from currents_to_segment.pipeline.sample_bucket import make_record, write_currents_file  # noqa: E402
from currents_to_segment.transforms.currents import schemas  # noqa: E402
from tests.segment_server import SegmentServer  # noqa: E402

KEY = "benchmark-write-key"
TYPES = ("users.messages.email.Send", "users.messages.pushnotification.Send", "users.messages.email.Open")


def rss_kb(pid):
    """The resident set size of a process in KB (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as stream:
            return next(int(line.split()[1]) for line in stream if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return 0


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="utf-8") as stream:
            return [int(child) for child in stream.read().split()]
    except OSError:
        return []


def sample_memory(job, samples, stop):
    """(seconds since start, job RSS, job + its descendants' RSS) every second."""
    started = time.monotonic()
    while not stop.is_set() and job.poll() is None:
        family, todo = [], [job.pid]
        while todo:
            pid = todo.pop()
            family.append(pid)
            todo.extend(children(pid))
        samples.append((time.monotonic() - started, rss_kb(job.pid), sum(rss_kb(pid) for pid in family)))
        stop.wait(1.0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=6)
    parser.add_argument("--every", type=float, default=2, help="seconds between two files landing")
    parser.add_argument("--events", type=int, default=200, help="events per file")
    parser.add_argument("--down-at", type=float, default=2, help="minute Segment goes down (503)")
    parser.add_argument("--up-at", type=float, default=4, help="minute Segment answers again")
    parser.add_argument("--watch-interval", type=float, default=10)
    parser.add_argument("job_args", nargs="*", help="more options of the job, after --")
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="watch-outage-")
    watched, staging, out = (os.path.join(work, name) for name in ("watched", "staging", "out"))
    for folder in (watched, staging, out):
        os.makedirs(folder)
    expected = set()
    with SegmentServer(write_key=KEY, one_write=True) as server:
        job = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "--runner=PrismRunner", f"--prism_location={os.environ['PRISM_LOCATION']}",
             "--input", f"{watched}/**", "--watch", "--watch_interval", str(args.watch_interval),
             "--segment_endpoint", server.url, "--dead_letter_output", os.path.join(out, "dead"),
             "--ledger", os.path.join(out, "ledger"), "--summary_output", os.path.join(out, "summary.json"),
             "--progress_seconds", "30", *args.job_args],
            env={**os.environ, "SEGMENT_WRITE_KEY": KEY}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines = []
        reader = threading.Thread(target=lambda: lines.extend(line.rstrip("\n") for line in job.stderr), daemon=True)
        reader.start()
        samples, stop = [], threading.Event()
        sampler = threading.Thread(target=sample_memory, args=(job, samples, stop), daemon=True)
        sampler.start()
        started = time.monotonic()
        n, went_down, came_back, landed_down = 0, None, None, set()
        while time.monotonic() - started < args.minutes * 60:
            minute = (time.monotonic() - started) / 60
            if went_down is None and minute >= args.down_at:
                server.always, went_down = 503, time.time()
            if went_down is not None and came_back is None and minute >= args.up_at:
                server.always, came_back = None, time.time()
            event_type = TYPES[n % len(TYPES)]
            schema = schemas.schema(event_type)
            records = [make_record(event_type, schema, n * 100_000 + i) for i in range(args.events)]
            staged = os.path.join(staging, f"{n}.avro")
            write_currents_file(staged, schema, records, "deflate")
            target = os.path.join(watched, f"event_type={event_type}", "date=2026-12-02-19", f"{n}.avro")
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.replace(staged, target)
            expected.update(record["id"] for record in records)
            if went_down is not None and came_back is None:
                landed_down.update(record["id"] for record in records)
            n += 1
            time.sleep(max(0.0, started + n * args.every - time.monotonic()))
        deadline = time.monotonic() + 300
        while not expected <= set(server.accepted_ids()) and time.monotonic() < deadline and job.poll() is None:
            time.sleep(0.5)
        job.send_signal(signal.SIGTERM)
        try:
            job.wait(timeout=120)
        except subprocess.TimeoutExpired:
            job.kill()
        stop.set()
        reader.join(10)
        accepted = server.accepted_ids()
        failed = sum(1 for request in server.requests if request.status == 503)
        accepted_at = {event["messageId"]: request.accepted_at for request in server.requests
                       if request.accepted_at for event in json.loads(request.body)["batch"]}
    letters = [line for path in glob.glob(os.path.join(out, "dead", "dead_letters-*.jsonl"))
               for line in open(path, encoding="utf-8") if line.strip()]
    by_minute = collections.defaultdict(list)
    for seconds, job_kb, all_kb in samples:
        by_minute[int(seconds // 60)].append((job_kb, all_kb))
    print(f"files landed: {n} ({args.events} events each, one every {args.every:g} s for {args.minutes:g} min); "
          f"Segment down (503) from minute {args.down_at:g} to {args.up_at:g}; job options: {' '.join(args.job_args)}")
    print(f"events landed: {len(expected):,}; delivered: {len(expected & set(accepted)):,}; "
          f"accepted more than once: {sum(1 for count in accepted.values() if count > 1):,}; "
          f"503 answers: {failed:,}; dead letters written: {len(letters)}")
    if came_back and landed_down <= set(accepted_at):
        held = max(when for message_id, when in accepted_at.items() if message_id in landed_down)
        print(f"the {len(landed_down):,} events of the files that landed while Segment was down were all delivered "
              f"{held - came_back:.1f} s after it came back")
    print(f"exit status after SIGTERM: {job.returncode}")
    for minute in sorted(by_minute):
        values = by_minute[minute]
        print(f"minute {minute + 1}: mean RSS job {statistics.mean(v[0] for v in values) / 1024:.0f} MB, "
              f"job + Prism {statistics.mean(v[1] for v in values) / 1024:.0f} MB ({len(values)} samples)")
    last, second = by_minute.get(int(args.minutes) - 1), by_minute.get(1)
    if last and second:
        print(f"mean RSS of the job in minute {int(args.minutes)} / minute 2: "
              f"{statistics.mean(v[0] for v in last) / statistics.mean(v[0] for v in second):.2f}x")
    print("\n".join(line for line in lines
                    if line.startswith(("progress", "warning", "Segment answers", "error", "SIGTERM"))))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
