"""Helpers of the tools' tests: run `securecache TOOL ...`, fill a data
directory through the storage API, read every item back raw."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from securecache.storage import Record, Storage
from securecache.storage import bulk

from tests.integration.daemons import SECURECACHE

LABELS = ("system_u:object_r:securecache_item_t:s0",
          "system_u:object_r:securecache_app_item_t:s0",
          "system_u:object_r:securecache_local_item_t:s0")
ADMIN = "system_u:system_r:securecache_admin_t:s0-s0:c0.c1023"
MAP = 256 << 20


def run(*args, input_: bytes | None = None, timeout=120) -> subprocess.CompletedProcess:
    """``securecache ARGS`` (bytes out, text err)."""
    proc = subprocess.run([str(SECURECACHE), *map(str, args)], input=input_,
                          capture_output=True, timeout=timeout)
    proc.stderr = proc.stderr.decode(errors="replace")
    return proc


def key_of(i: int) -> bytes:
    return (b"app:%07d", b"local:%07d", b"k%07d")[i % 3] % i


def fill(directory: Path, count: int, *, now: int | None = None, labels=LABELS,
         expired_every: int = 7, ttl_every: int = 5) -> int:
    """``count`` items under len(labels) labels; every ``ttl_every``-th
    has an exptime an hour ahead, every ``expired_every``-th one already
    past (0: none).  Returns the number of live items."""
    now = int(time.time()) if now is None else now
    storage = Storage(directory, map_size=MAP, durability="async")
    live = 0
    with storage.txn(write=True) as txn:
        ids = [txn.label_id(label.encode()) for label in labels]
        for i in range(count):
            exptime = now - 5 if expired_every and i % expired_every == 0 else \
                now + 3600 if ttl_every and i % ttl_every == 0 else 0
            live += exptime == 0 or exptime > now
            txn.put(key_of(i), Record(ids[i % len(ids)], i, exptime, now - 60, 0,
                                      b"value-%d" % i), None)
    storage.close()
    return live


def items(directory: Path) -> dict[bytes, tuple]:
    """key -> (value, flags, exptime, cas, label) of every stored item."""
    storage = Storage(directory, map_size=MAP)
    try:
        with storage.txn(write=False) as txn:
            labels = bulk.all_labels(txn)
            result = {}
            for key, raw in bulk.raw_items(txn):
                label_id, flags, exptime, _mtime, cas, _state = bulk.unpack_header(raw)
                result[key] = (bytes(raw[bulk.HEADER_SIZE:]), flags, exptime, cas,
                               labels.get(label_id))
            return result
    finally:
        storage.close()


def live(snapshot: dict[bytes, tuple], now: int) -> dict[bytes, tuple]:
    """The items of ``snapshot`` that are not expired at ``now``."""
    return {k: v for k, v in snapshot.items() if not v[2] or v[2] > now}


def strip_cas(snapshot: dict[bytes, tuple]) -> dict[bytes, tuple]:
    return {k: (v[0], v[1], v[2], v[4]) for k, v in snapshot.items()}
