"""All 34 events, on every stored Currents schema version: decoded from real Avro files, mapped as
Braze's "Segment for Currents" page says. The expected names and properties are written out here
from that page, independently of transforms/catalog.py."""
import fastavro
import pytest

from pipeline import currents_schemas
from pipeline.sample_bucket import make_record, write_currents_file
from transforms.map import to_track

EXPECTED = {
    "users.messages.pushnotification.Send": ("Push Notification Sent", {}),
    "users.messages.pushnotification.Open": ("Push Notification Tapped", {}),
    "users.messages.pushnotification.Bounce": ("Push Notification Bounced", {}),
    "users.messages.pushnotification.IosForeground": ("iOS Foreground Push Opened", {}),
    "users.messages.email.Send": ("Email Sent", {}),
    "users.messages.email.Delivery": ("Email Delivered", {}),
    "users.messages.email.Open": ("Email Opened", {}),
    "users.messages.email.Click": ("Email Link Clicked", {"link_url": "url"}),
    "users.messages.email.Bounce": ("Email Bounced", {}),
    "users.messages.email.SoftBounce": ("Email Soft Bounced", {}),
    "users.messages.email.MarkAsSpam": ("Email Marked As Spam", {}),
    "users.messages.email.Unsubscribe": ("Email Unsubscribed", {}),
    "users.messages.sms.Send": ("SMS Sent", {}),
    "users.messages.sms.CarrierSend": ("SMS Sent to Carrier", {}),
    "users.messages.sms.Delivery": ("SMS Delivered", {}),
    "users.messages.sms.DeliveryFailure": ("SMS Delivery Failed", {}),
    "users.messages.sms.Rejection": ("SMS Rejected", {}),
    "users.messages.sms.InboundReceive": ("SMS Inbound Received", {}),
    "users.behaviors.subscriptiongroup.StateChange": (
        "Subscription Group State Changed",
        {"subscription_group_id": "subscription_group_id", "subscription_status": "subscription_status"}),
    "users.messages.inappmessage.Impression": ("In-App Message Viewed", {}),
    "users.messages.inappmessage.Click": ("In-App Message Clicked", {"button_id": "button_id"}),
    "users.messages.contentcard.Send": ("Content Card Sent", {"card_id": "content_card_id"}),
    "users.messages.contentcard.Impression": ("Content Card Viewed", {"card_id": "content_card_id"}),
    "users.messages.contentcard.Click": ("Content Card Clicked", {"card_id": "content_card_id"}),
    "users.messages.contentcard.Dismiss": ("Content Card Dismissed", {"card_id": "content_card_id"}),
    "users.behaviors.app.NewsFeedImpression": ("News Feed Viewed", {}),
    "users.messages.newsfeedcard.Impression": ("News Feed Card Viewed", {"card_id": "card_id"}),
    "users.messages.newsfeedcard.Click": ("News Feed Card Clicked", {"card_id": "card_id"}),
    "users.messages.webhook.Send": ("Webhook Sent", {}),
    "users.campaigns.Conversion": ("Campaign Converted", {}),
    "users.canvas.Conversion": ("Canvas Converted", {}),
    "users.canvas.Entry": ("Canvas Entered", {"in_control_group": "in_control_group"}),
    "users.campaigns.EnrollInControl": ("Campaign Control Group Entered", {}),
    "users.behaviors.Uninstall": ("Application Uninstalled", {}),
}
ALL_EVENTS = ("app_id", "send_id", "dispatch_id", "campaign_id", "campaign_name", "message_variation_id",
              "canvas_id", "canvas_name", "canvas_variation_id", "canvas_step_id")
AS_SENT = {
    "in_control_group": {True: "true", False: "false"}.get,
    "subscription_status": lambda status: {"subscribed": "Subscribed", "unsubscribed": "Unsubscribed"}[status.lower()],
}

VARIANTS = [(event_type, version, False) for event_type in EXPECTED
            for version in currents_schemas.versions(event_type)]
VARIANTS += [(event_type, "latest", True) for event_type in EXPECTED]


def expected_call(event_type, record):
    name, specific = EXPECTED[event_type]
    properties = {p: record[p] for p in ALL_EVENTS if record.get(p) is not None}
    for prop, field in specific.items():
        if record.get(field) is not None:
            properties[prop] = AS_SENT.get(prop, lambda v: v)(record[field])
    call = {"type": "track", "event": name, "userId": record["external_user_id"],
            "messageId": record["id"], "properties": properties}
    if event_type.startswith("users.messages.email.") and record.get("email_address") is not None:
        call["traits"] = {"email": record["email_address"]}
    return call


def decoded(tmp_path, schema, records):
    path = str(tmp_path / "file.avro")
    write_currents_file(path, schema, records, "deflate")
    with open(path, "rb") as stream:
        return list(fastavro.reader(stream))


def nullable_fields(schema):
    return [f["name"] for f in schema["fields"]
            if isinstance(f["type"], list) and "null" in f["type"] and f["name"] != "external_user_id"]


def test_every_one_of_the_34_types_is_covered():
    assert len(EXPECTED) == 34
    assert set(EXPECTED) <= set(currents_schemas.event_types())
    assert len(VARIANTS) >= 34 * 2 + 31


@pytest.mark.parametrize("event_type,version,kafka_connect", VARIANTS,
                         ids=[f"{t}@{v}{'+kafka' if k else ''}" for t, v, k in VARIANTS])
def test_each_schema_version_maps_as_braze_documents(tmp_path, event_type, version, kafka_connect):
    schema = currents_schemas.schema(event_type, version)
    if kafka_connect:
        schema = currents_schemas.kafka_connect_variant(schema)
    full = make_record(event_type, schema, 1)
    sparse = make_record(event_type, schema, 2, **dict.fromkeys(nullable_fields(schema)))
    for record in decoded(tmp_path, schema, [full, sparse]):
        message = to_track(record, event_type)
        want = expected_call(event_type, record)
        assert {k: message[k] for k in ("type", "event", "userId", "messageId", "properties")} == {
            k: want[k] for k in ("type", "event", "userId", "messageId", "properties")}
        assert message["context"].get("traits") == want.get("traits")
        assert message["timestamp"].endswith(".000Z")
    # The fully filled record sends every property its schema can feed.
    message = to_track(full, event_type)
    fields = {f["name"] for f in schema["fields"]}
    assert set(message["properties"]) == (
        {p for p in ALL_EVENTS if p in fields}
        | {prop for prop, field in EXPECTED[event_type][1].items() if field in fields})
