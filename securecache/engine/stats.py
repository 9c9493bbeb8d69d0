"""The rows of ``stats`` and its groups, named as memcached names them.

How this works: one function per group, each given the engine and the
request's ``Op`` (so counts come from the batch's own transaction). The
whole-daemon rows the engine cannot know (connections, bytes on the wire)
come from the server through ``engine.server_stats``; the security
server's rows (``mac_mode``, ``enforcing``, ``avc_*``) from ``mac.stats()``.
"""

from __future__ import annotations

import os

from .. import __version__
from .detail import tunables

COMMANDS = ("get", "delete", "incr", "decr", "touch")
COUNTERS = ("cas_misses", "cas_hits", "cas_badval", "auth_cmds",
            "auth_errors")


def general(engine, op) -> list:
    """memcached's rows; the counters are the whole daemon's (every worker)."""
    info = engine.storage.info(op.txn)
    c = engine.daemon_totals()
    rows = [("pid", os.getpid()), ("uptime", op.now - engine.started),
            ("time", op.now), ("version", engine.version),
            ("securecache_version", __version__),
            ("pointer_size", 64),
            ("rusage_user", f"{c['rusage_user_us'] / 1e6:.6f}"),
            ("rusage_system", f"{c['rusage_system_us'] / 1e6:.6f}")]
    rows += [(name, c[name] if type(value) is int and name in c else value)
             for name, value in engine.server_stats("")]
    rows += [("cmd_get", c["get_hits"] + c["get_misses"]),
             ("cmd_set", c["set_hits"]), ("cmd_flush", c["cmd_flush"]),
             ("cmd_touch", c["touch_hits"] + c["touch_misses"])]
    rows += [(f"{name}_{kind}", c[f"{name}_{kind}"])
             for name in COMMANDS for kind in ("misses", "hits")]
    rows += [("get_expired", c["get_expired"]),
             ("store_too_large", c["store_too_large"]),
             ("store_no_memory", c["store_no_memory"])]
    rows += [(name, c[name]) for name in COUNTERS]
    rows += [("limit_maxbytes", info["limit_maxbytes"]),
             ("bytes", info["bytes"]), ("curr_items", info["curr_items"]),
             ("total_items", c["total_items"]),
             ("evictions", c["evictions"]), ("reclaimed", c["reclaimed"]),
             ("outofmemory", c["outofmemory"])]
    return rows + [(name, c[name] if type(value) is int and name in c
                    and name.startswith(("avc_", "audit_")) else value)
                   for name, value in engine.mac.stats().items()]


def settings(engine, op) -> list:
    engine.adopt_settings()             # another worker's changes too
    mac = engine.mac.stats()
    return [("maxbytes", engine.storage.map_size),
            ("item_size_max", engine.max_item_size),
            ("evictions", "on" if engine.evictions else "off"),
            ("verbosity", engine.verbosity),
            ("durability", engine.storage.durability),
            ("data_dir", str(engine.storage.path)),
            ("shutdown_command", "yes" if engine.shutdown_enabled else "no"),
            *tuned(engine), *engine.settings,
            ("mac_mode", mac["mac_mode"]), ("enforcing", mac["enforcing"])]


SLAB_COUNTERS = (("get_hits", "get_hits"), ("cmd_set", "set_hits"),
                 ("delete_hits", "delete_hits"), ("incr_hits", "incr_hits"),
                 ("decr_hits", "decr_hits"), ("cas_hits", "cas_hits"),
                 ("cas_badval", "cas_badval"), ("touch_hits", "touch_hits"))
MIB = 1 << 20


def items(engine, op) -> list:
    """One class (1) holds every item; LRU segments do not apply (0)."""
    count = op.txn.count()
    if not count:
        return []
    oldest = op.txn.oldest_keys(1)
    record = op.txn.get(oldest[0]) if oldest else None
    info = engine.storage.info(op.txn)
    c = engine.counters
    rows = [("number", count), ("number_hot", 0), ("number_warm", 0),
            ("number_cold", count), ("age_hot", 0), ("age_warm", 0),
            ("age", op.now - record.mtime if record else 0),
            ("mem_requested", info["bytes"]), ("evicted", c["evictions"]),
            ("evicted_nonzero", 0), ("evicted_time", 0),
            ("outofmemory", c["outofmemory"]), ("tailrepairs", 0),
            ("reclaimed", c["reclaimed"]), ("expired_unfetched", 0),
            ("evicted_unfetched", 0), ("evicted_active", 0),
            ("crawler_reclaimed", c["crawler_reclaimed"]),
            ("crawler_items_checked", 0), ("lrutail_reflocked", 0)]
    return [(f"items:1:{name}", value) for name, value in rows]


def slabs(engine, op) -> list:
    """memcached's slab rows for the one class: a "page" is a megabyte of
    LMDB pages in use, a "chunk" room for one item of the largest size."""
    info = engine.storage.info(op.txn)
    count = op.txn.count()
    if not count:
        return [("active_slabs", 0), ("total_malloced", 0)]
    total = max(info["limit_maxbytes"] // engine.max_item_size, count)
    c = engine.counters
    rows = [("chunk_size", engine.max_item_size), ("chunks_per_page",
            max(MIB // engine.max_item_size, 1)),
            ("total_pages", -(-info["bytes"] // MIB)),
            ("total_chunks", total), ("used_chunks", count),
            ("free_chunks", total - count), ("free_chunks_end", 0)]
    rows += [(name, c[counter]) for name, counter in SLAB_COUNTERS]
    return [(f"1:{name}", value) for name, value in rows] + [
        ("active_slabs", 1), ("total_malloced", info["bytes"])]


def tuned(engine) -> list:
    """The run-time settings (``lru mode``, ``slabs automove``, ...)."""
    t = tunables(engine)
    return [("detail_enabled", "yes" if t.detail else "no"),
            ("stat_key_prefix", t.delimiter.decode("latin-1")),
            ("cas_enabled", "yes" if t.cas_enabled else "no"),
            ("lru_segmented", "yes" if t.lru_segmented else "no"),
            ("hot_lru_pct", t.hot_lru_pct), ("warm_lru_pct", t.warm_lru_pct),
            ("hot_max_factor", f"{t.hot_max_factor:.2f}"),
            ("warm_max_factor", f"{t.warm_max_factor:.2f}"),
            ("temp_lru", "yes" if t.temp_lru else "no"),
            ("temporary_ttl", t.temporary_ttl),
            ("slab_automove", t.slab_automove),
            ("flush_enabled", "yes" if t.flush_enabled else "no"),
            ("dump_enabled", "yes" if t.dump_enabled else "no"),
            ("lru_crawler", "yes" if t.lru_crawler else "no"),
            ("lru_crawler_sleep", t.lru_crawler_sleep),
            ("lru_crawler_tocrawl", t.lru_crawler_tocrawl),
            ("reqs_per_event", t.reqs_per_event)]


def conns(engine, op) -> list:
    """memcached's rows per connection, in fd order: a client sees its own
    context's connections only, unless it holds kv_cache:setattr (an
    operator), who also sees the listeners."""
    scontext = op.session.scontext
    # kv_cache:setattr (not audited: a listing, not an attempt).
    operator = engine.mac.has_perm(scontext, engine.mac.cache_context,
                                   "kv_cache", "setattr", audit=False)
    entries = []
    if operator:
        entries += [(fd, (("addr", address), ("state", "conn_listening"),
                          ("secs_since_last_cmd", idle)))
                    for fd, address, idle in engine.server_stats("listeners")]
    entries += [(fd, (("addr", peer), ("listen_addr", listener),
                      ("state", "conn_parse_cmd"),
                      ("secs_since_last_cmd", idle)))
                for fd, peer, listener, context, idle
                in engine.server_stats("conns")
                if operator or context == scontext]
    return [(f"{fd}:{name}", value) for fd, rows in sorted(entries)
            for name, value in rows]


GROUPS = {
    "": general,
    "settings": settings,
    "items": items,
    "slabs": slabs,
    "conns": conns,
    "sizes": lambda engine, op: [("sizes_status", "disabled")],
    "extstore": lambda engine, op: [],       # no extstore: memcached's answer
}
