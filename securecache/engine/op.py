"""What a handler works with: ``Op`` (one request's view) and ``Effects``.

How this works: the engine makes an ``Op`` for every request it runs,
inside a transaction. A handler reads and writes through ``op.txn`` and
asks ``op.allowed``/``op.require`` for permissions. Everything a request
does besides its transaction -- counters, forgotten fetches, audit lines --
is a side effect that must happen exactly once, when the transaction
commits. Reads (answered at once on the event loop, never re-run) apply
counters directly to the engine's; a write group collects them in its
``Effects``, which the engine applies on the event loop after the group's
commit and drops when the attempt is aborted (a full map, a storage error).
"""

from __future__ import annotations

from collections import Counter

from ..protocol import events as ev
from ..storage import STALE, TOKEN_SENT, Record, Txn
from .access import Session


class NeedsWrite(Exception):
    """A read found it must write (a recache token to hand out): the request
    moves, alone, to the write lane. Raised before any side effect."""


class Effects:
    """Side effects of one write attempt, applied once after it commits."""

    __slots__ = ("counters", "forgotten", "fetches", "decisions", "events")

    def __init__(self) -> None:
        self.counters: Counter = Counter()
        self.forgotten: list[bytes] = []     # keys stored anew: not fetched
        self.fetches: dict[bytes, int | None] = {}
        """What the attempt did last to each key it fetched or stored:
        the time of its fetch, or None (stored anew since). Later requests
        of the group see it (``Op.seen``)."""
        self.decisions: list = []            # held audit/AVC side effects
        self.events: list = []               # for watchers: (kind, event, label)


class Op:
    """One request in one transaction: the client, the time, the checks."""

    __slots__ = ("engine", "txn", "session", "now", "access", "counters",
                 "max_item_size", "effects")

    def __init__(self, engine, txn: Txn | None, session: Session | None,
                 now: int, effects: Effects | None = None) -> None:
        """``txn`` and ``session`` are None only in the read lane's reused
        Op until its first read sets them."""
        self.engine = engine
        self.txn = txn
        self.session = session
        self.now = now
        self.access = engine.access
        self.effects = effects
        self.counters = engine.counters if effects is None else \
            effects.counters
        self.max_item_size = engine.max_item_size

    def allowed(self, record: Record, perm: str, key: bytes,
                audit: bool = True) -> bool:
        return self.access.allowed(self.session, self.txn, record, perm, key,
                                   audit=audit)

    def require(self, record: Record, perm: str, key: bytes) -> None:
        self.access.require(self.session, self.txn, record, perm, key)

    def expired(self, key: bytes, record: Record) -> None:
        """An expired item was met: remove it now or at the next tick.
        Counted once (``get_expired``, as memcached counts the lookup that
        finds an item expired, whatever the command): a reader that met it
        first left it in ``lazy_expired``."""
        lazy = self.engine.lazy_expired
        if key not in lazy:
            self.counters["get_expired"] += 1
        if self.txn.write:
            self.txn.delete(key, record)
            self.counters["reclaimed"] += 1
        else:
            lazy.add(key)

    def need_write(self) -> None:
        if not self.txn.write:
            raise NeedsWrite()

    def seen(self, key: bytes, record: Record) -> tuple[bool, int]:
        """(fetched since stored?, last access time) of an item; in a
        group, its earlier requests' fetches and stores count."""
        effects = self.effects
        if effects is not None and key in effects.fetches:
            when = effects.fetches[key]
            return (False, record.mtime) if when is None else (True, when)
        times = [t for t in (self.engine.pending_access.get(key),
                             self.txn.last_access(key)) if t is not None]
        return bool(times), max(times) if times else record.mtime

    def fetched(self, key: bytes) -> None:
        """A hit: remember it (written down by housekeeping, at most once a
        minute per key, as memcached bumps an item's time)."""
        if self.effects is not None:
            self.effects.fetches[key] = self.now
        else:
            self.engine.remember_fetch(key, self.now)

    def stored(self, key: bytes) -> None:
        """A store made a new item, not fetched yet."""
        self.txn.forget_access(key)
        if self.effects is not None:
            self.effects.forgotten.append(key)
            self.effects.fetches[key] = None
        else:
            self.engine.forget_fetch(key)

    def watched(self, kind: str, type_: str, key: bytes, record: Record,
                fields: tuple) -> None:
        """An event for ``watch`` clients (when there are any), with the
        item's label, so that only those who may getattr it see it."""
        engine = self.engine
        if not engine.watching:
            return
        event = (kind, ev.WatchEvent(type_, key, fields),
                 self.access.label_of(self.txn, record))
        if self.effects is not None:
            self.effects.events.append(event)
        else:
            engine.emit(*event)

    def count(self, name: str, hit: bool) -> None:
        self.counters[HIT_NAMES[name][hit]] += 1


def wants_token(record: Record | None) -> bool:
    """A stale item whose recache token nobody holds: fetching it writes."""
    return record is not None and \
        (record.state & (STALE | TOKEN_SENT)) == STALE


HIT_NAMES = {name: (f"{name}_misses", f"{name}_hits")
             for name in ("get", "touch", "set", "delete", "incr", "decr")}
