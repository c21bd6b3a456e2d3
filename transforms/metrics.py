"""Beam counters of the pipeline: their names, and this process's tally of what its DoFns counted.

The summary of a finished run is built from these Beam counters, so that it is right on every runner,
including ones that run DoFns in other processes or machines. Each increment is also added to this
process's own tally (`process_totals`): progress lines are printed from it; when the workers ran in
this process it is the summary's source; and when an in-process runner fails, it is all that is left to
tell what the run did before it stopped. Worker processes on the launcher's machine (multi-processing)
also keep their tally in a file of the run's folder (`write_tally`, every second), which is what is left
to tell what they did when the run fails. pipeline.summary.run_counters chooses among these sources.

Besides counters, a few values are observed one by one (`observe`): Beam distributions (count, sum, min, max; whole
numbers), and for the histograms among them (HISTOGRAMS) one counter per bucket, "<name>_le:<bound>" (not
cumulative), from which percentiles are estimated. In a tally they are the entries "<name>.count", "<name>.sum",
"<name>.min" and "<name>.max", which `merge` combines as what they are (a sum, a minimum, a maximum).
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


def namespace(step=None):
    """The Beam namespace of a step's counters: NAMESPACE, or "<NAMESPACE>.<step>" for those a step of each family
    counts under the same names (delivery, ledger). Flink names its counter of a Beam counter by namespace and name
    only, so without the step one family's count would stand for all of them there."""
    return NAMESPACE if step is None else f"{NAMESPACE}.{step}"


def is_ours(beam_namespace):
    """True for the Beam namespaces of this job's counters (see `namespace`)."""
    return beam_namespace == NAMESPACE or beam_namespace.startswith(NAMESPACE + ".")

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

# Values observed one by one (see `observe`), in whole units. Histograms have their buckets' upper bounds.
REQUEST_MS = senders.REQUEST_MS  # each HTTP attempt to Segment, from its start to its answer (or none)
DELIVERY_LAG_MS = delivery.DELIVERY_LAG_MS  # a file's landing (modification time) → its last event accepted
EVENT_TIME = delivery.EVENT_TIME  # the events' own time (UNIX seconds): its min and max per file
HISTOGRAMS = {
    REQUEST_MS: (5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000),
    DELIVERY_LAG_MS: (1_000, 2_000, 5_000, 10_000, 30_000, 60_000, 120_000, 300_000, 600_000, 1_800_000, 3_600_000,
                      7_200_000, 21_600_000, 86_400_000, 604_800_000),
}
_STATISTICS = ("count", "sum", "min", "max")
_COMBINE = {"min": min, "max": max}  # the other entries add up

_tally = collections.Counter()
_tally_lock = threading.Lock()


class _Counter:
    """A Beam counter that also adds to this process's tally."""

    def __init__(self, name, step=None):
        self._name = name
        self._counter = Metrics.counter(namespace(step), name)

    def inc(self, n=1):
        self._counter.inc(n)
        with _tally_lock:
            _tally[self._name] += n


def counter(name, step=None):
    """Return the pipeline's counter of that name (of a family's `step`: see `namespace`)."""
    return _Counter(name, step)


def bucket(name, value):
    """The counter of the histogram bucket a value falls in: "<name>_le:<bound>", or "<name>_le:inf"."""
    for bound in HISTOGRAMS[name]:
        if value <= bound:
            return f"{name}_le:{bound}"
    return f"{name}_le:inf"


def _tally_observation(name, value):
    """Add one observed value to the tally (with the lock held)."""
    count_key = name + ".count"
    if _tally[count_key]:
        _tally[name + ".min"] = min(_tally[name + ".min"], value)
        _tally[name + ".max"] = max(_tally[name + ".max"], value)
    else:
        _tally[name + ".min"] = _tally[name + ".max"] = value
    _tally[count_key] += 1
    _tally[name + ".sum"] += value
    if name in HISTOGRAMS:
        _tally[bucket(name, value)] += 1


def observe_in_tally(name, value):
    """Add a value observed (a whole number) to this process's tally only, from any thread (see beam_observer)."""
    with _tally_lock:
        _tally_observation(name, value)


class _Observer:
    """Beam's distribution of a name (and its histogram's bucket counters), for the DoFn's own thread."""

    def __init__(self, name, step=None):
        self._name, self._namespace = name, namespace(step)
        self._distribution = Metrics.distribution(self._namespace, name)
        self._buckets = {}

    def update(self, value):
        self._distribution.update(value)
        if self._name in HISTOGRAMS:
            key = bucket(self._name, value)
            counter_ = self._buckets.get(key)
            if counter_ is None:
                counter_ = self._buckets[key] = Metrics.counter(self._namespace, key)
            counter_.inc()


def beam_observer(name, step=None):
    """What gives observed values of that name to Beam, without the tally (see beam_counter)."""
    return _Observer(name, step)


def merge(tallies):
    """One tally of several processes' (or sources'): counters and sums add up, minimums and maximums are kept."""
    total = collections.Counter()
    for tally in tallies:
        for name, value in tally.items():
            combine = _COMBINE.get(name.rpartition(".")[2])
            if combine is not None and name in total:
                total[name] = combine(total[name], value)
            else:
                total[name] += value
    return total


def distribution(counters, name):
    """{count, sum, min, max} of the values observed under that name (count 0, the rest None, when none were)."""
    count = counters.get(name + ".count", 0)
    if not count:
        return {"count": 0, "sum": 0, "min": None, "max": None}
    return {statistic: counters.get(f"{name}.{statistic}", 0) for statistic in _STATISTICS}


def histogram(counters, name):
    """[(upper bound, values observed at most that), ...] of a histogram (cumulative, as Prometheus has it), the last
    bound float("inf")."""
    cumulative, found = 0, []
    for bound in (*HISTOGRAMS[name], float("inf")):
        cumulative += counters.get(f"{name}_le:{'inf' if bound == float('inf') else bound}", 0)
        found.append((bound, cumulative))
    return found


def quantile(counters, name, q):
    """The q-quantile (0..1) of a histogram's values, estimated as Prometheus's histogram_quantile does (linearly
    within the bucket it falls in), never beyond the smallest and largest value observed; None without values."""
    observed = distribution(counters, name)
    if not observed["count"]:
        return None
    buckets, rank = histogram(counters, name), q * observed["count"]
    lower, below = 0, 0
    for bound, cumulative in buckets:
        if cumulative >= rank and cumulative > below:
            upper = observed["max"] if bound == float("inf") else bound
            estimate = lower + (upper - lower) * (rank - below) / (cumulative - below)
            return min(max(estimate, observed["min"]), observed["max"])
        lower, below = bound, cumulative
    return observed["max"]


def beam_counter(name, step=None):
    """The Beam counter of that name, without this process's tally: for a DoFn that works in threads of its own,
    where Beam counters cannot be incremented, and tallies there (`add_to_tally`) as things happen."""
    return Metrics.counter(namespace(step), name)


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


def write_tally(directory, gauges=None):
    """Write this process's tally to directory/tally-<pid>.json (whole, or not at all), with `gauges` (this
    process's state now, as {name: value} whose names say how they merge: see `merge`)."""
    path = os.path.join(directory, f"tally-{os.getpid()}.json")
    temporary = os.path.join(directory, f".tally-{os.getpid()}.json.tmp")
    with open(temporary, "w", encoding="utf-8") as stream:
        json.dump({**process_totals(), **(gauges or {})}, stream)
    os.replace(temporary, path)


def read_tallies(directory, but_pid=None):
    """The tallies the processes of a run left in a directory (see write_tally), merged; but that of process
    `but_pid` (whose own tally is at hand)."""
    tallies = []
    for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else ():
        if name.startswith("tally-") and name.endswith(".json") and name != f"tally-{but_pid}.json":
            try:
                with open(os.path.join(directory, name), encoding="utf-8") as stream:
                    tallies.append(json.load(stream))
            except (OSError, ValueError):
                continue  # a process that stopped while writing: its last tally is lost
    return dict(merge(tallies))


def by_suffix(counters, name):
    """{suffix: value} of the counters "<name>:<suffix>" (those not 0), sorted: per event type, reason, status..."""
    prefix = name + ":"
    return dict(sorted((key[len(prefix):], value) for key, value in counters.items()
                       if key.startswith(prefix) and value))


def totals(counters, metric):
    """The sum over event types of one per-type metric."""
    prefix = metric + ":"
    return sum(value for name, value in counters.items() if name.startswith(prefix))
