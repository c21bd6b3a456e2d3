"""Segment's HTTP tracking API, as far as /v1/batch goes: its limits, how a request body is framed from events
already serialized (so an event is never serialized twice and request sizes are known exactly), how bodies are
cut into requests, what an answer means (retry, split, stop the run: a 2xx whose body is not Segment's JSON too)
and what a send reports.

Knows nothing of Beam, of Currents or of the command line; imports no Beam module.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from http import HTTPStatus
from typing import Sequence

BATCH_PATH = "/v1/batch"
MAX_REQUEST_BYTES = 500_000
# Requests are cut below Segment's 500 KB, with the margin Segment's own libraries aim for.
DEFAULT_MAX_REQUEST_BYTES = 475_000
MAX_EVENT_BYTES = 32_000
MAX_BATCH_EVENTS = 2_500
US_ENDPOINT = "https://api.segment.io"
EU_ENDPOINT = "https://events.eu1.segmentapis.com"

# What becomes of an event that is not delivered: too large to be sent, refused by Segment (400/413), or not
# accepted before the retry budget was spent (Segment unreachable, 429, 5xx).
EVENT_TOO_LARGE = "event_too_large"
REJECTED_BY_SEGMENT = "rejected_by_segment"
RETRIES_EXHAUSTED = "retries_exhausted"
# Not a dead letter: in a watch that gave up on Segment (an outage too long, or a drain during one), events not
# delivered are held back: their file is left unfinished, for the next watch to read again.
HELD_BACK = "held_back"
SPLIT_STATUSES = frozenset({400, 413})  # a request refused for some of its events: split to find them

def format_sent_at(now: datetime) -> str:
    """Format an aware datetime as ISO-8601 UTC with milliseconds and 'Z', e.g. "2026-11-28T12:00:00.000Z"."""
    utc = now.astimezone(timezone.utc)
    return f"{utc:%Y-%m-%dT%H:%M:%S}.{utc.microsecond // 1000:03d}Z"


def request_body(payloads: Sequence[bytes], write_key: str, sent_at: str) -> bytes:
    """Assemble a /v1/batch body from already-serialized events, without re-serializing them."""
    return (b'{"batch":[' + b",".join(payloads) + b'],"sentAt":"' + sent_at.encode("ascii")
            + b'","writeKey":' + json.dumps(write_key).encode("ascii") + b"}")


def envelope_bytes(write_key: str) -> int:
    """Size of a body with no events; n >= 1 payloads make it envelope + sum(len(p)) + (n - 1) bytes."""
    return len(request_body([], write_key, format_sent_at(datetime(2000, 1, 1, tzinfo=timezone.utc))))


def request_bytes_problem(max_bytes: int, write_key: str) -> str | None:
    """Why max_bytes cannot bound requests sent with this key (it must leave room for one largest event
    and stay within Segment's limit), or None."""
    smallest = MAX_EVENT_BYTES + envelope_bytes(write_key)
    if smallest <= max_bytes <= MAX_REQUEST_BYTES:
        return None
    return f"must be between {smallest} (one largest event) and {MAX_REQUEST_BYTES}, got {max_bytes}"


def plan_batches(sizes, *, max_bytes, max_events, envelope):
    """Cut a sequence of payload sizes into consecutive ranges, each a request within both limits.

    A request of payloads p1..pn is `envelope + sum(len(p)) + (n - 1)` bytes. A payload too big to
    share a request with anything is given one of its own.
    """
    batches = []
    start, body = 0, envelope
    for index, size in enumerate(sizes):
        count = index - start
        grown = body + size + (1 if count else 0)
        if count and (grown > max_bytes or count >= max_events):
            batches.append(range(start, index))
            start, grown = index, envelope + size
        body = grown
    if start < len(sizes):
        batches.append(range(start, len(sizes)))
    return batches


class SegmentConfigError(Exception):
    """Segment refused the request in a way retrying cannot fix (401/403/404/3xx), or the endpoint answered 2xx with a
    body that is not Segment's (see not_segments_answer): the run must stop."""


@dataclass(frozen=True)
class Rejection:
    """An event that was not delivered: reason is "event_too_large", "rejected_by_segment", "retries_exhausted" or
    "held_back" (not dead-lettered: see HELD_BACK)."""

    index: int
    reason: str
    status: int | None
    response_excerpt: str | None


@dataclass
class SendReport:
    """Outcome of one send(): every payload index appears exactly once in accepted or rejected."""

    accepted: list[int]
    rejected: list[Rejection]
    requests: int
    retries: int


@dataclass(frozen=True)
class Attempt:
    """What an observer is told after each HTTP attempt: the status (None: network error or no answer), a short
    detail, whether the request will be retried, how many attempts it has had, and when this one started (UNIX
    seconds: a hang is seen only when the attempt times out, and began that long before)."""

    status: int | None
    detail: str
    retrying: bool
    attempt: int
    started: float = 0.0
    timed_out: bool = False  # no answer (or no connection) within the timeout: Segment hangs

    @property
    def failed(self) -> bool:
        """True when the attempt was not answered with a 2xx."""
        return self.status is None or not 200 <= self.status < 300

    @property
    def transient(self) -> bool:
        """True when the failure is Segment's (unreachable, 429, 5xx): what the client retries."""
        return is_transient(self.status)

    def describe(self) -> str:
        """What the attempt got, e.g. "503 Service Unavailable" or "ConnectionError: [Errno 111] ..."."""
        return f"{self.status} {phrase(self.status)}" if self.status is not None else self.detail or "no answer"



def is_transient(status: int | None) -> bool:
    return status is None or status in (408, 410, 429, 460) or (500 <= status < 600 and status not in (501, 505))


def config_error(status: int, url: str) -> SegmentConfigError | None:
    """The error to stop the run with, or None when the status is not a configuration error."""
    causes = {
        401: "the write key is wrong or belongs to another region (see --segment_write_key, --segment_region)",
        403: "the write key is not allowed to send to this source (see --segment_write_key)",
        404: "the endpoint is wrong: check the region (see --segment_region)",
    }
    if status in causes:
        cause = causes[status]
    elif 300 <= status < 400:
        cause = "the endpoint redirects, so it is not Segment's API: check the region (see --segment_region)"
    else:
        return None
    return SegmentConfigError(f"Segment answered {status} {phrase(status)} for {url}: {cause}.")


_BODY_EXCERPT_CHARS = 80


def not_segments_answer(status: int, text: str, url: str) -> SegmentConfigError | None:
    """For a 2xx answer: the error to stop the run with when its body is not Segment's, else None. Segment answers
    `{"success": true}`: a JSON object is taken, unless its "success" is false; an empty body, an HTML page, a body
    that is not JSON, or JSON that is not an object, is the answer of something else (a proxy, a wrong
    --segment_endpoint), which did not deliver the events."""
    try:
        document = json.loads(text)
    except ValueError:
        document = None
    if isinstance(document, dict) and document.get("success") is not False:
        return None
    flat = " ".join(text.split())
    excerpt = repr(flat[:_BODY_EXCERPT_CHARS] + ("..." if len(flat) > _BODY_EXCERPT_CHARS else "")) if flat \
        else "an empty body"
    return SegmentConfigError(f"Segment answered {status} {phrase(status)} for {url} with a body that is not "
                              f"Segment's ({excerpt}): the endpoint is not Segment's API (a proxy or a wrong "
                              f"--segment_endpoint).")


def phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "(unknown status)"
