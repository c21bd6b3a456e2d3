"""Nothing lost across runs, and a run that says what it is doing.

Whole pipelines into the loopback Segment server, each for one way a run used to lose events or hide
what happened: a dry run before a real run with one ledger, two runs sharing a dead-letter folder,
records no track call can be made of, failures after sending began (a dead-letter write that fails,
Ctrl-C, SIGTERM, a 401), Segment unreachable or rejecting everything, and a summary that does not balance.
"""
import json
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter

import pytest

from currents_to_segment.pipeline import main as job_main
from currents_to_segment.transforms.currents import schemas as currents_schemas
from currents_to_segment.pipeline.sample_bucket import currents_path, make_record, make_sample_bucket, write_currents_file
from currents_to_segment.transforms.currents.partitions import parse_hour
from tests.pipeline_runs import RUNNER, lose_one_sent_event, assert_balanced, expected_calls, read_jsonl, received_calls, run_job
from tests.segment_server import SegmentServer
from tests.test_reprocessing import ledger_entries
from currents_to_segment.transforms import progress

KEY = "outcome-test-key-31f9"
EMAIL = "users.messages.email"
PUSH = "users.messages.pushnotification"
PROGRESS = re.compile(r"^progress \d+:\d\d:\d\d  files \d+/\d+ read  events read [\d,]+  sent [\d,]+ \([\d,]+/s\)  "
                      r"requests [\d,]+  retries [\d,]+  dead-lettered [\d,]+$")


def send(out, server, *args):
    out.mkdir(parents=True, exist_ok=True)
    return run_job(out, "--segment_endpoint", server.url, "--segment_write_key", KEY, "--quiet", *args)


def only(manifest, prefix):
    """The manifest restricted to the event types starting with prefix."""
    return dict(manifest, records=[r for r in manifest["records"] if r["event_type"].startswith(prefix)])


def job_process(args, env=None, **popen):
    """The job in a process of its own, as a scheduler starts it."""
    return subprocess.Popen([sys.executable, "-m", "pipeline", RUNNER, *args], env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("error:")]


# --- the ledger and the dead letters across runs -------------------------------------------------------

def test_a_dry_run_takes_no_ledger_so_the_real_run_after_it_sends_everything(tmp_path, bucket, server, capsys):
    root, manifest = bucket
    ledger = tmp_path / "ledger"
    status, _, _ = run_job(tmp_path / "dry", "--input", f"{root}/**", "--dry_run_output", str(tmp_path / "req"),
                           "--ledger", str(ledger))
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(err) == 1 and "a dry run sends nothing, so it takes no --ledger" in err[0]
    assert ledger_entries(ledger) == [] and not (tmp_path / "req").exists()

    status, dry, _ = run_job(tmp_path / "dry", "--input", f"{root}/**", "--dry_run_output", str(tmp_path / "req"))
    assert status == 0 and dry["sent"] == sum(expected_calls(manifest).values()) and server.requests == []

    status, real, _ = send(tmp_path / "real", server, "--input", f"{root}/**", "--ledger", str(ledger))
    assert status == 0 and received_calls(server.accepted) == expected_calls(manifest)
    assert real["ledger"] == {"files_skipped": 0, "files_recorded": len(manifest["files"])}


def test_two_runs_into_one_dead_letter_folder_keep_each_others_letters(tmp_path, bucket, server, capsys):
    root, manifest = bucket
    dead, ledger = str(tmp_path / "dead"), str(tmp_path / "ledger")
    server.always = 500
    status, first, _ = run_job(tmp_path / "a", "--input", f"{root}/**/event_type={PUSH}.*/**",
                               "--segment_endpoint", server.url, "--segment_write_key", KEY, "--quiet",
                               "--dead_letter_output", dead, "--ledger", ledger,
                               "--max_retry_attempts", "2", "--retry_backoff_seconds", "0.001")
    assert status == 3 and first["sent"] == 0
    push_calls = expected_calls(only(manifest, PUSH))
    assert (first["exit_code"], first["outcome"]) == (3, "segment_unreachable")
    assert first["dead_letters_by_reason"] == {"retries_exhausted": sum(push_calls.values())}
    letters_of_a = read_jsonl(dead, "dead_letters")
    assert received_calls(l["message"] for l in letters_of_a) == push_calls
    assert {l["reason"] for l in letters_of_a} == {"retries_exhausted"}
    assert first["ledger"]["files_recorded"] == len([f for f in manifest["files"] if f"event_type={PUSH}." in f])

    server.always = None
    status, second, _ = run_job(tmp_path / "b", "--input", f"{root}/**/event_type={EMAIL}.*/**",
                                "--segment_endpoint", server.url, "--segment_write_key", KEY, "--quiet",
                                "--dead_letter_output", dead, "--ledger", ledger)
    assert status == 0 and second["dead_lettered"] == 1 and second["unreadable_files"] == 2
    both = read_jsonl(dead, "dead_letters")
    assert len(both) == len(letters_of_a) + 3
    assert [l for l in both if l["reason"] == "retries_exhausted"] == letters_of_a
    names = sorted(os.listdir(dead))
    assert len({name.split("-")[2] for name in names}) == 2  # one run id each, nothing hidden left behind
    assert all(re.fullmatch(r"dead_letters-\d{8}T\d{6}Z-[0-9a-f]{8}-[0-9a-f]{12}\.jsonl", n) for n in names)

    capsys.readouterr()
    accepted_before = len(server.accepted)
    assert job_main.main(["replay-dead-letters", dead, "--segment_endpoint", server.url,
                          "--segment_write_key", KEY]) == 0
    assert received_calls(server.accepted[accepted_before:]) == push_calls
    assert f"replayed {len(letters_of_a)}: accepted {len(letters_of_a)}, failed again 0" in capsys.readouterr().out


# --- a bad record costs only itself ----------------------------------------------------------------------

def _long_time_schema(event_type):
    """The newest schema of the type, with `time` as a long (as some producers write it)."""
    schema = json.loads(json.dumps(currents_schemas.schema(event_type)))
    for field in schema["fields"]:
        if field["name"] == "time":
            field["type"] = "long"
    return schema


BAD_RECORDS = {  # overrides → what the dead letter's error says
    "time 10^15": ({"time": 10 ** 15}, "outside the years 1970-9999 as UNIX seconds (it looks like microseconds)"),
    "time 2^63-1": ({"time": 2 ** 63 - 1}, "outside the years 1970-9999 as UNIX seconds"),
    "milliseconds": ({"time": 1709294400000}, "(it looks like milliseconds)"),
    "before 1970": ({"time": -86400}, "outside the years 1970-9999"),
    "year 10000": ({"time": 253402300800}, "outside the years 1970-9999 as UNIX seconds"),  # no unit: not 1978 in ms
    "NUL in the user id": ({"external_user_id": "user\x00-7"}, "NUL or other control characters"),
    "zero-width user id": ({"external_user_id": "\u200b\u200b"}, "only invisible characters"),
    "id over 100 chars": ({"id": "x" * 101}, "over Segment's 100 for a messageId"),
}


def test_records_that_cannot_be_mapped_are_dead_lettered_and_the_run_goes_on(tmp_path, server):
    root = tmp_path / "bucket"
    event_type = "users.messages.email.Send"
    schema = _long_time_schema(event_type)
    good = [make_record(event_type, schema, seq, time=1709294400 + seq) for seq in range(5)]
    bad = {name: make_record(event_type, schema, 100 + i, **overrides)
           for i, (name, (overrides, _)) in enumerate(BAD_RECORDS.items())}
    records = good[:2] + list(bad.values()) + good[2:]
    write_currents_file(currents_path(str(root), event_type, parse_hour("2024-03-01T12")), schema, records)

    status, result, letters = send(tmp_path / "out", server, "--input", f"{root}/**")

    assert status == 0
    assert sorted(server.accepted_ids()) == sorted(r["id"] for r in good)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000Z", m["timestamp"]) for m in server.accepted)
    assert not server.violations
    by_id = {letter["record"]["id"]: letter for letter in letters}
    assert sorted(by_id) == sorted(r["id"] for r in bad.values())
    for name, (_, reason) in BAD_RECORDS.items():
        letter = by_id[bad[name]["id"]]
        assert letter["reason"] == "invalid_record" and reason in letter["error"], name
        assert ("looks like" in letter["error"]) == ("looks like" in reason), name
    assert result["dead_lettered"] == len(BAD_RECORDS) and result["sent"] == len(good)
    assert_balanced(result)


# --- failures after sending began -------------------------------------------------------------------------

def test_a_wrong_key_found_mid_run_is_one_line_after_the_summary(tmp_path, bucket, server):
    root, _ = bucket
    job = job_process(["--input", f"{root}/**", "--segment_endpoint", server.url,
                       "--dead_letter_output", str(tmp_path / "dead"), "--summary_output", str(tmp_path / "s.json")],
                      env={"SEGMENT_WRITE_KEY": "wrong-key-0000"})
    out, err = job.communicate(timeout=240)
    lines = [line for line in err.splitlines() if not line.startswith("progress ")]
    assert job.returncode == 1
    assert len(lines) == 1 and lines[0].startswith("error: Segment answered 401 Unauthorized"), err
    assert "Traceback" not in err and "wrong-key-0000" not in err + out
    written = json.loads((tmp_path / "s.json").read_text())
    assert "TOTAL" in out and (written["exit_code"], written["outcome"]) == (1, "refused_by_segment")
    assert server.accepted == []


def _limit_file_size(limit):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_dead_letters_that_cannot_be_written_stop_the_run_with_one_line_a_summary_and_no_ledger(
        tmp_path, bucket, server):
    root, manifest = bucket
    ledger = tmp_path / "ledger"
    # The oversize event's letter is over 40,000 bytes: past this limit, its write fails as a full disk would.
    job = job_process(["--input", f"{root}/**", "--segment_endpoint", server.url, "--quiet",
                       "--dead_letter_output", str(tmp_path / "dead"), "--ledger", str(ledger)],
                      env={"SEGMENT_WRITE_KEY": KEY}, preexec_fn=_limit_file_size(30_000))
    out, err = job.communicate(timeout=240)
    [line] = error_lines(err)
    assert job.returncode == 4, err
    assert line.startswith(f"error: cannot write dead letters to {tmp_path / 'dead'}: OSError: [Errno 27] File too large")
    assert re.search(r": [1-9][\d,]* events read were neither delivered nor dead-lettered; nothing was recorded "
                     r"in the ledger; run again", line), line
    assert "Traceback" not in err
    assert "TOTAL" in out and "balanced: NO" in out  # what happened, as far as it went
    assert ledger_entries(ledger) == []
    assert os.listdir(tmp_path / "dead") == []  # nor the hidden temporary file, which would keep a full disk full
    # The run stops at the first letters it cannot keep: what was sent before is part of what was expected.
    assert not set(received_calls(server.accepted)) - set(expected_calls(manifest))


@pytest.mark.parametrize("signum,status,name", [(signal.SIGINT, 130, "Ctrl-C"), (signal.SIGTERM, 143, "SIGTERM")])
def test_a_stopped_run_says_so_prints_its_summary_and_records_nothing(tmp_path, bucket, server, signum, status,
                                                                       name):
    root, manifest = bucket
    ledger = tmp_path / "ledger"
    job = job_process(["--input", f"{root}/**", "--segment_endpoint", server.url, "--quiet",
                       "--dead_letter_output", str(tmp_path / "dead"), "--ledger", str(ledger),
                       "--max_batch_events", "3", "--max_requests_per_second", "5"], env={"SEGMENT_WRITE_KEY": KEY})
    deadline = time.monotonic() + 120
    while len(server.accepted) < 6 and time.monotonic() < deadline and job.poll() is None:
        time.sleep(0.05)
    job.send_signal(signum)
    out, err = job.communicate(timeout=60)
    [line] = error_lines(err)
    assert job.returncode == status, err
    assert line.startswith(f"error: interrupted by {name}: ")
    assert "events read were neither delivered nor dead-lettered; nothing was recorded in the ledger" in line
    assert "Traceback" not in err and "TOTAL" in out
    assert 6 <= len(server.accepted) < sum(expected_calls(manifest).values())
    assert ledger_entries(ledger) == []


def test_a_summary_that_does_not_balance_fails_the_run_and_records_nothing(tmp_path, bucket, server, capsys,
                                                                           monkeypatch):
    """As if a runner lost events on the way: the counters it reports say one event fewer was sent."""
    root, manifest = bucket
    lose_one_sent_event(monkeypatch)
    ledger = tmp_path / "ledger"
    status, result, _ = send(tmp_path / "out", server, "--input", f"{root}/**", "--ledger", str(ledger))
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 5 and result["balanced"] is False
    assert err[-1].startswith("error: the summary does not balance: 1 events read are neither sent, dropped nor "
                              "dead-lettered")
    assert received_calls(server.accepted) == expected_calls(manifest)
    assert ledger_entries(ledger) == []


# --- telling what happens ----------------------------------------------------------------------------------

def test_progress_lines_come_at_a_steady_pace_and_quiet_turns_them_off(tmp_path, bucket, server):
    root, _ = bucket
    args = ["--input", f"{root}/**/event_type={EMAIL}.*/**", "--segment_endpoint", server.url,
            "--dead_letter_output", str(tmp_path / "dead"), "--max_batch_events", "2",
            "--max_requests_per_second", "20", "--progress_seconds", "0.3"]
    job = job_process(args, env={"SEGMENT_WRITE_KEY": KEY})
    _, err = job.communicate(timeout=240)
    lines = [line for line in err.splitlines() if line.startswith("progress ")]
    assert job.returncode == 0 and len(lines) >= 3, err
    assert all(PROGRESS.match(line) for line in lines), lines
    sent = [int(re.search(r"  sent ([\d,]+)", line).group(1).replace(",", "")) for line in lines]
    assert sent == sorted(sent) and sent[-1] > sent[0]

    job = job_process(args + ["--quiet"], env={"SEGMENT_WRITE_KEY": KEY})
    _, err = job.communicate(timeout=240)
    assert job.returncode == 0 and not [line for line in err.splitlines() if line.startswith("progress")]


@pytest.mark.parametrize("trouble", ["503", "connection refused"])
def test_segment_trouble_is_a_warning_at_once_with_since_when_and_the_budget(tmp_path, bucket, server, trouble):
    root, _ = bucket
    endpoint = server.url if trouble == "503" else "http://127.0.0.1:9"
    server.always = 503
    job = job_process(["--input", f"{root}/**/event_type={PUSH}.Send/**", "--segment_endpoint", endpoint,
                       "--quiet", "--dead_letter_output", str(tmp_path / "dead"), "--max_retry_attempts", "4",
                       "--retry_backoff_seconds", "0.01",
                       "--max_requests_in_flight", "1"],  # one request at a time: its attempts are the ones in a row
                      env={"SEGMENT_WRITE_KEY": KEY})
    _, err = job.communicate(timeout=240)
    warnings = [line for line in err.splitlines() if line.startswith("warning: Segment has failed")]
    assert job.returncode == 3 and warnings, err
    last = "503 Service Unavailable" if trouble == "503" else "ConnectionError: [Errno 111] Connection refused"
    assert re.match(r"warning: Segment has failed 3 attempts in a row since \d\d:\d\d:\d\d UTC \(last: "
                    + re.escape(last) + r"; attempt 3 of this request\); each request is retried for up to 4 "
                    r"attempts or 300 s per request, then its events are dead-lettered as retries_exhausted$",
                    warnings[0]), warnings[0]
    assert err.index(warnings[0]) < err.index("error: Segment stayed unreachable")


def test_segment_rejecting_every_event_is_a_warning_with_the_count_and_where_and_an_exit_status_of_its_own(
        tmp_path, bucket, server, capsys):
    root, manifest = bucket
    server.poison = lambda event: True
    status, result, letters = send(tmp_path / "out", server, "--input", f"{root}/**")
    err = capsys.readouterr().err
    rejected = sum(expected_calls(manifest).values())
    assert status == 6 and result["sent"] == 0 and result["rejected_by_segment"] == rejected
    assert (result["exit_code"], result["outcome"]) == (6, "all_rejected")
    assert result["dead_letters_by_reason"]["rejected_by_segment"] == rejected
    assert sum(1 for letter in letters if letter["reason"] == "rejected_by_segment") == rejected
    assert (f"WARNING: Segment rejected {rejected:,} events (400/413): they are in the dead letters under "
            f"{tmp_path / 'out' / 'dead_letters'} with reason rejected_by_segment") in err
    assert err.strip().splitlines()[-1] == (f"error: Segment rejected every event it was sent ({rejected:,}) and "
                                            "accepted none: check the endpoint and what the source accepts "
                                            "(Segment's answer is in each dead letter)")


def test_segment_rejecting_some_events_is_a_warning_and_exit_0(tmp_path, bucket, server, capsys):
    root, manifest = bucket
    server.poison = lambda event: event["event"] == "Email Sent"
    status, result, _ = send(tmp_path / "out", server, "--input", f"{root}/**")
    assert status == 0 and result["sent"] > 0 and result["rejected_by_segment"] > 0
    assert "WARNING: Segment rejected" in capsys.readouterr().err


def test_fail_on_dead_letters_says_why_it_exits_2(tmp_path, bucket, server, capsys):
    root, _ = bucket
    status, result, _ = send(tmp_path / "out", server, "--input", f"{root}/**", "--fail_on_dead_letters")
    assert status == 2 and result["dead_lettered"] == 1 and result["unreadable_files"] == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: --fail_on_dead_letters: 1 events dead-lettered and 2 unreadable parts of files (their letters are "
        f"under {tmp_path / 'out' / 'dead_letters'})"]


def test_the_summary_reads_each_row_balances_and_says_what_ran(tmp_path, bucket, server, capsys):
    root, manifest = bucket
    status, result, _ = run_job(tmp_path, "--input", f"{root}/**", "--dry_run_output", str(tmp_path / "req"),
                                "--window_seconds", "120", "--integrations", '{"All": false}')
    out = capsys.readouterr().out
    assert status == 0 and result["dry_run"] is True and result["balanced"] is True
    assert re.search(r"^event type +read +no external id +unsupported +would send +dead-lettered$", out, re.M)
    for row in result["by_event_type"].values():
        assert row["read"] == (row["dropped_no_external_id"] + row["unsupported_event_type"] + row["sent"]
                               + row["dead_lettered"])
    unmapped = {t for t, row in result["by_event_type"].items() if row["unsupported_event_type"]}
    assert unmapped == {"users.messages.email.Deferral", "users.behaviors.subscription.GlobalStateChange"}
    assert result["duplicate_ids"] == len(manifest["duplicate_ids"]) == 1
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{8}", result["run_id"])
    assert result["started_at"] < result["ended_at"] and result["duration_seconds"] > 0
    assert result["inputs"] == {"input": [f"{root}/**"], "unmatched": []}
    assert result["delivery"]["window_seconds"] == 120 and result["delivery"]["integrations"] == {"All": False}
    assert (result["exit_code"], result["outcome"]) == (0, "completed")
    assert result["requests_by_status"] == {} and result["bytes_sent"] > 0  # written, not sent: no status
    assert [name for name in os.listdir(tmp_path / "req") if result["run_id"] in name]


# --- configuration errors: one line each, before anything is sent, options then outputs then the key ------

@pytest.mark.parametrize("args,message", [
    (["--max_retry_seconds", "nan"], "--max_retry_seconds must be a finite number, got nan"),
    (["--request_timeout_seconds", "inf"], "--request_timeout_seconds must be a finite number, got inf"),
    (["--segment_endpoint", "http://127.0.0.1:99999"], "Port out of range"),
    (["--segment_endpoint", "http://127.0.0.1:0"], "port 0 cannot be connected to"),
    (["--input", "{root}"], "names a folder: give a file pattern, e.g. '{root}/**'"),
    (["--summary_output", "{file}/summary.json"], "cannot write --summary_output {file}/summary.json"),
    (["--dead_letter_output", "{file}/dead"], "cannot write --dead_letter_output {file}/dead"),
    (["--summary_output", "{root}"], "it is a folder; give a file name"),
    (["--segment_write_key", "key with spaces"], "cannot be sent in an HTTP header"),
    (["--segment_write_key", "clé-ünicode"], "cannot be sent in an HTTP header"),
    # The order: options first, then the outputs, then the key.
    (["--max_retry_seconds", "nan", "--summary_output", "{file}/s.json"], "--max_retry_seconds must be"),
    (["--summary_output", "{file}/s.json", "--segment_write_key", "bad key"], "cannot write --summary_output"),
])
def test_configuration_errors_are_one_line_and_nothing_is_sent(tmp_path, bucket, server, capsys, monkeypatch, args,
                                                             message):
    root, _ = bucket
    monkeypatch.delenv("SEGMENT_WRITE_KEY", raising=False)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    fill = {"{root}": root, "{file}": str(blocker)}

    def filled(text):
        for placeholder, value in fill.items():
            text = text.replace(placeholder, value)
        return text

    base = ["--input", f"{root}/**", "--segment_endpoint", server.url, "--segment_write_key", KEY]
    given = [filled(a) for a in args]
    for flag in ("--input", "--segment_endpoint", "--segment_write_key"):
        if flag in given:
            at = base.index(flag)
            del base[at:at + 2]
    status = job_main.main([RUNNER, "--dead_letter_output", str(tmp_path / "dead"), *base, *given])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(err) == 1 and err[0].startswith("error: ") and filled(message) in err[0], err
    assert server.requests == [] and not (tmp_path / "dead").exists()
    assert KEY not in err[0] and "key with spaces" not in err[0]


def test_the_exit_codes_of_help_and_of_the_readme_are_the_same():
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md"), encoding="utf-8").read()
    table = re.findall(r"^\| `(\d+)` \|", readme, re.M)
    documented = re.findall(r"^  (\d+) ", job_main.__doc__, re.M) + re.findall(r"; (\d+) terminated", job_main.__doc__)
    assert table and Counter(table) == Counter(documented)
    assert {int(code) for code in table} == {job_main.EXIT_OK, job_main.EXIT_CONFIG_ERROR, job_main.EXIT_DEAD_LETTERS,
                                             job_main.EXIT_SEGMENT_UNREACHABLE, job_main.EXIT_RUN_FAILED,
                                             job_main.EXIT_UNBALANCED, job_main.EXIT_ALL_REJECTED,
                                             job_main.EXIT_INTERRUPTED, job_main.EXIT_TERMINATED}


# --- every failure on every local runner: one line and the summary ------------------------------------------

def descendants(pid):
    """The processes below pid (Linux /proc), with their command lines."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="utf-8") as stream:
                    parent = int(stream.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{entry}/cmdline", "rb") as stream:
                    command = stream.read().replace(b"\0", b" ").decode()
            except OSError:
                continue
            children.setdefault(parent, []).append((int(entry), command))
    found, todo = [], [pid]
    while todo:
        for child, command in children.get(todo.pop(), []):
            found.append((child, command))
            todo.append(child)
    return found


MULTI_PROCESSING = ("--direct_running_mode=multi_processing", "--direct_num_workers=2")


def slow_job(tmp_path, server, root, *extra, **popen):
    """A job in a process of its own that takes a while (3 events a request, 5 requests a second per worker)."""
    return job_process(["--input", f"{root}/**", "--segment_endpoint", server.url, "--quiet",
                        "--dead_letter_output", str(tmp_path / "dead"), "--summary_output", str(tmp_path / "s.json"),
                        "--max_batch_events", "3", "--max_requests_per_second", "5", *extra],
                       env={"SEGMENT_WRITE_KEY": KEY}, **popen)


def wait_for_accepted(server, job, count, seconds=120):
    deadline = time.monotonic() + seconds
    while len(server.accepted) < count and time.monotonic() < deadline:
        assert job.poll() is None, job.communicate()
        time.sleep(0.05)


def assert_one_line_after_the_summary(tmp_path, out, err, starts, status):
    """stderr is exactly one error line; stdout has the summary table, and the summary JSON says how the run ended
    (its exit status and the outcome that goes with it) and what it read."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(starts), err
    assert "TOTAL" in out
    written = json.loads((tmp_path / "s.json").read_text())
    outcome = {4: "failed", 130: "interrupted", 143: "terminated"}[status]
    assert (written["exit_code"], written["outcome"]) == (status, outcome)
    # A failed run keeps its folder, which its line names (Beam's log); a run stopped on purpose leaves nothing.
    run_folder = os.path.join(tempfile.gettempdir(), f"currents-to-segment-{written['run_id']}")
    assert os.path.isdir(run_folder) == (status == 4) == ("Beam's log of the run" in err)
    assert written["events_read"] > 0 and written["sent"] > 0


def test_a_worker_process_killed_on_multi_processing_is_one_line_and_a_summary(tmp_path, bucket, server):
    root, _ = bucket
    job = slow_job(tmp_path, server, root, *MULTI_PROCESSING)
    wait_for_accepted(server, job, 12)
    workers = [pid for pid, command in descendants(job.pid) if "sdk_worker_main" in command
               and not command.startswith("/bin/sh")]
    assert len(workers) == 2, descendants(job.pid)
    time.sleep(1.5)  # the workers write what they counted every second
    os.kill(workers[0], signal.SIGKILL)
    out, err = job.communicate(timeout=120)
    assert job.returncode == 4, err
    assert_one_line_after_the_summary(tmp_path, out, err, "error: the run failed: ", 4)
    assert "events read were neither delivered nor dead-lettered; run again" in err and "Beam's log of the run" in err


def test_ctrl_c_on_multi_processing_is_one_line_and_a_summary(tmp_path, bucket, server):
    root, _ = bucket
    job = slow_job(tmp_path, server, root, *MULTI_PROCESSING, start_new_session=True)
    wait_for_accepted(server, job, 12)
    time.sleep(1.5)
    os.killpg(job.pid, signal.SIGINT)  # as a terminal does: the job and its worker processes
    out, err = job.communicate(timeout=120)
    assert job.returncode == 130, err
    assert_one_line_after_the_summary(tmp_path, out, err, "error: interrupted by Ctrl-C: ", 130)


def test_quiet_is_quiet_on_multi_processing(tmp_path, bucket, server):
    root, manifest = bucket
    job = job_process(["--input", f"{root}/**", "--segment_endpoint", server.url, "--quiet",
                       "--dead_letter_output", str(tmp_path / "dead"), *MULTI_PROCESSING], env={"SEGMENT_WRITE_KEY": KEY})
    out, err = job.communicate(timeout=240)
    assert job.returncode == 0 and err == "" and "TOTAL" in out
    assert received_calls(server.accepted) == expected_calls(manifest)


def test_progress_lines_count_dead_letters_as_they_are_made(tmp_path, bucket, server):
    root, manifest = bucket
    server.poison = lambda event: event["event"] == "Email Sent"
    job = job_process(["--input", f"{root}/**/event_type={EMAIL}.*/**", "--segment_endpoint", server.url,
                       "--dead_letter_output", str(tmp_path / "dead"), "--max_batch_events", "2",
                       "--max_requests_per_second", "20", "--progress_seconds", "0.3"], env={"SEGMENT_WRITE_KEY": KEY})
    _, err = job.communicate(timeout=240)
    counts = [(int(re.search(r"  sent ([\d,]+)", line).group(1).replace(",", "")),
               int(re.search(r"dead-lettered ([\d,]+)$", line).group(1).replace(",", "")))
              for line in err.splitlines() if line.startswith("progress ")]
    assert job.returncode == 0, err
    final_sent = counts[-1][0]
    assert any(dead > 0 and sent < final_sent for sent, dead in counts), counts


def test_a_file_deleted_between_listing_and_reading_is_one_letter_and_is_read_by_the_next_run(tmp_path, server):
    root = tmp_path / "bucket"
    manifest = make_sample_bucket(str(root), events_per_file=6)
    ledger, dead = tmp_path / "ledger", tmp_path / "dead"
    server.script("hold")  # the first request waits: the job is then in the middle of the first file it reads
    job = job_process(["--input", f"{root}/**", "--segment_endpoint", server.url, "--quiet", "--ledger", str(ledger),
                       "--dead_letter_output", str(dead), "--summary_output", str(tmp_path / "s.json"),
                       "--max_batch_events", "1"], env={"SEGMENT_WRITE_KEY": KEY})
    deadline = time.monotonic() + 120
    while not server.requests and time.monotonic() < deadline:
        time.sleep(0.02)
    first_id = json.loads(server.requests[0].body)["batch"][0]["messageId"]
    reading = next(r["source_file"] for r in manifest["records"] if r["record"]["id"] == first_id)
    gone = next(path for path in sorted(manifest["files"]) if path != reading and "event_type=users.messages.sms." in path
                and path not in manifest["broken_files"])
    content = open(gone, "rb").read()
    os.remove(gone)
    server.release()
    out, err = job.communicate(timeout=240)

    assert job.returncode == 0 and err == "", err
    rest = dict(manifest, records=[r for r in manifest["records"] if r["source_file"] != gone])
    assert received_calls(server.accepted) == expected_calls(rest)
    [letter] = [l for l in read_jsonl(dead, "dead_letters") if l["source_file"] == gone]
    assert letter["reason"] == "unreadable_file" and letter["byte_range"] == [0, len(content)]
    assert letter["error"].startswith("StorageError: cannot read the file from storage: ")
    assert gone not in {entry["path"] for entry in ledger_entries(ledger)}
    assert len(ledger_entries(ledger)) == len(manifest["files"]) - 1
    assert json.loads((tmp_path / "s.json").read_text())["balanced"] is True

    with open(gone, "wb") as stream:
        stream.write(content)
    before = len(server.accepted)
    status, result, _ = send(tmp_path / "again", server, "--input", f"{root}/**", "--ledger", str(ledger))
    assert status == 0 and result["ledger"]["files_skipped"] == len(manifest["files"]) - 1
    assert received_calls(server.accepted[before:]) == expected_calls(dict(manifest, records=[
        r for r in manifest["records"] if r["source_file"] == gone]))



def test_an_error_is_one_line_without_the_gcp_extra(tmp_path, bucket):
    """Without the gcp extra (a plain `pip install .`), Beam's import logs "apitools not found": not shown."""
    root, _ = bucket
    without_gcp = ("import sys; sys.modules['apitools'] = None; sys.argv = ['pipeline'] + sys.argv[1:]; "
                   "from pipeline.main import cli; cli()")
    job = subprocess.run([sys.executable, "-c", without_gcp, RUNNER, "--input", root, "--dead_letter_output",
                          str(tmp_path / "dead")], env={**os.environ, "SEGMENT_WRITE_KEY": KEY},
                         capture_output=True, text=True, timeout=120)
    assert job.returncode == 1
    assert job.stderr.strip().splitlines() == [f"error: --input {root} names a folder: give a file pattern, e.g. "
                                               f"'{root}/**' for every file under it"]


def test_the_progress_line_counts_as_files_to_read_neither_the_ledgers_nor_those_of_other_types():
    counters = {"files_listed": 10, "ledger_files_skipped": 2, "files_of_other_types": 3, "files_read": 4,
                "read:users.messages.email.Send": 40, "sent:users.messages.email.Send": 35, "requests": 2}
    assert progress.progress_line(counters, 70) == (
        "progress 0:01:10  files 4/5 read  events read 40  sent 35 (0/s)  requests 2  retries 0  dead-lettered 0")


def test_a_rerun_with_another_mapping_within_a_day_warns_that_segment_drops_the_changed_calls(
        tmp_path, bucket, server, capsys):
    root, manifest = bucket
    ledger = str(tmp_path / "ledger")
    status, classic, _ = send(tmp_path / "classic", server, "--input", f"{root}/**", "--ledger", ledger)
    assert status == 0 and "files_sent_otherwise_within_24h" not in classic["ledger"]
    capsys.readouterr()
    status, current, _ = send(tmp_path / "current", server, "--input", f"{root}/**", "--ledger", ledger,
                              "--mapping", "current")
    err = capsys.readouterr().err
    files = len(manifest["files"])
    assert status == 0 and current["ledger"]["files_sent_otherwise_within_24h"] == files
    assert (f"WARNING: {files:,} files were sent to this endpoint and write key less than 24 h ago with another "
            "mapping or other options shaping the calls") in err
    assert "--message_id_namespace NAME" in err
    # To another source (another key), the same messageIds are new: no warning.
    other = SegmentServer(write_key="another-source-key")
    with other:
        tmp = tmp_path / "other"
        tmp.mkdir()
        status, elsewhere, _ = run_job(tmp, "--segment_endpoint", other.url, "--segment_write_key",
                                       "another-source-key", "--quiet", "--input", f"{root}/**", "--ledger", ledger)
    assert status == 0 and elsewhere["ledger"]["files_recorded_for_other_destinations"] == files
    assert "files_sent_otherwise_within_24h" not in elsewhere["ledger"]
    assert "less than 24 h ago" not in capsys.readouterr().err


def test_a_run_that_waits_mostly_for_its_budget_says_so_and_its_throttled_time_fits_in_its_duration(
        tmp_path, bucket, server, capsys):
    root, manifest = bucket
    status, result, _ = send(tmp_path / "out", server, "--input", f"{root}/**", "--max_events_per_second", "30")
    err = capsys.readouterr().err
    assert status == 0 and received_calls(server.accepted) == expected_calls(manifest)
    assert 0 < result["throttled_seconds"] <= result["duration_seconds"]
    [note] = [line for line in err.splitlines() if line.startswith("note: requests waited")]
    assert note.endswith("30 events/s per worker was the limit; a larger --max_events_per_second (within the "
                         "workspace's limit) makes such runs shorter")


def test_the_summary_says_what_segment_took_by_event_name_status_and_bytes(tmp_path, bucket, server):
    root, manifest = bucket
    server.script(503, 503)
    status, result, _ = send(tmp_path / "out", server, "--input", f"{root}/**", "--retry_backoff_seconds", "0.01")
    assert status == 0
    # What Segment took, by the event names the reference gives them.
    expected = Counter(json.loads(call)["event"] for call in expected_calls(manifest).elements())
    assert result["by_segment_event"] == dict(sorted(expected.items()))
    assert sum(result["by_segment_event"].values()) == result["sent"] == len(server.accepted)
    # Every attempt by Segment's status: the two 503s, then 200s.
    assert result["requests_by_status"] == {"200": len(server.requests) - 2, "503": 2}
    assert sum(result["requests_by_status"].values()) == result["requests"]
    # The JSON of the events Segment took, as compact UTF-8 (the form the job serializes them in).
    taken = sum(len(json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()) for event in server.accepted)
    assert result["bytes_sent"] == taken
    assert result["events_per_second"] == round(result["sent"] / result["duration_seconds"], 1) > 0
