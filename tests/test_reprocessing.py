"""Replaying days from a Currents root: hour ranges, event-time selection, --plan and the ledger."""
import datetime
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from currents_to_segment.transforms.currents import schemas as currents_schemas
from currents_to_segment.transforms.currents.partitions import parse_hour
from currents_to_segment.pipeline.sample_bucket import currents_path, make_record, write_currents_file
from tests.pipeline_runs import RUNNER, run_job
from tests.segment_server import SegmentServer

KEY = "reprocessing-key"
TYPES = ("users.messages.email.Send", "users.canvas.Entry", "users.behaviors.Uninstall")
HOURS = [f"2024-03-0{day}T{h:02d}" for day in (1, 2, 3) for h in (0, 12, 23)]


def epoch(text):
    return int(parse_hour(text).timestamp())


def write_partition(root, event_type, queued_hour, times, seq, offset=0):
    """One file in the `queued_hour` partition holding events that happened at `times`."""
    schema = currents_schemas.schema(event_type)
    records = [make_record(event_type, schema, seq + i, time=t) for i, t in enumerate(times)]
    write_currents_file(currents_path(root, event_type, parse_hour(queued_hour), offset=offset), schema, records)
    return records


@pytest.fixture
def days(tmp_path):
    """Three days; in each partition two events of its own hour, and in the 00 and 12 partitions
    one late event from 2 and 26 hours earlier (so partitions of a day hold events of the day before)."""
    root = str(tmp_path / "currents")
    events = []  # (queued hour, event time, id)
    seq = 0
    for queued in HOURS:
        for event_type in TYPES:
            times = [epoch(queued) + 60, epoch(queued) + 1800]
            if not queued.endswith("T23"):
                times += [epoch(queued) - 2 * 3600, epoch(queued) - 26 * 3600]
            for record in write_partition(root, event_type, queued, times, seq):
                events.append((queued, record["time"], record["id"]))
            seq += 100
    return root, events


def send(tmp_path, server, *args, name="run"):
    out = tmp_path / name
    out.mkdir(exist_ok=True)
    return run_job(out, "--segment_endpoint", server.url, "--segment_write_key", KEY, *args)


def test_one_day_sends_exactly_that_days_partitions(tmp_path, days, server):
    root, events = days
    status, summary, _ = send(tmp_path, server, "--currents_root", root, "--start", "2024-03-02",
                              "--end", "2024-03-03")
    assert status == 0
    assert server.accepted_ids() == Counter(i for queued, _, i in events if queued.startswith("2024-03-02"))
    assert summary["events_read"] == summary["sent"] == 3 * len(TYPES) * 4 - len(TYPES) * 2
    assert not server.violations


def test_by_event_time_sends_exactly_the_events_that_happened_that_day(tmp_path, days, server):
    root, events = days
    day_start, day_end = epoch("2024-03-02"), epoch("2024-03-03")
    status, summary, _ = send(tmp_path, server, "--currents_root", root, "--start", "2024-03-02",
                              "--end", "2024-03-03", "--by_event_time", "--late_hours", "24")
    assert status == 0
    assert server.accepted_ids() == Counter(i for _, t, i in events if day_start <= t < day_end)
    read_partitions = [e for e in events if "2024-03-02" <= e[0] < "2024-03-04"]
    assert summary["events_read"] == len(read_partitions)
    assert summary["outside_time_range"] == len(read_partitions) - summary["sent"] > 0
    assert summary["events_read"] == summary["sent"] + summary["outside_time_range"]


def test_plan_lists_partitions_files_sizes_and_counts_and_sends_nothing(tmp_path, days, server, capsys,
                                                                        monkeypatch):
    root, _ = days
    monkeypatch.delenv("SEGMENT_WRITE_KEY", raising=False)
    status, summary, _ = run_job(tmp_path, "--currents_root", root, "--start", "2024-03-01T12",
                                 "--end", "2024-03-02", "--event_types", "canvas_campaign,users.behaviors.Uninstall",
                                 "--plan")
    out = capsys.readouterr().out.splitlines()
    assert status == 0 and summary is None and server.requests == []
    partitions = [line for line in out if "  date=" in line]
    assert [line.split("  ")[:2] for line in partitions] == [
        ["users.behaviors.Uninstall", "date=2024-03-01-12"], ["users.behaviors.Uninstall", "date=2024-03-01-23"],
        ["users.canvas.Entry", "date=2024-03-01-12"], ["users.canvas.Entry", "date=2024-03-01-23"]]
    assert [line.rsplit("  ", 1)[1] for line in partitions] == ["4 events", "2 events", "4 events", "2 events"]
    assert out[-1].startswith("TOTAL  4 partitions  4 files") and out[-1].endswith("12 events to read")
    assert sum(1 for line in out if line.startswith("    ") and line.endswith(" events")) == 4


def ledger_entries(ledger_dir):
    """Every entry in a ledger folder, as the layout is documented: `<partition>/*.jsonl` files, each a header line
    ({"ledger": 2, "run", "scope", "destination"}) and the entries it applies to; each entry with its header's
    fields."""
    entries = []
    for folder, _, names in sorted(os.walk(ledger_dir)):
        for name in sorted(names):
            if not name.endswith(".jsonl") or name.startswith("."):
                continue
            head = {}
            with open(os.path.join(folder, name), encoding="utf-8") as stream:
                for line in stream:
                    found = json.loads(line)
                    if "ledger" in found:
                        head = {field: value for field, value in found.items() if field != "ledger"}
                    else:
                        entries.append({**head, **found})
    return entries


def test_ledger_second_run_sends_nothing_and_a_new_file_in_an_old_hour_is_picked_up(tmp_path, days, server):
    root, events = days
    ledger = str(tmp_path / "ledger")
    common = ("--currents_root", root, "--ledger", ledger)
    status, first, _ = send(tmp_path, server, *common, name="first")
    assert status == 0 and first["sent"] == len(events) and first["ledger"]["files_recorded"] == 27
    assert len(ledger_entries(ledger)) == 27
    requests_before = len(server.requests)

    status, second, _ = send(tmp_path, server, *common, name="second")
    assert status == 0 and len(server.requests) == requests_before
    assert second["events_read"] == 0 and second["ledger"] == {"files_skipped": 27, "files_recorded": 0}

    late = write_partition(root, "users.canvas.Entry", "2024-03-01T12", [epoch("2024-03-01T12")], 9_000, offset=77)
    status, third, _ = send(tmp_path, server, *common, name="third")
    assert status == 0 and third["sent"] == 1 and server.accepted[-1]["messageId"] == late[0]["id"]
    assert third["ledger"] == {"files_skipped": 27, "files_recorded": 1}

    status, rerun, _ = send(tmp_path, server, *common, "--rerun", name="rerun")
    assert status == 0 and rerun["sent"] == len(events) + 1


@pytest.mark.parametrize("second", ["namespace", "write key", "endpoint", "redacted field"])
def test_a_second_destination_with_the_same_ledger_receives_everything(tmp_path, days, second, capsys):
    """One ledger, two destinations: files the first received are sent to the second, which the ledger then
    records too; a run to either one again sends nothing, and --plan shows each as skipped."""
    root, events = days
    ledger = str(tmp_path / "ledger")
    other_key = "second-source-key"
    with SegmentServer(write_key=KEY) as first_server, SegmentServer(write_key=other_key) as other_server:
        first = ("--segment_endpoint", first_server.url, "--segment_write_key", KEY)
        other = {"namespace": (*first, "--message_id_namespace", "second-source"),
                 "write key": ("--segment_endpoint", first_server.url, "--segment_write_key", other_key),
                 "endpoint": ("--segment_endpoint", other_server.url, "--segment_write_key", other_key),
                 "redacted field": (*first, "--redact_fields", "campaign_name")}[second]
        common = ("--currents_root", root, "--ledger", ledger)
        # With another write key to the same endpoint, the source's key was rotated: the server takes the new one.
        first_key = {first: KEY, other: other_key if second == "write key" else KEY}

        def run(destination, name):
            first_server.write_key = first_key[destination]
            first_server.accepted.clear()
            other_server.accepted.clear()
            status, result, _ = run_job(tmp_path / name, *common, *destination)
            assert status == 0
            return result, len(first_server.accepted) + len(other_server.accepted)

        result, received = run(first, "first")
        assert received == result["sent"] == len(events)
        result, received = run(other, "second")
        assert received == result["sent"] == len(events)
        # Sent again within a day with the same messageIds (only a field redacted): Segment drops them, and the
        # run says so; another namespace, write key or endpoint has new messageIds, or another source.
        resent = {"files_sent_otherwise_within_24h": 27} if second == "redacted field" else {}
        assert result["ledger"] == {"files_skipped": 0, "files_recorded": 27,
                                    "files_recorded_for_other_destinations": 27, **resent}
        result, received = run(other, "second-again")
        assert received == 0 and result["ledger"] == {"files_skipped": 27, "files_recorded": 0}
        result, received = run(first, "first-again")
        assert received == 0 and result["ledger"]["files_skipped"] == 27

        capsys.readouterr()
        assert run_job(tmp_path / "plan", *common, *other, "--plan")[0] == 0
        plan = capsys.readouterr().out
        assert plan.count("(in the ledger: skipped)") == 27 and plan.strip().endswith("0 events to read")
    entries = ledger_entries(ledger)
    assert len(entries) == 2 * 27 and KEY not in json.dumps(entries) and other_key not in json.dumps(entries)
    assert {entry["destination"]["write_key"][:7] for entry in entries} == {"sha256:"}


def test_a_plan_without_a_write_key_counts_the_entries_of_any_key(tmp_path, days, server, capsys, monkeypatch):
    root, _ = days
    ledger = str(tmp_path / "ledger")
    assert send(tmp_path, server, "--currents_root", root, "--ledger", ledger)[0] == 0
    monkeypatch.delenv("SEGMENT_WRITE_KEY", raising=False)
    capsys.readouterr()
    assert run_job(tmp_path / "plan", "--currents_root", root, "--ledger", ledger, "--segment_endpoint", server.url,
                   "--plan")[0] == 0
    plan = capsys.readouterr().out.splitlines()
    assert plan[0].startswith("(no write key was given: files the ledger holds for this endpoint")
    assert sum(line.endswith("(in the ledger: skipped)") for line in plan) == 27
    assert run_job(tmp_path / "plan", "--currents_root", root, "--ledger", ledger, "--segment_endpoint", server.url,
                   "--message_id_namespace", "other", "--plan")[0] == 0
    assert not any(line.endswith("(in the ledger: skipped)") for line in capsys.readouterr().out.splitlines())


def test_event_time_runs_with_a_ledger_do_not_skip_files_they_sent_only_in_part(tmp_path, days, server):
    root, events = days
    ledger = str(tmp_path / "ledger")
    for day, following in (("2024-03-02", "2024-03-03"), ("2024-03-03", "2024-03-04")):
        status, _, _ = send(tmp_path, server, "--currents_root", root, "--ledger", ledger, "--by_event_time",
                            "--start", day, "--end", following, name=day)
        assert status == 0
    # Day 3's partitions were read by the day-2 run for its late events; day 3 still gets all of its own.
    in_days = {i for _, t, i in events if epoch("2024-03-02") <= t < epoch("2024-03-04")}
    assert server.accepted_ids() == Counter(in_days)
    status, again, _ = send(tmp_path, server, "--currents_root", root, "--ledger", ledger, "--by_event_time",
                            "--start", "2024-03-03", "--end", "2024-03-04", name="again")
    assert status == 0 and again["events_read"] == 0 and again["ledger"]["files_recorded"] == 0


def test_a_run_killed_midway_records_nothing_and_the_next_run_delivers_everything(tmp_path, days, server):
    root, events = days
    ledger = str(tmp_path / "ledger")
    args = [sys.executable, "-m", "pipeline", RUNNER, "--currents_root", root, "--ledger", ledger,
            "--segment_endpoint", server.url, "--dead_letter_output", str(tmp_path / "dl-killed"),
            "--max_batch_events", "3", "--max_requests_per_second", "4"]
    killed = subprocess.Popen(args, env={**os.environ, "SEGMENT_WRITE_KEY": KEY},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(server.accepted) < 6 and time.monotonic() < deadline and killed.poll() is None:
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)
    delivered_before = set(server.accepted_ids())
    assert 6 <= len(delivered_before) < len(events)
    assert ledger_entries(ledger) == []

    status, summary, _ = send(tmp_path, server, "--currents_root", root, "--ledger", ledger)
    assert status == 0 and summary["sent"] == len(events)
    assert set(server.accepted_ids()) == {i for _, _, i in events}
    assert len(ledger_entries(ledger)) == 27


def test_old_ranges_warn_about_deduplication_and_integrations_are_sent(tmp_path, days, server, capsys):
    root, _ = days
    status, _, _ = send(tmp_path, server, "--currents_root", root, "--start", "2024-03-03T23",
                        "--integrations", '{"All": false, "Amazon S3": true}')
    assert status == 0
    assert "deduplicates messageIds for about 24 h only" in capsys.readouterr().err
    assert {json.dumps(m["integrations"]) for m in server.accepted} == {'{"All": false, "Amazon S3": true}'}


@pytest.mark.parametrize("args,message", [
    (["--input", "x", "--currents_root", "y"], "either --input or --currents_root"),
    (["--currents_root", "{root}", "--start", "2024-03-02", "--end", "2024-03-01"], "is not after --start"),
    (["--currents_root", "{root}", "--start", "2024-03-02", "--end", "2024-03-02"], "is not after --start"),
    (["--currents_root", "{root}", "--start", "March"], "--start: 'March' is not YYYY-MM-DD"),
    (["--input", "{root}/**", "--start", "2024-03-01"], "--start select partitions under --currents_root"),
    (["--currents_root", "{root}", "--by_event_time", "--start", "2024-03-01"], "needs both --start and --end"),
    (["--currents_root", "{root}", "--integrations", "[1]"], "--integrations must be a JSON object"),
    (["--currents_root", "{root}", "--start", "2030-01-01"], "no hour partition selected"),
    (["--currents_root", "{root}/missing"], "cannot list --currents_root"),
])
def test_range_configuration_errors(tmp_path, days, capsys, args, message):
    root, _ = days
    status = run_job(tmp_path, "--segment_write_key", KEY, *[a.replace("{root}", root) for a in args])[0]
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(err) == 1 and message in err[0]
