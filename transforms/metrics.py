"""Beam counters of the pipeline: their names, and this process's tally of what its DoFns counted.

The summary of a finished run is built from these Beam counters, so that it is right on every runner,
including ones that run DoFns in other processes or machines. Each increment is also added to this
process's own tally (`process_totals`): progress lines are printed from it; when the workers ran in
this process it is the summary's source; and when an in-process runner fails, it is all that is left to
tell what the run did before it stopped. Worker processes on the launcher's machine (multi-processing)
also keep their tally in a file of the run's folder (`write_tally`, every second), which is what is left
to tell what they did when the run fails. pipeline.summary.run_counters chooses among these sources.
"""
import collections
import json
import os
import threading

from apache_beam.metrics import Metrics

from currents_to_segment.transforms import delivery, senders
from currents_to_segment.transforms.currents import records
from currents_to_segment.transforms.segment import api as segment_api, pacing

NAMESPACE = "currents_to_segment"

# The counters' names are those the Beam-free parts count under (one definition each); here they are in one list.
# Per-event-type counters are named "<metric>:<event type>".
READ = delivery.READ
DROPPED_NO_EXTERNAL_ID = records.DROPPED_NO_EXTERNAL_ID
DROPPED_NO_ID = records.DROPPED_NO_ID  # with anonymous users sent: neither an external id nor a Braze user id
UNSUPPORTED_EVENT_TYPE = delivery.UNSUPPORTED_EVENT_TYPE
SENT = senders.SENT
DEAD_LETTERED = delivery.DEAD_LETTERED
OUTSIDE_TIME_RANGE = records.OUTSIDE_TIME_RANGE  # only with --by_event_time
# Only in a watch: read, then neither sent nor dead-lettered, because the watch gave up on Segment (their files are
# not recorded in the ledger: the next watch reads them again).
HELD_BACK = segment_api.HELD_BACK
# What each event read ends as, exactly one of these: the summary balances when they add up to READ.
OUTCOMES = (DROPPED_NO_EXTERNAL_ID, DROPPED_NO_ID, UNSUPPORTED_EVENT_TYPE, OUTSIDE_TIME_RANGE, SENT, DEAD_LETTERED,
            HELD_BACK)

# Plain counters.
FILES_LISTED = "files_listed"
FILES_READ = delivery.FILES_READ
FILES_OF_OTHER_TYPES = "files_of_other_types"  # matched, but of a type --event_types leaves out: not read
UNREADABLE_FILES = delivery.UNREADABLE_FILES
REQUESTS = senders.REQUESTS  # HTTP attempts, retries included
RETRIES = senders.RETRIES
REQUESTS_BY_STATUS = senders.REQUESTS_BY_STATUS  # "requests_by_status:<HTTP status, or no_answer>"
BYTES_SENT = senders.BYTES_SENT
RETRIES_EXHAUSTED = segment_api.RETRIES_EXHAUSTED  # events dead-lettered because Segment stayed unreachable
REJECTED_BY_SEGMENT = segment_api.REJECTED_BY_SEGMENT  # events Segment answered 400/413 for
# Dead letters as the stages make them, before they are written (for progress lines; the summary counts them
# once their file is complete, under DEAD_LETTERED and UNREADABLE_FILES).
DEAD_LETTERS_MADE = delivery.DEAD_LETTERS_MADE
# Letters written (their file complete), by reason: "dead_letters:<reason>"; and the records of the unreadable parts
# of files, as far as their blocks tell (never read, so in no event count: their letters account for them).
LETTERS_BY_REASON = delivery.LETTERS
RECORDS_LOST = delivery.RECORDS_LOST
# Seconds the requests to Segment were held back (pacing, Retry-After, retry backoffs), under the name Beam's own IOs
# give the time they are throttled, which Dataflow's autoscaler reads.
THROTTLING_SECONDS = "cumulativeThrottlingSeconds"
DUPLICATE_IDS = delivery.DUPLICATE_IDS  # events whose messageId another event of the same bundle has
LEDGER_FILES_SKIPPED = "ledger_files_skipped"
LEDGER_FILES_RECORDED = "ledger_files_recorded"
LEDGER_FILES_UNBALANCED = delivery.FILES_UNBALANCED  # read, but not every event accounted for: not recorded
LEDGER_FILES_ELSEWHERE = "ledger_files_elsewhere"  # in the ledger for other destinations only: read and sent
# ... of which, sent to this endpoint and write key with other options shaping the calls, less than a day ago: the
# same messageIds, which Segment drops as duplicates for about a day.
LEDGER_FILES_RESENT_WITHIN_DEDUP = "ledger_files_resent_within_dedup"
# A watch that gave up on Segment: the files it left unfinished (read in part, or not read), and why it gave up
# (counted once by each delivery that saw it): Segment down for --max_outage_hours, or a drain during an outage.
FILES_HELD_BACK = delivery.FILES_HELD_BACK
OUTAGE_TOO_LONG = pacing.OUTAGE_TOO_LONG
DRAINED_IN_OUTAGE = pacing.DRAINED_IN_OUTAGE
LEDGER_MALFORMED = "ledger_malformed"  # per ledger file with lines that are not entries: "<name>:<file> line <n>"

_tally = collections.Counter()
_tally_lock = threading.Lock()


class _Counter:
    """A Beam counter that also adds to this process's tally."""

    def __init__(self, name):
        self._name = name
        self._counter = Metrics.counter(NAMESPACE, name)

    def inc(self, n=1):
        self._counter.inc(n)
        with _tally_lock:
            _tally[self._name] += n


def counter(name):
    """Return the pipeline's counter of that name."""
    return _Counter(name)


def beam_counter(name):
    """The Beam counter of that name, without this process's tally: for a DoFn that works in threads of its own,
    where Beam counters cannot be incremented, and tallies there (`add_to_tally`) as things happen."""
    return Metrics.counter(NAMESPACE, name)


def add_to_tally(name, n=1):
    """Add to this process's tally only, from any thread (see beam_counter)."""
    with _tally_lock:
        _tally[name] += n


def process_totals():
    """What the DoFns of this process have counted so far, as {counter name: value}."""
    with _tally_lock:
        return dict(_tally)


def reset_process_totals():
    """Start a new tally (a run in a process that ran one before)."""
    with _tally_lock:
        _tally.clear()


def write_tally(directory):
    """Write this process's tally to directory/tally-<pid>.json (whole, or not at all)."""
    path = os.path.join(directory, f"tally-{os.getpid()}.json")
    temporary = os.path.join(directory, f".tally-{os.getpid()}.json.tmp")
    with open(temporary, "w", encoding="utf-8") as stream:
        json.dump(process_totals(), stream)
    os.replace(temporary, path)


def read_tallies(directory):
    """The sum of the tallies the processes of a run left in a directory (see write_tally)."""
    total = collections.Counter()
    for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else ():
        if name.startswith("tally-") and name.endswith(".json"):
            try:
                with open(os.path.join(directory, name), encoding="utf-8") as stream:
                    total.update(json.load(stream))
            except (OSError, ValueError):
                continue  # a process that stopped while writing: its last tally is lost
    return dict(total)


def totals(counters, metric):
    """The sum over event types of one per-type metric."""
    prefix = metric + ":"
    return sum(value for name, value in counters.items() if name.startswith(prefix))
