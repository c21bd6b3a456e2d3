"""Requests in flight and one event budget: the pacer, the token bucket, requests in flight and the sender without
Beam, and whole pipelines against the loopback server playing Segment's latency and a workspace's
rate limit."""
import collections
import gc
import itertools
import json
import os
import threading
import time
import weakref

import pytest
import requests
from apache_beam.options.pipeline_options import PipelineOptions

from currents_to_segment.pipeline import config, runners
from currents_to_segment.pipeline.options import CurrentsToSegmentOptions
from currents_to_segment.pipeline.sample_bucket import make_sample_bucket
from tests.pipeline_runs import assert_balanced, expected_calls, received_calls, run_job
from tests.segment_server import Answer, SegmentServer
from currents_to_segment.transforms import metrics
from currents_to_segment.transforms.deliver import CountsFromThreads
from currents_to_segment.transforms.segment.api import SegmentConfigError
from currents_to_segment.transforms.segment.client import ClientSettings, SegmentClient
from currents_to_segment.transforms.segment.in_flight import InFlight
from currents_to_segment.transforms.segment.pacing import Pacer, ThrottledTime, TokenBucket, request_events
from currents_to_segment.transforms.senders import ProcessSending, SegmentSender

KEY = "budget-test-key"


class FakeTime:
    """A clock that only sleeping advances; sleeps are recorded instead of waited for."""

    def __init__(self):
        self.now = 0.0
        self.sleeps = []

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds

    def clock(self):
        return self.now


def track(number):
    return {"type": "track", "event": "Email Sent", "userId": f"user-{number}", "messageId": f"m-{number}",
            "timestamp": "2026-11-28T10:00:00.000Z", "properties": {}}


def payloads(count, first=0):
    return [json.dumps(track(number), separators=(",", ":")).encode() for number in range(first, first + count)]


# --- the token bucket ------------------------------------------------------------------------------------------

def test_a_token_bucket_starts_full_and_makes_later_takers_wait_for_the_debt():
    bucket = TokenBucket(rate=1000, capacity=250, now=0.0)
    assert bucket.reserve(250, 0.0) == 0.0
    assert bucket.reserve(250, 0.0) == pytest.approx(0.25)
    assert bucket.reserve(100, 0.25) == pytest.approx(0.1)  # the first debt is paid at 0.25, this one at 0.35
    assert bucket.tokens(0.35) == pytest.approx(0.0)


def test_a_token_bucket_holds_no_more_than_its_capacity_and_lets_a_larger_request_go_later():
    bucket = TokenBucket(rate=1000, capacity=250, now=0.0)
    assert bucket.tokens(10.0) == 250  # ten idle seconds leave one request's worth, not 10,000
    assert bucket.reserve(1000, 10.0) == pytest.approx(0.75)


def test_a_token_bucket_pays_its_debt_at_the_new_rate_from_the_change_on():
    bucket = TokenBucket(rate=1000, capacity=250, now=0.0)
    bucket.reserve(500, 0.0)  # 250 owed
    bucket.set_rate(500, 0.1)  # 100 of it paid at 1,000/s, 150 left
    assert bucket.reserve(100, 0.1) == pytest.approx(0.5)  # 250 owed at 500/s


# --- the pacer -------------------------------------------------------------------------------------------------

def test_a_budget_paces_events_in_requests_of_a_quarter_second_from_the_start():
    fake = FakeTime()
    waits = []
    pacer = Pacer(1000, clock=fake.clock, sleep=fake.sleep)
    assert pacer.max_request_events == 250
    for _ in range(4):
        pacer.acquire(250, waits.append)
    assert fake.sleeps == pytest.approx([0.25] * 4) and waits == fake.sleeps
    assert fake.now == pytest.approx(1.0)  # 1,000 events in the first second: no burst at the start
    fake.now += 10  # idle: the bucket fills up to one request's worth, no more
    pacer.acquire(250, waits.append)
    pacer.acquire(250, waits.append)
    assert fake.sleeps[4:] == pytest.approx([0.25])


def test_a_429_halves_the_rate_once_a_second_down_to_a_floor_and_2xx_answers_bring_it_back_gradually():
    fake = FakeTime()
    pacer = Pacer(1000, clock=fake.clock, sleep=fake.sleep)
    pacer.answered(429)
    assert pacer.rate == 500
    pacer.answered(429)  # the same burst of answers: no second cut
    assert pacer.rate == 500
    rates = []
    for _ in range(5):
        fake.now += 1.0
        pacer.answered(429)
        rates.append(pacer.rate)
    assert rates == [250, 125, 62.5, 62.5, 62.5]  # never below 1/16 of the budget
    recovered = []
    for _ in range(20):
        pacer.answered(200)
        recovered.append(pacer.rate)
    assert recovered[:3] == [112.5, 162.5, 212.5]  # 5% of the budget per answer
    assert recovered[-2:] == [1000, 1000]  # and never past it


def test_a_retry_after_pauses_every_request_that_shares_the_pacer():
    fake = FakeTime()
    waits = []
    pacer = Pacer(clock=fake.clock, sleep=fake.sleep)  # no budget: a Retry-After still holds everything back
    pacer.answered(429, retry_after=2.0)
    pacer.acquire(10, waits.append)
    assert waits == [2.0] and fake.now == 2.0
    pacer.answered(429)  # no budget, no Retry-After: nothing to wait for
    pacer.acquire(10, waits.append)
    assert waits == [2.0]


def test_a_turn_is_waited_for_while_requests_let_go_still_owe_the_budget_or_a_retry_after_lasts():
    fake = FakeTime()
    still = []  # the sleeps of the sending threads: they do not move this test's clock
    pacer = Pacer(1000, clock=fake.clock, sleep=still.append)
    assert pacer.wait_for_turn() == 0.0  # nothing owed: an empty bucket is no debt
    pacer.acquire(500)  # another thread takes 500 events: it waits 0.5 s for them
    waits = []
    assert pacer.wait_for_turn(waits.append) == pytest.approx(0.5)
    assert waits == pytest.approx([0.5]) and still == pytest.approx([0.5, 0.5])
    fake.now = 0.5
    assert pacer.wait_for_turn() == 0.0
    pacer.answered(429, retry_after=2.0)  # at 0.5: the rate is halved, and everything waits until 2.5
    fake.now = 1.0
    assert pacer.wait_for_turn() == pytest.approx(1.5)


def test_requests_per_second_are_paced_for_every_client_of_the_pacer():
    fake = FakeTime()
    pacer = Pacer(requests_per_second=10, clock=fake.clock, sleep=fake.sleep)
    for _ in range(3):
        pacer.acquire(2_500)
    assert fake.sleeps == pytest.approx([0.1, 0.1])


# --- throttled time and calls in flight ------------------------------------------------------------------------

def test_throttled_time_counts_overlapping_waits_once_and_hands_out_whole_seconds():
    fake = FakeTime()
    throttled = ThrottledTime(clock=fake.clock)
    throttled.wait(2.0)  # 0 to 2
    fake.now = 0.5
    throttled.wait(1.0)  # 0.5 to 1.5: within the first
    fake.now = 1.5
    throttled.wait(1.0)  # 1.5 to 2.5: half a second more
    fake.now = 3.0
    assert throttled.total == pytest.approx(2.5)
    assert throttled.take_whole_seconds() == 2 and throttled.take_whole_seconds() == 0
    fake.now = 10.0
    throttled.wait(0.6)
    fake.now = 10.6
    assert throttled.take_whole_seconds() == 1  # 3.1 s in all: the half second kept counts now
    assert throttled.total == pytest.approx(3.1)


def test_throttled_time_counts_a_wait_only_as_far_as_it_has_gone():
    fake = FakeTime()
    throttled = ThrottledTime(clock=fake.clock)
    throttled.wait(300.0)  # a Retry-After of 300 s, announced at 0
    fake.now = 45.0  # the run ends here
    assert throttled.total == pytest.approx(45.0)
    assert throttled.take_whole_seconds() == 45
    throttled.wait(10.0)  # within the first: nothing more
    fake.now = 50.0
    assert throttled.take_whole_seconds() == 5


def test_in_flight_runs_up_to_its_limit_at_once_and_hands_back_every_result_once():
    barrier = threading.Barrier(3, timeout=5)  # broken unless three calls run at the same time
    active, most = [0], [0]
    lock = threading.Lock()

    def work(key):
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        if key < 3:
            barrier.wait()
        time.sleep(0.02)
        with lock:
            active[0] -= 1
        return key * 10

    in_flight = InFlight(work, 3)
    finished = []
    for key in range(8):
        finished += in_flight.submit(key)
        assert len(in_flight) <= 3
    finished += in_flight.drain()
    in_flight.close()
    assert sorted(finished) == [(key, key * 10) for key in range(8)]
    assert most[0] == 3 and len(in_flight) == 0 and in_flight.threads == 3


def test_in_flight_starts_a_thread_only_when_every_other_is_busy():
    in_flight = InFlight(lambda key: key, 8)
    for key in range(5):
        in_flight.submit(key)
        in_flight.drain()  # one call at a time: the first thread is always free again
    in_flight.close()
    assert in_flight.threads == 1


def test_an_idle_sending_thread_keeps_nothing_of_its_last_call():
    class Calls(list):  # a request's calls, which can be weakly referenced
        pass

    in_flight = InFlight(lambda calls: len(calls), 4)
    requests_ = [Calls([b"x" * 1000] * 10) for _ in range(4)]
    gone = [weakref.ref(calls) for calls in requests_]
    finished = [done for calls in requests_ for done in in_flight.submit(calls)] + in_flight.drain()
    assert sorted(result for _, result in finished) == [10] * 4
    del requests_, finished
    gc.collect()
    # The threads wait for their next call; what they sent is no longer held (96 idle threads held 150 MB).
    assert in_flight.threads > 1 and [ref() for ref in gone] == [None] * 4
    in_flight.close()


def test_in_flight_raises_a_failed_call_and_cancels_the_calls_not_started():
    started = []
    release = threading.Event()

    def work(key):
        started.append(key)
        release.wait(5)
        if key == "refused":
            raise SegmentConfigError("401")
        return key

    in_flight = InFlight(work, 2)
    assert in_flight.submit("refused") == [] and in_flight.submit("second") == []
    with pytest.raises(SegmentConfigError):
        release.set()
        in_flight.submit("third")  # waits for room: the refused call's error comes out here or at the drain
        in_flight.drain()
    in_flight.close()
    assert "refused" in started


def test_counts_made_in_other_threads_are_tallied_at_once_and_only_once():
    metrics.reset_process_totals()
    counts = CountsFromThreads()
    sender = threading.Thread(target=counts.add, args=(metrics.REQUESTS, 3))
    sender.start()
    sender.join()
    assert metrics.process_totals() == {metrics.REQUESTS: 3}  # for progress lines and a stopped run's summary
    counts.flush()  # Beam's counter gets them, from the DoFn's thread; the tally does not again
    counts.add(metrics.RETRIES)
    counts.flush()
    assert metrics.process_totals() == {metrics.REQUESTS: 3, metrics.RETRIES: 1}
    metrics.reset_process_totals()


def test_one_in_flight_is_sent_in_the_callers_thread():
    threads = []
    in_flight = InFlight(lambda key: threads.append(threading.current_thread()) or key, 1)
    assert in_flight.submit("a") == [("a", "a")] and in_flight.drain() == []
    assert threads == [threading.current_thread()] and in_flight.threads == 0


# --- the budget's share, and the advice ------------------------------------------------------------------------

@pytest.mark.parametrize("args, workers", [
    ([], 1),
    (["--runner=FnApiRunner", "--direct_num_workers=2"], 1),  # in memory: one process, one pacer
    (["--runner=FnApiRunner", "--direct_running_mode=multi_threading", "--direct_num_workers=4"], 1),
    (["--runner=FnApiRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2"], 2),
    (["--runner=PrismRunner"], 1),
    (["--runner=DataflowRunner", "--max_num_workers=8", "--num_workers=2"], 8),
    (["--runner=DataflowRunner", "--num_workers=3"], 3),
    (["--runner=DataflowRunner"], 1),
    (["--runner=FlinkRunner", "--flink_master=[local]", "--parallelism=2"], 1),  # LOOPBACK: in this process
    (["--runner=FlinkRunner", "--flink_master=[local]", "--parallelism=2", "--environment_type=EXTERNAL",
      "--environment_config=localhost:50000"], 2),
    (["--runner=FlinkRunner", "--flink_master=flink:8081", "--parallelism=4"], 4),
])
def test_each_worker_process_takes_its_share_of_the_budget(args, workers):
    assert runners.budget_workers(PipelineOptions(args))[0] == workers


@pytest.mark.parametrize("args, advised", [
    (["--currents_root", "gs://b/c"], True),
    (["--currents_root", "gs://b/c", "--max_events_per_second", "800"], False),
    (["--currents_root", "gs://b/c", "--dry_run_output", "out"], False),
    (["--input", "gs://b/c/*.avro"], False),
    (["--input", "gs://b/c/*.avro", "--watch"], True),
])
def test_a_run_over_a_currents_root_or_a_watch_without_a_budget_is_told_how_to_set_one(args, advised):
    advice = config.budget_advice(PipelineOptions(args).view_as(CurrentsToSegmentOptions))
    if advised:
        assert advice.startswith("note: Segment queues events, or answers 429, past about 1,000 events/s per "
                                 "workspace") and "--max_events_per_second N" in advice
    else:
        assert advice is None


@pytest.mark.parametrize("value, message", [("0", "must be positive"), ("nan", "must be a finite number")])
def test_a_budget_must_be_a_positive_number(value, message, tmp_path, capsys):
    from currents_to_segment.pipeline.main import main
    (tmp_path / "f.avro").write_bytes(b"")
    status = main(["--input", str(tmp_path / "f.avro"), "--segment_write_key", "k", "--max_events_per_second", value])
    assert status == 1 and f"--max_events_per_second {message}" in capsys.readouterr().err


# --- the client and the server ---------------------------------------------------------------------------------

def test_a_client_under_a_budget_sends_a_quarter_second_per_request(server):
    fake = FakeTime()
    pacer = Pacer(40, clock=fake.clock, sleep=fake.sleep)
    # The job decides the request size once (pipeline.config), from the budget: a quarter second of it.
    client = SegmentClient(KEY, ClientSettings(endpoint=server.url, max_events=request_events(40)), pacer=pacer)
    report = client.send(payloads(30))
    client.close()
    assert sorted(report.accepted) == list(range(30))
    assert [record.events for record in server.requests] == [10, 10, 10]
    assert fake.sleeps == pytest.approx([0.25, 0.25, 0.25])


def test_a_retry_after_one_client_gets_holds_back_the_other_clients_of_the_process(server):
    fake = FakeTime()
    pacer = Pacer(clock=fake.clock, sleep=fake.sleep)
    settings = ClientSettings(endpoint=server.url, max_attempts=1)
    waits = []
    first, second = (SegmentClient(KEY, settings, pacer=pacer, on_wait=waits.append) for _ in range(2))
    server.script(Answer(429, {"Retry-After": "3"}))
    assert first.send(payloads(1)).rejected[0].status == 429
    assert second.send(payloads(1, first=1)).accepted == [0]
    assert waits == [3.0] and fake.sleeps == [3.0]  # the second client waited out the first one's Retry-After
    first.close()
    second.close()


def test_every_wait_of_a_client_is_told_before_it_begins(server):
    fake = FakeTime()
    waits = []
    client = SegmentClient(KEY, ClientSettings(endpoint=server.url, backoff_base=0.5), sleep=fake.sleep, clock=fake.clock,
                           rng=lambda: 1.0,  # no jitter: a backoff of exactly 0.5 s
                           pacer=Pacer(requests_per_second=2, clock=fake.clock, sleep=fake.sleep),
                           on_wait=waits.append)
    server.script(503)
    assert client.send(payloads(1)).accepted == [0]
    client.close()
    assert waits == [0.5]  # the backoff; the retry's turn came at 0.5 s, when the pacer let one request go again
    assert fake.sleeps == [0.5]


def post(server, events, first=0):
    """POST a batch of `events` valid events straight to the server (no client: no retry, no pacing)."""
    body = json.dumps({"batch": [track(number) for number in range(first, first + events)],
                       "sentAt": "2026-11-28T10:00:00.000Z", "writeKey": KEY})
    return requests.post(server.url + "/v1/batch", data=body, auth=(KEY, ""), timeout=5)


def test_the_server_plays_a_workspace_limit_over_the_last_second(server):
    server.workspace_limit(5)
    assert post(server, 3).status_code == 200
    refused = post(server, 3, first=3)
    assert (refused.status_code, refused.headers["Retry-After"], refused.json()) == (
        429, "1", {"error": "rate limit exceeded"})
    assert post(server, 2, first=6).status_code == 200  # 5 in the last second: within the limit
    assert post(server, 1, first=8).status_code == 429
    time.sleep(1.05)
    assert post(server, 5, first=9).status_code == 200
    assert [r.status for r in server.requests] == [200, 429, 200, 429, 200]
    assert sorted(server.accepted_ids()) == [f"m-{n}" for n in (0, 1, 10, 11, 12, 13, 2, 6, 7, 9)]


def test_the_server_answers_after_its_latency_in_one_write_over_keep_alive():
    with SegmentServer(write_key=KEY, latency=0.3, one_write=True) as server:
        session = requests.Session()
        session.auth = (KEY, "")
        started = time.monotonic()
        for number in range(2):
            body = json.dumps({"batch": [track(number)], "sentAt": "2026-11-28T10:00:00.000Z", "writeKey": KEY})
            response = session.post(server.url + "/v1/batch", data=body, timeout=5)
            assert response.status_code == 200 and response.json() == {"success": True}
        elapsed = time.monotonic() - started
        session.close()
    assert 0.6 <= elapsed < 1.5 and len(server.accepted) == 2


# --- the sender: requests in flight ---------------------------------------------------------------------------

def _request(number, account="f1.avro", size=2):
    return [("users.messages.email.Send", account, f"m-{number}-{i}", p)
            for i, p in enumerate(payloads(size, first=number * 100))]


def _sender(server, in_flight, counted):
    settings = ClientSettings(endpoint=server.url, requests_in_flight=in_flight, max_attempts=2, backoff_base=0.01)
    return SegmentSender(KEY, settings, ProcessSending(settings, in_flight), lambda name, n: counted.update({name: n}))


def test_a_drain_waits_for_every_request_in_flight_and_reports_each_once():
    counted = collections.Counter()
    with SegmentServer(write_key=KEY, latency=0.3) as server:
        sender = _sender(server, 4, counted)
        started = time.monotonic()
        answered = [answer for number in range(3) for answer in sender.submit(_request(number))]
        submitted = time.monotonic() - started
        answered += sender.drain()
        sender.close()
    assert submitted < 0.3  # three requests went out without waiting for each other
    assert sorted(calls[0][2] for calls, _ in answered) == ["m-0-0", "m-1-0", "m-2-0"]
    assert [report.accepted for _, report in answered] == [[0, 1]] * 3
    assert counted["sent:users.messages.email.Send"] == 6 and counted["requests"] == 3
    assert len(server.accepted) == 6 and sender.drain() == []


def test_submit_waits_for_room_and_hands_back_what_finished():
    counted = collections.Counter()
    with SegmentServer(write_key=KEY, latency=0.2) as server:
        sender = _sender(server, 4, counted)
        answered = [answer for number in range(6) for answer in sender.submit(_request(number, size=1))]
        # Four went out at once; the fifth waited for room, and got what had finished by then.
        assert 1 <= len(answered) < 6
        answered += sender.drain()
        sender.close()
    assert sorted(calls[0][2] for calls, _ in answered) == [f"m-{n}-0" for n in range(6)]
    assert len(server.accepted) == 6


def test_senders_of_one_process_share_its_threads_and_clients():
    """A runner that runs bundles side by side (Prism) makes a sender per bundle: they share the process's threads."""
    counted = collections.Counter()
    with SegmentServer(write_key=KEY, latency=0.1) as server:
        settings = ClientSettings(endpoint=server.url, requests_in_flight=4)
        sending = ProcessSending(settings, 4)
        senders = [SegmentSender(KEY, settings, sending, lambda name, n: counted.update({name: n})) for _ in range(3)]
        answered = [answer for number in range(4) for sender in senders
                    for answer in sender.submit(_request(number * 10 + senders.index(sender)))]
        answered += [answer for sender in senders for answer in sender.drain()]
        for sender in senders:
            sender.close()
    assert len(answered) == 12 and len(server.accepted) == 24
    assert len(sending.threads) == 4 and len(sending._clients) <= 4  # pylint: disable=protected-access


def test_a_refused_write_key_still_fails_with_requests_in_flight():
    counted = collections.Counter()
    with SegmentServer(write_key="another-key", latency=0.1) as server:
        sender = _sender(server, 4, counted)
        with pytest.raises(SegmentConfigError, match="401 Unauthorized"):
            for number in range(3):
                sender.submit(_request(number))
            sender.drain()
        sender.close()


# --- whole pipelines -------------------------------------------------------------------------------------------

TWO_WORKERS = ("--direct_running_mode=multi_processing", "--direct_num_workers=2")


@pytest.fixture(scope="module")
def big_bucket(tmp_path_factory):
    """A bucket of about 6,800 events to send: at 2,000 events/s, 3.4 s of sending."""
    root = tmp_path_factory.mktemp("big")
    manifest = make_sample_bucket(str(root), events_per_file=100)
    for path in manifest["broken_files"]:  # the part of a truncated file read before its end is no record of it
        os.remove(path)
    return str(root), manifest


def accepted_rate(records):
    """Events/s Segment accepted at: the least-squares slope of the events it had accepted over the arrival times
    of its accepted requests (so that where paced streams of requests start and stop does not count)."""
    accepted = sorted((record.received_at, record.events) for record in records if record.status == 200)
    times = [at for at, _ in accepted]
    totals = list(itertools.accumulate(events for _, events in accepted))
    mean_time, mean_total = sum(times) / len(times), sum(totals) / len(totals)
    return (sum((t - mean_time) * (total - mean_total) for t, total in zip(times, totals))
            / sum((t - mean_time) ** 2 for t in times))


def test_requests_in_flight_overlap_and_deliver_everything_once(tmp_path, bucket, capsys):
    root, manifest = bucket
    with SegmentServer(write_key=KEY, latency=0.25) as server:
        started = time.monotonic()
        status, summary, _ = run_job(tmp_path, "--currents_root", root, "--segment_endpoint", server.url,
                                     "--segment_write_key", KEY, "--max_batch_events", "5", "--quiet",
                                     "--max_requests_in_flight", "4")
        elapsed = time.monotonic() - started
        spans = sorted((record.received_at, record.received_at + 0.25) for record in server.requests)
    overlapping = max(sum(1 for start, end in spans if start <= at < end) for at, _ in spans)
    assert status == 0
    assert received_calls(server.accepted) == expected_calls(manifest)  # each call once
    assert summary["requests"] == len(server.requests) and not server.violations
    assert_balanced(summary)
    assert overlapping >= 3
    assert elapsed < len(spans) * 0.25 / 2  # one at a time would have taken len(spans) * 0.25 s
    assert any(line.startswith("note: Segment queues events") for line in capsys.readouterr().err.splitlines())


def test_a_budget_at_the_workspace_limit_gets_no_429_and_keeps_to_the_budget_on_two_workers(tmp_path, big_bucket):
    root, manifest = big_bucket
    with SegmentServer(write_key=KEY) as server:
        server.workspace_limit(2_000)  # the budget itself: Segment sees no second with more (a sliding window)
        status, summary, _ = run_job(tmp_path, "--input", f"{root}/**", "--segment_endpoint", server.url,
                                     "--segment_write_key", KEY, "--quiet", "--max_events_per_second", "2000",
                                     *TWO_WORKERS)
        statuses = [record.status for record in server.requests]
        rate = accepted_rate(server.requests)
    assert status == 0 and 429 not in statuses
    assert received_calls(server.accepted) == expected_calls(manifest)
    assert_balanced(summary)
    assert 2000 * 0.7 <= rate <= 2000, rate
    assert summary["delivery"]["events_per_second_per_worker"] == 1000
    assert summary["throttled_seconds"] > 0


def test_without_a_budget_a_workspace_limit_loses_nothing_on_two_workers(tmp_path, big_bucket):
    root, manifest = big_bucket
    with SegmentServer(write_key=KEY) as server:
        server.workspace_limit(3_000)
        status, summary, letters = run_job(tmp_path, "--input", f"{root}/**", "--segment_endpoint", server.url,
                                           "--segment_write_key", KEY, "--quiet", *TWO_WORKERS)
        statuses = [record.status for record in server.requests]
    assert status == 0 and 429 in statuses
    assert received_calls(server.accepted) == expected_calls(manifest)  # every call once, nothing else
    assert summary["sent"] == sum(expected_calls(manifest).values())
    assert not [letter for letter in letters if letter["reason"] == "retries_exhausted"]
    assert_balanced(summary)
