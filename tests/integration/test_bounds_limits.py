"""Issue 9 defects 3 and 4 on a real daemon: a full map never stops it,
and -m holds across restarts."""

from __future__ import annotations

import random

from .daemons import Daemon, Raw


def stats(raw: Raw) -> dict[bytes, bytes]:
    reply = raw.call(b"stats\r\n", b"END\r\n")
    return dict(line.split(b" ")[1:3] for line in reply.splitlines()
                if line.startswith(b"STAT "))


def test_mixed_size_sets_on_a_full_map_never_stop_the_daemon(tmp_path):
    """Defect 3: stopped (exit 70) within 1-35 requests, on every restart."""
    daemon = Daemon(tmp_path, "-m", "1", "-I", "512k").start()
    rng = random.Random(3)
    try:
        for run in range(3):
            raw = Raw(daemon.port)
            for i in range(120):                  # ~12 MB into a 1 MB cache
                size = rng.choice((10, 300, 4_000, 60_000, 200_000, 500_000))
                reply = raw.call(b"set r%d:%d 0 0 %d\r\n%s\r\n" % (
                    run, i, size, b"z" * size))
                assert reply == b"STORED\r\n", (run, i, size, reply)
            assert raw.call(b"version\r\n").startswith(b"VERSION")
            numbers = stats(raw)
            assert int(numbers[b"evictions"]) > 0
            assert int(numbers[b"bytes"]) <= 1 << 20
            assert daemon.process.poll() is None
            daemon.restart()
    finally:
        daemon.kill()


def test_the_limit_holds_across_restarts(tmp_path):
    """Defect 4: with -m 16 and 0.9 MB per run, bytes reached 29 MB with no
    eviction, then every set was refused for good. The engine measures at
    start and after every limit/16 bytes written: a run may overshoot by
    less than that until the next measurement, never more."""
    daemon = Daemon(tmp_path, "-m", "16", "--durability", "async").start()
    value = b"q" * 30_000
    evictions = 0
    try:
        for run in range(24):                    # 21.6 MB over 24 runs
            raw = Raw(daemon.port)
            assert int(stats(raw)[b"bytes"]) <= 16 << 20, run   # at start
            raw.send(b"".join(b"set r%d:%d 0 0 %d noreply\r\n%s\r\n" % (
                run, i, len(value), value) for i in range(30)))
            assert raw.call(b"set last%d 0 0 1\r\nx\r\n" % run) == \
                b"STORED\r\n"
            numbers = stats(raw)
            evictions += int(numbers[b"evictions"])
            assert int(numbers[b"bytes"]) <= (16 << 20) * 17 // 16, run
            raw.close()
            daemon.restart(kill=run % 2 == 0)     # SIGKILL or SIGTERM
        raw = Raw(daemon.port)
        assert int(stats(raw)[b"bytes"]) <= 16 << 20
        assert raw.call(b"get r23:29\r\n", b"END\r\n").startswith(b"VALUE")
        assert evictions > 0
    finally:
        daemon.kill()
