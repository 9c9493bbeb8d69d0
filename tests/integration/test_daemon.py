"""A real daemon process on loopback, driven by real clients."""

from __future__ import annotations

import os
import signal
import stat
import time

import pytest
from pymemcache.client.base import Client

from .daemons import Daemon, Raw


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path).start()
    yield d
    d.kill()


def client(daemon) -> Client:
    return Client(("127.0.0.1", daemon.port), connect_timeout=5, timeout=5)


def test_pymemcache_round_trip(daemon):
    mc = client(daemon)
    assert mc.set("k", b"value", expire=0, noreply=False)
    assert mc.get("k") == b"value"
    assert mc.add("k", b"x", noreply=False) is False
    assert mc.replace("k", b"v2", noreply=False)
    assert mc.append("k", b"+", noreply=False)
    assert mc.prepend("k", b"-", noreply=False)
    assert mc.get("k") == b"-v2+"
    value, cas = mc.gets("k")
    assert mc.cas("k", b"new", cas, noreply=False)
    assert mc.cas("k", b"newer", cas, noreply=False) is False
    assert mc.set("n", b"10", noreply=False)
    assert mc.incr("n", 5) == 15
    assert mc.decr("n", 20) == 0
    # memcached rewrites a shrinking number in place, padded with spaces
    assert mc.get_many(["k", "n", "missing"]) == {"k": b"new", "n": b"0 "}
    assert mc.touch("k", 100, noreply=False)
    assert mc.delete("k", noreply=False)
    assert mc.get("k") is None
    stats = mc.stats()
    assert stats[b"curr_items"] == 1
    assert stats[b"mac_mode"] == b"policy"
    assert mc.flush_all(noreply=False)
    assert mc.get("n") is None
    assert mc.version().startswith(b"1.6")


def test_unix_socket(daemon):
    raw = Raw(0, unix=daemon.socket_path)
    assert raw.call(b"set u 1 0 2\r\nhi\r\n") == b"STORED\r\n"
    assert raw.call(b"get u\r\n", b"END\r\n") == b"VALUE u 1 2\r\nhi\r\nEND\r\n"
    mode = stat.S_IMODE(os.stat(daemon.socket_path).st_mode)
    assert mode == 0o700


def test_survives_sigkill(daemon):
    raw = Raw(daemon.port)
    assert raw.call(b"set k 5 0 3\r\nabc\r\n") == b"STORED\r\n"
    daemon.restart(kill=True)
    raw = Raw(daemon.port)
    assert raw.call(b"get k\r\n", b"END\r\n") == b"VALUE k 5 3\r\nabc\r\nEND\r\n"


def test_expiry_holds_across_restart(daemon):
    raw = Raw(daemon.port)
    assert raw.call(b"set short 0 2 1\r\na\r\n") == b"STORED\r\n"
    assert raw.call(b"set long 0 100 1\r\nb\r\n") == b"STORED\r\n"
    assert raw.call(b"get short\r\n", b"END\r\n").startswith(b"VALUE short")
    daemon.restart(kill=True)
    time.sleep(3)
    raw = Raw(daemon.port)
    assert raw.call(b"get short\r\n", b"END\r\n") == b"END\r\n"
    assert raw.call(b"get long\r\n", b"END\r\n") == b"VALUE long 0 1\r\nb\r\nEND\r\n"


def test_expiry_without_restart(daemon):
    raw = Raw(daemon.port)
    assert raw.call(b"set k 0 2 1\r\na\r\n") == b"STORED\r\n"
    time.sleep(3)
    assert raw.call(b"get k\r\n", b"END\r\n") == b"END\r\n"
    assert raw.call(b"set neg 0 -1 1\r\na\r\n") == b"STORED\r\n"
    assert raw.call(b"get neg\r\n", b"END\r\n") == b"END\r\n"


def _cas(raw, key) -> int:
    reply = raw.call(b"gets %s\r\n" % key, b"END\r\n")
    return int(reply.split(b"\r\n")[0].split()[4])


def test_cas_never_repeats_across_restarts(daemon):
    seen = []
    for _ in range(3):
        raw = Raw(daemon.port)
        for i in range(3):
            raw.call(b"set k%d 0 0 1\r\nx\r\n" % i)
            seen.append(_cas(raw, b"k%d" % i))
        daemon.restart(kill=True)
    assert len(set(seen)) == len(seen) == 9
    assert seen == sorted(seen)


def test_data_directory_is_private(daemon):
    Raw(daemon.port).call(b"set k 0 0 1\r\nx\r\n")
    assert stat.S_IMODE(os.stat(daemon.data_dir).st_mode) == 0o700
    for name in os.listdir(daemon.data_dir):
        mode = stat.S_IMODE(os.stat(daemon.data_dir / name).st_mode)
        assert mode == 0o600, (name, oct(mode))


def test_sigterm_is_a_clean_exit(daemon):
    raw = Raw(daemon.port)
    raw.call(b"set k 0 0 1\r\nx\r\n")
    assert daemon.stop(signal.SIGTERM) == 0
    assert not os.path.exists(daemon.socket_path)
    daemon.start()
    assert Raw(daemon.port).call(b"get k\r\n", b"END\r\n").startswith(b"VALUE k")
    assert daemon.stop(signal.SIGINT) == 0


def test_pipelined_requests_answered_in_order(daemon):
    raw = Raw(daemon.port)
    requests = b"".join(b"set k%d 0 0 %d\r\n%d\r\nget k%d\r\n"
                        % (i, len(b"%d" % i), i, i) for i in range(200))
    raw.send(requests + b"version\r\n")
    reply = raw.read_through(b"VERSION ")
    expected = b"".join(b"STORED\r\nVALUE k%d 0 %d\r\n%d\r\nEND\r\n"
                        % (i, len(b"%d" % i), i) for i in range(200))
    assert reply.startswith(expected)


def test_client_that_does_not_read_is_paused_not_buffered(daemon):
    raw = Raw(daemon.port)
    raw.call(b"set big 0 0 500000\r\n" + b"x" * 500000 + b"\r\n")
    raw.sock.setsockopt(__import__("socket").SOL_SOCKET,
                        __import__("socket").SO_RCVBUF, 4096)
    for _ in range(40):                  # bounded: ~20 MB of replies asked for
        try:
            raw.sock.send(b"get big\r\n")
        except BlockingIOError:
            break
    other = Raw(daemon.port)             # the daemon still serves others
    assert other.call(b"version\r\n").startswith(b"VERSION ")


def test_verbosity_version_quit(daemon):
    raw = Raw(daemon.port)
    assert raw.call(b"verbosity 1\r\n") == b"OK\r\n"
    assert raw.call(b"version\r\n").startswith(b"VERSION 1.6.18")
    raw.send(b"quit\r\n")
    assert raw.read_all() == b"<closed>"


def test_udp_is_refused(tmp_path):
    d = Daemon(tmp_path, "-U", "11211")
    d.process = None
    import subprocess
    result = subprocess.run(d.command(), capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2
    assert "UDP is not served" in result.stderr


def test_connection_limit(tmp_path):
    d = Daemon(tmp_path, "-c", "2").start()
    try:
        first, second = Raw(d.port), Raw(d.port)
        assert first.call(b"version\r\n").startswith(b"VERSION")
        assert second.call(b"version\r\n").startswith(b"VERSION")
        third = Raw(d.port)
        assert third.read_all(quiet=1.0) == \
            b"ERROR Too many open connections\r\n<closed>"
        first.close()
        time.sleep(0.2)
        fourth = Raw(d.port)
        assert fourth.call(b"version\r\n").startswith(b"VERSION")
        stats = fourth.call(b"stats\r\n", b"END\r\n")
        assert b"STAT rejected_connections 1\r\n" in stats
    finally:
        d.kill()


def test_long_pipeline_is_parsed_in_bounded_steps(daemon):
    """More requests in flight than one connection queues at once (4096):
    all are answered, in order."""
    raw = Raw(daemon.port)
    raw.call(b"set k 0 0 1\r\nx\r\n")
    raw.send(b"get k\r\n" * 10000 + b"version\r\n")
    reply = raw.read_through(b"VERSION ", timeout=60)
    assert reply.count(b"VALUE k 0 1\r\nx\r\nEND\r\n") == 10000
    assert reply.endswith(b"\r\n") and reply.rindex(b"END") < reply.index(b"VERSION")


@pytest.mark.parametrize("durability", ["fsync", "async"])
def test_full_cache_evicts_and_keeps_serving(tmp_path, durability):
    d = Daemon(tmp_path, "-m", "1", "-I", "512k",
               "--durability", durability).start()
    try:
        mc = client(d)
        value = b"x" * 30000
        for i in range(200):                      # 6 MB into a 1 MB cache
            assert mc.set(f"k{i}", value, noreply=False)
        stats = mc.stats()
        assert stats[b"evictions"] > 100
        assert stats[b"bytes"] <= stats[b"limit_maxbytes"] == 1 << 20
        assert mc.get("k199") == value and mc.get("k0") is None
        assert d.process.poll() is None
    finally:
        d.kill()


def test_full_cache_without_evictions_refuses_new_data(tmp_path):
    d = Daemon(tmp_path, "-m", "1", "-I", "512k", "-M").start()
    try:
        raw = Raw(d.port)
        value = b"x" * 30000
        replies = [raw.call(b"set k%d 0 0 %d\r\n%s\r\n" % (i, len(value), value))
                   for i in range(60)]
        assert replies[0] == b"STORED\r\n"
        assert replies[-1] == b"SERVER_ERROR out of memory storing object\r\n"
        assert raw.call(b"delete k0\r\n") == b"DELETED\r\n"
        assert raw.call(b"get k1\r\n", b"END\r\n").startswith(b"VALUE k1")
    finally:
        d.kill()


def test_idle_connections_are_closed(tmp_path):
    d = Daemon(tmp_path, "--idle-timeout", "1").start()
    try:
        idle, busy = Raw(d.port), Raw(d.port)
        assert idle.call(b"version\r\n").startswith(b"VERSION")
        for _ in range(6):                       # bounded: ~3 s
            assert busy.call(b"version\r\n").startswith(b"VERSION")
            time.sleep(0.5)
        assert idle.read_all(quiet=1.0) == b"<closed>"
    finally:
        d.kill()


def test_vv_logs_each_request_without_values(tmp_path):
    d = Daemon(tmp_path, "-vv").start()
    try:
        raw = Raw(d.port)
        assert raw.call(b"set secretkey 0 0 6\r\nhunter\r\n") == b"STORED\r\n"
        raw.call(b"get secretkey\r\n", b"END\r\n")
        time.sleep(0.2)
        log = d.log()
        assert "Store secretkey" in log and "Get secretkey" in log
        assert "b'STORED'" in log and "b'VALUE secretkey 0 6'" in log  # replies
        assert "hunter" not in log
    finally:
        d.kill()
