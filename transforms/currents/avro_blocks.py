"""Block-by-block decoding of Avro object container files that survives corruption (no Beam here).

An Avro container is a header (magic `Obj\\x01`, a metadata map holding `avro.schema` and
`avro.codec`, a 16-byte sync marker) followed by blocks: record count (long), byte size (long),
the (compressed) records, the sync marker again. `open_container` parses the header; iterating the
BlockFile it returns yields, in file order, a `GoodBlock` (its records, all of them) for every block that decodes and
a `BadRegion` for every run of bytes that does not, and goes on with the next block it can find.

A block is all-or-nothing: it is good only when its count and size are sane, its data lies inside
the file, the sync marker follows it, it decompresses (snappy's CRC included), exactly `count`
records decode from it and no byte is left over. A string that is not valid UTF-8 does not break the
structure of the records (a string is encoded as its length and bytes), so when that is all that is
wrong the block is decoded again with every string read as bytes: the records whose strings are all
UTF-8 are good, and each other one is an `UndecodableRecord` of the block, naming its fields and showing
their bytes with backslash escapes. Otherwise decoding resumes at the
next block that passes these checks: first the one right after the bad block's declared end (when
only the sync marker there was wrong), else the one after the next occurrence of the file's sync
marker. A false resync needs 16 random bytes equal to the marker *and* a whole block that checks out
after them. Consecutive bad blocks make one region; good blocks and bad regions tile the file from
the end of the header to its last byte, so every byte is either decoded or reported.

Guards against hangs and memory blow-ups from corrupt varints:
- varints longer than 10 bytes, negative counts or sizes, and a size running past the end of the
  file are corruption; a large block's sync marker is checked *before* its data is read, so a corrupt
  size never makes us read the rest of the file into memory;
- a decompressed block over MAX_BLOCK_BYTES is corruption (no decompression bomb);
- a count larger than the decompressed byte size is corruption: every record takes at least one
  byte when the schema has a field that is not `null` (Currents records always have the `id` and
  `user_id` strings). For a schema whose records can encode to 0 bytes the bound is MAX_EMPTY_RECORDS.
The header is read with the same bounds (MAX_HEADER_BYTES).

Memory: one block (its bytes and its records) at a time; the resync scan reads SCAN_CHUNK bytes at a
time. The stream must be seekable; `open_seekable` spools a non-seekable one to a temporary file.
"""
import bz2
import io
import json
import lzma
import tempfile
import zlib
from typing import Any, List, NamedTuple, Optional

import fastavro

try:  # the optional codecs fastavro itself uses
    from cramjam import snappy
except ImportError:  # pragma: no cover
    snappy = None
try:
    from compression import zstd  # Python 3.14+
except ImportError:
    try:
        from backports import zstd
    except ImportError:  # pragma: no cover
        zstd = None

MAGIC = b"Obj\x01"
SYNC_SIZE = 16
MAX_VARINT_BYTES = 10
MAX_HEADER_BYTES = 64 * 1024 * 1024
MAX_BLOCK_BYTES = 256 * 1024 * 1024  # decompressed
MAX_EMPTY_RECORDS = 1_000_000  # count bound for schemas whose records can be 0 bytes
SCAN_CHUNK = 1024 * 1024
_EAGER_READ = 4 * 1024 * 1024  # blocks up to this size are read in one go with their sync marker


class CorruptHeader(ValueError):
    """The file's header is unreadable: nothing in the file can be decoded."""


class CorruptBlock(ValueError):
    """One block is unreadable. `count` is its declared record count and `declared_end` the offset
    after its sync marker as its size says, when they could be read; `resume_at` is where the next
    block would start if only the sync marker after it was wrong."""

    def __init__(self, message, count=None, resume_at=None):
        super().__init__(message)
        self.count = count
        self.resume_at = resume_at
        self.declared_end = None


class NotUtf8(CorruptBlock):
    """A string of the block is not UTF-8 (the records may still be whole: see `strings_as_bytes`)."""


class Header(NamedTuple):
    schema: dict  # the writer schema as written (JSON)
    parsed_schema: dict  # fastavro.parse_schema of it
    codec: str
    sync: bytes
    metadata: dict
    end: int  # offset of the first block


class UndecodableRecord(NamedTuple):
    """A record whose structure decodes but some of whose strings are not UTF-8."""
    record: dict  # each such string shown as text, with its bytes that are not UTF-8 as \\x escapes
    fields: List[str]  # where those strings are: "campaign_name", "a.b", "a[2]"
    raw: List[bytes]  # their bytes, in the order of `fields`


class GoodBlock(NamedTuple):
    start: int
    end: int  # offset after its sync marker
    records: List[Any]
    undecodable: List[UndecodableRecord] = []  # records of the block that are not in `records`


class BadRegion(NamedTuple):
    start: int
    end: int  # offset where decoding resumed, or the file size
    error: Exception  # the first block's error
    # Sum of the declared record counts of the skipped blocks; None unless the skipped bytes are
    # exactly those blocks as their sizes declare (a count or size was unreadable, or bytes were
    # skipped by scanning for the sync marker).
    records_lost: Optional[int]


def open_seekable(stream):
    """The stream itself when seekable, else a temporary copy (spilling to disk past 16 MB)."""
    try:
        if stream.seekable():
            return stream
    except (AttributeError, OSError):
        pass
    copy = tempfile.SpooledTemporaryFile(max_size=16 * 1024 * 1024)
    while True:
        chunk = stream.read(SCAN_CHUNK)
        if not chunk:
            break
        copy.write(chunk)
    copy.seek(0)
    return copy


def stream_size(stream):
    """The size of a seekable stream (its position is left at 0)."""
    size = stream.seek(0, io.SEEK_END)
    stream.seek(0)
    return size


def decode_long(buffer, pos, error=CorruptBlock):
    """(value, next position) of the zig-zag varint at buffer[pos:]; at most 10 bytes."""
    result = shift = 0
    for index in range(pos, min(pos + MAX_VARINT_BYTES, len(buffer))):
        byte = buffer[index]
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (result >> 1) ^ -(result & 1), index + 1
        shift += 7
    if len(buffer) - pos >= MAX_VARINT_BYTES:
        raise error(f"varint longer than {MAX_VARINT_BYTES} bytes")
    raise error("truncated varint")


# --- header -----------------------------------------------------------------------------------

class _HeaderReader:
    def __init__(self, stream, size):
        self.stream, self.size, self.pos = stream, min(size, MAX_HEADER_BYTES), 0

    def fixed(self, n):
        if n < 0 or self.pos + n > self.size:
            raise CorruptHeader(f"header field of {n} bytes at offset {self.pos} runs past the end of the "
                                f"file or past {MAX_HEADER_BYTES} bytes")
        data = self.stream.read(n)
        if len(data) != n:
            raise CorruptHeader("short read in the header")
        self.pos += n
        return data

    def long(self):
        buffer = bytearray()
        while True:
            byte = self.fixed(1)[0]
            buffer.append(byte)
            if not byte & 0x80:
                return decode_long(buffer, 0, CorruptHeader)[0]
            if len(buffer) >= MAX_VARINT_BYTES:
                raise CorruptHeader(f"varint longer than {MAX_VARINT_BYTES} bytes in the header")

    def bytes(self):
        return self.fixed(self.long())


def read_header(stream, size):
    """Parse the container header of a seekable stream of `size` bytes; raise CorruptHeader."""
    stream.seek(0)
    reader = _HeaderReader(stream, size)
    if size == 0:
        raise CorruptHeader("empty file")
    magic = stream.read(len(MAGIC))
    if magic != MAGIC:
        raise CorruptHeader(f"not an Avro container: starts with {magic!r}")
    reader.pos = len(MAGIC)
    metadata = {}
    while True:
        count = reader.long()
        if count == 0:
            break
        if count < 0:  # a negative count is followed by the block's byte size
            count = -count
            reader.long()
        for _ in range(count):
            key = reader.bytes()
            metadata[key.decode("utf-8", "replace")] = reader.bytes()
    sync = reader.fixed(SYNC_SIZE)
    try:
        schema = json.loads(metadata["avro.schema"].decode("utf-8"))
        parsed = fastavro.parse_schema(schema)
    except KeyError as error:
        raise CorruptHeader("no avro.schema in the header") from error
    except Exception as error:  # pylint: disable=broad-except  # any schema failure is the header's
        raise CorruptHeader(f"unreadable avro.schema: {type(error).__name__}: {error}") from error
    codec = metadata.get("avro.codec", b"null").decode("utf-8", "replace") or "null"
    if codec not in _DECOMPRESSORS and codec not in fastavro.read.BLOCK_READERS:
        raise CorruptHeader(f"unknown codec {codec!r}")
    if not isinstance(schema, dict) or schema.get("type") != "record":
        raise CorruptHeader(f"the writer schema is not a record: {json.dumps(schema)}"[:200])
    return Header(schema, parsed, codec, sync, metadata, reader.pos)


# --- codecs -----------------------------------------------------------------------------------

def _check_size(size):
    if size > MAX_BLOCK_BYTES:
        raise CorruptBlock(f"block decompresses to more than {MAX_BLOCK_BYTES} bytes")


def _null(data):
    return data


def _deflate(data):
    decompressor = zlib.decompressobj(-15)
    raw = decompressor.decompress(data, MAX_BLOCK_BYTES + 1)
    _check_size(len(raw))
    return raw


def _snappy(data):
    if snappy is None:
        raise CorruptBlock("snappy codec unavailable: install cramjam")
    if len(data) < 4:
        raise CorruptBlock("snappy block shorter than its CRC")
    _check_size(_snappy_length(data[:-4]))
    raw = bytes(snappy.decompress_raw(data[:-4]))
    if zlib.crc32(raw) != int.from_bytes(data[-4:], "big"):
        raise CorruptBlock("snappy block fails its CRC")
    return raw


def _snappy_length(data):
    """The uncompressed length snappy's raw format starts with (an unsigned varint)."""
    result = shift = 0
    for index, byte in enumerate(data[:5]):
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result
        shift += 7
        if index == 4:
            break
    raise CorruptBlock("bad snappy length preamble")


def _zstandard(data):
    if zstd is None:
        raise CorruptBlock("zstandard codec unavailable: install backports.zstd")
    parts, total, rest = [], 0, data
    while rest:
        declared = zstd.get_frame_info(rest).decompressed_size
        if declared is not None:
            _check_size(total + declared)  # libzstd fails a frame that does not match its declared size
        decompressor = zstd.ZstdDecompressor()
        # A max_length makes libzstd slow; it is needed only when the frame does not declare its size.
        part = (decompressor.decompress(rest) if declared is not None
                else decompressor.decompress(rest, MAX_BLOCK_BYTES - total + 1))
        total += len(part)
        _check_size(total)
        if not decompressor.eof:
            raise CorruptBlock("truncated zstandard frame")
        parts.append(part)
        rest = decompressor.unused_data
    return b"".join(parts)


def _bzip2(data):
    raw = bz2.BZ2Decompressor().decompress(data, MAX_BLOCK_BYTES + 1)
    _check_size(len(raw))
    return raw


def _xz(data):
    raw = lzma.LZMADecompressor().decompress(data, MAX_BLOCK_BYTES + 1)
    _check_size(len(raw))
    return raw


_DECOMPRESSORS = {"null": _null, "deflate": _deflate, "snappy": _snappy, "zstandard": _zstandard,
                  "bzip2": _bzip2, "xz": _xz}


def encode_long(value):
    """The zig-zag varint of a long, as Avro writes counts, sizes and lengths."""
    value = (value << 1) ^ (value >> 63)
    out = bytearray()
    while value & ~0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decompress(codec, data):
    """The decompressed bytes of one block's data; raise on any failure."""
    known = _DECOMPRESSORS.get(codec)
    if known:
        return known(data)
    # Other codecs (lz4, ...): fastavro's own block reader, which reads a size-prefixed block.
    block = fastavro.read.BLOCK_READERS[codec](io.BytesIO(encode_long(len(data)) + data))
    raw = block.getvalue() if hasattr(block, "getvalue") else bytes(block)
    _check_size(len(raw))
    return raw


# --- records ----------------------------------------------------------------------------------

def min_record_bytes(schema, named=None):
    """The fewest bytes a value of this (parsed) schema can encode to."""
    named = {} if named is None else named
    if isinstance(schema, str):
        if schema in named:
            return named[schema]
        return {"null": 0, "boolean": 1, "int": 1, "long": 1, "float": 4, "double": 8, "bytes": 1,
                "string": 1}.get(schema, 0)
    if isinstance(schema, list):
        return 1  # the branch index
    kind = schema.get("type")
    if kind == "record" or kind == "error":
        named.setdefault(schema.get("name"), 0)  # recursion: assume the least
        total = sum(min_record_bytes(field["type"], named) for field in schema.get("fields", []))
        named[schema.get("name")] = total
        return total
    if kind in ("array", "map", "enum"):
        return 1
    if kind == "fixed":
        return int(schema.get("size", 0))
    return min_record_bytes(kind, named) if isinstance(kind, (str, list)) else 0


def decode_records(raw, count, parsed_schema, min_bytes=1):
    """Exactly `count` records from one decompressed block; raise CorruptBlock otherwise."""
    if count > (len(raw) if min_bytes else MAX_EMPTY_RECORDS):
        raise CorruptBlock(f"{count} records cannot fit in {len(raw)} bytes")
    buffer = io.BytesIO(raw)
    read = fastavro.schemaless_reader
    try:
        records = [read(buffer, parsed_schema, None) for _ in range(count)]
    except UnicodeDecodeError as error:
        raise NotUtf8(f"record does not decode: {type(error).__name__}: {error}") from error
    except Exception as error:  # pylint: disable=broad-except  # any decoding failure is the block's
        raise CorruptBlock(f"record does not decode: {type(error).__name__}: {error}") from error
    if buffer.tell() != len(raw):
        raise CorruptBlock(f"{len(raw) - buffer.tell()} bytes left over after {count} records")
    return records


# A string is encoded as its length and its bytes, and so is a record of one bytes field: reading every string
# as such a record decodes a block whose strings are not all UTF-8, and finds each string in the result.
_RAW_TEXT = "currents_to_segment.RawText"
_RAW_TEXT_FIELD = "currents_to_segment_raw_text"


def strings_as_bytes(schema):
    """The writer schema (JSON) with every string type read as a record holding the string's bytes."""
    defined = []

    def convert(node):
        if node == "string" or (isinstance(node, dict) and node.get("type") == "string"):
            if defined:
                return _RAW_TEXT
            defined.append(_RAW_TEXT)
            return {"type": "record", "name": _RAW_TEXT, "fields": [{"name": _RAW_TEXT_FIELD, "type": "bytes"}]}
        if isinstance(node, list):
            return [convert(branch) for branch in node]
        if not isinstance(node, dict):
            return node
        kind = node.get("type")
        if kind in ("record", "error"):  # defaults are for readers, and a string's would not fit its new type
            return dict(node, fields=[dict({k: v for k, v in field.items() if k != "default"},
                                           type=convert(field["type"])) for field in node.get("fields", [])])
        if kind == "array":
            return dict(node, items=convert(node["items"]))
        if kind == "map":
            return dict(node, values=convert(node["values"]))
        if isinstance(kind, (dict, list)):
            return dict(node, type=convert(kind))
        return node

    return convert(schema)


def _restore_strings(value, path, found):
    """The value decoded with `strings_as_bytes`, with its strings back; (path, bytes) of those that are not
    UTF-8 are appended to `found`, and they are shown with backslash escapes."""
    if isinstance(value, dict):
        if len(value) == 1 and _RAW_TEXT_FIELD in value:
            data = value[_RAW_TEXT_FIELD]
            try:
                return data.decode("utf-8")
            except UnicodeDecodeError:
                found.append((path, data))
                return data.decode("utf-8", "backslashreplace")
        return {key: _restore_strings(item, f"{path}.{key}" if path else key, found) for key, item in value.items()}
    if isinstance(value, list):
        return [_restore_strings(item, f"{path}[{index}]", found) for index, item in enumerate(value)]
    return value


def split_undecodable(records):
    """(records, UndecodableRecords) of records decoded with `strings_as_bytes`."""
    good, undecodable = [], []
    for record in records:
        found = []
        restored = _restore_strings(record, "", found)
        if found:
            undecodable.append(UndecodableRecord(restored, [path for path, _ in found], [data for _, data in found]))
        else:
            good.append(restored)
    return good, undecodable


# --- blocks -----------------------------------------------------------------------------------

class BlockFile:
    """A seekable container stream whose header has been read; decodes the block at any offset."""

    def __init__(self, stream, size, header):
        self.stream, self.size, self.header = stream, size, header
        self._min_bytes = min_record_bytes(header.parsed_schema)
        self._probed = None  # the good block _resume_after found, so that it is not decoded twice
        self._lenient_schema = False  # not built yet; None when the schema has no such reading

    def _read_at(self, pos, n):
        self.stream.seek(pos)
        data = self.stream.read(n)
        if len(data) != n:
            raise CorruptBlock(f"short read at offset {pos}")
        return data

    def block_at(self, pos):
        """The GoodBlock starting at `pos`; raise CorruptBlock."""
        head = self._read_at(pos, min(2 * MAX_VARINT_BYTES, self.size - pos))
        count, index = decode_long(head, 0)
        if count < 0:
            raise CorruptBlock(f"negative record count {count}")
        size, index = decode_long(head, index)
        data_start = pos + index
        if size < 0:
            raise CorruptBlock(f"negative block size {size}", count)
        data_end = data_start + size
        try:
            return GoodBlock(pos, data_end + SYNC_SIZE, *self._records(data_start, size, count))
        except CorruptBlock as error:
            error.count, error.declared_end = count, data_end + SYNC_SIZE
            raise

    def _records(self, data_start, size, count):
        data_end = data_start + size
        if data_end + SYNC_SIZE > self.size:
            raise CorruptBlock(f"block data of {size} bytes at offset {data_start} runs past the end of "
                               f"the file ({self.size} bytes)")
        if size <= _EAGER_READ:
            chunk = self._read_at(data_start, size + SYNC_SIZE)
            data, marker = chunk[:size], chunk[size:]
        else:  # check the marker first: a corrupt size must not make us read the file into memory
            marker = self._read_at(data_end, SYNC_SIZE)
            data = None
        if marker != self.header.sync:
            raise CorruptBlock(f"wrong sync marker at offset {data_end}", resume_at=data_end + SYNC_SIZE)
        if data is None:
            data = self._read_at(data_start, size)
        try:
            raw = decompress(self.header.codec, data)
        except CorruptBlock:
            raise
        except Exception as error:  # pylint: disable=broad-except  # any codec failure is the block's
            raise CorruptBlock(f"{self.header.codec} data does not decompress: {type(error).__name__}: "
                               f"{error}") from error
        del data
        try:
            return decode_records(raw, count, self.header.parsed_schema, self._min_bytes), []
        except NotUtf8 as error:
            not_utf8 = error
        lenient = self._strings_as_bytes()
        if lenient is None:
            raise not_utf8
        try:
            return split_undecodable(decode_records(raw, count, lenient, self._min_bytes))
        except CorruptBlock:
            raise not_utf8 from None  # not only strings are wrong: the block is lost

    def _strings_as_bytes(self):
        if self._lenient_schema is False:
            try:
                self._lenient_schema = fastavro.parse_schema(strings_as_bytes(self.header.schema))
            except Exception:  # pylint: disable=broad-except  # a schema this reading does not fit
                self._lenient_schema = None
        return self._lenient_schema

    def find_sync(self, pos):
        """Offset of the first sync marker at or after `pos`, or None."""
        sync = self.header.sync
        self.stream.seek(pos)
        carry = b""
        while pos < self.size:
            chunk = self.stream.read(min(SCAN_CHUNK, self.size - pos))
            if not chunk:
                return None
            window = carry + chunk
            found = window.find(sync)
            if found >= 0:
                return pos - len(carry) + found
            pos += len(chunk)
            carry = window[-(SYNC_SIZE - 1):]
        return None

    def __iter__(self):
        """GoodBlock and BadRegion items in file order, tiling [header.end, size)."""
        pos, bad = self.header.end, None  # bad: [start, first error, records lost]
        while pos < self.size:
            try:
                block = self._probed if self._probed and self._probed.start == pos else self.block_at(pos)
                self._probed = None
            except CorruptBlock as error:
                if bad is None:
                    bad = [pos, error, 0]
                resume = self._resume_after(pos, error)
                # The lost count is known when the skipped bytes are exactly the block as declared.
                exact = error.count is not None and error.declared_end is not None and (
                    resume == error.declared_end or resume == self.size <= error.declared_end)
                bad[2] = bad[2] + error.count if exact and bad[2] is not None else None
                pos = resume
                continue
            if bad is not None:
                yield BadRegion(bad[0], pos, bad[1], bad[2])
                bad = None
            yield block
            pos = block.end
        if bad is not None:
            yield BadRegion(bad[0], self.size, bad[1], bad[2])

    def _resume_after(self, pos, error):
        """Where the next block after a bad one at `pos` starts (the file size when none)."""
        if error.resume_at is not None and error.resume_at < self.size:
            try:  # only the marker was wrong: is the next block good?
                self._probed = self.block_at(error.resume_at)
                return error.resume_at
            except CorruptBlock:
                pass
        found = self.find_sync(pos)
        return self.size if found is None else found + SYNC_SIZE


def open_container(stream):
    """A BlockFile over a stream (made seekable); raise CorruptHeader when the header is unreadable."""
    stream = open_seekable(stream)
    size = stream_size(stream)
    return BlockFile(stream, size, read_header(stream, size))
