"""What the job must know of Beam's runners, in one place, and why.

The job's configuration is about options; two things depend on where the workers run, and only these:
- `budget_workers`: --max_events_per_second is one budget for the whole job, and each worker process paces its own
  share (its clients share one pacer), so the budget is divided by the number of processes that send, which only the
  runner's own options tell;
- `run_dir`: a run whose workers run on this machine keeps its log and its processes' tallies in a local folder (for
  the summary of a failure); Dataflow's workers are elsewhere;
- `keep_job_streams_open`: Beam's portable runners (Prism, Flink, Spark) follow a job through two gRPC streams that
  they open with --job_server_timeout as their deadline (300 s by default), so every run longer than that failed
  with DEADLINE_EXCEEDED (a 5,000,000-event replay on Prism, any --watch), the job itself still running.
"""
import os
import tempfile

from apache_beam.options.pipeline_options import (
    DirectOptions, FlinkRunnerOptions, PortableOptions, StandardOptions, WorkerOptions)

from currents_to_segment.pipeline.options import ConfigError

_PORTABLE_RUNNERS = ("prism", "flink", "spark", "portable")
# A deadline no run reaches (ten years): Beam gives the job's state and message streams --job_server_timeout.
JOB_STREAMS_SECONDS = 10 * 365 * 24 * 3600


def runner_name(options):
    """The runner's short name: "fnapi", "prism", "flink", "dataflow", ..."""
    return (options.view_as(StandardOptions).runner or "").lower().rsplit(".", 1)[-1].replace("runner", "")


def keep_job_streams_open(options, argv):
    """On a portable runner that starts its own job server (no --job_endpoint), unless --job_server_timeout is
    given: a timeout no run reaches. Beam uses it as the deadline of the streams that follow the whole job, and
    otherwise only to wait for a job server at --job_endpoint (whose wait this leaves as it is)."""
    given = {arg.split("=", 1)[0] for arg in argv}
    if (runner_name(options) in _PORTABLE_RUNNERS and not options.view_as(PortableOptions).job_endpoint
            and not given & {"--job_server_timeout", "--job-server-timeout"}):
        options.view_as(PortableOptions).job_server_timeout = JOB_STREAMS_SECONDS


# Runners a --watch is refused on: they keep what every listing made in memory (FnApiRunner grew ~32 MB/s idle, its
# multi-processing mode ~26 MB/s), so a watch that is left running exhausts the machine.
_NO_WATCH = ("fnapi", "direct", "bundlebaseddirect", "switchingdirect", "")


def check_watch_runner(options):
    """ConfigError when the runner cannot keep a --watch running (see _NO_WATCH), naming those that can."""
    if runner_name(options) in _NO_WATCH:
        raise ConfigError(f"--watch runs for ever, and {options.view_as(StandardOptions).runner or 'DirectRunner'} "
                          "keeps every listing in memory: run it on --runner=PrismRunner (locally; ./run_local.sh "
                          "--watch picks it), FlinkRunner or DataflowRunner")


def budget_workers(options):
    """(how many worker processes share --max_events_per_second, the option that says so): each process's clients
    share one pacer, so the budget is split over the processes that send. Where the SDK workers run in this
    process (FnApiRunner in memory or multi-threaded, Prism and Flink in their LOOPBACK default) that is 1."""
    runner = runner_name(options)
    environment = (options.view_as(PortableOptions).environment_type or "").upper()
    if runner == "dataflow":
        google = options.view_as(WorkerOptions)
        if google.max_num_workers:
            return google.max_num_workers, "--max_num_workers"
        return (google.num_workers, "--num_workers") if google.num_workers else (1, "no --max_num_workers")
    if runner == "flink":
        flink = options.view_as(FlinkRunnerOptions)
        if environment == "LOOPBACK" or (not environment and flink.flink_master in ("[local]", "[auto]")):
            return 1, "Flink's workers in this process"
        if flink.parallelism and flink.parallelism > 0:
            return flink.parallelism, "--parallelism"
        return 1, "no --parallelism"
    if runner == "prism":
        return 1, "Prism's workers in one process"
    direct = options.view_as(DirectOptions)
    if direct.direct_running_mode == "multi_processing":
        workers = direct.direct_num_workers or os.cpu_count() or 1
        return workers, "--direct_num_workers"
    return 1, "the workers in this process"


def run_dir(pipeline_options, run_id):
    """The local folder of a run whose workers run on this machine (every runner but Dataflow's): the run's log,
    and the tallies its worker processes leave for the summary of a failure; None for Dataflow."""
    runner = pipeline_options.view_as(StandardOptions).runner or ""
    if runner.lower().replace("runner", "") == "dataflow" or runner.endswith(".DataflowRunner"):
        return None
    return os.path.join(tempfile.gettempdir(), f"currents-to-segment-{run_id}")
