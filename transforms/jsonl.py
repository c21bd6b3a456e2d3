"""JSON-lines output files, shared by the dead letters, the dry-run requests and the ledger.

Each run writes files of its own, one per bundle and flush that had something to write, named
`<directory>/<name>-<run id>-<part>.jsonl`; nothing a run writes replaces or deletes another run's files,
whatever the filesystem. A file is written under a hidden temporary name and renamed when complete, so a
run that stops midway leaves no half-written file under a name that readers pick up: the temporary is
`.<file name>.<pid>@<host>.tmp`, named for the process writing it. A writer that fails removes its temporary;
`discard_open_parts` (also run when the process exits: an interrupted run) removes those this process still has
open, whose lines were never committed (what they account for is not finished, so a later run does it again);
and `remove_stale_temporaries` removes those of processes of this host that are gone (killed), never those of a
process that runs, nor those it cannot tell (another host's, or without an owner in their name).

`AccountedLines` is told, with each line, what the line accounts for ((key, units) pairs), and when it commits
the file holding them it returns those counts: a delivery (transforms.delivery) takes them as proof that its dead
letters are durably written.
"""
import atexit
import collections
import os
import re
import socket
import threading
import uuid
import weakref

from apache_beam.io.filesystems import FileSystems

DEAD_LETTERS = "dead_letters"
REQUESTS = "requests"
LEDGER_ENTRIES = "entries"


class OutputWriteError(Exception):
    """An output file could not be written: the run stops, and says what was lost."""


def output_path(directory, name, run_id, part):
    """The path of one output file of a run."""
    return f"{directory.rstrip('/')}/{name}-{run_id}-{part}.jsonl"


def output_pattern(directory, name, run_id="*"):
    """The files of `name` in directory: of one run, or of every run."""
    return f"{directory.rstrip('/')}/{name}-{'' if run_id == '*' else run_id + '-'}*.jsonl"


def _host():
    """This host's name, and its process-id namespace where there is one (two containers of one hostname do not
    share their process ids): who can tell whether a writer still runs."""
    name = socket.gethostname().replace("/", "_").replace("@", "_") or "localhost"
    try:
        namespace = re.sub(r"\D", "", os.readlink("/proc/self/ns/pid"))
    except OSError:
        return name
    return f"{name}~{namespace}" if namespace else name


_HOST = _host()
# A temporary's name: the final file's, hidden, then who writes it (the process id, its host).
_TEMPORARY = re.compile(r"\.(?P<final>.+)\.(?P<pid>\d+)@(?P<host>[^/@]+)\.tmp")


def _temporary(path):
    folder, _, file_name = path.rpartition("/")
    return f"{folder}/.{file_name}.{os.getpid()}@{_HOST}.tmp"


def _alive(pid):
    """True unless no process of this id runs on this host (one that cannot be signalled still runs)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def remove_stale_temporaries(directory, name):
    """Remove the temporaries of `name` files in directory whose writer is gone (a process of this host that no
    longer runs: an interrupted run's); the paths removed. Best effort: a folder that cannot be listed, or a file
    that cannot be removed, is left as it is."""
    removed = []
    try:
        found = FileSystems.match([f"{directory.rstrip('/')}/.{name}-*.tmp"])[0].metadata_list
    except Exception:  # pylint: disable=broad-except  # each filesystem fails its own way; nothing is lost
        return removed
    for metadata in found:
        owner = _TEMPORARY.fullmatch(metadata.path.rpartition("/")[2])
        if owner is None or owner["host"] != _HOST or _alive(int(owner["pid"])):
            continue
        try:
            FileSystems.delete([metadata.path])
            removed.append(metadata.path)
        except Exception:  # pylint: disable=broad-except
            pass
    return removed


_open_parts = weakref.WeakSet()  # the PartFiles of this process with a temporary open
_open_lock = threading.Lock()


def discard_open_parts(local_only=False):
    """Remove the temporaries this process's PartFiles hold open (lines never committed): for a run that is
    interrupted, and when the process exits (local_only: those on this machine's disk; in a bucket an object
    exists only once its writer closes it, so an interrupted writer leaves none)."""
    with _open_lock:
        parts = list(_open_parts)
    for part in parts:
        if not local_only or part.local:
            part.discard()


atexit.register(discard_open_parts, local_only=True)


class PartFile:
    """One output file of a run, written under a hidden temporary name until `commit` renames it; Beam-free.

    `fail` (an exception) is raised as OutputWriteError with what could not be written where."""

    def __init__(self, directory, name, run_id, what):
        self._directory, self._name, self._run_id, self._what = directory, name, run_id, what
        self._stream = self._path = self._temporary = None

    def _fail(self, error):
        """Remove the temporary file (on a full disk it would keep the disk full) and raise OutputWriteError,
        which names the file when it could not be removed."""
        left = self._discard()
        raise OutputWriteError(f"cannot write {self._what} to {self._directory}: "
                               f"{type(error).__name__}: {error}".splitlines()[0]
                               + (f" (its temporary file {left} could not be removed)" if left else "")) from error

    def discard(self):
        """Drop the lines written since the last commit, and their temporary file (a run that stops)."""
        self._discard()

    @property
    def local(self):
        """True when the temporary open is on this machine's disk (a path without a scheme)."""
        temporary = self._temporary
        return temporary is not None and "://" not in temporary

    def _discard(self):
        """Close and delete the temporary file; the path when it is still there, else None."""
        stream, self._stream = self._stream, None
        if stream is None:
            return None
        with _open_lock:
            _open_parts.discard(self)
        temporary = self._temporary
        try:
            stream.close()
        except Exception:  # pylint: disable=broad-except  # the close of a failed write fails again
            pass
        try:
            FileSystems.delete([temporary])
            return None
        except Exception:  # pylint: disable=broad-except
            try:
                return temporary if FileSystems.exists(temporary) else None
            except Exception:  # pylint: disable=broad-except
                return temporary

    def write(self, line):
        try:
            if self._stream is None:
                self._path = output_path(self._directory, self._name, self._run_id, uuid.uuid4().hex[:12])
                self._temporary = _temporary(self._path)
                self._stream = FileSystems.create(self._temporary)
                with _open_lock:
                    _open_parts.add(self)
            self._stream.write(line.encode("utf-8") + b"\n")
        except Exception as error:  # pylint: disable=broad-except  # each filesystem fails its own way
            self._fail(error)

    def commit(self):
        """Make the lines written so far final (a file of its own); the next line starts a new file."""
        if self._stream is None:
            return
        try:
            self._stream.close()
            FileSystems.rename([self._temporary], [self._path])
        except Exception as error:  # pylint: disable=broad-except
            self._fail(error)
        self._stream = None
        with _open_lock:
            _open_parts.discard(self)


class AccountedLines:
    """The lines of one writer of a run, in PartFiles, and what they account for; Beam-free.

    `write(line, accounts)` adds a line and its (key, units) pairs; `commit()` makes the lines written so far
    final and returns the (key, units) they account for, summed per key."""

    def __init__(self, directory, name, run_id, what):
        self._part = PartFile(directory, name, run_id, what)
        self._accounts = collections.Counter()

    def write(self, line, accounts):
        self._part.write(line)
        for key, units in accounts:
            self._accounts[key] += units

    def commit(self):
        self._part.commit()
        committed, self._accounts = list(self._accounts.items()), collections.Counter()
        return committed

    def discard(self):
        """Drop the lines written since the last commit (and their temporary file), and what they account for."""
        self._part.discard()
        self._accounts = collections.Counter()
