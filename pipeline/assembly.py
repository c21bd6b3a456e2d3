"""Assembly: the job as one chain of labelled stages.

    read → drop anonymous users → split by family → map each family → batch → write
    and every stage's dead letters → one dead-letter output
"""
import apache_beam as beam

from transforms.batch import GroupIntoSegmentBatches
from transforms.catalog import FAMILIES
from transforms.dead_letters import WriteDeadLetters
from transforms.elements import DEAD_LETTER
from transforms.filter import DropAnonymousUsers
from transforms.map import ToSegmentTrack
from transforms.read import ReadCurrentsFiles
from transforms.route import SplitByFamily
from transforms.write import WriteToSegment


def build(pipeline, options, *, client_settings, envelope):
    """Add the whole job to `pipeline`.

    `client_settings` are the SegmentClient's keyword arguments (unused in a dry run); `envelope` is
    the size in bytes of an empty request body with this write key, so batches are bounded exactly.
    """
    read = pipeline | "Read Currents files" >> ReadCurrentsFiles(options.input)
    families = (read.events
                | "Drop anonymous users" >> DropAnonymousUsers()
                | "Split by family" >> SplitByFamily())
    mapped = [families[family] | f"Map {family}" >> ToSegmentTrack(
        options.message_id_namespace, options.passthrough_fields) for family in FAMILIES]
    batches = ([branch.events for branch in mapped]
               | "Merge families" >> beam.Flatten()
               | "Batch" >> GroupIntoSegmentBatches(
                   window_seconds=options.window_seconds, max_bytes=options.max_batch_bytes,
                   max_events=options.max_batch_events, envelope=envelope, shards=options.shards_per_window))
    undelivered = batches | "Write to Segment" >> WriteToSegment(client_settings, options.dry_run_output)
    _ = ([read[DEAD_LETTER], undelivered] + [branch[DEAD_LETTER] for branch in mapped]
         | "Merge dead letters" >> beam.Flatten()
         | "Dead letters" >> WriteDeadLetters(options.dead_letter_output))
