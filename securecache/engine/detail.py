"""Run-time settings of the cache and memcached's per-prefix counts.

How this works: ``Tunables`` holds what operators change while the daemon
runs (``cache_memlimit``, ``lru mode``, ``slabs automove``, ``stats detail
on|off``, ``lru_crawler enable|disable|sleep|tocrawl``) and what ``serve``
set at start (``-D``, ``-C``, ``-o``). The engine carries one as
``engine.tunables`` (``tunables(engine)`` makes the defaults when
``serve`` did not). With ``stats detail on``, ``record`` counts gets,
hits, sets and deletes per key prefix: the part of the key before the
first ``-D`` delimiter (keys without it are not counted, as in
memcached).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

COLUMNS = {"get": 0, "hit": 1, "set": 2, "del": 3}


@dataclass
class Tunables:
    """Settings that change at run time or that ``serve`` passes in."""

    max_limit: int                       # bytes: cache_memlimit's ceiling
    delimiter: bytes = b":"              # -D
    cas_enabled: bool = True             # -C turns it off
    detail: bool = False                 # stats detail on|off
    lru_segmented: bool = True           # lru mode segmented|flat
    hot_lru_pct: int = 20                # lru tune (shown: no segments)
    warm_lru_pct: int = 40
    hot_max_factor: float = 0.2
    warm_max_factor: float = 2.0
    temp_lru: bool = False               # lru temp_ttl (shown)
    temporary_ttl: int = 61
    slab_automove: int = 1               # slabs automove 0|1|2
    lru_crawler: bool = True             # lru_crawler enable|disable
    lru_crawler_sleep: int = 100         # lru_crawler sleep (us, shown)
    lru_crawler_tocrawl: int = 0         # lru_crawler tocrawl (shown)
    reqs_per_event: int = 20             # -R (shown in stats settings)
    flush_enabled: bool = True           # -F turns flush_all off
    dump_enabled: bool = True            # -X turns cachedump/metadump off
    watch_enabled: bool = True           # -W turns watch off
    prefixes: dict = field(default_factory=lambda: defaultdict(
        lambda: [0, 0, 0, 0]))


def tunables(engine) -> Tunables:
    """The engine's settings, made with their defaults on first use."""
    current = getattr(engine, "tunables", None)
    if current is None:
        current = engine.tunables = Tunables(engine.storage.map_size)
    return current


def record(op, what: str, key: bytes, hit: bool = False) -> None:
    """Count a get (and whether it hit), set or delete under its prefix."""
    settings = tunables(op.engine)
    if not settings.detail:
        return
    prefix, found, _ = key.partition(settings.delimiter)
    if not found:
        return
    row = settings.prefixes[prefix]
    row[COLUMNS[what]] += 1
    if what == "get" and hit:
        row[COLUMNS["hit"]] += 1


def rows(settings: Tunables) -> list[tuple[bytes, int, int, int, int]]:
    """``stats detail dump`` rows, by prefix."""
    return [(prefix, *counts)
            for prefix, counts in sorted(settings.prefixes.items())]
