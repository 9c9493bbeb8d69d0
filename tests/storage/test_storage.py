"""Storage on real LMDB directories."""

from __future__ import annotations

import os
import stat
import struct

import lmdb
import pytest

from securecache.storage import (EXPIRED, Record, SCHEMA_VERSION, Storage,
                                 StorageError, absolute_exptime)
from securecache.storage.records import decode, encode


def put(storage, key, value=b"v", exptime=0, label=b"a:b:c:s0", now=100):
    with storage.txn(True) as txn:
        old = txn.get(key)
        record = Record(txn.label_id(label), 7, exptime, now, 0, value)
        return txn.put(key, record, old)


@pytest.fixture
def storage(tmp_path):
    store = Storage(tmp_path / "data")
    yield store
    store.close()


def test_directory_and_files_are_private(tmp_path):
    path = tmp_path / "nested" / "data"
    store = Storage(path)
    put(store, b"k")
    store.close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    files = os.listdir(path)
    assert sorted(files) == ["data.mdb", "lock.mdb"]
    for name in files:
        assert stat.S_IMODE(os.stat(path / name).st_mode) == 0o600


def test_record_round_trip():
    record = Record(3, 0xFFFFFFFF, 1234, 99, (1 << 64) - 1, b"\x00value\r\n",
                    3)
    back = decode(encode(record))
    assert (back.label_id, back.flags, back.exptime, back.mtime, back.cas,
            bytes(back.value), back.state) == (3, 0xFFFFFFFF, 1234, 99,
                                               (1 << 64) - 1,
                                               b"\x00value\r\n", 3)


@pytest.mark.parametrize("exptime, expected", [
    (0, 0), (-1, EXPIRED), (1, 1001), (2592000, 1000 + 2592000),
    (2592001, 2592001),            # over 30 days: an absolute time
])
def test_absolute_exptime(exptime, expected):
    assert absolute_exptime(exptime, 1000) == expected


def test_absolute_exptime_past_and_future_absolute():
    now = 1_800_000_000
    assert absolute_exptime(now + 50, now) == now + 50
    assert absolute_exptime(now, now) == EXPIRED
    assert absolute_exptime(2592001, now) == EXPIRED


def test_cas_never_repeats_across_reopen(tmp_path):
    seen = []
    for _ in range(3):
        store = Storage(tmp_path / "d")
        for i in range(5):
            seen.append(put(store, b"k%d" % i).cas)
        store.close()
    assert len(set(seen)) == 15 and seen == sorted(seen)


def test_aborted_transaction_leaves_nothing(storage):
    txn = storage.txn(True)
    txn.label_id(b"x:y:z:s0")
    txn.put(b"k", Record(1, 0, 0, 0, 0, b"v"), None)
    txn.abort()
    assert storage.label_ids == {}
    with storage.txn(False) as txn:
        assert txn.get(b"k") is None


def test_labels_are_interned_and_survive_reopen(tmp_path):
    store = Storage(tmp_path / "d")
    a = put(store, b"a", label=b"u:r:one_t:s0").label_id
    b = put(store, b"b", label=b"u:r:one_t:s0").label_id
    c = put(store, b"c", label=b"u:r:two_t:s0").label_id
    store.close()
    assert a == b != c
    store = Storage(tmp_path / "d")
    with store.txn(False) as txn:
        assert txn.label(a) == b"u:r:one_t:s0"
        assert txn.label(c) == b"u:r:two_t:s0"
        assert txn.label(999) is None
    assert put(store, b"d", label=b"u:r:three_t:s0").label_id == c + 1
    store.close()


def test_expiry_index_orders_and_sweeps(storage):
    put(storage, b"late", exptime=500)
    put(storage, b"early", exptime=200)
    put(storage, b"never")
    with storage.txn(False) as txn:
        assert txn.expired_keys(300, 10) == [b"early"]
        assert txn.expired_keys(600, 10) == [b"early", b"late"]
        assert txn.expired_keys(600, 1) == [b"early"]
    with storage.txn(True) as txn:
        assert txn.remove(txn.expired_keys(600, 10), 600) == 2
    with storage.txn(False) as txn:
        assert [k for k, _ in txn.scan()] == [b"never"]
        assert txn.expired_keys(10**9, 10) == []


def test_rewrite_moves_index_entries(storage):
    put(storage, b"k", exptime=200)
    put(storage, b"k", exptime=900)
    with storage.txn(False) as txn:
        assert txn.expired_keys(300, 10) == []
        assert txn.expired_keys(1000, 10) == [b"k"]
        assert txn.oldest_keys(10) == [b"k"]


def test_oldest_written_first(storage):
    for key in (b"c", b"a", b"b"):
        put(storage, key)
    put(storage, b"c")
    with storage.txn(False) as txn:
        assert txn.oldest_keys(10) == [b"a", b"b", b"c"]


def test_prefix_scan_in_key_order(storage):
    for key in (b"user:2", b"other", b"user:1", b"user:10", b"use"):
        put(storage, key)
    with storage.txn(False) as txn:
        assert [k for k, _ in txn.scan(b"user:")] == [b"user:1", b"user:10",
                                                      b"user:2"]
        assert txn.count() == 5


def test_newer_schema_is_refused(tmp_path):
    store = Storage(tmp_path / "d")
    with store.env.begin(write=True) as txn:
        txn.put(b"schema", struct.pack(">Q", SCHEMA_VERSION + 1),
                db=store.dbs[b"meta"])
    store.close()
    with pytest.raises(StorageError, match="newer than this securecache"):
        Storage(tmp_path / "d")


def test_usage_counts_pages_in_use(tmp_path):
    store = Storage(tmp_path / "d", map_size=1 << 20)
    with store.txn(False) as txn:
        empty = store.usage(txn)
    for i in range(100):
        put(store, b"k%d" % i, value=b"x" * 4000)
    with store.txn(False) as txn:
        full = store.usage(txn)
        assert store.info(txn)["bytes"] == full
    assert full - empty >= 100 * 4000
    with store.txn(True) as txn:
        txn.remove([b"k%d" % i for i in range(100)])
    with store.txn(False) as txn:
        assert store.usage(txn) < full // 10
    store.close()


def test_map_has_headroom_beyond_the_limit(tmp_path):
    """The map is larger than the limit, so deletes (which copy pages)
    still work when the data reaches the limit; past the headroom LMDB
    says MapFullError, which the engine handles."""
    store = Storage(tmp_path / "d", map_size=1 << 20)
    assert store.env.info()["map_size"] > (1 << 20) * 1.25
    with pytest.raises(lmdb.MapFullError):
        for i in range(5000):
            put(store, b"k%d" % i, value=b"x" * 4000)
    store.close()
