"""Listing and opening the files to read, on every Beam filesystem, with one S3 client per worker.

Beam's S3 filesystem builds a new boto3 session and client for every operation: each pattern listed,
each file opened. Building one reloads botocore's service descriptions, about 0.2 s of CPU on a
small machine, which adds minutes to a day of Currents files read on one machine. `FileAccess` lists
`s3://bucket/prefix/**` patterns (what --currents_root produces) and opens s3:// files through one
client per process, built on first use and shared by every step of the job through Beam's `Shared`; local
`<folder>/**` patterns are walked directly (see _walk); every other pattern and path goes through Beam's
filesystems unchanged.
"""
import os
import re

from apache_beam.io.filesystem import CompressionTypes, FileMetadata
from apache_beam.io.filesystems import FileSystems
from apache_beam.utils.shared import Shared

_GLOB = re.compile(r"[*?\[\]{}]")


def s3_prefix(pattern):
    """The prefix an `s3://bucket/prefix/**` pattern matches every key under, or None for any other
    pattern (other schemes, other globs)."""
    if pattern.startswith("s3://") and pattern.endswith("/**") and not _GLOB.search(pattern[:-3]):
        return pattern[:-2]
    return None


def local_folder(pattern):
    """The local folder a `<folder>/**` pattern matches every file under, or None for any other pattern."""
    if "://" not in pattern and pattern.endswith("/**") and not _GLOB.search(pattern[:-3]):
        return pattern[:-3]
    return None


def _walk(folder):
    """What Beam's match of `<folder>/**` gives on a local disk (every file below, at any depth), walked directly:
    Beam's match compiles a pattern and stats each file for every call, some 6 times slower for a watch that lists
    thousands of hour partitions."""
    found = []
    for base, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(base, name)
            try:
                stat = os.stat(path)
            except OSError:
                continue  # gone since the listing
            found.append(FileMetadata(path, stat.st_size, stat.st_mtime))
    return sorted(found, key=lambda metadata: metadata.path)


class FileAccess:
    """match(pattern) → FileMetadata list and open(path) → a binary stream (read as stored).

    `s3_options` are the job's pipeline options (endpoint, credentials, region of S3), or None to use
    Beam's filesystems for everything; paths on other schemes always go through Beam's filesystems. Instances
    are built at pipeline construction and pickled to the workers; the client is created on each worker at
    first use, one per process for all the copies of one FileAccess (`shared`: an apache_beam Shared handle).
    """

    def __init__(self, s3_options=None, shared=None):
        self._s3_options = s3_options
        self._shared = shared if shared is not None else Shared()
        self._s3io = None

    def __getstate__(self):
        return {"_s3_options": self._s3_options, "_shared": self._shared, "_s3io": None}

    def _s3(self):
        if self._s3io is None:
            from apache_beam.io.aws import s3io  # pylint: disable=import-outside-toplevel  # the aws extra
            options = self._s3_options
            self._s3io = self._shared.acquire(lambda: s3io.S3IO(options=options))
        return self._s3io

    def match(self, pattern):
        """The files a pattern matches (folder markers, keys ending in "/", left out)."""
        folder = local_folder(pattern)
        if folder is not None:
            return _walk(folder)
        prefix = s3_prefix(pattern) if self._s3_options is not None else None
        if prefix is None:
            return FileSystems.match([pattern])[0].metadata_list
        return [FileMetadata(path, size, updated)
                for path, (size, updated) in self._s3().list_files(prefix, with_metadata=True)
                if not path.endswith("/")]

    def open(self, path):
        """A binary stream of the file's stored bytes (no decompression by file extension)."""
        if self._s3_options is not None and path.startswith("s3://"):
            return self._s3().open(path, "rb")
        return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
