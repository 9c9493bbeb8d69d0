"""Fuzzing the three codecs (text, meta, binary), and the regression corpus.

Property: whatever bytes arrive, however they are split, a codec yields
requests (events.Request) or raises ProtocolError -- never another
exception, never a hang -- the same ones whether the input comes whole,
byte by byte or in random chunks, and what it buffers stays bounded.
Inputs are random bytes and mutations (bit flips, insertions, deletions,
splices, extreme numbers) of valid requests and of every corpus file.
"""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from securecache.protocol import binary, events as ev, meta, text
from securecache.protocol.events import ProtocolError

CORPUS = Path(__file__).resolve().parents[1] / "fuzz_corpus"
ITEM_SIZE = 4096


def clock() -> float:
    return 1_700_000_000.0


CODECS = {
    "text": lambda: text.TextCodec(ITEM_SIZE),
    "text-auth": lambda: text.TextCodec(ITEM_SIZE, auth=True),
    "meta": lambda: meta.MetaCodec(ITEM_SIZE, clock=clock),
    "binary": lambda: binary.BinaryCodec(ITEM_SIZE),
}
# after a drain: a line waiting for its end, or a block / body for its rest
BUFFER_BOUND = max(text.MAX_GET_LINE, ITEM_SIZE + binary.HEADER_ROOM) + 2


def _bin(op, key=b"", extras=b"", value=b"", cas=0):
    return struct.pack(">BBHBBHIIQ", 0x80, op, len(key), len(extras), 0, 0,
                       len(key) + len(extras) + len(value), 7, cas) + extras + key + value


TEXT_SEEDS = [
    b"set k 1 0 3\r\nabc\r\n", b"add k 0 60 1 noreply\r\nx\r\n",
    b"cas k 0 0 1 5\r\ny\r\n", b"get a b c\r\n", b"gets k\r\n", b"gat 10 k\r\n",
    b"append k 0 0 1\r\nz\r\n", b"incr k 5\r\n", b"decr k 1 noreply\r\n",
    b"delete k\r\n", b"touch k 10\r\n", b"flush_all 10\r\n", b"stats items\r\n",
    b"verbosity 1\r\n", b"version\r\n", b"lru_crawler metadump all\r\n",
    b"relabel k system_u:object_r:securecache_item_t:s0\r\n", b"getlabel k\r\n",
    b"createlabel system_u:object_r:securecache_item_t:s0:c1,c2\r\n",
    b"createlabel default\r\n", b"whoami\r\n", b"quit\r\n",
    b"mg k v c f t s k O123 q\r\n", b"ms k 2 T60 F5 I C9 E77\r\nhi\r\n",
    b"ms k S2 MA\r\nhi\r\n", b"md k q I T30\r\n", b"ma k N0 J13 D2 MI v\r\n",
    b"me k\r\n", b"mn\r\n", b"ms a 1 E18446744073709551615\r\nx\r\n",
]
BINARY_SEEDS = [
    _bin(0x00, b"k"), _bin(0x01, b"k", struct.pack(">II", 1, 0), b"v"),
    _bin(0x02, b"k", struct.pack(">II", 0, 0), b"v", cas=2**64 - 1),
    _bin(0x04, b"k"), _bin(0x05, b"k", struct.pack(">QQI", 1, 0, 0)),
    _bin(0x0A), _bin(0x0B), _bin(0x10, b"items"), _bin(0x1C, b"k", struct.pack(">I", 9)),
    _bin(0x20), _bin(0x21, b"PLAIN", value=b"\0u\0p"), _bin(0x08, extras=struct.pack(">I", 0)),
    _bin(0x0E, b"k", value=b"tail"), _bin(0x1B, extras=struct.pack(">I", 1)),
]
EXTREMES = [b"18446744073709551615", b"18446744073709551616", b"-1", b"0",
            b"9223372036854775808", b"4294967296", b"99999999999999999999999",
            b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\r\n", b"\n", b" ", b"\x80"]


def corpus(suffix: str = "") -> list[Path]:
    return sorted(p for p in CORPUS.iterdir() if p.name.endswith(suffix) and p.suffix != ".md")


def _mutate(data: bytes, edits: list, pool: list[bytes]) -> bytes:
    out = bytearray(data)
    for kind, where, what in edits:
        at = where % (len(out) + 1)
        if kind == 0 and out:                              # flip a bit
            out[at % len(out)] ^= 1 << (what % 8)
        elif kind == 1:                                    # insert a byte
            out[at:at] = bytes([what % 256])
        elif kind == 2:                                    # delete a run
            del out[at:at + what % 8 + 1]
        elif kind == 3:                                    # an extreme number
            out[at:at] = EXTREMES[what % len(EXTREMES)]
        else:                                              # splice another input
            other = pool[what % len(pool)]
            out[at:] = other[what % (len(other) + 1):]
    return bytes(out)


EDITS = st.lists(st.tuples(st.integers(0, 4), st.integers(0, 1 << 16),
                           st.integers(0, 1 << 16)), max_size=8)


def drain(codec, out: list, budget: int) -> bool:
    """Collect events until NEED_DATA; True if the codec closed."""
    while True:
        assert len(out) <= budget, "a codec yields events without consuming input"
        try:
            event = codec.next_event()
        except ProtocolError as error:
            assert isinstance(error.reply, bytes)
            out.append(("error", error.reply, error.close))
            if error.close:
                return True
            continue
        if event is ev.NEED_DATA:
            return False
        assert isinstance(event, ev.Request), f"not a request: {event!r}"
        out.append(event)


def feed(make, chunks: list[bytes]) -> list:
    codec, out = make(), []
    total = 0
    for chunk in chunks:
        total += len(chunk)
        codec.receive_data(chunk)
        if drain(codec, out, total + 1):
            break
        assert codec.buffered <= BUFFER_BOUND
    return out


def check(make, data: bytes, rng: random.Random) -> list:
    """The property, for one input (see the module docstring)."""
    whole = feed(make, [data])
    assert feed(make, [data[i:i + 1] for i in range(len(data))]) == whole
    cuts = sorted(rng.sample(range(len(data) + 1), min(len(data), 6)))
    pieces = [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]
    assert feed(make, pieces) == whole
    return whole


FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("name", sorted(CODECS))
@FUZZ
@given(data=st.binary(max_size=300), seed=st.integers(0, 2**32))
def test_random_bytes(name, data, seed):
    check(CODECS[name], data, random.Random(seed))


@pytest.mark.parametrize("name", sorted(CODECS))
@FUZZ
@given(picks=st.lists(st.integers(0, 10_000), min_size=1, max_size=4), edits=EDITS,
       seed=st.integers(0, 2**32))
def test_mutated_requests(name, picks, edits, seed):
    pool = BINARY_SEEDS if name == "binary" else TEXT_SEEDS
    data = _mutate(b"".join(pool[p % len(pool)] for p in picks), edits, pool + BINARY_SEEDS)
    check(CODECS[name], data, random.Random(seed))


@pytest.mark.parametrize("name", sorted(CODECS))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pick=st.integers(0, 100), edits=EDITS, seed=st.integers(0, 2**32))
def test_mutated_corpus(name, pick, edits, seed):
    files = corpus()
    data = _mutate(files[pick % len(files)].read_bytes()[:4000], edits, TEXT_SEEDS + BINARY_SEEDS)
    check(CODECS[name], data, random.Random(seed))


@pytest.mark.parametrize("path", corpus(), ids=lambda p: p.name)
def test_corpus_replays_through_every_codec(path):
    data = path.read_bytes()
    for name, make in CODECS.items():
        events = check(make, data, random.Random(9))
        if path.suffix == ".text" and name == "text":
            assert any(isinstance(e, ev.Request) for e in events), (name, events[:3])


def test_explicit_cas_beyond_2_63_is_a_bad_token():
    """Issue 9 defect 1, at the codec: E is bounded to 2^63-1."""
    events = feed(CODECS["meta"], [b"ms a 1 E9223372036854775807\r\nx\r\n"
                                   b"ms a 1 E9223372036854775808\r\nx\r\n"
                                   b"ms a 1 E18446744073709551615\r\nx\r\n"])
    assert events[0].new_cas == 2**63 - 1
    assert events[1:] == [("error", meta.BAD_TOKEN, False)] * 2
