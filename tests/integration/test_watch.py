"""``watch``: memcached's log stream, shown only what the watcher may see.

The lines are compared with Debian's memcached 1.6.18 field by field (the
numbers that differ by nature -- time, gid, fd -- are masked); a watcher
needs ``kv_cache:getattr`` and sees the events of the items it may
``getattr``; ``-W`` refuses the command as memcached does.
"""

from __future__ import annotations

import re
import socket
import time

import pytest

from .daemons import Daemon, Memcached, Raw
from .mac_support import build_policy, write_peer_contexts

LOCAL = "system_u:system_r:securecache_local_t:s0"
APP = "system_u:system_r:securecache_app_t:s0"
ADMIN = "system_u:system_r:securecache_admin_t:s0-s0:c0.c1023"
MASK = re.compile(rb"(ts|gid|cfd)=[0-9.]+")


def lines(sock: socket.socket, count: int, timeout: float = 3.0) -> list[bytes]:
    """The next ``count`` watch lines, numbers that vary masked."""
    data = b""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    while data.count(b"\n") < count and time.monotonic() < deadline:
        try:
            data += sock.recv(65536)
        except socket.timeout:
            break
    return [MASK.sub(rb"\1=N", line) for line in data.splitlines()]


def watcher(port: int, kinds: bytes = b"", source: str | None = None):
    sock = socket.create_connection(("127.0.0.1", port), timeout=3)
    if source:
        sock.close()
        sock = socket.socket()
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
    sock.sendall(b"watch" + kinds + b"\r\n")
    sock.settimeout(3)
    assert sock.recv(4) == b"OK\r\n"
    return sock


@pytest.fixture
def daemon(tmp_path):
    peers = write_peer_contexts(tmp_path / "peer_contexts",
                                net={"127.0.0.1": LOCAL, "127.0.0.2": APP,
                                     "127.0.0.3": ADMIN})
    daemon = Daemon(tmp_path, "--peer-contexts", str(peers)).start()
    yield daemon
    daemon.kill()


def test_watch_lines_as_memcached_writes_them(daemon):
    """A store and a hit, watched for mutations and fetchers: the same
    lines as memcached's, but for the numbers that vary."""
    seen = {}
    memcached = Memcached()
    try:
        for name, port in (("memcached", memcached.port), ("ours", daemon.port)):
            watch = watcher(port, b" fetchers mutations")
            raw = Raw(port)
            assert raw.call(b"set foo 5 0 3\r\nbar\r\n") == b"STORED\r\n"
            assert raw.call(b"get foo\r\n", b"END\r\n").startswith(b"VALUE")
            seen[name] = [line for line in lines(watch, 3)
                          if b"status=found" in line or b"item_store" in line]
            watch.close()
            raw.close()
    finally:
        memcached.stop()
    assert seen["ours"] == seen["memcached"]
    assert seen["ours"] == [
        b"ts=N gid=N type=item_store key=foo status=stored cmd=set ttl=0 "
        b"clsid=1 cfd=N size=3",
        b"ts=N gid=N type=item_get key=foo status=found clsid=1 cfd=N size=3"]


def test_a_watcher_sees_only_what_it_may_getattr(daemon):
    local = watcher(daemon.port, b" mutations")
    app = watcher(daemon.port, b" mutations", source="127.0.0.2")
    admin = watcher(daemon.port, b" mutations", source="127.0.0.3")
    mine, theirs = Raw(daemon.port), Raw(daemon.port, source="127.0.0.2")
    assert mine.call(b"set local:k 0 0 1\r\nx\r\n") == b"STORED\r\n"
    assert theirs.call(b"set app:k 0 0 1\r\ny\r\n") == b"STORED\r\n"
    keys = lambda sock, n: [re.search(rb"key=(\S+)", line).group(1)  # noqa
                            for line in lines(sock, n, 1.0)]
    assert keys(admin, 2) == [b"local%3Ak", b"app%3Ak"]
    assert keys(local, 2) == [b"local%3Ak"]
    assert keys(app, 2) == [b"app%3Ak"]


def test_watch_needs_kv_cache_getattr(tmp_path):
    """A domain without kv_cache:getattr is denied, as stats would be."""
    module = tmp_path / "blind.cil"
    module.write_text("; a client that may connect, and no more\n"
                      "(type sctest_blind_t)\n"
                      "(call securecache_client (sctest_blind_t))\n")
    policy = build_policy(tmp_path / "test.policy", module)
    peers = write_peer_contexts(
        tmp_path / "peer_contexts",
        net={"127.0.0.1": "system_u:system_r:sctest_blind_t:s0"})
    daemon = Daemon(tmp_path, "--mac", "policy", "--policy", str(policy),
                    "--peer-contexts", str(peers)).start()
    try:
        raw = Raw(daemon.port)
        assert raw.call(b"watch\r\n") == b"CLIENT_ERROR access denied\r\n"
        assert raw.call(b"version\r\n").startswith(b"VERSION")
    finally:
        daemon.kill()


def test_disable_watch_refuses_it_as_memcached(tmp_path):
    memcached = Memcached("-W")
    daemon = Daemon(tmp_path, "-W").start()
    try:
        replies = {Raw(port).call(b"watch\r\n")
                   for port in (memcached.port, daemon.port)}
        assert replies == {b"CLIENT_ERROR watch commands not allowed\r\n"}
    finally:
        memcached.stop()
        daemon.kill()


def test_unknown_watch_kind_is_an_error(daemon):
    assert Raw(daemon.port).call(b"watch nonsense\r\n") == b"ERROR\r\n"
