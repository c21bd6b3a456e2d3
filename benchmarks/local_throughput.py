"""Benchmark: events/s of a whole local run into the loopback Segment server, and request sizes.

Writes a generated Currents bucket (all 34 mapped types, newest schemas), runs the job on it with
FnApiRunner or multi-processing into tests/segment_server.py, and prints events read, events
sent, wall time, events/s, requests, the largest request body and the peak memory of this process.

    .venv/bin/python benchmarks/local_throughput.py --events 200000
    .venv/bin/python benchmarks/local_throughput.py --events 200000 --workers 2
"""
import argparse
import datetime
import os
import resource
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

# pylint: disable=wrong-import-position
from pipeline import currents_schemas  # noqa: E402
from pipeline.main import main  # noqa: E402
from pipeline.sample_bucket import currents_path, make_record, write_currents_file  # noqa: E402
from tests.segment_server import SegmentServer  # noqa: E402
from transforms.catalog import CATALOG  # noqa: E402

KEY = "benchmark-write-key"
EVENTS_PER_FILE = 5_000  # Currents writes up to 15,000 events per file, 100,000 under load


def write_bucket(root, events):
    """Files of EVENTS_PER_FILE events, cycling through the 34 types over one day of hours."""
    start = int(datetime.datetime(2024, 3, 1, tzinfo=datetime.timezone.utc).timestamp())
    seq = 0
    for index in range(max(1, events // EVENTS_PER_FILE)):
        event_type = sorted(CATALOG)[index % len(CATALOG)]
        schema = currents_schemas.schema(event_type)
        hour = start + (index % 24) * 3600
        records = [make_record(event_type, schema, seq + i, time=hour + (i * 3600) // EVENTS_PER_FILE)
                   for i in range(EVENTS_PER_FILE)]
        seq += EVENTS_PER_FILE
        path = currents_path(root, event_type, datetime.datetime.fromtimestamp(hour, datetime.timezone.utc),
                             offset=index)
        write_currents_file(path, schema, records, "deflate")
    return seq


def run(events, workers):
    """Run once and print the figures."""
    with tempfile.TemporaryDirectory() as root, SegmentServer(write_key=KEY) as server:
        written = write_bucket(os.path.join(root, "bucket"), events)
        runner = (["--runner=FnApiRunner"] if workers == 1 else
                  ["--direct_running_mode=multi_processing", f"--direct_num_workers={workers}"])
        started = time.monotonic()
        status = main([*runner, "--input", f"{root}/bucket/**", "--segment_endpoint", server.url,
                       "--segment_write_key", KEY, "--dead_letter_output", f"{root}/dead",
                       "--summary_output", f"{root}/summary.json"])
        elapsed = time.monotonic() - started
        largest = max(r.body_bytes for r in server.requests)
        print(f"\nstatus {status}; events written {written:,}; accepted by server {len(server.accepted):,}; "
              f"requests {len(server.requests):,}; violations {len(server.violations)}")
        print(f"wall {elapsed:.1f} s; {written / elapsed:,.0f} events/s; largest request {largest:,} bytes; "
              f"peak RSS of this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="events to generate (default 100,000)")
    parser.add_argument("--workers", type=int, default=1, help="1 = FnApiRunner, more = multi-processing")
    args = parser.parse_args()
    run(args.events, args.workers)
