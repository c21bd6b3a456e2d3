"""Whole pipelines through a flaky Segment: nothing lost, nothing extra, no limit broken, no hang."""
import json

import pytest

from pipeline.sample_bucket import make_sample_bucket
from tests.pipeline_runs import assert_balanced, expected_calls, received_calls, run_job
from tests.segment_server import SegmentServer

KEY = "fault-test-key"
FAST_RETRIES = ("--max_retry_attempts", "40", "--retry_backoff_seconds", "0.001",
                "--request_timeout_seconds", "0.5", "--max_batch_events", "40")


@pytest.fixture(scope="module")
def bucket(tmp_path_factory):
    root = tmp_path_factory.mktemp("bucket")
    return str(root), make_sample_bucket(str(root), events_per_file=8)


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
    assert faulted > 0 and summary["requests"] >= len(server.requests) - 1
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
