"""Fuzzing a live daemon, the regression corpus against it, and a soak.

Property: no input on any connection stops the daemon, changes an item the
input did not name (a canary), or keeps another client from being served;
the directory opens again after a restart.  The default suite replays the
corpus (tests/fuzz_corpus) and sends a few seconds of fuzzed input; the
`soak` test (deselected by default: `tools/test -m soak`) sends over
1,000,000 requests and checks that the daemon's memory levels off.
"""

from __future__ import annotations

import random
import socket
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ..fuzz.inputs import (BINARY_SEEDS, EDIT_KINDS, TEXT_SEEDS, binary_request,
                           corpus_files, mutate)
from .daemons import Daemon, Raw

CANARY = b"canary-value-42"


ADMIN = "system_u:system_r:securecache_admin_t:s0-s0:c0.c1023"
LOCAL = "system_u:system_r:securecache_local_t:s0"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    """The fuzzing clients (127.0.0.1) are local_t, which may read the
    canary but not write or remove it (an admin, 127.0.0.2, made it): a
    fuzzed flush_all or delete must leave it alone."""
    tmp = tmp_path_factory.mktemp("fuzzed")
    peer_contexts = tmp / "peer_contexts"
    peer_contexts.write_text(f"net 127.0.0.2/32 {ADMIN}\nnet 127.0.0.0/8 {LOCAL}\n")
    daemon = Daemon(tmp, "--peer-contexts", str(peer_contexts), "--audit-log",
                    str(tmp / "audit.log"), "--durability", "async").start()
    admin = Raw(daemon.port, source="127.0.0.2")
    assert admin.call(b"set canary 7 0 %d\r\n%s\r\n" % (len(CANARY), CANARY)) == b"STORED\r\n"
    assert admin.call(b"getlabel canary\r\n") == \
        b"LABEL system_u:object_r:securecache_item_t:s0\r\n"
    admin.close()
    yield daemon
    daemon.kill()


def assert_serves(daemon: Daemon) -> None:
    """Alive, the canary unchanged, and another client's set answered."""
    assert daemon.process.poll() is None, daemon.log()[-3000:]
    other = Raw(daemon.port)
    try:
        assert other.call(b"get canary\r\n", b"END\r\n") == \
            b"VALUE canary 7 %d\r\n%s\r\nEND\r\n" % (len(CANARY), CANARY)
        assert other.call(b"set probe 0 0 2\r\nok\r\n") == b"STORED\r\n"
    finally:
        other.close()


def send_and_drain(port: int, data: bytes, quiet: float) -> bytes:
    client = Raw(port)
    try:
        client.send(data)
        return client.read_all(quiet)
    except (BrokenPipeError, ConnectionResetError):
        return b"<closed>"
    finally:
        client.close()


def test_the_corpus_replays_against_a_live_daemon(daemon):
    for path in corpus_files():
        send_and_drain(daemon.port, path.read_bytes(), 0.2)
        assert_serves(daemon)
    daemon.restart(kill=False)
    assert_serves(daemon)


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(binary=st.booleans(), picks=st.lists(st.integers(0, 100), min_size=1, max_size=5),
       edits=st.lists(st.tuples(st.integers(0, EDIT_KINDS - 1), st.integers(0, 4096),
                                st.integers(0, 4096)), max_size=6),
       split=st.booleans())
def test_fuzzed_input_never_stops_the_daemon(daemon, binary, picks, edits, split):
    pool = BINARY_SEEDS if binary else TEXT_SEEDS
    data = mutate(b"".join(pool[p % len(pool)] for p in picks), edits, pool)
    if split:                                   # the same bytes a few at a time
        client = Raw(daemon.port)
        try:
            for i in range(0, len(data), 7):
                client.send(data[i:i + 7])
            client.read_all(0.02)
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            client.close()
    else:
        send_and_drain(daemon.port, data, 0.02)
    assert_serves(daemon)


# ------------------------------------------------------------------ soak
def _text_batch(rng: random.Random, count: int) -> bytes:
    parts = []
    for _ in range(count):
        key = b"s%d" % rng.randrange(2000)
        kind = rng.randrange(8)
        if kind == 0:
            value = b"v" * rng.randrange(0, 200)
            parts.append(b"set %s 0 0 %d noreply\r\n%s\r\n" % (key, len(value), value))
        elif kind == 1:
            parts.append(b"get %s\r\n" % key)
        elif kind == 2:
            parts.append(b"mg %s v c t\r\n" % key)
        elif kind == 3:
            parts.append(b"ms %s 3 T600\r\nabc\r\n" % key)
        elif kind == 4:
            parts.append(b"ma n%d N0 J1\r\n" % rng.randrange(50))
        elif kind == 5:
            parts.append(b"delete %s noreply\r\n" % key)
        elif kind == 6:
            parts.append(b"touch %s 100 noreply\r\n" % key)
        else:
            parts.append(b"ms %s 1 E%d\r\nx\r\n" % (key, rng.choice((1, 2**63 - 1, 2**64 - 1))))
    return b"".join(parts) + b"mn\r\n"


def _binary_batch(rng: random.Random, count: int) -> bytes:
    parts = []
    for _ in range(count):
        key = b"b%d" % rng.randrange(2000)
        if rng.random() < 0.5:
            parts.append(binary_request(0x11, key, struct.pack(">II", 0, 0), b"x" * rng.randrange(100)))
        else:
            parts.append(binary_request(0x0D, key))
    return b"".join(parts) + binary_request(0x0A, opaque=0xFEEDFACE)


def _read_binary_until_noop(sock: socket.socket) -> None:
    data = b""
    while True:
        while len(data) < 24:
            data += sock.recv(1 << 16)
        body = struct.unpack_from(">I", data, 8)[0]
        while len(data) < 24 + body:
            data += sock.recv(1 << 16)
        opcode, opaque = data[1], struct.unpack_from(">I", data, 12)[0]
        data = data[24 + body:]
        if opcode == 0x0A and opaque == 0xFEEDFACE:
            return


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@pytest.mark.soak
def test_soak_a_million_requests(daemon):
    rng = random.Random(9)
    sent, garbage, batch = 0, 0, 2000
    rss = []
    while sent < 1_000_000:
        if rng.random() < 0.25:
            sock = socket.create_connection(("127.0.0.1", daemon.port), timeout=30)
            sock.sendall(_binary_batch(rng, batch))
            _read_binary_until_noop(sock)
            sock.close()
        else:
            client = Raw(daemon.port)
            client.send(_text_batch(rng, batch))
            assert client.read_through(b"MN\r\n", timeout=30).endswith(b"MN\r\n")
            client.close()
        sent += batch
        if rng.random() < 0.2:                   # a mutated, possibly hostile input
            pool = BINARY_SEEDS if rng.random() < 0.3 else TEXT_SEEDS
            data = mutate(b"".join(rng.choice(pool) for _ in range(5)),
                          [(rng.randrange(EDIT_KINDS), rng.randrange(4096), rng.randrange(4096))
                           for _ in range(rng.randrange(6))], pool)
            send_and_drain(daemon.port, data, 0.01)
            garbage += 1
        if sent % 100_000 == 0:
            assert_serves(daemon)
            rss.append(_rss_kb(daemon.process.pid))
    print(f"soak: {sent} requests + {garbage} fuzzed inputs; RSS {rss[0]}..{rss[-1]} kB")
    assert_serves(daemon)
    assert rss[-1] - rss[1] < 64 * 1024           # levels off after warm-up
    daemon.restart(kill=False)
    assert_serves(daemon)
