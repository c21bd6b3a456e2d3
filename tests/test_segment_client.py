"""Tests of transforms.segment (the client) against the Segment-compatible loopback server (tests.segment_server)."""
from __future__ import annotations

import dataclasses
import email.utils
import json
import socket
import time
from datetime import datetime, timedelta, timezone

import pytest
import requests
from hypothesis import given, strategies as st

from tests.segment_server import Answer, SegmentServer
from currents_to_segment.transforms.segment.api import (
    DEFAULT_MAX_REQUEST_BYTES, MAX_BATCH_EVENTS, MAX_EVENT_BYTES, MAX_REQUEST_BYTES, Rejection, SegmentConfigError,
    envelope_bytes, format_sent_at, request_body)
from currents_to_segment.transforms.segment.client import ClientSettings, SegmentClient
from currents_to_segment.transforms.segment.pacing import OUTAGE_PROBE_SECONDS

WRITE_KEY = "test-key-s3cr3t"


def track(number: int, **properties) -> dict:
    """A valid Segment track event."""
    return {"type": "track", "event": "Email Sent", "userId": f"user-{number}", "messageId": f"m-{number}",
            "timestamp": "2026-11-28T10:00:00.000Z", "properties": properties}


def serialize(event: dict) -> bytes:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()


def serialized_events(count: int, **properties) -> list[bytes]:
    return [serialize(track(number, **properties)) for number in range(count)]


class FakeTime:
    """A clock that only sleeping advances; sleeps are recorded instead of waited for."""

    def __init__(self):
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        time.sleep(0.002)  # just enough for the next attempt's millisecond sentAt to differ

    def clock(self) -> float:
        return self.now


@pytest.fixture
def fake_time():
    return FakeTime()


@pytest.fixture
def make_client(server, fake_time):
    """Build clients aimed at the loopback server, with tiny deterministic backoff (rng always 1.0)."""
    clients = []

    def make(endpoint: str | None = None, write_key: str = WRITE_KEY, **options) -> SegmentClient:
        fields = {field.name for field in dataclasses.fields(ClientSettings)}
        settings = ClientSettings(**({"endpoint": endpoint or server.url, "timeout": (1.0, 2.0), "backoff_base": 0.01,
                                      "backoff_cap": 0.1} | {k: v for k, v in options.items() if k in fields}))
        others = {"sleep": fake_time.sleep, "clock": fake_time.clock, "rng": lambda: 1.0}
        client = SegmentClient(write_key, settings, **(others | {k: v for k, v in options.items() if k not in fields}))
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def post_raw(server: SegmentServer, body: bytes, write_key: str = WRITE_KEY, path: str = "/v1/batch"):
    return requests.post(server.url + path, data=body, auth=(write_key, ""), timeout=5)


def raw_body(events: list[dict]) -> bytes:
    return request_body([serialize(event) for event in events], WRITE_KEY, format_sent_at(datetime.now(timezone.utc)))


# --- body assembly ---------------------------------------------------------------------------------------------

def test_format_sent_at_is_utc_with_milliseconds():
    assert format_sent_at(datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)) == "2026-11-28T12:00:00.000Z"
    paris = timezone(timedelta(hours=1))
    assert format_sent_at(datetime(2026, 11, 28, 13, 0, 5, 123_987, tzinfo=paris)) == "2026-11-28T12:00:05.123Z"


@given(st.lists(st.dictionaries(st.text(), st.text()), max_size=20), st.text(min_size=1))
def test_body_is_valid_json_and_its_size_follows_the_envelope_formula(events, write_key):
    payloads = [serialize(event) for event in events]
    body = request_body(payloads, write_key, "2026-11-28T12:00:00.000Z")
    assert json.loads(body) == {"batch": events, "sentAt": "2026-11-28T12:00:00.000Z", "writeKey": write_key}
    expected = envelope_bytes(write_key) + sum(map(len, payloads)) + max(len(payloads) - 1, 0)
    assert len(body) == expected


# --- good path -------------------------------------------------------------------------------------------------

def test_batch_arrives_gzipped_authenticated_and_byte_exact(server, make_client):
    payloads = serialized_events(5, channel="email")
    report = make_client().send(payloads)

    assert (report.accepted, report.rejected, report.requests, report.retries) == ([0, 1, 2, 3, 4], [], 1, 0)
    [record] = server.requests
    assert record.headers["Content-Encoding"] == "gzip"
    assert record.headers["Content-Type"] == "application/json"
    assert record.retry_count == 0
    assert record.raw_bytes < record.body_bytes
    assert record.body == request_body(payloads, WRITE_KEY, record.sent_at)
    assert record.body_bytes == envelope_bytes(WRITE_KEY) + sum(map(len, payloads)) + len(payloads) - 1
    assert server.accepted == [track(number, channel="email") for number in range(5)]
    assert not server.violations


def test_3000_tiny_events_are_split_at_2500_per_request(server, make_client):
    report = make_client().send(serialized_events(3_000))

    assert sorted(report.accepted) == list(range(3_000))
    assert [record.events for record in server.requests] == [MAX_BATCH_EVENTS, 500]
    assert set(server.accepted_ids().values()) == {1}
    assert not server.violations


def test_large_events_are_packed_into_requests_under_500000_bytes(server, make_client):
    payloads = serialized_events(50, padding="x" * 19_900)
    report = make_client(max_request_bytes=MAX_REQUEST_BYTES).send(payloads)

    assert sorted(report.accepted) == list(range(50))
    assert all(record.body_bytes <= MAX_REQUEST_BYTES for record in server.requests)
    full_requests = server.requests[:-1]
    assert all(record.body_bytes + len(payloads[0]) + 1 > MAX_REQUEST_BYTES for record in full_requests)
    assert not server.violations


def test_requests_keep_the_475000_byte_margin_by_default(server, make_client):
    payloads = serialized_events(50, padding="x" * 19_900)
    report = make_client().send(payloads)

    assert sorted(report.accepted) == list(range(50))
    assert max(record.body_bytes for record in server.requests) <= DEFAULT_MAX_REQUEST_BYTES
    assert all(record.body_bytes + len(payloads[0]) + 1 > DEFAULT_MAX_REQUEST_BYTES
               for record in server.requests[:-1])


def test_after_one_request_used_up_its_budget_the_next_ones_wait_for_a_probe_until_segment_answers(
        server, make_client, fake_time):
    seen = []
    client = make_client(max_attempts=3, observer=seen.append, max_events=2)
    server.always = 503
    report = client.send(serialized_events(6))  # three requests: the first uses the budget, two are not sent
    assert [record.retry_count for record in server.requests] == [0, 1, 2]
    assert [r.reason for r in report.rejected] == ["retries_exhausted"] * 6 and report.requests == 3
    assert [(a.status, a.retrying, a.attempt) for a in seen] == [(503, True, 1), (503, True, 2), (503, False, 3)]
    assert "not sent: Segment's last answers failed (last: 503" in report.rejected[-1].response_excerpt
    assert report.rejected[-1].status == 503

    fake_time.now += OUTAGE_PROBE_SECONDS  # one probe, still failing: one attempt, no retry
    report = client.send(serialized_events(4))
    assert [record.retry_count for record in server.requests][3:] == [0] and len(report.rejected) == 4

    server.always = None
    fake_time.now += OUTAGE_PROBE_SECONDS
    report = client.send(serialized_events(4))
    assert sorted(report.accepted) == [0, 1, 2, 3] and seen[-1].status == 200 and not seen[-1].failed
    server.always = 503
    client.send(serialized_events(1))  # answered since: a full budget again
    assert [record.retry_count for record in server.requests][-3:] == [0, 1, 2]


def test_requests_are_paced(server, make_client, fake_time):
    client = make_client(max_requests_per_second=10)
    for _ in range(3):
        client.send(serialized_events(1))

    assert fake_time.sleeps == [pytest.approx(0.1), pytest.approx(0.1)]


# --- transient failures ----------------------------------------------------------------------------------------

def test_429_with_retry_after_is_honoured_and_retried_with_fresh_sent_at(server, make_client, fake_time):
    server.script(Answer(429, {"Retry-After": "2"}))
    report = make_client().send(serialized_events(3))

    assert report.accepted == [0, 1, 2] and report.retries == 1
    assert [record.retry_count for record in server.requests] == [0, 1]
    assert server.requests[0].sent_at != server.requests[1].sent_at
    assert fake_time.sleeps[0] >= 2
    assert set(server.accepted_ids().values()) == {1}


def http_date_in(seconds: float) -> str:
    return email.utils.format_datetime(datetime.now(timezone.utc) + timedelta(seconds=seconds), usegmt=True)


@pytest.mark.parametrize("retry_after, low, high", [
    (lambda: "100000", 300, 300),
    (lambda: http_date_in(30), 28, 30),
])
def test_retry_after_accepts_http_dates_and_is_capped(server, make_client, fake_time, retry_after, low, high):
    server.script(Answer(503, {"Retry-After": retry_after()}))
    make_client(max_retry_seconds=1_000).send(serialized_events(1))

    assert low <= fake_time.sleeps[0] <= high


@pytest.mark.parametrize("failure", [503, "drop", "accept_then_fail"])
def test_transient_failure_then_success_delivers_every_event(server, make_client, fake_time, failure):
    server.script(failure)
    report = make_client().send(serialized_events(4))

    assert report.accepted == [0, 1, 2, 3]
    assert (report.requests, report.retries, fake_time.sleeps) == (2, 1, [0.01])
    # After accept_then_fail Segment has the events twice, with the same messageIds, which it deduplicates.
    assert set(server.accepted_ids().values()) == {2 if failure == "accept_then_fail" else 1}
    assert not server.violations


def test_stalled_response_times_out_and_is_retried(server, make_client):
    server.script("stall:1")
    report = make_client(timeout=(1.0, 0.2)).send(serialized_events(2))

    assert report.accepted == [0, 1] and report.retries == 1
    assert server.accepted_ids() == {"m-0": 1, "m-1": 1}


def test_retries_exhausted_rejects_every_event_with_the_last_status(server, make_client, fake_time):
    server.always = 503
    report = make_client(max_attempts=3).send(serialized_events(2))

    assert report.accepted == []
    assert {(r.index, r.reason, r.status) for r in report.rejected} == {
        (0, "retries_exhausted", 503), (1, "retries_exhausted", 503)}
    assert (report.requests, fake_time.sleeps) == (3, [0.01, 0.02])


@pytest.mark.parametrize("options, expected_sleeps", [
    (dict(max_attempts=5, backoff_base=1, backoff_cap=3, max_retry_seconds=1_000), [1, 2, 3, 3]),
    # The last wait ends at the deadline, where one more attempt is made: an outage of 9 s is survived.
    (dict(max_attempts=100, backoff_base=1, backoff_cap=1_000, max_retry_seconds=10), [1, 2, 4, 3]),
    (dict(backoff_base=1, backoff_cap=1_000, max_retry_seconds=10), [1, 2, 4, 3]),
])
def test_backoff_is_exponential_capped_and_bounded_by_elapsed_time(
        server, make_client, fake_time, options, expected_sleeps):
    server.always = 503
    report = make_client(**options).send(serialized_events(1))

    assert fake_time.sleeps == expected_sleeps
    assert report.rejected[0].reason == "retries_exhausted"


def test_network_errors_are_retried_then_rejected_without_status(make_client):
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed_port = unused.getsockname()[1]
    report = make_client(endpoint=f"http://127.0.0.1:{closed_port}", max_attempts=2).send(serialized_events(1))

    [rejection] = report.rejected
    assert (rejection.reason, rejection.status, report.requests) == ("retries_exhausted", None, 2)
    assert "ConnectionError" in rejection.response_excerpt


# --- rejected events -------------------------------------------------------------------------------------------

def test_poison_event_is_isolated_and_the_rest_delivered(server, make_client):
    server.poison = lambda event: event["messageId"] == "m-3"
    report = make_client().send(serialized_events(10))

    assert sorted(report.accepted) == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    [rejection] = report.rejected
    assert (rejection.index, rejection.reason, rejection.status) == (3, "rejected_by_segment", 400)
    assert "invalid event" in rejection.response_excerpt
    assert set(server.accepted_ids().values()) == {1} and len(server.accepted) == 9
    assert not server.violations


def test_413_splits_the_batch(server, make_client):
    server.script(413)
    report = make_client().send(serialized_events(4))

    assert sorted(report.accepted) == [0, 1, 2, 3]
    assert [record.events for record in server.requests] == [4, 2, 2]


def test_other_client_errors_reject_the_batch_without_retry(server, make_client):
    server.script(Answer(422, body="unprocessable"))
    report = make_client().send(serialized_events(2))

    assert report.rejected == [Rejection(0, "rejected_by_segment", 422, "unprocessable"),
                               Rejection(1, "rejected_by_segment", 422, "unprocessable")]
    assert report.requests == 1


def test_oversize_event_is_rejected_and_never_sent(server, make_client):
    oversize = serialize(track(1, padding="x" * MAX_EVENT_BYTES))
    report = make_client().send([serialize(track(0)), oversize, serialize(track(2))])

    assert report.accepted == [0, 2]
    assert report.rejected == [Rejection(1, "event_too_large", None, None)]
    assert server.accepted_ids() == {"m-0": 1, "m-2": 1}
    assert sum(record.events for record in server.requests) == 2


# --- configuration errors --------------------------------------------------------------------------------------

def test_wrong_write_key_stops_the_run_without_revealing_the_key(make_client):
    secret = "wrong-key-do-not-print"
    client = make_client(write_key=secret)
    with pytest.raises(SegmentConfigError) as raised:
        client.send(serialized_events(1))

    message = str(raised.value)
    assert "401 Unauthorized" in message and "write key" in message and "--segment_region" in message
    assert "\n" not in message
    assert secret not in message and secret not in repr(client)


@pytest.mark.parametrize("endpoint_suffix, scripted, status", [
    ("/wrong-path", None, "404"),
    ("", Answer(301, {"Location": "https://example.com/v1/batch"}), "301"),
])
def test_wrong_endpoint_stops_the_run(server, make_client, endpoint_suffix, scripted, status):
    if scripted:
        server.script(scripted)
    with pytest.raises(SegmentConfigError, match=f"{status} .*region"):
        make_client(endpoint=server.url + endpoint_suffix).send(serialized_events(1))
    assert len(server.requests) == 1


# --- the test server enforces the contract ---------------------------------------------------------------------

def test_server_answers_200_but_drops_more_than_2500_events(server):
    response = post_raw(server, raw_body([track(number) for number in range(2_600)]))

    assert response.status_code == 200
    assert server.accepted == []
    assert "2,600 events" in server.violations[0]


def test_server_takes_an_anonymous_id_instead_of_a_user_id(server):
    anonymous = {key: value for key, value in track(0).items() if key != "userId"} | {"anonymousId": "5e1a"}
    assert post_raw(server, raw_body([anonymous])).status_code == 200
    assert server.accepted == [anonymous] and not server.violations
    identified = track(1) | {"anonymousId": None}  # analytics-python sends the other one as null
    assert post_raw(server, raw_body([identified])).status_code == 200
    assert server.accepted == [anonymous, identified] and not server.violations


@pytest.mark.parametrize("events, problem", [
    ([track(number, padding="x" * 29_000) for number in range(21)], "over 500,000"),
    ([track(0, padding="x" * MAX_EVENT_BYTES)], "over 32,000"),
    ([track(0) | {"messageId": "m" * 101}], "messageId"),
    ([track(0) | {"type": "identify"}], "type"),
    ([{key: value for key, value in track(0).items() if key != "userId"}], "userId"),
])
def test_server_rejects_contract_violations_with_400(server, events, problem):
    response = post_raw(server, raw_body(events))

    assert response.status_code == 400
    assert server.accepted == []
    assert problem in server.violations[0]


def test_server_rejects_invalid_json_and_nan(server):
    for body in (b'{"batch": [', raw_body([track(0, score=float("nan"))])):
        assert post_raw(server, body).status_code == 400
    assert len(server.violations) == 2


def test_server_rejects_wrong_key_and_path(server):
    body = raw_body([track(0)])
    assert post_raw(server, body, write_key="other").status_code == 401
    assert post_raw(server, body, path="/v1/track").status_code == 404
    assert server.accepted == []
