"""SIGKILL under load: every acknowledged write is there after restart."""

from __future__ import annotations

import threading
import time

import pytest

from .daemons import Daemon, Raw

WRITERS = 4
PER_WRITER = 400          # bounded: the loop stops by itself


def writer(port: int, index: int, acked: list, stop: threading.Event) -> None:
    try:
        raw = Raw(port)
    except OSError:
        return
    try:
        for i in range(PER_WRITER):
            if stop.is_set():
                return
            key = b"w%d:%d" % (index, i)
            value = b"%d-%d" % (index, i)
            raw.send(b"set %s 0 0 %d\r\n%s\r\n" % (key, len(value), value))
            if raw.read_until(b"\r\n", timeout=5) != b"STORED\r\n":
                return
            acked.append((key, value))
    except OSError:
        return                      # the daemon was killed mid-request


@pytest.mark.parametrize("durability", ["fsync", "async"])
def test_sigkill_under_load_keeps_acknowledged_writes(tmp_path, durability):
    daemon = Daemon(tmp_path, "--durability", durability).start()
    acked: list = []
    stop = threading.Event()
    threads = [threading.Thread(target=writer,
                                args=(daemon.port, i, acked, stop))
               for i in range(WRITERS)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 20
    while len(acked) < 200 and time.monotonic() < deadline:
        time.sleep(0.01)
    daemon.kill()
    stop.set()
    for thread in threads:
        thread.join(10)
    assert len(acked) >= 200
    daemon.start()
    raw = Raw(daemon.port)
    missing = []
    for key, value in list(acked):
        reply = raw.call(b"get %s\r\n" % key, b"END\r\n")
        if reply != b"VALUE %s 0 %d\r\n%s\r\nEND\r\n" % (key, len(value), value):
            missing.append(key)
    daemon.kill()
    assert missing == []
