"""Reading Currents from Google Cloud Storage and Azure Blob Storage, outputs written there too,
against real servers on loopback speaking each protocol (gcp-storage-emulator; Azurite), started and
stopped by the tests. A cloud whose server cannot start here is skipped with the reason."""
import json
import os
import pathlib
import shutil
import socket
import subprocess
import time

import pytest

from pipeline.sample_bucket import make_sample_bucket
from tests.pipeline_runs import expected_calls, received_calls, run_job
from tests.segment_server import SegmentServer

KEY = "cloud-test-key"
CONTAINER = "currents"
AZURITE = pathlib.Path(__file__).parent / "azurite" / "node_modules" / ".bin" / "azurite-blob"
# Azurite's documented development account (public, local only).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Store:
    """A bucket on a storage server: where it is for the job, and how the test puts and gets objects."""

    def __init__(self, base_uri, args, put, get):
        self.base_uri, self.args, self.put, self.get = base_uri, args, put, get


def gcs_store(monkeypatch):
    server_module = pytest.importorskip("gcp_storage_emulator.server", reason="needs gcp-storage-emulator")
    storage = pytest.importorskip("google.cloud.storage", reason="needs the gcp extra")
    credentials = pytest.importorskip("google.auth.credentials")
    port = free_port()
    server = server_module.create_server("127.0.0.1", port, in_memory=True, default_bucket=CONTAINER)
    server.start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
    bucket = storage.Client(project="test", credentials=credentials.AnonymousCredentials()).bucket(CONTAINER)
    store = Store(f"gs://{CONTAINER}", ["--project", "test"],
                  lambda key, path: bucket.blob(key).upload_from_filename(path),
                  lambda key: bucket.blob(key).download_as_bytes().decode("utf-8"))
    return store, server.stop


def azure_store(tmp_path):
    blob = pytest.importorskip("azure.storage.blob", reason="needs the azure extra")
    if not AZURITE.exists() or not shutil.which("node"):
        pytest.skip("Azurite is not installed (run_tests.sh installs it with npm when Node.js is present)")
    port = free_port()
    server = subprocess.Popen([str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port),
                               "--location", str(tmp_path), "--silent", "--skipApiVersionCheck",
                               "--disableTelemetry"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    connection = (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
                  f"BlobEndpoint=http://127.0.0.1:{port}/{AZURITE_ACCOUNT};")
    service = blob.BlobServiceClient.from_connection_string(connection)
    for _ in range(100):
        try:
            container = service.create_container(CONTAINER)
            break
        except Exception:  # pylint: disable=broad-except  # not listening yet
            time.sleep(0.1)
    else:
        server.terminate()
        pytest.skip("Azurite did not start")

    def put(key, path):
        with open(path, "rb") as stream:
            container.upload_blob(key, stream)

    store = Store(f"azfs://{AZURITE_ACCOUNT}/{CONTAINER}", ["--azure_connection_string", connection], put,
                  lambda key: container.download_blob(key).readall().decode("utf-8"))
    return store, server.terminate


@pytest.fixture(params=["gcs", "azure"])
def store(request, tmp_path, monkeypatch):
    """A storage server holding a generated Currents bucket under `prefix/`; yields (store, manifest)."""
    made, stop = gcs_store(monkeypatch) if request.param == "gcs" else azure_store(tmp_path / "azurite")
    try:
        root = str(tmp_path / "bucket")
        manifest = make_sample_bucket(root, events_per_file=5)
        for path in manifest["files"]:
            made.put("prefix/" + os.path.relpath(path, root), path)
        manifest["records"] = [
            dict(entry, source_file=f"{made.base_uri}/prefix/" + os.path.relpath(entry["source_file"], root))
            for entry in manifest["records"]]
        yield made, manifest
    finally:
        stop()


def test_input_pattern_and_outputs_in_the_bucket(tmp_path, store):
    made, manifest = store
    with SegmentServer(write_key=KEY) as server:
        status, _, _ = run_job(tmp_path, "--input", f"{made.base_uri}/prefix/**", "--segment_endpoint", server.url,
                               "--segment_write_key", KEY, *made.args,
                               "--dead_letter_output", f"{made.base_uri}/out/dead",
                               "--summary_output", f"{made.base_uri}/out/summary.json")
        assert status == 0
        assert received_calls(server.accepted) == expected_calls(manifest)
        assert not server.violations
    summary = json.loads(made.get("out/summary.json"))
    assert summary["sent"] == sum(expected_calls(manifest).values()) and summary["unreadable_files"] == 2


def test_date_range_with_a_ledger_in_the_bucket(tmp_path, store):
    made, manifest = store
    day = [e for e in manifest["records"] if "/date=2024-03-02-" in e["source_file"]]
    args = ["--currents_root", f"{made.base_uri}/prefix", "--start", "2024-03-02", "--end", "2024-03-03",
            "--ledger", f"{made.base_uri}/ledger", "--dead_letter_output", f"{made.base_uri}/out/dead-range",
            *made.args]
    with SegmentServer(write_key=KEY) as server:
        status, _, _ = run_job(tmp_path, "--segment_endpoint", server.url, "--segment_write_key", KEY, *args)
        assert status == 0
        assert received_calls(server.accepted) == expected_calls(dict(manifest, records=day))
        first = len(server.requests)
        status, _, _ = run_job(tmp_path / "again", "--segment_endpoint", server.url, "--segment_write_key", KEY,
                               *args)
        assert status == 0 and len(server.requests) == first


def test_wrong_credentials_stop_the_run_with_one_line(tmp_path, store, capsys):
    made, _ = store
    if not made.base_uri.startswith("azfs://"):
        pytest.skip("the GCS emulator accepts any credentials")
    wrong = [arg.replace(AZURITE_KEY, "d3Jvbmcta2V5" * 7 + "AA==") for arg in made.args]
    status, _, _ = run_job(tmp_path, "--currents_root", f"{made.base_uri}/prefix", "--segment_write_key", KEY,
                           "--dry_run_output", str(tmp_path / "requests"), *wrong)
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and err[-1].startswith(f"error: cannot list --currents_root {made.base_uri}/prefix")
