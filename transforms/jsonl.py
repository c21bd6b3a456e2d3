"""JSON-lines output files, shared by the dead letters, the dry-run requests and the ledger.

Each run writes files of its own, one per bundle and flush that had something to write, named
`<directory>/<name>-<run id>-<part>.jsonl`; nothing a run writes replaces or deletes another run's files,
whatever the filesystem. A file is written under a hidden temporary name and renamed when complete, so a
run that stops midway leaves no half-written file under a name that readers pick up.

`AccountedLines` is told, with each line, what the line accounts for ((key, units) pairs), and when it commits
the file holding them it returns those counts: a delivery (transforms.delivery) takes them as proof that its dead
letters are durably written.
"""
import collections
import uuid

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


def _temporary(path):
    folder, _, file_name = path.rpartition("/")
    return f"{folder}/.{file_name}.tmp"


class PartFile:
    """One output file of a run, written under a hidden temporary name until `commit` renames it; Beam-free.

    `fail` (an exception) is raised as OutputWriteError with what could not be written where."""

    def __init__(self, directory, name, run_id, what):
        self._directory, self._name, self._run_id, self._what = directory, name, run_id, what
        self._stream = self._path = None

    def _fail(self, error):
        """Remove the temporary file (on a full disk it would keep the disk full) and raise OutputWriteError,
        which names the file when it could not be removed."""
        left = self._discard()
        raise OutputWriteError(f"cannot write {self._what} to {self._directory}: "
                               f"{type(error).__name__}: {error}".splitlines()[0]
                               + (f" (its temporary file {left} could not be removed)" if left else "")) from error

    def _discard(self):
        """Close and delete the temporary file; the path when it is still there, else None."""
        stream, self._stream = self._stream, None
        if stream is None:
            return None
        temporary = _temporary(self._path)
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
                self._stream = FileSystems.create(_temporary(self._path))
            self._stream.write(line.encode("utf-8") + b"\n")
        except Exception as error:  # pylint: disable=broad-except  # each filesystem fails its own way
            self._fail(error)

    def commit(self):
        """Make the lines written so far final (a file of its own); the next line starts a new file."""
        if self._stream is None:
            return
        try:
            self._stream.close()
            FileSystems.rename([_temporary(self._path)], [self._path])
        except Exception as error:  # pylint: disable=broad-except
            self._fail(error)
        self._stream = None


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
