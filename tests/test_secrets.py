"""The write key goes nowhere it should not; key sources; transport safety; PII controls."""
import hashlib
import json
import logging
import sys
import types

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from currents_to_segment.pipeline import assembly, config
from currents_to_segment.pipeline.main import main
from currents_to_segment.pipeline.options import ConfigError, CurrentsToSegmentOptions, resolve_endpoint, split_write_key
from currents_to_segment.pipeline.sample_bucket import make_sample_bucket
from tests.pipeline_runs import expected_calls, read_jsonl, received_calls, run_job
from tests.segment_server import SegmentServer
from currents_to_segment.transforms.currents.track_calls import protect
from currents_to_segment.transforms.segment.write_key import ENV, KeySource

KEY = "wk_Sup3rSecretKeyValue_0123456789"
SAMPLE_BUCKET = {"events_per_file": 5}


def all_text_under(path):
    return "".join(p.read_text(errors="replace") for p in path.rglob("*") if p.is_file())


def test_the_key_appears_in_no_output_of_a_run(tmp_path, bucket, capsys, caplog, monkeypatch):
    root, manifest = bucket
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("SEGMENT_WRITE_KEY", KEY)
    out = tmp_path / "outputs"
    with SegmentServer(write_key=KEY) as server:
        server.script(401)  # the first request fails: the configuration error text is checked too
        status = main(["--runner=FnApiRunner", "--input", f"{root}/**", "--segment_endpoint", server.url,
                       "--dead_letter_output", str(out / "dead"), "--summary_output", str(out / "s.json"),
                       "--max_requests_in_flight", "1"])  # nothing else in flight is accepted meanwhile
        assert status == 1
        status, _, _ = run_job(out, "--input", f"{root}/**", "--segment_endpoint", server.url,
                               "--ledger", str(out / "ledger"), "--max_retry_attempts", "1",
                               "--max_batch_events", "10")
        assert status == 0 and received_calls(server.accepted) == expected_calls(manifest)
    assert main(["--help"]) == 0
    captured = capsys.readouterr()
    texts = {"stdout": captured.out, "stderr": captured.err, "logs": caplog.text,
             "files": all_text_under(out)}
    assert "Segment answered 401" in captured.err
    for name, text in texts.items():
        assert KEY not in text, f"the write key leaked into {name}"


def test_the_key_is_not_in_the_options_runners_display_nor_in_the_job_graph(tmp_path, bucket, monkeypatch):
    root, _ = bucket
    monkeypatch.setenv("SEGMENT_WRITE_KEY", KEY)
    key, argv = split_write_key(["--input", f"{root}/**", f"--segment_write_key={KEY}", "--runner=FnApiRunner",
                                 "--dead_letter_output", str(tmp_path / "dead")])
    assert key == KEY and KEY not in " ".join(argv)
    assert split_write_key(["--segment_write_key", KEY, "--x"]) == (KEY, ["--x"])
    options = PipelineOptions(argv)
    assert KEY not in json.dumps(options.get_all_options(), default=str)
    assert KEY not in json.dumps(options.display_data(), default=str)
    # With the key in the environment, only the variable's name travels with the job.
    job = config.load(argv, "test-run")
    assert job.config.delivery.key_source == KeySource(ENV, "SEGMENT_WRITE_KEY")
    pipeline = beam.Pipeline(options=job.pipeline_options)
    assembly.build(pipeline, job.config)
    assert KEY.encode() not in pipeline.to_runner_api().SerializeToString()


def test_key_from_a_file(tmp_path, bucket, monkeypatch, capsys):
    root, manifest = bucket
    monkeypatch.delenv("SEGMENT_WRITE_KEY", raising=False)
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    with SegmentServer(write_key=KEY) as server:
        status, _, _ = run_job(tmp_path, "--input", f"{root}/**", "--segment_endpoint", server.url,
                               "--segment_write_key_file", str(key_file))
        assert status == 0 and received_calls(server.accepted) == expected_calls(manifest)
    status = main(["--input", f"{root}/**", "--segment_write_key_file", str(tmp_path / "missing")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and err[-1] == (f"error: cannot read the write key from --segment_write_key_file "
                                       f"{tmp_path / 'missing'}: No such file or directory")


def test_key_from_secret_manager(tmp_path, bucket, monkeypatch):
    """GCP itself cannot run here: a stand-in client answers access_secret_version like Secret Manager."""
    root, manifest = bucket
    monkeypatch.delenv("SEGMENT_WRITE_KEY", raising=False)
    asked = []

    class SecretManagerServiceClient:  # pylint: disable=too-few-public-methods
        def access_secret_version(self, name):
            asked.append(name)
            return types.SimpleNamespace(payload=types.SimpleNamespace(data=KEY.encode()))

    secretmanager = types.ModuleType("google.cloud.secretmanager")
    secretmanager.SecretManagerServiceClient = SecretManagerServiceClient
    try:
        import google.cloud as cloud  # pylint: disable=import-outside-toplevel
    except ImportError:
        cloud = types.ModuleType("google.cloud")
        monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
        monkeypatch.setitem(sys.modules, "google.cloud", cloud)
    monkeypatch.setitem(sys.modules, "google.cloud.secretmanager", secretmanager)
    monkeypatch.setattr(cloud, "secretmanager", secretmanager, raising=False)
    name = "projects/p/secrets/segment-write-key/versions/3"
    with SegmentServer(write_key=KEY) as server:
        status, _, _ = run_job(tmp_path, "--input", f"{root}/**", "--segment_endpoint", server.url,
                               "--segment_write_key_secret", name)
        assert status == 0 and received_calls(server.accepted) == expected_calls(manifest)
    assert set(asked) == {name}


@pytest.mark.parametrize("endpoint,allowed", [
    ("http://127.0.0.1:8080", True), ("http://localhost:1", True), ("http://[::1]:80", True),
    ("https://api.segment.io", True), ("http://api.segment.io", False), ("http://10.0.0.5:80", False)])
def test_plain_http_only_to_this_machine_unless_allowed(endpoint, allowed):
    options = PipelineOptions(["--segment_endpoint", endpoint]).view_as(CurrentsToSegmentOptions)
    if allowed:
        assert resolve_endpoint(options) == endpoint
    else:
        with pytest.raises(ConfigError, match="unencrypted"):
            resolve_endpoint(options)
        insecure = PipelineOptions(["--segment_endpoint", endpoint, "--allow_insecure_endpoint"])
        assert resolve_endpoint(insecure.view_as(CurrentsToSegmentOptions)) == endpoint


def test_protect_redacts_and_hashes_properties_and_traits():
    message = {"properties": {"campaign_name": "Spring", "link_url": "u", "in_control_group": "true"},
               "context": {"library": {}, "traits": {"email": "a@example.com"}}}
    protect(message, redact=frozenset({"campaign_name"}), hashed=frozenset({"email", "link_url"}))
    assert message["properties"] == {"link_url": hashlib.sha256(b"u").hexdigest(), "in_control_group": "true"}
    assert message["context"]["traits"] == {"email": hashlib.sha256(b"a@example.com").hexdigest()}
    protect(message, redact=frozenset({"email"}))
    assert "traits" not in message["context"]


def test_pii_options_apply_to_every_call(tmp_path, bucket):
    root, _ = bucket
    out = tmp_path / "requests"
    status, _, _ = run_job(tmp_path, "--input", f"{root}/**", "--dry_run_output", str(out),
                           "--redact_fields", "campaign_name,canvas_name", "--hash_fields", "email")
    messages = [m for body in read_jsonl(out, "requests") for m in body["batch"]]
    assert status == 0 and messages
    assert not any({"campaign_name", "canvas_name"} & m["properties"].keys() for m in messages)
    emails = [m["context"]["traits"]["email"] for m in messages if "traits" in m["context"]]
    assert emails and all(len(e) == 64 and "@" not in e for e in emails)
