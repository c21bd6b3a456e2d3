"""Whole pipelines through a flaky Segment: nothing lost, nothing extra, no limit broken, no hang."""
import json
import os
import re
import subprocess
import sys
import time

import pytest

from currents_to_segment.pipeline.sample_bucket import make_sample_bucket
from tests.pipeline_runs import assert_balanced, expected_calls, read_jsonl, received_calls, run_job
from tests.segment_server import Answer, SegmentServer
from tests.test_reprocessing import ledger_entries

KEY = "fault-test-key"
SAMPLE_BUCKET = {"events_per_file": 8}
FAST_RETRIES = ("--max_retry_attempts", "40", "--retry_backoff_seconds", "0.001",
                "--request_timeout_seconds", "0.5", "--max_batch_events", "40")


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.6])
def test_every_event_arrives_at_least_once_at_any_fault_rate(tmp_path, bucket, rate):
    root, manifest = bucket
    with SegmentServer(write_key=KEY) as server:
        server.inject_faults(rate, seed=int(rate * 100), stall_seconds=1.0)
        status, summary, letters = run_job(tmp_path, "--input", f"{root}/**", "--segment_endpoint", server.url,
                                           "--segment_write_key", KEY, *FAST_RETRIES)
        faulted = sum(1 for r in server.requests if r.status != 200)
        received = received_calls(server.accepted)
    expected = expected_calls(manifest)
    assert status == 0
    assert set(received) == set(expected)  # everything arrived, and nothing else did
    assert not server.violations
    assert faulted > 0 and summary["requests"] == len(server.requests)  # every attempt, counted once
    assert [letter["reason"] for letter in letters if letter["reason"] != "unreadable_file"] == ["event_too_large"]
    assert summary["sent"] == sum(expected.values())
    assert_balanced(summary)


def test_segment_down_ends_the_run_with_one_line_and_every_event_dead_lettered(tmp_path, bucket, capsys):
    summary, exhausted, _ = exhausted_against(tmp_path, bucket, 503, "--max_retry_attempts", "2",
                                              "--retry_backoff_seconds", "0.001")
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: Segment stayed unreachable") and "replay-dead-letters" in err[-1]
    assert all(letter["http_status"] == 503 for letter in exhausted)
    assert_balanced(summary)
    # The summary says it by reason: these letters, the bucket's oversize event and its broken files' parts.
    assert summary["dead_letters_by_reason"] == {"retries_exhausted": len(exhausted), "event_too_large": 1,
                                                 "unreadable_file": summary["unreadable_files"]}
    assert (summary["exit_code"], summary["outcome"]) == (3, "segment_unreachable")


# --- outages: the worker waits; only an outage longer than the budget dead-letters ---------------------------

def job_process(args):
    """The job in a process of its own, its progress and warnings on stderr."""
    return subprocess.Popen([sys.executable, "-m", "pipeline", "--runner=FnApiRunner", *args],
                            env={**os.environ, "SEGMENT_WRITE_KEY": KEY}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def clock_seconds(text):
    """Seconds since midnight UTC of an HH:MM:SS UTC time, and of a UNIX time."""
    hours, minutes, seconds = map(int, text.split(":"))
    return hours * 3600 + minutes * 60 + seconds


def of_day(unix_seconds):
    return unix_seconds % 86400


@pytest.mark.parametrize("kind", [503, "drop", "hang"])
def test_an_outage_shorter_than_the_retry_budget_dead_letters_nothing(tmp_path, bucket, kind):
    """Segment down (refusing, dropping connections, or not answering) for 6 s of a run with a 20 s budget: the
    request waiting in it goes through when Segment is back, and so does everything after it. (Its first retries
    come fast: a budget of attempts, 8 by default once, would be spent in about 3 s.)"""
    root, manifest = bucket
    with SegmentServer(write_key=KEY) as server:
        server.outage(6, kind)
        job = job_process(["--input", f"{root}/**", "--segment_endpoint", server.url, "--quiet",
                           "--dead_letter_output", str(tmp_path / "dead"), "--summary_output", str(tmp_path / "s.json"),
                           "--max_retry_seconds", "20", "--retry_backoff_seconds", "0.05",
                           "--request_timeout_seconds", "2"])
        _, err = job.communicate(timeout=240)
        received = received_calls(server.accepted)
        failed = [r for r in server.requests if r.status != 200]
    summary = json.loads((tmp_path / "s.json").read_text())
    assert job.returncode == 0, err
    assert failed and set(received) == set(expected_calls(manifest))
    assert summary["dead_lettered"] == 1 and summary["sent"] == sum(expected_calls(manifest).values())
    assert [l["reason"] for l in read_jsonl(tmp_path / "dead", "dead_letters")
            if l["reason"] != "unreadable_file"] == ["event_too_large"]
    assert_balanced(summary)


def test_a_hang_is_warned_about_after_one_timeout_with_the_right_since_and_after(tmp_path, bucket):
    root, _ = bucket
    with SegmentServer(write_key=KEY) as server:
        server.outage(7, "hang")
        job = job_process(["--input", f"{root}/**", "--segment_endpoint", server.url, "--quiet",
                           "--dead_letter_output", str(tmp_path / "dead"), "--max_retry_seconds", "30",
                           "--retry_backoff_seconds", "0.2", "--request_timeout_seconds", "2"])
        stderr_lines = []
        for line in job.stderr:
            stderr_lines.append((time.time(), line.rstrip("\n")))
        job.wait(timeout=240)
        first_hung = min(r.received_at for r in server.requests)
    assert job.returncode == 0, stderr_lines
    warned_at, warning = next((at, line) for at, line in stderr_lines if line.startswith("warning: Segment has failed"))
    assert re.match(r"warning: Segment has failed 1 attempt in a row since \d\d:\d\d:\d\d UTC \(last: ReadTimeout: "
                    r"no answer within 2 s; attempt 1 of this request\); each request is retried for up to 30 s per "
                    r"request, then its events are dead-lettered as retries_exhausted$", warning), warning
    assert warned_at - first_hung < 2 + 3  # one request timeout, and a few seconds
    since = clock_seconds(re.search(r"since (\d\d:\d\d:\d\d) UTC", warning).group(1))
    assert abs(since - of_day(first_hung)) <= 1
    recovered = next(line for _, line in stderr_lines if line.startswith("Segment answers again"))
    stalled = clock_seconds(re.search(r"after (\d+:\d\d:\d\d) of failures", recovered).group(1))
    assert 7 - 1 <= stalled <= 7 + 2 + 2, recovered  # the hang, and at most one more timeout and backoff


def exhausted_against(tmp_path, bucket, always, *args):
    """A run against a Segment that always answers `always`, which must end with exit 3 and every event a
    retries_exhausted letter; (its summary, those letters, the seconds it took)."""
    root, manifest = bucket
    with SegmentServer(write_key=KEY) as server:
        server.always = always
        started = time.monotonic()
        status, summary, letters = run_job(tmp_path, "--input", f"{root}/**", "--segment_endpoint", server.url,
                                           "--segment_write_key", KEY, "--quiet", *args)
        elapsed = time.monotonic() - started
    assert status == 3 and summary["sent"] == 0
    exhausted = [letter for letter in letters if letter["reason"] == "retries_exhausted"]
    assert received_calls(letter["message"] for letter in exhausted) == expected_calls(manifest)
    return summary, exhausted, elapsed


def test_an_outage_longer_than_the_budget_costs_one_budget_and_the_rest_is_dead_lettered(tmp_path, bucket):
    summary, _, elapsed = exhausted_against(tmp_path, bucket, 503, "--max_retry_seconds", "3",
                                            "--retry_backoff_seconds", "0.2")
    assert elapsed < 3 + 20  # one budget for the whole run, not one per request (there are many requests)
    assert_balanced(summary)


# --- nothing wrong reaches Segment, nothing hangs ----------------------------------------------------------------

def test_a_200_that_is_not_segments_answer_stops_the_run_records_nothing_and_a_rerun_sends_everything(
        tmp_path, bucket, capsys):
    root, manifest = bucket
    ledger = str(tmp_path / "ledger")
    args = ("--input", f"{root}/**", "--segment_write_key", KEY, "--quiet", "--ledger", ledger)
    (tmp_path / "first").mkdir()
    (tmp_path / "again").mkdir()
    with SegmentServer(write_key=KEY) as proxy:
        proxy.always = Answer(200, {"Content-Type": "text/html"}, "<html><body>Welcome to nginx!</body></html>")
        status, _, _ = run_job(tmp_path / "first", "--segment_endpoint", proxy.url, *args)
    err = capsys.readouterr().err
    assert status == 1
    assert (f"Segment answered 200 OK for {proxy.url}/v1/batch with a body that is not Segment's "
            "('<html><body>Welcome to nginx!</body></html>'): the endpoint is not Segment's API") in err
    assert ledger_entries(ledger) == []
    with SegmentServer(write_key=KEY) as server:
        status, summary, _ = run_job(tmp_path / "again", "--segment_endpoint", server.url, *args)
        received = received_calls(server.accepted)
    assert status == 0 and received == expected_calls(manifest)
    assert summary["sent"] == sum(expected_calls(manifest).values())
    assert ledger_entries(ledger) != []


def test_a_retry_after_longer_than_the_budget_ends_the_run_within_the_budget(tmp_path, bucket):
    summary, exhausted, elapsed = exhausted_against(tmp_path, bucket, Answer(429, {"Retry-After": "99999"}),
                                                    "--max_retry_seconds", "3")
    assert {letter["http_status"] for letter in exhausted} == {429}
    assert elapsed < 40  # Retry-After asked for 99,999 s (300 once capped): waited for 3 s at most at a time
    assert_balanced(summary)


@pytest.mark.parametrize("trickle", ["trickle_body", "trickle_headers"])
def test_an_answer_trickling_in_is_a_timeout_and_the_run_ends(tmp_path, bucket, trickle):
    """A byte (or a header line) a second is within any read timeout: only the deadline of a whole attempt, the
    --request_timeout_seconds, ends each attempt."""
    summary, _, elapsed = exhausted_against(tmp_path, bucket, trickle, "--max_retry_seconds", "4",
                                            "--request_timeout_seconds", "2")
    assert elapsed < 45  # an attempt is cut off at 2 s, a request retried for 4 s, then the breaker stops the rest
    assert_balanced(summary)


def test_a_segment_refusing_everything_is_noticed_after_a_few_requests(tmp_path, bucket, capsys):
    root, manifest = bucket
    with SegmentServer(write_key=KEY) as server:
        server.always = 413
        status, summary, letters = run_job(tmp_path, "--input", f"{root}/**", "--segment_endpoint", server.url,
                                           "--segment_write_key", KEY, "--quiet")
        requests_made = len(server.requests)
    assert status == 6 and summary["sent"] == 0
    assert "Segment rejected every event it was sent" in capsys.readouterr().err
    rejected = [letter for letter in letters if letter["reason"] == "rejected_by_segment"]
    assert {letter["http_status"] for letter in rejected} == {413}
    assert received_calls(letter["message"] for letter in rejected) == expected_calls(manifest)
    assert sum(expected_calls(manifest).values()) > 400
    assert requests_made <= 40  # splitting each request down to single events made about two per event
    assert_balanced(summary)
