"""Real Braze Currents Avro writer schemas, for fixtures and schema-evolution tests. Imports no Beam module.

`schemas.json` (package data) holds, per event type, the oldest and the newest writer
schema Braze has published for it, exactly as written in the file headers (field order, `doc`,
defaults or their absence). Version labels are the sample's date (`2019-08-15`) or `latest`.
`kafka_connect_variant` synthesizes the shape of the May–August 2021 producer, which no stored
version covers.
"""
import copy
import functools
import json
from importlib import resources

LATEST = "latest"

_CURRENTS_NAMESPACE_PREFIX = "dataexport.S3.inner."
KAFKA_CONNECT_FIELDS = ("_kafka_partition_key", "_producer_host")


@functools.cache
def _store():
    text = resources.files(__package__).joinpath("schemas.json").read_text(encoding="utf-8")
    return json.loads(text)


def event_types():
    """Return the Currents event types that have stored schemas, sorted."""
    return sorted(_store())


def versions(event_type):
    """Return the stored version labels of an event type, oldest first."""
    # Dates sort chronologically and "latest" sorts after every date.
    return sorted(_store()[event_type])


def schema(event_type, version=LATEST):
    """Return a copy of one stored writer schema; `latest` means the newest stored version."""
    if version == LATEST:
        version = versions(event_type)[-1]
    return copy.deepcopy(_store()[event_type][version])


def full_name(schema_dict):
    """Return the record's full name (namespace + name) as Avro resolves it."""
    name, namespace = schema_dict["name"], schema_dict.get("namespace")
    return f"{namespace}.{name}" if namespace and "." not in name else name


def kafka_connect_variant(schema_dict):
    """Return the schema as Braze's May–August 2021 Kafka-Connect producer wrote it.

    The record keeps its event-type full name but loses the `dataexport.S3.inner.` prefix, carries
    Kafka-Connect annotations, gains two internal nullable fields in the middle of the field list,
    and has every `*_name` field removed.
    """
    event_type = full_name(schema_dict).removeprefix(_CURRENTS_NAMESPACE_PREFIX)
    namespace, _, name = event_type.rpartition(".")
    fields = [copy.deepcopy(f) for f in schema_dict["fields"] if not f["name"].endswith("_name")]
    internal = [{"name": n, "type": ["null", "string"], "default": None} for n in KAFKA_CONNECT_FIELDS]
    middle = len(fields) // 2
    variant = {key: copy.deepcopy(value) for key, value in schema_dict.items() if key != "fields"}
    variant.update({
        "name": name,
        "namespace": namespace,
        "fields": fields[:middle] + internal + fields[middle:],
        "connect.name": event_type,
        "connect.version": 1,
    })
    return variant
