"""The dump file format (docs/dump-format.md), written and read in one place.

How this works: a dump is a stream of msgpack objects:

    header   {"format": "securecache-dump", "version": 1, "created": T,
              "policy": FINGERPRINT, "items": N, "prefix": P, "cas": C, ...}
    block*   [count, crc32, payload]   payload: `count` msgpack arrays
              [key, value, flags, exptime, cas, label, mtime] back to back
    trailer  {"end": true, "items": N, "blocks": B}

A block holds at most BLOCK_ITEMS items (or about BLOCK_BYTES of payload);
its CRC-32 is checked before any of its items is used, so restore applies
whole, verified blocks only.  A stream without its trailer is truncated;
anything that does not parse as the above is corrupt (DumpError says which
and where).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import BinaryIO, Iterator

import msgpack

FORMAT = "securecache-dump"
VERSION = 1
BLOCK_ITEMS = 1000
BLOCK_BYTES = 4 << 20
MAX_BUFFER = (1 << 31) - 1
ITEM_TYPES = (bytes, bytes, int, int, int, str, int)


class DumpError(Exception):
    """A dump stream cannot be used; ``kind`` is "truncated", "corrupt" or
    "unsupported"."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(slots=True)
class DumpItem:
    """One dumped item; ``exptime`` is absolute unix seconds (0 = never)."""

    key: bytes
    value: bytes
    flags: int
    exptime: int
    cas: int
    label: str
    mtime: int


class DumpWriter:
    """Writes the header, then items in blocks, then the trailer (close)."""

    def __init__(self, out: BinaryIO, header: dict) -> None:
        self.out = out
        self.packer = msgpack.Packer()
        self.payload = bytearray()
        self.in_block = 0
        self.items = 0
        self.blocks = 0
        out.write(self.packer.pack({"format": FORMAT, "version": VERSION, **header}))

    def add(self, key, value, flags, exptime, cas, label, mtime) -> None:
        """Append one item (key and value: bytes-like; label: str)."""
        self.payload += self.packer.pack([key, value, flags, exptime, cas, label, mtime])
        self.in_block += 1
        if self.in_block >= BLOCK_ITEMS or len(self.payload) >= BLOCK_BYTES:
            self._flush()

    def _flush(self) -> None:
        if not self.in_block:
            return
        payload = bytes(self.payload)
        self.out.write(self.packer.pack([self.in_block, zlib.crc32(payload), payload]))
        self.items += self.in_block
        self.blocks += 1
        self.payload.clear()
        self.in_block = 0

    def close(self) -> int:
        """Write the last block and the trailer; the number of items."""
        self._flush()
        self.out.write(self.packer.pack({"end": True, "items": self.items,
                                         "blocks": self.blocks}))
        self.out.flush()
        return self.items


class DumpReader:
    """Reads a dump: ``header`` at once, then verified ``blocks()``."""

    def __init__(self, stream: BinaryIO, name: str = "<dump>") -> None:
        self.name = name
        self.unpacker = msgpack.Unpacker(stream, raw=False, max_buffer_size=MAX_BUFFER,
                                         strict_map_key=False)
        self.items = 0
        self.block_count = 0
        self.trailer: dict | None = None
        self.header = self._header()

    def _next(self, what: str):
        try:
            return next(self.unpacker)
        except StopIteration:
            raise DumpError("truncated", f"{self.name}: truncated: the stream ends "
                            f"before {what} (after {self.items} items)") from None
        except (ValueError, msgpack.UnpackException) as exc:
            raise DumpError("corrupt", f"{self.name}: corrupt {what} after "
                            f"{self.items} items: {exc}") from None

    def _header(self) -> dict:
        header = self._next("the header")
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise DumpError("corrupt", f"{self.name}: not a securecache dump")
        if header.get("version") != VERSION:
            raise DumpError("unsupported", f"{self.name}: dump format version "
                            f"{header.get('version')!r}; this securecache reads {VERSION}")
        return header

    def blocks(self) -> Iterator[list[DumpItem]]:
        """Each block's items, after its checksum and shape are verified;
        ends after the trailer was read and matched the counts."""
        while True:
            obj = self._next(f"block {self.block_count + 1} or the trailer")
            if isinstance(obj, dict):
                self._trailer(obj)
                return
            yield self._block(obj)

    def _block(self, obj) -> list[DumpItem]:
        where = f"{self.name}: block {self.block_count + 1}"
        if not (isinstance(obj, list) and len(obj) == 3 and isinstance(obj[2], bytes)):
            raise DumpError("corrupt", f"{where}: not a block")
        count, crc, payload = obj
        if zlib.crc32(payload) != crc:
            raise DumpError("corrupt", f"{where}: checksum mismatch")
        inner = msgpack.Unpacker(raw=False, max_buffer_size=MAX_BUFFER)
        inner.feed(payload)
        try:
            items = [_item(fields, where) for fields in inner]
        except (ValueError, msgpack.UnpackException) as exc:
            raise DumpError("corrupt", f"{where}: {exc}") from None
        if len(items) != count:
            raise DumpError("corrupt", f"{where}: {len(items)} items, header says {count}")
        self.items += count
        self.block_count += 1
        return items

    def _trailer(self, trailer: dict) -> None:
        if trailer.get("end") is not True or trailer.get("items") != self.items \
                or trailer.get("blocks") != self.block_count:
            raise DumpError("corrupt", f"{self.name}: trailer {trailer!r} does not match "
                            f"{self.items} items in {self.block_count} blocks")
        self.trailer = trailer

    def verify(self) -> int:
        """Read everything (checksums, shapes, trailer); the item count."""
        for _ in self.blocks():
            pass
        return self.items


def _item(fields, where: str) -> DumpItem:
    if not isinstance(fields, list) or len(fields) != len(ITEM_TYPES) or not all(
            isinstance(f, t) for f, t in zip(fields, ITEM_TYPES)):
        raise DumpError("corrupt", f"{where}: malformed item {fields!r:.80}")
    return DumpItem(*fields)
