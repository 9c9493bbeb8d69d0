"""Item requests: get/gat, store, delete, incr/decr, touch.

How this works: one function per request kind, each called by the engine
inside the batch's transaction with an ``Op`` (transaction, session, time,
access checks, counters). Every permission check happens before the item
is used and in the same transaction, so there is no window between check
and use. A denied read is a miss; any other denial raises ``AccessDenied``
(through ``Access.require``) and the engine answers "denied".
"""

from __future__ import annotations

import dataclasses
import itertools

from ..protocol import events as ev
from ..protocol.events import Status, StoreMode
from ..storage import (EXPIRED, STALE, TOKEN_SENT, Record,
                       absolute_exptime)
from . import cache, detail
from .access import AccessDenied
from .op import wants_token

U64_MOD = 1 << 64
SLICE_BYTES = 256 << 10     # value bytes of one slice of a long get


def live(op, key: bytes) -> Record | None:
    """The item under ``key`` if it exists and has not expired."""
    record = op.txn.get(key)
    if record is None:
        return None
    if record.expired(op.now):
        op.expired(key, record)
        return None
    if op.txn.due_flushes(op.now) and cache.hidden_by_flush(op, key, record):
        if op.txn.write:            # a write replaces it: drop it first
            op.txn.delete(key, record)
        return None
    return record


def item(op, key: bytes, record: Record, with_value: bool,
         history: bool = True, cas_enabled: bool | None = None) -> ev.Item:
    """What a client sees of an item; with ``history``, whether it was
    fetched before (since it was stored) and when it was last accessed.
    The value is the stored bytes as they are (a view into a read
    snapshot): the codec copies it once, into the reply."""
    if cas_enabled is None:
        cas_enabled = op.engine.tunables.cas_enabled
    shown = ev.Item(key, record.flags, record.value if with_value else None,
                    record.cas if cas_enabled else 0, record.exptime,
                    len(record.value))
    if history:
        shown.fetched, shown.last_access = op.seen(key, record)
    return shown


def shown_cas(op, cas: int) -> int:
    """The cas a client sees: 0 with CAS disabled (-C), as memcached."""
    return cas if op.engine.tunables.cas_enabled else 0


def get(op, request: ev.Get) -> ev.Values | ev.More:
    """get, gets, gat, gats, mg: hits the client may read, in order (in a
    read transaction: ``read_get``)."""
    if not op.txn.write:
        return read_get(op, request)
    keys = request.keys
    if len(keys) == 1 and request.touch is None and request.vivify is None \
            and request.recache is None:
        # a get behind the client's own write, in the group's transaction
        return _read_one(op, request, keys[0])
    perm = "read" if request.value else "getattr"
    name = "get" if request.touch is None else "touch"
    settings = detail.tunables(op.engine)
    per_prefix = settings.detail
    items, size = [], 0
    for index in range(request.start, len(keys)):
        key = keys[index]
        record = live(op, key)
        if record is None and request.vivify is not None:
            _count_get(op, name, key, False, per_prefix)
            items += _vivify(op, key, request)
            continue
        # kv_item:read (getattr for metadata only): a denial is a miss,
        # and is counted as one.
        if record is None or not op.allowed(record, perm, key):
            _count_get(op, name, key, False, per_prefix)
            continue
        if request.touch is not None:
            # kv_item:setattr to change the expiry (gat): a denial is a miss.
            if not op.allowed(record, "setattr", key):
                _count_get(op, name, key, False, per_prefix)
                continue
            record = _retime(op, key, record, request.touch)
        _count_get(op, name, key, True, per_prefix)
        shown = item(op, key, record, request.value, request.history,
                     settings.cas_enabled)
        _recache_token(op, key, record, request.recache, shown)
        items.append(shown)
        _watched_get(op, key, record, shown)
        if request.bump:
            op.fetched(key)
        size += shown.size
        if size > SLICE_BYTES and index + 1 < len(keys):
            # A long answer goes in slices: the rest in a later group.
            return ev.More(ev.Values(items, final=False),
                           dataclasses.replace(request, start=index + 1))
    return ev.Values(items)


def _watched_get(op, key: bytes, record: Record, shown: ev.Item) -> None:
    op.watched("fetchers", "item_get", key, record, (
        ("status", "found"), ("clsid", 1), ("cfd", op.session.fd),
        ("size", shown.size)))


def read_get(op, request: ev.Get) -> ev.Values | ev.More:
    """get, gets, mg, binary get in the read lane: the lean path of the hot
    loop (a get with touch, vivify or recache writes: ``get`` runs it).

    Every item of a slice is looked at first: a stale one whose recache
    token is free moves the request (or the rest of a sliced one) to the
    write lane before anything of the slice is checked or counted. A slice
    looks only at its own keys: a line of N keys costs N lookups."""
    txn, now, keys = op.txn, op.now, request.keys
    if len(keys) == 1:
        return _read_one(op, request, keys[0])
    flushing = txn.due_flushes(now)
    # the keys of this slice: up to SLICE_BYTES of values, looked at once
    start = end = request.start
    found, size = [], 0
    while end < len(keys) and size <= SLICE_BYTES:
        record = txn.get(keys[end])
        if record is not None:
            if record.exptime and record.exptime <= now:
                op.expired(keys[end], record)
                record = None
            elif flushing and cache.hidden_by_flush(op, keys[end], record):
                record = None             # a due delayed flush removes it
            else:
                if record.state and wants_token(record):
                    op.need_write()
                size += len(record.value)
        found.append(record)
        end += 1
    perm = "read" if request.value else "getattr"
    settings = op.engine.tunables
    cas_enabled = settings.cas_enabled
    allowed, session = op.access.allowed, op.session
    items, hits = [], 0
    for key, record in zip(itertools.islice(keys, start, end), found):
        # kv_item:read (getattr for metadata only): a denial is a miss.
        hit = record is not None and allowed(session, txn, record, perm, key)
        if settings.detail:                              # stats detail on
            detail.record(op, "get", key, hit)
        if not hit:
            continue
        hits += 1
        items.append(_hit(op, request, key, record, cas_enabled))
    _count_reads(op, hits, len(found) - hits)
    if end < len(keys):
        # A long answer goes in slices: the rest after others' turn.
        return ev.More(ev.Values(items, final=False),
                       dataclasses.replace(request, start=end))
    return ev.Values(items)


def _read_one(op, request: ev.Get, key: bytes) -> ev.Values:
    """``read_get`` of one key (most gets): the same steps, in one pass.
    In a write transaction (a get behind the client's own write) an
    expired item is removed and a free recache token handed out here."""
    txn, now = op.txn, op.now
    record = txn.get(key)
    if record is not None:
        if record.exptime and record.exptime <= now:
            op.expired(key, record)
            record = None
        elif txn.due_flushes(now) and cache.hidden_by_flush(op, key, record):
            record = None                 # a due delayed flush removes it
        elif record.state and wants_token(record):
            op.need_write()
    settings = op.engine.tunables
    # kv_item:read (getattr for metadata only): a denial is a miss.
    hit = record is not None and op.access.allowed(
        op.session, txn, record, "read" if request.value else "getattr", key)
    if settings.detail:                                  # stats detail on
        detail.record(op, "get", key, hit)
    if not hit:
        op.counters["get_misses"] += 1
        return ev.Values([])
    shown = _hit(op, request, key, record, settings.cas_enabled)
    op.counters["get_hits"] += 1
    return ev.Values([shown])


def _hit(op, request: ev.Get, key: bytes, record: Record,
         cas_enabled: bool) -> ev.Item:
    """A hit of ``read_get`` as the client sees it, and what a hit does:
    a free recache token handed out, watchers told, the fetch remembered
    (in a group, when it commits: ``op.fetched``)."""
    shown = item(op, key, record, request.value, request.history,
                 cas_enabled)
    if record.state:
        _recache_token(op, key, record, None, shown)
    if op.engine.watching:
        _watched_get(op, key, record, shown)
    if request.bump:
        op.fetched(key)
    return shown


def _count_reads(op, hits: int, misses: int) -> None:
    counters = op.counters
    counters["get_hits"] += hits
    counters["get_misses"] += misses


def _count_get(op, name: str, key: bytes, hit: bool, per_prefix: bool):
    op.count(name, hit)
    if per_prefix:                    # stats detail on
        detail.record(op, "get", key, hit)


def _recache_token(op, key: bytes, record: Record, recache: int | None,
                   shown: ev.Item) -> None:
    """Meta's anti-dogpiling: the first client to fetch a stale item, or
    one whose TTL is below ``recache``, wins the token (W); others see Z."""
    shown.stale = bool(record.state & STALE)
    shown.token_sent = bool(record.state & TOKEN_SENT)
    due = shown.stale or (recache is not None and record.exptime != 0
                          and record.exptime - op.now < recache)
    if shown.token_sent or not due:
        return
    op.need_write()
    op.txn.put(key, Record(record.label_id, record.flags, record.exptime,
                           record.mtime, record.cas, bytes(record.value),
                           record.state | TOKEN_SENT), record)
    shown.won = True


def _vivify(op, key: bytes, request: ev.Get) -> list[ev.Item]:
    """mg N: create the missing item empty; this client wins the token."""
    op.need_write()
    try:
        label_id = _creatable(op, key)                # kv_item:create
    except AccessDenied:
        return []                                     # a denied read: a miss
    absolute = absolute_exptime(request.vivify, op.now)
    if absolute == EXPIRED:
        return []                                     # born expired: a miss
    record = op.txn.put(key, Record(label_id, 0, absolute, op.now, 0, b"",
                                    TOKEN_SENT), None)
    shown = item(op, key, record, request.value)
    shown.won = True
    return [shown]


def _retime(op, key: bytes, record: Record, exptime: int) -> Record:
    absolute = absolute_exptime(exptime, op.now)
    if absolute == EXPIRED:
        op.txn.delete(key, record)
        return record
    new = Record(record.label_id, record.flags, absolute, record.mtime,
                 record.cas, bytes(record.value), record.state)
    return op.txn.put(key, new, record)


def touch(op, request: ev.Touch):
    """touch: a new exptime for an existing item."""
    record = live(op, request.key)
    op.count("touch", record is not None)
    if record is None:
        return Status.NOT_FOUND
    op.require(record, "setattr", request.key)        # kv_item:setattr
    record = _retime(op, request.key, record, request.exptime)
    return ev.Done(Status.TOUCHED, shown_cas(op, record.cas), record.flags)


def store(op, request: ev.Store):
    """set, add, replace, append, prepend, cas (and ms)."""
    key = request.key
    record = live(op, key)
    op.count("set", True)
    if op.engine.tunables.detail:                        # stats detail on
        detail.record(op, "set", key)
    outcome = STORE_RULES[request.mode](op, request, record)
    if outcome is not None:
        return outcome
    state = 0
    if record is None:
        label_id = _creatable(op, key)
        flags, exptime, value = request.flags, request.exptime, request.value
    else:
        label_id = record.label_id
        flags, exptime, value = _merged(op, request, record)
        if _invalidating(request, record):
            # ms I with an older cas: stale again, TTL and token kept
            state = record.state | STALE
            exptime = record.exptime
    return _write(op, request, key, record, Record(
        label_id, flags, 0, op.now, request.new_cas, value, state), exptime)


def _invalidating(request: ev.Store, record: Record) -> bool:
    return request.invalidate and request.cas < record.cas


def _write(op, request, key, old, record, exptime):
    if op.engine.full:
        return _out_of_memory(op)
    if len(record.value) > op.max_item_size:
        return ev.ServerError("out of memory storing object")
    absolute = absolute_exptime(exptime, op.now)
    if absolute == EXPIRED:
        if old is not None:
            op.txn.delete(key, old)
        return Status.STORED
    record.exptime = absolute
    if request.new_cas:
        op.txn.raise_cas(request.new_cas)
    op.txn.put(key, record, old)
    op.stored(key)
    op.counters["total_items"] += 1
    if op.engine.watching:
        op.watched("mutations", "item_store", key, record, (
            ("status", "stored"), ("cmd", request.mode.value),
            ("ttl", absolute - op.now if absolute else 0), ("clsid", 1),
            ("cfd", op.session.fd), ("size", len(record.value))))
    return ev.Done(Status.STORED, shown_cas(op, record.cas), record.flags)


def _out_of_memory(op) -> ev.ServerError:
    """A write refused because the cache is full and evictions are off
    (-M): counted as memcached counts it, in ``outofmemory`` and
    ``store_no_memory``."""
    op.counters["outofmemory"] += 1
    op.counters["store_no_memory"] += 1
    return ev.ServerError("out of memory storing object")


def _creatable(op, key: bytes) -> int:
    label = op.access.new_label(op.session, key)
    # kv_item:create on the label the new item will carry.
    op.access.require_label(op.session, label, "create", key)
    return op.txn.label_id(label.encode())


def _merged(op, request: ev.Store, record: Record):
    """append/prepend keep the item's flags and (absolute) expiry."""
    mode = request.mode             # only these two copy the old value
    if mode is StoreMode.APPEND:
        value = bytes(record.value) + request.value
    elif mode is StoreMode.PREPEND:
        value = request.value + bytes(record.value)
    else:
        return request.flags, request.exptime, request.value
    return record.flags, record.exptime, value


def _rule_set(op, request, record):
    if record is not None:
        op.require(record, "write", request.key)      # kv_item:write
    return None


def _rule_add(op, request, record):
    if record is None:
        return None
    # kv_item:getattr: learning that the key is taken is reading metadata.
    op.require(record, "getattr", request.key)
    return Status.NOT_STORED


def _rule_replace(op, request, record):
    if record is None:
        return Status.NOT_STORED
    op.require(record, "write", request.key)          # kv_item:write
    return None


def _rule_append(op, request, record):
    if record is None:
        return Status.NOT_STORED
    op.require(record, "append", request.key)         # kv_item:append
    if request.cas and request.cas != record.cas:     # binary, ms C
        op.counters["cas_badval"] += 1
        return Status.EXISTS
    return None


def _rule_cas(op, request, record):
    if record is None:
        op.counters["cas_misses"] += 1
        return Status.NOT_FOUND
    # kv_item:write, checked before the compare so a mismatch leaks nothing.
    op.require(record, "write", request.key)
    # with CAS disabled (-C) no cas matches, as in memcached
    matches = record.cas == request.cas and \
        detail.tunables(op.engine).cas_enabled
    if not matches and not _invalidating(request, record):
        op.counters["cas_badval"] += 1
        return Status.EXISTS
    op.counters["cas_hits"] += 1
    return None


STORE_RULES = {
    StoreMode.SET: _rule_set,
    StoreMode.ADD: _rule_add,
    StoreMode.REPLACE: _rule_replace,
    StoreMode.APPEND: _rule_append,
    StoreMode.PREPEND: _rule_append,
    StoreMode.CAS: _rule_cas,
}


def delete(op, request: ev.Delete):
    """delete, md: remove an item the client may remove."""
    record = live(op, request.key)
    op.count("delete", record is not None)
    detail.record(op, "del", request.key)
    if record is None:
        return Status.NOT_FOUND
    op.require(record, "remove", request.key)         # kv_item:remove
    if request.cas and request.cas != record.cas:
        return Status.EXISTS
    if request.invalidate:
        _invalidate(op, request, record)
    else:
        op.txn.delete(request.key, record)
    return Status.DELETED


def _invalidate(op, request: ev.Delete, record: Record) -> None:
    """md I: keep the item, stale (served with X until it is stored again)."""
    exptime = record.exptime
    if request.exptime is not None:
        exptime = absolute_exptime(request.exptime, op.now)
    if exptime == EXPIRED:
        op.txn.delete(request.key, record)
        return
    op.txn.put(request.key, Record(record.label_id, record.flags, exptime,
                                   record.mtime, 0, bytes(record.value),
                                   STALE), record)


def arith(op, request: ev.Arith):
    """incr, decr, ma: unsigned 64-bit arithmetic on a decimal value."""
    key = request.key
    record = live(op, key)
    op.count("incr" if request.incr else "decr", record is not None)
    if record is None:
        return _autocreate(op, request)
    op.require(record, "calculate", key)              # kv_item:calculate
    exptime = record.exptime
    if request.touch is not None:
        op.require(record, "setattr", key)            # kv_item:setattr (T)
        exptime = absolute_exptime(request.touch, op.now)
    if request.cas and request.cas != record.cas:
        return Status.EXISTS
    current = _number(record.value)
    if current is None:
        return ev.ClientError("cannot increment or decrement non-numeric value")
    if request.incr:
        value = (current + request.delta) % U64_MOD
    else:
        value = max(current - request.delta, 0)
    digits = b"%d" % value
    if len(digits) < len(record.value):
        digits = digits.ljust(len(record.value))   # memcached rewrites in place
    if exptime == EXPIRED:                          # ma T with a past time
        op.txn.delete(key, record)
        return ev.Number(value, 0, exptime=0)
    new = op.txn.put(key, Record(record.label_id, record.flags,
                                 exptime, op.now, 0, digits), record)
    return ev.Number(value, shown_cas(op, new.cas), exptime=exptime)


def _autocreate(op, request: ev.Arith):
    if request.initial is None:
        return Status.NOT_FOUND
    if op.engine.full:
        return _out_of_memory(op)
    label_id = _creatable(op, request.key)            # kv_item:create
    absolute = absolute_exptime(request.exptime, op.now)
    if absolute == EXPIRED:
        return ev.Number(request.initial, 0, created=True)
    new = op.txn.put(request.key, Record(
        label_id, 0, absolute, op.now, 0, b"%d" % request.initial), None)
    op.counters["total_items"] += 1
    return ev.Number(request.initial, shown_cas(op, new.cas), created=True,
                     exptime=absolute)


def _number(value) -> int | None:
    """memcached's strtoull rule: digits, optional surrounding spaces."""
    text = bytes(value).strip(b" \t\r\n")
    if not text.isdigit() or len(text) > 20:
        return None
    number = int(text)
    return number if number < U64_MOD else None


HANDLERS = {
    ev.Get: get,
    ev.Store: store,
    ev.Delete: delete,
    ev.Arith: arith,
    ev.Touch: touch,
}
