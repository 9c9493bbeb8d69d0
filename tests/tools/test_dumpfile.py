"""The dump stream (docs/dump-format.md): written and read back; what the
reader refuses; the progress line."""

from __future__ import annotations

import io
import zlib

import msgpack
import pytest

from securecache.tools.dumpfile import DumpError, DumpReader, DumpWriter
from securecache.tools.progress import Progress


def write(n: int, **header) -> bytes:
    out = io.BytesIO()
    writer = DumpWriter(out, {"items": n, **header})
    for i in range(n):
        writer.add(b"k%d" % i, memoryview(b"v%d" % i), i, 0, i + 1, "u:r:t:s0", 7)
    assert writer.close() == n
    return out.getvalue()


def test_round_trip_in_blocks():
    reader = DumpReader(io.BytesIO(write(2500)))
    blocks = list(reader.blocks())
    assert [len(b) for b in blocks] == [1000, 1000, 500]
    first = blocks[0][0]
    assert (first.key, first.value, first.flags, first.cas, first.label, first.mtime) == \
        (b"k0", b"v0", 0, 1, "u:r:t:s0", 7)
    assert reader.trailer == {"end": True, "items": 2500, "blocks": 3}


def test_unknown_version_is_refused():
    data = msgpack.packb({"format": "securecache-dump", "version": 99})
    with pytest.raises(DumpError, match="version 99") as info:
        DumpReader(io.BytesIO(data))
    assert info.value.kind == "unsupported"


def test_missing_trailer_is_truncation():
    data = write(10)
    trailer = msgpack.packb({"end": True, "items": 10, "blocks": 1})
    with pytest.raises(DumpError, match="truncated") as info:
        DumpReader(io.BytesIO(data[:-len(trailer)])).verify()
    assert info.value.kind == "truncated"


def test_a_malformed_item_inside_a_good_checksum_is_corrupt():
    payload = msgpack.packb([b"k", "not bytes", 0, 0, 1, "u:r:t:s0", 0])
    data = msgpack.packb({"format": "securecache-dump", "version": 1}) + \
        msgpack.packb([1, zlib.crc32(payload), payload])
    with pytest.raises(DumpError, match="malformed item"):
        DumpReader(io.BytesIO(data)).verify()


def test_progress_line_on_a_terminal_only():
    stream = io.StringIO()
    meter = Progress("dump", 100_000, stream=stream, enabled=True)
    meter.step(5000)
    meter.done()
    text = stream.getvalue()
    assert "dump: 5,000/100,000 items" in text and "ETA" in text and text.endswith("\n")
    quiet = io.StringIO()
    Progress("dump", 10, stream=quiet).step(5000)      # StringIO is not a terminal
    assert quiet.getvalue() == ""
