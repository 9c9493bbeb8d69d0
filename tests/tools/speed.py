"""Speed of the offline tools on 1,000,000 items of 32 bytes (issue 8,
item 7).  Not a test: run it by hand, once, on a quiet machine:

    .venv/bin/python -m tests.tools.speed [COUNT]

It fills a data directory through the storage API (3 labels, every 5th
item with a TTL), then times dump (to a file), restore (of that file into
an empty directory, the same path as the CLI: verifying read, then the
writes) and check, each through the library functions the CLI calls, and
prints items/s.  The figures are in docs/performance.md."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from securecache.security import open_mac
from securecache.storage import Record, Storage
from securecache.tools.check import check
from securecache.tools.dump import dump
from securecache.tools.restore import restore

from .toolsupport import LABELS

MAP = 1 << 30


def fill(directory: Path, count: int) -> None:
    storage = Storage(directory, map_size=MAP, durability="async")
    now = int(time.time())
    value = b"v" * 32
    for start in range(0, count, 100_000):
        with storage.txn(write=True) as txn:
            ids = [txn.label_id(label.encode()) for label in LABELS]
            for i in range(start, min(start + 100_000, count)):
                txn.put(b"key:%08d" % i, Record(ids[i % 3], 0, now + 3600 if i % 5 == 0 else 0,
                                                now, 0, value), None)
    storage.close()


def main(count: int) -> None:
    mac = open_mac("policy", audit="none")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        fill(tmp / "src", count)
        source = Storage(tmp / "src", map_size=MAP)
        start = time.perf_counter()
        with open(tmp / "d.dump", "wb", buffering=1 << 20) as out:
            dump(source, out, fingerprint=mac.fingerprint, progress=False)
        dumped = time.perf_counter() - start
        target = Storage(tmp / "dst", map_size=MAP, durability="fsync")
        start = time.perf_counter()
        with open(tmp / "d.dump", "rb", buffering=1 << 20) as stream:
            result = restore(target, mac, stream, seekable=True, progress=False)
        restored = time.perf_counter() - start
        assert result.written == count, result
        start = time.perf_counter()
        report = check(target, mac)
        checked = time.perf_counter() - start
        assert report.items == count and not report.problems and not report.invalid
        size = (tmp / "d.dump").stat().st_size
        for name, seconds in (("dump", dumped), ("restore", restored), ("check", checked)):
            print(f"{name:8} {count:,} items in {seconds:.2f} s: {count / seconds:,.0f} items/s")
        print(f"dump file {size:,} bytes ({size / count:.1f} per item)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
