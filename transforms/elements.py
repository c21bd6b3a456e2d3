"""What flows between the stages: items, each about one file and one event type (but requests), built and read
through the functions here.

Every stage after the read takes a stream of items, does its work on the kinds it knows and passes every other
item on unchanged, so that a file's whole story travels down one chain: from its records to Segment's answer,
its dead letters and the ledger. Items are plain tuples whose first field is their kind, holding plain values
(str, int, bytes, lists, dicts), so that Beam encodes them without pickling anything; a stage works on a whole
block of records at a time, never on one event per element.

    RECORDS    (RECORDS, event type, source file, records)      decoded records of one block, not yet mapped
    CALLS      (CALLS, event type, source file, calls)          their track calls: [(time, message id, payload)]
    REQUEST    (REQUEST, window, calls)                         one request's calls:
                                                                [(event type, source file, message id, payload)]
    LETTER     (LETTER, event type, source file, letter)        a dead letter (a dict, see `letter`)
    HANDLED    (HANDLED, event type, source file, units)        units of a file accounted for: dropped and
                                                                counted, delivered, or durably dead-lettered
    FILE_READ  (FILE_READ, event type, file, units)             a file read to its end: (path, size, modified)
                                                                and the units later stages must account for
    TICK       (TICK,)                                          time to flush: the route sends one down every
                                                                chain every --flush_seconds, so that a chain
                                                                that gets no more work still sends what it holds

Every event read ends exactly once: dropped, not supported, outside the time range, delivered or dead-lettered;
and so does every unreadable part of a file (its letter). The stage that ends a unit says so with a HANDLED
item (the dead-letter writer once the letter is durably written); the ledger records a file when the units of
its FILE_READ are all handled.
"""
import json

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindows, TimestampCombiner

RECORDS, CALLS, REQUEST, LETTER, HANDLED, FILE_READ, TICK = (
    "records", "calls", "request", "letter", "handled", "file", "tick")

# Dead-letter reasons: events Segment must not get (too large) or did not take (rejected, unreachable), records
# that could not be mapped, and files or parts of files that could not be decoded.
EVENT_TOO_LARGE = "event_too_large"
REJECTED_BY_SEGMENT = "rejected_by_segment"
RETRIES_EXHAUSTED = "retries_exhausted"
INVALID_RECORD = "invalid_record"
UNREADABLE_FILE = "unreadable_file"
REASONS = (EVENT_TOO_LARGE, REJECTED_BY_SEGMENT, RETRIES_EXHAUSTED, INVALID_RECORD, UNREADABLE_FILE)
_ERROR_CHARS = 500


def records(event_type, source_file, block):
    """The RECORDS item of a block of decoded records (a list of dicts)."""
    return RECORDS, event_type, source_file, block


def calls(event_type, source_file, block):
    """The CALLS item of a block's track calls: (time, message id, serialized payload) each."""
    return CALLS, event_type, source_file, block


def request(window, block):
    """The REQUEST item of one request's calls: (event type, source file, message id, payload) each."""
    return REQUEST, window, block


def handled(event_type, source_file, units=1):
    """The HANDLED item saying that `units` of a file's units are accounted for."""
    return HANDLED, event_type, source_file, units


def file_read(event_type, path, size, modified, units):
    """The FILE_READ item of a file read to its end, with the units later stages must account for."""
    return FILE_READ, event_type, (path, size, modified), units


def letter_item(letter_):
    """The LETTER item of a dead letter."""
    return LETTER, letter_["event_type"], letter_["source_file"], letter_


def tick():
    """The TICK item."""
    return (TICK,)


def kind(item):
    """What an item is (RECORDS, CALLS, ...)."""
    return item[0]


def event_type_of(item):
    """The event type an item is about (None for a REQUEST, which may hold several, and a TICK; None when
    unknown)."""
    return None if item[0] in (REQUEST, TICK) else item[1]


# --- dead letters ----------------------------------------------------------------------------------------------

def letter(reason, event_type, source_file, **fields):
    """A dead letter, with the same keys every time: reason, event_type, source_file, message_id, http_status,
    response_excerpt, error, message (the Segment call as it would have been sent) and record (the Currents
    record, for records that could not be mapped); those of a file's unreadable part add
    events_read_before_error, byte_range and records_lost."""
    found = {
        "reason": reason, "event_type": event_type, "source_file": source_file, "message_id": None,
        "http_status": None, "response_excerpt": None, "error": None, "message": None, "record": None,
    }
    found.update(fields)
    return found


def describe(error):
    """An exception as "Type: message", or a text as it is, cut to _ERROR_CHARS."""
    return (error if isinstance(error, str) else f"{type(error).__name__}: {error}")[:_ERROR_CHARS]


def call_letter(event_type, source_file, message_id, payload, reason, *, http_status=None, response_excerpt=None,
                error=None):
    """Dead letter of a track call that was not accepted (its serialized payload)."""
    return letter(reason, event_type, source_file, message_id=message_id, http_status=http_status,
                  response_excerpt=response_excerpt, error=error, message=json.loads(payload))


def record_letter(event_type, source_file, record, reason, error):
    """Dead letter of a record that could not be decoded or mapped (error: an exception or a text)."""
    return letter(reason, event_type, source_file, error=describe(error), record=dict(record))


def file_letter(path, event_type, error, events_read, byte_range, records_lost=None):
    """Dead letter of a part of a file, [start, end) in bytes, that could not be read."""
    return letter(UNREADABLE_FILE, event_type, path, error=describe(error), events_read_before_error=events_read,
                  byte_range=list(byte_range), records_lost=records_lost)


# --- stages ----------------------------------------------------------------------------------------------------

class ItemFn(beam.DoFn):
    """A stage's DoFn over items: `handle(item)` for the kinds in KINDS, `tick()` on a TICK (for a stage that
    holds things back, to make them final when its flush is due), every other item passed on unchanged."""

    KINDS = ()

    def handle(self, item):
        raise NotImplementedError

    def tick(self):
        """What the stage makes final on a TICK (nothing, by default)."""
        return ()

    def process(self, item):
        kind_ = item[0]
        if kind_ in self.KINDS:
            yield from self.handle(item)
        else:
            if kind_ == TICK:
                yield from self.tick()
            yield item


def at_earliest_timestamp():
    """The global window, with a grouping's output at its earliest input's timestamp (not at the end of the
    window, Beam's default): file paths grouped before the read keep the start-of-time timestamp, so that no
    later stage ever sees late data."""
    return beam.WindowInto(GlobalWindows(), timestamp_combiner=TimestampCombiner.OUTPUT_AT_EARLIEST)
