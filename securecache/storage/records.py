"""The item record and memcached's expiry-time rule.

An item is stored in the ``items`` sub-database under its key as a fixed
24-byte big-endian header followed by the value:

    label id (u32) | client flags (u32) | exptime (u32) | mtime (u32) |
    cas (u64) | state (u8)

``exptime`` is absolute unix seconds (0 = never), so an item's time to live
is right across restarts and reboots. ``mtime`` is the time of the last
write, reported as an item's age. The label id points into ``labels``.
``state`` holds meta-protocol bits: ``STALE`` (invalidated by ``md I``,
served with ``X``) and ``TOKEN_SENT`` (a client was told to recache it:
the ``W`` flag was sent; later fetches get ``Z``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

HEADER = struct.Struct(">IIIIQB")
HEADER_SIZE = HEADER.size
RELATIVE_MAX = 60 * 60 * 24 * 30
U32_MAX = (1 << 32) - 1
STALE = 1
TOKEN_SENT = 2
EXPIRED = -1
"""``absolute_exptime`` result for an item that is expired on arrival."""


@dataclass(slots=True)
class Record:
    """One stored item, decoded. ``value`` may be a zero-copy memoryview."""

    label_id: int
    flags: int
    exptime: int
    mtime: int
    cas: int
    value: bytes | memoryview
    state: int = 0

    def expired(self, now: int) -> bool:
        """memcached's rule: an item with exptime <= now is gone."""
        return self.exptime != 0 and self.exptime <= now


def encode(record: Record) -> bytes:
    """The bytes stored for ``record``."""
    return HEADER.pack(record.label_id, record.flags, record.exptime,
                       record.mtime, record.cas, record.state) + \
        bytes(record.value)


def decode(raw: bytes | memoryview) -> Record:
    """Decode a stored item; the value stays a view into ``raw``."""
    label_id, flags, exptime, mtime, cas, state = HEADER.unpack_from(raw)
    return Record(label_id, flags, exptime, mtime, cas,
                  memoryview(raw)[HEADER_SIZE:], state)


def absolute_exptime(exptime: int, now: int) -> int:
    """A client's exptime made absolute, as memcached reads it.

    0 means never; up to 30 days is relative to ``now``; larger is an
    absolute unix time; negative (or an absolute time already past) means
    the item is expired on arrival (``EXPIRED``).
    """
    if exptime == 0:
        return 0
    if exptime < 0:
        return EXPIRED
    if exptime <= RELATIVE_MAX:
        return min(now + exptime, U32_MAX)
    if exptime <= now:
        return EXPIRED
    return min(exptime, U32_MAX)
