"""`compact-ledger LEDGER`: merge the small entry files of a ledger (see transforms.ledger_files), for a schedule.

    python -m pipeline compact-ledger gs://my-bucket/segment-ledger

Runs write an entry file per bundle and flush, and merge a partition's files themselves once it holds more than
ledger_files.COMPACT_FILES; this merges every partition now (a listing of the whole ledger, so run it on a
schedule, not with every run). Safe beside running jobs: a merged file is complete before the files it replaces
are deleted, files of runs that started less than --older_than_hours ago are left alone, and a file a run writes
meanwhile is not touched. Storage options (S3 endpoint, ...) pass through as for a run.
Exit status: 0 done; 1 the ledger cannot be read or written (one line).
"""
import argparse
import sys

from apache_beam.io.filesystem import BeamIOError

from currents_to_segment.pipeline.options import ConfigError, storage_reason
from currents_to_segment.pipeline.replay import use_storage_options
from currents_to_segment.transforms import ledger_files


def _parser():
    parser = argparse.ArgumentParser(prog="python -m pipeline compact-ledger", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 2)[2])
    parser.add_argument("ledger", help="the --ledger folder of the runs")
    parser.add_argument("--older_than_hours", type=float, default=ledger_files.COMPACT_AFTER_SECONDS / 3600,
                        help="leave alone the files of runs started less than this many hours ago (a run that fails "
                             "removes its own entries). Default %(default)s.")
    return parser


def main(argv=None):
    """Command line `compact-ledger LEDGER`; returns the exit status."""
    try:
        args, extra = _parser().parse_known_args(sys.argv[1:] if argv is None else list(argv))
    except SystemExit as done:  # --help, or a usage error (argparse printed it)
        return done.code or 0
    if args.older_than_hours < 0:
        print(f"error: --older_than_hours must not be negative, got {args.older_than_hours}", file=sys.stderr)
        return 1
    try:
        use_storage_options(extra)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    try:
        moved, old = ledger_files.migrate(args.ledger)
        if old:
            print(f"ledger {args.ledger}: moved {moved:,} entries of {old:,} files of the first layout into partitions")
        merged, files = ledger_files.compact(args.ledger, older_than=args.older_than_hours * 3600)
    except (BeamIOError, OSError, ValueError) as error:
        print(f"error: cannot compact the ledger {args.ledger}: {storage_reason(error)}", file=sys.stderr)
        return 1
    print(f"ledger {args.ledger}: {files:,} files merged into one per partition in {merged:,} partitions")
    return 0
