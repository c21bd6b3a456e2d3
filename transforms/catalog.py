"""The event catalog: the one table that drives routing, naming and property mapping.

Each row names a Currents event type, the family branch it travels in, the Segment event name Braze's
own connector sends, and the properties it adds to the ones every event carries. Adding an event type
is adding a row here. Sources and decisions: Braze's "Segment for Currents" page and its Currents
event glossary.
"""
from typing import Mapping, NamedTuple

FAMILIES = (
    "push", "email", "sms", "in_app", "content_card", "news_feed", "canvas_campaign", "other",
)

# Sent by every event, whenever the file's schema has the field and its value is not null.
COMMON_PROPERTIES = (
    "app_id", "send_id", "dispatch_id", "campaign_id", "campaign_name", "message_variation_id",
    "canvas_id", "canvas_name", "canvas_variation_id", "canvas_step_id",
)

# Families whose events carry the recipient address as context.traits.email.
EMAIL_TRAIT_FAMILIES = frozenset({"email"})
EMAIL_TRAIT_FIELD = "email_address"


class EventSpec(NamedTuple):
    """How one Currents event type becomes a Segment track call."""
    currents_type: str
    family: str
    segment_event: str
    # Segment property name -> Avro field, on top of COMMON_PROPERTIES.
    properties: Mapping[str, str]


def _subscription_status(value):
    # Files from 2019-2024 carry lower-case "subscribed"; Segment users expect the documented spelling.
    return {"subscribed": "Subscribed", "unsubscribed": "Unsubscribed"}.get(value.lower(), value)


# Property name -> conversion to the string type Braze's page documents.
PROPERTY_CONVERTERS = {
    "in_control_group": lambda value: "true" if value else "false",
    "button_id": str,
    "subscription_status": _subscription_status,
}

_ROWS = (
    ("push", "Push Notification Sent", "users.messages.pushnotification.Send", {}),
    ("push", "Push Notification Tapped", "users.messages.pushnotification.Open", {}),
    ("push", "Push Notification Bounced", "users.messages.pushnotification.Bounce", {}),
    ("push", "iOS Foreground Push Opened", "users.messages.pushnotification.IosForeground", {}),
    ("email", "Email Sent", "users.messages.email.Send", {}),
    ("email", "Email Delivered", "users.messages.email.Delivery", {}),
    ("email", "Email Opened", "users.messages.email.Open", {}),
    ("email", "Email Link Clicked", "users.messages.email.Click", {"link_url": "url"}),
    ("email", "Email Bounced", "users.messages.email.Bounce", {}),
    ("email", "Email Soft Bounced", "users.messages.email.SoftBounce", {}),
    ("email", "Email Marked As Spam", "users.messages.email.MarkAsSpam", {}),
    ("email", "Email Unsubscribed", "users.messages.email.Unsubscribe", {}),
    ("sms", "SMS Sent", "users.messages.sms.Send", {}),
    ("sms", "SMS Sent to Carrier", "users.messages.sms.CarrierSend", {}),
    ("sms", "SMS Delivered", "users.messages.sms.Delivery", {}),
    ("sms", "SMS Delivery Failed", "users.messages.sms.DeliveryFailure", {}),
    ("sms", "SMS Rejected", "users.messages.sms.Rejection", {}),
    ("sms", "SMS Inbound Received", "users.messages.sms.InboundReceive", {}),
    ("in_app", "In-App Message Viewed", "users.messages.inappmessage.Impression", {}),
    ("in_app", "In-App Message Clicked", "users.messages.inappmessage.Click", {"button_id": "button_id"}),
    ("content_card", "Content Card Sent", "users.messages.contentcard.Send", {"card_id": "content_card_id"}),
    ("content_card", "Content Card Viewed", "users.messages.contentcard.Impression",
     {"card_id": "content_card_id"}),
    ("content_card", "Content Card Clicked", "users.messages.contentcard.Click", {"card_id": "content_card_id"}),
    ("content_card", "Content Card Dismissed", "users.messages.contentcard.Dismiss",
     {"card_id": "content_card_id"}),
    ("news_feed", "News Feed Viewed", "users.behaviors.app.NewsFeedImpression", {}),
    ("news_feed", "News Feed Card Viewed", "users.messages.newsfeedcard.Impression", {"card_id": "card_id"}),
    ("news_feed", "News Feed Card Clicked", "users.messages.newsfeedcard.Click", {"card_id": "card_id"}),
    ("canvas_campaign", "Campaign Converted", "users.campaigns.Conversion", {}),
    ("canvas_campaign", "Canvas Converted", "users.canvas.Conversion", {}),
    ("canvas_campaign", "Canvas Entered", "users.canvas.Entry", {"in_control_group": "in_control_group"}),
    ("canvas_campaign", "Campaign Control Group Entered", "users.campaigns.EnrollInControl", {}),
    ("other", "Webhook Sent", "users.messages.webhook.Send", {}),
    ("other", "Subscription Group State Changed", "users.behaviors.subscriptiongroup.StateChange",
     {"subscription_group_id": "subscription_group_id", "subscription_status": "subscription_status"}),
    ("other", "Application Uninstalled", "users.behaviors.Uninstall", {}),
)

CATALOG = {
    currents_type: EventSpec(currents_type, family, segment_event, properties)
    for family, segment_event, currents_type, properties in _ROWS
}


def spec_for(event_type):
    """Return the EventSpec of a Currents event type, or None when the type is not sent to Segment."""
    return CATALOG.get(event_type)
