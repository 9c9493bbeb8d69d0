"""``-t 2``: two worker processes behind one port and one UNIX socket.

Each test talks to both workers (a connection's worker is told apart by
the ``pid`` row of ``stats``) and checks one promise: stats for the whole
daemon, cas values unique across workers, labels interned by one worker
resolving in the other, SIGHUP reloading every worker, SIGTERM stopping
all, and a worker that dies being replaced.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from .daemons import Daemon, Raw
from .mac_support import write_peer_contexts

LOCAL = "system_u:system_r:securecache_local_t:s0"
APP = "system_u:system_r:securecache_app_t:s0"
LOCAL_ITEM = "system_u:object_r:securecache_local_item_t:s0"


def stats(raw: Raw) -> dict[str, str]:
    text = raw.call(b"stats\r\n", b"END\r\n").decode()
    return dict(line.split(" ", 2)[1:] for line in text.splitlines()
                if line.startswith("STAT "))


def by_worker(port: int, source: str | None = None, wanted: int = 2,
              tries: int = 64) -> dict[str, Raw]:
    """Connections until one reaches each worker: pid -> connection."""
    found: dict[str, Raw] = {}
    for _ in range(tries):
        raw = Raw(port, source=source)
        pid = stats(raw)["pid"]
        if pid in found:
            raw.close()
        else:
            found[pid] = raw
        if len(found) == wanted:
            return found
    raise AssertionError(f"only reached workers {sorted(found)}")


@pytest.fixture
def daemon(tmp_path):
    peers = write_peer_contexts(tmp_path / "peer_contexts",
                                net={"127.0.0.1": LOCAL, "127.0.0.2": APP})
    daemon = Daemon(tmp_path, "-t", "2", "--peer-contexts", str(peers)).start()
    yield daemon
    workers = worker_pids(daemon)
    daemon.kill()
    gone(workers)


def gone(pids: list[int], timeout: float = 10.0) -> None:
    """Wait until these processes are gone (or zombies)."""
    deadline = time.monotonic() + timeout
    for pid in pids:
        while os.path.exists(f"/proc/{pid}") and \
                open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] \
                != "Z":
            assert time.monotonic() < deadline, f"worker {pid} still runs"
            time.sleep(0.02)


def worker_pids(daemon) -> list[int]:
    """The supervisor's children, from /proc."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            if ppid == daemon.process.pid:
                pids.append(int(entry))
    return pids


def test_stats_answer_for_the_whole_daemon(daemon):
    conns = by_worker(daemon.port)
    for n, raw in enumerate(conns.values()):
        assert raw.call(b"set s%d 0 0 1\r\nx\r\n" % n) == b"STORED\r\n"
        for _ in range(3):
            assert raw.call(b"get s%d\r\n" % n, b"END\r\n").startswith(b"VAL")
    time.sleep(0.3)                      # every worker has published
    rows = [stats(raw) for raw in conns.values()]
    for row in rows:
        assert row["threads"] == "2"
        assert int(row["cmd_set"]) >= 2 and int(row["get_hits"]) >= 6
        assert int(row["curr_connections"]) >= 2
    assert rows[0]["get_hits"] == rows[1]["get_hits"]
    assert rows[0]["cmd_set"] == rows[1]["cmd_set"]
    assert int(rows[0]["avc_lookups"]) >= 8


def test_run_time_settings_reach_every_worker(daemon):
    # set on one worker, the daemon's setting: the other takes it too
    (one, other) = by_worker(daemon.port).values()

    def shown(raw: Raw) -> dict[str, str]:
        text = raw.call(b"stats settings\r\n", b"END\r\n").decode()
        rows = dict(line.split(" ", 2)[1:] for line in text.splitlines()
                    if line.startswith("STAT "))
        return {name: rows[name] for name in (
            "maxbytes", "verbosity", "lru_crawler", "lru_crawler_sleep",
            "lru_segmented", "slab_automove", "detail_enabled",
            "hot_max_factor")}
    for line in (b"lru_crawler disable\r\n", b"lru_crawler sleep 7\r\n",
                 b"cache_memlimit 32\r\n", b"verbosity 1\r\n",
                 b"lru mode flat\r\n", b"slabs automove 2\r\n",
                 b"stats detail on\r\n", b"lru tune 10 30 0.5 3\r\n"):
        assert one.call(line) == b"OK\r\n", line
    expected = {"maxbytes": str(32 << 20), "verbosity": "1",
                "lru_crawler": "no", "lru_crawler_sleep": "7",
                "lru_segmented": "no", "slab_automove": "2",
                "detail_enabled": "yes", "hot_max_factor": "0.50"}
    assert shown(one) == shown(other) == expected
    # the other worker's crawler is off too: it refuses a crawl
    assert other.call(b"lru_crawler crawl all\r\n") == \
        b"CLIENT_ERROR lru crawler disabled\r\n"
    assert other.call(b"lru_crawler enable\r\n") == b"OK\r\n"
    assert one.call(b"lru_crawler enable\r\n") == \
        b"ERROR failed to start lru crawler thread\r\n"


def test_cas_values_are_unique_across_workers(daemon):
    conns = list(by_worker(daemon.port).values())
    for round_ in range(50):
        for n, raw in enumerate(conns):
            raw.send(b"set c%d-%d 0 0 1 noreply\r\nx\r\n" % (n, round_))
    seen = []
    for n, raw in enumerate(conns):
        keys = b" ".join(b"c%d-%d" % (n, r) for r in range(50))
        reply = raw.call(b"gets " + keys + b"\r\n", b"END\r\n")
        seen += [int(line.split()[4]) for line in reply.split(b"\r\n")
                 if line.startswith(b"VALUE")]
    assert len(seen) == 100 and len(set(seen)) == 100


def test_a_label_interned_by_one_worker_resolves_in_the_other(daemon):
    """The first item of the daemon interns its label in worker a; worker
    b, which never saw that label, reads it from the label table."""
    (_, a), (_, b) = by_worker(daemon.port).items()
    assert a.call(b"set tagged 0 0 1\r\nx\r\n") == b"STORED\r\n"
    assert b.call(b"getlabel tagged\r\n") == \
        b"LABEL " + LOCAL_ITEM.encode() + b"\r\n"
    assert b.call(b"get tagged\r\n", b"END\r\n") == \
        b"VALUE tagged 0 1\r\nx\r\nEND\r\n"


def test_sighup_reloads_every_worker(daemon):
    conns = by_worker(daemon.port)
    daemon.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while daemon.log().count("SIGHUP: reloading") < 2:
        assert time.monotonic() < deadline, daemon.log()
        time.sleep(0.05)
    reloaded = {line.split("]")[0].split("[")[1]
                for line in daemon.log().splitlines() if "SIGHUP" in line}
    assert reloaded == set(conns)
    for raw in conns.values():
        assert raw.call(b"version\r\n").startswith(b"VERSION")


def test_sigterm_stops_every_worker(daemon):
    conns = by_worker(daemon.port)
    workers = worker_pids(daemon)
    assert len(workers) == 2
    assert daemon.stop() == 0
    gone(workers, timeout=0.1)
    assert not os.path.exists(daemon.socket_path)
    for raw in conns.values():
        raw.close()


def test_a_dead_worker_is_logged_and_replaced(daemon):
    conns = by_worker(daemon.port)
    victim = int(next(iter(conns)))
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while len(set(worker_pids(daemon)) - {victim}) < 2:
        assert time.monotonic() < deadline, daemon.log()
        time.sleep(0.05)
    assert f"worker {victim} exited" in daemon.log()
    fresh = by_worker(daemon.port)
    assert str(victim) not in fresh
    for raw in fresh.values():
        assert raw.call(b"set after 0 0 1\r\ny\r\n") == b"STORED\r\n"


def test_workers_die_with_a_killed_supervisor(daemon):
    """SIGKILL leaves the supervisor no time to stop its workers: they stop
    by themselves instead of serving on."""
    workers = worker_pids(daemon)
    assert len(workers) == 2
    daemon.kill()
    gone(workers)


def test_shutdown_command_stops_the_daemon(tmp_path):
    daemon = Daemon(tmp_path, "-t", "2", "-A").start()
    try:
        raw = Raw(daemon.port)
        raw.send(b"shutdown\r\n")
        assert daemon.process.wait(20) == 0
    finally:
        daemon.kill()
