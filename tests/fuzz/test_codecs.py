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

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from securecache.protocol import binary, events as ev, meta, text
from securecache.protocol.events import ProtocolError

from .inputs import BINARY_SEEDS, EDIT_KINDS, TEXT_SEEDS, corpus_files, mutate
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


EDITS = st.lists(st.tuples(st.integers(0, EDIT_KINDS - 1), st.integers(0, 1 << 16),
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
    data = mutate(b"".join(pool[p % len(pool)] for p in picks), edits, pool + BINARY_SEEDS)
    check(CODECS[name], data, random.Random(seed))


@pytest.mark.parametrize("name", sorted(CODECS))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pick=st.integers(0, 100), edits=EDITS, seed=st.integers(0, 2**32))
def test_mutated_corpus(name, pick, edits, seed):
    files = corpus_files()
    data = mutate(files[pick % len(files)].read_bytes()[:4000], edits, TEXT_SEEDS + BINARY_SEEDS)
    check(CODECS[name], data, random.Random(seed))


@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: p.name)
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
