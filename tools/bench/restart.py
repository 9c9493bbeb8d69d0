#!/usr/bin/env python3
"""Restart time and memory with many items (issue figures, not a test).

Fills a data directory with ``--items`` items of 32 bytes (through the
engine, in groups), starts the daemon, kills it with SIGKILL, and times a
restart until the first answered ``get``. Then runs a load on all the keys
(memtier_benchmark when given, else a bounded Python loop) and reads each
worker's USS (private pages, /proc/PID/smaps_rollup) while it runs.

    .venv/bin/python tools/bench/restart.py [--items 1000000] [-t 1]
        [--memtier PATH]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOP = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(TOP))

from securecache.engine import Engine, Session  # noqa: E402
from securecache.protocol import events as ev  # noqa: E402
from securecache.security import open_mac  # noqa: E402
from securecache.storage import Storage  # noqa: E402

SECURECACHE = TOP / ".venv" / "bin" / "securecache"
LOCAL = "system_u:system_r:securecache_local_t:s0"


def fill(data: Path, items: int, limit_mb: int) -> float:
    storage = Storage(data, map_size=limit_mb << 20, durability="async")
    engine = Engine(storage, open_mac("policy", audit="none"))
    session = Session(LOCAL)
    started = time.monotonic()
    for first in range(0, items, 10_000):
        engine.execute([(session, ev.Store(ev.StoreMode.SET,
                                           b"memtier-%d" % i, 0, 0, b"x" * 32))
                        for i in range(first, min(first + 10_000, items))])
    storage.sync()
    storage.close()
    return time.monotonic() - started


def first_get(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2) as sock:
                sock.sendall(b"get memtier-1\r\n")
                if sock.recv(4096).startswith(b"VALUE"):
                    return
        except OSError:
            time.sleep(0.002)
    raise RuntimeError("no answer")


def uss(pid: int) -> tuple[int, int]:
    """(USS, the part of it that is the LMDB map's pages) in bytes."""
    total = mapped = 0
    in_map = False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5:      # a mapping's head
                in_map = fields[-1].endswith("data.mdb")
            elif fields[0] in ("Private_Clean:", "Private_Dirty:"):
                size = int(fields[1]) * 1024
                total += size
                mapped += size if in_map else 0
    return total, mapped


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except OSError:
                pass
    return found


def kill(daemon: subprocess.Popen) -> None:
    """SIGKILL the daemon and every worker of it."""
    for pid in [*children(daemon.pid), daemon.pid]:
        os.kill(pid, signal.SIGKILL)
    daemon.wait()
    time.sleep(0.1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("-t", "--threads", type=int, default=1)
    parser.add_argument("-m", type=int, default=1024)
    parser.add_argument("--memtier", default=os.environ.get("MEMTIER"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        print(f"filled {args.items} items in {fill(data, args.items, args.m):.1f} s")
        port = 23000 + os.getpid() % 1000
        root = ["-u", "root"] if os.geteuid() == 0 else []   # as bench.py
        command = [str(SECURECACHE), "serve", *root, "--data-dir", str(data), "-l",
                   "127.0.0.1", "-p", str(port), "-m", str(args.m),
                   "-t", str(args.threads), "--audit-log", "none"]
        log = open(Path(tmp) / "log", "wb")
        daemon = subprocess.Popen(command, stdout=log, stderr=log)
        first_get(port, time.monotonic() + 30)
        kill(daemon)
        times = []
        for _ in range(3):
            started = time.monotonic()
            daemon = subprocess.Popen(command, stdout=log, stderr=log)
            first_get(port, started + 30)
            times.append(time.monotonic() - started)
            kill(daemon)
        print("restart to first answered get: " +
              ", ".join(f"{t:.3f} s" for t in times) + " (SIGKILL before each)")
        daemon = subprocess.Popen(command, stdout=log, stderr=log)
        first_get(port, time.monotonic() + 30)
        time.sleep(0.5)                  # every worker is up
        workers = children(daemon.pid) or [daemon.pid]
        load = subprocess.Popen(
            [args.memtier, "-s", "127.0.0.1", "-p", str(port), "-P",
             "memcache_text", "-t", "1", "-c", "50", "--ratio=1:9", "-d", "32",
             f"--key-maximum={args.items}", "--key-minimum=1",
             "--key-pattern=R:R", "--test-time=8", "--hide-histogram"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) \
            if args.memtier else None
        peak = {pid: (0, 0) for pid in workers}
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            for pid in workers:
                peak[pid] = max(peak[pid], uss(pid))
            time.sleep(0.5)
        if load is not None:
            load.wait()
        for pid, (total, mapped) in peak.items():
            print(f"worker {pid}: USS peak {total / 2**20:.1f} MB under load, "
                  f"of which {mapped / 2**20:.1f} MB are pages of the LMDB "
                  f"map (the page cache, mapped by this process alone); "
                  f"the rest {(total - mapped) / 2**20:.1f} MB")
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
