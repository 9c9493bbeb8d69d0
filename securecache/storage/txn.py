"""One LMDB transaction over the securecache sub-databases.

How this works: every item write goes through ``put``/``delete``, which keep
three indexes in step inside the same transaction:

- ``items``: key -> record (see ``records``);
- ``expiry``: exptime (u32 BE) + key -> empty, so the sweeper walks expired
  items in time order and stops at the first live one;
- ``access``: key -> last access time (u32 BE), for items fetched since
  they were last stored (memcached's "fetched" bit and last-access time);
- ``age``: cas (u64 BE) + key -> empty. A cas is taken from a counter that
  only grows, at every write, so this index lists items oldest-written
  first: that is the eviction order when the map is full. (The key is part
  of the index key so that an explicit cas, meta ``E``, cannot collide.)

The cas counter and the last label id live in ``meta`` and are written
back once, at commit, so they never repeat across restarts. Labels are
interned: ``labels`` maps id -> context, ``label_ids`` the reverse; ids are
never reused, so the in-memory caches of the ``Storage`` stay true in every
process that shares the directory.
"""

from __future__ import annotations

import struct
from typing import Iterator

import lmdb

from .errors import translate
from .records import Record, decode, encode

U32 = struct.Struct(">I")
U64 = struct.Struct(">Q")
FLUSH_PREFIX = b"flush:"     # meta: flush:CONTEXT -> due time (u32 BE)


class Txn:
    """A read or write transaction; a context manager that commits on success."""

    def __init__(self, storage, txn, write: bool) -> None:
        self.storage = storage
        self.txn = txn
        self.write = write
        dbs = storage.dbs
        self.items = dbs[b"items"]
        self.expiry = dbs[b"expiry"]
        self.age = dbs[b"age"]
        self.access = dbs[b"access"]
        self.meta = dbs[b"meta"]
        self._cas: int | None = None
        self.written = 0            # bytes put, for the engine's size checks
        self._new_labels: dict[bytes, int] = {}
        self._last_label: int | None = None
        self._flushes: list[tuple[int, bytes]] | None = None
        # The calls of every request pass ``db`` by position -- get(key,
        # default, db), delete(key, value, db) -- and a write puts through
        # a cursor per index: py-lmdb parses keyword arguments slowly
        # (about 90 ns a call, a fifth of a get from LMDB).
        if write:
            self._put_item = txn.cursor(self.items).put
            self._put_age = txn.cursor(self.age).put
            self._put_expiry = txn.cursor(self.expiry).put

    # ------------------------------------------------------ lifecycle
    def __enter__(self) -> "Txn":
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is not None:
            self.abort()
            return
        try:
            self.commit()
        except BaseException:
            # A commit that failed (a full map while writing the counters
            # back, a disk error) leaves LMDB's writer held: abort it, or
            # no later write transaction could begin.
            self.abort()
            raise

    def commit(self) -> None:
        """Write counters back and commit; then publish new labels. A
        commit that fails because the disk is full raises ``OutOfSpace``."""
        if self.write:
            if self._cas is not None:
                self.txn.put(b"cas", U64.pack(self._cas), db=self.meta)
            if self._last_label is not None:
                self.txn.put(b"last_label", U32.pack(self._last_label),
                             db=self.meta)
        try:
            self.txn.commit()
        except lmdb.Error as error:
            raise translate(error, self.storage.path, self.written) \
                from error
        for context, label_id in self._new_labels.items():
            self.storage.labels[label_id] = context
            self.storage.label_ids[context] = label_id

    def abort(self) -> None:
        """Drop everything this transaction did."""
        self.txn.abort()

    # ------------------------------------------------------- counters
    def next_cas(self) -> int:
        """A cas value never handed out before, in this or an earlier run.

        The counter is a u64: at 2^64-1 it wraps to 1 (0 means "no cas"),
        as memcached's does, instead of overflowing the record encoding."""
        if self._cas is None:
            raw = self.txn.get(b"cas", db=self.meta)
            self._cas = U64.unpack(raw)[0] if raw else 0
        self._cas = self._cas + 1 if self._cas < 0xFFFF_FFFF_FFFF_FFFF else 1
        return self._cas

    def raise_cas(self, floor: int) -> None:
        """Make sure later cas values are above ``floor`` (explicit cas);
        a floor at or beyond 2^64-1 leaves the counter where it is."""
        self.next_cas()
        if floor < 0xFFFF_FFFF_FFFF_FFFF:
            self._cas = max(self._cas, floor)

    # ----------------------------------------------------------- items
    def get(self, key: bytes) -> Record | None:
        """The stored record for ``key`` (expired or not), or None."""
        raw = self.txn.get(key, None, self.items)
        return None if raw is None else decode(raw)

    def put(self, key: bytes, record: Record, old: Record | None) -> Record:
        """Store ``record`` under ``key`` with a fresh cas (unless given)."""
        if old is not None:
            self._unindex(key, old)
        if not record.cas:
            record.cas = self.next_cas()
        raw = encode(record)
        self.written += len(key) + len(raw)
        self._put_item(key, raw)
        self._index(key, record)
        return record

    def delete(self, key: bytes, old: Record) -> None:
        """Remove ``key`` whose current record is ``old``."""
        self.txn.delete(key, b"", self.items)
        self.txn.delete(key, b"", self.access)
        self._unindex(key, old)

    # ----------------------------------------------------------- access
    def last_access(self, key: bytes) -> int | None:
        """When the item was last fetched since it was stored, or None."""
        raw = self.txn.get(key, None, self.access)
        return None if raw is None else U32.unpack(raw)[0]

    def record_access(self, accesses: dict[bytes, int]) -> None:
        """Remember fetches (key -> time) of items that still exist."""
        for key, when in accesses.items():
            if self.txn.get(key, db=self.items) is not None:
                self.txn.put(key, U32.pack(when), db=self.access)

    def forget_access(self, key: bytes) -> None:
        """A store made a new item: it has not been fetched yet."""
        self.txn.delete(key, b"", self.access)

    def _index(self, key: bytes, record: Record) -> None:
        if record.exptime:
            self._put_expiry(U32.pack(record.exptime) + key, b"")
        self._put_age(U64.pack(record.cas) + key, b"")

    def _unindex(self, key: bytes, record: Record) -> None:
        if record.exptime:
            self.txn.delete(U32.pack(record.exptime) + key, b"",
                            self.expiry)
        self.txn.delete(U64.pack(record.cas) + key, b"", self.age)

    def scan(self, prefix: bytes = b"", after: bytes | None = None
             ) -> Iterator[tuple[bytes, Record]]:
        """Items in key order, from the B+tree, whose key starts with
        ``prefix``; with ``after``, only those whose key follows it."""
        cursor = self.txn.cursor(db=self.items)
        start = prefix if after is None or after < prefix else after
        if not cursor.set_range(start):
            return
        for key, raw in cursor:
            key = bytes(key)
            if key == after:
                continue
            if not key.startswith(prefix):
                return
            yield key, decode(raw)

    def count(self) -> int:
        """Number of stored items (expired ones not yet swept included)."""
        return self.txn.stat(self.items)["entries"]

    # ---------------------------------------------- expiry and eviction
    def expired_keys(self, now: int, limit: int) -> list[bytes]:
        """Up to ``limit`` keys whose exptime <= now, oldest expiry first."""
        keys = []
        cursor = self.txn.cursor(db=self.expiry)
        if not cursor.first():
            return keys
        for index_key in cursor.iternext(values=False):
            if U32.unpack_from(index_key)[0] > now or len(keys) >= limit:
                break
            keys.append(bytes(index_key[4:]))
        return keys

    def oldest_keys(self, limit: int) -> list[bytes]:
        """Up to ``limit`` keys, least recently written first."""
        cursor = self.txn.cursor(db=self.age)
        keys = []
        if cursor.first():
            for index_key in cursor.iternext(values=False):
                keys.append(bytes(index_key[8:]))
                if len(keys) >= limit:
                    break
        return keys

    def remove(self, keys: list[bytes], now: int | None = None) -> int:
        """Delete these keys (only expired ones when ``now`` is given)."""
        removed = 0
        for key in keys:
            record = self.get(key)
            if record is None or (now is not None and not record.expired(now)):
                continue
            self.delete(key, record)
            removed += 1
        return removed

    # -------------------------------------------------- delayed flushes
    def flushes(self) -> list[tuple[int, bytes]]:
        """Pending delayed flushes, (due time, client context), due first
        (read once per transaction: a read snapshot does not change)."""
        if self._flushes is None:
            found = []
            cursor = self.txn.cursor(db=self.meta)
            if cursor.set_range(FLUSH_PREFIX):
                for key, raw in cursor.iternext():
                    key = bytes(key)
                    if not key.startswith(FLUSH_PREFIX):
                        break
                    found.append((U32.unpack(raw)[0],
                                  key[len(FLUSH_PREFIX):]))
            self._flushes = sorted(found)
        return self._flushes

    def due_flushes(self, now: int) -> list[tuple[int, bytes]]:
        """The pending flushes whose time has come."""
        flushes = self.flushes()
        if not flushes or flushes[0][0] > now:
            return []
        return [flush for flush in flushes if flush[0] <= now]

    def put_flush(self, context: bytes, due: int) -> None:
        """Keep (or replace) ``context``'s delayed flush, due at ``due``."""
        self.txn.put(FLUSH_PREFIX + context, U32.pack(due), db=self.meta)
        self._flushes = None

    def drop_flush(self, context: bytes) -> None:
        """Forget ``context``'s delayed flush (done, or replaced)."""
        self.txn.delete(FLUSH_PREFIX + context, db=self.meta)
        self._flushes = None

    # ----------------------------------------------------------- labels
    def label(self, label_id: int) -> bytes | None:
        """The context string of a label id, or None if it does not exist."""
        context = self.storage.labels.get(label_id)
        if context is None:
            raw = self.txn.get(U32.pack(label_id), db=self.storage.dbs[b"labels"])
            if raw is None:
                return None
            context = bytes(raw)
            self.storage.labels[label_id] = context
        return context

    def label_id(self, context: bytes) -> int:
        """The id of ``context``, interning it first if it is new."""
        label_id = self.storage.label_ids.get(context) or \
            self._new_labels.get(context)
        if label_id:
            return label_id
        dbs = self.storage.dbs
        raw = self.txn.get(context, db=dbs[b"label_ids"])
        if raw is not None:
            label_id = U32.unpack(raw)[0]
            self.storage.label_ids[context] = label_id
            self.storage.labels[label_id] = context
            return label_id
        label_id = self._allocate_label()
        self.txn.put(context, U32.pack(label_id), db=dbs[b"label_ids"])
        self.txn.put(U32.pack(label_id), context, db=dbs[b"labels"])
        self._new_labels[context] = label_id
        return label_id

    def _allocate_label(self) -> int:
        if self._last_label is None:
            raw = self.txn.get(b"last_label", db=self.meta)
            self._last_label = U32.unpack(raw)[0] if raw else 0
        self._last_label += 1
        return self._last_label
