"""The offline tools against a directory a daemon is serving (issue 8,
item 2): a dump taken while a client writes is one consistent snapshot;
stats reads a running daemon over TCP and its UNIX socket."""

from __future__ import annotations

import io
import threading

import pytest
from pymemcache.client.base import Client

from securecache.security import policybuild
from securecache.tools.dumpfile import DumpReader

from securecache.storage import Record, Storage
from tests.tools.toolsupport import LABELS, fill, run

from .daemons import Daemon

PREFILL = 60_000
MAX_OPS = 40_000


@pytest.fixture(scope="module")
def test_policy(tmp_path_factory):
    out = tmp_path_factory.mktemp("live") / "test.policy"
    return policybuild.build_policy([policybuild.test_module()], out)


@pytest.fixture()
def daemon(tmp_path, test_policy):
    fill(tmp_path / "data", PREFILL, expired_every=0)
    d = Daemon(tmp_path, "--mac", "policy", "--policy", str(test_policy), "-m", "256",
               "--durability", "async").start()
    yield d
    d.stop()


def value_of(op: int, key: str) -> bytes:
    return f"{key}={op}|".encode() * (1 + op % 7)


class Load(threading.Thread):
    """One client: sets and deletes in order, each acknowledged before
    the next; stops at MAX_OPS or when told."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.client = Client(("127.0.0.1", port), timeout=10)
        self.log: list[tuple[str, int | None]] = []
        self.stop = threading.Event()
        self.started_enough = threading.Event()

    def run(self) -> None:
        try:
            self._run()
        finally:
            self.started_enough.set()

    def _run(self) -> None:
        for op in range(MAX_OPS):
            if self.stop.is_set():
                break
            key = f"load:{op % 997}"
            if op % 5 == 4:
                self.client.delete(key, noreply=False)
                self.log.append((key, None))
            else:
                assert self.client.set(key, value_of(op, key), flags=op, noreply=False)
                self.log.append((key, op))
            if op == 2000:
                self.started_enough.set()


def read_dump(data: bytes):
    reader = DumpReader(io.BytesIO(data))
    return reader.header, [item for block in reader.blocks() for item in block]


def test_dump_during_a_load_is_one_snapshot(daemon, tmp_path):
    load = Load(daemon.port)
    load.start()
    assert load.started_enough.wait(60)
    ops_before = len(load.log)
    dump = run("dump", "--data-dir", daemon.data_dir, "-m", "256", "--mac", "off")
    ops_at_end = len(load.log)
    load.stop.set()
    load.join(60)
    assert dump.returncode == 0, dump.stderr
    header, dumped = read_dump(dump.stdout)
    assert ops_at_end > ops_before + 10, "the load kept writing during the dump"
    # count equals the count at the snapshot's transaction
    assert header["items"] == len(dumped)
    # no torn item: every load item's value and flags belong to one write
    snapshot = {}
    for item in dumped:
        key = item.key.decode()
        if key.startswith("load:"):
            assert item.value == value_of(item.flags, key), key
            snapshot[key] = item.flags
    # the snapshot is the state after some prefix of the acknowledged ops
    state: dict[str, int] = {}
    mismatched = set(snapshot)
    matches = []
    for index, (key, op) in enumerate(load.log):
        if op is None:
            state.pop(key, None)
        else:
            state[key] = op
        if state.get(key) == snapshot.get(key):
            mismatched.discard(key)
        else:
            mismatched.add(key)
        if not mismatched:
            matches.append(index)
    assert matches, "the dump matches no state the writes went through"
    # ... and one of the states while the dump ran
    assert any(ops_before - 1 <= index < ops_at_end for index in matches)


def test_stats_of_a_running_daemon(daemon):
    client = Client(("127.0.0.1", daemon.port))
    client.set("s", b"1")
    client.get("s")
    for target in (f"127.0.0.1:{daemon.port}",):
        result = run("stats", target)
        assert result.returncode == 0, result.stderr
        out = result.stdout.decode()
        assert f"items          {PREFILL + 1:,}" in out
        assert "avc hit rate" in out and "mac            policy, enforcing=1" in out
    unix = run("stats", "-s", daemon.socket_path)
    assert unix.returncode == 0 and "avc hit rate" in unix.stdout.decode()


def test_stats_of_a_directory_lists_labels_with_counts(daemon):
    result = run("stats", "--data-dir", daemon.data_dir, "-m", "256", "--mac", "off")
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    assert f"items          {PREFILL:,}" in out
    assert f"{PREFILL // 3:>14,}  system_u:object_r:securecache_item_t:s0" in out


def test_restore_into_a_serving_daemon(daemon, tmp_path):
    """restore writes (in blocks) while the daemon serves; the daemon then
    serves the restored items to the domains that may read them."""
    source = tmp_path / "other"
    storage = Storage(source, map_size=256 << 20)
    with storage.txn(write=True) as txn:
        local = txn.label_id(LABELS[2].encode())         # securecache_local_item_t
        for i in range(3000):
            txn.put(b"moved:%d" % i, Record(local, i, 0, 0, 0, b"m%d" % i), None)
    storage.close()
    dump = tmp_path / "other.dump"
    assert run("dump", "--data-dir", source, "-m", "256", "--mac", "off", "-o", dump).returncode == 0
    client = Client(("127.0.0.1", daemon.port), timeout=10)
    client.set("before", b"1", noreply=False)
    result = run("restore", dump, "--data-dir", daemon.data_dir, "-m", "256")
    assert result.returncode == 0, result.stderr
    assert "3,000 written" in result.stderr
    # the local client's own items (securecache_local_item_t)
    assert client.get_many([f"moved:{i}" for i in range(0, 3000, 7)]) == {
        f"moved:{i}": b"m%d" % i for i in range(0, 3000, 7)}
    assert client.get("before") == b"1"
    assert client.set("after", b"2", noreply=False)
