"""The object manager: every request of every protocol goes through here.

How this works: requests reach the engine in one of two lanes.

- ``read(session, request)``: a request that needs no write (get, gets, mg,
  stats, ...) runs at once, on the caller's thread, in the engine's shared
  read transaction: the last committed snapshot, which LMDB gives readers
  without ever waiting for the writer. The server keeps that snapshot for
  one event-loop turn and drops it (``release_reader``) at the turn's end
  and after every commit, so a client always sees its own committed
  writes. A request that writes, or a read that finds it must (a recache
  token to hand out), answers ``WRITE`` before any side effect: the server
  moves it to the write lane.
- ``run_group(batch)``: the write lane's group of (session, request) pairs
  from every connection, in ONE write transaction (group commit; with
  fsync durability the commit is on disk when it returns). Its side
  effects are collected in ``Effects`` and applied once, with ``apply``,
  on the event loop after the commit; an aborted attempt's are dropped.
  A group's replies are built whole before the commit, so each
  connection's share of them is bounded: once its values pass
  ``GROUP_SHARE`` (or a long answer was sliced, ``More``), its later
  requests in the group answer ``LATER`` unrun and come back after the
  commit, where reads are answered from the snapshot as the client reads.

Each request is dispatched from a table to its handler (``items``,
``cache``, ``auth``), which checks permissions and acts inside the
transaction. Errors become replies in exactly one place each: an
``AccessDenied`` becomes ``Denied`` in ``_run``; storage failures (LMDB
errors) become ``ServerError`` in ``read`` and ``run_group``.

A full cache is not a failure. After write groups (every ``limit / 16``
bytes written, and once at start) the engine measures the pages in use;
over the limit (``-m``) it reclaims expired items, then evicts the
oldest-written ones down to ``LOW_WATER`` of the limit (with evictions
off, ``-M``, new data is refused with memcached's out-of-memory error until
deletes make room). The LMDB map has headroom beyond the limit so that
evicting always works; should one group exhaust even that, its requests
run alone, each evicting what it needs or failing alone.
"""

from __future__ import annotations

import itertools
import logging
import resource
import struct
import time
from collections import Counter

import lmdb

from ..protocol import events as ev
from ..storage import Storage, StorageFault, Txn
from . import auth, cache, detail, items, stats
from .access import Access, AccessDenied, InvalidLabel, Session
from .op import Effects, NeedsWrite, Op

log = logging.getLogger("securecache")

HANDLERS = {**items.HANDLERS, **cache.HANDLERS,
            ev.Authenticate: auth.authenticate,
            ev.Mechanisms: auth.mechanisms}
WRITES = frozenset((ev.Store, ev.Delete, ev.Arith, ev.Touch, ev.FlushAll,
                    ev.Relabel, ev.Oversized, ev.Crawl))   # these two may delete
WRITE = object()
"""``read``'s answer for a request that belongs to the write lane."""
LATER = object()
"""``run_group``'s answer for a request it did not run: its connection's
replies in the group already hold their share (``GROUP_SHARE``); the
connection sends it again after the commit, in order."""
GROUP_SHARE = 256 << 10   # value bytes of one connection's replies per group
SWEEP_BATCH = 1000
EVICT_BATCH = 64
EVICT_ROUNDS = 64
LOW_WATER = 0.95
ACCESS_INTERVAL = 60      # seconds between two writes of one key's access
ACCESS_BATCH = 256        # remembered fetches written in one transaction


class Engine:
    """Runs requests against one storage and one security server."""

    def __init__(self, storage: Storage, mac, *, max_item_size: int = 1 << 20,
                 evictions: bool = True, version: str = "1.6.18",
                 shutdown_enabled: bool = False, clock=time.time) -> None:
        self.storage = storage
        self.mac = mac
        self.access = Access(mac)
        self.max_item_size = max_item_size
        self.evictions = evictions
        self.full = False         # over the limit with evictions off
        self.version = version
        self.shutdown_enabled = shutdown_enabled
        self.shutdown_requested = False
        self.clock = clock
        self.verbosity = 0
        self.started = int(clock())
        self.counters: Counter = Counter()
        self.lazy_expired: set[bytes] = set()
        self.pending_access: dict[bytes, int] = {}
        self.access_written: dict[bytes, int] = {}
        self.server_stats = lambda group: []
        self.settings: list[tuple[str, object]] = []
        self.users: auth.Users | None = None
        self.context_for_user = lambda session, user: None
        self._reader: Txn | None = None
        self._read_op = Op(self, None, None, 0)   # reused: reads never nest
        self.shared = None
        self.settings_generation = 0      # of the shared settings taken
        self.tunables = detail.tunables(self)
        """The settings ``detail`` keeps (stats detail, -C, -F, -W...)."""
        self.watching = False
        """True while a ``watch`` client listens: events are made then."""
        self.emit = lambda kind, event, label: None
        """Where events go (the server's watchers)."""
        """The daemon's shared counters (server.shared.SharedStats), when
        the server gives them."""
        self.reader_opened = lambda: None
        """Called when ``read`` opens a snapshot: the server releases it at
        the end of the event-loop turn."""
        # Measure at start: a limit holds across restarts, not only for
        # what this process writes.
        self.unchecked = storage.map_size
        self.apply(self._limit_effects(0))

    # ---------------------------------------------------------- requests
    def connect(self, session: Session) -> bool:
        """May this client connect at all? (kv_cache:connect)"""
        return self.mac.has_perm(session.scontext, self.mac.cache_context,
                                 Access.CACHE, "connect")

    def read(self, session: Session, request):
        """The reply to a read, from the shared snapshot, or ``WRITE``.

        The reply may hold views into the snapshot: render it before
        ``release_reader``."""
        kind = type(request)
        if kind is ev.Get:
            if request.touch is not None or request.vivify is not None or \
                    request.recache is not None:
                return WRITE
            # the hot path: straight to the read-lane get, once allowed in
            lean = self.users is None or session.authenticated
        elif kind in WRITES:
            return WRITE
        else:
            lean = False
        op = self._read_op
        try:
            if self._reader is None:
                self._reader = op.txn = self.storage.reader()
                self.reader_opened()
            op.session = session
            op.now = int(self.clock())
            if lean:
                return items.read_get(op, request)
            return self._run(op, request)
        except NeedsWrite:
            return WRITE
        except lmdb.Error as error:
            self.release_reader()
            return _storage_error(error)

    def release_reader(self) -> None:
        """Drop the read snapshot: the next read sees the latest commit."""
        if self._reader is not None:
            self._reader, reader = None, self._reader
            self.storage.release(reader)

    def execute(self, batch: list[tuple[Session, ev.Request]]) -> list:
        """Run a group and apply its effects: the replies, in order."""
        replies, effects = self.run_group(batch)
        self.apply(effects)
        return replies

    def run_group(self, batch) -> tuple[list, Effects]:
        """One write transaction for the group (see module doc)."""
        try:
            return self._attempt(batch)
        except lmdb.MapFullError:
            pass
        except lmdb.Error as error:
            return [_storage_error(error)] * len(batch), Effects()
        effects = self._limit_effects(0)
        self.reclaim_expired(None, effects.counters)
        replies, shares = [], Shares()
        for session, request in batch:
            if shares.spent(session):
                replies.append(LATER)
                continue
            reply, alone = self._alone(session, request)
            replies.append(reply)
            shares.count(session, reply)
            _merge(effects, alone)
        return replies, effects

    def apply(self, effects: Effects) -> None:
        """Apply a committed group's side effects (on the event loop)."""
        if effects.counters:
            self.counters.update(effects.counters)
        for key in effects.forgotten:
            self.forget_fetch(key)
        for key, when in effects.fetches.items():
            if when is not None:        # None: stored anew after its fetch
                self.remember_fetch(key, when)
        if effects.decisions:
            self.mac.replay_decisions(effects.decisions)
        for event in effects.events:
            self.emit(*event)

    def _attempt(self, batch) -> tuple[list, Effects]:
        """One transaction for the batch: committed if every request ran,
        aborted (with its effects) on any exception."""
        effects = Effects()
        now = int(self.clock())
        self.mac.hold_decisions()
        try:
            with self.storage.txn(True) as txn:
                # one Op, moved from request to request
                op = Op(self, txn, None, now, effects)
                replies, shares = [], Shares()
                for session, request in batch:
                    if shares.spent(session):
                        replies.append(LATER)
                        continue
                    op.session = session
                    reply = self._run(op, request)
                    replies.append(reply)
                    shares.count(session, reply)
        finally:
            effects.decisions = self.mac.take_decisions()
        _merge(effects, self._limit_effects(txn.written))
        return replies, effects

    def _alone(self, session: Session, request):
        effects = Effects()
        for _ in range(EVICT_ROUNDS):
            try:
                replies, done = self._attempt([(session, request)])
                _merge(effects, done)
                return replies[0], effects
            except lmdb.MapFullError:
                if not (self.evictions and self.evict(
                        EVICT_BATCH, effects.counters, effects.events)):
                    break
            except lmdb.Error as error:
                return _storage_error(error), effects
        effects.counters["outofmemory"] += 1
        effects.counters["store_no_memory"] += 1
        return ev.ServerError("out of memory storing object"), effects

    def _run(self, op: Op, request):
        if self.users is not None and not op.session.authenticated and \
                not isinstance(request, auth.EXEMPT):
            return ev.AuthFailed()
        try:
            return HANDLERS[type(request)](op, request)
        except AccessDenied:
            return ev.Denied()
        except InvalidLabel:
            return ev.ClientError("invalid security context")

    # ------------------------------------------------------- the limit
    def _limit_effects(self, written: int) -> Effects:
        """Measure the pages in use now and then (every ``limit / 16``
        bytes written, well inside the map's headroom; at every write while
        refusing data) and evict or refuse above the limit."""
        effects = Effects()
        limit = self.storage.map_size
        self.unchecked += written
        if self.unchecked < limit // 16 and not self.full:
            return effects
        self.unchecked = 0
        if self.storage.high_water() <= limit:
            self.full = False
            return effects
        used = self._usage()
        if used <= limit:
            self.full = self.full and used > limit * LOW_WATER
            return effects
        counters = effects.counters
        if not self.evictions:
            self.full = self.reclaim_expired(None, counters) == 0 or \
                self._usage() > limit
            return effects
        self.reclaim_expired(None, counters)
        # A limit too small for a batch of the largest items evicts one by
        # one, so that a store never evicts the item it stored.
        batch = EVICT_BATCH if limit >= EVICT_BATCH * self.max_item_size else 1
        while self._usage() > limit * LOW_WATER and \
                self.evict(batch, counters, effects.events):
            pass
        return effects

    def _usage(self) -> int:
        with self.storage.txn(False) as txn:
            return self.storage.usage(txn)

    # ------------------------------------------------------ housekeeping
    def housekeeping(self):
        """The periodic work as a job for the write lane: the state it needs
        is taken now (on the event loop); the job returns its Effects."""
        lazy, self.lazy_expired = list(self.lazy_expired), set()
        fetches = self._take_fetches()
        return lambda: self._housekeeping(lazy, fetches)

    def fetch_batches(self) -> int:
        """How many ``record_fetches`` jobs the remembered fetches that
        housekeeping left need (it takes one batch)."""
        return -(-len(self.pending_access) // ACCESS_BATCH)

    def record_fetches(self):
        """A job for the write lane: the next batch of remembered fetches,
        in a transaction of its own, so that a large set of hot keys never
        holds the writer for long (write groups run between two batches)."""
        fetches = self._take_fetches()
        return lambda: self._housekeeping((), fetches, periodic=False)

    def tick(self) -> None:
        """Run the periodic work here and now (tests, single thread)."""
        self.apply(self.housekeeping()())
        for _ in range(self.fetch_batches()):
            self.apply(self.record_fetches()())

    def _take_fetches(self) -> dict[bytes, int]:
        """Up to ``ACCESS_BATCH`` remembered fetches, the oldest first,
        counted as written from now on."""
        pending = self.pending_access
        if len(pending) <= ACCESS_BATCH:
            self.pending_access, taken = {}, pending
        else:
            taken = dict(itertools.islice(pending.items(), ACCESS_BATCH))
            for key in taken:
                del pending[key]
        self.access_written.update(taken)
        return taken

    def _housekeeping(self, lazy, fetches, periodic: bool = True) -> Effects:
        """Due delayed flushes, lazy and swept expiry, remembered fetches
        (``periodic`` False: the fetches only). A storage error is logged
        and the sweep tried again at the next tick (no client waits for
        it)."""
        effects = Effects()
        now = int(self.clock())
        try:
            if fetches or periodic and self._flushes_due(now):
                with self.storage.txn(True) as txn:
                    if periodic:
                        self._fire_flushes(txn, now, effects)
                    txn.record_access(fetches)
            if periodic:
                # the crawler's sweep of the expiry index; with the
                # crawler disabled only the items readers met go
                self.reclaim_expired(SWEEP_BATCH, effects.counters, lazy,
                                     sweep=self.tunables.lru_crawler)
        except lmdb.Error as error:
            log.warning("housekeeping postponed: %s", error)
        return effects

    def _flushes_due(self, now: int) -> bool:
        with self.storage.txn(False) as txn:
            return bool(txn.due_flushes(now))

    def _fire_flushes(self, txn: Txn, now: int, effects: Effects) -> None:
        """Run the delayed flushes due by ``now``, each as its client
        context, and consume their records in this write transaction (with
        workers, ``-t``, whichever process commits first runs them; the
        others find them gone). A flush removes what was stored before its
        due second, not what came between that second and this tick."""
        for due, context in txn.due_flushes(now):
            session = Session(context.decode())
            cache.flush_items(Op(self, txn, session, now, effects), due)
            txn.drop_flush(context)

    def remember_fetch(self, key: bytes, when: int) -> None:
        """A hit on ``key``: written down by housekeeping unless it was
        written less than ``ACCESS_INTERVAL`` ago."""
        if when - self.access_written.get(key, -ACCESS_INTERVAL) >= \
                ACCESS_INTERVAL:
            self.pending_access[key] = when
            if len(self.access_written) > 1 << 17:
                self.access_written.clear()

    def forget_fetch(self, key: bytes) -> None:
        self.pending_access.pop(key, None)
        self.access_written.pop(key, None)

    def reclaim_expired(self, limit: int | None, counters: Counter,
                        lazy: list[bytes] = (), sweep: bool = True) -> int:
        """Remove expired items: those met by readers, then (``sweep``) by
        the index. Nothing to remove costs a read transaction, not a
        commit."""
        now = int(self.clock())
        limit = limit or 1 << 62
        if not lazy:
            if not sweep:
                return 0
            with self.storage.txn(False) as txn:
                if not txn.expired_keys(now, 1):
                    return 0
        with self.storage.txn(True) as txn:
            removed = txn.remove(list(lazy), now)
            if sweep:
                removed += txn.remove(txn.expired_keys(now, limit), now)
        counters["reclaimed"] += removed
        return removed

    def evict(self, count: int, counters: Counter,
              events: list | None = None) -> int:
        """Remove the ``count`` oldest-written items; how many went (0 if
        even a delete finds no room: the map is full to its last page).
        With watchers, an eviction event per item goes to ``events``."""
        try:
            with self.storage.txn(True) as txn:
                keys = txn.oldest_keys(count)
                if self.watching and events is not None:
                    events += self._evicted(txn, keys)
                removed = txn.remove(keys)
        except lmdb.MapFullError:
            return 0
        counters["evictions"] += removed
        return removed

    def _evicted(self, txn: Txn, keys: list[bytes]) -> list:
        now = int(self.clock())
        events = []
        for key in keys:
            record = txn.get(key)
            if record is None:
                continue
            fetched, last = Op(self, txn, None, now).seen(key, record)
            ttl = record.exptime - now if record.exptime else -1
            events.append(("evictions", ev.WatchEvent(
                "eviction", key, (("fetch", "yes" if fetched else "no"),
                                  ("ttl", ttl), ("la", now - last),
                                  ("clsid", 1), ("size", len(record.value)))),
                self.access.label_of(txn, record)))
        return events

    MAX_DELAYED_FLUSHES = 64     # client contexts with a flush pending

    def schedule_flush(self, txn: Txn, session: Session, when: int) -> bool:
        """Keep a delayed ``flush_all`` in LMDB (``meta``: due time per
        client context), so that a restart keeps it. One per context: a
        later one replaces it, as memcached keeps one; at most
        ``MAX_DELAYED_FLUSHES`` contexts (False: refused, nothing kept)."""
        context = session.scontext.encode()
        pending = {other for _, other in txn.flushes()}
        if context not in pending and len(pending) >= self.MAX_DELAYED_FLUSHES:
            return False
        txn.put_flush(context, when)
        return True

    @staticmethod
    def cancel_flush(txn: Txn, session: Session) -> None:
        """An immediate ``flush_all`` replaces the context's delayed one
        (memcached: a flush_all resets the one pending flush time)."""
        txn.drop_flush(session.scontext.encode())

    # -------------------------------------------------------------- stats
    def snapshot(self) -> Counter:
        """This process's numbers: counters, the server's, the MAC's, CPU."""
        values = Counter(self.counters)
        for name, value in (*self.server_stats(""), *self.mac.stats().items()):
            if type(value) is int:
                values[name] = value
        usage = resource.getrusage(resource.RUSAGE_SELF)
        values["rusage_user_us"] = int(usage.ru_utime * 1e6)
        values["rusage_system_us"] = int(usage.ru_stime * 1e6)
        return values

    def publish(self) -> None:
        """Write this process's numbers where every worker sees them, and
        take the settings another worker changed."""
        if self.shared is not None:
            self.shared.publish(self.snapshot())
            self.adopt_settings()

    # ---------------------------------------------------------- settings
    def set_setting(self, name: str, value) -> None:
        """A run-time setting (``verbosity``, ``cache_memlimit``, ``lru
        mode``, ``lru_crawler ...``): here at once, and in every worker
        at its next publish (a tenth of a second)."""
        self.adopt_settings()               # others' changes first
        self._apply_setting(name, value)
        if self.shared is not None:
            self.settings_generation = self.shared.share(name,
                                                         _to_slot(value))

    def adopt_settings(self) -> None:
        """Take the settings changed by any worker since we last looked."""
        if self.shared is None:
            return
        generation, values = self.shared.settings()
        if generation == self.settings_generation:
            return
        self.settings_generation = generation
        for name, slot in values.items():
            self._apply_setting(name, _from_slot(self._setting(name), slot))

    def _setting(self, name: str):
        if name == "map_size":
            return self.storage.map_size
        return getattr(self if name == "verbosity" else self.tunables, name)

    def _apply_setting(self, name: str, value) -> None:
        if name == "map_size":
            self.storage.map_size = value
            self.unchecked = value          # measure at the next write
        elif name == "verbosity":
            self.verbosity = value
        else:
            setattr(self.tunables, name, value)

    def daemon_totals(self) -> Counter:
        """The numbers of the whole daemon (every worker's, summed)."""
        if self.shared is None:
            return self.snapshot()
        self.publish()
        return self.shared.total()

    def reset_counters(self) -> None:
        """``stats reset``: every worker's counters start from zero, and
        this process's ``stats detail`` prefix counts (as memcached's)."""
        detail.tunables(self).prefixes.clear()
        if self.shared is not None:
            self.shared.reset()
        else:
            self.counters.clear()

    def stats_rows(self, group: str, op: Op) -> list[tuple[str, object]]:
        """The rows of ``stats GROUP``."""
        return stats.GROUPS[group](self, op)


class Shares:
    """What each connection's replies hold in one group (see module doc):
    a connection whose share is spent has its later requests answer
    ``LATER``."""

    __slots__ = ("held", "spent_by")

    def __init__(self) -> None:
        self.held: dict[int, int] = {}      # id(session) -> value bytes
        self.spent_by: set[int] = set()

    def spent(self, session: Session) -> bool:
        """Has ``session`` no share left in this group?"""
        return bool(self.spent_by) and id(session) in self.spent_by

    def count(self, session: Session, reply) -> None:
        """``reply`` was given to ``session`` in this group."""
        kind = type(reply)
        if kind is ev.More:             # the rest comes after the commit
            self.spent_by.add(id(session))
        elif kind is ev.Values and reply.items:
            held = self.held.get(id(session), 0) + sum(
                len(shown.value) for shown in reply.items
                if shown.value is not None)
            self.held[id(session)] = held
            if held > GROUP_SHARE:
                self.spent_by.add(id(session))


def _to_slot(value) -> int:
    """A setting as the shared page's 64-bit slot holds it (a float by
    its bits)."""
    if type(value) is float:
        return SLOT.unpack(FLOAT.pack(value))[0]
    return int(value)


def _from_slot(current, slot: int):
    """A slot's setting, of the type of the ``current`` value."""
    if type(current) is float:
        return FLOAT.unpack(SLOT.pack(slot))[0]
    return type(current)(slot)


SLOT, FLOAT = struct.Struct("q"), struct.Struct("d")


def _merge(into: Effects, other: Effects) -> None:
    if other.counters:                  # (a Counter's update is not free)
        into.counters.update(other.counters)
    into.forgotten += other.forgotten
    into.fetches.update(other.fetches)
    into.decisions += other.decisions


def _storage_error(error: lmdb.Error) -> ev.ServerError:
    """The one reply to a storage failure; storage's own errors (out of
    space) say what they are, LMDB's are prefixed."""
    if isinstance(error, StorageFault):
        return ev.ServerError(str(error))
    return ev.ServerError(f"storage error: {error}")
