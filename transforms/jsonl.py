"""JSON-lines output files, shared by the dead letters, the dry-run requests and the ledger."""
import apache_beam as beam


def write_jsonl(directory, name):
    """A transform writing text lines as `<directory>/<name>-SSSSS-of-NNNNN.jsonl` on any Beam filesystem.

    Nothing is written when there are no lines: an empty file is no news, and object stores refuse
    to complete the empty multipart upload Beam would make for it.
    """
    return beam.io.WriteToText(f"{directory.rstrip('/')}/{name}", file_name_suffix=".jsonl", skip_if_empty=True)
