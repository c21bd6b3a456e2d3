"""Assembly: the job's graph, built from one validated JobConfig.

    ListCurrentsFiles (each file once) → [SkipFilesInLedger]
    (or, with --watch: WatchCurrentsFiles: a listing every interval, each new file version once, the ledger's skipped)
      → RouteByFamily → DeliverToSegment[<family>] → [RecordInLedger[<family>]]   one branch per family
                      → DeliverToSegment[unsupported] → [RecordInLedger[unsupported]]   types the mapping does not send

Only file paths travel between the steps before delivery, and each family's delivery finishes a file in the call
that read it (transforms.delivery), so a branch's ledger records its files as they finish. The branches are never
merged (a Flatten would make runners that do not fuse one, FnApiRunner, hold a branch's output until it ends).
The sending objects each worker process shares (breaker, pacer, time throttled) come through one Beam `Shared`
handle, made here for this job.
"""
from apache_beam.utils.shared import Shared

from currents_to_segment.transforms.deliver import DeliverToSegment
from currents_to_segment.transforms.file_access import FileAccess
from currents_to_segment.transforms.files import UNSUPPORTED, ListCurrentsFiles, RouteByFamily
from currents_to_segment.transforms.ledger import RecordInLedger, SkipFilesInLedger
from currents_to_segment.transforms.watch import WatchCurrentsFiles


def build(pipeline, config):
    """Add the whole job described by `config` (a pipeline.config.JobConfig) to `pipeline`."""
    selection, delivery = config.selection, config.delivery
    access = FileAccess(config.s3_options)
    ledger = config.ledger if config.skip_recorded else None
    if config.watch:
        files = pipeline | "WatchCurrentsFiles" >> WatchCurrentsFiles(
            config.watch, access, ledger, selection.ledger_scope, config.destination)
    else:
        files = pipeline | "ListCurrentsFiles" >> ListCurrentsFiles(selection.patterns, access)
        if ledger:
            files = files | "SkipFilesInLedger" >> SkipFilesInLedger(ledger, selection.ledger_scope,
                                                                     config.destination)
    branches = files | "RouteByFamily" >> RouteByFamily(delivery.mapping, access, selection.event_types,
                                                        config.flush_seconds)
    sending = Shared()
    for family in (*delivery.mapping.families, UNSUPPORTED):
        finished = branches[family] | f"DeliverToSegment[{family}]" >> DeliverToSegment(delivery, access, sending,
                                                                                         family)
        if config.ledger:
            finished | f"RecordInLedger[{family}]" >> RecordInLedger(  # pylint: disable=expression-not-assigned
                config.ledger, config.run_id, scope=selection.ledger_scope, destination=config.destination,
                flush_seconds=config.flush_seconds, family=family)
