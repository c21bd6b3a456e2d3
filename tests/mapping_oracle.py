"""The calls Segment must receive, written from the references and nothing else: an oracle for the tests,
independent of transforms.currents.catalog and transforms.currents.track_calls (a bug there cannot hide by making the expected calls too).

- classic: ../reference/event-catalog.md (the seed's 34 events), written out below;
- current: ../reference/event-catalog-current.md, its table copied below as it stands.
"""
import datetime
import importlib.metadata

# --- classic (event-catalog.md) -----------------------------------------------------------------------------

CLASSIC_COMMON = ["app_id", "send_id", "dispatch_id", "campaign_id", "campaign_name", "message_variation_id",
                  "canvas_id", "canvas_name", "canvas_variation_id", "canvas_step_id"]
# Currents type: (Segment event, {property: Avro field} beside the common ones)
CLASSIC = {
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
    "users.messages.inappmessage.Impression": ("In-App Message Viewed", {}),
    "users.messages.inappmessage.Click": ("In-App Message Clicked", {"button_id": "button_id"}),
    "users.messages.contentcard.Send": ("Content Card Sent", {"card_id": "content_card_id"}),
    "users.messages.contentcard.Impression": ("Content Card Viewed", {"card_id": "content_card_id"}),
    "users.messages.contentcard.Click": ("Content Card Clicked", {"card_id": "content_card_id"}),
    "users.messages.contentcard.Dismiss": ("Content Card Dismissed", {"card_id": "content_card_id"}),
    "users.behaviors.app.NewsFeedImpression": ("News Feed Viewed", {}),
    "users.messages.newsfeedcard.Impression": ("News Feed Card Viewed", {"card_id": "card_id"}),
    "users.messages.newsfeedcard.Click": ("News Feed Card Clicked", {"card_id": "card_id"}),
    "users.campaigns.Conversion": ("Campaign Converted", {}),
    "users.canvas.Conversion": ("Canvas Converted", {}),
    "users.canvas.Entry": ("Canvas Entered", {"in_control_group": "in_control_group"}),
    "users.campaigns.EnrollInControl": ("Campaign Control Group Entered", {}),
    "users.messages.webhook.Send": ("Webhook Sent", {}),
    "users.behaviors.subscriptiongroup.StateChange": ("Subscription Group State Changed",
                                                      {"subscription_group_id": "subscription_group_id",
                                                       "subscription_status": "subscription_status"}),
    "users.behaviors.Uninstall": ("Application Uninstalled", {}),
}


def _status(value):
    return {"subscribed": "Subscribed", "unsubscribed": "Unsubscribed"}.get(value.lower(), value)


# The seed's string types (Decisions of event-catalog.md).
CLASSIC_VALUES = {"in_control_group": lambda v: "true" if v else "false", "button_id": str,
                  "subscription_status": _status}


# --- current (event-catalog-current.md, its table as it stands) ----------------------------------------------

CURRENT_TABLE = """\
| users.campaigns.Conversion | canvas_campaign | Campaign Converted | app_group_id, app_id, campaign_id, campaign_name, conversion_behavior, conversion_behavior_index, device_id, dispatch_id, message_variation_id, message_variation_name, send_id | — |
| users.campaigns.EnrollInControl | canvas_campaign | Campaign Control Group Entered | app_group_id, app_id, campaign_id, campaign_name, device_id, dispatch_id, message_variation_id, message_variation_name, send_id | — |
| users.canvas.Conversion | canvas_campaign | Canvas Converted | app_group_id, app_id, canvas_id, canvas_name, canvas_step_id, canvas_step_name, canvas_variation_id, canvas_variation_name, conversion_behavior, conversion_behavior_index, device_id | — |
| users.canvas.Entry | canvas_campaign | Canvas Entered | app_group_id, canvas_id, canvas_name, canvas_step_id, canvas_step_name, canvas_variation_id, canvas_variation_name, device_id, in_control_group | — |
| users.canvas.exit.MatchedAudience | canvas_campaign | Exit Matched Audience | app_group_id, canvas_id, canvas_name, canvas_step_id, canvas_step_name, canvas_variation_id, canvas_variation_name | — |
| users.canvas.exit.PerformedEvent | canvas_campaign | Exit Performed Event | app_group_id, canvas_id, canvas_name, canvas_step_id, canvas_step_name, canvas_variation_id, canvas_variation_name | — |
| users.canvas.experimentstep.Conversion | canvas_campaign | Experiment Step Converted | app_id, canvas_id, canvas_name, canvas_step_id, canvas_step_name, canvas_variation_id, canvas_variation_name, conversion_behavior, conversion_behavior_index, experiment_split_id, experiment_split_name, experiment_step_id | — |
| users.canvas.experimentstep.SplitEntry | canvas_campaign | Experiment Split Entered | canvas_id, canvas_name, canvas_step_id, canvas_step_name, canvas_variation_id, canvas_variation_name, experiment_split_id, experiment_split_name, experiment_step_id, in_control_group | — |
| users.messages.contentcard.Abort | content_card | Content Card Aborted | abort_log, abort_type, app_group_id, campaign_id, campaign_name, canvas_id, canvas_name, canvas_step_id, canvas_step_name, canvas_variation_id, canvas_variation_name, device_id, dispatch_id, message_variation_id, message_variation_name, send_id | — |
| users.messages.contentcard.Click | content_card | Content Card Clicked | ad_id, ad_id_type, ad_tracking_enabled, app_group_id, app_id, campaign_id, campaign_name, canvas_id, canvas_name, canvas_step_id, canvas_step_name, canvas_variation_id, canvas_variation_name, card_id <- content_card_id, device_id, dispatch_id, message_variation_id, message_variation_name, send_id | context.device.model <- device_model, context.device.type <- platform |
| users.messages.contentcard.Dismiss | content_card | Content Card Dismissed | ad_id, ad_id_type, ad_tracking_enabled, app_group_id, app_id, campaign_id, campaign_name, canvas_id, canvas_name, canvas_step_id, canvas_step_name, canvas_variation_id, canvas_variation_name, card_id <- content_card_id, device_id, dispatch_id, message_variation_id, message_variation_name, send_id | context.device.model <- device_model, context.device.type <- platform |
| users.messages.contentcard.Impression | content_card | Content Card Viewed | ad_id, ad_id_type, ad_tracking_enabled, app_group_id, app_id, campaign_id, campaign_name, canvas_id, canvas_name, canvas_step_id, canvas_step_name, canvas_variation_id, canvas_variation_name, card_id <- content_card_id, device_id, dispatch_id, message_variation_id, message_variation_name, send_id | context.device.model <- device_model, context.device.type <- platform |
| users.messages.contentcard.Send | content_card | Content Card Sent | app_group_id, campaign_id, campaign_name, canvas_id, canvas_name, canvas_step_id, canvas_step_name, canvas_variation_id, canvas_variation_name, card_id <- content_card_id, device_id, dispatch_id, message_extras, message_variation_id, message_variation_name, send_id | — |
| users.messages.email.Abort | email | Email Aborted | abort_log, abort_type, app_group_id, campaign_id, campaign_name, canvas_id, canvas_name, canvas_step_id, canvas_step_name, canvas_variation_id, canvas_variation_name, device_id, dispatch_id, ip_pool, message_variation_id, message_variation_name, send_id | context.traits.email <- email_address |
| users.messages.email.Bounce | email | Email Bounced | app_group_id, bounce_reason, campaign_id, campaign_name, canvas_id, canvas_name, canvas_step_id, canvas_step_name, canvas_variation_id, canvas_variation_name, device_id, dispatch_id, esp, from_domain, ip_pool, is_drop, message_variation_id, message_variation_name, send_id | context.traits.email <- email_address |
| users.messages.email.Click | email | Email Link Clicked | app_group_id, browser, campaign_id, campaign_name, canvas_id, canvas_name, canvas_step_id, canvas_step_name, canvas_variation_id, canvas_variation_name, device_class, device_id, device_os, dispatch_id, esp, from_domain, ip_pool, is_amp, is_suspected_bot_click, link_alias, link_id, link_url <- url, mailbox_provider, message_variation_id, message_variation_name, send_id, suspected_bot_click_reason, user_agent | context.device.model <- device_model, context.traits.email <- email_address |
| users.messages.email.Delivery | email | Email Delivered | app_group_id, campaign_id, campaign_name, canvas_id, canvas_name, canvas_step_id, canvas_step_name, canvas_variation_id, canvas_variation_name, device_id, dispatch_id, esp, from_domain, ip_pool, message_variation_id, message_variation_name, send_id | context.traits.email <- email_address |
| users.messages.email.MarkAsSpam | email | Email Marked As Spam | app_group_id, campaign_id, campaign_name, canvas_id, canvas_name, canvas_step_id, canvas_step_name, canvas_variation_id, canvas_variation_name, device_id, dispatch_id, esp, from_domain, ip_pool, message_variation_id, message_variation_name, send_id, user_agent | context.traits.email <- email_address |
| users.messages.email.Open | email | Email Opened | app_group_id, browser, campaign_id, campaign_name, canvas_id, canvas_name, canvas_step_id, canvas_step_name, canvas_variation_id, canvas_variation_name, device_class, device_id, device_os, dispatch_id, esp, from_domain, ip_pool, is_amp, machine_open, mailbox_provider, message_variation_id, message_variation_name, send_id, user_agent | context.device.model <- device_model, context.traits.email <- email_address |
| users.messages.email.Send | email | Email Sent | app_group_id, campaign_id, campaign_name, canvas_id, canvas_name, canvas_step_id, canvas_step_name, canvas_variation_id, canvas_variation_name, device_id, dispatch_id, esp, from_domain, ip_pool, message_extras, message_variation_id, message_variation_name, send_id | context.traits.email <- email_address |
| users.messages.email.SoftBounce | email | Email Soft Bounced | app_group_id, bounce_reason, campaign_id, campaign_name, canvas_id, canvas_name, canvas_step_id, canvas_step_name, canvas_variation_id, canvas_variation_name, device_id, dispatch_id, esp, from_domain, ip_pool, message_variation_id, message_variation_name, send_id | context.traits.email <- email_address |
| users.messages.email.Unsubscribe | email | Email Unsubscribed | app_group_id, campaign_id, campaign_name, canvas_id, canvas_name, canvas_step_id, canvas_step_name, canvas_variation_id, canvas_variation_name, device_id, dispatch_id, ip_pool, message_variation_id, message_variation_name, send_id | context.traits.email <- email_address |
| users.messages.inappmessage.Abort | in_app | In-App Message Aborted | abort_log, abort_type, ad_id, ad_id_type, ad_tracking_enabled, app_group_id, app_id, campaign_id, campaign_name, canvas_id, canvas_name, canvas_step_id, canvas_step_name, canvas_variation_id, canvas_variation_name, card_id, device_id, dispatch_id, message_variation_id, message_variation_name, send_id | context.device.model <- device_model, context.device.type <- platform |
| users.messages.inappmessage.Click | in_app | In-App Message Clicked | ad_id, ad_id_type, ad_tracking_enabled, app_group_id, app_id, button_id, campaign_id, campaign_name, canvas_id, canvas_name, canvas_step_id, canvas_step_name, canvas_variation_id, canvas_variation_name, card_id, device_id, dispatch_id, message_variation_id, message_variation_name, send_id | context.device.model <- device_model, context.device.type <- platform |
| users.messages.inappmessage.Impression | in_app | In-App Message Viewed | ad_id, ad_id_type, ad_tracking_enabled, app_group_id, app_id, campaign_id, campaign_name, canvas_id, canvas_name, canvas_step_id, canvas_step_name, canvas_variation_id, canvas_variation_name, card_id, device_id, dispatch_id, locale_key, message_extras, message_variation_id, message_variation_name, send_id | context.device.model <- device_model, context.device.type <- platform |
| users.behaviors.app.NewsFeedImpression | news_feed | News Feed Viewed | — | — |
| users.messages.newsfeedcard.Click | news_feed | News Feed Card Clicked | card_id | — |
| users.messages.newsfeedcard.Impression | news_feed | News Feed Card Viewed | card_id | — |
| users.behaviors.Uninstall | other | Application Uninstalled | app_group_id, app_id, device_id | — |
| users.behaviors.subscription.GlobalStateChange | other | Global Subscription State Changed | app_group_id, app_id, campaign_id, campaign_name, canvas_id, canvas_name, canvas_step_id, canvas_step_name, canvas_variation_id, canvas_variation_name, channel, channel_identifier, message_variation_id, message_variation_name, send_id, state_change_source, subscription_status | context.traits.email <- email_address |
| users.behaviors.subscriptiongroup.StateChange | other | Subscription Group State Changed | app_group_id, app_id, campaign_id, campaign_name, canvas_id, canvas_name, canvas_step_id, canvas_step_name, canvas_variation_id, canvas_variation_name, channel, channel_identifier, device_id, dispatch_id, message_variation_id, message_variation_name, send_id, state_change_source, subscription_group_id, subscription_status | context.traits.email <- email_address |
| users.messages.webhook.Abort | other | Webhook Aborted | abort_log, abort_type, app_group_id, campaign_id, campaign_name, canvas_id, canvas_name, canvas_step_id, canvas_step_name, canvas_variation_id, canvas_variation_name, device_id, dispatch_id, message_variation_id, message_variation_name, send_id | — |
| users.messages.webhook.Send | other | Webhook Sent | app_group_id, campaign_id, campaign_name, canvas_id, canvas_name, canvas_step_id, canvas_step_name, canvas_variation_id, canvas_variation_name, device_id, dispatch_id, message_extras, message_variation_id, message_variation_name, send_id | — |
| users.messages.pushnotification.Abort | push | Push Notification Aborted | abort_log, abort_type, app_group_id, app_id, campaign_id, campaign_name, canvas_id, canvas_name, canvas_step_id, canvas_step_name, canvas_variation_id, canvas_variation_name, device_id, dispatch_id, message_variation_id, message_variation_name, platform, send_id | — |
| users.messages.pushnotification.Bounce | push | Push Notification Bounced | ad_id, ad_id_type, ad_tracking_enabled, app_group_id, app_id, campaign_id, campaign_name, canvas_id, canvas_name, canvas_step_id, canvas_step_name, canvas_variation_id, canvas_variation_name, device_id, dispatch_id, message_variation_id, message_variation_name, platform, push_token, send_id | — |
| users.messages.pushnotification.IosForeground | push | iOS Foreground Push Opened | ad_id, ad_id_type, ad_tracking_enabled, app_group_id, app_id, campaign_id, campaign_name, canvas_id, canvas_name, canvas_step_id, canvas_step_name, canvas_variation_id, canvas_variation_name, device_id, dispatch_id, message_variation_id, message_variation_name, send_id | context.device.model <- device_model, context.device.type <- platform |
| users.messages.pushnotification.Open | push | Push Notification Tapped | ad_id, ad_id_type, ad_tracking_enabled, app_group_id, app_id, campaign_id, campaign_name, canvas_id, canvas_name, canvas_step_id, canvas_step_name, canvas_variation_id, canvas_variation_name, device_id, dispatch_id, message_variation_id, message_variation_name, send_id | context.device.model <- device_model, context.device.type <- platform |
| users.messages.pushnotification.Send | push | Push Notification Sent | ad_id, ad_id_type, ad_tracking_enabled, app_group_id, app_id, campaign_id, campaign_name, canvas_id, canvas_name, canvas_step_id, canvas_step_name, canvas_variation_id, canvas_variation_name, device_id, dispatch_id, locale_key, message_extras, message_variation_id, message_variation_name, platform, push_token, send_id | — |
| users.messages.sms.Abort | sms | SMS Aborted | abort_log, abort_type, app_group_id, campaign_id, campaign_name, canvas_id, canvas_name, canvas_step_id, canvas_step_name, canvas_variation_id, canvas_variation_name, message_variation_id, message_variation_name, subscription_group_id | — |
| users.messages.sms.CarrierSend | sms | SMS Sent to Carrier | app_group_id, campaign_id, campaign_name, canvas_id, canvas_name, canvas_step_id, canvas_step_name, canvas_variation_id, canvas_variation_name, device_id, dispatch_id, from_phone_number, message_variation_id, message_variation_name, send_id, subscription_group_id | context.traits.phone <- to_phone_number |
| users.messages.sms.Delivery | sms | SMS Delivered | app_group_id, campaign_id, campaign_name, canvas_id, canvas_name, canvas_step_id, canvas_step_name, canvas_variation_id, canvas_variation_name, device_id, dispatch_id, from_phone_number, is_sms_fallback, message_variation_id, message_variation_name, send_id, subscription_group_id | context.traits.phone <- to_phone_number |
| users.messages.sms.DeliveryFailure | sms | SMS Delivery Failed | app_group_id, campaign_id, campaign_name, canvas_id, canvas_name, canvas_step_id, canvas_step_name, canvas_variation_id, canvas_variation_name, device_id, dispatch_id, error, is_sms_fallback, message_variation_id, message_variation_name, provider_error_code, send_id, subscription_group_id | context.traits.phone <- to_phone_number |
| users.messages.sms.InboundReceive | sms | SMS Inbound Received | action, app_group_id, campaign_id, campaign_name, canvas_id, canvas_name, canvas_step_id, canvas_step_name, canvas_variation_id, canvas_variation_name, inbound_phone_number, media_urls, message_body, message_variation_id, message_variation_name, subscription_group_id | context.traits.phone <- user_phone_number |
| users.messages.sms.Rejection | sms | SMS Rejected | app_group_id, campaign_id, campaign_name, canvas_id, canvas_name, canvas_step_id, canvas_step_name, canvas_variation_id, canvas_variation_name, device_id, dispatch_id, error, from_phone_number, is_sms_fallback, message_variation_id, message_variation_name, provider_error_code, send_id, subscription_group_id | context.traits.phone <- to_phone_number |
| users.messages.sms.Send | sms | SMS Sent | app_group_id, campaign_id, campaign_name, canvas_id, canvas_name, canvas_step_id, canvas_step_name, canvas_variation_id, canvas_variation_name, category, device_id, dispatch_id, message_extras, message_variation_id, message_variation_name, send_id, subscription_group_id | context.traits.phone <- to_phone_number |
| users.messages.sms.ShortLinkClick | sms | SMS Short Link Clicked | app_group_id, campaign_id, campaign_name, canvas_id, canvas_name, canvas_step_id, canvas_step_name, canvas_variation_id, canvas_variation_name, device_id, is_suspected_bot_click, message_variation_id, message_variation_name, short_url, suspected_bot_click_reason, url, user_agent | context.traits.phone <- user_phone_number |
| users.messages.whatsapp.Abort | whatsapp | WhatsApp Aborted | abort_log, abort_type, app_group_id, campaign_id, campaign_name, canvas_id, canvas_name, canvas_step_id, canvas_step_name, canvas_variation_id, canvas_variation_name, device_id, dispatch_id, message_variation_id, message_variation_name, subscription_group_id | context.traits.phone <- to_phone_number |
| users.messages.whatsapp.Delivery | whatsapp | WhatsApp Delivered | app_group_id, campaign_id, campaign_name, canvas_id, canvas_name, canvas_step_id, canvas_step_name, canvas_variation_id, canvas_variation_name, device_id, dispatch_id, flow_id, from_phone_number, message_id, message_variation_id, message_variation_name, send_id, subscription_group_id, template_name | context.traits.phone <- to_phone_number |
| users.messages.whatsapp.Failure | whatsapp | WhatsApp Failed | app_group_id, campaign_id, campaign_name, canvas_id, canvas_name, canvas_step_id, canvas_step_name, canvas_variation_id, canvas_variation_name, device_id, dispatch_id, flow_id, from_phone_number, message_id, message_variation_id, message_variation_name, provider_error_code, provider_error_title, send_id, subscription_group_id, template_name | context.traits.phone <- to_phone_number |
| users.messages.whatsapp.InboundReceive | whatsapp | WhatsApp Inbound Received | action, app_group_id, campaign_id, campaign_name, canvas_id, canvas_name, canvas_step_id, canvas_step_name, canvas_variation_id, canvas_variation_name, catalog_id, device_id, flow_id, flow_response_json, in_reply_to, inbound_phone_number, media_urls, message_body, message_id, message_variation_id, message_variation_name, product_id, quick_reply_text, subscription_group_id | context.traits.phone <- user_phone_number |
| users.messages.whatsapp.Read | whatsapp | WhatsApp Read | app_group_id, campaign_id, campaign_name, canvas_id, canvas_name, canvas_step_id, canvas_step_name, canvas_variation_id, canvas_variation_name, device_id, dispatch_id, flow_id, from_phone_number, message_id, message_variation_id, message_variation_name, send_id, subscription_group_id, template_name | context.traits.phone <- to_phone_number |
| users.messages.whatsapp.Send | whatsapp | WhatsApp Sent | app_group_id, campaign_id, campaign_name, canvas_id, canvas_name, canvas_step_id, canvas_step_name, canvas_variation_id, canvas_variation_name, device_id, dispatch_id, flow_id, from_phone_number, message_extras, message_id, message_variation_id, message_variation_name, send_id, subscription_group_id, template_name | context.traits.phone <- to_phone_number |
"""


def _pairs(cell):
    if cell == "—":
        return []
    found = []
    for item in cell.split(","):
        key, _, field = item.strip().partition("<-")
        found.append((key.strip(), field.strip() or key.strip()))
    return found


def current_rows():
    """{Currents type: (family, Segment event, [(property, field)], [(context path, field)])} of the table."""
    rows = {}
    for line in CURRENT_TABLE.splitlines():
        event_type, family, event, properties, context = [cell.strip() for cell in line.strip("|").split("|")]
        rows[event_type] = (family, event, _pairs(properties),
                            [(path.removeprefix("context."), field) for path, field in _pairs(context)])
    return rows


CURRENT = current_rows()


# --- the call ------------------------------------------------------------------------------------------------

def _text(value):
    return isinstance(value, str) and bool(value.strip())


def expected_call(record, event_type, mapping="classic", include_anonymous=False):
    """The track call the reference says a record makes, or None when it makes none (a type not sent, a user
    not sent); records the job dead-letters (a bad time, id or user id) are not this oracle's business."""
    if mapping == "classic":
        if event_type not in CLASSIC:
            return None
        event, extra = CLASSIC[event_type]
        properties = [(key, key) for key in CLASSIC_COMMON] + list(extra.items())
        context = [("traits.email", "email_address")] if event_type.startswith("users.messages.email.") else []
        return call_of(record, event, properties, context, False, include_anonymous, CLASSIC_VALUES)
    if event_type not in CURRENT:
        return None
    _, event, properties, context = CURRENT[event_type]
    return call_of(record, event, properties, context, True, include_anonymous, {"subscription_status": _status})


def call_of(record, event, properties, context, anonymous_always, include_anonymous=False, values=None):
    """The call of a record as a row says: its event, (property, field) and (context path, field) pairs; with
    anonymousId on every call or only for users without an external id; None for a user not sent."""
    external, braze = record.get("external_user_id"), record.get("user_id")
    if not _text(external) and not (include_anonymous and _text(braze)):
        return None
    values = values or {}
    call = {"type": "track", "event": event}
    if _text(external):
        call["userId"] = external
    if (anonymous_always or not _text(external)) and _text(braze):
        call["anonymousId"] = braze
    time = datetime.datetime.fromtimestamp(record["time"], datetime.timezone.utc)
    call["timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    call["messageId"] = record["id"]
    call["properties"] = {key: values.get(key, lambda v: v)(record[field]) for key, field in properties
                          if record.get(field) is not None}
    call["context"] = {"library": {"name": "braze-currents-to-segment",
                                   "version": importlib.metadata.version("braze-currents-to-segment")}}
    for path, field in context:
        if record.get(field) is not None:
            parent, name = path.split(".")
            call["context"].setdefault(parent, {})[name] = record[field]
    return call
