"""Assembly: the job as one chain of labelled stages.

    read → [keep event time] → drop anonymous users → split by family → map each family → batch → write
    every stage's dead letters → one dead-letter output → [ledger entries of the files read]
"""
import apache_beam as beam
from apache_beam.options.pipeline_options import S3Options

from transforms.batch import GroupIntoSegmentBatches
from transforms.catalog import FAMILIES
from transforms.dead_letters import WriteDeadLetters
from transforms.elements import DEAD_LETTER
from transforms.filter import DropAnonymousUsers, KeepEventTime
from transforms.ledger import RecordInLedger
from transforms.map import ToSegmentTrack
from transforms.read import ReadCurrentsFiles
from transforms.route import SplitByFamily
from transforms.write import WriteToSegment


def build(pipeline, options, *, selection, client_settings, envelope, integrations=None, protect=None,
          run_id=None):
    """Add the whole job to `pipeline`.

    `selection` says what to read (pipeline.partitions.Selection); `client_settings` are the
    SegmentClient's keyword arguments (unused in a dry run); `envelope` is the size in bytes of an
    empty request body with this write key, so batches are bounded exactly; `run_id` names this run's
    ledger entries; `protect` names the fields to redact or hash ({"redact": ..., "hash": ...}).
    """
    skip_recorded = options.ledger if options.ledger and not options.rerun else None
    read = pipeline | "Read Currents files" >> ReadCurrentsFiles(
        selection.patterns, ledger_dir=skip_recorded, ledger_scope=selection.ledger_scope,
        s3_options=options.view_as(S3Options))
    events = read["events"]
    if options.by_event_time:
        events = events | "Keep event time" >> KeepEventTime(
            int(selection.start.timestamp()), int(selection.end.timestamp()))
    families = (events
                | "Drop anonymous users" >> DropAnonymousUsers()
                | "Split by family" >> SplitByFamily())
    mapped = [families[family] | f"Map {family}" >> ToSegmentTrack(
        options.message_id_namespace, options.passthrough_fields, integrations, protect) for family in FAMILIES]
    batches = ([branch.events for branch in mapped]
               | "Merge families" >> beam.Flatten()
               | "Batch" >> GroupIntoSegmentBatches(
                   window_seconds=options.window_seconds, max_bytes=options.max_batch_bytes,
                   max_events=options.max_batch_events, envelope=envelope, shards=options.shards_per_window))
    undelivered = batches | "Write to Segment" >> WriteToSegment(client_settings, options.dry_run_output)
    dead_letter_files = ([read[DEAD_LETTER], undelivered] + [branch[DEAD_LETTER] for branch in mapped]
                         | "Merge dead letters" >> beam.Flatten()
                         | "Dead letters" >> WriteDeadLetters(options.dead_letter_output))
    if options.ledger:
        # The dead-letter output is complete only after every request: then each file is done.
        _ = read["files"] | "Ledger" >> RecordInLedger(
            options.ledger, run_id, done=dead_letter_files, scope=selection.ledger_scope)
