"""Issue 4, item 5: ``lru_crawler metadump all|PREFIX`` lists exactly the
keys the connection may see (kv_item:getattr), in key order, in memcached's
line format; a parser written the way memcached-tool's ``dump`` reads it,
and so does memcached-tool itself (Debian's script, when installed).

Four client domains by source address (peer_contexts ``net`` lines):
127.0.0.1 securecache_admin_t (creates shared ``securecache_item_t``
items, sees everything), 127.0.0.2 securecache_local_t, 127.0.0.3
securecache_app_t (each sees the shared items and its own, never the
other's), 127.0.0.4 securecache_readonly_t (sees every item type); any uid on the
UNIX socket is securecache_local_t.
"""

from __future__ import annotations

import re
import subprocess
import time

import pytest

from .proto_support import (MEMCACHED_TOOL, METADUMP_LINE, Conn,
                            RealMemcached, context, metadump, parse_metadump,
                            start_daemon, write_peer_contexts)

ADMIN, LOCAL, APP, READONLY = "127.0.0.1", "127.0.0.2", "127.0.0.3", \
    "127.0.0.4"
DOMAINS = {ADMIN: context("securecache_admin_t", "s0-s0:c0.c1023"),
           LOCAL: context("securecache_local_t"),
           APP: context("securecache_app_t"),
           READONLY: context("securecache_readonly_t")}

# key -> (creator, exptime); keys chosen to need URL encoding and to sort
# differently from the order they are written in
ITEMS = {
    b"shared:two": (ADMIN, 0),
    b"shared:one%": (ADMIN, 0),
    b"local:b": (LOCAL, 0),
    b"local:a": (LOCAL, 1000),
    b"local:caf\xc3\xa9": (LOCAL, 0),
    b"Z/local": (LOCAL, 0),
    b"app:2": (APP, 0),
    b"app:1": (APP, 500),
    b"a~app_1.x-y": (APP, 0),
    b"~app": (APP, 0),
}
VISIBLE = {
    ADMIN: set(ITEMS),
    READONLY: set(ITEMS),
    LOCAL: {k for k, (who, _) in ITEMS.items() if who in (ADMIN, LOCAL)},
    APP: {k for k, (who, _) in ITEMS.items() if who in (ADMIN, APP)},
}


def store(conn: Conn, key: bytes, exptime: int, value: bytes = b"v") -> None:
    reply = conn.line(b"set %s 7 %d %d\r\n%s\r\n"
                      % (key, exptime, len(value), value))
    assert reply == b"STORED\r\n", (key, reply)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("metadump")
    peers = write_peer_contexts(tmp / "peer_contexts", [
        ("net", f"{address}/32", ctx) for address, ctx in DOMAINS.items()]
        + [("uid", "*", DOMAINS[LOCAL])])
    daemon = start_daemon(tmp, "--peer-contexts", str(peers),
                          "--durability", "async",
                          "-l", ",".join(DOMAINS))
    for key, (creator, exptime) in ITEMS.items():
        with Conn(daemon.port, source=creator) as conn:
            store(conn, key, exptime)
    with Conn(daemon.port, source=LOCAL) as conn:        # fetch local:b
        conn.send(b"get local:b\r\n")
        assert conn.through(b"END\r\n").startswith(b"VALUE local:b ")
    yield daemon
    daemon.kill()


def dump(port: int, source: str, argument: bytes = b"all") -> bytes:
    with Conn(port, source=source) as conn:
        return metadump(conn, argument)


def check_format(text: bytes) -> list[bytes]:
    """memcached's shape: ``key=.. exp=.. la=.. cas=.. fetch=.. cls=..
    size=..`` lines ending in a bare LF, then ``END`` CRLF."""
    assert text.endswith(b"END\r\n"), text
    body = text[:-len(b"END\r\n")]
    assert b"\r" not in body, text
    lines = body.split(b"\n")
    assert lines[-1] == b""
    for line in lines[:-1]:
        assert METADUMP_LINE.match(line), line
    return lines[:-1]


@pytest.mark.parametrize("who", [ADMIN, LOCAL, APP, READONLY],
                         ids=["admin", "local", "app", "readonly"])
def test_metadump_lists_exactly_the_visible_keys_in_order(world, who):
    rows = parse_metadump(dump(world.port, who))
    keys = [row["key"] for row in rows]
    assert keys == sorted(VISIBLE[who])
    check_format(dump(world.port, who))


def test_metadump_fields(world):
    now = time.time()
    rows = {row["key"]: row for row in parse_metadump(dump(world.port, ADMIN))}
    for key, (creator, exptime) in ITEMS.items():
        row = rows[key]
        if exptime:
            assert abs(row["exptime"] - (now + exptime)) <= 3, row
        else:
            assert row["exp"] == "-1" and row["exptime"] == 0
        assert abs(int(row["la"]) - now) <= 30, row
        assert int(row["cas"]) > 0
        assert row["size"] == "1"
        assert row["fetch"] == ("yes" if key == b"local:b" else "no"), row
    assert len({row["cas"] for row in rows.values()}) == len(rows)


@pytest.mark.parametrize("who,prefix,expected", [
    (LOCAL, b"local:", [b"local:a", b"local:b", b"local:caf\xc3\xa9"]),
    (APP, b"local:", []),
    (APP, b"app:", [b"app:1", b"app:2"]),
    (LOCAL, b"shared:", [b"shared:one%", b"shared:two"]),
    (ADMIN, b"a", [b"app:1", b"app:2", b"a~app_1.x-y"]),
    (READONLY, b"nothing", []),
])
def test_metadump_prefix(world, who, prefix, expected):
    text = dump(world.port, who, prefix)
    check_format(text)
    assert [row["key"] for row in parse_metadump(text)] == expected


def test_metadump_sees_later_writes_per_domain(world):
    """A key another domain writes after the first dump appears only in
    that domain's (and the admin's) next dump."""
    with Conn(world.port, source=APP) as conn:
        store(conn, b"app:late", 0)
    try:
        assert b"app:late" in [r["key"] for r in
                               parse_metadump(dump(world.port, APP))]
        assert b"app:late" in [r["key"] for r in
                               parse_metadump(dump(world.port, ADMIN))]
        assert b"app:late" not in [r["key"] for r in
                                   parse_metadump(dump(world.port, LOCAL))]
    finally:
        with Conn(world.port, source=APP) as conn:
            assert conn.line(b"delete app:late\r\n") == b"DELETED\r\n"


@pytest.fixture(scope="module")
def memcached():
    m = RealMemcached()
    yield m
    m.stop()


def test_line_shape_matches_memcached(world, memcached):
    """The same keys stored in memcached 1.6.18: every line has the same
    fields in the same order, the same URL encoding of each key, and exp
    means the same (-1, or the same absolute time)."""
    with Conn(memcached.port) as conn:
        for key, (creator, exptime) in ITEMS.items():
            store(conn, key, exptime)
        conn.send(b"get local:b\r\n")
        conn.through(b"END\r\n")
        theirs = b""
        deadline = time.monotonic() + 10
        # memcached's crawler may be busy right after the stores
        while time.monotonic() < deadline:
            theirs = metadump(conn)
            if theirs.endswith(b"END\r\n"):
                break
            time.sleep(0.1)
    ours = dump(world.port, ADMIN)
    our_lines, their_lines = check_format(ours), check_format(theirs)
    assert len(their_lines) == len(our_lines) == len(ITEMS)

    def fields(line):
        return [part.split(b"=", 1)[0] for part in line.split(b" ")]

    def encoded(lines):
        return sorted(line.split(b" ", 1)[0] for line in lines)

    assert {tuple(fields(line)) for line in our_lines} == \
        {tuple(fields(line)) for line in their_lines}
    assert encoded(our_lines) == encoded(their_lines)
    ours_by_key = {r["key"]: r for r in parse_metadump(ours)}
    for row in parse_metadump(theirs):
        mine = ours_by_key[row["key"]]
        assert (mine["exp"] == "-1") == (row["exp"] == "-1")
        assert abs(mine["exptime"] - row["exptime"]) <= 3
        assert mine["fetch"] == row["fetch"]


@pytest.mark.parametrize("request_", [b"lru_crawler metadump\r\n",
                                      b"lru_crawler metadump all extra\r\n",
                                      b"lru_crawler\r\n"],
                         ids=["no argument", "extra token", "no subcommand"])
def test_malformed_metadump_answers_as_memcached(world, memcached, request_):
    replies = []
    for port in (memcached.port, world.port):
        with Conn(port) as conn:
            replies.append(conn.text_step(request_))
    assert replies[1] == replies[0]


@pytest.mark.parametrize("who", ["tcp", "unix"])
def test_memcached_tool_dump(world, who):
    """Debian's memcached-tool ``dump`` (metadump, then a get of each key)
    prints an ``add`` for each key its connection may see. It cannot pick
    a source address: over TCP it comes from 127.0.0.1 (admin: every key);
    over the UNIX socket its uid maps to securecache_local_t."""
    server = f"127.0.0.1:{world.port}" if who == "tcp" else world.socket_path
    visible = VISIBLE[ADMIN if who == "tcp" else LOCAL]
    result = subprocess.run(["perl", MEMCACHED_TOOL, server, "dump"],
                            capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    adds = re.findall(rb"^add (\S+) (\d+) (-?\d+) (\d+)\r\n(.*?)\r\n",
                      result.stdout, re.M | re.S)
    assert sorted(a[0] for a in adds) == sorted(visible)
    for key, flags, exptime, length, value in adds:
        assert (flags, length, value) == (b"7", b"1", b"v")
        assert (exptime == b"0") == (ITEMS[key][1] == 0)
