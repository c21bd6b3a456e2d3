"""Reading Currents from S3, Google Cloud Storage and Azure Blob Storage, outputs written there too,
against real servers on loopback speaking each protocol (moto's S3 server, gcp-storage-emulator,
Azurite), started and stopped by the tests. A cloud whose server cannot start here is skipped with
the reason."""
import concurrent.futures
import json
import os
import pathlib
import shutil
import socket
import subprocess
import time

import pytest

from pipeline.partitions import parse_hour, s3_folder_lister, select_partitions
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
    """A bucket on a storage server: where it is for the job, and how the test puts, gets and lists
    objects."""

    def __init__(self, base_uri, args, put, get, keys):
        self.base_uri, self.args, self.put, self.get, self.keys = base_uri, args, put, get, keys


def s3_client(endpoint):
    boto3 = pytest.importorskip("boto3", reason="needs the aws extra")
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                        region_name="us-east-1")


def s3_store():
    moto_server = pytest.importorskip("moto.server", reason="needs moto[server]")
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    client = s3_client(endpoint)
    client.create_bucket(Bucket=CONTAINER)
    store = Store(f"s3://{CONTAINER}",
                  ["--s3_endpoint_url", endpoint, "--s3_access_key_id", "test", "--s3_secret_access_key", "test",
                   "--s3_region_name", "us-east-1"],
                  lambda key, path: client.upload_file(path, CONTAINER, key),
                  lambda key: client.get_object(Bucket=CONTAINER, Key=key)["Body"].read().decode("utf-8"),
                  lambda prefix: [o["Key"] for o in client.list_objects_v2(Bucket=CONTAINER, Prefix=prefix)
                                  .get("Contents", [])])
    store.endpoint = endpoint
    return store, server.stop


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
                  lambda key: bucket.blob(key).download_as_bytes().decode("utf-8"),
                  lambda prefix: [b.name for b in bucket.list_blobs(prefix=prefix)])
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
                  lambda key: container.download_blob(key).readall().decode("utf-8"),
                  lambda prefix: [b.name for b in container.list_blobs(name_starts_with=prefix)])
    return store, server.terminate


@pytest.fixture(params=["s3", "gcs", "azure"])
def store(request, tmp_path, monkeypatch):
    """A storage server holding a generated Currents bucket under `prefix/`; yields (store, manifest)."""
    made, stop = {"s3": s3_store, "gcs": lambda: gcs_store(monkeypatch),
                  "azure": lambda: azure_store(tmp_path / "azurite")}[request.param]()
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
    letters = [json.loads(line) for key in made.keys("out/dead/") for line in made.get(key).splitlines() if line]
    assert {letter["reason"] for letter in letters} == {"event_too_large", "unreadable_file"}
    assert all(letter["source_file"].startswith(f"{made.base_uri}/prefix/") for letter in letters)


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
        assert status == 0 and len(server.requests) == first  # the ledger in the bucket skips every file
    assert made.keys("ledger/entries-")


def test_wrong_credentials_stop_the_run_with_one_line(tmp_path, store, capsys):
    made, _ = store
    if not made.base_uri.startswith("azfs://"):
        pytest.skip("this S3 or GCS server accepts any credentials")
    wrong = [arg.replace(AZURITE_KEY, "d3Jvbmcta2V5" * 7 + "AA==") for arg in made.args]
    status, _, _ = run_job(tmp_path, "--currents_root", f"{made.base_uri}/prefix", "--segment_write_key", KEY,
                           "--dry_run_output", str(tmp_path / "requests"), *wrong)
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and err[-1].startswith(f"error: cannot list --currents_root {made.base_uri}/prefix")


def test_one_day_out_of_a_month_takes_a_few_s3_list_calls():
    """Folders are listed one level at a time (Delimiter="/"): the cost depends on the folders, not
    on how many hours and files the bucket holds."""
    made, stop = s3_store()
    client = s3_client(made.endpoint)
    integration = "month/dataexport.prod-01.S3.integration.5a"
    types = ("users.canvas.Entry", "users.messages.email.Send", "users.behaviors.Uninstall")
    keys = [f"{integration}/event_type={t}/date=2024-03-{day:02d}-{h:02d}/7/0/f.avro"
            for t in types for day in range(1, 31) for h in range(24)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: client.put_object(Bucket=CONTAINER, Key=key, Body=b"x"), keys))
    calls = []
    counted = s3_client(made.endpoint)
    counted.meta.events.register("before-call.s3.ListObjectsV2", lambda **_: calls.append(1))
    try:
        selected = select_partitions(f"s3://{CONTAINER}/month", parse_hour("2024-03-15"), parse_hour("2024-03-16"),
                                     children=s3_folder_lister(counted))
    finally:
        stop()
    assert len(keys) == 2160 and len(selected) == 3 * 24
    assert {p.hour for p in selected} == {parse_hour(f"2024-03-15T{h:02d}") for h in range(24)}
    assert len(calls) == 1 + 1 + len(types)  # the root, the integration folder, each event-type folder
