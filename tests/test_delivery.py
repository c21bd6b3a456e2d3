"""One file's way to Segment (transforms.delivery.Delivery), without a pipeline: real Currents files, a real
SegmentSender against the loopback Segment server, real dead-letter files; then the DeliverToSegment composite on
beam.Create. Expected values are written here from what each test writes, never computed by the code under test."""
import io
import json
import os
import shutil
import subprocess
import sys

import apache_beam as beam
import fastavro
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from currents_to_segment.transforms.currents import schemas as currents_schemas
from currents_to_segment.pipeline.sample_bucket import make_record, write_currents_file
from currents_to_segment.transforms import jsonl
from currents_to_segment.transforms.currents.catalog import CLASSIC
from currents_to_segment.transforms.currents.records import RecordFilter
from currents_to_segment.transforms.currents.track_calls import TrackSettings
from currents_to_segment.transforms.deliver import DeliverToSegment, DeliverySettings
from currents_to_segment.transforms.delivery import CurrentsFile, Delivery
from currents_to_segment.transforms.segment.api import envelope_bytes
from currents_to_segment.transforms.segment.batching import BatchSettings
from currents_to_segment.transforms.segment.client import ClientSettings
from currents_to_segment.transforms.senders import ProcessSending, SegmentSender

KEY = "delivery-test-key"
CLICK = "users.messages.email.Click"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Counts(dict):
    def add(self, name, n):
        self[name] = self.get(name, 0) + n


def currents_file(tmp_path, event_type, records, name="f.avro"):
    """Write a Currents file of these records under an event_type= folder; its CurrentsFile."""
    path = tmp_path / f"event_type={event_type}" / name
    write_currents_file(str(path), currents_schemas.schema(event_type), records)
    return CurrentsFile(str(path), path.stat().st_size, path.stat().st_mtime, event_type)


def records_of(event_type, count, first=0, **overrides):
    schema = currents_schemas.schema(event_type)
    return [make_record(event_type, schema, first + n, **overrides) for n in range(count)]


def opener(file):
    return lambda: open(file.path, "rb")


def delivery(tmp_path, server, counts, *, max_events=2_500, in_flight=2, window_seconds=3600):
    settings = ClientSettings(endpoint=server.url, requests_in_flight=in_flight, max_attempts=2, backoff_base=0.01,
                              max_events=max_events)
    sender = SegmentSender(KEY, settings, ProcessSending(settings, in_flight), counts.add)
    made = Delivery(track=TrackSettings(mapping=CLASSIC), record_filter=RecordFilter(),
                    batch=BatchSettings(window_seconds, 475_000, max_events, envelope_bytes(KEY)), sender=sender,
                    letters=jsonl.AccountedLines(str(tmp_path / "dead"), jsonl.DEAD_LETTERS, "run", "dead letters"),
                    count=counts.add)
    return made, sender


def deliver_all(tmp_path, server, *files, **settings):
    """Deliver the files one after the other, then finish the bundle: (the files finished, the counts)."""
    counts = Counts()
    work, sender = delivery(tmp_path, server, counts, **settings)
    try:
        finished = [done for file in files for done in work.deliver(file, opener(file))] + work.finish()
    finally:
        sender.close()
    return finished, counts


def letters_in(folder):
    return [json.loads(line) for name in sorted(os.listdir(folder)) if not name.startswith(".")
            for line in open(os.path.join(folder, name), encoding="utf-8")] if os.path.isdir(folder) else []


def test_a_file_is_finished_once_each_of_its_events_is_accepted_or_dropped(tmp_path, server):
    records = records_of(CLICK, 5) + records_of(CLICK, 2, first=5, external_user_id=None)
    file = currents_file(tmp_path, CLICK, records)
    finished, counts = deliver_all(tmp_path, server, file)
    assert finished == [file]
    assert sorted(server.accepted_ids()) == sorted(r["id"] for r in records[:5])
    assert counts[f"read:{CLICK}"] == 7 and counts[f"sent:{CLICK}"] == 5
    assert counts[f"dropped_no_external_id:{CLICK}"] == 2 and counts["files_read"] == 1
    assert letters_in(tmp_path / "dead") == []


def test_requests_are_cut_across_files_and_each_file_finishes_with_its_last_answer(tmp_path, server):
    first = currents_file(tmp_path, CLICK, records_of(CLICK, 3), "a.avro")
    second = currents_file(tmp_path, CLICK, records_of(CLICK, 3, first=3), "b.avro")
    counts = Counts()
    work, sender = delivery(tmp_path, server, counts, max_events=4)
    finished = work.deliver(first, opener(first))
    assert finished == [] and server.requests == []  # its 3 calls wait for a fourth
    finished += work.deliver(second, opener(second))
    finished += work.finish()
    sender.close()
    assert sorted(finished) == sorted([first, second])
    assert sorted(record.events for record in server.requests) == [2, 4]
    assert len(server.accepted) == 6


def test_a_flush_sends_what_is_held_and_hands_on_the_files_it_finished(tmp_path, server):
    """What the route's FLUSH does to a branch that gets no more files: its held calls go, its files are finished."""
    file = currents_file(tmp_path, CLICK, records_of(CLICK, 3))
    counts = Counts()
    work, sender = delivery(tmp_path, server, counts, max_events=4)
    assert work.deliver(file, opener(file)) == [] and server.requests == []  # 3 calls wait for a fourth
    assert work.flush() == [file]
    assert [record.events for record in server.requests] == [3] and work.flush() == []
    sender.close()


def test_a_request_never_mixes_event_time_windows(tmp_path, server):
    start = 1_709_294_400  # 2024-03-01T12:00:00Z
    records = [record for n in range(30) for record in records_of(CLICK, 1, first=n, time=start + (n % 3) * 60 + n % 7)]
    file = currents_file(tmp_path, CLICK, records)
    deliver_all(tmp_path, server, file, max_events=8, window_seconds=60)
    minute = {r["id"]: (r["time"] - start) // 60 for r in records}
    # Three windows of 10 calls: a full request of 8, then what is left of each window.
    assert sorted(record.events for record in server.requests) == [2, 2, 2, 8, 8, 8]
    for record in server.requests:
        assert len({minute[event["messageId"]] for event in json.loads(record.body)["batch"]}) == 1


def test_a_broken_file_keeps_its_first_blocks_and_dead_letters_the_rest(tmp_path, server):
    schema = currents_schemas.schema(CLICK)
    records = records_of(CLICK, 50)
    stream = io.BytesIO()
    # Small blocks: the file breaks in its last block, after whole blocks that decode.
    fastavro.writer(stream, fastavro.parse_schema(schema), records, sync_interval=2_000)
    data = stream.getvalue()
    cut = len(data) - 40
    whole = [r["id"] for block in fastavro.block_reader(io.BytesIO(data)) if block.offset + block.size <= cut
             for r in block]
    assert 0 < len(whole) < 50
    path = tmp_path / f"event_type={CLICK}" / "broken.avro"
    path.parent.mkdir()
    path.write_bytes(data[:cut])
    broken = CurrentsFile(str(path), cut, path.stat().st_mtime, CLICK)
    not_avro_path = tmp_path / "text.avro"
    not_avro_path.write_text("not avro")
    not_avro = CurrentsFile(str(not_avro_path), 8, not_avro_path.stat().st_mtime, None)
    finished, counts = deliver_all(tmp_path, server, broken, not_avro)
    assert sorted(server.accepted_ids()) == sorted(whole)
    assert [(letter["reason"], letter["source_file"], letter["events_read_before_error"])
            for letter in letters_in(tmp_path / "dead")] == [
        ("unreadable_file", str(path), len(whole)), ("unreadable_file", str(not_avro_path), 0)]
    assert sorted(finished) == sorted([broken, not_avro])  # every part accounted for: recorded, never read again
    assert counts["unreadable_files"] == 2


def test_a_file_that_cannot_be_read_from_storage_is_dead_lettered_and_never_finished(tmp_path, server):
    file = currents_file(tmp_path, CLICK, records_of(CLICK, 3))
    os.remove(file.path)
    finished, counts = deliver_all(tmp_path, server, file)
    [letter] = letters_in(tmp_path / "dead")
    assert letter["reason"] == "unreadable_file" and letter["error"].startswith(
        "StorageError: cannot read the file from storage: FileNotFoundError")
    assert finished == [] and server.requests == []  # not recorded: a later run reads it again


def test_refused_and_oversize_events_are_dead_lettered_and_the_file_still_finishes(tmp_path, server):
    records = records_of(CLICK, 6) + records_of(CLICK, 1, first=6, email_address="x" * 40_000)
    poison = records[2]["id"]
    server.poison = lambda event: event["messageId"] == poison
    file = currents_file(tmp_path, CLICK, records)
    finished, counts = deliver_all(tmp_path, server, file)
    assert finished == [file]
    assert sorted(server.accepted_ids()) == sorted(r["id"] for r in records[:6] if r["id"] != poison)
    assert sorted((letter["reason"], letter["message_id"]) for letter in letters_in(tmp_path / "dead")) == sorted([
        ("rejected_by_segment", poison), ("event_too_large", records[6]["id"])])
    assert counts[f"dead_lettered:{CLICK}"] == 2 and counts[f"sent:{CLICK}"] == 5


def test_types_the_mapping_does_not_send_are_counted_after_the_users_without_id(tmp_path, server):
    deferral = "users.messages.email.Deferral"
    records = records_of(deferral, 4) + records_of(deferral, 1, first=4, external_user_id=None)
    file = currents_file(tmp_path, deferral, records)
    finished, counts = deliver_all(tmp_path, server, file)
    assert finished == [file] and server.requests == []
    assert counts[f"unsupported_event_type:{deferral}"] == 4 and counts[f"dropped_no_external_id:{deferral}"] == 1


def test_the_plain_parts_import_no_beam_module():
    modules = ["currents_to_segment.transforms.delivery", "currents_to_segment.transforms.senders",
               "currents_to_segment.transforms.letters", "currents_to_segment.transforms.currents.records",
               "currents_to_segment.transforms.currents.track_calls", "currents_to_segment.transforms.currents.avro_blocks",
               "currents_to_segment.transforms.currents.catalog", "currents_to_segment.transforms.currents.schemas",
               "currents_to_segment.transforms.currents.mapping_file",
               "currents_to_segment.transforms.currents.partitions", "currents_to_segment.transforms.segment.client",
               "currents_to_segment.transforms.segment.pacing", "currents_to_segment.transforms.segment.batching",
               "currents_to_segment.transforms.segment.in_flight", "currents_to_segment.transforms.segment.write_key"]
    code = f"import sys\nfor m in {modules!r}: __import__(m)\nprint(sorted(n for n in sys.modules if n.startswith('apache_beam')))"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    assert found.stdout.strip() == "[]"


def test_the_installed_layout_puts_one_name_of_ours_at_the_top_of_site_packages(tmp_path):
    (tmp_path / "source").mkdir()
    source = tmp_path / "source"  # a copy: pip builds in the tree it is given
    for name in ("setup.py", "README.md", "pipeline", "transforms"):
        copy = shutil.copytree if os.path.isdir(os.path.join(ROOT, name)) else shutil.copy
        copy(os.path.join(ROOT, name), source / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                                          if copy is shutil.copytree else {}))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(tmp_path / "site"),
                    str(source)], check=True, capture_output=True)
    top = sorted(name for name in os.listdir(tmp_path / "site") if not name.endswith(".dist-info") and name != "bin")
    assert top == ["currents_to_segment"]
    assert sorted(os.listdir(tmp_path / "site" / "currents_to_segment")) == ["pipeline", "transforms"]
    assert os.path.exists(tmp_path / "site" / "currents_to_segment" / "transforms" / "currents" / "schemas.json")
    assert os.path.exists(tmp_path / "site" / "currents_to_segment" / "transforms" / "segment" / "client.py")


# --- the composite -----------------------------------------------------------------------------------------------

def test_deliver_to_segment_hands_on_each_finished_file_in_a_dry_run(tmp_path):
    first = currents_file(tmp_path, CLICK, records_of(CLICK, 3), "a.avro")
    gone = currents_file(tmp_path, CLICK, records_of(CLICK, 2, first=3), "gone.avro")
    os.remove(gone.path)
    settings = DeliverySettings(
        track=TrackSettings(mapping=CLASSIC), record_filter=RecordFilter(),
        batch=BatchSettings(3600, 475_000, 2_500, envelope_bytes("")), client=None, key_source=None,
        dead_letter_output=str(tmp_path / "dead"), dry_run_output=str(tmp_path / "requests"), run_id="run")
    with test_pipeline.TestPipeline(runner="FnApiRunner") as pipeline:
        finished = pipeline | beam.Create([first, gone]) | DeliverToSegment(settings)
        assert_that(finished, equal_to([(first.path, first.size, first.modified)]))
    [body] = [json.loads(line) for name in os.listdir(tmp_path / "requests")
              for line in open(tmp_path / "requests" / name, encoding="utf-8")]
    assert sorted(event["messageId"] for event in body["batch"]) == sorted(
        r["id"] for r in records_of(CLICK, 3))
    assert [letter["source_file"] for letter in letters_in(tmp_path / "dead")] == [gone.path]

