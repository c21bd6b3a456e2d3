"""Requests in flight: calls of one function run by a few threads, at most so many at once. Beam-free."""
import concurrent.futures
import queue
import threading


class InFlight:
    """Calls of `work(key)` run by `limit` daemon threads, at most `limit` at once; Beam-free.

    `submit(key)` waits for room, then starts the call; it, `done()` and `drain()` (which waits for every call)
    return the (key, result) pairs of the calls finished since. When a call raised, they raise it, and the calls
    not started yet are cancelled. A thread is started when a call finds none free (so a stage that never has
    two requests at once has one); they are daemons: a run that is interrupted does not wait for them. With a
    limit of 1 there is no thread: `submit` makes the call itself, in the caller's thread, and returns with it
    finished.
    """

    def __init__(self, work, limit, name="segment-sender"):
        if limit < 1:
            raise ValueError(f"at least one call in flight, got {limit}")
        self._work = work
        self._limit = limit
        self._name = name
        self._tasks = queue.SimpleQueue()
        self._pending = []  # (key, future), in the order submitted
        self._threads = []

    def _serve(self):
        while True:
            task = self._tasks.get()
            if task is None:
                return
            future, key = task
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(self._work(key))
                except BaseException as error:  # pylint: disable=broad-except  # handed to the caller
                    future.set_exception(error)
            # An idle thread keeps nothing of its last call (a request's calls are up to 500 KB).
            del task, future, key

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
        if len(self._pending) > len(self._threads):  # every thread has a call to make
            thread = threading.Thread(target=self._serve, name=f"{self._name}-{len(self._threads)}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self._tasks.put((future, key))
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
        """Cancel what has not started, and let the threads end once their call is over."""
        self.cancel()
        for _ in self._threads:
            self._tasks.put(None)
