"""Braze Currents: Avro container files block by block, the event catalogs, records and how they become Segment
track calls. Plain Python: nothing here imports Beam."""
