"""Assembly: the job as one chain of labelled stages, built from one validated JobConfig.

    read → [keep event time] → drop users without id → split by family → per family: map → batch → write
    every stage's dead letters → one dead-letter output (durable, per bundle)
    files read + what every stage handled (drops, deliveries, durable dead letters) → [ledger]

Events are never shuffled: from a file's bytes to Segment's answer they stream through fused stages, and
are stamped with their event time once, by the read stage. Only file paths are grouped (read once each,
and spread over the workers). The ledger takes the write stage's deliveries and the dead-letter writer's
output as its input: a file is recorded only once each of its events is delivered, dropped and counted,
or durably dead-lettered.
"""
import apache_beam as beam

from transforms.batch import BatchForSegment
from transforms.dead_letters import WriteDeadLetters
from transforms.elements import DEAD_LETTER, HANDLED
from transforms.filter import DropUsersWithoutId, KeepEventTime
from transforms.ledger import RecordInLedger
from transforms.map import ToSegmentTrack
from transforms.read import FILES, ReadCurrentsFiles
from transforms.route import SplitByFamily
from transforms.write import DELIVERED, WriteToSegment


def build(pipeline, config):
    """Add the whole job described by `config` (a pipeline.config.JobConfig) to `pipeline`."""
    selection = config.selection
    read = pipeline | "Read Currents files" >> ReadCurrentsFiles(
        selection.patterns, ledger_dir=config.ledger if config.skip_recorded else None,
        ledger_scope=selection.ledger_scope, destination=config.destination, s3_options=config.s3_options,
        progress_settings=config.progress, event_types=selection.event_types)
    events, handled = read["events"], []
    if config.by_event_time:
        in_range = events | "Keep event time" >> KeepEventTime(
            int(selection.start.timestamp()), int(selection.end.timestamp()))
        events, handled = in_range.events, [in_range[HANDLED]]
    mapping = config.mapping.mapping
    identified = events | "Drop users without id" >> DropUsersWithoutId(config.mapping.include_anonymous)
    families = identified.events | "Split by family" >> SplitByFamily(mapping)
    handled += [identified[HANDLED], families[HANDLED]]
    dead_letters = [read[DEAD_LETTER]]
    for family in mapping.families:
        # Each family streams on to Segment on its own: merging the branches first (a Flatten) would make
        # runners that do not fuse a Flatten (FnApiRunner) hold every event in memory in between.
        mapped = families[family] | f"Map {family}" >> ToSegmentTrack(config.mapping)
        written = (mapped.events
                   | f"Batch {family}" >> BatchForSegment(config.batching, config.checkpoint_seconds)
                   | f"Write {family} to Segment" >> WriteToSegment(
                       config.client, config.key_source, dry_run_output=config.dry_run_output, run_id=config.run_id,
                       progress_settings=config.progress, checkpoint_seconds=config.checkpoint_seconds))
        dead_letters += [mapped[DEAD_LETTER], written[DEAD_LETTER]]
        handled.append(written[DELIVERED])
    dead_lettered = (dead_letters
                     | "Merge dead letters" >> beam.Flatten()
                     | "Dead letters" >> WriteDeadLetters(config.dead_letter_output, config.run_id,
                                                          config.checkpoint_seconds))
    if config.ledger:
        _ = ([read[FILES]] + handled + [dead_lettered]
             | "Merge files and handled" >> beam.Flatten()
             | "Ledger" >> RecordInLedger(config.ledger, config.run_id, scope=selection.ledger_scope,
                                          destination=config.destination,
                                          checkpoint_seconds=config.checkpoint_seconds))
