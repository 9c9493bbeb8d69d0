"""A read-only Storage (the offline tools' view) reads what a writer left."""

from __future__ import annotations

import lmdb
import pytest

from securecache.storage import Record, Storage, StorageError


def test_readonly_storage_scans_and_counts(tmp_path):
    writer = Storage(tmp_path / "d")
    with writer.txn(True) as txn:
        label = txn.label_id(b"system_u:object_r:securecache_local_item_t:s0")
        for i in range(3):
            txn.put(b"k%d" % i, Record(label, 0, 0, 1, 0, b"v"), None)
    writer.close()
    reader = Storage(tmp_path / "d", readonly=True)
    with reader.txn(False) as txn:
        assert [key for key, _ in txn.scan()] == [b"k0", b"k1", b"k2"]
        assert txn.count() == 3
        assert txn.label(label) == \
            b"system_u:object_r:securecache_local_item_t:s0"
    reader.close()


def test_readonly_storage_refuses_a_directory_without_our_data(tmp_path):
    Storage(tmp_path / "d").close()
    (tmp_path / "other").mkdir()
    lmdb.open(str(tmp_path / "other")).close()
    with pytest.raises(StorageError, match="no securecache data"):
        Storage(tmp_path / "other", readonly=True)
