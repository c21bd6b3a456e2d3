"""Progress lines and Segment trouble warnings, printed to stderr by the process doing the work.

Each worker process prints its own: with the in-process runner that is the job's own process, with
multi-processing each worker, on Dataflow the worker logs. A line says what this process has done:

    progress 0:01:10  files 12/73 read  events read 61,204  sent 55,003 (786/s)  requests 31  retries 2  dead-lettered 1

In a watch (--watch) it goes on with what the watch waits for:

    ...  last listing 12:00:01 UTC  waiting 2 files (oldest landed 0:00:41 ago)

It comes every `interval_seconds`, as plain lines, or one line rewritten in place when stderr is a terminal.
"dead-lettered" counts letters as the stages make them. Warnings do not wait for the next line: after
TROUBLE_AFTER failed attempts in a row (Segment unreachable, or answering 429 or 5xx), failures lasting
TROUBLE_SECONDS, or one attempt that got no answer within its timeout (Segment hangs), one says what fails, since
when (the start of the first failed attempt), and the retry budget; it is repeated at the pace of the progress
lines while the trouble lasts, and one line says when Segment answers again, after how long.

In a watch, once a request has spent its retry budget (an outage: the watch holds its files and lists no new one
until Segment answers), the progress line goes on with how long Segment has been down and how many events read it
holds:

    ...  Segment down 0:04:10, holding 1,234 events read

and instead of the trouble warning, an outage warning comes at once and every OUTAGE_WARNING_SECONDS: how long
Segment has been down, what the watch holds (files not read yet, events read and not delivered), and when it gives
up (--max_outage_hours).
"""
import datetime
import sys
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Optional

from currents_to_segment.transforms import metrics
from currents_to_segment.transforms.segment.pacing import OUTAGE_PROBE_SECONDS

TROUBLE_AFTER = 3  # failed attempts in a row before a warning
TROUBLE_SECONDS = 10.0  # or failures for this long
TALLY_SECONDS = 1.0  # how often a process writes its tally, when the settings name a folder for it
OUTAGE_WARNING_SECONDS = 300.0  # in a watch, how often the outage warning is repeated while Segment is down
_OUTAGE_LOOK_SECONDS = 1.0  # how often the reporter looks whether the outage warning is due
# How every line the reporter prints starts: a launcher that keeps worker processes' other output in a log copies
# these lines to the terminal (see pipeline.run_log).
LINE_PREFIXES = ("progress ", "warning: Segment ", "Segment answers again ")


@dataclass(frozen=True)
class ProgressSettings:
    """interval_seconds between progress lines (0: none); retry_budget: the retry budget of one request, in words;
    tally_dir: a local folder where each process writes its counters every TALLY_SECONDS ("": none), for the
    summary of a run whose worker processes fail (see metrics.write_tally); max_outage_seconds: a watch's
    (--max_outage_hours), which holds its files while Segment is down (None: a batch run); probe_seconds: how often
    Segment is probed during an outage."""

    interval_seconds: float = 10.0
    retry_budget: str = ""
    tally_dir: str = ""
    max_outage_seconds: Optional[float] = None
    probe_seconds: float = OUTAGE_PROBE_SECONDS


def clock_text(epoch_seconds):
    """UNIX seconds as "12:00:01 UTC", as progress lines and warnings show a time."""
    return datetime.datetime.fromtimestamp(epoch_seconds, datetime.timezone.utc).strftime("%H:%M:%S UTC")


def elapsed_text(seconds):
    """Seconds as H:MM:SS, as progress lines show them."""
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class WatchState:
    """What a watch (--watch) waits for, as this process sees it: when it last listed the inputs, and the files it
    found that are not read yet (path → modification time, when the file landed). Thread-safe."""

    def __init__(self):
        self._lock = threading.Lock()
        self._last_listing = None
        self._waiting = {}
        self._holders = {}  # stop marker of a watch → what says when this process holds its files

    def listed(self, when):
        """The inputs were listed at `when` (UNIX seconds)."""
        with self._lock:
            self._last_listing = when

    def found(self, path, modified):
        """A new file version, to be read."""
        with self._lock:
            self._waiting[path] = modified

    def read(self, path):
        """A file was read (or could not be)."""
        with self._lock:
            self._waiting.pop(path, None)

    def waiting(self):
        """How many files found are not read yet."""
        with self._lock:
            return len(self._waiting)

    def waiting_files(self, now):
        """(files found and not read yet, seconds since the oldest of them landed (0.0 without any))."""
        with self._lock:
            return len(self._waiting), max(now - min(self._waiting.values()), 0.0) if self._waiting else 0.0

    def last_listing(self):
        """When the inputs were last listed (UNIX seconds), None before the first listing."""
        with self._lock:
            return self._last_listing

    def holds_with(self, watch, holder):
        """`holder.holding` (a Segment breaker of this process, kept as long as something else keeps it) says when
        this process holds the files of the watch of this stop marker (Segment fails): it then lists none."""
        with self._lock:
            self._holders.setdefault(watch, weakref.WeakSet()).add(holder)

    def holding(self, watch):
        """True while this process holds the files of the watch of this stop marker (see `holds_with`)."""
        with self._lock:
            holders = list(self._holders.get(watch, ()))
        return any(holder.holding for holder in holders)

    def describe(self, now):
        """"  last listing 12:00:01 UTC  waiting 2 files (oldest landed 0:00:41 ago)", or "" outside a watch."""
        last_listing = self.last_listing()
        if last_listing is None:
            return ""
        waiting, oldest = self.waiting_files(now)
        return (f"  last listing {clock_text(last_listing)}  waiting {waiting:,} files"
                + (f" (oldest landed {elapsed_text(oldest)} ago)" if waiting else ""))


_watch_state = WatchState()


def watch_state():
    """This process's WatchState."""
    return _watch_state


def events_held(counters):
    """Events read that no outcome accounts for yet: in flight, or held while Segment is down."""
    return max(metrics.totals(counters, metrics.READ)
               - sum(metrics.totals(counters, outcome) for outcome in metrics.OUTCOMES), 0)


def files_to_read(counters):
    """The files listed that are to be read: not skipped as in the ledger, nor of a type --event_types leaves out."""
    return max(counters.get(metrics.FILES_LISTED, 0) - counters.get(metrics.LEDGER_FILES_SKIPPED, 0)
               - counters.get(metrics.FILES_OF_OTHER_TYPES, 0), 0)


def progress_line(counters, elapsed):
    """The progress line of these counter values after `elapsed` seconds."""
    sent = metrics.totals(counters, metrics.SENT)
    rate = sent / elapsed if elapsed > 0 else 0.0
    return (f"progress {elapsed_text(elapsed)}  "
            f"files {counters.get(metrics.FILES_READ, 0)}/{files_to_read(counters)} read  "
            f"events read {metrics.totals(counters, metrics.READ):,}  sent {sent:,} ({rate:,.0f}/s)  "
            f"requests {counters.get(metrics.REQUESTS, 0):,}  retries {counters.get(metrics.RETRIES, 0):,}  "
            f"dead-lettered {counters.get(metrics.DEAD_LETTERS_MADE, 0):,}")


class Reporter:
    """This process's progress printer and Segment trouble watcher (see `reporter`)."""

    def __init__(self, settings, stream=None, clock=time.time):
        self._settings = settings
        self._stream = stream or sys.stderr
        self._clock = clock
        self._started = clock()
        self._lock = threading.Lock()
        self._failures = 0  # failed attempts in a row
        self._trouble_since = None
        self._last_failure = ""
        self._last_attempt = 0
        self._warned = False
        self._outage_since = None  # in a watch, once a request has spent its budget: when the trouble began
        self._outage_warned = 0.0  # when the outage warning was last printed
        self._spent_since = None  # once a request has spent its retry budget: when the trouble began
        self._open_line = False  # a progress line is on the terminal without its newline
        self._stop = threading.Event()
        self._thread = None
        self._interactive = bool(getattr(self._stream, "isatty", lambda: False)())

    def start(self):
        """Print progress every interval, and write the tally every TALLY_SECONDS, from a daemon thread (none
        when there is neither)."""
        settings = self._settings
        if (settings.interval_seconds > 0 or settings.tally_dir or self._holds) and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)
            self._thread.start()

    def stop(self):
        """Stop the lines; end a line left open on a terminal."""
        self._stop.set()
        with self._lock:
            self._end_open_line()

    @property
    def _holds(self):
        """True in a watch: Segment's outages are waited out."""
        return self._settings.max_outage_seconds is not None

    def _loop(self):
        interval, tally_dir = self._settings.interval_seconds, self._settings.tally_dir
        next_line = self._clock() + interval
        wake = min(seconds for seconds in (interval, TALLY_SECONDS if tally_dir else 0,
                                           _OUTAGE_LOOK_SECONDS if self._holds else 0) if seconds > 0)
        while not self._stop.wait(wake):
            if tally_dir:
                try:
                    metrics.write_tally(tally_dir, self.segment_gauges())
                except OSError:
                    pass  # the folder is gone: the run is over
            if interval > 0 and self._clock() >= next_line:
                next_line += interval
                self.print_progress()
            self.warn_of_outage_if_due()

    def warn_of_outage_if_due(self):
        """Repeat the outage warning every OUTAGE_WARNING_SECONDS while the outage lasts."""
        with self._lock:
            if self._outage_since is not None and self._clock() - self._outage_warned >= OUTAGE_WARNING_SECONDS:
                self._warn_of_outage()

    def print_progress(self):
        """Print the progress line now, and repeat the trouble warning while it lasts."""
        counters = metrics.process_totals()
        line = progress_line(counters, self._clock() - self._started) + _watch_state.describe(self._clock())
        with self._lock:
            if self._outage_since is not None:
                line += (f"  Segment down {elapsed_text(self._clock() - self._outage_since)}, holding "
                         f"{events_held(counters):,} events read")
            if self._interactive:
                self._stream.write("\r" + line + "\x1b[K")
                self._open_line = True
            else:
                self._stream.write(line + "\n")
            if self._warned and self._outage_since is None:  # an outage has a warning of its own, less often
                self._write_line(self._trouble_text())
            self._stream.flush()

    def observe(self, attempt):
        """Called by the Segment client after each HTTP attempt (a transforms.segment.api.Attempt)."""
        with self._lock:
            if attempt.failed and not attempt.transient:
                return  # a 400 is the events' fault, not Segment's
            if attempt.failed:
                self._failures += 1
                if self._trouble_since is None:  # when the first failed attempt began, not when it ended
                    self._trouble_since = min(attempt.started or self._clock(), self._clock())
                self._last_failure = attempt.describe()
                self._last_attempt = attempt.attempt
                lasting = self._clock() - self._trouble_since
                if not self._warned and (self._failures >= TROUBLE_AFTER or lasting >= TROUBLE_SECONDS
                                         or attempt.timed_out):
                    self._warned = True
                    self._write_line(self._trouble_text())
                    self._stream.flush()
                if not attempt.retrying and self._spent_since is None:  # a request's retry budget is spent
                    self._spent_since = self._trouble_since
                if self._holds and not attempt.retrying and self._outage_since is None:  # a budget is spent
                    self._outage_since, self._warned = self._trouble_since, True
                    self._warn_of_outage()
                return
            if self._warned:
                self._write_line(f"Segment answers again ({attempt.describe()}) after "
                                 f"{elapsed_text(self._clock() - self._trouble_since)} of failures"
                                 + ("; the watch goes on with the files it held" if self._outage_since else ""))
                self._stream.flush()
            self._failures, self._trouble_since, self._warned, self._outage_since = 0, None, False, None
            self._spent_since = None

    def segment_state(self):
        """(since when Segment fails (UNIX seconds), since when past a request's retry budget, the last failure in
        words); None and "" for what is not so."""
        with self._lock:
            return self._trouble_since, self._spent_since, self._last_failure if self._trouble_since else ""

    def segment_gauges(self):
        """segment_state as a tally's entries (see metrics.write_tally): what merges as the earliest."""
        failing, spent, _ = self.segment_state()
        return {name: value for name, value in ((SEGMENT_FAILING_SINCE, failing), (SEGMENT_SPENT_SINCE, spent))
                if value is not None}

    def _trouble_text(self):
        then = ("then the watch holds its files until Segment answers" if self._holds
                else "then its events are dead-lettered as retries_exhausted")
        return (f"warning: Segment has failed {self._failures} attempt{'' if self._failures == 1 else 's'} in a row since "
                f"{clock_text(self._trouble_since)} (last: {self._last_failure}; attempt {self._last_attempt} of this "
                f"request); each request is retried for up to {self._settings.retry_budget or 'its retry budget'}, "
                f"{then}")

    def _warn_of_outage(self):
        """Print the outage warning (with the lock held)."""
        settings, now = self._settings, self._clock()
        self._outage_warned = now
        gives_up = datetime.datetime.fromtimestamp(self._outage_since + settings.max_outage_seconds,
                                                   datetime.timezone.utc)
        self._write_line(
            f"warning: Segment has been down for {elapsed_text(now - self._outage_since)} (since "
            f"{clock_text(self._outage_since)}; last: {self._last_failure}): the watch holds "
            f"{_watch_state.waiting():,} files not read yet and {events_held(metrics.process_totals()):,} events read "
            f"and not delivered, lists no new file, probes Segment every {settings.probe_seconds:g} s and goes on "
            f"when it answers; if "
            f"Segment is still down at {gives_up:%Y-%m-%d %H:%M:%S} UTC (--max_outage_hours "
            f"{settings.max_outage_seconds / 3600:g}), it stops, exit 3, leaving them for the next watch")
        self._stream.flush()

    def _write_line(self, text):
        self._end_open_line()
        self._stream.write(text + "\n")

    def _end_open_line(self):
        if self._open_line:
            self._stream.write("\n")
            self._open_line = False


_reporter = None
_reporter_lock = threading.Lock()


def reporter(settings=None):
    """This process's Reporter, started on first use with these settings (later settings are ignored)."""
    global _reporter  # pylint: disable=global-statement  # one per process, shared by its DoFns
    with _reporter_lock:
        if _reporter is None:
            _reporter = Reporter(settings or ProgressSettings(interval_seconds=0))
            _reporter.start()
        return _reporter


# In a tally (metrics.write_tally): since when Segment fails, and since when past the retry budget, as this process
# sees it (the earliest of the processes' counts).
SEGMENT_FAILING_SINCE = "segment_failing_since.min"
SEGMENT_SPENT_SINCE = "segment_past_budget_since.min"


def segment_state(tally=None):
    """(since when Segment fails (UNIX seconds), since when past a request's retry budget, the last failure in words)
    as this process's Reporter sees it ((None, None, "") without one), and, with the `tally` of other processes (see
    Reporter.segment_gauges), the earliest of each."""
    with _reporter_lock:
        current = _reporter
    failing, spent, last = current.segment_state() if current is not None else (None, None, "")
    tally = tally or {}

    def earliest(mine, name):
        theirs = tally.get(name)
        return mine if theirs is None else theirs if mine is None else min(mine, theirs)
    return earliest(failing, SEGMENT_FAILING_SINCE), earliest(spent, SEGMENT_SPENT_SINCE), last


def stop():
    """Stop this process's Reporter, if any; the next run starts a new one."""
    global _reporter  # pylint: disable=global-statement
    with _reporter_lock:
        if _reporter is not None:
            _reporter.stop()
        _reporter = None
