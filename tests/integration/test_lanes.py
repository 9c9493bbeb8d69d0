"""The request pipeline of a real daemon: reads at once, writes grouped,
order and read-your-writes per connection, replies to a half-closed client,
and every decision logged and counted once."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from .daemons import Daemon, Memcached, Raw
from .mac_support import write_peer_contexts

LOCAL = "system_u:system_r:securecache_local_t:s0"
APP = "system_u:system_r:securecache_app_t:s0"
APP_ADDR = "127.0.0.2"


def stats(port: int) -> dict[str, str]:
    raw = Raw(port)
    try:
        text = raw.call(b"stats\r\n", b"END\r\n").decode()
    finally:
        raw.close()
    return dict(line.split(" ", 2)[1:] for line in text.splitlines()
                if line.startswith("STAT "))


def half_closed(port: int, data: bytes) -> bytes:
    """Send ``data``, half-close, and read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
    return out


@pytest.fixture(params=["fsync", "async"])
def daemon(request, tmp_path):
    peers = write_peer_contexts(tmp_path / "peer_contexts",
                                net={"127.0.0.1": LOCAL, APP_ADDR: APP})
    audit = tmp_path / "audit.log"
    daemon = Daemon(tmp_path, "--durability", request.param,
                    "--peer-contexts", str(peers),
                    "--audit-log", str(audit)).start()
    daemon.audit = audit
    yield daemon
    daemon.kill()


def test_half_closed_client_gets_every_reply(daemon):
    """printf '...' | nc -q1: memcached answers all of it, then closes."""
    request = (b"set k 0 0 1\r\nx\r\nget k\r\nset j 0 0 2\r\nyz\r\n"
               b"get j k\r\ndelete k\r\nget k\r\n")
    expected = (b"STORED\r\nVALUE k 0 1\r\nx\r\nEND\r\nSTORED\r\n"
                b"VALUE j 0 2\r\nyz\r\nVALUE k 0 1\r\nx\r\nEND\r\n"
                b"DELETED\r\nEND\r\n")
    memcached = Memcached()
    try:
        assert half_closed(memcached.port, request) == expected
    finally:
        memcached.stop()
    assert half_closed(daemon.port, request) == expected
    assert half_closed(daemon.port, b"get j\r\n") == \
        b"VALUE j 0 2\r\nyz\r\nEND\r\n"


def test_pipelined_writes_and_reads_keep_order(daemon):
    """One chunk mixing writes and reads: replies in request order, and
    each read sees this connection's writes before it."""
    raw = Raw(daemon.port)
    parts = []
    for i in range(200):
        parts.append(b"set k%d 0 0 %d\r\n%d\r\n" % (i % 7, len(b"%d" % i), i))
        parts.append(b"get k%d\r\n" % (i % 7))
    raw.send(b"".join(parts) + b"mn\r\n")
    out = raw.read_through(b"MN")
    expected = b"".join(b"STORED\r\nVALUE k%d 0 %d\r\n%d\r\nEND\r\n"
                        % (i % 7, len(b"%d" % i), i) for i in range(200))
    assert out == expected + b"MN\r\n"
    raw.close()


def test_reads_do_not_wait_for_another_clients_write_group(daemon):
    """While one client's large group of writes commits, another client's
    read of a stored item is answered: it never waits for that group."""
    setup = Raw(daemon.port)
    assert setup.call(b"set ready 0 0 2\r\nok\r\n") == b"STORED\r\n"
    writer = Raw(daemon.port)
    burst = b"".join(b"set w%d 0 0 100 noreply\r\n%s\r\n" % (i, b"v" * 100)
                     for i in range(20000)) + b"mn\r\n"
    done = {}

    def write() -> None:
        writer.send(burst)
        writer.read_through(b"MN", timeout=60)
        done["writer"] = time.monotonic()
    thread = threading.Thread(target=write)
    thread.start()
    time.sleep(0.05)                   # the burst is being parsed, grouped
    answered = []
    while "writer" not in done and len(answered) < 50:
        start = time.monotonic()
        assert setup.call(b"get ready\r\n", b"END\r\n") == \
            b"VALUE ready 0 2\r\nok\r\nEND\r\n"
        answered.append((start, time.monotonic()))
    thread.join()
    during = [end for start, end in answered if end < done["writer"]]
    assert during, "no read was answered while the write group ran"
    setup.close()
    writer.close()


def test_writes_of_many_connections_share_a_group(daemon):
    """Writes that arrive together commit together, in either durability:
    far fewer groups than writes."""
    before = stats(daemon.port)
    clients = [Raw(daemon.port) for _ in range(20)]
    chunk = b"".join(b"set g%d 0 0 1\r\nx\r\n" % i for i in range(50))
    for client in clients:
        client.send(chunk)
    for client in clients:
        assert client.read_until(b"STORED\r\n" * 50) == b"STORED\r\n" * 50
        client.close()
    after = stats(daemon.port)
    groups = int(after["group_commits"]) - int(before["group_commits"])
    writes = int(after["group_requests"]) - int(before["group_requests"])
    assert writes == 1000
    assert groups <= writes // 10, (groups, writes)


def avc_lines(daemon, key: bytes) -> list[str]:
    text = daemon.audit.read_text() if daemon.audit.exists() else ""
    return [line for line in text.splitlines()
            if f'key="{key.decode()}"' in line and "denied" in line]


@pytest.mark.parametrize("stale_first", [True, False])
def test_stale_item_and_denied_read_in_one_chunk_log_once(daemon,
                                                           stale_first):
    """A read that must write (a stale item's recache token) and a denied
    read in the same chunk: one audit line for the one decision, and the
    denied read counted once, as a miss."""
    app = Raw(daemon.port, source=APP_ADDR)
    assert app.call(b"set secret 0 0 1\r\ns\r\n") == b"STORED\r\n"
    local = Raw(daemon.port)
    assert local.call(b"set old 0 0 1\r\no\r\n") == b"STORED\r\n"
    assert local.call(b"md old I T30\r\n") == b"HD\r\n"
    before = stats(daemon.port)
    first, second = b"mg old v\r\n", b"get secret\r\n"
    if not stale_first:
        first, second = second, first
    local.send(first + second + b"mn\r\n")
    out = local.read_through(b"MN")
    assert out == b"VA 1 X W\r\no\r\nEND\r\nMN\r\n" or \
        out == b"END\r\nVA 1 X W\r\no\r\nMN\r\n"
    after = stats(daemon.port)
    assert len(avc_lines(daemon, b"secret")) == 1
    assert int(after["get_misses"]) - int(before["get_misses"]) == 1
    assert int(after["get_hits"]) - int(before["get_hits"]) == 1
    assert int(after["avc_denials"]) - int(before["avc_denials"]) == 1
    app.close()
    local.close()


def test_many_hot_keys_are_written_down_in_batches(daemon):
    """More fetched keys than one housekeeping transaction takes: every
    tick writes them all down, a batch per job, writes going between."""
    count = 2500
    raw = Raw(daemon.port)
    try:
        raw.send(b"".join(b"set h%d 0 0 1 noreply\r\nv\r\n" % i
                          for i in range(count)))
        raw.send(b"".join(b"get h%d\r\n" % i for i in range(count)))
        replies = b""
        while replies.count(b"END\r\n") < count:
            replies += raw.read_until(b"END\r\n", timeout=10)
        assert replies.count(b"VALUE h") == count
        deadline = time.monotonic() + 15
        while True:
            raw.send(b"lru_crawler metadump all\r\n")
            listing = raw.read_until(b"END\r\n", timeout=10)
            lines = [line for line in listing.split(b"\n")
                     if line.startswith(b"key=h")]
            if len(lines) == count and all(b"fetch=yes" in line
                                           for line in lines):
                break
            assert time.monotonic() < deadline, lines[:3]
            time.sleep(0.5)
        assert stats(daemon.port)["curr_items"] == str(count)
    finally:
        raw.close()
