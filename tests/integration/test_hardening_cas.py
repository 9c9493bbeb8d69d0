"""Issue 9, defect 1: an explicit cas of 2^64-1 must never stop the daemon.

Before the fix ``ms a 1 E18446744073709551615`` was stored, the cas counter
was raised to 2^64-1, and the next write by anyone made ``next_cas`` yield
2^64: the daemon exited 70, and again after every restart.
"""

from __future__ import annotations

import struct

from securecache.storage import Storage

from .daemons import Daemon, Raw

MAX_U64 = 2**64 - 1


def _write_works(daemon):
    other = Raw(daemon.port)
    try:
        assert other.call(b"set other 0 0 2\r\nok\r\n") == b"STORED\r\n"
        reply = other.call(b"gets other\r\n", b"END\r\n")
        assert reply.startswith(b"VALUE other 0 2 ")
        cas = int(reply.split(b"\r\n")[0].split()[-1])
        assert 0 < cas <= MAX_U64
    finally:
        other.close()
    assert daemon.process.poll() is None, daemon.log()


def test_explicit_cas_at_the_top_never_stops_the_daemon(tmp_path):
    daemon = Daemon(tmp_path, "--durability", "fsync").start()
    try:
        attacker = Raw(daemon.port)
        for value in (MAX_U64, MAX_U64 - 1, 2**63, 2**64):
            reply = attacker.call(b"ms a 1 E%d\r\nx\r\n" % value)
            # refused as memcached refuses a bad numeric token
            assert reply.startswith(b"CLIENT_ERROR"), reply
        attacker.close()
        _write_works(daemon)
        daemon.restart(kill=False)
        _write_works(daemon)
        assert daemon.stop() == 0
    finally:
        daemon.kill()


def test_highest_accepted_explicit_cas_leaves_room(tmp_path):
    """E up to 2^63-1 is honoured and later cas values stay above it."""
    daemon = Daemon(tmp_path).start()
    try:
        client = Raw(daemon.port)
        top = 2**63 - 1
        assert client.call(b"ms a 1 E%d\r\nx\r\n" % top) == b"HD\r\n"
        assert client.call(b"mg a c\r\n") == b"HD c%d\r\n" % top
        client.close()
        _write_works(daemon)
        daemon.restart(kill=False)
        _write_works(daemon)
    finally:
        daemon.kill()


def test_a_counter_left_at_the_top_wraps_instead_of_stopping(tmp_path):
    """A directory whose counter an earlier version left at 2^64-1 (the
    attack above, before the fix) serves writes again: the counter wraps."""
    storage = Storage(tmp_path / "data")
    with storage.txn(True) as txn:
        txn.txn.put(b"cas", struct.pack(">Q", MAX_U64), db=txn.meta)
    storage.close()
    daemon = Daemon(tmp_path).start()
    try:
        _write_works(daemon)
        _write_works(daemon)
        daemon.restart(kill=False)
        _write_works(daemon)
    finally:
        daemon.kill()
