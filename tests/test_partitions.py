"""Hour ranges and partition discovery under a Currents root, found by listing."""
import datetime
import types

import pytest

from currents_to_segment.pipeline import partitions
from currents_to_segment.pipeline.partitions import event_type_folders, select_partitions
from currents_to_segment.transforms.currents.partitions import expand_event_types, hours_between, parse_hour
from currents_to_segment.pipeline.sample_bucket import currents_path

UTC = datetime.timezone.utc


def hour(text):
    return parse_hour(text)


def test_parse_hour_accepts_days_and_hours_in_utc():
    assert parse_hour("2024-03-01") == datetime.datetime(2024, 3, 1, tzinfo=UTC)
    assert parse_hour("2024-03-01T07") == datetime.datetime(2024, 3, 1, 7, tzinfo=UTC)
    for bad in ("2024-3-1x", "2024-03-01T25", "yesterday", "2024-03-01T07:00"):
        with pytest.raises(ValueError):
            parse_hour(bad)


@pytest.mark.parametrize("start,end,count,first,last", [
    ("2024-03-01", "2024-03-02", 24, "2024-03-01T00", "2024-03-01T23"),          # one day, end exclusive
    ("2024-02-28T22", "2024-03-01T02", 28, "2024-02-28T22", "2024-03-01T01"),    # leap-year month edge
    ("2023-12-31T23", "2024-01-01T01", 2, "2023-12-31T23", "2024-01-01T00"),     # year edge
    ("2024-03-01T05", "2024-03-01T06", 1, "2024-03-01T05", "2024-03-01T05"),     # a single hour
    ("2024-03-01T05", "2024-03-01T05", 0, None, None),                           # empty
])
def test_hours_between(start, end, count, first, last):
    hours = hours_between(hour(start), hour(end))
    assert len(hours) == count
    if count:
        assert (hours[0], hours[-1]) == (hour(first), hour(last))


def test_family_names_expand_to_their_event_types():
    assert expand_event_types(None) is None
    assert expand_event_types(["news_feed", "users.canvas.Entry"]) == {
        "users.behaviors.app.NewsFeedImpression", "users.messages.newsfeedcard.Impression",
        "users.messages.newsfeedcard.Click", "users.canvas.Entry"}


@pytest.fixture
def root(tmp_path):
    """Two integrations, three event types, hours from Feb 29 22:00 to Mar 2 01:00, and some noise."""
    for day_hour in ("2024-02-29T22", "2024-02-29T23", "2024-03-01T00", "2024-03-01T13", "2024-03-01T23",
                     "2024-03-02T00", "2024-03-02T01"):
        for event_type in ("users.messages.email.Send", "users.canvas.Entry"):
            path = currents_path(str(tmp_path), event_type, hour(day_hour))
            (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / path).write_bytes(b"")
    other = tmp_path / "dataexport.prod-02.S3.integration.abc" / "event_type=users.behaviors.Uninstall"
    (other / "date=2024-03-01-05" / "7" / "0").mkdir(parents=True)
    (other / "not-a-date").mkdir()
    (tmp_path / "unrelated" / "folder").mkdir(parents=True)
    return tmp_path


def test_a_day_selects_exactly_its_24_hour_partitions(root):
    selected = select_partitions(str(root), hour("2024-03-01"), hour("2024-03-02"))
    assert sorted((p.event_type, p.hour.isoformat()) for p in selected) == sorted(
        [(t, f"2024-03-01T{h}:00:00+00:00") for t in ("users.messages.email.Send", "users.canvas.Entry")
         for h in ("00", "13", "23")] + [("users.behaviors.Uninstall", "2024-03-01T05:00:00+00:00")])
    assert all(p.path.endswith(f"date={p.hour:%Y-%m-%d-%H}") for p in selected)


def test_roots_at_every_level_and_event_type_filters(root):
    integration = next(root.glob("dataexport.prod-01*"))
    folder = integration / "event_type=users.canvas.Entry"
    assert [t for t, _ in event_type_folders(str(root))] == [
        "users.behaviors.Uninstall", "users.canvas.Entry", "users.messages.email.Send"]
    assert [t for t, _ in event_type_folders(str(integration))] == ["users.canvas.Entry", "users.messages.email.Send"]
    assert event_type_folders(str(folder)) == [("users.canvas.Entry", str(folder))]
    single = select_partitions(str(folder), hour("2024-03-02T01"), hour("2024-03-02T02"))
    assert [(p.event_type, p.hour) for p in single] == [("users.canvas.Entry", hour("2024-03-02T01"))]
    emails = select_partitions(str(root), None, None, expand_event_types(["email"]))
    assert {p.event_type for p in emails} == {"users.messages.email.Send"} and len(emails) == 7


def test_object_store_folders_are_derived_from_listed_keys(monkeypatch):
    """Buckets have no folders: partitions come from the keys one prefix listing returns.
    (The cloud servers themselves are exercised by the storage tests; here the listing is given.)"""
    keys = [
        "gs://b/currents/dataexport.prod-01.GCS.integration.1/event_type=users.canvas.Entry/date=2024-03-01-05/3/0/a.avro",
        "gs://b/currents/dataexport.prod-01.GCS.integration.1/event_type=users.canvas.Entry/date=2024-03-02-05/3/0/b.avro",
        "gs://b/currents/dataexport.prod-01.GCS.integration.1/event_type=users.behaviors.Uninstall/date=2024-03-01-06/3/0/c.avro",
        "gs://b/currents/README.txt",
    ]
    listed = []

    def match(patterns, limits=None):  # pylint: disable=unused-argument
        listed.extend(patterns)
        prefix = patterns[0][:-len("**")]
        return [types.SimpleNamespace(metadata_list=[types.SimpleNamespace(path=k) for k in keys
                                                     if k.startswith(prefix)])]

    monkeypatch.setattr(partitions.FileSystems, "match", staticmethod(match))
    selected = select_partitions("gs://b/currents", hour("2024-03-01"), hour("2024-03-02"))
    assert [(p.event_type, p.path) for p in selected] == [
        ("users.behaviors.Uninstall", "gs://b/currents/dataexport.prod-01.GCS.integration.1/"
                                      "event_type=users.behaviors.Uninstall/date=2024-03-01-06"),
        ("users.canvas.Entry", "gs://b/currents/dataexport.prod-01.GCS.integration.1/"
                               "event_type=users.canvas.Entry/date=2024-03-01-05")]
    assert all(pattern.endswith("/**") for pattern in listed) and len(listed) == 4  # root, integration, 2 types


def test_delimited_listing_asks_for_one_level_under_the_right_prefix():
    asked = []

    def list_prefixes(bucket, prefix):
        asked.append((bucket, prefix))
        return [prefix + "dataexport.a/", prefix + "event_type=x/"]

    lister = partitions.delimited_lister("azfs://acct/", list_prefixes)
    assert lister("azfs://acct/container") == ["dataexport.a", "event_type=x"]
    assert lister("azfs://acct/container/braze/currents/") == ["dataexport.a", "event_type=x"]
    assert asked == [("container", ""), ("container", "braze/currents/")]
