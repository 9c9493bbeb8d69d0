"""Operator commands memcached serves beside the item commands.

How this works: one handler per request kind, called by the engine in the
batch's transaction with an ``Op`` (registered through ``cache.HANDLERS``).
The MAC rule is the one of ``stats``: reading server state needs
``kv_cache:getattr``, changing a setting ``kv_cache:setattr``; listings
(``stats cachedump``) show only the items the client may ``getattr``, and
pass over the others without an audit line (passing over an item is not
an attempt on it).
"""

from __future__ import annotations

from dataclasses import replace

from ..protocol import events as ev
from ..protocol.events import Status
from . import cache, detail
from .items import live

MEMLIMIT_MIN = 8                 # megabytes, memcached's floor
DUMP_MAX = 2 << 20               # memcached caps a cachedump at 2 MB


def oversized(op, request: ev.Oversized):
    """A value over -I: refused; for ``set`` (any ``ms``, binary SET) the
    item it would have replaced is removed too, as memcached does, so a
    stale value is not served after a failed overwrite."""
    record = live(op, request.key) if request.drop else None
    # kv_item:write: the client asked to overwrite this item; one that may
    # write it may also have it dropped (it could store an expired value).
    # A client without it leaves the item alone (and gets the same reply).
    if record is not None and op.allowed(record, "write", request.key):
        op.need_write()
        op.txn.delete(request.key, record)
    op.counters["store_too_large"] += 1
    return ev.TooLarge()


def cachedump(op, request: ev.CacheDump):
    """stats cachedump CLASS LIMIT: kv_cache:getattr, then the keys of
    class 1 (all items) the client may getattr, at most LIMIT (0: all);
    not with -X. Answered in slices, as metadump (``cache.sliced``)."""
    if not detail.tunables(op.engine).dump_enabled:
        return ev.Disabled("cachedump")
    op.access.require_cache(op.session, "getattr")    # kv_cache:getattr
    if request.slab_class != 1:
        return ev.Dump([])
    items, size = [], request.size
    for key, record in cache.sliced(op, b"", request.after):
        if key is None:                         # the slice is full
            left = request.limit and request.limit - len(items)
            return ev.More(ev.Dump(items, more=True), replace(
                request, limit=left, after=record, size=size))
        items.append(ev.Item(key, record.flags, None, record.cas,
                             record.exptime, len(record.value)))
        size += len(key) + 32
        if len(items) == request.limit or size > DUMP_MAX:
            break
    return ev.Dump(items)


def memlimit(op, request: ev.MemLimit):
    """cache_memlimit MB: the -m limit at run time (kv_cache:setattr). It
    may not exceed the -m given at start: the LMDB map was sized for it."""
    op.access.require_cache(op.session, "setattr")    # kv_cache:setattr
    settings = detail.tunables(op.engine)
    if request.megabytes < MEMLIMIT_MIN:
        return ev.Refused("MEMLIMIT_TOO_SMALL",
                          "cannot set maxbytes to less than 8m")
    if request.megabytes << 20 > settings.max_limit:
        return ev.Refused("MEMLIMIT_ADJUST_FAILED",
                          "cannot raise maxbytes above the -m given at start")
    op.engine.set_setting("map_size", request.megabytes << 20)
    return Status.OK


def stats_detail(op, request: ev.Detail):
    """stats detail on|off (kv_cache:setattr) | dump (kv_cache:getattr)."""
    settings = detail.tunables(op.engine)
    if request.action == "dump":
        op.access.require_cache(op.session, "getattr")  # kv_cache:getattr
        return ev.DetailDump(detail.rows(settings))
    op.access.require_cache(op.session, "setattr")      # kv_cache:setattr
    op.engine.set_setting("detail", request.action == "on")
    return Status.OK


def crawl(op, request: ev.Crawl):
    """lru_crawler crawl: reclaim every expired item now (kv_cache:setattr)."""
    op.access.require_cache(op.session, "setattr")    # kv_cache:setattr
    op.engine.adopt_settings()          # the daemon's crawler, not ours
    if not detail.tunables(op.engine).lru_crawler:
        return CRAWLER_DISABLED
    expired = op.txn.expired_keys(op.now, 1 << 62)
    if expired:
        op.need_write()
        removed = op.txn.remove(expired, op.now)
        op.counters["crawler_reclaimed"] += removed
        op.counters["reclaimed"] += removed
    return Status.OK


def tune(op, request: ev.Tune):
    """lru mode, slabs automove, the crawler's settings: kv_cache:setattr;
    shown in stats settings."""
    op.access.require_cache(op.session, "setattr")    # kv_cache:setattr
    op.engine.adopt_settings()          # another worker may have changed it
    settings = detail.tunables(op.engine)
    if request.name == "lru_crawler" and request.value and \
            settings.lru_crawler:
        # memcached's answer to starting the crawler that runs
        return ev.Refused("ERROR", "failed to start lru crawler thread")
    for name, value in SETTINGS_OF.get(request.name, lambda value: {
            request.name: value})(request.value).items():
        op.engine.set_setting(name, value)
    return Status.OK


SETTINGS_OF = {
    # lru tune HOT WARM HOT_FACTOR WARM_FACTOR: four settings
    "lru_tune": lambda values: dict(zip(
        ("hot_lru_pct", "warm_lru_pct", "hot_max_factor", "warm_max_factor"),
        values)),
    # lru temp_ttl TTL: negative turns the temporary LRU off
    "temp_ttl": lambda ttl: {"temp_lru": False} if ttl < 0 else {
        "temp_lru": True, "temporary_ttl": ttl},
}
"""The settings a ``Tune`` request sets, where they are not its name."""

CRAWLER_DISABLED = ev.ClientError("lru crawler disabled")
"""lru_crawler crawl and metadump after ``lru_crawler disable``."""

HANDLERS = {
    ev.Oversized: oversized,
    ev.CacheDump: cachedump,
    ev.MemLimit: memlimit,
    ev.Detail: stats_detail,
    ev.Crawl: crawl,
    ev.Tune: tune,
}
