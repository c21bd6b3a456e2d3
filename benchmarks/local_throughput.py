"""Benchmark: events/s of a whole local run into the loopback Segment server, and request sizes.

Writes a generated Currents bucket (all 34 mapped types, newest schemas), runs the job on it with
FnApiRunner or multi-processing into tests/segment_server.py (in a process of its own, so that its
validation does not compete with the job for this process's interpreter), and prints events
written and accepted, wall time, events/s, requests, the largest request body, and the peak memory
of the job's process.

    .venv/bin/python benchmarks/local_throughput.py --events 200000
    .venv/bin/python benchmarks/local_throughput.py --events 200000 --workers 2
    .venv/bin/python benchmarks/local_throughput.py --events 200000 -- --window_seconds 3600

Soak run through a flaky Segment (a share of requests answered 429/5xx, dropped, stalled past the
client timeout, or accepted and then failed), reporting faults, retried requests and duplicates:

    .venv/bin/python benchmarks/local_throughput.py --events 200000 --fault-rate 0.3 -- \
        --request_timeout_seconds 2 --retry_backoff_seconds 0.05 --max_retry_attempts 30

An outage: Segment down (503, dropped connections, or hanging) for a while from the Nth request on, with the
job's default options; the run reports its exit status and what it dead-lettered:

    .venv/bin/python benchmarks/local_throughput.py --events 300000 --outage 90 --outage-after 100
    .venv/bin/python benchmarks/local_throughput.py --events 300000 --outage 90 --outage-kind hang

A slow Segment (every answer written 2 s after its request arrived), with one request in flight per sending
stage, then the default:

    .venv/bin/python benchmarks/local_throughput.py --events 50000 --latency 2 -- --max_requests_in_flight 1
    .venv/bin/python benchmarks/local_throughput.py --events 50000 --latency 2

A workspace limit (429 with Retry-After past 3,000 events in the last second) and a budget for the job, on two
workers; the run reports the 429s and the rate Segment accepted events at:

    .venv/bin/python benchmarks/local_throughput.py --events 60000 --workers 2 --workspace-limit 3000 -- \
        --max_events_per_second 2000

The server answers in one send (status line, headers and body), as the side-by-side benchmark's does.
"""
import argparse
import datetime
import itertools
import json
import multiprocessing
import os
import resource
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

# pylint: disable=wrong-import-position
from currents_to_segment.transforms.currents import schemas as currents_schemas  # noqa: E402
from currents_to_segment.pipeline.main import main  # noqa: E402
from currents_to_segment.pipeline.sample_bucket import currents_path, make_record, write_currents_file  # noqa: E402
from tests.segment_server import SegmentServer  # noqa: E402
from currents_to_segment.transforms.currents.catalog import CLASSIC  # noqa: E402

KEY = "benchmark-write-key"
EVENTS_PER_FILE = 5_000  # Currents writes up to 15,000 events per file, 100,000 under load


def write_bucket(root, events):
    """Files of EVENTS_PER_FILE events, cycling through the 34 types over one day of hours."""
    start = int(datetime.datetime(2024, 3, 1, tzinfo=datetime.timezone.utc).timestamp())
    seq = 0
    for index in range(max(1, events // EVENTS_PER_FILE)):
        event_type = sorted(CLASSIC.events)[index % len(CLASSIC.events)]
        schema = currents_schemas.schema(event_type)
        hour = start + (index % 24) * 3600
        records = [make_record(event_type, schema, seq + i, time=hour + (i * 3600) // EVENTS_PER_FILE)
                   for i in range(EVENTS_PER_FILE)]
        seq += EVENTS_PER_FILE
        path = currents_path(root, event_type, datetime.datetime.fromtimestamp(hour, datetime.timezone.utc),
                             offset=index)
        write_currents_file(path, schema, records, "deflate")
    return seq


def accepted_rate(requests):
    """(events/s, seconds) Segment accepted events at: the least-squares slope of the events it had accepted over
    the arrival times of its accepted requests (where each worker's paced stream starts and stops does not count),
    and the seconds from its first accepted request to its last; (None, 0) for fewer than two."""
    accepted = sorted((r.received_at, r.events) for r in requests if r.status == 200)
    if len(accepted) < 2 or accepted[-1][0] <= accepted[0][0]:
        return None, 0.0
    times = [at for at, _ in accepted]
    totals = list(itertools.accumulate(events for _, events in accepted))
    mean_time, mean_total = sum(times) / len(times), sum(totals) / len(totals)
    slope = (sum((t - mean_time) * (total - mean_total) for t, total in zip(times, totals))
             / sum((t - mean_time) ** 2 for t in times))
    return slope, times[-1] - times[0]


def peak_second(requests):
    """The most events Segment accepted within one second (a sliding window over the times it took them)."""
    accepted = sorted((r.accepted_at, r.events) for r in requests if r.status == 200 and r.accepted_at)
    peak, start, total = 0, 0, 0
    for at, events in accepted:
        total += events
        while accepted[start][0] <= at - 1.0:
            total -= accepted[start][1]
            start += 1
        peak = max(peak, total)
    return peak


def serve(write_key, fault_rate, outage, connection, latency=0.0, workspace_limit=None):
    """Child process: run the loopback server until told to stop, then report what it saw. outage: (seconds,
    kind, after how many requests) or None; latency: seconds before each answer; workspace_limit: events/s past
    which it answers 429 with Retry-After."""
    with SegmentServer(write_key=write_key, latency=latency, one_write=True) as server:
        if fault_rate:
            server.inject_faults(fault_rate, seed=1, stall_seconds=5.0)
        if outage:
            server.outage(outage[0], outage[1], after_requests=outage[2])
        if workspace_limit:
            server.workspace_limit(workspace_limit)
        connection.send(server.url)
        connection.recv()
        ids = server.accepted_ids()
        rate, span = accepted_rate(server.requests)
        connection.send({"accepted": len(server.accepted), "distinct": len(ids), "requests": len(server.requests),
                         "faulted": sum(1 for r in server.requests if r.status != 200),
                         "retried": sum(1 for r in server.requests if (r.retry_count or 0) > 0),
                         "largest": max((r.body_bytes or 0 for r in server.requests), default=0),
                         "violations": len(server.violations),
                         "too_many": sum(1 for r in server.requests if r.status == 429),
                         "accepted_rate": rate, "accepted_span": span, "peak_second": peak_second(server.requests)})


def run(events, workers, fault_rate, pipeline_args, outage=None, latency=0.0, workspace_limit=None):
    """Run once and print the figures."""
    with tempfile.TemporaryDirectory() as root:
        written = write_bucket(os.path.join(root, "bucket"), events)
        connection, child_end = multiprocessing.Pipe()
        server = multiprocessing.Process(target=serve, args=(KEY, fault_rate, outage, child_end, latency,
                                                             workspace_limit), daemon=True)
        server.start()
        url = connection.recv()
        runner = (["--runner=FnApiRunner"] if workers == 1 else
                  ["--direct_running_mode=multi_processing", f"--direct_num_workers={workers}"])
        started = time.monotonic()
        status = main([*runner, "--input", f"{root}/bucket/**", "--segment_endpoint", url,
                       "--segment_write_key", KEY, "--dead_letter_output", f"{root}/dead",
                       "--summary_output", f"{root}/summary.json", *pipeline_args])
        elapsed = time.monotonic() - started
        connection.send("stop")
        seen = connection.recv()
        server.join()
        print(f"\nstatus {status}; events written {written:,}; accepted by server {seen['accepted']:,} "
              f"({seen['distinct']:,} distinct, {seen['accepted'] - seen['distinct']:,} duplicates); "
              f"requests {seen['requests']:,} ({seen['faulted']:,} faulted, {seen['retried']:,} retries); "
              f"violations {seen['violations']}; 429 answers {seen['too_many']:,}")
        if seen["accepted_rate"] is not None:
            print(f"Segment accepted {seen['accepted_rate']:,.0f} events/s (slope over the {seen['accepted_span']:.1f} s "
                  f"from its first accepted request to its last); at most {seen['peak_second']:,} events within one "
                  "second")
        print(f"wall {elapsed:.1f} s; {written / elapsed:,.0f} events/s; largest request {seen['largest']:,} bytes; "
              f"peak RSS of the job's process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")
        if os.path.exists(f"{root}/summary.json"):
            with open(f"{root}/summary.json", encoding="utf-8") as stream:
                summary = json.load(stream)
            print(f"summary: sent {summary['sent']:,}; dead-lettered {summary['dead_lettered']:,}; "
                  f"retries {summary['retries']:,}; throttled {summary.get('throttled_seconds', 0):,} s; "
                  f"balanced {summary['balanced']}; outcome {summary['outcome']}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="events to generate (default 100,000)")
    parser.add_argument("--workers", type=int, default=1, help="1 = FnApiRunner, more = multi-processing")
    parser.add_argument("--fault-rate", type=float, default=0.0, help="share of requests the server fails (soak)")
    parser.add_argument("--outage", type=float, default=0.0, help="seconds Segment is down (default: none)")
    parser.add_argument("--outage-kind", default="503", choices=("503", "drop", "hang"),
                        help="how Segment is down: answering 503, dropping connections, or not answering")
    parser.add_argument("--outage-after", type=int, default=100, help="requests before the outage begins")
    parser.add_argument("--latency", type=float, default=0.0,
                        help="seconds the server takes to answer each request (default 0)")
    parser.add_argument("--workspace-limit", type=int, default=None,
                        help="events/s past which the server answers 429 with Retry-After (default: none)")
    parser.add_argument("pipeline_args", nargs=argparse.REMAINDER,
                        help="after --: more job options, e.g. -- --window_seconds 3600")
    args = parser.parse_args()
    kind = int(args.outage_kind) if args.outage_kind.isdigit() else args.outage_kind
    run(args.events, args.workers, args.fault_rate, [a for a in args.pipeline_args if a != "--"],
        (args.outage, kind, args.outage_after) if args.outage else None, args.latency, args.workspace_limit)
