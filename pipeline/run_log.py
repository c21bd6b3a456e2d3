"""Where a run's output goes on this machine: the job's own lines (progress, warnings, errors, the summary) to the
terminal, everything else (Beam's and the runner's logs, the tracebacks of their threads, what worker processes
print) to the log file of the run, so that a failure reads as one line and a summary, never as a wall of
tracebacks; the line names the log.

While a run is contained (`RunLog`), file descriptor 2 is the log file, which the worker processes of
multi-processing and the Prism runner inherit; sys.stderr is the terminal (a duplicate of the former descriptor
2, or the stream that stood for it, as under pytest); the root logger writes to the log (so that Beam's call to
logging.basicConfig adds nothing), and so do Python warnings and the uncaught exceptions of threads; and a thread
copies the job's lines that worker processes wrote into the log (those starting with progress.LINE_PREFIXES) to
the terminal. When a thread of Beam's says a worker process died (multi-processing), this process is sent
WORKER_FAILED, so that the run stops with that failure instead of waiting for the dead worker. `close` restores all of it. The command line never closes it: Beam stops its runner processes at
interpreter exit, after the run, and what their threads print then belongs in the log too.
"""
import io
import logging
import os
import signal
import sys
import threading
import traceback

from currents_to_segment.transforms import progress

_FORWARD_SECONDS = 0.2
WORKER_FAILED = signal.SIGUSR1
# What Beam's multi-processing raises, in a thread of its own, when a worker process exits.
_WORKER_EXITED = "Worker subprocess exited with return code"
# Beam announces the start and end of the runner processes it keeps (Prism, job servers) as warnings, the end
# one at interpreter exit, after the run: they are not the job's to show.
_ANNOUNCING_LOGGER = "apache_beam.utils.subprocess_server"


class RunLog:
    """The run's output kept apart from the job's lines, in `path` (see the module doc)."""

    def __init__(self, path):
        self.path = path
        self._saved_fd = None
        self._saved = {}
        self._handler = None
        self._log = None
        self._console = None
        self._stop = threading.Event()
        self._forwarder = None
        self._forwarded = 0
        self.worker_failure = None  # what Beam said when a worker process died

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc_info):
        self.close()
        return False

    def open(self):
        """Keep the run's output apart from now on; returns self."""
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        sys.stdout.flush()
        sys.stderr.flush()
        self._log = open(self.path, "a", encoding="utf-8", errors="backslashreplace", buffering=1)
        self._saved_fd = os.dup(2)
        self._console = self._terminal(sys.stderr)
        os.dup2(self._log.fileno(), 2)
        self._saved = {"stderr": sys.stderr, "threading": threading.excepthook,
                       "announcing": logging.getLogger(_ANNOUNCING_LOGGER).level}
        sys.stderr = self._console
        threading.excepthook = self._thread_failed
        self._handler = logging.StreamHandler(self._log)
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger().addHandler(self._handler)
        logging.captureWarnings(True)
        logging.getLogger(_ANNOUNCING_LOGGER).setLevel(logging.ERROR)
        self._forwarder = threading.Thread(target=self._forward_loop, name="run-log-forwarder", daemon=True)
        self._forwarder.start()
        return self

    def _terminal(self, stderr):
        """What the job's lines are written to: a stream on a duplicate of descriptor 2 when sys.stderr writes
        there, else sys.stderr itself (a stream that captures, as under pytest)."""
        try:
            writes_to_fd2 = stderr.fileno() == 2
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            writes_to_fd2 = False
        if not writes_to_fd2:
            return stderr
        return open(os.dup(self._saved_fd), "w", encoding=getattr(stderr, "encoding", None) or "utf-8",
                    errors="backslashreplace", buffering=1)

    def _thread_failed(self, args):
        """threading.excepthook: a thread's uncaught exception, with its traceback, into the log."""
        if args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread is not None else "?"
        self._log.write(f"Exception in thread {name}:\n"
                        + "".join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback)))
        if self.worker_failure is None and _WORKER_EXITED in str(args.exc_value):
            self.worker_failure = f"a worker process failed: {str(args.exc_value).strip().splitlines()[0]}"
            if callable(signal.getsignal(WORKER_FAILED)):  # only while a run listens for it (main._Signals)
                os.kill(os.getpid(), WORKER_FAILED)

    def _forward(self):
        """Copy the job's lines that reached the log since the last call to the terminal."""
        try:
            with open(self.path, "rb") as stream:
                stream.seek(self._forwarded)
                data = stream.read()
        except OSError:
            return
        end = data.rfind(b"\n") + 1
        self._forwarded += end
        for line in data[:end].decode("utf-8", "backslashreplace").splitlines():
            if line.startswith(progress.LINE_PREFIXES):
                self._console.write(line + "\n")
        self._console.flush()

    def _forward_loop(self):
        while not self._stop.wait(_FORWARD_SECONDS):
            self._forward()

    def close(self):
        """Give the terminal back its descriptor, streams and hooks."""
        self._stop.set()
        self._forwarder.join()
        self._forward()
        logging.captureWarnings(False)
        logging.getLogger().removeHandler(self._handler)
        threading.excepthook = self._saved["threading"]
        sys.stderr.flush()
        sys.stderr = self._saved["stderr"]
        os.dup2(self._saved_fd, 2)
        os.close(self._saved_fd)
        if self._console is not sys.stderr:
            self._console.close()
        self._log.close()
        # The runner processes Beam keeps end at interpreter exit: keep their announcement out of the terminal.
        logging.getLogger(_ANNOUNCING_LOGGER).setLevel(max(self._saved["announcing"], logging.ERROR))
