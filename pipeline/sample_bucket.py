"""The project's own Braze Currents fixtures: plausible records, Avro files and a demo bucket.

Write a demo bucket (every event type a built-in mapping sends, in its oldest and newest schema, several codecs,
and the traps a real bucket holds) with:

    python -m pipeline make-sample-bucket sample-bucket --seed 0 --events-per-file 20 --types current

`make_sample_bucket` returns a manifest of everything it wrote, so tests can compute the expected
Segment calls without going through the pipeline's reader.
"""
import argparse
import datetime
import functools
import io
import os
import random
import secrets
import sys
import uuid

import fastavro

from currents_to_segment.transforms.currents import schemas as currents_schemas
from currents_to_segment.transforms.currents.catalog import BUILT_IN

CODECS = ("null", "deflate", "snappy", "zstandard")
CLUSTER = "prod-01"
INTEGRATION_ID = "5a1b2c3d4e5f6a7b8c9d0e1f"
DEFAULT_TIME = 1709294400  # 2024-03-01T12:00:00Z; default records fall within this hour.
OVERSIZE_LENGTH = 40_000  # Segment rejects messages over 32 KB.

_ID_NAMESPACE = uuid.UUID("0b5e4c1e-7a3d-4f0e-9c1a-3c7e2b9d4f60")
_DEFAULT = object()
_FIXED_STRINGS = {
    "timezone": "America/Chicago",
    "platform": "ios",
    "os_version": "iOS 17.2",
    "device_model": "iPhone 15",
    "from_domain": "mail.example.com",
    "user_agent": "Mozilla/5.0",
}
_STATE_CHANGE = "users.behaviors.subscriptiongroup.StateChange"
# Two hours across a day boundary: oldest schema versions in the first, newest in the second.
_OLD_HOUR = datetime.datetime(2024, 3, 1, 23, tzinfo=datetime.timezone.utc)
_NEW_HOUR = datetime.datetime(2024, 3, 2, 0, tzinfo=datetime.timezone.utc)
_KAFKA_CONNECT_TYPES = (
    "users.messages.email.Send", "users.messages.pushnotification.Open", _STATE_CHANGE,
)
# Types the mapping of a bucket's types does not send (counted as unsupported_event_type).
_UNMAPPED_TYPES = {"classic": ("users.messages.email.Deferral", "users.behaviors.subscription.GlobalStateChange"),
                   "current": ("users.messages.email.Deferral", "users.messages.banner.Click")}
_OVERSIZE_TYPE = "users.messages.email.Send"
_DUPLICATED_TYPE = "users.messages.email.Open"
_BROKEN_TYPE = "users.messages.email.Delivery"


@functools.cache
def _oldest_field_names(event_type):
    oldest = currents_schemas.versions(event_type)[0]
    return tuple(f["name"] for f in currents_schemas.schema(event_type, oldest)["fields"])


def _uuid(*parts):
    return str(uuid.uuid5(_ID_NAMESPACE, "/".join(map(str, parts))))


def _non_null(avro_type):
    # Every Currents union is ["null", X].
    return avro_type[1] if isinstance(avro_type, list) else avro_type


def _string_value(event_type, schema, name, seq):
    if name == "email_address":
        return f"user{seq}@example.com"
    if name == "url":
        return f"https://example.com/l/{seq}"
    if name == "button_id":
        return str(seq % 2)
    if name == "subscription_status":
        status = "Subscribed" if seq % 2 == 0 else "Unsubscribed"
        is_oldest = tuple(f["name"] for f in schema["fields"]) == _oldest_field_names(event_type)
        # Real 2019-2024 StateChange files carry the lower-case spelling.
        return status.lower() if event_type == _STATE_CHANGE and is_oldest else status
    if name == "user_id":
        return uuid.UUID(_uuid(event_type, name, seq)).hex[:24]  # a BSON ObjectId's shape
    if name.endswith("_id"):
        return _uuid(event_type, name, seq)
    if name.endswith("phone_number"):
        return f"+1555{seq % 10_000_000:07d}"
    return _FIXED_STRINGS.get(name, f"{name}-{seq}")


def _value(event_type, schema, name, avro_type, seq):
    avro_type = _non_null(avro_type)
    if isinstance(avro_type, dict):  # the only complex types in Currents are arrays of strings
        return [f"{name}-{seq}-{i}" for i in range(2)]
    if avro_type == "string":
        return _string_value(event_type, schema, name, seq)
    if avro_type == "boolean":
        return seq % 2 == 0
    if avro_type in ("int", "long"):
        return seq % 1000
    if avro_type in ("float", "double"):
        return seq / 4
    raise ValueError(f"{event_type}.{name}: unexpected Avro type {avro_type!r}")


def make_record(event_type, schema, seq, *, external_user_id=_DEFAULT, time=_DEFAULT, **overrides):
    """Return a plausible, deterministic record of `event_type` for `schema`, numbered `seq`.

    Every field is filled by name with a non-null value of its type; `id` is a UUID derived from
    event type and seq. `external_user_id` defaults to f"user-{seq}", `time` to a second of a fixed
    hour. Overrides win (None included); naming a field the schema lacks raises KeyError.
    """
    record = {
        field["name"]: _value(event_type, schema, field["name"], field["type"], seq)
        for field in schema["fields"]
    }
    record["id"] = _uuid(event_type, seq)
    record["external_user_id"] = f"user-{seq}" if external_user_id is _DEFAULT else external_user_id
    record["time"] = DEFAULT_TIME + seq % 3600 if time is _DEFAULT else time
    unknown = set(overrides) - set(record)
    if unknown:
        raise KeyError(f"{event_type} schema has no field(s) {sorted(unknown)}")
    record.update(overrides)
    return record


def write_currents_file(path, schema, records, codec="null", *, sync_marker=None):
    """Write `records` as an Avro object container file at local `path`, creating parent folders.

    `codec` is one of CODECS. `sync_marker` (16 bytes) makes the file byte-for-byte reproducible;
    by default it is random, as in any Avro writer.
    """
    records = list(records)
    sync_marker = sync_marker or secrets.token_bytes(16)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "wb") as stream:
        fastavro.writer(stream, fastavro.parse_schema(schema), records, codec=codec, sync_marker=sync_marker)


def currents_path(root, event_type, hour, *, schema_id=1, partition=0, offset=0, conn="S3", zone="0"):
    """Return the path Braze Currents would give a file of `event_type` queued in `hour` under `root`."""
    integration = f"dataexport.{CLUSTER}.{conn}.integration.{INTEGRATION_ID}"
    return os.path.join(
        root, integration, f"event_type={event_type}", f"date={hour:%Y-%m-%d-%H}", str(schema_id), zone,
        f"{integration}+{partition}+{offset}.avro",
    )


class _BucketWriter:
    """Numbers records, places the no-external-id users (and, with without_any_id, a user with no id at all),
    writes files and keeps the manifest."""

    def __init__(self, root, seed, events_per_file, without_any_id=False):
        if events_per_file < 3:
            raise ValueError("events_per_file must be at least 3 (one null and one empty external id, one "
                             "record with neither id)")
        self.root = root
        self.without_any_id = without_any_id
        self.events_per_file = events_per_file
        self.rng = random.Random(seed)
        self.next_seq = seed * 1_000_000
        self.files_written = 0
        self.manifest = {"files": [], "broken_files": [], "oversize_ids": [], "duplicate_ids": [], "records": []}

    def records(self, event_type, schema, hour):
        """Fresh records, one with a null and one with an empty external_user_id (anonymous users: their
        user_id is set), and with without_any_id one more with no user_id either."""
        null_at, empty_at, *neither_at = self.rng.sample(range(self.events_per_file), 3 if self.without_any_id else 2)
        records = []
        for index in range(self.events_per_file):
            seq, self.next_seq = self.next_seq, self.next_seq + 1
            external_user_id = {null_at: None, empty_at: ""}.get(index, f"user-{seq}")
            time = int(hour.timestamp()) - self.rng.randrange(3600)  # queued up to an hour after it happened
            record = make_record(event_type, schema, seq, external_user_id=external_user_id, time=time)
            if index in neither_at:
                user_id = next(f["type"] for f in schema["fields"] if f["name"] == "user_id")
                record.update(external_user_id=None, user_id=None if isinstance(user_id, list) else "")
            records.append(record)
        return records

    def path(self, event_type, hour, schema_id):
        self.files_written += 1
        return currents_path(self.root, event_type, hour, schema_id=schema_id, offset=self.files_written * 1000)

    def write(self, event_type, hour, schema_id, schema, records, codec="null"):
        path = self.path(event_type, hour, schema_id)
        write_currents_file(path, schema, records, codec, sync_marker=self.rng.randbytes(16))
        self.manifest["files"].append(path)
        self.manifest["records"].extend(
            {"event_type": event_type, "source_file": path, "record": record} for record in records)

    def write_broken(self, path, data):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as stream:
            stream.write(data)
        self.manifest["files"].append(path)
        self.manifest["broken_files"].append(path)


def _truncated_avro(schema, records):
    """A deflate container cut in the middle of its only data block: no record decodes."""
    def encode(rows):
        stream = io.BytesIO()
        fastavro.writer(stream, fastavro.parse_schema(schema), rows, codec="deflate", sync_marker=b"\0" * 16)
        return stream.getvalue()
    header_length = len(encode([]))
    full = encode(records)
    return full[:header_length + (len(full) - header_length) // 2]


def _write_mapped_types(bucket, event_types):
    schema_ids = iter(range(1000, 10_000))
    for event_type in sorted(event_types):
        stored = currents_schemas.versions(event_type)
        placements = [(stored[0], _OLD_HOUR), (stored[-1], _NEW_HOUR)][:len(stored)]
        for version, hour in placements:
            schema = currents_schemas.schema(event_type, version)
            records = bucket.records(event_type, schema, hour)
            if event_type == _OVERSIZE_TYPE and version == stored[-1]:
                victim = next(r for r in records if r["external_user_id"])
                victim["campaign_name"] = "x" * OVERSIZE_LENGTH
                bucket.manifest["oversize_ids"].append(victim["id"])
            codec = CODECS[len(bucket.manifest["files"]) % len(CODECS)]
            bucket.write(event_type, hour, next(schema_ids), schema, records, codec)


def _write_duplicate(bucket):
    """At-least-once delivery: an event already written comes again in a later file."""
    schema = currents_schemas.schema(_DUPLICATED_TYPE)
    field_names = [field["name"] for field in schema["fields"]]
    original = next(
        entry["record"] for entry in bucket.manifest["records"]
        if entry["event_type"] == _DUPLICATED_TYPE and list(entry["record"]) == field_names
        and entry["record"]["external_user_id"])
    records = bucket.records(_DUPLICATED_TYPE, schema, _NEW_HOUR) + [dict(original)]
    bucket.write(_DUPLICATED_TYPE, _NEW_HOUR, 10_001, schema, records)
    bucket.manifest["duplicate_ids"].append(original["id"])


def make_sample_bucket(root, *, seed=0, events_per_file=20, types="classic"):
    """Write a demo Currents bucket under local `root` and return its manifest.

    The bucket holds every event type the built-in mapping `types` ("classic" or "current") sends, in its
    oldest and newest stored schema (two hours across a day boundary, all codecs), Kafka-Connect-shaped
    files, two types that mapping does not send, exactly one oversize event, exactly one duplicated event,
    a truncated Avro file and a file that is not Avro at all. Every file has users with a null and with an
    empty external_user_id (anonymous users), and with "current" one record with neither id.

    Manifest: "files" (every path written), "broken_files" (the unreadable ones among them),
    "oversize_ids", "duplicate_ids", and "records": one {"event_type", "source_file", "record"} per
    record of every readable file, in file order.
    """
    bucket = _BucketWriter(root, seed, events_per_file, without_any_id=types == "current")
    _write_mapped_types(bucket, BUILT_IN[types].events)
    for event_type in _KAFKA_CONNECT_TYPES:
        schema = currents_schemas.kafka_connect_variant(currents_schemas.schema(event_type))
        records = bucket.records(event_type, schema, _OLD_HOUR)
        bucket.write(event_type, _OLD_HOUR, 2021, schema, records, "snappy")
    for event_type in _UNMAPPED_TYPES[types]:
        schema = currents_schemas.schema(event_type)
        bucket.write(event_type, _NEW_HOUR, 10_002, schema, bucket.records(event_type, schema, _NEW_HOUR))
    _write_duplicate(bucket)

    broken_schema = currents_schemas.schema(_BROKEN_TYPE)
    broken_records = bucket.records(_BROKEN_TYPE, broken_schema, _NEW_HOUR)
    truncated = _truncated_avro(broken_schema, broken_records)
    bucket.write_broken(bucket.path(_BROKEN_TYPE, _NEW_HOUR, 10_003), truncated)
    bucket.write_broken(bucket.path(_BROKEN_TYPE, _NEW_HOUR, 10_003), b"this is not an Avro file\n")
    return bucket.manifest


def main(argv=None):
    """Command line: write a demo bucket into DIR and print a one-line summary."""
    parser = argparse.ArgumentParser(
        prog="make-sample-bucket",
        description="Write a demo Braze Currents bucket (every event type a built-in mapping sends, all codecs, "
                    "anonymous users, the traps) into DIR.")
    parser.add_argument("dir", metavar="DIR", help="local folder to write the bucket into")
    parser.add_argument("--types", choices=sorted(BUILT_IN), default="current",
                        help="the event types of this built-in mapping (default current: its 52 types, and users "
                             "with neither id; classic: its 34)")
    parser.add_argument("--seed", type=int, default=0, help="changes ids and user placement (default 0)")
    parser.add_argument("--events-per-file", type=int, default=20, help="records per file, at least 3 (default 20)")
    args = parser.parse_args(argv)
    manifest = make_sample_bucket(args.dir, seed=args.seed, events_per_file=args.events_per_file, types=args.types)
    print(f"wrote {len(manifest['files'])} files ({len(manifest['broken_files'])} unreadable, "
          f"{len(manifest['records'])} readable records) under {args.dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
