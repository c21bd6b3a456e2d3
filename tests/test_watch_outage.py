"""--watch through an outage of Segment: nothing is dead-lettered; the watch holds its files (reads no new one,
keeps what it has not delivered unrecorded) and probes Segment until it answers; past --max_outage_hours, or on a
drain during the outage, it stops with exit 3 and leaves the files it held to the next watch.

The Beam-free parts first (the breaker, the client, a family's delivery, the progress reporter, the summary), then
whole watches on Prism against the loopback Segment server (tests.segment_server), in a process of their own.
"""
import gc
import io
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time

import pytest

from currents_to_segment.pipeline import summary
from currents_to_segment.pipeline.main import main
from currents_to_segment.pipeline.sample_bucket import make_record, write_currents_file
from currents_to_segment.transforms import jsonl, metrics, progress
from currents_to_segment.transforms.watch import ListedUnlessHolding
from currents_to_segment.transforms.currents import schemas as currents_schemas
from currents_to_segment.transforms.currents.catalog import CLASSIC
from currents_to_segment.transforms.currents.records import RecordFilter
from currents_to_segment.transforms.currents.track_calls import TrackSettings
from currents_to_segment.transforms.delivery import CurrentsFile, Delivery
from currents_to_segment.transforms.segment.api import Attempt, envelope_bytes
from currents_to_segment.transforms.segment.batching import BatchSettings
from currents_to_segment.transforms.segment.client import ClientSettings, SegmentClient
from currents_to_segment.transforms.segment.pacing import (
    CLOSED, DRAINED_IN_OUTAGE, GIVEN_UP, OUTAGE_TOO_LONG, PROBE, Breaker)
from currents_to_segment.transforms.senders import ProcessSending, SegmentSender
from tests.pipeline_runs import assert_balanced, read_jsonl
from tests.test_reprocessing import ledger_entries
from tests.test_runners import prism

KEY = "outage-test-key"
SEND = "users.messages.email.Send"
PUSH = "users.messages.pushnotification.Send"


# --- the breaker ------------------------------------------------------------------------------------------------

def _open(breaker):
    breaker.trip("503")
    return breaker


def test_a_held_request_goes_on_when_another_request_finds_segment_answering():
    breaker = _open(Breaker(probe_seconds=60, max_outage_seconds=60))
    threading.Timer(0.3, breaker.reset).start()
    started = time.monotonic()
    assert breaker.wait_for_turn() == CLOSED
    assert 0.25 < time.monotonic() - started < 2


def test_a_held_request_probes_in_its_turn_one_request_a_probe_interval():
    breaker = _open(Breaker(probe_seconds=0.3, max_outage_seconds=60))
    started = time.monotonic()
    assert breaker.wait_for_turn() == PROBE
    first = time.monotonic() - started
    assert breaker.admit()[0] is False  # the turn is taken: the next request waits for the next one
    assert breaker.wait_for_turn() == PROBE
    assert 0.25 < first < 1 and 0.55 < time.monotonic() - started < 1.5


def test_the_watch_gives_up_after_the_longest_outage_once_and_for_good():
    reasons = []
    breaker = Breaker(probe_seconds=60, max_outage_seconds=0.5, on_give_up=reasons.append)
    breaker.trip("503", since=time.monotonic() - 0.2)  # the request that opened it began failing 0.2 s ago
    started = time.monotonic()
    assert breaker.wait_for_turn() == GIVEN_UP
    assert 0.2 < time.monotonic() - started < 0.6
    assert reasons == [OUTAGE_TOO_LONG] and breaker.gave_up == OUTAGE_TOO_LONG
    breaker.reset()  # an answer that comes after it changes nothing: nothing more is sent
    assert breaker.admit()[0] is False and breaker.wait_for_turn() == GIVEN_UP
    assert breaker.wait_while_open() is False and reasons == [OUTAGE_TOO_LONG]


def test_a_drain_during_an_outage_gives_up_at_once_and_not_before_the_outage():
    stop = threading.Event()
    reasons = []
    breaker = Breaker(probe_seconds=60, max_outage_seconds=3600, stop_requested=stop.is_set,
                      on_give_up=reasons.append)
    stop.set()
    assert breaker.wait_while_open() is True  # Segment answers: a drain is a drain, nothing is given up
    _open(breaker)
    started = time.monotonic()
    assert breaker.wait_while_open() is False
    assert time.monotonic() - started < 0.5 and reasons == [DRAINED_IN_OUTAGE]


def test_files_wait_while_segment_is_down_in_a_watch_and_never_in_a_batch_run():
    assert _open(Breaker()).wait_while_open() is True  # a batch run: no holding
    breaker = _open(Breaker(probe_seconds=0.1, max_outage_seconds=60))
    waited = []
    threading.Timer(0.4, breaker.reset).start()
    started = time.monotonic()
    assert breaker.wait_while_open(waited.append) is True
    assert time.monotonic() - started > 0.35 and sum(waited) > 0.35  # told of its waits: throttled time


def test_a_watch_lists_nothing_from_a_failed_attempt_until_segment_answers_and_only_while_its_breaker_lives():
    state = progress.WatchState()
    breaker = Breaker(probe_seconds=60, max_outage_seconds=60)
    state.holds_with(".stop-a", breaker)
    assert not state.holding(".stop-a")
    breaker.failed()  # an attempt failed, to be retried
    assert state.holding(".stop-a") and not state.holding(".stop-b")  # another watch's listings go on
    breaker.trip("503")  # its budget is spent: an outage
    breaker.reset()
    assert not state.holding(".stop-a")
    breaker.failed()
    del breaker  # a breaker no delivery keeps any more holds nothing
    gc.collect()
    assert not state.holding(".stop-a")
    batch = Breaker()
    state.holds_with(".stop-c", batch)
    batch.failed()
    batch.trip("503")
    assert not batch.holding and not state.holding(".stop-c")  # a batch run holds nothing


def test_files_wait_from_the_first_failed_attempt_in_a_watch_only():
    breaker = Breaker(probe_seconds=60, max_outage_seconds=60)
    breaker.failed()  # a request failed and is being retried: not an outage yet, but no new file is read
    threading.Timer(0.3, breaker.reset).start()
    started = time.monotonic()
    assert breaker.wait_while_open() is True and time.monotonic() - started > 0.25
    assert breaker.wait_for_turn() == CLOSED  # requests are held only once the breaker is open
    batch = Breaker()
    batch.failed()
    assert batch.wait_while_open() is True and batch.admit()[0] is True


class _Watched:
    def patterns(self, full):
        return [f"root/{'*' if full else 'recent'}/**"]


def test_a_watch_lists_nothing_while_this_process_holds_its_files_then_everything(monkeypatch):
    monkeypatch.setattr(progress, "_watch_state", progress.WatchState())
    listed = pickle.loads(pickle.dumps(ListedUnlessHolding(_Watched(), ".stop-a")))  # as the workers get it
    assert listed.patterns(full=True) == ["root/*/**"]
    breaker = Breaker(max_outage_seconds=60)
    progress.watch_state().holds_with(".stop-a", breaker)
    breaker.failed()
    assert listed.patterns(full=False) == []
    breaker.reset()
    # The first listing after the outage is a full one (a backlog lands late into old hours), then as asked.
    assert listed.patterns(full=False) == ["root/*/**"]
    assert listed.patterns(full=False) == ["root/recent/**"]


# --- the client -------------------------------------------------------------------------------------------------

def _events(count, first=0):
    return [json.dumps({"type": "track", "event": "Email Sent", "userId": f"u{n}", "messageId": f"m-{n}",
                        "timestamp": "2026-11-28T10:00:00.000Z"}).encode() for n in range(first, first + count)]


def _watch_client(server, **settings):
    settings = ClientSettings(**({"endpoint": server.url, "max_retry_seconds": 0.3, "backoff_base": 0.01,
                                  "backoff_cap": 0.05, "probe_seconds": 0.2, "max_outage_seconds": 60} | settings))
    return SegmentClient(KEY, settings)


def test_in_a_watch_a_request_past_its_budget_is_held_and_delivered_when_segment_answers(server):
    client = _watch_client(server)
    server.always = 503
    threading.Timer(1.5, lambda: setattr(server, "always", None)).start()
    started = time.monotonic()
    report = client.send(_events(3))
    client.close()
    assert report.accepted == [0, 1, 2] and report.rejected == []
    assert time.monotonic() - started > 1.4
    failed = [r for r in server.requests if r.status == 503]
    # The budget (0.3 s of retries), then one probe every 0.2 s: not one attempt per backoff for 1.5 s.
    assert len(failed) < 0.3 / 0.01 + 1.5 / 0.2 and server.accepted_ids() == {"m-0": 1, "m-1": 1, "m-2": 1}


def test_in_a_watch_that_gave_up_the_events_are_held_back_not_retries_exhausted(server):
    client = _watch_client(server, max_outage_seconds=0.8)
    server.always = 503
    report = client.send(_events(2))
    assert [r.reason for r in report.rejected] == ["held_back"] * 2 and report.rejected[0].status == 503
    assert "the watch gave up on Segment (outage_too_long)" in report.rejected[0].response_excerpt
    sent = len(server.requests)
    server.always = None
    assert [r.reason for r in client.send(_events(1)).rejected] == ["held_back"] and len(server.requests) == sent
    client.close()


# --- a family's delivery ----------------------------------------------------------------------------------------

class Counts(dict):
    def __init__(self):
        super().__init__()
        self._lock = threading.Lock()

    def add(self, name, n=1):
        with self._lock:
            self[name] = self.get(name, 0) + n


def _currents_file(folder, event_type, count, first=0, name="f.avro"):
    schema = currents_schemas.schema(event_type)
    path = os.path.join(folder, f"event_type={event_type}", name)
    write_currents_file(path, schema, [make_record(event_type, schema, first + n) for n in range(count)])
    return CurrentsFile(path, os.path.getsize(path), os.path.getmtime(path), event_type)


def _watch_delivery(tmp_path, server, counts, **settings):
    settings = ClientSettings(**({"endpoint": server.url, "requests_in_flight": 2, "max_retry_seconds": 0.3,
                                  "backoff_base": 0.01, "backoff_cap": 0.05, "probe_seconds": 0.2,
                                  "max_outage_seconds": 60} | settings))
    sender = SegmentSender(KEY, settings, ProcessSending(settings, 2), counts.add)
    return Delivery(track=TrackSettings(mapping=CLASSIC), record_filter=RecordFilter(),
                    batch=BatchSettings(3600, 475_000, 2, envelope_bytes(KEY)), sender=sender,
                    letters=jsonl.AccountedLines(str(tmp_path / "dead"), jsonl.DEAD_LETTERS, "run", "dead letters"),
                    count=counts.add), sender


def _opened_at(file, times):
    def open_stream():
        times.append(time.monotonic())
        return open(file.path, "rb")
    return open_stream


def test_a_watch_reads_no_new_file_while_segment_is_down_and_finishes_both_when_it_answers(tmp_path, server):
    first = _currents_file(str(tmp_path), SEND, 5, name="a.avro")
    second = _currents_file(str(tmp_path), SEND, 3, first=5, name="b.avro")
    counts, opened = Counts(), []
    work, sender = _watch_delivery(tmp_path, server, counts)
    server.always = 503
    finished = work.deliver(first, _opened_at(first, opened))  # its requests wait for Segment in their threads
    time.sleep(0.8)  # past the budget: the breaker is open
    back = []
    threading.Timer(1.0, lambda: (back.append(time.monotonic()), setattr(server, "always", None))).start()
    finished += work.deliver(second, _opened_at(second, opened))  # waits until Segment answers
    finished += work.finish()
    sender.close()
    assert opened[1] >= back[0]  # the second file was read only once Segment answered
    assert sorted(finished) == sorted([first, second])
    assert counts[f"sent:{SEND}"] == 8 and not os.path.exists(tmp_path / "dead")
    assert "retries_exhausted" not in counts and "held_back:" + SEND not in counts


def test_a_watch_that_gives_up_holds_back_its_events_and_files_and_letters_nothing(tmp_path, server):
    first = _currents_file(str(tmp_path), SEND, 5, name="a.avro")
    second = _currents_file(str(tmp_path), SEND, 3, first=5, name="b.avro")
    counts, opened = Counts(), []
    work, sender = _watch_delivery(tmp_path, server, counts, max_outage_seconds=1.5)
    server.always = 503
    finished = work.deliver(first, _opened_at(first, opened))
    time.sleep(0.8)  # past the budget: the breaker is open
    finished += work.deliver(second, _opened_at(second, opened))  # waits, then the watch gives up: not read
    finished += work.finish()
    sender.close()
    assert finished == [] and len(opened) == 1
    assert counts[f"read:{SEND}"] == 5 and counts[f"held_back:{SEND}"] == 5 and counts.get(f"sent:{SEND}", 0) == 0
    assert counts["files_held_back"] == 2 and counts[OUTAGE_TOO_LONG] == 1
    assert "dead_letters_made" not in counts and "ledger_files_unbalanced" not in counts
    assert not os.path.exists(tmp_path / "dead") or not os.listdir(tmp_path / "dead")


# --- what a watch says: progress, warnings, the summary ---------------------------------------------------------

class FakeClock:
    def __init__(self):
        self.now = 1_764_702_000.0  # 2025-12-02 19:00:00 UTC

    def __call__(self):
        return self.now


def _failure(retrying, attempt):
    return Attempt(503, "", retrying, attempt, started=0.0)


def test_an_outage_is_warned_about_once_as_it_begins_then_every_few_minutes(monkeypatch):
    clock, stream = FakeClock(), io.StringIO()
    monkeypatch.setattr(metrics, "process_totals", lambda: {f"read:{SEND}": 12, f"sent:{SEND}": 2})
    monkeypatch.setattr(progress, "_watch_state", progress.WatchState())
    progress.watch_state().listed(clock.now)
    progress.watch_state().found("c.avro", clock.now)
    reporter = progress.Reporter(progress.ProgressSettings(interval_seconds=10, retry_budget="30 s per request",
                                                           max_outage_seconds=120 * 3600, probe_seconds=30),
                                 stream=stream, clock=clock)
    for attempt in (1, 2):
        reporter.observe(_failure(True, attempt))
    clock.now += 2
    reporter.observe(_failure(True, 3))
    assert stream.getvalue().splitlines() == [
        "warning: Segment has failed 3 attempts in a row since 19:00:00 UTC (last: 503 Service Unavailable; attempt 3 "
        "of this request); each request is retried for up to 30 s per request, then the watch holds its files until "
        "Segment answers"]
    clock.now += 28
    reporter.observe(_failure(False, 4))  # the budget is spent: the outage begins
    warning = ("warning: Segment has been down for 0:00:30 (since 19:00:00 UTC; last: 503 Service Unavailable): the "
               "watch holds 1 files not read yet and 10 events read and not delivered, lists no new file, probes "
               "Segment every 30 s and goes on when it answers; if Segment is still down at 2025-12-07 19:00:00 UTC (--max_outage_hours "
               "120), it stops, exit 3, leaving them for the next watch")
    assert stream.getvalue().splitlines()[1:] == [warning]
    clock.now += 30
    reporter.observe(_failure(False, 1))  # a probe fails
    reporter.warn_of_outage_if_due()
    reporter.print_progress()  # the progress line says so; the warning is not repeated with it
    assert stream.getvalue().splitlines()[2:] == [
        "progress 0:01:00  files 0/0 read  events read 12  sent 2 (0/s)  requests 0  retries 0  dead-lettered 0"
        "  last listing 19:00:00 UTC  waiting 1 files (oldest landed 0:01:00 ago)  Segment down 0:01:00, holding 10 "
        "events read"]
    clock.now += progress.OUTAGE_WARNING_SECONDS - 30
    reporter.warn_of_outage_if_due()
    assert stream.getvalue().splitlines()[3].startswith("warning: Segment has been down for 0:05:30 (since 19:00:00")
    reporter.observe(Attempt(200, "", False, 1, started=0.0))
    assert stream.getvalue().splitlines()[4] == ("Segment answers again (200 OK) after 0:05:30 of failures; the "
                                                 "watch goes on with the files it held")


def test_events_held_back_balance_the_summary_of_a_watch():
    counters = {f"read:{SEND}": 10, f"sent:{SEND}": 4, f"dead_lettered:{SEND}": 1, f"held_back:{SEND}": 5,
                f"read:{PUSH}": 3, f"sent:{PUSH}": 3, f"dropped_no_external_id:{PUSH}": 0, "files_held_back": 2}
    watched = summary.summarize(counters, watch=True)
    assert watched["balanced"] and watched["held_back"] == 5 and watched["files_held_back"] == 2
    assert watched["by_event_type"][SEND]["held_back"] == 5
    table = summary.format_table(watched)
    assert "held back" in table.splitlines()[0]
    assert ("held back: 2 files not delivered while Segment was down (5 events read from them neither sent nor "
            "dead-lettered): not recorded in the ledger, the next watch reads them again") in table
    batch = summary.summarize({f"read:{SEND}": 1, f"sent:{SEND}": 1})
    assert "held_back" not in batch and "files_held_back" not in batch and "held back" not in summary.format_table(batch)


@pytest.mark.parametrize("value, line", [("0", "error: --max_outage_hours must be positive, got 0.0"),
                                         ("-1", "error: --max_outage_hours must be positive, got -1.0"),
                                         ("nan", "error: --max_outage_hours must be a finite number, got nan")])
def test_the_longest_outage_is_a_positive_number_of_hours(tmp_path, capsys, value, line):
    (tmp_path / "in").mkdir()
    status = main(["--runner=PrismRunner", "--input", f"{tmp_path / 'in'}/**", "--watch", "--dry_run_output",
                   str(tmp_path / "out"), "--max_outage_hours", value])
    assert status == 1 and capsys.readouterr().err.strip() == line


# --- whole watches on Prism -------------------------------------------------------------------------------------

# Small budgets: a request is retried for 2 s, then Segment is probed every 2 s (min(30, --max_retry_seconds)).
OUTAGE_ARGS = ("--max_retry_seconds", "2", "--retry_backoff_seconds", "0.1", "--request_timeout_seconds", "2")


class _Watch:
    """A watch in a process of its own, as a user runs it (on Prism), its stderr read as it comes."""

    started = []  # every one, to be stopped after its test

    def __init__(self, watched, server, out, *extra):
        self.started.append(self)
        self.out = out
        self.job = subprocess.Popen(
            [sys.executable, "-m", "pipeline", *prism(), "--input", f"{watched}/**", "--watch", "--watch_interval", "1",
             "--segment_endpoint", server.url, "--dead_letter_output", str(out / "dead"),
             "--ledger", str(out.parent / "ledger"), "--summary_output", str(out / "summary.json"),
             "--flush_seconds", "0.5", *OUTAGE_ARGS, *extra],
            env={**os.environ, "SEGMENT_WRITE_KEY": KEY}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines, self._stdout = [], []
        self._readers = [threading.Thread(target=lambda: self.lines.extend(line.rstrip("\n") for line in self.job.stderr),
                                          daemon=True),
                         threading.Thread(target=lambda: self._stdout.extend(self.job.stdout), daemon=True)]
        for reader in self._readers:
            reader.start()

    def wait_for(self, what, seconds=90):
        deadline = time.monotonic() + seconds
        while not what():
            assert time.monotonic() < deadline and self.job.poll() is None, "\n".join(self.lines[-12:])
            time.sleep(0.1)

    def kill(self):
        """Stop it, if it still runs (a test that failed): a drain, then an abort (Beam stops its Prism as it
        exits), then SIGKILL."""
        for signum in (signal.SIGTERM, signal.SIGTERM, signal.SIGKILL):
            if self.job.poll() is not None:
                return
            self.job.send_signal(signum)
            try:
                self.job.wait(10)
            except subprocess.TimeoutExpired:
                pass

    def said(self, start):
        return any(line.startswith(start) for line in list(self.lines))

    def end(self, signum=None, seconds=60):
        """Send the signal (if any), wait for the exit; its status and how long it took."""
        started = time.monotonic()
        if signum is not None:
            self.job.send_signal(signum)
        self.job.wait(timeout=seconds)
        for reader in self._readers:
            reader.join(10)
        return self.job.returncode, time.monotonic() - started

    @property
    def stdout(self):
        return "".join(self._stdout)

    def summary(self):
        return json.loads((self.out / "summary.json").read_text())


@pytest.fixture(autouse=True)
def _no_watch_left():
    """A test that fails leaves no watch running."""
    yield
    while _Watch.started:
        _Watch.started.pop().kill()


class _Files:
    """Clean Currents files (nothing in them to dead-letter) landing whole in the watched folder, of two families."""

    def __init__(self, tmp_path):
        self.watched, self._staging = tmp_path / "watched", tmp_path / "staging"
        self.watched.mkdir()
        self._staging.mkdir()
        self.ids = {}  # path → the messageIds Segment must get
        self._next = 0

    def land(self, count, events=6):
        landed = []
        for _ in range(count):
            n, self._next = self._next, self._next + 1
            event_type = (SEND, PUSH)[n % 2]
            schema = currents_schemas.schema(event_type)
            records = [make_record(event_type, schema, n * 1000 + i) for i in range(events)]
            staged = str(self._staging / f"{n}.avro")
            write_currents_file(staged, schema, records)
            path = self.watched / f"event_type={event_type}" / "date=2026-12-02-19" / f"{n}.avro"
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, path)
            self.ids[str(path)] = {record["id"] for record in records}
            landed.append(str(path))
        return landed

    def of(self, paths):
        return {message_id for path in paths for message_id in self.ids[path]}


def _accepted(server):
    return set(server.accepted_ids())


def _recorded(tmp_path):
    return {entry["path"] for entry in ledger_entries(tmp_path / "ledger")}


def test_a_watch_waits_out_an_outage_longer_than_the_retry_budget_and_letters_nothing(tmp_path, server):
    files = _Files(tmp_path)
    before = files.land(2)
    watch = _Watch(files.watched, server, tmp_path / "a", "--progress_seconds", "1")
    watch.wait_for(lambda: _accepted(server) == files.of(before))
    server.always = 503
    down = time.monotonic()
    during = files.land(4)
    watch.wait_for(lambda: watch.said("warning: Segment has been down for"))
    later = files.land(2)  # while Segment is down past the budget: listed, not read
    time.sleep(max(3.0, down + 8 - time.monotonic()))  # a few listings; four times the retry budget
    assert any("Segment down 0:00:" in line for line in watch.lines if line.startswith("progress"))
    server.always = None
    watch.wait_for(lambda: _accepted(server) == files.of(before + during + later))
    status, _ = watch.end(signal.SIGTERM)
    assert status == 0, watch.lines
    assert read_jsonl(tmp_path / "a" / "dead", "dead_letters") == []
    assert set(server.accepted_ids().values()) == {1} and not server.violations
    failed = [json.loads(r.body) for r in server.requests if r.status == 503]
    attempted = {event["messageId"] for body in failed for event in body["batch"]}
    assert attempted and not attempted & files.of(later)  # the files that landed in the outage waited for its end
    run_summary = watch.summary()
    assert_balanced(run_summary)
    assert run_summary["held_back"] == 0 and run_summary["files_held_back"] == 0 and run_summary["dead_lettered"] == 0
    assert _recorded(tmp_path) == set(before + during + later)
    assert any(line.startswith("Segment answers again") for line in watch.lines)


def test_a_watch_stops_after_the_longest_outage_and_the_next_one_sends_what_it_held(tmp_path, server):
    files = _Files(tmp_path)
    before = files.land(2)
    watch = _Watch(files.watched, server, tmp_path / "a", "--quiet", "--max_outage_hours", "0.003")  # 10.8 s
    watch.wait_for(lambda: _accepted(server) == files.of(before))
    server.always = 503
    during = files.land(4)
    status, seconds = watch.end(seconds=90)
    assert status == 3, watch.lines
    assert watch.lines[-1].startswith(
        "error: Segment stayed unreachable for --max_outage_hours 0.003: the watch stopped; 4 files were not "
        "delivered (") and watch.lines[-1].endswith(f"none dead-lettered); they are not recorded in the ledger: the "
                                                    f"next watch with --ledger {tmp_path / 'ledger'} sends them")
    assert any(line.startswith("warning: Segment has been down for") for line in watch.lines)
    assert read_jsonl(tmp_path / "a" / "dead", "dead_letters") == []
    run_summary = watch.summary()
    assert_balanced(run_summary)
    assert run_summary["files_held_back"] == 4 and run_summary["sent"] == len(files.of(before))
    assert "held back: 4 files not delivered" in watch.stdout
    assert _recorded(tmp_path) == set(before)

    server.always = None
    server.accepted.clear()
    again = _Watch(files.watched, server, tmp_path / "b", "--quiet")
    again.wait_for(lambda: _accepted(server) == files.of(during))
    status, _ = again.end(signal.SIGTERM)
    assert status == 0, again.lines
    assert set(server.accepted_ids().values()) == {1}  # the files delivered before were not sent again
    assert _recorded(tmp_path) == set(before + during)


def test_a_drain_during_an_outage_ends_at_once_and_leaves_the_files_it_held(tmp_path, server):
    files = _Files(tmp_path)
    before = files.land(2)
    watch = _Watch(files.watched, server, tmp_path / "a", "--quiet")
    watch.wait_for(lambda: _accepted(server) == files.of(before))
    server.always = 503
    files.land(3)
    watch.wait_for(lambda: watch.said("warning: Segment has been down for"))
    status, seconds = watch.end(signal.SIGTERM)
    assert status == 3, watch.lines
    assert seconds < 20
    assert watch.lines[-1].startswith("error: the watch was drained while Segment was unreachable: it stopped without "
                                      "waiting for Segment; 3 files were not delivered (")
    assert read_jsonl(tmp_path / "a" / "dead", "dead_letters") == []
    assert_balanced(watch.summary())
    assert _recorded(tmp_path) == set(before)
