"""SIGKILL under pipelined write load: every acknowledged write is there
after the restart, and the directory opens every time.

Each round: writers pipeline sets (values up to 30 KB), the daemon is
killed with SIGKILL mid-load, started again on the same directory, and
every write it acknowledged in that round is read back. Both durability
modes; one round of each run restarts with ``-m 1`` on the data the
earlier rounds left (a full map: the limit is enforced at start, and the
round's writes evict), where an acknowledged write may have been evicted
(a miss) but never reads back wrong. Evictions go oldest-written first,
so a writer's evicted keys are a prefix of what it wrote (a miss after one
of its later keys is present is a loss), and the keys acknowledged last in
the round must be there. (Not "each writer's last three": a writer that
fell behind the others has its last keys among the oldest in the cache.)
The default suite runs 5 rounds per mode; ``-m soak`` runs 30 per mode.
"""

from __future__ import annotations

import threading
import time

import pytest

from .daemons import Daemon, Raw

WRITERS = 4
PIPELINE = 8              # sets sent before their replies are read
PER_WRITER = 2000         # bounded: the loop stops by itself
ACKED_PER_ROUND = 160     # kill once this many writes were acknowledged
KEPT_WHEN_FULL = 3        # latest writes of the round a full map still holds


ACKED_AT: dict[bytes, float] = {}   # when a write's STORED arrived


def value_of(key: bytes) -> bytes:
    """A value of 1 byte to 30 KB, known from the key alone."""
    size = 1 + (hash(key) & 0x7FFF) % 30_000
    return (key + b"|") * (size // (len(key) + 1)) + b"#" * (size % (len(key) + 1))


def writer(port: int, round_: int, index: int, acked: list,
           stop: threading.Event) -> None:
    try:
        raw = Raw(port)
    except OSError:
        return
    mine = []
    acked.append(mine)
    try:
        for start in range(0, PER_WRITER, PIPELINE):
            if stop.is_set():
                return
            keys = [b"r%d:w%d:%d" % (round_, index, i)
                    for i in range(start, start + PIPELINE)]
            raw.send(b"".join(b"set %s 0 0 %d\r\n%s\r\n" % (
                key, len(value_of(key)), value_of(key)) for key in keys))
            replies, base = b"", len(mine)
            raw.sock.settimeout(5)
            while replies.count(b"\r\n") < len(keys):
                chunk = raw.sock.recv(4096)
                if not chunk:
                    return
                replies += chunk
                # a reply that arrived acknowledges its set, in order
                done = replies.count(b"\r\n")
                if replies.split(b"\r\n")[:done] != [b"STORED"] * done:
                    return
                del mine[base:]
                mine.extend(keys[:done])
                for key in keys[:done]:
                    ACKED_AT.setdefault(key, time.monotonic())
    except OSError:
        return                      # the daemon was killed mid-request


def crash_round(daemon: Daemon, round_: int) -> list[list[bytes]]:
    """Load, SIGKILL, restart: the acknowledged keys, per writer."""
    acked: list[list[bytes]] = []
    stop = threading.Event()
    threads = [threading.Thread(target=writer,
                                args=(daemon.port, round_, i, acked, stop))
               for i in range(WRITERS)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 20
    while sum(map(len, acked)) < ACKED_PER_ROUND and \
            time.monotonic() < deadline:
        time.sleep(0.005)
    daemon.kill()
    stop.set()
    for thread in threads:
        thread.join(10)
    assert sum(map(len, acked)) >= ACKED_PER_ROUND
    started = time.monotonic()
    daemon.start()                  # the directory opens (or this raises)
    daemon.restart_times.append(time.monotonic() - started)
    return acked


def check_round(daemon: Daemon, acked: list[list[bytes]], full: bool
                ) -> tuple[int, int]:
    """(lost, evicted) acknowledged writes: lost ones read back wrong, or
    are missing where nothing could have evicted them."""
    raw = Raw(daemon.port)
    lost = evicted = 0
    every = sorted((key for keys in acked for key in keys),
                   key=lambda key: ACKED_AT[key])
    latest = set(every[-KEPT_WHEN_FULL:])
    for keys in acked:
        missing = []              # positions of this writer's misses
        for position, key in enumerate(keys):
            value = value_of(key)
            reply = raw.read_until(b"END\r\n") if raw.send(
                b"get %s\r\n" % key) is None else b""
            if reply == b"VALUE %s 0 %d\r\n%s\r\nEND\r\n" % (key, len(value),
                                                              value):
                continue
            if full and reply == b"END\r\n" and key not in latest:
                missing.append(position)
            else:
                lost += 1
        # evicted oldest first: the misses are the first keys it wrote
        prefix = missing == list(range(len(missing)))
        if prefix:
            evicted += len(missing)
        else:
            lost += len(missing)
    raw.close()
    return lost, evicted


def crash_rounds(tmp_path, durability: str, rounds: int) -> None:
    daemon = Daemon(tmp_path, "--durability", durability, "-m", "64",
                    "-I", "512k").start()
    daemon.restart_times = []
    full_round = rounds // 2
    checked = evicted_total = 0
    try:
        for round_ in range(rounds):
            full = round_ == full_round
            if full or round_ == full_round + 1:
                daemon.extra[daemon.extra.index("-m") + 1] = \
                    "1" if full else "64"
                daemon.restart()
            acked = crash_round(daemon, round_)
            lost, evicted = check_round(daemon, acked, full)
            assert lost == 0, (round_, durability, lost)
            if full:
                assert evicted > 0, "the full map evicted nothing"
            checked += sum(map(len, acked))
            evicted_total += evicted
        assert daemon.process.poll() is None
        print(f"{durability}: {rounds} SIGKILLs, {checked} acknowledged "
              f"writes checked, 0 lost, {evicted_total} evicted (full map), "
              f"restart {min(daemon.restart_times):.2f}-"
              f"{max(daemon.restart_times):.2f} s")
    finally:
        daemon.kill()


@pytest.mark.parametrize("durability", ["fsync", "async"])
def test_sigkill_under_load_keeps_acknowledged_writes(tmp_path, durability):
    crash_rounds(tmp_path, durability, 5)


@pytest.mark.soak
@pytest.mark.parametrize("durability", ["fsync", "async"])
def test_sigkill_soak(tmp_path, durability):
    crash_rounds(tmp_path, durability, 30)
