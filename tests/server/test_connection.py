"""A connection on a real engine (LMDB directory, compiled policy) and a
server that does not listen: when its replies are written, and how many
writes they take. The transport records what the connection writes."""

from __future__ import annotations

import asyncio

import pytest

from securecache.engine import Engine
from securecache.security import open_mac
from securecache.server.app import Listen, Server
from securecache.server.connection import Connection
from securecache.server.lanes import WriteLane
from securecache.storage import Storage

LOCAL = "system_u:system_r:securecache_local_t:s0"


class Transport:
    """The transport side of a connection: every ``write`` kept."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def set_write_buffer_limits(self, high: int) -> None:
        pass

    def get_extra_info(self, name: str, default=None):
        return default

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


@pytest.fixture(scope="module")
def mac():
    return open_mac("policy", audit="none")


def serve(tmp_path, mac, durability: str, body) -> None:
    """Run ``body(server, connect)`` on a fresh loop; ``connect()`` gives a
    new connection and its transport."""
    storage = Storage(tmp_path / "data", map_size=16 << 20,
                      durability=durability)
    engine = Engine(storage, mac)
    server = Server(engine, lambda sock, cert: (LOCAL, {}), Listen())

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server.lane = WriteLane(engine, loop, lambda error: None,
                                threaded=durability == "fsync")
        engine.reader_opened = server._reader_opened

        def connect():
            transport = Transport()
            conn = Connection(server)
            conn.connection_made(transport)
            return conn, transport
        try:
            await body(server, connect)
        finally:
            await server.lane.drain()
            server.lane.close()
    try:
        asyncio.run(main())
    finally:
        storage.close()


async def settle(server) -> None:
    await server.lane.drain()
    for _ in range(3):
        await asyncio.sleep(0)


def test_a_reply_leaves_before_the_next_client_is_read(tmp_path, mac):
    async def body(server, connect):
        (first, one), (second, two) = connect(), connect()
        first.data_received(b"set k 0 0 1\r\nv\r\n")
        await settle(server)
        one.writes.clear()
        # both clients' requests in one loop turn: the first client's
        # reply does not wait for the second client or the turn's end
        first.data_received(b"get k\r\n")
        assert one.writes == [b"VALUE k 0 1\r\nv\r\nEND\r\n"]
        second.data_received(b"get nope\r\n")
        assert two.writes == [b"END\r\n"]
    serve(tmp_path, mac, "async", body)


@pytest.mark.parametrize("durability", ["async", "fsync"])
def test_a_part_reaches_the_lane_whole(tmp_path, mac, durability):
    # the storage thread may take a group the moment a part is submitted:
    # the rest of the chunk must be in the part by then, or it waits for
    # a second group (and the reads' replies for a second write)
    async def body(server, connect):
        conn, transport = connect()
        submitted = []
        lane_submit = server.lane.submit

        def submit(connection):
            submitted.append(len(connection.part))
            lane_submit(connection)
        server.lane.submit = submit
        conn.data_received(b"get a\r\nset a 0 0 1\r\n1\r\nget a\r\n"
                           b"set b 0 0 1\r\n2\r\nget b\r\n")
        assert submitted == [4]
        await settle(server)
        assert transport.writes == [b"END\r\nSTORED\r\nVALUE a 0 1\r\n1"
                                    b"\r\nEND\r\nSTORED\r\nVALUE b 0 1\r\n"
                                    b"2\r\nEND\r\n"]
    serve(tmp_path, mac, durability, body)


@pytest.mark.parametrize("durability", ["async", "fsync"])
def test_the_replies_of_a_chunk_leave_in_one_write(tmp_path, mac,
                                                   durability):
    async def body(server, connect):
        conn, transport = connect()
        # reads, then a write: the reads' replies are held for the
        # write's; all of them, and those of the reads behind it, come
        # back after the commit in one write (one per chunk, as memcached)
        conn.data_received(b"get a\r\nget b\r\nset a 0 0 1\r\n1\r\n"
                           b"get a\r\nget b\r\n")
        assert transport.writes == []
        await settle(server)
        assert transport.writes == [
            b"END\r\nEND\r\nSTORED\r\nVALUE a 0 1\r\n1\r\nEND\r\nEND\r\n"]
        transport.writes.clear()
        conn.data_received(b"get a\r\n" * 16)
        assert transport.writes == [b"VALUE a 0 1\r\n1\r\nEND\r\n" * 16]
    serve(tmp_path, mac, durability, body)
