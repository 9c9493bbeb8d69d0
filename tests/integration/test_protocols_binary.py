"""Issue 4, item 6 (and a binary cas check): malformed binary headers against
a real daemon, compared with the real memcached 1.6.18 for the same bytes.

A bad magic after a valid first packet, a body length over the limit, and
a key (or extras) length beyond the body close the connection as memcached
closes it, and never touch the store: a second connection finds the victim
item unchanged, the key smuggled in the bad packet's bytes absent, and
``stats`` shows no new item (curr_items, total_items).

Every exchange starts with a valid NOOP (so the codec is binary) and ends
with a NOOP sentinel: a server that keeps the connection answers it, one
that closes does not. Where memcached waits for the announced key and
extras before it judges a header, the payload carries that many bytes.
"""

from __future__ import annotations

import struct

import pytest

from .proto_support import (OP, Conn, bin_noop, bin_request, bin_set,
                            daemon_and_memcached, stats)

LIMIT = 1 << 20                        # -I, the same on both servers
SENTINEL = 0x5E17
SMUGGLED = bin_set(b"intruder", b"PWNED", opaque=0x66)
VICTIM = bin_set(b"victim", b"PWNED", opaque=0x67)
SET_EXTRAS = struct.pack(">II", 0, 0)


def header(opcode: int, keylen: int, extlen: int, bodylen: int,
           magic: int = 0x80, opaque: int = 0x42) -> bytes:
    return struct.pack(">BBHBBHIIQ", magic, opcode, keylen, extlen, 0, 0,
                       bodylen, opaque, 0)


CASES = {
    "bad magic 0x81 after a valid packet":
        bin_noop(1) + header(OP["set"], 6, 8, 8 + 6 + 5, magic=0x81)
        + SET_EXTRAS + b"victimPWNED" + SMUGGLED,
    "bad magic 0x00 after a valid packet":
        bin_noop(1) + header(OP["set"], 6, 8, 8 + 6 + 5, magic=0x00)
        + SET_EXTRAS + b"victimPWNED" + SMUGGLED,
    "bad magic 0x80-like text after a valid packet":
        bin_noop(1) + b"set victim 0 0 5\r\nPWNED\r\n" + SMUGGLED,
    "bad magic then valid packets":
        bin_noop(1) + b"\x00" * 24 + VICTIM + SMUGGLED,
    "body length over the limit: GET":
        bin_noop(1) + header(OP["get"], 6, 0, 0xFFFFFFFF) + b"victim"
        + SMUGGLED,
    "body length over the limit: DELETE":
        bin_noop(1) + header(OP["delete"], 6, 0, 2 * LIMIT) + b"victim"
        + SMUGGLED,
    "body length over the limit: INCR":
        bin_noop(1) + header(OP["incr"], 6, 20, LIMIT + 100)
        + struct.pack(">QQI", 1, 0, 0) + b"victim" + SMUGGLED,
    "key length beyond the body: SET":
        bin_noop(1) + header(OP["set"], 100, 8, 10) + SET_EXTRAS + b"vi"
        + SMUGGLED + VICTIM + b"z" * 100,
    "key length beyond the body: GET":
        bin_noop(1) + header(OP["get"], 20, 0, 10) + b"victimvict"
        + SMUGGLED + b"z" * 20,
    "key length beyond the body: DELETE":
        bin_noop(1) + header(OP["delete"], 7, 0, 6) + b"victim"
        + VICTIM + b"z" * 10,
    "extras length beyond the body":
        bin_noop(1) + header(OP["set"], 0, 30, 10) + b"x" * 10 + SMUGGLED
        + b"z" * 30,
    "key longer than 250 bytes":
        bin_noop(1) + header(OP["get"], 300, 0, 300) + b"k" * 300 + SMUGGLED,
}


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    yield from daemon_and_memcached(tmp_path_factory.mktemp("binary"),
                                    "--durability", "async")


def prepare(port: int) -> dict[str, str]:
    with Conn(port) as conn:
        assert conn.line(b"set victim 3 0 4\r\norig\r\n") == b"STORED\r\n"
        conn.line(b"delete intruder\r\n")
    return stats(port)


def exchange(port: int, payload: bytes):
    with Conn(port) as conn:
        responses, rest, closed = conn.binary(payload + bin_noop(SENTINEL),
                                              sentinel=SENTINEL, timeout=5)
    return [(r.opcode, r.status, r.opaque, r.value) for r in responses], \
        rest, closed


def store_state(port: int) -> tuple[bytes, bytes]:
    with Conn(port) as conn:
        conn.send(b"get victim intruder\r\n")
        return conn.through(b"END\r\n"), conn.line(b"mn\r\n")


def counts(rows: dict[str, str]) -> tuple[str, str]:
    return rows["curr_items"], rows["total_items"]


@pytest.mark.parametrize("name", list(CASES))
def test_malformed_header_closes_like_memcached(pair, name):
    ours, theirs = pair
    payload = CASES[name]
    before = prepare(theirs.port)
    expected = exchange(theirs.port, payload)
    assert expected[2], "memcached keeps the connection: not a close case"
    assert counts(stats(theirs.port)) == counts(before)

    before = prepare(ours.port)
    got = exchange(ours.port, payload)
    assert got == expected
    # the store is untouched: the victim keeps its value, nothing smuggled
    # in the packet's bytes was stored, no item was added
    assert store_state(ours.port) == \
        (b"VALUE victim 3 4\r\norig\r\nEND\r\n", b"MN\r\n")
    assert counts(stats(ours.port)) == counts(before)


def test_value_over_the_limit_is_refused_and_skipped_like_memcached(pair):
    """A SET whose value is over -I: E2BIG, the body (here carrying a valid
    SET) is skipped, the connection stays (memcached does the same). Both
    unlink the old item (issue 10, bug 3)."""
    ours, theirs = pair
    value = SMUGGLED + b"x" * (LIMIT + 1 - len(SMUGGLED))
    payload = bin_noop(1) + bin_set(b"victim", value, opaque=0x42)
    results, victims = [], []
    for server in (theirs, ours):
        prepare(server.port)
        results.append(exchange(server.port, payload))
        victims.append(store_state(server.port)[0])
    expected, got = results
    assert expected == ([(OP["noop"], 0, 1, b""),
                         (OP["set"], 0x03, 0x42, b"Too large."),
                         (OP["noop"], 0, SENTINEL, b"")], b"", False)
    assert got == expected
    assert victims == [b"END\r\n", b"END\r\n"]     # unlinked by both


# --------------------------------------------------- cas on append/prepend
def cas_steps(port: int) -> list[tuple[int, int]]:
    """SET, then APPEND/PREPEND with a wrong and the right cas; GET."""
    out = []
    with Conn(port) as conn:
        responses, _, _ = conn.binary(bin_set(b"cc", b"a", opaque=1),
                                      sentinel=1)
        cas = responses[0].cas
        for opaque, (opcode, value, with_cas) in enumerate([
                (OP["append"], b"b", cas + 1000),
                (0x0F, b"p", cas + 1000),          # PREPEND
                (OP["append"], b"c", cas)], start=2):
            responses, _, _ = conn.binary(
                bin_request(opcode, b"cc", value=value, opaque=opaque,
                            cas=with_cas), sentinel=opaque)
            out.append((responses[0].opcode, responses[0].status))
        responses, _, _ = conn.binary(bin_request(OP["get"], b"cc", opaque=9),
                                      sentinel=9)
        out.append((responses[0].status, responses[0].value))
    return out


def test_append_prepend_respect_cas_like_memcached(pair):
    ours, theirs = pair
    expected = cas_steps(theirs.port)
    assert expected == [(OP["append"], 0x02), (0x0F, 0x02),
                        (OP["append"], 0x00), (0, b"ac")]
    assert cas_steps(ours.port) == expected
