"""`python -m pipeline`: run the Currents → Segment job (see pipeline.main)."""
import sys

from pipeline.main import main

sys.exit(main())
