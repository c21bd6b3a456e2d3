"""Requests in flight: calls of one function, at most so many at once (`InFlight`), run by daemon threads that
one process's callers can share (`SendingThreads`). Beam-free."""
import concurrent.futures
import queue
import threading


class SendingThreads:
    """Daemon threads that make the calls handed to them, at most `size`, started as they are needed (a call
    that finds no idle thread starts one). They are daemons: a run that is interrupted does not wait for them.
    An idle thread keeps nothing of its last call. Thread-safe: several InFlights may share one."""

    def __init__(self, size, name="segment-sender"):
        if size < 1:
            raise ValueError(f"at least one thread, got {size}")
        self._size = size
        self._name = name
        self._tasks = queue.SimpleQueue()
        self._threads = []
        self._waiting = 0  # threads waiting for a call
        self._lock = threading.Lock()

    def __len__(self):
        """How many threads were started."""
        with self._lock:
            return len(self._threads)

    def run(self, future, call, key):
        """Make `call(key)` in a thread, its result or exception into `future`."""
        with self._lock:
            # An idle thread takes it (claimed here, so that the next call does not count on the same one), else
            # a thread more (up to `size`); else it waits for the first thread to be free.
            if self._waiting:
                self._waiting -= 1
            elif len(self._threads) < self._size:
                thread = threading.Thread(target=self._serve, name=f"{self._name}-{len(self._threads)}", daemon=True)
                self._threads.append(thread)
                thread.start()
        self._tasks.put((future, call, key))

    def _serve(self):
        while True:  # started for a call, and then idle (counted as waiting) until `run` claims it for another
            task = self._tasks.get()
            if task is None:
                return
            future, call, key = task
            del task
            outcome = self._make(future, call, key)
            # Waiting again before the caller hears of it: a caller that hands the next call over at once finds
            # this thread free. An idle thread keeps nothing of its last call (a request's calls are up to 500 KB).
            del future, call, key
            self._wait_for_call()
            outcome()
            del outcome

    def _wait_for_call(self):
        with self._lock:
            self._waiting += 1

    @staticmethod
    def _make(future, call, key):
        """Make the call; what tells its future the outcome."""
        if not future.set_running_or_notify_cancel():
            return lambda: None
        try:
            result = call(key)
        except BaseException as error:  # pylint: disable=broad-except  # handed to the caller
            return lambda failure=error: future.set_exception(failure)
        return lambda: future.set_result(result)

    def close(self):
        """Let the threads end once their call is over."""
        with self._lock:
            threads = len(self._threads)
        for _ in range(threads):
            self._tasks.put(None)


class InFlight:
    """Calls of `work(key)`, at most `limit` at once, made by `threads` (SendingThreads shared with other callers;
    by default threads of its own, `limit` of them); Beam-free.

    `submit(key)` waits for room, then starts the call; it, `done()` and `drain()` (which waits for every call)
    return the (key, result) pairs of the calls finished since. When a call raised, they raise it, and the calls
    not started yet are cancelled. With a limit of 1 there is no thread: `submit` makes the call itself, in the
    caller's thread, and returns with it finished.
    """

    def __init__(self, work, limit, threads=None):
        if limit < 1:
            raise ValueError(f"at least one call in flight, got {limit}")
        self._work = work
        self._limit = limit
        self._own = threads is None
        self._threads = SendingThreads(limit) if threads is None else threads
        self._pending = []  # (key, future), in the order submitted

    def __len__(self):
        return len(self._pending)

    @property
    def threads(self):
        """How many threads were started."""
        return len(self._threads)

    def submit(self, key):
        if self._limit == 1:
            return [(key, self._work(key))]
        finished = self.done()
        while len(self._pending) >= self._limit:
            concurrent.futures.wait([future for _, future in self._pending],
                                    return_when=concurrent.futures.FIRST_COMPLETED)
            finished += self.done()
        future = concurrent.futures.Future()
        self._pending.append((key, future))
        self._threads.run(future, self._work, key)
        return finished

    def done(self):
        finished, pending = [], []
        for key, future in self._pending:  # one look at each: a call that ends meanwhile is in one list only
            (finished if future.done() else pending).append((key, future))
        if not finished:
            return []
        self._pending = pending
        return [(key, self._result(future)) for key, future in finished]

    def drain(self):
        concurrent.futures.wait([future for _, future in self._pending])
        return self.done()

    def _result(self, future):
        try:
            return future.result()
        except BaseException:
            self.cancel()
            raise

    def cancel(self):
        """Cancel the calls not started yet and forget every call in flight."""
        for _, future in self._pending:
            future.cancel()
        self._pending = []

    def close(self):
        """Cancel what has not started; threads of its own end once their call is over (shared ones go on)."""
        self.cancel()
        if self._own:
            self._threads.close()
