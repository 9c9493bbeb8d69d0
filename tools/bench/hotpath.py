#!/usr/bin/env python3
"""CPU per request of the hot path alone, without sockets: parse, check,
LMDB, render. Deterministic enough to compare two versions of the code
(the event loop's own cost is what tools/bench/run adds on top).

    .venv/bin/python tools/bench/hotpath.py [--n 200000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from securecache.engine import Engine, Session  # noqa: E402
from securecache.engine.core import WRITE  # noqa: E402
from securecache.protocol.text import TextCodec  # noqa: E402
from securecache.security import open_mac  # noqa: E402
from securecache.storage import Storage  # noqa: E402

LOCAL = "system_u:system_r:securecache_local_t:s0"
GROUP = 32


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--mac", default="policy")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        storage = Storage(Path(tmp) / "d", map_size=256 << 20)
        mac = open_mac(args.mac, audit="none")
        engine = Engine(storage, mac)
        session = Session(LOCAL)
        codec = TextCodec()
        keys = [b"memtier-%d" % i for i in range(10_000)]
        preload = []
        for key in keys:
            codec.receive_data(b"set %s 0 0 32\r\n%s\r\n" % (key, b"x" * 32))
            preload.append((session, codec.next_event()))
        engine.execute(preload)
        lines = [b"get %s\r\n" % keys[i * 7919 % len(keys)]
                 for i in range(4096)]
        sets = [b"set %s 0 0 32\r\n%s\r\n" % (keys[i * 7919 % len(keys)],
                                             b"y" * 32) for i in range(4096)]
        best = float("inf")
        for _ in range(args.repeat):        # the least disturbed run counts
            started = time.process_time()
            for i in range(args.n):
                get(engine, session, codec, lines[i & 4095])
            best = min(best, time.process_time() - started)
        report("get", best, args.n)
        groups = args.n // (4 * GROUP)
        started = time.process_time()
        for i in range(groups):
            put(engine, session, codec, sets, i * GROUP)
        report(f"set (groups of {GROUP}, fsync each)",
               time.process_time() - started, groups * GROUP)
        storage.close()
    return 0


def get(engine, session, codec, line: bytes) -> bytes:
    codec.receive_data(line)
    request = codec.next_event()
    reply = engine.read(session, request)
    out = codec.send(request, reply)
    engine.release_reader()
    return out


def put(engine, session, codec, sets, start: int) -> list[bytes]:
    batch = []
    for i in range(start, start + GROUP):
        codec.receive_data(sets[i & 4095])
        request = codec.next_event()
        assert engine.read(session, request) is WRITE
        batch.append((session, request))
    replies, effects = engine.run_group(batch)
    engine.apply(effects)
    return [codec.send(request, reply)
            for (_, request), reply in zip(batch, replies)]


def report(name: str, cpu: float, n: int) -> None:
    print(f"{name}: {cpu * 1e6 / n:6.2f} us of CPU per request")


if __name__ == "__main__":
    sys.exit(main())
