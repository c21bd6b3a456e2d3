"""The run's HTML report page (pipeline.report_page.render): what it shows, that it escapes what it is given, that it
needs nothing outside itself, and how it copes with a report that has little in it.

The browser tests load the page in headless Chromium (CHROMIUM, as scripts/setup_chromium.sh exports it, or one on
PATH) and read what it shows from the DOM Chromium built, and from a screenshot. Without a browser they are skipped,
with the reason; with CHROMIUM_REQUIRED=1 (CI) they fail instead. One page is loaded once for the whole module.
"""
import collections
import copy
import html.parser
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib

import pytest

from currents_to_segment.pipeline import report_page

# --- a realistic report: a classic-mapping run with a few dead letters ---------------------------------

BY_EVENT_TYPE = {  # each row balances: read = no external id + unsupported + sent + dead-lettered
    "users.behaviors.Uninstall": {"read": 85, "dropped_no_external_id": 15, "unsupported_event_type": 0, "sent": 70,
                                  "dead_lettered": 0},
    "users.messages.email.Click": {"read": 200, "dropped_no_external_id": 25, "unsupported_event_type": 0,
                                   "sent": 175, "dead_lettered": 0},
    "users.messages.email.Open": {"read": 300, "dropped_no_external_id": 30, "unsupported_event_type": 0, "sent": 268,
                                  "dead_lettered": 2},
    "users.messages.email.Send": {"read": 400, "dropped_no_external_id": 40, "unsupported_event_type": 0, "sent": 355,
                                  "dead_lettered": 5},
    "users.messages.inappmessage.Impression": {"read": 150, "dropped_no_external_id": 30, "unsupported_event_type": 0,
                                               "sent": 118, "dead_lettered": 2},
    "users.messages.pushnotification.Send": {"read": 250, "dropped_no_external_id": 60, "unsupported_event_type": 0,
                                             "sent": 187, "dead_lettered": 3},
    "users.messages.rcs.Send": {"read": 6, "dropped_no_external_id": 0, "unsupported_event_type": 6, "sent": 0,
                                "dead_lettered": 0},
    "users.messages.whatsapp.Send": {"read": 9, "dropped_no_external_id": 0, "unsupported_event_type": 9, "sent": 0,
                                     "dead_lettered": 0},
}
BY_SEGMENT_EVENT = {"Application Uninstalled": 70, "Email Link Clicked": 175, "Email Opened": 268, "Email Sent": 355,
                    "In-App Message Viewed": 118, "Push Notification Sent": 187}
SEGMENT_EVENTS = sorted(BY_SEGMENT_EVENT)
REASONS = ["event_too_large", "rejected_by_segment", "retries_exhausted", "unreadable_file"]
LONG_TEXT = "x" * 5000  # a property of the oversize event: cut in the page

DESTINATION = {"endpoint": "https://api.segment.io", "write_key": "sha256:4f1c2a9e"}
_FOLDER = "s3://acme-currents/currents/dataexport.prod-03.S3.integration.5f"
SAMPLES = [
    {"reason": "event_too_large", "event_type": "users.messages.email.Send",
     "source_file": f"{_FOLDER}/event_type=users.messages.email.Send/date=2026-12-01-05/380/0_2_1.avro",
     "message_id": "brz-9b1f0c1e5d", "http_status": None, "response_excerpt": None,
     "error": "the call is 41,233 bytes: Segment takes at most 32,768", "record": None,
     "message": {"type": "track", "event": "Email Sent", "userId": "user-1001", "messageId": "brz-9b1f0c1e5d",
                 "timestamp": "2026-12-01T05:12:44Z",
                 "properties": {"campaign_name": "Winter sale", "body": LONG_TEXT}},
     "destination": DESTINATION},
    {"reason": "rejected_by_segment", "event_type": "users.messages.email.Open",
     "source_file": f"{_FOLDER}/event_type=users.messages.email.Open/date=2026-12-01-07/380/0_1_3.avro",
     "message_id": "brz-0c44a1d7e2", "http_status": 400, "response_excerpt": '{"success":false,"message":"invalid"}',
     "error": "Segment answered 400", "record": None,
     "message": {"type": "track", "event": "Email Opened", "userId": "user-2002", "messageId": "brz-0c44a1d7e2",
                 "timestamp": "2026-12-01T07:40:02Z", "properties": {"campaign_name": "Winter sale"}},
     "destination": DESTINATION},
    {"reason": "retries_exhausted", "event_type": "users.messages.pushnotification.Send",
     "source_file": f"{_FOLDER}/event_type=users.messages.pushnotification.Send/date=2026-12-01-11/380/0_4_0.avro",
     "message_id": "brz-77e0b3c9aa", "http_status": 503, "response_excerpt": "Service Unavailable",
     "error": "no success after 8 attempts over 600 s", "record": None,
     "message": {"type": "track", "event": "Push Notification Sent", "userId": "user-3003",
                 "messageId": "brz-77e0b3c9aa", "timestamp": "2026-12-01T11:03:51Z",
                 "properties": {"campaign_name": "Black Friday reminder", "platform": "ios"}},
     "destination": DESTINATION},
    {"reason": "unreadable_file", "event_type": None,
     "source_file": f"{_FOLDER}/event_type=users.messages.email.Send/date=2026-12-01-19/380/0_9_9.avro",
     "message_id": None, "http_status": None, "response_excerpt": None,
     "error": "Avro block 3 is corrupt: sync marker does not match", "message": None, "record": None,
     "destination": DESTINATION, "events_read_before_error": 120, "byte_range": [48211, 91022], "records_lost": 0},
]
SUMMARY = {
    "run_id": "20261207T050000Z-1a2b3c4d", "started_at": "2026-12-07T05:00:00.123456+00:00",
    "ended_at": "2026-12-07T05:00:12.423456+00:00", "duration_seconds": 12.3, "exit_code": 2,
    "outcome": "completed_with_dead_letters",
    "events_read": 1400, "sent": 1173, "dead_lettered": 12, "dropped_no_external_id": 200,
    "unsupported_event_type": 15, "unreadable_files": 1, "requests": 45, "retries": 6, "throttled_seconds": 2,
    "rejected_by_segment": 2,
    "dead_letters_by_reason": {"event_too_large": 1, "rejected_by_segment": 2, "retries_exhausted": 9,
                               "unreadable_file": 1},
    "records_lost": 0, "requests_by_status": {"200": 37, "400": 1, "503": 6, "no_answer": 1},
    "bytes_sent": 812345, "events_per_second": 95.4, "duplicate_ids": 1, "files_read": 30, "dry_run": False,
    "by_event_type": BY_EVENT_TYPE, "by_segment_event": BY_SEGMENT_EVENT,
    "event_time": {"oldest": "2026-12-01T00:00:03+00:00", "newest": "2026-12-01T23:59:58+00:00"},
    "lag_seconds": {"p50": 1.2, "p95": 4.0, "max": 6.1},
    "request_seconds": {"p50": 0.021, "p95": 0.1, "p99": 0.2, "max": 0.31},
    "ledger": {"files_skipped": 3, "files_recorded": 27},
    "balanced": True,
    "inputs": {"currents_root": "s3://acme-currents/currents", "start": "2026-12-01T00", "end": "2026-12-02T00",
               "event_types": None, "by_event_time": False, "late_hours": None, "partitions": 24},
    "delivery": {"endpoint": "https://api.segment.io", "window_seconds": 3600, "max_batch_bytes": 475000,
                 "max_batch_events": 2500, "mapping": "classic", "include_anonymous_users": False,
                 "integrations": None, "message_id_namespace": None, "passthrough_fields": [],
                 "redact_fields": ["email_address"], "hash_fields": [], "max_retry_attempts": 8,
                 "max_retry_seconds": 600, "events_per_second_per_worker": 250.0, "max_requests_in_flight": 4},
    "dead_letter_output": "s3://acme-segment/dead-letters/2026-12-01", "dry_run_output": None,
    "ledger_output": "s3://acme-segment/ledger",
}
TIMELINE = [[0, 0, 0], [1, 60, 0], [2, 180, 1], [3, 290, 1], [4, 400, 1], [5, 400, 1], [6, 520, 3], [7, 650, 4],
            [8, 790, 6], [9, 905, 8], [10, 1020, 10], [11, 1110, 12], [12.3, 1173, 12]]
REPORT = {
    "title": "currents-to-segment run 20261207T050000Z-1a2b3c4d",
    "generated_at": "2026-12-07T05:00:12+00:00", "final": True, "refresh_seconds": None,
    "summary": SUMMARY, "timeline": TIMELINE, "samples": SAMPLES,
    "mapping": {"name": "classic", "left_out": {"users.messages.whatsapp.Send": 9, "users.messages.rcs.Send": 6},
                "current_sends": {"users.messages.whatsapp.Send": "WhatsApp Sent"}},
}
# What a run that stopped before reading anything leaves (a wrong write key found at the first request).
EARLY_FAILURE = {"title": "currents-to-segment run 20261207T050000Z-00000000",
                 "generated_at": "2026-12-07T05:00:01+00:00", "final": True,
                 "summary": {"run_id": "20261207T050000Z-00000000", "exit_code": 1, "outcome": "refused_by_segment"}}
HOSTILE = "<script>alert('x')</script>"
HOSTILE_IMG = '"><img src="http://evil.example/x.png" onerror="alert(1)">'


def _hostile_report():
    report = copy.deepcopy(REPORT)
    summary = report["summary"]
    summary["by_event_type"][HOSTILE] = {"read": 1, "dropped_no_external_id": 0, "unsupported_event_type": 1,
                                         "sent": 0, "dead_lettered": 0}
    summary["by_segment_event"][HOSTILE_IMG] = 1
    summary["dead_letters_by_reason"][HOSTILE] = 1
    summary["requests_by_status"][HOSTILE_IMG] = 1
    summary["run_id"] = HOSTILE
    summary["delivery"]["mapping"] = HOSTILE_IMG
    summary["inputs"] = {"input": [HOSTILE_IMG, "https://evil.example/a.avro"]}
    summary["ledger_output"] = HOSTILE
    report["title"] = HOSTILE
    report["samples"].append({"reason": HOSTILE, "event_type": HOSTILE_IMG, "http_status": HOSTILE,
                              "message": {"event": HOSTILE, "properties": {"url": "https://evil.example/</pre>"}}})
    report["mapping"] = {"name": HOSTILE, "left_out": {HOSTILE: 1}, "current_sends": {HOSTILE: HOSTILE_IMG}}
    return report


# --- without a browser ------------------------------------------------------------------------------

def test_render_is_a_complete_self_contained_page():
    page = report_page.render(REPORT)
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert 'id="sent-total">1,173<' in page
    _assert_no_outside_resources(page)


class _Tags(html.parser.HTMLParser):
    """Every start tag of a page, with its attributes, and the text of its <style> elements."""

    def __init__(self, page):
        super().__init__(convert_charrefs=True)
        self.tags, self.styles, self._in_style = [], [], False
        self.feed(page)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.styles.append(data)


def _assert_no_outside_resources(page):
    """Nothing of the page points outside it: no script, link, image or frame; no src; href only to a fragment; no
    URL in any attribute or style."""
    tags = _Tags(page)
    names = {tag for tag, _ in tags.tags}
    assert not names & {"script", "link", "img", "iframe", "object", "embed", "image", "use", "video", "audio",
                        "source", "base", "form", "frame"}, names
    for tag, attrs in tags.tags:
        assert not set(attrs) & {"src", "srcset", "action", "formaction", "poster", "xlink:href", "xmlns"}, (tag, attrs)
        assert all(value.startswith("#") for name, value in attrs.items() if name == "href"), (tag, attrs)
        assert not any(re.search(r"(https?:|//|url\()", value or "", re.I) for value in attrs.values()), (tag, attrs)
        assert not attrs.get("http-equiv") or attrs["http-equiv"] == "refresh" and attrs["content"].isdigit()
    css = "".join(tags.styles).lower()
    assert "url(" not in css and "@import" not in css and "@font-face" not in css
    assert css.count("{") == css.count("}") > 20


def test_everything_from_the_data_is_escaped():
    page = report_page.render(_hostile_report())
    _assert_no_outside_resources(page)
    assert "<script" not in page.lower() and "<img" not in page.lower()  # as text: &lt;img
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "&quot;&gt;&lt;img src=&quot;http://evil.example/x.png&quot;" in page
    assert "https://evil.example/&lt;/pre&gt;" in page  # a letter cannot end its own <pre>
    assert page.count("<pre>") == page.count("</pre>") == len(SAMPLES) + 1


def test_a_long_value_of_a_sample_letter_is_cut():
    page = report_page.render(REPORT)
    assert "x" * 2000 + "… [3,000 more characters]" in page
    assert "x" * 2001 not in page


def test_numbers_have_thousands_separators_and_the_balance_is_shown():
    page = report_page.render(REPORT)
    assert "1,400 read = 200 no external id + 15 unsupported + 1,173 sent + 12 dead-lettered" in page
    assert "Balanced: every event read is accounted for." in page
    assert "812.3 kB" in page and "812,345 bytes" in page


def test_the_outcome_colour_follows_the_exit_code():
    def header_class(exit_code):
        report = copy.deepcopy(REPORT)
        report["summary"]["exit_code"] = exit_code
        return re.search(r'<header class="card (\w+)"', report_page.render(report)).group(1)
    assert [header_class(code) for code in (0, 2, 130, 3, 4, 5)] == ["ok", "warn", "warn", "bad", "bad", "bad"]


def test_a_watch_page_refreshes_itself():
    report = dict(REPORT, final=False, refresh_seconds=300)
    report["summary"] = {key: value for key, value in SUMMARY.items()
                         if key not in ("exit_code", "outcome", "ended_at")}
    page = report_page.render(report)
    assert '<meta http-equiv="refresh" content="300">' in page
    assert "running, refreshed every 5 min" in page
    assert 'http-equiv="refresh"' not in report_page.render(REPORT)


def test_the_mapping_hint_counts_the_events_the_current_mapping_would_send():
    page = report_page.render(REPORT)
    assert "Run with <code>--mapping current</code> to send <b>9</b> more events of these types (1 type)." in page
    report = copy.deepcopy(REPORT)
    report["mapping"]["current_sends"] = {}
    assert "--mapping current</code> to send" not in report_page.render(report)


def test_render_needs_no_beam():
    code = ("import sys; from currents_to_segment.pipeline import report_page; "
            "assert not [m for m in sys.modules if m.startswith('apache_beam')], 'Beam imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_the_optional_outcomes_get_their_columns_and_terms():
    report = copy.deepcopy(REPORT)
    summary = report["summary"]
    summary.update(dropped_no_id=0, outside_time_range=0, held_back=0, files_held_back=0, dry_run=True)
    for row in summary["by_event_type"].values():
        row.update(dropped_no_id=0, outside_time_range=0, held_back=0)
    page = report_page.render(report)
    head = re.search(r'<table id="event-type-table"><thead>(.*?)</thead>', page).group(1)
    assert re.findall(r"<th>(.*?)</th>", head) == ["event type", "read", "no external id", "no id", "unsupported",
                                                   "outside range", "would send", "dead-lettered", "held back"]
    assert ("1,400 read = 200 no external id + 0 no id + 15 unsupported + 0 outside range + 1,173 would send + "
            "12 dead-lettered + 0 held back") in page
    assert "dry run: nothing sent" in page


@pytest.mark.parametrize("report", [
    {}, None, {"summary": None}, EARLY_FAILURE,
    {"summary": {"event_time": {"oldest": None, "newest": None}, "lag_seconds": {"p50": None, "p95": None, "max": None},
                 "request_seconds": None, "by_event_type": {"a": {"read": None}}, "requests_by_status": {},
                 "ledger": {}, "inputs": None, "delivery": None}, "timeline": [[0, 0, 0]], "samples": [None, {}],
     "mapping": {"left_out": None}},
    {"summary": SUMMARY, "timeline": "not a list", "samples": "not a list", "mapping": None, "final": False,
     "refresh_seconds": None},
], ids=["empty", "none", "no-summary", "early-failure", "nones", "bad-shapes"])
def test_a_report_with_little_in_it_still_renders(report):
    page = report_page.render(report)
    assert page.rstrip().endswith("</html>")
    assert 'id="sent-total"' in page and 'id="timeline-svg"' in page
    _assert_no_outside_resources(page)


@pytest.mark.parametrize("timeline, polylines", [([], 0), ([[0, 0, 0]], 2), ([[4, 10, 1]], 2), (TIMELINE, 2),
                                                   ([[t, t * 1000, t] for t in range(300)], 2)])
def test_the_timeline_takes_any_number_of_points(timeline, polylines):
    page = report_page.render(dict(REPORT, timeline=timeline))
    svg = re.search(r"<svg.*?</svg>", page, re.S).group(0)
    assert svg.count("<polyline") == polylines
    assert "time since the start of the run" in svg and "events (cumulative)" in svg
    assert "nan" not in svg.lower() and "inf" not in svg.lower()
    if not timeline:
        assert "no progress recorded yet" in svg


# --- in a browser -----------------------------------------------------------------------------------

_BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _chromium():
    """The browser's path, or skip (fail with CHROMIUM_REQUIRED=1) saying why there is none."""
    path = os.environ.get("CHROMIUM") or next(filter(None, map(shutil.which, _BROWSER_NAMES)), None)
    if path and os.access(path, os.X_OK):
        return path
    reason = (f"no headless Chromium: CHROMIUM={os.environ['CHROMIUM']!r} is not an executable"
              if os.environ.get("CHROMIUM") else
              "no headless Chromium (CHROMIUM unset and none of chromium, chromium-browser, google-chrome on PATH; "
              "scripts/setup_chromium.sh installs it)")
    if os.environ.get("CHROMIUM_REQUIRED") == "1":
        pytest.fail(f"{reason}, and CHROMIUM_REQUIRED=1")
    pytest.skip(reason)


def _chromium_command(chromium, profile, *args):
    return [chromium, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--disable-extensions",
            "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}", *args]


class _Node:
    def __init__(self, tag, attrs):
        self.tag, self.attrs, self.children, self.parts = tag, dict(attrs), [], []

    def text(self):
        return "".join(part if isinstance(part, str) else part.text() for part in self.parts)

    def iter(self, tag=None):
        for child in self.children:
            if tag is None or child.tag == tag:
                yield child
            yield from child.iter(tag)

    def by_id(self, ident):
        return next((node for node in self.iter() if node.attrs.get("id") == ident), None)


class _DomBuilder(html.parser.HTMLParser):
    """The DOM Chromium dumped, as a tree of _Node (its serialization closes every non-void element)."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = _Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        node = _Node(tag, attrs)
        self.stack[-1].children.append(node)
        self.stack[-1].parts.append(node)
        if tag not in self.VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag, attrs):
        node = _Node(tag, attrs)
        self.stack[-1].children.append(node)
        self.stack[-1].parts.append(node)

    def handle_endtag(self, tag):
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data):
        self.stack[-1].parts.append(data)


def _dom(text):
    builder = _DomBuilder()
    builder.feed(text)
    builder.close()
    return builder.root


def _first_cells(table):
    return [" ".join(row.children[0].text().split()) for row in table.iter("tr") if row.children
            and row.children[0].tag == "td"]


@pytest.fixture(scope="module")
def chromium():
    return _chromium()


@pytest.fixture(scope="module")
def pages(chromium, tmp_path_factory):
    """{name: the DOM Chromium built of its page} of the realistic report, the hostile one and the early failure,
    and "screenshot": the path of a PNG of the realistic one (1280 x 900). The four browsers run at once."""
    folder = tmp_path_factory.mktemp("report_page")
    runs = {}
    for name, report in (("realistic", REPORT), ("hostile", _hostile_report()), ("early", EARLY_FAILURE)):
        path = folder / f"{name}.html"
        path.write_text(report_page.render(report), encoding="utf-8")
        runs[name] = ["--dump-dom", path.as_uri()]
    screenshot = folder / "realistic.png"
    runs["screenshot"] = [f"--screenshot={screenshot}", "--window-size=1280,900", (folder / "realistic.html").as_uri()]
    processes = {name: subprocess.Popen(_chromium_command(chromium, folder / f"profile-{name}", *args),
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for name, args in runs.items()}
    result = {}
    try:
        for name, process in processes.items():
            out, err = process.communicate(timeout=60)
            assert process.returncode == 0, f"chromium {' '.join(runs[name])}: exit {process.returncode}\n{err[-2000:]}"
            result[name] = screenshot if name == "screenshot" else _dom(out)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    return result


def test_browser_shows_the_sent_total(pages):
    assert pages["realistic"].by_id("sent-total").text().strip() == "1,173"


def test_browser_shows_a_row_per_currents_event_type(pages):
    table = pages["realistic"].by_id("event-type-table")
    assert _first_cells(table) == ["users.behaviors.Uninstall", "users.messages.email.Click",
                                   "users.messages.email.Open", "users.messages.email.Send",
                                   "users.messages.inappmessage.Impression",
                                   "users.messages.pushnotification.Send", "users.messages.rcs.Send",
                                   "users.messages.whatsapp.Send", "total"]
    headers = [" ".join(th.text().split()) for th in table.iter("th")]
    assert headers == ["event type", "read", "no external id", "unsupported", "sent", "dead-lettered"]
    rows = {" ".join(row.children[0].text().split()): [cell.text() for cell in row.children[1:]]
            for row in table.iter("tr") if row.children and row.children[0].tag == "td"}
    assert rows["users.messages.email.Send"] == ["400", "40", "0", "355", "5"]
    assert rows["total"] == ["1,400", "200", "15", "1,173", "12"]


def test_browser_shows_the_segment_events(pages):
    table = pages["realistic"].by_id("segment-event-table")
    assert sorted(_first_cells(table)) == ["Application Uninstalled", "Email Link Clicked", "Email Opened",
                                           "Email Sent", "In-App Message Viewed", "Push Notification Sent"]
    assert _first_cells(table)[0] == "Email Sent"  # the most sent first


def test_browser_shows_dead_letters_requests_and_a_sample_of_each(pages):
    dom = pages["realistic"]
    assert _first_cells(dom.by_id("reason-table")) == ["event_too_large", "rejected_by_segment", "retries_exhausted",
                                                       "unreadable_file"]
    assert _first_cells(dom.by_id("status-table")) == ["200", "400", "503", "no_answer"]
    samples = [node for node in dom.iter("details") if "sample" in node.attrs.get("class", "")]
    assert [[span.text() for span in node.children[0].children] for node in samples] == [
        ["event_too_large", "no HTTP status", "users.messages.email.Send"],
        ["rejected_by_segment", "HTTP 400", "users.messages.email.Open"],
        ["retries_exhausted", "HTTP 503", "users.messages.pushnotification.Send"],
        ["unreadable_file", "no HTTP status"]]
    assert '"event": "Push Notification Sent"' in samples[2].text()


def test_browser_draws_the_timeline(pages):
    svg = pages["realistic"].by_id("timeline-svg")
    polylines = list(svg.iter("polyline"))
    assert [line.attrs["class"] for line in polylines] == ["sent", "failed"]
    assert len(polylines[0].attrs["points"].split()) == len(TIMELINE)
    labels = [text.text() for text in svg.iter("text")]
    assert "time since the start of the run" in labels and "events (cumulative)" in labels
    assert labels[:6] == ["0", "250", "500", "750", "1,000", "1,250"]  # the count axis


def test_browser_shows_latency_event_time_ledger_and_mapping(pages):
    dom = pages["realistic"]
    latency = [[" ".join(cell.text().split()) for cell in row.children]
               for row in dom.by_id("latency-table").iter("tr")]
    assert latency == [["", "p50", "p95", "p99", "max"], ["Segment request", "21 ms", "100 ms", "200 ms", "310 ms"],
                       ["file landed → last event accepted", "1.2 s", "4.0 s", "—", "6.1 s"]]
    event_time = " ".join(dom.by_id("event-time").text().split())
    assert "2026-12-01 00:00:03 UTC" in event_time and "2026-12-01 23:59:58 UTC" in event_time
    ledger = " ".join(dom.by_id("ledger").text().split())
    assert "s3://acme-segment/ledger" in ledger and "files skipped (already sent)3" in ledger
    assert dom.by_id("mapping-name").text() == "classic"
    assert " ".join(dom.by_id("mapping-hint").text().split()) == \
        "Run with --mapping current to send 9 more events of these types (1 type)."


def test_browser_shows_hostile_names_as_text(pages):
    dom = pages["hostile"]
    assert not list(dom.iter("script")) and not list(dom.iter("img"))
    assert HOSTILE in _first_cells(dom.by_id("event-type-table"))
    assert HOSTILE_IMG in _first_cells(dom.by_id("segment-event-table"))
    assert HOSTILE in dom.by_id("mapping").text()


def test_browser_shows_an_early_failure(pages):
    dom = pages["early"]
    assert dom.by_id("outcome").text() == "refused by segment · exit 1"
    assert dom.by_id("sent-total").text() == "—"
    assert not list(dom.by_id("timeline-svg").iter("polyline"))


def _png_pixels(data, max_rows=None):
    """(width, height, rows of (r, g, b)) of an 8-bit, non-interlaced RGB or RGBA PNG: its first max_rows rows
    (decoding is pure Python: about a second a million pixels)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:8]
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, header
    channels = 3 if colour == 2 else 4
    raw, stride, previous, rows = zlib.decompress(idat), width * channels, bytearray(width * channels), []
    for y in range(min(height, max_rows or height)):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up, corner = previous[i], previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 255
            elif kind == 2:
                line[i] = (line[i] + up) & 255
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 255
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 255
        rows.append([tuple(line[i:i + 3]) for i in range(0, stride, channels)])
        previous = line
    return width, height, rows


def test_browser_screenshot_shows_the_page(pages):
    width, height, rows = _png_pixels(pages["screenshot"].read_bytes(), max_rows=480)  # the header and the totals
    assert (width, height) == (1280, 900)
    colours = collections.Counter(pixel for row in rows for pixel in row)
    total = sum(colours.values())

    def share(rgb, tolerance=12):
        near = (n for colour, n in colours.items() if all(abs(a - b) <= tolerance for a, b in zip(colour, rgb)))
        return sum(near) / total
    assert share((0xf5, 0xf6, 0xf8), 2) > 0.02  # the page's background
    assert share((0xff, 0xff, 0xff), 2) > 0.3  # its cards
    assert share((0x25, 0x63, 0xeb)) > 0.0003  # blue: the sent total
    assert share((0xb4, 0x53, 0x09)) > 0.0003  # amber: exit 2's badge and the header's edge
    assert len(colours) > 50  # text, not a blank page
