"""Reading Currents files: event type from path or schema, each file once, broken files dead-lettered."""
import io

import apache_beam as beam
import fastavro
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline import currents_schemas
from pipeline.sample_bucket import make_record, write_currents_file
from transforms import elements
from transforms.read import ListCurrentsFiles, ReadCurrentsFiles, event_type_from_path, event_type_from_schema
from transforms.file_access import s3_prefix

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


def _read(pipeline, patterns):
    return pipeline | ListCurrentsFiles(patterns) | ReadCurrentsFiles()


def _records(items):
    """(event type, id, source file) of every record of the RECORDS items."""
    return items | "Records" >> beam.FlatMap(
        lambda item: [(item[1], record["id"], item[2]) for record in item[3]] if item[0] == elements.RECORDS else [])


def _of_kind(items, kind):
    return items | f"Only {kind}" >> beam.Filter(lambda item: item[0] == kind)


def test_files_without_event_type_folder_and_twice_matched_files(tmp_path):
    schema = currents_schemas.schema(CLICK, currents_schemas.versions(CLICK)[0])
    records = [make_record(CLICK, schema, i) for i in range(3)]
    path = str(tmp_path / "flat" / "some-file.avro")
    write_currents_file(path, schema, records, "snappy")
    with test_pipeline.TestPipeline(runner="FnApiRunner") as pipeline:
        items = _read(pipeline, [str(tmp_path / "flat" / "*.avro"), str(tmp_path / "**")])
        assert_that(_records(items), equal_to([(CLICK, r["id"], path) for r in records]))
        assert_that(_of_kind(items, elements.LETTER), equal_to([]), label="no dead letters")
        assert_that(_of_kind(items, elements.FILE_READ) | beam.Map(lambda item: (item[1], item[2][0], item[3])),
                    equal_to([(CLICK, path, 3)]), label="read once, 3 units")


def test_a_file_broken_midway_keeps_its_first_blocks_and_dead_letters_the_rest(tmp_path):
    schema = currents_schemas.schema(CLICK)
    records = [make_record(CLICK, schema, i) for i in range(50)]
    stream = io.BytesIO()
    # Small blocks: the file breaks in its last block, after whole blocks that decode.
    fastavro.writer(stream, fastavro.parse_schema(schema), records, sync_interval=2_000)
    data = stream.getvalue()
    cut = len(data) - 40
    blocks = list(fastavro.block_reader(io.BytesIO(data)))
    whole = [r["id"] for block in blocks if block.offset + block.size <= cut for r in block]
    assert 0 < len(whole) < 50
    path = tmp_path / f"event_type={CLICK}" / "broken.avro"
    path.parent.mkdir()
    path.write_bytes(data[:cut])
    not_avro = tmp_path / "event_type=users.canvas.Entry" / "text.avro"
    not_avro.parent.mkdir()
    not_avro.write_text("not avro")
    with test_pipeline.TestPipeline(runner="FnApiRunner") as pipeline:
        items = _read(pipeline, [str(tmp_path / "**")])
        letters = _of_kind(items, elements.LETTER) | beam.Map(
            lambda item: [item[3]["reason"], item[1], item[2], item[3]["events_read_before_error"]])
        assert_that(_records(items) | beam.Map(lambda found: found[1]), equal_to(whole))
        assert_that(letters, equal_to([["unreadable_file", CLICK, str(path), len(whole)],
                                       ["unreadable_file", "users.canvas.Entry", str(not_avro), 0]]),
                    label="letters")
        # Each file's units: its records and its unreadable parts.
        assert_that(_of_kind(items, elements.FILE_READ) | beam.Map(lambda item: (item[2][0], item[3])),
                    equal_to([(str(path), len(whole) + 1), (str(not_avro), 1)]), label="units")


@pytest.mark.parametrize("pattern,prefix", [
    ("s3://bucket/currents/event_type=x/date=2024-03-01-00/**", "s3://bucket/currents/event_type=x/date=2024-03-01-00/"),
    ("s3://bucket/**", "s3://bucket/"),
    ("s3://bucket/currents/*/date=2024-03-01-00/**", None),   # a glob before the end: Beam matches it
    ("s3://bucket/currents/file.avro", None),
    ("gs://bucket/currents/**", None),
])
def test_only_whole_prefix_s3_patterns_are_listed_by_prefix(pattern, prefix):
    assert s3_prefix(pattern) == prefix
