"""tools/bench/bench.py's loader fallback and report, against a real
memcached and Debian's memcslap (the load itself is never timed here)."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from securecache.security import open_mac

from .daemons import Memcached

BENCH = Path(__file__).resolve().parents[2] / "tools" / "bench" / "bench.py"
HOTPATH = BENCH.with_name("hotpath.py")


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench"] = module           # its dataclasses look it up
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def memcached():
    server = Memcached()
    yield server
    server.stop()


def test_memcslap_runs_by_time_not_by_a_fixed_count(bench, memcached):
    # A run shorter than one chunk is one chunk: the count follows the
    # time asked for, so a slow server cannot stretch --quick past its
    # budget (it used to run 20,000 requests per second asked, whatever
    # the server's speed).
    result = bench.memcslap(memcached.port, "1:0", 0.01)
    assert result["count"] == bench.MEMCSLAP_CHUNK
    assert result["ops"] > 0
    assert result["p50"] is None and result["p99"] is None


def test_report_shows_no_latency_where_none_was_measured(bench, capsys):
    args = type("Args", (), {"server_cpu": "1", "loader_cpu": "0",
                             "rounds": 1, "seconds": 3, "memtier": None})
    row = {"ops": 1000.0, "count": 3000, "p50": None, "p99": None,
           "cpu_us": 5.0}
    bench.report({"memcached": {"sets": row}}, ["sets"], args)
    line = [x for x in capsys.readouterr().out.splitlines()
            if x.startswith("memcached")][0]
    assert line.split()[4:6] == ["-", "-"]


def test_median_of_unmeasured_figure_is_none(bench):
    assert bench._median([None, None]) is None
    assert bench._median([3.0, 1.0, 2.0]) == 2.0


def test_a_memtier_path_that_is_not_a_program_is_refused():
    done = subprocess.run([sys.executable, str(BENCH), "--quick",
                           "--memtier", "/nonexistent/memtier"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "not an executable" in done.stderr


def test_mac_pairs_alternate_two_running_servers(bench, tmp_path):
    # Two real memcacheds stand for MAC on and off; memcslap loads them
    # in turn while both stay up. Each pair gives one ratio per figure.
    binary = shutil.which("memcached") or "/usr/bin/memcached"
    root = ["-u", "root"] if os.geteuid() == 0 else []
    pair = [bench.Config(name, [binary, "-l", "127.0.0.1", "-p", "PORT",
                                "-U", "0", "-t", "1", *root], "memcached")
            for name in bench.PAIR]
    args = type("Args", (), {"server_cpu": "0", "loader_cpu": "0",
                             "memtier": None, "pairs": 2,
                             "pair_seconds": 0.01})
    figures = bench.measure_pairs(args, pair, ["sets"], tmp_path)
    assert set(figures) == {"sets"}
    assert figures["sets"]["ops"] > 0 and figures["sets"]["cpu"] >= 0
    # both logs exist: each server was started once, for all the pairs
    assert sorted(p.name for p in tmp_path.glob("*.log")) == \
        sorted(f"{name}.log" for name in bench.PAIR)


def test_a_pair_too_short_for_cpu_ticks_gives_no_cpu_ratio(bench, capsys):
    assert bench._ratio(2.0, 0.0) is None
    assert bench._median([None, None]) is None
    assert bench._median([None, 1.5, 0.5]) == 1.0
    args = type("Args", (), {"pairs": 2, "pair_seconds": 1})
    bench.report_pairs({"mixed": {"ops": 0.98, "cpu": None}}, args)
    row = capsys.readouterr().out.splitlines()[-1].split()
    assert row == ["mixed", "0.980", "-"]


@pytest.mark.parametrize("mode", ["fsync", "async"])
def test_the_floor_answers_in_order_and_reads_its_own_writes(bench, tmp_path,
                                                             mode):
    # The floor keeps what securecache keeps of a connection: replies in
    # request order, nothing behind a set read before that set commits --
    # whether the requests come in one chunk or byte by byte.
    config = next(c for c in bench.configs(tmp_path) if c.name ==
                  f"floor-{mode}")
    assert config.kind == "floor"
    args = type("Args", (), {"server_cpu": "0", "memtier": None})
    with bench.running(args, config, tmp_path) as (_, port):
        for whole in (True, False):
            a, b = (b"a1", b"b1") if whole else (b"a2", b"b2")
            requests = b"get %s\r\nset %s 0 0 2\r\nxy\r\nget %s\r\n" \
                b"set %s 0 0 1\r\nz\r\nget %s\r\nget %s\r\n" % (
                    a, a, a, b, b, a)
            expected = b"END\r\nSTORED\r\nVALUE %s 0 2\r\nxy\r\nEND\r\n" \
                b"STORED\r\nVALUE %s 0 1\r\nz\r\nEND\r\n" \
                b"VALUE %s 0 2\r\nxy\r\nEND\r\n" % (a, b, a)
            chunks = [requests] if whole else \
                [requests[i:i + 1] for i in range(len(requests))]
            assert _exchange(port, chunks, len(expected)) == expected


def _exchange(port: int, chunks: list[bytes], size: int) -> bytes:
    """Send ``chunks`` one by one; read ``size`` bytes of replies."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for chunk in chunks:
            sock.sendall(chunk)
        got = b""
        while len(got) < size:
            data = sock.recv(4096)
            assert data, got
            got += data
    return got


def test_hotpath_pipelined_load_answers_every_request(tmp_path):
    # the in-process pipelined load is what it says: every request of
    # every client answered, on real connections, lane and LMDB engine
    spec = importlib.util.spec_from_file_location("hotpath", HOTPATH)
    hotpath = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hotpath)
    keys = [b"k%d" % i for i in range(200)]
    storage, engine = hotpath.loaded(tmp_path / "d", "async",
                                     open_mac("policy", audit="none"), keys)
    try:
        cpu, sent, replies = asyncio.run(hotpath.pipelined(engine, keys,
                                                           1600))
        assert sent >= 1600 and replies == sent
        counters = engine.counters
        assert counters["get_misses"] == 0       # every key was stored
        assert counters["get_hits"] + counters["set_hits"] - len(keys) \
            == sent
    finally:
        storage.close()
