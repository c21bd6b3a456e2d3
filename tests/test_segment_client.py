"""Tests of transforms.segment (the client) against the Segment-compatible loopback server (tests.segment_server)."""
from __future__ import annotations

import dataclasses
import email.utils
import json
import socket
import threading
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
from currents_to_segment.transforms.segment.pacing import OUTAGE_PROBE_SECONDS, Pacer, RefusalBreaker

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


def send_within(client: SegmentClient, payloads: list[bytes], seconds: float):
    """client.send(payloads) in a thread of its own; its report, or a failure if it has not returned within
    `seconds` (a hang is bounded)."""
    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(client.send(payloads)), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"send still going after {seconds} s"
    return outcome[0]


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


def test_a_retry_after_longer_than_the_budget_is_waited_only_until_the_budget_ends(server, make_client, fake_time):
    server.always = Answer(429, {"Retry-After": "99999"})
    seen = []
    report = make_client(max_retry_seconds=5, observer=seen.append).send(serialized_events(2))

    assert [(r.reason, r.status) for r in report.rejected] == [("retries_exhausted", 429)] * 2
    assert fake_time.sleeps == [5.0]  # to the deadline, where the last attempt is made; no pause after it
    assert [(a.status, a.retrying) for a in seen] == [(429, True), (429, False)]


def test_a_retry_after_pauses_a_shared_pacer_only_as_long_as_the_budget_of_the_request_that_got_it(
        server, make_client, fake_time):
    pacer = Pacer(clock=fake_time.clock, sleep=fake_time.sleep)
    first = make_client(max_retry_seconds=4, max_attempts=1, pacer=pacer)
    second = make_client(max_retry_seconds=4, pacer=pacer)
    server.script(Answer(429, {"Retry-After": "99999"}))
    assert first.send(serialized_events(1)).rejected[0].status == 429
    assert second.send(serialized_events(1)).accepted == [0]
    assert fake_time.sleeps == [4.0]  # the first request's budget, not Retry-After's 300 s cap


def test_a_pacer_pause_is_sat_out_for_no_longer_than_asked():
    fake = FakeTime()
    pacer = Pacer(clock=fake.clock, sleep=fake.sleep)
    pacer.answered(429, retry_after=300.0)
    assert pacer.acquire(1, max_pause=2.5) == 2.5
    assert pacer.wait_for_turn(max_pause=1.0) == 1.0
    assert fake.sleeps == [2.5, 1.0]
    assert pacer.acquire(1) == 296.5  # without a cap: all of it


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


@pytest.mark.parametrize("trickle", ["trickle_body", "trickle_headers"])
def test_an_answer_trickling_in_is_cut_off_at_the_attempts_deadline_and_retried(server, make_client, trickle):
    """Each piece of the answer comes within the read timeout (0.5 s apart, for 2): only a deadline for the whole
    attempt ends it."""
    server.script(f"{trickle}:0.5")
    seen = []
    report = send_within(make_client(timeout=(1.0, 2.0), observer=seen.append), serialized_events(2), 20)

    assert report.accepted == [0, 1] and report.retries == 1
    assert [(a.status, a.timed_out, a.retrying) for a in seen] == [(None, True, True), (200, False, False)]
    assert seen[0].detail.startswith("ReadTimeout: no")
    assert server.accepted_ids() == {"m-0": 1, "m-1": 1}


def test_an_answer_trickling_in_forever_exhausts_the_budget_within_it(server, make_client):
    server.always = "trickle_body:0.5"
    report = send_within(make_client(timeout=(1.0, 1.0), max_attempts=3), serialized_events(1), 20)

    [rejection] = report.rejected
    assert (rejection.reason, rejection.status, report.requests) == ("retries_exhausted", None, 3)
    assert "within 1 s" in rejection.response_excerpt
    assert server.accepted == []


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


def test_a_few_bad_events_among_good_ones_are_isolated_and_the_good_ones_delivered(server, make_client):
    bad = {f"m-{number}" for number in range(0, 200, 10)}  # 20 bad events, one in every ten
    server.poison = lambda event: event["messageId"] in bad
    report = make_client(max_events=100).send(serialized_events(200))

    assert sorted(report.accepted) == [number for number in range(200) if number % 10]
    assert sorted(r.index for r in report.rejected) == list(range(0, 200, 10))
    assert {r.reason for r in report.rejected} == {"rejected_by_segment"}
    assert len(server.accepted) == 180


@pytest.mark.parametrize("status", [413, 400])
def test_a_segment_refusing_everything_is_noticed_after_8_refusals_and_not_sent_to_again(
        server, make_client, status):
    server.always = status
    client = make_client(max_events=40)
    report = client.send(serialized_events(1_000))

    assert report.accepted == [] and sorted(r.index for r in report.rejected) == list(range(1_000))
    assert {(r.reason, r.status) for r in report.rejected} == {("rejected_by_segment", status)}
    assert len(server.requests) <= 40  # splitting every request down to single events would make 1,975
    last = report.rejected[-1].response_excerpt
    assert last == f"not sent: Segment refused the last 8 requests whole (last: {status})"
    requests_before = len(server.requests)
    assert client.send(serialized_events(3)).rejected[0].response_excerpt == last  # later sends too
    assert len(server.requests) == requests_before


def test_a_refusal_breaker_shared_by_clients_stops_them_all_and_a_2xx_starts_its_count_again(
        server, make_client, fake_time):
    refusals = RefusalBreaker(fake_time.clock)
    first, second = make_client(refusals=refusals), make_client(refusals=refusals)
    server.always = 413
    for number in range(7):
        first.send([serialize(track(number))])
    assert len(server.requests) == 7 and refusals.stopped() is None
    second.send(serialized_events(1))  # the 8th refusal in a row, nothing ever accepted: Segment refuses everything
    assert refusals.stopped() == (413, "not sent: Segment refused the last 8 requests whole (last: 413)")
    report = first.send(serialized_events(2))
    assert [r.reason for r in report.rejected] == ["rejected_by_segment"] * 2 and len(server.requests) == 8
    fake_time.now += OUTAGE_PROBE_SECONDS  # one request goes, now and then: refused, its halves are not sent
    assert [r.response_excerpt[:9] for r in second.send(serialized_events(2)).rejected] == ["not sent:"] * 2
    assert len(server.requests) == 9
    server.always = None
    fake_time.now += OUTAGE_PROBE_SECONDS  # the next probe is accepted: the sending goes on
    assert second.send(serialized_events(2)).accepted == [0, 1]
    assert first.send(serialized_events(2)).accepted == [0, 1] and refusals.stopped() is None


def test_once_segment_accepted_events_only_64_refusals_in_a_row_stop_the_sending(server, make_client, fake_time):
    """A run of bad events next to each other in a batch is no sign that Segment refuses everything, once it has
    taken events: 63 single refusals in a row leave the sending on, the 64th stops it."""
    refusals = RefusalBreaker(fake_time.clock)
    client = make_client(refusals=refusals)
    assert client.send(serialized_events(1)).accepted == [0]
    server.always = 413
    for number in range(63):
        client.send([serialize(track(number))])
    assert refusals.stopped() is None
    client.send(serialized_events(1))
    assert refusals.stopped() == (413, "not sent: Segment refused the last 64 requests whole (last: 413)")
    assert len(server.requests) == 65


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

@pytest.mark.parametrize("answer, shown", [
    (Answer(200, {"Content-Type": "text/html"}, "<html>\n<body>Welcome to nginx!</body>\n</html>"),
     "('<html> <body>Welcome to nginx!</body> </html>')"),
    (Answer(200, body=b""), "(an empty body)"),
    (Answer(200, body="OK"), "('OK')"),
    (Answer(200, body="[]"), "('[]')"),
    (Answer(202, body="true"), "('true')"),
    (Answer(200, body='{"success": false}'), """('{"success": false}')"""),
])
def test_a_2xx_that_is_not_segments_answer_stops_the_run(server, make_client, answer, shown):
    server.script(answer)
    with pytest.raises(SegmentConfigError) as raised:
        make_client().send(serialized_events(2))

    message = str(raised.value)
    assert message == (f"Segment answered {answer.status} {'OK' if answer.status == 200 else 'Accepted'} for "
                       f"{server.url}/v1/batch with a body that is not Segment's {shown}: the endpoint is not "
                       f"Segment's API (a proxy or a wrong --segment_endpoint).")
    assert len(server.requests) == 1


def test_a_long_body_that_is_not_segments_is_shown_in_80_characters(server, make_client):
    server.script(Answer(200, body="x" * 500))
    with pytest.raises(SegmentConfigError, match=r"\('x{80}\.\.\.'\): the endpoint is not Segment's API"):
        make_client().send(serialized_events(1))


@pytest.mark.parametrize("body", ['{"success": true}', "{}", '{"success": true, "note": "queued"}'])
def test_any_json_object_but_an_unsuccessful_one_is_segments_answer(server, make_client, body):
    server.script(Answer(200, body=body))
    assert make_client().send(serialized_events(2)).accepted == [0, 1]


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


# --- the event budget ------------------------------------------------------------------------------------------

def test_no_second_holds_more_events_than_the_budget_even_after_an_idle_spell():
    fake = FakeTime()
    pacer = Pacer(100, clock=fake.clock, sleep=fake.sleep)
    starts = []
    for _ in range(3):
        fake.now += 5.0  # idle: the bucket fills up
        for size in [1, 7, 25, 3, 1, 1, 12] * 10:
            pacer.acquire(size)
            starts.append((fake.now, size))
    for start, _ in starts:
        in_window = sum(size for at, size in starts if start <= at < start + 1.0)
        assert in_window <= 100, (start, in_window)
    assert fake.now < 15 + 3 * 500 / 100 + 3  # the budget is still used: 500 events a round, 5 s each


def test_a_pause_does_not_let_the_requests_it_held_start_at_once():
    fake = FakeTime()
    pacer = Pacer(100, clock=fake.clock, sleep=fake.sleep)
    fake.now = 10.0  # idle: the bucket is full
    starts = []

    def sleep(seconds):  # during the second wait, a 503 with Retry-After: 2 comes (another thread's answer)
        fake.sleep(seconds)
        if len(fake.sleeps) == 1:
            pacer.answered(503, retry_after=2.0)

    pacer._sleep = sleep  # pylint: disable=protected-access
    for _ in range(8):
        pacer.acquire(25)
        starts.append(fake.now)
    assert starts[:2] == [10.0, 12.25]  # the second request held by the pause (from 10.25 to 12.25)
    for start in starts:
        assert sum(25 for at in starts if start <= at < start + 1.0) <= 100, starts


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
