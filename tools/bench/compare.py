#!/usr/bin/env python3
"""Throughput of securecache against Debian's memcached, in one invocation.

Runs libmemcached's load generator (memcslap) against a fresh memcached and
a fresh securecache (embedded default policy, enforcing) on loopback, for
each workload, several rounds, and prints the medians and the ratio
securecache/memcached. The machines are shared and noisy: compare ratios
from the same run, never absolute numbers across runs.

    .venv/bin/python tools/bench/compare.py [--rounds 5] [--ops 2500] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.integration.daemons import Daemon, Memcached  # noqa: E402

TIME = re.compile(rb"Time to (set|get|read)\s+(\d+) keys.*?([\d.]+) seconds")


def memcslap(port: int, test: str, ops: int, concurrency: int) -> float:
    """Operations per second of one memcslap run."""
    out = subprocess.run(
        ["memcslap", f"--servers=127.0.0.1:{port}", f"--concurrency={concurrency}",
         f"--execute-number={ops}", f"--test={test}"],
        capture_output=True, timeout=600).stdout
    runs = [m for m in TIME.finditer(out) if m.group(1).decode() == test]
    if not runs:
        raise RuntimeError(f"memcslap printed no timing: {out!r}")
    keys, seconds = int(runs[-1].group(2)), float(runs[-1].group(3))
    return keys / max(seconds, 1e-6)


def measure(port: int, args) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {"set": [], "get": []}
    for _ in range(args.rounds):
        for test in results:
            results[test].append(memcslap(port, test, args.ops,
                                          args.concurrency))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ops", type=int, default=2500,
                        help="operations per client per round")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--durability", choices=("fsync", "async"),
                        default="fsync")
    args = parser.parse_args()
    memcached = Memcached()
    try:
        theirs = measure(memcached.port, args)
    finally:
        memcached.stop()
    with tempfile.TemporaryDirectory() as tmp:
        ours_daemon = Daemon(Path(tmp), "--durability", args.durability,
                             "--audit-log", "stderr").start()
        try:
            ours = measure(ours_daemon.port, args)
        finally:
            ours_daemon.kill()
    print(f"# {args.rounds} rounds, {args.concurrency} clients x {args.ops} ops,"
          f" durability={args.durability}; medians in operations/s")
    print(f"{'test':6} {'memcached':>12} {'securecache':>12} {'ratio':>8}")
    for test in theirs:
        a, b = statistics.median(theirs[test]), statistics.median(ours[test])
        print(f"{test:6} {a:12.0f} {b:12.0f} {b / a:8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
