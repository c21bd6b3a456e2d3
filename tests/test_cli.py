"""The command line: configuration errors stop the run with one line; --help lists every option."""
import pathlib
import subprocess
import sys

import pytest
from apache_beam.io.filesystem import BeamIOError
from apache_beam.options.pipeline_options import PipelineOptions, PortableOptions

from currents_to_segment.pipeline import runners
from currents_to_segment.pipeline.main import main
from currents_to_segment.pipeline.options import storage_reason

REQUIRED_FLAGS = ("--input", "--segment_write_key", "--segment_endpoint", "--segment_region",
                  "--dead_letter_output", "--dry_run_output", "--summary_output", "--window_seconds",
                  "--max_batch_bytes", "--max_batch_events", "--max_requests_per_second",
                  "--message_id_namespace", "--passthrough_fields", "--fail_on_dead_letters")


@pytest.fixture
def one_file(tmp_path):
    path = tmp_path / "f.avro"
    path.write_bytes(b"")
    return str(path)


@pytest.mark.parametrize("args,message", [
    (["--input", "/nonexistent/**/*.avro", "--segment_write_key", "k"], "no file matched --input"),
    (["--segment_write_key", "k"], "no input"),
    (["--input", "{file}", "--segment_write_key", "k", "--max_batch_bytes", "600000"], "--max_batch_bytes must be"),
    (["--input", "{file}", "--segment_write_key", "k", "--max_batch_events", "2501"], "--max_batch_events must be"),
    (["--input", "{file}", "--segment_write_key", "k", "--window_seconds", "0"], "--window_seconds must be"),
    (["--input", "{file}", "--segment_write_key", "k", "--window_seconds", "soon"], "invalid int value"),
    (["--input", "{file}", "--segment_write_key", "k", "--no_such_flag", "1"], "unknown option(s): --no_such_flag"),
    (["--input", "{file}"], "no Segment write key"),
    (["--input", "{file}", "--segment_write_key", "k", "--segment_region", "eu", "--segment_endpoint",
      "http://127.0.0.1:1"], "either --segment_endpoint or --segment_region"),
    (["--input", "{file}", "--segment_write_key", "k", "--segment_endpoint", "api.segment.io"],
     "must be an http(s) URL"),
])
def test_configuration_errors_stop_with_one_line(args, message, one_file, capsys, monkeypatch):
    monkeypatch.delenv("SEGMENT_WRITE_KEY", raising=False)
    status = main(["--runner=FnApiRunner", *[a.replace("{file}", one_file) for a in args]])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert "k\n" not in err[0]


def test_help_lists_every_option(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for flag in REQUIRED_FLAGS:
        assert flag in out


@pytest.mark.parametrize("command", [
    [str(pathlib.Path(sys.executable).with_name("currents-to-segment")), "--help"],
    [sys.executable, "-m", "pipeline", "--help"],
], ids=["console script", "python -m pipeline"])
def test_entry_points_are_installed(command):
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0 and "--segment_write_key" in result.stdout


def test_a_storage_error_is_told_in_one_line_with_its_innermost_cause():
    exceptions = pytest.importorskip("google.api_core.exceptions", reason="needs the gcp extra")
    denied = PermissionError("403 Forbidden: no storage.objects.list\nfull response ...")
    wrapped = BeamIOError("Match operation failed", {"gs://b/x/**": BeamIOError("List failed", {"gs://b/x/": denied})})
    assert storage_reason(wrapped) == "403 Forbidden: no storage.objects.list"
    retried = exceptions.RetryError("Timeout of 120.0s exceeded", ConnectionError("Failed to resolve 'storage'\n..."))
    assert storage_reason(retried) == "Timeout of 120.0s exceeded (last error: Failed to resolve 'storage')"


@pytest.mark.parametrize("args,timeout", [
    (["--runner=PrismRunner"], runners.JOB_STREAMS_SECONDS),
    (["--runner=FlinkRunner", "--flink_master=[local]"], runners.JOB_STREAMS_SECONDS),
    (["--runner=PrismRunner", "--job_server_timeout=60"], 60),  # the user's own, kept
    (["--runner=PortableRunner", "--job_endpoint=localhost:8099"], 300),  # Beam's wait for that server, kept
    (["--runner=FnApiRunner"], 300),  # not a portable runner: Beam's default, unused
])
def test_a_portable_run_is_not_cut_off_by_beams_job_server_timeout(args, timeout):
    """Beam follows a portable job through streams whose deadline is --job_server_timeout (300 s by default): a
    5,000,000-event replay on Prism failed at 5 minutes with DEADLINE_EXCEEDED before this."""
    options = PipelineOptions(args)
    runners.keep_job_streams_open(options, args)
    assert options.view_as(PortableOptions).job_server_timeout == timeout
