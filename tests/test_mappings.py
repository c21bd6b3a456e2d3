"""The mappings: classic (the default, the seed's 34 events), current (what Braze's connector sends today: 52
types, anonymousId, more properties and context), anonymous users, and a mapping file of the user's own.

Expected calls come from tests.mapping_oracle, written from the references, never from transforms.catalog.
"""
import json
import os

import pytest

from currents_to_segment.transforms.currents import schemas as currents_schemas
from currents_to_segment.pipeline.main import main
from currents_to_segment.transforms.currents.partitions import parse_hour
from currents_to_segment.pipeline.sample_bucket import currents_path, make_record, make_sample_bucket, write_currents_file
from tests.mapping_oracle import CLASSIC, CURRENT, call_of, expected_call
from tests.pipeline_runs import assert_balanced, expected_calls, read_jsonl, received_calls, run_job
from tests.segment_server import SegmentServer
from currents_to_segment.transforms.currents.catalog import BUILT_IN
from currents_to_segment.transforms.currents.track_calls import to_track

KEY = "mapping-test-key"
# Every type of the current mapping (and two it does not send), anonymous users and users with no id.
SAMPLE_BUCKET = {"events_per_file": 6, "types": "current"}
HOUR = parse_hour("2024-03-01T12")


def _record(event_type, version=currents_schemas.LATEST, seq=7, **overrides):
    """A record of every field of the stored schema, each with a value of its type (none null)."""
    schema = currents_schemas.schema(event_type, version)
    return make_record(event_type, schema, seq, **overrides)


# --- one record at a time: the oracle against the job's mapping --------------------------------------------

def test_the_current_catalog_is_the_references_52_types_in_their_families():
    current = BUILT_IN["current"]
    assert len(CURRENT) == 52 and set(current.events) == set(CURRENT)
    for event_type, (family, event, _, _) in CURRENT.items():
        assert (current.events[event_type].family, current.events[event_type].segment_event) == (family, event)
    assert "whatsapp" in current.families and set(BUILT_IN["classic"].events) == set(CLASSIC)


@pytest.mark.parametrize("event_type", sorted(CURRENT))
def test_every_current_type_makes_exactly_the_call_the_reference_lists(event_type):
    record = _record(event_type)
    call = to_track(record, event_type, mapping=BUILT_IN["current"])
    assert call == expected_call(record, event_type, "current")
    assert call["userId"] == record["external_user_id"] and call["anonymousId"] == record["user_id"]
    # Every listed property and context value the schema has is there, under its key, with its Avro type.
    listed = {key: field for key, field in CURRENT[event_type][2]}
    assert set(call["properties"]) == {key for key, field in listed.items() if field in record}
    assert all(call["properties"][key] == record[listed[key]] or key == "subscription_status" for key in listed
               if listed[key] in record)
    # Fields the reference lists that this schema lacks (device_id on many types): read when another version has them.
    wider = dict(record, **{field: f"{field}-value" for _, field in CURRENT[event_type][2] + CURRENT[event_type][3]
                            if field not in record})
    assert to_track(wider, event_type, mapping=BUILT_IN["current"]) == expected_call(wider, event_type, "current")


@pytest.mark.parametrize("event_type", sorted(CURRENT))
def test_an_anonymous_user_is_sent_with_anonymous_id_only(event_type):
    record = _record(event_type, external_user_id=None)
    call = to_track(record, event_type, mapping=BUILT_IN["current"])
    assert "userId" not in call and call["anonymousId"] == record["user_id"]
    assert call == expected_call(record, event_type, "current", include_anonymous=True)


def test_values_keep_their_avro_types_in_current_and_the_seeds_strings_in_classic():
    entry = _record("users.canvas.Entry", in_control_group=True)
    assert to_track(entry, "users.canvas.Entry", mapping=BUILT_IN["current"])["properties"]["in_control_group"] is True
    assert to_track(entry, "users.canvas.Entry")["properties"]["in_control_group"] == "true"
    change = _record("users.behaviors.subscriptiongroup.StateChange", subscription_status="subscribed")
    for mapping in BUILT_IN.values():
        call = to_track(change, "users.behaviors.subscriptiongroup.StateChange", mapping=mapping)
        assert call["properties"]["subscription_status"] == "Subscribed"


def test_passthrough_leaves_out_the_fields_sent_as_ids_properties_or_context():
    record = _record("users.messages.email.Click")
    call = to_track(record, "users.messages.email.Click", mapping=BUILT_IN["current"], passthrough=True)
    assert "user_id" not in call["properties"] and "url" not in call["properties"]
    assert "email_address" not in call["properties"] and call["properties"]["timezone"] == record["timezone"]


# --- whole pipelines into Segment ------------------------------------------------------------------------------

def send(tmp_path, server, *args):
    return run_job(tmp_path, "--segment_endpoint", server.url, "--segment_write_key", KEY, "--quiet", *args)


@pytest.mark.parametrize("anonymous", [False, True])
def test_the_current_mapping_sends_exactly_the_references_calls(tmp_path, bucket, server, anonymous):
    root, manifest = bucket
    args = ["--include_anonymous_users"] if anonymous else []
    status, summary, letters = send(tmp_path, server, "--input", f"{root}/**", "--mapping", "current", *args)
    assert status == 0, summary
    assert received_calls(server.accepted) == expected_calls(manifest, "current", anonymous)
    assert not server.violations
    assert {letter["reason"] for letter in letters} == {"event_too_large", "unreadable_file"}
    no_id = sum(1 for e in manifest["records"] if not e["record"]["external_user_id"] and not e["record"]["user_id"])
    without_external = sum(1 for e in manifest["records"] if not (e["record"]["external_user_id"] or "").strip())
    if anonymous:
        assert summary["dropped_no_id"] == no_id > 0 and summary["dropped_no_external_id"] == 0
    else:
        assert "dropped_no_id" not in summary and summary["dropped_no_external_id"] == without_external
    assert {t for t, row in summary["by_event_type"].items() if row["unsupported_event_type"]} == {
        "users.messages.email.Deferral", "users.messages.banner.Click"}
    assert len(summary["by_event_type"]) == 54  # a row for every type read
    assert_balanced(summary)
    assert summary["delivery"]["mapping"] == "current"


def test_the_default_is_still_the_classic_mapping(tmp_path, bucket, server):
    root, manifest = bucket
    status, summary, _ = send(tmp_path, server, "--input", f"{root}/**")
    assert status == 0 and received_calls(server.accepted) == expected_calls(manifest, "classic")
    assert all("anonymousId" not in call for call in server.accepted)
    new_types = set(CURRENT) - set(CLASSIC)
    assert {t for t, row in summary["by_event_type"].items() if row["unsupported_event_type"]} >= new_types


def test_an_anonymous_id_no_one_can_read_is_an_invalid_record(tmp_path, server):
    root = tmp_path / "bucket"
    event_type = "users.messages.whatsapp.Send"
    schema = currents_schemas.schema(event_type)
    records = [make_record(event_type, schema, 1, external_user_id=None, user_id="\u200b"),
               make_record(event_type, schema, 2, external_user_id=None, user_id="braze\x00id"),
               make_record(event_type, schema, 3, external_user_id=None)]
    write_currents_file(currents_path(str(root), event_type, HOUR), schema, records)
    status, summary, letters = send(tmp_path, server, "--input", f"{root}/**", "--mapping", "current",
                                    "--include_anonymous_users")
    assert status == 0 and server.accepted_ids() == {records[2]["id"]: 1}
    assert sorted(letter["error"].split(": ", 1)[1].split(" holds ")[1] for letter in letters) == [
        "NUL or other control characters", "only invisible characters"]
    assert summary["dead_lettered"] == 2 and summary["sent"] == 1


def test_event_types_also_select_the_files_of_input_runs(tmp_path, bucket, server):
    root, manifest = bucket
    status, summary, _ = send(tmp_path, server, "--input", f"{root}/**", "--mapping", "current",
                              "--event_types", "whatsapp,users.behaviors.Uninstall")
    chosen = {t for t in CURRENT if ".whatsapp." in t} | {"users.behaviors.Uninstall"}
    assert status == 0 and set(summary["by_event_type"]) == chosen
    assert received_calls(server.accepted) == expected_calls(
        dict(manifest, records=[e for e in manifest["records"] if e["event_type"] in chosen]), "current")
    assert summary["inputs"]["event_types"] == sorted(chosen)


def test_the_plan_says_which_types_the_mapping_sends(tmp_path, bucket, capsys):
    root, _ = bucket
    for mapping, whatsapp in (("classic", "is not sent"), ("current", 'is sent as "WhatsApp Sent" (whatsapp)')):
        assert run_job(tmp_path, "--input", f"{root}/**", "--mapping", mapping, "--plan")[0] == 0
        out = capsys.readouterr().out.splitlines()
        assert f"{mapping} mapping: users.messages.whatsapp.Send {whatsapp}" in "\n".join(out)
        assert sum(line.startswith(f"{mapping} mapping: ") for line in out) == 54


def test_a_run_with_another_mapping_sends_the_files_again_with_the_same_ledger(tmp_path, bucket, server):
    root, manifest = bucket
    ledger = str(tmp_path / "ledger")
    assert send(tmp_path / "a", server, "--input", f"{root}/**", "--ledger", ledger)[0] == 0
    server.accepted.clear()
    status, summary, _ = send(tmp_path / "b", server, "--input", f"{root}/**", "--ledger", ledger, "--mapping",
                              "current")
    assert status == 0 and summary["ledger"]["files_skipped"] == 0
    assert received_calls(server.accepted) == expected_calls(manifest, "current")


# --- a mapping of the user's own ------------------------------------------------------------------------------

BANNER = "users.messages.banner.Click"


def write_mapping(tmp_path, document, name="mapping.json"):
    path = tmp_path / name
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return str(path)


def test_a_mapping_file_renames_drops_adds_and_changes_properties(tmp_path, bucket, server):
    root, manifest = bucket
    path = write_mapping(tmp_path, {
        "base": "current",
        "rename": {"users.messages.email.Open": "Email Opened (Braze)"},
        "drop": ["users.messages.email.Delivery"],
        "add": {BANNER: {"family": "in_app", "event": "Banner Clicked",
                         "properties": {"placement_id": "banner_placement_id", "campaign": "campaign_name"},
                         "context": {"device.model": "device_model"}}},
        "properties": {"users.messages.email.Click": {"add": {"alias": "link_alias"}, "remove": ["user_agent"]}},
    })
    status, summary, _ = send(tmp_path, server, "--input", f"{root}/**", "--mapping_file", path)
    assert status == 0 and not server.violations

    expected = []
    for entry in manifest["records"]:
        record, event_type = entry["record"], entry["event_type"]
        if record["id"] in manifest["oversize_ids"] or not (record["external_user_id"] or "").strip():
            continue
        if event_type == BANNER:
            call = call_of(record, "Banner Clicked", [("placement_id", "banner_placement_id"),
                                                      ("campaign", "campaign_name")],
                           [("device.model", "device_model")], anonymous_always=True)
        else:
            call = expected_call(record, event_type, "current")
            if call is None or event_type == "users.messages.email.Delivery":
                continue
            if event_type == "users.messages.email.Open":
                call["event"] = "Email Opened (Braze)"
            if event_type == "users.messages.email.Click":
                call["properties"].pop("user_agent", None)
                if record.get("link_alias") is not None:  # older schemas have no link_alias
                    call["properties"]["alias"] = record["link_alias"]
        expected.append(call)
    assert received_calls(server.accepted) == received_calls(expected)
    assert summary["delivery"]["mapping"] == "current+mapping.json"
    assert summary["by_event_type"]["users.messages.email.Delivery"]["unsupported_event_type"] > 0


@pytest.mark.parametrize("document,message", [
    ("{not json", "is not JSON"),
    ({"renames": {}}, 'the file: unknown key "renames" (known: base, rename, drop, add, properties)'),
    ({"base": "newest"}, 'base: "newest" is not a built-in mapping: use one of classic, current'),
    ({"rename": {"users.messages.email.Open": 3}}, 'rename["users.messages.email.Open"]: the name must be a '
                                                   "non-empty string, got 3"),
    ({"rename": {BANNER: "Banner"}}, f'rename["{BANNER}"]: the current mapping does not send {BANNER}: add it '
                                     'under "add" instead'),
    ({"add": {BANNER: {"family": "banners", "event": "Banner Clicked"}}},
     f'add["{BANNER}"].family: "banners" is not a family of the current mapping: use one of push, email, sms, '
     "whatsapp, in_app, content_card, news_feed, canvas_campaign, other"),
    ({"add": {"users.messages.email.Open": {"family": "email", "event": "Open"}}},
     'add["users.messages.email.Open"]: the current mapping already sends users.messages.email.Open (a type '
     'mapped twice)'),
    ('{"add": {"%s": {"family": "in_app", "event": "A"}, "%s": {"family": "in_app", "event": "B"}}}' % (BANNER, BANNER),
     f'"{BANNER}" is given twice'),
    ({"add": {BANNER: {"family": "in_app", "event": "Banner", "properties": {"placement_id": None}}}},
     f'add["{BANNER}"].properties["placement_id"]: no source field: give the Avro field it is read from, e.g. '
     '"placement_id": "placement_id"'),
    ({"add": {BANNER: {"family": "in_app", "event": "Banner", "colour": "red"}}},
     f'add["{BANNER}"]: unknown key "colour" (known: family, event, properties, context)'),
    ({"add": {BANNER: {"family": "in_app"}}}, f'add["{BANNER}"]: "event" is missing'),
    ({"properties": {"users.messages.email.Open": {"remove": ["colour"]}}},
     'properties["users.messages.email.Open"].remove: users.messages.email.Open has no property "colour"'),
    # Context paths that overwrite each other: traits would replace the email; device.model cannot go into a text.
    ({"add": {BANNER: {"family": "in_app", "event": "Banner", "context": {"traits": "user_id",
                                                                       "traits.email": "email_address"}}}},
     f'add["{BANNER}"].context["traits"]: context.traits is an object of Segment\'s: give a path under it, such '
     "as traits.email"),
    ({"add": {BANNER: {"family": "in_app", "event": "Banner", "context": {"device": "platform",
                                                                       "device.model": "device_model"}}}},
     f'add["{BANNER}"].context["device"]: context.device is an object of Segment\'s: give a path under it'),
    ({"add": {BANNER: {"family": "in_app", "event": "Banner", "context": {"screen.size": "platform",
                                                                       "screen.size.width": "device_model"}}}},
     f'add["{BANNER}"].context["screen.size.width"]: it sets a field inside context.screen.size, which '
     '"screen.size" sets whole: give one or the other'),
    ({"add": {BANNER: {"family": "in_app", "event": "Banner", "context": {"ip": "platform", "ip.v4": "x"}}}},
     f'add["{BANNER}"].context["ip.v4"]: it sets a field inside context.ip, which "ip" sets whole'),
    ({"base": ["current"]}, 'base: ["current"] is not a built-in mapping: use one of classic, current'),
    ('{"drop": ' + "[" * 100_000 + "]" * 100_000 + "}",
     "arrays and objects nest 100001 deep, the format at most 4 (the file -> add -> a type -> its properties)"),
    ({"drop": [[["users.messages.email.Open"]]]}, "drop: an event type must be a non-empty string"),  # depth 3
    ({"rename": {"users.messages.email.Open": "E" * 40_000}},
     'rename["users.messages.email.Open"]: the name "EEEE'),
    ({"rename": {"users.messages.email.Open": "E" * 201}},
     "EEE...\" has 201 characters: Segment takes at most 200 here"),
    ({"add": {BANNER: {"family": "in_app", "event": "B" * 201}}},
     f'add["{BANNER}"].event: the name "BBBB'),
    ({"rename": {"users.messages.email.Open": "Email\nOpened"}},
     'the name "Email\\nOpened" holds control characters'),
    ({"properties": {"users.messages.email.Open": {"add": {"k" * 257: "link_alias"}}}},
     "has 257 characters: Segment takes at most 256 here"),
    ({"add": {BANNER: {"family": "in_app", "event": "Banner", "properties": {"": "banner_placement_id"}}}},
     f'add["{BANNER}"].properties[""]: a property key must be a non-empty string'),
    ({"add": {BANNER: {"family": "in_app", "event": "Banner", "context": {"traits." + "t" * 257: "user_id"}}}},
     "has 264 characters: Segment takes at most 256 here"),
    ({"add": {BANNER: {"family": "in_app", "event": "Banner", "context": {"a." * 128 + "b": "user_id"}}}},
     "the context path \"a.a.a."),
    ({"add": {BANNER: {"family": "in_app", "event": "Banner", "context": {"traits. ": "user_id"}}}},
     "a part of the context path must be a non-empty string"),
    ({"properties": {"users.messages.email.Open": {"remove": [["user_agent"]]}}}, "nest 5 deep"),
])
def test_a_mapping_file_that_cannot_be_used_is_one_line_naming_the_entry_and_nothing_runs(
        tmp_path, bucket, server, capsys, document, message):
    root, _ = bucket
    path = write_mapping(tmp_path, document)
    status = main(["--runner=FnApiRunner", "--input", f"{root}/**", "--segment_endpoint", server.url,
                   "--segment_write_key", KEY, "--mapping", "current", "--mapping_file", path,
                   "--dead_letter_output", str(tmp_path / "dead")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(err) == 1 and err[0].startswith(f"error: --mapping_file {path}"), err
    assert message in err[0], err[0]
    assert server.requests == [] and not os.path.exists(tmp_path / "dead")


def test_a_mapping_file_in_a_folder_that_does_not_exist_is_one_line(tmp_path, bucket, capsys):
    root, _ = bucket
    assert run_job(tmp_path, "--input", f"{root}/**", "--mapping_file", str(tmp_path / "no" / "m.json"),
                   "--plan")[0] == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: cannot read --mapping_file {tmp_path / 'no' / 'm.json'}: ")


def test_the_documented_mapping_example_is_valid_and_does_what_it_says(tmp_path, bucket, capsys):
    root, _ = bucket
    readme = open(os.path.join(os.path.dirname(__file__), "..", "docs", "events.md"), encoding="utf-8").read()
    example = readme[readme.index("```json\n{\n  \"base\"") + len("```json\n"):]
    path = write_mapping(tmp_path, example[:example.index("```")], name="my-mapping.json")
    assert run_job(tmp_path, "--input", f"{root}/**", "--mapping_file", path, "--plan")[0] == 0
    plan = capsys.readouterr().out
    assert f'my-mapping.json mapping: {BANNER} is sent as "Banner Clicked" (in_app)' in plan
    assert 'users.messages.email.Open is sent as "Email Opened (Braze)"' in plan
    assert "users.messages.email.Delivery is not sent" in plan


# --- what --redact_fields and --hash_fields protect: the calls, and every dead letter ----------------------------

ANN = "ann@example.com"
ANN_SHA256 = "71d4f55f72fa128dfb468a1a3901507c804b74316488744d769d7f4b16696476"
SEND = "users.messages.email.Send"


def test_no_dead_letter_holds_a_value_the_run_would_not_have_sent(tmp_path, server):
    """Segment down (503) with --hash_fields email --redact_fields campaign_name: the retries_exhausted letters hold
    the calls as sent, the invalid_record letter the record with the address hashed and the campaign name left out,
    the unreadable_file letter no value of the records it lost."""
    root = tmp_path / "bucket"
    schema = currents_schemas.schema(SEND)
    sent = [make_record(SEND, schema, n, email_address=ANN, campaign_name="Spring sale") for n in (1, 2)]
    write_currents_file(currents_path(str(root), SEND, HOUR), schema, sent)
    millis = make_record(SEND, schema, 3, email_address=ANN, campaign_name="Spring sale", time=1709294400000)
    write_currents_file(currents_path(str(root), SEND, HOUR, offset=1), schema, [millis])
    whole = tmp_path / "whole.avro"
    write_currents_file(str(whole), schema, [make_record(SEND, schema, n, email_address=ANN,
                                                         campaign_name="Spring sale") for n in range(4, 40)])
    cut = currents_path(str(root), SEND, HOUR, offset=2)
    with open(cut, "wb") as stream:  # the header and part of the blocks: the records of the last one are lost
        stream.write(whole.read_bytes()[:-200])
    server.always = 503
    status, summary, letters = send(tmp_path, server, "--input", f"{root}/**", "--hash_fields", "email",
                                    "--redact_fields", "campaign_name", "--max_retry_seconds", "0.3",
                                    "--retry_backoff_seconds", "0.01")
    assert status == 3 and summary["sent"] == 0
    reasons = [letter["reason"] for letter in letters]
    assert (reasons.count("invalid_record"), reasons.count("unreadable_file")) == (1, 1)
    assert reasons.count("retries_exhausted") == summary["dead_lettered"] - 1 >= 2  # the cut file's blocks before
    assert ANN not in json.dumps(letters) and "Spring sale" not in json.dumps(letters)
    for letter in letters:
        if letter["reason"] == "retries_exhausted":
            assert letter["message"]["context"]["traits"] == {"email": ANN_SHA256}
            assert "campaign_name" not in letter["message"]["properties"]
        elif letter["reason"] == "invalid_record":
            assert letter["record"]["email_address"] == ANN_SHA256 and "campaign_name" not in letter["record"]
            assert letter["record"]["id"] == millis["id"] and letter["record"]["time"] == 1709294400000
        else:
            assert letter["record"] is None and letter["message"] is None and letter["source_file"] == cut
    assert all(request.status == 503 for request in server.requests)


def test_a_property_a_mapping_file_adds_can_be_hashed_and_without_the_file_it_cannot(tmp_path, bucket, capsys):
    root, _ = bucket
    path = write_mapping(tmp_path, {"base": "current", "add": {BANNER: {
        "family": "in_app", "event": "Banner Clicked", "properties": {"placement_id": "banner_placement_id"}}}})
    assert run_job(tmp_path, "--input", f"{root}/**", "--mapping_file", path, "--hash_fields", "placement_id",
                   "--plan")[0] == 0
    capsys.readouterr()
    assert run_job(tmp_path, "--input", f"{root}/**", "--mapping", "current", "--hash_fields", "placement_id",
                   "--plan")[0] == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line == ("error: --hash_fields placement_id: no property or trait of the current mapping is named "
                    "placement_id (see docs/events.md for the names each event sends)")
