"""Inputs for the fuzz tests: seed requests of each protocol, mutations,
and the regression corpus (tests/fuzz_corpus)."""

from __future__ import annotations

import struct
from pathlib import Path

CORPUS = Path(__file__).resolve().parents[1] / "fuzz_corpus"


def binary_request(op: int, key: bytes = b"", extras: bytes = b"", value: bytes = b"",
                   cas: int = 0, opaque: int = 7) -> bytes:
    """One binary-protocol request packet."""
    return struct.pack(">BBHBBHIIQ", 0x80, op, len(key), len(extras), 0, 0,
                       len(key) + len(extras) + len(value), opaque, cas) + extras + key + value


TEXT_SEEDS = [
    b"set k 1 0 3\r\nabc\r\n", b"add k 0 60 1 noreply\r\nx\r\n",
    b"cas k 0 0 1 5\r\ny\r\n", b"get a b c\r\n", b"gets k\r\n", b"gat 10 k\r\n",
    b"append k 0 0 1\r\nz\r\n", b"incr k 5\r\n", b"decr k 1 noreply\r\n",
    b"delete k\r\n", b"touch k 10\r\n", b"flush_all 10\r\n", b"stats items\r\n",
    b"verbosity 1\r\n", b"version\r\n", b"lru_crawler metadump all\r\n",
    b"relabel k system_u:object_r:securecache_item_t:s0\r\n", b"getlabel k\r\n",
    b"createlabel system_u:object_r:securecache_item_t:s0:c1,c2\r\n",
    b"createlabel default\r\n", b"whoami\r\n",
    b"mg k v c f t s k O123 q\r\n", b"ms k 2 T60 F5 I C9 E77\r\nhi\r\n",
    b"ms k S2 MA\r\nhi\r\n", b"md k q I T30\r\n", b"ma k N0 J13 D2 MI v\r\n",
    b"me k\r\n", b"mn\r\n", b"ms a 1 E18446744073709551615\r\nx\r\n",
]
BINARY_SEEDS = [
    binary_request(0x00, b"k"),
    binary_request(0x01, b"k", struct.pack(">II", 1, 0), b"v"),
    binary_request(0x02, b"k", struct.pack(">II", 0, 0), b"v", cas=2**64 - 1),
    binary_request(0x04, b"k"),
    binary_request(0x05, b"k", struct.pack(">QQI", 1, 0, 0)),
    binary_request(0x05, b"n", struct.pack(">QQI", 2**64 - 1, 2**64 - 1, 0)),
    binary_request(0x0A), binary_request(0x0B), binary_request(0x10, b"items"),
    binary_request(0x1C, b"k", struct.pack(">I", 9)), binary_request(0x20),
    binary_request(0x21, b"PLAIN", value=b"\0u\0p"),
    binary_request(0x08, extras=struct.pack(">I", 0)),
    binary_request(0x0E, b"k", value=b"tail"),
    binary_request(0x1B, extras=struct.pack(">I", 1)),
]
EXTREMES = [b"18446744073709551615", b"18446744073709551616", b"-1", b"0",
            b"9223372036854775808", b"4294967296", b"99999999999999999999999",
            b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\r\n", b"\n", b" ", b"\x80"]
EDIT_KINDS = 5


def mutate(data: bytes, edits, pool: list[bytes]) -> bytes:
    """Apply (kind, where, what) edits: flip a bit, insert a byte, delete a
    run, insert an extreme number, or splice in the tail of a `pool` input."""
    out = bytearray(data)
    for kind, where, what in edits:
        at = where % (len(out) + 1)
        if kind == 0 and out:
            out[at % len(out)] ^= 1 << (what % 8)
        elif kind == 1:
            out[at:at] = bytes([what % 256])
        elif kind == 2:
            del out[at:at + what % 8 + 1]
        elif kind == 3:
            out[at:at] = EXTREMES[what % len(EXTREMES)]
        else:
            other = pool[what % len(pool)]
            out[at:] = other[what % (len(other) + 1):]
    return bytes(out)


def corpus_files() -> list[Path]:
    """Every regression input: *.text (text/meta) and *.bin (binary)."""
    return sorted(p for p in CORPUS.iterdir() if p.suffix in (".text", ".bin"))
