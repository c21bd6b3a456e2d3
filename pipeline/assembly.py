"""Assembly: the job as one chain of stages, each labelled with its class's name, built from one validated JobConfig.

    list files (each once) → [skip files in the ledger] → read → [keep events in the time range]
    (or, with --watch: list every interval, each new file version once, skipping the ledger's)
      → drop users without id → split by family →
        per family: map → batch → write → dead letters → [ledger]
        types the mapping does not send:                 dead letters → [ledger]

The elements are items (transforms.elements): blocks of records of one file, their calls, requests, dead
letters, and the accounting of each file (what it holds, what was handled). A file's items all travel down one
chain, its family's, from its bytes to Segment's answer, its dead letters and the ledger, through fused stages
with no shuffle and no Flatten; so the ledger records a file as soon as each of its events is delivered,
dropped and counted, or durably dead-lettered, while the run goes on. Only file paths are grouped (each file
read once, the files spread over the workers), and the ledger's files that one bundle could not complete (joined
by path in Beam state, so a watch records them as they complete too).
"""
from transforms.batch import BatchForSegment
from transforms.dead_letters import WriteDeadLetters
from transforms.filter import DropUsersWithoutId, KeepEventsInTimeRange
from transforms.file_access import FileAccess
from transforms.ledger import RecordInLedger, SkipFilesInLedger
from transforms.map import ToSegmentTrack
from transforms.read import ListCurrentsFiles, ReadCurrentsFiles
from transforms.route import UNSUPPORTED, SplitByFamily
from transforms.watch import WatchCurrentsFiles
from transforms.write import WriteToSegment


def _label(stage, branch=None):
    """A stage's label: its class's name, and the branch it is in."""
    return type(stage).__name__ + (f"[{branch}]" if branch else "")


def _apply(items, stage, branch=None):
    return items | _label(stage, branch) >> stage


def build(pipeline, config):
    """Add the whole job described by `config` (a pipeline.config.JobConfig) to `pipeline`."""
    selection, mapping = config.selection, config.mapping.mapping
    access = FileAccess(config.s3_options)
    if config.watch:
        files = _apply(pipeline, WatchCurrentsFiles(config.watch, access, config.ledger if config.skip_recorded else None,
                                                    selection.ledger_scope, config.destination))
    else:
        files = _apply(pipeline, ListCurrentsFiles(selection.patterns, access))
        if config.skip_recorded:
            files = _apply(files, SkipFilesInLedger(config.ledger, selection.ledger_scope, config.destination))
    items = _apply(files, ReadCurrentsFiles(access, selection.event_types, config.progress))
    if config.by_event_time:
        items = _apply(items, KeepEventsInTimeRange(int(selection.start.timestamp()), int(selection.end.timestamp())))
    items = _apply(items, DropUsersWithoutId(config.mapping.include_anonymous))
    branches = _apply(items, SplitByFamily(mapping, config.flush_seconds))
    for family in mapping.families:
        # Each family streams on to Segment on its own: merging the branches (a Flatten) would make runners
        # that do not fuse a Flatten (FnApiRunner) hold every event in memory in between.
        delivered = branches[family]
        for stage in (ToSegmentTrack(config.mapping), BatchForSegment(config.batching, config.flush_seconds),
                      WriteToSegment(config.client, config.key_source, dry_run_output=config.dry_run_output,
                                     run_id=config.run_id, progress_settings=config.progress,
                                     flush_seconds=config.flush_seconds)):
            delivered = _apply(delivered, stage, family)
        _finish(delivered, config, family)
    _finish(branches[UNSUPPORTED], config, UNSUPPORTED)


def _finish(items, config, branch):
    """The end of a chain: its dead letters written, and its files recorded in the ledger."""
    items = _apply(items, WriteDeadLetters(config.dead_letter_output, config.run_id, config.flush_seconds), branch)
    if config.ledger:
        _apply(items, RecordInLedger(config.ledger, config.run_id, scope=config.selection.ledger_scope,
                                     destination=config.destination, flush_seconds=config.flush_seconds), branch)
