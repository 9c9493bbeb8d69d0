"""Conformance: libmemcached's memcapable, and memcached 1.6 run side by side."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from .daemons import Daemon, Memcached, Raw

MEMCCAPABLE = shutil.which("memccapable") or "/usr/bin/memccapable"


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    ours = Daemon(tmp_path_factory.mktemp("sc")).start()
    theirs = Memcached()
    yield ours, theirs
    ours.kill()
    theirs.stop()


def test_memccapable_ascii(pair):
    ours, _ = pair
    result = subprocess.run([MEMCCAPABLE, "-h", "127.0.0.1", "-p",
                             str(ours.port), "-a", "-t", "10"],
                            capture_output=True, text=True, timeout=300)
    lines = [line for line in result.stdout.splitlines() if "[" in line]
    failed = [line for line in lines if "[pass]" not in line]
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(lines) >= 20 and not failed, result.stdout
    assert "All tests passed" in result.stdout


def exchange(port: int, payload: bytes) -> bytes:
    raw = Raw(port)
    try:
        raw.send(payload)
        return raw.read_all(quiet=0.5)
    finally:
        raw.close()


def normalise(reply: bytes) -> bytes:
    """Our VERSION names us; the closing of a socket is one class."""
    reply = re.sub(rb"VERSION \S+", b"VERSION x", reply)
    if reply.endswith(b"<closed>"):
        return b"<closed>"
    return reply


CASES = {
    "key of 251 bytes": b"set " + b"a" * 251 + b" 0 0 3\r\nabc\r\n",
    "get key of 251 bytes": b"get " + b"a" * 251 + b"\r\n",
    "negative length": b"set k 0 0 -1\r\nabc\r\n",
    "non-numeric length": b"set k 0 0 xx\r\nabc\r\n",
    "length over -I": b"set k 0 0 2000000\r\n" + b"x" * 2000000 + b"\r\n",
    "block shorter than announced": b"set k 0 0 5\r\nabc\r\nversion\r\n",
    "block longer than announced": b"set k 0 0 2\r\nabcdef\r\n",
    "unknown command": b"foo bar\r\n",
    "empty line": b"\r\n",
    "too many tokens": b"set k 0 0 1 noreply extra\r\na\r\n",
    "incr non-numeric value": b"set n 0 0 1\r\na\r\nincr n 1\r\n",
    "incr bad delta": b"incr n x\r\n",
    "incr wraps": b"set w 0 0 20\r\n18446744073709551615\r\nincr w 1\r\n",
    "decr floors and pads": b"set d 0 0 3\r\n100\r\ndecr d 95\r\nget d\r\n",
    "delete with time": b"delete k 5\r\n",
    "touch without exptime": b"touch k\r\n",
    "gat bad exptime": b"gat k\r\n",
    "gat without keys": b"gat 10\r\ngats 10 \r\n",
    "flush_all arguments": b"flush_all 0 5\r\nflush_all x 5\r\n"
    b"flush_all noreply 5\r\nflush_all -5 x\r\nflush_all 5 5 5\r\n",
    "verbosity levels": b"verbosity 4294967296\r\nverbosity +1\r\n"
    b"verbosity -0\r\nverbosity 18446744073709551616\r\nverbosity 0\r\n",
    "flags kept mod 2^32": b"set f 4294967297 0 1\r\nx\r\nget f\r\n"
    b"set g +5 0 1\r\nx\r\nget g\r\nset h -0 0 1\r\nx\r\nget h\r\n"
    b"set i 18446744073709551615 0 1\r\nx\r\nget i\r\n"
    b"set j 18446744073709551616 0 1\r\nx\r\nset k -1 0 1\r\nx\r\n"
    b"append f 4294967296 0 1\r\ny\r\nget f\r\n",
    "flush_all bad delay": b"flush_all x\r\n",
    "verbosity without level": b"verbosity\r\n",
    "stats unknown group": b"stats nope\r\n",
    "cas on missing": b"cas nope 0 0 1 5\r\na\r\n",
    "append to missing": b"append nope 0 0 1\r\na\r\n",
    "noreply errors are silent": b"set k 0 0 -1 noreply\r\nincr k x noreply\r\n",
    "noreply bad chunk": b"set k 0 0 2 noreply\r\nabcd\r\n",
    "LF-only line ends": b"set lf 0 0 1\na\r\nget lf\n",
    "line of 64 KiB without newline": b"x" * 65536,
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_same_reply_as_memcached(pair, name):
    ours, theirs = pair
    payload = CASES[name]
    # Each case runs on a fresh connection, followed by a version probe:
    # where memcached keeps the connection, so must we.
    if not payload.endswith(b"x" * 100):
        payload += b"version\r\n"
    expected = normalise(exchange(theirs.port, payload))
    got = normalise(exchange(ours.port, payload))
    assert got == expected
