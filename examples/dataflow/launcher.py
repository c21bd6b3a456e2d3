"""Flex Template entry point: run the Currents -> Segment job with the template's parameters.

The Flex Template launcher runs this file with the launch parameters as `--name=value` options, plus
the Dataflow options it adds itself (`--runner=DataflowRunner`, `--project`, `--region`, staging and
temp locations, `--setup_file`, ...), and exits with the job's status: 1 on a configuration error, which
fails the launch with the job's one-line message in the launcher log.

When the launcher asks only for the job graph (`--template_location`), Dataflow starts the job after this
program has ended: the job prints that no counters are available yet, and they are on the job's
Dataflow page, its dead letters under --dead_letter_output.
"""
from currents_to_segment.pipeline.main import cli

if __name__ == "__main__":
    cli()
