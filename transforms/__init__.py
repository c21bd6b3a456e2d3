"""Beam transforms of the Currents → Segment pipeline, one module per stage."""
