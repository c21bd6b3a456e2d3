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
from tests.segment_server import SegmentServer

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
    root, manifest = bucket
    with SegmentServer(write_key=KEY) as server:
        server.always = 503
        status, summary, letters = run_job(tmp_path, "--input", f"{root}/**", "--segment_endpoint", server.url,
                                           "--segment_write_key", KEY, "--max_retry_attempts", "2",
                                           "--retry_backoff_seconds", "0.001")
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 3
    assert err[-1].startswith("error: Segment stayed unreachable") and "replay-dead-letters" in err[-1]
    exhausted = [letter for letter in letters if letter["reason"] == "retries_exhausted"]
    assert all(letter["http_status"] == 503 for letter in exhausted)
    assert received_calls(letter["message"] for letter in exhausted) == expected_calls(manifest)
    assert summary["sent"] == 0
    assert_balanced(summary)
    assert json.dumps(summary).count("retries_exhausted") == 0  # the summary keeps its documented keys


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


def test_an_outage_longer_than_the_budget_costs_one_budget_and_the_rest_is_dead_lettered(tmp_path, bucket):
    root, manifest = bucket
    with SegmentServer(write_key=KEY) as server:
        server.always = 503
        started = time.monotonic()
        status, summary, letters = run_job(tmp_path, "--input", f"{root}/**", "--segment_endpoint", server.url,
                                           "--segment_write_key", KEY, "--quiet", "--max_retry_seconds", "3",
                                           "--retry_backoff_seconds", "0.2")
        elapsed = time.monotonic() - started
    assert status == 3 and summary["sent"] == 0
    exhausted = [letter for letter in letters if letter["reason"] == "retries_exhausted"]
    assert received_calls(letter["message"] for letter in exhausted) == expected_calls(manifest)
    assert elapsed < 3 + 20  # one budget for the whole run, not one per request (there are many requests)
    assert_balanced(summary)
