"""--watch: files forwarded as they land, each version once; a drain on SIGTERM; a SIGKILL and a restart that lose
nothing; on Prism and Flink (FnApiRunner refuses a watch: it keeps every listing in memory).

Files land as they do in an object store: whole, at once (written aside, then renamed into the watched folder).
"""
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
import pytest
from apache_beam.io.filesystem import FileMetadata
from apache_beam.testing.util import assert_that, equal_to

from currents_to_segment.pipeline import partitions
from tests.pipeline_runs import RUNNER, assert_balanced, expected_calls, read_jsonl, received_calls
from tests.test_reprocessing import ledger_entries
from tests.test_runners import prism
from currents_to_segment.transforms import ledger, ledger_files, watch
from currents_to_segment.transforms.file_access import FileAccess
from currents_to_segment.transforms.currents.records import event_type_from_path
from currents_to_segment.transforms.progress import WatchState

KEY = "watch-key"
SAMPLE_BUCKET = {"events_per_file": 4}
DRAIN_SECONDS = 60  # the bound on a drain


# --- pure parts --------------------------------------------------------------------------------------------------

def test_the_progress_line_of_a_watch_says_when_it_listed_and_what_waits():
    state = WatchState()
    assert state.describe(1_000) == ""
    state.listed(1_764_702_000)  # 2025-12-02 19:00:00 UTC
    assert state.describe(1_764_702_001) == "  last listing 19:00:00 UTC  waiting 0 files"
    state.found("a.avro", 1_764_701_990)
    state.found("b.avro", 1_764_701_950)
    assert state.describe(1_764_702_001) == "  last listing 19:00:00 UTC  waiting 2 files (oldest landed 0:00:51 ago)"
    state.read("b.avro")
    state.read("gone.avro")
    assert state.describe(1_764_702_001) == "  last listing 19:00:00 UTC  waiting 1 files (oldest landed 0:00:11 ago)"


def test_listings_are_due_every_interval_from_the_start():
    assert [watch.listing_due(100.0, 60.0, n) for n in range(3)] == [100.0, 160.0, 220.0]


def test_a_full_listing_is_the_first_and_one_every_full_listing_interval():
    # Listings every 60 s, a full one every 900 s: listings 0, 15, 30 (due at 0, 900, 1800 s); every 300 s with
    # listings every 120 s: 0, 3 (360 s), 5 (600 s), 8 (960 s).
    assert [n for n in range(40) if watch.is_full_listing(100.0, 60.0, 900.0, n)] == [0, 15, 30]
    assert [n for n in range(10) if watch.is_full_listing(0.0, 120.0, 300.0, n)] == [0, 3, 5, 8]


def test_a_watched_root_lists_every_selected_hour_first_then_the_last_hours(tmp_path):
    types = tmp_path / "dataexport.prod-01.S3.integration.1"
    for event_type in ("users.messages.email.Send", "users.messages.pushnotification.Send"):
        for hour in ("2026-11-30-23", "2026-12-02-15", "2026-12-02-16", "2026-12-02-19"):
            (types / f"event_type={event_type}" / f"date={hour}").mkdir(parents=True)
    now = datetime.datetime(2026, 12, 2, 19, 40, tzinfo=datetime.timezone.utc).timestamp()
    watched = partitions.WatchedRoot(str(tmp_path), None, start=datetime.datetime(2026, 12, 1, tzinfo=datetime.timezone.utc),
                                     event_types=frozenset({"users.messages.email.Send"}), clock=lambda: now)
    folder = f"{types}/event_type=users.messages.email.Send"
    assert watched.patterns(full=True) == [f"{folder}/date=2026-12-02-{hour}/**" for hour in (15, 16, 19)]
    assert watched.patterns(full=False) == [f"{folder}/date=2026-12-02-{hour}/**" for hour in (16, 19)]


# --- the composite transform -------------------------------------------------------------------------------------

class _ChangingFolder:
    """Watched patterns whose folder changes at each listing, as a test scripts it (the listing count is kept in a
    file: the object is unpickled on the worker): listing 0 finds a and b; as listing 1 begins, c lands and b is
    rewritten; nothing changes at listing 2; then the stop marker is written."""

    def __init__(self, folder, stop_marker):
        self._folder, self._stop_marker = folder, stop_marker

    def patterns(self, full):
        count_file = os.path.join(self._folder, "..", "listings")
        done = int(open(count_file).read()) if os.path.exists(count_file) else 0
        if done == 1:
            _write(os.path.join(self._folder, "c.avro"), b"c" * 3)
            _write(os.path.join(self._folder, "b.avro"), b"b" * 5)
        if done == 2:
            watch.request_stop(self._stop_marker)
        with open(count_file, "w") as stream:
            stream.write(str(done + 1))
        assert full == (done == 0)
        return [os.path.join(self._folder, "*.avro")]


def _write(path, data):
    staged = path + ".staged"
    with open(staged, "wb") as stream:
        stream.write(data)
    os.replace(staged, path)


def test_watching_hands_on_each_new_version_once_and_skips_what_the_ledger_holds(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name, data in (("a.avro", b"a"), ("b.avro", b"bb")):
        _write(str(folder / name), data)
    destination = ledger.destination_of("https://api.segment.io", "k", {"mapping": "classic"})
    a = os.stat(folder / "a.avro")
    ledger_dir = tmp_path / "ledger"
    ledger_dir.mkdir()
    # An entry of the ledger's first layout (at its top, the destination in the entry): still read.
    (ledger_dir / "entries-earlier-1.jsonl").write_text(json.dumps(
        {"path": str(folder / "a.avro"), "size": a.st_size, "modified": a.st_mtime, "scope": "", "run": "earlier",
         "destination": destination}) + "\n")
    stop_marker = str(tmp_path / ".stop")
    with beam.Pipeline(options=PipelineOptions(prism("--streaming"))) as pipeline:
        found = (pipeline
                 | watch.WatchCurrentsFiles(watch.WatchSettings(_ChangingFolder(str(folder), stop_marker), 0.2,
                                                                time.time(), stop_marker),
                                            FileAccess(), str(ledger_dir), destination=destination)
                 | beam.Map(lambda metadata: (os.path.basename(metadata.path), metadata.size_in_bytes)))
        # a is in the ledger; b is handed on twice (two versions), c once; nothing again at the last listing.
        assert_that(found, equal_to([("b.avro", 2), ("c.avro", 3), ("b.avro", 5)]))


class _ScriptedFolder:
    """Watched patterns for the forgetting test: a lands before listing 0; from listing 3 on, once a's path has had
    time to be forgotten, the ledger entry that records a is removed (as a failed run's are); at listing 12 the stop
    marker is written."""

    def __init__(self, folder, ledger_file, stop_marker):
        self._folder, self._ledger_file, self._stop_marker = folder, ledger_file, stop_marker

    def patterns(self, full):  # pylint: disable=unused-argument
        count_file = os.path.join(self._folder, "..", "listings")
        done = int(open(count_file).read()) if os.path.exists(count_file) else 0
        if done == 8 and os.path.exists(self._ledger_file):
            os.remove(self._ledger_file)
        if done == 12:
            watch.request_stop(self._stop_marker)
        with open(count_file, "w") as stream:
            stream.write(str(done + 1))
        return [os.path.join(self._folder, "*.avro")]


def test_a_path_the_ledger_holds_is_forgotten_after_its_time(tmp_path, monkeypatch):
    """The watch's state keeps a path forget_after seconds and until the ledger holds it, then drops it (in two
    steps): seen from outside, a forgotten path whose entry then disappears from the ledger is handed on again,
    where a remembered one would not be."""
    # Every ledger read fresh (the runner works in this process): with reads kept 0.1 s, a listing made while the
    # runner caught up (several within 0.1 s, on a loaded machine) went by a read from before a was recorded and handed
    # it on a third time; in a real watch reads are kept 60 s and paths 4 hours.
    monkeypatch.setattr(watch, "LEDGER_READ_SECONDS", 0.0)
    folder = tmp_path / "in"
    folder.mkdir()
    _write(str(folder / "a.avro"), b"a")
    a = os.stat(folder / "a.avro")
    destination = ledger.destination_of("https://api.segment.io", "k", {"mapping": "classic"})
    ledger_dir = tmp_path / "ledger"
    partition = ledger_dir / ledger_files.partition_of(str(folder / "a.avro"))
    partition.mkdir(parents=True)
    ledger_file = partition / "entries-r-1.jsonl"

    class _RecordingFolder(_ScriptedFolder):
        def patterns(self, full):
            found = super().patterns(full)
            if not os.path.exists(ledger_file) and open(os.path.join(self._folder, "..", "listings")).read() == "2":
                ledger_file.write_text(  # a is delivered and recorded after listing 0
                    json.dumps(ledger_files.header("r", "", destination)) + "\n"
                    + json.dumps(ledger_files.entry((str(folder / "a.avro"), a.st_size, a.st_mtime))) + "\n")
            return found

    stop_marker = str(tmp_path / ".stop")
    with beam.Pipeline(options=PipelineOptions(prism("--streaming"))) as pipeline:
        found = (pipeline
                 | watch.WatchCurrentsFiles(
                     watch.WatchSettings(_RecordingFolder(str(folder), str(ledger_file), stop_marker), 0.3,
                                         time.time(), stop_marker, forget_after=0.3),
                     FileAccess(), str(ledger_dir), destination=destination)
                 | beam.Map(lambda metadata: os.path.basename(metadata.path)))
        assert_that(found, equal_to(["a.avro", "a.avro"]))


def test_a_stop_marker_written_before_the_start_means_no_listing(tmp_path):
    stop_marker = str(tmp_path / ".stop")
    watch.request_stop(stop_marker)
    with beam.Pipeline(options=PipelineOptions(prism("--streaming"))) as pipeline:
        found = pipeline | watch.WatchCurrentsFiles(watch.WatchSettings(
            partitions.WatchedPatterns([str(tmp_path / "*")]), 0.2, time.time(), stop_marker), FileAccess())
        assert_that(found, equal_to([]))


# --- whole pipelines ----------------------------------------------------------------------------------------------

def _runner_args(request, runner):
    if runner == "prism":
        return prism()
    return ["--runner=PortableRunner", f"--job_endpoint={request.getfixturevalue('flink_job_server')}",
            "--environment_type=LOOPBACK"]


def _watch_job(runner_args, watched, server, out, *extra):
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", *runner_args, "--input", f"{watched}/**", "--watch", "--watch_interval", "1",
         "--segment_endpoint", server.url, "--dead_letter_output", str(out / "dead"), "--ledger", str(out / "ledger"),
         "--summary_output", str(out / "summary.json"), "--flush_seconds", "0.5", "--progress_seconds", "0", *extra],
        env={**os.environ, "SEGMENT_WRITE_KEY": KEY}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


class _Landing:
    """Files landing in the watched folder, as in an object store: whole and at once."""

    def __init__(self, bucket_root, watched, staging):
        self._bucket_root, self.watched, self._staging = bucket_root, watched, staging
        os.makedirs(staging, exist_ok=True)

    def land(self, source, target=None, data=None):
        """Land the bucket file `source` (or `data`) at its place in the watched folder (or at `target`)."""
        target = target or os.path.join(self.watched, os.path.relpath(source, self._bucket_root))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        staged = os.path.join(self._staging, uuid.uuid4().hex)
        if data is None:
            shutil.copyfile(source, staged)
        else:
            with open(staged, "wb") as stream:
                stream.write(data)
        os.replace(staged, target)
        return target


def _of_files(manifest, paths):
    return dict(manifest, records=[r for r in manifest["records"] if r["source_file"] in paths])


def _wait_for(server, job, expected, seconds=90):
    deadline = time.monotonic() + seconds
    while received_calls(server.accepted) != expected:
        received = received_calls(server.accepted)
        assert time.monotonic() < deadline, ("more than expected", _ids(received - expected),
                                             "missing", _ids(expected - received))
        assert job.poll() is None, job.communicate()
        time.sleep(0.1)


def _ids(calls):
    return sorted((json.loads(call)["messageId"], json.loads(call)["event"], n) for call, n in calls.items())


def _drain(job):
    started = time.monotonic()
    job.send_signal(signal.SIGTERM)
    out, err = job.communicate(timeout=DRAIN_SECONDS)
    return job.returncode, out, err, time.monotonic() - started


@pytest.mark.parametrize("runner", ["prism", "flink"])
def test_files_landing_are_each_sent_once_per_version_and_sigterm_drains(request, tmp_path, bucket, server, runner):
    root, manifest = bucket
    files = sorted(manifest["files"])
    landing = _Landing(root, str(tmp_path / "watched"), str(tmp_path / "staging"))
    os.makedirs(landing.watched)
    first, second = files[:len(files) // 2], files[len(files) // 2:]
    for path in first:
        landing.land(path)
    job = _watch_job(_runner_args(request, runner), landing.watched, server, tmp_path)
    started = time.monotonic()
    _wait_for(server, job, expected_calls(_of_files(manifest, set(first))))
    print(f"{runner}: the first files sent {time.monotonic() - started:.1f} s after the start")

    # More files land, a delivered one is rewritten under its name (with the records of another), a corrupt one lands.
    # (A file's event type is in its path: the new records are of the same type.)
    target, rewritten_from = next((a, b) for a in first for b in second if event_type_from_path(a) ==
                                  event_type_from_path(b) and expected_calls(_of_files(manifest, {b})))
    rewritten = landing.land(rewritten_from, target=os.path.join(landing.watched, os.path.relpath(target, root)))
    corrupt = landing.land(None, target=os.path.join(os.path.dirname(rewritten), "corrupt.avro"),
                           data=b"Obj\x01 this is not what Currents writes")
    for path in second:
        landing.land(path)
    expected = expected_calls(manifest) + expected_calls(_of_files(manifest, {rewritten_from}))
    landed = time.monotonic()
    _wait_for(server, job, expected)
    print(f"{runner}: the files that landed sent within {time.monotonic() - landed:.1f} s")

    status, out, err, seconds = _drain(job)
    assert status == 0, err
    assert "draining" in err and seconds < DRAIN_SECONDS
    print(f"{runner}: drained in {seconds:.1f} s")
    assert received_calls(server.accepted) == expected and not server.violations
    run_summary = json.loads((tmp_path / "summary.json").read_text())
    assert_balanced(run_summary)
    assert run_summary["ledger"]["files_recorded"] == len(files) + 2  # every version, the corrupt file too
    letters = read_jsonl(tmp_path / "dead", "dead_letters")
    assert Counter(letter["source_file"] for letter in letters if letter["reason"] == "unreadable_file")[corrupt] == 1
    recorded = Counter(entry["path"] for entry in ledger_entries(tmp_path / "ledger"))
    assert recorded[rewritten] == 2 and recorded[corrupt] == 1 and sum(recorded.values()) == len(files) + 2


@pytest.mark.parametrize("runner", ["prism", "flink"])
def test_a_watch_killed_and_restarted_loses_nothing_and_resends_only_files_in_flight(request, tmp_path, bucket, server,
                                                                                   runner):
    root, manifest = bucket
    landing = _Landing(root, str(tmp_path / "watched"), str(tmp_path / "staging"))
    os.makedirs(landing.watched)
    watched = {path: landing.land(path) for path in manifest["files"]}
    expected = expected_calls(manifest)
    total = sum(expected.values())
    slow = ("--max_batch_events", "5", "--max_requests_per_second", "20")
    job = _watch_job(_runner_args(request, runner), landing.watched, server, tmp_path / "a", *slow)
    deadline = time.monotonic() + 120
    while len(server.accepted) < 0.5 * total:
        assert time.monotonic() < deadline and job.poll() is None
        time.sleep(0.02)
    job.send_signal(signal.SIGKILL)
    job.communicate(timeout=60)
    sent_before = received_calls(server.accepted)
    recorded = {entry["path"] for entry in ledger_entries(tmp_path / "a" / "ledger")}
    # Every event of a file the ledger holds had reached Segment (or the dead letters).
    in_ledger = {source for source, path in watched.items() if path in recorded}
    assert not set(expected_calls(_of_files(manifest, in_ledger))) - set(sent_before)

    server.accepted.clear()
    shutil.copytree(tmp_path / "a" / "ledger", tmp_path / "b" / "ledger")
    job = _watch_job(_runner_args(request, runner), landing.watched, server, tmp_path / "b")
    resend = expected_calls(_of_files(manifest, set(manifest["files"]) - in_ledger))
    _wait_for(server, job, resend)
    status, _, err, _ = _drain(job)
    assert status == 0, err
    assert received_calls(server.accepted) == resend  # what the ledger held was not sent again
    assert sent_before + received_calls(server.accepted) >= expected  # nothing lost
    resumed = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert resumed["ledger"]["files_skipped"] == len(in_ledger)
    assert_balanced(resumed)


def test_a_second_sigterm_aborts_a_drain_and_the_ledger_keeps_only_delivered_files(tmp_path, bucket, server):
    root, manifest = bucket
    landing = _Landing(root, str(tmp_path / "watched"), str(tmp_path / "staging"))
    os.makedirs(landing.watched)
    watched = {path: landing.land(path) for path in manifest["files"]}
    job = _watch_job(prism(), landing.watched, server, tmp_path, "--max_batch_events", "3",
                     "--max_requests_per_second", "5")
    deadline = time.monotonic() + 60
    while len(server.accepted) < 12:
        assert time.monotonic() < deadline and job.poll() is None
        time.sleep(0.05)
    job.send_signal(signal.SIGTERM)
    time.sleep(1)
    job.send_signal(signal.SIGTERM)
    _, err = job.communicate(timeout=DRAIN_SECONDS)
    assert job.returncode == 143, err
    assert "draining" in err and "interrupted by SIGTERM" in err.strip().splitlines()[-1]
    assert "the ledger holds the files delivered before it" in err
    sent = received_calls(server.accepted)
    recorded = {entry["path"] for entry in ledger_entries(tmp_path / "ledger")}
    in_ledger = {source for source, path in watched.items() if path in recorded}
    assert not set(expected_calls(_of_files(manifest, in_ledger))) - set(sent)
    assert sum(expected_calls(_of_files(manifest, in_ledger)).values()) < sum(expected_calls(manifest).values())


def test_a_watch_of_a_currents_root_finds_the_hour_partitions_that_appear(tmp_path, bucket, server):
    root, manifest = bucket
    source = next(path for path in sorted(manifest["files"]) if expected_calls(_of_files(manifest, {path})))
    event_type = event_type_from_path(source)
    currents = tmp_path / "currents"
    (currents / "dataexport.prod-01.S3.integration.1" / f"event_type={event_type}").mkdir(parents=True)
    job = subprocess.Popen(
        [sys.executable, "-m", "pipeline", *prism(), "--currents_root", str(currents), "--watch", "--watch_interval", "1",
         "--segment_endpoint", server.url, "--dead_letter_output", str(tmp_path / "dead"), "--quiet"],
        env={**os.environ, "SEGMENT_WRITE_KEY": KEY}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    hour = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d-%H")
    landing = _Landing(root, str(currents), str(tmp_path / "staging"))
    time.sleep(3)  # a few listings of an empty root
    landing.land(source, target=str(currents / "dataexport.prod-01.S3.integration.1" / f"event_type={event_type}"
                                    / f"date={hour}" / "a.avro"))
    _wait_for(server, job, expected_calls(_of_files(manifest, {source})))
    status, _, err, _ = _drain(job)
    assert status == 0, err


def test_a_file_landing_late_into_an_old_hour_is_found_by_a_full_listing(tmp_path, bucket, server):
    """Braze writes a backlog into the hour partitions the events were queued in: a file landing into the partition
    of 6 hours ago, outside the last hours a listing looks in, is delivered after the next full listing."""
    root, manifest = bucket
    source = next(path for path in sorted(manifest["files"]) if expected_calls(_of_files(manifest, {path})))
    event_type = event_type_from_path(source)
    folder = tmp_path / "currents" / "dataexport.prod-01.S3.integration.1" / f"event_type={event_type}"
    old_hour = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=6)).strftime("%Y-%m-%d-%H")
    (folder / f"date={old_hour}").mkdir(parents=True)
    job = subprocess.Popen(
        [sys.executable, "-m", "pipeline", *prism(), "--currents_root", str(tmp_path / "currents"), "--watch",
         "--watch_interval", "1", "--full_listing_interval", "4", "--segment_endpoint", server.url,
         "--dead_letter_output", str(tmp_path / "dead"), "--ledger", str(tmp_path / "ledger"), "--quiet"],
        env={**os.environ, "SEGMENT_WRITE_KEY": KEY}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(6)  # the first (full) listing is over: later ones look in the last hours only, but every 4 s
        landing = _Landing(root, str(tmp_path / "currents"), str(tmp_path / "staging"))
        landing.land(source, target=str(folder / f"date={old_hour}" / "late.avro"))
        _wait_for(server, job, expected_calls(_of_files(manifest, {source})), seconds=60)
    finally:
        if job.poll() is None and sys.exc_info()[0] is not None:
            job.kill()
    status, _, err, _ = _drain(job)
    assert status == 0, err
    assert [entry["path"] for entry in ledger_entries(tmp_path / "ledger")] == [
        str(folder / f"date={old_hour}" / "late.avro")]


@pytest.mark.parametrize("args, line", [
    (["--by_event_time", "--start", "2026-12-01", "--end", "2026-12-02"],
     "error: --by_event_time selects a closed range of hours to send; --watch forwards files as they land: give one "
     "or the other"),
    (["--watch_interval", "0"], "error: --watch_interval must be positive, got 0.0"),
    (["--full_listing_interval", "-1"], "error: --full_listing_interval must be positive, got -1.0"),
    ([], "error: --watch runs for ever, and FnApiRunner keeps every listing in memory: run it on "
         "--runner=PrismRunner (locally; ./run_local.sh --watch picks it), FlinkRunner or DataflowRunner"),
])
def test_a_watch_that_cannot_run_is_one_line(tmp_path, args, line):
    (tmp_path / "root").mkdir()
    result = subprocess.run([sys.executable, "-m", "pipeline", RUNNER, "--currents_root", str(tmp_path / "root"),
                             "--watch", "--dry_run_output", str(tmp_path / "out"), *args],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1 and result.stderr.strip() == line
