"""The object manager: every request of every protocol goes through here.

How this works: the server hands ``Engine.execute`` a batch of (session,
request) pairs, the requests that arrived together. The batch runs in ONE
LMDB transaction (a write transaction if any request writes): each request
is dispatched from a table to its handler (``items``, ``cache``), which
checks permissions and acts inside that transaction. The transaction
commits before any reply leaves (group commit; with fsync durability a
STORED means "on disk").

Errors become replies in exactly one place each: an ``AccessDenied`` from a
handler becomes ``Denied`` in ``_run``; storage failures (LMDB errors) abort
the batch and become ``ServerError`` in ``execute``.

A full cache is not a failure. After every write batch the engine measures
the pages in use; over the limit (``-m``), it reclaims expired items, then
evicts the oldest-written ones down to ``LOW_WATER`` of the limit (with
evictions off, ``-M``, new data is refused with memcached's out-of-memory
error until deletes make room). The LMDB map has headroom beyond the limit
so that evicting always works; should one batch exhaust even that, its
requests run alone, each evicting what it needs or failing alone.
"""

from __future__ import annotations

import logging
import time
from collections import Counter

import lmdb

from ..protocol import events as ev
from ..storage import Record, Storage, Txn
from . import auth, cache, items, stats
from .access import Access, AccessDenied, InvalidLabel, Session

log = logging.getLogger("securecache")

HANDLERS = {**items.HANDLERS, **cache.HANDLERS,
            ev.Authenticate: auth.authenticate,
            ev.Mechanisms: auth.mechanisms}
WRITES = frozenset((ev.Store, ev.Delete, ev.Arith, ev.Touch, ev.FlushAll,
                    ev.Relabel,
                    ev.Oversized, ev.Crawl))      # issue 10: may delete
SWEEP_BATCH = 1000
EVICT_BATCH = 64
EVICT_ROUNDS = 64
LOW_WATER = 0.95


class NeedsWrite(Exception):
    """A request in a read transaction found it must write: run it again."""


class Op:
    """What a handler needs: the transaction, the client, the time, checks."""

    __slots__ = ("engine", "txn", "session", "now", "access", "counters",
                 "max_item_size")

    def __init__(self, engine: "Engine", txn: Txn, session: Session,
                 now: int) -> None:
        self.engine = engine
        self.txn = txn
        self.session = session
        self.now = now
        self.access = engine.access
        self.counters = engine.counters
        self.max_item_size = engine.max_item_size

    def allowed(self, record: Record, perm: str, key: bytes,
                audit: bool = True) -> bool:
        return self.access.allowed(self.session, self.txn, record, perm, key,
                                   audit=audit)

    def require(self, record: Record, perm: str, key: bytes) -> None:
        self.access.require(self.session, self.txn, record, perm, key)

    def expired(self, key: bytes, record: Record) -> None:
        """An expired item was met: remove it now or at the next tick."""
        if self.txn.write:
            self.txn.delete(key, record)
            self.counters["reclaimed"] += 1
        else:
            self.engine.lazy_expired.add(key)

    def need_write(self) -> None:
        if not self.txn.write:
            raise NeedsWrite()

    def seen(self, key: bytes, record: Record) -> tuple[bool, int]:
        """(fetched since stored?, last access time) of an item."""
        times = [t for t in (self.engine.pending_access.get(key),
                             self.txn.last_access(key)) if t is not None]
        return bool(times), max(times) if times else record.mtime

    def fetched(self, key: bytes) -> None:
        """A hit: remember it (at the next tick when reading)."""
        if self.txn.write:
            self.txn.record_access({key: self.now})
        else:
            self.engine.pending_access[key] = self.now

    def stored(self, key: bytes) -> None:
        """A store made a new item, not fetched yet."""
        self.engine.pending_access.pop(key, None)
        self.txn.forget_access(key)

    def count(self, name: str, hit: bool) -> None:
        self.counters[f"{name}_{'hits' if hit else 'misses'}"] += 1


class Engine:
    """Runs batches of requests against one storage and one security server."""

    def __init__(self, storage: Storage, mac, *, max_item_size: int = 1 << 20,
                 evictions: bool = True, version: str = "1.6.18",
                 shutdown_enabled: bool = False, clock=time.time) -> None:
        self.storage = storage
        self.mac = mac
        self.access = Access(mac)
        self.max_item_size = max_item_size
        self.evictions = evictions
        self.full = False         # over the limit with evictions off
        self.unchecked = 0        # bytes written since usage was measured
        self.version = version
        self.shutdown_enabled = shutdown_enabled
        self.shutdown_requested = False
        self.clock = clock
        self.verbosity = 0
        self.started = int(clock())
        self.counters: Counter = Counter()
        self.lazy_expired: set[bytes] = set()
        self.pending_access: dict[bytes, int] = {}
        self.pending_flushes: list[tuple[int, Session]] = []
        self.server_stats = lambda group: []
        self.settings: list[tuple[str, object]] = []
        self.users: auth.Users | None = None
        self.context_for_user = lambda session, user: None

    # ---------------------------------------------------------- requests
    def connect(self, session: Session) -> bool:
        """May this client connect at all? (kv_cache:connect)"""
        return self.mac.has_perm(session.scontext, self.mac.cache_context,
                                 Access.CACHE, "connect")

    def execute(self, batch: list[tuple[Session, ev.Request]]) -> list:
        """The replies to a batch of requests, in order (see module doc)."""
        try:
            return self._attempt(batch)
        except lmdb.MapFullError:
            pass
        except lmdb.Error as error:
            return [ev.ServerError(f"storage error: {error}")] * len(batch)
        self.reclaim_expired(limit=None)
        return [self._alone(session, request) for session, request in batch]

    @staticmethod
    def writes(batch) -> bool:
        """Does this batch need a write transaction (as far as its requests
        say; a read that meets a stale item asks for one: NeedsWrite)?"""
        return any(type(request) in WRITES or
                   getattr(request, "touch", None) is not None or
                   getattr(request, "vivify", None) is not None or
                   getattr(request, "recache", None) is not None
                   for _, request in batch)

    def blocks(self, batch) -> bool:
        """Would this batch wait for the disk (a write with fsync)?"""
        return self.storage.durability == "fsync" and self.writes(batch)

    def _attempt(self, batch, write: bool | None = None) -> list:
        """One transaction for the batch: committed if every request ran,
        aborted (by the transaction's context manager) on any exception."""
        now = int(self.clock())
        write = self.writes(batch) if write is None else write
        try:
            with self.storage.txn(write) as txn:
                replies = [self._run(txn, session, request, now)
                           for session, request in batch]
        except NeedsWrite:
            return self._attempt(batch, write=True)
        if write:
            self._keep_under_limit(txn.written)
        return replies

    def _keep_under_limit(self, written: int) -> None:
        """Measure the pages in use now and then (every ``limit / 16`` bytes
        written, well inside the map's headroom; at every write while
        refusing data) and evict or refuse above the limit."""
        limit = self.storage.map_size
        self.unchecked += written
        if self.unchecked < limit // 16 and not self.full:
            return
        self.unchecked = 0
        if self.storage.high_water() <= limit:
            self.full = False
            return
        used = self._usage()
        if used <= limit:
            self.full = self.full and used > limit * LOW_WATER
            return
        if not self.evictions:
            self.full = self.reclaim_expired(None) == 0 or \
                self._usage() > limit
            return
        self.reclaim_expired(None)
        # issue 10: a limit too small for a batch of the largest items
        # evicts one by one, so a store never evicts the item it stored
        batch = EVICT_BATCH if limit >= EVICT_BATCH * self.max_item_size else 1
        while self._usage() > limit * LOW_WATER and self.evict(batch):
            pass

    def _usage(self) -> int:
        with self.storage.txn(False) as txn:
            return self.storage.usage(txn)

    def _alone(self, session: Session, request):
        for _ in range(EVICT_ROUNDS):
            try:
                return self._attempt([(session, request)])[0]
            except lmdb.MapFullError:
                if not (self.evictions and self.evict(EVICT_BATCH)):
                    break
            except lmdb.Error as error:
                return ev.ServerError(f"storage error: {error}")
        self.counters["outofmemory"] += 1
        return ev.ServerError("out of memory storing object")

    def _run(self, txn: Txn, session: Session, request, now: int):
        handler = HANDLERS[type(request)]
        if self.users is not None and not session.authenticated and \
                not isinstance(request, auth.EXEMPT):
            return ev.AuthFailed()
        try:
            return handler(Op(self, txn, session, now), request)
        except AccessDenied:
            return ev.Denied()
        except InvalidLabel:
            return ev.ClientError("invalid security context")

    # ------------------------------------------------------ housekeeping
    def tick(self) -> None:
        """Periodic work: due delayed flushes, lazy and swept expiry,
        remembered fetches. A storage error here is logged and the work
        is tried again at the next tick (no client waits for it)."""
        try:
            self._housekeeping()
        except lmdb.Error as error:
            log.warning("housekeeping postponed: %s", error)

    def _housekeeping(self) -> None:
        now = int(self.clock())
        due = [s for when, s in self.pending_flushes if when <= now]
        if due:
            self.pending_flushes = [(w, s) for w, s in self.pending_flushes
                                    if w > now]
            with self.storage.txn(True) as txn:
                for session in due:
                    cache.flush_items(Op(self, txn, session, now))
        self.reclaim_expired(limit=SWEEP_BATCH)
        self.flush_access()

    def flush_access(self) -> None:
        """Write down the fetches that readers remembered."""
        if not self.pending_access:
            return
        pending, self.pending_access = self.pending_access, {}
        with self.storage.txn(True) as txn:
            txn.record_access(pending)

    def reclaim_expired(self, limit: int | None) -> int:
        """Remove expired items: those met by readers, then by the index.
        Nothing to remove costs a read transaction, not a commit."""
        now = int(self.clock())
        limit = limit or 1 << 62
        lazy, self.lazy_expired = list(self.lazy_expired), set()
        if not lazy:
            with self.storage.txn(False) as txn:
                if not txn.expired_keys(now, 1):
                    return 0
        with self.storage.txn(True) as txn:
            removed = txn.remove(lazy, now)
            removed += txn.remove(txn.expired_keys(now, limit), now)
        self.counters["reclaimed"] += removed
        return removed

    def evict(self, count: int) -> int:
        """Remove the ``count`` oldest-written items; how many went (0 if
        even a delete finds no room: the map is full to its last page)."""
        try:
            with self.storage.txn(True) as txn:
                removed = txn.remove(txn.oldest_keys(count))
        except lmdb.MapFullError:
            return 0
        self.counters["evictions"] += removed
        return removed

    def schedule_flush(self, session: Session, when: int) -> None:
        self.pending_flushes.append((when, session))

    # -------------------------------------------------------------- stats
    def reset_counters(self) -> None:
        self.counters.clear()

    def stats_rows(self, group: str, op: Op) -> list[tuple[str, object]]:
        """The rows of ``stats GROUP``."""
        return stats.GROUPS[group](self, op)
