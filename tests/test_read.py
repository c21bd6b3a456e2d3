"""Reading Currents files: event type from path or schema, each file once, broken files dead-lettered."""
import io

import apache_beam as beam
import fastavro
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline import currents_schemas
from pipeline.sample_bucket import make_record, write_currents_file
from transforms.elements import DEAD_LETTER
from transforms.read import ReadCurrentsFiles, event_type_from_path, event_type_from_schema
from transforms.s3_files import s3_prefix

CLICK = "users.messages.email.Click"


def test_event_type_from_path():
    assert event_type_from_path(
        "gs://b/p/dataexport.prod-01.GCS.integration.5a/event_type=users.canvas.Entry/date=2024-03-01-12/7/0/f.avro"
    ) == "users.canvas.Entry"
    assert event_type_from_path("/a/event_type=x.Old/b/event_type=users.behaviors.Uninstall/f.avro") == (
        "users.behaviors.Uninstall")
    assert event_type_from_path("/data/users.canvas.Entry.avro") is None


def test_event_type_from_schema_names():
    assert event_type_from_schema({"name": "dataexport.S3.inner.users.messages.email.Click"}) == CLICK
    azure = {"name": "Click", "namespace": "dataexport.AzureBlob.inner.users.messages.email"}
    assert event_type_from_schema(azure) == CLICK
    kafka = currents_schemas.kafka_connect_variant(currents_schemas.schema(CLICK))
    assert event_type_from_schema(kafka) == CLICK
    assert event_type_from_schema({"name": "Entry", "namespace": "com.example.currents.users.canvas"}) == (
        "users.canvas.Entry")
    assert event_type_from_schema({"name": "dataexport.GCS.inner.users.messages.email.Deferral"}) == (
        "users.messages.email.Deferral")


def test_files_without_event_type_folder_and_twice_matched_files(tmp_path):
    schema = currents_schemas.schema(CLICK, currents_schemas.versions(CLICK)[0])
    records = [make_record(CLICK, schema, i) for i in range(3)]
    path = str(tmp_path / "flat" / "some-file.avro")
    write_currents_file(path, schema, records, "snappy")
    with test_pipeline.TestPipeline(runner="FnApiRunner") as pipeline:
        read = pipeline | ReadCurrentsFiles([str(tmp_path / "flat" / "*.avro"), str(tmp_path / "**")])
        assert_that(read["events"] | beam.Map(lambda e: (e.event_type, e.record["id"], e.source_file)),
                    equal_to([(CLICK, r["id"], path) for r in records]))
        assert_that(read[DEAD_LETTER], equal_to([]), label="no dead letters")


def test_a_file_broken_midway_keeps_its_first_events_and_is_dead_lettered(tmp_path):
    schema = currents_schemas.schema(CLICK)
    records = [make_record(CLICK, schema, i) for i in range(50)]
    stream = io.BytesIO()
    # Small blocks: the file breaks in its last block, after whole blocks that decode.
    fastavro.writer(stream, fastavro.parse_schema(schema), records, sync_interval=2_000)
    path = tmp_path / f"event_type={CLICK}" / "broken.avro"
    path.parent.mkdir()
    path.write_bytes(stream.getvalue()[:-40])
    not_avro = tmp_path / "event_type=users.canvas.Entry" / "text.avro"
    not_avro.parent.mkdir()
    not_avro.write_text("not avro")
    with test_pipeline.TestPipeline(runner="FnApiRunner") as pipeline:
        read = pipeline | ReadCurrentsFiles([str(tmp_path / "**")])
        counted = read["events"] | beam.combiners.Count.Globally()
        letters = read[DEAD_LETTER] | beam.Map(
            lambda l: [l["reason"], l["event_type"], l["source_file"], l["events_read_before_error"]])

        def check_count(counts):
            assert 0 < counts[0] < 50

        def check_letters(found):
            by_file = {letter[2]: letter for letter in found}
            assert sorted(by_file) == sorted([str(path), str(not_avro)])
            reason, event_type, _, events_read = by_file[str(path)]
            assert (reason, event_type) == ("unreadable_file", CLICK) and events_read > 0
            assert by_file[str(not_avro)] == ["unreadable_file", "users.canvas.Entry", str(not_avro), 0]

        assert_that(counted, check_count)
        assert_that(letters, check_letters, label="letters")


@pytest.mark.parametrize("pattern,prefix", [
    ("s3://bucket/currents/event_type=x/date=2024-03-01-00/**", "s3://bucket/currents/event_type=x/date=2024-03-01-00/"),
    ("s3://bucket/**", "s3://bucket/"),
    ("s3://bucket/currents/*/date=2024-03-01-00/**", None),   # a glob before the end: Beam matches it
    ("s3://bucket/currents/file.avro", None),
    ("gs://bucket/currents/**", None),
])
def test_only_whole_prefix_s3_patterns_are_listed_by_prefix(pattern, prefix):
    assert s3_prefix(pattern) == prefix
