"""Cutting calls into requests (transforms.segment.batching): no request over the byte or event limit, no event
lost, doubled or reordered; per event-time window, within a bounded buffer."""
from hypothesis import given, settings, strategies as st

from currents_to_segment.transforms.segment.batching import Batcher, BatchSettings
from currents_to_segment.transforms.segment.api import plan_batches, request_body

ENVELOPE = 70


def body_size(sizes):
    return ENVELOPE + sum(sizes) + max(len(sizes) - 1, 0)


@settings(max_examples=300, deadline=None)
@given(sizes=st.lists(st.integers(min_value=2, max_value=32_000), max_size=400),
       max_events=st.integers(min_value=1, max_value=2_500),
       max_bytes=st.integers(min_value=32_000 + ENVELOPE, max_value=500_000))
def test_batches_respect_both_limits_and_keep_every_event_once(sizes, max_events, max_bytes):
    batches = plan_batches(sizes, max_bytes=max_bytes, max_events=max_events, envelope=ENVELOPE)
    assert [i for batch in batches for i in batch] == list(range(len(sizes)))
    for batch in batches:
        assert 1 <= len(batch) <= max_events
        assert body_size([sizes[i] for i in batch]) <= max_bytes


@settings(max_examples=100, deadline=None)
@given(sizes=st.lists(st.integers(min_value=2, max_value=5_000), min_size=1, max_size=300))
def test_batches_are_full_before_a_new_one_starts(sizes):
    max_bytes, max_events = 40_000, 50
    batches = plan_batches(sizes, max_bytes=max_bytes, max_events=max_events, envelope=ENVELOPE)
    for batch, following in zip(batches, batches[1:]):
        grown = [sizes[i] for i in batch] + [sizes[following.start]]
        assert len(batch) == max_events or body_size(grown) > max_bytes


def test_size_formula_matches_the_real_request_body():
    payloads = [b'{"a":1}', b'{"bb":"x"}', b"{}"]
    key = "k" * 33
    envelope = len(request_body([], key, "2026-11-28T12:00:00.000Z"))
    assert len(request_body(payloads, key, "2026-11-28T12:00:00.000Z")) == (
        envelope + sum(map(len, payloads)) + len(payloads) - 1)


def test_limits_are_exact_at_the_boundary():
    # Three 100-byte events fit 70 + 300 + 2 = 372 bytes exactly; one byte less splits them.
    assert plan_batches([100] * 3, max_bytes=372, max_events=10, envelope=ENVELOPE) == [range(0, 3)]
    assert plan_batches([100] * 3, max_bytes=371, max_events=10, envelope=ENVELOPE) == [range(0, 2), range(2, 3)]
    assert plan_batches([1] * 5, max_bytes=10_000, max_events=2, envelope=ENVELOPE) == [
        range(0, 2), range(2, 4), range(4, 5)]
    assert plan_batches([], max_bytes=10_000, max_events=2, envelope=ENVELOPE) == []


# --- Batcher: requests filled per window, within a bounded buffer ---------------------------------------



@settings(max_examples=200, deadline=None)
@given(sizes=st.lists(st.integers(min_value=2, max_value=32_000), max_size=300),
       max_events=st.integers(min_value=1, max_value=2_500),
       max_bytes=st.integers(min_value=32_000 + ENVELOPE, max_value=500_000))
def test_one_window_is_cut_exactly_as_plan_batches_cuts_it(sizes, max_events, max_bytes):
    batcher = Batcher(BatchSettings(60, max_bytes, max_events, ENVELOPE), max_buffered_bytes=10 ** 9)
    requests = [items for index, size in enumerate(sizes) for _, items in batcher.add("w", index, size)]
    requests += [items for _, items in batcher.drain()]
    assert requests == [list(batch) for batch in plan_batches(sizes, max_bytes=max_bytes, max_events=max_events,
                                                              envelope=ENVELOPE)]
    assert batcher.buffered_bytes == 0


@settings(max_examples=200, deadline=None)
@given(items=st.lists(st.tuples(st.integers(min_value=0, max_value=30), st.integers(min_value=2, max_value=9_000)),
                      max_size=400))
def test_windows_never_mix_and_the_buffer_stays_bounded(items):
    settings_ = BatchSettings(60, 40_000, 50, ENVELOPE)
    batcher = Batcher(settings_, max_buffered_bytes=60_000, max_open=4)
    requests = []
    for index, (key, size) in enumerate(items):
        requests += batcher.add(key, (key, index, size), size)
        assert batcher.buffered_bytes <= 60_000 and len([k for k in range(31) if k in batcher]) <= 4
    requests += batcher.drain()
    assert sorted(item for _, request in requests for item in request) == sorted(
        (key, index, size) for index, (key, size) in enumerate(items))
    for key, request in requests:
        assert {item[0] for item in request} == {key}
        assert len(request) <= 50 and body_size([item[2] for item in request]) <= 40_000
