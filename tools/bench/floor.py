#!/usr/bin/env python3
"""The floor: the least a Python get/set server over LMDB can do.

A benchmark instrument, not a cache: it answers ``get KEY`` (one key) from
an LMDB read snapshot and ``set KEY FLAGS EXPTIME BYTES`` into LMDB, with
what securecache's own pipeline keeps -- a connection's replies in its
request order, read-your-writes (nothing behind a connection's set is read
before that set commits), group commit (the sets of a loop turn, or of
all the turns while a commit runs, in one write transaction), with
``fsync`` that transaction synced before its STORED leave -- and nothing
else: no security context, no MAC, no flags, expiry, cas, counters or
fetch times, no other command. What it serves per second
on the bench's loads is the ceiling of this design in pure Python on
uvloop and py-lmdb; securecache's distance to it is the cost of
everything the daemon does per request beyond that. As in securecache,
with fsync the commits run on a second thread.

    floor.py PORT DIRECTORY fsync|async
"""

from __future__ import annotations

import asyncio
import queue
import sys
import threading

import lmdb
import uvloop


class Store:
    """The LMDB environment, the turn's read snapshot and its writes.

    With fsync durability the groups commit on a second thread, as
    securecache's do: the writes that arrive while a group commits form
    the next one, and the loop keeps answering reads meanwhile. With async
    durability a group commits on the loop at the end of its turn."""

    def __init__(self, path: str, durable: bool) -> None:
        self.env = lmdb.open(path, map_size=1 << 30, sync=durable,
                             metasync=durable)
        self.snapshot = None
        self.writes: list[tuple[bytes, bytes]] = []
        self.writers: list[Floor] = []
        self.scheduled = False
        self.committing = False
        self.groups: queue.SimpleQueue | None = None
        if durable:
            self.groups = queue.SimpleQueue()
            threading.Thread(target=self._commits, daemon=True).start()

    def get(self, key: bytes):
        if self.snapshot is None:
            self.snapshot = self.env.begin(buffers=True)
            self._schedule()
        return self.snapshot.get(key)

    def put(self, conn: "Floor", key: bytes, value: bytes) -> None:
        self.writes.append((key, value))
        if not conn.waiting:
            conn.waiting = True
            self.writers.append(conn)
        self._schedule()

    def _schedule(self) -> None:
        if not self.scheduled:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self.end_turn)

    def end_turn(self) -> None:
        """The turn's snapshot released; its writes committed as one group
        (on the thread, once the group in flight is done)."""
        self.scheduled = False
        self._release()
        if not self.writes or self.committing:
            return
        writes, writers = self.writes, self.writers
        self.writes, self.writers = [], []
        if self.groups is None:
            self._commit(writes)
            self._done(writers)
            return
        self.committing = True
        self.groups.put((writes, writers, asyncio.get_running_loop()))

    def _release(self) -> None:
        """Drop the read snapshot: the next read sees the last commit."""
        if self.snapshot is not None:
            self.snapshot.abort()
            self.snapshot = None

    def _commit(self, writes) -> None:
        with self.env.begin(write=True) as txn:
            for key, value in writes:
                txn.put(key, value)

    def _commits(self) -> None:
        while True:
            writes, writers, loop = self.groups.get()
            self._commit(writes)
            loop.call_soon_threadsafe(self._done, writers)

    def _done(self, writers) -> None:
        self.committing = False
        self._release()                 # later reads see this commit
        for conn in writers:
            conn.committed()
        if self.writes:
            self._schedule()            # what came meanwhile: the next group


class Floor(asyncio.Protocol):
    """One connection: walk its input until it meets its own set."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.buffer = bytearray()
        self.out: list[bytes] = []
        self.waiting = False        # a set of ours is not committed yet
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.waiting:
            self._walk()

    def committed(self) -> None:
        self.waiting = False        # the STORED are in ``out`` already
        self._walk()

    def _walk(self) -> None:
        buffer, out, store = self.buffer, self.out, self.store
        while not self.waiting:
            end = buffer.find(b"\r\n")
            if end < 0:
                break
            line = bytes(buffer[:end])
            if line.startswith(b"get "):
                del buffer[:end + 2]
                key = line[4:]
                value = store.get(key)
                out.append(b"END\r\n" if value is None else
                           b"VALUE %s 0 %d\r\n%s\r\nEND\r\n"
                           % (key, len(value), value))
            elif line.startswith(b"set "):
                tokens = line.split(b" ")
                size = int(tokens[4])
                if len(buffer) < end + 2 + size + 2:
                    break               # the data block is not here yet
                if out:                 # the replies before it go now
                    self.transport.write(b"".join(out))
                    out.clear()
                value = bytes(buffer[end + 2:end + 2 + size])
                store.put(self, tokens[1], value)
                del buffer[:end + 2 + size + 2]
                out.append(b"STORED\r\n")
            else:
                del buffer[:end + 2]
                out.append(b"ERROR\r\n")
        if out and not self.waiting:
            self.transport.write(b"".join(out))
            out.clear()


async def serve(port: int, path: str, durable: bool) -> None:
    store = Store(path, durable)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Floor(store), "127.0.0.1", port)
    await server.serve_forever()


def main() -> int:
    port, path, durability = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    uvloop.install()
    asyncio.run(serve(port, path, durability == "fsync"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
