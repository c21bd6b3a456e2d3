"""Whole pipelines on generated Currents buckets, sending to a Segment-compatible server on loopback."""
import gzip
import json
import uuid

import pytest

from currents_to_segment.pipeline.sample_bucket import make_sample_bucket
from tests.pipeline_runs import assert_balanced, expected_calls, read_jsonl, received_calls, run_job
from tests.segment_server import Answer, SegmentServer

KEY = "test-write-key-0123456789"
SAMPLE_BUCKET = {"events_per_file": 12}


def send(tmp_path, bucket_root, server, *args):
    return run_job(tmp_path, "--input", f"{bucket_root}/**", "--segment_endpoint", server.url,
                   "--segment_write_key", KEY, *args)


def test_every_expected_call_arrives_and_the_traps_are_dead_lettered(tmp_path, bucket, server):
    root, manifest = bucket
    status, summary, letters = send(tmp_path, root, server)

    assert status == 0
    assert received_calls(server.accepted) == expected_calls(manifest)
    assert not server.violations
    assert all(r.status == 200 for r in server.requests)

    by_reason = {}
    for letter in letters:
        by_reason.setdefault(letter["reason"], []).append(letter)
    assert sorted(by_reason) == ["event_too_large", "unreadable_file"]
    assert [l["message_id"] for l in by_reason["event_too_large"]] == manifest["oversize_ids"]
    assert len(json.dumps(by_reason["event_too_large"][0]["message"])) > 32_000
    assert sorted(l["source_file"] for l in by_reason["unreadable_file"]) == sorted(manifest["broken_files"])
    assert all(l["error"] for l in letters)

    records = manifest["records"]
    assert summary["events_read"] == len(records)
    assert summary["sent"] == sum(expected_calls(manifest).values())
    assert summary["dead_lettered"] == 1
    assert summary["unreadable_files"] == 2
    assert summary["unsupported_event_type"] == sum(
        1 for r in records if r["event_type"] in ("users.messages.email.Deferral",
                                                   "users.behaviors.subscription.GlobalStateChange")
        and r["record"]["external_user_id"])
    assert summary["requests"] == len(server.requests)
    assert len(summary["by_event_type"]) == 34 + 2
    assert_balanced(summary)


def test_small_limits_make_many_requests_none_over_them(tmp_path, bucket, server):
    root, manifest = bucket
    status, summary, _ = send(tmp_path, root, server, "--max_batch_bytes", "34000", "--max_batch_events", "7",
                              "--window_seconds", "600")
    assert status == 0
    assert received_calls(server.accepted) == expected_calls(manifest)
    assert not server.violations
    assert max(r.events for r in server.requests) <= 7
    assert max(r.body_bytes for r in server.requests) <= 34_000
    assert summary["requests"] == len(server.requests) > summary["sent"] / 7
    assert_balanced(summary)


def test_transient_failures_are_retried_and_a_poison_event_is_isolated(tmp_path, bucket, server):
    root, manifest = bucket
    poison_id = next(r["record"]["id"] for r in manifest["records"]
                     if r["event_type"] == "users.canvas.Entry" and r["record"]["external_user_id"])
    server.poison = lambda event: event["messageId"] == poison_id
    server.script(Answer(429, headers={"Retry-After": "1"}), 503, "drop", "accept_then_fail")
    status, summary, letters = send(tmp_path, root, server)

    assert status == 0
    expected = expected_calls(manifest)
    received = received_calls(server.accepted)
    # Retries may deliver an event twice (accept_then_fail), always with the same messageId.
    assert set(received) == {call for call in expected if poison_id not in call}
    assert not server.violations
    poisoned = [l for l in letters if l["message_id"] == poison_id]
    assert len(poisoned) == 1 and poisoned[0]["reason"] == "rejected_by_segment"
    assert poisoned[0]["http_status"] == 400 and "invalid event" in poisoned[0]["response_excerpt"]
    assert poisoned[0]["message"]["event"] == "Canvas Entered"
    assert any(r.retry_count and r.retry_count > 0 for r in server.requests)
    assert summary["dead_lettered"] == 2  # the poison event and the oversize one
    assert_balanced(summary)


def test_a_wrong_write_key_stops_the_run_with_one_line(tmp_path, bucket, server, capsys):
    root, _ = bucket
    status, _, _ = run_job(tmp_path, "--input", f"{root}/**", "--segment_endpoint", server.url,
                           "--segment_write_key", "wrong-key-abcdef")
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1
    assert err[-1].startswith("error: Segment answered 401")
    assert "wrong-key-abcdef" not in "\n".join(err)
    assert server.accepted == []


def test_dry_run_writes_the_exact_request_bodies_and_needs_no_key(tmp_path, bucket, monkeypatch):
    root, manifest = bucket
    monkeypatch.delenv("SEGMENT_WRITE_KEY", raising=False)
    out = tmp_path / "requests"
    status, summary, _ = run_job(tmp_path, "--input", f"{root}/**", "--dry_run_output", str(out))
    bodies = read_jsonl(out, "requests")
    assert status == 0
    assert received_calls(m for body in bodies for m in body["batch"]) == expected_calls(manifest)
    assert summary["requests"] == len(bodies)
    assert all(body["writeKey"] == "" and body["sentAt"].endswith("Z") for body in bodies)
    raw = [line for path in sorted(out.glob("requests-*.jsonl")) for line in path.read_bytes().splitlines()]
    assert max(len(line) for line in raw) <= 475_000
    assert_balanced(summary)


def test_fail_on_dead_letters_exits_2(tmp_path, bucket):
    root, _ = bucket
    status, summary, _ = run_job(tmp_path, "--input", f"{root}/**", "--dry_run_output", str(tmp_path / "r"),
                                 "--fail_on_dead_letters")
    assert status == 2 and summary["dead_lettered"] == 1


def test_message_id_namespace_and_passthrough(tmp_path, bucket):
    root, manifest = bucket
    out = tmp_path / "requests"
    status, _, _ = run_job(tmp_path, "--input", f"{root}/**/event_type=users.messages.email.Click/**",
                           "--dry_run_output", str(out), "--message_id_namespace", "source-b",
                           "--passthrough_fields")
    messages = [m for body in read_jsonl(out, "requests") for m in body["batch"]]
    clicks = [e["record"] for e in manifest["records"] if e["event_type"] == "users.messages.email.Click"
              and (e["record"]["external_user_id"] or "").strip()]
    # The README: a namespace that is not a UUID is first hashed with uuid5(NAMESPACE_URL, namespace).
    namespace = uuid.uuid5(uuid.NAMESPACE_URL, "source-b")
    assert status == 0 and len(messages) == len(clicks) > 0
    assert sorted(m["messageId"] for m in messages) == sorted(str(uuid.uuid5(namespace, r["id"])) for r in clicks)
    assert sorted(m["properties"]["user_id"] for m in messages) == sorted(r["user_id"] for r in clicks)
