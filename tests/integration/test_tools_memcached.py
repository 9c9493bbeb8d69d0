"""Issue 10, acceptance item 2: memcached's own operator tools and clients
against a real daemon: libmemcached's ``memcdump`` and ``memcaslap``
(text protocol, whose generated keys hold control bytes), Debian's
``memcached-tool ... display`` and ``sizes``, pymemcache's
``stats("cachedump", ...)`` and ``cache_memlimit``; and ``stats
cachedump`` filtered by the policy (kv_item:getattr) per client domain.
Every run is bounded (a fixed number of operations, a timeout).
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from pymemcache.client.base import Client

from .proto_support import MEMCACHED_TOOL, Conn, start_daemon
from .test_protocols_metadump import (ADMIN, APP, LOCAL, READONLY,  # noqa
                                      VISIBLE, world)

MEMCDUMP = shutil.which("memcdump") or "/usr/bin/memcdump"
MEMCASLAP = shutil.which("memcaslap") or "/usr/bin/memcaslap"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = start_daemon(tmp_path_factory.mktemp("tools"), "--durability",
                     "async")
    yield d
    d.kill()


def client(daemon) -> Client:
    return Client(("127.0.0.1", daemon.port), connect_timeout=5, timeout=5)


def run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True,
                          timeout=60)


def test_memcdump_lists_the_keys(daemon):
    mc = client(daemon)
    for key in ("dump:a", "dump:b"):
        mc.set(key, b"v", noreply=False)
    out = run(MEMCDUMP, f"--servers=127.0.0.1:{daemon.port}")
    assert out.returncode == 0, out.stderr
    assert {"dump:a", "dump:b"} <= set(out.stdout.split())


def test_memcaslap_text_sets_and_gets_all_succeed(daemon):
    before = client(daemon).stats()
    out = run(MEMCASLAP, "-s", f"127.0.0.1:{daemon.port}", "-x", "300",
              "-T", "1", "-c", "2")
    assert out.returncode == 0, out.stdout + out.stderr
    assert re.search(r"get_misses: 0\b", out.stdout), out.stdout
    sets = int(re.search(r"cmd_set: (\d+)", out.stdout).group(1))
    after = client(daemon).stats()
    assert sets > 0
    assert after[b"cmd_set"] - before[b"cmd_set"] == sets
    assert after[b"curr_items"] > before[b"curr_items"]


def test_memcached_tool_display_and_sizes(daemon):
    client(daemon).set("tool", b"x" * 100, noreply=False)
    display = run("perl", MEMCACHED_TOOL, f"127.0.0.1:{daemon.port}",
                  "display")
    assert display.returncode == 0, display.stderr
    header, *rows = display.stdout.strip().splitlines()
    assert header.split()[:3] == ["#", "Item_Size", "Max_age"]
    assert rows and rows[0].split()[0] == "1"
    sizes = run("perl", MEMCACHED_TOOL, f"127.0.0.1:{daemon.port}", "sizes")
    assert sizes.returncode == 0, sizes.stderr
    assert "sizes_status" in sizes.stdout and "disabled" in sizes.stdout


def test_pymemcache_cachedump_and_cache_memlimit(daemon):
    mc = client(daemon)
    mc.set("pym", b"12345", expire=0, noreply=False)
    dump = mc.stats("cachedump", "1", "1")
    assert len(dump) == 1
    (key, value), = dump.items()
    assert re.fullmatch(rb"\[\d+ b; \d+ s\]", value), value
    assert mc.cache_memlimit(50) is True
    assert mc.stats()[b"limit_maxbytes"] == 50 << 20
    assert mc.cache_memlimit(64) is True


@pytest.mark.parametrize("who", [ADMIN, LOCAL, APP, READONLY],
                         ids=["admin", "local", "app", "readonly"])
def test_cachedump_lists_only_what_the_client_may_getattr(world, who):
    with Conn(world.port, source=who) as conn:
        conn.send(b"stats cachedump 1 0\r\n")
        text = conn.through(b"END\r\n")
    keys = {line[5:line.rindex(b" [")] for line in text.split(b"\r\n")
            if line.startswith(b"ITEM ")}
    assert keys == VISIBLE[who]
