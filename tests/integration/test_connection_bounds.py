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


def send_unread(raw: Raw, request: bytes, times: int) -> None:
    """Send ``request`` up to ``times`` times without reading a reply, for
    at most 5 s (the daemon stops reading a client that does not read)."""
    raw.sock.setblocking(False)
    sent, deadline = 0, time.monotonic() + 5
    while sent < times * len(request) and time.monotonic() < deadline:
        try:
            sent += raw.sock.send(request)
        except BlockingIOError:
            time.sleep(0.05)
    raw.sock.setblocking(True)


@pytest.mark.parametrize("request_, times", [
    (b"get big\r\n" * 1000, 20),
    (b"set k 0 0 1\r\nv\r\n" + b"get big\r\n" * 1000, 10),
], ids=["gets", "gets-behind-a-write"])
def test_a_client_that_never_reads_its_replies_costs_little(daemon, request_,
                                                           times):
    """Thousands of gets of a 100 KB value (GBs of replies) never read: the
    daemon stops reading the client; its memory grows by a few MB. Behind
    the client's own write, the group commit holds a bounded share of the
    replies and the rest is read as the client reads (it used to build
    them all in the group)."""
    raw = Raw(daemon.port)
    assert raw.call(b"set big 0 0 100000\r\n" + b"v" * 100000 + b"\r\n") == \
        b"STORED\r\n"
    before = rss(daemon.process.pid)
    send_unread(raw, request_, times)
    time.sleep(0.5)
    grown = rss(daemon.process.pid) - before
    assert grown < 32 << 20, grown
    other = Raw(daemon.port)
    assert other.call(b"version\r\n").startswith(b"VERSION")
    raw.close()
    other.close()


@pytest.mark.parametrize("line", [b"get", b"gat 0",
                                  b"set x 0 0 1\r\n1\r\nget"],
                         ids=["get", "gat", "get-behind-a-write"])
def test_a_long_answer_is_sliced(daemon, line):
    """A get line of 20,000 keys of a 10 KB item, on the read lane or in a
    write group (gat; a get behind the client's write): a 200 MB answer,
    written as the client reads it, never built whole."""
    raw = Raw(daemon.port)
    assert raw.call(b"set k 0 0 10000\r\n" + b"x" * 10000 + b"\r\n") == \
        b"STORED\r\n"
    before = rss(daemon.process.pid)
    raw.send(line + b" k" * 20000 + b"\r\n")
    time.sleep(0.5)                           # the client does not read yet
    grown = rss(daemon.process.pid) - before
    assert grown < 32 << 20, grown
    received, tail = 0, b""
    raw.sock.settimeout(10)
    while not tail.endswith(b"END\r\n"):
        chunk = raw.sock.recv(1 << 20)
        assert chunk
        received += len(chunk)
        tail = (tail + chunk)[-16:]
    stored = len(b"STORED\r\n") if line.startswith(b"set") else 0
    assert received == stored + 20000 * (len(b"VALUE k 0 10000\r\n") +
                                         10002) + 5
    raw.close()


def test_a_half_closed_client_gets_every_reply_it_reads_slowly(daemon):
    """A write, 500 gets of a 100 KB value and a half-close (EOF), the
    replies read only later: every reply arrives, then the close."""
    raw = Raw(daemon.port)
    assert raw.call(b"set big 0 0 100000\r\n" + b"v" * 100000 + b"\r\n") == \
        b"STORED\r\n"
    raw.send(b"set k 0 0 1\r\nv\r\n" + b"get big\r\n" * 500)
    raw.sock.shutdown(socket.SHUT_WR)
    time.sleep(0.5)                           # the daemon's writes block
    data = raw.read_all(quiet=5)
    assert data.endswith(b"<closed>")
    assert data.startswith(b"STORED\r\n")
    assert data.count(b"VALUE big 0 100000\r\n") == 500
    raw.close()


def test_clients_that_quit_free_their_slot_at_once(tmp_path):
    """Connect, quit, close, 200 times with -c 20: a client that has gone
    holds no connection slot while its close lingers (it used to, for
    2 s, and the next clients were refused)."""
    daemon = Daemon(tmp_path, "-c", "20").start()
    try:
        for _ in range(200):
            raw = Raw(daemon.port)
            raw.send(b"quit\r\n")
            assert raw.read_all(quiet=5) == b"<closed>"
            raw.close()
        raw = Raw(daemon.port)
        assert raw.call(b"version\r\n").startswith(b"VERSION")
        raw.close()
    finally:
        daemon.kill()


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

        def addresses(raw):        # of the clients (not the listeners)
            text = raw.call(b"stats conns\r\n", b"END\r\n").decode()
            clients = {line.split()[1].split(":")[0] for line in
                       text.splitlines() if line.endswith(" conn_parse_cmd")}
            return {line.split()[2].rsplit(":", 1)[0]
                    for line in text.splitlines() if ":addr " in line
                    and line.split()[1].split(":")[0] in clients}
        everyone = {"tcp:127.0.0.1", "tcp:127.0.0.2", "tcp:127.0.0.3"}
        # securecache_local_t holds kv_cache:setattr in the bundled policy
        # (an operator, see policy/README.md): it sees every connection.
        assert addresses(local) == everyone
        assert addresses(app) == {"tcp:127.0.0.2"}
        assert addresses(admin) == everyone
        # the listeners are an operator's to see
        listing = admin.call(b"stats conns\r\n", b"END\r\n").decode()
        assert " conn_listening" in listing
        listing = app.call(b"stats conns\r\n", b"END\r\n").decode()
        assert " conn_listening" not in listing
    finally:
        daemon.kill()
