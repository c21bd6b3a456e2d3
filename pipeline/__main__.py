"""`python -m pipeline`: run the Currents → Segment job (see pipeline.main)."""
from pipeline.main import cli

cli()
