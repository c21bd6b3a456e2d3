"""replay-dead-letters: stored messages are resent as they are, what fails again is written back, the rest skipped."""
import glob
import json
import os

import pytest

from pipeline import replay
from pipeline.sample_bucket import make_sample_bucket
from tests.pipeline_runs import expected_calls, read_jsonl, received_calls, run_job
from tests.segment_server import SegmentServer

KEY = "replay-test-key-5f3c9e"


def track(message_id, **properties):
    return {"type": "track", "event": "Email Sent", "userId": f"user-{message_id}", "messageId": message_id,
            "timestamp": "2024-03-01T12:00:00.000Z", "properties": {"subject": "Grüße ✉", **properties}}


def letter(reason, message=None, **fields):
    base = {"reason": reason, "event_type": "users.messages.email.Send", "source_file": "gs://b/f.avro",
            "message_id": message and message["messageId"], "http_status": None, "response_excerpt": None,
            "error": None, "message": message, "record": None}
    return {**base, **fields}


def write_letters(directory, letters, name="dead_letters-00000-of-00001.jsonl", extra_lines=()):
    os.makedirs(directory, exist_ok=True)
    lines = [json.dumps(one, ensure_ascii=False) for one in letters] + list(extra_lines)
    with open(os.path.join(directory, name), "w", encoding="utf-8") as stream:
        stream.write("".join(line + "\n" for line in lines))
    return str(directory)


def compact(message):
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()


@pytest.fixture
def server():
    with SegmentServer(write_key=KEY) as running:
        yield running


def run_replay(directory, server, *args, key=KEY):
    return replay.main([str(directory), "--segment_endpoint", server.url, "--segment_write_key", key, *args])


MIXED = [
    letter("rejected_by_segment", track("m1"), http_status=400, response_excerpt="bad"),
    letter("retries_exhausted", track("m2", opens=3), http_status=503),
    letter("retries_exhausted", track("m3")),
    letter("event_too_large", track("m4", body="x" * 100)),
    letter("invalid_record", None, error="ValueError: no time", record={"id": "r5"}),
    letter("unreadable_file", None, error="EOFError", events_read_before_error=4),
    letter("rejected_by_segment", None),
]


def test_replayable_letters_are_resent_byte_identical_and_the_rest_skipped(tmp_path, server, capsys):
    directory = write_letters(tmp_path / "dl", MIXED)
    status = run_replay(directory, server, "--output", str(tmp_path / "out"))
    out = capsys.readouterr().out.strip().splitlines()
    resent = [one["message"] for one in MIXED[:3]]
    assert status == 0
    assert server.accepted == resent  # exactly those, parsed JSON equal, in order
    assert sorted(server.accepted_ids()) == ["m1", "m2", "m3"]
    bodies = b"".join(request.body for request in server.requests)
    assert all(compact(message) in bodies for message in resent)  # same bytes as stored, nothing re-wrapped
    assert not server.violations
    assert out == ["replayed 3: accepted 3, failed again 0, skipped 4 (reasons not replayed: event_too_large 1, "
                   "invalid_record 1, rejected_by_segment without message 1, unreadable_file 1)"]
    assert not os.path.exists(tmp_path / "out")  # nothing failed, nothing written


def test_reasons_option_selects_what_is_replayed(tmp_path, server, capsys):
    directory = write_letters(tmp_path / "dl", MIXED)
    assert run_replay(directory, server, "--reasons", "event_too_large") == 0
    assert [event["messageId"] for event in server.accepted] == ["m4"]
    assert capsys.readouterr().out.startswith("replayed 1: accepted 1, failed again 0, skipped 6 ")


def test_a_message_refused_again_is_the_only_letter_written_back(tmp_path, server, capsys):
    directory = write_letters(tmp_path / "dl", MIXED)
    server.poison = lambda event: event.get("messageId") == "m2"
    status = run_replay(directory, server)
    out = capsys.readouterr().out.strip()
    written = glob.glob(os.path.join(directory, "replayed-*", "dead_letters-replay-*.jsonl"))
    assert status == 2 and len(written) == 1
    assert out.startswith("replayed 3: accepted 2, failed again 1 (written to ") and written[0] in out
    again = read_jsonl(os.path.dirname(written[0]), "dead_letters")
    assert [one["message_id"] for one in again] == ["m2"]
    assert again[0]["reason"] == "rejected_by_segment" and again[0]["http_status"] == 400
    assert again[0]["replay_attempts"] == 1 and '"invalid event"' in again[0]["response_excerpt"]
    assert {k: v for k, v in again[0].items() if k not in ("reason", "http_status", "response_excerpt",
                                                             "replay_attempts")} == {
        k: v for k, v in MIXED[1].items() if k not in ("reason", "http_status", "response_excerpt")}
    assert sorted(server.accepted_ids()) == ["m1", "m3"]
    # Replaying the replay folder counts attempts on.
    assert run_replay(os.path.dirname(written[0]), server, "--output", str(tmp_path / "again")) == 2
    assert read_jsonl(tmp_path / "again", "dead_letters")[0]["replay_attempts"] == 2


def test_unreadable_lines_are_counted_and_make_the_exit_status_2(tmp_path, server, capsys):
    directory = write_letters(tmp_path / "dl", MIXED[:1], extra_lines=["{not json", "[1, 2]", ""])
    assert run_replay(directory, server) == 2
    assert capsys.readouterr().out.strip() == "replayed 1: accepted 1, failed again 0, skipped 0, unreadable lines 2 " \
                                              "(left in the input)"


@pytest.mark.parametrize("key", ["wrong-secret-key-7a1d", None])
def test_a_wrong_or_missing_key_stops_with_one_line_and_never_shows_the_key(tmp_path, server, capsys, monkeypatch,
                                                                              key):
    monkeypatch.delenv("SEGMENT_WRITE_KEY", raising=False)
    directory = write_letters(tmp_path / "dl", MIXED)
    args = [directory, "--segment_endpoint", server.url] + (["--segment_write_key", key] if key else [])
    assert replay.main(args) == 1
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and captured.out == ""
    assert ("401" in err[0]) if key else ("no Segment write key" in err[0])
    assert key is None or key not in captured.err + captured.out
    assert server.accepted == []


def test_the_key_can_come_from_the_environment(tmp_path, server, capsys, monkeypatch):
    monkeypatch.setenv("SEGMENT_WRITE_KEY", KEY)
    directory = write_letters(tmp_path / "dl", MIXED[:2])
    assert replay.main([directory, "--segment_endpoint", server.url]) == 0
    assert len(server.accepted) == 2 and KEY not in capsys.readouterr().out


@pytest.mark.parametrize("make", [lambda p: str(p / "missing"), lambda p: (os.mkdir(p / "empty"), str(p / "empty"))[1]])
def test_a_folder_without_dead_letters_stops_with_one_line(tmp_path, server, capsys, make):
    assert run_replay(make(tmp_path), server) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no dead_letters-*.jsonl files in ")


@pytest.mark.parametrize("args,message", [
    (["--reasons", "nope"], "--reasons: unknown nope"),
    (["--segment_region", "eu"], "either --segment_endpoint or --segment_region"),
    (["--max_retry_attempts", "0"], "--max_retry_attempts must be at least 1"),
    (["--no_such_flag"], "unrecognized arguments"),
])
def test_bad_options_stop_with_one_line(tmp_path, server, capsys, args, message):
    directory = write_letters(tmp_path / "dl", MIXED)
    assert run_replay(directory, server, *args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and KEY not in err[0]


def test_a_run_that_found_segment_down_is_delivered_in_full_by_the_replay(tmp_path, capsys):
    root = tmp_path / "bucket"
    manifest = make_sample_bucket(str(root), events_per_file=4)
    with SegmentServer(write_key=KEY) as down:
        down.always = 503
        status, _, letters = run_job(tmp_path, "--input", f"{root}/**", "--segment_endpoint", down.url,
                                     "--segment_write_key", KEY, "--max_retry_attempts", "1")
    assert status in (0, 3)
    assert {one["reason"] for one in letters} == {"retries_exhausted", "event_too_large", "unreadable_file"}
    capsys.readouterr()
    with SegmentServer(write_key=KEY) as healthy:
        assert run_replay(tmp_path / "dead_letters", healthy) == 0
        assert received_calls(healthy.accepted) == expected_calls(manifest)
        assert not healthy.violations
    exhausted = sum(one["reason"] == "retries_exhausted" for one in letters)
    assert capsys.readouterr().out.startswith(f"replayed {exhausted}: accepted {exhausted}, failed again 0, skipped ")
