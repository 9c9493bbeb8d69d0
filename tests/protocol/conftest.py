"""Shared helpers for the protocol codec tests.

How this works: ``memcached`` starts a real memcached on a free loopback
port for the session (killed at the end) so tests can send it the same
bytes they feed a codec and compare replies byte for byte. Each helper
appends a sentinel (a meta miss or a binary NOOP with a marker opaque) so a
reply is read to its exact end without sleeping. ``parse_all_ways`` feeds
a codec whole, byte by byte and with trailing data, and checks that all
three give the same events.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import time
import pytest

from securecache.protocol import binary, meta
from securecache.protocol.events import Noop, ProtocolError

MEMCACHED = shutil.which("memcached") or "/usr/sbin/memcached"
SENTINEL_OPAQUE = 0x5E4714E1
META_END = b"mg __end_of_reply__ k O5e4714e1\r\n"   # never stored: a miss
META_END_REPLY = b"EN k__end_of_reply__ O5e4714e1\r\n"
BINARY_NOOP = struct.pack(">BBHBBHIIQ", 0x80, 0x0A, 0, 0, 0, 0, 0,
                          SENTINEL_OPAQUE, 0)
NEED_DATA = (meta.NEED_DATA, binary.NEED_DATA)


def err(reply: bytes, close: bool = False) -> tuple:
    """A ProtocolError as data, so event lists compare with ==."""
    return ("error", reply, close)


def is_err(event) -> bool:
    return isinstance(event, tuple) and event[0] == "error"


def _drain(codec, out: list) -> bool:
    while True:
        try:
            event = codec.next_event()
        except ProtocolError as error:
            out.append(err(error.reply, error.close))
            if error.close:
                return True
            continue
        if any(event is marker for marker in NEED_DATA):
            return False
        out.append(event)


def run(make_codec, chunks) -> list:
    """Events (and Err) produced by feeding ``chunks`` one at a time."""
    codec, out = make_codec(), []
    for chunk in chunks:
        codec.receive_data(chunk)
        if _drain(codec, out):
            break
    return out


def parse_all_ways(make_codec, data: bytes, trailer: bytes) -> list:
    """Events of ``data`` fed whole; asserts byte-by-byte and trailing agree.

    ``trailer`` must parse to one ``Noop`` (``mn``, a binary NOOP).
    """
    whole = run(make_codec, [data])
    bytewise = run(make_codec, [data[i:i + 1] for i in range(len(data))])
    assert bytewise == whole
    trailing = run(make_codec, [data + trailer])
    if whole and is_err(whole[-1]) and whole[-1][2]:
        assert trailing == whole
    else:
        assert trailing[:-1] == whole
        assert isinstance(trailing[-1], Noop)
    return whole


class Conn:
    """One client connection to the real memcached."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=3)

    def _read_until(self, done) -> tuple[bytes, bool]:
        data = bytearray()
        deadline = time.monotonic() + 3
        while (end := done(data)) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"no complete reply: {bytes(data)!r}")
            chunk = self.sock.recv(65536)
            if not chunk:
                return bytes(data), True
            data += chunk
        return bytes(data[:end]), False

    def meta(self, data: bytes) -> bytes:
        """memcached's reply to text/meta ``data`` (must stay open)."""
        self.sock.sendall(data + META_END)
        reply, closed = self._read_until(
            lambda d: len(d) - len(META_END_REPLY)
            if d.endswith(META_END_REPLY) else None)
        assert not closed
        return reply

    def binary(self, data: bytes) -> tuple[bytes, bool]:
        """memcached's reply to binary ``data`` and whether it closed."""
        self.sock.sendall(data + BINARY_NOOP)
        return self._read_until(_before_sentinel)

    def close(self) -> None:
        self.sock.close()


def _before_sentinel(data: bytearray) -> int | None:
    offset = 0
    while len(data) - offset >= 24:
        _, opcode, _, _, _, _, body, opaque, _ = struct.unpack_from(
            ">BBHBBHIIQ", data, offset)
        if opcode == 0x0A and opaque == SENTINEL_OPAQUE:
            return offset
        offset += 24 + body
    return None


class Memcached:
    """A running memcached: ``connect()`` gives a fresh ``Conn``."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._conns: list[Conn] = []

    def connect(self) -> Conn:
        conn = Conn(self.port)
        self._conns.append(conn)
        return conn

    def close_all(self) -> None:
        for conn in self._conns:
            conn.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def memcached():
    """A real memcached 1.6 on 127.0.0.1, killed when the session ends."""
    if not os.path.exists(MEMCACHED):
        pytest.fail("memcached is not installed: run tools/setup")
    port = _free_port()
    proc = subprocess.Popen(
        [MEMCACHED, "-u", "root", "-l", "127.0.0.1", "-p", str(port),
         "-U", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                time.sleep(0.01)
        server = Memcached(port)
        yield server
        server.close_all()
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def all_ways():
    """``parse_all_ways(make_codec, data, trailer) -> events``."""
    return parse_all_ways


@pytest.fixture(scope="session")
def feed():
    """``run(make_codec, chunks) -> events`` (one way only)."""
    return run


@pytest.fixture
def one(parse):
    """The single request ``data`` parses to (all three ways); ``parse`` is
    the test module's own fixture for its codec."""
    def one(data: bytes):
        events = parse(data)
        assert len(events) == 1, events
        return events[0]
    return one


def _no_event_without_input(codec, chunks) -> None:
    """Feed ``chunks`` one by one, taking every event; whenever an event or
    an error leaves nothing buffered, the next must be NEED_DATA (the
    connection's walk stops there without asking the codec)."""
    for chunk in chunks:
        codec.receive_data(chunk)
        while True:
            try:
                if codec.next_event() in NEED_DATA:
                    break
            except ProtocolError as error:
                if error.close:
                    return
            if not codec.buffered:
                assert codec.next_event() in NEED_DATA
                break


@pytest.fixture(scope="session")
def no_event_without_input():
    """``no_event_without_input(codec, chunks)``: see the function."""
    return _no_event_without_input
