"""Mapping one Currents record to one Segment track call, as Braze's connector sends it."""
import json
import uuid

import pytest

from currents_to_segment.transforms.currents.avro_blocks import UndecodableRecord
from currents_to_segment.transforms.currents.catalog import CLASSIC
from currents_to_segment.transforms.currents.track_calls import (
    RecordProtection, iso_timestamp, message_id, namespace_uuid, protect, serialize, to_track)
from currents_to_segment.transforms.delivery import undecodable_letter
from currents_to_segment.transforms.letters import record_letter

ID = "2f6f5a8e-1b1c-4d7e-9a51-0b8e2d1c3f40"


def record(**fields):
    base = {"id": ID, "user_id": "5e1a", "external_user_id": "user-1", "time": 1709294400}
    base.update(fields)
    return base


def test_envelope_of_a_track_call():
    message = to_track(record(app_id="app-1", campaign_id=None, timezone="UTC"),
                       "users.messages.pushnotification.Send")
    assert message["type"] == "track"
    assert message["event"] == "Push Notification Sent"
    assert message["userId"] == "user-1"
    assert message["timestamp"] == "2024-03-01T12:00:00.000Z"
    assert message["messageId"] == ID
    assert message["properties"] == {"app_id": "app-1"}  # nulls and unlisted fields are not sent
    assert message["context"]["library"]["name"] == "braze-currents-to-segment"
    assert "traits" not in message["context"]


def test_email_events_carry_the_address_as_a_trait_not_a_property():
    message = to_track(record(email_address="a@example.com", url="https://x", send_id="s"),
                       "users.messages.email.Click")
    assert message["event"] == "Email Link Clicked"
    assert message["context"]["traits"] == {"email": "a@example.com"}
    assert message["properties"] == {"link_url": "https://x", "send_id": "s"}


@pytest.mark.parametrize("value,expected", [(True, "true"), (False, "false")])
def test_canvas_entered_sends_in_control_group_as_a_string(value, expected):
    message = to_track(record(in_control_group=value, canvas_id="c"), "users.canvas.Entry")
    assert message["properties"] == {"in_control_group": expected, "canvas_id": "c"}


@pytest.mark.parametrize("value,expected", [
    ("subscribed", "Subscribed"), ("Unsubscribed", "Unsubscribed"), ("UNSUBSCRIBED", "Unsubscribed")])
def test_subscription_status_is_normalised(value, expected):
    message = to_track(record(subscription_group_id="g", subscription_status=value),
                       "users.behaviors.subscriptiongroup.StateChange")
    assert message["properties"] == {"subscription_group_id": "g", "subscription_status": expected}


def test_card_id_comes_from_the_family_specific_field():
    content = to_track(record(content_card_id="cc", card_id="ignored"), "users.messages.contentcard.Click")
    news = to_track(record(card_id="nf"), "users.messages.newsfeedcard.Click")
    in_app = to_track(record(card_id="not-sent", button_id="1"), "users.messages.inappmessage.Click")
    assert content["properties"] == {"card_id": "cc"}
    assert news["properties"] == {"card_id": "nf"}
    assert in_app["properties"] == {"button_id": "1"}


def test_the_seed_spelling_of_ios_foreground():
    assert to_track(record(), "users.messages.pushnotification.IosForeground")["event"] == "iOS Foreground Push Opened"


def test_catalog_has_the_34_events_in_the_eight_families():
    assert len(CLASSIC.events) == 34
    assert {spec.family for spec in CLASSIC.events.values()} == set(CLASSIC.families)
    assert len({spec.segment_event for spec in CLASSIC.events.values()}) == 34


def test_message_id_namespace_gives_a_stable_uuid5():
    namespace = namespace_uuid("6ba7b810-9dad-11d1-80b4-00c04fd430c8")
    assert message_id(ID, namespace) == str(uuid.uuid5(uuid.NAMESPACE_DNS, ID))
    named = namespace_uuid("segment-source-b")
    assert message_id(ID, named) == str(uuid.uuid5(uuid.uuid5(uuid.NAMESPACE_URL, "segment-source-b"), ID))
    assert to_track(record(), "users.behaviors.Uninstall", namespace=named)["messageId"] == message_id(ID, named)


def test_passthrough_sends_every_other_non_null_field_without_overriding():
    message = to_track(record(email_address="a@example.com", url="u", esp="SendGrid", ip_pool=None,
                              suspected_bot_click_reason=["a"]),
                       "users.messages.email.Click", passthrough=True)
    assert message["properties"] == {"link_url": "u", "user_id": "5e1a", "esp": "SendGrid",
                                     "suspected_bot_click_reason": ["a"]}


@pytest.mark.parametrize("bad", [{"id": None}, {"id": ""}, {"time": None}, {"time": "12"}])
def test_records_without_id_or_integer_time_are_refused(bad):
    with pytest.raises((TypeError, ValueError)):
        to_track(record(**bad), "users.behaviors.Uninstall")


def test_timestamps_before_1970_and_after_2038():
    assert iso_timestamp(0) == "1970-01-01T00:00:00.000Z"
    assert iso_timestamp(-1) == "1969-12-31T23:59:59.000Z"
    assert iso_timestamp(2033802504) == "2034-06-13T09:08:24.000Z"


def test_serialize_is_compact_utf8_and_refuses_nan():
    assert serialize({"a": "é", "b": [1]}) == '{"a":"é","b":[1]}'.encode("utf-8")
    with pytest.raises(ValueError):
        serialize({"a": float("nan")})
    assert json.loads(serialize(to_track(record(), "users.canvas.Conversion")))["event"] == "Canvas Converted"


# --- dead letters keep no value the run would not have sent (--redact_fields, --hash_fields) -------------------

ANN = "ann@example.com"
ANN_SHA256 = "71d4f55f72fa128dfb468a1a3901507c804b74316488744d769d7f4b16696476"
SUBSCRIBED_SHA256 = "25c4797cdc7f6c547b7bdf2c003a883f041f61a946dc4a5e07eca8048494d2a6"  # of "Subscribed"
UTC_SHA256 = "7e5f76c94a635c217e282f79db4fc7ee4bfd9b64044166714067602cc4be620c"


def test_a_record_letter_leaves_out_redacted_values_and_hashes_hashed_ones_as_they_are_sent():
    protection = RecordProtection(CLASSIC, redact=frozenset({"campaign_name"}), hashed=frozenset({"email"}))
    bad = record(email_address=ANN, campaign_name="Spring sale", url="https://x", timezone="UTC", time=1709294400000)
    letter = record_letter("users.messages.email.Click", "f.avro", bad, "invalid_record", "ValueError: time",
                           protection)
    assert letter["record"] == {"id": ID, "user_id": "5e1a", "external_user_id": "user-1", "time": 1709294400000,
                                "email_address": ANN_SHA256, "url": "https://x", "timezone": "UTC"}
    assert bad["email_address"] == ANN  # the record itself is left as it is
    # What protect sends for the same value: a replay or a fix of the record matches the calls sent.
    sent = protect(to_track(record(email_address=ANN), "users.messages.email.Click"), hashed=frozenset({"email"}))
    assert sent["context"]["traits"] == {"email": ANN_SHA256}


def test_a_hashed_property_with_a_converter_is_hashed_as_converted():
    protection = RecordProtection(CLASSIC, hashed=frozenset({"subscription_status"}))
    kept = protection.protected("users.behaviors.subscriptiongroup.StateChange",
                                record(subscription_status="subscribed", subscription_group_id="g"))
    assert kept["subscription_status"] == SUBSCRIBED_SHA256 and kept["subscription_group_id"] == "g"


def test_with_passthrough_a_field_named_directly_is_protected_too():
    bad = record(timezone="UTC", email_address=ANN)
    assert RecordProtection(CLASSIC, hashed=frozenset({"timezone"})).protected(
        "users.behaviors.Uninstall", bad)["timezone"] == "UTC"  # not sent: nothing to hash
    passthrough = RecordProtection(CLASSIC, redact=frozenset({"email_address"}), hashed=frozenset({"timezone"}),
                                   passthrough=True)
    assert passthrough.protected("users.behaviors.Uninstall", bad) == {
        "id": ID, "user_id": "5e1a", "external_user_id": "user-1", "time": 1709294400, "timezone": UTC_SHA256}


def test_a_type_the_mapping_does_not_send_is_protected_as_any_of_its_types():
    protection = RecordProtection(CLASSIC, hashed=frozenset({"email"}))
    assert protection.protected("users.messages.email.Deferral", record(email_address=ANN))["email_address"] == (
        ANN_SHA256)


def test_an_undecodable_record_letter_shows_no_bytes_of_a_protected_field():
    undecodable = UndecodableRecord(record(email_address="ann\\xff@example.com", campaign_name="Spring\\xfe"),
                                    ["email_address", "campaign_name"], [b"ann\xff@example.com", b"Spring\xfe"])
    letter = undecodable_letter("f.avro", "users.messages.email.Open", undecodable,
                                RecordProtection(CLASSIC, redact=frozenset({"email"})))
    assert "email_address" not in letter["record"] and "ann" not in letter["error"]
    assert letter["error"] == ("email_address is not valid UTF-8; campaign_name is not valid UTF-8: "
                               "b'Spring\\xfe' (the record shows those bytes as \\x escapes)")
    assert letter["record"]["campaign_name"] == "Spring\\xfe"
