#!/usr/bin/env python3
"""securecache side by side with memcached and a do-nothing responder.

One invocation starts, one after another on loopback, Debian's memcached
(``-t 1``), a do-nothing uvloop responder (``responder.py``: the ceiling of
a Python event loop here) and securecache in several configurations; runs
the same loads on each with memtier_benchmark (a C load generator) pinned
to one core while the server is pinned to the other; and prints, per load,
ops/s with ratios to memcached and to the responder, p50/p99 latency, and
the server's CPU per request (utime+stime of the server's processes over
the run divided by the requests served). Medians of ``--rounds`` rounds;
each round starts every server in turn, so that a noisy minute of a shared
machine falls on all of them rather than on one. MAC's cost is measured
apart, paired: securecache with and without MAC both up, each load run on
one then the other ``--pairs`` times, the median of the ratios.

memtier_benchmark is not packaged by Debian: build it from its public
source (github.com/RedisLabs/memtier_benchmark: ``autoreconf -ivf &&
./configure && make``; it needs libevent-dev, libssl-dev, libpcre3-dev,
zlib1g-dev, autoconf, automake, libtool, pkg-config) and pass its path
with ``--memtier`` or ``MEMTIER``. Without it the bench falls back to
libmemcached's ``memcslap`` and says so (throughput only).

With ``--floor`` it also runs ``floor.py`` (fsync and async): the least a
Python get/set server over LMDB can do with securecache's ordering and
group commits and nothing else, the ceiling of this design in pure Python.

    tools/bench/run [--quick] [--rounds N] [--seconds S] [--memtier PATH]
                    [--only NAME[,NAME]] [--loads NAME[,NAME]] [--floor]
                    [--pairs N] [--pair-seconds S] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOP = HERE.parents[1]
PYTHON = TOP / ".venv" / "bin" / "python"
SECURECACHE = TOP / ".venv" / "bin" / "securecache"
KEYS = 10_000
VALUE = 32
CLIENTS = 50
MEMCSLAP_CHUNK = 2_000     # requests per memcslap run (fallback loader)
TICK = os.sysconf("SC_CLK_TCK")

PAIR = ("sc-fsync", "sc-fsync-macoff")    # MAC on, MAC off: paired runs
LOADS = {                    # name: (memtier ratio set:get, pipeline)
    "mixed": ("1:9", 1),
    "mixed-p16": ("1:9", 16),
    "sets": ("1:0", 1),
}


@dataclass
class Config:
    """One server to measure: how to start it."""

    name: str
    command: list[str] = field(default_factory=list)
    kind: str = "securecache"  # memcached | responder | securecache | floor


def configs(data: Path, port: str = "PORT") -> list[Config]:
    """The servers, with ``PORT`` standing for the port each gets."""
    memcached = shutil.which("memcached") or "/usr/bin/memcached"
    root = ["-u", "root"] if os.geteuid() == 0 else []
    base = [str(SECURECACHE), "serve", *root, "-l", "127.0.0.1", "-p", str(port),
            "-m", "1024", "--audit-log", "none"]
    return [
        Config("memcached", [memcached, "-l", "127.0.0.1", "-p", str(port),
                             "-U", "0", "-t", "1", "-m", "1024", *root],
               "memcached"),
        Config("responder", [str(PYTHON), str(HERE / "responder.py"),
                             str(port), str(VALUE)], "responder"),
        Config("sc-fsync", [*base, "--data-dir", str(data / "f"),
                            "--durability", "fsync", "-t", "1"]),
        Config("sc-async", [*base, "--data-dir", str(data / "a"),
                            "--durability", "async", "-t", "1"]),
        Config("sc-fsync-macoff", [*base, "--data-dir", str(data / "o"),
                                   "--durability", "fsync", "--mac", "off",
                                   "--default-client-context",
                                   "system_u:system_r:unconfined_t:s0",
                                   "-t", "1"]),
        Config("sc-fsync-t2", [*base, "--data-dir", str(data / "t"),
                               "--durability", "fsync", "-t", "2"]),
        *(Config(f"floor-{mode}", [str(PYTHON), str(HERE / "floor.py"),
                                   str(port), str(data / f"floor-{mode}"),
                                   mode],
                 "floor") for mode in ("fsync", "async")),
    ]


# ------------------------------------------------------------ processes
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server did not listen on {port}")


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and its descendants."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        ticks[int(entry)] = int(fields[11]) + int(fields[12])
    total = 0
    for p in ticks:
        q = p
        while q and q != pid:
            q = parents.get(q, 0)
        if q == pid:
            total += ticks[p]
    return total / TICK


# ---------------------------------------------------------------- loads
def memtier(args, port: int, ratio: str, pipeline: int, seconds: float,
            out: Path) -> dict:
    """One memtier run; its totals."""
    command = ["taskset", "-c", args.loader_cpu, args.memtier,
               "-s", "127.0.0.1", "-p", str(port), "-P", "memcache_text",
               "-t", "1", "-c", str(CLIENTS), f"--ratio={ratio}",
               f"--pipeline={pipeline}", "-d", str(VALUE),
               f"--key-maximum={KEYS}", "--key-minimum=1",
               "--key-pattern=R:R", f"--test-time={max(1, int(seconds))}",
               "--hide-histogram", f"--json-out-file={out}"]
    subprocess.run(command, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=True, timeout=300)
    totals = json.loads(out.read_text())["ALL STATS"]["Totals"]
    pct = totals.get("Percentile Latencies", {})
    return {"ops": totals["Ops/sec"], "count": totals["Count"],
            "p50": pct.get("p50.00", 0.0), "p99": pct.get("p99.00", 0.0)}


def preload(args, port: int, out: Path) -> None:
    """Every key of the key range stored once: every get hits. (``P:P``
    gives each connection its own slice of the range; 50 connections
    share the commits, where one would wait for 10,000 fsyncs.)"""
    subprocess.run(["taskset", "-c", args.loader_cpu, args.memtier,
                    "-s", "127.0.0.1", "-p", str(port), "-P", "memcache_text",
                    "-t", "1", "-c", str(CLIENTS), "--ratio=1:0",
                    "-d", str(VALUE), f"--key-maximum={KEYS}",
                    "--key-minimum=1", "--key-pattern=P:P",
                    f"--requests={KEYS // CLIENTS}",
                    "--hide-histogram", f"--json-out-file={out}"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=True, timeout=300)


def memcslap(port: int, ratio: str, seconds: float) -> dict:
    """The fallback loader: memcslap has no time limit, so it runs in short
    chunks until ``seconds`` have passed (a slow server gets fewer chunks,
    not a longer run). It measures no latencies."""
    test = "set" if ratio == "1:0" else "get"
    started = time.monotonic()
    ops = 0
    while not ops or time.monotonic() - started < seconds:
        subprocess.run(["memcslap", f"--servers=127.0.0.1:{port}",
                        "--concurrency=4",
                        f"--execute-number={MEMCSLAP_CHUNK // 4}",
                        f"--test={test}"], capture_output=True, timeout=600)
        ops += MEMCSLAP_CHUNK
    elapsed = time.monotonic() - started
    return {"ops": ops / elapsed, "count": ops, "p50": None, "p99": None}


@contextmanager
def running(args, config: Config, tmp: Path):
    """``config`` started pinned to the server core and preloaded; yields
    (process, port) and stops it after."""
    port = free_port()
    command = [part.replace("PORT", str(port)) for part in config.command]
    log = open(tmp / f"{config.name}.log", "ab")
    process = subprocess.Popen(["taskset", "-c", args.server_cpu, *command],
                               stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, process)
        time.sleep(0.3)
        if args.memtier:
            preload(args, port, tmp / "preload.json")
        yield process, port
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def run_load(args, process, port: int, load: str, seconds: float,
             tmp: Path) -> dict:
    """One run of ``load``; its figures and the server's CPU per request."""
    ratio, pipeline = LOADS[load]
    before = tree_cpu(process.pid)
    if args.memtier:
        result = memtier(args, port, ratio, pipeline, seconds,
                         tmp / "run.json")
    else:
        result = memcslap(port, ratio, seconds)
    result["cpu_us"] = (tree_cpu(process.pid) - before) * 1e6 / \
        max(result["count"], 1)
    return result


def measure(args, config: Config, loads: list[str], tmp: Path) -> dict:
    """Start ``config`` pinned to the server core, run every load once."""
    with running(args, config, tmp) as (process, port):
        return {load: run_load(args, process, port, load, args.seconds, tmp)
                for load in loads}


def measure_pairs(args, pair: list[Config], loads: list[str],
                  tmp: Path) -> dict:
    """MAC's cost, paired: both servers up at once (the idle one costs
    nothing) and each load run on one, then the other, ``args.pairs``
    times; per load the medians of the per-pair ratios (MAC on / off) of
    ops/s and of CPU per request. A ratio of two runs seconds apart is
    far steadier on a shared machine than one of two rounds' slots."""
    on, off = pair
    with running(args, on, tmp) as mac_on, running(args, off, tmp) as mac_off:
        figures = {}
        for load in loads:
            ops, cpu = [], []
            for _ in range(args.pairs):
                a = run_load(args, *mac_on, load, args.pair_seconds, tmp)
                b = run_load(args, *mac_off, load, args.pair_seconds, tmp)
                ops.append(_ratio(a["ops"], b["ops"]))
                cpu.append(_ratio(a["cpu_us"], b["cpu_us"]))
            figures[load] = {"ops": _median(ops), "cpu": _median(cpu)}
            print(f"# MAC pairs: measured {load}", file=sys.stderr)
    return figures


def measure_all(args, chosen: list[Config], loads: list[str],
                tmp: Path) -> dict:
    """``args.rounds`` rounds, each running every server in turn (so that
    a noisy minute of a shared machine falls on all of them, not on one);
    the median of each figure over the rounds."""
    runs = {c.name: {load: [] for load in loads} for c in chosen}
    for round_ in range(args.rounds):
        for config in chosen:
            for load, result in measure(args, config, loads, tmp).items():
                runs[config.name][load].append(result)
            print(f"# round {round_ + 1}: measured {config.name}",
                  file=sys.stderr)
    return {name: {load: {k: _median([r[k] for r in results])
                          for k in results[0]}
                   for load, results in per_load.items()}
            for name, per_load in runs.items()}


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None        # a run too short to see CPU ticks


def _median(values: list) -> float | None:
    """The median of the values that were measured (None: not one was,
    as memcslap's latencies, or a pair too short to see CPU ticks)."""
    measured = [v for v in values if v is not None]
    return statistics.median(measured) if measured else None


# --------------------------------------------------------------- report
def report(table: dict, loads: list[str], args) -> None:
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} {os.uname().nodename}, "
          f"{os.cpu_count()} cores; server on CPU {args.server_cpu}, loader on "
          f"CPU {args.loader_cpu}; {CLIENTS} connections, {VALUE}-byte values, "
          f"{KEYS} keys preloaded; medians of {args.rounds} rounds of "
          f"{args.seconds:g} s (the servers in turn in each round); loader: "
          f"{'memtier_benchmark' if args.memtier else 'memcslap (fallback: no latencies)'}")
    for load in loads:
        print(f"\n## {load} (set:get {LOADS[load][0]}, pipeline "
              f"{LOADS[load][1]})")
        print(f"{'server':18} {'ops/s':>10} {'x memcd':>8} {'x resp':>8} "
              f"{'p50 ms':>8} {'p99 ms':>8} {'cpu us/req':>10}")
        mc = table.get("memcached", {}).get(load)
        resp = table.get("responder", {}).get(load)
        for name, results in table.items():
            r = results[load]
            ratio = lambda ref: f"{r['ops'] / ref['ops']:8.2f}" if ref else \
                f"{'-':>8}"                                   # noqa: E731
            print(f"{name:18} {r['ops']:10.0f} {ratio(mc)} {ratio(resp)} "
                  f"{_ms(r['p50'])} {_ms(r['p99'])} {r['cpu_us']:10.2f}")
    sys.stdout.flush()


def report_pairs(pairs: dict, args) -> None:
    """The paired MAC comparison (see ``measure_pairs``)."""
    print(f"\n## MAC on / --mac off, paired ({PAIR[0]} and {PAIR[1]} both "
          f"up, alternating; medians of {args.pairs} pairs of "
          f"{args.pair_seconds:g} s)")
    print(f"{'load':18} {'ops/s ratio':>12} {'cpu/req ratio':>14}")
    for load, figures in pairs.items():
        print(f"{load:18} {_fixed(figures['ops'], 12)} "
              f"{_fixed(figures['cpu'], 14)}")
    sys.stdout.flush()


def _fixed(value, width: int) -> str:
    """A figure with 3 decimals, or '-' where none was measured."""
    return f"{'-':>{width}}" if value is None else f"{value:{width}.3f}"


def _ms(latency) -> str:
    """A latency column: '-' where the loader measured none (memcslap)."""
    return _fixed(latency, 8)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="one run of 3 s per load (under 2 minutes)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6)
    parser.add_argument("--memtier", default=os.environ.get("MEMTIER")
                        or shutil.which("memtier_benchmark"))
    parser.add_argument("--only", help="comma-separated server names")
    parser.add_argument("--floor", action="store_true",
                        help="also the floor (floor.py): the least a Python "
                             "server over LMDB does, fsync and async")
    parser.add_argument("--pairs", type=int, default=5,
                        help="paired runs for MAC on / off (0: none)")
    parser.add_argument("--pair-seconds", type=float, default=2)
    parser.add_argument("--loads", default=",".join(LOADS))
    parser.add_argument("--server-cpu", default="1")
    parser.add_argument("--loader-cpu", default="0")
    parser.add_argument("--json", type=Path, help="also write the medians")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds = 1, 3
        args.pairs, args.pair_seconds = min(args.pairs, 3), 1
    if args.memtier and not shutil.which(args.memtier):
        parser.error(f"--memtier {args.memtier}: not an executable")
    if not args.memtier:
        print("# memtier_benchmark not found (see --help): memcslap fallback",
              file=sys.stderr)
    loads = args.loads.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        chosen = configs(tmp)
        if args.only:
            wanted = args.only.split(",")
            chosen = [c for c in chosen if c.name in wanted]
        elif not args.floor:
            chosen = [c for c in chosen if c.kind != "floor"]
        table = measure_all(args, chosen, loads, tmp)
        by_name = {c.name: c for c in chosen}
        pair = [by_name[name] for name in PAIR if name in by_name]
        pairs = measure_pairs(args, pair, loads[:1] if args.quick else loads,
                              tmp) if args.pairs and len(pair) == 2 else {}
    report(table, loads, args)
    if pairs:
        report_pairs(pairs, args)
    if args.json:
        args.json.write_text(json.dumps({**table, "mac_pairs": pairs},
                                        indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
