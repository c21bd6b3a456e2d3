"""Braze Currents → Segment pipeline: options, assembly and entry point."""
