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
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .daemons import Daemon, Raw

CORPUS = Path(__file__).resolve().parents[1] / "fuzz_corpus"
CANARY = b"canary-value-42"
TEXT_SEEDS = [
    b"set k 1 0 3\r\nabc\r\n", b"get k k2\r\n", b"gets k\r\n", b"incr n 5\r\n",
    b"append k 0 0 1\r\nz\r\n", b"delete k\r\n", b"touch k 10\r\n", b"gat 5 k\r\n",
    b"mg k v c f t s\r\n", b"ms k 2 T60 F5 I\r\nhi\r\n", b"md k q\r\n",
    b"ma n N0 J13 D2\r\n", b"ms a 1 E18446744073709551615\r\nx\r\n",
    b"createlabel system_u:object_r:securecache_local_item_t:s0\r\n",
    b"lru_crawler metadump all\r\n", b"stats\r\n", b"flush_all 3600\r\n",
]
NUMBERS = [b"18446744073709551615", b"-1", b"4294967296", b"9" * 30, b"\xff", b"\r\n"]


def _bin(op, key=b"", extras=b"", value=b"", cas=0, opaque=0):
    return struct.pack(">BBHBBHIIQ", 0x80, op, len(key), len(extras), 0, 0,
                       len(key) + len(extras) + len(value), opaque, cas) + extras + key + value


BINARY_SEEDS = [
    _bin(0x00, b"k"), _bin(0x01, b"k", struct.pack(">II", 1, 0), b"v"),
    _bin(0x05, b"n", struct.pack(">QQI", 2**64 - 1, 2**64 - 1, 0)),
    _bin(0x02, b"k", struct.pack(">II", 0, 0), b"v", cas=2**64 - 1),
    _bin(0x1C, b"k", struct.pack(">I", 9)), _bin(0x04, b"k"), _bin(0x0A),
]


def corpus_files() -> list[Path]:
    return sorted(p for p in CORPUS.iterdir() if p.suffix in (".text", ".bin"))


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzzed")
    daemon = Daemon(tmp, "--audit-log", str(tmp / "audit.log"),
                    "--durability", "async").start()
    client = Raw(daemon.port)
    assert client.call(b"set canary 7 0 %d\r\n%s\r\n" % (len(CANARY), CANARY)) == b"STORED\r\n"
    client.close()
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


def mutate(data: bytes, edits) -> bytes:
    out = bytearray(data)
    for kind, where, what in edits:
        at = where % (len(out) + 1)
        if kind == 0 and out:
            out[at % len(out)] ^= 1 << (what % 8)
        elif kind == 1:
            out[at:at] = bytes([what % 256])
        elif kind == 2:
            del out[at:at + what % 8 + 1]
        else:
            out[at:at] = NUMBERS[what % len(NUMBERS)]
    return bytes(out)


def test_the_corpus_replays_against_a_live_daemon(daemon):
    for path in corpus_files():
        send_and_drain(daemon.port, path.read_bytes(), 0.2)
        assert_serves(daemon)
    daemon.restart(kill=False)
    assert_serves(daemon)


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(binary=st.booleans(), picks=st.lists(st.integers(0, 100), min_size=1, max_size=5),
       edits=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 4096),
                                st.integers(0, 4096)), max_size=6),
       split=st.booleans())
def test_fuzzed_input_never_stops_the_daemon(daemon, binary, picks, edits, split):
    pool = BINARY_SEEDS if binary else TEXT_SEEDS
    data = mutate(b"".join(pool[p % len(pool)] for p in picks), edits)
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
            parts.append(_bin(0x11, key, struct.pack(">II", 0, 0), b"x" * rng.randrange(100)))
        else:
            parts.append(_bin(0x0D, key))
    return b"".join(parts) + _bin(0x0A, opaque=0xFEEDFACE)


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
                          [(rng.randrange(4), rng.randrange(4096), rng.randrange(4096))
                           for _ in range(rng.randrange(6))])
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
