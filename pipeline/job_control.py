"""A run owns its job: where the job would outlive the launching process (on a Flink cluster, on Dataflow), a run
that does not complete (Ctrl-C, SIGTERM, the second one of a --watch, a failure) cancels it and says so in one
line; and SDK workers that cannot be reached from here refuse the run before anything is submitted.

Measured before: SIGTERM to a run on a Flink session cluster with a worker pool ended the launcher (exit 143) while
its Flink job stayed RUNNING, holding the cluster's slots and sending to Segment. Beam's own cancel (the job API's,
PipelineResult.cancel()) is not enough there: Beam's Flink job server marks the job CANCELLED and leaves it running
on the cluster, and a job whose jars it is still uploading (20 s or more after Beam's run() returns) it submits
anyway (seen with its 2.63 job server). So a run on Flink that ends early
1. cancels through Beam's job API (the job server stops following the job);
2. stops the job server Beam started for it: nothing more is submitted, and an embedded cluster ends with it;
3. cancels, through the cluster's REST API (PATCH /jobs/<id>?mode=cancel), each job of its name that has not ended,
   and waits until they have (at most CANCEL_SECONDS). A job whose jars were all sent before the job server was
   stopped reaches the cluster some seconds later (seen: up to 10 s): while Beam's job had not ended and no job of
   the run's name is on the cluster, the run waits up to SUBMISSION_SECONDS for it.
The job is known on the cluster by its name: --job_name, by default currents-to-segment-<run id>, which `runner`
sets. Beam's job server is started in a session of its own (own_session.py says why).
"""
import json
import os
import socket
import sys
import time
import urllib.parse
import urllib.request

from apache_beam.options.pipeline_options import (
    FlinkRunnerOptions, GoogleCloudOptions, JobServerOptions, PortableOptions)
from apache_beam.runners.portability import flink_runner
from apache_beam.runners.runner import PipelineState

from currents_to_segment.pipeline.options import ConfigError, is_loopback
from currents_to_segment.pipeline.runners import runner_name

CANCEL_SECONDS = 30  # the longest a cancelled Flink job may take to end
SUBMISSION_SECONDS = 30  # the longest a job submitted before its job server was stopped may take to reach the cluster
_REST_SECONDS = 10  # the longest one request to Flink's REST API may take
_ENDED = {"FINISHED", "CANCELED", "FAILED"}  # Flink's job states that are final
OWN_SESSION = os.path.join(os.path.dirname(os.path.abspath(__file__)), "own_session.py")
_WORKERS_CHECK_SECONDS = 5


class OwnedFlinkRunner(flink_runner.FlinkRunner):
    """Beam's FlinkRunner, keeping hold of the job server it starts (`job_server`; None with --job_endpoint, where
    the job server is someone else's), so that a run that ends early can stop it (see the module doc)."""

    def __init__(self):
        super().__init__()
        self.job_server = None

    def default_job_server(self, options):
        self.job_server = super().default_job_server(options)
        return self.job_server


def runner(options, run_id):
    """The runner object for the job's beam.Pipeline: on Flink an OwnedFlinkRunner, with the job named after the run
    (unless --job_name is given) and Beam's job server started in a session of its own; None elsewhere (Beam makes
    the runner --runner names)."""
    if not _on_flink(options):
        return None
    cloud = options.view_as(GoogleCloudOptions)
    if not cloud.job_name:
        cloud.job_name = f"currents-to-segment-{run_id}".lower()
    _start_job_server_in_own_session(options.view_as(JobServerOptions))
    return OwnedFlinkRunner()


def _on_flink(options):
    return runner_name(options) == "flink"


def _start_job_server_in_own_session(server):
    """Beam starts its job server as `LAUNCHER PROPERTIES... -jar JAR ...` (--job_server_java_launcher, java by
    default, and --job_server_jvm_properties): the launcher becomes this Python running own_session.py, and the
    Java launcher the first of the properties."""
    properties = list(server.job_server_jvm_properties or [])
    if properties[:1] == [OWN_SESSION]:
        return  # already so (the same options run twice)
    server.job_server_jvm_properties = [OWN_SESSION, server.job_server_java_launcher or "java", *properties]
    server.job_server_java_launcher = sys.executable


def stop_job(result, pipeline_runner, options):
    """Cancel the job of a run that did not complete, where it would outlive this process; the lines that say what
    was done. None where the job ends with this process (FnApiRunner, Prism, embedded Flink: Beam stops their
    processes at exit) or has ended already. `result` is None when the run was stopped before Beam's run() returned
    one."""
    if isinstance(pipeline_runner, OwnedFlinkRunner):
        return _stop_flink_job(result, pipeline_runner, options)
    if result is not None and type(result).__name__ == "DataflowPipelineResult" and result.has_job:
        return _cancel_dataflow_job(result)
    return []


def _stop_flink_job(result, flink, options):
    """The three steps of the module doc; the lines that say what was cancelled on the cluster, or that it could
    not be."""
    submitting = result is not None and not _ended(result)  # the job server may still be submitting the job
    if result is not None:
        _quietly(result.cancel)
    if flink.job_server is not None:
        _quietly(flink.job_server.stop)
    master = options.view_as(FlinkRunnerOptions).flink_master
    if master in flink_runner.MAGIC_HOST_NAMES:
        return []  # the embedded cluster ended with its job server
    base = flink_runner.FlinkRunner.add_http_scheme(master).rstrip("/")
    name = options.view_as(GoogleCloudOptions).job_name
    try:
        cancelled = cancel_flink_jobs(base, name, SUBMISSION_SECONDS if submitting else 0)
    except Exception as error:  # pylint: disable=broad-except  # unreachable, refused, too slow: each its line
        return [f"warning: could not cancel the Flink job {name} on {base}: {_reason(error)}; cancel it there (its web "
                f"UI, or: curl -X PATCH '{base}/jobs/<job id>?mode=cancel')"]
    return [f"cancelled the Flink job {job_id} ({name}) on {base}" for job_id in cancelled]


def _ended(result):
    """Whether Beam's job has ended (its job server no longer submits it); False when that cannot be known."""
    try:
        return PipelineState.is_terminal(result.state)
    except Exception:  # pylint: disable=broad-except  # the job server gone
        return False


def _quietly(step):
    """A step of stopping a job that may fail harmlessly (the job server gone already, the job ended)."""
    try:
        step()
    except Exception:  # pylint: disable=broad-except
        pass


def cancel_flink_jobs(base, name, submission_seconds=0, seconds=CANCEL_SECONDS):
    """Cancel each job called `name` on the Flink cluster whose REST API is at `base` that has not ended, and wait
    until they all have; their ids. While there is no job of that name, wait `submission_seconds` for one to come.
    TimeoutError when one has not ended `seconds` after that."""
    started = time.monotonic()
    deadline = started + submission_seconds + seconds
    cancelled = []
    while True:
        jobs = flink_jobs(base, name)
        running = {job_id: state for job_id, state in jobs.items() if state not in _ENDED}
        if not running and (jobs or time.monotonic() - started >= submission_seconds):
            return cancelled
        for job_id in running.keys() - set(cancelled):
            urllib.request.urlopen(urllib.request.Request(f"{base}/jobs/{job_id}?mode=cancel", method="PATCH"),
                                   timeout=_REST_SECONDS).close()
            cancelled.append(job_id)
        if time.monotonic() > deadline:
            raise TimeoutError(f"still {', '.join(sorted(set(running.values())))} after {seconds} s")
        time.sleep(0.5)


def flink_jobs(base, name=None):
    """{job id: state} of the jobs on the Flink cluster whose REST API is at `base` (those called `name`)."""
    with urllib.request.urlopen(f"{base}/jobs/overview", timeout=_REST_SECONDS) as answer:
        jobs = json.load(answer)["jobs"]
    return {job["jid"]: job["state"] for job in jobs if name is None or job["name"] == name}


def _cancel_dataflow_job(result):
    """Ask Dataflow to cancel the job unless it has ended; its line (Dataflow stops the workers by itself)."""
    try:
        if PipelineState.is_terminal(result.state):
            return []
        result.cancel()
    except Exception as error:  # pylint: disable=broad-except  # the API refusing, or unreachable
        return [f"warning: could not cancel the Dataflow job {result.job_id()}: {_reason(error)}; cancel it in the "
                "Cloud console (or: gcloud dataflow jobs cancel)"]
    return [f"cancelled the Dataflow job {result.job_id()} (Dataflow stops its workers within minutes)"]


def _reason(error):
    return str(getattr(error, "reason", None) or error) or type(error).__name__


# --- workers that cannot be reached -------------------------------------------------------------------------------

def check_workers(options):
    """ConfigError when the SDK workers are to be started by a worker pool (--environment_type=EXTERNAL) at an
    address of this machine, for a runner on this machine (Prism, embedded Flink, a Flink cluster or job server at
    a loopback address), and nothing answers there. Such a job used to be submitted anyway and fail with a line that
    did not say why (Prism at once, a gRPC error; a Flink cluster half a minute later, Connection refused). An
    address elsewhere, or a cluster elsewhere (for which `localhost` is
    each TaskManager's own machine), is not checked: only the cluster can reach it."""
    portable = options.view_as(PortableOptions)
    if (portable.environment_type or "").upper() != "EXTERNAL" or not _runner_here(options):
        return
    address = portable.environment_config or ""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")  # [::1]:50000
    if not port.isdigit() or not is_loopback(host):
        return
    try:
        socket.create_connection((host, int(port)), timeout=_WORKERS_CHECK_SECONDS).close()
    except OSError as error:
        raise ConfigError(
            f"no SDK worker pool answers at --environment_config {address} ({error.strerror or error}): start one "
            f"there (python -m apache_beam.runners.worker.worker_pool_main --service_port={port}, where this project "
            "is installed), or run the workers in this process with --environment_type=LOOPBACK") from error


def _runner_here(options):
    """Whether the runner that starts the workers runs on this machine."""
    name = runner_name(options)
    if name == "prism":
        return True
    if name == "flink":
        master = options.view_as(FlinkRunnerOptions).flink_master or "[auto]"
        return master in flink_runner.MAGIC_HOST_NAMES or is_loopback(_host(master))
    if name == "portable":
        return is_loopback(_host(options.view_as(PortableOptions).job_endpoint or ""))
    return False


def _host(address):
    """The host of HOST:PORT or http://HOST:PORT/..."""
    return urllib.parse.urlsplit(address if "//" in address else f"//{address}").hostname or ""
