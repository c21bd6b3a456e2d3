"""Dead letters: what the job could not send, with the reason, one JSON object a line.

Every letter has the same keys (see `letter`), so that letters can be filtered with one query and replayed later
(`python -m pipeline replay-dead-letters`). A letter the job writes says where its events were going
(`destination`: the endpoint and the write key's fingerprint, transforms.ledger.key_fingerprint, never the key;
null in a dry run), so that a replay sends it nowhere else. Knows nothing of Beam; imports no Beam module.
"""
import json

from currents_to_segment.transforms.segment.api import EVENT_TOO_LARGE, REJECTED_BY_SEGMENT, RETRIES_EXHAUSTED

# The reasons: events Segment must not get (too large) or did not take (refused, unreachable), records that
# could not be mapped, and files or parts of files that could not be read.
INVALID_RECORD = "invalid_record"
UNREADABLE_FILE = "unreadable_file"
REASONS = (EVENT_TOO_LARGE, REJECTED_BY_SEGMENT, RETRIES_EXHAUSTED, INVALID_RECORD, UNREADABLE_FILE)
_ERROR_CHARS = 500


def letter(reason, event_type, source_file, **fields):
    """A dead letter, with the same keys every time: reason, event_type, source_file, message_id, http_status,
    response_excerpt, error, message (the Segment call as it would have been sent), record (the Currents
    record, for records that could not be mapped) and destination (see `destination`; None until the writer
    stamps it, and in a dry run); those of a file's unreadable part add events_read_before_error, byte_range and
    records_lost."""
    found = {
        "reason": reason, "event_type": event_type, "source_file": source_file, "message_id": None,
        "http_status": None, "response_excerpt": None, "error": None, "message": None, "record": None,
        "destination": None,
    }
    found.update(fields)
    return found


def destination(endpoint, key_fingerprint):
    """A letter's `destination`: the Segment endpoint its events were sent to and the fingerprint of the write key
    (transforms.ledger.key_fingerprint; never the key)."""
    return {"endpoint": endpoint, "write_key": key_fingerprint}


def describe(error):
    """An exception as "Type: message", or a text as it is, cut to _ERROR_CHARS."""
    return (error if isinstance(error, str) else f"{type(error).__name__}: {error}")[:_ERROR_CHARS]


def call_letter(event_type, source_file, message_id, payload, reason, *, http_status=None, response_excerpt=None,
                error=None):
    """Dead letter of a track call that was not accepted (its serialized payload)."""
    return letter(reason, event_type, source_file, message_id=message_id, http_status=http_status,
                  response_excerpt=response_excerpt, error=error, message=json.loads(payload))


def record_letter(event_type, source_file, record, reason, error, protection=None):
    """Dead letter of a record that could not be decoded or mapped (error: an exception or a text). `protection`
    (a track_calls.RecordProtection, for --redact_fields and --hash_fields) leaves out or hashes the values the
    run would not have sent as they are."""
    kept = protection.protected(event_type, record) if protection is not None else dict(record)
    return letter(reason, event_type, source_file, error=describe(error), record=kept)


def file_letter(path, event_type, error, events_read, byte_range, records_lost=None):
    """Dead letter of a part of a file, [start, end) in bytes, that could not be read."""
    return letter(UNREADABLE_FILE, event_type, path, error=describe(error), events_read_before_error=events_read,
                  byte_range=list(byte_range), records_lost=records_lost)


def to_line(letter_):
    """The JSON line of a letter."""
    return json.dumps(letter_, ensure_ascii=False, default=repr)
