"""Listing and routing Currents files: event type from path or schema, each file once, by family."""
import os

import apache_beam as beam
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from currents_to_segment.transforms.currents import schemas as currents_schemas
from currents_to_segment.pipeline.sample_bucket import make_record, write_currents_file
from currents_to_segment.transforms.currents.catalog import CLASSIC
from currents_to_segment.transforms.currents.records import event_type_from_path, event_type_from_schema
from currents_to_segment.transforms.files import UNSUPPORTED, ListCurrentsFiles, RouteByFamily
from currents_to_segment.transforms.file_access import s3_prefix

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


def _route(pipeline, patterns, event_types=None):
    """(output, CurrentsFile) of every file the patterns match, listed once and routed by family."""
    routed = pipeline | ListCurrentsFiles(patterns) | RouteByFamily(CLASSIC, event_types=event_types)
    return [routed[output] | f"Tag {output}" >> beam.Map(lambda file, output=output: (output, tuple(file)))
            for output in (*CLASSIC.families, UNSUPPORTED)] | beam.Flatten()


def test_files_without_event_type_folder_and_twice_matched_files(tmp_path):
    schema = currents_schemas.schema(CLICK, currents_schemas.versions(CLICK)[0])
    records = [make_record(CLICK, schema, i) for i in range(3)]
    path = str(tmp_path / "flat" / "some-file.avro")
    write_currents_file(path, schema, records, "snappy")
    size, modified = os.path.getsize(path), os.path.getmtime(path)
    with test_pipeline.TestPipeline(runner="FnApiRunner") as pipeline:
        routed = _route(pipeline, [str(tmp_path / "flat" / "*.avro"), str(tmp_path / "**")])
        # Once, though matched twice; its type read from its header (no event_type= folder); email's family.
        assert_that(routed, equal_to([("email", (path, size, modified, CLICK))]))


def test_unreadable_and_unsent_types_go_to_unsupported_and_other_types_are_left_out(tmp_path):
    not_avro = tmp_path / "flat" / "text.avro"
    not_avro.parent.mkdir()
    not_avro.write_text("not avro")
    entry_schema = currents_schemas.schema("users.canvas.Entry")
    entry = str(tmp_path / "event_type=users.canvas.Entry" / "f.avro")
    write_currents_file(entry, entry_schema, [make_record("users.canvas.Entry", entry_schema, 0)])
    deferral_schema = currents_schemas.schema("users.messages.email.Deferral")
    deferral = str(tmp_path / "event_type=users.messages.email.Deferral" / "f.avro")
    write_currents_file(deferral, deferral_schema, [make_record("users.messages.email.Deferral", deferral_schema, 0)])
    click = str(tmp_path / f"event_type={CLICK}" / "f.avro")
    write_currents_file(click, schema := currents_schemas.schema(CLICK), [make_record(CLICK, schema, 0)])
    with test_pipeline.TestPipeline(runner="FnApiRunner") as pipeline:
        routed = _route(pipeline, [str(tmp_path / "**")], event_types={"users.canvas.Entry",
                                                                         "users.messages.email.Deferral"})
        assert_that(routed | beam.Map(lambda found: (found[0], found[1][0], found[1][3])), equal_to([
            ("unsupported", str(not_avro), None),  # read and dead-lettered by its delivery
            ("canvas_campaign", entry, "users.canvas.Entry"),
            ("unsupported", deferral, "users.messages.email.Deferral"),  # classic does not send it: counted there
        ]))  # the Click file: of a type --event_types leaves out, not routed at all


@pytest.mark.parametrize("pattern,prefix", [
    ("s3://bucket/currents/event_type=x/date=2024-03-01-00/**", "s3://bucket/currents/event_type=x/date=2024-03-01-00/"),
    ("s3://bucket/**", "s3://bucket/"),
    ("s3://bucket/currents/*/date=2024-03-01-00/**", None),   # a glob before the end: Beam matches it
    ("s3://bucket/currents/file.avro", None),
    ("gs://bucket/currents/**", None),
])
def test_only_whole_prefix_s3_patterns_are_listed_by_prefix(pattern, prefix):
    assert s3_prefix(pattern) == prefix


def test_the_route_tells_every_branch_to_flush_every_flush_seconds(tmp_path):
    entry_schema = currents_schemas.schema("users.canvas.Entry")
    paths = [str(tmp_path / "event_type=users.canvas.Entry" / f"{n}.avro") for n in range(3)]
    for path in paths:
        write_currents_file(path, entry_schema, [make_record("users.canvas.Entry", entry_schema, 0)])
    with test_pipeline.TestPipeline(runner="FnApiRunner") as pipeline:
        routed = (pipeline | ListCurrentsFiles([str(tmp_path / "**")])
                  | RouteByFamily(CLASSIC, flush_seconds=0))  # due before every file
        flushes = [routed[output] | f"Flushes {output}" >> beam.Filter(lambda file: file.path is None)
                   | f"Count {output}" >> beam.combiners.Count.Globally() for output in ("email", UNSUPPORTED)]
        for output, counted in zip(("email", UNSUPPORTED), flushes):
            assert_that(counted, equal_to([3]), label=f"{output}: a flush before each of the 3 files")
        files = routed["canvas_campaign"] | beam.Filter(lambda file: file.path is not None) | beam.Map(
            lambda file: file.path)
        assert_that(files, equal_to(paths), label="the files themselves, once each")
