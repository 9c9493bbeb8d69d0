"""Requests on the cache as a whole, and the label extensions.

How this works: like ``items``, one function per request kind, called in
the batch's transaction with an ``Op``. Cache-wide requests check a
``kv_cache`` permission on the cache object (its context is the daemon's
own on an SELinux host, the configured cache context elsewhere); the
label extensions check ``kv_item`` permissions on the item.
"""

from __future__ import annotations

from dataclasses import replace

from ..protocol import events as ev
from ..protocol.events import Status
from ..storage import Record, absolute_exptime
from . import admin
from .access import Session
from .detail import tunables
from .items import item, live

SLICE = 1000          # items a listing scans per slice


def flush_all(op, request: ev.FlushAll):
    """flush_all [delay]: kv_cache:flush, then every item the client may
    remove (unless the server was started with -F). A delay (seconds, or an
    absolute unix time past 30 days, as memcached reads it) is kept in
    LMDB and fires at its second (see ``hidden_by_flush``)."""
    if not tunables(op.engine).flush_enabled:
        return ev.Disabled("flush_all")
    op.access.require_cache(op.session, "flush")      # kv_cache:flush
    op.counters["cmd_flush"] += 1
    due = absolute_exptime(request.delay, op.now) if request.delay > 0 else 0
    if due > op.now:
        if not op.engine.schedule_flush(op.txn, op.session, due):
            return ev.ServerError("too many delayed flushes pending")
        return Status.OK
    op.engine.cancel_flush(op.txn, op.session)
    flush_items(op)
    return Status.OK


def flush_items(op, before: int | None = None) -> int:
    """Remove every item the client may ``remove`` (with ``before``: those
    stored before that second); the count removed. Only what goes is kept
    in memory, so a flush that removes little allocates little (the
    loop's clients are not stalled by a collection of a million records)."""
    doomed = []
    for key, record in op.txn.scan():
        if record.expired(op.now):
            doomed.append((key, record))
        elif before is not None and record.mtime >= before:
            continue
        # kv_item:remove, per item: flush_all never removes what it may not.
        elif op.allowed(record, "remove", key, audit=False):
            doomed.append((key, record))
    for key, record in doomed:
        op.txn.delete(key, record)
    return len(doomed)


def hidden_by_flush(op, key: bytes, record) -> bool:
    """A delayed flush is due but its housekeeping job has not run yet
    (ticks are a second apart): the items it will remove are gone already
    for every client, so that it fires at its second, as memcached's."""
    for due, context in op.txn.due_flushes(op.now):
        # kv_item:remove for the flush's client context, as when it fires.
        if record.mtime < due and op.access.allowed(
                Session(context.decode()), op.txn, record, "remove", key,
                audit=False):
            return True
    return False


def stats(op, request: ev.Stats):
    """stats [group]: kv_cache:getattr (``stats reset``: kv_cache:setattr)."""
    if request.group == "reset":
        op.access.require_cache(op.session, "setattr")    # kv_cache:setattr
        op.engine.reset_counters()
        return Status.RESET
    op.access.require_cache(op.session, "getattr")        # kv_cache:getattr
    return ev.StatsReply(op.engine.stats_rows(request.group, op))


def version(op, request: ev.Version):
    return ev.VersionReply(op.engine.version)


def verbosity(op, request: ev.Verbosity):
    """verbosity N: kv_cache:setattr."""
    op.access.require_cache(op.session, "setattr")        # kv_cache:setattr
    op.engine.set_setting("verbosity", request.level)
    return Status.OK


def noop(op, request: ev.Noop):
    return Status.NOOP


def quit_(op, request: ev.Quit):
    return ev.Close()


def shutdown(op, request: ev.Shutdown):
    """shutdown [graceful]: only with the server's -A, and kv_cache:setattr;
    as memcached, the connection closes without a reply."""
    if not op.engine.shutdown_enabled:
        return ev.Disabled("shutdown")
    if not request.valid:
        return ev.ClientError("invalid shutdown mode")
    op.access.require_cache(op.session, "setattr")        # kv_cache:setattr
    op.engine.shutdown_requested = True
    return ev.Close()


def metadump(op, request: ev.MetaDump):
    """lru_crawler metadump: keys the client may getattr, in key order
    (unless the server was started with -X). Answered in slices of
    ``SLICE`` items scanned, each from a new snapshot (see ``sliced``)."""
    op.engine.adopt_settings()          # the daemon's crawler, not ours
    settings = tunables(op.engine)
    if not settings.dump_enabled:
        return ev.Disabled("metadump")
    if not settings.lru_crawler:             # lru_crawler disable
        return admin.CRAWLER_DISABLED
    items = []
    if request.classes is not None and 1 not in request.classes:
        return ev.KeyList(items, op.now)        # every item is in class 1
    for key, record in sliced(op, request.prefix, request.after):
        if key is None:                         # the slice is full
            return ev.More(ev.KeyList(items, op.now, more=True),
                           replace(request, after=record))
        items.append(item(op, key, record, False))
    return ev.KeyList(items, op.now)


def sliced(op, prefix: bytes, after: bytes | None):
    """The items a listing shows (live, not hidden by a due flush, and
    kv_item:getattr), from the key after ``after``; once ``SLICE`` items
    were scanned, ``(None, last key scanned)`` ends the slice.

    A listing in slices lets the other clients have their turn between
    two slices; it is not one snapshot (nor is memcached's crawler): an
    item written meanwhile may or may not be listed. In a write group (a
    listing pipelined behind a write) the first slice is the group's; the
    rest come after its commit, like any sliced answer."""
    scanned = 0
    for key, record in op.txn.scan(prefix, after):
        if scanned == SLICE:
            yield None, after
            return
        scanned, after = scanned + 1, key
        # kv_item:getattr per key; hidden keys are simply not listed.
        if record.expired(op.now) or not op.allowed(record, "getattr", key,
                                                    audit=False):
            continue
        if op.txn.due_flushes(op.now) and hidden_by_flush(op, key, record):
            continue
        yield key, record


def relabel(op, request: ev.Relabel):
    """relabel KEY CONTEXT: {setattr relabelfrom} on old, relabelto on new."""
    record = live(op, request.key)
    if record is None:
        return Status.NOT_FOUND
    new_label = op.access.valid_context(request.context)
    op.require(record, "setattr", request.key)        # kv_item:setattr
    op.require(record, "relabelfrom", request.key)    # kv_item:relabelfrom
    # kv_item:relabelto on the new label.
    op.access.require_label(op.session, new_label, "relabelto", request.key)
    label_id = op.txn.label_id(new_label.encode())
    op.txn.put(request.key, Record(label_id, record.flags, record.exptime,
                                   record.mtime, 0, bytes(record.value)),
               record)
    return Status.RELABELED


def getlabel(op, request: ev.GetLabel):
    """getlabel KEY: kv_item:getattr; a denial is a miss."""
    record = live(op, request.key)
    if record is None or not op.allowed(record, "getattr", request.key):
        return Status.NOT_FOUND
    return ev.Label(op.access.label_of(op.txn, record))


def createlabel(op, request: ev.CreateLabel):
    """createlabel CONTEXT|default: the label of this connection's new items
    (no permission: ``create`` is checked on it when an item is created).
    A connection may set at most MAX_CREATELABELS distinct contexts."""
    if request.context is None:
        op.session.createlabel = None
        return Status.OK
    context = op.access.valid_context(request.context)
    if not op.session.may_set_createlabel(context):
        return ev.ClientError("too many distinct create labels on this connection")
    op.session.createlabel = context
    return Status.OK


def whoami(op, request: ev.WhoAmI):
    return ev.Label(op.session.scontext)


def watch(op, request: ev.Watch):
    """watch: kv_cache:getattr; the connection then streams events of the
    items it may getattr (the server filters each event)."""
    if not tunables(op.engine).watch_enabled:                # -W
        return ev.ClientError("watch commands not allowed")
    op.access.require_cache(op.session, "getattr")        # kv_cache:getattr
    return ev.Watching(request.kinds)


HANDLERS = {
    ev.Watch: watch,
    ev.FlushAll: flush_all,
    ev.Stats: stats,
    ev.Version: version,
    ev.Verbosity: verbosity,
    ev.Noop: noop,
    ev.Quit: quit_,
    ev.Shutdown: shutdown,
    ev.MetaDump: metadump,
    ev.Relabel: relabel,
    ev.GetLabel: getlabel,
    ev.CreateLabel: createlabel,
    ev.WhoAmI: whoami,
    **admin.HANDLERS,
}
