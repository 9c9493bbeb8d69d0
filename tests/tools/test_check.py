"""securecache check [--gc]: indexes, label ids, labels, counts."""

from __future__ import annotations

import struct

import lmdb

from securecache.storage import Storage
from securecache.storage import bulk

from tests.integration.daemons import Daemon

from .toolsupport import LABELS, MAP, fill, run

GONE = "system_u:object_r:no_such_item_t:s0"


def args(policy):
    return ["--mac", "policy", "--policy", policy, "-m", "256"]


def raw_env(directory):
    env = lmdb.open(str(directory), max_dbs=16, map_size=MAP * 2)
    return env, {name: env.open_db(name) for name in (b"items", b"expiry", b"age", b"labels")}


def test_a_consistent_directory_passes(filled, test_policy):
    result = run("check", "--data-dir", filled, *args(test_policy))
    assert result.returncode == 0, result.stdout
    out = result.stdout.decode()
    assert "items: 3,000 (429 expired" in out and "labels: 3 (0 unused)" in out
    assert out.strip().splitlines()[-1].startswith("check: ok")


def test_a_missing_expiry_entry_is_named(filled, test_policy):
    env, dbs = raw_env(filled)
    with env.begin(write=True) as txn:
        key = next(k for k in txn.cursor(db=dbs[b"expiry"]).iternext(values=False))
        txn.delete(key, db=dbs[b"expiry"])
    env.close()
    result = run("check", "--data-dir", filled, *args(test_policy))
    assert result.returncode == 1
    assert f"expiry index: 1 items without an entry, e.g. {bytes(key[4:])!r}" in result.stdout.decode()


def test_an_orphan_age_entry_and_a_dangling_label_id(filled, test_policy):
    env, dbs = raw_env(filled)
    with env.begin(write=True) as txn:
        txn.put(struct.pack(">Q", 99) + b"ghost", b"", db=dbs[b"age"])
        raw = bytearray(txn.get(b"k0000002", db=dbs[b"items"]))
        raw[0:4] = struct.pack(">I", 77)
        txn.put(b"k0000002", bytes(raw), db=dbs[b"items"])
    env.close()
    out = run("check", "--data-dir", filled, *args(test_policy)).stdout.decode()
    assert "age index: 1 entries without their item, e.g. b'ghost'" in out
    assert "label id 77 does not resolve (1 items)" in out


def test_invalid_labels_are_listed_with_counts(tmp_path, test_policy):
    directory = tmp_path / "d"
    fill(directory, 40, labels=(LABELS[0], GONE), expired_every=0, ttl_every=0)
    result = run("check", "--data-dir", directory, *args(test_policy))
    assert result.returncode == 3
    assert f"invalid label: {GONE} (20 items)" in result.stdout.decode()


def _unused_label(directory):
    storage = Storage(directory, map_size=MAP)
    with storage.txn(write=True) as txn:
        txn.label_id(b"system_u:object_r:securecache_item_t:s0:c5")
    storage.close()


def test_gc_drops_unused_labels(filled, test_policy):
    _unused_label(filled)
    assert "labels: 4 (1 unused)" in run("check", "--data-dir", filled, *args(test_policy)).stdout.decode()
    result = run("check", "--gc", "--data-dir", filled, *args(test_policy))
    assert result.returncode == 0, result.stderr
    assert "1 collected" in result.stdout.decode()
    storage = Storage(filled, map_size=MAP)
    with storage.txn(write=False) as txn:
        assert sorted(bulk.all_labels(txn).values()) == sorted(l.encode() for l in LABELS)
        assert len(bulk.label_ids(txn)) == 3
    storage.close()


def test_gc_refuses_while_a_daemon_has_the_directory(tmp_path, test_policy):
    daemon = Daemon(tmp_path, "--mac", "policy", "--policy", str(test_policy), "-m", "256").start()
    try:
        from pymemcache.client.base import Client
        Client(("127.0.0.1", daemon.port)).set("x", b"1")   # the daemon reads and writes
        _unused_label(daemon.data_dir)
        result = run("check", "--gc", "--data-dir", daemon.data_dir, *args(test_policy))
        assert result.returncode == 1
        assert "needs the directory to itself" in result.stderr
        assert str(daemon.process.pid) in result.stderr
    finally:
        daemon.stop()
