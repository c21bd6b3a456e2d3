"""An idle --watch on embedded Flink (what `./run_local.sh --runner=FlinkRunner --watch` runs) of an empty folder:
its process tree's RSS every 5 seconds, then SIGTERM to its whole process group (as a service manager, `timeout` or
a Ctrl-C at the terminal sends it) and how it ends. The bound (issue 22): at most 100 MB of growth from 30 s to
120 s, and exit 0, a drain.

    .venv/bin/python benchmarks/flink_idle_watch.py                                # 125 s, a listing every 5 s
    .venv/bin/python benchmarks/flink_idle_watch.py --seconds 300 --watch-interval 60

Needs FLINK_JOB_SERVER_JAR (scripts/setup_flink.sh).
"""
import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

# pylint: disable=wrong-import-position
from benchmarks.side_by_side import ROOT, TreeSampler  # noqa: E402

EVERY_SECONDS = 5


def tree_mib(sampler):
    """The process tree's RSS now, in MiB."""
    sampler.peak_rss_kib = 0
    sampler.sample()
    return sampler.peak_rss_kib / 1024


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=125)
    parser.add_argument("--watch-interval", type=float, default=5)
    args = parser.parse_args(argv)
    jar = os.environ.get("FLINK_JOB_SERVER_JAR")
    if not jar:
        sys.exit("FLINK_JOB_SERVER_JAR is not set (scripts/setup_flink.sh)")
    folder = tempfile.mkdtemp(prefix="flink-idle-watch-")
    os.mkdir(os.path.join(folder, "empty"))
    with open(os.path.join(folder, "job.log"), "w", encoding="utf-8") as log:
        job = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "--runner=FlinkRunner", "--flink_master=[local]",
             f"--flink_job_server_jar={jar}", "--input", os.path.join(folder, "empty", "**"), "--watch",
             "--watch_interval", str(args.watch_interval), "--dry_run_output", os.path.join(folder, "requests"),
             "--dead_letter_output", os.path.join(folder, "dead")],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        sampler, started, points = TreeSampler(job.pid), time.monotonic(), {}
        while time.monotonic() - started < args.seconds and job.poll() is None:
            seconds = round(time.monotonic() - started)
            points[seconds] = tree_mib(sampler)
            print(f"{seconds:5d} s  {points[seconds]:7.0f} MiB", flush=True)
            time.sleep(EVERY_SECONDS)
        os.killpg(job.pid, signal.SIGTERM)
        stopped = time.monotonic()
        status = job.wait(timeout=120)
    at = {mark: points[min(points, key=lambda seconds: abs(seconds - mark))] for mark in (30, 120)}
    print(f"growth from 30 s to 120 s: {at[120] - at[30]:+.0f} MiB ({at[30]:.0f} to {at[120]:.0f})")
    drained = "draining" in open(os.path.join(folder, "job.log"), encoding="utf-8").read()
    print(f"SIGTERM to the process group: exit {status} after {time.monotonic() - stopped:.1f} s "
          f"({'drained' if drained else 'no drain'}; its output: {folder}/job.log)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
