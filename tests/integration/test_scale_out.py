"""Beyond one host (issue 8, item 5; docs/scale-out.md): three daemons on
loopback behind client-side consistent hashing (pymemcache HashClient) and
behind twemproxy (Debian's nutcracker, a ketama pool).  10,000 keys spread
over the nodes; one node is SIGKILLed and restarted on its directory, and
every key it held is back."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest
from pymemcache.client.base import Client
from pymemcache.client.hash import HashClient
from pymemcache.exceptions import MemcacheError

from .daemons import Daemon, free_port, wait_for_port

KEYS = [f"user:{i}" for i in range(10_000)]
BATCH = 500


@pytest.fixture()
def nodes(tmp_path):
    started = []
    try:
        for n in range(3):
            (tmp_path / f"node{n}").mkdir()
            started.append(Daemon(tmp_path / f"node{n}", "--durability", "async").start())
        yield started
    finally:
        for daemon in started:
            daemon.kill()


def value(key: str) -> bytes:
    return f"{key}:payload".encode()


def held_by(daemon: Daemon) -> set[str]:
    client = Client(("127.0.0.1", daemon.port), timeout=10)
    try:
        found = set()
        for start in range(0, len(KEYS), BATCH):
            batch = KEYS[start:start + BATCH]
            got = client.get_many(batch)
            assert all(got[k] == value(k) for k in got)
            found |= set(got)
        return found
    finally:
        client.close()


def check_spread_and_crash(nodes, read_all) -> None:
    holdings = [held_by(d) for d in nodes]
    assert sum(map(len, holdings)) == len(KEYS)
    assert set().union(*holdings) == set(KEYS)
    assert all(len(h) > len(KEYS) // 10 for h in holdings), [len(h) for h in holdings]
    victim = nodes[1]
    victim.kill()                                       # SIGKILL: no shutdown code
    victim.start()                                      # same port, same directory
    assert held_by(victim) == holdings[1]
    assert read_all() == {k: value(k) for k in KEYS}


def store_then_crash_a_node(nodes, client) -> None:
    """Store every key through ``client``, then check_spread_and_crash
    reading them back through it."""
    for start in range(0, len(KEYS), BATCH):
        assert client.set_many({k: value(k) for k in KEYS[start:start + BATCH]},
                               noreply=False) == []

    def read_all():
        got = {}
        for start in range(0, len(KEYS), BATCH):
            got.update(get_many_retrying(client, KEYS[start:start + BATCH]))
        return got
    check_spread_and_crash(nodes, read_all)


def test_hash_client_over_three_nodes(nodes):
    store_then_crash_a_node(nodes, HashClient(
        [("127.0.0.1", d.port) for d in nodes], timeout=10, connect_timeout=5,
        retry_attempts=3, dead_timeout=0.2))


@pytest.fixture()
def nutcracker(tmp_path, nodes):
    port = free_port()
    servers = "\n".join(f"    - 127.0.0.1:{d.port}:1 node{n}" for n, d in enumerate(nodes))
    conf = tmp_path / "nutcracker.yml"
    conf.write_text(f"""pool:
  listen: 127.0.0.1:{port}
  hash: fnv1a_64
  distribution: ketama
  timeout: 5000
  auto_eject_hosts: false
  server_retry_timeout: 200
  servers:
{servers}
""")
    binary = shutil.which("nutcracker") or "/usr/sbin/nutcracker"
    proc = subprocess.Popen([binary, "-c", str(conf), "-s", str(free_port()),
                             "-o", str(tmp_path / "nutcracker.log")])
    try:
        wait_for_port(port, proc)
        yield port
    finally:
        proc.kill()
        proc.wait(10)


def get_many_retrying(client, keys: list[str]) -> dict:
    """get_many, again after an error: the first request on a connection to
    the restarted node finds it closed (pymemcache then reconnects), and
    nutcracker answers an error while it reconnects to the node."""
    for _ in range(50):
        try:
            return client.get_many(keys)
        except (MemcacheError, OSError):
            time.sleep(0.1)
    return client.get_many(keys)


def test_nutcracker_ketama_pool_over_three_nodes(nodes, nutcracker):
    store_then_crash_a_node(nodes, Client(("127.0.0.1", nutcracker), timeout=10))
