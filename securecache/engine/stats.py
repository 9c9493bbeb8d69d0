"""The rows of ``stats`` and its groups, named as memcached names them.

How this works: one function per group, each given the engine and the
request's ``Op`` (so counts come from the batch's own transaction). The
whole-daemon rows the engine cannot know (connections, bytes on the wire)
come from the server through ``engine.server_stats``; the security
server's rows (``mac_mode``, ``enforcing``, ``avc_*``) from ``mac.stats()``.
"""

from __future__ import annotations

import os

COMMANDS = ("get", "delete", "incr", "decr", "touch")
COUNTERS = ("cas_misses", "cas_hits", "cas_badval", "auth_cmds",
            "auth_errors")


def general(engine, op) -> list:
    """memcached's rows; the counters are the whole daemon's (every worker)."""
    info = engine.storage.info(op.txn)
    c = engine.daemon_totals()
    rows = [("pid", os.getpid()), ("uptime", op.now - engine.started),
            ("time", op.now), ("version", engine.version),
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
    mac = engine.mac.stats()
    return [("maxbytes", engine.storage.map_size),
            ("item_size_max", engine.max_item_size),
            ("evictions", "on" if engine.evictions else "off"),
            ("verbosity", engine.verbosity),
            ("durability", engine.storage.durability),
            ("data_dir", str(engine.storage.path)),
            ("shutdown_command", "yes" if engine.shutdown_enabled else "no"),
            ("cas_enabled", "yes"), *engine.settings,
            ("mac_mode", mac["mac_mode"]), ("enforcing", mac["enforcing"])]


def items(engine, op) -> list:
    oldest = op.txn.oldest_keys(1)
    record = op.txn.get(oldest[0]) if oldest else None
    c = engine.counters
    return [("items:1:number", op.txn.count()),
            ("items:1:age", op.now - record.mtime if record else 0),
            ("items:1:evicted", c["evictions"]),
            ("items:1:outofmemory", c["outofmemory"]),
            ("items:1:reclaimed", c["reclaimed"])]


def slabs(engine, op) -> list:
    info = engine.storage.info(op.txn)
    return [("1:chunk_size", engine.max_item_size),
            ("1:used_chunks", op.txn.count()),
            ("active_slabs", 1), ("total_malloced", info["bytes"])]


GROUPS = {
    "": general,
    "settings": settings,
    "items": items,
    "slabs": slabs,
    "conns": lambda engine, op: engine.server_stats("conns"),
}
