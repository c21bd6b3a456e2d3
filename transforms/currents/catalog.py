"""The event catalogs: the tables that drive routing, naming, properties and context of the track calls.

A mapping is a table with one row per Currents event type: the family branch it travels in, the Segment event
name, its properties (Segment key <- Avro field) and its context (a path under `context` <- Avro field). Beside
the rows, what holds for every call of the mapping: whether it carries `anonymousId` (the Braze user id), and
which property values are converted. Two mappings are built in:

- `classic`: Braze's "Segment for Currents" page as the seed has it (../reference/event-catalog.md): 34 events,
  `userId` only, ten common properties plus a few per event, `context.traits.email` on email events, and the
  string values that page documents;
- `current`: what Braze's connector sends today (../reference/event-catalog-current.md, from the Segment tab of
  each event in Braze's Currents glossary): 52 events, `anonymousId` on every call, the listed properties and
  context, values in their Avro types.

Adding an event type is adding a row; a user's mapping file (transforms.currents.mapping_file) changes a built-in mapping
into another Mapping. A property or context value is sent when the record has the field and it is not null.

The names --redact_fields and --hash_fields can give are a mapping's property keys and trait names (with
--passthrough_fields, also the Currents fields sent under their own names): `field_name_problem` says what
another name is instead, and its close matches.
"""
import difflib
import functools
import hashlib
import json
from dataclasses import dataclass, field
from typing import Mapping as MappingType, NamedTuple, Tuple

from currents_to_segment.transforms.currents import schemas

Pairs = Tuple[Tuple[str, str], ...]  # (Segment key or context path, Avro field), in the order sent


class EventSpec(NamedTuple):
    """How one Currents event type becomes a Segment track call."""
    currents_type: str
    family: str
    segment_event: str
    properties: Pairs
    context: Pairs = ()  # ("traits.email", "email_address"): context.traits.email <- email_address


def _subscription_status(value):
    # Files from 2019-2024 carry lower-case "subscribed"; Segment users expect the documented spelling.
    return {"subscribed": "Subscribed", "unsubscribed": "Unsubscribed"}.get(value.lower(), value)


# Conversions a mapping can apply to a property's value, by name.
CONVERTERS = {
    "true_false_text": lambda value: "true" if value else "false",
    "text": str,
    "subscription_status": _subscription_status,
}


@dataclass(frozen=True)
class Mapping:
    """A table of EventSpecs by Currents type, the families they travel in (the pipeline's branches, in this
    order), whether calls carry anonymousId, and the converters applied to properties (key -> CONVERTERS name)."""

    name: str
    families: Tuple[str, ...]
    events: MappingType[str, EventSpec]
    anonymous_id: bool
    converters: MappingType[str, str] = field(default_factory=dict)

    def spec_for(self, event_type):
        """The EventSpec of a Currents type, or None when this mapping does not send it."""
        return self.events.get(event_type)

    def types_of(self, family):
        """The Currents types this mapping sends in a family."""
        return [event_type for event_type, spec in self.events.items() if spec.family == family]

    def describe(self):
        """Everything that decides the calls, as JSON-able data (for a digest, and for the ledger)."""
        return {"name": self.name, "families": list(self.families), "anonymous_id": self.anonymous_id,
                "converters": dict(sorted(self.converters.items())),
                "events": {t: [s.family, s.segment_event, [list(p) for p in s.properties], [list(c) for c in s.context]]
                           for t, s in sorted(self.events.items())}}

    def digest(self):
        """A short digest of `describe()`: two mappings that make the same calls have the same one."""
        text = json.dumps(self.describe(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


# What --redact_fields and --hash_fields reach: the properties and context.traits of the calls.
TRAITS = "traits"
# Fields sent as userId, timestamp and messageId, never as properties (passthrough leaves them out too).
ENVELOPE_FIELDS = {"id": "messageId", "time": "timestamp", "external_user_id": "userId"}
BRAZE_ID_FIELD = "user_id"  # the Braze user id: anonymousId on every call of a mapping that sends it


def trait_name(path):
    """The trait a context path sets ("traits.email" -> "email"), or None for another path."""
    head, _, rest = path.partition(".")
    return rest if head == TRAITS and rest and "." not in rest else None


def protectable_names(mapping):
    """The names --redact_fields and --hash_fields can give for this mapping: the property keys of its events and
    the names of the traits they set (context path traits.X -> X)."""
    names = set()
    for spec in mapping.events.values():
        names.update(key for key, _ in spec.properties)
        names.update(trait_name(path) for path, _ in spec.context if trait_name(path))
    return frozenset(names)


_ADDED_FIELDS = frozenset(schemas.KAFKA_CONNECT_FIELDS)  # what a Kafka-Connect producer adds to any type


@functools.cache
def _schema_fields(event_type):
    """Every field name of the stored Currents schemas of a type (none for a type without one), and the two a
    Kafka-Connect producer adds."""
    if event_type not in schemas.event_types():
        return _ADDED_FIELDS
    return _ADDED_FIELDS | {field["name"] for version in schemas.versions(event_type)
                            for field in schemas.schema(event_type, version)["fields"]}


def passthrough_names(mapping):
    """The Currents fields --passthrough_fields sends as properties of their own names, over every event of the
    mapping: those of its schemas not sent otherwise (nor as ids, timestamp or messageId)."""
    names = set()
    for event_type, spec in mapping.events.items():
        used = {field for _, field in spec.properties + spec.context}
        names.update(_schema_fields(event_type) - used - set(ENVELOPE_FIELDS))
    if mapping.anonymous_id:
        names.discard(BRAZE_ID_FIELD)  # sent as anonymousId whenever the record has it
    return frozenset(names)


def field_name_problem(mapping, name, passthrough=False):
    """Why `name`, given to --redact_fields or --hash_fields, names nothing the mapping's calls carry (None when
    it does): what it is instead, and the close matches."""
    valid = set(protectable_names(mapping))
    if passthrough:
        valid |= passthrough_names(mapping)
    if name in valid:
        return None
    if name in ENVELOPE_FIELDS or (name == BRAZE_ID_FIELD and mapping.anonymous_id):
        sent_as = ENVELOPE_FIELDS.get(name, "anonymousId")
        return f"{name} is sent as {sent_as}, which is neither a property nor a trait: it cannot be redacted or hashed"
    path = name.removeprefix("context.")
    if trait_name(path) in valid:
        return f"{name} is a path: give the trait's name, {trait_name(path)}"
    if path.startswith("properties.") and path.removeprefix("properties.") in valid:
        return f"{name} is a path: give the property's name, {path.removeprefix('properties.')}"
    sent_as = sorted({(key, "properties." + key) for spec in mapping.events.values() for key, field in spec.properties
                      if field == name} |
                     {(trait_name(p) or "", "context." + p) for spec in mapping.events.values() for p, field in
                      spec.context if field == name})
    if sent_as:
        where = " and ".join(shown for _, shown in sent_as)
        keys = [key for key, _ in sent_as if key]
        fix = f"give {', '.join(keys)}" if keys else ("only properties and context.traits can be redacted or "
                                                        "hashed")
        return f"{name} is the Currents field; it is sent as {where}: {fix}"
    if not passthrough and name in passthrough_names(mapping):
        return (f"{name} is a Currents field the {mapping.name} mapping does not send (--passthrough_fields would "
                "send it as a property of its own name)")
    by_lower = {}
    for known in sorted(valid):
        by_lower.setdefault(known.lower(), known)
    close = [by_lower[match] for match in difflib.get_close_matches(name.lower(), list(by_lower), n=3, cutoff=0.6)]
    hint = f"close matches: {', '.join(close)}" if close else "see docs/events.md for the names each event sends"
    return f"no property or trait of the {mapping.name} mapping is named {name} ({hint})"


def pairs(text):
    """'a b<-c' -> (("a", "a"), ("b", "c")): keys, each from the field of its own name unless given."""
    found = []
    for item in text.split():
        key, _, source = item.partition("<-")
        found.append((key, source or key))
    return tuple(found)


def _table(name, families, rows, anonymous_id, converters):
    events = {}
    for event_type, family, event, properties, context in rows:
        assert family in families and event_type not in events, event_type
        events[event_type] = EventSpec(event_type, family, event, pairs(properties), pairs(context))
    return Mapping(name, tuple(families), events, anonymous_id, converters)


# --- classic: the seed's 34 events -------------------------------------------------------------------------

# Every classic call carries these, from the fields of the same name.
_CLASSIC_COMMON = ("app_id send_id dispatch_id campaign_id campaign_name message_variation_id canvas_id canvas_name "
                   "canvas_variation_id canvas_step_id")
_EMAIL_TRAIT = "traits.email<-email_address"

# (Currents type, family, Segment event, properties beside the common ones, context)
_CLASSIC_ROWS = (
    ("users.messages.pushnotification.Send", "push", "Push Notification Sent", "", ""),
    ("users.messages.pushnotification.Open", "push", "Push Notification Tapped", "", ""),
    ("users.messages.pushnotification.Bounce", "push", "Push Notification Bounced", "", ""),
    ("users.messages.pushnotification.IosForeground", "push", "iOS Foreground Push Opened", "", ""),
    ("users.messages.email.Send", "email", "Email Sent", "", _EMAIL_TRAIT),
    ("users.messages.email.Delivery", "email", "Email Delivered", "", _EMAIL_TRAIT),
    ("users.messages.email.Open", "email", "Email Opened", "", _EMAIL_TRAIT),
    ("users.messages.email.Click", "email", "Email Link Clicked", "link_url<-url", _EMAIL_TRAIT),
    ("users.messages.email.Bounce", "email", "Email Bounced", "", _EMAIL_TRAIT),
    ("users.messages.email.SoftBounce", "email", "Email Soft Bounced", "", _EMAIL_TRAIT),
    ("users.messages.email.MarkAsSpam", "email", "Email Marked As Spam", "", _EMAIL_TRAIT),
    ("users.messages.email.Unsubscribe", "email", "Email Unsubscribed", "", _EMAIL_TRAIT),
    ("users.messages.sms.Send", "sms", "SMS Sent", "", ""),
    ("users.messages.sms.CarrierSend", "sms", "SMS Sent to Carrier", "", ""),
    ("users.messages.sms.Delivery", "sms", "SMS Delivered", "", ""),
    ("users.messages.sms.DeliveryFailure", "sms", "SMS Delivery Failed", "", ""),
    ("users.messages.sms.Rejection", "sms", "SMS Rejected", "", ""),
    ("users.messages.sms.InboundReceive", "sms", "SMS Inbound Received", "", ""),
    ("users.messages.inappmessage.Impression", "in_app", "In-App Message Viewed", "", ""),
    ("users.messages.inappmessage.Click", "in_app", "In-App Message Clicked", "button_id", ""),
    ("users.messages.contentcard.Send", "content_card", "Content Card Sent", "card_id<-content_card_id", ""),
    ("users.messages.contentcard.Impression", "content_card", "Content Card Viewed", "card_id<-content_card_id", ""),
    ("users.messages.contentcard.Click", "content_card", "Content Card Clicked", "card_id<-content_card_id", ""),
    ("users.messages.contentcard.Dismiss", "content_card", "Content Card Dismissed", "card_id<-content_card_id", ""),
    ("users.behaviors.app.NewsFeedImpression", "news_feed", "News Feed Viewed", "", ""),
    ("users.messages.newsfeedcard.Impression", "news_feed", "News Feed Card Viewed", "card_id", ""),
    ("users.messages.newsfeedcard.Click", "news_feed", "News Feed Card Clicked", "card_id", ""),
    ("users.campaigns.Conversion", "canvas_campaign", "Campaign Converted", "", ""),
    ("users.canvas.Conversion", "canvas_campaign", "Canvas Converted", "", ""),
    ("users.canvas.Entry", "canvas_campaign", "Canvas Entered", "in_control_group", ""),
    ("users.campaigns.EnrollInControl", "canvas_campaign", "Campaign Control Group Entered", "", ""),
    ("users.messages.webhook.Send", "other", "Webhook Sent", "", ""),
    ("users.behaviors.subscriptiongroup.StateChange", "other", "Subscription Group State Changed",
     "subscription_group_id subscription_status", ""),
    ("users.behaviors.Uninstall", "other", "Application Uninstalled", "", ""),
)

CLASSIC = _table(
    "classic", ("push", "email", "sms", "in_app", "content_card", "news_feed", "canvas_campaign", "other"),
    [(t, family, event, f"{_CLASSIC_COMMON} {extra}", context) for t, family, event, extra, context in _CLASSIC_ROWS],
    anonymous_id=False,
    # The string types Braze's page documents for these.
    converters={"in_control_group": "true_false_text", "button_id": "text", "subscription_status": "subscription_status"})


# --- current: what Braze's connector sends today (52 events) -------------------------------------------------

# Runs of keys many rows share, written once (each row still lists what it sends, in the reference's order).
_CANVAS = "canvas_id canvas_name canvas_step_id canvas_step_name canvas_variation_id canvas_variation_name"
_CAMPAIGN = "campaign_id campaign_name"
_VARIATION = "message_variation_id message_variation_name"
_ADS = "ad_id ad_id_type ad_tracking_enabled"
_ABORT = "abort_log abort_type"
_DEVICE = "device.model<-device_model device.type<-platform"
_EMAIL = "traits.email<-email_address"
_PHONE = "traits.phone<-to_phone_number"
_USER_PHONE = "traits.phone<-user_phone_number"
_EMAIL_SENT = f"app_group_id {_CAMPAIGN} {_CANVAS} device_id dispatch_id esp from_domain ip_pool"

# (Currents type, family, Segment event, properties, context)
_CURRENT_ROWS = (
    ("users.campaigns.Conversion", "canvas_campaign", "Campaign Converted",
     f"app_group_id app_id {_CAMPAIGN} conversion_behavior conversion_behavior_index device_id dispatch_id "
     f"{_VARIATION} send_id", ""),
    ("users.campaigns.EnrollInControl", "canvas_campaign", "Campaign Control Group Entered",
     f"app_group_id app_id {_CAMPAIGN} device_id dispatch_id {_VARIATION} send_id", ""),
    ("users.canvas.Conversion", "canvas_campaign", "Canvas Converted",
     f"app_group_id app_id {_CANVAS} conversion_behavior conversion_behavior_index device_id", ""),
    ("users.canvas.Entry", "canvas_campaign", "Canvas Entered",
     f"app_group_id {_CANVAS} device_id in_control_group", ""),
    ("users.canvas.exit.MatchedAudience", "canvas_campaign", "Exit Matched Audience", f"app_group_id {_CANVAS}", ""),
    ("users.canvas.exit.PerformedEvent", "canvas_campaign", "Exit Performed Event", f"app_group_id {_CANVAS}", ""),
    ("users.canvas.experimentstep.Conversion", "canvas_campaign", "Experiment Step Converted",
     f"app_id {_CANVAS} conversion_behavior conversion_behavior_index experiment_split_id experiment_split_name "
     "experiment_step_id", ""),
    ("users.canvas.experimentstep.SplitEntry", "canvas_campaign", "Experiment Split Entered",
     f"{_CANVAS} experiment_split_id experiment_split_name experiment_step_id in_control_group", ""),
    ("users.messages.contentcard.Abort", "content_card", "Content Card Aborted",
     f"{_ABORT} app_group_id {_CAMPAIGN} {_CANVAS} device_id dispatch_id {_VARIATION} send_id", ""),
    ("users.messages.contentcard.Click", "content_card", "Content Card Clicked",
     f"{_ADS} app_group_id app_id {_CAMPAIGN} {_CANVAS} card_id<-content_card_id device_id dispatch_id {_VARIATION} "
     "send_id", _DEVICE),
    ("users.messages.contentcard.Dismiss", "content_card", "Content Card Dismissed",
     f"{_ADS} app_group_id app_id {_CAMPAIGN} {_CANVAS} card_id<-content_card_id device_id dispatch_id {_VARIATION} "
     "send_id", _DEVICE),
    ("users.messages.contentcard.Impression", "content_card", "Content Card Viewed",
     f"{_ADS} app_group_id app_id {_CAMPAIGN} {_CANVAS} card_id<-content_card_id device_id dispatch_id {_VARIATION} "
     "send_id", _DEVICE),
    ("users.messages.contentcard.Send", "content_card", "Content Card Sent",
     f"app_group_id {_CAMPAIGN} {_CANVAS} card_id<-content_card_id device_id dispatch_id message_extras {_VARIATION} "
     "send_id", ""),
    ("users.messages.email.Abort", "email", "Email Aborted",
     f"{_ABORT} app_group_id {_CAMPAIGN} {_CANVAS} device_id dispatch_id ip_pool {_VARIATION} send_id", _EMAIL),
    ("users.messages.email.Bounce", "email", "Email Bounced",
     f"app_group_id bounce_reason {_CAMPAIGN} {_CANVAS} device_id dispatch_id esp from_domain ip_pool is_drop "
     f"{_VARIATION} send_id", _EMAIL),
    ("users.messages.email.Click", "email", "Email Link Clicked",
     f"app_group_id browser {_CAMPAIGN} {_CANVAS} device_class device_id device_os dispatch_id esp from_domain ip_pool "
     f"is_amp is_suspected_bot_click link_alias link_id link_url<-url mailbox_provider {_VARIATION} send_id "
     "suspected_bot_click_reason user_agent", f"device.model<-device_model {_EMAIL}"),
    ("users.messages.email.Delivery", "email", "Email Delivered", f"{_EMAIL_SENT} {_VARIATION} send_id", _EMAIL),
    ("users.messages.email.MarkAsSpam", "email", "Email Marked As Spam",
     f"{_EMAIL_SENT} {_VARIATION} send_id user_agent", _EMAIL),
    ("users.messages.email.Open", "email", "Email Opened",
     f"app_group_id browser {_CAMPAIGN} {_CANVAS} device_class device_id device_os dispatch_id esp from_domain ip_pool "
     f"is_amp machine_open mailbox_provider {_VARIATION} send_id user_agent", f"device.model<-device_model {_EMAIL}"),
    ("users.messages.email.Send", "email", "Email Sent", f"{_EMAIL_SENT} message_extras {_VARIATION} send_id", _EMAIL),
    ("users.messages.email.SoftBounce", "email", "Email Soft Bounced",
     f"app_group_id bounce_reason {_CAMPAIGN} {_CANVAS} device_id dispatch_id esp from_domain ip_pool {_VARIATION} "
     "send_id", _EMAIL),
    ("users.messages.email.Unsubscribe", "email", "Email Unsubscribed",
     f"app_group_id {_CAMPAIGN} {_CANVAS} device_id dispatch_id ip_pool {_VARIATION} send_id", _EMAIL),
    ("users.messages.inappmessage.Abort", "in_app", "In-App Message Aborted",
     f"{_ABORT} {_ADS} app_group_id app_id {_CAMPAIGN} {_CANVAS} card_id device_id dispatch_id {_VARIATION} send_id",
     _DEVICE),
    ("users.messages.inappmessage.Click", "in_app", "In-App Message Clicked",
     f"{_ADS} app_group_id app_id button_id {_CAMPAIGN} {_CANVAS} card_id device_id dispatch_id {_VARIATION} send_id",
     _DEVICE),
    ("users.messages.inappmessage.Impression", "in_app", "In-App Message Viewed",
     f"{_ADS} app_group_id app_id {_CAMPAIGN} {_CANVAS} card_id device_id dispatch_id locale_key message_extras "
     f"{_VARIATION} send_id", _DEVICE),
    ("users.behaviors.app.NewsFeedImpression", "news_feed", "News Feed Viewed", "", ""),
    ("users.messages.newsfeedcard.Click", "news_feed", "News Feed Card Clicked", "card_id", ""),
    ("users.messages.newsfeedcard.Impression", "news_feed", "News Feed Card Viewed", "card_id", ""),
    ("users.behaviors.Uninstall", "other", "Application Uninstalled", "app_group_id app_id device_id", ""),
    ("users.behaviors.subscription.GlobalStateChange", "other", "Global Subscription State Changed",
     f"app_group_id app_id {_CAMPAIGN} {_CANVAS} channel channel_identifier {_VARIATION} send_id state_change_source "
     "subscription_status", _EMAIL),
    ("users.behaviors.subscriptiongroup.StateChange", "other", "Subscription Group State Changed",
     f"app_group_id app_id {_CAMPAIGN} {_CANVAS} channel channel_identifier device_id dispatch_id {_VARIATION} send_id "
     "state_change_source subscription_group_id subscription_status", _EMAIL),
    ("users.messages.webhook.Abort", "other", "Webhook Aborted",
     f"{_ABORT} app_group_id {_CAMPAIGN} {_CANVAS} device_id dispatch_id {_VARIATION} send_id", ""),
    ("users.messages.webhook.Send", "other", "Webhook Sent",
     f"app_group_id {_CAMPAIGN} {_CANVAS} device_id dispatch_id message_extras {_VARIATION} send_id", ""),
    ("users.messages.pushnotification.Abort", "push", "Push Notification Aborted",
     f"{_ABORT} app_group_id app_id {_CAMPAIGN} {_CANVAS} device_id dispatch_id {_VARIATION} platform send_id", ""),
    ("users.messages.pushnotification.Bounce", "push", "Push Notification Bounced",
     f"{_ADS} app_group_id app_id {_CAMPAIGN} {_CANVAS} device_id dispatch_id {_VARIATION} platform push_token send_id",
     ""),
    ("users.messages.pushnotification.IosForeground", "push", "iOS Foreground Push Opened",
     f"{_ADS} app_group_id app_id {_CAMPAIGN} {_CANVAS} device_id dispatch_id {_VARIATION} send_id", _DEVICE),
    ("users.messages.pushnotification.Open", "push", "Push Notification Tapped",
     f"{_ADS} app_group_id app_id {_CAMPAIGN} {_CANVAS} device_id dispatch_id {_VARIATION} send_id", _DEVICE),
    ("users.messages.pushnotification.Send", "push", "Push Notification Sent",
     f"{_ADS} app_group_id app_id {_CAMPAIGN} {_CANVAS} device_id dispatch_id locale_key message_extras {_VARIATION} "
     "platform push_token send_id", ""),
    ("users.messages.sms.Abort", "sms", "SMS Aborted",
     f"{_ABORT} app_group_id {_CAMPAIGN} {_CANVAS} {_VARIATION} subscription_group_id", ""),
    ("users.messages.sms.CarrierSend", "sms", "SMS Sent to Carrier",
     f"app_group_id {_CAMPAIGN} {_CANVAS} device_id dispatch_id from_phone_number {_VARIATION} send_id "
     "subscription_group_id", _PHONE),
    ("users.messages.sms.Delivery", "sms", "SMS Delivered",
     f"app_group_id {_CAMPAIGN} {_CANVAS} device_id dispatch_id from_phone_number is_sms_fallback {_VARIATION} send_id "
     "subscription_group_id", _PHONE),
    ("users.messages.sms.DeliveryFailure", "sms", "SMS Delivery Failed",
     f"app_group_id {_CAMPAIGN} {_CANVAS} device_id dispatch_id error is_sms_fallback {_VARIATION} provider_error_code "
     "send_id subscription_group_id", _PHONE),
    ("users.messages.sms.InboundReceive", "sms", "SMS Inbound Received",
     f"action app_group_id {_CAMPAIGN} {_CANVAS} inbound_phone_number media_urls message_body {_VARIATION} "
     "subscription_group_id", _USER_PHONE),
    ("users.messages.sms.Rejection", "sms", "SMS Rejected",
     f"app_group_id {_CAMPAIGN} {_CANVAS} device_id dispatch_id error from_phone_number is_sms_fallback {_VARIATION} "
     "provider_error_code send_id subscription_group_id", _PHONE),
    ("users.messages.sms.Send", "sms", "SMS Sent",
     f"app_group_id {_CAMPAIGN} {_CANVAS} category device_id dispatch_id message_extras {_VARIATION} send_id "
     "subscription_group_id", _PHONE),
    ("users.messages.sms.ShortLinkClick", "sms", "SMS Short Link Clicked",
     f"app_group_id {_CAMPAIGN} {_CANVAS} device_id is_suspected_bot_click {_VARIATION} short_url "
     "suspected_bot_click_reason url user_agent", _USER_PHONE),
    ("users.messages.whatsapp.Abort", "whatsapp", "WhatsApp Aborted",
     f"{_ABORT} app_group_id {_CAMPAIGN} {_CANVAS} device_id dispatch_id {_VARIATION} subscription_group_id", _PHONE),
    ("users.messages.whatsapp.Delivery", "whatsapp", "WhatsApp Delivered",
     f"app_group_id {_CAMPAIGN} {_CANVAS} device_id dispatch_id flow_id from_phone_number message_id {_VARIATION} "
     "send_id subscription_group_id template_name", _PHONE),
    ("users.messages.whatsapp.Failure", "whatsapp", "WhatsApp Failed",
     f"app_group_id {_CAMPAIGN} {_CANVAS} device_id dispatch_id flow_id from_phone_number message_id {_VARIATION} "
     "provider_error_code provider_error_title send_id subscription_group_id template_name", _PHONE),
    ("users.messages.whatsapp.InboundReceive", "whatsapp", "WhatsApp Inbound Received",
     f"action app_group_id {_CAMPAIGN} {_CANVAS} catalog_id device_id flow_id flow_response_json in_reply_to "
     f"inbound_phone_number media_urls message_body message_id {_VARIATION} product_id quick_reply_text "
     "subscription_group_id", _USER_PHONE),
    ("users.messages.whatsapp.Read", "whatsapp", "WhatsApp Read",
     f"app_group_id {_CAMPAIGN} {_CANVAS} device_id dispatch_id flow_id from_phone_number message_id {_VARIATION} "
     "send_id subscription_group_id template_name", _PHONE),
    ("users.messages.whatsapp.Send", "whatsapp", "WhatsApp Sent",
     f"app_group_id {_CAMPAIGN} {_CANVAS} device_id dispatch_id flow_id from_phone_number message_extras message_id "
     f"{_VARIATION} send_id subscription_group_id template_name", _PHONE),
)

CURRENT = _table(
    "current",
    ("push", "email", "sms", "whatsapp", "in_app", "content_card", "news_feed", "canvas_campaign", "other"),
    _CURRENT_ROWS, anonymous_id=True, converters={"subscription_status": "subscription_status"})

BUILT_IN = {CLASSIC.name: CLASSIC, CURRENT.name: CURRENT}
DEFAULT = CLASSIC.name
# Every type a built-in mapping knows: the reader recognises them in record names that other producers prefix.
KNOWN_TYPES = frozenset(t for mapping in BUILT_IN.values() for t in mapping.events)
