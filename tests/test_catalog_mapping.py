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
from currents_to_segment.transforms.currents.catalog import BUILT_IN, field_name_problem, protectable_names
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


# --- the names --redact_fields and --hash_fields can give ----------------------------------------------------

def test_the_names_a_mapping_can_protect_are_its_property_keys_and_traits():
    assert sorted(protectable_names(BUILT_IN["classic"])) == [
        "app_id", "button_id", "campaign_id", "campaign_name", "canvas_id", "canvas_name", "canvas_step_id",
        "canvas_variation_id", "card_id", "dispatch_id", "email", "in_control_group", "link_url",
        "message_variation_id", "send_id", "subscription_group_id", "subscription_status"]
    current = protectable_names(BUILT_IN["current"])
    assert {"email", "phone", "link_url", "user_agent", "message_body"} <= current
    assert not {"email_address", "to_phone_number", "device_model", "model", "traits.email"} & current


@pytest.mark.parametrize("mapping,name,passthrough", [
    ("classic", "email", False), ("classic", "campaign_name", False), ("current", "phone", False),
    ("current", "link_url", False),
    # With passthrough, the fields sent under their own names: timezone everywhere, email_address on the classic
    # types that do not send it as context.traits.email (subscription changes), user_id when it is no anonymousId.
    ("classic", "timezone", True), ("current", "timezone", True), ("classic", "email_address", True),
    ("classic", "user_id", True), ("current", "device_model", True),
])
def test_a_name_the_calls_carry_is_accepted(mapping, name, passthrough):
    assert field_name_problem(BUILT_IN[mapping], name, passthrough) is None


@pytest.mark.parametrize("mapping,name,passthrough,problem", [
    ("classic", "emial", False, "no property or trait of the classic mapping is named emial (close matches: email)"),
    ("classic", "Email", False, "no property or trait of the classic mapping is named Email (close matches: email)"),
    ("current", "emial", True, "no property or trait of the current mapping is named emial (close matches: email)"),
    ("classic", "email_address", False,
     "email_address is the Currents field; it is sent as context.traits.email: give email"),
    # current sends email_address as context.traits.email wherever a schema has it: passthrough never sends it
    ("current", "email_address", True,
     "email_address is the Currents field; it is sent as context.traits.email: give email"),
    ("current", "to_phone_number", False,
     "to_phone_number is the Currents field; it is sent as context.traits.phone: give phone"),
    ("classic", "context.traits.email", False, "context.traits.email is a path: give the trait's name, email"),
    ("classic", "traits.email", False, "traits.email is a path: give the trait's name, email"),
    ("classic", "properties.link_url", False, "properties.link_url is a path: give the property's name, link_url"),
    ("classic", "url", False, "url is the Currents field; it is sent as properties.link_url: give link_url"),
    ("current", "content_card_id", True,
     "content_card_id is the Currents field; it is sent as properties.card_id: give card_id"),
    ("current", "device_model", False, "device_model is the Currents field; it is sent as context.device.model: "
                                       "only properties and context.traits can be redacted or hashed"),
    ("classic", "timezone", False, "timezone is a Currents field the classic mapping does not send "
                                   "(--passthrough_fields would send it as a property of its own name)"),
    ("classic", "external_user_id", True,
     "external_user_id is sent as userId, which is neither a property nor a trait: it cannot be redacted or hashed"),
    ("current", "user_id", True,
     "user_id is sent as anonymousId, which is neither a property nor a trait: it cannot be redacted or hashed"),
    ("classic", "xyzzy", False,
     "no property or trait of the classic mapping is named xyzzy (see docs/events.md for the names each event sends)"),
])
def test_a_name_no_call_carries_is_refused_with_what_it_is_and_its_close_matches(mapping, name, passthrough, problem):
    assert field_name_problem(BUILT_IN[mapping], name, passthrough) == problem
