"""Counters and run-time settings of the whole daemon, shared by its workers.

How this works: before the workers are forked, ``SharedStats`` maps one
anonymous shared page table: a row of 64-bit counters per worker, plus a
row for workers that are gone (``retire``) and a baseline row that
``stats reset`` moves (``reset``). Each worker writes only its own row
(``publish``: its counters as they are now, ten times a second and before
every ``stats`` reply); ``total`` sums the rows. Gauges (connections open
now, AVC entries, CPU time) are left out of the retired and baseline rows:
a gone worker holds no connection, and ``stats reset`` resets no gauge.
With one worker the same table serves, with one row.

After the table, the run-time settings (``SETTINGS``): a worker that
changes one writes its value, marks it shared and bumps the generation
(``share``); each worker takes the shared ones when the generation moved
(``settings``), so a setting given to any worker is the daemon's.
"""

from __future__ import annotations

import mmap
from collections import Counter

GAUGES = ("curr_connections", "avc_entries", "rusage_user_us",
          "rusage_system_us")
SUMMED = ("get_hits", "get_misses", "touch_hits", "touch_misses",
          "set_hits", "set_misses", "delete_hits", "delete_misses",
          "incr_hits", "incr_misses", "decr_hits", "decr_misses",
          "cas_misses", "cas_hits", "cas_badval", "auth_cmds", "auth_errors",
          "cmd_flush", "total_items", "evictions", "reclaimed",
          "outofmemory", "get_expired", "store_too_large", "store_no_memory",
          "total_connections", "rejected_connections",
          "bytes_read", "bytes_written", "group_commits", "group_requests",
          "avc_lookups", "avc_hits", "avc_misses", "avc_denials",
          "avc_evictions", "audit_lines", "audit_suppressed")
NAMES = SUMMED + GAUGES
SETTINGS = ("map_size", "verbosity", "detail", "lru_segmented",
            "slab_automove", "lru_crawler", "lru_crawler_sleep",
            "lru_crawler_tocrawl", "hot_lru_pct", "warm_lru_pct",
            "hot_max_factor", "warm_max_factor", "temp_lru", "temporary_ttl")
"""The run-time settings every worker takes (``share``, ``settings``)."""


class SharedStats:
    """A table of counters per worker in shared memory (see module doc)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.width = len(NAMES)
        rows = workers + 2                 # + retired + baseline
        # then the settings: a generation, a mask of those ever shared,
        # and a value per setting
        self.settings_base = rows * self.width
        self._map = mmap.mmap(-1, (self.settings_base + 2 + len(SETTINGS))
                              * 8)
        self.view = memoryview(self._map).cast("q")
        self.slot = 0
        self.retired = workers
        self.baseline = workers + 1

    def publish(self, values) -> None:
        """Write this worker's counters (a mapping name -> int)."""
        base = self.slot * self.width
        view = self.view
        for index, name in enumerate(NAMES):
            view[base + index] = int(values.get(name, 0))

    def total(self) -> Counter:
        """Every worker's counters summed, less the baseline of the last
        ``stats reset``."""
        view, width = self.view, self.width
        totals = Counter()
        for index, name in enumerate(NAMES):
            value = sum(view[row * width + index]
                        for row in range(self.workers + 1))
            totals[name] = value - view[self.baseline * width + index]
        return totals

    def reset(self) -> None:
        """``stats reset``: count from zero from now on (gauges stay)."""
        totals = self.total()
        base = self.baseline * self.width
        for index, name in enumerate(SUMMED):
            self.view[base + index] += totals[name]

    def share(self, name: str, value: int) -> int:
        """A run-time setting changed in this worker: the others take it
        (``settings``). The new generation of the settings."""
        base, index = self.settings_base, SETTINGS.index(name)
        self.view[base + 2 + index] = int(value)
        self.view[base + 1] |= 1 << index
        self.view[base] += 1             # after the value: readers see it
        return self.view[base]

    def settings(self) -> tuple[int, dict[str, int]]:
        """(generation, the settings some worker changed); the others are
        every worker's own, from the command line."""
        base = self.settings_base
        shared = self.view[base + 1]
        return self.view[base], {name: self.view[base + 2 + index]
                                 for index, name in enumerate(SETTINGS)
                                 if shared >> index & 1}

    def retire(self, slot: int) -> None:
        """A worker is gone: keep what it counted, drop its gauges."""
        width = self.width
        for index, name in enumerate(NAMES):
            value = self.view[slot * width + index]
            self.view[slot * width + index] = 0
            if name not in GAUGES:
                self.view[self.retired * width + index] += value
