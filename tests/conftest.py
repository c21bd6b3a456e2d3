"""Fixtures shared by the test modules: a Segment server on loopback, a generated Currents bucket, Beam's SDK worker
pool, and Beam's Flink job server.

A module names its server's write key as KEY (or WRITE_KEY), and may shape its bucket with SAMPLE_BUCKET, keyword
arguments of pipeline.sample_bucket.make_sample_bucket (default: 6 events per file, the classic types).
"""
import os
import socket
import subprocess
import sys

import pytest

from currents_to_segment.pipeline.sample_bucket import make_sample_bucket
from tests.pipeline_runs import wait_for_port
from tests.segment_server import SegmentServer

DEFAULT_BUCKET = {"events_per_file": 6}


@pytest.fixture
def server(request):
    """A SegmentServer taking the module's KEY, for one test."""
    key = getattr(request.module, "KEY", None) or getattr(request.module, "WRITE_KEY", "test-write-key")
    with SegmentServer(write_key=key) as running:
        yield running


@pytest.fixture(scope="module")
def bucket(request, tmp_path_factory):
    """(root, manifest) of a demo Currents bucket written with the module's BUCKET settings, for its tests."""
    root = tmp_path_factory.mktemp("bucket")
    return str(root), make_sample_bucket(str(root), **getattr(request.module, "SAMPLE_BUCKET", DEFAULT_BUCKET))


def free_port():
    """A TCP port free on loopback now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def worker_pool():
    """Beam's SDK worker pool in a process of its own, for the module's tests: with --environment_type=EXTERNAL
    --environment_config=<it>, the runner starts the job's workers through it, as on a cluster."""
    port = free_port()
    # The pool starts each worker as `python -c ...`: this interpreter's, with the job's packages.
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    pool = subprocess.Popen([sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main",
                             f"--service_port={port}"], env={**os.environ, "PATH": path},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, 60)
    yield f"localhost:{port}"
    pool.kill()
    pool.wait()


# --- Flink -------------------------------------------------------------------------------------------

FLINK_JOB_SERVER_JAR = os.environ.get("FLINK_JOB_SERVER_JAR")


def flink_job_server_jar():
    """The jar of Beam's Flink job server (scripts/setup_flink.sh finds or builds it, run_tests.sh sources it); the
    test is skipped without it, or fails with FLINK_REQUIRED=1 (CI)."""
    if not FLINK_JOB_SERVER_JAR:
        if os.environ.get("FLINK_REQUIRED") == "1":
            pytest.fail("FLINK_REQUIRED=1 but FLINK_JOB_SERVER_JAR is not set: scripts/setup_flink.sh found no job server")
        pytest.skip("no Flink job server here (FLINK_JOB_SERVER_JAR; scripts/setup_flink.sh needs Java and Maven)")
    return FLINK_JOB_SERVER_JAR


@pytest.fixture(scope="session")
def flink_job_server(tmp_path_factory):
    """Beam's Flink job server, one for the whole session, started as --runner=FlinkRunner starts it (each job on an
    embedded Flink cluster of its own): its job endpoint, for --runner=PortableRunner --job_endpoint. This saves
    each run the start of a JVM; the server's output is in its log, named when it fails to start."""
    jar = flink_job_server_jar()
    folder = tmp_path_factory.mktemp("flink-job-server")
    port = free_port()
    log_path = folder / "job-server.log"
    with open(log_path, "wb") as log:
        java = os.path.join(os.environ["JAVA_HOME"], "bin", "java") if os.environ.get("JAVA_HOME") else "java"
        server = subprocess.Popen([java, "-jar", jar, "--flink-master=[local]", f"--artifacts-dir={folder}",
                                   f"--job-port={port}", "--artifact-port=0", "--expansion-port=0"],
                                  stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        if not wait_for_port(port, 120, stopped=lambda: server.poll() is not None):
            tail = log_path.read_text(errors="replace").splitlines()[-30:]
            pytest.fail(f"Flink's job server did not start (log: {log_path}):\n" + "\n".join(tail))
        yield f"localhost:{port}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
