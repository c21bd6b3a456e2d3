"""Bad input: mutated Currents files neither crash nor hang the job, and everything is accounted for.

Unit tests of the block decoder (transforms.avro_blocks) on single mutations and random byte flips,
then one whole-pipeline run over a corpus of mutated files: the summary balances, every decoded
record is sent or dead-lettered (or counted as an unsupported type), every file that lost something
has a dead letter naming it with the byte range lost, and the intact blocks after a corrupt one are
delivered.
"""
import collections
import datetime
import io
import json
import os
import random
import threading
import time
from typing import List, NamedTuple

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from currents_to_segment.transforms.currents import schemas as currents_schemas
from currents_to_segment.pipeline.sample_bucket import currents_path, make_record
from tests.pipeline_runs import assert_balanced, read_jsonl, run_job
from tests.segment_server import SegmentServer
from currents_to_segment.transforms.currents import avro_blocks
from currents_to_segment.transforms.currents.avro_blocks import BadRegion, CorruptHeader, GoodBlock

SEND = "users.messages.email.Send"
CLICK = "users.messages.email.Click"
BOGUS = "users.messages.email.Bogus"
SYNC = bytes(range(100, 116))
CODECS = ("null", "deflate", "snappy", "zstandard")


class Block(NamedTuple):
    start: int
    end: int  # after its sync marker
    ids: List[str]


class Layout(NamedTuple):
    header_end: int
    blocks: List[Block]


_seq = iter(range(10_000_000))


def records(event_type=SEND, n=20, schema=None, **overrides):
    schema = schema or currents_schemas.schema(event_type)
    return [make_record(event_type, schema, next(_seq), **overrides) for _ in range(n)]


def container(rows, event_type=SEND, codec="null", sync_interval=1_500, schema=None):
    stream = io.BytesIO()
    fastavro.writer(stream, fastavro.parse_schema(schema or currents_schemas.schema(event_type)), rows,
                    codec=codec, sync_interval=sync_interval, sync_marker=SYNC)
    return stream.getvalue()


def container_with_raw_strings(rows, schema, codec="null"):
    """A container whose header has `schema` but whose string fields hold the bytes given in `rows` (bytes values
    are written as they are, valid UTF-8 or not): written with "bytes" for "string", which Avro encodes the
    same way, then given the header of the real schema."""
    def as_bytes(node):
        if node == "string":
            return "bytes"
        return [as_bytes(branch) for branch in node] if isinstance(node, list) else node
    raw_schema = dict(schema, fields=[dict(f, type=as_bytes(f["type"])) for f in schema["fields"]])
    encoded = [{k: v.encode() if isinstance(v, str) else v for k, v in row.items()} for row in rows]
    stream = io.BytesIO()
    fastavro.writer(stream, fastavro.parse_schema(raw_schema), encoded, codec=codec, sync_interval=1_500,
                    sync_marker=SYNC)
    data = stream.getvalue()
    body = data[data.index(SYNC) + len(SYNC):]  # the blocks, after the header's sync marker
    metadata = {b"avro.schema": json.dumps(schema).encode(), b"avro.codec": codec.encode()}
    encode = avro_blocks.encode_long
    header = b"Obj\x01" + encode(len(metadata)) + b"".join(
        encode(len(k)) + k + encode(len(v)) + v for k, v in metadata.items()) + encode(0) + SYNC
    return header + body


def layout(data):
    """The blocks of an intact file, as fastavro itself finds them."""
    blocks = [Block(b.offset, b.offset + b.size, [r["id"] for r in b])
              for b in fastavro.block_reader(io.BytesIO(data))]
    return Layout(blocks[0].start if blocks else len(data), blocks)


def decode(data):
    container_ = avro_blocks.open_container(io.BytesIO(data))
    return container_.header, list(container_)


def good_ids(items):
    return [r["id"] for item in items if isinstance(item, GoodBlock) for r in item.records]


def regions(items):
    return [item for item in items if isinstance(item, BadRegion)]


def assert_tiles(items, header_end, size):
    """Good blocks and bad regions cover [header_end, size) in order, without gaps or overlaps."""
    position = header_end
    for item in items:
        assert item.start == position and item.end > item.start
        position = item.end
    assert position == size
    assert not any(isinstance(a, BadRegion) and isinstance(b, BadRegion) for a, b in zip(items, items[1:]))


def flip(data, offset, mask=0xFF):
    return data[:offset] + bytes([data[offset] ^ mask]) + data[offset + 1:]


# --- the block decoder on single mutations ------------------------------------------------------

@pytest.mark.parametrize("codec", CODECS)
def test_intact_files_decode_block_by_block_like_fastavro(codec):
    rows = records(n=40)
    data = container(rows, codec=codec)
    lay = layout(data)
    header, items = decode(data)
    assert len(lay.blocks) > 5 and header.codec == codec and header.end == lay.header_end
    assert [(i.start, i.end) for i in items] == [(b.start, b.end) for b in lay.blocks]
    assert [r for item in items for r in item.records] == list(fastavro.reader(io.BytesIO(data)))
    assert good_ids(items) == [r["id"] for r in rows]


@pytest.mark.parametrize("codec", ["null", "snappy"])
def test_a_corrupt_block_is_skipped_whole_and_the_next_blocks_are_read(codec):
    data = container(records(n=40), codec=codec)
    lay = layout(data)
    bad = lay.blocks[2]
    # Middle of the block's data: snappy's CRC fails; for null, clobber the first record's first string length
    # (after the block's count and size: 1 and 2 bytes), so that the records no longer parse.
    broken = data[:bad.start + 3] + b"\xff" * 6 + data[bad.start + 9:] if codec == "null" else flip(
        data, (bad.start + bad.end) // 2)
    _, items = decode(broken)
    assert_tiles(items, lay.header_end, len(broken))
    assert good_ids(items) == [i for b in lay.blocks if b is not bad for i in b.ids]
    [region] = regions(items)
    assert (region.start, region.end, region.records_lost) == (bad.start, bad.end, len(bad.ids))


def test_a_wrong_sync_marker_loses_only_its_block():
    data = container(records(n=40), codec="deflate")
    lay = layout(data)
    bad = lay.blocks[1]
    _, items = decode(flip(data, bad.end - 5))
    [region] = regions(items)
    assert (region.start, region.end, region.records_lost) == (bad.start, bad.end, len(bad.ids))
    assert "sync marker" in str(region.error)
    assert good_ids(items) == [i for b in lay.blocks if b is not bad for i in b.ids]


@pytest.mark.parametrize("codec", CODECS)
def test_a_string_that_is_not_utf8_loses_only_its_record(codec):
    rows = records(n=40)
    victim = rows[17]
    raw = b"Spring \xff\xfe sale"
    data = container_with_raw_strings([dict(r, campaign_name=raw) if r is victim else r for r in rows],
                                      currents_schemas.schema(SEND), codec)
    with pytest.raises(UnicodeDecodeError):
        list(fastavro.reader(io.BytesIO(data)))  # what a strict reader makes of it
    _, items = decode(data)
    assert not regions(items)
    assert good_ids(items) == [r["id"] for r in rows if r is not victim]
    [undecodable] = [u for item in items for u in item.undecodable]
    assert (undecodable.fields, undecodable.raw) == (["campaign_name"], [raw])
    assert undecodable.record == dict(victim, campaign_name="Spring \\xff\\xfe sale")


def test_a_record_whose_structure_breaks_still_loses_its_block():
    rows = records(n=40)
    data = container(rows)
    lay = layout(data)
    bad = lay.blocks[3]
    name = next(r["campaign_name"] for r in rows if r["id"] == bad.ids[0]).encode()
    at = data.index(name)
    broken = data[:at - 1] + b"\x7f" + data[at:]  # the string's length: -64
    _, items = decode(broken)
    [region] = regions(items)
    assert (region.start, region.end, region.records_lost) == (bad.start, bad.end, len(bad.ids))
    assert good_ids(items) == [i for b in lay.blocks if b is not bad for i in b.ids]


@pytest.mark.parametrize("codec", ["null", "deflate"])
def test_truncation_at_every_block_boundary_and_inside_blocks(codec):
    data = container(records(n=30), codec=codec)
    lay = layout(data)
    cuts = sorted({b.end + d for b in lay.blocks for d in (-17, -16, -15, -1, 0, 1, 2, 5)}
                  | {(b.start + b.end) // 2 for b in lay.blocks} | set(range(0, lay.header_end + 3)))
    for cut in cuts:
        if cut < 0 or cut > len(data):
            continue
        truncated = data[:cut]
        if cut < lay.header_end:
            with pytest.raises(CorruptHeader):
                decode(truncated)
            continue
        _, items = decode(truncated)
        assert_tiles(items, lay.header_end, cut)
        whole = [b for b in lay.blocks if b.end <= cut]
        assert good_ids(items) == [i for b in whole for i in b.ids], cut
        if any(b.end == cut for b in lay.blocks) or cut == lay.header_end:
            assert not regions(items), cut  # a cut at a block boundary is a valid, shorter file
        else:
            [region] = regions(items)
            assert (region.start, region.end) == (whole[-1].end if whole else lay.header_end, cut)


@pytest.mark.parametrize("data, message", [
    (b"", "empty file"),
    (b"Obj", "not an Avro container"),
    (b"this is not avro", "not an Avro container"),
    (b"Obj\x01" + b"\xff" * 20, "varint longer"),
    (b"Obj\x01\x02\x16avro.schema\xfe\xff\xff\xff\x0f", "runs past the end"),
])
def test_unreadable_headers(data, message):
    with pytest.raises(CorruptHeader, match=message):
        decode(data)


def test_header_mutations_are_corrupt_headers_or_lose_every_block():
    data = container(records(n=20), codec="deflate")
    lay = layout(data)
    with pytest.raises(CorruptHeader, match="not an Avro container"):
        decode(flip(data, 1))
    schema_at = data.index(b'"type"')
    with pytest.raises(CorruptHeader, match="avro.schema"):
        decode(flip(data, schema_at))
    codec_at = data.index(b"deflate")
    with pytest.raises(CorruptHeader, match="codec"):
        decode(flip(data, codec_at))
    _, items = decode(flip(data, lay.header_end - 3))  # the header's sync marker
    [region] = items
    assert (region.start, region.end, region.records_lost) == (lay.header_end, len(data), None)


def test_header_only_file_has_no_blocks():
    data = container([])
    header, items = decode(data)
    assert header.end == len(data) and items == []


def test_hostile_varints_neither_hang_nor_allocate():
    data = container(records(n=30))
    lay = layout(data)
    huge = avro_blocks.encode_long(2 ** 62)
    b2 = lay.blocks[2]
    count_end = avro_blocks.decode_long(data, b2.start)[1]
    size_end = avro_blocks.decode_long(data, count_end)[1]
    cases = {
        "junk": data[:lay.header_end] + b"\xff" * 12 + data[lay.header_end:],
        "huge size": data[:b2.start] + huge + huge + data[size_end:],
        "huge count": data[:b2.start] + huge + data[count_end:],
        "negative size": data[:count_end] + avro_blocks.encode_long(-5) + data[size_end:],
    }
    started = time.monotonic()
    for name, broken in cases.items():
        _, items = decode(broken)
        assert_tiles(items, lay.header_end, len(broken))
        assert regions(items), name
        kept = set(good_ids(items))
        assert set(lay.blocks[-1].ids) <= kept and set(lay.blocks[3].ids) <= kept, name
    assert time.monotonic() - started < 5


def test_a_decompression_bomb_is_a_corrupt_block(monkeypatch):
    rows = records(n=20, campaign_name="x" * 5_000)
    data = container(rows, codec="deflate", sync_interval=40_000)
    monkeypatch.setattr(avro_blocks, "MAX_BLOCK_BYTES", 10_000)
    _, items = decode(data)
    assert not good_ids(items) and "more than 10000 bytes" in str(regions(items)[0].error)


def test_non_seekable_streams_are_spooled():
    rows = records(n=10)
    data = container(rows, codec="snappy")

    class Pipe(io.RawIOBase):
        def __init__(self):
            super().__init__()
            self._inner = io.BytesIO(data)

        def readable(self):
            return True

        def seekable(self):
            return False

        def readinto(self, buffer):
            chunk = self._inner.read(len(buffer))
            buffer[:len(chunk)] = chunk
            return len(chunk)

    items = list(avro_blocks.open_container(Pipe()))
    assert good_ids(items) == [r["id"] for r in rows]


def _guaranteed(lay, flipped):
    """Blocks that must decode intact despite these flipped offsets: untouched, and either first,
    or after a block whose trailing sync marker or count and size are untouched."""
    def touched(lo, hi):
        return any(lo <= o < hi for o in flipped)
    kept = []
    for index, block in enumerate(lay.blocks):
        if touched(block.start, block.end):
            continue
        if index:
            previous = lay.blocks[index - 1]
            if touched(previous.end - 16, previous.end) and touched(previous.start, previous.start + 20):
                continue
        kept.append(block)
    return kept


_FILES = {codec: container(records(n=25), codec=codec, sync_interval=1_000) for codec in CODECS}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(codec=st.sampled_from(CODECS), data=st.data())
def test_random_byte_flips(codec, data):
    original = _FILES[codec]
    lay = layout(original)
    in_header = data.draw(st.booleans())
    low = 0 if in_header else lay.header_end
    offsets = data.draw(st.lists(st.integers(low, len(original) - 1), min_size=1, max_size=3, unique=True))
    broken = original
    for offset in offsets:
        broken = flip(broken, offset, data.draw(st.integers(1, 255)))
    try:
        header, items = decode(broken)
    except CorruptHeader:
        assert min(offsets) < lay.header_end
        return
    assert_tiles(items, header.end, len(broken))
    if min(offsets) < lay.header_end:
        return  # a header flip may rename fields or change the marker: nothing more to promise
    by_start = {item.start: item for item in items if isinstance(item, GoodBlock)}
    for block in _guaranteed(lay, offsets):
        assert [r["id"] for r in by_start[block.start].records] == block.ids
    if codec == "snappy":  # the CRC catches every altered block: nothing decoded is wrong
        originals = {b.start: b.ids for b in lay.blocks}
        assert all([r["id"] for r in item.records] == originals[start] for start, item in by_start.items())
    undecodable = sum(len(item.undecodable) for item in items if isinstance(item, GoodBlock))
    if len(good_ids(items)) + undecodable < sum(len(b.ids) for b in lay.blocks):
        assert regions(items)  # a record lost without a letter of its own is in a bad region


# --- the whole pipeline over a corpus of mutated files ------------------------------------------

class Case(NamedTuple):
    path: str
    decoded: List[str]  # ids the reader must emit
    lost: bool  # something of the file is unreadable: it must be named in a dead letter
    ranges: list  # exact byte ranges of its letters, or None to check only that there are some


def _write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as stream:
        stream.write(data)


def _corpus(root):  # pylint: disable=too-many-locals,too-many-statements
    hour = datetime.datetime(2024, 3, 1, 12, tzinfo=datetime.timezone.utc)
    offsets = iter(range(1, 10_000))

    def path(event_type=SEND):
        return currents_path(root, event_type, hour, offset=next(offsets))

    cases, extra = [], {}

    def add(data, *, event_type=SEND, keep=None, lost=False, ranges=None, at=None):
        at = at or path(event_type)
        _write(at, data)
        cases.append(Case(at, keep if keep is not None else [], lost, ranges))
        return at

    def all_ids(lay, but=()):
        return [i for b in lay.blocks if b not in but for i in b.ids]

    intact = container(records(n=30), codec="deflate")
    lay = layout(intact)
    add(intact, keep=all_ids(lay))

    data = container(records(n=30), codec="snappy")
    lay = layout(data)
    bad = lay.blocks[2]
    add(flip(data, (bad.start + bad.end) // 2), keep=all_ids(lay, [bad]), lost=True,
        ranges=[[bad.start, bad.end]])
    extra["after_corrupt_block"] = lay.blocks[3].ids

    data = container(records(n=30), codec="deflate")
    lay = layout(data)
    bad = lay.blocks[1]
    add(flip(data, bad.end - 1), keep=all_ids(lay, [bad]), lost=True, ranges=[[bad.start, bad.end]])

    data = container(records(n=30), codec="deflate")
    lay = layout(data)
    cut = (lay.blocks[3].start + lay.blocks[3].end) // 2
    add(data[:cut], keep=all_ids(lay, lay.blocks[3:]), lost=True, ranges=[[lay.blocks[3].start, cut]])
    add(data[:lay.blocks[3].start], keep=all_ids(lay, lay.blocks[3:]))  # cut at a boundary: nothing to see
    add(data[:lay.header_end // 2], lost=True, ranges=[[0, lay.header_end // 2]])
    add(b"", lost=True, ranges=[[0, 0]])
    add(flip(data, 0), lost=True, ranges=[[0, len(data)]])
    add(flip(data, lay.header_end - 1), lost=True, ranges=[[lay.header_end, len(data)]])
    add(b"this is not an Avro file\n", lost=True, ranges=[[0, 25]])

    rows = records(n=30)
    data = container(rows)
    lay = layout(data)
    bad = lay.blocks[1]
    name = next(r["campaign_name"] for r in rows if r["id"] == bad.ids[-1]).encode()
    at = data.index(name)
    # Not UTF-8, the records intact: the record is an invalid_record letter, the rest of its block is read.
    extra["not_utf8"] = add(data[:at] + b"\xc3\x28" + data[at + 2:], keep=all_ids(lay))
    extra["not_utf8_id"] = bad.ids[-1]

    data = container(records(n=30), codec="zstandard")
    lay = layout(data)
    junk = data[:lay.header_end] + b"\xff" * 12 + data[lay.header_end:]
    add(junk, keep=all_ids(lay, lay.blocks[:1]), lost=True, ranges=[[lay.header_end, lay.blocks[0].end + 12]])

    rows = records(n=5)
    rows[2]["campaign_name"] = "é" * 500_000  # 1 MB of UTF-8
    extra["too_large"] = rows[2]["id"]
    add(container(rows, codec="deflate"), keep=[r["id"] for r in rows])

    rows = records(n=4) + [make_record(SEND, currents_schemas.schema(SEND), next(_seq), time=t)
                           for t in (-5, -2 ** 31, 2 ** 31 - 1, 0)]
    add(container(rows, codec="snappy"), keep=[r["id"] for r in rows])

    no_id = currents_schemas.schema(CLICK)
    no_id["fields"] = [f for f in no_id["fields"] if f["name"] != "id"]
    rows = [{k: v for k, v in r.items() if k != "id"} for r in records(CLICK, n=6)]
    extra["missing_id"] = add(container(rows, schema=no_id), event_type=CLICK, keep=[None] * 6)

    rows = records(CLICK, n=7)
    add(container(rows, CLICK), event_type=BOGUS, keep=[r["id"] for r in rows])
    extra["bogus_ids"] = [r["id"] for r in rows]

    rows = records(CLICK, n=7)
    add(container(rows, CLICK, codec="snappy"), keep=[r["id"] for r in rows], at=f"{root}/flat/no-type.avro")

    rng = random.Random(7)
    for _ in range(8):  # random flips inside the blocks; the pure decoder is the oracle
        data = container(records(n=20), codec="snappy", sync_interval=1_000)
        lay = layout(data)
        broken = data
        for offset in rng.sample(range(lay.header_end, len(data)), rng.randint(1, 3)):
            broken = flip(broken, offset, rng.randint(1, 255))
        _, items = decode(broken)
        undecodable = [u.record["id"] for item in items if isinstance(item, GoodBlock) for u in item.undecodable]
        add(broken, keep=good_ids(items) + undecodable, lost=bool(regions(items)),
            ranges=[[r.start, r.end] for r in regions(items)])
    return cases, extra


def _run_with_time_limit(seconds, *args):
    result = {}
    thread = threading.Thread(target=lambda: result.update(run=run_job(*args)), daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"the job did not finish within {seconds} s"
    return result["run"], time.monotonic() - started


def _id_of(letter):
    if letter.get("message"):
        return letter["message"]["messageId"]
    if letter.get("record") is not None:
        return letter["record"].get("id")
    return None


def test_the_job_accounts_for_every_record_of_a_corpus_of_bad_files(tmp_path):
    root = str(tmp_path / "bucket")
    cases, extra = _corpus(root)
    out = tmp_path / "requests"
    (status, summary, letters), elapsed = _run_with_time_limit(
        300, tmp_path, "--input", f"{root}/**", "--dry_run_output", str(out))
    print(f"corpus of {len(cases)} files ran in {elapsed:.1f} s")

    assert status == 0
    assert_balanced(summary)
    assert summary["events_read"] == sum(len(case.decoded) for case in cases)
    assert summary["dropped_no_external_id"] == 0
    assert summary["unsupported_event_type"] == len(extra["bogus_ids"])

    bodies = [line for p in sorted(out.glob("requests-*.jsonl")) for line in p.read_bytes().splitlines()]
    assert bodies and max(len(line) for line in bodies) <= 500_000
    sent = [m["messageId"] for line in bodies for m in json.loads(line)["batch"]]
    assert len(sent) == summary["sent"]  # two files share records: compare multisets below

    record_letters = [l for l in letters if l["reason"] != "unreadable_file"]
    assert len(record_letters) == summary["dead_lettered"]
    accounted = sorted(map(str, sent + [_id_of(l) for l in record_letters] + extra["bogus_ids"]))
    assert accounted == sorted(str(i) for case in cases for i in case.decoded)
    assert set(extra["after_corrupt_block"]) <= set(sent)  # the resync delivered the next block

    reasons = {(l["reason"], l["source_file"]) for l in record_letters}
    assert ("event_too_large", next(c.path for c in cases if extra["too_large"] in c.decoded)) in reasons
    assert [l["reason"] for l in record_letters if l["source_file"] == extra["missing_id"]] == (
        ["invalid_record"] * 6)
    [not_utf8] = [l for l in letters if l["source_file"] == extra["not_utf8"]]
    assert not_utf8["reason"] == "invalid_record" and not_utf8["record"]["id"] == extra["not_utf8_id"]
    assert not_utf8["error"].startswith("campaign_name is not valid UTF-8: b'\\xc3(")

    unreadable = [l for l in letters if l["reason"] == "unreadable_file"]
    assert summary["unreadable_files"] == len(unreadable)
    # The records of unreadable blocks are in the summary, and so is every letter, by its reason.
    assert summary["records_lost"] == sum(l["records_lost"] or 0 for l in unreadable) > 0
    assert summary["dead_letters_by_reason"] == dict(collections.Counter(l["reason"] for l in letters))
    for case in cases:
        mine = [l for l in unreadable if l["source_file"] == case.path]
        assert bool(mine) == case.lost, case.path
        assert all(l["error"] and "byte_range" in l and "records_lost" in l for l in mine)
        if case.ranges is not None:
            assert sorted(l["byte_range"] for l in mine) == sorted(case.ranges), case.path


def test_a_record_that_is_not_utf8_costs_only_itself_in_a_run_into_segment(tmp_path):
    """Braze's newest schemas of two types, a record whose campaign_name bytes are not UTF-8 in each (one of them in
    its user id), the files in two codecs: every other event reaches Segment, each bad record is one invalid_record
    letter naming the field, and the files are recorded in the ledger (nothing in them is left to read)."""
    root = str(tmp_path / "bucket")
    hour = datetime.datetime(2024, 3, 1, 12, tzinfo=datetime.timezone.utc)
    sent, bad = [], {}
    for offset, (event_type, codec, field) in enumerate([(SEND, "deflate", "campaign_name"),
                                                         (CLICK, "snappy", "external_user_id")]):
        rows = records(event_type, n=10)
        raw = b"caf\xe9 " + rows[4][field].encode()  # Latin-1, not UTF-8
        bad[rows[4]["id"]] = (field, raw)
        sent += [r["id"] for i, r in enumerate(rows) if i != 4]
        _write(currents_path(root, event_type, hour, offset=offset), container_with_raw_strings(
            [dict(r, **{field: raw}) if i == 4 else r for i, r in enumerate(rows)],
            currents_schemas.schema(event_type), codec))
    key = "not-utf8-key"
    with SegmentServer(write_key=key) as server:
        status, summary, letters = run_job(tmp_path, "--input", f"{root}/**", "--segment_endpoint", server.url,
                                           "--segment_write_key", key, "--ledger", str(tmp_path / "ledger"))
        assert status == 0 and sorted(server.accepted_ids()) == sorted(sent) and not server.violations
    assert summary["events_read"] == 20 and summary["sent"] == 18 and summary["dead_lettered"] == 2
    assert summary["unreadable_files"] == 0 and summary["ledger"]["files_recorded"] == 2
    assert_balanced(summary)
    for one in letters:
        field, raw = bad[one["record"]["id"]]
        assert one["reason"] == "invalid_record"
        assert one["error"].startswith(f"{field} is not valid UTF-8: {raw!r}")
        assert one["record"][field] == raw.decode("utf-8", "backslashreplace")
    assert sorted(one["record"]["id"] for one in letters) == sorted(bad)
