"""Soak: a Prism --watch left running with files landing every few seconds and Segment down in the middle; its
process tree's memory by 5 minutes, every event delivered exactly once, the dead letters written (none expected),
a file landing late into an hour partition 6 hours old, and the drain at the end.

Starts the job as a user does (`python -m pipeline --runner=PrismRunner --currents_root ... --watch --ledger ...`,
a process of its own, its whole process tree sampled) against the loopback Segment server (answering in one send),
lands a Currents file of --events-per-file events into the current hour's partition every --every seconds (whole:
written aside, then renamed), makes Segment answer 503 from minute --outage-from to minute --outage-to, lands one
file into the partition of 6 hours ago at minute --late-at, and, after --minutes, waits for the last event, sends
SIGTERM and reports.

    .venv/bin/python benchmarks/watch_soak.py                       # 30 minutes, outage from minute 12 to 17
    .venv/bin/python benchmarks/watch_soak.py --minutes 6 --every 2 --outage-from 2 --outage-to 4 \\
        --late-at 3 --full-listing-interval 30                       # the issue's 6-minute check

Needs PRISM_LOCATION (scripts/setup_prism.sh).
"""
import argparse
import datetime
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

# pylint: disable=wrong-import-position
from benchmarks.side_by_side import TreeSampler  # noqa: E402
from currents_to_segment.pipeline.sample_bucket import currents_path, make_record, write_currents_file  # noqa: E402
from currents_to_segment.transforms.currents import schemas as currents_schemas  # noqa: E402
from tests.segment_server import SegmentServer  # noqa: E402

KEY = "benchmark-write-key"
TYPES = ("users.messages.email.Send", "users.messages.email.Open", "users.messages.pushnotification.Send",
         "users.messages.sms.Delivery")
UTC = datetime.timezone.utc


class Timeline(TreeSampler):
    """A TreeSampler that also keeps (seconds since start, tree RSS in MiB) every sample."""

    def __init__(self, pid, started):
        super().__init__(pid)
        self.points = []
        self._began = started

    def sample(self):
        before = self.peak_rss_kib
        self.peak_rss_kib = 0
        super().sample()
        now_rss, self.peak_rss_kib = self.peak_rss_kib, max(before, self.peak_rss_kib)
        self.points.append((time.time() - self._began, now_rss / 1024))


class Lander:
    """Currents files written aside, then renamed into their hour partition under root."""

    def __init__(self, root, staging, events_per_file):
        self._root, self._staging, self._events = root, staging, events_per_file
        self._seq = 0
        self.expected = set()

    def land(self, hour, index):
        event_type = TYPES[index % len(TYPES)]
        schema = currents_schemas.schema(event_type)
        records = [make_record(event_type, schema, self._seq + i, time=int(hour.timestamp()) + i % 3600)
                   for i in range(self._events)]
        self._seq += self._events
        staged = os.path.join(self._staging, f"{index}.avro")
        write_currents_file(staged, schema, records, "deflate")
        target = currents_path(self._root, event_type, hour, offset=index)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.replace(staged, target)
        ids = {record["id"] for record in records}
        self.expected |= ids
        return ids


def _hour(moment):
    return moment.replace(minute=0, second=0, microsecond=0)


def _letters(folder):
    lines = 0
    for base, _, names in os.walk(folder):
        for name in names:
            if name.startswith("dead_letters-") and name.endswith(".jsonl"):
                with open(os.path.join(base, name), encoding="utf-8") as stream:
                    lines += sum(1 for line in stream if line.strip())
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--every", type=float, default=3.0, help="seconds between two files landing")
    parser.add_argument("--events-per-file", type=int, default=200)
    parser.add_argument("--outage-from", type=float, default=12, help="minute Segment starts answering 503")
    parser.add_argument("--outage-to", type=float, default=17)
    parser.add_argument("--late-at", type=float, default=20, help="minute a file lands into the hour 6 hours ago")
    parser.add_argument("--max-retry-seconds", type=float, default=30)
    parser.add_argument("--watch-interval", type=float, default=5)
    parser.add_argument("--full-listing-interval", type=float, default=60)
    args = parser.parse_args(argv)
    work = tempfile.mkdtemp(prefix="watch-soak-")
    root, staging = os.path.join(work, "currents"), os.path.join(work, "staging")
    os.makedirs(staging)
    lander = Lander(root, staging, args.events_per_file)
    old_hour = _hour(datetime.datetime.now(UTC) - datetime.timedelta(hours=6))
    lander.land(old_hour, 0)  # the old partition exists from the start, with a file
    with SegmentServer(write_key=KEY, one_write=True) as server:
        started = time.time()
        log = open(os.path.join(work, "job.log"), "w", encoding="utf-8")  # pylint: disable=consider-using-with
        job = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "--runner=PrismRunner", f"--prism_location={os.environ['PRISM_LOCATION']}",
             "--currents_root", root, "--start", f"{old_hour:%Y-%m-%dT%H}", "--watch",
             "--watch_interval", str(args.watch_interval), "--full_listing_interval", str(args.full_listing_interval),
             "--max_retry_seconds", str(args.max_retry_seconds), "--segment_endpoint", server.url,
             "--ledger", os.path.join(work, "ledger"), "--dead_letter_output", os.path.join(work, "dead"),
             "--summary_output", os.path.join(work, "summary.json"), "--progress_seconds", "30"],
            env={**os.environ, "SEGMENT_WRITE_KEY": KEY}, stdout=log, stderr=log,
            cwd=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
        sampler = Timeline(job.pid, started)
        sampler.start()
        index, outage_on, late_ids, late_landed = 1, False, None, None
        requests_in_outage = None
        while time.time() - started < args.minutes * 60:
            minute = (time.time() - started) / 60
            if not outage_on and minute >= args.outage_from:
                server.outage((args.outage_to - args.outage_from) * 60, 503)
                outage_on, requests_in_outage = True, len(server.requests)
            if late_ids is None and minute >= args.late_at:
                late_ids, late_landed = lander.land(old_hour, index), time.time()
            else:
                lander.land(_hour(datetime.datetime.now(UTC)), index)
            index += 1
            if job.poll() is not None:
                break
            time.sleep(args.every)
        deadline = time.time() + 600
        while time.time() < deadline and job.poll() is None and not lander.expected <= server.accepted_ids().keys():
            time.sleep(1)
        accepted = server.accepted_ids()
        late_at = max((request.received_at for request in server.requests if request.status == 200
                       and request.body and any(i.encode() in request.body for i in late_ids or ())), default=None)
        last = time.time()
        job.send_signal(signal.SIGTERM)
        try:
            job.wait(timeout=120)
        except subprocess.TimeoutExpired:
            job.kill()
        drained = time.time() - last
        sampler.stop()
        log.close()
    windows = {}
    for seconds, rss in sampler.points:
        windows.setdefault(int(seconds // 300), []).append(rss)
    missing = lander.expected - accepted.keys()
    print(f"{index} files ({len(lander.expected):,} events) landed over {args.minutes:g} min, one every {args.every:g} s;"
          f" Segment answered 503 from minute {args.outage_from:g} to {args.outage_to:g}"
          f" (--max_retry_seconds {args.max_retry_seconds:g}; {requests_in_outage} requests before it)")
    print(f"events delivered {len(lander.expected & accepted.keys()):,} of {len(lander.expected):,}; missing "
          f"{len(missing):,}; accepted more than once {sum(1 for n in accepted.values() if n > 1):,}; "
          f"dead letters written {_letters(os.path.join(work, 'dead')):,}")
    if late_ids:
        print(f"the file landed into the partition 6 hours old at minute {args.late_at:g} was delivered "
              f"{late_at - late_landed:.1f} s after it landed" if late_at else "the late file was NOT delivered")
    print("process tree RSS by 5 minutes (MiB, mean / max): " + "; ".join(
        f"{5 * n}-{5 * n + 5} min {statistics.mean(v):.0f} / {max(v):.0f}" for n, v in sorted(windows.items())))
    by_minute = {}
    for seconds, rss in sampler.points:
        by_minute.setdefault(int(seconds // 60), []).append(rss)
    print("by minute (mean MiB): " + " ".join(f"{m}:{statistics.mean(v):.0f}" for m, v in sorted(by_minute.items())))
    print(f"SIGTERM → exit {job.returncode} in {drained:.1f} s; the job's log: {work}/job.log")
    return 0 if not missing and job.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
