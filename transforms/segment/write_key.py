"""Where the Segment write key comes from, resolved where it is used. Imports no Beam module.

The key never travels in pipeline options (runners display those): the job carries a KeySource,
and the sink resolves it when it starts. In order of preference:

1. the environment (`SEGMENT_WRITE_KEY`): the variable's name travels, not the key;
2. a file (`--segment_write_key_file`, read by the `read_file` the caller gives: any Beam filesystem): its path
   travels;
3. GCP Secret Manager (`--segment_write_key_secret projects/P/secrets/S/versions/V`): its name travels;
4. `--segment_write_key KEY`: the key itself is pickled into the job (never shown, but stored).
"""
import os
from typing import NamedTuple

ENV, FILE, SECRET, VALUE = "env", "file", "secret", "value"


class WriteKeyError(Exception):
    """The write key could not be read; the message never contains the key."""


class KeySource(NamedTuple):
    """A kind (ENV, FILE, SECRET or VALUE) and its reference (variable, path, secret name or the key)."""
    kind: str
    reference: str

    def __repr__(self):
        shown = "***" if self.kind == VALUE else self.reference
        return f"KeySource({self.kind}, {shown})"

    def __str__(self):
        """Where the key comes from, in words (never the key itself)."""
        return {ENV: f"${self.reference}", FILE: f"--segment_write_key_file {self.reference}",
                SECRET: f"--segment_write_key_secret {self.reference}",
                VALUE: "--segment_write_key"}.get(self.kind, self.kind)


def _read_local_file(path):
    with open(path, "rb") as stream:
        return stream.read()


def _from_secret_manager(name):
    try:
        from google.cloud import secretmanager  # pylint: disable=import-outside-toplevel
    except ImportError as error:
        raise WriteKeyError("--segment_write_key_secret needs the gcp extra: pip install "
                            "'braze-currents-to-segment[gcp]'") from error
    response = secretmanager.SecretManagerServiceClient().access_secret_version(name=name)
    return response.payload.data.decode("utf-8").strip()


def _reason(error):
    """An error in one line without Python's quoting: "Is a directory", "No such file or directory"."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return (f"{type(error).__name__}: {error}".splitlines() or [type(error).__name__])[0]


def resolve(source, read_file=_read_local_file):
    """The write key of a KeySource (`read_file(path)` → bytes reads a key file); WriteKeyError when it is missing
    or cannot be read."""
    readers = {ENV: lambda name: os.environ.get(name, "").strip(),
               FILE: lambda path: read_file(path).decode("utf-8").strip(),
               SECRET: _from_secret_manager, VALUE: lambda key: key}
    try:
        key = readers[source.kind](source.reference)
    except WriteKeyError:
        raise
    except Exception as error:  # pylint: disable=broad-except  # each store fails its own way
        raise WriteKeyError(f"cannot read the write key from {source}: {_reason(error)}") from None
    if not key:
        raise WriteKeyError(f"the write key from {source} is empty")
    return key
