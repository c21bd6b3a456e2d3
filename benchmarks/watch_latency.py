"""Benchmark: how long a file waits, under --watch, from landing in the watched folder to its last event accepted by
Segment; p50 and p95 over files landing every few seconds, once the job runs (a first file is delivered before).

Writes a generated Currents bucket aside, starts the job with --watch on an empty folder (in a process of its own,
as a user starts it), lands the bucket's files one at a time (whole, as an object store does: written aside, then
renamed into place) every --every seconds, and reads from the loopback Segment server (which answers in one send)
when each file's last event arrived. Then it stops the job with SIGTERM and reports how long the drain took and its
exit status.

    .venv/bin/python benchmarks/watch_latency.py --runner prism --files 20 --every 3 --watch-interval 10
    .venv/bin/python benchmarks/watch_latency.py --runner flink --files 20 --every 3 --watch-interval 10

--runner flink needs FLINK_JOB_SERVER_JAR (scripts/setup_flink.sh), prism needs PRISM_LOCATION
(scripts/setup_prism.sh); fnapi is Beam's in-process runner.
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

# pylint: disable=wrong-import-position
from currents_to_segment.pipeline.sample_bucket import make_sample_bucket  # noqa: E402
from tests.segment_server import SegmentServer  # noqa: E402
from currents_to_segment.transforms.currents.catalog import CLASSIC  # noqa: E402

KEY = "benchmark-write-key"


def runner_args(runner):
    """The job's runner options."""
    if runner == "fnapi":
        return ["--runner=FnApiRunner"]
    if runner == "prism":
        return ["--runner=PrismRunner", f"--prism_location={os.environ['PRISM_LOCATION']}"]
    return ["--runner=FlinkRunner", "--flink_master=[local]", f"--flink_job_server_jar={os.environ['FLINK_JOB_SERVER_JAR']}"]


def files_to_land(manifest, count):
    """{path: message ids Segment must get} of the first `count` bucket files that have events to send."""
    found = {}
    for entry in manifest["records"]:
        record = entry["record"]
        if entry["event_type"] in CLASSIC.events and record.get("external_user_id") and \
                record["id"] not in manifest["oversize_ids"]:
            found.setdefault(entry["source_file"], set()).add(record["id"])
    return dict(sorted(found.items())[:count])


def arrivals(requests):
    """{messageId: when the request that carried it arrived (UNIX seconds)}, the first arrival of each."""
    seen = {}
    for request in requests:
        if request.status != 200 or request.body is None:
            continue
        for message in json.loads(request.body)["batch"]:
            seen.setdefault(message["messageId"], request.received_at)
    return seen


def land(path, bucket, watched, staging):
    """Put a bucket file in its place in the watched folder, whole and at once; when it landed."""
    target = os.path.join(watched, os.path.relpath(path, bucket))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    staged = os.path.join(staging, os.path.basename(path))
    shutil.copyfile(path, staged)
    os.replace(staged, target)
    return time.time()


def percentile(values, share):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runner", choices=("fnapi", "prism", "flink"), default="prism")
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--every", type=float, default=3.0, help="seconds between two files landing")
    parser.add_argument("--watch-interval", type=float, default=10.0)
    options, job_args = parser.parse_known_args()
    work = tempfile.mkdtemp(prefix="watch-latency-")
    try:
        bucket, watched, staging = (os.path.join(work, name) for name in ("bucket", "watched", "staging"))
        os.makedirs(watched)
        os.makedirs(staging)
        manifest = make_sample_bucket(bucket, events_per_file=20)
        landing = files_to_land(manifest, options.files + 1)
        with SegmentServer(write_key=KEY, one_write=True) as server:
            started = time.time()
            job = subprocess.Popen(
                [sys.executable, "-m", "pipeline", *runner_args(options.runner), "--input", f"{watched}/**", "--watch",
                 "--watch_interval", str(options.watch_interval), "--segment_endpoint", server.url,
                 "--dead_letter_output", os.path.join(work, "dead"), "--progress_seconds", "0", *job_args],
                env={**os.environ, "SEGMENT_WRITE_KEY": KEY}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            # A first file, to know the job runs (a Flink job starts in tens of seconds): not measured.
            warm_up, warm_up_ids = landing.popitem()
            land(warm_up, bucket, watched, staging)
            while not warm_up_ids <= arrivals(server.requests).keys():
                if job.poll() is not None:
                    raise SystemExit(f"the job ended: {job.communicate()}")
                time.sleep(0.2)
            running = time.time() - started
            landed = {}
            for path in landing:
                landed[path] = land(path, bucket, watched, staging)
                time.sleep(options.every)
            deadline = time.time() + options.watch_interval + 120
            while time.time() < deadline:
                seen = arrivals(server.requests)
                if all(ids <= seen.keys() for ids in landing.values()):
                    break
                if job.poll() is not None:
                    break
                time.sleep(0.2)
            seen = arrivals(server.requests)
            stop = time.time()
            job.send_signal(signal.SIGTERM)
            try:
                job.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                job.kill()
                job.communicate()
            drained = time.time() - stop
        waits = [max(seen[i] for i in ids) - landed[path] for path, ids in landing.items() if ids <= seen.keys()]
        missing = sum(1 for ids in landing.values() if not ids <= seen.keys())
        print(f"runner {options.runner}: a first file delivered {running:.1f} s after the start (not measured); then "
              f"{len(landing)} files landed every {options.every:g} s, --watch_interval {options.watch_interval:g}")
        if waits:
            print(f"landing → last event accepted: p50 {statistics.median(waits):.1f} s, p95 "
                  f"{percentile(waits, 0.95):.1f} s, max {max(waits):.1f} s; files never delivered: {missing}")
        print(f"SIGTERM → exit {job.returncode} in {drained:.1f} s")
        return 0 if not missing and job.returncode == 0 else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
