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


# --- options that would do nothing, or the wrong thing, silently ---------------------------------------

@pytest.mark.parametrize("args,line", [
    (["--event_types", "emial"],
     "error: --event_types emial is no Currents event type and no family of the classic mapping (push, email, sms, "
     "in_app, content_card, news_feed, canvas_campaign, other) (did you mean email?)"),
    (["--event_types", "push,users.messages.email.Sned"],
     "error: --event_types users.messages.email.Sned is no Currents event type and no family of the classic mapping "
     "(push, email, sms, in_app, content_card, news_feed, canvas_campaign, other) (did you mean "
     "users.messages.email.Send, users.messages.email.Bounce, users.messages.email.Open?)"),
    (["--message_id_namespace", ""],
     "error: --message_id_namespace is empty (an unset variable?): it would change every messageId; give a "
     "namespace, or leave the option out to send the Currents ids"),
    (["--message_id_namespace", "  "],
     "error: --message_id_namespace is empty (an unset variable?): it would change every messageId; give a "
     "namespace, or leave the option out to send the Currents ids"),
    (["--max_requests_in_flight", "10000"],
     "error: --max_requests_in_flight must be at most 64 (each is a thread and a connection per family in every "
     "worker), got 10000"),
    (["--integrations", '{"All": false, "All": true}'], 'error: --integrations is not JSON: "All" is given twice'),
    (["--integrations", '{"All": "false"}'],
     "error: --integrations 'All' is \"false\": each destination takes true or false (or an object of its "
     'options), e.g. {"All": false, "Mixpanel": true}'),
    (["--integrations", '{"Mixpanel": 1}'],
     "error: --integrations 'Mixpanel' is 1: each destination takes true or false (or an object of its "
     'options), e.g. {"All": false, "Mixpanel": true}'),
    (["--integrations", ""], "error: --integrations is not JSON: Expecting value: line 1 column 1 (char 0)"),
    (["--segment_endpoint", "http://user:s3cret@127.0.0.1:9/v"],
     "error: --segment_endpoint http://***@127.0.0.1:9/v holds credentials (user:password@): Segment takes only "
     "the write key; give the endpoint without them"),
])
def test_an_option_that_would_do_nothing_or_harm_silently_is_an_error(args, line, one_file, capsys, tmp_path):
    status = main(["--runner=FnApiRunner", "--input", one_file, "--segment_write_key", "k",
                   "--dead_letter_output", str(tmp_path / "letters"), "--summary_output", str(tmp_path / "s.json"),
                   *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert (status, err) == (1, [line])
    assert "s3cret" not in line and not (tmp_path / "s.json").exists() and not (tmp_path / "letters").exists()


def test_integrations_take_booleans_and_a_destinations_options():
    from currents_to_segment.pipeline.config import parse_integrations  # pylint: disable=import-outside-toplevel
    assert parse_integrations('{"All": false, "Amplitude": {"session_id": 1}}') == {
        "All": False, "Amplitude": {"session_id": 1}}
    assert parse_integrations(None) is None


# hash/redact names and mapping files

@pytest.mark.parametrize("args,line", [
    (["--hash_fields", "emial"],
     "error: --hash_fields emial: no property or trait of the classic mapping is named emial (close matches: email)"),
    (["--redact_fields", "Email"],
     "error: --redact_fields Email: no property or trait of the classic mapping is named Email (close matches: "
     "email)"),
    (["--hash_fields", "email_address"], "error: --hash_fields email_address: email_address is the Currents field; "
                                         "it is sent as context.traits.email: give email"),
    (["--hash_fields", "campaign_name,context.traits.email"],
     "error: --hash_fields context.traits.email: context.traits.email is a path: give the trait's name, email"),
    (["--mapping", "current", "--passthrough_fields", "--redact_fields", "email,email_address"],
     "error: --redact_fields email_address: email_address is the Currents field; it is sent as "
     "context.traits.email: give email"),
])
def test_a_name_no_call_carries_stops_the_run_with_one_line(args, line, one_file, capsys):
    status = main(["--runner=FnApiRunner", "--input", one_file, "--segment_write_key", "k", *args])
    assert status == 1
    assert capsys.readouterr().err.strip().splitlines() == [line]


def test_a_mapping_file_with_conflicting_context_paths_stops_the_run_with_one_line(one_file, tmp_path, capsys):
    path = tmp_path / "m.json"
    path.write_text('{"add": {"users.messages.banner.Click": {"family": "in_app", "event": "Banner Clicked", '
                    '"context": {"device.model": "device_model", "device.model.name": "platform"}}}}')
    status = main(["--runner=FnApiRunner", "--input", one_file, "--segment_write_key", "k", "--mapping_file",
                   str(path)])
    assert status == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f'error: --mapping_file {path}: add["users.messages.banner.Click"].context["device.model.name"]: it sets a '
        'field inside context.device.model, which "device.model" sets whole: give one or the other']
