#!/usr/bin/env python3
"""CPU per request of the hot path alone, without sockets: parse, check,
LMDB, render. Deterministic enough to compare two versions of the code
(the event loop's own cost is what tools/bench/run adds on top).

``--pipelined`` adds the daemon's pipelined mixed load on real connections
(``Connection``, its ``Server`` and an async ``WriteLane``, the engine) with
a transport that only keeps what is written: 50 clients, each sending 16
requests a read (a set for one in ten) and the next 16 once all its
replies are in, as memtier_benchmark --pipeline=16 does.

    .venv/bin/python tools/bench/hotpath.py [--n 200000] [--repeat 5]
        [--pipelined]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from securecache.engine import Engine, Session  # noqa: E402
from securecache.engine.core import WRITE  # noqa: E402
from securecache.protocol.text import TextCodec  # noqa: E402
from securecache.security import open_mac  # noqa: E402
from securecache.server.app import Listen, Server  # noqa: E402
from securecache.server.connection import Connection  # noqa: E402
from securecache.server.lanes import WriteLane  # noqa: E402
from securecache.storage import Storage  # noqa: E402

LOCAL = "system_u:system_r:securecache_local_t:s0"
GROUP = 32


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--mac", default="policy")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--pipelined", action="store_true",
                        help="also the pipelined mixed load on connections")
    args = parser.parse_args()
    mac = open_mac(args.mac, audit="none")
    session = Session(LOCAL)
    codec = TextCodec()
    keys = [b"memtier-%d" % i for i in range(10_000)]
    with tempfile.TemporaryDirectory() as tmp:
        storage, engine = loaded(Path(tmp) / "d", "fsync", mac, keys)
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
        if args.pipelined:
            storage, engine = loaded(Path(tmp) / "a", "async", mac, keys)
            best = float("inf")
            for _ in range(args.repeat):
                cpu, sent, _ = asyncio.run(pipelined(engine, keys, args.n))
                best = min(best, cpu * args.n / sent)
            report("pipelined mixed (16 a read, 1 set in 10, async)", best,
                   args.n)
            storage.close()
    return 0


def loaded(path: Path, durability: str, mac, keys: list[bytes]):
    """A storage and its engine with every key stored once."""
    storage = Storage(path, map_size=256 << 20, durability=durability)
    engine = Engine(storage, mac)
    session, codec, preload = Session(LOCAL), TextCodec(), []
    for key in keys:
        codec.receive_data(b"set %s 0 0 32\r\n%s\r\n" % (key, b"x" * 32))
        preload.append((session, codec.next_event()))
    engine.execute(preload)
    return storage, engine


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


class Transport:
    """What a connection writes, counted; nothing is sent."""

    def __init__(self) -> None:
        self.replies = 0

    def write(self, data: bytes) -> None:
        self.replies += data.count(b"END\r\n") + data.count(b"STORED\r\n")

    def set_write_buffer_limits(self, high: int) -> None:
        pass

    def get_extra_info(self, name: str, default=None):
        return default

    def is_closing(self) -> bool:
        return False

    pause_reading = resume_reading = lambda self: None


async def pipelined(engine, keys: list[bytes], n: int,
                    clients: int = 50, depth: int = 16) -> float:
    """The pipelined mixed load (see module doc), at least ``n`` requests:
    (CPU seconds, requests sent, replies written)."""
    server = Server(engine, lambda sock, cert: (LOCAL, {}), Listen())
    server.lane = WriteLane(engine, asyncio.get_running_loop(),
                            lambda error: None, threaded=False)
    engine.reader_opened = server._reader_opened
    pick = random.Random(7)

    def chunk() -> bytes:
        lines = []
        for _ in range(depth):
            key = keys[pick.randrange(len(keys))]
            lines.append(b"set %s 0 0 32\r\n%s\r\n" % (key, b"z" * 32)
                         if pick.random() < 0.1 else b"get %s\r\n" % key)
        return b"".join(lines)
    chunks = [chunk() for _ in range(1024)]     # made before the clock
    clients = [[Connection(server), Transport(), 0]
               for _ in range(clients)]   # connection, transport, asked
    for conn, transport, _ in clients:
        conn.connection_made(transport)
    sent = 0
    started = time.process_time()
    while sent < n:
        for client in clients:
            conn, transport, asked = client
            if transport.replies == asked:  # every reply in: the next 16
                conn.data_received(chunks[(sent // depth) & 1023])
                client[2] += depth
                sent += depth
        await asyncio.sleep(0)            # the turn ends: groups, replies
    await server.lane.drain()
    await asyncio.sleep(0)
    cpu = time.process_time() - started
    server.lane.close()
    return cpu, sent, sum(transport.replies for _, transport, _ in clients)


def report(name: str, cpu: float, n: int) -> None:
    print(f"{name}: {cpu * 1e6 / n:6.2f} us of CPU per request")


if __name__ == "__main__":
    sys.exit(main())
