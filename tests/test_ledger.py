"""The ledger's files: partitions, one header per file, lines that are not entries, merging small files beside
running jobs, the first layout still read and moved once, paths in one form; and whole runs that use them.

Expected layouts are written here as docs/replay-and-ledger.md describes them, not computed by the code under test.
"""
import json
import logging
import os
import subprocess
import sys

import pytest

from currents_to_segment.transforms import ledger, ledger_files
from tests.pipeline_runs import RUNNER
from tests.test_reprocessing import ledger_entries

KEY = "k"
DESTINATION = ledger.destination_of("https://api.segment.io", "key", {"mapping": "classic"})
WHERE = ledger.destination_key(DESTINATION)
HOUR_FILE = "/data/currents/dataexport.prod-01.S3.integration.1/event_type=users.messages.email.Send/" \
            "date=2024-03-01-09/a.avro"


def _lines(path):
    with open(path, encoding="utf-8") as stream:
        return [json.loads(line) for line in stream if line.strip()]


def _files(folder):
    return sorted(name for name in os.listdir(folder) if name.endswith(".jsonl"))


def _record(ledger_dir, run_id, files, destination=DESTINATION):
    writer = ledger_files.PartitionWriter(str(ledger_dir), run_id, "", destination)
    for file in files:
        writer.write(file)
    return writer.commit()


def test_paths_have_one_form_and_a_partition(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    absolute = str(tmp_path / "in" / "a.avro")
    assert {ledger_files.normalize_path(path) for path in ("in/a.avro", "./in/a.avro", "in//x/../a.avro", absolute)} \
        == {absolute}
    assert ledger_files.normalize_path("S3://bucket//currents/a.avro") == "s3://bucket/currents/a.avro"
    assert ledger_files.normalize_path("gs://bucket//x//a.avro") == "gs://bucket/x/a.avro"
    assert ledger_files.partition_of(HOUR_FILE) == "date=2024-03-01-09"
    assert ledger_files.partition_of("gs://b/x/a.avro") == ledger_files.partition_of("gs://b/x/b.avro")
    assert ledger_files.partition_of("gs://b/x/a.avro") != ledger_files.partition_of("gs://b/y/a.avro")
    assert ledger_files.partition_of("gs://b/x/a.avro").startswith("dir=")


def test_an_entry_file_is_in_its_partition_with_the_destination_once(tmp_path):
    other = "/data/in/b.avro"
    written = _record(tmp_path, "20240301T100000Z-aaaaaaaa", [(HOUR_FILE, 10, 1.5), (HOUR_FILE.replace("a.avro", "c.avro"), 3, 2.0), (other, 5, 3.0)])
    assert sorted(written) == sorted(["date=2024-03-01-09", ledger_files.partition_of(other)])
    [name] = _files(tmp_path / "date=2024-03-01-09")
    assert name.startswith("entries-20240301T100000Z-aaaaaaaa-")
    head, *entries = _lines(tmp_path / "date=2024-03-01-09" / name)
    assert head == {"ledger": 2, "run": "20240301T100000Z-aaaaaaaa", "scope": "", "destination": DESTINATION}
    assert entries == [{"path": HOUR_FILE, "size": 10, "modified": 1.5},
                       {"path": HOUR_FILE.replace("a.avro", "c.avro"), "size": 3, "modified": 2.0}]


def test_a_lookup_reads_only_the_partitions_of_the_files_asked_about(tmp_path, caplog):
    _record(tmp_path, "20240301T100000Z-aaaaaaaa", [(HOUR_FILE, 10, 1.5)])
    elsewhere = tmp_path / "date=2023-01-01-00"
    elsewhere.mkdir()
    (elsewhere / "entries-x-1.jsonl").write_text("not json\n")  # never read: no warning
    lookup = ledger.Lookup(str(tmp_path))
    with caplog.at_level(logging.WARNING):
        assert ledger.covers(lookup.entries(HOUR_FILE, 10, 1.5), "", WHERE)
        assert lookup.entries(HOUR_FILE, 11, 1.5) == []  # another version
        assert lookup.entries("/data/in/other.avro", 10, 1.5) == []
    assert "date=2023-01-01-00" not in caplog.text


def test_a_line_that_is_not_an_entry_costs_only_itself_with_one_warning(tmp_path, caplog):
    folder = tmp_path / "date=2024-03-01-09"
    folder.mkdir()
    header = json.dumps({"ledger": 2, "run": "r", "scope": "", "destination": DESTINATION})
    lines = [header, json.dumps({"path": HOUR_FILE, "size": 10, "modified": 1.5}), '{"path": "/x", "size": 1',
             json.dumps({"path": HOUR_FILE.replace("a.avro", "b.avro"), "size": 2, "modified": 1.0}),
             json.dumps({"path": "/y", "size": "big", "modified": 1.0})]
    (folder / "entries-r-1.jsonl").write_text("\n".join(lines) + "\n")
    told = []
    lookup = ledger.Lookup(str(tmp_path), on_malformed=lambda path, number: told.append((path, number)))
    with caplog.at_level(logging.WARNING):
        assert ledger.covers(lookup.entries(HOUR_FILE, 10, 1.5), "", WHERE)
        assert ledger.covers(lookup.entries(HOUR_FILE.replace("a.avro", "b.avro"), 2, 1.0), "", WHERE)
    assert told == [(str(folder / "entries-r-1.jsonl"), 3)]  # once per file, at its first bad line
    assert f"{folder / 'entries-r-1.jsonl'} line 3 is not a ledger entry" in caplog.text


def _hours_ago_run(hours):
    import datetime  # pylint: disable=import-outside-toplevel
    started = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=hours)
    return f"{started:%Y%m%dT%H%M%SZ}-0000000{int(hours) % 10}"


def _unix(run_id):
    import datetime  # pylint: disable=import-outside-toplevel
    return datetime.datetime.strptime(run_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc).timestamp()


def test_merging_keeps_every_entry_and_leaves_recent_runs_and_their_files_alone(tmp_path):
    files = [(HOUR_FILE.replace("a.avro", f"{n}.avro"), n, 1.0) for n in range(6)]
    old_a, old_b, recent = _hours_ago_run(30), _hours_ago_run(20), _hours_ago_run(1)
    _record(tmp_path, old_a, files[:2])
    _record(tmp_path, old_a, files[1:3])  # a duplicate entry
    _record(tmp_path, old_b, files[3:4], destination=None)  # another destination: a header of its own
    _record(tmp_path, recent, files[4:6])
    folder = tmp_path / "date=2024-03-01-09"
    before = sorted((e["path"], e["size"], json.dumps(e["destination"])) for e in ledger_entries(tmp_path))
    assert ledger_files.compact_partition(str(tmp_path), "date=2024-03-01-09") == 3
    names = _files(folder)
    assert len(names) == 2 and names[0].startswith("compacted-") and names[1].startswith(f"entries-{recent}-")
    after = sorted((e["path"], e["size"], json.dumps(e["destination"])) for e in ledger_entries(tmp_path))
    assert after == sorted(set(before))
    merged = _lines(folder / names[0])
    headers = [line for line in merged if "ledger" in line]
    assert sorted(headers, key=json.dumps) == sorted([  # each keeps when the newest run it merged started
        {"ledger": 2, "run": None, "scope": "", "destination": DESTINATION, "started": _unix(old_a)},
        {"ledger": 2, "run": None, "scope": "", "destination": None, "started": _unix(old_b)}], key=json.dumps)
    # Merged again with the recent run: one file, every entry still there.
    assert ledger_files.compact_partition(str(tmp_path), "date=2024-03-01-09", older_than=0) == 2
    assert len(_files(folder)) == 1
    assert sorted((e["path"], e["size"], json.dumps(e["destination"])) for e in ledger_entries(tmp_path)) == after


def test_a_writer_merges_a_partition_of_many_small_files(tmp_path):
    old = _hours_ago_run(30)
    for n in range(ledger_files.COMPACT_FILES + 1):
        _record(tmp_path, old, [(HOUR_FILE.replace("a.avro", f"{n}.avro"), n, 1.0)])
    folder = tmp_path / "date=2024-03-01-09"
    assert len(_files(folder)) == 1 and _files(folder)[0].startswith("compacted-")
    assert len(ledger_entries(tmp_path)) == ledger_files.COMPACT_FILES + 1


def test_a_file_with_a_line_that_is_not_an_entry_is_not_merged(tmp_path):
    old = _hours_ago_run(30)
    for n in range(3):
        _record(tmp_path, old, [(HOUR_FILE.replace("a.avro", f"{n}.avro"), n, 1.0)])
    folder = tmp_path / "date=2024-03-01-09"
    broken = folder / _files(folder)[0]
    broken.write_text(broken.read_text() + "garbage\n")
    assert ledger_files.compact_partition(str(tmp_path), "date=2024-03-01-09") == 2
    assert broken.name in _files(folder) and len(_files(folder)) == 2


def test_the_first_layout_is_read_and_moved_into_partitions_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ledger_dir = tmp_path / "ledger"
    ledger_dir.mkdir()
    relative = "in/date=2024-03-01-09/a.avro"  # a path kept as typed, as the first layout did
    legacy = [{"path": relative, "size": 10, "modified": 1.5, "scope": "", "run": "r1", "destination": DESTINATION},
              {"path": "/data/other/b.avro", "size": 1, "modified": 2.0, "scope": "", "run": "r1",
               "destination": None}]
    (ledger_dir / "entries-r1-abc.jsonl").write_text("".join(json.dumps(line) + "\n" for line in legacy))
    absolute = str(tmp_path / relative)
    assert ledger.covers(ledger.Lookup(str(ledger_dir)).entries(absolute, 10, 1.5), "", WHERE)
    assert ledger_files.migrate(str(ledger_dir)) == (2, 1)
    assert not (ledger_dir / "entries-r1-abc.jsonl").exists()
    assert sorted(os.listdir(ledger_dir)) == sorted(["date=2024-03-01-09", ledger_files.partition_of("/data/other/b.avro")])
    assert ledger.covers(ledger.Lookup(str(ledger_dir)).entries(f"./{relative}", 10, 1.5), "", WHERE)
    assert ledger_files.migrate(str(ledger_dir)) == (0, 0)


def test_compact_ledger_command(tmp_path):
    old = _hours_ago_run(30)
    for n in range(3):
        _record(tmp_path, old, [(HOUR_FILE.replace("a.avro", f"{n}.avro"), n, 1.0)])
        _record(tmp_path, old, [(f"/data/in/{n}.avro", n, 1.0)])
    result = subprocess.run([sys.executable, "-m", "pipeline", "compact-ledger", str(tmp_path)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"ledger {tmp_path}: 6 files merged into one per partition in 2 partitions"
    assert all(len(_files(tmp_path / partition)) == 1 for partition in os.listdir(tmp_path))
    assert len(ledger_entries(tmp_path)) == 6


# --- whole runs ----------------------------------------------------------------------------------------------------

def _send(cwd, server, *args):
    result = subprocess.run([sys.executable, "-m", "pipeline", RUNNER, *args, "--segment_endpoint", server.url,
                             "--summary_output", "summary.json", "--progress_seconds", "0"],
                            cwd=cwd, env={**os.environ, "SEGMENT_WRITE_KEY": "k",
                                          "PYTHONPATH": os.path.dirname(os.path.dirname(__file__))},
                            capture_output=True, text=True, timeout=180, check=False)
    with open(os.path.join(cwd, "summary.json"), encoding="utf-8") as stream:
        return result, json.load(stream)


@pytest.fixture(name="copied")
def _copied(tmp_path, bucket):
    root, manifest = bucket
    work = tmp_path / "work"
    work.mkdir()
    os.symlink(root, work / "bucket")
    return work, manifest


def test_relative_dotted_and_absolute_inputs_share_entries_and_a_bad_line_costs_only_itself(copied, server):
    work, manifest = copied
    files = len(manifest["files"])
    first, summary = _send(work, server, "--input", "bucket/**", "--ledger", "ledger", "--dead_letter_output", "dead")
    assert first.returncode == 0, first.stderr
    assert summary["ledger"]["files_recorded"] == files
    requests = len(server.requests)
    for pattern in ("./bucket/**", f"{work}/bucket/**"):
        again, summary = _send(work, server, "--input", pattern, "--ledger", "ledger", "--dead_letter_output", "dead")
        assert again.returncode == 0, again.stderr
        assert summary["ledger"] == {"files_skipped": files, "files_recorded": 0} and len(server.requests) == requests
    # One line broken in the ledger: a warning naming the file and line; the others still skip their files.
    entry_file = next(os.path.join(folder, name) for folder, _, names in os.walk(work / "ledger") for name in names
                      if name.endswith(".jsonl"))
    with open(entry_file, encoding="utf-8") as stream:
        lines = stream.read().splitlines()
    lines[1] = lines[1][:-5]
    with open(entry_file, "w", encoding="utf-8") as stream:
        stream.write("\n".join(lines) + "\n")
    broken, summary = _send(work, server, "--input", "bucket/**", "--ledger", "ledger", "--dead_letter_output", "dead")
    assert broken.returncode == 0, broken.stderr
    assert summary["ledger"]["files_skipped"] == files - 1 and summary["ledger"]["files_recorded"] == 1
    assert summary["ledger"]["malformed_lines"] == [f"{entry_file} line 2"]
    assert f"the ledger has lines that are not entries, skipped (the rest was read): {entry_file} line 2" \
        in broken.stderr
    plan = subprocess.run([sys.executable, "-m", "pipeline", "--input", "bucket/**", "--ledger", "ledger", "--plan"],
                          cwd=work, env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(__file__))},
                          capture_output=True, text=True, timeout=120, check=False)
    assert plan.returncode == 0 and f"{entry_file} line 2 is not a ledger entry" in plan.stderr
    assert "Traceback" not in plan.stderr


def test_a_ledger_of_the_first_layout_is_moved_once_and_still_skips_its_files(copied, server):
    """A ledger as the first layout wrote it (every entry at the top, with its destination, its path as typed)
    moves into partitions at the next run, which says so once, and skips every file it recorded."""
    work, manifest = copied
    files = len(manifest["files"])
    first, _ = _send(work, server, "--input", "bucket/**", "--ledger", "ledger", "--dead_letter_output", "dead")
    assert first.returncode == 0, first.stderr
    entries = ledger_entries(work / "ledger")
    old = work / "old-ledger"
    old.mkdir()
    with open(old / "entries-20240101T000000Z-0000000a-1.jsonl", "w", encoding="utf-8") as stream:
        for found in entries:  # path as typed (relative), the destination in every entry
            stream.write(json.dumps({"path": os.path.relpath(found["path"], work), "size": found["size"],
                                     "modified": found["modified"], "scope": found["scope"], "run": "r",
                                     "destination": found["destination"]}) + "\n")
    requests = len(server.requests)
    moved, summary = _send(work, server, "--input", "./bucket/**", "--ledger", "old-ledger",
                           "--dead_letter_output", "dead")
    assert moved.returncode == 0, moved.stderr
    assert f"ledger {work}/old-ledger: moved {files} entries of 1 files of the first layout into partitions" \
        in moved.stderr
    assert summary["ledger"] == {"files_skipped": files, "files_recorded": 0} and len(server.requests) == requests
    assert not [name for name in os.listdir(old) if name.endswith(".jsonl")]  # moved: none left at the top
    again, _ = _send(work, server, "--input", "bucket/**", "--ledger", "old-ledger", "--dead_letter_output", "dead")
    assert again.returncode == 0 and "first layout" not in again.stderr


def test_merging_beside_a_writer_loses_no_entry(tmp_path):
    """A writer commits entry files one after another while another process merges the partition again and
    again (every file mergeable): every entry written is in the ledger at the end, whatever the interleaving."""
    import threading  # pylint: disable=import-outside-toplevel
    done = threading.Event()
    merges = []

    def merge():
        while not done.is_set():
            merges.append(ledger_files.compact_partition(str(tmp_path), "date=2024-03-01-09", older_than=0))

    merger = threading.Thread(target=merge)
    merger.start()
    try:
        for n in range(150):
            _record(tmp_path, "20240301T100000Z-aaaaaaaa", [(HOUR_FILE.replace("a.avro", f"{n}.avro"), n, 1.0)])
    finally:
        done.set()
        merger.join()
    assert sum(1 for n in merges if n) > 0  # merges did happen meanwhile
    # (two merges at once may each write a copy: an entry twice, never none)
    assert sorted({entry["size"] for entry in ledger_entries(tmp_path)}) == list(range(150))


def test_skip_files_in_ledger_reads_only_the_partitions_of_the_files_listed(tmp_path):
    import apache_beam as beam  # pylint: disable=import-outside-toplevel
    from apache_beam.io.filesystem import FileMetadata  # pylint: disable=import-outside-toplevel
    from apache_beam.metrics.metric import MetricsFilter  # pylint: disable=import-outside-toplevel
    from apache_beam.testing.util import assert_that, equal_to  # pylint: disable=import-outside-toplevel
    recorded, other = HOUR_FILE, HOUR_FILE.replace("date=2024-03-01-09", "date=2024-03-01-10")
    _record(tmp_path, "20240301T100000Z-aaaaaaaa", [(recorded, 10, 1.5)])
    for old in ("date=2023-01-01-00", "date=2023-01-01-01"):  # the history: not read (it would warn)
        (tmp_path / old).mkdir()
        (tmp_path / old / "entries-x-1.jsonl").write_text("not an entry\n")
    pipeline = beam.Pipeline(RUNNER.split("=")[1])
    kept = (pipeline
            | beam.Create([FileMetadata(recorded, 10, 1.5), FileMetadata(recorded, 11, 2.0), FileMetadata(other, 3, 1.0)])
            | ledger.SkipFilesInLedger(str(tmp_path), destination=DESTINATION)
            | beam.Map(lambda metadata: (metadata.path, metadata.size_in_bytes)))
    assert_that(kept, equal_to([(recorded, 11), (other, 3)]))
    result = pipeline.run()
    result.wait_until_finish()
    counters = {found.key.metric.name: found.committed for found in result.metrics().query(MetricsFilter())["counters"]}
    assert counters.get("ledger_files_skipped") == 1
    assert not [name for name in counters if name.startswith("ledger_malformed")]
