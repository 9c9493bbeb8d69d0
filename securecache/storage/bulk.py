"""Bulk access for the offline tools (dump, restore, check, relabel).

How this works: the tools walk every item of a data directory, often a
million of them, while a daemon may be serving from the same LMDB
environment (LMDB is multi-process: a read transaction is a consistent
snapshot; write transactions take the environment's writer lock in turn
with the daemon's groups).  The helpers here read the sub-databases raw,
without building a ``Record`` per item, and cut long walks into batches so
that no write transaction holds the writer lock for long.  Every write
still goes through ``Txn.put``/``Txn.delete``, which keep the expiry and
age indexes in step.
"""

from __future__ import annotations

import struct
from typing import Iterator

from .records import HEADER, HEADER_SIZE
from .txn import Txn

U32 = struct.Struct(">I")
U64 = struct.Struct(">Q")
unpack_header = HEADER.unpack_from


def raw_items(txn: Txn, prefix: bytes = b"", start: bytes | None = None
              ) -> Iterator[tuple[bytes, memoryview | bytes]]:
    """(key, stored bytes) in key order from ``start`` (default ``prefix``),
    while keys start with ``prefix``.  The stored bytes are a view that is
    only valid until the next step: decode or copy it at once."""
    cursor = txn.txn.cursor(db=txn.items)
    if not cursor.set_range(start if start is not None else prefix):
        return
    if not prefix:
        for key, raw in cursor.iternext():
            yield bytes(key), raw
        return
    for key, raw in cursor.iternext():
        key = bytes(key)
        if not key.startswith(prefix):
            return
        yield key, raw


def count_prefix(txn: Txn, prefix: bytes) -> int:
    """Number of items whose key starts with ``prefix`` (all: O(1))."""
    if not prefix:
        return txn.count()
    cursor = txn.txn.cursor(db=txn.items)
    if not cursor.set_range(prefix):
        return 0
    count = 0
    for key in cursor.iternext(values=False):
        if not bytes(key).startswith(prefix):
            break
        count += 1
    return count


def all_labels(txn: Txn) -> dict[int, bytes]:
    """Every interned label: id -> context."""
    cursor = txn.txn.cursor(db=txn.storage.dbs[b"labels"])
    return {U32.unpack(key)[0]: bytes(value) for key, value in cursor.iternext()}


def label_ids(txn: Txn) -> dict[bytes, int]:
    """The reverse table as stored: context -> id."""
    cursor = txn.txn.cursor(db=txn.storage.dbs[b"label_ids"])
    return {bytes(key): U32.unpack(value)[0] for key, value in cursor.iternext()}


def drop_labels(txn: Txn, ids: list[int], labels: dict[int, bytes]) -> None:
    """Delete these label ids (and their reverse entries); for ``check --gc``
    only, on labels no item uses.  Ids are never handed out again (the
    counter in ``meta`` only grows)."""
    dbs = txn.storage.dbs
    for label_id in ids:
        txn.txn.delete(U32.pack(label_id), db=dbs[b"labels"])
        txn.txn.delete(labels[label_id], db=dbs[b"label_ids"])
        txn.storage.labels.pop(label_id, None)
        txn.storage.label_ids.pop(labels[label_id], None)


def cas_counter(txn: Txn) -> int:
    """The last cas handed out in this data directory."""
    raw = txn.txn.get(b"cas", db=txn.meta)
    return U64.unpack(raw)[0] if raw else 0


def index_keys(txn: Txn, name: str) -> Iterator[bytes]:
    """The keys of the ``expiry``, ``age`` or ``access`` index, in order
    (views: only valid until the next step)."""
    cursor = txn.txn.cursor(db=txn.storage.dbs[name.encode()])
    if cursor.first():
        yield from cursor.iternext(values=False)


def expiry_key(exptime: int, key: bytes) -> bytes:
    """The ``expiry`` index entry of an item."""
    return U32.pack(exptime) + key


def age_key(cas: int, key: bytes) -> bytes:
    """The ``age`` index entry of an item."""
    return U64.pack(cas) + key


def has_key(txn: Txn, name: str, key: bytes) -> bool:
    """True if the sub-database ``name`` holds ``key``."""
    return txn.txn.get(key, db=txn.storage.dbs[name.encode()]) is not None


__all__ = ["HEADER_SIZE", "raw_items", "count_prefix", "all_labels", "label_ids",
           "drop_labels", "cas_counter", "index_keys", "expiry_key", "age_key",
           "has_key", "unpack_header"]
