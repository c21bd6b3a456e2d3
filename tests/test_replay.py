"""replay-dead-letters: stored messages are resent as they are, what fails again is written back, the rest skipped."""
import fnmatch
import glob
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from currents_to_segment.pipeline import replay
from currents_to_segment.pipeline.sample_bucket import make_sample_bucket
from currents_to_segment.transforms import jsonl
from tests.pipeline_runs import expected_calls, read_jsonl, received_calls, run_job
from tests.segment_server import Answer, SegmentServer

KEY = "replay-test-key-5f3c9e"
# transforms.ledger.key_fingerprint of the keys, worked out by hand: "sha256:" + the first 16 hex digits of
# SHA-256("currents-to-segment write key " + key).
KEY_FINGERPRINT = "sha256:a7c94e5b9f73ca45"
OTHER_KEY = "other-source-key-b71"
OTHER_FINGERPRINT = "sha256:c332b79a10838325"


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
    # It failed at this replay's destination now: the letter names it (a letter of an older version named none).
    assert again[0]["destination"] == {"endpoint": server.url, "write_key": KEY_FINGERPRINT}
    assert {k: v for k, v in again[0].items() if k not in ("reason", "http_status", "response_excerpt",
                                                             "replay_attempts", "destination")} == {
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
    (["--max_batch_bytes", "500001"], "--max_batch_bytes must be between 32"),
    (["--max_batch_bytes", "32000"], "--max_batch_bytes must be between 32"),
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
    with SegmentServer(write_key=KEY) as healthy:  # down for the run, back for the replay (the same endpoint)
        healthy.always = 503
        status, _, letters = run_job(tmp_path, "--input", f"{root}/**", "--segment_endpoint", healthy.url,
                                     "--segment_write_key", KEY, "--max_retry_attempts", "1")
        assert status in (0, 3)
        assert {one["reason"] for one in letters} == {"retries_exhausted", "event_too_large", "unreadable_file"}
        assert healthy.accepted == []
        healthy.always = None
        capsys.readouterr()
        # The sample's one event that Currents delivered twice was dead-lettered twice, byte for byte: replayed once.
        twice = Counter(call for call, count in expected_calls(manifest).items() if count == 2)
        assert len(twice) == 1 and max(expected_calls(manifest).values()) == 2
        assert run_replay(tmp_path / "dead_letters", healthy) == 0
        assert received_calls(healthy.accepted) == expected_calls(manifest) - twice
        assert not healthy.violations
    exhausted = sum(one["reason"] == "retries_exhausted" for one in letters) - 1
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"replayed {exhausted}: accepted {exhausted}, failed again 0, skipped ")
    assert out.endswith(", duplicate letters 1 (sent once)")


SKIPPED_MIXED = ("skipped 4 (reasons not replayed: event_too_large 1, invalid_record 1, "
                 "rejected_by_segment without message 1, unreadable_file 1)")


def delivered_records(directory):
    """{file name: [records]} of the delivered-*.jsonl files in directory."""
    records = {}
    for path in sorted(glob.glob(os.path.join(directory, "delivered-*.jsonl"))):
        with open(path, encoding="utf-8") as stream:
            records[os.path.basename(path)] = [json.loads(line) for line in stream]
    return records


def record_of(message):
    return {"message_id": message["messageId"], "digest": hashlib.sha256(compact(message)).hexdigest()}


def test_what_was_delivered_is_recorded_beside_the_letters_and_a_second_replay_sends_nothing(tmp_path, server,
                                                                                            capsys):
    directory = write_letters(tmp_path / "dl", MIXED)
    assert run_replay(directory, server) == 0
    assert capsys.readouterr().out.strip() == f"replayed 3: accepted 3, failed again 0, {SKIPPED_MIXED}"
    records = delivered_records(directory)
    [(name, lines)] = records.items()
    assert re.fullmatch(r"delivered-\d{8}T\d{6}Z-[0-9a-f]{8}\.jsonl", name)
    assert not fnmatch.fnmatch(name, "dead_letters-*.jsonl")
    assert lines == [record_of(one["message"]) for one in MIXED[:3]]
    sent = len(server.requests)
    assert run_replay(directory, server) == 0
    assert capsys.readouterr().out.strip() == (f"replayed 0: accepted 0, failed again 0, {SKIPPED_MIXED}, "
                                               "already delivered 3")
    assert len(server.requests) == sent  # not one request
    assert sorted(server.accepted_ids().items()) == [("m1", 1), ("m2", 1), ("m3", 1)]
    assert delivered_records(directory) == records  # nothing new delivered, no new record file


def test_rerun_sends_everything_again_and_still_records_it(tmp_path, server, capsys):
    directory = write_letters(tmp_path / "dl", MIXED)
    assert run_replay(directory, server) == 0
    assert run_replay(directory, server, "--rerun") == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[1] == f"replayed 3: accepted 3, failed again 0, {SKIPPED_MIXED}"
    assert sorted(server.accepted_ids().items()) == [("m1", 2), ("m2", 2), ("m3", 2)]
    expected = [record_of(one["message"]) for one in MIXED[:3]]
    assert list(delivered_records(directory).values()) == [expected, expected]
    assert run_replay(directory, server) == 0
    assert capsys.readouterr().out.strip().endswith(f"{SKIPPED_MIXED}, already delivered 3")


def test_a_message_corrected_in_its_letter_after_a_replay_is_sent_again(tmp_path, server, capsys):
    directory = write_letters(tmp_path / "dl", MIXED)
    assert run_replay(directory, server) == 0
    corrected = track("m2", opens=4)
    write_letters(directory, [MIXED[0], dict(MIXED[1], message=corrected)] + MIXED[2:])
    assert run_replay(directory, server) == 0
    assert capsys.readouterr().out.strip().splitlines()[1] == (
        f"replayed 1: accepted 1, failed again 0, {SKIPPED_MIXED}, already delivered 2")
    assert server.accepted[3:] == [corrected]
    assert server.accepted_ids()["m2"] == 2 and server.accepted_ids()["m1"] == 1
    assert [record_of(corrected)] in delivered_records(directory).values()


def test_the_same_letter_in_two_files_is_sent_once(tmp_path, server, capsys):
    directory = write_letters(tmp_path / "dl", MIXED[:3], name="dead_letters-20261202T050000Z-1a2b3c4d-0f3e9a1b.jsonl")
    write_letters(directory, [MIXED[1], letter("retries_exhausted", track("m9"))],
                  name="dead_letters-20261203T050000Z-5e6f7a8b-00c0ffee.jsonl")
    assert run_replay(directory, server) == 0
    assert capsys.readouterr().out.strip() == ("replayed 4: accepted 4, failed again 0, skipped 0, "
                                               "duplicate letters 1 (sent once)")
    assert sorted(server.accepted_ids().items()) == [("m1", 1), ("m2", 1), ("m3", 1), ("m9", 1)]
    assert sorted(one["message_id"] for one in sum(delivered_records(directory).values(), [])) == [
        "m1", "m2", "m3", "m9"]


def test_the_letters_of_every_run_in_the_folder_are_replayed(tmp_path, server, capsys):
    directory = str(tmp_path / "dl")
    runs = {"dead_letters-20261202T050000Z-1a2b3c4d-0f3e9a1b.jsonl": ["a1", "a2"],
            "dead_letters-20261202T050000Z-1a2b3c4d-7c0d2e11.jsonl": ["a3"],
            "dead_letters-20261203T061500Z-9e8f7a6b-0f3e9a1b.jsonl": ["b1", "b2"]}
    for name, ids in runs.items():
        write_letters(directory, [letter("retries_exhausted", track(one), http_status=503) for one in ids], name=name)
    assert run_replay(directory, server) == 0
    assert sorted(server.accepted_ids()) == ["a1", "a2", "a3", "b1", "b2"]
    assert capsys.readouterr().out.strip() == "replayed 5: accepted 5, failed again 0, skipped 0"


def large(message_id, size=20_000):
    """A track call whose compact JSON is exactly `size` bytes."""
    message = track(message_id, body="")
    message["properties"]["body"] = "x" * (size - len(compact(message)))
    assert len(compact(message)) == size
    return message


@pytest.mark.parametrize("args,limit,requests", [([], 475_000, 2), (["--max_batch_bytes", "100000"], 100_000, 10)])
def test_replay_requests_keep_the_size_margin(tmp_path, server, args, limit, requests):
    messages = [large(f"big{n:02d}") for n in range(40)]
    directory = write_letters(tmp_path / "dl", [letter("retries_exhausted", one) for one in messages])
    assert run_replay(directory, server, *args) == 0
    sizes = [request.body_bytes for request in server.requests]
    assert max(sizes) <= limit and len(sizes) == requests, sizes
    assert all(size + 20_001 > limit for size in sizes[:-1])  # full: one more message would not fit
    assert sizes[0] > 460_000 if not args else sizes[0] > 80_000
    assert server.accepted == messages and not server.violations


def test_an_interrupted_replay_keeps_what_it_recorded(tmp_path, server, capsys, monkeypatch):
    monkeypatch.setattr(replay, "CHUNK", 1)  # one send() per message
    directory = write_letters(tmp_path / "dl", MIXED)
    server.script(Answer(200), 401)  # m1 is taken, then the key is refused: the run stops
    assert run_replay(directory, server) == 1
    assert "401" in capsys.readouterr().err
    assert list(delivered_records(directory).values()) == [[record_of(MIXED[0]["message"])]]
    assert run_replay(directory, server) == 0
    assert capsys.readouterr().out.strip() == (f"replayed 2: accepted 2, failed again 0, {SKIPPED_MIXED}, "
                                               "already delivered 1")
    assert sorted(server.accepted_ids()) == ["m2", "m3"]


def test_two_letters_of_one_messageid_with_different_bodies_send_the_newest_once(tmp_path, server, capsys):
    older, newer = track("m7", opens=1), track("m7", opens=2)  # e.g. two runs with other --redact_fields
    directory = write_letters(tmp_path / "dl", [letter("retries_exhausted", older), letter("retries_exhausted",
                              track("m8"))], name="dead_letters-20261202T050000Z-1a2b3c4d-0f3e9a1b.jsonl")
    write_letters(directory, [letter("retries_exhausted", newer)],
                  name="dead_letters-20261203T050000Z-5e6f7a8b-00c0ffee.jsonl")
    assert run_replay(directory, server) == 0
    assert capsys.readouterr().out.strip() == ("replayed 2: accepted 2, failed again 0, skipped 0, superseded letters 1 "
                                               "(a newer letter of the same messageId was sent instead)")
    assert server.accepted == [track("m8"), newer]
    assert run_replay(directory, server) == 0  # the newest is delivered: nothing more, the older is still superseded
    assert capsys.readouterr().out.strip().endswith("already delivered 2, superseded letters 1 (a newer letter of the "
                                                    "same messageId was sent instead)")
    assert len(server.accepted) == 2


@pytest.mark.parametrize("line", [
    json.dumps(letter("bogus_reason", track("m5"))),
    json.dumps(letter("retries_exhausted", None) | {"message": "not a call"}),
    json.dumps(letter("retries_exhausted", None) | {"reason": ["retries_exhausted"]}),
])
def test_lines_that_are_not_letters_are_counted_as_unreadable_and_make_the_exit_status_2(tmp_path, server, capsys,
                                                                                          line):
    directory = write_letters(tmp_path / "dl", MIXED[:1], extra_lines=[line])
    assert run_replay(directory, server) == 2
    assert capsys.readouterr().out.strip() == ("replayed 1: accepted 1, failed again 0, skipped 0, unreadable lines 1 "
                                               "(left in the input)")
    assert server.accepted_ids() == {"m1": 1}


# --- destinations: a letter is replayed only to the Segment source it was meant for ---------------------------------

def to(endpoint, fingerprint):
    return {"endpoint": endpoint, "write_key": fingerprint}


def test_the_job_names_its_destination_in_every_letter_and_a_replay_with_another_key_sends_nothing(tmp_path, capsys):
    root = tmp_path / "bucket"
    make_sample_bucket(str(root), events_per_file=4)
    with SegmentServer(write_key=KEY) as down:
        down.always = 503
        status, _, letters = run_job(tmp_path, "--input", f"{root}/**", "--segment_endpoint", down.url,
                                     "--segment_write_key", KEY, "--max_retry_attempts", "1")
        endpoint = down.url
    assert status in (0, 3)
    assert {one["reason"] for one in letters} == {"retries_exhausted", "event_too_large", "unreadable_file"}
    assert all(one["destination"] == to(endpoint, KEY_FINGERPRINT) for one in letters)
    assert not glob.glob(str(tmp_path / "dead_letters" / ".*"))  # no temporary left behind
    exhausted = sum(one["reason"] == "retries_exhausted" for one in letters)
    capsys.readouterr()
    # Source B's letters, replayed with source A's key (on the same endpoint): refused, nothing sent.
    with SegmentServer(write_key=OTHER_KEY) as other:
        args = [str(tmp_path / "dead_letters"), "--segment_endpoint", other.url, "--segment_write_key", OTHER_KEY]
        assert replay.main(args) == 1
        assert other.requests == []
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        f"error: {exhausted} letters in {tmp_path / 'dead_letters'} are for another Segment destination than this "
        f"replay's ({other.url} key {OTHER_FINGERPRINT}): {exhausted} for {endpoint} key {KEY_FINGERPRINT}; "
        "nothing sent. Replay with the write key (and --segment_region or --segment_endpoint) of those letters, "
        "or give --to_other_destination to send them to this one"]
    assert KEY not in captured.err and OTHER_KEY not in captured.err


def test_a_dry_runs_letters_name_no_destination(tmp_path):
    root = tmp_path / "bucket"
    make_sample_bucket(str(root), events_per_file=4)
    status, _, letters = run_job(tmp_path, "--input", f"{root}/**", "--dry_run_output", str(tmp_path / "requests"))
    assert status == 0
    assert {one["reason"] for one in letters} == {"event_too_large", "unreadable_file"}
    assert all("destination" in one and one["destination"] is None for one in letters)


def test_letters_of_other_destinations_are_refused_with_one_line_saying_which(tmp_path, server, capsys):
    eu = "https://events.eu1.segmentapis.com"
    directory = write_letters(tmp_path / "dl", [
        letter("retries_exhausted", track("b1"), destination=to(server.url, OTHER_FINGERPRINT)),
        letter("retries_exhausted", track("b2"), destination=to(server.url + "/", OTHER_FINGERPRINT)),
        letter("rejected_by_segment", track("e1"), destination=to(eu, KEY_FINGERPRINT)),
        letter("retries_exhausted", track("a1"), destination=to(server.url, KEY_FINGERPRINT)),
        # Not replayed (its reason is not asked for): not counted.
        letter("event_too_large", track("b3"), destination=to(server.url, OTHER_FINGERPRINT)),
    ])
    assert run_replay(directory, server) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        f"error: 3 letters in {directory} are for another Segment destination than this replay's ({server.url} key "
        f"{KEY_FINGERPRINT}): 2 for {server.url} key {OTHER_FINGERPRINT}; 1 for {eu} key {KEY_FINGERPRINT}; "
        "nothing sent. Replay with the write key (and --segment_region or --segment_endpoint) of those letters, "
        "or give --to_other_destination to send them to this one"]
    assert server.requests == [] and delivered_records(directory) == {}


def test_letters_of_another_destination_already_delivered_do_not_stop_the_replay(tmp_path, server, capsys):
    directory = write_letters(tmp_path / "dl", [
        letter("retries_exhausted", track("b1"), destination=to(server.url, OTHER_FINGERPRINT)),
        letter("retries_exhausted", track("a1"), destination=to(server.url, KEY_FINGERPRINT))])
    with open(os.path.join(directory, "delivered-20260101T000000Z-0a0b0c0d.jsonl"), "w", encoding="utf-8") as stream:
        stream.write(json.dumps(record_of(track("b1"))) + "\n")
    assert run_replay(directory, server) == 0
    assert capsys.readouterr().out.strip() == ("replayed 1: accepted 1, failed again 0, skipped 0, "
                                               "already delivered 1")
    assert server.accepted == [track("a1")]


def test_to_other_destination_sends_them_here_on_purpose(tmp_path, server, capsys):
    directory = write_letters(tmp_path / "dl", [
        letter("retries_exhausted", track("b1"), destination=to(server.url, OTHER_FINGERPRINT)),
        letter("retries_exhausted", track("a1"), destination=to(server.url, KEY_FINGERPRINT))])
    assert run_replay(directory, server, "--to_other_destination") == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == "replayed 2: accepted 2, failed again 0, skipped 0"
    assert captured.err.splitlines() == [
        f"note: --to_other_destination: 1 letters of other destinations are sent to {server.url} key "
        f"{KEY_FINGERPRINT}"]
    assert server.accepted == [track("b1"), track("a1")]


def test_letters_without_a_destination_are_replayed_as_before(tmp_path, server, capsys):
    older = letter("retries_exhausted", track("o1"))  # written before letters named their destination
    del older["message_id"]
    directory = write_letters(tmp_path / "dl", [
        older,
        letter("retries_exhausted", track("d1"), destination=None),  # a dry run's
        letter("retries_exhausted", track("a1"), destination=to(server.url, KEY_FINGERPRINT))])
    assert run_replay(directory, server) == 0
    assert capsys.readouterr().out.strip() == "replayed 3: accepted 3, failed again 0, skipped 0"
    assert sorted(server.accepted_ids()) == ["a1", "d1", "o1"]


# --- budget, progress, interruption -----------------------------------------------------------------------------

def test_the_event_budget_paces_the_replay(tmp_path, server):
    messages = [track(f"p{n:02d}") for n in range(40)]
    directory = write_letters(tmp_path / "dl", [letter("retries_exhausted", one) for one in messages])
    assert run_replay(directory, server, "--max_events_per_second", "40", "--progress_seconds", "0") == 0
    # A quarter of a second of the budget per request, each after its quarter of a second.
    assert [request.events for request in server.requests] == [10, 10, 10, 10]
    assert server.requests[-1].received_at - server.requests[0].received_at >= 0.7
    assert server.accepted == messages


@pytest.mark.parametrize("flag,value", [("--max_events_per_second", "0"), ("--max_requests_per_second", "-1"),
                                        ("--progress_seconds", "-1")])
def test_a_bad_budget_or_progress_interval_stops_with_one_line(tmp_path, server, capsys, flag, value):
    directory = write_letters(tmp_path / "dl", MIXED)
    assert run_replay(directory, server, flag, value) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {flag} must be ") and server.requests == []


def test_the_replay_shows_its_progress_on_stderr(tmp_path, server, capsys):
    directory = write_letters(tmp_path / "dl", [letter("retries_exhausted", track(f"p{n:02d}")) for n in range(40)])
    assert run_replay(directory, server, "--max_events_per_second", "40", "--progress_seconds", "0.1") == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == "replayed 40: accepted 40, failed again 0, skipped 0"
    lines = captured.err.splitlines()
    assert len(lines) >= 5
    shown = []
    for line in lines:
        found = re.fullmatch(r"progress 0:00:0\d  sent (\d+) \(\d+/s\)  failed 0  left (\d+)", line)
        assert found, line
        shown.append((int(found[1]), int(found[2])))
    assert all(sent + left == 40 for sent, left in shown)
    assert any(0 < sent < 40 for sent, _ in shown)  # while it sends
    assert [sent for sent, _ in shown] == sorted(sent for sent, _ in shown)


class _StopsAtSend(replay.SegmentClient):
    """A client that receives `signum` as it begins its send number `at` (1-based)."""

    sends, at, signum = 0, 2, signal.SIGTERM

    def send(self, payloads, observer=None):
        type(self).sends += 1
        if type(self).sends == self.at:
            os.kill(os.getpid(), self.signum)
        return super().send(payloads, observer)


@pytest.mark.parametrize("signum,name,status", [(signal.SIGTERM, "SIGTERM", 143), (signal.SIGINT, "Ctrl-C", 130)])
def test_a_signal_stops_the_replay_with_one_line_keeping_what_was_delivered(tmp_path, server, capsys, monkeypatch,
                                                                           signum, name, status):
    monkeypatch.setattr(replay, "CHUNK", 1)  # one send() per message
    monkeypatch.setattr(_StopsAtSend, "sends", 0)
    monkeypatch.setattr(_StopsAtSend, "signum", signum)
    monkeypatch.setattr(replay, "SegmentClient", _StopsAtSend)
    directory = write_letters(tmp_path / "dl", MIXED)
    before = signal.getsignal(signum)
    assert run_replay(directory, server, "--progress_seconds", "0") == status
    assert signal.getsignal(signum) is before  # the handlers are given back
    captured = capsys.readouterr()
    [(record_name, records)] = delivered_records(directory).items()
    assert records == [record_of(MIXED[0]["message"])]
    assert captured.out == ""
    assert captured.err.splitlines() == [
        f"interrupted ({name}): sent 1, failed again 0, left 2; what was delivered is recorded in "
        f"{os.path.join(directory, record_name)}; replay the folder again to send the rest"]
    assert [os.path.basename(path) for path in glob.glob(os.path.join(tmp_path, "**", "*"), recursive=True)
            if ".tmp" in path] == []
    monkeypatch.setattr(replay, "SegmentClient", replay.SegmentClient.__mro__[1])
    assert run_replay(directory, server, "--progress_seconds", "0") == 0
    assert capsys.readouterr().out.strip() == (f"replayed 2: accepted 2, failed again 0, {SKIPPED_MIXED}, "
                                               "already delivered 1")
    assert sorted(server.accepted_ids().items()) == [("m1", 1), ("m2", 1), ("m3", 1)]


def test_ctrl_c_at_the_terminal_ends_the_replay_with_one_line_and_status_130(tmp_path):
    directory = write_letters(tmp_path / "dl", MIXED)
    with SegmentServer(write_key=KEY, latency=30) as slow:  # the first request hangs
        process = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "replay-dead-letters", directory, "--segment_endpoint", slow.url,
             "--segment_write_key", KEY], cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not slow.requests and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        assert slow.requests, process.communicate(timeout=5)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 130
    assert out == ""
    assert err.splitlines() == ["interrupted (Ctrl-C): sent 0, failed again 0, left 3; replay the folder again to "
                                "send the rest"]


# --- temporary files of interrupted runs ------------------------------------------------------------------------

def _write_one_line_then(tmp_path, ending):
    """Run a process that writes one dead letter to an uncommitted part file of tmp_path/dl, then ends by
    `ending` (Python source); the names of the files it left in tmp_path/dl."""
    script = ("import os, signal, sys\n"
              "from currents_to_segment.transforms import jsonl\n"
              f"part = jsonl.PartFile({str(tmp_path / 'dl')!r}, jsonl.DEAD_LETTERS, '20260101T000000Z-0a0b0c0d', "
              "'dead letters')\n"
              "part.write('{}')\n"
              f"{ending}\n")
    os.makedirs(tmp_path / "dl", exist_ok=True)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    return done, sorted(os.listdir(tmp_path / "dl"))


@pytest.mark.parametrize("ending", ["raise KeyboardInterrupt", "sys.exit(1)", "os.kill(os.getpid(), signal.SIGINT)"])
def test_a_process_that_stops_leaves_no_temporary_letter_file(tmp_path, ending):
    done, left = _write_one_line_then(tmp_path, ending)
    assert done.returncode != 0 and left == []


def test_temporaries_of_killed_processes_of_this_host_are_removed_by_the_next_replay(tmp_path, server, capsys):
    done, left = _write_one_line_then(tmp_path, "os.kill(os.getpid(), signal.SIGKILL)")
    assert done.returncode == -signal.SIGKILL
    [killed] = left
    assert re.fullmatch(r"\.dead_letters-20260101T000000Z-0a0b0c0d-[0-9a-f]{12}\.jsonl\.\d+@.+\.tmp", killed)
    directory = write_letters(tmp_path / "dl", MIXED[:1])
    host = killed.rpartition("@")[2][:-len(".tmp")]
    kept = [f".dead_letters-r-0a.jsonl.{os.getpid()}@{host}.tmp",  # a process that runs
            ".dead_letters-r-0b.jsonl.1@another-host.tmp",  # another host's: cannot tell
            ".dead_letters-r-0c.jsonl.tmp"]  # an older version's, without its writer
    for name in kept:
        with open(os.path.join(directory, name), "w", encoding="utf-8") as stream:
            stream.write(json.dumps(letter("retries_exhausted", track("t1"))) + "\n")
    assert run_replay(directory, server, "--progress_seconds", "0") == 0
    assert capsys.readouterr().out.strip() == "replayed 1: accepted 1, failed again 0, skipped 0"
    assert server.accepted_ids() == {"m1": 1}  # temporaries are never letters
    assert sorted(name for name in os.listdir(directory) if name.endswith(".tmp")) == sorted(kept)


def test_a_writer_discards_its_uncommitted_lines_and_their_temporary(tmp_path):
    lines = jsonl.AccountedLines(str(tmp_path), jsonl.DEAD_LETTERS, "run", "dead letters")
    lines.write("{}", (("file", 1),))
    assert len(os.listdir(tmp_path)) == 1
    lines.discard()
    assert os.listdir(tmp_path) == []
    lines.write('{"a": 1}', (("file", 2),))
    assert lines.commit() == [("file", 2)]  # what was discarded is not accounted for
    assert read_jsonl(tmp_path, "dead_letters") == [{"a": 1}]
