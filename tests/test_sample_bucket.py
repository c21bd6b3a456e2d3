"""Tests of the stored Currents schemas and of the sample-bucket fixture generator."""
import datetime
import json
import re

import fastavro
import fastavro.validation
import pytest

from currents_to_segment.pipeline import sample_bucket
from currents_to_segment.transforms.currents import schemas as currents_schemas
from currents_to_segment.transforms.currents.catalog import CLASSIC

NEWS_FEED_TYPES = {
    "users.behaviors.app.NewsFeedImpression",
    "users.messages.newsfeedcard.Impression",
    "users.messages.newsfeedcard.Click",
}
ALL_SCHEMAS = [
    (event_type, version)
    for event_type in currents_schemas.event_types()
    for version in currents_schemas.versions(event_type)
]

SAMPLE_BUCKET = {"seed": 7, "events_per_file": 6}


def _read(path):
    with open(path, "rb") as stream:
        return list(fastavro.reader(stream))


def _writer_schema(path):
    with open(path, "rb") as stream:
        return fastavro.reader(stream).writer_schema


def _readable(manifest):
    return [path for path in manifest["files"] if path not in manifest["broken_files"]]


@pytest.mark.parametrize("event_type, version", ALL_SCHEMAS)
def test_stored_schema_and_its_kafka_connect_variant_parse_and_accept_make_record(event_type, version):
    schema = currents_schemas.schema(event_type, version)
    for candidate in (schema, currents_schemas.kafka_connect_variant(schema)):
        parsed = fastavro.parse_schema(candidate)
        record = sample_bucket.make_record(event_type, candidate, 3)
        assert fastavro.validation.validate(record, parsed, raise_errors=True)


def test_every_mapped_type_has_its_oldest_and_newest_schema():
    for event_type in CLASSIC.events:
        expected = 1 if event_type in NEWS_FEED_TYPES else 2
        assert len(currents_schemas.versions(event_type)) == expected, event_type
    assert set(currents_schemas.event_types()) - set(CLASSIC.events)  # unmapped types are stored too


def test_latest_is_the_newest_stored_version():
    event_type = "users.messages.email.Send"
    oldest, newest = currents_schemas.versions(event_type)
    assert currents_schemas.schema(event_type) == currents_schemas.schema(event_type, newest)
    assert currents_schemas.schema(event_type) != currents_schemas.schema(event_type, oldest)


def test_kafka_connect_variant_shape():
    variant = currents_schemas.kafka_connect_variant(currents_schemas.schema("users.messages.email.Send"))
    names = [field["name"] for field in variant["fields"]]
    assert (variant["namespace"], variant["name"]) == ("users.messages.email", "Send")
    assert variant["connect.name"] == "users.messages.email.Send"
    assert variant["connect.version"] == 1
    assert not [name for name in names if name.endswith("_name")]
    assert 0 < names.index("_kafka_partition_key") < len(names) - 2


def test_make_record_values_and_overrides():
    schema = currents_schemas.schema("users.messages.email.Click")
    record = sample_bucket.make_record("users.messages.email.Click", schema, 5, campaign_name=None)
    assert record["email_address"] == "user5@example.com"
    assert record["url"] == "https://example.com/l/5"
    assert record["campaign_name"] is None
    assert record == sample_bucket.make_record("users.messages.email.Click", schema, 5, campaign_name=None)
    with pytest.raises(KeyError):
        sample_bucket.make_record("users.messages.email.Click", schema, 5, no_such_field=1)


def test_subscription_status_is_lower_case_only_in_the_oldest_state_change_schema():
    event_type = "users.behaviors.subscriptiongroup.StateChange"
    oldest, newest = currents_schemas.versions(event_type)
    status = {version: sample_bucket.make_record(event_type, currents_schemas.schema(event_type, version), 0)
              ["subscription_status"] for version in (oldest, newest)}
    assert status == {oldest: "subscribed", newest: "Subscribed"}


@pytest.mark.parametrize("codec", sample_bucket.CODECS)
def test_write_currents_file_round_trips(tmp_path, codec):
    event_type = "users.messages.sms.InboundReceive"  # has an array field
    schema = currents_schemas.schema(event_type)
    records = [sample_bucket.make_record(event_type, schema, seq) for seq in range(5)]
    path = tmp_path / "a" / "b.avro"
    sample_bucket.write_currents_file(str(path), schema, records, codec)
    with open(path, "rb") as stream:
        reader = fastavro.reader(stream)
        assert reader.codec == codec
        assert list(reader) == records


def test_currents_path_layout():
    hour = datetime.datetime(2024, 3, 2, 0, tzinfo=datetime.timezone.utc)
    path = sample_bucket.currents_path("root", "users.messages.email.Send", hour, schema_id=42, offset=7)
    integration = "dataexport.prod-01.S3.integration.5a1b2c3d4e5f6a7b8c9d0e1f"
    assert path == (f"root/{integration}/event_type=users.messages.email.Send/date=2024-03-02-00/42/0/"
                    f"{integration}+0+7.avro")


def test_bucket_records_equal_what_the_readable_files_hold(bucket):
    _, manifest = bucket
    read_back = [
        {"event_type": re.search(r"/event_type=([^/]+)/", path).group(1), "source_file": path, "record": record}
        for path in _readable(manifest)
        for record in _read(path)
    ]
    assert read_back == manifest["records"]


def test_bucket_broken_files_do_not_decode(bucket):
    _, manifest = bucket
    assert len(manifest["broken_files"]) == 2
    for path in manifest["broken_files"]:
        assert "/event_type=" in path and path.endswith(".avro")
        with pytest.raises(Exception):
            _read(path)


def test_bucket_covers_every_mapped_type_schema_codec_and_trap(bucket):
    root, manifest = bucket
    records = manifest["records"]
    for event_type in CLASSIC.events:
        files = {e["source_file"] for e in records if e["event_type"] == event_type}
        assert len(files) >= (1 if event_type in NEWS_FEED_TYPES else 2), event_type
    hours = {path.split("/date=")[1][:13] for path in manifest["files"]}
    assert {"2024-03-01-23", "2024-03-02-00"} <= hours
    codecs = set()
    for path in _readable(manifest):
        with open(path, "rb") as stream:
            codecs.add(fastavro.reader(stream).codec)
        external_ids = [e["record"]["external_user_id"] for e in records if e["source_file"] == path]
        assert None in external_ids and "" in external_ids, path
    assert codecs == set(sample_bucket.CODECS)
    assert {e["event_type"] for e in records} - set(CLASSIC.events)  # unmapped types present
    kafka_connect_files = [path for path in _readable(manifest) if "connect.name" in _writer_schema(path)]
    assert len(kafka_connect_files) >= 3


def test_bucket_has_exactly_one_oversize_and_one_duplicate_event(bucket):
    _, manifest = bucket
    records = manifest["records"]
    big = [e["record"]["id"] for e in records if len(json.dumps(e["record"])) > 32_000]
    assert big == manifest["oversize_ids"] and len(big) == 1
    ids = [e["record"]["id"] for e in records]
    duplicates = {i for i in ids if ids.count(i) > 1}
    assert duplicates == set(manifest["duplicate_ids"]) and len(duplicates) == 1
    sources = {e["source_file"] for e in records if e["record"]["id"] in duplicates}
    assert len(sources) == 2


def test_bucket_is_deterministic_per_seed(tmp_path):
    first = sample_bucket.make_sample_bucket(str(tmp_path / "a"), seed=1, events_per_file=3)
    second = sample_bucket.make_sample_bucket(str(tmp_path / "b"), seed=1, events_per_file=3)
    other = sample_bucket.make_sample_bucket(str(tmp_path / "c"), seed=2, events_per_file=3)
    assert [e["record"] for e in first["records"]] == [e["record"] for e in second["records"]]
    assert [e["record"] for e in first["records"]] != [e["record"] for e in other["records"]]


def test_main_writes_the_bucket(tmp_path, capsys):
    assert sample_bucket.main([str(tmp_path), "--seed", "3", "--events-per-file", "4"]) == 0
    assert "files" in capsys.readouterr().out
    assert list(tmp_path.glob("dataexport.*/event_type=*/date=*/*/*/*.avro"))
