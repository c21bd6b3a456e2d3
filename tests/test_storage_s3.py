"""Reading Currents from S3 and writing the outputs there, against a real S3 server on loopback
(moto's standalone server), started and stopped by the test."""
import concurrent.futures
import json
import os
import socket

import pytest

from pipeline.partitions import parse_hour, s3_folder_lister, select_partitions
from pipeline.sample_bucket import make_sample_bucket
from tests.pipeline_runs import expected_calls, received_calls, run_job
from tests.segment_server import SegmentServer

boto3 = pytest.importorskip("boto3", reason="S3 tests need the aws extra (pip install -e '.[test]')")
moto_server = pytest.importorskip("moto.server", reason="S3 tests need moto[server] (pip install -e '.[test]')")

KEY = "s3-test-key"
BUCKET = "currents-export"


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """An S3 server holding a generated Currents bucket under `prefix/`; yields (endpoint, client, manifest)."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{server._port}"  # pylint: disable=protected-access
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                          region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    root = str(tmp_path_factory.mktemp("bucket"))
    manifest = make_sample_bucket(root, events_per_file=5)
    for path in manifest["files"]:
        client.upload_file(path, BUCKET, "prefix/" + os.path.relpath(path, root))
    s3_manifest = dict(manifest, records=[
        dict(entry, source_file=f"s3://{BUCKET}/prefix/" + os.path.relpath(entry["source_file"], root))
        for entry in manifest["records"]])
    yield endpoint, client, s3_manifest
    server.stop()


def s3_options(endpoint):
    return ["--s3_endpoint_url", endpoint, "--s3_access_key_id", "test", "--s3_secret_access_key", "test",
            "--s3_region_name", "us-east-1"]


def read_object(client, key):
    return client.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode("utf-8")


def test_input_pattern_on_s3_with_outputs_in_the_bucket(tmp_path, s3):
    endpoint, client, manifest = s3
    with SegmentServer(write_key=KEY) as server:
        status, _, _ = run_job(tmp_path, "--input", f"s3://{BUCKET}/prefix/**", "--segment_endpoint", server.url,
                               "--segment_write_key", KEY, *s3_options(endpoint),
                               "--dead_letter_output", f"s3://{BUCKET}/out/dead",
                               "--summary_output", f"s3://{BUCKET}/out/summary.json")
        assert status == 0
        assert received_calls(server.accepted) == expected_calls(manifest)
        assert not server.violations
    summary = json.loads(read_object(client, "out/summary.json"))
    assert summary["sent"] == sum(expected_calls(manifest).values()) and summary["unreadable_files"] == 2
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix="out/dead/")["Contents"]]
    letters = [json.loads(line) for key in keys for line in read_object(client, key).splitlines() if line]
    assert {l["reason"] for l in letters} == {"event_too_large", "unreadable_file"}
    assert all(l["source_file"].startswith(f"s3://{BUCKET}/prefix/") for l in letters)


def test_date_range_and_ledger_on_s3(tmp_path, s3):
    endpoint, client, manifest = s3
    day = [e for e in manifest["records"] if "/date=2024-03-02-" in e["source_file"]]
    args = ["--currents_root", f"s3://{BUCKET}/prefix", "--start", "2024-03-02", "--end", "2024-03-03",
            "--ledger", f"s3://{BUCKET}/ledger", "--dead_letter_output", f"s3://{BUCKET}/out/dead-range",
            *s3_options(endpoint)]
    with SegmentServer(write_key=KEY) as server:
        status, _, _ = run_job(tmp_path, "--segment_endpoint", server.url, "--segment_write_key", KEY, *args)
        assert status == 0
        assert received_calls(server.accepted) == expected_calls(dict(manifest, records=day))
        first = len(server.requests)
        status, _, _ = run_job(tmp_path / "again", "--segment_endpoint", server.url, "--segment_write_key", KEY,
                               *args)
        assert status == 0 and len(server.requests) == first  # the ledger in S3 skips every file
    assert client.list_objects_v2(Bucket=BUCKET, Prefix="ledger/entries-")["KeyCount"] >= 1


def test_one_day_out_of_a_month_takes_a_few_list_calls(s3):
    """Folders are listed one level at a time (Delimiter="/"): the cost depends on the folders, not
    on how many hours and files the bucket holds."""
    endpoint, client, _ = s3
    integration = "month/dataexport.prod-01.S3.integration.5a"
    types = ("users.canvas.Entry", "users.messages.email.Send", "users.behaviors.Uninstall")
    keys = [f"{integration}/event_type={t}/date=2024-03-{day:02d}-{h:02d}/7/0/f.avro"
            for t in types for day in range(1, 31) for h in range(24)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: client.put_object(Bucket=BUCKET, Key=key, Body=b"x"), keys))
    calls = []
    counted = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                           region_name="us-east-1")
    counted.meta.events.register("before-call.s3.ListObjectsV2", lambda **_: calls.append(1))
    selected = select_partitions(f"s3://{BUCKET}/month", parse_hour("2024-03-15"), parse_hour("2024-03-16"),
                                 children=s3_folder_lister(counted))
    assert len(keys) == 2160 and len(selected) == 3 * 24
    assert {p.hour for p in selected} == {parse_hour(f"2024-03-15T{h:02d}") for h in range(24)}
    assert len(calls) == 1 + 1 + len(types)  # the root, the integration folder, each event-type folder
