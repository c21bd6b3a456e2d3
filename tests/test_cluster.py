"""The job on a Flink session cluster, as it runs on a real one: a JobManager and a TaskManager with 2 slots, each a
JVM of its own (scripts/flink_session_cluster.sh), the SDK workers in a worker pool (--environment_type=EXTERNAL),
--parallelism=2, launched as a user launches it (--runner=FlinkRunner --flink_master=HOST:PORT, which starts Beam's
Flink job server for the run).

- Every event arrives, exactly.
- A run that is stopped owns its job: after SIGTERM, no job of it runs on the cluster and Segment gets nothing more
  (its job used to stay RUNNING, sending, holding the cluster's slots).
- The job's Beam counters reach Flink's metric system: the cluster's Prometheus reporter serves them while the job
  runs, with the counts Segment got and the events read.

One cluster for the module (it takes some 20 s to start). Skipped without Beam's Flink job server (FLINK_REQUIRED=1:
fails), as the other Flink tests.
"""
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from collections import Counter, namedtuple

import pytest

from currents_to_segment.pipeline.job_control import flink_jobs
from currents_to_segment.transforms.currents.catalog import CLASSIC
from currents_to_segment.transforms.files import UNSUPPORTED
from tests.conftest import flink_job_server_jar, free_port
from tests.mapping_oracle import expected_call
from tests.pipeline_runs import assert_balanced, expected_calls, received_calls
from tests.test_run_outcomes import KEY, job_process, slow_job, wait_for_accepted

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts",
                      "flink_session_cluster.sh")
STOPPED_WITHIN = 30  # seconds from SIGTERM to no job of the run on the cluster


Cluster = namedtuple("Cluster", "master taskmanager_metrics started")


def free_port_pair():
    """A TCP port free on loopback now whose next port is free too: the script's METRICS_PORT (the JobManager's
    reporter) and METRICS_PORT+1 (the TaskManager's)."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise AssertionError("no two free ports in a row")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A Flink session cluster of the module's own (its folder, REST, RPC and metrics ports), with Flink's Prometheus
    reporter: its --flink_master, the TaskManager's metrics URL, and what the script printed."""
    jar = flink_job_server_jar()
    env = {**os.environ, "FLINK_CLUSTER_DIR": str(tmp_path_factory.mktemp("flink-session-cluster")),
           "FLINK_JOB_SERVER_JAR": jar}
    rest_port, metrics_port = free_port(), free_port_pair()
    started = subprocess.run([SCRIPT, "start", str(rest_port), str(free_port()), str(metrics_port)], env=env,
                             capture_output=True, text=True, timeout=240, check=False)
    if started.returncode != 0:
        pytest.fail(f"the Flink session cluster did not start:\n{started.stdout}{started.stderr}")
    try:
        yield Cluster(f"localhost:{rest_port}", f"http://localhost:{metrics_port + 1}/metrics", started.stdout)
    finally:
        subprocess.run([SCRIPT, "stop"], env=env, timeout=60, check=False)


@pytest.fixture(scope="module")
def session_cluster(cluster):
    """The --flink_master of the module's cluster."""
    return cluster.master


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



# --- Beam's counters in Flink's metric system ---------------------------------------------------------------------

# Beam's Flink runner registers each counter of the job on the Flink operator that runs it (a fused stage), named
# "<namespace>.<name>"; Flink's Prometheus reporter names it after the operator's scope, every character outside
# [a-zA-Z0-9:_] replaced by "_", with the job, task, operator and subtask as labels. One series per subtask. A family's
# delivery and ledger count in a namespace of their own, "currents_to_segment.<family>" (one Flink counter each).
OPERATOR_SCOPE = "flink_taskmanager_job_task_operator_"
NAMESPACE = "currents_to_segment"
COUNTERS_WITHIN = 60  # seconds from Segment's last call to the counters' final counts on the reporter


def _flink_name(text):
    return re.sub(r"[^a-zA-Z0-9:_]", "_", text)


def prometheus_name(counter):
    """The name Flink's Prometheus reporter gives the job's Beam counter `counter`, without a family (see
    scraped_counters)."""
    return OPERATOR_SCOPE + _flink_name(f"{NAMESPACE}.{counter}")


def scraped_counters(url, job_name):
    """{Prometheus name without the family: value summed over the subtasks and families} of the job's Beam counters
    on the reporter at `url`."""
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    job_label = f'job_name="{_flink_name(job_name)}"'
    families = sorted((*CLASSIC.families, UNSUPPORTED), key=len, reverse=True)
    totals = Counter()
    for line in text.splitlines():
        if line.startswith(OPERATOR_SCOPE + NAMESPACE) and job_label in line:
            name, value = re.fullmatch(r"([^{]+)\{.*\} (\S+)", line).groups()
            for family in families:
                scoped = OPERATOR_SCOPE + _flink_name(f"{NAMESPACE}.{family}.")
                if name.startswith(scoped):
                    name = OPERATOR_SCOPE + _flink_name(f"{NAMESPACE}.") + name[len(scoped):]
                    break
            totals[name] += float(value)
    return totals


def test_the_jobs_beam_counters_are_served_by_flinks_prometheus_reporter_while_it_runs(tmp_path, bucket, server,
                                                                                      cluster, worker_pool):
    # Flink drops a task's metrics when the task ends, and the batch job's stages report their counters to Flink only
    # as they end: a watch is scraped, whose stages keep running, each bundle reporting its counts.
    assert cluster.taskmanager_metrics in cluster.started
    root, manifest = bucket
    oversize = set(manifest["oversize_ids"])
    sent = Counter(entry["event_type"] for entry in manifest["records"] if entry["record"]["id"] not in oversize
                   and expected_call(entry["record"], entry["event_type"]) is not None)
    read = Counter(entry["event_type"] for entry in manifest["records"])
    expected = Counter({prometheus_name(f"sent:{event_type}"): n for event_type, n in sent.items()})
    expected.update({prometheus_name(f"read:{event_type}"): n for event_type, n in read.items()})
    assert sum(sent.values()) == sum(expected_calls(manifest).values()) > 0

    job_name = f"currents-to-segment-metrics-{uuid.uuid4().hex[:8]}"
    job = job_process(["--input", f"{root}/**", "--watch", "--watch_interval", "1", "--flush_seconds", "0.5",
                       "--segment_endpoint", server.url, "--quiet", "--job_name", job_name,
                       "--dead_letter_output", str(tmp_path / "dead"), "--ledger", str(tmp_path / "ledger"),
                       "--summary_output", str(tmp_path / "s.json"), *on_cluster(cluster.master, worker_pool)],
                      env={"SEGMENT_WRITE_KEY": KEY})
    try:
        wait_for_accepted(server, job, sum(sent.values()), seconds=180)
        assert received_calls(server.accepted) == expected_calls(manifest)
        # Each bundle's counts reach the reporter as the bundle ends: poll until they are complete.
        counted = (prometheus_name("sent:"), prometheus_name("read:"))
        deadline = time.monotonic() + COUNTERS_WITHIN
        while True:
            scraped = scraped_counters(cluster.taskmanager_metrics, job_name)
            seen = Counter({name: int(value) for name, value in scraped.items() if name.startswith(counted)})
            if seen == expected or time.monotonic() > deadline:
                break
            assert job.poll() is None, job.communicate()
            time.sleep(1)
        assert seen == expected, ("missing or short", expected - seen, "more than expected", seen - expected)
        print(f"the counters complete on the reporter {COUNTERS_WITHIN - (deadline - time.monotonic()):.1f} s after "
              "Segment's last call")
        assert sum(n for name, n in seen.items() if name.startswith(counted[0])) == len(server.accepted)
        # Counted under one name by every family's delivery: each family's own Flink counter, added up here.
        requests_200 = scraped[prometheus_name("requests_by_status:200")]
    finally:
        job.send_signal(signal.SIGTERM)
        _, err = job.communicate(timeout=120)
    assert job.returncode == 0, err
    run_summary = json.loads((tmp_path / "s.json").read_text())
    assert {event_type: row["sent"] for event_type, row in run_summary["by_event_type"].items() if row["sent"]} == sent
    assert {event_type: row["read"] for event_type, row in run_summary["by_event_type"].items()} == read
    assert requests_200 == run_summary["requests_by_status"]["200"] > 0
