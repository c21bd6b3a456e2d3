"""Every type of both built-in mappings, on every stored Currents schema version, the Kafka-Connect shape and a
version of our own (fields in reverse order, `time` a long as WhatsApp's schemas type it), decoded from real
Avro files (records with every field, sparse records with every nullable field null, users
without an external id): mapped exactly as the references say. The expected calls come from
tests.mapping_oracle, written from the references, independently of transforms/catalog.py."""
import fastavro
import pytest

from currents_to_segment.transforms.currents import schemas as currents_schemas
from currents_to_segment.pipeline.sample_bucket import make_record, write_currents_file
from tests.mapping_oracle import CLASSIC, CLASSIC_COMMON, CURRENT, expected_call
from currents_to_segment.transforms.currents.catalog import BUILT_IN
from currents_to_segment.transforms.currents.track_calls import to_track

REFERENCES = {"classic": CLASSIC, "current": CURRENT}
VARIANTS = [(mapping, event_type, version, shape)
            for mapping, types in REFERENCES.items() for event_type in sorted(types)
            for version, shape in [(v, "stored") for v in currents_schemas.versions(event_type)]
            + [(currents_schemas.LATEST, "kafka"), (currents_schemas.LATEST, "reordered")]]


def reordered(schema):
    """The schema with its fields in reverse order and `time` a long."""
    fields = [dict(f, type="long") if f["name"] == "time" else f for f in reversed(schema["fields"])]
    return dict(schema, fields=fields)


def decoded(tmp_path, schema, records):
    path = str(tmp_path / "file.avro")
    write_currents_file(path, schema, records, "deflate")
    with open(path, "rb") as stream:
        return list(fastavro.reader(stream))


def nullable_fields(schema):
    return [f["name"] for f in schema["fields"] if isinstance(f["type"], list) and "null" in f["type"]
            and f["name"] not in ("external_user_id", "user_id")]


def test_every_type_of_both_references_has_a_stored_schema():
    assert len(CLASSIC) == 34 and len(CURRENT) == 52
    assert set(CLASSIC) | set(CURRENT) <= set(currents_schemas.event_types())
    assert len(VARIANTS) >= 34 * 4 + 52 * 3


@pytest.mark.parametrize("mapping,event_type,version,shape", VARIANTS,
                         ids=[f"{m}:{t}@{v}+{k}" for m, t, v, k in VARIANTS])
def test_each_schema_version_maps_as_the_reference_says(tmp_path, mapping, event_type, version, shape):
    schema = currents_schemas.schema(event_type, version)
    if shape == "kafka":
        schema = currents_schemas.kafka_connect_variant(schema)
    elif shape == "reordered":
        schema = reordered(schema)
    records = [make_record(event_type, schema, 1), make_record(event_type, schema, 2, external_user_id=None),
               make_record(event_type, schema, 3, **dict.fromkeys(nullable_fields(schema)))]
    for record in decoded(tmp_path, schema, records):
        anonymous = not record["external_user_id"]
        message = to_track(record, event_type, mapping=BUILT_IN[mapping])
        assert message == expected_call(record, event_type, mapping, include_anonymous=anonymous)
        assert message["timestamp"].endswith(".000Z")
    # The fully filled record sends every property its schema can feed.
    fields = {f["name"] for f in schema["fields"]}
    listed = ([(key, key) for key in CLASSIC_COMMON] + list(CLASSIC[event_type][1].items())
              if mapping == "classic" else CURRENT[event_type][2])
    assert set(to_track(records[0], event_type, mapping=BUILT_IN[mapping])["properties"]) == {
        key for key, field in listed if field in fields}
