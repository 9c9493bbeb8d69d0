"""Issue 4, item 1: Debian's memccapable (libmemcached's memcapable) against
a real daemon: every binary test passes (-b), the ASCII tests still pass
(-a), and a plain run (both protocols) passes. The output is parsed line by
line; the set of tests run must be the one memccapable runs against the
real memcached 1.6.18 (nothing skipped, nothing missing).

memccapable spends most of its time waiting (its quit tests), and it
flushes the server it tests, so each run gets its own daemon and the four
runs (three against securecache, one against memcached) go in parallel.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from .proto_support import MEMCCAPABLE, RealMemcached, start_daemon

RESULT = re.compile(r"^(?P<name>(?:ascii|binary) .+?)\s+\[(?P<verdict>\w+)\]\s*$")
RUNS = {"binary": ("-b",), "ascii": ("-a",), "both": ()}
PROTOCOLS = {"binary": {"binary"}, "ascii": {"ascii"},
             "both": {"ascii", "binary"}}


class Run:
    """One memccapable process: its verdicts {test name: verdict}."""

    def __init__(self, port: int, flags: tuple[str, ...]) -> None:
        self.process = subprocess.Popen(
            [MEMCCAPABLE, "-h", "127.0.0.1", "-p", str(port), "-t", "10",
             *flags], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True)

    def finish(self) -> "Run":
        try:
            self.output, _ = self.process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.output, _ = self.process.communicate()
        self.status = self.process.returncode
        self.verdicts = {}
        for line in self.output.splitlines():
            match = RESULT.match(line)
            if match:
                self.verdicts[match["name"]] = match["verdict"]
        return self


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    daemons = {name: start_daemon(tmp_path_factory.mktemp(f"capable-{name}"))
               for name in RUNS}
    memcached = RealMemcached()
    try:
        started = {name: Run(daemons[name].port, flags)
                   for name, flags in RUNS.items()}
        started["reference"] = Run(memcached.port, ())
        yield {name: run.finish() for name, run in started.items()}
    finally:
        for daemon in daemons.values():
            daemon.kill()
        memcached.stop()


def test_reference_run_against_memcached(runs):
    reference = runs["reference"]
    assert reference.status == 0, reference.output
    assert set(reference.verdicts.values()) == {"pass"}, reference.output
    assert len([n for n in reference.verdicts if n.startswith("binary ")]) >= 27
    assert len([n for n in reference.verdicts if n.startswith("ascii ")]) >= 27


@pytest.mark.parametrize("name", sorted(RUNS))
def test_memccapable_passes(runs, name):
    run = runs[name]
    expected = {test for test in runs["reference"].verdicts
                if test.split()[0] in PROTOCOLS[name]}
    failed = {test: v for test, v in run.verdicts.items() if v != "pass"}
    assert not failed, run.output
    assert set(run.verdicts) == expected, run.output   # none skipped/missing
    assert run.status == 0, run.output
    assert "All tests passed" in run.output
