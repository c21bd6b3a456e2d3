"""`python -m pipeline`: run the Currents → Segment job (see pipeline.main)."""
from currents_to_segment.pipeline.main import cli

cli()
