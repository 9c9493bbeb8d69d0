"""Issue 10: memcached's flags for ``securecache serve`` on real daemons
(-l ADDR:PORT, -P, -B, -C, -D, -o, -b, -R, -L; -vv is in test_daemon) and the refused ones,
whose refusal says why. -C is compared with memcached -C byte for byte."""

from __future__ import annotations

import subprocess
import time

import pytest

from .daemons import SECURECACHE, Daemon, as_root, free_port
from .proto_support import Conn, bin_request, bin_responses, start_daemon
from .test_fidelity import started_with


def serve(tmp_path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(SECURECACHE), "serve", *as_root(flags),
                           "--data-dir", str(tmp_path / "d"), *flags],
                          capture_output=True, text=True, timeout=30)


def settings(port: int) -> dict[bytes, bytes]:
    with Conn(port) as conn:
        conn.send(b"stats settings\r\n")
        text = conn.through(b"END\r\n")
    return {line.split(b" ")[1]: line.split(b" ", 2)[2]
            for line in text.split(b"\r\n") if line.startswith(b"STAT ")}


def test_listen_addr_port_pidfile_backlog_reqs(tmp_path):
    port = free_port()
    pidfile = tmp_path / "sc.pid"
    d = Daemon(tmp_path, "-l", f"127.0.0.1:{port}", "-P", str(pidfile),
               "-b", "64", "-R", "5", "-L", port=port)
    d.command = lambda: [str(SECURECACHE), "serve", *as_root(), "--data-dir",
                         str(d.data_dir), *d.extra]
    d.start()
    try:
        assert pidfile.read_text().strip() == str(d.process.pid)
        rows = settings(port)
        assert rows[b"tcp_backlog"] == b"64"
        assert rows[b"reqs_per_event"] == b"5"
        assert "-L: the LMDB map is paged by the kernel" in d.log()
    finally:
        assert d.stop() == 0
    assert not pidfile.exists()


def test_protocol_binary_and_ascii(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "a").mkdir()
    binary = start_daemon(tmp_path / "b", "-B", "binary")
    ascii_ = start_daemon(tmp_path / "a", "-B", "ascii")
    try:
        with Conn(binary.port) as conn:
            assert conn.text_step(b"version\r\n", timeout=1).endswith(
                b"<timeout>")                   # waits for a 24-byte header
        with Conn(ascii_.port) as conn:
            assert conn.text_step(b"version\r\n") == b"VERSION 1.6.18\r\n"
            conn.send(bin_request(0x0B, opaque=1))
            assert bin_responses(conn.until(lambda d: False, 0.5))[0] == []
    finally:
        binary.kill()
        ascii_.kill()


def test_disable_cas_as_memcached(tmp_path):
    data = (b"set k 0 0 1\r\nx\r\ngets k\r\ncas k 0 0 1 0\r\ny\r\n"
            b"mg k c v\r\ncas nokey 0 0 1 0\r\nz\r\n")
    with started_with(tmp_path, "-C") as servers:
        replies = []
        for server in servers:
            with Conn(server.port) as conn:
                conn.send(data)
                replies.append(conn.through(b"NOT_FOUND\r\n"))
        assert replies[0] == replies[1]
        assert settings(servers[0].port)[b"cas_enabled"] == b"no"


def test_crawler_options_as_memcached(tmp_path):
    flags = ("-o", "no_lru_crawler,lru_crawler_sleep=7,lru_crawler_tocrawl=3")
    with started_with(tmp_path, *flags) as servers:
        rows = [{name: value for name, value in settings(server.port).items()
                 if name.startswith(b"lru_crawler")} for server in servers]
        assert rows[0] == rows[1] == {b"lru_crawler": b"no",
                                      b"lru_crawler_sleep": b"7",
                                      b"lru_crawler_tocrawl": b"3"}
        for step in (b"lru_crawler crawl all\r\n", b"lru_crawler enable\r\n",
                     b"lru_crawler enable\r\n"):
            replies = []
            for server in servers:
                with Conn(server.port) as conn:
                    replies.append(conn.line(step))
            assert replies[0] == replies[1], step


def test_disable_flush_all_and_dumping_as_memcached(tmp_path):
    steps = [b"flush_all\r\n", b"flush_all 10\r\n",
             b"flush_all noreply\r\nversion\r\n", b"stats cachedump 1 1\r\n",
             b"lru_crawler metadump all\r\n", b"lru_crawler metadump hash\r\n",
             b"lru_crawler crawl 1\r\n"]
    with started_with(tmp_path, "-F", "-X") as servers:
        shown = [{name: settings(server.port)[name] for name in (
            b"flush_enabled", b"dump_enabled")} for server in servers]
        assert shown[0] == shown[1] == {b"flush_enabled": b"no",
                                        b"dump_enabled": b"no"}
        for step in steps:
            replies = []
            for server in servers:
                with Conn(server.port) as conn:
                    replies.append(conn.line(step))
            assert replies[0] == replies[1], step
        flush = bin_request(0x08, opaque=5)
        replies = []
        for server in servers:
            with Conn(server.port) as conn:
                replies.append(conn.binary(flush, sentinel=5)[0])
        assert replies[0] == replies[1]
        assert replies[0][0].status == 0x20


def test_delimiter_turns_detail_on_and_idle_timeout(tmp_path):
    d = start_daemon(tmp_path, "-D", "/", "-o", "idle_timeout=1,modern")
    try:
        with Conn(d.port) as conn:
            conn.line(b"set user/1 0 0 1\r\nx\r\n")
            conn.send(b"stats detail dump\r\n")
            assert conn.through(b"END\r\n") == (
                b"PREFIX user get 0 hit 0 set 1 del 0\r\nEND\r\n")
            time.sleep(2.5)
            assert conn.until(lambda data: False, timeout=1) == b""
            assert conn.closed                  # idle: closed by the daemon
    finally:
        d.kill()


@pytest.mark.parametrize("flags, reason", [
    (["-d"], "runs in the foreground"),
    (["-k"], "does not apply"),
    (["-f"], "no slab allocator"),
    (["-e"], "always persistent"),
    (["-o", "ext_path=/tmp/x:1G"], "no extstore"),
    (["-o", "hashpower=20"], "no hash table"),
    (["-o", "lru_crawler_sleep=1000001"], "-o lru_crawler_sleep is 0 to 1000000"),
    (["-o", "lru_maintainer"], "no LRU segments to tune"),
    (["-o", "idle_timeout=x"], "needs a number"),
    (["-l", "127.0.0.1:1,127.0.0.2:2"], "one TCP port"),
])
def test_refused_flags_say_why(tmp_path, flags, reason):
    out = serve(tmp_path, "-p", "0", *flags)
    assert out.returncode != 0
    assert reason in out.stderr, out.stderr


def test_help_shows_every_default(tmp_path):
    out = subprocess.run([str(SECURECACHE), "serve", "--help"],
                         capture_output=True, text=True, timeout=30)
    assert "relative to the current directory" in out.stdout
    options = out.stdout.split("\noptions:", 1)[1]
    for option in ("--port", "--memory-limit", "--max-item-size",
                   "--protocol", "--listen-backlog", "--data-dir"):
        block = options.split(option, 1)[1].split("\n  -", 1)[0]
        assert "default:" in block, option
