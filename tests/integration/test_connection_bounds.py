"""What one client can make the daemon hold or wait for is bounded: replies
it does not read, a get line that repeats a key, a request that never
finishes arriving; and ``stats conns`` shows a client its own connections."""

from __future__ import annotations

import socket
import time

import pytest

from .daemons import Daemon, Raw
from .mac_support import write_peer_contexts

LOCAL = "system_u:system_r:securecache_local_t:s0"
APP = "system_u:system_r:securecache_app_t:s0"
ADMIN = "system_u:system_r:securecache_admin_t:s0-s0:c0.c1023"


def rss(pid: int) -> int:
    """Resident set size of ``pid`` in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def daemon(tmp_path):
    daemon = Daemon(tmp_path, "-m", "256", "--request-timeout", "2",
                    "--idle-timeout", "3").start()
    yield daemon
    daemon.kill()


def test_a_client_that_never_reads_its_replies_costs_little(daemon):
    """20,000 gets of a 100 KB value (2 GB of replies) never read: the
    daemon stops reading the client; its memory grows by a few MB."""
    raw = Raw(daemon.port)
    assert raw.call(b"set big 0 0 100000\r\n" + b"v" * 100000 + b"\r\n") == \
        b"STORED\r\n"
    before = rss(daemon.process.pid)
    raw.sock.setblocking(False)
    request = b"get big\r\n" * 1000
    sent = 0
    deadline = time.monotonic() + 5
    while sent < 20 * len(request) and time.monotonic() < deadline:
        try:
            sent += raw.sock.send(request)
        except BlockingIOError:
            time.sleep(0.05)
    time.sleep(0.5)
    grown = rss(daemon.process.pid) - before
    assert grown < 32 << 20, grown
    other = Raw(daemon.port)
    assert other.call(b"version\r\n").startswith(b"VERSION")
    raw.close()
    other.close()


def test_a_get_line_repeating_a_key_is_answered_in_slices(daemon):
    """A 100 KB line naming a 10 KB item 20,000 times: a 200 MB answer,
    written as the client reads it, never built whole."""
    raw = Raw(daemon.port)
    assert raw.call(b"set k 0 0 10000\r\n" + b"x" * 10000 + b"\r\n") == \
        b"STORED\r\n"
    before = rss(daemon.process.pid)
    raw.send(b"get" + b" k" * 20000 + b"\r\n")
    time.sleep(0.5)                           # the client does not read yet
    assert rss(daemon.process.pid) - before < 32 << 20
    received = 0
    tail = b""
    raw.sock.settimeout(10)
    while not tail.endswith(b"END\r\n"):
        chunk = raw.sock.recv(1 << 20)
        assert chunk
        received += len(chunk)
        tail = (tail + chunk)[-16:]
    assert received == 20000 * (len(b"VALUE k 0 10000\r\n") + 10002) + 5
    raw.close()


def test_a_request_that_never_finishes_arriving_is_cut_off(daemon):
    """One byte now and then (slowloris): the connection is closed once its
    request has taken longer than --request-timeout, and the slow bytes do
    not count as activity for --idle-timeout either."""
    slow = socket.create_connection(("127.0.0.1", daemon.port), timeout=10)
    started = time.monotonic()
    closed = None
    for byte in b"set slow 0 0 100\r\n" + b"x" * 100:
        try:
            slow.send(bytes([byte]))
            time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            closed = time.monotonic() - started
            break
        slow.setblocking(False)
        try:
            if slow.recv(1) == b"":
                closed = time.monotonic() - started
                break
        except BlockingIOError:
            pass
        slow.setblocking(True)
    assert closed is not None and closed < 5, closed
    ok = Raw(daemon.port)
    assert ok.call(b"get slow\r\n") == b"END\r\n"
    ok.close()


def test_stats_conns_shows_a_client_its_own_connections(tmp_path):
    peers = write_peer_contexts(tmp_path / "peer_contexts",
                                net={"127.0.0.1": LOCAL, "127.0.0.2": APP,
                                     "127.0.0.3": ADMIN})
    daemon = Daemon(tmp_path, "--peer-contexts", str(peers)).start()
    try:
        local, app = Raw(daemon.port), Raw(daemon.port, source="127.0.0.2")
        admin = Raw(daemon.port, source="127.0.0.3")
        # A round trip on each: all three are accepted before any lists them
        # (else a listing could run before the others were, and pass by luck).
        for raw in (local, app, admin):
            assert raw.call(b"version\r\n").startswith(b"VERSION ")

        def addresses(raw):
            text = raw.call(b"stats conns\r\n", b"END\r\n").decode()
            return {line.split()[2].rsplit(":", 1)[0]
                    for line in text.splitlines() if ":addr " in line}
        everyone = {"tcp:127.0.0.1", "tcp:127.0.0.2", "tcp:127.0.0.3"}
        # securecache_local_t holds kv_cache:setattr in the bundled policy
        # (an operator, see policy/README.md): it sees every connection.
        assert addresses(local) == everyone
        assert addresses(app) == {"tcp:127.0.0.2"}
        assert addresses(admin) == everyone
    finally:
        daemon.kill()
