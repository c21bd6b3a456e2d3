"""How fast requests to Segment go, and whether they go at all; thread-safe objects that every client of one
process shares (see transforms.deliver, which holds them through Beam's Shared).

- `Breaker`: once a request has used up its whole retry budget (Segment unreachable for longer), only one probe
  is sent every `probe_seconds` (OUTAGE_PROBE_SECONDS, or less), until Segment answers again; so an outage costs
  one budget, not one per request. In a batch run the requests not sent meanwhile are rejected as
  retries_exhausted; in a watch (`max_outage_seconds`) they are held, and so are the files not read yet, until
  Segment answers, or until the watch gives up on it (an outage longer than max_outage_seconds, or a drain).
- `Pacer`: the process's share of the event budget (a `TokenBucket`; a request carries at most REQUEST_SECONDS of
  it, so a workspace limit counted per second never sees a burst; and no sliding second holds more than the share,
  an idle bucket's burst included), lowered on 429 and restored as Segment answers 2xx again; a Retry-After pauses
  every request of the process (each request sits it out for no longer than what is left of its retry budget);
  and --max_requests_per_second.
- `RefusalBreaker`: once Segment has refused REFUSALS_TO_STOP requests of one event each in a row (400/413) and
  accepted nothing (REFUSALS_TO_STOP_ONCE_ACCEPTED once it has accepted something), it refuses everything: the events not sent yet are rejected without a request, but for
  one request every `probe_seconds`; a 2xx answer to it ends this.
- `ThrottledTime`: the seconds during which at least one request was held back (waits that overlap count once).

Knows nothing of Beam; imports no Beam module.
"""
from __future__ import annotations

import math
import threading
import time
from collections import deque
from typing import Callable

OUTAGE_PROBE_SECONDS = 30.0  # during an outage, one attempt at most this often; the other requests are not sent
HOLD_CHECK_SECONDS = 1.0  # how often what a watch holds in an outage looks whether to give up
# What a request held in an outage is told when it may go on (Breaker.wait_for_turn).
CLOSED, PROBE, GIVEN_UP = "closed", "probe", "given up"
# Why a watch gave up on Segment: an outage longer than its limit, or a drain (the stop marker) during an outage.
OUTAGE_TOO_LONG = "outage_too_long"
DRAINED_IN_OUTAGE = "drained_in_outage"
# Under an event budget: a request carries at most this many seconds of it (and the bucket holds as much), the
# rate is halved on a 429 at most once per _CUT_INTERVAL_SECONDS, down to _MIN_RATE_SHARE of the budget, and
# each 2xx answer gives back _RECOVERY_STEP of it.
REQUEST_SECONDS = 0.25
# No window this long holds more events than the budget (started requests count): a quarter of a second more than
# Segment's second, because a request is taken by Segment a while after it starts (threads, network, its own
# queue), and one started just past a second's end must not land in it. With 1.1 s, a loopback Segment on a busy
# 2-core machine still saw 2,500 events within one of its seconds under a budget of 2,000; with 1.25 s, 2,000. The
# budget is a ceiling: a run averages about 80% of it.
WINDOW_SECONDS = 1.25
_CUT_INTERVAL_SECONDS = 1.0
_MIN_RATE_SHARE = 1 / 16
_RECOVERY_STEP = 0.05
# Requests of one event refused (400/413) in a row, nothing accepted since, after which Segment is taken to refuse
# everything (a wrong endpoint, or a source that takes nothing): the RefusalBreaker stops sending. Once Segment has
# accepted requests of the process, it takes more: a run of bad events next to each other in a batch is no sign.
REFUSALS_TO_STOP = 8
REFUSALS_TO_STOP_ONCE_ACCEPTED = 64


class Breaker:  # pylint: disable=too-many-instance-attributes  # its state is one outage
    """Whether requests are sent: closed (all are) until a request has used up its retry budget; then open, and
    only one attempt every `probe_seconds` is made (a probe), until one is answered. Thread-safe.

    In a batch run (`max_outage_seconds` None) the requests not let through are told so by `admit` (their events
    are dead-lettered). In a watch they are held: `wait_for_turn` blocks until Segment answers (the breaker
    closes), or it is the caller's turn to probe, or the watch gives up on Segment: after `max_outage_seconds` of
    continuous outage (from the first attempt of the request that opened it), or when `stop_requested()` (asked
    at most every HOLD_CHECK_SECONDS while open) says the watch is drained. Giving up is for good: nothing is sent
    after it, and `on_give_up(reason)` is called once (OUTAGE_TOO_LONG or DRAINED_IN_OUTAGE). `wait_while_open`
    is how a watch holds the files it has not read yet: from the first failed attempt (`failed`) until Segment
    answers (`holding`: it then lists no new file either).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, *, probe_seconds: float = OUTAGE_PROBE_SECONDS,
                 max_outage_seconds: float | None = None, stop_requested: Callable[[], bool] | None = None,
                 on_give_up: Callable[[str], None] | None = None):
        self._clock = clock
        self._probe_seconds = probe_seconds
        self._max_outage = max_outage_seconds
        self._stop_requested = stop_requested
        self._on_give_up = on_give_up
        self._changed = threading.Condition()
        self._open = False
        self._failing = False  # in a watch: a request has failed since Segment last answered
        self._since: float | None = None  # when the outage began
        self._last_probe = 0.0
        self._last_answer: object | None = None
        self._last_stop_check = -math.inf
        self._stopping = False
        self._gave_up: str | None = None

    @property
    def holds(self) -> bool:
        """True in a watch: requests are held during an outage, not rejected."""
        return self._max_outage is not None

    @property
    def gave_up(self) -> str | None:
        """Why the watch gave up on Segment (OUTAGE_TOO_LONG, DRAINED_IN_OUTAGE), or None."""
        with self._changed:
            return self._gave_up

    def admit(self) -> tuple[bool, bool, object]:
        """(send this request, as a probe, the last failure): when open, one caller per probe interval is let
        through, and the others are told the last failure (in a watch, they then wait for their turn); after the
        watch gave up, none is."""
        with self._changed:
            if self._gave_up:
                return False, False, self._last_answer
            if not self._open:
                return True, False, None
            now = self._clock()
            if now - self._last_probe >= self._probe_seconds:
                self._last_probe = now
                return True, True, None
            return False, False, self._last_answer

    @property
    def holding(self) -> bool:
        """In a watch: True from a failed attempt until Segment answers (and after it gave up on Segment)."""
        with self._changed:
            return self.holds and (self._failing or self._open or self._gave_up is not None)

    def failed(self) -> None:
        """In a watch, an attempt failed (and will be retried): the files not read yet wait until Segment answers."""
        with self._changed:
            self._failing = self.holds

    def trip(self, answer: object, since: float | None = None) -> None:
        """A request used up its budget (or a probe failed): open, with this last failure; `since`: when that
        request's first attempt began (the outage's start)."""
        with self._changed:
            if not self._open:
                now = self._clock()
                self._open, self._last_probe = True, now
                self._since = now if since is None else min(since, now)
            self._last_answer = answer

    def reset(self) -> None:
        """Segment answered: closed; the requests and files held go on."""
        with self._changed:
            self._open, self._failing, self._since = False, False, None
            self._changed.notify_all()

    def _is_stopping(self, now: float) -> bool:
        if not self._stopping and self._stop_requested is not None \
                and now - self._last_stop_check >= HOLD_CHECK_SECONDS:
            self._last_stop_check = now
            self._stopping = bool(self._stop_requested())
        return self._stopping

    def _give_up_if_due(self, now: float) -> str | None:
        """Under the lock, while open in a watch: give up when the outage is too long or the watch is drained; the
        reason, when it gave up just now."""
        if self._gave_up or not self._open or not self.holds:
            return None
        if now - self._since >= self._max_outage:
            self._gave_up = OUTAGE_TOO_LONG
        elif self._is_stopping(now):
            self._gave_up = DRAINED_IN_OUTAGE
        else:
            return None
        self._changed.notify_all()
        return self._gave_up

    def _wait(self, now: float, until: float | None, on_wait: Callable[[float], None] | None) -> None:
        """Under the lock, while open in a watch: wait until `until` (None: no time of its own), a change, or the
        next look at giving up."""
        seconds = min(HOLD_CHECK_SECONDS, self._since + self._max_outage - now if self._open else math.inf,
                      math.inf if until is None else until - now)
        if on_wait is not None and seconds > 0:
            on_wait(seconds)
        self._changed.wait(max(seconds, 0.0))

    def _hold(self, probe: bool, on_wait) -> str:
        """Wait while open (a probe: until it is the caller's turn to probe; a file: while failing, too), or until
        the watch gives up."""
        gave_up = None
        try:
            with self._changed:
                while True:
                    now = self._clock()
                    gave_up = self._give_up_if_due(now) or gave_up
                    if self._gave_up:
                        return GIVEN_UP
                    if not self._open and (probe or not self._failing):
                        return CLOSED
                    if probe and now - self._last_probe >= self._probe_seconds:
                        self._last_probe = now
                        return PROBE
                    self._wait(now, self._last_probe + self._probe_seconds if probe else None, on_wait)
        finally:
            if gave_up and self._on_give_up is not None:
                self._on_give_up(gave_up)

    def wait_for_turn(self, on_wait: Callable[[float], None] | None = None) -> str:
        """In a watch, for a request not let through: wait until Segment answers (CLOSED: send it, with a whole
        budget), or it is this request's turn to probe (PROBE: one attempt), or the watch gives up (GIVEN_UP: do
        not send it). `on_wait(seconds)` is told of each wait before it begins."""
        return self._hold(True, on_wait)

    def wait_while_open(self, on_wait: Callable[[float], None] | None = None) -> bool:
        """In a watch, before a file is read: wait while Segment fails (from the first failed attempt, and while
        open); False once the watch gave up on it. In a batch run, True at once."""
        if not self.holds:
            return True
        return self._hold(False, on_wait) == CLOSED


def request_events(events_per_second: float | None, at_most: int | None = None) -> int | None:
    """The most events one request carries: `at_most`, and under a budget (events_per_second; None: none) at most
    REQUEST_SECONDS of it, at least one."""
    if not events_per_second:
        return at_most
    share = max(1, int(events_per_second * REQUEST_SECONDS))
    return share if at_most is None else min(at_most, share)


class TokenBucket:
    """A token bucket; pure (the caller gives the time) and not thread-safe.

    Tokens come at `rate` a second, up to `capacity`; it starts with `tokens` (default: full). `reserve(n, now)`
    takes n tokens at once and returns how long to wait before using them: the balance may go below zero (a
    request larger than the capacity still goes, later), and the callers after wait for that debt to be repaid.
    """

    def __init__(self, rate: float, capacity: float, now: float, tokens: float | None = None):
        if not rate > 0 or capacity < 0:
            raise ValueError(f"a token bucket needs a positive rate and a capacity of 0 or more, got {rate}, {capacity}")
        self.rate = rate
        self.capacity = capacity
        self._tokens = capacity if tokens is None else tokens
        self._updated = now

    def _refill(self, now: float) -> None:
        if now > self._updated:
            self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
            self._updated = now

    def tokens(self, now: float) -> float:
        """The balance at `now` (below zero: owed)."""
        self._refill(now)
        return self._tokens

    def reserve(self, n: float, now: float) -> float:
        """Take n tokens; the seconds from `now` until they are paid for."""
        self._refill(now)
        self._tokens -= n
        return max(0.0, -self._tokens / self.rate)

    def set_rate(self, rate: float, now: float) -> None:
        """Tokens come at `rate` from `now` on."""
        if not rate > 0:
            raise ValueError(f"a token bucket needs a positive rate, got {rate}")
        self._refill(now)
        self.rate = rate


class Pacer:
    """How fast the clients that share it send; thread-safe.

    With `events_per_second` (a budget), a request of k events waits for k tokens of a TokenBucket holding one
    request's worth (`max_request_events`, REQUEST_SECONDS of the budget), which starts empty (workers that start
    together do not burst together); and, whatever the bucket holds, until the requests started in the last
    WINDOW_SECONDS (a sliding window: a log of the starts it let go) leave room for its k events, so that no second
    ever holds more than the budget. A 429 halves the bucket's rate (at most once per _CUT_INTERVAL_SECONDS, down
    to _MIN_RATE_SHARE of the budget), and each 2xx answer gives back _RECOVERY_STEP of the budget until the rate
    is the budget again. With `requests_per_second`, request starts are kept that far apart. With or without them,
    an answer with Retry-After pauses every request until it has passed (the caller caps what it reports by what
    is left of its retry budget; and a request sits a pause out for at most `max_pause`, what is left of its own).
    A request whose turn came during a pause takes its turn again once the pause is over.
    `acquire` blocks (with `sleep`) and tells `on_wait(seconds)` of each wait before it begins.
    """

    def __init__(self, events_per_second: float | None = None, requests_per_second: float | None = None, *,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        now = clock()
        self.events_per_second = events_per_second
        self.max_request_events = request_events(events_per_second)
        self._events = (TokenBucket(events_per_second, self.max_request_events, now, tokens=0)
                        if events_per_second else None)
        self._requests = TokenBucket(requests_per_second, 1, now) if requests_per_second else None
        self._paused_until = -math.inf
        self._last_cut = -math.inf
        self._starts: deque = deque()  # [start, events] of the requests let go in the last window, in start order
        self._window_events = 0

    @property
    def rate(self) -> float | None:
        """Events per second allowed now (None: no budget)."""
        with self._lock:
            return self._events.rate if self._events else None

    def acquire(self, events: int, on_wait: Callable[[float], None] | None = None,
                max_pause: float | None = None) -> float:
        """Wait until a request of `events` events may start; the seconds waited. A Retry-After pause is sat out
        for at most `max_pause` seconds from now (None: all of it)."""
        until = None if max_pause is None else self._clock() + max(max_pause, 0.0)
        waited = 0.0
        while True:
            waited += self._sit_out_pause(on_wait, until)
            with self._lock:
                now = self._clock()
                start = max(now + (self._events.reserve(events, now) if self._events else 0.0),
                            now + (self._requests.reserve(1, now) if self._requests else 0.0))
                logged = self._take_window(events, start) if self._events is not None else None
                if logged is not None:
                    start = logged[0]
            waited += self._wait(start - now, on_wait)
            if logged is not None:
                with self._lock:  # logged as started when it did (a sleep ends late, never early)
                    logged[0] = max(logged[0], self._clock())
            # A pause that began while this request waited for its turn holds it too; its turn is taken again after
            # it (what it took stays taken: the budget is only kept the better), so that the requests held by a
            # pause do not all start at once when it ends.
            if not self._pause_left(until) > 0:
                return waited

    def _take_window(self, events: int, start: float) -> list:
        """Under the lock: the earliest start, not before `start` nor before the last start let go, at which the
        requests started in the WINDOW_SECONDS up to it leave room for `events` more under the budget; they are
        logged as started then: the log's [start, events] entry, which the caller may move to when it started."""
        budget = self.events_per_second
        if self._starts:
            start = max(start, self._starts[-1][0])
        while self._starts and self._starts[0][0] <= start - WINDOW_SECONDS:
            self._window_events -= self._starts.popleft()[1]
        # The oldest starts leave the window (t - WINDOW_SECONDS, t] one by one until the events fit (a request
        # larger than the budget goes alone).
        while self._starts and self._window_events + events > budget:
            oldest, taken = self._starts.popleft()
            self._window_events -= taken
            start = max(start, oldest + WINDOW_SECONDS)
        logged = [start, events]
        self._starts.append(logged)
        self._window_events += events
        return logged

    def wait_for_turn(self, on_wait: Callable[[float], None] | None = None, max_pause: float | None = None) -> float:
        """Wait, without taking anything, until a request could start: no pause (sat out for at most `max_pause`
        seconds), nothing owed to the buckets by the requests already let go, no start planned later; the seconds
        waited. A caller that hands requests to other threads waits here first, so that the requests it hands on
        do not queue in the pacer, taking room in flight."""
        with self._lock:
            now = self._clock()
            pause = self._paused_until - now
            owed = [pause if max_pause is None else min(pause, max_pause)]
            for bucket in (self._events, self._requests):
                if bucket is not None:
                    owed.append(-bucket.tokens(now) / bucket.rate)
            if self._starts:
                owed.append(self._starts[-1][0] - now)
        return self._wait(max(owed), on_wait)

    def _pause_left(self, until: float | None) -> float:
        """The seconds of the pause still to sit out (cut at `until`, a clock time; None: not cut)."""
        with self._lock:
            now = self._clock()
            end = self._paused_until if until is None else min(self._paused_until, until)
        return end - now

    def _sit_out_pause(self, on_wait, until: float | None = None) -> float:
        waited = 0.0
        while True:
            pause = self._pause_left(until)
            if pause <= 0:
                return waited
            waited += self._wait(pause, on_wait)

    def _wait(self, seconds: float, on_wait) -> float:
        if seconds <= 0:
            return 0.0
        if on_wait is not None:
            on_wait(seconds)
        self._sleep(seconds)
        return seconds

    def answered(self, status: int | None, retry_after: float | None = None) -> None:
        """What an attempt got: a 429 lowers the rate, a 2xx restores some of it, a Retry-After (in seconds, as the
        caller caps it) pauses all."""
        with self._lock:
            now = self._clock()
            if retry_after:
                self._paused_until = max(self._paused_until, now + retry_after)
            if self._events is None or status is None:
                return
            rate = self._events.rate
            if status == 429:
                if now - self._last_cut >= _CUT_INTERVAL_SECONDS:
                    self._last_cut = now
                    self._events.set_rate(max(rate / 2, self.events_per_second * _MIN_RATE_SHARE), now)
            elif 200 <= status < 300 and rate < self.events_per_second:
                self._events.set_rate(min(self.events_per_second, rate + self.events_per_second * _RECOVERY_STEP), now)


class RefusalBreaker:
    """Whether Segment refuses everything; thread-safe, shared by the clients of a process like the Breaker.

    A client tells it of each request of one event that Segment refused (400/413: `refused`, with the answer; a
    request of more events is split, not counted) and of each 2xx (`accepted`, which starts the count again). After
    `limit` refusals in a row (`limit_once_accepted` once anything was accepted) with nothing accepted since,
    `stopped()` says why (the excerpt that the events not
    sent are rejected with) until a 2xx comes: the clients send nothing more and reject the events they have yet to
    send as rejected_by_segment, without a request; but one caller every `probe_seconds` (from the refusal that
    stopped it) is told None: its request goes, and a 2xx to it starts the sending again (a watch is not stopped
    for good)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, *, limit: int = REFUSALS_TO_STOP,
                 limit_once_accepted: int = REFUSALS_TO_STOP_ONCE_ACCEPTED,
                 probe_seconds: float = OUTAGE_PROBE_SECONDS):
        if min(limit, limit_once_accepted) < 1:
            raise ValueError(f"at least one refusal, got {limit} and {limit_once_accepted}")
        self._clock = clock
        self._limit = limit
        self._limit_once_accepted = limit_once_accepted
        self._probe_seconds = probe_seconds
        self._lock = threading.Lock()
        self._refused = 0
        self._last: tuple[int, str] | None = None
        self._last_probe = -math.inf

    def refused(self, status: int, text: str) -> None:
        """A request of one event was refused whole with this answer."""
        with self._lock:
            self._refused += 1
            self._last = (status, text)
            if self._refused == self._limit:
                self._last_probe = self._clock()

    def accepted(self) -> None:
        """Segment answered 2xx: the count starts again, and from now on takes `limit_once_accepted` to stop."""
        with self._lock:
            self._refused = 0
            self._limit = self._limit_once_accepted

    def stopped(self) -> tuple[int, str] | None:
        """(last status, why) once Segment has refused `limit` requests in a row, else None (and for the probe)."""
        with self._lock:
            if self._refused < self._limit:
                return None
            now = self._clock()
            if now - self._last_probe >= self._probe_seconds:
                self._last_probe = now
                return None
            status, text = self._last
            last = f"{status} {' '.join(text.split())[:200]}".rstrip()
            return status, f"not sent: Segment refused the last {self._refused} requests whole (last: {last})"


class ThrottledTime:
    """The seconds during which at least one of a stage's requests was held back; Beam-free, thread-safe.

    `wait(seconds)` is told of each wait as it begins: waits of requests in flight together that overlap count
    once, and only as far as they have gone (a wait announced but not over yet counts up to now; a run that ends
    meanwhile never counts the rest), so the total never exceeds the time since the first wait.
    `take_whole_seconds()` returns the whole seconds not taken yet (Beam's throttling counter is an integer),
    keeping the fraction for later.
    """

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._covered_until = -math.inf
        self._total = 0.0
        self._taken = 0

    def wait(self, seconds):
        with self._lock:
            now = self._clock()
            start, end = max(now, self._covered_until), now + seconds
            if end > start:
                self._total += end - start
                self._covered_until = end

    def _elapsed(self):
        """The seconds covered up to now (called with the lock held)."""
        return self._total - max(0.0, self._covered_until - self._clock())

    @property
    def total(self):
        with self._lock:
            return self._elapsed()

    def take_whole_seconds(self):
        with self._lock:
            whole = int(self._elapsed()) - self._taken
            self._taken += whole
            return whole
