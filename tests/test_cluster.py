"""The job on a Flink session cluster, as it runs on a real one: a JobManager and a TaskManager with 2 slots, each a
JVM of its own (scripts/flink_session_cluster.sh), the SDK workers in a worker pool (--environment_type=EXTERNAL),
--parallelism=2, launched as a user launches it (--runner=FlinkRunner --flink_master=HOST:PORT, which starts Beam's
Flink job server for the run).

- Every event arrives, exactly.
- A run that is stopped owns its job: after SIGTERM, no job of it runs on the cluster and Segment gets nothing more
  (its job used to stay RUNNING, sending, holding the cluster's slots).

One cluster for the module (it takes some 20 s to start). Skipped without Beam's Flink job server (FLINK_REQUIRED=1:
fails), as the other Flink tests.
"""
import json
import os
import signal
import subprocess
import time

import pytest

from currents_to_segment.pipeline.job_control import flink_jobs
from tests.conftest import flink_job_server_jar, free_port
from tests.pipeline_runs import assert_balanced, expected_calls, received_calls
from tests.test_run_outcomes import KEY, job_process, slow_job, wait_for_accepted

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts",
                      "flink_session_cluster.sh")
STOPPED_WITHIN = 30  # seconds from SIGTERM to no job of the run on the cluster


@pytest.fixture(scope="module")
def session_cluster(tmp_path_factory):
    """A Flink session cluster of the module's own (its folder, REST and RPC ports): the --flink_master to give."""
    jar = flink_job_server_jar()
    env = {**os.environ, "FLINK_CLUSTER_DIR": str(tmp_path_factory.mktemp("flink-session-cluster")),
           "FLINK_JOB_SERVER_JAR": jar}
    rest_port = free_port()
    started = subprocess.run([SCRIPT, "start", str(rest_port), str(free_port())], env=env, capture_output=True,
                             text=True, timeout=180, check=False)
    if started.returncode != 0:
        pytest.fail(f"the Flink session cluster did not start:\n{started.stdout}{started.stderr}")
    try:
        yield f"localhost:{rest_port}"
    finally:
        subprocess.run([SCRIPT, "stop"], env=env, timeout=60, check=False)


def on_cluster(master, pool):
    """The options of a run on the session cluster at `master`, its workers started by the pool at `pool` (they do
    not see the launcher's environment: the key is given as an option)."""
    return ["--runner=FlinkRunner", f"--flink_master={master}", f"--flink_job_server_jar={flink_job_server_jar()}",
            "--environment_type=EXTERNAL", f"--environment_config={pool}", "--parallelism=2",
            "--segment_write_key", KEY]


def running_jobs(master):
    return {job_id: state for job_id, state in flink_jobs(f"http://{master}").items()
            if state not in ("FINISHED", "CANCELED", "FAILED")}


def test_a_run_on_a_session_cluster_with_a_worker_pool_sends_every_event(tmp_path, bucket, server, session_cluster,
                                                                        worker_pool):
    root, manifest = bucket
    job = job_process(["--input", f"{root}/**", "--segment_endpoint", server.url, "--quiet",
                       "--dead_letter_output", str(tmp_path / "dead"), "--summary_output", str(tmp_path / "s.json"),
                       *on_cluster(session_cluster, worker_pool)], env={"SEGMENT_WRITE_KEY": KEY})
    _, err = job.communicate(timeout=300)
    assert job.returncode == 0, err
    assert received_calls(server.accepted) == expected_calls(manifest) and not server.violations
    run_summary = json.loads((tmp_path / "s.json").read_text())
    assert run_summary["sent"] == sum(expected_calls(manifest).values())
    assert_balanced(run_summary)
    assert not running_jobs(session_cluster)


def test_a_run_stopped_by_sigterm_cancels_its_job_on_the_cluster(tmp_path, bucket, server, session_cluster,
                                                                worker_pool):
    root, _ = bucket
    job = slow_job(tmp_path, server, root, *on_cluster(session_cluster, worker_pool))
    wait_for_accepted(server, job, 1, seconds=180)
    assert server.accepted and running_jobs(session_cluster)
    job.send_signal(signal.SIGTERM)
    stopped = time.monotonic()
    _, err = job.communicate(timeout=120)
    assert job.returncode == 143, err
    lines = err.strip().splitlines()
    assert lines[0].startswith("cancelled the Flink job ") and f"on http://{session_cluster}" in lines[0], err
    assert lines[-1].startswith("error: interrupted by SIGTERM: "), err
    while running_jobs(session_cluster) and time.monotonic() - stopped < STOPPED_WITHIN:
        time.sleep(0.5)
    assert not running_jobs(session_cluster)
    sent = len(server.requests)
    time.sleep(5)  # the job sent 10 requests a second: a job still running would show
    assert len(server.requests) == sent

