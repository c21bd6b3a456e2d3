"""Segment's HTTP tracking API: its limits and framing, the client, the pacer and the breaker, the write key,
requests in flight and how calls are cut into requests. Plain Python: nothing here imports Beam."""
