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
"""
import datetime
import sys
import threading
import time
from dataclasses import dataclass

from currents_to_segment.transforms import metrics

TROUBLE_AFTER = 3  # failed attempts in a row before a warning
TROUBLE_SECONDS = 10.0  # or failures for this long
TALLY_SECONDS = 1.0  # how often a process writes its tally, when the settings name a folder for it
# How every line the reporter prints starts: a launcher that keeps worker processes' other output in a log copies
# these lines to the terminal (see pipeline.run_log).
LINE_PREFIXES = ("progress ", "warning: Segment ", "Segment answers again ")


@dataclass(frozen=True)
class ProgressSettings:
    """interval_seconds between progress lines (0: none); retry_budget: the retry budget of one request, in words;
    tally_dir: a local folder where each process writes its counters every TALLY_SECONDS ("": none), for the
    summary of a run whose worker processes fail (see metrics.write_tally)."""

    interval_seconds: float = 10.0
    retry_budget: str = ""
    tally_dir: str = ""


def _clock_text(epoch_seconds):
    return datetime.datetime.fromtimestamp(epoch_seconds, datetime.timezone.utc).strftime("%H:%M:%S UTC")


def _elapsed_text(seconds):
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class WatchState:
    """What a watch (--watch) waits for, as this process sees it: when it last listed the inputs, and the files it
    found that are not read yet (path → modification time, when the file landed). Thread-safe."""

    def __init__(self):
        self._lock = threading.Lock()
        self._last_listing = None
        self._waiting = {}

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

    def describe(self, now):
        """"  last listing 12:00:01 UTC  waiting 2 files (oldest landed 0:00:41 ago)", or "" outside a watch."""
        with self._lock:
            if self._last_listing is None:
                return ""
            text = f"  last listing {_clock_text(self._last_listing)}  waiting {len(self._waiting):,} files"
            if self._waiting:
                text += f" (oldest landed {_elapsed_text(max(now - min(self._waiting.values()), 0))} ago)"
            return text


_watch_state = WatchState()


def watch_state():
    """This process's WatchState."""
    return _watch_state


def progress_line(counters, elapsed):
    """The progress line of these counter values after `elapsed` seconds."""
    sent = metrics.totals(counters, metrics.SENT)
    listed = (counters.get(metrics.FILES_LISTED, 0) - counters.get(metrics.LEDGER_FILES_SKIPPED, 0)
              - counters.get(metrics.FILES_OF_OTHER_TYPES, 0))  # the files to read
    rate = sent / elapsed if elapsed > 0 else 0.0
    return (f"progress {_elapsed_text(elapsed)}  files {counters.get(metrics.FILES_READ, 0)}/{max(listed, 0)} read  "
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
        self._open_line = False  # a progress line is on the terminal without its newline
        self._stop = threading.Event()
        self._thread = None
        self._interactive = bool(getattr(self._stream, "isatty", lambda: False)())

    def start(self):
        """Print progress every interval, and write the tally every TALLY_SECONDS, from a daemon thread (none
        when there is neither)."""
        settings = self._settings
        if (settings.interval_seconds > 0 or settings.tally_dir) and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)
            self._thread.start()

    def stop(self):
        """Stop the lines; end a line left open on a terminal."""
        self._stop.set()
        with self._lock:
            self._end_open_line()

    def _loop(self):
        interval, tally_dir = self._settings.interval_seconds, self._settings.tally_dir
        next_line = self._clock() + interval
        wake = min(seconds for seconds in (interval, TALLY_SECONDS if tally_dir else 0) if seconds > 0)
        while not self._stop.wait(wake):
            if tally_dir:
                try:
                    metrics.write_tally(tally_dir)
                except OSError:
                    pass  # the folder is gone: the run is over
            if interval > 0 and self._clock() >= next_line:
                next_line += interval
                self.print_progress()

    def print_progress(self):
        """Print the progress line now, and repeat the trouble warning while it lasts."""
        line = progress_line(metrics.process_totals(), self._clock() - self._started) + _watch_state.describe(time.time())
        with self._lock:
            if self._interactive:
                self._stream.write("\r" + line + "\x1b[K")
                self._open_line = True
            else:
                self._stream.write(line + "\n")
            if self._warned:
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
                return
            if self._warned:
                self._write_line(f"Segment answers again ({attempt.describe()}) after "
                                 f"{_elapsed_text(self._clock() - self._trouble_since)} of failures")
                self._stream.flush()
            self._failures, self._trouble_since, self._warned = 0, None, False

    def _trouble_text(self):
        return (f"warning: Segment has failed {self._failures} attempt{'' if self._failures == 1 else 's'} in a row since "
                f"{_clock_text(self._trouble_since)} (last: {self._last_failure}; attempt {self._last_attempt} of this "
                f"request); each request is retried for up to {self._settings.retry_budget or 'its retry budget'}, then its "
                "events are dead-lettered as retries_exhausted")

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


def stop():
    """Stop this process's Reporter, if any; the next run starts a new one."""
    global _reporter  # pylint: disable=global-statement
    with _reporter_lock:
        if _reporter is not None:
            _reporter.stop()
        _reporter = None
