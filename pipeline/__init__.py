"""Braze Currents → Segment pipeline: options, assembly and entry point.

Importing Apache Beam without its gcp extra logs a warning on the root logger ("apitools not found, and
bigquery client libraries are not available ..."): it is not the job's to show, and it would break the job's
promise of one-line errors, so the root logger leaves that one record out. It is set here, before anything of
the job imports Beam.
"""
import logging


class _BeamImportNoise(logging.Filter):
    """Leaves out the warning Beam logs at import when its gcp extra is not installed."""

    def filter(self, record):
        return not record.getMessage().startswith("apitools not found")


logging.getLogger().addFilter(_BeamImportNoise())
