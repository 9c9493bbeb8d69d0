"""Delayed flush_all on a real daemon: kept across a SIGKILL, fired at its
second (not at the next housekeeping tick), with one worker or two."""

from __future__ import annotations

import time

import pytest

from .daemons import Daemon, Raw


def gone_after_due(raws, key: bytes, due: int, timeout=4.0) -> float:
    """Poll ``key`` on every connection; seconds after ``due`` when every
    one of them misses it (negative: before the due second)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        replies = [raw.call(b"get %s\r\n" % key, b"END\r\n") for raw in raws]
        if all(reply == b"END\r\n" for reply in replies):
            late = time.time() - due
            print(f"flush gone {late * 1000:+.0f} ms after its second")
            return late
        time.sleep(0.005)
    raise AssertionError("the delayed flush never fired")


def test_delayed_flush_survives_sigkill_and_fires_at_its_second(tmp_path):
    daemon = Daemon(tmp_path).start()
    try:
        raw = Raw(daemon.port)
        assert raw.call(b"set a 0 0 1\r\n1\r\n") == b"STORED\r\n"
        sent = time.time()
        assert raw.call(b"flush_all 3\r\n") == b"OK\r\n"
        due = int(sent) + 3
        daemon.restart()                         # SIGKILL, then start again
        raw = Raw(daemon.port)
        assert raw.call(b"get a\r\n", b"END\r\n") == b"VALUE a 0 1\r\n1\r\nEND\r\n"
        late = gone_after_due([raw], b"a", due)
        assert -0.05 < late < 0.1, late
        assert raw.call(b"set b 0 0 1\r\n2\r\n") == b"STORED\r\n"
        time.sleep(1.2)                          # the tick consumes it
        daemon.restart()
        raw = Raw(daemon.port)
        assert raw.call(b"get b\r\n", b"END\r\n") == b"VALUE b 0 1\r\n2\r\nEND\r\n"
    finally:
        daemon.kill()


@pytest.mark.parametrize("workers", ["2"])
def test_delayed_flush_with_workers(tmp_path, workers):
    daemon = Daemon(tmp_path, "-t", workers).start()
    try:
        raws = [Raw(daemon.port) for _ in range(6)]   # spread over workers
        for i in range(20):
            assert raws[0].call(b"set k%d 0 0 1\r\nx\r\n" % i) == b"STORED\r\n"
        sent = time.time()
        assert raws[1].call(b"flush_all 2\r\n") == b"OK\r\n"
        late = gone_after_due(raws, b"k7", int(sent) + 2)
        assert -0.05 < late < 0.1, late
        time.sleep(1.2)
        for raw in raws:
            assert raw.call(b"get k3 k19\r\n", b"END\r\n") == b"END\r\n"
            assert raw.call(b"set n 0 0 1\r\ny\r\n") == b"STORED\r\n"
        time.sleep(1.2)              # consumed once: later items stay
        for raw in raws:
            assert raw.call(b"get n\r\n", b"END\r\n") == \
                b"VALUE n 0 1\r\ny\r\nEND\r\n"
        assert daemon.process.poll() is None
    finally:
        daemon.kill()
